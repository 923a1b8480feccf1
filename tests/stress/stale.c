/*
 * Stale connections under load (make stress, after the soak): a server
 * that closes idle connections after T = 100 ms (shorter than the 1 s
 * recheck interval, and it does not say so in a header), and 4 threads
 * whose requests, GETs and POSTs half and half, are spaced around T
 * (0.5 T to 1.5 T apart, one at a time a thread). Run twice, on a fresh
 * server each: libxfer (one multi a thread, one shared pool, driven by
 * perform/poll), then libcurl (an easy handle a thread, each with its own
 * connection cache, CURLOPT_NOSIGNAL as its thread-safety docs ask).
 *
 * Passes when libxfer fails no GET and no POST, opens no more connections
 * for its GETs than libcurl does, and checks liveness fewer times than it
 * sends requests. Prints one line a client, then the verdict.
 *
 *   stale [-n REQUESTS_PER_THREAD]
 */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xfer/xfer.h>

#include "testserver.h"

#define THREADS 4
#define IDLE_CLOSE_MS 100

static long per_thread = 200;
static struct ts_server *srv;
static xfer_pool *pool;

struct tally {
  atomic_long gets, posts, get_failed, post_failed, get_opened, post_opened;
  char first_error[256];
  atomic_flag error_noted;
};

static void note_error(struct tally *t, const char *what, const char *detail) {
  if (!atomic_flag_test_and_set(&t->error_noted))
    snprintf(t->first_error, sizeof(t->first_error), "%s: %s", what, detail);
}

/* The pause before a thread's next request: 0.5 T to 1.5 T. It shapes the
 * load (idle ages around the server's close); it orders nothing. */
static void pause_around_idle_close(unsigned *seed) {
  long us = IDLE_CLOSE_MS * 500 + rand_r(seed) % (IDLE_CLOSE_MS * 1000);
  struct timespec ts = {us / 1000000, (us % 1000000) * 1000};

  nanosleep(&ts, NULL);
}

static char get_url[128], post_url[128];

/* --- libxfer --------------------------------------------------------------- */

static struct tally xt;

static void *xfer_thread(void *arg) {
  unsigned seed = 7u + (unsigned)(intptr_t)arg;
  xfer_multi *m = xfer_multi_new(pool);
  xfer *x = xfer_new();

  for (long i = 0; i < per_thread; i++) {
    bool is_post = rand_r(&seed) % 2;
    const xfer_msg *msg;
    int running = 1;

    pause_around_idle_close(&seed);
    xfer_set_url(x, is_post ? post_url : get_url);
    xfer_set_method(x, is_post ? "POST" : "GET");
    if (is_post)
      xfer_set_body(x, "a request body", 14);
    else
      xfer_set_body(x, NULL, 0);
    xfer_set_timeout_ms(x, 30000); /* a stuck request fails, the run ends */
    xfer_multi_add(m, x);
    while (running) {
      xfer_multi_perform(m, &running);
      if (running)
        xfer_multi_poll(m, 100, NULL);
    }
    msg = xfer_multi_info_read(m, NULL);
    atomic_fetch_add(is_post ? &xt.posts : &xt.gets, 1);
    if (!msg || msg->result != XFER_OK) {
      atomic_fetch_add(is_post ? &xt.post_failed : &xt.get_failed, 1);
      note_error(&xt, is_post ? "POST" : "GET",
                 msg ? xfer_get_error_detail(x) : "no message");
    } else if (!xfer_get_reused(x)) {
      atomic_fetch_add(is_post ? &xt.post_opened : &xt.get_opened, 1);
    }
    xfer_multi_remove(m, x);
  }
  xfer_free(x);
  xfer_multi_destroy(m);
  return NULL;
}

/* --- libcurl ---------------------------------------------------------------- */

static struct tally ct;

static size_t discard(char *d, size_t size, size_t n, void *u) {
  (void)d, (void)u;
  return size * n;
}

static void *curl_thread(void *arg) {
  unsigned seed = 7u + (unsigned)(intptr_t)arg;
  CURL *c = curl_easy_init();

  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
  for (long i = 0; i < per_thread; i++) {
    bool is_post = rand_r(&seed) % 2;
    long connects = 0;
    CURLcode rc;

    pause_around_idle_close(&seed);
    curl_easy_setopt(c, CURLOPT_URL, is_post ? post_url : get_url);
    if (is_post)
      curl_easy_setopt(c, CURLOPT_POSTFIELDS, "a request body");
    else
      curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    rc = curl_easy_perform(c);
    atomic_fetch_add(is_post ? &ct.posts : &ct.gets, 1);
    if (rc != CURLE_OK) {
      atomic_fetch_add(is_post ? &ct.post_failed : &ct.get_failed, 1);
      note_error(&ct, is_post ? "POST" : "GET", curl_easy_strerror(rc));
    } else {
      curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &connects);
      if (connects)
        atomic_fetch_add(is_post ? &ct.post_opened : &ct.get_opened, 1);
    }
  }
  curl_easy_cleanup(c);
  return NULL;
}

/* --- the runs ------------------------------------------------------------------ */

static void run(void *(*fn)(void *), struct tally *t, const char *name) {
  pthread_t th[THREADS];

  srv = ts_start(&(struct ts_config){.idle_close_ms = IDLE_CLOSE_MS});
  if (!srv) {
    fprintf(stderr, "stale: cannot start the test server\n");
    exit(2);
  }
  snprintf(get_url, sizeof(get_url), "http://127.0.0.1:%d/bytes/100",
           ts_port(srv));
  snprintf(post_url, sizeof(post_url), "http://127.0.0.1:%d/echo",
           ts_port(srv));
  for (int i = 0; i < THREADS; i++)
    pthread_create(&th[i], NULL, fn, (void *)(intptr_t)i);
  for (int i = 0; i < THREADS; i++)
    pthread_join(th[i], NULL);
  ts_stop(srv);
  printf("stale %-8s %ld GETs (%ld failed, %ld opened a connection), "
         "%ld POSTs (%ld failed, %ld opened a connection)%s%s\n",
         name, atomic_load(&t->gets), atomic_load(&t->get_failed),
         atomic_load(&t->get_opened), atomic_load(&t->posts),
         atomic_load(&t->post_failed), atomic_load(&t->post_opened),
         t->first_error[0] ? "; first error: " : "", t->first_error);
}

int main(int argc, char **argv) {
  xfer_pool_stats ps;
  long requests;
  bool ok;

  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "-n") && i + 1 < argc)
      per_thread = atol(argv[++i]);
  if (per_thread < 1) {
    fprintf(stderr, "usage: stale [-n requests-per-thread]\n");
    return 2;
  }
  curl_global_init(CURL_GLOBAL_DEFAULT);
  pool = xfer_pool_new(NULL);
  run(xfer_thread, &xt, "libxfer");
  xfer_pool_get_stats(pool, &ps);
  xfer_pool_destroy(pool);
  requests = atomic_load(&xt.gets) + atomic_load(&xt.posts);
  printf("stale libxfer pool: %llu liveness checks for %ld requests, %llu "
         "retried, %llu found dead on checkout, %llu opened\n",
         (unsigned long long)ps.liveness_checks, requests,
         (unsigned long long)ps.retries_total,
         (unsigned long long)ps.dead_on_checkout,
         (unsigned long long)ps.opened_total);
  run(curl_thread, &ct, "libcurl");
  curl_global_cleanup();
  ok = atomic_load(&xt.get_failed) == 0 && atomic_load(&xt.post_failed) == 0 &&
       atomic_load(&xt.get_opened) <= atomic_load(&ct.get_opened) &&
       (long)ps.liveness_checks < requests;
  printf("stale: %s (0 failed GETs and POSTs, GET connections opened %ld <= "
         "libcurl's %ld, liveness checks %llu < requests %ld)\n",
         ok ? "passed" : "FAILED", atomic_load(&xt.get_opened),
         atomic_load(&ct.get_opened), (unsigned long long)ps.liveness_checks,
         requests);
  return ok ? 0 : 1;
}
