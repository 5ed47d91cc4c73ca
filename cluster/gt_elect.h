/* gt_elect: leader election on etcd (issue 12).
 *
 * Under a prefix P two keys: P/leader holds the leader's node id and is
 * attached to the leader's lease (it goes when the leader stops renewing:
 * SIGKILL, pause, partition), and P/epoch holds a decimal counter that is
 * never deleted.  A contender reads P/ and, when nobody leads, campaigns
 * with one transaction:
 *   if version(P/leader) == 0 and mod_revision(P/epoch) == what it read
 *   then put P/leader = node id (lease), put P/epoch = epoch + 1
 * so at most one contender wins each epoch and epochs only grow.  A
 * contender that finds a leader or loses watches P/ (from the read's or
 * the losing transaction's revision + 1, so no deletion is missed) and
 * campaigns again when P/leader is deleted.  Errors talking to etcd are
 * retried after a short delay.
 *
 * In-sync sets (gt_elect_opts_t.require_isr).  P/isr holds
 * "<epoch>:<id>,<id>,..." (written by the store cluster's control,
 * store-server/ss_cluster.c).  A contender campaigns only while it is
 * listed there, and its transaction also compares mod_revision(P/isr)
 * with what it read, so a contender removed from the set between its read
 * and its transaction cannot win.  A contender that is not listed (or
 * finds no P/isr) waits on the same watch and reads again when P/isr
 * changes.
 *
 * Positions (gt_elect_opts_t.min_insync > 0, with require_isr).  When a
 * write is acknowledged once min_insync members hold it, a listed member
 * may lack some: the winner must be one that lacks none.  While nobody
 * leads, each listed member puts P/pos/<id> = "<epoch> <key>" (its
 * caller does: `epoch` the current P/epoch, `key` a string whose order is
 * the members' order of completeness) under its lease.  Writes are
 * acknowledged once q = max(min_insync, |isr| / 2 + 1) members hold them
 * (store-server/ss_repl.c).  A contender campaigns only when the positions
 * of at least |isr| - q + 1 listed members for the current epoch are
 * there, its own among them, and none is above its own: every
 * acknowledged write is on q members, so one of those it compared with
 * holds it, and it holds all that one holds.  A new position wakes the
 * contenders.
 *
 * The lease (and its keepalive) belongs to the caller; on_lost of that
 * keepalive is where a leader must step down.  A contender that won stays
 * won: after losing leadership the caller stops it and starts a new one.
 * Not here: resigning (deleting P/leader), fencing of writes by epoch (the
 * store checks it). */
#ifndef GT_ELECT_H
#define GT_ELECT_H

#include <stdatomic.h>

#include "gt_etcd.h"

typedef struct gt_elect gt_elect_t;

/* What contenders saw, counted across contenders (a caller replaces its
 * contender after each step-down): owned by the caller, it must outlive
 * every contender given it. */
typedef struct gt_elect_tally {
    _Atomic int64_t lost;       /* a leader was there, or a campaign lost */
    _Atomic int64_t deferred;   /* too few positions, or one above its own */
    _Atomic int64_t ineligible; /* not listed in P/isr */
} gt_elect_tally_t;

typedef struct gt_elect_opts {
    const char *prefix;     /* P */
    const char *node_id;
    int64_t lease;          /* P/leader is put under it */
    bool require_isr;       /* campaign only while listed in P/isr */
    /* > 0 (with require_isr): campaign by position as well (P/pos/<id>,
     * see "Positions" above). */
    int min_insync;
    /* Runs once, when this contender wins epoch `epoch`. */
    void (*on_leader)(void *arg, int64_t epoch);
    void *arg;
    gt_elect_tally_t *tally; /* optional: counted here too */
} gt_elect_opts_t;

gt_err_t gt_elect_start_opts(gt_etcd_t *e, const gt_elect_opts_t *o,
                             gt_elect_t **out);

/* Whether a P/isr value ("<epoch>:<id>,<id>,...") lists `node`. */
bool gt_elect_isr_has(const uint8_t *v, size_t len, const char *node);

/* on_leader(arg, epoch) runs once, when this contender wins (any node may
 * win: no in-sync set). */
gt_err_t gt_elect_start(gt_etcd_t *e, const char *prefix,
                        const char *node_id, int64_t lease,
                        void (*on_leader)(void *arg, int64_t epoch),
                        void *arg, gt_elect_t **out);
/* Stops campaigning; after it returns on_leader will not start.  Not from
 * on_leader.  Frees the handle.  Does not give up leadership already won
 * (revoke the lease for that). */
void gt_elect_stop(gt_elect_t *el);

/* Campaigns this contender lost so far (it is then a follower). */
int64_t gt_elect_lost(gt_elect_t *el);
/* Reads that found too few positions, or one above its own (min_insync). */
int64_t gt_elect_outranked(gt_elect_t *el);
/* Reads that found it not listed in P/isr (require_isr). */
int64_t gt_elect_ineligible(gt_elect_t *el);

#endif
