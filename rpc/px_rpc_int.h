/* Internal header of the gRPC runtime (rpc/): admission control.
 *
 * px_admit_t counts request bytes in flight for the whole server and per
 * client connection (keyed by the peer address, which names one TCP
 * connection).  It is plain bookkeeping under one mutex, with no gRPC in
 * it, so it is unit-tested on its own (tests/unit/rpc/test_admit.c), as
 * is px_admit_wait_t, the queue of calls waiting for admission. */
#ifndef PX_RPC_INT_H
#define PX_RPC_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "px_rpc.h"

#define PX_ADMIT_BUCKETS 1024
/* Entries of connections without calls are kept (a connection's next call
 * then allocates nothing) until there are this many, then swept. */
#define PX_ADMIT_MAX_IDLE 4096

/* Request sizes are remembered per connection for the methods whose
 * index in the method table is below this. */
#define PX_ADMIT_METHODS 32

/* Requests reserving at most this much at arrival are small: they may use
 * the headroom above the server bound (max / PX_ADMIT_SMALL_SHARE), so a
 * client of small requests is still served while large ones fill the
 * bound. */
#define PX_ADMIT_SMALL_BYTES (64 * 1024)
#define PX_ADMIT_SMALL_SHARE 16

/* One client connection with calls in flight.  Guarded by px_admit_t.mu. */
typedef struct px_conn {
    struct px_conn *next;
    int64_t bytes; /* charged by its calls */
    int calls;     /* calls holding it */
    /* Moving average of its request sizes per method index, 0 until the
     * first request of that method was read; -1 when a call of unknown
     * size was refused at arrival (the next one probes, see
     * px_admit_conn_size), -2 while that probe is under way. */
    int64_t size_avg[PX_ADMIT_METHODS];
    /* Per method index: a request of unknown size (a first one, or a
     * probe) that was admitted but never came in (the core refused it
     * past the receive limit, having read it whole, or the stream was
     * cancelled) holds the connection's next ones off until
     * unread_until_ms (refused unread); unread_strikes such in a row,
     * reset when a message comes in.  One of known size only makes the
     * next one a probe.  See px_admit_note_unread. */
    int64_t unread_until_ms[PX_ADMIT_METHODS];
    uint8_t unread_strikes[PX_ADMIT_METHODS];
    char peer[];
} px_conn_t;

/* Hold-off after an unread request: this, doubling with each unread one
 * in a row, up to the max. */
#define PX_ADMIT_UNREAD_HOLD_MS 500
#define PX_ADMIT_UNREAD_HOLD_MAX_MS 8000

/* Reads of unknown size (px_admit_enter_unknown) admitted on their small
 * guess, i.e. not covered by the server bound, at most this many at once
 * server-wide. */
#define PX_ADMIT_GUESSED_MAX 1

/* Guarded by `mu`; `max`/`conn_max` are set at init and read-only. */
typedef struct px_admit {
    pthread_mutex_t mu;
    int64_t max, conn_max; /* <= 0: unbounded */
    /* px_admit_note_unread's hold and its longest (set at init to
     * PX_ADMIT_UNREAD_HOLD_MS and PX_ADMIT_UNREAD_HOLD_MAX_MS; a test hook
     * may change them before the server starts). */
    int64_t unread_hold_ms, unread_hold_max_ms;
    int64_t bytes, peak;
    /* Server-wide only: what reads of unknown size admitted at their
     * worst case hold above their charge (worst - guess each), until
     * their message is in; counted against `max` with `bytes`. */
    int64_t held;
    int guessed; /* reads of unknown size admitted on their guess */
    int64_t burst_peak;    /* highest since the last trim */
    uint64_t rejected, calls;
    size_t n_conns, n_idle; /* entries; of them without calls */
    px_conn_t *buckets[PX_ADMIT_BUCKETS];
} px_admit_t;

void px_admit_init(px_admit_t *a, int64_t max, int64_t conn_max);
/* Frees the connection entries (all calls must have left). */
void px_admit_destroy(px_admit_t *a);
/* A call from `peer` (borrowed) arrives wanting `bytes`.  Admitted: the
 * bytes are charged, *conn is its connection entry (hold it until
 * px_admit_leave) and true is returned.  Refused (either bound would be
 * passed while something else is in flight there, and not `force`):
 * false, nothing held, counted as rejected.  Also false, not counted,
 * when out of memory.  A small call (bytes <= PX_ADMIT_SMALL_BYTES) is
 * held to the server bound plus its headroom for small calls. */
bool px_admit_enter(px_admit_t *a, const char *peer, int64_t bytes,
                    bool force, px_conn_t **conn);
typedef enum px_admit_verdict {
    PX_ADMIT_REFUSED = 0, /* over a bound: answer TOO_MANY_REQUESTS */
    PX_ADMIT_OK = 1,
    PX_ADMIT_WAIT = 2     /* would fit, but the one slot for reads on a
                           * guess is taken: queue the call and try again
                           * when something is released */
} px_admit_verdict_t;

/* Counts a refusal decided outside px_admit (a call that waited too long
 * for admission, or found the wait queue full). */
void px_admit_count_refusal(px_admit_t *a);

/* A call from `peer` whose request size is not known yet (its
 * connection's first of the method, or a probe) arrives: `guess` is what
 * it probably takes, `worst` the most it may turn out to take.  Admitted
 * (PX_ADMIT_OK, *conn set, `guess` charged as px_admit_enter does) when
 * the connection bound takes `guess` (or the connection is idle) and
 * either `worst` fits under the server bound -- then *held = worst -
 * guess is held server-wide beside the charge -- or, failing that,
 * `guess` fits and fewer than PX_ADMIT_GUESSED_MAX such reads admitted on
 * their guess are in flight -- then *guessed is set and one of those
 * slots taken.  Release either with px_admit_unknown_done() once the
 * message is in (or the call ends without it).  PX_ADMIT_WAIT (nothing
 * held, not counted) when only the slot is missing: the caller queues
 * the call (a fresh client is served a moment later, not refused).
 * PX_ADMIT_REFUSED (counted) otherwise.  Without a server bound it is
 * px_admit_enter. */
px_admit_verdict_t px_admit_enter_unknown(px_admit_t *a, const char *peer,
                                          int64_t guess, int64_t worst,
                                          px_conn_t **conn, int64_t *held,
                                          bool *guessed);
void px_admit_unknown_done(px_admit_t *a, int64_t held, bool guessed);
/* An admitted request of `conn` for method index `m` ended before its
 * message came in.  One of known size (`unknown` false): the next one is
 * a probe (of unknown size, so one at a time).  One of unknown size (a
 * first request, or such a probe): the connection's next requests of
 * the method are held off (px_admit_held_off) for the hold, doubled for
 * each such one in a row, and the one after it probes. */
void px_admit_note_unread(px_admit_t *a, px_conn_t *conn, size_t m,
                          bool unknown, int64_t now_ms);
/* Whether `peer`'s requests of method index `m` are held off at now_ms
 * (counted as a refusal when they are). */
bool px_admit_held_off(px_admit_t *a, const char *peer, size_t m,
                       int64_t now_ms);
/* As px_admit_enter_unknown for a call that others of unknown size wait
 * ahead of: never admitted (they come first), PX_ADMIT_WAIT (nothing
 * held) where that one would admit it or answer wait, PX_ADMIT_REFUSED
 * (counted) where it would refuse it. */
px_admit_verdict_t px_admit_enter_behind(px_admit_t *a, const char *peer,
                                         int64_t guess, int64_t worst);
/* Changes an admitted call's charge from `from` to `to`.  Growing it past
 * a bound while something else is in flight there is refused unless
 * `force`: the charge stays `from`, the refusal is counted, false is
 * returned. */
bool px_admit_adjust(px_admit_t *a, px_conn_t *conn, int64_t from, int64_t to,
                     bool force);
/* The call is over: releases `bytes` and the connection entry.  Returns
 * true when the caller should give freed memory back to the system now:
 * a burst of at least PX_ADMIT_TRIM_BYTES has drained to an eighth (once
 * per burst: the next needs another rise of that size). */
bool px_admit_leave(px_admit_t *a, px_conn_t *conn, int64_t bytes);
void px_admit_stats(px_admit_t *a, px_rpc_stats_t *out);
/* The recent average size of the requests of method index `m` read on
 * connection `peer`; 0 when there is none to go by; -1 once after
 * px_admit_note_refused() (then 0 until a size is noted): the caller
 * should then reserve little, so that this request is read and its size
 * learnt (else a connection whose size is unknown could be refused for
 * as long as the bound stays full, never learning it). */
int64_t px_admit_conn_size(px_admit_t *a, const char *peer, size_t m);
/* A call of method index `m` from `peer`, of unknown size (a probe
 * too), was refused at arrival: marks the connection (creating its
 * entry) for a probe. */
void px_admit_note_refused(px_admit_t *a, const char *peer, size_t m);
/* Folds a request of `len` bytes of method index `m` into its
 * connection's average (weight 1/4; the first sets it). */
void px_admit_note_size(px_admit_t *a, px_conn_t *conn, size_t m, int64_t len);

/* ----------------------------------------------- waiting for admission
 * (px_rpc_admit_wait.c) */

/* A call of unknown size waiting for admission, embedded in the call.
 * `peer`, `want` and `worst` are set by the caller before
 * px_admit_wait_enter (as px_admit_enter_unknown's arguments); `conn`,
 * `held` and `guessed` are its results once admitted.  The rest is the
 * queue's, under its lock. */
typedef struct px_admit_waiter {
    struct px_admit_waiter *next;
    const char *peer; /* borrowed, lives as long as the call */
    int64_t want, worst;
    int64_t since_ms;
    bool waiting;
    px_conn_t *conn;
    int64_t held;
    bool guessed;
} px_admit_waiter_t;

/* Calls of unknown size waiting for the slot of reads on a guess, oldest
 * first.  `mu` is taken before the px_admit_t's lock, never after. */
typedef struct px_admit_wait {
    pthread_mutex_t mu;
    px_admit_t *admit;
    px_admit_waiter_t *head, *tail;
    size_t max;      /* waiters at most; more are refused */
    int64_t wait_ms; /* how long one may wait */
    _Atomic size_t n;
} px_admit_wait_t;

void px_admit_wait_init(px_admit_wait_t *q, px_admit_t *admit, size_t max,
                        int64_t wait_ms);
/* (The queue must be empty.) */
void px_admit_wait_destroy(px_admit_wait_t *q);
size_t px_admit_wait_count(px_admit_wait_t *q);
/* A call of unknown size arrives (px_admit_enter_unknown's rule, or,
 * while others wait, px_admit_enter_behind's: a newcomer never takes the
 * slot ahead of them): PX_ADMIT_OK (admitted, w's results set),
 * PX_ADMIT_REFUSED (counted; also when the queue is full), or
 * PX_ADMIT_WAIT: queued -- the caller
 * keeps the call alive while it is queued and then asks
 * px_admit_wait_next, as the slot may have been freed meanwhile with
 * nobody left to look. */
px_admit_verdict_t px_admit_wait_enter(px_admit_wait_t *q,
                                       px_admit_waiter_t *w, int64_t now_ms);
/* Something was released: the head waiter, out of the queue, with its
 * verdict in *v (PX_ADMIT_OK: admitted; PX_ADMIT_REFUSED: refused, or,
 * with `expire`, waited `wait_ms` or more), or NULL when there is none or
 * it must wait on.  Call until NULL. */
px_admit_waiter_t *px_admit_wait_next(px_admit_wait_t *q, bool expire,
                                      int64_t now_ms, px_admit_verdict_t *v);
/* A cancelled call leaves the queue: true if it was there. */
bool px_admit_wait_remove(px_admit_wait_t *q, px_admit_waiter_t *w);

/* A drained burst this large is worth a malloc_trim(). */
#define PX_ADMIT_TRIM_BYTES (16LL * 1024 * 1024)

#endif
