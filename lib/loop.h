/*
 * What a multi gives the modules below it (resolve, shutdown, attached,
 * the exchanges): its event tracking, its timers, its clock and a few
 * per-thread things. Embedded in the multi; those modules take a pointer
 * to it and never include multi.h (docs/internals/layers.md).
 *
 * Protected by: nothing; it belongs to the thread that drives its multi.
 */
#ifndef XFER_LOOP_H
#define XFER_LOOP_H

#include "common.h"

#include "multi_ev.h"
#include "now.h"
#include "timer.h"

struct xfer__wake;

#define XFER__RECV_BUF_SIZE (64 * 1024)

struct xfer__loop {
  struct xfer__mev ev;
  struct xfer__timer_heap timers;
  xfer__time last_now;  /* the last clock reading (xfer__loop_now()) */
  uint64_t clock_reads; /* counted for xfer_multi_get_stats() */
  uint64_t call_seq;    /* counts API entries: "once per call" work */
  int in_callback;      /* > 0 while an application callback runs */
  char *recv_buf;       /* XFER__RECV_BUF_SIZE, shared by its transfers */
  xfer_pool *pool;      /* the pool its multi uses */
  struct xfer__wake *wake; /* other threads wake its waiters (NULL: none
                              yet) */
  /* Makes sure `wake` exists and is watched. XFER_E_SOCKET_CALLBACK when
   * the socket callback refused it, XFER_E_OUT_OF_MEMORY. */
  xfer_code (*wake_ready)(struct xfer__loop *loop);
};

/* Reads the clock on behalf of the loop (counted); never goes back. */
static inline xfer__time xfer__loop_now(struct xfer__loop *loop) {
  xfer__time now = xfer__now_read(&loop->clock_reads);

  if (now > loop->last_now)
    loop->last_now = now;
  return loop->last_now;
}

/* loop->wake_ready(), with the check that is nearly always the answer
 * (the wake-up exists, once a transfer needed it) made without a call. */
static inline xfer_code xfer__loop_wake_ready(struct xfer__loop *loop) {
  return loop->wake ? XFER_OK : loop->wake_ready(loop);
}

/* An application callback runs between these two (API calls from it are
 * refused where they would break the caller). */
static inline void xfer__loop_callback_enter(struct xfer__loop *loop) {
  XFER__ASSERT_NO_POOL_LOCK(); /* rule 3: no callback under a pool lock */
  loop->in_callback++;
}

static inline void xfer__loop_callback_leave(struct xfer__loop *loop) {
  loop->in_callback--;
}

#endif /* XFER_LOOP_H */
