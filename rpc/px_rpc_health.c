/* grpc.health.v1.Health on px_rpc.  See px_rpc_health.h.
 *
 * The status is one atomic flag.  Watch calls are kept in a list under
 * `mu` (each holding a call reference) until their call is over; a
 * status change is sent to them under `mu`, so a watcher that joins while
 * the status changes sees the old status then the new one, never the new
 * one first. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>

#include "grpc/health/v1/health.pb-c.h"
#include "gt_log.h"
#include "px_rpc_health.h"

#define PX_HEALTH_SERVICE "grpc.health.v1.Health"
#define PX_HS(x) GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__##x

typedef struct px_watch {
    struct px_watch *next, *prev;
    px_call_t *call;
    bool known; /* its service is known (else it stays SERVICE_UNKNOWN) */
} px_watch_t;

/* `serving` is atomic; the watch list is under `mu`; the method entries
 * and `table` are set at registration and read-only afterwards. */
struct px_health {
    atomic_bool serving;
    pthread_mutex_t mu;
    px_watch_t *watchers;
    const px_method_table_t *table;
    px_method_t check, watch;
};

/* "" or a service with a method in the table. */
static bool px_health_known(const px_health_t *h, const char *svc)
{
    size_t n = strlen(svc);

    if (n == 0)
        return true;
    for (size_t i = 0; i < h->table->count; i++) {
        const char *p = h->table->methods[i]->path;
        if (strncmp(p + 1, svc, n) == 0 && p[1 + n] == '/')
            return true;
    }
    return false;
}

static gt_err_t px_health_send(px_call_t *call, int status)
{
    Grpc__Health__V1__HealthCheckResponse r =
        GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;

    r.status = status;
    return px_call_send_pb(call, &r.base);
}

static int px_health_status(px_health_t *h)
{
    return atomic_load(&h->serving) ? PX_HS(SERVING) : PX_HS(NOT_SERVING);
}

static void px_health_check(px_call_t *call, ProtobufCMessage *msg)
{
    px_health_t *h = (px_health_t *)px_call_method_entry(call)->data;
    const Grpc__Health__V1__HealthCheckRequest *req =
        (const Grpc__Health__V1__HealthCheckRequest *)msg;
    const char *svc = req->service != NULL ? req->service : "";

    if (!px_health_known(h, svc)) {
        px_call_finish(call, GRPC_STATUS_NOT_FOUND, "unknown service");
        return;
    }
    if (px_health_send(call, px_health_status(h)) == GT_OK)
        px_call_finish(call, GRPC_STATUS_OK, NULL);
}

/* Takes the call's watcher out of the list (once) and drops its ref. */
static void px_health_unwatch(px_health_t *h, px_call_t *call)
{
    px_watch_t *w;

    pthread_mutex_lock(&h->mu);
    w = px_call_user(call);
    if (w != NULL) {
        px_call_set_user(call, NULL);
        if (w->prev != NULL)
            w->prev->next = w->next;
        else
            h->watchers = w->next;
        if (w->next != NULL)
            w->next->prev = w->prev;
    }
    pthread_mutex_unlock(&h->mu);
    if (w != NULL) {
        free(w);
        px_call_unref(call);
    }
}

static void px_health_watch(px_call_t *call, ProtobufCMessage *msg)
{
    px_health_t *h = (px_health_t *)px_call_method_entry(call)->data;
    const Grpc__Health__V1__HealthCheckRequest *req =
        (const Grpc__Health__V1__HealthCheckRequest *)msg;
    const char *svc = req->service != NULL ? req->service : "";
    px_watch_t *w = calloc(1, sizeof(*w));

    if (w == NULL) {
        px_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    w->call = call;
    w->known = px_health_known(h, svc);
    px_call_ref(call);
    pthread_mutex_lock(&h->mu);
    px_call_set_user(call, w);
    w->next = h->watchers;
    if (h->watchers != NULL)
        h->watchers->prev = w;
    h->watchers = w;
    px_health_send(call, w->known ? px_health_status(h) : PX_HS(SERVICE_UNKNOWN));
    pthread_mutex_unlock(&h->mu);
    /* An interrupt that came before the watcher was listed found
     * nothing: a cancelled call is over (its CLOSED may have passed), a
     * stopping server ends the stream. */
    if (px_call_is_cancelled(call))
        px_health_unwatch(h, call);
    else if (px_call_server_stopping(call))
        px_call_finish(call, GRPC_STATUS_OK, NULL);
}

static void px_health_watch_interrupt(px_call_t *call, px_interrupt_t why)
{
    px_health_t *h = (px_health_t *)px_call_method_entry(call)->data;

    /* Server stopping: end the stream (its last message was NOT_SERVING,
     * sent when the drain began). */
    if (why == PX_INTERRUPT_SHUTDOWN)
        px_call_finish(call, GRPC_STATUS_OK, NULL);
    if (why != PX_INTERRUPT_SHUTDOWN)
        px_health_unwatch(h, call);
}

px_health_t *px_health_new(void)
{
    px_health_t *h = calloc(1, sizeof(*h));

    if (h == NULL)
        return NULL;
    atomic_init(&h->serving, false);
    pthread_mutex_init(&h->mu, NULL);
    h->check = (px_method_t){
        .path = "/" PX_HEALTH_SERVICE "/Check",
        .kind = PX_RPC_UNARY,
        .data = h,
        .req_desc = &grpc__health__v1__health_check_request__descriptor,
        .resp_desc = &grpc__health__v1__health_check_response__descriptor,
        .on_request = px_health_check,
    };
    h->watch = (px_method_t){
        .path = "/" PX_HEALTH_SERVICE "/Watch",
        .kind = PX_RPC_SERVER_STREAM,
        .data = h,
        .req_desc = &grpc__health__v1__health_check_request__descriptor,
        .resp_desc = &grpc__health__v1__health_check_response__descriptor,
        .on_request = px_health_watch,
        .on_interrupt = px_health_watch_interrupt,
    };
    return h;
}

gt_err_t px_health_register(px_health_t *h, px_method_table_t *t)
{
    gt_err_t rc;

    h->table = t;
    if ((rc = px_method_table_add(t, &h->check)) != GT_OK)
        return rc;
    return px_method_table_add(t, &h->watch);
}

void px_health_set_serving(px_health_t *h, bool serving)
{
    int st = serving ? PX_HS(SERVING) : PX_HS(NOT_SERVING);

    pthread_mutex_lock(&h->mu);
    if (atomic_exchange(&h->serving, serving) != serving) {
        GT_LOG(INFO, "rpc", "health: %s", serving ? "SERVING" : "NOT_SERVING");
        for (px_watch_t *w = h->watchers; w != NULL; w = w->next)
            if (w->known)
                px_health_send(w->call, st);
    }
    pthread_mutex_unlock(&h->mu);
}

void px_health_free(px_health_t *h)
{
    if (h == NULL)
        return;
    pthread_mutex_destroy(&h->mu);
    free(h);
}
