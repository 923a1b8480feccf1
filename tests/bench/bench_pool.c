/*
 * Pool contention: T threads hammer checkout and return of one
 * destination through the pool's internal API (no sockets, no event
 * loop: only the pool), in a build of the library with XFER_LOCK_STATS,
 * which keeps a histogram of bundle lock hold times in TSC ticks. Prints
 * one JSON object: hold time percentiles in ns and the trylock failure
 * rate.
 *
 *   bench_pool [-t THREADS] [-n ROUNDS_PER_THREAD]
 */
#include "common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <x86intrin.h>

#include "../pool_probe.h"

#define BUCKETS 320
extern atomic_ulong xfer__lock_hold_hist[BUCKETS];
extern atomic_ulong xfer__lock_acquisitions;

static xfer_pool *pool;
static long rounds = 200000;
static const char key[] = "http://127.0.0.1:80|ip=0|bind=";

static void *hammer(void *arg) {
  /* One time base for every thread: a connection another thread used a
   * moment ago must look fresh here too (no liveness check, which would
   * add syscalls and reconnects the pool lock has nothing to do with). */
  xfer__time now = (xfer__time)1000000000;

  (void)arg;
  for (long i = 0; i < rounds; i++) {
    struct xfer__waiter w;
    struct xfer__conn *c;
    struct xfer__list evicted;

    xfer__list_init(&evicted);
    now += 1000; /* 1 us a round: rounds * 1 us stays under the 1 s recheck */
    switch (probe_acquire(pool, key, now, &w, NULL, &c, &evicted)) {
    case XFER__ACQUIRE_CONN:
      break;
    case XFER__ACQUIRE_OPEN:
      if ((c = probe_open(pool, &w, key, now)))
        break;
      /* fall through */
    default:
      fprintf(stderr, "bench_pool: unexpected acquire result\n");
      exit(1);
    }
    xfer__pool_return(pool, c, now, &evicted);
    if (!xfer__list_empty(&evicted)) {
      fprintf(stderr, "bench_pool: a connection was evicted\n");
      exit(1);
    }
  }
  return NULL;
}

static double ns_per_tick(void) {
  struct timespec a, b, pause = {0, 100000000};
  uint64_t t0, t1;

  clock_gettime(CLOCK_MONOTONIC, &a);
  t0 = __rdtsc();
  nanosleep(&pause, NULL);
  t1 = __rdtsc();
  clock_gettime(CLOCK_MONOTONIC, &b);
  return ((double)(b.tv_sec - a.tv_sec) * 1e9 +
          (double)(b.tv_nsec - a.tv_nsec)) /
         (double)(t1 - t0);
}

/* The upper edge of a bucket, in ticks. */
static double bucket_top(int i) {
  return i < 256 ? (double)(i + 1) * 16 : (double)(2ull << (i - 256));
}

int main(int argc, char **argv) {
  int threads = 4;
  pthread_t t[64];
  unsigned long total = 0, seen = 0, acq;
  double p50 = 0, p99 = 0, max = 0, scale = ns_per_tick();
  xfer_pool_stats ps;

  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-t") && i + 1 < argc)
      threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-n") && i + 1 < argc)
      rounds = atol(argv[++i]);
  }
  if (threads < 1 || threads > 64 || rounds < 1) {
    fprintf(stderr, "usage: bench_pool [-t 1..64] [-n rounds]\n");
    return 2;
  }
  pool = xfer_pool_new(NULL);
  for (int i = 0; i < threads; i++)
    pthread_create(&t[i], NULL, hammer, (void *)(intptr_t)i);
  for (int i = 0; i < threads; i++)
    pthread_join(t[i], NULL);
  xfer_pool_get_stats(pool, &ps);
  acq = atomic_load(&xfer__lock_acquisitions);
  for (int i = 0; i < BUCKETS; i++)
    total += atomic_load(&xfer__lock_hold_hist[i]);
  for (int i = 0; i < BUCKETS; i++) {
    unsigned long n = atomic_load(&xfer__lock_hold_hist[i]);
    if (!n)
      continue;
    seen += n;
    if (!p50 && seen * 2 >= total)
      p50 = bucket_top(i) * scale;
    if (!p99 && seen * 100 >= total * 99)
      p99 = bucket_top(i) * scale;
    max = bucket_top(i) * scale;
  }
  printf("{\"threads\":%d,\"rounds\":%ld,\"lock_acquisitions\":%lu,"
         "\"trylock_failures\":%llu,\"trylock_failure_rate\":%.6f,"
         "\"hold_ns_p50\":%.1f,\"hold_ns_p99\":%.1f,\"hold_ns_max\":%.1f,"
         "\"connections\":%llu}\n",
         threads, rounds, acq, (unsigned long long)ps.lock_contention,
         acq ? (double)ps.lock_contention / (double)acq : 0.0, p50, p99, max,
         (unsigned long long)ps.opened_total);
  xfer_pool_destroy(pool);
  return 0;
}
