/* Connections (see conn.h). */
#include "common.h"

#include <stdatomic.h>
#include <string.h>

#include "cf_socket.h"
#include "conn.h"
#include "exchange.h"
#include "mem.h"
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

/* The key is built for every request, so by hand, not with snprintf
 * (docs/internals/performance.md). */
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

/* The object alone, with no stack yet. */
static struct xfer__conn *conn_alloc(const char *key, size_t key_len,
                                     xfer__time now) {
  struct xfer__conn *c = xfer__calloc(1, sizeof(*c) + key_len + 1);

  if (!c)
    return NULL;
  c->id = atomic_fetch_add_explicit(&next_conn_id, 1, memory_order_relaxed);
  c->fd = -1;
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

struct xfer__conn *xfer__conn_new(int fd, const char *key, size_t key_len,
                                  xfer__time now) {
  struct xfer__conn *c = conn_alloc(key, key_len, now);

  if (!c)
    return NULL;
  if (!(c->filters = xfer__cf_socket_over(fd))) {
    xfer__free(c);
    return NULL;
  }
  c->fd = fd;
  return c;
}

struct xfer__conn *xfer__conn_open(const char *key, size_t key_len,
                                   xfer__time now,
                                   const struct xfer__addr *addrs,
                                   unsigned naddrs,
                                   const struct xfer__addr *local) {
  struct xfer__conn *c = conn_alloc(key, key_len, now);

  if (!c)
    return NULL;
  if (!(c->filters = xfer__cf_socket_connect(addrs, naddrs, local))) {
    xfer__free(c);
    return NULL;
  }
  if (xfer__cf_test_hook)
    xfer__cf_test_hook(c);
  return c;
}

enum xfer__cf_progress xfer__conn_connect(struct xfer__conn *c,
                                          struct xfer__mev *ev, xfer__time now,
                                          xfer__time *next_at, char *why,
                                          size_t why_len) {
  enum xfer__cf_progress p =
      xfer__cf_connect(c->filters, ev, now, next_at, why, why_len);

  if (c->fd < 0)
    c->fd = xfer__cf_socket_fd(c->filters);
  if (p == XFER__CF_DONE) /* its life (max_lifetime) starts connected */
    c->created = c->last_used = now;
  return p;
}

enum xfer__cf_progress xfer__conn_shutdown_step(struct xfer__conn *c) {
  if (!c->proto_shut && c->proto && c->proto->shutdown &&
      c->proto->shutdown(c) == XFER__CF_AGAIN)
    return XFER__CF_AGAIN;
  c->proto_shut = true;
  return xfer__cf_shutdown(c->filters);
}

void xfer__conn_close(struct xfer__conn *c, struct xfer__mev *ev) {
  XFER__ASSERT_NO_POOL_LOCK(); /* rule 3: no close under a pool lock */
  xfer__cf_close(c->filters, ev);
  xfer__free(c);
}

bool xfer__conn_alive(const struct xfer__conn *c) {
  XFER__ASSERT_NO_POOL_LOCK();
  if (c->proto && c->proto->alive && !c->proto->alive(c))
    return false;
  return xfer__cf_alive(c->filters);
}
