/* Direct reply-to: the amq.rabbitmq.reply-to pseudo-queue (gw_reply.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt_log.h"
#include "gw_delay.h"
#include "gw_reply.h"

#define REPLY_BUCKETS 1024u
#define REPLY_PREFIX GW_REPLY_QUEUE "."
#define REPLY_PREFIX_LEN (sizeof(REPLY_PREFIX) - 1)
#define REPLY_NAME_MAX 96
#define REPLY_OUT_FACTOR 4 /* output over 4x the connection's bound: replies dropped */

/* A channel's reply consumer, in the broker's table by serial. */
typedef struct gw_reply {
    struct gw_reply *next;
    gw_chan_t *ch; /* not a reference: the channel removes it as it closes */
    uint64_t serial;
    uint8_t tlen, nlen;
    char tag[256];
    char name[REPLY_NAME_MAX]; /* amq.rabbitmq.reply-to.<serial>.<key> */
} gw_reply_t;

typedef struct gw_reply_tab {
    uint64_t next_serial;
    gw_reply_t *b[REPLY_BUCKETS];
} gw_reply_tab_t;

bool gw_reply_is_name(gw_str_t name)
{
    return name.len > REPLY_PREFIX_LEN && memcmp(name.ptr, REPLY_PREFIX, REPLY_PREFIX_LEN) == 0;
}

/* The live reply consumer a reply name designates in vhost vh, or NULL. */
static gw_reply_t *reply_find(gw_broker_t *b, const gw_vhost_t *vh, gw_str_t name)
{
    gw_reply_tab_t *t = b->replies;
    uint64_t serial = 0;
    size_t i = REPLY_PREFIX_LEN, digits = 0;

    if (t == NULL || !gw_reply_is_name(name) || name.len >= REPLY_NAME_MAX)
        return NULL;
    for (; i < name.len && name.ptr[i] != '.' && digits < 16; i++, digits++) {
        char c = name.ptr[i];
        int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0)
            return NULL;
        serial = serial << 4 | (uint64_t)v;
    }
    if (digits != 16)
        return NULL;
    for (gw_reply_t *r = t->b[serial % REPLY_BUCKETS]; r != NULL; r = r->next)
        if (r->serial == serial && r->nlen == name.len &&
            memcmp(r->name, name.ptr, name.len) == 0)
            return r->ch->bc->vh == vh ? r : NULL;
    return NULL;
}

bool gw_reply_has_tag(const gw_chan_t *ch, gw_str_t tag)
{
    const gw_reply_t *r = ch->reply;

    return r != NULL && r->tlen == tag.len && memcmp(r->tag, tag.ptr, tag.len) == 0;
}

void gw_reply_consume(gw_chan_t *ch, const gw_method_t *m)
{
    const gw_basic_consume_t *bcm = &m->u.basic_consume;
    gw_broker_t *b = ch->bc->b;
    gw_str_t tag = bcm->consumer_tag;
    char gen[64], key[16];
    gw_reply_t *r;

    for (gw_consumer_t *cs = ch->consumers; cs != NULL; cs = cs->cnext) {
        if (tag.len > 0 && cs->tlen == tag.len && memcmp(cs->tag, tag.ptr, tag.len) == 0) {
            gw_conn_error(ch->bc->c, GW_NOT_ALLOWED, m->id,
                          "attempt to reuse consumer tag '%.*s'", (int)tag.len, tag.ptr);
            return;
        }
    }
    if (ch->reply != NULL) {
        CH_ERR(ch, GW_PRECONDITION_FAILED, m->id, "reply consumer already set");
        return;
    }
    if (!bcm->no_ack) {
        CH_ERR(ch, GW_PRECONDITION_FAILED, m->id, "reply consumer cannot acknowledge");
        return;
    }
    if (b->replies == NULL && (b->replies = calloc(1, sizeof(*b->replies))) == NULL) {
        CH_ERR(ch, GW_INTERNAL_ERROR, m->id, "out of memory");
        return;
    }
    if ((r = calloc(1, sizeof(*r))) == NULL) {
        CH_ERR(ch, GW_INTERNAL_ERROR, m->id, "out of memory");
        return;
    }
    if (tag.len == 0) {
        size_t n = gw_gen_name("amq.ctag-", gen, sizeof(gen));
        tag = (gw_str_t){gen, n};
    }
    r->ch = ch;
    r->serial = ++b->replies->next_serial;
    r->tlen = (uint8_t)tag.len;
    memcpy(r->tag, tag.ptr, tag.len);
    gw_random_bytes(key, sizeof(key));
    r->nlen = (uint8_t)snprintf(r->name, sizeof(r->name), REPLY_PREFIX "%016llx.",
                                (unsigned long long)r->serial);
    for (size_t i = 0; i < sizeof(key); i++)
        r->nlen += (uint8_t)snprintf(r->name + r->nlen, sizeof(r->name) - r->nlen, "%02x",
                                     (unsigned)(uint8_t)key[i]);
    r->next = b->replies->b[r->serial % REPLY_BUCKETS];
    b->replies->b[r->serial % REPLY_BUCKETS] = r;
    ch->reply = r;
    if (!bcm->nowait) {
        gw_method_t ok = {.id = GW_BASIC_CONSUME_OK};
        ok.u.consumer_tag.consumer_tag = tag;
        gw_chan_reply(ch, &ok);
    }
}

void gw_reply_chan_closed(gw_chan_t *ch)
{
    gw_reply_t *r = ch->reply, **pp;
    gw_reply_tab_t *t = ch->bc->b->replies;

    if (r == NULL)
        return;
    ch->reply = NULL;
    for (pp = &t->b[r->serial % REPLY_BUCKETS]; *pp != NULL && *pp != r; pp = &(*pp)->next)
        ;
    if (*pp == r)
        *pp = r->next;
    free(r);
}

bool gw_reply_cancel(gw_chan_t *ch, const gw_method_t *m)
{
    gw_str_t tag = m->u.basic_cancel.consumer_tag;
    gw_method_t ok = {.id = GW_BASIC_CANCEL_OK};

    if (!gw_reply_has_tag(ch, tag))
        return false;
    gw_reply_chan_closed(ch);
    ok.u.consumer_tag.consumer_tag = tag;
    if (!m->u.basic_cancel.nowait)
        gw_chan_reply(ch, &ok);
    return true;
}

bool gw_reply_declare(gw_chan_t *ch, const gw_method_t *m)
{
    const gw_queue_declare_t *d = &m->u.queue_declare;
    gw_method_t ok = {.id = GW_QUEUE_DECLARE_OK};

    /* RabbitMQ answers any declare of the pseudo-queue, and a passive one
     * of a live reply name, with 0 messages and 1 consumer. */
    if (!gw_str_eq(d->queue, GW_REPLY_QUEUE) && !(d->passive && gw_reply_is_name(d->queue)))
        return false;
    if (!gw_str_eq(d->queue, GW_REPLY_QUEUE) &&
        reply_find(ch->bc->b, ch->bc->vh, d->queue) == NULL) {
        CH_ERR(ch, GW_NOT_FOUND, m->id, "no queue '%.*s' in vhost '%s'", (int)d->queue.len,
               d->queue.ptr, GW_VHOST(ch));
        return true;
    }
    ok.u.queue_declare_ok.queue = d->queue;
    ok.u.queue_declare_ok.message_count = 0;
    ok.u.queue_declare_ok.consumer_count = 1;
    if (!d->nowait)
        gw_chan_reply(ch, &ok);
    return true;
}

bool gw_reply_rewrite(gw_chan_t *ch)
{
    gw_reply_t *r = ch->reply;
    uint8_t *rec = NULL;
    size_t len = 0, hoff = 0, hlen = 0;

    if (r == NULL) {
        CH_ERR(ch, GW_PRECONDITION_FAILED, GW_BASIC_PUBLISH, "fast reply consumer does not exist");
        return false;
    }
    if (!gw_rec_set_reply_to(ch->pbuf, ch->plen, (gw_str_t){r->name, r->nlen}, &rec, &len, &hoff,
                             &hlen)) {
        CH_ERR(ch, GW_INTERNAL_ERROR, GW_BASIC_PUBLISH, "cannot set reply_to");
        return false;
    }
    {
        /* the property list's length sits just before it */
        size_t props_off = 1 + 1 + ch->exlen + 1 + ch->rklen + 4;
        uint32_t pl = (uint32_t)rec[props_off - 4] << 24 | (uint32_t)rec[props_off - 3] << 16 |
                      (uint32_t)rec[props_off - 2] << 8 | rec[props_off - 1];
        free(ch->pbuf);
        ch->pbuf = rec;
        ch->plen = ch->pcap = len;
        ch->props_off = props_off;
        ch->props_len = pl;
        ch->body_off = props_off + pl;
        ch->hdr_off = hoff;
        ch->hdr_len = hlen;
    }
    return true;
}

void gw_reply_deliver(gw_chan_t *ch, gw_str_t key)
{
    gw_reply_t *r = reply_find(ch->bc->b, ch->bc->vh, key);
    gw_chan_t *to;
    gw_method_t m = {.id = GW_BASIC_DELIVER};
    gw_basic_deliver_t *d = &m.u.basic_deliver;

    if (r == NULL || !gw_chan_live(to = r->ch))
        return; /* its channel is gone: dropped, as RabbitMQ */
    if (gw_conn_out_len(to->bc->c) > REPLY_OUT_FACTOR * gw_conn_out_limit(to->bc->c)) {
        /* the requester does not read: replies are not stored, so rather
         * than buffering without end, this one is dropped */
        GT_LOG(DEBUG, "amqp", "a reply to %.*s dropped: its connection is not reading",
               (int)r->nlen, r->name);
        return;
    }
    /* As RabbitMQ 3.10: the channel's next delivery tag, not taken (no
     * ack will name it), and the publish's own routing key (key may be a
     * CC / BCC one). */
    (void)key;
    d->consumer_tag = (gw_str_t){r->tag, r->tlen};
    d->delivery_tag = to->next_tag + 1;
    d->redelivered = false;
    d->exchange = (gw_str_t){ch->ex, ch->exlen};
    d->routing_key = (gw_str_t){ch->rk, ch->rklen};
    gw_conn_send_content(to->bc->c, to->id, &m,
                         (gw_bytes_t){ch->pbuf + ch->props_off, ch->props_len},
                         ch->pbuf + ch->body_off, ch->plen - ch->body_off);
}

void gw_reply_free(gw_broker_t *b)
{
    gw_reply_tab_t *t = b->replies;

    if (t == NULL)
        return;
    for (uint32_t i = 0; i < REPLY_BUCKETS; i++) {
        while (t->b[i] != NULL) {
            gw_reply_t *r = t->b[i];
            t->b[i] = r->next;
            if (r->ch != NULL)
                r->ch->reply = NULL;
            free(r);
        }
    }
    free(t);
    b->replies = NULL;
}
