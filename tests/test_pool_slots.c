/*
 * lib/pool_slots.c: who owns each slot, and where a freed one goes.
 * Driven through the pool's internal API (tests/pool_probe.h), one thread,
 * with connections on /dev/null: no sockets, no multi.
 */
#include <criterion/criterion.h>
#include <string.h>
#include <unistd.h>

#include "cfilter.h"
#include "pool_impl.h"
#include "pool_probe.h"
#include "testhelp.h"

#define KEY_A "http://a.test:80|ip=0|bind="
#define KEY_B "http://b.test:80|ip=0|bind="
#define KEY_C "http://c.test:80|ip=0|bind="
/* When a grant is taken: close to the returns of these tests (a handed
 * over connection idle past the recheck interval would be checked, and
 * one on /dev/null fails a check). */
#define NOW_TAKE 5000

static xfer_pool *pool;
static struct xfer__wake *wake;
static struct xfer__list evicted;

static void slots_end(void) {
  cr_assert_eq(probe_close_evicted(pool, &evicted), 0,
               "every test closes what it evicted");
  cr_assert_eq(xfer_pool_destroy(pool), XFER_OK);
  xfer__wake_unref(wake);
  TH_ASSERT_NO_POOL_LOCK();
}

static void start(xfer_pool_opts opts) {
  pool = xfer_pool_new(&opts);
  wake = xfer__wake_new();
  cr_assert(pool && wake);
  xfer__list_init(&evicted);
}

/* A busy connection for key, opened with the slots a checkout gave. */
static struct xfer__conn *busy(const char *key, xfer__time now) {
  struct xfer__waiter w;
  struct xfer__conn *c;

  cr_assert_eq(probe_acquire(pool, key, now, &w, wake, &c, &evicted),
               XFER__ACQUIRE_OPEN, "%s gets slots", key);
  c = probe_open(pool, &w, key, now);
  cr_assert_not_null(c);
  return c;
}

/* w waits for key. */
static void waits(struct xfer__waiter *w, const char *key, xfer__time now,
                  bool fresh_only) {
  struct xfer__conn *c;

  cr_assert_eq(probe_acquire_as(pool, key, now, fresh_only, w, wake, &c,
                                &evicted),
               XFER__ACQUIRE_WAIT, "%s waits", key);
}

/* Total slots held, as the pool counts them. */
static long total_held(void) { return atomic_load(&pool->total); }

static void drain_wake(void) {
  uint64_t n;

  while (read(wake->fd, &n, sizeof(n)) > 0)
    ;
}

TestSuite(slots);

/* Defect of the first pool: a waiter that gave up its place held its
 * destination's slot while it waited for room; cancelled, that slot was
 * dropped, and the next waiter of the destination waited forever. */
TH_TEST(slots, a_cancelled_waiter_for_room_passes_its_slot_on) {
  struct xfer__waiter b1, b2;
  struct xfer__conn *a, *c;
  xfer_pool_stats ps;

  start((xfer_pool_opts){.max_per_destination = 1, .max_total = 1});
  a = busy(KEY_A, 1000);
  waits(&b1, KEY_B, 2000, false); /* B's slot, waiting for room */
  cr_assert_eq(b1.state, XFER__WAIT_ROOM);
  waits(&b2, KEY_B, 2000, false); /* B is at its limit: queued */
  cr_assert_eq(b2.state, XFER__WAIT_QUEUED);

  xfer__pool_cancel(pool, &b1, 3000, &evicted);
  cr_assert_eq(b2.state, XFER__WAIT_ROOM, "B's slot went to the next of B");
  cr_assert_not(atomic_load(&b2.granted), "the pool is still full");

  xfer__pool_close(pool, a, XFER__CLOSE_ERROR, NULL, &evicted);
  cr_assert(atomic_load(&b2.granted), "A's room went to B's waiter");
  cr_assert_eq(probe_take(pool, &b2, NOW_TAKE, &c, &evicted), XFER__ACQUIRE_OPEN);
  c = probe_open(pool, &b2, KEY_B, 4000);
  cr_assert_not_null(c);
  xfer_pool_get_stats(pool, &ps);
  cr_assert_eq(ps.waiting, 0);
  cr_assert_eq(total_held(), 1);
  xfer__pool_return(pool, c, 5000, &evicted);
}

/* The same through a queued waiter of a destination at its limit: its
 * place goes, and the slot a closing connection frees goes to the next
 * in line. */
TH_TEST(slots, a_cancelled_queued_waiter_leaves_the_slot_to_the_next) {
  struct xfer__waiter w1, w2;
  struct xfer__conn *a, *c;

  start((xfer_pool_opts){.max_per_destination = 1});
  a = busy(KEY_A, 1000);
  waits(&w1, KEY_A, 2000, false);
  waits(&w2, KEY_A, 2000, false);
  xfer__pool_cancel(pool, &w1, 3000, &evicted);
  xfer__pool_close(pool, a, XFER__CLOSE_PEER, NULL, &evicted);
  cr_assert_not(atomic_load(&w1.granted));
  cr_assert_eq(probe_take(pool, &w2, NOW_TAKE, &c, &evicted), XFER__ACQUIRE_OPEN);
  c = probe_open(pool, &w2, KEY_A, 4000);
  xfer__pool_return(pool, c, 5000, &evicted);
}

/* A filter on top of a closing connection's socket: what its waiter had
 * been given when the close reached the stack. */
static const struct xfer__waiter *watched;
static bool granted_when_closed;

static void watch_close(struct xfer__cf *cf, struct xfer__mev *ev) {
  (void)cf;
  (void)ev;
  granted_when_closed = atomic_load(&watched->granted);
}

static const struct xfer__cf_type watch_type = {.name = "watch",
                                                .close = watch_close};

/* A closed connection's destination slot passes to the next in line only
 * after its socket is closed: that waiter may connect at once, and the
 * server must never see more than max_per_destination sockets. */
TH_TEST(slots, a_slot_passes_on_after_its_socket_closed) {
  struct xfer__cf watch = {.type = &watch_type};
  struct xfer__waiter w;
  struct xfer__conn *a, *c;

  start((xfer_pool_opts){.max_per_destination = 1});
  a = busy(KEY_A, 1000);
  xfer__cf_push(&a->filters, &watch);
  waits(&w, KEY_A, 2000, false);
  watched = &w;
  granted_when_closed = true;
  xfer__pool_close(pool, a, XFER__CLOSE_PEER, NULL, &evicted);
  cr_assert_not(granted_when_closed, "the socket closed first");
  cr_assert(atomic_load(&w.granted), "then the slot went to the waiter");
  cr_assert_eq(probe_take(pool, &w, NOW_TAKE, &c, &evicted), XFER__ACQUIRE_OPEN);
  c = probe_open(pool, &w, KEY_A, 4000);
  xfer__pool_return(pool, c, 5000, &evicted);
}

/* A waiter granted at the moment it gave up passes what it got on. */
TH_TEST(slots, a_waiter_cancelled_after_its_grant_passes_it_on) {
  struct xfer__waiter w1, w2;
  struct xfer__conn *a, *c;

  start((xfer_pool_opts){.max_per_destination = 1});
  a = busy(KEY_A, 1000);
  waits(&w1, KEY_A, 2000, false);
  waits(&w2, KEY_A, 2000, false);
  xfer__pool_return(pool, a, 3000, &evicted);
  cr_assert(atomic_load(&w1.granted), "the oldest got it");
  xfer__pool_cancel(pool, &w1, 3000, &evicted);
  cr_assert_eq(probe_take(pool, &w2, NOW_TAKE, &c, &evicted), XFER__ACQUIRE_CONN,
               "and passed it to the next");
  cr_assert_eq(c, a);
  xfer__pool_return(pool, c, 4000, &evicted);
}

/* --- a closing connection's slots ------------------------------------------- */

/* After an eviction: the evicted connection no longer holds a total slot
 * (another destination opens at once, at a total limit of 1), but keeps
 * its destination slot (its own destination, at a limit of 1, waits)
 * until its close ends. */
static void closing_frees_total_not_destination(struct xfer__conn *gone,
                                                xfer__time now) {
  struct xfer__waiter w;
  struct xfer__conn *c;

  cr_assert_eq(evicted.next, &gone->idle_node, "evicted for a graceful close");
  cr_assert_not(gone->holds_total, "no total slot while closing");
  c = busy(KEY_C, now); /* only with the evicted one's total slot */
  waits(&w, gone->key, now, false);
  cr_assert_eq(w.state, XFER__WAIT_QUEUED, "the closing one's slot is its own");
  xfer__pool_return(pool, c, now, &evicted); /* idle: nobody wants room */
  cr_assert(xfer__list_linked(&gone->idle_node) && evicted.next == &gone->idle_node);
  /* Its close gives w the destination slot; w then waits for room, and
   * the idle one is closed for it. */
  cr_assert_eq(probe_close_evicted(pool, &evicted), 2);
  cr_assert(atomic_load(&w.granted));
  cr_assert_eq(probe_take(pool, &w, NOW_TAKE, &c, &evicted), XFER__ACQUIRE_OPEN);
  c = probe_open(pool, &w, KEY_A, now);
  xfer__pool_return(pool, c, now, &evicted);
  drain_wake();
}

TH_TEST(slots, an_idle_timeout_frees_the_total_slot_at_once) {
  struct xfer__conn *a;

  start((xfer_pool_opts){.max_per_destination = 1, .max_total = 1,
                         .idle_timeout_ms = 1000});
  a = busy(KEY_A, MS(1000));
  xfer__pool_return(pool, a, MS(1000), &evicted);
  /* The next call after the idle timeout sweeps it. */
  xfer__pool_sweep(pool, MS(2500), &evicted);
  closing_frees_total_not_destination(a, MS(2500));
}

TH_TEST(slots, a_lifetime_end_on_return_frees_the_total_slot_at_once) {
  struct xfer__conn *a;

  start((xfer_pool_opts){.max_per_destination = 1, .max_total = 1,
                         .max_lifetime_ms = 1000});
  a = busy(KEY_A, MS(1000));
  xfer__pool_return(pool, a, MS(2500), &evicted);
  closing_frees_total_not_destination(a, MS(2500));
}

TH_TEST(slots, a_lifetime_end_on_checkout_frees_the_total_slot_at_once) {
  struct xfer__waiter w;
  struct xfer__conn *a, *c;

  start((xfer_pool_opts){.max_per_destination = 2, .max_total = 2,
                         .max_lifetime_ms = 1000});
  a = busy(KEY_A, MS(1000));
  xfer__pool_return(pool, a, MS(1100), &evicted);
  /* Too old when taken: evicted, and a new one opens in its place. */
  cr_assert_eq(probe_acquire(pool, KEY_A, MS(2500), &w, wake, &c, &evicted),
               XFER__ACQUIRE_OPEN);
  cr_assert_eq(evicted.next, &a->idle_node);
  c = probe_open(pool, &w, KEY_A, MS(2500));
  cr_assert_eq(total_held(), 1, "the new one only");
  cr_assert_eq(probe_close_evicted(pool, &evicted), 1);
  xfer__pool_return(pool, c, MS(2500), &evicted);
}

TH_TEST(slots, the_idle_limit_frees_the_total_slot_at_once) {
  struct xfer__conn *a1, *a2;

  start((xfer_pool_opts){.max_per_destination = 2, .max_total = 2,
                         .max_idle_per_destination = 1});
  a1 = busy(KEY_A, 1000);
  a2 = busy(KEY_A, 1000);
  xfer__pool_return(pool, a1, 2000, &evicted);
  xfer__pool_return(pool, a2, 2000, &evicted);
  cr_assert_eq(evicted.next, &a2->idle_node, "over the idle limit");
  cr_assert_eq(total_held(), 1, "a1 only: a2 is closing");
  cr_assert_eq(probe_close_evicted(pool, &evicted), 1);
}

TH_TEST(slots, making_room_frees_the_total_slot_keeps_the_destination_slot) {
  struct xfer__waiter w;
  struct xfer__conn *a, *b, *c;

  start((xfer_pool_opts){.max_per_destination = 1, .max_total = 1});
  a = busy(KEY_A, 1000);
  xfer__pool_return(pool, a, 2000, &evicted);
  b = busy(KEY_B, 3000); /* room made: a closes */
  cr_assert_eq(evicted.next, &a->idle_node);
  waits(&w, KEY_A, 3000, false);
  cr_assert_eq(w.state, XFER__WAIT_QUEUED, "A's slot is a's until closed");
  cr_assert_eq(probe_close_evicted(pool, &evicted), 1);
  cr_assert(atomic_load(&w.granted) == false && w.state == XFER__WAIT_ROOM,
            "A's slot is w's now; the pool is full with b");
  xfer__pool_return(pool, b, 4000, &evicted); /* closed for w's room */
  cr_assert(atomic_load(&w.granted));
  cr_assert_eq(probe_take(pool, &w, NOW_TAKE, &c, &evicted), XFER__ACQUIRE_OPEN);
  c = probe_open(pool, &w, KEY_A, 5000);
  cr_assert_eq(probe_close_evicted(pool, &evicted), 1);
  xfer__pool_return(pool, c, 6000, &evicted);
}

/* --- waiting in order ---------------------------------------------------------- */

/* Waiters of a destination are served in the order they came: one that
 * waits for room came before one queued at the destination's limit, so a
 * connection of that destination goes to it first; the slot it leaves
 * goes to the next, who then waits for room. */
TH_TEST(slots, waiters_of_a_destination_are_served_in_order) {
  struct xfer__waiter first, second;
  struct xfer__conn *a, *b, *c;

  start((xfer_pool_opts){.max_per_destination = 2, .max_total = 2});
  a = busy(KEY_A, 1000);
  b = busy(KEY_B, 1000);
  waits(&first, KEY_A, 2000, false);
  cr_assert_eq(first.state, XFER__WAIT_ROOM);
  waits(&second, KEY_A, 2000, false);
  cr_assert_eq(second.state, XFER__WAIT_QUEUED);

  xfer__pool_return(pool, a, 3000, &evicted); /* not closed for room */
  cr_assert(xfer__list_empty(&evicted), "a stays: its destination waits");
  cr_assert_eq(probe_take(pool, &first, NOW_TAKE, &c, &evicted), XFER__ACQUIRE_CONN);
  cr_assert_eq(c, a);
  cr_assert_eq(second.state, XFER__WAIT_ROOM, "first's slot is second's");

  xfer__pool_close(pool, b, XFER__CLOSE_ERROR, NULL, &evicted);
  cr_assert_eq(probe_take(pool, &second, NOW_TAKE, &c, &evicted), XFER__ACQUIRE_OPEN);
  c = probe_open(pool, &second, KEY_A, 4000);
  cr_assert_eq(total_held(), 2);
  xfer__pool_return(pool, a, 5000, &evicted);
  xfer__pool_return(pool, c, 5000, &evicted);
  drain_wake();
}

/* The total slot a close frees goes to the oldest waiter for room,
 * whichever its destination, before the closing one's own queue. */
TH_TEST(slots, a_freed_total_slot_goes_to_the_oldest_waiter_for_room) {
  struct xfer__waiter for_b, for_a;
  struct xfer__conn *a, *c;

  start((xfer_pool_opts){.max_per_destination = 1, .max_total = 1});
  a = busy(KEY_A, 1000);
  waits(&for_b, KEY_B, 2000, false); /* room */
  waits(&for_a, KEY_A, 2000, false); /* A's limit */
  xfer__pool_close(pool, a, XFER__CLOSE_PEER, NULL, &evicted);
  cr_assert(atomic_load(&for_b.granted), "B came first");
  cr_assert_eq(for_a.state, XFER__WAIT_ROOM, "A's slot, and now room");
  cr_assert_eq(probe_take(pool, &for_b, NOW_TAKE, &c, &evicted), XFER__ACQUIRE_OPEN);
  c = probe_open(pool, &for_b, KEY_B, 3000);
  xfer__pool_return(pool, c, 4000, &evicted); /* closed for A's room */
  cr_assert_eq(probe_take(pool, &for_a, NOW_TAKE, &c, &evicted), XFER__ACQUIRE_OPEN);
  c = probe_open(pool, &for_a, KEY_A, 5000);
  cr_assert_eq(probe_close_evicted(pool, &evicted), 1);
  xfer__pool_return(pool, c, 6000, &evicted);
}

/* --- retries (rule 6) ---------------------------------------------------------- */

/* After a retry got `closed`'s slots (REPLACE): the retry closes it at
 * once (before its new one is opened, so the server never sees two), and
 * the connection it opens in its place keeps both limits of 1. */
static struct xfer__conn *replace(struct xfer__waiter *w, const char *key,
                                  struct xfer__conn *closed) {
  struct xfer__conn *fresh;
  xfer_pool_stats ps;

  cr_assert(xfer__list_empty(&evicted), "closed by the retry, not evicted");
  xfer__conn_close(closed, NULL);
  fresh = probe_open(pool, w, key, 3000);
  cr_assert_not_null(fresh);
  xfer_pool_get_stats(pool, &ps);
  cr_assert_eq(ps.open, 1, "the limits hold");
  cr_assert_eq(ps.idle, 0);
  cr_assert_eq(ps.waiting, 0);
  cr_assert_eq(ps.closed_limit, 1);
  return fresh;
}

/* A retry must have a new connection. At its destination's limit with a
 * connection idle, it closes that one and takes its slots, rather than
 * wait until the idle one expires. */
TH_TEST(slots, a_retry_at_the_limit_closes_an_idle_connection) {
  struct xfer__conn *idle, *fresh, *c;
  struct xfer__waiter w;

  start((xfer_pool_opts){.max_per_destination = 1, .max_total = 1});
  idle = busy(KEY_A, 1000);
  xfer__pool_return(pool, idle, 2000, &evicted);
  cr_assert_eq(probe_acquire_as(pool, KEY_A, 3000, true, &w, NULL, &c,
                                &evicted),
               XFER__ACQUIRE_REPLACE, "the idle one's slots, not a wait");
  cr_assert_eq(c, idle);
  fresh = replace(&w, KEY_A, idle);
  xfer__pool_return(pool, fresh, 4000, &evicted);
  cr_assert_eq(probe_acquire(pool, KEY_A, 5000, &w, NULL, &c, &evicted),
               XFER__ACQUIRE_CONN, "the slots went with the new one");
  cr_assert_eq(c, fresh);
  xfer__pool_return(pool, c, 6000, &evicted);
}

/* A retry waiting at its destination's limit is handed the used
 * connection that comes back only to close it: its slots are the retry's,
 * and it opens a new one. */
TH_TEST(slots, a_waiting_retry_gets_a_used_connection_only_to_close_it) {
  struct xfer__conn *used, *fresh, *c;
  struct xfer__waiter w;

  start((xfer_pool_opts){.max_per_destination = 1, .max_total = 1});
  used = busy(KEY_A, 1000);
  waits(&w, KEY_A, 2000, true);
  xfer__pool_return(pool, used, 3000, &evicted);
  cr_assert(atomic_load(&w.granted), "the waiter was served");
  cr_assert_eq(probe_take(pool, &w, NOW_TAKE, &c, &evicted), XFER__ACQUIRE_REPLACE,
               "with the used connection's slots, to close it");
  cr_assert_eq(c, used);
  fresh = replace(&w, KEY_A, used);
  xfer__pool_return(pool, fresh, 4000, &evicted);
  drain_wake();
}

/* A retry (it must have a new connection) that queues at the limit while
 * a release asked of another multi is pending (asked by a waiter that gave
 * up since) is bounded too: the pump counts on that release for the
 * queue, so a slot freed later goes to nobody, and only the retry's own
 * look after attached_wait takes it (it waited on the owner's loop). */
TH_TEST(slots, a_retry_queued_behind_a_pending_release_is_bounded) {
  struct xfer__pool_tally tally;
  struct xfer__wake *owner = xfer__wake_new();
  struct xfer__conn *c1, *c2, *c;
  struct xfer__waiter a, b;
  bool dead = false;

  memset(&tally, 0, sizeof(tally));
  start((xfer_pool_opts){.max_per_destination = 2});
  cr_assert_not_null(owner);
  xfer__pool_attach(pool, &tally);
  c1 = busy(KEY_A, 1000);
  c2 = busy(KEY_A, 1000);
  cr_assert(xfer__pool_keep_attached(pool, c1, owner, &tally, 2000));
  waits(&a, KEY_A, 3000, false); /* asks the owner for c1 */
  cr_assert(a.bounded);
  xfer__pool_cancel(pool, &a, 3500, &evicted); /* gone; its ask stands */
  waits(&b, KEY_A, 4000, true); /* a retry, at the limit */
  cr_assert(b.bounded, "it looks again every attached_wait");
  xfer__pool_close(pool, c2, XFER__CLOSE_ERROR, NULL, &evicted);
  cr_assert_not(atomic_load(&b.granted), "the pump counts on the release");
  cr_assert_eq(xfer__pool_stop_waiting(pool, &b, 5000, &c, &dead, &evicted),
               XFER__ACQUIRE_OPEN, "the freed slot, on its own clock");
  c = probe_open(pool, &b, KEY_A, 5000);
  cr_assert_not_null(c);
  xfer__pool_return(pool, c, 6000, &evicted);
  cr_assert_not(xfer__pool_take_attached(pool, c1, &tally, XFER__TAKE_REUSE),
                "asked for: released");
  xfer__pool_release_attached(pool, c1, &tally, true, 6000, &evicted);
  xfer__pool_detach(pool, &tally);
  xfer__wake_unref(owner);
  drain_wake();
}
