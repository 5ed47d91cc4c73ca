/* The x-delayed-message exchange on the store's timers (see gw_delay.h
 * and docs/amqp.md "Delayed messages"). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gt_log.h"
#include "gw_acks.h"
#include "gw_delay.h"
#include "gw_dlx.h"
#include "gw_maxlen.h"
#include "gw_prio.h"
#include "gw_ops.h"
#include "gw_rec.h"

/* The fire loop's parked pop is named by this key for st_pop_cancel (the
 * gRPC service's keys count up from 1 and set the top bit for pulls). */
#define DELAY_POP_KEY ((1ULL << 62) | 0xA3D1ULL)
#define DELAY_POP_WAIT_MS 20000  /* a parked pop's poll timeout */
#define DELAY_FIRING_MAX 1024u   /* fired timers in flight */
#define DELAY_INVISIBLE_MS 60000 /* a fired timer not acked comes back */

struct gw_delay {
    bool started, popping;
    bool setting_up;         /* its topic and group are being created */
    uint32_t firing;         /* fired timers whose appends are not answered */
    struct event *retry_ev;  /* after a failed pop */
    void (*done)(gw_broker_t *b);
};

/* ---- the record ---------------------------------------------------------- */

typedef struct {
    gw_str_t ex, rk;
    size_t props_off, props_len, body_off;
} rec_view_t;

/* The record (gw_rec.h) as offsets into it, for rewriting its parts. */
static bool rec_view(const uint8_t *p, size_t n, rec_view_t *v)
{
    gw_rec_t r;

    if (!gw_rec_decode(p, n, &r))
        return false;
    v->ex = r.ex;
    v->rk = r.rk;
    v->props_off = (size_t)(r.props.ptr - p);
    v->props_len = r.props.len;
    v->body_off = (size_t)(r.body - p);
    return true;
}

/* Decodes the record's property list (through a content header). */
static bool rec_props(const uint8_t *rec, const rec_view_t *v, size_t body_len, uint8_t **payload,
                      gw_props_t *props)
{
    gw_content_header_t h;
    gw_fault_t f;
    uint8_t *p = malloc(12 + v->props_len);

    *payload = NULL;
    if (p == NULL)
        return false;
    memset(p, 0, 12);
    p[1] = 60;
    for (int k = 0; k < 8; k++)
        p[4 + k] = (uint8_t)((uint64_t)body_len >> (56 - 8 * k));
    memcpy(p + 12, rec + v->props_off, v->props_len);
    if (gw_header_decode(p, 12 + v->props_len, &h, &f) != GT_OK) {
        free(p);
        return false;
    }
    *payload = p;
    *props = h.props;
    return true;
}

/* A record like rec with the property list props (re-encoded). */
static bool rec_with_props(const uint8_t *rec, size_t len, const rec_view_t *v,
                           const gw_props_t *props, uint8_t **out, size_t *out_len)
{
    size_t psize = gw_props_size(props), plen = 0, body_len = len - v->body_off;
    uint8_t *r;

    *out = NULL;
    if (psize == 0 || (r = malloc(v->props_off + psize + body_len)) == NULL)
        return false;
    memcpy(r, rec, v->props_off);
    r[v->props_off - 4] = (uint8_t)(psize >> 24);
    r[v->props_off - 3] = (uint8_t)(psize >> 16);
    r[v->props_off - 2] = (uint8_t)(psize >> 8);
    r[v->props_off - 1] = (uint8_t)psize;
    if (gw_props_encode(props, r + v->props_off, psize, &plen) != GT_OK || plen != psize) {
        free(r);
        return false;
    }
    memcpy(r + v->props_off + psize, rec + v->body_off, body_len);
    *out = r;
    *out_len = v->props_off + psize + body_len;
    return true;
}

bool gw_rec_rewrite(const uint8_t *rec, size_t len, bool drop_bcc, bool set_delay, int64_t delay,
                    uint8_t **out, size_t *out_len)
{
    uint8_t *payload = NULL, *tbuf = NULL;
    rec_view_t v;
    gw_props_t props;
    gw_tbuild_t tb;
    gw_table_iter_t it;
    gw_str_t key;
    gw_value_t val;
    gw_table_t nh;
    bool dropped = false, ok = false;

    *out = NULL;
    if (!rec_view(rec, len, &v) || !rec_props(rec, &v, len - v.body_off, &payload, &props) ||
        !(props.flags & GW_P_HEADERS))
        goto out;
    if ((tbuf = malloc(props.headers.len + 16)) == NULL)
        goto out;
    gw_tbuild_init(&tb, tbuf, props.headers.len + 16);
    gw_table_iter_init(&it, props.headers);
    while (gw_table_iter_next(&it, &key, &val)) {
        if (drop_bcc && !dropped && gw_str_eq(key, "BCC")) {
            dropped = true;
            continue;
        }
        if (set_delay && gw_str_eq(key, "x-delay")) {
            gw_value_t d = {.type = delay >= INT32_MIN ? 'I' : 'l'};
            d.v.i = delay;
            gw_tbuild_value_k(&tb, key, &d);
            continue;
        }
        gw_tbuild_value_k(&tb, key, &val);
    }
    if (gw_tbuild_finish(&tb, &nh) != GT_OK)
        goto out;
    props.headers = nh;
    ok = rec_with_props(rec, len, &v, &props, out, out_len);
out:
    free(tbuf);
    free(payload);
    return ok;
}

bool gw_rec_set_reply_to(const uint8_t *rec, size_t len, gw_str_t reply_to, uint8_t **out,
                         size_t *out_len, size_t *hdr_off, size_t *hdr_len)
{
    uint8_t *payload = NULL;
    rec_view_t v;
    gw_props_t props;
    bool ok;

    *out = NULL;
    if (!rec_view(rec, len, &v) || !rec_props(rec, &v, len - v.body_off, &payload, &props))
        return false;
    props.flags |= GW_P_REPLY_TO;
    props.reply_to = reply_to;
    ok = rec_with_props(rec, len, &v, &props, out, out_len);
    if (ok && hdr_off != NULL && hdr_len != NULL) {
        /* flags, then content-type and content-encoding (shortstrs), then
         * the headers table (u32 length + entries) */
        size_t at = v.props_off + 2;
        *hdr_off = *hdr_len = 0;
        if (props.flags & GW_P_CONTENT_TYPE)
            at += 1 + props.content_type.len;
        if (props.flags & GW_P_CONTENT_ENCODING)
            at += 1 + props.content_encoding.len;
        if ((props.flags & GW_P_HEADERS) && props.headers.len > 0) {
            *hdr_off = at + 4;
            *hdr_len = props.headers.len;
        }
    }
    free(payload);
    return ok;
}

/* ---- declare and publish ---------------------------------------------- */

bool gw_delay_declare(gw_chan_t *ch, uint32_t mid, gw_table_t args, gw_xtype_t *type)
{
    gw_value_t v;
    gw_str_t t;

    if (!gw_table_get(args, "x-delayed-type", &v) || (v.type != 'S' && v.type != 'x')) {
        CH_ERR(ch, GW_PRECONDITION_FAILED, mid,
               "Invalid argument, 'x-delayed-type' must be an existing exchange type");
        return false;
    }
    t = (gw_str_t){(const char *)v.v.bytes.ptr, v.v.bytes.len};
    if (gw_str_eq(t, "x-delayed-message")) {
        CH_ERR(ch, GW_PRECONDITION_FAILED, mid,
               "Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'");
        return false;
    }
    if (gw_xtype_parse(t, type) != GT_OK) {
        gw_conn_error(ch->bc->c, GW_COMMAND_INVALID, mid, "unknown exchange type '%.*s'",
                      (int)t.len, t.ptr);
        return false;
    }
    return true;
}

int64_t gw_delay_of(gw_table_t headers)
{
    gw_value_t v;
    int64_t d = 0;

    if (headers.len == 0 || !gw_table_get(headers, "x-delay", &v))
        return 0;
    if (gw_value_int(&v, &d)) {
        /* as read */
    } else if (v.type == 'd') {
        d = v.v.d > 0 && v.v.d < 9.2e18 ? (int64_t)v.v.d : 0;
    } else if (v.type == 'f') {
        d = v.v.f > 0 && v.v.f < 9.2e18f ? (int64_t)v.v.f : 0;
    } else if (v.type == 'S') {
        /* binary_to_integer: an optional sign and decimal digits */
        const uint8_t *p = v.v.bytes.ptr;
        size_t n = v.v.bytes.len, i = 0;
        bool neg = false;
        if (n > 0 && (p[0] == '-' || p[0] == '+'))
            neg = p[i++] == '-';
        if (i == n || n - i > 12)
            return 0;
        for (; i < n; i++) {
            if (p[i] < '0' || p[i] > '9')
                return 0;
            d = d * 10 + (p[i] - '0');
        }
        if (neg)
            d = -d;
    }
    return d > 0 && d <= GW_DELAY_MAX ? d : 0;
}

static void delay_pump(gw_broker_t *b);
static void delay_setup(gw_broker_t *b);

/* ---- the fire loop -------------------------------------------------------- */

typedef struct {
    char handle[ST_HANDLE_MAX];
    char vhost[256];
    char via[256]; /* the exchange to route through ("": the record's) */
    uint8_t *body;
    size_t len;
} timer_rec_t;

typedef struct {
    gw_op_t op;
    size_t n;
    timer_rec_t t[];
} dpop_op_t;

/* The appends of one fired timer. */
typedef struct {
    gw_op_t op;
    char handle[ST_HANDLE_MAX];
    uint64_t blen; /* body bytes (length limits) */
    size_t nq;
    gw_queue_t *qs[]; /* refs */
} fire_op_t;

static void timer_ack(gw_broker_t *b, const char *handle)
{
    gw_store_ack(b, GW_DELAY_TOPIC, handle);
}

static void fire_fn(gw_op_t *op)
{
    fire_op_t *o = (fire_op_t *)op;
    gw_broker_t *b = op->b;

    if (op->err == GT_OK)
        timer_ack(b, o->handle);
    else
        GT_LOG(WARN, "amqp", "a delayed message's append failed (%s); it fires again in %d s",
               gt_err_str(op->err), DELAY_INVISIBLE_MS / 1000);
    for (size_t i = 0; i < o->nq; i++) {
        if (op->err == GT_OK)
            gw_qstats_inc(o->qs[i], GW_QS_PUBLISHED, 1);
        if (op->err == GT_OK && !o->qs[i]->gone)
            gw_queue_kick(o->qs[i]);
        gw_maxlen_appended(o->qs[i], o->blen, op->err == GT_OK);
        gw_queue_unref(o->qs[i]);
    }
    if (b->delay != NULL) {
        b->delay->firing--;
        delay_pump(b);
    }
    free(o);
}

static void fire_cb(void *arg, gt_err_t err, const st_append_item_t *items, size_t n)
{
    fire_op_t *o = arg;

    (void)items;
    (void)n;
    o->op.err = err;
    gw_op_post(&o->op);
}

/* Routes one fired timer through its exchange's bindings as they are now
 * and appends it once to the queues reached; the timer is acked then
 * (at once when nothing is reached: the plugin drops it too). */
/* A refused message dead-lettered: its timer is acked with the others. */
static void dl_none(void *arg, bool ok)
{
    (void)arg;
    (void)ok;
}

static void fire_one(gw_broker_t *b, const timer_rec_t *t)
{
    gw_str_t kstack[16], *keys = kstack;
    uint8_t *payload = NULL, *rec = NULL;
    size_t nkeys = 1, nextra = 0, routed = 0, rec_len = 0;
    gw_queue_t **qs = NULL;
    gw_route_out_t out = {0};
    fire_op_t *o = NULL;
    rec_view_t v;
    gw_props_t props;
    gw_table_t hdrs = {NULL, 0};
    gw_value_t bcc;
    bool has_bcc = false;
    gw_vhost_t *vh;
    gt_err_t rc;

    if ((vh = gw_vhost_get(b, gw_str(t->vhost), false)) == NULL)
        goto drop; /* no such vhost now: none of its exchanges either */
    if (!rec_view(t->body, t->len, &v) ||
        !rec_props(t->body, &v, t->len - v.body_off, &payload, &props)) {
        GT_LOG(WARN, "amqp", "a delayed message is not a gateway record: dropped");
        goto drop;
    }
    if (props.flags & GW_P_HEADERS)
        hdrs = props.headers;
    keys[0] = v.rk;
    if (hdrs.len > 0) {
        if (gw_route_header_keys(hdrs, keys + 1, 15, &nextra, NULL, 0) != GT_OK)
            goto drop;
        if (nextra > 15) {
            if ((keys = malloc((nextra + 1) * sizeof(*keys))) == NULL)
                goto out; /* fires again later */
            keys[0] = v.rk;
            gw_route_header_keys(hdrs, keys + 1, nextra, &nextra, NULL, 0);
        }
        nkeys += nextra;
        has_bcc = gw_table_get(hdrs, "BCC", &bcc);
    }
    /* through the delayed exchange an exchange-to-exchange binding
     * reached at publish (via), or the one published to */
    rc = gw_route(vh->router, t->via[0] != '\0' ? gw_str(t->via) : v.ex, keys, nkeys, hdrs,
                  &out);
    if (rc == GT_ENOTFOUND || (rc == GT_OK && out.n == 0))
        goto drop; /* the exchange is gone, or no binding matches now */
    if (rc != GT_OK)
        goto out;
    if (out.n > ST_DEST_MAX) {
        GT_LOG(WARN, "amqp", "a delayed message reached %zu queues: the first %u get it", out.n,
               ST_DEST_MAX);
        out.n = ST_DEST_MAX;
    }
    if ((o = gw_op_new(b, sizeof(*o) + out.n * sizeof(o->qs[0]), fire_fn)) == NULL)
        goto out;
    o->blen = t->len - v.body_off;
    for (size_t i = 0; i < out.n; i++) {
        gw_queue_t *q = gw_queue_find(vh, out.queues[i]);
        if (q == NULL || q->gone || !q->ready)
            continue;
        if (!gw_maxlen_admit(q, o->blen)) { /* a full reject-publish queue refuses it */
            if (q->args.overflow == GW_OVERFLOW_REJECT_PUBLISH_DLX)
                gw_dead_letter(q, t->body, t->len, GW_DL_MAXLEN, dl_none, NULL);
            continue;
        }
        gw_queue_ref(q);
        o->qs[routed++] = q;
    }
    o->nq = routed;
    if (routed == 0) {
        free(o);
        pthread_mutex_lock(&b->mu);
        b->ops--;
        pthread_mutex_unlock(&b->mu);
        o = NULL;
        goto drop;
    }
    /* As the plugin: x-delay becomes -delay (not delayed again); BCC goes
     * as in every delivery. */
    if (!gw_rec_rewrite(t->body, t->len, has_bcc, true, -gw_delay_of(hdrs), &rec, &rec_len)) {
        rec = NULL;
        rec_len = 0;
    }
    snprintf(o->handle, sizeof(o->handle), "%s", t->handle);
    b->delay->firing++;
    {
        st_message_t msg;
        uint8_t prio = (props.flags & GW_P_PRIORITY) ? props.priority : 0;
        memset(&msg, 0, sizeof(msg));
        msg.body = rec != NULL ? rec : t->body;
        msg.body_len = (uint32_t)(rec != NULL ? rec_len : t->len);
        msg.queue_id = gw_prio_level(o->qs[0], prio);
        msg.born_ts_ms = (int64_t)time(NULL) * 1000;
        if (routed == 1) {
            st_append(b->store, o->qs[0]->id, &msg, 1, fire_cb, o);
        } else {
            st_dest_t *dests = calloc(routed, sizeof(*dests));
            if (dests == NULL) {
                o->op.err = GT_ENOMEM;
                gw_op_post(&o->op);
            } else {
                for (size_t i = 0; i < routed; i++)
                    dests[i] = (st_dest_t){.topic = o->qs[i]->id,
                                           .queue_id = gw_prio_level(o->qs[i], prio)};
                st_append_multi(b->store, &msg, dests, routed, fire_cb, o);
                free(dests);
            }
        }
    }
    goto out;
drop:
    timer_ack(b, t->handle);
out:
    (void)qs;
    free(rec);
    free(payload);
    if (keys != kstack)
        free(keys);
}

static void dpop_fn(gw_op_t *op)
{
    dpop_op_t *o = (dpop_op_t *)op;
    gw_broker_t *b = op->b;
    gw_delay_t *d = b->delay;

    d->popping = false;
    for (size_t i = 0; i < o->n; i++) {
        if (!b->stopping && o->t[i].body != NULL) {
            fire_one(b, &o->t[i]);
        } else { /* given back as not delivered */
            gw_op_t *r = gw_op_new(b, sizeof(*r), gw_op_free_fn);
            if (r != NULL)
                st_release(b->store, GW_DELAY_TOPIC, GW_DELAY_TOPIC, o->t[i].handle,
                           gw_op_done_cb, r);
        }
        free(o->t[i].body);
    }
    if (op->err == GT_ENOTFOUND && !b->stopping) {
        /* Their topic or group is gone: the store node's data are new
         * (wiped).  Created again, as at start. */
        GT_LOG(WARN, "amqp", "the delayed messages' store topic or group is gone: creating "
               "them again");
        delay_setup(b);
    } else if (op->err != GT_OK && !b->stopping) {
        struct timeval tv = {1, 0};
        GT_LOG(WARN, "amqp", "popping due delayed messages failed: %s", gt_err_str(op->err));
        if (d->retry_ev != NULL)
            event_add(d->retry_ev, &tv);
    } else {
        delay_pump(b);
    }
    free(o);
}

static void dpop_cb(void *arg, gt_err_t err, const st_popped_t *msgs, size_t n)
{
    dpop_op_t *o = arg, *big;

    o->op.err = err;
    if (err == GT_OK && n > 0) {
        if ((big = realloc(o, sizeof(*o) + n * sizeof(timer_rec_t))) == NULL) {
            o->op.err = GT_ENOMEM; /* they come back after their invisibility */
            gw_op_post(&o->op);
            return;
        }
        o = big;
        for (size_t i = 0; i < n; i++) {
            timer_rec_t *t = &o->t[i];
            memset(t, 0, sizeof(*t));
            snprintf(t->handle, sizeof(t->handle), "%s", msgs[i].handle);
            for (uint32_t k = 0; k < msgs[i].msg.nprops; k++)
                if (strcmp(msgs[i].msg.props[k].key, "vhost") == 0)
                    snprintf(t->vhost, sizeof(t->vhost), "%s", msgs[i].msg.props[k].value);
                else if (strcmp(msgs[i].msg.props[k].key, "via") == 0)
                    snprintf(t->via, sizeof(t->via), "%s", msgs[i].msg.props[k].value);
            t->len = msgs[i].msg.body_len;
            if ((t->body = malloc(t->len > 0 ? t->len : 1)) != NULL)
                memcpy(t->body, msgs[i].msg.body, t->len);
            o->n = i + 1;
        }
    }
    gw_op_post(&o->op);
}

static void delay_pump(gw_broker_t *b)
{
    gw_delay_t *d = b->delay;
    dpop_op_t *o;
    st_pop_req_t req;

    if (d == NULL || !d->started || d->popping || d->setting_up || b->stopping ||
        d->firing >= DELAY_FIRING_MAX)
        return;
    if ((o = gw_op_new(b, sizeof(*o), dpop_fn)) == NULL)
        return;
    d->popping = true;
    memset(&req, 0, sizeof(req));
    req.group = GW_DELAY_TOPIC;
    req.topic = GW_DELAY_TOPIC;
    req.queue_id = ST_QUEUE_ANY;
    req.max = ST_POP_MAX;
    req.invisible_ms = DELAY_INVISIBLE_MS;
    req.poll_timeout_ms = DELAY_POP_WAIT_MS;
    req.cancel_key = DELAY_POP_KEY;
    st_pop(b->store, &req, dpop_cb, o);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    delay_pump(arg);
}

/* ---- publishing a timer ------------------------------------------------- */

void gw_delay_publish(gw_chan_t *ch, int64_t delay_ms, gw_pub_t *pub, const char *via)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    gw_publish_timer(ch, pub, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + delay_ms,
                     GW_DELAY_TOPIC, ch->bc->vh->name, via);
}

/* ---- start and stop ----------------------------------------------------- */

typedef struct {
    gw_op_t op;
    int step;
} setup_op_t;

static void requeue_cb(void *arg, gt_err_t err, uint64_t n)
{
    setup_op_t *o = arg;

    if (err == GT_OK && n > 0)
        GT_LOG(INFO, "amqp", "%llu delayed messages fired in an earlier run fire again",
               (unsigned long long)n);
    o->op.err = err == GT_ENOTFOUND ? GT_OK : err;
    gw_op_post(&o->op);
}

static void setup_fn(gw_op_t *op)
{
    setup_op_t *o = (setup_op_t *)op;
    gw_broker_t *b = op->b;
    gw_delay_t *d = b->delay;

    if (op->err != GT_OK)
        GT_LOG(ERROR, "amqp", "cannot create the delayed messages' store %s: %s",
               o->step == 0 ? "topic" : o->step == 1 ? "group" : "requeue",
               gt_err_str(op->err));
    if (op->err == GT_OK && o->step == 0 && !b->stopping) {
        st_group_t g;
        memset(&g, 0, sizeof(g));
        snprintf(g.name, sizeof(g.name), "%s", GW_DELAY_TOPIC);
        g.max_delivery_attempts = UINT32_MAX;
        g.consume_from = ST_CONSUME_FROM_FIRST;
        o->step = 1;
        pthread_mutex_lock(&b->mu);
        b->ops++;
        pthread_mutex_unlock(&b->mu);
        st_group_put(b->store, &g, gw_op_done_cb, o);
        return;
    }
    if (op->err == GT_OK && o->step == 1 && !b->stopping) {
        /* timers popped by an earlier run and not acked fire again now */
        o->step = 2;
        pthread_mutex_lock(&b->mu);
        b->ops++;
        pthread_mutex_unlock(&b->mu);
        st_requeue(b->store, GW_DELAY_TOPIC, GW_DELAY_TOPIC, requeue_cb, o);
        return;
    }
    d->setting_up = false;
    if (d->done == NULL && op->err != GT_OK && !b->stopping) {
        /* Created again after they were gone (delay_setup): retried
         * through the pump, which finds them missing again. */
        struct timeval tv = {1, 0};
        free(o);
        if (d->retry_ev != NULL)
            event_add(d->retry_ev, &tv);
        return;
    }
    if (d->done != NULL) /* the start-up's */
        d->started = op->err == GT_OK;
    free(o);
    if (d->done != NULL) {
        void (*done)(gw_broker_t *b) = d->done;
        d->done = NULL;
        done(b);
    }
    delay_pump(b);
}

/* Creates the delayed messages' topic, then their group (setup_fn), then
 * requeues what an earlier run popped. */
static void delay_setup(gw_broker_t *b)
{
    setup_op_t *o = gw_op_new(b, sizeof(*o), setup_fn);
    st_topic_t t;

    if (o == NULL) {
        GT_LOG(ERROR, "amqp", "out of memory: delayed messages are off");
        if (b->delay->done != NULL) {
            void (*done)(gw_broker_t *b) = b->delay->done;
            b->delay->done = NULL;
            done(b);
        }
        return;
    }
    b->delay->setting_up = true;
    memset(&t, 0, sizeof(t));
    snprintf(t.name, sizeof(t.name), "%s", GW_DELAY_TOPIC);
    t.type = ST_TOPIC_DELAY;
    t.queue_count = 1;
    t.perm = ST_PERM_READ | ST_PERM_WRITE;
    st_topic_put(b->store, &t, gw_op_done_cb, o);
}

void gw_delay_start(gw_broker_t *b, void (*done)(gw_broker_t *b))
{
    gw_delay_t *d = calloc(1, sizeof(*d));

    if (d == NULL) {
        GT_LOG(ERROR, "amqp", "out of memory: delayed messages are off");
        done(b);
        return;
    }
    d->done = done;
    d->retry_ev = evtimer_new(b->base, retry_cb, b);
    b->delay = d;
    delay_setup(b);
}

void gw_delay_stop(gw_broker_t *b)
{
    if (b->delay != NULL && b->delay->popping)
        st_pop_cancel(b->store, DELAY_POP_KEY);
}

void gw_delay_free(gw_broker_t *b)
{
    if (b->delay == NULL)
        return;
    if (b->delay->retry_ev != NULL)
        event_free(b->delay->retry_ev);
    free(b->delay);
    b->delay = NULL;
}
