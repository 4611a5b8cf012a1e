// int8 and int4 weights × FP32 activations (the one-token decode path): AVX2+FMA paths and
// portable twins. See ckernels.h for the layouts.
#include "kernels_internal.h"
#include <pthread.h>
#include <stdlib.h>

// MARK: - Portable paths

static void gemv_i8_f32_c(const int8_t *codes, const float *scales, const float *mins, int group,
                          int out, int in, const float *x, float *y) {
    const int ng = groups_of(in, group);
    for (int o = 0; o < out; o++) {
        const int8_t *w = codes + (size_t)o * in;
        float acc = 0;
        for (int g = 0; g < ng; g++) {
            const int lo = g * group, hi = lo + group < in ? lo + group : in;
            float dot = 0, xs = 0;
            for (int i = lo; i < hi; i++) { dot += (float)w[i] * x[i]; xs += x[i]; }
            acc += scales[(size_t)o * ng + g] * dot;
            if (mins) acc += mins[(size_t)o * ng + g] * xs;
        }
        y[o] = acc;
    }
}

static void gemv_u4_f32_c(const uint8_t *packed, const float *scales, const float *mins, float offset, int group,
                          int out, int in, const float *x, float *y) {
    const int ng = groups_of(in, group);
    const size_t rowBytes = u4_row_bytes(in);
    for (int o = 0; o < out; o++) {
        const uint8_t *w = packed + (size_t)o * rowBytes;
        float acc = 0;
        for (int g = 0; g < ng; g++) {
            const int lo = g * group, hi = lo + group < in ? lo + group : in;
            float dot = 0, xs = 0;
            for (int i = lo; i < hi; i++) { dot += (float)u4_code(w, i) * x[i]; xs += x[i]; }
            acc += scales[(size_t)o * ng + g] * dot;
            if (mins) acc += mins[(size_t)o * ng + g] * xs;
            else if (offset != 0) acc += scales[(size_t)o * ng + g] * (offset * xs);
        }
        y[o] = acc;
    }
}

// MARK: - AVX2: FP32 activations
// Rows are taken four at a time so each activation load feeds four weight rows; each group's
// partial sums stay in vector registers and are scaled there (one FMA per group), with a single
// horizontal sum per row. The min term uses the group sums of x, computed once per call.

// Σ_g mins[g]·xs[g] for one row (8 groups per step: a scalar loop here was ~10% of an int4 g32
// product).
ATTR_AVX2 static inline float min_term(const float *mins, const float *xs, int ng) {
    __m256 a = _mm256_setzero_ps();
    int g = 0;
    for (; g + 8 <= ng; g += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(mins + g), _mm256_loadu_ps(xs + g), a);
    float s = hsum256(a);
    for (; g < ng; g++) s += mins[g] * xs[g];
    return s;
}

static void group_sums(const float *x, int in, int group, float *xs) {
    const int ng = groups_of(in, group);
    for (int g = 0; g < ng; g++) {
        const int lo = g * group, hi = lo + group < in ? lo + group : in;
        float s = 0;
        for (int i = lo; i < hi; i++) s += x[i];
        xs[g] = s;
    }
}

// 8 int8 codes → 8 floats.
ALWAYS_INLINE ATTR_AVX2 static inline __m256 i8x8(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

// Software prefetch distance in row blocks. A block of 4 rows is one contiguous span; while it is
// multiplied, the span PREFETCH_BLOCKS blocks ahead is requested one cache line per inner step.
// Without it the 4 interleaved row streams ran at ~6 GB/s from DRAM (half the streaming read
// bandwidth); with it the int8 kernel doubles (measured on the 211 decode matrices of
// SmolLM2-135M: 5.8 → 11-16 GMAC/s).
#define PREFETCH_BLOCKS 2
ALWAYS_INLINE static inline void prefetch(const void *p) { _mm_prefetch((const char *)p, _MM_HINT_T0); }

// Σ scale·code·x over elements [from, in) of one row, split at group boundaries (scalar): the
// elements after the last whole SIMD step.
static inline float i8_tail(const int8_t *w, const float *scales, int group, int from, int in, const float *x) {
    float r = 0;
    for (int lo = from; lo < in;) {
        const int end = (lo / group + 1) * group, hi = end < in ? end : in;
        float d = 0;
        for (int i = lo; i < hi; i++) d += (float)w[i] * x[i];
        r += scales[lo / group] * d;
        lo = hi;
    }
    return r;
}

static inline float u4_tail(const uint8_t *w, const float *scales, int group, int from, int in, const float *x) {
    float r = 0;
    for (int lo = from; lo < in;) {
        const int end = (lo / group + 1) * group, hi = end < in ? end : in;
        float d = 0;
        for (int i = lo; i < hi; i++) d += (float)u4_code(w, i) * x[i];
        r += scales[lo / group] * d;
        lo = hi;
    }
    return r;
}

// One row's dot product over one group span [lo, hi) of 16-multiples, in two chains (halves of
// each 16) added at the end: the same arithmetic as a row in the block of four above, so a row's
// value does not depend on how rows are split.
ALWAYS_INLINE ATTR_AVX2 static inline __m256 i8_span(const int8_t *w, const float *x, int lo, int hi) {
    __m256 d = _mm256_setzero_ps(), e = d;
    for (int i = lo; i < hi; i += 16) {
        d = _mm256_fmadd_ps(i8x8(w + i), _mm256_loadu_ps(x + i), d);
        e = _mm256_fmadd_ps(i8x8(w + i + 8), _mm256_loadu_ps(x + i + 8), e);
    }
    return _mm256_add_ps(d, e);
}

ATTR_AVX2 static void gemv_i8_f32_avx2(const int8_t *codes, const float *scales, const float *mins, int group,
                                       int out, int in, const float *x, float *y) {
    const int ng = groups_of(in, group);
    float xs[ng > 0 ? ng : 1];
    if (mins) group_sums(x, in, group, xs);
    // Whole steps of 16 (groups are 32-multiples or the whole row, so steps never straddle groups).
    const int fast = (group % 16 == 0 || group >= in) ? in - in % 16 : 0;
    int o = 0;
    for (; o + 4 <= out; o += 4) {
        const int8_t *w0 = codes + (size_t)o * in, *w1 = w0 + in, *w2 = w1 + in, *w3 = w2 + in;
        // 64 bytes of this block are read per step of 16: fetch as much of the block ahead.
        const int8_t *ahead = o + 4 * (PREFETCH_BLOCKS + 1) <= out ? w0 + (size_t)4 * PREFETCH_BLOCKS * in : NULL;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int lo = 0; lo < fast; lo += group) {
            const int hi = lo + group < fast ? lo + group : fast;
            // Eight independent FMA chains (4 rows × 2 halves) keep both FMA pipes busy.
            __m256 d0 = _mm256_setzero_ps(), d1 = d0, d2 = d0, d3 = d0, e0 = d0, e1 = d0, e2 = d0, e3 = d0;
            for (int i = lo; i < hi; i += 16) {
                if (ahead) prefetch(ahead + 4 * i);
                const __m256 xv = _mm256_loadu_ps(x + i), xw = _mm256_loadu_ps(x + i + 8);
                d0 = _mm256_fmadd_ps(i8x8(w0 + i), xv, d0);
                d1 = _mm256_fmadd_ps(i8x8(w1 + i), xv, d1);
                d2 = _mm256_fmadd_ps(i8x8(w2 + i), xv, d2);
                d3 = _mm256_fmadd_ps(i8x8(w3 + i), xv, d3);
                e0 = _mm256_fmadd_ps(i8x8(w0 + i + 8), xw, e0);
                e1 = _mm256_fmadd_ps(i8x8(w1 + i + 8), xw, e1);
                e2 = _mm256_fmadd_ps(i8x8(w2 + i + 8), xw, e2);
                e3 = _mm256_fmadd_ps(i8x8(w3 + i + 8), xw, e3);
            }
            d0 = _mm256_add_ps(d0, e0); d1 = _mm256_add_ps(d1, e1);
            d2 = _mm256_add_ps(d2, e2); d3 = _mm256_add_ps(d3, e3);
            const int g = lo / group;
            a0 = _mm256_fmadd_ps(_mm256_set1_ps(scales[(size_t)(o + 0) * ng + g]), d0, a0);
            a1 = _mm256_fmadd_ps(_mm256_set1_ps(scales[(size_t)(o + 1) * ng + g]), d1, a1);
            a2 = _mm256_fmadd_ps(_mm256_set1_ps(scales[(size_t)(o + 2) * ng + g]), d2, a2);
            a3 = _mm256_fmadd_ps(_mm256_set1_ps(scales[(size_t)(o + 3) * ng + g]), d3, a3);
        }
        const float r[4] = {hsum256(a0), hsum256(a1), hsum256(a2), hsum256(a3)};
        for (int k = 0; k < 4; k++) {
            float v = r[k] + i8_tail(w0 + (size_t)k * in, scales + (size_t)(o + k) * ng, group, fast, in, x);
            if (mins) v += min_term(mins + (size_t)(o + k) * ng, xs, ng);
            y[o + k] = v;
        }
    }
    for (; o < out; o++) {
        const int8_t *w = codes + (size_t)o * in;
        __m256 acc = _mm256_setzero_ps();
        for (int lo = 0; lo < fast; lo += group) {
            const int hi = lo + group < fast ? lo + group : fast;
            const __m256 d = i8_span(w, x, lo, hi);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(scales[(size_t)o * ng + lo / group]), d, acc);
        }
        float v = hsum256(acc) + i8_tail(w, scales + (size_t)o * ng, group, fast, in, x);
        if (mins) v += min_term(mins + (size_t)o * ng, xs, ng);
        y[o] = v;
    }
}

// Four rows at a time, one FMA chain per row and group (four rows give four independent chains;
// more chains per row cost registers and spills). A 16-byte block of 32 codes is widened 8 bytes
// at a time to 32-bit lanes whose low and high nibbles are the codes of elements j and j+16: one
// widening per 16 codes instead of a mask, a shift and four widenings of the 16 bytes. x is read
// from L1 as a memory operand. 1536×576 in L2: 8.6 → 15.5 GMAC/s (g32), 19.7 (g128).
// The 32 codes of a 16-byte block as FP32, in element order: c[0] elements 0-7, c[1] 8-15,
// c[2] 16-23, c[3] 24-31.
ALWAYS_INLINE ATTR_AVX2 static inline void u4_widen32(const uint8_t *w, __m256 c[4]) {
    const __m256i m15 = _mm256_set1_epi32(15);
    const __m256i e = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)w));
    const __m256i f = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(w + 8)));
    c[0] = _mm256_cvtepi32_ps(_mm256_and_si256(e, m15));
    c[1] = _mm256_cvtepi32_ps(_mm256_and_si256(f, m15));
    c[2] = _mm256_cvtepi32_ps(_mm256_srli_epi32(e, 4));
    c[3] = _mm256_cvtepi32_ps(_mm256_srli_epi32(f, 4));
}

ALWAYS_INLINE ATTR_AVX2 static inline __m256 u4_block(const uint8_t *w, const float *x, __m256 a) {
    __m256 c[4];
    u4_widen32(w, c);
    for (int q = 0; q < 4; q++) a = _mm256_fmadd_ps(c[q], _mm256_loadu_ps(x + 8 * q), a);
    return a;
}

// One row's group of 32 (g32): its 32 products into a fresh vector, then scaled into the row's sum.
ALWAYS_INLINE ATTR_AVX2 static inline __m256 u4_group32(const uint8_t *w, const float *s, const float *x, __m256 a) {
    const __m256 p = u4_block(w, x, _mm256_setzero_ps());
    return _mm256_fmadd_ps(_mm256_broadcast_ss(s), p, a);
}

// Row o's result from its SIMD part `dot`: the scalar tail after the whole blocks, then the min term.
ATTR_AVX2 static inline float u4_row_result(float dot, const uint8_t *w, const float *scales, const float *mw,
                                            const float *xs, int o, int ng, int group, int fast, int in,
                                            const float *x, int hasMin) {
    float v = dot + u4_tail(w, scales + (size_t)o * ng, group, fast, in, x);
    if (hasMin) v += min_term(mw + (size_t)o * ng, xs, ng);
    return v;
}

// The min term: Σ_g mins[g]·xs[g], or with `offset` (mins NULL) Σ_g scales[g]·(offset·xs[g]), so
// symmetric codes (w = scale·(code + offset)) need no second stream of per-group floats: for
// w4g32 the mins were a quarter of the bytes read per token.
ATTR_AVX2 static void gemv_u4_f32_avx2(const uint8_t *packed, const float *scales, const float *mins, float offset,
                                       int group, int out, int in, const float *x, float *y) {
    const int ng = groups_of(in, group);
    float xs[ng > 0 ? ng : 1];
    const int hasMin = mins || offset != 0;
    if (hasMin) group_sums(x, in, group, xs);
    if (!mins && offset != 0) for (int g = 0; g < ng; g++) xs[g] *= offset;
    const float *mw = mins ? mins : scales;
    const size_t rowBytes = u4_row_bytes(in);
    // Whole blocks of 32 (groups are 32-multiples or the whole row).
    const int fast = (group % 32 == 0 || group >= in) ? in - in % 32 : 0;
    int o = 0;
    if (group == 32) {
        // One block per group: a loop over blocks with the scale FMA in the body. Same arithmetic
        // as the general loop below, without its inner loop and bounds (1536×576 decode matrices:
        // ~1.2× on its own).
        const int nb = fast / 32;
        for (; o + 4 <= out; o += 4) {
            const uint8_t *w0 = packed + (size_t)o * rowBytes, *w1 = w0 + rowBytes, *w2 = w1 + rowBytes, *w3 = w2 + rowBytes;
            // 64 bytes of this block are read per group: fetch as much of the block ahead (or,
            // near the end, harmlessly the current one).
            const uint8_t *ahead = o + 4 * (PREFETCH_BLOCKS + 1) <= out ? w0 + 4 * PREFETCH_BLOCKS * rowBytes : w0;
            const float *s0 = scales + (size_t)o * ng, *s1 = s0 + ng, *s2 = s1 + ng, *s3 = s2 + ng;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int g = 0; g < nb; g++) {
                const int b = g * 16;
                const float *xg = x + g * 32;
                prefetch(ahead + 4 * b);
                a0 = u4_group32(w0 + b, s0 + g, xg, a0);
                a1 = u4_group32(w1 + b, s1 + g, xg, a1);
                a2 = u4_group32(w2 + b, s2 + g, xg, a2);
                a3 = u4_group32(w3 + b, s3 + g, xg, a3);
            }
            const float r[4] = {hsum256(a0), hsum256(a1), hsum256(a2), hsum256(a3)};
            for (int k = 0; k < 4; k++)
                y[o + k] = u4_row_result(r[k], w0 + k * rowBytes, scales, mw, xs, o + k, ng, group, fast, in, x, hasMin);
        }
        for (; o < out; o++) {
            const uint8_t *w = packed + (size_t)o * rowBytes;
            const float *s = scales + (size_t)o * ng;
            __m256 acc = _mm256_setzero_ps();
            for (int g = 0; g < nb; g++) acc = u4_group32(w + g * 16, s + g, x + g * 32, acc);
            y[o] = u4_row_result(hsum256(acc), w, scales, mw, xs, o, ng, group, fast, in, x, hasMin);
        }
        return;
    }
    for (; o + 4 <= out; o += 4) {
        const uint8_t *w0 = packed + (size_t)o * rowBytes, *w1 = w0 + rowBytes, *w2 = w1 + rowBytes, *w3 = w2 + rowBytes;
        // 64 bytes of this block are read per step of 32: fetch as much of the block ahead.
        const uint8_t *ahead = o + 4 * (PREFETCH_BLOCKS + 1) <= out ? w0 + 4 * PREFETCH_BLOCKS * rowBytes : w0;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int lo = 0; lo < fast; lo += group) {
            const int hi = lo + group < fast ? lo + group : fast;
            __m256 p0 = _mm256_setzero_ps(), p1 = p0, p2 = p0, p3 = p0;
            for (int i = lo; i < hi; i += 32) {
                const int b = (i >> 5) * 16;
                prefetch(ahead + 4 * b);
                p0 = u4_block(w0 + b, x + i, p0);
                p1 = u4_block(w1 + b, x + i, p1);
                p2 = u4_block(w2 + b, x + i, p2);
                p3 = u4_block(w3 + b, x + i, p3);
            }
            const int g = lo / group;
            a0 = _mm256_fmadd_ps(_mm256_set1_ps(scales[(size_t)(o + 0) * ng + g]), p0, a0);
            a1 = _mm256_fmadd_ps(_mm256_set1_ps(scales[(size_t)(o + 1) * ng + g]), p1, a1);
            a2 = _mm256_fmadd_ps(_mm256_set1_ps(scales[(size_t)(o + 2) * ng + g]), p2, a2);
            a3 = _mm256_fmadd_ps(_mm256_set1_ps(scales[(size_t)(o + 3) * ng + g]), p3, a3);
        }
        const float r[4] = {hsum256(a0), hsum256(a1), hsum256(a2), hsum256(a3)};
        for (int k = 0; k < 4; k++)
            y[o + k] = u4_row_result(r[k], w0 + k * rowBytes, scales, mw, xs, o + k, ng, group, fast, in, x, hasMin);
    }
    for (; o < out; o++) {
        const uint8_t *w = packed + (size_t)o * rowBytes;
        __m256 acc = _mm256_setzero_ps();
        for (int lo = 0; lo < fast; lo += group) {
            const int hi = lo + group < fast ? lo + group : fast;
            __m256 p = _mm256_setzero_ps();
            for (int i = lo; i < hi; i += 32) p = u4_block(w + (i >> 5) * 16, x + i, p);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(scales[(size_t)o * ng + lo / group]), p, acc);
        }
        y[o] = u4_row_result(hsum256(acc), w, scales, mw, xs, o, ng, group, fast, in, x, hasMin);
    }
}

// MARK: - Dispatch

void qd_gemv_i8_f32(const int8_t *codes, const float *scales, const float *mins, int group,
                    int out, int in, const float *x, float *y) {
    if (qd_has_avx2()) gemv_i8_f32_avx2(codes, scales, mins, group, out, in, x, y);
    else gemv_i8_f32_c(codes, scales, mins, group, out, in, x, y);
}

void qd_gemv_u4_f32(const uint8_t *packed, const float *scales, const float *mins, int group,
                    int out, int in, const float *x, float *y) {
    if (qd_has_avx2()) gemv_u4_f32_avx2(packed, scales, mins, 0, group, out, in, x, y);
    else gemv_u4_f32_c(packed, scales, mins, 0, group, out, in, x, y);
}

void qd_gemv_u4_f32_offset(const uint8_t *packed, const float *scales, float offset, int group,
                           int out, int in, const float *x, float *y) {
    if (qd_has_avx2()) gemv_u4_f32_avx2(packed, scales, NULL, offset, group, out, in, x, y);
    else gemv_u4_f32_c(packed, scales, NULL, offset, group, out, in, x, y);
}

// MARK: - Several rows (a batched decode step)
// The products above for `rows` activation rows x (rows, in) at once, y (rows, ldy). Every
// (weight row, activation row) pair gets exactly the arithmetic of the one-row kernel (the same
// chains, group scaling, lane sum, tail and min term), so a row's result is the same bits as a
// decode of that row alone, whatever rows come with it. Weight rows are taken in chunks that stay
// in cache while every activation row passes over them, so the weights are read from memory once
// per call (int8 chunks converted to an FP32 tile once, 4-bit codes widened as they are read).
// The min terms are added in a second pass, as the one-row kernel adds them last.

// `no` (1 or 2) int8 weight rows (codes w, w + in; their first `fast` values as FP32 in wf,
// wf + ldf; scales s, s + ng) × `nr` (≤ 3) activation rows: per pair, hsum of the scaled group
// chains plus the tail. Each step loads the first halves of both weight rows and runs them against
// every activation row, then the second halves: 12 chains, 2 weight vectors and 1 activation
// vector live (15 registers). (One weight row × 4 activation rows read 10 loads per 8 FMAs: 16
// rows on one core, 1536×576 and 576×1536 went from 33-34 to 43-47 GMAC/s, 576×576 stayed at 44-48.)
ALWAYS_INLINE ATTR_AVX2 static inline void i8_rows_block(const int8_t *w, const float *wf, int ldf, const float *s, int ng,
                                                         int group, int fast, int in, const float *x, int no, int nr,
                                                         float *y, int ldy) {
    __m256 a[2][3];
    for (int k = 0; k < no; k++)
        for (int j = 0; j < nr; j++) a[k][j] = _mm256_setzero_ps();
    for (int lo = 0; lo < fast; lo += group) {
        const int hi = lo + group < fast ? lo + group : fast;
        __m256 d[2][3], e[2][3];
        for (int k = 0; k < no; k++)
            for (int j = 0; j < nr; j++) d[k][j] = e[k][j] = _mm256_setzero_ps();
        for (int i = lo; i < hi; i += 16) {
            __m256 wv[2];
            for (int k = 0; k < no; k++) wv[k] = _mm256_loadu_ps(wf + (size_t)k * ldf + i);
            for (int j = 0; j < nr; j++) {
                const __m256 xv = _mm256_loadu_ps(x + (size_t)j * in + i);
                for (int k = 0; k < no; k++) d[k][j] = _mm256_fmadd_ps(wv[k], xv, d[k][j]);
            }
            for (int k = 0; k < no; k++) wv[k] = _mm256_loadu_ps(wf + (size_t)k * ldf + i + 8);
            for (int j = 0; j < nr; j++) {
                const __m256 xv = _mm256_loadu_ps(x + (size_t)j * in + i + 8);
                for (int k = 0; k < no; k++) e[k][j] = _mm256_fmadd_ps(wv[k], xv, e[k][j]);
            }
        }
        for (int k = 0; k < no; k++) {
            const __m256 sv = _mm256_set1_ps(s[(size_t)k * ng + lo / group]);
            for (int j = 0; j < nr; j++) a[k][j] = _mm256_fmadd_ps(sv, _mm256_add_ps(d[k][j], e[k][j]), a[k][j]);
        }
    }
    for (int k = 0; k < no; k++)
        for (int j = 0; j < nr; j++)
            y[(size_t)j * ldy + k] = hsum256(a[k][j]) + i8_tail(w + (size_t)k * in, s + (size_t)k * ng, group, fast, in,
                                                                x + (size_t)j * in);
}

// One 4-bit weight row × `nr` (≤ 4) activation rows, as u4_block's chain per group.
ALWAYS_INLINE ATTR_AVX2 static inline void u4_rows_block(const uint8_t *w, const float *s, int group, int fast, int in,
                                                         const float *x, int nr, float *y, int ldy) {
    __m256 a[4];
    for (int j = 0; j < nr; j++) a[j] = _mm256_setzero_ps();
    for (int lo = 0; lo < fast; lo += group) {
        const int hi = lo + group < fast ? lo + group : fast;
        __m256 p[4];
        for (int j = 0; j < nr; j++) p[j] = _mm256_setzero_ps();
        for (int i = lo; i < hi; i += 32) {
            __m256 c[4];
            u4_widen32(w + (i >> 5) * 16, c);
            for (int j = 0; j < nr; j++) {
                const float *xj = x + (size_t)j * in + i;
                for (int q = 0; q < 4; q++) p[j] = _mm256_fmadd_ps(c[q], _mm256_loadu_ps(xj + 8 * q), p[j]);
            }
        }
        const __m256 sv = _mm256_set1_ps(s[lo / group]);
        for (int j = 0; j < nr; j++) a[j] = _mm256_fmadd_ps(sv, p[j], a[j]);
    }
    for (int j = 0; j < nr; j++) y[(size_t)j * ldy] = hsum256(a[j]) + u4_tail(w, s, group, fast, in, x + (size_t)j * in);
}

// The min terms, added last: Σ_g mw[g]·xs[g] per pair, xs the group sums of the activation row
// (times `offset` for symmetric nibbles, whose mins are offset·scale).
ATTR_AVX2 static void add_min_terms(const float *mw, float offset, int group, int out, int in, const float *x, int rows,
                                    float *y, int ldy) {
    const int ng = groups_of(in, group);
    float xs[ng > 0 ? ng : 1];
    for (int r = 0; r < rows; r++) {
        group_sums(x + (size_t)r * in, in, group, xs);
        if (offset != 0) for (int g = 0; g < ng; g++) xs[g] *= offset;
        for (int o = 0; o < out; o++) y[(size_t)r * ldy + o] += min_term(mw + (size_t)o * ng, xs, ng);
    }
}

// Per-channel int8 (one group a row): the one-row kernel's two chains a pair (the first and the
// second halves of every step of 16) are independent sums, so they can run one after the other.
// Activation rows and decoded weight rows are laid out "halves apart" (the first halves of all
// steps, then the second halves), so each chain is one contiguous 8-lane FMA chain and a block
// of 3 weight rows × 4 activation rows keeps 12 chains with 3 weight and 1 activation vector live,
// as in qd_gemm_f32_rows (the two-chain block above fits only 6 pairs: 10 loads per 12 FMAs
// instead of 7). Same values in the same order, so the same bits.

// The first `fast` values of a row (a multiple of 16) halves apart: value 16s + l (l < 8) to 8s + l,
// value 16s + 8 + l to fast/2 + 8s + l.
ALWAYS_INLINE ATTR_AVX2 static inline void halves_apart_f32(const float *src, int fast, float *dst) {
    const int half = fast / 2;
    for (int i = 0, j = 0; i < fast; i += 16, j += 8) {
        _mm256_storeu_ps(dst + j, _mm256_loadu_ps(src + i));
        _mm256_storeu_ps(dst + half + j, _mm256_loadu_ps(src + i + 8));
    }
}

ALWAYS_INLINE ATTR_AVX2 static inline void halves_apart_i8(const int8_t *src, int fast, float *dst) {
    const int half = fast / 2;
    for (int i = 0, j = 0; i < fast; i += 16, j += 8) {
        _mm256_storeu_ps(dst + j, i8x8(src + i));
        _mm256_storeu_ps(dst + half + j, i8x8(src + i + 8));
    }
}

// 12 chains over [from, to) of rows laid out halves apart: acc[k][j] += w_k · x_j, 8 lanes a step.
ALWAYS_INLINE ATTR_AVX2 static inline void halves_chains(const float *wt, int ldw, const float *xp, int ldx, int no, int nr,
                                                         int from, int to, __m256 acc[3][4]) {
    for (int k = 0; k < no; k++)
        for (int j = 0; j < nr; j++) acc[k][j] = _mm256_setzero_ps();
    for (int i = from; i < to; i += 8) {
        __m256 wv[3];
        for (int k = 0; k < no; k++) wv[k] = _mm256_loadu_ps(wt + (size_t)k * ldw + i);
        for (int j = 0; j < nr; j++) {
            const __m256 xv = _mm256_loadu_ps(xp + (size_t)j * ldx + i);
            for (int k = 0; k < no; k++) acc[k][j] = _mm256_fmadd_ps(wv[k], xv, acc[k][j]);
        }
    }
}

// `no` (≤ 3) weight rows × `nr` (≤ 4) activation rows: the first-half chains, kept in memory while
// the second-half chains run, then per pair the one-row kernel's scaling, lane sum and tail.
ALWAYS_INLINE ATTR_AVX2 static inline void i8_halves_block(const int8_t *w, int in, const float *wt, int ldw, const float *s,
                                                           int fast, const float *x, const float *xp, int ldx, int no,
                                                           int nr, float *y, int ldy) {
    __m256 acc[3][4];
    float first[3][4][8];
    halves_chains(wt, ldw, xp, ldx, no, nr, 0, fast / 2, acc);
    for (int k = 0; k < no; k++)
        for (int j = 0; j < nr; j++) _mm256_storeu_ps(first[k][j], acc[k][j]);
    halves_chains(wt, ldw, xp, ldx, no, nr, fast / 2, fast, acc);
    for (int k = 0; k < no; k++) {
        const __m256 sv = _mm256_set1_ps(s[k]);
        for (int j = 0; j < nr; j++) {
            const __m256 a = _mm256_fmadd_ps(sv, _mm256_add_ps(_mm256_loadu_ps(first[k][j]), acc[k][j]), _mm256_setzero_ps());
            y[(size_t)j * ldy + k] = hsum256(a) + i8_tail(w + (size_t)k * in, s + k, in, fast, in, x + (size_t)j * in);
        }
    }
}

// Per-thread space for the batched kernels' decoded weight rows and rearranged activation rows
// (grown, never shrunk: rows × row length floats, a few hundred KB at most; freed when the thread
// ends). 64-byte aligned: with 32-byte loads straddling cache lines the int8 kernel below ran at
// 20-23 GMAC/s in some runs and 32-34 in others, as its buffers happened to fall; aligned, 34 in
// every run. Returns NULL when the space cannot be had.
static _Thread_local float *rows_space;
static _Thread_local size_t rows_capacity;
static pthread_key_t rows_key;
static pthread_once_t rows_key_once = PTHREAD_ONCE_INIT;
static void make_rows_key(void) { pthread_key_create(&rows_key, free); }

static float *batched_space(size_t floats) {
    if (floats > rows_capacity) {
        float *p = aligned_alloc(64, (sizeof(float) * floats + 63) / 64 * 64);
        if (!p) return NULL;
        free(rows_space);
        rows_space = p;
        rows_capacity = floats;
        pthread_once(&rows_key_once, make_rows_key);
        pthread_setspecific(rows_key, p);
    }
    return rows_space;
}

// Returns 0 (nothing written) when the space cannot be had.
ATTR_AVX2 static int gemm_i8_f32_rows_channel_avx2(const int8_t *codes, const float *scales, int out, int in, int fast,
                                                   const float *x, int rows, float *y, int ldy) {
    float *tile = batched_space((size_t)(rows + 3) * fast);
    if (!tile) return 0;
    float *xp = tile + (size_t)3 * fast;
    for (int r = 0; r < rows; r++) halves_apart_f32(x + (size_t)r * in, fast, xp + (size_t)r * fast);
    // One block of 3 weight rows at a time, decoded into the tile, which stays in L1 while every
    // activation row streams past it (Zen 3, 16 rows, the model's shapes: 34 GMAC/s; tiles of 6 or
    // 12 rows, 32 KB as the other kernels use, fell out of L1 with the activation rows: 22-32).
    for (int o = 0; o < out; o += 3) {
        const int no = min_int(3, out - o);
        for (int k = 0; k < no; k++) halves_apart_i8(codes + (size_t)(o + k) * in, fast, tile + (size_t)k * fast);
        prefetch_l2(codes + (size_t)(o + no) * in, (size_t)min_int(3, out - o - no) * in);
        const int8_t *w = codes + (size_t)o * in;
        const float *s = scales + o;
        for (int r = 0; r < rows; r += 4) {
            const int nr = min_int(4, rows - r);
            const float *xr = x + (size_t)r * in, *xpr = xp + (size_t)r * fast;
            float *yr = y + (size_t)r * ldy + o;
#define HB(NO, NR) i8_halves_block(w, in, tile, fast, s, fast, xr, xpr, fast, NO, NR, yr, ldy)
#define HB_ROWS(NO) switch (nr) { case 4: HB(NO, 4); break; case 3: HB(NO, 3); break; case 2: HB(NO, 2); break; default: HB(NO, 1); }
            if (no == 3) { HB_ROWS(3) } else if (no == 2) { HB_ROWS(2) } else { HB_ROWS(1) }
#undef HB_ROWS
#undef HB
        }
    }
    return 1;
}

// int8: weight rows in chunks whose codes are converted to FP32 once per call (exactly: the values
// the one-row kernel widens as it goes; widening them again for every three activation rows was a
// third of the work), activation rows three at a time and weight rows in pairs (then what is left).
ATTR_AVX2 static void gemm_i8_f32_rows_avx2(const int8_t *codes, const float *scales, const float *mins, int group,
                                            int out, int in, const float *x, int rows, float *y, int ldy) {
    const int ng = groups_of(in, group);
    const int fast = (group % 16 == 0 || group >= in) ? in - in % 16 : 0;
    if (ng == 1 && fast > 0 && rows > 1 && gemm_i8_f32_rows_channel_avx2(codes, scales, out, in, fast, x, rows, y, ldy)) {
        if (mins) add_min_terms(mins, 0, group, out, in, x, rows, y, ldy);
        return;
    }
    const int chunk = tile_rows(fast, 2), ldf = fast > 0 ? fast : 1;
    // On the stack up to 64 KB (rows of up to 8,192 values); wider rows, which no model here has,
    // take the heap rather than a thread's small stack.
    float small[16384] __attribute__((aligned(64)));
    const size_t need = (size_t)chunk * ldf;
    float *tile = need <= 16384 ? small : malloc(sizeof(float) * need);
    if (!tile) {
        // No memory for the tile: the same arithmetic straight from the codes, row by row.
        for (int r = 0; r < rows; r++) gemv_i8_f32_avx2(codes, scales, mins, group, out, in, x + (size_t)r * in, y + (size_t)r * ldy);
        return;
    }
    for (int o0 = 0; o0 < out; o0 += chunk) {
        const int o1 = min_int(out, o0 + chunk);
        for (int o = o0; o < o1; o++)
            for (int i = 0; i < fast; i += 8) _mm256_storeu_ps(tile + (size_t)(o - o0) * ldf + i, i8x8(codes + (size_t)o * in + i));
        prefetch_l2(codes + (size_t)o1 * in, (size_t)(min_int(out, o1 + chunk) - o1) * in);
        for (int r = 0; r < rows; r += 3) {
            const float *xr = x + (size_t)r * in;
            float *yr = y + (size_t)r * ldy;
            const int nr = min_int(3, rows - r);
            for (int o = o0; o < o1; o += 2) {
                const int8_t *w = codes + (size_t)o * in;
                const float *wf = tile + (size_t)(o - o0) * ldf, *s = scales + (size_t)o * ng;
#define I8_BLOCK(NO, NR) i8_rows_block(w, wf, ldf, s, ng, group, fast, in, xr, NO, NR, yr + o, ldy)
                if (o + 2 <= o1) {
                    if (nr == 3) I8_BLOCK(2, 3); else if (nr == 2) I8_BLOCK(2, 2); else I8_BLOCK(2, 1);
                } else {
                    if (nr == 3) I8_BLOCK(1, 3); else if (nr == 2) I8_BLOCK(1, 2); else I8_BLOCK(1, 1);
                }
#undef I8_BLOCK
            }
        }
    }
    if (tile != small) free(tile);
    if (mins) add_min_terms(mins, 0, group, out, in, x, rows, y, ldy);
}

// 4-bit, other group sizes: weight rows in chunks of ROWS_CHUNK that stay in cache, activation
// rows four at a time (then the 1–3 left), BLOCK (u4_rows_block) on weight row W(o). The codes are
// widened as they are read: with a 32 KB FP32 tile this kernel went from 35.6 to 28.8 GMAC/s (12
// rows on the model's 210 matrices, one core, Zen 5). Groups of 32 take the 2-row tile above
// (Zen 3, 16 rows, the model's shapes: 20-25 → 26-28 GMAC/s).
#define ROWS_CHUNK 32
#define FOR_ROW_BLOCKS(BLOCK, W)                                                                   \
    for (int o0 = 0; o0 < out; o0 += ROWS_CHUNK) {                                                 \
        const int o1 = min_int(out, o0 + ROWS_CHUNK);                                              \
        for (int r = 0; r < rows; r += 4) {                                                        \
            const float *xr = x + (size_t)r * in;                                                  \
            float *yr = y + (size_t)r * ldy;                                                       \
            for (int o = o0; o < o1; o++) {                                                        \
                const float *s = scales + (size_t)o * ng;                                          \
                switch (min_int(4, rows - r)) {                                                    \
                case 4: BLOCK(W(o), s, group, fast, in, xr, 4, yr + o, ldy); break;                \
                case 3: BLOCK(W(o), s, group, fast, in, xr, 3, yr + o, ldy); break;                \
                case 2: BLOCK(W(o), s, group, fast, in, xr, 2, yr + o, ldy); break;                \
                default: BLOCK(W(o), s, group, fast, in, xr, 1, yr + o, ldy); break;               \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }

// 4-bit, groups of 32 (w4g32): blocks of 2 weight rows, their codes decoded once into an FP32
// tile in element order (which the packed layout is not: a byte holds elements j and j + 16), × 3
// activation rows at a time: per pair the one-row kernel's chain per group (4 FMAs from zero) and
// its scale FMA, 6 pairs × 2 registers + 2 weight vectors + 1 activation vector (15 registers).
// The one-weight-row block above widens the codes again for every 4 activation rows and reads
// an activation vector for every FMA.
ALWAYS_INLINE ATTR_AVX2 static inline void u4g32_tile_row(const uint8_t *w, int nb, float *dst) {
    for (int g = 0; g < nb; g++) {
        __m256 c[4];
        u4_widen32(w + g * 16, c);
        for (int q = 0; q < 4; q++) _mm256_store_ps(dst + g * 32 + 8 * q, c[q]);
    }
}

ALWAYS_INLINE ATTR_AVX2 static inline void u4g32_block(const uint8_t *w, size_t rowBytes, const float *wt, int ldw,
                                                       const float *s, int ng, int nb, int in, const float *x,
                                                       const float *xa, int ldx, int no, int nr, float *y, int ldy) {
    __m256 acc[2][3];
    for (int k = 0; k < no; k++)
        for (int j = 0; j < nr; j++) acc[k][j] = _mm256_setzero_ps();
    for (int g = 0; g < nb; g++) {
        __m256 p[2][3];
        for (int q = 0; q < 4; q++) {
            const int i = g * 32 + q * 8;
            __m256 wv[2];
            for (int k = 0; k < no; k++) wv[k] = _mm256_load_ps(wt + (size_t)k * ldw + i);
            for (int j = 0; j < nr; j++) {
                const __m256 xv = _mm256_load_ps(xa + (size_t)j * ldx + i);
                for (int k = 0; k < no; k++) p[k][j] = _mm256_fmadd_ps(wv[k], xv, q == 0 ? _mm256_setzero_ps() : p[k][j]);
            }
        }
        for (int k = 0; k < no; k++) {
            const __m256 sv = _mm256_broadcast_ss(s + (size_t)k * ng + g);
            for (int j = 0; j < nr; j++) acc[k][j] = _mm256_fmadd_ps(sv, p[k][j], acc[k][j]);
        }
    }
    const int fast = nb * 32;
    for (int k = 0; k < no; k++)
        for (int j = 0; j < nr; j++)
            y[(size_t)j * ldy + k] = hsum256(acc[k][j]) + u4_tail(w + (size_t)k * rowBytes, s + (size_t)k * ng, 32, fast, in,
                                                                  x + (size_t)j * in);
}

// Returns 0 (nothing written) when the space cannot be had.
ATTR_AVX2 static int gemm_u4g32_f32_rows_avx2(const uint8_t *packed, const float *scales, int out, int in, const float *x,
                                              int rows, float *y, int ldy) {
    const int ng = groups_of(in, 32), nb = in / 32, fast = nb * 32;
    const size_t rowBytes = u4_row_bytes(in);
    float *tile = batched_space((size_t)(rows + 2) * fast);
    if (!tile) return 0;
    float *xa = tile + (size_t)2 * fast;
    for (int r = 0; r < rows; r++) memcpy(xa + (size_t)r * fast, x + (size_t)r * in, sizeof(float) * fast);
    for (int o = 0; o < out; o += 2) {
        const int no = min_int(2, out - o);
        for (int k = 0; k < no; k++) u4g32_tile_row(packed + (size_t)(o + k) * rowBytes, nb, tile + (size_t)k * fast);
        prefetch_l2(packed + (size_t)(o + no) * rowBytes, (size_t)min_int(2, out - o - no) * rowBytes);
        const uint8_t *w = packed + (size_t)o * rowBytes;
        const float *s = scales + (size_t)o * ng;
        for (int r = 0; r < rows; r += 3) {
            const int nr = min_int(3, rows - r);
            const float *xr = x + (size_t)r * in, *xar = xa + (size_t)r * fast;
            float *yr = y + (size_t)r * ldy + o;
#define UB(NO, NR) u4g32_block(w, rowBytes, tile, fast, s, ng, nb, in, xr, xar, fast, NO, NR, yr, ldy)
#define UB_ROWS(NO) switch (nr) { case 3: UB(NO, 3); break; case 2: UB(NO, 2); break; default: UB(NO, 1); }
            if (no == 2) { UB_ROWS(2) } else { UB_ROWS(1) }
#undef UB_ROWS
#undef UB
        }
    }
    return 1;
}

ATTR_AVX2 static void gemm_u4_f32_rows_avx2(const uint8_t *packed, const float *scales, const float *mins, float offset,
                                            int group, int out, int in, const float *x, int rows, float *y, int ldy) {
    const int ng = groups_of(in, group);
    const size_t rowBytes = u4_row_bytes(in);
    const int fast = (group % 32 == 0 || group >= in) ? in - in % 32 : 0;
    // Groups of 32 over several rows take the batched kernel; the rest (or its allocation
    // failing) the row blocks below. Either way the min terms come after.
    const int batched = group == 32 && in >= 32 && rows > 1 && gemm_u4g32_f32_rows_avx2(packed, scales, out, in, x, rows, y, ldy);
    if (!batched) {
#define U4_ROW(o) (packed + (size_t)(o) * rowBytes)
        FOR_ROW_BLOCKS(u4_rows_block, U4_ROW)
#undef U4_ROW
    }
    if (mins) add_min_terms(mins, 0, group, out, in, x, rows, y, ldy);
    else if (offset != 0) add_min_terms(scales, offset, group, out, in, x, rows, y, ldy);
}

void qd_gemm_i8_f32_rows(const int8_t *codes, const float *scales, const float *mins, int group, int out, int in,
                         const float *x, int rows, float *y, int ldy) {
    if (qd_has_avx2()) return gemm_i8_f32_rows_avx2(codes, scales, mins, group, out, in, x, rows, y, ldy);
    for (int r = 0; r < rows; r++) gemv_i8_f32_c(codes, scales, mins, group, out, in, x + (size_t)r * in, y + (size_t)r * ldy);
}

void qd_gemm_u4_f32_rows(const uint8_t *packed, const float *scales, const float *mins, float offset, int group,
                         int out, int in, const float *x, int rows, float *y, int ldy) {
    if (qd_has_avx2()) return gemm_u4_f32_rows_avx2(packed, scales, mins, offset, group, out, in, x, rows, y, ldy);
    for (int r = 0; r < rows; r++)
        gemv_u4_f32_c(packed, scales, mins, offset, group, out, in, x + (size_t)r * in, y + (size_t)r * ldy);
}
