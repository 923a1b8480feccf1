/*
 * The library's allocator. Every allocation of lib/ goes through here, so
 * that allocator hooks and failing-allocation tests have one place to act,
 * and so that the tests can check that nothing is left allocated.
 */
#ifndef XFER_MEM_H
#define XFER_MEM_H

#include <stddef.h>

void *xfer__malloc(size_t size);
void *xfer__calloc(size_t count, size_t size);
void *xfer__realloc(void *ptr, size_t size);
void xfer__free(void *ptr);

/* Blocks allocated through the functions above and not freed yet, over
 * all threads. */
long xfer__mem_live(void);

#endif /* XFER_MEM_H */
