// A persistent pool of worker threads for splitting one product across cores without starting
// a thread (or a DispatchQueue fork-join, 20-70 µs under load) per call. A decode step issues a
// few hundred products of 20-100 µs back to back, so workers spin for a while after each job and
// only then sleep on a condition variable; an idle process does not burn a core.
//
// One job at a time: a caller that finds the pool busy (another thread's product) runs all parts
// itself. Callers split work so that every output is computed the same way whoever computes it,
// so results never depend on which thread ran which part.
#include "kernels_internal.h"
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#define MAX_WORKERS 7
// Spins (each a pause, ~10-30 ns) before a worker sleeps: ~1 ms, longer than the gaps between
// the products of a decode step.
#define SPINS 50000

static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_mutex_t busy = PTHREAD_MUTEX_INITIALIZER;   // held by the caller of a job
static pthread_mutex_t sleep_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static int worker_count;
static atomic_uint generation;   // bumped once per job
static atomic_int pending;       // workers yet to finish the current job
static qd_pool_fn job_fn;
static void *job_ctx;
static int job_parts;
static int job_portable;

static void *worker(void *arg) {
    const int index = (int)(intptr_t)arg;   // runs part index + 1
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&generation, memory_order_acquire)) == seen) {
            if (++spins < SPINS) {
                _mm_pause();
                continue;
            }
            pthread_mutex_lock(&sleep_lock);
            while (atomic_load_explicit(&generation, memory_order_acquire) == seen) pthread_cond_wait(&wake, &sleep_lock);
            pthread_mutex_unlock(&sleep_lock);
            spins = 0;
        }
        seen = g;
        if (index + 1 < job_parts) {
            qd_set_portable_kernels(job_portable);  // the caller's kernel path
            job_fn(job_ctx, index + 1, job_parts);
        }
        atomic_fetch_sub_explicit(&pending, 1, memory_order_release);
    }
    return NULL;
}

static void start_workers(void) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int n = cores > 1 ? (int)(cores - 1) : 0;
    if (n > MAX_WORKERS) n = MAX_WORKERS;
    int started = 0;
    for (int i = 0; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker, (void *)(intptr_t)i) != 0) break;
        pthread_detach(t);
        started++;
    }
    worker_count = started;
}

int qd_pool_size(void) {
    pthread_once(&once, start_workers);
    return worker_count + 1;
}

void qd_pool_run(qd_pool_fn fn, void *ctx, int parts) {
    if (parts > 1) pthread_once(&once, start_workers);
    if (parts > worker_count + 1) parts = worker_count + 1;
    if (parts <= 1 || pthread_mutex_trylock(&busy) != 0) {
        for (int p = 0; p < (parts < 1 ? 1 : parts); p++) fn(ctx, p, parts < 1 ? 1 : parts);
        return;
    }
    const int portable = qd_set_portable_kernels(0);
    qd_set_portable_kernels(portable);
    job_fn = fn;
    job_ctx = ctx;
    job_parts = parts;
    job_portable = portable;
    atomic_store_explicit(&pending, worker_count, memory_order_relaxed);
    pthread_mutex_lock(&sleep_lock);
    atomic_fetch_add_explicit(&generation, 1, memory_order_release);
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&sleep_lock);
    fn(ctx, 0, parts);
    while (atomic_load_explicit(&pending, memory_order_acquire) > 0) _mm_pause();
    pthread_mutex_unlock(&busy);
}
