/*
 * The connection pool (see pool.h and docs/internals/pool.md): an RCU hash
 * table of destination bundles, each with a short-held lock over its
 * waiters and attached connections, and its idle connections in per-CPU
 * lanes with a lock each.
 */
#include "common.h"

#ifndef XFER_SANITIZE
/* Inline RCU read-side fast paths. Sanitizer builds call into
 * liburcu-bp.so instead: TSan so that its suppressions can name the
 * library (notes/tsan-liburcu.md), UBSan because liburcu 0.13's inline
 * reader touches its 128-byte aligned reader struct at addresses its own
 * allocator does not align (a report in third-party code). */
#define _LGPL_SOURCE
#endif
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <urcu-bp.h>
#include <urcu/rculfhash.h>

#include "mem.h"
#include "pool.h"

#ifdef XFER_TSAN
#include <sanitizer/tsan_interface.h>
/* RCU's publish and grace-period guarantees, told to TSan (see
 * notes/tsan-liburcu.md). */
#define TSAN_PUBLISH(node) __tsan_release(node)
#define TSAN_READ_BEGIN(node) __tsan_acquire(node)
#define TSAN_READ_END(rcu) __tsan_release(rcu)
#define TSAN_BEFORE_FREE(rcu) __tsan_acquire(rcu)
#else
#define TSAN_PUBLISH(node) ((void)0)
#define TSAN_READ_BEGIN(node) ((void)0)
#define TSAN_READ_END(rcu) ((void)0)
#define TSAN_BEFORE_FREE(rcu) ((void)0)
#endif

#define XFER__MAGIC_POOL 0x706f6f6cu /* "pool" */

/* Lanes a bundle's idle connections are spread over: one per CPU, up to
 * this many (CPUs beyond share lanes, modulo). */
#define XFER__POOL_LANES_MAX 16
#define CACHE_LINE 64

/*
 * A destination's idle connections on the shared side live in lanes, one
 * per CPU. A thread links a connection it returns into the lane of the
 * CPU it runs on and takes one from there first, so threads that run at
 * the same moment (on different CPUs) take different locks; one list
 * under one lock failed 3.3% of its trylocks at 4 threads on 2 CPUs
 * (tests/bench/bench_pool). See docs/internals/pool.md.
 */
struct idle_lane {
  pthread_mutex_t lock;   /* guards idle */
  struct xfer__list idle; /* oldest first */
  atomic_uint count;      /* idle's length: exact under the lock, a hint
                             without it */
};

/* Whole cache lines a lane (one on x86_64, two where a mutex is larger),
 * so two CPUs' lanes share none. */
#define LANE_LINES ((sizeof(struct idle_lane) + CACHE_LINE - 1) / CACHE_LINE)
union lane_slot {
  struct idle_lane lane;
  char lines[LANE_LINES * CACHE_LINE];
};

struct xfer__bundle {
  struct cds_lfht_node node;
  struct rcu_head rcu;
  pthread_mutex_t lock;   /* guards the fields below, up to `dead` */
  unsigned conns;         /* open or being opened: slots in use */
  struct xfer__list waiters; /* xfer__waiter.node, oldest first */
  /* Waiters queued or being queued: written under `lock`, read also by
   * returners under a lane lock (queue_waiter(), give_or_keep()). */
  atomic_uint nwaiters;
  unsigned requested; /* attached ones a waiter asked for, not gone yet */
  struct xfer__list attached; /* attached to their owner multis (rule 4
                                 fast path), oldest first */
  atomic_uint attached_count; /* written under `lock` */
  bool dead; /* removed from the table by a sweep: look it up again */
  atomic_uint idle_count; /* the lanes' counts summed, for the idle limit
                             (kept only when the pool has one) */
  union lane_slot *lanes; /* nlanes of them, in this allocation */
  unsigned nlanes;        /* pool->nlanes */
  uint64_t hash;
  size_t key_len;
  char key[];
};

struct xfer_pool {
  uint32_t magic;
  struct cds_lfht *bundles;
  unsigned max_idle_per_destination; /* 0: no limit (idle_count unused) */
  unsigned max_per_destination; /* 0: no limit */
  unsigned max_total;           /* 0: no limit */
  unsigned nlanes;              /* idle lanes a bundle, 1..LANES_MAX */
  xfer__time attach_hold;       /* 0: attaching is off */
  xfer__time recheck;
  xfer__time idle_timeout;
  xfer__time max_lifetime;
  xfer__time sweep_every;
  _Atomic xfer__time next_sweep; /* CAS: one thread sweeps at a time */
  atomic_int multis;
  atomic_long idle;
  atomic_long opened;
  atomic_long reused;
  atomic_long closed;
  atomic_long reopened;
  atomic_long dead_on_checkout;
  atomic_long retries;
  atomic_long closed_idle_timeout;
  atomic_long closed_lifetime;
  atomic_long open;     /* opened and not closed yet */
  atomic_long closing;  /* evicted, in a shutdown handle */
  atomic_long misses;
  atomic_long contention;
  atomic_long waiting;
  atomic_long waited;
  atomic_long attached;
  atomic_long released_on_demand;
  atomic_long closed_peer;
  atomic_long closed_error;
  atomic_long closed_limit;
  /* The pool-wide limit: connections holding a total slot (open or being
   * opened, not evicted). Raised with an atomic outside any lock (then
   * checked); lowered only under total_lock, which also guards
   * total_waiters, so a freed slot always reaches a waiter. */
  atomic_long total;
  pthread_mutex_t total_lock;
  struct xfer__list total_waiters; /* xfer__waiter.node, oldest first */
  atomic_long total_waiting;
  atomic_long destinations; /* bundles in the table */
};

struct bundle_key {
  const char *key;
  size_t len;
};

static void bundle_free(struct xfer__bundle *b);

bool xfer__pool_valid(const xfer_pool *pool) {
  return pool && pool->magic == XFER__MAGIC_POOL;
}

bool xfer__pool_limited(const xfer_pool *pool) {
  return pool->max_per_destination > 0 || pool->max_total > 0;
}

xfer__time xfer__pool_attach_hold(const xfer_pool *pool) {
  return pool->attach_hold;
}

xfer_pool *xfer_pool_new(const xfer_pool_opts *opts) {
  xfer_pool *pool = xfer__calloc(1, sizeof(*pool));
  long ncpu;

  if (!pool)
    return NULL;
  pool->bundles = cds_lfht_new(64, 64, 0, CDS_LFHT_AUTO_RESIZE, NULL);
  if (!pool->bundles) {
    xfer__free(pool);
    return NULL;
  }
  pool->magic = XFER__MAGIC_POOL;
  pool->max_idle_per_destination = opts ? opts->max_idle_per_destination : 0;
  pool->max_per_destination = opts ? opts->max_per_destination : 0;
  pool->max_total = opts ? opts->max_total : 0;
  ncpu = sysconf(_SC_NPROCESSORS_CONF);
  pool->nlanes = ncpu < 1                      ? 1
                 : ncpu > XFER__POOL_LANES_MAX ? XFER__POOL_LANES_MAX
                                               : (unsigned)ncpu;
  if (opts && opts->attach_hold_ms < 0)
    pool->attach_hold = 0;
  else
    pool->attach_hold =
        (xfer__time)(opts && opts->attach_hold_ms ? opts->attach_hold_ms
                                                  : 100) *
        XFER__NS_PER_MS;
  pthread_mutex_init(&pool->total_lock, NULL);
  xfer__list_init(&pool->total_waiters);
  pool->recheck = (xfer__time)(opts && opts->recheck_ms ? opts->recheck_ms
                                                        : 1000) *
                  XFER__NS_PER_MS;
  pool->idle_timeout =
      (xfer__time)(opts && opts->idle_timeout_ms ? opts->idle_timeout_ms
                                                 : 118000) *
      XFER__NS_PER_MS;
  pool->max_lifetime =
      (xfer__time)(opts && opts->max_lifetime_ms ? opts->max_lifetime_ms
                                                 : 24u * 3600 * 1000) *
      XFER__NS_PER_MS;
  /* Sweeping a quarter of the idle timeout late at most. */
  pool->sweep_every = pool->idle_timeout / 4;
  atomic_init(&pool->next_sweep, 0);
  return pool;
}

xfer_code xfer_pool_destroy(xfer_pool *pool) {
  struct cds_lfht_iter iter;
  struct cds_lfht_node *node;

  if (!pool)
    return XFER_OK;
  if (!xfer__pool_valid(pool))
    return XFER_E_BAD_HANDLE;
  if (atomic_load(&pool->multis) > 0)
    return XFER_E_IN_USE;
  rcu_barrier(); /* bundles a sweep removed are freed first */
  /* No multi uses the pool any more, so no reader can hold a bundle. */
  rcu_read_lock();
  cds_lfht_for_each(pool->bundles, &iter, node) {
    struct xfer__bundle *b = caa_container_of(node, struct xfer__bundle, node);
    cds_lfht_del(pool->bundles, node);
    for (unsigned i = 0; i < pool->nlanes; i++) {
      struct idle_lane *l = &b->lanes[i].lane;
      while (!xfer__list_empty(&l->idle)) {
        struct xfer__conn *c =
            XFER__CONTAINER_OF(l->idle.next, struct xfer__conn, idle_node);
        xfer__list_remove(&c->idle_node);
        xfer__conn_close(c, NULL);
      }
    }
    TSAN_BEFORE_FREE(&b->rcu);
    bundle_free(b);
  }
  rcu_read_unlock();
  cds_lfht_destroy(pool->bundles, NULL);
  pthread_mutex_destroy(&pool->total_lock);
  pool->magic = XFER__MAGIC_DEAD;
  xfer__free(pool);
  return XFER_OK;
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
  out->attached = LOAD(attached);
  out->idle = LOAD(idle) + out->attached; /* attached ones are idle too */
  out->opened_total = LOAD(opened);
  out->reopened_total = LOAD(reopened);
  out->reused_total = LOAD(reused);
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
  out->waiting = LOAD(waiting) + LOAD(total_waiting);
  out->waited_total = LOAD(waited);
  out->released_on_demand = LOAD(released_on_demand);
  out->destinations = LOAD(destinations);
  return XFER_OK;
}

#undef LOAD

void xfer__pool_attach(xfer_pool *pool) { atomic_fetch_add(&pool->multis, 1); }

void xfer__pool_detach(xfer_pool *pool) { atomic_fetch_sub(&pool->multis, 1); }

void xfer__pool_count_retry(xfer_pool *pool) {
  atomic_fetch_add_explicit(&pool->retries, 1, memory_order_relaxed);
}

static int bundle_match(struct cds_lfht_node *node, const void *arg) {
  const struct xfer__bundle *b =
      caa_container_of(node, struct xfer__bundle, node);
  const struct bundle_key *k = arg;

  TSAN_READ_BEGIN(b);
  return b->key_len == k->len && memcmp(b->key, k->key, k->len) == 0;
}

/* Under rcu_read_lock(). */
static struct xfer__bundle *bundle_find(xfer_pool *pool, const char *key,
                                        size_t len, uint64_t hash) {
  struct bundle_key k = {key, len};
  struct cds_lfht_iter iter;
  struct cds_lfht_node *node;

  cds_lfht_lookup(pool->bundles, (unsigned long)hash, bundle_match, &k, &iter);
  node = cds_lfht_iter_get_node(&iter);
  return node ? caa_container_of(node, struct xfer__bundle, node) : NULL;
}

#ifdef XFER_LOCK_STATS
/* Benchmark builds only (tests/bench/bench_pool): a histogram of bundle
 * lock hold times in TSC ticks, log2 buckets. The time stamp counter is
 * read under the lock here, which rule 3 forbids for the library itself:
 * no build that ships has it. */
#include <x86intrin.h>
/* Buckets: 16 ticks wide below 4096 ticks, then one per power of two. */
#define XFER__LOCK_HIST_BUCKETS 320
atomic_ulong xfer__lock_hold_hist[XFER__LOCK_HIST_BUCKETS];
atomic_ulong xfer__lock_acquisitions;
/* Indexed by lock depth: a lane lock may be taken under a bundle lock. */
static _Thread_local uint64_t lock_taken_at[4];
static void lock_stats_released(int depth) {
  uint64_t ticks = __rdtsc() - lock_taken_at[depth & 3];
  unsigned i = ticks < 4096 ? (unsigned)(ticks / 16)
                            : 256u + (unsigned)(63 - __builtin_clzll(ticks));
  atomic_fetch_add_explicit(&xfer__lock_hold_hist[i], 1,
                            memory_order_relaxed);
}
#define LOCK_STATS_TAKEN(depth) (lock_taken_at[(depth) & 3] = __rdtsc())
#define LOCK_STATS_RELEASED(depth) lock_stats_released(depth)
#else
#define LOCK_STATS_TAKEN(depth) ((void)0)
#define LOCK_STATS_RELEASED(depth) ((void)0)
#endif

/* A bundle or lane lock: a few pointer moves between these two, nothing
 * else (rule 3). The depth counter lets debug builds catch a clock read.
 * Order: a bundle's lock, then one of its lanes' locks; never the other
 * way round. */
static void pool_lock(xfer_pool *pool, pthread_mutex_t *m) {
  if (pthread_mutex_trylock(m) != 0) { /* contended: count, wait */
    atomic_fetch_add_explicit(&pool->contention, 1, memory_order_relaxed);
    pthread_mutex_lock(m);
  }
#ifdef XFER_LOCK_STATS
  atomic_fetch_add_explicit(&xfer__lock_acquisitions, 1, memory_order_relaxed);
#endif
  LOCK_STATS_TAKEN(xfer__pool_lock_depth);
  xfer__pool_lock_depth++;
}

static void pool_unlock(pthread_mutex_t *m) {
  xfer__pool_lock_depth--;
  LOCK_STATS_RELEASED(xfer__pool_lock_depth);
  pthread_mutex_unlock(m);
}

static void bundle_lock(xfer_pool *pool, struct xfer__bundle *b) {
  pool_lock(pool, &b->lock);
}

static void bundle_unlock(struct xfer__bundle *b) { pool_unlock(&b->lock); }

/* --- idle lanes ------------------------------------------------------------ */

/* The lane of the CPU this thread runs on. sched_getcpu() reads the
 * kernel's rseq area on x86_64 (glibc 2.35 and later), or asks the vDSO;
 * on a platform where it is a system call it would still run outside
 * every lock: callers take it before they lock. */
static unsigned home_lane(const xfer_pool *pool) {
  int cpu = sched_getcpu();

  return cpu > 0 ? (unsigned)cpu % pool->nlanes : 0;
}

/*
 * b->idle_count and the pool's counters are shared by every CPU, so they
 * are raised and lowered outside the lane locks: an atomic on a cache
 * line another CPU holds would be a cache miss inside the lock.
 */

/* Under l's lock. */
static void lane_link(struct idle_lane *l, struct xfer__conn *c) {
  xfer__list_insert_tail(&l->idle, &c->idle_node);
  atomic_store_explicit(&l->count,
                        atomic_load_explicit(&l->count, memory_order_relaxed) +
                            1,
                        memory_order_relaxed);
}

/* Under l's lock: c leaves the lane; the caller lowers b->idle_count
 * after the lock. */
static void lane_remove(struct idle_lane *l, struct xfer__conn *c) {
  xfer__list_remove(&c->idle_node);
  atomic_store_explicit(&l->count,
                        atomic_load_explicit(&l->count, memory_order_relaxed) -
                            1,
                        memory_order_relaxed);
}

/* Under l's lock: its newest connection (or its oldest), unlinked; NULL
 * when it is empty. */
static struct xfer__conn *lane_unlink(struct idle_lane *l, bool oldest) {
  struct xfer__conn *c;

  if (xfer__list_empty(&l->idle))
    return NULL;
  c = XFER__CONTAINER_OF(oldest ? l->idle.next : l->idle.prev,
                         struct xfer__conn, idle_node);
  lane_remove(l, c);
  return c;
}

/* A place under b's idle limit (attached ones count as idle), taken
 * before the connection is linked. Each side raises its own count first
 * and checks the sum after (sequentially consistent), here and for
 * attached ones in xfer__pool_keep_attached(), so of two racing for the
 * last place at least one sees the other: the limit is never exceeded
 * (both may yield). With no limit (the default) idle_count is not kept
 * at all: no shared counter on the way in or out. */
static bool idle_reserve(xfer_pool *pool, struct xfer__bundle *b) {
  unsigned idle;

  if (!pool->max_idle_per_destination)
    return true;
  idle = atomic_fetch_add(&b->idle_count, 1);
  if (idle + atomic_load(&b->attached_count) <
      pool->max_idle_per_destination)
    return true;
  atomic_fetch_sub_explicit(&b->idle_count, 1, memory_order_relaxed);
  return false;
}

static void idle_gone(const xfer_pool *pool, struct xfer__bundle *b,
                      unsigned n) {
  if (pool->max_idle_per_destination)
    atomic_fetch_sub_explicit(&b->idle_count, n, memory_order_relaxed);
}

/* An idle connection of b, unlinked: the newest of lane `home` (this
 * CPU's), else of the next lane that has one; NULL when all are empty.
 * With `hint`, a lane whose count reads 0 is passed without taking its
 * lock, so a connection being linked at this very moment may be missed,
 * as it would be a moment earlier (checkout). Without it every lane is
 * looked at under its lock, which queue_waiter() needs. */
static struct xfer__conn *lanes_take(xfer_pool *pool, struct xfer__bundle *b,
                                     unsigned home, bool hint) {
  for (unsigned i = 0; i < pool->nlanes; i++) {
    struct idle_lane *l = &b->lanes[(home + i) % pool->nlanes].lane;
    struct xfer__conn *c;

    if (hint && !atomic_load_explicit(&l->count, memory_order_relaxed))
      continue;
    pool_lock(pool, &l->lock);
    c = lane_unlink(l, false);
    pool_unlock(&l->lock);
    if (c) {
      idle_gone(pool, b, 1);
      return c;
    }
  }
  return NULL;
}

enum expiry { FRESH, IDLE_TOO_LONG, TOO_OLD };

static enum expiry expired(const xfer_pool *pool, const struct xfer__conn *c,
                           xfer__time now) {
  if (now - c->created >= pool->max_lifetime)
    return TOO_OLD;
  if (now - c->last_used >= pool->idle_timeout)
    return IDLE_TOO_LONG;
  return FRESH;
}

bool xfer__pool_too_old(const xfer_pool *pool, const struct xfer__conn *c,
                        xfer__time now) {
  return expired(pool, c, now) == TOO_OLD;
}

/* Evicts a connection, counted under `reason`: the caller's multi shuts
 * it down gracefully. It keeps its slots until it is closed. */
static void evict(xfer_pool *pool, struct xfer__conn *c, atomic_long *reason,
                  struct xfer__list *evicted) {
  xfer__list_insert_tail(evicted, &c->idle_node);
  atomic_fetch_add_explicit(&pool->closed, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(reason, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&pool->closing, 1, memory_order_relaxed);
}

static void evict_expired(xfer_pool *pool, struct xfer__conn *c,
                          enum expiry why, struct xfer__list *evicted) {
  evict(pool, c,
        why == TOO_OLD ? &pool->closed_lifetime : &pool->closed_idle_timeout,
        evicted);
}

/* Frees a bundle the sweep removed, once no reader can hold it (a
 * call_rcu callback, on liburcu's thread). */
static void bundle_free_rcu(struct rcu_head *head) {
  struct xfer__bundle *b = caa_container_of(head, struct xfer__bundle, rcu);

  TSAN_BEFORE_FREE(&b->rcu);
  bundle_free(b);
}

/*
 * Idle and lifetime expiry, run by whichever thread first passes the next
 * sweep time (one compare-and-swap decides), with that thread's `now`: the
 * pool never reads the clock. Under each bundle lock only the unlinking;
 * the closes come after.
 */
static void maybe_sweep(xfer_pool *pool, xfer__time now,
                        struct xfer__list *evicted) {
  xfer__time due = atomic_load_explicit(&pool->next_sweep,
                                        memory_order_relaxed);
  struct xfer__list doomed;
  struct cds_lfht_iter iter;
  struct cds_lfht_node *node;

  if (now < due || !atomic_compare_exchange_strong(&pool->next_sweep, &due,
                                                   now + pool->sweep_every))
    return;
  xfer__list_init(&doomed);
  rcu_read_lock();
  cds_lfht_for_each(pool->bundles, &iter, node) {
    struct xfer__bundle *b = caa_container_of(node, struct xfer__bundle, node);
    struct xfer__list *pos, *tmp;
    unsigned gone = 0;
    bool unused;
    TSAN_READ_BEGIN(b);
    for (unsigned i = 0; i < pool->nlanes; i++) {
      struct idle_lane *l = &b->lanes[i].lane;
      if (!atomic_load_explicit(&l->count, memory_order_relaxed))
        continue; /* the next sweep sees one linked meanwhile */
      pool_lock(pool, &l->lock);
      XFER__LIST_FOREACH_SAFE(pos, tmp, &l->idle) {
        struct xfer__conn *c =
            XFER__CONTAINER_OF(pos, struct xfer__conn, idle_node);
        if (expired(pool, c, now) != FRESH) {
          lane_remove(l, c);
          xfer__list_insert_tail(&doomed, &c->idle_node);
          gone++;
        }
      }
      pool_unlock(&l->lock);
    }
    idle_gone(pool, b, gone);
    bundle_lock(pool, b);
    /* A destination nobody uses any more (no connection, no waiter)
     * leaves the table, so a crawler's pool does not grow with every
     * host it ever met. Readers that found it see `dead` under the lock
     * and look again; RCU frees it after they are gone. */
    unused = !b->conns && xfer__list_empty(&b->waiters);
    if (unused)
      b->dead = true;
    bundle_unlock(b);
    TSAN_READ_END(&b->rcu);
    if (unused && cds_lfht_del(pool->bundles, node) == 0) {
      atomic_fetch_sub_explicit(&pool->destinations, 1, memory_order_relaxed);
      call_rcu(&b->rcu, bundle_free_rcu);
    }
  }
  rcu_read_unlock();
  while (!xfer__list_empty(&doomed)) {
    struct xfer__conn *c =
        XFER__CONTAINER_OF(doomed.next, struct xfer__conn, idle_node);
    xfer__list_remove(&c->idle_node);
    atomic_fetch_sub_explicit(&pool->idle, 1, memory_order_relaxed);
    evict_expired(pool, c, expired(pool, c, now), evicted);
  }
}

/* --- wake-ups ------------------------------------------------------------- */

struct xfer__wake *xfer__wake_new(void) {
  struct xfer__wake *w = xfer__malloc(sizeof(*w));

  if (!w)
    return NULL;
  w->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (w->fd < 0) {
    xfer__free(w);
    return NULL;
  }
  atomic_init(&w->refs, 1);
  return w;
}

void xfer__wake_unref(struct xfer__wake *w) {
  if (w && atomic_fetch_sub(&w->refs, 1) == 1) {
    close(w->fd);
    xfer__free(w);
  }
}

/* After the bundle lock: the write is a syscall. */
static void wake_and_unref(struct xfer__wake *w) {
  uint64_t one = 1;

  if (!w)
    return;
  XFER__ASSERT_NO_POOL_LOCK();
  if (write(w->fd, &one, sizeof(one)) < 0) {
    /* EAGAIN: the counter is full of wake-ups already; nothing lost. */
  }
  xfer__wake_unref(w);
}

/* --- bundles --------------------------------------------------------------- */

/* One allocation: the bundle, its key, then its lanes at the next cache
 * line boundary. */
static struct xfer__bundle *bundle_new(const xfer_pool *pool, const char *key,
                                       size_t len, uint64_t hash) {
  size_t lanes_at = sizeof(struct xfer__bundle) + len;
  struct xfer__bundle *b = xfer__calloc(
      1, lanes_at + CACHE_LINE - 1 + pool->nlanes * sizeof(union lane_slot));
  uintptr_t lanes;

  if (!b)
    return NULL;
  lanes = ((uintptr_t)b + lanes_at + CACHE_LINE - 1) &
          ~(uintptr_t)(CACHE_LINE - 1);
  b->lanes = (union lane_slot *)lanes;
  b->nlanes = pool->nlanes;
  for (unsigned i = 0; i < b->nlanes; i++) {
    pthread_mutex_init(&b->lanes[i].lane.lock, NULL);
    xfer__list_init(&b->lanes[i].lane.idle);
  }
  cds_lfht_node_init(&b->node);
  pthread_mutex_init(&b->lock, NULL);
  xfer__list_init(&b->waiters);
  xfer__list_init(&b->attached);
  b->hash = hash;
  b->key_len = len;
  memcpy(b->key, key, len);
  return b;
}

static void bundle_free(struct xfer__bundle *b) {
  for (unsigned i = 0; i < b->nlanes; i++)
    pthread_mutex_destroy(&b->lanes[i].lane.lock);
  pthread_mutex_destroy(&b->lock);
  xfer__free(b);
}

/* The bundle for a key, created (allocated outside any lock) when
 * missing. Under rcu_read_lock(). */
static struct xfer__bundle *bundle_get(xfer_pool *pool, const char *key,
                                       size_t len, uint64_t hash) {
  struct xfer__bundle *b = bundle_find(pool, key, len, hash);
  struct bundle_key k = {key, len};
  struct cds_lfht_node *added;
  struct xfer__bundle *fresh;

  if (b)
    return b;
  fresh = bundle_new(pool, key, len, hash);
  if (!fresh)
    return NULL;
  TSAN_PUBLISH(fresh);
  added = cds_lfht_add_unique(pool->bundles, (unsigned long)hash,
                              bundle_match, &k, &fresh->node);
  if (added != &fresh->node) { /* another thread was first: use its */
    bundle_free(fresh); /* never published */
  } else {
    atomic_fetch_add_explicit(&pool->destinations, 1, memory_order_relaxed);
  }
  return caa_container_of(added, struct xfer__bundle, node);
}

/* The live bundle for a key (created when missing), locked; NULL when
 * out of memory. Under rcu_read_lock(). One a sweep removed meanwhile is
 * dead: it is about to leave the table, so look again. */
static struct xfer__bundle *bundle_get_locked(xfer_pool *pool,
                                              const char *key, size_t len,
                                              uint64_t hash) {
  for (;;) {
    struct xfer__bundle *b = bundle_get(pool, key, len, hash);

    if (!b)
      return NULL;
    bundle_lock(pool, b);
    if (!b->dead)
      return b;
    bundle_unlock(b);
    TSAN_READ_END(&b->rcu);
  }
}

/* Under the lock that guards `list`: its oldest waiter, unlinked and
 * marked granted (the caller fills in what first), with a reference on its
 * wake-up; or NULL. */
static struct xfer__waiter *grant_oldest(struct xfer__list *list,
                                         atomic_uint *count,
                                         atomic_long *waiting) {
  struct xfer__waiter *w;

  if (xfer__list_empty(list))
    return NULL;
  w = XFER__CONTAINER_OF(list->next, struct xfer__waiter, node);
  xfer__list_remove(&w->node);
  if (count)
    atomic_fetch_sub_explicit(count, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&w->wake->refs, 1, memory_order_relaxed);
  atomic_fetch_sub_explicit(waiting, 1, memory_order_relaxed);
  return w;
}

/* Under a lock: w was granted a slot. Its wake-up, to write to after the
 * lock. */
static struct xfer__wake *grant_slot(struct xfer__waiter *w) {
  w->granted_slot = true;
  atomic_store_explicit(&w->granted, true, memory_order_release);
  return w->wake;
}

/* --- the total limit ------------------------------------------------------- */

/*
 * A transfer at the total limit announces itself in total_waiting before
 * it looks for an idle connection to close (reserve_total()), and stays
 * counted there while it waits in the FIFO. A returner reads it under the
 * lock of the lane it would link into, and closes the connection for room
 * instead when it is not 0. So of the two, the second to hold that lane's
 * lock sees the first: no connection stays idle while a transfer waits for
 * room (the same rule as nwaiters, see queue_waiter()).
 */
static bool room_wanted(const xfer_pool *pool) {
  return pool->max_total &&
         atomic_load_explicit(&pool->total_waiting, memory_order_relaxed) > 0;
}

/* Reserves a total slot without a lock: raise, then check. */
static bool total_reserve(xfer_pool *pool) {
  if (!pool->max_total)
    return true;
  return atomic_fetch_add(&pool->total, 1) < (long)pool->max_total;
}

/* A total slot is free (a connection closed or was evicted, or a
 * reservation failed): given back, and if that leaves room, the oldest
 * pool-wide waiter takes it. Under total_lock, where waiters queue, so no
 * waiter misses a slot; the count may stand over the limit for a moment
 * (a failed reservation), which only ever delays a grant to the release
 * that ends it. */
static void total_release(xfer_pool *pool) {
  struct xfer__waiter *w = NULL;
  struct xfer__wake *wake = NULL;

  if (!pool->max_total)
    return;
  pthread_mutex_lock(&pool->total_lock);
  xfer__pool_lock_depth++;
  if (atomic_fetch_sub(&pool->total, 1) - 1 < (long)pool->max_total &&
      (w = grant_oldest(&pool->total_waiters, NULL,
                        &pool->total_waiting))) {
    atomic_fetch_add(&pool->total, 1);
    wake = grant_slot(w); /* w holds its destination slot already */
  }
  xfer__pool_lock_depth--;
  pthread_mutex_unlock(&pool->total_lock);
  wake_and_unref(wake);
}

/* At the total limit with no idle connection to close: w (holding its
 * destination's slot, announced in total_waiting) waits for a total slot,
 * unless one came free; then the announcement is taken back. */
static bool total_wait(xfer_pool *pool, struct xfer__waiter *w) {
  bool queued = false;

  pthread_mutex_lock(&pool->total_lock);
  xfer__pool_lock_depth++;
  if (atomic_load(&pool->total) < (long)pool->max_total) {
    atomic_fetch_add(&pool->total, 1);
    atomic_fetch_sub_explicit(&pool->total_waiting, 1, memory_order_relaxed);
  } else {
    w->total_wait = true;
    xfer__list_insert_tail(&pool->total_waiters, &w->node);
    queued = true;
  }
  xfer__pool_lock_depth--;
  pthread_mutex_unlock(&pool->total_lock);
  return queued;
}

/* A destination slot of b is free: it passes to b's oldest waiter (with
 * its total slot), or both are given back. */
static void release_slot(xfer_pool *pool, struct xfer__bundle *b) {
  struct xfer__waiter *w;
  struct xfer__wake *wake = NULL;

  bundle_lock(pool, b);
  w = grant_oldest(&b->waiters, &b->nwaiters, &pool->waiting);
  if (w)
    wake = grant_slot(w); /* conns stays: the slot changes hands */
  else
    b->conns--;
  bundle_unlock(b);
  if (w)
    wake_and_unref(wake);
  else
    total_release(pool);
}

/* Takes an idle connection of any destination (the oldest of the first
 * lane that has one), to close it and make room under the total limit;
 * NULL when none is idle. */
static struct xfer__conn *take_any_idle(xfer_pool *pool) {
  struct xfer__conn *c = NULL;
  struct cds_lfht_iter iter;
  struct cds_lfht_node *node;

  rcu_read_lock();
  cds_lfht_for_each(pool->bundles, &iter, node) {
    struct xfer__bundle *b = caa_container_of(node, struct xfer__bundle, node);
    TSAN_READ_BEGIN(b);
    for (unsigned i = 0; i < pool->nlanes && !c; i++) {
      struct idle_lane *l = &b->lanes[i].lane;
      /* Under the lock even to look: this runs only at the total limit. */
      pool_lock(pool, &l->lock);
      c = lane_unlink(l, true);
      pool_unlock(&l->lock);
      if (c)
        idle_gone(pool, b, 1);
    }
    TSAN_READ_END(&b->rcu);
    if (c)
      break;
  }
  rcu_read_unlock();
  if (c)
    atomic_fetch_sub_explicit(&pool->idle, 1, memory_order_relaxed);
  return c;
}

/* Evicts c and frees its slots at once (not when its graceful close
 * ends), because a transfer is waiting for room under the total limit. */
static void evict_for_room(xfer_pool *pool, struct xfer__conn *c,
                           struct xfer__list *evicted) {
  struct xfer__bundle *b = c->bundle;

  c->bundle = NULL;
  evict(pool, c, &pool->closed_limit, evicted);
  if (b)
    release_slot(pool, b);
}

void xfer__pool_opened(xfer_pool *pool, struct xfer__waiter *w,
                       struct xfer__conn *c, bool reopen) {
  atomic_fetch_add_explicit(&pool->opened, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&pool->open, 1, memory_order_relaxed);
  if (reopen)
    atomic_fetch_add_explicit(&pool->reopened, 1, memory_order_relaxed);
  c->bundle = w->bundle; /* the slots move into the connection */
  w->holds_slot = false;
  w->total_wait = false;
  w->bundle = NULL;
}

void xfer__pool_closing(xfer_pool *pool, struct xfer__conn *c,
                        enum xfer__close_reason why) {
  atomic_fetch_sub_explicit(&pool->open, 1, memory_order_relaxed);
  switch (why) {
  case XFER__CLOSE_EVICTED: /* counted when it was evicted */
    atomic_fetch_sub_explicit(&pool->closing, 1, memory_order_relaxed);
    break;
  case XFER__CLOSE_DEAD: /* counted when it was found dead */
    break;
  case XFER__CLOSE_PEER:
    atomic_fetch_add_explicit(&pool->closed, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&pool->closed_peer, 1, memory_order_relaxed);
    break;
  case XFER__CLOSE_ERROR:
    atomic_fetch_add_explicit(&pool->closed, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&pool->closed_error, 1, memory_order_relaxed);
    break;
  }
  if (c->bundle)
    release_slot(pool, c->bundle);
  c->bundle = NULL;
}

/* --- acquire ---------------------------------------------------------------- */

/* Under b's lock: an attached connection no waiter has asked for yet;
 * NULL when there is none. */
static struct xfer__conn *unrequested_attached(struct xfer__bundle *b) {
  struct xfer__list *pos;

  for (pos = b->attached.next; pos != &b->attached; pos = pos->next) {
    struct xfer__conn *c = XFER__CONTAINER_OF(pos, struct xfer__conn,
                                              idle_node);
    if (!atomic_load_explicit(&c->release_requested, memory_order_relaxed))
      return c;
  }
  return NULL;
}

/*
 * Under b's lock: queues w at the tail of b's FIFO, unless a connection
 * was linked into a lane meanwhile; that one is returned instead, and w
 * is not queued. Returners link into a lane under the lane's lock only,
 * after reading nwaiters there (give_or_keep()). Here nwaiters is raised
 * first and every lane looked at under its lock after, so of a returner
 * and a queuing waiter the second to hold a lane's lock sees the first:
 * no connection stays idle in a lane while a transfer waits for one. (A
 * transfer that must have a new connection closes the one found and takes
 * its slots: replace_idle().)
 */
static struct xfer__conn *queue_waiter(xfer_pool *pool,
                                       struct xfer__bundle *b,
                                       struct xfer__waiter *w) {
  struct xfer__conn *c;

  atomic_fetch_add_explicit(&b->nwaiters, 1, memory_order_relaxed);
  if ((c = lanes_take(pool, b, 0, false))) {
    atomic_fetch_sub_explicit(&b->nwaiters, 1, memory_order_relaxed);
    return c;
  }
  w->bundle = b;
  xfer__list_insert_tail(&b->waiters, &w->node);
  return NULL;
}

/* After the lock: w, which must have a new connection (a retry, rule 6),
 * found c idle in w->bundle at the destination's limit. c is closed and
 * its slots (the destination's and the total one) are w's, so the retry
 * need not wait for c to expire. */
static void replace_idle(xfer_pool *pool, struct xfer__waiter *w,
                         struct xfer__conn *c, struct xfer__list *evicted) {
  c->bundle = NULL; /* conns and total stay: the slots move */
  w->holds_slot = true;
  atomic_fetch_sub_explicit(&pool->idle, 1, memory_order_relaxed);
  evict(pool, c, &pool->closed_limit, evicted);
}

/* A slot of b is reserved for w: now the total one. OPEN, or WAIT when w
 * was queued, or CONN (in *conn, w's slot given back) when a connection
 * of b came back as w was about to be queued. Idle connections of other
 * destinations are closed to make room first; with none to close, w
 * waits for one of its own destination's connections when it has any
 * (so a busy destination does not close and reopen its own), else in the
 * pool-wide FIFO. */
static enum xfer__acquire reserve_total(xfer_pool *pool,
                                        struct xfer__waiter *w,
                                        bool fresh_only,
                                        struct xfer__conn **conn,
                                        struct xfer__list *evicted) {
  struct xfer__bundle *b = w->bundle;
  struct xfer__conn *idle;
  bool announced = false;

  while (!total_reserve(pool)) {
    enum xfer__acquire got = XFER__ACQUIRE_OPEN;

    total_release(pool); /* the failed reservation, under the lock */
    idle = take_any_idle(pool);
    if (idle) {
      if (announced)
        atomic_fetch_sub_explicit(&pool->total_waiting, 1,
                                  memory_order_relaxed);
      announced = false;
      evict_for_room(pool, idle, evicted);
      continue;
    }
    if (!announced) {
      bundle_lock(pool, b);
      if (b->conns > 1) { /* ours is one: give it back and queue */
        b->conns--;
        *conn = queue_waiter(pool, b, w);
        got = *conn ? XFER__ACQUIRE_CONN : XFER__ACQUIRE_WAIT;
      }
      bundle_unlock(b);
      if (got == XFER__ACQUIRE_CONN && fresh_only) { /* its slots, then */
        replace_idle(pool, w, *conn, evicted);
        *conn = NULL;
        return XFER__ACQUIRE_OPEN;
      }
      if (got != XFER__ACQUIRE_OPEN) {
        w->holds_slot = false;
        if (got == XFER__ACQUIRE_WAIT)
          atomic_fetch_add_explicit(&pool->waiting, 1, memory_order_relaxed);
        else
          w->bundle = NULL;
        return got;
      }
      /* To wait for room: announced, then the lanes looked at once more
       * (see room_wanted()). Not before the look at b, or returners
       * would close connections for room that b's own FIFO did not
       * need. */
      atomic_fetch_add(&pool->total_waiting, 1);
      announced = true;
      continue;
    }
    return total_wait(pool, w) ? XFER__ACQUIRE_WAIT : XFER__ACQUIRE_OPEN;
  }
  if (announced)
    atomic_fetch_sub_explicit(&pool->total_waiting, 1, memory_order_relaxed);
  return XFER__ACQUIRE_OPEN;
}

/* The decision under b's lock, in one place: an idle connection (CONN, in
 * *conn), a reserved slot (OPEN), or w queued (WAIT; *owner is the multi
 * to ask for an attached connection, if one was asked for). OPEN with
 * *conn set: a transfer that must have a new connection found b at its
 * limit with *conn idle, whose slots it takes (replace_idle()). */
static enum xfer__acquire decide_locked(xfer_pool *pool,
                                        struct xfer__bundle *b,
                                        unsigned home, bool fresh_only,
                                        struct xfer__waiter *w,
                                        struct xfer__conn **conn,
                                        struct xfer__wake **owner) {
  struct xfer__conn *asked = NULL;

  if (!fresh_only && (*conn = lanes_take(pool, b, home, true)))
    return XFER__ACQUIRE_CONN;
  if (!fresh_only && w->wake &&
      b->requested >
          atomic_load_explicit(&b->nwaiters, memory_order_relaxed)) {
    /* A release asked for earlier has no waiter left to serve (its
     * waiter got another connection): it will serve us. */
  } else if (!fresh_only && w->wake && (asked = unrequested_attached(b))) {
    /* Idle, but attached to another multi: its owner releases it to the
     * oldest waiter (REMOVE first) when the wake-up reaches it. Sharing
     * must not cost a connection (rule 4). */
  } else if (!pool->max_per_destination ||
             b->conns < pool->max_per_destination) {
    b->conns++; /* the reservation and the check, in one place */
    w->bundle = b;
    return XFER__ACQUIRE_OPEN;
  }
  if ((*conn = queue_waiter(pool, b, w))) {
    if (!fresh_only)
      return XFER__ACQUIRE_CONN;
    w->bundle = b; /* to take *conn's slots: replace_idle() */
    return XFER__ACQUIRE_OPEN;
  }
  if (asked) {
    atomic_store_explicit(&asked->release_requested, true,
                          memory_order_relaxed);
    b->requested++;
    *owner = asked->owner_wake;
    atomic_fetch_add_explicit(&(*owner)->refs, 1, memory_order_relaxed);
  }
  return XFER__ACQUIRE_WAIT;
}

enum xfer__acquire xfer__pool_acquire(xfer_pool *pool, const char *key,
                                      size_t key_len, uint64_t hash,
                                      xfer__time now, bool fresh_only,
                                      struct xfer__waiter *w,
                                      struct xfer__conn **conn,
                                      bool *saw_dead,
                                      struct xfer__list *evicted) {
  unsigned home = home_lane(pool);

  w->fresh_only = fresh_only;
  maybe_sweep(pool, now, evicted);
  for (;;) {
    enum xfer__acquire got;
    struct xfer__conn *c = NULL;
    struct xfer__wake *owner = NULL;
    struct xfer__bundle *b;
    enum expiry why;

    rcu_read_lock();
    /* The usual case first: an idle connection in a lane, without the
     * bundle's lock. A bundle a sweep marked dead has none: a
     * connection's slot keeps its bundle alive. */
    b = fresh_only ? NULL : bundle_find(pool, key, key_len, hash);
    if (b && (c = lanes_take(pool, b, home, true))) {
      got = XFER__ACQUIRE_CONN;
    } else {
      if (b)
        TSAN_READ_END(&b->rcu);
      b = bundle_get_locked(pool, key, key_len, hash);
      if (!b) {
        rcu_read_unlock();
        return XFER__ACQUIRE_NOMEM;
      }
      got = decide_locked(pool, b, home, fresh_only, w, &c, &owner);
      bundle_unlock(b);
    }
    TSAN_READ_END(&b->rcu);
    rcu_read_unlock();

    if (got == XFER__ACQUIRE_OPEN && c) {
      replace_idle(pool, w, c, evicted);
      atomic_fetch_add_explicit(&pool->misses, 1, memory_order_relaxed);
      return got;
    }
    if (got == XFER__ACQUIRE_OPEN) {
      w->holds_slot = true;
      got = reserve_total(pool, w, fresh_only, &c, evicted);
      if (got != XFER__ACQUIRE_CONN)
        atomic_fetch_add_explicit(&pool->misses, 1, memory_order_relaxed);
      if (got == XFER__ACQUIRE_WAIT)
        atomic_fetch_add_explicit(&pool->waited, 1, memory_order_relaxed);
      if (got != XFER__ACQUIRE_CONN)
        return got;
    }
    if (got == XFER__ACQUIRE_WAIT) {
      atomic_fetch_add_explicit(&pool->waiting, 1, memory_order_relaxed);
      atomic_fetch_add_explicit(&pool->waited, 1, memory_order_relaxed);
      wake_and_unref(owner);
      return got;
    }
    /* An idle one: expiry and liveness after the lock (syscalls). */
    atomic_fetch_sub_explicit(&pool->idle, 1, memory_order_relaxed);
    why = expired(pool, c, now);
    if (why != FRESH) {
      evict_expired(pool, c, why, evicted);
      continue;
    }
    if (now - c->last_used < pool->recheck || xfer__conn_alive(c)) {
      atomic_fetch_add_explicit(&pool->reused, 1, memory_order_relaxed);
      *conn = c;
      return got;
    }
    *saw_dead = true;
    atomic_fetch_add_explicit(&pool->closed, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&pool->dead_on_checkout, 1,
                              memory_order_relaxed);
    xfer__pool_closing(pool, c, XFER__CLOSE_DEAD);
    xfer__conn_close(c, NULL); /* tracked by no multi while idle */
  }
}

enum lane_keep { LANE_LINKED, LANE_FULL, LANE_WAITER, LANE_ROOM };

/*
 * c joins the lane of this CPU (`home`), unless b is at its idle limit,
 * or, read under the lane's lock, a transfer of b waits or is being
 * queued (with `check_waiters`: the caller holds no bundle lock; see
 * queue_waiter()), or a transfer at the total limit wants room (see
 * room_wanted()). The counts raised for c are taken back when it is not
 * linked.
 */
static enum lane_keep lane_keep(xfer_pool *pool, struct xfer__bundle *b,
                                unsigned home, struct xfer__conn *c,
                                bool check_waiters) {
  struct idle_lane *l = &b->lanes[home].lane;
  enum lane_keep out = LANE_LINKED;

  if (!idle_reserve(pool, b))
    return LANE_FULL;
  /* Counted before it is published, so a taker's decrement never comes
   * first (the statistic never reads below zero). */
  atomic_fetch_add_explicit(&pool->idle, 1, memory_order_relaxed);
  pool_lock(pool, &l->lock);
  if (check_waiters &&
      atomic_load_explicit(&b->nwaiters, memory_order_relaxed) > 0)
    out = LANE_WAITER;
  else if (room_wanted(pool))
    out = LANE_ROOM;
  else
    lane_link(l, c);
  pool_unlock(&l->lock);
  if (out != LANE_LINKED) {
    atomic_fetch_sub_explicit(&pool->idle, 1, memory_order_relaxed);
    idle_gone(pool, b, 1);
  }
  return out;
}

/* Under b's lock: c goes to the oldest waiter of its destination (whose
 * wake-up, to write to after the lock, is put in *wake), or joins this
 * CPU's lane. false when c is to be closed: over the idle limit, or a
 * transfer at the total limit wants room (c's slots are to be freed), or
 * the oldest waiter must have a new connection (a retry, rule 6): c's
 * slots are that waiter's now, and c->bundle is NULL. */
static bool give_or_keep_locked(xfer_pool *pool, struct xfer__bundle *b,
                                struct xfer__conn *c, unsigned home,
                                struct xfer__wake **wake) {
  struct xfer__waiter *w = grant_oldest(&b->waiters, &b->nwaiters,
                                        &pool->waiting);

  if (w && w->fresh_only) {
    c->bundle = NULL;
    *wake = grant_slot(w); /* conns and total stay: the slots move */
    return false;
  }
  if (w) {
    w->granted_conn = c;
    *wake = w->wake;
    atomic_store_explicit(&w->granted, true, memory_order_release);
    return true;
  }
  return lane_keep(pool, b, home, c, false) == LANE_LINKED;
}

/* The usual return takes only the lock of this CPU's lane. With a waiter
 * queued (or being queued: see queue_waiter()) it goes through the
 * bundle's lock to the oldest waiter instead, and so does a connection
 * that is to be closed. */
static bool give_or_keep(xfer_pool *pool, struct xfer__conn *c) {
  struct xfer__bundle *b = c->bundle;
  struct xfer__wake *wake = NULL;
  unsigned home = home_lane(pool);
  bool kept;

  if (lane_keep(pool, b, home, c, true) == LANE_LINKED)
    return true;
  bundle_lock(pool, b);
  kept = give_or_keep_locked(pool, b, c, home, &wake);
  bundle_unlock(b);
  wake_and_unref(wake);
  return kept;
}

void xfer__pool_cancel(xfer_pool *pool, struct xfer__waiter *w,
                       xfer__time now, struct xfer__list *evicted) {
  struct xfer__bundle *b = w->bundle;
  bool was_waiting = false, holds_total = false;

  if (!b)
    return;
  if (w->total_wait) { /* holds b's slot, waits for a total one */
    pthread_mutex_lock(&pool->total_lock);
    xfer__pool_lock_depth++;
    if (xfer__list_linked(&w->node)) {
      xfer__list_remove(&w->node);
      atomic_fetch_sub_explicit(&pool->total_waiting, 1,
                                memory_order_relaxed);
    } else {
      holds_total = true; /* granted meanwhile */
    }
    xfer__pool_lock_depth--;
    pthread_mutex_unlock(&pool->total_lock);
    if (holds_total) {
      release_slot(pool, b); /* both slots, to a waiter or back */
    } else {
      bundle_lock(pool, b);
      b->conns--; /* the destination slot only */
      bundle_unlock(b);
    }
    goto done;
  }
  if (!w->holds_slot) {
    bundle_lock(pool, b);
    if (xfer__list_linked(&w->node)) {
      xfer__list_remove(&w->node);
      atomic_fetch_sub_explicit(&b->nwaiters, 1, memory_order_relaxed);
      was_waiting = true;
    }
    bundle_unlock(b);
  }
  if (was_waiting) {
    atomic_fetch_sub_explicit(&pool->waiting, 1, memory_order_relaxed);
  } else if (w->holds_slot) {
    release_slot(pool, b);
  } else if (atomic_load_explicit(&w->granted, memory_order_acquire)) {
    /* Granted meanwhile: pass it on. */
    if (w->granted_conn)
      xfer__pool_return(pool, w->granted_conn, now, evicted);
    else if (w->granted_slot)
      release_slot(pool, b);
  }
done:
  w->granted_conn = NULL;
  w->granted_slot = false;
  w->holds_slot = false;
  w->total_wait = false;
  atomic_store_explicit(&w->granted, false, memory_order_relaxed);
  w->bundle = NULL;
}

void xfer__pool_return(xfer_pool *pool, struct xfer__conn *c, xfer__time now,
                       struct xfer__list *evicted) {
  struct xfer__bundle *b;

  maybe_sweep(pool, now, evicted);
  if (expired(pool, c, now) == TOO_OLD) { /* not worth keeping */
    evict_expired(pool, c, TOO_OLD, evicted);
    return;
  }
  c->last_used = now;
  if (!c->bundle) { /* opened outside any slot: find its destination */
    rcu_read_lock();
    b = bundle_get_locked(pool, c->key, c->key_len, c->key_hash);
    if (b) {
      b->conns++;
      bundle_unlock(b);
      TSAN_READ_END(&b->rcu);
    }
    rcu_read_unlock();
    c->bundle = b;
  }
  if (!c->bundle)
    evict(pool, c, &pool->closed_limit, evicted);
  else if (!give_or_keep(pool, c))
    evict_for_room(pool, c, evicted); /* over a limit: its slots go now */
}

/* --- attached connections (rule 4 fast path) -------------------------------- */

bool xfer__pool_keep_attached(xfer_pool *pool, struct xfer__conn *c,
                              struct xfer__wake *owner, xfer__time now) {
  struct xfer__bundle *b = c->bundle;
  bool kept = false;

  if (!b || !pool->attach_hold || expired(pool, c, now) == TOO_OLD)
    return false;
  c->last_used = now;
  c->owner_wake = owner;
  atomic_store_explicit(&c->release_requested, false, memory_order_relaxed);
  bundle_lock(pool, b);
  /* Someone waits for this destination: it goes to them instead. A
   * pool at its total limit wants room even more. Attached ones count
   * against the idle limit like the shared ones. */
  if (xfer__list_empty(&b->waiters) &&
      !atomic_load_explicit(&pool->total_waiting, memory_order_relaxed)) {
    /* Raise, then check, as idle_reserve() does for the lanes. */
    unsigned attached = atomic_fetch_add(&b->attached_count, 1);

    if (pool->max_idle_per_destination &&
        attached + atomic_load(&b->idle_count) >=
            pool->max_idle_per_destination) {
      atomic_fetch_sub_explicit(&b->attached_count, 1, memory_order_relaxed);
    } else {
      xfer__list_insert_tail(&b->attached, &c->idle_node);
      kept = true;
    }
  }
  bundle_unlock(b);
  if (kept)
    atomic_fetch_add_explicit(&pool->attached, 1, memory_order_relaxed);
  return kept;
}

bool xfer__pool_take_attached(xfer_pool *pool, struct xfer__conn *c,
                              enum xfer__take why) {
  struct xfer__bundle *b = c->bundle;
  bool promised;

  bundle_lock(pool, b);
  /* Checked under the lock, where waiters ask: a connection promised to
   * a waiter is not taken back for reuse, or the waiter could wait as
   * long as the owner's transfer lasts. */
  promised = why == XFER__TAKE_REUSE &&
             atomic_load_explicit(&c->release_requested, memory_order_relaxed);
  if (!promised) {
    xfer__list_remove(&c->idle_node);
    atomic_fetch_sub_explicit(&b->attached_count, 1, memory_order_relaxed);
    if (atomic_load_explicit(&c->release_requested, memory_order_relaxed))
      b->requested--; /* closing: its waiter gets the freed slot */
  }
  bundle_unlock(b);
  if (promised)
    return false;
  atomic_fetch_sub_explicit(&pool->attached, 1, memory_order_relaxed);
  if (why == XFER__TAKE_REUSE)
    atomic_fetch_add_explicit(&pool->reused, 1, memory_order_relaxed);
  return true;
}

void xfer__pool_release_attached(xfer_pool *pool, struct xfer__conn *c,
                                 bool on_demand, xfer__time now,
                                 struct xfer__list *evicted) {
  struct xfer__bundle *b = c->bundle;
  struct xfer__wake *wake = NULL;
  bool too_old = expired(pool, c, now) == TOO_OLD;
  bool kept = false;
  unsigned home = home_lane(pool);

  maybe_sweep(pool, now, evicted);
  /* Off the attached list and onto the shared side in one hold of the
   * lock: no moment in which a waiter would find neither and open a
   * connection it does not need (sharing must not cost connections). */
  bundle_lock(pool, b);
  xfer__list_remove(&c->idle_node);
  atomic_fetch_sub_explicit(&b->attached_count, 1, memory_order_relaxed);
  /* Before it is published: once given or idle, another thread may take
   * it, and even close and free it. */
  if (atomic_load_explicit(&c->release_requested, memory_order_relaxed))
    b->requested--;
  atomic_store_explicit(&c->release_requested, false, memory_order_relaxed);
  if (!too_old)
    kept = give_or_keep_locked(pool, b, c, home, &wake);
  bundle_unlock(b);
  atomic_fetch_sub_explicit(&pool->attached, 1, memory_order_relaxed);
  if (on_demand)
    atomic_fetch_add_explicit(&pool->released_on_demand, 1,
                              memory_order_relaxed);
  wake_and_unref(wake);
  if (too_old)
    evict_expired(pool, c, TOO_OLD, evicted);
  else if (!kept)
    evict_for_room(pool, c, evicted);
}
