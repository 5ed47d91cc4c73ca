/* The remote store (st_remote.h): st_ops_t over gantry.store.v1.
 *
 * One request = one rop_t: the packed request (kept for retries), the
 * method, the response type and a converter that turns the decoded
 * response into the st callback's borrowed results.  st_rm_send() starts the
 * call; rop_answer() (completion-queue thread) retries or converts.  The
 * metadata watch is a stream with its own small state (watch_*).  Appends
 * and their batcher: st_remote_append.c; shared types: st_remote_int.h. */
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gt_log.h"

#include "st_remote_int.h"

/* ---- links -------------------------------------------------------------- */

/* The current link with a reference, or NULL. */
rlink_t *st_rm_link_get(st_remote_t *st)
{
    pthread_mutex_lock(&st->link_mu);
    rlink_t *l = st->link;
    if (l)
        l->refs++;
    pthread_mutex_unlock(&st->link_mu);
    return l;
}

static void link_free(st_remote_t *st, rlink_t *l)
{
    px_rpc_client_free(l->rpc);
    free(l);
    pthread_mutex_lock(&st->link_mu);
    st->n_links--;
    pthread_cond_broadcast(&st->link_cv);
    pthread_mutex_unlock(&st->link_mu);
}

/* With link_mu held: drops a reference.  The last one of a switched-away
 * link hands it to the reaper (never freed here: this may be one of its
 * client's own threads); without a reaper (one node, never switched)
 * st_close waits for it. */
static void link_put_locked(st_remote_t *st, rlink_t *l)
{
    if (--l->refs > 0)
        return;
    if (st->has_reaper) {
        l->next = st->reap_head;
        st->reap_head = l;
    }
    pthread_cond_broadcast(&st->link_cv);
}

void st_rm_link_put(st_remote_t *st, rlink_t *l)
{
    pthread_mutex_lock(&st->link_mu);
    link_put_locked(st, l);
    pthread_mutex_unlock(&st->link_mu);
}

static void *reaper_main(void *arg)
{
    st_remote_t *st = arg;
    pthread_mutex_lock(&st->link_mu);
    for (;;) {
        rlink_t *l = st->reap_head;
        if (l) {
            st->reap_head = l->next;
            pthread_mutex_unlock(&st->link_mu);
            link_free(st, l);
            pthread_mutex_lock(&st->link_mu);
            continue;
        }
        if (st->reaper_stop && st->n_links == 0)
            break;
        pthread_cond_wait(&st->link_cv, &st->link_mu);
    }
    pthread_mutex_unlock(&st->link_mu);
    return NULL;
}

static gt_err_t link_new(st_remote_t *st, const char *addr, rlink_t **out)
{
    size_t n = strlen(addr);
    rlink_t *l = calloc(1, sizeof(*l) + n + 1);
    if (!l)
        return GT_ENOMEM;
    memcpy(l->addr, addr, n + 1);
    px_rpc_client_opts_t o = st->copts;
    const char *eps[1] = {l->addr};
    o.endpoints = eps;
    o.n_endpoints = 1;
    gt_err_t rc = px_rpc_client_new(&o, &l->rpc);
    if (rc != GT_OK) {
        free(l);
        return rc;
    }
    l->refs = 1;
    pthread_mutex_lock(&st->link_mu);
    st->n_links++;
    pthread_mutex_unlock(&st->link_mu);
    *out = l;
    return GT_OK;
}

/* Runs the not-leader hook (cluster mode: re-read the leader from etcd). */
static void not_leader(st_remote_t *st)
{
    pthread_mutex_lock(&st->hook_mu);
    if (st->on_not_leader)
        st->on_not_leader(st->hook_ctx);
    pthread_mutex_unlock(&st->hook_mu);
}

static gt_err_t err_from_status(st_remote_t *st, grpc_status_code code)
{
    switch (code) {
    case GRPC_STATUS_UNAVAILABLE:
        return GT_AGAIN;
    case GRPC_STATUS_DEADLINE_EXCEEDED:
        return GT_ETIMEDOUT;
    case GRPC_STATUS_RESOURCE_EXHAUSTED:
        return GT_EBUSY;
    case GRPC_STATUS_INVALID_ARGUMENT:
        return GT_EINVAL;
    case GRPC_STATUS_UNIMPLEMENTED:
        return GT_EUNSUPPORTED;
    case GRPC_STATUS_CANCELLED:
        return atomic_load(&st->closing) ? GT_ESHUTDOWN : GT_EIO;
    default:
        return GT_EIO;
    }
}

gt_err_t st_rm_err_of(const ProtobufCMessage *m)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(m->descriptor, 1);
    if (!f || f->type != PROTOBUF_C_TYPE_ENUM || strcmp(f->name, "err") != 0)
        return GT_EIO;
    int v = *(const int *)((const char *)m + f->offset);
    return v >= 0 && v < GT_ERR_MAX_ ? (gt_err_t)v : GT_EIO;
}

static void rop_free(rop_t *op)
{
    free(op->req);
    free(op);
}

void st_rm_finish(rop_t *op, gt_err_t err, const ProtobufCMessage *resp)
{
    if (op->conv)
        op->conv(op, err, resp);
    rop_free(op);
}

static void rop_retry(void *arg)
{
    st_rm_send(arg);
}

/* Whether a failed call's status says the node is not the leader (a
 * cluster node that lost or never had leadership). */
static bool is_not_leader(grpc_status_code code, const char *details)
{
    return code == GRPC_STATUS_UNAVAILABLE && details && strstr(details, "not leader");
}

void st_rm_fail(rop_t *op, grpc_status_code code, const char *details, bool hook)
{
    st_remote_t *st = op->st;
    bool closing = atomic_load(&st->closing);
    /* Cancelled because the link was switched away (cluster mode):
     * not an answer of the node; retriable. */
    bool switched = code == GRPC_STATUS_CANCELLED && !closing && atomic_load(&op->link->dead);
    if (hook && is_not_leader(code, details))
        not_leader(st);
    if (switched && op->tries_left > 0) {
        op->tries_left--;
        st_rm_send(op); /* on the new link, if any */
        return;
    }
    if (op->tries_left > 0 && px_rpc_status_transient(code) && !closing) {
        op->tries_left--;
        int64_t b = op->backoff_ms;
        op->backoff_ms = op->backoff_ms * 2 > 1000 ? 1000 : op->backoff_ms * 2;
        rlink_t *l = st_rm_link_get(st);
        gt_err_t rc = l ? px_rpc_client_after(l->rpc, b, rop_retry, op) : GT_AGAIN;
        if (l)
            st_rm_link_put(st, l);
        if (rc == GT_OK)
            return;
    }
    if (code != GRPC_STATUS_CANCELLED || !closing)
        GT_LOG(DEBUG, "store", "remote %s: %s", op->method + sizeof(SVC) - 1,
               details && *details ? details : "call failed");
    st_rm_finish(op, switched ? GT_AGAIN : err_from_status(st, code), NULL);
}

static void rop_answer(void *arg, grpc_status_code code, const char *details,
                       const uint8_t *resp, size_t len)
{
    rop_t *op = arg;
    if (op->in_slot) {
        op->in_slot = false;
        st_rm_batch_release(op->st); /* appends waiting for it go now */
    }
    if (code != GRPC_STATUS_OK) {
        st_rm_fail(op, code, details, true);
        return;
    }
    /* In one arena (px_rpc_arena.c): an answer of 32 appended or popped
     * messages is otherwise some 70-400 mallocs and frees. */
    ProtobufCMessage *m = px_request_unpack(op->resp_desc, resp, len);
    if (!m) {
        GT_LOG(WARN, "store", "remote %s: undecodable answer", op->method + sizeof(SVC) - 1);
        st_rm_finish(op, GT_EIO, NULL);
        return;
    }
    st_rm_finish(op, st_rm_err_of(m), m);
    px_request_free(m);
}

/* An op that was not sent: its batcher slot (if any) goes first. */
static void rop_unsent(rop_t *op, gt_err_t err)
{
    if (op->in_slot) {
        op->in_slot = false;
        st_rm_batch_release(op->st);
    }
    st_rm_finish(op, err, NULL);
}

void st_rm_send_now(rop_t *op)
{
    st_remote_t *st = op->st;
    if (atomic_load(&st->closing)) {
        rop_unsent(op, GT_ESHUTDOWN);
        return;
    }
    rlink_t *l = st_rm_link_get(st);
    if (!l) {
        /* Cluster mode with no leader known: fail fast, retriable. */
        rop_unsent(op, GT_AGAIN);
        return;
    }
    op->link = l;
    px_ccall_opts_t co = {.timeout_ms = op->timeout_ms, .endpoint = -1};
    gt_err_t rc = px_rpc_unary(l->rpc, op->method, op->req, op->len, &co, rop_answer, op, NULL);
    st_rm_link_put(st, l);
    if (rc != GT_OK)
        rop_unsent(op, rc);
}

void st_rm_send(rop_t *op)
{
    if (op->batched)
        st_rm_batch_submit(op);
    else
        st_rm_send_now(op);
}

void st_rm_start(st_remote_t *st, const char *method, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *resp_desc, rop_conv_fn conv,
                 void (*cb)(void), void *arg, int64_t extra_ms, bool retry, bool batched)
{
    rop_t *op = calloc(1, sizeof(*op));
    size_t len = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = malloc(len ? len : 1);
    if (!op || !buf) {
        free(buf);
        if (op) {
            op->conv = conv;
            op->cb = cb;
            op->arg = arg;
            op->st = st;
            st_rm_finish(op, GT_ENOMEM, NULL);
        } else if (conv) {
            rop_t tmp = {.st = st, .conv = conv, .cb = cb, .arg = arg};
            conv(&tmp, GT_ENOMEM, NULL);
        }
        return;
    }
    protobuf_c_message_pack(req, buf);
    *op = (rop_t){.st = st, .method = method, .resp_desc = resp_desc, .conv = conv,
                  .cb = cb, .arg = arg, .req = buf, .len = len,
                  .timeout_ms = st->timeout_ms + extra_ms,
                  .tries_left = retry ? st->retries : 0, .backoff_ms = 50,
                  .batched = batched};
    st_rm_send(op);
}

/* Packs `req` and sends it.  retry: the operation is idempotent. */
static void rop_start(st_remote_t *st, const char *method, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *resp_desc, rop_conv_fn conv,
                      void (*cb)(void), void *arg, int64_t extra_ms, bool retry)
{
    st_rm_start(st, method, req, resp_desc, conv, cb, arg, extra_ms, retry, false);
}

/* ---- converters --------------------------------------------------------- */

static void conv_done(rop_t *op, gt_err_t err, const ProtobufCMessage *resp)
{
    (void)resp;
    ((st_done_cb)op->cb)(op->arg, err);
}

static void topic_from(st_topic_t *t, const Gantry__Store__V1__Topic *p)
{
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", p->name);
    t->type = (st_topic_type_t)p->type;
    t->queue_count = p->queue_count;
    t->perm = p->perm;
}

static void group_from(st_group_t *g, const Gantry__Store__V1__Group *p)
{
    memset(g, 0, sizeof(*g));
    snprintf(g->name, sizeof(g->name), "%s", p->name);
    g->max_delivery_attempts = p->max_delivery_attempts;
    g->fifo = p->fifo;
    g->consume_from = (st_consume_from_t)p->consume_from;
    if (p->retry) {
        g->retry.initial_ms = p->retry->initial_ms;
        g->retry.max_ms = p->retry->max_ms;
        g->retry.multiplier = p->retry->multiplier;
    }
}

static void conv_topics(rop_t *op, gt_err_t err, const ProtobufCMessage *resp)
{
    const Gantry__Store__V1__GetTopicsResponse *r = (const void *)resp;
    st_topic_t *v = NULL;
    size_t n = 0;
    if (err == GT_OK && r && r->n_topics) {
        if ((v = calloc(r->n_topics, sizeof(*v))) == NULL)
            err = GT_ENOMEM;
        for (size_t i = 0; v && i < r->n_topics; i++)
            topic_from(&v[n++], r->topics[i]);
    }
    ((st_topic_cb)op->cb)(op->arg, err, v, err == GT_OK ? n : 0);
    free(v);
}

static void conv_groups(rop_t *op, gt_err_t err, const ProtobufCMessage *resp)
{
    const Gantry__Store__V1__GetGroupsResponse *r = (const void *)resp;
    st_group_t *v = NULL;
    size_t n = 0;
    if (err == GT_OK && r && r->n_groups) {
        if ((v = calloc(r->n_groups, sizeof(*v))) == NULL)
            err = GT_ENOMEM;
        for (size_t i = 0; v && i < r->n_groups; i++)
            group_from(&v[n++], r->groups[i]);
    }
    ((st_group_cb)op->cb)(op->arg, err, v, err == GT_OK ? n : 0);
    free(v);
}

/* A message of an answer; points into `p` (valid during the callback). */
static void msg_from(st_message_t *m, const Gantry__Store__V1__Message *p)
{
    memset(m, 0, sizeof(*m));
    m->tag = NUL(p->tag);
    m->nkeys = (uint32_t)(p->n_keys < ST_MAX_KEYS ? p->n_keys : ST_MAX_KEYS);
    for (uint32_t i = 0; i < m->nkeys; i++)
        m->keys[i] = p->keys[i];
    m->msg_id = p->msg_id;
    m->nprops = (uint32_t)(p->n_props < ST_MAX_PROPS ? p->n_props : ST_MAX_PROPS);
    for (uint32_t i = 0; i < m->nprops; i++) {
        m->props[i].key = p->props[i]->key;
        m->props[i].value = p->props[i]->value;
    }
    m->born_ts_ms = p->born_ts_ms;
    m->born_host = NUL(p->born_host);
    m->msg_group = NUL(p->msg_group);
    m->delivery_ts_ms = p->delivery_ts_ms;
    m->body = p->body.data;
    m->body_len = (uint32_t)p->body.len;
    m->queue_id = p->queue_id;
    m->tx_half = p->tx_half;
    m->topic = p->topic;
    m->queue_offset = p->queue_offset;
    m->position = p->position;
    m->store_ts_ms = p->store_ts_ms;
    m->flags = p->flags;
    m->tx_checks = p->tx_checks;
}

static void conv_pop(rop_t *op, gt_err_t err, const ProtobufCMessage *resp)
{
    const Gantry__Store__V1__PopResponse *r = (const void *)resp;
    st_popped_t *v = NULL;
    size_t n = 0;
    if (err == GT_OK && r && r->n_messages) {
        if ((v = calloc(r->n_messages, sizeof(*v))) == NULL)
            err = GT_ENOMEM; /* the node delivered them: they come back later */
        for (size_t i = 0; v && i < r->n_messages; i++, n++) {
            const Gantry__Store__V1__Popped *p = r->messages[i];
            if (p->message)
                msg_from(&v[i].msg, p->message);
            snprintf(v[i].handle, sizeof(v[i].handle), "%s", p->handle);
            v[i].attempt = p->attempt;
            v[i].invisible_until_ms = p->invisible_until_ms;
        }
    }
    ((st_pop_cb)op->cb)(op->arg, err, v, err == GT_OK ? n : 0);
    free(v);
}

static void conv_msgs(rop_t *op, gt_err_t err, const ProtobufCMessage *resp)
{
    const Gantry__Store__V1__MessagesResponse *r = (const void *)resp;
    st_message_t *v = NULL;
    size_t n = 0;
    if (err == GT_OK && r && r->n_messages) {
        if ((v = calloc(r->n_messages, sizeof(*v))) == NULL)
            err = GT_ENOMEM;
        for (size_t i = 0; v && i < r->n_messages; i++)
            msg_from(&v[n++], r->messages[i]);
    }
    ((st_msgs_cb)op->cb)(op->arg, err, v, err == GT_OK ? n : 0,
                         err == GT_OK && r ? r->next_offset : 0);
    free(v);
}

static void conv_handle(rop_t *op, gt_err_t err, const ProtobufCMessage *resp)
{
    const Gantry__Store__V1__ChangeInvisibleResponse *r = (const void *)resp;
    ((st_handle_cb)op->cb)(op->arg, err, err == GT_OK && r ? r->handle : NULL);
}

static void conv_acks(rop_t *op, gt_err_t err, const ProtobufCMessage *resp)
{
    const Gantry__Store__V1__AckBatchResponse *r = (const void *)resp;
    gt_err_t *v = NULL;
    size_t n = 0;
    if (err == GT_OK && r) {
        if ((v = calloc(r->n_results ? r->n_results : 1, sizeof(*v))) == NULL)
            err = GT_ENOMEM;
        for (size_t i = 0; v && i < r->n_results; i++) {
            int e = (int)r->results[i];
            v[n++] = e >= 0 && e < GT_ERR_MAX_ ? (gt_err_t)e : GT_EIO;
        }
    }
    ((st_acks_cb)op->cb)(op->arg, err, err == GT_OK ? v : NULL, err == GT_OK ? n : 0);
    free(v);
}

static void conv_purge(rop_t *op, gt_err_t err, const ProtobufCMessage *resp)
{
    const Gantry__Store__V1__PurgeResponse *r = (const void *)resp;
    ((st_count_cb)op->cb)(op->arg, err, err == GT_OK && r ? r->count : 0);
}

static void conv_requeue(rop_t *op, gt_err_t err, const ProtobufCMessage *resp)
{
    const Gantry__Store__V1__RequeueResponse *r = (const void *)resp;
    ((st_count_cb)op->cb)(op->arg, err, err == GT_OK && r ? r->count : 0);
}

static void conv_offset(rop_t *op, gt_err_t err, const ProtobufCMessage *resp)
{
    const Gantry__Store__V1__OffsetResponse *r = (const void *)resp;
    ((st_offset_cb)op->cb)(op->arg, err, err == GT_OK && r ? r->offset : 0);
}

static void conv_stats(rop_t *op, gt_err_t err, const ProtobufCMessage *resp)
{
    const Gantry__Store__V1__StatsResponse *r = (const void *)resp;
    st_stats_t s;
    st_queue_stats_t *q = NULL;
    memset(&s, 0, sizeof(s));
    if (err == GT_OK && r) {
        if (r->n_queues && (q = calloc(r->n_queues, sizeof(*q))) == NULL)
            err = GT_ENOMEM;
        for (size_t i = 0; q && i < r->n_queues; i++) {
            q[i].min_offset = r->queues[i]->min_offset;
            q[i].max_offset = r->queues[i]->max_offset;
            q[i].bytes = r->queues[i]->bytes;
        }
        s.nqueues = q ? (uint32_t)r->n_queues : 0;
        s.queues = q;
        s.messages = r->messages;
        s.bytes = r->bytes;
        s.ready = r->ready;
        s.inflight = r->inflight;
        s.lag = r->lag;
        s.tx_discarded = r->tx_discarded;
    }
    ((st_stats_cb)op->cb)(op->arg, err, err == GT_OK ? &s : NULL);
    free(q);
}

static void conv_meta_list(rop_t *op, gt_err_t err, const ProtobufCMessage *resp)
{
    const Gantry__Store__V1__MetaListResponse *r = (const void *)resp;
    st_meta_rec_t *v = NULL;
    size_t n = 0;
    if (err == GT_OK && r && r->n_records) {
        if ((v = calloc(r->n_records, sizeof(*v))) == NULL)
            err = GT_ENOMEM;
        for (size_t i = 0; v && i < r->n_records; i++, n++) {
            v[i].key = r->records[i]->key.data;
            v[i].key_len = (uint32_t)r->records[i]->key.len;
            v[i].value = r->records[i]->value.data;
            v[i].value_len = (uint32_t)r->records[i]->value.len;
        }
    }
    ((st_meta_list_cb)op->cb)(op->arg, err, v, err == GT_OK ? n : 0,
                              err == GT_OK && r ? r->more : false);
    free(v);
}

/* ---- operations --------------------------------------------------------- */

static void r_topic_put(st_store_t *s, const st_topic_t *t, st_done_cb cb, void *arg)
{
    Gantry__Store__V1__Topic tp = GANTRY__STORE__V1__TOPIC__INIT;
    tp.name = (char *)t->name;
    tp.type = (Gantry__Store__V1__TopicType)t->type;
    tp.queue_count = t->queue_count;
    tp.perm = t->perm;
    Gantry__Store__V1__PutTopicRequest rq = GANTRY__STORE__V1__PUT_TOPIC_REQUEST__INIT;
    rq.topic = &tp;
    rop_start(ST(s), SVC "PutTopic", &rq.base, DESC(put_topic_response), conv_done, CB(cb),
              arg, 0, true);
}

static void r_topic_delete(st_store_t *s, const char *name, st_done_cb cb, void *arg)
{
    Gantry__Store__V1__DeleteTopicRequest rq = GANTRY__STORE__V1__DELETE_TOPIC_REQUEST__INIT;
    rq.name = STR(name);
    rop_start(ST(s), SVC "DeleteTopic", &rq.base, DESC(delete_topic_response), conv_done,
              CB(cb), arg, 0, false);
}

static void r_topic_get(st_store_t *s, const char *name, st_topic_cb cb, void *arg)
{
    Gantry__Store__V1__GetTopicsRequest rq = GANTRY__STORE__V1__GET_TOPICS_REQUEST__INIT;
    rq.name = STR(name);
    rop_start(ST(s), SVC "GetTopics", &rq.base, DESC(get_topics_response), conv_topics, CB(cb),
              arg, 0, true);
}

static void r_group_put(st_store_t *s, const st_group_t *g, st_done_cb cb, void *arg)
{
    Gantry__Store__V1__RetryPolicy rp = GANTRY__STORE__V1__RETRY_POLICY__INIT;
    rp.initial_ms = g->retry.initial_ms;
    rp.max_ms = g->retry.max_ms;
    rp.multiplier = g->retry.multiplier;
    Gantry__Store__V1__Group gp = GANTRY__STORE__V1__GROUP__INIT;
    gp.name = (char *)g->name;
    gp.max_delivery_attempts = g->max_delivery_attempts;
    gp.fifo = g->fifo;
    gp.consume_from = (Gantry__Store__V1__ConsumeFrom)g->consume_from;
    gp.retry = &rp;
    Gantry__Store__V1__PutGroupRequest rq = GANTRY__STORE__V1__PUT_GROUP_REQUEST__INIT;
    rq.group = &gp;
    rop_start(ST(s), SVC "PutGroup", &rq.base, DESC(put_group_response), conv_done, CB(cb),
              arg, 0, true);
}

static void r_group_delete(st_store_t *s, const char *name, st_done_cb cb, void *arg)
{
    Gantry__Store__V1__DeleteGroupRequest rq = GANTRY__STORE__V1__DELETE_GROUP_REQUEST__INIT;
    rq.name = STR(name);
    rop_start(ST(s), SVC "DeleteGroup", &rq.base, DESC(delete_group_response), conv_done,
              CB(cb), arg, 0, false);
}

static void r_group_get(st_store_t *s, const char *name, st_group_cb cb, void *arg)
{
    Gantry__Store__V1__GetGroupsRequest rq = GANTRY__STORE__V1__GET_GROUPS_REQUEST__INIT;
    rq.name = STR(name);
    rop_start(ST(s), SVC "GetGroups", &rq.base, DESC(get_groups_response), conv_groups, CB(cb),
              arg, 0, true);
}

static void r_pop(st_store_t *s, const st_pop_req_t *q, st_pop_cb cb, void *arg)
{
    Gantry__Store__V1__PopRequest rq = GANTRY__STORE__V1__POP_REQUEST__INIT;
    rq.group = STR(q->group);
    rq.topic = STR(q->topic);
    rq.queue_id = q->queue_id;
    rq.high_first = q->high_first;
    rq.filter_kind = (Gantry__Store__V1__FilterKind)q->filter_kind;
    rq.filter_expr = STR(q->filter_expr);
    rq.max = q->max;
    rq.max_bytes = q->max_bytes;
    rq.invisible_ms = q->invisible_ms;
    rq.poll_timeout_ms = q->poll_timeout_ms;
    rq.cancel_key = q->cancel_key;
    rq.client_id = ST(s)->client_id;
    rq.new_from_first = q->new_from_first;
    int64_t wait = q->poll_timeout_ms > 0 ? q->poll_timeout_ms : 0;
    rop_start(ST(s), SVC "Pop", &rq.base, DESC(pop_response), conv_pop, CB(cb), arg, wait,
              false);
}

static void r_pop_cancel(st_store_t *s, uint64_t key)
{
    Gantry__Store__V1__PopCancelRequest rq = GANTRY__STORE__V1__POP_CANCEL_REQUEST__INIT;
    rq.cancel_key = key;
    rq.client_id = ST(s)->client_id;
    /* Idempotent: cancelling twice is cancelling once. */
    rop_start(ST(s), SVC "PopCancel", &rq.base, DESC(pop_cancel_response), NULL, NULL, NULL, 0,
              true);
}

static void r_ack(st_store_t *s, const char *group, const char *topic, const char *handle,
                  st_done_cb cb, void *arg)
{
    Gantry__Store__V1__AckRequest rq = GANTRY__STORE__V1__ACK_REQUEST__INIT;
    rq.group = STR(group);
    rq.topic = STR(topic);
    rq.handle = STR(handle);
    rop_start(ST(s), SVC "Ack", &rq.base, DESC(ack_response), conv_done, CB(cb), arg, 0, false);
}

static void r_ack_batch(st_store_t *s, const char *group, const char *topic,
                        const char *const *handles, size_t n, st_acks_cb cb, void *arg)
{
    Gantry__Store__V1__AckBatchRequest rq = GANTRY__STORE__V1__ACK_BATCH_REQUEST__INIT;
    rq.group = STR(group);
    rq.topic = STR(topic);
    rq.n_handles = n;
    rq.handles = (char **)handles;
    rop_start(ST(s), SVC "AckBatch", &rq.base, DESC(ack_batch_response), conv_acks, CB(cb), arg,
              0, false);
}

static void r_change_invisible(st_store_t *s, const char *group, const char *topic,
                               const char *handle, int64_t ms, st_handle_cb cb, void *arg)
{
    Gantry__Store__V1__ChangeInvisibleRequest rq =
        GANTRY__STORE__V1__CHANGE_INVISIBLE_REQUEST__INIT;
    rq.group = STR(group);
    rq.topic = STR(topic);
    rq.handle = STR(handle);
    rq.invisible_ms = ms;
    rop_start(ST(s), SVC "ChangeInvisible", &rq.base, DESC(change_invisible_response),
              conv_handle, CB(cb), arg, 0, false);
}

static void r_release(st_store_t *s, const char *group, const char *topic, const char *handle,
                      st_done_cb cb, void *arg)
{
    Gantry__Store__V1__ReleaseRequest rq = GANTRY__STORE__V1__RELEASE_REQUEST__INIT;
    rq.group = STR(group);
    rq.topic = STR(topic);
    rq.handle = STR(handle);
    rop_start(ST(s), SVC "Release", &rq.base, DESC(release_response), conv_done, CB(cb), arg, 0,
              false);
}

static void r_purge(st_store_t *s, const char *group, const char *topic, st_count_cb cb,
                    void *arg)
{
    Gantry__Store__V1__PurgeRequest rq = GANTRY__STORE__V1__PURGE_REQUEST__INIT;
    rq.group = STR(group);
    rq.topic = STR(topic);
    rop_start(ST(s), SVC "Purge", &rq.base, DESC(purge_response), conv_purge, CB(cb), arg, 0,
              false);
}

static void r_requeue(st_store_t *s, const char *group, const char *topic, st_count_cb cb,
                      void *arg)
{
    Gantry__Store__V1__RequeueRequest rq = GANTRY__STORE__V1__REQUEUE_REQUEST__INIT;
    rq.group = STR(group);
    rq.topic = STR(topic);
    rop_start(ST(s), SVC "Requeue", &rq.base, DESC(requeue_response), conv_requeue, CB(cb), arg,
              0, false);
}

static void r_pull(st_store_t *s, const st_pull_req_t *q, st_msgs_cb cb, void *arg)
{
    Gantry__Store__V1__PullRequest rq = GANTRY__STORE__V1__PULL_REQUEST__INIT;
    rq.topic = STR(q->topic);
    rq.queue = q->queue;
    rq.offset = q->offset;
    rq.max = q->max;
    rq.filter_kind = (Gantry__Store__V1__FilterKind)q->filter_kind;
    rq.filter_expr = STR(q->filter_expr);
    rq.poll_timeout_ms = q->poll_timeout_ms;
    rq.cancel_key = q->cancel_key;
    rq.client_id = ST(s)->client_id;
    int64_t wait = q->poll_timeout_ms > 0 ? q->poll_timeout_ms : 0;
    /* A read: a retry reads the same again, but it would wait anew. */
    rop_start(ST(s), SVC "Pull", &rq.base, DESC(messages_response), conv_msgs, CB(cb), arg,
              wait, wait == 0);
}

static void r_offset_get(st_store_t *s, const char *group, const char *topic, uint32_t queue,
                         st_offset_cb cb, void *arg)
{
    Gantry__Store__V1__GetOffsetRequest rq = GANTRY__STORE__V1__GET_OFFSET_REQUEST__INIT;
    rq.group = STR(group);
    rq.topic = STR(topic);
    rq.queue = queue;
    rop_start(ST(s), SVC "GetOffset", &rq.base, DESC(offset_response), conv_offset, CB(cb), arg,
              0, true);
}

static void r_offset_update(st_store_t *s, const char *group, const char *topic,
                            uint32_t queue, uint64_t offset, st_done_cb cb, void *arg)
{
    Gantry__Store__V1__UpdateOffsetRequest rq = GANTRY__STORE__V1__UPDATE_OFFSET_REQUEST__INIT;
    rq.group = STR(group);
    rq.topic = STR(topic);
    rq.queue = queue;
    rq.offset = offset;
    rop_start(ST(s), SVC "UpdateOffset", &rq.base, DESC(update_offset_response), conv_done,
              CB(cb), arg, 0, false);
}

static void r_offset_query(st_store_t *s, const char *topic, uint32_t queue,
                           st_offset_kind_t kind, int64_t ts_ms, st_offset_cb cb, void *arg)
{
    Gantry__Store__V1__QueryOffsetRequest rq = GANTRY__STORE__V1__QUERY_OFFSET_REQUEST__INIT;
    rq.topic = STR(topic);
    rq.queue = queue;
    rq.kind = (Gantry__Store__V1__OffsetKind)kind;
    rq.ts_ms = ts_ms;
    rop_start(ST(s), SVC "QueryOffset", &rq.base, DESC(offset_response), conv_offset, CB(cb),
              arg, 0, true);
}

static void r_lookup_id(st_store_t *s, const char *topic, const char *msg_id, st_msgs_cb cb,
                        void *arg)
{
    Gantry__Store__V1__LookupIdRequest rq = GANTRY__STORE__V1__LOOKUP_ID_REQUEST__INIT;
    rq.topic = STR(topic);
    rq.msg_id = STR(msg_id);
    rop_start(ST(s), SVC "LookupId", &rq.base, DESC(messages_response), conv_msgs, CB(cb), arg,
              0, true);
}

static void r_lookup_key(st_store_t *s, const char *topic, const char *key, uint32_t max,
                         st_msgs_cb cb, void *arg)
{
    Gantry__Store__V1__LookupKeyRequest rq = GANTRY__STORE__V1__LOOKUP_KEY_REQUEST__INIT;
    rq.topic = STR(topic);
    rq.key = STR(key);
    rq.max = max;
    rop_start(ST(s), SVC "LookupKey", &rq.base, DESC(messages_response), conv_msgs, CB(cb), arg,
              0, true);
}

static void r_stats(st_store_t *s, const st_stats_req_t *req, st_stats_cb cb, void *arg)
{
    Gantry__Store__V1__StatsRequest rq = GANTRY__STORE__V1__STATS_REQUEST__INIT;
    rq.topic = STR(req->topic);
    rq.group = STR(req->group);
    rq.new_from_first = req->new_from_first;
    rop_start(ST(s), SVC "Stats", &rq.base, DESC(stats_response), conv_stats, CB(cb), arg, 0,
              true);
}

static void r_tx_end(st_store_t *s, const char *topic, const char *msg_id, bool commit,
                     st_done_cb cb, void *arg)
{
    Gantry__Store__V1__TxEndRequest rq = GANTRY__STORE__V1__TX_END_REQUEST__INIT;
    rq.topic = STR(topic);
    rq.msg_id = STR(msg_id);
    rq.commit = commit;
    rop_start(ST(s), SVC "TxEnd", &rq.base, DESC(tx_end_response), conv_done, CB(cb), arg, 0,
              false);
}

static void r_tx_pending(st_store_t *s, int64_t unresolved_for_ms, uint32_t max, st_msgs_cb cb,
                         void *arg)
{
    Gantry__Store__V1__TxPendingRequest rq = GANTRY__STORE__V1__TX_PENDING_REQUEST__INIT;
    rq.unresolved_for_ms = unresolved_for_ms;
    rq.max = max;
    rop_start(ST(s), SVC "TxPending", &rq.base, DESC(messages_response), conv_msgs, CB(cb), arg,
              0, true);
}

static void r_tx_checked(st_store_t *s, const char *topic, const char *msg_id,
                         uint32_t seen_checks, uint32_t max_checks, st_done_cb cb,
                         void *arg)
{
    Gantry__Store__V1__TxCheckedRequest rq = GANTRY__STORE__V1__TX_CHECKED_REQUEST__INIT;
    rq.topic = STR(topic);
    rq.msg_id = STR(msg_id);
    rq.max_checks = max_checks;
    rq.seen_checks = seen_checks == ST_TX_CHECKS_ANY ? 0 : seen_checks + 1;
    rop_start(ST(s), SVC "TxChecked", &rq.base, DESC(tx_checked_response), conv_done, CB(cb),
              arg, 0, false);
}

static void r_recall(st_store_t *s, const char *topic, const char *msg_id, st_done_cb cb,
                     void *arg)
{
    Gantry__Store__V1__RecallRequest rq = GANTRY__STORE__V1__RECALL_REQUEST__INIT;
    rq.topic = STR(topic);
    rq.msg_id = STR(msg_id);
    rop_start(ST(s), SVC "Recall", &rq.base, DESC(recall_response), conv_done, CB(cb), arg, 0,
              false);
}

static void r_meta_put(st_store_t *s, const char *ns, const void *key, uint32_t key_len,
                       const void *value, uint32_t value_len, st_done_cb cb, void *arg)
{
    Gantry__Store__V1__MetaPutRequest rq = GANTRY__STORE__V1__META_PUT_REQUEST__INIT;
    rq.ns = STR(ns);
    rq.key.data = (uint8_t *)key;
    rq.key.len = key ? key_len : 0;
    rq.value.data = (uint8_t *)value;
    rq.value.len = value ? value_len : 0;
    /* Replacing a record with the same value twice is replacing it once. */
    rop_start(ST(s), SVC "MetaPut", &rq.base, DESC(meta_put_response), conv_done, CB(cb), arg,
              0, true);
}

static void r_meta_del(st_store_t *s, const char *ns, const void *key, uint32_t key_len,
                       st_done_cb cb, void *arg)
{
    Gantry__Store__V1__MetaDelRequest rq = GANTRY__STORE__V1__META_DEL_REQUEST__INIT;
    rq.ns = STR(ns);
    rq.key.data = (uint8_t *)key;
    rq.key.len = key ? key_len : 0;
    rop_start(ST(s), SVC "MetaDel", &rq.base, DESC(meta_del_response), conv_done, CB(cb), arg,
              0, false);
}

static void r_meta_list(st_store_t *s, const st_meta_list_req_t *q, st_meta_list_cb cb,
                        void *arg)
{
    Gantry__Store__V1__MetaListRequest rq = GANTRY__STORE__V1__META_LIST_REQUEST__INIT;
    rq.ns = STR(q->ns);
    rq.prefix.data = (uint8_t *)q->prefix;
    rq.prefix.len = q->prefix ? q->prefix_len : 0;
    rq.after.data = (uint8_t *)q->after;
    rq.after.len = q->after ? q->after_len : 0;
    rq.max = q->max;
    rop_start(ST(s), SVC "MetaList", &rq.base, DESC(meta_list_response), conv_meta_list, CB(cb),
              arg, 0, true);
}

/* ---- the metadata watch --------------------------------------------------- */

typedef struct watch_ctx {
    st_remote_t *st;
    uint64_t gen;
    uint64_t base;        /* added to the node's versions */
} watch_ctx_t;

static void watch_open_locked(st_remote_t *st);

static int name_cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void name_key(char *key, st_meta_kind_t kind, const char *name)
{
    key[0] = kind == ST_META_TOPIC ? 'T' : 'G';
    snprintf(key + 1, ST_NAME_MAX + 1, "%s", name);
}

/* With st->mu held: notes that the watcher holds (or no longer holds) a
 * name.  Out of memory: the name is not tracked (only a later snapshot's
 * deletion of it would be missed). */
static void names_note(st_remote_t *st, st_meta_kind_t kind, const char *name, bool present)
{
    char key[ST_NAME_MAX + 2];
    name_key(key, kind, name);
    size_t lo = 0, hi = st->n_names;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(st->names[mid], key);
        if (c == 0) {
            if (!present) {
                memmove(&st->names[mid], &st->names[mid + 1],
                        (st->n_names - mid - 1) * sizeof(st->names[0]));
                st->n_names--;
            }
            return;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (!present)
        return;
    if (st->n_names == st->cap_names) {
        size_t cap = st->cap_names ? st->cap_names * 2 : 64;
        void *p = realloc(st->names, cap * sizeof(st->names[0]));
        if (!p)
            return;
        st->names = p;
        st->cap_names = cap;
    }
    memmove(&st->names[lo + 1], &st->names[lo], (st->n_names - lo) * sizeof(st->names[0]));
    memcpy(st->names[lo], key, sizeof(key));
    st->n_names++;
}

/* With st->mu held, for a snapshot of evs[0..n): appends to evs (room for
 * st->n_names more) a deletion, at version `ver`, of every name the
 * watcher holds that the snapshot lacks; returns how many. */
static size_t names_gone(st_remote_t *st, st_meta_event_t *evs, size_t n, uint64_t ver)
{
    char (*snap)[ST_NAME_MAX + 2] = calloc(n ? n : 1, sizeof(*snap));
    size_t k = 0;
    if (!snap)
        return 0;
    for (size_t i = 0; i < n; i++)
        name_key(snap[i], evs[i].kind, evs[i].u.topic.name);
    qsort(snap, n, sizeof(*snap), name_cmp);
    for (size_t i = 0; i < st->n_names; i++) {
        if (bsearch(st->names[i], snap, n, sizeof(*snap), name_cmp))
            continue;
        st_meta_event_t *e = &evs[n + k++];
        memset(e, 0, sizeof(*e));
        e->kind = st->names[i][0] == 'T' ? ST_META_TOPIC : ST_META_GROUP;
        e->deleted = true;
        e->version = ver;
        snprintf(e->u.topic.name, sizeof(e->u.topic.name), "%s", st->names[i] + 1);
    }
    free(snap);
    return k;
}

static void watch_msg(void *arg, const uint8_t *data, size_t len)
{
    watch_ctx_t *w = arg;
    st_remote_t *st = w->st;
    Gantry__Store__V1__MetaWatchResponse *r =
        gantry__store__v1__meta_watch_response__unpack(NULL, len, data);
    if (!r) {
        GT_LOG(WARN, "store", "remote MetaWatch: undecodable event");
        return;
    }
    pthread_mutex_lock(&st->mu);
    size_t room = r->n_events + (r->snapshot ? st->n_names : 0);
    st_meta_event_t *ev = calloc(room ? room : 1, sizeof(*ev));
    if (ev && w->gen == st->watch_gen && st->watch_cb) {
        size_t n = 0;
        uint64_t top = w->base;
        for (size_t i = 0; i < r->n_events; i++) {
            const Gantry__Store__V1__MetaEvent *e = r->events[i];
            st_meta_event_t *o = &ev[n];
            o->kind = (st_meta_kind_t)e->kind;
            o->deleted = e->deleted;
            o->version = w->base + e->version;
            if (e->kind == GANTRY__STORE__V1__META_KIND__META_TOPIC && e->topic)
                topic_from(&o->u.topic, e->topic);
            else if (e->kind == GANTRY__STORE__V1__META_KIND__META_GROUP && e->group)
                group_from(&o->u.group, e->group);
            else
                continue;
            if (o->version > top)
                top = o->version;
            n++;
        }
        size_t gone = r->snapshot ? names_gone(st, ev, n, top) : 0;
        if (r->snapshot) {
            st->n_names = 0;
        }
        for (size_t i = 0; i < n; i++)
            names_note(st, ev[i].kind, ev[i].u.topic.name, !ev[i].deleted);
        if (top > st->ver_max)
            st->ver_max = top;
        st->watch_backoff_ms = 0; /* a healthy stream */
        st->watch_cb(st->watch_arg, ev, n + gone, r->snapshot);
    }
    pthread_mutex_unlock(&st->mu);
    free(ev);
    gantry__store__v1__meta_watch_response__free_unpacked(r, NULL);
}

static void watch_reopen(void *arg)
{
    watch_ctx_t *w = arg;
    st_remote_t *st = w->st;
    pthread_mutex_lock(&st->mu);
    if (w->gen == st->watch_gen)
        st->watch_timer = false;
    if (w->gen == st->watch_gen && st->watch_cb && !st->watch_call &&
        !atomic_load(&st->closing))
        watch_open_locked(st);
    pthread_mutex_unlock(&st->mu);
    free(w);
}

static void watch_close(void *arg, grpc_status_code code, const char *details)
{
    watch_ctx_t *w = arg;
    st_remote_t *st = w->st;
    pthread_mutex_lock(&st->mu);
    bool current = w->gen == st->watch_gen;
    if (current && st->watch_call) {
        px_ccall_unref(st->watch_call);
        st->watch_call = NULL;
    }
    if (current && st->watch_cb && !atomic_load(&st->closing) && !st->watch_timer) {
        /* Open it again: the node may have restarted; a new snapshot
         * follows. */
        int64_t b = st->watch_backoff_ms;
        st->watch_backoff_ms = b == 0 ? 100 : (b * 2 > 2000 ? 2000 : b * 2);
        GT_LOG(INFO, "store", "remote metadata watch ended (%d %s); again in %" PRId64 " ms",
               (int)code, details, b);
        watch_ctx_t *again = malloc(sizeof(*again));
        rlink_t *l = st_rm_link_get(st); /* none: the next switch opens it */
        if (again && l) {
            *again = (watch_ctx_t){st, w->gen, 0};
            if (px_rpc_client_after(l->rpc, b, watch_reopen, again) == GT_OK)
                st->watch_timer = true;
            else
                free(again);
        } else {
            free(again);
        }
        if (l)
            st_rm_link_put(st, l);
    }
    pthread_mutex_unlock(&st->mu);
    free(w);
}

static void watch_open_locked(st_remote_t *st)
{
    static const px_stream_cbs_t cbs = {watch_msg, watch_close};
    Gantry__Store__V1__MetaWatchRequest rq = GANTRY__STORE__V1__META_WATCH_REQUEST__INIT;
    uint8_t buf[16];
    size_t len = gantry__store__v1__meta_watch_request__pack(&rq, buf);
    rlink_t *l = st_rm_link_get(st);
    if (!l)
        return; /* no node now: st_remote_switch opens it */
    watch_ctx_t *w = malloc(sizeof(*w));
    if (!w) {
        st_rm_link_put(st, l);
        return;
    }
    /* Above every version handed out so far (see ver_max). */
    *w = (watch_ctx_t){st, st->watch_gen, st->ver_max + 1};
    /* Waits for a connection (no deadline): it lives as long as the node. */
    px_ccall_opts_t co = {.flags = PX_CCALL_WAIT_FOR_READY, .endpoint = -1};
    if (px_rpc_stream(l->rpc, SVC "MetaWatch", buf, len, &co, &cbs, w, &st->watch_call) !=
        GT_OK) {
        st->watch_call = NULL;
        free(w);
    }
    st_rm_link_put(st, l);
}

static void r_meta_watch(st_store_t *s, st_meta_cb cb, void *arg)
{
    st_remote_t *st = ST(s);
    pthread_mutex_lock(&st->mu);
    st->watch_gen++;
    st->watch_cb = cb;
    st->watch_arg = arg;
    st->watch_backoff_ms = 0;
    st->n_names = 0; /* a new watcher holds nothing yet */
    px_ccall_t *old = st->watch_call;
    st->watch_call = NULL;
    if (cb)
        watch_open_locked(st);
    pthread_mutex_unlock(&st->mu);
    if (old) {
        px_ccall_cancel(old);
        px_ccall_unref(old);
    }
}

/* ---- open / close ------------------------------------------------------- */

static void r_close(st_store_t *s)
{
    st_remote_t *st = ST(s);
    atomic_store(&st->closing, true);
    /* The owner (st_cluster) stops first: no switch, no hook after this. */
    pthread_mutex_lock(&st->hook_mu);
    void (*on_close)(void *) = st->on_close;
    st->on_not_leader = NULL;
    st->on_close = NULL;
    pthread_mutex_unlock(&st->hook_mu);
    if (on_close)
        on_close(st->hook_ctx);
    pthread_mutex_lock(&st->mu);
    st->watch_cb = NULL;
    st->watch_gen++;
    px_ccall_t *w = st->watch_call;
    st->watch_call = NULL;
    pthread_mutex_unlock(&st->mu);
    if (w) {
        px_ccall_cancel(w);
        px_ccall_unref(w);
    }
    /* Ends every open call: their callbacks run with GT_ESHUTDOWN. */
    pthread_mutex_lock(&st->link_mu);
    rlink_t *l = st->link;
    st->link = NULL;
    if (l && st->has_reaper) {
        atomic_store(&l->dead, true);
        link_put_locked(st, l);
        l = NULL;
    } else if (l) {
        l->refs--;
        while (l->refs > 0)
            pthread_cond_wait(&st->link_cv, &st->link_mu);
    }
    st->reaper_stop = true;
    pthread_cond_broadcast(&st->link_cv);
    pthread_mutex_unlock(&st->link_mu);
    if (l)
        link_free(st, l);
    if (st->has_reaper)
        pthread_join(st->reaper, NULL); /* after every link is freed */
    st_rm_batch_fini(st);
    pthread_mutex_destroy(&st->mu);
    pthread_mutex_destroy(&st->hook_mu);
    pthread_mutex_destroy(&st->link_mu);
    pthread_cond_destroy(&st->link_cv);
    free(st->names);
    free(st);
}

static const st_ops_t remote_ops = {
    .name = "remote",
    .close = r_close,
    .topic_put = r_topic_put,
    .topic_delete = r_topic_delete,
    .topic_get = r_topic_get,
    .group_put = r_group_put,
    .group_delete = r_group_delete,
    .group_get = r_group_get,
    .append = st_rm_append,
    .pop = r_pop,
    .pop_cancel = r_pop_cancel,
    .ack = r_ack,
    .ack_batch = r_ack_batch,
    .change_invisible = r_change_invisible,
    .release = r_release,
    .pull = r_pull,
    .offset_get = r_offset_get,
    .offset_update = r_offset_update,
    .offset_query = r_offset_query,
    .lookup_id = r_lookup_id,
    .lookup_key = r_lookup_key,
    .stats = r_stats,
    .tx_end = r_tx_end,
    .tx_pending = r_tx_pending,
    .tx_checked = r_tx_checked,
    .recall = r_recall,
    .meta_watch = r_meta_watch,
    .append_multi = st_rm_append_multi,
    .purge = r_purge,
    .requeue = r_requeue,
    .meta_put = r_meta_put,
    .meta_del = r_meta_del,
    .meta_list = r_meta_list,
};

static void random_hex(char *out, size_t bytes)
{
    uint8_t b[32];
    size_t got = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t r = read(fd, b, bytes);
        got = r > 0 ? (size_t)r : 0;
        close(fd);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid();
    for (size_t i = got; i < bytes; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        b[i] = (uint8_t)(x >> 56);
    }
    for (size_t i = 0; i < bytes; i++)
        sprintf(out + 2 * i, "%02X", b[i]);
}

static void conv_storage(rop_t *op, gt_err_t err, const ProtobufCMessage *resp)
{
    const Gantry__Store__V1__GetInfoResponse *r = (const void *)resp;
    ((st_remote_storage_cb)op->cb)(op->arg, err, err == GT_OK && r ? r->storage_bytes : 0);
}

void st_remote_storage(st_store_t *s, st_remote_storage_cb cb, void *arg)
{
    Gantry__Store__V1__GetInfoRequest rq = GANTRY__STORE__V1__GET_INFO_REQUEST__INIT;
    /* Not retried: a scrape waits for one answer at most. */
    rop_start(ST(s), SVC "GetInfo", &rq.base, DESC(get_info_response), conv_storage, CB(cb),
              arg, 0, false);
}

static void conv_data_id(rop_t *op, gt_err_t err, const ProtobufCMessage *resp)
{
    const Gantry__Store__V1__GetInfoResponse *r = (const void *)resp;
    ((st_remote_data_id_cb)op->cb)(op->arg, err,
                                   err == GT_OK && r && r->data_id ? r->data_id : "");
}

void st_remote_data_id(st_store_t *s, st_remote_data_id_cb cb, void *arg)
{
    Gantry__Store__V1__GetInfoRequest rq = GANTRY__STORE__V1__GET_INFO_REQUEST__INIT;

    rq.without_storage = true;
    /* Not retried: the asker asks again a moment later. */
    rop_start(ST(s), SVC "GetInfo", &rq.base, DESC(get_info_response), conv_data_id, CB(cb),
              arg, 0, false);
}

/* Start-up: waits for GetInfo. */
typedef struct info_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    grpc_status_code code;
    char engine[64];
    uint32_t version;
} info_wait_t;

static void info_answer(void *arg, grpc_status_code code, const char *details,
                        const uint8_t *resp, size_t len)
{
    info_wait_t *w = arg;
    (void)details;
    pthread_mutex_lock(&w->mu);
    w->code = code;
    if (code == GRPC_STATUS_OK) {
        Gantry__Store__V1__GetInfoResponse *r =
            gantry__store__v1__get_info_response__unpack(NULL, len, resp);
        if (r) {
            snprintf(w->engine, sizeof(w->engine), "%s", r->engine);
            w->version = r->protocol_version;
            gantry__store__v1__get_info_response__free_unpacked(r, NULL);
        }
    }
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Waits up to ms for the current node to answer GetInfo. */
static gt_err_t info_wait(st_remote_t *st, int64_t ms)
{
    info_wait_t w = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    Gantry__Store__V1__GetInfoRequest rq = GANTRY__STORE__V1__GET_INFO_REQUEST__INIT;
    uint8_t buf[16];
    size_t len = gantry__store__v1__get_info_request__pack(&rq, buf);
    px_ccall_opts_t co = {.timeout_ms = ms, .flags = PX_CCALL_WAIT_FOR_READY, .endpoint = -1};
    rlink_t *l = st_rm_link_get(st);
    if (!l)
        return GT_AGAIN;
    gt_err_t rc = px_rpc_unary(l->rpc, SVC "GetInfo", buf, len, &co, info_answer, &w, NULL);
    if (rc != GT_OK) {
        st_rm_link_put(st, l);
        return rc;
    }
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    if (w.code != GRPC_STATUS_OK) {
        rc = w.code == GRPC_STATUS_CANCELLED && atomic_load(&l->dead)
                 ? GT_AGAIN : err_from_status(st, w.code);
        GT_LOG(ERROR, "store", "store node %s does not answer (gRPC status %d)", l->addr,
               (int)w.code);
    } else {
        GT_LOG(INFO, "store", "store node %s: protocol %u, engine %s", l->addr, w.version,
               w.engine);
    }
    st_rm_link_put(st, l);
    return rc;
}

gt_err_t st_remote_wait_ready(st_store_t *s, int64_t ms)
{
    return info_wait(ST(s), ms);
}

gt_err_t st_remote_switch(st_store_t *s, const char *addr)
{
    st_remote_t *st = ST(s);
    rlink_t *nl = NULL;
    if (!st->switchable)
        return GT_EINVAL;
    if (atomic_load(&st->closing))
        return GT_ESHUTDOWN;
    pthread_mutex_lock(&st->link_mu);
    bool same = st->link ? addr && strcmp(st->link->addr, addr) == 0 : addr == NULL;
    pthread_mutex_unlock(&st->link_mu);
    if (same)
        return GT_OK;
    if (addr) {
        gt_err_t rc = link_new(st, addr, &nl);
        if (rc != GT_OK)
            return rc;
    }
    GT_LOG(INFO, "store", "store node: %s", addr ? addr : "none (no leader known)");
    pthread_mutex_lock(&st->link_mu);
    rlink_t *old = st->link;
    st->link = nl;
    if (old)
        atomic_store(&old->dead, true);
    pthread_mutex_unlock(&st->link_mu);
    atomic_store(&st->ab_many_off, false); /* the new node may have it */
    /* The metadata watch moves to the new node (a fresh snapshot); the
     * names the watcher holds are kept, so the snapshot can tell it what
     * went meanwhile. */
    pthread_mutex_lock(&st->mu);
    px_ccall_t *w = st->watch_call;
    st->watch_call = NULL;
    st->watch_gen++;
    st->watch_timer = false;
    st->watch_backoff_ms = 0;
    if (st->watch_cb && !atomic_load(&st->closing))
        watch_open_locked(st);
    pthread_mutex_unlock(&st->mu);
    if (w) {
        px_ccall_cancel(w);
        px_ccall_unref(w);
    }
    if (old)
        st_rm_link_put(st, old); /* the last reference: to the reaper */
    return GT_OK;
}

gt_err_t st_remote_open(const st_remote_config_t *cfg, st_store_t **out)
{
    *out = NULL;
    if (!cfg || (cfg->n_endpoints == 0 && !cfg->switchable))
        return GT_EINVAL;
    st_remote_t *st = calloc(1, sizeof(*st));
    if (!st)
        return GT_ENOMEM;
    st->base.ops = &remote_ops;
    st->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 10000;
    st->retries = cfg->retries >= 0 ? cfg->retries : 3;
    st->switchable = cfg->switchable;
    st->on_not_leader = cfg->on_not_leader;
    st->on_close = cfg->on_close;
    st->hook_ctx = cfg->hook_ctx;
    random_hex(st->client_id, 16);
    /* 16 hex digits of ours, then a counter: 32 like RocketMQ's ids. */
    random_hex(st->id_prefix, 8);
    pthread_mutex_init(&st->mu, NULL);
    pthread_mutex_init(&st->hook_mu, NULL);
    pthread_mutex_init(&st->link_mu, NULL);
    pthread_cond_init(&st->link_cv, NULL);
    st_rm_batch_init(st, cfg);
    /* One node holds all the data (in cluster mode, the replica set's
     * leader): spreading calls over several nodes would split it. */
    if (cfg->n_endpoints > 1)
        GT_LOG(WARN, "store", "%zu store endpoints given; only the first, %s, is used (one "
               "store node; store.mode cluster follows a replicated tier's leader)",
               cfg->n_endpoints, cfg->endpoints[0]);
    st->copts = (px_rpc_client_opts_t){.channels_per_endpoint = cfg->channels_per_endpoint,
                                       .threads = cfg->threads > 0 ? cfg->threads : 2,
                                       .backoff_initial_ms = 100,
                                       .backoff_max_ms = 2000,
                                       .connect_timeout_ms = 1000,
                                       .max_receive_bytes = 1LL << 30,
                                       .after_event = cfg->after_event,
                                       .after_event_ctx = cfg->after_event_ctx};
    gt_err_t rc = GT_OK;
    if (st->switchable) {
        if (pthread_create(&st->reaper, NULL, reaper_main, st) != 0)
            rc = GT_ENOMEM;
        else
            st->has_reaper = true;
    }
    if (rc == GT_OK && cfg->n_endpoints > 0)
        rc = link_new(st, cfg->endpoints[0], &st->link);
    if (rc == GT_OK && cfg->connect_wait_ms > 0 && st->link)
        rc = info_wait(st, cfg->connect_wait_ms);
    if (rc != GT_OK) {
        st->on_close = NULL; /* the caller cleans up its own */
        r_close(&st->base);
        return rc;
    }
    *out = &st->base;
    return GT_OK;
}
