/*
 * The connection pool (see pool.h and docs/internals/pool.md): an RCU hash
 * table of destination bundles, each with a short-held lock over its idle
 * list.
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

struct xfer__bundle {
  struct cds_lfht_node node;
  struct rcu_head rcu;
  pthread_mutex_t lock;   /* guards the fields below */
  struct xfer__list idle; /* oldest first */
  unsigned idle_count;
  unsigned conns;         /* open or being opened: slots in use */
  struct xfer__list waiters; /* xfer__waiter.node, oldest first */
  uint64_t hash;
  size_t key_len;
  char key[];
};

struct xfer_pool {
  uint32_t magic;
  struct cds_lfht *bundles;
  unsigned max_idle_per_destination;
  unsigned max_per_destination; /* 0: no limit */
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
};

struct bundle_key {
  const char *key;
  size_t len;
};

bool xfer__pool_valid(const xfer_pool *pool) {
  return pool && pool->magic == XFER__MAGIC_POOL;
}

bool xfer__pool_limited(const xfer_pool *pool) {
  return pool->max_per_destination > 0;
}

xfer_pool *xfer_pool_new(const xfer_pool_opts *opts) {
  xfer_pool *pool = xfer__calloc(1, sizeof(*pool));

  if (!pool)
    return NULL;
  pool->bundles = cds_lfht_new(64, 64, 0, CDS_LFHT_AUTO_RESIZE, NULL);
  if (!pool->bundles) {
    xfer__free(pool);
    return NULL;
  }
  pool->magic = XFER__MAGIC_POOL;
  pool->max_idle_per_destination =
      opts && opts->max_idle_per_destination ? opts->max_idle_per_destination
                                             : 64;
  pool->max_per_destination = opts ? opts->max_per_destination : 0;
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
  /* No multi uses the pool any more, so no reader can hold a bundle. */
  rcu_read_lock();
  cds_lfht_for_each(pool->bundles, &iter, node) {
    struct xfer__bundle *b = caa_container_of(node, struct xfer__bundle, node);
    cds_lfht_del(pool->bundles, node);
    while (!xfer__list_empty(&b->idle)) {
      struct xfer__conn *c =
          XFER__CONTAINER_OF(b->idle.next, struct xfer__conn, idle_node);
      xfer__list_remove(&c->idle_node);
      xfer__conn_close(c, NULL);
    }
    pthread_mutex_destroy(&b->lock);
    TSAN_BEFORE_FREE(&b->rcu);
    xfer__free(b);
  }
  rcu_read_unlock();
  cds_lfht_destroy(pool->bundles, NULL);
  pool->magic = XFER__MAGIC_DEAD;
  xfer__free(pool);
  return XFER_OK;
}

xfer_code xfer_pool_get_stats(xfer_pool *pool, xfer_pool_stats *out) {
  if (!xfer__pool_valid(pool))
    return XFER_E_BAD_HANDLE;
  if (!out)
    return XFER_E_BAD_ARGUMENT;
  memset(out, 0, sizeof(*out));
  out->idle = (uint64_t)atomic_load_explicit(&pool->idle, memory_order_relaxed);
  out->opened_total =
      (uint64_t)atomic_load_explicit(&pool->opened, memory_order_relaxed);
  out->reused_total =
      (uint64_t)atomic_load_explicit(&pool->reused, memory_order_relaxed);
  out->closed_total =
      (uint64_t)atomic_load_explicit(&pool->closed, memory_order_relaxed);
  out->reopened_total =
      (uint64_t)atomic_load_explicit(&pool->reopened, memory_order_relaxed);
  out->dead_on_checkout = (uint64_t)atomic_load_explicit(
      &pool->dead_on_checkout, memory_order_relaxed);
  out->retries_total =
      (uint64_t)atomic_load_explicit(&pool->retries, memory_order_relaxed);
  out->closed_idle_timeout = (uint64_t)atomic_load_explicit(
      &pool->closed_idle_timeout, memory_order_relaxed);
  out->closed_lifetime = (uint64_t)atomic_load_explicit(
      &pool->closed_lifetime, memory_order_relaxed);
  {
    long open = atomic_load_explicit(&pool->open, memory_order_relaxed);
    long busy = open - (long)out->idle -
                atomic_load_explicit(&pool->closing, memory_order_relaxed);
    out->open = (uint64_t)(open > 0 ? open : 0);
    out->busy = (uint64_t)(busy > 0 ? busy : 0); /* counters move apart */
  }
  out->checkout_hits = out->reused_total;
  out->checkout_misses =
      (uint64_t)atomic_load_explicit(&pool->misses, memory_order_relaxed);
  out->lock_contention =
      (uint64_t)atomic_load_explicit(&pool->contention, memory_order_relaxed);
  out->waiting =
      (uint64_t)atomic_load_explicit(&pool->waiting, memory_order_relaxed);
  out->waited_total =
      (uint64_t)atomic_load_explicit(&pool->waited, memory_order_relaxed);
  return XFER_OK;
}

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

/* The lock of a bundle: a few pointer moves between these two, nothing
 * else (rule 3). The depth counter lets debug builds catch a clock read. */
static void bundle_lock(xfer_pool *pool, struct xfer__bundle *b) {
  if (pthread_mutex_trylock(&b->lock) != 0) { /* contended: count, wait */
    atomic_fetch_add_explicit(&pool->contention, 1, memory_order_relaxed);
    pthread_mutex_lock(&b->lock);
  }
  xfer__pool_lock_depth++;
}

static void bundle_unlock(struct xfer__bundle *b) {
  xfer__pool_lock_depth--;
  pthread_mutex_unlock(&b->lock);
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

/* Evicts a connection: the caller's multi shuts it down gracefully. */
static void evict(xfer_pool *pool, struct xfer__conn *c,
                  struct xfer__list *evicted) {
  xfer__list_insert_tail(evicted, &c->idle_node);
  atomic_fetch_add_explicit(&pool->closed, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&pool->closing, 1, memory_order_relaxed);
}

static void evict_expired(xfer_pool *pool, struct xfer__conn *c,
                          enum expiry why, struct xfer__list *evicted) {
  evict(pool, c, evicted);
  atomic_fetch_add_explicit(why == TOO_OLD ? &pool->closed_lifetime
                                           : &pool->closed_idle_timeout,
                            1, memory_order_relaxed);
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
    TSAN_READ_BEGIN(b);
    bundle_lock(pool, b);
    XFER__LIST_FOREACH_SAFE(pos, tmp, &b->idle) {
      struct xfer__conn *c =
          XFER__CONTAINER_OF(pos, struct xfer__conn, idle_node);
      if (expired(pool, c, now) != FRESH) {
        xfer__list_remove(&c->idle_node);
        xfer__list_insert_tail(&doomed, &c->idle_node);
        b->idle_count--;
      }
    }
    bundle_unlock(b);
    TSAN_READ_END(&b->rcu);
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

static struct xfer__bundle *bundle_new(const char *key, size_t len,
                                       uint64_t hash) {
  struct xfer__bundle *b = xfer__calloc(1, sizeof(*b) + len);

  if (!b)
    return NULL;
  cds_lfht_node_init(&b->node);
  pthread_mutex_init(&b->lock, NULL);
  xfer__list_init(&b->idle);
  xfer__list_init(&b->waiters);
  b->hash = hash;
  b->key_len = len;
  memcpy(b->key, key, len);
  return b;
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
  fresh = bundle_new(key, len, hash);
  if (!fresh)
    return NULL;
  TSAN_PUBLISH(fresh);
  added = cds_lfht_add_unique(pool->bundles, (unsigned long)hash,
                              bundle_match, &k, &fresh->node);
  if (added != &fresh->node) { /* another thread was first: use its */
    pthread_mutex_destroy(&fresh->lock);
    xfer__free(fresh); /* never published */
  }
  return caa_container_of(added, struct xfer__bundle, node);
}

/* Under b's lock: the oldest waiter, unlinked and marked granted (the
 * caller fills in what), with a reference on its wake-up; or NULL. */
static struct xfer__waiter *grant_oldest(xfer_pool *pool,
                                         struct xfer__bundle *b) {
  struct xfer__waiter *w;

  if (xfer__list_empty(&b->waiters))
    return NULL;
  w = XFER__CONTAINER_OF(b->waiters.next, struct xfer__waiter, node);
  xfer__list_remove(&w->node);
  atomic_fetch_add_explicit(&w->wake->refs, 1, memory_order_relaxed);
  atomic_fetch_sub_explicit(&pool->waiting, 1, memory_order_relaxed);
  return w;
}

/* A slot of b is free: it passes to the oldest waiter, or is given back. */
static void release_slot(xfer_pool *pool, struct xfer__bundle *b) {
  struct xfer__waiter *w;
  struct xfer__wake *wake = NULL;

  bundle_lock(pool, b);
  w = grant_oldest(pool, b);
  if (w) {
    w->granted_slot = true; /* conns stays: the slot changes hands */
    wake = w->wake;
    atomic_store_explicit(&w->granted, true, memory_order_release);
  } else {
    b->conns--;
  }
  bundle_unlock(b);
  wake_and_unref(wake);
}

void xfer__pool_opened(xfer_pool *pool, struct xfer__waiter *w,
                       struct xfer__conn *c, bool reopen) {
  atomic_fetch_add_explicit(&pool->opened, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&pool->open, 1, memory_order_relaxed);
  if (reopen)
    atomic_fetch_add_explicit(&pool->reopened, 1, memory_order_relaxed);
  c->bundle = w->bundle; /* the slot moves into the connection */
  w->holds_slot = false;
  w->bundle = NULL;
}

void xfer__pool_closing(xfer_pool *pool, struct xfer__conn *c,
                        bool was_evicted) {
  atomic_fetch_sub_explicit(&pool->open, 1, memory_order_relaxed);
  if (was_evicted)
    atomic_fetch_sub_explicit(&pool->closing, 1, memory_order_relaxed);
  if (c->bundle)
    release_slot(pool, c->bundle);
  c->bundle = NULL;
}

/* --- acquire ---------------------------------------------------------------- */

enum xfer__acquire xfer__pool_acquire(xfer_pool *pool, const char *key,
                                      size_t key_len, uint64_t hash,
                                      xfer__time now, bool fresh_only,
                                      struct xfer__waiter *w,
                                      struct xfer__conn **conn,
                                      bool *saw_dead,
                                      struct xfer__list *evicted) {
  maybe_sweep(pool, now, evicted);
  for (;;) {
    enum xfer__acquire got = XFER__ACQUIRE_WAIT;
    struct xfer__conn *c = NULL;
    struct xfer__bundle *b;
    enum expiry why;

    rcu_read_lock();
    b = bundle_get(pool, key, key_len, hash);
    if (!b) {
      rcu_read_unlock();
      return XFER__ACQUIRE_NOMEM;
    }
    bundle_lock(pool, b);
    if (!fresh_only && !xfer__list_empty(&b->idle)) {
      c = XFER__CONTAINER_OF(b->idle.prev, struct xfer__conn, idle_node);
      xfer__list_remove(&c->idle_node);
      b->idle_count--;
      got = XFER__ACQUIRE_CONN;
    } else if (!pool->max_per_destination ||
               b->conns < pool->max_per_destination) {
      b->conns++; /* the reservation and the check, in one place */
      got = XFER__ACQUIRE_OPEN;
      w->bundle = b;
    } else {
      w->bundle = b;
      xfer__list_insert_tail(&b->waiters, &w->node);
    }
    bundle_unlock(b);
    TSAN_READ_END(&b->rcu);
    rcu_read_unlock();

    if (got == XFER__ACQUIRE_OPEN) {
      w->holds_slot = true;
      atomic_fetch_add_explicit(&pool->misses, 1, memory_order_relaxed);
      return got;
    }
    if (got == XFER__ACQUIRE_WAIT) {
      atomic_fetch_add_explicit(&pool->waiting, 1, memory_order_relaxed);
      atomic_fetch_add_explicit(&pool->waited, 1, memory_order_relaxed);
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
    xfer__pool_closing(pool, c, false);
    xfer__conn_close(c, NULL); /* tracked by no multi while idle */
  }
}

/* Hands c to the oldest waiter of its destination, or keeps it idle.
 * false when it may not be kept (over the idle limit). */
static bool give_or_keep(xfer_pool *pool, struct xfer__conn *c) {
  struct xfer__bundle *b = c->bundle;
  struct xfer__waiter *w;
  struct xfer__wake *wake = NULL;
  bool kept = true;

  bundle_lock(pool, b);
  w = grant_oldest(pool, b);
  if (w) {
    w->granted_conn = c;
    wake = w->wake;
    atomic_store_explicit(&w->granted, true, memory_order_release);
  } else if (b->idle_count < pool->max_idle_per_destination) {
    xfer__list_insert_tail(&b->idle, &c->idle_node);
    b->idle_count++;
    atomic_fetch_add_explicit(&pool->idle, 1, memory_order_relaxed);
  } else {
    kept = false;
  }
  bundle_unlock(b);
  wake_and_unref(wake);
  return kept;
}

void xfer__pool_cancel(xfer_pool *pool, struct xfer__waiter *w,
                       xfer__time now, struct xfer__list *evicted) {
  struct xfer__bundle *b = w->bundle;
  bool was_waiting = false;

  if (!b)
    return;
  if (!w->holds_slot) {
    bundle_lock(pool, b);
    if (xfer__list_linked(&w->node)) {
      xfer__list_remove(&w->node);
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
  w->granted_conn = NULL;
  w->granted_slot = false;
  w->holds_slot = false;
  atomic_store_explicit(&w->granted, false, memory_order_relaxed);
  w->bundle = NULL;
}

void xfer__pool_return(xfer_pool *pool, struct xfer__conn *c, xfer__time now,
                       struct xfer__list *evicted) {
  struct xfer__bundle *b;
  bool kept;

  maybe_sweep(pool, now, evicted);
  if (expired(pool, c, now) == TOO_OLD) { /* not worth keeping */
    evict_expired(pool, c, TOO_OLD, evicted);
    return;
  }
  c->last_used = now;
  if (!c->bundle) { /* opened outside any slot: find its destination */
    rcu_read_lock();
    b = bundle_get(pool, c->key, c->key_len, c->key_hash);
    if (b) {
      bundle_lock(pool, b);
      b->conns++;
      bundle_unlock(b);
      TSAN_READ_END(&b->rcu);
    }
    rcu_read_unlock();
    c->bundle = b;
  }
  kept = c->bundle && give_or_keep(pool, c);
  if (!kept)
    evict(pool, c, evicted); /* over the idle limit */
}
