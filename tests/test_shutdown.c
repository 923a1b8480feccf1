/* lib/shutdown.c: the multi's shutdown handle closes connections
 * gracefully, tracked with assess_conn, without ever spinning. */
#define _GNU_SOURCE /* accept4 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <fcntl.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "shutdown.h"
#include "testhelp.h"
#include "testserver.h"

static void shutdown_end(void) {}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* An application loop: epoll for the sockets, the timer callback's
 * deadline, nothing else; so every wakeup of the multi is one it asked
 * for. */
struct loop {
  int ep;
  int64_t deadline; /* -1: none */
  int removes;
};

static int loop_socket(xfer_multi *m, int fd, int what, void *u, void *sp) {
  struct loop *l = u;
  struct epoll_event ev = {.data.fd = fd};

  if (what == XFER_POLL_REMOVE) {
    l->removes++;
    return epoll_ctl(l->ep, EPOLL_CTL_DEL, fd, NULL);
  }
  ev.events = ((what & XFER_POLL_IN) ? EPOLLIN : 0) |
              ((what & XFER_POLL_OUT) ? EPOLLOUT : 0);
  if (!sp) {
    xfer_multi_assign(m, fd, l);
    return epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &ev);
  }
  return epoll_ctl(l->ep, EPOLL_CTL_MOD, fd, &ev);
}

static int loop_timer(xfer_multi *m, long ms, void *u) {
  struct loop *l = u;
  l->deadline = ms < 0 ? -1 : mono_ms() + ms;
  return 0;
}

static xfer_multi *loop_multi(struct loop *l, xfer_pool *pool) {
  xfer_multi *m = xfer_multi_new(pool);
  l->ep = epoll_create1(EPOLL_CLOEXEC);
  l->deadline = -1;
  l->removes = 0;
  xfer_multi_set_socket_cb(m, loop_socket, l);
  xfer_multi_set_timer_cb(m, loop_timer, l);
  return m;
}

/* Runs until `done(m)` or max_ms. */
static void loop_run(struct loop *l, xfer_multi *m,
                     bool (*done)(xfer_multi *), int max_ms) {
  int64_t give_up = mono_ms() + max_ms;

  while (!done(m) && mono_ms() < give_up) {
    struct epoll_event evs[8];
    int wait = -1, n;
    if (l->deadline >= 0) {
      int64_t left = l->deadline - mono_ms();
      wait = left < 0 ? 0 : (int)left;
    }
    n = epoll_wait(l->ep, evs, 8, wait < 0 || wait > 500 ? 500 : wait);
    if (n == 0 && l->deadline >= 0 && mono_ms() >= l->deadline) {
      l->deadline = -1;
      xfer_multi_socket_timeout(m, NULL);
    }
    for (int i = 0; i < n; i++)
      xfer_multi_socket_action(m, evs[i].data.fd, XFER_CSELECT_IN, NULL);
  }
}

static bool nothing_closing(xfer_multi *m) { return m->shutdown.count == 0; }

/* Hands one end of a socketpair to the shutdown handle; returns the
 * peer's end. */
static int adopt_pair(xfer_multi *m) {
  int sv[2];
  struct xfer__conn *c;

  th_socketpair(sv);
  c = xfer__conn_new(sv[0], "test", 4, xfer__loop_now(&m->loop));
  cr_assert_not_null(c);
  /* Through a timeout action, as the API entry that starts its timer. */
  xfer__shutdown_adopt(&m->shutdown, c, m->loop.last_now);
  xfer_multi_socket_timeout(m, NULL);
  return sv[1];
}

TH_TEST(shutdown, silent_peer_is_closed_at_the_timeout_without_spinning) {
  struct loop l;
  xfer_multi *m = loop_multi(&l, NULL);
  xfer_multi_stats before = {0}, after = {0};
  int peer = adopt_pair(m);
  int64_t start = mono_ms();
  char byte;

  xfer_multi_get_stats(m, &before);
  cr_assert_eq(before.shutting_down, 1);
  loop_run(&l, m, nothing_closing, 15000);
  xfer_multi_get_stats(m, &after);
  cr_assert_eq(after.shutting_down, 0);
  cr_assert_geq(mono_ms() - start, 1900, "closed before the 2 s timeout");
  cr_assert_lt(mono_ms() - start, 10000, "closed at the timeout, not never");
  cr_assert_leq(after.wakeups - before.wakeups, 10, "%llu wakeups in 2 s",
                (unsigned long long)(after.wakeups - before.wakeups));
  cr_assert_eq(l.removes, 1, "REMOVE before the close");
  cr_assert_eq(read(peer, &byte, 1), 0, "the peer saw our FIN, then EOF");
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  close(peer);
  close(l.ep);
}

TH_TEST(shutdown, peer_that_closes_ends_it_at_once) {
  struct loop l;
  xfer_multi *m = loop_multi(&l, NULL);
  int peer;
  int64_t start;
  char buf[16];

  m->shutdown.timeout = MS(60000); /* "at once" is then far from it */
  peer = adopt_pair(m);
  start = mono_ms();
  cr_assert_eq(read(peer, buf, sizeof(buf)), 0, "our FIN arrived");
  close(peer);
  loop_run(&l, m, nothing_closing, 30000);
  cr_assert_lt(mono_ms() - start, 20000, "at the peer's close, not the "
                                         "timeout");
  cr_assert_eq(m->shutdown.count, 0);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  close(l.ep);
}

/* What the peer sends after our FIN is read and dropped: 4 MiB, far more
 * than the socket buffers hold, so the peer can send it only as the
 * handle drains; then the peer's close ends it, long before the timeout
 * (60 s here). */
static int draining_peer;
static bool peer_has_room(xfer_multi *m) {
  struct pollfd pfd = {.fd = draining_peer, .events = POLLOUT};
  return poll(&pfd, 1, 0) > 0 || m->shutdown.count == 0;
}

TH_TEST(shutdown, what_the_peer_still_sends_is_drained) {
  struct loop l;
  xfer_multi *m = loop_multi(&l, NULL);
  static char junk[4 << 20];
  size_t sent = 0;
  int peer;
  int64_t closed_at;

  m->shutdown.timeout = MS(60000);
  peer = adopt_pair(m);
  for (int turn = 0; sent < sizeof(junk) && turn < 100000; turn++) {
    ssize_t n = send(peer, junk + sent, sizeof(junk) - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += (size_t)n;
      continue;
    }
    cr_assert(n < 0 && errno == EAGAIN, "the handle is still reading");
    draining_peer = peer;
    loop_run(&l, m, peer_has_room, 5000); /* it drains: room for more */
    cr_assert(peer_has_room(m), "the handle read nothing for 5 s");
  }
  cr_assert_eq(sent, sizeof(junk));
  cr_assert_eq(m->shutdown.count, 1, "still closing: no EOF yet");
  close(peer);
  closed_at = mono_ms();
  loop_run(&l, m, nothing_closing, 30000);
  cr_assert_eq(m->shutdown.count, 0);
  cr_assert_lt(mono_ms() - closed_at, 20000, "at the EOF, not the timeout");
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  close(l.ep);
}

TH_TEST(shutdown, destroy_drains_within_the_timeout) {
  xfer_multi *m = xfer_multi_new(NULL);
  int silent, closing;
  int64_t start;
  char buf[4];

  m->shutdown.timeout = 300 * XFER__NS_PER_MS;
  silent = adopt_pair(m);
  closing = adopt_pair(m);
  cr_assert_eq(read(closing, buf, sizeof(buf)), 0);
  close(closing);
  start = mono_ms();
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_geq(mono_ms() - start, 250, "waited for the silent peer");
  cr_assert_lt(mono_ms() - start, 5000, "but not much beyond the timeout");
  cr_assert_eq(read(silent, buf, sizeof(buf)), 0, "closed gracefully");
  close(silent);
}

/* Rule 2 in xfer_multi_destroy(): one clock read for the call, and one
 * after each wait of its drain, none between. Here the one connection
 * closing is past its deadline: the drain closes it with no wait, on the
 * call's own reading (it read the clock a second time). */
TH_TEST(shutdown, destroy_reads_the_clock_once_without_a_wait) {
  xfer_multi *m;
  xfer__time before;
  int peer;

  th_clock_install(MS(1000), 1); /* each read moves it 1 ns: a count */
  m = xfer_multi_new(NULL);
  m->shutdown.timeout = MS(10);
  peer = adopt_pair(m);
  th_clock_advance(MS(20));
  before = th_clock_peek();
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(th_clock_peek() - before, 1, "clock reads in destroy");
  th_clock_uninstall();
  close(peer);
}

static int fetches_done;
static bool two_done_nothing_closing(xfer_multi *m) {
  const xfer_msg *msg;
  while ((msg = xfer_multi_info_read(m, NULL))) {
    cr_assert_eq(msg->result, XFER_OK, "%s", xfer_get_error_detail(msg->x));
    fetches_done++;
  }
  return fetches_done == 2 && m->shutdown.count == 0;
}

/* The pool keeps one idle connection per destination here: the second
 * comes back over the limit and this thread's multi closes it gracefully. */
TH_TEST(shutdown, connections_the_pool_evicts_are_shut_down_gracefully) {
  struct ts_server *web = ts_start(NULL);
  xfer_pool *p = xfer_pool_new(&(xfer_pool_opts){.max_idle_per_destination
                                                 = 1});
  struct loop l;
  xfer_multi *m = loop_multi(&l, p);
  xfer *a = th_get(m, th_url(ts_port(web), "/delay/50/bytes/1"), NULL);
  xfer *b = th_get(m, th_url(ts_port(web), "/delay/50/bytes/1"), NULL);
  xfer_multi_stats st = {0};
  struct ts_stats ss;

  xfer_multi_socket_timeout(m, NULL);
  loop_run(&l, m, two_done_nothing_closing, 5000);
  cr_assert_eq(fetches_done, 2);
  xfer_multi_get_stats(m, &st);
  cr_assert_eq(st.shutdowns, 1);
  cr_assert_eq(st.shutting_down, 0, "the server answered our FIN");
  ts_get_stats(web, &ss);
  cr_assert_eq(ss.open_conns, 1, "one kept idle, one closed");
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(p), XFER_OK);
  xfer_free(a);
  xfer_free(b);
  ts_stop(web);
  close(l.ep);
}

/* A peer that answers one keep-alive request by hand, then neither reads
 * nor closes: a connection to it stays in the shutdown handle until its
 * deadline. */
struct silent_peer {
  int listener, fd, port;
};

static void silent_listen(struct silent_peer *p) {
  struct sockaddr_in sa = {.sin_family = AF_INET};
  socklen_t len = sizeof(sa);

  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  p->listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  cr_assert_geq(p->listener, 0);
  cr_assert_eq(bind(p->listener, (struct sockaddr *)&sa, sizeof(sa)), 0);
  cr_assert_eq(listen(p->listener, 8), 0);
  cr_assert_eq(getsockname(p->listener, (struct sockaddr *)&sa, &len), 0);
  p->port = ntohs(sa.sin_port);
  p->fd = -1;
}

/* Runs m until the request has arrived (bounded: 500 turns of at most
 * 10 ms), then answers it. */
static void silent_answer(struct silent_peer *p, xfer_multi *m) {
  static const char answer[] = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
  char req[4096];
  size_t got = 0;

  for (int turn = 0; turn < 500; turn++) {
    ssize_t n;
    cr_assert_eq(xfer_multi_perform(m, NULL), XFER_M_OK);
    if (p->fd < 0)
      p->fd = accept4(p->listener, NULL, NULL, SOCK_NONBLOCK);
    if (p->fd >= 0 &&
        (n = recv(p->fd, req + got, sizeof(req) - 1 - got, 0)) > 0) {
      got += (size_t)n;
      req[got] = '\0';
      if (strstr(req, "\r\n\r\n"))
        break;
    }
    cr_assert_eq(xfer_multi_poll(m, 10, NULL), XFER_M_OK);
  }
  cr_assert(strstr(req, "\r\n\r\n"), "the request arrived");
  cr_assert_eq(send(p->fd, answer, strlen(answer), 0), (ssize_t)strlen(answer));
}

/*
 * A connection that finishes its close passes its destination slot on; a
 * waiter for that destination (another multi's) may then need room, and
 * an idle connection is closed for it, into this handle. With the one
 * that finished last in the handle's list, that newcomer joined behind
 * the walk's end: the timer was set as if nothing were closing (it waited
 * forever on a silent peer), and a drain waited on no socket with no end
 * (xfer_multi_destroy() hung). Here max_total is 1: A (to silent peer X)
 * is closed for B's room (to silent peer Y), then the waiter for X takes
 * B's place when A's deadline passes.
 */
struct room_chain {
  struct silent_peer x, y;
  xfer_pool *p;
  xfer_multi *m, *m2;
  xfer *a, *b, *t;
};

static xfer *fetch_from(struct silent_peer *peer, xfer_multi *m) {
  char url[64];
  xfer *x;

  silent_listen(peer);
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/", peer->port);
  x = th_get(m, url, NULL);
  silent_answer(peer, m);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, x), XFER_OK, "%s", xfer_get_error_detail(x));
  return x;
}

static void set_up_room_chain(struct room_chain *rc) {
  xfer_pool_stats ps;
  char url[64];

  rc->p = xfer_pool_new(&(xfer_pool_opts){.max_total = 1,
                                          .max_per_destination = 1,
                                          .attach_hold_ms = TH_NO_ATTACH});
  rc->m = xfer_multi_new(rc->p);
  rc->m2 = xfer_multi_new(rc->p);
  rc->a = fetch_from(&rc->x, rc->m);
  rc->b = fetch_from(&rc->y, rc->m); /* needs A's room: A goes to m's handle */
  cr_assert_eq(rc->m->shutdown.count, 1, "A closes, its peer silent");
  /* The waiter, at X's limit while A closes. */
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/", rc->x.port);
  rc->t = th_get(rc->m2, url, NULL);
  cr_assert_eq(xfer_multi_perform(rc->m2, NULL), XFER_M_OK);
  xfer_pool_get_stats(rc->p, &ps);
  cr_assert_eq(ps.waiting, 1);
  /* A's deadline passes. */
  XFER__CONTAINER_OF(rc->m->shutdown.conns.next, struct xfer__conn, idle_node)
      ->shutdown_deadline = 0;
}

static void tear_down_room_chain(struct room_chain *rc) {
  cr_assert_eq(xfer_multi_destroy(rc->m2), XFER_M_OK);
  cr_assert_eq(xfer_pool_destroy(rc->p), XFER_OK);
  xfer_free(rc->a);
  xfer_free(rc->b);
  xfer_free(rc->t);
  close(rc->x.fd);
  close(rc->x.listener);
  close(rc->y.fd);
  close(rc->y.listener);
}

TH_TEST(shutdown, room_made_at_a_deadline_is_timed_too) {
  struct room_chain rc;
  struct xfer__conn *b;

  set_up_room_chain(&rc);
  xfer__shutdown_run(&rc.m->shutdown, rc.m->loop.last_now);
  cr_assert_eq(rc.m->shutdown.count, 1, "B took A's place");
  b = XFER__CONTAINER_OF(rc.m->shutdown.conns.next, struct xfer__conn,
                         idle_node);
  cr_assert_neq(b->shutdown_deadline, 0, "not A");
  cr_assert_eq(rc.m->shutdown.timer->at[XFER__EXPIRE_SHUTDOWN],
               b->shutdown_deadline, "the timer is B's deadline");
  cr_assert_eq(xfer_multi_destroy(rc.m), XFER_M_OK);
  tear_down_room_chain(&rc);
}

/* The same in xfer_multi_destroy(): closing A for good makes B's room in
 * the drain, which then drains B too, to its deadline (here 200 ms). */
TH_TEST(shutdown, room_made_in_a_drain_is_drained, .timeout = 60) {
  struct room_chain rc;
  xfer_pool_stats ps;
  char byte;

  set_up_room_chain(&rc);
  rc.m->shutdown.timeout = MS(200);
  cr_assert_eq(xfer_multi_destroy(rc.m), XFER_M_OK, "returned, not hung");
  cr_assert_eq(read(rc.y.fd, &byte, 1), 0, "B was closed");
  xfer_pool_get_stats(rc.p, &ps);
  cr_assert_eq(ps.waiting, 0, "the waiter has its slots");
  tear_down_room_chain(&rc);
}
