/* st_shard (st_shard.h): the ops that visit a topic's sets in turn:
 * purge/requeue and stats (summed), lookups, tx end/check and recall by
 * message id (not found -> next set), and tx_pending (the sets in turn). */
#include "st_shard_int.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- sets of the topic in order: purge / requeue (sum), stats (sum) -------------------- */

typedef struct sh_sum {
    st_shard_t *s;
    sh_route_t r;
    size_t i;
    char group[ST_NAME_MAX + 1];
    char topic[ST_NAME_MAX + 1];
    bool requeue;
    uint64_t total;
    st_count_cb cb;
    void *arg;
} sh_sum_t;

static void sum_next(sh_sum_t *m);

static void sum_done(void *arg, gt_err_t err, uint64_t n)
{
    sh_sum_t *m = arg;
    if (err != GT_OK && !(m->i > 1 && err == GT_ENOTFOUND)) {
        m->cb(m->arg, err, m->total);
        free(m);
        return;
    }
    m->total += err == GT_OK ? n : 0;
    sum_next(m);
}

static void sum_next(sh_sum_t *m)
{
    while (m->i < m->r.n) {
        st_store_t *c = sh_set(m->s, m->r.k[m->i++]);
        if (!c) {
            if (m->i == 1) {
                sum_done(m, GT_AGAIN, 0);
                return;
            }
            continue;
        }
        if (m->requeue)
            st_requeue(c, m->group, m->topic, sum_done, m);
        else
            st_purge(c, m->group, m->topic, sum_done, m);
        return;
    }
    m->cb(m->arg, GT_OK, m->total);
    free(m);
}

static void sum_start(st_store_t *st, const char *group, const char *topic, bool requeue,
                      st_count_cb cb, void *arg)
{
    sh_sum_t *m = calloc(1, sizeof(*m));
    if (!m) {
        cb(arg, GT_ENOMEM, 0);
        return;
    }
    m->s = (st_shard_t *)st;
    sh_route_of(m->s, topic, &m->r);
    snprintf(m->group, sizeof(m->group), "%s", group ? group : "");
    snprintf(m->topic, sizeof(m->topic), "%s", topic ? topic : "");
    m->requeue = requeue;
    m->cb = cb;
    m->arg = arg;
    sum_next(m);
}

void sh_purge(st_store_t *st, const char *group, const char *topic, st_count_cb cb,
              void *arg)
{
    sum_start(st, group, topic, false, cb, arg);
}

void sh_requeue(st_store_t *st, const char *group, const char *topic, st_count_cb cb,
                void *arg)
{
    sum_start(st, group, topic, true, cb, arg);
}

typedef struct sh_stats {
    st_shard_t *s;
    sh_route_t r;
    size_t i;
    char group[ST_NAME_MAX + 1];
    char topic[ST_NAME_MAX + 1];
    bool has_group;
    bool have;          /* a set answered: sum holds its figures */
    bool from_first;    /* the caller's new_from_first */
    st_stats_t sum;
    st_queue_stats_t *queues;
    st_stats_cb cb;
    void *arg;
} sh_stats_t;

static void stats_next(sh_stats_t *m);

static void stats_finish(sh_stats_t *m, gt_err_t err)
{
    if (err == GT_OK && !m->have)
        err = GT_ENOTFOUND; /* on no set (an unplaced topic) */
    m->cb(m->arg, err, err == GT_OK ? &m->sum : NULL);
    free(m->queues);
    free(m);
}

static void stats_done(void *arg, gt_err_t err, const st_stats_t *st)
{
    sh_stats_t *m = arg;
    if (err != GT_OK || !st) {
        /* The writer set's answer is the one that counts; a topic without
         * a placement (%DLQ% and the like) may be on some sets only. */
        if (m->i == 1 && (m->r.placed || err != GT_ENOTFOUND)) {
            stats_finish(m, err != GT_OK ? err : GT_EIO);
            return;
        }
        stats_next(m);
        return;
    }
    if (!m->have) {
        m->have = true;
        m->sum = *st;
        m->sum.queues = NULL;
        if (st->nqueues) {
            m->queues = malloc(st->nqueues * sizeof(*m->queues));
            if (!m->queues) {
                stats_finish(m, GT_ENOMEM);
                return;
            }
            memcpy(m->queues, st->queues, st->nqueues * sizeof(*m->queues));
        }
        m->sum.queues = m->queues;
    } else {
        m->sum.messages += st->messages;
        m->sum.bytes += st->bytes;
        m->sum.ready += st->ready;
        m->sum.inflight += st->inflight;
        m->sum.lag += st->lag;
        m->sum.tx_discarded += st->tx_discarded;
    }
    stats_next(m);
}

static void stats_next(sh_stats_t *m)
{
    while (m->i < m->r.n) {
        st_store_t *c = sh_set(m->s, m->r.k[m->i++]);
        if (!c) {
            if (m->i == 1) {
                stats_finish(m, GT_AGAIN);
                return;
            }
            continue;
        }
        bool from_first = m->from_first || sh_moved_to(&m->r, m->r.k[m->i - 1]);
        st_stats_req_t req = {.topic = m->topic, .group = m->has_group ? m->group : NULL,
                              .new_from_first = from_first};
        st_stats_req(c, &req, stats_done, m);
        return;
    }
    stats_finish(m, GT_OK);
}

void sh_stats(st_store_t *st, const st_stats_req_t *req, st_stats_cb cb, void *arg)
{
    st_shard_t *s = (st_shard_t *)st;
    const char *topic = req->topic, *group = req->group;
    sh_route_t r;
    sh_route_of(s, topic, &r);
    if (r.n == 1) {
        st_store_t *c = sh_set(s, r.k[0]);
        if (!c)
            cb(arg, GT_AGAIN, NULL);
        else
            st_stats_req(c, req, cb, arg);
        return;
    }
    sh_stats_t *m = calloc(1, sizeof(*m));
    if (!m) {
        cb(arg, GT_ENOMEM, NULL);
        return;
    }
    m->s = s;
    m->r = r;
    snprintf(m->topic, sizeof(m->topic), "%s", topic ? topic : "");
    m->has_group = group != NULL;
    m->from_first = req->new_from_first;
    snprintf(m->group, sizeof(m->group), "%s", group ? group : "");
    m->cb = cb;
    m->arg = arg;
    stats_next(m);
}

/* ---- by message id: try the topic's sets in order ------------------------------------- */

typedef enum sh_try_kind { TRY_LOOKUP_ID, TRY_LOOKUP_KEY, TRY_TX_END, TRY_TX_CHECKED, TRY_RECALL } sh_try_kind_t;

typedef struct sh_try {
    st_shard_t *s;
    sh_try_kind_t kind;
    sh_route_t r;
    size_t i;
    bool any_topic;
    char topic[ST_NAME_MAX + 1];
    char *str;           /* msg id or key */
    uint32_t max;        /* lookup_key */
    bool commit;         /* tx_end */
    uint32_t seen, max_checks;
    gt_err_t last;
    st_msgs_cb mcb;
    st_done_cb dcb;
    void *arg;
} sh_try_t;

static void try_next(sh_try_t *t);

static void try_free(sh_try_t *t)
{
    free(t->str);
    free(t);
}

static void try_msgs(void *arg, gt_err_t err, const st_message_t *msgs, size_t n,
                     uint64_t next)
{
    sh_try_t *t = arg;
    if ((err == GT_OK && n > 0) || t->i >= t->r.n) {
        t->mcb(t->arg, err, msgs, n, next);
        try_free(t);
        return;
    }
    if (err != GT_OK && err != GT_ENOTFOUND && t->last == GT_OK)
        t->last = err;
    try_next(t);
}

static void try_done(void *arg, gt_err_t err)
{
    sh_try_t *t = arg;
    if (err != GT_ENOTFOUND || t->i >= t->r.n) {
        /* Not found anywhere, but a set failed to answer: retriable. */
        if (err == GT_ENOTFOUND && t->last != GT_OK)
            err = t->last;
        t->dcb(t->arg, err);
        try_free(t);
        return;
    }
    try_next(t);
}

static void try_next(sh_try_t *t)
{
    while (t->i < t->r.n) {
        st_store_t *c = sh_set(t->s, t->r.k[t->i++]);
        if (!c) {
            t->last = GT_AGAIN;
            continue;
        }
        const char *topic = t->any_topic ? NULL : t->topic;
        switch (t->kind) {
        case TRY_LOOKUP_ID:
            st_lookup_id(c, topic, t->str, try_msgs, t);
            return;
        case TRY_LOOKUP_KEY:
            st_lookup_key(c, topic, t->str, t->max, try_msgs, t);
            return;
        case TRY_TX_END:
            st_tx_end(c, topic, t->str, t->commit, try_done, t);
            return;
        case TRY_TX_CHECKED:
            st_tx_checked(c, topic, t->str, t->seen, t->max_checks, try_done, t);
            return;
        case TRY_RECALL:
            st_recall(c, topic, t->str, try_done, t);
            return;
        }
    }
    /* No set could be asked. */
    gt_err_t err = t->last != GT_OK ? t->last : GT_AGAIN;
    if (t->mcb)
        t->mcb(t->arg, t->kind == TRY_LOOKUP_ID || t->kind == TRY_LOOKUP_KEY ? GT_OK : err,
               NULL, 0, 0);
    else
        t->dcb(t->arg, t->last == GT_OK ? GT_ENOTFOUND : err);
    try_free(t);
}

static sh_try_t *try_new(st_store_t *st, sh_try_kind_t kind, const char *topic,
                         const char *str)
{
    sh_try_t *t = calloc(1, sizeof(*t));
    if (!t || !(t->str = strdup(str ? str : ""))) {
        free(t);
        return NULL;
    }
    t->s = (st_shard_t *)st;
    t->kind = kind;
    t->any_topic = topic == NULL;
    snprintf(t->topic, sizeof(t->topic), "%s", topic ? topic : "");
    sh_route_of(t->s, topic, &t->r);
    return t;
}

void sh_lookup_id(st_store_t *st, const char *topic, const char *id, st_msgs_cb cb,
                  void *arg)
{
    sh_try_t *t = try_new(st, TRY_LOOKUP_ID, topic, id);
    if (!t) {
        cb(arg, GT_ENOMEM, NULL, 0, 0);
        return;
    }
    t->mcb = cb;
    t->arg = arg;
    try_next(t);
}

void sh_lookup_key(st_store_t *st, const char *topic, const char *key, uint32_t max,
                   st_msgs_cb cb, void *arg)
{
    sh_try_t *t = try_new(st, TRY_LOOKUP_KEY, topic, key);
    if (!t) {
        cb(arg, GT_ENOMEM, NULL, 0, 0);
        return;
    }
    t->max = max;
    t->mcb = cb;
    t->arg = arg;
    try_next(t);
}

void sh_tx_end(st_store_t *st, const char *topic, const char *id, bool commit,
               st_done_cb cb, void *arg)
{
    sh_try_t *t = try_new(st, TRY_TX_END, topic, id);
    if (!t) {
        cb(arg, GT_ENOMEM);
        return;
    }
    t->commit = commit;
    t->dcb = cb;
    t->arg = arg;
    try_next(t);
}

void sh_tx_checked(st_store_t *st, const char *topic, const char *id, uint32_t seen,
                   uint32_t max_checks, st_done_cb cb, void *arg)
{
    sh_try_t *t = try_new(st, TRY_TX_CHECKED, topic, id);
    if (!t) {
        cb(arg, GT_ENOMEM);
        return;
    }
    t->seen = seen;
    t->max_checks = max_checks;
    t->dcb = cb;
    t->arg = arg;
    try_next(t);
}

void sh_recall(st_store_t *st, const char *topic, const char *id, st_done_cb cb,
               void *arg)
{
    sh_try_t *t = try_new(st, TRY_RECALL, topic, id);
    if (!t) {
        cb(arg, GT_ENOMEM);
        return;
    }
    t->dcb = cb;
    t->arg = arg;
    try_next(t);
}

/* ---- tx_pending: the sets in turn ------------------------------------------------------ */

typedef struct sh_txp {
    st_shard_t *s;
    sh_route_t r;
    size_t start, i;
    int64_t ms;
    uint32_t max;
    gt_err_t err;
    st_msgs_cb cb;
    void *arg;
} sh_txp_t;

static void txp_next(sh_txp_t *t);

static void txp_done(void *arg, gt_err_t err, const st_message_t *msgs, size_t n,
                     uint64_t next)
{
    sh_txp_t *t = arg;
    if (err == GT_OK && n > 0) {
        t->cb(t->arg, GT_OK, msgs, n, next);
        free(t);
        return;
    }
    if (err != GT_OK && t->err == GT_OK)
        t->err = err;
    txp_next(t);
}

static void txp_next(sh_txp_t *t)
{
    while (t->i < t->r.n) {
        uint32_t k = t->r.k[(t->start + t->i++) % t->r.n];
        st_store_t *c = sh_set(t->s, k);
        if (!c)
            continue;
        st_tx_pending(c, t->ms, t->max, txp_done, t);
        return;
    }
    t->cb(t->arg, t->err, NULL, 0, 0);
    free(t);
}

void sh_tx_pending(st_store_t *st, int64_t ms, uint32_t max, st_msgs_cb cb, void *arg)
{
    st_shard_t *s = (st_shard_t *)st;
    sh_txp_t *t = calloc(1, sizeof(*t));
    if (!t) {
        cb(arg, GT_ENOMEM, NULL, 0, 0);
        return;
    }
    t->s = s;
    sh_route_all(s, &t->r);
    if (t->r.n == 1) {
        free(t);
        st_store_t *c = sh_set0(s);
        if (!c)
            cb(arg, GT_AGAIN, NULL, 0, 0);
        else
            st_tx_pending(c, ms, max, cb, arg);
        return;
    }
    t->start = atomic_fetch_add(&s->tx_turn, 1) % t->r.n;
    t->ms = ms;
    t->max = max;
    t->cb = cb;
    t->arg = arg;
    txp_next(t);
}
