// Helpers shared by the kernel files (not part of the public module: it sits outside include/).
//
// Files, one per kernel family (ckernels.h documents the public functions):
//   dispatch.c      which path runs: the CPU check, QUANTDRIFT_PORTABLE_KERNELS, the per-thread switch
//   gemv_f32act.c   int8 / int4 weights × FP32 activations (decode)
//   gemm_f32rows.c  FP32 weights × a few FP32 rows (batched decode), each row independent of the others
//   gemm_intact.c   int8 / int4 weights × int8 activations, one weight row at a time; integer dots
//   panels.c        int8 activations on weights repacked into 8-row panels (prefill)
//   actquant.c      activation quantization: absmax, codes, 32-block sums
//   decode.c        weight rows decoded to FP32
//   kv_decode.c     quantized KV-cache entries decoded to FP32 (attention reads)
//   attention.c     a decode step's attention per KV group, in OpenBLAS sgemv's arithmetic
//   ggml_decode.c   GGUF tensor data (F16 … Q6_K) decoded to FP32 (FP32 reference tiles)
//   pool.c          persistent worker threads that split one product across cores
//   stream.c        the prefetched read loop bench measures memory bandwidth with
//   expf.c, divergence.c, half.c  exponentials and binary16 conversions
//
// Each family (decode.c aside, which is plain C) has portable C functions (`*_c`) and AVX2+FMA
// twins (`*_avx2`) compiled with a target attribute, so the package needs no compiler flags; its
// public functions pick one with qd_has_avx2() on every call.
//
// Floating-point note for anyone editing: clang fuses `a * b + c` written in one expression into
// an FMA only inside AVX2-attributed functions (and in plain helpers inlined into them). Moving
// such an expression into another function, or changing whether a plain helper is inlined into
// an AVX2 function, can change results in the last bit. The run outputs are checked bit for bit
// before and after any change here.
#ifndef QUANTDRIFT_KERNELS_INTERNAL_H
#define QUANTDRIFT_KERNELS_INTERNAL_H
#include "ckernels.h"
#include <immintrin.h>
#include <stddef.h>
#include <string.h>

#define ATTR_AVX2 __attribute__((target("avx2,fma,f16c")))
// For helpers that replace macro bodies: always inlined, so the code is the same as the macro's.
#define ALWAYS_INLINE __attribute__((always_inline))

// MARK: - Shapes and codes

static inline int groups_of(int in, int group) { return (in + group - 1) / group; }
static inline int min_int(int a, int b) { return a < b ? a : b; }

// Bytes of one row of packed 4-bit codes: 16 per block of 32 elements.
static inline size_t u4_row_bytes(int in) { return (size_t)((in + 31) / 32) * 16; }

// Element i of a row of packed 4-bit codes.
static inline int u4_code(const uint8_t *row, int i) {
    const uint8_t b = row[(i >> 5) * 16 + (i & 15)];
    return (i & 16) ? (b >> 4) : (b & 15);
}

// MARK: - Tiles of decoded weight rows (batched products)

// Weight rows per chunk whose first `width` values as FP32 fill about 32 KB (the tile stays in L1
// while every activation row passes over it): `multiple` rows at least and a multiple of it.
static inline int tile_rows(int width, int multiple) {
    int n = 8192 / (width > 0 ? width : 1) / multiple * multiple;
    return n < multiple ? multiple : n;
}

// `bytes` bytes from p start on their way to L2 (the next chunk's codes, while the current chunk
// multiplies: the hardware prefetcher stops while the product runs).
static inline void prefetch_l2(const void *p, size_t bytes) {
    for (size_t b = 0; b < bytes; b += 64) _mm_prefetch((const char *)p + b, _MM_HINT_T1);
}

// MARK: - AVX2 helpers

ATTR_AVX2 static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

ATTR_AVX2 static inline int32_t hsum256i(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

// Σ a·b over 32 int8 pairs as 8 int32 lanes (a signed, |b| ≤ 127).
ATTR_AVX2 static inline __m256i dot32_i8(__m256i a, __m256i b) {
    const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

// The 32 4-bit codes of a packed block as 32 unsigned bytes in element order.
ATTR_AVX2 static inline __m256i unpack_u4(const uint8_t *p) {
    const __m128i b = _mm_loadu_si128((const __m128i *)p);
    const __m128i lo = _mm_and_si128(b, _mm_set1_epi8(15));
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(15));
    return _mm256_set_m128i(hi, lo);
}

// Σ code·x over one packed block of 32 4-bit codes (unsigned 0..15) and 32 int8 activations, as
// 8 int32 lanes.
ALWAYS_INLINE ATTR_AVX2 static inline __m256i dot32_u4_i8(const uint8_t *block, const int8_t *x) {
    const __m256i p16 = _mm256_maddubs_epi16(unpack_u4(block), _mm256_loadu_si256((const __m256i *)x));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

#endif
