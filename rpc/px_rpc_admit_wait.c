/* Admission's wait queue (see px_rpc_int.h): calls of unknown size that
 * would fit but find the one slot of reads on a guess taken.
 *
 * Such a call waits here instead of being refused: the slot frees as soon
 * as that read's message is in (its size is then charged), usually within
 * milliseconds, and a fresh client's first send is then served, not
 * answered TOO_MANY_REQUESTS.  Oldest first: while calls wait, a newcomer
 * queues behind them even if the slot happens to be free.  A waiting call has no receive posted, so
 * the transport buffers at most its stream window for it; the queue is
 * bounded and a call waits at most `wait_ms` (a slow reader holding the
 * slot cannot park fresh clients for ever).  Whatever releases admission
 * bytes or the slot asks for the next decided waiter
 * (px_admit_wait_next); the server's workers also do, at least once a
 * second, to expire old waiters.
 *
 * Plain bookkeeping under one mutex (taken before the px_admit_t's,
 * never after), no gRPC: the server owns the calls and acts on the
 * verdicts (tests/unit/rpc/test_admit.c drives it directly). */
#include <string.h>

#include "px_rpc_int.h"

void px_admit_wait_init(px_admit_wait_t *q, px_admit_t *admit, size_t max,
                        int64_t wait_ms)
{
    memset(q, 0, sizeof(*q));
    pthread_mutex_init(&q->mu, NULL);
    q->admit = admit;
    q->max = max;
    q->wait_ms = wait_ms;
}

void px_admit_wait_destroy(px_admit_wait_t *q)
{
    pthread_mutex_destroy(&q->mu);
}

size_t px_admit_wait_count(px_admit_wait_t *q)
{
    return atomic_load_explicit(&q->n, memory_order_relaxed);
}

px_admit_verdict_t px_admit_wait_enter(px_admit_wait_t *q,
                                       px_admit_waiter_t *w, int64_t now_ms)
{
    px_admit_verdict_t v;

    w->conn = NULL;
    w->held = 0;
    w->guessed = false;
    pthread_mutex_lock(&q->mu);
    /* Behind others, even if the slot is free right now: it was released
     * just before the queue is served (px_admit_wait_next), and a
     * newcomer in between would take it ahead of calls that waited. */
    if (q->head != NULL)
        v = px_admit_enter_behind(q->admit, w->peer, w->want, w->worst);
    else
        v = px_admit_enter_unknown(q->admit, w->peer, w->want, w->worst,
                                   &w->conn, &w->held, &w->guessed);
    if (v == PX_ADMIT_WAIT) {
        if (atomic_load_explicit(&q->n, memory_order_relaxed) >= q->max) {
            px_admit_count_refusal(q->admit);
            v = PX_ADMIT_REFUSED;
        } else {
            w->since_ms = now_ms;
            w->waiting = true;
            w->next = NULL;
            if (q->tail != NULL)
                q->tail->next = w;
            else
                q->head = w;
            q->tail = w;
            atomic_fetch_add_explicit(&q->n, 1, memory_order_release);
        }
    }
    pthread_mutex_unlock(&q->mu);
    return v;
}

px_admit_waiter_t *px_admit_wait_next(px_admit_wait_t *q, bool expire,
                                      int64_t now_ms, px_admit_verdict_t *v)
{
    px_admit_waiter_t *w;

    if (atomic_load_explicit(&q->n, memory_order_acquire) == 0)
        return NULL;
    pthread_mutex_lock(&q->mu);
    if ((w = q->head) == NULL) {
        pthread_mutex_unlock(&q->mu);
        return NULL;
    }
    *v = px_admit_enter_unknown(q->admit, w->peer, w->want, w->worst, &w->conn,
                                &w->held, &w->guessed);
    if (*v == PX_ADMIT_WAIT) {
        if (!expire || now_ms - w->since_ms < q->wait_ms) {
            pthread_mutex_unlock(&q->mu);
            return NULL;
        }
        px_admit_count_refusal(q->admit);
        *v = PX_ADMIT_REFUSED;
    }
    q->head = w->next;
    if (q->head == NULL)
        q->tail = NULL;
    w->next = NULL;
    w->waiting = false;
    atomic_fetch_sub_explicit(&q->n, 1, memory_order_release);
    pthread_mutex_unlock(&q->mu);
    return w;
}

bool px_admit_wait_remove(px_admit_wait_t *q, px_admit_waiter_t *w)
{
    px_admit_waiter_t **pp, *prev = NULL;
    bool removed = false;

    if (atomic_load_explicit(&q->n, memory_order_acquire) == 0)
        return false;
    pthread_mutex_lock(&q->mu);
    if (w->waiting) {
        for (pp = &q->head; *pp != NULL; prev = *pp, pp = &(*pp)->next) {
            if (*pp != w)
                continue;
            *pp = w->next;
            if (q->tail == w)
                q->tail = prev;
            w->next = NULL;
            w->waiting = false;
            atomic_fetch_sub_explicit(&q->n, 1, memory_order_release);
            removed = true;
            break;
        }
    }
    pthread_mutex_unlock(&q->mu);
    return removed;
}
