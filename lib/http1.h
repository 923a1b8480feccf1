/*
 * HTTP/1.1: the request head we send and the response parser (llhttp).
 * No sockets here: bytes in, events out, so the response path can be
 * tested and fuzzed on its own.
 */
#ifndef XFER_HTTP1_H
#define XFER_HTTP1_H

#include "common.h"

#include <llhttp.h>
#include <string.h>

/* A growable byte buffer that keeps its capacity between uses. */
struct xfer__buf {
  char *data;
  size_t len;
  size_t cap;
};

void xfer__buf_free(struct xfer__buf *b);
/* Makes room for `cap` bytes (plus a terminating NUL). */
bool xfer__buf_reserve(struct xfer__buf *b, size_t cap);

/* Appends and keeps the buffer a C string. Inline: the request head and
 * the header strings are made with it, a dozen appends a request
 * (docs/internals/performance.md). */
static inline bool xfer__buf_append(struct xfer__buf *b, const void *data,
                                    size_t len) {
  if (b->len + len >= b->cap && !xfer__buf_reserve(b, b->len + len))
    return false;
  if (len) /* data may be NULL then */
    memcpy(b->data + b->len, data, len);
  b->len += len;
  b->data[b->len] = '\0';
  return true;
}

/* The request, as the transfer's options describe it. */
struct xfer__http1_req {
  const char *method;    /* "GET", ... */
  const char *authority; /* Host header value */
  const char *target;    /* request target */
  const struct xfer__buf *headers; /* "Name: value\r\n" lines of the user */
  int64_t body_len;      /* -1: no body; -2: streamed, chunked */
  bool body_dropped;     /* a redirect hop without the body: the user's
                            Content-Length and Transfer-Encoding lines go */
  bool other_origin;     /* a redirect hop to another host or port than
                            the transfer's URL: the user's Authorization,
                            Cookie and Host lines go (as curl does:
                            CVE-2018-1000007, CVE-2022-27776) */
};

/* Builds the request head (request line, Host unless the user gave one
 * that goes, the user's lines that go, Content-Length or chunked framing,
 * blank line) into `out`, replacing its content. false when out of
 * memory. */
bool xfer__http1_build_head(struct xfer__buf *out,
                            const struct xfer__http1_req *req);

/* Does the header block contain a header `name` (case-insensitive)? */
bool xfer__http1_has_header(const struct xfer__buf *headers, const char *name);

/* The user's own Content-Length and Transfer-Encoding headers against the
 * body the request sends (body_len as in xfer__http1_req): a
 * Content-Length must be its decimal length (0 for none), a
 * Transfer-Encoding must be "chunked" with a body of unknown length (-2);
 * and no two Host or Content-Length lines. false, with why, when they
 * disagree (a request that would be framed or routed two ways). */
bool xfer__http1_check_framing(const struct xfer__buf *headers,
                               int64_t body_len, char *why, size_t why_len);

/* Does the header block say "Connection: close" (the token among others,
 * any case)? Then the server closes after its response (RFC 9112, 9.6). */
bool xfer__http1_asks_close(const struct xfer__buf *headers);

/* Response headers as received, for the getters. */
struct xfer__header {
  uint32_t name_off, name_len, value_off, value_len;
};

struct xfer__http1_resp;

/* What the parser tells its owner. Return 0 to go on, non-zero to abort
 * (the parse then fails with XFER_E_HEADER_CALLBACK from on_header,
 * XFER_E_WRITE_CALLBACK from on_body). */
struct xfer__http1_events {
  int (*on_header)(void *owner, const char *name, size_t name_len,
                   const char *value, size_t value_len);
  int (*on_body)(void *owner, const char *data, size_t len);
};

struct xfer__http1_resp {
  llhttp_t parser;
  const struct xfer__http1_events *events;
  void *owner;

  size_t max_header_bytes; /* status line, headers, trailers together */
  unsigned max_headers;    /* header and trailer lines together */
  bool head_request;       /* the response to a HEAD has no body */

  int status;
  uint32_t reason_len;     /* the bytes of `reason` made */
  bool reason_made;        /* `reason` holds it (xfer__http1_resp_reason) */
  bool status_seen;        /* the status line was parsed */
  bool headers_done;       /* the final (non-1xx) headers are complete */
  bool complete;           /* the whole response is in */
  bool keep_alive;         /* the connection may be reused after it */
  uint64_t body_bytes;

  /* The status line and headers as received, the block llhttp parsed.
   * The header strings are made from it only when someone asks (a getter,
   * a header callback, a redirect): a response nobody asks about costs
   * one copy of its head (docs/internals/performance.md). */
  struct xfer__buf head;
  const char *feed_base;   /* where llhttp's current run started: the
                              bytes before it in the head are head.len */
  const char *feed_end;    /* and where the bytes it has end */
  bool in_head;            /* the bytes llhttp reads now belong to the head
                              (after a head that ended without a pause:
                              until it is kept, at the first body byte) */
  bool head_ended;         /* on_headers_complete paused the parser */
  bool interim_ended;      /* on_message_complete of a 1xx paused it */
  unsigned header_count;   /* the final response's header lines */
  unsigned line_count;     /* header and trailer lines so far (the limit) */
  size_t trailer_bytes;    /* counted with the head against the limit */
  size_t interim_bytes;    /* heads of interim responses, taken off
                              max_header_bytes */
  unsigned interim_lines;  /* and their lines, taken off max_headers */
  bool close_after;      /* the connection is not kept after the final
                              response, whatever it says: an interim one
                              said close, or it is HTTP/1.0 and chunked */
  uint32_t name_len;       /* of the header name being received */
  bool name_open;          /* its last piece ended with the bytes fed */
  bool name_may_be_ka;     /* that name so far starts "Keep-Alive" */
  bool in_ka_value;        /* the value being received is Keep-Alive's */
  bool ka_seen;            /* the first Keep-Alive header was captured */
  size_t ka_value_len;

  /* Made from `head` on demand (xfer__http1_resp_load_headers). */
  bool headers_loaded;
  struct xfer__buf header_text;  /* "name\0value\0", back to back */
  struct xfer__header *headers;
  unsigned header_cap;

  xfer_code error;
  /* The arrays last: a response writes only detail's first byte, and the
   * fields above fill few cache lines (docs/internals/performance.md). */
  char detail[192];
  char ka_value[128];      /* the Keep-Alive value, cut to fit ("timeout=N,
                              max=M" is a tenth of it); set once ka_seen */
  char reason[128];        /* made on demand, cut to fit */
};

#define XFER__HTTP1_DEFAULT_MAX_HEADER_BYTES (100 * 1024)
#define XFER__HTTP1_DEFAULT_MAX_HEADERS 500u
/* The most xfer_set_max_header_size() takes: offsets into the head are
 * 32 bits (struct xfer__header). */
#define XFER__MAX_HEADER_BYTES_LIMIT ((size_t)1 << 30)

/* Prepares r for a new response (keeps its buffers). */
void xfer__http1_resp_init(struct xfer__http1_resp *r,
                           const struct xfer__http1_events *events,
                           void *owner, bool head_request,
                           size_t max_header_bytes);
void xfer__http1_resp_free(struct xfer__http1_resp *r);

/*
 * Feeds received bytes. XFER_OK while more is expected or when the
 * response just completed (r->complete). Bytes after the end of the
 * response are an error (we never pipeline: they can only be a body longer
 * than announced, or garbage). On error, r->detail says what.
 */
xfer_code xfer__http1_resp_feed(struct xfer__http1_resp *r, const char *data,
                                size_t len);

/* The parser failed at the very first byte of the response: the bytes
 * are not even the start of a status line ("HTTP/"), and no interim
 * response came before them. */
bool xfer__http1_resp_failed_at_start(const struct xfer__http1_resp *r);

/* The peer closed the connection: completes a close-delimited body, or
 * fails with XFER_E_PEER_CLOSED. */
xfer_code xfer__http1_resp_eof(struct xfer__http1_resp *r);

/* Makes the header strings of the final response from its head, once a
 * response (the parser itself only checks and counts them). false when
 * there is no final head yet or memory ran out. The const is logical: the
 * strings are a cache of the head. */
bool xfer__http1_resp_load_headers(const struct xfer__http1_resp *r);

/* Value of the first response header `name` (case-insensitive), or NULL
 * (also when the headers could not be made: out of memory). */
const char *xfer__http1_resp_header(const struct xfer__http1_resp *r,
                                    const char *name);

/* The final response's reason phrase, cut to 127 bytes ("" when there
 * is none, or no final head yet). Made from `head` when first asked: the
 * const is logical, as for the header strings. */
const char *xfer__http1_resp_reason(const struct xfer__http1_resp *r);

/* The value of the first Keep-Alive header (kept while parsing, so that
 * learning the server's idle timeout makes no strings), or NULL. */
const char *xfer__http1_resp_keep_alive(const struct xfer__http1_resp *r);

/*
 * Which build of llhttp's parser runs. On x86 configure builds llhttp
 * twice: its baseline build, and one with SSE4.2, which scans runs of
 * header (and URL) bytes 16 at a time (Makefile.am makes
 * lib/llhttp/llhttp_sse42.c). The first parse picks SSE4.2 when the CPU
 * has it. Tests switch builds with xfer__http1_use_sse42(), only while no
 * other thread parses; it returns false, and keeps the baseline, when the
 * SSE4.2 build cannot run here.
 */
bool xfer__http1_use_sse42(bool on);
bool xfer__http1_uses_sse42(void);

#endif /* XFER_HTTP1_H */
