/* st_remote's internals, shared by st_remote.c (links, requests, every
 * operation but appends, the metadata watch, open/close/switch) and
 * st_remote_append.c (Append, AppendMulti and the append batcher). */
#ifndef ST_REMOTE_INT_H
#define ST_REMOTE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gantry/store/v1/store.pb-c.h"
#include "px_rpc.h"
#include "px_rpc_client.h"
#include "st_remote.h"

#define SVC "/gantry.store.v1.Store/"

typedef struct rop rop_t;

/* A connection to one node: the client's channels to it.  The store's
 * current link holds one reference; a call being started (or a timer being
 * set) holds one for that moment.  A link that is switched away (cluster
 * mode) is marked dead and, once its last reference goes, handed to the
 * reaper thread, which frees its client: calls still open on it end with
 * CANCELLED, reported as GT_AGAIN (or retried on the new link). */
typedef struct rlink {
    px_rpc_client_t *rpc;
    int refs;             /* under st->link_mu */
    atomic_bool dead;
    struct rlink *next;   /* the reaper's queue */
    char addr[];
} rlink_t;

typedef struct st_remote {
    st_store_t base;
    pthread_mutex_t link_mu; /* a leaf lock: link, refs, reaper queue */
    pthread_cond_t link_cv;
    rlink_t *link;        /* NULL: no node (cluster mode: no leader known) */
    int n_links;          /* links not yet freed */
    bool switchable;      /* cluster mode: st_remote_switch() */
    rlink_t *reap_head;   /* dead links for the reaper */
    bool reaper_stop;
    bool has_reaper;
    pthread_t reaper;
    px_rpc_client_opts_t copts; /* for new links (endpoints set per link) */
    /* Hooks (cluster mode), called under hook_mu so that st_close can
     * clear them while no call is running. */
    pthread_mutex_t hook_mu;
    void (*on_not_leader)(void *ctx);
    void (*on_close)(void *ctx);
    void *hook_ctx;
    int64_t timeout_ms;
    int retries;
    char client_id[40];   /* scopes our pops' cancel keys on the node */
    char id_prefix[24];   /* message ids we generate: prefix + counter */
    atomic_uint_fast64_t id_seq;
    atomic_bool closing;

    /* The append batcher (st_remote_append.c), under ab_mu. */
    pthread_mutex_t ab_mu;
    rop_t *ab_head, *ab_tail; /* appends waiting for a call to end */
    size_t ab_count, ab_bytes;
    int ab_inflight;      /* append calls in flight that it counts */
    int ab_max_inflight;  /* <= 0: no batching */
    size_t ab_max_count, ab_max_bytes;
    atomic_bool ab_many_off; /* the node lacks AppendMany */

    pthread_mutex_t mu;   /* the watch */
    st_meta_cb watch_cb;
    void *watch_arg;
    uint64_t watch_gen;   /* bumped by every st_meta_watch() */
    px_ccall_t *watch_call;
    int64_t watch_backoff_ms;
    bool watch_timer;     /* a reopen is scheduled */
    /* Versions handed to the watcher: each stream's node versions plus a
     * base above everything handed out before (a restarted node counts
     * again from its state log), so that a new stream's snapshot wins. */
    uint64_t ver_max;
    /* The names the watcher holds (sorted "T"/"G" + name), so that a new
     * snapshot can tell it which ones went while no stream was open. */
    char (*names)[ST_NAME_MAX + 2];
    size_t n_names, cap_names;
} st_remote_t;

/* ---- one request -------------------------------------------------------- */

/* Runs the caller's callback: err, and the decoded response (NULL unless
 * the call came back with one). */
typedef void (*rop_conv_fn)(rop_t *op, gt_err_t err, const ProtobufCMessage *resp);

struct rop {
    st_remote_t *st;
    const char *method;
    const ProtobufCMessageDescriptor *resp_desc;
    rop_conv_fn conv;     /* NULL: nobody waits (pop_cancel) */
    void (*cb)(void);     /* the caller's callback, cast by conv */
    void *arg;
    uint8_t *req;
    size_t len;
    int64_t timeout_ms;
    int tries_left;       /* retries allowed (idempotent operations) */
    int64_t backoff_ms;
    rlink_t *link;        /* where the call in flight went (alive while
                             its callback runs) */
    bool batched;         /* an append: through the batcher */
    bool in_slot;         /* its call counts in ab_inflight */
    rop_t *next;          /* the batcher's queue */
};


#define CB(f) ((void (*)(void))(f))
#define STR(s) ((char *)((s) ? (s) : ""))
#define NUL(s) ((s) && *(s) ? (s) : NULL)
#define ST(s) ((st_remote_t *)(s))
#define DESC(x) (&gantry__store__v1__##x##__descriptor)

/* ---- st_remote.c ---- */

/* The current link with a reference, or NULL; st_rm_link_put drops it. */
rlink_t *st_rm_link_get(st_remote_t *st);
void st_rm_link_put(st_remote_t *st, rlink_t *l);
/* The `err` field (number 1) of any response of the protocol. */
gt_err_t st_rm_err_of(const ProtobufCMessage *m);
/* Runs the op's converter (its caller's callback) and frees it. */
void st_rm_finish(rop_t *op, gt_err_t err, const ProtobufCMessage *resp);
/* Sends the op: through the batcher if it is batched, else at once. */
void st_rm_send(rop_t *op);
/* Sends the op as a call of its own now. */
void st_rm_send_now(rop_t *op);
/* The op's call (or the AppendMany it went in) failed with `code`:
 * retried if it may be, else finished.  hook: run the not-leader hook if
 * the node said so (once per call). */
void st_rm_fail(rop_t *op, grpc_status_code code, const char *details, bool hook);
/* Packs `req` and sends it.  retry: the operation is idempotent;
 * batched: an Append (st_rm_batch_submit). */
void st_rm_start(st_remote_t *st, const char *method, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *resp_desc, rop_conv_fn conv,
                 void (*cb)(void), void *arg, int64_t extra_ms, bool retry, bool batched);

/* ---- st_remote_append.c ---- */

void st_rm_append(st_store_t *s, const char *topic, const st_message_t *msgs, size_t n,
                  st_append_cb cb, void *arg);
void st_rm_append_multi(st_store_t *s, const st_message_t *msg, const st_dest_t *dests,
                        size_t n, st_append_cb cb, void *arg);
/* The batcher: an append to send.  While ab_max_inflight append calls are
 * in flight it waits, and the waiting ones go as one AppendMany when a
 * call ends (or at once when they reach ab_max_count / ab_max_bytes). */
void st_rm_batch_submit(rop_t *op);
/* An append call that counted in ab_inflight ended (before its answers
 * are handed out): the waiting appends go. */
void st_rm_batch_release(st_remote_t *st);
/* Init (from the config) and teardown of the batcher's state. */
void st_rm_batch_init(st_remote_t *st, const st_remote_config_t *cfg);
void st_rm_batch_fini(st_remote_t *st);

#endif
