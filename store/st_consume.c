/* Message-granularity consumption: pop, ack, change invisible duration,
 * redelivery of expired deliveries, dead-lettering, parked (long-poll) pops
 * and committed offsets.
 *
 * Per (group, topic, queue) the state is a window of offsets [commit, pop):
 * each entry is in flight (attempt, deadline, generation), acked, being
 * moved to the DLQ, or held (not delivered yet: a delayed message before its
 * delivery time, or -- for a FIFO group -- a message whose message group has
 * an earlier message not yet acked).  A pop first delivers due window
 * entries in offset order (expired ones with attempt + 1; past the group's
 * max attempts they go to %DLQ%<group> instead), then hands out new offsets
 * from pop onwards that pass the pop's filter (tag or SQL92, st_filter.c); those that
 * do not are acked on the spot (skipped for this group).  The committed offset advances over acked
 * entries at the window's head.  Every change is written to the state log
 * before the operation completes.
 *
 * A receipt handle names (queue, offset, generation).  The generation is a
 * store-wide counter, persisted through the state log, so each delivery of a
 * message gets a new one: an ack with a superseded or expired handle does
 * not match the entry and is rejected (GT_EINVAL).
 *
 * Pops that find nothing park (st_park.c) until their poll timeout.  The
 * service thread retries them when a topic they wait on gets new messages
 * (st_publish_wake), when an in-flight deadline passes, or at their
 * timeout; no polling loop.  All state here is guarded by st->lock;
 * callbacks run after it is released. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt_log.h"
#include "st_pop.h"

#define ST_MSG_F_DLQ 0x1u
/* New offsets one FIFO pop looks at per queue when their groups are busy:
 * later pops go on from there. */
#define FIFO_SCAN 1024

/* Records read before taking the lock (see prefetch_plan()). */
#define PF_MAX (2 * ST_POP_MAX)
typedef struct prefetch {
    /* The queue the pop starts at (planned: true), taken from the group's
     * round robin by prefetch_plan() so that the pop reads the queue that
     * was read ahead for it; concurrent receivers then start at different
     * queues and each finds its own records read ahead. */
    bool planned;
    uint32_t first;
    size_t n;
    uint64_t pos[PF_MAX];
    uint32_t size[PF_MAX];
    uint8_t *buf[PF_MAX]; /* owned until taken by ctx_read() */
} prefetch_t;

/* A message group handed out by this pop up to its last entry: its next
 * new messages join the same batch (pop_new), until one is held back. */
typedef struct fifo_open {
    uint32_t q, gh;
    bool closed;
} fifo_open_t;

typedef struct pop_ctx {
    st_local_t *st;
    st_group_rt_t *g;
    st_topic_rt_t *t;
    const st_pop_req_t *req;
    const st_filter_t *f;
    int64_t now;
    st_pop_out_t *out;
    prefetch_t *pf;       /* may be NULL */
    fifo_open_t open[ST_POP_MAX]; /* each gave the pop a message */
    size_t nopen;
    uint32_t max;   /* messages: req->max, lowered when max_bytes is met */
    uint64_t bytes; /* body bytes handed out */
    /* A NORMAL group's pop writes the POP records of what it hands out in
     * one write to the state log when it ends (pop_try), not one write per
     * message; if that write fails, the entries are restored from undo
     * and nothing is handed out.  A FIFO group's pop writes each at once
     * (its message group index follows every entry). */
    bool batch;
    size_t nrec;
    st_srec_t rec[ST_POP_MAX];
    struct pop_undo {
        st_cs_t *cs;
        uint64_t off;
        st_went_t prev;
    } undo[ST_POP_MAX];
} pop_ctx_t;

void st_pop_out_free(st_pop_out_t *o)
{
    for (size_t i = 0; i < o->n; i++)
        free(o->bufs[i]);
    o->n = 0;
}

/* Reads the record of a consume queue entry: from the prefetch when it was
 * read ahead (no I/O under the lock), else from the commitlog.  Takes the
 * buffer out of the prefetch; *buf is owned by the caller on GT_OK. */
static gt_err_t ctx_read(pop_ctx_t *c, const st_cq_entry_t *ce, uint8_t **buf,
                         st_message_t *m)
{
    prefetch_t *pf = c->pf;
    for (size_t i = 0; pf && i < pf->n; i++) {
        size_t used;
        if (!pf->buf[i] || pf->pos[i] != ce->pos || pf->size[i] != ce->size)
            continue;
        if (st_record_decode(pf->buf[i], ce->size, ce->size, m, &used) !=
                GT_OK || m->position != ce->pos)
            break; /* let st_log_read() report it */
        *buf = pf->buf[i];
        pf->buf[i] = NULL;
        return GT_OK;
    }
    return st_log_read(c->st, ce->pos, ce->size, buf, m);
}

static void note_deadline(st_local_t *st, st_cs_t *cs, int64_t deadline)
{
    if (deadline < cs->min_deadline)
        cs->min_deadline = deadline;
    if (deadline < st->next_expiry) {
        st->next_expiry = deadline;
        if (st_parks_any(st))
            pthread_cond_signal(&st->svc_cond);
    }
}

/* Records a delivery of offset off (entry e) and adds it to the result.
 * Takes ownership of buf on GT_OK. */
static gt_err_t deliver(pop_ctx_t *c, uint32_t q, st_cs_t *cs, uint64_t off,
                        uint32_t attempt, uint8_t *buf, const st_message_t *m)
{
    st_local_t *st = c->st;
    int64_t deadline = c->now + c->req->invisible_ms;
    st_srec_t r = {.type = ST_SR_POP, .group = c->g->meta.name,
                   .topic = c->t->meta.name, .queue = q, .a = off,
                   .attempt = attempt, .deadline = deadline,
                   .gen = st->next_gen};
    st_went_t *e = st_cs_at(cs, off);
    if (c->batch && c->nrec < ST_POP_MAX) { /* written by pop_try() */
        c->rec[c->nrec] = r;
        c->undo[c->nrec++] = (struct pop_undo){.cs = cs, .off = off,
                                               .prev = *e};
    } else {
        gt_err_t rc = st_state_log(st, &r);
        if (rc != GT_OK)
            return rc;
    }
    *e = (st_went_t){.state = ST_E_INFLIGHT, .attempt = attempt,
                     .deadline = deadline, .gen = st->next_gen++};
    note_deadline(st, cs, deadline);
    st_popped_t *p = &c->out->msgs[c->out->n];
    p->msg = *m;
    /* the queue it was popped from (a record stored once for several
     * queues names the first in its header) */
    p->msg.topic = c->t->meta.name;
    p->msg.queue_id = (int32_t)q;
    p->msg.queue_offset = off;
    p->attempt = attempt;
    p->invisible_until_ms = deadline;
    st_handle_encode(&(st_handle_t){.queue = q, .offset = off, .gen = e->gen},
                     p->handle);
    c->out->bufs[c->out->n++] = buf;
    c->bytes += m->body_len;
    if (c->req->max_bytes != 0 && c->bytes >= c->req->max_bytes)
        c->max = (uint32_t)c->out->n; /* enough: the loops stop here */
    return GT_OK;
}

/* ---- dead letters --------------------------------------------------------- */
/* A dead-letter move in progress: owned by its DLQ append until
 * dlq_done() runs on the writer/syncer thread. */
typedef struct dlq_ctx {
    st_local_t *st;
    char group[ST_NAME_MAX + 1], topic[ST_NAME_MAX + 1];
    uint32_t queue;
    uint64_t off;
} dlq_ctx_t;

static void dlq_done(void *arg, gt_err_t err, const st_append_item_t *items,
                     size_t n)
{
    dlq_ctx_t *d = arg;
    st_local_t *st = d->st;
    pthread_mutex_lock(&st->lock);
    st_group_rt_t *g = st_group_vivify(st, d->group);
    st_topic_rt_t *t = st_topic_vivify(st, d->topic);
    st_cs_t *cs = g && t ? st_cs_find(st, g, t, d->queue, false) : NULL;
    if (cs && d->off >= cs->commit && d->off < cs->pop &&
        st_cs_at(cs, d->off)->state == ST_E_DLQ) {
        st_went_t *e = st_cs_at(cs, d->off);
        st_srec_t r = {.type = ST_SR_ACK, .group = d->group,
                       .topic = d->topic, .queue = d->queue, .a = d->off};
        if (err == GT_OK && st_state_log(st, &r) == GT_OK) {
            e->state = ST_E_ACKED;
            st_fifo_acked(t, d->queue, cs, d->off); /* unblocks its group */
        } else { /* try again at the next expiry scan */
            e->state = ST_E_INFLIGHT;
            e->deadline = st_now_ms() + 1000;
            note_deadline(st, cs, e->deadline);
            st_fifo_moved(cs, d->off);
        }
    }
    pthread_mutex_unlock(&st->lock);
    free(d);
}

static gt_err_t dlq_topic(st_local_t *st, const char *group, char *name)
{
    gt_err_t rc = st_dlq_topic_name(group, name, ST_NAME_MAX + 1);
    if (rc != GT_OK || st_topic_find(st, name))
        return rc;
    st_topic_t t = {.type = ST_TOPIC_NORMAL, .queue_count = 1,
                    .perm = ST_PERM_READ | ST_PERM_WRITE};
    strcpy(t.name, name);
    st_srec_t r = {.type = ST_SR_TOPIC_PUT, .t = &t};
    rc = st_state_log(st, &r);
    return rc == GT_OK ? st_topic_put_locked(st, &t) : rc;
}

/* Moves the message at (q, off) to %DLQ%<group>: a copy with the original
 * properties plus ORIGIN_MESSAGE_ID and RETRY_TOPIC is appended; the entry
 * is acked when that append completes. */
static void dlq_move(pop_ctx_t *c, uint32_t q, st_cs_t *cs, uint64_t off,
                     const st_cq_entry_t *ce)
{
    st_local_t *st = c->st;
    char name[ST_NAME_MAX + 1];
    uint8_t *buf = NULL;
    st_message_t m;
    dlq_ctx_t *d = NULL;
    st_went_t *e = st_cs_at(cs, off);
    gt_err_t rc = dlq_topic(st, c->g->meta.name, name);
    if (rc == GT_OK)
        rc = st_log_read(st, ce->pos, ce->size, &buf, &m);
    if (rc == GT_OK && !(d = calloc(1, sizeof(*d))))
        rc = GT_ENOMEM;
    if (rc == GT_OK) {
        if (m.nprops + 2 <= ST_MAX_PROPS) {
            m.props[m.nprops++] = (st_prop_t){"ORIGIN_MESSAGE_ID", m.msg_id};
            m.props[m.nprops++] = (st_prop_t){"RETRY_TOPIC", c->t->meta.name};
        }
        m.queue_id = ST_QUEUE_ANY;
        m.flags = ST_MSG_F_DLQ;
        d->st = st;
        strcpy(d->group, c->g->meta.name);
        strcpy(d->topic, c->t->meta.name);
        d->queue = q;
        d->off = off;
        rc = st_append_submit(st, name, &m, 1, dlq_done, d, true);
    }
    if (rc == GT_OK) {
        e->state = ST_E_DLQ;
    } else {
        GT_LOG(WARN, "store", "dead-lettering %s/%u/%" PRIu64 " failed: %s",
               c->t->meta.name, q, off, gt_err_str(rc));
        free(d);
        e->deadline = c->now + 1000;
        note_deadline(st, cs, e->deadline);
        st_fifo_moved(cs, off);
    }
    free(buf);
}

/* ---- pop -------------------------------------------------------------------- */
static gt_err_t cs_prepare(pop_ctx_t *c, uint32_t q, st_cs_t **out)
{
    st_local_t *st = c->st;
    st_cs_t *cs = st_cs_find(st, c->g, c->t, q, true);
    st_cq_t *cq = &c->t->cq[q];
    if (!cs)
        return GT_ENOMEM;
    if (!cs->init) {
        bool last = c->g->meta.consume_from == ST_CONSUME_FROM_LAST &&
                    !(c->req != NULL && c->req->new_from_first);
        uint64_t start = last ? st_cq_end(cq) : cq->min_off;
        st_srec_t r = {.type = ST_SR_CS_INIT, .group = c->g->meta.name,
                       .topic = c->t->meta.name, .queue = q, .a = start,
                       .b = start};
        gt_err_t rc = st_state_log(st, &r);
        if (rc != GT_OK)
            return rc;
        st_cs_reset(cs, start);
        cs->init = true;
    }
    st_cs_clamp(cs, cq);
    *out = cs;
    return GT_OK;
}

/* A record that fails its CRC on read (damage the start-up scan did not
 * see, e.g. under a table snapshot) would block its queue forever: it is
 * reported and acked for this group instead.  Lock held. */
static gt_err_t skip_unreadable(pop_ctx_t *c, uint32_t q, st_cs_t *cs,
                                uint64_t off)
{
    GT_LOG(ERROR, "store", "message %s/%u/%" PRIu64 " is unreadable "
           "(corrupt record); group %s skips it", c->t->meta.name, q, off,
           c->g->meta.name);
    st_srec_t r = {.type = ST_SR_ACK, .group = c->g->meta.name,
                   .topic = c->t->meta.name, .queue = q, .a = off};
    gt_err_t rc = st_state_log(c->st, &r);
    if (rc == GT_OK) {
        st_cs_at(cs, off)->state = ST_E_ACKED;
        st_fifo_acked(c->t, q, cs, off);
    }
    return rc;
}

/* A small set of FIFO message-group hashes (open addressing, 0 = empty). */
typedef struct gset {
    uint32_t *k;
    size_t cap, n;
} gset_t;

static bool gset_has(const gset_t *s, uint32_t h)
{
    if (!h || !s->cap)
        return false;
    for (size_t i = h & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (s->k[i] == h)
            return true;
        if (!s->k[i])
            return false;
    }
}

static gt_err_t gset_add(gset_t *s, uint32_t h)
{
    if (!h || gset_has(s, h))
        return GT_OK;
    if ((s->n + 1) * 2 > s->cap) {
        gset_t g = {.cap = s->cap ? s->cap * 2 : 16};
        if (!(g.k = calloc(g.cap, sizeof(*g.k))))
            return GT_ENOMEM;
        for (size_t i = 0; i < s->cap; i++)
            if (s->k[i])
                (void)gset_add(&g, s->k[i]);
        free(s->k);
        *s = g;
    }
    size_t i = h & (s->cap - 1);
    while (s->k[i])
        i = (i + 1) & (s->cap - 1);
    s->k[i] = h;
    s->n++;
    return GT_OK;
}

/* Delivers window entries that are due: in-flight ones whose invisible time
 * expired (attempt + 1, or to the DLQ past the group's maximum) and held
 * ones (delayed until their time, or FIFO-blocked).  Scans in offset order;
 * for a FIFO group, a message whose group has an earlier unacked message is
 * held back (group granularity: other groups go on). */
/* FIFO: the due heads of the window's message groups, from its index
 * (st_fifo.c): expired or due ones first, then held ones, so the cost does
 * not grow with the window. */
static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The open entry of (q, gh), or NULL. */
static fifo_open_t *fifo_open_find(pop_ctx_t *c, uint32_t q, uint32_t gh)
{
    for (size_t i = 0; gh && i < c->nopen; i++)
        if (c->open[i].q == q && c->open[i].gh == gh)
            return &c->open[i];
    return NULL;
}

static void fifo_open_add(pop_ctx_t *c, uint32_t q, uint32_t gh)
{
    if (gh && !fifo_open_find(c, q, gh) && c->nopen < ST_POP_MAX)
        c->open[c->nopen++] = (fifo_open_t){.q = q, .gh = gh};
}

/* True when member entry w may go out with its group's head now. */
static bool fifo_member_due(const pop_ctx_t *c, const st_went_t *w)
{
    if (w->state == ST_E_INFLIGHT)
        return w->deadline <= c->now &&
               w->attempt < c->g->meta.max_delivery_attempts;
    return w->state == ST_E_NONE && w->deadline <= c->now;
}

/* Hands out head entry o of a FIFO window with the consecutive entries of
 * its message group after it, as many as the pop has room for, all in
 * flight with one deadline (RocketMQ's orderly pop hands out a batch; the
 * SDKs consume a batch's messages of one group in order).  The group must
 * be free: while an entry behind the head is still in flight (its
 * invisible time was changed), the group is looked at again at its
 * deadline.  An expired head past the group's maximum attempts goes to the
 * DLQ alone; a member past it stops the batch (it goes when it is head). */
static gt_err_t fifo_take(pop_ctx_t *c, uint32_t q, st_cs_t *cs,
                          st_fifo_t *f, uint64_t o)
{
    enum { SPAN = 2 * ST_POP_MAX };
    st_went_t *e = st_cs_at(cs, o);
    st_cq_entry_t ceb, meb;
    const st_cq_entry_t *ce = st_cq_get(c->t, q, o, &ceb);
    uint32_t gh = ce ? ce->group_hash : 0;
    uint64_t mem[SPAN];
    int64_t busy = 0;
    bool more;
    size_t n, i;
    gt_err_t rc = GT_OK;
    if ((e->state != ST_E_INFLIGHT && e->state != ST_E_NONE) ||
        e->deadline > c->now)
        return GT_OK; /* taken already (a duplicate heap entry) */
    n = st_fifo_members(f, c->t, q, cs, o, mem, SPAN, &more);
    if (n == 0)
        return GT_OK; /* not the head of its group (a stale entry) */
    for (i = 1; i < n; i++) {
        const st_went_t *w = st_cs_at(cs, mem[i]);
        if (w->state == ST_E_NONE)
            break; /* never handed out: nothing after it is in flight */
        if (w->state == ST_E_INFLIGHT && w->deadline > c->now &&
            w->deadline > busy)
            busy = w->deadline;
    }
    if (busy) { /* not free yet */
        note_deadline(c->st, cs, busy);
        st_fifo_recheck(cs, o, busy);
        return GT_OK;
    }
    if (e->state == ST_E_INFLIGHT &&
        e->attempt >= c->g->meta.max_delivery_attempts) {
        dlq_move(c, q, cs, o, ce);
        return GT_OK;
    }
    for (i = 0; i < n && rc == GT_OK && c->out->n < c->max; i++) {
        st_went_t *w = st_cs_at(cs, mem[i]);
        uint8_t *buf;
        st_message_t m;
        if (i > 0 && !fifo_member_due(c, w))
            break;
        rc = ctx_read(c, st_cq_get(c->t, q, mem[i], &meb), &buf, &m);
        if (rc == GT_ECORRUPT) { /* acked; the group goes on next time */
            rc = skip_unreadable(c, q, cs, mem[i]);
            break;
        }
        if (rc == GT_OK && w->state == ST_E_NONE && m.delivery_ts_ms > c->now) {
            w->deadline = m.delivery_ts_ms; /* held after a restart */
            note_deadline(c->st, cs, w->deadline);
            free(buf);
            break;
        }
        if (rc == GT_OK &&
            (rc = deliver(c, q, cs, mem[i], w->attempt + 1, buf, &m))) {
            free(buf);
        }
    }
    st_fifo_moved(cs, o); /* delivered, or back in its heap */
    if (rc == GT_OK && i == n && !more)
        fifo_open_add(c, q, gh); /* its new messages may join */
    return rc;
}

/* FIFO: the due heads of the window's message groups, from its index
 * (st_fifo.c), so the cost does not grow with the window: expired (or
 * due) ones first, in offset order, then held ones; each with the
 * messages of its group after it (fifo_take). */
static gt_err_t pop_window_fifo(pop_ctx_t *c, uint32_t q, st_cs_t *cs)
{
    enum { CAND = 4 * ST_POP_MAX };
    st_fifo_t *f;
    uint64_t o, cand[CAND];
    size_t nc = 0;
    gt_err_t rc = st_fifo_sync(c->t, q, cs, &f);
    while (rc == GT_OK && nc < CAND && c->out->n + nc < c->max &&
           st_fifo_next(f, c->t, q, cs, c->now, true, &o))
        cand[nc++] = o;
    qsort(cand, nc, sizeof(cand[0]), cmp_u64);
    for (size_t i = 0; i < nc; i++) {
        if (rc != GT_OK || c->out->n >= c->max)
            st_fifo_moved(cs, cand[i]); /* not taken: back in its heap */
        else if (i == 0 || cand[i] != cand[i - 1])
            rc = fifo_take(c, q, cs, f, cand[i]);
    }
    while (rc == GT_OK && c->out->n < c->max &&
           st_fifo_next(f, c->t, q, cs, c->now, false, &o))
        rc = fifo_take(c, q, cs, f, o);
    if (rc == GT_OK) {
        cs->min_deadline = st_fifo_min_deadline(f, c->t, q, cs);
        if (cs->min_deadline < c->st->next_expiry)
            c->st->next_expiry = cs->min_deadline;
    }
    return rc;
}

static gt_err_t pop_window(pop_ctx_t *c, uint32_t q, st_cs_t *cs)
{
    bool fifo = c->g->meta.fifo;
    if (fifo)
        return pop_window_fifo(c, q, cs);
    if (cs->fifo) /* was FIFO: the index no longer follows the window */
        cs->fifo_stale = true;
    int64_t newmin = INT64_MAX;
    gset_t blocked = {0};
    gt_err_t rc = GT_OK;
    if (cs->min_deadline > c->now && !fifo)
        return GT_OK;
    for (uint64_t o = cs->commit; o < cs->pop && rc == GT_OK; o++) {
        st_went_t *e = st_cs_at(cs, o);
        st_cq_entry_t ceb;
        const st_cq_entry_t *ce = st_cq_get(c->t, q, o, &ceb);
        if (e->state == ST_E_ACKED || !ce)
            continue;
        uint32_t gh = fifo ? ce->group_hash : 0;
        bool due = (e->state == ST_E_INFLIGHT || e->state == ST_E_NONE) &&
                   e->deadline <= c->now && c->out->n < c->max &&
                   !gset_has(&blocked, gh);
        if (due && e->state == ST_E_INFLIGHT &&
            e->attempt >= c->g->meta.max_delivery_attempts) {
            dlq_move(c, q, cs, o, ce);
        } else if (due) {
            uint8_t *buf;
            st_message_t m;
            rc = ctx_read(c, ce, &buf, &m);
            if (rc == GT_ECORRUPT) {
                rc = skip_unreadable(c, q, cs, o);
                continue;
            }
            if (rc == GT_OK && e->state == ST_E_NONE &&
                m.delivery_ts_ms > c->now) { /* held after a restart */
                e->deadline = m.delivery_ts_ms;
                note_deadline(c->st, cs, e->deadline);
                free(buf);
            } else if (rc == GT_OK &&
                       (rc = deliver(c, q, cs, o, e->attempt + 1, buf, &m))) {
                free(buf);
            }
        }
        if (rc == GT_OK)
            rc = gset_add(&blocked, gh);
        if ((e->state == ST_E_INFLIGHT || e->state == ST_E_NONE) &&
            e->deadline < newmin)
            newmin = e->deadline;
    }
    /* stopped early: entries after o were not looked at, so rescan next time */
    cs->min_deadline = rc == GT_OK ? newmin : 0;
    free(blocked.k);
    return rc;
}

static gt_err_t log_skip(pop_ctx_t *c, uint32_t q, uint64_t from, uint64_t to)
{
    if (from == to)
        return GT_OK;
    st_srec_t r = {.type = ST_SR_SKIP, .group = c->g->meta.name,
                   .topic = c->t->meta.name, .queue = q, .a = from, .b = to};
    return st_state_log(c->st, &r);
}

/* Hands out new messages of one queue.  Those the filters reject are acked
 * on the spot (one SKIP record per run); delayed ones and FIFO-blocked ones
 * stay in the window as held entries for pop_window(). */
static gt_err_t pop_new(pop_ctx_t *c, uint32_t q, st_cs_t *cs)
{
    st_cq_t *cq = &c->t->cq[q];
    uint64_t skip_from = cs->pop, scanned = 0;
    st_fifo_t *f = NULL;
    gt_err_t rc = c->g->meta.fifo ? st_fifo_sync(c->t, q, cs, &f) : GT_OK;
    while (rc == GT_OK && c->out->n < c->max && cs->pop < st_cq_end(cq) &&
           (!f || scanned++ < FIFO_SCAN)) {
        st_cq_entry_t ceb = {0};
        const st_cq_entry_t *ce = st_cq_get(c->t, q, cs->pop, &ceb);
        uint8_t *buf = NULL;
        st_message_t m;
        /* an unreadable consume queue entry (logged) is skipped like a
         * corrupt record */
        bool take = ce && st_filter_match_hash(c->f, ce->tag_hash);
        ce = ce ? ce : &ceb;
        uint32_t gh = c->g->meta.fifo ? ce->group_hash : 0;
        /* FIFO: a group this pop hands out to its last entry takes its new
         * messages too; others with an unacked entry hold them back */
        fifo_open_t *open = f ? fifo_open_find(c, q, gh) : NULL;
        if (open && open->closed)
            open = NULL;
        bool busy = f && gh && !open && st_fifo_busy(f, gh);
        /* FIFO, everything wanted, its group busy: held unread (it is read
         * when it goes out with its group's head) */
        bool lazy = take && busy && c->f->tx.all && !c->f->sql;
        if (take && !lazy) {
            rc = ctx_read(c, ce, &buf, &m);
            if (rc == GT_ECORRUPT) { /* reported; skipped like a filtered one */
                GT_LOG(ERROR, "store", "message %s/%u/%" PRIu64 " is "
                       "unreadable (corrupt record); group %s skips it",
                       c->t->meta.name, q, cs->pop, c->g->meta.name);
                rc = GT_OK;
                take = false;
            } else if (rc != GT_OK) {
                break;
            } else {
                take = st_filter_match(c->f, &m);
            }
        }
        uint64_t off = cs->pop;
        if ((rc = st_cs_extend(cs, off + 1, take ? ST_E_NONE : ST_E_ACKED))) {
            free(buf);
            break;
        }
        if (!take) {
            free(buf);
            continue;
        }
        rc = log_skip(c, q, skip_from, off);
        skip_from = off + 1;
        if (rc == GT_OK && (lazy || m.delivery_ts_ms > c->now || busy)) {
            st_went_t *e = st_cs_at(cs, off); /* held back */
            if (open) /* the rest of its group waits behind it */
                open->closed = true;
            e->deadline = !lazy && m.delivery_ts_ms > c->now ? m.delivery_ts_ms
                                                             : 0;
            if (e->deadline)
                note_deadline(c->st, cs, e->deadline);
            else if (cs->min_deadline > 0 && !f)
                cs->min_deadline = 0;
            free(buf);
            if (f)
                rc = st_fifo_add(f, cs, gh, off);
            continue;
        }
        if (rc == GT_OK)
            rc = deliver(c, q, cs, off, 1, buf, &m);
        if (rc != GT_OK) { /* not handed out: give the offset back */
            free(buf);
            cs->pop = off;
            break;
        }
        if (f && (rc = st_fifo_add(f, cs, gh, off)) == GT_OK && !open)
            fifo_open_add(c, q, gh);
    }
    if (rc == GT_OK)
        rc = log_skip(c, q, skip_from, cs->pop);
    st_cs_advance(cs);
    st_fifo_seen(cs);
    return rc;
}

/* Writes the pop's batched POP records (one write).  If that fails,
 * nothing of this attempt is handed out: the entries are put back as they
 * were (a new message back to not yet handed out, an expired one back to
 * expired), due at once, and the error is returned.  Lock held. */
static gt_err_t pop_write(pop_ctx_t *c, size_t n0)
{
    gt_err_t rc = c->nrec ? st_state_log_n(c->st, c->rec, c->nrec) : GT_OK;
    if (rc != GT_OK) {
        for (size_t i = c->nrec; i-- > 0;) {
            struct pop_undo *u = &c->undo[i];
            *st_cs_at(u->cs, u->off) = u->prev;
            u->cs->min_deadline = 0; /* pop_window() looks again */
        }
        for (size_t i = n0; i < c->out->n; i++)
            free(c->out->bufs[i]);
        c->out->n = n0;
    }
    c->nrec = 0;
    return rc;
}

/* One attempt over the queues of the topic; lock held. */
static gt_err_t pop_try(pop_ctx_t *c)
{
    st_topic_rt_t *t = c->t;
    uint32_t qc = t->meta.queue_count, first = 0, nq = qc;
    size_t n0 = c->out->n;
    gt_err_t rc = GT_OK, wrc;
    st_cs_t *cs;
    c->batch = !c->g->meta.fifo;
    c->nrec = 0;
    if (c->req->queue_id >= 0) {
        first = (uint32_t)c->req->queue_id;
        nq = 1;
    } else if (c->req->high_first) {
        /* priority levels: the highest queue first, each drained before
         * the next lower one */
        for (uint32_t i = qc; i-- > 0 && rc == GT_OK && c->out->n < c->req->max;)
            if ((rc = cs_prepare(c, i, &cs)) == GT_OK &&
                (rc = pop_window(c, i, cs)) == GT_OK && c->out->n < c->req->max)
                rc = pop_new(c, i, cs);
        nq = 0;
    } else if (c->pf && c->pf->planned) {
        first = c->pf->first % qc;
    } else if (st_cs_find(c->st, c->g, t, 0, true)) {
        first = st_gtopic_find(c->g, t, false)->rr++ % qc;
    }
    for (uint32_t i = 0; i < nq && rc == GT_OK; i++) {
        uint32_t q = (first + i) % qc;
        if ((rc = cs_prepare(c, q, &cs)) == GT_OK)
            rc = pop_window(c, q, cs);
    }
    for (uint32_t i = 0; i < nq && rc == GT_OK && c->out->n < c->max; i++) {
        uint32_t q = (first + i) % qc;
        if ((rc = cs_prepare(c, q, &cs)) == GT_OK)
            rc = pop_new(c, q, cs);
    }
    if ((wrc = pop_write(c, n0)) != GT_OK)
        return wrc;
    if (c->out->n > 0 && rc != GT_OK) {
        GT_LOG(WARN, "store", "pop stopped early: %s", gt_err_str(rc));
        rc = GT_OK; /* hand out what was recorded */
    }
    return rc;
}

static gt_err_t group_for_pop(st_local_t *st, const char *name,
                              st_group_rt_t **out)
{
    st_group_rt_t *g = st_group_find(st, name);
    if (st_is_sys_name(name))
        return GT_EINVAL; /* internal groups are not consumers */
    if (!g) { /* auto-created, as RocketMQ brokers do by default */
        if (!(g = st_group_vivify(st, name)))
            return GT_ENOMEM;
        st_group_t meta = g->meta;
        if (st_group_validate(&meta) != GT_OK)
            return GT_EINVAL;
        st_srec_t r = {.type = ST_SR_GROUP_PUT, .g = &meta};
        gt_err_t rc = st_state_log(st, &r);
        if (rc != GT_OK)
            return rc;
        g->deleted = false;
        st_meta_group_changed(st, g);
    }
    *out = g;
    return GT_OK;
}

gt_err_t st_pop_attempt(st_local_t *st, st_topic_rt_t *t,
                        const st_pop_req_t *req, const st_filter_t *f,
                        int64_t now, st_pop_out_t *out)
{
    pop_ctx_t c = {.st = st, .t = t, .req = req, .f = f, .now = now,
                   .max = req->max,
                   .out = out};
    gt_err_t rc = group_for_pop(st, req->group, &c.g);
    return rc == GT_OK ? pop_try(&c) : rc;
}

/* Guesses which records the pop will read -- due window entries and new
 * offsets whose tag hash matches, queue by queue -- without changing any
 * state (lock held).  A wrong guess costs a read under the lock later. */
static void prefetch_plan(st_local_t *st, const st_pop_req_t *req,
                          const st_filter_t *f, int64_t now, prefetch_t *pf)
{
    st_topic_rt_t *t = st_topic_find(st, req->topic);
    st_group_rt_t *g = st_group_find(st, req->group);
    if (!t || !g || t->meta.queue_count == 0 || g->meta.fifo)
        return; /* FIFO: few of the window's entries are heads; guessing
                   which would cost more reads than it saves */
    uint32_t qc = t->meta.queue_count, first = 0, nq = qc;
    uint64_t bytes = 0; /* planned (record sizes, over the bodies') */
    if (req->queue_id >= 0) {
        if ((uint32_t)req->queue_id >= qc)
            return;
        first = (uint32_t)req->queue_id;
        nq = 1;
    } else if (!req->high_first) {
        /* pop_try() starts where the round robin says: take its turn now */
        st_gtopic_t *gt = st_gtopic_find(g, t, false);
        if (!gt)
            return; /* the first pop of the group here: read under the lock */
        first = pf->first = gt->rr++ % qc;
        pf->planned = true;
    }
    for (uint32_t i = 0; i < nq && pf->n < PF_MAX &&
                         !(req->high_first && pf->n >= req->max); i++) {
        /* priority levels are read highest first, as pop_try() takes them */
        uint32_t q = req->high_first && req->queue_id < 0 ? qc - 1 - i : (first + i) % qc;
        st_cs_t *cs = q < t->nq ? st_cs_find(st, g, t, q, false) : NULL;
        if (!cs || !cs->init)
            continue; /* first pop of this queue: read under the lock */
        st_cq_t *cq = &t->cq[q];
        for (uint64_t o = cs->commit; o < cs->pop && pf->n < PF_MAX; o++) {
            st_went_t *e = st_cs_at(cs, o);
            st_cq_entry_t ceb;
            const st_cq_entry_t *ce = st_cq_get(t, q, o, &ceb);
            if (ce && (e->state == ST_E_INFLIGHT || e->state == ST_E_NONE) &&
                e->deadline <= now) {
                if (req->max_bytes != 0 && bytes >= req->max_bytes)
                    return;
                pf->pos[pf->n] = ce->pos;
                pf->size[pf->n++] = ce->size;
                bytes += ce->size;
            }
        }
        for (uint64_t o = cs->pop, k = 0;
             o < st_cq_end(cq) && pf->n < PF_MAX && k < req->max; o++) {
            st_cq_entry_t ceb;
            const st_cq_entry_t *ce = st_cq_get(t, q, o, &ceb);
            if (ce && st_filter_match_hash(f, ce->tag_hash)) {
                if (req->max_bytes != 0 && bytes >= req->max_bytes)
                    return;
                pf->pos[pf->n] = ce->pos;
                pf->size[pf->n++] = ce->size;
                bytes += ce->size;
                k++;
            }
        }
    }
}

/* Bytes one read of adjacent records takes at most. */
#define PF_RUN_BYTES (256u << 10)

/* Reads the planned records (no lock held).  Records adjacent in the
 * commitlog (a queue's messages appended by one batch are) are read with
 * one pread and split: one system call per run instead of per message.
 * A record whose read fails keeps no buffer (ctx_read() reads it again
 * and reports the error). */
static void prefetch_read(st_local_t *st, prefetch_t *pf)
{
    for (size_t i = 0, j; i < pf->n; i = j) {
        st_seg_t *seg = st_log_seg_at(st, pf->pos[i]);
        uint64_t len = pf->size[i];
        uint8_t *run = NULL;

        for (j = i + 1; seg && j < pf->n &&
                        pf->pos[j] == pf->pos[j - 1] + pf->size[j - 1] &&
                        pf->pos[j] + pf->size[j] <= seg->base + st->seg_size &&
                        len + pf->size[j] <= PF_RUN_BYTES;
             j++)
            len += pf->size[j];
        if (j - i == 1) {
            if (!seg || !(pf->buf[i] = malloc(pf->size[i])) ||
                st_file_pread_full(st, seg->fd, pf->buf[i], pf->size[i],
                                   pf->pos[i] - seg->base) != GT_OK) {
                free(pf->buf[i]);
                pf->buf[i] = NULL;
            }
        } else if ((run = malloc(len)) &&
                   st_file_pread_full(st, seg->fd, run, len,
                                      pf->pos[i] - seg->base) == GT_OK) {
            for (size_t k = i; k < j; k++)
                if ((pf->buf[k] = malloc(pf->size[k])))
                    memcpy(pf->buf[k], run + (pf->pos[k] - pf->pos[i]),
                           pf->size[k]);
        }
        free(run);
        st_seg_unref(st, seg);
    }
}

void st_pop_local(st_store_t *s, const st_pop_req_t *req, st_pop_cb cb,
                  void *arg)
{
    st_local_t *st = (st_local_t *)s;
    st_filter_t f = {0};
    /* Not zeroed (90 KiB): entries below out->n are written whole. */
    st_pop_out_t *out = malloc(sizeof(*out));
    gt_err_t rc = GT_OK;
    if (!out) {
        cb(arg, GT_ENOMEM, NULL, 0);
        return;
    }
    out->n = 0;
    if (!req->group || !req->topic || req->max < 1 || req->max > ST_POP_MAX ||
        req->invisible_ms <= 0 || req->invisible_ms > ST_INVISIBLE_MAX_MS ||
        req->poll_timeout_ms < 0 || req->poll_timeout_ms > ST_POLL_MAX_MS)
        rc = GT_EINVAL;
    else
        rc = st_filter_compile(req->filter_kind, req->filter_expr, &f);
    if (rc != GT_OK)
        goto done;
    int64_t now = st_now_ms();
    prefetch_t *pf = calloc(1, sizeof(*pf)); /* optional: NULL is fine */
    if (pf) {
        pthread_mutex_lock(&st->lock);
        prefetch_plan(st, req, &f, now, pf);
        pthread_mutex_unlock(&st->lock);
        prefetch_read(st, pf);
    }
    pthread_mutex_lock(&st->lock);
    pop_ctx_t c = {.st = st, .req = req, .f = &f, .now = now, .out = out,
                   .pf = pf, .max = req->max};
    if (st->closing)
        rc = GT_ESHUTDOWN;
    else if (!(c.t = st_topic_find(st, req->topic)))
        rc = GT_ENOTFOUND;
    else if (req->queue_id >= 0 &&
             (uint32_t)req->queue_id >= c.t->meta.queue_count)
        rc = GT_EINVAL;
    else if ((rc = group_for_pop(st, req->group, &c.g)) == GT_OK)
        rc = pop_try(&c);
    bool cancelled = false;
    bool parked = rc == GT_OK && out->n == 0 && req->poll_timeout_ms > 0 &&
                  st_park_pop(st, req, c.t, &f, now, cb, arg,
                              &cancelled) == GT_OK && !cancelled;
    pthread_mutex_unlock(&st->lock);
    for (size_t i = 0; pf && i < pf->n; i++)
        free(pf->buf[i]);
    free(pf);
    if (parked) {
        free(out);
        return;
    }
done:
    st_filter_free(&f);
    cb(arg, rc, rc == GT_OK ? out->msgs : NULL, rc == GT_OK ? out->n : 0);
    st_pop_out_free(out);
    free(out);
}

/* ---- expiry ---- */
/* Recomputes st->next_expiry over queues whose lower bound has passed. */
static bool st_groups_fifo(const st_group_rt_t *g)
{
    return g->meta.fifo;
}

void st_expiry_recompute(st_local_t *st, int64_t now)
{
    int64_t next = INT64_MAX;
    for (size_t i = 0; i < st->ngroups; i++)
        for (st_gtopic_t *gt = st->groups[i]->topics; gt; gt = gt->next)
            for (uint32_t q = 0; q < gt->ncs; q++) {
                st_cs_t *cs = &gt->cs[q];
                if (cs->min_deadline <= now && st_fifo_in_step(cs) &&
                    st_groups_fifo(st->groups[i])) {
                    cs->min_deadline = st_fifo_min_deadline(cs->fifo,
                                                            gt->topic, q, cs);
                } else if (cs->min_deadline <= now) {
                    int64_t m = INT64_MAX;
                    for (uint64_t o = cs->commit; o < cs->pop; o++) {
                        st_went_t *e = st_cs_at(cs, o);
                        if (e->state == ST_E_INFLIGHT && e->deadline < m)
                            m = e->deadline;
                    }
                    cs->min_deadline = m;
                }
                if (cs->min_deadline > now && cs->min_deadline < next)
                    next = cs->min_deadline;
            }
    st->next_expiry = next;
}

/* ---- ack / change invisible -------------------------------------------------------- */
static gt_err_t handle_find(st_local_t *st, const char *group,
                            const char *topic, const char *handle, int64_t now,
                            st_cs_t **cs_out, st_handle_t *h)
{
    st_topic_rt_t *t = st_topic_find(st, topic);
    st_group_rt_t *g = st_group_find(st, group);
    if (!t || !g)
        return GT_ENOTFOUND;
    if (st_handle_decode(handle, h) != GT_OK || h->queue >= t->nq)
        return GT_EINVAL;
    st_cs_t *cs = st_cs_find(st, g, t, h->queue, false);
    if (!cs || !cs->init || h->offset < cs->commit || h->offset >= cs->pop)
        return GT_EINVAL;
    st_went_t *e = st_cs_at(cs, h->offset);
    if (e->state != ST_E_INFLIGHT || e->gen != h->gen || e->deadline <= now)
        return GT_EINVAL;
    *cs_out = cs;
    return GT_OK;
}

void st_ack_local(st_store_t *s, const char *group, const char *topic,
                  const char *handle, st_done_cb cb, void *arg)
{
    st_local_t *st = (st_local_t *)s;
    st_cs_t *cs;
    st_handle_t h;
    pthread_mutex_lock(&st->lock);
    gt_err_t rc = handle_find(st, group, topic, handle, st_now_ms(), &cs, &h);
    if (rc == GT_OK) {
        st_srec_t r = {.type = ST_SR_ACK, .group = group, .topic = topic,
                       .queue = h.queue, .a = h.offset};
        if ((rc = st_state_log(st, &r)) == GT_OK) {
            st_cs_at(cs, h.offset)->state = ST_E_ACKED;
            st_fifo_acked(st_topic_find(st, topic), h.queue, cs, h.offset);
            st_group_rt_t *g = st_group_find(st, group);
            if (g && g->meta.fifo && st_parks_any(st)) /* may unblock */
                st_publish_wake(st, st_topic_find(st, topic));
        }
    }
    pthread_mutex_unlock(&st->lock);
    cb(arg, rc);
}

/* One pass under the lock: each valid handle is marked acked as it is
 * checked (so a handle named twice fails its second time), then every mark
 * is undone, the records are written together, and the acks are applied
 * one by one as st_ack_local() applies one -- or, when the write failed,
 * not at all. */
typedef struct ack_slot {
    st_cs_t *cs;
    uint32_t q;
    uint64_t off;
    size_t i;
} ack_slot_t;

void st_ack_batch_local(st_store_t *s, const char *group, const char *topic,
                        const char *const *handles, size_t n, st_acks_cb cb,
                        void *arg)
{
    st_local_t *st = (st_local_t *)s;
    gt_err_t *errs = NULL;
    ack_slot_t *sl = NULL;
    st_srec_t *recs = NULL;
    size_t ns = 0;
    gt_err_t rc = GT_OK;

    if (n == 0 || n > ST_ACK_MAX || handles == NULL) {
        cb(arg, GT_EINVAL, NULL, 0);
        return;
    }
    errs = malloc(n * sizeof(*errs));
    sl = malloc(n * sizeof(*sl));
    recs = malloc(n * sizeof(*recs));
    if (errs == NULL || sl == NULL || recs == NULL) {
        free(errs);
        free(sl);
        free(recs);
        cb(arg, GT_ENOMEM, NULL, 0);
        return;
    }
    pthread_mutex_lock(&st->lock);
    st_topic_rt_t *t = st_topic_find(st, topic);
    st_group_rt_t *g = st_group_find(st, group);
    if (!t || !g)
        rc = GT_ENOTFOUND;
    int64_t now = st_now_ms();
    for (size_t i = 0; rc == GT_OK && i < n; i++) {
        st_cs_t *cs;
        st_handle_t h;
        errs[i] = handles[i] != NULL
                      ? handle_find(st, group, topic, handles[i], now, &cs, &h)
                      : GT_EINVAL;
        if (errs[i] != GT_OK)
            continue;
        st_cs_at(cs, h.offset)->state = ST_E_ACKED;
        sl[ns] = (ack_slot_t){cs, h.queue, h.offset, i};
        recs[ns++] = (st_srec_t){.type = ST_SR_ACK, .group = group,
                                 .topic = topic, .queue = h.queue,
                                 .a = h.offset};
    }
    for (size_t k = 0; k < ns; k++) /* only marks until written */
        st_cs_at(sl[k].cs, sl[k].off)->state = ST_E_INFLIGHT;
    if (rc == GT_OK && ns > 0) {
        gt_err_t wrc = st_state_log_n(st, recs, ns);
        for (size_t k = 0; k < ns; k++) {
            if (wrc != GT_OK) {
                errs[sl[k].i] = wrc;
                continue;
            }
            st_cs_at(sl[k].cs, sl[k].off)->state = ST_E_ACKED;
            st_fifo_acked(t, sl[k].q, sl[k].cs, sl[k].off);
        }
        if (wrc == GT_OK && g->meta.fifo && st_parks_any(st)) /* may unblock */
            st_publish_wake(st, t);
    }
    pthread_mutex_unlock(&st->lock);
    free(sl);
    free(recs);
    if (rc != GT_OK)
        cb(arg, rc, NULL, 0);
    else
        cb(arg, GT_OK, errs, n);
    free(errs);
}

/* Purges one queue of (g, t): acks its ready window entries (due held
 * ones, expired deliveries), then every offset not delivered yet.  Adds
 * what it dropped to *n.  Lock held. */
static gt_err_t purge_queue(st_local_t *st, st_group_rt_t *g, st_topic_rt_t *t,
                            uint32_t q, int64_t now, uint64_t *n)
{
    pop_ctx_t c = {.st = st, .g = g, .t = t};
    st_cs_t *cs;
    gt_err_t rc = cs_prepare(&c, q, &cs);
    for (uint64_t o = cs ? cs->commit : 0; rc == GT_OK && o < cs->pop; o++) {
        st_went_t *e = st_cs_at(cs, o);
        if ((e->state != ST_E_NONE && e->state != ST_E_INFLIGHT) ||
            e->deadline > now)
            continue;
        st_srec_t r = {.type = ST_SR_ACK, .group = g->meta.name,
                       .topic = t->meta.name, .queue = q, .a = o};
        if ((rc = st_state_log(st, &r)) == GT_OK) {
            e->state = ST_E_ACKED;
            (*n)++;
        }
    }
    if (rc != GT_OK)
        return rc;
    st_cs_advance(cs);
    uint64_t end = st_cq_end(&t->cq[q]);
    if (cs->pop < end) {
        /* an empty window moves as a whole (no entries for the backlog);
         * behind deliveries in flight the backlog joins the window acked */
        bool empty = cs->commit == cs->pop;
        st_srec_t r = {.type = empty ? ST_SR_COMMIT : ST_SR_SKIP,
                       .group = g->meta.name, .topic = t->meta.name,
                       .queue = q, .a = empty ? end : cs->pop, .b = end};
        uint64_t from = cs->pop;
        if (!empty && (rc = st_cs_extend(cs, end, ST_E_ACKED)) != GT_OK)
            return rc;
        if ((rc = st_state_log(st, &r)) != GT_OK) {
            if (!empty) /* not logged: not purged (held entries again) */
                for (uint64_t o = from; o < end; o++)
                    st_cs_at(cs, o)->state = ST_E_NONE;
            return rc;
        }
        if (empty)
            st_cs_move_commit(cs, end);
        *n += end - from;
    }
    if (cs->fifo) /* the FIFO index no longer follows the window */
        cs->fifo_stale = true;
    return GT_OK;
}

void st_purge_local(st_store_t *s, const char *group, const char *topic,
                    st_count_cb cb, void *arg)
{
    st_local_t *st = (st_local_t *)s;
    uint64_t n = 0;
    gt_err_t rc = GT_OK;
    pthread_mutex_lock(&st->lock);
    st_topic_rt_t *t = topic ? st_topic_find(st, topic) : NULL;
    st_group_rt_t *g = group ? st_group_find(st, group) : NULL;
    if (st_is_sys_name(topic) || st_is_sys_name(group))
        rc = GT_EINVAL; /* the store's own */
    else if (!t || !g || t->deleted || g->deleted)
        rc = GT_ENOTFOUND;
    int64_t now = st_now_ms();
    for (uint32_t q = 0; rc == GT_OK && q < t->meta.queue_count; q++)
        rc = purge_queue(st, g, t, q, now, &n);
    pthread_mutex_unlock(&st->lock);
    cb(arg, rc, n);
}

/* Each delivery in flight of (g, t) is due now, attempt kept (the next pop
 * raises it), with a new generation: logged as a pop record, as
 * st_change_local() does for one. */
void st_requeue_local(st_store_t *s, const char *group, const char *topic,
                      st_count_cb cb, void *arg)
{
    st_local_t *st = (st_local_t *)s;
    uint64_t n = 0;
    gt_err_t rc = GT_OK;
    pthread_mutex_lock(&st->lock);
    st_topic_rt_t *t = topic ? st_topic_find(st, topic) : NULL;
    st_group_rt_t *g = group ? st_group_find(st, group) : NULL;
    if (st_is_sys_name(topic) || st_is_sys_name(group))
        rc = GT_EINVAL; /* the store's own */
    else if (!t || !g || t->deleted || g->deleted)
        rc = GT_ENOTFOUND;
    int64_t now = st_now_ms();
    for (uint32_t q = 0; rc == GT_OK && q < t->meta.queue_count; q++) {
        st_cs_t *cs = st_cs_find(st, g, t, q, false);
        if (!cs || !cs->init)
            continue;
        for (uint64_t o = cs->commit; rc == GT_OK && o < cs->pop; o++) {
            st_went_t *e = st_cs_at(cs, o);
            if (e->state != ST_E_INFLIGHT || e->deadline <= now)
                continue;
            st_srec_t r = {.type = ST_SR_POP, .group = group, .topic = topic,
                           .queue = q, .a = o, .attempt = e->attempt,
                           .deadline = now, .gen = st->next_gen};
            if ((rc = st_state_log(st, &r)) == GT_OK) {
                e->gen = st->next_gen++;
                e->deadline = now;
                note_deadline(st, cs, now);
                st_fifo_moved(cs, o);
                n++;
            }
        }
    }
    pthread_mutex_unlock(&st->lock);
    cb(arg, rc, n);
}

void st_change_local(st_store_t *s, const char *group, const char *topic,
                     const char *handle, int64_t invisible_ms,
                     st_handle_cb cb, void *arg)
{
    st_local_t *st = (st_local_t *)s;
    char nh[ST_HANDLE_MAX];
    st_cs_t *cs;
    st_handle_t h;
    int64_t now = st_now_ms();
    if (invisible_ms < 0 || invisible_ms > ST_INVISIBLE_MAX_MS) {
        cb(arg, GT_EINVAL, NULL);
        return;
    }
    pthread_mutex_lock(&st->lock);
    gt_err_t rc = handle_find(st, group, topic, handle, now, &cs, &h);
    if (rc == GT_OK) {
        st_went_t *e = st_cs_at(cs, h.offset);
        st_srec_t r = {.type = ST_SR_POP, .group = group, .topic = topic,
                       .queue = h.queue, .a = h.offset, .attempt = e->attempt,
                       .deadline = now + invisible_ms, .gen = st->next_gen};
        if ((rc = st_state_log(st, &r)) == GT_OK) {
            e->gen = st->next_gen++;
            e->deadline = r.deadline;
            note_deadline(st, cs, e->deadline);
            st_fifo_moved(cs, h.offset);
            h.gen = e->gen;
            st_handle_encode(&h, nh);
        }
    }
    pthread_mutex_unlock(&st->lock);
    cb(arg, rc, rc == GT_OK ? nh : NULL);
}

/* Undoes a delivery: the entry is due now with the attempt before it, and
 * gets a new generation so the handle stops working.  Logged as a pop
 * record with those values (replay and compaction need nothing new). */
void st_release_local(st_store_t *s, const char *group, const char *topic,
                      const char *handle, st_done_cb cb, void *arg)
{
    st_local_t *st = (st_local_t *)s;
    st_cs_t *cs;
    st_handle_t h;
    int64_t now = st_now_ms();
    pthread_mutex_lock(&st->lock);
    gt_err_t rc = handle_find(st, group, topic, handle, now, &cs, &h);
    if (rc == GT_OK) {
        st_went_t *e = st_cs_at(cs, h.offset);
        st_srec_t r = {.type = ST_SR_POP, .group = group, .topic = topic,
                       .queue = h.queue, .a = h.offset,
                       .attempt = e->attempt > 0 ? e->attempt - 1 : 0,
                       .deadline = now, .gen = st->next_gen};
        if ((rc = st_state_log(st, &r)) == GT_OK) {
            e->gen = st->next_gen++;
            e->attempt = r.attempt;
            e->deadline = now;
            note_deadline(st, cs, now);
            st_fifo_moved(cs, h.offset);
        }
    }
    pthread_mutex_unlock(&st->lock);
    cb(arg, rc);
}

/* ---- committed offsets ------------------------------------------------------------- */
void st_offset_get_local(st_store_t *s, const char *group, const char *topic,
                         uint32_t queue, st_offset_cb cb, void *arg)
{
    st_local_t *st = (st_local_t *)s;
    uint64_t off = 0;
    gt_err_t rc = GT_ENOTFOUND;
    pthread_mutex_lock(&st->lock);
    st_topic_rt_t *t = st_topic_find(st, topic);
    st_group_rt_t *g = st_group_find(st, group);
    st_cs_t *cs = t && g && queue < t->nq ? st_cs_find(st, g, t, queue, false)
                                          : NULL;
    if (cs && cs->init) {
        st_cs_clamp(cs, &t->cq[queue]);
        off = cs->commit;
        rc = GT_OK;
    }
    pthread_mutex_unlock(&st->lock);
    cb(arg, rc, off);
}

void st_offset_update_local(st_store_t *s, const char *group,
                            const char *topic, uint32_t queue, uint64_t offset,
                            st_done_cb cb, void *arg)
{
    st_local_t *st = (st_local_t *)s;
    st_group_rt_t *g = NULL;
    st_cs_t *cs = NULL;
    gt_err_t rc = GT_OK;
    pthread_mutex_lock(&st->lock);
    st_topic_rt_t *t = st_topic_find(st, topic);
    if (!t || !group)
        rc = GT_ENOTFOUND;
    else if (queue >= t->meta.queue_count)
        rc = GT_EINVAL;
    else if (offset > st_cq_end(&t->cq[queue]))
        rc = GT_ERANGE;
    else if ((rc = group_for_pop(st, group, &g)) == GT_OK &&
             !(cs = st_cs_find(st, g, t, queue, true)))
        rc = GT_ENOMEM;
    if (rc == GT_OK) {
        st_srec_t r = {.type = cs->init ? ST_SR_COMMIT : ST_SR_CS_INIT,
                       .group = group, .topic = topic, .queue = queue,
                       .a = offset, .b = offset};
        if ((rc = st_state_log(st, &r)) == GT_OK) {
            cs->fifo_stale = true; /* the window restarts */
            if (!cs->init)
                st_cs_reset(cs, offset);
            else
                st_cs_move_commit(cs, offset);
            cs->init = true;
        }
    }
    pthread_mutex_unlock(&st->lock);
    cb(arg, rc);
}
