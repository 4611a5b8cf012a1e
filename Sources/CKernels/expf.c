// The FP32 forward pass's exponentials (SiLU, attention softmax), 8 at a time.
//
// The scalar path calls libm's expf. The AVX2 path evaluates the same algorithm as glibc's
// expf on FMA machines (__expf_fma, glibc 2.28 and later; the one the scalar path calls on this
// machine kind) in the same order with the same fused operations, so every result is the same
// bits: x·32/ln2 = k + r, 2^(k/32) from a 32-entry table, a cubic in r, all in double, one
// rounding to float. A test compares it with expf on millions of inputs; lanes outside the fast
// range (|x| ≥ 88, inf, NaN) take expf itself.
#include "ckernels.h"
#include <immintrin.h>
#include <math.h>
#include <string.h>

#define ATTR_AVX2 __attribute__((target("avx2,fma")))

// 2^(i/32) as double bits, less i << 47 (the exponent adjustment added back from k).
static const uint64_t exp2_32_table[32] = {
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51,
    0x3fef72b83c7d517b, 0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715, 0x3feef1a7373aa9cb, 0x3feedea64c123422, 0x3feece086061892d,
    0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429, 0x3feea47eb03a5585,
    0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d,
    0x3feee89f995ad3ad, 0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069,
    0x3fef5818dcfba487, 0x3fef7c97337b9b5f, 0x3fefa4afa2a490da, 0x3fefd0765b6e4540,
};

static inline double bits_to_double(uint64_t b) {
    double d;
    memcpy(&d, &b, 8);
    return d;
}

// Four lanes of expf in double; x must be in the fast range.
ATTR_AVX2 static inline __m128 expf4_fast(__m128 x) {
    const __m256d invln2n = _mm256_set1_pd(bits_to_double(0x40471547652b82feULL));  // 32 / ln 2
    const __m256d shift = _mm256_set1_pd(bits_to_double(0x4338000000000000ULL));    // 1.5 · 2^52
    const __m256d c0 = _mm256_set1_pd(bits_to_double(0x3ebc6af84b912394ULL));
    const __m256d c1 = _mm256_set1_pd(bits_to_double(0x3f2ebfce50fac4f3ULL));
    const __m256d c2 = _mm256_set1_pd(bits_to_double(0x3f962e42ff0c52d6ULL));
    const __m256d xd = _mm256_cvtps_pd(x);
    const __m256d kds = _mm256_fmadd_pd(invln2n, xd, shift);
    const __m256i ki = _mm256_castpd_si256(kds);
    const __m256d kd = _mm256_sub_pd(kds, shift);
    const __m256d r = _mm256_fmsub_pd(invln2n, xd, kd);
    const __m256i idx = _mm256_and_si256(ki, _mm256_set1_epi64x(31));
    const __m256i t = _mm256_add_epi64(_mm256_i64gather_epi64((const long long *)exp2_32_table, idx, 8),
                                       _mm256_slli_epi64(ki, 47));
    const __m256d z = _mm256_fmadd_pd(r, c0, c1);
    const __m256d r2 = _mm256_mul_pd(r, r);
    __m256d y = _mm256_fmadd_pd(r, c2, _mm256_set1_pd(1.0));
    y = _mm256_fmadd_pd(z, r2, y);
    y = _mm256_mul_pd(y, _mm256_castsi256_pd(t));
    return _mm256_cvtpd_ps(y);
}

// Eight lanes; any lane outside |x| < 88 (top 12 bits of |x| ≤ 0x42a, as glibc tests) goes to expf.
ATTR_AVX2 static inline __m256 expf8(__m256 x) {
    const __m256i top = _mm256_and_si256(_mm256_srli_epi32(_mm256_castps_si256(x), 20), _mm256_set1_epi32(0x7ff));
    const __m256i slow = _mm256_cmpgt_epi32(top, _mm256_set1_epi32(0x42a));
    if (!_mm256_testz_si256(slow, slow)) {
        float v[8];
        _mm256_storeu_ps(v, x);
        for (int i = 0; i < 8; i++) v[i] = expf(v[i]);
        return _mm256_loadu_ps(v);
    }
    return _mm256_set_m128(expf4_fast(_mm256_extractf128_ps(x, 1)), expf4_fast(_mm256_castps256_ps128(x)));
}

ATTR_AVX2 static void expf_avx2(const float *x, int n, float *y) {
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, expf8(_mm256_loadu_ps(x + i)));
    if (i < n) {
        float t[8] = {0};
        memcpy(t, x + i, sizeof(float) * (size_t)(n - i));
        _mm256_storeu_ps(t, expf8(_mm256_loadu_ps(t)));
        memcpy(y + i, t, sizeof(float) * (size_t)(n - i));
    }
}

void qd_expf(const float *x, int n, float *y) {
    if (qd_has_avx2()) {
        expf_avx2(x, n, y);
        return;
    }
    for (int i = 0; i < n; i++) y[i] = expf(x[i]);
}

// gate[i] = gate[i] / (1 + exp(-gate[i])) * up[i], in that order (as the Swift loop it replaces).
ATTR_AVX2 static void silu_mul_avx2(float *gate, const float *up, int n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 g = _mm256_loadu_ps(gate + i);
        const __m256 e = expf8(_mm256_xor_ps(g, sign));
        _mm256_storeu_ps(gate + i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), _mm256_loadu_ps(up + i)));
    }
    for (; i < n; i++) {
        float e;
        expf_avx2(&(float){-gate[i]}, 1, &e);
        gate[i] = gate[i] / (1.0f + e) * up[i];
    }
}

void qd_silu_mul(float *gate, const float *up, int n) {
    if (qd_has_avx2()) {
        silu_mul_avx2(gate, up, n);
        return;
    }
    for (int i = 0; i < n; i++) gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

// The largest of n floats, NaNs passed over, as the loop `if (x[j] > mx) mx = x[j]` from -inf
// finds it. Vectorized, a tie of -0 and +0 may come out with the other sign; the only use is
// x - max inside exp, where that changes no value (exp(±0) = 1).
ATTR_AVX2 static float max_avx2(const float *x, int n) {
    __m256 m = _mm256_set1_ps(-INFINITY);
    int j = 0;
    for (; j + 8 <= n; j += 8) m = _mm256_max_ps(_mm256_loadu_ps(x + j), m);  // a NaN lane keeps m
    float lanes[8], mx = -INFINITY;
    _mm256_storeu_ps(lanes, m);
    for (int i = 0; i < 8; i++)
        if (lanes[i] > mx) mx = lanes[i];
    for (; j < n; j++)
        if (x[j] > mx) mx = x[j];
    return mx;
}

// Up to 4 softmax rows at once: row i's first visible[i] entries become probabilities and the
// rest up to width[i] become 0, each with the values of the one-row loop (max, exp(x - max), a
// left-to-right float sum, scale). The rows' sums run side by side: one row's sum is a chain of
// float adds, bound by add latency, and attention has many rows (a query head's, or a chunk's).
static void softmax4(float *const row[4], const int visible[4], const int width[4], int nr) {
    const int avx2 = qd_has_avx2();
    int common = visible[0];
    for (int r = 0; r < nr; r++) {
        float *x = row[r];
        const int n = visible[r];
        if (n < common) common = n;
        if (avx2) {
            const float mx = max_avx2(x, n);
            for (int j = 0; j < n; j++) x[j] -= mx;
            expf_avx2(x, n, x);
        } else {
            float mx = -INFINITY;
            for (int j = 0; j < n; j++)
                if (x[j] > mx) mx = x[j];
            for (int j = 0; j < n; j++) x[j] = expf(x[j] - mx);
        }
    }
    // The sums, left to right: side by side over the entries every row has, then each row's rest.
    float sum[4] = {0, 0, 0, 0};
    const float *a = row[0], *b = row[nr > 1 ? 1 : 0], *c = row[nr > 2 ? 2 : 0], *d = row[nr > 3 ? 3 : 0];
    for (int j = 0; j < common; j++) {
        sum[0] += a[j];
        sum[1] += b[j];
        sum[2] += c[j];
        sum[3] += d[j];
    }
    for (int r = 0; r < nr; r++) {
        float *x = row[r];
        float t = sum[r];
        for (int j = common; j < visible[r]; j++) t += x[j];
        const float inv = 1 / t;
        for (int j = 0; j < visible[r]; j++) x[j] *= inv;
        for (int j = visible[r]; j < width[r]; j++) x[j] = 0;
    }
}

void qd_softmax_rows(float *s, int rows, int ld, int visible, int keys) {
    for (int r0 = 0; r0 < rows; r0 += 4) {
        const int nr = rows - r0 < 4 ? rows - r0 : 4;
        float *row[4];
        int vis[4], width[4];
        for (int r = 0; r < nr; r++) {
            row[r] = s + (size_t)(r0 + r) * ld;
            vis[r] = visible;
            width[r] = keys;
        }
        softmax4(row, vis, width, nr);
    }
}

void qd_softmax_causal(float *s, int rows, int keys, int pos0, int first0, int window) {
    for (int r0 = 0; r0 < rows; r0 += 4) {
        const int nr = rows - r0 < 4 ? rows - r0 : 4;
        float *row[4];
        int vis[4], width[4];
        for (int i = 0; i < nr; i++) {
            const int r = r0 + i;
            float *x = s + (size_t)r * keys;
            const int last = pos0 + r - first0;  // the row's own key
            int first = 0;
            if (window > 0) {
                first = pos0 + r - window + 1;
                first = (first > 0 ? first : 0) - first0;
            }
            for (int j = 0; j < first; j++) x[j] = 0;
            row[i] = x + first;
            vis[i] = last + 1 - first;
            width[i] = keys - first;
        }
        softmax4(row, vis, width, nr);
    }
}

void qd_softmax_row(float *row, int visible, int keys) { qd_softmax_rows(row, 1, keys, visible, keys); }

// GeGLU with the tanh form of GELU (Gemma's gelu_pytorch_tanh), computed exactly in float:
// llama.cpp rounds the gate to binary16 and reads a GELU table there, which this does not copy.
void qd_gelu_tanh_mul(float *gate, const float *up, int n) {
    const float c = 0.7978845608028654f;  // sqrt(2/pi)
    for (int i = 0; i < n; i++) {
        const float g = gate[i];
        gate[i] = 0.5f * g * (1.0f + tanhf(c * (g + 0.044715f * g * g * g))) * up[i];
    }
}
