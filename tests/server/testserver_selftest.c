/*
 * Checks the scripted test server with plain blocking sockets, so that a
 * bug in libxfer cannot hide a bug in the fixture that tests it.
 * Every socket has a 5 s receive/send timeout and every loop a count bound,
 * so a broken server fails the run instead of hanging it.
 * Exit status 0: all checks passed.
 */
#define _GNU_SOURCE
#include "tap.h"
#include "testserver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define IO_TIMEOUT_S 5
#define CONCURRENT 500

static int failures;

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      failures++;                                                              \
      return false;                                                            \
    }                                                                          \
  } while (0)

/* --- a tiny blocking client ----------------------------------------------- */

struct client {
  int fd;
  size_t off;
  size_t len;
  char buf[1 << 16];
};

struct response {
  int status;
  long long content_length; /* -1: none */
  bool chunked;
  bool close;
  char head[1 << 17];
  char *body; /* malloc'd, body_len bytes */
  size_t body_len;
};

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static bool client_open(struct client *c, int port) {
  c->off = c->len = 0;
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c->fd < 0)
    return false;
  struct timeval tv = {IO_TIMEOUT_S, 0};
  setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  struct sockaddr_in addr = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    close(c->fd);
    c->fd = -1;
    return false;
  }
  return true;
}

static void client_close(struct client *c) {
  if (c->fd >= 0)
    close(c->fd);
  c->fd = -1;
}

static bool send_all(struct client *c, const void *data, size_t n) {
  const char *p = data;
  while (n > 0) {
    ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
    if (w <= 0)
      return false;
    p += w;
    n -= (size_t)w;
  }
  return true;
}

static bool send_str(struct client *c, const char *s) {
  return send_all(c, s, strlen(s));
}

/* Reads more bytes; >0 got some, 0 EOF, -1 error or timeout. */
static ssize_t client_fill(struct client *c) {
  if (c->off > 0) {
    memmove(c->buf, c->buf + c->off, c->len - c->off);
    c->len -= c->off;
    c->off = 0;
  }
  if (c->len == sizeof c->buf)
    return -1;
  ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
  if (n > 0)
    c->len += (size_t)n;
  return n;
}

/* Takes up to n buffered-or-received bytes into dst; false on EOF/error. */
static bool client_take(struct client *c, char *dst, size_t n) {
  while (n > 0) {
    if (c->off == c->len && client_fill(c) <= 0)
      return false;
    size_t k = c->len - c->off < n ? c->len - c->off : n;
    memcpy(dst, c->buf + c->off, k);
    c->off += k;
    dst += k;
    n -= k;
  }
  return true;
}

/* True when the server closed: nothing buffered and recv() says EOF. */
static bool client_sees_eof(struct client *c) {
  return c->off == c->len && client_fill(c) == 0;
}

static bool take_line(struct client *c, char *line, size_t cap) {
  size_t n = 0;
  while (n + 1 < cap) {
    if (!client_take(c, line + n, 1))
      return false;
    if (n > 0 && line[n - 1] == '\r' && line[n] == '\n') {
      line[n - 1] = '\0';
      return true;
    }
    n++;
  }
  return false;
}

static const char *header_value(const char *head, const char *name) {
  size_t n = strlen(name);
  for (const char *p = strstr(head, "\r\n"); p; p = strstr(p + 2, "\r\n"))
    if (strncasecmp(p + 2, name, n) == 0 && p[2 + n] == ':')
      return p + 3 + n + strspn(p + 3 + n, " ");
  return NULL;
}

/* Reads a status line and headers, skipping 1xx interim responses. */
static bool read_head(struct client *c, struct response *r) {
  for (int interim = 0; interim < 4; interim++) {
    size_t used = 0;
    r->head[0] = '\0';
    for (int lines = 0; lines < 1000; lines++) {
      /* Lines go straight into head, each followed by its CRLF. */
      char *line = r->head + used;
      if (!take_line(c, line, sizeof r->head - used - 2))
        return false;
      size_t n = strlen(line);
      memcpy(line + n, "\r\n", 3);
      used += n + 2;
      if (n == 0)
        break;
    }
    if (sscanf(r->head, "HTTP/1.1 %d", &r->status) != 1)
      return false;
    if (r->status >= 200)
      break;
  }
  const char *cl = header_value(r->head, "Content-Length");
  const char *te = header_value(r->head, "Transfer-Encoding");
  const char *conn = header_value(r->head, "Connection");
  r->content_length = cl ? atoll(cl) : -1;
  r->chunked = te && strncasecmp(te, "chunked", 7) == 0;
  r->close = conn && strncasecmp(conn, "close", 5) == 0;
  return true;
}

static bool read_chunked_body(struct client *c, struct response *r) {
  char line[256];
  size_t cap = 1 << 16;
  r->body = malloc(cap);
  for (int chunks = 0; r->body && chunks < 10000000; chunks++) {
    if (!take_line(c, line, sizeof line))
      return false;
    size_t size = strtoul(line, NULL, 16);
    if (size == 0)
      return take_line(c, line, sizeof line) && line[0] == '\0';
    while (r->body_len + size > cap)
      cap *= 2;
    char *grown = realloc(r->body, cap);
    if (!grown)
      return false;
    r->body = grown;
    if (!client_take(c, r->body + r->body_len, size) ||
        !take_line(c, line, sizeof line) || line[0] != '\0')
      return false;
    r->body_len += size;
  }
  return false;
}

static bool read_response(struct client *c, struct response *r,
                          bool head_request) {
  free(r->body);
  r->body = NULL;
  r->body_len = 0;
  if (!read_head(c, r))
    return false;
  bool bodiless = head_request || r->status == 204 || r->status == 304;
  if (bodiless)
    return true;
  if (r->chunked)
    return read_chunked_body(c, r);
  if (r->content_length < 0)
    return false; /* close-delimited bodies are read by the test itself */
  r->body = malloc((size_t)r->content_length + 1);
  r->body_len = (size_t)r->content_length;
  return r->body && client_take(c, r->body, r->body_len);
}

static struct response *response_new(void) {
  return calloc(1, sizeof(struct response));
}

static void response_free(struct response *r) {
  if (r)
    free(r->body);
  free(r);
}

static bool body_is_pattern(const char *body, size_t len) {
  char expect[4096];
  for (size_t done = 0; done < len;) {
    size_t n = len - done < sizeof expect ? len - done : sizeof expect;
    ts_fill_pattern(expect, done, n);
    if (memcmp(body + done, expect, n) != 0)
      return false;
    done += n;
  }
  return true;
}

static bool get(struct client *c, struct response *r, const char *target) {
  char req[1024];
  snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
           target);
  return send_str(c, req) && read_response(c, r, false);
}

/* --- tests ---------------------------------------------------------------- */

static bool test_pattern_function(void) {
  char buf[80];
  ts_fill_pattern(buf, 0, 40);
  CHECK(memcmp(buf, "0123456789abcdefghijklmnopqrstuvwxyz0123", 40) == 0);
  ts_fill_pattern(buf, 35, 2);
  CHECK(buf[0] == 'z' && buf[1] == '0');
  return true;
}

static bool test_bytes(int port) {
  struct client c;
  struct response *r = response_new();
  CHECK(r && client_open(&c, port));
  bool ok = get(&c, r, "/bytes/100");
  client_close(&c);
  CHECK(ok && r->status == 200 && r->content_length == 100);
  CHECK(!r->close && body_is_pattern(r->body, r->body_len));
  response_free(r);
  return true;
}

static bool test_keep_alive(struct ts_server *s, int port) {
  struct ts_stats before, after;
  struct client c;
  struct response *r = response_new();
  ts_get_stats(s, &before);
  CHECK(r && client_open(&c, port));
  CHECK(get(&c, r, "/bytes/10") && r->status == 200 && r->body_len == 10);
  CHECK(get(&c, r, "/bytes/36000") && r->body_len == 36000);
  CHECK(body_is_pattern(r->body, r->body_len));
  client_close(&c);
  ts_get_stats(s, &after);
  CHECK(after.accepted == before.accepted + 1);
  CHECK(after.requests == before.requests + 2);
  response_free(r);
  return true;
}

/* /chunked/1000/7: 142 chunks of 7 and one of 6, checked byte for byte. */
static bool test_chunked_raw(int port) {
  struct client c;
  struct response *r = response_new();
  char line[256];
  CHECK(r && client_open(&c, port));
  CHECK(send_str(&c, "GET /chunked/1000/7 HTTP/1.1\r\nHost: x\r\n\r\n"));
  CHECK(read_head(&c, r) && r->chunked && r->content_length == -1);
  size_t offset = 0;
  for (int i = 0; i < 143; i++) {
    size_t want = i < 142 ? 7 : 6;
    char data[16], expect[16];
    CHECK(take_line(&c, line, sizeof line));
    CHECK(strcmp(line, want == 7 ? "7" : "6") == 0);
    CHECK(client_take(&c, data, want + 2));
    ts_fill_pattern(expect, offset, want);
    CHECK(memcmp(data, expect, want) == 0);
    CHECK(memcmp(data + want, "\r\n", 2) == 0);
    offset += want;
  }
  char end[5];
  CHECK(client_take(&c, end, 5) && memcmp(end, "0\r\n\r\n", 5) == 0);
  CHECK(send_str(&c, "GET /chunked/10/4?trailer HTTP/1.1\r\nHost: x\r\n\r\n"));
  CHECK(read_head(&c, r) && r->chunked);
  const char tail[] = "4\r\n0123\r\n4\r\n4567\r\n2\r\n89\r\n"
                      "0\r\nX-Trailer: yes\r\n\r\n";
  char got[sizeof tail - 1];
  CHECK(client_take(&c, got, sizeof got) && memcmp(got, tail, sizeof got) == 0);
  client_close(&c);
  response_free(r);
  return true;
}

static bool test_status_no_body(int port) {
  struct client c;
  struct response *r = response_new();
  CHECK(r && client_open(&c, port));
  CHECK(get(&c, r, "/status/204") && r->status == 204);
  CHECK(r->content_length == -1 && strstr(r->head, "204 No Content"));
  CHECK(c.off == c.len); /* nothing after the head */
  /* The next response must follow at once: no stray body bytes between. */
  CHECK(get(&c, r, "/status/503") && r->status == 503);
  CHECK(r->content_length == 0);
  CHECK(get(&c, r, "/nope") && r->status == 404 && r->content_length == 0);
  CHECK(get(&c, r, "/bytes/x") && r->status == 404);
  client_close(&c);
  response_free(r);
  return true;
}

static bool test_delay(int port) {
  struct client c;
  struct response *r = response_new();
  CHECK(r && client_open(&c, port));
  double start = now_ms();
  CHECK(get(&c, r, "/delay/50/bytes/1") && r->status == 200);
  double took = now_ms() - start;
  CHECK(took >= 50.0 && took < 2000.0);
  CHECK(r->body_len == 1 && r->body[0] == '0');
  start = now_ms();
  CHECK(get(&c, r, "/drip/3/20") && r->body_len == 3);
  CHECK(now_ms() - start >= 60.0 && memcmp(r->body, "012", 3) == 0);
  client_close(&c);
  response_free(r);
  return true;
}

static bool test_echo(int port) {
  struct client c;
  struct response *r = response_new();
  CHECK(r && client_open(&c, port));
  CHECK(send_str(&c, "POST /echo?q=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "X-Test: one two\r\nX-Empty:\r\n"
                     "Content-Length: 12\r\n\r\nhello\r\nworld"));
  CHECK(read_response(&c, r, false) && r->status == 200);
  const char want[] = "POST /echo?q=1\nHost: 127.0.0.1\nX-Test: one two\n"
                      "X-Empty: \nContent-Length: 12\n\nhello\r\nworld";
  CHECK(r->body_len == sizeof want - 1);
  CHECK(memcmp(r->body, want, sizeof want - 1) == 0);
  /* A chunked request body, and 100 Continue before it is sent. */
  CHECK(send_str(&c, "PUT /echo HTTP/1.1\r\nHost: h\r\n"
                     "Expect: 100-continue\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n"));
  char line[128];
  CHECK(take_line(&c, line, sizeof line));
  CHECK(strcmp(line, "HTTP/1.1 100 Continue") == 0);
  CHECK(take_line(&c, line, sizeof line) && line[0] == '\0');
  CHECK(send_str(&c, "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"));
  CHECK(read_response(&c, r, false) && r->status == 200);
  const char want2[] = "PUT /echo\nHost: h\nExpect: 100-continue\n"
                       "Transfer-Encoding: chunked\n\nabcde";
  CHECK(r->body_len == sizeof want2 - 1);
  CHECK(memcmp(r->body, want2, sizeof want2 - 1) == 0);
  client_close(&c);
  response_free(r);
  return true;
}

static bool test_max_requests(void) {
  struct ts_config cfg = {.max_requests_per_conn = 2};
  struct ts_server *s = ts_start(&cfg);
  struct client c;
  struct response *r = response_new();
  CHECK(s && r && client_open(&c, ts_port(s)));
  CHECK(get(&c, r, "/bytes/5") && !r->close);
  CHECK(get(&c, r, "/bytes/5") && r->close);
  CHECK(client_sees_eof(&c));
  client_close(&c);
  struct ts_stats st;
  ts_get_stats(s, &st);
  CHECK(st.requests == 2 && st.closed_by_server == 1);
  ts_stop(s);
  response_free(r);
  return true;
}

static bool test_connection_close(int port) {
  struct client c;
  struct response *r = response_new();
  CHECK(r && client_open(&c, port));
  CHECK(send_str(&c, "GET /bytes/3 HTTP/1.1\r\nHost: x\r\n"
                     "Connection: close\r\n\r\n"));
  CHECK(read_response(&c, r, false) && r->close && r->body_len == 3);
  CHECK(client_sees_eof(&c));
  client_close(&c);
  response_free(r);
  return true;
}

static bool run_concurrent(int port, struct client *cs, struct response *r) {
  for (int i = 0; i < CONCURRENT; i++)
    CHECK(client_open(&cs[i], port));
  char req[128];
  for (int i = 0; i < CONCURRENT; i++) {
    snprintf(req, sizeof req, "GET /bytes/%d HTTP/1.1\r\nHost: x\r\n\r\n",
             i + 1);
    CHECK(send_str(&cs[i], req));
  }
  for (int i = 0; i < CONCURRENT; i++) {
    CHECK(read_response(&cs[i], r, false) && r->status == 200);
    CHECK(r->body_len == (size_t)i + 1);
    CHECK(body_is_pattern(r->body, r->body_len));
  }
  return true;
}

static bool test_concurrent(struct ts_server *s, int port) {
  struct client *cs = calloc(CONCURRENT, sizeof *cs);
  struct response *r = response_new();
  struct ts_stats before, after;
  CHECK(cs && r);
  for (int i = 0; i < CONCURRENT; i++)
    cs[i].fd = -1;
  ts_get_stats(s, &before);
  bool ok = run_concurrent(port, cs, r);
  ts_get_stats(s, &after);
  for (int i = 0; i < CONCURRENT; i++)
    client_close(&cs[i]);
  free(cs);
  response_free(r);
  CHECK(ok);
  CHECK(after.accepted == before.accepted + CONCURRENT);
  CHECK(after.requests == before.requests + CONCURRENT);
  /* Every one closed, ours and those the earlier tests' clients closed:
   * while one is open, wait for the server's next close (an event). */
  for (int closes = 0; closes <= CONCURRENT + 64; closes++) {
    ts_get_stats(s, &after);
    if (after.open_conns == 0 ||
        !ts_wait(s, TS_CLOSED, after.closed + 1, 5000))
      break;
  }
  ts_get_stats(s, &after); /* not one taken in the middle of a close */
  CHECK(after.open_conns == 0);
  return true;
}

/* Three requests in one write, the first delayed: answers stay in order. */
static bool test_pipelining(int port) {
  struct client c;
  struct response *r = response_new();
  CHECK(r && client_open(&c, port));
  CHECK(send_str(&c, "GET /delay/30/bytes/2 HTTP/1.1\r\nHost: x\r\n\r\n"
                     "GET /status/201 HTTP/1.1\r\nHost: x\r\n\r\n"
                     "POST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"
                     "HEAD /bytes/50 HTTP/1.1\r\n\r\n"
                     "GET /bytes/1 HTTP/1.1\r\n\r\n"));
  CHECK(read_response(&c, r, false) && r->status == 200 && r->body_len == 2);
  CHECK(read_response(&c, r, false) && r->status == 201);
  CHECK(read_response(&c, r, false) && r->status == 200);
  CHECK(r->body_len == 32 && memcmp(r->body, "POST /echo\n", 11) == 0);
  CHECK(read_response(&c, r, true) && r->content_length == 50);
  CHECK(read_response(&c, r, false) && r->body_len == 1);
  client_close(&c);
  response_free(r);
  return true;
}

/* Big bodies outgrow the socket buffers; a late reader forces EAGAIN. */
static bool test_large_bodies(int port) {
  struct client c;
  struct response *r = response_new();
  CHECK(r && client_open(&c, port));
  CHECK(send_str(&c, "GET /bytes/5000000 HTTP/1.1\r\nHost: x\r\n\r\n"));
  sleep_ms(100);
  CHECK(read_response(&c, r, false) && r->body_len == 5000000);
  CHECK(body_is_pattern(r->body, r->body_len));
  CHECK(get(&c, r, "/chunked/3000000/100000") && r->body_len == 3000000);
  CHECK(body_is_pattern(r->body, r->body_len));
  CHECK(get(&c, r, "/big-headers/100000") && r->status == 200);
  const char *big = header_value(r->head, "X-Big");
  CHECK(big && strspn(big, "a") == 100000);
  CHECK(get(&c, r, "/many-headers/100") && header_value(r->head, "X-H99"));
  CHECK(get(&c, r, "/headers?X-A=1&Connection=X-B,X-C") && r->status == 200);
  CHECK(header_value(r->head, "X-A") &&
        !strncmp(header_value(r->head, "Connection"), "X-B,X-C\r\n", 9));
  CHECK(get(&c, r, "/headers?=1") && r->status == 404);
  client_close(&c);
  response_free(r);
  return true;
}

/* Reads everything up to EOF into buf; returns the count, -1 on error. */
static long read_to_eof(struct client *c, char *buf, size_t cap) {
  size_t got = 0;
  for (int i = 0; i < 10000; i++) {
    if (c->off == c->len) {
      ssize_t n = client_fill(c);
      if (n == 0)
        return (long)got;
      if (n < 0)
        return -1;
    }
    size_t k = c->len - c->off;
    if (got + k > cap)
      return -1;
    memcpy(buf + got, c->buf + c->off, k);
    got += k;
    c->off = c->len;
  }
  return -1;
}

static bool expect_raw(int port, const char *target, const char *want) {
  struct client c;
  char req[256], got[1024];
  CHECK(client_open(&c, port));
  snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", target);
  CHECK(send_str(&c, req));
  long n = read_to_eof(&c, got, sizeof got);
  client_close(&c);
  CHECK(n == (long)strlen(want) && memcmp(got, want, (size_t)n) == 0);
  return true;
}

static bool test_broken_responses(int port) {
  CHECK(expect_raw(port, "/malformed/status", "HTTP/1.1 2x0 Bad\r\n\r\n"));
  CHECK(expect_raw(port, "/malformed/header",
                   "HTTP/1.1 200 OK\r\nBad header line\r\n\r\n"));
  CHECK(expect_raw(port, "/close-now", ""));
  CHECK(expect_raw(port, "/partial/10/4",
                   "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123"));
  CHECK(expect_raw(port, "/close-delimited/5",
                   "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n01234"));
  CHECK(expect_raw(port, "/chunk-overflow",
                   "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "ffffffffffffffffff\r\n"));
  return true;
}

static bool test_odd_routes(int port) {
  struct client c;
  struct response *r = response_new();
  CHECK(r && client_open(&c, port));
  CHECK(get(&c, r, "/redirect/307?to=http://127.0.0.1:1/x?a=b&c=d"));
  CHECK(r->status == 307 && r->content_length == 0);
  CHECK(strncmp(header_value(r->head, "Location"),
                "http://127.0.0.1:1/x?a=b&c=d\r\n", 30) == 0);
  CHECK(get(&c, r, "/1xx/7") && r->status == 200 && r->body_len == 7);
  CHECK(get(&c, r, "/too-long/2/5") && r->body_len == 2);
  char extra[3];
  CHECK(client_take(&c, extra, 3) && memcmp(extra, "234", 3) == 0);
  CHECK(get(&c, r, "/bytes/1") && r->status == 200); /* still open */
  client_close(&c);
  /* /rst/N: the head and N bytes, then a reset instead of the rest. */
  CHECK(client_open(&c, port));
  CHECK(send_str(&c, "GET /rst/1000 HTTP/1.1\r\nHost: x\r\n\r\n"));
  CHECK(read_head(&c, r) && r->content_length == 2000);
  char body[2000];
  CHECK(!client_take(&c, body, 2000) && errno == ECONNRESET);
  client_close(&c);
  response_free(r);
  return true;
}

/* /early/, /close-at-head and /early-head/ answer (or close) as the
 * request's head arrives: here no byte of the announced body is ever
 * sent, and the answers come all the same. */
static bool test_answers_before_the_body(int port) {
  static const char head[] = " HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n";
  struct client c;
  struct response *r = response_new();
  char body[5];

  CHECK(r && client_open(&c, port));
  CHECK(send_str(&c, "POST /early/413") && send_str(&c, head));
  CHECK(read_head(&c, r) && r->status == 413 && r->content_length == 0);
  CHECK(r->close);
  client_close(&c);
  CHECK(client_open(&c, port));
  CHECK(send_str(&c, "POST /early/401?close") && send_str(&c, head));
  CHECK(read_head(&c, r) && r->status == 401 && r->close);
  CHECK(client_sees_eof(&c));
  client_close(&c);
  CHECK(client_open(&c, port));
  CHECK(send_str(&c, "POST /close-at-head") && send_str(&c, head));
  CHECK(client_sees_eof(&c));
  client_close(&c);
  CHECK(client_open(&c, port));
  CHECK(send_str(&c, "POST /early-head/5") && send_str(&c, head));
  CHECK(read_head(&c, r) && r->status == 200 && r->content_length == 5);
  CHECK(send_str(&c, "abc"));
  CHECK(client_take(&c, body, 5) && body_is_pattern(body, 5));
  CHECK(get(&c, r, "/bytes/1") && r->status == 200); /* kept */
  /* Head and body in one write: the request ends within the pause, and
   * the connection reads the next one all the same. */
  CHECK(send_str(&c, "POST /early-head/5 HTTP/1.1\r\nHost: x\r\n"
                     "Content-Length: 3\r\n\r\nabc"));
  CHECK(read_response(&c, r, false) && r->status == 200 && r->body_len == 5);
  CHECK(get(&c, r, "/bytes/1") && r->status == 200);
  client_close(&c);
  response_free(r);
  return true;
}

static bool test_bad_request(struct ts_server *s, int port) {
  struct client c;
  struct response *r = response_new();
  struct ts_stats before, after;
  ts_get_stats(s, &before);
  CHECK(r && client_open(&c, port));
  CHECK(send_str(&c, "GET /bytes/1 HTTP/1.1\r\nHost: x\r\n\r\n"
                     "THIS IS NOT HTTP\r\n\r\n"));
  CHECK(read_response(&c, r, false) && r->status == 200);
  CHECK(read_response(&c, r, false) && r->status == 400 && r->close);
  CHECK(client_sees_eof(&c));
  client_close(&c);
  ts_get_stats(s, &after);
  CHECK(after.requests == before.requests + 1);
  CHECK(after.closed_by_server == before.closed_by_server + 1);
  response_free(r);
  return true;
}

static bool test_idle_close(void) {
  struct ts_config cfg = {.idle_close_ms = 100};
  struct ts_server *s = ts_start(&cfg);
  struct client c;
  struct response *r = response_new();
  CHECK(s && r && client_open(&c, ts_port(s)));
  /* From before the request: the server cannot close sooner than its
   * 150 ms answer plus 100 ms idle, however late this thread runs (a
   * start taken after the answer would shrink under load). */
  double start = now_ms();
  CHECK(get(&c, r, "/delay/150/bytes/1") && r->status == 200);
  CHECK(client_sees_eof(&c));
  double took = now_ms() - start;
  CHECK(took >= 245.0 && took < 5000.0);
  client_close(&c);
  ts_stop(s);
  response_free(r);
  return true;
}

/* ts_wait() returns once the server closed the connection, and the
 * client then sees its EOF; a count not reached is a timeout. */
static bool test_wait_for_events(void) {
  struct ts_config cfg = {.idle_close_ms = 20};
  struct ts_server *s = ts_start(&cfg);
  struct client c;
  struct response *r = response_new();
  CHECK(s && r && client_open(&c, ts_port(s)));
  CHECK(get(&c, r, "/bytes/1") && r->status == 200);
  CHECK(ts_wait(s, TS_REQUESTS, 1, 5000));
  CHECK(ts_wait(s, TS_CLOSED_BY_SERVER, 1, 5000));
  CHECK(client_sees_eof(&c));
  CHECK(!ts_wait(s, TS_CLOSED_BY_SERVER, 2, 50)); /* nothing else to close */
  client_close(&c);
  ts_stop(s);
  response_free(r);
  return true;
}

/* /gather/3/...: nothing is answered until three are held at once. */
static bool test_gather(int port) {
  struct client cs[3];
  struct response *r = response_new();
  CHECK(r);
  for (int i = 0; i < 3; i++) {
    CHECK(client_open(&cs[i], port));
    CHECK(send_str(&cs[i], "GET /gather/3/bytes/5 HTTP/1.1\r\nHost: x\r\n\r\n"));
    if (i < 2) { /* not answered yet: a short read times out */
      struct timeval tv = {0, 100000};
      char byte;
      setsockopt(cs[i].fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      CHECK(recv(cs[i].fd, &byte, 1, MSG_PEEK) < 0);
      tv.tv_sec = IO_TIMEOUT_S;
      tv.tv_usec = 0;
      setsockopt(cs[i].fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
  }
  for (int i = 0; i < 3; i++) {
    CHECK(read_response(&cs[i], r, false) && r->status == 200);
    CHECK(r->body_len == 5 && body_is_pattern(r->body, r->body_len));
    client_close(&cs[i]);
  }
  response_free(r);
  return true;
}

/* /close-silently/...: no "Connection: close", then EOF; and a server
 * that announces its idle close says "Keep-Alive: timeout=2". */
static bool test_close_silently_and_announce(int port) {
  struct ts_config cfg = {.idle_close_ms = 2500, .announce_idle_close = true};
  struct ts_server *s = ts_start(&cfg);
  struct client c;
  struct response *r = response_new();
  const char *ka;
  CHECK(s && r && client_open(&c, port));
  CHECK(send_str(&c, "GET /close-silently/bytes/3 HTTP/1.1\r\nHost: x\r\n"
                     "Connection: close\r\n\r\n"));
  CHECK(read_response(&c, r, false) && r->status == 200 && !r->close);
  CHECK(r->body_len == 3 && client_sees_eof(&c));
  client_close(&c);
  CHECK(client_open(&c, ts_port(s)));
  CHECK(get(&c, r, "/bytes/1") && r->status == 200);
  ka = header_value(r->head, "Keep-Alive");
  CHECK(ka && strncmp(ka, "timeout=2", 9) == 0);
  client_close(&c);
  ts_stop(s);
  response_free(r);
  return true;
}

/* Connections left open, one mid-response, must be freed by ts_stop. */
static bool test_stop_with_open_connections(void) {
  struct ts_server *s = ts_start(NULL);
  struct client a, b, d;
  CHECK(s && client_open(&a, ts_port(s)) && client_open(&b, ts_port(s)));
  CHECK(client_open(&d, ts_port(s)));
  CHECK(send_str(&a, "GET /never HTTP/1.1\r\n\r\n"));
  CHECK(send_str(&b, "GET /delay/60000/bytes/1 HTTP/1.1\r\n\r\n"));
  CHECK(send_str(&d, "GET /bytes/100000000 HTTP/1.1\r\n\r\n"));
  CHECK(ts_wait(s, TS_OPEN_CONNS, 3, 5000));
  /* The 100 MB answer is being sent (bytes at the client) when it stops. */
  char some[1];
  CHECK(client_take(&d, some, 1));
  ts_stop(s);
  client_close(&a);
  client_close(&b);
  client_close(&d);
  errno = 0;
  CHECK(ts_start(&(struct ts_config){.idle_close_ms = -1}) == NULL);
  CHECK(errno == EINVAL);
  return true;
}

/* Runs one test and reports it; tests run in this order, one at a time. */
static void run(const char *name, bool ok) { tap_result(name, ok); }

int main(void) {
  struct ts_server *s = ts_start(NULL);
  if (!s) {
    perror("ts_start");
    return 1;
  }
  int port = ts_port(s);
  run("pattern", test_pattern_function());
  run("bytes", test_bytes(port));
  run("keep-alive", test_keep_alive(s, port));
  run("chunked", test_chunked_raw(port));
  run("status", test_status_no_body(port));
  run("delay", test_delay(port));
  run("echo", test_echo(port));
  run("max-requests", test_max_requests());
  run("connection-close", test_connection_close(port));
  run("concurrent", test_concurrent(s, port));
  run("pipelining", test_pipelining(port));
  run("large-bodies", test_large_bodies(port));
  run("broken", test_broken_responses(port));
  run("odd-routes", test_odd_routes(port));
  run("answers-before-the-body", test_answers_before_the_body(port));
  run("bad-request", test_bad_request(s, port));
  run("idle-close", test_idle_close());
  run("wait-for-events", test_wait_for_events());
  run("gather", test_gather(port));
  run("close-silently, keep-alive timeout", test_close_silently_and_announce(port));
  run("stop-open", test_stop_with_open_connections());
  ts_stop(s);
  return tap_done() || failures ? 1 : 0;
}
