/*
 * Timers: each transfer has a small fixed set of named expiries (connect
 * timeout, total timeout, ...); the multi keeps a binary min-heap with one
 * node per transfer, keyed by that transfer's earliest expiry. Setting or
 * clearing an expiry is O(log n) in the number of transfers with a
 * deadline; "what is due" is a look at the heap top.
 */
#ifndef XFER_TIMER_H
#define XFER_TIMER_H

#include <stdbool.h>
#include <stddef.h>

#include "now.h"

/* The named expiries of a transfer. */
enum xfer__expire_id {
  XFER__EXPIRE_RUN_NOW,        /* run at the next timeout action */
  XFER__EXPIRE_CONNECT,        /* connect timeout */
  XFER__EXPIRE_TOTAL,          /* total timeout */
  XFER__EXPIRE_LOW_SPEED,      /* low-speed check period */
  XFER__EXPIRE_HAPPY_EYEBALLS, /* start the next address family */
  XFER__EXPIRE_RESOLVE,        /* the resolver handle's next c-ares
                                  timeout or retry */
  XFER__EXPIRE_RETRY_AFTER,    /* retry a request later */
  XFER__EXPIRE_ATTACHED_WAIT,  /* stop waiting for another multi's
                                  attached connection */
  XFER__EXPIRE_SHUTDOWN,       /* the shutdown handle's next deadline */
  XFER__EXPIRE_ATTACHED,       /* the next attached connection's hold end */
  XFER__EXPIRE_COUNT
};

/* A heap node; lives inside the object it times. */
struct xfer__timer_node {
  xfer__time deadline;
  size_t index; /* position in the heap, XFER__TIMER_NOT_QUEUED if none */
};

#define XFER__TIMER_NOT_QUEUED ((size_t)-1)

struct xfer__timer_heap {
  struct xfer__timer_node **nodes;
  size_t count;
  size_t capacity;
};

/* A transfer's expiries and its heap node. */
struct xfer__expiry {
  xfer__time at[XFER__EXPIRE_COUNT]; /* XFER__TIME_NEVER when not set */
  struct xfer__timer_node node;      /* keyed by min(at[]) */
};

void xfer__timer_heap_init(struct xfer__timer_heap *h);
void xfer__timer_heap_free(struct xfer__timer_heap *h);
/* Makes room for `count` nodes, so that later inserts cannot fail.
 * Returns false when out of memory. */
bool xfer__timer_heap_reserve(struct xfer__timer_heap *h, size_t count);
/* The node with the earliest deadline, or NULL. */
struct xfer__timer_node *xfer__timer_heap_top(const struct xfer__timer_heap *h);

void xfer__expiry_init(struct xfer__expiry *e);
/* Sets expiry `id` to `at`, replacing an earlier setting. The heap must
 * have room reserved for this node. */
void xfer__expiry_set(struct xfer__timer_heap *h, struct xfer__expiry *e,
                      enum xfer__expire_id id, xfer__time at);
void xfer__expiry_clear(struct xfer__timer_heap *h, struct xfer__expiry *e,
                        enum xfer__expire_id id);
void xfer__expiry_clear_all(struct xfer__timer_heap *h, struct xfer__expiry *e);
/* Clears every expiry of e that is due at `now` and returns them as a bit
 * mask (1u << id); 0 when none is due. */
unsigned xfer__expiry_take_due(struct xfer__timer_heap *h,
                               struct xfer__expiry *e, xfer__time now);

#endif /* XFER_TIMER_H */
