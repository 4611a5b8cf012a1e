// int8 activations on weights repacked into panels of 8 output rows (every product with integer
// activations whose row length is a multiple of 32: prefill, batched and one-token decode): the
// packing, an AVX2 path and a portable twin. See ckernels.h.
//
// The per-row layout (gemm_intact.c) reads each weight row once per activation row and pays a
// horizontal sum and a scale per (row, row) pair and 32-element block: 4-7 GMAC/s on a 512-token
// chunk. Here weights are repacked once into panels of 8 output rows interleaved per 4 elements, so a
// vector multiply covers 8 output rows × 4 elements against one broadcast activation quad; the
// 8 lanes are 8 outputs, an int32 sum per span is exact, and each span is scaled with one FMA
// for 8 outputs. A register tile of 4 activation rows reuses each weight vector 4 times
// (28-50 GMAC/s on the same shapes, noisy machine). 4-bit codes stay 4-bit in their panels (half
// the bytes a decode step reads) and are widened in registers, two quads per 32-byte load.
#include "kernels_internal.h"
#include <math.h>

static inline int32_t read_quad(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

// MARK: - Packing

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

void qd_pack_panels_u4(const uint8_t *nibbles, int out, int in, uint8_t *packed) {
    const int np = (out + 7) / 8, no = in / 8;
    const size_t rowBytes = u4_row_bytes(in);
    for (int p = 0; p < np; p++)
        for (int q = 0; q < no; q++)
            for (int j = 0; j < 8; j++) {
                const int o = p * 8 + j;
                uint8_t *dst = packed + ((size_t)p * no + q) * 32 + j * 4;
                const uint8_t *row = nibbles + (size_t)o * rowBytes;
                for (int e = 0; e < 4; e++)
                    dst[e] = o < out ? (uint8_t)(u4_code(row, 8 * q + e) | (u4_code(row, 8 * q + 4 + e) << 4)) : 0;
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

// MARK: - Portable path

// Weight value of output j of panel p at element i: int8 panels, or 4-bit panels plus the offset.
static inline int32_t panel_value(const void *packed, int nib, int offset, int in, int p, int j, int i) {
    if (!nib) return ((const int8_t *)packed)[(size_t)p * in * 8 + (size_t)(i / 4) * 32 + j * 4 + i % 4];
    const uint8_t b = ((const uint8_t *)packed)[(size_t)p * in * 4 + (size_t)(i / 8) * 32 + j * 4 + i % 4];
    return (int32_t)((i % 8 < 4 ? b & 15 : b >> 4)) + offset;
}

// Portable twin: the same sums (exact int32 per span), scaled in the same order per output.
static void gemm_panels_c(const void *packed, int nib, int offset, const float *pscales, const float *pmins, int group,
                          int out, int in, int rows, const int8_t *xq0, const float *xscales0, const int32_t *xsum0,
                          int xgroup, float *y, int p0, int p1) {
    const int ng = groups_of(in, group), nxg = groups_of(in, xgroup), nb = in / 32;
    const int span = min_int(group, xgroup);
    for (int r = 0; r < rows; r++)
        for (int o = p0 * 8; o < min_int(p1 * 8, out); o++) {
            const int p = o / 8, j = o % 8;
            const int8_t *xq = xq0 + (size_t)r * in;
            float acc = 0;
            for (int lo = 0; lo < in; lo += span) {
                const int hi = min_int(lo + span, in);
                int32_t dot = 0;
                for (int i = lo; i < hi; i++) dot += panel_value(packed, nib, offset, in, p, j, i) * (int32_t)xq[i];
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

// MARK: - AVX2 path

// One panel (8 outputs) × `tr` activation rows (1 ≤ tr ≤ PANEL_TILE_ROWS). Always inlined with
// constant `tr` and `nib`, so the per-row arrays live in registers and the row loops are unrolled.
// The group and activation-group indices are counted, not divided (two integer divisions per span
// cost more than a span's work when spans are 32 long, as in q8_0 blocks).
#define PANEL_TILE_ROWS 4
// Software prefetch distance in panels: while a panel is multiplied, the panel this many ahead is
// requested one cache line per 32-byte load. A one-token decode reads each panel once, straight
// from memory; without it the stream stalled on every load (q4_1 decode: 4.8 GB/s on one core).
#define PANEL_PREFETCH 2
ALWAYS_INLINE ATTR_AVX2 static inline void panel_tile(const void *packed, int nib, int offset, const float *pscales,
                                                      const float *pmins, int group, int out, int in, int p,
                                                      const int8_t *xq0, const float *xscales0, const int32_t *xsum0,
                                                      int xgroup, int r0, float *y, int tr) {
    const int ng = groups_of(in, group), nxg = groups_of(in, xgroup), nb = in / 32;
    const int span = min_int(group, xgroup);
    const size_t panelBytes = (size_t)(nib ? in * 4 : in * 8);
    const uint8_t *wp = (const uint8_t *)packed + (size_t)p * panelBytes;
    // Near the end the current panel is fetched again instead (harmless).
    const uint8_t *ahead = wp + (p + PANEL_PREFETCH < (out + 7) / 8 ? PANEL_PREFETCH * panelBytes : 0);
    const float *sp = pscales + (size_t)p * ng * 8;
    const float *mp = pmins ? pmins + (size_t)p * ng * 8 : NULL;
    const int8_t *xq[PANEL_TILE_ROWS];
    const float *xs[PANEL_TILE_ROWS];
    const int32_t *xsum[PANEL_TILE_ROWS];
    for (int c = 0; c < tr; c++) {
        xq[c] = xq0 + (size_t)(r0 + c) * in;
        xs[c] = xscales0 + (size_t)(r0 + c) * nxg;
        xsum[c] = xsum0 + (size_t)(r0 + c) * nb;
    }
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i m15 = _mm256_set1_epi8(15);
    __m256 acc[PANEL_TILE_ROWS];
    for (int c = 0; c < tr; c++) acc[c] = _mm256_setzero_ps();
    int g = 0, gEnd = group, xg = 0, xgEnd = xgroup;
    for (int lo = 0; lo < in; lo += span) {
        const int hi = min_int(lo + span, in);
        if (lo >= gEnd) { g++; gEnd += group; }
        if (lo >= xgEnd) { xg++; xgEnd += xgroup; }
        __m256i isum[PANEL_TILE_ROWS];
        for (int c = 0; c < tr; c++) isum[c] = _mm256_setzero_si256();
        // Quad q's 8 outputs × 4 weights (w) against each row's 4 activations: |w|·(x·sign w).
#define PANEL_QUAD(w, q)                                                                                         \
    do {                                                                                                         \
        const __m256i a_ = _mm256_sign_epi8((w), (w));                                                           \
        for (int c = 0; c < tr; c++) {                                                                           \
            const __m256i xb_ = _mm256_set1_epi32(read_quad(xq[c] + 4 * (q)));                                   \
            isum[c] = _mm256_add_epi32(isum[c], _mm256_madd_epi16(_mm256_maddubs_epi16(a_, _mm256_sign_epi8(xb_, (w))), ones)); \
        }                                                                                                        \
    } while (0)
        if (nib) {
            // Codes 0..15 multiply the activations unsigned (no sign trick: 15·127·2 cannot
            // saturate), and the offset comes in once per span as offset·Σx, exact in int32: the
            // same sums as on int8 panels holding code + offset.
#define PANEL_QUAD_U4(u, q)                                                                                      \
    do {                                                                                                         \
        for (int c = 0; c < tr; c++) {                                                                           \
            const __m256i xb_ = _mm256_set1_epi32(read_quad(xq[c] + 4 * (q)));                                   \
            isum[c] = _mm256_add_epi32(isum[c], _mm256_madd_epi16(_mm256_maddubs_epi16((u), xb_), ones));       \
        }                                                                                                        \
    } while (0)
            for (int q = lo / 8; q < hi / 8; q++) {
                _mm_prefetch((const char *)(ahead + (size_t)q * 32), _MM_HINT_T0);
                const __m256i v = _mm256_loadu_si256((const __m256i *)(wp + (size_t)q * 32));
                const __m256i u0 = _mm256_and_si256(v, m15);
                const __m256i u1 = _mm256_and_si256(_mm256_srli_epi16(v, 4), m15);
                PANEL_QUAD_U4(u0, 2 * q);
                PANEL_QUAD_U4(u1, 2 * q + 1);
            }
#undef PANEL_QUAD_U4
            if (offset != 0)
                for (int c = 0; c < tr; c++) {
                    int32_t xsm = 0;
                    for (int b = lo / 32; b < hi / 32; b++) xsm += xsum[c][b];
                    isum[c] = _mm256_add_epi32(isum[c], _mm256_set1_epi32(offset * xsm));
                }
        } else {
            for (int q = lo / 4; q < hi / 4; q++) {
                _mm_prefetch((const char *)(ahead + (size_t)q * 32), _MM_HINT_T0);
                const __m256i w = _mm256_loadu_si256((const __m256i *)(wp + (size_t)q * 32));
                PANEL_QUAD(w, q);
            }
        }
#undef PANEL_QUAD
        const __m256 sw = _mm256_loadu_ps(sp + (size_t)g * 8);
        for (int c = 0; c < tr; c++)
            acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[c]), _mm256_mul_ps(sw, _mm256_set1_ps(xs[c][xg])), acc[c]);
        if (mp) {
            const __m256 mw = _mm256_loadu_ps(mp + (size_t)g * 8);
            for (int c = 0; c < tr; c++) {
                int32_t xsm = 0;
                for (int b = lo / 32; b < hi / 32; b++) xsm += xsum[c][b];
                acc[c] = _mm256_fmadd_ps(mw, _mm256_set1_ps(xs[c][xg] * (float)xsm), acc[c]);
            }
        }
    }
    const int n = min_int(8, out - p * 8);
    for (int c = 0; c < tr; c++) {
        float *yr = y + (size_t)(r0 + c) * out + p * 8;
        if (n == 8) _mm256_storeu_ps(yr, acc[c]);
        else {
            float t[8];
            _mm256_storeu_ps(t, acc[c]);
            memcpy(yr, t, sizeof(float) * (size_t)n);
        }
    }
}

#define PANEL_TILE_FN(name, nib, tr)                                                                             \
    ATTR_AVX2 static void name(const void *packed, int offset, const float *ps, const float *pm, int group, int out,  \
                               int in, int p, const int8_t *xq, const float *xs, const int32_t *xsum, int xgroup,    \
                               int r0, float *y) {                                                               \
        panel_tile(packed, nib, offset, ps, pm, group, out, in, p, xq, xs, xsum, xgroup, r0, y, tr);             \
    }
PANEL_TILE_FN(panel_tile4_i8, 0, 4)
PANEL_TILE_FN(panel_tile1_i8, 0, 1)
PANEL_TILE_FN(panel_tile4_u4, 1, 4)
PANEL_TILE_FN(panel_tile1_u4, 1, 1)
#undef PANEL_TILE_FN

// Activation rows are taken PANEL_ROW_BLOCK at a time so they stay in L2 while every panel passes.
#define PANEL_ROW_BLOCK 128
ATTR_AVX2 static void gemm_panels_avx2(const void *packed, int nib, int offset, const float *ps, const float *pm,
                                       int group, int out, int in, int rows, const int8_t *xq, const float *xs,
                                       const int32_t *xsum, int xgroup, float *y, int p0, int p1) {
    for (int rb = 0; rb < rows; rb += PANEL_ROW_BLOCK) {
        const int re = min_int(rows, rb + PANEL_ROW_BLOCK);
        for (int p = p0; p < p1; p++) {
            int r = rb;
            if (nib) {
                for (; r + 4 <= re; r += 4) panel_tile4_u4(packed, offset, ps, pm, group, out, in, p, xq, xs, xsum, xgroup, r, y);
                for (; r < re; r++) panel_tile1_u4(packed, offset, ps, pm, group, out, in, p, xq, xs, xsum, xgroup, r, y);
            } else {
                for (; r + 4 <= re; r += 4) panel_tile4_i8(packed, 0, ps, pm, group, out, in, p, xq, xs, xsum, xgroup, r, y);
                for (; r < re; r++) panel_tile1_i8(packed, 0, ps, pm, group, out, in, p, xq, xs, xsum, xgroup, r, y);
            }
        }
    }
}

// MARK: - Dispatch

void qd_gemm_panels_i8(const int8_t *packed, const float *pscales, const float *pmins, int group, int out, int in,
                       int rows, const int8_t *xq, const float *xscales, const int32_t *xsum32, int xgroup, float *y,
                       int p0, int p1) {
    p1 = min_int(p1, (out + 7) / 8);
    if (p0 < 0 || p0 >= p1) return;
    if (qd_has_avx2())
        gemm_panels_avx2(packed, 0, 0, pscales, pmins, group, out, in, rows, xq, xscales, xsum32, xgroup, y, p0, p1);
    else gemm_panels_c(packed, 0, 0, pscales, pmins, group, out, in, rows, xq, xscales, xsum32, xgroup, y, p0, p1);
}

void qd_gemm_panels_u4(const uint8_t *packed, int offset, const float *pscales, const float *pmins, int group, int out,
                       int in, int rows, const int8_t *xq, const float *xscales, const int32_t *xsum32, int xgroup,
                       float *y, int p0, int p1) {
    p1 = min_int(p1, (out + 7) / 8);
    if (p0 < 0 || p0 >= p1) return;
    if (qd_has_avx2())
        gemm_panels_avx2(packed, 1, offset, pscales, pmins, group, out, in, rows, xq, xscales, xsum32, xgroup, y, p0, p1);
    else gemm_panels_c(packed, 1, offset, pscales, pmins, group, out, in, rows, xq, xscales, xsum32, xgroup, y, p0, p1);
}
