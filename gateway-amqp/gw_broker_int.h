/* The AMQP broker's internals, shared by gw_broker.c (references, store
 * requests, channels, dispatch), gw_vhost.c, gw_queue.c, gw_consume.c,
 * gw_publish.c, gw_exchange.c and gw_meta.c.  Everything here is owned by the gateway's
 * event-loop thread (see gw_broker.c), except gw_broker_t.mu's fields. */
#ifndef GW_BROKER_INT_H
#define GW_BROKER_INT_H

#include <event2/event.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "gw_int.h"
#include "gw_qargs.h"
#include "gw_route.h"
#include "gw_ttl.h"

#define GW_QMAP 1024u                      /* queue hash buckets */
#define GW_POP_BATCH 32u                   /* messages per consumer pop */
#define GW_POP_BYTES ((uint64_t)16 << 20)  /* ... and body bytes (big messages
                                              come a few at a time) */
#define GW_INVISIBLE_MS 60000LL            /* a delivery's invisibility, renewed
                                              while unacked (tests: env
                                              GANTRY_TEST_AMQP_INVISIBLE_MS) */
#define GW_RENEW_DIV 3                     /* renewed a third of it after it
                                              began; the tick looks at a sixth
                                              at most, so the renewal goes out
                                              by half of it and has the other
                                              half to take effect */
#define GW_APPENDS_MAX 1024u               /* per connection in flight */
#define GW_TICK_MS 1000u                   /* idle consumers look again */
#define GW_REC_MAGIC 0xA1u                 /* stored message record */
#define GW_MAX_BODY ((uint64_t)512 << 20)  /* the assembler's bound: RabbitMQ's
                                              largest max_message_size (the
                                              configured one answers 406) */
#define GW_MAX_MESSAGE ((uint64_t)4 << 20) /* default: the store's body limit */
#define GW_PBUF_KEEP ((size_t)1 << 20) /* a channel's publish buffer kept
                                          for the next message, at most */
#define GW_BLOCK_BYTES ((uint64_t)64 << 20) /* appends in flight: block */
#define GW_CHAN_SLOTS 2048u

/* Exchange flags kept in the router. */
#define GW_XF_DURABLE 1u
#define GW_XF_AUTO_DELETE 2u
#define GW_XF_INTERNAL 4u
#define GW_XF_DELAYED 8u /* x-delayed-message (gw_delay.c) */

typedef struct gw_op gw_op_t;
typedef struct gw_vhost gw_vhost_t;
typedef struct gw_queue gw_queue_t;
typedef struct gw_chan gw_chan_t;
typedef struct gw_consumer gw_consumer_t;
typedef struct gw_unacked gw_unacked_t;
typedef struct gw_pub gw_pub_t;
typedef struct gw_txmsg gw_txmsg_t;
typedef struct gw_txack gw_txack_t;
typedef struct gw_delay gw_delay_t; /* gw_delay.c */
typedef struct gw_qlimit gw_qlimit_t;
typedef struct gw_qops gw_qops_t; /* gw_ops.c */

typedef void (*gw_op_fn)(gw_op_t *op);

/* One store request in flight (owned by the op until fn frees it). */
struct gw_op {
    gw_op_t *next;
    gw_broker_t *b;
    gw_op_fn fn;
    gt_err_t err;
};

struct gw_broker {
    struct event_base *base;
    st_store_t *store;
    /* mu guards the posted list and ops; the rest is the loop's. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    gw_op_t *head, *tail;
    long ops;
    struct event *post_ev, *tick;
    bool stopping;
    gw_chan_t *dirty; /* channels with confirms to send after this batch */
    gw_vhost_t *vhosts; /* gw_vhost.c: one namespace per vhost */
    gw_bconn_t *conns;
    gw_trace_hooks_t trace; /* message trace hooks (gw_trace.h; wants NULL: off) */
    struct gw_bridges *bridges; /* exchange <-> topic bridges (gw_bridge.c) */
    int64_t invisible_ms; /* pops' invisibility, renewed at a third */
    uint64_t max_message; /* body bytes per publish (406 beyond) */
    uint64_t inflight_bytes; /* records of appends not answered yet */
    uint64_t block_bytes;    /* over it: publishers are blocked */
    uint64_t mem_mark;       /* resident bytes; over it: blocked (MAX: none) */
    int64_t mem_at;          /* when resident memory was last read */
    int64_t trim_at;         /* when memory was last given back (malloc_trim) */
    bool mem_high;           /* it was over mem_mark */
    bool blocked;
    int64_t consumer_timeout_ms; /* unacked longer: the channel closes, 406 */
    bool loaded;         /* the durable metadata is read back */
    bool meta_partial;   /* a metadata record was not read or not placed: the
                            start-up sweep of store topics is skipped */
    uint32_t requeues;   /* at start: queues whose deliveries are given back */
    void (*ready_fn)(void *arg);
    void *ready_arg;
    gw_delay_t *delay; /* the x-delayed-message timers (gw_delay.c) */
    struct gw_reply_tab *replies; /* direct reply-to consumers (gw_reply.c) */
    struct gw_opsreg *opsr; /* migration operations (gw_ops.c) */
    struct gw_acks *acks;   /* store acks batched per round (gw_acks.c) */
};

/* A vhost: a namespace of its own, as in RabbitMQ (its exchanges, with
 * its own default and amq.* ones, bindings and queues; exclusive owners
 * and server-named queues are per vhost through the queue map).  Created
 * for each vhost a connection opens or the durable metadata names; lives
 * as long as the broker (gw_vhost.c). */
struct gw_vhost {
    gw_vhost_t *next;
    gw_broker_t *b;
    uint8_t nlen;
    char name[256]; /* NUL-terminated */
    gw_router_t *router;
    gw_queue_t *qmap[GW_QMAP];
};

/* A queue of vhost vh: the map holds one reference while it exists. */
struct gw_queue {
    int refs;
    bool gone;   /* deleted: out of the map */
    bool ready;  /* its store topic and group exist */
    gw_broker_t *b;
    gw_vhost_t *vh;
    gw_queue_t *hnext;
    uint8_t nlen;
    char name[256];
    char id[40]; /* store topic and group name */
    uint8_t traced; /* gw_trace_queue: 0 not asked yet, 1 traced, 2 not */
    bool durable, exclusive, auto_delete;
    gw_qargs_t args;   /* x-* arguments as declared (gw_qargs.h) */
    gw_bconn_t *owner; /* exclusive queues: the declaring connection */
    gw_qlimit_t *lim;  /* length limits and ready counts, or NULL (gw_maxlen.h) */
    gw_consumer_t *consumers;
    uint32_t nconsumers;
    bool had_consumer, excl_consumer;
    struct event *kick_ev;
    uint32_t requeuing; /* requeues (change_invisible 0) not answered yet */
    gw_consumer_t *sac_active, *sac_drain; /* x-single-active-consumer (gw_sac.c):
                                              not references, see gw_sac.h */
    gw_qttl_t ttl; /* gw_ttl.c */
    gw_qops_t *ops; /* pause, rate limit, retry, counters (gw_ops.c) */
    uint32_t ack_slot; /* its acks waiting for the round's batch (gw_acks.c): index + 1 */
};

struct gw_bconn {
    int refs;
    gw_broker_t *b;
    gw_vhost_t *vh; /* the vhost connection.open named */
    gw_conn_t *c; /* NULL once the connection is gone */
    gw_bconn_t *prev, *next;
    uint32_t appends;    /* in flight */
    uint32_t commit_waits; /* channels waiting for appends to answer tx.commit */
    uint16_t max_ch;       /* highest channel id opened */
    bool append_stall;   /* stalled for GW_APPENDS_MAX */
    bool publisher;      /* has published: blocked with the others */
    bool block_stall;    /* stalled by connection.blocked */
    uint8_t *held;       /* a method frame waiting for the appends */
    size_t held_len;
    uint16_t held_ch;
    gw_chan_t *ch[GW_CHAN_SLOTS];
};

/* A publish awaiting its confirm (confirm mode). */
struct gw_pub {
    gw_pub_t *next;
    uint64_t seq;
    uint32_t remaining; /* appends not answered */
    bool failed;
};

/* A publish inside a transaction, routed and appended at tx.commit. */
struct gw_txmsg {
    gw_txmsg_t *next;
    bool mandatory;
    uint8_t prio;
    uint8_t exlen, rklen;
    char ex[256], rk[256];
    uint8_t *pbuf;
    size_t plen, body_off, props_off, props_len, hdr_off, hdr_len;
};

/* An ack / nack / reject inside a transaction, applied at tx.commit. */
struct gw_txack {
    gw_txack_t *next;
    uint64_t tag;
    bool multiple;
    int how; /* gw_settle_t */
};

struct gw_unacked {
    gw_unacked_t *prev, *next;
    uint64_t tag;
    gw_queue_t *q;      /* ref */
    gw_consumer_t *cs;  /* ref; NULL for basic.get */
    char handle[ST_HANDLE_MAX];
    uint64_t blen;      /* body bytes (length limits count them when requeued) */
    int64_t renew_at;   /* monotonic ms: extend the invisibility then */
    int64_t sent_at;    /* monotonic ms: delivered (consumer_timeout) */
    bool renewing;      /* a change_invisible is in flight (it owns the
                           handle: a settle waits for its answer) */
    bool detached;      /* settled while renewing: out of the channel's
                           list, `how` runs when the renewal answers */
    int how;            /* gw_settle_t */
    uint32_t attempt;   /* the store's delivery attempt (1: first) */
    bool out_exp;       /* counted in q->ttl.out_exp */
    uint8_t *rec;       /* the record, kept when the queue has a DLX */
    size_t rec_len;
    char *trace_ids;    /* traced queue: "msg_id\0message-id\0" (gw_trace.h) */
};

struct gw_chan {
    int refs;
    bool closed;
    const char *settle_verb; /* "nack" / "reject" while one settles (gw_trace.h) */
    gw_bconn_t *bc; /* ref */
    uint16_t id;
    gw_asm_t asm_;
    /* the publish being assembled */
    bool pub_on, mandatory;
    uint8_t prio; /* the message's priority property (0 when absent) */
    uint8_t exlen, rklen;
    char ex[256], rk[256];
    uint8_t *pbuf;
    size_t plen, pcap, body_off, props_off, props_len, hdr_off, hdr_len;
    /* confirms */
    bool confirm, tx, dirty, commit_wait;
    gw_txmsg_t *txq, *txq_tail;
    gw_txack_t *txa, *txa_tail;
    gw_chan_t *dirty_next; /* in b->dirty (holds a ref) */
    uint64_t next_seq;
    gw_pub_t *pubs, *pubs_tail;
    /* deliveries */
    uint64_t next_tag;
    gw_unacked_t *ua, *ua_tail;
    uint32_t unacked, pending; /* pending: messages asked by pops in flight */
    uint16_t prefetch, prefetch_global;
    gw_consumer_t *consumers;
    bool has_last;
    uint8_t last_len;
    char last_q[256];
    struct gw_reply *reply; /* its amq.rabbitmq.reply-to consumer (gw_reply.c) */
    bool fast_reply;        /* the publish asks reply_to amq.rabbitmq.reply-to */
};

struct gw_consumer {
    int refs;
    bool gone;
    gw_chan_t *ch;  /* ref */
    gw_queue_t *q;  /* ref */
    gw_consumer_t *qprev, *qnext, *cnext;
    uint8_t tlen;
    char tag[256];
    bool no_ack, exclusive, rekick;
    bool starved; /* found no credit on a channel with a global prefetch */
    uint16_t prefetch;
    uint32_t unacked, popping; /* popping: messages asked by the pop in flight */
};

#define GW_NS_QUEUE "amqp.queue"
#define GW_NS_EXCHANGE "amqp.exchange"
#define GW_NS_BINDING "amqp.binding"
#define GW_META_KEY 1024u

#define CH_ERR(ch, code, mid, ...)                                                             \
    gw_conn_channel_error((ch)->bc->c, (ch)->id, (code), (mid), __VA_ARGS__)

/* The vhost a channel's connection opened, for error texts. */
const char *gw_chan_vhost(const gw_chan_t *ch);
#define GW_VHOST(ch) gw_chan_vhost(ch)

/* How a delivery is settled. */
typedef enum { GW_SETTLE_ACK, GW_SETTLE_REQUEUE, GW_SETTLE_DROP } gw_settle_t;

/* ---- gw_broker.c: references, store requests, channel helpers */

void gw_queue_ref(gw_queue_t *q);
void gw_queue_unref(gw_queue_t *q);
void gw_bconn_ref(gw_bconn_t *bc);
void gw_bconn_unref(gw_bconn_t *bc);
void gw_chan_ref(gw_chan_t *ch);
void gw_chan_unref(gw_chan_t *ch);
void gw_consumer_ref(gw_consumer_t *cs);
void gw_consumer_unref(gw_consumer_t *cs);
bool gw_chan_live(const gw_chan_t *ch);
void gw_chan_reply(gw_chan_t *ch, const gw_method_t *m);
void *gw_op_new(gw_broker_t *b, size_t size, gw_op_fn fn);
void gw_op_post(gw_op_t *op);
void gw_op_free_fn(gw_op_t *op);
void gw_op_done_cb(void *arg, gt_err_t err);
void gw_msg_ack(gw_broker_t *b, gw_queue_t *q, const char *handle); /* batched: gw_acks.h */
void gw_msg_release(gw_broker_t *b, const gw_queue_t *q, const char *handle);
/* blen: the message's body bytes (gw_maxlen counts it ready again). */
void gw_msg_requeue(gw_broker_t *b, gw_queue_t *q, const char *handle, uint64_t blen);
bool gw_chan_queue_name(gw_chan_t *ch, uint32_t mid, gw_str_t in, gw_str_t *out);
void gw_chan_set_last(gw_chan_t *ch, gw_str_t name);
gw_queue_t *gw_queue_for(gw_chan_t *ch, uint32_t mid, gw_str_t name);
void gw_chan_dispatch(gw_chan_t *ch, const gw_method_t *m, const gw_frame_t *fr);
/* The connection's permission perm (GW_PERM_*) on a queue or exchange;
 * false after closing the channel with RabbitMQ's 403. */
bool gw_chan_allowed(gw_chan_t *ch, uint32_t mid, unsigned perm, gw_res_kind_t kind,
                     gw_str_t name);

/* ---- gw_meta.c: durable metadata */

size_t gw_meta_put_s8(uint8_t *p, gw_str_t s);
/* Record keys begin with the vhost's name (u8 length + bytes). */
size_t gw_meta_name_key(uint8_t *k, const gw_vhost_t *vh, gw_str_t name);
/* Whether a binding's key fits GW_META_KEY (else it is not kept). */
bool gw_meta_binding_fits(const gw_vhost_t *vh, gw_str_t src, gw_str_t dest, gw_str_t key);
size_t gw_meta_binding_key(uint8_t *k, const gw_vhost_t *vh, gw_str_t src, gw_dest_kind_t kind,
                           gw_str_t dest, gw_str_t key, gw_table_t args);
/* Writes (or with del, deletes) a record; with ch, replies okid on it
 * once durable (the connection stalls until then).  false: no memory. */
bool gw_meta_write(gw_broker_t *b, gw_chan_t *ch, uint32_t mid, gw_method_id_t okid,
                   bool nowait, const char *ns, const uint8_t *key, size_t klen,
                   const uint8_t *value, size_t vlen, bool del);
/* ctx: the gw_vhost_t of the binding. */
void gw_meta_binding_forget(void *ctx, const gw_binding_t *bd);
bool gw_exchange_durable(gw_vhost_t *vh, gw_str_t name);
/* The durable queue record: key into k; the value malloc'd (NULL: no memory). */
uint8_t *gw_meta_queue_record(const gw_queue_t *q, uint8_t *k, size_t *kl, size_t *vl);
/* Reads the durable metadata back; the broker is ready after it. */
bool gw_meta_load_start(gw_broker_t *b);
/* One of the start's steps (b->requeues) is done: ready after the last. */
void gw_meta_ready_step(gw_broker_t *b);

/* ---- gw_vhost.c: vhosts */

/* The vhost called name, created (with RabbitMQ's predeclared exchanges)
 * when missing and create is set; NULL when missing or out of memory. */
gw_vhost_t *gw_vhost_get(gw_broker_t *b, gw_str_t name, bool create);
/* Frees every vhost (their queues are marked gone and unreferenced). */
void gw_vhosts_free(gw_broker_t *b);

/* ---- gw_queue.c: queues */

gw_queue_t *gw_queue_find(gw_vhost_t *vh, gw_str_t name);
void gw_random_bytes(void *p, size_t n);
size_t gw_gen_name(const char *prefix, char *out, size_t cap);
gw_queue_t *gw_queue_add(gw_vhost_t *vh, gw_str_t name, const char *id);
void gw_queue_drop(gw_queue_t *q);
const char *gw_yn(bool v);
void gw_on_queue_declare(gw_chan_t *ch, const gw_method_t *m);
void gw_on_queue_delete(gw_chan_t *ch, const gw_method_t *m);
void gw_on_queue_purge(gw_chan_t *ch, const gw_method_t *m);

/* ---- gw_consume.c: deliveries and acks */

void gw_ua_unlink(gw_chan_t *ch, gw_unacked_t *u);
void gw_ua_free(gw_unacked_t *u);
void gw_consumer_pump(gw_consumer_t *cs);
void gw_queue_kick(gw_queue_t *q);
/* Whether a consumer of q could take a message now. */
bool gw_queue_has_credit(const gw_queue_t *q);
void gw_chan_pump(gw_chan_t *ch);
void gw_consumer_remove(gw_consumer_t *cs, bool notify);
void gw_on_basic_qos(gw_chan_t *ch, const gw_method_t *m);
void gw_on_basic_consume(gw_chan_t *ch, const gw_method_t *m);
void gw_on_basic_cancel(gw_chan_t *ch, const gw_method_t *m);
void gw_on_basic_get(gw_chan_t *ch, const gw_method_t *m);
void gw_settle_one(gw_chan_t *ch, gw_unacked_t *u, gw_settle_t how);
/* The store side of settling u (ack, requeue, or dead-letter: a drop of a
 * queue with a DLX, a requeue past x-delivery-limit). */
void gw_ua_settle_store(gw_broker_t *b, gw_unacked_t *u, gw_settle_t how);
/* Extends the invisibility of the channel's unacked deliveries due for it
 * (so that only a crash lets them reappear, after at most invisible_ms). */
void gw_chan_renew(gw_chan_t *ch, int64_t now_ms);
int64_t gw_now_ms(void);

/* gw_flow.c: flow control (connection.blocked / unblocked). */
/* After inflight_bytes changed by an append of `appended` bytes (0: an
 * answer, or the tick): blocks or unblocks the publishers. */
void gw_flow_check(gw_broker_t *b, uint64_t appended);
/* A connection that publishes for the first time while blocked. */
void gw_flow_block_new(gw_bconn_t *bc);

void gw_on_basic_ack(gw_chan_t *ch, const gw_method_t *m);
void gw_on_basic_nack(gw_chan_t *ch, const gw_method_t *m);
void gw_on_basic_reject(gw_chan_t *ch, const gw_method_t *m);
void gw_on_basic_recover(gw_chan_t *ch, const gw_method_t *m);

/* ---- gw_ttl.c: x-message-ttl, expiration, x-expires (see gw_ttl.h) */

int64_t gw_wall_ms(void);
/* Sets q's TTLs (x-message-ttl -1: none, x-expires 0: none) and makes
 * its timers; false: no memory.  gw_ttl_from_args: from q->args (gw_qargs
 * validated them). */
bool gw_ttl_init(gw_queue_t *q, int64_t msg_ttl, int64_t expires);
bool gw_ttl_from_args(gw_queue_t *q);
void gw_ttl_loaded(gw_queue_t *q); /* a durable queue read back at start */
void gw_ttl_stop(gw_queue_t *q);   /* deleted: timers off */
void gw_ttl_free(gw_queue_t *q);   /* the last reference went */
/* The assembled publish's expiration is valid, else 406 (false). */
bool gw_ttl_publish_check(gw_chan_t *ch);
/* A stored record's expiration in ms; -1: none (or not a record). */
int64_t gw_ttl_rec_expiration(const uint8_t *rec, size_t len);
/* Whether a message with expiration exp (-1: none) may be appended to q:
 * false when its TTL is 0 and no consumer of q can take it now (it is
 * expired on the spot).  Borrows rec. */
bool gw_ttl_route_keep(gw_queue_t *q, int64_t exp, const uint8_t *rec, size_t len);
void gw_ttl_appended(gw_queue_t *q, int64_t exp); /* the append answered */
void gw_ttl_requeued(gw_queue_t *q);              /* a delivery came back */
/* Whether a popped record (stored at store_ts, wall ms) is expired at now
 * for a consumer (consumer) or for basic.get / the head timer. */
bool gw_ttl_expired(const gw_queue_t *q, int64_t store_ts, const uint8_t *rec, size_t len,
                    bool consumer, int64_t now);
/* Removes a popped expired message (dead-lettered or dropped). */
void gw_ttl_expire_popped(gw_queue_t *q, const char *handle, const uint8_t *rec, size_t len,
                          const char *msg_id, uint32_t attempt);
/* Removes the expired messages at q's head, then calls fn(arg) (fn may be
 * NULL); at once when q cannot hold expiring messages. */
void gw_ttl_sweep(gw_queue_t *q, void (*fn)(void *arg), void *arg);
bool gw_ttl_busy(const gw_queue_t *q); /* a sweep holds the head */
void gw_ttl_after_sweep(gw_queue_t *q, void (*fn)(void *arg), void *arg);
/* q was used (declare, basic.get, consumers come or go): x-expires'
 * timer starts anew, or stops while q has consumers. */
void gw_ttl_touch(gw_queue_t *q);

/* ---- gw_publish.c: publishing, confirms, tx */

void gw_confirms_flush(gw_chan_t *ch);
void gw_bconn_appends_done(gw_bconn_t *bc);
void gw_publish_done(gw_chan_t *ch);
/* Appends the channel's assembled record to topic as a store timer due
 * at due_ms (wall clock), with property "vhost" (and "via": the exchange
 * to route through when due, when not the record's); pub as for a
 * publish. */
void gw_publish_timer(gw_chan_t *ch, gw_pub_t *pub, int64_t due_ms, const char *topic,
                      const char *vhost, const char *via);
void gw_publish_method(gw_chan_t *ch, const gw_method_t *m);
void gw_publish_header(gw_chan_t *ch, const gw_content_header_t *h);
void gw_publish_body(gw_chan_t *ch, gw_bytes_t body);
void gw_on_tx_select(gw_chan_t *ch, const gw_method_t *m);
void gw_on_tx_commit(gw_chan_t *ch, const gw_method_t *m);
void gw_on_tx_rollback(gw_chan_t *ch, const gw_method_t *m);
void gw_on_confirm_select(gw_chan_t *ch, const gw_method_t *m);

/* ---- gw_exchange.c: exchanges and bindings */

void gw_on_exchange_declare(gw_chan_t *ch, const gw_method_t *m);
void gw_on_exchange_delete(gw_chan_t *ch, const gw_method_t *m);
void gw_on_queue_bind(gw_chan_t *ch, const gw_method_t *m);
void gw_on_exchange_bind(gw_chan_t *ch, const gw_method_t *m);

#endif
