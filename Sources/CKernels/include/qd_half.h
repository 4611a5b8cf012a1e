#ifndef QUANTDRIFT_QD_HALF_H
#define QUANTDRIFT_QD_HALF_H
#include <stddef.h>
#include <stdint.h>

// IEEE binary16 conversions for reference traces. Rounding is to nearest, ties to even; the
// F16C path (vcvtps2ph/vcvtph2ps, chosen at run time) and the portable path give the same bits
// for every finite value and infinity.
uint16_t qd_f32_to_f16(float x);
float qd_f16_to_f32(uint16_t h);
// x rounded to binary16 and back (Float(Float16(x))): ggml's fp16 block scales. One F16C
// instruction pair instead of the two library calls Swift's conversions make on x86-64.
float qd_round_f16(float x);

// Converts n floats to binary16 stored "byte-split": the low byte of value i at lo[i], the high
// byte at hi[i]. Grouping the sign/exponent bytes apart compresses ~10% better with zstd.
void qd_f32_to_f16_split(const float *src, size_t n, uint8_t *lo, uint8_t *hi);
// The inverse of qd_f32_to_f16_split.
void qd_f16_split_to_f32(const uint8_t *lo, const uint8_t *hi, size_t n, float *dst);

#endif
