/* SendMessage: validation in RocketMQ's order and codes, then one append of
 * the whole batch to the store.  The reply carries one entry per message,
 * in order, with the client's message id echoed and its queue offset; the
 * top-level status is the entries' common code, or MULTIPLE_RESULTS.
 *
 * A batch is atomic: if any message fails validation nothing is stored and
 * every entry carries that message's (or the batch's) error, as upstream
 * rejects the whole request.  System properties the store has no field for
 * (body encoding, trace context) travel as store properties under keys
 * starting with ST_PROP_SYS (st.h), a control character no client key may contain,
 * so they can never collide with user properties. */
#include <ctype.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt_log.h"
#include "px_svc_int.h"

#define PX_DESC(x) (&apache__rocketmq__v2__##x##__descriptor)
#define PX_MAX_BATCH 1024
#define PX_MAX_GROUP_BYTES 64

typedef Apache__Rocketmq__V2__Message px_msg_t;
typedef Apache__Rocketmq__V2__SystemProperties px_sys_t;

/* Property keys RocketMQ reserves for itself (MessageConst). */
static const char *const px_reserved_keys[] = {
    "KEYS", "TAGS", "WAIT", "DELAY", "RETRY_TOPIC", "REAL_TOPIC", "REAL_QID",
    "TRAN_MSG", "PGROUP", "MIN_OFFSET", "MAX_OFFSET", "BUYER_ID",
    "ORIGIN_MESSAGE_ID", "TRANSFER_FLAG", "CORRECTION_FLAG", "MQ2_FLAG",
    "RECONSUME_TIME", "MSG_REGION", "TRACE_ON", "UNIQ_KEY",
    "MAX_RECONSUME_TIMES", "CONSUME_START_TIME", "POP_CK", "POP_CK_OFFSET",
    "1ST_POP_TIME", "TRAN_PREPARED_QUEUE_OFFSET", "DUP_INFO",
    "EXTEND_UNIQ_INFO", "INSTANCE_ID", "CORRELATION_ID", "REPLY_TO_CLIENT",
    "TTL", "ARRIVE_TIME", "PUSH_REPLY_TIME", "CLUSTER", "MSG_TYPE",
    "__SHARDINGKEY", "__STARTDELIVERTIME", "TIMER_DELIVER_MS",
    "TIMER_DELAY_SEC", "TIMER_DELAY_MS", "TIMER_ENQUEUE_MS", "TIMER_DEQUEUE_MS",
    "TIMER_ROLL_TIMES", "TIMER_OUT_MS", "TIMER_DEL_UNIQKEY",
    "CHECK_IMMUNITY_TIME_IN_SECONDS", "INNER_NUM", "INNER_BASE",
    "TRACE_CONTEXT", "DLQ_ORIGIN_TOPIC", "DLQ_ORIGIN_MESSAGE_ID",
    "BORN_TIMESTAMP", "BORN_HOST", "STORE_HOST", "QUEUE_ID", "QUEUE_OFFSET",
};

static bool px_has_ctl(const char *s)
{
    for (; *s; s++)
        if (iscntrl((unsigned char)*s))
            return true;
    return false;
}

static bool px_blank(const char *s)
{
    for (; *s; s++)
        if (!isspace((unsigned char)*s))
            return false;
    return true;
}

static bool px_reserved_key(const char *k)
{
    for (size_t i = 0; i < sizeof(px_reserved_keys) / sizeof(px_reserved_keys[0]); i++)
        if (strcmp(k, px_reserved_keys[i]) == 0)
            return true;
    return false;
}

px_msg_type_t px_msg_type_of(const px_sys_t *sp)
{
    if (sp->message_type != APACHE__ROCKETMQ__V2__MESSAGE_TYPE__MESSAGE_TYPE_UNSPECIFIED)
        return sp->message_type;
    if (sp->message_group_present_case && sp->message_group != NULL)
        return APACHE__ROCKETMQ__V2__MESSAGE_TYPE__FIFO;
    if (sp->delivery_timestamp_present_case && sp->delivery_timestamp != NULL)
        return APACHE__ROCKETMQ__V2__MESSAGE_TYPE__DELAY;
    return APACHE__ROCKETMQ__V2__MESSAGE_TYPE__NORMAL;
}

static bool px_type_accepted(st_topic_type_t tt, px_msg_type_t mt)
{
    switch (tt) {
    case ST_TOPIC_NORMAL:
        return mt == APACHE__ROCKETMQ__V2__MESSAGE_TYPE__NORMAL;
    case ST_TOPIC_FIFO:
        return mt == APACHE__ROCKETMQ__V2__MESSAGE_TYPE__FIFO;
    case ST_TOPIC_DELAY:
        return mt == APACHE__ROCKETMQ__V2__MESSAGE_TYPE__DELAY;
    case ST_TOPIC_TRANSACTION:
        return mt == APACHE__ROCKETMQ__V2__MESSAGE_TYPE__TRANSACTION;
    case ST_TOPIC_MIXED:
        return mt >= APACHE__ROCKETMQ__V2__MESSAGE_TYPE__NORMAL &&
               mt <= APACHE__ROCKETMQ__V2__MESSAGE_TYPE__TRANSACTION;
    }
    return false;
}

/* Validates one message against topic `t`; on error writes why and
 * returns the code. */
px_code_t px_send_validate(const px_msg_t *m, const st_topic_t *t,
                           int64_t now_ms, int64_t max_delay_ms, char *why,
                           size_t whylen)
{
    const px_sys_t *sp = m->system_properties;
    size_t props_bytes = 0;
    px_msg_type_t mt;

    if (sp == NULL) {
        snprintf(why, whylen, "system properties are missing");
        return PX_CODE(MESSAGE_CORRUPTED);
    }
    if (m->body.len == 0) {
        snprintf(why, whylen, "message body is empty");
        return PX_CODE(MESSAGE_BODY_EMPTY);
    }
    if (m->body.len > PX_MAX_BODY_BYTES) {
        snprintf(why, whylen, "message body of %zu bytes exceeds %d",
                 m->body.len, PX_MAX_BODY_BYTES);
        return PX_CODE(MESSAGE_BODY_TOO_LARGE);
    }
    for (size_t i = 0; i < m->n_user_properties; i++)
        props_bytes += strlen(m->user_properties[i]->key) +
                       strlen(m->user_properties[i]->value);
    if (sp->tag_present_case && sp->tag != NULL)
        props_bytes += strlen(sp->tag);
    for (size_t i = 0; i < sp->n_keys; i++)
        props_bytes += strlen(sp->keys[i]);
    if (m->n_user_properties > PX_MAX_USER_PROPS || props_bytes > PX_MAX_PROPS_BYTES) {
        snprintf(why, whylen, "%zu user properties / %zu bytes of properties exceed "
                 "the limits (%d, %d bytes)", m->n_user_properties, props_bytes,
                 PX_MAX_USER_PROPS, PX_MAX_PROPS_BYTES);
        return PX_CODE(MESSAGE_PROPERTIES_TOO_LARGE);
    }
    for (size_t i = 0; i < m->n_user_properties; i++) {
        const char *k = m->user_properties[i]->key;
        if (k[0] == '\0' || px_blank(k) || px_has_ctl(k) || px_reserved_key(k)) {
            snprintf(why, whylen, "property key \"%.64s\" is reserved or invalid", k);
            return PX_CODE(ILLEGAL_MESSAGE_PROPERTY_KEY);
        }
    }
    if (sp->tag_present_case && sp->tag != NULL &&
        (px_blank(sp->tag) || strchr(sp->tag, '|') != NULL || px_has_ctl(sp->tag))) {
        snprintf(why, whylen, "tag \"%.64s\" is blank or contains '|' or a control "
                 "character", sp->tag);
        return PX_CODE(ILLEGAL_MESSAGE_TAG);
    }
    for (size_t i = 0; i < sp->n_keys; i++) {
        if (px_blank(sp->keys[i]) || px_has_ctl(sp->keys[i])) {
            snprintf(why, whylen, "message key \"%.64s\" is blank or contains a "
                     "control character", sp->keys[i]);
            return PX_CODE(ILLEGAL_MESSAGE_KEY);
        }
    }
    if (sp->n_keys > ST_MAX_KEYS) {
        snprintf(why, whylen, "%zu keys exceed the limit of %d", sp->n_keys, ST_MAX_KEYS);
        return PX_CODE(ILLEGAL_MESSAGE_KEY);
    }
    if (sp->message_id == NULL || px_blank(sp->message_id) ||
        strlen(sp->message_id) >= ST_MSG_ID_MAX) {
        snprintf(why, whylen, "message id is blank or too long");
        return PX_CODE(ILLEGAL_MESSAGE_ID);
    }
    if (sp->born_timestamp != NULL && !px_timestamp_valid(sp->born_timestamp)) {
        snprintf(why, whylen, "born timestamp is outside google.protobuf.Timestamp's "
                 "range");
        return PX_CODE(BAD_REQUEST);
    }
    mt = px_msg_type_of(sp);
    if (!px_type_accepted(t->type, mt)) {
        snprintf(why, whylen, "topic \"%.128s\" does not accept %s messages", t->name,
                 protobuf_c_enum_descriptor_get_value(
                     &apache__rocketmq__v2__message_type__descriptor, mt)
                     ? protobuf_c_enum_descriptor_get_value(
                           &apache__rocketmq__v2__message_type__descriptor, mt)->name
                     : "unknown");
        return PX_CODE(MESSAGE_PROPERTY_CONFLICT_WITH_TYPE);
    }
    if (sp->message_group_present_case && sp->message_group != NULL) {
        const char *g = sp->message_group;
        if (px_blank(g) || px_has_ctl(g) || strlen(g) >= PX_MAX_GROUP_BYTES) {
            snprintf(why, whylen, "message group \"%.64s\" is blank, too long or "
                     "contains a control character", g);
            return PX_CODE(ILLEGAL_MESSAGE_GROUP);
        }
    }
    if (sp->delivery_timestamp_present_case && sp->delivery_timestamp != NULL &&
        (!px_timestamp_valid(sp->delivery_timestamp) ||
         px_timestamp_ms(sp->delivery_timestamp) > now_ms + max_delay_ms)) {
        snprintf(why, whylen, "delivery time is more than %lld ms ahead",
                 (long long)max_delay_ms);
        return PX_CODE(ILLEGAL_DELIVERY_TIME);
    }
    return PX_CODE(OK);
}

_Static_assert(offsetof(st_message_t, keys) < offsetof(st_message_t, nkeys) &&
                   offsetof(st_message_t, nkeys) < offsetof(st_message_t, props) &&
                   offsetof(st_message_t, props) < offsetof(st_message_t, nprops),
               "px_send_fill zeroes st_message_t around its two arrays");

/* Fills the store message from the wire message (pointers borrowed;
 * `txcheck` is storage for the half message's check delay). */
static void px_send_fill(st_message_t *sm, const px_msg_t *m,
                         const st_topic_t *t, char txcheck[24])
{
    const px_sys_t *sp = m->system_properties;
    uint32_t np = 0;

    /* Everything but the key and property arrays, which are filled up to
     * nkeys / nprops (together 2.6 KB of the 2.7 KB struct; the array of
     * a batch is not zeroed either). */
    memset(sm, 0, offsetof(st_message_t, keys));
    memset(&sm->nkeys, 0, offsetof(st_message_t, props) - offsetof(st_message_t, nkeys));
    memset(&sm->nprops, 0, sizeof(*sm) - offsetof(st_message_t, nprops));
    sm->tag = sp->tag_present_case ? sp->tag : NULL;
    for (size_t i = 0; i < sp->n_keys; i++)
        sm->keys[sm->nkeys++] = sp->keys[i];
    sm->msg_id = sp->message_id;
    sm->dedup_by_id = true; /* a producer's retry carries the same id */
    for (size_t i = 0; i < m->n_user_properties && np < ST_MAX_PROPS; i++) {
        sm->props[np].key = m->user_properties[i]->key;
        sm->props[np++].value = m->user_properties[i]->value;
    }
    if (sp->body_encoding == APACHE__ROCKETMQ__V2__ENCODING__GZIP && np < ST_MAX_PROPS) {
        sm->props[np].key = ST_PROP_ENCODING;
        sm->props[np++].value = "gzip";
    }
    if (sp->trace_context_present_case && sp->trace_context != NULL &&
        sp->trace_context[0] != '\0' && np < ST_MAX_PROPS) {
        sm->props[np].key = ST_PROP_TRACE;
        sm->props[np++].value = sp->trace_context;
    }
    if (px_msg_type_of(sp) == APACHE__ROCKETMQ__V2__MESSAGE_TYPE__TRANSACTION) {
        sm->tx_half = true;
        if (sp->orphaned_transaction_recovery_duration_present_case &&
            sp->orphaned_transaction_recovery_duration != NULL && np < ST_MAX_PROPS) {
            int64_t ms = px_duration_ms(sp->orphaned_transaction_recovery_duration);
            /* RocketMQ bounds the client's own check delay to 1 h. */
            if (ms > 3600 * 1000LL)
                ms = 3600 * 1000LL;
            if (ms > 0) {
                snprintf(txcheck, 24, "%lld", (long long)ms);
                sm->props[np].key = ST_PROP_TXCHECK;
                sm->props[np++].value = txcheck;
            }
        }
    }
    sm->nprops = np;
    sm->born_ts_ms = px_timestamp_ms(sp->born_timestamp);
    sm->born_host = sp->born_host;
    sm->msg_group = sp->message_group_present_case ? sp->message_group : NULL;
    sm->delivery_ts_ms = sp->delivery_timestamp_present_case
                             ? px_timestamp_ms(sp->delivery_timestamp)
                             : 0;
    sm->body = m->body.data;
    sm->body_len = (uint32_t)m->body.len;
    sm->queue_id = sp->queue_id >= 0 && (uint32_t)sp->queue_id < t->queue_count
                       ? sp->queue_id
                       : ST_QUEUE_ANY;
}

/* The in-flight append: holds a call reference until the store answers. */
typedef struct px_send_ctx {
    px_call_t *call;
    Apache__Rocketmq__V2__SendMessageRequest *req;
} px_send_ctx_t;

/* Replies with one entry per message.  codes/whys per message, or a single
 * code for all when codes == NULL. */
static void px_send_reply(px_call_t *call,
                          const Apache__Rocketmq__V2__SendMessageRequest *req,
                          const px_code_t *codes, px_code_t all,
                          const char *why, const st_append_item_t *items)
{
    size_t n = req->n_messages;
    Apache__Rocketmq__V2__SendMessageResponse resp =
        APACHE__ROCKETMQ__V2__SEND_MESSAGE_RESPONSE__INIT;
    Apache__Rocketmq__V2__Status top;
    Apache__Rocketmq__V2__SendResultEntry *ents = calloc(n ? n : 1, sizeof(*ents));
    Apache__Rocketmq__V2__SendResultEntry **ep = calloc(n ? n : 1, sizeof(*ep));
    Apache__Rocketmq__V2__Status *sts = calloc(n ? n : 1, sizeof(*sts));
    char (*recall)[ST_NAME_MAX + ST_MSG_ID_MAX + 8] = NULL;
    px_code_t topc = n > 0 && codes != NULL ? codes[0] : all;
    bool delayed = false;

    /* Recall handles (320 bytes each) only for a batch with delayed
     * messages. */
    for (size_t i = 0; items != NULL && i < n && !delayed; i++) {
        const px_sys_t *sp = req->messages[i]->system_properties;
        delayed = sp != NULL && sp->delivery_timestamp_present_case &&
                  sp->delivery_timestamp != NULL;
    }
    if (delayed)
        recall = malloc(n * sizeof(*recall));
    if (ents == NULL || ep == NULL || sts == NULL || (delayed && recall == NULL)) {
        free(ents);
        free(ep);
        free(sts);
        free(recall);
        px_reply_status(call, &apache__rocketmq__v2__send_message_response__descriptor,
                        PX_CODE(INTERNAL_SERVER_ERROR), "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const px_sys_t *sp = req->messages[i]->system_properties;
        px_code_t c = codes != NULL ? codes[i] : all;
        apache__rocketmq__v2__send_result_entry__init(&ents[i]);
        px_status_set(&sts[i], c, c == PX_CODE(OK) ? "OK" : why);
        ents[i].status = &sts[i];
        ents[i].message_id = sp != NULL && sp->message_id != NULL ? sp->message_id : "";
        if (items != NULL) {
            ents[i].offset = (int64_t)items[i].queue_offset;
            if (sp != NULL && px_msg_type_of(sp) ==
                                  APACHE__ROCKETMQ__V2__MESSAGE_TYPE__TRANSACTION)
                ents[i].transaction_id = ents[i].message_id;
            if (sp != NULL && sp->delivery_timestamp_present_case &&
                sp->delivery_timestamp != NULL &&
                px_recall_handle(req->messages[i]->topic->name, ents[i].message_id,
                                 recall[i], sizeof(recall[i])) == GT_OK)
                ents[i].recall_handle = recall[i];
        }
        if (c != topc)
            topc = PX_CODE(MULTIPLE_RESULTS);
        ep[i] = &ents[i];
    }
    px_status_set(&top, topc, topc == PX_CODE(OK) ? "OK" : why);
    resp.status = &top;
    resp.n_entries = n;
    resp.entries = ep;
    px_call_reply_pb(call, &resp.base);
    free(ents);
    free(ep);
    free(sts);
    free(recall);
}

/* rocketmq_messages_in_total and co. for a stored batch. */
static void px_send_count(px_svc_t *svc, const Apache__Rocketmq__V2__SendMessageRequest *req)
{
    static const char *const types[] = {
        [APACHE__ROCKETMQ__V2__MESSAGE_TYPE__NORMAL] = "normal",
        [APACHE__ROCKETMQ__V2__MESSAGE_TYPE__FIFO] = "fifo",
        [APACHE__ROCKETMQ__V2__MESSAGE_TYPE__DELAY] = "delay",
        [APACHE__ROCKETMQ__V2__MESSAGE_TYPE__TRANSACTION] = "transaction",
    };

    if (svc->metrics == NULL)
        return;
    for (size_t i = 0; i < req->n_messages; i++) {
        const Apache__Rocketmq__V2__Message *m = req->messages[i];
        unsigned t = m->system_properties != NULL
                         ? (unsigned)px_msg_type_of(m->system_properties) : 0;
        px_metrics_in(svc->metrics, m->topic->name,
                      t < sizeof(types) / sizeof(types[0]) && types[t] ? types[t] : "normal",
                      m->body.len);
    }
}

/* The store's answer, on the service's executor (st_exec_open): the items
 * are this callback's own, so the reply is built and sent right here. */
static void px_send_done(void *arg, gt_err_t err, const st_append_item_t *items,
                         size_t n)
{
    px_send_ctx_t *ctx = arg;
    char why[128];

    px_trace_sent(px_svc(ctx->call), ctx->call, ctx->req, err, items, n);
    if (err == GT_OK && n == ctx->req->n_messages) {
        px_send_count(px_svc(ctx->call), ctx->req);
        px_send_reply(ctx->call, ctx->req, NULL, PX_CODE(OK), "OK", items);
    } else {
        err = err == GT_OK ? GT_EIO : err;
        snprintf(why, sizeof(why), "store: %s%s", gt_err_str(err),
                 st_err_retriable(err) ? " (retry later)" : "");
        px_send_reply(ctx->call, ctx->req, NULL, px_code_from_err(err), why, NULL);
    }
    px_request_free(&ctx->req->base);
    px_call_unref(ctx->call);
    free(ctx);
}

/* Total body bytes of a batch. */
static int64_t px_send_batch_bytes(const Apache__Rocketmq__V2__SendMessageRequest *req)
{
    int64_t n = 0;
    for (size_t i = 0; i < req->n_messages; i++)
        n += (int64_t)req->messages[i]->body.len;
    return n;
}

void px_send_message(px_call_t *call, ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *rd = PX_DESC(send_message_response);
    Apache__Rocketmq__V2__SendMessageRequest *req =
        (Apache__Rocketmq__V2__SendMessageRequest *)msg;
    px_code_t code, *codes = NULL;
    st_message_t *sms = NULL;
    char (*txchecks)[24] = NULL;
    px_send_ctx_t *ctx = NULL;
    const char *tname;
    char why[256] = "";
    st_topic_t t;
    gt_err_t rc;
    bool bad = false;
    int64_t now = px_now_ms();

    if (px_client_id(call) == NULL) {
        px_reply_status(call, rd, PX_CODE(CLIENT_ID_REQUIRED),
                        "x-mq-client-id metadata is required");
        return;
    }
    if (req->n_messages == 0 || req->n_messages > PX_MAX_BATCH) {
        px_send_reply(call, req, NULL, PX_CODE(MESSAGE_CORRUPTED),
                      req->n_messages ? "batch too large" : "no message in the request",
                      NULL);
        goto out;
    }
    if (req->n_messages > 1 && px_send_batch_bytes(req) >
                                   px_svc(call)->cfg->message.max_batch_bytes) {
        snprintf(why, sizeof(why), "the batch's bodies exceed %lld bytes "
                 "(message.max_batch_bytes)",
                 (long long)px_svc(call)->cfg->message.max_batch_bytes);
        px_send_reply(call, req, NULL, PX_CODE(MESSAGE_BODY_TOO_LARGE), why, NULL);
        goto out;
    }
    tname = req->messages[0]->topic ? req->messages[0]->topic->name : NULL;
    for (size_t i = 1; i < req->n_messages; i++) {
        const Apache__Rocketmq__V2__Resource *r = req->messages[i]->topic;
        if (tname == NULL || r == NULL || r->name == NULL || strcmp(r->name, tname) != 0) {
            px_send_reply(call, req, NULL, PX_CODE(MESSAGE_CORRUPTED),
                          "messages of one batch must share one topic", NULL);
            goto out;
        }
    }
    code = px_check_topic(req->messages[0]->topic, why, sizeof(why));
    if (code == PX_CODE(OK) && px_name_is_derived(tname)) {
        snprintf(why, sizeof(why), "topic \"%.160s\" is a system topic", tname);
        code = PX_CODE(ILLEGAL_TOPIC);
    }
    if (code != PX_CODE(OK)) {
        px_send_reply(call, req, NULL, code, why, NULL);
        goto out;
    }
    if (px_topic_autocreate(call, tname, msg))
        goto out; /* runs again once the topic exists */
    if (px_topic_find(px_svc(call), tname, &t) != GT_OK) {
        rc = px_topic_autocreate_err();
        snprintf(why, sizeof(why), "topic \"%.160s\" does not exist%s%s", tname,
                 rc != GT_OK ? ": cannot create it: " : "",
                 rc != GT_OK ? gt_err_str(rc) : "");
        px_send_reply(call, req, NULL, rc == GT_OK ? PX_CODE(TOPIC_NOT_FOUND)
                                                   : px_code_from_err(rc),
                      why, NULL);
        goto out;
    }
    if (!(t.perm & ST_PERM_WRITE)) {
        snprintf(why, sizeof(why), "topic \"%.160s\" is not writable", tname);
        px_send_reply(call, req, NULL, PX_CODE(FORBIDDEN), why, NULL);
        goto out;
    }
    codes = calloc(req->n_messages, sizeof(*codes));
    sms = malloc(req->n_messages * sizeof(*sms)); /* px_send_fill sets them */
    ctx = calloc(1, sizeof(*ctx));
    if (codes == NULL || sms == NULL || ctx == NULL) {
        px_send_reply(call, req, NULL, PX_CODE(INTERNAL_SERVER_ERROR), "out of memory", NULL);
        goto out;
    }
    for (size_t i = 0; i < req->n_messages; i++) {
        char w[256];
        codes[i] = px_send_validate(req->messages[i], &t, now,
                                    px_svc(call)->cfg->message.max_delay_ms, w,
                                    sizeof(w));
        if (codes[i] != PX_CODE(OK) && !bad) {
            bad = true;
            snprintf(why, sizeof(why), "%s", w);
        }
    }
    if (bad) {
        /* Atomic batch: valid siblings of an invalid message are not stored
         * either; they carry the first error. */
        px_code_t first = PX_CODE(OK);
        for (size_t i = 0; i < req->n_messages && first == PX_CODE(OK); i++)
            first = codes[i];
        for (size_t i = 0; i < req->n_messages; i++)
            if (codes[i] == PX_CODE(OK))
                codes[i] = first;
        px_send_reply(call, req, codes, PX_CODE(OK), why, NULL);
        goto out;
    }
    if ((txchecks = calloc(req->n_messages, sizeof(*txchecks))) == NULL) {
        px_send_reply(call, req, NULL, PX_CODE(INTERNAL_SERVER_ERROR), "out of memory", NULL);
        goto out;
    }
    for (size_t i = 0; i < req->n_messages; i++)
        px_send_fill(&sms[i], req->messages[i], &t, txchecks[i]);
    ctx->call = call;
    ctx->req = req;
    px_keep_request(call);
    px_call_ref(call);
    px_svc_append(px_svc(call), t.name, sms, req->n_messages, px_send_done, ctx);
    ctx = NULL;
out:
    free(codes);
    free(sms);
    free(txchecks);
    free(ctx);
}
