/* RabbitMQ-named gauges of the AMQP gateway.  See gw_metrics.h.
 *
 * The snapshot is owned by a small refcounted holder: the scraping thread
 * and the loop's op each hold a reference, so a scrape that stops waiting
 * (GW_METRICS_WAIT_MS) leaves the op a valid place to write. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gt_metrics.h"
#include "gw_metrics.h"

#define GW_METRICS_WAIT_MS 2000
#define GW_METRICS_DEFAULT_QUEUES 1000

typedef struct {
    char vhost[256], name[256], id[40];
    uint32_t consumers;
} gw_mq_t;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    bool done, ok;
    size_t max;          /* queues copied at most */
    gw_mq_t *qs;
    size_t nq, more;     /* copied; not copied (past max) */
    uint32_t more_consumers;
    uint64_t conns, chans, consumers, queues;
} gw_msnap_t;

typedef struct {
    gw_op_t op;
    gw_msnap_t *snap;
} gw_mop_t;

static void gw_msnap_unref(gw_msnap_t *s)
{
    bool last;

    pthread_mutex_lock(&s->mu);
    last = --s->refs == 0;
    pthread_mutex_unlock(&s->mu);
    if (last) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        free(s->qs);
        free(s);
    }
}

/* On the loop: copies connections, channels and queues. */
static void gw_metrics_fn(gw_op_t *op)
{
    gw_msnap_t *s = ((gw_mop_t *)op)->snap;
    gw_broker_t *b = op->b;
    bool ok = !b->stopping;

    free(op);
    pthread_mutex_lock(&s->mu);
    for (gw_bconn_t *bc = b->conns; ok && bc != NULL; bc = bc->next) {
        if (bc->c == NULL)
            continue;
        s->conns++;
        for (uint32_t i = 0; i <= bc->max_ch && i < GW_CHAN_SLOTS; i++)
            if (bc->ch[i] != NULL && !bc->ch[i]->closed)
                s->chans++;
    }
    for (gw_vhost_t *vh = b->vhosts; ok && vh != NULL; vh = vh->next) {
        for (size_t k = 0; k < GW_QMAP; k++) {
            for (gw_queue_t *q = vh->qmap[k]; q != NULL; q = q->hnext) {
                if (q->gone)
                    continue;
                s->queues++;
                s->consumers += q->nconsumers;
                if (!q->ready || s->nq >= s->max) {
                    s->more += q->ready;
                    s->more_consumers += q->ready ? q->nconsumers : 0;
                    continue;
                }
                gw_mq_t *m = &s->qs[s->nq++];
                snprintf(m->vhost, sizeof(m->vhost), "%s", vh->name);
                snprintf(m->name, sizeof(m->name), "%.*s", (int)q->nlen, q->name);
                snprintf(m->id, sizeof(m->id), "%s", q->id);
                m->consumers = q->nconsumers;
            }
        }
    }
    s->ok = ok;
    s->done = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    gw_msnap_unref(s);
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    gt_err_t err;
    uint64_t ready, unacked;
} gw_mstat_t;

static void gw_mstat_cb(void *arg, gt_err_t err, const st_stats_t *st)
{
    gw_mstat_t *w = arg;

    pthread_mutex_lock(&w->mu);
    w->err = err;
    if (err == GT_OK) {
        w->ready = st->ready;
        w->unacked = st->inflight;
    }
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* A queue's store topic and group are its id: ready and in flight. */
static gt_err_t gw_mstat(st_store_t *st, const char *id, uint64_t *ready, uint64_t *unacked)
{
    gw_mstat_t w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, GT_OK, 0, 0};

    st_stats(st, id, id, gw_mstat_cb, &w);
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    *ready = w.ready;
    *unacked = w.unacked;
    return w.err;
}

static void gw_mline(FILE *out, const char *name, const char *vhost, const char *queue,
                     uint64_t v)
{
    fprintf(out, "%s{vhost=\"", name);
    gt_metrics_label_value(out, vhost);
    fputs("\",queue=\"", out);
    gt_metrics_label_value(out, queue);
    fprintf(out, "\"} %llu\n", (unsigned long long)v);
}

void gw_metrics_write(gw_broker_t *b, size_t max_queues, FILE *out)
{
    static const struct {
        const char *name, *help;
    } qm[] = {
        {"rabbitmq_queue_messages_ready", "Messages ready to be delivered to consumers"},
        {"rabbitmq_queue_messages_unacked",
         "Messages delivered to consumers but not yet acknowledged"},
        {"rabbitmq_queue_messages", "Sum of ready and unacknowledged messages"},
        {"rabbitmq_queue_consumers", "Consumers on a queue"},
    };
    gw_msnap_t *s = calloc(1, sizeof(*s));
    gw_mop_t *op = NULL;
    uint64_t (*v)[2] = NULL;
    struct timespec ts;
    bool ok;

    if (s == NULL)
        return;
    s->max = max_queues > 0 ? max_queues : GW_METRICS_DEFAULT_QUEUES;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->refs = 1;
    if ((s->qs = calloc(s->max, sizeof(*s->qs))) == NULL ||
        (op = gw_op_new(b, sizeof(*op), gw_metrics_fn)) == NULL) {
        gw_msnap_unref(s);
        return;
    }
    s->refs = 2;
    op->snap = s;
    gw_op_post(&op->op);
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += GW_METRICS_WAIT_MS / 1000;
    pthread_mutex_lock(&s->mu);
    while (!s->done && pthread_cond_timedwait(&s->cv, &s->mu, &ts) != ETIMEDOUT)
        ;
    ok = s->done && s->ok;
    pthread_mutex_unlock(&s->mu);
    if (!ok || (v = calloc(s->nq ? s->nq : 1, sizeof(*v))) == NULL)
        goto out;
    /* The store's counts, outside the loop (one st_stats per queue). */
    for (size_t i = 0; i < s->nq; i++)
        if (gw_mstat(b->store, s->qs[i].id, &v[i][0], &v[i][1]) != GT_OK)
            v[i][0] = v[i][1] = 0;
    gt_metrics_head(out, "rabbitmq_connections", "gauge", "Connections currently open");
    fprintf(out, "rabbitmq_connections %llu\n", (unsigned long long)s->conns);
    gt_metrics_head(out, "rabbitmq_channels", "gauge", "Channels currently open");
    fprintf(out, "rabbitmq_channels %llu\n", (unsigned long long)s->chans);
    gt_metrics_head(out, "rabbitmq_consumers", "gauge", "Consumers currently connected");
    fprintf(out, "rabbitmq_consumers %llu\n", (unsigned long long)s->consumers);
    gt_metrics_head(out, "rabbitmq_queues", "gauge", "Queues available");
    fprintf(out, "rabbitmq_queues %llu\n", (unsigned long long)s->queues);
    for (size_t k = 0; k < sizeof(qm) / sizeof(qm[0]); k++) {
        gt_metrics_head(out, qm[k].name, "gauge", qm[k].help);
        for (size_t i = 0; i < s->nq; i++) {
            uint64_t x = k == 0 ? v[i][0] : k == 1 ? v[i][1] : k == 2 ? v[i][0] + v[i][1]
                                                                      : s->qs[i].consumers;
            gw_mline(out, qm[k].name, s->qs[i].vhost, s->qs[i].name, x);
        }
        /* Past the cap: one _other series, its consumers only (reading
         * every such queue's counts would make the scrape unbounded). */
        if (s->more > 0 && k == 3)
            gw_mline(out, qm[k].name, GT_MFAM_OTHER, GT_MFAM_OTHER, s->more_consumers);
    }
out:
    free(v);
    gw_msnap_unref(s);
}
