/*
 * The library's allocator: the C library's, or the application's hooks
 * (xfer_mem_set()), with a count of live blocks (one relaxed atomic add per
 * call; the hot path allocates nothing).
 */
#include "common.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "mem.h"

/* Protected by: atomic (relaxed; it is a statistic, not a synchroniser). */
static atomic_long live_blocks;

/* The hooks in use: NULL for the C library's. Set only while no block is
 * live (xfer_mem_set() checks), read with a relaxed load per call. */
static xfer_mem hooks;
static _Atomic(const xfer_mem *) active;

static void *counted(void *ptr) {
  if (ptr)
    atomic_fetch_add_explicit(&live_blocks, 1, memory_order_relaxed);
  return ptr;
}

void *xfer__malloc(size_t size) {
  const xfer_mem *m = atomic_load_explicit(&active, memory_order_relaxed);
  return counted(m ? m->malloc(size, m->user) : malloc(size));
}

void *xfer__calloc(size_t count, size_t size) {
  const xfer_mem *m = atomic_load_explicit(&active, memory_order_relaxed);
  return counted(m ? m->calloc(count, size, m->user) : calloc(count, size));
}

void *xfer__realloc(void *ptr, size_t size) {
  const xfer_mem *m = atomic_load_explicit(&active, memory_order_relaxed);

  if (!ptr)
    return xfer__malloc(size);
  assert(size > 0); /* realloc(p, 0) differs between C libraries */
  return m ? m->realloc(ptr, size, m->user) : realloc(ptr, size);
}

void xfer__free(void *ptr) {
  const xfer_mem *m = atomic_load_explicit(&active, memory_order_relaxed);

  if (!ptr)
    return;
  atomic_fetch_sub_explicit(&live_blocks, 1, memory_order_relaxed);
  if (m)
    m->free(ptr, m->user);
  else
    free(ptr);
}

long xfer__mem_live(void) {
  return atomic_load_explicit(&live_blocks, memory_order_relaxed);
}

xfer_code xfer_mem_set(const xfer_mem *mem) {
  if (mem && (!mem->malloc || !mem->free || !mem->calloc || !mem->realloc))
    return XFER_E_BAD_ARGUMENT;
  if (xfer__mem_live() != 0)
    return XFER_E_IN_USE;
  if (!mem) {
    atomic_store(&active, NULL);
    return XFER_OK;
  }
  hooks = *mem;
  atomic_store(&active, &hooks);
  return XFER_OK;
}
