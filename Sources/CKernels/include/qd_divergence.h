#ifndef QUANTDRIFT_QD_DIVERGENCE_H
#define QUANTDRIFT_QD_DIVERGENCE_H

// The exponentials of a next-token distribution for TokenDivergence, in float64:
//   e[i] = exp((double)x[i] - (double)shift)  for i < n,
// returning Σ e[i] summed in 4 lanes (lane j takes i ≡ j mod 4, in order) then (l0+l1)+(l2+l3),
// the same order on both paths. The AVX2+FMA path evaluates exp with a Cody–Waite reduction and
// a degree-13 polynomial (within ~2 ulp of the correctly rounded value, like libm's within 1);
// arguments below -708 give 0 (their share of any sum is below 1e-300). The portable path calls
// libm's exp.
double qd_exp_shifted(const float *x, int n, float shift, double *e);

#endif
