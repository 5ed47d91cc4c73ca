/* st_remote's appends: Append and AppendMulti requests, and the batcher
 * that merges appends made while another is in flight into one AppendMany
 * call (docs/store-protocol.md).
 *
 * The batcher counts the append calls in flight (ab_inflight).  Below
 * ab_max_inflight an append is sent at once as an Append of its own, so a
 * lone producer waits for nothing more than before (there is no timer).
 * Otherwise it waits in the queue; when a counted call ends, before its
 * answer is handed out, everything waiting goes as one AppendMany (or one
 * Append if it is alone); a queue that reaches ab_max_count appends or
 * ab_max_bytes goes at once.  Each append keeps its own packed request,
 * idempotency key, deadline and retries: the node handles the appends of
 * an AppendMany one by one as separate Appends and answers each with its
 * own status, so one failing append fails nothing else.  A call that fails
 * as a whole is a failure of each of its appends (each retried or
 * finished on its own; a retry goes through the batcher again).  A node
 * that answers AppendMany UNIMPLEMENTED (an older gantry-store) gets each
 * of them, and every later append, as an Append of its own, until the
 * client is switched to another node. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt_log.h"
#include "st_remote_int.h"

static void items_conv(rop_t *op, gt_err_t err, Gantry__Store__V1__AppendItem **items,
                       size_t n_items)
{
    st_append_item_t *v = NULL;
    if (err == GT_OK && n_items) {
        if ((v = calloc(n_items, sizeof(*v))) == NULL)
            err = GT_ENOMEM;
        for (size_t i = 0; v && i < n_items; i++) {
            snprintf(v[i].msg_id, sizeof(v[i].msg_id), "%s", items[i]->msg_id);
            v[i].queue_id = items[i]->queue_id;
            v[i].queue_offset = items[i]->queue_offset;
            v[i].position = items[i]->position;
            v[i].store_ts_ms = items[i]->store_ts_ms;
        }
    }
    ((st_append_cb)op->cb)(op->arg, err, v, err == GT_OK ? n_items : 0);
    free(v);
}

static void conv_append(rop_t *op, gt_err_t err, const ProtobufCMessage *resp)
{
    const Gantry__Store__V1__AppendResponse *r = (const void *)resp;
    items_conv(op, err, r ? r->items : NULL, r ? r->n_items : 0);
}

static void conv_append_multi(rop_t *op, gt_err_t err, const ProtobufCMessage *resp)
{
    const Gantry__Store__V1__AppendMultiResponse *r = (const void *)resp;
    items_conv(op, err, r ? r->items : NULL, r ? r->n_items : 0);
}


/* Protocol messages for st messages being appended: storage for n. */
typedef struct pmsgs {
    Gantry__Store__V1__Message *m;
    Gantry__Store__V1__Message **mp;
    Gantry__Store__V1__Property *props; /* n * ST_MAX_PROPS */
    Gantry__Store__V1__Property **pp;
    char (*ids)[ST_MSG_ID_MAX];
} pmsgs_t;

static void pmsgs_free(pmsgs_t *p)
{
    free(p->m);
    free(p->mp);
    free(p->props);
    free(p->pp);
    free(p->ids);
}

/* Fills in the protocol messages; a message without an id gets one of
 * ours, so that a retry carries the same ids (and key). */
static gt_err_t pmsgs_fill(st_remote_t *st, pmsgs_t *p, const st_message_t *msgs, size_t n)
{
    size_t np = 0;
    memset(p, 0, sizeof(*p));
    for (size_t i = 0; i < n; i++) {
        if (msgs[i].nprops > ST_MAX_PROPS || msgs[i].nkeys > ST_MAX_KEYS)
            return GT_EINVAL;
        np += msgs[i].nprops;
    }
    p->m = calloc(n, sizeof(*p->m));
    p->mp = calloc(n, sizeof(*p->mp));
    p->props = calloc(np ? np : 1, sizeof(*p->props));
    p->pp = calloc(np ? np : 1, sizeof(*p->pp));
    p->ids = calloc(n, sizeof(*p->ids));
    if (!p->m || !p->mp || !p->props || !p->pp || !p->ids) {
        pmsgs_free(p);
        return GT_ENOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const st_message_t *s = &msgs[i];
        Gantry__Store__V1__Message *m = &p->m[i];
        gantry__store__v1__message__init(m);
        p->mp[i] = m;
        m->tag = STR(s->tag);
        m->n_keys = s->nkeys;
        m->keys = (char **)s->keys;
        if (s->msg_id && *s->msg_id) {
            m->msg_id = (char *)s->msg_id;
        } else {
            uint64_t seq = atomic_fetch_add(&st->id_seq, 1);
            snprintf(p->ids[i], sizeof(p->ids[i]), "%s%016" PRIX64, st->id_prefix, seq);
            m->msg_id = p->ids[i];
        }
        m->n_props = s->nprops;
        m->props = &p->pp[k];
        for (uint32_t j = 0; j < s->nprops; j++, k++) {
            gantry__store__v1__property__init(&p->props[k]);
            p->props[k].key = STR(s->props[j].key);
            p->props[k].value = STR(s->props[j].value);
            p->pp[k] = &p->props[k];
        }
        m->born_ts_ms = s->born_ts_ms;
        m->born_host = STR(s->born_host);
        m->msg_group = STR(s->msg_group);
        m->delivery_ts_ms = s->delivery_ts_ms;
        m->body.data = (uint8_t *)s->body;
        m->body.len = s->body ? s->body_len : 0;
        m->queue_id = s->queue_id;
        m->tx_half = s->tx_half;
    }
    return GT_OK;
}

/* The de-dup key of an append (its retries reuse the packed request, so
 * the same key).  A client's send is keyed by its first message id, so
 * that the producer's own retry of the send (through this proxy or
 * another) is not stored twice; anything else -- a DLQ forward, a redrive
 * back to the topic, a gateway publish -- may legitimately append the same
 * message id again within the window, so it gets a key of its own. */
static char *idem_key(st_remote_t *st, const st_message_t *first, char *msg_id, char *buf,
                      size_t len)
{
    if (first->dedup_by_id && msg_id != NULL && *msg_id != '\0')
        return msg_id;
    snprintf(buf, len, "%s-a%016" PRIX64, st->client_id,
             (uint64_t)atomic_fetch_add(&st->id_seq, 1));
    return buf;
}

void st_rm_append(st_store_t *s, const char *topic, const st_message_t *msgs, size_t n,
                  st_append_cb cb, void *arg)
{
    pmsgs_t p;
    if (n == 0 || n > 1024) {
        cb(arg, GT_EINVAL, NULL, 0);
        return;
    }
    gt_err_t rc = pmsgs_fill(ST(s), &p, msgs, n);
    if (rc != GT_OK) {
        cb(arg, rc, NULL, 0);
        return;
    }
    Gantry__Store__V1__AppendRequest rq = GANTRY__STORE__V1__APPEND_REQUEST__INIT;
    rq.topic = STR(topic);
    rq.n_messages = n;
    rq.messages = p.mp;
    char key[64];
    rq.idempotency_key = idem_key(ST(s), &msgs[0], p.m[0].msg_id, key, sizeof(key));
    st_rm_start(ST(s), SVC "Append", &rq.base, DESC(append_response), conv_append, CB(cb),
                arg, 0, true, true);
    pmsgs_free(&p);
}

void st_rm_append_multi(st_store_t *s, const st_message_t *msg, const st_dest_t *dests,
                        size_t n, st_append_cb cb, void *arg)
{
    pmsgs_t p;
    if (n == 0 || n > ST_DEST_MAX) {
        cb(arg, GT_EINVAL, NULL, 0);
        return;
    }
    gt_err_t rc = pmsgs_fill(ST(s), &p, msg, 1);
    Gantry__Store__V1__Destination *d = calloc(n, sizeof(*d));
    Gantry__Store__V1__Destination **dp = calloc(n, sizeof(*dp));
    if (rc != GT_OK || !d || !dp) {
        if (rc == GT_OK)
            pmsgs_free(&p);
        free(d);
        free(dp);
        cb(arg, rc != GT_OK ? rc : GT_ENOMEM, NULL, 0);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        gantry__store__v1__destination__init(&d[i]);
        d[i].topic = STR(dests[i].topic);
        d[i].queue_id = dests[i].queue_id;
        dp[i] = &d[i];
    }
    Gantry__Store__V1__AppendMultiRequest rq = GANTRY__STORE__V1__APPEND_MULTI_REQUEST__INIT;
    rq.message = p.mp[0];
    rq.n_dests = n;
    rq.dests = dp;
    char key[64];
    rq.idempotency_key = idem_key(ST(s), msg, p.m[0].msg_id, key, sizeof(key));
    st_rm_start(ST(s), SVC "AppendMulti", &rq.base, DESC(append_multi_response),
                conv_append_multi, CB(cb), arg, 0, true, false);
    pmsgs_free(&p);
    free(d);
    free(dp);
}

/* ---- the batcher ---------------------------------------------------------- */

#define AB_DEFAULT_INFLIGHT 2 /* the best of 1, 2, 4 in two (noisy) bench runs */
#define AB_DEFAULT_COUNT 64
#define AB_DEFAULT_BYTES (1u << 20)
#define AB_MANY_MAX 256 /* the node's limit */

void st_rm_batch_init(st_remote_t *st, const st_remote_config_t *cfg)
{
    pthread_mutex_init(&st->ab_mu, NULL);
    st->ab_max_inflight = cfg->append_inflight < 0    ? 0
                          : cfg->append_inflight == 0 ? AB_DEFAULT_INFLIGHT
                                                      : cfg->append_inflight;
    st->ab_max_count = cfg->append_batch_max == 0 ? AB_DEFAULT_COUNT : cfg->append_batch_max;
    if (st->ab_max_count > AB_MANY_MAX)
        st->ab_max_count = AB_MANY_MAX;
    st->ab_max_bytes = cfg->append_batch_bytes == 0 ? AB_DEFAULT_BYTES : cfg->append_batch_bytes;
}

void st_rm_batch_fini(st_remote_t *st)
{
    pthread_mutex_destroy(&st->ab_mu);
}

/* One AppendMany call. */
typedef struct rbatch {
    st_remote_t *st;
    rlink_t *link;
    rop_t *ops;           /* in order, through next */
    size_t n;
} rbatch_t;

/* Walks a list of ops; the body may free `op`. */
#define AB_EACH(op, list, nx) for (rop_t *op = (list), *nx; op && (nx = op->next, 1); op = nx)

static void batch_answer(void *arg, grpc_status_code code, const char *details,
                         const uint8_t *resp, size_t len)
{
    rbatch_t *b = arg;
    st_remote_t *st = b->st;
    st_rm_batch_release(st); /* the next ones go before these are answered */
    if (code == GRPC_STATUS_UNIMPLEMENTED) {
        if (!atomic_exchange(&st->ab_many_off, true))
            GT_LOG(INFO, "store", "store node %s has no AppendMany (an older gantry-store): "
                   "one Append call per append", b->link->addr);
        AB_EACH(op, b->ops, nx)
            st_rm_send_now(op); /* not a retry: nothing was appended */
        free(b);
        return;
    }
    if (code != GRPC_STATUS_OK) {
        bool hook = true; /* the not-leader hook once for the call */
        AB_EACH(op, b->ops, nx) {
            st_rm_fail(op, code, details, hook);
            hook = false;
        }
        free(b);
        return;
    }
    Gantry__Store__V1__AppendManyResponse *r =
        (void *)px_request_unpack(DESC(append_many_response), resp, len);
    gt_err_t err = r ? st_rm_err_of(&r->base) : GT_EIO;
    if (!r)
        GT_LOG(WARN, "store", "remote AppendMany: undecodable answer");
    else if (err == GT_OK && r->n_results != b->n)
        err = GT_EIO;
    size_t i = 0;
    AB_EACH(op, b->ops, nx) {
        if (err != GT_OK)
            st_rm_finish(op, err, NULL);
        else
            st_rm_finish(op, st_rm_err_of(&r->results[i]->base), &r->results[i]->base);
        i++;
    }
    if (r)
        px_request_free(&r->base);
    free(b);
}

static size_t varint_put(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* Fails every op of a batch that could not be sent, and frees its slot. */
static void batch_fail(st_remote_t *st, rop_t *ops, gt_err_t err)
{
    st_rm_batch_release(st);
    AB_EACH(op, ops, nx)
        st_rm_finish(op, err, NULL);
}

/* Sends n (>= 1) ops that hold one slot of ab_inflight. */
static void batch_send(st_remote_t *st, rop_t *ops, size_t n)
{
    if (n == 1) {
        ops->next = NULL;
        ops->in_slot = true;
        st_rm_send_now(ops);
        return;
    }
    if (atomic_load(&st->closing)) {
        batch_fail(st, ops, GT_ESHUTDOWN);
        return;
    }
    if (atomic_load(&st->ab_many_off)) { /* queued before it was known */
        st_rm_batch_release(st);
        AB_EACH(op, ops, nx)
            st_rm_send_now(op);
        return;
    }
    /* AppendManyRequest: field 1 (appends), length-delimited, once per
     * append, around each one's packed AppendRequest: a key and a length
     * before each, the packed request itself as its own part. */
    int64_t timeout = 0;
    AB_EACH(op, ops, nx) {
        if (op->timeout_ms > timeout)
            timeout = op->timeout_ms;
    }
    px_rpc_part_t *parts = malloc(2 * n * sizeof(*parts));
    uint8_t *heads = malloc(n * 11);
    rbatch_t *b = malloc(sizeof(*b));
    if (!parts || !heads || !b) {
        free(parts);
        free(heads);
        free(b);
        batch_fail(st, ops, GT_ENOMEM);
        return;
    }
    size_t k = 0, h = 0;
    AB_EACH(op, ops, nx) {
        uint8_t *head = heads + h;
        head[0] = (1 << 3) | 2;
        size_t hl = 1 + varint_put(head + 1, op->len);
        h += hl;
        parts[k++] = (px_rpc_part_t){head, hl};
        parts[k++] = (px_rpc_part_t){op->req, op->len};
    }
    rlink_t *l = st_rm_link_get(st);
    if (!l) {
        free(parts);
        free(heads);
        free(b);
        batch_fail(st, ops, GT_AGAIN); /* no node known: retriable */
        return;
    }
    AB_EACH(op, ops, nx)
        op->link = l;
    *b = (rbatch_t){.st = st, .link = l, .ops = ops, .n = n};
    px_ccall_opts_t co = {.timeout_ms = timeout, .endpoint = -1};
    gt_err_t rc = px_rpc_unary_parts(l->rpc, SVC "AppendMany", parts, k, &co, batch_answer, b,
                                     NULL);
    st_rm_link_put(st, l);
    free(parts);
    free(heads);
    if (rc != GT_OK) {
        free(b);
        batch_fail(st, ops, rc);
    }
}

/* With ab_mu held: takes the whole queue (one more call in flight). */
static rop_t *queue_take(st_remote_t *st, size_t *n)
{
    rop_t *ops = st->ab_head;
    *n = st->ab_count;
    st->ab_head = st->ab_tail = NULL;
    st->ab_count = st->ab_bytes = 0;
    st->ab_inflight++;
    return ops;
}

void st_rm_batch_submit(rop_t *op)
{
    st_remote_t *st = op->st;
    if (st->ab_max_inflight <= 0 || atomic_load(&st->ab_many_off)) {
        st_rm_send_now(op);
        return;
    }
    op->next = NULL;
    op->in_slot = false;
    pthread_mutex_lock(&st->ab_mu);
    if (st->ab_tail)
        st->ab_tail->next = op;
    else
        st->ab_head = op;
    st->ab_tail = op;
    st->ab_count++;
    st->ab_bytes += op->len;
    rop_t *ops = NULL;
    size_t n = 0;
    if (st->ab_inflight < st->ab_max_inflight || st->ab_count >= st->ab_max_count ||
        st->ab_bytes >= st->ab_max_bytes)
        ops = queue_take(st, &n);
    pthread_mutex_unlock(&st->ab_mu);
    if (ops)
        batch_send(st, ops, n);
}

void st_rm_batch_release(st_remote_t *st)
{
    rop_t *ops = NULL;
    size_t n = 0;
    pthread_mutex_lock(&st->ab_mu);
    st->ab_inflight--;
    if (st->ab_head && st->ab_inflight < st->ab_max_inflight)
        ops = queue_take(st, &n);
    pthread_mutex_unlock(&st->ab_mu);
    if (ops)
        batch_send(st, ops, n);
}
