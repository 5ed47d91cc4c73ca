/* RocketMQ-named metrics.  See px_metrics.h.
 *
 * Each family is a gt_mfam_t; the hooks look their series up and add.
 * Label values follow RocketMQ: message_type normal / fifo / delay /
 * transaction; rpc_latency's request_code is the RPC's name in snake case
 * (send_message, as upstream's remoting request codes read), response_code
 * the response's RocketMQ Code in lower case (ok, message_not_found...) or,
 * for a call without one, the gRPC status (ok, not_found...), protocol_type
 * "grpc", result success / cancelled / write_channel_failed. */
#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gt_du.h"
#include "gt_metrics.h"
#include "px_metrics.h"

/* rocketmq_message_size buckets (RocketMQ's: 1 KiB .. 4 MiB, then more). */
static const uint64_t px_size_bounds[] = {1024, 4096, 512 * 1024, 1024 * 1024,
                                          2 * 1024 * 1024, 4 * 1024 * 1024};
#define PX_SIZE_NB (sizeof(px_size_bounds) / sizeof(px_size_bounds[0]))
/* rocketmq_rpc_latency buckets, in µs (RocketMQ's in ms: 1 3 5 7 10 100
 * 1000 2000 3000). */
static const uint64_t px_lat_bounds[] = {1000, 3000, 5000, 7000, 10000,
                                         100000, 1000000, 2000000, 3000000};
#define PX_LAT_NB (sizeof(px_lat_bounds) / sizeof(px_lat_bounds[0]))

/* Values of each family's series. */
enum { PX_IN_MSGS, PX_IN_BYTES, PX_IN_SIZE, PX_IN_N = PX_IN_SIZE + PX_SIZE_NB + 2 };
enum { PX_OUT_MSGS, PX_OUT_BYTES, PX_OUT_N };
enum { PX_TX_COMMIT, PX_TX_ROLLBACK, PX_TX_N };
enum { PX_RPC_N = PX_LAT_NB + 2 };

struct px_metrics {
    gt_mfam_t *in, *out, *tx, *rpc;
    size_t max_sets;
};

size_t px_metrics_max_sets(const px_metrics_t *m)
{
    return m->max_sets;
}

px_metrics_t *px_metrics_new(size_t max_sets)
{
    px_metrics_t *m = calloc(1, sizeof(*m));

    if (m == NULL)
        return NULL;
    m->max_sets = max_sets;
    m->in = gt_mfam_new(2, PX_IN_N, max_sets);
    m->out = gt_mfam_new(2, PX_OUT_N, max_sets);
    m->tx = gt_mfam_new(1, PX_TX_N, max_sets);
    /* RPC names x codes x 2 x 3: bounded by the protocol, not by
     * clients, but kept under the same cap. */
    m->rpc = gt_mfam_new(5, PX_RPC_N, max_sets);
    if (m->in == NULL || m->out == NULL || m->tx == NULL || m->rpc == NULL) {
        px_metrics_free(m);
        return NULL;
    }
    return m;
}

void px_metrics_free(px_metrics_t *m)
{
    if (m == NULL)
        return;
    gt_mfam_free(m->in);
    gt_mfam_free(m->out);
    gt_mfam_free(m->tx);
    gt_mfam_free(m->rpc);
    free(m);
}

void px_metrics_in(px_metrics_t *m, const char *topic, const char *message_type,
                   uint64_t body_bytes)
{
    const char *v[2] = {topic, message_type};
    gt_mseries_t *s;

    if (m == NULL || (s = gt_mfam_get(m->in, v)) == NULL)
        return;
    gt_mseries_add(s, PX_IN_MSGS, 1);
    gt_mseries_add(s, PX_IN_BYTES, body_bytes);
    gt_mseries_observe(s, PX_IN_SIZE, px_size_bounds, PX_SIZE_NB, body_bytes);
}

void px_metrics_out(px_metrics_t *m, const char *topic, const char *group, uint64_t n,
                    uint64_t bytes)
{
    const char *v[2] = {topic, group};
    gt_mseries_t *s;

    if (m == NULL || (s = gt_mfam_get(m->out, v)) == NULL)
        return;
    if (n > 0) {
        gt_mseries_add(s, PX_OUT_MSGS, n);
        gt_mseries_add(s, PX_OUT_BYTES, bytes);
    }
}

void px_metrics_tx(px_metrics_t *m, const char *topic, bool commit)
{
    const char *v[1] = {topic};
    gt_mseries_t *s;

    if (m == NULL || (s = gt_mfam_get(m->tx, v)) == NULL)
        return;
    gt_mseries_add(s, commit ? PX_TX_COMMIT : PX_TX_ROLLBACK, 1);
}

/* "SendMessage" -> "send_message"; "OK" -> "ok". */
static void px_snake(const char *in, char *out, size_t cap)
{
    size_t n = 0;

    for (size_t i = 0; in[i] != '\0' && n + 2 < cap; i++) {
        unsigned char c = (unsigned char)in[i];
        if (isupper(c) && i > 0 && islower((unsigned char)in[i - 1]))
            out[n++] = '_';
        out[n++] = (char)tolower(c);
    }
    out[n] = '\0';
}

static const char *px_grpc_status_name(grpc_status_code c)
{
    static const char *const names[] = {
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
        "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
        "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};

    return (unsigned)c < sizeof(names) / sizeof(names[0]) ? names[c] : "UNKNOWN";
}

void px_metrics_call_end(void *ctx, const px_call_end_t *e)
{
    static const char *const results[] = {
        [PX_CALL_SUCCESS] = "success", [PX_CALL_CANCELLED] = "cancelled",
        [PX_CALL_SEND_FAILED] = "write_channel_failed"};
    px_metrics_t *m = ctx;
    const char *slash = strrchr(e->method->path, '/');
    const char *name = slash != NULL ? slash + 1 : e->method->path;
    char req[64], resp[64];
    bool lp = strcmp(name, "ReceiveMessage") == 0 || strcmp(name, "PullMessage") == 0;
    const char *v[5];
    gt_mseries_t *s;

    px_snake(name, req, sizeof(req));
    /* Lower case: the enum names are upper snake case already. */
    px_snake(e->code_name != NULL ? e->code_name : px_grpc_status_name(e->status), resp,
             sizeof(resp));
    v[0] = "grpc";
    v[1] = req;
    v[2] = resp;
    v[3] = lp ? "true" : "false";
    v[4] = results[e->result];
    if ((s = gt_mfam_get(m->rpc, v)) == NULL)
        return;
    gt_mseries_observe(s, 0, px_lat_bounds, PX_LAT_NB,
                       e->latency_us > 0 ? (uint64_t)e->latency_us : 0);
}

void px_metrics_write(px_metrics_t *m, const char *proxy_mode, FILE *out)
{
    static const char *const in_l[] = {"topic", "message_type"};
    static const char *const out_l[] = {"topic", "consumer_group"};
    static const char *const tx_l[] = {"topic"};
    static const char *const rpc_l[] = {"protocol_type", "request_code", "response_code",
                                        "is_long_polling", "result"};

    gt_metrics_head(out, "rocketmq_proxy_up", "gauge", "1 while the proxy serves.");
    fputs("rocketmq_proxy_up{proxy_mode=\"", out);
    gt_metrics_label_value(out, proxy_mode);
    fputs("\"} 1\n", out);
    gt_metrics_head(out, "rocketmq_messages_in_total", "counter",
                    "Messages stored for producers.");
    gt_metrics_write_val(out, m->in, "rocketmq_messages_in_total", in_l, PX_IN_MSGS);
    gt_metrics_head(out, "rocketmq_throughput_in_total", "counter",
                    "Body bytes stored for producers.");
    gt_metrics_write_val(out, m->in, "rocketmq_throughput_in_total", in_l, PX_IN_BYTES);
    gt_metrics_head(out, "rocketmq_message_size", "histogram",
                    "Body sizes of the messages stored for producers, in bytes.");
    gt_metrics_write_hist(out, m->in, "rocketmq_message_size", in_l, PX_IN_SIZE,
                          px_size_bounds, PX_SIZE_NB, 1);
    gt_metrics_head(out, "rocketmq_messages_out_total", "counter",
                    "Messages delivered to consumers.");
    gt_metrics_write_val(out, m->out, "rocketmq_messages_out_total", out_l, PX_OUT_MSGS);
    gt_metrics_head(out, "rocketmq_throughput_out_total", "counter",
                    "Body bytes delivered to consumers.");
    gt_metrics_write_val(out, m->out, "rocketmq_throughput_out_total", out_l, PX_OUT_BYTES);
    gt_metrics_head(out, "rocketmq_commit_messages_total", "counter",
                    "Transactional messages committed.");
    gt_metrics_write_val(out, m->tx, "rocketmq_commit_messages_total", tx_l, PX_TX_COMMIT);
    gt_metrics_head(out, "rocketmq_rollback_messages_total", "counter",
                    "Transactional messages rolled back.");
    gt_metrics_write_val(out, m->tx, "rocketmq_rollback_messages_total", tx_l,
                         PX_TX_ROLLBACK);
    gt_metrics_head(out, "rocketmq_rpc_latency", "histogram",
                    "gRPC call latency, arrival to end, in milliseconds.");
    gt_metrics_write_hist(out, m->rpc, "rocketmq_rpc_latency", rpc_l, 0, px_lat_bounds,
                          PX_LAT_NB, 1000);
}

/* ---- gauges from the store ---- */

/* What a scrape keeps of one st_stats() answer. */
typedef struct {
    uint64_t ready, inflight, lag;
    uint64_t appended; /* the queues' end offsets summed: every message
                        * ever appended (offsets survive restarts) */
    uint64_t discarded; /* half messages discarded after checks */
} px_gauges_t;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    gt_err_t err;
    px_gauges_t g;
} px_wait_t;

static void px_stats_cb(void *arg, gt_err_t err, const st_stats_t *s)
{
    px_wait_t *w = arg;

    pthread_mutex_lock(&w->mu);
    w->err = err;
    if (err == GT_OK) {
        w->g.ready = s->ready;
        w->g.inflight = s->inflight;
        w->g.lag = s->lag;
        w->g.discarded = s->tx_discarded;
        for (uint32_t q = 0; q < s->nqueues; q++)
            w->g.appended += s->queues[q].max_offset;
    }
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* st_stats(), waiting for the answer (it runs on the service's executor,
 * never on this thread). */
static gt_err_t px_stats(st_store_t *st, const char *topic, const char *group,
                         px_gauges_t *out)
{
    px_wait_t w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, GT_OK, {0}};

    st_stats(st, topic, group, px_stats_cb, &w);
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    *out = w.g;
    return w.err;
}

/* ---- consumer lag latency ---- */

/* One store answer of any kind, waited for. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    gt_err_t err;
    uint64_t off;
    int64_t store_ms;
    uint64_t *min, *end; /* per queue (stats) */
    uint32_t nq;
} px_ans_t;

#define PX_ANS_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, GT_OK, 0, 0, NULL, NULL, 0}

static void px_ans_done(px_ans_t *a, gt_err_t err)
{
    pthread_mutex_lock(&a->mu);
    a->err = err;
    a->done = true;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

static gt_err_t px_ans_wait(px_ans_t *a)
{
    pthread_mutex_lock(&a->mu);
    while (!a->done)
        pthread_cond_wait(&a->cv, &a->mu);
    a->done = false;
    pthread_mutex_unlock(&a->mu);
    return a->err;
}

static void px_queues_cb(void *arg, gt_err_t err, const st_stats_t *s)
{
    px_ans_t *a = arg;

    if (err == GT_OK && s->nqueues > 0) {
        a->min = calloc(s->nqueues, sizeof(*a->min));
        a->end = calloc(s->nqueues, sizeof(*a->end));
        if (a->min == NULL || a->end == NULL) {
            err = GT_ENOMEM;
        } else {
            a->nq = s->nqueues;
            for (uint32_t q = 0; q < s->nqueues; q++) {
                a->min[q] = s->queues[q].min_offset;
                a->end[q] = s->queues[q].max_offset;
            }
        }
    }
    px_ans_done(a, err);
}

static void px_off_cb(void *arg, gt_err_t err, uint64_t off)
{
    px_ans_t *a = arg;

    a->off = off;
    px_ans_done(a, err);
}

static void px_pull_cb(void *arg, gt_err_t err, const st_message_t *msgs, size_t n,
                       uint64_t next)
{
    px_ans_t *a = arg;

    (void)next;
    if (err == GT_OK && n == 0)
        err = GT_ENOTFOUND;
    if (err == GT_OK)
        a->store_ms = msgs[0].store_ts_ms;
    px_ans_done(a, err);
}

/* rocketmq_consumer_lag_latency: how long the oldest message the group has
 * not acknowledged has been stored (ms): for each queue whose committed
 * offset is below its end, the store time of the message there.  0 when
 * nothing is behind.  A queue the group never consumed is not looked at. */
static int64_t px_lag_latency(st_store_t *st, const char *topic, const char *group,
                              int64_t now_ms)
{
    px_ans_t a = PX_ANS_INIT;
    int64_t oldest = now_ms;

    st_stats(st, topic, NULL, px_queues_cb, &a);
    if (px_ans_wait(&a) != GT_OK)
        goto out;
    for (uint32_t q = 0; q < a.nq; q++) {
        st_pull_req_t pr = {.topic = topic, .queue = q, .max = 1};
        st_offset_get(st, group, topic, q, px_off_cb, &a);
        if (px_ans_wait(&a) != GT_OK || a.off >= a.end[q])
            continue;
        pr.offset = a.off > a.min[q] ? a.off : a.min[q];
        st_pull(st, &pr, px_pull_cb, &a);
        if (px_ans_wait(&a) == GT_OK && a.store_ms < oldest)
            oldest = a.store_ms;
    }
out:
    free(a.min);
    free(a.end);
    return now_ms - oldest;
}

void px_metrics_write_store(px_metrics_t *m, st_store_t *st, const char *data_dir,
                            FILE *out)
{
    static const struct {
        const char *name, *help;
    } g[] = {
        {"rocketmq_consumer_ready_messages", "Messages ready for the consumer group."},
        {"rocketmq_consumer_inflight_messages",
         "Messages delivered to the consumer group and not yet acknowledged."},
        {"rocketmq_consumer_lag_messages",
         "Messages not yet acknowledged by the consumer group (ready and in flight)."},
    };
    size_t n = gt_mfam_count(m->out);
    px_gauges_t *s = calloc(n ? n : 1, sizeof(*s));
    bool *ok = calloc(n ? n : 1, sizeof(*ok));
    px_gauges_t hs;

    if (s == NULL || ok == NULL)
        goto out;
    /* One store call per pair, outside any lock of ours. */
    for (size_t i = 0; i < n; i++) {
        const gt_mseries_t *p = gt_mfam_at(m->out, i);
        ok[i] = p != NULL && px_stats(st, p->labels[0], p->labels[1], &s[i]) == GT_OK;
    }
    for (size_t k = 0; k < sizeof(g) / sizeof(g[0]); k++) {
        gt_metrics_head(out, g[k].name, "gauge", g[k].help);
        for (size_t i = 0; i < n; i++) {
            const gt_mseries_t *p = gt_mfam_at(m->out, i);
            uint64_t v = k == 0 ? s[i].ready : k == 1 ? s[i].inflight : s[i].lag;
            if (!ok[i])
                continue;
            fprintf(out, "%s{topic=\"", g[k].name);
            gt_metrics_label_value(out, p->labels[0]);
            fputs("\",consumer_group=\"", out);
            gt_metrics_label_value(out, p->labels[1]);
            fprintf(out, "\"} %llu\n", (unsigned long long)v);
        }
    }
    gt_metrics_head(out, "rocketmq_consumer_lag_latency", "gauge",
                    "Age of the oldest message the consumer group has not acknowledged, "
                    "in milliseconds.");
    for (size_t i = 0; i < n; i++) {
        const gt_mseries_t *p = gt_mfam_at(m->out, i);
        struct timespec ts;
        int64_t now;
        if (!ok[i])
            continue;
        clock_gettime(CLOCK_REALTIME, &ts);
        now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
        fputs("rocketmq_consumer_lag_latency{topic=\"", out);
        gt_metrics_label_value(out, p->labels[0]);
        fputs("\",consumer_group=\"", out);
        gt_metrics_label_value(out, p->labels[1]);
        fprintf(out, "\"} %lld\n", s[i].lag > 0 ? (long long)px_lag_latency(st, p->labels[0],
                                                                          p->labels[1], now)
                                                 : 0LL);
    }
    /* Dead letters per group: the end offsets of its %DLQ% topic. */
    gt_metrics_head(out, "rocketmq_send_to_dlq_messages_total", "counter",
                    "Messages of the consumer group moved to its dead-letter queue.");
    for (size_t i = 0; i < n; i++) {
        const gt_mseries_t *p = gt_mfam_at(m->out, i);
        char dlq[ST_NAME_MAX + 1];
        bool seen = false;
        px_gauges_t ds;
        if (p == NULL)
            continue;
        for (size_t j = 0; j < i && !seen; j++) {
            const gt_mseries_t *q = gt_mfam_at(m->out, j);
            seen = q != NULL && strcmp(q->labels[1], p->labels[1]) == 0;
        }
        if (seen || st_dlq_topic_name(p->labels[1], dlq, sizeof(dlq)) != GT_OK)
            continue;
        if (px_stats(st, dlq, NULL, &ds) != GT_OK)
            ds.appended = 0; /* no %DLQ% topic yet: none */
        fputs("rocketmq_send_to_dlq_messages_total{consumer_group=\"", out);
        gt_metrics_label_value(out, p->labels[1]);
        fprintf(out, "\"} %llu\n", (unsigned long long)ds.appended);
    }
    /* Half messages not resolved yet, per transactional topic: stored
     * since start, less those committed, rolled back or discarded after
     * too many checks since start (a half message from before a restart
     * resolved after it is not counted; the result is kept >= 0). */
    gt_metrics_head(out, "rocketmq_half_messages", "gauge",
                    "Transactional half messages not yet committed or rolled back.");
    for (size_t i = 0, nin = gt_mfam_count(m->in); i < nin; i++) {
        const gt_mseries_t *p = gt_mfam_at(m->in, i);
        const char *v[1];
        gt_mseries_t *t;
        uint64_t sent, done;
        if (p == NULL || strcmp(p->labels[1], "transaction") != 0)
            continue;
        v[0] = p->labels[0];
        if ((t = gt_mfam_get(m->tx, v)) == NULL || px_stats(st, v[0], NULL, &hs) != GT_OK)
            continue;
        sent = gt_mseries_val(p, PX_IN_MSGS);
        done = gt_mseries_val(t, PX_TX_COMMIT) + gt_mseries_val(t, PX_TX_ROLLBACK) +
               hs.discarded;
        fputs("rocketmq_half_messages{topic=\"", out);
        gt_metrics_label_value(out, v[0]);
        fprintf(out, "\"} %llu\n", (unsigned long long)(sent > done ? sent - done : 0));
    }
    if (data_dir != NULL) {
        uint64_t du = gt_du_bytes(data_dir);

        gt_metrics_head(out, "rocketmq_storage_size", "gauge",
                        "Disk space the store's files take, in bytes.");
        fprintf(out, "rocketmq_storage_size %llu\n", (unsigned long long)du);
    }
out:
    free(s);
    free(ok);
}
