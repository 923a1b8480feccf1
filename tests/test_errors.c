/* lib/errors.c: the error enums and their texts. */
#include <criterion/criterion.h>
#include <string.h>

#include "testhelp.h"


static void errors_end(void) {}


TH_TEST(errors, codes_keep_their_numbers) {
  /* Never renumbered: applications store and compare these values. */
  cr_assert_eq(XFER_OK, 0);
  cr_assert_eq(XFER_E_BAD_HANDLE, 1);
  cr_assert_eq(XFER_E_OUT_OF_MEMORY, 3);
  cr_assert_eq(XFER_E_NO_URL, 5);
  cr_assert_eq(XFER_E_SOCKET_CALLBACK, 6);
  cr_assert_eq(XFER_M_OK, 0);
  cr_assert_eq(XFER_M_BAD_HANDLE, 1);
  cr_assert_eq(XFER_M_RECURSIVE_API_CALL, 5);
  cr_assert_eq(XFER_M_POLL_FAILED, 9);
}

TH_TEST(errors, every_code_has_its_own_text) {
  for (int i = 0; i < XFER_CODE_LAST_; i++) {
    const char *t = xfer_strerror((xfer_code)i);
    cr_assert(t && *t, "code %d has no text", i);
    cr_assert_str_neq(t, "unknown error code", "code %d", i);
    for (int j = 0; j < i; j++)
      cr_assert_str_neq(t, xfer_strerror((xfer_code)j), "codes %d, %d", i, j);
  }
  for (int i = 0; i < XFER_MCODE_LAST_; i++) {
    const char *t = xfer_multi_strerror((xfer_mcode)i);
    cr_assert(t && *t, "mcode %d has no text", i);
    cr_assert_str_neq(t, "unknown error code", "mcode %d", i);
    for (int j = 0; j < i; j++)
      cr_assert_str_neq(t, xfer_multi_strerror((xfer_mcode)j), "mcodes %d, %d",
                        i, j);
  }
}

TH_TEST(errors, texts_match_the_table) {
  cr_assert_str_eq(xfer_strerror(XFER_OK), "no error");
  /* Pools and xfer_mem_set() return these too: no text names a
   * transfer. */
  cr_assert_str_eq(xfer_strerror(XFER_E_BAD_HANDLE), "not a valid handle");
  cr_assert_str_eq(xfer_strerror(XFER_E_IN_USE), "the handle is in use");
  cr_assert_str_eq(xfer_strerror(XFER_E_NO_URL), "no URL set on the transfer");
  cr_assert_str_eq(xfer_multi_strerror(XFER_M_RECURSIVE_API_CALL),
                   "multi call made from inside a callback");
}

TH_TEST(errors, unknown_values_are_named_unknown) {
  cr_assert_str_eq(xfer_strerror((xfer_code)-1), "unknown error code");
  cr_assert_str_eq(xfer_strerror(XFER_CODE_LAST_), "unknown error code");
  cr_assert_str_eq(xfer_strerror((xfer_code)100000), "unknown error code");
  cr_assert_str_eq(xfer_multi_strerror(XFER_MCODE_LAST_), "unknown error code");
  cr_assert_str_eq(xfer_multi_strerror((xfer_mcode)-7), "unknown error code");
}
