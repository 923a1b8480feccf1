/*
 * Helpers for the unit suites: a controllable clock, recorders for the
 * socket and timer callbacks, and scripted test transfers ("tt") whose
 * pollset and behaviour a test sets directly.
 */
#ifndef XFER_TESTHELP_H
#define XFER_TESTHELP_H

#include "common.h"

#include <sys/types.h>

#include "multi.h"
#include "multi_ev.h"
#include "now.h"
#include "transfer.h"

#define MS(n) ((xfer__time)(n)*XFER__NS_PER_MS)

/* xfer_pool_opts.attach_hold_ms for tests of the shared side: every
 * connection goes back to the pool at once, never attached. */
#define TH_NO_ATTACH (-1)

/* --- controllable clock ---------------------------------------------------- */

/* Installs a fake clock at `start`; each read then advances it by `step`
 * (0: it stands still until th_clock_advance()). */
void th_clock_install(xfer__time start, xfer__time step);
void th_clock_advance(xfer__time by);
xfer__time th_clock_peek(void);
void th_clock_uninstall(void);

/* --- socket callback recorder --------------------------------------------- */

#define TH_MAX_CALLS 16384

struct th_sockcall {
  int fd;
  int what;
  void *socketp;
};

struct th_sockrec {
  struct th_sockcall calls[TH_MAX_CALLS];
  int count;
  int refuse_fd;           /* answer -1 for this fd (-1: never) */
  bool assign;             /* xfer_multi_assign() a marker on new sockets */
  xfer__time advance_by;   /* advance the fake clock inside the callback */
  xfer_mcode reentry_rc;   /* result of a re-entrant call, if tried */
  bool try_reentry;        /* call xfer_multi_socket_action() from inside */
};

void th_sockrec_init(struct th_sockrec *r);
int th_sockrec_cb(xfer_multi *m, int fd, int what, void *userp, void *socketp);
/* Asserts that calls [from, from + n) are exactly (fd, what) pairs. */
void th_expect_calls(const struct th_sockrec *r, int from, const int *pairs,
                     int n);

/* --- timer callback recorder ---------------------------------------------- */

struct th_timerrec {
  long timeouts[TH_MAX_CALLS];
  int count;
  int answer;
};
void th_timerrec_init(struct th_timerrec *r);
int th_timerrec_cb(xfer_multi *m, long timeout_ms, void *userp);

/* --- scripted test transfers ---------------------------------------------- */

#define TT_MAX_RUNS 256

struct tt {
  xfer *x;
  int id;
  struct xfer__pollset ps;                      /* what pollset() reports */
  /* AGAIN, DONE, or FAILED with xfer__step_failed(t->x, code); NULL: stay
   * running. */
  enum xfer__step (*on_run)(struct tt *t, unsigned due);
  int close_fds[4];                             /* closed at cleanup */
  int nclose;
  int runs;
  unsigned last_due;
  unsigned uses_at_run; /* sockets in its last pollset when run() began */
  xfer__time run_now[TT_MAX_RUNS]; /* the transfer's now at each run */
  int cleanups;
  void *user;
  int state; /* free for on_run */
  struct tt *next_alive; /* every tt not freed yet, for tt_free_all() */
};

extern const struct xfer__handler tt_handler;

struct tt *tt_new(int id);
void tt_free(struct tt *t);
/* Frees every tt still alive; call after destroying the multi. */
void tt_free_all(void);
/* Replaces the socket fd's interest in the reported pollset (0: drop). */
void tt_want(struct tt *t, int fd, unsigned want);
/* True when every run saw a `now` no smaller than the previous run's. */
bool tt_now_monotonic(const struct tt *t);

/* A connected AF_UNIX stream pair, non-blocking; asserts on failure. */
void th_socketpair(int sv[2]);

/* Fails the current test if libxfer still holds allocations (counted in
 * lib/mem.c), and in ASan builds if LeakSanitizer sees a leak. */
void th_expect_no_leaks(void);

/* This thread holds no pool lock: checked where the build keeps the depth
 * (debug builds, now.h); elsewhere nothing keeps it to check. */
#ifdef XFER__POOL_LOCK_DEPTH_KEPT
#define TH_ASSERT_NO_POOL_LOCK() cr_assert_eq(xfer__pool_lock_depth, 0)
#else
#define TH_ASSERT_NO_POOL_LOCK() ((void)0)
#endif

/*
 * A Criterion test that ends with its suite's teardown, `<suite>_end()`
 * (each test file defines one), and th_expect_no_leaks(), inside the test
 * body: Criterion ignores failures in .fini (assertions, abort, exit codes
 * alike), and a leak must fail the test that made it.
 */
#define TH_TEST(suite, name, ...)                                             \
  static void th_body_##suite##_##name(void);                                 \
  Test(suite, name, ##__VA_ARGS__) {                                          \
    th_body_##suite##_##name();                                               \
    suite##_end();                                                            \
    th_expect_no_leaks();                                                     \
  }                                                                           \
  static void th_body_##suite##_##name(void)

/* --- HTTP transfers ------------------------------------------------------- */

/* A response body collected by th_sink_cb (set as the write callback);
 * data is kept NUL-terminated past len. */
struct th_sink {
  char *data;
  size_t len;
  size_t cap;
};
size_t th_sink_cb(const char *data, size_t len, void *userp);
void th_sink_free(struct th_sink *s);

/* Runs the multi with perform/poll until nothing runs, at most max_ms;
 * asserts it finished. Returns the number of messages it collected into
 * results (in the order of the transfers given). */
void th_run(xfer_multi *m, long max_ms);

/* Runs the multi with perform/poll for ms of wall time, whatever runs
 * (for hold times and other timers of the multi itself). */
void th_run_for(xfer_multi *m, long ms);

/* A GET of url with a sink; the transfer is added to m. */
xfer *th_get(xfer_multi *m, const char *url, struct th_sink *sink);

/* An application's event loop, the multi_socket way: epoll for the
 * sockets, a deadline of its own for the timer, xfer_multi_socket_action()
 * for both. th_epoll_init() sets both callbacks of m (the socket callback
 * records into rec too, when rec is not NULL); th_epoll_run() drives m
 * until nothing runs, at most max_ms, and asserts it finished; results go
 * to th_result(). Close it after destroying m. */
struct th_epoll {
  int ep;
  int64_t deadline_ms; /* -1: no timer armed */
  struct th_sockrec *rec;
};
void th_epoll_init(struct th_epoll *e, xfer_multi *m, struct th_sockrec *rec);
void th_epoll_run(struct th_epoll *e, xfer_multi *m, long max_ms);
void th_epoll_close(struct th_epoll *e);

/* The result of x from the multi's messages (reads them all once and
 * stores each transfer's result for lookup). */
xfer_code th_result(xfer_multi *m, xfer *x);

/* Asserts body == the test server's pattern of n bytes from offset 0. */
void th_expect_pattern(const char *body, size_t len, size_t n);

/* http://127.0.0.1:port + path, in a static buffer per call site slot. */
const char *th_url(int port, const char *path);

/* Raises the soft RLIMIT_NOFILE to at least n (asserts it could). */
void th_raise_nofile(long n);

/* A program running in a process of its own (th_spawn_start), its
 * stdout and stderr going to files read back by th_spawn_wait. */
struct th_proc {
  pid_t pid;
  int ofd, efd;
  char outpath[32], errpath[32];
  const char *name;
};
/* Starts argv (argv[0] is its path); with ignore_sigint the program
 * starts with SIGINT ignored, as a shell starts a job in the background. */
void th_spawn_start(struct th_proc *p, const char *const *argv,
                    bool ignore_sigint);
/* Waits for it (at most 2 minutes: then it is killed and the test fails);
 * its stdout and stderr land, NUL-terminated, in out and err. Returns its
 * exit status (asserts it exited rather than died). */
int th_spawn_wait(struct th_proc *p, char *out, size_t out_cap, char *err,
                  size_t err_cap);
/* Both: runs a program to its end. */
int th_spawn(const char *const *argv, char *out, size_t out_cap, char *err,
             size_t err_cap);
/* The number of lines in s. */
int th_lines(const char *s);

/* Allocator hooks for xfer_mem_set() that count libxfer's live bytes
 * and its calls (any thread), and can fail one call: th_mem_fail_at(n)
 * makes the n-th call from now fail (0: none) and restarts the count. */
extern const xfer_mem th_mem;
long th_mem_live_bytes(void);
long th_mem_calls(void);
void th_mem_fail_at(long n);

/* A port on 127.0.0.1 that was free a moment ago (for servers that
 * cannot listen on port 0), and whether something answers on one. */
int th_free_port(void);
/* A port on 127.0.0.1 that refuses connections for the rest of the
 * process: bound by a socket that never listens (a port merely free a
 * moment ago could be taken by another test's server meanwhile). */
int th_refused_port(void);
bool th_port_answers(int port);

/* Debian's nginx from tests/nginx/nginx.conf: one process (master_process
 * off), its own prefix (root/ holds the files it serves), its own error
 * log, a probed port (retried when another process took it first). */
struct th_nginx {
  char prefix[128];
  int pid;
  int port;
};
/* Creates the prefix with root/ and tmp/, for files to be put in root/. */
void th_nginx_prepare(struct th_nginx *n);
void th_nginx_start(struct th_nginx *n);
/* Stops it and removes the prefix. */
void th_nginx_stop(struct th_nginx *n);

/* Asserts the timeline is complete and ordered. */
void th_expect_timeline_ordered(const xfer *x);

#endif /* XFER_TESTHELP_H */
