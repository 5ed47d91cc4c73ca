/* Shared pieces of the RocketMQ handlers: statuses, time conversions, and
 * the one place store errors become RocketMQ codes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gt_log.h"
#include "px_svc_int.h"

void px_status_set(Apache__Rocketmq__V2__Status *st, px_code_t code,
                   const char *msg)
{
    apache__rocketmq__v2__status__init(st);
    st->code = code;
    st->message = (char *)(msg != NULL ? msg : "");
}

px_code_t px_code_from_err(gt_err_t err)
{
    switch (err) {
    case GT_OK:
        return PX_CODE(OK);
    case GT_ENOTFOUND:
        return PX_CODE(NOT_FOUND);
    case GT_EINVAL:
    case GT_ERANGE:
        return PX_CODE(BAD_REQUEST);
    case GT_ETIMEDOUT:
        return PX_CODE(PROXY_TIMEOUT);
    case GT_EUNSUPPORTED:
        return PX_CODE(NOT_IMPLEMENTED);
    case GT_ENOSPC:
    case GT_EIO:
    case GT_EBUSY:
    case GT_AGAIN:
    case GT_ESHUTDOWN:
        /* Retriable: the SDKs retry INTERNAL_SERVER_ERROR-class codes. */
        return PX_CODE(INTERNAL_SERVER_ERROR);
    default:
        return PX_CODE(INTERNAL_ERROR);
    }
}

const char *px_client_id(px_call_t *call)
{
    const char *id = px_call_metadata(call, "x-mq-client-id");
    size_t n = id != NULL ? strnlen(id, PX_CLIENT_ID_MAX) : 0;

    /* The registry and call contexts keep ids in PX_CLIENT_ID_MAX bytes: a
     * longer one would be cut into another client's id. */
    if (n == 0 || n >= PX_CLIENT_ID_MAX)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (id[i] < 0x20 || id[i] > 0x7e)
            return NULL;
    return id;
}

/* seconds * 1000 + nanos / 1e6, saturated at INT64_MIN / INT64_MAX: a
 * client's huge value must stay huge (and be refused as out of range), not
 * wrap into an allowed one. */
static int64_t px_ms_saturated(int64_t seconds, int32_t nanos)
{
    int64_t ms;

    if (__builtin_mul_overflow(seconds, 1000, &ms) ||
        __builtin_add_overflow(ms, (int64_t)(nanos / 1000000), &ms))
        return seconds < 0 ? INT64_MIN : INT64_MAX;
    return ms;
}

int64_t px_duration_ms(const Google__Protobuf__Duration *d)
{
    if (d == NULL)
        return 0;
    return px_ms_saturated(d->seconds, d->nanos);
}

void px_duration_set(Google__Protobuf__Duration *d, int64_t ms)
{
    google__protobuf__duration__init(d);
    d->seconds = ms / 1000;
    d->nanos = (int32_t)((ms % 1000) * 1000000);
}

void px_timestamp_set(Google__Protobuf__Timestamp *t, int64_t ms)
{
    google__protobuf__timestamp__init(t);
    t->seconds = ms / 1000;
    t->nanos = (int32_t)((ms % 1000) * 1000000);
}

int64_t px_timestamp_ms(const Google__Protobuf__Timestamp *t)
{
    if (t == NULL)
        return 0;
    return px_ms_saturated(t->seconds, t->nanos);
}

int64_t px_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void px_reply_status(px_call_t *call, const ProtobufCMessageDescriptor *desc,
                     px_code_t code, const char *msg)
{
    Apache__Rocketmq__V2__Status st;
    const ProtobufCFieldDescriptor *f;
    union {
        ProtobufCMessage base;
        char bytes[1024];
    } buf;

    px_status_set(&st, code, msg);
    if (desc->sizeof_message > sizeof(buf.bytes)) {
        px_call_finish(call, GRPC_STATUS_INTERNAL, "response too large");
        return;
    }
    protobuf_c_message_init(desc, &buf);
    f = protobuf_c_message_descriptor_get_field_by_name(desc, "status");
    if (f != NULL && f->type == PROTOBUF_C_TYPE_MESSAGE) {
        *(Apache__Rocketmq__V2__Status **)(buf.bytes + f->offset) = &st;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
            *(uint32_t *)(buf.bytes + f->quantifier_offset) = f->id;
    }
    px_call_send_pb(call, &buf.base);
    px_call_finish(call, GRPC_STATUS_OK, NULL);
}

/* ---- topic auto-creation ----
 * The handler's second run happens on the executor thread that got the
 * store's answer; this thread-local marks it, so the second run neither
 * creates again nor forgets why the creation failed, and records whether
 * the handler kept the request (px_keep_request). */
static _Thread_local struct {
    bool active;
    bool kept;
    gt_err_t err;
} px_redo;

typedef struct px_create_ctx {
    px_call_t *call;
    ProtobufCMessage *req; /* kept for the second run */
    st_topic_t t;
} px_create_ctx_t;

void px_keep_request(px_call_t *call)
{
    if (px_redo.active)
        px_redo.kept = true;
    else
        px_call_keep_request(call);
}

static void px_topic_created(void *arg, gt_err_t err)
{
    px_create_ctx_t *ctx = arg;
    px_call_t *call = ctx->call;

    if (err == GT_OK)
        px_meta_learn_topic(px_svc(call), &ctx->t);
    else
        GT_LOG(WARN, "svc", "cannot create topic %s: %s", ctx->t.name,
               gt_err_str(err));
    px_redo.active = true;
    px_redo.kept = false;
    px_redo.err = err;
    px_call_method_entry(call)->on_request(call, ctx->req);
    if (!px_redo.kept)
        px_request_free(ctx->req);
    px_redo.active = false;
    px_redo.err = GT_OK;
    px_call_unref(call);
    free(ctx);
}

bool px_topic_autocreate(px_call_t *call, const char *name,
                         ProtobufCMessage *req)
{
    px_svc_t *svc = px_svc(call);
    px_create_ctx_t *ctx;
    st_topic_t t;

    if (px_redo.active || !svc->cfg->server.auto_create_topics ||
        px_name_is_derived(name) || px_topic_find(svc, name, &t) == GT_OK)
        return false;
    if ((ctx = calloc(1, sizeof(*ctx))) == NULL)
        return false;
    snprintf(ctx->t.name, sizeof(ctx->t.name), "%s", name);
    ctx->t.type = ST_TOPIC_NORMAL;
    ctx->t.queue_count = 8;
    ctx->t.perm = ST_PERM_READ | ST_PERM_WRITE;
    ctx->call = call;
    ctx->req = req;
    px_call_keep_request(call);
    px_call_ref(call);
    st_topic_put(svc->store, &ctx->t, px_topic_created, ctx);
    return true;
}

gt_err_t px_topic_autocreate_err(void)
{
    return px_redo.active ? px_redo.err : GT_OK;
}

bool px_topic_or_reply(px_call_t *call, const ProtobufCMessageDescriptor *rd,
                       const char *name, st_topic_t *t)
{
    gt_err_t rc = px_topic_find(px_svc(call), name, t);
    char why[200];

    if (rc == GT_OK)
        return true;
    if (px_topic_autocreate_err() != GT_OK) {
        rc = px_topic_autocreate_err();
        snprintf(why, sizeof(why), "cannot create topic \"%.160s\": %s", name,
                 gt_err_str(rc));
        px_reply_status(call, rd, px_code_from_err(rc), why);
        return false;
    }
    snprintf(why, sizeof(why), "topic \"%.160s\" does not exist", name);
    px_reply_status(call, rd, PX_CODE(TOPIC_NOT_FOUND), why);
    return false;
}

bool px_group_or_reply(px_call_t *call, const ProtobufCMessageDescriptor *rd,
                       const char *name, st_group_t *g)
{
    char why[200];

    if (px_group_find(px_svc(call), name, g) == GT_OK)
        return true;
    snprintf(why, sizeof(why), "consumer group \"%.160s\" does not exist", name);
    px_reply_status(call, rd, PX_CODE(CONSUMER_GROUP_NOT_FOUND), why);
    return false;
}

void px_reject(px_call_t *call, px_reject_t why)
{
    const px_method_t *m = px_call_method_entry(call);
    char text[200];

    if (why == PX_REJECT_OVERLOAD) {
        px_reply_status(call, m->resp_desc, PX_CODE(TOO_MANY_REQUESTS),
                        "too many request bytes in flight, retry later");
        return;
    }
    snprintf(text, sizeof(text), "malformed %.150s", m->req_desc->short_name);
    px_reply_status(call, m->resp_desc, PX_CODE(BAD_REQUEST), text);
}

void px_reject_client(px_call_t *call, px_reject_t why)
{
    if (px_require_client(call, px_call_method_entry(call)->resp_desc))
        px_reject(call, why);
}

bool px_require_client(px_call_t *call, const ProtobufCMessageDescriptor *resp)
{
    if (px_client_id(call) != NULL)
        return true;
    px_reply_status(call, resp, PX_CODE(CLIENT_ID_REQUIRED),
                    "x-mq-client-id metadata is required (1 to 127 printable "
                    "ASCII characters)");
    return false;
}
