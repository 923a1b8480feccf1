/* lib/cf_socket.c: attempt order, happy eyeballs against an IPv6 address
 * that does not answer, connect timeout against a full backlog. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dnsserver.h"
#include "testhelp.h"
#include "testserver.h"

static void cf_socket_end(void) {}

static struct xfer__addr addr(const char *ip, int port) {
  struct xfer__addr a;
  memset(&a, 0, sizeof(a));
  if (strchr(ip, ':')) {
    struct sockaddr_in6 *s6 = (void *)&a.sa;
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((uint16_t)port);
    inet_pton(AF_INET6, ip, &s6->sin6_addr);
    a.len = sizeof(*s6);
  } else {
    struct sockaddr_in *s4 = (void *)&a.sa;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, ip, &s4->sin_addr);
    a.len = sizeof(*s4);
  }
  return a;
}

TH_TEST(cf_socket, families_interleave_ipv6_first) {
  struct xfer__addr in[5] = {addr("10.0.0.1", 1), addr("10.0.0.2", 1),
                             addr("10.0.0.3", 1), addr("fd00::1", 1),
                             addr("fd00::2", 1)};
  struct xfer__he cf;
  const char *order[] = {"fd00::1", "10.0.0.1", "fd00::2", "10.0.0.2",
                         "10.0.0.3"};
  char text[64];

  xfer__he_init(&cf, in, 5, NULL);
  cr_assert_eq(cf.naddrs, 5);
  for (int i = 0; i < 5; i++) {
    xfer__addr_text(&cf.addrs[i], text, sizeof(text));
    cr_assert(strncmp(text, order[i], strlen(order[i])) == 0, "%d: %s", i,
              text);
  }
}

/* A listener whose accept queue is full: SYNs to it go unanswered, so a
 * connect to it hangs (the kernel drops them). Returns the listener; the
 * clients that filled it are in fill[], -1 where unused (fill_close()).
 *
 * Linux drops a SYN once the queue holds more than the backlog, so with a
 * backlog of 0 one queued connection fills it. The first client's
 * handshake completes (the queue is empty when its SYN comes), and the
 * listener turns readable once it is queued: poll() waits for that event,
 * bounded only in case it never comes. TCP_INFO on a listener tells the
 * queue's length (tcpi_unacked) and its backlog (tcpi_sacked), so the
 * queue is known to be full without waiting for a connect that does not
 * happen. */
static int full_listener(int family, const char *ip, int port, int fill[4]) {
  struct xfer__addr a = addr(ip, port);
  int one = 1, lfd = socket(family, SOCK_STREAM, 0);
  struct sockaddr_storage got;
  socklen_t len = sizeof(got);

  for (int i = 0; i < 4; i++)
    fill[i] = -1;
  cr_assert_geq(lfd, 0);
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (family == AF_INET6)
    setsockopt(lfd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  cr_assert_eq(bind(lfd, (struct sockaddr *)&a.sa, a.len), 0, "bind %s: %s",
               ip, strerror(errno));
  cr_assert_eq(listen(lfd, 0), 0);
  getsockname(lfd, (struct sockaddr *)&got, &len);
  a.sa = got;
  for (int i = 0; i < 4; i++) {
    struct pollfd queued = {.fd = lfd, .events = POLLIN};
    struct tcp_info info;
    socklen_t info_len = sizeof(info);

    fill[i] = socket(family, SOCK_STREAM | SOCK_NONBLOCK, 0);
    cr_assert_geq(fill[i], 0);
    connect(fill[i], (struct sockaddr *)&a.sa, a.len);
    cr_assert_eq(poll(&queued, 1, 5000), 1,
                 "no connection reached the accept queue of %s", ip);
    cr_assert_eq(getsockopt(lfd, IPPROTO_TCP, TCP_INFO, &info, &info_len),
                 0);
    if (info.tcpi_unacked > info.tcpi_sacked)
      return lfd; /* more queued than the backlog: SYNs are dropped */
  }
  cr_assert_fail("could not fill the accept queue of %s", ip);
  return -1;
}

static void fill_close(const int fill[4]) {
  for (int i = 0; i < 4; i++)
    if (fill[i] >= 0)
      close(fill[i]);
}

static int port_of(int fd) {
  struct sockaddr_storage a;
  socklen_t len = sizeof(a);
  getsockname(fd, (struct sockaddr *)&a, &len);
  return a.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&a)->sin6_port)
                                 : ntohs(((struct sockaddr_in *)&a)->sin_port);
}

/* Runs m until x (a GET of /bytes/10 into sink) is done, which it must be,
 * connected at least min_us after its name lookup; how long it took. */
static long long connected_after(xfer_multi *m, xfer *x,
                                 const struct th_sink *sink, long long min_us) {
  xfer_timeline tl;
  long long took;

  th_run(m, 8000);
  cr_assert_eq(th_result(m, x), XFER_OK, "%s", xfer_get_error_detail(x));
  th_expect_pattern(sink->data, sink->len, 10);
  xfer_get_timeline(x, &tl);
  took = tl.connect_us - tl.namelookup_us;
  cr_assert_geq(took, min_us, "%lld us", took);
  return took;
}

TH_TEST(cf_socket, ipv6_that_does_not_answer_falls_back_to_ipv4) {
  struct ts_server *web = ts_start(NULL);
  struct ds_server *dns = ds_start(NULL);
  int fill[4], v6 = full_listener(AF_INET6, "::1", ts_port(web), fill);
  xfer_multi *m = xfer_multi_new(NULL);
  struct th_sockrec rec;
  struct th_sink sink = {0};
  char servers[64], url[128];
  xfer *x;
  int v6_attempt_removed = 0;

  ds_add_aaaa(dns, "dual.test", "::1", 60);
  ds_add_a(dns, "dual.test", "127.0.0.1", 60);
  snprintf(servers, sizeof(servers), "127.0.0.1:%d", ds_port(dns));
  xfer_multi_set_dns_servers(m, servers);
  th_sockrec_init(&rec);
  xfer_multi_set_socket_cb(m, th_sockrec_cb, &rec);
  snprintf(url, sizeof(url), "http://dual.test:%d/bytes/10", ts_port(web));
  x = th_get(m, url, &sink);
  /* The IPv6 attempt went first and hung; IPv4 started 200 ms later. */
  cr_assert_lt(connected_after(m, x, &sink, 190000), 2000000);
  /* The losing attempt's socket left through socket_done: an OUT watch
   * that ended in REMOVE while the transfer went on. */
  for (int i = 0; i + 1 < rec.count; i++)
    if (rec.calls[i].what == XFER_POLL_OUT)
      for (int j = i + 1; j < rec.count; j++)
        if (rec.calls[j].fd == rec.calls[i].fd &&
            rec.calls[j].what == XFER_POLL_REMOVE) {
          v6_attempt_removed++;
          break;
        }
  cr_assert_geq(v6_attempt_removed, 1);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  xfer_free(x);
  th_sink_free(&sink);
  fill_close(fill);
  close(v6);
  ds_stop(dns);
  ts_stop(web);
}

/* More addresses that drop SYNs than attempts may be in flight, and a
 * working one after them: the oldest attempt gives its place to the next
 * address when that one is due, so the working address gets its turn
 * (1 s in: five before it, 200 ms apart). The timer spun instead (the next
 * attempt's time passed, with no room to start it), and the fifth
 * address and later were never tried. */
TH_TEST(cf_socket, every_address_gets_its_turn) {
  struct ts_server *web = ts_start(NULL);
  struct ds_server *dns = ds_start(NULL);
  static const char *dead[] = {"127.0.0.2", "127.0.0.3", "127.0.0.4",
                               "127.0.0.5", "127.0.0.6"};
  int fill[5][4], lfd[5];
  xfer_multi *m = xfer_multi_new(NULL);
  struct th_sink sink = {0};
  char servers[64], url[128];
  xfer_multi_stats st = {0};
  xfer *x;

  for (int i = 0; i < 5; i++) {
    lfd[i] = full_listener(AF_INET, dead[i], ts_port(web), fill[i]);
    ds_add_a(dns, "many.test", dead[i], 60);
  }
  ds_add_a(dns, "many.test", "127.0.0.1", 60);
  snprintf(servers, sizeof(servers), "127.0.0.1:%d", ds_port(dns));
  xfer_multi_set_dns_servers(m, servers);
  snprintf(url, sizeof(url), "http://many.test:%d/bytes/10", ts_port(web));
  x = xfer_new();
  cr_assert_eq(xfer_set_url(x, url), XFER_OK);
  cr_assert_eq(xfer_set_write_cb(x, th_sink_cb, &sink), XFER_OK);
  cr_assert_eq(xfer_set_connect_timeout_ms(x, 5000), XFER_OK);
  cr_assert_eq(xfer_multi_add(m, x), XFER_M_OK);
  connected_after(m, x, &sink, 950000);
  xfer_multi_get_stats(m, &st);
  cr_assert_lt(st.xfers_run, 200, "%lu runs: the timer spun",
               (unsigned long)st.xfers_run);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  xfer_free(x);
  th_sink_free(&sink);
  for (int i = 0; i < 5; i++) {
    fill_close(fill[i]);
    close(lfd[i]);
  }
  ds_stop(dns);
  ts_stop(web);
}

/* Every attempt's socket leaves through socket_done, whatever ends the
 * connect: the connect timeout with attempts in flight, or a remove. An OUT watch with no REMOVE after it would be a
 * socket the application watches after its close. */
static void expect_every_attempt_removed(const struct th_sockrec *rec,
                                         int min_attempts) {
  int attempts = 0;

  for (int i = 0; i < rec->count; i++) {
    bool removed = false;
    if (rec->calls[i].what != XFER_POLL_OUT)
      continue;
    attempts++;
    for (int j = i + 1; j < rec->count && !removed; j++)
      removed = rec->calls[j].fd == rec->calls[i].fd &&
                rec->calls[j].what == XFER_POLL_REMOVE;
    cr_assert(removed, "fd %d watched for OUT, never removed",
              rec->calls[i].fd);
  }
  cr_assert_geq(attempts, min_attempts);
}

TH_TEST(cf_socket, every_attempt_is_removed_when_the_connect_ends) {
  struct ds_server *dns = ds_start(NULL);
  static const char *dead[] = {"127.0.0.2", "127.0.0.3", "127.0.0.4"};
  int fill[3][4], lfd[3], port = th_free_port();
  xfer_multi *m = xfer_multi_new(NULL);
  static struct th_sockrec rec;
  char servers[64], url[128];
  xfer *timed = xfer_new(), *removed = xfer_new();

  for (int i = 0; i < 3; i++) {
    lfd[i] = full_listener(AF_INET, dead[i], port, fill[i]);
    ds_add_a(dns, "stuck.test", dead[i], 60);
  }
  snprintf(servers, sizeof(servers), "127.0.0.1:%d", ds_port(dns));
  xfer_multi_set_dns_servers(m, servers);
  th_sockrec_init(&rec);
  xfer_multi_set_socket_cb(m, th_sockrec_cb, &rec);
  snprintf(url, sizeof(url), "http://stuck.test:%d/", port);
  cr_assert_eq(xfer_set_url(timed, url), XFER_OK);
  /* Three attempts start 200 ms apart, none answers (a loaded machine
   * may start fewer: the wait between them is at least 200 ms). */
  cr_assert_eq(xfer_set_connect_timeout_ms(timed, 1500), XFER_OK);
  cr_assert_eq(xfer_multi_add(m, timed), XFER_M_OK);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, timed), XFER_E_CONNECT_TIMEOUT, "%s",
               xfer_get_error_detail(timed));
  expect_every_attempt_removed(&rec, 2);

  th_sockrec_init(&rec);
  cr_assert_eq(xfer_set_url(removed, url), XFER_OK);
  cr_assert_eq(xfer_multi_add(m, removed), XFER_M_OK); /* resolved: cached */
  th_run_for(m, 500); /* three in flight by 400 ms, as a rule */
  cr_assert_eq(xfer_multi_remove(m, removed), XFER_M_OK);
  expect_every_attempt_removed(&rec, 1);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  xfer_free(timed);
  xfer_free(removed);
  for (int i = 0; i < 3; i++) {
    fill_close(fill[i]);
    close(lfd[i]);
  }
  ds_stop(dns);
}

/* A local bind of one family: the addresses of the other are not tried,
 * and do not hide the failure of those that were (a refused IPv4 attempt
 * between two IPv6 addresses read "Address family not supported"). With
 * none of its family, the error says why. */
TH_TEST(cf_socket, a_local_bind_tries_its_family_only) {
  struct ds_server *dns = ds_start(NULL);
  xfer_multi *m = xfer_multi_new(NULL);
  int port = th_refused_port();
  char servers[64], url[128];
  xfer *refused = xfer_new(), *other = xfer_new();

  ds_add_aaaa(dns, "refused.test", "::1", 60);
  ds_add_a(dns, "refused.test", "127.0.0.1", 60);
  ds_add_aaaa(dns, "refused.test", "::ffff:127.0.0.2", 60); /* loopback too */
  ds_add_aaaa(dns, "six.test", "::1", 60);
  snprintf(servers, sizeof(servers), "127.0.0.1:%d", ds_port(dns));
  xfer_multi_set_dns_servers(m, servers);
  snprintf(url, sizeof(url), "http://refused.test:%d/", port);
  cr_assert_eq(xfer_set_url(refused, url), XFER_OK);
  snprintf(url, sizeof(url), "http://six.test:%d/", port);
  cr_assert_eq(xfer_set_url(other, url), XFER_OK);
  cr_assert_eq(xfer_set_local_address(refused, "127.0.0.1"), XFER_OK);
  cr_assert_eq(xfer_set_local_address(other, "127.0.0.1"), XFER_OK);
  cr_assert_eq(xfer_multi_add(m, refused), XFER_M_OK);
  cr_assert_eq(xfer_multi_add(m, other), XFER_M_OK);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, refused), XFER_E_CONNECT);
  cr_assert(strstr(xfer_get_error_detail(refused),
                   "127.0.0.1 port") &&
                strstr(xfer_get_error_detail(refused), "refused"),
            "%s", xfer_get_error_detail(refused));
  cr_assert_eq(th_result(m, other), XFER_E_CONNECT);
  cr_assert(strstr(xfer_get_error_detail(other), "::1 port") &&
                strstr(xfer_get_error_detail(other), "family"),
            "%s", xfer_get_error_detail(other));
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  xfer_free(refused);
  xfer_free(other);
  ds_stop(dns);
}

/* An address that refuses gives its turn to the next at once, not after
 * the 200 ms between attempts: the test's clock stands still, so a wait
 * for it would never end. */
TH_TEST(cf_socket, a_refused_address_moves_on_at_once) {
  struct ts_server *web = ts_start(NULL);
  struct ds_server *dns = ds_start(NULL);
  xfer_multi *m;
  struct th_sink sink = {0};
  char servers[64], url[128];
  xfer_timeline tl;
  xfer *x;

  th_clock_install(MS(1000), 0);
  m = xfer_multi_new(NULL);
  ds_add_aaaa(dns, "dual.test", "::1", 60); /* nothing listens there */
  ds_add_a(dns, "dual.test", "127.0.0.1", 60);
  snprintf(servers, sizeof(servers), "127.0.0.1:%d", ds_port(dns));
  xfer_multi_set_dns_servers(m, servers);
  snprintf(url, sizeof(url), "http://dual.test:%d/bytes/10", ts_port(web));
  x = th_get(m, url, &sink);
  th_run(m, 8000);
  cr_assert_eq(th_result(m, x), XFER_OK, "%s", xfer_get_error_detail(x));
  th_expect_pattern(sink.data, sink.len, 10);
  xfer_get_timeline(x, &tl);
  cr_assert_eq(tl.connect_us, tl.namelookup_us, "no time passed");
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  th_clock_uninstall();
  xfer_free(x);
  th_sink_free(&sink);
  ds_stop(dns);
  ts_stop(web);
}

/* A name with more addresses than a connect tries: each family keeps its
 * share. The first 16 in c-ares' order were kept, and c-ares lists the A
 * answers first: with 20 of them, the IPv6 address (the one that works
 * here, tried first) was never tried, and a source bound to IPv6 found
 * nothing of its family. */
TH_TEST(cf_socket, many_addresses_keep_both_families) {
  struct ts_server *web = ts_start(NULL);
  struct ds_server *dns = ds_start(NULL);
  xfer_multi *m = xfer_multi_new(NULL);
  struct th_sink sink = {0};
  char servers[64], url[128], ip[32];
  xfer *any, *bound = xfer_new();

  for (int i = 2; i < 22; i++) { /* refused: nothing listens there */
    snprintf(ip, sizeof(ip), "127.0.0.%d", i);
    ds_add_a(dns, "crowd.test", ip, 60);
  }
  ds_add_aaaa(dns, "crowd.test", "::ffff:127.0.0.1", 60); /* the server */
  snprintf(servers, sizeof(servers), "127.0.0.1:%d", ds_port(dns));
  xfer_multi_set_dns_servers(m, servers);
  snprintf(url, sizeof(url), "http://crowd.test:%d/bytes/10", ts_port(web));
  any = th_get(m, url, &sink);
  th_run(m, 8000);
  cr_assert_eq(th_result(m, any), XFER_OK, "%s", xfer_get_error_detail(any));
  th_expect_pattern(sink.data, sink.len, 10);
  /* Bound to IPv6, on a port where nothing listens: the IPv6 address is
   * tried (refused), not "Address family not supported". */
  snprintf(url, sizeof(url), "http://crowd.test:%d/", th_refused_port());
  cr_assert_eq(xfer_set_url(bound, url), XFER_OK);
  cr_assert_eq(xfer_set_local_address(bound, "::"), XFER_OK);
  cr_assert_eq(xfer_multi_add(m, bound), XFER_M_OK);
  th_run(m, 8000);
  cr_assert_eq(th_result(m, bound), XFER_E_CONNECT);
  cr_assert(strstr(xfer_get_error_detail(bound), "::ffff:127.0.0.1 port") &&
                strstr(xfer_get_error_detail(bound), "refused"),
            "%s", xfer_get_error_detail(bound));
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  xfer_free(any);
  xfer_free(bound);
  th_sink_free(&sink);
  ds_stop(dns);
  ts_stop(web);
}

/* A source address this host does not have: the bind fails, and the
 * detail says so, at the first attempt. It read "failed to connect to
 * 127.0.0.1 port N: Cannot assign requested address", as if the server
 * were at fault, after every address had failed alike. */
TH_TEST(cf_socket, a_bind_that_fails_says_so) {
  struct ts_server *web = ts_start(NULL);
  struct ds_server *dns = ds_start(NULL);
  xfer_multi *m = xfer_multi_new(NULL);
  struct th_sockrec rec;
  char servers[64], url[128];
  xfer *x = xfer_new();

  ds_add_a(dns, "two.test", "127.0.0.1", 60);
  ds_add_a(dns, "two.test", "127.0.0.2", 60);
  snprintf(servers, sizeof(servers), "127.0.0.1:%d", ds_port(dns));
  xfer_multi_set_dns_servers(m, servers);
  th_sockrec_init(&rec);
  xfer_multi_set_socket_cb(m, th_sockrec_cb, &rec);
  snprintf(url, sizeof(url), "http://two.test:%d/", ts_port(web));
  cr_assert_eq(xfer_set_url(x, url), XFER_OK);
  /* TEST-NET-1 (RFC 5737): no host has it. */
  cr_assert_eq(xfer_set_local_address(x, "192.0.2.1"), XFER_OK);
  cr_assert_eq(xfer_multi_add(m, x), XFER_M_OK);
  th_run(m, 8000);
  cr_assert_eq(th_result(m, x), XFER_E_CONNECT);
  cr_assert(strstr(xfer_get_error_detail(x),
                   "could not bind to the local address 192.0.2.1: "),
            "%s", xfer_get_error_detail(x));
  for (int i = 0; i < rec.count; i++) /* the resolver's socket alone */
    cr_assert_neq(rec.calls[i].what, XFER_POLL_OUT, "an attempt was made");
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  xfer_free(x);
  ds_stop(dns);
  ts_stop(web);
}

/* A bound source takes its port at connect(), per destination
 * (IP_BIND_ADDRESS_NO_PORT): bind() alone would reserve one of the whole
 * ephemeral range for each connection. */
TH_TEST(cf_socket, a_local_bind_takes_its_port_at_connect) {
  struct ts_server *web = ts_start(NULL);
  xfer_multi *m = xfer_multi_new(NULL);
  struct th_sockrec rec;
  xfer *x = xfer_new();
  int on = 0;
  socklen_t len = sizeof(on);

  th_sockrec_init(&rec);
  xfer_multi_set_socket_cb(m, th_sockrec_cb, &rec);
  cr_assert_eq(xfer_set_url(x, th_url(ts_port(web), "/bytes/1")), XFER_OK);
  cr_assert_eq(xfer_set_local_address(x, "127.0.0.1"), XFER_OK);
  cr_assert_eq(xfer_multi_add(m, x), XFER_M_OK);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, x), XFER_OK, "%s", xfer_get_error_detail(x));
  cr_assert_gt(rec.count, 0);
  /* Its connection is kept (attached): the socket is still open. */
  cr_assert_eq(getsockopt(rec.calls[rec.count - 1].fd, IPPROTO_IP,
                          IP_BIND_ADDRESS_NO_PORT, &on, &len),
               0, "%s", strerror(errno));
  cr_assert_eq(on, 1);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  xfer_free(x);
  ts_stop(web);
}

TH_TEST(cf_socket, full_backlog_times_out) {
  int fill[4], lfd = full_listener(AF_INET, "127.0.0.1", 0, fill);
  xfer_multi *m = xfer_multi_new(NULL);
  xfer *x = xfer_new(), *other;
  struct ts_server *web = ts_start(NULL);
  char url[64];

  snprintf(url, sizeof(url), "http://127.0.0.1:%d/", port_of(lfd));
  xfer_set_url(x, url);
  xfer_set_connect_timeout_ms(x, 300);
  xfer_multi_add(m, x);
  other = th_get(m, th_url(ts_port(web), "/delay/100/bytes/3"), NULL);
  th_run(m, 5000);
  cr_assert_eq(th_result(m, x), XFER_E_CONNECT_TIMEOUT, "%s",
               xfer_get_error_detail(x));
  cr_assert(strstr(xfer_get_error_detail(x), "took longer than 300 ms"));
  cr_assert_eq(th_result(m, other), XFER_OK);
  th_expect_timeline_ordered(x);
  cr_assert_eq(xfer_multi_destroy(m), XFER_M_OK);
  xfer_free(x);
  xfer_free(other);
  fill_close(fill);
  close(lfd);
  ts_stop(web);
}
