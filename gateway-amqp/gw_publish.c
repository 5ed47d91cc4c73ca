/* The AMQP broker's publishing: basic.publish assembled, routed at
 * publish time and appended, publisher confirms, transactions. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gt_log.h"
#include "gw_bridge.h"
#include "gw_broker_int.h"
#include "gw_delay.h"
#include "gw_dlx.h"
#include "gw_reply.h"
#include "gw_maxlen.h"
#include "gw_prio.h"
#include "gw_ops.h"
#include "gw_trace_int.h"

/* ---- publishing -------------------------------------------------------- */

/* One append: one store record for every queue the message reached
 * (st_append_multi when there are several: the body is stored once). */
typedef struct {
    gw_op_t op;
    gw_chan_t *ch;  /* ref */
    gw_pub_t *pub;  /* in ch->pubs (kept while ch is referenced), or NULL */
    size_t bytes;   /* the record's, counted in b->inflight_bytes */
    int64_t exp;    /* the message's expiration (ms), -1: none */
    uint64_t blen;  /* the body's (length limits) */
    /* message trace (a queue reached is traced): the store's answer */
    bool traced;
    size_t first;   /* the first queue's item in the answer */
    int64_t off0;   /* its offset */
    char msg_id[ST_MSG_ID_MAX];
    char mid[GW_TRACE_MID_MAX]; /* the message-id property */
    size_t nq;
    gw_queue_t *qs[]; /* refs */
} append_op_t;

/* Sends the confirms that are due, in order: runs of acks coalesce into
 * one with multiple set. */
void gw_confirms_flush(gw_chan_t *ch)
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
        gw_chan_reply(ch, &m);
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

    if (op->err != GT_OK && o->nq == 0)
        GT_LOG(WARN, "amqp", "append of a delayed message or to a bridged topic failed: %s",
               gt_err_str(op->err));
    else if (op->err != GT_OK)
        GT_LOG(WARN, "amqp", "append to queue '%.*s' (%s)%s failed: %s", (int)o->qs[0]->nlen,
               o->qs[0]->name, o->qs[0]->id, o->nq > 1 ? " and others" : "",
               gt_err_str(op->err));
    if (o->pub != NULL) {
        o->pub->remaining--;
        if (op->err != GT_OK)
            o->pub->failed = true;
        if (!ch->closed && !ch->dirty) {
            ch->dirty = true;
            gw_chan_ref(ch);
            ch->dirty_next = op->b->dirty;
            op->b->dirty = ch;
        }
    }
    for (size_t i = 0; i < o->nq; i++) {
        if (o->traced && gw_trace_queue(o->qs[i]))
            gw_trace_publish(ch, o->qs[i], o->msg_id, o->mid, i == 0 ? o->off0 : -1, o->blen,
                             (int)op->err);
        if (op->err == GT_OK)
            gw_qstats_inc(o->qs[i], GW_QS_PUBLISHED, 1);
        if (op->err == GT_OK && !o->qs[i]->gone) {
            gw_ttl_appended(o->qs[i], o->exp);
            gw_queue_kick(o->qs[i]);
        }
        gw_maxlen_appended(o->qs[i], o->blen, op->err == GT_OK);
        gw_queue_unref(o->qs[i]);
    }
    op->b->inflight_bytes -= o->bytes;
    gw_flow_check(op->b, 0);
    gw_bconn_appends_done(ch->bc);
    gw_chan_unref(ch);
    free(o);
}

static void append_cb(void *arg, gt_err_t err, const st_append_item_t *items, size_t n)
{
    append_op_t *o = arg;

    if (o->traced && err == GT_OK && o->first < n) {
        snprintf(o->msg_id, sizeof(o->msg_id), "%s", items[o->first].msg_id);
        o->off0 = (int64_t)items[o->first].queue_offset;
    }
    o->op.err = err;
    gw_op_post(&o->op);
}

void gw_bconn_appends_done(gw_bconn_t *bc)
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
                gw_chan_reply(ch, &r);
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
            gw_chan_dispatch(bc->ch[id], &m, NULL);
        free(held);
        if (bc->c != NULL)
            gw_conn_unstall(bc->c);
    }
}

/* Appends the assembled message to the n queues reached (one record),
 * or with n == 0 to timer->topic as a timer due at timer->due_ms; exp is
 * the message's expiration (gw_ttl.c), -1: none.  With br (a bridged
 * exchange), to br's topic too, in RocketMQ's form (gw_bridge.h). */
typedef struct {
    const char *topic, *vhost;
    int64_t due_ms;
    const char *via; /* NULL: the record's exchange */
} timer_dest_t;

static void append_any(gw_chan_t *ch, gw_queue_t **qs, size_t n, gw_pub_t *pub,
                       const timer_dest_t *timer, int64_t exp, const gw_bridge_t *br);

static void append_to(gw_chan_t *ch, gw_queue_t **qs, size_t n, gw_pub_t *pub, int64_t exp,
                      const gw_bridge_t *br)
{
    append_any(ch, qs, n, pub, NULL, exp, br);
}

void gw_publish_timer(gw_chan_t *ch, gw_pub_t *pub, int64_t due_ms, const char *topic,
                      const char *vhost, const char *via)
{
    timer_dest_t t = {topic, vhost, due_ms, via};

    append_any(ch, NULL, 0, pub, &t, -1, NULL);
}

static void append_any(gw_chan_t *ch, gw_queue_t **qs, size_t n, gw_pub_t *pub,
                       const timer_dest_t *timer, int64_t exp, const gw_bridge_t *br)
{
    gw_broker_t *b = ch->bc->b;
    size_t skip = br != NULL ? 1 : 0, nd = n + skip;
    st_message_t msg;
    st_dest_t *dests = NULL;
    append_op_t *o = NULL;
    void *scratch = NULL;

    memset(&msg, 0, sizeof(msg));
    if ((br != NULL && !gw_bridge_publish_msg(ch, br, &msg, &scratch)) ||
        (o = gw_op_new(b, sizeof(*o) + n * sizeof(o->qs[0]), append_fn)) == NULL ||
        (nd > 1 && (dests = calloc(nd, sizeof(*dests))) == NULL)) {
        gw_bridge_scratch_free(scratch);
        if (pub != NULL)
            pub->failed = true;
        for (size_t i = 0; i < n; i++) /* counted by gw_maxlen_admit */
            gw_maxlen_appended(qs[i], ch->plen - ch->body_off, false);
        if (o != NULL) { /* never sent */
            free(o);
            pthread_mutex_lock(&b->mu);
            b->ops--;
            pthread_mutex_unlock(&b->mu);
        }
        return;
    }
    gw_chan_ref(ch);
    o->ch = ch;
    o->pub = pub;
    o->exp = exp;
    o->nq = n;
    o->traced = false;
    o->first = skip;
    o->off0 = -1;
    o->msg_id[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        gw_queue_ref(qs[i]);
        o->qs[i] = qs[i];
        if (!o->traced && gw_trace_queue(qs[i])) {
            o->traced = true;
            gw_trace_props_mid(ch->pbuf + ch->props_off, ch->props_len, o->mid, sizeof(o->mid));
        }
        if (dests != NULL)
            dests[skip + i] = (st_dest_t){.topic = qs[i]->id,
                                          .queue_id = gw_prio_level(qs[i], ch->prio)};
    }
    if (br != NULL && dests != NULL)
        dests[0] = (st_dest_t){.topic = br->topic, .queue_id = ST_QUEUE_ANY};
    if (pub != NULL)
        pub->remaining++;
    if (++ch->bc->appends >= GW_APPENDS_MAX && !ch->bc->append_stall) {
        ch->bc->append_stall = true;
        gw_conn_stall(ch->bc->c);
    }
    o->bytes = ch->plen;
    o->blen = ch->plen - ch->body_off;
    b->inflight_bytes += o->bytes;
    ch->bc->publisher = true;
    gw_flow_check(b, o->bytes);
    gw_flow_block_new(ch->bc); /* a new publisher while blocked */
    if (br == NULL) {
        msg.body = ch->pbuf;
        msg.body_len = (uint32_t)ch->plen;
        msg.queue_id = n > 0 ? gw_prio_level(qs[0], ch->prio) : 0;
        msg.born_ts_ms = (int64_t)time(NULL) * 1000;
    }
    if (timer != NULL) {
        msg.delivery_ts_ms = timer->due_ms;
        msg.props[0] = (st_prop_t){"vhost", timer->vhost};
        msg.nprops = 1;
        if (timer->via != NULL)
            msg.props[msg.nprops++] = (st_prop_t){"via", timer->via};
        st_append(b->store, timer->topic, &msg, 1, append_cb, o);
    } else if (dests == NULL) {
        st_append(b->store, br != NULL ? br->topic : qs[0]->id, &msg, 1, append_cb, o);
    } else {
        st_append_multi(b->store, &msg, dests, nd, append_cb, o);
        free(dests);
    }
    gw_bridge_scratch_free(scratch);
}

/* Routes the assembled message at publish time and appends it to every
 * queue reached; mandatory and unroutable: basic.return 312 first. */
static void publish_route(gw_chan_t *ch);

void gw_publish_done(gw_chan_t *ch)
{
    gw_txmsg_t *t;

    ch->pub_on = false;
    if (!gw_ttl_publish_check(ch))
        return;
    if (ch->fast_reply) { /* reply_to amq.rabbitmq.reply-to: names ch's consumer */
        ch->fast_reply = false;
        if (!gw_reply_rewrite(ch))
            return;
    }
    if (!ch->tx) {
        publish_route(ch);
        if (ch->pcap > GW_PBUF_KEEP) { /* the store copied it: not kept */
            free(ch->pbuf);
            ch->pbuf = NULL;
            ch->pcap = ch->plen = 0;
        }
        return;
    }
    /* In a transaction: kept (the buffer moves) until tx.commit. */
    if ((t = calloc(1, sizeof(*t))) == NULL) {
        CH_ERR(ch, GW_INTERNAL_ERROR, GW_BASIC_PUBLISH, "out of memory");
        return;
    }
    t->mandatory = ch->mandatory;
    t->prio = ch->prio;
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
    /* Held in memory until tx.commit: the memory mark blocks it too. */
    ch->bc->publisher = true;
    gw_flow_block_new(ch->bc);
}

/* RabbitMQ removes a message's (first) BCC header before storing it:
 * rebuilds the record with the property list re-encoded without it.
 * Keeps the record as it is when anything fails. */
static void strip_bcc(gw_chan_t *ch)
{
    size_t body_len = ch->plen - ch->body_off, rl = ch->props_len;
    uint8_t *payload = NULL, *tbuf = NULL, *rec = NULL;
    gw_content_header_t h;
    gw_fault_t f;
    gw_tbuild_t tb;
    gw_table_iter_t it;
    gw_str_t key;
    gw_value_t val;
    gw_table_t nh;
    size_t psize, plen = 0;
    bool dropped = false;

    if ((payload = malloc(12 + rl)) == NULL)
        goto out;
    memset(payload, 0, 12);
    payload[1] = 60;
    for (int k = 0; k < 8; k++)
        payload[4 + k] = (uint8_t)((uint64_t)body_len >> (56 - 8 * k));
    memcpy(payload + 12, ch->pbuf + ch->props_off, rl);
    if (gw_header_decode(payload, 12 + rl, &h, &f) != GT_OK || !(h.props.flags & GW_P_HEADERS))
        goto out;
    if ((tbuf = malloc(h.props.headers.len + 1)) == NULL)
        goto out;
    gw_tbuild_init(&tb, tbuf, h.props.headers.len + 1);
    gw_table_iter_init(&it, h.props.headers);
    while (gw_table_iter_next(&it, &key, &val)) {
        if (!dropped && gw_str_eq(key, "BCC")) {
            dropped = true;
            continue;
        }
        gw_tbuild_value_k(&tb, key, &val);
    }
    if (gw_tbuild_finish(&tb, &nh) != GT_OK)
        goto out;
    h.props.headers = nh;
    if ((psize = gw_props_size(&h.props)) == 0 ||
        (rec = malloc(ch->props_off + psize + body_len)) == NULL)
        goto out;
    memcpy(rec, ch->pbuf, ch->props_off);
    rec[ch->props_off - 4] = (uint8_t)(psize >> 24);
    rec[ch->props_off - 3] = (uint8_t)(psize >> 16);
    rec[ch->props_off - 2] = (uint8_t)(psize >> 8);
    rec[ch->props_off - 1] = (uint8_t)psize;
    if (gw_props_encode(&h.props, rec + ch->props_off, psize, &plen) != GT_OK || plen != psize)
        goto out;
    memcpy(rec + ch->props_off + psize, ch->pbuf + ch->body_off, body_len);
    free(ch->pbuf);
    ch->pbuf = rec;
    rec = NULL;
    ch->props_len = psize;
    ch->body_off = ch->props_off + psize;
    ch->plen = ch->pcap = ch->body_off + body_len;
    ch->hdr_off = ch->hdr_len = 0;
out:
    free(rec);
    free(tbuf);
    free(payload);
}

/* A refused publish dead-lettered: no source message to settle. */
static void dl_none(void *arg, bool ok)
{
    (void)arg;
    (void)ok;
}

/* Routes the assembled message (the publish's key, then its CC and BCC
 * header keys, as RabbitMQ) and appends it once to the queues reached. */
static void publish_route(gw_chan_t *ch)
{
    gw_vhost_t *vh = ch->bc->vh;
    gw_str_t ex = {ch->ex, ch->exlen}, rk = {ch->rk, ch->rklen};
    gw_table_t hdrs = {ch->hdr_len > 0 ? ch->pbuf + ch->hdr_off : NULL, ch->hdr_len};
    gw_str_t kstack[16], *keys = kstack;
    gw_queue_t *qstack[16], **qs = qstack;
    size_t nkeys = 1, nextra = 0, routed = 0, kept = 0, qcap = 16;
    int64_t exp, delay = 0;
    gw_pub_t *pub = NULL;
    bool bcc = false;
    gw_value_t v;
    gw_bridge_t brbuf;
    const gw_bridge_t *br =
        ex.len > 0 && gw_bridge_by_exchange(ch->bc->b, vh->name, ex, &brbuf) ? &brbuf : NULL;

    keys[0] = rk;
    if (hdrs.len > 0) {
        char text[256];
        if (gw_route_header_keys(hdrs, keys + 1, 15, &nextra, text, sizeof(text)) != GT_OK) {
            CH_ERR(ch, GW_PRECONDITION_FAILED, GW_BASIC_PUBLISH, "%s", text);
            return;
        }
        if (nextra > 15) {
            if ((keys = malloc((nextra + 1) * sizeof(*keys))) == NULL) {
                CH_ERR(ch, GW_INTERNAL_ERROR, GW_BASIC_PUBLISH, "out of memory");
                return;
            }
            keys[0] = rk;
            gw_route_header_keys(hdrs, keys + 1, nextra, &nextra, NULL, 0);
        }
        nkeys += nextra;
        bcc = gw_table_get(hdrs, "BCC", &v);
    }
    if (ch->confirm) {
        if ((pub = calloc(1, sizeof(*pub))) == NULL) {
            CH_ERR(ch, GW_INTERNAL_ERROR, GW_BASIC_PUBLISH, "out of memory");
            goto out;
        }
        pub->seq = ++ch->next_seq;
        if (ch->pubs_tail != NULL)
            ch->pubs_tail->next = pub;
        else
            ch->pubs = pub;
        ch->pubs_tail = pub;
    }
    if (ex.len > 0 && hdrs.len > 0 && (delay = gw_delay_of(hdrs)) > 0) {
        /* An x-delayed-message exchange with a due x-delay: stored once
         * as a timer, routed when it fires (gw_delay.c); like the plugin,
         * it routes nowhere now (mandatory: basic.return).  Reached
         * through exchange-to-exchange bindings, the same (below). */
        uint32_t xf = 0;
        if (gw_route_exchange_get(vh->router, ex, NULL, &xf) && (xf & GW_XF_DELAYED)) {
            gw_delay_publish(ch, delay, pub, NULL);
            goto routed;
        }
    }
    if (ex.len == 0) {
        /* The default exchange: each key names a queue. */
        if (nkeys > qcap && (qs = calloc(nkeys, sizeof(*qs))) == NULL) {
            qs = qstack;
            if (pub != NULL)
                pub->failed = true;
            nkeys = 0;
        }
        for (size_t i = 0; i < nkeys; i++) {
            gw_queue_t *q;
            bool seen = false;
            if (keys[i].len > 22 && gw_reply_is_name(keys[i])) {
                gw_reply_deliver(ch, keys[i]); /* direct reply-to: not a queue */
                continue;
            }
            q = gw_queue_find(vh, keys[i]);
            for (size_t k = 0; k < routed && !seen; k++)
                seen = qs[k] == q;
            if (q != NULL && !q->gone && q->ready && !seen)
                qs[routed++] = q;
        }
    } else {
        gw_route_out_t out = {0};
        gt_err_t rc = gw_route_held(vh->router, ex, keys, nkeys, hdrs,
                                    delay > 0 ? GW_XF_DELAYED : 0, &out);
        for (size_t i = 0; rc == GT_OK && i < out.nheld; i++) {
            /* a delayed exchange behind an exchange binding: one timer
             * each, routed through it when due (copied: the router's
             * names move with the next route) */
            char via[GW_ROUTE_NAME_MAX + 1];
            snprintf(via, sizeof(via), "%.*s", (int)out.held[i].len, out.held[i].ptr);
            gw_delay_publish(ch, delay, pub, via);
        }
        if (rc != GT_OK && rc != GT_ENOTFOUND && pub != NULL)
            pub->failed = true;
        if (rc == GT_OK && out.n > qcap && (qs = calloc(out.n, sizeof(*qs))) == NULL) {
            qs = qstack;
            out.n = 0;
            if (pub != NULL)
                pub->failed = true;
        }
        for (size_t i = 0; rc == GT_OK && i < out.n; i++) {
            gw_queue_t *q = gw_queue_find(vh, out.queues[i]);
            if (q != NULL && !q->gone && q->ready)
                qs[routed++] = q;
        }
    }
    if ((routed > 0 || br != NULL) && bcc)
        strip_bcc(ch); /* keys and hdrs pointed into the old record */
    /* TTL 0 and no consumer to take it now: expired on the spot. */
    exp = gw_ttl_rec_expiration(ch->pbuf, ch->plen);
    for (size_t i = 0; i < routed; i++)
        if (gw_ttl_route_keep(qs[i], exp, ch->pbuf, ch->plen))
            qs[kept++] = qs[i];
    /* Length limits: a queue with reject-publish(-dlx) that is full takes
     * no copy, and a confirming publisher gets basic.nack (as RabbitMQ:
     * refused by any one queue); the others take theirs. */
    size_t taken = 0;
    for (size_t i = 0; i < kept; i++) {
        if (gw_maxlen_admit(qs[i], ch->plen - ch->body_off)) {
            qs[taken++] = qs[i];
            continue;
        }
        if (pub != NULL)
            pub->failed = true;
        if (qs[i]->args.overflow == GW_OVERFLOW_REJECT_PUBLISH_DLX)
            gw_dead_letter(qs[i], ch->pbuf, ch->plen, GW_DL_MAXLEN, dl_none, NULL);
    }
    kept = taken;
    if (br != NULL) {
        /* A bridged exchange: the topic and the queues, one record. */
        size_t first = kept < ST_DEST_MAX - 1 ? kept : ST_DEST_MAX - 1;
        append_to(ch, qs, first, pub, exp, br);
        for (size_t at = first; at < kept; at += ST_DEST_MAX)
            append_to(ch, qs + at, kept - at < ST_DEST_MAX ? kept - at : ST_DEST_MAX, pub, exp,
                      NULL);
    } else {
        /* Up to ST_DEST_MAX queues per record. */
        for (size_t at = 0; at < kept; at += ST_DEST_MAX)
            append_to(ch, qs + at, kept - at < ST_DEST_MAX ? kept - at : ST_DEST_MAX, pub, exp,
                      NULL);
    }
routed:
    if (routed == 0 && br == NULL && ch->mandatory) {
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
        gw_confirms_flush(ch);
out:
    if (qs != qstack)
        free(qs);
    if (keys != kstack)
        free(keys);
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

void gw_publish_method(gw_chan_t *ch, const gw_method_t *m)
{
    const gw_basic_publish_t *p = &m->u.basic_publish;

    if (p->immediate) {
        gw_conn_error(ch->bc->c, GW_NOT_IMPLEMENTED, m->id, "immediate=true");
        return;
    }
    if (!gw_chan_allowed(ch, m->id, GW_PERM_WRITE, GW_RES_EXCHANGE, p->exchange))
        return;
    if (p->exchange.len > 0) {
        uint32_t flags = 0;
        if (!gw_route_exchange_get(ch->bc->vh->router, p->exchange, NULL, &flags)) {
            CH_ERR(ch, GW_NOT_FOUND, m->id, "no exchange '%.*s' in vhost '%s'",
                   (int)p->exchange.len, p->exchange.ptr, GW_VHOST(ch));
            return;
        }
        if (flags & GW_XF_INTERNAL) {
            CH_ERR(ch, GW_ACCESS_REFUSED, m->id,
                   "cannot publish to internal exchange '%.*s' in vhost '%s'",
                   (int)p->exchange.len, p->exchange.ptr, GW_VHOST(ch));
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

void gw_publish_header(gw_chan_t *ch, const gw_content_header_t *h)
{
    size_t pre = 1 + 1 + ch->exlen + 1 + ch->rklen + 4;
    size_t first = h->body_size < 65536 ? (size_t)h->body_size : 65536;
    uint64_t max = gw_ops_max_message(ch); /* the vhost's limit */
    uint8_t *w;

    ch->plen = 0;
    ch->prio = (h->props.flags & GW_P_PRIORITY) ? h->props.priority : 0;
    if (h->body_size > max) {
        ch->pub_on = false;
        CH_ERR(ch, GW_PRECONDITION_FAILED, GW_BASIC_PUBLISH,
               "message size %llu is larger than configured max size %llu",
               (unsigned long long)h->body_size, (unsigned long long)max);
        return;
    }
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
    ch->fast_reply =
        (h->props.flags & GW_P_REPLY_TO) && gw_str_eq(h->props.reply_to, GW_REPLY_QUEUE);
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

void gw_publish_body(gw_chan_t *ch, gw_bytes_t body)
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

void gw_on_tx_select(gw_chan_t *ch, const gw_method_t *m)
{
    gw_method_t r = {.id = GW_TX_SELECT_OK};

    if (ch->confirm) {
        CH_ERR(ch, GW_PRECONDITION_FAILED, m->id, "cannot switch from confirm to tx mode");
        return;
    }
    ch->tx = true;
    gw_chan_reply(ch, &r);
}

/* Publishes are routed and appended, acks applied; commit-ok once the
 * connection's appends have answered (gw_bconn_appends_done). */
void gw_on_tx_commit(gw_chan_t *ch, const gw_method_t *m)
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
        ch->prio = t->prio;
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
        free(ch->pbuf); /* t's record, or what publish_route made of it */
        ch->pbuf = NULL;
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
                gw_settle_one(ch, u, (gw_settle_t)t->how);
            else if (t->multiple || u->tag > t->tag)
                break;
        }
        free(t);
    }
    if (bc->ch[ch->id] != ch)
        return;
    gw_chan_pump(ch);
    if (bc->appends == 0) {
        gw_method_t r = {.id = GW_TX_COMMIT_OK};
        gw_chan_reply(ch, &r);
        return;
    }
    ch->commit_wait = true;
    bc->commit_waits++;
    gw_conn_stall(bc->c);
}

void gw_on_tx_rollback(gw_chan_t *ch, const gw_method_t *m)
{
    gw_method_t r = {.id = GW_TX_ROLLBACK_OK};

    if (!tx_check(ch, m->id))
        return;
    tx_discard(ch);
    gw_chan_reply(ch, &r);
}

void gw_on_confirm_select(gw_chan_t *ch, const gw_method_t *m)
{
    gw_method_t r = {.id = GW_CONFIRM_SELECT_OK};

    if (ch->tx) {
        CH_ERR(ch, GW_PRECONDITION_FAILED, m->id, "cannot switch from tx to confirm mode");
        return;
    }
    ch->confirm = true;
    if (!m->u.confirm_select.nowait)
        gw_chan_reply(ch, &r);
}

