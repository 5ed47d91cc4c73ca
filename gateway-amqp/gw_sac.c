/* x-single-active-consumer (gw_sac.h). */
#include <stdlib.h>
#include <string.h>

#include "gw_sac.h"

/* Deliveries resume from the loop: a channel closing requeues all its
 * unacked deliveries (q->requeuing) before anyone pops. */
static void kick_later(gw_queue_t *q)
{
    struct timeval tv = {0, 0};

    if (!q->gone && !q->b->stopping && q->kick_ev != NULL)
        event_add(q->kick_ev, &tv);
}

/* The next in subscription order (consumers are kept newest first). */
static void activate_next(gw_queue_t *q)
{
    gw_consumer_t *cs = q->consumers;

    while (cs != NULL && cs->qnext != NULL)
        cs = cs->qnext;
    q->sac_active = cs;
    if (cs != NULL)
        kick_later(q);
}

void gw_sac_added(gw_consumer_t *cs)
{
    gw_queue_t *q = cs->q;

    if (q->args.single_active_consumer && q->sac_active == NULL && q->sac_drain == NULL)
        q->sac_active = cs;
}

void gw_sac_removed(gw_consumer_t *cs)
{
    gw_queue_t *q = cs->q;

    if (!q->args.single_active_consumer || q->sac_active != cs)
        return;
    q->sac_active = NULL;
    if (cs->unacked > 0 || cs->popping > 0) {
        q->sac_drain = cs; /* alive while its unacked deliveries are */
        return;
    }
    activate_next(q);
}

void gw_sac_drained(gw_consumer_t *cs)
{
    gw_queue_t *q = cs->q;

    if (q->sac_drain != cs)
        return;
    q->sac_drain = NULL;
    activate_next(q);
}
