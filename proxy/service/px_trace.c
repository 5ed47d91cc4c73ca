/* px_trace: the message trace's buffer, flusher and handler hooks (see
 * px_trace.h).
 *
 * Noting an event takes the buffer's mutex for a copy of its strings into
 * a preallocated ring (a send's messages go in under one lock); the flusher
 * thread encodes up to PX_TRACE_BATCH of the oldest events in place (they
 * stay counted as buffered until written, so noting never reuses their
 * slots) and appends them to PX_TRACE_TOPIC with one st_append(), waiting
 * for the store's answer before the next batch (one append in flight).  It wakes every
 * trace.flush_ms, or sooner when a quarter of the buffer is full.
 *
 * One stored record holds up to PX_TRACE_PER_REC consecutive events, keyed
 * by each distinct message id among them (ST_MAX_KEYS at most), body
 * {"v":2,"events":[...]} with each event's members that are not empty or
 * null (px_admin_trace.c fills them back in and keeps the events of the id
 * asked for).  A record per event made every traced message cost the store
 * a second record, consume-queue entry and id-index entry, which cost a
 * third to two fifths of send throughput at batch 32 (README, issue 13).
 *
 * Deliveries remember their attempt by receipt handle in a small
 * direct-mapped cache, so that a later nack can tell its attempt and
 * whether it was the last one the group allows (the store then moves the
 * message to %DLQ%<group> at its next delivery: that is the "dlq" event of
 * a nack). */
#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gt_log.h"
#include "px_svc_int.h"
#include "px_trace.h"

#define PX_TRACE_BATCH 1024
#define PX_TRACE_BODY_MAX 2048 /* one event's JSON at most */
#define PX_TRACE_PER_REC 32    /* events per stored record (<= ST_MAX_KEYS) */
/* Records per write: an event brings at most 2 keys (AMQP events: the
 * message id and its message-id property), so a record holds at least 16. */
#define PX_TRACE_RECS (PX_TRACE_BATCH / (ST_MAX_KEYS / 2))
#define PX_TRACE_BODIES (PX_TRACE_BATCH * (PX_TRACE_BODY_MAX + 1) + PX_TRACE_RECS * 32)
#define PX_TRACE_ATTEMPTS 1024 /* attempt cache slots (a power of 2) */

typedef enum px_trace_kind {
    PX_TK_PUBLISH,
    PX_TK_DELIVER,
    PX_TK_ACK,
    PX_TK_NACK,
    PX_TK_DLQ,
    PX_TK_COMMIT,
    PX_TK_ROLLBACK,
    PX_TK_REJECT,
} px_trace_kind_t;

static const char *const px_tk_names[] = {
    "publish", "deliver", "ack", "nack", "dlq", "commit", "rollback", "reject",
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
    char vhost[128];       /* AMQP events */
    char amqp_mid[128];    /* AMQP events: the message-id property */
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
    /* the flusher's records (its thread only) */
    st_message_t *msgs;            /* PX_TRACE_RECS records */
    char *bodies;                  /* their bodies, one after the other */
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

/* Copies s (NULL: "") into d[cap], cut. */
static void px_trace_cpy(char *d, size_t cap, const char *s)
{
    size_t n = s != NULL ? strnlen(s, cap - 1) : 0;

    memcpy(d, s != NULL ? s : "", n);
    d[n] = '\0';
}

/* *d = *s, copying the strings' bytes only (an event is ~1.4 KiB, its
 * strings usually a tenth of that). */
static void px_trace_ev_copy(px_trace_ev_t *d, const px_trace_ev_t *s)
{
    memcpy(d, s, offsetof(px_trace_ev_t, tag));
    px_trace_cpy(d->tag, sizeof(d->tag), s->tag);
    px_trace_cpy(d->msg_id, sizeof(d->msg_id), s->msg_id);
    px_trace_cpy(d->topic, sizeof(d->topic), s->topic);
    px_trace_cpy(d->group, sizeof(d->group), s->group);
    px_trace_cpy(d->client, sizeof(d->client), s->client);
    px_trace_cpy(d->addr, sizeof(d->addr), s->addr);
    px_trace_cpy(d->result, sizeof(d->result), s->result);
    px_trace_cpy(d->vhost, sizeof(d->vhost), s->vhost);
    px_trace_cpy(d->amqp_mid, sizeof(d->amqp_mid), s->amqp_mid);
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
    e->vhost[0] = '\0';
    e->amqp_mid[0] = '\0';
    px_trace_cpy(e->topic, sizeof(e->topic), topic);
    px_trace_cpy(e->group, sizeof(e->group), group);
    px_trace_cpy(e->client, sizeof(e->client), cid);
    px_trace_cpy(e->addr, sizeof(e->addr), peer);
    memcpy(e->result, "OK", 3);
}

/* Into the buffer, or dropped (counted) when it is full or stopped:
 * e[0..n) under one lock. */
static void px_trace_put_n(px_trace_t *tr, px_trace_ev_t *e, size_t n)
{
    size_t dropped = 0;
    bool wake = false;

    pthread_mutex_lock(&tr->mu);
    for (size_t i = 0; i < n; i++) {
        if (e[i].msg_id[0] == '\0')
            continue;
        if (tr->stopped || tr->n == tr->cap) {
            dropped++;
            continue;
        }
        e[i].seq = ++tr->seq;
        px_trace_ev_copy(&tr->ring[(tr->head + tr->n) % tr->cap], &e[i]);
        wake |= ++tr->n == tr->kick;
    }
    pthread_mutex_unlock(&tr->mu);
    if (dropped > 0)
        atomic_fetch_add(&tr->dropped, dropped);
    if (wake)
        pthread_cond_signal(&tr->cv);
}

static void px_trace_put(px_trace_t *tr, px_trace_ev_t *e)
{
    px_trace_put_n(tr, e, 1);
}

/* ---- the flusher ---- */

/* Length of the valid UTF-8 sequence at s (1..4), 0 when it is not one. */
static size_t px_trace_utf8(const unsigned char *s)
{
    size_t n = s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 ? 2 : 0;

    if (n == 0 || s[0] > 0xf4)
        return 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] > 0x9f) ||
        (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] > 0x8f))
        return 0; /* overlong, surrogate, beyond U+10FFFF */
    return n;
}

/* Appends ,"k":"s" to buf at *len, within cap, leaving room for one more
 * byte (the closing brace): s JSON-escaped, bytes that are not UTF-8 as
 * U+FFFD, cut at a character's end when it does not fit.  Nothing when s
 * is empty (the reader takes a missing member as ""). */
static void px_trace_jstr(char *buf, size_t cap, size_t *len, const char *k,
                          const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t l = *len, kl = strlen(k);

    if (*s == '\0' || l + kl + 8 >= cap)
        return;
    buf[l++] = ',';
    buf[l++] = '"';
    memcpy(buf + l, k, kl);
    l += kl;
    buf[l++] = '"';
    buf[l++] = ':';
    buf[l++] = '"';
    while (*s != '\0' && l + 9 < cap) {
        unsigned char c = (unsigned char)*s;
        size_t u, run = 0;

        /* a run of printable ASCII other than '"' and '\\' goes as is */
        while (s[run] >= 0x20 && s[run] < 0x7f && s[run] != '"' && s[run] != '\\')
            run++;
        if (run > 0) {
            if (run > cap - 9 - l)
                run = cap - 9 - l;
            memcpy(buf + l, s, run);
            l += run;
            s += run;
            continue;
        }
        if (c == '"' || c == '\\') {
            buf[l++] = '\\';
            buf[l++] = (char)c;
            s++;
        } else if (c < 0x20) {
            memcpy(buf + l, "\\u00", 4);
            buf[l + 4] = hex[c >> 4];
            buf[l + 5] = hex[c & 15];
            l += 6;
            s++;
        } else if (c < 0x80) {
            buf[l++] = (char)c;
            s++;
        } else if ((u = px_trace_utf8((const unsigned char *)s)) > 0) {
            memcpy(buf + l, s, u);
            l += u;
            s += u;
        } else {
            memcpy(buf + l, "\\ufffd", 6);
            l += 6;
            s++;
        }
    }
    buf[l++] = '"';
    buf[l] = '\0';
    *len = l;
}

/* Appends ,"k":v; nothing when v < 0 (the reader takes null). */
static void px_trace_jnum(char *buf, size_t cap, size_t *len, const char *k, int64_t v)
{
    char digits[24];
    size_t nd = 0, kl = strlen(k), l = *len;
    uint64_t u = (uint64_t)v;

    if (v < 0)
        return;
    do {
        digits[nd++] = (char)('0' + u % 10);
        u /= 10;
    } while (u > 0);
    if (l + kl + nd + 5 >= cap)
        return; /* leaves room for the closing brace */
    buf[l++] = ',';
    buf[l++] = '"';
    memcpy(buf + l, k, kl);
    l += kl;
    buf[l++] = '"';
    buf[l++] = ':';
    while (nd > 0)
        buf[l++] = digits[--nd];
    buf[l] = '\0';
    *len = l;
}

/* One event's JSON object (members that are empty or null left out) at
 * buf; its length (< cap). */
static size_t px_trace_json(const px_trace_ev_t *e, char *buf, size_t cap)
{
    size_t l;
    int w = snprintf(buf, cap, "{\"time_ms\":%lld,\"seq\":%llu,\"kind\":\"%s\"",
                     (long long)e->time_ms, (unsigned long long)e->seq,
                     px_tk_names[e->kind]);

    l = w > 0 && (size_t)w < cap ? (size_t)w : 0;
    px_trace_jstr(buf, cap, &l, "msg_id", e->msg_id);
    px_trace_jstr(buf, cap, &l, "topic", e->topic);
    px_trace_jstr(buf, cap, &l, "group", e->group);
    px_trace_jstr(buf, cap, &l, "client_id", e->client);
    px_trace_jstr(buf, cap, &l, "addr", e->addr);
    if (strcmp(e->result, "OK") != 0)
        px_trace_jstr(buf, cap, &l, "result", e->result);
    px_trace_jstr(buf, cap, &l, "tag", e->tag);
    px_trace_jstr(buf, cap, &l, "vhost", e->vhost);
    px_trace_jstr(buf, cap, &l, "amqp_message_id", e->amqp_mid);
    px_trace_jnum(buf, cap, &l, "attempt", e->attempt > 0 ? (int64_t)e->attempt : -1);
    px_trace_jnum(buf, cap, &l, "queue", e->queue);
    px_trace_jnum(buf, cap, &l, "offset", e->offset);
    px_trace_jnum(buf, cap, &l, "invisible_ms", e->invisible_ms);
    px_trace_jnum(buf, cap, &l, "body_size", e->body_size);
    buf[l++] = '}'; /* room was left for it */
    buf[l] = '\0';
    return l;
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

/* The i-th event of those being written (the flusher's thread). */
static const px_trace_ev_t *px_trace_at(const px_trace_t *tr, size_t i)
{
    return &tr->ring[(tr->head + i) % tr->cap];
}

/* Adds key k to m unless it has it (hs: the hashes of m's keys); false
 * when m has no room for it. */
static bool px_trace_key(st_message_t *m, uint64_t *hs, const char *k)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */

    if (k[0] == '\0')
        return true;
    for (const char *c = k; *c != '\0'; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ULL;
    for (uint32_t j = 0; j < m->nkeys; j++)
        if (hs[j] == h && strcmp(m->keys[j], k) == 0)
            return true;
    if (m->nkeys == ST_MAX_KEYS)
        return false;
    hs[m->nkeys] = h;
    m->keys[m->nkeys++] = k;
    return true;
}

/* Record r of a write, its body at *body: events batch[first..) while they
 * fit (PX_TRACE_PER_REC events, ST_MAX_KEYS distinct keys: their message
 * ids and AMQP message-id properties).  Returns how many it took (>= 1). */
static size_t px_trace_record(px_trace_t *tr, size_t r, size_t first, size_t n,
                              char **body)
{
    static const char head[] = "{\"v\":2,\"events\":[";
    st_message_t *m = &tr->msgs[r];
    uint64_t hs[ST_MAX_KEYS]; /* the keys' hashes */
    char *b = *body;
    size_t l, i;

    memset(m, 0, sizeof(*m));
    memcpy(b, head, sizeof(head) - 1);
    l = sizeof(head) - 1;
    for (i = first; i < n && i - first < PX_TRACE_PER_REC; i++) {
        const px_trace_ev_t *e = px_trace_at(tr, i);
        uint32_t had = m->nkeys;

        if (!px_trace_key(m, hs, e->msg_id) || !px_trace_key(m, hs, e->amqp_mid)) {
            m->nkeys = had; /* this one starts the next record */
            break;
        }
        if (i > first)
            b[l++] = ',';
        l += px_trace_json(e, b + l, PX_TRACE_BODY_MAX);
    }
    memcpy(b + l, "]}", 3);
    l += 2;
    /* The first event's kind as the tag; the last one's time as birth. */
    m->tag = px_tk_names[px_trace_at(tr, first)->kind];
    m->body = b;
    m->body_len = (uint32_t)l;
    m->born_ts_ms = px_trace_at(tr, i - 1)->time_ms;
    m->queue_id = ST_QUEUE_ANY;
    *body = b + l + 1;
    return i - first;
}

/* Writes batch[0..n) with one append and waits for the answer. */
static void px_trace_write(px_trace_t *tr, size_t n)
{
    char *body = tr->bodies;
    size_t nrec = 0;

    for (size_t i = 0; i < n && nrec < PX_TRACE_RECS; nrec++)
        i += px_trace_record(tr, nrec, i, n, &body);
    pthread_mutex_lock(&tr->wmu);
    tr->wdone = false;
    pthread_mutex_unlock(&tr->wmu);
    st_append(tr->store, PX_TRACE_TOPIC, tr->msgs, nrec, px_trace_appended, tr);
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
        /* The k oldest are read in place: they stay counted in n (so
         * noting never writes their slots) until they are written. */
        k = tr->n < PX_TRACE_BATCH ? tr->n : PX_TRACE_BATCH;
        pthread_mutex_unlock(&tr->mu);
        px_trace_write(tr, k);
        pthread_mutex_lock(&tr->mu);
        tr->head = (tr->head + k) % tr->cap;
        tr->n -= k;
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
    tr->msgs = calloc(PX_TRACE_RECS, sizeof(*tr->msgs));
    tr->bodies = malloc(PX_TRACE_BODIES);
    if (tr->ring == NULL || tr->msgs == NULL ||
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
    px_trace_ev_t e[8];
    const char *topic;
    size_t k = 0;

    if (tr == NULL || req->n_messages == 0 || req->messages[0]->topic == NULL)
        return;
    topic = req->messages[0]->topic->name;
    if (!px_trace_listed(&tr->cfg->trace.topics, topic))
        return;
    for (size_t i = 0; i < req->n_messages; i++) {
        const Apache__Rocketmq__V2__SystemProperties *sp =
            req->messages[i]->system_properties;
        px_trace_ev_t *x = &e[k];

        if (k == 0)
            px_trace_ev_init(x, PX_TK_PUBLISH, call, topic, NULL);
        else /* the same call, topic and time */
            px_trace_ev_copy(x, &e[0]);
        px_trace_cpy(x->msg_id, sizeof(x->msg_id), sp != NULL ? sp->message_id : NULL);
        px_trace_cpy(x->tag, sizeof(x->tag),
                     sp != NULL && sp->tag_present_case ? sp->tag : NULL);
        x->body_size = (int64_t)req->messages[i]->body.len;
        x->queue = -1;
        x->offset = -1;
        if (err == GT_OK && items != NULL && i < n) {
            x->queue = (int32_t)items[i].queue_id;
            x->offset = (int64_t)items[i].queue_offset;
        }
        memcpy(x->result, "OK", 3);
        px_trace_err(x, err == GT_OK && n != req->n_messages ? GT_EIO : err);
        if (++k == sizeof(e) / sizeof(e[0]) || i + 1 == req->n_messages) {
            px_trace_put_n(tr, e, k);
            k = 0;
        }
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

/* ---- the AMQP gateway's events ---- */

bool px_trace_wants_queue(px_trace_t *tr, const char *queue)
{
    return tr != NULL && px_trace_listed(&tr->cfg->trace.topics, queue);
}

void px_trace_note_ext(px_trace_t *tr, const px_trace_ext_t *x)
{
    px_trace_ev_t e;
    size_t k;

    if (tr == NULL || x->msg_id == NULL)
        return;
    for (k = 0; k < sizeof(px_tk_names) / sizeof(px_tk_names[0]); k++)
        if (strcmp(px_tk_names[k], x->kind) == 0)
            break;
    if (k == sizeof(px_tk_names) / sizeof(px_tk_names[0]))
        return;
    px_trace_ev_init(&e, (px_trace_kind_t)k, NULL, x->queue, NULL);
    snprintf(e.msg_id, sizeof(e.msg_id), "%s", x->msg_id);
    snprintf(e.client, sizeof(e.client), "%s", x->client_id != NULL ? x->client_id : "");
    snprintf(e.addr, sizeof(e.addr), "%s", x->addr != NULL ? x->addr : "");
    snprintf(e.vhost, sizeof(e.vhost), "%s", x->vhost != NULL ? x->vhost : "");
    snprintf(e.amqp_mid, sizeof(e.amqp_mid), "%s",
             x->amqp_message_id != NULL ? x->amqp_message_id : "");
    if (x->result != NULL)
        snprintf(e.result, sizeof(e.result), "%s", x->result);
    e.attempt = x->attempt;
    e.offset = x->offset;
    e.queue = x->offset >= 0 ? 0 : -1;
    e.body_size = x->body_size;
    px_trace_put(tr, &e);
}
