/* Transactions and recall: EndTransaction, the orphaned-transaction
 * checker, RecallMessage.
 *
 * A TRANSACTION send stores a half message (invisible to consumers).  The
 * producer's EndTransaction COMMIT makes it visible, ROLLBACK discards it.
 * A half message left unresolved (message.tx_check_after_ms, or the
 * message's own orphaned_transaction_recovery_duration) is checked: the
 * server sends RecoverOrphanedTransactionCommand down the Telemetry stream
 * of a live producer of that topic, whose checker answers with
 * EndTransaction(source = SOURCE_SERVER_CHECK).  After message.tx_max_checks
 * checks the store discards it.
 *
 * Recall handles name the topic and message id: "R1.<topic>.<msg id>"
 * (topic names cannot contain '.'). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt_log.h"
#include "px_svc_int.h"

#define PX_DESC(x) (&apache__rocketmq__v2__##x##__descriptor)
#define PX_RECALL_PREFIX "R1."

/* ---- recall handles ---- */

gt_err_t px_recall_handle(const char *topic, const char *msg_id, char *out,
                          size_t outlen)
{
    int n = snprintf(out, outlen, PX_RECALL_PREFIX "%s.%s", topic, msg_id);
    return n > 0 && (size_t)n < outlen ? GT_OK : GT_ERANGE;
}

/* Splits a recall handle; topic and id point into `buf` (a copy). */
static bool px_recall_parse(const char *h, char *buf, size_t buflen,
                            const char **topic, const char **msg_id)
{
    char *dot;

    if (h == NULL || strncmp(h, PX_RECALL_PREFIX, strlen(PX_RECALL_PREFIX)) != 0 ||
        strlen(h) >= buflen)
        return false;
    snprintf(buf, buflen, "%s", h + strlen(PX_RECALL_PREFIX));
    dot = strchr(buf, '.');
    if (dot == NULL || dot == buf || dot[1] == '\0')
        return false;
    *dot = '\0';
    *topic = buf;
    *msg_id = dot + 1;
    return true;
}

/* ---- EndTransaction ---- */

typedef struct px_end_ctx {
    px_call_t *call;
    char msg_id[ST_MSG_ID_MAX];
    char topic[ST_NAME_MAX + 1];
    bool commit;
    int source;
} px_end_ctx_t;

static void px_end_done(void *arg, gt_err_t err)
{
    px_end_ctx_t *ctx = arg;
    char why[200];

    px_trace_tx_end(px_svc(ctx->call), ctx->call, ctx->topic, ctx->msg_id, ctx->commit, err);
    if (err == GT_OK) {
        GT_LOG(DEBUG, "svc", "transaction %s %s (%s)", ctx->msg_id,
               ctx->commit ? "committed" : "rolled back",
               ctx->source == APACHE__ROCKETMQ__V2__TRANSACTION_SOURCE__SOURCE_SERVER_CHECK
                   ? "server check" : "client");
        px_metrics_tx(px_svc(ctx->call)->metrics, ctx->topic, ctx->commit);
        px_reply_status(ctx->call, PX_DESC(end_transaction_response), PX_CODE(OK), "OK");
    } else if (err == GT_ENOTFOUND) {
        snprintf(why, sizeof(why), "no unresolved transactional message %.64s in this "
                 "topic (unknown, or already committed, rolled back or discarded)",
                 ctx->msg_id);
        px_reply_status(ctx->call, PX_DESC(end_transaction_response),
                        PX_CODE(NOT_FOUND), why);
    } else {
        px_reply_status(ctx->call, PX_DESC(end_transaction_response),
                        px_code_from_err(err), gt_err_str(err));
    }
    px_call_unref(ctx->call);
    free(ctx);
}

void px_end_transaction(px_call_t *call, ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *rd = PX_DESC(end_transaction_response);
    Apache__Rocketmq__V2__EndTransactionRequest *req =
        (Apache__Rocketmq__V2__EndTransactionRequest *)msg;
    px_end_ctx_t *ctx;
    st_topic_t t;
    char why[256];
    px_code_t code;

    if (!px_require_client(call, rd))
        return;
    if ((code = px_check_topic(req->topic, why, sizeof(why))) != PX_CODE(OK)) {
        px_reply_status(call, rd, code, why);
        return;
    }
    if (req->transaction_id == NULL || req->transaction_id[0] == '\0' ||
        strspn(req->transaction_id, " \t\r\n") == strlen(req->transaction_id)) {
        px_reply_status(call, rd, PX_CODE(INVALID_TRANSACTION_ID),
                        "transaction id is blank");
        return;
    }
    if (req->message_id == NULL || req->message_id[0] == '\0' ||
        strlen(req->message_id) >= ST_MSG_ID_MAX) {
        px_reply_status(call, rd, PX_CODE(ILLEGAL_MESSAGE_ID), "message id is blank or too long");
        return;
    }
    if (req->resolution != APACHE__ROCKETMQ__V2__TRANSACTION_RESOLUTION__COMMIT &&
        req->resolution != APACHE__ROCKETMQ__V2__TRANSACTION_RESOLUTION__ROLLBACK) {
        px_reply_status(call, rd, PX_CODE(BAD_REQUEST),
                        "resolution must be COMMIT or ROLLBACK");
        return;
    }
    if (!px_topic_or_reply(call, rd, req->topic->name, &t))
        return;
    if ((ctx = calloc(1, sizeof(*ctx))) == NULL) {
        px_reply_status(call, rd, PX_CODE(INTERNAL_SERVER_ERROR), "out of memory");
        return;
    }
    ctx->call = call;
    snprintf(ctx->msg_id, sizeof(ctx->msg_id), "%s", req->message_id);
    snprintf(ctx->topic, sizeof(ctx->topic), "%s", t.name);
    ctx->commit = req->resolution == APACHE__ROCKETMQ__V2__TRANSACTION_RESOLUTION__COMMIT;
    ctx->source = (int)req->source;
    px_call_ref(call);
    st_tx_end(px_svc(call)->store, t.name, req->message_id, ctx->commit, px_end_done, ctx);
}

/* ---- RecallMessage ---- */

typedef struct px_recall_ctx {
    px_call_t *call;
    char msg_id[ST_MSG_ID_MAX];
} px_recall_ctx_t;

static void px_recall_reply(px_call_t *call, px_code_t code, const char *why,
                            const char *msg_id)
{
    Apache__Rocketmq__V2__RecallMessageResponse resp =
        APACHE__ROCKETMQ__V2__RECALL_MESSAGE_RESPONSE__INIT;
    Apache__Rocketmq__V2__Status st;

    px_status_set(&st, code, why);
    resp.status = &st;
    resp.message_id = (char *)(msg_id != NULL ? msg_id : "");
    px_call_reply_pb(call, &resp.base);
}

static void px_recall_done(void *arg, gt_err_t err)
{
    px_recall_ctx_t *ctx = arg;

    if (err == GT_OK)
        px_recall_reply(ctx->call, PX_CODE(OK), "OK", ctx->msg_id);
    else if (err == GT_ENOTFOUND)
        px_recall_reply(ctx->call, PX_CODE(NOT_FOUND),
                        "no delayed message with this recall handle", ctx->msg_id);
    else if (err == GT_EINVAL)
        px_recall_reply(ctx->call, PX_CODE(BAD_REQUEST),
                        "too late to recall: the delivery time has passed", ctx->msg_id);
    else
        px_recall_reply(ctx->call, px_code_from_err(err), gt_err_str(err), ctx->msg_id);
    px_call_unref(ctx->call);
    free(ctx);
}

void px_recall_message(px_call_t *call, ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *rd = PX_DESC(recall_message_response);
    Apache__Rocketmq__V2__RecallMessageRequest *req =
        (Apache__Rocketmq__V2__RecallMessageRequest *)msg;
    px_recall_ctx_t *ctx;
    const char *topic = NULL, *msg_id = NULL;
    char buf[ST_NAME_MAX + ST_MSG_ID_MAX + 8], why[256];
    px_code_t code;
    st_topic_t t;

    if (!px_require_client(call, rd))
        return;
    if ((code = px_check_topic(req->topic, why, sizeof(why))) != PX_CODE(OK)) {
        px_recall_reply(call, code, why, NULL);
        return;
    }
    if (!px_recall_parse(req->recall_handle, buf, sizeof(buf), &topic, &msg_id) ||
        strcmp(topic, req->topic->name) != 0 || strlen(msg_id) >= ST_MSG_ID_MAX) {
        px_recall_reply(call, PX_CODE(BAD_REQUEST), "invalid recall handle", NULL);
        return;
    }
    if (px_topic_find(px_svc(call), topic, &t) != GT_OK) {
        snprintf(why, sizeof(why), "topic \"%.160s\" does not exist", topic);
        px_recall_reply(call, PX_CODE(TOPIC_NOT_FOUND), why, NULL);
        return;
    }
    if ((ctx = calloc(1, sizeof(*ctx))) == NULL) {
        px_recall_reply(call, PX_CODE(INTERNAL_SERVER_ERROR), "out of memory", NULL);
        return;
    }
    ctx->call = call;
    snprintf(ctx->msg_id, sizeof(ctx->msg_id), "%s", msg_id);
    px_call_ref(call);
    st_recall(px_svc(call)->store, t.name, msg_id, px_recall_done, ctx);
}

/* ---- orphaned transaction checks ---- */

/* Finds a live producer publishing `topic` and takes a reference on its
 * Telemetry stream; NULL if none. */
static px_call_t *px_tx_producer(px_svc_t *svc, const char *topic)
{
    px_call_t *call = NULL;

    pthread_mutex_lock(&svc->clients_mu);
    for (px_client_t *c = svc->clients; c != NULL && call == NULL; c = c->next) {
        if (c->telemetry == NULL ||
            c->client_type != APACHE__ROCKETMQ__V2__CLIENT_TYPE__PRODUCER)
            continue;
        for (size_t i = 0; i < c->n_topics; i++) {
            if (strcmp(c->topics[i], topic) == 0) {
                call = c->telemetry;
                px_call_ref(call);
                break;
            }
        }
    }
    pthread_mutex_unlock(&svc->clients_mu);
    return call;
}

/* One claimed check: the command to send once the store says the check is
 * ours (NULL prod: counted without a producer to ask). */
typedef struct px_tx_claim {
    px_call_t *prod;
    uint8_t *cmd;
    size_t cmd_len;
    char msg_id[ST_MSG_ID_MAX];
} px_tx_claim_t;

static void px_tx_claimed(void *arg, gt_err_t err)
{
    px_tx_claim_t *cl = arg;

    /* GT_ERANGE: this check was the last one and discarded the message; the
     * producer is still asked (its answer then finds nothing), so that it
     * gets tx_max_checks checks in all.  GT_EBUSY: another proxy sharing the
     * store claimed this check and asks its producer. */
    if ((err == GT_OK || err == GT_ERANGE) && cl->prod != NULL)
        px_call_send(cl->prod, cl->cmd, cl->cmd_len);
    if (err == GT_ERANGE)
        GT_LOG(WARN, "svc", "transactional message %s discarded after the maximum "
               "number of checks", cl->msg_id);
    if (cl->prod != NULL)
        px_call_unref(cl->prod);
    free(cl->cmd);
    free(cl);
}

/* The RecoverOrphanedTransactionCommand for m, packed; NULL on ENOMEM. */
static uint8_t *px_tx_command(const st_message_t *m, size_t *len)
{
    Apache__Rocketmq__V2__TelemetryCommand cmd = APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__INIT;
    Apache__Rocketmq__V2__RecoverOrphanedTransactionCommand rc =
        APACHE__ROCKETMQ__V2__RECOVER_ORPHANED_TRANSACTION_COMMAND__INIT;
    px_msg_view_t *v = malloc(sizeof(*v));
    uint8_t *buf = NULL;

    if (v == NULL)
        return NULL;
    px_msg_view_build(v, m, m->topic, "", "", NULL, 1, 0);
    v->sp.message_type = APACHE__ROCKETMQ__V2__MESSAGE_TYPE__TRANSACTION;
    rc.message = &v->msg;
    rc.transaction_id = (char *)m->msg_id;
    cmd.command_case =
        APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__COMMAND_RECOVER_ORPHANED_TRANSACTION_COMMAND;
    cmd.recover_orphaned_transaction_command = &rc;
    *len = protobuf_c_message_get_packed_size(&cmd.base);
    if ((buf = malloc(*len > 0 ? *len : 1)) != NULL)
        protobuf_c_message_pack(&cmd.base, buf);
    free(v);
    return buf;
}

/* Shared store: was m listed, with the same check count, at the previous
 * check and nobody claimed it since?  Then no proxy sharing the store has
 * a producer of its topic.  Records m for the next check otherwise. */
static bool px_tx_unclaimed(px_svc_t *svc, const st_message_t *m, px_tx_seen_t *next,
                            size_t *n_next)
{
    for (size_t i = 0; i < svc->n_tx_seen; i++) {
        const px_tx_seen_t *s = &svc->tx_seen[i];
        if (s->checks == m->tx_checks && strcmp(s->msg_id, m->msg_id) == 0 &&
            strcmp(s->topic, m->topic) == 0)
            return true;
    }
    if (*n_next < PX_TX_CHECK_BATCH) {
        px_tx_seen_t *s = &next[(*n_next)++];
        snprintf(s->topic, sizeof(s->topic), "%s", m->topic);
        snprintf(s->msg_id, sizeof(s->msg_id), "%s", m->msg_id);
        s->checks = m->tx_checks;
    }
    return false;
}

/* The store's list of unresolved half messages: ask their producers.  Each
 * check is claimed first (st_tx_checked with the check count listed): with
 * a remote store several proxies see the same list, and only the one whose
 * claim wins asks its producer, so a client is asked once per period.  A
 * proxy with no producer of the topic leaves the check to one that has,
 * and counts it itself (a remote store: one period later, if nobody has
 * claimed it meanwhile) so that a transaction whose producers never return
 * is discarded after tx_max_checks, as upstream does. */
static void px_tx_due(void *arg, gt_err_t err, const st_message_t *msgs,
                      size_t n, uint64_t next)
{
    px_svc_t *svc = arg;
    /* remote and cluster modes: other proxies may share the store */
    bool shared = svc->cfg->store.mode != NULL && strcmp(svc->cfg->store.mode, "local") != 0;
    px_tx_seen_t seen[PX_TX_CHECK_BATCH];
    size_t n_seen = 0;
    (void)next;

    for (size_t i = 0; err == GT_OK && i < n; i++) {
        const st_message_t *m = &msgs[i];
        px_tx_claim_t *cl = calloc(1, sizeof(*cl));

        if (cl == NULL)
            break;
        snprintf(cl->msg_id, sizeof(cl->msg_id), "%s", m->msg_id);
        if ((cl->prod = px_tx_producer(svc, m->topic)) != NULL &&
            (cl->cmd = px_tx_command(m, &cl->cmd_len)) == NULL) {
            px_call_unref(cl->prod);
            free(cl);
            break;
        }
        if (cl->prod == NULL && shared && !px_tx_unclaimed(svc, m, seen, &n_seen)) {
            free(cl);
            continue;
        }
        st_tx_checked(svc->store, m->topic, m->msg_id, m->tx_checks,
                      (uint32_t)svc->cfg->message.tx_max_checks, px_tx_claimed, cl);
    }
    if (err == GT_OK) {
        memcpy(svc->tx_seen, seen, n_seen * sizeof(seen[0]));
        svc->n_tx_seen = n_seen;
    }
    atomic_store(&svc->tx_pending_out, false);
}

void px_tx_check_tick(px_svc_t *svc)
{
    int64_t now = px_now_ms();

    if (now < svc->next_tx_check_ms)
        return;
    svc->next_tx_check_ms = now + svc->cfg->message.tx_check_interval_ms;
    if (atomic_exchange(&svc->tx_pending_out, true))
        return; /* the last one has not answered yet (a slow store) */
    st_tx_pending(svc->store, svc->cfg->message.tx_check_after_ms, PX_TX_CHECK_BATCH,
                  px_tx_due, svc);
}
