/* The RocketMQ v2 method table and the not-yet-implemented answers.
 *
 * Every MessagingService response message carries `Status status = 1`
 * (inside a oneof for the streaming responses and TelemetryCommand), so a
 * single generic routine builds the NOT_IMPLEMENTED answer for any RPC from
 * its response descriptor.  As later work implements an RPC, its entry here
 * points at the real handler instead. */
#include <stdio.h>
#include <string.h>

#include "apache/rocketmq/v2/admin.pb-c.h"
#include "apache/rocketmq/v2/service.pb-c.h"
#include "gt_log.h"
#include "px_service.h"

#define PX_MS_PREFIX "/apache.rocketmq.v2.MessagingService/"

typedef struct px_stub_info {
    const ProtobufCMessageDescriptor *req;
    const ProtobufCMessageDescriptor *resp;
} px_stub_info_t;

/* Builds `resp` with only its status set (code, message) and sends it. */
static gt_err_t px_send_status_only(px_call_t *call,
                                    const ProtobufCMessageDescriptor *desc,
                                    Apache__Rocketmq__V2__Code code,
                                    const char *text)
{
    Apache__Rocketmq__V2__Status st = APACHE__ROCKETMQ__V2__STATUS__INIT;
    const ProtobufCFieldDescriptor *f;
    /* Large enough for any response message struct of this protocol. */
    union {
        ProtobufCMessage base;
        char bytes[1024];
    } buf;

    if (desc->sizeof_message > sizeof(buf.bytes))
        return GT_EINVAL;
    protobuf_c_message_init(desc, &buf);
    f = protobuf_c_message_descriptor_get_field_by_name(desc, "status");
    if (f == NULL || f->type != PROTOBUF_C_TYPE_MESSAGE)
        return GT_EINVAL;
    st.code = code;
    st.message = (char *)text;
    *(Apache__Rocketmq__V2__Status **)(buf.bytes + f->offset) = &st;
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        *(uint32_t *)(buf.bytes + f->quantifier_offset) = f->id;
    return px_call_send_pb(call, &buf.base);
}

/* Unary and server-streaming RPCs not implemented yet: check the request
 * decodes, answer NOT_IMPLEMENTED in-band, finish OK. */
static void px_stub_on_message(px_call_t *call, const uint8_t *data,
                               size_t len)
{
    const px_stub_info_t *info = px_call_method_entry(call)->data;
    ProtobufCMessage *req = px_pb_unpack(info->req, data, len);
    char text[256];

    if (req == NULL) {
        px_send_status_only(call, info->resp,
                            APACHE__ROCKETMQ__V2__CODE__BAD_REQUEST,
                            "malformed request message");
    } else {
        protobuf_c_message_free_unpacked(req, NULL);
        snprintf(text, sizeof(text), "%s is not implemented yet",
                 px_call_method(call) + strlen(PX_MS_PREFIX));
        px_send_status_only(call, info->resp,
                            APACHE__ROCKETMQ__V2__CODE__NOT_IMPLEMENTED, text);
    }
    px_call_finish(call, GRPC_STATUS_OK, NULL);
}

/* Telemetry: answer each command with NOT_IMPLEMENTED and keep the stream
 * open until the client closes it or the server stops. */
static void px_telemetry_on_message(px_call_t *call, const uint8_t *data,
                                    size_t len)
{
    const px_stub_info_t *info = px_call_method_entry(call)->data;
    ProtobufCMessage *req = px_pb_unpack(info->req, data, len);

    if (req == NULL) {
        px_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
                       "malformed TelemetryCommand");
        return;
    }
    protobuf_c_message_free_unpacked(req, NULL);
    px_send_status_only(call, info->resp,
                        APACHE__ROCKETMQ__V2__CODE__NOT_IMPLEMENTED,
                        "Telemetry is not implemented yet");
}

static void px_telemetry_on_half_close(px_call_t *call)
{
    px_call_finish(call, GRPC_STATUS_OK, NULL);
}

static void px_telemetry_on_interrupt(px_call_t *call, px_interrupt_t why)
{
    if (why == PX_INTERRUPT_SHUTDOWN)
        px_call_finish(call, GRPC_STATUS_UNAVAILABLE, "server shutting down");
}

/* Admin.ChangeLogLevel: implemented, it only touches the log level. */
static void px_admin_log_level(px_call_t *call, const uint8_t *data,
                               size_t len)
{
    static const gt_log_level_t map[] = {
        GT_LOG_LEVEL_TRACE, GT_LOG_LEVEL_DEBUG, GT_LOG_LEVEL_INFO,
        GT_LOG_LEVEL_WARN, GT_LOG_LEVEL_ERROR};
    Apache__Rocketmq__V2__ChangeLogLevelRequest *req =
        (Apache__Rocketmq__V2__ChangeLogLevelRequest *)px_pb_unpack(
            &apache__rocketmq__v2__change_log_level_request__descriptor, data,
            len);
    Apache__Rocketmq__V2__ChangeLogLevelResponse resp =
        APACHE__ROCKETMQ__V2__CHANGE_LOG_LEVEL_RESPONSE__INIT;
    char remark[64];

    if (req == NULL) {
        px_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
                       "malformed ChangeLogLevelRequest");
        return;
    }
    if ((unsigned)req->level >= sizeof(map) / sizeof(map[0])) {
        snprintf(remark, sizeof(remark), "unknown level %d", (int)req->level);
        protobuf_c_message_free_unpacked(&req->base, NULL);
        px_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, remark);
        return;
    }
    gt_log_set_level(map[req->level]);
    GT_LOG(INFO, "admin", "log level set to %s",
           gt_log_level_name(map[req->level]));
    snprintf(remark, sizeof(remark), "log level is now %s",
             gt_log_level_name(map[req->level]));
    resp.remark = remark;
    protobuf_c_message_free_unpacked(&req->base, NULL);
    px_call_reply_pb(call, &resp.base);
}

#define PX_STUB(name, reqd, respd)                                             \
    static const px_stub_info_t px_info_##name = {                             \
        &apache__rocketmq__v2__##reqd##__descriptor,                           \
        &apache__rocketmq__v2__##respd##__descriptor}

PX_STUB(query_route, query_route_request, query_route_response);
PX_STUB(heartbeat, heartbeat_request, heartbeat_response);
PX_STUB(send_message, send_message_request, send_message_response);
PX_STUB(query_assignment, query_assignment_request, query_assignment_response);
PX_STUB(receive_message, receive_message_request, receive_message_response);
PX_STUB(ack_message, ack_message_request, ack_message_response);
PX_STUB(forward_dlq, forward_message_to_dead_letter_queue_request,
        forward_message_to_dead_letter_queue_response);
PX_STUB(pull_message, pull_message_request, pull_message_response);
PX_STUB(update_offset, update_offset_request, update_offset_response);
PX_STUB(get_offset, get_offset_request, get_offset_response);
PX_STUB(query_offset, query_offset_request, query_offset_response);
PX_STUB(end_transaction, end_transaction_request, end_transaction_response);
PX_STUB(telemetry, telemetry_command, telemetry_command);
PX_STUB(notify_term, notify_client_termination_request,
        notify_client_termination_response);
PX_STUB(change_invisible, change_invisible_duration_request,
        change_invisible_duration_response);
PX_STUB(recall_message, recall_message_request, recall_message_response);
PX_STUB(sync_lite, sync_lite_subscription_request,
        sync_lite_subscription_response);

#define PX_UNARY(method, info)                                                 \
    {PX_MS_PREFIX method, PX_RPC_UNARY, px_stub_on_message, NULL, NULL, NULL,  \
     &px_info_##info}
#define PX_SSTREAM(method, info)                                               \
    {PX_MS_PREFIX method, PX_RPC_SERVER_STREAM, px_stub_on_message, NULL, NULL,\
     NULL, &px_info_##info}

static const px_method_t px_messaging_methods[] = {
    PX_UNARY("QueryRoute", query_route),
    PX_UNARY("Heartbeat", heartbeat),
    PX_UNARY("SendMessage", send_message),
    PX_UNARY("QueryAssignment", query_assignment),
    PX_SSTREAM("ReceiveMessage", receive_message),
    PX_UNARY("AckMessage", ack_message),
    PX_UNARY("ForwardMessageToDeadLetterQueue", forward_dlq),
    PX_SSTREAM("PullMessage", pull_message),
    PX_UNARY("UpdateOffset", update_offset),
    PX_UNARY("GetOffset", get_offset),
    PX_UNARY("QueryOffset", query_offset),
    PX_UNARY("EndTransaction", end_transaction),
    {PX_MS_PREFIX "Telemetry", PX_RPC_BIDI_STREAM, px_telemetry_on_message,
     px_telemetry_on_half_close, px_telemetry_on_interrupt, NULL,
     &px_info_telemetry},
    PX_UNARY("NotifyClientTermination", notify_term),
    PX_UNARY("ChangeInvisibleDuration", change_invisible),
    PX_UNARY("RecallMessage", recall_message),
    PX_UNARY("SyncLiteSubscription", sync_lite),
};

static const px_method_t px_admin_methods[] = {
    {"/apache.rocketmq.v2.Admin/ChangeLogLevel", PX_RPC_UNARY,
     px_admin_log_level, NULL, NULL, NULL, NULL},
};

size_t px_service_messaging_count(void)
{
    return sizeof(px_messaging_methods) / sizeof(px_messaging_methods[0]);
}

gt_err_t px_service_register(px_method_table_t *t)
{
    gt_err_t rc;

    for (size_t i = 0; i < px_service_messaging_count(); i++) {
        rc = px_method_table_add(t, &px_messaging_methods[i]);
        if (rc != GT_OK)
            return rc;
    }
    for (size_t i = 0; i < sizeof(px_admin_methods) / sizeof(px_admin_methods[0]);
         i++) {
        rc = px_method_table_add(t, &px_admin_methods[i]);
        if (rc != GT_OK)
            return rc;
    }
    return GT_OK;
}
