/* /api/v1/clients: the connected RocketMQ clients (the service's client
 * registry: one entry per client id with an open Telemetry stream or
 * messages held), and DELETE to close one: its Telemetry stream ends
 * with UNAVAILABLE and the messages it holds are given back (the SDKs
 * reconnect by themselves).  AMQP connections of the gateway are listed
 * too (px_admin_set_amqp) as "amqp:<n>"; DELETE closes one with
 * connection.close 320 CONNECTION_FORCED, as RabbitMQ's management API
 * does.  A RocketMQ client chooses its own id, which may start with
 * "amqp:" too: DELETE looks the id up among the RocketMQ clients first
 * and takes it for an AMQP connection's only when none has it. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt_log.h"
#include "px_admin_int.h"

static const char *type_name(int t)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&apache__rocketmq__v2__client_type__descriptor, t);

    return v != NULL ? v->name : "UNKNOWN";
}

static json_t *client_json(const px_client_t *c)
{
    json_t *topics = json_array();

    for (size_t i = 0; i < c->n_topics; i++)
        json_array_append_new(topics, json_string(c->topics[i]));
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s*, s:o, s:I, s:I, s:b}", "client_id",
                     c->id, "type", type_name(c->client_type), "language", c->language,
                     "version", c->version, "remote", c->peer, "group",
                     c->group[0] != '\0' ? c->group : NULL, "topics", topics, "since_ms",
                     (json_int_t)c->since_ms, "held", (json_int_t)c->n_held,
                     "connected", c->telemetry != NULL);
}

#define AMQP_PREFIX "amqp:"

void px_admin_set_amqp(px_admin_t *a, const px_admin_amqp_ops_t *ops)
{
    pthread_mutex_lock(&a->amqp_mu);
    while (a->amqp_calls > 0)
        pthread_cond_wait(&a->amqp_cv, &a->amqp_mu);
    if (ops != NULL)
        a->amqp = *ops;
    else
        memset(&a->amqp, 0, sizeof(a->amqp));
    pthread_mutex_unlock(&a->amqp_mu);
}

/* The hooks for one call (false: none); amqp_end() after. */
static bool amqp_begin(px_admin_t *a, px_admin_amqp_ops_t *ops)
{
    bool on;

    pthread_mutex_lock(&a->amqp_mu);
    on = a->amqp.list != NULL;
    if (on) {
        *ops = a->amqp;
        a->amqp_calls++;
    }
    pthread_mutex_unlock(&a->amqp_mu);
    return on;
}

static void amqp_end(px_admin_t *a)
{
    pthread_mutex_lock(&a->amqp_mu);
    if (--a->amqp_calls == 0)
        pthread_cond_broadcast(&a->amqp_cv);
    pthread_mutex_unlock(&a->amqp_mu);
}

static void amqp_list(px_admin_t *a, json_t *arr)
{
    px_admin_amqp_ops_t ops;
    px_admin_amqp_conn_t *v;
    size_t n = 0;

    if (!amqp_begin(a, &ops))
        return;
    v = ops.list(ops.arg, &n);
    amqp_end(a);
    for (size_t i = 0; i < n; i++) {
        char id[32], ver[160];
        json_t *j;

        snprintf(id, sizeof(id), AMQP_PREFIX "%" PRIu64, v[i].id);
        snprintf(ver, sizeof(ver), "%s%s%s", v[i].product, v[i].product[0] && v[i].version[0]
                 ? " " : "", v[i].version);
        j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:b, s:I, s:b, s:o, s:n}",
                      "client_id", id, "type", "AMQP", "language", "AMQP", "version", ver,
                      "remote", v[i].peer, "vhost", v[i].vhost, "user", v[i].user,
                      "channels", (json_int_t)v[i].channels, "tls", v[i].tls, "since_ms",
                      (json_int_t)v[i].since_ms, "connected", true, "topics", json_array(),
                      "group");
        if (j != NULL) /* a field that is not UTF-8 is left out */
            json_array_append_new(arr, j);
    }
    free(v);
}

/* DELETE /api/v1/clients/amqp:N */
static void amqp_close(px_admin_t *a, const char *id, px_http_resp_t *resp)
{
    const char *num = id + strlen(AMQP_PREFIX);
    px_admin_amqp_ops_t ops;
    unsigned long long n;
    char *end;
    gt_err_t rc;

    errno = 0;
    n = strtoull(num, &end, 10);
    if (*num < '0' || *num > '9' || *end != '\0' || errno != 0) {
        px_admin_err(resp, 404, "no client %s", id);
        return;
    }
    if (!amqp_begin(a, &ops)) {
        px_admin_err(resp, 404, "no client %s", id);
        return;
    }
    rc = ops.close(ops.arg, (uint64_t)n);
    amqp_end(a);
    if (rc == GT_ENOTFOUND) {
        px_admin_err(resp, 404, "no client %s", id);
    } else if (rc != GT_OK) {
        px_admin_err(resp, 503, "cannot close %s now: %s", id, gt_err_str(rc));
    } else {
        GT_LOG(INFO, "admin", "AMQP connection %s closed through the admin API", id);
        px_admin_json(resp, 200, json_pack("{s:s}", "closed", id));
    }
}

static void clients_list(px_admin_t *a, px_http_resp_t *resp)
{
    json_t *arr = json_array();

    pthread_mutex_lock(&a->svc->clients_mu);
    for (px_client_t *c = a->svc->clients; c != NULL; c = c->next) {
        json_t *j = client_json(c);

        if (j != NULL) /* an id or field that is not UTF-8 is left out */
            json_array_append_new(arr, j);
    }
    pthread_mutex_unlock(&a->svc->clients_mu);
    amqp_list(a, arr);
    px_admin_json(resp, 200, json_pack("{s:o}", "clients", arr));
}

static void client_close(px_admin_t *a, const char *id, px_http_resp_t *resp)
{
    px_call_t *call = NULL;
    px_client_t *c;

    pthread_mutex_lock(&a->svc->clients_mu);
    c = px_client_get_locked(a->svc, id, false);
    if (c != NULL && (call = c->telemetry) != NULL)
        px_call_ref(call);
    pthread_mutex_unlock(&a->svc->clients_mu);
    if (c == NULL && strncmp(id, AMQP_PREFIX, strlen(AMQP_PREFIX)) == 0) {
        amqp_close(a, id, resp);
        return;
    }
    if (c == NULL) {
        px_admin_err(resp, 404, "no client %s", id);
        return;
    }
    if (call != NULL) {
        px_call_finish(call, GRPC_STATUS_UNAVAILABLE, "closed by the operator");
        px_call_unref(call);
    }
    px_client_forget(a->svc, id);
    GT_LOG(INFO, "admin", "client %s closed through the admin API", id);
    px_admin_json(resp, 200, json_pack("{s:s}", "closed", id));
}

void px_admin_clients(void *arg, const px_http_req_t *req, px_http_resp_t *resp)
{
    px_admin_t *a = arg;
    const char *rest = req->url + strlen("/api/v1/clients");
    px_seg_t seg[PX_SEG_MAX];
    int n;

    if (*rest != '\0' && *rest != '/') {
        px_admin_err(resp, 404, "no such API path");
        return;
    }
    if ((n = px_admin_split(rest, seg, PX_SEG_MAX)) < 0) {
        px_admin_err(resp, 400, "bad path segment");
        return;
    }
    if (n == 0) {
        if (strcmp(req->method, "GET") == 0)
            clients_list(a, resp);
        else
            px_admin_err(resp, 405, "method not allowed (GET)");
        return;
    }
    if (n == 1) {
        if (strcmp(req->method, "DELETE") == 0)
            client_close(a, seg[0], resp);
        else
            px_admin_err(resp, 405, "method not allowed (DELETE)");
        return;
    }
    px_admin_err(resp, 404, "no such API path");
}
