// Which path the kernels take: AVX2+FMA when the CPU has it, unless QUANTDRIFT_PORTABLE_KERNELS=1
// (the whole process, to compare the paths on real runs) or qd_set_portable_kernels(1) on the
// calling thread.
//
// The switch is thread-local rather than global because Swift Testing runs suites in parallel:
// a global flag flipped by the kernel tests would send whatever other test runs at that moment
// down the portable path. A thread-local flag set around a synchronous test body only affects
// the calls that body makes on its own thread (a product split over two threads with
// DispatchQueue.concurrentPerform would run its other half on the default path).
#include "kernels_internal.h"
#include <stdlib.h>

static int cpu_has_avx2 = -1;          // AVX2+FMA present and not disabled by the environment
static _Thread_local int portable_here; // qd_set_portable_kernels on this thread

static int avx2_available(void) {
    int v = __atomic_load_n(&cpu_has_avx2, __ATOMIC_RELAXED);
    if (v < 0) {
        __builtin_cpu_init();
        const char *portable = getenv("QUANTDRIFT_PORTABLE_KERNELS");
        v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && !(portable && portable[0] == '1');
        __atomic_store_n(&cpu_has_avx2, v, __ATOMIC_RELAXED);
    }
    return v;
}

int qd_has_avx2(void) { return !portable_here && avx2_available(); }

int qd_set_portable_kernels(int on) {
    const int previous = portable_here;
    portable_here = on != 0;
    return previous;
}
