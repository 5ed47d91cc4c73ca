/* The auth gate of the RocketMQ methods: every MessagingService (and
 * Admin) handler is reached through px_auth_gate(), which, when auth is
 * enabled, authenticates the call's metadata and checks the resources its
 * request names against the ACLs (px_auth.h) before the handler runs.
 *
 * What each request needs follows RocketMQ 5's authorization context
 * builder for gRPC requests:
 *   SendMessage, EndTransaction, RecallMessage   Pub on the topic
 *   QueryRoute                                   Pub or Sub on the topic
 *   Heartbeat (consumers), NotifyClientTermination,
 *   ChangeInvisibleDuration                      Sub on the group
 *   QueryAssignment, ReceiveMessage, AckMessage,
 *   ForwardMessageToDeadLetterQueue, PullMessage Sub on the group and topic
 *   Telemetry settings                           Pub on each publishing topic,
 *                                                Sub on the group and each
 *                                                subscribed topic
 * and, for the RPCs RocketMQ 5's gRPC proxy does not have, its remoting
 * rules: UpdateOffset Sub or Update, GetOffset / QueryOffset Sub or Get,
 * on the group and topic.  A %RETRY% / %DLQ% topic stands for its group
 * (Sub), as RocketMQ's resources do.  A request that lacks a name its
 * rule needs is left to its handler, which refuses it (BAD_REQUEST,
 * ILLEGAL_TOPIC...).  Admin RPCs need an admin user.
 *
 * Refusals are in-band, in the method's response type: UNAUTHORIZED
 * (40100) for missing or bad credentials, FORBIDDEN (40300) for a denied
 * resource; a response type without a status (Admin) finishes the call
 * with gRPC UNAUTHENTICATED / PERMISSION_DENIED. */
#include <stdio.h>
#include <string.h>

#include "apache/rocketmq/v2/admin.pb-c.h"
#include "gt_log.h"
#include "px_auth.h"
#include "px_svc_int.h"

typedef Apache__Rocketmq__V2__Resource px_res_t;

/* One check of a request's resources; stops at the first refusal. */
typedef struct px_need_ctx {
    const px_auth_t *auth;
    const px_auth_user_t *user;
    const char *peer;
    bool refused;
    char why[384];
} px_need_ctx_t;

static void need(px_need_ctx_t *c, px_res_type_t type, const px_res_t *r, unsigned actions)
{
    const char *name = r != NULL ? r->name : NULL;

    if (c->refused || name == NULL || name[0] == '\0')
        return;
    if (type == PX_RES_TOPIC && px_name_is_derived(name)) {
        /* %RETRY%G and %DLQ%G are group G's (RocketMQ: Resource.ofGroup). */
        name = strncmp(name, ST_DLQ_PREFIX, strlen(ST_DLQ_PREFIX)) == 0
                   ? name + strlen(ST_DLQ_PREFIX)
                   : name + strlen(ST_RETRY_PREFIX);
        type = PX_RES_GROUP;
        actions = PX_ACT_SUB;
    }
    if (!px_auth_allowed(c->auth, c->user, type, name, actions, c->peer, c->why,
                         sizeof(c->why)))
        c->refused = true;
}

static const px_res_t *mq_topic(const Apache__Rocketmq__V2__MessageQueue *mq)
{
    return mq != NULL ? mq->topic : NULL;
}

static void need_route(px_need_ctx_t *c, const ProtobufCMessage *m)
{
    need(c, PX_RES_TOPIC, ((const Apache__Rocketmq__V2__QueryRouteRequest *)m)->topic,
         PX_ACT_PUB | PX_ACT_SUB);
}

static void need_heartbeat(px_need_ctx_t *c, const ProtobufCMessage *m)
{
    const Apache__Rocketmq__V2__HeartbeatRequest *r = (const void *)m;

    if (r->client_type == APACHE__ROCKETMQ__V2__CLIENT_TYPE__PUSH_CONSUMER ||
        r->client_type == APACHE__ROCKETMQ__V2__CLIENT_TYPE__SIMPLE_CONSUMER ||
        r->client_type == APACHE__ROCKETMQ__V2__CLIENT_TYPE__PULL_CONSUMER)
        need(c, PX_RES_GROUP,
             r->group_present_case == APACHE__ROCKETMQ__V2__HEARTBEAT_REQUEST__GROUP_PRESENT_GROUP
                 ? r->group : NULL,
             PX_ACT_SUB);
}

static void need_send(px_need_ctx_t *c, const ProtobufCMessage *m)
{
    const Apache__Rocketmq__V2__SendMessageRequest *r = (const void *)m;

    /* Every message's topic (RocketMQ checks the first: a batch has one). */
    for (size_t i = 0; i < r->n_messages; i++)
        if (r->messages[i] != NULL)
            need(c, PX_RES_TOPIC, r->messages[i]->topic, PX_ACT_PUB);
}

static void need_assignment(px_need_ctx_t *c, const ProtobufCMessage *m)
{
    const Apache__Rocketmq__V2__QueryAssignmentRequest *r = (const void *)m;

    need(c, PX_RES_GROUP, r->group, PX_ACT_SUB);
    need(c, PX_RES_TOPIC, r->topic, PX_ACT_SUB);
}

static void need_receive(px_need_ctx_t *c, const ProtobufCMessage *m)
{
    const Apache__Rocketmq__V2__ReceiveMessageRequest *r = (const void *)m;

    need(c, PX_RES_GROUP, r->group, PX_ACT_SUB);
    need(c, PX_RES_TOPIC, mq_topic(r->message_queue), PX_ACT_SUB);
}

static void need_ack(px_need_ctx_t *c, const ProtobufCMessage *m)
{
    const Apache__Rocketmq__V2__AckMessageRequest *r = (const void *)m;

    need(c, PX_RES_GROUP, r->group, PX_ACT_SUB);
    need(c, PX_RES_TOPIC, r->topic, PX_ACT_SUB);
}

static void need_dlq(px_need_ctx_t *c, const ProtobufCMessage *m)
{
    const Apache__Rocketmq__V2__ForwardMessageToDeadLetterQueueRequest *r = (const void *)m;

    need(c, PX_RES_GROUP, r->group, PX_ACT_SUB);
    need(c, PX_RES_TOPIC, r->topic, PX_ACT_SUB);
}

static void need_pull(px_need_ctx_t *c, const ProtobufCMessage *m)
{
    const Apache__Rocketmq__V2__PullMessageRequest *r = (const void *)m;

    need(c, PX_RES_GROUP, r->group, PX_ACT_SUB);
    need(c, PX_RES_TOPIC, mq_topic(r->message_queue), PX_ACT_SUB);
}

static void need_update_offset(px_need_ctx_t *c, const ProtobufCMessage *m)
{
    const Apache__Rocketmq__V2__UpdateOffsetRequest *r = (const void *)m;

    need(c, PX_RES_GROUP, r->group, PX_ACT_SUB | PX_ACT_UPDATE);
    need(c, PX_RES_TOPIC, mq_topic(r->message_queue), PX_ACT_SUB | PX_ACT_UPDATE);
}

static void need_get_offset(px_need_ctx_t *c, const ProtobufCMessage *m)
{
    const Apache__Rocketmq__V2__GetOffsetRequest *r = (const void *)m;

    need(c, PX_RES_GROUP, r->group, PX_ACT_SUB | PX_ACT_GET);
    need(c, PX_RES_TOPIC, mq_topic(r->message_queue), PX_ACT_SUB | PX_ACT_GET);
}

static void need_query_offset(px_need_ctx_t *c, const ProtobufCMessage *m)
{
    const Apache__Rocketmq__V2__QueryOffsetRequest *r = (const void *)m;

    need(c, PX_RES_TOPIC, mq_topic(r->message_queue), PX_ACT_SUB | PX_ACT_GET);
}

static void need_end_tx(px_need_ctx_t *c, const ProtobufCMessage *m)
{
    need(c, PX_RES_TOPIC, ((const Apache__Rocketmq__V2__EndTransactionRequest *)m)->topic,
         PX_ACT_PUB);
}

static void need_recall(px_need_ctx_t *c, const ProtobufCMessage *m)
{
    need(c, PX_RES_TOPIC, ((const Apache__Rocketmq__V2__RecallMessageRequest *)m)->topic,
         PX_ACT_PUB);
}

static void need_terminate(px_need_ctx_t *c, const ProtobufCMessage *m)
{
    const Apache__Rocketmq__V2__NotifyClientTerminationRequest *r = (const void *)m;

    /* A producer's termination names no group: authentication only. */
    need(c, PX_RES_GROUP,
         r->group_present_case ==
                 APACHE__ROCKETMQ__V2__NOTIFY_CLIENT_TERMINATION_REQUEST__GROUP_PRESENT_GROUP
             ? r->group : NULL,
         PX_ACT_SUB);
}

static void need_invisible(px_need_ctx_t *c, const ProtobufCMessage *m)
{
    need(c, PX_RES_GROUP, ((const Apache__Rocketmq__V2__ChangeInvisibleDurationRequest *)m)->group,
         PX_ACT_SUB);
}

static void need_telemetry(px_need_ctx_t *c, const ProtobufCMessage *m)
{
    const Apache__Rocketmq__V2__TelemetryCommand *r = (const void *)m;
    const Apache__Rocketmq__V2__Settings *s;

    if (r->command_case != APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__COMMAND_SETTINGS ||
        (s = r->settings) == NULL)
        return;
    if (s->pub_sub_case == APACHE__ROCKETMQ__V2__SETTINGS__PUB_SUB_PUBLISHING &&
        s->publishing != NULL)
        for (size_t i = 0; i < s->publishing->n_topics; i++)
            need(c, PX_RES_TOPIC, s->publishing->topics[i], PX_ACT_PUB);
    if (s->pub_sub_case == APACHE__ROCKETMQ__V2__SETTINGS__PUB_SUB_SUBSCRIPTION &&
        s->subscription != NULL) {
        const Apache__Rocketmq__V2__Subscription *sub = s->subscription;
        need(c, PX_RES_GROUP,
             sub->group_present_case == APACHE__ROCKETMQ__V2__SUBSCRIPTION__GROUP_PRESENT_GROUP
                 ? sub->group : NULL,
             PX_ACT_SUB);
        for (size_t i = 0; i < sub->n_subscriptions; i++)
            if (sub->subscriptions[i] != NULL)
                need(c, PX_RES_TOPIC, sub->subscriptions[i]->topic, PX_ACT_SUB);
    }
}

#define PX_RULE(pb, fn) {&apache__rocketmq__v2__##pb##__descriptor, fn}

/* Requests by type; a type not here needs authentication only. */
static const struct {
    const ProtobufCMessageDescriptor *desc;
    void (*needs)(px_need_ctx_t *c, const ProtobufCMessage *req);
} px_auth_rules[] = {
    PX_RULE(query_route_request, need_route),
    PX_RULE(heartbeat_request, need_heartbeat),
    PX_RULE(send_message_request, need_send),
    PX_RULE(query_assignment_request, need_assignment),
    PX_RULE(receive_message_request, need_receive),
    PX_RULE(ack_message_request, need_ack),
    PX_RULE(forward_message_to_dead_letter_queue_request, need_dlq),
    PX_RULE(pull_message_request, need_pull),
    PX_RULE(update_offset_request, need_update_offset),
    PX_RULE(get_offset_request, need_get_offset),
    PX_RULE(query_offset_request, need_query_offset),
    PX_RULE(end_transaction_request, need_end_tx),
    PX_RULE(recall_message_request, need_recall),
    PX_RULE(notify_client_termination_request, need_terminate),
    PX_RULE(change_invisible_duration_request, need_invisible),
    PX_RULE(telemetry_command, need_telemetry),
};

static void px_auth_refuse(px_call_t *call, bool forbidden, const char *why)
{
    const px_method_t *m = px_call_method_entry(call);

    GT_LOG(INFO, "auth", "%s from %s refused: %s", px_call_method(call), px_call_peer(call), why);
    if (m->resp_desc != NULL &&
        protobuf_c_message_descriptor_get_field_by_name(m->resp_desc, "status") != NULL)
        px_reply_status(call, m->resp_desc,
                        forbidden ? PX_CODE(FORBIDDEN) : PX_CODE(UNAUTHORIZED), why);
    else
        px_call_finish(call, forbidden ? GRPC_STATUS_PERMISSION_DENIED
                                       : GRPC_STATUS_UNAUTHENTICATED, why);
}

bool px_auth_request_allowed(const px_auth_t *auth, const px_auth_user_t *user,
                             const ProtobufCMessage *req, const char *peer, char *why,
                             size_t whylen)
{
    px_need_ctx_t c = {.auth = auth, .user = user, .peer = peer};

    for (size_t i = 0; i < sizeof(px_auth_rules) / sizeof(px_auth_rules[0]); i++)
        if (px_auth_rules[i].desc == req->descriptor) {
            px_auth_rules[i].needs(&c, req);
            break;
        }
    if (c.refused)
        snprintf(why, whylen, "%s", c.why);
    return !c.refused;
}

bool px_auth_check_call(px_call_t *call, const ProtobufCMessage *req)
{
    const px_auth_t *auth = atomic_load(&px_svc(call)->auth);
    const px_method_t *m = px_call_method_entry(call);
    px_need_ctx_t c = {.auth = auth, .peer = px_call_peer(call)};

    if (auth == NULL)
        return true;
    /* A stream signs its metadata once, when it opens: its date is
     * checked with its first message (the handler's state is set from
     * then on). */
    c.user = px_auth_login(auth, px_call_metadata(call, "authorization"),
                           px_call_metadata(call, "x-mq-date-time"), px_now_ms(),
                           m->kind != PX_RPC_BIDI_STREAM || px_call_user(call) == NULL, c.why,
                           sizeof(c.why));
    if (c.user == NULL) {
        px_auth_refuse(call, false, c.why);
        return false;
    }
    if (m->resp_desc == &apache__rocketmq__v2__change_log_level_response__descriptor) {
        if (px_auth_user_admin(c.user))
            return true;
        snprintf(c.why, sizeof(c.why), "user \"%s\" is not an admin",
                 px_auth_user_name(c.user));
        px_auth_refuse(call, true, c.why);
        return false;
    }
    if (!px_auth_request_allowed(auth, c.user, req, c.peer, c.why, sizeof(c.why))) {
        px_auth_refuse(call, true, c.why);
        return false;
    }
    return true;
}

void px_auth_gate(px_call_t *call, ProtobufCMessage *req)
{
    const px_gate_t *g = px_call_method_entry(call)->data;

    if (px_auth_check_call(call, req))
        g->handler(call, req);
}
