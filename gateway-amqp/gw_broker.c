/* The AMQP gateway's broker: queues, publishing and consuming on the
 * store (see docs/amqp.md, "Storage mapping").
 *
 * Threads.  Everything in gw_broker*.c, gw_vhost.c, gw_queue.c, gw_consume.c,
 * gw_publish.c, gw_exchange.c, gw_meta.c, gw_delay.c, gw_reply.c and
 * gw_sac.c runs on the gateway's event-loop thread.  The store answers on the proxy's executor threads; each store
 * request is a gw_op_t whose store callback copies what it needs into the op
 * and posts it (gw_op_post: a mutex-guarded list plus event_active on
 * post_ev); the loop then runs op->fn.  b->ops counts the requests not run
 * yet, so gw_broker_free can wait for them after the loop has stopped.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gt_log.h"
#include "gw_acks.h"
#include "gw_bridge.h"
#include "gw_broker_int.h"
#include "gw_delay.h"
#include "gw_reply.h"
#include "gw_maxlen.h"
#include "gw_ops.h"

/* ---- references -------------------------------------------------------- */

void gw_queue_ref(gw_queue_t *q) { q->refs++; }

void gw_queue_unref(gw_queue_t *q)
{
    if (q != NULL && --q->refs == 0) {
        if (q->kick_ev != NULL)
            event_free(q->kick_ev);
        gw_ttl_free(q);
        gw_qargs_free(&q->args);
        gw_maxlen_free(q);
        gw_ops_queue_free(q);
        free(q);
    }
}

void gw_bconn_ref(gw_bconn_t *bc) { bc->refs++; }

void gw_bconn_unref(gw_bconn_t *bc)
{
    if (bc != NULL && --bc->refs == 0) {
        free(bc->held);
        free(bc);
    }
}

void gw_chan_ref(gw_chan_t *ch) { ch->refs++; }

void gw_chan_unref(gw_chan_t *ch)
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
        gw_bconn_unref(ch->bc);
        free(ch);
    }
}

void gw_consumer_ref(gw_consumer_t *cs) { cs->refs++; }

void gw_consumer_unref(gw_consumer_t *cs)
{
    if (cs != NULL && --cs->refs == 0) {
        gw_chan_unref(cs->ch);
        gw_queue_unref(cs->q);
        free(cs);
    }
}

/* The channel can take deliveries and replies. */
bool gw_chan_live(const gw_chan_t *ch)
{
    return !ch->closed && ch->bc->c != NULL && gw_conn_running(ch->bc->c);
}

void gw_chan_reply(gw_chan_t *ch, const gw_method_t *m)
{
    if (gw_chan_live(ch))
        gw_conn_send_method(ch->bc->c, ch->id, m);
}

bool gw_chan_allowed(gw_chan_t *ch, uint32_t mid, unsigned perm, gw_res_kind_t kind,
                     gw_str_t name)
{
    char err[GW_REPLY_TEXT_MAX + 1];

    if (gw_auth_check(gw_conn_grant(ch->bc->c), perm, kind, name.ptr, name.len, err,
                      sizeof(err)))
        return true;
    CH_ERR(ch, GW_ACCESS_REFUSED, mid, "%s", err);
    return false;
}

/* ---- store requests ---------------------------------------------------- */

void *gw_op_new(gw_broker_t *b, size_t size, gw_op_fn fn)
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
void gw_op_post(gw_op_t *op)
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
    /* Under mu: once it is released the broker may be freed (the last
     * op of gw_broker_free), so nothing here touches b after it. */
    event_active(b->post_ev, 0, 0);
    pthread_mutex_unlock(&b->mu);
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


/* Confirms go out once per batch of store answers, so that appends
 * answered together are acked with one multiple ack. */
static void dirty_flush(gw_broker_t *b)
{
    while (b->dirty != NULL) {
        gw_chan_t *ch = b->dirty;
        b->dirty = ch->dirty_next;
        ch->dirty = false;
        if (!ch->closed)
            gw_confirms_flush(ch);
        gw_chan_unref(ch);
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
void gw_op_free_fn(gw_op_t *op) { free(op); }

const char *gw_chan_vhost(const gw_chan_t *ch) { return ch->bc->vh->name; }

void gw_op_done_cb(void *arg, gt_err_t err)
{
    gw_op_t *op = arg;

    op->err = err;
    gw_op_post(op);
}

void gw_msg_release(gw_broker_t *b, const gw_queue_t *q, const char *handle)
{
    gw_op_t *op = gw_op_new(b, sizeof(*op), gw_op_free_fn);

    if (op != NULL)
        st_release(b->store, q->id, q->id, handle, gw_op_done_cb, op);
}

/* Requeue (change_invisible 0): due at once as a failed attempt, ahead of
 * newer messages (RabbitMQ's order); the next delivery says redelivered. */
typedef struct {
    gw_op_t op;
    gw_queue_t *q;
    uint64_t blen;
} requeue_op_t;

static void requeue_fn(gw_op_t *op)
{
    requeue_op_t *r = (requeue_op_t *)op;
    gw_queue_t *q = r->q;

    q->requeuing--;
    if (op->err == GT_OK)
        gw_maxlen_back(q, r->blen);
    if (!q->gone && !q->b->stopping && q->kick_ev != NULL) {
        struct timeval tv = {0, 0}; /* due at once: look from the loop */
        event_add(q->kick_ev, &tv);
        gw_ttl_requeued(q); /* it keeps its expiry: look at the head */
    }
    gw_queue_unref(q);
    free(r);
}

static void requeue_cb(void *arg, gt_err_t err, const char *handle)
{
    requeue_op_t *r = arg;

    (void)handle;
    r->op.err = err;
    gw_op_post(&r->op);
}

void gw_msg_requeue(gw_broker_t *b, gw_queue_t *q, const char *handle, uint64_t blen)
{
    requeue_op_t *r = gw_op_new(b, sizeof(*r), requeue_fn);

    if (r == NULL)
        return;
    gw_queue_ref(q);
    r->q = q;
    q->requeuing++;
    r->blen = blen;
    st_change_invisible(b->store, q->id, q->id, handle, 0, requeue_cb, r);
}

/* ---- channel errors ---------------------------------------------------- */


/* The queue a method names: "" means the channel's last declared one. */
bool gw_chan_queue_name(gw_chan_t *ch, uint32_t mid, gw_str_t in, gw_str_t *out)
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

void gw_chan_set_last(gw_chan_t *ch, gw_str_t name)
{
    ch->has_last = true;
    ch->last_len = (uint8_t)name.len;
    memcpy(ch->last_q, name.ptr, name.len);
}

/* Looks q up for a method: 404 when missing, 405 when exclusive to
 * another connection. */
gw_queue_t *gw_queue_for(gw_chan_t *ch, uint32_t mid, gw_str_t name)
{
    gw_queue_t *q = gw_queue_find(ch->bc->vh, name);

    if (q == NULL) {
        CH_ERR(ch, GW_NOT_FOUND, mid, "no queue '%.*s' in vhost '%s'", (int)name.len, name.ptr,
               GW_VHOST(ch));
        return NULL;
    }
    if (q->exclusive && q->owner != ch->bc) {
        CH_ERR(ch, GW_RESOURCE_LOCKED, mid,
               "cannot obtain exclusive access to locked queue '%.*s' in vhost '%s'. It could be "
               "originally declared on another connection or the exclusive property value does "
               "not match that of the original declaration.",
               (int)name.len, name.ptr, GW_VHOST(ch));
        return NULL;
    }
    return q;
}

/* ---- dispatch ---------------------------------------------------------- */

typedef struct {
    gw_method_id_t id;
    void (*fn)(gw_chan_t *ch, const gw_method_t *m);
    bool barrier; /* must see the connection's earlier publishes */
} handler_t;

static const handler_t handlers[] = {
    {GW_EXCHANGE_DECLARE, gw_on_exchange_declare, false},
    {GW_EXCHANGE_DELETE, gw_on_exchange_delete, false},
    {GW_EXCHANGE_BIND, gw_on_exchange_bind, false},
    {GW_EXCHANGE_UNBIND, gw_on_exchange_bind, false},
    {GW_QUEUE_BIND, gw_on_queue_bind, false},
    {GW_QUEUE_UNBIND, gw_on_queue_bind, false},
    {GW_QUEUE_DECLARE, gw_on_queue_declare, true},
    {GW_QUEUE_DELETE, gw_on_queue_delete, true},
    {GW_QUEUE_PURGE, gw_on_queue_purge, true},
    {GW_BASIC_QOS, gw_on_basic_qos, false},
    {GW_BASIC_CONSUME, gw_on_basic_consume, false},
    {GW_BASIC_CANCEL, gw_on_basic_cancel, false},
    {GW_BASIC_GET, gw_on_basic_get, true},
    {GW_BASIC_ACK, gw_on_basic_ack, false},
    {GW_BASIC_NACK, gw_on_basic_nack, false},
    {GW_BASIC_REJECT, gw_on_basic_reject, false},
    {GW_BASIC_RECOVER, gw_on_basic_recover, false},
    {GW_BASIC_RECOVER_ASYNC, gw_on_basic_recover, false},
    {GW_CONFIRM_SELECT, gw_on_confirm_select, false},
    {GW_TX_SELECT, gw_on_tx_select, false},
    {GW_TX_COMMIT, gw_on_tx_commit, false},
    {GW_TX_ROLLBACK, gw_on_tx_rollback, false},
};

void gw_chan_dispatch(gw_chan_t *ch, const gw_method_t *m, const gw_frame_t *fr)
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
    gw_chan_ref(ch); /* a handler may close the channel */
    chan_event(bc, ch, id, ev, fr);
    gw_chan_unref(ch);
}

static void chan_event(gw_bconn_t *bc, gw_chan_t *ch, uint16_t id, const gw_asm_out_t *ev,
                       const gw_frame_t *fr)
{
    switch (ev->event) {
    case GW_EV_METHOD:
        gw_chan_dispatch(ch, &ev->method, fr);
        return;
    case GW_EV_CONTENT:
        if (ev->method.id == GW_BASIC_PUBLISH) {
            gw_publish_method(ch, &ev->method);
        } else {
            gw_conn_error(bc->c, GW_COMMAND_INVALID, ev->method.id,
                          "%s is not allowed from a client",
                          gw_method_info(ev->method.id)->name);
        }
        return;
    case GW_EV_HEADER:
        if (!ch->pub_on)
            return; /* the publish was refused; its content is dropped */
        gw_publish_header(ch, &ev->header);
        if (ch->pub_on && ev->done && bc->ch[id] == ch)
            gw_publish_done(ch);
        return;
    case GW_EV_BODY:
        if (!ch->pub_on)
            return;
        gw_publish_body(ch, ev->body);
        if (ch->pub_on && ev->done && bc->ch[id] == ch)
            gw_publish_done(ch);
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
    gw_bconn_ref(bc);
    ch->bc = bc;
    ch->asm_.max_body = GW_MAX_BODY;
    bc->ch[id] = ch;
    if (id > bc->max_ch)
        bc->max_ch = id;
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
        gw_consumer_remove(ch->consumers, false);
    gw_reply_chan_closed(ch);
    /* Unacked deliveries go back at once, marked redelivered. */
    while (ch->ua != NULL) {
        gw_unacked_t *u = ch->ua;
        gw_ua_unlink(ch, u);
        if (u->renewing) { /* requeued when the renewal answers */
            u->detached = true;
            u->how = GW_SETTLE_REQUEUE;
            continue;
        }
        if (!u->q->gone)
            gw_ua_settle_store(bc->b, u, GW_SETTLE_REQUEUE);
        gw_ua_free(u);
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
    gw_chan_unref(ch);
}

gw_bconn_t *gw_broker_conn_open(gw_broker_t *b, gw_conn_t *c)
{
    const gw_grant_t *g = gw_conn_grant(c);
    gw_vhost_t *vh = gw_vhost_get(b, gw_str(g != NULL ? gw_grant_vhost(g) : "/"), true);
    gw_bconn_t *bc = vh != NULL ? calloc(1, sizeof(*bc)) : NULL;

    if (bc == NULL)
        return NULL;
    bc->refs = 1;
    bc->b = b;
    bc->vh = vh;
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
        gw_queue_t *q = bc->vh->qmap[h], *next;
        for (; q != NULL; q = next) {
            next = q->hnext;
            if (q->exclusive && q->owner == bc)
                gw_queue_drop(q);
        }
    }
    if (bc->prev != NULL)
        bc->prev->next = bc->next;
    else
        b->conns = bc->next;
    if (bc->next != NULL)
        bc->next->prev = bc->prev;
    gw_bconn_unref(bc);
}

void gw_broker_writable(gw_bconn_t *bc)
{
    for (uint32_t i = 0; i < GW_CHAN_SLOTS; i++)
        if (bc->ch[i] != NULL && bc->ch[i]->consumers != NULL)
            gw_chan_pump(bc->ch[i]);
}

/* Idle consumers look again now and then (a message whose invisibility
 * ran out, one appended by another front end). */
static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    gw_broker_t *b = arg;

    int64_t now = gw_now_ms();

    (void)fd;
    (void)what;
    for (gw_vhost_t *vh = b->vhosts; vh != NULL; vh = vh->next)
        for (uint32_t h = 0; h < GW_QMAP; h++)
            for (gw_queue_t *q = vh->qmap[h]; q != NULL; q = q->hnext)
                if (q->consumers != NULL)
                    gw_queue_kick(q);
    for (gw_bconn_t *bc = b->conns; bc != NULL; bc = bc->next) {
        for (uint32_t i = 0; i <= bc->max_ch; i++) {
            gw_chan_t *ch = bc->ch[i];
            if (ch == NULL || ch->ua == NULL)
                continue;
            if (b->consumer_timeout_ms > 0 && now - ch->ua->sent_at > b->consumer_timeout_ms) {
                /* The oldest delivery waited too long (RabbitMQ's
                 * consumer_timeout): the channel closes, its unacked
                 * go back. */
                CH_ERR(ch, GW_PRECONDITION_FAILED, 0,
                       "delivery acknowledgement on channel %u timed out. Timeout value used: "
                       "%lld ms. This timeout value can be configured, see consumers doc guide "
                       "to learn more",
                       ch->id, (long long)b->consumer_timeout_ms);
                continue;
            }
            gw_chan_renew(ch, now);
        }
    }
    gw_flow_check(b, 0); /* memory may have gone back under its mark */
}

gw_broker_t *gw_broker_new(struct event_base *base, st_store_t *store,
                           const gw_broker_opts_t *bo, void (*ready_fn)(void *arg),
                           void *ready_arg)
{
    gw_broker_t *b = calloc(1, sizeof(*b));
    struct timeval tv = {GW_TICK_MS / 1000, (GW_TICK_MS % 1000) * 1000};

    if (b == NULL)
        return NULL;
    b->base = base;
    b->store = store;
    b->max_message = bo->max_message != 0 ? bo->max_message : GW_MAX_MESSAGE;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    b->post_ev = event_new(base, -1, 0, post_cb, b);
    b->tick = event_new(base, -1, EV_PERSIST, tick_cb, b);
    b->bridges = gw_bridges_new(bo->bridges, bo->nbridges, bo->auto_create_topics);
    if (b->post_ev == NULL || b->tick == NULL || b->bridges == NULL ||
        gw_vhost_get(b, gw_str("/"), true) == NULL) {
        gw_broker_free(b);
        return NULL;
    }
    b->ready_fn = ready_fn;
    b->ready_arg = ready_arg;
    b->invisible_ms = GW_INVISIBLE_MS;
    b->consumer_timeout_ms = bo->consumer_timeout_ms;
    if (bo->trace != NULL)
        b->trace = *bo->trace;
    b->block_bytes = bo->block_bytes != 0 ? bo->block_bytes : GW_BLOCK_BYTES;
    b->mem_mark = bo->mem_mark != 0 ? bo->mem_mark : UINT64_MAX;
    {
        /* Tests shorten these. */
        const char *e = getenv("GANTRY_TEST_AMQP_INVISIBLE_MS");
        long long v = e != NULL ? atoll(e) : 0;
        if (v >= 200 && v <= GW_INVISIBLE_MS)
            b->invisible_ms = v;
        e = getenv("GANTRY_TEST_AMQP_BLOCK_BYTES");
        v = e != NULL ? atoll(e) : 0;
        if (v >= 1 && (uint64_t)v <= b->block_bytes)
            b->block_bytes = (uint64_t)v;
        e = getenv("GANTRY_TEST_AMQP_CONSUMER_TIMEOUT_MS");
        v = e != NULL ? atoll(e) : 0;
        if (v >= 100 && v <= INT32_MAX)
            b->consumer_timeout_ms = v;
    }
    if (b->invisible_ms / (2 * GW_RENEW_DIV) < GW_TICK_MS) { /* renewals in time */
        tv.tv_sec = 0;
        tv.tv_usec = (suseconds_t)(b->invisible_ms / (2 * GW_RENEW_DIV) * 1000);
    }
    if (!gw_acks_new(b) || !gw_ops_new(b, bo->amqp) || !gw_meta_load_start(b)) {
        gw_broker_free(b);
        return NULL;
    }
    event_add(b->tick, &tv);
    return b;
}

void gw_broker_stop(gw_broker_t *b)
{
    if (b == NULL)
        return;
    gw_bridge_stop(b); /* sets stopping: waiting SendMessages are answered */
    event_del(b->tick);
    gw_delay_stop(b);
}

void gw_broker_free(gw_broker_t *b)
{
    if (b == NULL)
        return;
    b->stopping = true;
    gw_delay_stop(b);
    /* The loop has stopped: run the store's last answers here (and send
     * the acks they and the last round left). */
    gw_acks_flush(b);
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
        gw_acks_flush(b);
        pthread_mutex_lock(&b->mu);
    }
    pthread_mutex_unlock(&b->mu); /* the last poster has left it */
    gw_delay_free(b);
    gw_reply_free(b);
    gw_vhosts_free(b);
    gw_bridge_stop(b); /* (the broker may not have started its loop) */
    gw_bridges_free(b->bridges);
    gw_ops_free(b); /* after the queues */
    gw_acks_free(b);
    if (b->post_ev != NULL)
        event_free(b->post_ev);
    if (b->tick != NULL)
        event_free(b->tick);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    free(b);
}

