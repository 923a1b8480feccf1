/* HTTP/1.1 request heads and the llhttp response parser (see http1.h). */
#include "common.h"

#include <assert.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "http1.h"
#include "mem.h"

/* --- buffers --------------------------------------------------------------- */

void xfer__buf_free(struct xfer__buf *b) {
  xfer__free(b->data);
  memset(b, 0, sizeof(*b));
}

bool xfer__buf_reserve(struct xfer__buf *b, size_t want) {
  size_t cap = b->cap ? b->cap : 256;
  char *grown;

  if (want + 1 <= b->cap)
    return true;
  while (cap < want + 1)
    cap *= 2;
  grown = xfer__realloc(b->data, cap);
  if (!grown)
    return false;
  b->data = grown;
  b->cap = cap;
  return true;
}

static bool buf_puts(struct xfer__buf *b, const char *s) {
  return xfer__buf_append(b, s, strlen(s));
}

/* --- request head ----------------------------------------------------------- */

/* The user's header lines ("Name: value\r\n" each, as xfer_add_header()
 * stored them), one by one. */
struct header_walk {
  const char *at, *end;
};

static void walk_start(struct header_walk *w, const struct xfer__buf *headers) {
  w->at = headers->data; /* NULL when no header was added */
  w->end = w->at ? w->at + headers->len : NULL;
}

/* The next line as [*line, *stop) without its CR LF, *after past it; false
 * at the end. */
static bool walk_next(struct header_walk *w, const char **line,
                      const char **stop, const char **after) {
  const char *crlf;

  if (!w->at || w->at >= w->end)
    return false;
  crlf = memmem(w->at, (size_t)(w->end - w->at), "\r\n", 2);
  *line = w->at;
  *stop = crlf ? crlf : w->end;
  *after = crlf ? crlf + 2 : w->end;
  w->at = *after;
  return true;
}

/* Is `line` (up to its CR LF) a header named `name`? */
static bool line_is(const char *line, const char *stop, const char *name) {
  size_t n = strlen(name);
  return (size_t)(stop - line) > n && strncasecmp(line, name, n) == 0 &&
         line[n] == ':';
}

/* The value of header line [line, stop), without leading and trailing
 * blanks. */
static void line_value(const char *line, const char *stop, size_t name_len,
                       const char **v, size_t *len) {
  const char *p = line + name_len + 1, *e = stop;

  while (p < e && (*p == ' ' || *p == '\t'))
    p++;
  while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
    e--;
  *v = p;
  *len = (size_t)(e - p);
}

bool xfer__http1_has_header(const struct xfer__buf *headers, const char *name) {
  struct header_walk w;
  const char *line, *stop, *after;

  walk_start(&w, headers);
  while (walk_next(&w, &line, &stop, &after))
    if (line_is(line, stop, name))
      return true;
  return false;
}

/* Is `token` one of the comma-separated tokens of value [v, end)? */
static bool has_token(const char *v, const char *end, const char *token) {
  size_t n = strlen(token);

  while (v < end) {
    const char *comma = memchr(v, ',', (size_t)(end - v));
    const char *stop = comma ? comma : end;

    while (v < stop && (*v == ' ' || *v == '\t'))
      v++;
    while (stop > v && (stop[-1] == ' ' || stop[-1] == '\t'))
      stop--;
    if ((size_t)(stop - v) == n && strncasecmp(v, token, n) == 0)
      return true;
    v = comma ? comma + 1 : end;
  }
  return false;
}

bool xfer__http1_asks_close(const struct xfer__buf *headers) {
  struct header_walk w;
  const char *line, *stop, *after;

  walk_start(&w, headers);
  while (walk_next(&w, &line, &stop, &after))
    if (line_is(line, stop, "Connection") &&
        has_token(line + 11, stop, "close"))
      return true;
  return false;
}

bool xfer__http1_check_framing(const struct xfer__buf *headers,
                               int64_t body_len, char *why, size_t why_len) {
  struct header_walk w;
  const char *line, *stop, *after, *v;
  size_t n;
  /* The decimal length a Content-Length must say (no body: 0). */
  long long want = body_len >= 0 ? (long long)body_len : 0;
  bool host = false, length = false;

  walk_start(&w, headers);
  while (walk_next(&w, &line, &stop, &after)) {
    /* One of each: a server must refuse a request with two Hosts (RFC
     * 9112 3.2), and two lengths frame it two ways for whoever reads the
     * second (a gateway copying a client's headers passes them on). */
    if (line_is(line, stop, "Host")) {
      if (host) {
        snprintf(why, why_len, "more than one Host request header");
        return false;
      }
      host = true;
    } else if (line_is(line, stop, "Content-Length")) {
      char text[24];
      if (length) {
        snprintf(why, why_len, "more than one Content-Length request header");
        return false;
      }
      length = true;
      line_value(line, stop, 14, &v, &n);
      snprintf(text, sizeof(text), "%lld", want);
      if (body_len == -2) {
        snprintf(why, why_len,
                 "a Content-Length header (%.*s) with a streamed body of "
                 "unknown length (sent chunked)",
                 (int)(n < 40 ? n : 40), v);
        return false;
      }
      if (n != strlen(text) || strncmp(v, text, n) != 0) {
        snprintf(why, why_len,
                 "the request header Content-Length: %.*s does not say the "
                 "%lld bytes of the body it sends",
                 (int)(n < 40 ? n : 40), v, want);
        return false;
      }
    } else if (line_is(line, stop, "Transfer-Encoding")) {
      line_value(line, stop, 17, &v, &n);
      if (n != 7 || strncasecmp(v, "chunked", 7) != 0 || body_len != -2) {
        snprintf(why, why_len,
                 "a Transfer-Encoding header (%.*s): only \"chunked\", and "
                 "only with a streamed body of unknown length (size -1)",
                 (int)(n < 40 ? n : 40), v);
        return false;
      }
    }
  }
  return true;
}

/* Does the user's line [line, stop) stay out of this request? The
 * framing ones go where ours say the same (xfer__http1_check_framing()
 * made sure they agree); with no body of ours, a user's
 * "Content-Length: 0" (the only one it allows) stays, so a POST without a
 * body still says its length, unless a redirect dropped the body. On a
 * hop to another origin, the credentials and the Host of the first do
 * not follow. */
static bool left_out(const struct xfer__http1_req *req, const char *line,
                     const char *stop) {
  if (line_is(line, stop, "Transfer-Encoding"))
    return true;
  if (line_is(line, stop, "Content-Length"))
    return req->body_len != -1 || req->body_dropped;
  return req->other_origin && (line_is(line, stop, "Authorization") ||
                               line_is(line, stop, "Cookie") ||
                               line_is(line, stop, "Host"));
}

static bool put_user_headers(struct xfer__buf *out,
                             const struct xfer__http1_req *req) {
  struct header_walk w;
  const char *line, *stop, *after;

  walk_start(&w, req->headers);
  while (walk_next(&w, &line, &stop, &after))
    if (!left_out(req, line, stop) &&
        !xfer__buf_append(out, line, (size_t)(after - line)))
      return false;
  return true;
}

bool xfer__http1_build_head(struct xfer__buf *out,
                            const struct xfer__http1_req *req) {
  char number[32];
  bool ok;

  out->len = 0;
  ok = buf_puts(out, req->method) && buf_puts(out, " ") &&
       buf_puts(out, req->target) && buf_puts(out, " HTTP/1.1\r\n");
  if (ok &&
      (req->other_origin || !xfer__http1_has_header(req->headers, "Host")))
    ok = buf_puts(out, "Host: ") && buf_puts(out, req->authority) &&
         buf_puts(out, "\r\n");
  if (ok && req->headers->len)
    ok = put_user_headers(out, req);
  if (ok && req->body_len >= 0) {
    snprintf(number, sizeof(number), "%lld", (long long)req->body_len);
    ok = buf_puts(out, "Content-Length: ") && buf_puts(out, number) &&
         buf_puts(out, "\r\n");
  }
  if (ok && req->body_len == -2)
    ok = buf_puts(out, "Transfer-Encoding: chunked\r\n");
  return ok && buf_puts(out, "\r\n");
}

/* --- response parser -------------------------------------------------------- */

/*
 * The parse that every response gets checks the head (llhttp), counts its
 * header lines, keeps the block and the first Keep-Alive value, and makes
 * no strings: on_headers_complete pauses llhttp, so that feed() knows where
 * the head ends and copies it. The strings for the getters are made on
 * demand by running llhttp once more over that block with the callbacks of
 * the loader below. llhttp parses in both; nothing here splits HTTP itself.
 */

static struct xfer__http1_resp *resp_of(llhttp_t *p) { return p->data; }

/* Records the response's error and its detail; returns the code. */
__attribute__((format(printf, 3, 0))) XFER__COLD static xfer_code
vrefuse(struct xfer__http1_resp *r, xfer_code code, const char *fmt,
        va_list ap) {
  r->error = code;
  vsnprintf(r->detail, sizeof(r->detail), fmt, ap);
  return code;
}

__attribute__((format(printf, 3, 4))) XFER__COLD static xfer_code
refuse(struct xfer__http1_resp *r, xfer_code code, const char *fmt, ...) {
  va_list ap;

  va_start(ap, fmt);
  vrefuse(r, code, fmt, ap);
  va_end(ap);
  return code;
}

/* The same from inside an llhttp callback: llhttp stops (HPE_USER). */
__attribute__((format(printf, 3, 4))) XFER__COLD static int
fail(struct xfer__http1_resp *r, xfer_code code, const char *fmt, ...) {
  va_list ap;

  va_start(ap, fmt);
  vrefuse(r, code, fmt, ap);
  va_end(ap);
  llhttp_set_error_reason(&r->parser, r->detail);
  return HPE_USER;
}

static int too_large(struct xfer__http1_resp *r) {
  return fail(r, XFER_E_HEADERS_TOO_LARGE,
              "the response headers exceed the limit of %zu bytes%s",
              r->max_header_bytes + r->interim_bytes,
              r->interim_bytes ? " (interim responses' heads included)" : "");
}

/* Trailer lines of a chunked body are not in the head; they count with
 * it against the one limit, as they come (names and values: the
 * whitespace around them costs llhttp time, not us memory). */
static int count_trailer_bytes(struct xfer__http1_resp *r, size_t len) {
  assert(r->headers_done); /* the head is counted exactly, as it is kept */
  r->trailer_bytes += len;
  return r->head.len + r->trailer_bytes <= r->max_header_bytes ? 0
                                                               : too_large(r);
}

/* The reason phrase is made on demand, as the header strings are: llhttp
 * runs over the kept head with these callbacks (reason_settings), and
 * the status line's end pauses it. */
static int reason_piece(llhttp_t *p, const char *at, size_t len) {
  struct xfer__http1_resp *r = resp_of(p);
  size_t room = sizeof(r->reason) - 1 - r->reason_len;
  size_t take = len < room ? len : room;

  memcpy(r->reason + r->reason_len, at, take);
  r->reason_len += (uint32_t)take;
  return 0;
}

static int reason_end(llhttp_t *p) {
  (void)p;
  return HPE_PAUSED;
}

static int on_status_complete(llhttp_t *p) {
  resp_of(p)->status_seen = true;
  return 0;
}

static const char keep_alive_name[] = "keep-alive";
#define KEEP_ALIVE_NAME_LEN (sizeof(keep_alive_name) - 1)

/*
 * Header lines. The head's, run eight times a response, have one callback
 * of their own (head_settings): at the first piece of a name, the line is
 * counted and checked, and the name's first byte tells it from
 * "Keep-Alive". A name that may be Keep-Alive switches the parser to
 * ka_settings for the rest of its line, which add the callbacks that take
 * its value. The trailers' callbacks (body_settings) count lines and bytes
 * against the limits. head_complete() and reset_head() switch between
 * them.
 */
static llhttp_settings_t head_settings, ka_settings, body_settings,
    load_settings, reason_settings;

/* A name may come in pieces. Nearly every name is told from "Keep-Alive"
 * by its first byte; the pieces of one that may be it are matched against
 * the rest of it. Only the first Keep-Alive header counts. */
__attribute__((noinline)) static void
match_keep_alive(struct xfer__http1_resp *r, uint32_t done, const char *at,
                 size_t len) {
  r->name_may_be_ka = !r->ka_seen && done + len <= KEEP_ALIVE_NAME_LEN &&
                      strncasecmp(at, keep_alive_name + done, len) == 0;
  if (r->name_may_be_ka)
    r->parser.settings = &ka_settings;
}

/* llhttp 8.1 passes a line with an empty name (": value") on as an empty
 * name; RFC 9110 names are one token or more. Found by
 * tests/fuzz/fuzz_response. */
static int no_name(struct xfer__http1_resp *r) {
  return fail(r, XFER_E_BAD_HEADER, "a response header line has no name");
}

static int too_many_lines(struct xfer__http1_resp *r) {
  return fail(r, XFER_E_HEADERS_TOO_LARGE,
              "the response has more than %u header lines%s",
              r->max_headers + r->interim_lines,
              r->interim_lines ? " (interim responses' included)" : "");
}

/* A name's first piece begins a line: counted (the caller checked the
 * limit), and whether the bytes fed end inside the name. */
static inline void begin_line(struct xfer__http1_resp *r, const char *at,
                              size_t len) {
  r->line_count++;
  r->name_len = (uint32_t)len;
  r->name_open = at + len == r->feed_end;
}

/* The first piece of a name that head_field() does not settle itself: an
 * empty one (an empty name comes as an empty first piece), one over the
 * line limit, one that may be "Keep-Alive". */
__attribute__((noinline)) static int
head_field_rare(struct xfer__http1_resp *r, const char *at, size_t len) {
  if (len == 0)
    return no_name(r);
  if (r->line_count == r->max_headers)
    return too_many_lines(r);
  begin_line(r, at, len);
  match_keep_alive(r, 0, at, len);
  return 0;
}

/* The rest of a name that the end of the bytes fed before cut. */
__attribute__((noinline)) static int
head_field_rest(struct xfer__http1_resp *r, const char *at, size_t len) {
  r->name_open = at + len == r->feed_end;
  if (r->name_may_be_ka)
    match_keep_alive(r, r->name_len, at, len);
  r->name_len += (uint32_t)len;
  return 0;
}

/*
 * llhttp passes a name in one piece, unless the bytes fed end inside it:
 * then it passes what it has, and the rest as the first piece of the next
 * run (the span starts again at that run's first byte). So a piece that
 * ends where the bytes fed end, and then one that starts where the next
 * bytes start, are one name; any other piece begins a line, where it is
 * counted, so that the limit holds before the line ends. The rare cases
 * are out of line above: this one needs no stack frame.
 */
static int head_field(llhttp_t *p, const char *at, size_t len) {
  struct xfer__http1_resp *r = resp_of(p);

  if (r->name_open && at == r->feed_base)
    return head_field_rest(r, at, len);
  if (len == 0 || (at[0] | 0x20) == 'k' || r->line_count == r->max_headers)
    return head_field_rare(r, at, len);
  begin_line(r, at, len);
  return 0;
}

static int trailer_field(llhttp_t *p, const char *at, size_t len) {
  struct xfer__http1_resp *r = resp_of(p);

  (void)at;
  if (r->name_len == 0 && len) {
    if (r->line_count == r->max_headers)
      return too_many_lines(r);
    r->line_count++;
  }
  r->name_len += (uint32_t)len;
  return count_trailer_bytes(r, len);
}

/* The end of a trailer line: llhttp calls it for every value, an empty
 * one too. An empty name is refused, as in the head. */
static int trailer_line_complete(llhttp_t *p) {
  struct xfer__http1_resp *r = resp_of(p);

  if (r->name_len == 0)
    return no_name(r);
  r->name_len = 0;
  return 0;
}

/* Below, the callbacks of ka_settings: the rest of a line whose name
 * began like "Keep-Alive". */
static int ka_field_complete(llhttp_t *p) {
  struct xfer__http1_resp *r = resp_of(p);

  r->in_ka_value = r->name_may_be_ka && r->name_len == KEEP_ALIVE_NAME_LEN;
  if (r->in_ka_value) { /* its value, which may be empty, starts */
    r->ka_seen = true;
    r->ka_value[0] = '\0';
  }
  r->name_may_be_ka = false;
  return 0;
}

/* The Keep-Alive value, cut to fit its buffer. */
static int ka_value(llhttp_t *p, const char *at, size_t len) {
  struct xfer__http1_resp *r = resp_of(p);
  size_t room = sizeof(r->ka_value) - 1 - r->ka_value_len;
  size_t take = len < room ? len : room;

  if (r->in_ka_value) {
    memcpy(r->ka_value + r->ka_value_len, at, take);
    r->ka_value_len += take;
    r->ka_value[r->ka_value_len] = '\0';
  }
  return 0;
}

static int ka_line_complete(llhttp_t *p) {
  struct xfer__http1_resp *r = resp_of(p);

  r->in_ka_value = false;
  r->parser.settings = &head_settings;
  return 0;
}

static int trailer_value(llhttp_t *p, const char *at, size_t len) {
  (void)at;
  return count_trailer_bytes(resp_of(p), len + 4);
}

/* Forgets the head of an interim (1xx) response, or of an earlier use. */
static void reset_head(struct xfer__http1_resp *r) {
  r->parser.settings = &head_settings;
  r->head.len = 0;
  r->header_text.len = 0;
  r->in_head = true;
  r->head_ended = false;
  r->interim_ended = false;
  r->headers_loaded = false;
  r->header_count = 0;
  r->line_count = 0;
  r->trailer_bytes = 0;
  r->name_len = 0;
  r->name_open = false;
  r->name_may_be_ka = false;
  r->in_ka_value = false;
  r->ka_seen = false;
  r->ka_value_len = 0;
  r->status_seen = false;
  r->reason_made = false;
}

static bool keep_head(struct xfer__http1_resp *r, const char *from,
                      const char *to);

/* The rest of a head finished without a pause, up to `to`. It fits the
 * limit (on_headers_complete() made sure), so only memory can fail; the
 * headers are then not done, as no head is kept whole. */
static bool keep_head_rest(struct xfer__http1_resp *r, const char *from,
                           const char *to) {
  r->in_head = false;
  if (keep_head(r, from, to))
    return true;
  r->headers_done = false;
  return false;
}

/* What a complete head tells: its status, whether a body follows, and,
 * for the final head, that the headers are done (trailers may follow). */
static void head_facts(struct xfer__http1_resp *r) {
  r->status = r->parser.status_code;
  /* RFC 9110: a 1xx response ends with its head, and a response to HEAD,
   * a 204 and a 304 have no body, whatever Content-Length says (llhttp
   * would read one); what llhttp does when on_headers_complete returns 1. */
  if (r->status < 200 || r->head_request || r->status == 204 ||
      r->status == 304)
    r->parser.flags |= F_SKIPBODY;
  if (r->status < 200)
    return; /* an interim response: its end pauses llhttp again */
  r->headers_done = true;
  r->header_count = r->line_count;
  r->name_len = 0; /* the trailers' names, from now on */
  r->parser.settings = (void *)&body_settings;
}

/*
 * The end of a head. Where nothing must run between the head and its
 * body, every byte after the head is the body's, and the head fits the
 * limit whatever its end (a final head, no header callback, no chunked
 * framing, and all bytes of the head with this run's are within the
 * limit), the head is finished here and llhttp goes on: the head is kept
 * up to the first body byte (on_body()), or up to where llhttp stopped
 * (feed()). Otherwise llhttp pauses, so that feed() learns where the head
 * ends (llhttp's position after the pause) and finishes it there
 * (head_complete()), before any body byte.
 */
static int on_headers_complete(llhttp_t *p) {
  struct xfer__http1_resp *r = resp_of(p);

  if ((r->events && r->events->on_header) || p->status_code < 200 ||
      p->http_major != 1 || (p->flags & F_CHUNKED) ||
      r->head.len + (size_t)(r->feed_end - r->feed_base) >
          r->max_header_bytes) {
    r->head_ended = true;
    return HPE_PAUSED;
  }
  head_facts(r);
  return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  struct xfer__http1_resp *r = resp_of(p);

  /* The head ended in this run of llhttp, without a pause: it is kept,
   * whole, before the application hears of the body (its callback may
   * ask for a header). */
  if (r->in_head && !keep_head_rest(r, r->feed_base, at))
    return HPE_USER;
  r->body_bytes += len;
  if (r->events && r->events->on_body && r->events->on_body(r->owner, at, len))
    return fail(r, XFER_E_WRITE_CALLBACK,
                "the write callback aborted the transfer");
  return 0;
}

/* An interim 1xx response ended: it is skipped. llhttp would take one
 * that says close (or an HTTP/1.0 one without keep-alive) as the
 * connection's end, and refuse the final response that follows it: the
 * close counts after that one instead. */
__attribute__((noinline)) static int
interim_complete(struct xfer__http1_resp *r) {
  llhttp_t *p = &r->parser;

  if (!llhttp_should_keep_alive(p)) {
    r->close_after = true;
    p->flags = (p->flags & ~F_CONNECTION_CLOSE) | F_CONNECTION_KEEP_ALIVE;
  }
  r->interim_ended = true;
  return HPE_PAUSED; /* the next head starts where llhttp stopped */
}

static int on_message_complete(llhttp_t *p) {
  struct xfer__http1_resp *r = resp_of(p);

  if (!r->headers_done)
    return interim_complete(r);
  r->complete = true;
  r->keep_alive = llhttp_should_keep_alive(p) != 0 && !r->close_after;
  return HPE_PAUSED; /* anything after this is not ours */
}

/* The callbacks of the parse (head_settings and ka_settings until the
 * final head is complete, then body_settings) and of the loader below
 * (load_settings) are the same for every parser in the process, and so
 * is the build of llhttp's parser that runs them (http1.h): all set once,
 * under settings_once. */
static pthread_once_t settings_once = PTHREAD_ONCE_INIT;
static void settings_init(void);

/* llhttp_execute(p, data, len) is llhttp__internal_execute(p, data,
 * data + len); calling the execute of the build we picked is the same. */
typedef int (*execute_fn)(llhttp_t *parser, const char *p, const char *endp);
static execute_fn execute = llhttp__internal_execute;
#ifdef XFER_LLHTTP_SSE42
int llhttp__sse42_execute(llhttp_t *parser, const char *p, const char *endp);

static bool cpu_has_sse42(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("sse4.2");
}
#endif

bool xfer__http1_use_sse42(bool on) {
  pthread_once(&settings_once, settings_init);
  execute = llhttp__internal_execute;
#ifdef XFER_LLHTTP_SSE42
  if (on && cpu_has_sse42())
    execute = llhttp__sse42_execute;
#endif
  return on == xfer__http1_uses_sse42();
}

bool xfer__http1_uses_sse42(void) {
  pthread_once(&settings_once, settings_init);
#ifdef XFER_LLHTTP_SSE42
  return execute == llhttp__sse42_execute;
#else
  return false;
#endif
}

static const llhttp_settings_t *parser_settings(void) {
  pthread_once(&settings_once, settings_init);
  return &head_settings;
}

void xfer__http1_resp_init(struct xfer__http1_resp *r,
                           const struct xfer__http1_events *events,
                           void *owner, bool head_request,
                           size_t max_header_bytes) {
  llhttp_init(&r->parser, HTTP_RESPONSE, parser_settings());
  r->parser.data = r;
  r->events = events;
  r->owner = owner;
  r->max_header_bytes =
      max_header_bytes ? max_header_bytes : XFER__HTTP1_DEFAULT_MAX_HEADER_BYTES;
  r->max_headers = XFER__HTTP1_DEFAULT_MAX_HEADERS;
  r->head_request = head_request;
  r->status = 0;
  r->headers_done = false;
  r->complete = false;
  r->keep_alive = false;
  r->body_bytes = 0;
  r->interim_bytes = 0;
  r->interim_lines = 0;
  r->close_after = false;
  reset_head(r);
  r->error = XFER_OK;
  r->detail[0] = '\0';
}

void xfer__http1_resp_free(struct xfer__http1_resp *r) {
  xfer__buf_free(&r->head);
  xfer__buf_free(&r->header_text);
  xfer__free(r->headers);
  r->headers = NULL;
  r->header_cap = 0;
  r->header_count = 0;
  r->headers_loaded = false;
}

/* --- the header strings, on demand ---------------------------------------- */

/* The loader's own state: llhttp runs over a head it accepted before. */
struct loader {
  struct xfer__http1_resp *r;
  unsigned count;
  bool open;   /* a header is being filled */
  bool failed; /* out of memory */
};

static struct loader *loader_of(llhttp_t *p) { return p->data; }

static int load_field(llhttp_t *p, const char *at, size_t len) {
  struct loader *l = loader_of(p);
  struct xfer__http1_resp *r = l->r;
  struct xfer__header *h;

  if (!l->open) {
    if (l->count == r->header_count)
      return HPE_USER; /* more than the parse counted: cannot be */
    h = &r->headers[l->count++];
    h->name_off = (uint32_t)r->header_text.len;
    h->name_len = 0;
    h->value_len = 0;
    l->open = true;
  }
  h = &r->headers[l->count - 1];
  if (!xfer__buf_append(&r->header_text, at, len))
    return l->failed = true, HPE_USER;
  h->name_len += (uint32_t)len;
  return 0;
}

static int load_field_complete(llhttp_t *p) {
  struct loader *l = loader_of(p);
  struct xfer__http1_resp *r = l->r;

  if (!xfer__buf_append(&r->header_text, "", 1))
    return l->failed = true, HPE_USER;
  r->headers[l->count - 1].value_off = (uint32_t)r->header_text.len;
  return 0;
}

static int load_value(llhttp_t *p, const char *at, size_t len) {
  struct loader *l = loader_of(p);
  struct xfer__http1_resp *r = l->r;

  if (!xfer__buf_append(&r->header_text, at, len))
    return l->failed = true, HPE_USER;
  r->headers[l->count - 1].value_len += (uint32_t)len;
  return 0;
}

/* llhttp calls this for every value, an empty one too. */
static int load_value_complete(llhttp_t *p) {
  struct loader *l = loader_of(p);

  l->open = false;
  if (!xfer__buf_append(&l->r->header_text, "", 1))
    return l->failed = true, HPE_USER;
  return 0;
}

static int load_headers_complete(llhttp_t *p) {
  (void)p;
  return HPE_PAUSED; /* the end of the block: nothing after it */
}

static void settings_init(void) {
  llhttp_settings_init(&head_settings);
  head_settings.on_status_complete = on_status_complete;
  head_settings.on_header_field = head_field;
  head_settings.on_headers_complete = on_headers_complete;
  head_settings.on_body = on_body;
  head_settings.on_message_complete = on_message_complete;
  ka_settings = head_settings;
  ka_settings.on_header_field_complete = ka_field_complete;
  ka_settings.on_header_value = ka_value;
  ka_settings.on_header_value_complete = ka_line_complete;
  body_settings = head_settings;
  body_settings.on_header_field = trailer_field;
  body_settings.on_header_value = trailer_value;
  body_settings.on_header_value_complete = trailer_line_complete;

  llhttp_settings_init(&load_settings);
  load_settings.on_header_field = load_field;
  load_settings.on_header_field_complete = load_field_complete;
  load_settings.on_header_value = load_value;
  load_settings.on_header_value_complete = load_value_complete;
  load_settings.on_headers_complete = load_headers_complete;

  llhttp_settings_init(&reason_settings);
  reason_settings.on_status = reason_piece;
  reason_settings.on_status_complete = reason_end;
#ifdef XFER_LLHTTP_SSE42
  if (cpu_has_sse42())
    execute = llhttp__sse42_execute;
#endif
}

/* llhttp once more over the kept head, which it accepted before, with
 * the callbacks of `settings` (the loader's, or the reason's) and `data`
 * for them: what the strings are made by, on demand. */
static llhttp_errno_t rerun_head(const struct xfer__http1_resp *r,
                                 const llhttp_settings_t *settings,
                                 void *data) {
  llhttp_t parser;

  pthread_once(&settings_once, settings_init);
  llhttp_init(&parser, HTTP_RESPONSE, settings);
  parser.data = data;
  return execute(&parser, r->head.data, r->head.data + r->head.len);
}

bool xfer__http1_resp_load_headers(const struct xfer__http1_resp *cr) {
  struct xfer__http1_resp *r = (struct xfer__http1_resp *)cr;
  struct loader l = {r, 0, false, false};
  llhttp_errno_t err;

  if (!r->headers_done)
    return false;
  if (r->headers_loaded)
    return true;
  if (r->header_count > r->header_cap) {
    struct xfer__header *grown =
        xfer__realloc(r->headers, r->header_count * sizeof(*grown));
    if (!grown)
      return false;
    r->headers = grown;
    r->header_cap = r->header_count;
  }
  r->header_text.len = 0;
  /* Names and values are the head less its separators, plus two NULs. */
  if (!xfer__buf_reserve(&r->header_text, r->head.len + 2 * r->header_count))
    return false;
  err = rerun_head(r, &load_settings, &l);
  if (err != HPE_PAUSED || l.failed || l.count != r->header_count) {
    /* Only memory can fail here: llhttp accepted these bytes before. */
    assert(l.failed);
    return false;
  }
  r->headers_loaded = true;
  return true;
}

const char *xfer__http1_resp_reason(const struct xfer__http1_resp *cr) {
  struct xfer__http1_resp *r = (struct xfer__http1_resp *)cr;
  llhttp_errno_t err;

  if (!r->headers_done)
    return "";
  if (!r->reason_made) {
    r->reason_len = 0;
    err = rerun_head(r, &reason_settings, r);
    /* llhttp accepted this status line before: its end pauses it. */
    assert(err == HPE_PAUSED);
    (void)err;
    r->reason[r->reason_len] = '\0';
    r->reason_made = true;
  }
  return r->reason;
}

const char *xfer__http1_resp_header(const struct xfer__http1_resp *r,
                                    const char *name) {
  size_t n = strlen(name);

  if (!xfer__http1_resp_load_headers(r))
    return NULL;
  for (unsigned i = 0; i < r->header_count; i++) {
    const struct xfer__header *h = &r->headers[i];
    if (h->name_len == n &&
        strncasecmp(r->header_text.data + h->name_off, name, n) == 0)
      return r->header_text.data + h->value_off;
  }
  return NULL;
}

const char *xfer__http1_resp_keep_alive(const struct xfer__http1_resp *r) {
  return r->headers_done && r->ka_seen ? r->ka_value : NULL;
}

/* --- feeding bytes --------------------------------------------------------- */

/* Maps an llhttp error to ours: where in the response it happened decides. */
static xfer_code map_error(struct xfer__http1_resp *r, llhttp_errno_t err) {
  if (r->error)
    return r->error; /* one of our own limits or callbacks */
  switch (err) {
  case HPE_INVALID_CHUNK_SIZE:
    return XFER_E_BAD_CHUNK;
  case HPE_INVALID_CONTENT_LENGTH:
  case HPE_UNEXPECTED_CONTENT_LENGTH:
  case HPE_INVALID_TRANSFER_ENCODING:
  case HPE_INVALID_HEADER_TOKEN:
    return XFER_E_BAD_HEADER;
  default:
    break;
  }
  if (!r->status_seen)
    return XFER_E_BAD_STATUS_LINE;
  if (!r->headers_done)
    return XFER_E_BAD_HEADER;
  return r->parser.flags & F_CHUNKED ? XFER_E_BAD_CHUNK : XFER_E_BAD_RESPONSE;
}

static xfer_code parse_error(struct xfer__http1_resp *r, llhttp_errno_t err) {
  xfer_code code = map_error(r, err);

  if (!r->error) {
    r->error = code;
    snprintf(r->detail, sizeof(r->detail), "%s: %s", llhttp_errno_name(err),
             llhttp_get_error_reason(&r->parser));
  }
  return code;
}

/* Keeps head bytes llhttp has read, within the limit: checked as the bytes
 * come, so a head that never ends fails once it is too long. */
static bool keep_head(struct xfer__http1_resp *r, const char *from,
                      const char *to) {
  size_t n = (size_t)(to - from);

  if (r->head.len + n > r->max_header_bytes) {
    too_large(r);
    return false;
  }
  if (!xfer__buf_append(&r->head, from, n)) {
    refuse(r, XFER_E_OUT_OF_MEMORY, "out of memory");
    return false;
  }
  return true;
}

/* An interim (1xx) response ended: its head goes, but what it took
 * counts against the limits of the response's heads together (bytes and
 * lines), so that an endless run of them ends. */
static void spend_interim(struct xfer__http1_resp *r) {
  /* (The head was checked against both: neither goes under zero.) */
  size_t spent = r->head.len < r->max_header_bytes ? r->head.len
                                                   : r->max_header_bytes;
  unsigned lines = r->line_count < r->max_headers ? r->line_count
                                                  : r->max_headers;

  reset_head(r);
  r->max_header_bytes -= spent;
  r->interim_bytes += spent;
  r->max_headers -= lines;
  r->interim_lines += lines;
}

/* The head of a response is complete (llhttp paused there). */
static xfer_code head_complete(struct xfer__http1_resp *r) {
  const struct xfer__http1_events *ev = r->events;

  r->in_head = false;
  /* Refused before the head counts as the response's (no status, no
   * headers for the getters). llhttp takes HTTP/0.9 to HTTP/9.9 in a
   * status line (curl refuses all but 1.x on an HTTP/1 connection). */
  if (r->parser.http_major != 1)
    return refuse(r, XFER_E_BAD_STATUS_LINE,
                  "the response says HTTP/%d.%d; an HTTP/1.1 request is "
                  "answered in HTTP/1.x",
                  r->parser.http_major, r->parser.http_minor);
  /* llhttp takes any number up to 999. */
  if (r->parser.status_code < 100)
    return refuse(r, XFER_E_BAD_STATUS_LINE,
                  "the status code %03d is under 100 (HTTP's are 100 to 599)",
                  r->parser.status_code);
  /* We never ask to switch (no Upgrade header): a 101 leaves the
   * connection in a protocol we do not speak. */
  if (r->parser.status_code == 101)
    return refuse(r, XFER_E_BAD_RESPONSE,
                  "the server switched protocols (101), which the request "
                  "did not ask for");
  head_facts(r);
  if (r->status < 200)
    return XFER_OK; /* an interim response: its end pauses llhttp again */
  /* RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty
   * framing; the connection is closed after it. (Chunked heads pause
   * here; one that is not chunked is read to the close anyway.) */
  if (r->parser.http_minor == 0 && (r->parser.flags & F_CHUNKED))
    r->close_after = true;
  if (!ev || !ev->on_header)
    return XFER_OK;
  if (!xfer__http1_resp_load_headers(r))
    return refuse(r, XFER_E_OUT_OF_MEMORY, "out of memory");
  for (unsigned i = 0; i < r->header_count; i++) {
    const struct xfer__header *h = &r->headers[i];
    if (ev->on_header(r->owner, r->header_text.data + h->name_off, h->name_len,
                      r->header_text.data + h->value_off, h->value_len))
      return refuse(r, XFER_E_HEADER_CALLBACK,
                    "the header callback aborted the transfer");
  }
  return XFER_OK;
}

xfer_code xfer__http1_resp_feed(struct xfer__http1_resp *r, const char *data,
                                size_t len) {
  const char *end = data + len;
  const char *stop;
  llhttp_errno_t err;
  xfer_code rc;

  if (r->error)
    return r->error;
  if (r->complete && len == 0)
    return XFER_OK;
  if (r->complete)
    goto extra_bytes;
  /* One pass a pause: at the end of a head (where it pauses there), of
   * an interim response, of the response; the next pass starts where
   * llhttp stopped. */
  r->feed_end = end;
  for (;;) {
    r->feed_base = data;
    err = execute(&r->parser, data, end);
    if (err != HPE_OK && err != HPE_PAUSED)
      return parse_error(r, err);
    stop = err == HPE_OK ? end : llhttp_get_error_pos(&r->parser);
    /* (A head finished without a pause, with no body byte after it in
     * this run, ends here.) */
    if (r->in_head && !(r->headers_done ? keep_head_rest(r, data, stop)
                                        : keep_head(r, data, stop)))
      return r->error;
    if (err == HPE_OK)
      return XFER_OK;
    data = stop;
    if (r->complete)
      break;
    if (r->head_ended) {
      r->head_ended = false;
      if ((rc = head_complete(r)))
        return rc;
    } else { /* an interim response ended: a new head follows */
      assert(r->interim_ended);
      spend_interim(r);
    }
    llhttp_resume(&r->parser);
  }
  len = (size_t)(end - data);
  if (len == 0)
    return XFER_OK;
extra_bytes:
  r->keep_alive = false;
  if (r->parser.flags & F_SKIPBODY) /* a Content-Length it says of none */
    return refuse(r, XFER_E_BAD_RESPONSE,
                  "%zu bytes after a response that has no body (a %d%s)", len,
                  r->status, r->head_request ? " to a HEAD request" : "");
  if (r->parser.flags & F_CONTENT_LENGTH)
    return refuse(r, XFER_E_BODY_TOO_LONG,
                  "%zu bytes beyond the Content-Length of %llu", len,
                  (unsigned long long)r->body_bytes);
  return refuse(r, XFER_E_BAD_RESPONSE,
                "%zu unexpected bytes after the end of the response", len);
}

bool xfer__http1_resp_failed_at_start(const struct xfer__http1_resp *r) {
  return r->error && !r->status_seen && r->interim_bytes == 0 &&
         r->head.len == 0 && llhttp_get_error_pos(&r->parser) == r->feed_base;
}

xfer_code xfer__http1_resp_eof(struct xfer__http1_resp *r) {
  llhttp_errno_t err;

  if (r->error || r->complete)
    return r->error;
  if (r->headers_done && llhttp_message_needs_eof(&r->parser)) {
    err = llhttp_finish(&r->parser);
    if ((err == HPE_OK || err == HPE_PAUSED) && r->complete) {
      r->keep_alive = false;
      return XFER_OK;
    }
  }
  r->error = XFER_E_PEER_CLOSED;
  if (!r->status_seen && r->interim_bytes)
    snprintf(r->detail, sizeof(r->detail),
             "the server closed the connection after an interim (1xx) "
             "response, before the final one");
  else if (!r->status_seen)
    snprintf(r->detail, sizeof(r->detail),
             "the server closed the connection before any response");
  else if (!r->headers_done)
    snprintf(r->detail, sizeof(r->detail),
             "the server closed the connection in the response headers");
  else
    snprintf(r->detail, sizeof(r->detail),
             "the server closed the connection after %llu body bytes%s",
             (unsigned long long)r->body_bytes,
             r->parser.flags & F_CHUNKED ? " (chunked body incomplete)"
                                         : " (fewer than announced)");
  return r->error;
}
