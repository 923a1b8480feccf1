/* lib/http1.c: request heads and the response parser, fed bytes directly. */
#include <criterion/criterion.h>
#include <stdio.h>
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

static void http1_end(void) {
  xfer__http1_resp_free(&r);
  xfer__buf_free(&body);
}

/* Feeds text in pieces of `step` bytes (0: all at once). */
static xfer_code feed(const char *text, size_t step, bool head) {
  size_t len = strlen(text);
  xfer_code rc = XFER_OK;

  xfer__http1_resp_init(&r, &events, NULL, head, 0);
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

  for (size_t i = 0; i < XFER__ARRAY_SIZE(steps); i++) {
    cr_assert_eq(feed(text, steps[i], head), XFER_OK, "step %zu: %s",
                 steps[i], r.detail);
    cr_assert(r.complete, "step %zu: not complete", steps[i]);
    cr_assert_eq(r.status, status);
    cr_assert_eq(body.len, strlen(expected_body), "step %zu", steps[i]);
    cr_assert(body.len == 0 || memcmp(body.data, expected_body, body.len) == 0);
    cr_assert_eq(r.keep_alive, keep_alive, "step %zu", steps[i]);
  }
}

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
}

TH_TEST(http1, responses_without_body) {
  expect_complete("HTTP/1.1 204 No Content\r\n\r\n", false, 204, "", true);
  expect_complete("HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n",
                  false, 304, "", true);
  /* HEAD: Content-Length announces what a GET would get. */
  expect_complete("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", true, 200,
                  "", true);
}

TH_TEST(http1, interim_responses_are_skipped) {
  expect_complete("HTTP/1.1 100 Continue\r\n\r\n"
                  "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                  "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nok",
                  false, 200, "ok", true);
  cr_assert_null(xfer__http1_resp_header(&r, "Link"), "1xx headers dropped");
  cr_assert_str_eq(xfer__http1_resp_header(&r, "x-a"), "b");
  cr_assert_eq(header_calls, 2);
}

/* The reason phrase of the final response, whatever the split; an interim
 * response's phrase does not stay. */
static void expect_reason(const char *text, const char *reason) {
  size_t steps[] = {0, 1, 5};

  for (size_t i = 0; i < XFER__ARRAY_SIZE(steps); i++) {
    cr_assert_eq(feed(text, steps[i], false), XFER_OK, "%s", r.detail);
    cr_assert_str_eq(r.reason, reason, "step %zu", steps[i]);
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
  snprintf(line, sizeof(line),
           "HTTP/1.1 200 %0300d\r\nContent-Length: 0\r\n\r\n", 0);
  cr_assert_eq(feed(line, 0, false), XFER_OK, "%s", r.detail);
  cr_assert_eq(strlen(r.reason), sizeof(r.reason) - 1, "cut to fit");
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

static void expect_error(const char *text, xfer_code code, const char *words) {
  size_t steps[] = {0, 1, 5};

  for (size_t i = 0; i < XFER__ARRAY_SIZE(steps); i++) {
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
  struct xfer__http1_req req = {"GET", "h:81", "/a?b", &user, -1};

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
