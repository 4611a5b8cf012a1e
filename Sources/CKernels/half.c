// Float <-> binary16 conversions (see qd_half.h): an F16C path and a portable twin.
#include "qd_half.h"
#include "ckernels.h"
#include <immintrin.h>
#include <string.h>

#define ATTR_F16C __attribute__((target("avx2,f16c")))

// MARK: - Portable paths

uint16_t qd_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) {  // inf or NaN (NaN kept quiet)
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x0200u | ((ax >> 13) & 0x3ffu) : 0));
    }
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // rounds to >= 65520: infinity
    if (ax >= 0x38800000u) {  // normal half: rebias the exponent (127 -> 15), round 13 bits away
        const uint32_t r = ax - 0x38000000u;
        uint32_t k = r >> 13;
        const uint32_t rem = r & 0x1fffu;
        if (rem > 0x1000u || (rem == 0x1000u && (k & 1u))) k++;
        return (uint16_t)(sign | k);
    }
    if (ax < 0x33000000u) return (uint16_t)sign;  // below half the smallest subnormal (ties go to 0)
    // Subnormal half: k * 2^-24 with k = m * 2^(e - 126) for the 24-bit significand m.
    const uint32_t e = ax >> 23;
    const uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    const uint32_t s = 126u - e;  // 14...24
    uint32_t k = m >> s;
    const uint32_t rem = m & ((1u << s) - 1u), half = 1u << (s - 1u);
    if (rem > half || (rem == half && (k & 1u))) k++;
    return (uint16_t)(sign | k);
}

float qd_f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    uint32_t x;
    if (e == 0) {
        float v = (float)m * 5.9604644775390625e-8f;  // m * 2^-24, exact
        memcpy(&x, &v, 4);
        x |= sign;
    } else if (e == 31) {
        x = sign | 0x7f800000u | (m << 13);
    } else {
        x = sign | ((e + 112u) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static void f32_to_f16_split_c(const float *src, size_t n, uint8_t *lo, uint8_t *hi) {
    for (size_t i = 0; i < n; i++) {
        const uint16_t v = qd_f32_to_f16(src[i]);
        lo[i] = (uint8_t)v;
        hi[i] = (uint8_t)(v >> 8);
    }
}

static void f16_split_to_f32_c(const uint8_t *lo, const uint8_t *hi, size_t n, float *dst) {
    for (size_t i = 0; i < n; i++) dst[i] = qd_f16_to_f32((uint16_t)(lo[i] | (hi[i] << 8)));
}

// MARK: - F16C paths

ATTR_F16C static void f32_to_f16_split_f16c(const float *src, size_t n, uint8_t *lo, uint8_t *hi) {
    // Gathers the 8 low bytes into the low half of the register and the 8 high bytes above.
    const __m128i split = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        h = _mm_shuffle_epi8(h, split);
        _mm_storel_epi64((__m128i *)(lo + i), h);
        _mm_storel_epi64((__m128i *)(hi + i), _mm_unpackhi_epi64(h, h));
    }
    f32_to_f16_split_c(src + i, n - i, lo + i, hi + i);
}

ATTR_F16C static void f16_split_to_f32_f16c(const uint8_t *lo, const uint8_t *hi, size_t n, float *dst) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i l = _mm_loadl_epi64((const __m128i *)(lo + i));
        const __m128i h = _mm_loadl_epi64((const __m128i *)(hi + i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_unpacklo_epi8(l, h)));
    }
    f16_split_to_f32_c(lo + i, hi + i, n - i, dst + i);
}

static int cpu_has_f16c = -1;

// Asked on every call, since qd_has_avx2 depends on the calling thread (qd_set_portable_kernels)
// and honours QUANTDRIFT_PORTABLE_KERNELS=1.
static int use_f16c(void) {
    int v = __atomic_load_n(&cpu_has_f16c, __ATOMIC_RELAXED);
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("f16c") != 0;
        __atomic_store_n(&cpu_has_f16c, v, __ATOMIC_RELAXED);
    }
    return v && qd_has_avx2();
}

void qd_f32_to_f16_split(const float *src, size_t n, uint8_t *lo, uint8_t *hi) {
    if (use_f16c()) f32_to_f16_split_f16c(src, n, lo, hi);
    else f32_to_f16_split_c(src, n, lo, hi);
}

void qd_f16_split_to_f32(const uint8_t *lo, const uint8_t *hi, size_t n, float *dst) {
    if (use_f16c()) f16_split_to_f32_f16c(lo, hi, n, dst);
    else f16_split_to_f32_c(lo, hi, n, dst);
}

ATTR_F16C static float round_f16_f16c(float x) {
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtps_ph(_mm_set_ss(x), _MM_FROUND_TO_NEAREST_INT)));
}

float qd_round_f16(float x) {
    if (use_f16c()) return round_f16_f16c(x);
    return qd_f16_to_f32(qd_f32_to_f16(x));
}
