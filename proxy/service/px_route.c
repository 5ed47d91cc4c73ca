/* Route and client-lifecycle RPCs: QueryRoute, Heartbeat, QueryAssignment,
 * NotifyClientTermination.
 *
 * QueryRoute answers the address the client used (its request endpoints,
 * else the call's :authority) as the broker endpoint, so port-forwards, NAT
 * and Kubernetes Services keep working; there is one broker, id 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt_addr.h"
#include "gt_log.h"
#include "gt_text.h"
#include "px_svc_int.h"

#define PX_DESC(x) (&apache__rocketmq__v2__##x##__descriptor)

static Apache__Rocketmq__V2__Permission px_perm(uint32_t perm)
{
    bool r = (perm & ST_PERM_READ) != 0, w = (perm & ST_PERM_WRITE) != 0;
    if (r && w)
        return APACHE__ROCKETMQ__V2__PERMISSION__READ_WRITE;
    if (r)
        return APACHE__ROCKETMQ__V2__PERMISSION__READ;
    if (w)
        return APACHE__ROCKETMQ__V2__PERMISSION__WRITE;
    return APACHE__ROCKETMQ__V2__PERMISSION__NONE;
}

/* Message types a topic accepts; returns the count written to `out`. */
static size_t px_accept_types(st_topic_type_t type,
                              Apache__Rocketmq__V2__MessageType out[4])
{
    switch (type) {
    case ST_TOPIC_FIFO:
        out[0] = APACHE__ROCKETMQ__V2__MESSAGE_TYPE__FIFO;
        return 1;
    case ST_TOPIC_DELAY:
        out[0] = APACHE__ROCKETMQ__V2__MESSAGE_TYPE__DELAY;
        return 1;
    case ST_TOPIC_TRANSACTION:
        out[0] = APACHE__ROCKETMQ__V2__MESSAGE_TYPE__TRANSACTION;
        return 1;
    case ST_TOPIC_MIXED:
        out[0] = APACHE__ROCKETMQ__V2__MESSAGE_TYPE__NORMAL;
        out[1] = APACHE__ROCKETMQ__V2__MESSAGE_TYPE__FIFO;
        out[2] = APACHE__ROCKETMQ__V2__MESSAGE_TYPE__DELAY;
        out[3] = APACHE__ROCKETMQ__V2__MESSAGE_TYPE__TRANSACTION;
        return 4;
    case ST_TOPIC_NORMAL:
    default:
        out[0] = APACHE__ROCKETMQ__V2__MESSAGE_TYPE__NORMAL;
        return 1;
    }
}

/* The endpoint the client reached us at. */
typedef struct px_endpoint {
    Apache__Rocketmq__V2__Endpoints eps;
    Apache__Rocketmq__V2__Address addr;
    Apache__Rocketmq__V2__Address *addrs[1];
    char host[256];
} px_endpoint_t;

static void px_endpoint_build(px_call_t *call,
                              const Apache__Rocketmq__V2__Endpoints *req,
                              px_endpoint_t *ep)
{
    const char *auth = px_authority_text(call);

    apache__rocketmq__v2__endpoints__init(&ep->eps);
    apache__rocketmq__v2__address__init(&ep->addr);
    ep->addrs[0] = &ep->addr;
    ep->eps.n_addresses = 1;
    ep->eps.addresses = ep->addrs;
    if (req != NULL && req->n_addresses > 0 && req->addresses[0]->host != NULL &&
        req->addresses[0]->host[0] != '\0') {
        gt_utf8_copy(ep->host, sizeof(ep->host), req->addresses[0]->host);
        ep->addr.port = req->addresses[0]->port;
        ep->eps.scheme = req->scheme;
    } else {
        gt_hostport_t hp;
        const char *why;
        /* The authority the client dialled; a port-less one means the
         * default port. */
        if (gt_hostport_parse(auth, 8081, &hp, &why) == GT_OK) {
            snprintf(ep->host, sizeof(ep->host), "%s", hp.host);
            ep->addr.port = hp.port;
        } else {
            gt_utf8_copy(ep->host, sizeof(ep->host), auth);
            ep->addr.port = 8081;
        }
        if (strchr(ep->host, ':') != NULL)
            ep->eps.scheme = APACHE__ROCKETMQ__V2__ADDRESS_SCHEME__IPv6;
        else if (ep->host[strspn(ep->host, "0123456789.")] == '\0')
            ep->eps.scheme = APACHE__ROCKETMQ__V2__ADDRESS_SCHEME__IPv4;
        else
            ep->eps.scheme = APACHE__ROCKETMQ__V2__ADDRESS_SCHEME__DOMAIN_NAME;
    }
    ep->addr.host = ep->host;
}

void px_route_query(px_call_t *call, ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *rd = PX_DESC(query_route_response);
    Apache__Rocketmq__V2__QueryRouteRequest *req =
        (Apache__Rocketmq__V2__QueryRouteRequest *)msg;
    Apache__Rocketmq__V2__QueryRouteResponse resp =
        APACHE__ROCKETMQ__V2__QUERY_ROUTE_RESPONSE__INIT;
    Apache__Rocketmq__V2__Status st;
    Apache__Rocketmq__V2__MessageQueue *mqs = NULL, **mqp = NULL;
    Apache__Rocketmq__V2__Broker broker = APACHE__ROCKETMQ__V2__BROKER__INIT;
    Apache__Rocketmq__V2__Resource topic = APACHE__ROCKETMQ__V2__RESOURCE__INIT;
    Apache__Rocketmq__V2__MessageType types[4];
    px_endpoint_t ep;
    st_topic_t t;
    char why[256];
    px_code_t code;

    if (!px_require_client(call, rd))
        return;
    code = px_check_topic(req->topic, why, sizeof(why));
    if (code != PX_CODE(OK)) {
        px_reply_status(call, rd, code, why);
        goto out;
    }
    if (px_topic_autocreate(call, req->topic->name, msg) ||
        !px_topic_or_reply(call, rd, req->topic->name, &t))
        goto out;
    px_endpoint_build(call, req->endpoints, &ep);
    broker.name = "gantry";
    broker.id = 0;
    broker.endpoints = &ep.eps;
    topic.name = t.name;
    topic.resource_namespace = req->topic->resource_namespace;
    mqs = calloc(t.queue_count, sizeof(*mqs));
    mqp = calloc(t.queue_count, sizeof(*mqp));
    if (mqs == NULL || mqp == NULL) {
        px_reply_status(call, rd, PX_CODE(INTERNAL_SERVER_ERROR), "out of memory");
        goto out;
    }
    size_t ntypes = px_accept_types(t.type, types);
    for (uint32_t i = 0; i < t.queue_count; i++) {
        apache__rocketmq__v2__message_queue__init(&mqs[i]);
        mqs[i].topic = &topic;
        mqs[i].id = (int32_t)i;
        mqs[i].permission = px_perm(t.perm);
        mqs[i].broker = &broker;
        mqs[i].n_accept_message_types = ntypes;
        mqs[i].accept_message_types = types;
        mqp[i] = &mqs[i];
    }
    px_status_set(&st, PX_CODE(OK), "OK");
    resp.status = &st;
    resp.n_message_queues = t.queue_count;
    resp.message_queues = mqp;
    px_call_reply_pb(call, &resp.base);
out:
    free(mqs);
    free(mqp);
}

void px_route_heartbeat(px_call_t *call, ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *rd = PX_DESC(heartbeat_response);
    Apache__Rocketmq__V2__HeartbeatRequest *req =
        (Apache__Rocketmq__V2__HeartbeatRequest *)msg;
    char why[256];

    if (!px_require_client(call, rd))
        return;
    if (req->group_present_case ==
            APACHE__ROCKETMQ__V2__HEARTBEAT_REQUEST__GROUP_PRESENT_GROUP &&
        req->group != NULL && req->group->name != NULL && req->group->name[0]) {
        px_code_t code = px_check_group(req->group, why, sizeof(why));
        if (code != PX_CODE(OK)) {
            px_reply_status(call, rd, code, why);
            return;
        }
    }
    px_reply_status(call, rd, PX_CODE(OK), "OK");
}

void px_route_assignment(px_call_t *call, ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *rd = PX_DESC(query_assignment_response);
    Apache__Rocketmq__V2__QueryAssignmentRequest *req =
        (Apache__Rocketmq__V2__QueryAssignmentRequest *)msg;
    Apache__Rocketmq__V2__QueryAssignmentResponse resp =
        APACHE__ROCKETMQ__V2__QUERY_ASSIGNMENT_RESPONSE__INIT;
    Apache__Rocketmq__V2__Status st;
    Apache__Rocketmq__V2__Broker broker = APACHE__ROCKETMQ__V2__BROKER__INIT;
    Apache__Rocketmq__V2__Resource topic = APACHE__ROCKETMQ__V2__RESOURCE__INIT;
    Apache__Rocketmq__V2__MessageQueue *mqs = NULL;
    Apache__Rocketmq__V2__Assignment *as = NULL, **asp = NULL;
    Apache__Rocketmq__V2__MessageType types[4];
    px_endpoint_t ep;
    st_topic_t t;
    st_group_t g;
    char why[256];
    px_code_t code;
    size_t n, ntypes;

    if (!px_require_client(call, rd))
        return;
    if ((code = px_check_topic(req->topic, why, sizeof(why))) != PX_CODE(OK) ||
        (code = px_check_group(req->group, why, sizeof(why))) != PX_CODE(OK)) {
        px_reply_status(call, rd, code, why);
        goto out;
    }
    if (px_topic_autocreate(call, req->topic->name, msg) ||
        !px_topic_or_reply(call, rd, req->topic->name, &t) ||
        !px_group_or_reply(call, rd, req->group->name, &g))
        goto out;
    if (!(t.perm & ST_PERM_READ)) {
        snprintf(why, sizeof(why), "topic \"%.160s\" has no readable queue", t.name);
        px_reply_status(call, rd, PX_CODE(FORBIDDEN), why);
        goto out;
    }
    /* Message-granularity balancing: a non-FIFO group gets the whole broker
     * (queue id -1) and pops from every queue; FIFO groups get one
     * assignment per queue, as RocketMQ does. */
    n = g.fifo ? t.queue_count : 1;
    mqs = calloc(n, sizeof(*mqs));
    as = calloc(n, sizeof(*as));
    asp = calloc(n, sizeof(*asp));
    if (mqs == NULL || as == NULL || asp == NULL) {
        px_reply_status(call, rd, PX_CODE(INTERNAL_SERVER_ERROR), "out of memory");
        goto out;
    }
    px_endpoint_build(call, req->endpoints, &ep);
    broker.name = "gantry";
    broker.endpoints = &ep.eps;
    topic.name = t.name;
    topic.resource_namespace = req->topic->resource_namespace;
    ntypes = px_accept_types(t.type, types);
    for (size_t i = 0; i < n; i++) {
        apache__rocketmq__v2__message_queue__init(&mqs[i]);
        mqs[i].topic = &topic;
        mqs[i].id = g.fifo ? (int32_t)i : -1;
        mqs[i].permission = px_perm(t.perm);
        mqs[i].broker = &broker;
        mqs[i].n_accept_message_types = ntypes;
        mqs[i].accept_message_types = types;
        apache__rocketmq__v2__assignment__init(&as[i]);
        as[i].message_queue = &mqs[i];
        asp[i] = &as[i];
    }
    px_status_set(&st, PX_CODE(OK), "OK");
    resp.status = &st;
    resp.n_assignments = n;
    resp.assignments = asp;
    px_call_reply_pb(call, &resp.base);
out:
    free(mqs);
    free(as);
    free(asp);
}

void px_route_terminate(px_call_t *call, ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *rd = PX_DESC(notify_client_termination_response);

    if (!px_require_client(call, rd))
        return;
    px_client_forget(px_svc(call), px_client_id(call));
    px_reply_status(call, rd, PX_CODE(OK), "OK");
}
