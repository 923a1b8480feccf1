/*
 * The transfer handle: life cycle, its own clock, the timeline and the
 * error detail. The protocol work is done by its handler.
 */
#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "mem.h"
#include "multi.h"
#include "transfer.h"

/* A transfer that was given nothing to do (no URL yet) fails at once with
 * a clear error instead of hanging. */
static int no_url_run(xfer *x, unsigned due) {
  (void)due;
  xfer__set_detail(x, "the transfer has no URL to fetch");
  return XFER_E_NO_URL;
}

static const struct xfer__handler no_url_handler = {
    .name = "none",
    .run = no_url_run,
};

bool xfer__valid(const xfer *x) { return x && x->magic == XFER__MAGIC_XFER; }

xfer *xfer_new(void) {
  xfer *x = xfer__calloc(1, sizeof(*x));

  if (!x)
    return NULL;
  x->magic = XFER__MAGIC_XFER;
  x->state = XFER__STATE_IDLE;
  x->handler = &no_url_handler;
  x->now = 0;
  for (size_t i = 0; i < XFER__PHASE_COUNT; i++)
    x->stamps[i] = XFER__TIME_NEVER;
  xfer__expiry_init(&x->expiry);
  xfer__mev_tracker_init(&x->ev, XFER__MEV_XFER, NULL);
  xfer__list_init(&x->multi_node);
  xfer__list_init(&x->dirty_node);
  xfer__list_init(&x->msg_node);
  return x;
}

xfer_code xfer_free(xfer *x) {
  if (!x)
    return XFER_OK;
  if (!xfer__valid(x))
    return XFER_E_BAD_HANDLE;
  if (x->multi)
    return XFER_E_IN_USE;
  x->magic = XFER__MAGIC_DEAD;
  xfer__free(x);
  return XFER_OK;
}

xfer_code xfer_set_private(xfer *x, void *ptr) {
  if (!xfer__valid(x))
    return XFER_E_BAD_HANDLE;
  x->app_private = ptr;
  return XFER_OK;
}

void *xfer_get_private(const xfer *x) {
  return xfer__valid(x) ? x->app_private : NULL;
}

const char *xfer_get_error_detail(const xfer *x) {
  return xfer__valid(x) ? x->detail : "";
}

xfer_code xfer_get_timeline(const xfer *x, xfer_timeline *out) {
  int64_t *fields[XFER__PHASE_COUNT];

  if (!xfer__valid(x))
    return XFER_E_BAD_HANDLE;
  if (!out)
    return XFER_E_BAD_ARGUMENT;
  fields[XFER__PHASE_QUEUE] = &out->queue_us;
  fields[XFER__PHASE_NAMELOOKUP] = &out->namelookup_us;
  fields[XFER__PHASE_CONNECT] = &out->connect_us;
  fields[XFER__PHASE_APPCONNECT] = &out->appconnect_us;
  fields[XFER__PHASE_PRETRANSFER] = &out->pretransfer_us;
  fields[XFER__PHASE_STARTTRANSFER] = &out->starttransfer_us;
  fields[XFER__PHASE_TOTAL] = &out->total_us;
  for (size_t i = 0; i < XFER__PHASE_COUNT; i++)
    *fields[i] = x->stamps[i] == XFER__TIME_NEVER
                     ? -1
                     : (x->stamps[i] - x->added_at) / XFER__NS_PER_US;
  return XFER_OK;
}

xfer_code xfer__set_handler(xfer *x, const struct xfer__handler *h,
                            void *ctx) {
  if (!xfer__valid(x))
    return XFER_E_BAD_HANDLE;
  if (x->multi)
    return XFER_E_IN_USE;
  x->handler = h ? h : &no_url_handler;
  x->handler_ctx = ctx;
  return XFER_OK;
}

void xfer__start(xfer *x, xfer__time now) {
  xfer__now_at_least(x, now);
  x->state = XFER__STATE_RUNNING;
  x->added_at = x->now;
  for (size_t i = 0; i < XFER__PHASE_COUNT; i++)
    x->stamps[i] = XFER__TIME_NEVER;
  x->due = 0;
  x->pending_error = XFER_OK;
  x->detail[0] = '\0';
  memset(&x->msg, 0, sizeof(x->msg));
}

void xfer__now_update(xfer *x, const xfer *from) {
  assert(x->multi && x->multi == from->multi);
  xfer__now_at_least(x, from->now);
  xfer__multi_mark_dirty(x->multi, x);
}

void xfer__now_refresh(xfer *x) {
  assert(x->multi);
  xfer__now_at_least(x, xfer__multi_now(x->multi));
}

void xfer__stamp(xfer *x, enum xfer__phase p) {
  xfer__time previous = x->added_at;

  assert(p < XFER__PHASE_COUNT);
  for (size_t i = 0; i < (size_t)p; i++) {
    if (x->stamps[i] == XFER__TIME_NEVER)
      x->stamps[i] = previous;
    previous = x->stamps[i];
  }
  x->stamps[p] = x->now;
}

void xfer__expire_in(xfer *x, enum xfer__expire_id id, xfer__time delay_ns) {
  assert(x->multi);
  xfer__expiry_set(&x->multi->timers, &x->expiry, id, x->now + delay_ns);
}

void xfer__expire_clear(xfer *x, enum xfer__expire_id id) {
  assert(x->multi);
  xfer__expiry_clear(&x->multi->timers, &x->expiry, id);
}

void xfer__set_detail(xfer *x, const char *fmt, ...) {
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(x->detail, sizeof(x->detail), fmt, ap);
  va_end(ap);
}
