// Float64 exponentials of a logit row for the divergence metrics (see qd_divergence.h).
#include "qd_divergence.h"
#include "ckernels.h"
#include <immintrin.h>
#include <math.h>

#define ATTR_AVX2 __attribute__((target("avx2,fma")))

static double exp_shifted_c(const float *x, int n, float shift, double *e) {
    double lane[4] = {0, 0, 0, 0};
    const double s = (double)shift;
    for (int i = 0; i < n; i++) {
        const double v = (double)x[i] - s;
        const double y = v < -708.0 ? 0.0 : exp(v);
        e[i] = y;
        lane[i & 3] += y;
    }
    return (lane[0] + lane[1]) + (lane[2] + lane[3]);
}

// exp(v) for 4 doubles v <= 0: v = k·ln2 + r with |r| <= ln2/2 (ln2 split so k·ln2hi is exact),
// e^r by its Taylor series to r^13 (remainder < 5e-18 relative), times 2^k built in the exponent.
ATTR_AVX2 static inline __m256d exp4(__m256d v) {
    const __m256d k = _mm256_round_pd(_mm256_mul_pd(v, _mm256_set1_pd(1.4426950408889634)),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256d r = _mm256_fnmadd_pd(k, _mm256_set1_pd(6.93147180369123816490e-01), v);
    r = _mm256_fnmadd_pd(k, _mm256_set1_pd(1.90821492927058770002e-10), r);
    __m256d p = _mm256_set1_pd(1.0 / 6227020800.0);               // 1/13!
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 479001600.0));  // 1/12!
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 39916800.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 3628800.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 362880.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 40320.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 5040.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 720.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 120.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 24.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 6.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(0.5));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0));
    const __m256d tiny = _mm256_cmp_pd(v, _mm256_set1_pd(-708.0), _CMP_LT_OQ);
    // Clamp k before building 2^k so masked lanes (v < -708, -inf) stay harmless.
    const __m256d kc = _mm256_max_pd(k, _mm256_set1_pd(-1022.0));
    const __m256i k64 = _mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(kc));
    const __m256i bits = _mm256_slli_epi64(_mm256_add_epi64(k64, _mm256_set1_epi64x(1023)), 52);
    const __m256d y = _mm256_mul_pd(p, _mm256_castsi256_pd(bits));
    return _mm256_andnot_pd(tiny, y);
}

ATTR_AVX2 static double exp_shifted_avx2(const float *x, int n, float shift, double *e) {
    const __m256d s = _mm256_set1_pd((double)shift);
    __m256d acc = _mm256_setzero_pd();
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        const __m256d y = exp4(_mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i)), s));
        _mm256_storeu_pd(e + i, y);
        acc = _mm256_add_pd(acc, y);
    }
    double lane[4];
    _mm256_storeu_pd(lane, acc);
    for (; i < n; i++) {
        const double v = (double)x[i] - (double)shift;
        double y = 0.0;
        if (v >= -708.0) {
            double t[4] = {v, 0, 0, 0};
            _mm256_storeu_pd(t, exp4(_mm256_loadu_pd(t)));
            y = t[0];
        }
        e[i] = y;
        lane[i & 3] += y;
    }
    return (lane[0] + lane[1]) + (lane[2] + lane[3]);
}

double qd_exp_shifted(const float *x, int n, float shift, double *e) {
    if (qd_has_avx2()) return exp_shifted_avx2(x, n, shift, e);
    return exp_shifted_c(x, n, shift, e);
}
