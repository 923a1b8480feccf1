/*
 * The shutdown handle of a multi (seed multi-ev.md): it closes connections
 * gracefully, top down (xfer__conn_shutdown_step): the exchange's part
 * (HTTP/1.1: none), then each filter's (the socket: shutdown(SHUT_WR),
 * then what the peer still sends is read and dropped until its EOF). The
 * connection is watched for what its stack waits on to go on with the
 * close (IN, unless a filter must write first; never OUT for a socket
 * alone, so a silent peer cannot make the loop spin); when its close
 * ends, or the timeout (default 2 s) passes, it is closed through
 * socket_done.
 * Its timeouts run on a timer the multi gives it (the expiry of an
 * internal transfer of the multi, set to the earliest shutdown deadline;
 * the multi calls xfer__shutdown_run() when it fires).
 *
 * Protected by: nothing; it belongs to the multi's thread.
 */
#ifndef XFER_SHUTDOWN_H
#define XFER_SHUTDOWN_H

#include "common.h"

#include "loop.h"
#include "now.h"
#include "timer.h"

struct xfer__conn;

#define XFER__SHUTDOWN_TIMEOUT (2000 * XFER__NS_PER_MS)

struct xfer__shutdown {
  struct xfer__loop *loop;
  struct xfer__expiry *timer; /* XFER__EXPIRE_SHUTDOWN: the next deadline */
  struct xfer__list conns;    /* xfer__conn.idle_node */
  size_t count;
  uint64_t total;             /* connections shut down so far */
  xfer__time timeout;
  xfer__time close_by;        /* NEVER; during a drain, its end: nothing
                                 adopted then closes later */
};

void xfer__shutdown_init(struct xfer__shutdown *s, struct xfer__loop *loop,
                         struct xfer__expiry *timer);
/* Takes over c (tracked by no multi) and starts its graceful close. */
void xfer__shutdown_adopt(struct xfer__shutdown *s, struct xfer__conn *c,
                          xfer__time now);
/* Adopts every connection on `evicted` (linked by idle_node). */
void xfer__shutdown_adopt_list(struct xfer__shutdown *s,
                               struct xfer__list *evicted, xfer__time now);
/* Its timer fired: hard closes what is past its deadline, and sets the
 * timer for the next. */
void xfer__shutdown_run(struct xfer__shutdown *s, xfer__time now);
/* Blocks until every connection closed or its deadline passed (for
 * xfer_multi_destroy()), then closes the rest. Starts from the loop's last
 * reading (the caller's, rule 2) and reads the clock after each wait. */
void xfer__shutdown_drain(struct xfer__shutdown *s);

#endif /* XFER_SHUTDOWN_H */
