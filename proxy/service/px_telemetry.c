/* Telemetry: the client's settings stream.
 *
 * A client opens one Telemetry stream per endpoint and sends its Settings
 * first; the SDKs block start-up until the server answers with the merged
 * settings (producers need an exponential backoff policy and a non-zero
 * max_body_size, consumers get the group's retry policy, batch size and
 * long-poll timeout).  The stream is registered as the client's channel in
 * the registry (px_client.c), kept referenced so later work can push
 * commands such as orphaned-transaction checks down it; when it ends, the
 * client is gone and its messages are given back. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt_log.h"
#include "px_svc_int.h"

/* Producers: retry sends at 10 ms, 20 ms, … up to 1 s (seconds granularity
 * in some SDKs rounds these to 0 and 1). */
#define PX_PRODUCER_ATTEMPTS   3
#define PX_PRODUCER_BACKOFF_MS 10
#define PX_PRODUCER_BACKOFF_MAX_MS 1000
/* Consumers: redelivery backoff 1 s doubling up to 60 s. */
#define PX_CONSUMER_BACKOFF_MS 1000
#define PX_CONSUMER_BACKOFF_MAX_MS 60000

/* Per-call state: the client id this stream belongs to. */
typedef struct px_tele {
    char client_id[128];
    bool registered;
} px_tele_t;

/* Registers the stream as the client's telemetry channel, with the
 * topics a producer publishes (for orphaned-transaction checks). */
static void px_tele_register(px_svc_t *svc, px_call_t *call, px_tele_t *t,
                             int client_type,
                             const Apache__Rocketmq__V2__Publishing *pub,
                             const char *group, const ProtobufCMessage *reply)
{
    const char *lang = px_call_metadata(call, "x-mq-language");
    const char *ver = px_call_metadata(call, "x-mq-client-version");
    char **topics = NULL;
    size_t n = 0;
    size_t rlen = protobuf_c_message_get_packed_size(reply);
    uint8_t *rbuf = malloc(rlen ? rlen : 1);

    if (rbuf != NULL)
        protobuf_c_message_pack(reply, rbuf);

    if (pub != NULL && pub->n_topics > 0 &&
        (topics = calloc(pub->n_topics, sizeof(*topics))) != NULL) {
        for (size_t i = 0; i < pub->n_topics; i++)
            if (pub->topics[i]->name != NULL &&
                (topics[n] = strdup(pub->topics[i]->name)) != NULL)
                n++;
    }
    px_client_t *c;
    px_call_t *old = NULL;

    pthread_mutex_lock(&svc->clients_mu);
    c = px_client_get_locked(svc, t->client_id, true);
    if (c != NULL) {
        c->client_type = client_type;
        snprintf(c->language, sizeof(c->language), "%s", lang != NULL ? lang : "");
        snprintf(c->version, sizeof(c->version), "%s", ver != NULL ? ver : "");
        snprintf(c->peer, sizeof(c->peer), "%s", px_call_peer(call));
        snprintf(c->group, sizeof(c->group), "%s", group != NULL ? group : "");
        if (c->since_ms == 0)
            c->since_ms = px_now_ms();
        px_client_topics_free(c);
        c->topics = topics;
        c->n_topics = n;
        topics = NULL;
        n = 0;
        free(c->settings_reply);
        c->settings_reply = rbuf;
        c->settings_len = rlen;
        c->settings_resends = rbuf != NULL ? PX_SETTINGS_RESENDS : 0;
        c->settings_resend_at_ms = px_now_ms() + PX_SETTINGS_RESEND_MS;
        rbuf = NULL;
        if (c->telemetry != call) {
            old = c->telemetry;
            px_call_ref(call);
            c->telemetry = call;
        }
        t->registered = true;
    }
    pthread_mutex_unlock(&svc->clients_mu);
    if (old != NULL)
        px_call_unref(old);
    for (size_t i = 0; i < n; i++)
        free(topics[i]);
    free(topics);
    free(rbuf);
}

static void px_backoff(Apache__Rocketmq__V2__RetryPolicy *rp,
                       Apache__Rocketmq__V2__ExponentialBackoff *eb,
                       Google__Protobuf__Duration *ini,
                       Google__Protobuf__Duration *max, int attempts,
                       int64_t ini_ms, int64_t max_ms)
{
    apache__rocketmq__v2__retry_policy__init(rp);
    apache__rocketmq__v2__exponential_backoff__init(eb);
    px_duration_set(ini, ini_ms);
    px_duration_set(max, max_ms);
    eb->initial = ini;
    eb->max = max;
    eb->multiplier = 2.0f;
    rp->max_attempts = attempts;
    rp->strategy_case = APACHE__ROCKETMQ__V2__RETRY_POLICY__STRATEGY_EXPONENTIAL_BACKOFF;
    rp->exponential_backoff = eb;
}

/* Answers a Settings command with the merged settings. Returns false when
 * the stream was finished with an error instead. */
static bool px_tele_settings(px_call_t *call, px_tele_t *t,
                             const Apache__Rocketmq__V2__Settings *in)
{
    px_svc_t *svc = px_svc(call);
    Apache__Rocketmq__V2__TelemetryCommand out =
        APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__INIT;
    Apache__Rocketmq__V2__Settings s = APACHE__ROCKETMQ__V2__SETTINGS__INIT;
    Apache__Rocketmq__V2__Status st;
    Apache__Rocketmq__V2__RetryPolicy rp;
    Apache__Rocketmq__V2__ExponentialBackoff eb;
    Google__Protobuf__Duration ini, max, lp;
    Apache__Rocketmq__V2__Publishing pub = APACHE__ROCKETMQ__V2__PUBLISHING__INIT;
    Apache__Rocketmq__V2__Subscription sub = APACHE__ROCKETMQ__V2__SUBSCRIPTION__INIT;
    st_group_t g;
    char why[256];

    s.client_type_present_case = in->client_type_present_case;
    s.client_type = in->client_type;
    s.access_point_present_case = in->access_point_present_case;
    s.access_point = in->access_point;
    s.request_timeout_present_case = in->request_timeout_present_case;
    s.request_timeout = in->request_timeout;
    s.user_agent = in->user_agent;
    s.metric = in->metric;
    s.backoff_policy_present_case =
        APACHE__ROCKETMQ__V2__SETTINGS__BACKOFF_POLICY_PRESENT_BACKOFF_POLICY;
    s.backoff_policy = &rp;
    if (in->pub_sub_case == APACHE__ROCKETMQ__V2__SETTINGS__PUB_SUB_PUBLISHING) {
        px_backoff(&rp, &eb, &ini, &max, PX_PRODUCER_ATTEMPTS,
                   PX_PRODUCER_BACKOFF_MS, PX_PRODUCER_BACKOFF_MAX_MS);
        if (in->backoff_policy != NULL && in->backoff_policy->max_attempts > 0)
            rp.max_attempts = in->backoff_policy->max_attempts;
        pub.n_topics = in->publishing->n_topics;
        pub.topics = in->publishing->topics;
        pub.max_body_size = PX_MAX_BODY_BYTES;
        pub.validate_message_type = true;
        s.pub_sub_case = APACHE__ROCKETMQ__V2__SETTINGS__PUB_SUB_PUBLISHING;
        s.publishing = &pub;
    } else if (in->pub_sub_case == APACHE__ROCKETMQ__V2__SETTINGS__PUB_SUB_SUBSCRIPTION) {
        const Apache__Rocketmq__V2__Subscription *is = in->subscription;
        px_code_t code = px_check_group(is->group, why, sizeof(why));
        if (code == PX_CODE(OK) &&
            px_group_find(svc, is->group->name, &g) != GT_OK) {
            snprintf(why, sizeof(why), "consumer group \"%.160s\" does not exist",
                     is->group->name);
            code = PX_CODE(CONSUMER_GROUP_NOT_FOUND);
        }
        if (code != PX_CODE(OK)) {
            /* In-band, like every RocketMQ error: the SDK fails start-up
             * with this code instead of waiting. */
            px_status_set(&st, code, why);
            out.status_present_case =
                APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__STATUS_PRESENT_STATUS;
            out.status = &st;
            px_call_send_pb(call, &out.base);
            return true;
        }
        px_backoff(&rp, &eb, &ini, &max, (int)g.max_delivery_attempts,
                   PX_CONSUMER_BACKOFF_MS, PX_CONSUMER_BACKOFF_MAX_MS);
        sub.group_present_case = is->group_present_case;
        sub.group = is->group;
        sub.n_subscriptions = is->n_subscriptions;
        sub.subscriptions = is->subscriptions;
        sub.fifo_present_case = APACHE__ROCKETMQ__V2__SUBSCRIPTION__FIFO_PRESENT_FIFO;
        sub.fifo = g.fifo;
        sub.receive_batch_size_present_case =
            APACHE__ROCKETMQ__V2__SUBSCRIPTION__RECEIVE_BATCH_SIZE_PRESENT_RECEIVE_BATCH_SIZE;
        sub.receive_batch_size = PX_RECEIVE_BATCH;
        px_duration_set(&lp, PX_DEFAULT_LONG_POLL_MS);
        sub.long_polling_timeout_present_case =
            APACHE__ROCKETMQ__V2__SUBSCRIPTION__LONG_POLLING_TIMEOUT_PRESENT_LONG_POLLING_TIMEOUT;
        sub.long_polling_timeout = &lp;
        s.pub_sub_case = APACHE__ROCKETMQ__V2__SETTINGS__PUB_SUB_SUBSCRIPTION;
        s.subscription = &sub;
    } else {
        px_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
                       "settings carry neither publishing nor subscription");
        return false;
    }
    px_status_set(&st, PX_CODE(OK), "OK");
    out.status_present_case =
        APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__STATUS_PRESENT_STATUS;
    out.status = &st;
    out.command_case = APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__COMMAND_SETTINGS;
    out.settings = &s;
    px_tele_register(svc, call, t, (int)in->client_type,
                     s.pub_sub_case == APACHE__ROCKETMQ__V2__SETTINGS__PUB_SUB_PUBLISHING
                         ? in->publishing : NULL,
                     s.pub_sub_case == APACHE__ROCKETMQ__V2__SETTINGS__PUB_SUB_SUBSCRIPTION
                         ? in->subscription->group->name : NULL,
                     &out.base);
    px_call_send_pb(call, &out.base);
    GT_LOG(DEBUG, "svc", "client %s settings: type %d", t->client_id,
           (int)in->client_type);
    return true;
}

void px_telemetry_message(px_call_t *call, ProtobufCMessage *msg)
{
    Apache__Rocketmq__V2__TelemetryCommand *cmd =
        (Apache__Rocketmq__V2__TelemetryCommand *)msg;
    px_tele_t *t = px_call_user(call);
    const char *id = px_client_id(call);

    if (id == NULL) {
        px_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
                       "x-mq-client-id metadata is required");
        return;
    }
    if (t == NULL) {
        if ((t = calloc(1, sizeof(*t))) == NULL) {
            px_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
        snprintf(t->client_id, sizeof(t->client_id), "%s", id);
        /* on_interrupt may read it concurrently on another worker. */
        pthread_mutex_lock(&px_svc(call)->clients_mu);
        px_call_set_user(call, t);
        pthread_mutex_unlock(&px_svc(call)->clients_mu);
    }
    switch (cmd->command_case) {
    case APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__COMMAND_SETTINGS:
        px_tele_settings(call, t, cmd->settings);
        break;
    case APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__COMMAND_THREAD_STACK_TRACE:
    case APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__COMMAND_VERIFY_MESSAGE_RESULT:
        break; /* answers to commands we do not send yet */
    default:
        GT_LOG(DEBUG, "svc", "client %s: ignoring telemetry command %d",
               t->client_id, (int)cmd->command_case);
        break;
    }
}

/* A malformed command (or one refused for overload) ends the stream:
 * Telemetry answers no per-command status. */
void px_telemetry_reject(px_call_t *call, px_reject_t why)
{
    if (px_client_id(call) == NULL)
        px_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
                       "x-mq-client-id metadata is required");
    else if (why == PX_REJECT_MALFORMED)
        px_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
                       "malformed TelemetryCommand");
    else
        px_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                       "too many request bytes in flight");
}

void px_telemetry_half_close(px_call_t *call)
{
    px_call_finish(call, GRPC_STATUS_OK, NULL);
}

void px_telemetry_interrupt(px_call_t *call, px_interrupt_t why)
{
    px_svc_t *svc = px_svc(call);
    px_tele_t *t;
    px_client_t *c;
    bool mine = false, registered;

    /* Set by on_message, which may run at the same time on another
     * worker: read under the lock they are published with. */
    pthread_mutex_lock(&svc->clients_mu);
    t = px_call_user(call);
    registered = t != NULL && t->registered;
    pthread_mutex_unlock(&svc->clients_mu);

    if (why == PX_INTERRUPT_SHUTDOWN) {
        /* End the stream cleanly: the SDKs reconnect after an OK end, while
         * some (Node 1.0.8) have already dropped their error listener
         * during their own shutdown and would crash on an error status. */
        px_call_finish(call, GRPC_STATUS_OK, NULL);
        return;
    }
    if (why != PX_INTERRUPT_CLOSED || !registered)
        return;
    if (atomic_load(&svc->draining)) {
        /* The server is stopping, not the client: keep what it holds
         * invisible (its receipt handles stay valid across the restart);
         * only drop the stream. */
        px_call_t *drop = NULL;
        pthread_mutex_lock(&svc->clients_mu);
        c = px_client_get_locked(svc, t->client_id, false);
        if (c != NULL && c->telemetry == call) {
            drop = call;
            c->telemetry = NULL;
        }
        pthread_mutex_unlock(&svc->clients_mu);
        if (drop != NULL)
            px_call_unref(drop);
        return;
    }
    /* The stream is over: if it is still the client's channel, the client
     * is gone. */
    pthread_mutex_lock(&svc->clients_mu);
    c = px_client_get_locked(svc, t->client_id, false);
    mine = c != NULL && c->telemetry == call;
    pthread_mutex_unlock(&svc->clients_mu);
    if (mine)
        px_client_forget(svc, t->client_id);
}

void px_telemetry_done(px_call_t *call)
{
    free(px_call_user(call));
}
