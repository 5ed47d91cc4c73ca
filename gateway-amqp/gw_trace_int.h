/* gw_trace_int.h: the gateway's calls into its message trace (gw_trace.c;
 * the hooks and events are in gw_trace.h).  Loop thread only. */
#ifndef GW_TRACE_INT_H
#define GW_TRACE_INT_H
#include <stddef.h>

#include "gw_broker_int.h"
#include "gw_rec.h"

#define GW_TRACE_MID_MAX 128 /* message-id property kept (cut beyond) */

/* Is q traced (asked once per queue, then cached)? */
bool gw_trace_queue(gw_queue_t *q);
/* The message-id property of a raw property list into out ("" when none;
 * bytes that are not printable ASCII as '?'). */
void gw_trace_props_mid(const uint8_t *props, size_t len, char *out, size_t cap);
/* The same from a stored record (gw_rec.h). */
void gw_trace_rec_mid(const uint8_t *rec, size_t len, char *out, size_t cap);
/* An append to q was answered (err) with msg_id at offset (-1: unknown). */
void gw_trace_publish(gw_chan_t *ch, gw_queue_t *q, const char *msg_id, const char *mid,
                      int64_t offset, uint64_t blen, int err);
/* p went out to ch (basic.deliver, or basic.get-ok when get). */
void gw_trace_deliver(gw_chan_t *ch, gw_queue_t *q, const gw_popped_t *p, uint64_t blen,
                      bool get);
/* The delivery's ids for its settlement ("msg_id\0mid\0", malloc'd), or
 * NULL when q is not traced. */
char *gw_trace_ids(gw_queue_t *q, const gw_popped_t *p);
/* The stored message msg_id (record rec[0..len), delivery attempt) left
 * q by TTL expiry, max-length overflow or delivery limit (reason a
 * gw_dl_reason_t): dead-lettered to q's DLX, or dropped without one. */
void gw_trace_dead(gw_queue_t *q, const char *msg_id, const uint8_t *rec, size_t len,
                   uint32_t attempt, int reason);
/* u is settled on ch (how: gw_settle_t; verb: "nack", "reject" or NULL
 * for ack / requeue by recover or close). */
void gw_trace_settle(gw_chan_t *ch, const gw_unacked_t *u, int how, const char *verb);

#endif
