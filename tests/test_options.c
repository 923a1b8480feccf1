/* lib/options.c: setters check their input at once; getters before and
 * after a run. */
#include <criterion/criterion.h>
#include <string.h>

#include "testhelp.h"

static xfer *x;

static void setup(void) { x = xfer_new(); }

static void options_end(void) { cr_assert_eq(xfer_free(x), XFER_OK); }

TestSuite(options, .init = setup);

TH_TEST(options, url_is_checked_when_set) {
  cr_assert_eq(xfer_set_url(x, "http://h:8/p"), XFER_OK);
  cr_assert_eq(xfer_set_url(x, "https://h/"), XFER_E_UNSUPPORTED_SCHEME);
  cr_assert(strstr(xfer_get_error_detail(x), "https is not supported yet"));
  cr_assert_eq(xfer_set_url(x, "http://h:70000/"), XFER_E_BAD_URL);
  cr_assert(strstr(xfer_get_error_detail(x), "bad port"));
  cr_assert_eq(xfer_set_url(x, NULL), XFER_E_BAD_URL);
  cr_assert_str_eq(x->opts.url.authority, "h:8", "a bad URL keeps the old");
}

TH_TEST(options, methods_are_tokens) {
  cr_assert_eq(xfer_set_method(x, "PATCH"), XFER_OK);
  cr_assert_eq(xfer_set_method(x, "M-SEARCH"), XFER_OK);
  cr_assert_eq(xfer_set_method(x, "GET /x HTTP/1.1\r\n"), XFER_E_BAD_ARGUMENT);
  cr_assert(strstr(xfer_get_error_detail(x), "not an HTTP token"));
  cr_assert_eq(xfer_set_method(x, ""), XFER_E_BAD_ARGUMENT);
  cr_assert_eq(xfer_set_method(x, NULL), XFER_E_BAD_ARGUMENT);
  cr_assert_eq(xfer_set_method(x, "AVERYLONGMETHODNAMETHATGOESONANDON"),
               XFER_E_BAD_ARGUMENT);
  cr_assert_str_eq(x->opts.method, "M-SEARCH");
  /* At most 31 bytes (the page): 31 taken, 32 refused. */
  cr_assert_eq(xfer_set_method(x, "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDE"), XFER_OK);
  cr_assert_eq(xfer_set_method(x, "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEF"),
               XFER_E_BAD_ARGUMENT);
  cr_assert_str_eq(x->opts.method, "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDE");
}

/* A URL taken clears the detail a refused one left (xfer_set_url's
 * page). */
TH_TEST(options, a_url_taken_clears_the_detail) {
  cr_assert_eq(xfer_set_url(x, "http://h:0/"), XFER_E_BAD_URL);
  cr_assert_neq(*xfer_get_error_detail(x), '\0');
  cr_assert_eq(xfer_set_url(x, "http://h/"), XFER_OK);
  cr_assert_str_eq(xfer_get_error_detail(x), "");
}

TH_TEST(options, headers_cannot_inject) {
  cr_assert_eq(xfer_add_header(x, "X-Ok", "value"), XFER_OK);
  cr_assert_eq(xfer_add_header(x, "X-Bad", "v\r\nX-Injected: 1"),
               XFER_E_BAD_ARGUMENT);
  cr_assert(strstr(xfer_get_error_detail(x), "control character 0x0d"),
            "%s", xfer_get_error_detail(x));
  cr_assert_eq(xfer_add_header(x, "X-Bad", "v\n"), XFER_E_BAD_ARGUMENT);
  /* Every control character but tab, and DEL: no server should have to
   * parse them. */
  cr_assert_eq(xfer_add_header(x, "X-Bad", "a\x01" "b"), XFER_E_BAD_ARGUMENT);
  cr_assert(strstr(xfer_get_error_detail(x), "0x01"));
  cr_assert_eq(xfer_add_header(x, "X-Bad", "a\x7f"), XFER_E_BAD_ARGUMENT);
  cr_assert_eq(xfer_add_header(x, "X-Bad", "\x1f"), XFER_E_BAD_ARGUMENT);
  cr_assert_eq(xfer_add_header(x, "Bad Name", "v"), XFER_E_BAD_ARGUMENT);
  cr_assert_eq(xfer_add_header(x, "X:Y", "v"), XFER_E_BAD_ARGUMENT);
  cr_assert_eq(xfer_add_header(x, NULL, "v"), XFER_E_BAD_ARGUMENT);
  cr_assert_eq(xfer_add_header(x, "X-Tab", "a\tb"), XFER_OK, "a tab is fine");
  cr_assert_str_eq(x->opts.headers.data, "X-Ok: value\r\nX-Tab: a\tb\r\n");
  cr_assert_eq(xfer_clear_headers(x), XFER_OK);
  cr_assert_eq(x->opts.headers.len, 0);
  cr_assert_null(x->opts.headers.data, "the lines' memory is freed too");
  cr_assert_eq(xfer_add_header(x, "X-Again", "1"), XFER_OK);
  cr_assert_str_eq(x->opts.headers.data, "X-Again: 1\r\n");
}

TH_TEST(options, numbers_and_addresses) {
  cr_assert_eq(xfer_set_ip_version(x, XFER_IPRESOLVE_V6), XFER_OK);
  cr_assert_eq(xfer_set_ip_version(x, 5), XFER_E_BAD_ARGUMENT);
  cr_assert_eq(xfer_set_local_address(x, "127.0.0.2"), XFER_OK);
  cr_assert_eq(xfer_set_local_address(x, "::1"), XFER_OK);
  cr_assert_eq(xfer_set_local_address(x, "localhost"), XFER_E_BAD_ARGUMENT);
  cr_assert(strstr(xfer_get_error_detail(x), "not a numeric IP"));
  cr_assert_str_eq(x->opts.local_text, "::1");
  cr_assert_eq(xfer_set_local_address(x, NULL), XFER_OK);
  cr_assert_str_eq(x->opts.local_text, "");
  cr_assert_eq(xfer_set_connect_timeout_ms(x, -1), XFER_E_BAD_ARGUMENT);
  cr_assert_eq(xfer_set_timeout_ms(x, -5), XFER_E_BAD_ARGUMENT);
  cr_assert_eq(xfer_set_timeout_ms(x, 1000), XFER_OK);
  cr_assert_eq(xfer_set_low_speed(x, 100, 0), XFER_E_BAD_ARGUMENT);
  cr_assert_eq(xfer_set_low_speed(x, 100, 1000), XFER_OK);
  cr_assert_eq(xfer_set_max_header_size(x, 10), XFER_E_BAD_ARGUMENT);
  /* Offsets into a head are 32 bits: a limit past 1 GiB is refused. */
  cr_assert_eq(xfer_set_max_header_size(x, ((size_t)1 << 30) + 1),
               XFER_E_BAD_ARGUMENT);
  cr_assert(strstr(xfer_get_error_detail(x), "over the most"), "%s",
            xfer_get_error_detail(x));
  cr_assert_eq(xfer_set_max_header_size(x, SIZE_MAX), XFER_E_BAD_ARGUMENT);
  cr_assert_eq(xfer_set_max_header_size(x, (size_t)1 << 30), XFER_OK);
  cr_assert_eq(xfer_set_follow_redirects(x, -1), XFER_E_BAD_ARGUMENT);
  cr_assert_eq(xfer_set_body_cb(x, NULL, NULL, -2), XFER_E_BAD_ARGUMENT);
  cr_assert_eq(xfer_set_body(x, NULL, 5), XFER_E_BAD_ARGUMENT);
  cr_assert_eq(xfer_set_body(x, "abc", 3), XFER_OK);
  cr_assert_eq(x->opts.body_len, 3);
}

TH_TEST(options, nothing_changes_while_added_and_bad_handles) {
  xfer_multi *m = xfer_multi_new(NULL);

  cr_assert_eq(xfer_multi_add(m, x), XFER_M_OK);
  cr_assert_eq(xfer_set_url(x, "http://h/"), XFER_E_IN_USE);
  cr_assert_eq(xfer_set_method(x, "GET"), XFER_E_IN_USE);
  cr_assert_eq(xfer_add_header(x, "A", "b"), XFER_E_IN_USE);
  cr_assert_eq(xfer_set_timeout_ms(x, 1), XFER_E_IN_USE);
  cr_assert_eq(xfer_multi_remove(m, x), XFER_M_OK);
  cr_assert_eq(xfer_set_write_cb((xfer *)m, NULL, NULL), XFER_E_BAD_HANDLE);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_set_url(NULL, "http://h/"), XFER_E_BAD_HANDLE);
  cr_assert_eq(xfer_set_timeout_ms(NULL, 1), XFER_E_BAD_HANDLE);
  cr_assert_eq(xfer_get_status(NULL), 0);
  cr_assert_null(xfer_get_header(NULL, "a"));
  cr_assert_eq(xfer_get_result(NULL), XFER_E_BAD_HANDLE);
}

TH_TEST(options, getters_before_any_run) {
  const char *n, *v;
  uint64_t up = 9, down = 9;

  cr_assert_eq(xfer_get_status(x), 0);
  cr_assert_null(xfer_get_header(x, "Content-Length"));
  cr_assert_eq(xfer_get_header_count(x), 0);
  cr_assert_eq(xfer_get_header_at(x, 0, &n, &v), XFER_E_BAD_ARGUMENT);
  cr_assert_eq(xfer_get_bytes(x, &up, &down), XFER_OK);
  cr_assert_eq(up + down, 0);
  cr_assert_eq(xfer_get_conn_id(x), 0);
  cr_assert_eq(xfer_get_reused(x), 0);
  cr_assert_eq(xfer_get_result(x), XFER_OK);
}
