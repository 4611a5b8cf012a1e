// The read loop `bench` measures memory bandwidth with: one forward stream through a buffer,
// prefetched ahead as the decode kernels prefetch their weights (gemv_f32act.c, panels.c), so the
// bound it gives is what a streaming kernel can reach. A plain loop without prefetch undershot it
// on this machine kind: w8a8's decode measured 1.22 of that "bound".
#include "kernels_internal.h"

// Bytes ahead of the loads that the prefetches ask for (16 cache lines).
#define STREAM_AHEAD 1024

static uint32_t stream_sum_c(const uint8_t *p, size_t words) {
    uint32_t s = 0;
    for (size_t i = 0; i < words; i++) {
        uint32_t w;
        memcpy(&w, p + 4 * i, 4);
        s += w;
    }
    return s;
}

ATTR_AVX2 static uint32_t stream_sum_avx2(const uint8_t *p, size_t words) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 32 <= words; i += 32) {  // 128 bytes: two cache lines
        const uint8_t *q = p + 4 * i;
        _mm_prefetch((const char *)(q + STREAM_AHEAD), _MM_HINT_T0);
        _mm_prefetch((const char *)(q + STREAM_AHEAD + 64), _MM_HINT_T0);
        a0 = _mm256_add_epi32(a0, _mm256_loadu_si256((const __m256i *)q));
        a1 = _mm256_add_epi32(a1, _mm256_loadu_si256((const __m256i *)(q + 32)));
        a2 = _mm256_add_epi32(a2, _mm256_loadu_si256((const __m256i *)(q + 64)));
        a3 = _mm256_add_epi32(a3, _mm256_loadu_si256((const __m256i *)(q + 96)));
    }
    const __m256i a = _mm256_add_epi32(_mm256_add_epi32(a0, a1), _mm256_add_epi32(a2, a3));
    return (uint32_t)hsum256i(a) + stream_sum_c(p + 4 * i, words - i);
}

uint32_t qd_stream_sum(const uint8_t *p, size_t bytes) {
    const size_t words = bytes / 4;
    return qd_has_avx2() ? stream_sum_avx2(p, words) : stream_sum_c(p, words);
}
