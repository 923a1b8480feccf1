/*
 * lib/pool_table.c: the RCU table of destinations. A destination nobody
 * uses is removed by the sweep; a checkout that meets it while the sweep
 * is between marking it dead and deleting it deletes it itself instead of
 * looking it up again and again. Through the pool's internal API
 * (tests/pool_probe.h) and its test hooks, with a second thread.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <semaphore.h>
#include <string.h>
#include <time.h>

#include "pool_impl.h"
#include "pool_probe.h"
#include "testhelp.h"

#define KEY "http://swept.test:80|ip=0|bind="
#define OTHER "http://other.test:80|ip=0|bind="

static xfer_pool *pool;
static sem_t sweeper_held, acquirer_done;
static atomic_int dead_met;
static atomic_bool released;

static void table_end(void) {
  xfer__pool_hook = NULL;
  TH_ASSERT_NO_POOL_LOCK();
}

TestSuite(table);

/* Waits for s, at most 5 s: a test that would hang fails instead. */
static bool wait_sem(sem_t *s) {
  struct timespec until;

  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 5;
  return sem_timedwait(s, &until) == 0;
}

static void hook(enum xfer__pool_hook_point point, const void *arg) {
  if (point == XFER__HOOK_SWEEP_MARKED_DEAD && strcmp(arg, KEY) == 0) {
    /* The sweeper stops inside the window until the checkout is done
     * (or gave up: a checkout that spins would never be). */
    sem_post(&sweeper_held);
    wait_sem(&acquirer_done);
  } else if (point == XFER__HOOK_DEAD_BUNDLE_MET) {
    /* A checkout that looked the dead one up again and again would spin
     * until the sweep deletes it: let it, after many rounds, so the test
     * ends and fails rather than hangs. */
    if (atomic_fetch_add(&dead_met, 1) == 1000 &&
        !atomic_exchange(&released, true))
      sem_post(&acquirer_done);
  }
}

/* The sweeper: a checkout of another destination, late enough to sweep. */
static void *sweeper(void *arg) {
  struct xfer__waiter w;
  struct xfer__conn *c;
  struct xfer__list evicted;

  (void)arg;
  xfer__list_init(&evicted);
  if (probe_acquire(pool, OTHER, MS(200000), &w, NULL, &c, &evicted) ==
      XFER__ACQUIRE_OPEN) {
    c = probe_open(pool, &w, OTHER, MS(200000));
    xfer__pool_close(pool, c, XFER__CLOSE_ERROR, NULL, &evicted);
  }
  return NULL;
}

TH_TEST(table, a_checkout_deletes_a_dead_destination_itself) {
  struct xfer__waiter w;
  struct xfer__conn *c;
  struct xfer__list evicted;
  xfer_pool_stats ps;
  pthread_t t;

  pool = xfer_pool_new(NULL);
  sem_init(&sweeper_held, 0, 0);
  sem_init(&acquirer_done, 0, 0);
  atomic_store(&dead_met, 0);
  atomic_store(&released, false);
  xfer__list_init(&evicted);
  /* KEY's destination exists, with nothing left in it. */
  cr_assert_eq(probe_acquire(pool, KEY, MS(1000), &w, NULL, &c, &evicted),
               XFER__ACQUIRE_OPEN);
  c = probe_open(pool, &w, KEY, MS(1000));
  xfer__pool_close(pool, c, XFER__CLOSE_ERROR, NULL, &evicted);

  xfer__pool_hook = hook;
  pthread_create(&t, NULL, sweeper, NULL);
  cr_assert(wait_sem(&sweeper_held), "the sweep reached the window");
  /* The same `now` as the sweeper's: no second sweep. */
  cr_assert_eq(probe_acquire(pool, KEY, MS(200000), &w, NULL, &c, &evicted),
               XFER__ACQUIRE_OPEN, "a new destination, at once");
  if (!atomic_exchange(&released, true))
    sem_post(&acquirer_done);
  pthread_join(t, NULL);
  xfer__pool_hook = NULL;
  cr_assert_eq(atomic_load(&dead_met), 1,
               "met the dead one once (%d times: a spin)",
               atomic_load(&dead_met));
  c = probe_open(pool, &w, KEY, MS(200000));
  xfer__pool_return(pool, c, MS(200000), &evicted);
  cr_assert(xfer__list_empty(&evicted));
  xfer_pool_get_stats(pool, &ps);
  cr_assert_eq(ps.destinations, 2, "the new one and the sweeper's");
  cr_assert_eq(xfer_pool_destroy(pool), XFER_OK); /* waits for call_rcu */
  sem_destroy(&sweeper_held);
  sem_destroy(&acquirer_done);
}

/* The sweep forgets a destination nobody uses and keeps one in use. */
TH_TEST(table, the_sweep_forgets_only_unused_destinations) {
  struct xfer__waiter w;
  struct xfer__conn *kept, *gone;
  struct xfer__list evicted;
  xfer_pool_stats ps;

  pool = xfer_pool_new(NULL);
  xfer__list_init(&evicted);
  cr_assert_eq(probe_acquire(pool, KEY, MS(1000), &w, NULL, &gone, &evicted),
               XFER__ACQUIRE_OPEN);
  gone = probe_open(pool, &w, KEY, MS(1000));
  cr_assert_eq(probe_acquire(pool, OTHER, MS(1000), &w, NULL, &kept, &evicted),
               XFER__ACQUIRE_OPEN);
  kept = probe_open(pool, &w, OTHER, MS(1000));
  xfer__pool_close(pool, gone, XFER__CLOSE_PEER, NULL, &evicted);
  xfer_pool_get_stats(pool, &ps);
  cr_assert_eq(ps.destinations, 2);
  xfer__pool_sweep(pool, MS(200000), &evicted);
  xfer_pool_get_stats(pool, &ps);
  cr_assert_eq(ps.destinations, 1, "the one with a busy connection stays");
  xfer__pool_return(pool, kept, MS(200000), &evicted);
  cr_assert(xfer__list_empty(&evicted));
  cr_assert_eq(xfer_pool_destroy(pool), XFER_OK);
}
