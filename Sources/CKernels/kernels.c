// Quantized matrix-vector kernels: AVX2+FMA paths (selected per function with target
// attributes, so the package needs no compiler flags) and portable twins. See ckernels.h.
#include "ckernels.h"
#include <immintrin.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#define ATTR_AVX2 __attribute__((target("avx2,fma,f16c")))

static int cpu_has_avx2 = -1;

int qd_has_avx2(void) {
    if (cpu_has_avx2 < 0) {
        __builtin_cpu_init();
        // QUANTDRIFT_PORTABLE_KERNELS=1 forces the portable paths (to compare them on real runs).
        const char *portable = getenv("QUANTDRIFT_PORTABLE_KERNELS");
        cpu_has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                       !(portable && portable[0] == '1');
    }
    return cpu_has_avx2;
}

static inline int groups_of(int in, int group) { return (in + group - 1) / group; }
static inline int u4_code(const uint8_t *row, int i) {
    const uint8_t b = row[(i >> 5) * 16 + (i & 15)];
    return (i & 16) ? (b >> 4) : (b & 15);
}

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
    const size_t rowBytes = (size_t)((in + 31) / 32) * 16;
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

// MARK: - AVX2 helpers

ATTR_AVX2 static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

ATTR_AVX2 static inline int32_t hsum256i(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

// Σ a·b over 32 int8 pairs as 8 int32 lanes (a signed, |b| ≤ 127).
ATTR_AVX2 static inline __m256i dot32_i8(__m256i a, __m256i b) {
    const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

// The 32 4-bit codes of a packed block as 32 unsigned bytes in element order.
ATTR_AVX2 static inline __m256i unpack_u4(const uint8_t *p) {
    const __m128i b = _mm_loadu_si128((const __m128i *)p);
    const __m128i lo = _mm_and_si128(b, _mm_set1_epi8(15));
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(15));
    return _mm256_set_m128i(hi, lo);
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
#define I8X8(p) _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p))))

// Software prefetch distance in row blocks. A block of 4 rows is one contiguous span; while it is
// multiplied, the span PREFETCH_BLOCKS blocks ahead is requested one cache line per inner step.
// Without it the 4 interleaved row streams ran at ~6 GB/s from DRAM (half the streaming read
// bandwidth); with it the int8 kernel doubles (measured on the 211 decode matrices of
// SmolLM2-135M: 5.8 → 11-16 GMAC/s).
#define PREFETCH_BLOCKS 2
#define PREFETCH(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)

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
// each 16): the same arithmetic whether the row is in a block of four or alone, so a row's value
// does not depend on how rows are split.
#define I8_SPAN(W, D, E, LO, HI)                                                       \
    for (int i = (LO); i < (HI); i += 16) {                                             \
        D = _mm256_fmadd_ps(I8X8((W) + i), _mm256_loadu_ps(x + i), D);                  \
        E = _mm256_fmadd_ps(I8X8((W) + i + 8), _mm256_loadu_ps(x + i + 8), E);          \
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
                if (ahead) PREFETCH(ahead + 4 * i);
                const __m256 xv = _mm256_loadu_ps(x + i), xw = _mm256_loadu_ps(x + i + 8);
                d0 = _mm256_fmadd_ps(I8X8(w0 + i), xv, d0);
                d1 = _mm256_fmadd_ps(I8X8(w1 + i), xv, d1);
                d2 = _mm256_fmadd_ps(I8X8(w2 + i), xv, d2);
                d3 = _mm256_fmadd_ps(I8X8(w3 + i), xv, d3);
                e0 = _mm256_fmadd_ps(I8X8(w0 + i + 8), xw, e0);
                e1 = _mm256_fmadd_ps(I8X8(w1 + i + 8), xw, e1);
                e2 = _mm256_fmadd_ps(I8X8(w2 + i + 8), xw, e2);
                e3 = _mm256_fmadd_ps(I8X8(w3 + i + 8), xw, e3);
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
            __m256 d = _mm256_setzero_ps(), e = d;
            I8_SPAN(w, d, e, lo, hi)
            acc = _mm256_fmadd_ps(_mm256_set1_ps(scales[(size_t)o * ng + lo / group]), _mm256_add_ps(d, e), acc);
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
#define U4_BLOCK(W, A, X) {                                                                      \
        const __m256i e_ = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(W)));           \
        const __m256i f_ = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)((W) + 8)));     \
        A = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(e_, m15)), _mm256_loadu_ps(X), A);        \
        A = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(f_, m15)), _mm256_loadu_ps((X) + 8), A);  \
        A = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(e_, 4)), _mm256_loadu_ps((X) + 16), A);  \
        A = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(f_, 4)), _mm256_loadu_ps((X) + 24), A); }

// One row's group of 32 (g32): its 32 products into a fresh vector, then scaled into the row's sum.
#define U4_GROUP32(W, S, A, X) {                                                                 \
        __m256 p_ = _mm256_setzero_ps();                                                         \
        U4_BLOCK(W, p_, X)                                                                       \
        A = _mm256_fmadd_ps(_mm256_broadcast_ss(S), p_, A); }

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
    const size_t rowBytes = (size_t)((in + 31) / 32) * 16;
    // Whole blocks of 32 (groups are 32-multiples or the whole row).
    const int fast = (group % 32 == 0 || group >= in) ? in - in % 32 : 0;
    const __m256i m15 = _mm256_set1_epi32(15);
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
                PREFETCH(ahead + 4 * b);
                U4_GROUP32(w0 + b, s0 + g, a0, xg)
                U4_GROUP32(w1 + b, s1 + g, a1, xg)
                U4_GROUP32(w2 + b, s2 + g, a2, xg)
                U4_GROUP32(w3 + b, s3 + g, a3, xg)
            }
            const float r[4] = {hsum256(a0), hsum256(a1), hsum256(a2), hsum256(a3)};
            for (int k = 0; k < 4; k++)
                y[o + k] = u4_row_result(r[k], w0 + k * rowBytes, scales, mw, xs, o + k, ng, group, fast, in, x, hasMin);
        }
        for (; o < out; o++) {
            const uint8_t *w = packed + (size_t)o * rowBytes;
            const float *s = scales + (size_t)o * ng;
            __m256 acc = _mm256_setzero_ps();
            for (int g = 0; g < nb; g++) U4_GROUP32(w + g * 16, s + g, acc, x + g * 32)
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
                PREFETCH(ahead + 4 * b);
                U4_BLOCK(w0 + b, p0, x + i)
                U4_BLOCK(w1 + b, p1, x + i)
                U4_BLOCK(w2 + b, p2, x + i)
                U4_BLOCK(w3 + b, p3, x + i)
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
            for (int i = lo; i < hi; i += 32) U4_BLOCK(w + (i >> 5) * 16, p, x + i)
            acc = _mm256_fmadd_ps(_mm256_set1_ps(scales[(size_t)o * ng + lo / group]), p, acc);
        }
        y[o] = u4_row_result(hsum256(acc), w, scales, mw, xs, o, ng, group, fast, in, x, hasMin);
    }
}

// MARK: - Integer activations (shared driver)
// The row is walked in spans of min(group, xgroup) elements; each span's integer dot product is
// exact, then scaled: y += sw·sx·dot + mw·sx·Σcodes(x).

static inline int min_int(int a, int b) { return a < b ? a : b; }

#define GEMV_INT_DRIVER(NAME, CODE_T, ROW_BYTES, DOT)                                                   \
    static void NAME(const CODE_T *codes, const float *scales, const float *mins, int group, int out,   \
                     int in, int rows, const int8_t *xq0, const float *xscales0, const int32_t *xsum0,  \
                     int xgroup, float *y) {                                                            \
        const int ng = groups_of(in, group);                                                            \
        const int nxg = groups_of(in, xgroup);                                                          \
        const int nb = (in + 31) / 32;                                                                  \
        const int span = min_int(group, xgroup);                                                        \
        const size_t rowBytes = (ROW_BYTES);                                                            \
        for (int o = 0; o < out; o++) {                                                                 \
            const CODE_T *w = codes + (size_t)o * rowBytes;                                             \
            for (int r = 0; r < rows; r++) {                                                            \
                const int8_t *xq = xq0 + (size_t)r * in;                                                \
                const float *xscales = xscales0 + (size_t)r * nxg;                                      \
                const int32_t *xsum32 = xsum0 + (size_t)r * nb;                                         \
                float acc = 0;                                                                          \
                for (int lo = 0; lo < in; lo += span) {                                                 \
                    const int n = min_int(span, in - lo);                                               \
                    const int g = lo / group;                                                           \
                    const float sx = xscales[lo / xgroup];                                              \
                    const int32_t dot = DOT;                                                            \
                    acc += scales[(size_t)o * ng + g] * sx * (float)dot;                                \
                    if (mins) {                                                                         \
                        int32_t xs = 0;                                                                 \
                        for (int b = lo / 32; b < (lo + n + 31) / 32; b++) xs += xsum32[b];             \
                        acc += mins[(size_t)o * ng + g] * sx * (float)xs;                               \
                    }                                                                                   \
                }                                                                                       \
                y[(size_t)r * out + o] = acc;                                                           \
            }                                                                                           \
        }                                                                                               \
    }

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

ATTR_AVX2 static int32_t dot_u4_i8_avx2(const uint8_t *row, int start, const int8_t *b, int n) {
    __m256i acc = _mm256_setzero_si256();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m256i w = unpack_u4(row + ((start + i) >> 5) * 16);
        const __m256i p16 = _mm256_maddubs_epi16(w, _mm256_loadu_si256((const __m256i *)(b + i)));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
    }
    int32_t s = hsum256i(acc);
    for (; i < n; i++) s += u4_code(row, start + i) * (int32_t)b[i];
    return s;
}

GEMV_INT_DRIVER(gemv_i8_i8_c, int8_t, (size_t)in, dot_i8_i8_c(w + lo, xq + lo, n))
GEMV_INT_DRIVER(gemv_u4_i8_c, uint8_t, (size_t)((in + 31) / 32) * 16, dot_u4_i8_c(w, lo, xq + lo, n))
// AVX2 integer-activation products: per span, the 32-element blocks' int32 partial sums stay in
// a vector; the span is scaled in float (one FMA) and the row is summed horizontally once.
#define GEMM_INT_AVX2(NAME, CODE_T, ROW_BYTES, BLOCK_DOT, TAIL_CODE)                                       \
    ATTR_AVX2 static void NAME(const CODE_T *codes, const float *scales, const float *mins, int group,      \
                               int out, int in, int rows, const int8_t *xq0, const float *xscales0,         \
                               const int32_t *xsum0, int xgroup, float *y) {                                \
        const int ng = groups_of(in, group), nxg = groups_of(in, xgroup), nb = (in + 31) / 32;             \
        const int span = min_int(group, xgroup);                                                           \
        const size_t rowBytes = (ROW_BYTES);                                                               \
        for (int o = 0; o < out; o++) {                                                                    \
            const CODE_T *w = codes + (size_t)o * rowBytes;                                                \
            const float *sw = scales + (size_t)o * ng;                                                     \
            const float *mw = mins ? mins + (size_t)o * ng : NULL;                                         \
            for (int r = 0; r < rows; r++) {                                                               \
                const int8_t *xq = xq0 + (size_t)r * in;                                                   \
                const float *xs = xscales0 + (size_t)r * nxg;                                              \
                const int32_t *xsum32 = xsum0 + (size_t)r * nb;                                            \
                __m256 acc = _mm256_setzero_ps();                                                          \
                float tail = 0;                                                                            \
                for (int lo = 0; lo < in; lo += span) {                                                    \
                    const int hi = min_int(lo + span, in);                                                 \
                    const int g = lo / group;                                                              \
                    const float sx = xs[lo / xgroup];                                                      \
                    __m256i isum = _mm256_setzero_si256();                                                 \
                    int i = lo;                                                                            \
                    for (; i + 32 <= hi; i += 32) isum = _mm256_add_epi32(isum, BLOCK_DOT);                \
                    int32_t rest = 0;                                                                      \
                    for (; i < hi; i++) rest += (int32_t)(TAIL_CODE) * (int32_t)xq[i];                     \
                    const float s = sw[g] * sx;                                                            \
                    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(s), acc);               \
                    tail += s * (float)rest;                                                               \
                    if (mw) {                                                                              \
                        int32_t xsm = 0;                                                                   \
                        for (int b = lo / 32; b < (hi + 31) / 32; b++) xsm += xsum32[b];                   \
                        tail += mw[g] * sx * (float)xsm;                                                   \
                    }                                                                                      \
                }                                                                                          \
                y[(size_t)r * out + o] = hsum256(acc) + tail;                                              \
            }                                                                                              \
        }                                                                                                  \
    }

GEMM_INT_AVX2(gemv_i8_i8_avx2, int8_t, (size_t)in,
              dot32_i8(_mm256_loadu_si256((const __m256i *)(w + i)), _mm256_loadu_si256((const __m256i *)(xq + i))),
              w[i])
GEMM_INT_AVX2(gemv_u4_i8_avx2, uint8_t, (size_t)((in + 31) / 32) * 16,
              _mm256_madd_epi16(_mm256_maddubs_epi16(unpack_u4(w + (i >> 5) * 16),
                                                     _mm256_loadu_si256((const __m256i *)(xq + i))),
                                _mm256_set1_epi16(1)),
              u4_code(w, i))

// MARK: - Activation quantization
// Swift's scalar loop (max, multiply, round half away from zero, clamp) was 18% of a q8_0 kld
// run once the products got fast. Same rules here: NaN is ignored by the max and coded 0.

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

// MARK: - Integer activations on packed panels (the multi-row path)
// The per-row layout above reads each weight row once per activation row and pays a horizontal
// sum and a scale per (row, row) pair and 32-element block: 4-7 GMAC/s on a 512-token chunk.
// Here weights are repacked once into panels of 8 output rows interleaved per 4 elements, so a
// vector multiply covers 8 output rows × 4 elements against one broadcast activation quad; the
// 8 lanes are 8 outputs, an int32 sum per span is exact, and each span is scaled with one FMA
// for 8 outputs. A register tile of 4 activation rows reuses each weight vector 4 times
// (28-50 GMAC/s on the same shapes, noisy machine).

static inline int32_t read_quad(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

void qd_pack_panels_i8(const int8_t *codes, int out, int in, int8_t *packed) {
    const int np = (out + 7) / 8, nq = in / 4;
    for (int p = 0; p < np; p++)
        for (int q = 0; q < nq; q++)
            for (int j = 0; j < 8; j++) {
                const int o = p * 8 + j;
                int8_t *dst = packed + ((size_t)p * nq + q) * 32 + j * 4;
                for (int e = 0; e < 4; e++) dst[e] = o < out ? codes[(size_t)o * in + 4 * q + e] : 0;
            }
}

void qd_pack_panels_u4(const uint8_t *nibbles, int out, int in, int offset, int8_t *packed) {
    const int np = (out + 7) / 8, nq = in / 4;
    const size_t rowBytes = (size_t)((in + 31) / 32) * 16;
    for (int p = 0; p < np; p++)
        for (int q = 0; q < nq; q++)
            for (int j = 0; j < 8; j++) {
                const int o = p * 8 + j;
                int8_t *dst = packed + ((size_t)p * nq + q) * 32 + j * 4;
                for (int e = 0; e < 4; e++)
                    dst[e] = o < out ? (int8_t)(u4_code(nibbles + (size_t)o * rowBytes, 4 * q + e) + offset) : 0;
            }
}

void qd_pack_panels_f32(const float *values, int out, int ng, float *packed) {
    const int np = (out + 7) / 8;
    for (int p = 0; p < np; p++)
        for (int g = 0; g < ng; g++)
            for (int j = 0; j < 8; j++) {
                const int o = p * 8 + j;
                packed[((size_t)p * ng + g) * 8 + j] = o < out ? values[(size_t)o * ng + g] : 0;
            }
}

// Portable twin: the same sums (exact int32 per span), scaled in the same order per output.
static void gemm_panels_c(const int8_t *packed, const float *pscales, const float *pmins, int group, int out,
                          int in, int rows, const int8_t *xq0, const float *xscales0, const int32_t *xsum0,
                          int xgroup, float *y, int p0, int p1) {
    const int ng = groups_of(in, group), nxg = groups_of(in, xgroup), nb = in / 32, nq = in / 4;
    const int span = min_int(group, xgroup);
    for (int r = 0; r < rows; r++)
        for (int o = p0 * 8; o < min_int(p1 * 8, out); o++) {
            const int p = o / 8, j = o % 8;
            const int8_t *w = packed + (size_t)p * nq * 32 + j * 4;
            const int8_t *xq = xq0 + (size_t)r * in;
            float acc = 0;
            for (int lo = 0; lo < in; lo += span) {
                const int hi = min_int(lo + span, in);
                int32_t dot = 0;
                for (int i = lo; i < hi; i++) dot += (int32_t)w[(size_t)(i / 4) * 32 + i % 4] * (int32_t)xq[i];
                const float sx = xscales0[(size_t)r * nxg + lo / xgroup];
                const size_t gi = ((size_t)p * ng + lo / group) * 8 + j;
                acc = fmaf((float)dot, pscales[gi] * sx, acc);
                if (pmins) {
                    int32_t xs = 0;
                    for (int b = lo / 32; b < hi / 32; b++) xs += xsum0[(size_t)r * nb + b];
                    acc = fmaf(pmins[gi], sx * (float)xs, acc);
                }
            }
            y[(size_t)r * out + o] = acc;
        }
}

// One panel (8 outputs) × TR activation rows.
#define PANEL_TILE(NAME, TR)                                                                                  \
    ATTR_AVX2 static void NAME(const int8_t *packed, const float *pscales, const float *pmins, int group,     \
                               int out, int in, int p, const int8_t *xq0, const float *xscales0,             \
                               const int32_t *xsum0, int xgroup, int r0, float *y) {                         \
        const int ng = groups_of(in, group), nxg = groups_of(in, xgroup), nb = in / 32, nq = in / 4;        \
        const int span = min_int(group, xgroup);                                                            \
        const int8_t *wp = packed + (size_t)p * nq * 32;                                                    \
        const float *sp = pscales + (size_t)p * ng * 8;                                                     \
        const float *mp = pmins ? pmins + (size_t)p * ng * 8 : NULL;                                        \
        const int8_t *xq[TR];                                                                               \
        const float *xs[TR];                                                                                \
        const int32_t *xsum[TR];                                                                            \
        for (int c = 0; c < TR; c++) {                                                                      \
            xq[c] = xq0 + (size_t)(r0 + c) * in;                                                            \
            xs[c] = xscales0 + (size_t)(r0 + c) * nxg;                                                      \
            xsum[c] = xsum0 + (size_t)(r0 + c) * nb;                                                        \
        }                                                                                                   \
        const __m256i ones = _mm256_set1_epi16(1);                                                          \
        __m256 acc[TR];                                                                                     \
        for (int c = 0; c < TR; c++) acc[c] = _mm256_setzero_ps();                                          \
        for (int lo = 0; lo < in; lo += span) {                                                             \
            const int hi = min_int(lo + span, in);                                                          \
            const int g = lo / group, xg = lo / xgroup;                                                     \
            __m256i isum[TR];                                                                               \
            for (int c = 0; c < TR; c++) isum[c] = _mm256_setzero_si256();                                  \
            for (int q = lo / 4; q < hi / 4; q++) {                                                         \
                const __m256i w = _mm256_loadu_si256((const __m256i *)(wp + (size_t)q * 32));                \
                const __m256i a = _mm256_sign_epi8(w, w);                                                   \
                for (int c = 0; c < TR; c++) {                                                              \
                    const __m256i xb = _mm256_set1_epi32(read_quad(xq[c] + 4 * q));                         \
                    isum[c] = _mm256_add_epi32(                                                             \
                        isum[c], _mm256_madd_epi16(_mm256_maddubs_epi16(a, _mm256_sign_epi8(xb, w)), ones)); \
                }                                                                                           \
            }                                                                                               \
            const __m256 sw = _mm256_loadu_ps(sp + (size_t)g * 8);                                          \
            for (int c = 0; c < TR; c++)                                                                    \
                acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[c]), _mm256_mul_ps(sw, _mm256_set1_ps(xs[c][xg])), \
                                         acc[c]);                                                           \
            if (mp) {                                                                                       \
                const __m256 mw = _mm256_loadu_ps(mp + (size_t)g * 8);                                      \
                for (int c = 0; c < TR; c++) {                                                              \
                    int32_t xsm = 0;                                                                        \
                    for (int b = lo / 32; b < hi / 32; b++) xsm += xsum[c][b];                              \
                    acc[c] = _mm256_fmadd_ps(mw, _mm256_set1_ps(xs[c][xg] * (float)xsm), acc[c]);           \
                }                                                                                           \
            }                                                                                               \
        }                                                                                                   \
        const int n = min_int(8, out - p * 8);                                                              \
        for (int c = 0; c < TR; c++) {                                                                      \
            float *yr = y + (size_t)(r0 + c) * out + p * 8;                                                 \
            if (n == 8) _mm256_storeu_ps(yr, acc[c]);                                                       \
            else {                                                                                          \
                float t[8];                                                                                 \
                _mm256_storeu_ps(t, acc[c]);                                                                \
                memcpy(yr, t, sizeof(float) * (size_t)n);                                                   \
            }                                                                                               \
        }                                                                                                   \
    }
PANEL_TILE(panel_tile4_avx2, 4)
PANEL_TILE(panel_tile1_avx2, 1)

// Activation rows are taken PANEL_ROW_BLOCK at a time so they stay in L2 while every panel passes.
#define PANEL_ROW_BLOCK 128
ATTR_AVX2 static void gemm_panels_avx2(const int8_t *packed, const float *ps, const float *pm, int group, int out,
                                       int in, int rows, const int8_t *xq, const float *xs, const int32_t *xsum,
                                       int xgroup, float *y, int p0, int p1) {
    for (int rb = 0; rb < rows; rb += PANEL_ROW_BLOCK) {
        const int re = min_int(rows, rb + PANEL_ROW_BLOCK);
        for (int p = p0; p < p1; p++) {
            int r = rb;
            for (; r + 4 <= re; r += 4) panel_tile4_avx2(packed, ps, pm, group, out, in, p, xq, xs, xsum, xgroup, r, y);
            for (; r < re; r++) panel_tile1_avx2(packed, ps, pm, group, out, in, p, xq, xs, xsum, xgroup, r, y);
        }
    }
}

void qd_gemm_panels_i8(const int8_t *packed, const float *pscales, const float *pmins, int group, int out, int in,
                       int rows, const int8_t *xq, const float *xscales, const int32_t *xsum32, int xgroup, float *y,
                       int p0, int p1) {
    p1 = min_int(p1, (out + 7) / 8);
    if (p0 < 0 || p0 >= p1) return;
    if (qd_has_avx2()) gemm_panels_avx2(packed, pscales, pmins, group, out, in, rows, xq, xscales, xsum32, xgroup, y, p0, p1);
    else gemm_panels_c(packed, pscales, pmins, group, out, in, rows, xq, xscales, xsum32, xgroup, y, p0, p1);
}

// MARK: - Decoding rows to FP32 (the multi-row path: decoded tiles, then sgemm)

void qd_decode_i8(const int8_t *codes, const float *scales, const float *mins, int group, int rows, int in,
                  float *out) {
    const int ng = groups_of(in, group);
    for (int r = 0; r < rows; r++) {
        const int8_t *w = codes + (size_t)r * in;
        float *o = out + (size_t)r * in;
        for (int g = 0; g < ng; g++) {
            const int lo = g * group, hi = lo + group < in ? lo + group : in;
            const float s = scales[(size_t)r * ng + g], m = mins ? mins[(size_t)r * ng + g] : 0;
            for (int i = lo; i < hi; i++) o[i] = s * (float)w[i] + m;
        }
    }
}

void qd_decode_u4(const uint8_t *packed, const float *scales, const float *mins, int group, int rows, int in,
                  float *out) {
    const int ng = groups_of(in, group);
    const size_t rowBytes = (size_t)((in + 31) / 32) * 16;
    float codes[32];
    for (int r = 0; r < rows; r++) {
        const uint8_t *w = packed + (size_t)r * rowBytes;
        float *o = out + (size_t)r * in;
        for (int b = 0; b * 32 < in; b++) {
            for (int j = 0; j < 16; j++) {
                codes[j] = (float)(w[b * 16 + j] & 15);
                codes[j + 16] = (float)(w[b * 16 + j] >> 4);
            }
            const int n = in - b * 32 < 32 ? in - b * 32 : 32;
            for (int j = 0; j < n; j++) {
                const int i = b * 32 + j, g = i / group;
                o[i] = scales[(size_t)r * ng + g] * codes[j] + (mins ? mins[(size_t)r * ng + g] : 0);
            }
        }
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

void qd_gemm_i8_i8(const int8_t *codes, const float *scales, const float *mins, int group,
                   int out, int in, int rows, const int8_t *xq, const float *xscales, const int32_t *xsum32,
                   int xgroup, float *y) {
    if (qd_has_avx2()) gemv_i8_i8_avx2(codes, scales, mins, group, out, in, rows, xq, xscales, xsum32, xgroup, y);
    else gemv_i8_i8_c(codes, scales, mins, group, out, in, rows, xq, xscales, xsum32, xgroup, y);
}

void qd_gemm_u4_i8(const uint8_t *packed, const float *scales, const float *mins, int group,
                   int out, int in, int rows, const int8_t *xq, const float *xscales, const int32_t *xsum32,
                   int xgroup, float *y) {
    if (qd_has_avx2()) gemv_u4_i8_avx2(packed, scales, mins, group, out, in, rows, xq, xscales, xsum32, xgroup, y);
    else gemv_u4_i8_c(packed, scales, mins, group, out, in, rows, xq, xscales, xsum32, xgroup, y);
}

int32_t qd_dot_i8_i8(const int8_t *a, const int8_t *b, int n) {
    return qd_has_avx2() ? dot_i8_i8_avx2(a, b, n) : dot_i8_i8_c(a, b, n);
}

int32_t qd_dot_u4_i8(const uint8_t *packed, const int8_t *b, int n) {
    return qd_has_avx2() ? dot_u4_i8_avx2(packed, 0, b, n) : dot_u4_i8_c(packed, 0, b, n);
}
