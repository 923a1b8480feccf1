/* Connection filters: the stack's operations (see cfilter.h). */
#include "common.h"

#include "cfilter.h"

/* Protected by: set before any transfer runs (tests only). */
void (*xfer__cf_test_hook)(struct xfer__conn *c);

void xfer__cf_push(struct xfer__cf **top, struct xfer__cf *cf) {
  cf->below = *top;
  *top = cf;
}

enum xfer__cf_progress xfer__cf_connect(struct xfer__cf *top,
                                        struct xfer__mev *ev, xfer__time now,
                                        xfer__time *next_at, char *why,
                                        size_t why_len) {
  enum xfer__cf_progress p;

  if (top->connected)
    return XFER__CF_DONE;
  if (top->below) {
    p = xfer__cf_connect(top->below, ev, now, next_at, why, why_len);
    if (p != XFER__CF_DONE)
      return p;
  }
  p = top->type->connect(top, ev, now, next_at, why, why_len);
  if (p == XFER__CF_DONE)
    top->connected = true;
  return p;
}

enum xfer__cf_progress xfer__cf_shutdown(struct xfer__cf *top) {
  for (struct xfer__cf *cf = top; cf; cf = cf->below) {
    if (cf->shut)
      continue;
    if (cf->type->shutdown && cf->type->shutdown(cf) == XFER__CF_AGAIN)
      return XFER__CF_AGAIN;
    cf->shut = true;
  }
  return XFER__CF_DONE;
}

bool xfer__cf_alive(struct xfer__cf *top) {
  for (struct xfer__cf *cf = top; cf; cf = cf->below)
    if (cf->type->alive && !cf->type->alive(cf))
      return false;
  return true;
}

void xfer__cf_close(struct xfer__cf *top, struct xfer__mev *ev) {
  while (top) {
    struct xfer__cf *below = top->below;
    top->type->close(top, ev);
    top = below;
  }
}

void xfer__cf_pass_pollset(struct xfer__cf *cf, struct xfer__pollset *ps,
                           unsigned want) {
  xfer__cf_pollset(cf->below, ps, want);
}

ssize_t xfer__cf_pass_send(struct xfer__cf *cf, const struct iovec *iov,
                           int iovcnt, int *err) {
  return xfer__cf_send(cf->below, iov, iovcnt, err);
}

ssize_t xfer__cf_pass_recv(struct xfer__cf *cf, char *buf, size_t len,
                           int *err) {
  return xfer__cf_recv(cf->below, buf, len, err);
}
