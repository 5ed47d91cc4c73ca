/* px_trace: opt-in message trace (config `trace:`).
 *
 * For the topics and groups named in trace.topics / trace.groups, the
 * service's handlers note what happens to each message -- publish (client,
 * address, store result, queue and offset), each delivery (group, client,
 * attempt), ack, nack, dead-lettering, transaction commit / rollback -- as
 * one event each; the AMQP gateway notes its traced queues' events through
 * px_trace_note_ext (gateway-amqp/gw_trace.h).  Events go into a bounded
 * in-memory buffer (noting never waits nor allocates: when the buffer is
 * full the event is dropped and counted) and a flusher thread appends them
 * in batches to the trace topic PX_TRACE_TOPIC, up to 32 events per stored
 * message: keys = the traced messages' ids (so the store's key index finds
 * them), tag = the first event's kind, body = {"v":3,...}: a string table
 * and the events as arrays (px_trace.c, px_trace_record; docs/admin.md,
 * "Message trace").
 *
 * The trace topic is a system topic: clients can neither send to it nor
 * receive from it (px_name_is_system), the admin API does not create,
 * update or delete it.  It is created at start when tracing is on. */
#ifndef PX_TRACE_H
#define PX_TRACE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "apache/rocketmq/v2/service.pb-c.h"
#include "cfg.h"
#include "px_rpc.h"
#include "st.h"

/* RocketMQ's default trace topic name (its TopicValidator counts it among
 * the system topics). */
#define PX_TRACE_TOPIC "RMQ_SYS_TRACE_TOPIC"
/* Events one message id can show (st_lookup_key's maximum). */
#define PX_TRACE_MAX_EVENTS ST_POP_MAX

typedef struct px_trace px_trace_t;
struct px_svc;

/* True when cfg traces anything. */
bool px_trace_enabled(const cfg_t *cfg);
/* Creates the trace topic and starts the flusher when cfg traces
 * anything; *out is NULL when it does not.  Start-up only. */
gt_err_t px_trace_start(st_store_t *store, const cfg_t *cfg, px_trace_t **out);
/* Writes what is buffered and stops the flusher (before the store
 * closes); events noted later are dropped.  NULL-safe, idempotent. */
void px_trace_stop(px_trace_t *tr);
/* After every thread that may note events is gone.  NULL-safe. */
void px_trace_free(px_trace_t *tr);
/* The name of event kind k as the records number it (px_trace.c);
 * "unknown" out of range. */
const char *px_trace_kind_name(long k);
/* gantry_trace_events_total for /metrics (nothing when tr is NULL). */
void px_trace_write_metrics(px_trace_t *tr, FILE *out);

/* ---- hooks of the service's handlers (each a no-op when not traced) ---- */
void px_trace_sent(struct px_svc *svc, px_call_t *call,
                   const Apache__Rocketmq__V2__SendMessageRequest *req,
                   gt_err_t err, const st_append_item_t *items, size_t n);
void px_trace_delivered(struct px_svc *svc, px_call_t *call, const char *group,
                        const char *topic, const st_popped_t *p);
void px_trace_acked(struct px_svc *svc, px_call_t *call,
                    const Apache__Rocketmq__V2__AckMessageRequest *req,
                    const gt_err_t *errs);
void px_trace_nacked(struct px_svc *svc, px_call_t *call,
                     const Apache__Rocketmq__V2__ChangeInvisibleDurationRequest *req,
                     gt_err_t err);
void px_trace_forwarded(struct px_svc *svc, px_call_t *call,
                        const Apache__Rocketmq__V2__ForwardMessageToDeadLetterQueueRequest *req,
                        int code);
void px_trace_tx_end(struct px_svc *svc, px_call_t *call, const char *topic,
                     const char *msg_id, bool commit, gt_err_t err);

/* ---- the AMQP gateway's events (its loop thread; no-ops when tr is NULL) */

/* One event of the gateway.  AMQP queue q is traced when trace.topics
 * names it (or "*"); its events carry the queue's name as their topic, the
 * vhost, the connection ("amqp:N") as the client, and the message's
 * message-id property (the record is keyed by it too). */
typedef struct px_trace_ext {
    const char *kind;            /* publish, deliver, ack, nack, reject, dlq */
    const char *msg_id;          /* the store's message id */
    const char *amqp_message_id; /* NULL or "": none */
    const char *vhost, *queue;
    const char *client_id, *addr;
    const char *result;          /* NULL: "OK" */
    uint32_t attempt;            /* 0: not applicable */
    int64_t offset;              /* -1: not applicable */
    int64_t body_size;           /* -1: not applicable */
} px_trace_ext_t;

bool px_trace_wants_queue(px_trace_t *tr, const char *queue);
void px_trace_note_ext(px_trace_t *tr, const px_trace_ext_t *e);

#endif
