/* The library's allocator: a thin layer over the C library for now. */
#include "common.h"

#include <stdlib.h>

#include "mem.h"

void *xfer__malloc(size_t size) { return malloc(size); }

void *xfer__calloc(size_t count, size_t size) { return calloc(count, size); }

void *xfer__realloc(void *ptr, size_t size) { return realloc(ptr, size); }

void xfer__free(void *ptr) { free(ptr); }
