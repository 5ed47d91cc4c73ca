/* gw_trace: the AMQP gateway's message trace events (see gw_trace.h). */
#include "gw_trace_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_codec.h"
#include "gw_dlx.h"
#include "gw_int.h"

bool gw_trace_queue(gw_queue_t *q)
{
    const gw_trace_hooks_t *h = &q->b->trace;

    if (q->traced == 0)
        q->traced = h->wants != NULL && h->wants(h->arg, q->vh->name, q->name) ? 1 : 2;
    return q->traced == 1;
}

/* Skips a short string at *at of p[0..n). */
static bool skip_s8(const uint8_t *p, size_t n, size_t *at)
{
    if (*at >= n || p[*at] > n - *at - 1)
        return false;
    *at += 1 + p[*at];
    return true;
}

void gw_trace_props_mid(const uint8_t *p, size_t n, char *out, size_t cap)
{
    size_t at = 2, k = 0, len;
    uint16_t f;

    out[0] = '\0';
    if (p == NULL || n < 2)
        return;
    f = (uint16_t)(p[0] << 8 | p[1]);
    if (!(f & GW_P_MESSAGE_ID))
        return;
    if ((f & GW_P_CONTENT_TYPE) && !skip_s8(p, n, &at))
        return;
    if ((f & GW_P_CONTENT_ENCODING) && !skip_s8(p, n, &at))
        return;
    if (f & GW_P_HEADERS) {
        uint32_t tl;
        if (n - at < 4)
            return;
        tl = (uint32_t)p[at] << 24 | (uint32_t)p[at + 1] << 16 | (uint32_t)p[at + 2] << 8 |
             p[at + 3];
        if (tl > n - at - 4)
            return;
        at += 4 + tl;
    }
    if (f & GW_P_DELIVERY_MODE)
        at++;
    if (f & GW_P_PRIORITY)
        at++;
    if ((f & GW_P_CORRELATION_ID) && !skip_s8(p, n, &at))
        return;
    if ((f & GW_P_REPLY_TO) && !skip_s8(p, n, &at))
        return;
    if ((f & GW_P_EXPIRATION) && !skip_s8(p, n, &at))
        return;
    if (at >= n || p[at] > n - at - 1)
        return;
    len = p[at];
    for (; k < len && k + 1 < cap; k++) {
        uint8_t c = p[at + 1 + k];
        out[k] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    out[k] = '\0';
}

void gw_trace_rec_mid(const uint8_t *rec, size_t len, char *out, size_t cap)
{
    gw_rec_t r;

    out[0] = '\0';
    if (rec != NULL && gw_rec_decode(rec, len, &r))
        gw_trace_props_mid(r.props.ptr, r.props.len, out, cap);
}

/* Fills the fields every event of q on ch has and notes e. */
static void note(gw_chan_t *ch, gw_queue_t *q, gw_trace_ev_t *e)
{
    const gw_trace_hooks_t *h = &q->b->trace;
    gw_conn_t *c = ch != NULL && ch->bc != NULL ? ch->bc->c : NULL;
    char conn[32] = "";

    if (c != NULL && gw_conn_id(c) > 0)
        snprintf(conn, sizeof(conn), "amqp:%" PRIu64, gw_conn_id(c));
    e->vhost = q->vh->name;
    e->queue = q->name;
    e->conn = conn;
    e->peer = c != NULL ? gw_conn_peer(c) : "";
    if (e->amqp_message_id == NULL)
        e->amqp_message_id = "";
    h->note(h->arg, e);
}

void gw_trace_publish(gw_chan_t *ch, gw_queue_t *q, const char *msg_id, const char *mid,
                      int64_t offset, uint64_t blen, int err)
{
    gw_trace_ev_t e = {.kind = "publish", .msg_id = msg_id, .amqp_message_id = mid,
                       .offset = err == 0 ? offset : -1, .body_size = (int64_t)blen};

    if (err != 0)
        e.result = gt_err_str((gt_err_t)err);
    note(ch, q, &e);
}

void gw_trace_deliver(gw_chan_t *ch, gw_queue_t *q, const gw_popped_t *p, uint64_t blen,
                      bool get)
{
    char mid[GW_TRACE_MID_MAX];
    gw_trace_ev_t e = {.kind = "deliver", .msg_id = p->msg_id, .amqp_message_id = mid,
                       .attempt = p->attempt, .offset = (int64_t)p->queue_offset,
                       .body_size = (int64_t)blen, .result = get ? "OK: basic.get" : NULL};

    gw_trace_rec_mid(p->body, p->len, mid, sizeof(mid));
    note(ch, q, &e);
}

char *gw_trace_ids(gw_queue_t *q, const gw_popped_t *p)
{
    char mid[GW_TRACE_MID_MAX];
    size_t il = strlen(p->msg_id), ml;
    char *s;

    if (!gw_trace_queue(q))
        return NULL;
    gw_trace_rec_mid(p->body, p->len, mid, sizeof(mid));
    ml = strlen(mid);
    if ((s = malloc(il + ml + 2)) == NULL)
        return NULL;
    memcpy(s, p->msg_id, il + 1);
    memcpy(s + il + 1, mid, ml + 1);
    return s;
}

void gw_trace_settle(gw_chan_t *ch, const gw_unacked_t *u, int how, const char *verb)
{
    const char *id = u->trace_ids;
    gw_trace_ev_t e = {.msg_id = id, .attempt = u->attempt, .offset = -1, .body_size = -1};
    bool dlx = false;

    if (id == NULL)
        return;
    e.amqp_message_id = id + strlen(id) + 1;
    if (how == GW_SETTLE_ACK) {
        e.kind = "ack";
    } else {
        e.kind = verb != NULL ? verb : "nack";
        if (how == GW_SETTLE_REQUEUE && gw_dl_over_limit(u->q, u->attempt)) {
            e.result = "OK: past x-delivery-limit, dropped";
            dlx = u->q->args.has_dlx;
        } else if (how == GW_SETTLE_REQUEUE) {
            e.result = verb != NULL ? "OK: requeued" : "OK: requeued (recover or channel closed)";
        } else {
            dlx = u->q->args.has_dlx;
            e.result = dlx ? "OK: dead-lettered" : "OK: dropped";
        }
    }
    note(ch, u->q, &e);
    if (dlx) {
        char why[300];

        snprintf(why, sizeof(why), "OK: to dead-letter exchange '%s'", u->q->args.dlx);
        e.kind = "dlq";
        e.result = why;
        note(ch, u->q, &e);
    }
}

void gw_trace_dead(gw_queue_t *q, const char *msg_id, const uint8_t *rec, size_t len,
                   uint32_t attempt, int reason)
{
    char mid[GW_TRACE_MID_MAX], why[300];
    const char *r = gw_dl_reason_name((gw_dl_reason_t)reason);
    gw_trace_ev_t e = {.kind = "dlq", .msg_id = msg_id, .amqp_message_id = mid,
                       .attempt = attempt, .offset = -1, .body_size = -1, .result = why};

    if (msg_id == NULL || !gw_trace_queue(q))
        return;
    gw_trace_rec_mid(rec, len, mid, sizeof(mid));
    if (q->args.has_dlx)
        snprintf(why, sizeof(why), "OK: %s, to dead-letter exchange '%s'", r, q->args.dlx);
    else
        snprintf(why, sizeof(why), "OK: %s, dropped (no dead-letter exchange)", r);
    note(NULL, q, &e);
}
