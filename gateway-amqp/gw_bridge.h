/* Bridges between AMQP exchanges and RocketMQ topics: both protocols on
 * one data set (docs/amqp.md, "Both protocols on one data set").
 *
 * A bridge binds an exchange (vhost + name) to a topic.  A message is
 * stored once, in RocketMQ's form (tag, keys, user properties, body), with
 * its AMQP envelope (exchange, routing key, property list) in the system
 * property ST_PROP_AMQP: one st_append_multi record with an entry in the
 * topic's queue and in each AMQP queue the exchange routed it to.
 *   - SendMessage to a bridged topic (px_svc_set_append_hook ->
 *     gw_bridge_append_hook): the gateway's loop routes each message by its
 *     tag (or a configured property) and appends it to the topic and the
 *     queues reached at once.
 *   - basic.publish to a bridged exchange (gw_publish.c): the topic is one
 *     more destination of the record.
 * AMQP deliveries rebuild the gateway's record from the envelope
 * (gw_bridge_copy_body); RocketMQ consumers never see system properties.
 * The bridges come from the config (amqp.bridges) and are kept as
 * metadata records (namespace amqp.bridge) for a later admin path. */
#ifndef GW_BRIDGE_H
#define GW_BRIDGE_H

#include <stdbool.h>
#include <stddef.h>

#include "cfg.h"
#include "gw_route.h"
#include "st.h"

#define GW_NS_BRIDGE "amqp.bridge"

typedef struct gw_bridge {
    char vhost[256];
    char exchange[256];
    char topic[ST_NAME_MAX + 1];
    char prop[256];    /* the routing key's user property; "" = the tag */
    gw_xtype_t xtype;  /* the exchange's type when it is declared */
    bool from_config;
} gw_bridge_t;

typedef struct gw_bridges gw_bridges_t;
typedef struct gw_broker gw_broker_t;
typedef struct gw_chan gw_chan_t;

/* The table (thread-safe: the proxy's threads read it) from the config's
 * bridges.  NULL: no memory. */
gw_bridges_t *gw_bridges_new(const cfg_amqp_bridge_t *v, size_t n, bool auto_create_topics);
void gw_bridges_free(gw_bridges_t *t);

/* Copies the bridge of an exchange / of a topic into *out; false: none. */
bool gw_bridge_by_exchange(gw_broker_t *b, const char *vhost, gw_str_t exchange,
                           gw_bridge_t *out);
bool gw_bridge_by_topic(gw_broker_t *b, const char *topic, gw_bridge_t *out);

/* On the loop, once the durable metadata is read and before the listener
 * accepts: declares the bridges' exchanges, creates missing topics, writes
 * the bridge records and reads those of an earlier run.  Each store request
 * it makes holds one b->requeues step (gw_meta_ready_step when answered). */
void gw_bridge_start(gw_broker_t *b);

/* The broker is ready (the metadata is read): SendMessages that waited
 * for it are routed now.  gw_bridge_stop: the broker stops; they are
 * answered GT_ESHUTDOWN (sets b->stopping). */
void gw_bridge_ready(gw_broker_t *b);
void gw_bridge_stop(gw_broker_t *b);

/* The proxy's append hook (px_append_hook_fn; arg is the broker): takes
 * the appends to a bridged topic.  Delayed and transactional messages are
 * left to the proxy (the store parks them and moves them to the topic
 * alone). */
bool gw_bridge_append_hook(void *arg, const char *topic, const st_message_t *msgs, size_t n,
                           st_append_cb cb, void *cb_arg);

/* basic.publish to a bridged exchange: fills *msg (RocketMQ's form of the
 * channel's assembled publish) with strings in *scratch (free it after
 * the append).  false: no memory. */
bool gw_bridge_publish_msg(gw_chan_t *ch, const gw_bridge_t *br, st_message_t *msg,
                           void **scratch);

void gw_bridge_scratch_free(void *scratch);

/* A popped message's bytes as the gateway's record: a copy of the body,
 * or, for a bridged message, the record rebuilt from its envelope.  false:
 * no memory. */
bool gw_bridge_copy_body(const st_message_t *m, uint8_t **out, size_t *len);

#endif
