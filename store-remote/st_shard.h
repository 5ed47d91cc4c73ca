/* st_shard: the store interface over several replica sets (issue 12,
 * docs/cluster.md "Several replica sets"): a routing decorator over one
 * child store per replica set (in the proxy, an st_cluster client that
 * follows that set's leader; in tests, local engines).
 *
 * Routing.  A topic's placement (from the placer: etcd's
 * /gantry/<name>/placement/<topic>) is a list of replica set ids, the
 * writer first, then sets that still hold older messages.  A topic with no
 * placement (system topics: %DLQ%, %RETRY%, %SYS%, the trace topic, or a
 * topic not placed yet) is written to set 0 and read from every set.
 *  - appends go to the writer set; st_append_multi is split per writer set
 *    (each set then names the message with its own id when none is given);
 *  - topics, groups and metadata records are written to EVERY set (set 0's
 *    answer wins; a delete another set does not know is fine) and read from
 *    set 0, as is the metadata watch; a topic deleted from every set loses
 *    its placement too (placer.forget);
 *  - pops read the older sets first without waiting, then the writer set
 *    with the caller's long poll.  FIFO groups: while an older set still
 *    has messages of the group ready or in flight, the writer set's are not
 *    handed out (the pop waits on the older set instead);
 *  - receipt handles from set k > 0 carry the prefix "<k>." (set 0's are
 *    unchanged, so with one set everything is as without this layer); ack,
 *    ack_batch, change-invisible and release strip it and go to that set;
 *  - id/key lookups, tx end, tx checked and recall try the topic's sets in
 *    order (not found -> next); tx_pending asks the sets in turn (each call
 *    answers the first set, from a rotating start, that has some);
 *  - stats sum counts over the topic's sets (the per-queue figures are the
 *    writer set's); purge and requeue act on every set of the topic;
 *  - pull and offsets read the writer set only (documented limitation);
 *  - pop_cancel goes to every set.
 *
 * Sets are added at run time (st_shard_add; never removed before close).
 * A set added after the first gets the topics, groups and the configured
 * metadata namespaces copied from set 0 before it is marked ready (only
 * ready sets may be chosen by placement: st_shard_ready()).
 *
 * Threads: the ops run on callers' threads and complete on the children's
 * threads; the set table is atomic. */
#ifndef ST_SHARD_H
#define ST_SHARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "st.h"

#define ST_SHARD_MAX 64 /* replica set ids 0..ST_SHARD_MAX-1 */

/* Where topics live.  Called on any thread, with no lock of st_shard held. */
typedef struct st_shard_placer {
    /* The topic's sets, writer first (<= cap of them): how many; 0: the
     * topic has no placement (yet).  Must not block. */
    size_t (*lookup)(void *ctx, const char *topic, uint32_t *sets, size_t cap);
    /* Asks for a placement of a topic that has none.  used: messages may
     * already be on set 0 (written before placement existed).  cb(arg, err)
     * runs once, on any thread, when lookup() answers it (or on error).
     * May be NULL (nothing is ever placed). */
    void (*ensure)(void *ctx, const char *topic, bool used, st_done_cb cb, void *arg);
    void *ctx;
    /* Drops the placement of a topic that every set has deleted (no set
     * knows it any more).  cb(arg, err) runs once, on any thread, when
     * lookup() no longer answers it (or on error).  May be NULL (a
     * placement outlives its topic). */
    void (*forget)(void *ctx, const char *topic, st_done_cb cb, void *arg);
} st_shard_placer_t;

typedef struct st_shard_config {
    st_shard_placer_t placer;
    /* st_meta namespaces copied to a new set (borrowed until close). */
    const char *const *meta_ns;
    size_t n_meta_ns;
    /* Run by st_close() before the children close (the owner stops adding
     * sets), once the router's topic creates and metadata copies in flight
     * have finished (they call the placer; waited for up to 10 s), may be
     * NULL. */
    void (*on_close)(void *ctx);
    void *close_ctx;
} st_shard_config_t;

/* Opens the router with no set.  Borrows cfg (meta_ns until close).
 * GT_ENOMEM. */
gt_err_t st_shard_open(const st_shard_config_t *cfg, st_store_t **out);

/* Adds replica set k (takes ownership of child: closed by st_close of the
 * router, also on error).  The first set added (normally 0) is ready at
 * once; a later one when the metadata copy from set 0 is done (cb then
 * runs with its result, any thread; may be NULL).  GT_EINVAL: k out of
 * range or already present. */
gt_err_t st_shard_add(st_store_t *s, uint32_t k, st_store_t *child, st_done_cb cb,
                      void *arg);

/* Copies set 0's metadata to set k again after a copy failed (set k not
 * ready; e.g. it had no leader then).  cb as for st_shard_add.  GT_EBUSY:
 * a copy is in progress; GT_EINVAL: k absent, 0 or ready. */
gt_err_t st_shard_copy(st_store_t *s, uint32_t k, st_done_cb cb, void *arg);

/* True when set k is present and its metadata copied. */
bool st_shard_ready(st_store_t *s, uint32_t k);
/* The child store of set k, or NULL (borrowed; e.g. GetInfo). */
st_store_t *st_shard_child(st_store_t *s, uint32_t k);

/* The config's close_ctx (the owner's context), or NULL when st is not a
 * router. */
void *st_shard_owner(st_store_t *s);

/* Receipt handle codec (pure): the set of a handle and the child's handle
 * (a pointer into h).  GT_EINVAL for a prefix naming no possible set. */
gt_err_t st_shard_handle_split(const char *h, uint32_t *k, const char **inner);
/* "<k>.<inner>" (k > 0) or inner (k == 0) into out; GT_ERANGE if too long. */
gt_err_t st_shard_handle_join(uint32_t k, const char *inner, char out[ST_HANDLE_MAX]);

/* True for topics that are never placed (written to set 0, read from all). */
bool st_shard_system_topic(const char *topic);

#endif
