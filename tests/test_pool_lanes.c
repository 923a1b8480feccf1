/*
 * lib/pool_lanes.c: idle connections in per-CPU lanes, the sweep in
 * batches, and the index of destinations with idle connections that
 * making room under the total limit uses. Through the pool's internal API
 * (tests/pool_probe.h), connections on /dev/null.
 */
#define _GNU_SOURCE /* CPU_SET, pthread_setaffinity_np, sched_getcpu */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <unistd.h>

#include "pool_impl.h"
#include "pool_probe.h"
#include "testhelp.h"

static void lanes_end(void) { TH_ASSERT_NO_POOL_LOCK(); }

TestSuite(lanes);

static void pin_to_cpu(int cpu) {
  cpu_set_t set;

  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  cr_assert_eq(pthread_setaffinity_np(pthread_self(), sizeof(set), &set), 0);
  cr_assert_eq(sched_getcpu(), cpu);
}

static struct xfer__conn *lane_open(xfer_pool *pool, const char *key) {
  struct xfer__waiter w;
  struct xfer__conn *c;
  struct xfer__list evicted;

  xfer__list_init(&evicted);
  cr_assert_eq(probe_acquire(pool, key, 1000, &w, NULL, &c, &evicted),
               XFER__ACQUIRE_OPEN);
  c = probe_open(pool, &w, key, 1000);
  cr_assert_not_null(c);
  return c;
}

/* Idle connections sit in a lane per CPU. One returned on one CPU is
 * found by a checkout on another, and the idle limit counts every lane
 * together. */
TH_TEST(lanes, idle_lanes_share_across_cpus) {
  const char *key = "http://lanes.test:80|ip=0|bind=";
  xfer_pool *pool =
      xfer_pool_new(&(xfer_pool_opts){.max_idle_per_destination = 1});
  struct xfer__conn *first, *second, *got = NULL;
  struct xfer__list evicted;
  struct xfer__waiter w;
  cpu_set_t all;

  if (sysconf(_SC_NPROCESSORS_ONLN) < 2) {
    xfer_pool_destroy(pool);
    cr_skip_test("one CPU online: one lane");
  }
  cr_assert_eq(pthread_getaffinity_np(pthread_self(), sizeof(all), &all), 0);
  xfer__list_init(&evicted);
  first = lane_open(pool, key);
  second = lane_open(pool, key);

  pin_to_cpu(0);
  xfer__pool_return(pool, first, 2000, &evicted);
  cr_assert(xfer__list_empty(&evicted), "kept idle in CPU 0's lane");
  pin_to_cpu(1);
  xfer__pool_return(pool, second, 2000, &evicted);
  cr_assert_not(xfer__list_empty(&evicted),
                "over the idle limit of 1, counted over both lanes");
  cr_assert_eq(evicted.next, &second->idle_node);
  cr_assert_eq(probe_close_evicted(pool, &evicted), 1);

  cr_assert_eq(probe_acquire(pool, key, 3000, &w, NULL, &got, &evicted),
               XFER__ACQUIRE_CONN, "CPU 1 takes what CPU 0 returned");
  cr_assert_eq(got, first);
  xfer__pool_return(pool, got, 4000, &evicted);
  cr_assert(xfer__list_empty(&evicted));
  cr_assert_eq(pthread_setaffinity_np(pthread_self(), sizeof(all), &all), 0);
  cr_assert_eq(xfer_pool_destroy(pool), XFER_OK);
}


/* Debug builds: the most list nodes one lock hold visited since the
 * last reset, and the pool locks taken (pool_impl.h). */
static void debug_counts_reset(void) {
#ifdef XFER_DEBUG
  xfer__pool_visits_peak = 0;
  xfer__pool_locks_taken = 0;
#endif
}

/* The idle sweep unlinks what expired in batches: a lane of 500 expired
 * connections is emptied in holds of at most 64 nodes each (debug builds
 * assert that in every hold; here the peak is read back). */
TH_TEST(lanes, the_sweep_unlinks_in_batches) {
  const char *key = "http://sweep.test:80|ip=0|bind=";
  xfer_pool *pool = xfer_pool_new(&(xfer_pool_opts){.idle_timeout_ms = 1000});
  struct xfer__conn *c[500];
  struct xfer__list evicted;
  xfer_pool_stats ps;
  int n = 500;

  th_raise_nofile(2000);
  pin_to_cpu(0); /* every return into one lane */
  xfer__list_init(&evicted);
  for (int i = 0; i < n; i++)
    c[i] = lane_open(pool, key);
  for (int i = 0; i < n; i++)
    xfer__pool_return(pool, c[i], MS(1), &evicted);
  cr_assert(xfer__list_empty(&evicted));
  debug_counts_reset();
  xfer__pool_sweep(pool, MS(5000), &evicted);
  cr_assert_eq(probe_close_evicted(pool, &evicted), n, "all expired");
#ifdef XFER_DEBUG
  cr_assert_leq(xfer__pool_visits_peak, XFER__POOL_VISITS_MAX);
  cr_assert_geq(xfer__pool_locks_taken, (unsigned long)n / 64,
                "one lane lock a batch");
#endif
  xfer_pool_get_stats(pool, &ps);
  cr_assert_eq(ps.closed_idle_timeout, (uint64_t)n);
  cr_assert_eq(ps.idle, 0);
  cr_assert_eq(xfer_pool_destroy(pool), XFER_OK);
}

/* At the total limit, making room finds an idle connection through the
 * index of destinations that have one: among 1,000 destinations whose
 * connections are all busy but one, it goes straight to that one. */
TH_TEST(lanes, making_room_finds_the_idle_one_without_a_walk) {
  enum { N = 1000 };
  xfer_pool *pool = xfer_pool_new(&(xfer_pool_opts){.max_total = N});
  static struct xfer__conn *c[N];
  char keys[N][48];
  struct xfer__list evicted;
  struct xfer__waiter w;
  struct xfer__conn *fresh;
  xfer_pool_stats ps;

  th_raise_nofile(3 * N);
  xfer__list_init(&evicted);
  for (int i = 0; i < N; i++) {
    snprintf(keys[i], sizeof(keys[i]), "http://d%d.test:80|ip=0|bind=", i);
    c[i] = lane_open(pool, keys[i]);
  }
  xfer__pool_return(pool, c[N / 2], 2000, &evicted); /* the one idle */
  cr_assert_eq(pool->idle_index.next, &c[N / 2]->bundle->index_node,
               "only its destination is indexed");
  debug_counts_reset();
  cr_assert_eq(probe_acquire(pool, "http://new.test:80|ip=0|bind=", 3000, &w,
                             NULL, &fresh, &evicted),
               XFER__ACQUIRE_OPEN, "room was made at once");
#ifdef XFER_DEBUG
  cr_assert_lt(xfer__pool_locks_taken, 64, "%lu locks for one acquire",
               xfer__pool_locks_taken);
#endif
  cr_assert_eq(evicted.next, &c[N / 2]->idle_node, "the idle one");
  cr_assert_eq(probe_close_evicted(pool, &evicted), 1);
  fresh = probe_open(pool, &w, "http://new.test:80|ip=0|bind=", 3000);
  xfer_pool_get_stats(pool, &ps);
  cr_assert_eq(ps.open, N);
  cr_assert_eq(ps.closed_limit, 1);
  for (int i = 0; i < N; i++)
    if (i != N / 2) {
      xfer__pool_close(pool, c[i], XFER__CLOSE_ERROR, NULL, &evicted);
    }
  xfer__pool_close(pool, fresh, XFER__CLOSE_ERROR, NULL, &evicted);
  cr_assert(xfer__list_empty(&evicted));
  cr_assert_eq(xfer_pool_destroy(pool), XFER_OK);
}

/* A destination is in the index while it has an idle connection in a
 * lane, and leaves it with its last one. */
TH_TEST(lanes, the_index_follows_the_idle_connections) {
  const char *key = "http://index.test:80|ip=0|bind=";
  xfer_pool *pool = xfer_pool_new(&(xfer_pool_opts){.max_total = 4});
  struct xfer__conn *a = lane_open(pool, key), *b = lane_open(pool, key), *c;
  struct xfer__list evicted;
  struct xfer__waiter w;

  xfer__list_init(&evicted);
  cr_assert(xfer__list_empty(&pool->idle_index));
  xfer__pool_return(pool, a, 2000, &evicted);
  cr_assert_not(xfer__list_empty(&pool->idle_index), "one idle: indexed");
  xfer__pool_return(pool, b, 2000, &evicted);
  cr_assert_eq(probe_acquire(pool, key, 3000, &w, NULL, &c, &evicted),
               XFER__ACQUIRE_CONN);
  cr_assert_not(xfer__list_empty(&pool->idle_index), "one left: indexed");
  cr_assert_eq(probe_acquire(pool, key, 3000, &w, NULL, &b, &evicted),
               XFER__ACQUIRE_CONN);
  cr_assert(xfer__list_empty(&pool->idle_index), "none left: out");
  xfer__pool_return(pool, c, 4000, &evicted);
  xfer__pool_return(pool, b, 4000, &evicted);
  cr_assert(xfer__list_empty(&evicted));
  cr_assert_eq(xfer_pool_destroy(pool), XFER_OK);
}
