/*
 * libFuzzer target 3: event tracking and timers (lib/multi_ev.c,
 * lib/timer.c) driven by a byte string of operations on one multi: add and
 * remove transfers, change a transfer's or a connection's pollset, run the
 * multi (perform, socket_action on an fd, the timer), forget a socket
 * (socket_done, after which its number comes back at once: fd reuse),
 * finish a transfer, set the socket callback late, hand a socket's use
 * between a transfer and the connection. The sockets are fake
 * numbers; nothing is ever polled.
 *
 * After every operation, the calls the socket callback got are checked
 * against a simple reference model of what the application was told, per
 * fd: a new socket (socketp NULL) only when the fd is not watched, a
 * change or REMOVE only when it is, nothing repeated; and the set of
 * watched fds and their interest equals what the transfers and the
 * connection want, which the model recomputes from scratch.
 */
#include "common.h"

#include <string.h>

#include "multi.h"
#include "multi_ev.h"
#include "transfer.h"

#define NX 6  /* transfers */
#define NFD 8 /* fd numbers 3 .. 3+NFD-1 */
#define FD0 3

struct fake {
  xfer *x;
  bool added;
  bool finish; /* its next run ends it */
  unsigned char want[NFD];
};

static struct fake fakes[NX];
static unsigned char conn_want[NFD]; /* the connection tracker's pollset */
static struct xfer__mev_tracker conn;
static bool conn_live;
static unsigned char told[NFD]; /* the model: what the application knows */
static bool watched[NFD];
static bool callback_set;

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond))                                                               \
      __builtin_trap();                                                        \
  } while (0)

static int socket_cb(xfer_multi *m, int fd, int what, void *userp,
                     void *socketp) {
  int i = fd - FD0;

  (void)userp;
  CHECK(i >= 0 && i < NFD);
  if (what == XFER_POLL_REMOVE) {
    CHECK(watched[i]); /* REMOVE only for a watched fd */
    watched[i] = false;
    told[i] = 0;
    return 0;
  }
  CHECK(what >= XFER_POLL_IN && what <= XFER_POLL_INOUT);
  if (!socketp) { /* new to the application */
    CHECK(!watched[i]);
    watched[i] = true;
    xfer_multi_assign(m, fd, &watched[i]);
  } else {
    CHECK(watched[i] && socketp == &watched[i]);
    CHECK(told[i] != what); /* only changes are reported */
  }
  told[i] = (unsigned char)what;
  return 0;
}

static enum xfer__step run(xfer *x, unsigned due) {
  struct fake *f = x->handler_ctx;

  (void)due;
  if (f->finish) {
    f->finish = false;
    return XFER__STEP_DONE;
  }
  return XFER__STEP_AGAIN;
}

static void pollset(xfer *x, struct xfer__pollset *ps) {
  struct fake *f = x->handler_ctx;

  xfer__pollset_reset(ps);
  for (int i = 0; i < NFD; i++)
    xfer__pollset_add(ps, FD0 + i, f->want[i]);
}

static const struct xfer__handler handler = {
    .name = "fuzz", .run = run, .pollset = pollset, .cleanup = NULL};

static void conn_event(struct xfer__mev_tracker *t, int fd, int events) {
  (void)t, (void)fd, (void)events;
}

static const struct xfer__mev_ops conn_ops = {.event = conn_event};

/* The model's expectation: the union of every live pollset, as the
 * multi last assessed them (transfers are assessed after each run, so the
 * expectation is checked after operations that run them all). */
static void check_union(void) {
  unsigned char expect[NFD];

  if (!callback_set)
    return;
  memset(expect, 0, sizeof(expect));
  for (int k = 0; k < NX; k++)
    if (fakes[k].added && fakes[k].x->state == XFER__STATE_RUNNING)
      for (int i = 0; i < NFD; i++)
        expect[i] |= fakes[k].want[i];
  if (conn_live)
    for (int i = 0; i < NFD; i++)
      expect[i] |= conn_want[i];
  for (int i = 0; i < NFD; i++) {
    CHECK(watched[i] == (expect[i] != 0));
    if (expect[i])
      CHECK(told[i] == expect[i]);
  }
}

static void reap(xfer_multi *m) {
  const xfer_msg *msg;

  while ((msg = xfer_multi_info_read(m, NULL))) {
    struct fake *f = msg->x->handler_ctx;
    xfer_multi_remove(m, msg->x);
    f->added = false;
  }
}

static void assess_conn(xfer_multi *m) {
  struct xfer__pollset ps;

  xfer__pollset_reset(&ps);
  for (int i = 0; i < NFD; i++)
    xfer__pollset_add(&ps, FD0 + i, conn_want[i]);
  if (!conn_live) {
    xfer__mev_tracker_init(&conn, XFER__MEV_CONN, &conn_ops, NULL);
    conn_live = true;
  }
  xfer__mev_assess(&m->loop.ev, &conn, &ps);
}

/* The want of t's use of fd, 0 when it has none. */
static unsigned char tracked_want(const struct xfer__mev_tracker *t, int fd) {
  for (unsigned i = 0; i < t->count; i++)
    if (t->uses[i].fd == fd)
      return t->uses[i].want;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  xfer_multi *m = xfer_multi_new(NULL);

  if (!m)
    return 0;
  memset(fakes, 0, sizeof(fakes));
  memset(told, 0, sizeof(told));
  memset(watched, 0, sizeof(watched));
  memset(conn_want, 0, sizeof(conn_want));
  conn_live = false;
  callback_set = false;
  for (int k = 0; k < NX; k++) {
    fakes[k].x = xfer_new();
    xfer__set_handler(fakes[k].x, &handler, &fakes[k]);
  }
  if (size && data[0] & 1) { /* from the start, or later (op 9) */
    xfer_multi_set_socket_cb(m, socket_cb, NULL);
    callback_set = true;
  }
  for (size_t p = 1; p + 1 < size; p += 2) {
    unsigned op = data[p] >> 4, k = data[p] % NX, fd = data[p + 1] % NFD;
    unsigned want = (data[p + 1] >> 3) & 3;
    struct fake *f = &fakes[k];

    switch (op) {
    case 0: /* add */
      if (!f->added && xfer_multi_add(m, f->x) == XFER_M_OK)
        f->added = true;
      break;
    case 1: /* remove */
      if (f->added) {
        xfer_multi_remove(m, f->x);
        f->added = false;
      }
      break;
    case 2: /* a transfer's interest in fd changes */
    case 3:
      f->want[fd] = (unsigned char)want;
      break;
    case 4: /* the multi runs everything: perform */
      xfer_multi_perform(m, NULL);
      reap(m);
      check_union();
      break;
    case 5: /* an event on fd */
      xfer_multi_socket_action(m, FD0 + (int)fd, XFER_CSELECT_IN, NULL);
      reap(m);
      break;
    case 6: /* the timer fires */
      xfer_multi_socket_timeout(m, NULL);
      reap(m);
      break;
    case 7: /* fd is closed: forgotten everywhere, and its number comes
               back at once, so nobody may still want it */
      xfer__mev_socket_done(&m->loop.ev, FD0 + (int)fd);
      for (int j = 0; j < NX; j++)
        fakes[j].want[fd] = 0;
      conn_want[fd] = 0;
      if (callback_set)
        CHECK(!watched[fd]);
      break;
    case 8: /* the next run ends the transfer */
      f->finish = true;
      break;
    case 9: /* the socket callback arrives late: everything is told */
      if (!callback_set) {
        xfer_multi_set_socket_cb(m, socket_cb, NULL);
        callback_set = true;
        xfer_multi_perform(m, NULL);
        reap(m);
        check_union();
      }
      break;
    case 10: /* the connection's pollset */
    case 11:
      conn_want[fd] = (unsigned char)want;
      assess_conn(m);
      break;
    case 13: /* a socket's use passes between a transfer and the
                connection (xfer__mev_hand_over): nothing is told, and the
                union stays; the transfer's next assessment diffs against
                what it holds then */
      if (!conn_live) {
        xfer__mev_tracker_init(&conn, XFER__MEV_CONN, &conn_ops, NULL);
        conn_live = true;
      }
      if (!f->added || f->x->state != XFER__STATE_RUNNING)
        break;
      if (want & 1) { /* to the connection, as the transfer last wanted */
        unsigned char w = tracked_want(&f->x->ev, FD0 + (int)fd);
        if (xfer__mev_hand_over(&m->loop.ev, &f->x->ev, &conn, FD0 + (int)fd,
                                w)) {
          CHECK(w && !conn_want[fd]);
          conn_want[fd] = w;
        }
      } else if (conn_want[fd] &&
                 xfer__mev_hand_over(&m->loop.ev, &conn, &f->x->ev,
                                     FD0 + (int)fd, conn_want[fd])) {
        conn_want[fd] = 0;
      }
      break;
    case 12: /* the connection is done */
      if (conn_live) {
        xfer__mev_tracker_done(&m->loop.ev, &conn);
        conn_live = false;
        memset(conn_want, 0, sizeof(conn_want));
      }
      break;
    default: /* run, then check the whole picture */
      xfer_multi_perform(m, NULL);
      reap(m);
      check_union();
      break;
    }
  }
  if (conn_live)
    xfer__mev_tracker_done(&m->loop.ev, &conn);
  for (int k = 0; k < NX; k++)
    if (fakes[k].added)
      xfer_multi_remove(m, fakes[k].x);
  xfer_multi_destroy(m);
  if (callback_set)
    for (int i = 0; i < NFD; i++)
      CHECK(!watched[i]); /* destroy REMOVEs everything */
  for (int k = 0; k < NX; k++)
    xfer_free(fakes[k].x);
  return 0;
}
