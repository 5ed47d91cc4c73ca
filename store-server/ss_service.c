/* gantry.store.v1.Store: the method table and the operations that are one
 * store call and one answer.  Each handler checks what st.h cannot see
 * (lengths of fixed buffers, enum ranges), takes a call reference and
 * calls the store; the answer comes on the executor (st_exec_open), where
 * the response is packed and sent and the reference dropped.  A store
 * error is the response's err; the gRPC status is OK. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gt_du.h"
#include "gt_log.h"
#include "ss_int.h"

typedef Gantry__Store__V1__Topic ss_pb_topic_t;
typedef Gantry__Store__V1__Group ss_pb_group_t;

/* ---- answers with err only ---- */

static void ss_done(void *arg, gt_err_t err)
{
    px_call_t *call = arg;
    ss_reply_err(call, err);
    px_call_unref(call);
}

static bool ss_name_ok(const char *s)
{
    return s != NULL && s[0] != '\0' && strlen(s) <= ST_NAME_MAX;
}

/* ---- topics and groups ---- */

static void ss_put_topic(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__PutTopicRequest *req = (void *)msg;
    st_topic_t t;

    if (req->topic == NULL || !ss_name_ok(req->topic->name) ||
        (unsigned)req->topic->type > ST_TOPIC_MIXED) {
        ss_reply_err(call, GT_EINVAL);
        return;
    }
    memset(&t, 0, sizeof(t));
    snprintf(t.name, sizeof(t.name), "%s", req->topic->name);
    t.type = (st_topic_type_t)req->topic->type;
    t.queue_count = req->topic->queue_count;
    t.perm = req->topic->perm;
    px_call_ref(call);
    st_topic_put(ss_srv(call)->store, &t, ss_done, call);
}

static void ss_delete_topic(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__DeleteTopicRequest *req = (void *)msg;

    px_call_ref(call);
    st_topic_delete(ss_srv(call)->store, req->name, ss_done, call);
}

static void ss_topics_done(void *arg, gt_err_t err, const st_topic_t *ts,
                           size_t n)
{
    px_call_t *call = arg;
    Gantry__Store__V1__GetTopicsResponse resp =
        GANTRY__STORE__V1__GET_TOPICS_RESPONSE__INIT;
    ss_pb_topic_t *pt = NULL, **pp = NULL;

    if (err == GT_OK && n > 0) {
        pt = calloc(n, sizeof(*pt));
        pp = calloc(n, sizeof(*pp));
        if (pt == NULL || pp == NULL) {
            err = GT_ENOMEM;
            n = 0;
        }
        for (size_t i = 0; i < n; i++) {
            gantry__store__v1__topic__init(&pt[i]);
            pt[i].name = (char *)ts[i].name;
            pt[i].type = (Gantry__Store__V1__TopicType)ts[i].type;
            pt[i].queue_count = ts[i].queue_count;
            pt[i].perm = ts[i].perm;
            pp[i] = &pt[i];
        }
        resp.n_topics = n;
        resp.topics = pp;
    }
    resp.err = (Gantry__Store__V1__ErrorCode)err;
    ss_reply_pb(call, &resp.base);
    free(pt);
    free(pp);
    px_call_unref(call);
}

static void ss_get_topics(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__GetTopicsRequest *req = (void *)msg;

    px_call_ref(call);
    st_topic_get(ss_srv(call)->store, ss_opt(req->name), ss_topics_done, call);
}

static void ss_put_group(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__PutGroupRequest *req = (void *)msg;
    st_group_t g;

    if (req->group == NULL || !ss_name_ok(req->group->name) ||
        (unsigned)req->group->consume_from > ST_CONSUME_FROM_LAST) {
        ss_reply_err(call, GT_EINVAL);
        return;
    }
    memset(&g, 0, sizeof(g));
    snprintf(g.name, sizeof(g.name), "%s", req->group->name);
    g.max_delivery_attempts = req->group->max_delivery_attempts;
    g.fifo = req->group->fifo;
    g.consume_from = (st_consume_from_t)req->group->consume_from;
    if (req->group->retry != NULL) {
        g.retry.initial_ms = req->group->retry->initial_ms;
        g.retry.max_ms = req->group->retry->max_ms;
        g.retry.multiplier = req->group->retry->multiplier;
    }
    px_call_ref(call);
    st_group_put(ss_srv(call)->store, &g, ss_done, call);
}

static void ss_delete_group(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__DeleteGroupRequest *req = (void *)msg;

    px_call_ref(call);
    st_group_delete(ss_srv(call)->store, req->name, ss_done, call);
}

static void ss_groups_done(void *arg, gt_err_t err, const st_group_t *gs,
                           size_t n)
{
    px_call_t *call = arg;
    Gantry__Store__V1__GetGroupsResponse resp =
        GANTRY__STORE__V1__GET_GROUPS_RESPONSE__INIT;
    ss_pb_group_t *pg = NULL, **pp = NULL;
    Gantry__Store__V1__RetryPolicy *pr = NULL;

    if (err == GT_OK && n > 0) {
        pg = calloc(n, sizeof(*pg));
        pp = calloc(n, sizeof(*pp));
        pr = calloc(n, sizeof(*pr));
        if (pg == NULL || pp == NULL || pr == NULL) {
            err = GT_ENOMEM;
            n = 0;
        }
        for (size_t i = 0; i < n; i++) {
            gantry__store__v1__group__init(&pg[i]);
            gantry__store__v1__retry_policy__init(&pr[i]);
            pg[i].name = (char *)gs[i].name;
            pg[i].max_delivery_attempts = gs[i].max_delivery_attempts;
            pg[i].fifo = gs[i].fifo;
            pg[i].consume_from =
                (Gantry__Store__V1__ConsumeFrom)gs[i].consume_from;
            pr[i].initial_ms = gs[i].retry.initial_ms;
            pr[i].max_ms = gs[i].retry.max_ms;
            pr[i].multiplier = gs[i].retry.multiplier;
            pg[i].retry = &pr[i];
            pp[i] = &pg[i];
        }
        resp.n_groups = n;
        resp.groups = pp;
    }
    resp.err = (Gantry__Store__V1__ErrorCode)err;
    ss_reply_pb(call, &resp.base);
    free(pg);
    free(pp);
    free(pr);
    px_call_unref(call);
}

static void ss_get_groups(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__GetGroupsRequest *req = (void *)msg;

    px_call_ref(call);
    st_group_get(ss_srv(call)->store, ss_opt(req->name), ss_groups_done, call);
}

/* ---- deliveries ---- */

static void ss_ack(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__AckRequest *req = (void *)msg;

    px_call_ref(call);
    st_ack(ss_srv(call)->store, req->group, req->topic, req->handle, ss_done,
           call);
}

static void ss_acks_done(void *arg, gt_err_t err, const gt_err_t *errs,
                         size_t n)
{
    px_call_t *call = arg;
    Gantry__Store__V1__AckBatchResponse resp =
        GANTRY__STORE__V1__ACK_BATCH_RESPONSE__INIT;
    Gantry__Store__V1__ErrorCode *codes = NULL;

    if (err == GT_OK && n > 0) {
        if ((codes = malloc(n * sizeof(*codes))) == NULL) {
            err = GT_ENOMEM;
            n = 0;
        }
        for (size_t i = 0; i < n; i++)
            codes[i] = (Gantry__Store__V1__ErrorCode)errs[i];
        resp.n_results = n;
        resp.results = codes;
    }
    resp.err = (Gantry__Store__V1__ErrorCode)err;
    ss_reply_pb(call, &resp.base);
    free(codes);
    px_call_unref(call);
}

static void ss_ack_batch(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__AckBatchRequest *req = (void *)msg;

    px_call_ref(call);
    st_ack_batch(ss_srv(call)->store, req->group, req->topic,
                 (const char *const *)req->handles, req->n_handles,
                 ss_acks_done, call);
}

static void ss_handle_done(void *arg, gt_err_t err, const char *handle)
{
    px_call_t *call = arg;
    Gantry__Store__V1__ChangeInvisibleResponse resp =
        GANTRY__STORE__V1__CHANGE_INVISIBLE_RESPONSE__INIT;

    resp.err = (Gantry__Store__V1__ErrorCode)err;
    resp.handle = (char *)(err == GT_OK && handle != NULL ? handle : "");
    ss_reply_pb(call, &resp.base);
    px_call_unref(call);
}

static void ss_change_invisible(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__ChangeInvisibleRequest *req = (void *)msg;

    px_call_ref(call);
    st_change_invisible(ss_srv(call)->store, req->group, req->topic,
                        req->handle, req->invisible_ms, ss_handle_done, call);
}

static void ss_release(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__ReleaseRequest *req = (void *)msg;

    px_call_ref(call);
    st_release(ss_srv(call)->store, req->group, req->topic, req->handle,
               ss_done, call);
}

/* PurgeResponse and RequeueResponse are alike: err 1, count 2. */
static void ss_count_done(void *arg, gt_err_t err, uint64_t n)
{
    px_call_t *call = arg;
    Gantry__Store__V1__PurgeResponse resp =
        GANTRY__STORE__V1__PURGE_RESPONSE__INIT;

    resp.err = (Gantry__Store__V1__ErrorCode)err;
    resp.count = err == GT_OK ? n : 0;
    ss_reply_pb(call, &resp.base);
    px_call_unref(call);
}

static void ss_purge(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__PurgeRequest *req = (void *)msg;

    px_call_ref(call);
    st_purge(ss_srv(call)->store, req->group, req->topic, ss_count_done, call);
}

static void ss_requeue(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__RequeueRequest *req = (void *)msg;

    px_call_ref(call);
    st_requeue(ss_srv(call)->store, req->group, req->topic, ss_count_done,
               call);
}

/* ---- offsets, lookups, stats ---- */

static void ss_offset_done(void *arg, gt_err_t err, uint64_t off)
{
    px_call_t *call = arg;
    Gantry__Store__V1__OffsetResponse resp =
        GANTRY__STORE__V1__OFFSET_RESPONSE__INIT;

    resp.err = (Gantry__Store__V1__ErrorCode)err;
    resp.offset = err == GT_OK ? off : 0;
    ss_reply_pb(call, &resp.base);
    px_call_unref(call);
}

static void ss_get_offset(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__GetOffsetRequest *req = (void *)msg;

    px_call_ref(call);
    st_offset_get(ss_srv(call)->store, req->group, req->topic, req->queue,
                  ss_offset_done, call);
}

static void ss_update_offset(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__UpdateOffsetRequest *req = (void *)msg;

    px_call_ref(call);
    st_offset_update(ss_srv(call)->store, req->group, req->topic, req->queue,
                     req->offset, ss_done, call);
}

static void ss_query_offset(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__QueryOffsetRequest *req = (void *)msg;

    if ((unsigned)req->kind > ST_OFFSET_TIME) {
        ss_reply_err(call, GT_EINVAL);
        return;
    }
    px_call_ref(call);
    st_offset_query(ss_srv(call)->store, req->topic, req->queue,
                    (st_offset_kind_t)req->kind, req->ts_ms, ss_offset_done,
                    call);
}

static void ss_msgs_done(void *arg, gt_err_t err, const st_message_t *msgs,
                         size_t n, uint64_t next)
{
    px_call_t *call = arg;
    ss_reply_msgs(call, err, msgs, n, next);
    px_call_unref(call);
}

static void ss_lookup_id(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__LookupIdRequest *req = (void *)msg;

    px_call_ref(call);
    st_lookup_id(ss_srv(call)->store, ss_opt(req->topic), req->msg_id,
                 ss_msgs_done, call);
}

static void ss_lookup_key(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__LookupKeyRequest *req = (void *)msg;

    px_call_ref(call);
    st_lookup_key(ss_srv(call)->store, req->topic, req->key, req->max,
                  ss_msgs_done, call);
}

static void ss_stats_done(void *arg, gt_err_t err, const st_stats_t *s)
{
    px_call_t *call = arg;
    Gantry__Store__V1__StatsResponse resp =
        GANTRY__STORE__V1__STATS_RESPONSE__INIT;
    Gantry__Store__V1__QueueStats *q = NULL, **pq = NULL;
    size_t n = err == GT_OK && s != NULL ? s->nqueues : 0;

    if (n > 0) {
        q = calloc(n, sizeof(*q));
        pq = calloc(n, sizeof(*pq));
        if (q == NULL || pq == NULL) {
            err = GT_ENOMEM;
            n = 0;
        }
        for (size_t i = 0; i < n; i++) {
            gantry__store__v1__queue_stats__init(&q[i]);
            q[i].min_offset = s->queues[i].min_offset;
            q[i].max_offset = s->queues[i].max_offset;
            q[i].bytes = s->queues[i].bytes;
            pq[i] = &q[i];
        }
        resp.n_queues = n;
        resp.queues = pq;
    }
    if (err == GT_OK && s != NULL) {
        resp.messages = s->messages;
        resp.bytes = s->bytes;
        resp.ready = s->ready;
        resp.inflight = s->inflight;
        resp.lag = s->lag;
        resp.tx_discarded = s->tx_discarded;
    }
    resp.err = (Gantry__Store__V1__ErrorCode)err;
    ss_reply_pb(call, &resp.base);
    free(q);
    free(pq);
    px_call_unref(call);
}

static void ss_stats(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__StatsRequest *req = (void *)msg;
    st_stats_req_t sr = {.topic = req->topic, .group = ss_opt(req->group),
                         .new_from_first = req->new_from_first};

    px_call_ref(call);
    st_stats_req(ss_srv(call)->store, &sr, ss_stats_done, call);
}

/* ---- transactions, recall ---- */

static void ss_tx_end(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__TxEndRequest *req = (void *)msg;

    px_call_ref(call);
    st_tx_end(ss_srv(call)->store, req->topic, req->msg_id, req->commit,
              ss_done, call);
}

static void ss_tx_pending(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__TxPendingRequest *req = (void *)msg;

    px_call_ref(call);
    st_tx_pending(ss_srv(call)->store, req->unresolved_for_ms, req->max,
                  ss_msgs_done, call);
}

static void ss_tx_checked(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__TxCheckedRequest *req = (void *)msg;

    px_call_ref(call);
    st_tx_checked(ss_srv(call)->store, req->topic, req->msg_id,
                  req->seen_checks == 0 ? ST_TX_CHECKS_ANY : req->seen_checks - 1,
                  req->max_checks, ss_done, call);
}

static void ss_recall(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__RecallRequest *req = (void *)msg;

    px_call_ref(call);
    st_recall(ss_srv(call)->store, req->topic, req->msg_id, ss_done, call);
}

/* ---- durable metadata records ---- */

static bool ss_len_ok(size_t len)
{
    return len <= UINT32_MAX;
}

static void ss_meta_put(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__MetaPutRequest *req = (void *)msg;

    if (!ss_len_ok(req->key.len) || !ss_len_ok(req->value.len)) {
        ss_reply_err(call, GT_EINVAL);
        return;
    }
    px_call_ref(call);
    st_meta_put(ss_srv(call)->store, req->ns, req->key.data,
                (uint32_t)req->key.len, req->value.data,
                (uint32_t)req->value.len, ss_done, call);
}

static void ss_meta_del(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__MetaDelRequest *req = (void *)msg;

    if (!ss_len_ok(req->key.len)) {
        ss_reply_err(call, GT_EINVAL);
        return;
    }
    px_call_ref(call);
    st_meta_del(ss_srv(call)->store, req->ns, req->key.data,
                (uint32_t)req->key.len, ss_done, call);
}

static void ss_meta_list_done(void *arg, gt_err_t err,
                              const st_meta_rec_t *recs, size_t n, bool more)
{
    px_call_t *call = arg;
    Gantry__Store__V1__MetaListResponse resp =
        GANTRY__STORE__V1__META_LIST_RESPONSE__INIT;
    Gantry__Store__V1__MetaRecord *r = NULL, **pr = NULL;

    if (err == GT_OK && n > 0) {
        r = calloc(n, sizeof(*r));
        pr = calloc(n, sizeof(*pr));
        if (r == NULL || pr == NULL) {
            err = GT_ENOMEM;
            n = 0;
        }
        for (size_t i = 0; i < n; i++) {
            gantry__store__v1__meta_record__init(&r[i]);
            r[i].key.data = (uint8_t *)recs[i].key;
            r[i].key.len = recs[i].key_len;
            r[i].value.data = (uint8_t *)recs[i].value;
            r[i].value.len = recs[i].value_len;
            pr[i] = &r[i];
        }
        resp.n_records = n;
        resp.records = pr;
    }
    resp.err = (Gantry__Store__V1__ErrorCode)err;
    resp.more = err == GT_OK && more;
    ss_reply_pb(call, &resp.base);
    free(r);
    free(pr);
    px_call_unref(call);
}

static void ss_meta_list(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__MetaListRequest *req = (void *)msg;
    st_meta_list_req_t lr;

    if (!ss_len_ok(req->prefix.len) || !ss_len_ok(req->after.len)) {
        ss_reply_err(call, GT_EINVAL);
        return;
    }
    memset(&lr, 0, sizeof(lr));
    lr.ns = req->ns;
    lr.prefix = req->prefix.len ? req->prefix.data : NULL;
    lr.prefix_len = (uint32_t)req->prefix.len;
    lr.after = req->after.len ? req->after.data : NULL;
    lr.after_len = (uint32_t)req->after.len;
    lr.max = req->max;
    px_call_ref(call);
    st_meta_list(ss_srv(call)->store, &lr, ss_meta_list_done, call);
}

/* ---- the node ---- */

static void ss_get_info(px_call_t *call, ProtobufCMessage *msg)
{
    const Gantry__Store__V1__GetInfoRequest *req = (const void *)msg;
    Gantry__Store__V1__GetInfoResponse resp =
        GANTRY__STORE__V1__GET_INFO_RESPONSE__INIT;

    resp.data_id = ss_srv(call)->data_id;
    resp.protocol_version = SS_PROTOCOL_VERSION;
    resp.server_version = (char *)GANTRY_VERSION;
    pthread_rwlock_rdlock(&ss_srv(call)->late_lock); /* replication: may change */
    resp.engine = (char *)(ss_srv(call)->engine ? ss_srv(call)->engine : "");
    pthread_rwlock_unlock(&ss_srv(call)->late_lock);
    if (ss_srv(call)->data_dir != NULL && !req->without_storage) {
        resp.storage_bytes = gt_du_bytes(ss_srv(call)->data_dir);
    }
    resp.replica_set = atomic_load(&ss_srv(call)->replica_set);
    px_call_reply_pb(call, &resp.base);
}

/* ---- the table ---- */

#define SS_PATH(m) "/gantry.store.v1.Store/" #m
#define SS_UNARY(m, fn, rq, rs)                                             \
    {.path = SS_PATH(m), .kind = PX_RPC_UNARY, .on_request = fn,            \
     .req_desc = SS_DESC(rq), .resp_desc = SS_DESC(rs), .on_screen = ss_screen}

/* Appends reserve a full-size message at arrival (admission). */
#define SS_RESERVE_APPEND (4LL * 1024 * 1024 + 64 * 1024)

static const px_method_t ss_methods[] = {
    SS_UNARY(GetInfo, ss_get_info, get_info_request, get_info_response),
    SS_UNARY(PutTopic, ss_put_topic, put_topic_request, put_topic_response),
    SS_UNARY(DeleteTopic, ss_delete_topic, delete_topic_request,
             delete_topic_response),
    SS_UNARY(GetTopics, ss_get_topics, get_topics_request, get_topics_response),
    SS_UNARY(PutGroup, ss_put_group, put_group_request, put_group_response),
    SS_UNARY(DeleteGroup, ss_delete_group, delete_group_request,
             delete_group_response),
    SS_UNARY(GetGroups, ss_get_groups, get_groups_request, get_groups_response),
    {.path = SS_PATH(Append), .kind = PX_RPC_UNARY, .on_request = ss_append,
     .req_desc = SS_DESC(append_request), .resp_desc = SS_DESC(append_response),
     .on_screen = ss_screen,
     .reserve_bytes = SS_RESERVE_APPEND},
    {.path = SS_PATH(AppendMulti), .kind = PX_RPC_UNARY,
     .on_request = ss_append_multi, .req_desc = SS_DESC(append_multi_request),
     .resp_desc = SS_DESC(append_multi_response), .on_screen = ss_screen,
     .reserve_bytes = SS_RESERVE_APPEND},
    {.path = SS_PATH(AppendMany), .kind = PX_RPC_UNARY,
     .on_request = ss_append_many, .req_desc = SS_DESC(append_many_request),
     .resp_desc = SS_DESC(append_many_response), .on_screen = ss_screen,
     .reserve_bytes = SS_RESERVE_APPEND},
    {.path = SS_PATH(Pop), .kind = PX_RPC_UNARY, .on_request = ss_pop,
     .on_interrupt = ss_poll_interrupt, .req_desc = SS_DESC(pop_request),
     .on_screen = ss_screen,
     .resp_desc = SS_DESC(pop_response)},
    SS_UNARY(PopCancel, ss_pop_cancel, pop_cancel_request, pop_cancel_response),
    SS_UNARY(Ack, ss_ack, ack_request, ack_response),
    SS_UNARY(AckBatch, ss_ack_batch, ack_batch_request, ack_batch_response),
    SS_UNARY(ChangeInvisible, ss_change_invisible, change_invisible_request,
             change_invisible_response),
    SS_UNARY(Release, ss_release, release_request, release_response),
    SS_UNARY(Purge, ss_purge, purge_request, purge_response),
    SS_UNARY(Requeue, ss_requeue, requeue_request, requeue_response),
    {.path = SS_PATH(Pull), .kind = PX_RPC_UNARY, .on_request = ss_pull,
     .on_interrupt = ss_poll_interrupt, .req_desc = SS_DESC(pull_request),
     .on_screen = ss_screen,
     .resp_desc = SS_DESC(messages_response)},
    SS_UNARY(GetOffset, ss_get_offset, get_offset_request, offset_response),
    SS_UNARY(UpdateOffset, ss_update_offset, update_offset_request,
             update_offset_response),
    SS_UNARY(QueryOffset, ss_query_offset, query_offset_request,
             offset_response),
    SS_UNARY(LookupId, ss_lookup_id, lookup_id_request, messages_response),
    SS_UNARY(LookupKey, ss_lookup_key, lookup_key_request, messages_response),
    SS_UNARY(Stats, ss_stats, stats_request, stats_response),
    SS_UNARY(TxEnd, ss_tx_end, tx_end_request, tx_end_response),
    SS_UNARY(TxPending, ss_tx_pending, tx_pending_request, messages_response),
    SS_UNARY(TxChecked, ss_tx_checked, tx_checked_request, tx_checked_response),
    SS_UNARY(Recall, ss_recall, recall_request, recall_response),
    {.path = SS_PATH(MetaWatch), .kind = PX_RPC_SERVER_STREAM,
     .on_request = ss_meta_watch, .on_interrupt = ss_meta_watch_interrupt,
     .req_desc = SS_DESC(meta_watch_request),
     .resp_desc = SS_DESC(meta_watch_response)},
    SS_UNARY(MetaPut, ss_meta_put, meta_put_request, meta_put_response),
    SS_UNARY(MetaDel, ss_meta_del, meta_del_request, meta_del_response),
    SS_UNARY(MetaList, ss_meta_list, meta_list_request, meta_list_response),
};

/* Replication: a store RPC on a node that is not the leader is refused
 * (UNAVAILABLE "not leader"; the client finds the leader again).  The
 * read lock keeps the engine open while the handler starts its call. */
static void ss_guard(px_call_t *call, ProtobufCMessage *req)
{
    ss_srv_t *s = ss_srv(call);
    const px_method_t *orig = px_call_method_entry(call)->data;

    if (s->repl == NULL) {
        orig->on_request(call, req);
        return;
    }
    pthread_rwlock_rdlock(&s->late_lock);
    if (s->store == NULL || !ss_repl_serving(s->repl)) {
        pthread_rwlock_unlock(&s->late_lock);
        px_call_finish(call, GRPC_STATUS_UNAVAILABLE, "not leader");
        return;
    }
    orig->on_request(call, req);
    pthread_rwlock_unlock(&s->late_lock);
}

#define SS_NMETHODS (sizeof(ss_methods) / sizeof(ss_methods[0]))
static px_method_t ss_guarded[SS_NMETHODS];
static pthread_once_t ss_guarded_once = PTHREAD_ONCE_INIT;

static void ss_guarded_init(void)
{
    for (size_t i = 0; i < SS_NMETHODS; i++) {
        ss_guarded[i] = ss_methods[i];
        if (ss_methods[i].on_request != ss_get_info) {
            ss_guarded[i].on_request = ss_guard;
            ss_guarded[i].data = &ss_methods[i];
        }
    }
}

static const px_method_t ss_fetch_method = {
    .path = SS_PATH(ReplicaFetch), .kind = PX_RPC_UNARY,
    .on_request = ss_repl_fetch, .req_desc = SS_DESC(replica_fetch_request),
    .resp_desc = SS_DESC(replica_fetch_response), .on_screen = ss_screen};
static const px_method_t ss_stream_method = {
    .path = SS_PATH(ReplicaStream), .kind = PX_RPC_BIDI_STREAM,
    .on_request = ss_repl_stream, .req_desc = SS_DESC(replica_fetch_request),
    .resp_desc = SS_DESC(replica_fetch_response), .on_screen = ss_screen};

gt_err_t ss_service_register(px_method_table_t *t)
{
    gt_err_t rc;

    pthread_once(&ss_guarded_once, ss_guarded_init);
    for (size_t i = 0; i < SS_NMETHODS; i++)
        if ((rc = px_method_table_add(t, &ss_guarded[i])) != GT_OK)
            return rc;
    if ((rc = px_method_table_add(t, &ss_fetch_method)) != GT_OK)
        return rc;
    return px_method_table_add(t, &ss_stream_method);
}
