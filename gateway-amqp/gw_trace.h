/* gw_trace: the AMQP gateway's message trace events (issue 13).
 *
 * The front end gives the gateway two hooks (gw_server_opts_t.trace):
 * `wants` says whether a queue is traced, `note` takes one event.  Gantry
 * maps them to its message trace (proxy/service/px_trace.h), which buffers
 * the events and writes them to its trace topic; the hooks never block.
 * For a traced queue the gateway notes: publish (once the store answered
 * the append), deliver (basic.deliver and basic.get-ok, with the store's
 * attempt), ack, nack and reject (requeued, dropped or dead-lettered),
 * dlq when a nack or reject sends it to the queue's dead-letter exchange,
 * and dlq when a stored message leaves the queue by TTL expiry, max-length
 * overflow (drop-head) or delivery limit (result: RabbitMQ's x-death
 * reason, and the dead-letter exchange or "dropped").
 * Every event carries the store's message id and the message's message-id
 * property when it has one, the vhost, the queue's name, the connection
 * ("amqp:N", as in the admin API's client list) and the peer address.
 *
 * Threads: the gateway's loop thread (the hooks are called there).  The
 * gateway's own calls are in gw_trace_int.h. */
#ifndef GW_TRACE_H
#define GW_TRACE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct gw_trace_ev {
    const char *kind;            /* publish, deliver, ack, nack, reject, dlq */
    const char *msg_id;          /* the store's message id */
    const char *amqp_message_id; /* the message-id property, "" when none */
    const char *vhost, *queue;
    const char *conn;            /* "amqp:N" */
    const char *peer;
    const char *result;          /* NULL: OK */
    uint32_t attempt;            /* 0: not applicable */
    int64_t offset;              /* -1: not applicable */
    int64_t body_size;           /* -1: not applicable */
} gw_trace_ev_t;

typedef struct gw_trace_hooks {
    bool (*wants)(void *arg, const char *vhost, const char *queue);
    void (*note)(void *arg, const gw_trace_ev_t *e);
    void *arg;
} gw_trace_hooks_t;


#endif
