/*
 * lib/multi_ev.c alone: the socket table, last pollsets and the diff,
 * with fake owners and a recording report function, no multi and no
 * transfer. Every rule of the seed multi-ev.md that the table keeps by
 * itself is here; tests/test_multi_socket.c runs the same scenarios
 * through a whole multi.
 */
#include <criterion/criterion.h>
#include <poll.h>

#include "testhelp.h"

/* --- a recording report function -------------------------------------- */

#define MAX_REPORTS 64

struct report {
  int fd, what;
  void *socketp;
};

static struct report reports[MAX_REPORTS];
static int nreports;
static int refuse_fd = -1;
static int report_owner_tag;

static int record(void *owner, int fd, int what, void *socketp) {
  cr_assert_eq(owner, &report_owner_tag, "the owner given comes back");
  cr_assert_lt(nreports, MAX_REPORTS);
  reports[nreports++] = (struct report){fd, what, socketp};
  return fd == refuse_fd ? -1 : 0;
}

/* Reports [from, from + n) are exactly these (fd, what) pairs. */
static void expect(int from, const int *pairs, int n) {
  cr_assert_eq(nreports, from + n, "%d reports, expected %d", nreports,
               from + n);
  for (int i = 0; i < n; i++) {
    cr_assert_eq(reports[from + i].fd, pairs[2 * i], "report %d: fd",
                 from + i);
    cr_assert_eq(reports[from + i].what, pairs[2 * i + 1], "report %d: what",
                 from + i);
  }
}

/* --- fake owners ---------------------------------------------------------- */

struct fake {
  struct xfer__mev_tracker t;
  int due, events, refused;
  int last_fd, last_events;
  void (*also)(struct fake *f, int fd); /* extra work in `event` */
};

static struct xfer__mev ev;

static void fake_due(struct xfer__mev_tracker *t, int fd) {
  struct fake *f = t->owner;
  f->due++;
  f->last_fd = fd;
}

static void fake_event(struct xfer__mev_tracker *t, int fd, int events) {
  struct fake *f = t->owner;
  f->events++;
  f->last_fd = fd;
  f->last_events = events;
  if (f->also)
    f->also(f, fd);
}

static void fake_refused(struct xfer__mev_tracker *t, int fd) {
  struct fake *f = t->owner;
  f->refused++;
  f->last_fd = fd;
}

static const struct xfer__mev_ops fake_ops = {fake_due, fake_event,
                                              fake_refused};

static void fake_init(struct fake *f, enum xfer__mev_kind kind) {
  memset(f, 0, sizeof(*f));
  xfer__mev_tracker_init(&f->t, kind, &fake_ops, f);
}

/* Sets the owner's whole pollset: pairs of (fd, want), n pairs. */
static xfer_code want(struct fake *f, const int *pairs, int n) {
  struct xfer__pollset ps;

  xfer__pollset_reset(&ps);
  for (int i = 0; i < n; i++)
    cr_assert(xfer__pollset_add(&ps, pairs[2 * i], (unsigned)pairs[2 * i + 1]));
  return xfer__mev_assess(&ev, &f->t, &ps);
}

static void want1(struct fake *f, int fd, int what) {
  cr_assert_eq(want(f, (int[]){fd, what}, what ? 1 : 0), XFER_OK);
}

static struct xfer__mev_socket_info info(int fd) {
  struct xfer__mev_socket_info i;
  cr_assert(xfer__mev_socket_info(&ev, fd, &i), "fd %d is not tracked", fd);
  return i;
}

static bool tracked(int fd) {
  struct xfer__mev_socket_info i;
  return xfer__mev_socket_info(&ev, fd, &i);
}

static void setup(void) {
  nreports = 0;
  refuse_fd = -1;
  xfer__mev_init(&ev);
  xfer__mev_set_report(&ev, record, &report_owner_tag);
}

static void multi_ev_end(void) {
  xfer__mev_cleanup(&ev);
  cr_assert_eq(ev.count, 0);
}

TestSuite(multi_ev, .init = setup);

/* Fake fd numbers: the table never touches the descriptors themselves. */
enum { S = 40, T = 41, U = 42 };

/* --- the diff ------------------------------------------------------------- */

TH_TEST(multi_ev, only_changes_are_reported) {
  struct fake a;

  fake_init(&a, XFER__MEV_XFER);
  cr_assert_eq(xfer__mev_reported(&ev, S), 0, "not tracked");
  want1(&a, S, XFER_POLL_IN);
  want1(&a, S, XFER_POLL_IN); /* the same pollset: nothing to say */
  cr_assert_eq(xfer__mev_reported(&ev, S), XFER_POLL_IN);
  want1(&a, S, XFER_POLL_INOUT);
  want1(&a, S, XFER_POLL_OUT);
  want1(&a, S, 0);
  want1(&a, S, 0);
  expect(0,
         (int[]){S, XFER_POLL_IN, S, XFER_POLL_INOUT, S, XFER_POLL_OUT, S,
                 XFER_POLL_REMOVE},
         4);
  cr_assert(!tracked(S));
  cr_assert_eq(xfer__mev_reported(&ev, S), 0);
  cr_assert_eq(a.t.count, 0);
}

TH_TEST(multi_ev, a_pollset_change_reports_each_socket_once) {
  struct fake a;

  fake_init(&a, XFER__MEV_XFER);
  cr_assert_eq(want(&a, (int[]){S, XFER_POLL_IN, T, XFER_POLL_OUT}, 2),
               XFER_OK);
  /* S unchanged, T dropped, U new. */
  cr_assert_eq(want(&a, (int[]){S, XFER_POLL_IN, U, XFER_POLL_IN}, 2),
               XFER_OK);
  expect(0,
         (int[]){S, XFER_POLL_IN, T, XFER_POLL_OUT, T, XFER_POLL_REMOVE, U,
                 XFER_POLL_IN},
         4);
  cr_assert_eq(a.t.count, 2);
  xfer__mev_tracker_done(&ev, &a.t);
}

TH_TEST(multi_ev, shared_socket_counts_readers_and_writers) {
  struct fake a, b, c;

  fake_init(&a, XFER__MEV_XFER);
  fake_init(&b, XFER__MEV_XFER);
  fake_init(&c, XFER__MEV_CONN);
  want1(&a, S, XFER_POLL_IN);
  want1(&b, S, XFER_POLL_IN); /* a second reader: nothing new to say */
  cr_assert_eq(info(S).readers, 2);
  cr_assert_eq(info(S).writers, 0);
  cr_assert_eq(info(S).users, 2);
  want1(&b, S, XFER_POLL_OUT);
  cr_assert_eq(info(S).readers, 1);
  cr_assert_eq(info(S).writers, 1);
  want1(&c, S, XFER_POLL_IN); /* a connection counts as a user too */
  cr_assert_eq(info(S).readers, 2);
  cr_assert_eq(info(S).conns, 1);
  cr_assert_eq(info(S).users, 3);
  xfer__mev_tracker_done(&ev, &a.t);
  xfer__mev_tracker_done(&ev, &c.t); /* b still writes */
  cr_assert_eq(info(S).readers, 0);
  cr_assert_eq(info(S).writers, 1);
  cr_assert_eq(info(S).want, XFER_POLL_OUT);
  cr_assert_eq(info(S).reported, XFER_POLL_OUT);
  xfer__mev_tracker_done(&ev, &b.t);
  expect(0,
         (int[]){S, XFER_POLL_IN, S, XFER_POLL_INOUT, S, XFER_POLL_OUT, S,
                 XFER_POLL_REMOVE},
         4);
}

/* A socket passed between a transfer and its connection (kept attached
 * after the response, then taken by the next request): the use moves with
 * its want, the application hears nothing, events reach the new owner
 * only, and the socket's end purges it from there. */
TH_TEST(multi_ev, a_use_handed_over_keeps_the_socket_as_reported) {
  struct fake x, c, other;

  fake_init(&x, XFER__MEV_XFER);
  fake_init(&c, XFER__MEV_CONN);
  fake_init(&other, XFER__MEV_XFER);
  cr_assert_eq(want(&x, (int[]){S, XFER_POLL_IN, T, XFER_POLL_OUT}, 2),
               XFER_OK);
  want1(&other, S, XFER_POLL_IN);
  nreports = 0;

  /* Refused, and nothing changes: another want, a socket not used, a
   * new owner that has the socket already. */
  cr_assert(!xfer__mev_hand_over(&ev, &x.t, &c.t, S, XFER_POLL_INOUT));
  cr_assert(!xfer__mev_hand_over(&ev, &x.t, &c.t, U, XFER_POLL_IN));
  cr_assert(!xfer__mev_hand_over(&ev, &x.t, &other.t, S, XFER_POLL_IN));
  cr_assert_eq(x.t.count, 2);
  cr_assert_eq(c.t.count, 0);

  cr_assert(xfer__mev_hand_over(&ev, &x.t, &c.t, S, XFER_POLL_IN));
  cr_assert_eq(nreports, 0, "the same readers: nothing to tell");
  cr_assert_eq(x.t.count, 1);
  cr_assert_eq(x.t.uses[0].fd, T, "x keeps its other socket");
  cr_assert_eq(c.t.count, 1);
  cr_assert_eq(info(S).readers, 2);
  cr_assert_eq(info(S).users, 2);
  cr_assert_eq(info(S).conns, 1, "now a connection's use");
  cr_assert(xfer__mev_expire_xfers(&ev, S));
  cr_assert_eq(x.due, 0, "x no longer hears S");
  cr_assert_eq(other.due, 1);
  xfer__mev_dispatch_conns(&ev, S, XFER_CSELECT_IN);
  cr_assert_eq(c.events, 1);
  /* The new owner's next assessment finds it as it was; x's drops T. */
  want1(&c, S, XFER_POLL_IN);
  want1(&x, T, 0);
  expect(0, (int[]){T, XFER_POLL_REMOVE}, 1);

  /* And back, to a transfer: the connection's count goes. */
  cr_assert(xfer__mev_hand_over(&ev, &c.t, &x.t, S, XFER_POLL_IN));
  cr_assert_eq(info(S).conns, 0);
  cr_assert(!xfer__mev_expire_xfers(&ev, S), "no connection left on S");
  cr_assert_eq(x.due, 1);
  xfer__mev_tracker_done(&ev, &c.t);
  xfer__mev_tracker_done(&ev, &other.t);
  cr_assert_eq(nreports, 1, "x still reads S");
  xfer__mev_socket_done(&ev, S);
  cr_assert_eq(x.t.count, 0, "purged from its new owner");
  expect(1, (int[]){S, XFER_POLL_REMOVE}, 1);
}

/* --- done, in any order -----------------------------------------------------
 */

TH_TEST(multi_ev, tracker_done_then_socket_done) {
  struct fake a;

  fake_init(&a, XFER__MEV_XFER);
  cr_assert_eq(want(&a, (int[]){S, XFER_POLL_IN, T, XFER_POLL_OUT}, 2),
               XFER_OK);
  xfer__mev_tracker_done(&ev, &a.t);
  xfer__mev_socket_done(&ev, S); /* already forgotten: nothing */
  xfer__mev_socket_done(&ev, T);
  cr_assert_eq(a.t.count, 0);
  cr_assert_eq(nreports, 4);
  cr_assert_eq(reports[2].what, XFER_POLL_REMOVE);
  cr_assert_eq(reports[3].what, XFER_POLL_REMOVE);
}

TH_TEST(multi_ev, socket_done_then_tracker_done) {
  struct fake a, b, c;

  fake_init(&a, XFER__MEV_XFER);
  fake_init(&b, XFER__MEV_XFER);
  fake_init(&c, XFER__MEV_CONN);
  cr_assert_eq(want(&a, (int[]){S, XFER_POLL_IN, T, XFER_POLL_IN}, 2),
               XFER_OK);
  want1(&b, S, XFER_POLL_OUT);
  want1(&c, S, XFER_POLL_IN);
  /* S is about to close: REMOVE, and purged from every last pollset,
   * because the kernel hands the number out again at once. */
  xfer__mev_socket_done(&ev, S);
  cr_assert(!tracked(S));
  cr_assert_eq(a.t.count, 1);
  cr_assert_eq(b.t.count, 0);
  cr_assert_eq(c.t.count, 0);
  expect(0,
         (int[]){S, XFER_POLL_IN, T, XFER_POLL_IN, S, XFER_POLL_INOUT, S,
                 XFER_POLL_REMOVE},
         4);
  /* The number comes back for a new socket: b's interest is new, and
   * nothing of the old socket is left to diff against. */
  want1(&b, S, XFER_POLL_IN);
  expect(4, (int[]){S, XFER_POLL_IN}, 1);
  cr_assert_null(reports[4].socketp, "a new socket has no pointer yet");
  xfer__mev_tracker_done(&ev, &b.t);
  xfer__mev_tracker_done(&ev, &c.t);
  xfer__mev_tracker_done(&ev, &a.t);
  expect(5, (int[]){S, XFER_POLL_REMOVE, T, XFER_POLL_REMOVE}, 2);
}

/* --- events: due transfers, dispatched connections ----------------------- */

TH_TEST(multi_ev,
        an_event_makes_its_transfers_due_and_reaches_its_connections) {
  struct fake a, b, c, d;

  fake_init(&a, XFER__MEV_XFER);
  fake_init(&b, XFER__MEV_XFER);
  fake_init(&c, XFER__MEV_CONN);
  fake_init(&d, XFER__MEV_CONN);
  want1(&a, S, XFER_POLL_IN);
  want1(&b, T, XFER_POLL_IN);
  want1(&c, S, XFER_POLL_OUT);
  want1(&d, T, XFER_POLL_IN);

  cr_assert(xfer__mev_expire_xfers(&ev, S), "a connection cares about S");
  cr_assert_eq(a.due, 1);
  cr_assert_eq(a.last_fd, S);
  cr_assert_eq(b.due, 0, "b does not use S");
  cr_assert_eq(c.events + d.events, 0, "expire tells transfers only");
  xfer__mev_dispatch_conns(&ev, S, XFER_CSELECT_OUT);
  cr_assert_eq(c.events, 1);
  cr_assert_eq(c.last_events, XFER_CSELECT_OUT);
  cr_assert_eq(d.events, 0);
  cr_assert_eq(a.events + a.due, 1, "dispatch tells connections only");

  cr_assert(!xfer__mev_expire_xfers(&ev, U), "an untracked fd: no one");
  xfer__mev_tracker_done(&ev, &c.t);
  cr_assert(!xfer__mev_expire_xfers(&ev, S), "no connection left on S");
  cr_assert_eq(a.due, 2);
  xfer__mev_tracker_done(&ev, &a.t);
  xfer__mev_tracker_done(&ev, &b.t);
  xfer__mev_tracker_done(&ev, &d.t);
}

/* A connection's handler may close the very socket it is told about, or
 * change its own tracking: every connection is told at most once. */
static void close_it(struct fake *f, int fd) {
  (void)f;
  xfer__mev_socket_done(&ev, fd);
}

static void move_on(struct fake *f, int fd) {
  (void)fd;
  /* S and T now, both fresh uses: no second call for S this round. */
  cr_assert_eq(want(f, (int[]){T, XFER_POLL_IN, S, XFER_POLL_INOUT}, 2),
               XFER_OK);
}

TH_TEST(multi_ev, connection_handlers_may_change_the_tracking) {
  struct fake c1, c2, c3;

  fake_init(&c1, XFER__MEV_CONN);
  fake_init(&c2, XFER__MEV_CONN);
  c1.also = c2.also = close_it;
  want1(&c1, S, XFER_POLL_IN);
  want1(&c2, S, XFER_POLL_IN);
  xfer__mev_dispatch_conns(&ev, S, XFER_CSELECT_IN);
  cr_assert_eq(c1.events + c2.events, 1, "the second lost the socket");
  cr_assert(!tracked(S));
  cr_assert_eq(c1.t.count + c2.t.count, 0);

  fake_init(&c3, XFER__MEV_CONN);
  c3.also = move_on;
  want1(&c3, S, XFER_POLL_IN);
  xfer__mev_dispatch_conns(&ev, S, XFER_CSELECT_IN);
  cr_assert_eq(c3.events, 1);
  cr_assert_eq(info(S).conns, 1);
  cr_assert_eq(info(T).conns, 1);
  xfer__mev_dispatch_conns(&ev, S, XFER_CSELECT_IN); /* a new round */
  cr_assert_eq(c3.events, 2);
  xfer__mev_tracker_done(&ev, &c3.t);
}

/* --- reporting --------------------------------------------------------------
 */

TH_TEST(multi_ev, late_report_function_hears_every_socket_anew) {
  struct fake a, c;

  xfer__mev_set_report(&ev, NULL, NULL);
  fake_init(&a, XFER__MEV_XFER);
  fake_init(&c, XFER__MEV_CONN);
  cr_assert_eq(want(&a, (int[]){S, XFER_POLL_IN, T, XFER_POLL_OUT}, 2),
               XFER_OK);
  want1(&c, S, XFER_POLL_OUT);
  cr_assert_eq(nreports, 0, "nobody to tell");
  cr_assert_eq(info(S).want, XFER_POLL_INOUT, "tracked all the same");
  cr_assert_eq(info(S).reported, 0);

  xfer__mev_set_report(&ev, record, &report_owner_tag);
  cr_assert_eq(nreports, 0, "told at the next resync, not before");
  xfer__mev_resync(&ev);
  expect(0, (int[]){S, XFER_POLL_INOUT, T, XFER_POLL_OUT}, 2);
  xfer__mev_resync(&ev);
  cr_assert_eq(nreports, 2, "once");

  /* A replaced function knows nothing: everything again. */
  xfer__mev_set_report(&ev, record, &report_owner_tag);
  xfer__mev_resync(&ev);
  expect(2, (int[]){S, XFER_POLL_INOUT, T, XFER_POLL_OUT}, 2);
  xfer__mev_tracker_done(&ev, &a.t);
  xfer__mev_tracker_done(&ev, &c.t);
}

/* Told: the owners of the socket that have a `refused` op (transfers, and
 * the resolver, a connection-kind owner); a connection without one is
 * not (the wake-up fd, attached and closing connections: asked again). */
static const struct xfer__mev_ops fake_ops_no_refused = {fake_due, fake_event,
                                                         NULL};

TH_TEST(multi_ev, a_refused_socket_is_told_to_its_owners_that_ask) {
  struct fake a, b, c, d;

  xfer__mev_set_report(&ev, NULL, NULL);
  fake_init(&a, XFER__MEV_XFER);
  fake_init(&b, XFER__MEV_XFER);
  fake_init(&c, XFER__MEV_CONN);
  fake_init(&d, XFER__MEV_CONN);
  c.t.ops = &fake_ops_no_refused;
  want1(&a, S, XFER_POLL_IN);
  want1(&b, T, XFER_POLL_IN);
  want1(&c, S, XFER_POLL_IN);
  want1(&d, S, XFER_POLL_IN);
  refuse_fd = S;
  xfer__mev_set_report(&ev, record, &report_owner_tag);
  xfer__mev_resync(&ev);
  cr_assert_eq(a.refused, 1);
  cr_assert_eq(a.last_fd, S);
  cr_assert_eq(b.refused, 0, "T was accepted");
  cr_assert_eq(c.refused + c.events, 0, "no refused op: not told");
  cr_assert_eq(d.refused, 1, "a connection-kind owner that asks is told");
  cr_assert_eq(d.events, 0);

  /* Refused in an assessment: the owner hears it as the result, and the
   * tracking stays consistent. */
  cr_assert_eq(want(&b, (int[]){T, XFER_POLL_IN, S, XFER_POLL_OUT}, 2),
               XFER_E_SOCKET_CALLBACK);
  cr_assert_eq(info(S).writers, 1);
  xfer__mev_tracker_done(&ev, &a.t);
  xfer__mev_tracker_done(&ev, &b.t);
  xfer__mev_tracker_done(&ev, &c.t);
  xfer__mev_tracker_done(&ev, &d.t);
}

/* A socket refused when everything is reported anew is not taken for
 * watched: one of connections alone (the wake-up fd, an attached
 * connection) is asked for again at the next resync, and a socket the
 * application never took gets no REMOVE. */
TH_TEST(multi_ev, a_refused_socket_is_asked_again_and_never_removed) {
  struct fake c, d;

  xfer__mev_set_report(&ev, NULL, NULL);
  fake_init(&c, XFER__MEV_CONN);
  fake_init(&d, XFER__MEV_CONN);
  want1(&c, S, XFER_POLL_IN);
  want1(&d, T, XFER_POLL_IN);
  refuse_fd = S;
  xfer__mev_set_report(&ev, record, &report_owner_tag);
  xfer__mev_resync(&ev);
  expect(0, (int[]){S, XFER_POLL_IN, T, XFER_POLL_IN}, 2);
  cr_assert_eq(xfer__mev_reported(&ev, S), 0, "not taken");
  cr_assert_eq(xfer__mev_reported(&ev, T), XFER_POLL_IN);
  xfer__mev_resync(&ev);
  expect(2, (int[]){S, XFER_POLL_IN}, 1); /* refused again */
  refuse_fd = -1;
  xfer__mev_resync(&ev);
  expect(3, (int[]){S, XFER_POLL_IN}, 1);
  cr_assert_eq(xfer__mev_reported(&ev, S), XFER_POLL_IN, "taken now");
  xfer__mev_resync(&ev);
  cr_assert_eq(nreports, 4, "nothing left to ask");

  /* A change refused keeps what was taken: its REMOVE still comes. */
  refuse_fd = T;
  cr_assert_eq(want(&d, (int[]){T, XFER_POLL_INOUT}, 1),
               XFER_E_SOCKET_CALLBACK);
  cr_assert_eq(xfer__mev_reported(&ev, T), XFER_POLL_IN);
  refuse_fd = -1;
  xfer__mev_tracker_done(&ev, &d.t);
  expect(4, (int[]){T, XFER_POLL_INOUT, T, XFER_POLL_REMOVE}, 2);

  /* A new socket refused, then dropped: no REMOVE of what was never
   * taken. */
  fake_init(&d, XFER__MEV_CONN);
  refuse_fd = U;
  cr_assert_eq(want(&d, (int[]){U, XFER_POLL_IN}, 1), XFER_E_SOCKET_CALLBACK);
  xfer__mev_tracker_done(&ev, &d.t);
  refuse_fd = -1;
  expect(6, (int[]){U, XFER_POLL_IN}, 1);
  xfer__mev_tracker_done(&ev, &c.t);
}

/* A REMOVE the application refuses fails nobody: no transfer needs the
 * socket any more. */
TH_TEST(multi_ev, a_refused_remove_fails_nobody) {
  struct fake a;

  fake_init(&a, XFER__MEV_XFER);
  want1(&a, S, XFER_POLL_IN);
  refuse_fd = S;
  cr_assert_eq(want(&a, (int[]){T, XFER_POLL_IN}, 1), XFER_OK);
  expect(0, (int[]){S, XFER_POLL_IN, S, XFER_POLL_REMOVE, T, XFER_POLL_IN},
         3);
  cr_assert(!tracked(S));
  xfer__mev_tracker_done(&ev, &a.t);
}

/* A replaced socket callback hears every socket as new: without the
 * pointer the old one assigned (it may have freed what it pointed to). */
TH_TEST(multi_ev, a_replaced_callback_gets_no_pointer_of_the_old_one) {
  struct fake a;
  int marker;

  fake_init(&a, XFER__MEV_XFER);
  want1(&a, S, XFER_POLL_IN);
  cr_assert_eq(xfer__mev_assign(&ev, S, &marker), XFER_M_OK);
  xfer__mev_set_report(&ev, record, &report_owner_tag);
  xfer__mev_resync(&ev);
  expect(1, (int[]){S, XFER_POLL_IN}, 1);
  cr_assert_null(reports[1].socketp, "new to the new function");
  xfer__mev_tracker_done(&ev, &a.t);
}

TH_TEST(multi_ev, an_assigned_pointer_comes_back_with_later_reports) {
  struct fake a;
  int marker;

  fake_init(&a, XFER__MEV_XFER);
  cr_assert_eq(xfer__mev_assign(&ev, S, &marker), XFER_M_BAD_ARGUMENT,
               "S is not tracked yet");
  want1(&a, S, XFER_POLL_IN);
  cr_assert_eq(xfer__mev_assign(&ev, S, &marker), XFER_M_OK);
  want1(&a, S, XFER_POLL_OUT);
  want1(&a, S, 0);
  cr_assert_null(reports[0].socketp);
  cr_assert_eq(reports[1].socketp, &marker);
  cr_assert_eq(reports[2].socketp, &marker);
  cr_assert_eq(reports[2].what, XFER_POLL_REMOVE);
  cr_assert_eq(xfer__mev_assign(&ev, S, NULL), XFER_M_BAD_ARGUMENT);
}

/* --- sizes and failures -----------------------------------------------------
 */

TH_TEST(multi_ev, many_sockets_per_owner) {
  struct fake a, b;
  enum { N = 10, BASE = 100 };
  int pairs[2 * N];

  fake_init(&a, XFER__MEV_XFER);
  fake_init(&b, XFER__MEV_XFER);
  for (int i = 0; i < N; i++) {
    pairs[2 * i] = BASE + i;
    pairs[2 * i + 1] = XFER_POLL_IN;
  }
  cr_assert_eq(want(&a, pairs, N), XFER_OK);
  cr_assert_eq(nreports, N);
  cr_assert_gt(a.t.capacity, XFER__MEV_INLINE_USES, "grown past inline");
  cr_assert_eq(want(&b, pairs, 3), XFER_OK);
  cr_assert_eq(nreports, N, "shared sockets are watched already");
  for (int i = 0; i < N; i += 2)
    pairs[2 * i + 1] = XFER_POLL_INOUT;
  cr_assert_eq(want(&a, pairs, N), XFER_OK);
  cr_assert_eq(nreports, N + 5);
  for (int i = 0; i < N; i++)
    cr_assert_eq(info(BASE + i).readers, i < 3 ? 2 : 1);
  xfer__mev_tracker_done(&ev, &a.t);
  /* 0..2: b still reads (0 and 2 lose their writer); 3..9: removed. */
  cr_assert_eq(nreports, N + 5 + 2 + 7);
  for (int i = 0; i < N; i++)
    cr_assert_eq(tracked(BASE + i), i < 3, "fd %d", BASE + i);
  cr_assert_eq(a.t.capacity, XFER__MEV_INLINE_USES, "back to inline");
  xfer__mev_tracker_done(&ev, &b.t);
}

TH_TEST(multi_ev, out_of_memory_leaves_the_tracking_consistent) {
  struct fake a;
  enum { N = 8, BASE = 200 };
  int pairs[2 * N];
  xfer_code rc = XFER_E_OUT_OF_MEMORY;

  cr_assert_eq(xfer_mem_set(&th_mem), XFER_OK);
  fake_init(&a, XFER__MEV_XFER);
  for (int i = 0; i < N; i++) {
    pairs[2 * i] = BASE + i;
    pairs[2 * i + 1] = XFER_POLL_IN;
  }
  /* Fail the 1st, 2nd, ... allocation until none fails. */
  for (long n = 1; rc == XFER_E_OUT_OF_MEMORY && n < 100; n++) {
    th_mem_fail_at(n);
    nreports = 0;
    rc = want(&a, pairs, N);
    for (unsigned i = 0; i < a.t.count; i++) /* whatever it holds is real */
      cr_assert(tracked(a.t.uses[i].fd));
    if (rc == XFER_E_OUT_OF_MEMORY) {
      xfer__mev_tracker_done(&ev, &a.t);
      cr_assert_eq(ev.count, 0, "nothing left behind after a failure");
    }
  }
  th_mem_fail_at(0);
  cr_assert_eq(rc, XFER_OK);
  cr_assert_eq(a.t.count, N);
  cr_assert_eq(nreports, N, "each socket told once, none twice");
  xfer__mev_tracker_done(&ev, &a.t);
  xfer__mev_cleanup(&ev);
  cr_assert_eq(th_mem_live_bytes(), 0);
  cr_assert_eq(xfer_mem_set(NULL), XFER_OK);
}

TH_TEST(multi_ev, pollset_merges_and_bounds) {
  struct xfer__pollset ps;

  xfer__pollset_reset(&ps);
  cr_assert(xfer__pollset_add(&ps, 3, XFER_POLL_IN));
  cr_assert(xfer__pollset_add(&ps, 3, XFER_POLL_OUT));
  cr_assert(xfer__pollset_add(&ps, 4, 0));
  cr_assert_eq(ps.count, 1);
  cr_assert_eq(ps.want[0], XFER_POLL_INOUT);
  for (int i = 1; i < XFER__POLLSET_MAX; i++)
    cr_assert(xfer__pollset_add(&ps, 10 + i, XFER_POLL_IN));
  cr_assert(!xfer__pollset_add(&ps, 99, XFER_POLL_IN));
  cr_assert_eq(ps.count, XFER__POLLSET_MAX);
}

TH_TEST(multi_ev, pollfds_and_cleanup_cover_every_socket) {
  struct fake a, c;
  struct pollfd pfd[4];
  size_t n;

  fake_init(&a, XFER__MEV_XFER);
  fake_init(&c, XFER__MEV_CONN);
  cr_assert_eq(want(&a, (int[]){S, XFER_POLL_IN, T, XFER_POLL_OUT}, 2),
               XFER_OK);
  want1(&c, S, XFER_POLL_OUT);
  n = xfer__mev_pollfds(&ev, pfd, 4);
  cr_assert_eq(n, 2);
  for (size_t i = 0; i < n; i++)
    cr_assert_eq(pfd[i].events,
                 pfd[i].fd == S ? (POLLIN | POLLOUT) : POLLOUT);
  cr_assert_eq(xfer__mev_pollfds(&ev, pfd, 1), 1, "bounded by max");
  /* The end of the table: REMOVE for each, and no owner keeps a use. */
  xfer__mev_cleanup(&ev);
  expect(3, (int[]){S, XFER_POLL_REMOVE, T, XFER_POLL_REMOVE}, 2);
  cr_assert_eq(a.t.count + c.t.count, 0);
  cr_assert(!tracked(S));
}

#ifdef XFER_DEBUG
#include <signal.h>
/* Rule 3: no report to the application while this thread holds a pool
 * lock; debug builds stop at once. */
TH_TEST(multi_ev, report_under_pool_lock_aborts_in_debug, .signal = SIGABRT) {
  struct fake a;

  fake_init(&a, XFER__MEV_XFER);
  xfer__pool_lock_depth++;
  want1(&a, S, XFER_POLL_IN);
}
#endif

/* A report refused counts as not made, so a socket new to the application
 * is new again when asked next: socketp NULL, though the callback had
 * assigned one before it refused (the documented callback assigns, then
 * adds to its epoll set, which may fail). It came back with the pointer,
 * and such a callback took it for a change of a socket it watched. */
static int marker, assign_refusals;

static int assign_then_refuse(void *owner, int fd, int what, void *socketp) {
  cr_assert_eq(xfer__mev_assign(&ev, fd, &marker), XFER_M_OK);
  if (assign_refusals > 0) {
    assign_refusals--;
    (void)record(owner, fd, what, socketp);
    return -1;
  }
  return record(owner, fd, what, socketp);
}

TH_TEST(multi_ev, a_refused_new_socket_is_new_again) {
  struct fake c;

  xfer__mev_set_report(&ev, NULL, NULL);
  fake_init(&c, XFER__MEV_CONN);
  want1(&c, S, XFER_POLL_IN);
  assign_refusals = 1;
  xfer__mev_set_report(&ev, assign_then_refuse, &report_owner_tag);
  xfer__mev_resync(&ev);
  xfer__mev_resync(&ev); /* asked again */
  expect(0, (int[]){S, XFER_POLL_IN, S, XFER_POLL_IN}, 2);
  cr_assert_null(reports[0].socketp);
  cr_assert_null(reports[1].socketp, "new again: nothing assigned");
  cr_assert_eq(xfer__mev_reported(&ev, S), XFER_POLL_IN, "taken now");
  /* Taken: what it assigned then stays, and comes with the next change. */
  cr_assert_eq(want(&c, (int[]){S, XFER_POLL_INOUT}, 1), XFER_OK);
  expect(2, (int[]){S, XFER_POLL_INOUT}, 1);
  cr_assert_eq(reports[2].socketp, &marker);
  xfer__mev_tracker_done(&ev, &c.t);
}
