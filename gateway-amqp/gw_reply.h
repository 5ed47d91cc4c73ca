/* Direct reply-to: the amq.rabbitmq.reply-to pseudo-queue of RabbitMQ
 * (checked against RabbitMQ 3.10.8).
 *
 * A channel consumes "amq.rabbitmq.reply-to" with no-ack (one such
 * consumer per channel; no queue, nothing stored).  Its publishes whose
 * reply_to property is exactly "amq.rabbitmq.reply-to" are stored with
 * reply_to rewritten to "amq.rabbitmq.reply-to.<serial>.<key>", a name for
 * that consumer (serial: a number per consumer in this broker; key: 16
 * random bytes, so names cannot be guessed).  A publish on the default
 * exchange with such a routing key (or CC/BCC key) is handed straight to
 * that consumer as a basic.deliver on its channel -- not stored, not
 * confirmed by anyone, never redelivered; a name whose consumer is gone
 * drops the message.  As in RabbitMQ 3.10, the delivery carries the
 * channel's next delivery tag without taking it and the publish's routing
 * key, and such a key is not a queue, so a mandatory reply also gets
 * basic.return 312 NO_ROUTE.  A reply to a connection whose output
 * holds over 4 times its bound (a requester that does not read) is
 * dropped rather than buffered without end.
 *
 * Loop thread only (gw_broker.c). */
#ifndef GW_REPLY_H
#define GW_REPLY_H

#include <stdbool.h>

#include "gw_broker_int.h"

#define GW_REPLY_QUEUE "amq.rabbitmq.reply-to"

/* True for "amq.rabbitmq.reply-to." followed by anything. */
bool gw_reply_is_name(gw_str_t name);

/* basic.consume on GW_REPLY_QUEUE (406 without no-ack or when the channel
 * has one; 530 for a tag in use). */
void gw_reply_consume(gw_chan_t *ch, const gw_method_t *m);
/* basic.cancel of the reply consumer's tag: true when it was (answered). */
bool gw_reply_cancel(gw_chan_t *ch, const gw_method_t *m);
/* The channel closes: its reply consumer goes. */
void gw_reply_chan_closed(gw_chan_t *ch);
/* True when tag is the channel's reply consumer's. */
bool gw_reply_has_tag(const gw_chan_t *ch, gw_str_t tag);

/* queue.declare of GW_REPLY_QUEUE or of a reply name (passive): true when
 * handled (answered or failed). */
bool gw_reply_declare(gw_chan_t *ch, const gw_method_t *m);

/* The assembled publish asks for a reply to "amq.rabbitmq.reply-to":
 * rewrites its record's reply_to; false after closing the channel with
 * 406 "fast reply consumer does not exist". */
bool gw_reply_rewrite(gw_chan_t *ch);

/* Delivers the channel's assembled publish to the reply consumer named
 * by key (a reply name), or drops it. */
void gw_reply_deliver(gw_chan_t *ch, gw_str_t key);

void gw_reply_free(gw_broker_t *b);

#endif
