/* Dead-lettering: see gw_dlx.h.  Runs on the gateway's loop thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gt_log.h"
#include "gw_broker_int.h"
#include "gw_delay.h"
#include "gw_dlx.h"
#include "gw_maxlen.h"
#include "gw_prio.h"
#include "gw_ops.h"
#include "gw_rec.h"

const char *gw_dl_reason_name(gw_dl_reason_t r)
{
    switch (r) {
    case GW_DL_REJECTED: return "rejected";
    case GW_DL_EXPIRED: return "expired";
    case GW_DL_MAXLEN: return "maxlen";
    case GW_DL_DELIVERY_LIMIT: return "delivery_limit";
    }
    return "rejected";
}

bool gw_dl_over_limit(const gw_queue_t *q, uint32_t attempt)
{
    /* RabbitMQ counts returns: the message dies on the return that makes
     * the count exceed the limit.  attempt n returns for the n-th time. */
    return q->args.type == GW_QTYPE_QUORUM && q->args.has_delivery_limit &&
           (int64_t)attempt > q->args.delivery_limit;
}

/* ---- headers ----------------------------------------------------------- */

typedef struct {
    gw_str_t key;
    gw_value_t val;
} ent_t;

static int ent_cmp(const void *a, const void *b)
{
    const ent_t *x = a, *y = b;
    size_t n = x->key.len < y->key.len ? x->key.len : y->key.len;
    int c = n > 0 ? memcmp(x->key.ptr, y->key.ptr, n) : 0;

    if (c != 0)
        return c;
    return x->key.len < y->key.len ? -1 : x->key.len > y->key.len ? 1 : 0;
}

/* qsort is not stable; RabbitMQ's keysort is: ties keep their order. */
static void ent_sort(ent_t *e, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        ent_t t = e[i];
        size_t j = i;
        while (j > 0 && ent_cmp(&e[j - 1], &t) > 0) {
            e[j] = e[j - 1];
            j--;
        }
        e[j] = t;
    }
}

static gw_value_t vstr(gw_str_t s)
{
    gw_value_t v = {.type = 'S'};

    v.v.bytes = (gw_bytes_t){(const uint8_t *)s.ptr, s.len};
    return v;
}

static bool tstr_is(const gw_value_t *v, gw_str_t s)
{
    return v->type == 'S' && v->v.bytes.len == s.len &&
           (s.len == 0 || memcmp(v->v.bytes.ptr, s.ptr, s.len) == 0);
}

/* A growing buffer for the builder: retried twice as large on ERANGE. */
typedef struct {
    uint8_t *buf;
    size_t cap;
} gbuf_t;

static bool gbuf_grow(gbuf_t *g, size_t min)
{
    size_t cap = g->cap * 2 > min ? g->cap * 2 : min;
    uint8_t *p = realloc(g->buf, cap);

    if (p == NULL)
        return false;
    g->buf = p;
    g->cap = cap;
    return true;
}

typedef struct {
    gw_queue_t *q;
    gw_dl_reason_t reason;
    gw_rec_t r;
    gw_props_t props;      /* decoded */
    gw_table_t hdrs;       /* the message's headers ({NULL,0}: none) */
    gw_str_t keys[64];     /* its routing keys: rk, then CC */
    size_t nkeys;
    bool had_xdeath;
    gw_table_t xdeath;     /* the old x-death array (elements) */
    gw_str_t exp;          /* expiration, when present */
} dl_t;

/* Writes one x-death entry (a table) into b: the new one, or the old
 * matching one counted up; sorted unless it is the first death. */
static void put_entry(gw_tbuild_t *b, const dl_t *d, const gw_value_t *match, int64_t now)
{
    ent_t e[32];
    size_t n = 0;
    gw_value_t cnt = {.type = 'l'};

    if (match != NULL) {
        gw_table_iter_t it;
        gw_str_t k;
        gw_value_t v;
        bool counted = false;
        gw_table_iter_init(&it, match->v.table);
        while (n < 31 && gw_table_iter_next(&it, &k, &v)) {
            int64_t c;
            if (gw_str_eq(k, "count") && !counted) {
                counted = true;
                /* a client may have set it: saturates, never wraps */
                cnt.v.i = gw_value_int(&v, &c) ? (c < INT64_MAX ? c + 1 : c) : 1;
                v = cnt;
            }
            e[n++] = (ent_t){k, v};
        }
        if (!counted) {
            cnt.v.i = 1;
            e[n++] = (ent_t){gw_str("count"), cnt};
        }
        ent_sort(e, n);
        gw_tbuild_table_begin(b, NULL);
        for (size_t i = 0; i < n; i++)
            gw_tbuild_value_k(b, e[i].key, &e[i].val);
        gw_tbuild_end(b);
        return;
    }
    {
        gw_value_t t = {.type = 'T'};
        gw_value_t rks = {.type = 'A'};
        uint8_t abuf[64 * 270];
        gw_tbuild_t ab;
        gw_table_t at = {NULL, 0};
        size_t cap = 0;
        for (size_t i = 0; i < d->nkeys; i++)
            cap += 5 + d->keys[i].len;
        /* the routing keys array, built apart (bounded: 64 keys) */
        uint8_t *heap = cap + 16 > sizeof(abuf) ? malloc(cap + 16) : NULL;
        gw_tbuild_init(&ab, heap != NULL ? heap : abuf, heap != NULL ? cap + 16 : sizeof(abuf));
        gw_tbuild_array_begin(&ab, "x"); /* a wrapper: its body is the array */
        for (size_t i = 0; i < d->nkeys; i++)
            gw_tbuild_longstr(&ab, NULL, d->keys[i].ptr, d->keys[i].len);
        gw_tbuild_end(&ab);
        if (gw_tbuild_finish(&ab, &at) == GT_OK) {
            at.ptr += 7; /* key "x" (2), type (1), length (4) */
            at.len -= 7;
        } else {
            at = (gw_table_t){NULL, 0};
        }
        rks.v.table = at;
        t.v.u = (uint64_t)now;
        cnt.v.i = 1;
        e[n++] = (ent_t){gw_str("count"), cnt};
        e[n++] = (ent_t){gw_str("reason"), vstr(gw_str(gw_dl_reason_name(d->reason)))};
        e[n++] = (ent_t){gw_str("queue"), vstr((gw_str_t){d->q->name, d->q->nlen})};
        e[n++] = (ent_t){gw_str("time"), t};
        e[n++] = (ent_t){gw_str("exchange"), vstr(d->r.ex)};
        e[n++] = (ent_t){gw_str("routing-keys"), rks};
        if (d->exp.ptr != NULL)
            e[n++] = (ent_t){gw_str("original-expiration"), vstr(d->exp)};
        if (d->had_xdeath)
            ent_sort(e, n);
        gw_tbuild_table_begin(b, NULL);
        for (size_t i = 0; i < n; i++)
            gw_tbuild_value_k(b, e[i].key, &e[i].val);
        gw_tbuild_end(b);
        free(heap);
    }
}

/* The new x-death array's elements into g (without length word). */
static bool build_xdeath(const dl_t *d, gbuf_t *g, gw_table_t *out, int64_t now)
{
    for (;;) {
        gw_tbuild_t b;
        gw_table_iter_t it;
        gw_value_t v, match = {.type = 'V'};
        bool found = false;
        gt_err_t rc;

        /* find the entry of this queue and reason */
        if (d->had_xdeath) {
            gw_table_iter_init(&it, d->xdeath);
            while (!found && gw_array_iter_next(&it, &v)) {
                gw_value_t q, r;
                if (v.type == 'F' && gw_table_get(v.v.table, "queue", &q) &&
                    gw_table_get(v.v.table, "reason", &r) &&
                    tstr_is(&q, (gw_str_t){d->q->name, d->q->nlen}) &&
                    tstr_is(&r, gw_str(gw_dl_reason_name(d->reason)))) {
                    match = v;
                    found = true;
                }
            }
        }
        gw_tbuild_init(&b, g->buf, g->cap);
        gw_tbuild_array_begin(&b, "x");
        put_entry(&b, d, found ? &match : NULL, now);
        if (d->had_xdeath) {
            gw_table_iter_init(&it, d->xdeath);
            while (gw_array_iter_next(&it, &v))
                if (!(found && v.type == 'F' && v.v.table.ptr == match.v.table.ptr))
                    gw_tbuild_value_k(&b, (gw_str_t){NULL, 0}, &v);
        }
        gw_tbuild_end(&b);
        rc = gw_tbuild_finish(&b, out);
        if (rc == GT_OK) {
            /* skip the wrapper: key "x" (2), type 'A' (1), length (4) */
            out->ptr += 7;
            out->len -= 7;
            return true;
        }
        if (rc != GT_ERANGE || !gbuf_grow(g, g->cap * 2))
            return false;
    }
}

/* The new headers table into g. */
static bool build_headers(const dl_t *d, gw_table_t xd, gbuf_t *g, gw_table_t *out)
{
    size_t n = 0, cap = 8 + gw_table_count(d->hdrs);
    ent_t *e = calloc(cap, sizeof(*e));
    gw_table_iter_t it;
    gw_str_t k;
    gw_value_t v, xv = {.type = 'A'};
    bool ok = false;

    if (e == NULL)
        return false;
    gw_table_iter_init(&it, d->hdrs);
    while (gw_table_iter_next(&it, &k, &v)) {
        if (gw_str_eq(k, "x-death"))
            continue;
        if (gw_str_eq(k, "CC") && d->q->args.has_dlrk)
            continue;
        e[n++] = (ent_t){k, v};
    }
    xv.v.table = xd;
    e[n++] = (ent_t){gw_str("x-death"), xv};
    if (!d->had_xdeath) {
        e[n++] = (ent_t){gw_str("x-first-death-reason"),
                         vstr(gw_str(gw_dl_reason_name(d->reason)))};
        e[n++] = (ent_t){gw_str("x-first-death-queue"), vstr((gw_str_t){d->q->name, d->q->nlen})};
        e[n++] = (ent_t){gw_str("x-first-death-exchange"), vstr(d->r.ex)};
    }
    ent_sort(e, n);
    for (;;) {
        gw_tbuild_t b;
        gt_err_t rc;
        gw_tbuild_init(&b, g->buf, g->cap);
        for (size_t i = 0; i < n; i++)
            gw_tbuild_value_k(&b, e[i].key, &e[i].val);
        rc = gw_tbuild_finish(&b, out);
        if (rc == GT_OK) {
            ok = true;
            break;
        }
        if (rc != GT_ERANGE || !gbuf_grow(g, g->cap * 2))
            break;
    }
    free(e);
    return ok;
}

/* RabbitMQ's is_cycle: the message died in `queue` before and no death
 * from the newest up to that one was a rejection. */
static bool is_cycle(gw_table_t xdeath, gw_str_t queue)
{
    gw_table_iter_t it;
    gw_value_t v;

    gw_table_iter_init(&it, xdeath);
    while (gw_array_iter_next(&it, &v)) {
        gw_value_t q, r;
        bool rejected;
        if (v.type != 'F')
            return false; /* RabbitMQ: a non-table entry breaks the cycle */
        rejected = gw_table_get(v.v.table, "reason", &r) && tstr_is(&r, gw_str("rejected"));
        if (rejected)
            return false;
        if (gw_table_get(v.v.table, "queue", &q) && tstr_is(&q, queue))
            return true;
    }
    return false;
}

/* ---- the append -------------------------------------------------------- */

typedef struct {
    gw_op_t op;
    gw_dl_done_fn done;
    void *arg;
    uint64_t blen; /* body bytes (length limits) */
    size_t nq;
    gw_queue_t *qs[];
} dlop_t;

static void dl_fn(gw_op_t *op)
{
    dlop_t *o = (dlop_t *)op;

    if (op->err != GT_OK && o->nq == 0)
        GT_LOG(WARN, "amqp", "dead-letter append to the delayed messages failed: %s",
               gt_err_str(op->err));
    else if (op->err != GT_OK)
        GT_LOG(WARN, "amqp", "dead-letter append to '%.*s' failed: %s", (int)o->qs[0]->nlen,
               o->qs[0]->name, gt_err_str(op->err));
    for (size_t i = 0; i < o->nq; i++) {
        if (op->err == GT_OK)
            gw_qstats_inc(o->qs[i], GW_QS_PUBLISHED, 1);
        if (op->err == GT_OK && !o->qs[i]->gone) {
            gw_ttl_appended(o->qs[i], -1); /* its x-message-ttl (expiration went) */
            gw_queue_kick(o->qs[i]);
        }
        gw_maxlen_appended(o->qs[i], o->blen, op->err == GT_OK);
        gw_queue_unref(o->qs[i]);
    }
    o->done(o->arg, op->err == GT_OK);
    free(o);
}

static void dl_cb(void *arg, gt_err_t err, const st_append_item_t *items, size_t n)
{
    dlop_t *o = arg;

    (void)items;
    (void)n;
    o->op.err = err;
    gw_op_post(&o->op);
}

void gw_dead_letter(gw_queue_t *q, const uint8_t *rec, size_t len, gw_dl_reason_t reason,
                    gw_dl_done_fn done, void *arg)
{
    gw_broker_t *b = q->b;
    gw_str_t dlx = {q->args.dlx, q->args.dlx_len};
    dl_t d;
    gbuf_t xg = {NULL, 0}, hg = {NULL, 0};
    gw_table_t xd, nh;
    gw_str_t rkeys[1], *route_keys;
    size_t nroute, nextra = 0, routed = 0;
    gw_queue_t *qstack[16], **qs = qstack;
    uint8_t *payload = NULL, *nrec = NULL;
    size_t psize, plen, at;
    gw_content_header_t h;
    gw_fault_t f;
    gw_value_t v;
    st_message_t msg;
    st_dest_t *dests = NULL;
    dlop_t *o;
    int64_t now = (int64_t)time(NULL), delay = 0;
    uint32_t xflags = 0;
    bool admitted = false;
    uint8_t prio;

    if (!q->args.has_dlx || q->gone || b->stopping) {
        done(arg, true); /* no DLX (or no queue any more): dropped */
        return;
    }
    memset(&d, 0, sizeof(d));
    d.q = q;
    d.reason = reason;
    if (!gw_rec_decode(rec, len, &d.r)) {
        /* not a record of this gateway: its body, no properties */
        static const uint8_t noprops[2] = {0, 0};
        d.r.ex = (gw_str_t){"", 0};
        d.r.rk = (gw_str_t){q->name, q->nlen};
        d.r.props = (gw_bytes_t){noprops, 2};
        d.r.body = rec;
        d.r.body_len = len;
    }
    /* the properties, decoded (a header frame's payload around them) */
    if ((payload = malloc(12 + d.r.props.len)) == NULL)
        goto fail;
    memset(payload, 0, 12);
    payload[1] = 60;
    memcpy(payload + 12, d.r.props.ptr, d.r.props.len);
    if (gw_header_decode(payload, 12 + d.r.props.len, &h, &f) != GT_OK) {
        GT_LOG(WARN, "amqp", "queue '%.*s': a stored message's properties do not decode; "
                             "dropped instead of dead-lettered", (int)q->nlen, q->name);
        free(payload);
        done(arg, true);
        return;
    }
    d.props = h.props;
    if (d.props.flags & GW_P_HEADERS)
        d.hdrs = d.props.headers;
    if (d.props.flags & GW_P_EXPIRATION)
        d.exp = d.props.expiration;
    d.had_xdeath = gw_table_get(d.hdrs, "x-death", &v) && v.type == 'A';
    if (d.had_xdeath)
        d.xdeath = v.v.table;
    /* the message's routing keys: its key, then CC (BCC went at publish) */
    d.keys[0] = d.r.rk;
    d.nkeys = 1;
    if (d.hdrs.len > 0 && gw_route_header_keys(d.hdrs, d.keys + 1, 63, &nextra, NULL, 0) ==
                              GT_OK)
        d.nkeys += nextra < 63 ? nextra : 63;
    /* the new headers and properties */
    xg.cap = hg.cap = 512 + d.hdrs.len + 2 * q->nlen + d.r.ex.len + 8 * d.nkeys;
    for (size_t i = 0; i < d.nkeys; i++)
        xg.cap += d.keys[i].len;
    hg.cap += xg.cap;
    if ((xg.buf = malloc(xg.cap)) == NULL || (hg.buf = malloc(hg.cap)) == NULL ||
        !build_xdeath(&d, &xg, &xd, now) || !build_headers(&d, xd, &hg, &nh))
        goto fail;
    d.props.flags |= GW_P_HEADERS;
    d.props.headers = nh;
    d.props.flags &= (uint16_t)~GW_P_EXPIRATION;
    if ((psize = gw_props_size(&d.props)) == 0)
        goto fail;
    /* routing: the DLX with the dead-letter key, or the message's keys */
    if (q->args.has_dlrk) {
        rkeys[0] = (gw_str_t){q->args.dlrk, q->args.dlrk_len};
        route_keys = rkeys;
        nroute = 1;
    } else {
        route_keys = d.keys;
        nroute = d.nkeys;
    }
    if (dlx.len == 0) {
        if (nroute > 16 && (qs = calloc(nroute, sizeof(*qs))) == NULL) {
            qs = qstack;
            goto fail;
        }
        for (size_t i = 0; i < nroute; i++) {
            gw_queue_t *t = gw_queue_find(q->vh, route_keys[i]);
            bool seen = false;
            for (size_t k = 0; k < routed && !seen; k++)
                seen = qs[k] == t;
            if (t != NULL && !t->gone && t->ready && !seen)
                qs[routed++] = t;
        }
    } else if (gw_route_exchange_get(q->vh->router, dlx, NULL, &xflags) &&
               (xflags & GW_XF_DELAYED) && (delay = gw_delay_of(nh)) > 0) {
        /* an x-delayed-message DLX and a due x-delay: a timer, routed when
         * it fires (gw_delay.c), as the plugin delays dead-lettered
         * messages too */
    } else {
        gw_route_out_t out = {0};
        if (gw_route(q->vh->router, dlx, route_keys, nroute, nh, &out) == GT_OK) {
            if (out.n > 16 && (qs = calloc(out.n, sizeof(*qs))) == NULL) {
                qs = qstack;
                goto fail;
            }
            for (size_t i = 0; i < out.n; i++) {
                gw_queue_t *t = gw_queue_find(q->vh, out.queues[i]);
                if (t != NULL && !t->gone && t->ready)
                    qs[routed++] = t;
            }
        }
    }
    /* cycles (never for rejections) */
    if (reason != GW_DL_REJECTED) {
        size_t keep = 0;
        for (size_t i = 0; i < routed; i++) {
            if (is_cycle(xd, (gw_str_t){qs[i]->name, qs[i]->nlen}))
                GT_LOG(DEBUG, "amqp", "dead-letter cycle: a message of '%.*s' (%s) is not "
                                      "delivered to '%.*s' again",
                       (int)q->nlen, q->name, gw_dl_reason_name(reason), (int)qs[i]->nlen,
                       qs[i]->name);
            else
                qs[keep++] = qs[i];
        }
        routed = keep;
    }
    if (routed > ST_DEST_MAX)
        routed = ST_DEST_MAX;
    { /* length limits: a full reject-publish(-dlx) queue refuses it */
        size_t keep = 0;
        for (size_t i = 0; i < routed; i++)
            if (gw_maxlen_admit(qs[i], d.r.body_len))
                qs[keep++] = qs[i];
        routed = keep;
        admitted = true;
    }
    if (routed == 0 && delay == 0) {
        GT_LOG(DEBUG, "amqp", "queue '%.*s': a %s message reached no queue through '%.*s': "
                              "dropped", (int)q->nlen, q->name, gw_dl_reason_name(reason),
               (int)dlx.len, dlx.ptr);
        free(payload);
        free(xg.buf);
        free(hg.buf);
        if (qs != qstack)
            free(qs);
        done(arg, true);
        return;
    }
    /* the new record: 0xA1, the DLX, the key it goes with, props, body */
    {
        gw_str_t nrk = q->args.has_dlrk ? rkeys[0] : d.r.rk;
        size_t total = 1 + 1 + dlx.len + 1 + nrk.len + 4 + psize + d.r.body_len;
        if ((nrec = malloc(total)) == NULL)
            goto fail;
        at = 0;
        nrec[at++] = GW_REC_MAGIC;
        at += gw_meta_put_s8(nrec + at, dlx);
        at += gw_meta_put_s8(nrec + at, nrk);
        nrec[at++] = (uint8_t)(psize >> 24);
        nrec[at++] = (uint8_t)(psize >> 16);
        nrec[at++] = (uint8_t)(psize >> 8);
        nrec[at++] = (uint8_t)psize;
        if (gw_props_encode(&d.props, nrec + at, psize, &plen) != GT_OK || plen != psize)
            goto fail;
        at += psize;
        if (d.r.body_len > 0)
            memcpy(nrec + at, d.r.body, d.r.body_len);
        at += d.r.body_len;
    }
    if ((o = gw_op_new(b, sizeof(*o) + routed * sizeof(o->qs[0]), dl_fn)) == NULL)
        goto fail;
    prio = (d.props.flags & GW_P_PRIORITY) ? d.props.priority : 0;
    if (routed > 1 && (dests = calloc(routed, sizeof(*dests))) == NULL) {
        free(o);
        pthread_mutex_lock(&b->mu);
        b->ops--;
        pthread_mutex_unlock(&b->mu);
        goto fail;
    }
    o->done = done;
    o->arg = arg;
    o->blen = d.r.body_len;
    o->nq = routed;
    for (size_t i = 0; i < routed; i++) {
        gw_queue_ref(qs[i]);
        o->qs[i] = qs[i];
        if (dests != NULL)
            dests[i] = (st_dest_t){.topic = qs[i]->id,
                                   .queue_id = gw_prio_level(qs[i], prio)};
    }
    memset(&msg, 0, sizeof(msg));
    msg.body = nrec;
    msg.body_len = (uint32_t)at;
    msg.queue_id = routed > 0 ? gw_prio_level(qs[0], prio) : 0;
    msg.born_ts_ms = now * 1000;
    gw_qstats_inc(q, GW_QS_DEAD_LETTERED, 1);
    if (routed == 0) { /* the delayed DLX's timer */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        msg.delivery_ts_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + delay;
        msg.props[0] = (st_prop_t){"vhost", q->vh->name};
        msg.nprops = 1;
        st_append(b->store, GW_DELAY_TOPIC, &msg, 1, dl_cb, o);
    } else if (dests == NULL) {
        st_append(b->store, qs[0]->id, &msg, 1, dl_cb, o);
    } else {
        st_append_multi(b->store, &msg, dests, routed, dl_cb, o);
    }
    free(dests);
    free(nrec);
    free(payload);
    free(xg.buf);
    free(hg.buf);
    if (qs != qstack)
        free(qs);
    return;
fail:
    GT_LOG(WARN, "amqp", "queue '%.*s': cannot dead-letter a message (out of memory)",
           (int)q->nlen, q->name);
    for (size_t i = 0; admitted && i < routed; i++) /* counted by gw_maxlen_admit */
        gw_maxlen_appended(qs[i], d.r.body_len, false);
    free(nrec);
    free(payload);
    free(xg.buf);
    free(hg.buf);
    if (qs != qstack)
        free(qs);
    done(arg, false);
}

/* ---- dead-letter, then ack --------------------------------------------- */

typedef struct {
    gw_queue_t *q; /* ref */
    char handle[ST_HANDLE_MAX];
    uint64_t blen; /* body bytes (length limits count it if it comes back) */
} dlack_t;

static void dlack_done(void *arg, bool ok)
{
    dlack_t *a = arg;

    if (ok)
        gw_msg_ack(a->q->b, a->q, a->handle);
    else
        gw_msg_requeue(a->q->b, a->q, a->handle, a->blen);
    gw_queue_unref(a->q);
    free(a);
}

void gw_dead_letter_ack(gw_queue_t *q, const uint8_t *rec, size_t len, gw_dl_reason_t reason,
                        const char *handle)
{
    dlack_t *a = calloc(1, sizeof(*a));

    if (a == NULL) {
        gw_msg_requeue(q->b, q, handle, gw_maxlen_body_len(rec, len)); /* comes back */
        return;
    }
    gw_queue_ref(q);
    a->q = q;
    snprintf(a->handle, sizeof(a->handle), "%s", handle);
    a->blen = gw_maxlen_body_len(rec, len);
    gw_dead_letter(q, rec, len, reason, dlack_done, a);
}

/* ---- quorum queues' x-delivery-count ----------------------------------- */

uint8_t *gw_dl_count_props(gw_bytes_t props, uint32_t count, size_t *out_len)
{
    uint8_t *payload = malloc(12 + props.len), *out = NULL;
    gw_content_header_t h;
    gw_fault_t f;
    gbuf_t g = {NULL, 0};
    ent_t *e = NULL;
    size_t n = 0, psize, plen;
    gw_table_iter_t it;
    gw_str_t k;
    gw_value_t v, cnt = {.type = 'l'};
    gw_table_t hdrs = {NULL, 0}, nh;

    if (payload == NULL)
        return NULL;
    memset(payload, 0, 12);
    payload[1] = 60;
    memcpy(payload + 12, props.ptr, props.len);
    if (gw_header_decode(payload, 12 + props.len, &h, &f) != GT_OK)
        goto out;
    if (h.props.flags & GW_P_HEADERS)
        hdrs = h.props.headers;
    if ((e = calloc(1 + gw_table_count(hdrs), sizeof(*e))) == NULL)
        goto out;
    gw_table_iter_init(&it, hdrs);
    while (gw_table_iter_next(&it, &k, &v))
        if (!gw_str_eq(k, "x-delivery-count"))
            e[n++] = (ent_t){k, v};
    cnt.v.i = count;
    e[n++] = (ent_t){gw_str("x-delivery-count"), cnt};
    ent_sort(e, n);
    g.cap = hdrs.len + 32;
    if ((g.buf = malloc(g.cap)) == NULL)
        goto out;
    for (;;) {
        gw_tbuild_t b;
        gt_err_t rc;
        gw_tbuild_init(&b, g.buf, g.cap);
        for (size_t i = 0; i < n; i++)
            gw_tbuild_value_k(&b, e[i].key, &e[i].val);
        rc = gw_tbuild_finish(&b, &nh);
        if (rc == GT_OK)
            break;
        if (rc != GT_ERANGE || !gbuf_grow(&g, g.cap * 2))
            goto out;
    }
    h.props.flags |= GW_P_HEADERS;
    h.props.headers = nh;
    if ((psize = gw_props_size(&h.props)) == 0 || (out = malloc(psize)) == NULL)
        goto out;
    if (gw_props_encode(&h.props, out, psize, &plen) != GT_OK || plen != psize) {
        free(out);
        out = NULL;
        goto out;
    }
    *out_len = psize;
out:
    free(payload);
    free(g.buf);
    free(e);
    return out;
}
