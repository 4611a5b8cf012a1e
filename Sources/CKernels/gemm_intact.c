// int8 and int4 weights × int8 activations, one weight row at a time against every activation
// row, and the exact integer dot products. AVX2 paths and portable twins. See ckernels.h.
//
// The row is walked in spans of min(group, xgroup) elements; each span's integer dot product is
// exact, then scaled: y += sw·sx·dot + mw·sx·Σcodes(x).
//
// Each driver below serves both code types: `nibbles` (0 for int8 codes, 1 for packed 4-bit
// codes) is a constant at every call site and the driver is always inlined, so the compiler makes
// one copy per type with the other branch removed.
#include "kernels_internal.h"

// Code i of a weight row: int8, or packed 4-bit (0..15).
static inline int32_t code_at(const uint8_t *w, int nibbles, int i) {
    return nibbles ? u4_code(w, i) : ((const int8_t *)w)[i];
}

static inline size_t row_bytes(int nibbles, int in) { return nibbles ? u4_row_bytes(in) : (size_t)in; }

// MARK: - Portable paths

static int32_t dot_i8_i8_c(const int8_t *a, const int8_t *b, int n) {
    int32_t s = 0;
    for (int i = 0; i < n; i++) s += (int32_t)a[i] * (int32_t)b[i];
    return s;
}

// Dot of 4-bit codes from element `start` (a multiple of 32) for n elements.
static int32_t dot_u4_i8_c(const uint8_t *row, int start, const int8_t *b, int n) {
    int32_t s = 0;
    for (int i = 0; i < n; i++) s += u4_code(row, start + i) * (int32_t)b[i];
    return s;
}

ALWAYS_INLINE static inline void gemm_int_c(const void *codes, int nibbles, const float *scales, const float *mins,
                                            int group, int out, int in, int rows, const int8_t *xq0,
                                            const float *xscales0, const int32_t *xsum0, int xgroup, float *y) {
    const int ng = groups_of(in, group);
    const int nxg = groups_of(in, xgroup);
    const int nb = (in + 31) / 32;
    const int span = min_int(group, xgroup);
    const size_t rowBytes = row_bytes(nibbles, in);
    for (int o = 0; o < out; o++) {
        const uint8_t *w = (const uint8_t *)codes + (size_t)o * rowBytes;
        for (int r = 0; r < rows; r++) {
            const int8_t *xq = xq0 + (size_t)r * in;
            const float *xscales = xscales0 + (size_t)r * nxg;
            const int32_t *xsum32 = xsum0 + (size_t)r * nb;
            float acc = 0;
            for (int lo = 0; lo < in; lo += span) {
                const int n = min_int(span, in - lo);
                const int g = lo / group;
                const float sx = xscales[lo / xgroup];
                const int32_t dot = nibbles ? dot_u4_i8_c(w, lo, xq + lo, n)
                                            : dot_i8_i8_c((const int8_t *)w + lo, xq + lo, n);
                acc += scales[(size_t)o * ng + g] * sx * (float)dot;
                if (mins) {
                    int32_t xs = 0;
                    for (int b = lo / 32; b < (lo + n + 31) / 32; b++) xs += xsum32[b];
                    acc += mins[(size_t)o * ng + g] * sx * (float)xs;
                }
            }
            y[(size_t)r * out + o] = acc;
        }
    }
}

static void gemm_i8_i8_c(const int8_t *codes, const float *scales, const float *mins, int group, int out, int in,
                         int rows, const int8_t *xq, const float *xscales, const int32_t *xsum32, int xgroup, float *y) {
    gemm_int_c(codes, 0, scales, mins, group, out, in, rows, xq, xscales, xsum32, xgroup, y);
}

static void gemm_u4_i8_c(const uint8_t *packed, const float *scales, const float *mins, int group, int out, int in,
                         int rows, const int8_t *xq, const float *xscales, const int32_t *xsum32, int xgroup, float *y) {
    gemm_int_c(packed, 1, scales, mins, group, out, in, rows, xq, xscales, xsum32, xgroup, y);
}

// MARK: - AVX2 paths

ATTR_AVX2 static int32_t dot_i8_i8_avx2(const int8_t *a, const int8_t *b, int n) {
    __m256i acc = _mm256_setzero_si256();
    int i = 0;
    for (; i + 32 <= n; i += 32)
        acc = _mm256_add_epi32(acc, dot32_i8(_mm256_loadu_si256((const __m256i *)(a + i)),
                                             _mm256_loadu_si256((const __m256i *)(b + i))));
    int32_t s = hsum256i(acc);
    for (; i < n; i++) s += (int32_t)a[i] * (int32_t)b[i];
    return s;
}

ATTR_AVX2 static int32_t dot_u4_i8_avx2(const uint8_t *row, const int8_t *b, int n) {
    __m256i acc = _mm256_setzero_si256();
    int i = 0;
    for (; i + 32 <= n; i += 32) acc = _mm256_add_epi32(acc, dot32_u4_i8(row + (i >> 5) * 16, b + i));
    int32_t s = hsum256i(acc);
    for (; i < n; i++) s += u4_code(row, i) * (int32_t)b[i];
    return s;
}

// Per span, the 32-element blocks' int32 partial sums stay in a vector; the span is scaled in
// float (one FMA) and the row is summed horizontally once.
ALWAYS_INLINE ATTR_AVX2 static inline void gemm_int_avx2(const void *codes, int nibbles, const float *scales,
                                                         const float *mins, int group, int out, int in, int rows,
                                                         const int8_t *xq0, const float *xscales0,
                                                         const int32_t *xsum0, int xgroup, float *y) {
    const int ng = groups_of(in, group), nxg = groups_of(in, xgroup), nb = (in + 31) / 32;
    const int span = min_int(group, xgroup);
    const size_t rowBytes = row_bytes(nibbles, in);
    for (int o = 0; o < out; o++) {
        const uint8_t *w = (const uint8_t *)codes + (size_t)o * rowBytes;
        const float *sw = scales + (size_t)o * ng;
        const float *mw = mins ? mins + (size_t)o * ng : NULL;
        for (int r = 0; r < rows; r++) {
            const int8_t *xq = xq0 + (size_t)r * in;
            const float *xs = xscales0 + (size_t)r * nxg;
            const int32_t *xsum32 = xsum0 + (size_t)r * nb;
            __m256 acc = _mm256_setzero_ps();
            float tail = 0;
            for (int lo = 0; lo < in; lo += span) {
                const int hi = min_int(lo + span, in);
                const int g = lo / group;
                const float sx = xs[lo / xgroup];
                __m256i isum = _mm256_setzero_si256();
                int i = lo;
                for (; i + 32 <= hi; i += 32) {
                    const __m256i d = nibbles ? dot32_u4_i8(w + (i >> 5) * 16, xq + i)
                                              : dot32_i8(_mm256_loadu_si256((const __m256i *)(w + i)),
                                                         _mm256_loadu_si256((const __m256i *)(xq + i)));
                    isum = _mm256_add_epi32(isum, d);
                }
                int32_t rest = 0;
                for (; i < hi; i++) rest += code_at(w, nibbles, i) * (int32_t)xq[i];
                const float s = sw[g] * sx;
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(s), acc);
                tail += s * (float)rest;
                if (mw) {
                    int32_t xsm = 0;
                    for (int b = lo / 32; b < (hi + 31) / 32; b++) xsm += xsum32[b];
                    tail += mw[g] * sx * (float)xsm;
                }
            }
            y[(size_t)r * out + o] = hsum256(acc) + tail;
        }
    }
}

ATTR_AVX2 static void gemm_i8_i8_avx2(const int8_t *codes, const float *scales, const float *mins, int group,
                                      int out, int in, int rows, const int8_t *xq, const float *xscales,
                                      const int32_t *xsum32, int xgroup, float *y) {
    gemm_int_avx2(codes, 0, scales, mins, group, out, in, rows, xq, xscales, xsum32, xgroup, y);
}

ATTR_AVX2 static void gemm_u4_i8_avx2(const uint8_t *packed, const float *scales, const float *mins, int group,
                                      int out, int in, int rows, const int8_t *xq, const float *xscales,
                                      const int32_t *xsum32, int xgroup, float *y) {
    gemm_int_avx2(packed, 1, scales, mins, group, out, in, rows, xq, xscales, xsum32, xgroup, y);
}

// MARK: - Dispatch

void qd_gemm_i8_i8(const int8_t *codes, const float *scales, const float *mins, int group,
                   int out, int in, int rows, const int8_t *xq, const float *xscales, const int32_t *xsum32,
                   int xgroup, float *y) {
    if (qd_has_avx2()) gemm_i8_i8_avx2(codes, scales, mins, group, out, in, rows, xq, xscales, xsum32, xgroup, y);
    else gemm_i8_i8_c(codes, scales, mins, group, out, in, rows, xq, xscales, xsum32, xgroup, y);
}

void qd_gemm_u4_i8(const uint8_t *packed, const float *scales, const float *mins, int group,
                   int out, int in, int rows, const int8_t *xq, const float *xscales, const int32_t *xsum32,
                   int xgroup, float *y) {
    if (qd_has_avx2()) gemm_u4_i8_avx2(packed, scales, mins, group, out, in, rows, xq, xscales, xsum32, xgroup, y);
    else gemm_u4_i8_c(packed, scales, mins, group, out, in, rows, xq, xscales, xsum32, xgroup, y);
}

int32_t qd_dot_i8_i8(const int8_t *a, const int8_t *b, int n) {
    return qd_has_avx2() ? dot_i8_i8_avx2(a, b, n) : dot_i8_i8_c(a, b, n);
}

int32_t qd_dot_u4_i8(const uint8_t *packed, const int8_t *b, int n) {
    return qd_has_avx2() ? dot_u4_i8_avx2(packed, b, n) : dot_u4_i8_c(packed, 0, b, n);
}
