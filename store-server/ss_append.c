/* Append, AppendMulti and AppendMany, and the de-dup window that makes a
 * retried append (same topic and idempotency key) get the first attempt's
 * answer instead of storing its messages twice.
 *
 * An append's answer goes to a sink: its own call (Append, AppendMulti) or
 * one slot of an AppendMany call, which answers once every slot is filled.
 *
 * The window is a map (topic NUL key) -> entry, plus the entries in
 * arrival order.  An entry is pending while its append is being written
 * (retries arriving then wait on it: `waiters`), then done, holding a copy
 * of the append items, until it is older than the window or evicted
 * (oldest first) to keep the remembered items within `max_items` (a
 * pending entry counts the items its append asks for from the start, so
 * that many appends in flight at once cannot go past it).  A
 * failed append leaves nothing behind (nothing was appended): its waiters
 * get its error, and a later retry is appended afresh.  Pending entries
 * are never evicted; if no room can be made, the append goes ahead without
 * de-duplication.  A replica set member forgets every answered entry when
 * its engine opens (it leads again: its log may have been cut since, as a
 * follower, below what they answered; ss_main.c engine_open), so a retry
 * there is appended afresh rather than answered with a message it no
 * longer holds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt_log.h"
#include "ss_int.h"

#define SS_IDEM_KEY_MAX 256

#define SS_APPEND_MANY_MAX 256

/* An AppendMany call: one slot per append; answered by the last one. */
typedef struct ss_slot {
    gt_err_t err;
    bool dedup;
    st_append_item_t *items; /* owned */
    size_t n;
} ss_slot_t;

typedef struct ss_many {
    px_call_t *call;           /* a reference */
    atomic_size_t pending;     /* slots not yet filled, +1 while starting */
    size_t n;
    ss_slot_t slots[];
} ss_many_t;

/* Where an append's answer goes. */
typedef struct ss_sink {
    px_call_t *call;           /* an Append / AppendMulti call, or */
    ss_many_t *many;           /* slot idx of an AppendMany call */
    size_t idx;
} ss_sink_t;

typedef struct ss_waiter {
    struct ss_waiter *next;
    ss_sink_t sink;
} ss_waiter_t;

typedef struct ss_dd_ent {
    struct ss_dd_ent *prev, *next; /* arrival order */
    bool done;
    int64_t expires_ms;            /* done: forgotten after */
    st_append_item_t *items;       /* done: owned */
    size_t n;                      /* items (pending: asked for), counted */
    ss_waiter_t *waiters;          /* pending: retries waiting */
    size_t klen;
    uint8_t key[];                 /* topic NUL idempotency_key */
} ss_dd_ent_t;

/* Everything under mu. */
struct ss_dedup {
    pthread_mutex_t mu;
    ss_map_t map;
    ss_dd_ent_t *head, *tail;
    uint64_t items, max_items;
    int64_t window_ms;
};

ss_dedup_t *ss_dedup_new(uint32_t entries, int64_t window_ms)
{
    ss_dedup_t *d;

    if (entries == 0 || (d = calloc(1, sizeof(*d))) == NULL)
        return NULL;
    pthread_mutex_init(&d->mu, NULL);
    ss_map_init(&d->map);
    d->max_items = entries;
    d->window_ms = window_ms;
    return d;
}

void ss_dedup_free(ss_dedup_t *d)
{
    ss_dd_ent_t *e, *n;

    if (d == NULL)
        return;
    for (e = d->head; e != NULL; e = n) {
        n = e->next;
        free(e->items);
        free(e);
    }
    ss_map_free(&d->map);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

void ss_dedup_counts(ss_dedup_t *d, uint64_t *entries, uint64_t *items)
{
    *entries = *items = 0;
    if (d == NULL)
        return;
    pthread_mutex_lock(&d->mu);
    *entries = d->map.count;
    *items = d->items;
    pthread_mutex_unlock(&d->mu);
}

static void ss_dd_unlink(ss_dedup_t *d, ss_dd_ent_t *e)
{
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        d->head = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        d->tail = e->prev;
    ss_map_del(&d->map, e->key, e->klen);
    d->items -= e->n;
    free(e->items);
    free(e);
}

void ss_dedup_forget(ss_dedup_t *d)
{
    ss_dd_ent_t *e, *n;

    if (d == NULL)
        return;
    pthread_mutex_lock(&d->mu);
    for (e = d->head; e != NULL; e = n) {
        n = e->next;
        if (e->done) /* pending ones are answered by their append */
            ss_dd_unlink(d, e);
    }
    pthread_mutex_unlock(&d->mu);
}

/* Forgets done entries that expired, and the oldest done ones while more
 * than max_items - want items are remembered (hold mu).  True when there
 * is room for `want`. */
static bool ss_dd_make_room(ss_dedup_t *d, uint64_t want, int64_t now)
{
    ss_dd_ent_t *e = d->head, *n;

    if (want > d->max_items)
        return false; /* never fits: forget nothing for it */
    for (; e != NULL; e = n) {
        n = e->next;
        if (!e->done)
            continue;
        if (e->expires_ms > now && d->items + want <= d->max_items)
            break; /* arrival order: the rest are younger */
        ss_dd_unlink(d, e);
    }
    return d->items + want <= d->max_items;
}

/* ---- answers ---- */

/* AppendResponse and AppendMultiResponse are alike (err 1, items 2,
 * deduplicated 3): one packing serves both. */
static void ss_append_reply(px_call_t *call, gt_err_t err,
                            const st_append_item_t *items, size_t n,
                            bool dedup)
{
    Gantry__Store__V1__AppendResponse resp =
        GANTRY__STORE__V1__APPEND_RESPONSE__INIT;
    Gantry__Store__V1__AppendItem *it = NULL, **ip = NULL;

    if (err == GT_OK && n > 0) {
        it = calloc(n, sizeof(*it));
        ip = calloc(n, sizeof(*ip));
        if (it == NULL || ip == NULL) {
            free(it);
            free(ip);
            ss_reply_err(call, GT_ENOMEM);
            return;
        }
        for (size_t i = 0; i < n; i++) {
            gantry__store__v1__append_item__init(&it[i]);
            it[i].msg_id = (char *)items[i].msg_id;
            it[i].queue_id = items[i].queue_id;
            it[i].queue_offset = items[i].queue_offset;
            it[i].position = items[i].position;
            it[i].store_ts_ms = items[i].store_ts_ms;
            ip[i] = &it[i];
        }
        resp.n_items = n;
        resp.items = ip;
    }
    resp.err = (Gantry__Store__V1__ErrorCode)err;
    resp.deduplicated = err == GT_OK && dedup;
    ss_reply_pb(call, &resp.base);
    free(it);
    free(ip);
}

static void ss_many_answer(ss_many_t *m)
{
    Gantry__Store__V1__AppendManyResponse resp =
        GANTRY__STORE__V1__APPEND_MANY_RESPONSE__INIT;
    Gantry__Store__V1__AppendResponse *r = calloc(m->n, sizeof(*r));
    Gantry__Store__V1__AppendResponse **rp = calloc(m->n, sizeof(*rp));
    Gantry__Store__V1__AppendItem *it = NULL, **ip = NULL;
    size_t total = 0, k = 0;

    for (size_t i = 0; i < m->n; i++)
        total += m->slots[i].n;
    if (total > 0) {
        it = calloc(total, sizeof(*it));
        ip = calloc(total, sizeof(*ip));
    }
    if (r == NULL || rp == NULL || (total > 0 && (it == NULL || ip == NULL))) {
        /* Appended, but the answer cannot be built: the client's retry
         * (same keys) gets the items from the de-dup window. */
        ss_reply_err(m->call, GT_ENOMEM);
    } else {
        for (size_t i = 0; i < m->n; i++) {
            const ss_slot_t *sl = &m->slots[i];
            gantry__store__v1__append_response__init(&r[i]);
            r[i].err = (Gantry__Store__V1__ErrorCode)sl->err;
            r[i].deduplicated = sl->err == GT_OK && sl->dedup;
            r[i].items = &ip[k];
            r[i].n_items = sl->err == GT_OK ? sl->n : 0;
            for (size_t j = 0; j < r[i].n_items; j++, k++) {
                gantry__store__v1__append_item__init(&it[k]);
                it[k].msg_id = (char *)sl->items[j].msg_id;
                it[k].queue_id = sl->items[j].queue_id;
                it[k].queue_offset = sl->items[j].queue_offset;
                it[k].position = sl->items[j].position;
                it[k].store_ts_ms = sl->items[j].store_ts_ms;
                ip[k] = &it[k];
            }
            rp[i] = &r[i];
        }
        resp.err = GANTRY__STORE__V1__ERROR_CODE__OK;
        resp.n_results = m->n;
        resp.results = rp;
        ss_reply_pb(m->call, &resp.base);
    }
    free(it);
    free(ip);
    free(r);
    free(rp);
    for (size_t i = 0; i < m->n; i++)
        free(m->slots[i].items);
    px_call_unref(m->call);
    free(m);
}

/* One slot (or the start) done; the last one answers the call. */
static void ss_many_put(ss_many_t *m)
{
    if (atomic_fetch_sub_explicit(&m->pending, 1, memory_order_acq_rel) == 1)
        ss_many_answer(m);
}

/* Answers the sink (an append's result, or a retry's from the window). */
static void ss_sink_reply(const ss_sink_t *k, gt_err_t err,
                          const st_append_item_t *items, size_t n, bool dedup)
{
    ss_slot_t *sl;

    if (k->many == NULL) {
        ss_append_reply(k->call, err, items, n, dedup);
        return;
    }
    sl = &k->many->slots[k->idx];
    sl->err = err;
    sl->dedup = dedup;
    if (err == GT_OK && n > 0) {
        if ((sl->items = malloc(n * sizeof(*items))) == NULL)
            sl->err = GT_ENOMEM;
        else
            memcpy(sl->items, items, n * sizeof(*items));
        sl->n = sl->items != NULL ? n : 0;
    }
    ss_many_put(k->many);
}

/* A waiter or an append started keeps the sink: its call's reference (a
 * slot keeps its AppendMany by being unfilled). */
static void ss_sink_hold(const ss_sink_t *k)
{
    if (k->many == NULL)
        px_call_ref(k->call);
}

static void ss_sink_release(const ss_sink_t *k)
{
    if (k->many == NULL)
        px_call_unref(k->call);
}

typedef struct ss_app {
    ss_sink_t sink;
    ss_dedup_t *d;             /* with an entry under key */
    size_t klen;
    uint8_t key[];
} ss_app_t;

static void ss_append_done(void *arg, gt_err_t err,
                           const st_append_item_t *items, size_t n)
{
    ss_app_t *a = arg;
    ss_waiter_t *w = NULL, *next;
    st_append_item_t *copy = NULL;

    if (a->d != NULL) {
        ss_dedup_t *d = a->d;
        ss_dd_ent_t *e;

        if (err == GT_OK && n > 0 &&
            (copy = malloc(n * sizeof(*copy))) != NULL)
            memcpy(copy, items, n * sizeof(*copy));
        pthread_mutex_lock(&d->mu);
        e = ss_map_get(&d->map, a->key, a->klen); /* pending: still there */
        if (e != NULL) {
            w = e->waiters;
            e->waiters = NULL;
            if (err == GT_OK && copy != NULL) {
                e->items = copy;
                d->items = d->items - e->n + n;
                e->n = n;
                e->done = true;
                e->expires_ms = ss_now_ms() + d->window_ms;
                copy = NULL;
            } else {
                e->done = false;
                ss_dd_unlink(d, e);
            }
        }
        pthread_mutex_unlock(&d->mu);
        free(copy);
    }
    ss_sink_reply(&a->sink, err, items, n, false);
    ss_sink_release(&a->sink);
    for (; w != NULL; w = next) {
        next = w->next;
        ss_sink_reply(&w->sink, err, items, n, true);
        ss_sink_release(&w->sink);
        free(w);
    }
    free(a);
}

/* Looks the key up.  Returns true when the sink was answered or queued
 * here (a retry); false to append, with *ctx ready (its `d` set when an
 * entry was made). */
static bool ss_dedup_begin(ss_srv_t *s, const ss_sink_t *sink,
                           const char *topic, const char *idem, size_t nitems,
                           ss_app_t **ctx)
{
    ss_dedup_t *d = s->dedup;
    size_t tl = strlen(topic), il = strlen(idem), klen = tl + 1 + il;
    ss_app_t *a;
    ss_dd_ent_t *e;
    int64_t now = ss_now_ms();

    *ctx = NULL;
    if ((a = calloc(1, sizeof(*a) + klen)) == NULL) {
        ss_sink_reply(sink, GT_ENOMEM, NULL, 0, false);
        return true;
    }
    a->sink = *sink;
    memcpy(a->key, topic, tl);
    memcpy(a->key + tl + 1, idem, il);
    a->klen = klen;
    if (d == NULL || il == 0) {
        *ctx = a;
        return false;
    }
    if (il > SS_IDEM_KEY_MAX) {
        free(a);
        ss_sink_reply(sink, GT_EINVAL, NULL, 0, false);
        return true;
    }
    pthread_mutex_lock(&d->mu);
    e = ss_map_get(&d->map, a->key, klen);
    if (e != NULL && e->done && e->expires_ms <= now) {
        ss_dd_unlink(d, e);
        e = NULL;
    }
    if (e != NULL && e->done) {
        /* Answered before: the same answer again. */
        st_append_item_t *copy = malloc(e->n * sizeof(*copy));
        size_t n = e->n;
        if (copy != NULL)
            memcpy(copy, e->items, n * sizeof(*copy));
        pthread_mutex_unlock(&d->mu);
        free(a);
        atomic_fetch_add(&s->dedup_hits, 1);
        ss_sink_reply(sink, copy != NULL ? GT_OK : GT_ENOMEM, copy, n, true);
        free(copy);
        return true;
    }
    if (e != NULL) {
        /* Being written: wait for it. */
        ss_waiter_t *w = malloc(sizeof(*w));
        if (w != NULL) {
            ss_sink_hold(sink);
            w->sink = *sink;
            w->next = e->waiters;
            e->waiters = w;
        }
        pthread_mutex_unlock(&d->mu);
        free(a);
        if (w == NULL)
            ss_sink_reply(sink, GT_ENOMEM, NULL, 0, false);
        else
            atomic_fetch_add(&s->dedup_hits, 1);
        return true;
    }
    if (ss_dd_make_room(d, nitems, now) &&
        (e = calloc(1, sizeof(*e) + klen)) != NULL) {
        memcpy(e->key, a->key, klen);
        e->klen = klen;
        if (ss_map_put(&d->map, e->key, klen, e) == GT_OK) {
            e->n = nitems;
            d->items += nitems;
            e->prev = d->tail;
            if (d->tail != NULL)
                d->tail->next = e;
            else
                d->head = e;
            d->tail = e;
            a->d = d;
        } else {
            free(e);
        }
    }
    pthread_mutex_unlock(&d->mu);
    *ctx = a;
    return false;
}

void ss_append(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__AppendRequest *req = (void *)msg;
    st_message_t *msgs = NULL;
    size_t n = req->n_messages;
    ss_app_t *a;
    gt_err_t err = GT_OK;

    if (n == 0 || n > 1024 || strlen(req->topic) > ST_NAME_MAX) {
        ss_reply_err(call, GT_EINVAL);
        return;
    }
    if ((msgs = malloc(n * sizeof(*msgs))) == NULL) {
        ss_reply_err(call, GT_ENOMEM);
        return;
    }
    for (size_t i = 0; i < n && err == GT_OK; i++)
        err = ss_msg_from_pb(req->messages[i], &msgs[i]);
    if (err != GT_OK) {
        free(msgs);
        ss_reply_err(call, err);
        return;
    }
    ss_sink_t sink = {.call = call};
    if (ss_dedup_begin(ss_srv(call), &sink, req->topic, req->idempotency_key,
                       n, &a)) {
        free(msgs);
        return;
    }
    ss_sink_hold(&sink);
    st_append(ss_srv(call)->store, req->topic, msgs, n, ss_append_done, a);
    free(msgs); /* copied by the store before it returns */
}

void ss_append_multi(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__AppendMultiRequest *req = (void *)msg;
    st_message_t *m = NULL;
    st_dest_t *dests = NULL;
    size_t n = req->n_dests;
    ss_app_t *a;
    gt_err_t err = GT_OK;

    if (req->message == NULL || n == 0 || n > ST_DEST_MAX) {
        ss_reply_err(call, GT_EINVAL);
        return;
    }
    m = malloc(sizeof(*m));
    dests = calloc(n, sizeof(*dests));
    if (m == NULL || dests == NULL) {
        free(m);
        free(dests);
        ss_reply_err(call, GT_ENOMEM);
        return;
    }
    err = ss_msg_from_pb(req->message, m);
    for (size_t i = 0; i < n && err == GT_OK; i++) {
        dests[i].topic = req->dests[i]->topic;
        dests[i].queue_id = req->dests[i]->queue_id;
        if (strlen(dests[i].topic) > ST_NAME_MAX)
            err = GT_EINVAL;
    }
    ss_sink_t sink = {.call = call};
    if (err == GT_OK &&
        ss_dedup_begin(ss_srv(call), &sink, dests[0].topic,
                       req->idempotency_key, n, &a))
        goto out;
    if (err != GT_OK) {
        ss_reply_err(call, err);
        goto out;
    }
    ss_sink_hold(&sink);
    st_append_multi(ss_srv(call)->store, m, dests, n, ss_append_done, a);
out:
    free(m);
    free(dests);
}

/* One append of an AppendMany into its slot: as ss_append does it. */
static void ss_many_one(ss_srv_t *s, ss_many_t *m, size_t idx,
                        const Gantry__Store__V1__AppendRequest *req)
{
    ss_sink_t sink = {.call = m->call, .many = m, .idx = idx};
    st_message_t *msgs = NULL;
    size_t n = req->n_messages;
    ss_app_t *a;
    gt_err_t err = GT_OK;

    if (n == 0 || n > 1024 || strlen(req->topic) > ST_NAME_MAX)
        err = GT_EINVAL;
    else if ((msgs = malloc(n * sizeof(*msgs))) == NULL)
        err = GT_ENOMEM;
    for (size_t i = 0; i < n && err == GT_OK; i++)
        err = ss_msg_from_pb(req->messages[i], &msgs[i]);
    if (err != GT_OK) {
        free(msgs);
        ss_sink_reply(&sink, err, NULL, 0, false);
        return;
    }
    if (ss_dedup_begin(s, &sink, req->topic, req->idempotency_key, n, &a)) {
        free(msgs);
        return;
    }
    st_append(s->store, req->topic, msgs, n, ss_append_done, a);
    free(msgs);
}

void ss_append_many(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__AppendManyRequest *req = (void *)msg;
    size_t n = req->n_appends;
    ss_many_t *m;

    if (ss_srv(call)->test_no_append_many) {
        px_call_finish(call, GRPC_STATUS_UNIMPLEMENTED, "no AppendMany (test)");
        return;
    }
    if (n == 0 || n > SS_APPEND_MANY_MAX) {
        ss_reply_err(call, GT_EINVAL);
        return;
    }
    atomic_fetch_add(&ss_srv(call)->many_calls, 1);
    atomic_fetch_add(&ss_srv(call)->many_appends, n);
    if ((m = calloc(1, sizeof(*m) + n * sizeof(m->slots[0]))) == NULL) {
        ss_reply_err(call, GT_ENOMEM);
        return;
    }
    px_call_ref(call);
    m->call = call;
    m->n = n;
    /* +1: no slot's answer finishes the call before every one started. */
    atomic_init(&m->pending, n + 1);
    for (size_t i = 0; i < n; i++)
        ss_many_one(ss_srv(call), m, i, req->appends[i]);
    ss_many_put(m);
}
