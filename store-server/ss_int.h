/* gantry-store's internals: the gantry.store.v1 service on px_rpc, over a
 * store opened through st_exec_open() (every store answer runs on the
 * executor, px_exec, as owned data; never on a store thread).
 *
 * Files: ss_main.c (process), ss_service.c (method table, the plain
 * operations), ss_conv.c (protobuf <-> st.h), ss_poll.c (Pop, Pull,
 * PopCancel: parked long polls and their cancel keys), ss_append.c (Append,
 * AppendMulti, AppendMany and the de-dup window), ss_watch.c (MetaWatch streams),
 * ss_map.c (a small byte-keyed hash map), ss_data_id.c (the data
 * directory's identity). */
#ifndef SS_INT_H
#define SS_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gantry/store/v1/store.pb-c.h"
#include "px_rpc.h"
#include "ss_repl.h"
#include "st.h"

#define SS_PROTOCOL_VERSION 1
#define SS_DESC(x) (&gantry__store__v1__##x##__descriptor)
typedef Gantry__Store__V1__Message ss_pb_msg_t;

/* ---- ss_map.c: byte-keyed chained hash map (not thread-safe) ---- */
typedef struct ss_map_ent {
    struct ss_map_ent *next;
    void *val;
    size_t klen;
    uint8_t key[]; /* klen bytes */
} ss_map_ent_t;

typedef struct ss_map {
    ss_map_ent_t **b;
    size_t nb, count;
} ss_map_t;

void ss_map_init(ss_map_t *m);
/* Frees the entries (not their values). */
void ss_map_free(ss_map_t *m);
void *ss_map_get(const ss_map_t *m, const void *key, size_t klen);
/* GT_EEXIST if present (unchanged), GT_ENOMEM. Copies key. */
gt_err_t ss_map_put(ss_map_t *m, const void *key, size_t klen, void *val);
/* Returns the removed value, NULL if absent. */
void *ss_map_del(ss_map_t *m, const void *key, size_t klen);

/* ---- ss_data_id.c ---- */
#define SS_DATA_ID_HEX 32
/* The data directory's identity (GetInfo.data_id) into out: read from
 * <dir>/data-id, or made anew (random) and written there when it has none
 * or a damaged one.  GT_EIO: it could not be written. */
gt_err_t ss_data_id_load(const char *dir, char out[SS_DATA_ID_HEX + 1]);

/* ---- the server context (px_rpc_options_t.app) ---- */
typedef struct ss_dedup ss_dedup_t;
typedef struct ss_watch ss_watch_t;

/* Counters are atomics; poll_mu guards `parked`, `cancelled` and the
 * attachment of parked polls to their calls. */
typedef struct ss_srv {
    st_store_t *store;      /* exec-wrapped; borrowed */
    const char *engine;     /* the inner store's ops->name */
    /* Replication (ss_repl.h); NULL: a single node (no roles, no gating).
     * With it, `store` is NULL while the node is not the leader (set and
     * cleared under late_lock's write lock). */
    ss_repl_t *repl;
    const char *data_dir;   /* measured for GetInfo.storage_bytes */
    _Atomic int replica_set; /* GetInfo: rs/<k> of this node, -1 none (ss_cluster) */
    char data_id[SS_DATA_ID_HEX + 1]; /* GetInfo.data_id (ss_data_id.c) */
    ss_dedup_t *dedup;      /* NULL: de-dup off */
    ss_watch_t *watch;
    pthread_mutex_t poll_mu;
    ss_map_t parked;        /* (client_id, cancel_key) -> ss_poll_t */
    ss_map_t cancelled;     /* (client_id, cancel_key) -> expiry (ms) */
    _Atomic uint64_t next_key; /* the engine's cancel keys, from 1 */
    /* Late work without a call (giving back undelivered pops) reads
     * `store` under a read lock; main write-locks it and clears `store`
     * before closing the store. */
    pthread_rwlock_t late_lock;
    _Atomic uint64_t calls, parked_now, dedup_hits;
    _Atomic uint64_t many_calls, many_appends; /* AppendMany */
    /* Test only: AppendMany answers UNIMPLEMENTED (a node older than it). */
    bool test_no_append_many;
    /* Test only (GANTRY_TEST_LATE_ATTACH): a poll attaches to its call
     * only after the call's interrupt came and went (poll_mu, test_cv,
     * the calls interrupted last). */
    bool test_late_attach;
    pthread_cond_t test_cv;
    const px_call_t *test_seen[16];
    unsigned test_seen_next;
} ss_srv_t;

static inline ss_srv_t *ss_srv(const px_call_t *call)
{
    return px_call_app(call);
}

int64_t ss_now_ms(void);

/* Answers a unary call with a response holding only `err` (field 1 of
 * every response type but MetaWatch's) and finishes OK. */
void ss_reply_err(px_call_t *call, gt_err_t err);

/* Answers a unary store call with `msg` then OK: through ss_repl_reply()
 * (held until the in-sync set has what the store did) when replicating. */
void ss_reply_pb(px_call_t *call, const ProtobufCMessage *msg);

/* ---- ss_service.c ---- */
/* Adds every gantry.store.v1.Store RPC to t. */
gt_err_t ss_service_register(px_method_table_t *t);

/* ---- ss_conv.c ---- */
/* Points *out at m's fields (borrowed; "" -> NULL where st.h takes NULL).
 * GT_EINVAL for too many keys or properties or a bad queue id. */
gt_err_t ss_msg_from_pb(const ss_pb_msg_t *m, st_message_t *out);

/* Protobuf views of n st_message_t (their fields borrow from them), in
 * one allocation sized to their keys and properties.  Message i is at
 * (const char *)base + i * stride (st_message_t arrays, or the msg member
 * of st_popped_t arrays).  GT_ENOMEM; free with ss_msgs_out_free(). */
typedef struct ss_msgs_out {
    ss_pb_msg_t *m; /* n of them */
    ss_pb_msg_t **pm; /* pointers to them */
} ss_msgs_out_t;
gt_err_t ss_msgs_to_pb(const void *base, size_t stride, size_t n,
                       ss_msgs_out_t *out);
void ss_msgs_out_free(ss_msgs_out_t *out);
/* A MessagesResponse for n messages (pull, lookups, tx_pending); sends it,
 * finishes the call. */
void ss_reply_msgs(px_call_t *call, gt_err_t err, const st_message_t *msgs,
                   size_t n, uint64_t next_offset);
/* on_screen of every method: a string field holding a NUL is answered
 * EINVAL (decoded, the C string would end there and name something else). */
bool ss_screen(px_call_t *call, const uint8_t *data, size_t len);
/* "" -> NULL */
static inline const char *ss_opt(const char *s)
{
    return s != NULL && s[0] != '\0' ? s : NULL;
}

/* ---- ss_poll.c ---- */
void ss_pop(px_call_t *call, ProtobufCMessage *req);
void ss_pull(px_call_t *call, ProtobufCMessage *req);
void ss_poll_interrupt(px_call_t *call, px_interrupt_t why);
void ss_pop_cancel(px_call_t *call, ProtobufCMessage *req);
void ss_poll_init(ss_srv_t *s);
void ss_poll_fini(ss_srv_t *s);

/* ---- ss_append.c ---- */
/* entries: messages remembered (0: off); window_ms: for how long. */
ss_dedup_t *ss_dedup_new(uint32_t entries, int64_t window_ms);
void ss_dedup_free(ss_dedup_t *d);
/* Entries and remembered messages now (metrics). */
void ss_dedup_counts(ss_dedup_t *d, uint64_t *entries, uint64_t *items);
/* Forgets every answered append (a role change: the engine opened again
 * may not hold what they answered).  NULL-safe. */
void ss_dedup_forget(ss_dedup_t *d);
void ss_append(px_call_t *call, ProtobufCMessage *req);
void ss_append_multi(px_call_t *call, ProtobufCMessage *req);
/* AppendMany: each append as an Append call of its own, one answer. */
void ss_append_many(px_call_t *call, ProtobufCMessage *req);

/* ---- ss_watch.c ---- */
/* Registers the store's metadata watcher and waits for its snapshot
 * (start-up).  NULL on failure. */
ss_watch_t *ss_watch_start(st_store_t *store);
/* Removes the store watcher (before st_close) and frees. */
void ss_watch_stop(ss_watch_t *w, st_store_t *store);
void ss_meta_watch(px_call_t *call, ProtobufCMessage *req);
void ss_meta_watch_interrupt(px_call_t *call, px_interrupt_t why);
size_t ss_watch_count(ss_watch_t *w);

#endif
