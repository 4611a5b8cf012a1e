#ifndef QUANTDRIFT_CKERNELS_H
#define QUANTDRIFT_CKERNELS_H
#include <stddef.h>
#include <stdint.h>

// Quantized matrix-vector products. A weight row of `in` elements is split into groups of
// `group` elements (a multiple of 32, or the whole row); element i of row o decodes to
//   w = scales[o*ng + g] * code + (mins ? mins[o*ng + g] : 0),   g = i / group, ng = ceil(in / group).
// 8-bit codes are int8, row-major (out, in). 4-bit codes are unsigned 0..15, packed per block of
// 32 elements into 16 bytes (byte j: element j in the low nibble, element j+16 in the high one);
// a row takes ceil(in/32)*16 bytes and a partial last block is zero padded.
// Activations are FP32, or int8 codes in [-127, 127] with one scale per activation group of
// `xgroup` elements (one of `group` and `xgroup` divides the other, both multiples of 32 or the
// whole row) and the code sum of every 32-element block.
// The AVX2 paths are chosen at run time when the CPU has AVX2+FMA; the portable C paths compute
// the same sums in the same order (exactly equal integer sums).

/// Whether the AVX2+FMA paths are in use on the calling thread: the CPU has AVX2+FMA, the
/// environment does not set QUANTDRIFT_PORTABLE_KERNELS=1, and qd_set_portable_kernels(1) was not
/// called on this thread. Every kernel here (and the F16C conversions) dispatches on it per call.
int qd_has_avx2(void);
/// Sends the calling thread's kernel calls down the portable C paths (on != 0) or back to the
/// default; returns the previous setting. Thread-local, so tests can run both paths while other
/// threads keep theirs.
int qd_set_portable_kernels(int on);

void qd_gemv_i8_f32(const int8_t *codes, const float *scales, const float *mins, int group,
                    int out, int in, const float *x, float *y);
void qd_gemv_u4_f32(const uint8_t *packed, const float *scales, const float *mins, int group,
                    int out, int in, const float *x, float *y);
// 4-bit codes with a fixed offset instead of mins: w = scales[o*ng + g] * (code + offset), e.g.
// offset -8 for symmetric int4 (whose mins are -8·scale); the mins are then not read.
void qd_gemv_u4_f32_offset(const uint8_t *packed, const float *scales, float offset, int group,
                           int out, int in, const float *x, float *y);
// FP32 weights w (out, in) × `rows` activation rows x (leading dimension ldx): y[r·ldy + o] =
// Σ_k w[o·in + k]·x[r·ldx + k], or y += that with `accumulate`. A batched decode step's product:
// each output's arithmetic is fixed (one 8-lane FMA chain, a fixed lane sum, an fmaf tail), so a
// row's result does not depend on the other rows or on how outputs are divided among cores.
void qd_gemm_f32_rows(const float *w, int out, int in, const float *x, int rows, int ldx, float *y, int ldy,
                      int accumulate);
// qd_gemm_f32_rows with binary16 weights, converted exactly as they are read: the same bits as
// qd_gemm_f32_rows on the converted weights.
void qd_gemm_f16_rows(const uint16_t *w, int out, int in, const float *x, int rows, int ldx, float *y, int ldy,
                      int accumulate);
// qd_gemm_f32_rows (accumulate off) on `out` rows of GGUF data of ggml type `type` (`rowBytes` bytes
// a row, as qd_decode_ggml reads them), decoded a few rows at a time into `tile` (`tileFloats`
// floats, at least `in`): the same bits as decoding all rows first. Returns 0 before writing
// anything when qd_decode_ggml does not take the type.
int qd_gemm_ggml_rows(int type, const uint8_t *src, size_t rowBytes, int out, int in, const float *x, int rows, int ldx,
                      float *y, int ldy, float *tile, size_t tileFloats);
// qd_gemv_i8_f32, qd_gemv_u4_f32 and qd_gemv_u4_f32_offset for `rows` activation rows x (rows, in) at once, y (rows, ldy): each
// pair of weight row and activation row gets the one-row kernel's arithmetic, so a row's result
// is the bits of that row decoded alone (a batched decode step); the weights are read once per call.
// `offset` as in qd_gemv_u4_f32_offset when mins is NULL (0: no min term).
void qd_gemm_i8_f32_rows(const int8_t *codes, const float *scales, const float *mins, int group, int out, int in,
                         const float *x, int rows, float *y, int ldy);
void qd_gemm_u4_f32_rows(const uint8_t *packed, const float *scales, const float *mins, float offset, int group,
                         int out, int in, const float *x, int rows, float *y, int ldy);
// GGUF tensor data of ggml type `type` (F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K…Q6_K;
// `count` a multiple of the block size) decoded to FP32 exactly as ggml's dequantize_row_* defines it. Returns 0, writing
// nothing, for any other type (the caller falls back to the Swift dequantizer). Count 0 decodes
// nothing and asks whether the type is taken.
int qd_decode_ggml(int type, const uint8_t *src, size_t count, float *dst);
// `count` FP32 values quantized into ggml blocks of type `type` (Q5_0, Q5_1, IQ4_NL, Q2_K…Q6_K;
// `count` a multiple of the block size) exactly as llama-quantize does without an importance
// matrix. Returns 0, writing nothing, for any other type or count.
int qd_quantize_ggml(int type, const float *src, size_t count, uint8_t *dst);
// IQ4_NL blocks as ggml's quantize_row_iq4_nl_ref writes them (what llama.cpp stores in an
// iq4_nl KV cache): the first least-squares scale, no scale search. Returns 0 unless count % 32 == 0.
int qd_quantize_iq4_nl_row_ref(const float *src, size_t count, uint8_t *dst);
// IQ4_NL's 16 values (scaled by the block's fp16 scale).
extern const int8_t qd_iq4nl_values[16];
// Decodes `rows` rows to FP32 (rows, in): scale·code + min, exactly as the products read them.
void qd_decode_i8(const int8_t *codes, const float *scales, const float *mins, int group, int rows, int in,
                  float *out);
void qd_decode_u4(const uint8_t *packed, const float *scales, const float *mins, int group, int rows, int in,
                  float *out);
// Integer activations for `rows` rows: xq (rows, in), xscales (rows, ceil(in/xgroup)),
// xsum32 (rows, ceil(in/32)); y (rows, out). Each weight row is used for every activation row
// while it is in cache, so a prefill streams the weights once.
void qd_gemm_i8_i8(const int8_t *codes, const float *scales, const float *mins, int group,
                   int out, int in, int rows, const int8_t *xq, const float *xscales, const int32_t *xsum32,
                   int xgroup, float *y);
void qd_gemm_u4_i8(const uint8_t *packed, const float *scales, const float *mins, int group,
                   int out, int in, int rows, const int8_t *xq, const float *xscales, const int32_t *xsum32,
                   int xgroup, float *y);

// One quantized KV-cache entry of n elements decoded to FP32: out[c] = scales[g]·levels[code c]
// (+ mins[g]), multiply then add, g = c / group (token axis) or c (group 0: one scale per element,
// the channel axis). Codes: 8 bits per byte, or 4 / 2 bits packed from the low bits of each byte
// (element c in byte c·bits/8 at bit (c mod (8/bits))·bits). `levels` holds 1 << bits floats;
// `identity` promises levels[u] == u, so the AVX2 path converts codes instead of looking them up.
void qd_kv_decode(const uint8_t *codes, int bits, const float *levels, int identity, const float *scales,
                  const float *mins, int group, int n, float *out);

// Activation quantization: max |x| over n floats (NaN ignored); codes q = x·inv rounded half away
// from zero, clamped to [-127, 127], NaN coded 0; code sums per 32-element block.
float qd_absmax_f32(const float *x, int n);
void qd_quantize_i8(const float *x, int n, float inv, int8_t *q);
void qd_block_sums_i8(const int8_t *q, int n, int32_t *sums);

// Packed panels for integer activations (in a multiple of 32; spans min(group, xgroup) multiples of
// 32 or the whole row): 8 output rows interleaved per 4 elements, out rounded up to a multiple of 8
// with zero rows; scales/mins: ceil(out/8)*8*ng floats in the same panel order.
// int8 codes: ceil(out/8)*8*in bytes, 32 per quad (byte 4j+e: output j, element 4q+e).
// 4-bit codes stay 4-bit: ceil(out/8)*8*in/2 bytes, 32 per octet of elements (byte 4j+e: output j,
// element 8q+e in the low nibble and 8q+4+e in the high one); the product adds `offset` to each
// code (e.g. -8 for symmetric int4, whose mins then drop out), so the values are those of the
// int8 panels with the offset folded in.
void qd_pack_panels_i8(const int8_t *codes, int out, int in, int8_t *packed);
void qd_pack_panels_u4(const uint8_t *nibbles, int out, int in, uint8_t *packed);
void qd_pack_panels_f32(const float *values, int out, int ng, float *packed);
// y (rows, out) = Σ_span (scale·sx)·Σ code·xq + min·sx·Σ xq, as qd_gemm_i8_i8 but on packed panels,
// for the output panels p0 ..< p1 (outputs 8·p0 ..< min(8·p1, out)); other columns of y are not
// written, so two threads can each take a range and get the same values as one call.
void qd_gemm_panels_i8(const int8_t *packed, const float *pscales, const float *pmins, int group, int out, int in,
                       int rows, const int8_t *xq, const float *xscales, const int32_t *xsum32, int xgroup, float *y,
                       int p0, int p1);
// The same on 4-bit panels, each code taken as code + offset: the same bits as qd_gemm_panels_i8 on
// the int8 panels of those values. With a nonzero offset xsum32 is read (offset·Σx per span).
void qd_gemm_panels_u4(const uint8_t *packed, int offset, const float *pscales, const float *pmins, int group, int out,
                       int in, int rows, const int8_t *xq, const float *xscales, const int32_t *xsum32, int xgroup,
                       float *y, int p0, int p1);

// A persistent worker pool (pool.c): qd_pool_run calls fn(ctx, part, parts) for part 0 ..< parts,
// part 0 on the calling thread and the others on spinning workers (at most one per extra core),
// and returns when all are done. A caller that finds the pool busy runs every part itself.
// Workers use the caller's kernel path (qd_set_portable_kernels).
typedef void (*qd_pool_fn)(void *ctx, int part, int parts);
void qd_pool_run(qd_pool_fn fn, void *ctx, int parts);
/// Threads the pool can use: 1 + its workers (the online cores, at most 8).
int qd_pool_size(void);

/// Reads `bytes` from `p` in one prefetched forward stream (bench's memory bandwidth) and returns
/// the sum of its whole 32-bit words, modulo 2³², so the reads cannot be optimised away.
uint32_t qd_stream_sum(const uint8_t *p, size_t bytes);

/// Integer dot products over `n` elements (exact), used by tests to check the integer paths.
int32_t qd_dot_i8_i8(const int8_t *a, const int8_t *b, int n);
int32_t qd_dot_u4_i8(const uint8_t *packed, const int8_t *b, int n);

// Binary16 conversions for reference traces.
#include "qd_half.h"
// Float64 exponentials for the divergence metrics.
#include "qd_divergence.h"

// expf of n floats: the same bits as glibc's expf on FMA machines (see expf.c), 8 at a time.
void qd_expf(const float *x, int n, float *y);
// gate[i] = gate[i] / (1 + expf(-gate[i])) * up[i] (SwiGLU), the same values as that scalar loop.
void qd_silu_mul(float *gate, const float *up, int n);
// gate[i] = gelu_tanh(gate[i]) * up[i] (GeGLU), in float with tanhf.
void qd_gelu_tanh_mul(float *gate, const float *up, int n);
// One causal softmax row in place: max, exp(x - max), a left-to-right float sum, scale; the
// entries from `visible` to `keys` set to 0. The same values as that scalar loop.
void qd_softmax_row(float *row, int visible, int keys);
// `rows` such rows, `ld` apart, each with the values qd_softmax_row gives it (the rows' sums run
// side by side).
void qd_softmax_rows(float *s, int rows, int ld, int visible, int keys);
// A chunk's causal rows (rows × keys, keys first0… of the cache): row r sees keys up to its own,
// pos0 + r, and within `window` (0: no window) of it; the others become 0. Each row gets the
// values qd_softmax_row gives its visible span (four rows' sums run side by side).
void qd_softmax_causal(float *s, int rows, int keys, int pos0, int first0, int window);

// One decode step's attention for `heads` query heads sharing a KV head (head width hd, a
// multiple of 16; else nothing is done and 0 returned): the same bits as OpenBLAS 0.3.21's
// single-thread cblas_sgemv on this machine kind (see attention.c), reading each row once.
// Scores: s[h·lds + j] = scale · K_j·q_h for keys j < keys (K rows ldk apart, q: heads × hd).
int qd_attention_scores(const float *k, int ldk, int keys, int hd, const float *q, int heads, float scale, float *s,
                        int lds);
// Values: out[h·hd + e] = Σ_j p[h·lds + j] · V_je (V rows ldv apart); out is overwritten, or with
// `accumulate` the sum continues from it. Keys may come in runs: a run of whole blocks of 8 keys
// (scores: of 4), then the next run accumulated, gives the bits of one call over all of them.
int qd_attention_values(const float *v, int ldv, int keys, int hd, const float *p, int lds, int heads, float *out,
                        int accumulate);

#endif
