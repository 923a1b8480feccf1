/* Wake-ups of multis across threads (see wake.h).
 *
 * Protected by: refs is atomic; fd is immutable. A granter takes a
 * reference under the pool lock where it grants and writes after the lock,
 * so a writer never writes to a descriptor closed and given out again. */
#include "common.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include "mem.h"
#include "now.h"
#include "wake.h"

struct xfer__wake *xfer__wake_new(void) {
  struct xfer__wake *w = xfer__malloc(sizeof(*w));

  if (!w)
    return NULL;
  XFER__ASSERT_NO_POOL_LOCK(); /* eventfd() is a system call */
  w->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (w->fd < 0) {
    xfer__free(w);
    return NULL;
  }
  atomic_init(&w->refs, 1);
  return w;
}

void xfer__wake_ref(struct xfer__wake *w) {
  atomic_fetch_add_explicit(&w->refs, 1, memory_order_relaxed);
}

void xfer__wake_unref(struct xfer__wake *w) {
  if (w && atomic_fetch_sub(&w->refs, 1) == 1) {
    XFER__ASSERT_NO_POOL_LOCK(); /* close() is a system call */
    close(w->fd);
    xfer__free(w);
  }
}

void xfer__wakeups_add(struct xfer__wakeups *ws, struct xfer__wake *w) {
  if (!w)
    return; /* a waiter nobody needs to wake (tests that poll the flag) */
  assert(ws->n < XFER__WAKEUPS_MAX);
  xfer__wake_ref(w);
  ws->pending[ws->n++] = w;
}

void xfer__wakeups_flush(struct xfer__wakeups *ws) {
  uint64_t one = 1;

  XFER__ASSERT_NO_POOL_LOCK(); /* rule 3: the write is a system call */
  for (unsigned i = 0; i < ws->n; i++) {
    if (write(ws->pending[i]->fd, &one, sizeof(one)) < 0) {
      /* EAGAIN: the counter is full of wake-ups already; nothing lost. */
    }
    xfer__wake_unref(ws->pending[i]);
  }
  ws->n = 0;
}
