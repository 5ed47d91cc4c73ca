/* Held messages: transactions' half messages, delayed (timer) messages and
 * their recall.
 *
 * A message that must not be visible yet is not written to its topic at
 * all.  st_append_local() redirects it to a system topic -- %SYS%HALF for
 * a half message, %SYS%TIMER for a delivery time in the future -- with two
 * extra properties naming the real topic and the queue chosen for it there
 * (chosen at send time, so a FIFO message group keeps its queue).  When the
 * message is released (commit, or its delivery time) a copy with the
 * original id and properties is appended to the real topic, through the
 * ordinary append path; from then on it is an ordinary message.  Pops,
 * pulls, stats, lookups and committed offsets of the real topic therefore
 * never see held messages: a 7-day timer holds back nothing.
 *
 * Which held messages are resolved (committed, rolled back, discarded,
 * fired, recalled) is consumption state of an internal group, %SYS%HOLD,
 * on the two system topics: a resolution is a SKIP record of one offset in
 * the state log (written before the operation completes, so a SIGKILL loses
 * none; compaction keeps it like any ack).  Held records stay retained
 * while unresolved: retention never deletes a segment holding the oldest
 * unresolved one (st_hold_keep_pos()).
 *
 * Timers.  The timer topic's consume queue entries carry the delivery time
 * in their time field (st_writer.c, st_log.c), so a min-heap on (delivery
 * time, offset) over the unresolved offsets is rebuilt at start-up without
 * reading a record.  The service thread sleeps until the heap's top is due,
 * pops every due entry (O(log n) each; no scan, no thread per timer),
 * appends the copies in due order and marks them resolved once durable.
 * A recall resolves the entry; its heap entry is dropped when it reaches
 * the top.  A crash between a copy becoming durable and its resolution
 * being logged delivers it again after the restart (at least once).
 *
 * Half messages.  Their window entries keep, in memory only, the check
 * count (attempt), the time of the last check (deadline) and the parsed
 * ST_PROP_TXCHECK override (gen: 0 not read yet, 1 none, else ms + 2).
 *
 * Everything here is guarded by st->lock; no lock is held across a read of
 * the commitlog for firing, an append or a callback. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt_log.h"
#include "st_int.h"

#define PROP_RT ST_PROP_HOLD_TOPIC /* real topic of a held message */
#define PROP_RQ ST_PROP_HOLD_QUEUE /* its queue there (decimal) */
#define FIRE_MAX 1024    /* timers fired per pass of the service thread */
#define ST_E_BUSY ST_E_DLQ /* being fired or committed: an append is out */
#define ST_E_ROLL ST_E_INFLIGHT /* being rolled forward (see roll_pass) */

/* ---- internal windows ------------------------------------------------------ */
static st_topic_rt_t *sys_topic(st_local_t *st, const char *name)
{
    st_topic_rt_t *t = st_topic_find(st, name);
    if (t)
        goto out;
    st_topic_t m = {.type = ST_TOPIC_NORMAL, .queue_count = 1,
                    .perm = ST_PERM_READ | ST_PERM_WRITE};
    strcpy(m.name, name);
    st_srec_t r = {.type = ST_SR_TOPIC_PUT, .t = &m};
    if (st_state_log(st, &r) != GT_OK || st_topic_put_locked(st, &m) != GT_OK)
        return NULL;
    t = st_topic_find(st, name);
out:
    if (t && strcmp(name, ST_SYS_TIMER) == 0)
        st->sys_timer = t;
    else if (t)
        st->sys_half = t;
    return t;
}

/* The internal group's window on a system topic; lock held. */
static st_cs_t *hold_cs(st_local_t *st, st_topic_rt_t *t)
{
    st_group_rt_t *g = st_group_vivify(st, ST_SYS_GROUP);
    st_cs_t *cs = g && t->nq ? st_cs_find(st, g, t, 0, true) : NULL;
    if (!cs)
        return NULL;
    if (!cs->init) {
        uint64_t start = t->cq[0].min_off;
        st_srec_t r = {.type = ST_SR_CS_INIT, .group = ST_SYS_GROUP,
                       .topic = t->meta.name, .queue = 0, .a = start,
                       .b = start};
        if (st_state_log(st, &r) != GT_OK)
            return NULL;
        st_cs_reset(cs, start);
        cs->init = true;
    }
    st_cs_clamp(cs, &t->cq[0]);
    return cs;
}

/* Marks offsets offs[0..n) (sorted) of a system topic resolved: one SKIP
 * record per run of consecutive offsets.  Lock held. */
static gt_err_t hold_resolve(st_local_t *st, st_topic_rt_t *t, st_cs_t *cs,
                             const uint64_t *offs, size_t n)
{
    gt_err_t rc = GT_OK;
    for (size_t i = 0; i < n && rc == GT_OK;) {
        size_t j = i + 1;
        while (j < n && offs[j] == offs[j - 1] + 1)
            j++;
        st_srec_t r = {.type = ST_SR_SKIP, .group = ST_SYS_GROUP,
                       .topic = t->meta.name, .queue = 0, .a = offs[i],
                       .b = offs[j - 1] + 1};
        if ((rc = st_state_log(st, &r)) == GT_OK)
            for (size_t k = i; k < j; k++)
                if (offs[k] >= cs->commit && offs[k] < cs->pop)
                    st_cs_at(cs, offs[k])->state = ST_E_ACKED;
        i = j;
    }
    st_cs_advance(cs);
    return rc;
}

/* ---- timer heap --------------------------------------------------------------- */
static bool tent_less(const struct st_tent *a, const struct st_tent *b)
{
    return a->due < b->due || (a->due == b->due && a->off < b->off);
}

static gt_err_t heap_push(st_local_t *st, int64_t due, uint64_t off)
{
    if (st->theap_n == st->theap_cap) {
        size_t cap = st->theap_cap ? st->theap_cap * 2 : 1024;
        struct st_tent *n = realloc(st->theap, cap * sizeof(*n));
        if (!n)
            return GT_ENOMEM;
        st->theap = n;
        st->theap_cap = cap;
    }
    struct st_tent *h = st->theap, e = {.due = due, .off = off};
    size_t i = st->theap_n++;
    while (i > 0 && tent_less(&e, &h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = e;
    return GT_OK;
}

static void heap_pop(st_local_t *st)
{
    struct st_tent *h = st->theap, last = h[--st->theap_n];
    size_t n = st->theap_n, i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && tent_less(&h[c + 1], &h[c]))
            c++;
        if (!tent_less(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (n)
        h[i] = last;
}

/* Drops heap entries of resolved or rolling timers (recalled or rolled
 * ones would otherwise stay until their delivery time) and re-heapifies:
 * O(n), when about half the heap is dead.  Lock held. */
static void heap_compact(st_local_t *st, st_cs_t *cs)
{
    size_t k = 0;
    for (size_t i = 0; i < st->theap_n; i++) {
        struct st_tent e = st->theap[i];
        if (e.off >= cs->commit && e.off < cs->pop &&
            st_cs_at(cs, e.off)->state == ST_E_NONE)
            st->theap[k++] = e;
    }
    st->theap_n = k;
    st->theap_stale = 0;
    for (size_t i = k / 2; i-- > 0;) { /* sift down */
        struct st_tent *h = st->theap, x = h[i];
        size_t j = i;
        for (;;) {
            size_t c = 2 * j + 1;
            if (c >= k)
                break;
            if (c + 1 < k && tent_less(&h[c + 1], &h[c]))
                c++;
            if (!tent_less(&h[c], &x))
                break;
            h[j] = h[c];
            j = c;
        }
        h[j] = x;
    }
}

/* Takes newly published timer records into the window and the heap. */
static gt_err_t timer_catch_up(st_local_t *st, st_cs_t **out)
{
    st_topic_rt_t *t = st->sys_timer;
    st_cs_t *cs = t ? hold_cs(st, t) : NULL;
    if (!cs)
        return t ? GT_ENOMEM : GT_ENOTFOUND;
    st_cq_t *cq = &t->cq[0];
    while (cs->pop < st_cq_end(cq)) {
        uint64_t o = cs->pop;
        st_cq_entry_t ceb;
        const st_cq_entry_t *ce = st_cq_get(t, 0, o, &ceb);
        if (st_cs_extend(cs, o + 1, ST_E_NONE) != GT_OK)
            return GT_ENOMEM;
        if (ce && heap_push(st, ce->store_ts, o) != GT_OK) {
            cs->pop = o;
            return GT_ENOMEM;
        }
    }
    *out = cs;
    return GT_OK;
}

static gt_err_t half_catch_up(st_local_t *st, st_cs_t **out)
{
    st_topic_rt_t *t = st->sys_half;
    st_cs_t *cs = t ? hold_cs(st, t) : NULL;
    if (!cs)
        return t ? GT_ENOMEM : GT_ENOTFOUND;
    if (st_cs_extend(cs, st_cq_end(&t->cq[0]), ST_E_NONE) != GT_OK)
        return GT_ENOMEM;
    *out = cs;
    return GT_OK;
}

/* A system topic object by name, live or not; revived (logged) when the
 * commitlog holds records of it but its metadata record was lost. */
static st_topic_rt_t *sys_open(st_local_t *st, const char *name)
{
    for (size_t i = 0; i < st->ntopics; i++) {
        st_topic_rt_t *t = st->topics[i];
        if (strcmp(t->meta.name, name) != 0)
            continue;
        if (!t->deleted || (t->nq && st_cq_end(&t->cq[0]) > 0))
            return sys_topic(st, name);
        return NULL;
    }
    return NULL;
}

/* Window entries that were being fired or committed when the store went
 * down are pending again; check state is memory only. */
static void normalize(st_cs_t *cs)
{
    for (uint64_t o = cs->commit; o < cs->pop; o++) {
        st_went_t *e = st_cs_at(cs, o);
        if (e->state != ST_E_ACKED)
            *e = (st_went_t){.state = ST_E_NONE};
    }
    cs->min_deadline = INT64_MAX;
}

gt_err_t st_hold_open(st_local_t *st)
{
    st_cs_t *cs;
    gt_err_t rc = GT_OK;
    if (sys_open(st, ST_SYS_HALF) && (rc = half_catch_up(st, &cs)) == GT_OK)
        normalize(cs);
    if (!st->roll_span)
        st->roll_span = 1u << 20;
    if (rc == GT_OK && sys_open(st, ST_SYS_TIMER) &&
        (cs = hold_cs(st, st->sys_timer))) {
        normalize(cs);
        for (uint64_t o = cs->commit; o < cs->pop && rc == GT_OK; o++) {
            st_cq_entry_t ceb;
            const st_cq_entry_t *ce = st_cq_get(st->sys_timer, 0, o, &ceb);
            if (ce && st_cs_at(cs, o)->state == ST_E_NONE)
                rc = heap_push(st, ce->store_ts, o);
        }
        if (rc == GT_OK)
            rc = timer_catch_up(st, &cs);
        if (rc == GT_OK && cs->pop > cs->commit)
            GT_LOG(INFO, "store", "%zu delayed messages pending", st->theap_n);
    }
    return rc;
}

static void answer_recalls(struct st_rrecall *r, gt_err_t rc);

void st_hold_close(st_local_t *st)
{
    answer_recalls(st->roll_recalls, GT_ESHUTDOWN); /* none expected */
    st->roll_recalls = NULL;
    free(st->theap);
    st->theap = NULL;
    st->theap_n = st->theap_cap = 0;
}

uint64_t st_hold_keep_pos(st_local_t *st)
{
    uint64_t keep = UINT64_MAX;
    st_topic_rt_t *ts[2] = {st->sys_timer, st->sys_half};
    st_group_rt_t *g = ts[0] || ts[1] ? st_group_vivify(st, ST_SYS_GROUP)
                                      : NULL;
    for (int i = 0; i < 2 && g; i++) {
        if (!ts[i] || !ts[i]->nq)
            continue;
        st_cq_t *cq = &ts[i]->cq[0];
        st_cs_t *cs = st_cs_find(st, g, ts[i], 0, false);
        /* the commit offset is the first unresolved one */
        st_cq_entry_t ceb;
        const st_cq_entry_t *ce =
            st_cq_get(ts[i], 0, cs && cs->init && cs->commit > cq->min_off
                                    ? cs->commit : cq->min_off, &ceb);
        if (ce && ce->pos < keep)
            keep = ce->pos;
    }
    return keep;
}

/* ---- held records ------------------------------------------------------------ */
/* Removes the routing properties from a decoded held message and returns
 * their values (the real topic; the queue there). */
static void unwrap(st_message_t *m, const char **topic, int32_t *queue)
{
    uint32_t k = 0;
    *topic = NULL;
    *queue = 0;
    for (uint32_t i = 0; i < m->nprops; i++) {
        if (strcmp(m->props[i].key, PROP_RT) == 0)
            *topic = m->props[i].value;
        else if (strcmp(m->props[i].key, PROP_RQ) == 0)
            *queue = (int32_t)strtol(m->props[i].value, NULL, 10);
        else
            m->props[k++] = m->props[i];
    }
    m->nprops = k;
}

static int64_t txcheck_ms(const st_message_t *m)
{
    for (uint32_t i = 0; i < m->nprops; i++)
        if (strcmp(m->props[i].key, ST_PROP_TXCHECK) == 0) {
            char *end;
            long long v = strtoll(m->props[i].value, &end, 10);
            if (end != m->props[i].value && *end == 0 && v >= 0 &&
                v < (1LL << 40))
                return v;
        }
    return -1;
}

/* Finds the held record of (topic, msg_id) in system topic sys whose
 * resolution is still open: a timer being rolled first (its copy is
 * settled with it), else state NONE, else BUSY.  On GT_OK
 * *buf (owned) holds the record decoded in *m (routing properties
 * removed; m->topic is the real topic, m->queue_id its queue there). */
static gt_err_t held_find(st_local_t *st, st_topic_rt_t *sys, st_cs_t *cs,
                          const char *topic, const char *msg_id,
                          uint64_t *off, uint8_t **buf, st_message_t *m)
{
    st_index_iter_t *it = malloc(sizeof(*it));
    uint64_t pos;
    gt_err_t rc = GT_ENOTFOUND;
    int best = 0; /* rank of the state found: BUSY 1, NONE 2, ROLL 3 */
    *buf = NULL;
    if (!it)
        return GT_ENOMEM;
    st_index_iter_start(it, &st->index, st_hash64('I', msg_id));
    while (best < 3 && st_index_iter_next(it, &pos)) {
        uint8_t *b;
        st_message_t x;
        const char *rt;
        int32_t rq;
        if (pos < st->min_pos || st_read_unsized(st, pos, &b, &x) != GT_OK)
            continue;
        unwrap(&x, &rt, &rq);
        uint64_t o = x.queue_offset;
        uint8_t s = o >= cs->commit && o < cs->pop ? st_cs_at(cs, o)->state
                                                   : ST_E_ACKED;
        int rank = s == ST_E_ROLL ? 3 : s == ST_E_NONE ? 2
                   : s == ST_E_BUSY ? 1 : 0;
        if (strcmp(x.msg_id, msg_id) != 0 ||
            strcmp(x.topic, sys->meta.name) != 0 || !rt ||
            strcmp(rt, topic) != 0 || rank <= best) {
            free(b);
            continue;
        }
        best = rank;
        free(*buf);
        *buf = b;
        *m = x;
        m->topic = rt;
        m->queue_id = rq;
        m->delivery_ts_ms = x.delivery_ts_ms;
        *off = o;
        rc = GT_OK;
    }
    free(it);
    return rc;
}

/* ---- appends: routing ------------------------------------------------------ */
enum { DEST_TOPIC, DEST_TIMER, DEST_HALF, DEST_N };

/* One st_append() split by destination; owned by its parts, freed by the
 * last part_done() (on the writer / syncer thread, or the caller's on a
 * submission error). */
typedef struct join {
    pthread_mutex_t mu;
    int left;
    gt_err_t err;
    size_t n;
    st_append_item_t *items;
    int32_t *held_q;       /* queue in the real topic, -1: not held */
    st_append_cb cb;
    void *arg;
} join_t;

typedef struct part {
    join_t *j;
    size_t n;
    size_t idx[];
} part_t;

static void part_done(void *arg, gt_err_t err, const st_append_item_t *items,
                      size_t n)
{
    part_t *p = arg;
    join_t *j = p->j;
    pthread_mutex_lock(&j->mu);
    if (err != GT_OK && j->err == GT_OK)
        j->err = err;
    for (size_t k = 0; err == GT_OK && k < n && k < p->n; k++) {
        size_t i = p->idx[k];
        j->items[i] = items[k];
        if (j->held_q[i] >= 0) { /* offset assigned on release */
            j->items[i].queue_id = (uint32_t)j->held_q[i];
            j->items[i].queue_offset = 0;
        }
    }
    bool last = --j->left == 0;
    pthread_mutex_unlock(&j->mu);
    free(p);
    if (!last)
        return;
    j->cb(j->arg, j->err, j->err == GT_OK ? j->items : NULL,
          j->err == GT_OK ? j->n : 0);
    pthread_mutex_destroy(&j->mu);
    free(j->items);
    free(j->held_q);
    free(j);
}

/* Chooses the queue of a held message in its real topic, as the writer
 * would for a direct append; lock held. */
static gt_err_t held_queue(st_topic_rt_t *t, const st_message_t *m,
                           uint32_t rr, int32_t *q)
{
    uint32_t qc = t->meta.queue_count;
    if (m->queue_id >= 0 && (uint32_t)m->queue_id >= qc)
        return GT_EINVAL;
    if (m->queue_id >= 0)
        *q = m->queue_id;
    else if (m->msg_group && m->msg_group[0])
        *q = (int32_t)(gt_hash32(m->msg_group) % qc);
    else
        *q = (int32_t)(rr % qc);
    return GT_OK;
}

static gt_err_t hold_append(st_local_t *st, const char *topic,
                            const st_message_t *msgs, size_t n, int64_t now,
                            st_append_cb cb, void *arg)
{
    static const char *const dname[DEST_N] = {NULL, ST_SYS_TIMER,
                                              ST_SYS_HALF};
    gt_err_t rc = GT_OK;
    st_message_t *cp = calloc(n, sizeof(*cp));
    char (*qtxt)[12] = calloc(n, sizeof(*qtxt));
    uint8_t *dest = calloc(n, 1);
    join_t *j = calloc(1, sizeof(*j));
    part_t *parts[DEST_N] = {NULL};
    st_message_t *arr[DEST_N] = {NULL};
    if (!cp || !qtxt || !dest || !j ||
        !(j->items = calloc(n, sizeof(*j->items))) ||
        !(j->held_q = calloc(n, sizeof(*j->held_q)))) {
        rc = GT_ENOMEM;
        goto out;
    }
    pthread_mutex_lock(&st->lock);
    st_topic_rt_t *t = st_topic_find(st, topic);
    uint32_t rr = t ? t->rr++ : 0;
    if (st->closing)
        rc = GT_ESHUTDOWN;
    else if (!t)
        rc = GT_ENOTFOUND;
    else if (st_is_sys_name(topic))
        rc = GT_EINVAL;
    for (size_t i = 0; i < n && rc == GT_OK; i++) {
        const st_message_t *m = &msgs[i];
        dest[i] = m->tx_half ? DEST_HALF
                  : m->delivery_ts_ms > now ? DEST_TIMER : DEST_TOPIC;
        j->held_q[i] = -1;
        cp[i] = *m;
        if (dest[i] == DEST_TOPIC)
            continue;
        if (m->nprops + 2 > ST_MAX_PROPS) {
            rc = GT_EINVAL;
            break;
        }
        if ((rc = held_queue(t, m, rr, &j->held_q[i])) != GT_OK)
            break;
        snprintf(qtxt[i], sizeof(qtxt[i]), "%d", j->held_q[i]);
        cp[i].props[cp[i].nprops++] = (st_prop_t){PROP_RT, topic};
        cp[i].props[cp[i].nprops++] = (st_prop_t){PROP_RQ, qtxt[i]};
        cp[i].queue_id = 0;
        if (!sys_topic(st, dname[dest[i]]))
            rc = GT_ENOMEM;
    }
    pthread_mutex_unlock(&st->lock);
    if (rc != GT_OK)
        goto out;
    for (int d = 0; d < DEST_N; d++) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            k += dest[i] == d;
        if (!k)
            continue;
        if (!(parts[d] = calloc(1, sizeof(part_t) + k * sizeof(size_t))) ||
            !(arr[d] = malloc(k * sizeof(st_message_t)))) {
            rc = GT_ENOMEM;
            goto out;
        }
        parts[d]->j = j;
        for (size_t i = 0; i < n; i++)
            if (dest[i] == d) {
                parts[d]->idx[parts[d]->n] = i;
                arr[d][parts[d]->n++] = cp[i];
            }
        j->left++;
    }
    pthread_mutex_init(&j->mu, NULL);
    j->n = n;
    j->cb = cb;
    j->arg = arg;
    for (int d = 0; d < DEST_N; d++) {
        if (!parts[d])
            continue;
        part_t *p = parts[d];
        parts[d] = NULL; /* owned by the append now */
        (void)st_append_submit(st, d == DEST_TOPIC ? topic : dname[d], arr[d],
                               p->n, part_done, p, false);
    }
    j = NULL; /* the last part_done() frees it */
out:
    for (int d = 0; d < DEST_N; d++) {
        free(parts[d]);
        free(arr[d]);
    }
    if (j) {
        free(j->items);
        free(j->held_q);
        free(j);
    }
    free(cp);
    free(qtxt);
    free(dest);
    return rc;
}

void st_append_local(st_store_t *s, const char *topic,
                     const st_message_t *msgs, size_t n, st_append_cb cb,
                     void *arg)
{
    st_local_t *st = (st_local_t *)s;
    int64_t now = st_now_ms();
    bool held = false;
    for (size_t i = 0; msgs && n <= 1024 && i < n; i++)
        held = held || msgs[i].tx_half || msgs[i].delivery_ts_ms > now;
    if (!held || !topic) {
        (void)st_append_submit(st, topic, msgs, n, cb, arg, false);
        return;
    }
    gt_err_t rc = hold_append(st, topic, msgs, n, now, cb, arg);
    if (rc != GT_OK)
        cb(arg, rc, NULL, 0);
}

/* ---- firing timers ------------------------------------------------------------ */
typedef struct fire {
    st_local_t *st;
    size_t n;
    uint64_t off[];
} fire_t;

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Settles fired (or unfireable) timer offsets; lock held.  ok: resolved;
 * otherwise pending again in a second. */
static void fire_settle(st_local_t *st, uint64_t *offs, size_t n, bool ok)
{
    st_cs_t *cs = st->sys_timer ? hold_cs(st, st->sys_timer) : NULL;
    size_t k = 0;
    if (!cs)
        return;
    for (size_t i = 0; i < n; i++) {
        if (offs[i] < cs->commit || offs[i] >= cs->pop ||
            st_cs_at(cs, offs[i])->state != ST_E_BUSY)
            continue;
        offs[k++] = offs[i];
    }
    qsort(offs, k, sizeof(*offs), cmp_u64);
    if (ok && hold_resolve(st, st->sys_timer, cs, offs, k) == GT_OK) {
        atomic_fetch_add(&st->timers_fired, k);
        return;
    }
    int64_t again = st_now_ms() + 1000;
    for (size_t i = 0; i < k; i++) {
        st_went_t *e = st_cs_at(cs, offs[i]);
        if (e->state == ST_E_BUSY && heap_push(st, again, offs[i]) == GT_OK)
            e->state = ST_E_NONE;
    }
    if (k && st->theap_n)
        pthread_cond_signal(&st->svc_cond);
}

static void fire_done(void *arg, gt_err_t err, const st_append_item_t *items,
                      size_t n)
{
    fire_t *f = arg;
    st_local_t *st = f->st;
    (void)items;
    (void)n;
    if (err != GT_OK && !st_err_retriable(err))
        GT_LOG(WARN, "store", "delayed messages dropped: their topic refused "
               "them (%s)", gt_err_str(err));
    pthread_mutex_lock(&st->lock);
    fire_settle(st, f->off, f->n, err == GT_OK || !st_err_retriable(err));
    pthread_mutex_unlock(&st->lock);
    free(f);
}

/* Reads the records of due timers and appends their copies to the real
 * topics, consecutive ones of one topic as one batch.  No lock held. */
static void fire_batch(st_local_t *st, const uint64_t *offs,
                       const st_cq_entry_t *ces, size_t n, uint64_t *bad,
                       size_t *nbad)
{
    uint8_t **bufs = calloc(n, sizeof(*bufs));
    st_message_t *ms = calloc(n, sizeof(*ms));
    const char **rts = calloc(n, sizeof(*rts));
    bool *ok = calloc(n, sizeof(*ok));
    if (!bufs || !ms || !rts || !ok) {
        for (size_t i = 0; i < n; i++) /* retried like a failed append */
            bad[(*nbad)++] = offs[i] | (1ull << 63);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (st_log_read(st, ces[i].pos, ces[i].size, &bufs[i], &ms[i]) !=
            GT_OK) {
            bad[(*nbad)++] = offs[i]; /* unreadable: reported, dropped */
            continue;
        }
        unwrap(&ms[i], &rts[i], &ms[i].queue_id);
        ms[i].flags = 0;
        ms[i].tx_half = false;
        if (!rts[i]) {
            bad[(*nbad)++] = offs[i];
            continue;
        }
        ok[i] = true;
    }
    for (size_t i = 0; i < n;) {
        if (!ok[i]) {
            i++;
            continue;
        }
        size_t k = 0;
        fire_t *f = malloc(sizeof(*f) + n * sizeof(uint64_t));
        st_message_t *batch = malloc(n * sizeof(*batch));
        size_t j = i;
        /* one append must fit in a segment: a copy is at most its held
         * record plus a longer topic name */
        uint64_t bytes = 0, cap = st->seg_size - ST_SEG_HDR;
        for (; j < n && (!ok[j] || strcmp(rts[j], rts[i]) == 0); j++) {
            if (!ok[j])
                continue;
            bytes += ces[j].size + ST_NAME_MAX;
            if (k && bytes > cap)
                break;
            if (f && batch) {
                batch[k] = ms[j];
                f->off[k++] = offs[j];
            }
        }
        if (!f || !batch) {
            for (size_t x = i; x < j; x++)
                if (ok[x])
                    bad[(*nbad)++] = offs[x] | (1ull << 63);
            free(f);
        } else {
            f->st = st;
            f->n = k;
            (void)st_append_submit(st, rts[i], batch, k, fire_done, f, false);
        }
        free(batch);
        i = j;
    }
out:
    for (size_t i = 0; bufs && i < n; i++)
        free(bufs[i]);
    free(bufs);
    free(ms);
    free(rts);
    free(ok);
}

/* ---- rolling long timers forward ---------------------------------------------------
 * The internal window on the timer topic starts at the oldest pending
 * timer: behind a long one, fired timers keep their window entries (and
 * retention keeps their segments).  When the window is mostly resolved
 * and longer than st->roll_span, the service thread re-appends the oldest
 * pending timers (same record, same delivery time) and resolves the
 * originals once the copies are durable, so the window's start moves on.
 * While rolling, an original is ST_E_ROLL: the heap skips it (its copy
 * fires), and a recall resolves it -- roll_done() then resolves the copy
 * instead. */
#define ROLL_MAX 256
#define ROLL_SCAN 4096

typedef struct roll {
    st_local_t *st;
    size_t n;
    uint64_t off[];
} roll_t;

/* A recall of a timer being rolled: answered by roll_done() once the
 * original and its copy are both resolved.  On st->roll_recalls (lock). */
struct st_rrecall {
    struct st_rrecall *next;
    uint64_t off;
    st_done_cb cb;
    void *arg;
};

/* Unlinks the recalls waiting on offset off onto *out; lock held. */
static bool take_recalls(st_local_t *st, uint64_t off,
                         struct st_rrecall **out)
{
    bool any = false;
    for (struct st_rrecall **pp = &st->roll_recalls; *pp;) {
        struct st_rrecall *r = *pp;
        if (r->off != off) {
            pp = &r->next;
            continue;
        }
        *pp = r->next;
        r->next = *out;
        *out = r;
        any = true;
    }
    return any;
}

static void answer_recalls(struct st_rrecall *r, gt_err_t rc)
{
    while (r) {
        struct st_rrecall *next = r->next;
        r->cb(r->arg, rc);
        free(r);
        r = next;
    }
}

static void roll_done(void *arg, gt_err_t err, const st_append_item_t *items,
                      size_t n)
{
    roll_t *r = arg;
    st_local_t *st = r->st;
    st_cs_t *cs;
    uint64_t res[2 * ROLL_MAX];
    size_t k = 0;
    struct st_rrecall *recalled = NULL;
    gt_err_t rc = GT_ESHUTDOWN;
    pthread_mutex_lock(&st->lock);
    if ((rc = timer_catch_up(st, &cs)) == GT_OK) {
        for (size_t i = 0; i < r->n; i++) {
            uint64_t o = r->off[i];
            st_went_t *e = o >= cs->commit && o < cs->pop ? st_cs_at(cs, o)
                                                          : NULL;
            st_cq_entry_t ceb;
            const st_cq_entry_t *ce = st_cq_get(st->sys_timer, 0, o, &ceb);
            bool ok = err == GT_OK && i < n;
            if (take_recalls(st, o, &recalled)) { /* both go */
                res[k++] = o;
                if (ok)
                    res[k++] = items[i].queue_offset;
            } else if (ok) {
                res[k++] = o;
            } else if (e && e->state == ST_E_ROLL && ce &&
                       heap_push(st, ce->store_ts, o) == GT_OK) {
                *e = (st_went_t){.state = ST_E_NONE}; /* the original stays */
            }
        }
        qsort(res, k, sizeof(*res), cmp_u64);
        if ((rc = hold_resolve(st, st->sys_timer, cs, res, k)) == GT_OK)
            st->theap_stale += k; /* their heap entries are dead now */
    }
    st->rolls_out--;
    pthread_cond_signal(&st->svc_cond); /* the next pass may go */
    pthread_mutex_unlock(&st->lock);
    answer_recalls(recalled, rc);
    free(r);
}

/* Re-appends the records of offs[0..n) to the timer topic; no lock held.
 * fail[i]: record i could not be read or submitted (still ST_E_ROLL). */
static void roll_submit(st_local_t *st, const uint64_t *offs,
                        const st_cq_entry_t *ces, size_t n, bool *fail)
{
    uint8_t *bufs[ROLL_MAX] = {NULL};
    st_message_t *ms = calloc(n, sizeof(*ms));
    roll_t *r = NULL;
    uint64_t bytes = 0, cap = st->seg_size - ST_SEG_HDR;
    for (size_t i = 0; i < n; i++)
        fail[i] = true;
    for (size_t i = 0; ms && i < n;) {
        size_t k = 0;
        if (!(r = malloc(sizeof(*r) + n * sizeof(uint64_t))))
            break;
        for (bytes = 0; i < n; i++) {
            if (k && bytes + ces[i].size > cap)
                break;
            if (st_log_read(st, ces[i].pos, ces[i].size, &bufs[i], &ms[k]) !=
                GT_OK)
                continue; /* retried on the next pass */
            ms[k].flags = 0;
            ms[k].tx_half = false;
            bytes += ces[i].size;
            fail[i] = false;
            r->off[k++] = offs[i];
        }
        if (!k) {
            free(r);
            continue;
        }
        r->st = st;
        r->n = k;
        pthread_mutex_lock(&st->lock);
        st->rolls_out++;
        pthread_mutex_unlock(&st->lock);
        (void)st_append_submit(st, ST_SYS_TIMER, ms, k, roll_done, r, false);
    }
    for (size_t i = 0; i < n; i++)
        free(bufs[i]);
    free(ms);
}

/* One rolling pass when the window calls for it; lock held (dropped
 * while reading and submitting).  Returns true when it rolled some. */
static bool roll_pass(st_local_t *st, st_cs_t *cs, int64_t now)
{
    uint64_t span = cs->pop - cs->commit;
    uint64_t live = st->theap_n > st->theap_stale
                        ? st->theap_n - st->theap_stale : 0;
    /* one pass at a time: a copy not yet settled must not be rolled */
    if (st->rolls_out || span < st->roll_span || span < 4 * live)
        return false;
    uint64_t offs[ROLL_MAX];
    st_cq_entry_t ces[ROLL_MAX];
    bool fail[ROLL_MAX];
    size_t n = 0;
    for (uint64_t o = cs->commit, s = 0;
         o < cs->pop && n < ROLL_MAX && s < ROLL_SCAN; o++, s++) {
        st_went_t *e = st_cs_at(cs, o);
        st_cq_entry_t ceb;
        const st_cq_entry_t *ce = st_cq_get(st->sys_timer, 0, o, &ceb);
        if (e->state != ST_E_NONE || !ce || ce->store_ts <= now + 1000)
            continue; /* resolved, firing, or about to fire: leave it */
        e->state = ST_E_ROLL;
        offs[n] = o;
        ces[n++] = *ce;
    }
    if (!n)
        return false;
    pthread_mutex_unlock(&st->lock);
    roll_submit(st, offs, ces, n, fail);
    pthread_mutex_lock(&st->lock);
    struct st_rrecall *recalled = NULL;
    gt_err_t rc = GT_OK;
    bool submitted = false;
    for (size_t i = 0; i < n; i++) {
        st_went_t *e = offs[i] >= cs->commit && offs[i] < cs->pop
                           ? st_cs_at(cs, offs[i]) : NULL;
        submitted = submitted || !fail[i];
        if (!fail[i] || !e || e->state != ST_E_ROLL)
            continue;
        if (take_recalls(st, offs[i], &recalled))
            rc = hold_resolve(st, st->sys_timer, cs, &offs[i], 1);
        else if (heap_push(st, ces[i].store_ts, offs[i]) == GT_OK)
            *e = (st_went_t){.state = ST_E_NONE};
    }
    if (recalled) {
        pthread_mutex_unlock(&st->lock);
        answer_recalls(recalled, rc);
        pthread_mutex_lock(&st->lock);
    }
    return submitted; /* unreadable ones: not again at once */
}

int64_t st_hold_service(st_local_t *st, int64_t now)
{
    st_cs_t *cs;
    if (!st->sys_timer || st->closing)
        return INT64_MAX;
    if (timer_catch_up(st, &cs) != GT_OK)
        return 1000;
    if (st->theap_stale > 1024 && st->theap_stale > st->theap_n / 2)
        heap_compact(st, cs);
    uint64_t offs[FIRE_MAX];
    st_cq_entry_t *ces = malloc(FIRE_MAX * sizeof(*ces));
    size_t n = 0;
    while (ces && st->theap_n && st->theap[0].due <= now && n < FIRE_MAX) {
        struct st_tent e = st->theap[0];
        heap_pop(st);
        st_cq_entry_t ceb;
        const st_cq_entry_t *ce = st_cq_get(st->sys_timer, 0, e.off, &ceb);
        if (!ce || e.off < cs->commit || e.off >= cs->pop ||
            st_cs_at(cs, e.off)->state != ST_E_NONE)
            continue; /* recalled, or a stale retry entry */
        st_cs_at(cs, e.off)->state = ST_E_BUSY;
        offs[n] = e.off;
        ces[n++] = *ce;
    }
    if (n == 0) {
        free(ces);
        if (roll_pass(st, cs, now))
            return 0;
        if (!st->theap_n)
            return INT64_MAX;
        return st->theap[0].due > now ? st->theap[0].due - now : 1;
    }
    uint64_t *bad = malloc(n * sizeof(*bad));
    size_t nbad = 0;
    pthread_mutex_unlock(&st->lock);
    if (bad)
        fire_batch(st, offs, ces, n, bad, &nbad);
    pthread_mutex_lock(&st->lock);
    if (!bad) { /* out of memory: all of them again in a second */
        fire_settle(st, offs, n, false);
    } else {
        size_t k = 0;
        for (size_t i = 0; i < nbad; i++) /* retry (bit 63) first */
            if (bad[i] >> 63)
                offs[k++] = bad[i] & ~(1ull << 63);
        fire_settle(st, offs, k, false);
        k = 0;
        for (size_t i = 0; i < nbad; i++)
            if (!(bad[i] >> 63))
                offs[k++] = bad[i];
        if (k)
            GT_LOG(ERROR, "store", "%zu delayed messages unreadable; "
                   "dropped", k);
        fire_settle(st, offs, k, true);
    }
    free(bad);
    free(ces);
    return 0;
}

/* ---- recall ---------------------------------------------------------------------- */
void st_recall_local(st_store_t *s, const char *topic, const char *msg_id,
                     st_done_cb cb, void *arg)
{
    st_local_t *st = (st_local_t *)s;
    st_cs_t *cs = NULL;
    uint8_t *buf = NULL;
    st_message_t m;
    uint64_t off = 0;
    gt_err_t rc = GT_ENOTFOUND;
    if (!topic || !msg_id || !*msg_id) {
        cb(arg, GT_EINVAL);
        return;
    }
    pthread_mutex_lock(&st->lock);
    if (st->sys_timer && timer_catch_up(st, &cs) == GT_OK)
        rc = held_find(st, st->sys_timer, cs, topic, msg_id, &off, &buf, &m);
    uint8_t state = rc == GT_OK ? st_cs_at(cs, off)->state : ST_E_ACKED;
    if (rc == GT_OK && state == ST_E_ROLL && m.delivery_ts_ms > st_now_ms()) {
        /* being rolled: answered once the original and its copy are both
         * resolved, so a crash cannot leave the copy pending */
        struct st_rrecall *w = malloc(sizeof(*w));
        if (w) {
            *w = (struct st_rrecall){.next = st->roll_recalls, .off = off,
                                     .cb = cb, .arg = arg};
            st->roll_recalls = w;
            pthread_mutex_unlock(&st->lock);
            free(buf);
            return;
        }
        rc = GT_ENOMEM;
    } else if (rc == GT_OK && state == ST_E_NONE &&
               m.delivery_ts_ms > st_now_ms()) {
        rc = hold_resolve(st, st->sys_timer, cs, &off, 1);
        st->theap_stale += rc == GT_OK;
        if (st->theap_stale > 1024 && st->theap_stale > st->theap_n / 2)
            heap_compact(st, cs);
    } else if (rc == GT_OK) {
        rc = GT_EINVAL; /* its time has come: being delivered */
    }
    if (rc == GT_ENOTFOUND) { /* delivered already, or never delayed? */
        st_index_iter_t *it = malloc(sizeof(*it));
        uint64_t pos;
        if (it)
            st_index_iter_start(it, &st->index, st_hash64('I', msg_id));
        while (it && rc == GT_ENOTFOUND && st_index_iter_next(it, &pos)) {
            uint8_t *b;
            st_message_t x;
            if (pos < st->min_pos || st_read_unsized(st, pos, &b, &x) != GT_OK)
                continue;
            if (strcmp(x.msg_id, msg_id) == 0 && strcmp(x.topic, topic) == 0)
                rc = GT_EINVAL;
            free(b);
        }
        free(it);
    }
    pthread_mutex_unlock(&st->lock);
    free(buf);
    cb(arg, rc);
}

/* ---- transactions ------------------------------------------------------------------ */
typedef struct commit_ctx {
    st_local_t *st;
    uint64_t off;
    st_done_cb cb;
    void *arg;
} commit_ctx_t;

static void commit_done(void *arg, gt_err_t err, const st_append_item_t *items,
                        size_t n)
{
    commit_ctx_t *c = arg;
    st_local_t *st = c->st;
    st_cs_t *cs = NULL;
    (void)items;
    (void)n;
    pthread_mutex_lock(&st->lock);
    gt_err_t rc = half_catch_up(st, &cs);
    if (rc == GT_OK && c->off >= cs->commit && c->off < cs->pop &&
        st_cs_at(cs, c->off)->state == ST_E_BUSY) {
        if (err == GT_OK)
            rc = hold_resolve(st, st->sys_half, cs, &c->off, 1);
        else
            st_cs_at(cs, c->off)->state = ST_E_NONE; /* still unresolved */
    }
    pthread_mutex_unlock(&st->lock);
    c->cb(c->arg, err != GT_OK ? err : rc);
    free(c);
}

void st_tx_end_local(st_store_t *s, const char *topic, const char *msg_id,
                     bool commit, st_done_cb cb, void *arg)
{
    st_local_t *st = (st_local_t *)s;
    st_cs_t *cs = NULL;
    uint8_t *buf = NULL;
    st_message_t m;
    uint64_t off = 0;
    commit_ctx_t *c = NULL;
    gt_err_t rc = GT_ENOTFOUND;
    if (!topic || !msg_id || !*msg_id) {
        cb(arg, GT_EINVAL);
        return;
    }
    if (commit && !(c = calloc(1, sizeof(*c)))) {
        cb(arg, GT_ENOMEM);
        return;
    }
    pthread_mutex_lock(&st->lock);
    if (st->sys_half && half_catch_up(st, &cs) == GT_OK)
        rc = held_find(st, st->sys_half, cs, topic, msg_id, &off, &buf, &m);
    if (rc == GT_OK && st_cs_at(cs, off)->state != ST_E_NONE)
        rc = GT_ENOTFOUND; /* being committed by another call */
    if (rc == GT_OK && !commit)
        rc = hold_resolve(st, st->sys_half, cs, &off, 1);
    else if (rc == GT_OK)
        st_cs_at(cs, off)->state = ST_E_BUSY;
    pthread_mutex_unlock(&st->lock);
    if (rc != GT_OK || !commit) {
        free(buf);
        free(c);
        cb(arg, rc);
        return;
    }
    /* the copy: as if appended now, through the routing (delay applies) */
    c->st = st;
    c->off = off;
    c->cb = cb;
    c->arg = arg;
    m.flags = 0;
    m.tx_half = false;
    st_append_local(s, topic, &m, 1, commit_done, c);
    free(buf);
}

void st_tx_pending_local(st_store_t *s, int64_t unresolved_for_ms,
                         uint32_t max, st_msgs_cb cb, void *arg)
{
    st_local_t *st = (st_local_t *)s;
    st_message_t *ms = NULL;
    uint8_t **bufs = NULL;
    size_t n = 0;
    st_cs_t *cs = NULL;
    if (max < 1 || unresolved_for_ms < 0) {
        cb(arg, GT_EINVAL, NULL, 0, 0);
        return;
    }
    if (max > ST_TX_PENDING_MAX)
        max = ST_TX_PENDING_MAX;
    ms = calloc(max, sizeof(*ms));
    bufs = calloc(max, sizeof(*bufs));
    if (!ms || !bufs) {
        free(ms);
        free(bufs);
        cb(arg, GT_ENOMEM, NULL, 0, 0);
        return;
    }
    pthread_mutex_lock(&st->lock);
    int64_t now = st_now_ms();
    if (st->sys_half && half_catch_up(st, &cs) == GT_OK) {
        for (uint64_t o = cs->commit; o < cs->pop && n < max; o++) {
            st_went_t *e = st_cs_at(cs, o);
            st_cq_entry_t ceb;
            const st_cq_entry_t *ce = st_cq_get(st->sys_half, 0, o, &ceb);
            uint8_t *b = NULL;
            st_message_t m;
            if (e->state != ST_E_NONE || !ce)
                continue;
            if (e->gen == 0) { /* first look: read its own check interval */
                if (st_log_read(st, ce->pos, ce->size, &b, &m) != GT_OK)
                    continue;
                int64_t v = txcheck_ms(&m);
                e->gen = v < 0 ? 1 : (uint64_t)v + 2;
            }
            int64_t since = e->deadline ? e->deadline : ce->store_ts;
            int64_t thr = e->gen >= 2 ? (int64_t)e->gen - 2 : unresolved_for_ms;
            if (now - since < thr) {
                free(b);
                continue;
            }
            if (!b && st_log_read(st, ce->pos, ce->size, &b, &m) != GT_OK)
                continue;
            const char *rt;
            unwrap(&m, &rt, &m.queue_id);
            if (!rt) {
                free(b);
                continue;
            }
            m.topic = rt;
            m.tx_checks = e->attempt;
            ms[n] = m;
            bufs[n++] = b;
        }
    }
    pthread_mutex_unlock(&st->lock);
    cb(arg, GT_OK, ms, n, 0);
    for (size_t i = 0; i < n; i++)
        free(bufs[i]);
    free(ms);
    free(bufs);
}

void st_tx_checked_local(st_store_t *s, const char *topic, const char *msg_id,
                         uint32_t seen_checks, uint32_t max_checks,
                         st_done_cb cb, void *arg)
{
    st_local_t *st = (st_local_t *)s;
    st_cs_t *cs = NULL;
    uint8_t *buf = NULL;
    st_message_t m;
    uint64_t off = 0;
    gt_err_t rc = GT_ENOTFOUND;
    if (!topic || !msg_id || !*msg_id) {
        cb(arg, GT_EINVAL);
        return;
    }
    pthread_mutex_lock(&st->lock);
    if (st->sys_half && half_catch_up(st, &cs) == GT_OK)
        rc = held_find(st, st->sys_half, cs, topic, msg_id, &off, &buf, &m);
    if (rc == GT_OK && st_cs_at(cs, off)->state != ST_E_NONE)
        rc = GT_ENOTFOUND;
    if (rc == GT_OK && seen_checks != ST_TX_CHECKS_ANY &&
        st_cs_at(cs, off)->attempt != seen_checks)
        rc = GT_EBUSY; /* another front end claimed this check */
    if (rc == GT_OK) {
        st_went_t *e = st_cs_at(cs, off);
        e->attempt++;
        e->deadline = st_now_ms();
        if (max_checks && e->attempt >= max_checks &&
            (rc = hold_resolve(st, st->sys_half, cs, &off, 1)) == GT_OK) {
            st_topic_rt_t *t = st_topic_find(st, topic);
            if (t)
                t->tx_discarded++;
            GT_LOG(INFO, "store", "half message %s of %s discarded after %u "
                   "checks", msg_id, topic, max_checks);
            rc = GT_ERANGE;
        }
    }
    pthread_mutex_unlock(&st->lock);
    free(buf);
    cb(arg, rc);
}
