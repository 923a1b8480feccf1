/*
 * The shutdown handle of a multi (seed multi-ev.md): it closes connections
 * gracefully, top down (xfer__conn_shutdown_step): the exchange's part
 * (HTTP/1.1: none), then each filter's (the socket: shutdown(SHUT_WR),
 * then what the peer still sends is read and dropped until its EOF). The
 * connection is watched for IN only (assess_conn: never OUT, so a silent
 * peer cannot make the loop spin); when its close ends, or the timeout
 * (default 2 s) passes, it is closed through socket_done.
 * Its timeouts run on an internal transfer of the multi, whose expiry is
 * the earliest shutdown deadline.
 *
 * Protected by: nothing; it belongs to the multi's thread.
 */
#ifndef XFER_SHUTDOWN_H
#define XFER_SHUTDOWN_H

#include "common.h"

#include "now.h"

struct xfer__conn;

#define XFER__SHUTDOWN_TIMEOUT (2000 * XFER__NS_PER_MS)

struct xfer__shutdown {
  xfer *handle;            /* internal: not in multi->xfers, never done */
  struct xfer__list conns; /* xfer__conn.idle_node */
  size_t count;
  uint64_t total;          /* connections shut down so far */
  xfer__time timeout;
};

/* Creates the internal handle. false when out of memory. */
bool xfer__shutdown_init(xfer_multi *m);
/* Takes over c (tracked by no multi) and starts its graceful close. */
void xfer__shutdown_adopt(xfer_multi *m, struct xfer__conn *c, xfer__time now);
/* Adopts every connection on `evicted` (linked by idle_node). */
void xfer__shutdown_adopt_list(xfer_multi *m, struct xfer__list *evicted,
                               xfer__time now);
/* Blocks until every connection closed or its deadline passed (for
 * xfer_multi_destroy()), then closes the rest and frees the handle. */
void xfer__shutdown_drain_and_free(xfer_multi *m);

#endif /* XFER_SHUTDOWN_H */
