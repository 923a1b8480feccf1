/*
 * Self-test of the test DNS responder (dnsserver.c), with c-ares as the
 * client the way the library will use it, and with hand-made packets for
 * what c-ares hides (header bits, drops, TCP framing, fuzzing).
 *
 * Exits 0 when every check passes. DS_SELFTEST_LOG=1 sends the server's
 * log to stderr; DS_FUZZ_SEED=n changes the fuzzer's seed.
 */
#define _GNU_SOURCE
#include "dnsserver.h"
#include "tap.h"

#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_MS 1000000LL
#define TTL 300
#define FUZZ_PACKETS 10000
#define CONCURRENT 200
#define CONC_NAMES 50
#define MANY_RECS 40
#define BIG_RECS 1024
#define MSG_MAX 65535
#define PROBE_ID 0xbeef

/* --- checks ---------------------------------------------------------------- */

/* The checks' tally: a test goes on after a failed check where it can, so
 * one run shows every failure. */
static int failures;

static bool check(bool ok, const char *what, const char *file, int line) {
  if (!ok) {
    fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what);
    failures++;
  }
  return ok;
}

#define CHECK(cond) check((cond), #cond, __FILE__, __LINE__)

static int64_t now_ns(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_ms(int ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * NS_PER_MS};

  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static void wr16(uint8_t *p, unsigned v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

/* --- c-ares as the client -------------------------------------------------- */

struct resolver {
  ares_channel ch;
  int outstanding;
};

struct lookup {
  struct resolver *r;
  bool done;
  int status;
  int timeouts;
  struct ares_addrinfo *res;
  int64_t started_ns;
  int64_t finished_ns;
};

/* A channel that asks our server and nothing else: no hosts file, no
 * search domains, the port set for UDP and TCP alike. The large receive
 * buffer is for the concurrent test: c-ares reads nothing while 400
 * queries go out, and the default buffer drops answers (best effort; the
 * kernel caps it at net.core.rmem_max, and retries cover the rest). */
static bool resolver_init(struct resolver *r, int port, int timeout_ms,
                          int tries, int flags) {
  char lookups[] = "b";
  struct ares_options o = {.flags = flags, .timeout = timeout_ms,
                           .tries = tries, .ndots = 1, .lookups = lookups,
                           .ednspsz = 1232,
                           .socket_receive_buffer_size = 1 << 20};
  int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
             ARES_OPT_NDOTS | ARES_OPT_DOMAINS | ARES_OPT_LOOKUPS |
             ARES_OPT_EDNSPSZ | ARES_OPT_SOCK_RCVBUF;
  struct ares_addr_port_node server = {.family = AF_INET,
                                       .udp_port = port, .tcp_port = port};

  r->outstanding = 0;
  if (!CHECK(ares_init_options(&r->ch, &o, mask) == ARES_SUCCESS))
    return false;
  inet_pton(AF_INET, "127.0.0.1", &server.addr.addr4);
  if (!CHECK(ares_set_servers_ports(r->ch, &server) == ARES_SUCCESS)) {
    ares_destroy(r->ch);
    return false;
  }
  return true;
}

static void lookup_done(void *arg, int status, int timeouts,
                        struct ares_addrinfo *res) {
  struct lookup *lk = arg;

  lk->done = true;
  lk->status = status;
  lk->timeouts = timeouts;
  lk->res = res;
  lk->finished_ns = now_ns();
  lk->r->outstanding--;
}

static void lookup_start(struct resolver *r, struct lookup *lk,
                         const char *name, int family) {
  /* NOSORT: sorting connect()s UDP sockets to the answers' addresses. */
  struct ares_addrinfo_hints hints = {.ai_flags = ARES_AI_NOSORT,
                                      .ai_family = family};

  *lk = (struct lookup){.r = r, .started_ns = now_ns()};
  r->outstanding++;
  ares_getaddrinfo(r->ch, name, NULL, &hints, lookup_done, lk);
}

static int ms_left(int64_t deadline) {
  int64_t left = (deadline - now_ns() + NS_PER_MS - 1) / NS_PER_MS;

  return left < 0 ? 0 : (int)left;
}

/* One round: wait for c-ares's sockets or its next timeout, then let it
 * process. */
static void resolver_step(struct resolver *r, int max_ms) {
  ares_socket_t socks[ARES_GETSOCK_MAXNUM];
  struct pollfd pfd[ARES_GETSOCK_MAXNUM];
  struct timeval maxtv = {max_ms / 1000, (max_ms % 1000) * 1000}, tv, *tvp;
  int bits = ares_getsock(r->ch, socks, ARES_GETSOCK_MAXNUM), timeout, rc;
  nfds_t n = 0;

  /* Not ARES_GETSOCK_WRITABLE(): it shifts a signed 1 into the sign bit
   * for the last socket, which UBSan rightly reports. */
  for (unsigned i = 0; i < ARES_GETSOCK_MAXNUM; i++) {
    short ev = ((unsigned)bits & 1u << i ? POLLIN : 0) |
               ((unsigned)bits & 1u << (i + ARES_GETSOCK_MAXNUM) ? POLLOUT : 0);

    if (ev)
      pfd[n++] = (struct pollfd){.fd = socks[i], .events = ev};
  }
  tvp = ares_timeout(r->ch, &maxtv, &tv);
  timeout = (int)(tvp->tv_sec * 1000 + (tvp->tv_usec + 999) / 1000);
  rc = poll(pfd, n, timeout);
  if (rc <= 0) {
    ares_process_fd(r->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    return;
  }
  for (nfds_t i = 0; i < n; i++) {
    short rev = pfd[i].revents;

    if (rev)
      ares_process_fd(r->ch,
                      rev & (POLLIN | POLLERR | POLLHUP) ? pfd[i].fd
                                                         : ARES_SOCKET_BAD,
                      rev & POLLOUT ? pfd[i].fd : ARES_SOCKET_BAD);
  }
}

/* Drives the channel until every lookup is done; false after max_ms. */
static bool resolver_wait(struct resolver *r, int max_ms) {
  int64_t deadline = now_ns() + max_ms * NS_PER_MS;

  while (r->outstanding > 0) {
    int left = ms_left(deadline);

    if (left == 0)
      return false;
    resolver_step(r, left);
  }
  return true;
}

static void resolver_destroy(struct resolver *r) {
  /* Lookups still running get their callbacks (ARES_EDESTRUCTION) here. */
  ares_destroy(r->ch);
}

static void lookup_free(struct lookup *lk) {
  if (lk->res)
    ares_freeaddrinfo(lk->res);
  lk->res = NULL;
}

static long lookup_ms(const struct lookup *lk) {
  return (long)((lk->finished_ns - lk->started_ns) / NS_PER_MS);
}

static size_t node_count(const struct ares_addrinfo *res) {
  size_t n = 0;

  for (const struct ares_addrinfo_node *nd = res ? res->nodes : NULL; nd;
       nd = nd->ai_next)
    n++;
  return n;
}

static void node_text(const struct ares_addrinfo_node *nd, char *buf,
                      size_t cap) {
  const void *addr =
      nd->ai_family == AF_INET
          ? (const void *)&((const struct sockaddr_in *)nd->ai_addr)->sin_addr
          : (const void *)&((const struct sockaddr_in6 *)nd->ai_addr)
                ->sin6_addr;

  if (!inet_ntop(nd->ai_family, addr, buf, (socklen_t)cap))
    snprintf(buf, cap, "?");
}

static bool node_has(const struct ares_addrinfo *res, const char *want) {
  char text[INET6_ADDRSTRLEN];

  for (const struct ares_addrinfo_node *nd = res->nodes; nd; nd = nd->ai_next) {
    node_text(nd, text, sizeof text);
    if (strcmp(text, want) == 0)
      return true;
  }
  return false;
}

/* Whether the lookup succeeded with exactly these addresses, any order. */
static bool got_addrs(const struct lookup *lk, const char *const *want,
                      size_t nwant) {
  if (!lk->done || lk->status != ARES_SUCCESS || !lk->res)
    return false;
  if (node_count(lk->res) != nwant)
    return false;
  for (size_t i = 0; i < nwant; i++)
    if (!node_has(lk->res, want[i]))
      return false;
  return true;
}

static bool all_ttls(const struct ares_addrinfo *res, int ttl) {
  for (const struct ares_addrinfo_node *nd = res->nodes; nd; nd = nd->ai_next)
    if (nd->ai_ttl != ttl)
      return false;
  return true;
}

/* One lookup from start to end on a channel of its own. */
static void resolve(int port, int flags, int timeout_ms, const char *name,
                    int family, struct lookup *lk) {
  struct resolver r;

  *lk = (struct lookup){0};
  if (!resolver_init(&r, port, timeout_ms, 2, flags))
    return;
  lookup_start(&r, lk, name, family);
  CHECK(resolver_wait(&r, 5000));
  resolver_destroy(&r);
}

/* --- hand-made packets ---------------------------------------------------- */

/* A query for name as given (case kept); returns its length. */
static size_t make_query(uint8_t *buf, unsigned id, unsigned flags,
                         const char *name, unsigned qtype, unsigned qclass) {
  size_t off = 12;

  memset(buf, 0, 12);
  wr16(buf, id);
  wr16(buf + 2, flags);
  wr16(buf + 4, 1);
  while (*name) {
    size_t label = strcspn(name, ".");

    buf[off++] = (uint8_t)label;
    memcpy(buf + off, name, label);
    off += label;
    name += label;
    if (*name == '.')
      name++;
  }
  buf[off++] = 0;
  wr16(buf + off, qtype);
  wr16(buf + off + 2, qclass);
  return off + 4;
}

static int udp_client(int port) {
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

  if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    close(fd);
    fd = -1;
  }
  CHECK(fd >= 0);
  return fd;
}

static int tcp_client(int port) {
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  struct timeval tv = {2, 0};
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    close(fd);
    fd = -1;
  }
  if (CHECK(fd >= 0))
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

static ssize_t recv_within(int fd, uint8_t *buf, size_t cap, int ms) {
  struct pollfd pfd = {.fd = fd, .events = POLLIN};

  if (poll(&pfd, 1, ms) <= 0)
    return -1;
  return recv(fd, buf, cap, MSG_DONTWAIT);
}

/* Sends q and returns the first reply carrying its ID (-1: none in 1 s,
 * after one resend in case the datagram was lost). */
static ssize_t udp_ask(int fd, const uint8_t *q, size_t qlen, uint8_t *reply,
                       size_t cap) {
  for (int attempt = 0; attempt < 2; attempt++) {
    int64_t deadline = now_ns() + 500 * NS_PER_MS;

    if (send(fd, q, qlen, 0) < 0)
      return -1;
    while (ms_left(deadline) > 0) {
      ssize_t n = recv_within(fd, reply, cap, ms_left(deadline));

      if (n >= 12 && rd16(reply) == rd16(q))
        return n;
    }
  }
  return -1;
}

static bool send_all(int fd, const uint8_t *buf, size_t len) {
  while (len > 0) {
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return false;
    buf += n;
    len -= (size_t)n;
  }
  return true;
}

static bool recv_all(int fd, uint8_t *buf, size_t len) {
  while (len > 0) {
    ssize_t n = recv(fd, buf, len, 0);

    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return false;
    buf += n;
    len -= (size_t)n;
  }
  return true;
}

static bool tcp_send_msg(int fd, const uint8_t *msg, size_t len) {
  uint8_t prefix[2];

  wr16(prefix, (unsigned)len);
  return send_all(fd, prefix, 2) && send_all(fd, msg, len);
}

/* One length-prefixed reply into buf (MSG_MAX bytes); its length or -1. */
static ssize_t tcp_recv_msg(int fd, uint8_t *buf) {
  uint8_t prefix[2];
  size_t len;

  if (!recv_all(fd, prefix, 2))
    return -1;
  len = rd16(prefix);
  return recv_all(fd, buf, len) ? (ssize_t)len : -1;
}

/* The answer's header fields the checks look at. */
struct hdr {
  unsigned id, flags, rcode, qd, an, ns, ar;
};

static struct hdr hdr_of(const uint8_t *p) {
  return (struct hdr){.id = rd16(p), .flags = rd16(p + 2),
                      .rcode = rd16(p + 2) & 0xfu, .qd = rd16(p + 4),
                      .an = rd16(p + 6), .ns = rd16(p + 8),
                      .ar = rd16(p + 10)};
}

/* --- the tests --------------------------------------------------------------- */

static void add_fixture_records(struct ds_server *s) {
  CHECK(ds_add_a(s, "both.test", "127.0.0.2", TTL) == 0);
  CHECK(ds_add_aaaa(s, "both.test", "2001:db8::2", TTL) == 0);
  CHECK(ds_add_a(s, "v4only.test", "127.0.0.3", TTL) == 0);
  CHECK(ds_add_aaaa(s, "v6only.test", "2001:db8::3", TTL) == 0);
  CHECK(ds_add_a(s, "MiXeD.TeSt.", "127.0.0.5", TTL) == 0);
  CHECK(ds_add_a(s, "count.test", "127.0.0.6", TTL) == 0);
  CHECK(ds_add_silent(s, "silent.test") == 0);
  CHECK(ds_add_a(s, "delayed.test", "127.0.0.4", TTL) == 0);
  CHECK(ds_set_delay(s, "delayed.test", 100) == 0);
  CHECK(ds_set_delay(s, "slow-nx.test", 100) == 0);
  for (int i = 1; i <= MANY_RECS; i++) {
    char ip[32];

    snprintf(ip, sizeof ip, "127.0.2.%d", i);
    CHECK(ds_add_a(s, "many.test", ip, TTL) == 0);
  }
}

static void test_addresses(int port) {
  static const char *const both[] = {"127.0.0.2", "2001:db8::2"};
  static const char *const v4[] = {"127.0.0.3"};
  static const char *const mixed[] = {"127.0.0.5"};
  struct lookup lk;

  resolve(port, 0, 2000, "both.test", AF_UNSPEC, &lk);
  CHECK(got_addrs(&lk, both, 2));
  CHECK(lk.res && all_ttls(lk.res, TTL));
  lookup_free(&lk);
  resolve(port, 0, 2000, "both.test", AF_INET, &lk);
  CHECK(got_addrs(&lk, both, 1));
  lookup_free(&lk);
  resolve(port, 0, 2000, "both.test", AF_INET6, &lk);
  CHECK(got_addrs(&lk, both + 1, 1));
  lookup_free(&lk);
  resolve(port, 0, 2000, "v4only.test", AF_UNSPEC, &lk);
  CHECK(got_addrs(&lk, v4, 1));
  lookup_free(&lk);
  /* NODATA, not NXDOMAIN: c-ares tells them apart. */
  resolve(port, 0, 2000, "v4only.test", AF_INET6, &lk);
  CHECK(lk.done && lk.status == ARES_ENODATA);
  lookup_free(&lk);
  resolve(port, 0, 2000, "mixed.TEST", AF_INET, &lk);
  CHECK(got_addrs(&lk, mixed, 1));
  lookup_free(&lk);
}

static void test_not_found(int port) {
  struct lookup lk;

  resolve(port, 0, 2000, "unknown.test", AF_UNSPEC, &lk);
  CHECK(lk.done && lk.status == ARES_ENOTFOUND);
  lookup_free(&lk);
  resolve(port, 0, 2000, "unknown.test", AF_INET, &lk);
  CHECK(lk.done && lk.status == ARES_ENOTFOUND);
  lookup_free(&lk);
}

static void test_counts(struct ds_server *s, int port) {
  long total = ds_queries_total(s);
  struct lookup lk;

  CHECK(ds_queries(s, "count.test") == 0);
  CHECK(ds_queries(s, "never-asked.test") == 0);
  resolve(port, 0, 2000, "count.test", AF_UNSPEC, &lk);   /* A and AAAA */
  CHECK(lk.status == ARES_SUCCESS);
  lookup_free(&lk);
  CHECK(ds_queries(s, "count.test") == 2);
  CHECK(ds_queries(s, "COUNT.Test.") == 2);
  CHECK(ds_queries_total(s) == total + 2);
  resolve(port, 0, 2000, "count.test", AF_INET6, &lk);
  lookup_free(&lk);
  CHECK(ds_queries(s, "count.test") == 3);
  resolve(port, 0, 2000, "nx-count.test", AF_INET, &lk);
  lookup_free(&lk);
  CHECK(ds_queries(s, "nx-count.test") == 1);
  CHECK(ds_queries_total(s) == total + 4);
}

static void test_silent(struct ds_server *s, int port) {
  struct resolver r;
  struct lookup lk = {0};

  if (!resolver_init(&r, port, 200, 1, 0))
    return;
  lookup_start(&r, &lk, "silent.test", AF_INET);
  CHECK(resolver_wait(&r, 3000));
  resolver_destroy(&r);
  CHECK(lk.done && lk.status == ARES_ETIMEOUT);
  CHECK(lookup_ms(&lk) >= 190);
  CHECK(ds_queries(s, "silent.test") == 1);
  lookup_free(&lk);
}

static void test_delay(int port) {
  static const char *const want[] = {"127.0.0.4"};
  struct lookup lk;

  resolve(port, 0, 2000, "delayed.test", AF_INET, &lk);
  CHECK(got_addrs(&lk, want, 1));
  CHECK(lookup_ms(&lk) >= 100);
  CHECK(lookup_ms(&lk) < 1000);
  lookup_free(&lk);
  resolve(port, ARES_FLAG_USEVC, 2000, "delayed.test", AF_INET, &lk);
  CHECK(got_addrs(&lk, want, 1));
  CHECK(lookup_ms(&lk) >= 100);
  lookup_free(&lk);
  resolve(port, 0, 2000, "slow-nx.test", AF_INET, &lk);
  CHECK(lk.done && lk.status == ARES_ENOTFOUND);
  CHECK(lookup_ms(&lk) >= 100);
  lookup_free(&lk);
}

/* A UDP answer over 512 bytes comes back truncated; c-ares must then get
 * the whole of it over TCP, from the same port. */
static void test_tcp_fallback(struct ds_server *s, int port) {
  static const char *const both[] = {"127.0.0.2", "2001:db8::2"};
  struct lookup lk;

  resolve(port, 0, 2000, "many.test", AF_INET, &lk);
  CHECK(lk.status == ARES_SUCCESS && node_count(lk.res) == MANY_RECS);
  CHECK(lk.res && node_has(lk.res, "127.0.2.1") &&
        node_has(lk.res, "127.0.2.40"));
  lookup_free(&lk);
  CHECK(ds_queries(s, "many.test") == 2);    /* UDP, then TCP */
  /* TCP only; A and AAAA share one connection. */
  resolve(port, ARES_FLAG_USEVC, 2000, "both.test", AF_UNSPEC, &lk);
  CHECK(got_addrs(&lk, both, 2));
  lookup_free(&lk);
  /* EDNS queries carry an OPT record; answers without one still do. */
  resolve(port, ARES_FLAG_EDNS, 2000, "both.test", AF_UNSPEC, &lk);
  CHECK(got_addrs(&lk, both, 2));
  lookup_free(&lk);
  resolve(port, ARES_FLAG_EDNS, 2000, "many.test", AF_INET, &lk);
  CHECK(lk.status == ARES_SUCCESS && node_count(lk.res) == MANY_RECS);
  lookup_free(&lk);
}

static void add_concurrent_names(struct ds_server *s) {
  for (int i = 0; i < CONC_NAMES; i++) {
    char name[32], ip4[32], ip6[48];

    snprintf(name, sizeof name, "conc-%d.test", i);
    snprintf(ip4, sizeof ip4, "127.0.3.%d", i);
    snprintf(ip6, sizeof ip6, "2001:db8::3:%d", i);
    CHECK(ds_add_a(s, name, ip4, TTL) == 0);
    CHECK(ds_add_aaaa(s, name, ip6, TTL) == 0);
  }
}

/* Every fourth lookup asks the same name, the rest spread over 50. */
static bool concurrent_ok(const struct lookup *lk, int i) {
  char ip4[32], ip6[48];
  const char *want[2] = {ip4, ip6};

  if (i % 4 == 0) {
    snprintf(ip4, sizeof ip4, "127.0.0.2");
    snprintf(ip6, sizeof ip6, "2001:db8::2");
  } else {
    snprintf(ip4, sizeof ip4, "127.0.3.%d", i % CONC_NAMES);
    snprintf(ip6, sizeof ip6, "2001:db8::3:%d", i % CONC_NAMES);
  }
  return got_addrs(lk, want, 2);
}

static void test_concurrent(struct ds_server *s, int port) {
  struct lookup *lks = calloc(CONCURRENT, sizeof *lks);
  struct resolver r;
  int ok = 0, retries = 0;

  add_concurrent_names(s);
  if (!CHECK(lks != NULL) || !resolver_init(&r, port, 1000, 3, 0)) {
    free(lks);
    return;
  }
  for (int i = 0; i < CONCURRENT; i++) {
    char name[32];

    if (i % 4 == 0)
      snprintf(name, sizeof name, "both.test");
    else
      snprintf(name, sizeof name, "conc-%d.test", i % CONC_NAMES);
    lookup_start(&r, &lks[i], name, AF_UNSPEC);
  }
  CHECK(r.outstanding == CONCURRENT);    /* all in flight at once */
  CHECK(resolver_wait(&r, 15000));
  resolver_destroy(&r);
  for (int i = 0; i < CONCURRENT; i++) {
    ok += concurrent_ok(&lks[i], i);
    retries += lks[i].timeouts;
    lookup_free(&lks[i]);
  }
  CHECK(ok == CONCURRENT);
  printf("# concurrent: %d/%d succeeded, %d retries after a timeout\n", ok,
         CONCURRENT, retries);
  free(lks);
}

/* The reply to a query for both.test with this ID and RD set. */
static bool probe_ok(int fd, unsigned id) {
  uint8_t q[512], reply[MSG_MAX];
  size_t qlen = make_query(q, id, 0x0100, "both.test", 1, 1);
  ssize_t n = udp_ask(fd, q, qlen, reply, sizeof reply);

  return n == (ssize_t)qlen + 16 && hdr_of(reply).an == 1 &&
         memcmp(reply + n - 4, "\x7f\x00\x00\x02", 4) == 0;
}

/* Sends a packet the server must drop, then a probe: the first reply must
 * be the probe's, as one socket's datagrams are served in order. */
static void expect_dropped(int fd, const uint8_t *pkt, size_t len,
                           const char *what) {
  uint8_t q[512], reply[MSG_MAX];
  size_t qlen = make_query(q, PROBE_ID, 0x0100, "both.test", 1, 1);
  ssize_t n;

  if (!CHECK(send(fd, pkt, len, 0) >= 0 && send(fd, q, qlen, 0) >= 0))
    return;
  n = recv_within(fd, reply, sizeof reply, 2000);
  if (!CHECK(n >= 12 && rd16(reply) == PROBE_ID))
    fprintf(stderr, "  (not dropped: %s)\n", what);
}

static void test_raw_answers(int fd) {
  uint8_t q[512], r[MSG_MAX];
  size_t qlen = make_query(q, 0x1234, 0x0100, "BoTh.TeSt", 1, 1);
  ssize_t n = udp_ask(fd, q, qlen, r, sizeof r);
  struct hdr h = hdr_of(r);
  static const uint8_t rr[] = {0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x01, 0x2c,
                               0, 4, 127, 0, 0, 2};

  if (!CHECK(n == (ssize_t)qlen + 16))
    return;
  CHECK(h.id == 0x1234 && h.flags == 0x8580 && h.qd == 1 && h.an == 1 &&
        h.ns == 0 && h.ar == 0);                    /* QR AA RD RA */
  CHECK(memcmp(r + 12, q + 12, qlen - 12) == 0);   /* question, case kept */
  CHECK(memcmp(r + qlen, rr, sizeof rr) == 0);
  qlen = make_query(q, 0x1235, 0, "both.test", 28, 1);   /* RD clear */
  n = udp_ask(fd, q, qlen, r, sizeof r);
  CHECK(n == (ssize_t)qlen + 28 && hdr_of(r).flags == 0x8480 &&
        hdr_of(r).an == 1);
  qlen = make_query(q, 0x1236, 0x0100, "nope.test", 1, 1);
  n = udp_ask(fd, q, qlen, r, sizeof r);
  CHECK(n == (ssize_t)qlen && hdr_of(r).rcode == 3 && hdr_of(r).an == 0 &&
        (hdr_of(r).flags & 0x0400));
}

static void test_raw_types(int fd) {
  uint8_t q[512], r[MSG_MAX];
  size_t qlen;
  ssize_t n;

  qlen = make_query(q, 0x2001, 0x0100, "both.test", 255, 1);   /* ANY */
  n = udp_ask(fd, q, qlen, r, sizeof r);
  CHECK(n == (ssize_t)qlen && hdr_of(r).rcode == 0 && hdr_of(r).an == 0);
  qlen = make_query(q, 0x2002, 0x0100, "both.test", 15, 1);    /* MX */
  n = udp_ask(fd, q, qlen, r, sizeof r);
  CHECK(n == (ssize_t)qlen && hdr_of(r).rcode == 0 && hdr_of(r).an == 0);
  qlen = make_query(q, 0x2003, 0x0100, "v6only.test", 1, 1);   /* NODATA */
  n = udp_ask(fd, q, qlen, r, sizeof r);
  CHECK(n == (ssize_t)qlen && hdr_of(r).rcode == 0 && hdr_of(r).an == 0);
  qlen = make_query(q, 0x2004, 0x0100, "both.test", 1, 3);     /* CH */
  n = udp_ask(fd, q, qlen, r, sizeof r);
  CHECK(n == (ssize_t)qlen && hdr_of(r).rcode == 5);
  qlen = make_query(q, 0x2005, 0x0100, "many.test", 1, 1);     /* > 512 */
  n = udp_ask(fd, q, qlen, r, sizeof r);
  CHECK(n == (ssize_t)qlen && (hdr_of(r).flags & 0x0200) &&
        hdr_of(r).an == 0 && hdr_of(r).rcode == 0);
}

/* EDNS: an OPT record in the additional section; no OPT comes back. */
static void test_raw_edns(int fd) {
  static const uint8_t opt[] = {0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0};
  uint8_t q[512], r[MSG_MAX];
  size_t qlen = make_query(q, 0x3001, 0x0100, "both.test", 1, 1);
  ssize_t n;

  wr16(q + 10, 1);
  memcpy(q + qlen, opt, sizeof opt);
  n = udp_ask(fd, q, qlen + sizeof opt, r, sizeof r);
  CHECK(n == (ssize_t)qlen + 16 && hdr_of(r).ar == 0 && hdr_of(r).an == 1);
}

/* Two questions: the first is answered and echoed alone. */
static void test_raw_two_questions(int fd) {
  uint8_t q[512], second[512], r[MSG_MAX];
  size_t slen = make_query(second, 0, 0, "v4only.test", 1, 1) - 12;
  size_t qlen = make_query(q, 0x3002, 0x0100, "both.test", 1, 1);
  ssize_t n;

  wr16(q + 4, 2);
  memcpy(q + qlen, second + 12, slen);
  n = udp_ask(fd, q, qlen + slen, r, sizeof r);
  CHECK(n == (ssize_t)qlen + 16 && hdr_of(r).qd == 1 && hdr_of(r).an == 1 &&
        memcmp(r + n - 4, "\x7f\x00\x00\x02", 4) == 0);
}

/* A QNAME whose first byte is first, followed by as many bytes as that
 * byte read as a length would claim, then the root and a full question:
 * only the label-type check can refuse it. */
static size_t make_label_soup(uint8_t *q, uint8_t first) {
  size_t off = make_query(q, 0x4005, 0x0100, "", 1, 1) - 5;

  q[off++] = first;
  memset(q + off, 'a', first);
  off += first;
  q[off++] = 0;
  wr16(q + off, 1);
  wr16(q + off + 2, 1);
  return off + 4;
}

static void test_raw_drops(int fd) {
  uint8_t q[600];
  size_t qlen = make_query(q, 0x4001, 0x0100, "both.test", 1, 1);

  expect_dropped(fd, q, 11, "short header");
  expect_dropped(fd, q, qlen - 1, "no full QCLASS");
  expect_dropped(fd, q, 14, "QNAME cut");
  wr16(q + 2, 0x8100);
  expect_dropped(fd, q, qlen, "QR set");
  wr16(q + 2, 0x0900);
  expect_dropped(fd, q, qlen, "opcode 1");
  wr16(q + 2, 0x0100);
  wr16(q + 4, 0);
  expect_dropped(fd, q, qlen, "QDCOUNT 0");
  wr16(q + 4, 1);
  qlen = make_label_soup(q, 0xc0);
  expect_dropped(fd, q, qlen, "pointer in QNAME");
  qlen = make_label_soup(q, 0x44);
  expect_dropped(fd, q, qlen, "reserved label type");
  qlen = make_query(q, 0x4001, 0x0100, "both.test", 1, 1);
  q[12] = 63;
  expect_dropped(fd, q, qlen, "label past the end");
  qlen = make_query(q, 0x4002, 0x0100, "a.b", 1, 1);
  q[13] = '.';
  expect_dropped(fd, q, qlen, "dot inside a label");
  /* 5 labels of 63: 320 wire bytes, over the 255 limit. */
  qlen = make_query(q, 0x4003, 0x0100, "x", 1, 1);
  for (int i = 0; i < 5; i++) {
    q[12 + i * 64] = 63;
    memset(q + 13 + i * 64, 'x', 63);
  }
  q[12 + 5 * 64] = 0;
  memset(q + 13 + 5 * 64, 0, 4);
  q[14 + 5 * 64] = 1;
  q[16 + 5 * 64] = 1;
  expect_dropped(fd, q, 17 + 5 * 64, "name too long");
  CHECK(probe_ok(fd, 0x4004));
}

static void test_raw_udp(int port) {
  int fd = udp_client(port);

  if (fd < 0)
    return;
  test_raw_answers(fd);
  test_raw_types(fd);
  test_raw_edns(fd);
  test_raw_two_questions(fd);
  test_raw_drops(fd);
  close(fd);
}

/* A framed message in three pieces, split inside the length prefix too,
 * with pauses so that the server reads each piece on its own. */
static bool send_in_pieces(int fd, const uint8_t *msg, size_t len) {
  uint8_t prefix[2];

  wr16(prefix, (unsigned)len);
  if (!send_all(fd, prefix, 1))
    return false;
  sleep_ms(20);
  if (!send_all(fd, prefix + 1, 1) || !send_all(fd, msg, 5))
    return false;
  sleep_ms(20);
  return send_all(fd, msg + 5, len - 5);
}

/* Pipelined queries, a query in pieces, garbage that is dropped, and
 * a delayed answer still delivered after the client's half-close. */
static void test_raw_tcp(int port) {
  uint8_t q[3][512], buf[MSG_MAX], junk[7] = {0, 5, 1, 2, 3, 4, 5};
  size_t len[3];
  int fd = tcp_client(port);

  if (fd < 0)
    return;
  len[0] = make_query(q[0], 0x5001, 0x0100, "both.test", 1, 1);
  len[1] = make_query(q[1], 0x5002, 0x0100, "many.test", 1, 1);
  len[2] = make_query(q[2], 0x5003, 0x0100, "delayed.test", 1, 1);
  CHECK(send_all(fd, junk, sizeof junk));
  CHECK(tcp_send_msg(fd, q[0], len[0]) && tcp_send_msg(fd, q[1], len[1]));
  CHECK(tcp_recv_msg(fd, buf) == (ssize_t)len[0] + 16 &&
        hdr_of(buf).id == 0x5001);
  CHECK(tcp_recv_msg(fd, buf) == (ssize_t)len[1] + MANY_RECS * 16 &&
        hdr_of(buf).id == 0x5002 && hdr_of(buf).an == MANY_RECS &&
        !(hdr_of(buf).flags & 0x0200));
  CHECK(send_in_pieces(fd, q[2], len[2]));
  shutdown(fd, SHUT_WR);
  CHECK(tcp_recv_msg(fd, buf) == (ssize_t)len[2] + 16 &&
        hdr_of(buf).id == 0x5003);
  CHECK(recv(fd, buf, 1, 0) == 0);   /* then the server closes */
  close(fd);
}

/* --- fuzzing ------------------------------------------------------------ */

static uint64_t rng_next(uint64_t *st) {   /* xorshift64* */
  *st ^= *st >> 12;
  *st ^= *st << 25;
  *st ^= *st >> 27;
  return *st * 2685821657736338717ULL;
}

static unsigned rng_below(uint64_t *st, unsigned n) {
  return (unsigned)(rng_next(st) % n);
}

static size_t fuzz_valid(uint64_t *rng, uint8_t *buf) {
  static const char *const names[] = {"both.test", "many.test", "nope.test",
                                      "v4only.test", "BOTH.test", ""};
  static const unsigned types[] = {1, 28, 255, 15, 0, 65535};

  return make_query(buf, rng_below(rng, 65536), rng_below(rng, 2) << 8,
                    names[rng_below(rng, 6)], types[rng_below(rng, 6)],
                    rng_below(rng, 8) ? 1 : rng_below(rng, 65536));
}

/* Header then label bytes of every kind: lengths past the end, pointers,
 * reserved types, zero, odd bytes. */
static size_t fuzz_labels(uint64_t *rng, uint8_t *buf, size_t cap) {
  size_t off = make_query(buf, rng_below(rng, 65536), 0x0100, "", 1, 1) - 5;
  size_t end = off + rng_below(rng, (unsigned)(cap - off));

  while (off < end) {
    unsigned pick = rng_below(rng, 8);

    if (pick == 0)
      buf[off++] = (uint8_t)(0xc0 | rng_below(rng, 64));
    else if (pick == 1)
      buf[off++] = (uint8_t)(0x40 + rng_below(rng, 128));
    else if (pick == 2)
      buf[off++] = 0;
    else
      buf[off++] = (uint8_t)rng_below(rng, pick == 3 ? 256 : 64);
  }
  return end;
}

static size_t fuzz_packet(uint64_t *rng, uint8_t *buf, size_t cap) {
  size_t len;

  switch (rng_below(rng, 5)) {
  case 0:   /* noise */
    len = rng_below(rng, (unsigned)cap);
    for (size_t i = 0; i < len; i++)
      buf[i] = (uint8_t)rng_next(rng);
    return len;
  case 1:   /* a query cut short */
    return rng_below(rng, (unsigned)fuzz_valid(rng, buf));
  case 2:   /* a query with bits flipped */
    len = fuzz_valid(rng, buf);
    for (unsigned k = 1 + rng_below(rng, 4); k > 0; k--)
      buf[rng_below(rng, (unsigned)len)] ^= (uint8_t)(1u << rng_below(rng, 8));
    return len;
  case 3:
    return fuzz_labels(rng, buf, cap);
  default:  /* a query with trailing junk: answered */
    len = fuzz_valid(rng, buf);
    for (unsigned k = rng_below(rng, 64); k > 0 && len < cap; k--)
      buf[len++] = (uint8_t)rng_next(rng);
    return len;
  }
}

/* Whatever came back must look like a reply to one question. */
static int drain_replies(int fd, int *bad) {
  uint8_t r[MSG_MAX];
  int count = 0;
  ssize_t n;

  while ((n = recv(fd, r, sizeof r, MSG_DONTWAIT)) >= 0) {
    count++;
    if (n < 12 || n > 512 || !(rd16(r + 2) & 0x8000) || rd16(r + 4) != 1)
      (*bad)++;
  }
  return count;
}

static uint64_t fuzz_seed(void) {
  const char *env = getenv("DS_FUZZ_SEED");
  uint64_t seed = env ? strtoull(env, NULL, 0) : 0x9e3779b97f4a7c15ULL;

  return seed ? seed : 1;
}

static void test_fuzz_udp(struct ds_server *s, int port) {
  uint64_t rng = fuzz_seed();
  uint8_t pkt[600];
  int fd = udp_client(port), replies = 0, bad = 0, alive = 0;
  long before = ds_queries_total(s);

  if (fd < 0)
    return;
  for (int i = 1; i <= FUZZ_PACKETS; i++) {
    size_t len = fuzz_packet(&rng, pkt, sizeof pkt);

    (void)send(fd, pkt, len, 0);
    if (i % 50 == 0)
      replies += drain_replies(fd, &bad);
    if (i % 1000 == 0)
      alive += probe_ok(fd, 0xf000 + (unsigned)i / 1000);
  }
  replies += drain_replies(fd, &bad);
  close(fd);
  CHECK(alive == FUZZ_PACKETS / 1000);
  CHECK(bad == 0);
  CHECK(ds_queries_total(s) > before);
  printf("# fuzz udp: %d packets (seed %#llx), %d replies checked, %ld parsed, "
         "%d/%d probes answered\n",
         FUZZ_PACKETS, (unsigned long long)fuzz_seed(), replies,
         ds_queries_total(s) - before, alive, FUZZ_PACKETS / 1000);
}

/* Whether a TCP reply is the probe's: the ID alone could be a fuzzed
 * query's. */
static bool is_probe_reply(const uint8_t *r, ssize_t n, size_t qlen) {
  return n == (ssize_t)qlen + 16 && hdr_of(r).id == PROBE_ID &&
         hdr_of(r).an == 1 && memcmp(r + n - 4, "\x7f\x00\x00\x02", 4) == 0;
}

/* The same packets framed on one TCP connection, then a probe on it: the
 * replies come in order, so every one before the probe's is read first. */
static void test_fuzz_tcp(int port) {
  uint64_t rng = fuzz_seed() ^ 0x5555;
  uint8_t pkt[600], buf[MSG_MAX];
  int fd = tcp_client(port), replies = 0;
  size_t qlen;
  ssize_t n;

  if (fd < 0)
    return;
  for (int i = 0; i < 1000; i++) {
    size_t len = fuzz_packet(&rng, pkt, sizeof pkt);

    if (!CHECK(tcp_send_msg(fd, pkt, len)))
      break;
  }
  qlen = make_query(pkt, PROBE_ID, 0x0100, "both.test", 1, 1);
  CHECK(tcp_send_msg(fd, pkt, qlen));
  while ((n = tcp_recv_msg(fd, buf)) >= 0 && !is_probe_reply(buf, n, qlen)) {
    CHECK(n >= 12 && (hdr_of(buf).flags & 0x8000) && hdr_of(buf).qd == 1);
    replies++;
  }
  CHECK(n >= 0);
  printf("# fuzz tcp: 1000 messages, %d replies before the probe's\n",
         replies);
  close(fd);
}

/* --- lifecycle and API ------------------------------------------------------ */

static void test_api_errors(void) {
  struct ds_server *s = ds_start(NULL);
  char longlabel[80], longname[300];

  if (!CHECK(s != NULL))
    return;
  memset(longlabel, 'a', 64);
  longlabel[64] = '\0';
  for (int i = 0; i < 127; i++)
    memcpy(longname + 2 * i, "a.", 2);
  memcpy(longname + 254, "a", 2);   /* 255 characters */
  errno = 0;
  CHECK(ds_add_a(s, "x.test", "300.1.2.3", 1) == -1 && errno == EINVAL);
  CHECK(ds_add_a(s, "x.test", "::1", 1) == -1 && errno == EINVAL);
  CHECK(ds_add_aaaa(s, "x.test", "127.0.0.1", 1) == -1 && errno == EINVAL);
  CHECK(ds_add_a(s, "", "127.0.0.1", 1) == -1);
  CHECK(ds_add_a(s, ".", "127.0.0.1", 1) == -1);
  CHECK(ds_add_a(s, "a..b", "127.0.0.1", 1) == -1);
  CHECK(ds_add_a(s, ".a", "127.0.0.1", 1) == -1);
  CHECK(ds_add_a(s, longlabel, "127.0.0.1", 1) == -1);
  CHECK(ds_add_a(s, longname, "127.0.0.1", 1) == -1);
  CHECK(ds_add_a(s, NULL, "127.0.0.1", 1) == -1);
  CHECK(ds_add_a(NULL, "x.test", "127.0.0.1", 1) == -1);
  CHECK(ds_set_delay(s, "x.test", -1) == -1 && errno == EINVAL);
  CHECK(ds_queries(s, "a..b") == -1 && ds_queries(NULL, "x") == -1);
  CHECK(ds_queries_total(NULL) == -1);
  CHECK(ds_port(NULL) == -1);
  longlabel[63] = '\0';
  CHECK(ds_add_a(s, longlabel, "127.0.0.1", 1) == 0);
  ds_stop(NULL);
  ds_stop(s);
}

/* The most records a name may have, all sent in one TCP reply. */
static void test_big_answer(void) {
  struct ds_server *s = ds_start(NULL);
  struct lookup lk;

  if (!CHECK(s != NULL))
    return;
  for (int i = 0; i < BIG_RECS; i++) {
    char ip[32];

    snprintf(ip, sizeof ip, "127.1.%d.%d", i / 256, i % 256);
    CHECK(ds_add_a(s, "big.test", ip, TTL) == 0);
  }
  errno = 0;
  CHECK(ds_add_a(s, "big.test", "127.0.0.1", TTL) == -1 && errno == ENOSPC);
  resolve(ds_port(s), 0, 2000, "big.test", AF_INET, &lk);
  CHECK(lk.status == ARES_SUCCESS && node_count(lk.res) == BIG_RECS);
  lookup_free(&lk);
  ds_stop(s);
}

/* Servers share nothing: two at once, different ports, separate tables. */
static void test_two_servers(void) {
  struct ds_server *a = ds_start(NULL), *b = ds_start(NULL);
  struct lookup lk;

  if (CHECK(a && b)) {
    CHECK(ds_port(a) != ds_port(b) && ds_port(a) > 0 && ds_port(b) > 0);
    CHECK(ds_add_a(a, "only-a.test", "127.0.0.7", TTL) == 0);
    resolve(ds_port(b), 0, 2000, "only-a.test", AF_INET, &lk);
    CHECK(lk.status == ARES_ENOTFOUND);
    lookup_free(&lk);
    resolve(ds_port(a), 0, 2000, "only-a.test", AF_INET, &lk);
    CHECK(lk.status == ARES_SUCCESS);
    lookup_free(&lk);
    CHECK(ds_queries(a, "only-a.test") == 1 &&
          ds_queries(b, "only-a.test") == 1);
  }
  ds_stop(a);
  ds_stop(b);
}

/* Stopping with work in hand: delayed answers owed over UDP and TCP, a
 * half-read TCP message, an idle connection. All must be freed. */
static void test_stop_busy(void) {
  struct ds_server *s = ds_start(NULL);
  uint8_t q[512];
  size_t qlen = make_query(q, 0x6001, 0x0100, "slow.test", 1, 1);
  int u, t, idle;

  if (!CHECK(s != NULL))
    return;
  CHECK(ds_add_a(s, "slow.test", "127.0.0.8", TTL) == 0);
  CHECK(ds_set_delay(s, "slow.test", 60000) == 0);
  u = udp_client(ds_port(s));
  t = tcp_client(ds_port(s));
  idle = tcp_client(ds_port(s));
  if (u >= 0 && t >= 0 && idle >= 0) {
    int64_t deadline = now_ns() + 2000 * NS_PER_MS;

    CHECK(send(u, q, qlen, 0) == (ssize_t)qlen);
    CHECK(tcp_send_msg(t, q, qlen));
    CHECK(send_all(t, (const uint8_t *)"\x00\x30\x12", 3));
    while (ds_queries(s, "slow.test") < 2 && ms_left(deadline) > 0)
      sleep_ms(1);
    CHECK(ds_queries(s, "slow.test") == 2);
  }
  ds_stop(s);
  if (u >= 0)
    close(u);
  if (t >= 0)
    close(t);
  if (idle >= 0)
    close(idle);
}

static void run(const char *name, void (*fn)(int), int port) {
  int before = failures;

  fn(port);
  tap_result(name, failures == before);
}

static void run_s(const char *name, void (*fn)(struct ds_server *, int),
                  struct ds_server *s) {
  int before = failures;

  fn(s, ds_port(s));
  tap_result(name, failures == before);
}

static void run_0(const char *name, void (*fn)(void)) {
  int before = failures;

  fn();
  tap_result(name, failures == before);
}

int main(void) {
  FILE *log = getenv("DS_SELFTEST_LOG") ? stderr : NULL;
  struct ds_server *s;

  setvbuf(stdout, NULL, _IOLBF, 0);
  if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS)
    return 1;
  s = ds_start(log);
  if (!CHECK(s != NULL)) {
    perror("ds_start");
    ares_library_cleanup();
    return 1;
  }
  printf("# server on 127.0.0.1:%d\n", ds_port(s));
  add_fixture_records(s);
  run("addresses", test_addresses, ds_port(s));
  run("not found", test_not_found, ds_port(s));
  run_s("query counts", test_counts, s);
  run_s("silent name times out", test_silent, s);
  run("delayed answers", test_delay, ds_port(s));
  run_s("truncation and TCP", test_tcp_fallback, s);
  run_s("200 concurrent lookups", test_concurrent, s);
  run("raw udp", test_raw_udp, ds_port(s));
  run("raw tcp", test_raw_tcp, ds_port(s));
  run_s("fuzz udp", test_fuzz_udp, s);
  run("fuzz tcp", test_fuzz_tcp, ds_port(s));
  run("still answering", test_addresses, ds_port(s));
  ds_stop(s);
  run_0("api errors", test_api_errors);
  run_0("1024 records over tcp", test_big_answer);
  run_0("two servers", test_two_servers);
  run_0("stop while busy", test_stop_busy);
  ares_library_cleanup();
  printf("# %d failed checks\n", failures);
  return tap_done() || failures ? 1 : 0;
}
