// Weight rows decoded to FP32 (the multi-row path of FP32 activations: decoded tiles, then sgemm;
// a tied embedding), exactly as the products read them: scale·code + min.
#include "kernels_internal.h"

void qd_decode_i8(const int8_t *codes, const float *scales, const float *mins, int group, int rows, int in,
                  float *out) {
    const int ng = groups_of(in, group);
    for (int r = 0; r < rows; r++) {
        const int8_t *w = codes + (size_t)r * in;
        float *o = out + (size_t)r * in;
        for (int g = 0; g < ng; g++) {
            const int lo = g * group, hi = lo + group < in ? lo + group : in;
            const float s = scales[(size_t)r * ng + g], m = mins ? mins[(size_t)r * ng + g] : 0;
            for (int i = lo; i < hi; i++) o[i] = s * (float)w[i] + m;
        }
    }
}

void qd_decode_u4(const uint8_t *packed, const float *scales, const float *mins, int group, int rows, int in,
                  float *out) {
    const int ng = groups_of(in, group);
    const size_t rowBytes = u4_row_bytes(in);
    float codes[32];
    for (int r = 0; r < rows; r++) {
        const uint8_t *w = packed + (size_t)r * rowBytes;
        float *o = out + (size_t)r * in;
        for (int b = 0; b * 32 < in; b++) {
            for (int j = 0; j < 16; j++) {
                codes[j] = (float)(w[b * 16 + j] & 15);
                codes[j + 16] = (float)(w[b * 16 + j] >> 4);
            }
            const int n = in - b * 32 < 32 ? in - b * 32 : 32;
            for (int j = 0; j < n; j++) {
                const int i = b * 32 + j, g = i / group;
                o[i] = scales[(size_t)r * ng + g] * codes[j] + (mins ? mins[(size_t)r * ng + g] : 0);
            }
        }
    }
}
