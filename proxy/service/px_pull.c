/* Pull consumers and offsets: PullMessage, UpdateOffset, GetOffset,
 * QueryOffset (upstream leaves these unimplemented; lag exporters and
 * autoscalers need them).
 *
 * PullMessage reads a queue from an offset without touching consumption
 * state; the stream is `status`, one response per message, `next_offset`.
 * The filter (tag or SQL92) travels to the store, which steps over
 * non-matching messages and still advances next_offset past them.
 * With a long_polling_timeout (clamped into the call's deadline) a pull
 * that finds nothing at the end of its queue waits in the store for a
 * message, as RocketMQ's pull consumers long-poll; an empty answer is
 * MESSAGE_NOT_FOUND with the unchanged next_offset.  A client that goes
 * away cancels its parked pull (st_pop_cancel). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt_log.h"
#include "gt_text.h"
#include "px_svc_int.h"

#define PX_DESC(x) (&apache__rocketmq__v2__##x##__descriptor)

/* Common checks of (group?, queue): answers `rd` and returns false on
 * failure; fills t and the queue id. */
static bool px_queue_target(px_call_t *call, const ProtobufCMessageDescriptor *rd,
                            const Apache__Rocketmq__V2__Resource *group,
                            const Apache__Rocketmq__V2__MessageQueue *mq,
                            st_topic_t *t, uint32_t *queue)
{
    char why[256];
    px_code_t code;
    st_group_t g;

    if (group != NULL || rd != PX_DESC(query_offset_response)) {
        if ((code = px_check_group(group, why, sizeof(why))) != PX_CODE(OK)) {
            px_reply_status(call, rd, code, why);
            return false;
        }
    }
    if ((code = px_check_topic(mq != NULL ? mq->topic : NULL, why, sizeof(why))) !=
        PX_CODE(OK)) {
        px_reply_status(call, rd, code, why);
        return false;
    }
    if ((group != NULL && !px_group_or_reply(call, rd, group->name, &g)) ||
        !px_topic_or_reply(call, rd, mq->topic->name, t))
        return false;
    if (mq->id < 0 || (uint32_t)mq->id >= t->queue_count) {
        snprintf(why, sizeof(why), "queue %d does not exist (topic has %u)", mq->id,
                 t->queue_count);
        px_reply_status(call, rd, PX_CODE(BAD_REQUEST), why);
        return false;
    }
    *queue = (uint32_t)mq->id;
    return true;
}

/* ---- PullMessage ---- */

/* Time kept back from the client's deadline to deliver the answer. */
#define PX_PULL_MARGIN_MS 500
/* Cancel keys: unique per process, apart from ReceiveMessage's. */
#define PX_PULL_KEY_BIT (1ull << 63)
static _Atomic uint64_t px_pull_keys;

/* A pull in the store.  `call` is guarded by svc->recv_mu: NULL once the
 * call was detached (cancelled or server stopping) before the answer. */
typedef struct px_pull_ctx {
    px_svc_t *svc;
    px_call_t *call;
    uint64_t cancel_key;
    char topic[ST_NAME_MAX + 1];
    char group[ST_NAME_MAX + 1];
    char ns[128];
    char store_host[128];
    st_pull_req_t pr;     /* topic and filter_expr point into this ctx */
    char *filter_expr;    /* owned copy */
    uint64_t lo;          /* the queue's first offset, once known */
} px_pull_ctx_t;

static void px_pull_ctx_free(px_pull_ctx_t *ctx)
{
    free(ctx->filter_expr);
    free(ctx);
}

/* Detaches ctx from its call: the call (still referenced) or NULL when the
 * interrupt side took it. */
static px_call_t *px_pull_detach(px_pull_ctx_t *ctx)
{
    px_call_t *call;

    pthread_mutex_lock(&ctx->svc->recv_mu);
    call = ctx->call;
    if (call != NULL) {
        px_call_set_user(call, NULL);
        ctx->call = NULL;
    }
    pthread_mutex_unlock(&ctx->svc->recv_mu);
    return call;
}

/* True while the call is still attached (read under recv_mu). */
static bool px_pull_attached(px_pull_ctx_t *ctx)
{
    bool on;

    pthread_mutex_lock(&ctx->svc->recv_mu);
    on = ctx->call != NULL;
    pthread_mutex_unlock(&ctx->svc->recv_mu);
    return on;
}

/* The call went away while the store had the pull: nothing to answer. */
static void px_pull_gone(px_pull_ctx_t *ctx)
{
    GT_LOG(DEBUG, "svc", "pull on %s: the store answered after the call went "
           "away", ctx->topic);
    px_pull_ctx_free(ctx);
}

static void px_pull_status(px_call_t *call, px_code_t code, const char *why)
{
    px_reply_status(call, PX_DESC(pull_message_response), code, why);
}

static void px_pull_done(void *arg, gt_err_t err, const st_message_t *msgs,
                         size_t n, uint64_t next)
{
    px_pull_ctx_t *ctx = arg;
    Apache__Rocketmq__V2__PullMessageResponse resp =
        APACHE__ROCKETMQ__V2__PULL_MESSAGE_RESPONSE__INIT;
    Apache__Rocketmq__V2__Status st;
    px_msg_view_t *v = NULL;
    px_call_t *call = px_pull_detach(ctx);

    if (call == NULL) { /* the interrupt side took the call */
        px_pull_gone(ctx);
        return;
    }
    ctx->call = call;

    if (err != GT_OK) {
        px_pull_status(ctx->call, px_code_from_err(err), gt_err_str(err));
        goto out;
    }
    px_status_set(&st, n ? PX_CODE(OK) : PX_CODE(MESSAGE_NOT_FOUND),
                  n ? "OK" : "no matching message at this offset");
    resp.content_case = APACHE__ROCKETMQ__V2__PULL_MESSAGE_RESPONSE__CONTENT_STATUS;
    resp.status = &st;
    px_call_send_pb(ctx->call, &resp.base);
    if (n > 0 && (v = malloc(sizeof(*v))) != NULL) {
        for (size_t i = 0; i < n; i++) {
            px_msg_view_build(v, &msgs[i], ctx->topic, ctx->ns, ctx->store_host,
                              NULL, 1, 0);
            resp.content_case = APACHE__ROCKETMQ__V2__PULL_MESSAGE_RESPONSE__CONTENT_MESSAGE;
            resp.message = &v->msg;
            px_call_send_pb(ctx->call, &resp.base);
        }
    }
    if (ctx->svc->metrics != NULL) {
        uint64_t bytes = 0;
        for (size_t i = 0; i < n; i++)
            bytes += msgs[i].body_len;
        px_metrics_out(ctx->svc->metrics, ctx->topic, ctx->group, n, bytes);
    }
    resp.content_case = APACHE__ROCKETMQ__V2__PULL_MESSAGE_RESPONSE__CONTENT_NEXT_OFFSET;
    resp.next_offset = (int64_t)next;
    px_call_send_pb(ctx->call, &resp.base);
    px_call_finish(ctx->call, GRPC_STATUS_OK, NULL);
out:
    free(v);
    px_call_unref(ctx->call);
    px_pull_ctx_free(ctx);
}

/* The pull's offset check, a chain of two store answers before the pull:
 * the queue's first offset, then its end; an offset outside is
 * ILLEGAL_OFFSET.  The call may be interrupted at any step. */
static void px_pull_hi(void *arg, gt_err_t err, uint64_t hi)
{
    px_pull_ctx_t *ctx = arg;
    px_call_t *call;
    char why[200];

    if (!px_pull_attached(ctx)) { /* interrupted: nothing more to ask */
        px_pull_gone(ctx);
        return;
    }
    if (err == GT_OK && ctx->pr.offset >= ctx->lo && ctx->pr.offset <= hi) {
        st_pull(ctx->svc->store, &ctx->pr, px_pull_done, ctx);
        return;
    }
    if ((call = px_pull_detach(ctx)) != NULL) {
        snprintf(why, sizeof(why), "offset %llu is outside [%llu, %llu]",
                 (unsigned long long)ctx->pr.offset, (unsigned long long)ctx->lo,
                 (unsigned long long)(err == GT_OK ? hi : 0));
        px_pull_status(call, PX_CODE(ILLEGAL_OFFSET), why);
        px_call_unref(call);
    }
    px_pull_ctx_free(ctx);
}

static void px_pull_lo(void *arg, gt_err_t err, uint64_t lo)
{
    px_pull_ctx_t *ctx = arg;

    if (!px_pull_attached(ctx)) { /* interrupted: nothing more to ask */
        px_pull_gone(ctx);
        return;
    }
    ctx->lo = err == GT_OK ? lo : UINT64_MAX;
    st_offset_query(ctx->svc->store, ctx->topic, ctx->pr.queue, ST_OFFSET_END, 0,
                    px_pull_hi, ctx);
}

void px_pull_message(px_call_t *call, ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *rd = PX_DESC(pull_message_response);
    Apache__Rocketmq__V2__PullMessageRequest *req =
        (Apache__Rocketmq__V2__PullMessageRequest *)msg;
    px_pull_ctx_t *ctx;
    st_filter_kind_t kind = ST_FILTER_TAG;
    uint32_t queue;
    st_topic_t t;
    char why[200];
    px_code_t code;
    bool sql;
    px_interrupt_t missed;

    if (!px_require_client(call, rd))
        return;
    if (!px_queue_target(call, rd, req->group, req->message_queue, &t, &queue))
        return;
    if ((code = px_check_filter(req->filter_expression, &sql, why, sizeof(why))) !=
        PX_CODE(OK)) {
        px_pull_status(call, code, why);
        return;
    }
    if (sql)
        kind = ST_FILTER_SQL92;
    if (req->offset < 0) {
        snprintf(why, sizeof(why), "offset %lld is negative", (long long)req->offset);
        px_pull_status(call, PX_CODE(ILLEGAL_OFFSET), why);
        return;
    }
    if ((ctx = calloc(1, sizeof(*ctx))) == NULL) {
        px_pull_status(call, PX_CODE(INTERNAL_SERVER_ERROR), "out of memory");
        return;
    }
    ctx->svc = px_svc(call);
    ctx->call = call;
    ctx->cancel_key = PX_PULL_KEY_BIT | (atomic_fetch_add(&px_pull_keys, 1) + 1);
    snprintf(ctx->topic, sizeof(ctx->topic), "%s", t.name);
    snprintf(ctx->group, sizeof(ctx->group), "%s", req->group->name);
    gt_utf8_copy(ctx->ns, sizeof(ctx->ns), req->message_queue->topic->resource_namespace);
    gt_utf8_copy(ctx->store_host, sizeof(ctx->store_host), px_authority_text(call));
    ctx->pr.topic = ctx->topic;
    ctx->pr.queue = queue;
    ctx->pr.offset = (uint64_t)req->offset;
    ctx->pr.max = req->batch_size > 0 && req->batch_size < ST_POP_MAX
                      ? (uint32_t)req->batch_size : ST_POP_MAX;
    ctx->pr.filter_kind = kind;
    if (req->filter_expression != NULL && req->filter_expression->expression != NULL &&
        (ctx->filter_expr = strdup(req->filter_expression->expression)) == NULL) {
        px_pull_ctx_free(ctx);
        px_pull_status(call, PX_CODE(INTERNAL_SERVER_ERROR), "out of memory");
        return;
    }
    ctx->pr.filter_expr = ctx->filter_expr;
    if (req->long_polling_timeout != NULL) {
        int64_t lp = px_duration_ms(req->long_polling_timeout);
        int64_t left = px_call_deadline_left_ms(call) - PX_PULL_MARGIN_MS;
        lp = lp > left ? left : lp;
        lp = lp > ST_POLL_MAX_MS ? ST_POLL_MAX_MS : lp;
        ctx->pr.poll_timeout_ms = lp > 0 ? lp : 0;
    }
    ctx->pr.cancel_key = ctx->cancel_key;
    px_call_ref(call);
    px_test_late_attach(ctx->svc, call, "pull");
    /* px_pull_interrupt reads it under recv_mu, maybe on another worker */
    pthread_mutex_lock(&ctx->svc->recv_mu);
    px_call_set_user(call, ctx);
    pthread_mutex_unlock(&ctx->svc->recv_mu);
    /* The range check first (px_pull_lo, px_pull_hi), then the pull. */
    st_offset_query(ctx->svc->store, t.name, queue, ST_OFFSET_BEGIN, 0,
                    px_pull_lo, ctx);
    /* A cancel or shutdown notice that came before the attachment found
     * nothing to end: do it now, or the pull would park for its whole long
     * poll (a stop would wait for it until its shutdown bound). */
    missed = px_call_missed_interrupt(call);
    if (missed != 0)
        px_pull_interrupt(call, missed);
}

void px_pull_interrupt(px_call_t *call, px_interrupt_t why)
{
    px_svc_t *svc = px_svc(call);
    px_pull_ctx_t *ctx;
    uint64_t key = 0;

    if (why == PX_INTERRUPT_CLOSED)
        return;
    /* Cancelled or stopping: drop the pull's reference now so the call is
     * freed at once and the server can stop; the store ends the parked
     * pull (px_pull_done then finds no call and only frees ctx). */
    pthread_mutex_lock(&svc->recv_mu);
    ctx = px_call_user(call);
    if (ctx != NULL && ctx->call == call) {
        ctx->call = NULL;
        px_call_set_user(call, NULL);
        key = ctx->cancel_key;
    }
    px_test_interrupted(svc, call);
    pthread_mutex_unlock(&svc->recv_mu);
    if (key == 0)
        return;
    st_pop_cancel(svc->store, key);
    if (why == PX_INTERRUPT_SHUTDOWN)
        px_call_finish(call, GRPC_STATUS_UNAVAILABLE, "server shutting down");
    px_call_unref(call);
}

/* ---- offsets ----
 * Each offset RPC is one store operation whose answer (on the executor)
 * builds the reply: the handler returns as soon as it is asked. */

typedef struct px_off_ctx {
    px_call_t *call;
    int64_t offset; /* UpdateOffset's, for the message */
} px_off_ctx_t;

/* A context holding a call reference; NULL (and answered) when out of
 * memory. */
static px_off_ctx_t *px_off_ctx_new(px_call_t *call,
                                    const ProtobufCMessageDescriptor *rd)
{
    px_off_ctx_t *ctx = calloc(1, sizeof(*ctx));

    if (ctx == NULL) {
        px_reply_status(call, rd, PX_CODE(INTERNAL_SERVER_ERROR), "out of memory");
        return NULL;
    }
    ctx->call = call;
    px_call_ref(call);
    return ctx;
}

static void px_off_ctx_free(px_off_ctx_t *ctx)
{
    px_call_unref(ctx->call);
    free(ctx);
}

static void px_offset_updated(void *arg, gt_err_t rc)
{
    px_off_ctx_t *ctx = arg;
    char why[160];

    snprintf(why, sizeof(why), "offset %lld: %s", (long long)ctx->offset,
             gt_err_str(rc));
    px_reply_status(ctx->call, PX_DESC(update_offset_response),
                    rc == GT_OK ? PX_CODE(OK)
                    : rc == GT_ERANGE ? PX_CODE(ILLEGAL_OFFSET)
                                      : px_code_from_err(rc),
                    rc == GT_OK ? "OK" : why);
    px_off_ctx_free(ctx);
}

void px_offset_update(px_call_t *call, ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *rd = PX_DESC(update_offset_response);
    Apache__Rocketmq__V2__UpdateOffsetRequest *req =
        (Apache__Rocketmq__V2__UpdateOffsetRequest *)msg;
    px_off_ctx_t *ctx;
    uint32_t queue;
    st_topic_t t;

    if (!px_require_client(call, rd))
        return;
    if (!px_queue_target(call, rd, req->group, req->message_queue, &t, &queue))
        return;
    if (req->offset < 0) {
        px_reply_status(call, rd, PX_CODE(ILLEGAL_OFFSET), "offset must not be negative");
        return;
    }
    if ((ctx = px_off_ctx_new(call, rd)) == NULL)
        return;
    ctx->offset = req->offset;
    st_offset_update(px_svc(call)->store, req->group->name, t.name, queue,
                     (uint64_t)req->offset, px_offset_updated, ctx);
}

static void px_reply_offset(px_call_t *call, const ProtobufCMessageDescriptor *rd,
                            px_code_t code, const char *why, uint64_t off)
{
    /* GetOffsetResponse and QueryOffsetResponse share this layout. */
    Apache__Rocketmq__V2__GetOffsetResponse resp =
        APACHE__ROCKETMQ__V2__GET_OFFSET_RESPONSE__INIT;
    Apache__Rocketmq__V2__QueryOffsetResponse qresp =
        APACHE__ROCKETMQ__V2__QUERY_OFFSET_RESPONSE__INIT;
    Apache__Rocketmq__V2__Status st;

    px_status_set(&st, code, why);
    if (rd == PX_DESC(get_offset_response)) {
        resp.status = &st;
        resp.offset = (int64_t)off;
        px_call_reply_pb(call, &resp.base);
    } else {
        qresp.status = &st;
        qresp.offset = (int64_t)off;
        px_call_reply_pb(call, &qresp.base);
    }
}

static void px_offset_got(void *arg, gt_err_t rc, uint64_t off)
{
    px_off_ctx_t *ctx = arg;
    const ProtobufCMessageDescriptor *rd = PX_DESC(get_offset_response);

    if (rc == GT_ENOTFOUND)
        px_reply_offset(ctx->call, rd, PX_CODE(OFFSET_NOT_FOUND),
                        "the group has no committed offset on this queue", 0);
    else
        px_reply_offset(ctx->call, rd, rc == GT_OK ? PX_CODE(OK) : px_code_from_err(rc),
                        rc == GT_OK ? "OK" : gt_err_str(rc), off);
    px_off_ctx_free(ctx);
}

static void px_offset_queried(void *arg, gt_err_t rc, uint64_t off)
{
    px_off_ctx_t *ctx = arg;

    px_reply_offset(ctx->call, PX_DESC(query_offset_response),
                    rc == GT_OK ? PX_CODE(OK) : px_code_from_err(rc),
                    rc == GT_OK ? "OK" : gt_err_str(rc), off);
    px_off_ctx_free(ctx);
}

void px_offset_get(px_call_t *call, ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *rd = PX_DESC(get_offset_response);
    Apache__Rocketmq__V2__GetOffsetRequest *req =
        (Apache__Rocketmq__V2__GetOffsetRequest *)msg;
    px_off_ctx_t *ctx;
    uint32_t queue;
    st_topic_t t;

    if (!px_require_client(call, rd))
        return;
    if (!px_queue_target(call, rd, req->group, req->message_queue, &t, &queue))
        return;
    if ((ctx = px_off_ctx_new(call, rd)) != NULL)
        st_offset_get(px_svc(call)->store, req->group->name, t.name, queue,
                      px_offset_got, ctx);
}

void px_offset_query(px_call_t *call, ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *rd = PX_DESC(query_offset_response);
    Apache__Rocketmq__V2__QueryOffsetRequest *req =
        (Apache__Rocketmq__V2__QueryOffsetRequest *)msg;
    px_off_ctx_t *ctx;
    st_offset_kind_t kind;
    int64_t ts = 0;
    uint32_t queue;
    st_topic_t t;

    if (!px_require_client(call, rd))
        return;
    if (!px_queue_target(call, rd, NULL, req->message_queue, &t, &queue))
        return;
    switch (req->query_offset_policy) {
    case APACHE__ROCKETMQ__V2__QUERY_OFFSET_POLICY__BEGINNING:
        kind = ST_OFFSET_BEGIN;
        break;
    case APACHE__ROCKETMQ__V2__QUERY_OFFSET_POLICY__END:
        kind = ST_OFFSET_END;
        break;
    case APACHE__ROCKETMQ__V2__QUERY_OFFSET_POLICY__TIMESTAMP:
        if (!req->timestamp_present_case || req->timestamp == NULL) {
            px_reply_status(call, rd, PX_CODE(BAD_REQUEST),
                            "the TIMESTAMP policy needs a timestamp");
            return;
        }
        kind = ST_OFFSET_TIME;
        ts = px_timestamp_ms(req->timestamp);
        break;
    default:
        px_reply_status(call, rd, PX_CODE(BAD_REQUEST), "unknown query offset policy");
        return;
    }
    if ((ctx = px_off_ctx_new(call, rd)) != NULL)
        st_offset_query(px_svc(call)->store, t.name, queue, kind, ts,
                        px_offset_queried, ctx);
}
