/* lib/attached.c: a multi keeps the connection it has just finished with
 * for its own next transfer (brief rule 4's fast path), still watched,
 * and lets it go to the shared side when the hold passes, when another
 * multi asks, and when it is destroyed. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "cfilter.h"
#include "conn.h"
#include "mem.h"
#include "multi.h"
#include "testhelp.h"
#include "testserver.h"

static struct ts_server *web;
static xfer *xs[8];
static int nxs;
static struct th_sink sinks[8];

static void setup(void) { web = ts_start(NULL); }

static void attached_end(void) {
  for (int i = 0; i < nxs; i++)
    xfer_free(xs[i]);
  for (size_t i = 0; i < XFER__ARRAY_SIZE(sinks); i++)
    th_sink_free(&sinks[i]);
  nxs = 0;
  ts_stop(web);
}

TestSuite(attached, .init = setup);

static xfer *get(xfer_multi *m, const char *path) {
  xfer *x = th_get(m, th_url(ts_port(web), path), &sinks[nxs]);

  xs[nxs++] = x;
  return x;
}

static xfer *fetch(xfer_multi *m, const char *path) {
  xfer *x = get(m, path);

  th_run(m, 5000);
  cr_assert_eq(th_result(m, x), XFER_OK, "%s", xfer_get_error_detail(x));
  return x;
}

/* The whole point: the multi's next transfer to the destination takes the
 * connection without a single socket callback (no REMOVE, no ADD) and
 * without a lookup in the shared pool. */
TH_TEST(attached, own_reuse_needs_no_socket_callback) {
  static struct th_sockrec rec; /* hears the REMOVEs of destroy too */
  xfer_multi *m = xfer_multi_new(NULL);
  xfer_pool_stats ps;
  struct ts_stats st;
  xfer *first, *second;
  int calls;

  th_sockrec_init(&rec);
  xfer_multi_set_socket_cb(m, th_sockrec_cb, &rec);
  /* Delayed, so that both wait on the socket (on loopback a whole
   * exchange can otherwise finish in one run, with nothing to report). */
  first = fetch(m, "/delay/50/bytes/10");
  cr_assert_gt(rec.count, 0);
  cr_assert_neq(rec.calls[rec.count - 1].what, XFER_POLL_REMOVE,
                "attached: still watched");
  xfer_pool_get_stats(m->loop.pool, &ps);
  cr_assert_eq(ps.attached, 1);
  cr_assert_eq(ps.idle, 1, "an attached connection counts as idle");
  cr_assert_eq(ps.busy, 0);
  calls = rec.count;
  /* Held by the server until the test's own /gather request comes: sent
   * (inside the add), the answer not there yet. */
  second = get(m, "/gather/2/bytes/20");
  cr_assert(ts_wait(web, TS_REQUESTS, 2, 5000));
  { /* the socket passed from the connection's tracking to the transfer's */
    struct xfer__mev_socket_info info;
    cr_assert(xfer__mev_socket_info(&m->loop.ev, rec.calls[rec.count - 1].fd, &info));
    cr_assert_eq(info.conns, 0, "the connection no longer tracks it");
    cr_assert_eq(info.readers, 1, "the transfer does");
  }
  cr_assert(ts_fetch(web, "/gather/2/bytes/1"));
  th_run(m, 5000);
  cr_assert_eq(th_result(m, second), XFER_OK);
  cr_assert_eq(rec.count, calls, "zero socket callback calls on reuse");
  th_expect_pattern(sinks[1].data, sinks[1].len, 20);
  cr_assert_eq(xfer_get_reused(second), 1);
  cr_assert_eq(xfer_get_conn_id(second), xfer_get_conn_id(first));
  th_expect_timeline_ordered(second);
  xfer_pool_get_stats(m->loop.pool, &ps);
  cr_assert_eq(ps.reused_total, 1);
  cr_assert_eq(ps.checkout_hits, 1);
  cr_assert_eq(ps.opened_total, 1);
  ts_get_stats(web, &st);
  cr_assert_eq(st.accepted, 2, "ours, and the test's own /gather");
  cr_assert_eq(st.requests, 3);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
}

/* Past the hold time, with no transfer of its own taking it, the
 * connection goes to the shared side: REMOVE, then the pool. */
TH_TEST(attached, hold_time_releases_to_the_shared_side) {
  static struct th_sockrec rec;
  xfer_pool *p;
  xfer_multi *m;
  xfer_pool_stats ps;
  int fd;

  /* The multi's clock is the test's: the hold passes when the test says,
   * however slow the machine. */
  th_clock_install(MS(1000), 0);
  p = xfer_pool_new(&(xfer_pool_opts){.attach_hold_ms = 50});
  m = xfer_multi_new(p);
  th_sockrec_init(&rec);
  xfer_multi_set_socket_cb(m, th_sockrec_cb, &rec);
  fetch(m, "/delay/20/bytes/1");
  fd = rec.calls[rec.count - 1].fd;
  th_clock_advance(MS(40));
  cr_assert_eq(xfer_multi_perform(m, NULL), XFER_M_OK);
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.attached, 1, "still within the hold");
  th_clock_advance(MS(30)); /* past it, and past the timers' slack */
  cr_assert_eq(xfer_multi_perform(m, NULL), XFER_M_OK);
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.attached, 0);
  cr_assert_eq(ps.idle, 1, "on the shared side");
  cr_assert_eq(rec.calls[rec.count - 1].fd, fd);
  cr_assert_eq(rec.calls[rec.count - 1].what, XFER_POLL_REMOVE);
  cr_assert_eq(xfer_get_reused(fetch(m, "/bytes/1")), 1,
               "and reused from there");
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
  th_clock_uninstall();
}

/* Runs m (perform/poll, bounded: 5 s) until x has finished well. */
static void run_until_done(xfer_multi *m, xfer *x) {
  const xfer_msg *msg;
  bool done = false;

  for (int i = 0; i < 100 && !done; i++) {
    cr_assert_eq(xfer_multi_perform(m, NULL), XFER_M_OK);
    while ((msg = xfer_multi_info_read(m, NULL)))
      if (msg->x == x) {
        cr_assert_eq(msg->result, XFER_OK, "%s", xfer_get_error_detail(x));
        done = true;
      }
    if (!done)
      cr_assert_eq(xfer_multi_poll(m, 50, NULL), XFER_M_OK);
  }
  cr_assert(done, "the transfer did not finish in 5 s");
}

/* A transfer to srv that the server holds until the test fetches
 * /gather/2/bytes/3 itself; returns once the server has the request. */
static xfer *held_by(xfer_multi *m, struct ts_server *srv) {
  xfer *held = xs[nxs++] = xfer_new();
  struct ts_stats st;
  int rounds = 0;

  cr_assert_not_null(held);
  cr_assert_eq(xfer_set_url(held, th_url(ts_port(srv), "/gather/2/bytes/3")),
               XFER_OK);
  cr_assert_eq(xfer_multi_add(m, held), XFER_M_OK);
  do { /* bounded: 5 s */
    cr_assert_eq(xfer_multi_perform(m, NULL), XFER_M_OK);
    cr_assert_eq(xfer_multi_poll(m, 50, NULL), XFER_M_OK);
    ts_get_stats(srv, &st);
  } while (st.requests < 1 && ++rounds < 100);
  cr_assert_eq(st.requests, 1);
  return held;
}

/* Ends a test with a second server and the test clock: its multi, pool,
 * server and clock. */
static void end_with_server(xfer_multi *m, xfer_pool *p,
                            struct ts_server *slow) {
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
  ts_stop(slow);
  th_clock_uninstall();
}

/* Lets slow answer held (held_by()), runs m until it is done, and ends
 * the test. */
static void finish_held(xfer_multi *m, xfer_pool *p, struct ts_server *slow,
                        xfer *held) {
  cr_assert(ts_fetch(slow, "/gather/2/bytes/3"));
  th_run(m, 5000);
  cr_assert_eq(th_result(m, held), XFER_OK, "%s", xfer_get_error_detail(held));
  end_with_server(m, p, slow);
}

/* A multi with a transfer running is called again (that transfer's
 * events and deadlines bring the calls), so the hold of a connection it
 * keeps attached needs no deadline there: the multi keeps none, so its
 * application's waits arm no kernel timer, and its first call after the
 * hold lets the connection go. The timer set when the multi was idle for
 * a moment (a first transfer ended) goes once it is busy again. (An idle
 * multi times the hold: hold_time_releases_to_the_shared_side.) */
TH_TEST(attached, a_busy_multi_lets_go_at_its_first_call_after_the_hold) {
  struct ts_server *slow = ts_start(NULL);
  xfer_pool *p;
  xfer_multi *m;
  xfer_pool_stats ps;
  xfer *held;

  th_clock_install(MS(1000), 0);
  p = xfer_pool_new(&(xfer_pool_opts){.attach_hold_ms = 50});
  m = xfer_multi_new(p);
  run_until_done(m, get(m, "/bytes/1"));
  cr_assert_not_null(xfer__timer_heap_top(&m->loop.timers));
  cr_assert_eq(xfer__timer_heap_top(&m->loop.timers)->deadline,
               th_clock_peek() + MS(50), "idle: the hold's end");
  held = held_by(m, slow);
  cr_assert_null(xfer__timer_heap_top(&m->loop.timers), "busy: cleared");
  run_until_done(m, get(m, "/bytes/1"));
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.attached, 1);
  cr_assert_null(xfer__timer_heap_top(&m->loop.timers),
                 "busy: no deadline, the hold's included");
  th_clock_advance(MS(60));
  cr_assert_eq(xfer_multi_perform(m, NULL), XFER_M_OK);
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.attached, 0, "let go at the first call past the hold");
  cr_assert_eq(ps.idle, 1, "on the shared side");
  finish_held(m, p, slow, held);
}

static int64_t real_ms(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Drives m through e's epoll set until x has finished well (bounded:
 * 5 s), as an application's loop does: socket events, and the timer when
 * it is due (th_epoll_run() starts with a timeout action of its own,
 * after which the multi tells its deadline again). Returns the number of
 * socket events it took. */
static int run_events_until_done(struct th_epoll *e, xfer_multi *m, xfer *x) {
  int64_t give_up = real_ms() + 5000;
  int events = 0;

  while (real_ms() < give_up) {
    struct epoll_event evs[16];
    const xfer_msg *msg;
    int64_t wait_ms = 50;
    int n;

    if (e->deadline_ms >= 0 && e->deadline_ms - real_ms() < wait_ms)
      wait_ms = e->deadline_ms - real_ms();
    n = epoll_wait(e->ep, evs, 16, wait_ms < 0 ? 0 : (int)wait_ms);
    for (int i = 0; i < n; i++, events++)
      cr_assert_eq(xfer_multi_socket_action(m, evs[i].data.fd,
                                            XFER_CSELECT_IN, NULL),
                   XFER_M_OK);
    if (e->deadline_ms >= 0 && real_ms() >= e->deadline_ms) {
      e->deadline_ms = -1;
      cr_assert_eq(xfer_multi_socket_action(m, XFER_SOCKET_TIMEOUT, 0, NULL),
                   XFER_M_OK);
    }
    while ((msg = xfer_multi_info_read(m, NULL)))
      if (msg->x == x) {
        cr_assert_eq(msg->result, XFER_OK, "%s", xfer_get_error_detail(x));
        return events;
      }
  }
  cr_assert_fail("the transfer did not finish in 5 s");
  return events;
}

/* One transfer after the other, each answer in two pieces: the multi is
 * busy while it waits for the second (it clears the hold's timer: no
 * deadline is left, so the timer callback hears -1) and idle at the end
 * (it sets the hold's timer again, and tells it). At most one -1 per
 * XFER__TIMER_STOP_EVERY_MS: 20 transfers on a clock that stands still
 * cost a few tellings, not two each. */
TH_TEST(attached, one_transfer_after_the_other_costs_no_timer_churn) {
  struct th_epoll e;
  xfer_multi_stats st = {0};
  xfer_pool *p;
  xfer_multi *m;
  int in_pieces = 0;
  xfer *x;

  th_clock_install(MS(1000), 0);
  /* A hold the loop's own clock never reaches: no firing in between. */
  p = xfer_pool_new(&(xfer_pool_opts){.attach_hold_ms = 600000});
  m = xfer_multi_new(p);
  th_epoll_init(&e, m, NULL);
  x = get(m, "/drip/2/20"); /* one byte, and the next 20 ms later */
  run_events_until_done(&e, m, x);
  for (int i = 1; i < 20; i++) {
    cr_assert_eq(xfer_multi_remove(m, x), XFER_M_OK);
    cr_assert_eq(xfer_multi_add(m, x), XFER_M_OK);
    if (run_events_until_done(&e, m, x) > 1)
      in_pieces++;
    cr_assert_eq(xfer_get_reused(x), 1);
  }
  /* Each such answer was a busy moment with no deadline: without the
   * bound, two tellings. (A loop held up 20 ms reads both bytes at once.) */
  cr_assert_geq(in_pieces, 10);
  cr_assert_eq(xfer_multi_get_stats(m, &st), XFER_M_OK);
  cr_assert_lt(st.timer_cb_calls, 8, "%llu tellings",
               (unsigned long long)st.timer_cb_calls);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  th_epoll_close(&e);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
  th_clock_uninstall();
}

/* In a pool with a limit, a transfer waiting for room, or at its
 * destination's limit without asking the owner (attached_wait_ms < 0, or
 * a retry), counts on the hold's end: a busy multi keeps its timer for
 * it, and the timer alone lets the connection go. */
static void busy_multi_times_the_hold(const xfer_pool_opts *opts) {
  struct ts_server *slow = ts_start(NULL);
  xfer_pool *p;
  xfer_multi *m;
  xfer_pool_stats ps;
  struct xfer__timer_node *top;
  xfer *held;

  th_clock_install(MS(1000), 0);
  p = xfer_pool_new(opts);
  m = xfer_multi_new(p);
  held = held_by(m, slow);
  run_until_done(m, get(m, "/bytes/1"));
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.attached, 1);
  top = xfer__timer_heap_top(&m->loop.timers);
  cr_assert_not_null(top);
  cr_assert_eq(top->deadline, th_clock_peek() + MS(50), "the hold's end");
  th_clock_advance(MS(50));
  cr_assert_eq(xfer_multi_socket_action(m, XFER_SOCKET_TIMEOUT, 0, NULL),
               XFER_M_OK);
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.attached, 0);
  cr_assert_eq(ps.idle, 1);
  finish_held(m, p, slow, held);
}

TH_TEST(attached, with_a_total_limit_a_busy_multi_times_the_hold) {
  busy_multi_times_the_hold(
      &(xfer_pool_opts){.attach_hold_ms = 50, .max_total = 8});
}

TH_TEST(attached, with_a_destination_limit_a_busy_multi_times_the_hold) {
  busy_multi_times_the_hold(&(xfer_pool_opts){
      .attach_hold_ms = 50, .max_per_destination = 4, .attached_wait_ms = -1});
}

/* Transfers that never ask for an attached connection open their own:
 * the hold's end is what hands it to them. */
TH_TEST(attached, when_nobody_asks_a_busy_multi_times_the_hold) {
  busy_multi_times_the_hold(
      &(xfer_pool_opts){.attach_hold_ms = 50, .attached_wait_ms = -1});
}

/* Removing a running transfer is a call that settles the holds, as an
 * event or a timeout is. */
TH_TEST(attached, removing_a_running_transfer_lets_go_past_the_hold) {
  struct ts_server *slow = ts_start(NULL);
  xfer_pool *p;
  xfer_multi *m;
  xfer_pool_stats ps;
  xfer *held;

  th_clock_install(MS(1000), 0);
  p = xfer_pool_new(&(xfer_pool_opts){.attach_hold_ms = 50});
  m = xfer_multi_new(p);
  held = held_by(m, slow);
  run_until_done(m, get(m, "/bytes/1"));
  th_clock_advance(MS(60));
  cr_assert_eq(xfer_multi_remove(m, held), XFER_M_OK);
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.attached, 0, "let go by the remove");
  cr_assert_eq(ps.idle, 1);
  end_with_server(m, p, slow);
}

/* A server that closes the idle connection makes its socket readable:
 * the attached connection is closed at once, and the next request opens
 * a new one without a failed attempt. */
TH_TEST(attached, peer_close_while_attached_closes_it) {
  struct ts_server *closing = ts_start(NULL);
  xfer_pool *p = xfer_pool_new(&(xfer_pool_opts){.attach_hold_ms = 600000});
  xfer_multi *m = xfer_multi_new(p);
  xfer_pool_stats ps;
  xfer *x;

  xs[nxs++] = x = th_get(m, th_url(ts_port(closing), "/bytes/3"), NULL);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, x), XFER_OK);
  ts_close_idle(closing);
  cr_assert(ts_wait(closing, TS_CLOSED_BY_SERVER, 1, 5000));
  /* The multi hears the close on its watched socket (bounded turns). */
  for (int turn = 0; turn < 500; turn++) {
    xfer_pool_get_stats(p, &ps);
    if (ps.closed_peer)
      break;
    th_run_for(m, 10);
  }
  xfer_pool_get_stats(m->loop.pool, &ps);
  cr_assert_eq(ps.attached, 0);
  cr_assert_eq(ps.open, 0);
  cr_assert_eq(ps.closed_peer, 1);
  xs[nxs++] = x = th_get(m, th_url(ts_port(closing), "/bytes/3"), NULL);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, x), XFER_OK);
  cr_assert_eq(xfer_get_reused(x), 0);
  xfer_pool_get_stats(m->loop.pool, &ps);
  cr_assert_eq(ps.retries_total, 0, "no request met the dead connection");
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
  ts_stop(closing);
}

/* Another multi that finds no shared idle connection asks the owner for
 * its attached one (through the owner's wake-up) instead of opening a
 * connection: sharing must not cost connections. Both multis run in this
 * thread here, taking turns; test_pool_threads does it across threads. */
TH_TEST(attached, another_multi_gets_it_on_demand) {
  xfer_pool *p = xfer_pool_new(NULL);
  xfer_multi *owner = xfer_multi_new(p), *other = xfer_multi_new(p);
  xfer_pool_stats ps;
  xfer *first, *second;

  first = fetch(owner, "/bytes/1");
  cr_assert_eq(xfer_multi_perform(other, NULL), XFER_M_OK);
  second = get(other, "/bytes/7");
  cr_assert_eq(xfer_multi_perform(other, NULL), XFER_M_OK);
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.waiting, 1, "the other multi waits for the owner");
  th_run_for(owner, 30); /* the owner hears the wake-up: REMOVE, release */
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.released_on_demand, 1);
  cr_assert_eq(ps.attached, 0);
  th_run(other, 5000);
  cr_assert_eq(th_result(other, second), XFER_OK, "%s",
               xfer_get_error_detail(second));
  th_expect_pattern(sinks[1].data, sinks[1].len, 7);
  cr_assert_eq(xfer_get_reused(second), 1);
  cr_assert_eq(xfer_get_conn_id(second), xfer_get_conn_id(first));
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.opened_total, 1, "no new connect");
  cr_assert_eq(xfer_multi_destroy(owner), XFER_M_OK);
  cr_assert_eq(xfer_multi_destroy(other), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
}

/* Two multis on one pool in one thread, and the owner is never driven
 * again: the other's transfer asks for the attached connection, waits
 * attached_wait (1 s here) on its own clock, then opens its own: one
 * connection, no wait without bound on a loop nobody drives. */
TH_TEST(attached, a_multi_never_driven_again_holds_nobody_up) {
  xfer_pool *p = xfer_pool_new(&(xfer_pool_opts){.attached_wait_ms = 1000});
  xfer_multi *owner = xfer_multi_new(p), *other = xfer_multi_new(p);
  xfer_pool_stats ps;
  xfer *first, *second;

  first = fetch(owner, "/bytes/1");
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.attached, 1);
  second = fetch(other, "/bytes/4"); /* only `other` is driven */
  th_expect_pattern(sinks[1].data, sinks[1].len, 4);
  cr_assert_eq(xfer_get_reused(second), 0);
  cr_assert_neq(xfer_get_conn_id(second), xfer_get_conn_id(first));
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.opened_total, 2, "its own, one");
  cr_assert_eq(ps.waited_total, 1);
  cr_assert_eq(ps.waiting, 0);
  cr_assert_eq(xfer_multi_destroy(owner), XFER_M_OK);
  cr_assert_eq(xfer_multi_destroy(other), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
}

/* The same at the destination's limit. A transfer queues with no slot
 * free and asks the owner, who is never driven again; then a slot comes
 * free (another multi's connection closes). The freed slot goes to no
 * one (every queued waiter is covered by the release asked for), so the
 * transfer must bound its wait on its own clock and open its own with
 * that slot. It did not: it waited for a loop nobody drives. */
TH_TEST(attached, a_slot_freed_while_waiting_on_a_stopped_owner_is_taken) {
  xfer_pool *p = xfer_pool_new(&(xfer_pool_opts){
      .max_per_destination = 2, .attached_wait_ms = 100});
  xfer_multi *owner = xfer_multi_new(p), *other = xfer_multi_new(p),
             *busy = xfer_multi_new(p);
  xfer_pool_stats ps;
  struct ts_stats st;
  xfer *held, *first, *theirs;
  int rounds = 0;

  /* One slot: a transfer the server holds until the test says. */
  held = xs[nxs++] = xfer_new();
  cr_assert_not_null(held);
  cr_assert_eq(xfer_set_url(held, th_url(ts_port(web), "/gather/2/bytes/3")),
               XFER_OK);
  cr_assert_eq(xfer_add_header(held, "Connection", "close"), XFER_OK);
  cr_assert_eq(xfer_multi_add(busy, held), XFER_M_OK);
  do { /* until the server has its request (bounded: 5 s) */
    cr_assert_eq(xfer_multi_perform(busy, NULL), XFER_M_OK);
    cr_assert_eq(xfer_multi_poll(busy, 50, NULL), XFER_M_OK);
    ts_get_stats(web, &st);
  } while (st.requests < 1 && ++rounds < 100);
  cr_assert_eq(st.requests, 1);
  /* The other slot: attached to `owner`, which is not driven again. */
  first = fetch(owner, "/bytes/1");
  theirs = get(other, "/bytes/4");
  cr_assert_eq(xfer_multi_perform(other, NULL), XFER_M_OK); /* asks */
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.waiting, 1);
  /* The held transfer ends, and its connection closes: a slot is free. */
  cr_assert(ts_fetch(web, "/gather/2/bytes/3"));
  th_run(busy, 5000);
  cr_assert_eq(th_result(busy, held), XFER_OK, "%s",
               xfer_get_error_detail(held));
  th_run(other, 5000);
  cr_assert_eq(th_result(other, theirs), XFER_OK, "%s",
               xfer_get_error_detail(theirs));
  th_expect_pattern(sinks[2].data, sinks[2].len, 4);
  cr_assert_eq(xfer_get_reused(theirs), 0, "its own, with the freed slot");
  cr_assert_neq(xfer_get_conn_id(theirs), xfer_get_conn_id(first));
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.opened_total, 3);
  cr_assert_eq(ps.waiting, 0);
  cr_assert_eq(xfer_multi_destroy(owner), XFER_M_OK);
  cr_assert_eq(xfer_multi_destroy(other), XFER_M_OK);
  cr_assert_eq(xfer_multi_destroy(busy), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
}

/* Once another multi asked for the connection, the owner's own next
 * transfer does not take it back: the waiter would wait as long as that
 * transfer lasts. */
TH_TEST(attached, a_promised_connection_is_not_taken_back) {
  xfer_pool *p = xfer_pool_new(NULL);
  xfer_multi *owner = xfer_multi_new(p), *other = xfer_multi_new(p);
  xfer_pool_stats ps;
  xfer *first, *mine, *theirs;

  first = fetch(owner, "/bytes/1");
  theirs = get(other, "/bytes/2");
  cr_assert_eq(xfer_multi_perform(other, NULL), XFER_M_OK);
  mine = fetch(owner, "/bytes/3"); /* before the owner heard the wake-up */
  cr_assert_eq(xfer_get_reused(mine), 0, "not the promised one");
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.released_on_demand, 1);
  th_run(other, 5000);
  cr_assert_eq(th_result(other, theirs), XFER_OK);
  cr_assert_eq(xfer_get_conn_id(theirs), xfer_get_conn_id(first));
  cr_assert_eq(xfer_multi_destroy(owner), XFER_M_OK);
  cr_assert_eq(xfer_multi_destroy(other), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
}

/* xfer_multi_destroy() lets every attached connection go to the shared
 * side, where another multi finds it. */
TH_TEST(attached, destroy_releases_them) {
  xfer_pool *p = xfer_pool_new(NULL);
  xfer_multi *m = xfer_multi_new(p);
  xfer_pool_stats ps;
  xfer *first, *second;

  first = fetch(m, "/bytes/1");
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.attached, 0);
  cr_assert_eq(ps.idle, 1);
  m = xfer_multi_new(p);
  second = fetch(m, "/bytes/1");
  cr_assert_eq(xfer_get_reused(second), 1);
  cr_assert_eq(xfer_get_conn_id(second), xfer_get_conn_id(first));
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
}

/* The pool's counts of attached connections and of their reuse are kept
 * by each multi apart (its tally, no shared counter a request): the pool's
 * statistics add up the multis that share it, and keep what a destroyed
 * multi counted. */
TH_TEST(attached, the_pool_counts_every_multis_reuse) {
  xfer_pool *p = xfer_pool_new(NULL);
  xfer_multi *m1 = xfer_multi_new(p), *m2 = xfer_multi_new(p);
  xfer_pool_stats ps;

  fetch(m1, "/bytes/1");
  fetch(m1, "/bytes/1");
  fetch(m1, "/bytes/1"); /* m1: two reuses, one attached */
  fetch(m2, "/bytes/1");
  fetch(m2, "/bytes/1"); /* m2: one reuse, one attached */
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.attached, 2);
  cr_assert_eq(ps.idle, 2);
  cr_assert_eq(ps.reused_total, 3);
  cr_assert_eq(ps.checkout_hits, 3);
  cr_assert_eq(xfer_multi_destroy(m1), XFER_M_OK);
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.attached, 1, "m1's went to the shared side");
  cr_assert_eq(ps.idle, 2);
  cr_assert_eq(ps.reused_total, 3, "m1's reuses stay counted");
  fetch(m2, "/bytes/1");
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.reused_total, 4);
  cr_assert_eq(ps.opened_total, 2);
  cr_assert_eq(xfer_multi_destroy(m2), XFER_M_OK);
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.attached, 0);
  cr_assert_eq(ps.idle, 2);
  cr_assert_eq(ps.reused_total, 4);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
}

/* The lifetime limit holds for attached connections too (test clock). */
TH_TEST(attached, too_old_is_not_reused) {
  xfer_pool *p = xfer_pool_new(&(xfer_pool_opts){.max_lifetime_ms = 5000,
                                                 .attach_hold_ms = 60000});
  xfer_multi *m = xfer_multi_new(p);
  xfer_pool_stats ps;

  th_clock_install(MS(1000000), 0);
  fetch(m, "/bytes/1");
  th_clock_advance(MS(6000));
  cr_assert_eq(xfer_get_reused(fetch(m, "/bytes/1")), 0);
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.closed_lifetime, 1);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
  th_clock_uninstall();
}

/* Attaching off: the connection goes to the shared side as its transfer
 * ends. */
TH_TEST(attached, can_be_turned_off) {
  xfer_pool *p =
      xfer_pool_new(&(xfer_pool_opts){.attach_hold_ms = TH_NO_ATTACH});
  xfer_multi *m = xfer_multi_new(p);
  xfer_pool_stats ps;

  fetch(m, "/bytes/1");
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.attached, 0);
  cr_assert_eq(ps.idle, 1);
  cr_assert_null(m->loop.wake, "no wake-up fd needed");
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
}

/* --- the start inside xfer_multi_add() -------------------------------------- */

static bool told_zero(const struct th_timerrec *tr, int from) {
  for (int i = from; i < tr->count; i++)
    if (tr->timeouts[i] == 0)
      return true;
  return false;
}

/* fd's one user (a reader) is x's use of it (conns 0, x's tracker holds
 * it), or the connection's (conns 1, x's tracker empty). */
static void expect_one_use(xfer_multi *m, int fd, const xfer *x, bool by_conn) {
  struct xfer__mev_socket_info info;

  cr_assert(xfer__mev_socket_info(&m->loop.ev, fd, &info));
  cr_assert_eq(info.conns, by_conn ? 1 : 0);
  cr_assert_eq(info.users, 1);
  cr_assert_eq(info.readers, 1);
  cr_assert_eq(x->ev.count, by_conn ? 0 : 1);
}

/* The second request of a test, started inside the add on the attached
 * connection, gets its 20-byte answer on it with no socket callback
 * since `calls`, and the socket's use is the connection's again. */
static void expect_answer_on_attached(xfer_multi *m, int fd, xfer *second,
                                      const struct th_sockrec *rec, int calls) {
  th_run(m, 5000);
  cr_assert_eq(th_result(m, second), XFER_OK, "%s",
               xfer_get_error_detail(second));
  cr_assert_eq(xfer_get_reused(second), 1);
  th_expect_pattern(sinks[1].data, sinks[1].len, 20);
  cr_assert_eq(rec->count, calls, "and none until the answer");
  expect_one_use(m, fd, second, true);
}

/* With the connection attached and nothing to check, the request goes out
 * inside the add, on the add's clock reading: no 0 ms timer, no timeout
 * action, no socket callback; the answer comes with the socket's IN. */
TH_TEST(attached, the_next_request_goes_out_inside_add) {
  static struct th_sockrec rec;
  static struct th_timerrec tr;
  xfer_multi *m = xfer_multi_new(NULL);
  xfer_multi_stats before = {0}, after = {0};
  uint64_t sent = 0;
  xfer *second;
  int calls, timers, fd;

  th_sockrec_init(&rec);
  th_timerrec_init(&tr);
  xfer_multi_set_socket_cb(m, th_sockrec_cb, &rec);
  xfer_multi_set_timer_cb(m, th_timerrec_cb, &tr);
  fetch(m, "/delay/20/bytes/10");
  calls = rec.count;
  timers = tr.count;
  xfer_multi_get_stats(m, &before);
  second = get(m, "/bytes/20");
  xfer_get_bytes(second, &sent, NULL);
  cr_assert_gt(sent, 0, "the request went out inside the add");
  cr_assert_eq(rec.count, calls, "no socket callback");
  cr_assert(xfer__conn_socket_alone(second->http.conn),
            "a plain socket: its pollset needed no call down the stack");
  /* The connection's use of its socket became the transfer's... */
  fd = rec.calls[rec.count - 1].fd;
  expect_one_use(m, fd, second, false);
  cr_assert(!told_zero(&tr, timers), "no 0 ms timer");
  xfer_multi_get_stats(m, &after);
  cr_assert_eq(after.clock_reads - before.clock_reads, 1,
               "the add's one clock reading");
  cr_assert(ts_wait(web, TS_REQUESTS, 2, 5000));
  /* ...and the connection's again once it is attached anew. */
  expect_answer_on_attached(m, fd, second, &rec, calls);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
}

/* A filter that passes everything to the socket below it, and is not the
 * socket: its stack's pollset must be asked for (TLS will be such a
 * filter). */
static struct xfer__cf *first_pass; /* the first one made */
static int npass;

static enum xfer__cf_progress pass_connect(struct xfer__cf *cf,
                                           struct xfer__mev *ev, xfer__time now,
                                           xfer__time *next_at, char *why,
                                           size_t why_len) {
  (void)cf, (void)ev, (void)now, (void)next_at, (void)why, (void)why_len;
  return XFER__CF_DONE;
}

static void pass_close(struct xfer__cf *cf, struct xfer__mev *ev) {
  (void)ev;
  xfer__free(cf);
}

static const struct xfer__cf_type pass_type = {
    .name = "pass",
    .connect = pass_connect,
    .pollset = xfer__cf_pass_pollset,
    .send = xfer__cf_pass_send,
    .recv = xfer__cf_pass_recv,
    .close = pass_close,
};

static void add_pass(struct xfer__conn *c) {
  struct xfer__cf *cf = xfer__calloc(1, sizeof(*cf));

  cr_assert_not_null(cf);
  cf->type = &pass_type;
  xfer__cf_push(&c->filters, cf);
  if (npass++ == 0)
    first_pass = cf;
}

/* With a filter over the socket, the start inside the add asks the stack
 * for its pollset (the socket-alone shortcut does not apply) and comes to
 * the same: no socket callback, the socket's use the transfer's and then
 * the connection's again. */
TH_TEST(attached, a_filter_over_the_socket_starts_inside_add_too) {
  static struct th_sockrec rec;
  xfer_multi *m = xfer_multi_new(NULL);
  uint64_t sent = 0;
  xfer *first, *second;
  int calls, fd;

  npass = 0;
  xfer__cf_test_hook = add_pass;
  th_sockrec_init(&rec);
  xfer_multi_set_socket_cb(m, th_sockrec_cb, &rec);
  first = fetch(m, "/delay/20/bytes/10");
  cr_assert_eq(npass, 1);
  calls = rec.count;
  fd = rec.calls[rec.count - 1].fd;
  second = get(m, "/bytes/20");
  xfer_get_bytes(second, &sent, NULL);
  cr_assert_gt(sent, 0, "the request went out inside the add");
  cr_assert_eq(rec.count, calls, "no socket callback");
  cr_assert_not_null(second->http.conn);
  cr_assert_eq(second->http.conn->filters, first_pass, "the same stack");
  cr_assert(!xfer__conn_socket_alone(second->http.conn));
  expect_one_use(m, fd, second, false);
  expect_answer_on_attached(m, fd, second, &rec, calls);
  cr_assert_eq(xfer_get_reused(first), 0);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  xfer__cf_test_hook = NULL;
}

/* Anything else starts at the 0 ms timer, as before, and the add tells
 * the application nothing about sockets: a first request (DNS-free, but a
 * new connection), and one to another destination. */
TH_TEST(attached, a_new_connection_starts_at_the_timer) {
  static struct th_sockrec rec;
  static struct th_timerrec tr;
  struct ts_server *other = ts_start(NULL);
  xfer_multi *m = xfer_multi_new(NULL);
  uint64_t sent = 1;
  xfer *x;
  int timers;

  th_sockrec_init(&rec);
  th_timerrec_init(&tr);
  xfer_multi_set_socket_cb(m, th_sockrec_cb, &rec);
  xfer_multi_set_timer_cb(m, th_timerrec_cb, &tr);
  x = get(m, "/bytes/5");
  xfer_get_bytes(x, &sent, NULL);
  cr_assert_eq(sent, 0);
  cr_assert_eq(rec.count, 0);
  cr_assert(told_zero(&tr, 0));
  th_run(m, 5000);
  cr_assert_eq(th_result(m, x), XFER_OK);
  /* th_run drives with perform: the application's timer fires now. */
  cr_assert_eq(xfer_multi_socket_timeout(m, NULL), XFER_M_OK);
  timers = tr.count;
  xs[nxs++] = x = th_get(m, th_url(ts_port(other), "/bytes/5"), NULL);
  xfer_get_bytes(x, &sent, NULL);
  cr_assert_eq(sent, 0, "another destination: a new connection");
  cr_assert(told_zero(&tr, timers));
  th_run(m, 5000);
  cr_assert_eq(th_result(m, x), XFER_OK);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  ts_stop(other);
}

/* Without callbacks (perform and poll), the start inside the add works
 * the same: the socket is in the multi's poll set. */
TH_TEST(attached, perform_and_poll_start_inside_add_too) {
  xfer_multi *m = xfer_multi_new(NULL);
  uint64_t sent = 0;
  xfer *second;

  fetch(m, "/bytes/10");
  second = get(m, "/bytes/30");
  xfer_get_bytes(second, &sent, NULL);
  cr_assert_gt(sent, 0);
  /* The socket's use was handed to it: its one use, IN. */
  cr_assert_eq(second->ev.count, 1);
  cr_assert_eq(second->ev.uses[0].fd, second->http.conn->fd);
  cr_assert_eq(second->ev.uses[0].want, XFER_POLL_IN);
  cr_assert(!second->http.conn->ev_live, "the connection's own use is gone");
  th_run(m, 5000);
  cr_assert_eq(th_result(m, second), XFER_OK);
  th_expect_pattern(sinks[1].data, sinks[1].len, 30);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
}

/* A socket callback set since the last call hears every socket anew at
 * the next call; the add does not start the request then (that would
 * report inside the add), the timer run does. */
TH_TEST(attached, no_start_inside_add_right_after_a_new_socket_callback) {
  static struct th_sockrec rec;
  xfer_multi *m = xfer_multi_new(NULL);
  uint64_t sent = 1;
  xfer *second;

  fetch(m, "/bytes/10"); /* perform and poll: no callback */
  th_sockrec_init(&rec);
  xfer_multi_set_socket_cb(m, th_sockrec_cb, &rec);
  second = get(m, "/bytes/30");
  xfer_get_bytes(second, &sent, NULL);
  cr_assert_eq(sent, 0, "not started inside the add");
  th_run(m, 5000);
  cr_assert_eq(th_result(m, second), XFER_OK);
  cr_assert_eq(xfer_get_reused(second), 1);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
}

/* The attached connection died (the server closed it) and its event was
 * not processed yet: the request goes out inside the add all the same
 * (nothing says otherwise without a system call), and the failure that
 * follows is retried on a new connection, as for any reused one. */
TH_TEST(attached, a_dead_attached_connection_is_retried) {
  struct ts_server *closing = ts_start(NULL);
  xfer_pool *p = xfer_pool_new(&(xfer_pool_opts){.attach_hold_ms = 600000});
  xfer_multi *m = xfer_multi_new(p);
  xfer_pool_stats ps;
  uint64_t sent = 0;
  xfer *x;

  xs[nxs++] = x = th_get(m, th_url(ts_port(closing), "/bytes/3"), NULL);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, x), XFER_OK);
  ts_close_idle(closing);
  cr_assert(ts_wait(closing, TS_CLOSED_BY_SERVER, 1, 5000));
  xs[nxs++] = x = th_get(m, th_url(ts_port(closing), "/bytes/4"), NULL);
  xfer_get_bytes(x, &sent, NULL);
  cr_assert_gt(sent, 0, "sent on the attached connection");
  th_run(m, 5000);
  cr_assert_eq(th_result(m, x), XFER_OK, "%s", xfer_get_error_detail(x));
  cr_assert_eq(xfer_get_reused(x), 0, "answered on a new connection");
  xfer_pool_get_stats(m->loop.pool, &ps);
  cr_assert_eq(ps.retries_total, 1);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
  ts_stop(closing);
}

/* A plain socket of the test as a server on 127.0.0.1: its listener,
 * and its URL in url. */
static int plain_listener(char *url, size_t url_len) {
  struct sockaddr_in sa = {.sin_family = AF_INET};
  socklen_t len = sizeof(sa);
  int lfd = socket(AF_INET, SOCK_STREAM, 0);

  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  cr_assert_eq(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  cr_assert_eq(listen(lfd, 1), 0);
  cr_assert_eq(getsockname(lfd, (struct sockaddr *)&sa, &len), 0);
  snprintf(url, url_len, "http://127.0.0.1:%d/", ntohs(sa.sin_port));
  return lfd;
}

/* A GET of url in m, on a new connection the test accepts on lfd, reads
 * the request of and answers (one byte, kept alive): the transfer is
 * done, its connection attached. Returns the server's side of it. */
static int answer_one_get(xfer_multi *m, int lfd, const char *url) {
  static const char answer[] = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
  char buf[4096];
  xfer *x;
  int sfd;

  xs[nxs++] = x = th_get(m, url, NULL);
  cr_assert_eq(xfer_multi_socket_timeout(m, NULL), XFER_M_OK); /* connects */
  sfd = accept(lfd, NULL, NULL); /* the backlog holds it: no wait on us */
  cr_assert_geq(sfd, 0);
  cr_assert_eq(setsockopt(sfd, SOL_SOCKET, SO_RCVTIMEO,
                          &(struct timeval){.tv_sec = 5},
                          sizeof(struct timeval)),
               0); /* a bound, should the request not come */
  th_run_for(m, 1); /* connected: the request goes out in the first run */
  cr_assert_gt(read(sfd, buf, sizeof(buf)), 0, "the first request");
  cr_assert_eq(write(sfd, answer, sizeof(answer) - 1),
               (ssize_t)sizeof(answer) - 1);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, x), XFER_OK, "%s", xfer_get_error_detail(x));
  return sfd;
}

/* A request too large for one send starts inside the add and goes on at
 * the 0 ms timer (which is told), where it asks for OUT: the add itself
 * tells the application nothing about sockets. The server is a plain
 * socket of the test that answers the first request and then reads
 * nothing, so the 32 MiB body cannot fit the socket buffers. */
TH_TEST(attached, a_request_too_large_for_one_send_goes_on_at_the_timer) {
  enum { BIG = 32 << 20 };
  static struct th_sockrec rec;
  static struct th_timerrec tr;
  xfer_multi *m = xfer_multi_new(NULL);
  char *body = calloc(1, BIG), url[64];
  int lfd = plain_listener(url, sizeof(url)), sfd;
  uint64_t sent = 0;
  xfer *x;
  int calls, timers;

  cr_assert_not_null(body);
  th_sockrec_init(&rec);
  th_timerrec_init(&tr);
  xfer_multi_set_socket_cb(m, th_sockrec_cb, &rec);
  xfer_multi_set_timer_cb(m, th_timerrec_cb, &tr);

  sfd = answer_one_get(m, lfd, url);
  cr_assert_eq(xfer_multi_socket_timeout(m, NULL), XFER_M_OK);
  calls = rec.count;
  timers = tr.count;

  xs[nxs++] = x = xfer_new();
  xfer_set_url(x, url);
  xfer_set_method(x, "PUT"); /* idempotent: a reused connection is fine */
  xfer_set_body(x, body, BIG);
  cr_assert_eq(xfer_multi_add(m, x), XFER_M_OK);
  xfer_get_bytes(x, &sent, NULL);
  cr_assert_gt(sent, 0, "started inside the add");
  cr_assert_lt(sent, (uint64_t)BIG, "and could not finish there");
  cr_assert_eq(rec.count, calls, "the add told nothing about sockets");
  cr_assert(told_zero(&tr, timers), "the rest goes on at the timer");
  cr_assert_eq(xfer_multi_socket_timeout(m, NULL), XFER_M_OK);
  cr_assert_gt(rec.count, calls, "now it waits for OUT");
  cr_assert(rec.calls[calls].what & XFER_POLL_OUT);
  cr_assert_eq(rec.calls[rec.count - 1].what & XFER_POLL_OUT, XFER_POLL_OUT);
  cr_assert_eq(xfer_multi_remove(m, x), XFER_M_OK);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  close(sfd);
  close(lfd);
  free(body);
}

/* A send that failed inside xfer_multi_add() (the attached connection was
 * reset meanwhile) is said at the transfer's first run; a transfer
 * removed before that run, and added again, starts clean. The old error
 * stayed, and failed the new run's first send, on a new connection, with
 * "Connection reset by peer" and nothing written. */
TH_TEST(attached, a_send_failed_inside_add_does_not_outlive_the_run) {
  static struct th_sockrec rec;
  xfer_multi *m = xfer_multi_new(NULL), *other = xfer_multi_new(NULL);
  char url[64];
  int lfd = plain_listener(url, sizeof(url)), sfd, cfd;
  struct pollfd reset;
  uint64_t sent = 1;
  xfer *x;

  th_sockrec_init(&rec);
  xfer_multi_set_socket_cb(m, th_sockrec_cb, &rec);
  sfd = answer_one_get(m, lfd, url);
  cr_assert_gt(rec.count, 0);
  cfd = rec.calls[rec.count - 1].fd; /* the attached connection's */
  /* The server resets it, and the reset has arrived (the multi is not
   * driven, so the connection stays attached). */
  cr_assert_eq(setsockopt(sfd, SOL_SOCKET, SO_LINGER,
                          &(struct linger){.l_onoff = 1, .l_linger = 0},
                          sizeof(struct linger)),
               0);
  close(sfd);
  reset = (struct pollfd){.fd = cfd, .events = POLLIN};
  cr_assert_eq(poll(&reset, 1, 5000), 1);
  cr_assert(reset.revents & (POLLERR | POLLHUP), "%x", reset.revents);

  xs[nxs++] = x = th_get(m, url, NULL); /* the send fails inside the add */
  xfer_get_bytes(x, &sent, NULL);
  cr_assert_eq(sent, 0);
  cr_assert_eq(xfer_multi_remove(m, x), XFER_M_OK); /* before its run */
  cr_assert_eq(xfer_set_url(x, th_url(ts_port(web), "/bytes/3")), XFER_OK);
  cr_assert_eq(xfer_multi_add(other, x), XFER_M_OK);
  th_run(other, 5000);
  cr_assert_eq(th_result(other, x), XFER_OK, "%s", xfer_get_error_detail(x));
  cr_assert_eq(xfer_get_reused(x), 0);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_multi_destroy(other), XFER_M_OK);
  close(lfd);
}

/* An attached connection that the check before a reuse finds closed is
 * counted as the pool counts any connection found so (dead_on_checkout),
 * and the new one opened for the request as a reopen. It was counted as
 * a peer's close, and the new one as a plain open. */
TH_TEST(attached, one_found_dead_by_the_check_is_counted_so) {
  xfer_pool *p;
  xfer_multi *m;
  xfer_pool_stats ps;
  xfer *x;

  th_clock_install(MS(1000), 0); /* idle time passes when the test says */
  p = xfer_pool_new(&(xfer_pool_opts){.attach_hold_ms = 600000});
  m = xfer_multi_new(p);
  fetch(m, "/bytes/3");
  ts_close_idle(web);
  cr_assert(ts_wait(web, TS_CLOSED_BY_SERVER, 1, 5000));
  th_clock_advance(MS(2000)); /* past recheck_ms: checked before a reuse */
  x = get(m, "/bytes/4");
  /* Its run at the timer, before any event of the attached socket. */
  cr_assert_eq(xfer_multi_socket_timeout(m, NULL), XFER_M_OK);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, x), XFER_OK, "%s", xfer_get_error_detail(x));
  cr_assert_eq(xfer_get_reused(x), 0);
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.dead_on_checkout, 1);
  cr_assert_eq(ps.closed_peer, 0);
  cr_assert_eq(ps.reopened_total, 1);
  cr_assert_eq(ps.liveness_checks, 1);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
  th_clock_uninstall();
}

/* The largest value of every time option of the pool means no limit:
 * neither an overflow (UBSan builds trap on one) nor a connection that
 * expires, a hold that ends or a wait that gives up at once. The other
 * multi's transfer asks for the attached connection and gets it when the
 * owner runs (attached_wait INT_MAX never gives up). */
TH_TEST(attached, the_largest_pool_time_options_mean_no_limit) {
  xfer_pool *p = xfer_pool_new(&(xfer_pool_opts){
      .recheck_ms = UINT_MAX,
      .idle_timeout_ms = UINT_MAX,
      .max_lifetime_ms = UINT_MAX,
      .attach_hold_ms = INT_MAX,
      .attached_wait_ms = INT_MAX});
  xfer_multi *owner = xfer_multi_new(p), *other = xfer_multi_new(p);
  struct th_timerrec tr;
  xfer_pool_stats ps;
  xfer *first, *again, *theirs;

  th_timerrec_init(&tr);
  xfer_multi_set_timer_cb(owner, th_timerrec_cb, &tr);
  first = fetch(owner, "/bytes/1");
  again = fetch(owner, "/bytes/2");
  cr_assert_eq(xfer_get_reused(again), 1, "attached, not expired");
  for (int i = 0; i < tr.count; i++)
    cr_assert_geq(tr.timeouts[i], 0, "no deadline wrapped into the past");
  theirs = get(other, "/bytes/3");
  cr_assert_eq(xfer_multi_perform(other, NULL), XFER_M_OK);
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.waiting, 1, "it waits for the owner's release");
  th_run_for(owner, 30); /* the owner hears the wake-up: REMOVE, release */
  th_run(other, 5000);
  cr_assert_eq(th_result(other, theirs), XFER_OK, "%s",
               xfer_get_error_detail(theirs));
  cr_assert_eq(xfer_get_conn_id(theirs), xfer_get_conn_id(first));
  xfer_pool_get_stats(p, &ps);
  cr_assert_eq(ps.opened_total, 1);
  cr_assert_eq(xfer_multi_destroy(owner), XFER_M_OK);
  cr_assert_eq(xfer_multi_destroy(other), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
}
