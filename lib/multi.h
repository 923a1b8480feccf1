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
#include "multi_ev.h"
#include "now.h"
#include "pool.h"
#include "shutdown.h"
#include "timer.h"

/* The processing loop reads the clock again after this many transfers, so
 * that one call never carries a stale `now` far (brief rule 2). */
#define XFER__CLOCK_REFRESH_EVERY 16

/* Internal transfers of every multi, each with a timer node: the shutdown
 * and attached handles. */
#define XFER__INTERNAL_HANDLES 2

struct pollfd;
struct xfer__resolver;

#define XFER__RECV_BUF_SIZE (64 * 1024)

struct xfer_multi {
  uint32_t magic;
  int in_callback; /* > 0 while an application callback runs */

  xfer_socket_cb socket_cb;
  void *socket_userp;
  xfer_timer_cb timer_cb;
  void *timer_userp;
  /* The deadline the application's timer is armed for, as far as we know;
   * XFER__TIME_NEVER: no timer armed. */
  xfer__time timer_armed;

  struct xfer__mev ev;
  struct xfer__timer_heap timers;

  struct xfer__list xfers; /* every transfer added */
  size_t num_xfers;
  size_t running;          /* added and not done */
  struct xfer__list dirty; /* to run before the current call returns */
  struct xfer__list msgs;  /* finished transfers, for info_read */
  size_t num_msgs;

  struct pollfd *pollfds; /* xfer_multi_poll()'s array, kept between calls */
  size_t pollfds_len;

  xfer__time last_now; /* the last clock reading of this multi */
  uint64_t call_seq;   /* counts API entries: "once per call" work */
  xfer_multi_stats stats;

  xfer_pool *pool;      /* shared, or private_pool */
  xfer_pool *private_pool;
  char *recv_buf;       /* XFER__RECV_BUF_SIZE, shared by its transfers */

  struct xfer__shutdown shutdown; /* graceful closes (shutdown.h) */
  struct xfer__attached attached; /* kept for our next transfer
                                     (attached.h) */
  struct xfer__wake *wake;        /* other threads wake our waiters */
  struct xfer__mev_tracker wake_ev;
  struct xfer__list waiting;      /* transfers in a pool FIFO */
  struct xfer__resolver *resolver; /* created at the first lookup */
  bool dns_used;                   /* a lookup was tried (or made) */
  char *dns_servers;
  int dns_timeout_ms;
  int dns_tries;
};

/* Queues x to be run before the current multi call returns. */
void xfer__multi_mark_dirty(xfer_multi *m, xfer *x);
/* Makes x fail with `code` at its next run, which happens in this call. */
void xfer__multi_fail_soon(xfer_multi *m, xfer *x, xfer_code code, int fd);
/* Tells the event tracking that fd is about to close, then closes it. */
void xfer__multi_close_socket(xfer_multi *m, int fd);
/* Makes sure the multi can be woken by other threads (an eventfd in its
 * event tracking). XFER_E_SOCKET_CALLBACK when the socket callback
 * refused it, XFER_E_OUT_OF_MEMORY: then the multi has no wake-up (and
 * tries again at the next call). */
xfer_code xfer__multi_wake_ready(xfer_multi *m);

/* An internal transfer of m (not in m->xfers, never done) whose expiries
 * drive `handler` (the shutdown and attached handles); room for its timer
 * node is reserved. NULL when out of memory. */
struct xfer__handler;
xfer *xfer__multi_internal_new(xfer_multi *m,
                               const struct xfer__handler *handler);
/* Clears its timers and frees it (NULL: nothing). */
void xfer__multi_internal_free(xfer_multi *m, xfer *h);

/* Reads the clock on behalf of the multi (counted in its stats). */
xfer__time xfer__multi_now(xfer_multi *m);

#endif /* XFER_MULTI_H */
