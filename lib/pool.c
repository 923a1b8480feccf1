/*
 * The pool object (see pool.h, pool_impl.h and docs/internals/pool.md):
 * options, statistics, and the accounting of a connection's life in the
 * pool: opened with a waiter's slots, evicted (its total slot freed at
 * once), closing (what it still holds freed).
 *
 * Protected by:
 *   the options            immutable after xfer_pool_new()
 *   the counters           relaxed atomics
 *   pool->tallies (the attached multis' tallies, a list)   tally_lock,
 *                          taken when a multi attaches or detaches and by
 *                          a statistics read, never on a request's way
 *                          (its walk is not bounded: see pool_impl.h)
 * The table, lanes and FIFOs are guarded in their own files.
 */
#include "pool_impl.h"

#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "mem.h"

XFER__THREAD_LOCAL unsigned xfer__pool_visits;
#ifdef XFER_DEBUG
XFER__THREAD_LOCAL unsigned xfer__pool_visits_peak;
XFER__THREAD_LOCAL unsigned long xfer__pool_locks_taken;
#endif
xfer__pool_hook_fn xfer__pool_hook;

/* A held lock is looked at this many times, between `pause`s, before its
 * waiter sleeps: holders keep a lock for a few pointer moves, so most
 * waits end within the spin, without a system call. */
#define XFER__POOL_SPINS 128

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* U. Drepper's "Futexes Are Tricky", mutex 3: whoever sleeps leaves the
 * state at 2, so that the release wakes it; a thread that takes the lock
 * after a sleep leaves it at 2 too (at worst one wake-up too many). */
void xfer__pool_lock_contended(xfer_pool *pool, xfer__lock *l) {
  int free_;

  atomic_fetch_add_explicit(&pool->contention, 1, memory_order_relaxed);
  for (unsigned i = 0; i < XFER__POOL_SPINS; i++) {
    cpu_relax();
    free_ = 0;
    /* Read first: the spin does not take the line from the holder. */
    if (atomic_load_explicit(&l->state, memory_order_relaxed) == 0 &&
        atomic_compare_exchange_strong_explicit(&l->state, &free_, 1,
                                                memory_order_acquire,
                                                memory_order_relaxed))
      return;
  }
  while (atomic_exchange_explicit(&l->state, 2, memory_order_acquire) != 0)
    syscall(SYS_futex, &l->state, FUTEX_WAIT_PRIVATE, 2, NULL, NULL, 0);
}

void xfer__lock_wake(xfer__lock *l) {
  syscall(SYS_futex, &l->state, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

bool xfer__pool_valid(const xfer_pool *pool) {
  return pool && pool->magic == XFER__MAGIC_POOL;
}

bool xfer__pool_limited(const xfer_pool *pool) {
  return pool->max_per_destination > 0 || pool->max_total > 0;
}

xfer__time xfer__pool_attach_hold(const xfer_pool *pool) {
  return pool->attach_hold;
}

xfer__time xfer__pool_attached_wait(const xfer_pool *pool) {
  return pool->attached_wait;
}

/* An option in ms, or its default when 0, in ns. */
static xfer__time ms_or(unsigned ms, unsigned dflt) {
  return (xfer__time)(ms ? ms : dflt) * XFER__NS_PER_MS;
}

xfer_pool *xfer_pool_new(const xfer_pool_opts *opts) {
  static const xfer_pool_opts defaults;
  xfer_pool *pool = xfer__calloc(1, sizeof(*pool));
  long ncpu;

  if (!pool)
    return NULL;
  if (!opts)
    opts = &defaults;
  pool->bundles = cds_lfht_new(64, 64, 0, CDS_LFHT_AUTO_RESIZE, NULL);
  if (!pool->bundles) {
    xfer__free(pool);
    return NULL;
  }
  pool->magic = XFER__MAGIC_POOL;
  pool->max_idle_per_destination = opts->max_idle_per_destination;
  pool->max_per_destination = opts->max_per_destination;
  pool->max_total = opts->max_total;
  pool->count_idle = pool->max_idle_per_destination || pool->max_total;
  ncpu = sysconf(_SC_NPROCESSORS_CONF);
  pool->nlanes = ncpu < 1                      ? 1
                 : ncpu > XFER__POOL_LANES_MAX ? XFER__POOL_LANES_MAX
                                               : (unsigned)ncpu;
  pool->attach_hold = opts->attach_hold_ms < 0
                          ? 0
                          : ms_or((unsigned)opts->attach_hold_ms, 100);
  pool->attached_wait = opts->attached_wait_ms < 0
                            ? 0
                            : ms_or((unsigned)opts->attached_wait_ms, 10);
  pool->recheck = ms_or(opts->recheck_ms, 1000);
  pool->idle_timeout = ms_or(opts->idle_timeout_ms, 118000);
  pool->max_lifetime = ms_or(opts->max_lifetime_ms, 24u * 3600 * 1000);
  /* Sweeping a quarter of the idle timeout late at most. */
  pool->sweep_every = pool->idle_timeout / 4;
  atomic_init(&pool->next_sweep, 0);
  xfer__lock_init(&pool->total_lock);
  xfer__list_init(&pool->room);
  xfer__lock_init(&pool->tally_lock);
  xfer__list_init(&pool->tallies);
  xfer__lock_init(&pool->index_lock);
  xfer__list_init(&pool->idle_index);
  return pool;
}

xfer_code xfer_pool_destroy(xfer_pool *pool) {
  struct cds_lfht_iter iter;
  struct cds_lfht_node *node;
  struct xfer__list idle;

  if (!pool)
    return XFER_OK;
  if (!xfer__pool_valid(pool))
    return XFER_E_BAD_HANDLE;
  if (atomic_load(&pool->multis) > 0)
    return XFER_E_IN_USE;
  /* Bundles a sweep removed are freed first. Only when there are any:
   * the barrier waits for liburcu's call_rcu thread. */
  if (atomic_load(&pool->rcu_pending) > 0)
    rcu_barrier();
  /* No multi uses the pool any more, so no reader can hold a bundle. */
  xfer__list_init(&idle);
  rcu_read_lock();
  cds_lfht_for_each(pool->bundles, &iter, node) {
    struct xfer__bundle *b = caa_container_of(node, struct xfer__bundle, node);
    cds_lfht_del(pool->bundles, node);
    xfer__lanes_drain(b, &idle);
    TSAN_BEFORE_FREE(&b->rcu);
    xfer__free(b);
  }
  rcu_read_unlock();
  while (!xfer__list_empty(&idle)) {
    struct xfer__conn *c =
        XFER__CONTAINER_OF(idle.next, struct xfer__conn, idle_node);
    xfer__list_remove(&c->idle_node);
    xfer__conn_close(c, NULL);
  }
  cds_lfht_destroy(pool->bundles, NULL);
  pool->magic = XFER__MAGIC_DEAD;
  xfer__free(pool);
  return XFER_OK;
}

/* out->attached and out->reused_total: the pool's counts and its
 * multis' tallies, read in one hold of the lock under which a leaving
 * multi folds its tally into the pool's counts, so that it is counted
 * once. */
static void read_tallies(xfer_pool *pool, xfer_pool_stats *out) {
  struct xfer__list *pos;
  long attached, reused;

  xfer__pool_lock(pool, &pool->tally_lock);
  attached = atomic_load_explicit(&pool->attached, memory_order_relaxed);
  reused = atomic_load_explicit(&pool->reused, memory_order_relaxed);
  for (pos = pool->tallies.next; pos != &pool->tallies; pos = pos->next) {
    struct xfer__pool_tally *t =
        XFER__CONTAINER_OF(pos, struct xfer__pool_tally, node);
    attached += atomic_load_explicit(&t->attached, memory_order_relaxed);
    reused += atomic_load_explicit(&t->reused, memory_order_relaxed);
  }
  xfer__pool_unlock(&pool->tally_lock);
  out->attached = (uint64_t)(attached > 0 ? attached : 0);
  out->reused_total = (uint64_t)reused;
}

/* Statistics are relaxed atomics: each exact, the set only roughly a
 * snapshot (they move apart while read). */
#define LOAD(field)                                                            \
  ((uint64_t)atomic_load_explicit(&pool->field, memory_order_relaxed))

xfer_code xfer_pool_get_stats(xfer_pool *pool, xfer_pool_stats *out) {
  long open, idle, busy;

  if (!xfer__pool_valid(pool))
    return XFER_E_BAD_HANDLE;
  if (!out)
    return XFER_E_BAD_ARGUMENT;
  memset(out, 0, sizeof(*out));
  read_tallies(pool, out);
  out->idle = LOAD(idle) + out->attached; /* attached ones are idle too */
  out->opened_total = LOAD(opened);
  out->reopened_total = LOAD(reopened);
  out->closed_total = LOAD(closed);
  out->closed_idle_timeout = LOAD(closed_idle_timeout);
  out->closed_lifetime = LOAD(closed_lifetime);
  out->dead_on_checkout = LOAD(dead_on_checkout);
  out->closed_peer = LOAD(closed_peer);
  out->closed_error = LOAD(closed_error);
  out->closed_limit = LOAD(closed_limit);
  out->retries_total = LOAD(retries);
  open = atomic_load_explicit(&pool->open, memory_order_relaxed);
  idle = (long)out->idle;
  busy = open - idle - atomic_load_explicit(&pool->closing,
                                            memory_order_relaxed);
  out->open = (uint64_t)(open > 0 ? open : 0);
  out->busy = (uint64_t)(busy > 0 ? busy : 0);
  out->checkout_hits = out->reused_total;
  out->checkout_misses = LOAD(misses);
  out->lock_contention = LOAD(contention);
  out->waiting = LOAD(waiting);
  out->waited_total = LOAD(waited);
  out->released_on_demand = LOAD(released_on_demand);
  out->destinations = LOAD(destinations);
  out->liveness_checks = LOAD(liveness_checks);
  return XFER_OK;
}

#undef LOAD

void xfer__pool_attach(xfer_pool *pool, struct xfer__pool_tally *tally) {
  atomic_fetch_add(&pool->multis, 1);
  xfer__pool_lock(pool, &pool->tally_lock);
  xfer__list_insert_tail(&pool->tallies, &tally->node);
  xfer__pool_unlock(&pool->tally_lock);
}

void xfer__pool_detach(xfer_pool *pool, struct xfer__pool_tally *tally) {
  xfer__pool_lock(pool, &pool->tally_lock);
  xfer__list_remove(&tally->node);
  /* Folded in under the lock: a statistics read counts them once. */
  atomic_fetch_add_explicit(
      &pool->attached,
      atomic_load_explicit(&tally->attached, memory_order_relaxed),
      memory_order_relaxed);
  atomic_fetch_add_explicit(
      &pool->reused, atomic_load_explicit(&tally->reused, memory_order_relaxed),
      memory_order_relaxed);
  xfer__pool_unlock(&pool->tally_lock);
  atomic_fetch_sub(&pool->multis, 1);
}

void xfer__pool_count_retry(xfer_pool *pool) {
  XFER__POOL_COUNT(pool, retries);
}

#ifdef XFER_LOCK_STATS
/* Benchmark builds only (tests/bench/bench_pool): a histogram of pool
 * lock hold times in TSC ticks. The time stamp counter is read under the
 * lock here, which rule 3 forbids for the library itself: no build that
 * ships has it. Buckets: 16 ticks wide below 4096 ticks, then one per
 * power of two. */
#include <x86intrin.h>
#define XFER__LOCK_HIST_BUCKETS 320
atomic_ulong xfer__lock_hold_hist[XFER__LOCK_HIST_BUCKETS];
atomic_ulong xfer__lock_acquisitions;
/* Indexed by lock depth: locks nest (pool_impl.h gives the order). */
static XFER__THREAD_LOCAL uint64_t lock_taken_at[4];

void xfer__lock_stats_taken(int depth) {
  atomic_fetch_add_explicit(&xfer__lock_acquisitions, 1, memory_order_relaxed);
  lock_taken_at[depth & 3] = __rdtsc();
}

void xfer__lock_stats_released(int depth) {
  uint64_t ticks = __rdtsc() - lock_taken_at[depth & 3];
  unsigned i = ticks < 4096 ? (unsigned)(ticks / 16)
                            : 256u + (unsigned)(63 - __builtin_clzll(ticks));
  atomic_fetch_add_explicit(&xfer__lock_hold_hist[i], 1,
                            memory_order_relaxed);
}
#endif

/* --- a connection's life in the pool ---------------------------------------- */

enum xfer__pool_expiry xfer__pool_expired(const xfer_pool *pool,
                                     const struct xfer__conn *c,
                                     xfer__time now) {
  if (now - c->created >= pool->max_lifetime)
    return XFER__TOO_OLD;
  if (now - c->last_used >= pool->idle_timeout)
    return XFER__IDLE_TOO_LONG;
  return XFER__FRESH;
}

bool xfer__pool_too_old(const xfer_pool *pool, const struct xfer__conn *c,
                        xfer__time now) {
  return xfer__pool_expired(pool, c, now) == XFER__TOO_OLD;
}

void xfer__pool_evict(xfer_pool *pool, struct xfer__conn *c,
                      atomic_long *reason, struct xfer__list *evicted) {
  XFER__ASSERT_NO_POOL_LOCK();
  xfer__list_insert_tail(evicted, &c->idle_node);
  XFER__POOL_COUNT(pool, closed);
  atomic_fetch_add_explicit(reason, 1, memory_order_relaxed);
  XFER__POOL_COUNT(pool, closing);
  /* Closing gracefully, it no longer counts against max_total (xfer.h);
   * its destination slot stays until the socket is closed, which the
   * server still sees (xfer__pool_close()). */
  if (c->holds_total) {
    c->holds_total = false;
    xfer__slots_release(pool, NULL, true, evicted);
  }
}

void xfer__pool_opened(xfer_pool *pool, struct xfer__waiter *w,
                       struct xfer__conn *c, bool reopen) {
  assert(w->state == XFER__WAIT_SLOTS && w->bundle);
  XFER__POOL_COUNT(pool, opened);
  XFER__POOL_COUNT(pool, open);
  if (reopen)
    XFER__POOL_COUNT(pool, reopened);
  c->bundle = w->bundle; /* the slots move into the connection */
  c->holds_total = true;
  w->bundle = NULL;
  w->state = XFER__WAIT_NONE;
}

void xfer__pool_close(xfer_pool *pool, struct xfer__conn *c,
                      enum xfer__close_reason why, struct xfer__mev *ev,
                      struct xfer__list *evicted) {
  struct xfer__bundle *b = c->bundle;
  bool total = c->holds_total;

  XFER__POOL_UNCOUNT(pool, open);
  switch (why) {
  case XFER__CLOSE_EVICTED: /* counted when it was evicted */
    XFER__POOL_UNCOUNT(pool, closing);
    break;
  case XFER__CLOSE_DEAD:
    XFER__POOL_COUNT(pool, closed);
    XFER__POOL_COUNT(pool, dead_on_checkout);
    break;
  case XFER__CLOSE_PEER:
    XFER__POOL_COUNT(pool, closed);
    XFER__POOL_COUNT(pool, closed_peer);
    break;
  case XFER__CLOSE_ERROR:
    XFER__POOL_COUNT(pool, closed);
    XFER__POOL_COUNT(pool, closed_error);
    break;
  }
  /* Closed before its slots pass on: a waiter handed its destination
   * slot may connect at once, and the server must never see more than
   * max_per_destination sockets (a closing one counts until it is
   * closed). */
  xfer__conn_close(c, ev);
  if (b || total)
    xfer__slots_release(pool, b, total, evicted);
}

/* --- reuse (rule 6) ------------------------------------------------------------ */

/*
 * A destination's learned idle-close time (bundle->idle_close) is an upper
 * bound: its server closed a connection idle that long (or said it would,
 * Keep-Alive: timeout=N). Connections idle past three quarters of it are
 * checked before reuse, and not used at all for a request that could not
 * be sent again: a quarter is the margin in which the server may have
 * begun to close. Until it is learned, the pool's recheck_ms applies.
 */
static xfer__time learned_idle_close(const struct xfer__bundle *b) {
  return atomic_load_explicit(&b->idle_close, memory_order_relaxed);
}

static xfer__time recheck_after(const xfer_pool *pool,
                                const struct xfer__bundle *b) {
  xfer__time t = learned_idle_close(b);

  return t ? t - t / 4 : pool->recheck;
}

/* A smaller bound wins (a relaxed hint: a lost race loses one sample). */
static void learn_at_most(struct xfer__bundle *b, xfer__time t) {
  xfer__time cur = learned_idle_close(b);

  while (t > 0 && (!cur || t < cur) &&
         !atomic_compare_exchange_weak_explicit(&b->idle_close, &cur, t,
                                                memory_order_relaxed,
                                                memory_order_relaxed))
    ;
}

void xfer__pool_learn_died(xfer_pool *pool, struct xfer__conn *c,
                           xfer__time idle) {
  (void)pool;
  if (c->bundle)
    learn_at_most(c->bundle, idle);
}

void xfer__pool_learn_keep_alive(xfer_pool *pool, struct xfer__conn *c,
                                 long seconds) {
  (void)pool;
  if (c->bundle && seconds > 0 && seconds < 24L * 3600)
    learn_at_most(c->bundle, (xfer__time)seconds * 1000 * XFER__NS_PER_MS);
}

bool xfer__pool_reuse_trusted(xfer_pool *pool, const struct xfer__conn *c,
                              xfer__time now, bool replayable) {
  return replayable && xfer__pool_expired(pool, c, now) == XFER__FRESH &&
         now - c->last_used < recheck_after(pool, c->bundle);
}

enum xfer__reuse xfer__pool_reuse_check(xfer_pool *pool, struct xfer__conn *c,
                                        xfer__time now, bool replayable) {
  struct xfer__bundle *b = c->bundle; /* alive: c holds its slot */
  xfer__time idle = now - c->last_used, after, learned;

  XFER__ASSERT_NO_POOL_LOCK(); /* the peek is a system call */
  if (xfer__pool_expired(pool, c, now) != XFER__FRESH)
    return XFER__REUSE_EXPIRED;
  learned = learned_idle_close(b);
  after = recheck_after(pool, b);
  if (!replayable && learned && idle >= after)
    return XFER__REUSE_TOO_IDLE;
  if (replayable && idle < after)
    return XFER__REUSE_OK; /* trusted: a failure is retried */
  XFER__POOL_COUNT(pool, liveness_checks);
  if (!xfer__conn_alive(c)) {
    learn_at_most(b, idle);
    return XFER__REUSE_DEAD;
  }
  /* Alive past the bound: the server keeps them longer now. Forget it
   * (the next close or header teaches it again). */
  if (learned && idle >= learned)
    atomic_store_explicit(&b->idle_close, 0, memory_order_relaxed);
  return XFER__REUSE_OK;
}
