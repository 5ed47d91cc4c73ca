/* The AMQP broker's TTLs (gw_ttl.c): a queue's x-message-ttl, a message's
 * `expiration` property and a queue's x-expires, as RabbitMQ 3.10's classic
 * queues apply them.  Owned by the gateway's event-loop thread.
 *
 * A message's expiry is its store time plus the smaller of the queue's
 * x-message-ttl and its own expiration, so it keeps counting across a
 * restart.  Expired messages are never delivered: consumers and basic.get
 * drop (or dead-letter, reason `expired`) what they pop expired, and a
 * per-queue head timer removes expired messages from the queue's head
 * when nobody pops (RabbitMQ's queue timer): a "sweep" pops the head,
 * removes the expired run at the front and gives the rest back
 * (st_release: same place, same attempt).  While a sweep holds the head,
 * the queue's consumers and basic.gets wait for it, so order holds. */
#ifndef GW_TTL_H
#define GW_TTL_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct gw_ttl_wait gw_ttl_wait_t;

/* Per-queue TTL state (a member of gw_queue_t). */
typedef struct gw_qttl {
    int64_t msg_ttl;       /* x-message-ttl in ms, -1: none */
    int64_t expires;       /* x-expires in ms, 0: none */
    bool may_expire;       /* messages with an expiry may be in the queue */
    uint32_t out_exp;      /* unacked deliveries with an expiration: they
                              may come back (may_expire stays) */
    bool sweeping;         /* a sweep holds the head */
    bool again;            /* sweep once more when this one ends */
    bool armed;            /* head_ev is pending, for head_at */
    int64_t head_at;       /* wall-clock ms */
    struct event *head_ev; /* the head timer */
    struct event *exp_ev;  /* x-expires */
    int64_t unused_us;     /* unused since (CLOCK_MONOTONIC, us) */
    gw_ttl_wait_t *waiters;
} gw_qttl_t;

#endif
