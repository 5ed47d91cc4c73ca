/* Queue length limits: x-max-length, x-max-length-bytes, x-overflow (see
 * gw_maxlen.h). */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "gt_log.h"
#include "gw_dlx.h"
#include "gw_maxlen.h"
#include "gw_rec.h"
#include "gw_trace_int.h"

#define DROP_MAX 32u              /* head messages per drop pop */
#define DROP_RETRY_MS 50          /* a drop pop that found no head: again */
#define SCAN_INVISIBLE_MS 600000LL /* start: the counting pass's pops */

bool gw_maxlen_init(gw_queue_t *q)
{
    const gw_qargs_t *a = &q->args;

    if (!a->has_max_length && !a->has_max_length_bytes)
        return true;
    if (q->lim == NULL && (q->lim = calloc(1, sizeof(*q->lim))) == NULL)
        return false;
    q->lim->max_len = a->has_max_length ? a->max_length : -1;
    q->lim->max_bytes = a->has_max_length_bytes ? a->max_length_bytes : -1;
    q->lim->overflow = a->overflow;
    return true;
}

void gw_maxlen_free(gw_queue_t *q)
{
    free(q->lim);
    q->lim = NULL;
}

uint64_t gw_maxlen_body_len(const uint8_t *p, size_t n)
{
    gw_rec_t r;

    return gw_rec_decode(p, n, &r) ? r.body_len : n;
}

static bool over(const gw_qlimit_t *l)
{
    return (l->max_len >= 0 && l->ready > l->max_len) ||
           (l->max_bytes >= 0 && l->bytes > l->max_bytes);
}

bool gw_maxlen_admit(gw_queue_t *q, uint64_t blen)
{
    gw_qlimit_t *l = q->lim;

    if (l == NULL)
        return true;
    if (l->overflow != GW_OVERFLOW_DROP_HEAD &&
        ((l->max_len >= 0 && l->ready + 1 > l->max_len) ||
         (l->max_bytes >= 0 && l->bytes + (int64_t)blen > l->max_bytes)))
        return false;
    l->ready++;
    l->bytes += (int64_t)blen;
    l->fly_bytes += (int64_t)blen;
    return true;
}

/* ---- drop-head ---------------------------------------------------------- */

typedef struct {
    gw_op_t op;
    gw_queue_t *q; /* ref */
    size_t n;
    gw_popped_t msgs[]; /* (gw_rec.h) */
} drop_op_t;

static void enforce(gw_queue_t *q);

static void drop_fn(gw_op_t *op)
{
    drop_op_t *o = (drop_op_t *)op;
    gw_queue_t *q = o->q;
    gw_broker_t *b = op->b;

    if (op->err != GT_OK && op->err != GT_ENOTFOUND)
        GT_LOG(WARN, "amqp", "dropping the head of %s failed: %s", q->id, gt_err_str(op->err));
    for (size_t i = 0; i < o->n; i++) {
        gw_popped_t *p = &o->msgs[i];
        if (q->lim != NULL) /* (a copy that failed counts as no bytes) */
            gw_maxlen_taken(q, p->body != NULL ? gw_maxlen_body_len(p->body, p->len) : 0);
        if (q->gone) {
            free(p->body);
            continue;
        }
        if (p->body != NULL)
            gw_trace_dead(q, p->msg_id, p->body, p->len, p->attempt, GW_DL_MAXLEN);
        if (p->body != NULL && q->args.has_dlx) /* dead-lettered, reason maxlen */
            gw_dead_letter_ack(q, p->body, p->len, GW_DL_MAXLEN, p->handle);
        else
            gw_msg_ack(b, q, p->handle);
        free(p->body);
    }
    if (q->lim != NULL) {
        q->lim->dropping = false;
        if (o->n > 0) {
            enforce(q);
        } else if (over(q->lim) && !q->gone && !b->stopping && q->kick_ev != NULL) {
            /* Over the limit but no head was visible (held for a moment
             * by a sweep, the start-up recount or a release in flight):
             * look again shortly (kick_cb calls gw_maxlen_kick), instead
             * of waiting for the next publish. */
            struct timeval tv = {0, DROP_RETRY_MS * 1000};
            event_add(q->kick_ev, &tv);
        }
    }
    gw_queue_unref(q);
    free(o);
}

static void drop_cb(void *arg, gt_err_t err, const st_popped_t *msgs, size_t n)
{
    drop_op_t *o = arg, *big;

    o->op.err = err;
    if (err == GT_OK && n > 0) {
        if ((big = gw_popped_take(o, offsetof(drop_op_t, msgs), msgs, n)) == NULL) {
            /* cannot note them: they come back when their invisibility
             * ends; nothing is counted */
            o->op.err = GT_ENOMEM;
            gw_op_post(&o->op);
            return;
        }
        o = big;
        o->n = n;
    }
    gw_op_post(&o->op);
}

/* drop-head: while q is over a limit, pops its head (the next message a
 * consumer would get) and drops it; one pop in flight at a time. */
static void enforce(gw_queue_t *q)
{
    gw_qlimit_t *l = q->lim;
    gw_broker_t *b = q->b;
    drop_op_t *o;
    st_pop_req_t req;
    int64_t n = 1;

    if (l == NULL || l->overflow != GW_OVERFLOW_DROP_HEAD || l->dropping || q->gone || !q->ready ||
        b->stopping || !over(l))
        return;
    if (l->max_len >= 0 && l->ready - l->max_len > n)
        n = l->ready - l->max_len;
    if (n > DROP_MAX)
        n = DROP_MAX;
    if ((o = gw_op_new(b, sizeof(*o), drop_fn)) == NULL)
        return;
    gw_queue_ref(q);
    o->q = q;
    l->dropping = true;
    memset(&req, 0, sizeof(req));
    req.group = q->id;
    req.topic = q->id;
    req.queue_id = ST_QUEUE_ANY;
    req.high_first = q->args.max_priority > 0;
    req.max = (uint32_t)n;
    req.invisible_ms = b->invisible_ms;
    st_pop(b->store, &req, drop_cb, o);
}

void gw_maxlen_kick(gw_queue_t *q)
{
    enforce(q);
}

void gw_maxlen_appended(gw_queue_t *q, uint64_t blen, bool ok)
{
    gw_qlimit_t *l = q->lim;

    if (l == NULL)
        return;
    l->fly_bytes -= (int64_t)blen;
    if (!ok) {
        l->ready--;
        l->bytes -= (int64_t)blen;
        return;
    }
    enforce(q);
}

void gw_maxlen_taken(gw_queue_t *q, uint64_t blen)
{
    gw_qlimit_t *l = q->lim;

    if (l == NULL)
        return;
    l->ready = l->ready > 0 ? l->ready - 1 : 0;
    l->bytes = l->bytes > (int64_t)blen ? l->bytes - (int64_t)blen : 0;
}

void gw_maxlen_back(gw_queue_t *q, uint64_t blen)
{
    gw_qlimit_t *l = q->lim;

    if (l == NULL)
        return;
    l->ready++;
    l->bytes += (int64_t)blen;
    enforce(q);
}

void gw_maxlen_purged(gw_queue_t *q, uint64_t n)
{
    gw_qlimit_t *l = q->lim;

    if (l == NULL)
        return;
    l->ready = l->ready > (int64_t)n ? l->ready - (int64_t)n : 0;
    /* What is left are appends that the purge did not reach: at most the
     * bytes still in flight (exact when none were). */
    if (l->ready == 0)
        l->bytes = 0;
    else if (l->bytes > l->fly_bytes)
        l->bytes = l->fly_bytes;
}

/* ---- the counts at start -------------------------------------------------- */

typedef struct {
    gw_op_t op;
    gw_queue_t *q; /* ref */
    void (*done)(gw_queue_t *q);
    bool stats;      /* counting by st_stats */
    uint64_t ready;  /* st_stats' answer */
    uint32_t got;    /* the last pop's messages */
    size_t n, cap;   /* handles popped so far */
    char (*handles)[ST_HANDLE_MAX];
    uint64_t bytes;
    uint64_t pop_bytes;
    char (*batch)[ST_HANDLE_MAX];
} count_op_t;

static void count_fn(gw_op_t *op);

static void count_stats_cb(void *arg, gt_err_t err, const st_stats_t *s)
{
    count_op_t *o = arg;

    o->op.err = err;
    o->ready = err == GT_OK ? s->ready : 0;
    gw_op_post(&o->op);
}

static void count_pop_cb(void *arg, gt_err_t err, const st_popped_t *msgs, size_t n)
{
    count_op_t *o = arg;

    o->op.err = err;
    o->got = 0;
    o->pop_bytes = 0;
    if (err == GT_OK && n > 0 && (o->batch = calloc(n, sizeof(*o->batch))) != NULL) {
        for (size_t i = 0; i < n; i++) {
            snprintf(o->batch[i], sizeof(o->batch[i]), "%s", msgs[i].handle);
            o->pop_bytes += gw_maxlen_body_len(msgs[i].msg.body, msgs[i].msg.body_len);
        }
        o->got = (uint32_t)n;
    } else if (err == GT_OK && n > 0) {
        o->op.err = GT_ENOMEM; /* they come back when their invisibility ends */
    }
    gw_op_post(&o->op);
}

static void count_pop(count_op_t *o)
{
    gw_broker_t *b = o->op.b;
    st_pop_req_t req;

    pthread_mutex_lock(&b->mu);
    b->ops++;
    pthread_mutex_unlock(&b->mu);
    memset(&req, 0, sizeof(req));
    req.group = o->q->id;
    req.topic = o->q->id;
    req.queue_id = ST_QUEUE_ANY;
    req.high_first = o->q->args.max_priority > 0;
    req.max = ST_POP_MAX;
    req.invisible_ms = SCAN_INVISIBLE_MS;
    st_pop(b->store, &req, count_pop_cb, o);
}

static void count_fn(gw_op_t *op)
{
    count_op_t *o = (count_op_t *)op;
    gw_queue_t *q = o->q;
    gw_broker_t *b = op->b;
    bool more = false;

    if (o->stats) {
        if (op->err != GT_OK)
            GT_LOG(WARN, "amqp", "cannot count the ready messages of %s: %s", q->id,
                   gt_err_str(op->err));
        else if (q->lim != NULL)
            q->lim->ready = (int64_t)o->ready;
    } else {
        if (op->err == GT_OK && o->got > 0 && o->n + o->got > o->cap) {
            size_t cap = o->cap ? o->cap * 2 : 256;
            void *p = realloc(o->handles, cap * sizeof(*o->handles));
            if (p == NULL) {
                op->err = GT_ENOMEM;
            } else {
                o->handles = p;
                o->cap = cap;
            }
        }
        if (op->err == GT_OK && o->got > 0) {
            memcpy(o->handles + o->n, o->batch, o->got * sizeof(*o->batch));
            o->n += o->got;
            o->bytes += o->pop_bytes;
        }
        free(o->batch);
        o->batch = NULL;
        more = op->err == GT_OK && o->got == ST_POP_MAX && !b->stopping;
        if (op->err != GT_OK)
            GT_LOG(WARN, "amqp", "cannot count the ready bytes of %s: %s", q->id,
                   gt_err_str(op->err));
        if (!more) {
            /* every ready message seen: give them back as they were */
            for (size_t i = 0; i < o->n; i++)
                gw_msg_release(b, q, o->handles[i]);
            if (q->lim != NULL) {
                q->lim->ready = (int64_t)o->n;
                q->lim->bytes = (int64_t)o->bytes;
            }
        }
    }
    if (more) {
        count_pop(o);
        return;
    }
    if (q->lim != NULL)
        GT_LOG(INFO, "amqp",
               "queue '%.*s': %lld ready messages, %lld body bytes (limits %lld / %lld)",
               (int)q->nlen, q->name, (long long)q->lim->ready, (long long)q->lim->bytes,
               (long long)q->lim->max_len, (long long)q->lim->max_bytes);
    free(o->handles);
    o->done(q);
    gw_queue_unref(q);
    free(o);
}

bool gw_maxlen_recount(gw_queue_t *q, void (*done)(gw_queue_t *q))
{
    gw_broker_t *b = q->b;
    count_op_t *o;

    if (q->lim == NULL || (o = gw_op_new(b, sizeof(*o), count_fn)) == NULL)
        return false;
    gw_queue_ref(q);
    o->q = q;
    o->done = done;
    if (q->lim->max_bytes < 0) {
        o->stats = true;
        st_stats(b->store, q->id, q->id, count_stats_cb, o);
        return true;
    }
    pthread_mutex_lock(&b->mu);
    b->ops--; /* count_pop counts each pop */
    pthread_mutex_unlock(&b->mu);
    count_pop(o);
    return true;
}
