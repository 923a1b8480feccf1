/*
 * One epoll loop driving one multi (see loop.h): the socket callback
 * mapped to epoll_ctl, the timer callback kept as a deadline, and
 * xfer_multi_socket_action() told what epoll saw.
 *
 * Level-triggered epoll (the default), not EPOLLET: like poll(), libxfer
 * may leave a socket's condition standing (bytes past the end of a
 * response, an idle pooled connection watched only for its close, a
 * resolver socket) and counts on hearing again while it holds. An
 * edge-triggered loop would hear once and could stall.
 */
#define _GNU_SOURCE
#include "loop.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The socket callback: each call is a change, mapped to one epoll_ctl. */
static int on_socket(xfer_multi *m, int fd, int what, void *userp,
                     void *socketp) {
  struct loop *l = userp;
  struct epoll_event ev = {.data.fd = fd};

  if (what == XFER_POLL_REMOVE)
    return epoll_ctl(l->ep, EPOLL_CTL_DEL, fd, NULL);
  ev.events = (what & XFER_POLL_IN ? EPOLLIN : 0) |
              (what & XFER_POLL_OUT ? EPOLLOUT : 0);
  if (!socketp) { /* new to us: once epoll knows it, remember that */
    if (epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &ev))
      return -1; /* refused: asked again as new, if it is asked again */
    xfer_multi_assign(m, fd, l);
    return 0;
  }
  return epoll_ctl(l->ep, EPOLL_CTL_MOD, fd, &ev);
}

/* The timer callback: kept as a deadline; the loop turns it into
 * epoll_wait's timeout each time round. */
static int on_timer(xfer_multi *m, long timeout_ms, void *userp) {
  struct loop *l = userp;

  (void)m;
  l->deadline_ms = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
  return 0;
}

/* Runs the multi until the transfer of `x` is done; its result. */
xfer_code loop_run(struct loop *l, xfer *x) {
  xfer_multi *m = l->m;
  struct epoll_event evs[16];
  const xfer_msg *msg;
  xfer_mcode added;
  int running = 1;

  /* Adding calls the callbacks: a timer at once, maybe sockets. */
  if ((added = xfer_multi_add(m, x)) != XFER_M_OK) {
    fprintf(stderr, "xfer_multi_add: %s\n", xfer_multi_strerror(added));
    return XFER_E_BAD_ARGUMENT;
  }
  for (;;) {
    long long wait = -1;
    int n;

    /* Messages first: this loop runs one transfer at a time, so the
     * message about x ends the run. */
    while ((msg = xfer_multi_info_read(m, NULL)))
      if (msg->x == x)
        return msg->result;
    if (l->deadline_ms >= 0) {
      wait = l->deadline_ms - now_ms();
      if (wait <= 0) { /* due, busy sockets or not: a fired timer is gone */
        l->deadline_ms = -1;
        xfer_multi_socket_action(m, XFER_SOCKET_TIMEOUT, 0, &running);
        continue;
      }
    }
    /* The timeout told may be days (more than an int holds): wake up
     * within the hour, and wait again. */
    if (wait > 3600 * 1000)
      wait = 3600 * 1000;
    n = epoll_wait(l->ep, evs, 16, (int)wait);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      perror("epoll_wait");
      abort();
    }
    for (int i = 0; i < n; i++) {
      unsigned e = evs[i].events;
      int what = (e & EPOLLIN ? XFER_CSELECT_IN : 0) |
                 (e & EPOLLOUT ? XFER_CSELECT_OUT : 0) |
                 (e & (EPOLLERR | EPOLLHUP) ? XFER_CSELECT_ERR : 0);
      xfer_multi_socket_action(m, evs[i].data.fd, what, &running);
    }
  }
}

bool loop_init(struct loop *l, xfer_pool *pool) {
  l->deadline_ms = -1;
  l->ep = epoll_create1(EPOLL_CLOEXEC);
  l->m = xfer_multi_new(pool);
  if (l->ep < 0 || !l->m) { /* nothing left behind (the pool is free) */
    xfer_multi_destroy(l->m);
    if (l->ep >= 0)
      close(l->ep);
    return false;
  }
  xfer_multi_set_socket_cb(l->m, on_socket, l);
  xfer_multi_set_timer_cb(l->m, on_timer, l);
  return true;
}

void loop_free(struct loop *l) {
  xfer_multi_destroy(l->m); /* REMOVE for every socket still watched */
  close(l->ep);
}
