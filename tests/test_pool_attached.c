/*
 * lib/pool_attached.c: the pool's side of attached connections, driven
 * through the pool's internal API (tests/pool_probe.h), one thread, with
 * connections on /dev/null: kept attached (counted idle), not kept while
 * someone waits, asked for by a waiter, not taken back once promised,
 * released to the oldest waiter, and one too old closed with its slots
 * passed on. tests/test_attached.c runs the same through whole multis.
 */
#include <criterion/criterion.h>
#include <string.h>
#include <unistd.h>

#include "cfilter.h"
#include "pool_impl.h"
#include "pool_probe.h"
#include "testhelp.h"

#define KEY "http://a.test:80|ip=0|bind="

static xfer_pool *pool;
static struct xfer__wake *owner_wake, *waiter_wake;
static struct xfer__pool_tally tally;
static struct xfer__list evicted;

static void start(xfer_pool_opts opts) {
  pool = xfer_pool_new(&opts);
  owner_wake = xfer__wake_new();
  waiter_wake = xfer__wake_new();
  cr_assert(pool && owner_wake && waiter_wake);
  memset(&tally, 0, sizeof(tally));
  xfer__pool_attach(pool, &tally);
  xfer__list_init(&evicted);
}

static void pool_attached_end(void) {
  cr_assert_eq(probe_close_evicted(pool, &evicted), 0,
               "every test closes what it evicted");
  xfer__pool_detach(pool, &tally);
  cr_assert_eq(xfer_pool_destroy(pool), XFER_OK);
  xfer__wake_unref(owner_wake);
  xfer__wake_unref(waiter_wake);
  TH_ASSERT_NO_POOL_LOCK();
}

TestSuite(pool_attached);

/* A busy connection for KEY, opened with the slots a checkout gave. */
static struct xfer__conn *busy(xfer__time now) {
  struct xfer__waiter w;
  struct xfer__conn *c;

  cr_assert_eq(probe_acquire(pool, KEY, now, &w, owner_wake, &c, &evicted),
               XFER__ACQUIRE_OPEN);
  c = probe_open(pool, &w, KEY, now);
  cr_assert_not_null(c);
  return c;
}

static uint64_t woken(struct xfer__wake *w) {
  uint64_t n = 0;

  if (read(w->fd, &n, sizeof(n)) != (ssize_t)sizeof(n))
    return 0;
  return n;
}

static xfer_pool_stats stats(void) {
  xfer_pool_stats ps;

  cr_assert_eq(xfer_pool_get_stats(pool, &ps), XFER_OK);
  return ps;
}

TH_TEST(pool_attached, kept_attached_it_counts_as_idle_and_comes_back) {
  struct xfer__conn *c;

  start((xfer_pool_opts){0});
  c = busy(MS(1000));
  cr_assert(xfer__pool_keep_attached(pool, c, owner_wake, &tally, MS(1010)));
  cr_assert_eq(stats().attached, 1);
  cr_assert_eq(stats().idle, 1, "attached counts as idle");
  cr_assert_eq(stats().busy, 0);
  cr_assert(xfer__pool_take_attached(pool, c, &tally, XFER__TAKE_REUSE));
  cr_assert_eq(stats().attached, 0);
  cr_assert_eq(stats().reused_total, 1, "taken back: a reuse");
  xfer__pool_close(pool, c, XFER__CLOSE_ERROR, NULL, &evicted);
}

/* Someone waits for the destination: the connection goes to them, not
 * onto the attached list. Attaching off, or too old: not kept either. */
TH_TEST(pool_attached, not_kept_while_someone_waits_or_when_too_old) {
  struct xfer__waiter w;
  struct xfer__conn *c, *got;

  start((xfer_pool_opts){.max_per_destination = 1, .max_lifetime_ms = 100});
  c = busy(MS(1000));
  cr_assert_eq(probe_acquire(pool, KEY, MS(1001), &w, waiter_wake, &got,
                             &evicted),
               XFER__ACQUIRE_WAIT, "at the destination's limit");
  cr_assert_not(xfer__pool_keep_attached(pool, c, owner_wake, &tally,
                                         MS(1010)));
  xfer__pool_give_back(pool, c, MS(1010), &evicted);
  cr_assert_eq(woken(waiter_wake), 1);
  cr_assert_eq(probe_take(pool, &w, MS(1011), &got, &evicted),
               XFER__ACQUIRE_CONN);
  cr_assert_eq(got, c);
  cr_assert_not(xfer__pool_keep_attached(pool, c, owner_wake, &tally,
                                         MS(1200)),
                "past max_lifetime_ms");
  xfer__pool_close(pool, c, XFER__CLOSE_ERROR, NULL, &evicted);
  xfer__pool_detach(pool, &tally);
  cr_assert_eq(xfer_pool_destroy(pool), XFER_OK);
  pool = xfer_pool_new(&(xfer_pool_opts){.attach_hold_ms = -1});
  xfer__pool_attach(pool, &tally);
  c = busy(MS(1000));
  cr_assert_not(xfer__pool_keep_attached(pool, c, owner_wake, &tally,
                                         MS(1010)),
                "attaching off");
  xfer__pool_close(pool, c, XFER__CLOSE_ERROR, NULL, &evicted);
}

/* A waiter that finds no shared idle connection asks for the attached
 * one: its owner is woken, may no longer take it back for reuse, and its
 * release goes to that waiter, counted as released on demand. */
TH_TEST(pool_attached, asked_for_it_goes_to_the_waiter) {
  struct xfer__waiter w;
  struct xfer__conn *c, *got;

  start((xfer_pool_opts){0});
  c = busy(MS(1000));
  cr_assert(xfer__pool_keep_attached(pool, c, owner_wake, &tally, MS(1010)));
  cr_assert_eq(probe_acquire(pool, KEY, MS(1011), &w, waiter_wake, &got,
                             &evicted),
               XFER__ACQUIRE_WAIT, "it waits for the release it asked");
  cr_assert_eq(woken(owner_wake), 1, "the owner was asked");
  cr_assert(atomic_load(&c->release_requested));
  cr_assert_not(xfer__pool_take_attached(pool, c, &tally, XFER__TAKE_REUSE),
                "promised: not taken back");
  xfer__pool_release_attached(pool, c, &tally, true, MS(1012), &evicted);
  cr_assert_eq(woken(waiter_wake), 1);
  cr_assert_eq(probe_take(pool, &w, MS(1013), &got, &evicted),
               XFER__ACQUIRE_CONN);
  cr_assert_eq(got, c, "the same connection, no new one");
  cr_assert_eq(stats().released_on_demand, 1);
  cr_assert_eq(stats().opened_total, 1);
  cr_assert_eq(stats().attached, 0);
  xfer__pool_close(pool, c, XFER__CLOSE_ERROR, NULL, &evicted);
}

/* Released too old while its slot stays held (its close has not ended)
 * and another connection is attached: the waiter that asked for the old
 * one asks for that one, as at its checkout, and gets it; it waited for
 * the next hold's end (fuzz_pool found it: a queued waiter, an attached
 * connection nobody asked for). */
TH_TEST(pool_attached, too_old_at_its_release_the_waiter_asks_for_another) {
  struct xfer__wake *other_wake = xfer__wake_new();
  struct xfer__waiter w;
  struct xfer__conn *old, *young, *got;

  cr_assert_not_null(other_wake);
  start((xfer_pool_opts){.max_per_destination = 2, .max_lifetime_ms = 200});
  old = busy(MS(1000));
  young = busy(MS(1150));
  cr_assert(xfer__pool_keep_attached(pool, old, owner_wake, &tally, MS(1160)));
  cr_assert(
      xfer__pool_keep_attached(pool, young, other_wake, &tally, MS(1160)));
  cr_assert_eq(probe_acquire(pool, KEY, MS(1161), &w, waiter_wake, &got,
                             &evicted),
               XFER__ACQUIRE_WAIT);
  cr_assert_eq(woken(owner_wake), 1, "the oldest is asked for");
  xfer__pool_release_attached(pool, old, &tally, true, MS(1250), &evicted);
  cr_assert_eq(stats().closed_lifetime, 1);
  cr_assert_eq(woken(waiter_wake), 0, "no slot is free yet");
  cr_assert_eq(woken(other_wake), 1, "the other one is asked for");
  cr_assert(atomic_load(&young->release_requested));
  cr_assert_eq(probe_close_evicted(pool, &evicted), 1);
  xfer__pool_release_attached(pool, young, &tally, true, MS(1251), &evicted);
  cr_assert_eq(woken(waiter_wake), 1);
  cr_assert_eq(probe_take(pool, &w, MS(1252), &got, &evicted),
               XFER__ACQUIRE_CONN);
  cr_assert_eq(got, young);
  cr_assert_eq(stats().opened_total, 2);
  xfer__pool_close(pool, got, XFER__CLOSE_ERROR, NULL, &evicted);
  xfer__wake_unref(other_wake);
}

/* Released too old (past max_lifetime_ms): closed, not handed over; its
 * slots pass to the waiter that asked, which opens its own. */
TH_TEST(pool_attached, too_old_at_its_release_it_closes_and_passes_its_slots) {
  struct xfer__waiter w;
  struct xfer__conn *c, *got;

  start((xfer_pool_opts){.max_per_destination = 1, .max_lifetime_ms = 100});
  c = busy(MS(1000));
  cr_assert(xfer__pool_keep_attached(pool, c, owner_wake, &tally, MS(1010)));
  cr_assert_eq(probe_acquire(pool, KEY, MS(1011), &w, waiter_wake, &got,
                             &evicted),
               XFER__ACQUIRE_WAIT);
  xfer__pool_release_attached(pool, c, &tally, true, MS(1200), &evicted);
  cr_assert_eq(stats().closed_lifetime, 1);
  cr_assert_eq(probe_close_evicted(pool, &evicted), 1, "it closes");
  cr_assert_eq(woken(waiter_wake), 1);
  cr_assert_eq(probe_take(pool, &w, MS(1201), &got, &evicted),
               XFER__ACQUIRE_OPEN, "its slots, for a connection of its own");
  got = probe_open(pool, &w, KEY, MS(1201));
  cr_assert_not_null(got);
  xfer__pool_close(pool, got, XFER__CLOSE_ERROR, NULL, &evicted);
}
