/* lib/http1.c: request heads and the response parser, fed bytes directly. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"
#include "testhelp.h"

static struct xfer__http1_resp r;
static struct xfer__buf body;
static int header_calls;

static int on_header(void *owner, const char *name, size_t nl,
                     const char *value, size_t vl) {
  header_calls++;
  return 0;
}

static int on_body(void *owner, const char *data, size_t len) {
  cr_assert(xfer__buf_append(&body, data, len));
  return 0;
}

static const struct xfer__http1_events events = {on_header, on_body};
/* Without a header callback the parser keeps the head and makes the
 * header strings only when asked: every parse runs both ways, and with
 * both builds of llhttp's parser (baseline and SSE4.2, where it runs). */
static const struct xfer__http1_events lazy_events = {NULL, on_body};
static const struct parse_mode {
  const struct xfer__http1_events *events;
  bool sse42;
} modes[] = {{&lazy_events, false}, {&lazy_events, true}, {&events, false},
             {&events, true}};
static const struct xfer__http1_events *mode = &events;

static bool sse42_runs_here(void) {
#ifdef XFER_LLHTTP_SSE42
  __builtin_cpu_init();
  return __builtin_cpu_supports("sse4.2");
#else
  return false;
#endif
}

/* The parser build: baseline, or SSE4.2 where it runs here. */
static void use_build(bool sse42) {
  bool switched = xfer__http1_use_sse42(sse42);

  cr_assert(switched || (sse42 && !sse42_runs_here()));
}

static const struct xfer__http1_events *use_mode(size_t m) {
  use_build(modes[m].sse42);
  mode = modes[m].events;
  return mode;
}

static void http1_end(void) {
  xfer__http1_resp_free(&r);
  xfer__buf_free(&body);
}

/* Feeds text in pieces of `step` bytes (0: all at once). */
static xfer_code feed(const char *text, size_t step, bool head) {
  size_t len = strlen(text);
  xfer_code rc = XFER_OK;

  xfer__http1_resp_init(&r, mode, NULL, head, 0);
  body.len = 0;
  header_calls = 0;
  if (!step)
    step = len;
  for (size_t off = 0; off < len && rc == XFER_OK; off += step)
    rc = xfer__http1_resp_feed(&r, text + off,
                               len - off < step ? len - off : step);
  return rc;
}

/* Every split point gives the same result. */
static void expect_complete(const char *text, bool head, int status,
                            const char *expected_body, bool keep_alive) {
  size_t steps[] = {0, 1, 2, 3, 7, 13};

  /* The eager mode last: the callers look at header_calls. */
  for (size_t m = 0; m < XFER__ARRAY_SIZE(modes); m++)
  for (size_t i = 0; i < XFER__ARRAY_SIZE(steps); i++) {
    use_mode(m);
    cr_assert_eq(feed(text, steps[i], head), XFER_OK, "step %zu: %s",
                 steps[i], r.detail);
    cr_assert(r.complete, "step %zu: not complete", steps[i]);
    cr_assert_eq(r.status, status);
    cr_assert_eq(body.len, strlen(expected_body), "step %zu", steps[i]);
    cr_assert(body.len == 0 || memcmp(body.data, expected_body, body.len) == 0);
    cr_assert_eq(r.keep_alive, keep_alive, "step %zu", steps[i]);
  }
}

static void expect_error(const char *text, xfer_code code, const char *words);

TH_TEST(http1, content_length_body) {
  expect_complete("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false,
                  200, "hello", true);
  cr_assert_str_eq(xfer__http1_resp_header(&r, "content-length"), "5");
  cr_assert_eq(header_calls, 1);
}

TH_TEST(http1, chunked_body_with_trailer) {
  expect_complete("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nX-Trailer: yes\r\n\r\n",
                  false, 200, "abcdefg", true);
}

TH_TEST(http1, close_delimited_body_ends_at_eof) {
  cr_assert_eq(feed("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart1", 3,
                    false),
               XFER_OK);
  cr_assert(!r.complete);
  cr_assert_eq(xfer__http1_resp_feed(&r, "part2", 5), XFER_OK);
  cr_assert_eq(xfer__http1_resp_eof(&r), XFER_OK, "%s", r.detail);
  cr_assert(r.complete);
  cr_assert(!r.keep_alive);
  cr_assert_eq(body.len, 10);
  /* The head ends exactly at the end of a read, then the close. */
  for (size_t m = 0; m < XFER__ARRAY_SIZE(modes); m++) {
    use_mode(m);
    cr_assert_eq(feed("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", 0,
                      false),
                 XFER_OK);
    cr_assert(r.headers_done && !r.complete);
    cr_assert_eq(xfer__http1_resp_eof(&r), XFER_OK, "%s", r.detail);
    cr_assert(r.complete);
    cr_assert_eq(body.len, 0);
    cr_assert_str_eq(xfer__http1_resp_header(&r, "connection"), "close");
  }
}

TH_TEST(http1, responses_without_body) {
  expect_complete("HTTP/1.1 204 No Content\r\n\r\n", false, 204, "", true);
  expect_complete("HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n",
                  false, 304, "", true);
  /* HEAD: Content-Length announces what a GET would get. */
  expect_complete("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", true, 200,
                  "", true);
}

/* The SSE4.2 build is the default wherever the CPU can run it, and gcc
 * on x86-64 always builds it (configure's probe must not fail there). */
TH_TEST(http1, the_sse42_parser_runs_where_the_cpu_has_it) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#ifndef XFER_LLHTTP_SSE42
  cr_assert_fail("configure did not build llhttp's SSE4.2 parser");
#endif
#endif
  cr_assert_eq(xfer__http1_uses_sse42(), sse42_runs_here());
}

/* SSE4.2 scans a header value 16 bytes at a time: values longer than
 * that, with a tab and bytes above 0x7f (obs-text) in them, come out the
 * same in both builds, and a control byte deep in one fails both. */
TH_TEST(http1, both_parser_builds_agree_on_long_values) {
  const char *value = "a value longer than sixteen bytes,\twith obs-text "
                      "\xc3\xa9 inside, and more than 32 of them";
  char text[512], bad[512];

  snprintf(text, sizeof(text),
           "HTTP/1.1 200 OK\r\nX-Long: %s\r\nContent-Length: 2\r\n\r\nok",
           value);
  expect_complete(text, false, 200, "ok", true);
  for (size_t m = 0; m < XFER__ARRAY_SIZE(modes); m++) {
    use_mode(m);
    cr_assert_eq(feed(text, 0, false), XFER_OK, "%s", r.detail);
    cr_assert_str_eq(xfer__http1_resp_header(&r, "x-long"), value);
  }
  snprintf(bad, sizeof(bad),
           "HTTP/1.1 200 OK\r\nX-Long: %.40s\x01%s\r\n\r\n", value, value);
  expect_error(bad, XFER_E_BAD_HEADER, "header");
}

TH_TEST(http1, interim_responses_are_skipped) {
  expect_complete("HTTP/1.1 100 Continue\r\n\r\n"
                  "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                  "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nok",
                  false, 200, "ok", true);
  cr_assert_null(xfer__http1_resp_header(&r, "Link"), "1xx headers dropped");
  cr_assert_str_eq(xfer__http1_resp_header(&r, "x-a"), "b");
  cr_assert_eq(header_calls, 2);
  /* A 1xx has no body (RFC 9110, 15.2), whatever it announces: what
   * follows its head is the next response, here not one. */
  for (size_t m = 0; m < XFER__ARRAY_SIZE(modes); m++) {
    for (size_t step = 1; step < 20; step++) {
      use_mode(m);
      cr_assert_eq(feed("HTTP/1.1 199 Odd\r\nContent-Length: 3\r\n\r\nabc"
                        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                        step, false),
                   XFER_E_BAD_STATUS_LINE, "step %zu: %s", step, r.detail);
      cr_assert_eq(body.len, 0, "no byte of it was passed on as the body");
    }
  }
}

/* Whichever way the head ends (llhttp paused there, or the parser went on
 * into the body: no header callback, no chunked framing, the head within
 * the limit), it is kept whole before the first body byte is passed on:
 * a body callback may ask for any header. */
static const char *seen_at_body; /* X-Late as the first body bytes saw it */
static int header_asking_body(void *owner, const char *data, size_t len) {
  if (!body.len)
    seen_at_body = xfer__http1_resp_header(&r, "X-Late");
  return on_body(owner, data, len);
}

TH_TEST(http1, the_head_is_whole_before_the_body) {
  static const struct xfer__http1_events asking[] = {
      {NULL, header_asking_body}, {on_header, header_asking_body}};
  static const char *texts[] = {
      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Late: yes\r\n\r\nhello",
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-Late: yes\r\n"
      "Content-Length: 5\r\n\r\nhello",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Late: yes\r\n"
      "\r\n5\r\nhello\r\n0\r\n\r\n",
      "HTTP/1.0 200 OK\r\nX-Late: yes\r\n\r\nhello", /* to the close */
  };

  for (int sse42 = 0; sse42 < 2; sse42++)
  for (size_t e = 0; e < XFER__ARRAY_SIZE(asking); e++)
  for (size_t t = 0; t < XFER__ARRAY_SIZE(texts); t++)
  for (int exact = 0; exact < 2; exact++)
  for (size_t step = 1; step <= strlen(texts[t]); step++) {
    size_t len = strlen(texts[t]);
    /* The default limit, or the heads' length (an interim one's counts
     * too): the head fits, but not with the bytes after it, so the parse
     * pauses at its end. */
    const char *final = strstr(texts[t] + 1, "HTTP/"); /* after a 1xx */
    size_t head_len, limit;
    xfer_code rc = XFER_OK;

    if (!final)
      final = texts[t];
    head_len = (size_t)(strstr(final, "\r\n\r\n") + 4 - final);
    limit = exact ? head_len + (size_t)(final - texts[t]) : 0;

    use_build(sse42);
    xfer__http1_resp_init(&r, &asking[e], NULL, false, limit);
    body.len = 0;
    seen_at_body = NULL;
    for (size_t off = 0; off < len && rc == XFER_OK; off += step)
      rc = xfer__http1_resp_feed(&r, texts[t] + off,
                                 len - off < step ? len - off : step);
    if (rc == XFER_OK && !r.complete)
      rc = xfer__http1_resp_eof(&r);
    cr_assert_eq(rc, XFER_OK, "text %zu step %zu: %s", t, step, r.detail);
    cr_assert(r.complete);
    cr_assert_eq(body.len, 5);
    cr_assert(seen_at_body && strcmp(seen_at_body, "yes") == 0,
              "text %zu step %zu limit %zu: the head was not whole", t, step,
              limit);
    cr_assert_eq(r.head.len, head_len, "the head kept, and only it");
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(xfer__http1_resp_reason(&r), "OK");
    cr_assert_eq(r.header_count, t == 3 ? 1 : 2);
  }
}

/* The reason phrase of the final response, whatever the split; an interim
 * response's phrase does not stay. */
static void expect_reason(const char *text, const char *reason) {
  size_t steps[] = {0, 1, 5};

  for (size_t i = 0; i < XFER__ARRAY_SIZE(steps); i++) {
    cr_assert_eq(feed(text, steps[i], false), XFER_OK, "%s", r.detail);
    cr_assert_str_eq(xfer__http1_resp_reason(&r), reason, "step %zu",
                     steps[i]);
  }
}

TH_TEST(http1, reason_phrases) {
  char line[400];

  expect_reason("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "OK");
  expect_reason("HTTP/1.1 404 Not Found Here\r\nContent-Length: 0\r\n\r\n",
                "Not Found Here");
  expect_reason("HTTP/1.1 100 Continue\r\n\r\n"
                "HTTP/1.1 201 Made\r\nContent-Length: 0\r\n\r\n",
                "Made");
  expect_reason("HTTP/1.1 204 \r\n\r\n", "");
  expect_reason("HTTP/1.1 204\r\n\r\n", "");
  /* llhttp skips empty lines before a status line, the final one too. */
  expect_reason("\r\nHTTP/1.1 200 Fine\r\nContent-Length: 0\r\n\r\n",
                "Fine");
  expect_reason("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                "\r\nHTTP/1.1 200 After\r\nContent-Length: 0\r\n\r\n",
                "After");
  snprintf(line, sizeof(line),
           "HTTP/1.1 200 %0300d\r\nContent-Length: 0\r\n\r\n", 0);
  cr_assert_eq(feed(line, 0, false), XFER_OK, "%s", r.detail);
  cr_assert_eq(strlen(xfer__http1_resp_reason(&r)), sizeof(r.reason) - 1,
               "cut to fit");
  cr_assert(strspn(xfer__http1_resp_reason(&r), "0") == sizeof(r.reason) - 1);
}

TH_TEST(http1, connection_close_and_http10_end_keep_alive) {
  expect_complete("HTTP/1.1 200 OK\r\nConnection: close\r\n"
                  "Content-Length: 1\r\n\r\nx",
                  false, 200, "x", false);
  expect_complete("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", false, 200,
                  "x", false);
  expect_complete("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"
                  "Content-Length: 1\r\n\r\nx",
                  false, 200, "x", true);
}

TH_TEST(http1, headers_split_anywhere_and_empty_values) {
  expect_complete("HTTP/1.1 200 OK\r\nX-Long-Name: a value here\r\nX-Empty:\r\n"
                  "X-Spaces:   padded  \r\nContent-Length: 0\r\n\r\n",
                  false, 200, "", true);
  cr_assert_str_eq(xfer__http1_resp_header(&r, "X-Long-Name"), "a value here");
  cr_assert_str_eq(xfer__http1_resp_header(&r, "X-Empty"), "");
  cr_assert_str_eq(xfer__http1_resp_header(&r, "X-Spaces"), "padded  ");
  cr_assert_null(xfer__http1_resp_header(&r, "X-Missing"));
  cr_assert_eq(r.header_count, 4);
}

/* What the header callback saw, to hold the strings made later against. */
static struct {
  char name[32], value[32];
} seen[8];
static unsigned seen_count;

static int record_header(void *owner, const char *name, size_t nl,
                         const char *value, size_t vl) {
  cr_assert_lt(seen_count, XFER__ARRAY_SIZE(seen));
  snprintf(seen[seen_count].name, sizeof(seen[0].name), "%.*s", (int)nl, name);
  snprintf(seen[seen_count].value, sizeof(seen[0].value), "%.*s", (int)vl,
           value);
  seen_count++;
  return 0;
}

/* Feeds a private copy in pieces of `step`, then scribbles over it: the
 * parser may keep nothing that points into the reads. */
static xfer_code feed_copy(const struct xfer__http1_events *ev,
                           const char *text, size_t step) {
  size_t len = strlen(text);
  char *copy = malloc(len);
  xfer_code rc = XFER_OK;

  cr_assert_not_null(copy);
  memcpy(copy, text, len);
  xfer__http1_resp_init(&r, ev, NULL, false, 0);
  body.len = 0;
  for (size_t off = 0; off < len && rc == XFER_OK; off += step)
    rc = xfer__http1_resp_feed(&r, copy + off,
                               len - off < step ? len - off : step);
  memset(copy, '#', len);
  free(copy);
  return rc;
}

/* A response nobody asks about makes no header strings; asked later, they
 * are the ones the header callback gets (same names, values, order). */
TH_TEST(http1, header_strings_are_made_only_when_asked) {
  static const struct xfer__http1_events recording = {record_header, on_body};
  const char *text = "HTTP/1.1 200 OK\r\nServer: t\r\nX-A: one\r\nx-a:two\r\n"
                     "X-Fold: a\r\n  b\r\nX-Empty:\r\nContent-Length: 3\r\n"
                     "\r\nabc";

  for (int sse42 = 0; sse42 < 2; sse42++)
  for (size_t step = 1; step <= strlen(text); step += 4) {
    use_build(sse42);
    seen_count = 0;
    cr_assert_eq(feed_copy(&recording, text, step), XFER_OK, "%s", r.detail);
    cr_assert_eq(seen_count, 6);

    cr_assert_eq(feed_copy(&lazy_events, text, step), XFER_OK, "%s",
                 r.detail);
    cr_assert(r.complete);
    cr_assert_eq(body.len, 3);
    cr_assert_eq(r.header_count, 6, "counted by the parse");
    cr_assert(!r.headers_loaded, "no strings made while parsing");
    cr_assert_eq(r.header_text.len, 0);
    cr_assert_str_eq(xfer__http1_resp_header(&r, "x-A"), "one");
    cr_assert(r.headers_loaded);
    for (unsigned i = 0; i < seen_count; i++) {
      const struct xfer__header *h = &r.headers[i];
      cr_assert_str_eq(r.header_text.data + h->name_off, seen[i].name);
      cr_assert_str_eq(r.header_text.data + h->value_off, seen[i].value);
      cr_assert_eq(h->name_len, strlen(seen[i].name));
      cr_assert_eq(h->value_len, strlen(seen[i].value));
    }
    cr_assert_str_eq(xfer__http1_resp_header(&r, "x-fold"), seen[3].value);
    cr_assert_null(xfer__http1_resp_header(&r, "X-Missing"));
  }
}

/* The pool learns the server's idle timeout from Keep-Alive on every
 * response: the parse keeps that one value, whatever the split. */
TH_TEST(http1, keep_alive_value_is_kept_without_strings) {
  static const struct {
    const char *headers, *value;
  } cases[] = {
      {"Keep-Alive: timeout=5, max=100\r\n", "timeout=5, max=100"},
      {"keep-ALIVE:   timeout=7\r\n", "timeout=7"},
      {"Keep-Alive-X: timeout=1\r\nKeep-Alive: timeout=2\r\n", "timeout=2"},
      {"Keep-Aliv: timeout=1\r\nX-Keep-Alive: timeout=1\r\n", NULL},
      {"Keep-Alive: timeout=3\r\nKeep-Alive: timeout=4\r\n", "timeout=3"},
      {"Keep-Alive:\r\n", ""},
      /* A folded value: the pieces llhttp passes, as the getter has it. */
      {"Keep-Alive: timeout=5,\r\n max=9\r\n", "timeout=5, max=9"},
      {"X: y\r\n", NULL},
  };
  char text[256];

  for (int sse42 = 0; sse42 < 2; sse42++)
  for (size_t c = 0; c < XFER__ARRAY_SIZE(cases); c++) {
    snprintf(text, sizeof(text),
             "HTTP/1.1 200 OK\r\n%sContent-Length: 0\r\n\r\n",
             cases[c].headers);
    use_build(sse42);
    for (size_t step = 1; step <= strlen(text); step++) {
      const char *v;

      cr_assert_eq(feed_copy(&lazy_events, text, step), XFER_OK);
      v = xfer__http1_resp_keep_alive(&r);
      if (cases[c].value)
        cr_assert(v && strcmp(v, cases[c].value) == 0,
                  "case %zu step %zu: '%s'", c, step, v ? v : "(null)");
      else
        cr_assert_null(v, "case %zu step %zu: '%s'", c, step, v);
      cr_assert(!r.headers_loaded);
      if (v) /* the same as the header strings made later */
        cr_assert_str_eq(xfer__http1_resp_header(&r, "Keep-Alive"), v);
    }
  }
  /* An interim response's Keep-Alive is not the final one's. */
  cr_assert_eq(feed_copy(&lazy_events,
                         "HTTP/1.1 100 Continue\r\nKeep-Alive: timeout=1\r\n"
                         "\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                         5),
               XFER_OK);
  cr_assert_null(xfer__http1_resp_keep_alive(&r));
  /* Nor is a trailer's. */
  cr_assert_eq(feed_copy(&lazy_events,
                         "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                         "\r\n0\r\nKeep-Alive: timeout=1\r\n\r\n",
                         3),
               XFER_OK);
  cr_assert(r.complete);
  cr_assert_null(xfer__http1_resp_keep_alive(&r));
}

/* The limits stop a head that never ends, while it comes, without a
 * header callback too; trailers count against them, and are not headers. */
TH_TEST(http1, limits_hold_while_the_head_comes) {
  struct xfer__buf text = {0};
  char spaces[64];
  xfer_code rc = XFER_OK;

  for (size_t m = 0; m < XFER__ARRAY_SIZE(modes); m++) {
    /* 501 header lines, no end of the head yet. */
    xfer__http1_resp_init(&r, use_mode(m), NULL, false, 1024 * 1024);
    rc = xfer__http1_resp_feed(&r, "HTTP/1.1 200 OK\r\n", 17);
    for (int i = 0; i < 501 && rc == XFER_OK; i++)
      rc = xfer__http1_resp_feed(&r, "X-H: v\r\n", 8);
    cr_assert_eq(rc, XFER_E_HEADERS_TOO_LARGE);
    cr_assert(strstr(r.detail, "more than 500 header lines"), "%s", r.detail);

    /* A value whose leading whitespace never ends: llhttp calls nothing
     * for it, the kept head still counts every byte. */
    memset(spaces, ' ', sizeof(spaces));
    xfer__http1_resp_init(&r, use_mode(m), NULL, false, 1024);
    rc = xfer__http1_resp_feed(&r, "HTTP/1.1 200 OK\r\nA:", 19);
    for (int i = 0; i < 100 && rc == XFER_OK; i++)
      rc = xfer__http1_resp_feed(&r, spaces, sizeof(spaces));
    cr_assert_eq(rc, XFER_E_HEADERS_TOO_LARGE);
    cr_assert(strstr(r.detail, "limit of 1024 bytes"), "%s", r.detail);
    cr_assert_leq(r.head.len, 1024, "the kept head stays in the limit");

    /* Trailer lines: counted, and not among the headers. */
    text.len = 0;
    xfer__buf_append(&text, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked"
                            "\r\n\r\n1\r\nx\r\n0\r\n", 56);
    for (int i = 0; i < 600; i++)
      xfer__buf_append(&text, "X-T: v\r\n", 8);
    xfer__buf_append(&text, "\r\n", 2);
    xfer__http1_resp_init(&r, use_mode(m), NULL, false, 1024 * 1024);
    cr_assert_eq(xfer__http1_resp_feed(&r, text.data, text.len),
                 XFER_E_HEADERS_TOO_LARGE);
    cr_assert(strstr(r.detail, "more than 500 header lines"), "%s", r.detail);
    xfer__http1_resp_init(&r, use_mode(m), NULL, false, 2048);
    cr_assert_eq(xfer__http1_resp_feed(&r, text.data, 56 + 300 * 8),
                 XFER_E_HEADERS_TOO_LARGE);
    cr_assert(strstr(r.detail, "limit of 2048 bytes"), "%s", r.detail);
    xfer__http1_resp_init(&r, use_mode(m), NULL, false, 0);
    cr_assert_eq(xfer__http1_resp_feed(&r, text.data, 56), XFER_OK);
    cr_assert_eq(xfer__http1_resp_feed(&r, "X-Trailer: 1\r\n\r\n", 16),
                 XFER_OK);
    cr_assert(r.complete);
    cr_assert_eq(r.header_count, 1);
    cr_assert_null(xfer__http1_resp_header(&r, "X-Trailer"));
    cr_assert_str_eq(xfer__http1_resp_header(&r, "transfer-encoding"),
                     "chunked");
  }
  xfer__buf_free(&text);
}

static void expect_error(const char *text, xfer_code code, const char *words) {
  size_t steps[] = {0, 1, 5};

  for (size_t m = 0; m < XFER__ARRAY_SIZE(modes); m++)
  for (size_t i = 0; i < XFER__ARRAY_SIZE(steps); i++) {
    use_mode(m);
    cr_assert_eq(feed(text, steps[i], false), code,
                 "step %zu: got %d (%s)", steps[i], r.error, r.detail);
    cr_assert(strstr(r.detail, words), "detail '%s' lacks '%s'", r.detail,
              words);
    cr_assert(!r.keep_alive);
    /* Once failed, it stays failed. */
    cr_assert_eq(xfer__http1_resp_feed(&r, "x", 1), code);
  }
}

TH_TEST(http1, malformed_responses_get_clear_errors) {
  expect_error("HTTP/1.1 2x0 Bad\r\n\r\n", XFER_E_BAD_STATUS_LINE,
               "HPE_INVALID_STATUS");
  expect_error("GARBAGE\r\n\r\n", XFER_E_BAD_STATUS_LINE, "HPE_");
  expect_error("HTTP/1.1 200 OK\r\nBad header line\r\n\r\n", XFER_E_BAD_HEADER,
               "HPE_");
  expect_error("HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\n",
               XFER_E_BAD_HEADER, "HPE_");
  /* Found by tests/fuzz/fuzz_response: llhttp passes a nameless line. */
  expect_error("HTTP/1.1 200 OK\r\n: 5\r\nContent-Length: 0\r\n\r\n",
               XFER_E_BAD_HEADER, "has no name");
  expect_error("HTTP/1.1 200 OK\r\nA: b\r\n: 5\r\n\r\n",
               XFER_E_BAD_HEADER, "has no name");
  expect_error("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               "ffffffffffffffffff\r\n",
               XFER_E_BAD_CHUNK, "HPE_INVALID_CHUNK_SIZE");
  expect_error("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               "zz\r\n",
               XFER_E_BAD_CHUNK, "HPE_INVALID_CHUNK_SIZE");
}

TH_TEST(http1, body_longer_than_announced) {
  cr_assert_eq(feed("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", 0,
                    false),
               XFER_E_BODY_TOO_LONG);
  cr_assert(strstr(r.detail, "5 bytes beyond"), "%s", r.detail);
  /* Extra bytes in a later read are caught too. */
  cr_assert_eq(feed("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0, false),
               XFER_OK);
  cr_assert(r.complete);
  cr_assert_eq(xfer__http1_resp_feed(&r, "X", 1), XFER_E_BODY_TOO_LONG);
  cr_assert(!r.keep_alive);
}

/* What a reused connection may retry on (lib/exchange_h1.c): bytes that
 * fail at their first byte, with nothing of a response before them. A
 * status line that fails later, or bytes after an interim response, are
 * the server's answer. */
TH_TEST(http1, a_failure_at_the_first_byte_is_told_apart) {
  cr_assert_eq(feed("STRAYHTTP/1.1 200 OK\r\n\r\n", 0, false),
               XFER_E_BAD_STATUS_LINE);
  cr_assert(xfer__http1_resp_failed_at_start(&r));
  cr_assert_eq(feed("STRAY", 1, false), XFER_E_BAD_STATUS_LINE);
  cr_assert(xfer__http1_resp_failed_at_start(&r), "in pieces too");
  cr_assert_eq(feed("HTTP/1.1 2000 OK\r\n\r\n", 0, false),
               XFER_E_BAD_STATUS_LINE);
  cr_assert(!xfer__http1_resp_failed_at_start(&r));
  cr_assert_eq(feed("HTTP/1.1 2000 OK\r\n\r\n", 3, false),
               XFER_E_BAD_STATUS_LINE);
  cr_assert(!xfer__http1_resp_failed_at_start(&r), "in pieces too");
  cr_assert_eq(feed("HTTP/1.1 100 Continue\r\n\r\nSTRAY", 0, false),
               XFER_E_BAD_STATUS_LINE);
  cr_assert(!xfer__http1_resp_failed_at_start(&r));
  cr_assert_eq(feed("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0,
                    false),
               XFER_OK);
  cr_assert(!xfer__http1_resp_failed_at_start(&r));
}

/* A body sent with a response that has none (to a HEAD, a 204, a 304):
 * the detail says so (it spoke of "bytes beyond the Content-Length of 0"
 * for the Content-Length the head said of the body it does not have). */
TH_TEST(http1, bytes_after_a_response_without_a_body) {
  cr_assert_eq(feed("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 0,
                    true),
               XFER_E_BAD_RESPONSE);
  cr_assert(strstr(r.detail, "5 bytes after a response that has no body "
                             "(a 200 to a HEAD request)"),
            "%s", r.detail);
  cr_assert(!r.keep_alive);
  cr_assert_eq(feed("HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\nabc",
                    0, false),
               XFER_E_BAD_RESPONSE);
  cr_assert(strstr(r.detail, "3 bytes after a response that has no body "
                             "(a 204)"),
            "%s", r.detail);
}

TH_TEST(http1, oversized_and_too_many_headers) {
  char big[4096];
  struct xfer__buf text = {0};

  memset(big, 'a', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  xfer__buf_append(&text, "HTTP/1.1 200 OK\r\nX-Big: ", 24);
  xfer__buf_append(&text, big, strlen(big));
  xfer__buf_append(&text, "\r\n\r\n", 4);
  xfer__http1_resp_init(&r, &events, NULL, false, 1024);
  cr_assert_eq(xfer__http1_resp_feed(&r, text.data, text.len),
               XFER_E_HEADERS_TOO_LARGE);
  cr_assert(strstr(r.detail, "limit of 1024 bytes"), "%s", r.detail);

  text.len = 0;
  xfer__buf_append(&text, "HTTP/1.1 200 OK\r\n", 17);
  for (int i = 0; i < 5000; i++)
    xfer__buf_append(&text, "X-H: v\r\n", 8);
  xfer__buf_append(&text, "\r\n", 2);
  xfer__http1_resp_init(&r, &events, NULL, false, 1024 * 1024);
  cr_assert_eq(xfer__http1_resp_feed(&r, text.data, text.len),
               XFER_E_HEADERS_TOO_LARGE);
  cr_assert(strstr(r.detail, "more than 500 header lines"), "%s", r.detail);
  xfer__buf_free(&text);
}

/* Interim responses' heads count against the limits of the response's
 * heads together, so an endless run of them ends (it did only at the
 * transfer's timeout). A status under 100 is no interim response but a
 * bad status line. */
TH_TEST(http1, interim_responses_spend_the_limits) {
  const char *hint = "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n";
  xfer_code rc = XFER_OK;
  int n;

  xfer__http1_resp_init(&r, &events, NULL, false, 1024);
  for (n = 0; n < 1000 && rc == XFER_OK; n++)
    rc = xfer__http1_resp_feed(&r, hint, strlen(hint));
  cr_assert_eq(rc, XFER_E_HEADERS_TOO_LARGE, "%d interims: %s", n, r.detail);
  cr_assert_leq(n, (int)(1024 / strlen(hint)) + 1, "%d interims", n);
  cr_assert(strstr(r.detail, "limit of 1024 bytes (interim"), "%s", r.detail);

  rc = XFER_OK;
  xfer__http1_resp_init(&r, &events, NULL, false, 1024 * 1024);
  for (n = 0; n < 1000 && rc == XFER_OK; n++)
    rc = xfer__http1_resp_feed(&r, hint, strlen(hint));
  cr_assert_eq(rc, XFER_E_HEADERS_TOO_LARGE, "%d interims: %s", n, r.detail);
  cr_assert_eq(n, 501, "one line each, 500 at most");
  cr_assert(strstr(r.detail, "more than 500 header lines (interim"), "%s",
            r.detail);

  /* A few interims leave the final response its own lines to count. */
  cr_assert_eq(feed("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                    "HTTP/1.1 200 OK\r\nA: 1\r\nContent-Length: 2\r\n\r\nok",
                    0, false),
               XFER_OK, "%s", r.detail);
  cr_assert(r.complete);
  cr_assert_eq(r.header_count, 2);

  expect_error("HTTP/1.1 099 Odd\r\nA: 1\r\n\r\n", XFER_E_BAD_STATUS_LINE,
               "under 100");
  cr_assert_eq(r.status, 0, "no status for the getters");
  cr_assert(!r.headers_done);
}

/* A 1xx that says close (or an HTTP/1.0 one, without keep-alive): the
 * final response that follows is read, and the connection is not kept
 * after it (llhttp took the 1xx as the connection's end, and the final
 * response failed with HPE_CLOSED_CONNECTION). */
TH_TEST(http1, an_interim_response_that_says_close) {
  expect_complete("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n"
                  "Connection: close\r\n\r\n"
                  "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                  false, 200, "ok", false);
  expect_complete("HTTP/1.0 100 Continue\r\n\r\n"
                  "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                  false, 200, "ok", false);
  /* HTTP/1.0 with Transfer-Encoding has faulty framing (RFC 9112 6.1):
   * read, and the connection closed after it, whatever it says. */
  expect_complete("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n"
                  "Connection: keep-alive\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                  false, 200, "ok", false);
  /* A close after an interim response says so. */
  cr_assert_eq(feed("HTTP/1.1 100 Continue\r\n\r\n", 0, false), XFER_OK);
  cr_assert_eq(xfer__http1_resp_eof(&r), XFER_E_PEER_CLOSED);
  cr_assert(strstr(r.detail, "after an interim (1xx) response"), "%s",
            r.detail);
  /* The next response on a connection is judged anew. */
  expect_complete("HTTP/1.1 100 Continue\r\n\r\n"
                  "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                  false, 200, "ok", true);
}

/* A status line of another HTTP than 1.x (llhttp takes 0.9 to 9.9), and a
 * 101 no request asked for, fail at their head. */
TH_TEST(http1, other_versions_and_an_unasked_101_are_refused) {
  expect_error("HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
               XFER_E_BAD_STATUS_LINE, "says HTTP/2.0");
  expect_error("HTTP/0.9 200 OK\r\nContent-Length: 0\r\n\r\n",
               XFER_E_BAD_STATUS_LINE, "says HTTP/0.9");
  expect_error("HTTP/2.0 100 Continue\r\n\r\n", XFER_E_BAD_STATUS_LINE,
               "says HTTP/2.0");
  cr_assert_eq(r.status, 0);
  expect_error("HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n"
               "Connection: Upgrade\r\n\r\n",
               XFER_E_BAD_RESPONSE, "switched protocols (101)");
  expect_error("HTTP/1.1 101 Switching Protocols\r\n\r\n",
               XFER_E_BAD_RESPONSE, "did not ask for");
  /* HTTP/1.0 and 1.1 are both answers. */
  expect_complete("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", false,
                  200, "ok", false);
}

TH_TEST(http1, early_eof_is_peer_closed) {
  cr_assert_eq(feed("", 0, false), XFER_OK);
  cr_assert_eq(xfer__http1_resp_eof(&r), XFER_E_PEER_CLOSED);
  cr_assert(strstr(r.detail, "before any response"));
  feed("HTTP/1.1 200 OK\r\nContent-Le", 0, false);
  cr_assert_eq(xfer__http1_resp_eof(&r), XFER_E_PEER_CLOSED);
  cr_assert(strstr(r.detail, "in the response headers"));
  feed("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n1234", 0, false);
  cr_assert_eq(xfer__http1_resp_eof(&r), XFER_E_PEER_CLOSED);
  cr_assert(strstr(r.detail, "after 4 body bytes"), "%s", r.detail);
}

static int abort_body(void *owner, const char *data, size_t len) { return 1; }

TH_TEST(http1, aborting_write_callback_stops_the_parse) {
  static const struct xfer__http1_events aborting = {NULL, abort_body};
  const char *text = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";

  xfer__http1_resp_init(&r, &aborting, NULL, false, 0);
  cr_assert_eq(xfer__http1_resp_feed(&r, text, strlen(text)),
               XFER_E_WRITE_CALLBACK);
  cr_assert_str_eq(r.detail, "the write callback aborted the transfer");
}

TH_TEST(http1, request_head) {
  struct xfer__buf head = {0}, user = {0};
  struct xfer__http1_req req = {"GET", "h:81", "/a?b", &user, -1, false, false};

  cr_assert(xfer__http1_build_head(&head, &req));
  cr_assert_str_eq(head.data, "GET /a?b HTTP/1.1\r\nHost: h:81\r\n\r\n");

  xfer__buf_append(&user, "Host: other\r\nX-A: 1\r\n", 21);
  req.method = "POST";
  req.body_len = 5;
  cr_assert(xfer__http1_build_head(&head, &req));
  cr_assert_str_eq(head.data, "POST /a?b HTTP/1.1\r\nHost: other\r\nX-A: 1\r\n"
                              "Content-Length: 5\r\n\r\n");
  req.body_len = -2;
  cr_assert(xfer__http1_build_head(&head, &req));
  cr_assert(strstr(head.data, "Transfer-Encoding: chunked\r\n\r\n"));
  cr_assert(xfer__http1_has_header(&user, "x-a"));
  cr_assert(!xfer__http1_has_header(&user, "X"));
  xfer__buf_free(&head);
  xfer__buf_free(&user);
}
