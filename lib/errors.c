/* Error texts, generated from the one table in xfer.h. */
#include "common.h"

static const char *const code_texts[] = {
#define XFER_CODE_TEXT_(name, value, text) [value] = text,
    XFER_CODE_MAP(XFER_CODE_TEXT_)
#undef XFER_CODE_TEXT_
};

static const char *const mcode_texts[] = {
#define XFER_MCODE_TEXT_(name, value, text) [value] = text,
    XFER_MCODE_MAP(XFER_MCODE_TEXT_)
#undef XFER_MCODE_TEXT_
};

static const char unknown_text[] = "unknown error code";

static const char *text_of(const char *const *texts, size_t count, int code) {
  if (code < 0 || (size_t)code >= count || !texts[code])
    return unknown_text;
  return texts[code];
}

const char *xfer_strerror(xfer_code code) {
  return text_of(code_texts, XFER__ARRAY_SIZE(code_texts), (int)code);
}

const char *xfer_multi_strerror(xfer_mcode code) {
  return text_of(mcode_texts, XFER__ARRAY_SIZE(mcode_texts), (int)code);
}
