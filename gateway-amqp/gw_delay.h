/* The x-delayed-message exchange type (the contract of RabbitMQ's
 * rabbitmq_delayed_message_exchange plugin) on the store's timers, and
 * helpers for rewriting a stored message record's properties.
 *
 * A delayed exchange is an exchange of its x-delayed-type (direct,
 * fanout, topic, headers) in the router with the caller flag
 * GW_XF_DELAYED; its durable record keeps the flag.  A publish to it whose
 * x-delay header is an integer in 1..2^32-1 ms is not routed: its record
 * (the 0xA1 record of docs/amqp.md, exchange name included) is appended
 * ONCE to the store topic GW_DELAY_TOPIC with delivery_ts_ms = now + delay
 * and the vhost in the message property "vhost", so the store parks it in
 * %SYS%TIMER (persisted, millions pending cost ~90 bytes each).  When it
 * comes due the store appends it to GW_DELAY_TOPIC, where the gateway's
 * one fire loop (a parked pop of group GW_DELAY_TOPIC) routes it through
 * the exchange's bindings as they are then, with x-delay set to -delay as
 * the plugin does, appends it to the queues reached and acks the timer
 * copy once those appends are in (a crash in between delivers it again).
 *
 * Everything here runs on the gateway's loop thread (gw_broker.c). */
#ifndef GW_DELAY_H
#define GW_DELAY_H

#include <stdbool.h>
#include <stdint.h>

#include "gw_broker_int.h"

#define GW_DELAY_TOPIC "AMQP-delay"  /* store topic and group of timers */
#define GW_DELAY_MAX 4294967295LL    /* ms; beyond: not delayed (Erlang's
                                         timer limit, as the plugin) */

/* exchange.declare with type "x-delayed-message" creating an exchange:
 * the x-delayed-type argument as the plugin checks it.  Sets *type; false
 * after the channel (406) or connection (503) error. */
bool gw_delay_declare(gw_chan_t *ch, uint32_t mid, gw_table_t args, gw_xtype_t *type);

/* The delay a publish asks for: the x-delay header as the plugin reads it
 * (integer types; floats truncated; a longstr of decimal digits), 0 when
 * absent, not a number, <= 0 or over GW_DELAY_MAX. */
int64_t gw_delay_of(gw_table_t headers);

/* Appends the channel's assembled record as a timer due in delay_ms; pub
 * (may be NULL) is confirmed when the timer is as durable as the store's
 * flush mode.  via: the delayed exchange to route through when it fires
 * (one an exchange-to-exchange binding reached), NULL: the record's. */
void gw_delay_publish(gw_chan_t *ch, int64_t delay_ms, gw_pub_t *pub, const char *via);

/* Start-up, after the durable metadata is read: creates the timer topic
 * and group if missing, then calls done(b) and starts the fire loop. */
void gw_delay_start(gw_broker_t *b, void (*done)(gw_broker_t *b));
/* Ends the fire loop's parked pop (gw_broker_stop / free); idempotent. */
void gw_delay_stop(gw_broker_t *b);
void gw_delay_free(gw_broker_t *b);

/* Rewrites the headers of record rec[0..len) (0xA1 layout): drop_bcc
 * removes the first BCC entry; set_delay replaces x-delay by a signed
 * int of value `delay`.  Returns an owned record (free()) in *out, or
 * false (out of memory, undecodable) leaving *out NULL. */
bool gw_rec_rewrite(const uint8_t *rec, size_t len, bool drop_bcc, bool set_delay, int64_t delay,
                    uint8_t **out, size_t *out_len);

/* The same record with the reply_to property set to reply_to; *hdr_off /
 * *hdr_len (may be NULL) get the headers table's place in it (0 when
 * none).  Owned result in *out, or false. */
bool gw_rec_set_reply_to(const uint8_t *rec, size_t len, gw_str_t reply_to, uint8_t **out,
                         size_t *out_len, size_t *hdr_off, size_t *hdr_len);

#endif
