/* Queue length limits (x-max-length, x-max-length-bytes, x-overflow), as
 * RabbitMQ 3.10's classic queues apply them (checked against 3.10.8):
 * only ready messages count (not deliveries awaiting their ack), bytes
 * are body bytes; drop-head (the default) drops -- or dead-letters with
 * reason maxlen -- the message that would be delivered next (with
 * priorities: the highest one) while the queue is over a limit, also
 * after a requeue; reject-publish refuses a publish that would take the
 * queue over a limit (basic.nack to a confirming publisher, otherwise it
 * is dropped), reject-publish-dlx also dead-letters it; a requeue may take
 * a reject-publish queue over its limit.
 *
 * The counts are the gateway's, kept on its loop for each limited queue:
 * a message counts from its routing (before its append is answered, so
 * that concurrent publishers see each other at once) until a pop takes
 * it; a release or requeue counts it again; st_purge's answer subtracts
 * what it dropped.  At start they are read back from the store (st_stats'
 * ready count; with a bytes limit, one pass of pops that are released at
 * once, summing body sizes) before the listener accepts. */
#ifndef GW_MAXLEN_H
#define GW_MAXLEN_H

#include <stdbool.h>
#include <stdint.h>

#include "gw_broker_int.h"
#include "gw_qargs.h"

struct gw_qlimit {
    int64_t max_len, max_bytes; /* -1: no limit */
    gw_overflow_t overflow;
    int64_t ready;              /* ready messages, as above */
    int64_t bytes;              /* their body bytes */
    int64_t fly_bytes;          /* bytes of appends not answered yet */
    bool dropping;              /* a head drop's pop is in flight */
};

/* Sets q's limits from q->args (gw_qargs validated them; a queue without
 * any keeps lim NULL).  false: no memory. */
bool gw_maxlen_init(gw_queue_t *q);
void gw_maxlen_free(gw_queue_t *q);

/* A publish routed to q with a body of blen bytes: true when q takes it
 * (counted), false when q's reject-publish(-dlx) refuses it. */
bool gw_maxlen_admit(gw_queue_t *q, uint64_t blen);
/* Its append answered (ok: stored); drop-head then drops what is over. */
void gw_maxlen_appended(gw_queue_t *q, uint64_t blen, bool ok);
/* The queue's timer fired: drop-head looks again (a pop found no head). */
void gw_maxlen_kick(gw_queue_t *q);
/* A pop took a ready message of blen body bytes (a delivery, a get). */
void gw_maxlen_taken(gw_queue_t *q, uint64_t blen);
/* A message is ready again (released or requeued). */
void gw_maxlen_back(gw_queue_t *q, uint64_t blen);
/* st_purge dropped n ready messages. */
void gw_maxlen_purged(gw_queue_t *q, uint64_t n);
/* Body bytes of a stored record (the gateway's layout, or a foreign
 * message: all of it). */
uint64_t gw_maxlen_body_len(const uint8_t *rec, size_t len);

/* At start: reads q's counts back; done(q) runs once they are in (not
 * at all, returning false, when q has no limits).  Nothing else may pop q
 * meanwhile (a message popped then is not counted). */
bool gw_maxlen_recount(gw_queue_t *q, void (*done)(gw_queue_t *q));

#endif
