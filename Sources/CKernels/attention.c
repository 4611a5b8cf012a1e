// One decode step's attention for the query heads that share a KV head: scores = scale · K·q and
// out = Vᵀ·p, computed with the arithmetic of the two OpenBLAS calls they replace (0.3.21's
// Haswell/Zen sgemv kernels: `cblas_sgemv` row-major, no-transpose for the scores, transpose for
// the values, one thread), so every result has the same bits as before. What changes is the
// reading: each key and value row is read once for all the group's heads instead of once per
// head, and the calls' set-up is gone. At 2,048 positions a decode step's attention is a stream
// of the whole cache, and sgemv reached ~17 GB/s of a core's ~36.
//
// The arithmetic, per output (hd % 16 == 0, so none of the kernels' 4- and 8-element prologues
// run):
//   score of key j, in a block of 4 keys: one 8-lane FMA chain over the row, lanes summed as
//     ((l0+l4)+(l1+l5)) + ((l2+l6)+(l3+l7)), times scale. Keys past the last block of 4: a pair
//     and then a single key, on 4-lane mul-then-add chains (the pair: one chain; the single key:
//     two chains over alternate 4-element pieces, added), summed (l0+l1)+(l2+l3), times scale.
//   output element e: from 0, per block of 8 keys in order, an FMA chain p_j·v_je over the block
//     (from 0), added as y = fma(chain, 1, y); then a block of 4 keys the same way; then a pair,
//     y = (y + v·p) + v·p; then a single key, y = y + v·p (products rounded on their own).
//
// So keys can come in runs (a quantized cache decodes a run at a time into a buffer that stays in
// cache): scores of a run of whole blocks of 4 are those keys' scores, and values with
// `accumulate` continue y where the previous run of whole blocks of 8 left it. Only the last run
// may end in a part block.
#include "kernels_internal.h"
#include <math.h>

// MARK: - Portable twin

// Scores of one key row against `heads` query rows (q: heads × hd).
static float score_block4_c(const float *k, const float *q, int hd) {
    float l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int c = 0; c < hd; c += 8)
        for (int i = 0; i < 8; i++) l[i] = fmaf(k[c + i], q[c + i], l[i]);
    const float s0 = l[0] + l[4], s1 = l[1] + l[5], s2 = l[2] + l[6], s3 = l[3] + l[7];
    return (s0 + s1) + (s2 + s3);
}

// A key of the tail pair: one 4-lane chain of rounded products.
static float score_pair_c(const float *k, const float *q, int hd) {
    float l[4] = {0, 0, 0, 0};
    for (int c = 0; c < hd; c += 4)
        for (int i = 0; i < 4; i++) {
            const float p = k[c + i] * q[c + i];
            l[i] = l[i] + p;
        }
    return (l[0] + l[1]) + (l[2] + l[3]);
}

// The last single key: two 4-lane chains over alternate 4-element pieces.
static float score_single_c(const float *k, const float *q, int hd) {
    float a[4] = {0, 0, 0, 0}, b[4] = {0, 0, 0, 0};
    for (int c = 0; c < hd; c += 8)
        for (int i = 0; i < 4; i++) {
            const float p = k[c + i] * q[c + i], r = k[c + 4 + i] * q[c + 4 + i];
            a[i] = a[i] + p;
            b[i] = b[i] + r;
        }
    float l[4];
    for (int i = 0; i < 4; i++) l[i] = a[i] + b[i];
    return (l[0] + l[1]) + (l[2] + l[3]);
}

// A score as the caller stores it: the dot times the scale, added to the zeroed output (sgemv's
// beta = 0 and its y += alpha·dot; two statements, so the multiply and add are never fused).
static inline float scaled(float dot, float scale) {
    const float t = dot * scale;
    return 0.0f + t;
}

// The scores of the 1–3 keys past the last block of 4, on both paths: the pair, then the single key.
static void tail_scores(const float *k, int ldk, int keys, int hd, const float *q, int heads, float scale, float *s,
                        int lds) {
    const int blocks = keys & ~3;
    for (int h = 0; h < heads; h++)
        for (int j = blocks; j < keys; j++) {
            const float *kj = k + (size_t)j * ldk, *qh = q + (size_t)h * hd;
            const float d = j < blocks + (keys & 2) ? score_pair_c(kj, qh, hd) : score_single_c(kj, qh, hd);
            s[(size_t)h * lds + j] = scaled(d, scale);
        }
}

static void scores_c(const float *k, int ldk, int keys, int hd, const float *q, int heads, float scale, float *s,
                     int lds) {
    const int blocks = keys & ~3;
    for (int h = 0; h < heads; h++)
        for (int j = 0; j < blocks; j++)
            s[(size_t)h * lds + j] = scaled(score_block4_c(k + (size_t)j * ldk, q + (size_t)h * hd, hd), scale);
    tail_scores(k, ldk, keys, hd, q, heads, scale, s, lds);
}

static void values_c(const float *v, int ldv, int keys, int hd, const float *p, int lds, int heads, float *out,
                     int accumulate) {
    const int b8 = keys & ~7, b4 = b8 + (keys & 4);
    for (int h = 0; h < heads; h++) {
        const float *ph = p + (size_t)h * lds;
        float *y = out + (size_t)h * hd;
        for (int e = 0; e < hd; e++) {
            float acc = accumulate ? y[e] : 0;
            for (int j0 = 0; j0 < b4; j0 += (j0 < b8 ? 8 : 4)) {
                const int n = j0 < b8 ? 8 : 4;
                float chain = 0;
                for (int j = j0; j < j0 + n; j++) chain = fmaf(v[(size_t)j * ldv + e], ph[j], chain);
                acc = fmaf(chain, 1.0f, acc);
            }
            for (int j = b4; j < keys; j++) {
                const float prod = v[(size_t)j * ldv + e] * ph[j];
                acc = acc + prod;
            }
            y[e] = acc;
        }
    }
}

// MARK: - AVX2

// Rows are fetched this far ahead of their use: the hardware prefetcher alone kept a core at
// ~19 GB/s on this stream, software prefetch of whole rows at ~26 (microbenchmark: one decode
// step's attention, 12 sequences × 30 layers at 1,500 positions). A prefetch never faults, so
// running past the last row is harmless.
#define PREFETCH_ROWS 32

ATTR_AVX2 static inline void prefetch_rows(const float *row, int rows, int ld, int hd) {
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < hd; c += 16) _mm_prefetch((const char *)(row + (size_t)r * ld + c), _MM_HINT_T0);
}

// The 4 lanes' sums of 4 chains, (l0+l4, l1+l5, l2+l6, l3+l7) each, then (s0+s1)+(s2+s3): the
// same adds as the kernel's extract, add and two horizontal adds, done for 4 keys at once.
ATTR_AVX2 static inline __m128 reduce4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
    const __m128 s0 = _mm_add_ps(_mm256_castps256_ps128(a0), _mm256_extractf128_ps(a0, 1));
    const __m128 s1 = _mm_add_ps(_mm256_castps256_ps128(a1), _mm256_extractf128_ps(a1, 1));
    const __m128 s2 = _mm_add_ps(_mm256_castps256_ps128(a2), _mm256_extractf128_ps(a2, 1));
    const __m128 s3 = _mm_add_ps(_mm256_castps256_ps128(a3), _mm256_extractf128_ps(a3, 1));
    return _mm_hadd_ps(_mm_hadd_ps(s0, s1), _mm_hadd_ps(s2, s3));
}

// Scores of 4 keys for `nh` heads (a constant after inlining: 4·nh chains in registers).
ALWAYS_INLINE ATTR_AVX2 static inline void scores_4keys(const float *k, int ldk, int hd, const float *q, int nh,
                                                        __m128 scale, float *s, int lds) {
    __m256 a[3][4];
    for (int h = 0; h < nh; h++)
        for (int i = 0; i < 4; i++) a[h][i] = _mm256_setzero_ps();
    for (int c = 0; c < hd; c += 8) {
        const __m256 k0 = _mm256_loadu_ps(k + c), k1 = _mm256_loadu_ps(k + ldk + c);
        const __m256 k2 = _mm256_loadu_ps(k + 2 * (size_t)ldk + c), k3 = _mm256_loadu_ps(k + 3 * (size_t)ldk + c);
        for (int h = 0; h < nh; h++) {
            const __m256 qv = _mm256_loadu_ps(q + (size_t)h * hd + c);
            a[h][0] = _mm256_fmadd_ps(k0, qv, a[h][0]);
            a[h][1] = _mm256_fmadd_ps(k1, qv, a[h][1]);
            a[h][2] = _mm256_fmadd_ps(k2, qv, a[h][2]);
            a[h][3] = _mm256_fmadd_ps(k3, qv, a[h][3]);
        }
    }
    for (int h = 0; h < nh; h++) {
        const __m128 d = _mm_mul_ps(reduce4(a[h][0], a[h][1], a[h][2], a[h][3]), scale);
        _mm_storeu_ps(s + (size_t)h * lds, _mm_add_ps(_mm_setzero_ps(), d));
    }
}

ATTR_AVX2 static void scores_avx2(const float *k, int ldk, int keys, int hd, const float *q, int heads, float scale,
                                  float *s, int lds) {
    const __m128 sc = _mm_set1_ps(scale);
    const int blocks = keys & ~3;
    for (int j = 0; j < blocks; j += 4) {
        const float *kj = k + (size_t)j * ldk;
        prefetch_rows(kj + (size_t)PREFETCH_ROWS * ldk, 4, ldk, hd);
        int h = 0;
        for (; h + 3 <= heads; h += 3) scores_4keys(kj, ldk, hd, q + (size_t)h * hd, 3, sc, s + (size_t)h * lds + j, lds);
        if (heads - h == 2) scores_4keys(kj, ldk, hd, q + (size_t)h * hd, 2, sc, s + (size_t)h * lds + j, lds);
        if (heads - h == 1) scores_4keys(kj, ldk, hd, q + (size_t)h * hd, 1, sc, s + (size_t)h * lds + j, lds);
    }
    tail_scores(k, ldk, keys, hd, q, heads, scale, s, lds);
}

// Elements e0 ..< e0 + 8·nc of one head's y: the FMA chains of `n` keys (8 or 4), each added to
// y with fma(chain, 1, y). nc is a constant after inlining: nc chains in flight.
ALWAYS_INLINE ATTR_AVX2 static inline void values_chains(const float *v, int ldv, const float *p, int n, int nc,
                                                         float *y) {
    __m256 c[8];
    for (int i = 0; i < nc; i++) c[i] = _mm256_setzero_ps();
    for (int j = 0; j < n; j++) {
        const __m256 pj = _mm256_broadcast_ss(p + j);
        for (int i = 0; i < nc; i++) c[i] = _mm256_fmadd_ps(_mm256_loadu_ps(v + (size_t)j * ldv + 8 * i), pj, c[i]);
    }
    const __m256 one = _mm256_set1_ps(1.0f);
    for (int i = 0; i < nc; i++) _mm256_storeu_ps(y + 8 * i, _mm256_fmadd_ps(c[i], one, _mm256_loadu_ps(y + 8 * i)));
}

// y[0..<hd] of one head += the chains of `n` keys from v (rows ldv apart) weighted by p.
ALWAYS_INLINE ATTR_AVX2 static inline void values_block(const float *v, int ldv, int hd, const float *p, int n,
                                                        float *y) {
    int e = 0;
    for (; e + 64 <= hd; e += 64) values_chains(v + e, ldv, p, n, 8, y + e);
    for (; e < hd; e += 16) values_chains(v + e, ldv, p, n, 2, y + e);
}

ATTR_AVX2 static void values_avx2(const float *v, int ldv, int keys, int hd, const float *p, int lds, int heads,
                                  float *out, int accumulate) {
    const int b8 = keys & ~7, b4 = b8 + (keys & 4);
    if (!accumulate) memset(out, 0, sizeof(float) * (size_t)heads * (size_t)hd);
    for (int j = 0; j < b8; j += 8) {
        prefetch_rows(v + (size_t)(j + PREFETCH_ROWS) * ldv, 8, ldv, hd);
        for (int h = 0; h < heads; h++)
            values_block(v + (size_t)j * ldv, ldv, hd, p + (size_t)h * lds + j, 8, out + (size_t)h * hd);
    }
    if (b4 > b8)
        for (int h = 0; h < heads; h++)
            values_block(v + (size_t)b8 * ldv, ldv, hd, p + (size_t)h * lds + b8, 4, out + (size_t)h * hd);
    for (int j = b4; j < keys; j++)
        for (int h = 0; h < heads; h++) {
            const __m256 pj = _mm256_set1_ps(p[(size_t)h * lds + j]);
            float *y = out + (size_t)h * hd;
            for (int e = 0; e < hd; e += 8)
                _mm256_storeu_ps(y + e, _mm256_add_ps(_mm256_loadu_ps(y + e),
                                                      _mm256_mul_ps(_mm256_loadu_ps(v + (size_t)j * ldv + e), pj)));
        }
}

// MARK: - Public

int qd_attention_scores(const float *k, int ldk, int keys, int hd, const float *q, int heads, float scale, float *s,
                        int lds) {
    if (hd <= 0 || hd % 16 || keys < 1 || heads < 1) return 0;
    if (qd_has_avx2()) scores_avx2(k, ldk, keys, hd, q, heads, scale, s, lds);
    else scores_c(k, ldk, keys, hd, q, heads, scale, s, lds);
    return 1;
}

int qd_attention_values(const float *v, int ldv, int keys, int hd, const float *p, int lds, int heads, float *out,
                        int accumulate) {
    if (hd <= 0 || hd % 16 || keys < 1 || heads < 1) return 0;
    if (qd_has_avx2()) values_avx2(v, ldv, keys, hd, p, lds, heads, out, accumulate);
    else values_c(v, ldv, keys, hd, p, lds, heads, out, accumulate);
    return 1;
}
