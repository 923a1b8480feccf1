/* Name resolution on c-ares (see resolve.h). */
#include "common.h"

#include <ares.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "mem.h"
#include "resolve.h"

#define CACHE_MAX 256

/* c-ares 1.18's ARES_GETSOCK_WRITABLE shifts a signed 1 into the sign bit
 * for the 16th socket (undefined behaviour); these shift unsigned. */
#define SOCK_READABLE(bits, i) (((unsigned)(bits) >> (i)) & 1u)
#define SOCK_WRITABLE(bits, i)                                                \
  (((unsigned)(bits) >> ((i) + ARES_GETSOCK_MAXNUM)) & 1u)

struct cache_entry {
  char host[256];
  int ip_version;
  xfer__time expires;
  struct xfer__addr addrs[XFER__HE_MAX_ADDRS]; /* port 0 */
  unsigned naddrs;
};

struct xfer__lookup {
  struct xfer__resolver *resolver;
  struct xfer__list node;    /* in resolver->lookups */
  struct xfer__list waiters; /* xfer__resolve_req.waiter_node */
  int ip_version;
  char host[];
};

struct xfer__resolver {
  struct xfer__dns *dns;
  ares_channel channel;
  uint64_t processed_seq; /* the multi call whose I/O was processed */
  struct xfer__list lookups;
  struct cache_entry *cache;
  unsigned cache_len;
  /* The channel's sockets, tracked for the resolver itself: a lookup is
   * watched until c-ares ends it, whoever still waits for it, and a DNS
   * packet wakes the resolver, not every transfer resolving. */
  struct xfer__mev_tracker ev;
  /* Why the lookups cancelled by tracking_failed() end (ARES_ECANCELLED);
   * XFER_OK otherwise. */
  xfer_code failure;
  bool refused; /* a socket refused when all was reported anew: the run
                   ends the lookups */
  char failure_detail[64];
};

static pthread_once_t ares_once = PTHREAD_ONCE_INIT;
static int ares_init_status;

static void ares_global_init(void) {
  ares_init_status = ares_library_init(ARES_LIB_INIT_ALL);
}

/* c-ares tells us about its sockets; (0, 0) means it is about to close
 * one, which is exactly when socket_done must run (rule 1). */
static void sock_state(void *data, ares_socket_t fd, int readable,
                       int writable) {
  struct xfer__resolver *r = data;
  if (!readable && !writable)
    xfer__mev_socket_done(&r->dns->loop->ev, fd);
}

/* A channel socket had events: the multi runs its resolver in this call
 * (xfer__resolve_run()); transfers are woken by their answers alone. */
static void channel_event(struct xfer__mev_tracker *t, int fd, int events) {
  struct xfer__resolver *r = t->owner;

  (void)fd;
  (void)events;
  r->dns->wake(r->dns, false);
}

/* The application refused a channel socket when everything was reported
 * anew (a socket callback set late): no tracking may change here, so the
 * lookups end at the resolver's run: in this call, or (an add or a
 * remove runs nothing) at once at the timer. */
static void channel_refused(struct xfer__mev_tracker *t, int fd) {
  struct xfer__resolver *r = t->owner;

  (void)fd;
  r->refused = true;
  r->dns->wake(r->dns, true);
}

static const struct xfer__mev_ops channel_ev_ops = {
    .event = channel_event,
    .refused = channel_refused,
};

static struct xfer__resolver *resolver_get(struct xfer__dns *dns,
                                           char *detail, size_t len) {
  struct xfer__resolver *r = dns->resolver;
  struct ares_options opts;
  int rc;

  if (r)
    return r;
  pthread_once(&ares_once, ares_global_init);
  if (ares_init_status != ARES_SUCCESS) {
    snprintf(detail, len, "c-ares: %s", ares_strerror(ares_init_status));
    return NULL;
  }
  r = xfer__calloc(1, sizeof(*r));
  if (!r) {
    snprintf(detail, len, "out of memory");
    return NULL;
  }
  r->dns = dns;
  xfer__list_init(&r->lookups);
  xfer__mev_tracker_init(&r->ev, XFER__MEV_CONN, &channel_ev_ops, r);
  memset(&opts, 0, sizeof(opts));
  opts.sock_state_cb = sock_state;
  opts.sock_state_cb_data = r;
  opts.timeout = dns->timeout_ms;
  opts.tries = dns->tries;
  /* Many lookups at once: room for their answers on the one UDP socket
   * (the kernel caps it at net.core.rmem_max). */
  opts.socket_receive_buffer_size = 1 << 20;
  rc = ares_init_options(&r->channel, &opts,
                         ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS |
                             ARES_OPT_TRIES | ARES_OPT_SOCK_RCVBUF);
  if (rc == ARES_SUCCESS && dns->servers)
    rc = ares_set_servers_ports_csv(r->channel, dns->servers);
  if (rc != ARES_SUCCESS) {
    snprintf(detail, len, "c-ares channel: %s", ares_strerror(rc));
    if (r->channel)
      ares_destroy(r->channel);
    xfer__free(r);
    return NULL;
  }
  dns->resolver = r;
  return r;
}

static void set_port(struct xfer__addr *a, uint16_t port) {
  if (a->sa.ss_family == AF_INET6)
    ((struct sockaddr_in6 *)(void *)&a->sa)->sin6_port = htons(port);
  else
    ((struct sockaddr_in *)(void *)&a->sa)->sin_port = htons(port);
}

static void answer(struct xfer__resolve_req *req, xfer_code result,
                   const struct xfer__addr *addrs, unsigned naddrs,
                   uint16_t port) {
  req->done = true;
  req->result = result;
  req->naddrs = naddrs;
  for (unsigned i = 0; i < naddrs; i++) {
    req->addrs[i] = addrs[i];
    set_port(&req->addrs[i], port);
  }
}

static struct cache_entry *cache_find(struct xfer__resolver *r,
                                      const char *host, int ip_version,
                                      xfer__time now) {
  for (unsigned i = 0; i < r->cache_len; i++) {
    struct cache_entry *e = &r->cache[i];
    if (e->ip_version == ip_version && now < e->expires &&
        strcasecmp(e->host, host) == 0)
      return e;
  }
  return NULL;
}

/* Stores an answer for its TTL, replacing an expired or the soonest
 * expiring entry when full. */
static void cache_store(struct xfer__resolver *r, const struct xfer__lookup *l,
                        const struct xfer__addr *addrs, unsigned naddrs,
                        xfer__time expires) {
  struct cache_entry *slot = NULL;

  if (strlen(l->host) >= sizeof(slot->host))
    return;
  if (!r->cache && !(r->cache = xfer__calloc(CACHE_MAX, sizeof(*r->cache))))
    return;
  if (r->cache_len < CACHE_MAX) {
    slot = &r->cache[r->cache_len++];
  } else {
    slot = &r->cache[0];
    for (unsigned i = 1; i < CACHE_MAX; i++)
      if (r->cache[i].expires < slot->expires)
        slot = &r->cache[i];
  }
  strcpy(slot->host, l->host);
  slot->ip_version = l->ip_version;
  slot->expires = expires;
  slot->naddrs = naddrs;
  memcpy(slot->addrs, addrs, naddrs * sizeof(*addrs));
}

/* How many addresses of each family a lookup keeps, of at most
 * XFER__HE_MAX_ADDRS: each family its half, and what one leaves unused
 * goes to the other. c-ares lists one family's answers before the
 * other's, so taking the first ones in its order could leave a family
 * out: with many A records, no IPv6 attempt at all (happy eyeballs tries
 * IPv6 first), and a source bound to IPv6 with nothing it can reach. */
static void family_shares(const struct ares_addrinfo_node *n, unsigned *keep4,
                          unsigned *keep6) {
  unsigned v4 = 0, v6 = 0, half = XFER__HE_MAX_ADDRS / 2, room6;

  for (; n; n = n->ai_next) {
    if (n->ai_family == AF_INET)
      v4++;
    else if (n->ai_family == AF_INET6)
      v6++;
  }
  room6 = XFER__HE_MAX_ADDRS - (v4 < half ? v4 : half);
  *keep6 = v6 < room6 ? v6 : room6;
  *keep4 = v4 < XFER__HE_MAX_ADDRS - *keep6 ? v4 : XFER__HE_MAX_ADDRS - *keep6;
}

static void lookup_done(void *arg, int status, int timeouts,
                        struct ares_addrinfo *res) {
  struct xfer__lookup *l = arg;
  struct xfer__resolver *r = l->resolver;
  struct xfer__addr addrs[XFER__HE_MAX_ADDRS];
  unsigned naddrs = 0;
  int ttl = INT32_MAX;
  xfer_code result = XFER_OK;
  char detail[128] = "";
  struct xfer__list *pos, *tmp;

  if (status == ARES_SUCCESS && res) {
    unsigned keep4, keep6;

    family_shares(res->nodes, &keep4, &keep6);
    for (struct ares_addrinfo_node *n = res->nodes;
         n && naddrs < XFER__HE_MAX_ADDRS; n = n->ai_next) {
      if (n->ai_family == AF_INET && keep4 > 0)
        keep4--;
      else if (n->ai_family == AF_INET6 && keep6 > 0)
        keep6--;
      else
        continue;
      memset(&addrs[naddrs], 0, sizeof(addrs[naddrs]));
      memcpy(&addrs[naddrs].sa, n->ai_addr, (size_t)n->ai_addrlen);
      addrs[naddrs].len = (socklen_t)n->ai_addrlen;
      naddrs++;
      if (n->ai_ttl < ttl)
        ttl = n->ai_ttl;
    }
  }
  if (naddrs == 0 && status == ARES_ECANCELLED && r->failure) {
    result = r->failure;
    snprintf(detail, sizeof(detail), "could not resolve '%s': %s", l->host,
             r->failure_detail);
  } else if (naddrs == 0) {
    result = status == ARES_ETIMEOUT ? XFER_E_RESOLVE_TIMEOUT : XFER_E_RESOLVE;
    snprintf(detail, sizeof(detail), "could not resolve '%s': %s", l->host,
             status == ARES_SUCCESS ? "no address of the wanted family"
                                    : ares_strerror(status));
  } else if (ttl > 0 && status != ARES_EDESTRUCTION) {
    xfer__time now = r->dns->loop->last_now;
    cache_store(r, l, addrs, naddrs, now + (xfer__time)ttl * 1000000000);
  }
  if (res)
    ares_freeaddrinfo(res);

  XFER__LIST_FOREACH_SAFE(pos, tmp, &l->waiters) {
    struct xfer__resolve_req *req =
        XFER__CONTAINER_OF(pos, struct xfer__resolve_req, waiter_node);
    uint16_t port = req->port;
    xfer__list_remove(&req->waiter_node);
    req->lookup = NULL;
    answer(req, result, addrs, naddrs, port);
    snprintf(req->detail, sizeof(req->detail), "%s", detail);
    if (status != ARES_EDESTRUCTION)
      r->dns->answered(req->x);
  }
  xfer__list_remove(&l->node);
  xfer__free(l);
}

xfer_code xfer__resolve_start(struct xfer__dns *dns,
                              struct xfer__resolve_req *req,
                              xfer *x, const char *host, uint16_t port,
                              int ip_version, xfer__time now) {
  struct xfer__resolver *r;
  struct cache_entry *hit;
  struct xfer__lookup *l = NULL;
  struct xfer__list *pos;
  struct ares_addrinfo_hints hints;
  size_t host_len = strlen(host);

  memset(req, 0, sizeof(*req));
  xfer__list_init(&req->waiter_node);
  req->x = x;
  if (xfer__addr_parse(&req->addrs[0], host, port, ip_version)) {
    req->naddrs = 1;
    req->done = true;
    return XFER_OK;
  }
  if (ip_version && xfer__addr_parse(&req->addrs[0], host, port, 0)) {
    /* A numeric host of the other family: no lookup could change it. */
    snprintf(req->detail, sizeof(req->detail),
             "the host %s is an IPv%d address, and the transfer is limited "
             "to IPv%d",
             host, ip_version == 4 ? 6 : 4, ip_version);
    return XFER_E_RESOLVE;
  }
  /* From here on the multi has asked its resolver: its DNS settings are
   * fixed (xfer_multi_set_dns_servers()). */
  dns->used = true;
  r = resolver_get(dns, req->detail, sizeof(req->detail));
  if (!r)
    return XFER_E_RESOLVE;
  if ((hit = cache_find(r, host, ip_version, now))) {
    answer(req, XFER_OK, hit->addrs, hit->naddrs, port);
    return XFER_OK;
  }
  for (pos = r->lookups.next; pos != &r->lookups; pos = pos->next) {
    struct xfer__lookup *p = XFER__CONTAINER_OF(pos, struct xfer__lookup, node);
    if (p->ip_version == ip_version && strcasecmp(p->host, host) == 0) {
      l = p; /* the same question is on its way: share it */
      break;
    }
  }
  req->port = port;
  if (l) {
    req->lookup = l;
    xfer__list_insert_tail(&l->waiters, &req->waiter_node);
    return XFER_OK;
  }
  l = xfer__malloc(sizeof(*l) + host_len + 1);
  if (!l) {
    snprintf(req->detail, sizeof(req->detail), "out of memory");
    return XFER_E_OUT_OF_MEMORY;
  }
  l->resolver = r;
  l->ip_version = ip_version;
  memcpy(l->host, host, host_len + 1);
  xfer__list_init(&l->waiters);
  xfer__list_insert_tail(&r->lookups, &l->node);
  req->lookup = l;
  xfer__list_insert_tail(&l->waiters, &req->waiter_node);
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = ip_version == 4 ? AF_INET
                    : ip_version == 6 ? AF_INET6
                                      : AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  /* Happy eyeballs orders the addresses; c-ares' RFC 6724 sort would
   * open a probe socket per address on every lookup. */
  hints.ai_flags = ARES_AI_NOSORT;
  /* May answer at once (hosts file, or an error): lookup_done runs here. */
  XFER__ASSERT_NO_POOL_LOCK(); /* c-ares may send the query at once */
  ares_getaddrinfo(r->channel, l->host, NULL, &hints, lookup_done, l);
  /* A query went out, perhaps on a socket just opened: the resolver
   * tracks the channel's sockets and its timeout in this call. */
  dns->wake(dns, false);
  return XFER_OK;
}

void xfer__resolve_cancel(struct xfer__resolve_req *req) {
  if (req->lookup) {
    xfer__list_remove(&req->waiter_node);
    req->lookup = NULL;
  }
}

/* The channel's sockets, and what c-ares waits for on each. */
_Static_assert(ARES_GETSOCK_MAXNUM <= XFER__POLLSET_MAX,
               "a pollset holds every socket c-ares hands out");
static void channel_pollset(struct xfer__resolver *r, struct xfer__pollset *ps) {
  ares_socket_t socks[ARES_GETSOCK_MAXNUM];
  int bits = ares_getsock(r->channel, socks, ARES_GETSOCK_MAXNUM);

  xfer__pollset_reset(ps);
  for (int i = 0; i < ARES_GETSOCK_MAXNUM; i++) {
    unsigned want = (SOCK_READABLE(bits, i) ? XFER_POLL_IN : 0) |
                    (SOCK_WRITABLE(bits, i) ? XFER_POLL_OUT : 0);
    if (want)
      xfer__pollset_add(ps, socks[i], want);
  }
}

/* Processes the channel's ready sockets and its timeouts, once per multi
 * call: finished lookups mark their transfers dirty. */
static void process(struct xfer__resolver *r) {
  struct xfer__pollset ps;
  struct pollfd pfd[XFER__POLLSET_MAX];

  if (r->processed_seq == r->dns->loop->call_seq)
    return;
  r->processed_seq = r->dns->loop->call_seq;
  channel_pollset(r, &ps);
  for (unsigned i = 0; i < ps.count; i++) {
    pfd[i].fd = ps.fd[i];
    pfd[i].events = (short)((ps.want[i] & XFER_POLL_IN ? POLLIN : 0) |
                            (ps.want[i] & XFER_POLL_OUT ? POLLOUT : 0));
    pfd[i].revents = 0;
  }
  /* Which of the channel's sockets are ready: one poll() with no wait.
   * poll() and c-ares' reads, writes and clock are system calls. */
  XFER__ASSERT_NO_POOL_LOCK();
  if (ps.count > 0 && poll(pfd, (nfds_t)ps.count, 0) > 0) {
    for (unsigned i = 0; i < ps.count; i++) {
      short re = pfd[i].revents;
      if (!re)
        continue;
      ares_process_fd(r->channel,
                      re & (POLLIN | POLLERR | POLLHUP) ? pfd[i].fd
                                                        : ARES_SOCKET_BAD,
                      re & POLLOUT ? pfd[i].fd : ARES_SOCKET_BAD);
    }
  }
  ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD); /* timeouts */
}

/* The channel's sockets cannot be watched (the socket callback refused
 * one, or memory ran out): no answer could come, so every lookup ends now
 * with that error (c-ares then closes what it no longer needs). */
static void tracking_failed(struct xfer__resolver *r, xfer_code rc) {
  r->failure = rc;
  snprintf(r->failure_detail, sizeof(r->failure_detail), "%s",
           rc == XFER_E_SOCKET_CALLBACK
               ? "the socket callback refused the resolver's socket"
               : "out of memory while tracking the resolver's sockets");
  ares_cancel(r->channel);
  r->failure = XFER_OK;
}

static void track_channel(struct xfer__resolver *r) {
  struct xfer__pollset ps;
  xfer_code rc;

  channel_pollset(r, &ps);
  rc = xfer__mev_assess(&r->dns->loop->ev, &r->ev, &ps);
  if (rc == XFER_OK)
    return;
  tracking_failed(r, rc);
  channel_pollset(r, &ps); /* what is left after the cancel, best effort */
  (void)xfer__mev_assess(&r->dns->loop->ev, &r->ev, &ps);
}

xfer__time xfer__resolve_run(struct xfer__dns *dns, xfer__time now) {
  struct xfer__resolver *r = dns->resolver;
  struct timeval tv, *next;

  if (!r)
    return XFER__TIME_NEVER;
  process(r);
  if (r->refused) {
    r->refused = false;
    tracking_failed(r, XFER_E_SOCKET_CALLBACK);
  }
  track_channel(r);
  if (xfer__list_empty(&r->lookups))
    return XFER__TIME_NEVER;
  next = ares_timeout(r->channel, NULL, &tv);
  if (!next)
    return XFER__TIME_NEVER;
  /* c-ares cuts the time left to whole milliseconds and measures it on a
   * clock read after `now`, while it times a query out to the
   * microsecond: without the extra millisecond the deadline lands before
   * its timeout, and the multi spins with 0 ms timers until it passes. */
  return now + (xfer__time)next->tv_sec * 1000000000 +
         (xfer__time)next->tv_usec * 1000 + XFER__NS_PER_MS;
}

bool xfer__resolve_busy(const struct xfer__dns *dns) {
  return dns->resolver && !xfer__list_empty(&dns->resolver->lookups);
}

void xfer__dns_init(struct xfer__dns *dns, struct xfer__loop *loop,
                    void (*answered)(xfer *x),
                    void (*wake)(struct xfer__dns *dns, bool due_now)) {
  memset(dns, 0, sizeof(*dns));
  dns->loop = loop;
  dns->answered = answered;
  dns->wake = wake;
  dns->timeout_ms = 2000;
  dns->tries = 3;
}

void xfer__dns_cleanup(struct xfer__dns *dns) {
  struct xfer__resolver *r = dns->resolver;

  if (r) {
    ares_destroy(r->channel); /* ends every lookup with ARES_EDESTRUCTION,
                                 and its sockets through socket_done */
    xfer__mev_tracker_done(&dns->loop->ev, &r->ev);
    xfer__free(r->cache);
    xfer__free(r);
    dns->resolver = NULL;
  }
  xfer__free(dns->servers);
  dns->servers = NULL;
}

/* --- the server list ----------------------------------------------------------- */

static bool port_valid(const char *p, size_t n) {
  unsigned long v = 0;

  if (n == 0 || n > 5)
    return false;
  for (size_t i = 0; i < n; i++) {
    if (p[i] < '0' || p[i] > '9')
      return false;
    v = v * 10 + (unsigned long)(p[i] - '0');
  }
  return v >= 1 && v <= 65535;
}

static bool ip_valid(int family, const char *p, size_t n) {
  char text[INET6_ADDRSTRLEN + 1];
  unsigned char addr[sizeof(struct in6_addr)];

  if (n == 0 || n >= sizeof(text))
    return false;
  memcpy(text, p, n);
  text[n] = '\0';
  return inet_pton(family, text, addr) == 1;
}

/* One entry: 1.2.3.4, 1.2.3.4:53, ::1, [::1], [::1]:53. */
static bool server_valid(const char *s, size_t n) {
  const char *colon = memchr(s, ':', n), *close;

  if (n && s[0] == '[') {
    close = memchr(s, ']', n);
    if (!close || !ip_valid(AF_INET6, s + 1, (size_t)(close - s - 1)))
      return false;
    n -= (size_t)(close + 1 - s);
    return n == 0 || (close[1] == ':' && port_valid(close + 2, n - 1));
  }
  if (colon && memchr(colon + 1, ':', n - (size_t)(colon + 1 - s)))
    return ip_valid(AF_INET6, s, n); /* bare IPv6: no port */
  if (colon)
    return ip_valid(AF_INET, s, (size_t)(colon - s)) &&
           port_valid(colon + 1, n - (size_t)(colon + 1 - s));
  return ip_valid(AF_INET, s, n);
}

bool xfer__dns_servers_valid(const char *csv) {
  const char *p = csv;

  if (!*csv)
    return false;
  for (;;) {
    const char *comma = strchr(p, ',');
    const char *end = comma ? comma : p + strlen(p);
    while (p < end && *p == ' ')
      p++;
    while (end > p && end[-1] == ' ')
      end--;
    if (!server_valid(p, (size_t)(end - p)))
      return false;
    if (!comma)
      return true;
    p = comma + 1;
  }
}
