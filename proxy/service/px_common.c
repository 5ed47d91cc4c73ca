/* Shared pieces of the RocketMQ handlers: statuses, time conversions, and
 * the one place store errors become RocketMQ codes. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

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

void px_sync_init(px_sync_t *s)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
}

gt_err_t px_sync_wait(px_sync_t *s)
{
    pthread_mutex_lock(&s->mu);
    while (!s->done)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    return s->err;
}

static void px_sync_signal(px_sync_t *s, gt_err_t err)
{
    pthread_mutex_lock(&s->mu);
    s->err = err;
    s->done = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void px_sync_done_cb(void *arg, gt_err_t err)
{
    px_sync_signal(arg, err);
}

void px_sync_off_cb(void *arg, gt_err_t err, uint64_t off)
{
    px_sync_t *s = arg;
    s->u.off = off;
    px_sync_signal(s, err);
}

static void px_topic_found(void *arg, gt_err_t err, const st_topic_t *t,
                           size_t n)
{
    px_sync_t *s = arg;
    if (err == GT_OK && n == 1)
        s->u.topic = t[0];
    px_sync_signal(s, err == GT_OK && n != 1 ? GT_ENOTFOUND : err);
}

static void px_group_found(void *arg, gt_err_t err, const st_group_t *g,
                           size_t n)
{
    px_sync_t *s = arg;
    if (err == GT_OK && n == 1)
        s->u.group = g[0];
    px_sync_signal(s, err == GT_OK && n != 1 ? GT_ENOTFOUND : err);
}

gt_err_t px_topic_find(px_svc_t *svc, const char *name, st_topic_t *out)
{
    px_sync_t s;
    gt_err_t rc;

    px_sync_init(&s);
    st_topic_get(svc->store, name, px_topic_found, &s);
    rc = px_sync_wait(&s);
    if (rc == GT_OK)
        *out = s.u.topic;
    return rc;
}

gt_err_t px_group_find(px_svc_t *svc, const char *name, st_group_t *out)
{
    px_sync_t s;
    gt_err_t rc;

    px_sync_init(&s);
    st_group_get(svc->store, name, px_group_found, &s);
    rc = px_sync_wait(&s);
    if (rc == GT_OK)
        *out = s.u.group;
    return rc;
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

gt_err_t px_topic_resolve(px_svc_t *svc, const char *name, st_topic_t *out)
{
    gt_err_t rc = px_topic_find(svc, name, out);
    px_sync_t s;
    st_topic_t t;

    if (rc != GT_ENOTFOUND || !svc->cfg->server.auto_create_topics ||
        px_name_is_derived(name))
        return rc;
    memset(&t, 0, sizeof(t));
    snprintf(t.name, sizeof(t.name), "%s", name);
    t.type = ST_TOPIC_NORMAL;
    t.queue_count = 8;
    t.perm = ST_PERM_READ | ST_PERM_WRITE;
    px_sync_init(&s);
    st_topic_put(svc->store, &t, px_sync_done_cb, &s);
    rc = px_sync_wait(&s);
    if (rc != GT_OK)
        return rc;
    return px_topic_find(svc, name, out);
}

bool px_topic_or_reply(px_call_t *call, const ProtobufCMessageDescriptor *rd,
                       const char *name, bool resolve, st_topic_t *t)
{
    gt_err_t rc = resolve ? px_topic_resolve(px_svc(call), name, t)
                          : px_topic_find(px_svc(call), name, t);
    char why[200];

    if (rc == GT_OK)
        return true;
    snprintf(why, sizeof(why), "topic \"%.160s\" does not exist", name);
    px_reply_status(call, rd, rc == GT_ENOTFOUND ? PX_CODE(TOPIC_NOT_FOUND)
                                                 : px_code_from_err(rc), why);
    return false;
}

bool px_group_or_reply(px_call_t *call, const ProtobufCMessageDescriptor *rd,
                       const char *name, st_group_t *g)
{
    gt_err_t rc = px_group_find(px_svc(call), name, g);
    char why[200];

    if (rc == GT_OK)
        return true;
    snprintf(why, sizeof(why), "consumer group \"%.160s\" does not exist", name);
    px_reply_status(call, rd, rc == GT_ENOTFOUND ? PX_CODE(CONSUMER_GROUP_NOT_FOUND)
                                                 : px_code_from_err(rc), why);
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
