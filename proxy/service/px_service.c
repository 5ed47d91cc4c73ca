/* The RocketMQ v2 method table, the service context, and the answers of
 * RPCs that are not implemented yet.
 *
 * Every MessagingService response message carries `Status status = 1`
 * (inside a oneof for the streaming responses), so one generic routine
 * builds the NOT_IMPLEMENTED answer for any RPC from its response
 * descriptor.  The runtime decodes each request (req_desc) and answers
 * malformed or refused ones through px_reject*.  Implemented RPCs point at
 * their handlers (px_route.c, px_send.c, px_receive.c, px_ack.c,
 * px_pull.c, px_tx.c, px_telemetry.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apache/rocketmq/v2/admin.pb-c.h"
#include "apache/rocketmq/v2/service.pb-c.h"
#include "gt_log.h"
#include "px_auth.h"
#include "px_svc_int.h"

#define PX_MS_PREFIX "/apache.rocketmq.v2.MessagingService/"

/* RPCs not implemented yet: answer NOT_IMPLEMENTED in-band (the runtime
 * has checked the request decodes), finish OK. */
static void px_stub_on_request(px_call_t *call, ProtobufCMessage *req)
{
    char text[256];

    (void)req;
    snprintf(text, sizeof(text), "%s is not implemented yet",
             px_call_method(call) + strlen(PX_MS_PREFIX));
    px_reply_status(call, px_call_method_entry(call)->resp_desc,
                    PX_CODE(NOT_IMPLEMENTED), text);
}

/* Admin.ChangeLogLevel: implemented, it only touches the log level.  A
 * malformed request finishes INVALID_ARGUMENT (the runtime's default). */
static void px_admin_log_level(px_call_t *call, ProtobufCMessage *msg)
{
    static const gt_log_level_t map[] = {
        GT_LOG_LEVEL_TRACE, GT_LOG_LEVEL_DEBUG, GT_LOG_LEVEL_INFO,
        GT_LOG_LEVEL_WARN, GT_LOG_LEVEL_ERROR};
    Apache__Rocketmq__V2__ChangeLogLevelRequest *req =
        (Apache__Rocketmq__V2__ChangeLogLevelRequest *)msg;
    Apache__Rocketmq__V2__ChangeLogLevelResponse resp =
        APACHE__ROCKETMQ__V2__CHANGE_LOG_LEVEL_RESPONSE__INIT;
    char remark[64];

    if ((unsigned)req->level >= sizeof(map) / sizeof(map[0])) {
        snprintf(remark, sizeof(remark), "unknown level %d", (int)req->level);
        px_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, remark);
        return;
    }
    gt_log_set_level(map[req->level]);
    GT_LOG(INFO, "admin", "log level set to %s",
           gt_log_level_name(map[req->level]));
    snprintf(remark, sizeof(remark), "log level is now %s",
             gt_log_level_name(map[req->level]));
    resp.remark = remark;
    px_call_reply_pb(call, &resp.base);
}

#define PX_DESC(x) (&apache__rocketmq__v2__##x##__descriptor)
/* A MessagingService method named `method` whose request and response
 * types are <pb>_request and <pb>_response. */
#define PX_STUB_UNARY(method, pb)                                              \
    {.path = PX_MS_PREFIX method, .kind = PX_RPC_UNARY,                        \
     .on_request = px_stub_on_request, .on_reject = px_reject,                 \
     .on_screen = px_screen_request,                                           \
     .req_desc = PX_DESC(pb##_request), .resp_desc = PX_DESC(pb##_response)}
/* Implemented methods reach their handler fn through the auth gate. */
#define PX_GATE(fn) .on_request = px_auth_gate, .data = &(const px_gate_t){fn}
#define PX_IMPL(method, k, fn, intr, pb)                                       \
    {.path = PX_MS_PREFIX method, .kind = k, PX_GATE(fn),                      \
     .on_interrupt = intr, .on_reject = px_reject_client,                      \
     .on_screen = px_screen_request,                                           \
     .req_desc = PX_DESC(pb##_request), .resp_desc = PX_DESC(pb##_response)}
/* SendMessage: admission reserves one full-size message at arrival. */
#define PX_SEND_RESERVE (PX_MAX_BODY_BYTES + 64 * 1024)

static const px_method_t px_messaging_methods[] = {
    PX_IMPL("QueryRoute", PX_RPC_UNARY, px_route_query, NULL, query_route),
    PX_IMPL("Heartbeat", PX_RPC_UNARY, px_route_heartbeat, NULL, heartbeat),
    {.path = PX_MS_PREFIX "SendMessage", .kind = PX_RPC_UNARY,
     PX_GATE(px_send_message), .on_reject = px_reject_client,
     .on_screen = px_screen_request,
     .req_desc = PX_DESC(send_message_request),
     .resp_desc = PX_DESC(send_message_response),
     .reserve_bytes = PX_SEND_RESERVE},
    PX_IMPL("QueryAssignment", PX_RPC_UNARY, px_route_assignment, NULL,
            query_assignment),
    PX_IMPL("ReceiveMessage", PX_RPC_SERVER_STREAM, px_receive_message,
            px_receive_interrupt, receive_message),
    PX_IMPL("AckMessage", PX_RPC_UNARY, px_ack_message, NULL, ack_message),
    PX_IMPL("ForwardMessageToDeadLetterQueue", PX_RPC_UNARY, px_forward_dlq,
            NULL, forward_message_to_dead_letter_queue),
    PX_IMPL("PullMessage", PX_RPC_SERVER_STREAM, px_pull_message,
            px_pull_interrupt, pull_message),
    PX_IMPL("UpdateOffset", PX_RPC_UNARY, px_offset_update, NULL, update_offset),
    PX_IMPL("GetOffset", PX_RPC_UNARY, px_offset_get, NULL, get_offset),
    PX_IMPL("QueryOffset", PX_RPC_UNARY, px_offset_query, NULL, query_offset),
    PX_IMPL("EndTransaction", PX_RPC_UNARY, px_end_transaction, NULL,
            end_transaction),
    {.path = PX_MS_PREFIX "Telemetry", .kind = PX_RPC_BIDI_STREAM,
     PX_GATE(px_telemetry_message), .on_reject = px_telemetry_reject,
     .on_screen = px_screen_request,
     .req_desc = PX_DESC(telemetry_command),
     .resp_desc = PX_DESC(telemetry_command),
     .on_half_close = px_telemetry_half_close,
     .on_interrupt = px_telemetry_interrupt, .on_done = px_telemetry_done},
    PX_IMPL("NotifyClientTermination", PX_RPC_UNARY, px_route_terminate, NULL,
            notify_client_termination),
    PX_IMPL("ChangeInvisibleDuration", PX_RPC_UNARY, px_change_invisible, NULL,
            change_invisible_duration),
    PX_IMPL("RecallMessage", PX_RPC_UNARY, px_recall_message, NULL,
            recall_message),
    PX_STUB_UNARY("SyncLiteSubscription", sync_lite_subscription),
};

static const px_method_t px_admin_methods[] = {
    {.path = "/apache.rocketmq.v2.Admin/ChangeLogLevel",
     .kind = PX_RPC_UNARY, PX_GATE(px_admin_log_level),
     .req_desc = &apache__rocketmq__v2__change_log_level_request__descriptor,
     .resp_desc = &apache__rocketmq__v2__change_log_level_response__descriptor},
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

px_svc_t *px_svc_new(st_store_t *store, const cfg_t *cfg)
{
    px_svc_t *svc = calloc(1, sizeof(*svc));
    const char *env;

    if (svc == NULL)
        return NULL;
    svc->store = store;
    svc->cfg = cfg;
    if (cfg->auth.enabled) {
        char err[256];
        px_auth_t *auth;

        if (px_auth_new(&cfg->auth, &auth, err, sizeof(err)) != GT_OK) {
            GT_LOG(ERROR, "auth", "%s", err);
            free(svc);
            return NULL;
        }
        atomic_init(&svc->auth, auth);
        GT_LOG(INFO, "auth", "authentication on: %zu users, %zu ACL entries",
               cfg->auth.users.n, cfg->auth.acls.n);
    }
    {
        /* writers first: px_svc_set_append_hook must not starve behind a
         * stream of sends */
        pthread_rwlockattr_t ra;
        pthread_rwlockattr_init(&ra);
        pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
        pthread_rwlock_init(&svc->hook_mu, &ra);
        pthread_rwlockattr_destroy(&ra);
    }
    pthread_mutex_init(&svc->clients_mu, NULL);
    pthread_mutex_init(&svc->recv_mu, NULL);
    pthread_cond_init(&svc->renew_cv, NULL);
    atomic_init(&svc->draining, false);
    px_meta_init(&svc->meta);
    pthread_cond_init(&svc->test_cv, NULL);
    env = getenv("GANTRY_TEST_LATE_ATTACH");
    svc->test_late_attach = env != NULL && strcmp(env, "1") == 0;
    if (svc->test_late_attach)
        GT_LOG(WARN, "svc", "test mode: receives and pulls attach to their "
               "calls only after the calls' interrupts");
    return svc;
}

void px_svc_set_append_hook(px_svc_t *svc, px_append_hook_fn fn, void *arg)
{
    pthread_rwlock_wrlock(&svc->hook_mu);
    svc->append_hook = fn;
    svc->append_hook_arg = arg;
    pthread_rwlock_unlock(&svc->hook_mu);
}

void px_svc_append(px_svc_t *svc, const char *topic, const st_message_t *msgs, size_t n,
                   st_append_cb cb, void *cb_arg)
{
    bool taken = false;

    pthread_rwlock_rdlock(&svc->hook_mu);
    if (svc->append_hook != NULL)
        taken = svc->append_hook(svc->append_hook_arg, topic, msgs, n, cb, cb_arg);
    pthread_rwlock_unlock(&svc->hook_mu);
    if (!taken)
        st_append(svc->store, topic, msgs, n, cb, cb_arg);
}

void px_test_interrupted(px_svc_t *svc, const px_call_t *call)
{
    if (!svc->test_late_attach)
        return;
    svc->test_seen[svc->test_nseen++ % 8] = call;
    pthread_cond_broadcast(&svc->test_cv);
}

static bool px_test_seen(const px_svc_t *svc, const px_call_t *call)
{
    for (unsigned i = 0; i < 8; i++)
        if (svc->test_seen[i] == call)
            return true;
    return false;
}

void px_test_late_attach(px_svc_t *svc, px_call_t *call, const char *rpc)
{
    struct timespec until;
    bool seen;

    if (!svc->test_late_attach)
        return;
    GT_LOG(WARN, "svc", "test hook: %s waits for its call's interrupt", rpc);
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&svc->recv_mu);
    while (!(seen = px_test_seen(svc, call)) &&
           pthread_cond_timedwait(&svc->test_cv, &svc->recv_mu, &until) == 0)
        ;
    seen = seen || px_test_seen(svc, call);
    pthread_mutex_unlock(&svc->recv_mu);
    GT_LOG(WARN, "svc", "test hook: %s attaches %s its call's interrupt", rpc,
           seen ? "after" : "(10 s passed) without");
}

void px_svc_free(px_svc_t *svc)
{
    if (svc == NULL)
        return;
    px_clients_stop(svc);
    while (svc->clients != NULL) {
        px_client_t *c = svc->clients;
        svc->clients = c->next;
        px_held_free_all(c);
        if (c->telemetry != NULL)
            px_call_unref(c->telemetry);
        for (size_t i = 0; i < c->n_topics; i++)
            free(c->topics[i]);
        free(c->topics);
        free(c->settings_reply);
        free(c);
    }
    pthread_rwlock_destroy(&svc->hook_mu);
    pthread_mutex_destroy(&svc->clients_mu);
    pthread_mutex_destroy(&svc->recv_mu);
    pthread_cond_destroy(&svc->renew_cv);
    pthread_cond_destroy(&svc->test_cv);
    px_meta_free(&svc->meta);
    px_auth_free(atomic_load(&svc->auth));
    for (size_t i = 0; i < svc->n_auth_old; i++)
        px_auth_free(svc->auth_old[i]);
    free(svc->auth_old);
    px_trace_free(svc->trace);
    free(svc);
}

gt_err_t px_svc_start(px_svc_t *svc)
{
    /* Start-up: the handlers need the store's topics and groups before
     * the first call comes in. */
    st_meta_watch(svc->store, px_meta_on_events, svc);
    px_meta_wait_primed(&svc->meta);
    gt_err_t rc = px_trace_start(svc->store, svc->cfg, &svc->trace);
    return rc != GT_OK ? rc : px_clients_start(svc);
}

struct px_trace *px_svc_trace(px_svc_t *svc)
{
    return svc->trace;
}

void px_svc_stop(px_svc_t *svc)
{
    if (svc != NULL) {
        px_clients_stop(svc);
        px_trace_stop(svc->trace); /* writes what is buffered */
    }
}

void px_svc_drain(px_svc_t *svc)
{
    if (svc != NULL)
        atomic_store(&svc->draining, true);
}

gt_err_t px_svc_set_auth(px_svc_t *svc, const cfg_auth_t *auth, char *err, size_t errlen)
{
    px_auth_t *next, **old;

    if (atomic_load(&svc->auth) == NULL)
        return GT_OK; /* auth.enabled is off: nothing is checked */
    if ((old = realloc(svc->auth_old, (svc->n_auth_old + 1) * sizeof(*old))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return GT_ENOMEM;
    }
    svc->auth_old = old;
    if (px_auth_new(auth, &next, err, errlen) != GT_OK)
        return GT_EINVAL;
    svc->auth_old[svc->n_auth_old++] = atomic_exchange(&svc->auth, next);
    GT_LOG(INFO, "auth", "users changed: %zu users, %zu ACL entries", auth->users.n,
           auth->acls.n);
    return GT_OK;
}
