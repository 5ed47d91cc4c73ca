/* Internal header of the AMQP gateway's connection layer, shared by
 * gw_server.c (listeners, connection life, output, frames, the operator's
 * view, start and stop) and gw_handshake.c (connection.start to
 * connection.open): the server and connection structs and the few
 * functions one calls in the other.  Everything here runs on the
 * gateway's event-loop thread unless a field's comment says otherwise.
 * Only those two files include it; the broker sees gw_int.h. */
#ifndef GW_SERVER_INT_H
#define GW_SERVER_INT_H

#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "gw_auth.h"
#include "gw_codec.h"
#include "gw_int.h"
#include "gw_server.h"
#include "gw_tls.h"

#define GW_CLOSE_WAIT_MS 3000u
#define GW_DEFAULT_OUT_LIMIT ((size_t)4 << 20)

typedef enum conn_state {
    CS_HEADER,     /* waiting for the protocol header */
    CS_START_OK,   /* start sent */
    CS_TUNE_OK,    /* tune sent */
    CS_OPEN,       /* tune-ok received, waiting for connection.open */
    CS_RUNNING,    /* open */
    CS_CLOSING,    /* we sent connection.close; waiting for close-ok */
    CS_DEAD,       /* flushing the output, then lingering (gw_conn_finish) */
} conn_state_t;

enum { CH_CLOSED = 0, CH_OPEN, CH_CLOSING };

typedef struct gw_conn gw_conn_t;

#define GW_CLOSE_REQ_MAX 64 /* operator close requests not yet taken */

struct gw_server {
    struct event_base *base;
    struct evconnlistener *lis;
    struct evconnlistener *tls_lis; /* AMQPS; NULL when off */
    gw_tls_t *tls;                  /* its own lock */
    int tls_port;
    struct event *stop_ev;
    pthread_t thread;
    bool thread_started;
    int port;
    /* From the config's amqp section (cfg_amqp_t): */
    uint16_t heartbeat_s, channel_max; /* proposed in tune */
    uint32_t frame_max;                /* proposed in tune */
    uint32_t consumer_timeout_ms;      /* 0: none */
    uint64_t max_message_size;
    uint64_t block_bytes, mem_mark; /* flow control (gw_flow.c) */
    /* Swapped by gw_server_set_auth (users changed through the admin
     * API); the ones replaced stay in auth_old until stop (connections
     * hold their users and grants). */
    _Atomic(gw_auth_t *) auth;
    gw_auth_t **auth_old;
    size_t n_auth_old;
    uint32_t handshake_ms;
    size_t out_limit;
    char cluster_name[128];
    char product[64]; /* server-properties product (amqp.server_product) */
    gw_conn_t *conns;
    gw_broker_t *broker; /* NULL without a store: no messaging (540) */
    bool ready;          /* the broker's metadata is loaded */
    bool stopped;        /* stop_cb ran: the loop ends */
    void (*after_event)(void *ctx);
    void *after_event_ctx;
    size_t metrics_max_queues;
    /* The operator's view (gw_server_conns, gw_server_conn_close): reg_mu
     * guards the list of open connections (linked at connection.open,
     * unlinked when freed; their listed fields are set before) and the
     * close requests, which close_ev hands to the loop thread. */
    pthread_mutex_t reg_mu;
    gw_conn_t *open_conns;
    uint64_t next_conn_id;
    uint64_t close_req[GW_CLOSE_REQ_MAX];
    size_t nclose_req;
    bool users_changed; /* gw_server_set_auth: close deleted users' */
    struct event *close_ev;
};

struct gw_conn {
    gw_server_t *srv;
    gw_conn_t *prev, *next;
    struct bufferevent *bev;
    struct event *deadline; /* handshake, close-ok or flush deadline */
    struct event *hb;       /* heartbeat tick */
    gw_parser_t parser;
    conn_state_t state;
    bool loopback, auth_failure_close, cancel_notify, blocked_notify, paused, in_read;
    bool lingering;         /* finished and written: waits for the peer's close */
    int stall;              /* >0: frames wait (gw_conn_stall) */
    struct event *resume;   /* takes frames again after the last unstall */
    gw_bconn_t *bc;         /* the broker's state, once open */
    uint16_t channel_max, heartbeat;
    uint32_t frame_max;
    int64_t last_in_ms, last_out_ms;
    char peer[64], user[64];
    const gw_user_t *auth_user; /* after start-ok */
    const gw_grant_t *grant;    /* after open: permissions in the vhost */
    uint8_t *chan;              /* srv->channel_max + 1 entries */
    /* The operator's view (gw_server_conns): fixed once listed (open). */
    gw_conn_t *oprev, *onext; /* srv->open_conns, under srv->reg_mu */
    bool listed;
    bool tls;
    uint64_t id;
    int64_t since_ms;          /* wall clock */
    char product[64], version[64]; /* client_properties */
    atomic_uint nchan;         /* open channels */
};

static inline int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline struct timeval ms_tv(uint32_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    return tv;
}

/* ---- gw_server.c, for the handshake ---------------------------------- */

/* Sends a method in any connection state (gw_conn_send_method sends only
 * while running): the handshake's and the close's. */
void gw_conn_send_method_any(gw_conn_t *c, uint16_t ch, const gw_method_t *m);
/* Stops reading and frees the connection once its output is written (or
 * after GW_CLOSE_WAIT_MS when the peer does not read). */
void gw_conn_finish(gw_conn_t *c);
/* The heartbeat tick (an event on c, started at connection.open). */
void gw_conn_hb_cb(evutil_socket_t fd, short what, void *arg);

/* ---- gw_handshake.c, for the frame dispatch -------------------------- */

/* The protocol header arrived: sends connection.start. */
void gw_conn_send_start(gw_conn_t *c);
/* connection.start-ok (login), tune-ok, open, in their states. */
void gw_conn_on_start_ok(gw_conn_t *c, const gw_method_t *m);
void gw_conn_on_tune_ok(gw_conn_t *c, const gw_method_t *m);
void gw_conn_on_open(gw_conn_t *c, const gw_method_t *m);

#endif
