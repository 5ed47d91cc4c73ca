/* The AMQP gateway's broker: queues, publishing and consuming on the
 * store (see docs/amqp.md, "Storage mapping").
 *
 * Threads.  Everything here runs on the gateway's event-loop thread.  The
 * store answers on the proxy's executor threads; each store request is a
 * gw_op_t whose store callback copies what it needs into the op and posts
 * it (gw_op_post: a mutex-guarded list plus event_active on post_ev); the
 * loop then runs op->fn.  b->ops counts the requests not run yet, so
 * gw_broker_free can wait for them after the loop has stopped.
 *
 * Lifetimes.  Queues, connections' broker state (gw_bconn_t), channels
 * and consumers are reference-counted: a store request holds what its
 * answer will touch, and an object that was closed or deleted is freed by
 * its last unref.  The links are consumer -> channel -> bconn and
 * consumer / unacked delivery -> queue.
 *
 * Ordering.  A channel's methods run in order: a method that needs the
 * store's answer before its reply (declare, get, purge, delete...) stalls
 * the whole connection (gw_conn_stall) until the answer; one that must see
 * earlier publishes (a get after a publish) is kept ("held") until the
 * connection's appends have completed.  Publishes do not stall: up to
 * GW_APPENDS_MAX appends per connection are in flight, in order. */
#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "gt_log.h"
#include "gw_int.h"
#include "gw_route.h"

#define GW_QMAP 1024u                      /* queue hash buckets */
#define GW_POP_BATCH 32u                   /* messages per consumer pop */
#define GW_INVISIBLE_MS (30LL * 60 * 1000) /* RabbitMQ's consumer_timeout */
#define GW_REQUEUE_KICK_MS 3u              /* a requeued message is visible */
#define GW_APPENDS_MAX 1024u               /* per connection in flight */
#define GW_TICK_MS 1000u                   /* idle consumers look again */
#define GW_REC_MAGIC 0xA1u                 /* stored message record */
#define GW_MAX_BODY ((uint64_t)128 << 20)  /* RabbitMQ's max_message_size */
#define GW_CHAN_SLOTS 2048u

/* Exchange flags kept in the router. */
#define GW_XF_DURABLE 1u
#define GW_XF_AUTO_DELETE 2u
#define GW_XF_INTERNAL 4u

typedef struct gw_op gw_op_t;
typedef struct gw_queue gw_queue_t;
typedef struct gw_chan gw_chan_t;
typedef struct gw_consumer gw_consumer_t;
typedef struct gw_unacked gw_unacked_t;
typedef struct gw_pub gw_pub_t;
typedef struct gw_txmsg gw_txmsg_t;
typedef struct gw_txack gw_txack_t;

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
    gw_queue_t *qmap[GW_QMAP];
    gw_bconn_t *conns;
    gw_router_t *router; /* exchanges and bindings of vhost "/" */
    bool loaded;         /* the durable metadata is read back */
    void (*ready_fn)(void *arg);
    void *ready_arg;
};

/* A queue (vhost "/"): the map holds one reference while it exists. */
struct gw_queue {
    int refs;
    bool gone;   /* deleted: out of the map */
    bool ready;  /* its store topic and group exist */
    gw_broker_t *b;
    gw_queue_t *hnext;
    uint8_t nlen;
    char name[256];
    char id[40]; /* store topic and group name */
    bool durable, exclusive, auto_delete;
    gw_bconn_t *owner; /* exclusive queues: the declaring connection */
    gw_consumer_t *consumers;
    uint32_t nconsumers;
    bool had_consumer, excl_consumer;
    struct event *kick_ev;
};

struct gw_bconn {
    int refs;
    gw_broker_t *b;
    gw_conn_t *c; /* NULL once the connection is gone */
    gw_bconn_t *prev, *next;
    uint32_t appends;    /* in flight */
    uint32_t commit_waits; /* channels waiting for appends to answer tx.commit */
    bool append_stall;   /* stalled for GW_APPENDS_MAX */
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
    int how; /* settle_t */
};

struct gw_unacked {
    gw_unacked_t *prev, *next;
    uint64_t tag;
    gw_queue_t *q;      /* ref */
    gw_consumer_t *cs;  /* ref; NULL for basic.get */
    char handle[ST_HANDLE_MAX];
};

struct gw_chan {
    int refs;
    bool closed;
    gw_bconn_t *bc; /* ref */
    uint16_t id;
    gw_asm_t asm_;
    /* the publish being assembled */
    bool pub_on, mandatory;
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

static void queue_kick(gw_queue_t *q);
static void bc_appends_done(gw_bconn_t *bc);
static void chan_dispatch(gw_chan_t *ch, const gw_method_t *m, const gw_frame_t *fr);

/* ---- references -------------------------------------------------------- */

static void q_ref(gw_queue_t *q) { q->refs++; }

static void q_unref(gw_queue_t *q)
{
    if (q != NULL && --q->refs == 0) {
        if (q->kick_ev != NULL)
            event_free(q->kick_ev);
        free(q);
    }
}

static void bc_ref(gw_bconn_t *bc) { bc->refs++; }

static void bc_unref(gw_bconn_t *bc)
{
    if (bc != NULL && --bc->refs == 0) {
        free(bc->held);
        free(bc);
    }
}

static void ch_ref(gw_chan_t *ch) { ch->refs++; }

static void ch_unref(gw_chan_t *ch)
{
    if (ch != NULL && --ch->refs == 0) {
        while (ch->pubs != NULL) {
            gw_pub_t *p = ch->pubs;
            ch->pubs = p->next;
            free(p);
        }
        while (ch->txq != NULL) {
            gw_txmsg_t *t = ch->txq;
            ch->txq = t->next;
            free(t->pbuf);
            free(t);
        }
        while (ch->txa != NULL) {
            gw_txack_t *t = ch->txa;
            ch->txa = t->next;
            free(t);
        }
        free(ch->pbuf);
        bc_unref(ch->bc);
        free(ch);
    }
}

static void cs_ref(gw_consumer_t *cs) { cs->refs++; }

static void cs_unref(gw_consumer_t *cs)
{
    if (cs != NULL && --cs->refs == 0) {
        ch_unref(cs->ch);
        q_unref(cs->q);
        free(cs);
    }
}

/* The channel can take deliveries and replies. */
static bool ch_live(const gw_chan_t *ch)
{
    return !ch->closed && ch->bc->c != NULL && gw_conn_running(ch->bc->c);
}

#define CH_ERR(ch, code, mid, ...)                                                             \
    gw_conn_channel_error((ch)->bc->c, (ch)->id, (code), (mid), __VA_ARGS__)

static void reply(gw_chan_t *ch, const gw_method_t *m)
{
    if (ch_live(ch))
        gw_conn_send_method(ch->bc->c, ch->id, m);
}

/* ---- store requests ---------------------------------------------------- */

static void *op_new(gw_broker_t *b, size_t size, gw_op_fn fn)
{
    gw_op_t *op = calloc(1, size);

    if (op == NULL)
        return NULL;
    op->b = b;
    op->fn = fn;
    pthread_mutex_lock(&b->mu);
    b->ops++;
    pthread_mutex_unlock(&b->mu);
    return op;
}

/* From any thread: the op's answer is in; run its fn on the loop. */
static void op_post(gw_op_t *op)
{
    gw_broker_t *b = op->b;

    pthread_mutex_lock(&b->mu);
    op->next = NULL;
    if (b->tail != NULL)
        b->tail->next = op;
    else
        b->head = op;
    b->tail = op;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    event_active(b->post_ev, 0, 0);
}

static void ops_run(gw_broker_t *b, gw_op_t *list)
{
    while (list != NULL) {
        gw_op_t *op = list;
        list = op->next;
        op->fn(op); /* frees op */
        pthread_mutex_lock(&b->mu);
        b->ops--;
        pthread_mutex_unlock(&b->mu);
    }
}

static void confirms_flush(gw_chan_t *ch);

/* Confirms go out once per batch of store answers, so that appends
 * answered together are acked with one multiple ack. */
static void dirty_flush(gw_broker_t *b)
{
    while (b->dirty != NULL) {
        gw_chan_t *ch = b->dirty;
        b->dirty = ch->dirty_next;
        ch->dirty = false;
        if (!ch->closed)
            confirms_flush(ch);
        ch_unref(ch);
    }
}

static void post_cb(evutil_socket_t fd, short what, void *arg)
{
    gw_broker_t *b = arg;
    gw_op_t *list;

    (void)fd;
    (void)what;
    pthread_mutex_lock(&b->mu);
    list = b->head;
    b->head = b->tail = NULL;
    pthread_mutex_unlock(&b->mu);
    ops_run(b, list);
    dirty_flush(b);
}

/* An op whose answer only needs freeing (acks, deletes...). */
static void op_free_fn(gw_op_t *op) { free(op); }

static void op_done_cb(void *arg, gt_err_t err)
{
    gw_op_t *op = arg;

    op->err = err;
    op_post(op);
}

static void fire_ack(gw_broker_t *b, const gw_queue_t *q, const char *handle)
{
    gw_op_t *op = op_new(b, sizeof(*op), op_free_fn);

    if (op != NULL)
        st_ack(b->store, q->id, q->id, handle, op_done_cb, op);
}

static void fire_release(gw_broker_t *b, const gw_queue_t *q, const char *handle)
{
    gw_op_t *op = op_new(b, sizeof(*op), op_free_fn);

    if (op != NULL)
        st_release(b->store, q->id, q->id, handle, op_done_cb, op);
}

/* Requeue: visible again almost at once, counted as an attempt (so the
 * next delivery says redelivered); the queue looks again shortly. */
typedef struct {
    gw_op_t op;
    gw_queue_t *q;
} requeue_op_t;

static void requeue_fn(gw_op_t *op)
{
    requeue_op_t *r = (requeue_op_t *)op;
    gw_queue_t *q = r->q;

    if (!q->gone && !q->b->stopping && q->kick_ev != NULL) {
        struct timeval tv = {0, GW_REQUEUE_KICK_MS * 1000};
        event_add(q->kick_ev, &tv);
    }
    q_unref(q);
    free(r);
}

static void requeue_cb(void *arg, gt_err_t err, const char *handle)
{
    requeue_op_t *r = arg;

    (void)handle;
    r->op.err = err;
    op_post(&r->op);
}

static void fire_requeue(gw_broker_t *b, gw_queue_t *q, const char *handle)
{
    requeue_op_t *r = op_new(b, sizeof(*r), requeue_fn);

    if (r == NULL)
        return;
    q_ref(q);
    r->q = q;
    st_change_invisible(b->store, q->id, q->id, handle, 1, requeue_cb, r);
}

/* ---- durable metadata (st_meta_*) -------------------------------------- *
 * Durable queues, exchanges and bindings are records in the store's
 * metadata space, so that they survive a restart (and, with a remote store,
 * are shared).  Namespaces and layouts:
 *   amqp.queue     key: vhost (u8 len + bytes) + name;
 *                  value: 1, flags (1 durable, 2 auto-delete), store id (u8 len
 *                  + bytes), arguments table (u32 len + bytes)
 *   amqp.exchange  key: vhost + name; value: 1, type, flags, alternate
 *                  exchange (u8 len + bytes)
 *   amqp.binding   key: vhost + source (u8 + bytes) + kind (0 queue, 1
 *                  exchange) + destination (u8 + bytes) + routing key (u8 +
 *                  bytes) + FNV-1a 64 of the arguments as sent;
 *                  value: the arguments table
 * A binding is durable when its source and destination are. */
#define GW_NS_QUEUE "amqp.queue"
#define GW_NS_EXCHANGE "amqp.exchange"
#define GW_NS_BINDING "amqp.binding"
#define GW_META_KEY 1024u

static size_t put_s8(uint8_t *p, gw_str_t s)
{
    p[0] = (uint8_t)s.len;
    memcpy(p + 1, s.ptr, s.len);
    return 1 + s.len;
}

static size_t name_key(uint8_t *k, gw_str_t name)
{
    size_t n = put_s8(k, gw_str("/"));

    memcpy(k + n, name.ptr, name.len);
    return n + name.len;
}

static size_t binding_key(uint8_t *k, gw_str_t src, gw_dest_kind_t kind, gw_str_t dest,
                          gw_str_t key, gw_table_t args)
{
    uint64_t h = 1469598103934665603ull;
    size_t n = put_s8(k, gw_str("/"));

    n += put_s8(k + n, src);
    k[n++] = kind == GW_DEST_EXCHANGE ? 1 : 0;
    n += put_s8(k + n, dest);
    n += put_s8(k + n, key);
    for (size_t i = 0; i < args.len; i++)
        h = (h ^ args.ptr[i]) * 1099511628211ull;
    for (int i = 7; i >= 0; i--)
        k[n++] = (uint8_t)(h >> (i * 8));
    return n;
}

/* A metadata write whose answer frees it, or replies (okid) on its
 * channel once durable, the connection stalled until then. */
typedef struct {
    gw_op_t op;
    gw_chan_t *ch; /* ref, or NULL: nobody waits */
    gw_method_id_t okid;
    uint32_t mid;
    bool nowait;
} mop_t;

static void mop_fn(gw_op_t *op)
{
    mop_t *o = (mop_t *)op;

    if (op->err != GT_OK && op->err != GT_ENOTFOUND)
        GT_LOG(WARN, "amqp", "metadata write failed: %s", gt_err_str(op->err));
    if (o->ch != NULL) {
        if (op->err != GT_OK && ch_live(o->ch)) {
            CH_ERR(o->ch, GW_INTERNAL_ERROR, o->mid, "cannot store the declaration: %s",
                   gt_err_str(op->err));
        } else if (!o->nowait) {
            gw_method_t r = {.id = o->okid};
            reply(o->ch, &r);
        }
        if (o->ch->bc->c != NULL)
            gw_conn_unstall(o->ch->bc->c);
        ch_unref(o->ch);
    }
    free(o);
}

/* ch NULL: fire and forget; else reply okid when durable. */
static mop_t *mop_new(gw_broker_t *b, gw_chan_t *ch, uint32_t mid, gw_method_id_t okid,
                      bool nowait)
{
    mop_t *o = op_new(b, sizeof(*o), mop_fn);

    if (o == NULL)
        return NULL;
    if (ch != NULL) {
        ch_ref(ch);
        o->ch = ch;
        gw_conn_stall(ch->bc->c);
    }
    o->okid = okid;
    o->mid = mid;
    o->nowait = nowait;
    return o;
}

/* Writes (value != NULL) or deletes a record; with ch, replies okid on
 * it when done.  false: out of memory (nothing was sent). */
static bool meta_write(gw_broker_t *b, gw_chan_t *ch, uint32_t mid, gw_method_id_t okid,
                       bool nowait, const char *ns, const uint8_t *key, size_t klen,
                       const uint8_t *value, size_t vlen, bool del)
{
    mop_t *o = mop_new(b, ch, mid, okid, nowait);

    if (o == NULL)
        return false;
    if (del)
        st_meta_del(b->store, ns, key, (uint32_t)klen, op_done_cb, o);
    else
        st_meta_put(b->store, ns, key, (uint32_t)klen, value, (uint32_t)vlen, op_done_cb, o);
    return true;
}

static void binding_forget(void *ctx, const gw_binding_t *bd)
{
    gw_broker_t *b = ctx;
    uint8_t k[GW_META_KEY + 64];
    size_t n;

    if (bd->source.len + bd->dest.len + bd->key.len + 16 > GW_META_KEY)
        return;
    n = binding_key(k, bd->source, bd->dest_kind, bd->dest, bd->key, bd->args);
    meta_write(b, NULL, 0, 0, true, GW_NS_BINDING, k, n, NULL, 0, true);
}

static bool exchange_durable(gw_broker_t *b, gw_str_t name)
{
    uint32_t f = 0;

    return gw_route_exchange_get(b->router, name, NULL, &f) && (f & GW_XF_DURABLE);
}

/* The queue's record: key and value into k (GW_META_KEY) and v (64). */
static void queue_record(const gw_queue_t *q, uint8_t *k, size_t *kl, uint8_t *v, size_t *vl)
{
    size_t n = 0;

    *kl = name_key(k, (gw_str_t){q->name, q->nlen});
    v[n++] = 1;
    v[n++] = (uint8_t)((q->durable ? 1 : 0) | (q->auto_delete ? 2 : 0));
    n += put_s8(v + n, gw_str(q->id));
    memset(v + n, 0, 4); /* arguments: none kept yet */
    *vl = n + 4;
}

/* ---- queues ------------------------------------------------------------ */

static uint32_t name_hash(const char *p, size_t n)
{
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)p[i]) * 16777619u;
    return h;
}

static gw_queue_t *queue_find(gw_broker_t *b, gw_str_t name)
{
    gw_queue_t *q = b->qmap[name_hash(name.ptr, name.len) % GW_QMAP];

    for (; q != NULL; q = q->hnext)
        if (q->nlen == name.len && memcmp(q->name, name.ptr, name.len) == 0)
            return q;
    return NULL;
}

static void random_bytes(void *p, size_t n)
{
    uint8_t *o = p;

    while (n > 0) {
        ssize_t r = getrandom(o, n, 0);
        if (r <= 0) {
            /* Never expected; fall back on the clock. */
            for (size_t i = 0; i < n; i++)
                o[i] = (uint8_t)(rand() ^ (int)clock());
            return;
        }
        o += r;
        n -= (size_t)r;
    }
}

/* RabbitMQ's generated names: prefix + base64url (no padding) of 16
 * random bytes. */
static size_t gen_name(const char *prefix, char *out, size_t cap)
{
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint8_t r[18];
    size_t n = (size_t)snprintf(out, cap, "%s", prefix);

    random_bytes(r, 16);
    r[16] = r[17] = 0;
    for (size_t i = 0; i < 16 && n + 4 < cap; i += 3) {
        uint32_t v = (uint32_t)r[i] << 16 | (uint32_t)r[i + 1] << 8 | r[i + 2];
        out[n++] = b64[(v >> 18) & 63];
        out[n++] = b64[(v >> 12) & 63];
        if (i + 1 < 16)
            out[n++] = b64[(v >> 6) & 63];
        if (i + 2 < 16)
            out[n++] = b64[v & 63];
    }
    out[n] = '\0';
    return n;
}

static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    queue_kick(arg);
}

static gw_queue_t *queue_add(gw_broker_t *b, gw_str_t name, const char *id)
{
    gw_queue_t *q = calloc(1, sizeof(*q));
    uint8_t r[8];
    uint32_t h;

    if (q == NULL)
        return NULL;
    q->kick_ev = evtimer_new(b->base, kick_cb, q);
    if (q->kick_ev == NULL) {
        free(q);
        return NULL;
    }
    q->refs = 1;
    q->b = b;
    q->nlen = (uint8_t)name.len;
    memcpy(q->name, name.ptr, name.len);
    random_bytes(r, sizeof(r));
    if (id != NULL)
        snprintf(q->id, sizeof(q->id), "%s", id);
    else
        snprintf(q->id, sizeof(q->id), "AMQP-q-%02x%02x%02x%02x%02x%02x%02x%02x", r[0], r[1],
                 r[2], r[3], r[4], r[5], r[6], r[7]);
    h = name_hash(name.ptr, name.len) % GW_QMAP;
    q->hnext = b->qmap[h];
    b->qmap[h] = q;
    return q;
}

static void consumer_remove(gw_consumer_t *cs, bool notify);

/* Deletes q: out of the map, its consumers cancelled (basic.cancel to
 * clients that take it), its store topic and group deleted. */
static void queue_drop(gw_queue_t *q)
{
    gw_broker_t *b = q->b;
    gw_queue_t **pp = &b->qmap[name_hash(q->name, q->nlen) % GW_QMAP];
    gw_op_t *op;

    if (q->gone)
        return;
    while (*pp != NULL && *pp != q)
        pp = &(*pp)->hnext;
    if (*pp == q)
        *pp = q->hnext;
    q->gone = true;
    event_del(q->kick_ev);
    while (q->consumers != NULL)
        consumer_remove(q->consumers, true);
    gw_route_unbind_queue(b->router, (gw_str_t){q->name, q->nlen}, binding_forget, b);
    if (q->durable && !q->exclusive && !b->stopping) {
        uint8_t k[GW_META_KEY];
        size_t kl = name_key(k, (gw_str_t){q->name, q->nlen});
        meta_write(b, NULL, 0, 0, true, GW_NS_QUEUE, k, kl, NULL, 0, true);
    }
    if (q->ready) {
        if ((op = op_new(b, sizeof(*op), op_free_fn)) != NULL)
            st_group_delete(b->store, q->id, op_done_cb, op);
        if ((op = op_new(b, sizeof(*op), op_free_fn)) != NULL)
            st_topic_delete(b->store, q->id, op_done_cb, op);
    }
    GT_LOG(DEBUG, "amqp", "queue '%.*s' (%s) deleted", (int)q->nlen, q->name, q->id);
    q_unref(q);
}

/* ---- reading the durable metadata back at start ------------------------ */

typedef struct {
    uint8_t *key, *value;
    uint32_t klen, vlen;
} lrec_t;

typedef struct {
    gw_op_t op;
    int phase; /* 0 exchanges, 1 queues, 2 bindings */
    bool more;
    size_t n;
    uint8_t after[GW_META_KEY];
    uint32_t after_len;
    lrec_t *recs;
} load_op_t;

static const char *const load_ns[3] = {GW_NS_EXCHANGE, GW_NS_QUEUE, GW_NS_BINDING};

static void load_fn(gw_op_t *op);

static void load_cb(void *arg, gt_err_t err, const st_meta_rec_t *recs, size_t n, bool more)
{
    load_op_t *o = arg;

    o->op.err = err;
    o->more = more;
    o->n = 0;
    if (err == GT_OK && n > 0 && (o->recs = calloc(n, sizeof(*o->recs))) != NULL) {
        for (size_t i = 0; i < n; i++) {
            lrec_t *r = &o->recs[i];
            r->key = malloc(recs[i].key_len + 1);
            r->value = malloc(recs[i].value_len + 1);
            if (r->key == NULL || r->value == NULL) {
                free(r->key);
                free(r->value);
                o->op.err = GT_ENOMEM;
                break;
            }
            memcpy(r->key, recs[i].key, recs[i].key_len);
            memcpy(r->value, recs[i].value, recs[i].value_len);
            r->klen = recs[i].key_len;
            r->vlen = recs[i].value_len;
            o->n = i + 1;
        }
        if (o->n > 0 && recs[o->n - 1].key_len <= sizeof(o->after)) {
            memcpy(o->after, recs[o->n - 1].key, recs[o->n - 1].key_len);
            o->after_len = recs[o->n - 1].key_len;
        }
    } else if (err == GT_OK && n > 0) {
        o->op.err = GT_ENOMEM;
    }
    op_post(&o->op);
}

static void load_next(gw_broker_t *b, load_op_t *o)
{
    st_meta_list_req_t req;

    pthread_mutex_lock(&b->mu);
    b->ops++;
    pthread_mutex_unlock(&b->mu);
    memset(&req, 0, sizeof(req));
    req.ns = load_ns[o->phase];
    req.after = o->after_len > 0 ? o->after : NULL;
    req.after_len = o->after_len;
    st_meta_list(b->store, &req, load_cb, o);
}

/* Reads a u8-length string at *at of p[0..n). */
static bool get_s8(const uint8_t *p, size_t n, size_t *at, gw_str_t *out)
{
    if (*at >= n || *at + 1 + p[*at] > n)
        return false;
    *out = (gw_str_t){(const char *)p + *at + 1, p[*at]};
    *at += 1 + (size_t)p[*at];
    return true;
}

static void forget_rec(gw_broker_t *b, const char *ns, const lrec_t *r)
{
    meta_write(b, NULL, 0, 0, true, ns, r->key, r->klen, NULL, 0, true);
}

static void load_one(gw_broker_t *b, int phase, const lrec_t *r)
{
    size_t at = 0;
    gw_str_t vh, name;

    if (!get_s8(r->key, r->klen, &at, &vh) || !gw_str_eq(vh, "/"))
        return; /* other vhosts come with configured vhosts */
    if (phase == 0) {
        size_t v = 3;
        gw_str_t ae;
        name = (gw_str_t){(const char *)r->key + at, r->klen - at};
        if (r->vlen < 4 || r->value[0] != 1 || r->value[1] > GW_XTYPE_HEADERS ||
            !get_s8(r->value, r->vlen, &v, &ae))
            return;
        if (gw_route_exchange_add(b->router, name, (gw_xtype_t)r->value[1], r->value[2]) ==
                GT_OK &&
            ae.len > 0)
            gw_route_exchange_set_alternate(b->router, name, &ae);
    } else if (phase == 1) {
        size_t v = 2;
        gw_str_t id;
        char idbuf[40];
        gw_queue_t *q;
        name = (gw_str_t){(const char *)r->key + at, r->klen - at};
        if (r->vlen < 3 || r->value[0] != 1 || !get_s8(r->value, r->vlen, &v, &id) ||
            id.len >= sizeof(idbuf) || queue_find(b, name) != NULL)
            return;
        memcpy(idbuf, id.ptr, id.len);
        idbuf[id.len] = '\0';
        if ((q = queue_add(b, name, idbuf)) == NULL)
            return;
        q->durable = true;
        q->auto_delete = (r->value[1] & 2) != 0;
        q->ready = true;
    } else {
        gw_str_t src, dest, key;
        uint8_t kind;
        gw_table_t args = {r->vlen > 0 ? r->value : NULL, r->vlen};
        if (!get_s8(r->key, r->klen, &at, &src) || at >= r->klen)
            return;
        kind = r->key[at++];
        if (!get_s8(r->key, r->klen, &at, &dest) || !get_s8(r->key, r->klen, &at, &key))
            return;
        if ((kind == 0 && queue_find(b, dest) == NULL) ||
            gw_route_bind(b->router, src, kind == 1 ? GW_DEST_EXCHANGE : GW_DEST_QUEUE, dest,
                          key, args, NULL) != GT_OK)
            forget_rec(b, GW_NS_BINDING, r); /* an end is gone */
    }
}

/* After the metadata: store topics of queues that are no longer declared
 * (transient queues of an earlier run, deletes that missed a crash) go. */
typedef struct {
    gw_op_t op;
    size_t n;
    char (*names)[ST_NAME_MAX + 1];
} sweep_op_t;

static void sweep_fn(gw_op_t *op)
{
    sweep_op_t *o = (sweep_op_t *)op;
    gw_broker_t *b = op->b;
    size_t gone = 0;

    for (size_t i = 0; i < o->n && op->err == GT_OK && !b->stopping; i++) {
        bool used = false;
        gw_op_t *d;
        for (uint32_t h = 0; h < GW_QMAP && !used; h++)
            for (gw_queue_t *q = b->qmap[h]; q != NULL && !used; q = q->hnext)
                used = strcmp(q->id, o->names[i]) == 0;
        if (used)
            continue;
        if ((d = op_new(b, sizeof(*d), op_free_fn)) != NULL)
            st_group_delete(b->store, o->names[i], op_done_cb, d);
        if ((d = op_new(b, sizeof(*d), op_free_fn)) != NULL)
            st_topic_delete(b->store, o->names[i], op_done_cb, d);
        gone++;
    }
    if (gone > 0)
        GT_LOG(INFO, "amqp", "deleted the store topics of %zu queues no longer declared", gone);
    free(o->names);
    free(o);
}

static void sweep_cb(void *arg, gt_err_t err, const st_topic_t *topics, size_t n)
{
    sweep_op_t *o = arg;

    o->op.err = err;
    if (err == GT_OK && n > 0 && (o->names = calloc(n, sizeof(*o->names))) != NULL) {
        for (size_t i = 0; i < n; i++)
            if (strncmp(topics[i].name, "AMQP-q-", 7) == 0)
                memcpy(o->names[o->n++], topics[i].name, sizeof(o->names[0]));
    }
    op_post(&o->op);
}

static void load_fn(gw_op_t *op)
{
    load_op_t *o = (load_op_t *)op;
    gw_broker_t *b = op->b;

    for (size_t i = 0; i < o->n; i++) {
        if (op->err == GT_OK && !b->stopping)
            load_one(b, o->phase, &o->recs[i]);
        free(o->recs[i].key);
        free(o->recs[i].value);
    }
    free(o->recs);
    o->recs = NULL;
    if (op->err != GT_OK)
        GT_LOG(ERROR, "amqp", "cannot read the durable AMQP metadata (%s): %s",
               load_ns[o->phase], gt_err_str(op->err));
    if (op->err == GT_OK && !b->stopping && (o->more || o->phase < 2)) {
        if (!o->more) {
            o->phase++;
            o->after_len = 0;
        }
        load_next(b, o);
        return;
    }
    {
        size_t nq = 0;
        for (uint32_t h = 0; h < GW_QMAP; h++)
            for (gw_queue_t *q = b->qmap[h]; q != NULL; q = q->hnext)
                nq++;
        GT_LOG(INFO, "amqp", "durable metadata read: %zu exchanges, %zu queues, %zu bindings",
               gw_route_exchange_count(b->router), nq, gw_route_binding_count(b->router));
    }
    free(o);
    if (!b->stopping) {
        sweep_op_t *w = op_new(b, sizeof(*w), sweep_fn);
        if (w != NULL)
            st_topic_get(b->store, NULL, sweep_cb, w);
    }
    b->loaded = true;
    if (b->ready_fn != NULL && !b->stopping)
        b->ready_fn(b->ready_arg);
}

/* ---- channel errors ---------------------------------------------------- */


/* The queue a method names: "" means the channel's last declared one. */
static bool resolve_name(gw_chan_t *ch, uint32_t mid, gw_str_t in, gw_str_t *out)
{
    if (in.len > 0) {
        *out = in;
        return true;
    }
    if (!ch->has_last) {
        CH_ERR(ch, GW_NOT_FOUND, mid, "no previously declared queue");
        return false;
    }
    *out = (gw_str_t){ch->last_q, ch->last_len};
    return true;
}

static void set_last(gw_chan_t *ch, gw_str_t name)
{
    ch->has_last = true;
    ch->last_len = (uint8_t)name.len;
    memcpy(ch->last_q, name.ptr, name.len);
}

/* Looks q up for a method: 404 when missing, 405 when exclusive to
 * another connection. */
static gw_queue_t *queue_for(gw_chan_t *ch, uint32_t mid, gw_str_t name)
{
    gw_queue_t *q = queue_find(ch->bc->b, name);

    if (q == NULL) {
        CH_ERR(ch, GW_NOT_FOUND, mid, "no queue '%.*s' in vhost '/'", (int)name.len, name.ptr);
        return NULL;
    }
    if (q->exclusive && q->owner != ch->bc) {
        CH_ERR(ch, GW_RESOURCE_LOCKED, mid,
               "cannot obtain exclusive access to locked queue '%.*s' in vhost '/'. It could be "
               "originally declared on another connection or the exclusive property value does "
               "not match that of the original declaration.",
               (int)name.len, name.ptr);
        return NULL;
    }
    return q;
}

/* ---- queue.declare / delete / purge ------------------------------------ */

typedef struct {
    gw_op_t op;
    gw_chan_t *ch; /* ref */
    gw_queue_t *q; /* ref */
    uint32_t mid;
    int step;
    bool nowait, if_empty;
    uint64_t ready, max_offset;
} qop_t;

static qop_t *qop_new(gw_chan_t *ch, gw_queue_t *q, uint32_t mid, bool nowait, gw_op_fn fn)
{
    qop_t *o = op_new(ch->bc->b, sizeof(*o), fn);

    if (o == NULL)
        return NULL;
    ch_ref(ch);
    q_ref(q);
    o->ch = ch;
    o->q = q;
    o->mid = mid;
    o->nowait = nowait;
    gw_conn_stall(ch->bc->c);
    return o;
}

/* Ends a qop: unstalls its connection, drops references. */
static void qop_end(qop_t *o)
{
    if (o->ch->bc->c != NULL)
        gw_conn_unstall(o->ch->bc->c);
    ch_unref(o->ch);
    q_unref(o->q);
    free(o);
}

static void qop_done_cb(void *arg, gt_err_t err)
{
    qop_t *o = arg;

    o->op.err = err;
    op_post(&o->op);
}

static void qop_stats_cb(void *arg, gt_err_t err, const st_stats_t *s)
{
    qop_t *o = arg;

    o->op.err = err;
    if (err == GT_OK) {
        o->ready = s->ready;
        o->max_offset = s->nqueues > 0 ? s->queues[0].max_offset : 0;
    }
    op_post(&o->op);
}

static uint32_t clamp32(uint64_t v) { return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v; }

static void declare_ok(gw_chan_t *ch, gw_queue_t *q, uint64_t ready, bool nowait)
{
    gw_method_t r = {.id = GW_QUEUE_DECLARE_OK};

    if (nowait)
        return;
    r.u.queue_declare_ok.queue = (gw_str_t){q->name, q->nlen};
    r.u.queue_declare_ok.message_count = clamp32(ready);
    r.u.queue_declare_ok.consumer_count = q->nconsumers;
    reply(ch, &r);
}

/* A new queue's store topic (one queue: one order), then its group. */
static void create_fn(gw_op_t *op)
{
    qop_t *o = (qop_t *)op;
    gw_broker_t *b = op->b;

    if (op->err == GT_OK && o->step == 0 && !o->q->gone) {
        st_group_t g;
        memset(&g, 0, sizeof(g));
        snprintf(g.name, sizeof(g.name), "%s", o->q->id);
        g.max_delivery_attempts = UINT32_MAX; /* AMQP queues redeliver without end */
        g.consume_from = ST_CONSUME_FROM_FIRST;
        o->step = 1;
        pthread_mutex_lock(&b->mu);
        b->ops++;
        pthread_mutex_unlock(&b->mu);
        st_group_put(b->store, &g, qop_done_cb, o);
        return;
    }
    if (op->err == GT_OK && o->step == 1 && !o->q->gone && o->q->durable && !o->q->exclusive) {
        uint8_t k[GW_META_KEY], v[64];
        size_t kl, vl;
        queue_record(o->q, k, &kl, v, &vl);
        o->step = 2;
        pthread_mutex_lock(&b->mu);
        b->ops++;
        pthread_mutex_unlock(&b->mu);
        st_meta_put(b->store, GW_NS_QUEUE, k, (uint32_t)kl, v, (uint32_t)vl, qop_done_cb, o);
        return;
    }
    if (op->err != GT_OK) {
        GT_LOG(WARN, "amqp", "cannot create the store topic/group %s for queue '%.*s': %s",
               o->q->id, (int)o->q->nlen, o->q->name, gt_err_str(op->err));
        if (ch_live(o->ch))
            CH_ERR(o->ch, GW_INTERNAL_ERROR, o->mid, "cannot create queue '%.*s': %s",
                   (int)o->q->nlen, o->q->name, gt_err_str(op->err));
        queue_drop(o->q);
    } else if (!o->q->gone) {
        o->q->ready = true;
        declare_ok(o->ch, o->q, 0, o->nowait);
        GT_LOG(DEBUG, "amqp", "queue '%.*s' declared as %s", (int)o->q->nlen, o->q->name,
               o->q->id);
    }
    qop_end(o);
}

static void count_fn(gw_op_t *op)
{
    qop_t *o = (qop_t *)op;

    declare_ok(o->ch, o->q, op->err == GT_OK ? o->ready : 0, o->nowait);
    qop_end(o);
}

static const char *yn(bool v) { return v ? "true" : "false"; }

static void on_queue_declare(gw_chan_t *ch, const gw_method_t *m)
{
    const gw_queue_declare_t *d = &m->u.queue_declare;
    gw_broker_t *b = ch->bc->b;
    gw_str_t name = d->queue;
    char gen[64];
    gw_queue_t *q;
    qop_t *o;

    if (d->passive) {
        if (!resolve_name(ch, m->id, d->queue, &name) || (q = queue_for(ch, m->id, name)) == NULL)
            return;
    } else {
        if (name.len == 0) {
            size_t n = gen_name("amq.gen-", gen, sizeof(gen));
            name = (gw_str_t){gen, n};
        } else if (name.len >= 4 && memcmp(name.ptr, "amq.", 4) == 0) {
            CH_ERR(ch, GW_ACCESS_REFUSED, m->id,
                   "queue name '%.*s' contains reserved prefix 'amq.*'", (int)name.len, name.ptr);
            return;
        }
        q = queue_find(b, name);
        if (q != NULL) {
            if ((q->exclusive && q->owner != ch->bc) || q->exclusive != d->exclusive) {
                CH_ERR(ch, GW_RESOURCE_LOCKED, m->id,
                       "cannot obtain exclusive access to locked queue '%.*s' in vhost '/'. It "
                       "could be originally declared on another connection or the exclusive "
                       "property value does not match that of the original declaration.",
                       (int)name.len, name.ptr);
                return;
            }
            if (q->durable != d->durable || q->auto_delete != d->auto_delete) {
                bool dur = q->durable != d->durable;
                CH_ERR(ch, GW_PRECONDITION_FAILED, m->id,
                       "inequivalent arg '%s' for queue '%.*s' in vhost '/': received '%s' but "
                       "current is '%s'",
                       dur ? "durable" : "auto_delete", (int)name.len, name.ptr,
                       yn(dur ? d->durable : d->auto_delete),
                       yn(dur ? q->durable : q->auto_delete));
                return;
            }
        } else {
            if ((q = queue_add(b, name, NULL)) == NULL) {
                CH_ERR(ch, GW_INTERNAL_ERROR, m->id, "out of memory");
                return;
            }
            q->durable = d->durable;
            q->exclusive = d->exclusive;
            q->auto_delete = d->auto_delete;
            q->owner = d->exclusive ? ch->bc : NULL;
            set_last(ch, name);
            if ((o = qop_new(ch, q, m->id, d->nowait, create_fn)) == NULL) {
                queue_drop(q);
                CH_ERR(ch, GW_INTERNAL_ERROR, m->id, "out of memory");
                return;
            }
            st_topic_t t;
            memset(&t, 0, sizeof(t));
            snprintf(t.name, sizeof(t.name), "%s", q->id);
            t.type = ST_TOPIC_NORMAL;
            t.queue_count = 1;
            t.perm = ST_PERM_READ | ST_PERM_WRITE;
            st_topic_put(b->store, &t, qop_done_cb, o);
            return;
        }
    }
    set_last(ch, (gw_str_t){q->name, q->nlen});
    if (!q->ready) { /* still being created (by another connection) */
        declare_ok(ch, q, 0, d->nowait);
        return;
    }
    if ((o = qop_new(ch, q, m->id, d->nowait, count_fn)) == NULL) {
        declare_ok(ch, q, 0, d->nowait);
        return;
    }
    st_stats(b->store, q->id, q->id, qop_stats_cb, o);
}

static void delete_fn(gw_op_t *op)
{
    qop_t *o = (qop_t *)op;
    gw_method_t r = {.id = GW_QUEUE_DELETE_OK};
    uint64_t n = op->err == GT_OK ? o->ready : 0;

    if (o->q->gone) {
        r.u.message_count.message_count = 0;
        if (!o->nowait)
            reply(o->ch, &r);
    } else if (o->if_empty && n > 0) {
        if (ch_live(o->ch))
            CH_ERR(o->ch, GW_PRECONDITION_FAILED, o->mid, "queue '%.*s' in vhost '/' not empty",
                   (int)o->q->nlen, o->q->name);
    } else {
        queue_drop(o->q);
        r.u.message_count.message_count = clamp32(n);
        if (!o->nowait)
            reply(o->ch, &r);
    }
    qop_end(o);
}

static void on_queue_delete(gw_chan_t *ch, const gw_method_t *m)
{
    const gw_queue_delete_t *d = &m->u.queue_delete;
    gw_str_t name;
    gw_queue_t *q;
    qop_t *o;

    if (!resolve_name(ch, m->id, d->queue, &name))
        return;
    q = queue_find(ch->bc->b, name);
    if (q == NULL) {
        gw_method_t r = {.id = GW_QUEUE_DELETE_OK};
        if (!d->nowait)
            reply(ch, &r);
        return;
    }
    if ((q = queue_for(ch, m->id, name)) == NULL)
        return;
    if (d->if_unused && q->nconsumers > 0) {
        CH_ERR(ch, GW_PRECONDITION_FAILED, m->id, "queue '%.*s' in vhost '/' in use",
               (int)name.len, name.ptr);
        return;
    }
    if (!q->ready || (o = qop_new(ch, q, m->id, d->nowait, delete_fn)) == NULL) {
        gw_method_t r = {.id = GW_QUEUE_DELETE_OK};
        queue_drop(q);
        if (!d->nowait)
            reply(ch, &r);
        return;
    }
    o->if_empty = d->if_empty;
    st_stats(ch->bc->b->store, q->id, q->id, qop_stats_cb, o);
}

/* Purge: the group's committed offset moves to the end of the queue
 * (deliveries in flight below it are forgotten). */
static void purge_fn(gw_op_t *op)
{
    qop_t *o = (qop_t *)op;
    gw_method_t r = {.id = GW_QUEUE_PURGE_OK};

    if (o->step == 0 && op->err == GT_OK && !o->q->gone && o->ready > 0) {
        o->step = 1;
        pthread_mutex_lock(&op->b->mu);
        op->b->ops++;
        pthread_mutex_unlock(&op->b->mu);
        st_offset_update(op->b->store, o->q->id, o->q->id, 0, o->max_offset, qop_done_cb, o);
        return;
    }
    if (op->err != GT_OK && ch_live(o->ch)) {
        CH_ERR(o->ch, GW_INTERNAL_ERROR, o->mid, "cannot purge queue '%.*s': %s",
               (int)o->q->nlen, o->q->name, gt_err_str(op->err));
    } else if (!o->nowait) {
        r.u.message_count.message_count = clamp32(o->ready);
        reply(o->ch, &r);
    }
    qop_end(o);
}

static void on_queue_purge(gw_chan_t *ch, const gw_method_t *m)
{
    gw_str_t name;
    gw_queue_t *q;
    qop_t *o;

    if (!resolve_name(ch, m->id, m->u.queue_purge.queue, &name) ||
        (q = queue_for(ch, m->id, name)) == NULL)
        return;
    if (!q->ready || (o = qop_new(ch, q, m->id, m->u.queue_purge.nowait, purge_fn)) == NULL) {
        gw_method_t r = {.id = GW_QUEUE_PURGE_OK};
        if (!m->u.queue_purge.nowait)
            reply(ch, &r);
        return;
    }
    st_stats(ch->bc->b->store, q->id, q->id, qop_stats_cb, o);
}

/* ---- the stored record ------------------------------------------------- *
 * A message's store body: 0xA1, exchange (u8 length + bytes), routing key
 * (u8 + bytes), the content header's property list as received (u32
 * length + bytes), then the body. */

typedef struct {
    gw_str_t ex, rk;
    gw_bytes_t props;
    const uint8_t *body;
    size_t body_len;
} gw_rec_t;

static bool rec_decode(const uint8_t *p, size_t n, gw_rec_t *r)
{
    size_t at = 1;
    uint32_t pl;

    if (n < 7 || p[0] != GW_REC_MAGIC)
        return false;
    r->ex = (gw_str_t){(const char *)p + at + 1, p[at]};
    at += 1 + (size_t)p[at];
    if (at + 1 > n)
        return false;
    r->rk = (gw_str_t){(const char *)p + at + 1, p[at]};
    at += 1 + (size_t)p[at];
    if (at + 4 > n)
        return false;
    pl = (uint32_t)p[at] << 24 | (uint32_t)p[at + 1] << 16 | (uint32_t)p[at + 2] << 8 | p[at + 3];
    at += 4;
    if (pl > n - at)
        return false;
    r->props = (gw_bytes_t){p + at, pl};
    at += pl;
    r->body = p + at;
    r->body_len = n - at;
    return true;
}

/* ---- deliveries -------------------------------------------------------- */

typedef struct {
    char handle[ST_HANDLE_MAX];
    uint32_t attempt;
    uint8_t *body;
    size_t len;
} popped_t;

typedef struct {
    gw_op_t op;
    gw_consumer_t *cs; /* ref; NULL for basic.get */
    gw_chan_t *ch;     /* ref (basic.get) */
    gw_queue_t *q;     /* ref */
    uint32_t asked;
    bool no_ack;
    size_t n;
    popped_t msgs[];
} pop_op_t;

static void ua_add(gw_chan_t *ch, uint64_t tag, gw_queue_t *q, gw_consumer_t *cs, const char *h)
{
    gw_unacked_t *u = calloc(1, sizeof(*u));

    if (u == NULL) { /* cannot track it: give it back */
        fire_requeue(ch->bc->b, q, h);
        return;
    }
    u->tag = tag;
    q_ref(q);
    u->q = q;
    if (cs != NULL) {
        cs_ref(cs);
        cs->unacked++;
    }
    u->cs = cs;
    snprintf(u->handle, sizeof(u->handle), "%s", h);
    u->prev = ch->ua_tail;
    if (ch->ua_tail != NULL)
        ch->ua_tail->next = u;
    else
        ch->ua = u;
    ch->ua_tail = u;
    ch->unacked++;
}

static void ua_unlink(gw_chan_t *ch, gw_unacked_t *u)
{
    if (u->prev != NULL)
        u->prev->next = u->next;
    else
        ch->ua = u->next;
    if (u->next != NULL)
        u->next->prev = u->prev;
    else
        ch->ua_tail = u->prev;
    ch->unacked--;
    if (u->cs != NULL)
        u->cs->unacked--;
}

static void ua_free(gw_unacked_t *u)
{
    cs_unref(u->cs);
    q_unref(u->q);
    free(u);
}

static void send_delivery(gw_chan_t *ch, gw_method_t *m, gw_queue_t *q, const popped_t *p,
                          gw_str_t *ex_out, gw_str_t *rk_out)
{
    gw_rec_t r;

    if (!rec_decode(p->body, p->len, &r)) {
        /* Not written by this gateway (e.g. a RocketMQ client sent it):
         * the body as is, no properties, as if from the default exchange. */
        static const uint8_t noprops[2] = {0, 0};
        r.ex = (gw_str_t){"", 0};
        r.rk = (gw_str_t){q->name, q->nlen};
        r.props = (gw_bytes_t){noprops, 2};
        r.body = p->body;
        r.body_len = p->len;
    }
    *ex_out = r.ex;
    *rk_out = r.rk;
    gw_conn_send_content(ch->bc->c, ch->id, m, r.props, r.body, r.body_len);
}

static uint32_t cs_credit(const gw_consumer_t *cs)
{
    const gw_chan_t *ch = cs->ch;
    uint32_t n = GW_POP_BATCH;
    gw_conn_t *c = ch->bc->c;

    if (cs->gone || !ch_live(ch) || cs->q->gone || !cs->q->ready || ch->bc->b->stopping)
        return 0;
    if (gw_conn_out_len(c) > gw_conn_out_limit(c) / 2)
        return 0;
    if (cs->no_ack)
        return n;
    if (cs->prefetch > 0) {
        uint32_t used = cs->unacked + cs->popping;
        n = used >= cs->prefetch ? 0 : (cs->prefetch - used < n ? cs->prefetch - used : n);
    }
    if (ch->prefetch_global > 0) {
        uint32_t used = ch->unacked + ch->pending;
        uint32_t g = used >= ch->prefetch_global ? 0 : ch->prefetch_global - used;
        n = g < n ? g : n;
    }
    return n;
}

static void pop_cb(void *arg, gt_err_t err, const st_popped_t *msgs, size_t n)
{
    pop_op_t *o = arg, *big;

    o->op.err = err;
    if (err == GT_OK && n > 0) {
        /* Grow to hold the messages (the op is not shared yet). */
        big = realloc(o, sizeof(*o) + n * sizeof(popped_t));
        if (big == NULL) {
            o->op.err = GT_ENOMEM;
            op_post(&o->op);
            return;
        }
        o = big;
        for (size_t i = 0; i < n; i++) {
            popped_t *p = &o->msgs[i];
            memset(p, 0, sizeof(*p));
            snprintf(p->handle, sizeof(p->handle), "%s", msgs[i].handle);
            p->attempt = msgs[i].attempt;
            p->len = msgs[i].msg.body_len;
            p->body = malloc(p->len > 0 ? p->len : 1);
            if (p->body == NULL) {
                p->len = 0;
                p->attempt = 0; /* marks a copy that failed: released */
            } else if (p->len > 0) {
                memcpy(p->body, msgs[i].msg.body, p->len);
            }
            o->n = i + 1;
        }
    }
    op_post(&o->op);
}

static void cs_pump(gw_consumer_t *cs);

static void consume_fn(gw_op_t *op)
{
    pop_op_t *o = (pop_op_t *)op;
    gw_consumer_t *cs = o->cs;
    gw_chan_t *ch = cs->ch;
    gw_broker_t *b = op->b;

    cs->popping = 0;
    ch->pending -= o->asked < ch->pending ? o->asked : ch->pending;
    if (op->err != GT_OK && op->err != GT_ENOTFOUND)
        GT_LOG(WARN, "amqp", "pop from %s failed: %s", cs->q->id, gt_err_str(op->err));
    for (size_t i = 0; i < o->n; i++) {
        popped_t *p = &o->msgs[i];
        if (cs->gone || !ch_live(ch) || p->attempt == 0 || b->stopping) {
            fire_release(b, cs->q, p->handle);
        } else {
            gw_method_t m = {.id = GW_BASIC_DELIVER};
            gw_basic_deliver_t *d = &m.u.basic_deliver;
            d->consumer_tag = (gw_str_t){cs->tag, cs->tlen};
            d->delivery_tag = ++ch->next_tag;
            d->redelivered = p->attempt > 1;
            send_delivery(ch, &m, cs->q, p, &d->exchange, &d->routing_key);
            if (cs->no_ack)
                fire_ack(b, cs->q, p->handle);
            else
                ua_add(ch, d->delivery_tag, cs->q, cs, p->handle);
        }
        free(p->body);
    }
    if (!cs->gone && op->err == GT_OK && (o->n == o->asked || cs->rekick)) {
        cs->rekick = false;
        cs_pump(cs);
    }
    /* Channel credit this pop held and did not use goes to the channel's
     * consumers that found none meanwhile (each pumped once: a consumer
     * only becomes starved again by a pump that finds no credit). */
    if (o->n < o->asked && ch->prefetch_global > 0 && ch_live(ch)) {
        for (gw_consumer_t *o2 = ch->consumers; o2 != NULL; o2 = o2->cnext) {
            if (o2->starved && o2 != cs) {
                o2->starved = false;
                cs_pump(o2);
            }
        }
    }
    cs_unref(cs);
    q_unref(o->q);
    free(o);
}

/* Asks the store for as many messages as the consumer may take now. */
static void cs_pump(gw_consumer_t *cs)
{
    gw_broker_t *b = cs->ch->bc->b;
    uint32_t n;
    pop_op_t *o;
    st_pop_req_t req;

    if (cs->popping > 0) {
        cs->rekick = true;
        return;
    }
    if ((n = cs_credit(cs)) == 0) {
        cs->starved = cs->ch->prefetch_global > 0;
        return;
    }
    cs->starved = false;
    if ((o = op_new(b, sizeof(*o), consume_fn)) == NULL)
        return;
    cs_ref(cs);
    q_ref(cs->q);
    o->cs = cs;
    o->q = cs->q;
    o->asked = n;
    cs->popping = n;
    cs->rekick = false;
    cs->ch->pending += n;
    memset(&req, 0, sizeof(req));
    req.group = cs->q->id;
    req.topic = cs->q->id;
    req.queue_id = ST_QUEUE_ANY;
    req.max = n;
    req.invisible_ms = GW_INVISIBLE_MS;
    req.poll_timeout_ms = 0;
    st_pop(b->store, &req, pop_cb, o);
}

static void queue_kick(gw_queue_t *q)
{
    for (gw_consumer_t *cs = q->consumers; cs != NULL; cs = cs->qnext)
        cs_pump(cs);
}

static void chan_pump(gw_chan_t *ch)
{
    for (gw_consumer_t *cs = ch->consumers; cs != NULL; cs = cs->cnext)
        cs_pump(cs);
}

/* Takes cs out of its queue and channel; notify: send basic.cancel. */
static void consumer_remove(gw_consumer_t *cs, bool notify)
{
    gw_queue_t *q = cs->q;
    gw_chan_t *ch = cs->ch;
    gw_consumer_t **pp;

    if (cs->gone)
        return;
    cs->gone = true;
    if (cs->qprev != NULL)
        cs->qprev->qnext = cs->qnext;
    else
        q->consumers = cs->qnext;
    if (cs->qnext != NULL)
        cs->qnext->qprev = cs->qprev;
    q->nconsumers--;
    if (cs->exclusive)
        q->excl_consumer = false;
    for (pp = &ch->consumers; *pp != NULL && *pp != cs; pp = &(*pp)->cnext)
        ;
    if (*pp == cs)
        *pp = cs->cnext;
    if (notify && ch_live(ch) && gw_conn_cancel_notify(ch->bc->c)) {
        gw_method_t m = {.id = GW_BASIC_CANCEL};
        m.u.basic_cancel.consumer_tag = (gw_str_t){cs->tag, cs->tlen};
        m.u.basic_cancel.nowait = true;
        gw_conn_send_method(ch->bc->c, ch->id, &m);
    }
    if (q->auto_delete && q->had_consumer && q->nconsumers == 0 && !q->gone &&
        !q->b->stopping)
        queue_drop(q);
    cs_unref(cs);
}

static void on_basic_qos(gw_chan_t *ch, const gw_method_t *m)
{
    const gw_basic_qos_t *qo = &m->u.basic_qos;
    gw_method_t r = {.id = GW_BASIC_QOS_OK};

    if (qo->prefetch_size != 0) {
        gw_conn_error(ch->bc->c, GW_NOT_IMPLEMENTED, m->id, "prefetch_size!=0 (%u)",
                      qo->prefetch_size);
        return;
    }
    if (qo->global)
        ch->prefetch_global = qo->prefetch_count;
    else
        ch->prefetch = qo->prefetch_count;
    reply(ch, &r);
    chan_pump(ch);
}

static void on_basic_consume(gw_chan_t *ch, const gw_method_t *m)
{
    const gw_basic_consume_t *bcm = &m->u.basic_consume;
    gw_str_t name, tag = bcm->consumer_tag;
    char gen[64];
    gw_queue_t *q;
    gw_consumer_t *cs;

    if (!resolve_name(ch, m->id, bcm->queue, &name) || (q = queue_for(ch, m->id, name)) == NULL)
        return;
    if (tag.len == 0) {
        size_t n = gen_name("amq.ctag-", gen, sizeof(gen));
        tag = (gw_str_t){gen, n};
    }
    for (cs = ch->consumers; cs != NULL; cs = cs->cnext) {
        if (cs->tlen == tag.len && memcmp(cs->tag, tag.ptr, tag.len) == 0) {
            gw_conn_error(ch->bc->c, GW_NOT_ALLOWED, m->id,
                          "attempt to reuse consumer tag '%.*s'", (int)tag.len, tag.ptr);
            return;
        }
    }
    if (q->excl_consumer || (bcm->exclusive && q->nconsumers > 0)) {
        CH_ERR(ch, GW_ACCESS_REFUSED, m->id, "queue '%.*s' in vhost '/' in exclusive use",
               (int)name.len, name.ptr);
        return;
    }
    if ((cs = calloc(1, sizeof(*cs))) == NULL) {
        CH_ERR(ch, GW_INTERNAL_ERROR, m->id, "out of memory");
        return;
    }
    cs->refs = 1; /* the channel's and queue's lists */
    ch_ref(ch);
    cs->ch = ch;
    q_ref(q);
    cs->q = q;
    cs->tlen = (uint8_t)tag.len;
    memcpy(cs->tag, tag.ptr, tag.len);
    cs->no_ack = bcm->no_ack;
    cs->exclusive = bcm->exclusive;
    cs->prefetch = ch->prefetch;
    cs->qnext = q->consumers;
    if (q->consumers != NULL)
        q->consumers->qprev = cs;
    q->consumers = cs;
    q->nconsumers++;
    q->had_consumer = true;
    if (bcm->exclusive)
        q->excl_consumer = true;
    cs->cnext = ch->consumers;
    ch->consumers = cs;
    if (!bcm->nowait) {
        gw_method_t r = {.id = GW_BASIC_CONSUME_OK};
        r.u.consumer_tag.consumer_tag = tag;
        reply(ch, &r);
    }
    cs_pump(cs);
}

static void on_basic_cancel(gw_chan_t *ch, const gw_method_t *m)
{
    gw_str_t tag = m->u.basic_cancel.consumer_tag;
    gw_method_t r = {.id = GW_BASIC_CANCEL_OK};

    for (gw_consumer_t *cs = ch->consumers; cs != NULL; cs = cs->cnext) {
        if (cs->tlen == tag.len && memcmp(cs->tag, tag.ptr, tag.len) == 0) {
            consumer_remove(cs, false);
            break;
        }
    }
    if (!m->u.basic_cancel.nowait) {
        r.u.consumer_tag.consumer_tag = tag;
        reply(ch, &r);
    }
}

static void get_fn(gw_op_t *op)
{
    pop_op_t *o = (pop_op_t *)op;
    gw_chan_t *ch = o->ch;
    gw_broker_t *b = op->b;

    if (o->n == 0 && ch_live(ch)) {
        gw_method_t r = {.id = GW_BASIC_GET_EMPTY};
        if (op->err != GT_OK && op->err != GT_ENOTFOUND)
            GT_LOG(WARN, "amqp", "get from %s failed: %s", o->q->id, gt_err_str(op->err));
        reply(ch, &r);
    }
    for (size_t i = 0; i < o->n; i++) {
        popped_t *p = &o->msgs[i];
        if (!ch_live(ch) || p->attempt == 0) {
            fire_release(b, o->q, p->handle);
            if (ch_live(ch)) {
                gw_method_t r = {.id = GW_BASIC_GET_EMPTY};
                reply(ch, &r);
            }
        } else {
            gw_method_t m = {.id = GW_BASIC_GET_OK};
            gw_basic_get_ok_t *g = &m.u.basic_get_ok;
            g->delivery_tag = ++ch->next_tag;
            g->redelivered = p->attempt > 1;
            g->message_count = 0;
            send_delivery(ch, &m, o->q, p, &g->exchange, &g->routing_key);
            if (o->no_ack)
                fire_ack(b, o->q, p->handle);
            else
                ua_add(ch, g->delivery_tag, o->q, NULL, p->handle);
        }
        free(p->body);
    }
    if (ch->bc->c != NULL)
        gw_conn_unstall(ch->bc->c);
    ch_unref(ch);
    q_unref(o->q);
    free(o);
}

static void on_basic_get(gw_chan_t *ch, const gw_method_t *m)
{
    gw_str_t name;
    gw_queue_t *q;
    pop_op_t *o;
    st_pop_req_t req;

    if (!resolve_name(ch, m->id, m->u.basic_get.queue, &name) ||
        (q = queue_for(ch, m->id, name)) == NULL)
        return;
    if (!q->ready || (o = op_new(ch->bc->b, sizeof(*o), get_fn)) == NULL) {
        gw_method_t r = {.id = GW_BASIC_GET_EMPTY};
        reply(ch, &r);
        return;
    }
    ch_ref(ch);
    q_ref(q);
    o->ch = ch;
    o->q = q;
    o->asked = 1;
    o->no_ack = m->u.basic_get.no_ack;
    gw_conn_stall(ch->bc->c);
    memset(&req, 0, sizeof(req));
    req.group = q->id;
    req.topic = q->id;
    req.queue_id = ST_QUEUE_ANY;
    req.max = 1;
    req.invisible_ms = GW_INVISIBLE_MS;
    st_pop(ch->bc->b->store, &req, pop_cb, o);
}

/* ---- acks -------------------------------------------------------------- */

typedef enum { SETTLE_ACK, SETTLE_REQUEUE, SETTLE_DROP } settle_t;

static void settle_one(gw_chan_t *ch, gw_unacked_t *u, settle_t how)
{
    gw_consumer_t *cs = u->cs;

    ua_unlink(ch, u);
    if (how == SETTLE_REQUEUE)
        fire_requeue(ch->bc->b, u->q, u->handle);
    else
        fire_ack(ch->bc->b, u->q, u->handle); /* a drop: dead-lettering is issue 10 */
    if (cs != NULL && !cs->gone)
        cs_pump(cs);
    ua_free(u);
}

/* ack / nack / reject of tag (multiple: every tag up to it; tag 0 with
 * multiple: all). */
static void settle_now(gw_chan_t *ch, uint32_t mid, uint64_t tag, bool multiple, settle_t how)
{
    gw_unacked_t *u, *next;

    if (multiple) {
        if (tag != 0 && (ch->ua == NULL || ch->ua->tag > tag)) {
            CH_ERR(ch, GW_PRECONDITION_FAILED, mid, "unknown delivery tag %llu",
                   (unsigned long long)tag);
            return;
        }
        for (u = ch->ua; u != NULL && (tag == 0 || u->tag <= tag); u = next) {
            next = u->next;
            settle_one(ch, u, how);
        }
        chan_pump(ch);
        return;
    }
    for (u = ch->ua; u != NULL && u->tag != tag; u = u->next)
        ;
    if (u == NULL) {
        CH_ERR(ch, GW_PRECONDITION_FAILED, mid, "unknown delivery tag %llu",
               (unsigned long long)tag);
        return;
    }
    settle_one(ch, u, how);
    if (ch->prefetch_global > 0)
        chan_pump(ch);
}

static void settle(gw_chan_t *ch, uint32_t mid, uint64_t tag, bool multiple, settle_t how)
{
    gw_unacked_t *u;
    gw_txack_t *t;

    if (!ch->tx) {
        settle_now(ch, mid, tag, multiple, how);
        return;
    }
    /* In a transaction: checked now, applied at commit. */
    if (multiple)
        u = tag == 0 || (ch->ua != NULL && ch->ua->tag <= tag) ? ch->ua : NULL;
    else
        for (u = ch->ua; u != NULL && u->tag != tag; u = u->next)
            ;
    if (u == NULL && !(multiple && tag == 0)) {
        CH_ERR(ch, GW_PRECONDITION_FAILED, mid, "unknown delivery tag %llu",
               (unsigned long long)tag);
        return;
    }
    if ((t = calloc(1, sizeof(*t))) == NULL) {
        CH_ERR(ch, GW_INTERNAL_ERROR, mid, "out of memory");
        return;
    }
    t->tag = tag;
    t->multiple = multiple;
    t->how = (int)how;
    if (ch->txa_tail != NULL)
        ch->txa_tail->next = t;
    else
        ch->txa = t;
    ch->txa_tail = t;
}

static void on_basic_ack(gw_chan_t *ch, const gw_method_t *m)
{
    settle(ch, m->id, m->u.basic_ack.delivery_tag, m->u.basic_ack.multiple, SETTLE_ACK);
}

static void on_basic_nack(gw_chan_t *ch, const gw_method_t *m)
{
    const gw_basic_nack_t *n = &m->u.basic_nack;

    settle(ch, m->id, n->delivery_tag, n->multiple, n->requeue ? SETTLE_REQUEUE : SETTLE_DROP);
}

static void on_basic_reject(gw_chan_t *ch, const gw_method_t *m)
{
    const gw_basic_reject_t *r = &m->u.basic_reject;

    settle(ch, m->id, r->delivery_tag, false, r->requeue ? SETTLE_REQUEUE : SETTLE_DROP);
}

static void on_basic_recover(gw_chan_t *ch, const gw_method_t *m)
{
    if (!m->u.basic_recover.requeue) {
        gw_conn_error(ch->bc->c, GW_NOT_IMPLEMENTED, m->id, "requeue=false");
        return;
    }
    while (ch->ua != NULL)
        settle_one(ch, ch->ua, SETTLE_REQUEUE);
    if (m->id == GW_BASIC_RECOVER) {
        gw_method_t r = {.id = GW_BASIC_RECOVER_OK};
        reply(ch, &r);
    }
}

/* ---- publishing -------------------------------------------------------- */

typedef struct {
    gw_op_t op;
    gw_chan_t *ch;  /* ref */
    gw_queue_t *q;  /* ref */
    gw_pub_t *pub;  /* in ch->pubs (kept while ch is referenced), or NULL */
} append_op_t;

/* Sends the confirms that are due, in order: runs of acks coalesce into
 * one with multiple set. */
static void confirms_flush(gw_chan_t *ch)
{
    while (ch->pubs != NULL && ch->pubs->remaining == 0) {
        gw_pub_t *p = ch->pubs, *last = p;
        bool failed = p->failed;
        size_t run = 0;
        gw_method_t m;

        while (last->next != NULL && last->next->remaining == 0 && last->next->failed == failed)
            last = last->next, run++;
        memset(&m, 0, sizeof(m));
        if (failed) {
            m.id = GW_BASIC_NACK;
            m.u.basic_nack.delivery_tag = last->seq;
            m.u.basic_nack.multiple = run > 0;
        } else {
            m.id = GW_BASIC_ACK;
            m.u.basic_ack.delivery_tag = last->seq;
            m.u.basic_ack.multiple = run > 0;
        }
        reply(ch, &m);
        ch->pubs = last->next;
        if (ch->pubs == NULL)
            ch->pubs_tail = NULL;
        last->next = NULL;
        while (p != NULL) {
            gw_pub_t *n = p->next;
            free(p);
            p = n;
        }
    }
}

static void append_fn(gw_op_t *op)
{
    append_op_t *o = (append_op_t *)op;
    gw_chan_t *ch = o->ch;

    if (op->err != GT_OK)
        GT_LOG(WARN, "amqp", "append to queue '%.*s' (%s) failed: %s", (int)o->q->nlen,
               o->q->name, o->q->id, gt_err_str(op->err));
    if (o->pub != NULL) {
        o->pub->remaining--;
        if (op->err != GT_OK)
            o->pub->failed = true;
        if (!ch->closed && !ch->dirty) {
            ch->dirty = true;
            ch_ref(ch);
            ch->dirty_next = op->b->dirty;
            op->b->dirty = ch;
        }
    }
    if (op->err == GT_OK && !o->q->gone)
        queue_kick(o->q);
    bc_appends_done(ch->bc);
    ch_unref(ch);
    q_unref(o->q);
    free(o);
}

static void append_cb(void *arg, gt_err_t err, const st_append_item_t *items, size_t n)
{
    append_op_t *o = arg;

    (void)items;
    (void)n;
    o->op.err = err;
    op_post(&o->op);
}

static void bc_appends_done(gw_bconn_t *bc)
{
    bc->appends--;
    if (bc->c == NULL)
        return;
    if (bc->append_stall && bc->appends <= GW_APPENDS_MAX / 2) {
        bc->append_stall = false;
        gw_conn_unstall(bc->c);
    }
    if (bc->appends == 0 && bc->commit_waits > 0) {
        for (uint32_t i = 0; i < GW_CHAN_SLOTS && bc->commit_waits > 0; i++) {
            gw_chan_t *ch = bc->ch[i];
            if (ch != NULL && ch->commit_wait) {
                gw_method_t r = {.id = GW_TX_COMMIT_OK};
                ch->commit_wait = false;
                bc->commit_waits--;
                reply(ch, &r);
                gw_conn_unstall(bc->c);
            }
        }
    }
    if (bc->appends == 0 && bc->held != NULL) {
        /* Replay the method that waited for the publishes before it. */
        uint8_t *held = bc->held;
        size_t len = bc->held_len;
        uint16_t id = bc->held_ch;
        gw_method_t m;
        gw_fault_t f;

        bc->held = NULL;
        if (bc->ch[id] != NULL && gw_method_decode(held, len, &m, &f) == GT_OK)
            chan_dispatch(bc->ch[id], &m, NULL);
        free(held);
        if (bc->c != NULL)
            gw_conn_unstall(bc->c);
    }
}

/* Appends the assembled message to queue q (one store append). */
static void append_to(gw_chan_t *ch, gw_queue_t *q, gw_pub_t *pub)
{
    gw_broker_t *b = ch->bc->b;
    st_message_t msg;
    append_op_t *o;

    if ((o = op_new(b, sizeof(*o), append_fn)) == NULL) {
        if (pub != NULL)
            pub->failed = true;
        return;
    }
    ch_ref(ch);
    q_ref(q);
    o->ch = ch;
    o->q = q;
    o->pub = pub;
    if (pub != NULL)
        pub->remaining++;
    if (++ch->bc->appends >= GW_APPENDS_MAX && !ch->bc->append_stall) {
        ch->bc->append_stall = true;
        gw_conn_stall(ch->bc->c);
    }
    memset(&msg, 0, sizeof(msg));
    msg.body = ch->pbuf;
    msg.body_len = (uint32_t)ch->plen;
    msg.queue_id = 0;
    msg.born_ts_ms = (int64_t)time(NULL) * 1000;
    st_append(b->store, q->id, &msg, 1, append_cb, o);
}

/* Routes the assembled message at publish time and appends it to every
 * queue reached; mandatory and unroutable: basic.return 312 first. */
static void publish_route(gw_chan_t *ch);

static void publish_done(gw_chan_t *ch)
{
    gw_txmsg_t *t;

    ch->pub_on = false;
    if (!ch->tx) {
        publish_route(ch);
        return;
    }
    /* In a transaction: kept (the buffer moves) until tx.commit. */
    if ((t = calloc(1, sizeof(*t))) == NULL) {
        CH_ERR(ch, GW_INTERNAL_ERROR, GW_BASIC_PUBLISH, "out of memory");
        return;
    }
    t->mandatory = ch->mandatory;
    t->exlen = ch->exlen;
    t->rklen = ch->rklen;
    memcpy(t->ex, ch->ex, ch->exlen);
    memcpy(t->rk, ch->rk, ch->rklen);
    t->pbuf = ch->pbuf;
    t->plen = ch->plen;
    t->body_off = ch->body_off;
    t->props_off = ch->props_off;
    t->props_len = ch->props_len;
    t->hdr_off = ch->hdr_off;
    t->hdr_len = ch->hdr_len;
    ch->pbuf = NULL;
    ch->pcap = ch->plen = 0;
    if (ch->txq_tail != NULL)
        ch->txq_tail->next = t;
    else
        ch->txq = t;
    ch->txq_tail = t;
}

static void publish_route(gw_chan_t *ch)
{
    gw_broker_t *b = ch->bc->b;
    gw_str_t ex = {ch->ex, ch->exlen}, rk = {ch->rk, ch->rklen};
    gw_pub_t *pub = NULL;
    size_t routed = 0;

    if (ch->confirm) {
        if ((pub = calloc(1, sizeof(*pub))) == NULL) {
            CH_ERR(ch, GW_INTERNAL_ERROR, GW_BASIC_PUBLISH, "out of memory");
            return;
        }
        pub->seq = ++ch->next_seq;
        if (ch->pubs_tail != NULL)
            ch->pubs_tail->next = pub;
        else
            ch->pubs = pub;
        ch->pubs_tail = pub;
    }
    if (ex.len == 0) {
        gw_queue_t *q = queue_find(b, rk);
        if (q != NULL && !q->gone && q->ready) {
            append_to(ch, q, pub);
            routed = 1;
        }
    } else {
        gw_route_out_t out = {0};
        gw_table_t hdrs = {ch->hdr_len > 0 ? ch->pbuf + ch->hdr_off : NULL, ch->hdr_len};
        gt_err_t rc = gw_route(b->router, ex, &rk, 1, hdrs, &out);
        if (rc != GT_OK && rc != GT_ENOTFOUND && pub != NULL)
            pub->failed = true;
        /* The result is borrowed until the next route: append_to does
         * not route, so it stays valid through the loop. */
        for (size_t i = 0; rc == GT_OK && i < out.n; i++) {
            gw_queue_t *q = queue_find(b, out.queues[i]);
            if (q != NULL && !q->gone && q->ready) {
                append_to(ch, q, pub);
                routed++;
            }
        }
    }
    if (routed == 0 && ch->mandatory) {
        gw_method_t m = {.id = GW_BASIC_RETURN};
        m.u.basic_return.reply_code = GW_NO_ROUTE;
        m.u.basic_return.reply_text = gw_str("NO_ROUTE");
        m.u.basic_return.exchange = ex;
        m.u.basic_return.routing_key = rk;
        gw_conn_send_content(ch->bc->c, ch->id, &m,
                             (gw_bytes_t){ch->pbuf + ch->props_off, ch->props_len},
                             ch->pbuf + ch->body_off, ch->plen - ch->body_off);
    }
    if (pub != NULL && pub->remaining == 0)
        confirms_flush(ch);
}

static bool pbuf_reserve(gw_chan_t *ch, size_t more)
{
    size_t need = ch->plen + more;
    uint8_t *p;

    if (need <= ch->pcap)
        return true;
    if (need < ch->pcap * 2)
        need = ch->pcap * 2;
    if ((p = realloc(ch->pbuf, need)) == NULL)
        return false;
    ch->pbuf = p;
    ch->pcap = need;
    return true;
}

static void on_publish_method(gw_chan_t *ch, const gw_method_t *m)
{
    const gw_basic_publish_t *p = &m->u.basic_publish;

    if (p->immediate) {
        gw_conn_error(ch->bc->c, GW_NOT_IMPLEMENTED, m->id, "immediate=true");
        return;
    }
    if (p->exchange.len > 0) {
        uint32_t flags = 0;
        if (!gw_route_exchange_get(ch->bc->b->router, p->exchange, NULL, &flags)) {
            CH_ERR(ch, GW_NOT_FOUND, m->id, "no exchange '%.*s' in vhost '/'",
                   (int)p->exchange.len, p->exchange.ptr);
            return;
        }
        if (flags & GW_XF_INTERNAL) {
            CH_ERR(ch, GW_ACCESS_REFUSED, m->id,
                   "cannot publish to internal exchange '%.*s' in vhost '/'",
                   (int)p->exchange.len, p->exchange.ptr);
            return;
        }
    }
    ch->pub_on = true;
    ch->mandatory = p->mandatory;
    ch->exlen = (uint8_t)p->exchange.len;
    memcpy(ch->ex, p->exchange.ptr, p->exchange.len);
    ch->rklen = (uint8_t)p->routing_key.len;
    memcpy(ch->rk, p->routing_key.ptr, p->routing_key.len);
}

static void on_publish_header(gw_chan_t *ch, const gw_content_header_t *h)
{
    size_t pre = 1 + 1 + ch->exlen + 1 + ch->rklen + 4;
    size_t first = h->body_size < 65536 ? (size_t)h->body_size : 65536;
    uint8_t *w;

    ch->plen = 0;
    if (!pbuf_reserve(ch, pre + h->raw_props.len + first)) {
        CH_ERR(ch, GW_INTERNAL_ERROR, GW_BASIC_PUBLISH, "out of memory");
        return;
    }
    w = ch->pbuf;
    *w++ = GW_REC_MAGIC;
    *w++ = ch->exlen;
    memcpy(w, ch->ex, ch->exlen);
    w += ch->exlen;
    *w++ = ch->rklen;
    memcpy(w, ch->rk, ch->rklen);
    w += ch->rklen;
    *w++ = (uint8_t)(h->raw_props.len >> 24);
    *w++ = (uint8_t)(h->raw_props.len >> 16);
    *w++ = (uint8_t)(h->raw_props.len >> 8);
    *w++ = (uint8_t)h->raw_props.len;
    ch->props_off = (size_t)(w - ch->pbuf);
    ch->props_len = h->raw_props.len;
    ch->hdr_off = ch->hdr_len = 0;
    if ((h->props.flags & GW_P_HEADERS) && h->props.headers.ptr != NULL &&
        h->props.headers.ptr >= h->raw_props.ptr &&
        h->props.headers.ptr + h->props.headers.len <= h->raw_props.ptr + h->raw_props.len) {
        ch->hdr_off = ch->props_off + (size_t)(h->props.headers.ptr - h->raw_props.ptr);
        ch->hdr_len = h->props.headers.len;
    }
    memcpy(w, h->raw_props.ptr, h->raw_props.len);
    w += h->raw_props.len;
    ch->plen = ch->body_off = (size_t)(w - ch->pbuf);
}

static void on_publish_body(gw_chan_t *ch, gw_bytes_t body)
{
    if (!pbuf_reserve(ch, body.len)) {
        CH_ERR(ch, GW_INTERNAL_ERROR, GW_BASIC_PUBLISH, "out of memory");
        return;
    }
    memcpy(ch->pbuf + ch->plen, body.ptr, body.len);
    ch->plen += body.len;
}

static void tx_discard(gw_chan_t *ch)
{
    while (ch->txq != NULL) {
        gw_txmsg_t *t = ch->txq;
        ch->txq = t->next;
        free(t->pbuf);
        free(t);
    }
    ch->txq_tail = NULL;
    while (ch->txa != NULL) {
        gw_txack_t *t = ch->txa;
        ch->txa = t->next;
        free(t);
    }
    ch->txa_tail = NULL;
}

static bool tx_check(gw_chan_t *ch, uint32_t mid)
{
    if (ch->tx)
        return true;
    CH_ERR(ch, GW_PRECONDITION_FAILED, mid, "channel is not transactional");
    return false;
}

static void on_tx_select(gw_chan_t *ch, const gw_method_t *m)
{
    gw_method_t r = {.id = GW_TX_SELECT_OK};

    if (ch->confirm) {
        CH_ERR(ch, GW_PRECONDITION_FAILED, m->id, "cannot switch from confirm to tx mode");
        return;
    }
    ch->tx = true;
    reply(ch, &r);
}

/* Publishes are routed and appended, acks applied; commit-ok once the
 * connection's appends have answered (bc_appends_done). */
static void on_tx_commit(gw_chan_t *ch, const gw_method_t *m)
{
    uint8_t *own = ch->pbuf;
    size_t own_cap = ch->pcap;
    gw_bconn_t *bc = ch->bc;

    if (!tx_check(ch, m->id))
        return;
    while (ch->txq != NULL && bc->ch[ch->id] == ch) {
        gw_txmsg_t *t = ch->txq;
        ch->txq = t->next;
        if (ch->txq == NULL)
            ch->txq_tail = NULL;
        ch->mandatory = t->mandatory;
        ch->exlen = t->exlen;
        ch->rklen = t->rklen;
        memcpy(ch->ex, t->ex, t->exlen);
        memcpy(ch->rk, t->rk, t->rklen);
        ch->pbuf = t->pbuf;
        ch->plen = t->plen;
        ch->body_off = t->body_off;
        ch->props_off = t->props_off;
        ch->props_len = t->props_len;
        ch->hdr_off = t->hdr_off;
        ch->hdr_len = t->hdr_len;
        publish_route(ch);
        free(t->pbuf);
        free(t);
    }
    ch->pbuf = own;
    ch->pcap = own_cap;
    ch->plen = 0;
    while (ch->txa != NULL && bc->ch[ch->id] == ch) {
        gw_txack_t *t = ch->txa;
        ch->txa = t->next;
        if (ch->txa == NULL)
            ch->txa_tail = NULL;
        /* Tags settled since (twice in the transaction) are skipped. */
        for (gw_unacked_t *u = ch->ua, *next; u != NULL; u = next) {
            next = u->next;
            if (t->multiple ? (t->tag == 0 || u->tag <= t->tag) : u->tag == t->tag)
                settle_one(ch, u, (settle_t)t->how);
            else if (t->multiple || u->tag > t->tag)
                break;
        }
        free(t);
    }
    if (bc->ch[ch->id] != ch)
        return;
    chan_pump(ch);
    if (bc->appends == 0) {
        gw_method_t r = {.id = GW_TX_COMMIT_OK};
        reply(ch, &r);
        return;
    }
    ch->commit_wait = true;
    bc->commit_waits++;
    gw_conn_stall(bc->c);
}

static void on_tx_rollback(gw_chan_t *ch, const gw_method_t *m)
{
    gw_method_t r = {.id = GW_TX_ROLLBACK_OK};

    if (!tx_check(ch, m->id))
        return;
    tx_discard(ch);
    reply(ch, &r);
}

static void on_confirm_select(gw_chan_t *ch, const gw_method_t *m)
{
    gw_method_t r = {.id = GW_CONFIRM_SELECT_OK};

    if (ch->tx) {
        CH_ERR(ch, GW_PRECONDITION_FAILED, m->id, "cannot switch from tx to confirm mode");
        return;
    }
    ch->confirm = true;
    if (!m->u.confirm_select.nowait)
        reply(ch, &r);
}

/* ---- exchanges and bindings (the router, gw_route.h) -------------------- */

static bool is_amq(gw_str_t n)
{
    return n.len >= 4 && memcmp(n.ptr, "amq.", 4) == 0;
}

static void default_refused(gw_chan_t *ch, uint32_t mid)
{
    CH_ERR(ch, GW_ACCESS_REFUSED, mid, "operation not permitted on the default exchange");
}

static bool exchange_known(gw_chan_t *ch, uint32_t mid, gw_str_t name)
{
    if (gw_route_exchange_get(ch->bc->b->router, name, NULL, NULL))
        return true;
    CH_ERR(ch, GW_NOT_FOUND, mid, "no exchange '%.*s' in vhost '/'", (int)name.len, name.ptr);
    return false;
}

static void on_exchange_declare(gw_chan_t *ch, const gw_method_t *m)
{
    const gw_exchange_declare_t *d = &m->u.exchange_declare;
    gw_router_t *r = ch->bc->b->router;
    gw_method_t ok = {.id = GW_EXCHANGE_DECLARE_OK};
    gw_xtype_t type, cur;
    uint32_t flags = (d->durable ? GW_XF_DURABLE : 0) | (d->auto_delete ? GW_XF_AUTO_DELETE : 0) |
                     (d->internal ? GW_XF_INTERNAL : 0),
             curf;

    if (d->passive) {
        if (d->exchange.len == 0) {
            default_refused(ch, m->id);
            return;
        }
        if (!exchange_known(ch, m->id, d->exchange))
            return;
        if (!d->nowait)
            reply(ch, &ok);
        return;
    }
    if (gw_xtype_parse(d->type, &type) != GT_OK) {
        gw_conn_error(ch->bc->c, GW_COMMAND_INVALID, m->id, "unknown exchange type '%.*s'",
                      (int)d->type.len, d->type.ptr);
        return;
    }
    if (d->exchange.len == 0) {
        default_refused(ch, m->id);
        return;
    }
    if (gw_route_exchange_get(r, d->exchange, &cur, &curf)) {
        static const struct {
            uint32_t bit;
            const char *name;
        } fl[] = {{GW_XF_DURABLE, "durable"},
                  {GW_XF_AUTO_DELETE, "auto_delete"},
                  {GW_XF_INTERNAL, "internal"}};
        if (cur != type) {
            CH_ERR(ch, GW_PRECONDITION_FAILED, m->id,
                   "inequivalent arg 'type' for exchange '%.*s' in vhost '/': received '%s' but "
                   "current is '%s'",
                   (int)d->exchange.len, d->exchange.ptr, gw_xtype_name(type),
                   gw_xtype_name(cur));
            return;
        }
        for (size_t i = 0; i < sizeof(fl) / sizeof(fl[0]); i++) {
            if ((curf & fl[i].bit) != (flags & fl[i].bit)) {
                CH_ERR(ch, GW_PRECONDITION_FAILED, m->id,
                       "inequivalent arg '%s' for exchange '%.*s' in vhost '/': received '%s' "
                       "but current is '%s'",
                       fl[i].name, (int)d->exchange.len, d->exchange.ptr,
                       yn(flags & fl[i].bit), yn(curf & fl[i].bit));
                return;
            }
        }
    } else {
        if (is_amq(d->exchange)) {
            CH_ERR(ch, GW_ACCESS_REFUSED, m->id,
                   "exchange name '%.*s' contains reserved prefix 'amq.*'", (int)d->exchange.len,
                   d->exchange.ptr);
            return;
        }
        if (gw_route_exchange_add(r, d->exchange, type, flags) != GT_OK) {
            CH_ERR(ch, GW_INTERNAL_ERROR, m->id, "cannot declare exchange '%.*s'",
                   (int)d->exchange.len, d->exchange.ptr);
            return;
        }
        {
            gw_value_t ae;
            gw_str_t an = {"", 0};
            if (gw_table_get(d->arguments, "alternate-exchange", &ae) && ae.type == 'S' &&
                ae.v.bytes.len <= 255) {
                an = (gw_str_t){(const char *)ae.v.bytes.ptr, ae.v.bytes.len};
                gw_route_exchange_set_alternate(r, d->exchange, &an);
            }
            if (d->durable) {
                uint8_t k[GW_META_KEY], v[300];
                size_t kl = name_key(k, d->exchange), vl = 0;
                v[vl++] = 1;
                v[vl++] = (uint8_t)type;
                v[vl++] = (uint8_t)flags;
                vl += put_s8(v + vl, an);
                if (meta_write(ch->bc->b, ch, m->id, GW_EXCHANGE_DECLARE_OK, d->nowait,
                               GW_NS_EXCHANGE, k, kl, v, vl, false))
                    return;
            }
        }
    }
    if (!d->nowait)
        reply(ch, &ok);
}

/* Auto-delete: an exchange that lost its last binding as a source goes. */
typedef struct {
    gw_broker_t *b;
    gw_str_t src[16];
    char buf[16][256];
    size_t n;
} lost_t;

static void note_lost(void *ctx, const gw_binding_t *bd)
{
    lost_t *l = ctx;

    binding_forget(l->b, bd);

    for (size_t i = 0; i < l->n; i++)
        if (l->src[i].len == bd->source.len && memcmp(l->src[i].ptr, bd->source.ptr, bd->source.len) == 0)
            return;
    if (l->n < 16) {
        memcpy(l->buf[l->n], bd->source.ptr, bd->source.len);
        l->src[l->n] = (gw_str_t){l->buf[l->n], bd->source.len};
        l->n++;
    }
}

/* Removes an exchange with its bindings and their records. */
static void exchange_drop(gw_broker_t *b, gw_str_t name, uint32_t flags, lost_t *l)
{
    if (flags & GW_XF_DURABLE) {
        uint8_t k[GW_META_KEY];
        size_t kl = name_key(k, name);
        meta_write(b, NULL, 0, 0, true, GW_NS_EXCHANGE, k, kl, NULL, 0, true);
    }
    if (l != NULL)
        gw_route_exchange_remove(b->router, name, note_lost, l);
    else
        gw_route_exchange_remove(b->router, name, binding_forget, b);
}

static void auto_delete_sources(gw_router_t *r, lost_t *l)
{
    for (size_t i = 0; i < l->n; i++) {
        uint32_t f;
        if (gw_route_exchange_get(r, l->src[i], NULL, &f) && (f & GW_XF_AUTO_DELETE) &&
            gw_route_count_source(r, l->src[i]) == 0)
            exchange_drop(l->b, l->src[i], f, NULL);
    }
}

static void on_exchange_delete(gw_chan_t *ch, const gw_method_t *m)
{
    const gw_exchange_delete_t *d = &m->u.exchange_delete;
    gw_router_t *r = ch->bc->b->router;
    gw_method_t ok = {.id = GW_EXCHANGE_DELETE_OK};
    lost_t *l;

    if (d->exchange.len == 0) {
        default_refused(ch, m->id);
        return;
    }
    if (gw_route_exchange_get(r, d->exchange, NULL, NULL)) {
        if (d->if_unused && gw_route_count_source(r, d->exchange) > 0) {
            CH_ERR(ch, GW_PRECONDITION_FAILED, m->id, "exchange '%.*s' in vhost '/' in use",
                   (int)d->exchange.len, d->exchange.ptr);
            return;
        }
        uint32_t f = 0;
        gw_route_exchange_get(r, d->exchange, NULL, &f);
        if ((l = calloc(1, sizeof(*l))) != NULL) {
            l->b = ch->bc->b;
            exchange_drop(ch->bc->b, d->exchange, f, l);
            auto_delete_sources(r, l);
            free(l);
        } else {
            exchange_drop(ch->bc->b, d->exchange, f, NULL);
        }
    }
    if (!d->nowait)
        reply(ch, &ok);
}

static void bind_common(gw_chan_t *ch, uint32_t mid, gw_str_t src, gw_dest_kind_t kind,
                        gw_str_t dest, gw_str_t key, gw_table_t args, bool bind, bool nowait,
                        gw_method_id_t okid)
{
    gw_router_t *r = ch->bc->b->router;
    gw_method_t ok = {.id = okid};
    gt_err_t rc;

    if (src.len == 0 || (kind == GW_DEST_EXCHANGE && dest.len == 0)) {
        default_refused(ch, mid);
        return;
    }
    if (bind) {
        gw_xtype_t t;
        if (kind == GW_DEST_EXCHANGE && !exchange_known(ch, mid, dest))
            return;
        if (!exchange_known(ch, mid, src))
            return;
        if (gw_route_exchange_get(r, src, &t, NULL) && t == GW_XTYPE_HEADERS) {
            char text[256];
            if (gw_route_headers_check(args, text, sizeof(text)) != GT_OK) {
                CH_ERR(ch, GW_PRECONDITION_FAILED, mid, "%s", text);
                return;
            }
        }
        rc = gw_route_bind(r, src, kind, dest, key, args, NULL);
        if (rc == GT_OK && exchange_durable(ch->bc->b, src) &&
            (kind == GW_DEST_EXCHANGE ? exchange_durable(ch->bc->b, dest)
                                      : queue_find(ch->bc->b, dest) != NULL &&
                                            queue_find(ch->bc->b, dest)->durable) &&
            src.len + dest.len + key.len + 16 <= GW_META_KEY) {
            uint8_t k[GW_META_KEY + 64];
            size_t kl = binding_key(k, src, kind, dest, key, args);
            if (meta_write(ch->bc->b, ch, mid, okid, nowait, GW_NS_BINDING, k, kl,
                           args.ptr != NULL ? args.ptr : (const uint8_t *)"", args.len, false))
                return;
        }
    } else {
        lost_t *l = calloc(1, sizeof(*l));
        bool removed = false;
        rc = gw_route_unbind(r, src, kind, dest, key, args, &removed);
        if (l != NULL) {
            l->b = ch->bc->b;
            if (rc == GT_OK && removed) {
                gw_binding_t bd = {.source = src, .dest_kind = kind, .dest = dest, .key = key,
                                   .args = args};
                note_lost(l, &bd);
                auto_delete_sources(r, l);
            }
            free(l);
        }
    }
    if (rc == GT_ENOTFOUND) {
        CH_ERR(ch, GW_NOT_FOUND, mid, "no exchange '%.*s' in vhost '/'", (int)src.len, src.ptr);
        return;
    }
    if (rc != GT_OK) {
        CH_ERR(ch, rc == GT_EINVAL ? GW_PRECONDITION_FAILED : GW_INTERNAL_ERROR, mid,
               "cannot %s: %s", bind ? "bind" : "unbind", gt_err_str(rc));
        return;
    }
    if (!nowait)
        reply(ch, &ok);
}

static void on_queue_bind(gw_chan_t *ch, const gw_method_t *m)
{
    const gw_queue_bind_t *qb = &m->u.queue_bind;
    bool bind = m->id == GW_QUEUE_BIND;
    gw_str_t name, key = qb->routing_key;

    if (!resolve_name(ch, m->id, qb->queue, &name))
        return;
    if (qb->queue.len == 0 && key.len == 0)
        key = name; /* RabbitMQ's shortcut: the queue's name as key */
    if (qb->exchange.len == 0) {
        default_refused(ch, m->id);
        return;
    }
    if (bind || queue_find(ch->bc->b, name) != NULL) {
        if (queue_for(ch, m->id, name) == NULL)
            return;
    }
    bind_common(ch, m->id, qb->exchange, GW_DEST_QUEUE, name, key, qb->arguments, bind,
                bind ? qb->nowait : false, bind ? GW_QUEUE_BIND_OK : GW_QUEUE_UNBIND_OK);
}

static void on_exchange_bind(gw_chan_t *ch, const gw_method_t *m)
{
    const gw_exchange_bind_t *eb = &m->u.exchange_bind;
    bool bind = m->id == GW_EXCHANGE_BIND;

    bind_common(ch, m->id, eb->source, GW_DEST_EXCHANGE, eb->destination, eb->routing_key,
                eb->arguments, bind, eb->nowait, bind ? GW_EXCHANGE_BIND_OK : GW_EXCHANGE_UNBIND_OK);
}

/* ---- dispatch ---------------------------------------------------------- */

typedef struct {
    gw_method_id_t id;
    void (*fn)(gw_chan_t *ch, const gw_method_t *m);
    bool barrier; /* must see the connection's earlier publishes */
} handler_t;

static const handler_t handlers[] = {
    {GW_EXCHANGE_DECLARE, on_exchange_declare, false},
    {GW_EXCHANGE_DELETE, on_exchange_delete, false},
    {GW_EXCHANGE_BIND, on_exchange_bind, false},
    {GW_EXCHANGE_UNBIND, on_exchange_bind, false},
    {GW_QUEUE_BIND, on_queue_bind, false},
    {GW_QUEUE_UNBIND, on_queue_bind, false},
    {GW_QUEUE_DECLARE, on_queue_declare, true},
    {GW_QUEUE_DELETE, on_queue_delete, true},
    {GW_QUEUE_PURGE, on_queue_purge, true},
    {GW_BASIC_QOS, on_basic_qos, false},
    {GW_BASIC_CONSUME, on_basic_consume, false},
    {GW_BASIC_CANCEL, on_basic_cancel, false},
    {GW_BASIC_GET, on_basic_get, true},
    {GW_BASIC_ACK, on_basic_ack, false},
    {GW_BASIC_NACK, on_basic_nack, false},
    {GW_BASIC_REJECT, on_basic_reject, false},
    {GW_BASIC_RECOVER, on_basic_recover, false},
    {GW_BASIC_RECOVER_ASYNC, on_basic_recover, false},
    {GW_CONFIRM_SELECT, on_confirm_select, false},
    {GW_TX_SELECT, on_tx_select, false},
    {GW_TX_COMMIT, on_tx_commit, false},
    {GW_TX_ROLLBACK, on_tx_rollback, false},
};

static void chan_dispatch(gw_chan_t *ch, const gw_method_t *m, const gw_frame_t *fr)
{
    const gw_method_info_t *mi = gw_method_info(m->id);
    gw_bconn_t *bc = ch->bc;

    for (size_t i = 0; i < sizeof(handlers) / sizeof(handlers[0]); i++) {
        if (handlers[i].id != m->id)
            continue;
        if (handlers[i].barrier && bc->appends > 0 && fr != NULL) {
            /* Wait for the publishes before it; the connection stalls. */
            if ((bc->held = malloc(fr->size > 0 ? fr->size : 1)) == NULL) {
                CH_ERR(ch, GW_INTERNAL_ERROR, m->id, "out of memory");
                return;
            }
            memcpy(bc->held, fr->payload, fr->size);
            bc->held_len = fr->size;
            bc->held_ch = ch->id;
            gw_conn_stall(bc->c);
            return;
        }
        handlers[i].fn(ch, m);
        return;
    }
    if (mi != NULL && !(mi->from & GW_FROM_CLIENT)) {
        gw_conn_error(bc->c, GW_COMMAND_INVALID, m->id, "%s is not allowed from a client",
                      mi->name);
        return;
    }
    gw_conn_error(bc->c, GW_NOT_IMPLEMENTED, m->id,
                  "%s is not implemented by this gateway yet", mi != NULL ? mi->name : "method");
}

static void chan_event(gw_bconn_t *bc, gw_chan_t *ch, uint16_t id, const gw_asm_out_t *ev,
                       const gw_frame_t *fr);

void gw_broker_event(gw_bconn_t *bc, uint16_t id, const gw_asm_out_t *ev, const gw_frame_t *fr)
{
    gw_chan_t *ch = bc->ch[id];

    if (ch == NULL)
        return;
    ch_ref(ch); /* a handler may close the channel */
    chan_event(bc, ch, id, ev, fr);
    ch_unref(ch);
}

static void chan_event(gw_bconn_t *bc, gw_chan_t *ch, uint16_t id, const gw_asm_out_t *ev,
                       const gw_frame_t *fr)
{
    switch (ev->event) {
    case GW_EV_METHOD:
        chan_dispatch(ch, &ev->method, fr);
        return;
    case GW_EV_CONTENT:
        if (ev->method.id == GW_BASIC_PUBLISH) {
            on_publish_method(ch, &ev->method);
        } else {
            gw_conn_error(bc->c, GW_COMMAND_INVALID, ev->method.id,
                          "%s is not allowed from a client",
                          gw_method_info(ev->method.id)->name);
        }
        return;
    case GW_EV_HEADER:
        if (!ch->pub_on)
            return; /* the publish was refused; its content is dropped */
        on_publish_header(ch, &ev->header);
        if (ch->pub_on && ev->done && bc->ch[id] == ch)
            publish_done(ch);
        return;
    case GW_EV_BODY:
        if (!ch->pub_on)
            return;
        on_publish_body(ch, ev->body);
        if (ch->pub_on && ev->done && bc->ch[id] == ch)
            publish_done(ch);
        return;
    }
}

/* ---- channels and connections ------------------------------------------ */

gw_asm_t *gw_broker_asm(gw_bconn_t *bc, uint16_t id)
{
    return bc->ch[id] != NULL ? &bc->ch[id]->asm_ : NULL;
}

bool gw_broker_chan_open(gw_bconn_t *bc, uint16_t id)
{
    gw_chan_t *ch;

    if (id >= GW_CHAN_SLOTS || bc->ch[id] != NULL || (ch = calloc(1, sizeof(*ch))) == NULL)
        return false;
    ch->refs = 1;
    ch->id = id;
    bc_ref(bc);
    ch->bc = bc;
    ch->asm_.max_body = GW_MAX_BODY;
    bc->ch[id] = ch;
    return true;
}

void gw_broker_chan_close(gw_bconn_t *bc, uint16_t id)
{
    gw_chan_t *ch = id < GW_CHAN_SLOTS ? bc->ch[id] : NULL;

    if (ch == NULL)
        return;
    bc->ch[id] = NULL;
    ch->closed = true;
    ch->pub_on = false;
    while (ch->consumers != NULL)
        consumer_remove(ch->consumers, false);
    /* Unacked deliveries go back at once, marked redelivered. */
    while (ch->ua != NULL) {
        gw_unacked_t *u = ch->ua;
        ua_unlink(ch, u);
        if (!u->q->gone)
            fire_requeue(bc->b, u->q, u->handle);
        ua_free(u);
    }
    if (ch->commit_wait) {
        ch->commit_wait = false;
        bc->commit_waits--;
        if (bc->c != NULL)
            gw_conn_unstall(bc->c);
    }
    if (bc->held != NULL && bc->held_ch == id) {
        free(bc->held);
        bc->held = NULL;
        if (bc->c != NULL)
            gw_conn_unstall(bc->c);
    }
    ch_unref(ch);
}

gw_bconn_t *gw_broker_conn_open(gw_broker_t *b, gw_conn_t *c)
{
    gw_bconn_t *bc = calloc(1, sizeof(*bc));

    if (bc == NULL)
        return NULL;
    bc->refs = 1;
    bc->b = b;
    bc->c = c;
    bc->next = b->conns;
    if (b->conns != NULL)
        b->conns->prev = bc;
    b->conns = bc;
    return bc;
}

void gw_broker_conn_close(gw_bconn_t *bc)
{
    gw_broker_t *b;

    if (bc == NULL)
        return;
    b = bc->b;
    bc->c = NULL;
    for (uint32_t i = 0; i < GW_CHAN_SLOTS; i++)
        if (bc->ch[i] != NULL)
            gw_broker_chan_close(bc, (uint16_t)i);
    /* Its exclusive queues go with it. */
    for (uint32_t h = 0; h < GW_QMAP; h++) {
        gw_queue_t *q = b->qmap[h], *next;
        for (; q != NULL; q = next) {
            next = q->hnext;
            if (q->exclusive && q->owner == bc)
                queue_drop(q);
        }
    }
    if (bc->prev != NULL)
        bc->prev->next = bc->next;
    else
        b->conns = bc->next;
    if (bc->next != NULL)
        bc->next->prev = bc->prev;
    bc_unref(bc);
}

void gw_broker_writable(gw_bconn_t *bc)
{
    for (uint32_t i = 0; i < GW_CHAN_SLOTS; i++)
        if (bc->ch[i] != NULL && bc->ch[i]->consumers != NULL)
            chan_pump(bc->ch[i]);
}

/* Idle consumers look again now and then (a message whose invisibility
 * ran out, one appended by another front end). */
static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    gw_broker_t *b = arg;

    (void)fd;
    (void)what;
    for (uint32_t h = 0; h < GW_QMAP; h++)
        for (gw_queue_t *q = b->qmap[h]; q != NULL; q = q->hnext)
            if (q->consumers != NULL)
                queue_kick(q);
}

gw_broker_t *gw_broker_new(struct event_base *base, st_store_t *store,
                           void (*ready_fn)(void *arg), void *ready_arg)
{
    gw_broker_t *b = calloc(1, sizeof(*b));
    struct timeval tv = {GW_TICK_MS / 1000, (GW_TICK_MS % 1000) * 1000};

    if (b == NULL)
        return NULL;
    b->base = base;
    b->store = store;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    b->post_ev = event_new(base, -1, 0, post_cb, b);
    b->tick = event_new(base, -1, EV_PERSIST, tick_cb, b);
    b->router = gw_router_new();
    if (b->post_ev == NULL || b->tick == NULL || b->router == NULL) {
        gw_broker_free(b);
        return NULL;
    }
    {
        /* RabbitMQ's predeclared exchanges (durable). */
        static const struct {
            const char *name;
            gw_xtype_t type;
            uint32_t flags;
        } pre[] = {
            {"amq.direct", GW_XTYPE_DIRECT, GW_XF_DURABLE},
            {"amq.fanout", GW_XTYPE_FANOUT, GW_XF_DURABLE},
            {"amq.topic", GW_XTYPE_TOPIC, GW_XF_DURABLE},
            {"amq.headers", GW_XTYPE_HEADERS, GW_XF_DURABLE},
            {"amq.match", GW_XTYPE_HEADERS, GW_XF_DURABLE},
            {"amq.rabbitmq.trace", GW_XTYPE_TOPIC, GW_XF_DURABLE | GW_XF_INTERNAL},
        };
        for (size_t i = 0; i < sizeof(pre) / sizeof(pre[0]); i++)
            gw_route_exchange_add(b->router, gw_str(pre[i].name), pre[i].type, pre[i].flags);
    }
    b->ready_fn = ready_fn;
    b->ready_arg = ready_arg;
    {
        load_op_t *o = calloc(1, sizeof(*o));
        if (o == NULL) {
            gw_broker_free(b);
            return NULL;
        }
        o->op.b = b;
        o->op.fn = load_fn;
        load_next(b, o);
    }
    event_add(b->tick, &tv);
    return b;
}

void gw_broker_stop(gw_broker_t *b)
{
    if (b == NULL)
        return;
    b->stopping = true;
    event_del(b->tick);
}

void gw_broker_free(gw_broker_t *b)
{
    if (b == NULL)
        return;
    b->stopping = true;
    /* The loop has stopped: run the store's last answers here. */
    pthread_mutex_lock(&b->mu);
    while (b->ops > 0) {
        gw_op_t *list = b->head;
        b->head = b->tail = NULL;
        if (list == NULL) {
            pthread_cond_wait(&b->cv, &b->mu);
            continue;
        }
        pthread_mutex_unlock(&b->mu);
        ops_run(b, list);
        dirty_flush(b);
        pthread_mutex_lock(&b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    for (uint32_t h = 0; h < GW_QMAP; h++) {
        while (b->qmap[h] != NULL) {
            gw_queue_t *q = b->qmap[h];
            b->qmap[h] = q->hnext;
            q->gone = true;
            q_unref(q);
        }
    }
    gw_router_free(b->router);
    if (b->post_ev != NULL)
        event_free(b->post_ev);
    if (b->tick != NULL)
        event_free(b->tick);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    free(b);
}
