/*
 * libFuzzer target 4: the pool's slot accounting, proven against a model.
 *
 * One thread plays several multis and their transfers, and drives the
 * pool's internal functions (lib/pool*.c) from a string of operations:
 * acquire (plain or as a retry), open with the slots given, return, keep
 * attached, take an attached one back, release it (on demand or at its
 * hold's end), cancel, close for each reason (peer, error, the end of a
 * graceful close), a peer that goes away (found dead on checkout), the
 * clock moving on (sweeps, expiry), and a sweep during which a checkout of
 * the destination it is removing arrives (the test hook). The limits are
 * set per input.
 *
 * The model knows where every connection is (busy with a transfer, idle in
 * a lane, attached to a multi, closing in a multi's shutdown handle) and
 * what every transfer waits for, and checks after every operation:
 *   - no limit is exceeded, and every slot has exactly one owner: the
 *     pool's per-destination and total counts equal the model's sum of
 *     owners (open, idle, attached, busy and closing connections; waiters
 *     holding slots), and a closing connection holds no total slot;
 *   - every connection is where the model says, and nowhere else (the
 *     lanes, the attached lists, grants);
 *   - no waiter is left waiting while a connection or a slot it could use
 *     is free: a queued waiter has no idle connection of its destination
 *     in a lane and no free destination slot (unless a release of an
 *     attached one it waits for is pending); a waiter for room has no free
 *     total slot and no idle connection anywhere in a lane;
 *   - waiters of a destination are served in the order they came (but a
 *     waiter that gave up waiting for an attached connection, waiting for
 *     room with its destination slot, is served before an older one that
 *     has not given up yet: each gives up on its own multi's clock, rule
 *     4), and total slots go to the waiters for room in the order they
 *     began to wait for it;
 *   - the statistics equal the model's counts;
 *   - a checkout that meets a destination being removed meets it once.
 * At the end everything is closed, the pool destroyed, and no allocation
 * of libxfer is left.
 */
#include "pool_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mem.h"

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "fuzz_pool: check failed at line %d: %s\n", __LINE__,   \
              #cond);                                                          \
      __builtin_trap();                                                        \
    }                                                                          \
  } while (0)

#define NDEST 3
#define NMULTI 2
#define NXFER 8
#define NCONN 32

static const char *const keys[NDEST] = {"http://d0.test:80|ip=0|bind=",
                                        "http://d1.test:80|ip=0|bind=",
                                        "http://d2.test:80|ip=0|bind="};

enum cstate { C_FREE, C_BUSY, C_IDLE, C_ATTACHED, C_CLOSING };

struct mconn {
  enum cstate st;
  struct xfer__conn *c;
  int dest;
  int peer;  /* the other end of its socketpair; -1: the peer went away */
  int owner; /* the multi (attached, closing) */
};

enum tstate { T_FREE, T_WAIT, T_SLOTS, T_BUSY };

struct mxfer {
  enum tstate st;
  struct xfer__waiter w;
  int dest, multi;
  bool fresh;
  int conn;      /* busy: its connection */
  long arrived;  /* waiting: when it began (order of its destination) */
  long room_at;  /* waiting for room: since when (order of the pool) */
};

static xfer_pool *pool;
static struct xfer__wake *wakes[NMULTI];
static struct xfer__pool_tally tallies[NMULTI]; /* the multis' counts */
static struct mconn conns[NCONN];
static struct mxfer xfers[NXFER];
static xfer__time now;
static long seq;
static unsigned max_dest, max_total, max_idle;

/* What the model counts, to compare with the statistics. */
static struct {
  long opened, reused, closed, closed_peer, closed_error, dead, expiry_or_limit;
} counted;

/* --- the model's bookkeeping --------------------------------------------------- */

static int conn_index(const struct xfer__conn *c) {
  for (int i = 0; i < NCONN; i++)
    if (conns[i].st != C_FREE && conns[i].c == c)
      return i;
  return -1;
}

static int count_conns(int dest, enum cstate st) {
  int n = 0;
  for (int i = 0; i < NCONN; i++)
    if (conns[i].st == st && (dest < 0 || conns[i].dest == dest))
      n++;
  return n;
}

static struct xfer__bundle *bundle_of(int dest) {
  struct cds_lfht_iter iter;
  struct cds_lfht_node *node;

  cds_lfht_for_each(pool->bundles, &iter, node) {
    struct xfer__bundle *b = caa_container_of(node, struct xfer__bundle, node);
    if (strcmp(b->key, keys[dest]) == 0)
      return b;
  }
  return NULL;
}

/* Connections that went onto an evicted list close gracefully in the
 * shutdown handle of the multi whose call evicted them. */
static void take_evicted(struct xfer__list *evicted, int multi) {
  while (!xfer__list_empty(evicted)) {
    struct xfer__conn *c =
        XFER__CONTAINER_OF(evicted->next, struct xfer__conn, idle_node);
    int i = conn_index(c);

    CHECK(i >= 0);
    CHECK(conns[i].st == C_IDLE || conns[i].st == C_BUSY ||
          conns[i].st == C_ATTACHED);
    xfer__list_remove(&c->idle_node);
    conns[i].st = C_CLOSING;
    conns[i].owner = multi;
    counted.closed++;
    counted.expiry_or_limit++;
  }
}

static void conn_forget(int i) {
  if (conns[i].peer >= 0)
    close(conns[i].peer);
  conns[i].st = C_FREE;
  conns[i].c = NULL;
  conns[i].peer = -1;
}

static void cancel_xfer(int t);

/* A new connection for transfer t, which holds the slots. */
static void open_for(int t) {
  struct mxfer *x = &xfers[t];
  int sv[2], i;

  for (i = 0; i < NCONN && conns[i].st != C_FREE; i++)
    ;
  if (i == NCONN ||
      socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv)) {
    cancel_xfer(t); /* as a failed connect */
    return;
  }
  conns[i].c = xfer__conn_new(sv[0], keys[x->dest], strlen(keys[x->dest]), now);
  CHECK(conns[i].c);
  conns[i].st = C_BUSY;
  conns[i].dest = x->dest;
  conns[i].peer = sv[1];
  xfer__pool_opened(pool, &x->w, conns[i].c, false);
  counted.opened++;
  x->st = T_BUSY;
  x->conn = i;
}

/* A retry closes the connection whose slots it took, at once. */
static void replaced(struct xfer__conn *c) {
  int i = conn_index(c);

  CHECK(i >= 0);
  xfer__conn_close(c, NULL);
  conn_forget(i);
  counted.closed++;
  counted.expiry_or_limit++;
}

/* Idle connections the model has that the pool no longer does were found
 * dead on a checkout and closed by it (only ones whose peer went away). */
static void find_dead_closed(void);

static void got(int t, enum xfer__acquire r, struct xfer__conn *c) {
  struct mxfer *x = &xfers[t];
  int i;

  switch (r) {
  case XFER__ACQUIRE_CONN:
    i = conn_index(c);
    CHECK(i >= 0 && conns[i].dest == x->dest && !x->fresh);
    /* An idle one, or one handed over while it waited. */
    CHECK(conns[i].st == C_IDLE || (x->st == T_WAIT && conns[i].st == C_BUSY));
    conns[i].st = C_BUSY;
    x->st = T_BUSY;
    x->conn = i;
    counted.reused++;
    break;
  case XFER__ACQUIRE_REPLACE:
    CHECK(x->fresh);
    i = conn_index(c);
    CHECK(i >= 0 && conns[i].dest == x->dest);
    replaced(c);
    x->st = T_SLOTS;
    break;
  case XFER__ACQUIRE_OPEN:
    x->st = T_SLOTS;
    break;
  case XFER__ACQUIRE_WAIT:
    if (x->st != T_WAIT) {
      x->st = T_WAIT;
      x->arrived = ++seq;
      x->room_at = 0;
    }
    break;
  case XFER__ACQUIRE_NOMEM:
    x->st = T_FREE;
    break;
  }
}

/* --- the checks --------------------------------------------------------------- */

/* Is c in one of b's lanes? */
static bool in_lane(struct xfer__bundle *b, const struct xfer__conn *c) {
  for (unsigned l = 0; l < b->nlanes; l++) {
    struct xfer__list *head = &b->lanes[l].lane.idle, *p;
    for (p = head->next; p != head; p = p->next)
      if (p == &c->idle_node)
        return true;
  }
  return false;
}

static bool in_list(const struct xfer__list *head, const struct xfer__list *n) {
  for (const struct xfer__list *p = head->next; p != head; p = p->next)
    if (p == n)
      return true;
  return false;
}

static unsigned lane_total(struct xfer__bundle *b) {
  unsigned n = 0;
  for (unsigned l = 0; l < b->nlanes; l++)
    for (struct xfer__list *p = b->lanes[l].lane.idle.next;
         p != &b->lanes[l].lane.idle; p = p->next)
      n++;
  return n;
}

/* A granted waiter is handed a connection (busy in the model since the
 * grant) or both slots. */
static void note_grants(void) {
  /* First when each began to wait for room, in the order of the pool's
   * room FIFO: several may begin in one operation (a give-up that frees a
   * destination slot moves a queued one to room too), and only the pool
   * knows which came first. */
  for (struct xfer__list *p = pool->room.next; p != &pool->room; p = p->next) {
    struct xfer__waiter *w =
        XFER__CONTAINER_OF(p, struct xfer__waiter, room_node);
    for (int t = 0; t < NXFER; t++)
      if (&xfers[t].w == w && !xfers[t].room_at)
        xfers[t].room_at = ++seq;
  }
  for (int t = 0; t < NXFER; t++) /* (a room waiter is in that FIFO) */
    CHECK(!(xfers[t].st == T_WAIT && xfers[t].w.state == XFER__WAIT_ROOM) ||
          xfers[t].room_at);
  for (int t = 0; t < NXFER; t++) {
    struct mxfer *x = &xfers[t];
    int i;

    if (x->st != T_WAIT)
      continue;
    if (!atomic_load(&x->w.granted) || x->w.state != XFER__WAIT_GRANTED)
      continue;
    if (x->w.granted_conn) {
      i = conn_index(x->w.granted_conn);
      CHECK(i >= 0 && conns[i].dest == x->dest);
      CHECK(conns[i].st == C_IDLE || conns[i].st == C_BUSY ||
            conns[i].st == C_ATTACHED);
      conns[i].st = C_BUSY; /* handed over: the waiter's */
      CHECK(x->w.replace == x->fresh);
    }
    /* In order: nobody of its destination who came earlier still waits,
     * and for a total slot, nobody who began to wait for room earlier.
     * One exception (rule 4): a waiter for room (it gave up waiting for
     * another multi's attached connection, on its own clock, or found
     * none left to ask for) holds its destination slot and is served
     * first, with a total slot or a connection given back, ahead of an
     * older one still waiting for an attached connection (its multi may
     * not be driven at all) or one that began to wait for room later. */
    for (int u = 0; u < NXFER; u++) {
      struct mxfer *y = &xfers[u];
      bool still = y->st == T_WAIT && !atomic_load(&y->w.granted);
      bool gave_up_first =
          x->room_at &&
          ((y->w.state == XFER__WAIT_QUEUED && y->w.bounded) ||
           (y->w.state == XFER__WAIT_ROOM && y->room_at > x->room_at));
      if (!still || u == t)
        continue;
      if (y->dest == x->dest && !gave_up_first)
        CHECK(y->arrived > x->arrived);
      if (!x->w.granted_conn && x->room_at && y->room_at &&
          y->w.state == XFER__WAIT_ROOM)
        CHECK(y->room_at > x->room_at);
    }
  }
}

/* The multis' tallies are folded into the pool's counts when they leave:
 * nothing counted is lost or counted twice. */
static void check_stats_after_detach(void) {
  xfer_pool_stats ps;

  xfer_pool_get_stats(pool, &ps);
  CHECK(ps.attached == 0);
  CHECK(ps.reused_total == (uint64_t)counted.reused);
}

static void check_all(void) {
  long total_owned = 0, waiting = 0;
  xfer_pool_stats ps;

  CHECK(xfer__pool_lock_depth == 0);
  note_grants();
  find_dead_closed();
  rcu_read_lock();
  for (int d = 0; d < NDEST; d++) {
    struct xfer__bundle *b = bundle_of(d);
    unsigned owned = 0, queued = 0, queued_plain = 0, room = 0;
    bool slot_free;

    for (int i = 0; i < NCONN; i++) {
      struct mconn *mc = &conns[i];
      if (mc->st == C_FREE || mc->dest != d)
        continue;
      owned++;
      CHECK(b && mc->c->bundle == b);
      CHECK(mc->c->holds_total == (mc->st != C_CLOSING));
      CHECK(in_lane(b, mc->c) == (mc->st == C_IDLE));
      CHECK((in_list(&b->attached, &mc->c->idle_node) ||
             in_list(&b->requested, &mc->c->idle_node)) ==
            (mc->st == C_ATTACHED));
      if (mc->st != C_CLOSING)
        total_owned++;
    }
    for (int t = 0; t < NXFER; t++) {
      struct mxfer *x = &xfers[t];
      if (x->st == T_FREE || x->dest != d)
        continue;
      if (x->st == T_SLOTS) {
        CHECK(x->w.state == XFER__WAIT_SLOTS && x->w.bundle == b);
        owned++, total_owned++;
      } else if (x->st == T_WAIT) {
        if (x->w.state == XFER__WAIT_ROOM) {
          owned++;
          waiting++;
          room++;
        } else if (x->w.state == XFER__WAIT_GRANTED && !x->w.granted_conn) {
          owned++, total_owned++;
        } else if (x->w.state == XFER__WAIT_QUEUED) {
          queued++;
          queued_plain += !x->fresh;
          waiting++;
        } else {
          CHECK(x->w.state == XFER__WAIT_GRANTED);
        }
      }
    }
    if (!b)
      continue;
    CHECK(b->conns == owned); /* every destination slot has one owner */
    CHECK(!max_dest || owned <= max_dest);
    CHECK(lane_total(b) == (unsigned)count_conns(d, C_IDLE));
    CHECK(!max_idle || (unsigned)(count_conns(d, C_IDLE) +
                                  count_conns(d, C_ATTACHED)) <= max_idle);
    CHECK(atomic_load(&b->nwaiters) == queued);
    CHECK(atomic_load(&b->nroom) == room);
    CHECK(!pool->count_idle || atomic_load(&b->idle_count) == lane_total(b));
    CHECK(!max_total || b->indexed == (lane_total(b) > 0));
    /* An attached connection nobody asked for while a transfer waits for
     * d: each waiter asked for one, or waits for a release asked for. */
    if (!xfer__list_empty(&b->attached))
      CHECK(queued_plain <= b->nrequested);
    /* Nobody queued for d while d has an idle connection in a lane, or a
     * free slot (unless releases of attached ones it waits for are
     * pending, one for each). */
    slot_free = !max_dest || b->conns < max_dest;
    if (queued) {
      CHECK(count_conns(d, C_IDLE) == 0);
      if (slot_free)
        CHECK(queued <= b->nrequested);
    }
  }
  if (max_total) {
    CHECK(atomic_load(&pool->total) == total_owned);
    CHECK(total_owned <= (long)max_total);
    for (int t = 0; t < NXFER; t++)
      if (xfers[t].st == T_WAIT && xfers[t].w.state == XFER__WAIT_ROOM) {
        /* Waiting for room: the pool is full, and nothing idle in a lane
         * could be closed for it. */
        CHECK(total_owned == (long)max_total);
        CHECK(count_conns(-1, C_IDLE) == 0);
      }
  }
  rcu_read_unlock();
  {
    long room_waiters = 0;
    for (int t = 0; t < NXFER; t++)
      room_waiters +=
          xfers[t].st == T_WAIT && xfers[t].w.state == XFER__WAIT_ROOM;
    CHECK(atomic_load(&pool->total_waiting) == room_waiters);
  }
  xfer_pool_get_stats(pool, &ps);
  CHECK(ps.open == (uint64_t)(NCONN - count_conns(-1, C_FREE)));
  CHECK(ps.attached == (uint64_t)count_conns(-1, C_ATTACHED));
  for (int m = 0; m < NMULTI; m++) { /* each in its owner's tally */
    long mine = 0;
    for (int i = 0; i < NCONN; i++)
      mine += conns[i].st == C_ATTACHED && conns[i].owner == m;
    CHECK(atomic_load(&tallies[m].attached) == mine);
  }
  CHECK(ps.idle == (uint64_t)(count_conns(-1, C_IDLE) +
                              count_conns(-1, C_ATTACHED)));
  CHECK(ps.busy == (uint64_t)count_conns(-1, C_BUSY));
  CHECK(ps.waiting == (uint64_t)waiting);
  CHECK(ps.opened_total == (uint64_t)counted.opened);
  CHECK(ps.reused_total == (uint64_t)counted.reused);
  CHECK(ps.closed_total == (uint64_t)counted.closed);
  CHECK(ps.closed_peer == (uint64_t)counted.closed_peer);
  CHECK(ps.closed_error == (uint64_t)counted.closed_error);
  CHECK(ps.dead_on_checkout == (uint64_t)counted.dead);
  CHECK(ps.closed_limit + ps.closed_idle_timeout + ps.closed_lifetime ==
        (uint64_t)counted.expiry_or_limit);
}

static void find_dead_closed(void) {
  rcu_read_lock();
  for (int i = 0; i < NCONN; i++) {
    struct xfer__bundle *b;
    if (conns[i].st != C_IDLE)
      continue;
    b = bundle_of(conns[i].dest);
    if (b && in_lane(b, conns[i].c))
      continue;
    CHECK(conns[i].peer < 0); /* only a dead one is closed on checkout */
    conns[i].st = C_FREE;     /* freed by the pool */
    conns[i].c = NULL;
    counted.closed++;
    counted.dead++;
  }
  rcu_read_unlock();
}

/* --- the operations --------------------------------------------------------------- */

/* A transfer gives up (timeout, removal, a failed connect). A connection
 * it had been handed passes on: to a lane, a waiter, or closed. */
static void cancel_xfer(int t) {
  struct mxfer *x = &xfers[t];
  struct xfer__list evicted;

  if (x->st == T_WAIT && x->w.state == XFER__WAIT_GRANTED &&
      x->w.granted_conn)
    conns[conn_index(x->w.granted_conn)].st = C_IDLE;
  xfer__list_init(&evicted);
  xfer__pool_cancel(pool, &x->w, now, &evicted);
  take_evicted(&evicted, x->multi);
  x->st = T_FREE;
}

static void acquire(int t, int dest, int multi, bool fresh,
                    bool replayable) {
  struct mxfer *x = &xfers[t];
  struct xfer__list evicted;
  struct xfer__conn *c = NULL;
  bool saw_dead = false;
  enum xfer__acquire r;

  x->dest = dest;
  x->multi = multi;
  x->fresh = fresh;
  xfer__waiter_init(&x->w);
  x->w.wake = wakes[multi];
  x->w.fresh_only = fresh;
  x->w.replayable = replayable;
  xfer__list_init(&evicted);
  r = xfer__pool_acquire(pool, keys[dest], strlen(keys[dest]),
                         xfer__conn_key_hash(keys[dest], strlen(keys[dest])),
                         now, &x->w, &c, &saw_dead, &evicted);
  take_evicted(&evicted, multi);
  got(t, r, c);
}

/* The sweep that removes a destination meets a checkout of it (the test
 * hook runs inside the sweep's window). */
static int hook_xfer = -1, hook_dest, dead_met;
static enum xfer__acquire hook_result;
static struct xfer__conn *hook_conn;
static struct xfer__list hook_evicted;

static void hook(enum xfer__pool_hook_point point, const void *arg) {
  struct mxfer *x;
  bool saw_dead = false;

  if (point == XFER__HOOK_DEAD_BUNDLE_MET) {
    dead_met++;
    CHECK(dead_met == 1); /* met once, then deleted: no spin */
    return;
  }
  if (point != XFER__HOOK_SWEEP_MARKED_DEAD || hook_xfer < 0 ||
      strcmp(arg, keys[hook_dest]) != 0)
    return;
  x = &xfers[hook_xfer];
  x->dest = hook_dest;
  x->multi = 0;
  x->fresh = false;
  xfer__waiter_init(&x->w);
  x->w.wake = wakes[0];
  x->w.replayable = true;
  hook_result = xfer__pool_acquire(
      pool, keys[hook_dest], strlen(keys[hook_dest]),
      xfer__conn_key_hash(keys[hook_dest], strlen(keys[hook_dest])), now,
      &x->w, &hook_conn, &saw_dead, &hook_evicted);
  hook_xfer = -hook_xfer - 2; /* done: remembered for after the sweep */
}

static void sweep_meeting_a_checkout(int t, int dest) {
  struct xfer__list evicted;

  if (xfers[t].st != T_FREE)
    return;
  xfer__list_init(&evicted);
  xfer__list_init(&hook_evicted);
  hook_xfer = t;
  hook_dest = dest;
  dead_met = 0;
  xfer__pool_hook = hook;
  now += pool->sweep_every;
  xfer__pool_sweep(pool, now, &evicted);
  xfer__pool_hook = NULL;
  take_evicted(&evicted, 0);
  if (hook_xfer <= -2) { /* the checkout ran inside the sweep */
    take_evicted(&hook_evicted, 0);
    got(t, hook_result, hook_conn);
  }
  hook_xfer = -1;
}

static void release_attached(int i, bool on_demand) {
  struct xfer__list evicted;

  xfer__list_init(&evicted);
  conns[i].st = C_IDLE; /* wherever it goes, it leaves the owner */
  xfer__pool_release_attached(pool, conns[i].c, &tallies[conns[i].owner],
                              on_demand, now, &evicted);
  take_evicted(&evicted, conns[i].owner);
}

static void close_conn(int i, enum xfer__close_reason why, int multi) {
  struct xfer__list evicted;

  xfer__list_init(&evicted);
  xfer__pool_close(pool, conns[i].c, why, NULL, &evicted);
  if (why == XFER__CLOSE_PEER)
    counted.closed_peer++, counted.closed++;
  else if (why == XFER__CLOSE_ERROR)
    counted.closed_error++, counted.closed++;
  conn_forget(i);
  take_evicted(&evicted, multi);
}

/* FUZZ_POOL_TRACE=1 in the environment prints every operation and the
 * transfers' states after it (to read a finding). */
static bool tracing;

static void trace(unsigned op, unsigned arg) {
  static const char *const names[16] = {
      "acquire", "acquire-post", "acquire-retry", "open-or-fail",
      "take-grant-or-stop-waiting",
      "cancel", "return", "keep-attached", "close", "shutdown-ends",
      "take-attached", "release-attached", "attached-peer-closes",
      "peer-goes", "time-passes", "sweep-meets-checkout"};

  fprintf(stderr, "op %-22s t%u d%u m%u i%u flag%u |", names[op % 16],
          arg % NXFER, ((arg >> 3) & 3) % NDEST, (arg >> 5) & 1, arg % NCONN,
          arg >> 7);
  for (int t = 0; t < NXFER; t++)
    if (xfers[t].st != T_FREE)
      fprintf(stderr, " t%d:%c%d/w%d%s", t, "FWSB"[xfers[t].st],
              xfers[t].dest, xfers[t].w.state,
              atomic_load(&xfers[t].w.granted) ? "g" : "");
  for (int i = 0; i < NCONN; i++)
    if (conns[i].st != C_FREE)
      fprintf(stderr, " c%d:%c%d", i, "FBIAC"[conns[i].st], conns[i].dest);
  fprintf(stderr, "\n");
}

/* Each operation is two bytes: what (the first, modulo 16), and whom:
 * transfer = bits 0-2, destination = bits 3-4 (modulo 3), multi = bit 5,
 * connection = bits 0-4, a flag = bit 7. */
static void step(unsigned op, unsigned arg) {
  int t = (int)(arg % NXFER), dest = (int)(((arg >> 3) & 3) % NDEST);
  int multi = (int)((arg >> 5) & 1), i = (int)(arg % NCONN);
  struct mxfer *x = &xfers[t];
  struct xfer__list evicted;
  struct xfer__conn *c = NULL;

  xfer__list_init(&evicted);
  switch (op % 16) {
  case 0: /* a checkout (a GET) */
    if (x->st == T_FREE)
      acquire(t, dest, multi, false, true);
    break;
  case 1: /* a checkout for a request that cannot be sent again (a POST) */
    if (x->st == T_FREE)
      acquire(t, dest, multi, false, false);
    break;
  case 2: /* a checkout for a retry */
    if (x->st == T_FREE)
      acquire(t, dest, multi, true, true);
    break;
  case 3: /* the connect succeeds (or fails: the slots go back) */
    if (x->st == T_SLOTS) {
      if (arg & 0x80) {
        cancel_xfer(t);
      } else {
        open_for(t);
      }
    }
    break;
  case 4: /* a waiter woken takes what it was granted, or (flag) one
             waiting for an attached connection gives up after
             attached_wait */
    if (x->st == T_WAIT && (!(arg & 0x80) || x->w.bounded)) {
      bool saw_dead = false;
      bool was_granted = x->w.state == XFER__WAIT_GRANTED;
      int handed = was_granted && x->w.granted_conn && !x->w.replace
                       ? conn_index(x->w.granted_conn)
                       : -1;
      enum xfer__acquire r =
          arg & 0x80 ? xfer__pool_stop_waiting(pool, &x->w, now, &c,
                                               &saw_dead, &evicted)
                     : xfer__pool_take_grant(pool, &x->w, now, &c, &saw_dead,
                                             &evicted);
      take_evicted(&evicted, x->multi);
      /* A connection handed over that failed its reuse check and is not
       * on the evicted list was found dead and closed by the pool. */
      if (handed >= 0 && conns[handed].st == C_BUSY &&
          !(r == XFER__ACQUIRE_CONN && c == conns[handed].c)) {
        CHECK(conns[handed].peer < 0);
        conns[handed].st = C_FREE;
        conns[handed].c = NULL;
        counted.closed++;
        counted.dead++;
      }
      /* Handed one that failed its check, it looked again and waits:
       * from the back of the line, as a newcomer. */
      if (was_granted && r == XFER__ACQUIRE_WAIT)
        x->st = T_FREE;
      got(t, r, c);
    }
    break;
  case 5: /* a transfer gives up (timeout, removal) */
    if (x->st == T_WAIT || x->st == T_SLOTS)
      cancel_xfer(t);
    break;
  case 6: /* a response completes: the connection goes back */
    if (x->st == T_BUSY) {
      i = x->conn;
      conns[i].st = C_IDLE;
      xfer__pool_return(pool, conns[i].c, now, &evicted);
      take_evicted(&evicted, x->multi);
      x->st = T_FREE;
    }
    break;
  case 7: /* ... or stays attached to the transfer's multi */
    if (x->st == T_BUSY) {
      i = x->conn;
      x->st = T_FREE;
      if (xfer__pool_keep_attached(pool, conns[i].c, wakes[x->multi],
                                   &tallies[x->multi], now)) {
        conns[i].st = C_ATTACHED;
        conns[i].owner = x->multi;
      } else {
        conns[i].st = C_IDLE;
        xfer__pool_return(pool, conns[i].c, now, &evicted);
        take_evicted(&evicted, x->multi);
      }
    }
    break;
  case 8: /* the transfer fails, or the server closes: closed */
    if (x->st == T_BUSY) {
      x->st = T_FREE;
      close_conn(x->conn, arg & 0x80 ? XFER__CLOSE_ERROR : XFER__CLOSE_PEER,
                 x->multi);
    }
    break;
  case 9: /* a graceful close ends */
    if (conns[i].st == C_CLOSING)
      close_conn(i, XFER__CLOSE_EVICTED, conns[i].owner);
    break;
  case 10: /* the owner's next transfer takes its attached one */
    if (conns[i].st == C_ATTACHED && xfers[t].st == T_FREE) {
      if (xfer__pool_take_attached(pool, conns[i].c, &tallies[conns[i].owner],
                                   XFER__TAKE_REUSE)) {
        counted.reused++;
        conns[i].st = C_BUSY;
        x->st = T_BUSY;
        x->conn = i;
        x->dest = conns[i].dest;
        x->multi = conns[i].owner;
        xfer__waiter_init(&x->w);
      } else { /* asked for: it goes */
        release_attached(i, true);
      }
    }
    break;
  case 11: /* an attached one's hold ends, or its owner is asked for it */
    if (conns[i].st == C_ATTACHED &&
        (!(arg & 0x80) ||
         atomic_load(&conns[i].c->release_requested)))
      release_attached(i, arg & 0x80);
    break;
  case 12: /* an attached one's peer closes it */
    if (conns[i].st == C_ATTACHED) {
      xfer__pool_take_attached(pool, conns[i].c, &tallies[conns[i].owner],
                               XFER__TAKE_CLOSE);
      close_conn(i, XFER__CLOSE_PEER, conns[i].owner);
    }
    break;
  case 13: /* the server goes away from an idle connection */
    if (conns[i].st != C_FREE && conns[i].peer >= 0) {
      close(conns[i].peer);
      conns[i].peer = -1;
    }
    break;
  case 14: /* time passes */
    now += (xfer__time)(1 + (arg & 0x7f)) * 50 * XFER__NS_PER_MS;
    break;
  case 15:
    sweep_meeting_a_checkout(t, dest);
    break;
  }
  if (tracing)
    trace(op, arg);
  check_all();
}

static void close_everything(void) {
  struct xfer__list evicted;

  xfer__list_init(&evicted);
  for (int t = 0; t < NXFER; t++)
    if (xfers[t].st == T_WAIT || xfers[t].st == T_SLOTS)
      cancel_xfer(t);
  for (int i = 0; i < NCONN; i++) {
    if (conns[i].st == C_ATTACHED)
      xfer__pool_take_attached(pool, conns[i].c, &tallies[conns[i].owner],
                               XFER__TAKE_CLOSE);
    if (conns[i].st == C_BUSY || conns[i].st == C_ATTACHED)
      close_conn(i, XFER__CLOSE_ERROR, 0);
  }
  for (int i = 0; i < NCONN; i++)
    if (conns[i].st == C_CLOSING)
      close_conn(i, XFER__CLOSE_EVICTED, 0);
  check_all();
  for (int i = 0; i < NCONN; i++)
    if (conns[i].st == C_IDLE)
      conn_forget(i); /* the pool closes its idle ones */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  xfer_pool_opts opts;

  if (size < 2)
    return 0;
  tracing = getenv("FUZZ_POOL_TRACE") != NULL;
  memset(&opts, 0, sizeof(opts));
  max_dest = data[0] & 3;
  max_total = (data[0] >> 2) % 5;
  max_idle = (data[0] >> 5) & 3;
  opts.max_per_destination = max_dest;
  opts.max_total = max_total;
  opts.max_idle_per_destination = max_idle;
  opts.attach_hold_ms = data[1] & 1 ? 100 : -1;
  opts.idle_timeout_ms = 1000 + 1000 * ((data[1] >> 1) & 7);
  opts.max_lifetime_ms = data[1] & 0x10 ? 3000 : 0;
  opts.recheck_ms = 200;
  pool = xfer_pool_new(&opts);
  if (tracing)
    fprintf(stderr, "limits: destination %u total %u idle %u, attach %s\n",
            max_dest, max_total, max_idle, data[1] & 1 ? "on" : "off");
  CHECK(pool);
  for (int m = 0; m < NMULTI; m++) {
    wakes[m] = xfer__wake_new();
    memset(&tallies[m], 0, sizeof(tallies[m]));
    xfer__pool_attach(pool, &tallies[m]);
  }
  CHECK(wakes[0] && wakes[1]);
  memset(conns, 0, sizeof(conns));
  memset(xfers, 0, sizeof(xfers));
  memset(&counted, 0, sizeof(counted));
  for (int i = 0; i < NCONN; i++)
    conns[i].peer = -1;
  now = 1000 * XFER__NS_PER_MS;
  seq = 0;
  for (size_t p = 2; p + 1 < size; p += 2)
    step(data[p], data[p + 1]);
  close_everything();
  for (int m = 0; m < NMULTI; m++)
    xfer__pool_detach(pool, &tallies[m]);
  check_stats_after_detach();
  CHECK(xfer_pool_destroy(pool) == XFER_OK);
  for (int m = 0; m < NMULTI; m++)
    xfer__wake_unref(wakes[m]);
  CHECK(xfer__mem_live() == 0); /* nothing of libxfer left */
  return 0;
}
