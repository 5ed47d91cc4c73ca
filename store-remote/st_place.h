/* st_place: the proxy's store in `store.mode: cluster` over several replica
 * sets (issue 12, docs/cluster.md "Several replica sets"): an st_shard
 * router whose children are st_cluster clients, one per replica set, and
 * whose placement lives in etcd.
 *
 * etcd keys (under /gantry/<name>/):
 *  - rs/<k>/leader, rs/<k>/isr, rs/<k>/members: read once, then watched.
 *    A set with a leader or an in-sync set is complete (a set still
 *    forming has neither): the proxy opens a client following its leader
 *    and adds it to the router, which copies set 0's metadata to it before
 *    it may be chosen.
 *  - placement/<topic> = "<k>[,<k2>...]", the writer set first: read once,
 *    then watched into a cache the router consults on every call (no
 *    etcd round trip).  Created if absent (transaction on the key's
 *    version) when a topic is declared or first used, on the ready set
 *    with a leader that writes the fewest topics; a topic used before it
 *    had a placement also lists set 0 (its messages are there).
 *    Rewritten by st_place_rebalance (transaction on the mod revision).
 *
 * Threads: etcd answers and watch events run on the etcd client's
 * completion thread; sets are opened on a thread of this module; the state
 * is under one mutex.  Close the store with st_close(). */
#ifndef ST_PLACE_H
#define ST_PLACE_H

#include <stddef.h>
#include <stdint.h>

#include "st_cluster.h"
#include "st_shard.h"

/* Opens the store: set 0's client first (waiting for its leader as
 * st_cluster_open does, cfg->leader_wait_ms), then etcd's placement and
 * sets.  Borrows cfg (copied).  *set0 (may be NULL) gets set 0's client
 * (borrowed; st_remote_storage).  Errors as st_cluster_open. */
gt_err_t st_place_open(const st_cluster_config_t *cfg, st_store_t **out, st_store_t **set0);

/* One replica set as the proxy sees it. */
typedef struct st_place_set {
    uint32_t id;
    char leader[256];   /* node id; "" none */
    char members[512];  /* as in etcd */
    char isr[512];
    bool open;          /* the proxy has a client for it */
    bool ready;         /* metadata copied: placement may choose it */
    uint32_t topics;    /* topics it writes */
} st_place_set_t;

/* The sets known (up to cap, by id): how many.  Any thread. */
size_t st_place_sets(st_store_t *st, st_place_set_t *out, size_t cap);

/* Calls fn once per placed topic (under the module's lock: copy, do not
 * call the store).  Any thread. */
void st_place_topics(st_store_t *st,
                     void (*fn)(void *arg, const char *topic, const uint32_t *sets, size_t n),
                     void *arg);

/* Moves the write side of topics from the sets that write the most to
 * those that write the least (ready, with a leader) until the counts
 * differ by at most one: each topic's placement becomes "<new>,<old...>"
 * (the old sets are still read).  cb(arg, err, moved) once, on an etcd
 * thread.  GT_AGAIN: a placement changed meanwhile (run it again). */
typedef void (*st_place_rebalance_cb)(void *arg, gt_err_t err, size_t moved);
void st_place_rebalance(st_store_t *st, st_place_rebalance_cb cb, void *arg);

#endif
