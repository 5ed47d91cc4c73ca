/* st_shard internals: the router's state and the helpers its files share
 * (st_shard.c: routing helpers, the set table, open/close and the ops
 * table; st_shard_meta.c: metadata to every set and the copy to a new set;
 * st_shard_write.c: appends, pull and offsets; st_shard_pop.c: pops and
 * receipt handles; st_shard_query.c: the ops that visit a topic's sets in
 * turn).  Private to store-remote/. */
#ifndef ST_SHARD_INT_H
#define ST_SHARD_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "st_shard.h"

/* The metadata watch's context for set k (st_shard_meta.c). */
typedef struct sh_wset {
    struct st_shard *s;
    uint32_t k;
} sh_wset_t;

/* The set table is written by st_shard_add (once per slot) and read by
 * every op without a lock. */
typedef struct st_shard {
    st_store_t base;
    st_shard_config_t cfg;
    _Atomic(st_store_t *) sets[ST_SHARD_MAX];
    atomic_bool ready[ST_SHARD_MAX];
    atomic_bool copying[ST_SHARD_MAX]; /* a metadata copy in progress */
    atomic_uint top;        /* highest present id + 1 */
    atomic_uint tx_turn;    /* tx_pending's rotating start */
    pthread_mutex_t add_mu; /* st_shard_add */
    /* Close: set first; then st_close waits (bounded) for the operations
     * that may still call the placer or a child after their first answer
     * (broadcasts, which place a new topic, and metadata copies) before
     * the placer and the children go. */
    atomic_bool closing;
    atomic_int inflight;
    /* The metadata watch (st_shard_meta.c): the front end's callback,
     * fed by set 0's watch plus the %DLQ% topics other sets create (a
     * dead letter moved on set k creates its %DLQ% topic there only),
     * remembered so that each later snapshot of set 0 carries them too.
     * w_mu is taken inside the children's callbacks (after any lock of
     * theirs) and never held across a call into a child. */
    pthread_mutex_t w_mu;
    st_meta_cb w_cb;
    void *w_arg;
    st_meta_event_t *dlq;   /* ST_META_TOPIC events */
    size_t n_dlq, cap_dlq;
    sh_wset_t wset[ST_SHARD_MAX];
} st_shard_t;

/* A topic's route: its sets, writer first. */
typedef struct sh_route {
    uint32_t k[ST_SHARD_MAX];
    size_t n;
    bool placed;
} sh_route_t;

/* An operation that outlives its first child answer starts / ends (the
 * end after its caller's callback: close may free the router then). */
void sh_op_begin(st_shard_t *s);
void sh_op_end(st_shard_t *s);

/* Set k's child, or NULL (absent, or k out of range). */
st_store_t *sh_set(st_shard_t *s, uint32_t k);
st_store_t *sh_set0(st_shard_t *s);
/* Every present set, 0 first (set 0 alone when none is). */
void sh_route_all(st_shard_t *s, sh_route_t *r);
/* The topic's placement, or every set when it has none. */
void sh_route_of(st_shard_t *s, const char *topic, sh_route_t *r);
/* Whether the topic moved to set k of its route (k is in its placement but
 * is not the set it was first written to, the last one): a group with no
 * position there starts at its beginning (st_pop_req_t.new_from_first),
 * and its stats count from there. */
bool sh_moved_to(const sh_route_t *r, uint32_t k);

/* The metadata copy from set 0 to set k (st_shard_meta.c): created, then
 * run (it frees itself and calls cb when done). */
typedef struct sh_copy sh_copy_t;
sh_copy_t *sh_copy_new(st_shard_t *s, uint32_t k, st_store_t *from, st_store_t *to,
                       st_done_cb cb, void *arg);
void sh_copy_run(sh_copy_t *c);

/* The ops (st_ops_t) by file. */
void sh_topic_put(st_store_t *st, const st_topic_t *t, st_done_cb cb, void *arg);
void sh_topic_delete(st_store_t *st, const char *name, st_done_cb cb, void *arg);
void sh_topic_get(st_store_t *st, const char *name, st_topic_cb cb, void *arg);
void sh_group_put(st_store_t *st, const st_group_t *g, st_done_cb cb, void *arg);
void sh_group_delete(st_store_t *st, const char *name, st_done_cb cb, void *arg);
void sh_group_get(st_store_t *st, const char *name, st_group_cb cb, void *arg);
void sh_meta_watch(st_store_t *st, st_meta_cb cb, void *arg);
/* st_shard_add: set k joined; it joins the watch if there is one. */
void sh_meta_watch_add(st_shard_t *s, uint32_t k);
void sh_meta_put(st_store_t *st, const char *ns, const void *key, uint32_t key_len,
                 const void *value, uint32_t value_len, st_done_cb cb, void *arg);
void sh_meta_del(st_store_t *st, const char *ns, const void *key, uint32_t key_len,
                 st_done_cb cb, void *arg);
void sh_meta_list(st_store_t *st, const st_meta_list_req_t *req, st_meta_list_cb cb,
                  void *arg);

void sh_append(st_store_t *st, const char *topic, const st_message_t *msgs, size_t n,
               st_append_cb cb, void *arg);
void sh_append_multi(st_store_t *st, const st_message_t *msg, const st_dest_t *dests,
                     size_t n, st_append_cb cb, void *arg);
void sh_pull(st_store_t *st, const st_pull_req_t *req, st_msgs_cb cb, void *arg);
void sh_offset_get(st_store_t *st, const char *group, const char *topic, uint32_t q,
                   st_offset_cb cb, void *arg);
void sh_offset_update(st_store_t *st, const char *group, const char *topic, uint32_t q,
                      uint64_t off, st_done_cb cb, void *arg);
void sh_offset_query(st_store_t *st, const char *topic, uint32_t q, st_offset_kind_t kind,
                     int64_t ts, st_offset_cb cb, void *arg);

void sh_pop(st_store_t *st, const st_pop_req_t *req, st_pop_cb cb, void *arg);
void sh_pop_cancel(st_store_t *st, uint64_t key);
void sh_ack(st_store_t *st, const char *group, const char *topic, const char *handle,
            st_done_cb cb, void *arg);
void sh_release(st_store_t *st, const char *group, const char *topic, const char *handle,
                st_done_cb cb, void *arg);
void sh_change_invisible(st_store_t *st, const char *group, const char *topic,
                         const char *handle, int64_t ms, st_handle_cb cb, void *arg);
void sh_ack_batch(st_store_t *st, const char *group, const char *topic,
                  const char *const *handles, size_t n, st_acks_cb cb, void *arg);

void sh_purge(st_store_t *st, const char *group, const char *topic, st_count_cb cb, void *arg);
void sh_requeue(st_store_t *st, const char *group, const char *topic, st_count_cb cb,
                void *arg);
void sh_stats(st_store_t *st, const st_stats_req_t *req, st_stats_cb cb, void *arg);
void sh_lookup_id(st_store_t *st, const char *topic, const char *id, st_msgs_cb cb, void *arg);
void sh_lookup_key(st_store_t *st, const char *topic, const char *key, uint32_t max,
                   st_msgs_cb cb, void *arg);
void sh_tx_end(st_store_t *st, const char *topic, const char *id, bool commit, st_done_cb cb,
               void *arg);
void sh_tx_checked(st_store_t *st, const char *topic, const char *id, uint32_t seen,
                   uint32_t max_checks, st_done_cb cb, void *arg);
void sh_recall(st_store_t *st, const char *topic, const char *id, st_done_cb cb, void *arg);
void sh_tx_pending(st_store_t *st, int64_t ms, uint32_t max, st_msgs_cb cb, void *arg);

#endif
