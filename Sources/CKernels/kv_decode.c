// Quantized KV-cache entries decoded to FP32 (QuantizedKVCache's reads: every attention over a
// quantized cache decodes every held position, so at 2,048 tokens this is most of a KV scheme's
// decode step). The value of element c is scale·level[code] (+ min), one multiply and one add,
// never fused: the same values as the Swift decoder it replaced.
#include "kernels_internal.h"

static inline int kv_code(const uint8_t *codes, int bits, int c) {
    switch (bits) {
    case 8: return codes[c];
    case 4: return (codes[c >> 1] >> ((c & 1) * 4)) & 15;
    default: return (codes[c >> 2] >> ((c & 3) * 2)) & 3;
    }
}

// Element c, one at a time (two statements: the multiply and the add are never fused).
static inline float kv_value(const uint8_t *codes, int bits, const float *levels, const float *scales, const float *mins,
                             int group, int c) {
    const int g = group > 0 ? c / group : c;
    const float v = scales[g] * levels[kv_code(codes, bits, c)];
    return mins ? v + mins[g] : v;
}

static void kv_decode_c(const uint8_t *codes, int bits, const float *levels, const float *scales, const float *mins,
                        int group, int n, float *out) {
    for (int c = 0; c < n; c++) out[c] = kv_value(codes, bits, levels, scales, mins, group, c);
}

// Eight codes from element c (a multiple of 8) as 32-bit lanes.
ALWAYS_INLINE ATTR_AVX2 static inline __m256i kv_codes8(const uint8_t *codes, int bits, int c) {
    if (bits == 8) return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes + c)));
    if (bits == 4) {
        uint32_t w;
        memcpy(&w, codes + c / 2, 4);
        return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)w), _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)),
                                _mm256_set1_epi32(15));
    }
    uint16_t w;
    memcpy(&w, codes + c / 4, 2);
    return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(w), _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)),
                            _mm256_set1_epi32(3));
}

// Eight values from element c (a multiple of 8): scale·level, then + min.
ALWAYS_INLINE ATTR_AVX2 static inline void kv_store8(const uint8_t *codes, int bits, const float *levels, int identity,
                                                   __m256 s, const __m256 *m, int c, float *out) {
    const __m256i u = kv_codes8(codes, bits, c);
    const __m256 level = identity ? _mm256_cvtepi32_ps(u) : _mm256_i32gather_ps(levels, u, 4);
    __m256 v = _mm256_mul_ps(s, level);
    if (m) v = _mm256_add_ps(v, *m);
    _mm256_storeu_ps(out + c, v);
}

// `bits` a constant after inlining (one loop per code width). Token groups go group by group, so
// the scale index is counted, not divided for every 8 elements (an integer division per step was
// most of this loop's time on Zen 3).
ALWAYS_INLINE ATTR_AVX2 static inline void kv_decode_bits(const uint8_t *codes, int bits, const float *levels, int identity,
                                                          const float *scales, const float *mins, int group, int n,
                                                          float *out) {
    // Whole steps of 8 stay in one scale group when groups are multiples of 8.
    const int fast = (group <= 0 || group % 8 == 0) ? n - n % 8 : 0;
    if (group > 0) {
        for (int g0 = 0, g = 0; g0 < fast; g0 += group, g++) {
            const __m256 s = _mm256_set1_ps(scales[g]);
            const __m256 m = mins ? _mm256_set1_ps(mins[g]) : _mm256_setzero_ps();
            const int end = min_int(g0 + group, fast);
            for (int c = g0; c < end; c += 8) kv_store8(codes, bits, levels, identity, s, mins ? &m : 0, c, out);
        }
    } else {
        for (int c = 0; c < fast; c += 8) {
            const __m256 m = mins ? _mm256_loadu_ps(mins + c) : _mm256_setzero_ps();
            kv_store8(codes, bits, levels, identity, _mm256_loadu_ps(scales + c), mins ? &m : 0, c, out);
        }
    }
    for (int c = fast; c < n; c++) out[c] = kv_value(codes, bits, levels, scales, mins, group, c);
}

ATTR_AVX2 static void kv_decode_avx2(const uint8_t *codes, int bits, const float *levels, int identity,
                                     const float *scales, const float *mins, int group, int n, float *out) {
    switch (bits) {
    case 8: kv_decode_bits(codes, 8, levels, identity, scales, mins, group, n, out); break;
    case 4: kv_decode_bits(codes, 4, levels, identity, scales, mins, group, n, out); break;
    default: kv_decode_bits(codes, 2, levels, identity, scales, mins, group, n, out); break;
    }
}

void qd_kv_decode(const uint8_t *codes, int bits, const float *levels, int identity, const float *scales,
                  const float *mins, int group, int n, float *out) {
    if (qd_has_avx2()) kv_decode_avx2(codes, bits, levels, identity, scales, mins, group, n, out);
    else kv_decode_c(codes, bits, levels, scales, mins, group, n, out);
}
