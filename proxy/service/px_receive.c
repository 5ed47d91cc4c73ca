/* ReceiveMessage: message-granularity consumption.
 *
 * A receive for a non-FIFO group pops from every queue of the topic,
 * whatever queue the request names: any consumer of a group can receive
 * any message, so consumers scale independently of queue counts.  The
 * stream is `status`, one response per message, `delivery_timestamp`, then
 * the call ends; an empty long poll answers MESSAGE_NOT_FOUND.
 *
 * The pop parks in the store until a message arrives or the long poll ends
 * (clamped into the call's deadline).  If the call is gone by the time the
 * store answers (client cancelled, server stopping), the popped messages
 * are given back at once (st_release: visible again, the delivery attempt
 * not counted) instead of waiting out their invisible time.  The same
 * happens when the call ends before its answer went out: a client may
 * cancel a long poll (grpc-js reports it ended at once) while the server
 * has not read the cancellation yet, so messages queued for the dead call
 * are given back when the call reports them undelivered
 * (px_call_on_over). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "gt_log.h"
#include "gt_text.h"
#include "px_svc_int.h"

#define PX_DESC(x) (&apache__rocketmq__v2__##x##__descriptor)
#define PX_DEFAULT_INVISIBLE_MS (30 * 1000LL)
/* Time kept back from the client's deadline to deliver the answer. */
#define PX_DEADLINE_MARGIN_MS 500

/* A parked receive.  `call` is guarded by svc->recv_mu: NULL once the call
 * was detached (cancelled or server stopping) before the store answered.
 * Its strings live after it, in the same block, each as long as it is
 * (fixed arrays made a parked receive cost ~950 bytes here). */
typedef struct px_recv_ctx {
    px_svc_t *svc;
    px_call_t *call;
    char *client_id; /* at most 127 bytes, as before */
    char *group;     /* at most ST_NAME_MAX */
    char *topic;     /* at most ST_NAME_MAX */
    char *ns;        /* at most 127 bytes, cut on a UTF-8 boundary */
    char *store_host;/* at most 127 bytes, cut on a UTF-8 boundary */
    char *filter_expr;
    bool sql;           /* filter_expr is SQL92 (the store compiles it) */
    int64_t invisible_ms;
    bool auto_renew;
    uint64_t cancel_key;    /* names the pop for st_pop_cancel() */
} px_recv_ctx_t;

/* Room for a copy of `s` (NULL: "") of at most `cap` - 1 bytes. */
static size_t px_recv_room(const char *s, size_t cap)
{
    size_t n = s != NULL ? strlen(s) + 1 : 1;
    return n < cap ? n : cap;
}

/* Cancel keys: unique per process, never 0. */
static _Atomic uint64_t px_recv_keys;

static void px_recv_ctx_free(px_recv_ctx_t *ctx)
{
    free(ctx->filter_expr);
    free(ctx);
}

/* Sends one ReceiveMessageResponse carrying only a status, and finishes. */
static void px_recv_status(px_call_t *call, px_code_t code, const char *why)
{
    px_reply_status(call, PX_DESC(receive_message_response), code, why);
}

/* MD5 fetched from the provider once: EVP_md5() makes every digest fetch
 * it again (OpenSSL 3), some 4,000 instructions per message. */
static EVP_MD *px_md5;
static pthread_once_t px_md5_once = PTHREAD_ONCE_INIT;

static void px_md5_fetch(void)
{
    px_md5 = EVP_MD_fetch(NULL, "MD5", NULL);
}

void px_md5_hex(const void *data, size_t len, char out[33])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    static const char hex[] = "0123456789ABCDEF";

    pthread_once(&px_md5_once, px_md5_fetch);
    EVP_Digest(data, len, md, &mdlen, px_md5 != NULL ? px_md5 : EVP_md5(), NULL);
    for (unsigned int i = 0; i < mdlen && i < 16; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[32] = '\0';
}

void px_msg_view_build(px_msg_view_t *v, const st_message_t *m,
                       const char *topic, const char *ns,
                       const char *store_host, const char *handle,
                       uint32_t attempt, int64_t invisible_ms)
{
    const char *origin_id = NULL, *origin_topic = NULL;
    Apache__Rocketmq__V2__SystemProperties *sp = &v->sp;
    size_t nup = 0;

    apache__rocketmq__v2__message__init(&v->msg);
    apache__rocketmq__v2__system_properties__init(sp);
    apache__rocketmq__v2__resource__init(&v->topic);
    apache__rocketmq__v2__digest__init(&v->digest);
    apache__rocketmq__v2__dead_letter_queue__init(&v->dlq);
    v->topic.name = (char *)(m->topic != NULL ? m->topic : topic);
    v->topic.resource_namespace = (char *)(ns != NULL ? ns : "");
    v->msg.topic = &v->topic;
    for (uint32_t i = 0; i < m->nprops; i++) {
        const char *k = m->props[i].key, *val = m->props[i].value;
        if (strcmp(k, ST_PROP_ENCODING) == 0) {
            sp->body_encoding = APACHE__ROCKETMQ__V2__ENCODING__GZIP;
            continue;
        }
        if (strcmp(k, ST_PROP_TRACE) == 0) {
            sp->trace_context_present_case =
                APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__TRACE_CONTEXT_PRESENT_TRACE_CONTEXT;
            sp->trace_context = (char *)val;
            continue;
        }
        if (k[0] == ST_PROP_SYS[0])
            continue;
        if (strcmp(k, "ORIGIN_MESSAGE_ID") == 0)
            origin_id = val;
        else if (strcmp(k, "RETRY_TOPIC") == 0)
            origin_topic = val;
        apache__rocketmq__v2__message__user_properties_entry__init(&v->ups[nup]);
        v->ups[nup].key = (char *)k;
        v->ups[nup].value = (char *)val;
        v->upp[nup] = &v->ups[nup];
        nup++;
    }
    v->msg.n_user_properties = nup;
    v->msg.user_properties = v->upp;
    if (sp->body_encoding == APACHE__ROCKETMQ__V2__ENCODING__ENCODING_UNSPECIFIED)
        sp->body_encoding = APACHE__ROCKETMQ__V2__ENCODING__IDENTITY;
    if (m->tag != NULL && m->tag[0] != '\0') {
        sp->tag_present_case = APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__TAG_PRESENT_TAG;
        sp->tag = (char *)m->tag;
    }
    sp->n_keys = m->nkeys;
    sp->keys = (char **)m->keys;
    sp->message_id = (char *)(m->msg_id != NULL ? m->msg_id : "");
    px_md5_hex(m->body, m->body_len, v->md5);
    v->digest.type = APACHE__ROCKETMQ__V2__DIGEST_TYPE__MD5;
    v->digest.checksum = v->md5;
    sp->body_digest = &v->digest;
    sp->message_type = m->msg_group != NULL ? APACHE__ROCKETMQ__V2__MESSAGE_TYPE__FIFO
                       : m->delivery_ts_ms > 0 ? APACHE__ROCKETMQ__V2__MESSAGE_TYPE__DELAY
                                               : APACHE__ROCKETMQ__V2__MESSAGE_TYPE__NORMAL;
    px_timestamp_set(&v->born, m->born_ts_ms);
    sp->born_timestamp = &v->born;
    sp->born_host = (char *)(m->born_host != NULL ? m->born_host : "");
    px_timestamp_set(&v->stored, m->store_ts_ms);
    sp->store_timestamp_present_case =
        APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__STORE_TIMESTAMP_PRESENT_STORE_TIMESTAMP;
    sp->store_timestamp = &v->stored;
    sp->store_host = (char *)(store_host != NULL ? store_host : "");
    if (m->delivery_ts_ms > 0) {
        px_timestamp_set(&v->deliver, m->delivery_ts_ms);
        sp->delivery_timestamp_present_case =
            APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__DELIVERY_TIMESTAMP_PRESENT_DELIVERY_TIMESTAMP;
        sp->delivery_timestamp = &v->deliver;
    }
    if (handle != NULL) {
        sp->receipt_handle_present_case =
            APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__RECEIPT_HANDLE_PRESENT_RECEIPT_HANDLE;
        sp->receipt_handle = (char *)handle;
        px_duration_set(&v->invis, invisible_ms);
        sp->invisible_duration_present_case =
            APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__INVISIBLE_DURATION_PRESENT_INVISIBLE_DURATION;
        sp->invisible_duration = &v->invis;
    }
    sp->queue_id = m->queue_id;
    sp->queue_offset_present_case =
        APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__QUEUE_OFFSET_PRESENT_QUEUE_OFFSET;
    sp->queue_offset = (int64_t)m->queue_offset;
    sp->delivery_attempt_present_case =
        APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__DELIVERY_ATTEMPT_PRESENT_DELIVERY_ATTEMPT;
    sp->delivery_attempt = (int32_t)(attempt > 0 ? attempt : 1);
    if (m->msg_group != NULL) {
        sp->message_group_present_case =
            APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__MESSAGE_GROUP_PRESENT_MESSAGE_GROUP;
        sp->message_group = (char *)m->msg_group;
    }
    if (origin_id != NULL && origin_topic != NULL) {
        v->dlq.topic = (char *)origin_topic;
        v->dlq.message_id = (char *)origin_id;
        sp->dead_letter_queue_present_case =
            APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__DEAD_LETTER_QUEUE_PRESENT_DEAD_LETTER_QUEUE;
        sp->dead_letter_queue = &v->dlq;
    }
    v->msg.system_properties = sp;
    v->msg.body.data = (uint8_t *)m->body;
    v->msg.body.len = m->body_len;
}

/* Messages queued on a call that is not over yet: given back if the call
 * reports them undelivered. */
typedef struct px_recv_sent {
    px_svc_t *svc;
    char client_id[128];
    char group[ST_NAME_MAX + 1];
    char topic[ST_NAME_MAX + 1];
    size_t n;
    char handles[][ST_HANDLE_MAX];
} px_recv_sent_t;

static void px_recv_back_done(void *arg, gt_err_t err)
{
    (void)arg;
    (void)err; /* acked, renewed or given back meanwhile: nothing to do */
}

/* Gives back deliveries that never reached a consumer (never held). */
static void px_recv_give_back(px_svc_t *svc, const char *group,
                              const char *topic, const st_popped_t *msgs,
                              size_t n)
{
    for (size_t i = 0; i < n; i++)
        st_release(svc->store, group, topic, msgs[i].handle,
                   px_recv_back_done, NULL);
}

static void px_recv_over(void *arg, bool delivered)
{
    px_recv_sent_t *s = arg;
    char cur[ST_HANDLE_MAX];

    for (size_t i = 0; !delivered && i < s->n; i++) {
        px_client_current(s->svc, s->client_id, s->handles[i], cur);
        px_client_release(s->svc, s->client_id, s->handles[i]);
        st_release(s->svc->store, s->group, s->topic, cur, px_recv_back_done,
                   NULL);
    }
    if (!delivered)
        GT_LOG(DEBUG, "svc", "receive for %s ended before its answer was "
               "sent: gave back %zu messages", s->client_id, s->n);
    free(s);
}

/* Watches the call until it is over, for the n messages queued on it. */
static void px_recv_watch(px_recv_ctx_t *ctx, const st_popped_t *msgs,
                          size_t n)
{
    px_recv_sent_t *s;

    if (n == 0 || (s = malloc(sizeof(*s) + n * ST_HANDLE_MAX)) == NULL)
        return; /* out of memory: they count as delivered */
    s->svc = ctx->svc;
    snprintf(s->client_id, sizeof(s->client_id), "%s", ctx->client_id);
    snprintf(s->group, sizeof(s->group), "%s", ctx->group);
    snprintf(s->topic, sizeof(s->topic), "%s", ctx->topic);
    s->n = n;
    for (size_t i = 0; i < n; i++)
        snprintf(s->handles[i], ST_HANDLE_MAX, "%s", msgs[i].handle);
    px_call_on_over(ctx->call, px_recv_over, s);
}

/* Builds and queues the response for one popped message.  Returns the
 * send result (GT_ESHUTDOWN once the call is over). */
static gt_err_t px_recv_send_one(px_recv_ctx_t *ctx, const st_popped_t *p)
{
    Apache__Rocketmq__V2__ReceiveMessageResponse resp =
        APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__INIT;
    px_msg_view_t *v = malloc(sizeof(*v));
    gt_err_t rc;

    if (v == NULL)
        return GT_ENOMEM;
    px_msg_view_build(v, &p->msg, ctx->topic, ctx->ns, ctx->store_host,
                      p->handle, p->attempt, ctx->invisible_ms);
    resp.content_case = APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__CONTENT_MESSAGE;
    resp.message = &v->msg;
    rc = px_call_send_pb(ctx->call, &resp.base);
    free(v);
    return rc;
}

/* Detaches ctx from its call; returns the call (still referenced) or NULL
 * when the interrupt side already took it. */
static px_call_t *px_recv_detach(px_recv_ctx_t *ctx)
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

static void px_recv_done(void *arg, gt_err_t err, const st_popped_t *msgs,
                         size_t n)
{
    px_recv_ctx_t *ctx = arg;
    px_svc_t *svc = ctx->svc;
    Apache__Rocketmq__V2__ReceiveMessageResponse resp =
        APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__INIT;
    Apache__Rocketmq__V2__Status st;
    Google__Protobuf__Timestamp ts;
    char why[160];
    size_t sent = 0;

    ctx->call = px_recv_detach(ctx);
    if (ctx->call == NULL) {
        GT_LOG(DEBUG, "svc", "receive for %s: the store answered after the "
               "call went away", ctx->client_id);
        /* Nobody to deliver to: give the messages back now. */
        if (err == GT_OK)
            px_recv_give_back(svc, ctx->group, ctx->topic, msgs, n);
        px_recv_ctx_free(ctx);
        return;
    }
    if (err != GT_OK) {
        snprintf(why, sizeof(why), "store: %s", gt_err_str(err));
        px_recv_status(ctx->call, err == GT_ENOTFOUND ? PX_CODE(TOPIC_NOT_FOUND)
                                                      : px_code_from_err(err), why);
    } else if (n == 0) {
        /* A consumer of the pair, for the consumer gauges. */
        px_metrics_out(svc->metrics, ctx->topic, ctx->group, 0, 0);
        px_recv_status(ctx->call, PX_CODE(MESSAGE_NOT_FOUND),
                       "no new message in the long-polling time");
    } else {
        px_status_set(&st, PX_CODE(OK), "OK");
        resp.content_case = APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__CONTENT_STATUS;
        resp.status = &st;
        /* Held before they are sent: an ack may follow the first at once. */
        px_client_hold_n(svc, ctx->client_id, ctx->group, ctx->topic, msgs, n,
                         ctx->auto_renew, ctx->invisible_ms);
        if (px_call_send_pb(ctx->call, &resp.base) == GT_OK) {
            for (; sent < n; sent++) {
                if (px_recv_send_one(ctx, &msgs[sent]) != GT_OK)
                    break;
                px_trace_delivered(svc, ctx->call, ctx->group, ctx->topic, &msgs[sent]);
            }
        }
        if (sent == n) {
            px_timestamp_set(&ts, px_now_ms());
            resp.content_case =
                APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__CONTENT_DELIVERY_TIMESTAMP;
            resp.delivery_timestamp = &ts;
            px_call_send_pb(ctx->call, &resp.base);
            px_call_finish(ctx->call, GRPC_STATUS_OK, NULL);
        } else {
            /* The call is gone: give back what was not delivered. */
            for (size_t i = sent; i < n; i++)
                px_client_release(svc, ctx->client_id, msgs[i].handle);
            px_recv_give_back(svc, ctx->group, ctx->topic, msgs + sent,
                              n - sent);
            GT_LOG(DEBUG, "svc", "receive for %s gone: released %zu messages",
                   ctx->client_id, n - sent);
        }
        /* Queued is not delivered: the call may still end first. */
        px_recv_watch(ctx, msgs, sent);
        if (svc->metrics != NULL) {
            uint64_t bytes = 0;
            for (size_t i = 0; i < sent; i++)
                bytes += msgs[i].msg.body_len;
            px_metrics_out(svc->metrics, ctx->topic, ctx->group, sent, bytes);
        }
    }
    px_call_unref(ctx->call);
    px_recv_ctx_free(ctx);
}

/* Validates the request; on failure answers and returns false. */
static bool px_recv_check(px_call_t *call,
                          const Apache__Rocketmq__V2__ReceiveMessageRequest *req,
                          st_topic_t *t, bool *sql)
{
    const Apache__Rocketmq__V2__Resource *tr =
        req->message_queue != NULL ? req->message_queue->topic : NULL;
    char why[256];
    st_group_t g;
    px_code_t code;

    if ((code = px_check_group(req->group, why, sizeof(why))) != PX_CODE(OK) ||
        (code = px_check_topic(tr, why, sizeof(why))) != PX_CODE(OK)) {
        px_recv_status(call, code, why);
        return false;
    }
    if (!px_group_or_reply(call, PX_DESC(receive_message_response), req->group->name, &g) ||
        !px_topic_or_reply(call, PX_DESC(receive_message_response), tr->name, t))
        return false;
    if ((code = px_check_filter(req->filter_expression, sql, why, sizeof(why))) !=
        PX_CODE(OK)) {
        px_recv_status(call, code, why);
        return false;
    }
    if (req->invisible_duration_present_case && req->invisible_duration != NULL) {
        int64_t ms = px_duration_ms(req->invisible_duration);
        if (ms < PX_MIN_INVISIBLE_MS || ms > PX_MAX_INVISIBLE_MS) {
            snprintf(why, sizeof(why), "invisible duration %lld ms is outside "
                     "[%lld, %lld]", (long long)ms, (long long)PX_MIN_INVISIBLE_MS,
                     (long long)PX_MAX_INVISIBLE_MS);
            px_recv_status(call, PX_CODE(ILLEGAL_INVISIBLE_TIME), why);
            return false;
        }
    }
    if (!(t->perm & ST_PERM_READ)) {
        snprintf(why, sizeof(why), "topic \"%.160s\" is not readable", t->name);
        px_recv_status(call, PX_CODE(FORBIDDEN), why);
        return false;
    }
    return true;
}

void px_receive_message(px_call_t *call, ProtobufCMessage *msg)
{
    Apache__Rocketmq__V2__ReceiveMessageRequest *req =
        (Apache__Rocketmq__V2__ReceiveMessageRequest *)msg;
    px_recv_ctx_t *ctx = NULL;
    bool sql = false;
    st_pop_req_t pr;
    st_topic_t t;
    int64_t lp, left;
    const char *auth;
    px_interrupt_t missed;

    if (px_client_id(call) == NULL) {
        px_recv_status(call, PX_CODE(CLIENT_ID_REQUIRED),
                       "x-mq-client-id metadata is required");
        return;
    }
    if (!px_recv_check(call, req, &t, &sql))
        return;
    auth = px_authority_text(call);
    {
        const char *ns = req->message_queue->topic->resource_namespace;
        size_t n_client = px_recv_room(px_client_id(call), 128),
               n_group = px_recv_room(req->group->name, ST_NAME_MAX + 1),
               n_topic = px_recv_room(t.name, ST_NAME_MAX + 1),
               n_ns = px_recv_room(ns, 128), n_host = px_recv_room(auth, 128);
        char *p;

        ctx = calloc(1, sizeof(*ctx) + n_client + n_group + n_topic + n_ns + n_host);
        if (ctx == NULL) {
            px_recv_status(call, PX_CODE(INTERNAL_SERVER_ERROR), "out of memory");
            return;
        }
        p = (char *)(ctx + 1);
        ctx->client_id = p;
        snprintf(ctx->client_id, n_client, "%s", px_client_id(call));
        ctx->group = p += n_client;
        snprintf(ctx->group, n_group, "%s", req->group->name);
        ctx->topic = p += n_group;
        snprintf(ctx->topic, n_topic, "%s", t.name);
        ctx->ns = p += n_topic;
        gt_utf8_copy(ctx->ns, n_ns, ns);
        ctx->store_host = p + n_ns;
        gt_utf8_copy(ctx->store_host, n_host, auth);
    }
    ctx->sql = sql;
    ctx->svc = px_svc(call);
    ctx->call = call;
    if (req->filter_expression != NULL && req->filter_expression->expression != NULL)
        ctx->filter_expr = strdup(req->filter_expression->expression);
    /* Push consumers ask for auto-renewal and name no invisible time: the
     * server keeps their messages invisible while they live. */
    ctx->auto_renew = req->auto_renew;
    ctx->invisible_ms = req->invisible_duration_present_case && req->invisible_duration
                            ? px_duration_ms(req->invisible_duration)
                            : req->auto_renew ? PX_AUTO_RENEW_MS
                                              : PX_DEFAULT_INVISIBLE_MS;
    lp = req->long_polling_timeout_present_case && req->long_polling_timeout
             ? px_duration_ms(req->long_polling_timeout)
             : PX_DEFAULT_LONG_POLL_MS;
    left = px_call_deadline_left_ms(call) - PX_DEADLINE_MARGIN_MS;
    if (lp > left)
        lp = left;
    if (lp > ST_POLL_MAX_MS) /* no deadline: the store's bound */
        lp = ST_POLL_MAX_MS;
    if (lp < 0)
        lp = 0;

    memset(&pr, 0, sizeof(pr));
    pr.group = ctx->group;
    pr.topic = ctx->topic;
    /* Message-granularity balancing: every queue, whatever was asked. */
    pr.queue_id = ST_QUEUE_ANY;
    pr.filter_kind = ctx->sql ? ST_FILTER_SQL92 : ST_FILTER_TAG;
    pr.filter_expr = ctx->filter_expr;
    pr.max = req->batch_size > 0 && req->batch_size < ST_POP_MAX
                 ? (uint32_t)req->batch_size : ST_POP_MAX;
    pr.invisible_ms = ctx->invisible_ms;
    pr.poll_timeout_ms = lp;
    ctx->cancel_key = atomic_fetch_add(&px_recv_keys, 1) + 1;
    pr.cancel_key = ctx->cancel_key;
    px_call_ref(call);
    px_test_late_attach(ctx->svc, call, "receive");
    /* px_receive_interrupt reads it under recv_mu, maybe on another worker
     * right now. */
    pthread_mutex_lock(&ctx->svc->recv_mu);
    px_call_set_user(call, ctx);
    pthread_mutex_unlock(&ctx->svc->recv_mu);
    st_pop(px_svc(call)->store, &pr, px_recv_done, ctx);
    /* A cancel or shutdown notice that came before the attachment found
     * nothing to end: do it now, or the pop stays parked for its whole
     * long poll (a stop would wait for it until its shutdown bound).  (The
     * store remembers a cancel that comes before its pop; if the pop has
     * already answered, ctx is detached and this does nothing.) */
    missed = px_call_missed_interrupt(call);
    if (missed != 0)
        px_receive_interrupt(call, missed);
}

void px_receive_interrupt(px_call_t *call, px_interrupt_t why)
{
    px_svc_t *svc = px_svc(call);
    px_recv_ctx_t *ctx;
    bool detached = false;
    uint64_t key = 0;

    if (why == PX_INTERRUPT_CLOSED)
        return;
    /* Cancelled or stopping: end the stream and drop the pop's reference
     * now, so the call is freed at once and the server can stop.  The pop
     * is cancelled: the store completes it empty instead of handing it
     * messages (which would otherwise come
     * back with one delivery attempt used up).  Anything it got in the
     * race is given back (px_recv_done with ctx->call == NULL). */
    pthread_mutex_lock(&svc->recv_mu);
    ctx = px_call_user(call);
    if (ctx != NULL && ctx->call == call) {
        ctx->call = NULL;
        px_call_set_user(call, NULL);
        key = ctx->cancel_key; /* ctx is freed by px_recv_done */
        detached = true;
    }
    px_test_interrupted(svc, call);
    pthread_mutex_unlock(&svc->recv_mu);
    if (!detached)
        return;
    /* The store must not hand this pop any message from now on. */
    st_pop_cancel(svc->store, key);
    if (why == PX_INTERRUPT_SHUTDOWN)
        px_call_finish(call, GRPC_STATUS_UNAVAILABLE, "server shutting down");
    px_call_unref(call);
}
