/* The AMQP broker's queues: the name map (one per vhost), queue.declare /
 * delete / purge.  A queue is a store topic (one queue) plus a group named
 * by its id, AMQP-q- and 16 random hex digits: ids never derive from the
 * vhost or name, so that queues of the same name in two vhosts have ids of
 * their own, and an id once given is kept in the queue's durable record. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "gt_log.h"
#include "gw_broker_int.h"
#include "gw_maxlen.h"
#include "gw_ops.h"
#include "gw_reply.h"
#include "gw_maxlen.h"
#include "gw_prio.h"

/* ---- queues ------------------------------------------------------------ */

static uint32_t name_hash(const char *p, size_t n)
{
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)p[i]) * 16777619u;
    return h;
}

gw_queue_t *gw_queue_find(gw_vhost_t *vh, gw_str_t name)
{
    gw_queue_t *q = vh->qmap[name_hash(name.ptr, name.len) % GW_QMAP];

    for (; q != NULL; q = q->hnext)
        if (q->nlen == name.len && memcmp(q->name, name.ptr, name.len) == 0)
            return q;
    return NULL;
}

void gw_random_bytes(void *p, size_t n)
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
size_t gw_gen_name(const char *prefix, char *out, size_t cap)
{
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint8_t r[18];
    size_t n = (size_t)snprintf(out, cap, "%s", prefix);

    gw_random_bytes(r, 16);
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
    gw_maxlen_kick(arg);
    gw_queue_kick(arg);
}

gw_queue_t *gw_queue_add(gw_vhost_t *vh, gw_str_t name, const char *id)
{
    gw_broker_t *b = vh->b;
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
    q->vh = vh;
    if (!gw_ttl_init(q, -1, 0)) {
        event_free(q->kick_ev);
        gw_ttl_free(q);
        free(q);
        return NULL;
    }
    q->nlen = (uint8_t)name.len;
    memcpy(q->name, name.ptr, name.len);
    gw_random_bytes(r, sizeof(r));
    if (id != NULL)
        snprintf(q->id, sizeof(q->id), "%s", id);
    else
        snprintf(q->id, sizeof(q->id), "AMQP-q-%02x%02x%02x%02x%02x%02x%02x%02x", r[0], r[1],
                 r[2], r[3], r[4], r[5], r[6], r[7]);
    if (!gw_ops_queue_add(q)) {
        event_free(q->kick_ev);
        free(q);
        return NULL;
    }
    h = name_hash(name.ptr, name.len) % GW_QMAP;
    q->hnext = vh->qmap[h];
    vh->qmap[h] = q;
    return q;
}


/* Deletes q: out of the map, its consumers cancelled (basic.cancel to
 * clients that take it), its store topic and group deleted. */
void gw_queue_drop(gw_queue_t *q)
{
    gw_broker_t *b = q->b;
    gw_queue_t **pp = &q->vh->qmap[name_hash(q->name, q->nlen) % GW_QMAP];
    gw_op_t *op;

    if (q->gone)
        return;
    while (*pp != NULL && *pp != q)
        pp = &(*pp)->hnext;
    if (*pp == q)
        *pp = q->hnext;
    q->gone = true;
    event_del(q->kick_ev);
    gw_ttl_stop(q);
    gw_ops_queue_drop(q);
    while (q->consumers != NULL)
        gw_consumer_remove(q->consumers, true);
    gw_route_unbind_queue(q->vh->router, (gw_str_t){q->name, q->nlen}, gw_meta_binding_forget,
                          q->vh);
    if (q->durable && !q->exclusive && !b->stopping) {
        uint8_t k[GW_META_KEY];
        size_t kl = gw_meta_name_key(k, q->vh, (gw_str_t){q->name, q->nlen});
        gw_meta_write(b, NULL, 0, 0, true, GW_NS_QUEUE, k, kl, NULL, 0, true);
    }
    if (q->ready) {
        if ((op = gw_op_new(b, sizeof(*op), gw_op_free_fn)) != NULL)
            st_group_delete(b->store, q->id, gw_op_done_cb, op);
        if ((op = gw_op_new(b, sizeof(*op), gw_op_free_fn)) != NULL)
            st_topic_delete(b->store, q->id, gw_op_done_cb, op);
    }
    GT_LOG(DEBUG, "amqp", "queue '%.*s' (%s) deleted", (int)q->nlen, q->name, q->id);
    gw_queue_unref(q);
}

/* ---- queue.declare / delete / purge ------------------------------------ */

typedef struct {
    gw_op_t op;
    gw_chan_t *ch; /* ref */
    gw_queue_t *q; /* ref */
    uint32_t mid;
    int step;
    bool nowait, if_empty;
    uint64_t ready;
} qop_t;

static qop_t *qop_new(gw_chan_t *ch, gw_queue_t *q, uint32_t mid, bool nowait, gw_op_fn fn)
{
    qop_t *o = gw_op_new(ch->bc->b, sizeof(*o), fn);

    if (o == NULL)
        return NULL;
    gw_chan_ref(ch);
    gw_queue_ref(q);
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
    gw_chan_unref(o->ch);
    gw_queue_unref(o->q);
    free(o);
}

static void qop_done_cb(void *arg, gt_err_t err)
{
    qop_t *o = arg;

    o->op.err = err;
    gw_op_post(&o->op);
}

static void qop_stats_cb(void *arg, gt_err_t err, const st_stats_t *s)
{
    qop_t *o = arg;

    o->op.err = err;
    if (err == GT_OK) {
        o->ready = s->ready;
    }
    gw_op_post(&o->op);
}

static void qop_count_cb(void *arg, gt_err_t err, uint64_t n)
{
    qop_t *o = arg;

    o->op.err = err;
    o->ready = err == GT_OK ? n : 0;
    gw_op_post(&o->op);
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
    gw_chan_reply(ch, &r);
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
        uint8_t k[GW_META_KEY], *v;
        size_t kl, vl;
        if ((v = gw_meta_queue_record(o->q, k, &kl, &vl)) != NULL) {
            o->step = 2;
            pthread_mutex_lock(&b->mu);
            b->ops++;
            pthread_mutex_unlock(&b->mu);
            st_meta_put(b->store, GW_NS_QUEUE, k, (uint32_t)kl, v, (uint32_t)vl, qop_done_cb, o);
            free(v);
            return;
        }
        op->err = GT_ENOMEM;
    }
    if (op->err != GT_OK) {
        GT_LOG(WARN, "amqp", "cannot create the store topic/group %s for queue '%.*s': %s",
               o->q->id, (int)o->q->nlen, o->q->name, gt_err_str(op->err));
        if (gw_chan_live(o->ch))
            CH_ERR(o->ch, GW_INTERNAL_ERROR, o->mid, "cannot create queue '%.*s': %s",
                   (int)o->q->nlen, o->q->name, gt_err_str(op->err));
        gw_queue_drop(o->q);
    } else if (!o->q->gone) {
        o->q->ready = true;
        gw_ttl_touch(o->q);
        declare_ok(o->ch, o->q, 0, o->nowait);
        GT_LOG(DEBUG, "amqp", "queue '%.*s' declared as %s", (int)o->q->nlen, o->q->name,
               o->q->id);
    }
    qop_end(o);
}

/* The count after the expired head run is gone (RabbitMQ's stat). */
static void count_swept(void *arg)
{
    qop_t *o = arg;

    if (o->q->gone || !gw_chan_live(o->ch)) {
        o->op.err = GT_ENOTFOUND;
        gw_op_post(&o->op);
        return;
    }
    st_stats(o->op.b->store, o->q->id, o->q->id, qop_stats_cb, o);
}

static void count_fn(gw_op_t *op)
{
    qop_t *o = (qop_t *)op;

    declare_ok(o->ch, o->q, op->err == GT_OK ? o->ready : 0, o->nowait);
    qop_end(o);
}

const char *gw_yn(bool v) { return v ? "true" : "false"; }

void gw_on_queue_declare(gw_chan_t *ch, const gw_method_t *m)
{
    const gw_queue_declare_t *d = &m->u.queue_declare;
    gw_broker_t *b = ch->bc->b;
    gw_str_t name = d->queue;
    char gen[64], err[GW_REPLY_TEXT_MAX + 1];
    gw_queue_t *q;
    qop_t *o;

    if (gw_reply_declare(ch, m))
        return;
    if (d->passive) {
        if (!gw_chan_queue_name(ch, m->id, d->queue, &name) || (q = gw_queue_for(ch, m->id, name)) == NULL)
            return;
    } else {
        if (name.len == 0) {
            size_t n = gw_gen_name("amq.gen-", gen, sizeof(gen));
            name = (gw_str_t){gen, n};
        } else if (name.len >= 4 && memcmp(name.ptr, "amq.", 4) == 0) {
            CH_ERR(ch, GW_ACCESS_REFUSED, m->id,
                   "queue name '%.*s' contains reserved prefix 'amq.*'", (int)name.len, name.ptr);
            return;
        }
        if (!gw_chan_allowed(ch, m->id, GW_PERM_CONFIGURE, GW_RES_QUEUE, name))
            return;
        q = gw_queue_find(ch->bc->vh, name);
        if (q != NULL) {
            if ((q->exclusive && q->owner != ch->bc) || q->exclusive != d->exclusive) {
                CH_ERR(ch, GW_RESOURCE_LOCKED, m->id,
                       "cannot obtain exclusive access to locked queue '%.*s' in vhost '%s'. It "
                       "could be originally declared on another connection or the exclusive "
                       "property value does not match that of the original declaration.",
                       (int)name.len, name.ptr, GW_VHOST(ch));
                return;
            }
            if (q->durable != d->durable || q->auto_delete != d->auto_delete) {
                bool dur = q->durable != d->durable;
                CH_ERR(ch, GW_PRECONDITION_FAILED, m->id,
                       "inequivalent arg '%s' for queue '%.*s' in vhost '%s': received '%s' but "
                       "current is '%s'",
                       dur ? "durable" : "auto_delete", (int)name.len, name.ptr, GW_VHOST(ch),
                       gw_yn(dur ? d->durable : d->auto_delete),
                       gw_yn(dur ? q->durable : q->auto_delete));
                return;
            }
            if (!gw_qargs_equivalent(&q->args, d->arguments, name, GW_VHOST(ch), err,
                                     sizeof(err))) {
                CH_ERR(ch, GW_PRECONDITION_FAILED, m->id, "%s", err);
                return;
            }
        } else {
            gw_qargs_t qa;
            if (!gw_qargs_parse(d->arguments, name, GW_VHOST(ch), d->durable, d->exclusive,
                                d->auto_delete, &qa, err, sizeof(err))) {
                CH_ERR(ch, GW_PRECONDITION_FAILED, m->id, "%s", err);
                return;
            }
            /* RabbitMQ: a DLX needs read on the queue and write on the exchange */
            if (qa.has_dlx &&
                (!gw_chan_allowed(ch, m->id, GW_PERM_READ, GW_RES_QUEUE, name) ||
                 !gw_chan_allowed(ch, m->id, GW_PERM_WRITE, GW_RES_EXCHANGE,
                                  (gw_str_t){qa.dlx, qa.dlx_len}))) {
                gw_qargs_free(&qa);
                return;
            }
            if ((q = gw_queue_add(ch->bc->vh, name, NULL)) == NULL) {
                gw_qargs_free(&qa);
                CH_ERR(ch, GW_INTERNAL_ERROR, m->id, "out of memory");
                return;
            }
            q->args = qa;
            if (!gw_ops_queue_args(q, d->arguments, err, sizeof(err))) {
                gw_queue_drop(q); /* x-delayed-retry-* */
                CH_ERR(ch, GW_PRECONDITION_FAILED, m->id, "%s", err);
                return;
            }
            if (!gw_ttl_from_args(q)) {
                gw_queue_drop(q);
                CH_ERR(ch, GW_INTERNAL_ERROR, m->id, "out of memory");
                return;
            }
            q->durable = d->durable;
            q->exclusive = d->exclusive;
            q->auto_delete = d->auto_delete;
            if (!gw_maxlen_init(q)) {
                gw_queue_drop(q);
                CH_ERR(ch, GW_INTERNAL_ERROR, m->id, "out of memory");
                return;
            }
            q->owner = d->exclusive ? ch->bc : NULL;
            gw_chan_set_last(ch, name);
            if ((o = qop_new(ch, q, m->id, d->nowait, create_fn)) == NULL) {
                gw_queue_drop(q);
                CH_ERR(ch, GW_INTERNAL_ERROR, m->id, "out of memory");
                return;
            }
            st_topic_t t;
            memset(&t, 0, sizeof(t));
            snprintf(t.name, sizeof(t.name), "%s", q->id);
            t.type = ST_TOPIC_NORMAL;
            t.queue_count = 1u + q->args.max_priority; /* a store queue per level */
            t.perm = ST_PERM_READ | ST_PERM_WRITE;
            st_topic_put(b->store, &t, qop_done_cb, o);
            return;
        }
    }
    gw_chan_set_last(ch, (gw_str_t){q->name, q->nlen});
    gw_ttl_touch(q);
    if (!q->ready) { /* still being created (by another connection) */
        declare_ok(ch, q, 0, d->nowait);
        return;
    }
    if ((o = qop_new(ch, q, m->id, d->nowait, count_fn)) == NULL) {
        declare_ok(ch, q, 0, d->nowait);
        return;
    }
    gw_ttl_sweep(q, count_swept, o);
}

static void delete_fn(gw_op_t *op)
{
    qop_t *o = (qop_t *)op;
    gw_method_t r = {.id = GW_QUEUE_DELETE_OK};
    uint64_t n = op->err == GT_OK ? o->ready : 0;

    if (o->q->gone) {
        r.u.message_count.message_count = 0;
        if (!o->nowait)
            gw_chan_reply(o->ch, &r);
    } else if (o->if_empty && n > 0) {
        if (gw_chan_live(o->ch))
            CH_ERR(o->ch, GW_PRECONDITION_FAILED, o->mid, "queue '%.*s' in vhost '%s' not empty",
                   (int)o->q->nlen, o->q->name, GW_VHOST(o->ch));
    } else {
        gw_queue_drop(o->q);
        r.u.message_count.message_count = clamp32(n);
        if (!o->nowait)
            gw_chan_reply(o->ch, &r);
    }
    qop_end(o);
}

void gw_on_queue_delete(gw_chan_t *ch, const gw_method_t *m)
{
    const gw_queue_delete_t *d = &m->u.queue_delete;
    gw_str_t name;
    gw_queue_t *q;
    qop_t *o;

    if (!gw_chan_queue_name(ch, m->id, d->queue, &name) ||
        !gw_chan_allowed(ch, m->id, GW_PERM_CONFIGURE, GW_RES_QUEUE, name))
        return;
    q = gw_queue_find(ch->bc->vh, name);
    if (q == NULL) {
        gw_method_t r = {.id = GW_QUEUE_DELETE_OK};
        if (!d->nowait)
            gw_chan_reply(ch, &r);
        return;
    }
    if ((q = gw_queue_for(ch, m->id, name)) == NULL)
        return;
    if (d->if_unused && q->nconsumers > 0) {
        CH_ERR(ch, GW_PRECONDITION_FAILED, m->id, "queue '%.*s' in vhost '%s' in use",
               (int)name.len, name.ptr, GW_VHOST(ch));
        return;
    }
    if (!q->ready || (o = qop_new(ch, q, m->id, d->nowait, delete_fn)) == NULL) {
        gw_method_t r = {.id = GW_QUEUE_DELETE_OK};
        gw_queue_drop(q);
        if (!d->nowait)
            gw_chan_reply(ch, &r);
        return;
    }
    o->if_empty = d->if_empty;
    st_stats(ch->bc->b->store, q->id, q->id, qop_stats_cb, o);
}

/* Purge (st_purge): the messages that could be delivered now go;
 * deliveries in flight stay ackable, as in RabbitMQ. */
static void purge_fn(gw_op_t *op)
{
    qop_t *o = (qop_t *)op;
    gw_method_t r = {.id = GW_QUEUE_PURGE_OK};

    if (op->err != GT_OK && gw_chan_live(o->ch)) {
        CH_ERR(o->ch, GW_INTERNAL_ERROR, o->mid, "cannot purge queue '%.*s': %s",
               (int)o->q->nlen, o->q->name, gt_err_str(op->err));
    } else {
        if (op->err == GT_OK)
            gw_maxlen_purged(o->q, o->ready);
        if (!o->nowait) {
            r.u.message_count.message_count = clamp32(o->ready);
            gw_chan_reply(o->ch, &r);
        }
    }
    qop_end(o);
}

void gw_on_queue_purge(gw_chan_t *ch, const gw_method_t *m)
{
    gw_str_t name;
    gw_queue_t *q;
    qop_t *o;

    if (!gw_chan_queue_name(ch, m->id, m->u.queue_purge.queue, &name) ||
        !gw_chan_allowed(ch, m->id, GW_PERM_READ, GW_RES_QUEUE, name) ||
        (q = gw_queue_for(ch, m->id, name)) == NULL)
        return;
    if (!q->ready || (o = qop_new(ch, q, m->id, m->u.queue_purge.nowait, purge_fn)) == NULL) {
        gw_method_t r = {.id = GW_QUEUE_PURGE_OK};
        if (!m->u.queue_purge.nowait)
            gw_chan_reply(ch, &r);
        return;
    }
    st_purge(ch->bc->b->store, q->id, q->id, qop_count_cb, o);
}

