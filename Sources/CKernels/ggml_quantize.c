// llama.cpp's block quantizers as llama-quantize runs them without an importance matrix (ggml's
// quantize_row_*_ref): Q5_0, Q5_1, IQ4_NL and the k-quants Q2_K…Q6_K, so a scheme in one of these formats
// stores the bytes llama-quantize writes for the same FP32 tensor (a test checks them against
// hashes of its output). The searches for sub-block scales and mins are reproduced operation for
// operation: the same float expressions in the same order, rounding with the same
// add-a-magic-number trick, nothing fused (this file is compiled without FMA). A sub-block whose
// final scale rounds to 0 keeps the codes its search found, as ggml's does.
#include "kernels_internal.h"
#include <float.h>
#include <math.h>

enum { Q_Q5_0 = 6, Q_Q5_1 = 7, Q_Q2_K = 10, Q_Q3_K = 11, Q_Q4_K = 12, Q_Q5_K = 13, Q_Q6_K = 14, Q_IQ4_NL = 20 };

// ggml's nearest_int: round half to even through the float adder (|v| < 2^22).
static inline int round_nearest(float v) {
    const float t = v + 12582912.f;
    int32_t i;
    memcpy(&i, &t, 4);
    return (i & 0x007fffff) - 0x00400000;
}

static inline int clamp_int(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

static inline void store_f16(uint8_t *p, float v) {
    const uint16_t h = qd_f32_to_f16(v);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

static inline float load_f16(const uint8_t *p) { return qd_f16_to_f32((uint16_t)(p[0] | (p[1] << 8))); }

// The value of largest magnitude (the first of equal ones) and that magnitude.
static inline float signed_absmax(const float *x, int n, float *amax) {
    float max = 0, a = 0;
    for (int i = 0; i < n; i++) {
        const float ax = fabsf(x[i]);
        if (ax > a) { a = ax; max = x[i]; }
    }
    *amax = a;
    return max;
}

// MARK: - Scale searches

// Symmetric codes in -nmax…nmax-1 (stored +nmax) weighted by x², trying 18 scales around
// -nmax/max (ggml's make_qx_quants, rmse_type 1, no importance): Q6_K's sub-blocks.
static float search_symmetric(int n, int nmax, const float *x, int8_t *L) {
    float amax;
    const float max = signed_absmax(x, n, &amax);
    if (amax < 1e-15f) {
        for (int i = 0; i < n; i++) L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        const int l = clamp_int(round_nearest(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)(l + nmax);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            const int l = clamp_int(round_nearest(iscale * x[i]), -nmax, nmax - 1);
            const float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) L[i] = (int8_t)(nmax + clamp_int(round_nearest(iscale * x[i]), -nmax, nmax - 1));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

// Q3_K's sub-blocks: symmetric codes, then up to 5 rounds moving single codes while the weighted
// fit improves (ggml's make_q3_quants with rmse). L holds codes -nmax…nmax-1 plus nmax.
static float search_q3(int n, int nmax, const float *x, int8_t *L) {
    float amax;
    const float max = signed_absmax(x, n, &amax);
    if (amax < 1e-15f) {
        for (int i = 0; i < n; i++) L[i] = 0;
        return 0.f;
    }
    const float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        const int l = clamp_int(round_nearest(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)l;
        const float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int round = 0; round < 5; round++) {
        int changed = 0;
        for (int i = 0; i < n; i++) {
            const float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * L[i];
            if (slx > 0) {
                float sl2 = suml2 - w * L[i] * L[i];
                const int nl = clamp_int(round_nearest(x[i] * sl2 / slx), -nmax, nmax - 1);
                if (nl != L[i]) {
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)nl;
                        sumlx = slx;
                        suml2 = sl2;
                        changed++;
                    }
                }
            }
        }
        if (!changed) break;
    }
    for (int i = 0; i < n; i++) L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// Codes 0…nmax with a scale and a min ≤ 0 fitted by weighted least squares over nstep+1 trial
// scales (ggml's make_qkx2_quants): Q2_K, Q4_K and Q5_K's sub-blocks. Returns the scale and
// writes -min to *neg_min.
static float search_scale_min(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *neg_min,
                              uint8_t *aux, float rmin, float rdelta, int nstep, int use_mad) {
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        const float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; i++) L[i] = 0;
        *neg_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; i++) {
        const int l = round_nearest(iscale * (x[i] - min));
        L[i] = (uint8_t)clamp_int(l, 0, nmax);
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_error += weights[i] * diff;
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            const int l = clamp_int(round_nearest(iscale * (x[i] - min)), 0, nmax);
            aux[i] = (uint8_t)l;
            const float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float err = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * aux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                err += weights[i] * diff;
            }
            if (err < best_error) {
                for (int i = 0; i < n; i++) L[i] = aux[i];
                best_error = err;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *neg_min = -min;
    return scale;
}

// MARK: - Blocks of 32

static void block_q5_0(const float *x, uint8_t *b) {
    float amax = 0, max = 0;
    for (int j = 0; j < 32; j++) {
        if (amax < fabsf(x[j])) { amax = fabsf(x[j]); max = x[j]; }
    }
    const float d = max / -16;
    const float id = d ? 1.0f / d : 0.0f;
    store_f16(b, d);
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        const int c0 = (int8_t)(x[j] * id + 16.5f), c1 = (int8_t)(x[16 + j] * id + 16.5f);
        const uint8_t q0 = (uint8_t)(c0 < 31 ? c0 : 31), q1 = (uint8_t)(c1 < 31 ? c1 : 31);
        b[6 + j] = (uint8_t)((q0 & 15) | ((q1 & 15) << 4));
        qh |= (uint32_t)((q0 & 16) >> 4) << j;
        qh |= (uint32_t)((q1 & 16) >> 4) << (j + 16);
    }
    memcpy(b + 2, &qh, 4);
}

static void block_q5_1(const float *x, uint8_t *b) {
    float min = FLT_MAX, max = -FLT_MAX;
    for (int j = 0; j < 32; j++) {
        if (x[j] < min) min = x[j];
        if (x[j] > max) max = x[j];
    }
    const float d = (max - min) / 31;
    const float id = d ? 1.0f / d : 0.0f;
    store_f16(b, d);
    store_f16(b + 2, min);
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        const uint8_t q0 = (uint8_t)((x[j] - min) * id + 0.5f), q1 = (uint8_t)((x[16 + j] - min) * id + 0.5f);
        b[8 + j] = (uint8_t)((q0 & 15) | ((q1 & 15) << 4));
        qh |= (uint32_t)((q0 & 16) >> 4) << j;
        qh |= (uint32_t)((q1 & 16) >> 4) << (j + 16);
    }
    memcpy(b + 4, &qh, 4);
}


// IQ4_NL: 32 values, an fp16 scale and 4-bit indices into a fixed non-uniform table. Weights x²;
// the scale starts at max/table[0] and is refitted by least squares. `ntry` > 0 (llama-quantize,
// 7) also tries the scales (t + table[0])/max for t in -ntry…ntry and recodes with the winner;
// ntry < 0 (ggml's quantize_row_iq4_nl_ref, which the KV cache uses) keeps the first codes.
const int8_t qd_iq4nl_values[16] = { -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113 };

static inline int iq4nl_index(float x) {
    const int8_t *v = qd_iq4nl_values;
    if (x <= v[0]) return 0;
    if (x >= v[15]) return 15;
    int lo = 0, hi = 15;
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (x < v[mid]) hi = mid; else lo = mid;
    }
    return x - v[hi - 1] < v[hi] - x ? hi - 1 : hi;
}

static void block_iq4_nl(const float *x, uint8_t *b, int ntry) {
    const int8_t *v = qd_iq4nl_values;
    uint8_t L[32];
    float w[32];
    memset(b, 0, 18);
    float amax = 0, max = 0;
    for (int j = 0; j < 32; j++) {
        w[j] = x[j] * x[j];
        const float ax = fabsf(x[j]);
        if (ax > amax) { amax = ax; max = x[j]; }
    }
    if (amax < 1e-15f) {
        // GROUP_MAX_EPS: scale 0; ggml then codes every value as the index nearest 0 (8). Its
        // row_ref variant leaves the previous block's codes instead; they decode to 0 either way.
        store_f16(b, 0.f);
        memset(b + 2, 0x88, 16);
        return;
    }
    float d = ntry > 0 ? -max / v[0] : max / v[0];
    float id = 1 / d;
    float sumqx = 0, sumq2 = 0;
    for (int j = 0; j < 32; j++) {
        const float al = id * x[j];
        const int l = iq4nl_index(al);
        L[j] = (uint8_t)l;
        const float q = v[l];
        sumqx += w[j] * q * x[j];
        sumq2 += w[j] * q * q;
    }
    d = sumqx / sumq2;
    float best = d * sumqx;
    for (int t = -ntry; t <= ntry; t++) {
        id = (t + v[0]) / max;
        sumqx = sumq2 = 0;
        for (int j = 0; j < 32; j++) {
            const float q = v[iq4nl_index(id * x[j])];
            sumqx += w[j] * q * x[j];
            sumq2 += w[j] * q * q;
        }
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    store_f16(b, d);
    if (ntry > 0) {
        const float inv = d ? 1 / d : 0;
        for (int j = 0; j < 32; j++) L[j] = (uint8_t)iq4nl_index(inv * x[j]);
    }
    for (int j = 0; j < 16; j++) b[2 + j] = (uint8_t)(L[j] | (L[16 + j] << 4));
}

int qd_quantize_iq4_nl_row_ref(const float *src, size_t count, uint8_t *dst) {
    if (count % 32) return 0;
    for (size_t i = 0; i < count / 32; i++) block_iq4_nl(src + 32 * i, dst + 18 * i, -1);
    return 1;
}

// MARK: - Super-blocks of 256

// Two-bit codes of 128 elements packed four to a byte, as Q2_K and Q3_K store them.
static void pack_2bit(const uint8_t *L, uint8_t *qs) {
    for (int j = 0; j < 256; j += 128)
        for (int l = 0; l < 32; l++)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

// Q2_K: scales[16] (4-bit scale | 4-bit min << 4), qs[64], d, dmin.
static void block_q2_k(const float *x, uint8_t *b) {
    uint8_t L[256], aux[16], *scales = b, *qs = b + 16;
    float weights[16], mins[16], sc[16];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; j++) {
        for (int l = 0; l < 16; l++) weights[l] = fabsf(x[16 * j + l]);
        sc[j] = search_scale_min(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], aux, -0.5f, 0.1f, 15, 1);
        if (sc[j] > max_scale) max_scale = sc[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0) {
        const float iscale = 15.f / max_scale;
        for (int j = 0; j < 16; j++) scales[j] = (uint8_t)round_nearest(iscale * sc[j]);
        store_f16(b + 80, max_scale / 15.f);
    } else {
        for (int j = 0; j < 16; j++) scales[j] = 0;
        store_f16(b + 80, 0.f);
    }
    if (max_min > 0) {
        const float iscale = 15.f / max_min;
        for (int j = 0; j < 16; j++) scales[j] |= (uint8_t)(round_nearest(iscale * mins[j]) << 4);
        store_f16(b + 82, max_min / 15.f);
    } else {
        store_f16(b + 82, 0.f);
    }
    const float d = load_f16(b + 80), dmin = load_f16(b + 82);
    for (int j = 0; j < 16; j++) {
        const float dl = d * (scales[j] & 15);
        if (!dl) continue;
        const float ml = dmin * (scales[j] >> 4);
        for (int i = 0; i < 16; i++) L[16 * j + i] = (uint8_t)clamp_int(round_nearest((x[16 * j + i] + ml) / dl), 0, 3);
    }
    pack_2bit(L, qs);
}

// Q3_K: hmask[32], qs[64], scales[12] (16 six-bit scales), d.
static void block_q3_k(const float *x, uint8_t *b) {
    int8_t L[256];
    float sc[16];
    uint8_t *hmask = b, *qs = b + 32, *scales = b + 96;
    float max_scale = 0, amax = 0;
    for (int j = 0; j < 16; j++) {
        sc[j] = search_q3(16, 4, x + 16 * j, L + 16 * j);
        const float a = fabsf(sc[j]);
        if (a > amax) { amax = a; max_scale = sc[j]; }
    }
    memset(scales, 0, 12);
    if (max_scale) {
        const float iscale = -32.f / max_scale;
        for (int j = 0; j < 16; j++) {
            int8_t l = (int8_t)round_nearest(iscale * sc[j]);
            l = (int8_t)(clamp_int(l, -32, 31) + 32);
            if (j < 8) scales[j] = (uint8_t)(l & 15);
            else scales[j - 8] |= (uint8_t)((l & 15) << 4);
            l >>= 4;
            scales[j % 4 + 8] |= (uint8_t)(l << (2 * (j / 4)));
        }
        store_f16(b + 108, 1 / iscale);
    } else {
        store_f16(b + 108, 0.f);
    }
    const float d = load_f16(b + 108);
    for (int j = 0; j < 16; j++) {
        int8_t s = (int8_t)(j < 8 ? scales[j] & 15 : scales[j - 8] >> 4);
        s = (int8_t)((s | (((scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
        const float dl = d * s;
        if (!dl) continue;
        for (int i = 0; i < 16; i++) L[16 * j + i] = (int8_t)(clamp_int(round_nearest(x[16 * j + i] / dl), -4, 3) + 4);
    }
    memset(hmask, 0, 32);
    int m = 0;
    uint8_t bit = 1;
    for (int j = 0; j < 256; j++) {
        if (L[j] > 3) {
            hmask[m] |= bit;
            L[j] -= 4;
        }
        if (++m == 32) {
            m = 0;
            bit <<= 1;
        }
    }
    pack_2bit((const uint8_t *)L, qs);
}

// The 6-bit scale and min of sub-block j packed into Q4_K/Q5_K's 12 bytes.
static void pack_scale_min(int j, uint8_t ls, uint8_t lm, uint8_t *s) {
    if (j < 4) {
        s[j] = ls;
        s[j + 4] = lm;
    } else {
        s[j + 4] = (uint8_t)((ls & 15) | ((lm & 15) << 4));
        s[j - 4] |= (uint8_t)((ls >> 4) << 6);
        s[j] |= (uint8_t)((lm >> 4) << 6);
    }
}

static void unpack_scale_min(int j, const uint8_t *s, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (uint8_t)((s[j + 4] & 15) | ((s[j - 4] >> 6) << 4));
        *m = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

// Q4_K (nmax 15) and Q5_K (nmax 31): d, dmin, scales[12], [qh[32],] qs[128]; eight sub-blocks of
// 32 weighted by rms + |x|.
static void block_q45_k(const float *x, uint8_t *b, int five) {
    const int nmax = five ? 31 : 15;
    uint8_t L[256], aux[32], *scales = b + 4;
    float weights[32], mins[8], sc[8];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += x[32 * j + l] * x[32 * j + l];
        const float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) weights[l] = av_x + fabsf(x[32 * j + l]);
        sc[j] = search_scale_min(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], aux, five ? -0.5f : -1.f, 0.1f,
                                 five ? 15 : 20, 0);
        if (sc[j] > max_scale) max_scale = sc[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < 8; j++) {
        uint8_t ls = (uint8_t)round_nearest(inv_scale * sc[j]), lm = (uint8_t)round_nearest(inv_min * mins[j]);
        pack_scale_min(j, ls < 63 ? ls : 63, lm < 63 ? lm : 63, scales);
    }
    store_f16(b, max_scale / 63.f);
    store_f16(b + 2, max_min / 63.f);
    const float d = load_f16(b), dmin = load_f16(b + 2);
    for (int j = 0; j < 8; j++) {
        uint8_t s, m;
        unpack_scale_min(j, scales, &s, &m);
        const float dl = d * s;
        if (!dl) continue;
        const float ml = dmin * m;
        for (int i = 0; i < 32; i++) L[32 * j + i] = (uint8_t)clamp_int(round_nearest((x[32 * j + i] + ml) / dl), 0, nmax);
    }
    if (!five) {
        uint8_t *q = b + 16;
        for (int j = 0; j < 256; j += 64, q += 32)
            for (int l = 0; l < 32; l++) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
        return;
    }
    uint8_t *qh = b + 16, *ql = b + 48;
    memset(qh, 0, 32);
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < 256; n += 64, ql += 32) {
        for (int j = 0; j < 32; j++) {
            int l1 = L[n + j], l2 = L[n + j + 32];
            if (l1 > 15) { l1 -= 16; qh[j] |= m1; }
            if (l2 > 15) { l2 -= 16; qh[j] |= m2; }
            ql[j] = (uint8_t)(l1 | (l2 << 4));
        }
        m1 <<= 2;
        m2 <<= 2;
    }
}

// Q6_K: ql[128], qh[64], scales[16] (int8), d; sixteen sub-blocks of 16.
static void block_q6_k(const float *x, uint8_t *b) {
    int8_t L[256];
    float sc[16];
    uint8_t *ql = b, *qh = b + 128;
    int8_t *scales = (int8_t *)(b + 192);
    float max_scale = 0, max_abs = 0;
    for (int j = 0; j < 16; j++) {
        sc[j] = search_symmetric(16, 32, x + 16 * j, L + 16 * j);
        if (fabsf(sc[j]) > max_abs) { max_abs = fabsf(sc[j]); max_scale = sc[j]; }
    }
    if (max_abs < 1e-15f) {
        memset(b, 0, 210);
        return;
    }
    const float iscale = -128.f / max_scale;
    store_f16(b + 208, 1 / iscale);
    for (int j = 0; j < 16; j++) {
        const int v = round_nearest(iscale * sc[j]);
        scales[j] = (int8_t)(v < 127 ? v : 127);
    }
    const float d = load_f16(b + 208);
    for (int j = 0; j < 16; j++) {
        const float dl = d * scales[j];
        if (!dl) continue;
        for (int i = 0; i < 16; i++) L[16 * j + i] = (int8_t)(clamp_int(round_nearest(x[16 * j + i] / dl), -32, 31) + 32);
    }
    for (int j = 0; j < 256; j += 128, ql += 64, qh += 32) {
        for (int l = 0; l < 32; l++) {
            const int a = L[j + l], c = L[j + l + 32], e = L[j + l + 64], g = L[j + l + 96];
            ql[l] = (uint8_t)((a & 15) | ((e & 15) << 4));
            ql[l + 32] = (uint8_t)((c & 15) | ((g & 15) << 4));
            qh[l] = (uint8_t)((a >> 4) | ((c >> 4) << 2) | ((e >> 4) << 4) | ((g >> 4) << 6));
        }
    }
}

int qd_quantize_ggml(int type, const float *src, size_t count, uint8_t *dst) {
    size_t block, bytes;
    switch (type) {
    case Q_Q5_0: block = 32; bytes = 22; break;
    case Q_Q5_1: block = 32; bytes = 24; break;
    case Q_IQ4_NL: block = 32; bytes = 18; break;
    case Q_Q2_K: block = 256; bytes = 84; break;
    case Q_Q3_K: block = 256; bytes = 110; break;
    case Q_Q4_K: block = 256; bytes = 144; break;
    case Q_Q5_K: block = 256; bytes = 176; break;
    case Q_Q6_K: block = 256; bytes = 210; break;
    default: return 0;
    }
    if (count % block) return 0;
    for (size_t i = 0; i < count / block; i++) {
        const float *x = src + i * block;
        uint8_t *b = dst + i * bytes;
        switch (type) {
        case Q_Q5_0: block_q5_0(x, b); break;
        case Q_Q5_1: block_q5_1(x, b); break;
        case Q_IQ4_NL: block_iq4_nl(x, b, 7); break;
        case Q_Q2_K: block_q2_k(x, b); break;
        case Q_Q3_K: block_q3_k(x, b); break;
        case Q_Q4_K: block_q45_k(x, b, 0); break;
        case Q_Q5_K: block_q45_k(x, b, 1); break;
        default: block_q6_k(x, b); break;
        }
    }
    return 1;
}
