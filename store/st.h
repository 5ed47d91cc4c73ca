/* The store interface: the one API the gRPC service, the AMQP gateway and
 * the (future) store server use to reach message state.
 *
 * A store is a `st_store_t *` whose first member is a `const st_ops_t *`
 * table; the inline wrappers below dispatch through it.  `st_local_open()`
 * opens the embedded engine (store/st_local.c); a remote implementation will
 * provide the same table.  The API speaks RocketMQ's domain (topics, groups,
 * queues, receipt handles), not any wire protocol.
 *
 * Asynchrony.  Every operation completes through a callback, so no caller
 * thread blocks on fsync, a long poll or a network round trip.  A callback
 * runs exactly once, either on the calling thread before the call returns
 * (when the answer is immediate) or on a store thread -- unless the store
 * is opened through st_exec_open(), which front ends do: then every
 * callback runs on the front end's executor, possibly before the call
 * returns, never inside it on the calling thread.  Callbacks must be
 * short and must not block; they may call back into the store (but not
 * st_close(), and not wait for another store callback).  Result
 * structures passed to a callback are *borrowed*: they are valid only until
 * the callback returns, so copy whatever you keep.
 *
 * Errors.  Callbacks receive a gt_err_t.  st_err_retriable() tells the
 * edge whether to answer "retry later" (I/O, disk full, shutdown) or "bad
 * request".  Specific meanings are listed on each operation. */
#ifndef ST_H
#define ST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "gt_err.h"

/* ---- limits ------------------------------------------------------------ */
#define ST_NAME_MAX      255  /* topic / group name bytes (without NUL)    */
#define ST_MAX_KEYS      32   /* keys per message                          */
#define ST_MAX_PROPS     132  /* properties per message: RocketMQ allows 128
                                 user ones; the rest carry system ones   */
#define ST_POP_MAX       32   /* messages per pop                          */
#define ST_HANDLE_MAX    64   /* receipt handle buffer, including NUL      */
#define ST_MSG_ID_MAX    64   /* message id buffer, including NUL          */
#define ST_QUEUE_ANY     (-1) /* "store chooses" / "all queues"            */
#define ST_INVISIBLE_MAX_MS (30LL * 24 * 3600 * 1000) /* 30 days            */
#define ST_POLL_MAX_MS      (24LL * 3600 * 1000)      /* 1 day              */

/* ---- reserved names ----------------------------------------------------
 * Every layer (proxy, gateways, store) uses these; nothing else spells them.
 *
 * %SYS% topics and groups are the store's own: it parks delayed messages in
 * %SYS%TIMER and transactions' half messages in %SYS%HALF, consumed by its
 * internal group %SYS%HOLD.  Clients must never reach them (a client
 * reading them would see rolled-back and not-yet-due messages), and they
 * cannot be created through st_topic_put().  %DLQ%<group> holds a group's
 * dead letters (clients may read it, not send to it); %RETRY%<group> is
 * RocketMQ's retry topic name, reserved likewise. */
#define ST_SYS_PREFIX   "%SYS%"
#define ST_SYS_TIMER    "%SYS%TIMER"  /* delayed messages until due */
#define ST_SYS_HALF     "%SYS%HALF"   /* half messages until resolved */
#define ST_SYS_GROUP    "%SYS%HOLD"   /* internal group: resolutions */
#define ST_DLQ_PREFIX   "%DLQ%"
#define ST_RETRY_PREFIX "%RETRY%"

/* True for a %SYS% topic or group name. */
static inline bool st_is_sys_name(const char *n)
{
    return n && strncmp(n, ST_SYS_PREFIX, sizeof(ST_SYS_PREFIX) - 1) == 0;
}

/* Message property keys for system properties that have no field of their
 * own.  They start with ST_PROP_SYS, a control character that no client
 * property key may contain, so they never collide with user properties;
 * edges strip them before delivery.  All of them are listed here so that
 * no two layers pick the same key. */
#define ST_PROP_SYS        "\x01"
#define ST_PROP_ENCODING   ST_PROP_SYS "enc"     /* body encoding ("gzip") */
#define ST_PROP_TRACE      ST_PROP_SYS "trace"   /* trace context */
#define ST_PROP_TXCHECK    ST_PROP_SYS "txcheck" /* see st_tx_pending() */
#define ST_PROP_HOLD_TOPIC ST_PROP_SYS "rt" /* store: real topic of a held message */
#define ST_PROP_HOLD_QUEUE ST_PROP_SYS "rq" /* store: its queue there (decimal) */
#define ST_PROP_AMQP       ST_PROP_SYS "amqp" /* AMQP gateway: a bridged message's
                                               envelope (gateway-amqp/gw_bridge.h) */

/* ---- metadata ---------------------------------------------------------- */
typedef enum st_topic_type {
    ST_TOPIC_NORMAL = 0,
    ST_TOPIC_FIFO,
    ST_TOPIC_DELAY,
    ST_TOPIC_TRANSACTION,
    ST_TOPIC_MIXED,
} st_topic_type_t;

/* RocketMQ permission bits. */
#define ST_PERM_WRITE 0x2u
#define ST_PERM_READ  0x4u

typedef struct st_topic {
    char name[ST_NAME_MAX + 1];
    st_topic_type_t type;
    uint32_t queue_count; /* 1..1024; may grow on update, never shrink */
    uint32_t perm;        /* ST_PERM_* */
} st_topic_t;

typedef enum st_consume_from {
    ST_CONSUME_FROM_FIRST = 0, /* first retained message of each queue */
    ST_CONSUME_FROM_LAST,      /* end of the queue as of the first pop */
} st_consume_from_t;

/* How long a consumer should wait before a failed message is retried:
 * backoff(attempt) = min(initial_ms * (multiplier/100)^(attempt-1), max_ms)
 * (multiplier 0 or 100: fixed initial_ms).  The store keeps it with the
 * group; the edge applies it (e.g. as the invisible duration of a nack).
 * All zero: no policy. */
typedef struct st_retry_policy {
    uint32_t initial_ms;
    uint32_t max_ms;       /* 0: no cap */
    uint32_t multiplier;   /* percent: 200 doubles each attempt */
} st_retry_policy_t;

typedef struct st_group {
    char name[ST_NAME_MAX + 1];
    uint32_t max_delivery_attempts; /* >= 1; after this many, to %DLQ% */
    bool fifo;
    st_consume_from_t consume_from;
    st_retry_policy_t retry;
} st_group_t;

/* Backoff before delivery attempt `attempt + 1` after attempt `attempt`
 * (>= 1) failed, per the policy; 0 when there is none. */
int64_t st_retry_backoff_ms(const st_retry_policy_t *p, uint32_t attempt);

/* ---- messages ---------------------------------------------------------- */
typedef struct st_prop {
    const char *key;
    const char *value;
} st_prop_t;

/* One message.  On append the caller fills the "in" fields (strings it
 * owns; NULL means empty) and the store copies them.  On output (pop, pull,
 * lookup) every pointer refers to store-owned memory valid for the duration
 * of the callback only. */
typedef struct st_message {
    /* in + out */
    const char *tag;
    const char *keys[ST_MAX_KEYS];
    uint32_t nkeys;
    const char *msg_id;     /* NULL on append: the store generates one */
    st_prop_t props[ST_MAX_PROPS];
    uint32_t nprops;
    int64_t born_ts_ms;
    const char *born_host;
    const char *msg_group;  /* FIFO message group, or NULL */
    int64_t delivery_ts_ms; /* delayed delivery time, 0 = none */
    const void *body;
    uint32_t body_len;
    int32_t queue_id;       /* in: queue or ST_QUEUE_ANY; out: queue */
    bool tx_half;           /* in: a transaction's half message, invisible
                               until st_tx_end() commits it */
    bool dedup_by_id;       /* in: the append may come again with this same
                               msg_id as a retry (a client's send): a remote
                               store de-duplicates the first message's id
                               within its window.  False (forwards, redrives,
                               gateway appends): only this call's own
                               retries are de-duplicated. */
    /* out only */
    const char *topic;
    uint64_t queue_offset;
    uint64_t position;      /* commitlog position */
    int64_t store_ts_ms;
    uint32_t flags;
    uint32_t tx_checks;     /* st_tx_pending(): checks recorded so far */
} st_message_t;

/* ---- callbacks and results --------------------------------------------- */
typedef void (*st_done_cb)(void *arg, gt_err_t err);

typedef void (*st_topic_cb)(void *arg, gt_err_t err, const st_topic_t *topics,
                            size_t n);
typedef void (*st_group_cb)(void *arg, gt_err_t err, const st_group_t *groups,
                            size_t n);

typedef struct st_append_item {
    char msg_id[ST_MSG_ID_MAX];
    uint32_t queue_id;
    uint64_t queue_offset;
    uint64_t position;
    int64_t store_ts_ms;
} st_append_item_t;

/* One destination of st_append_multi(): plain data. */
typedef struct st_dest {
    const char *topic;
    int32_t queue_id;         /* a queue, or ST_QUEUE_ANY: the store chooses
                                 as st_append() does */
} st_dest_t;
#define ST_DEST_MAX 1024      /* destinations per st_append_multi() */

/* On GT_OK every message was appended; on error none was acknowledged. */
typedef void (*st_append_cb)(void *arg, gt_err_t err,
                             const st_append_item_t *items, size_t n);

typedef struct st_popped {
    st_message_t msg;
    char handle[ST_HANDLE_MAX];   /* opaque receipt handle */
    uint32_t attempt;             /* delivery attempt, 1-based */
    int64_t invisible_until_ms;   /* wall clock, ms */
} st_popped_t;

/* n == 0 with GT_OK means "no message before the poll timeout". */
typedef void (*st_pop_cb)(void *arg, gt_err_t err, const st_popped_t *msgs,
                          size_t n);

/* Receives the new receipt handle (NUL-terminated) on GT_OK. */
typedef void (*st_handle_cb)(void *arg, gt_err_t err, const char *handle);

/* Messages from pull / lookup.  For pull, next_offset is where to continue. */
typedef void (*st_msgs_cb)(void *arg, gt_err_t err, const st_message_t *msgs,
                           size_t n, uint64_t next_offset);

typedef void (*st_offset_cb)(void *arg, gt_err_t err, uint64_t offset);

/* st_ack_batch(): on GT_OK, errs[i] is the result of handles[i] (n of
 * them, borrowed); otherwise errs is NULL, n is 0 and nothing was acked. */
typedef void (*st_acks_cb)(void *arg, gt_err_t err, const gt_err_t *errs,
                           size_t n);
#define ST_ACK_MAX 1024       /* handles per st_ack_batch() */
typedef void (*st_count_cb)(void *arg, gt_err_t err, uint64_t n);

/* How a pop's filter expression is to be read.  The expression travels as
 * text and is compiled by the store, where it is evaluated. */
typedef enum st_filter_kind {
    ST_FILTER_TAG = 0, /* NULL, "", "*" or "a||b||c" */
    ST_FILTER_SQL92,   /* RocketMQ's SQL92 selector over user properties
                          and TAGS (common/filter/gt_sql.h) */
} st_filter_kind_t;

/* Plain data: nothing in it points at the caller's state once st_pop()
 * returns, so it can cross a network. */
typedef struct st_pop_req {
    const char *group;
    const char *topic;
    int32_t queue_id;         /* ST_QUEUE_ANY: all queues of the topic */
    /* With ST_QUEUE_ANY: false takes the queues in turn (round robin,
     * redeliveries of all queues before new messages); true takes them as
     * priority levels, highest queue id first, each drained (redeliveries,
     * then new messages) before the next lower one (AMQP x-max-priority). */
    bool high_first;
    st_filter_kind_t filter_kind;
    const char *filter_expr;  /* per filter_kind; NULL: everything */
    uint32_t max;             /* 1..ST_POP_MAX */
    /* Optional (0: none): the pop hands out no further message once the
     * bodies handed out reach this many bytes (it always takes one). */
    uint64_t max_bytes;
    int64_t invisible_ms;     /* 1..ST_INVISIBLE_MAX_MS */
    int64_t poll_timeout_ms;  /* 0: answer immediately; <= ST_POLL_MAX_MS */
    /* Optional (0: none): names the pop for st_pop_cancel().  Keys share
     * one space per store (pops and pulls): unique among all requests that
     * may be parked at once, so front ends sharing a store split it (the
     * gRPC service: ReceiveMessage counts up from 1, PullMessage sets the
     * top bit). */
    uint64_t cancel_key;
    /* A group without a position on a queue starts at its first retained
     * message even if it consumes from the last offset.  The sharded
     * router sets it on a set a topic was moved to: everything there was
     * written after the move, so after the group's start on the old set,
     * and starting at the end would skip what came before the group's
     * first pop there. */
    bool new_from_first;
} st_pop_req_t;

/* A pull: plain data like st_pop_req_t. */
typedef struct st_pull_req {
    const char *topic;
    uint32_t queue;
    uint64_t offset;
    uint32_t max;             /* messages to read, 1..256 (clamped) */
    st_filter_kind_t filter_kind;
    const char *filter_expr;  /* per filter_kind; NULL: everything */
    int64_t poll_timeout_ms;  /* 0: answer at once; <= ST_POLL_MAX_MS */
    uint64_t cancel_key;      /* optional (0: none), see st_pop_cancel() */
} st_pull_req_t;

typedef enum st_offset_kind {
    ST_OFFSET_BEGIN = 0,
    ST_OFFSET_END,
    ST_OFFSET_TIME, /* first message with store time >= ts_ms, else END */
} st_offset_kind_t;

typedef struct st_queue_stats {
    uint64_t min_offset;  /* first retained offset */
    uint64_t max_offset;  /* next offset to be written */
    uint64_t bytes;       /* retained record bytes */
} st_queue_stats_t;

typedef struct st_stats {
    uint32_t nqueues;
    const st_queue_stats_t *queues; /* per queue of the topic */
    uint64_t messages;              /* retained messages, all queues */
    uint64_t bytes;
    /* Filled when a group was given: */
    uint64_t ready;                 /* deliverable now (new + expired) */
    uint64_t inflight;              /* delivered, invisible, not acked */
    uint64_t lag;                   /* max_offset - committed, summed */
    /* Half messages of this topic discarded after too many checks
     * (st_tx_checked), since the store opened (not persisted). */
    uint64_t tx_discarded;
} st_stats_t;

typedef void (*st_stats_cb)(void *arg, gt_err_t err, const st_stats_t *s);

/* A stats request: plain data, strings borrowed. */
typedef struct st_stats_req {
    const char *topic;
    const char *group;   /* NULL: topic figures only */
    /* As st_pop_req_t.new_from_first: a group without a position on a
     * queue counts from its first retained message even if it consumes
     * from the last offset (what its first pop there would start at). */
    bool new_from_first;
} st_stats_req_t;

/* ---- metadata change notifications -------------------------------------
 * Front ends keep their own copy of the topics and groups (they need them
 * for every request and must not wait on the store for them).  The store
 * keeps that copy current: st_meta_watch() delivers every topic and group
 * once, then each change as it is made -- including the store's own
 * (a %DLQ% topic created for a move, a group created by its first pop) and,
 * for a shared remote store, those made through other front ends. */
typedef enum st_meta_kind {
    ST_META_TOPIC = 0,
    ST_META_GROUP,
} st_meta_kind_t;

typedef struct st_meta_event {
    st_meta_kind_t kind;
    bool deleted;     /* the topic/group is gone; only its name is set */
    /* Store-wide and increasing with every change: a copy applies an
     * event only when it is newer than what it holds for that name, so
     * events may arrive in any order (executors run them on several
     * threads; a network may reorder). */
    uint64_t version;
    union {
        st_topic_t topic; /* kind ST_META_TOPIC */
        st_group_t group; /* kind ST_META_GROUP */
    } u;
} st_meta_event_t;

/* `snapshot` marks the first call after st_meta_watch(): every topic and
 * group that exists (n may be 0).  Later calls carry changes.  The events
 * are borrowed for the duration of the call.  Runs with store locks held
 * in the local engine: copy and return, never call the store. */
typedef void (*st_meta_cb)(void *arg, const st_meta_event_t *evs, size_t n,
                           bool snapshot);

/* ---- durable metadata records --------------------------------------------
 * A namespaced key/value space for the front ends' own durable metadata
 * (the AMQP gateway's exchanges, queues, bindings, later users and vhosts),
 * kept by the store with its topics and groups, so that a remote store
 * shares them between front-end processes.  A namespace is a short name
 * (1..ST_META_NS_MAX bytes of [A-Za-z0-9_.-]); a key is 1..ST_META_KEY_MAX
 * arbitrary bytes (an AMQP vhost and a name, each up to 255 bytes of
 * UTF-8, fit with room); a value is 0..ST_META_VALUE_MAX bytes.  Keys sort
 * bytewise (memcmp, a shorter key before its extensions), per namespace. */
#define ST_META_NS_MAX     64
#define ST_META_KEY_MAX    1024
#define ST_META_VALUE_MAX  (64u << 10)
#define ST_META_LIST_MAX   1024        /* records per st_meta_list answer */
#define ST_META_LIST_BYTES (4u << 20)  /* key + value bytes per answer (at
                                          least one record is answered) */
#define ST_META_TOTAL_MAX  (256u << 20) /* all records of a store: key +
                                           value bytes (GT_ENOSPC beyond) */

/* One record in an st_meta_list answer (borrowed, like every result). */
typedef struct st_meta_rec {
    const void *key;
    uint32_t key_len;
    const void *value;
    uint32_t value_len;
} st_meta_rec_t;

/* A listing: plain data like st_pop_req_t. */
typedef struct st_meta_list_req {
    const char *ns;
    const void *prefix;      /* only keys starting with it; NULL/0: all */
    uint32_t prefix_len;
    const void *after;       /* only keys after this one (the last key of
                                the previous page); NULL/0: from the start */
    uint32_t after_len;
    uint32_t max;            /* 1..ST_META_LIST_MAX (clamped; 0: the max) */
} st_meta_list_req_t;

/* Records in key order.  more: the answer stopped at max or at
 * ST_META_LIST_BYTES; ask again with after = the last key. */
typedef void (*st_meta_list_cb)(void *arg, gt_err_t err,
                                const st_meta_rec_t *recs, size_t n,
                                bool more);

/* ---- the operations table ---------------------------------------------- */
typedef struct st_store st_store_t;

typedef struct st_ops {
    const char *name;
    void (*close)(st_store_t *st);
    void (*topic_put)(st_store_t *st, const st_topic_t *t, st_done_cb cb,
                      void *arg);
    void (*topic_delete)(st_store_t *st, const char *name, st_done_cb cb,
                         void *arg);
    void (*topic_get)(st_store_t *st, const char *name, st_topic_cb cb,
                      void *arg);
    void (*group_put)(st_store_t *st, const st_group_t *g, st_done_cb cb,
                      void *arg);
    void (*group_delete)(st_store_t *st, const char *name, st_done_cb cb,
                         void *arg);
    void (*group_get)(st_store_t *st, const char *name, st_group_cb cb,
                      void *arg);
    void (*append)(st_store_t *st, const char *topic, const st_message_t *msgs,
                   size_t n, st_append_cb cb, void *arg);
    void (*pop)(st_store_t *st, const st_pop_req_t *req, st_pop_cb cb,
                void *arg);
    void (*pop_cancel)(st_store_t *st, uint64_t cancel_key);
    void (*ack)(st_store_t *st, const char *group, const char *topic,
                const char *handle, st_done_cb cb, void *arg);
    void (*ack_batch)(st_store_t *st, const char *group, const char *topic,
                      const char *const *handles, size_t n, st_acks_cb cb,
                      void *arg);
    void (*change_invisible)(st_store_t *st, const char *group,
                             const char *topic, const char *handle,
                             int64_t invisible_ms, st_handle_cb cb, void *arg);
    void (*release)(st_store_t *st, const char *group, const char *topic,
                    const char *handle, st_done_cb cb, void *arg);
    void (*pull)(st_store_t *st, const st_pull_req_t *req, st_msgs_cb cb,
                 void *arg);
    void (*offset_get)(st_store_t *st, const char *group, const char *topic,
                       uint32_t queue, st_offset_cb cb, void *arg);
    void (*offset_update)(st_store_t *st, const char *group, const char *topic,
                          uint32_t queue, uint64_t offset, st_done_cb cb,
                          void *arg);
    void (*offset_query)(st_store_t *st, const char *topic, uint32_t queue,
                         st_offset_kind_t kind, int64_t ts_ms, st_offset_cb cb,
                         void *arg);
    void (*lookup_id)(st_store_t *st, const char *topic, const char *msg_id,
                      st_msgs_cb cb, void *arg);
    void (*lookup_key)(st_store_t *st, const char *topic, const char *key,
                       uint32_t max, st_msgs_cb cb, void *arg);
    void (*stats)(st_store_t *st, const st_stats_req_t *req, st_stats_cb cb,
                  void *arg);
    void (*tx_end)(st_store_t *st, const char *topic, const char *msg_id,
                   bool commit, st_done_cb cb, void *arg);
    void (*tx_pending)(st_store_t *st, int64_t unresolved_for_ms, uint32_t max,
                       st_msgs_cb cb, void *arg);
    void (*tx_checked)(st_store_t *st, const char *topic, const char *msg_id,
                       uint32_t seen_checks, uint32_t max_checks,
                       st_done_cb cb, void *arg);
    void (*recall)(st_store_t *st, const char *topic, const char *msg_id,
                   st_done_cb cb, void *arg);
    void (*meta_watch)(st_store_t *st, st_meta_cb cb, void *arg);
    void (*append_multi)(st_store_t *st, const st_message_t *msg,
                         const st_dest_t *dests, size_t n, st_append_cb cb,
                         void *arg);
    void (*purge)(st_store_t *st, const char *group, const char *topic,
                  st_count_cb cb, void *arg);
    void (*requeue)(st_store_t *st, const char *group, const char *topic,
                    st_count_cb cb, void *arg);
    void (*meta_put)(st_store_t *st, const char *ns, const void *key,
                     uint32_t key_len, const void *value, uint32_t value_len,
                     st_done_cb cb, void *arg);
    void (*meta_del)(st_store_t *st, const char *ns, const void *key,
                     uint32_t key_len, st_done_cb cb, void *arg);
    void (*meta_list)(st_store_t *st, const st_meta_list_req_t *req,
                      st_meta_list_cb cb, void *arg);
} st_ops_t;

/* Every implementation's store object starts with this. */
struct st_store {
    const st_ops_t *ops;
};

/* ---- the local engine's configuration ----------------------------------- */
typedef enum st_flush {
    ST_FLUSH_SYNC = 0, /* complete appends after fdatasync (group commit) */
    ST_FLUSH_ASYNC,    /* complete after write; fdatasync every interval  */
} st_flush_t;

struct st_file_ops; /* file layer (st_int.h); tests inject faults through it */

typedef struct st_config {
    const char *dir;             /* data directory; created if missing */
    uint64_t segment_size;       /* commitlog segment bytes, default 1 GiB */
    st_flush_t flush;
    uint32_t flush_interval_ms;  /* async mode and state log, default 500 */
    uint32_t retention_hours;    /* default 72; 0 = keep forever */
    uint32_t max_message_bytes;  /* encoded record limit, default 4 MiB */
    bool repair;                 /* truncate at damage below synced data */
    uint64_t state_compact_bytes; /* compact the state log past this size
                                     (and 2x its last compacted size);
                                     default 64 MiB */
    uint32_t snapshot_interval_ms; /* save consume queues + index for a
                                      fast start; default 300000 */
    uint32_t index_mem_entries;    /* id / key index entries kept in memory
                                      before they go to a run file;
                                      default 65536 (tests: small) */
    uint32_t cq_file_entries;    /* consume queue entries per file, a
                                    multiple of 128; default 65536 */
    uint32_t cq_tail_entries;    /* consume queue entries kept in memory
                                    before they are written to their file;
                                    default 1024 */
    const struct st_file_ops *file_ops; /* NULL = POSIX; tests only */
    void *file_ctx;
} st_config_t;

/* Fills *cfg with defaults (dir NULL). */
void st_config_init(st_config_t *cfg);

/* Opens (creating or recovering) the local store in cfg->dir.  Synchronous:
 * this is start-up.  Borrows cfg (strings are copied).  On GT_OK *out is an
 * owned store; release it with st_close().  GT_ECORRUPT means damage below
 * the last synced position (logged with file and offset); start with
 * cfg->repair to truncate there instead.  GT_EBUSY: another process holds
 * the directory. */
gt_err_t st_local_open(const st_config_t *cfg, st_store_t **out);

/* ---- replication hooks (the local engine; store-server/ss_repl*.c) ------
 * A replica set's leader ships raw bytes of its data directory's files to
 * its followers (docs/store-protocol.md, Replication); these say what is safe to ship and
 * check what a follower received, without duplicating the formats. */
typedef void (*st_written_fn)(void *arg);
typedef struct st_repl_marks {
    uint64_t cl_synced;  /* commitlog: end of fdatasync'd data (global
                            position; segment files below it hold whole
                            records) */
    uint64_t cl_written; /* end of written data */
    uint64_t state_gen;  /* state.log file generation of this run (bumped
                            when compaction swaps in a new file) */
    uint64_t state_ino;  /* that file's inode */
    uint64_t state_end;  /* bytes of whole records written to it */
} st_repl_marks_t;
/* `local` must be a store from st_local_open() (not a decorator).  A
 * consistent snapshot (one short lock hold). */
void st_local_repl_marks(st_store_t *local, st_repl_marks_t *out);
/* Runs fn(arg) on the engine's writer thread each time appends' records
 * become shippable (the commitlog's written end moved, with flush: async;
 * its synced end, with flush: sync), before their answers are handed to
 * the executor: a leader ships them to waiting followers from there,
 * without waiting for a hop to another thread.  fn holds up the next
 * write while it runs: it may send (a few answers, no waiting on
 * anything but short locks), must not append, and may take
 * st_local_repl_marks.  Set once, before the
 * store is served (the writer may already read it: the pair is set
 * atomically). */
void st_local_on_written(st_store_t *local, st_written_fn fn, void *arg);
/* A leader reading its commitlog (store-server/ss_repl_ship.c) from the
 * engine's open segments, without listing the directory or opening files
 * per read.  st_local_repl_seg() holds the last segment whose base is at
 * or below pos, or the first one when pos is below it: GT_OK with *out
 * filled (fd readable with pread until st_local_repl_seg_done()),
 * GT_ENOTFOUND when there is no segment.  `end` is the file bytes written
 * (whole records below it); `next` the following segment's base
 * (UINT64_MAX when this is the newest); `first` the oldest segment's base
 * (retention moves it). */
typedef struct st_repl_seg {
    uint64_t base, end, next, first;
    int fd;
    void *ref;
} st_repl_seg_t;
gt_err_t st_local_repl_seg(st_store_t *local, uint64_t pos,
                           st_repl_seg_t *out);
void st_local_repl_seg_done(st_store_t *local, st_repl_seg_t *seg);
/* One commitlog record at buf (len bytes available): GT_OK with *used its
 * length (magic, length, CRC and structure checked), GT_AGAIN partial,
 * GT_ECORRUPT. */
gt_err_t st_record_check(const uint8_t *buf, size_t len, size_t *used);
/* Segment file header (64 bytes): GT_OK with *base, GT_AGAIN, GT_ECORRUPT. */
gt_err_t st_seg_hdr_check(const uint8_t *buf, size_t len, uint64_t *base);
/* The state log: its 8-byte file header, and one record (as above). */
gt_err_t st_state_hdr_check(const uint8_t *buf, size_t len);
gt_err_t st_state_rec_check(const uint8_t *buf, size_t len, size_t *used);
/* Writes checkpoint slot (seq & 1) of the open checkpoint file `fd`
 * (<dir>/checkpoint) saying `synced` bytes of the commitlog are durable;
 * call with increasing seq after an fdatasync of the commitlog.  The file
 * itself is not synced here. */
gt_err_t st_checkpoint_write(int fd, uint64_t seq, uint64_t synced);

/* ---- the local engine's I/O figures (for /metrics) --------------------- */

/* Upper bounds (milliseconds) of the fdatasync latency buckets; a last,
 * unbounded bucket follows them. */
#define ST_FSYNC_BUCKETS 12
extern const double st_fsync_bucket_ms[ST_FSYNC_BUCKETS];

typedef enum st_sync_file {
    ST_SYNC_COMMITLOG = 0, /* the commitlog (syncer, or flusher in async mode) */
    ST_SYNC_STATE,         /* the state log (flusher) */
    ST_SYNC_FILES
} st_sync_file_t;

typedef struct st_io_stats {
    /* Commitlog bytes written to the file but not yet fdatasync'd (upstream's
     * flush-behind): at most ST_WRITE_AHEAD-ish in sync mode, up to a
     * flush_interval_ms worth of appends in async mode. */
    uint64_t flush_behind_bytes;
    uint64_t written_pos, synced_pos; /* commitlog positions behind it */
    struct {
        uint64_t count;                       /* fdatasyncs done */
        uint64_t failed;                      /* of them, failed */
        double sum_ms;                        /* their total time */
        uint64_t bucket[ST_FSYNC_BUCKETS + 1]; /* per bucket, not cumulative */
    } fsync[ST_SYNC_FILES];
} st_io_stats_t;

/* A snapshot of the local engine's figures (relaxed atomic reads, no lock:
 * any thread, any time while the store is open).  `local` must be the
 * store st_local_open() returned (not a decorator wrapping it); GT_EINVAL
 * for another store. */
gt_err_t st_local_io_stats(st_store_t *local, st_io_stats_t *out);

/* ---- executors and decorators ------------------------------------------
 * One rule for callback threads: the front end hands the store an
 * executor, and every result (and metadata notification) reaches the
 * front end there, as data the callback owns for its duration; store
 * threads never run front-end code.  st_exec_open() wraps any store (the
 * local engine, later a remote client) so that this holds whatever thread
 * the wrapped store completes on, and inline answers become posted ones. */
typedef void (*st_task_fn)(void *arg);

typedef struct st_exec {
    /* Runs fn(arg) soon on one of the front end's threads, never inline.
     * GT_OK, or an error when it cannot (then fn will not run).  Must be
     * safe from any thread, with store locks held. */
    gt_err_t (*post)(void *ctx, st_task_fn fn, void *arg);
    void *ctx;
} st_exec_t;

/* Wraps `inner` (takes ownership: st_close() closes it) so that every
 * callback runs on `ex` (borrowed; must accept posts until st_close()
 * returns) with a private deep copy of its result.  A callback never runs
 * before the operation's call returns.  On GT_OK *out is owned. */
gt_err_t st_exec_open(st_store_t *inner, const st_exec_t *ex,
                      st_store_t **out);

/* Test only: wraps `inner` (takes ownership) so that every callback runs
 * late -- a random 0..max_delay_us later, on the decorator's own thread
 * -- as a network store's would.  seed makes the delays repeatable. */
gt_err_t st_late_open(st_store_t *inner, uint32_t max_delay_us, unsigned seed,
                      st_store_t **out);

/* True for errors a client should retry later (I/O, disk full, busy,
 * shutting down, timeout); false for bad requests. */
bool st_err_retriable(gt_err_t err);

/* Name of the dead-letter topic of a group: "%DLQ%<group>". Writes into buf
 * (size >= ST_NAME_MAX + 1); returns GT_ERANGE if it does not fit. */
gt_err_t st_dlq_topic_name(const char *group, char *buf, size_t size);

/* ---- wrappers ---------------------------------------------------------- */

/* Completes or fails in-flight appends, answers parked pops with
 * GT_ESHUTDOWN, syncs and frees.  Takes ownership of st (NULL-safe). */
static inline void st_close(st_store_t *st)
{
    if (st)
        st->ops->close(st);
}

/* Creates or updates a topic (queue_count may grow).  Borrows t.
 * GT_EINVAL: bad name/count. */
static inline void st_topic_put(st_store_t *st, const st_topic_t *t,
                                st_done_cb cb, void *arg)
{
    st->ops->topic_put(st, t, cb, arg);
}

/* Deletes a topic's metadata (its data ages out).  Borrows name.
 * GT_ENOTFOUND if unknown. */
static inline void st_topic_delete(st_store_t *st, const char *name,
                                   st_done_cb cb, void *arg)
{
    st->ops->topic_delete(st, name, cb, arg);
}

/* name == NULL lists all topics; otherwise one (GT_ENOTFOUND if none).
 * The array passed to cb is borrowed. */
static inline void st_topic_get(st_store_t *st, const char *name,
                                st_topic_cb cb, void *arg)
{
    st->ops->topic_get(st, name, cb, arg);
}

/* Creates or updates a group.  Borrows g.  Groups are also created with
 * defaults (16 attempts, consume from first) on their first pop. */
static inline void st_group_put(st_store_t *st, const st_group_t *g,
                                st_done_cb cb, void *arg)
{
    st->ops->group_put(st, g, cb, arg);
}

static inline void st_group_delete(st_store_t *st, const char *name,
                                   st_done_cb cb, void *arg)
{
    st->ops->group_delete(st, name, cb, arg);
}

/* name == NULL lists all groups.  The array passed to cb is borrowed. */
static inline void st_group_get(st_store_t *st, const char *name,
                                st_group_cb cb, void *arg)
{
    st->ops->group_get(st, name, cb, arg);
}

/* Appends n (1..1024) messages to one topic.  Borrows topic and msgs (copied
 * before return).  cb gets one item per message, in order, after the
 * configured durability is met.  Errors: GT_ENOTFOUND (topic), GT_EINVAL
 * (bad queue, too many keys/props, too large), GT_EIO / GT_ENOSPC
 * (retriable; nothing was acknowledged), GT_ESHUTDOWN. */
static inline void st_append(st_store_t *st, const char *topic,
                             const st_message_t *msgs, size_t n,
                             st_append_cb cb, void *arg)
{
    st->ops->append(st, topic, msgs, n, cb, arg);
}

/* Appends one message to n (1..ST_DEST_MAX) consume queues at once: ONE
 * commitlog record (the body is stored once) and an entry in each
 * destination's queue, each consumed on its own (pop, ack, pull, offsets,
 * stats per destination topic, as if appended there alone).  Borrows msg
 * and dests.  cb gets n items, item i for dests[i] (its queue and queue
 * offset; the message id, position and store time are the same in all),
 * after the configured durability is met; on error none was appended.
 * Popped / pulled from a destination the message shows that destination's
 * topic, queue and offset; id lookups find it once, under the first
 * destination's topic.  Errors: GT_ENOTFOUND (a topic), GT_EINVAL (n, a
 * bad queue, a topic named twice, a %SYS% topic, a delayed or half
 * message -- not supported here -- or sizes as for st_append()), then as
 * st_append(). */
static inline void st_append_multi(st_store_t *st, const st_message_t *msg,
                                   const st_dest_t *dests, size_t n,
                                   st_append_cb cb, void *arg)
{
    st->ops->append_multi(st, msg, dests, n, cb, arg);
}

/* Pops up to req->max messages for req->group, parking up to
 * req->poll_timeout_ms until one arrives.  Borrows req (copied if parked).
 * GT_ENOTFOUND: unknown topic; GT_EINVAL: bad limits or a filter
 * expression that does not compile. */
static inline void st_pop(st_store_t *st, const st_pop_req_t *req,
                          st_pop_cb cb, void *arg)
{
    st->ops->pop(st, req, cb, arg);
}

/* Completes the parked pop (or pull) named cancel_key (its client went away) with
 * GT_OK and no message, so nothing is handed to a receiver that no longer
 * exists; its callback runs on a store thread.  A key not parked yet is
 * remembered for a while (a pop racing its cancel completes empty at
 * once); an unknown or finished one is otherwise ignored.  O(log parked). */
static inline void st_pop_cancel(st_store_t *st, uint64_t cancel_key)
{
    st->ops->pop_cancel(st, cancel_key);
}

/* Acknowledges one delivery.  Borrows strings.  GT_EINVAL: invalid receipt
 * handle (malformed, expired, superseded or already acked); GT_ENOTFOUND:
 * unknown topic or group. */
static inline void st_ack(st_store_t *st, const char *group, const char *topic,
                          const char *handle, st_done_cb cb, void *arg)
{
    st->ops->ack(st, group, topic, handle, cb, arg);
}

/* Acknowledges n (1..ST_ACK_MAX) deliveries of one group and topic at once,
 * each as st_ack() would, in order (a handle named twice is acked by its
 * first entry; the second gets GT_EINVAL): one pass under the store's
 * lock, their records written to the state log together, one callback.
 * Borrows strings (used before return).  cb gets GT_OK with one result
 * per handle -- GT_OK, GT_EINVAL (invalid handle, as for st_ack()) or the
 * state log's write error (then none of the valid ones was acked) -- or,
 * for the request as a whole, GT_EINVAL (n out of range), GT_ENOTFOUND
 * (unknown topic or group), GT_ENOMEM, GT_ESHUTDOWN. */
static inline void st_ack_batch(st_store_t *st, const char *group,
                                const char *topic, const char *const *handles,
                                size_t n, st_acks_cb cb, void *arg)
{
    st->ops->ack_batch(st, group, topic, handles, n, cb, arg);
}

/* Makes a delivery invisible for invisible_ms (0..ST_INVISIBLE_MAX_MS)
 * from now; cb receives a new handle and the old one stops working.
 * invisible_ms 0 gives it back at once as a failed delivery (a nack with
 * requeue): the next pop of the group delivers it, ahead of newer
 * messages never delivered, with its attempt raised by one (past the
 * group's max attempts it goes to %DLQ%).  Errors as for st_ack(). */
static inline void st_change_invisible(st_store_t *st, const char *group,
                                       const char *topic, const char *handle,
                                       int64_t invisible_ms, st_handle_cb cb,
                                       void *arg)
{
    st->ops->change_invisible(st, group, topic, handle, invisible_ms, cb, arg);
}

/* Gives a delivery back as if it had not happened: the message is visible
 * again at once and its delivery attempt no longer counts (the next pop
 * delivers it with the same attempt number again).  For a delivery that
 * never reached its consumer (the call was cancelled before the message
 * was written).  The handle stops working.  Logged like an ack, so a
 * restart agrees.  Errors as for st_ack(). */
static inline void st_release(st_store_t *st, const char *group,
                              const char *topic, const char *handle,
                              st_done_cb cb, void *arg)
{
    st->ops->release(st, group, topic, handle, cb, arg);
}

/* Drops every message of topic that is ready for group (as st_stats()
 * counts `ready`: never delivered, or given back or expired and not
 * delivered again) -- not those in flight, which stay ackable and come
 * back if not acked -- as if acked.  cb gets how many.  Borrows strings.
 * GT_ENOTFOUND: unknown topic or group; GT_EINVAL: a %SYS% name. */
static inline void st_purge(st_store_t *st, const char *group,
                            const char *topic, st_count_cb cb, void *arg)
{
    st->ops->purge(st, group, topic, cb, arg);
}

/* Gives back every delivery of topic to group that is in flight, as
 * st_change_invisible(0) does for one: each is due at once and its next
 * delivery comes with the attempt raised by one; their handles stop
 * working.  For a front end taking over after a restart whose consumers
 * are gone (AMQP requeues unacked messages when their channel ends).  cb
 * gets how many.  Borrows strings.  Errors as for st_purge(). */
static inline void st_requeue(st_store_t *st, const char *group,
                              const char *topic, st_count_cb cb, void *arg)
{
    st->ops->requeue(st, group, topic, cb, arg);
}

/* Reads up to req->max messages of (topic, queue) from req->offset that
 * pass the filter, without consuming state.  Messages the filter rejects
 * are stepped over: next_offset (where to continue) is past them too.  An
 * offset below the retained minimum starts at the minimum; one past the
 * end is GT_ERANGE.  When nothing passes and the queue's end was reached,
 * the pull parks up to req->poll_timeout_ms for new messages (then n == 0
 * with GT_OK); st_pop_cancel() ends it early.  Borrows req.  GT_EINVAL:
 * bad queue or filter. */
static inline void st_pull(st_store_t *st, const st_pull_req_t *req,
                           st_msgs_cb cb, void *arg)
{
    st->ops->pull(st, req, cb, arg);
}

/* Committed offset of (group, topic, queue): all below it are acked.
 * GT_ENOTFOUND: unknown topic/group, or no state yet on that queue (the
 * group never popped from it nor set an offset). */
static inline void st_offset_get(st_store_t *st, const char *group,
                                 const char *topic, uint32_t queue,
                                 st_offset_cb cb, void *arg)
{
    st->ops->offset_get(st, group, topic, queue, cb, arg);
}

/* Moves the committed offset (and the pop position) to offset, forgetting
 * in-flight deliveries below it.  GT_ERANGE beyond the end. */
static inline void st_offset_update(st_store_t *st, const char *group,
                                    const char *topic, uint32_t queue,
                                    uint64_t offset, st_done_cb cb, void *arg)
{
    st->ops->offset_update(st, group, topic, queue, offset, cb, arg);
}

static inline void st_offset_query(st_store_t *st, const char *topic,
                                   uint32_t queue, st_offset_kind_t kind,
                                   int64_t ts_ms, st_offset_cb cb, void *arg)
{
    st->ops->offset_query(st, topic, queue, kind, ts_ms, cb, arg);
}

/* Finds the message(s) with this id (topic may be NULL = any).
 * GT_OK with n == 0 when none. */
static inline void st_lookup_id(st_store_t *st, const char *topic,
                                const char *msg_id, st_msgs_cb cb, void *arg)
{
    st->ops->lookup_id(st, topic, msg_id, cb, arg);
}

/* Up to max (<= ST_POP_MAX) most recent messages carrying key. */
static inline void st_lookup_key(st_store_t *st, const char *topic,
                                 const char *key, uint32_t max, st_msgs_cb cb,
                                 void *arg)
{
    st->ops->lookup_key(st, topic, key, max, cb, arg);
}

/* Per-queue counts and bytes of topic; with group, its ready / in-flight /
 * lag too. */
static inline void st_stats(st_store_t *st, const char *topic,
                            const char *group, st_stats_cb cb, void *arg)
{
    st_stats_req_t req = {.topic = topic, .group = group};
    st->ops->stats(st, &req, cb, arg);
}

/* st_stats() with the whole request (st_stats_req_t). */
static inline void st_stats_req(st_store_t *st, const st_stats_req_t *req,
                                st_stats_cb cb, void *arg)
{
    st->ops->stats(st, req, cb, arg);
}

/* Registers the store's one metadata watcher (replacing any; cb NULL
 * removes it): cb gets a snapshot at once, then every change until
 * st_close() or removal.  Borrows arg. */
static inline void st_meta_watch(st_store_t *st, st_meta_cb cb, void *arg)
{
    st->ops->meta_watch(st, cb, arg);
}

/* Creates or replaces the record (ns, key).  Borrows everything (copied
 * before return).  cb runs once the record is as durable as the store's
 * flush mode makes appends: with sync flush it is on disk (fdatasync) and
 * survives a crash; with async flush it is written and synced within the
 * flush interval.  GT_EINVAL: bad namespace, key or value size;
 * GT_ENOSPC: disk full or ST_META_TOTAL_MAX reached; GT_EIO. */
static inline void st_meta_put(st_store_t *st, const char *ns,
                               const void *key, uint32_t key_len,
                               const void *value, uint32_t value_len,
                               st_done_cb cb, void *arg)
{
    st->ops->meta_put(st, ns, key, key_len, value, value_len, cb, arg);
}

/* Deletes the record (ns, key), as durably as st_meta_put().  Borrows.
 * GT_ENOTFOUND: no such record; GT_EINVAL as for st_meta_put(). */
static inline void st_meta_del(st_store_t *st, const char *ns,
                               const void *key, uint32_t key_len,
                               st_done_cb cb, void *arg)
{
    st->ops->meta_del(st, ns, key, key_len, cb, arg);
}

/* Lists the records of req->ns (see st_meta_list_req_t), in key order.
 * Borrows req.  An unknown namespace is an empty one.  GT_EINVAL: bad
 * namespace or lengths. */
static inline void st_meta_list(st_store_t *st, const st_meta_list_req_t *req,
                                st_meta_list_cb cb, void *arg)
{
    st->ops->meta_list(st, req, cb, arg);
}

/* ---- transactions (half messages) ----------------------------------------
 * An appended message with tx_half set is stored durably but is invisible
 * to pop, pull, lookup and stats until committed.  Its append item carries
 * the msg_id and the queue it will land in; queue_offset is 0 (the offset
 * is assigned when it is committed). */

/* ST_PROP_TXCHECK (above): its decimal value (ms) overrides
 * unresolved_for_ms of st_tx_pending() for one half message. */
#define ST_TX_PENDING_MAX 256 /* messages per st_tx_pending() answer */

/* Resolves the unresolved half message msg_id of topic: commit makes it
 * visible as if appended now (delay and FIFO rules apply; cb runs once the
 * copy is durable), rollback discards it.  Borrows strings.  GT_ENOTFOUND:
 * no unresolved half message with that id in that topic (unknown, already
 * resolved, or being committed right now). */
static inline void st_tx_end(st_store_t *st, const char *topic,
                             const char *msg_id, bool commit, st_done_cb cb,
                             void *arg)
{
    st->ops->tx_end(st, topic, msg_id, commit, cb, arg);
}

/* Lists up to max (>= 1; ST_TX_PENDING_MAX at most) unresolved half
 * messages, all topics, unresolved for at least unresolved_for_ms since
 * their append or their last st_tx_checked() (a message's ST_PROP_TXCHECK
 * property overrides unresolved_for_ms), oldest offsets first.  The
 * messages (borrowed) show the real topic and the queue the message will
 * land in; next_offset is 0. */
static inline void st_tx_pending(st_store_t *st, int64_t unresolved_for_ms,
                                 uint32_t max, st_msgs_cb cb, void *arg)
{
    st->ops->tx_pending(st, unresolved_for_ms, max, cb, arg);
}

/* Records one check of a half message: it is not listed again until its
 * unresolved time passes anew.  seen_checks is the message's tx_checks as
 * st_tx_pending() listed it: the check is recorded only if no other was
 * since (else GT_EBUSY and nothing changes), so that of several front ends
 * sharing a store exactly one claims each check; ST_TX_CHECKS_ANY records
 * it regardless.  When this makes max_checks checks (0: no limit) the
 * message is discarded (stats tx_discarded) and cb gets GT_ERANGE.  Check
 * counts are kept in memory (a restart starts them again).  GT_ENOTFOUND
 * as for st_tx_end(). */
#define ST_TX_CHECKS_ANY UINT32_MAX
static inline void st_tx_checked(st_store_t *st, const char *topic,
                                 const char *msg_id, uint32_t seen_checks,
                                 uint32_t max_checks, st_done_cb cb, void *arg)
{
    st->ops->tx_checked(st, topic, msg_id, seen_checks, max_checks, cb, arg);
}

/* ---- recall of delayed messages -------------------------------------------
 * Cancels a message appended with delivery_ts_ms in the future that has not
 * come due yet: it is never delivered (persisted).  Borrows strings.
 * GT_ENOTFOUND: no such pending message (unknown id, or already recalled);
 * GT_EINVAL: too late -- its delivery time has come (it is being or has
 * been delivered), or it was appended without a future delivery time. */
static inline void st_recall(st_store_t *st, const char *topic,
                             const char *msg_id, st_done_cb cb, void *arg)
{
    st->ops->recall(st, topic, msg_id, cb, arg);
}

#endif
