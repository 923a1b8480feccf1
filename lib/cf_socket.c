/* The socket filter: happy eyeballs, then the socket (see cf_socket.h). */
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
#include "mem.h"

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

/* The IP of a (text, "?" for no family of ours) and its port. */
static unsigned addr_ip(const struct xfer__addr *a,
                        char ip[INET6_ADDRSTRLEN]) {
  strcpy(ip, "?");
  if (a->sa.ss_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = (const void *)&a->sa;
    inet_ntop(AF_INET6, &s6->sin6_addr, ip, INET6_ADDRSTRLEN);
    return ntohs(s6->sin6_port);
  }
  if (a->sa.ss_family == AF_INET) {
    const struct sockaddr_in *s4 = (const void *)&a->sa;
    inet_ntop(AF_INET, &s4->sin_addr, ip, INET6_ADDRSTRLEN);
    return ntohs(s4->sin_port);
  }
  return 0;
}

void xfer__addr_text(const struct xfer__addr *a, char *out, size_t len) {
  char ip[INET6_ADDRSTRLEN];
  unsigned port = addr_ip(a, ip);

  snprintf(out, len, "%s port %u", ip, port);
}

void xfer__he_init(struct xfer__he *cf, const struct xfer__addr *addrs,
                   unsigned naddrs, const struct xfer__addr *local) {
  unsigned v6 = 0, v4 = 0, n = 0;
  const struct xfer__addr *six[XFER__HE_MAX_ADDRS], *four[XFER__HE_MAX_ADDRS];

  memset(cf, 0, sizeof(*cf));
  cf->last_errno = ENOENT;
  for (unsigned i = 0; i < naddrs && i < XFER__HE_MAX_ADDRS; i++) {
    /* A source bound to the other family cannot reach it: not tried (the
     * reason given when no address is left to try). */
    if (local && addrs[i].sa.ss_family != local->sa.ss_family) {
      if (cf->last_errno == ENOENT) {
        cf->last_errno = EAFNOSUPPORT;
        xfer__addr_text(&addrs[i], cf->last_addr, sizeof(cf->last_addr));
      }
      continue;
    }
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
  if (local) {
    cf->local_addr = *local;
    cf->local = &cf->local_addr;
  }
  cf->next_attempt_at = 0;
}

static void he_close(struct xfer__he *cf, struct xfer__mev *ev);

static void record_failure(struct xfer__he *cf, unsigned addr, int err) {
  cf->last_errno = err;
  cf->bind_failed = false;
  xfer__addr_text(&cf->addrs[addr], cf->last_addr, sizeof(cf->last_addr));
}

/* The source address cannot be bound (not one of this host's, say): no
 * attempt of its family can be made, and only its family is tried, so no
 * further one starts. The connect ends once the attempts in flight do
 * (bound before: one may still connect), with this reason unless one of
 * them fails after it (then that failure is the last). */
static void record_bind_failure(struct xfer__he *cf, int err) {
  char ip[INET6_ADDRSTRLEN];

  addr_ip(cf->local, ip);
  cf->last_errno = err;
  cf->bind_failed = true;
  snprintf(cf->last_addr, sizeof(cf->last_addr), "%s", ip);
  cf->next = cf->naddrs;
}

/* Closes fd, after telling the event tracking that tracks it (ev; NULL:
 * none does): socket_done comes before close(), because the kernel hands
 * the number out again at once (rule 1). */
static void close_socket(struct xfer__mev *ev, int fd) {
  XFER__ASSERT_NO_POOL_LOCK();
  if (ev)
    xfer__mev_socket_done(ev, fd);
  close(fd);
}

/* Drops attempt i (its socket closed through close_socket()). */
static void drop_attempt(struct xfer__he *cf, struct xfer__mev *ev,
                         unsigned i) {
  close_socket(ev, cf->fds[i]);
  cf->inflight--;
  cf->fds[i] = cf->fds[cf->inflight];
  cf->fd_addr[i] = cf->fd_addr[cf->inflight];
}

/* Starts the attempt on the next address. false when it failed at once
 * (the failure is recorded). */
static bool start_attempt(struct xfer__he *cf) {
  unsigned idx = cf->next++;
  const struct xfer__addr *a = &cf->addrs[idx];
  int one = 1, fd;

  XFER__ASSERT_NO_POOL_LOCK(); /* socket(), bind(), connect(), close() */
  fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
              IPPROTO_TCP);
  if (fd < 0) {
    record_failure(cf, idx, errno);
    return false;
  }
  /* Requests are written whole; do not let Nagle hold them back. */
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
#ifdef IP_BIND_ADDRESS_NO_PORT
  /* A bound source takes its port at connect(), per destination, not at
   * bind() from the whole ephemeral range: a load generator with a local
   * address is not held to one port range's worth of connections (curl
   * does the same). Linux 4.2 on; elsewhere, or refused, bind() as ever. */
  if (cf->local)
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
#endif
  if (cf->local && cf->local->sa.ss_family == a->sa.ss_family &&
      bind(fd, (const struct sockaddr *)&cf->local->sa, cf->local->len) != 0) {
    record_bind_failure(cf, errno);
    close(fd); /* never reported to the multi: no socket_done needed */
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
static int check_attempts(struct xfer__he *cf, struct xfer__mev *ev) {
  struct pollfd pfd[XFER__HE_MAX_INFLIGHT];
  int err;
  socklen_t len;

  for (unsigned i = 0; i < cf->inflight; i++) {
    pfd[i].fd = cf->fds[i];
    pfd[i].events = POLLOUT;
    pfd[i].revents = 0;
  }
  XFER__ASSERT_NO_POOL_LOCK();
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
    drop_attempt(cf, ev, i);
  }
  return -1;
}

/* With the most attempts in flight and the next address due, the oldest
 * (the lowest address index: they start in order) gives its place: every
 * address gets its turn within the connect timeout, SYNs dropped or not,
 * and the next attempt's time is never one that cannot start. */
static void retire_oldest(struct xfer__he *cf, struct xfer__mev *ev) {
  unsigned oldest = 0;

  for (unsigned i = 1; i < cf->inflight; i++)
    if (cf->fd_addr[i] < cf->fd_addr[oldest])
      oldest = i;
  record_failure(cf, cf->fd_addr[oldest], ETIMEDOUT);
  drop_attempt(cf, ev, oldest);
}

static int he_step(struct xfer__he *cf, struct xfer__mev *ev,
                         xfer__time now, int *fd) {
  int won;

  for (;;) {
    won = check_attempts(cf, ev);
    if (won >= 0) {
      *fd = cf->fds[won];
      cf->fds[won] = cf->fds[--cf->inflight];
      cf->fd_addr[won] = cf->fd_addr[cf->inflight];
      he_close(cf, ev); /* the losers */
      return 1;
    }
    /* Start the next attempt when it is due, or at once when nothing is
     * in flight any more (the previous ones failed). */
    if (cf->next < cf->naddrs &&
        (cf->inflight == 0 || now >= cf->next_attempt_at)) {
      if (cf->inflight == XFER__HE_MAX_INFLIGHT)
        retire_oldest(cf, ev);
      if (start_attempt(cf))
        cf->next_attempt_at = now + XFER__HE_DELAY;
      continue; /* a loopback connect may have completed at once */
    }
    if (cf->inflight == 0)
      return -1;
    return 0;
  }
}

static void he_pollset(const struct xfer__he *cf,
                             struct xfer__pollset *ps) {
  for (unsigned i = 0; i < cf->inflight; i++)
    xfer__pollset_add(ps, cf->fds[i], XFER_POLL_OUT);
}

static xfer__time he_next_at(const struct xfer__he *cf) {
  return cf->next < cf->naddrs && cf->inflight ? cf->next_attempt_at
                                               : XFER__TIME_NEVER;
}

static void he_close(struct xfer__he *cf, struct xfer__mev *ev) {
  while (cf->inflight)
    drop_attempt(cf, ev, cf->inflight - 1);
}

/* --- the filter ----------------------------------------------------------- */

struct cf_socket {
  struct xfer__cf base;
  int fd;               /* -1 while connecting */
  struct xfer__he *he;  /* while connecting */
  bool sent_fin;        /* shutdown(SHUT_WR) done */
};

static struct cf_socket *sock_of(const struct xfer__cf *cf) {
  return XFER__CONTAINER_OF(cf, struct cf_socket, base);
}

static enum xfer__cf_progress sock_connect(struct xfer__cf *cf,
                                           struct xfer__mev *ev, xfer__time now,
                                           xfer__time *next_at, char *why,
                                           size_t why_len) {
  struct cf_socket *s = sock_of(cf);
  xfer__time at;
  int fd = -1, rc;

  if (s->fd >= 0)
    return XFER__CF_DONE;
  rc = he_step(s->he, ev, now, &fd);
  if (rc == 0) {
    at = he_next_at(s->he);
    if (at < *next_at)
      *next_at = at;
    return XFER__CF_AGAIN;
  }
  if (rc < 0) {
    snprintf(why, why_len, "%s %s: %s",
             s->he->bind_failed ? "could not bind to the local address"
                                : "failed to connect to",
             s->he->last_addr, strerror(s->he->last_errno));
    return XFER__CF_FAILED;
  }
  s->fd = fd;
  xfer__free(s->he);
  s->he = NULL;
  return XFER__CF_DONE;
}

static void sock_pollset(struct xfer__cf *cf, struct xfer__pollset *ps,
                         unsigned want) {
  struct cf_socket *s = sock_of(cf);

  if (s->he)
    he_pollset(s->he, ps);
  else if (want)
    xfer__pollset_add(ps, s->fd, want);
}

static ssize_t sock_send(struct xfer__cf *cf, const struct iovec *iov,
                         int iovcnt, int *err) {
  ssize_t n;

  /* One call for head and body, like writev, but without SIGPIPE when the
   * peer is gone. A lone buffer (a request without a body, the common
   * case) goes by send(): the kernel then copies no msghdr and imports no
   * iovec array. */
  XFER__ASSERT_NO_POOL_LOCK();
  do
    n = iovcnt == 1
            ? send(sock_of(cf)->fd, iov[0].iov_base, iov[0].iov_len,
                   MSG_NOSIGNAL)
            : sendmsg(sock_of(cf)->fd,
                      &(struct msghdr){.msg_iov = (struct iovec *)iov,
                                       .msg_iovlen = (size_t)iovcnt},
                      MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    *err = errno == EWOULDBLOCK ? EAGAIN : errno;
  return n;
}

static ssize_t sock_recv(struct xfer__cf *cf, char *buf, size_t len,
                         int *err) {
  ssize_t n;

  XFER__ASSERT_NO_POOL_LOCK();
  do
    n = recv(sock_of(cf)->fd, buf, len, 0);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    *err = errno == EWOULDBLOCK ? EAGAIN : errno;
  return n;
}

/* Our FIN tells the peer we are done; its EOF tells us it is. What it
 * still sends is read and dropped, a few reads a step. */
static enum xfer__cf_progress sock_shutdown(struct xfer__cf *cf) {
  struct cf_socket *s = sock_of(cf);
  char sink[4096];

  if (s->fd < 0)
    return XFER__CF_DONE;
  XFER__ASSERT_NO_POOL_LOCK(); /* shutdown(), recv() */
  if (!s->sent_fin) {
    shutdown(s->fd, SHUT_WR);
    s->sent_fin = true;
  }
  for (int i = 0; i < 16; i++) {
    ssize_t n = recv(s->fd, sink, sizeof(sink), MSG_DONTWAIT);
    if (n > 0)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
      return XFER__CF_AGAIN;
    return XFER__CF_DONE; /* EOF, or an error: nothing more will come */
  }
  return XFER__CF_AGAIN; /* a chatty peer: the rest at the next event */
}

/* A cheap check of an idle socket: the peer closed it or sent bytes
 * nobody asked for (a non-blocking MSG_PEEK). */
static bool sock_alive(struct xfer__cf *cf) {
  char byte;
  ssize_t n;

  XFER__ASSERT_NO_POOL_LOCK();
  n = recv(sock_of(cf)->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

static void sock_close(struct xfer__cf *cf, struct xfer__mev *ev) {
  struct cf_socket *s = sock_of(cf);

  if (s->he) {
    he_close(s->he, ev);
    xfer__free(s->he);
  }
  if (s->fd >= 0)
    close_socket(ev, s->fd);
  xfer__free(s);
}

static const struct xfer__cf_type socket_type = {
    .name = "socket",
    .connect = sock_connect,
    .pollset = sock_pollset,
    .send = sock_send,
    .recv = sock_recv,
    .shutdown = sock_shutdown,
    .alive = sock_alive,
    .close = sock_close,
    .waits_as_asked = true,
};

static struct cf_socket *sock_new(void) {
  struct cf_socket *s = xfer__calloc(1, sizeof(*s));

  if (s) {
    s->base.type = &socket_type;
    s->fd = -1;
  }
  return s;
}

struct xfer__cf *xfer__cf_socket_connect(const struct xfer__addr *addrs,
                                         unsigned naddrs,
                                         const struct xfer__addr *local) {
  struct cf_socket *s = sock_new();

  if (!s)
    return NULL;
  if (!(s->he = xfer__malloc(sizeof(*s->he)))) {
    xfer__free(s);
    return NULL;
  }
  xfer__he_init(s->he, addrs, naddrs, local);
  return &s->base;
}

struct xfer__cf *xfer__cf_socket_over(int fd) {
  struct cf_socket *s = sock_new();

  if (!s)
    return NULL;
  s->fd = fd;
  s->base.connected = true;
  return &s->base;
}

int xfer__cf_socket_fd(const struct xfer__cf *cf) {
  while (cf->below)
    cf = cf->below;
  return sock_of(cf)->fd;
}
