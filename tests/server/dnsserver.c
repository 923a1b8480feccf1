/*
 * The test DNS responder: see dnsserver.h for what it answers.
 *
 * One thread polls an eventfd (stop), the UDP socket, the TCP listener and
 * the TCP connections. Delayed answers are built at once and kept in a list
 * sorted by due time; the poll timeout is the time to the first of them, so
 * nothing ever sleeps. The record table is the only state shared with the
 * API callers, under one mutex.
 */
#define _GNU_SOURCE
#include "dnsserver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* --- limits ---------------------------------------------------------------- */

#define DS_NAME_MAX 253           /* text form, without the trailing dot */
#define DS_LABEL_MAX 63
#define DS_WIRE_NAME_MAX 255      /* wire form, length bytes and root */
#define DS_HDR_LEN 12
#define DS_UDP_REPLY_MAX 512      /* classic limit; no OPT in our replies */
#define DS_MSG_MAX 65535          /* what a TCP length prefix can carry */
#define DS_RX_MAX 65536           /* larger than any IPv4 UDP payload */
#define DS_TCP_IN_MAX (2 + DS_MSG_MAX)
#define DS_TCP_OUT_MAX (1 << 20)  /* a client that never reads is dropped */
#define DS_MAX_RECS 1024          /* per name; keeps a reply under 64 KiB */
#define DS_MAX_AUTO_NAMES 16384   /* names remembered only to count them */
#define DS_BUCKETS 1024
#define DS_MAX_CONNS 64
#define DS_MAX_PENDING 4096
#define DS_UDP_BATCH 64           /* datagrams per wake-up, then the rest */
#define DS_ACCEPT_PAUSE_MS 100
#define DS_NS_PER_MS 1000000LL

#define DS_TYPE_A 1
#define DS_TYPE_AAAA 28
#define DS_CLASS_IN 1

#define DS_FLAG_QR 0x8000
#define DS_FLAG_AA 0x0400
#define DS_FLAG_TC 0x0200
#define DS_FLAG_RD 0x0100
#define DS_FLAG_RA 0x0080
#define DS_OPCODE(flags) (((flags) >> 11) & 0xf)

#define DS_RCODE_NOERROR 0
#define DS_RCODE_NXDOMAIN 3
#define DS_RCODE_REFUSED 5

/* Header, the longest question, and the most answers of the widest type
 * must fit the reply buffer: building a reply never checks for room. */
_Static_assert(DS_HDR_LEN + DS_WIRE_NAME_MAX + 4 + DS_MAX_RECS * (12 + 16) <=
                   DS_MSG_MAX,
               "a full reply must fit one TCP message");

/* --- types ----------------------------------------------------------------- */

struct ds_rec {
  uint16_t type;
  uint16_t len;      /* of data: 4 or 16 */
  uint32_t ttl;
  uint8_t data[16];
};

struct ds_name {
  struct ds_name *next;   /* hash chain */
  struct ds_rec *recs;
  size_t nrecs;
  size_t caprecs;
  bool silent;
  int delay_ms;
  long queries;
  char name[];            /* lower case, no trailing dot */
};

struct ds_conn {
  int fd;
  bool peer_closed;       /* EOF read: finish what is owed, then close */
  bool dead;              /* closed at the next sweep */
  int npending;           /* delayed answers still owed to it */
  size_t in_len;
  uint8_t *in;            /* DS_TCP_IN_MAX bytes: a whole message fits */
  uint8_t *out;
  size_t out_len;
  size_t out_off;
  size_t out_cap;
};

struct ds_pending {
  struct ds_pending *next;
  int64_t due_ns;
  struct ds_conn *conn;   /* NULL: a UDP reply to peer */
  struct sockaddr_in peer;
  size_t len;
  uint8_t msg[];
};

struct ds_query {
  uint16_t id;
  uint16_t flags;
  uint16_t qtype;
  uint16_t qclass;
  size_t qlen;            /* the first question on the wire, QNAME..QCLASS */
  char name[DS_NAME_MAX + 1];
};

struct ds_server {
  FILE *log;
  int port;
  int stop_fd;            /* eventfd: ds_stop() writes it to wake the thread */
  int udp_fd;
  int tcp_fd;
  pthread_t thread;

  /* Protected by lock: the API callers and the thread both use these. */
  pthread_mutex_t lock;
  struct ds_name *buckets[DS_BUCKETS];
  long auto_names;
  long total;

  /* The thread's alone between ds_start() and ds_stop(). */
  struct ds_conn *conns[DS_MAX_CONNS];
  int nconns;
  struct ds_pending *pending;   /* sorted by due_ns, FIFO among equals */
  int npending;
  int64_t accept_paused_until;
  uint8_t rx[DS_RX_MAX];
  uint8_t tx[2 + DS_MSG_MAX];   /* room for the TCP length prefix first */
};

/* --- small helpers --------------------------------------------------------- */

static void ds_log(const struct ds_server *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void ds_log(const struct ds_server *s, const char *fmt, ...) {
  va_list ap;

  if (!s->log)
    return;
  va_start(ap, fmt);
  fputs("dnsserver: ", s->log);
  vfprintf(s->log, fmt, ap);
  fputc('\n', s->log);
  fflush(s->log);
  va_end(ap);
}

static int fail(int err) {
  errno = err;
  return -1;
}

static int64_t now_ns(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static void wr16(uint8_t *p, unsigned v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

static void wr32(uint8_t *p, uint32_t v) {
  wr16(p, v >> 16);
  wr16(p + 2, v & 0xffff);
}

/* DNS compares names in ASCII case only (RFC 4343), whatever the locale. */
static char ascii_lower(char c) {
  return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static void lock(struct ds_server *s) { pthread_mutex_lock(&s->lock); }
static void unlock(struct ds_server *s) { pthread_mutex_unlock(&s->lock); }

/* --- the name table (callers hold the lock) -------------------------------- */

/* Lower-cases name into out and checks that a query could carry it: labels
 * of 1..63 bytes, 253 in all; one trailing dot is dropped. */
static int normalize_name(const char *name, char out[DS_NAME_MAX + 1]) {
  size_t len, label = 0;

  if (!name)
    return -1;
  len = strlen(name);
  if (len > 0 && name[len - 1] == '.')
    len--;
  if (len == 0 || len > DS_NAME_MAX)
    return -1;
  for (size_t i = 0; i < len; i++) {
    if (name[i] == '.') {
      if (label == 0)
        return -1;
      label = 0;
    } else if (name[i] == '\0' || ++label > DS_LABEL_MAX) {
      return -1;
    }
    out[i] = ascii_lower(name[i]);
  }
  if (label == 0)
    return -1;
  out[len] = '\0';
  return 0;
}

static unsigned bucket_of(const char *name) {
  uint32_t h = 2166136261u;   /* FNV-1a: short names, no adversary */

  for (; *name; name++)
    h = (h ^ (uint8_t)*name) * 16777619u;
  return h % DS_BUCKETS;
}

static struct ds_name *find_name(struct ds_server *s, const char *name) {
  struct ds_name *n = s->buckets[bucket_of(name)];

  while (n && strcmp(n->name, name) != 0)
    n = n->next;
  return n;
}

static struct ds_name *insert_name(struct ds_server *s, const char *name) {
  size_t len = strlen(name);
  struct ds_name *n = calloc(1, sizeof *n + len + 1);
  unsigned b = bucket_of(name);

  if (!n)
    return NULL;
  memcpy(n->name, name, len + 1);
  n->next = s->buckets[b];
  s->buckets[b] = n;
  return n;
}

static struct ds_name *intern_name(struct ds_server *s, const char *name) {
  struct ds_name *n = find_name(s, name);

  return n ? n : insert_name(s, name);
}

static int push_record(struct ds_name *n, uint16_t type, const void *data,
                       uint16_t len, unsigned ttl) {
  struct ds_rec *r;

  if (n->nrecs == DS_MAX_RECS)
    return fail(ENOSPC);
  if (n->nrecs == n->caprecs) {
    size_t cap = n->caprecs ? 2 * n->caprecs : 4;
    struct ds_rec *recs = realloc(n->recs, cap * sizeof *recs);

    if (!recs)
      return fail(ENOMEM);
    n->recs = recs;
    n->caprecs = cap;
  }
  r = &n->recs[n->nrecs++];
  r->type = type;
  r->len = len;
  /* RFC 2181 8: resolvers read a TTL with the top bit set as 0. */
  r->ttl = ttl > 0x7fffffffu ? 0x7fffffffu : ttl;
  memcpy(r->data, data, len);
  return 0;
}

static void free_names(struct ds_server *s) {
  for (size_t b = 0; b < DS_BUCKETS; b++) {
    while (s->buckets[b]) {
      struct ds_name *n = s->buckets[b];

      s->buckets[b] = n->next;
      free(n->recs);
      free(n);
    }
  }
}

/* --- parsing a query -------------------------------------------------------- */

/* Reads the QNAME at *off into text form. Every length is checked against
 * len before the byte is touched; compression pointers and the reserved
 * label types are refused, as are labels holding '.' or NUL, which the
 * text form could not tell apart from other names. */
static int parse_qname(const uint8_t *p, size_t len, size_t *off,
                       char name[DS_NAME_MAX + 1]) {
  size_t at = *off, out = 0, wire = 1;

  for (;;) {
    uint8_t label;

    if (at >= len)
      return -1;
    label = p[at++];
    if (label == 0)
      break;
    if (label & 0xc0)
      return -1;
    if (label > len - at)
      return -1;
    wire += 1u + label;
    if (wire > DS_WIRE_NAME_MAX)
      return -1;
    if (out > 0)
      name[out++] = '.';
    for (size_t i = 0; i < label; i++) {
      char c = (char)p[at + i];

      if (c == '.' || c == '\0')
        return -1;
      name[out++] = ascii_lower(c);
    }
    at += label;
  }
  name[out] = '\0';
  *off = at;
  return 0;
}

/* Header and first question; later questions and any other section (an
 * EDNS OPT record, say) are ignored. */
static int parse_query(const uint8_t *p, size_t len, struct ds_query *q) {
  size_t off = DS_HDR_LEN;

  if (len < DS_HDR_LEN)
    return -1;
  q->id = rd16(p);
  q->flags = rd16(p + 2);
  /* A response sent here must never be answered: two servers would loop. */
  if ((q->flags & DS_FLAG_QR) || DS_OPCODE(q->flags) != 0)
    return -1;
  if (rd16(p + 4) == 0)
    return -1;
  if (parse_qname(p, len, &off, q->name) < 0)
    return -1;
  if (len - off < 4)
    return -1;
  q->qtype = rd16(p + off);
  q->qclass = rd16(p + off + 2);
  q->qlen = off + 4 - DS_HDR_LEN;
  return 0;
}

/* --- building a reply (lock held: n points into the table) ----------------- */

static unsigned reply_rcode(const struct ds_query *q, const struct ds_name *n) {
  if (q->qclass != DS_CLASS_IN)
    return DS_RCODE_REFUSED;
  return n && n->nrecs > 0 ? DS_RCODE_NOERROR : DS_RCODE_NXDOMAIN;
}

static size_t answer_count(const struct ds_name *n, uint16_t qtype) {
  size_t count = 0;

  for (size_t i = 0; i < n->nrecs; i++)
    count += n->recs[i].type == qtype;
  return count;
}

static void write_header(uint8_t *out, const struct ds_query *q, unsigned rcode,
                         size_t ancount) {
  wr16(out, q->id);
  wr16(out + 2, DS_FLAG_QR | DS_FLAG_AA | (q->flags & DS_FLAG_RD) |
                    DS_FLAG_RA | rcode);
  wr16(out + 4, 1);
  wr16(out + 6, (unsigned)ancount);
  wr16(out + 8, 0);
  wr16(out + 10, 0);
}

static size_t write_answer(uint8_t *out, const struct ds_rec *r) {
  wr16(out, 0xc000 | DS_HDR_LEN);   /* the name of the echoed question */
  wr16(out + 2, r->type);
  wr16(out + 4, DS_CLASS_IN);
  wr32(out + 6, r->ttl);
  wr16(out + 10, r->len);
  memcpy(out + 12, r->data, r->len);
  return 12u + r->len;
}

/* Writes the reply to q (whose packet is pkt) into out, which has room for
 * DS_MSG_MAX bytes, and returns its length. */
static size_t build_reply(const struct ds_query *q, const uint8_t *pkt,
                          const struct ds_name *n, bool udp, uint8_t *out) {
  unsigned rcode = reply_rcode(q, n);
  size_t an = rcode == DS_RCODE_NOERROR ? answer_count(n, q->qtype) : 0;
  size_t rdlen = q->qtype == DS_TYPE_A ? 4 : 16;
  size_t off = DS_HDR_LEN + q->qlen;

  write_header(out, q, rcode, an);
  /* The question as it came, case included: resolvers may check it. */
  memcpy(out + DS_HDR_LEN, pkt + DS_HDR_LEN, q->qlen);
  if (an == 0)
    return off;
  if (udp && off + an * (12 + rdlen) > DS_UDP_REPLY_MAX) {
    /* Too big for UDP: the question alone with TC, so the client asks
     * again over TCP (RFC 2181 9 allows dropping the whole section). */
    write_header(out, q, rcode, 0);
    wr16(out + 2, rd16(out + 2) | DS_FLAG_TC);
    return off;
  }
  for (size_t i = 0; i < n->nrecs; i++)
    if (n->recs[i].type == q->qtype)
      off += write_answer(out + off, &n->recs[i]);
  return off;
}

/* --- answering one query ---------------------------------------------------- */

/* The entry to count a query for name against; names nobody added get one
 * too (so ds_queries() works for unknown names), up to a cap that keeps
 * garbage names from growing the table without bound. */
static struct ds_name *counted_name(struct ds_server *s, const char *name) {
  struct ds_name *n = find_name(s, name);

  if (!n && s->auto_names < DS_MAX_AUTO_NAMES) {
    n = insert_name(s, name);
    s->auto_names += n != NULL;
  }
  if (n)
    n->queries++;
  s->total++;
  return n;
}

static void log_reply(const struct ds_server *s, const struct ds_query *q,
                      bool udp, const uint8_t *reply, int delay_ms) {
  if (!reply) {
    ds_log(s, "%s %s type %u: silent", udp ? "udp" : "tcp", q->name,
           q->qtype);
    return;
  }
  ds_log(s, "%s %s type %u: rcode %u, %u answers%s, delay %d ms",
         udp ? "udp" : "tcp", q->name, q->qtype, reply[3] & 0xfu,
         rd16(reply + 6), rd16(reply + 2) & DS_FLAG_TC ? ", truncated" : "",
         delay_ms);
}

/* Parses pkt and builds its reply in s->tx + 2. Returns the reply's length,
 * 0 when nothing is to be sent; *delay_ms says when to send it. */
static size_t answer(struct ds_server *s, const uint8_t *pkt, size_t len,
                     bool udp, int *delay_ms) {
  struct ds_query q;
  struct ds_name *n;
  size_t rlen = 0;

  if (parse_query(pkt, len, &q) < 0) {
    ds_log(s, "%s: dropped a malformed packet of %zu bytes",
           udp ? "udp" : "tcp", len);
    return 0;
  }
  lock(s);
  n = counted_name(s, q.name);
  *delay_ms = n ? n->delay_ms : 0;
  if (!(n && n->silent))
    rlen = build_reply(&q, pkt, n, udp, s->tx + 2);
  unlock(s);
  log_reply(s, &q, udp, rlen ? s->tx + 2 : NULL, *delay_ms);
  return rlen;
}

/* --- delayed answers -------------------------------------------------------- */

static void defer(struct ds_server *s, int delay_ms, struct ds_conn *c,
                  const struct sockaddr_in *peer, const uint8_t *msg,
                  size_t len) {
  struct ds_pending *p, **at = &s->pending;

  if (s->npending == DS_MAX_PENDING ||
      !(p = malloc(sizeof *p + len))) {
    ds_log(s, "no room for a delayed answer: dropped");
    return;
  }
  p->due_ns = now_ns() + delay_ms * DS_NS_PER_MS;
  p->conn = c;
  if (peer)
    p->peer = *peer;
  p->len = len;
  memcpy(p->msg, msg, len);
  while (*at && (*at)->due_ns <= p->due_ns)
    at = &(*at)->next;
  p->next = *at;
  *at = p;
  s->npending++;
  if (c)
    c->npending++;
}

/* Forgets the answers owed to a connection that is going away. */
static void drop_pending_for(struct ds_server *s, const struct ds_conn *c) {
  struct ds_pending **at = &s->pending;

  while (*at) {
    struct ds_pending *p = *at;

    if (p->conn == c) {
      *at = p->next;
      s->npending--;
      free(p);
    } else {
      at = &p->next;
    }
  }
}

static void free_pending(struct ds_server *s) {
  while (s->pending) {
    struct ds_pending *p = s->pending;

    s->pending = p->next;
    free(p);
  }
  s->npending = 0;
}

/* --- UDP -------------------------------------------------------------------- */

static void send_udp(struct ds_server *s, const struct sockaddr_in *peer,
                     const uint8_t *msg, size_t len) {
  /* A full send buffer loses the answer like the network would; the
   * resolver retries. */
  if (sendto(s->udp_fd, msg, len, MSG_DONTWAIT, (const struct sockaddr *)peer,
             sizeof *peer) < 0)
    ds_log(s, "udp send failed: %s", strerror(errno));
}

static void serve_udp(struct ds_server *s) {
  for (int i = 0; i < DS_UDP_BATCH; i++) {
    struct sockaddr_in peer;
    socklen_t plen = sizeof peer;
    int delay_ms = 0;
    size_t rlen;
    ssize_t got = recvfrom(s->udp_fd, s->rx, sizeof s->rx,
                           MSG_DONTWAIT | MSG_TRUNC,
                           (struct sockaddr *)&peer, &plen);

    if (got < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        ds_log(s, "udp receive failed: %s", strerror(errno));
      return;
    }
    if ((size_t)got > sizeof s->rx || plen != sizeof peer ||
        peer.sin_family != AF_INET)
      continue;
    rlen = answer(s, s->rx, (size_t)got, true, &delay_ms);
    if (rlen == 0)
      continue;
    if (delay_ms > 0)
      defer(s, delay_ms, NULL, &peer, s->tx + 2, rlen);
    else
      send_udp(s, &peer, s->tx + 2, rlen);
  }
}

/* --- TCP connections -------------------------------------------------------- */

static struct ds_conn *conn_new(int fd) {
  struct ds_conn *c = calloc(1, sizeof *c);

  if (!c)
    return NULL;
  c->in = malloc(DS_TCP_IN_MAX);
  if (!c->in) {
    free(c);
    return NULL;
  }
  c->fd = fd;
  return c;
}

static void conn_free(struct ds_conn *c) {
  close(c->fd);
  free(c->in);
  free(c->out);
  free(c);
}

/* A connection whose peer has stopped sending closes once it is owed
 * nothing more. */
static void conn_check_done(struct ds_conn *c) {
  if (c->peer_closed && c->out_off == c->out_len && c->npending == 0)
    c->dead = true;
}

static void conn_flush(struct ds_server *s, struct ds_conn *c) {
  while (!c->dead && c->out_off < c->out_len) {
    ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                     MSG_DONTWAIT | MSG_NOSIGNAL);

    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return;
      if (errno == EINTR)
        continue;
      ds_log(s, "tcp send failed: %s", strerror(errno));
      c->dead = true;
      return;
    }
    c->out_off += (size_t)n;
  }
  c->out_off = c->out_len = 0;
  conn_check_done(c);
}

static int conn_reserve(struct ds_conn *c, size_t more) {
  size_t need = c->out_len + more, cap = c->out_cap ? c->out_cap : 1024;
  uint8_t *out;

  /* What was sent already is room again. */
  if (c->out_off > 0) {
    memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
    c->out_len -= c->out_off;
    c->out_off = 0;
    need = c->out_len + more;
  }
  if (need <= c->out_cap)
    return 0;
  if (need > DS_TCP_OUT_MAX)
    return -1;
  while (cap < need)
    cap *= 2;
  out = realloc(c->out, cap);
  if (!out)
    return -1;
  c->out = out;
  c->out_cap = cap;
  return 0;
}

/* msg already carries its length prefix. */
static void conn_queue(struct ds_server *s, struct ds_conn *c,
                       const uint8_t *msg, size_t len) {
  if (c->dead)
    return;
  if (conn_reserve(c, len) < 0) {
    ds_log(s, "tcp client does not read its answers: closed");
    c->dead = true;
    return;
  }
  memcpy(c->out + c->out_len, msg, len);
  c->out_len += len;
  conn_flush(s, c);
}

static void conn_answer(struct ds_server *s, struct ds_conn *c,
                        const uint8_t *msg, size_t len) {
  int delay_ms = 0;
  size_t rlen = answer(s, msg, len, false, &delay_ms);

  if (rlen == 0)
    return;
  wr16(s->tx, (unsigned)rlen);
  if (delay_ms > 0)
    defer(s, delay_ms, c, NULL, s->tx, rlen + 2);
  else
    conn_queue(s, c, s->tx, rlen + 2);
}

/* Answers every whole message in the input buffer and keeps the rest. A
 * client may send several queries on one connection (c-ares does), and a
 * query may arrive in pieces. */
static void conn_take_messages(struct ds_server *s, struct ds_conn *c) {
  size_t off = 0;

  while (!c->dead && c->in_len - off >= 2) {
    size_t mlen = rd16(c->in + off);

    if (c->in_len - off - 2 < mlen)
      break;
    conn_answer(s, c, c->in + off + 2, mlen);
    off += 2 + mlen;
  }
  memmove(c->in, c->in + off, c->in_len - off);
  c->in_len -= off;
}

static void conn_read(struct ds_server *s, struct ds_conn *c) {
  /* Never 0: what stays in the buffer is less than one whole message. */
  size_t room = DS_TCP_IN_MAX - c->in_len;
  ssize_t n = recv(c->fd, c->in + c->in_len, room, MSG_DONTWAIT);

  if (n < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
      c->dead = true;
    return;
  }
  if (n == 0) {
    c->peer_closed = true;
    conn_check_done(c);
    return;
  }
  c->in_len += (size_t)n;
  conn_take_messages(s, c);
}

static void conn_service(struct ds_server *s, struct ds_conn *c, short rev) {
  if (rev & POLLNVAL) {
    c->dead = true;
    return;
  }
  /* Errors and hang-ups show up as a failed or empty read. */
  if (rev & (POLLIN | POLLERR | POLLHUP))
    conn_read(s, c);
  if (rev & POLLOUT)
    conn_flush(s, c);
}

static void sweep_conns(struct ds_server *s) {
  for (int i = 0; i < s->nconns;) {
    struct ds_conn *c = s->conns[i];

    if (!c->dead) {
      i++;
      continue;
    }
    drop_pending_for(s, c);
    conn_free(c);
    s->conns[i] = s->conns[--s->nconns];
  }
}

static void free_conns(struct ds_server *s) {
  while (s->nconns > 0)
    conn_free(s->conns[--s->nconns]);
}

static void accept_conns(struct ds_server *s) {
  for (;;) {
    struct ds_conn *c;
    int fd = accept4(s->tcp_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return;
      /* Out of descriptors or memory: the listener would stay readable and
       * spin the loop, so leave it alone for a while. */
      ds_log(s, "tcp accept failed: %s", strerror(errno));
      s->accept_paused_until = now_ns() + DS_ACCEPT_PAUSE_MS * DS_NS_PER_MS;
      return;
    }
    if (s->nconns == DS_MAX_CONNS || !(c = conn_new(fd))) {
      ds_log(s, "tcp connection refused: too many or no memory");
      close(fd);
      continue;
    }
    s->conns[s->nconns++] = c;
  }
}

/* --- the thread ------------------------------------------------------------- */

enum { DS_FD_STOP, DS_FD_UDP, DS_FD_TCP, DS_FIXED_FDS };

static void fire_due(struct ds_server *s) {
  int64_t now = now_ns();

  while (s->pending && s->pending->due_ns <= now) {
    struct ds_pending *p = s->pending;

    s->pending = p->next;
    s->npending--;
    if (p->conn) {
      p->conn->npending--;
      conn_queue(s, p->conn, p->msg, p->len);
      conn_check_done(p->conn);
    } else {
      send_udp(s, &p->peer, p->msg, p->len);
    }
    free(p);
  }
}

static int ms_until(int64_t when, int64_t now) {
  int64_t ms = (when - now + DS_NS_PER_MS - 1) / DS_NS_PER_MS;   /* round up */

  return ms < 0 ? 0 : ms > 60000 ? 60000 : (int)ms;
}

static int next_timeout_ms(const struct ds_server *s, int64_t now) {
  int timeout = -1;

  if (s->pending)
    timeout = ms_until(s->pending->due_ns, now);
  if (s->accept_paused_until > now) {
    int t = ms_until(s->accept_paused_until, now);

    timeout = timeout < 0 || t < timeout ? t : timeout;
  }
  return timeout;
}

static nfds_t build_pollset(const struct ds_server *s, struct pollfd *fds,
                            struct ds_conn **who, int64_t now) {
  nfds_t n = DS_FIXED_FDS;

  fds[DS_FD_STOP] = (struct pollfd){.fd = s->stop_fd, .events = POLLIN};
  fds[DS_FD_UDP] = (struct pollfd){.fd = s->udp_fd, .events = POLLIN};
  /* A negative fd is skipped by poll(): how the listener pauses. */
  fds[DS_FD_TCP] = (struct pollfd){
      .fd = s->accept_paused_until > now ? -1 : s->tcp_fd, .events = POLLIN};
  for (int i = 0; i < s->nconns; i++, n++) {
    struct ds_conn *c = s->conns[i];
    short events = c->peer_closed ? 0 : POLLIN;

    if (c->out_off < c->out_len)
      events |= POLLOUT;
    fds[n] = (struct pollfd){.fd = c->fd, .events = events};
    who[n - DS_FIXED_FDS] = c;
  }
  return n;
}

static void handle_events(struct ds_server *s, const struct pollfd *fds,
                          struct ds_conn **who, nfds_t n) {
  if (fds[DS_FD_UDP].revents)
    serve_udp(s);
  /* Connections before the listener: who[] stays in step with fds[]. */
  for (nfds_t i = DS_FIXED_FDS; i < n; i++)
    if (fds[i].revents)
      conn_service(s, who[i - DS_FIXED_FDS], fds[i].revents);
  if (fds[DS_FD_TCP].revents)
    accept_conns(s);
}

static void *serve(void *arg) {
  struct ds_server *s = arg;
  struct pollfd fds[DS_FIXED_FDS + DS_MAX_CONNS];
  struct ds_conn *who[DS_MAX_CONNS];

  for (;;) {
    int64_t now = now_ns();
    nfds_t n = build_pollset(s, fds, who, now);
    int rc = poll(fds, n, next_timeout_ms(s, now));

    if (rc < 0 && errno == EINTR)
      continue;
    if (rc < 0) {
      ds_log(s, "poll failed, serving no more: %s", strerror(errno));
      break;
    }
    if (fds[DS_FD_STOP].revents)
      break;
    handle_events(s, fds, who, n);
    fire_due(s);
    sweep_conns(s);
  }
  return NULL;
}

/* --- start and stop --------------------------------------------------------- */

static void close_fd(int *fd) {
  if (*fd >= 0)
    close(*fd);
  *fd = -1;
}

static int bind_loopback(int fd, int port) {
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};

  return bind(fd, (struct sockaddr *)&sa, sizeof sa);
}

static int local_port(int fd) {
  struct sockaddr_in sa;
  socklen_t len = sizeof sa;

  if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
    return -1;
  return ntohs(sa.sin_port);
}

/* One try at a UDP port from the kernel and the same port for TCP. */
static int open_pair(struct ds_server *s) {
  int one = 1, rcvbuf = 1 << 20;

  s->udp_fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s->udp_fd < 0 || bind_loopback(s->udp_fd, 0) < 0 ||
      (s->port = local_port(s->udp_fd)) < 0)
    return -1;
  /* Tests fire hundreds of queries at once; the default buffer may drop
   * some and turn a fast test into a retry-timeout one. Best effort. */
  (void)setsockopt(s->udp_fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  s->tcp_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s->tcp_fd < 0)
    return -1;
  /* Old connections of an earlier server on this port in TIME_WAIT would
   * otherwise make bind() fail. */
  (void)setsockopt(s->tcp_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind_loopback(s->tcp_fd, s->port) < 0 || listen(s->tcp_fd, 64) < 0)
    return -1;
  return 0;
}

/* The kernel picks UDP ports without looking at TCP; when the same TCP
 * port is taken, try another. */
static int open_sockets(struct ds_server *s) {
  for (int attempt = 0; attempt < 32; attempt++) {
    int err;

    if (open_pair(s) == 0)
      return 0;
    err = errno;
    close_fd(&s->udp_fd);
    close_fd(&s->tcp_fd);
    if (err != EADDRINUSE)
      return fail(err);
  }
  return fail(EADDRINUSE);
}

static void release(struct ds_server *s) {
  free_pending(s);
  free_conns(s);
  free_names(s);
  close_fd(&s->udp_fd);
  close_fd(&s->tcp_fd);
  close_fd(&s->stop_fd);
  pthread_mutex_destroy(&s->lock);
  free(s);
}

struct ds_server *ds_start(FILE *log) {
  struct ds_server *s = calloc(1, sizeof *s);
  int err;

  if (!s)
    return NULL;
  s->log = log;
  s->udp_fd = s->tcp_fd = s->stop_fd = -1;
  err = pthread_mutex_init(&s->lock, NULL);
  if (err) {
    free(s);
    errno = err;
    return NULL;
  }
  if (open_sockets(s) < 0 ||
      (s->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
    goto fail;
  err = pthread_create(&s->thread, NULL, serve, s);
  if (err) {
    errno = err;
    goto fail;
  }
  ds_log(s, "listening on 127.0.0.1:%d (udp, tcp)", s->port);
  return s;

fail:
  err = errno;
  release(s);
  errno = err;
  return NULL;
}

int ds_port(const struct ds_server *s) { return s ? s->port : -1; }

void ds_stop(struct ds_server *s) {
  uint64_t one = 1;

  if (!s)
    return;
  /* An eventfd write only fails on counter overflow, which one write per
   * server cannot reach. */
  while (write(s->stop_fd, &one, sizeof one) < 0 && errno == EINTR) {
  }
  pthread_join(s->thread, NULL);
  release(s);
}

/* --- records and counters --------------------------------------------------- */

static int add_record(struct ds_server *s, const char *name, uint16_t type,
                      const void *data, uint16_t len, unsigned ttl) {
  char key[DS_NAME_MAX + 1];
  struct ds_name *n;
  int rc, err;

  if (!s || normalize_name(name, key) < 0)
    return fail(EINVAL);
  lock(s);
  n = intern_name(s, key);
  rc = n ? push_record(n, type, data, len, ttl) : fail(ENOMEM);
  err = errno;
  unlock(s);
  errno = err;
  return rc;
}

int ds_add_a(struct ds_server *s, const char *name, const char *ipv4,
             unsigned ttl) {
  struct in_addr addr;

  if (!ipv4 || inet_pton(AF_INET, ipv4, &addr) != 1)
    return fail(EINVAL);
  return add_record(s, name, DS_TYPE_A, &addr, sizeof addr, ttl);
}

int ds_add_aaaa(struct ds_server *s, const char *name, const char *ipv6,
                unsigned ttl) {
  struct in6_addr addr;

  if (!ipv6 || inet_pton(AF_INET6, ipv6, &addr) != 1)
    return fail(EINVAL);
  return add_record(s, name, DS_TYPE_AAAA, &addr, sizeof addr, ttl);
}

/* Finds or makes name's entry and sets one of its settings. */
static int set_flag(struct ds_server *s, const char *name, bool silent,
                    int delay_ms) {
  char key[DS_NAME_MAX + 1];
  struct ds_name *n;

  if (!s || normalize_name(name, key) < 0)
    return fail(EINVAL);
  lock(s);
  n = intern_name(s, key);
  if (n && silent)
    n->silent = true;
  else if (n)
    n->delay_ms = delay_ms;
  unlock(s);
  return n ? 0 : fail(ENOMEM);
}

int ds_add_silent(struct ds_server *s, const char *name) {
  return set_flag(s, name, true, 0);
}

int ds_set_delay(struct ds_server *s, const char *name, int ms) {
  if (ms < 0)
    return fail(EINVAL);
  return set_flag(s, name, false, ms);
}

long ds_queries(struct ds_server *s, const char *name) {
  char key[DS_NAME_MAX + 1];
  const struct ds_name *n;
  long count;

  if (!s || normalize_name(name, key) < 0)
    return fail(EINVAL);
  lock(s);
  n = find_name(s, key);
  count = n ? n->queries : 0;
  unlock(s);
  return count;
}

long ds_queries_total(struct ds_server *s) {
  long total;

  if (!s)
    return fail(EINVAL);
  lock(s);
  total = s->total;
  unlock(s);
  return total;
}
