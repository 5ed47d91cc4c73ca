/* Internal interface between the AMQP gateway's connection layer
 * (gw_server.c) and its broker (gw_broker.c: queues, publishing,
 * consuming, the store mapping).  Everything here runs on the gateway's
 * event-loop thread, except gw_broker_free (after the thread is joined).
 *
 * The connection layer owns sockets, the handshake and channel numbers;
 * the broker owns what a channel carries (its frame assembler, consumers,
 * unacked deliveries, confirms) and reaches the wire only through the
 * gw_conn_* functions below. */
#ifndef GW_INT_H
#define GW_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gw_auth.h"
#include "gw_codec.h"
#include "gw_trace.h"
#include "st.h"

struct event_base;
typedef struct gw_conn gw_conn_t;
typedef struct gw_broker gw_broker_t;
typedef struct gw_bconn gw_bconn_t;

/* ---- the connection layer, for the broker ---------------------------- */

void gw_conn_send_method(gw_conn_t *c, uint16_t ch, const gw_method_t *m);
/* A method with content (deliver, get-ok, return): raw_props as stored. */
void gw_conn_send_content(gw_conn_t *c, uint16_t ch, const gw_method_t *m, gw_bytes_t raw_props,
                          const void *body, size_t body_len);
/* connection.close with code and text ("NAME - " is prefixed). */
void gw_conn_error(gw_conn_t *c, uint16_t code, uint32_t mid, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* channel.close with code and text; the channel waits for close-ok and
 * the broker's channel state is released at once. */
void gw_conn_channel_error(gw_conn_t *c, uint16_t ch, uint16_t code, uint32_t mid,
                           const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Stops taking frames from the connection until as many unstalls. */
void gw_conn_stall(gw_conn_t *c);
void gw_conn_unstall(gw_conn_t *c);
/* Bytes waiting in the output buffer, and the bound over which the
 * broker stops pushing deliveries (it hears gw_broker_writable). */
size_t gw_conn_out_len(const gw_conn_t *c);
size_t gw_conn_out_limit(const gw_conn_t *c);
uint32_t gw_conn_frame_max(const gw_conn_t *c);
bool gw_conn_cancel_notify(const gw_conn_t *c);
/* The client takes connection.blocked / unblocked. */
bool gw_conn_blocked_notify(const gw_conn_t *c);
/* Open and not closing: replies and deliveries may go out. */
bool gw_conn_running(const gw_conn_t *c);
const char *gw_conn_peer(const gw_conn_t *c);
/* The number the admin API lists it by ("amqp:N"); 0 before connection.open. */
uint64_t gw_conn_id(const gw_conn_t *c);
/* The connection's permissions in its vhost (after connection.open), for
 * gw_auth_check / gw_auth_check_fault; its vhost is gw_grant_vhost(). */
const gw_grant_t *gw_conn_grant(const gw_conn_t *c);
/* The config's amqp.max_message_size and amqp.consumer_timeout_ms (0: no
 * timeout), for the broker to enforce. */
uint64_t gw_conn_max_message_size(const gw_conn_t *c);
uint32_t gw_conn_consumer_timeout_ms(const gw_conn_t *c);

/* ---- the broker, for the connection layer ----------------------------- */

/* Borrows base and store (both outlive the broker).  Reads the durable
 * metadata back (exchanges, queues, bindings), then calls ready_fn on the
 * loop thread (the server accepts connections from then on).  NULL on
 * failure. */
typedef struct gw_broker_opts {
    uint64_t max_message;        /* body bytes per publish; 0: 4 MiB */
    int64_t consumer_timeout_ms; /* 0: none */
    uint64_t block_bytes;        /* appends in flight: blocked; 0: 64 MiB */
    uint64_t mem_mark;           /* resident bytes: blocked; 0: none */
    const cfg_amqp_bridge_t *bridges; /* amqp.bridges (copied) */
    size_t nbridges;
    bool auto_create_topics;     /* a bridge's missing topic is created */
    const struct cfg_amqp *amqp; /* queue policies, vhost limits (NULL: none) */
    const gw_trace_hooks_t *trace; /* message trace (copied; NULL: none) */
} gw_broker_opts_t;

/* gw_flow.c */
uint64_t gw_flow_rss(void);          /* this process's resident bytes */
uint64_t gw_flow_total_memory(void); /* RAM, or the cgroup's limit if lower */

gw_broker_t *gw_broker_new(struct event_base *base, st_store_t *store,
                           const gw_broker_opts_t *bo, void (*ready_fn)(void *arg),
                           void *ready_arg);
/* Called on the loop thread when the server stops: no new store work. */
void gw_broker_stop(gw_broker_t *b);
/* After the loop thread is joined: waits for the store operations still
 * running, then frees.  NULL-safe. */
void gw_broker_free(gw_broker_t *b);

/* After connection.open: the connection works in the vhost of its grant
 * (gw_conn_grant), looked up here once.  NULL: out of memory. */
gw_bconn_t *gw_broker_conn_open(gw_broker_t *b, gw_conn_t *c);
/* The connection is gone (c must not be used any more): its channels
 * close, unacked deliveries go back, its exclusive queues are deleted. */
void gw_broker_conn_close(gw_bconn_t *bc);
/* Output drained under the limit: deliveries may resume. */
void gw_broker_writable(gw_bconn_t *bc);

bool gw_broker_chan_open(gw_bconn_t *bc, uint16_t ch);
void gw_broker_chan_close(gw_bconn_t *bc, uint16_t ch);
/* The frame assembler of an open channel. */
gw_asm_t *gw_broker_asm(gw_bconn_t *bc, uint16_t ch);
/* One assembled event of an open channel for classes exchange, queue,
 * basic, confirm and tx (methods), or a publish's content.  frame is the
 * frame it came from (a method may be kept and replayed). */
void gw_broker_event(gw_bconn_t *bc, uint16_t ch, const gw_asm_out_t *ev, const gw_frame_t *frame);

#endif
