/*
 * Small shared pieces of lib/: the intrusive list, container_of, handle
 * magic numbers. Header only; every module includes it first.
 */
#ifndef XFER_COMMON_H
#define XFER_COMMON_H

#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xfer/xfer.h"

#define XFER__CONTAINER_OF(ptr, type, member)                                 \
  ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

#define XFER__ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* The library's thread-local variables (a few bytes, in glibc's static
 * TLS surplus): initial-exec, so that libxfer.so reads them with one
 * thread-pointer-relative load, as a program does, instead of a call to
 * __tls_get_addr on every pool lock and clock read. */
#define XFER__THREAD_LOCAL _Thread_local __attribute__((tls_model("initial-exec")))

/* A function that reports a failure: the compiler moves the code that
 * calls it out of the hot path (a separate .cold part), so that the code
 * a request runs through stays dense (docs/internals/performance.md). */
#define XFER__COLD __attribute__((cold))

/* Handle magics. A freed handle gets XFER__MAGIC_DEAD so that a use after
 * free is refused where the memory has not been reused yet. */
#define XFER__MAGIC_XFER 0x78666572u  /* "xfer" */
#define XFER__MAGIC_MULTI 0x6d756c74u /* "mult" */
#define XFER__MAGIC_DEAD 0xdeadbeefu

/* Circular doubly linked list with a sentinel head. A node that is not in
 * a list points at itself, so "is it linked?" needs no extra flag. */
struct xfer__list {
  struct xfer__list *prev;
  struct xfer__list *next;
};

static inline void xfer__list_init(struct xfer__list *l) {
  l->prev = l;
  l->next = l;
}

static inline bool xfer__list_empty(const struct xfer__list *l) {
  return l->next == l;
}

static inline bool xfer__list_linked(const struct xfer__list *n) {
  return n->next != n;
}

static inline void xfer__list_insert_tail(struct xfer__list *head,
                                          struct xfer__list *n) {
  n->prev = head->prev;
  n->next = head;
  head->prev->next = n;
  head->prev = n;
}

static inline void xfer__list_remove(struct xfer__list *n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
  xfer__list_init(n);
}

/* Repairs the neighbours of a node whose memory was moved (memcpy'd to a
 * new address) while linked. */
static inline void xfer__list_relink(struct xfer__list *n) {
  n->prev->next = n;
  n->next->prev = n;
}

#define XFER__LIST_FOREACH_SAFE(pos, tmp, head)                               \
  for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head);           \
       (pos) = (tmp), (tmp) = (pos)->next)

#endif /* XFER_COMMON_H */
