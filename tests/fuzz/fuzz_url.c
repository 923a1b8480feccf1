/*
 * libFuzzer target 2: URL and option input. The input is split at NUL
 * bytes into a URL, a redirect Location, a method, a header name and
 * value and a local address; each goes through the same setters and
 * parsers an application's input does. Every refusal carries a detail;
 * nothing crashes or leaks.
 *
 * What follows the sixth NUL, when there is any, drives a request against
 * the test server: options (timeouts up to LONG_MAX, low speed, header
 * size, IP version, local address, the header above or a Content-Length or
 * Transfer-Encoding of its own) and a streamed body with an announced
 * length (or none: chunked) whose read callback follows a script: give
 * some bytes, give all it is asked for (one more than is left, at the
 * end), claim more than it was asked for, abort, end early. The request
 * (T1) and a plain GET after it (T2) run on a multi of their own; the
 * same options with the same length in a buffer (P, and T2 again) run
 * first on another, as the reference of what a well-behaved request sends.
 * Then, with every connection closed and its bytes counted by the server:
 *   - no byte past the announced length reaches the server: T1's phase
 *     sends exactly the reference's bytes when T1 succeeds, and never more
 *     when it fails;
 *   - a request cut short (the callback broke the length or aborted) is
 *     followed only by the close of its connection: the server saw no
 *     request from it and refused nothing, and T2 did not get its
 *     connection;
 *   - a success sent exactly the announced length, and the server echoed
 *     the bytes the callback gave;
 *   - every result agrees with its message and a failure says why;
 *   - nothing hangs (a transfer that does not end is a finding).
 */
#include "common.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http1.h"
#include "testserver.h"
#include "transfer.h"
#include "url.h"

/* A finding: says which rule broke, then stops the run. */
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "fuzz_url: check failed at line %d: %s\n", __LINE__,    \
              #cond);                                                          \
      __builtin_trap();                                                        \
    }                                                                          \
  } while (0)

/* A refusal says why (a running transfer is never asked here). */
static bool says_why(const xfer *x, xfer_code rc) {
  return rc == XFER_OK || *xfer_get_error_detail(x);
}

static const char *next(const uint8_t **p, const uint8_t *end, char *buf,
                        size_t cap) {
  size_t n = 0;

  while (*p < end && **p && n + 1 < cap)
    buf[n++] = (char)*(*p)++;
  if (*p < end)
    (*p)++;
  buf[n] = '\0';
  return buf;
}

/* --- a streamed request against the test server -------------------------- */


#define MAX_STEPS 8

enum step_kind { GIVE_SOME, GIVE_ASKED, CLAIM_MORE, ABORT, END, STEP_KINDS };

struct script {
  int nsteps;
  struct {
    uint8_t kind;
    uint16_t n;
  } steps[MAX_STEPS];
  int at;
  uint64_t given; /* bytes accepted so far (the callback's own count) */
};

struct request_opts {
  int64_t announced; /* -1: chunked */
  const char *method;
  int ip_version;
  const char *local;
  const char *hname, *hvalue; /* a request header, or NULL */
  long timeout_ms, connect_timeout_ms, low_bytes, low_period_ms;
  size_t max_header;
};

static long body_script(char *buf, size_t len, void *userp) {
  struct script *s = userp;
  size_t n;

  if (s->at >= s->nsteps)
    return 0;
  switch (s->steps[s->at].kind % STEP_KINDS) {
  case GIVE_SOME:
    n = s->steps[s->at].n < len ? s->steps[s->at].n : len;
    break;
  case GIVE_ASKED:
    n = len;
    break;
  case CLAIM_MORE:
    s->at++;
    return (long)len + 1;
  case ABORT:
    s->at++;
    return -1;
  default:
    s->at++;
    return 0;
  }
  s->at++;
  ts_fill_pattern(buf, (size_t)s->given, n);
  s->given += n;
  return (long)n;
}

/* Sets o on x; a refusal must say why. */
static void apply(xfer *x, const struct request_opts *o) {
  CHECK(says_why(x, xfer_set_method(x, o->method)));
  CHECK(says_why(x, xfer_set_ip_version(x, o->ip_version)));
  if (o->local)
    CHECK(says_why(x, xfer_set_local_address(x, o->local)));
  if (o->hname)
    CHECK(says_why(x, xfer_add_header(x, o->hname, o->hvalue)));
  /* Every time value given is valid, the largest ones included. */
  CHECK(xfer_set_timeout_ms(x, o->timeout_ms) == XFER_OK);
  CHECK(xfer_set_connect_timeout_ms(x, o->connect_timeout_ms) == XFER_OK);
  CHECK(xfer_set_low_speed(x, o->low_bytes, o->low_period_ms) == XFER_OK);
  if (o->max_header)
    xfer_set_max_header_size(x, o->max_header);
}

/* Runs x on m to its end: its result, checked against its message. A
 * transfer that does not end within 30 s is a finding (nothing the script
 * does may leave a request waiting for bytes that never come). */
static xfer_code run(xfer_multi *m, xfer *x) {
  const xfer_msg *msg;
  int running = 1;

  CHECK(xfer_multi_add(m, x) == XFER_M_OK);
  for (int i = 0; i < 3000 && running; i++) {
    xfer_multi_perform(m, &running);
    if (running)
      xfer_multi_poll(m, 10, NULL);
  }
  CHECK(!running); /* it ended */
  msg = xfer_multi_info_read(m, NULL);
  CHECK(msg && msg->x == x && msg->result == xfer_get_result(x));
  CHECK(says_why(x, msg->result));
  xfer_multi_remove(m, x);
  return msg->result;
}

struct phase {
  xfer_code first, get;
  bool get_reused;
  long bytes, requests, refused; /* what the server saw */
};

static size_t sink(const char *d, size_t n, void *u) {
  struct xfer__buf *b = u;
  CHECK(xfer__buf_append(b, d, n));
  return n;
}

/* Runs `first` and then a plain GET on a pool and multi of their own, then
 * closes every connection and waits until the server has closed them all
 * too: its counters then hold every byte the phase sent. */
static void run_phase(struct ts_server *srv, xfer *first, struct phase *out) {
  struct ts_stats before, after;
  xfer_pool_stats ps;
  xfer_pool *pool = xfer_pool_new(NULL);
  xfer_multi *m = xfer_multi_new(pool);
  xfer *get = xfer_new();
  char url[64];

  CHECK(pool && m && get);
  ts_get_stats(srv, &before);
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/bytes/1", ts_port(srv));
  xfer_set_url(get, url);
  out->first = run(m, first);
  out->get = run(m, get);
  out->get_reused = xfer_get_reused(get);
  xfer_free(get);
  xfer_multi_destroy(m);
  xfer_pool_get_stats(pool, &ps);
  xfer_pool_destroy(pool);
  CHECK(ts_wait(srv, TS_CLOSED, before.closed + (long)ps.opened_total, 30000));
  ts_get_stats(srv, &after);
  out->bytes = after.bytes_in - before.bytes_in;
  out->requests = after.requests - before.requests;
  out->refused = after.closed_by_server - before.closed_by_server;
}

static struct ts_server *server(void) {
  static struct ts_server *srv;
  if (!srv)
    srv = ts_start(NULL);
  CHECK(srv);
  return srv;
}

static const uint8_t *take(const uint8_t **p, const uint8_t *end, size_t n) {
  static const uint8_t zeros[8];
  const uint8_t *at = *p;
  if ((size_t)(end - *p) < n)
    return zeros;
  *p += n;
  return at;
}

static void streamed_request(const uint8_t *p, const uint8_t *end,
                             const char *hname, const char *hvalue) {
  static const char *const methods[] = {"POST", "PUT", "PATCH",
                                        "GET",  "HEAD", "DELETE"};
  static const char *const locals[] = {NULL, "127.0.0.1", "::1", "x"};
  static const long times[] = {0, 1, 50, 5000, LONG_MAX / 2, LONG_MAX};
  static const size_t header_sizes[] = {0, 64, 300, 100000, SIZE_MAX};
  struct ts_server *srv = server();
  struct request_opts o = {0};
  struct script sc = {0};
  struct phase ref = {0}, got = {0};
  struct xfer__buf echoed = {0};
  const uint8_t *b = take(&p, end, 8);
  char url[64], cl[32];
  bool cut_short, reference;
  xfer_code r;
  xfer *x;

  o.announced = b[0] & 0x80 ? -1 : (int64_t)((b[0] & 0x7f) << 8 | b[1]);
  o.method = methods[b[2] % XFER__ARRAY_SIZE(methods)];
  o.ip_version = (int[]){0, 4, 6, 0}[b[3] & 3];
  o.local = locals[(b[3] >> 2) & 3];
  switch ((b[3] >> 4) & 3) {
  case 1:
    o.hname = hname, o.hvalue = hvalue;
    break;
  case 2:
    snprintf(cl, sizeof(cl), "%lld", (long long)o.announced + (b[3] >> 6));
    o.hname = "Content-Length", o.hvalue = cl;
    break;
  case 3:
    o.hname = "Transfer-Encoding", o.hvalue = "chunked";
    break;
  }
  o.timeout_ms = times[b[4] % XFER__ARRAY_SIZE(times)];
  o.connect_timeout_ms = times[b[5] % XFER__ARRAY_SIZE(times)];
  o.low_bytes = b[6] & 0x80 ? times[b[6] % XFER__ARRAY_SIZE(times)] : 0;
  o.low_period_ms = o.low_bytes ? times[1 + b[6] % 5] : 0;
  o.max_header = header_sizes[b[7] % XFER__ARRAY_SIZE(header_sizes)];
  while (sc.nsteps < MAX_STEPS && end - p >= 3) {
    const uint8_t *st = take(&p, end, 3);
    sc.steps[sc.nsteps].kind = st[0];
    sc.steps[sc.nsteps++].n = (uint16_t)(st[1] << 8 | st[2]);
  }
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/echo", ts_port(srv));

  /* The reference: the same request with its body in a buffer. */
  reference = o.announced >= 0;
  if (reference) {
    char *body = malloc((size_t)o.announced + 1);
    x = xfer_new();
    CHECK(body && x);
    ts_fill_pattern(body, 0, (size_t)o.announced);
    xfer_set_url(x, url);
    apply(x, &o);
    xfer_set_body(x, body, (size_t)o.announced);
    run_phase(srv, x, &ref);
    xfer_free(x);
    free(body);
  }

  x = xfer_new();
  xfer_set_url(x, url);
  apply(x, &o);
  CHECK(xfer_set_body_cb(x, body_script, &sc, o.announced) == XFER_OK);
  xfer_set_write_cb(x, sink, &echoed);
  run_phase(srv, x, &got);
  r = got.first;

  if (r == XFER_OK) {
    const char *text = echoed.data, *body;
    /* A success sent the announced length... */
    CHECK(o.announced < 0 || sc.given == (uint64_t)o.announced);
    if (strcmp(o.method, "HEAD") != 0) {
      body = text ? memmem(text, echoed.len, "\n\n", 2) : NULL;
      CHECK(body);
      body += 2;
      for (size_t i = 0; i < (size_t)(text + echoed.len - body); i++) {
        char want;
        ts_fill_pattern(&want, i, 1);
        CHECK(body[i] == want);
      }
      /* ... and the server got what the callback gave. */
      CHECK((uint64_t)(text + echoed.len - body) == sc.given);
    }
  } else if (got.get == XFER_OK) {
    CHECK(!got.get_reused); /* a failed request's connection went back */
  }
  cut_short = r == XFER_E_BODY_LENGTH || r == XFER_E_READ_CALLBACK;
  /* Nothing followed the bytes of a request cut short but its close: the
   * server refused nothing and saw no request but T2's, and T1's own only
   * when all its announced bytes had gone out before the callback broke
   * the length (a callback is asked for one byte more than is left, so
   * one with more says so before the last bytes are sent, unless it gave
   * them exactly in an earlier call). */
  if (cut_short && got.get == XFER_OK) {
    bool whole = o.announced >= 0 && sc.given >= (uint64_t)o.announced;
    CHECK(got.refused == 0);
    CHECK(got.requests == 1 || (whole && got.requests == 2));
  }
  if (reference && ref.first == XFER_OK && ref.get == XFER_OK &&
      got.get == XFER_OK) {
    /* No byte past the announced length. */
    CHECK(got.bytes <= ref.bytes);
    if (r == XFER_OK)
      CHECK(got.bytes == ref.bytes);
  }
  xfer_free(x);
  xfer__buf_free(&echoed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const uint8_t *p = data, *end = data + size;
  char url[1024], loc[1024], method[64], name[128], value[256], addr[64];
  char detail[256];
  struct xfer__url base, hop;
  xfer *x;

  next(&p, end, url, sizeof(url));
  next(&p, end, loc, sizeof(loc));
  next(&p, end, method, sizeof(method));
  next(&p, end, name, sizeof(name));
  next(&p, end, value, sizeof(value));
  next(&p, end, addr, sizeof(addr));

  memset(&base, 0, sizeof(base));
  memset(&hop, 0, sizeof(hop));
  detail[0] = '\0';
  if (xfer__url_parse(&base, url, detail, sizeof(detail)) == XFER_OK) {
    CHECK(base.host && base.target);
    detail[0] = '\0';
    CHECK(xfer__url_resolve(&hop, &base, loc, detail, sizeof(detail)) ==
              XFER_OK ||
          detail[0]);
    xfer__url_free(&hop);
  } else {
    CHECK(detail[0]);
  }
  xfer__url_free(&base);

  x = xfer_new();
  if (!x)
    return 0;
  CHECK(says_why(x, xfer_set_url(x, url)));
  xfer_set_method(x, method);
  xfer_add_header(x, name, value);
  xfer_set_local_address(x, addr);
  xfer_free(x);

  if (end - p >= 8)
    streamed_request(p, end, name, value);
  return 0;
}
