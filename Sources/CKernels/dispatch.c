// Which path the kernels take: AVX2+FMA when the CPU has it, unless QUANTDRIFT_PORTABLE_KERNELS=1
// (to compare the paths on real runs).
#include "kernels_internal.h"
#include <stdlib.h>

static int cpu_has_avx2 = -1;

int qd_has_avx2(void) {
    if (cpu_has_avx2 < 0) {
        __builtin_cpu_init();
        // QUANTDRIFT_PORTABLE_KERNELS=1 forces the portable paths (to compare them on real runs).
        const char *portable = getenv("QUANTDRIFT_PORTABLE_KERNELS");
        cpu_has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                       !(portable && portable[0] == '1');
    }
    return cpu_has_avx2;
}
