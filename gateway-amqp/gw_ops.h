/* The migration operations on AMQP queues (Gantry's own, not RabbitMQ's):
 * pause / resume of deliveries, a per-queue delivery rate limit, graded
 * retry delays (and RabbitMQ 4.3's x-delayed-retry-* arguments), a
 * per-vhost body size limit and per-queue counters for /metrics.  See
 * docs/amqp.md, "Migration operations".
 *
 * Sources: the config (amqp.queue_policies, amqp.vhost_limits) and the
 * operator's run-time pause / resume (HTTP, gw_server_queue_pause), kept
 * as records of the store's metadata space (namespace "amqp.qops") so
 * that they survive restarts.
 *
 * Threads: everything runs on the gateway's loop thread, except
 * gw_ops_metrics (HTTP thread: it reads the counters, which are atomics,
 * under the registry's mutex) and gw_ops_admin (HTTP thread: it posts the
 * change to the loop and waits for it to be applied and persisted). */
#ifndef GW_OPS_H
#define GW_OPS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "cfg.h"
#include "gw_broker_int.h"

/* Per-queue counters (gantry_amqp_queue_<name>_total on /metrics). */
typedef enum {
    GW_QS_PUBLISHED,     /* appended to the queue (confirmed by the store) */
    GW_QS_DELIVERED,     /* basic.deliver and basic.get-ok */
    GW_QS_ACKED,         /* basic.ack by the client (not no-ack deliveries) */
    GW_QS_REDELIVERED,   /* deliveries with redelivered=true (also counted
                            as delivered) */
    GW_QS_DEAD_LETTERED, /* counted by the dead-lettering code */
    GW_QS_EXPIRED,       /* counted by the TTL code */
    GW_QS_COUNT
} gw_qstat_t;

/* Adds n to one of q's counters (loop thread; q may be gone). */
void gw_qstats_inc(const gw_queue_t *q, gw_qstat_t which, uint64_t n);

/* The vhost a queue belongs to. */
const char *gw_queue_vhost(const gw_queue_t *q);

/* ---- broker life (gw_broker.c) */

/* Copies the policies and limits of amqp (NULL: none) and reads the
 * persisted run-time overrides back (waits for the store: call before
 * the loop runs).  false: no memory. */
bool gw_ops_new(gw_broker_t *b, const cfg_amqp_t *amqp);
void gw_ops_free(gw_broker_t *b);

/* ---- queues (gw_queue.c) */

/* A queue was added to the map / dropped from it: attaches (detaches)
 * its state, resolved from the policies.  false: no memory. */
bool gw_ops_queue_add(gw_queue_t *q);
void gw_ops_queue_drop(gw_queue_t *q);
/* Its last reference went (gw_queue_unref): frees the state. */
void gw_ops_queue_free(gw_queue_t *q);
/* queue.declare's arguments for a new queue: x-delayed-retry-type /
 * -min / -max.  false with a 406 text in err when invalid. */
bool gw_ops_queue_args(gw_queue_t *q, gw_table_t args, char *err, size_t errlen);

/* ---- deliveries (gw_consume.c) */

/* How many of n deliveries the queue lets go now (0 while paused; the
 * rate limit's tokens are taken; the queue's consumers are kicked when
 * the next token is due). */
uint32_t gw_ops_credit(gw_queue_t *q, uint32_t n);
/* Gives back tokens taken by gw_ops_credit and not used. */
void gw_ops_refund(gw_queue_t *q, uint32_t n);
bool gw_ops_paused(const gw_queue_t *q);
/* A delivery went out (counters). */
void gw_ops_delivered(gw_queue_t *q, bool redelivered);
/* Settles a delivery with the store when an operation applies: an ack
 * (counted), a requeue under x-delayed-retry (after a delay) or a drop
 * with graded retry steps left (after the step's delay).  attempt: the
 * delivery's number (1: first); blen: its body bytes (length limits).
 * false: nothing done, the caller requeues at once or dead-letters
 * (gw_ua_settle_store). */
bool gw_ops_settle(gw_broker_t *b, gw_queue_t *q, const char *handle, uint32_t attempt,
                   uint64_t blen, gw_settle_t how);

/* ---- publishing (gw_publish.c) */

/* The largest body the channel's vhost takes. */
uint64_t gw_ops_max_message(gw_chan_t *ch);

/* ---- the operator (HTTP threads, through gw_server.h) */

/* Prometheus text of the per-queue counters. */
void gw_ops_metrics(gw_broker_t *b, FILE *out);
/* Pause (paused) or resume deliveries of vhost's queue; applied on the
 * loop, persisted, then answered.  GT_OK, GT_ENOTFOUND (no such queue),
 * GT_ETIMEDOUT, GT_ESHUTDOWN or GT_EIO. */
gt_err_t gw_ops_admin_pause(gw_broker_t *b, const char *vhost, const char *queue, bool paused);
/* An /api/v1/amqp/ request (gw_server_admin). */
unsigned gw_ops_http(gw_broker_t *b, const char *method, const char *url, char *text,
                     size_t cap);

#endif
