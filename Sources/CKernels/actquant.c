// Activation quantization: max |x|, int8 codes, 32-block code sums. AVX2 paths and portable twins.
// Swift's scalar loop (max, multiply, round half away from zero, clamp) was 18% of a q8_0 kld
// run once the products got fast. Same rules here: NaN is ignored by the max and coded 0.
#include "kernels_internal.h"
#include <math.h>

// MARK: - Portable paths

static float absmax_c(const float *x, int n) {
    float m = 0;
    for (int i = 0; i < n; i++) {
        const float a = fabsf(x[i]);
        m = a >= m ? a : m;
    }
    return m;
}

static inline int8_t code_i8(float p) {
    if (p != p) return 0;
    float r = roundf(p);
    r = r < -127 ? -127 : (r > 127 ? 127 : r);
    return (int8_t)r;
}

// MARK: - AVX2 paths

ATTR_AVX2 static float absmax_avx2(const float *x, int n) {
    const __m256 signBit = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps();
    int i = 0;
    // max_ps(a, m) returns m when a is NaN: NaN is ignored, as in the scalar loop.
    for (; i + 8 <= n; i += 8) m = _mm256_max_ps(_mm256_andnot_ps(signBit, _mm256_loadu_ps(x + i)), m);
    float t[8];
    _mm256_storeu_ps(t, m);
    float r = 0;
    for (int j = 0; j < 8; j++) r = t[j] >= r ? t[j] : r;
    for (; i < n; i++) {
        const float a = fabsf(x[i]);
        r = a >= r ? a : r;
    }
    return r;
}

ATTR_AVX2 static void quantize_i8_avx2(const float *x, int n, float inv, int8_t *q) {
    const __m256 vinv = _mm256_set1_ps(inv), half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    const __m256 signBit = _mm256_set1_ps(-0.0f), lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 p = _mm256_mul_ps(_mm256_loadu_ps(x + i), vinv);
        // Round half away from zero: truncate, then step away from zero when |fraction| ≥ 0.5
        // (p − trunc(p) is exact).
        const __m256 t = _mm256_round_ps(p, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        const __m256 frac = _mm256_andnot_ps(signBit, _mm256_sub_ps(p, t));
        const __m256 step = _mm256_and_ps(_mm256_cmp_ps(frac, half, _CMP_GE_OQ),
                                          _mm256_or_ps(one, _mm256_and_ps(p, signBit)));
        __m256 r = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(t, step), lo), hi);
        r = _mm256_and_ps(r, _mm256_cmp_ps(p, p, _CMP_ORD_Q));
        const __m256i v = _mm256_cvttps_epi32(r);
        const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        _mm_storel_epi64((__m128i *)(q + i), _mm_packs_epi16(w16, w16));
    }
    for (; i < n; i++) q[i] = code_i8(x[i] * inv);
}

// MARK: - Dispatch

float qd_absmax_f32(const float *x, int n) { return qd_has_avx2() ? absmax_avx2(x, n) : absmax_c(x, n); }

void qd_quantize_i8(const float *x, int n, float inv, int8_t *q) {
    if (qd_has_avx2()) quantize_i8_avx2(x, n, inv, q);
    else for (int i = 0; i < n; i++) q[i] = code_i8(x[i] * inv);
}

void qd_block_sums_i8(const int8_t *q, int n, int32_t *sums) {
    for (int b = 0; b * 32 < n; b++) {
        int32_t s = 0;
        const int hi = n - b * 32 < 32 ? n : b * 32 + 32;
        for (int i = b * 32; i < hi; i++) s += q[i];
        sums[b] = s;
    }
}
