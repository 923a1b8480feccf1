/*
 * The socket filter: a non-blocking TCP connect with happy eyeballs
 * (RFC 8305): addresses interleaved by family, IPv6 first when the
 * resolver gave both; the next attempt starts XFER__HE_DELAY after the
 * previous one, or at once when every attempt in flight has failed; the
 * first to connect wins and the others are closed through socket_done.
 */
#ifndef XFER_CF_SOCKET_H
#define XFER_CF_SOCKET_H

#include "common.h"

#include <sys/socket.h>

#include "multi_ev.h"
#include "now.h"

#define XFER__HE_DELAY (200 * XFER__NS_PER_MS)
#define XFER__HE_MAX_ADDRS 16
#define XFER__HE_MAX_INFLIGHT 4

struct xfer__addr {
  struct sockaddr_storage sa;
  socklen_t len;
};

struct xfer__cf_socket {
  struct xfer__addr addrs[XFER__HE_MAX_ADDRS]; /* in attempt order */
  unsigned naddrs;
  unsigned next;               /* the next address to try */
  int fds[XFER__HE_MAX_INFLIGHT];
  unsigned char fd_addr[XFER__HE_MAX_INFLIGHT]; /* index into addrs */
  unsigned inflight;
  xfer__time next_attempt_at;
  const struct xfer__addr *local; /* bind here first, or NULL */
  int last_errno;
  char last_addr[64];             /* the address of the last failure */
};

/* Orders `addrs` for the attempts (interleaved families, IPv6 first). */
void xfer__cf_socket_init(struct xfer__cf_socket *cf,
                          const struct xfer__addr *addrs, unsigned naddrs,
                          const struct xfer__addr *local);

/*
 * Makes progress at `now`: starts attempts that are due, checks those in
 * flight. Returns 1 with *fd set when connected (the winner leaves cf;
 * the losers are closed), 0 while connecting, -1 when every address
 * failed (see last_errno, last_addr).
 */
int xfer__cf_socket_step(struct xfer__cf_socket *cf, xfer_multi *m,
                         xfer__time now, int *fd);

/* The attempts' sockets (each wants OUT). */
void xfer__cf_socket_pollset(const struct xfer__cf_socket *cf,
                             struct xfer__pollset *ps);

/* When the next attempt starts, or XFER__TIME_NEVER. */
xfer__time xfer__cf_socket_next_at(const struct xfer__cf_socket *cf);

/* Closes every attempt in flight (through socket_done). */
void xfer__cf_socket_close(struct xfer__cf_socket *cf, xfer_multi *m);

/* Parses a numeric IPv4 or IPv6 address (ip_version 4 or 6 allows only
 * that family; 0 either) with `port`. false when it is not one. */
bool xfer__addr_parse(struct xfer__addr *a, const char *ip, uint16_t port,
                      int ip_version);

/* "127.0.0.1 port 80" / "::1 port 80" */
void xfer__addr_text(const struct xfer__addr *a, char *out, size_t len);

#endif /* XFER_CF_SOCKET_H */
