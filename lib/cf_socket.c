/* Non-blocking connect with happy eyeballs (see cf_socket.h). */
#include "common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cf_socket.h"
#include "multi.h"

bool xfer__addr_parse(struct xfer__addr *a, const char *ip, uint16_t port,
                      int ip_version) {
  struct sockaddr_in *s4 = (void *)&a->sa;
  struct sockaddr_in6 *s6 = (void *)&a->sa;

  memset(a, 0, sizeof(*a));
  if (ip_version != 6 && inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
    s4->sin_family = AF_INET;
    s4->sin_port = htons(port);
    a->len = sizeof(*s4);
    return true;
  }
  if (ip_version != 4 && inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1) {
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(port);
    a->len = sizeof(*s6);
    return true;
  }
  return false;
}

void xfer__addr_text(const struct xfer__addr *a, char *out, size_t len) {
  char ip[INET6_ADDRSTRLEN] = "?";
  unsigned port = 0;

  if (a->sa.ss_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = (const void *)&a->sa;
    inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
    port = ntohs(s6->sin6_port);
  } else if (a->sa.ss_family == AF_INET) {
    const struct sockaddr_in *s4 = (const void *)&a->sa;
    inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
    port = ntohs(s4->sin_port);
  }
  snprintf(out, len, "%s port %u", ip, port);
}

void xfer__cf_socket_init(struct xfer__cf_socket *cf,
                          const struct xfer__addr *addrs, unsigned naddrs,
                          const struct xfer__addr *local) {
  unsigned v6 = 0, v4 = 0, n = 0;
  const struct xfer__addr *six[XFER__HE_MAX_ADDRS], *four[XFER__HE_MAX_ADDRS];

  memset(cf, 0, sizeof(*cf));
  for (unsigned i = 0; i < naddrs && i < XFER__HE_MAX_ADDRS; i++) {
    if (addrs[i].sa.ss_family == AF_INET6)
      six[v6++] = &addrs[i];
    else
      four[v4++] = &addrs[i];
  }
  /* RFC 8305 section 4: interleave the families, the preferred (IPv6)
   * first. */
  for (unsigned i = 0; i < v6 || i < v4; i++) {
    if (i < v6)
      cf->addrs[n++] = *six[i];
    if (i < v4)
      cf->addrs[n++] = *four[i];
  }
  cf->naddrs = n;
  cf->local = local;
  cf->next_attempt_at = 0;
  cf->last_errno = ENOENT;
}

static void record_failure(struct xfer__cf_socket *cf, unsigned addr, int err) {
  cf->last_errno = err;
  xfer__addr_text(&cf->addrs[addr], cf->last_addr, sizeof(cf->last_addr));
}

/* Drops attempt i (its socket is closed through socket_done). */
static void drop_attempt(struct xfer__cf_socket *cf, xfer_multi *m,
                         unsigned i) {
  xfer__multi_close_socket(m, cf->fds[i]);
  cf->inflight--;
  cf->fds[i] = cf->fds[cf->inflight];
  cf->fd_addr[i] = cf->fd_addr[cf->inflight];
}

/* Starts the attempt on the next address. false when it failed at once
 * (the failure is recorded). */
static bool start_attempt(struct xfer__cf_socket *cf) {
  unsigned idx = cf->next++;
  const struct xfer__addr *a = &cf->addrs[idx];
  int one = 1, fd;

  fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
              IPPROTO_TCP);
  if (fd < 0) {
    record_failure(cf, idx, errno);
    return false;
  }
  /* Requests are written whole; do not let Nagle hold them back. */
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (cf->local && cf->local->sa.ss_family == a->sa.ss_family &&
      bind(fd, (const struct sockaddr *)&cf->local->sa, cf->local->len) != 0) {
    record_failure(cf, idx, errno);
    close(fd); /* never reported to the multi: no socket_done needed */
    return false;
  }
  if (cf->local && cf->local->sa.ss_family != a->sa.ss_family) {
    record_failure(cf, idx, EAFNOSUPPORT);
    close(fd);
    return false;
  }
  if (connect(fd, (const struct sockaddr *)&a->sa, a->len) != 0 &&
      errno != EINPROGRESS) {
    record_failure(cf, idx, errno);
    close(fd);
    return false;
  }
  cf->fds[cf->inflight] = fd;
  cf->fd_addr[cf->inflight] = (unsigned char)idx;
  cf->inflight++;
  return true;
}

/* Checks the attempts in flight: returns the index of one that connected,
 * or -1; failed ones are dropped. One poll() over at most a few sockets,
 * and only while connecting. */
static int check_attempts(struct xfer__cf_socket *cf, xfer_multi *m) {
  struct pollfd pfd[XFER__HE_MAX_INFLIGHT];
  int err;
  socklen_t len;

  for (unsigned i = 0; i < cf->inflight; i++) {
    pfd[i].fd = cf->fds[i];
    pfd[i].events = POLLOUT;
    pfd[i].revents = 0;
  }
  if (cf->inflight == 0 || poll(pfd, cf->inflight, 0) <= 0)
    return -1;
  for (unsigned i = cf->inflight; i-- > 0;) {
    if (!pfd[i].revents)
      continue;
    err = 0;
    len = sizeof(err);
    if (getsockopt(cf->fds[i], SOL_SOCKET, SO_ERROR, &err, &len) != 0)
      err = errno;
    if (err == 0)
      return (int)i;
    record_failure(cf, cf->fd_addr[i], err);
    drop_attempt(cf, m, i);
  }
  return -1;
}

int xfer__cf_socket_step(struct xfer__cf_socket *cf, xfer_multi *m,
                         xfer__time now, int *fd) {
  int won;

  for (;;) {
    won = check_attempts(cf, m);
    if (won >= 0) {
      *fd = cf->fds[won];
      cf->fds[won] = cf->fds[--cf->inflight];
      cf->fd_addr[won] = cf->fd_addr[cf->inflight];
      xfer__cf_socket_close(cf, m); /* the losers */
      return 1;
    }
    /* Start the next attempt when it is due, or at once when nothing is
     * in flight any more (the previous ones failed). */
    if (cf->next < cf->naddrs && cf->inflight < XFER__HE_MAX_INFLIGHT &&
        (cf->inflight == 0 || now >= cf->next_attempt_at)) {
      if (start_attempt(cf))
        cf->next_attempt_at = now + XFER__HE_DELAY;
      continue; /* a loopback connect may have completed at once */
    }
    if (cf->inflight == 0)
      return -1;
    return 0;
  }
}

void xfer__cf_socket_pollset(const struct xfer__cf_socket *cf,
                             struct xfer__pollset *ps) {
  for (unsigned i = 0; i < cf->inflight; i++)
    xfer__pollset_add(ps, cf->fds[i], XFER_POLL_OUT);
}

xfer__time xfer__cf_socket_next_at(const struct xfer__cf_socket *cf) {
  return cf->next < cf->naddrs && cf->inflight ? cf->next_attempt_at
                                               : XFER__TIME_NEVER;
}

void xfer__cf_socket_close(struct xfer__cf_socket *cf, xfer_multi *m) {
  while (cf->inflight)
    drop_attempt(cf, m, cf->inflight - 1);
}
