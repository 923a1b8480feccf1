/* Connections (see conn.h). */
#include "common.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "mem.h"
#include "multi.h"
#include "now.h"

/* Protected by: atomic (ids only need to be unique). */
static atomic_uint_fast64_t next_conn_id = 1;

/* Decimal digits of v, written backwards from `end`; returns the first. */
static char *digits_before(char *end, unsigned long v) {
  do
    *--end = (char)('0' + v % 10);
  while (v /= 10);
  return end;
}

/* The key is built for every request, so by hand: snprintf cost a fifth
 * of the library's instructions per request (tests/bench, callgrind). */
size_t xfer__conn_key(char *out, size_t len, const char *scheme,
                      const char *host, unsigned port, int ip_version,
                      const char *local_addr) {
  char port_buf[24], ip_buf[24], *port_text, *ip_text;
  const char *parts[9];
  size_t lens[9], total = 0, at = 0;
  int n = 0;

  port_text = digits_before(port_buf + sizeof(port_buf), port);
  ip_text = digits_before(ip_buf + sizeof(ip_buf),
                          ip_version < 0 ? -(unsigned long)ip_version
                                         : (unsigned long)ip_version);
  if (ip_version < 0)
    *--ip_text = '-';
#define KEY_PART(s, l) (parts[n] = (s), lens[n] = (l), total += lens[n++])
  KEY_PART(scheme, strlen(scheme));
  KEY_PART("://", 3);
  KEY_PART(host, strlen(host));
  KEY_PART(":", 1);
  KEY_PART(port_text, (size_t)(port_buf + sizeof(port_buf) - port_text));
  KEY_PART("|ip=", 4);
  KEY_PART(ip_text, (size_t)(ip_buf + sizeof(ip_buf) - ip_text));
  KEY_PART("|bind=", 6);
  KEY_PART(local_addr ? local_addr : "", local_addr ? strlen(local_addr) : 0);
#undef KEY_PART
  if (total >= len) { /* too long: like snprintf, say how long */
    if (len)
      out[0] = '\0';
    return total;
  }
  for (int i = 0; i < n; i++) {
    memcpy(out + at, parts[i], lens[i]);
    at += lens[i];
  }
  out[at] = '\0';
  return total;
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
