/* Helpers for the unit suites (see testhelp.h). */
#include "testhelp.h"

#include "mem.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/resource.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define TH_HAVE_LSAN 1
#endif

/* --- controllable clock ---------------------------------------------------- */

static xfer__time fake_now;
static xfer__time fake_step;

static xfer__time fake_clock(void *userp) {
  xfer__time now = fake_now;
  (void)userp;
  fake_now += fake_step;
  return now;
}

void th_clock_install(xfer__time start, xfer__time step) {
  fake_now = start;
  fake_step = step;
  xfer__now_set_clock(fake_clock, NULL);
}

void th_clock_advance(xfer__time by) { fake_now += by; }

xfer__time th_clock_peek(void) { return fake_now; }

void th_clock_uninstall(void) { xfer__now_set_clock(NULL, NULL); }

/* --- socket callback recorder --------------------------------------------- */

static int marker;

void th_sockrec_init(struct th_sockrec *r) {
  memset(r, 0, sizeof(*r));
  r->refuse_fd = -1;
}

int th_sockrec_cb(xfer_multi *m, int fd, int what, void *userp,
                  void *socketp) {
  struct th_sockrec *r = userp;

  cr_assert_lt(r->count, TH_MAX_CALLS);
  r->calls[r->count].fd = fd;
  r->calls[r->count].what = what;
  r->calls[r->count].socketp = socketp;
  r->count++;
  if (r->assign && !socketp && what != XFER_POLL_REMOVE)
    cr_assert_eq(xfer_multi_assign(m, fd, &marker), XFER_M_OK);
  if (r->advance_by)
    th_clock_advance(r->advance_by);
  if (r->try_reentry)
    r->reentry_rc = xfer_multi_socket_action(m, XFER_SOCKET_TIMEOUT, 0, NULL);
  return fd == r->refuse_fd ? -1 : 0;
}

void th_expect_calls(const struct th_sockrec *r, int from, const int *pairs,
                     int n) {
  cr_assert_eq(r->count - from, n, "expected %d socket callback calls, got %d",
               n, r->count - from);
  for (int i = 0; i < n; i++) {
    cr_assert_eq(r->calls[from + i].fd, pairs[2 * i],
                 "call %d: fd %d, expected %d", i, r->calls[from + i].fd,
                 pairs[2 * i]);
    cr_assert_eq(r->calls[from + i].what, pairs[2 * i + 1],
                 "call %d (fd %d): what %d, expected %d", i, pairs[2 * i],
                 r->calls[from + i].what, pairs[2 * i + 1]);
  }
}

/* --- timer callback recorder ---------------------------------------------- */

void th_timerrec_init(struct th_timerrec *r) { memset(r, 0, sizeof(*r)); }

int th_timerrec_cb(xfer_multi *m, long timeout_ms, void *userp) {
  struct th_timerrec *r = userp;
  (void)m;
  cr_assert_lt(r->count, TH_MAX_CALLS);
  r->timeouts[r->count++] = timeout_ms;
  return r->answer;
}

/* --- scripted test transfers ---------------------------------------------- */

static enum xfer__step tt_run(xfer *x, unsigned due) {
  struct tt *t = x->handler_ctx;

  if (t->runs < TT_MAX_RUNS)
    t->run_now[t->runs] = x->now;
  t->runs++;
  t->last_due = due;
  t->uses_at_run = x->ev.count;
  return t->on_run ? t->on_run(t, due) : XFER__STEP_AGAIN;
}

static void tt_pollset(xfer *x, struct xfer__pollset *ps) {
  struct tt *t = x->handler_ctx;
  *ps = t->ps;
}

static void tt_cleanup(xfer *x) {
  struct tt *t = x->handler_ctx;

  t->cleanups++;
  for (int i = 0; i < t->nclose; i++) {
    xfer__mev_socket_done(&x->loop->ev, t->close_fds[i]); /* before close */
    close(t->close_fds[i]);
  }
  t->nclose = 0;
}

const struct xfer__handler tt_handler = {
    .name = "test",
    .run = tt_run,
    .pollset = tt_pollset,
    .cleanup = tt_cleanup,
};

static struct tt *alive;

struct tt *tt_new(int id) {
  struct tt *t = calloc(1, sizeof(*t));

  cr_assert_not_null(t);
  t->next_alive = alive;
  alive = t;
  t->id = id;
  t->x = xfer_new();
  cr_assert_not_null(t->x);
  cr_assert_eq(xfer__set_handler(t->x, &tt_handler, t), XFER_OK);
  return t;
}

void tt_free(struct tt *t) {
  struct tt **p;

  if (!t)
    return;
  for (p = &alive; *p != t; p = &(*p)->next_alive)
    cr_assert_not_null(*p, "tt %d freed twice", t->id);
  *p = t->next_alive;
  cr_assert_eq(xfer_free(t->x), XFER_OK);
  free(t);
}

void tt_free_all(void) {
  while (alive)
    tt_free(alive);
}

void tt_want(struct tt *t, int fd, unsigned want) {
  for (unsigned i = 0; i < t->ps.count; i++) {
    if (t->ps.fd[i] == fd) {
      if (want) {
        t->ps.want[i] = (unsigned char)want;
      } else {
        t->ps.count--;
        t->ps.fd[i] = t->ps.fd[t->ps.count];
        t->ps.want[i] = t->ps.want[t->ps.count];
      }
      return;
    }
  }
  cr_assert(xfer__pollset_add(&t->ps, fd, want));
}

bool tt_now_monotonic(const struct tt *t) {
  int n = t->runs < TT_MAX_RUNS ? t->runs : TT_MAX_RUNS;
  for (int i = 1; i < n; i++)
    if (t->run_now[i] < t->run_now[i - 1])
      return false;
  return true;
}

void th_socketpair(int sv[2]) {
  cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
}

void th_expect_timeline_ordered(const xfer *x) {
  xfer_timeline tl;
  int64_t v[7];

  cr_assert_eq(xfer_get_timeline(x, &tl), XFER_OK);
  v[0] = tl.queue_us;
  v[1] = tl.namelookup_us;
  v[2] = tl.connect_us;
  v[3] = tl.appconnect_us;
  v[4] = tl.pretransfer_us;
  v[5] = tl.starttransfer_us;
  v[6] = tl.total_us;
  for (int i = 0; i < 7; i++) {
    cr_assert_geq(v[i], 0, "phase %d not set", i);
    if (i)
      cr_assert_geq(v[i], v[i - 1], "phase %d (%lld) before phase %d (%lld)",
                    i, (long long)v[i], i - 1, (long long)v[i - 1]);
  }
}

void th_expect_no_leaks(void) {
  cr_assert_eq(xfer__mem_live(), 0, "libxfer left %ld blocks allocated",
               xfer__mem_live());
#ifdef TH_HAVE_LSAN
  cr_assert_eq(__lsan_do_recoverable_leak_check(), 0,
               "LeakSanitizer found leaks (report above)");
#endif
}

/* --- HTTP transfers ------------------------------------------------------- */

size_t th_sink_cb(const char *data, size_t len, void *userp) {
  struct th_sink *s = userp;

  if (s->len + len + 1 > s->cap) {
    size_t cap = s->cap ? s->cap : 1024;
    while (cap < s->len + len + 1)
      cap *= 2;
    s->data = realloc(s->data, cap);
    cr_assert_not_null(s->data);
    s->cap = cap;
  }
  memcpy(s->data + s->len, data, len);
  s->len += len;
  s->data[s->len] = '\0'; /* so that tests may search it as a string */
  return len;
}

void th_sink_free(struct th_sink *s) {
  free(s->data);
  memset(s, 0, sizeof(*s));
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#define TH_MAX_RESULTS 8192
static struct {
  xfer *x;
  xfer_code result;
} results[TH_MAX_RESULTS];
static int nresults;

static void collect(xfer_multi *m) {
  const xfer_msg *msg;

  while ((msg = xfer_multi_info_read(m, NULL))) {
    cr_assert_lt(nresults, TH_MAX_RESULTS);
    results[nresults].x = msg->x;
    results[nresults].result = msg->result;
    nresults++;
  }
}

void th_run(xfer_multi *m, long max_ms) {
  int64_t give_up = mono_ms() + max_ms;
  int running = 1;

  while (running && mono_ms() < give_up) {
    cr_assert_eq(xfer_multi_perform(m, &running), XFER_M_OK);
    collect(m);
    if (running)
      cr_assert_eq(xfer_multi_poll(m, 100, NULL), XFER_M_OK);
  }
  collect(m);
  cr_assert_eq(running, 0, "transfers still running after %ld ms", max_ms);
}

void th_run_for(xfer_multi *m, long ms) {
  int64_t until = mono_ms() + ms, left;

  while ((left = until - mono_ms()) > 0) {
    cr_assert_eq(xfer_multi_perform(m, NULL), XFER_M_OK);
    collect(m);
    cr_assert_eq(xfer_multi_poll(m, left < 20 ? (int)left : 20, NULL),
                 XFER_M_OK);
  }
  collect(m);
}

static int epoll_socket_cb(xfer_multi *m, int fd, int what, void *userp,
                           void *socketp) {
  struct th_epoll *e = userp;
  struct epoll_event ev = {.data.fd = fd};

  if (what == XFER_POLL_REMOVE) {
    cr_assert_eq(epoll_ctl(e->ep, EPOLL_CTL_DEL, fd, NULL), 0, "DEL %d: %s",
                 fd, strerror(errno));
  } else {
    ev.events = ((what & XFER_POLL_IN) ? EPOLLIN : 0) |
                ((what & XFER_POLL_OUT) ? EPOLLOUT : 0);
    if (epoll_ctl(e->ep, EPOLL_CTL_MOD, fd, &ev) != 0)
      cr_assert_eq(epoll_ctl(e->ep, EPOLL_CTL_ADD, fd, &ev), 0, "ADD %d: %s",
                   fd, strerror(errno));
  }
  return e->rec ? th_sockrec_cb(m, fd, what, e->rec, socketp) : 0;
}

static int epoll_timer_cb(xfer_multi *m, long timeout_ms, void *userp) {
  struct th_epoll *e = userp;

  (void)m;
  e->deadline_ms = timeout_ms < 0 ? -1 : mono_ms() + timeout_ms;
  return 0;
}

void th_epoll_init(struct th_epoll *e, xfer_multi *m, struct th_sockrec *rec) {
  e->ep = epoll_create1(EPOLL_CLOEXEC);
  cr_assert_geq(e->ep, 0);
  e->deadline_ms = -1;
  e->rec = rec;
  cr_assert_eq(xfer_multi_set_socket_cb(m, epoll_socket_cb, e), XFER_M_OK);
  cr_assert_eq(xfer_multi_set_timer_cb(m, epoll_timer_cb, e), XFER_M_OK);
}

void th_epoll_run(struct th_epoll *e, xfer_multi *m, long max_ms) {
  int64_t give_up = mono_ms() + max_ms;
  int running = 1;

  /* The first call: what was added before the callbacks were set. */
  cr_assert_eq(xfer_multi_socket_timeout(m, &running), XFER_M_OK);
  while (running && mono_ms() < give_up) {
    struct epoll_event evs[64];
    int64_t wait_ms = 100;
    int n;

    if (e->deadline_ms >= 0 && e->deadline_ms - mono_ms() < wait_ms)
      wait_ms = e->deadline_ms - mono_ms();
    n = epoll_wait(e->ep, evs, 64, wait_ms < 0 ? 0 : (int)wait_ms);
    cr_assert(n >= 0 || errno == EINTR, "epoll_wait: %s", strerror(errno));
    for (int i = 0; i < n; i++) {
      int ev = ((evs[i].events & EPOLLIN) ? XFER_CSELECT_IN : 0) |
               ((evs[i].events & EPOLLOUT) ? XFER_CSELECT_OUT : 0) |
               ((evs[i].events & (EPOLLERR | EPOLLHUP)) ? XFER_CSELECT_ERR
                                                         : 0);
      cr_assert_eq(xfer_multi_socket_action(m, evs[i].data.fd, ev, &running),
                   XFER_M_OK);
    }
    if (e->deadline_ms >= 0 && mono_ms() >= e->deadline_ms) {
      e->deadline_ms = -1; /* one-shot, as libuv's and everyone's */
      cr_assert_eq(xfer_multi_socket_timeout(m, &running), XFER_M_OK);
    }
    collect(m);
  }
  collect(m);
  cr_assert_eq(running, 0, "transfers still running after %ld ms", max_ms);
}

void th_epoll_close(struct th_epoll *e) {
  close(e->ep);
  e->ep = -1;
}

xfer_code th_result(xfer_multi *m, xfer *x) {
  collect(m);
  for (int i = nresults - 1; i >= 0; i--)
    if (results[i].x == x)
      return results[i].result;
  cr_assert_fail("no result for the transfer");
  return XFER_E_BAD_HANDLE;
}

xfer *th_get(xfer_multi *m, const char *url, struct th_sink *sink) {
  xfer *x = xfer_new();

  cr_assert_not_null(x);
  cr_assert_eq(xfer_set_url(x, url), XFER_OK, "%s: %s", url,
               xfer_get_error_detail(x));
  if (sink)
    cr_assert_eq(xfer_set_write_cb(x, th_sink_cb, sink), XFER_OK);
  cr_assert_eq(xfer_multi_add(m, x), XFER_M_OK);
  return x;
}

void th_expect_pattern(const char *body, size_t len, size_t n) {
  static const char alphabet[] = "0123456789abcdefghijklmnopqrstuvwxyz";

  cr_assert_eq(len, n, "body of %zu bytes, expected %zu", len, n);
  for (size_t i = 0; i < n; i++)
    cr_assert_eq(body[i], alphabet[i % 36], "body byte %zu", i);
}

const char *th_url(int port, const char *path) {
  static char slots[8][512];
  static unsigned next;
  char *u = slots[next++ % 8];

  snprintf(u, sizeof(slots[0]), "http://127.0.0.1:%d%s", port, path);
  return u;
}

void th_raise_nofile(long n) {
  struct rlimit rl;

  cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
  if ((long)rl.rlim_cur >= n)
    return;
  cr_assert_geq((long)rl.rlim_max, n, "RLIMIT_NOFILE hard limit %ld < %ld",
                (long)rl.rlim_max, n);
  rl.rlim_cur = (rlim_t)n;
  cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
}

/* Reads a whole fd into buf (NUL-terminated). */
static void slurp(int fd, char *buf, size_t cap) {
  size_t len = 0;
  ssize_t n;

  while (len + 1 < cap && (n = read(fd, buf + len, cap - 1 - len)) > 0)
    len += (size_t)n;
  buf[len] = '\0';
}

void th_spawn_start(struct th_proc *p, const char *const *argv,
                    bool ignore_sigint) {
  strcpy(p->outpath, "/tmp/xfer-spawn-out-XXXXXX");
  strcpy(p->errpath, "/tmp/xfer-spawn-err-XXXXXX");
  p->ofd = mkstemp(p->outpath);
  p->efd = mkstemp(p->errpath);
  p->name = argv[0];
  cr_assert(p->ofd >= 0 && p->efd >= 0);
  p->pid = fork();
  cr_assert_neq(p->pid, -1);
  if (p->pid == 0) {
    dup2(p->ofd, 1);
    dup2(p->efd, 2);
    if (ignore_sigint) /* as a shell does for a job in the background */
      signal(SIGINT, SIG_IGN);
    execv(argv[0], (char *const *)argv);
    _exit(127);
  }
}

int th_spawn_wait(struct th_proc *p, char *out, size_t out_cap, char *err,
                  size_t err_cap) {
  int pidfd = (int)syscall(SYS_pidfd_open, p->pid, 0), status = -1;
  struct pollfd pfd = {.fd = pidfd, .events = POLLIN};
  int ready;

  /* Bounded: a program that hangs is killed and the test fails, rather
   * than the suite waiting forever. */
  cr_assert_geq(pidfd, 0);
  do
    ready = poll(&pfd, 1, 120000);
  while (ready < 0 && errno == EINTR);
  close(pidfd);
  if (ready == 0)
    kill(p->pid, SIGKILL);
  cr_assert_eq(waitpid(p->pid, &status, 0), p->pid);
  lseek(p->ofd, 0, SEEK_SET);
  lseek(p->efd, 0, SEEK_SET);
  slurp(p->ofd, out, out_cap);
  slurp(p->efd, err, err_cap);
  close(p->ofd);
  close(p->efd);
  unlink(p->outpath);
  unlink(p->errpath);
  cr_assert_neq(ready, 0, "%s did not end within 2 minutes: %s", p->name,
                err);
  cr_assert(WIFEXITED(status), "%s died: %s", p->name, err);
  return WEXITSTATUS(status);
}

int th_spawn(const char *const *argv, char *out, size_t out_cap, char *err,
             size_t err_cap) {
  struct th_proc p;

  th_spawn_start(&p, argv, false);
  return th_spawn_wait(&p, out, out_cap, err, err_cap);
}

int th_lines(const char *s) {
  int n = 0;

  for (; *s; s++)
    n += *s == '\n';
  return n;
}

int th_free_port(void) {
  struct sockaddr_in a = {.sin_family = AF_INET};
  socklen_t len = sizeof(a);
  int fd = socket(AF_INET, SOCK_STREAM, 0);

  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  getsockname(fd, (struct sockaddr *)&a, &len);
  close(fd);
  return ntohs(a.sin_port);
}

int th_refused_port(void) {
  struct sockaddr_in a = {.sin_family = AF_INET};
  socklen_t len = sizeof(a);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  cr_assert_geq(fd, 0);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
  /* Kept bound, never listening, until the process ends: a connect is
   * refused, and no other socket (another test's server) can take the
   * port meanwhile. */
  return ntohs(a.sin_port);
}

bool th_port_answers(int port) {
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port)};
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  bool ok;

  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
  close(fd);
  return ok;
}

#define NGINX_BIN "/usr/sbin/nginx"

void th_nginx_prepare(struct th_nginx *n) {
  char path[192];

  n->pid = -1;
  snprintf(n->prefix, sizeof(n->prefix), "/tmp/xfer-nginx-XXXXXX");
  cr_assert_not_null(mkdtemp(n->prefix));
  snprintf(path, sizeof(path), "%s/root", n->prefix);
  cr_assert_eq(mkdir(path, 0755), 0);
  snprintf(path, sizeof(path), "%s/tmp", n->prefix);
  cr_assert_eq(mkdir(path, 0755), 0);
}

static void nginx_config(const struct th_nginx *n) {
  char path[192], line[512];
  FILE *in = fopen(TESTS_SRCDIR "/nginx/nginx.conf", "r"), *out;

  cr_assert_not_null(in, "%s/nginx/nginx.conf: %s", TESTS_SRCDIR,
                     strerror(errno));
  snprintf(path, sizeof(path), "%s/nginx.conf", n->prefix);
  out = fopen(path, "w");
  cr_assert_not_null(out);
  while (fgets(line, sizeof(line), in)) {
    for (char *p = line; *p;) {
      if (strncmp(p, "@PREFIX@", 8) == 0) {
        fputs(n->prefix, out);
        p += 8;
      } else if (strncmp(p, "@PORT@", 6) == 0) {
        fprintf(out, "%d", n->port);
        p += 6;
      } else {
        fputc(*p++, out);
      }
    }
  }
  fclose(in);
  fclose(out);
}

void th_nginx_start(struct th_nginx *n) {
  char conf[192], errlog[192];

  cr_assert_eq(access(NGINX_BIN, X_OK), 0,
               NGINX_BIN " is missing: install Debian's nginx (./bootstrap.sh)");
  for (int attempt = 0; attempt < 5; attempt++) {
    int status;
    n->port = th_free_port();
    nginx_config(n);
    snprintf(conf, sizeof(conf), "%s/nginx.conf", n->prefix);
    snprintf(errlog, sizeof(errlog), "%s/error.log", n->prefix);
    n->pid = fork();
    cr_assert_geq(n->pid, 0);
    if (n->pid == 0) {
      execl(NGINX_BIN, "nginx", "-p", n->prefix, "-e", errlog, "-c", conf,
            (char *)NULL);
      _exit(127);
    }
    for (int i = 0; i < 100; i++) { /* up to 5 s */
      struct timespec pause = {0, 50000000};
      if (th_port_answers(n->port))
        return;
      if (waitpid(n->pid, &status, WNOHANG) == n->pid)
        break; /* exited: most likely the port was taken meanwhile */
      nanosleep(&pause, NULL);
    }
    kill(n->pid, SIGKILL);
    waitpid(n->pid, &status, 0);
    n->pid = -1;
  }
  cr_assert_fail("nginx did not start; see %s/error.log", n->prefix);
}

void th_nginx_stop(struct th_nginx *n) {
  int status;

  if (n->pid > 0) {
    kill(n->pid, SIGTERM);
    waitpid(n->pid, &status, 0);
    n->pid = -1;
  }
  if (n->prefix[0]) {
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", n->prefix);
    cr_assert_eq(system(cmd), 0);
    n->prefix[0] = '\0';
  }
}

/* --- counting allocator hooks ---------------------------------------------- */

static atomic_long mem_live_bytes, mem_calls, mem_fail_at;

struct mem_header {
  size_t size;
  max_align_t align;
};

static void *mem_malloc(size_t size, void *user) {
  struct mem_header *h;

  (void)user;
  if (atomic_fetch_add(&mem_calls, 1) + 1 == atomic_load(&mem_fail_at))
    return NULL;
  h = malloc(sizeof(*h) + size);
  if (!h)
    return NULL;
  h->size = size;
  atomic_fetch_add(&mem_live_bytes, (long)size);
  return h + 1;
}

static void mem_free(void *ptr, void *user) {
  struct mem_header *h = (struct mem_header *)ptr - 1;

  (void)user;
  atomic_fetch_sub(&mem_live_bytes, (long)h->size);
  free(h);
}

static void *mem_calloc(size_t count, size_t size, void *user) {
  void *p = mem_malloc(count * size, user);

  if (p)
    memset(p, 0, count * size);
  return p;
}

static void *mem_realloc(void *ptr, size_t size, void *user) {
  struct mem_header *old = (struct mem_header *)ptr - 1;
  void *p = mem_malloc(size, user);

  if (!p)
    return NULL; /* the old block stays, as realloc() leaves it */
  memcpy(p, ptr, old->size < size ? old->size : size);
  mem_free(ptr, user);
  return p;
}

const xfer_mem th_mem = {NULL, mem_malloc, mem_free, mem_calloc, mem_realloc};

long th_mem_live_bytes(void) { return atomic_load(&mem_live_bytes); }

long th_mem_calls(void) { return atomic_load(&mem_calls); }

void th_mem_fail_at(long n) {
  atomic_store(&mem_calls, 0);
  atomic_store(&mem_fail_at, n);
}
