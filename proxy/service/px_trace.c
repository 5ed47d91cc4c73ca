/* px_trace: the message trace's buffer, flusher and handler hooks (see
 * px_trace.h).
 *
 * Noting an event takes the buffer's mutex for a copy of ~900 bytes into a
 * preallocated ring; the flusher thread takes up to PX_TRACE_BATCH events
 * at a time out of it and appends them to PX_TRACE_TOPIC with one
 * st_append(), waiting for the store's answer before the next batch (one
 * append in flight).  It wakes every trace.flush_ms, or sooner when a
 * quarter of the buffer is full.
 *
 * Deliveries remember their attempt by receipt handle in a small
 * direct-mapped cache, so that a later nack can tell its attempt and
 * whether it was the last one the group allows (the store then moves the
 * message to %DLQ%<group> at its next delivery: that is the "dlq" event of
 * a nack). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gt_log.h"
#include "px_svc_int.h"
#include "px_trace.h"

#define PX_TRACE_BATCH 1024
#define PX_TRACE_BODY_MAX 1400
#define PX_TRACE_ATTEMPTS 1024 /* attempt cache slots (a power of 2) */

typedef enum px_trace_kind {
    PX_TK_PUBLISH,
    PX_TK_DELIVER,
    PX_TK_ACK,
    PX_TK_NACK,
    PX_TK_DLQ,
    PX_TK_COMMIT,
    PX_TK_ROLLBACK,
} px_trace_kind_t;

static const char *const px_tk_names[] = {
    "publish", "deliver", "ack", "nack", "dlq", "commit", "rollback",
};

typedef struct px_trace_ev {
    int64_t time_ms;
    uint64_t seq;
    px_trace_kind_t kind;
    uint32_t attempt;      /* 0: unknown / not applicable */
    int32_t queue;         /* -1: none */
    int64_t offset;        /* -1: none */
    int64_t invisible_ms;  /* nack: -1 none */
    int64_t body_size;     /* publish, deliver: -1 none */
    char tag[128];         /* publish, deliver (cut) */
    char msg_id[ST_MSG_ID_MAX];
    char topic[ST_NAME_MAX + 1];
    char group[ST_NAME_MAX + 1];
    char client[PX_CLIENT_ID_MAX];
    char addr[64];
    char result[96];
} px_trace_ev_t;

typedef struct px_trace_att {
    char handle[ST_HANDLE_MAX];
    uint32_t attempt;
} px_trace_att_t;

struct px_trace {
    st_store_t *store;
    const cfg_t *cfg;
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* wakes the flusher */
    px_trace_ev_t *ring;
    size_t cap, head, n;     /* events at head .. head + n - 1 (mod cap) */
    size_t kick;             /* wake the flusher at this many */
    uint64_t seq;
    bool stopping, stopped;
    bool started;
    /* Test only (GANTRY_TEST_TRACE_HOLD=1): the flusher writes nothing
     * until it stops, so that a small buffer fills (trace.test.mjs). */
    bool test_hold;
    pthread_t thr;
    /* the flusher's batch (its thread only) */
    px_trace_ev_t *batch;
    st_message_t *msgs;
    char (*bodies)[PX_TRACE_BODY_MAX];
    /* the append in flight */
    pthread_mutex_t wmu;
    pthread_cond_t wcv;
    bool wdone;
    gt_err_t werr;
    /* attempt cache */
    pthread_mutex_t amu;
    px_trace_att_t att[PX_TRACE_ATTEMPTS];
    atomic_uint_fast64_t written, dropped, failed;
};

static int64_t px_trace_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool px_trace_listed(const cfg_strlist_t *l, const char *name)
{
    if (name == NULL)
        return false;
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], "*") == 0 || strcmp(l->v[i], name) == 0)
            return true;
    return false;
}

bool px_trace_enabled(const cfg_t *cfg)
{
    return cfg->trace.topics.n > 0 || cfg->trace.groups.n > 0;
}

/* Is an event of (topic, group) traced?  group NULL: a producer's. */
static bool px_trace_wants(const px_trace_t *tr, const char *topic,
                           const char *group)
{
    if (tr == NULL)
        return false;
    return px_trace_listed(&tr->cfg->trace.topics, topic) ||
           px_trace_listed(&tr->cfg->trace.groups, group);
}

/* A blank event of kind for (topic, group), the call's client. */
static void px_trace_ev_init(px_trace_ev_t *e, px_trace_kind_t kind,
                             px_call_t *call, const char *topic,
                             const char *group)
{
    const char *cid = call != NULL ? px_client_id(call) : NULL;
    const char *peer = call != NULL ? px_call_peer(call) : NULL;

    e->time_ms = px_trace_now_ms();
    e->kind = kind;
    e->attempt = 0;
    e->queue = -1;
    e->offset = -1;
    e->invisible_ms = -1;
    e->body_size = -1;
    e->tag[0] = '\0';
    e->msg_id[0] = '\0';
    snprintf(e->topic, sizeof(e->topic), "%s", topic != NULL ? topic : "");
    snprintf(e->group, sizeof(e->group), "%s", group != NULL ? group : "");
    snprintf(e->client, sizeof(e->client), "%s", cid != NULL ? cid : "");
    snprintf(e->addr, sizeof(e->addr), "%s", peer != NULL ? peer : "");
    snprintf(e->result, sizeof(e->result), "OK");
}

/* Into the buffer, or dropped (counted) when it is full or stopped. */
static void px_trace_put(px_trace_t *tr, px_trace_ev_t *e)
{
    bool wake = false;

    if (e->msg_id[0] == '\0')
        return;
    pthread_mutex_lock(&tr->mu);
    if (tr->stopped || tr->n == tr->cap) {
        pthread_mutex_unlock(&tr->mu);
        atomic_fetch_add(&tr->dropped, 1);
        return;
    }
    e->seq = ++tr->seq;
    tr->ring[(tr->head + tr->n) % tr->cap] = *e;
    wake = ++tr->n == tr->kick;
    pthread_mutex_unlock(&tr->mu);
    if (wake)
        pthread_cond_signal(&tr->cv);
}

/* ---- the flusher ---- */

/* Appends JSON string s (escaped) to buf at *len, within cap. */
static void px_trace_jstr(char *buf, size_t cap, size_t *len, const char *k,
                          const char *s)
{
    size_t l = *len;
    int w = snprintf(buf + l, l < cap ? cap - l : 0, ",\"%s\":\"", k);

    l += w > 0 ? (size_t)w : 0;
    for (; *s != '\0' && l + 8 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[l++] = '\\';
            buf[l++] = (char)c;
        } else if (c < 0x20) {
            l += (size_t)snprintf(buf + l, cap - l, "\\u%04x", c);
        } else {
            buf[l++] = (char)c;
        }
    }
    if (l + 1 < cap)
        buf[l++] = '"';
    buf[l < cap ? l : cap - 1] = '\0';
    *len = l;
}

/* Appends ,"k":v (null when v < 0). */
static void px_trace_jnum(char *buf, size_t cap, size_t *len, const char *k, int64_t v)
{
    int w;

    if (*len >= cap)
        return;
    w = v >= 0 ? snprintf(buf + *len, cap - *len, ",\"%s\":%lld", k, (long long)v)
               : snprintf(buf + *len, cap - *len, ",\"%s\":null", k);
    *len += w > 0 ? (size_t)w : 0;
}

static size_t px_trace_json(const px_trace_ev_t *e, char *buf, size_t cap)
{
    size_t l;
    int w = snprintf(buf, cap, "{\"time_ms\":%lld,\"seq\":%llu,\"kind\":\"%s\"",
                     (long long)e->time_ms, (unsigned long long)e->seq,
                     px_tk_names[e->kind]);

    l = w > 0 ? (size_t)w : 0;
    px_trace_jstr(buf, cap, &l, "msg_id", e->msg_id);
    px_trace_jstr(buf, cap, &l, "topic", e->topic);
    px_trace_jstr(buf, cap, &l, "group", e->group);
    px_trace_jstr(buf, cap, &l, "client_id", e->client);
    px_trace_jstr(buf, cap, &l, "addr", e->addr);
    px_trace_jstr(buf, cap, &l, "result", e->result);
    px_trace_jstr(buf, cap, &l, "tag", e->tag);
    /* Every event has every member, null where it does not apply. */
    px_trace_jnum(buf, cap, &l, "attempt", e->attempt > 0 ? (int64_t)e->attempt : -1);
    px_trace_jnum(buf, cap, &l, "queue", e->queue);
    px_trace_jnum(buf, cap, &l, "offset", e->offset);
    px_trace_jnum(buf, cap, &l, "invisible_ms", e->invisible_ms);
    px_trace_jnum(buf, cap, &l, "body_size", e->body_size);
    if (l < cap)
        l += (size_t)snprintf(buf + l, cap - l, "}");
    return l < cap ? l : cap - 1;
}

static void px_trace_appended(void *arg, gt_err_t err,
                              const st_append_item_t *items, size_t n)
{
    px_trace_t *tr = arg;
    (void)items;
    (void)n;
    pthread_mutex_lock(&tr->wmu);
    tr->werr = err;
    tr->wdone = true;
    pthread_cond_signal(&tr->wcv);
    pthread_mutex_unlock(&tr->wmu);
}

/* Writes batch[0..n) with one append and waits for the answer. */
static void px_trace_write(px_trace_t *tr, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        st_message_t *m = &tr->msgs[i];
        const px_trace_ev_t *e = &tr->batch[i];
        memset(m, 0, sizeof(*m));
        m->tag = px_tk_names[e->kind];
        m->keys[0] = e->msg_id;
        m->nkeys = 1;
        m->body = tr->bodies[i];
        m->body_len = (uint32_t)px_trace_json(e, tr->bodies[i], PX_TRACE_BODY_MAX);
        m->born_ts_ms = e->time_ms;
        m->queue_id = ST_QUEUE_ANY;
    }
    pthread_mutex_lock(&tr->wmu);
    tr->wdone = false;
    pthread_mutex_unlock(&tr->wmu);
    st_append(tr->store, PX_TRACE_TOPIC, tr->msgs, n, px_trace_appended, tr);
    pthread_mutex_lock(&tr->wmu);
    while (!tr->wdone)
        pthread_cond_wait(&tr->wcv, &tr->wmu);
    pthread_mutex_unlock(&tr->wmu);
    if (tr->werr == GT_OK) {
        atomic_fetch_add(&tr->written, n);
    } else {
        atomic_fetch_add(&tr->failed, n);
        GT_LOG(WARN, "trace", "writing %zu trace events failed: %s", n,
               gt_err_str(tr->werr));
    }
}

static void *px_trace_flusher(void *arg)
{
    px_trace_t *tr = arg;

    pthread_mutex_lock(&tr->mu);
    for (;;) {
        struct timespec dl;
        size_t k;

        if ((tr->test_hold || tr->n < tr->kick) && !tr->stopping) {
            clock_gettime(CLOCK_REALTIME, &dl);
            dl.tv_sec += tr->cfg->trace.flush_ms / 1000;
            dl.tv_nsec += (long)(tr->cfg->trace.flush_ms % 1000) * 1000000L;
            if (dl.tv_nsec >= 1000000000L) {
                dl.tv_sec++;
                dl.tv_nsec -= 1000000000L;
            }
            while ((tr->test_hold || tr->n < tr->kick) && !tr->stopping &&
                   pthread_cond_timedwait(&tr->cv, &tr->mu, &dl) != ETIMEDOUT)
                ;
            if (tr->test_hold && !tr->stopping)
                continue;
        }
        if (tr->n == 0) {
            if (tr->stopping)
                break;
            continue;
        }
        k = tr->n < PX_TRACE_BATCH ? tr->n : PX_TRACE_BATCH;
        for (size_t i = 0; i < k; i++)
            tr->batch[i] = tr->ring[(tr->head + i) % tr->cap];
        tr->head = (tr->head + k) % tr->cap;
        tr->n -= k;
        pthread_mutex_unlock(&tr->mu);
        px_trace_write(tr, k);
        pthread_mutex_lock(&tr->mu);
    }
    tr->stopped = true;
    pthread_mutex_unlock(&tr->mu);
    return NULL;
}

/* ---- life ---- */

typedef struct px_trace_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    gt_err_t err;
} px_trace_wait_t;

static void px_trace_topic_done(void *arg, gt_err_t err)
{
    px_trace_wait_t *w = arg;
    pthread_mutex_lock(&w->mu);
    w->err = err;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Creates the trace topic (or keeps it as it is). */
static gt_err_t px_trace_topic(st_store_t *store)
{
    px_trace_wait_t w = {.mu = PTHREAD_MUTEX_INITIALIZER,
                         .cv = PTHREAD_COND_INITIALIZER};
    st_topic_t t = {.type = ST_TOPIC_NORMAL, .queue_count = 4,
                    .perm = ST_PERM_READ | ST_PERM_WRITE};

    snprintf(t.name, sizeof(t.name), "%s", PX_TRACE_TOPIC);
    st_topic_put(store, &t, px_trace_topic_done, &w);
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return w.err;
}

gt_err_t px_trace_start(st_store_t *store, const cfg_t *cfg, px_trace_t **out)
{
    px_trace_t *tr;
    gt_err_t rc;

    *out = NULL;
    if (!px_trace_enabled(cfg))
        return GT_OK;
    if ((rc = px_trace_topic(store)) != GT_OK) {
        GT_LOG(ERROR, "trace", "cannot create the trace topic %s: %s",
               PX_TRACE_TOPIC, gt_err_str(rc));
        return rc;
    }
    if ((tr = calloc(1, sizeof(*tr))) == NULL)
        return GT_ENOMEM;
    tr->store = store;
    tr->cfg = cfg;
    tr->cap = (size_t)cfg->trace.buffer_events;
    tr->kick = tr->cap / 4 > 0 ? tr->cap / 4 : 1;
    {
        const char *hold = getenv("GANTRY_TEST_TRACE_HOLD");

        tr->test_hold = hold != NULL && strcmp(hold, "1") == 0;
    }
    pthread_mutex_init(&tr->mu, NULL);
    pthread_cond_init(&tr->cv, NULL);
    pthread_mutex_init(&tr->wmu, NULL);
    pthread_cond_init(&tr->wcv, NULL);
    pthread_mutex_init(&tr->amu, NULL);
    atomic_init(&tr->written, 0);
    atomic_init(&tr->dropped, 0);
    atomic_init(&tr->failed, 0);
    tr->ring = calloc(tr->cap, sizeof(*tr->ring));
    tr->batch = calloc(PX_TRACE_BATCH, sizeof(*tr->batch));
    tr->msgs = calloc(PX_TRACE_BATCH, sizeof(*tr->msgs));
    tr->bodies = calloc(PX_TRACE_BATCH, sizeof(*tr->bodies));
    if (tr->ring == NULL || tr->batch == NULL || tr->msgs == NULL ||
        tr->bodies == NULL || pthread_create(&tr->thr, NULL, px_trace_flusher, tr) != 0) {
        px_trace_free(tr);
        return GT_ENOMEM;
    }
    tr->started = true;
    GT_LOG(INFO, "trace", "tracing %zu topics and %zu groups into %s (buffer %zu events, "
           "flush every %d ms)", cfg->trace.topics.n, cfg->trace.groups.n,
           PX_TRACE_TOPIC, tr->cap, cfg->trace.flush_ms);
    *out = tr;
    return GT_OK;
}

void px_trace_stop(px_trace_t *tr)
{
    if (tr == NULL || !tr->started)
        return;
    pthread_mutex_lock(&tr->mu);
    tr->stopping = true;
    pthread_cond_signal(&tr->cv);
    pthread_mutex_unlock(&tr->mu);
    pthread_join(tr->thr, NULL);
    tr->started = false;
    GT_LOG(INFO, "trace", "trace events: %llu written, %llu dropped (buffer full), "
           "%llu failed", (unsigned long long)atomic_load(&tr->written),
           (unsigned long long)atomic_load(&tr->dropped),
           (unsigned long long)atomic_load(&tr->failed));
}

void px_trace_free(px_trace_t *tr)
{
    if (tr == NULL)
        return;
    px_trace_stop(tr);
    pthread_mutex_destroy(&tr->mu);
    pthread_cond_destroy(&tr->cv);
    pthread_mutex_destroy(&tr->wmu);
    pthread_cond_destroy(&tr->wcv);
    pthread_mutex_destroy(&tr->amu);
    free(tr->ring);
    free(tr->batch);
    free(tr->msgs);
    free(tr->bodies);
    free(tr);
}

void px_trace_write_metrics(px_trace_t *tr, FILE *out)
{
    if (tr == NULL)
        return;
    fprintf(out,
            "# HELP gantry_trace_events_total Message trace events: written to the "
            "trace topic, dropped (buffer full), failed (store error).\n"
            "# TYPE gantry_trace_events_total counter\n"
            "gantry_trace_events_total{result=\"written\"} %llu\n"
            "gantry_trace_events_total{result=\"dropped\"} %llu\n"
            "gantry_trace_events_total{result=\"failed\"} %llu\n",
            (unsigned long long)atomic_load(&tr->written),
            (unsigned long long)atomic_load(&tr->dropped),
            (unsigned long long)atomic_load(&tr->failed));
}

/* ---- attempt cache ---- */

static size_t px_trace_slot(const char *handle)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *handle != '\0'; handle++)
        h = (h ^ (unsigned char)*handle) * 1099511628211ULL;
    return (size_t)(h & (PX_TRACE_ATTEMPTS - 1));
}

static void px_trace_att_put(px_trace_t *tr, const char *handle, uint32_t attempt)
{
    px_trace_att_t *a = &tr->att[px_trace_slot(handle)];
    pthread_mutex_lock(&tr->amu);
    snprintf(a->handle, sizeof(a->handle), "%s", handle);
    a->attempt = attempt;
    pthread_mutex_unlock(&tr->amu);
}

/* The attempt of the delivery with handle (forgotten), 0 if unknown. */
static uint32_t px_trace_att_take(px_trace_t *tr, const char *handle)
{
    px_trace_att_t *a = &tr->att[px_trace_slot(handle)];
    uint32_t r = 0;
    pthread_mutex_lock(&tr->amu);
    if (strcmp(a->handle, handle) == 0) {
        r = a->attempt;
        a->handle[0] = '\0';
    }
    pthread_mutex_unlock(&tr->amu);
    return r;
}

/* ---- hooks ---- */

static void px_trace_err(px_trace_ev_t *e, gt_err_t err)
{
    if (err != GT_OK)
        snprintf(e->result, sizeof(e->result), "%s", gt_err_str(err));
}

void px_trace_sent(px_svc_t *svc, px_call_t *call,
                   const Apache__Rocketmq__V2__SendMessageRequest *req,
                   gt_err_t err, const st_append_item_t *items, size_t n)
{
    px_trace_t *tr = svc->trace;
    px_trace_ev_t e;
    const char *topic;

    if (tr == NULL || req->n_messages == 0 || req->messages[0]->topic == NULL)
        return;
    topic = req->messages[0]->topic->name;
    if (!px_trace_listed(&tr->cfg->trace.topics, topic))
        return;
    for (size_t i = 0; i < req->n_messages; i++) {
        const Apache__Rocketmq__V2__SystemProperties *sp =
            req->messages[i]->system_properties;
        px_trace_ev_init(&e, PX_TK_PUBLISH, call, topic, NULL);
        snprintf(e.msg_id, sizeof(e.msg_id), "%s",
                 sp != NULL && sp->message_id != NULL ? sp->message_id : "");
        snprintf(e.tag, sizeof(e.tag), "%s",
                 sp != NULL && sp->tag_present_case && sp->tag != NULL ? sp->tag : "");
        e.body_size = (int64_t)req->messages[i]->body.len;
        if (err == GT_OK && items != NULL && i < n) {
            e.queue = (int32_t)items[i].queue_id;
            e.offset = (int64_t)items[i].queue_offset;
        }
        px_trace_err(&e, err == GT_OK && n != req->n_messages ? GT_EIO : err);
        px_trace_put(tr, &e);
    }
}

void px_trace_delivered(px_svc_t *svc, px_call_t *call, const char *group,
                        const char *topic, const st_popped_t *p)
{
    px_trace_t *tr = svc->trace;
    px_trace_ev_t e;

    if (!px_trace_wants(tr, topic, group))
        return;
    px_trace_ev_init(&e, PX_TK_DELIVER, call, topic, group);
    snprintf(e.msg_id, sizeof(e.msg_id), "%s", p->msg.msg_id != NULL ? p->msg.msg_id : "");
    e.attempt = p->attempt;
    snprintf(e.tag, sizeof(e.tag), "%s", p->msg.tag != NULL ? p->msg.tag : "");
    e.body_size = p->msg.body_len;
    e.queue = p->msg.queue_id;
    e.offset = (int64_t)p->msg.queue_offset;
    px_trace_att_put(tr, p->handle, p->attempt);
    px_trace_put(tr, &e);
}

void px_trace_acked(px_svc_t *svc, px_call_t *call,
                    const Apache__Rocketmq__V2__AckMessageRequest *req,
                    const gt_err_t *errs)
{
    px_trace_t *tr = svc->trace;
    px_trace_ev_t e;

    if (req->group == NULL || req->topic == NULL ||
        !px_trace_wants(tr, req->topic->name, req->group->name))
        return;
    for (size_t i = 0; i < req->n_entries; i++) {
        const Apache__Rocketmq__V2__AckMessageEntry *a = req->entries[i];
        px_trace_ev_init(&e, PX_TK_ACK, call, req->topic->name, req->group->name);
        snprintf(e.msg_id, sizeof(e.msg_id), "%s", a->message_id != NULL ? a->message_id : "");
        if (a->receipt_handle != NULL)
            e.attempt = px_trace_att_take(tr, a->receipt_handle);
        px_trace_err(&e, errs != NULL ? errs[i] : GT_ENOMEM);
        px_trace_put(tr, &e);
    }
}

void px_trace_nacked(px_svc_t *svc, px_call_t *call,
                     const Apache__Rocketmq__V2__ChangeInvisibleDurationRequest *req,
                     gt_err_t err)
{
    px_trace_t *tr = svc->trace;
    px_trace_ev_t e;
    st_group_t g;

    if (req->group == NULL || req->topic == NULL ||
        !px_trace_wants(tr, req->topic->name, req->group->name))
        return;
    px_trace_ev_init(&e, PX_TK_NACK, call, req->topic->name, req->group->name);
    snprintf(e.msg_id, sizeof(e.msg_id), "%s", req->message_id != NULL ? req->message_id : "");
    if (req->receipt_handle != NULL)
        e.attempt = px_trace_att_take(tr, req->receipt_handle);
    e.invisible_ms = px_duration_ms(req->invisible_duration);
    px_trace_err(&e, err);
    px_trace_put(tr, &e);
    /* The last attempt the group allows: the store dead-letters the
     * message instead of delivering it again. */
    if (err == GT_OK && e.attempt > 0 &&
        px_group_find(svc, req->group->name, &g) == GT_OK &&
        e.attempt >= g.max_delivery_attempts) {
        e.kind = PX_TK_DLQ;
        e.invisible_ms = -1;
        snprintf(e.result, sizeof(e.result), "OK: max delivery attempts (%u) reached",
                 g.max_delivery_attempts);
        px_trace_put(tr, &e);
    }
}

void px_trace_forwarded(px_svc_t *svc, px_call_t *call,
                        const Apache__Rocketmq__V2__ForwardMessageToDeadLetterQueueRequest *req,
                        int code)
{
    px_trace_t *tr = svc->trace;
    px_trace_ev_t e;

    if (req->group == NULL || req->topic == NULL ||
        !px_trace_wants(tr, req->topic->name, req->group->name))
        return;
    px_trace_ev_init(&e, PX_TK_DLQ, call, req->topic->name, req->group->name);
    snprintf(e.msg_id, sizeof(e.msg_id), "%s", req->message_id != NULL ? req->message_id : "");
    e.attempt = req->delivery_attempt > 0 ? (uint32_t)req->delivery_attempt : 0;
    if (req->receipt_handle != NULL)
        (void)px_trace_att_take(tr, req->receipt_handle);
    if (code != PX_CODE(OK)) {
        const ProtobufCEnumValue *v =
            protobuf_c_enum_descriptor_get_value(&apache__rocketmq__v2__code__descriptor, code);
        snprintf(e.result, sizeof(e.result), "%s", v != NULL ? v->name : "error");
    }
    px_trace_put(tr, &e);
}

void px_trace_tx_end(px_svc_t *svc, px_call_t *call, const char *topic,
                     const char *msg_id, bool commit, gt_err_t err)
{
    px_trace_t *tr = svc->trace;
    px_trace_ev_t e;

    if (tr == NULL || !px_trace_listed(&tr->cfg->trace.topics, topic))
        return;
    px_trace_ev_init(&e, commit ? PX_TK_COMMIT : PX_TK_ROLLBACK, call, topic, NULL);
    snprintf(e.msg_id, sizeof(e.msg_id), "%s", msg_id);
    px_trace_err(&e, err);
    px_trace_put(tr, &e);
}
