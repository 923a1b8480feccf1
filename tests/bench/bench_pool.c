/*
 * Pool contention: T threads hammer checkout and return through the
 * pool's internal API (no sockets, no event loop: only the pool), in a
 * build of the library with XFER_LOCK_STATS, which keeps a histogram of
 * pool lock hold times (every lock of the pool) in TSC ticks. Prints one
 * JSON object: hold time percentiles and maximum in ns and the trylock
 * failure rate.
 *
 * By default every thread uses one destination. With -d, each round picks
 * one of DESTS destinations at random; with -T the pool has a total limit,
 * so most checkouts close an idle connection of another destination to
 * make room (the index of destinations with idle connections), and some
 * wait for one.
 *
 *   bench_pool [-t THREADS] [-n ROUNDS_PER_THREAD] [-d DESTS] [-T TOTAL]
 */
#include "common.h"

#include <poll.h>
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
static long ndests = 1;
static char (*keys)[48];
static atomic_long waits, closed_for_room;

/* One checkout of key, waiting (through w's wake-up) when it must. */
static struct xfer__conn *checkout(const char *key, xfer__time now,
                                   struct xfer__wake *wake,
                                   struct xfer__list *evicted) {
  struct xfer__waiter w;
  struct xfer__conn *c;
  struct pollfd pfd = {.fd = wake->fd, .events = POLLIN};
  enum xfer__acquire got = probe_acquire(pool, key, now, &w, wake, &c,
                                         evicted);
  uint64_t n;

  if (got == XFER__ACQUIRE_WAIT)
    atomic_fetch_add(&waits, 1);
  while (got == XFER__ACQUIRE_WAIT) {
    if (poll(&pfd, 1, 5000) != 1 || read(wake->fd, &n, sizeof(n)) < 0) {
      fprintf(stderr, "bench_pool: a waiter was not served in 5 s\n");
      exit(1);
    }
    got = probe_take(pool, &w, now, &c, evicted);
  }
  switch (got) {
  case XFER__ACQUIRE_CONN:
    return c;
  case XFER__ACQUIRE_OPEN:
    if ((c = probe_open(pool, &w, key, now)))
      return c;
    break;
  default:
    break;
  }
  fprintf(stderr, "bench_pool: unexpected acquire result %d\n", got);
  exit(1);
}

static void *hammer(void *arg) {
  /* One time base for every thread: a connection another thread used a
   * moment ago must look fresh here too (no liveness check, which would
   * add syscalls and reconnects the pool lock has nothing to do with). */
  xfer__time now = (xfer__time)1000000000;
  uint64_t rng = 0x9e3779b97f4a7c15ull * (uint64_t)((intptr_t)arg + 1);
  struct xfer__wake *wake = xfer__wake_new();

  if (!wake)
    exit(1);
  for (long i = 0; i < rounds; i++) {
    struct xfer__conn *c;
    struct xfer__list evicted;
    long d = 0;

    if (ndests > 1) { /* xorshift64 */
      rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
      d = (long)(rng % (uint64_t)ndests);
    }
    xfer__list_init(&evicted);
    now += 1000; /* 1 us a round: rounds * 1 us stays under the 1 s recheck */
    c = checkout(keys[d], now, wake, &evicted);
    xfer__pool_return(pool, c, now, &evicted);
    atomic_fetch_add(&closed_for_room, probe_close_evicted(pool, &evicted));
    if (ndests == 1 && atomic_load(&closed_for_room)) {
      fprintf(stderr, "bench_pool: a connection was evicted\n");
      exit(1);
    }
  }
  xfer__wake_unref(wake);
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
  unsigned max_total = 0;
  pthread_t t[64];
  unsigned long total = 0, seen = 0, acq;
  double p50 = 0, p99 = 0, max = 0, scale = ns_per_tick();
  xfer_pool_stats ps;

  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-t") && i + 1 < argc)
      threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-n") && i + 1 < argc)
      rounds = atol(argv[++i]);
    else if (!strcmp(argv[i], "-d") && i + 1 < argc)
      ndests = atol(argv[++i]);
    else if (!strcmp(argv[i], "-T") && i + 1 < argc)
      max_total = (unsigned)atol(argv[++i]);
  }
  if (threads < 1 || threads > 64 || rounds < 1 || ndests < 1 ||
      ndests > 10000000 || (max_total && max_total < (unsigned)threads)) {
    fprintf(stderr, "usage: bench_pool [-t 1..64] [-n rounds] [-d dests] "
                    "[-T total >= threads]\n");
    return 2;
  }
  keys = malloc((size_t)ndests * sizeof(*keys));
  if (!keys)
    return 1;
  for (long d = 0; d < ndests; d++)
    snprintf(keys[d], sizeof(keys[d]), "http://10.%ld.%ld.%ld:80|ip=0|bind=",
             d >> 16 & 255, d >> 8 & 255, d & 255);
  pool = xfer_pool_new(&(xfer_pool_opts){.max_total = max_total,
                                         .attach_hold_ms = -1});
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
  printf("{\"threads\":%d,\"rounds\":%ld,\"destinations\":%ld,"
         "\"max_total\":%u,\"lock_acquisitions\":%lu,"
         "\"trylock_failures\":%llu,\"trylock_failure_rate\":%.6f,"
         "\"hold_ns_p50\":%.1f,\"hold_ns_p99\":%.1f,\"hold_ns_max\":%.1f,"
         "\"connections\":%llu,\"closed_for_room\":%ld,\"waited\":%ld}\n",
         threads, rounds, ndests, max_total, acq,
         (unsigned long long)ps.lock_contention,
         acq ? (double)ps.lock_contention / (double)acq : 0.0, p50, p99, max,
         (unsigned long long)ps.opened_total, atomic_load(&closed_for_room),
         atomic_load(&waits));
  xfer_pool_destroy(pool);
  free(keys);
  return 0;
}
