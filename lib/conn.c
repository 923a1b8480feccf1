/* Connections (see conn.h). */
#include "common.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "mem.h"
#include "multi.h"
#include "now.h"

/* Protected by: atomic (ids only need to be unique). */
static atomic_uint_fast64_t next_conn_id = 1;

size_t xfer__conn_key(char *out, size_t len, const char *scheme,
                      const char *host, unsigned port, int ip_version,
                      const char *local_addr) {
  int n = snprintf(out, len, "%s://%s:%u|ip=%d|bind=%s", scheme, host, port,
                   ip_version, local_addr ? local_addr : "");
  return n < 0 ? len : (size_t)n;
}

uint64_t xfer__conn_key_hash(const char *key, size_t len) {
  uint64_t h = UINT64_C(0xcbf29ce484222325); /* FNV-1a */

  for (size_t i = 0; i < len; i++) {
    h ^= (unsigned char)key[i];
    h *= UINT64_C(0x100000001b3);
  }
  return h;
}

struct xfer__conn *xfer__conn_new(int fd, const char *key, size_t key_len,
                                  xfer__time now) {
  struct xfer__conn *c = xfer__calloc(1, sizeof(*c) + key_len + 1);

  if (!c)
    return NULL;
  c->id = atomic_fetch_add_explicit(&next_conn_id, 1, memory_order_relaxed);
  c->fd = fd;
  c->key = (char *)(c + 1);
  memcpy(c->key, key, key_len);
  c->key[key_len] = '\0';
  c->key_len = key_len;
  c->key_hash = xfer__conn_key_hash(key, key_len);
  c->created = now;
  c->last_used = now;
  xfer__list_init(&c->idle_node);
  xfer__list_init(&c->owner_node);
  atomic_init(&c->release_requested, false);
  return c;
}

void xfer__conn_close(struct xfer__conn *c, xfer_multi *m) {
  XFER__ASSERT_NO_POOL_LOCK(); /* rule 3: no close under a pool lock */
  if (m)
    xfer__multi_close_socket(m, c->fd);
  else
    close(c->fd);
  xfer__free(c);
}

bool xfer__conn_alive(const struct xfer__conn *c) {
  char byte;
  ssize_t n;

  XFER__ASSERT_NO_POOL_LOCK();
  n = recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);

  /* EOF, bytes we did not ask for, or an error: not reusable. */
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}
