/* Priority queues (x-max-priority), RabbitMQ 3.10's classic-queue
 * semantics: a queue declared with x-max-priority N (1..255) keeps N + 1
 * levels, one store queue each in the queue's store topic (queue id =
 * level); a message goes to the level of its `priority` property (absent:
 * 0; above N: N) and consumers and basic.get pop with high_first (the
 * highest non-empty level first, FIFO within a level; a requeued delivery
 * goes back to its own level, ahead of that level's newer messages).  A
 * queue without the argument, or with 0, has one level: as before.  The
 * argument is validated and kept by gw_qargs (q->args.max_priority). */
#ifndef GW_PRIO_H
#define GW_PRIO_H

#include <stdint.h>

#include "gw_broker_int.h"

/* The store queue (level) of a message with priority prio in q. */
static inline int32_t gw_prio_level(const gw_queue_t *q, uint8_t prio)
{
    return prio < q->args.max_priority ? prio : q->args.max_priority;
}

#endif
