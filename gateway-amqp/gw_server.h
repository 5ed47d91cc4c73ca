/* The AMQP 0-9-1 gateway's connection layer: a listener and its
 * connections on one libevent event loop, in a thread of its own.
 *
 * What it does now (issue 9, first part): the protocol header check, the
 * connection handshake (start / start-ok with PLAIN or AMQPLAIN / tune /
 * tune-ok / open) as RabbitMQ 3.10 answers it, heartbeats both ways,
 * channel.open / close / flow, connection.close both ways.  With a store
 * (opts.store), classes queue, basic and confirm go to the broker
 * (gw_broker.c); without one they are refused with 540 NOT_IMPLEMENTED.
 * Users, vhosts and permissions: the config's amqp section through
 * gw_auth.h (by default guest/guest, from loopback peers only, with full
 * permissions on vhost "/"). */
#ifndef GW_SERVER_H
#define GW_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cfg.h"
#include "gt_err.h"
#include "gt_tls.h"
#include "gw_trace.h"
#include "st.h"

typedef struct gw_server gw_server_t;

typedef struct gw_server_opts {
    const char *listen;        /* HOST:PORT; port 0 picks a free one */
    const char *cluster_name;  /* server-properties cluster_name */
    const cfg_amqp_t *amqp;    /* tune values, limits, users, vhosts and
                                  permissions (copied; NULL: the defaults) */
    const cfg_auth_t *auth;    /* auth.users log in too (borrowed for the start;
                                  NULL: none) */
    uint32_t handshake_ms;     /* header..open deadline; 0: 10000 */
    size_t out_limit;          /* per-connection output bound; 0: 4 MiB */
    struct st_store *store;    /* borrowed, outlives the server; NULL: no
                                  messaging (queue, basic... answer 540) */
    uint64_t max_message;      /* what the store takes per body: the limit
                                  is the smaller of it and
                                  amqp.max_message_size; 0: the latter */
    /* Run by the loop thread after each round of events, holding no lock:
     * the store's executor runs there the answers to that thread's own
     * store calls (px_exec_after_event).  May be NULL. */
    void (*after_event)(void *ctx);
    void *after_event_ctx;
    bool auto_create_topics;   /* a bridge's missing topic is created
                                  (server.auto_create_topics) */
    const char *tls_listen;    /* AMQPS HOST:PORT; NULL: none */
    const gt_tls_files_t *tls_files; /* with tls_listen; borrowed for the
                                        start (paths copied for reloads) */
    size_t metrics_max_queues; /* queues on /metrics (gw_metrics.h); 0: 1000 */
    const gw_trace_hooks_t *trace; /* message trace (gw_trace.h; copied); NULL: off */
} gw_server_opts_t;

/* Binds the listener and starts the event-loop thread.  GT_OK with
 * *out; GT_EBUSY when the address is in use, GT_EINVAL for a bad
 * address (o->listen, not o->amqp->listen, is used), GT_EIO otherwise,
 * with a message in err. */
gt_err_t gw_server_start(const gw_server_opts_t *o, gw_server_t **out, char *err,
                         size_t errlen);
/* The bound port (useful with port 0). */
int gw_server_port(const gw_server_t *s);
/* The AMQPS listener's port; 0 without one. */
int gw_server_tls_port(const gw_server_t *s);
/* Reads the AMQPS certificate files again (SIGHUP): connections accepted
 * from now on get the new certificate.  Bad files: an error with a message
 * in err, and the old certificate stays.  GT_OK when there is no AMQPS
 * listener (or s is NULL). */
gt_err_t gw_server_tls_reload(gw_server_t *s, char *err, size_t errlen);
/* Rebuilds the users (amqp's and auth's, both borrowed for the call) that
 * logins from now on are checked against: the admin API changed auth's.
 * Open connections keep their user and grants, but those of a user that is
 * gone are closed (connection.close 320 CONNECTION_FORCED, on the loop
 * thread soon after).  NULL s: GT_OK.  One caller at a time. */
gt_err_t gw_server_set_auth(gw_server_t *s, const cfg_amqp_t *amqp, const cfg_auth_t *auth,
                            char *err, size_t errlen);
/* The proxy's SendMessage append hook (px_append_hook_fn, arg: the
 * server): appends to a topic bridged to an exchange (amqp.bridges) also
 * reach the exchange's queues.  Remove it before gw_server_stop. */
bool gw_server_append_hook(void *arg, const char *topic, const st_message_t *msgs, size_t n,
                           st_append_cb cb, void *cb_arg);
/* The operator's HTTP requests under /api/v1/amqp/ (any thread; see
 * docs/amqp.md, "Migration operations"): POST
 * /api/v1/amqp/queues/VHOST/QUEUE/pause or /resume (percent-escaped
 * segments).  Returns the HTTP status with a short text in text[cap]. */
unsigned gw_server_admin(gw_server_t *s, const char *method, const char *url, char *text,
                         size_t cap);
/* One open AMQP connection, for the admin API's client list. */
typedef struct gw_conn_info {
    uint64_t id;             /* given at connection.open, from 1 */
    int64_t since_ms;        /* opened (wall clock) */
    uint32_t channels;       /* open channels */
    bool tls;                /* AMQPS */
    char peer[64], user[64], vhost[256];
    char product[64], version[64]; /* the client's client_properties */
} gw_conn_info_t;
/* The connections past connection.open (any thread but the gateway's):
 * an array to free(), NULL with *n 0 when there are none (or no memory). */
gw_conn_info_t *gw_server_conns(gw_server_t *s, size_t *n);
/* Closes connection id as RabbitMQ's management API does: connection.close
 * 320 CONNECTION_FORCED "Closed via management plugin", then the socket
 * once the client answers (or after a bound).  Asynchronous; any thread
 * but the gateway's.  GT_ENOTFOUND: no such open connection; GT_EAGAIN:
 * too many requests pending. */
gt_err_t gw_server_conn_close(gw_server_t *s, uint64_t id);
/* Prometheus lines of the AMQP queues' counters and the RabbitMQ-named
 * gauges of gw_metrics.h (any thread but the gateway's). */
void gw_server_metrics(gw_server_t *s, FILE *out);
/* Closes every connection and the listener, joins the thread, frees.
 * NULL is a no-op. */
void gw_server_stop(gw_server_t *s);

#endif
