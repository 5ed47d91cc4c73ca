/* The AMQP broker's deliveries: basic.consume / cancel / qos / get, the
 * store pops behind them, and ack / nack / reject / recover. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gt_log.h"
#include "gw_bridge.h"
#include "gw_broker_int.h"
#include "gw_reply.h"
#include "gw_sac.h"
#include "gw_dlx.h"
#include "gw_maxlen.h"
#include "gw_ops.h"
#include "gw_rec.h"
#include "gw_trace_int.h"

/* ---- deliveries -------------------------------------------------------- */

typedef gw_popped_t popped_t; /* (gw_rec.h) */

typedef struct {
    gw_op_t op;
    gw_consumer_t *cs; /* ref; NULL for basic.get */
    gw_chan_t *ch;     /* ref (basic.get) */
    gw_queue_t *q;     /* ref */
    uint32_t asked;
    bool no_ack;
    bool counted;       /* basic.get: the remaining count was asked */
    uint64_t remaining; /* basic.get: ready messages after this one */
    size_t n;
    popped_t msgs[];
} pop_op_t;

/* Tracks a delivery until it is settled; keeps its record (taken from
 * p) when the queue has a DLX, for dead-lettering. */
static void ua_add(gw_chan_t *ch, uint64_t tag, gw_queue_t *q, gw_consumer_t *cs, popped_t *p)
{
    gw_unacked_t *u = calloc(1, sizeof(*u));
    const char *h = p->handle;
    uint64_t blen = gw_maxlen_body_len(p->body, p->len);

    if (u == NULL) { /* cannot track it: give it back */
        gw_msg_requeue(ch->bc->b, q, h, blen);
        return;
    }
    u->attempt = p->attempt;
    u->trace_ids = gw_trace_ids(q, p); /* before the record is taken */
    if (q->ttl.msg_ttl < 0 && gw_ttl_rec_expiration(p->body, p->len) >= 0) {
        u->out_exp = true; /* requeued, it may expire: see gw_ttl.c's sweep */
        q->ttl.out_exp++;
    }
    if (q->args.has_dlx) {
        u->rec = p->body;
        u->rec_len = p->len;
        p->body = NULL;
    }
    u->tag = tag;
    u->blen = blen;
    gw_queue_ref(q);
    u->q = q;
    if (cs != NULL) {
        gw_consumer_ref(cs);
        cs->unacked++;
    }
    u->cs = cs;
    snprintf(u->handle, sizeof(u->handle), "%s", h);
    u->sent_at = gw_now_ms();
    u->renew_at = u->sent_at + ch->bc->b->invisible_ms / GW_RENEW_DIV;
    u->prev = ch->ua_tail;
    if (ch->ua_tail != NULL)
        ch->ua_tail->next = u;
    else
        ch->ua = u;
    ch->ua_tail = u;
    ch->unacked++;
}

void gw_ua_unlink(gw_chan_t *ch, gw_unacked_t *u)
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
    if (u->cs != NULL && --u->cs->unacked == 0 && u->cs->gone)
        gw_sac_drained(u->cs);
}

void gw_ua_free(gw_unacked_t *u)
{
    free(u->rec);
    free(u->trace_ids);
    if (u->out_exp)
        u->q->ttl.out_exp--;
    gw_consumer_unref(u->cs);
    gw_queue_unref(u->q);
    free(u);
}

static void send_delivery(gw_chan_t *ch, gw_method_t *m, gw_queue_t *q, const popped_t *p,
                          gw_str_t *ex_out, gw_str_t *rk_out)
{
    gw_rec_t r;

    if (!gw_rec_decode(p->body, p->len, &r)) {
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
    if (q->args.type == GW_QTYPE_QUORUM && p->attempt > 0) {
        size_t pl = 0;
        uint8_t *qp = gw_dl_count_props(r.props, p->attempt - 1, &pl);
        if (qp != NULL) {
            gw_conn_send_content(ch->bc->c, ch->id, m, (gw_bytes_t){qp, pl}, r.body, r.body_len);
            free(qp);
            return;
        }
    }
    gw_conn_send_content(ch->bc->c, ch->id, m, r.props, r.body, r.body_len);
}

static uint32_t cs_credit(const gw_consumer_t *cs)
{
    const gw_chan_t *ch = cs->ch;
    uint32_t n = GW_POP_BATCH;
    gw_conn_t *c = ch->bc->c;

    if (cs->gone || !gw_chan_live(ch) || cs->q->gone || !cs->q->ready || ch->bc->b->stopping ||
        !gw_sac_may_deliver(cs))
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
    return gw_ops_credit(cs->q, n); /* paused, rate limit */
}

/* A pop in flight (popping) does not use credit here: on a queue that
 * has nothing ready it comes back empty, and the consumer pops again for
 * the message that arrived meanwhile (rekick). */
bool gw_queue_has_credit(const gw_queue_t *q)
{
    for (const gw_consumer_t *cs = q->consumers; cs != NULL; cs = cs->qnext) {
        const gw_chan_t *ch = cs->ch;
        if (cs->gone || !gw_chan_live(ch) || q->b->stopping || !gw_sac_may_deliver(cs) ||
            gw_conn_out_len(ch->bc->c) > gw_conn_out_limit(ch->bc->c) / 2)
            continue;
        if (cs->no_ack)
            return true;
        if ((cs->prefetch == 0 || cs->unacked < cs->prefetch) &&
            (ch->prefetch_global == 0 || ch->unacked < ch->prefetch_global))
            return true;
    }
    return false;
}

static void pop_cb(void *arg, gt_err_t err, const st_popped_t *msgs, size_t n)
{
    pop_op_t *o = arg, *big;

    o->op.err = err;
    if (err == GT_OK && n > 0) {
        /* Grow to hold the messages (the op is not shared yet); a copy
         * that failed (attempt 0) is released. */
        if ((big = gw_popped_take(o, offsetof(pop_op_t, msgs), msgs, n)) == NULL) {
            o->op.err = GT_ENOMEM;
            gw_op_post(&o->op);
            return;
        }
        o = big;
        o->n = n;
    }
    gw_op_post(&o->op);
}


static void consume_fn(gw_op_t *op)
{
    pop_op_t *o = (pop_op_t *)op;
    gw_consumer_t *cs = o->cs;
    gw_chan_t *ch = cs->ch;
    gw_broker_t *b = op->b;
    int64_t now = gw_wall_ms();
    bool rekick = false;

    cs->popping = 0;
    ch->pending -= o->asked < ch->pending ? o->asked : ch->pending;
    if (op->err != GT_OK && op->err != GT_ENOTFOUND)
        GT_LOG(WARN, "amqp", "pop from %s failed: %s", cs->q->id, gt_err_str(op->err));
    gw_ops_refund(cs->q, o->asked - (uint32_t)o->n);
    for (size_t i = 0; i < o->n; i++) {
        popped_t *p = &o->msgs[i];
        uint64_t blen = gw_maxlen_body_len(p->body, p->len);
        gw_maxlen_taken(cs->q, blen);
        if (cs->gone || !gw_chan_live(ch) || p->attempt == 0 || b->stopping ||
            gw_ops_paused(cs->q)) {
            gw_msg_release(b, cs->q, p->handle);
            gw_maxlen_back(cs->q, blen);
            gw_ops_refund(cs->q, 1);
        } else if (gw_ttl_expired(cs->q, p->store_ts, p->body, p->len, true, now)) {
            gw_ttl_expire_popped(cs->q, p->handle, p->body, p->len, p->msg_id, p->attempt);
            gw_ops_refund(cs->q, 1);
        } else if (p->attempt > 1 && gw_dl_over_limit(cs->q, p->attempt - 1)) {
            /* returned past x-delivery-limit by a path that did not look */
            gw_trace_dead(cs->q, p->msg_id, p->body, p->len, p->attempt, GW_DL_DELIVERY_LIMIT);
            gw_dead_letter_ack(cs->q, p->body, p->len, GW_DL_DELIVERY_LIMIT, p->handle);
            gw_ops_refund(cs->q, 1);
            rekick = true;
        } else {
            gw_method_t m = {.id = GW_BASIC_DELIVER};
            gw_basic_deliver_t *d = &m.u.basic_deliver;
            d->consumer_tag = (gw_str_t){cs->tag, cs->tlen};
            d->delivery_tag = ++ch->next_tag;
            d->redelivered = p->attempt > 1;
            send_delivery(ch, &m, cs->q, p, &d->exchange, &d->routing_key);
            if (gw_trace_queue(cs->q))
                gw_trace_deliver(ch, cs->q, p, blen, false);
            gw_ops_delivered(cs->q, d->redelivered);
            if (cs->no_ack)
                gw_msg_ack(b, cs->q, p->handle);
            else
                ua_add(ch, d->delivery_tag, cs->q, cs, p);
        }
        free(p->body);
    }
    if (cs->gone && cs->unacked == 0)
        gw_sac_drained(cs); /* its last pop is in: the next may take over */
    if (!cs->gone && op->err == GT_OK && (o->n == o->asked || cs->rekick || rekick)) {
        cs->rekick = false;
        gw_consumer_pump(cs);
    }
    /* Channel credit this pop held and did not use goes to the channel's
     * consumers that found none meanwhile (each pumped once: a consumer
     * only becomes starved again by a pump that finds no credit). */
    if (o->n < o->asked && ch->prefetch_global > 0 && gw_chan_live(ch)) {
        for (gw_consumer_t *o2 = ch->consumers; o2 != NULL; o2 = o2->cnext) {
            if (o2->starved && o2 != cs) {
                o2->starved = false;
                gw_consumer_pump(o2);
            }
        }
    }
    gw_consumer_unref(cs);
    gw_queue_unref(o->q);
    free(o);
}

/* Asks the store for as many messages as the consumer may take now. */
void gw_consumer_pump(gw_consumer_t *cs)
{
    gw_broker_t *b = cs->ch->bc->b;
    uint32_t n;
    pop_op_t *o;
    st_pop_req_t req;

    if (cs->popping > 0) {
        cs->rekick = true;
        return;
    }
    if (gw_ttl_busy(cs->q))
        return; /* the sweep's end pumps the queue's consumers */
    if ((n = cs_credit(cs)) == 0) {
        cs->starved = cs->ch->prefetch_global > 0;
        return;
    }
    cs->starved = false;
    if ((o = gw_op_new(b, sizeof(*o), consume_fn)) == NULL)
        return;
    gw_consumer_ref(cs);
    gw_queue_ref(cs->q);
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
    req.high_first = cs->q->args.max_priority > 0;
    req.max = n;
    req.max_bytes = GW_POP_BYTES;
    req.invisible_ms = b->invisible_ms;
    req.poll_timeout_ms = 0;
    st_pop(b->store, &req, pop_cb, o);
}

void gw_queue_kick(gw_queue_t *q)
{
    for (gw_consumer_t *cs = q->consumers; cs != NULL; cs = cs->qnext)
        gw_consumer_pump(cs);
}

void gw_chan_pump(gw_chan_t *ch)
{
    for (gw_consumer_t *cs = ch->consumers; cs != NULL; cs = cs->cnext)
        gw_consumer_pump(cs);
}

/* Takes cs out of its queue and channel; notify: send basic.cancel. */
void gw_consumer_remove(gw_consumer_t *cs, bool notify)
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
    gw_sac_removed(cs);
    for (pp = &ch->consumers; *pp != NULL && *pp != cs; pp = &(*pp)->cnext)
        ;
    if (*pp == cs)
        *pp = cs->cnext;
    if (notify && gw_chan_live(ch) && gw_conn_cancel_notify(ch->bc->c)) {
        gw_method_t m = {.id = GW_BASIC_CANCEL};
        m.u.basic_cancel.consumer_tag = (gw_str_t){cs->tag, cs->tlen};
        m.u.basic_cancel.nowait = true;
        gw_conn_send_method(ch->bc->c, ch->id, &m);
    }
    if (q->auto_delete && q->had_consumer && q->nconsumers == 0 && !q->gone &&
        !q->b->stopping)
        gw_queue_drop(q);
    else
        gw_ttl_touch(q);
    gw_consumer_unref(cs);
}

void gw_on_basic_qos(gw_chan_t *ch, const gw_method_t *m)
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
    gw_chan_reply(ch, &r);
    gw_chan_pump(ch);
}

void gw_on_basic_consume(gw_chan_t *ch, const gw_method_t *m)
{
    const gw_basic_consume_t *bcm = &m->u.basic_consume;
    gw_str_t name, tag = bcm->consumer_tag;
    char gen[64];
    gw_queue_t *q;
    gw_consumer_t *cs;

    if (gw_str_eq(bcm->queue, GW_REPLY_QUEUE)) {
        gw_reply_consume(ch, m);
        return;
    }
    if (!gw_chan_queue_name(ch, m->id, bcm->queue, &name) ||
        !gw_chan_allowed(ch, m->id, GW_PERM_READ, GW_RES_QUEUE, name) ||
        (q = gw_queue_for(ch, m->id, name)) == NULL)
        return;
    if (tag.len == 0) {
        size_t n = gw_gen_name("amq.ctag-", gen, sizeof(gen));
        tag = (gw_str_t){gen, n};
    }
    for (cs = ch->consumers; cs != NULL; cs = cs->cnext)
        if (cs->tlen == tag.len && memcmp(cs->tag, tag.ptr, tag.len) == 0)
            break;
    if (cs != NULL) { /* (the reply consumer's tag is another space, as RabbitMQ) */
        gw_conn_error(ch->bc->c, GW_NOT_ALLOWED, m->id, "attempt to reuse consumer tag '%.*s'",
                      (int)tag.len, tag.ptr);
        return;
    }
    if (q->excl_consumer ||
        (bcm->exclusive && (q->nconsumers > 0 || q->args.single_active_consumer))) {
        CH_ERR(ch, GW_ACCESS_REFUSED, m->id, "queue '%.*s' in vhost '%s' in exclusive use",
               (int)name.len, name.ptr, GW_VHOST(ch));
        return;
    }
    if ((cs = calloc(1, sizeof(*cs))) == NULL) {
        CH_ERR(ch, GW_INTERNAL_ERROR, m->id, "out of memory");
        return;
    }
    cs->refs = 1; /* the channel's and queue's lists */
    gw_chan_ref(ch);
    cs->ch = ch;
    gw_queue_ref(q);
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
    gw_sac_added(cs);
    if (bcm->exclusive)
        q->excl_consumer = true;
    cs->cnext = ch->consumers;
    ch->consumers = cs;
    gw_ttl_touch(q);
    if (!bcm->nowait) {
        gw_method_t r = {.id = GW_BASIC_CONSUME_OK};
        r.u.consumer_tag.consumer_tag = tag;
        gw_chan_reply(ch, &r);
    }
    gw_consumer_pump(cs);
}

void gw_on_basic_cancel(gw_chan_t *ch, const gw_method_t *m)
{
    gw_str_t tag = m->u.basic_cancel.consumer_tag;
    gw_method_t r = {.id = GW_BASIC_CANCEL_OK};

    if (gw_reply_cancel(ch, m))
        return;
    for (gw_consumer_t *cs = ch->consumers; cs != NULL; cs = cs->cnext) {
        if (cs->tlen == tag.len && memcmp(cs->tag, tag.ptr, tag.len) == 0) {
            gw_consumer_remove(cs, false);
            break;
        }
    }
    if (!m->u.basic_cancel.nowait) {
        r.u.consumer_tag.consumer_tag = tag;
        gw_chan_reply(ch, &r);
    }
}

static void get_count_cb(void *arg, gt_err_t err, const st_stats_t *s)
{
    pop_op_t *o = arg;

    o->remaining = err == GT_OK ? s->ready : 0;
    gw_op_post(&o->op);
}

/* basic.get's pop (again after an expired message), once no sweep holds
 * the queue's head. */
static void get_pop(void *arg)
{
    pop_op_t *o = arg;
    gw_broker_t *b = o->op.b;
    st_pop_req_t req;

    memset(&req, 0, sizeof(req));
    req.group = o->q->id;
    req.topic = o->q->id;
    req.queue_id = ST_QUEUE_ANY;
    req.high_first = o->q->args.max_priority > 0;
    req.max = 1;
    req.invisible_ms = b->invisible_ms;
    st_pop(b->store, &req, pop_cb, o);
}

/* get-ok carries the count of messages left, after the expired ones at
 * the head behind this one are gone (RabbitMQ's fetch). */
static void get_count(void *arg)
{
    pop_op_t *o = arg;

    st_stats(o->op.b->store, o->q->id, o->q->id, get_count_cb, o);
}

static void get_fn(gw_op_t *op)
{
    pop_op_t *o = (pop_op_t *)op;
    gw_chan_t *ch = o->ch;
    gw_broker_t *b = op->b;

    if (o->n > 0 && !o->counted && gw_chan_live(ch) && o->msgs[0].attempt != 0 &&
        gw_ttl_expired(o->q, o->msgs[0].store_ts, o->msgs[0].body, o->msgs[0].len, false,
                       gw_wall_ms())) {
        /* Expired: never delivered; take the next one. */
        gw_maxlen_taken(o->q, gw_maxlen_body_len(o->msgs[0].body, o->msgs[0].len));
        gw_ttl_expire_popped(o->q, o->msgs[0].handle, o->msgs[0].body, o->msgs[0].len,
                             o->msgs[0].msg_id, o->msgs[0].attempt);
        free(o->msgs[0].body);
        o->n = 0;
        pthread_mutex_lock(&b->mu);
        b->ops++;
        pthread_mutex_unlock(&b->mu);
        gw_ttl_after_sweep(o->q, get_pop, o);
        return;
    }
    if (o->n > 0 && !o->counted && gw_chan_live(ch)) {
        o->counted = true;
        pthread_mutex_lock(&b->mu);
        b->ops++;
        pthread_mutex_unlock(&b->mu);
        gw_ttl_sweep(o->q, get_count, o);
        return;
    }
    if (o->n == 0)
        gw_ops_refund(o->q, 1);
    if (o->n == 0 && gw_chan_live(ch)) {
        gw_method_t r = {.id = GW_BASIC_GET_EMPTY};
        if (op->err != GT_OK && op->err != GT_ENOTFOUND)
            GT_LOG(WARN, "amqp", "get from %s failed: %s", o->q->id, gt_err_str(op->err));
        gw_chan_reply(ch, &r);
    }
    for (size_t i = 0; i < o->n; i++) {
        popped_t *p = &o->msgs[i];
        uint64_t blen = gw_maxlen_body_len(p->body, p->len);
        gw_maxlen_taken(o->q, blen);
        if (!gw_chan_live(ch) || p->attempt == 0 || gw_ops_paused(o->q) ||
            (p->attempt > 1 && gw_dl_over_limit(o->q, p->attempt - 1))) {
            if (!gw_chan_live(ch) || p->attempt == 0 || gw_ops_paused(o->q)) {
                gw_msg_release(b, o->q, p->handle);
                gw_maxlen_back(o->q, blen);
            } else { /* returned past x-delivery-limit by a path that did not look */
                gw_trace_dead(o->q, p->msg_id, p->body, p->len, p->attempt,
                              GW_DL_DELIVERY_LIMIT);
                gw_dead_letter_ack(o->q, p->body, p->len, GW_DL_DELIVERY_LIMIT, p->handle);
            }
            gw_ops_refund(o->q, 1);
            if (gw_chan_live(ch)) {
                gw_method_t r = {.id = GW_BASIC_GET_EMPTY};
                gw_chan_reply(ch, &r);
            }
        } else {
            gw_method_t m = {.id = GW_BASIC_GET_OK};
            gw_basic_get_ok_t *g = &m.u.basic_get_ok;
            g->delivery_tag = ++ch->next_tag;
            g->redelivered = p->attempt > 1;
            g->message_count = o->remaining > UINT32_MAX ? UINT32_MAX : (uint32_t)o->remaining;
            send_delivery(ch, &m, o->q, p, &g->exchange, &g->routing_key);
            if (gw_trace_queue(o->q))
                gw_trace_deliver(ch, o->q, p, gw_maxlen_body_len(p->body, p->len), true);
            gw_ops_delivered(o->q, g->redelivered);
            if (o->no_ack)
                gw_msg_ack(b, o->q, p->handle);
            else
                ua_add(ch, g->delivery_tag, o->q, NULL, p);
        }
        free(p->body);
    }
    if (ch->bc->c != NULL)
        gw_conn_unstall(ch->bc->c);
    gw_chan_unref(ch);
    gw_queue_unref(o->q);
    free(o);
}

void gw_on_basic_get(gw_chan_t *ch, const gw_method_t *m)
{
    gw_str_t name;
    gw_queue_t *q;
    pop_op_t *o;

    if (!gw_chan_queue_name(ch, m->id, m->u.basic_get.queue, &name) ||
        !gw_chan_allowed(ch, m->id, GW_PERM_READ, GW_RES_QUEUE, name) ||
        (q = gw_queue_for(ch, m->id, name)) == NULL)
        return;
    gw_ttl_touch(q);
    if (!q->ready || gw_ops_credit(q, 1) == 0) { /* paused, rate limit */
        gw_method_t r = {.id = GW_BASIC_GET_EMPTY};
        gw_chan_reply(ch, &r);
        return;
    }
    if ((o = gw_op_new(ch->bc->b, sizeof(*o), get_fn)) == NULL) {
        gw_method_t r = {.id = GW_BASIC_GET_EMPTY};
        gw_ops_refund(q, 1);
        gw_chan_reply(ch, &r);
        return;
    }
    gw_chan_ref(ch);
    gw_queue_ref(q);
    o->ch = ch;
    o->q = q;
    o->asked = 1;
    o->no_ack = m->u.basic_get.no_ack;
    gw_conn_stall(ch->bc->c);
    gw_ttl_after_sweep(q, get_pop, o);
}

/* ---- acks -------------------------------------------------------------- */

void gw_ua_settle_store(gw_broker_t *b, gw_unacked_t *u, gw_settle_t how)
{
    gw_dl_reason_t why = GW_DL_REJECTED;

    if (how == GW_SETTLE_REQUEUE && gw_dl_over_limit(u->q, u->attempt)) {
        how = GW_SETTLE_DROP; /* quorum: this return goes past x-delivery-limit */
        why = GW_DL_DELIVERY_LIMIT;
    } else if (gw_ops_settle(b, u->q, u->handle, u->attempt, u->blen, how)) {
        return; /* an ack, or a delayed retry (gw_ops.c) */
    }
    if (how == GW_SETTLE_REQUEUE)
        gw_msg_requeue(b, u->q, u->handle, u->blen);
    else if (how == GW_SETTLE_DROP && u->rec != NULL && u->q->args.has_dlx)
        gw_dead_letter_ack(u->q, u->rec, u->rec_len, why, u->handle);
    else
        gw_msg_ack(b, u->q, u->handle); /* acked, or dropped without a DLX */
}

void gw_settle_one(gw_chan_t *ch, gw_unacked_t *u, gw_settle_t how)
{
    gw_consumer_t *cs = u->cs;

    if (cs != NULL) /* u may hold its last reference (a cancelled consumer) */
        gw_consumer_ref(cs);
    gw_ua_unlink(ch, u);
    gw_trace_settle(ch, u, (int)how, ch->settle_verb);
    if (u->renewing) {
        /* The renewal's answer brings the handle that works. */
        u->detached = true;
        u->how = (int)how;
    } else {
        gw_ua_settle_store(ch->bc->b, u, how);
        gw_ua_free(u);
    }
    if (cs != NULL && !cs->gone)
        gw_consumer_pump(cs);
    gw_consumer_unref(cs);
}

int64_t gw_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef struct {
    gw_op_t op;
    gw_chan_t *ch;    /* ref */
    gw_unacked_t *u;  /* renewing */
    char handle[ST_HANDLE_MAX];
} renew_op_t;

static void renew_fn(gw_op_t *op)
{
    renew_op_t *o = (renew_op_t *)op;
    gw_unacked_t *u = o->u;

    u->renewing = false;
    if (op->err == GT_OK)
        memcpy(u->handle, o->handle, sizeof(u->handle));
    if (u->detached) {
        if (!u->q->gone)
            gw_ua_settle_store(op->b, u, (gw_settle_t)u->how);
        gw_ua_free(u);
    } else {
        u->renew_at = gw_now_ms() + op->b->invisible_ms / GW_RENEW_DIV;
    }
    gw_chan_unref(o->ch);
    free(o);
}

static void renew_cb(void *arg, gt_err_t err, const char *handle)
{
    renew_op_t *o = arg;

    o->op.err = err;
    if (err == GT_OK)
        snprintf(o->handle, sizeof(o->handle), "%s", handle);
    gw_op_post(&o->op);
}

void gw_chan_renew(gw_chan_t *ch, int64_t now)
{
    gw_broker_t *b = ch->bc->b;

    for (gw_unacked_t *u = ch->ua; u != NULL; u = u->next) {
        renew_op_t *o;
        if (u->renewing || u->renew_at > now || u->q->gone)
            continue;
        if ((o = gw_op_new(b, sizeof(*o), renew_fn)) == NULL)
            return;
        gw_chan_ref(ch);
        o->ch = ch;
        o->u = u;
        u->renewing = true;
        st_change_invisible(b->store, u->q->id, u->q->id, u->handle, b->invisible_ms, renew_cb,
                            o);
    }
}

/* ack / nack / reject of tag (multiple: every tag up to it; tag 0 with
 * multiple: all). */
static void settle_now(gw_chan_t *ch, uint32_t mid, uint64_t tag, bool multiple, gw_settle_t how)
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
            gw_settle_one(ch, u, how);
        }
        gw_chan_pump(ch);
        return;
    }
    for (u = ch->ua; u != NULL && u->tag != tag; u = u->next)
        ;
    if (u == NULL) {
        CH_ERR(ch, GW_PRECONDITION_FAILED, mid, "unknown delivery tag %llu",
               (unsigned long long)tag);
        return;
    }
    gw_settle_one(ch, u, how);
    if (ch->prefetch_global > 0)
        gw_chan_pump(ch);
}

static void settle(gw_chan_t *ch, uint32_t mid, uint64_t tag, bool multiple, gw_settle_t how)
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

void gw_on_basic_ack(gw_chan_t *ch, const gw_method_t *m)
{
    settle(ch, m->id, m->u.basic_ack.delivery_tag, m->u.basic_ack.multiple, GW_SETTLE_ACK);
}

void gw_on_basic_nack(gw_chan_t *ch, const gw_method_t *m)
{
    const gw_basic_nack_t *n = &m->u.basic_nack;

    ch->settle_verb = "nack";
    settle(ch, m->id, n->delivery_tag, n->multiple, n->requeue ? GW_SETTLE_REQUEUE : GW_SETTLE_DROP);
    ch->settle_verb = NULL;
}

void gw_on_basic_reject(gw_chan_t *ch, const gw_method_t *m)
{
    const gw_basic_reject_t *r = &m->u.basic_reject;

    ch->settle_verb = "reject";
    settle(ch, m->id, r->delivery_tag, false, r->requeue ? GW_SETTLE_REQUEUE : GW_SETTLE_DROP);
    ch->settle_verb = NULL;
}

void gw_on_basic_recover(gw_chan_t *ch, const gw_method_t *m)
{
    if (!m->u.basic_recover.requeue) {
        gw_conn_error(ch->bc->c, GW_NOT_IMPLEMENTED, m->id, "requeue=false");
        return;
    }
    while (ch->ua != NULL)
        gw_settle_one(ch, ch->ua, GW_SETTLE_REQUEUE);
    if (m->id == GW_BASIC_RECOVER) {
        gw_method_t r = {.id = GW_BASIC_RECOVER_OK};
        gw_chan_reply(ch, &r);
    }
}

