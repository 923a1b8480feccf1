/*
 * Connection filters (docs/internals/filters.md). A connection is a stack
 * of filters, the socket at the bottom; TLS will sit on it, and tests put
 * a filter there that delivers data in pieces. Each filter is a small
 * table of functions; each calls the one below for what it does not do
 * itself. The exchange above (exchange.h) sees only the top.
 *
 * Protected by: nothing. A stack belongs to its connection, and the
 * connection to one thread at a time (the transfer using it, the multi
 * holding it attached, the pool while it is idle: no I/O then, or the
 * shutdown handle closing it).
 */
#ifndef XFER_CFILTER_H
#define XFER_CFILTER_H

#include "common.h"

#include <sys/types.h>
#include <sys/uio.h>

#include "multi_ev.h"
#include "now.h"

struct xfer__cf;

/* What a connect or shutdown step says. */
enum xfer__cf_progress {
  XFER__CF_AGAIN,  /* not yet: the pollset (or *next_at) brings it back */
  XFER__CF_DONE,
  XFER__CF_FAILED  /* connect: the reason is in `why` */
};

struct xfer__cf_type {
  const char *name;
  /* Advances this filter's connect, once every filter below is connected
   * (the socket: happy eyeballs; TLS: its handshake). On AGAIN it may
   * lower *next_at to when it must run again without an event. */
  enum xfer__cf_progress (*connect)(struct xfer__cf *cf, struct xfer__mev *ev,
                                    xfer__time now, xfer__time *next_at,
                                    char *why, size_t why_len);
  /* Adds what the stack waits on to ps. `want` is what the layer above
   * waits for (XFER_POLL_IN and/or XFER_POLL_OUT; 0 while connecting,
   * when each filter adds what its own connect needs). A filter passes it
   * down, changed when it must (a read that needs a write first). */
  void (*pollset)(struct xfer__cf *cf, struct xfer__pollset *ps,
                  unsigned want);
  /* Sends up to the bytes of iov: how many were taken, or -1 with *err
   * an errno value (EAGAIN: would block). */
  ssize_t (*send)(struct xfer__cf *cf, const struct iovec *iov, int iovcnt,
                  int *err);
  /* Receives up to len bytes: how many, 0 at the peer's end, or -1 with
   * *err an errno value (EAGAIN: would block, the pollset says on what). */
  ssize_t (*recv)(struct xfer__cf *cf, char *buf, size_t len, int *err);
  /* Bytes this filter holds already: no event will announce them. */
  bool (*data_pending)(const struct xfer__cf *cf);
  /* One step of this filter's part of a graceful close, called once the
   * filters above finished theirs. DONE (or FAILED: give up) ends it. */
  enum xfer__cf_progress (*shutdown)(struct xfer__cf *cf);
  /* May an idle connection be reused, as far as this filter knows? */
  bool (*alive)(struct xfer__cf *cf);
  /* Frees the filter; the socket closes its sockets through socket_done
   * of ev (NULL: a socket no event tracking knows). */
  void (*close)(struct xfer__cf *cf, struct xfer__mev *ev);
  /* Once connected, it waits on its own socket for just what the layer
   * above waits for, and holds no received bytes (the socket): a stack
   * of this filter alone has a pollset known without asking it. */
  bool waits_as_asked;
};

struct xfer__cf {
  const struct xfer__cf_type *type;
  struct xfer__cf *below; /* NULL at the bottom: the socket */
  bool connected;
  bool shut; /* its shutdown step ended */
};

/* Puts cf on top of *top. */
void xfer__cf_push(struct xfer__cf **top, struct xfer__cf *cf);

/* Connects the stack from the bottom up: each filter's connect runs once
 * the one below is connected. */
enum xfer__cf_progress xfer__cf_connect(struct xfer__cf *top,
                                        struct xfer__mev *ev, xfer__time now,
                                        xfer__time *next_at, char *why,
                                        size_t why_len);

static inline void xfer__cf_pollset(struct xfer__cf *top,
                                    struct xfer__pollset *ps, unsigned want) {
  top->type->pollset(top, ps, want);
}

static inline ssize_t xfer__cf_send(struct xfer__cf *top,
                                    const struct iovec *iov, int iovcnt,
                                    int *err) {
  return top->type->send(top, iov, iovcnt, err);
}

static inline ssize_t xfer__cf_recv(struct xfer__cf *top, char *buf,
                                    size_t len, int *err) {
  return top->type->recv(top, buf, len, err);
}

/* Does any filter of the stack hold received bytes? (Inline: asked twice
 * a request, and most stacks are the socket alone, which holds none.) */
static inline bool xfer__cf_data_pending(const struct xfer__cf *top) {
  for (const struct xfer__cf *cf = top; cf; cf = cf->below)
    if (cf->type->data_pending && cf->type->data_pending(cf))
      return true;
  return false;
}

/* One step of the graceful close, from the top down: the first filter
 * not finished gets the step. DONE when every filter finished. */
enum xfer__cf_progress xfer__cf_shutdown(struct xfer__cf *top);

/* Alive as far as every filter knows, from the top down. */
bool xfer__cf_alive(struct xfer__cf *top);

/* Frees the stack, top first. */
void xfer__cf_close(struct xfer__cf *top, struct xfer__mev *ev);

/* Pass-through parts, for filters that change only some of the stack's
 * behaviour. */
void xfer__cf_pass_pollset(struct xfer__cf *cf, struct xfer__pollset *ps,
                           unsigned want);
ssize_t xfer__cf_pass_send(struct xfer__cf *cf, const struct iovec *iov,
                           int iovcnt, int *err);
ssize_t xfer__cf_pass_recv(struct xfer__cf *cf, char *buf, size_t len,
                           int *err);

struct xfer__conn;

/* Tests only: when set, called for each connection a transfer opens, with
 * the socket filter as its stack, to put a filter of its own on top. Set
 * before the first transfer runs, never changed while one does. */
extern void (*xfer__cf_test_hook)(struct xfer__conn *c);

#endif /* XFER_CFILTER_H */
