/*
 * An exchange: one protocol's request and response on a connection
 * (docs/internals/filters.md). The transfer (transfer.c) finds a
 * connection, opens one, and runs the exchange on it; the exchange sends
 * and receives through the connection's filters and knows nothing of the
 * pool, redirects or retries. HTTP/1.1 is the first (exchange_h1.c);
 * HTTP/2 will be the second, its transfers sharing one connection.
 *
 * Protected by: nothing; an exchange runs on the thread of its transfer's
 * multi, and its connection-wide parts (shutdown, alive) on the thread
 * that holds the connection.
 */
#ifndef XFER_EXCHANGE_H
#define XFER_EXCHANGE_H

#include "common.h"

#include "cfilter.h"
#include "http1.h"
#include "multi_ev.h"

/* What a step says: typed, never an xfer_code mixed with sentinels. A
 * failure's code is in the transfer (xfer__step_fail()). */
enum xfer__step {
  XFER__STEP_AGAIN,  /* wait for the pollset or a timer */
  XFER__STEP_NEXT,   /* the state changed: go on at once */
  XFER__STEP_DONE,   /* finished (the response is complete) */
  XFER__STEP_FAILED, /* finished with the transfer's `failure` */
  XFER__STEP_RETRY   /* exchange only: a reused connection died before any
                        response byte (errno in died_errno, 0 for EOF); the
                        transfer decides whether to send it again */
};

struct xfer__conn;

struct xfer__exchange_type {
  const char *name;
  /* Starts the request of x on x->http.conn, connected (fresh, reused or
   * handed over). */
  enum xfer__step (*start)(xfer *x);
  /* Sends and receives: AGAIN, DONE, FAILED or RETRY. */
  enum xfer__step (*run)(xfer *x);
  /* What it waits on now. */
  void (*pollset)(xfer *x, struct xfer__pollset *ps);
  /* After DONE: may the connection be used again? */
  bool (*keep_alive)(const xfer *x);
  /* The protocol's part of a graceful close of an idle connection
   * (HTTP/2: GOAWAY); NULL: none. */
  enum xfer__cf_progress (*shutdown)(struct xfer__conn *c);
  /* The protocol's view of an idle connection before reuse; NULL: no
   * objection (the filters are asked next). */
  bool (*alive)(const struct xfer__conn *c);
};

/* The HTTP/1.1 exchange's state in a transfer. */
enum xfer__h1_state { XFER__H1_SEND, XFER__H1_RECV };

struct xfer__h1 {
  enum xfer__h1_state state;
  struct xfer__buf out;   /* head, then streamed body frames */
  size_t out_sent;
  size_t body_sent;       /* of opts.body */
  uint64_t body_streamed; /* given by the read callback */
  bool body_done;         /* the read callback said end */
  bool asked_close;       /* our request said Connection: close */
  bool cut;               /* the request stopped before its end (the
                             server answered first): never reused */
  int send_err;           /* the send failed (an errno): only the answer
                             that may have come before is read */
  uint64_t head_gen;      /* opts.gen `out` holds the head of (alone);
                             0: none, or a hop's */
  size_t head_len;
};

extern const struct xfer__exchange_type xfer__h1_exchange;

#endif /* XFER_EXCHANGE_H */
