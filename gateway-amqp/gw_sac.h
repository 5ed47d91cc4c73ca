/* x-single-active-consumer queues (RabbitMQ 3.10's classic queue
 * behaviour, checked against 3.10.8 where it is not a bug).
 *
 * Every consumer of such a queue gets consume-ok and counts in
 * declare-ok; only the active one -- the first in subscription order --
 * gets deliveries.  When it leaves (basic.cancel, its channel or
 * connection closes, a server-sent cancel) the next one in subscription
 * order takes over once the leaver's unacked deliveries are settled: at
 * once when it has none; when its channel closes they are requeued and
 * the new active consumer gets them first (redelivered), then the rest.
 * While a requeue of the queue is in flight nobody is served, so that
 * requeued messages go out ahead of newer ones.  (RabbitMQ 3.10.8's
 * classic queues never hand over after a basic.cancel with unacked
 * deliveries, even once they are acked, until the channel closes; Gantry
 * hands over when they are acked, as quorum queues do.)  An exclusive
 * basic.consume on such a queue is 403 "in exclusive use", consumers or
 * not.  The argument is gw_qargs' (validated, kept in the durable record).
 *
 * Loop thread only (gw_broker.c). */
#ifndef GW_SAC_H
#define GW_SAC_H

#include <stdbool.h>

#include "gw_broker_int.h"

/* cs was added to its queue's consumers: active when none is. */
void gw_sac_added(gw_consumer_t *cs);
/* cs left its queue (before its unacked deliveries are settled). */
void gw_sac_removed(gw_consumer_t *cs);
/* cs, no longer in its queue, has no unacked deliveries left. */
void gw_sac_drained(gw_consumer_t *cs);
/* Whether cs may be given messages now. */
static inline bool gw_sac_may_deliver(const gw_consumer_t *cs)
{
    return !cs->q->args.single_active_consumer ||
           (cs == cs->q->sac_active && cs->q->requeuing == 0);
}

#endif
