/* px_trace: the message trace's buffer, flusher and handler hooks (see
 * px_trace.h).
 *
 * Noting: a hook fills a px_trace_in_t with borrowed strings; the events
 * of a call (a send's messages, up to 32 at a time) are packed under one
 * lock of the buffer's mutex into a byte ring (a header and the strings,
 * 100-250 bytes an event; no allocation).  When the ring has no room, or
 * trace.buffer_events are held, the event is dropped and counted: noting
 * never waits for the flusher (back-pressure would slow the clients the
 * trace is meant to watch).
 *
 * The flusher thread reads the oldest events in place (they stay counted
 * as held until written, so noting never writes over them), encodes them
 * into records of up to PX_TRACE_PER_REC events (px_trace_record: a
 * string table per record, events as arrays of numbers) and appends up to
 * PX_TRACE_RECS records to PX_TRACE_TOPIC with one st_append(), waiting
 * for the store's answer before the next one.  It writes as soon as
 * PX_TRACE_KICK events (or a quarter of the buffer) are held, else every
 * trace.flush_ms.  A record is keyed by each distinct message id among its
 * events (ST_MAX_KEYS at most), so the store's key index finds it
 * (px_admin_trace.c reads it back).
 *
 * Cost: at batch 32 an event adds ~60 bytes to the store (its id as a key,
 * ~45 bytes of body) and one key index entry.  Earlier versions wrote a
 * record per event, then records of JSON objects (~300 bytes an event)
 * from 1.4 KiB ring slots: +77 % and +31 % CPU per message sent, and at
 * ~300k messages/s the flusher fell behind and dropped events (README,
 * issue 13).
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

/* Events per stored record (at most ST_MAX_KEYS distinct keys too). */
#define PX_TRACE_PER_REC 32
/* Records per append, and the bytes their bodies may take. */
#define PX_TRACE_RECS 128
#define PX_TRACE_BODIES (4u << 20)
#define PX_TRACE_ATTEMPTS 1024 /* attempt cache slots (a power of 2) */
#define PX_TRACE_ALIGN 8
#define PX_TRACE_EV_BYTES 256  /* ring bytes per trace.buffer_events */
/* The flusher writes as soon as this many are held (or a quarter of the
 * buffer, or trace.flush_ms after it last wrote). */
#define PX_TRACE_KICK 4096

typedef enum px_trace_kind {
    PX_TK_PUBLISH,
    PX_TK_DELIVER,
    PX_TK_ACK,
    PX_TK_NACK,
    PX_TK_DLQ,
    PX_TK_COMMIT,
    PX_TK_ROLLBACK,
    PX_TK_REJECT,
    PX_TK_N,
} px_trace_kind_t;

static const char *const px_tk_names[PX_TK_N] = {
    "publish", "deliver", "ack", "nack", "dlq", "commit", "rollback", "reject",
};

/* An event's strings, in the order of a packed event. */
enum {
    PX_TF_MSG_ID,
    PX_TF_AMQP_MID, /* AMQP events: the message-id property */
    PX_TF_TOPIC,
    PX_TF_GROUP,
    PX_TF_CLIENT,
    PX_TF_ADDR,
    PX_TF_RESULT,
    PX_TF_TAG,      /* publish, deliver */
    PX_TF_VHOST,    /* AMQP events */
    PX_TF_N,
};

/* Each string's bytes at most (longer ones are cut at a character's
 * start). */
static const uint16_t px_tf_cap[PX_TF_N] = {
    ST_MSG_ID_MAX - 1, 127, ST_NAME_MAX, ST_NAME_MAX, PX_CLIENT_ID_MAX - 1,
    63, 95, 127, 127,
};

/* An event as a hook notes it: strings borrowed (NULL: ""). */
typedef struct px_trace_in {
    px_trace_kind_t kind;
    uint32_t attempt;      /* 0: unknown / not applicable */
    int32_t queue;         /* -1: none */
    int64_t time_ms;
    int64_t offset;        /* -1: none */
    int64_t invisible_ms;  /* nack: -1 none */
    int64_t body_size;     /* publish, deliver: -1 none */
    const char *s[PX_TF_N];
} px_trace_in_t;

/* An event in the ring: this header, then its strings one after the
 * other, each with its NUL; size rounded up to PX_TRACE_ALIGN. */
typedef struct px_trace_pev {
    uint32_t size;         /* 0: a wrap marker (the next event is at 0) */
    uint8_t kind;
    uint8_t pad[3];
    uint32_t attempt;
    int32_t queue;
    int64_t time_ms;
    uint64_t seq;
    int64_t offset, invisible_ms, body_size;
    uint16_t len[PX_TF_N];
} px_trace_pev_t;

#define PX_TRACE_PEV_MAX                                                          \
    ((sizeof(px_trace_pev_t) + PX_TF_N + ST_MSG_ID_MAX + 127 + 2 * ST_NAME_MAX +  \
      PX_CLIENT_ID_MAX + 63 + 95 + 127 + 127 + PX_TRACE_ALIGN) &                  \
     ~(size_t)(PX_TRACE_ALIGN - 1))

typedef struct px_trace_att {
    char handle[ST_HANDLE_MAX];
    uint32_t attempt;
} px_trace_att_t;

/* A string of the record being encoded (its table "s"). */
typedef struct px_trace_str {
    const char *s;
    uint16_t len;
} px_trace_str_t;

struct px_trace {
    st_store_t *store;
    const cfg_t *cfg;
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* wakes the flusher */
    /* The ring: n events from byte rd on (wrapping), the next at wr. */
    uint8_t *ring;
    size_t bcap, rd, wr;
    size_t cap, n;           /* events at most, held */
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
    px_trace_str_t strs[1 + PX_TRACE_PER_REC * (PX_TF_N - 2)];
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

const char *px_trace_kind_name(long kind)
{
    return kind >= 0 && kind < PX_TK_N ? px_tk_names[kind] : "unknown";
}

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
static void px_trace_in_init(px_trace_in_t *e, px_trace_kind_t kind,
                             px_call_t *call, const char *topic,
                             const char *group)
{
    memset(e, 0, sizeof(*e));
    e->time_ms = px_trace_now_ms();
    e->kind = kind;
    e->queue = -1;
    e->offset = -1;
    e->invisible_ms = -1;
    e->body_size = -1;
    e->s[PX_TF_TOPIC] = topic;
    e->s[PX_TF_GROUP] = group;
    e->s[PX_TF_CLIENT] = call != NULL ? px_client_id(call) : NULL;
    e->s[PX_TF_ADDR] = call != NULL ? px_call_peer(call) : NULL;
    e->s[PX_TF_RESULT] = "OK";
}

/* A place for sz bytes in the ring (tr->mu held): its offset, or -1 when
 * the ring has no room. */
static long px_trace_reserve(px_trace_t *tr, size_t sz)
{
    size_t at;

    if (tr->n == 0)
        tr->rd = tr->wr = 0;
    if (tr->wr > tr->rd || tr->n == 0) { /* free: [wr, bcap) and [0, rd) */
        if (sz <= tr->bcap - tr->wr) {
            at = tr->wr;
        } else if (sz <= tr->rd) {
            if (tr->wr < tr->bcap)
                ((px_trace_pev_t *)(tr->ring + tr->wr))->size = 0;
            at = 0;
        } else {
            return -1;
        }
    } else if (sz <= tr->rd - tr->wr) { /* free: [wr, rd) */
        at = tr->wr;
    } else {
        return -1;
    }
    tr->wr = at + sz;
    return (long)at;
}

/* Into the ring, or dropped (counted) when it is full or stopped:
 * e[0..n) under one lock per 32.  Events without a message id are left
 * out. */
static void px_trace_put_n(px_trace_t *tr, const px_trace_in_t *e, size_t n)
{
    uint16_t len[PX_TRACE_PER_REC][PX_TF_N];
    size_t size[PX_TRACE_PER_REC];
    size_t dropped = 0;
    bool wake = false;

    for (size_t c = 0; c < n; c += PX_TRACE_PER_REC) {
        size_t m = n - c < PX_TRACE_PER_REC ? n - c : PX_TRACE_PER_REC;

        for (size_t i = 0; i < m; i++) { /* sizes, outside the lock */
            size_t sz = sizeof(px_trace_pev_t) + PX_TF_N;

            for (int f = 0; f < PX_TF_N; f++) {
                const char *s = e[c + i].s[f];
                size_t l;

                if (i > 0 && s == e[c + i - 1].s[f]) { /* a send's topic, client... */
                    l = len[i - 1][f];
                } else {
                    l = s != NULL ? strnlen(s, px_tf_cap[f]) : 0;
                    if (l == px_tf_cap[f] && s[l] != '\0') /* cut: at a UTF-8 character */
                        while (l > 0 && ((unsigned char)s[l] & 0xc0) == 0x80)
                            l--;
                }
                len[i][f] = (uint16_t)l;
                sz += l;
            }
            size[i] = len[i][PX_TF_MSG_ID] == 0
                          ? 0
                          : (sz + PX_TRACE_ALIGN - 1) & ~(size_t)(PX_TRACE_ALIGN - 1);
        }
        pthread_mutex_lock(&tr->mu);
        for (size_t i = 0; i < m; i++) {
            const px_trace_in_t *x = &e[c + i];
            px_trace_pev_t *p;
            char *d;
            long at;

            if (size[i] == 0)
                continue;
            if (tr->stopped || tr->n == tr->cap ||
                (at = px_trace_reserve(tr, size[i])) < 0) {
                dropped++;
                continue;
            }
            p = (px_trace_pev_t *)(tr->ring + at);
            p->size = (uint32_t)size[i];
            p->kind = (uint8_t)x->kind;
            p->attempt = x->attempt;
            p->queue = x->queue;
            p->time_ms = x->time_ms;
            p->seq = ++tr->seq;
            p->offset = x->offset;
            p->invisible_ms = x->invisible_ms;
            p->body_size = x->body_size;
            d = (char *)(p + 1);
            for (int f = 0; f < PX_TF_N; f++) {
                p->len[f] = len[i][f];
                memcpy(d, x->s[f] != NULL ? x->s[f] : "", len[i][f]);
                d[len[i][f]] = '\0';
                d += len[i][f] + 1;
            }
            wake |= ++tr->n == tr->kick;
        }
        pthread_mutex_unlock(&tr->mu);
    }
    if (dropped > 0)
        atomic_fetch_add(&tr->dropped, dropped);
    if (wake)
        pthread_cond_signal(&tr->cv);
}

static void px_trace_put(px_trace_t *tr, const px_trace_in_t *e)
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

/* Writes s[0..n) as a JSON string at b: escaped, bytes that are not UTF-8
 * as U+FFFD (at most 6 bytes per byte of s, plus the quotes).  Returns the
 * bytes written. */
static size_t px_trace_jstr(char *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const char *end = s + n;
    size_t l = 0;

    b[l++] = '"';
    while (s < end) {
        unsigned char c = (unsigned char)*s;
        size_t u, run = 0;

        /* a run of printable ASCII other than '"' and '\\' goes as is */
        while (s + run < end && s[run] >= 0x20 && s[run] < 0x7f && s[run] != '"' &&
               s[run] != '\\')
            run++;
        if (run > 0) {
            memcpy(b + l, s, run);
            l += run;
            s += run;
            continue;
        }
        if (c == '"' || c == '\\') {
            b[l++] = '\\';
            b[l++] = (char)c;
            s++;
        } else if (c < 0x20) {
            memcpy(b + l, "\\u00", 4);
            b[l + 4] = hex[c >> 4];
            b[l + 5] = hex[c & 15];
            l += 6;
            s++;
        } else if (c < 0x80) {
            b[l++] = (char)c;
            s++;
        } else if ((u = px_trace_utf8((const unsigned char *)s)) > 0 &&
                   u <= (size_t)(end - s)) {
            memcpy(b + l, s, u);
            l += u;
            s += u;
        } else {
            memcpy(b + l, "\\ufffd", 6);
            l += 6;
            s++;
        }
    }
    b[l++] = '"';
    return l;
}

/* Writes v in decimal at b (at most 20 bytes); returns the bytes. */
static size_t px_trace_jnum(char *b, int64_t v)
{
    char digits[24];
    size_t nd = 0, l = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;

    if (v < 0)
        b[l++] = '-';
    do {
        digits[nd++] = (char)('0' + u % 10);
        u /= 10;
    } while (u > 0);
    while (nd > 0)
        b[l++] = digits[--nd];
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

/* The event at *pos of the ring (the flusher's thread, the event counted
 * in tr->n); *pos moves past it. */
static const px_trace_pev_t *px_trace_next(const px_trace_t *tr, size_t *pos)
{
    const px_trace_pev_t *p;

    if (*pos + sizeof(uint32_t) > tr->bcap ||
        ((const px_trace_pev_t *)(tr->ring + *pos))->size == 0)
        *pos = 0;
    p = (const px_trace_pev_t *)(tr->ring + *pos);
    *pos += p->size;
    return p;
}

/* The index of key k (n bytes) among m's keys (kl: their lengths), added
 * unless it has it; -1 for "", -2 when m has no room for it.  Message ids
 * mostly differ in their last bytes: those are compared first. */
static int px_trace_key(st_message_t *m, uint16_t *kl, const char *k, size_t n)
{
    if (n == 0)
        return -1;
    for (uint32_t j = m->nkeys; j-- > 0;)
        if (kl[j] == n && m->keys[j][n - 1] == k[n - 1] && memcmp(m->keys[j], k, n) == 0)
            return (int)j;
    if (m->nkeys == ST_MAX_KEYS)
        return -2;
    kl[m->nkeys] = (uint16_t)n;
    m->keys[m->nkeys] = k;
    return (int)m->nkeys++;
}

/* The index of s (n bytes) in the record's string table, added unless it
 * has it; last[]: the field's last string and index. */
static size_t px_trace_intern(px_trace_t *tr, size_t *nstr, px_trace_str_t *last,
                              size_t *last_ix, const char *s, size_t n)
{
    if (n == 0)
        return 0;
    if (last->len == n && memcmp(last->s, s, n) == 0)
        return *last_ix;
    for (size_t j = *nstr; j-- > 1;)
        if (tr->strs[j].len == n && memcmp(tr->strs[j].s, s, n) == 0) {
            last->s = s;
            last->len = (uint16_t)n;
            return *last_ix = j;
        }
    tr->strs[*nstr].s = s;
    tr->strs[*nstr].len = (uint16_t)n;
    last->s = s;
    last->len = (uint16_t)n;
    return *last_ix = (*nstr)++;
}

/* A record's body at most: its events' numbers, and its string table
 * (each string escaped at most 6 bytes per byte). */
#define PX_TRACE_REC_MAX                                                     \
    (96 + PX_TRACE_PER_REC * 16 * 22 +                                       \
     PX_TRACE_PER_REC * (6 * (2 * ST_NAME_MAX + PX_CLIENT_ID_MAX + 63 + 95 + \
                              127 + 127) + 7 * 3))

/* Record r of a write at body: the events at *pos on (n of them held)
 * while they fit: PX_TRACE_PER_REC events, ST_MAX_KEYS distinct keys
 * (their message ids and AMQP message-id properties).  Body (the
 * admin API's reader, px_admin_trace.c, mirrors it):
 *
 *   {"v":3,"t":T,"q":Q,"e":[[dt,kind,id,amqp_id,topic,group,client,addr,
 *    result,tag,vhost,attempt,queue,offset,invisible_ms,body_size],...],
 *    "s":["",...]}
 *
 * time_ms = T + dt, seq = Q + the event's index (the events of a record
 * are consecutive in the ring), kind a px_trace_kind_name() index, id and
 * amqp_id indexes into the record's keys (-1: none), the seven strings
 * indexes into s (0: ""), numbers -1 where they do not apply.  Returns
 * how many events it took (>= 1) and its body's length in *len. */
static size_t px_trace_record(px_trace_t *tr, size_t r, size_t *pos, size_t n,
                              char *b, size_t *len)
{
    st_message_t *m = &tr->msgs[r];
    px_trace_str_t last[PX_TF_N];
    size_t last_ix[PX_TF_N];
    uint16_t kl[ST_MAX_KEYS];
    size_t l = 0, i, nstr = 1;
    int64_t t0 = 0;
    uint64_t q0 = 0;

    memset(m, 0, sizeof(*m));
    memset(last, 0, sizeof(last));
    tr->strs[0].s = "";
    tr->strs[0].len = 0;
    for (i = 0; i < n && i < PX_TRACE_PER_REC; i++) {
        size_t at = *pos;
        const px_trace_pev_t *p = px_trace_next(tr, &at);
        const char *s[PX_TF_N];
        const char *c = (const char *)(p + 1);
        uint32_t had = m->nkeys;
        int mk, ak;

        for (int f = 0; f < PX_TF_N; f++) {
            s[f] = c;
            c += p->len[f] + 1;
        }
        if ((mk = px_trace_key(m, kl, s[PX_TF_MSG_ID], p->len[PX_TF_MSG_ID])) == -2 ||
            (ak = px_trace_key(m, kl, s[PX_TF_AMQP_MID], p->len[PX_TF_AMQP_MID])) == -2) {
            m->nkeys = had; /* this one starts the next record */
            break;
        }
        *pos = at;
        if (i == 0) {
            t0 = p->time_ms;
            q0 = p->seq;
            l = (size_t)snprintf(b, 96, "{\"v\":3,\"t\":%lld,\"q\":%llu,\"e\":[[",
                                 (long long)t0, (unsigned long long)q0);
        } else {
            memcpy(b + l, ",[", 2);
            l += 2;
        }
        l += px_trace_jnum(b + l, p->time_ms - t0);
        b[l++] = ',';
        l += px_trace_jnum(b + l, p->kind);
        b[l++] = ',';
        l += px_trace_jnum(b + l, mk);
        b[l++] = ',';
        l += px_trace_jnum(b + l, ak);
        for (int f = PX_TF_TOPIC; f <= PX_TF_VHOST; f++) {
            b[l++] = ',';
            l += px_trace_jnum(b + l, (int64_t)px_trace_intern(tr, &nstr, &last[f],
                                                               &last_ix[f], s[f],
                                                               p->len[f]));
        }
        b[l++] = ',';
        l += px_trace_jnum(b + l, p->attempt > 0 ? (int64_t)p->attempt : -1);
        b[l++] = ',';
        l += px_trace_jnum(b + l, p->queue);
        b[l++] = ',';
        l += px_trace_jnum(b + l, p->offset);
        b[l++] = ',';
        l += px_trace_jnum(b + l, p->invisible_ms);
        b[l++] = ',';
        l += px_trace_jnum(b + l, p->body_size);
        b[l++] = ']';
        /* The first event's kind as the tag; the last one's time as birth. */
        if (i == 0)
            m->tag = px_tk_names[p->kind < PX_TK_N ? p->kind : 0];
        m->born_ts_ms = p->time_ms;
    }
    memcpy(b + l, "],\"s\":[", 7);
    l += 7;
    for (size_t j = 0; j < nstr; j++) {
        if (j > 0)
            b[l++] = ',';
        l += px_trace_jstr(b + l, tr->strs[j].s, tr->strs[j].len);
    }
    memcpy(b + l, "]}", 3);
    l += 2;
    m->body = b;
    m->body_len = (uint32_t)l;
    m->queue_id = ST_QUEUE_ANY;
    *len = l;
    return i;
}

/* Writes events from the ring's oldest on (n held) with one append, and
 * waits for the answer; returns how many it wrote, *end where the next one
 * starts. */
static size_t px_trace_write(px_trace_t *tr, size_t n, size_t *end)
{
    char *body = tr->bodies;
    size_t nrec = 0, done = 0, pos = tr->rd;

    while (done < n && nrec < PX_TRACE_RECS &&
           (size_t)(tr->bodies + PX_TRACE_BODIES - body) >= PX_TRACE_REC_MAX) {
        size_t len;

        done += px_trace_record(tr, nrec++, &pos, n - done, body, &len);
        body += len + 1;
    }
    *end = pos;
    pthread_mutex_lock(&tr->wmu);
    tr->wdone = false;
    pthread_mutex_unlock(&tr->wmu);
    st_append(tr->store, PX_TRACE_TOPIC, tr->msgs, nrec, px_trace_appended, tr);
    pthread_mutex_lock(&tr->wmu);
    while (!tr->wdone)
        pthread_cond_wait(&tr->wcv, &tr->wmu);
    pthread_mutex_unlock(&tr->wmu);
    if (tr->werr == GT_OK) {
        atomic_fetch_add(&tr->written, done);
    } else {
        atomic_fetch_add(&tr->failed, done);
        GT_LOG(WARN, "trace", "writing %zu trace events failed: %s", done,
               gt_err_str(tr->werr));
    }
    return done;
}

static void *px_trace_flusher(void *arg)
{
    px_trace_t *tr = arg;

    pthread_setname_np(pthread_self(), "px-trace");
    pthread_mutex_lock(&tr->mu);
    for (;;) {
        struct timespec dl;
        size_t k, end;

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
        /* The oldest are read in place: they stay counted in n (so noting
         * never writes over them) until they are written. */
        k = tr->n;
        pthread_mutex_unlock(&tr->mu);
        k = px_trace_write(tr, k, &end);
        pthread_mutex_lock(&tr->mu);
        tr->rd = end;
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
    if (tr->kick > PX_TRACE_KICK)
        tr->kick = PX_TRACE_KICK;
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
    tr->bcap = tr->cap * PX_TRACE_EV_BYTES;
    if (tr->bcap < 4 * PX_TRACE_PEV_MAX)
        tr->bcap = 4 * PX_TRACE_PEV_MAX;
    tr->ring = malloc(tr->bcap);
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

void px_trace_sent(px_svc_t *svc, px_call_t *call,
                   const Apache__Rocketmq__V2__SendMessageRequest *req,
                   gt_err_t err, const st_append_item_t *items, size_t n)
{
    px_trace_t *tr = svc->trace;
    px_trace_in_t e[PX_TRACE_PER_REC];
    const char *topic, *result;
    size_t k = 0;

    if (tr == NULL || req->n_messages == 0 || req->messages[0]->topic == NULL)
        return;
    topic = req->messages[0]->topic->name;
    if (!px_trace_listed(&tr->cfg->trace.topics, topic))
        return;
    result = err == GT_OK && n != req->n_messages ? gt_err_str(GT_EIO)
             : err != GT_OK                       ? gt_err_str(err)
                                                  : "OK";
    for (size_t i = 0; i < req->n_messages; i++) {
        const Apache__Rocketmq__V2__SystemProperties *sp =
            req->messages[i]->system_properties;
        px_trace_in_t *x = &e[k];

        if (k == 0)
            px_trace_in_init(x, PX_TK_PUBLISH, call, topic, NULL);
        else /* the same call, topic and time */
            *x = e[0];
        x->s[PX_TF_MSG_ID] = sp != NULL ? sp->message_id : NULL;
        x->s[PX_TF_TAG] = sp != NULL && sp->tag_present_case ? sp->tag : NULL;
        x->s[PX_TF_RESULT] = result;
        x->body_size = (int64_t)req->messages[i]->body.len;
        x->queue = -1;
        x->offset = -1;
        if (err == GT_OK && items != NULL && i < n) {
            x->queue = (int32_t)items[i].queue_id;
            x->offset = (int64_t)items[i].queue_offset;
        }
        if (++k == PX_TRACE_PER_REC || i + 1 == req->n_messages) {
            px_trace_put_n(tr, e, k);
            k = 0;
        }
    }
}

void px_trace_delivered(px_svc_t *svc, px_call_t *call, const char *group,
                        const char *topic, const st_popped_t *p)
{
    px_trace_t *tr = svc->trace;
    px_trace_in_t e;

    if (!px_trace_wants(tr, topic, group))
        return;
    px_trace_in_init(&e, PX_TK_DELIVER, call, topic, group);
    e.s[PX_TF_MSG_ID] = p->msg.msg_id;
    e.s[PX_TF_TAG] = p->msg.tag;
    e.attempt = p->attempt;
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
    px_trace_in_t e;

    if (req->group == NULL || req->topic == NULL ||
        !px_trace_wants(tr, req->topic->name, req->group->name))
        return;
    for (size_t i = 0; i < req->n_entries; i++) {
        const Apache__Rocketmq__V2__AckMessageEntry *a = req->entries[i];
        gt_err_t err = errs != NULL ? errs[i] : GT_ENOMEM;

        px_trace_in_init(&e, PX_TK_ACK, call, req->topic->name, req->group->name);
        e.s[PX_TF_MSG_ID] = a->message_id;
        if (a->receipt_handle != NULL)
            e.attempt = px_trace_att_take(tr, a->receipt_handle);
        if (err != GT_OK)
            e.s[PX_TF_RESULT] = gt_err_str(err);
        px_trace_put(tr, &e);
    }
}

void px_trace_nacked(px_svc_t *svc, px_call_t *call,
                     const Apache__Rocketmq__V2__ChangeInvisibleDurationRequest *req,
                     gt_err_t err)
{
    px_trace_t *tr = svc->trace;
    char result[96];
    px_trace_in_t e;
    st_group_t g;

    if (req->group == NULL || req->topic == NULL ||
        !px_trace_wants(tr, req->topic->name, req->group->name))
        return;
    px_trace_in_init(&e, PX_TK_NACK, call, req->topic->name, req->group->name);
    e.s[PX_TF_MSG_ID] = req->message_id;
    if (req->receipt_handle != NULL)
        e.attempt = px_trace_att_take(tr, req->receipt_handle);
    e.invisible_ms = px_duration_ms(req->invisible_duration);
    if (err != GT_OK)
        e.s[PX_TF_RESULT] = gt_err_str(err);
    px_trace_put(tr, &e);
    /* The last attempt the group allows: the store dead-letters the
     * message instead of delivering it again. */
    if (err == GT_OK && e.attempt > 0 &&
        px_group_find(svc, req->group->name, &g) == GT_OK &&
        e.attempt >= g.max_delivery_attempts) {
        e.kind = PX_TK_DLQ;
        e.invisible_ms = -1;
        snprintf(result, sizeof(result), "OK: max delivery attempts (%u) reached",
                 g.max_delivery_attempts);
        e.s[PX_TF_RESULT] = result;
        px_trace_put(tr, &e);
    }
}

void px_trace_forwarded(px_svc_t *svc, px_call_t *call,
                        const Apache__Rocketmq__V2__ForwardMessageToDeadLetterQueueRequest *req,
                        int code)
{
    px_trace_t *tr = svc->trace;
    px_trace_in_t e;

    if (req->group == NULL || req->topic == NULL ||
        !px_trace_wants(tr, req->topic->name, req->group->name))
        return;
    px_trace_in_init(&e, PX_TK_DLQ, call, req->topic->name, req->group->name);
    e.s[PX_TF_MSG_ID] = req->message_id;
    e.attempt = req->delivery_attempt > 0 ? (uint32_t)req->delivery_attempt : 0;
    if (req->receipt_handle != NULL)
        (void)px_trace_att_take(tr, req->receipt_handle);
    if (code != PX_CODE(OK)) {
        const ProtobufCEnumValue *v =
            protobuf_c_enum_descriptor_get_value(&apache__rocketmq__v2__code__descriptor, code);
        e.s[PX_TF_RESULT] = v != NULL ? v->name : "error";
    }
    px_trace_put(tr, &e);
}

void px_trace_tx_end(px_svc_t *svc, px_call_t *call, const char *topic,
                     const char *msg_id, bool commit, gt_err_t err)
{
    px_trace_t *tr = svc->trace;
    px_trace_in_t e;

    if (tr == NULL || !px_trace_listed(&tr->cfg->trace.topics, topic))
        return;
    px_trace_in_init(&e, commit ? PX_TK_COMMIT : PX_TK_ROLLBACK, call, topic, NULL);
    e.s[PX_TF_MSG_ID] = msg_id;
    if (err != GT_OK)
        e.s[PX_TF_RESULT] = gt_err_str(err);
    px_trace_put(tr, &e);
}

/* ---- the AMQP gateway's events ---- */

bool px_trace_wants_queue(px_trace_t *tr, const char *queue)
{
    return tr != NULL && px_trace_listed(&tr->cfg->trace.topics, queue);
}

void px_trace_note_ext(px_trace_t *tr, const px_trace_ext_t *x)
{
    px_trace_in_t e;
    size_t k;

    if (tr == NULL || x->msg_id == NULL)
        return;
    for (k = 0; k < PX_TK_N; k++)
        if (strcmp(px_tk_names[k], x->kind) == 0)
            break;
    if (k == PX_TK_N)
        return;
    px_trace_in_init(&e, (px_trace_kind_t)k, NULL, x->queue, NULL);
    e.s[PX_TF_MSG_ID] = x->msg_id;
    e.s[PX_TF_CLIENT] = x->client_id;
    e.s[PX_TF_ADDR] = x->addr;
    e.s[PX_TF_VHOST] = x->vhost;
    e.s[PX_TF_AMQP_MID] = x->amqp_message_id;
    if (x->result != NULL)
        e.s[PX_TF_RESULT] = x->result;
    e.attempt = x->attempt;
    e.offset = x->offset;
    e.queue = x->offset >= 0 ? 0 : -1;
    e.body_size = x->body_size;
    px_trace_put(tr, &e);
}
