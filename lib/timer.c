/* The per-multi timer heap and the per-transfer expiries (see timer.h). */
#include "common.h"

#include "mem.h"
#include "timer.h"

void xfer__timer_heap_init(struct xfer__timer_heap *h) {
  h->nodes = NULL;
  h->count = 0;
  h->capacity = 0;
}

void xfer__timer_heap_free(struct xfer__timer_heap *h) {
  xfer__free(h->nodes);
  xfer__timer_heap_init(h);
}

bool xfer__timer_heap_reserve(struct xfer__timer_heap *h, size_t count) {
  size_t capacity = h->capacity ? h->capacity : 16;
  struct xfer__timer_node **nodes;

  if (count <= h->capacity)
    return true;
  while (capacity < count)
    capacity *= 2;
  nodes = xfer__realloc(h->nodes, capacity * sizeof(*nodes));
  if (!nodes)
    return false;
  h->nodes = nodes;
  h->capacity = capacity;
  return true;
}

struct xfer__timer_node *xfer__timer_heap_top(const struct xfer__timer_heap *h) {
  return h->count ? h->nodes[0] : NULL;
}

static void heap_place(struct xfer__timer_heap *h, size_t i,
                       struct xfer__timer_node *n) {
  h->nodes[i] = n;
  n->index = i;
}

static void heap_sift_up(struct xfer__timer_heap *h, size_t i) {
  struct xfer__timer_node *n = h->nodes[i];

  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (h->nodes[parent]->deadline <= n->deadline)
      break;
    heap_place(h, i, h->nodes[parent]);
    i = parent;
  }
  heap_place(h, i, n);
}

static void heap_sift_down(struct xfer__timer_heap *h, size_t i) {
  struct xfer__timer_node *n = h->nodes[i];

  for (;;) {
    size_t child = 2 * i + 1;
    if (child >= h->count)
      break;
    if (child + 1 < h->count &&
        h->nodes[child + 1]->deadline < h->nodes[child]->deadline)
      child++;
    if (n->deadline <= h->nodes[child]->deadline)
      break;
    heap_place(h, i, h->nodes[child]);
    i = child;
  }
  heap_place(h, i, n);
}

static void heap_remove(struct xfer__timer_heap *h, struct xfer__timer_node *n) {
  size_t i = n->index;
  struct xfer__timer_node *last;

  assert(i < h->count && h->nodes[i] == n);
  n->index = XFER__TIMER_NOT_QUEUED;
  last = h->nodes[--h->count];
  if (last == n)
    return;
  heap_place(h, i, last);
  heap_sift_up(h, i);
  heap_sift_down(h, last->index);
}

/* Puts n at its new deadline: inserted, moved or removed (NEVER). */
static void heap_update(struct xfer__timer_heap *h, struct xfer__timer_node *n,
                        xfer__time deadline) {
  if (n->index != XFER__TIMER_NOT_QUEUED) {
    if (deadline == n->deadline)
      return;
    if (deadline == XFER__TIME_NEVER) {
      heap_remove(h, n);
      n->deadline = deadline;
      return;
    }
    n->deadline = deadline;
    heap_sift_up(h, n->index);
    heap_sift_down(h, n->index);
    return;
  }
  n->deadline = deadline;
  if (deadline == XFER__TIME_NEVER)
    return;
  /* Room was reserved when the owner joined the multi. */
  assert(h->count < h->capacity);
  heap_place(h, h->count++, n);
  heap_sift_up(h, n->index);
}

void xfer__expiry_init(struct xfer__expiry *e) {
  for (size_t i = 0; i < XFER__EXPIRE_COUNT; i++)
    e->at[i] = XFER__TIME_NEVER;
  e->node.deadline = XFER__TIME_NEVER;
  e->node.index = XFER__TIMER_NOT_QUEUED;
}

static xfer__time expiry_earliest(const struct xfer__expiry *e) {
  xfer__time earliest = XFER__TIME_NEVER;

  for (size_t i = 0; i < XFER__EXPIRE_COUNT; i++)
    if (e->at[i] < earliest)
      earliest = e->at[i];
  return earliest;
}

void xfer__expiry_set(struct xfer__timer_heap *h, struct xfer__expiry *e,
                      enum xfer__expire_id id, xfer__time at) {
  assert(id < XFER__EXPIRE_COUNT);
  if (e->at[id] == at)
    return; /* the node's deadline is the earliest of at[]: unchanged */
  e->at[id] = at;
  heap_update(h, &e->node, expiry_earliest(e));
}

void xfer__expiry_clear(struct xfer__timer_heap *h, struct xfer__expiry *e,
                        enum xfer__expire_id id) {
  xfer__expiry_set(h, e, id, XFER__TIME_NEVER);
}

void xfer__expiry_clear_all(struct xfer__timer_heap *h,
                            struct xfer__expiry *e) {
  /* The node's deadline is always the earliest of at[]: NEVER means
   * there is nothing to clear (a transfer that ends with no timeout). */
  if (e->node.deadline == XFER__TIME_NEVER) {
    assert(expiry_earliest(e) == XFER__TIME_NEVER);
    return;
  }
  for (size_t i = 0; i < XFER__EXPIRE_COUNT; i++)
    e->at[i] = XFER__TIME_NEVER;
  heap_update(h, &e->node, XFER__TIME_NEVER);
}

unsigned xfer__expiry_take_due(struct xfer__timer_heap *h,
                               struct xfer__expiry *e, xfer__time now) {
  unsigned due = 0;

  for (unsigned i = 0; i < XFER__EXPIRE_COUNT; i++) {
    if (e->at[i] <= now) {
      due |= 1u << i;
      e->at[i] = XFER__TIME_NEVER;
    }
  }
  if (due)
    heap_update(h, &e->node, expiry_earliest(e));
  return due;
}
