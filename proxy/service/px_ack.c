/* AckMessage, ChangeInvisibleDuration and ForwardMessageToDeadLetterQueue.
 *
 * Acks are per entry: each receipt handle gets its own status (an expired,
 * superseded or unknown handle is INVALID_RECEIPT_HANDLE) and the top-level
 * status is their common code or MULTIPLE_RESULTS.  The entries go to the
 * store as one st_ack_batch(), whose one answer (a result per entry)
 * sends the reply. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt_log.h"
#include "px_svc_int.h"

#define PX_DESC(x) (&apache__rocketmq__v2__##x##__descriptor)

static px_code_t px_handle_code(gt_err_t err)
{
    if (err == GT_EINVAL)
        return PX_CODE(INVALID_RECEIPT_HANDLE);
    return px_code_from_err(err);
}

/* Checks group and topic of an ack-like request; answers and returns
 * false on failure. */
static bool px_ack_target(px_call_t *call, const ProtobufCMessageDescriptor *rd,
                          const Apache__Rocketmq__V2__Resource *group,
                          const Apache__Rocketmq__V2__Resource *topic)
{
    char why[256];
    px_code_t code;
    st_topic_t t;
    st_group_t g;

    if ((code = px_check_group(group, why, sizeof(why))) != PX_CODE(OK) ||
        (code = px_check_topic(topic, why, sizeof(why))) != PX_CODE(OK)) {
        px_reply_status(call, rd, code, why);
        return false;
    }
    return px_group_or_reply(call, rd, group->name, &g) &&
           px_topic_or_reply(call, rd, topic->name, &t);
}

/* ---- AckMessage ---- */

_Static_assert(PX_MAX_ACK_ENTRIES <= ST_ACK_MAX,
               "an AckMessage's entries fit one st_ack_batch()");

typedef struct px_ack_ctx {
    px_call_t *call;
    Apache__Rocketmq__V2__AckMessageRequest *req;
    char client_id[128];
    const char **handles;       /* into cur, for st_ack_batch() */
    char (*cur)[ST_HANDLE_MAX]; /* the store's handle for each entry */
} px_ack_ctx_t;

/* errs: one result per entry (borrowed). */
static void px_ack_reply(px_ack_ctx_t *ctx, const gt_err_t *errs)
{
    size_t n = ctx->req->n_entries;
    Apache__Rocketmq__V2__AckMessageResponse resp =
        APACHE__ROCKETMQ__V2__ACK_MESSAGE_RESPONSE__INIT;
    Apache__Rocketmq__V2__Status top;
    Apache__Rocketmq__V2__AckMessageResultEntry *ents = calloc(n, sizeof(*ents));
    Apache__Rocketmq__V2__AckMessageResultEntry **ep = calloc(n, sizeof(*ep));
    Apache__Rocketmq__V2__Status *sts = calloc(n, sizeof(*sts));
    px_code_t topc = PX_CODE(OK);

    if (ents == NULL || ep == NULL || sts == NULL) {
        px_reply_status(ctx->call, PX_DESC(ack_message_response),
                        PX_CODE(INTERNAL_SERVER_ERROR), "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const Apache__Rocketmq__V2__AckMessageEntry *e = ctx->req->entries[i];
        px_code_t c = px_handle_code(errs[i]);
        apache__rocketmq__v2__ack_message_result_entry__init(&ents[i]);
        px_status_set(&sts[i], c, c == PX_CODE(OK) ? "OK"
                      : c == PX_CODE(INVALID_RECEIPT_HANDLE)
                          ? "invalid receipt handle (expired, superseded or unknown)"
                          : gt_err_str(errs[i]));
        ents[i].status = &sts[i];
        ents[i].message_id = e->message_id;
        ents[i].receipt_handle = e->receipt_handle;
        ep[i] = &ents[i];
        if (i == 0)
            topc = c;
        else if (c != topc)
            topc = PX_CODE(MULTIPLE_RESULTS);
    }
    px_status_set(&top, topc, topc == PX_CODE(OK) ? "OK" : sts[0].message);
    resp.status = &top;
    resp.n_entries = n;
    resp.entries = ep;
    px_call_reply_pb(ctx->call, &resp.base);
out:
    free(ents);
    free(ep);
    free(sts);
}

static void px_ack_free(px_ack_ctx_t *ctx)
{
    free(ctx->handles);
    free(ctx->cur);
    free(ctx);
}

static void px_acks_done(void *arg, gt_err_t err, const gt_err_t *errs,
                         size_t n)
{
    px_ack_ctx_t *ctx = arg;
    size_t want = ctx->req->n_entries;
    gt_err_t *all = NULL;

    if (err != GT_OK || n != want) {
        /* the request as a whole failed: every entry gets its error */
        if ((all = malloc(want * sizeof(*all))) != NULL)
            for (size_t i = 0; i < want; i++)
                all[i] = err != GT_OK ? err : GT_EIO;
        errs = all;
    }
    if (errs != NULL) {
        /* ctx->handles is done with: it lists the acked ones now */
        for (size_t i = 0; i < want; i++)
            ctx->handles[i] = errs[i] == GT_OK
                                  ? ctx->req->entries[i]->receipt_handle : NULL;
        px_client_release_n(px_svc(ctx->call), ctx->client_id,
                            ctx->handles, want);
        px_trace_acked(px_svc(ctx->call), ctx->call, ctx->req, errs);
        px_ack_reply(ctx, errs);
    } else {
        px_reply_status(ctx->call, PX_DESC(ack_message_response),
                        PX_CODE(INTERNAL_SERVER_ERROR), "out of memory");
    }
    free(all);
    px_call_unref(ctx->call);
    px_request_free(&ctx->req->base);
    px_ack_free(ctx);
}

void px_ack_message(px_call_t *call, ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *rd = PX_DESC(ack_message_response);
    Apache__Rocketmq__V2__AckMessageRequest *req =
        (Apache__Rocketmq__V2__AckMessageRequest *)msg;
    px_ack_ctx_t *ctx;
    size_t n;

    if (!px_require_client(call, rd))
        return;
    if (!px_ack_target(call, rd, req->group, req->topic))
        return;
    n = req->n_entries;
    if (n == 0 || n > PX_MAX_ACK_ENTRIES) {
        px_reply_status(call, rd, PX_CODE(BAD_REQUEST),
                        n ? "too many entries (at most " PX_STR(PX_MAX_ACK_ENTRIES) ")"
                          : "no entry to acknowledge");
        return;
    }
    ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL || (ctx->handles = calloc(n, sizeof(*ctx->handles))) == NULL ||
        (ctx->cur = calloc(n, sizeof(*ctx->cur))) == NULL) {
        if (ctx != NULL)
            px_ack_free(ctx);
        px_reply_status(call, rd, PX_CODE(INTERNAL_SERVER_ERROR), "out of memory");
        return;
    }
    ctx->call = call;
    ctx->req = req;
    px_keep_request(call);
    snprintf(ctx->client_id, sizeof(ctx->client_id), "%s", px_client_id(call));
    px_call_ref(call);
    for (size_t i = 0; i < n; i++)
        ctx->handles[i] = req->entries[i]->receipt_handle;
    px_client_current_n(px_svc(call), ctx->client_id, ctx->handles, n,
                        ctx->cur);
    for (size_t i = 0; i < n; i++)
        ctx->handles[i] = ctx->cur[i];
    st_ack_batch(px_svc(call)->store, req->group->name, req->topic->name,
                 ctx->handles, n, px_acks_done, ctx);
}

/* ---- ChangeInvisibleDuration ---- */

typedef struct px_chg_ctx {
    px_call_t *call;
    Apache__Rocketmq__V2__ChangeInvisibleDurationRequest *req;
    char client_id[128];
} px_chg_ctx_t;

static void px_chg_done(void *arg, gt_err_t err, const char *handle)
{
    px_chg_ctx_t *ctx = arg;
    Apache__Rocketmq__V2__ChangeInvisibleDurationResponse resp =
        APACHE__ROCKETMQ__V2__CHANGE_INVISIBLE_DURATION_RESPONSE__INIT;
    Apache__Rocketmq__V2__Status st;
    px_code_t code = err == GT_OK ? PX_CODE(OK) : px_handle_code(err);

    px_trace_nacked(px_svc(ctx->call), ctx->call, ctx->req, err);
    px_status_set(&st, code, code == PX_CODE(OK) ? "OK"
                  : code == PX_CODE(INVALID_RECEIPT_HANDLE)
                      ? "invalid receipt handle (expired, superseded or unknown)"
                      : gt_err_str(err));
    resp.status = &st;
    /* Always a handle: the new one, or the old one on error. */
    resp.receipt_handle = err == GT_OK && handle != NULL
                              ? (char *)handle : ctx->req->receipt_handle;
    if (err == GT_OK && handle != NULL) {
        px_svc_t *svc = px_svc(ctx->call);
        px_client_release(svc, ctx->client_id, ctx->req->receipt_handle);
        px_client_hold(svc, ctx->client_id, ctx->req->group->name,
                       ctx->req->topic->name, handle, false,
                       px_duration_ms(ctx->req->invisible_duration));
    }
    px_call_reply_pb(ctx->call, &resp.base);
    px_call_unref(ctx->call);
    px_request_free(&ctx->req->base);
    free(ctx);
}

void px_change_invisible(px_call_t *call, ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *rd = PX_DESC(change_invisible_duration_response);
    Apache__Rocketmq__V2__ChangeInvisibleDurationRequest *req =
        (Apache__Rocketmq__V2__ChangeInvisibleDurationRequest *)msg;
    Apache__Rocketmq__V2__ChangeInvisibleDurationResponse resp =
        APACHE__ROCKETMQ__V2__CHANGE_INVISIBLE_DURATION_RESPONSE__INIT;
    Apache__Rocketmq__V2__Status st;
    px_chg_ctx_t *ctx;
    int64_t ms;
    char why[160], cur[ST_HANDLE_MAX];

    if (!px_require_client(call, rd))
        return;
    if (!px_ack_target(call, rd, req->group, req->topic))
        return;
    ms = px_duration_ms(req->invisible_duration);
    if (req->invisible_duration == NULL || ms < 0 || ms > PX_MAX_INVISIBLE_MS) {
        snprintf(why, sizeof(why), "invisible duration %lld ms is outside [0, %lld]",
                 (long long)ms, (long long)PX_MAX_INVISIBLE_MS);
        px_status_set(&st, PX_CODE(ILLEGAL_INVISIBLE_TIME), why);
        resp.status = &st;
        resp.receipt_handle = req->receipt_handle;
        px_call_reply_pb(call, &resp.base);
        return;
    }
    if ((ctx = calloc(1, sizeof(*ctx))) == NULL) {
        px_reply_status(call, rd, PX_CODE(INTERNAL_SERVER_ERROR), "out of memory");
        return;
    }
    ctx->call = call;
    ctx->req = req;
    px_keep_request(call);
    snprintf(ctx->client_id, sizeof(ctx->client_id), "%s", px_client_id(call));
    px_call_ref(call);
    /* 0 (a push consumer's immediate nack) means visible right away; the
     * store wants a positive duration, and 1 ms is that. */
    px_client_current(px_svc(call), ctx->client_id, req->receipt_handle, cur);
    st_change_invisible(px_svc(call)->store, req->group->name, req->topic->name,
                        cur, ms > 0 ? ms : 1, px_chg_done, ctx);
}

/* ---- ForwardMessageToDeadLetterQueue ---- */

typedef struct px_fwd_ctx {
    px_call_t *call;
    Apache__Rocketmq__V2__ForwardMessageToDeadLetterQueueRequest *req;
    char dlq[ST_NAME_MAX + 1];
    char cur[ST_HANDLE_MAX];
    st_topic_t dlq_topic; /* when it has to be created first */
} px_fwd_ctx_t;

static void px_fwd_finish(px_fwd_ctx_t *ctx, px_code_t code, const char *why)
{
    px_trace_forwarded(px_svc(ctx->call), ctx->call, ctx->req, code);
    px_reply_status(ctx->call, PX_DESC(forward_message_to_dead_letter_queue_response),
                    code, why);
    px_call_unref(ctx->call);
    px_request_free(&ctx->req->base);
    free(ctx);
}

static void px_fwd_acked(void *arg, gt_err_t err)
{
    px_fwd_ctx_t *ctx = arg;
    if (err == GT_OK)
        px_client_release(px_svc(ctx->call), px_client_id(ctx->call),
                          ctx->req->receipt_handle);
    /* Already in the DLQ: a stale handle only means the original will be
     * redelivered, which the client then forwards again (at least once). */
    px_fwd_finish(ctx, err == GT_OK ? PX_CODE(OK) : px_handle_code(err),
                  err == GT_OK ? "OK" : "message copied to the DLQ, but the "
                                        "receipt handle is no longer valid");
}

static void px_fwd_appended(void *arg, gt_err_t err, const st_append_item_t *items,
                            size_t n)
{
    px_fwd_ctx_t *ctx = arg;
    (void)items;
    (void)n;
    if (err != GT_OK) {
        px_fwd_finish(ctx, px_code_from_err(err), gt_err_str(err));
        return;
    }
    st_ack(px_svc(ctx->call)->store, ctx->req->group->name, ctx->req->topic->name,
           ctx->cur, px_fwd_acked, ctx);
}

static void px_fwd_found(void *arg, gt_err_t err, const st_message_t *msgs,
                         size_t n, uint64_t next)
{
    px_fwd_ctx_t *ctx = arg;
    st_message_t m;
    (void)next;

    if (err != GT_OK || n == 0) {
        px_fwd_finish(ctx, err == GT_OK ? PX_CODE(MESSAGE_NOT_FOUND) : px_code_from_err(err),
                      "message not found");
        return;
    }
    m = msgs[0];
    if (m.nprops + 2 <= ST_MAX_PROPS) {
        m.props[m.nprops++] = (st_prop_t){"ORIGIN_MESSAGE_ID", m.msg_id};
        m.props[m.nprops++] = (st_prop_t){"RETRY_TOPIC", ctx->req->topic->name};
    }
    m.queue_id = ST_QUEUE_ANY;
    m.delivery_ts_ms = 0;
    st_append(px_svc(ctx->call)->store, ctx->dlq, &m, 1, px_fwd_appended, ctx);
}

static void px_fwd_lookup(px_fwd_ctx_t *ctx)
{
    st_lookup_id(px_svc(ctx->call)->store, ctx->req->topic->name,
                 ctx->req->message_id, px_fwd_found, ctx);
}

static void px_fwd_dlq_ready(void *arg, gt_err_t err)
{
    px_fwd_ctx_t *ctx = arg;

    if (err != GT_OK) {
        px_fwd_finish(ctx, px_code_from_err(err), gt_err_str(err));
        return;
    }
    px_meta_learn_topic(px_svc(ctx->call), &ctx->dlq_topic);
    px_fwd_lookup(ctx);
}

void px_forward_dlq(px_call_t *call, ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *rd =
        PX_DESC(forward_message_to_dead_letter_queue_response);
    Apache__Rocketmq__V2__ForwardMessageToDeadLetterQueueRequest *req =
        (Apache__Rocketmq__V2__ForwardMessageToDeadLetterQueueRequest *)msg;
    px_fwd_ctx_t *ctx;

    if (!px_require_client(call, rd))
        return;
    if (!px_ack_target(call, rd, req->group, req->topic))
        return;
    if (req->message_id == NULL || req->message_id[0] == '\0') {
        px_reply_status(call, rd, PX_CODE(ILLEGAL_MESSAGE_ID), "message id is required");
        return;
    }
    if ((ctx = calloc(1, sizeof(*ctx))) == NULL ||
        st_dlq_topic_name(req->group->name, ctx->dlq, sizeof(ctx->dlq)) != GT_OK) {
        free(ctx);
        px_reply_status(call, rd, PX_CODE(INTERNAL_SERVER_ERROR), "cannot forward");
        return;
    }
    ctx->call = call;
    ctx->req = req;
    px_keep_request(call);
    px_client_current(px_svc(call), px_client_id(call), req->receipt_handle, ctx->cur);
    px_call_ref(call);
    /* Chain: [create the DLQ topic,] look the message up, append its copy
     * to the DLQ, ack the original.  The store creates %DLQ% topics on
     * demand for its own moves, not for this one. */
    if (px_topic_find(px_svc(call), ctx->dlq, &ctx->dlq_topic) == GT_OK) {
        px_fwd_lookup(ctx);
        return;
    }
    memset(&ctx->dlq_topic, 0, sizeof(ctx->dlq_topic));
    snprintf(ctx->dlq_topic.name, sizeof(ctx->dlq_topic.name), "%s", ctx->dlq);
    ctx->dlq_topic.type = ST_TOPIC_NORMAL;
    ctx->dlq_topic.queue_count = 1;
    ctx->dlq_topic.perm = ST_PERM_READ | ST_PERM_WRITE;
    st_topic_put(px_svc(call)->store, &ctx->dlq_topic, px_fwd_dlq_ready, ctx);
}
