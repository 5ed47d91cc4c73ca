/* The AMQP broker's durable metadata: durable queues, exchanges and
 * bindings as records in the store (st_meta_*), written as they are
 * declared and read back at start (docs/amqp.md, "Storage mapping"). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gt_log.h"
#include "gw_bridge.h"
#include "gw_broker_int.h"
#include "gw_delay.h"
#include "gw_maxlen.h"
#include "gw_ops.h"

/* ---- durable metadata (st_meta_*) -------------------------------------- *
 * Durable queues, exchanges and bindings are records in the store's
 * metadata space, so that they survive a restart (and, with a remote store,
 * are shared).  Namespaces and layouts:
 *   amqp.queue     key: vhost (u8 len + bytes) + name;
 *                  value: version 1, flags (1 durable, 2 auto-delete), store id
 *                  (u8 len + bytes), arguments table as declared (u32 len +
 *                  bytes; records written before gw_qargs have an empty one,
 *                  and whatever follows the table is for later versions)
 *   amqp.exchange  key: vhost + name; value: 1, type, flags, alternate
 *                  exchange (u8 len + bytes)
 *   amqp.binding   key: vhost + source (u8 + bytes) + kind (0 queue, 1
 *                  exchange) + destination (u8 + bytes) + routing key (u8 +
 *                  bytes) + FNV-1a 64 of the arguments as sent;
 *                  value: the arguments table
 * A binding is durable when its source and destination are.  The vhost in
 * each key is the vhost the object lives in; at start every record goes
 * back into its own vhost (gw_vhost_get), the vhost created if needed. */

size_t gw_meta_put_s8(uint8_t *p, gw_str_t s)
{
    p[0] = (uint8_t)s.len;
    memcpy(p + 1, s.ptr, s.len);
    return 1 + s.len;
}

static gw_str_t vh_str(const gw_vhost_t *vh) { return (gw_str_t){vh->name, vh->nlen}; }

size_t gw_meta_name_key(uint8_t *k, const gw_vhost_t *vh, gw_str_t name)
{
    size_t n = gw_meta_put_s8(k, vh_str(vh));

    memcpy(k + n, name.ptr, name.len);
    return n + name.len;
}

bool gw_meta_binding_fits(const gw_vhost_t *vh, gw_str_t src, gw_str_t dest, gw_str_t key)
{
    return (size_t)vh->nlen + src.len + dest.len + key.len + 16 <= GW_META_KEY;
}

size_t gw_meta_binding_key(uint8_t *k, const gw_vhost_t *vh, gw_str_t src, gw_dest_kind_t kind,
                           gw_str_t dest, gw_str_t key, gw_table_t args)
{
    uint64_t h = 1469598103934665603ull;
    size_t n = gw_meta_put_s8(k, vh_str(vh));

    n += gw_meta_put_s8(k + n, src);
    k[n++] = kind == GW_DEST_EXCHANGE ? 1 : 0;
    n += gw_meta_put_s8(k + n, dest);
    n += gw_meta_put_s8(k + n, key);
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
        if (op->err != GT_OK && gw_chan_live(o->ch)) {
            CH_ERR(o->ch, GW_INTERNAL_ERROR, o->mid, "cannot store the declaration: %s",
                   gt_err_str(op->err));
        } else if (!o->nowait) {
            gw_method_t r = {.id = o->okid};
            gw_chan_reply(o->ch, &r);
        }
        if (o->ch->bc->c != NULL)
            gw_conn_unstall(o->ch->bc->c);
        gw_chan_unref(o->ch);
    }
    free(o);
}

/* ch NULL: fire and forget; else gw_chan_reply okid when durable. */
static mop_t *mop_new(gw_broker_t *b, gw_chan_t *ch, uint32_t mid, gw_method_id_t okid,
                      bool nowait)
{
    mop_t *o = gw_op_new(b, sizeof(*o), mop_fn);

    if (o == NULL)
        return NULL;
    if (ch != NULL) {
        gw_chan_ref(ch);
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
bool gw_meta_write(gw_broker_t *b, gw_chan_t *ch, uint32_t mid, gw_method_id_t okid,
                       bool nowait, const char *ns, const uint8_t *key, size_t klen,
                       const uint8_t *value, size_t vlen, bool del)
{
    mop_t *o = mop_new(b, ch, mid, okid, nowait);

    if (o == NULL)
        return false;
    if (del)
        st_meta_del(b->store, ns, key, (uint32_t)klen, gw_op_done_cb, o);
    else
        st_meta_put(b->store, ns, key, (uint32_t)klen, value, (uint32_t)vlen, gw_op_done_cb, o);
    return true;
}

void gw_meta_binding_forget(void *ctx, const gw_binding_t *bd)
{
    gw_vhost_t *vh = ctx;
    uint8_t k[GW_META_KEY + 64];
    size_t n;

    if (!gw_meta_binding_fits(vh, bd->source, bd->dest, bd->key))
        return;
    n = gw_meta_binding_key(k, vh, bd->source, bd->dest_kind, bd->dest, bd->key, bd->args);
    gw_meta_write(vh->b, NULL, 0, 0, true, GW_NS_BINDING, k, n, NULL, 0, true);
}

bool gw_exchange_durable(gw_vhost_t *vh, gw_str_t name)
{
    uint32_t f = 0;

    return gw_route_exchange_get(vh->router, name, NULL, &f) && (f & GW_XF_DURABLE);
}

/* The queue's record: key into k (GW_META_KEY); the value is returned
 * (malloc'd, *vl bytes), or NULL when out of memory. */
uint8_t *gw_meta_queue_record(const gw_queue_t *q, uint8_t *k, size_t *kl, size_t *vl)
{
    gw_table_t args = gw_qargs_table(&q->args);
    uint8_t *v = malloc(2 + 1 + sizeof(q->id) + 4 + args.len);
    size_t n = 0;

    *kl = gw_meta_name_key(k, q->vh, (gw_str_t){q->name, q->nlen});
    if (v == NULL)
        return NULL;
    v[n++] = 1;
    v[n++] = (uint8_t)((q->durable ? 1 : 0) | (q->auto_delete ? 2 : 0));
    n += gw_meta_put_s8(v + n, gw_str(q->id));
    v[n++] = (uint8_t)(args.len >> 24);
    v[n++] = (uint8_t)(args.len >> 16);
    v[n++] = (uint8_t)(args.len >> 8);
    v[n++] = (uint8_t)args.len;
    if (args.len > 0)
        memcpy(v + n, args.ptr, args.len);
    *vl = n + args.len;
    return v;
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

/* At start, after the metadata: st_requeue of each queue, then ready. */
typedef struct {
    gw_op_t op;
    uint64_t n;
    gw_queue_t *q; /* ref */
    char id[40];
} requeue_op_t;

void gw_meta_ready_step(gw_broker_t *b)
{
    if (--b->requeues > 0)
        return;
    b->loaded = true;
    gw_bridge_ready(b);
    if (b->ready_fn != NULL && !b->stopping)
        b->ready_fn(b->ready_arg);
}

/* A queue read back at start has its unacked messages requeued and its
 * counts read: only now is its head looked at for expired messages.  The
 * look pops the head (invisible until given back), so done earlier it hid
 * that message from the recount: one short, and the first publish after
 * the restart did not drop the head. */
static void queue_loaded(gw_queue_t *q)
{
    if (!q->gone && !q->b->stopping && q->ttl.head_ev != NULL)
        gw_ttl_loaded(q);
    gw_meta_ready_step(q->b);
}

static void requeue_fn(gw_op_t *op)
{
    requeue_op_t *r = (requeue_op_t *)op;

    if (op->err != GT_OK && op->err != GT_ENOTFOUND)
        GT_LOG(WARN, "amqp", "cannot requeue the unacked messages of %s: %s", r->id,
               gt_err_str(op->err));
    else if (r->n > 0)
        GT_LOG(INFO, "amqp", "%s: %llu unacked messages of an earlier run requeued", r->id,
               (unsigned long long)r->n);
    /* then a limited queue's ready counts (gw_maxlen.h), then its head */
    if (!gw_maxlen_recount(r->q, queue_loaded))
        queue_loaded(r->q);
    gw_queue_unref(r->q);
    free(r);
}

static void requeue_cb(void *arg, gt_err_t err, uint64_t n)
{
    requeue_op_t *r = arg;

    r->op.err = err;
    r->n = n;
    gw_op_post(&r->op);
}

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
    gw_op_post(&o->op);
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
    {
        /* Tests: this namespace's read fails. */
        const char *e = getenv("GANTRY_TEST_AMQP_META_FAIL");
        if (e != NULL && strcmp(e, req.ns) == 0) {
            load_cb(o, GT_EIO, NULL, 0, false);
            return;
        }
    }
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
    gw_meta_write(b, NULL, 0, 0, true, ns, r->key, r->klen, NULL, 0, true);
}

static void load_one(gw_broker_t *b, int phase, const lrec_t *r)
{
    size_t at = 0;
    gw_str_t vname, name;
    gw_vhost_t *vh;

    if (!get_s8(r->key, r->klen, &at, &vname))
        return;
    /* Each record into its own vhost; one no longer configured is kept
     * (unreachable until it is again), so are its queues' messages. */
    if ((vh = gw_vhost_get(b, vname, true)) == NULL) {
        GT_LOG(WARN, "amqp", "out of memory for vhost '%.*s'", (int)vname.len, vname.ptr);
        b->meta_partial = true;
        return;
    }
    if (phase == 0) {
        size_t v = 3;
        gw_str_t ae;
        name = (gw_str_t){(const char *)r->key + at, r->klen - at};
        if (r->vlen < 4 || r->value[0] != 1 || r->value[1] > GW_XTYPE_HEADERS ||
            !get_s8(r->value, r->vlen, &v, &ae))
            return;
        if (gw_route_exchange_add(vh->router, name, (gw_xtype_t)r->value[1], r->value[2]) ==
                GT_OK &&
            ae.len > 0)
            gw_route_exchange_set_alternate(vh->router, name, &ae);
    } else if (phase == 1) {
        size_t v = 2;
        gw_str_t id;
        char idbuf[40];
        gw_queue_t *q;
        gw_qargs_t qa;
        name = (gw_str_t){(const char *)r->key + at, r->klen - at};
        if (r->vlen < 3 || r->value[0] != 1 || !get_s8(r->value, r->vlen, &v, &id) ||
            id.len >= sizeof(idbuf) || gw_queue_find(vh, name) != NULL)
            return;
        memcpy(idbuf, id.ptr, id.len);
        idbuf[id.len] = '\0';
        memset(&qa, 0, sizeof(qa));
        if (v + 4 <= r->vlen) { /* the arguments (empty in older records) */
            uint32_t al = (uint32_t)r->value[v] << 24 | (uint32_t)r->value[v + 1] << 16 |
                          (uint32_t)r->value[v + 2] << 8 | r->value[v + 3];
            if (al > r->vlen - v - 4 || !gw_qargs_load(r->value + v + 4, al, &qa)) {
                GT_LOG(WARN, "amqp", "queue '%.*s': unreadable arguments in its record",
                       (int)name.len, name.ptr);
                memset(&qa, 0, sizeof(qa));
            }
        }
        if ((q = gw_queue_add(vh, name, idbuf)) == NULL) {
            gw_qargs_free(&qa);
            b->meta_partial = true;
            return;
        }
        q->args = qa;
        q->durable = true;
        q->auto_delete = (r->value[1] & 2) != 0;
        q->ready = true;
        if (!gw_ttl_from_args(q)) /* the head look follows (queue_loaded) */
            GT_LOG(WARN, "amqp", "queue '%.*s': no memory for its TTL timers", (int)name.len,
                   name.ptr);
        if (!gw_maxlen_init(q))
            GT_LOG(WARN, "amqp", "queue '%.*s': no memory for its length limits", (int)name.len,
                   name.ptr);
        {
            char why[GW_REPLY_TEXT_MAX + 1]; /* x-delayed-retry-*, checked when declared */
            gw_ops_queue_args(q, gw_qargs_table(&q->args), why, sizeof(why));
        }
    } else {
        gw_str_t src, dest, key;
        uint8_t kind;
        gw_table_t args = {r->vlen > 0 ? r->value : NULL, r->vlen};
        if (!get_s8(r->key, r->klen, &at, &src) || at >= r->klen)
            return;
        kind = r->key[at++];
        if (!get_s8(r->key, r->klen, &at, &dest) || !get_s8(r->key, r->klen, &at, &key))
            return;
        if ((kind == 0 && gw_queue_find(vh, dest) == NULL) ||
            gw_route_bind(vh->router, src, kind == 1 ? GW_DEST_EXCHANGE : GW_DEST_QUEUE, dest,
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
        /* any vhost's queue (the loaded ones of every vhost) */
        for (gw_vhost_t *vh = b->vhosts; vh != NULL && !used; vh = vh->next)
            for (uint32_t h = 0; h < GW_QMAP && !used; h++)
                for (gw_queue_t *q = vh->qmap[h]; q != NULL && !used; q = q->hnext)
                    used = strcmp(q->id, o->names[i]) == 0;
        if (used)
            continue;
        if ((d = gw_op_new(b, sizeof(*d), gw_op_free_fn)) != NULL)
            st_group_delete(b->store, o->names[i], gw_op_done_cb, d);
        if ((d = gw_op_new(b, sizeof(*d), gw_op_free_fn)) != NULL)
            st_topic_delete(b->store, o->names[i], gw_op_done_cb, d);
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
    gw_op_post(&o->op);
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
    if (op->err != GT_OK) {
        GT_LOG(ERROR, "amqp", "cannot read the durable AMQP metadata (%s): %s",
               load_ns[o->phase], gt_err_str(op->err));
        b->meta_partial = true;
    }
    if (op->err == GT_OK && !b->stopping && (o->more || o->phase < 2)) {
        if (!o->more) {
            o->phase++;
            o->after_len = 0;
        }
        load_next(b, o);
        return;
    }
    for (gw_vhost_t *vh = b->vhosts; vh != NULL; vh = vh->next) {
        size_t nq = 0;
        for (uint32_t h = 0; h < GW_QMAP; h++)
            for (gw_queue_t *q = vh->qmap[h]; q != NULL; q = q->hnext)
                nq++;
        GT_LOG(INFO, "amqp",
               "durable metadata read: vhost '%s': %zu exchanges, %zu queues, %zu bindings",
               vh->name, gw_route_exchange_count(vh->router), nq,
               gw_route_binding_count(vh->router));
    }
    free(o);
    if (b->meta_partial) {
        /* Queues not read back are not known to be gone: keep their data. */
        GT_LOG(WARN, "amqp", "the durable metadata was not all read: the store topics of "
               "undeclared queues are kept");
    } else if (!b->stopping) {
        sweep_op_t *w = gw_op_new(b, sizeof(*w), sweep_fn);
        if (w != NULL)
            st_topic_get(b->store, NULL, sweep_cb, w);
    }
    /* deliveries of an earlier run have no consumer any more: they come
     * back at once (redelivered) before the listener accepts */
    b->requeues = 1;
    if (!b->stopping) { /* the delayed messages' timers topic (gw_delay.c) */
        b->requeues++;
        gw_delay_start(b, gw_meta_ready_step);
    }
    for (gw_vhost_t *vh = b->vhosts; vh != NULL; vh = vh->next)
        for (uint32_t h = 0; h < GW_QMAP && !b->stopping; h++)
            for (gw_queue_t *q = vh->qmap[h]; q != NULL; q = q->hnext) {
                requeue_op_t *r = gw_op_new(b, sizeof(*r), requeue_fn);
                if (r == NULL)
                    continue;
                memcpy(r->id, q->id, sizeof(r->id));
                gw_queue_ref(q);
                r->q = q;
                b->requeues++;
                st_requeue(b->store, q->id, q->id, requeue_cb, r);
            }
    if (!b->stopping)
        gw_bridge_start(b); /* exchanges, topics and records of the bridges */
    gw_meta_ready_step(b);
}


bool gw_meta_load_start(gw_broker_t *b)
{
    load_op_t *o = calloc(1, sizeof(*o));

    if (o == NULL)
        return false;
    o->op.b = b;
    o->op.fn = load_fn;
    load_next(b, o);
    return true;
}
