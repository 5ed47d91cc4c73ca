/* Queue arguments: the x-* arguments of queue.declare, parsed and
 * validated as RabbitMQ 3.10 does (types accepted per argument, ranges,
 * its 406 PRECONDITION_FAILED texts), compared on redeclare ("inequivalent
 * arg"), and kept with the queue (the table as declared, in the durable
 * queue record).  Pure: no broker state, so the unit tests call it as is.
 *
 * RabbitMQ's order of checks, which decides the error when several
 * arguments are bad: x-dead-letter-exchange's type, x-queue-type, the
 * generic checks in RabbitMQ's declare_args order (x-expires,
 * x-message-ttl, x-dead-letter-exchange, x-dead-letter-routing-key,
 * x-max-length, x-max-length-bytes, x-max-priority, x-overflow,
 * x-queue-mode, x-single-active-consumer), then the arguments the queue type does not
 * take (in wire order), then quorum's properties (auto-delete,
 * exclusive-owner, non-durable).  Unknown x-* (and any other) arguments
 * are kept and ignored.  See docs/amqp.md, "Compatibility with RabbitMQ
 * 3.10". */
#ifndef GW_QARGS_H
#define GW_QARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gw_codec.h"

typedef enum { GW_QTYPE_CLASSIC, GW_QTYPE_QUORUM } gw_qtype_t;

typedef enum {
    GW_OVERFLOW_DROP_HEAD,
    GW_OVERFLOW_REJECT_PUBLISH,
    GW_OVERFLOW_REJECT_PUBLISH_DLX,
} gw_overflow_t;

/* RabbitMQ's upper bound for x-message-ttl and x-expires (ms): 10 years. */
#define GW_QARGS_MAX_EXPIRY 315360000000LL

/* The parsed arguments.  has_* say whether the argument was given. */
typedef struct gw_qargs {
    gw_qtype_t type;
    bool has_message_ttl, has_expires, has_max_length, has_max_length_bytes;
    bool has_max_priority, has_dlx, has_dlrk, has_delivery_limit;
    int64_t message_ttl;      /* ms, 0..GW_QARGS_MAX_EXPIRY */
    int64_t expires;          /* ms, 1..GW_QARGS_MAX_EXPIRY */
    int64_t max_length;       /* messages, >= 0 */
    int64_t max_length_bytes; /* body bytes, >= 0 */
    uint8_t max_priority;     /* 0..255 */
    gw_overflow_t overflow;   /* default drop-head */
    bool single_active_consumer;
    bool lazy;                /* x-queue-mode lazy (kept; no effect) */
    int64_t delivery_limit;   /* quorum: integer given (any sign) */
    uint8_t dlx_len, dlrk_len;
    char dlx[256];            /* x-dead-letter-exchange ("" = default) */
    char dlrk[256];           /* x-dead-letter-routing-key */
    uint8_t *raw;             /* the table as declared (owned), or NULL */
    size_t raw_len;
} gw_qargs_t;

/* Parses and validates a queue.declare's arguments (a validated table)
 * for a new queue named qname in vhost, declared with the given flags.
 * true with *out filled (free with gw_qargs_free); false with RabbitMQ's
 * 406 text (without the "PRECONDITION_FAILED - " prefix) in err.  Also
 * false with "out of memory" in err when the copy fails. */
bool gw_qargs_parse(gw_table_t args, gw_str_t qname, const char *vhost, bool durable,
                    bool exclusive, bool auto_delete, gw_qargs_t *out, char *err, size_t cap);

/* Reads back a kept table (from the durable record): the same parse
 * without the checks that would refuse it (a record written by this
 * gateway passed them).  false only for a malformed table or no memory. */
bool gw_qargs_load(const uint8_t *raw, size_t len, gw_qargs_t *out);

/* Redeclare: compares the arguments RabbitMQ compares (the ones above
 * plus x-delivery-limit and x-queue-master-locator; integers by value
 * across integer types; x-queue-type absent equals "classic").  true when
 * equivalent; false with RabbitMQ's "inequivalent arg" text in err. */
bool gw_qargs_equivalent(const gw_qargs_t *cur, gw_table_t args, gw_str_t qname,
                         const char *vhost, char *err, size_t cap);

/* The kept table (empty when none). */
gw_table_t gw_qargs_table(const gw_qargs_t *a);

void gw_qargs_free(gw_qargs_t *a);

/* RabbitMQ's name of a field type letter ("longstr", "signedint", ...). */
const char *gw_qargs_type_name(char type);

#endif
