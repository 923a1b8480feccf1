/*
 * The multi handle: the transfers of one thread, their event tracking and
 * timers, and the processing loop that keeps time by brief rule 2.
 *
 * Protected by: nothing; a multi belongs to the thread that drives it.
 */
#ifndef XFER_MULTI_H
#define XFER_MULTI_H

#include "common.h"

#include "attached.h"
#include "loop.h"
#include "multi_ev.h"
#include "now.h"
#include "pool.h"
#include "resolve.h"
#include "shutdown.h"
#include "timer.h"

/* The processing loop reads the clock again after this many transfers, so
 * that one call never carries a stale `now` far (brief rule 2). */
#define XFER__CLOCK_REFRESH_EVERY 16

/* The timer callback hears -1 (no deadline left while transfers run) at
 * most once per this many ms: deadlines that come and go with every
 * request (the connect timeout of each new connection to a server that
 * closes them; the attach hold of a multi that runs one transfer after
 * the other) would otherwise cost a -1 and a new timeout each (multi.c,
 * stop_timer()). A tunable constant. */
#define XFER__TIMER_STOP_EVERY_MS 100

/* Internal transfers of every multi, each with a timer node: the shutdown,
 * attached and resolver handles. */
#define XFER__INTERNAL_HANDLES 3

struct pollfd;

struct xfer_multi {
  uint32_t magic;
  /* The event tracking, timers, clock and the rest of what the modules
   * below the multi are given (loop.h). */
  struct xfer__loop loop;

  xfer_socket_cb socket_cb;
  void *socket_userp;
  xfer_timer_cb timer_cb;
  void *timer_userp;
  /* The deadline the application's timer is armed for, as far as we know;
   * XFER__TIME_NEVER: no timer armed. */
  xfer__time timer_armed;
  /* The application may hold a timer: a timeout >= 0 was told to this
   * callback. timer_armed cannot say so (a perform or a timeout action
   * forgets it, and either may come from elsewhere than the timer, a
   * kick-start say), so destroy tells -1 whenever this is set: a -1 for a
   * timer that already fired costs nothing, a missed one leaves a timer
   * that fires on a freed multi. */
  bool timer_held;
  /* No -1 is told before this time (XFER__TIMER_STOP_EVERY_MS). */
  xfer__time timer_stop_after;

  struct xfer__list xfers; /* every transfer added */
  size_t num_xfers;
  size_t running;          /* added and not done */
  struct xfer__list dirty; /* to run before the current call returns */
  struct xfer__list msgs;  /* finished transfers, for info_read */
  size_t num_msgs;

  struct pollfd *pollfds; /* xfer_multi_poll()'s array, kept between calls */
  size_t pollfds_len;

  xfer_multi_stats stats; /* clock_reads: loop.clock_reads */

  xfer_pool *private_pool; /* when it was given none; loop.pool either way */

  struct xfer__shutdown shutdown; /* graceful closes (shutdown.h) */
  struct xfer__pool_tally pool_tally; /* this multi's pool statistics */
  struct xfer__attached attached; /* kept for our next transfer
                                     (attached.h) */
  xfer *shutdown_handle;          /* internal: their timers */
  xfer *attached_handle;
  xfer *resolve_handle;           /* internal: runs the resolver */
  struct xfer__mev_tracker wake_ev; /* loop.wake's fd */
  struct xfer__list waiting;      /* transfers in a pool FIFO */
  struct xfer__dns dns;           /* the resolver and its settings */
};

/* Queues x to be run before the current multi call returns. */
void xfer__multi_mark_dirty(xfer_multi *m, xfer *x);
/* The event tracking's callbacks for a transfer's tracker (owner: the
 * transfer): `due` marks it dirty, `refused` makes it fail with
 * XFER_E_SOCKET_CALLBACK at its next run, in this call. */
extern const struct xfer__mev_ops xfer__multi_xfer_ev_ops;

#endif /* XFER_MULTI_H */
