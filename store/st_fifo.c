/* The FIFO index of one (group, topic, queue) window, so that a FIFO pop
 * costs O(log n) instead of a scan of the whole unacknowledged window.
 *
 * A message group is handed out from its *head* (its first unacknowledged
 * entry), together with the consecutive entries after it that the pop has
 * room for (st_fifo_members): all in flight with one deadline.  The group
 * is free again only when none of its entries is in flight; redelivery
 * restarts from the head.  Per message group the index keeps the
 * unacknowledged offsets in order (a deque; an entry acked out of order
 * stays in it until it reaches the front).  The heads wait in one of two
 * heaps: `ready` (held, deliverable now: by offset) or `timed` (by time: an
 * in-flight or delayed head's deadline, or when a blocked group is to be
 * looked at again).  A timed entry names any entry of its group and stands
 * for the group's head.  Entries without a message group are each their
 * own group.  Heap entries go stale when their entry changes (acked,
 * re-delivered, deadline moved): st_fifo_next() checks each against the
 * window before using it, and the heaps are rebuilt when stale entries
 * pile up.
 *
 * The index is built from the window on first use and whenever the window
 * moved behind its back (commit or pop position not as last seen: offset
 * updates, retention, replay).  Guarded by st->lock. */
#include <stdlib.h>
#include <string.h>

#include "st_pop.h"

typedef struct fgroup {
    uint32_t gh;
    uint64_t *q;            /* ring of unacked offsets, oldest first */
    size_t h, n, cap;
} fgroup_t;

typedef struct tent {
    int64_t deadline;
    uint64_t off;
} tent_t;

struct st_fifo {
    uint64_t commit, pop;   /* the window as last seen */
    fgroup_t *g;            /* open addressing on gh (0 = empty slot) */
    size_t gcap, gn;
    tent_t *timed;          /* min-heap on (deadline, off) */
    size_t tn, tcap;
    uint64_t *ready;        /* min-heap on offset */
    size_t rn, rcap;
};

void st_fifo_free(st_fifo_t *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->gcap; i++)
        free(f->g[i].q);
    free(f->g);
    free(f->timed);
    free(f->ready);
    free(f);
}

/* ---- message groups ----------------------------------------------------- */
static fgroup_t *group_get(st_fifo_t *f, uint32_t gh, bool create)
{
    if (f->gcap && !create) {
        for (size_t i = gh & (f->gcap - 1);; i = (i + 1) & (f->gcap - 1)) {
            if (f->g[i].gh == gh)
                return &f->g[i];
            if (!f->g[i].gh)
                return NULL;
        }
    }
    if (!f->gcap || (f->gn + 1) * 2 > f->gcap) {
        size_t cap = f->gcap ? f->gcap * 2 : 32;
        fgroup_t *g = calloc(cap, sizeof(*g));
        if (!g)
            return NULL;
        for (size_t i = 0; i < f->gcap; i++) {
            if (!f->g[i].gh)
                continue;
            size_t j = f->g[i].gh & (cap - 1);
            while (g[j].gh)
                j = (j + 1) & (cap - 1);
            g[j] = f->g[i];
        }
        free(f->g);
        f->g = g;
        f->gcap = cap;
    }
    size_t i = gh & (f->gcap - 1);
    while (f->g[i].gh && f->g[i].gh != gh)
        i = (i + 1) & (f->gcap - 1);
    if (!f->g[i].gh) {
        f->g[i].gh = gh;
        f->gn++;
    }
    return &f->g[i];
}

static gt_err_t group_push(fgroup_t *g, uint64_t off)
{
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 8;
        uint64_t *q = malloc(cap * sizeof(*q));
        if (!q)
            return GT_ENOMEM;
        for (size_t i = 0; i < g->n; i++)
            q[i] = g->q[(g->h + i) % g->cap];
        free(g->q);
        g->q = q;
        g->h = 0;
        g->cap = cap;
    }
    g->q[(g->h + g->n++) % g->cap] = off;
    return GT_OK;
}

static uint64_t group_head(const fgroup_t *g)
{
    return g->q[g->h];
}

/* ---- heaps -------------------------------------------------------------- */
static bool t_less(const tent_t *a, const tent_t *b)
{
    return a->deadline < b->deadline ||
           (a->deadline == b->deadline && a->off < b->off);
}

static gt_err_t timed_push(st_fifo_t *f, int64_t deadline, uint64_t off)
{
    if (f->tn == f->tcap) {
        size_t cap = f->tcap ? f->tcap * 2 : 64;
        tent_t *h = realloc(f->timed, cap * sizeof(*h));
        if (!h)
            return GT_ENOMEM;
        f->timed = h;
        f->tcap = cap;
    }
    size_t i = f->tn++;
    tent_t e = {deadline, off};
    while (i > 0 && t_less(&e, &f->timed[(i - 1) / 2])) {
        f->timed[i] = f->timed[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    f->timed[i] = e;
    return GT_OK;
}

static void timed_pop(st_fifo_t *f)
{
    tent_t e = f->timed[--f->tn];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= f->tn)
            break;
        if (c + 1 < f->tn && t_less(&f->timed[c + 1], &f->timed[c]))
            c++;
        if (!t_less(&f->timed[c], &e))
            break;
        f->timed[i] = f->timed[c];
        i = c;
    }
    if (f->tn)
        f->timed[i] = e;
}

static gt_err_t ready_push(st_fifo_t *f, uint64_t off)
{
    if (f->rn == f->rcap) {
        size_t cap = f->rcap ? f->rcap * 2 : 64;
        uint64_t *h = realloc(f->ready, cap * sizeof(*h));
        if (!h)
            return GT_ENOMEM;
        f->ready = h;
        f->rcap = cap;
    }
    size_t i = f->rn++;
    while (i > 0 && off < f->ready[(i - 1) / 2]) {
        f->ready[i] = f->ready[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    f->ready[i] = off;
    return GT_OK;
}

static void ready_pop(st_fifo_t *f)
{
    uint64_t e = f->ready[--f->rn];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= f->rn)
            break;
        if (c + 1 < f->rn && f->ready[c + 1] < f->ready[c])
            c++;
        if (f->ready[c] >= e)
            break;
        f->ready[i] = f->ready[c];
        i = c;
    }
    if (f->rn)
        f->ready[i] = e;
}

/* Queues a head by its state: in flight or delayed -> timed, held -> ready;
 * a DLQ move in progress waits for its completion. */
static gt_err_t head_note(st_fifo_t *f, st_cs_t *cs, uint64_t off)
{
    st_went_t *e = st_cs_at(cs, off);
    if (e->state == ST_E_INFLIGHT || (e->state == ST_E_NONE && e->deadline))
        return timed_push(f, e->deadline, off);
    if (e->state == ST_E_NONE)
        return ready_push(f, off);
    return GT_OK;
}

/* ---- build -------------------------------------------------------------- */
static gt_err_t build(st_fifo_t *f, st_topic_rt_t *t, uint32_t q, st_cs_t *cs)
{
    for (size_t i = 0; i < f->gcap; i++)
        free(f->g[i].q);
    if (f->gcap)
        memset(f->g, 0, f->gcap * sizeof(*f->g));
    f->gn = f->tn = f->rn = 0;
    gt_err_t rc = GT_OK;
    for (uint64_t o = cs->commit; o < cs->pop && rc == GT_OK; o++) {
        st_cq_entry_t ceb;
        const st_cq_entry_t *ce = st_cq_get(t, q, o, &ceb);
        st_went_t *e = st_cs_at(cs, o);
        if (!ce || e->state == ST_E_ACKED)
            continue;
        fgroup_t *g = ce->group_hash ? group_get(f, ce->group_hash, true)
                                     : NULL;
        if (ce->group_hash && !g)
            rc = GT_ENOMEM;
        else if (g && g->n)
            rc = group_push(g, o); /* waits behind its head */
        else if ((!g || (rc = group_push(g, o)) == GT_OK))
            rc = head_note(f, cs, o);
    }
    f->commit = cs->commit;
    f->pop = cs->pop;
    return rc;
}

gt_err_t st_fifo_sync(st_topic_rt_t *t, uint32_t q, st_cs_t *cs,
                      st_fifo_t **out)
{
    st_fifo_t *f = cs->fifo;
    gt_err_t rc = GT_OK;
    if (!f && !(f = cs->fifo = calloc(1, sizeof(*f))))
        return GT_ENOMEM;
    uint64_t win = cs->pop - cs->commit;
    if (f->commit != cs->commit || f->pop != cs->pop || cs->fifo_stale ||
        f->tn + f->rn > 4 * win + 256)
        rc = build(f, t, q, cs);
    cs->fifo_stale = false;
    if (rc != GT_OK) {
        st_fifo_free(f);
        cs->fifo = NULL;
        return rc;
    }
    *out = f;
    return GT_OK;
}

void st_fifo_seen(st_cs_t *cs)
{
    if (cs->fifo) {
        cs->fifo->commit = cs->commit;
        cs->fifo->pop = cs->pop;
    }
}

bool st_fifo_in_step(const st_cs_t *cs)
{
    return cs->fifo && !cs->fifo_stale && cs->fifo->commit == cs->commit &&
           cs->fifo->pop == cs->pop;
}

bool st_fifo_busy(st_fifo_t *f, uint32_t gh)
{
    fgroup_t *g = gh ? group_get(f, gh, false) : NULL;
    return g && g->n > 0;
}

gt_err_t st_fifo_add(st_fifo_t *f, st_cs_t *cs, uint32_t gh, uint64_t off)
{
    fgroup_t *g = gh ? group_get(f, gh, true) : NULL;
    gt_err_t rc = gh && !g ? GT_ENOMEM : GT_OK;
    bool head = !g || g->n == 0;
    if (rc == GT_OK && g)
        rc = group_push(g, off);
    if (rc == GT_OK && head)
        rc = head_note(f, cs, off);
    if (rc != GT_OK)
        cs->fifo_stale = true;
    return rc;
}

void st_fifo_moved(st_cs_t *cs, uint64_t off)
{
    if (cs->fifo && head_note(cs->fifo, cs, off) != GT_OK)
        cs->fifo_stale = true;
}

/* Is off the unacked head of its message group? */
static bool is_head(st_fifo_t *f, st_topic_rt_t *t, uint32_t q, st_cs_t *cs,
                    uint64_t off)
{
    if (off < cs->commit || off >= cs->pop)
        return false;
    st_cq_entry_t ceb;
    const st_cq_entry_t *ce = st_cq_get(t, q, off, &ceb);
    if (!ce)
        return false;
    fgroup_t *g = ce->group_hash ? group_get(f, ce->group_hash, false) : NULL;
    if (ce->group_hash && (!g || !g->n || group_head(g) != off))
        return false;
    return st_cs_at(cs, off)->state != ST_E_ACKED;
}

/* The head of off's message group (off itself without a group), into *h;
 * false when there is none (acked, outside the window). */
static bool head_of(st_fifo_t *f, st_topic_rt_t *t, uint32_t q, st_cs_t *cs,
                    uint64_t off, uint64_t *h)
{
    if (off < cs->commit || off >= cs->pop)
        return false;
    st_cq_entry_t ceb;
    const st_cq_entry_t *ce = st_cq_get(t, q, off, &ceb);
    if (!ce)
        return false;
    if (ce->group_hash) {
        fgroup_t *g = group_get(f, ce->group_hash, false);
        if (!g || !g->n)
            return false;
        off = group_head(g);
    }
    *h = off;
    return st_cs_at(cs, off)->state != ST_E_ACKED;
}

/* Timed entry e stands for its group's head; that head if it is in flight
 * or delayed and due by `by`. */
static st_went_t *timed_head(st_fifo_t *f, st_topic_rt_t *t, uint32_t q,
                             st_cs_t *cs, const tent_t *e, int64_t by,
                             uint64_t *h)
{
    st_went_t *w = head_of(f, t, q, cs, e->off, h) ? st_cs_at(cs, *h) : NULL;
    if (w && (w->state == ST_E_INFLIGHT || w->state == ST_E_NONE) &&
        w->deadline <= by)
        return w;
    return NULL;
}

bool st_fifo_next(st_fifo_t *f, st_topic_rt_t *t, uint32_t q, st_cs_t *cs,
                  int64_t now, bool timed, uint64_t *off)
{
    while (timed && f->tn && f->timed[0].deadline <= now) {
        tent_t e = f->timed[0];
        timed_pop(f);
        if (timed_head(f, t, q, cs, &e, now, off))
            return true;
    }
    while (!timed && f->rn) {
        uint64_t o = f->ready[0];
        ready_pop(f);
        st_went_t *w = is_head(f, t, q, cs, o) ? st_cs_at(cs, o) : NULL;
        if (w && w->state == ST_E_NONE && w->deadline <= now) {
            *off = o;
            return true;
        }
    }
    return false;
}

size_t st_fifo_members(st_fifo_t *f, st_topic_rt_t *t, uint32_t q,
                       st_cs_t *cs, uint64_t head, uint64_t *out, size_t max,
                       bool *more)
{
    st_cq_entry_t ceb;
    const st_cq_entry_t *ce = st_cq_get(t, q, head, &ceb);
    fgroup_t *g = ce && ce->group_hash ? group_get(f, ce->group_hash, false)
                                       : NULL;
    size_t n = 0, i = 0;
    *more = false;
    if (!ce || max == 0)
        return 0;
    if (!ce->group_hash) {
        out[0] = head;
        return 1;
    }
    if (!g || !g->n || group_head(g) != head)
        return 0;
    for (; i < g->n && n < max; i++) {
        uint64_t o = g->q[(g->h + i) % g->cap];
        if (st_cs_at(cs, o)->state != ST_E_ACKED)
            out[n++] = o;
    }
    *more = i < g->n;
    return n;
}

void st_fifo_recheck(st_cs_t *cs, uint64_t off, int64_t at)
{
    if (cs->fifo && timed_push(cs->fifo, at, off) != GT_OK)
        cs->fifo_stale = true;
}

int64_t st_fifo_min_deadline(st_fifo_t *f, st_topic_rt_t *t, uint32_t q,
                             st_cs_t *cs)
{
    uint64_t h;
    while (f->tn) {
        tent_t e = f->timed[0];
        if (timed_head(f, t, q, cs, &e, e.deadline, &h))
            return e.deadline;
        timed_pop(f);
    }
    return INT64_MAX;
}

void st_fifo_acked(st_topic_rt_t *t, uint32_t q, st_cs_t *cs, uint64_t off)
{
    st_fifo_t *f = cs->fifo;
    if (!f || f->commit != cs->commit || f->pop != cs->pop) {
        st_cs_advance(cs);
        return;
    }
    st_cq_entry_t ceb;
    const st_cq_entry_t *ce = st_cq_get(t, q, off, &ceb);
    fgroup_t *g = ce && ce->group_hash ? group_get(f, ce->group_hash, false)
                                       : NULL;
    if (g && g->n && group_head(g) == off) {
        /* the next unacked one becomes head (those acked out of order
         * before it leave the deque now) */
        do {
            g->h = (g->h + 1) % g->cap;
            g->n--;
        } while (g->n && st_cs_at(cs, group_head(g))->state == ST_E_ACKED);
        if (g->n && head_note(f, cs, group_head(g)) != GT_OK)
            cs->fifo_stale = true;
    } else if (g && g->n && group_head(g) < off) {
        /* acked out of order: stays in the deque until it is at its front;
         * the head is looked at again (its group may be free now) */
        if (head_note(f, cs, group_head(g)) != GT_OK)
            cs->fifo_stale = true;
    } else if (ce && ce->group_hash) {
        cs->fifo_stale = true; /* not what the index expected: rebuild */
    }
    st_cs_advance(cs);
    st_fifo_seen(cs);
}
