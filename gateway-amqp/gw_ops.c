/* The migration operations on AMQP queues: pause / resume, a delivery
 * rate limit, graded retry delays, x-delayed-retry-*, per-vhost body
 * limits and per-queue counters.  See gw_ops.h and docs/amqp.md.
 *
 * Each queue has a gw_qops_t (q->ops) from gw_queue_add until its last
 * reference goes; while the queue is in the map it is also in the
 * registry's list, which /metrics reads on an HTTP thread under
 * opsr->mu.  Run-time overrides (the operator's pause / resume) are
 * records of the store's metadata space:
 *   namespace "amqp.qops", key: vhost (u8 length + bytes) + queue name,
 *   value: 0x01 (version), paused (0 or 1). */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <regex.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gt_log.h"
#include "gw_maxlen.h"
#include "gw_ops.h"

#define GW_NS_QOPS "amqp.qops"
#define GW_RETRY_STEPS 32u
#define GW_ADMIN_WAIT_MS 5000

typedef enum { DR_DISABLED, DR_ALL, DR_FAILED, DR_RETURNED } dr_type_t;

typedef struct {
    char *vhost, *queue; /* queue NULL: re */
    regex_t re;
    bool has_re, paused;
    double rate, burst;
    uint32_t nretry;
    int64_t retry_ms[GW_RETRY_STEPS];
} pol_t;

typedef struct {
    char *vhost;
    uint64_t max;
} vlim_t;

/* An operator's pause / resume of a queue (persisted). */
typedef struct ovr {
    struct ovr *next;
    char *vhost, *name;
    size_t nlen;
    bool paused;
} ovr_t;

typedef struct gw_opsreg {
    pthread_mutex_t mu; /* guards list (the rest is the loop's) */
    gw_qops_t *list;
    pol_t *pols;
    size_t npols;
    vlim_t *lims;
    size_t nlims;
    ovr_t *ovr;
} gw_opsreg_t;

struct gw_qops {
    gw_qops_t *prev, *next;
    bool listed;
    gw_queue_t *q;
    char vhost[256];
    char name[257];
    _Atomic uint64_t n[GW_QS_COUNT];
    atomic_bool paused;
    const pol_t *pol;
    double tokens;
    int64_t tok_at;
    struct event *rate_ev, *retry_ev;
    int64_t retry_due;
    dr_type_t dr_type;
    int64_t dr_min, dr_max;
};

static int64_t now_ms(void) { return gw_now_ms(); }

const char *gw_queue_vhost(const gw_queue_t *q)
{
    return q->vh->name;
}

void gw_qstats_inc(const gw_queue_t *q, gw_qstat_t which, uint64_t n)
{
    if (q != NULL && q->ops != NULL && which < GW_QS_COUNT)
        atomic_fetch_add_explicit(&q->ops->n[which], n, memory_order_relaxed);
}

/* ---- broker life ------------------------------------------------------- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    bool done;
    gt_err_t rc;
    /* gw_ops_new's listing */
    gw_opsreg_t *reg;
    uint8_t after[1024];
    uint32_t after_len;
    bool more;
} waiter_t;

static waiter_t *waiter_new(void)
{
    waiter_t *w = calloc(1, sizeof(*w));

    if (w == NULL)
        return NULL;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->refs = 2; /* the waiter and the answer */
    return w;
}

static void waiter_unref(waiter_t *w)
{
    bool last;

    pthread_mutex_lock(&w->mu);
    last = --w->refs == 0;
    pthread_mutex_unlock(&w->mu);
    if (last) {
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
        free(w);
    }
}

static void waiter_done(waiter_t *w, gt_err_t rc)
{
    pthread_mutex_lock(&w->mu);
    w->done = true;
    w->rc = rc;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Waits up to ms for the answer; GT_ETIMEDOUT without it. */
static gt_err_t waiter_wait(waiter_t *w, int64_t ms)
{
    struct timespec ts;
    gt_err_t rc;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&w->mu);
    while (!w->done && pthread_cond_timedwait(&w->cv, &w->mu, &ts) != ETIMEDOUT)
        ;
    rc = w->done ? w->rc : GT_ETIMEDOUT;
    pthread_mutex_unlock(&w->mu);
    return rc;
}

static ovr_t *ovr_find(gw_opsreg_t *r, const char *vhost, const char *name, size_t nlen)
{
    for (ovr_t *o = r->ovr; o != NULL; o = o->next)
        if (strcmp(o->vhost, vhost) == 0 && o->nlen == nlen && memcmp(o->name, name, nlen) == 0)
            return o;
    return NULL;
}

static bool ovr_set(gw_opsreg_t *r, const char *vhost, const char *name, size_t nlen,
                    bool paused)
{
    ovr_t *o = ovr_find(r, vhost, name, nlen);

    if (o == NULL) {
        if ((o = calloc(1, sizeof(*o))) == NULL || (o->vhost = strdup(vhost)) == NULL ||
            (o->name = malloc(nlen + 1)) == NULL) {
            if (o != NULL)
                free(o->vhost);
            free(o);
            return false;
        }
        memcpy(o->name, name, nlen);
        o->name[nlen] = '\0';
        o->nlen = nlen;
        o->next = r->ovr;
        r->ovr = o;
    }
    o->paused = paused;
    return true;
}

static void list_cb(void *arg, gt_err_t err, const st_meta_rec_t *recs, size_t n, bool more)
{
    waiter_t *w = arg;

    for (size_t i = 0; err == GT_OK && i < n; i++) {
        const uint8_t *k = recs[i].key, *v = recs[i].value;
        char vh[256];
        if (recs[i].key_len < 1 || (size_t)k[0] + 1 > recs[i].key_len || recs[i].value_len < 2 ||
            v[0] != 1)
            continue;
        memcpy(vh, k + 1, k[0]);
        vh[k[0]] = '\0';
        if (!ovr_set(w->reg, vh, (const char *)k + 1 + k[0], recs[i].key_len - 1 - k[0],
                     v[1] != 0))
            err = GT_ENOMEM;
    }
    w->more = err == GT_OK && more && n > 0;
    if (w->more) {
        uint32_t kl = recs[n - 1].key_len;
        w->after_len = kl <= sizeof(w->after) ? kl : 0;
        memcpy(w->after, recs[n - 1].key, w->after_len);
        w->more = w->after_len > 0;
    }
    pthread_mutex_lock(&w->mu);
    w->done = true;
    w->rc = err == GT_ENOTFOUND ? GT_OK : err;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Reads the operator's overrides back (before the loop runs). */
static gt_err_t load_overrides(gw_broker_t *b)
{
    waiter_t *w = waiter_new();
    gt_err_t rc = GT_OK;

    if (w == NULL)
        return GT_ENOMEM;
    w->refs = 1;
    w->reg = b->opsr;
    do {
        st_meta_list_req_t req;
        memset(&req, 0, sizeof(req));
        req.ns = GW_NS_QOPS;
        req.after = w->after_len > 0 ? w->after : NULL;
        req.after_len = w->after_len;
        w->done = false;
        st_meta_list(b->store, &req, list_cb, w);
        pthread_mutex_lock(&w->mu);
        while (!w->done)
            pthread_cond_wait(&w->cv, &w->mu);
        rc = w->rc;
        pthread_mutex_unlock(&w->mu);
    } while (rc == GT_OK && w->more);
    waiter_unref(w);
    return rc;
}

bool gw_ops_new(gw_broker_t *b, const cfg_amqp_t *amqp)
{
    gw_opsreg_t *r = calloc(1, sizeof(*r));
    size_t np = amqp != NULL ? amqp->queue_policies.n : 0;
    size_t nl = amqp != NULL ? amqp->vhost_limits.n : 0;
    gt_err_t rc;

    if (r == NULL)
        return false;
    pthread_mutex_init(&r->mu, NULL);
    b->opsr = r;
    if ((np > 0 && (r->pols = calloc(np, sizeof(*r->pols))) == NULL) ||
        (nl > 0 && (r->lims = calloc(nl, sizeof(*r->lims))) == NULL))
        return false;
    for (size_t i = 0; i < np; i++) {
        const cfg_amqp_qpolicy_t *c = &amqp->queue_policies.v[i];
        pol_t *p = &r->pols[r->npols++]; /* freed by gw_ops_free whatever fails */
        if ((p->vhost = strdup(c->vhost)) == NULL ||
            (c->queue != NULL && (p->queue = strdup(c->queue)) == NULL))
            return false;
        if (c->queue == NULL) {
            if (regcomp(&p->re, c->pattern[0] != '\0' ? c->pattern : "^$",
                        REG_EXTENDED | REG_NOSUB) != 0)
                return false; /* the config checked it */
            p->has_re = true;
        }
        p->paused = c->paused;
        p->rate = c->rate_limit;
        p->burst = c->burst > 0 ? c->burst : c->rate_limit;
        for (size_t k = 0; k < c->retry_delays.n && k < GW_RETRY_STEPS; k++)
            if (cfg_duration_ms(c->retry_delays.v[k], &p->retry_ms[p->nretry], NULL, 0) == GT_OK)
                p->nretry++;
    }
    for (size_t i = 0; i < nl; i++) {
        if ((r->lims[i].vhost = strdup(amqp->vhost_limits.v[i].vhost)) == NULL)
            return false;
        r->lims[i].max = (uint64_t)amqp->vhost_limits.v[i].max_message_size;
        r->nlims++;
    }
    if ((rc = load_overrides(b)) != GT_OK) {
        GT_LOG(ERROR, "amqp", "cannot read the queues' pause records: %s", gt_err_str(rc));
        return false;
    }
    return true;
}

void gw_ops_free(gw_broker_t *b)
{
    gw_opsreg_t *r = b->opsr;

    if (r == NULL)
        return;
    for (size_t i = 0; i < r->npols; i++) {
        free(r->pols[i].vhost);
        free(r->pols[i].queue);
        if (r->pols[i].has_re)
            regfree(&r->pols[i].re);
    }
    free(r->pols);
    for (size_t i = 0; i < r->nlims; i++)
        free(r->lims[i].vhost);
    free(r->lims);
    while (r->ovr != NULL) {
        ovr_t *o = r->ovr;
        r->ovr = o->next;
        free(o->vhost);
        free(o->name);
        free(o);
    }
    pthread_mutex_destroy(&r->mu);
    free(r);
    b->opsr = NULL;
}

/* ---- queues ------------------------------------------------------------ */

static void rate_cb(evutil_socket_t fd, short what, void *arg)
{
    gw_queue_t *q = arg;

    (void)fd;
    (void)what;
    if (!q->gone && !q->b->stopping)
        gw_queue_kick(q);
}

static const pol_t *pol_match(gw_opsreg_t *r, const gw_qops_t *o)
{
    for (size_t i = 0; i < r->npols; i++) {
        const pol_t *p = &r->pols[i];
        if (strcmp(p->vhost, o->vhost) != 0)
            continue;
        if (p->has_re ? regexec(&p->re, o->name, 0, NULL, 0) == 0
                      : strcmp(p->queue, o->name) == 0)
            return p;
    }
    return NULL;
}

static void qops_resolve(gw_opsreg_t *r, gw_qops_t *o)
{
    const ovr_t *v = ovr_find(r, o->vhost, o->q->name, o->q->nlen);

    o->pol = pol_match(r, o);
    atomic_store(&o->paused, v != NULL ? v->paused : o->pol != NULL && o->pol->paused);
    o->tokens = o->pol != NULL ? o->pol->burst : 0;
    o->tok_at = now_ms();
}

bool gw_ops_queue_add(gw_queue_t *q)
{
    gw_broker_t *b = q->b;
    gw_opsreg_t *r = b->opsr;
    gw_qops_t *o = calloc(1, sizeof(*o));

    if (o == NULL)
        return false;
    o->q = q;
    snprintf(o->vhost, sizeof(o->vhost), "%s", gw_queue_vhost(q));
    memcpy(o->name, q->name, q->nlen);
    o->rate_ev = evtimer_new(b->base, rate_cb, q);
    o->retry_ev = evtimer_new(b->base, rate_cb, q);
    if (o->rate_ev == NULL || o->retry_ev == NULL) {
        if (o->rate_ev != NULL)
            event_free(o->rate_ev);
        free(o);
        return false;
    }
    q->ops = o;
    if (r == NULL)
        return true;
    qops_resolve(r, o);
    pthread_mutex_lock(&r->mu);
    o->next = r->list;
    if (r->list != NULL)
        r->list->prev = o;
    r->list = o;
    o->listed = true;
    pthread_mutex_unlock(&r->mu);
    return true;
}

static void qops_unlist(gw_opsreg_t *r, gw_qops_t *o)
{
    if (r == NULL || !o->listed)
        return;
    pthread_mutex_lock(&r->mu);
    if (o->prev != NULL)
        o->prev->next = o->next;
    else
        r->list = o->next;
    if (o->next != NULL)
        o->next->prev = o->prev;
    o->listed = false;
    pthread_mutex_unlock(&r->mu);
}

void gw_ops_queue_drop(gw_queue_t *q)
{
    gw_qops_t *o = q->ops;

    if (o == NULL)
        return;
    event_del(o->rate_ev);
    event_del(o->retry_ev);
    qops_unlist(q->b->opsr, o);
}

/* The queue's last reference went (gw_queue_unref). */
void gw_ops_queue_free(gw_queue_t *q)
{
    gw_qops_t *o = q->ops;

    if (o == NULL)
        return;
    qops_unlist(q->b->opsr, o);
    event_free(o->rate_ev);
    event_free(o->retry_ev);
    free(o);
    q->ops = NULL;
}

/* An integer argument in ms, 0..30 days. */
static bool arg_ms(gw_table_t args, const char *key, int64_t *out, bool *given, char *err,
                   size_t errlen, const gw_queue_t *q)
{
    gw_value_t v;
    int64_t i;

    *given = gw_table_get(args, key, &v);
    if (!*given)
        return true;
    if (!gw_value_int(&v, &i) || i < 0 || i > ST_INVISIBLE_MAX_MS) {
        snprintf(err, errlen,
                 "invalid arg '%s' for queue '%.*s' in vhost '%s': a whole number of "
                 "milliseconds from 0 to %lld is expected",
                 key, (int)q->nlen, q->name, gw_queue_vhost(q), (long long)ST_INVISIBLE_MAX_MS);
        return false;
    }
    *out = i;
    return true;
}

bool gw_ops_queue_args(gw_queue_t *q, gw_table_t args, char *err, size_t errlen)
{
    static const char *const types[] = {"disabled", "all", "failed", "returned"};
    gw_qops_t *o = q->ops;
    gw_value_t v;
    int64_t mn = 0, mx = 0;
    bool has_min, has_max;
    dr_type_t t = DR_DISABLED;

    if (o == NULL || args.len == 0)
        return true;
    if (gw_table_get(args, "x-delayed-retry-type", &v)) {
        bool ok = false;
        if (v.type == 'S') {
            for (size_t i = 0; i < sizeof(types) / sizeof(types[0]) && !ok; i++) {
                if (v.v.bytes.len == strlen(types[i]) &&
                    memcmp(v.v.bytes.ptr, types[i], v.v.bytes.len) == 0) {
                    t = (dr_type_t)i;
                    ok = true;
                }
            }
        }
        if (!ok) {
            snprintf(err, errlen,
                     "invalid arg 'x-delayed-retry-type' for queue '%.*s' in vhost '%s': one of "
                     "disabled, all, failed, returned is expected",
                     (int)q->nlen, q->name, gw_queue_vhost(q));
            return false;
        }
    }
    if (!arg_ms(args, "x-delayed-retry-min", &mn, &has_min, err, errlen, q) ||
        !arg_ms(args, "x-delayed-retry-max", &mx, &has_max, err, errlen, q))
        return false;
    if (has_min && has_max && mx < mn) {
        snprintf(err, errlen,
                 "invalid arg 'x-delayed-retry-max' for queue '%.*s' in vhost '%s': it is "
                 "smaller than x-delayed-retry-min",
                 (int)q->nlen, q->name, gw_queue_vhost(q));
        return false;
    }
    o->dr_type = t;
    o->dr_min = mn;
    o->dr_max = has_max ? mx : mn;
    return true;
}

/* ---- deliveries -------------------------------------------------------- */

bool gw_ops_paused(const gw_queue_t *q)
{
    return q->ops != NULL && atomic_load_explicit(&q->ops->paused, memory_order_relaxed);
}

uint32_t gw_ops_credit(gw_queue_t *q, uint32_t n)
{
    gw_qops_t *o = q->ops;
    const pol_t *p;
    int64_t now;
    uint32_t k;

    if (o == NULL || n == 0)
        return n;
    if (atomic_load_explicit(&o->paused, memory_order_relaxed))
        return 0;
    if ((p = o->pol) == NULL || p->rate <= 0)
        return n;
    now = now_ms();
    if (now > o->tok_at) {
        o->tokens += (double)(now - o->tok_at) * p->rate / 1000.0;
        if (o->tokens > p->burst)
            o->tokens = p->burst;
        o->tok_at = now;
    }
    k = o->tokens >= (double)n ? n : (uint32_t)floor(o->tokens);
    o->tokens -= k;
    if (k == 0 && !evtimer_pending(o->rate_ev, NULL)) {
        /* Look again when the next token is due. */
        double ms = ceil((1.0 - o->tokens) * 1000.0 / p->rate);
        struct timeval tv;
        if (ms < 1)
            ms = 1;
        tv.tv_sec = (time_t)(ms / 1000);
        tv.tv_usec = (suseconds_t)((int64_t)ms % 1000 * 1000);
        evtimer_add(o->rate_ev, &tv);
    }
    return k;
}

void gw_ops_refund(gw_queue_t *q, uint32_t n)
{
    gw_qops_t *o = q->ops;

    if (o == NULL || n == 0 || o->pol == NULL || o->pol->rate <= 0)
        return;
    o->tokens += n;
    if (o->tokens > o->pol->burst)
        o->tokens = o->pol->burst;
}

void gw_ops_delivered(gw_queue_t *q, bool redelivered)
{
    gw_qstats_inc(q, GW_QS_DELIVERED, 1);
    if (redelivered)
        gw_qstats_inc(q, GW_QS_REDELIVERED, 1);
}

/* A delayed requeue: invisible for ms (the store counts the attempt),
 * then the queue's consumers look again. */
typedef struct {
    gw_op_t op;
    gw_queue_t *q; /* ref */
    int64_t ms;
    uint64_t blen;
} delay_op_t;

static void delay_fn(gw_op_t *op)
{
    delay_op_t *d = (delay_op_t *)op;
    gw_queue_t *q = d->q;
    gw_qops_t *o = q->ops;

    if (op->err != GT_OK)
        GT_LOG(WARN, "amqp", "delayed retry in queue '%.*s' (%s): %s", (int)q->nlen, q->name,
               q->id, gt_err_str(op->err));
    else
        gw_maxlen_back(q, d->blen); /* counted in the queue again (it is coming back) */
    if (!q->gone && !q->b->stopping && o != NULL) {
        int64_t due = now_ms() + d->ms;
        if (!evtimer_pending(o->retry_ev, NULL) || due < o->retry_due) {
            /* The earliest one; later ones are found by the idle tick. */
            struct timeval tv = {(time_t)(d->ms / 1000), (suseconds_t)(d->ms % 1000 * 1000)};
            o->retry_due = due;
            evtimer_add(o->retry_ev, &tv);
        }
    }
    gw_queue_unref(q);
    free(d);
}

static void delay_cb(void *arg, gt_err_t err, const char *handle)
{
    delay_op_t *d = arg;

    (void)handle;
    d->op.err = err;
    gw_op_post(&d->op);
}

static void delayed_requeue(gw_broker_t *b, gw_queue_t *q, const char *handle, int64_t ms,
                            uint64_t blen)
{
    delay_op_t *d;

    if (ms <= 0) {
        gw_msg_requeue(b, q, handle, blen);
        return;
    }
    if ((d = gw_op_new(b, sizeof(*d), delay_fn)) == NULL)
        return;
    gw_queue_ref(q);
    d->q = q;
    d->ms = ms;
    d->blen = blen;
    st_change_invisible(b->store, q->id, q->id, handle, ms, delay_cb, d);
}

bool gw_ops_settle(gw_broker_t *b, gw_queue_t *q, const char *handle, uint32_t attempt,
                   uint64_t blen, gw_settle_t how)
{
    gw_qops_t *o = q->ops;

    if (how == GW_SETTLE_ACK) {
        gw_qstats_inc(q, GW_QS_ACKED, 1);
        gw_msg_ack(b, q, handle);
        return true;
    }
    if (how == GW_SETTLE_REQUEUE) {
        /* x-delayed-retry (RabbitMQ 4.3): a requeued message comes back
         * after min(min * deliveries, max).  Over AMQP 0-9-1 a requeue is a
         * "returned" message, never a "failed" one. */
        if (o != NULL && o->dr_min > 0 && (o->dr_type == DR_ALL || o->dr_type == DR_RETURNED)) {
            int64_t ms = o->dr_min * (int64_t)(attempt > 0 ? attempt : 1);
            delayed_requeue(b, q, handle, ms < o->dr_max ? ms : o->dr_max, blen);
            return true;
        }
        return false;
    }
    /* Dropped (nack / reject without requeue): graded retry first; after
     * the last step the caller dead-letters it (or drops it). */
    if (o != NULL && o->pol != NULL && attempt >= 1 && attempt <= o->pol->nretry) {
        delayed_requeue(b, q, handle, o->pol->retry_ms[attempt - 1], blen);
        return true;
    }
    return false;
}

/* ---- publishing -------------------------------------------------------- */

uint64_t gw_ops_max_message(gw_chan_t *ch)
{
    gw_broker_t *b = ch->bc->b;
    gw_opsreg_t *r = b->opsr;
    uint64_t max = b->max_message;

    if (r != NULL && r->nlims > 0) {
        const char *vh = GW_VHOST(ch);
        for (size_t i = 0; i < r->nlims; i++)
            if (strcmp(r->lims[i].vhost, vh) == 0 && r->lims[i].max > 0 && r->lims[i].max < max)
                return r->lims[i].max;
    }
    return max;
}

/* ---- the operator ------------------------------------------------------ */

/* A Prometheus label value: \, " and newlines escaped. */
static void put_label(FILE *out, const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\' || *s == '"')
            fputc('\\', out), fputc(*s, out);
        else if (*s == '\n')
            fputs("\\n", out);
        else
            fputc(*s, out);
    }
}

void gw_ops_metrics(gw_broker_t *b, FILE *out)
{
    static const struct {
        const char *name, *help;
    } m[GW_QS_COUNT] = {
        {"published", "Messages appended to the AMQP queue."},
        {"delivered", "Deliveries from the AMQP queue (basic.deliver and basic.get-ok)."},
        {"acked", "Deliveries of the AMQP queue acknowledged by their client."},
        {"redelivered", "Deliveries of the AMQP queue marked redelivered."},
        {"dead_lettered", "Messages of the AMQP queue dead-lettered."},
        {"expired", "Messages of the AMQP queue that expired (TTL)."},
    };
    gw_opsreg_t *r = b->opsr;

    if (r == NULL)
        return;
    pthread_mutex_lock(&r->mu);
    for (int k = 0; k < GW_QS_COUNT; k++) {
        fprintf(out,
                "# HELP gantry_amqp_queue_%s_total %s\n"
                "# TYPE gantry_amqp_queue_%s_total counter\n",
                m[k].name, m[k].help, m[k].name);
        for (const gw_qops_t *o = r->list; o != NULL; o = o->next) {
            fprintf(out, "gantry_amqp_queue_%s_total{vhost=\"", m[k].name);
            put_label(out, o->vhost);
            fputs("\",queue=\"", out);
            put_label(out, o->name);
            fprintf(out, "\"} %llu\n",
                    (unsigned long long)atomic_load_explicit(&o->n[k], memory_order_relaxed));
        }
    }
    fputs("# HELP gantry_amqp_queue_paused 1 while deliveries of the AMQP queue are paused.\n"
          "# TYPE gantry_amqp_queue_paused gauge\n",
          out);
    for (const gw_qops_t *o = r->list; o != NULL; o = o->next) {
        fputs("gantry_amqp_queue_paused{vhost=\"", out);
        put_label(out, o->vhost);
        fputs("\",queue=\"", out);
        put_label(out, o->name);
        fprintf(out, "\"} %d\n", atomic_load(&o->paused) ? 1 : 0);
    }
    pthread_mutex_unlock(&r->mu);
}

typedef struct {
    gw_op_t op;
    waiter_t *w;
    bool paused;
    char vhost[256];
    size_t nlen;
    char name[256];
} admin_op_t;

static void admin_put_cb(void *arg, gt_err_t err)
{
    waiter_t *w = arg;

    waiter_done(w, err == GT_OK ? GT_OK : GT_EIO);
    waiter_unref(w);
}

static void admin_fn(gw_op_t *op)
{
    admin_op_t *a = (admin_op_t *)op;
    gw_broker_t *b = op->b;
    gw_queue_t *q = NULL;
    gw_vhost_t *vh;
    uint8_t k[1 + 255 + 255], v[2] = {1, a->paused ? 1 : 0};
    size_t vl = strlen(a->vhost);

    if (b->stopping || b->opsr == NULL) {
        waiter_done(a->w, GT_ESHUTDOWN);
        waiter_unref(a->w);
        free(a);
        return;
    }
    vh = gw_vhost_get(b, (gw_str_t){a->vhost, strlen(a->vhost)}, false);
    q = vh != NULL ? gw_queue_find(vh, (gw_str_t){a->name, a->nlen}) : NULL;
    if (q == NULL || q->gone) {
        waiter_done(a->w, GT_ENOTFOUND);
        waiter_unref(a->w);
        free(a);
        return;
    }
    if (!ovr_set(b->opsr, a->vhost, a->name, a->nlen, a->paused)) {
        waiter_done(a->w, GT_ENOMEM);
        waiter_unref(a->w);
        free(a);
        return;
    }
    if (q->ops != NULL) {
        atomic_store(&q->ops->paused, a->paused);
        if (!a->paused)
            gw_queue_kick(q);
    }
    GT_LOG(INFO, "amqp", "queue '%.*s' in vhost '%s': deliveries %s by the operator",
           (int)a->nlen, a->name, a->vhost, a->paused ? "paused" : "resumed");
    k[0] = (uint8_t)vl;
    memcpy(k + 1, a->vhost, vl);
    memcpy(k + 1 + vl, a->name, a->nlen);
    st_meta_put(b->store, GW_NS_QOPS, k, (uint32_t)(1 + vl + a->nlen), v, sizeof(v),
                admin_put_cb, a->w);
    free(a);
}

gt_err_t gw_ops_admin_pause(gw_broker_t *b, const char *vhost, const char *queue, bool paused)
{
    size_t vl = strlen(vhost), ql = strlen(queue);
    admin_op_t *a;
    waiter_t *w;
    gt_err_t rc;

    if (vl == 0 || vl > 255 || ql == 0 || ql > 255)
        return GT_ENOTFOUND;
    if ((w = waiter_new()) == NULL)
        return GT_ENOMEM;
    if ((a = gw_op_new(b, sizeof(*a), admin_fn)) == NULL) {
        waiter_unref(w);
        waiter_unref(w);
        return GT_ENOMEM;
    }
    a->w = w;
    a->paused = paused;
    memcpy(a->vhost, vhost, vl + 1);
    memcpy(a->name, queue, ql);
    a->nlen = ql;
    gw_op_post(&a->op);
    rc = waiter_wait(w, GW_ADMIN_WAIT_MS);
    waiter_unref(w);
    return rc;
}

/* Decodes a percent-escaped path segment of n bytes into out[256]; its
 * length, or -1 when malformed or longer than 255. */
static int seg_decode(const char *s, size_t n, char *out)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            char hex[3] = {0};
            char *end;
            if (i + 2 >= n)
                return -1;
            hex[0] = s[i + 1];
            hex[1] = s[i + 2];
            c = (int)strtol(hex, &end, 16);
            if (end != hex + 2)
                return -1;
            i += 2;
        }
        if (o >= 255)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return (int)o;
}

unsigned gw_ops_http(gw_broker_t *b, const char *method, const char *url, char *text,
                     size_t cap)
{
    static const char prefix[] = "/api/v1/amqp/queues/";
    const char *p = url + sizeof(prefix) - 1, *s1, *s2;
    char vhost[256], queue[256];
    bool paused;
    gt_err_t rc;

    if (strncmp(url, prefix, sizeof(prefix) - 1) != 0 || (s1 = strchr(p, '/')) == NULL ||
        (s2 = strchr(s1 + 1, '/')) == NULL || strchr(s2 + 1, '/') != NULL ||
        (strcmp(s2 + 1, "pause") != 0 && strcmp(s2 + 1, "resume") != 0)) {
        snprintf(text, cap, "not found (POST /api/v1/amqp/queues/VHOST/QUEUE/pause or "
                            "/resume, %%2F for the vhost /)\n");
        return 404;
    }
    if (strcmp(method, "POST") != 0) {
        snprintf(text, cap, "method not allowed (POST)\n");
        return 405;
    }
    if (seg_decode(p, (size_t)(s1 - p), vhost) <= 0 ||
        seg_decode(s1 + 1, (size_t)(s2 - s1 - 1), queue) <= 0 ||
        strlen(vhost) == 0 || strlen(queue) == 0) {
        snprintf(text, cap, "bad vhost or queue name\n");
        return 400;
    }
    paused = strcmp(s2 + 1, "pause") == 0;
    rc = gw_ops_admin_pause(b, vhost, queue, paused);
    switch (rc) {
    case GT_OK:
        snprintf(text, cap, "queue '%s' in vhost '%s': %s\n", queue, vhost,
                 paused ? "paused" : "resumed");
        return 200;
    case GT_ENOTFOUND:
        snprintf(text, cap, "no queue '%s' in vhost '%s'\n", queue, vhost);
        return 404;
    default:
        snprintf(text, cap, "cannot %s queue '%s' in vhost '%s': %s\n",
                 paused ? "pause" : "resume", queue, vhost, gt_err_str(rc));
        return 503;
    }
}
