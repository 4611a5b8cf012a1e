// int8 activations on weights repacked into panels of 8 output rows (the multi-row prefill path):
// the packing, an AVX2 path and a portable twin. See ckernels.h.
//
// The per-row layout (gemm_intact.c) reads each weight row once per activation row and pays a
// horizontal sum and a scale per (row, row) pair and 32-element block: 4-7 GMAC/s on a 512-token
// chunk. Here weights are repacked once into panels of 8 output rows interleaved per 4 elements, so a
// vector multiply covers 8 output rows × 4 elements against one broadcast activation quad; the
// 8 lanes are 8 outputs, an int32 sum per span is exact, and each span is scaled with one FMA
// for 8 outputs. A register tile of 4 activation rows reuses each weight vector 4 times
// (28-50 GMAC/s on the same shapes, noisy machine).
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

void qd_pack_panels_u4(const uint8_t *nibbles, int out, int in, int offset, int8_t *packed) {
    const int np = (out + 7) / 8, nq = in / 4;
    const size_t rowBytes = u4_row_bytes(in);
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

// MARK: - Portable path

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

// MARK: - AVX2 path

// One panel (8 outputs) × `tr` activation rows (1 ≤ tr ≤ PANEL_TILE_ROWS). Always inlined with a
// constant `tr`, so the per-row arrays live in registers and the row loops are unrolled.
#define PANEL_TILE_ROWS 4
ALWAYS_INLINE ATTR_AVX2 static inline void panel_tile(const int8_t *packed, const float *pscales, const float *pmins,
                                                      int group, int out, int in, int p, const int8_t *xq0,
                                                      const float *xscales0, const int32_t *xsum0, int xgroup, int r0,
                                                      float *y, int tr) {
    const int ng = groups_of(in, group), nxg = groups_of(in, xgroup), nb = in / 32, nq = in / 4;
    const int span = min_int(group, xgroup);
    const int8_t *wp = packed + (size_t)p * nq * 32;
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
    __m256 acc[PANEL_TILE_ROWS];
    for (int c = 0; c < tr; c++) acc[c] = _mm256_setzero_ps();
    for (int lo = 0; lo < in; lo += span) {
        const int hi = min_int(lo + span, in);
        const int g = lo / group, xg = lo / xgroup;
        __m256i isum[PANEL_TILE_ROWS];
        for (int c = 0; c < tr; c++) isum[c] = _mm256_setzero_si256();
        for (int q = lo / 4; q < hi / 4; q++) {
            const __m256i w = _mm256_loadu_si256((const __m256i *)(wp + (size_t)q * 32));
            const __m256i a = _mm256_sign_epi8(w, w);
            for (int c = 0; c < tr; c++) {
                const __m256i xb = _mm256_set1_epi32(read_quad(xq[c] + 4 * q));
                isum[c] = _mm256_add_epi32(isum[c], _mm256_madd_epi16(_mm256_maddubs_epi16(a, _mm256_sign_epi8(xb, w)), ones));
            }
        }
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

ATTR_AVX2 static void panel_tile4_avx2(const int8_t *packed, const float *pscales, const float *pmins, int group,
                                       int out, int in, int p, const int8_t *xq0, const float *xscales0,
                                       const int32_t *xsum0, int xgroup, int r0, float *y) {
    panel_tile(packed, pscales, pmins, group, out, in, p, xq0, xscales0, xsum0, xgroup, r0, y, 4);
}

ATTR_AVX2 static void panel_tile1_avx2(const int8_t *packed, const float *pscales, const float *pmins, int group,
                                       int out, int in, int p, const int8_t *xq0, const float *xscales0,
                                       const int32_t *xsum0, int xgroup, int r0, float *y) {
    panel_tile(packed, pscales, pmins, group, out, in, p, xq0, xscales0, xsum0, xgroup, r0, y, 1);
}

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

// MARK: - Dispatch

void qd_gemm_panels_i8(const int8_t *packed, const float *pscales, const float *pmins, int group, int out, int in,
                       int rows, const int8_t *xq, const float *xscales, const int32_t *xsum32, int xgroup, float *y,
                       int p0, int p1) {
    p1 = min_int(p1, (out + 7) / 8);
    if (p0 < 0 || p0 >= p1) return;
    if (qd_has_avx2()) gemm_panels_avx2(packed, pscales, pmins, group, out, in, rows, xq, xscales, xsum32, xgroup, y, p0, p1);
    else gemm_panels_c(packed, pscales, pmins, group, out, in, rows, xq, xscales, xsum32, xgroup, y, p0, p1);
}
