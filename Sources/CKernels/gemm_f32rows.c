// FP32 weights × a few FP32 activation rows: the products of a batched decode step.
//
// Every output is one 8-lane FMA chain over whole steps of 8, the lanes summed in hsum256's
// order, then the tail with fmaf: the same arithmetic however outputs and rows are blocked, so a
// row's result does not depend on how many rows come with it, on its place among them or on the
// range of outputs a core takes. (OpenBLAS's sgemm gives none of these: its result for a row
// changes with the row count, the row's place and the thread count.) The weights are read once
// per call for all rows. A register block of 3 weight rows × 4 activation rows keeps 12 chains in
// flight with 3 weight vectors and 1 activation vector live: the 16 ymm registers exactly. (The
// earlier 4 × 3 block needed 17 and spilled: 576×576 × 16 rows, one core, 33 → 61 GMAC/s, ~88% of
// FMA peak.) One or two activation rows take 4 weight rows instead, for more chains.
#include "kernels_internal.h"
#include <math.h>
#include <stdlib.h>

// The sum of 8 lanes in hsum256's order.
static inline float hsum8(const float *v) {
    const float a0 = v[0] + v[4], a1 = v[1] + v[5], a2 = v[2] + v[6], a3 = v[3] + v[7];
    return (a0 + a2) + (a1 + a3);
}

static void gemm_f32_rows_c(const float *w, int out, int in, const float *x, int rows, int ldx, float *y, int ldy,
                            int accumulate) {
    const int in8 = in - in % 8;
    for (int o = 0; o < out; o++) {
        const float *wo = w + (size_t)o * in;
        for (int r = 0; r < rows; r++) {
            const float *xr = x + (size_t)r * ldx;
            float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (int k = 0; k < in8; k += 8)
                for (int l = 0; l < 8; l++) lanes[l] = fmaf(wo[k + l], xr[k + l], lanes[l]);
            float v = hsum8(lanes);
            for (int k = in8; k < in; k++) v = fmaf(wo[k], xr[k], v);
            float *dst = y + (size_t)r * ldy + o;
            *dst = accumulate ? *dst + v : v;
        }
    }
}

// Weight element k of a row: FP32, or binary16 (`half`) converted exactly.
ALWAYS_INLINE static inline float weight_at(const void *w, int half, size_t k) {
    return half ? qd_f16_to_f32(((const uint16_t *)w)[k]) : ((const float *)w)[k];
}

// `no` weight rows × `nr` activation rows (constants after inlining, so the accumulators stay in
// registers). `half`: the weights are binary16, converted exactly as they are loaded (the same
// arithmetic on the same values as FP32 weights).
ALWAYS_INLINE ATTR_AVX2 static inline void block_f32(const void *w, int half, int in, int in8, int no, const float *x,
                                                     int ldx, int nr, float *y, int ldy, int accumulate) {
    __m256 a[4][4];
    for (int i = 0; i < no; i++)
        for (int j = 0; j < nr; j++) a[i][j] = _mm256_setzero_ps();
    for (int k = 0; k < in8; k += 8) {
        __m256 wv[4];
        for (int i = 0; i < no; i++)
            wv[i] = half ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + (size_t)i * in + k)))
                         : _mm256_loadu_ps((const float *)w + (size_t)i * in + k);
        for (int j = 0; j < nr; j++) {
            const __m256 xv = _mm256_loadu_ps(x + (size_t)j * ldx + k);
            for (int i = 0; i < no; i++) a[i][j] = _mm256_fmadd_ps(wv[i], xv, a[i][j]);
        }
    }
    for (int i = 0; i < no; i++) {
        for (int j = 0; j < nr; j++) {
            const float *xj = x + (size_t)j * ldx;
            float v = hsum256(a[i][j]);
            for (int k = in8; k < in; k++) v = fmaf(weight_at(w, half, (size_t)i * in + k), xj[k], v);
            float *dst = y + (size_t)j * ldy + i;
            *dst = accumulate ? *dst + v : v;
        }
    }
}

// All activation rows against `no` weight rows: blocks of 4 rows, then the 1 to 3 left.
ALWAYS_INLINE ATTR_AVX2 static inline void rows_f32(const void *w, int half, int in, int in8, int no, const float *x,
                                                    int rows, int ldx, float *y, int ldy, int accumulate) {
    int r = 0;
    for (; r + 4 <= rows; r += 4)
        block_f32(w, half, in, in8, no, x + (size_t)r * ldx, ldx, 4, y + (size_t)r * ldy, ldy, accumulate);
    switch (rows - r) {
    case 3: block_f32(w, half, in, in8, no, x + (size_t)r * ldx, ldx, 3, y + (size_t)r * ldy, ldy, accumulate); break;
    case 2: block_f32(w, half, in, in8, no, x + (size_t)r * ldx, ldx, 2, y + (size_t)r * ldy, ldy, accumulate); break;
    case 1: block_f32(w, half, in, in8, no, x + (size_t)r * ldx, ldx, 1, y + (size_t)r * ldy, ldy, accumulate); break;
    default: break;
    }
}

ALWAYS_INLINE ATTR_AVX2 static inline void gemm_rows_avx2(const void *w, int half, int out, int in, const float *x,
                                                          int rows, int ldx, float *y, int ldy, int accumulate) {
    const int in8 = in - in % 8;
    const size_t rowBytes = (size_t)in * (half ? 2 : 4);
    int o = 0;
    if (rows <= 2)
        for (; o + 4 <= out; o += 4)
            rows_f32((const char *)w + o * rowBytes, half, in, in8, 4, x, rows, ldx, y + o, ldy, accumulate);
    else
        for (; o + 3 <= out; o += 3)
            rows_f32((const char *)w + o * rowBytes, half, in, in8, 3, x, rows, ldx, y + o, ldy, accumulate);
    for (; o < out; o++) rows_f32((const char *)w + o * rowBytes, half, in, in8, 1, x, rows, ldx, y + o, ldy, accumulate);
}

ATTR_AVX2 static void gemm_f32_rows_avx2(const float *w, int out, int in, const float *x, int rows, int ldx, float *y,
                                         int ldy, int accumulate) {
    gemm_rows_avx2(w, 0, out, in, x, rows, ldx, y, ldy, accumulate);
}

ATTR_AVX2 static void gemm_f16_rows_avx2(const uint16_t *w, int out, int in, const float *x, int rows, int ldx, float *y,
                                         int ldy, int accumulate) {
    gemm_rows_avx2(w, 1, out, in, x, rows, ldx, y, ldy, accumulate);
}

void qd_gemm_f32_rows(const float *w, int out, int in, const float *x, int rows, int ldx, float *y, int ldy,
                      int accumulate) {
    if (qd_has_avx2()) gemm_f32_rows_avx2(w, out, in, x, rows, ldx, y, ldy, accumulate);
    else gemm_f32_rows_c(w, out, in, x, rows, ldx, y, ldy, accumulate);
}

void qd_gemm_f16_rows(const uint16_t *w, int out, int in, const float *x, int rows, int ldx, float *y, int ldy,
                      int accumulate) {
    if (qd_has_avx2()) {
        gemm_f16_rows_avx2(w, out, in, x, rows, ldx, y, ldy, accumulate);
        return;
    }
    // Portable: the FP32 twin on each weight row converted (exactly) to FP32.
    float *row = malloc(sizeof(float) * (size_t)(in > 0 ? in : 1));
    for (int o = 0; o < out; o++) {
        for (int k = 0; k < in; k++) row[k] = qd_f16_to_f32(w[(size_t)o * in + k]);
        gemm_f32_rows_c(row, 1, in, x, rows, ldx, y + o, ldy, accumulate);
    }
    free(row);
}

// GGUF rows × activation rows, a few weight rows at a time: each chunk is decoded into `tile`
// (~32 KB, so it stays in L1) and multiplied by qd_gemm_f32_rows: the same bits as decoding the
// whole matrix first, since each output's arithmetic does not depend on the chunk that holds it.
// (Decoding 512 KB tiles wrote every weight out to L2 and read it back: in a 16-row decode step
// the decode took half as long as the product.) Chunks are multiples of the kernel's weight-row
// block (4 rows for one or two activation rows, 3 otherwise).
int qd_gemm_ggml_rows(int type, const uint8_t *src, size_t rowBytes, int out, int in, const float *x, int rows, int ldx,
                      float *y, int ldy, float *tile, size_t tileFloats) {
    if (out <= 0 || in <= 0) return 1;
    const size_t fit = tileFloats / (size_t)in;
    if (fit < 1) return 0;
    int chunk = tile_rows(in, rows <= 2 ? 4 : 3);
    if ((size_t)chunk > fit) chunk = (int)fit;
    for (int o = 0; o < out; o += chunk) {
        const int c = min_int(chunk, out - o);
        if (!qd_decode_ggml(type, src + (size_t)o * rowBytes, (size_t)c * in, tile)) return 0;
        // The decode's own look-ahead is too short to cover a chunk.
        prefetch_l2(src + (size_t)(o + c) * rowBytes, (size_t)min_int(chunk, out - o - c) * rowBytes);
        qd_gemm_f32_rows(tile, c, in, x, rows, ldx, y + o, ldy, 0);
    }
    return 1;
}
