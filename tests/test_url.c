/* lib/url.c: parsing, the request target, redirect resolution, errors. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "testhelp.h"
#include "url.h"

static struct xfer__url u;
static char detail[256];

static void url_end(void) { xfer__url_free(&u); }

static void expect_url(const char *text, const char *host,
                       const char *authority, unsigned port,
                       const char *target) {
  xfer__url_free(&u);
  cr_assert_eq(xfer__url_parse(&u, text, detail, sizeof(detail)), XFER_OK,
               "%s: %s", text, detail);
  cr_assert_str_eq(u.host, host, "%s", text);
  cr_assert_str_eq(u.authority, authority, "%s", text);
  cr_assert_eq(u.port, port, "%s", text);
  cr_assert_str_eq(u.target, target, "%s", text);
}

static void expect_error(const char *text, xfer_code code, const char *words) {
  xfer__url_free(&u);
  cr_assert_eq(xfer__url_parse(&u, text, detail, sizeof(detail)), code,
               "%s", text ? text : "(null)");
  cr_assert(strstr(detail, words), "%s: detail '%s' lacks '%s'",
            text ? text : "(null)", detail, words);
  cr_assert_null(u.block);
}

TH_TEST(url, parts_of_good_urls) {
  expect_url("http://example.com", "example.com", "example.com", 80, "/");
  expect_url("http://example.com/", "example.com", "example.com", 80, "/");
  expect_url("HTTP://Example.COM:8080/a/b?x=1&y=2#frag", "Example.COM",
             "Example.COM:8080", 8080, "/a/b?x=1&y=2");
  expect_url("http://127.0.0.1:3000/path", "127.0.0.1", "127.0.0.1:3000",
             3000, "/path");
  expect_url("http://[::1]:8080/v6", "::1", "[::1]:8080", 8080, "/v6");
  expect_url("http://[::1]/", "::1", "[::1]", 80, "/");
  expect_url("http://h/a%20b/%7Euser?q=%2F", "h", "h", 80,
             "/a%20b/%7Euser?q=%2F"); /* percent-encoding kept */
  expect_url("http://h?only=query", "h", "h", 80, "/?only=query");
  expect_url("http://h:80/x", "h", "h", 80, "/x");
  cr_assert(u.host_is_ipv6 == false);
  expect_url("http://[2001:db8::7]:1/", "2001:db8::7", "[2001:db8::7]:1", 1,
             "/");
  cr_assert(u.host_is_ipv6);
}

/* Dot segments are removed (RFC 3986 5.2.4), as curl does and as a
 * redirect's Location is resolved: they were sent as written, so the same
 * path went out two ways. The query is not a path: its dots stay. */
TH_TEST(url, dot_segments_are_removed) {
  expect_url("http://h/a/../b/./c", "h", "h", 80, "/b/c");
  expect_url("http://h/..", "h", "h", 80, "/");
  expect_url("http://h/a/b/..", "h", "h", 80, "/a/");
  expect_url("http://h/./?q=/../x", "h", "h", 80, "/?q=/../x");
  expect_url("http://[::1]:8/a/./b#f", "::1", "[::1]:8", 8, "/a/b");
  expect_url("http://h/a..b/.c/..d", "h", "h", 80, "/a..b/.c/..d");
}

TH_TEST(url, bad_urls_get_clear_errors) {
  expect_error(NULL, XFER_E_BAD_URL, "empty");
  expect_error("", XFER_E_BAD_URL, "empty");
  expect_error("https://example.com/", XFER_E_UNSUPPORTED_SCHEME,
               "https is not supported yet");
  expect_error("ftp://example.com/", XFER_E_UNSUPPORTED_SCHEME, "'ftp'");
  expect_error("http://user:pw@example.com/", XFER_E_BAD_URL, "credentials");
  expect_error("http://example.com:99999/", XFER_E_BAD_URL, "bad port");
  expect_error("http://example.com:0/", XFER_E_BAD_URL, "bad port");
  expect_error("http:///path", XFER_E_BAD_URL, "no host");
  expect_error("/just/a/path", XFER_E_BAD_URL, "no scheme");
  expect_error("http://exa mple.com/", XFER_E_BAD_URL, "malformed URL");
  expect_error("http://[::1/", XFER_E_BAD_URL, "malformed URL");
}

static void expect_resolved(const char *base, const char *ref,
                            const char *authority, const char *target) {
  struct xfer__url b, out;
  cr_assert_eq(xfer__url_parse(&b, base, detail, sizeof(detail)), XFER_OK);
  cr_assert_eq(xfer__url_resolve(&out, &b, ref, detail, sizeof(detail)),
               XFER_OK, "%s + %s: %s", base, ref, detail);
  cr_assert_str_eq(out.authority, authority, "%s + %s", base, ref);
  cr_assert_str_eq(out.target, target, "%s + %s", base, ref);
  xfer__url_free(&b);
  xfer__url_free(&out);
}

TH_TEST(url, redirect_locations_resolve_against_the_base) {
  expect_resolved("http://h:81/a/b?q", "/x?y", "h:81", "/x?y");
  expect_resolved("http://h:81/a/b?q", "c", "h:81", "/a/c");
  expect_resolved("http://h:81/a/b", "../up", "h:81", "/up");
  expect_resolved("http://h/a", "http://other:9/z", "other:9", "/z");
  expect_resolved("http://h/a", "//else/p", "else", "/p");
}

TH_TEST(url, bad_redirect_location_is_an_error) {
  struct xfer__url b, out;

  cr_assert_eq(xfer__url_parse(&b, "http://h/", detail, sizeof(detail)),
               XFER_OK);
  cr_assert_eq(xfer__url_resolve(&out, &b, "ftp://x/", detail, sizeof(detail)),
               XFER_E_UNSUPPORTED_SCHEME);
  cr_assert_eq(xfer__url_resolve(&out, &b, "http://[bad", detail,
                                 sizeof(detail)),
               XFER_E_BAD_URL);
  cr_assert(strstr(detail, "redirect location"));
  xfer__url_free(&b);
}

/* A host no request could reach is refused when the URL is set, with the
 * reason: an IPvFuture literal (as a name it would go to DNS), a name
 * longer than DNS allows (253 characters; labels of 63). */
TH_TEST(url, hosts_no_request_could_reach_are_refused) {
  char url[600], label63[64], label64[65];
  char name[300];

  expect_error("http://[v1.x]/", XFER_E_BAD_URL, "IPvFuture");
  memset(label63, 'a', 63);
  label63[63] = '\0';
  memset(label64, 'b', 64);
  label64[64] = '\0';
  snprintf(url, sizeof(url), "http://%s.example/", label64);
  expect_error(url, XFER_E_BAD_URL, "label of 64 characters");
  snprintf(name, sizeof(name), "%s.example", label63);
  snprintf(url, sizeof(url), "http://%s/", name);
  expect_url(url, name, name, 80, "/");
  /* 4 labels of 63 and dots: 255 characters; 253 is the most. */
  snprintf(name, sizeof(name), "%s.%s.%s.%s", label63, label63, label63,
           label63);
  snprintf(url, sizeof(url), "http://%s/", name);
  expect_error(url, XFER_E_BAD_URL, "255 characters long (DNS allows 253)");
  name[253] = '\0'; /* 253: the most DNS allows */
  snprintf(url, sizeof(url), "http://%s/", name);
  xfer__url_free(&u);
  cr_assert_eq(xfer__url_parse(&u, url, detail, sizeof(detail)), XFER_OK,
               "%s", detail);
  cr_assert_eq(strlen(u.host), 253);
  expect_url("http://[::1]/", "::1", "[::1]", 80, "/"); /* literals aside */
}

/* A host name is what a resolver looks up: its percent-encoding decoded
 * (in the lookup and the Host header alike), and then nothing but what a
 * name can hold; the URL grammar's sub-delimiters, a NUL, a byte past
 * ASCII are refused when the URL is set, with the character. */
TH_TEST(url, host_names_are_decoded_and_checked) {
  expect_url("http://ex%61mple.COM:81/p%61th", "example.COM", "example.COM:81",
             81, "/p%61th");
  expect_url("http://a_b.example/", "a_b.example", "a_b.example", 80, "/");
  expect_error("http://a;b/", XFER_E_BAD_URL, "no host name can have: ';'");
  expect_error("http://a,b.example/", XFER_E_BAD_URL, "have: ','");
  expect_error("http://a%00b/", XFER_E_BAD_URL, "byte 0x00");
  expect_error("http://a%2Fb/", XFER_E_BAD_URL, "have: '/'");
  expect_error("http://caf%C3%A9.example/", XFER_E_BAD_URL, "byte 0xc3");
  expect_error("http://a!b/", XFER_E_BAD_URL, "have: '!'");
}

/* A Location as servers send it: spaces, UTF-8 and the characters a URI
 * has no place for are percent-encoded rather than failing the redirect,
 * a '%' that starts no escape too; escapes are kept. */
TH_TEST(url, redirect_locations_are_encoded_as_curl_does) {
  expect_resolved("http://h/a", "/a b/\xc3\xbc?x=|{}", "h",
                  "/a%20b/%C3%BC?x=%7C%7B%7D");
  expect_resolved("http://h/a", "/100%?q=%41", "h", "/100%25?q=%41");
  expect_resolved("http://h/a/b", "c d", "h", "/a/c%20d");
  /* Brackets past the authority are data; in it, an IPv6 literal. */
  expect_resolved("http://h/a", "/search?a[]=1", "h", "/search?a%5B%5D=1");
  expect_resolved("http://h/a", "http://h2:8/x[1]", "h2:8", "/x%5B1%5D");
  {
    struct xfer__url b, out;
    cr_assert_eq(xfer__url_parse(&b, "http://h/a", detail, sizeof(detail)),
                 XFER_OK);
    cr_assert_eq(xfer__url_resolve(&out, &b, "//[::1]:8/y?[", detail,
                                   sizeof(detail)),
                 XFER_OK, "%s", detail);
    cr_assert(out.host_is_ipv6);
    cr_assert_eq(out.port, 8);
    cr_assert_str_eq(out.target, "/y?%5B");
    xfer__url_free(&b);
    xfer__url_free(&out);
  }
}

/* uriparser allocates through the library's allocator: each of its
 * allocations, in a parse and in a redirect's resolution, can fail, and
 * that is XFER_E_OUT_OF_MEMORY ("out of memory"), never a bad URL, with
 * nothing left allocated. */
TH_TEST(url, out_of_memory_is_said_as_such) {
  const char *text = "http://h:81/a/b?q=1";
  struct xfer__url base, out;
  long calls;
  xfer_code rc;

  cr_assert_eq(xfer_mem_set(&th_mem), XFER_OK);
  th_mem_fail_at(0); /* counting from here */
  cr_assert_eq(xfer__url_parse(&base, text, detail, sizeof(detail)), XFER_OK);
  calls = th_mem_calls();
  cr_assert_gt(calls, 2, "uriparser's blocks are counted: %ld", calls);
  for (long n = 1; n <= calls; n++) {
    th_mem_fail_at(n);
    rc = xfer__url_parse(&u, text, detail, sizeof(detail));
    cr_assert_eq(rc, XFER_E_OUT_OF_MEMORY, "failing call %ld: %s", n, detail);
    cr_assert_str_eq(detail, "out of memory");
    xfer__url_free(&u);
  }
  th_mem_fail_at(0);
  cr_assert_eq(xfer__url_resolve(&out, &base, "../x y", detail,
                                 sizeof(detail)),
               XFER_OK, "%s", detail);
  calls = th_mem_calls();
  xfer__url_free(&out);
  for (long n = 1; n <= calls; n++) {
    th_mem_fail_at(n);
    rc = xfer__url_resolve(&out, &base, "../x y", detail, sizeof(detail));
    cr_assert_eq(rc, XFER_E_OUT_OF_MEMORY, "failing call %ld: %s", n, detail);
    cr_assert_str_eq(detail, "out of memory");
    xfer__url_free(&out);
  }
  th_mem_fail_at(0);
  xfer__url_free(&base);
  cr_assert_eq(th_mem_live_bytes(), 0);
  cr_assert_eq(xfer_mem_set(NULL), XFER_OK);
}
