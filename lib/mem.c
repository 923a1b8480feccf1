/*
 * The library's allocator: the C library's, with a count of live blocks
 * (one relaxed atomic add per call; the hot path allocates nothing).
 */
#include "common.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "mem.h"

/* Protected by: atomic (relaxed; it is a statistic, not a synchroniser). */
static atomic_long live_blocks;

static void *counted(void *ptr) {
  if (ptr)
    atomic_fetch_add_explicit(&live_blocks, 1, memory_order_relaxed);
  return ptr;
}

void *xfer__malloc(size_t size) { return counted(malloc(size)); }

void *xfer__calloc(size_t count, size_t size) {
  return counted(calloc(count, size));
}

void *xfer__realloc(void *ptr, size_t size) {
  void *moved;

  if (!ptr)
    return xfer__malloc(size);
  assert(size > 0); /* realloc(p, 0) differs between C libraries */
  moved = realloc(ptr, size);
  return moved;
}

void xfer__free(void *ptr) {
  if (!ptr)
    return;
  atomic_fetch_sub_explicit(&live_blocks, 1, memory_order_relaxed);
  free(ptr);
}

long xfer__mem_live(void) {
  return atomic_load_explicit(&live_blocks, memory_order_relaxed);
}
