/*
 * A multi's wake-up: an eventfd that other threads write to after the
 * pool granted one of the multi's waiting transfers a connection or slots,
 * or asked it to release an attached connection. The multi watches it in
 * its own event tracking, so the wake reaches its thread through its own
 * event loop.
 *
 * Protected by: refs is atomic; fd is immutable. A granter takes a
 * reference under the pool lock where it grants and writes after the lock
 * (the write is a system call), so a writer never writes to a descriptor
 * that was closed and given out again.
 */
#ifndef XFER_WAKE_H
#define XFER_WAKE_H

#include <stdatomic.h>

struct xfer__wake {
  atomic_int refs;
  int fd;
};

/* A new wake-up with one reference (its multi's). NULL when out of memory
 * or descriptors. */
struct xfer__wake *xfer__wake_new(void);
/* Takes a reference (under any lock: no system call). */
void xfer__wake_ref(struct xfer__wake *w);
/* Drops a reference; the last closes the eventfd. */
void xfer__wake_unref(struct xfer__wake *w);

/* Wake-ups collected under a pool lock, written after it: one lock hold
 * grants at most this many waiters. */
#define XFER__WAKEUPS_MAX 8

struct xfer__wakeups {
  struct xfer__wake *pending[XFER__WAKEUPS_MAX];
  unsigned n;
};

static inline void xfer__wakeups_init(struct xfer__wakeups *ws) { ws->n = 0; }

/* Under a lock: w (with a reference taken here) is to be woken after it. */
void xfer__wakeups_add(struct xfer__wakeups *ws, struct xfer__wake *w);

/* After every pool lock: writes each eventfd once and drops the
 * references. */
void xfer__wakeups_flush(struct xfer__wakeups *ws);

#endif /* XFER_WAKE_H */
