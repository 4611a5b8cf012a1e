// GGUF tensor data decoded to FP32, for the FP32 reference that runs from the model file's own
// blocks a tile at a time (no second FP32 copy of the model). The values are exactly those of
// the Swift dequantizer (GGMLTypes.swift `dequantize`, ggml's definitions), which is the twin
// the tests compare both paths with, bit for bit: scale·code (+ min) as one multiply and one
// add, never fused.
#include "kernels_internal.h"

enum {
    T_F16 = 1, T_Q4_0 = 2, T_Q4_1 = 3, T_Q5_0 = 6, T_Q5_1 = 7, T_Q8_0 = 8,
    T_Q2_K = 10, T_Q3_K = 11, T_Q4_K = 12, T_Q5_K = 13, T_Q6_K = 14, T_IQ4_NL = 20, T_BF16 = 30
};

static inline uint16_t load_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

// The K-quant 6-bit scale and min of sub-block j (0..<8) from the 12 packed bytes at q.
static inline void k4_scale_min(int j, const uint8_t *q, float *sc, float *m) {
    if (j < 4) {
        *sc = (float)(q[j] & 63);
        *m = (float)(q[j + 4] & 63);
    } else {
        *sc = (float)((q[j + 4] & 15) | ((q[j - 4] >> 6) << 4));
        *m = (float)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

// MARK: - Portable paths

static void decode_c(int type, const uint8_t *src, size_t count, float *dst) {
    const size_t blocks = count / 32;
    switch (type) {
    case T_F16:
        for (size_t i = 0; i < count; i++) dst[i] = qd_f16_to_f32(load_u16(src + 2 * i));
        break;
    case T_BF16:
        for (size_t i = 0; i < count; i++) {
            const uint32_t bits = (uint32_t)load_u16(src + 2 * i) << 16;
            memcpy(dst + i, &bits, 4);
        }
        break;
    case T_Q8_0:
        for (size_t b = 0; b < blocks; b++) {
            const uint8_t *p = src + b * 34;
            const float d = qd_f16_to_f32(load_u16(p));
            for (int j = 0; j < 32; j++) dst[b * 32 + j] = (float)(int8_t)p[2 + j] * d;
        }
        break;
    case T_Q4_0:
        for (size_t b = 0; b < blocks; b++) {
            const uint8_t *p = src + b * 18;
            const float d = qd_f16_to_f32(load_u16(p));
            for (int j = 0; j < 16; j++) {
                dst[b * 32 + j] = (float)((p[2 + j] & 15) - 8) * d;
                dst[b * 32 + j + 16] = (float)((p[2 + j] >> 4) - 8) * d;
            }
        }
        break;
    case T_Q4_1:
        for (size_t b = 0; b < blocks; b++) {
            const uint8_t *p = src + b * 20;
            const float d = qd_f16_to_f32(load_u16(p)), m = qd_f16_to_f32(load_u16(p + 2));
            for (int j = 0; j < 16; j++) {
                const float lo = (float)(p[4 + j] & 15) * d;
                const float hi = (float)(p[4 + j] >> 4) * d;
                dst[b * 32 + j] = lo + m;
                dst[b * 32 + j + 16] = hi + m;
            }
        }
        break;
    case T_Q5_0:
    case T_Q5_1: {
        const int hasMin = type == T_Q5_1;
        const size_t bs = hasMin ? 24 : 22, o = hasMin ? 4 : 2;
        for (size_t b = 0; b < blocks; b++) {
            const uint8_t *p = src + b * bs;
            const float d = qd_f16_to_f32(load_u16(p)), m = hasMin ? qd_f16_to_f32(load_u16(p + 2)) : 0;
            uint32_t qh;
            memcpy(&qh, p + o, 4);
            for (int j = 0; j < 16; j++) {
                const int x0 = (p[o + 4 + j] & 15) | (int)(((qh >> j) << 4) & 0x10);
                const int x1 = (p[o + 4 + j] >> 4) | (int)((qh >> (j + 12)) & 0x10);
                if (hasMin) {
                    const float a = (float)x0 * d, c = (float)x1 * d;
                    dst[b * 32 + j] = a + m;
                    dst[b * 32 + j + 16] = c + m;
                } else {
                    dst[b * 32 + j] = (float)(x0 - 16) * d;
                    dst[b * 32 + j + 16] = (float)(x1 - 16) * d;
                }
            }
        }
        break;
    }
    case T_IQ4_NL:
        for (size_t b = 0; b < blocks; b++) {
            const uint8_t *p = src + b * 18;
            const float d = qd_f16_to_f32(load_u16(p));
            for (int j = 0; j < 16; j++) {
                dst[b * 32 + j] = d * (float)qd_iq4nl_values[p[2 + j] & 15];
                dst[b * 32 + j + 16] = d * (float)qd_iq4nl_values[p[2 + j] >> 4];
            }
        }
        break;
    case T_Q2_K:
        for (size_t b = 0; b < count / 256; b++) {
            const uint8_t *p = src + b * 84, *sc = p, *q = p + 16;
            float *y = dst + b * 256;
            const float d = qd_f16_to_f32(load_u16(p + 80)), dmin = qd_f16_to_f32(load_u16(p + 82));
            for (int half = 0; half < 2; half++, q += 32)
                for (int shift = 0; shift < 8; shift += 2)
                    for (int part = 0; part < 2; part++, sc++) {
                        const float dl = d * (float)(*sc & 15), ml = dmin * (float)(*sc >> 4);
                        for (int l = 0; l < 16; l++) {
                            const float t = dl * (float)((q[l + 16 * part] >> shift) & 3);
                            *y++ = t - ml;
                        }
                    }
        }
        break;
    case T_Q3_K:
        for (size_t b = 0; b < count / 256; b++) {
            const uint8_t *p = src + b * 110, *hm = p, *q = p + 32, *s = p + 96;
            float *y = dst + b * 256;
            const float d = qd_f16_to_f32(load_u16(p + 108));
            int j = 0;
            uint8_t m = 1;
            for (int half = 0; half < 2; half++, q += 32)
                for (int shift = 0; shift < 8; shift += 2, m <<= 1)
                    for (int part = 0; part < 2; part++, j++) {
                        const int low = j < 8 ? s[j] & 15 : s[j - 8] >> 4, high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
                        const float dl = d * (float)((low | (high << 4)) - 32);
                        for (int l = 0; l < 16; l++) {
                            const int i = l + 16 * part;
                            *y++ = dl * (float)(((q[i] >> shift) & 3) - ((hm[i] & m) ? 0 : 4));
                        }
                    }
        }
        break;
    case T_Q4_K:
    case T_Q5_K: {
        const int five = type == T_Q5_K;
        const size_t bs = five ? 176 : 144;
        for (size_t b = 0; b < count / 256; b++) {
            const uint8_t *p = src + b * bs, *qh = p + 16, *ql = p + (five ? 48 : 16);
            float *y = dst + b * 256;
            const float d = qd_f16_to_f32(load_u16(p)), dmin = qd_f16_to_f32(load_u16(p + 2));
            uint8_t u1 = 1, u2 = 2;
            for (int sub = 0; sub < 8; sub += 2) {
                float sc1, m1, sc2, m2;
                k4_scale_min(sub, p + 4, &sc1, &m1);
                k4_scale_min(sub + 1, p + 4, &sc2, &m2);
                const float d1 = d * sc1, mm1 = dmin * m1, d2 = d * sc2, mm2 = dmin * m2;
                for (int l = 0; l < 32; l++) {
                    const int h = five && (qh[l] & u1) ? 16 : 0;
                    const float t = d1 * (float)((ql[l] & 15) + h);
                    y[l] = t - mm1;
                }
                for (int l = 0; l < 32; l++) {
                    const int h = five && (qh[l] & u2) ? 16 : 0;
                    const float t = d2 * (float)((ql[l] >> 4) + h);
                    y[32 + l] = t - mm2;
                }
                y += 64; ql += 32;
                u1 <<= 2; u2 <<= 2;
            }
        }
        break;
    }
    case T_Q6_K:
        for (size_t b = 0; b < count / 256; b++) {
            const uint8_t *p = src + b * 210, *ql = p, *qh = p + 128;
            const int8_t *sc = (const int8_t *)(p + 192);
            float *y = dst + b * 256;
            const float d = qd_f16_to_f32(load_u16(p + 208));
            for (int half = 0; half < 2; half++) {
                for (int l = 0; l < 32; l++) {
                    const int i = l / 16, h = qh[l];
                    const int q1 = ((ql[l] & 15) | ((h & 3) << 4)) - 32;
                    const int q2 = ((ql[l + 32] & 15) | (((h >> 2) & 3) << 4)) - 32;
                    const int q3 = ((ql[l] >> 4) | (((h >> 4) & 3) << 4)) - 32;
                    const int q4 = ((ql[l + 32] >> 4) | (((h >> 6) & 3) << 4)) - 32;
                    const float s1 = d * (float)sc[i], s2 = d * (float)sc[i + 2], s3 = d * (float)sc[i + 4], s4 = d * (float)sc[i + 6];
                    y[l] = s1 * (float)q1;
                    y[l + 32] = s2 * (float)q2;
                    y[l + 64] = s3 * (float)q3;
                    y[l + 96] = s4 * (float)q4;
                }
                y += 128; ql += 64; qh += 32; sc += 8;
            }
        }
        break;
    }
}

// MARK: - AVX2 paths

ATTR_AVX2 static inline float half_f16c(const uint8_t *p) { return _cvtsh_ss(load_u16(p)); }

// dst[0..<8] = (float)codes[0..<8] · d (+ m): a multiply, then an add.
ATTR_AVX2 static inline void store_scaled(__m256i codes, __m256 d, const __m256 *m, float *dst) {
    __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(codes), d);
    if (m) v = _mm256_add_ps(v, *m);
    _mm256_storeu_ps(dst, v);
}

// dst[0..<32] from 32 signed byte codes: `first` holds elements 0..<16, `second` 16..<32.
ATTR_AVX2 static inline void store_32_scaled(__m128i first, __m128i second, __m256 d, const __m256 *m, float *dst) {
    store_scaled(_mm256_cvtepi8_epi32(first), d, m, dst);
    store_scaled(_mm256_cvtepi8_epi32(_mm_srli_si128(first, 8)), d, m, dst + 8);
    store_scaled(_mm256_cvtepi8_epi32(second), d, m, dst + 16);
    store_scaled(_mm256_cvtepi8_epi32(_mm_srli_si128(second, 8)), d, m, dst + 24);
}

// Bytes fetched ahead of the block being decoded. The FP32 reference's decode steps stream every
// Q4_1/Q8_0 tile from memory, and the loads stalled: a third of the decode's samples sat on the
// first use of a block's codes. (fp32 bench, one sequence, this look-ahead alone: ~82 → ~100 tok/s.)
#define DECODE_AHEAD 512
ATTR_AVX2 static void decode_avx2(int type, const uint8_t *src, size_t count, float *dst) {
    const size_t blocks = count / 32;
    switch (type) {
    case T_F16: {
        size_t i = 0;
        for (; i + 8 <= count; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + 2 * i))));
        for (; i < count; i++) dst[i] = qd_f16_to_f32(load_u16(src + 2 * i));
        break;
    }
    case T_BF16: {
        size_t i = 0;
        for (; i + 8 <= count; i += 8) {
            const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + 2 * i)));
            _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
        }
        decode_c(T_BF16, src + 2 * i, count - i, dst + i);
        break;
    }
    case T_Q8_0:
        for (size_t b = 0; b < blocks; b++) {
            const uint8_t *p = src + b * 34;
            _mm_prefetch((const char *)p + DECODE_AHEAD, _MM_HINT_T0);
            const __m256 d = _mm256_set1_ps(half_f16c(p));
            for (int k = 0; k < 4; k++) {
                const __m256i c = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p + 2 + 8 * k)));
                store_scaled(c, d, NULL, dst + b * 32 + 8 * k);
            }
        }
        break;
    case T_Q4_0: {
        const __m128i low = _mm_set1_epi8(15), eight = _mm_set1_epi8(8);
        for (size_t b = 0; b < blocks; b++) {
            const uint8_t *p = src + b * 18;
            const __m256 d = _mm256_set1_ps(half_f16c(p));
            const __m128i q = _mm_loadu_si128((const __m128i *)(p + 2));
            const __m128i lo = _mm_sub_epi8(_mm_and_si128(q, low), eight);
            const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), low), eight);
            store_32_scaled(lo, hi, d, NULL, dst + b * 32);
        }
        break;
    }
    case T_Q4_1: {
        // d·q is exact (d has 11 significant bits, q 4), so fma(q, d, m) rounds once exactly as the
        // multiply-then-add of the scalar path does: one instruction less per 8 weights, and d and m
        // converted together (FP32 reference decode steps decode every weight tile: 0.058 → 0.047
        // ns per weight in a microbenchmark, the same bits).
        const __m128i low = _mm_set1_epi8(15);
        for (size_t b = 0; b < blocks; b++) {
            const uint8_t *p = src + b * 20;
            _mm_prefetch((const char *)p + DECODE_AHEAD, _MM_HINT_T0);
            uint32_t dm;
            memcpy(&dm, p, 4);
            const __m128 f = _mm_cvtph_ps(_mm_cvtsi32_si128((int)dm));
            const __m256 d = _mm256_broadcastss_ps(f), m = _mm256_broadcastss_ps(_mm_movehdup_ps(f));
            const __m128i q = _mm_loadu_si128((const __m128i *)(p + 4));
            const __m128i lo = _mm_and_si128(q, low), hi = _mm_and_si128(_mm_srli_epi16(q, 4), low);
            float *o = dst + b * 32;
            _mm256_storeu_ps(o, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), d, m));
            _mm256_storeu_ps(o + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))), d, m));
            _mm256_storeu_ps(o + 16, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), d, m));
            _mm256_storeu_ps(o + 24, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))), d, m));
        }
        break;
    }
    case T_Q5_0: {
        // High bits: byte j of the 32 gets bit j of qh, moved to 0x10.
        const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                                2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
        const __m256i bit = _mm256_set1_epi64x(0x8040201008040201LL);
        const __m256i x10 = _mm256_set1_epi8(0x10), low = _mm256_set1_epi8(15), sixteen = _mm256_set1_epi8(16);
        for (size_t b = 0; b < blocks; b++) {
            const uint8_t *p = src + b * 22;
            const __m256 d = _mm256_set1_ps(half_f16c(p));
            uint32_t qh;
            memcpy(&qh, p + 2, 4);
            __m256i h = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), spread);
            h = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(h, bit), bit), x10);
            const __m128i q = _mm_loadu_si128((const __m128i *)(p + 6));
            // Bytes 0..15: low nibbles (elements 0..15), 16..31: high nibbles (elements 16..31).
            __m256i x = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), low);
            x = _mm256_sub_epi8(_mm256_or_si256(x, h), sixteen);
            store_32_scaled(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1), d, NULL, dst + b * 32);
        }
        break;
    }
    case T_IQ4_NL: {
        // The 16 table values looked up by nibble with one byte shuffle.
        const __m128i table = _mm_loadu_si128((const __m128i *)qd_iq4nl_values), low = _mm_set1_epi8(15);
        for (size_t b = 0; b < blocks; b++) {
            const uint8_t *p = src + b * 18;
            const __m256 d = _mm256_set1_ps(half_f16c(p));
            const __m128i q = _mm_loadu_si128((const __m128i *)(p + 2));
            const __m128i lo = _mm_shuffle_epi8(table, _mm_and_si128(q, low));
            const __m128i hi = _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(q, 4), low));
            store_32_scaled(lo, hi, d, NULL, dst + b * 32);
        }
        break;
    }
    case T_Q4_K:
        for (size_t b = 0; b < count / 256; b++) {
            const uint8_t *p = src + b * 144, *ql = p + 16;
            float *y = dst + b * 256;
            const float d = half_f16c(p), dmin = half_f16c(p + 2);
            const __m128i low = _mm_set1_epi8(15);
            for (int sub = 0; sub < 8; sub += 2) {
                float sc1, m1, sc2, m2;
                k4_scale_min(sub, p + 4, &sc1, &m1);
                k4_scale_min(sub + 1, p + 4, &sc2, &m2);
                const __m256 d1 = _mm256_set1_ps(d * sc1), mm1 = _mm256_set1_ps(dmin * m1);
                const __m256 d2 = _mm256_set1_ps(d * sc2), mm2 = _mm256_set1_ps(dmin * m2);
                for (int k = 0; k < 2; k++) {
                    const __m128i q = _mm_loadu_si128((const __m128i *)(ql + 16 * k));
                    const __m128i lo = _mm_and_si128(q, low), hi = _mm_and_si128(_mm_srli_epi16(q, 4), low);
                    for (int e = 0; e < 2; e++) {
                        const __m128i l8 = e ? _mm_srli_si128(lo, 8) : lo, h8 = e ? _mm_srli_si128(hi, 8) : hi;
                        __m256 a = _mm256_mul_ps(d1, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(l8)));
                        a = _mm256_sub_ps(a, mm1);
                        _mm256_storeu_ps(y + 16 * k + 8 * e, a);
                        __m256 c = _mm256_mul_ps(d2, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(h8)));
                        c = _mm256_sub_ps(c, mm2);
                        _mm256_storeu_ps(y + 32 + 16 * k + 8 * e, c);
                    }
                }
                y += 64; ql += 32;
            }
        }
        break;
    case T_Q6_K:
        for (size_t b = 0; b < count / 256; b++) {
            const uint8_t *p = src + b * 210, *ql = p, *qh = p + 128;
            const int8_t *sc = (const int8_t *)(p + 192);
            float *y = dst + b * 256;
            const float d = half_f16c(p + 208);
            const __m256i low = _mm256_set1_epi32(15), three = _mm256_set1_epi32(3), k32 = _mm256_set1_epi32(32);
            for (int half = 0; half < 2; half++) {
                for (int l = 0; l < 32; l += 8) {
                    const int i = l / 16;
                    const __m256i a = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(ql + l)));
                    const __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(ql + l + 32)));
                    const __m256i h = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(qh + l)));
                    const __m256i q1 = _mm256_sub_epi32(_mm256_or_si256(_mm256_and_si256(a, low),
                        _mm256_slli_epi32(_mm256_and_si256(h, three), 4)), k32);
                    const __m256i q2 = _mm256_sub_epi32(_mm256_or_si256(_mm256_and_si256(c, low),
                        _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h, 2), three), 4)), k32);
                    const __m256i q3 = _mm256_sub_epi32(_mm256_or_si256(_mm256_srli_epi32(a, 4),
                        _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h, 4), three), 4)), k32);
                    const __m256i q4 = _mm256_sub_epi32(_mm256_or_si256(_mm256_srli_epi32(c, 4),
                        _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h, 6), three), 4)), k32);
                    store_scaled(q1, _mm256_set1_ps(d * (float)sc[i]), NULL, y + l);
                    store_scaled(q2, _mm256_set1_ps(d * (float)sc[i + 2]), NULL, y + l + 32);
                    store_scaled(q3, _mm256_set1_ps(d * (float)sc[i + 4]), NULL, y + l + 64);
                    store_scaled(q4, _mm256_set1_ps(d * (float)sc[i + 6]), NULL, y + l + 96);
                }
                y += 128; ql += 64; qh += 32; sc += 8;
            }
        }
        break;
    default:
        decode_c(type, src, count, dst);
        break;
    }
}

int qd_decode_ggml(int type, const uint8_t *src, size_t count, float *dst) {
    switch (type) {
    case T_F16: case T_BF16: break;
    case T_Q8_0: case T_Q4_0: case T_Q4_1: case T_Q5_0: case T_Q5_1: case T_IQ4_NL:
        if (count % 32) return 0;
        break;
    case T_Q2_K: case T_Q3_K: case T_Q4_K: case T_Q5_K: case T_Q6_K:
        if (count % 256) return 0;
        break;
    default: return 0;
    }
    if (qd_has_avx2()) decode_avx2(type, src, count, dst); else decode_c(type, src, count, dst);
    return 1;
}
