/*
 * The multi's socket interface end to end: every scenario of the seed
 * multi-ev.md through a whole multi (its socket callback, socket_action,
 * assign, transfers and connections), with the exact sequence of socket
 * callback calls the application sees. tests/test_multi_ev.c tests the
 * event tracking alone, with fake owners.
 */
#include <criterion/criterion.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testhelp.h"

static xfer_multi *m;
static struct th_sockrec rec;

static void setup(void) {
  th_sockrec_init(&rec);
  m = xfer_multi_new(NULL);
  cr_assert_not_null(m);
  cr_assert_eq(xfer_multi_set_socket_cb(m, th_sockrec_cb, &rec), XFER_M_OK);
}

static void multi_socket_end(void) {
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  tt_free_all();
}

TestSuite(multi_socket, .init = setup);

static struct tt *added(int id) {
  struct tt *t = tt_new(id);
  cr_assert_eq(xfer_multi_add(m, t->x), XFER_M_OK);
  return t;
}

static void assess(struct tt *t) {
  struct xfer__pollset ps;

  xfer__pollset_reset(&ps);
  t->x->handler->pollset(t->x, &ps);
  cr_assert_eq(xfer__mev_assess(&m->loop.ev, &t->x->ev, &ps), XFER_OK);
}

static struct xfer__mev_socket_info info(int fd) {
  struct xfer__mev_socket_info i;
  cr_assert(xfer__mev_socket_info(&m->loop.ev, fd, &i), "fd %d is not tracked",
            fd);
  return i;
}

static bool tracked(int fd) {
  struct xfer__mev_socket_info i;
  return xfer__mev_socket_info(&m->loop.ev, fd, &i);
}

/* Fake fd numbers: the table never touches the descriptors themselves. */
enum { S = 40, T = 41, U = 42 };

/* The same over a real socket: data on it runs every transfer using it,
 * and each sees it. */
static enum xfer__step read_one(struct tt *t, unsigned due) {
  char c;
  if (read(t->ps.fd[0], &c, 1) == 1)
    t->state++;
  return XFER__STEP_AGAIN;
}

TH_TEST(multi_socket, shared_real_socket_wakes_every_user) {
  struct tt *a = tt_new(1), *b = tt_new(2), *c = tt_new(3);
  struct pollfd pfd;
  int sv[2];

  th_socketpair(sv);
  a->on_run = b->on_run = read_one;
  tt_want(a, sv[0], XFER_POLL_IN);
  tt_want(b, sv[0], XFER_POLL_IN);
  tt_want(c, sv[1], XFER_POLL_IN);
  a->close_fds[0] = sv[0];
  a->nclose = 1;
  c->close_fds[0] = sv[1];
  c->nclose = 1;
  xfer_multi_add(m, a->x);
  xfer_multi_add(m, b->x);
  xfer_multi_add(m, c->x);
  cr_assert_eq(xfer_multi_socket_timeout(m, NULL), XFER_M_OK);
  cr_assert_eq(info(sv[0]).readers, 2);
  th_expect_calls(&rec, 0, (int[]){sv[0], XFER_POLL_IN, sv[1], XFER_POLL_IN},
                  2);
  cr_assert_eq(write(sv[1], "xy", 2), 2);
  pfd.fd = sv[0];
  pfd.events = POLLIN;
  cr_assert_eq(poll(&pfd, 1, 1000), 1);
  cr_assert_eq(xfer_multi_socket_action(m, sv[0], XFER_CSELECT_IN, NULL),
               XFER_M_OK);
  cr_assert_eq(a->runs, 2);
  cr_assert_eq(b->runs, 2);
  cr_assert_eq(c->runs, 1, "c waits on the other end");
  cr_assert_eq(a->state + b->state, 2, "each read one byte");
  cr_assert_eq(rec.count, 2, "nothing changed for the application");
}

/*
 * The kernel hands out a closed socket's number at once. A transfer closes
 * its socket through socket_done and opens another that gets the same
 * number: the application must see REMOVE, then a fresh ADD, and no stale
 * entry (a second transfer had the old socket in its last pollset too).
 */
static enum xfer__step reuse_run(struct tt *t, unsigned due) {
  int sv[2];

  if (t->state++ == 0) { /* first run: open a socket, read from it */
    th_socketpair(sv);
    t->close_fds[0] = sv[0];
    t->close_fds[1] = sv[1];
    t->nclose = 2;
    tt_want(t, sv[0], XFER_POLL_IN);
    return XFER__STEP_AGAIN;
  }
  if (t->state == 2) { /* second run: replace the socket */
    int old = t->close_fds[0];
    tt_want(t, old, 0);
    xfer__mev_socket_done(&t->x->loop->ev, old); /* before close() */
    close(old);
    close(t->close_fds[1]);
    th_socketpair(sv);
    cr_assert_eq(sv[0], old, "the kernel did not reuse fd %d", old);
    t->close_fds[0] = sv[0];
    t->close_fds[1] = sv[1];
    tt_want(t, sv[0], XFER_POLL_IN);
    return XFER__STEP_AGAIN;
  }
  return XFER__STEP_DONE;
}

TH_TEST(multi_socket, closed_fd_number_reused_at_once) {
  struct tt *a = tt_new(1), *b = added(2);
  int fd;

  a->on_run = reuse_run;
  cr_assert_eq(xfer_multi_add(m, a->x), XFER_M_OK);
  cr_assert_eq(xfer_multi_socket_timeout(m, NULL), XFER_M_OK);
  fd = a->close_fds[0];
  tt_want(b, fd, XFER_POLL_IN); /* b shares the old socket */
  assess(b);
  cr_assert_eq(info(fd).readers, 2);
  cr_assert_eq(xfer_multi_socket_action(m, fd, XFER_CSELECT_IN, NULL),
               XFER_M_OK);
  /* a ran first and replaced the socket. The old one was purged from b's
   * pollset too: when b ran next, it remembered nothing of the number, and
   * its interest joined the new socket, which was already watched. */
  cr_assert_eq(b->uses_at_run, 0);
  cr_assert_eq(info(fd).readers, 2);
  th_expect_calls(&rec, 0,
                  (int[]){fd, XFER_POLL_IN, fd, XFER_POLL_REMOVE, fd,
                          XFER_POLL_IN},
                  3);
  /* a finishes: its cleanup closes the socket through socket_done, while
   * b (done with the socket) no longer asks for it. */
  tt_want(b, fd, 0);
  cr_assert_eq(xfer_multi_socket_action(m, fd, XFER_CSELECT_IN, NULL),
               XFER_M_OK);
  th_expect_calls(&rec, 3, (int[]){fd, XFER_POLL_REMOVE}, 1);
  cr_assert_eq(b->x->ev.count, 0);
  cr_assert(!tracked(fd));
}

struct conn_events {
  int calls;
  int fd;
  int events;
};

static struct conn_events conn_seen;

static void conn_on_event(struct xfer__mev_tracker *conn, int fd,
                          int events) {
  conn_seen.calls++;
  conn_seen.fd = fd;
  conn_seen.events = events;
}

static const struct xfer__mev_ops conn_seen_ops = {.event = conn_on_event};

TH_TEST(multi_socket, connection_interest_is_reported_and_dispatched) {
  struct xfer__mev_tracker conn;
  struct xfer__pollset ps;
  struct tt *a = added(1);
  int runs;

  xfer__mev_tracker_init(&conn, XFER__MEV_CONN, &conn_seen_ops, NULL);
  xfer__pollset_reset(&ps);
  xfer__pollset_add(&ps, S, XFER_POLL_IN);
  cr_assert_eq(xfer__mev_assess(&m->loop.ev, &conn, &ps), XFER_OK);
  cr_assert(xfer__mev_expire_xfers(&m->loop.ev, S),
            "the connection is interested");
  cr_assert(!xfer__mev_expire_xfers(&m->loop.ev, T),
            "an untracked fd interests no one");

  cr_assert_eq(xfer_multi_socket_timeout(m, NULL), XFER_M_OK); /* a runs */
  runs = a->runs;
  cr_assert_eq(xfer_multi_socket_action(m, S, XFER_CSELECT_IN, NULL),
               XFER_M_OK);
  cr_assert_eq(conn_seen.calls, 1);
  cr_assert_eq(conn_seen.fd, S);
  cr_assert_eq(conn_seen.events, XFER_CSELECT_IN);
  cr_assert_eq(a->runs, runs, "a does not use S");

  /* Shared with a transfer: both hear of it. */
  tt_want(a, S, XFER_POLL_OUT);
  assess(a);
  cr_assert_eq(xfer_multi_socket_action(m, S, XFER_CSELECT_OUT, NULL),
               XFER_M_OK);
  cr_assert_eq(conn_seen.calls, 2);
  cr_assert_eq(a->runs, runs + 1);
  xfer__mev_tracker_done(&m->loop.ev, &conn);
  cr_assert(!xfer__mev_expire_xfers(&m->loop.ev, S));
  th_expect_calls(&rec, 0,
                  (int[]){S, XFER_POLL_IN, S, XFER_POLL_INOUT, S,
                          XFER_POLL_OUT},
                  3);
}

/* A connection handler may close the very socket it is told about. */
static void conn_close_on_event(struct xfer__mev_tracker *conn, int fd,
                                int events) {
  xfer_multi *owner = conn->owner;

  conn_seen.calls++;
  xfer__mev_socket_done(&owner->loop.ev, fd);
}

static const struct xfer__mev_ops conn_close_ops = {.event =
                                                        conn_close_on_event};

TH_TEST(multi_socket, connection_handler_may_close_its_socket) {
  struct xfer__mev_tracker c1, c2;
  struct xfer__pollset ps;

  xfer__mev_tracker_init(&c1, XFER__MEV_CONN, &conn_close_ops, m);
  xfer__mev_tracker_init(&c2, XFER__MEV_CONN, &conn_close_ops, m);
  xfer__pollset_reset(&ps);
  xfer__pollset_add(&ps, S, XFER_POLL_IN);
  xfer__mev_assess(&m->loop.ev, &c1, &ps);
  xfer__mev_assess(&m->loop.ev, &c2, &ps);
  cr_assert_eq(info(S).conns, 2);
  cr_assert_eq(xfer_multi_socket_action(m, S, XFER_CSELECT_IN, NULL),
               XFER_M_OK);
  cr_assert_eq(conn_seen.calls, 1, "the second connection lost the socket");
  cr_assert(!tracked(S));
  cr_assert_eq(c1.count + c2.count, 0);
  th_expect_calls(&rec, 0, (int[]){S, XFER_POLL_IN, S, XFER_POLL_REMOVE}, 2);
}

TH_TEST(multi_socket, socket_event_runs_exactly_its_users) {
  struct tt *a = added(1), *b = added(2), *c = added(3);

  cr_assert_eq(xfer_multi_socket_timeout(m, NULL), XFER_M_OK);
  cr_assert_eq(a->runs + b->runs + c->runs, 3);
  tt_want(a, S, XFER_POLL_IN);
  tt_want(b, S, XFER_POLL_OUT);
  tt_want(c, T, XFER_POLL_IN);
  assess(a);
  assess(b);
  assess(c);
  cr_assert_eq(xfer_multi_socket_action(m, S, XFER_CSELECT_IN, NULL),
               XFER_M_OK);
  cr_assert_eq(a->runs, 2);
  cr_assert_eq(b->runs, 2);
  cr_assert_eq(c->runs, 1);
  cr_assert_eq(xfer_multi_socket_action(m, T, XFER_CSELECT_IN, NULL),
               XFER_M_OK);
  cr_assert_eq(a->runs, 2);
  cr_assert_eq(c->runs, 2);
  /* An event racing a REMOVE names an fd nobody uses: ignored. */
  cr_assert_eq(xfer_multi_socket_action(m, U, XFER_CSELECT_IN, NULL),
               XFER_M_OK);
  cr_assert_eq(a->runs + b->runs + c->runs, 6);
}

/*
 * An application starts without events (perform), then sets a socket
 * callback in the middle of its transfers: the next call reports every
 * socket in use as new, and from then on only changes.
 */
static enum xfer__step switch_run(struct tt *t, unsigned due) {
  return ++t->state >= 6 ? XFER__STEP_DONE : XFER__STEP_AGAIN;
}

TH_TEST(multi_socket, late_switch_to_events_reports_every_socket_as_new) {
  struct tt *a = tt_new(1), *b = tt_new(2);
  int running;

  cr_assert_eq(xfer_multi_set_socket_cb(m, NULL, NULL), XFER_M_OK);
  a->on_run = switch_run;
  b->on_run = switch_run;
  tt_want(a, S, XFER_POLL_IN);
  tt_want(b, T, XFER_POLL_OUT);
  tt_want(b, S, XFER_POLL_IN);
  xfer_multi_add(m, a->x);
  xfer_multi_add(m, b->x);
  cr_assert_eq(xfer_multi_perform(m, &running), XFER_M_OK);
  cr_assert_eq(xfer_multi_perform(m, &running), XFER_M_OK);
  cr_assert_eq(running, 2);
  cr_assert_eq(info(S).readers, 2, "tracked without a callback too");
  cr_assert_eq(info(S).reported, 0);

  cr_assert_eq(xfer_multi_set_socket_cb(m, th_sockrec_cb, &rec), XFER_M_OK);
  cr_assert_eq(rec.count, 0, "nothing is reported from the setter");
  cr_assert_eq(xfer_multi_socket_timeout(m, &running), XFER_M_OK);
  th_expect_calls(&rec, 0, (int[]){S, XFER_POLL_IN, T, XFER_POLL_OUT}, 2);
  cr_assert_eq(info(S).reported, XFER_POLL_IN);

  tt_want(a, S, XFER_POLL_INOUT);
  cr_assert_eq(xfer_multi_socket_action(m, S, XFER_CSELECT_IN, &running),
               XFER_M_OK);
  th_expect_calls(&rec, 2, (int[]){S, XFER_POLL_INOUT}, 1);
  /* Back to perform until both are done. */
  for (int i = 0; i < 10 && running; i++)
    cr_assert_eq(xfer_multi_perform(m, &running), XFER_M_OK);
  cr_assert_eq(running, 0);
  /* a finishes first (S keeps b as reader), then b. */
  th_expect_calls(&rec, 3,
                  (int[]){S, XFER_POLL_IN, S, XFER_POLL_REMOVE, T,
                          XFER_POLL_REMOVE},
                  3);
}

TH_TEST(multi_socket, replaced_callback_hears_everything_anew) {
  static struct th_sockrec rec2; /* outlives the body: teardown reports to it */
  struct tt *a = added(1);

  th_sockrec_init(&rec2);
  tt_want(a, S, XFER_POLL_IN);
  assess(a);
  cr_assert_eq(xfer_multi_set_socket_cb(m, th_sockrec_cb, &rec2), XFER_M_OK);
  cr_assert_eq(xfer_multi_socket_timeout(m, NULL), XFER_M_OK);
  th_expect_calls(&rec, 0, (int[]){S, XFER_POLL_IN}, 1);
  th_expect_calls(&rec2, 0, (int[]){S, XFER_POLL_IN}, 1);
}

TH_TEST(multi_socket, refused_socket_fails_only_its_transfer) {
  struct tt *a = tt_new(1), *b = tt_new(2);
  const xfer_msg *msg;
  int running;

  rec.refuse_fd = T;
  tt_want(a, S, XFER_POLL_IN);
  tt_want(b, T, XFER_POLL_IN);
  xfer_multi_add(m, a->x);
  xfer_multi_add(m, b->x);
  cr_assert_eq(xfer_multi_socket_timeout(m, &running), XFER_M_OK);
  cr_assert_eq(running, 1);
  msg = xfer_multi_info_read(m, NULL);
  cr_assert_not_null(msg);
  cr_assert_eq(msg->x, b->x);
  cr_assert_eq(msg->result, XFER_E_SOCKET_CALLBACK);
  cr_assert_eq(strncmp(xfer_get_error_detail(b->x),
                       "the socket callback refused fd ", 31), 0, "%s",
               xfer_get_error_detail(b->x));
  cr_assert_eq(atoi(xfer_get_error_detail(b->x) + 31), T);
  cr_assert_null(xfer_multi_info_read(m, NULL));
  /* No REMOVE of T: the application never took it. */
  th_expect_calls(&rec, 0, (int[]){S, XFER_POLL_IN, T, XFER_POLL_IN}, 2);
  cr_assert_eq(info(S).readers, 1, "a keeps its socket");
}

TH_TEST(multi_socket, refused_socket_at_late_switch_fails_its_users) {
  struct tt *a = added(1), *b = added(2);
  int running;

  cr_assert_eq(xfer_multi_set_socket_cb(m, NULL, NULL), XFER_M_OK);
  tt_want(a, S, XFER_POLL_IN);
  tt_want(b, T, XFER_POLL_IN);
  cr_assert_eq(xfer_multi_perform(m, &running), XFER_M_OK);
  rec.refuse_fd = T;
  cr_assert_eq(xfer_multi_set_socket_cb(m, th_sockrec_cb, &rec), XFER_M_OK);
  cr_assert_eq(xfer_multi_socket_timeout(m, &running), XFER_M_OK);
  cr_assert_eq(running, 1);
  cr_assert_eq(xfer_multi_info_read(m, NULL)->x, b->x);
  cr_assert_str_eq(xfer_get_error_detail(b->x),
                   "the socket callback refused fd 41");
}

/* The same when the call that reports everything anew is a remove, which
 * runs no transfer: the refused one must still fail at once, at the timer
 * (it waited for an event of a socket nobody watches). */
TH_TEST(multi_socket, refused_at_a_remove_fails_at_the_timer) {
  static struct th_timerrec timers;
  struct tt *a = added(1), *b = added(2), *c = added(3);
  int running;

  th_timerrec_init(&timers);
  cr_assert_eq(xfer_multi_set_timer_cb(m, th_timerrec_cb, &timers), XFER_M_OK);
  cr_assert_eq(xfer_multi_set_socket_cb(m, NULL, NULL), XFER_M_OK);
  tt_want(a, S, XFER_POLL_IN);
  tt_want(b, T, XFER_POLL_IN);
  tt_want(c, U, XFER_POLL_IN);
  cr_assert_eq(xfer_multi_perform(m, &running), XFER_M_OK);
  cr_assert_eq(running, 3);
  rec.refuse_fd = T;
  cr_assert_eq(xfer_multi_set_socket_cb(m, th_sockrec_cb, &rec), XFER_M_OK);
  timers.count = 0;
  cr_assert_eq(xfer_multi_remove(m, c->x), XFER_M_OK);
  cr_assert_gt(timers.count, 0, "a timer for the refused transfer");
  cr_assert_eq(timers.timeouts[timers.count - 1], 0, "due at once");
  cr_assert_eq(xfer_multi_socket_timeout(m, &running), XFER_M_OK);
  cr_assert_eq(running, 1);
  cr_assert_eq(xfer_multi_info_read(m, NULL)->x, b->x);
  cr_assert_str_eq(xfer_get_error_detail(b->x),
                   "the socket callback refused fd 41");
  (void)a;
}

TH_TEST(multi_socket, assigned_pointer_comes_back_with_later_events) {
  struct tt *a = added(1);

  rec.assign = true;
  tt_want(a, S, XFER_POLL_IN);
  assess(a);
  tt_want(a, S, XFER_POLL_OUT);
  assess(a);
  tt_want(a, S, 0);
  assess(a);
  cr_assert_eq(rec.count, 3);
  cr_assert_null(rec.calls[0].socketp);
  cr_assert_not_null(rec.calls[1].socketp);
  cr_assert_eq(rec.calls[2].socketp, rec.calls[1].socketp);
  cr_assert_eq(xfer_multi_assign(m, S, NULL), XFER_M_BAD_ARGUMENT,
               "S is not tracked any more");
  cr_assert_eq(xfer_multi_assign(NULL, S, NULL), XFER_M_BAD_HANDLE);
}

/* An event costs one table lookup and runs only the socket's users, with
 * thousands of sockets tracked. */
TH_TEST(multi_socket, one_event_touches_one_socket_among_thousands) {
  enum { N = 5000, BASE = 1000 };
  static struct tt *t[N];
  xfer_multi_stats before = {0}, after = {0};

  for (int i = 0; i < N; i++) {
    t[i] = added(i);
    tt_want(t[i], BASE + i, XFER_POLL_IN);
  }
  cr_assert_eq(xfer_multi_socket_timeout(m, NULL), XFER_M_OK);
  cr_assert_eq(rec.count, N);
  xfer_multi_get_stats(m, &before);
  cr_assert_eq(before.sockets_tracked, N);
  cr_assert_eq(xfer_multi_socket_action(m, BASE + 4321, XFER_CSELECT_IN, NULL),
               XFER_M_OK);
  xfer_multi_get_stats(m, &after);
  cr_assert_eq(after.xfers_run - before.xfers_run, 1);
  cr_assert_eq(t[4321]->runs, 2);
  cr_assert_eq(after.socket_cb_calls, before.socket_cb_calls);
}

#ifdef XFER_DEBUG
#include <signal.h>
/* Rule 3: no application callback while this thread holds a pool lock;
 * debug builds stop at once. */
TH_TEST(multi_socket, socket_callback_under_pool_lock_aborts_in_debug,
        .signal = SIGABRT) {
  struct tt *a = added(1);

  tt_want(a, S, XFER_POLL_IN);
  xfer__pool_lock_depth++;
  assess(a);
}
#endif
