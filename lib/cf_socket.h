/*
 * The socket filter, the bottom of every connection's stack (cfilter.h):
 * a non-blocking TCP connect with happy eyeballs (RFC 8305), then plain
 * send and recv on the socket, a graceful close (our FIN, then the peer's
 * EOF) and a non-blocking peek for liveness.
 *
 * Happy eyeballs: addresses interleaved by family, IPv6 first when the
 * resolver gave both; the next attempt starts XFER__HE_DELAY after the
 * previous one, or at once when every attempt in flight has failed; with
 * XFER__HE_MAX_INFLIGHT in flight, the oldest gives its place to the next
 * address when that one is due; the first to connect wins and the others
 * are closed through socket_done.
 */
#ifndef XFER_CF_SOCKET_H
#define XFER_CF_SOCKET_H

#include "common.h"

#include <sys/socket.h>

#include "cfilter.h"
#include "multi_ev.h"
#include "now.h"

#define XFER__HE_DELAY (200 * XFER__NS_PER_MS)
#define XFER__HE_MAX_ADDRS 16
#define XFER__HE_MAX_INFLIGHT 4

struct xfer__addr {
  struct sockaddr_storage sa;
  socklen_t len;
};

/* The attempts of one connect (only while connecting). */
struct xfer__he {
  struct xfer__addr addrs[XFER__HE_MAX_ADDRS]; /* in attempt order */
  unsigned naddrs;
  unsigned next;               /* the next address to try */
  int fds[XFER__HE_MAX_INFLIGHT];
  unsigned char fd_addr[XFER__HE_MAX_INFLIGHT]; /* index into addrs */
  unsigned inflight;
  xfer__time next_attempt_at;
  struct xfer__addr local_addr;
  const struct xfer__addr *local; /* &local_addr, or NULL: no bind */
  int last_errno;
  char last_addr[64];             /* the address of the last failure */
  bool bind_failed;               /* that failure was binding to `local`
                                     (last_addr is its IP): no address
                                     is tried after it */
};

/* Orders `addrs` for the attempts (interleaved families, IPv6 first). */
void xfer__he_init(struct xfer__he *he, const struct xfer__addr *addrs,
                   unsigned naddrs, const struct xfer__addr *local);

/* A socket filter that connects to the first of `addrs` to answer (copied,
 * as is `local`, the address to bind, or NULL). NULL when out of memory. */
struct xfer__cf *xfer__cf_socket_connect(const struct xfer__addr *addrs,
                                         unsigned naddrs,
                                         const struct xfer__addr *local);

/* A socket filter over a socket connected already (taking it over). NULL
 * when out of memory (the socket is not closed). */
struct xfer__cf *xfer__cf_socket_over(int fd);

/* The socket of the stack `cf` belongs to (any of its filters): -1 while
 * it is connecting. */
int xfer__cf_socket_fd(const struct xfer__cf *cf);

/* Parses a numeric IPv4 or IPv6 address (ip_version 4 or 6 allows only
 * that family; 0 either) with `port`. false when it is not one. */
bool xfer__addr_parse(struct xfer__addr *a, const char *ip, uint16_t port,
                      int ip_version);

/* "127.0.0.1 port 80" / "::1 port 80" */
void xfer__addr_text(const struct xfer__addr *a, char *out, size_t len);

#endif /* XFER_CF_SOCKET_H */
