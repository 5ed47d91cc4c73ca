/* Dead-lettering (RabbitMQ 3.10's rabbit_dead_letter, facts only): a
 * message that dies in a queue with an x-dead-letter-exchange is published
 * again, as a new store record, through that exchange (routed by the
 * router, or by queue name for ""), with the routing key
 * x-dead-letter-routing-key or its own keys (its routing key and CC), and
 * with its headers rewritten as RabbitMQ writes them:
 *   - x-death: an array of tables, most recent first; the entry for this
 *     (queue, reason) is counted up in place and moved to the front, or a
 *     new one {count long 1, reason, queue, time (timestamp, seconds),
 *     exchange, routing-keys (array of longstr), original-expiration (when
 *     the message had an expiration, which is removed)} is put there;
 *     entries written or updated once an x-death existed have their keys
 *     sorted, as RabbitMQ's do;
 *   - x-first-death-reason / -queue / -exchange at the first death;
 *   - CC is removed when a dead-letter routing key is set;
 *   - the whole headers table is sorted by key (RabbitMQ re-encodes it so).
 * Cycles: unless the reason is "rejected", a queue the new message would
 * reach is skipped when the message already died there and no death since
 * (this one included) was a rejection; with no queue left it is dropped.
 * No DLX, a DLX that does not exist, or no queue reached: dropped.
 * Fixture: tests/data/amqp/dlx_fixtures.json (recorded from RabbitMQ
 * 3.10.8), compared field by field by amqp_dlx.test.mjs. */
#ifndef GW_DLX_H
#define GW_DLX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gw_codec.h"

typedef struct gw_queue gw_queue_t;

typedef enum {
    GW_DL_REJECTED,       /* basic.reject / basic.nack with requeue=false */
    GW_DL_EXPIRED,        /* x-message-ttl / expiration */
    GW_DL_MAXLEN,         /* x-max-length(-bytes), drop-head / reject-publish-dlx */
    GW_DL_DELIVERY_LIMIT, /* quorum x-delivery-limit */
} gw_dl_reason_t;

/* RabbitMQ's name of a reason ("rejected", "expired", "maxlen",
 * "delivery_limit"). */
const char *gw_dl_reason_name(gw_dl_reason_t r);

/* Called on the loop once the message is dealt with: ok means the source
 * may be acked (the dead-letter append succeeded, or the message is
 * dropped); !ok means the append failed and the source must stay (give it
 * back: nothing is lost). */
typedef void (*gw_dl_done_fn)(void *arg, bool ok);

/* Dead-letters one message of q (rec: its stored record, as popped;
 * borrowed for the call only).  done is always called, possibly before
 * gw_dead_letter returns (drops). */
void gw_dead_letter(gw_queue_t *q, const uint8_t *rec, size_t len, gw_dl_reason_t reason,
                    gw_dl_done_fn done, void *arg);

/* The usual use: dead-letters, then acks handle on q once the append
 * succeeded (or the message is dropped); if the append failed, the
 * delivery is requeued instead (it comes back). */
void gw_dead_letter_ack(gw_queue_t *q, const uint8_t *rec, size_t len, gw_dl_reason_t reason,
                        const char *handle);

/* Whether a requeue of a delivery with this store attempt count (1 = the
 * first delivery) goes past q's x-delivery-limit (quorum queues). */
bool gw_dl_over_limit(const gw_queue_t *q, uint32_t attempt);

/* Quorum queues' deliveries carry x-delivery-count (long: the returns so
 * far) in their headers, which RabbitMQ then writes sorted by key: the
 * property list props with it, malloc'd (*out_len bytes), or NULL. */
uint8_t *gw_dl_count_props(gw_bytes_t props, uint32_t count, size_t *out_len);

#endif
