/*
 * uv-fetch: fetches URLs in parallel with a multi driven by libuv, the
 * classic libcurl "multi-uv" pattern: a uv_poll_t per socket, started,
 * changed and stopped from the socket callback, and one uv_timer_t armed
 * from the timer callback. Every libuv callback hands the event to
 * xfer_multi_socket_action() and then collects finished transfers.
 *
 *   uv-fetch URL...     prints "URL: STATUS, N bytes" or "URL: error"
 *
 * Build: cc uv-fetch.c $(pkg-config --cflags --libs libxfer libuv)
 */
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>
#include <xfer/xfer.h>

struct watch { /* one per socket the multi reported */
  uv_poll_t poll;
  int fd;
};

struct fetch { /* one per URL */
  const char *url;
  size_t bytes;
};

static uv_loop_t *loop;
static uv_timer_t timer;
static xfer_multi *multi;
static int failures, pending;

static size_t count_body(const char *data, size_t len, void *userp) {
  (void)data;
  ((struct fetch *)userp)->bytes += len;
  return len;
}

static void collect_finished(void) {
  const xfer_msg *msg;

  while ((msg = xfer_multi_info_read(multi, NULL))) {
    struct fetch *f = xfer_get_private(msg->x);
    if (msg->result == XFER_OK) {
      printf("%s: %d, %zu bytes\n", f->url, xfer_get_status(msg->x),
             f->bytes);
    } else {
      printf("%s: %s: %s\n", f->url, xfer_strerror(msg->result),
             xfer_get_error_detail(msg->x));
      failures++;
    }
    xfer_multi_remove(multi, msg->x);
    xfer_free(msg->x);
    /* All done: stop the loop. (It would not stop by itself: the multi
     * keeps its wake-up fd watched, and a finished connection stays
     * attached, still watched, for a while.) */
    if (--pending == 0)
      uv_stop(loop);
  }
}

static void on_poll(uv_poll_t *handle, int status, int events) {
  struct watch *w = handle->data;
  int flags = 0;

  if (status < 0)
    flags = XFER_CSELECT_ERR;
  if (events & UV_READABLE)
    flags |= XFER_CSELECT_IN;
  if (events & UV_WRITABLE)
    flags |= XFER_CSELECT_OUT;
  xfer_multi_socket_action(multi, w->fd, flags, NULL);
  collect_finished();
}

static void on_timeout(uv_timer_t *t) {
  (void)t;
  xfer_multi_socket_action(multi, XFER_SOCKET_TIMEOUT, 0, NULL);
  collect_finished();
}

static int timer_cb(xfer_multi *m, long timeout_ms, void *userp) {
  (void)m, (void)userp;
  if (timeout_ms < 0)
    uv_timer_stop(&timer);
  else /* 0: as soon as possible, from the loop (never from in here) */
    uv_timer_start(&timer, on_timeout, (uint64_t)timeout_ms, 0);
  return 0;
}

static void free_watch(uv_handle_t *handle) { free(handle->data); }

static int socket_cb(xfer_multi *m, int fd, int what, void *userp,
                     void *socketp) {
  struct watch *w = socketp;
  int events = 0;

  (void)userp;
  if (what == XFER_POLL_REMOVE) {
    /* Told before the fd is closed: stop polling it now. */
    if (w) {
      uv_poll_stop(&w->poll);
      uv_close((uv_handle_t *)&w->poll, free_watch);
    }
    return 0;
  }
  if (what & XFER_POLL_IN)
    events |= UV_READABLE;
  if (what & XFER_POLL_OUT)
    events |= UV_WRITABLE;
  if (!w) { /* a new socket */
    w = malloc(sizeof(*w));
    if (!w || uv_poll_init_socket(loop, &w->poll, fd) != 0) {
      free(w);
      return -1; /* the transfer that needed it fails */
    }
    w->fd = fd;
    w->poll.data = w;
    if (uv_poll_start(&w->poll, events, on_poll) != 0) {
      /* Refused: not remembered, so no REMOVE comes for it; the handle
       * goes through its close callback. */
      uv_close((uv_handle_t *)&w->poll, free_watch);
      return -1;
    }
    xfer_multi_assign(m, fd, w); /* remembered once libuv watches it */
    return 0;
  }
  return uv_poll_start(&w->poll, events, on_poll) == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
  struct fetch *fetches;

  if (argc < 2) {
    fprintf(stderr, "usage: uv-fetch URL...\n");
    return 2;
  }
  loop = uv_default_loop();
  uv_timer_init(loop, &timer);
  multi = xfer_multi_new(NULL);
  if (!multi) {
    fprintf(stderr, "uv-fetch: out of memory\n");
    return 1;
  }
  xfer_multi_set_socket_cb(multi, socket_cb, NULL);
  xfer_multi_set_timer_cb(multi, timer_cb, NULL);
  fetches = calloc((size_t)argc, sizeof(*fetches));
  if (!fetches) {
    fprintf(stderr, "uv-fetch: out of memory\n");
    return 1;
  }
  for (int i = 1; i < argc; i++) {
    xfer *x = xfer_new();
    fetches[i].url = argv[i];
    if (!x || xfer_set_url(x, argv[i]) != XFER_OK) {
      printf("%s: %s\n", argv[i], x ? xfer_get_error_detail(x) : "no memory");
      xfer_free(x);
      failures++;
      continue;
    }
    xfer_set_private(x, &fetches[i]);
    xfer_set_write_cb(x, count_body, &fetches[i]);
    if (xfer_multi_add(multi, x) != XFER_M_OK) { /* the timer: 0, soon */
      printf("%s: could not be added\n", argv[i]);
      xfer_free(x);
      failures++;
      continue;
    }
    pending++;
  }
  if (pending)
    uv_run(loop, UV_RUN_DEFAULT); /* until collect_finished() stops it */
  xfer_multi_destroy(multi); /* REMOVEs what is still watched */
  uv_close((uv_handle_t *)&timer, NULL);
  uv_run(loop, UV_RUN_DEFAULT); /* let the closes finish */
  uv_loop_close(loop);
  free(fetches);
  return failures ? 1 : 0;
}
