/*
 * The library's allocator. Every allocation of lib/ goes through here, so
 * that allocator hooks and failing-allocation tests have one place to act.
 */
#ifndef XFER_MEM_H
#define XFER_MEM_H

#include <stddef.h>

void *xfer__malloc(size_t size);
void *xfer__calloc(size_t count, size_t size);
void *xfer__realloc(void *ptr, size_t size);
void xfer__free(void *ptr);

#endif /* XFER_MEM_H */
