/* st_shard (st_shard.h): message writes and the reads that go to a
 * topic's writer set only: append (a topic not placed yet is placed
 * before the answer), append_multi split per writer set, pull and
 * offsets (of a topic without a placement: the first set that has it). */
#include "st_shard_int.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SH_UNPLACED 0x80000000u  /* append_multi: a dest's topic has no placement */

/* ---- writer set only -------------------------------------------------------------- */

static st_store_t *writer(st_shard_t *s, const char *topic)
{
    sh_route_t r;
    sh_route_of(s, topic, &r);
    return sh_set(s, r.k[0]);
}

/* An append to a topic not placed yet goes to set 0 while the placement
 * is made (with set 0 among its sets, as the messages are there); it is
 * answered when both are done, so no acknowledged message sits on a set
 * its topic's placement does not name. */
typedef struct sh_join {
    atomic_int left;
    gt_err_t err, place_err;
    st_append_item_t *items;
    size_t n;
    st_append_cb cb;
    void *arg;
} sh_join_t;

static void join_end(sh_join_t *j)
{
    if (atomic_fetch_sub(&j->left, 1) != 1)
        return;
    gt_err_t err = j->err != GT_OK ? j->err : j->place_err;
    if (err != GT_OK)
        j->cb(j->arg, err == GT_ENOTFOUND || err == GT_EINVAL ? err : GT_AGAIN, NULL, 0);
    else
        j->cb(j->arg, GT_OK, j->items, j->n);
    free(j->items);
    free(j);
}

static void join_appended(void *arg, gt_err_t err, const st_append_item_t *items, size_t n)
{
    sh_join_t *j = arg;
    j->err = err;
    if (err == GT_OK && n && (j->items = malloc(n * sizeof(*items))) != NULL) {
        memcpy(j->items, items, n * sizeof(*items));
        j->n = n;
    } else if (err == GT_OK && n) {
        j->err = GT_ENOMEM;
    }
    join_end(j);
}

static void join_placed(void *arg, gt_err_t err)
{
    sh_join_t *j = arg;
    j->place_err = err;
    join_end(j);
}

void sh_append(st_store_t *st, const char *topic, const st_message_t *msgs, size_t n,
               st_append_cb cb, void *arg)
{
    st_shard_t *s = (st_shard_t *)st;
    sh_route_t r;
    sh_route_of(s, topic, &r);
    st_store_t *c = sh_set(s, r.k[0]);
    if (!c) {
        cb(arg, GT_AGAIN, NULL, 0);
        return;
    }
    if (r.placed || st_shard_system_topic(topic) || !s->cfg.placer.ensure) {
        st_append(c, topic, msgs, n, cb, arg);
        return;
    }
    sh_join_t *j = calloc(1, sizeof(*j));
    if (!j) {
        cb(arg, GT_ENOMEM, NULL, 0);
        return;
    }
    j->cb = cb;
    j->arg = arg;
    atomic_store(&j->left, 2);
    st_append(c, topic, msgs, n, join_appended, j);
    s->cfg.placer.ensure(s->cfg.placer.ctx, topic, true, join_placed, j);
}

/* A topic without a placement (%DLQ%<group> and the like: a dead letter is
 * moved by the set that held the message, so the topic may be on some sets
 * only) is read from the first set, in order, that has it -- the set whose
 * queues its stats show (sh_stats) -- for pulls and offsets alike: a set
 * that answers GT_ENOTFOUND passes it on to the next.  A placed topic goes
 * to its writer set alone. */
typedef enum sh_try_kind { TRY_PULL, TRY_OFF_GET, TRY_OFF_UPDATE, TRY_OFF_QUERY } sh_try_kind_t;

typedef struct sh_try {
    st_shard_t *s;
    sh_route_t r;
    size_t i;
    sh_try_kind_t kind;
    char topic[ST_NAME_MAX + 1];
    char group[ST_NAME_MAX + 1];
    char *filter;             /* TRY_PULL: owned copy */
    st_pull_req_t pull;       /* TRY_PULL, topic and filter pointing here */
    uint32_t q;
    uint64_t off;
    st_offset_kind_t okind;
    int64_t ts;
    st_msgs_cb msgs_cb;
    st_offset_cb off_cb;
    st_done_cb done_cb;
    void *arg;
} sh_try_t;

static void try_next(sh_try_t *t, gt_err_t last);

static void try_free(sh_try_t *t)
{
    free(t->filter);
    free(t);
}

/* True when the answer is the one to hand out (found, or the last set). */
static bool try_final(sh_try_t *t, gt_err_t err)
{
    if (err != GT_ENOTFOUND || t->i >= t->r.n)
        return true;
    try_next(t, err);
    return false;
}

static void try_msgs(void *arg, gt_err_t err, const st_message_t *m, size_t n, uint64_t next)
{
    sh_try_t *t = arg;
    if (!try_final(t, err))
        return;
    t->msgs_cb(t->arg, err, m, n, next);
    try_free(t);
}

static void try_off(void *arg, gt_err_t err, uint64_t off)
{
    sh_try_t *t = arg;
    if (!try_final(t, err))
        return;
    t->off_cb(t->arg, err, off);
    try_free(t);
}

static void try_done(void *arg, gt_err_t err)
{
    sh_try_t *t = arg;
    if (!try_final(t, err))
        return;
    t->done_cb(t->arg, err);
    try_free(t);
}

static void try_fail(sh_try_t *t, gt_err_t err)
{
    switch (t->kind) {
    case TRY_PULL:
        t->msgs_cb(t->arg, err, NULL, 0, 0);
        break;
    case TRY_OFF_GET:
    case TRY_OFF_QUERY:
        t->off_cb(t->arg, err, 0);
        break;
    case TRY_OFF_UPDATE:
        t->done_cb(t->arg, err);
        break;
    }
    try_free(t);
}

/* The next present set; with none left, `last` (GT_AGAIN when no set was
 * there to ask at all). */
static void try_next(sh_try_t *t, gt_err_t last)
{
    st_store_t *c = NULL;
    while (t->i < t->r.n && !(c = sh_set(t->s, t->r.k[t->i++])))
        ;
    if (!c) {
        try_fail(t, last);
        return;
    }
    switch (t->kind) {
    case TRY_PULL:
        st_pull(c, &t->pull, try_msgs, t);
        break;
    case TRY_OFF_GET:
        st_offset_get(c, t->group, t->topic, t->q, try_off, t);
        break;
    case TRY_OFF_UPDATE:
        st_offset_update(c, t->group, t->topic, t->q, t->off, try_done, t);
        break;
    case TRY_OFF_QUERY:
        st_offset_query(c, t->topic, t->q, t->okind, t->ts, try_off, t);
        break;
    }
}

/* The chain for an unplaced topic, or NULL for a placed one (or a name too
 * long to be a topic, or no memory: then the writer set alone answers). */
static sh_try_t *try_new(st_shard_t *s, const char *topic, const char *group,
                         sh_try_kind_t kind)
{
    sh_route_t r;
    sh_route_of(s, topic, &r);
    if (r.placed || r.n < 2 || !topic || strlen(topic) > ST_NAME_MAX ||
        (group && strlen(group) > ST_NAME_MAX))
        return NULL;
    sh_try_t *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->s = s;
    t->r = r;
    t->kind = kind;
    snprintf(t->topic, sizeof(t->topic), "%s", topic);
    snprintf(t->group, sizeof(t->group), "%s", group ? group : "");
    return t;
}

void sh_pull(st_store_t *st, const st_pull_req_t *req, st_msgs_cb cb, void *arg)
{
    st_shard_t *s = (st_shard_t *)st;
    sh_try_t *t = try_new(s, req->topic, NULL, TRY_PULL);
    if (t && req->filter_expr && !(t->filter = strdup(req->filter_expr))) {
        try_free(t);
        t = NULL;
    }
    if (t) {
        t->pull = *req;
        t->pull.topic = t->topic;
        t->pull.filter_expr = t->filter;
        t->msgs_cb = cb;
        t->arg = arg;
        try_next(t, GT_AGAIN);
        return;
    }
    st_store_t *c = writer(s, req->topic);
    if (!c)
        cb(arg, GT_AGAIN, NULL, 0, 0);
    else
        st_pull(c, req, cb, arg);
}

void sh_offset_get(st_store_t *st, const char *group, const char *topic, uint32_t q,
                   st_offset_cb cb, void *arg)
{
    st_shard_t *s = (st_shard_t *)st;
    sh_try_t *t = try_new(s, topic, group, TRY_OFF_GET);
    if (t) {
        t->q = q;
        t->off_cb = cb;
        t->arg = arg;
        try_next(t, GT_AGAIN);
        return;
    }
    st_store_t *c = writer(s, topic);
    if (!c)
        cb(arg, GT_AGAIN, 0);
    else
        st_offset_get(c, group, topic, q, cb, arg);
}

void sh_offset_update(st_store_t *st, const char *group, const char *topic, uint32_t q,
                      uint64_t off, st_done_cb cb, void *arg)
{
    st_shard_t *s = (st_shard_t *)st;
    sh_try_t *t = try_new(s, topic, group, TRY_OFF_UPDATE);
    if (t) {
        t->q = q;
        t->off = off;
        t->done_cb = cb;
        t->arg = arg;
        try_next(t, GT_AGAIN);
        return;
    }
    st_store_t *c = writer(s, topic);
    if (!c)
        cb(arg, GT_AGAIN);
    else
        st_offset_update(c, group, topic, q, off, cb, arg);
}

void sh_offset_query(st_store_t *st, const char *topic, uint32_t q,
                     st_offset_kind_t kind, int64_t ts, st_offset_cb cb, void *arg)
{
    st_shard_t *s = (st_shard_t *)st;
    sh_try_t *t = try_new(s, topic, NULL, TRY_OFF_QUERY);
    if (t) {
        t->q = q;
        t->okind = kind;
        t->ts = ts;
        t->off_cb = cb;
        t->arg = arg;
        try_next(t, GT_AGAIN);
        return;
    }
    st_store_t *c = writer(s, topic);
    if (!c)
        cb(arg, GT_AGAIN, 0);
    else
        st_offset_query(c, topic, q, kind, ts, cb, arg);
}

/* ---- append_multi: split per writer set ------------------------------------------- */

typedef struct sh_multi sh_multi_t;
typedef struct sh_mleg {
    sh_multi_t *m;
    size_t *idx;   /* the caller's dest index of each of this leg's dests */
    size_t n;
} sh_mleg_t;

struct sh_multi {
    atomic_int left;
    gt_err_t err;
    pthread_mutex_t mu;
    st_append_item_t *items;
    size_t n;
    st_append_cb cb;
    void *arg;
    sh_mleg_t legs[ST_SHARD_MAX];
    size_t nlegs;
    size_t *idx;
    st_dest_t *dests;
    sh_mleg_t ensure_leg; /* n == 0: counts an ensure's answer */
};

static void multi_free(sh_multi_t *m)
{
    pthread_mutex_destroy(&m->mu);
    free(m->items);
    free(m->idx);
    free(m->dests);
    free(m);
}

static void multi_leg_done(void *arg, gt_err_t err, const st_append_item_t *items, size_t n)
{
    sh_mleg_t *l = arg;
    sh_multi_t *m = l->m;
    pthread_mutex_lock(&m->mu);
    if (err == GT_OK && n != l->n)
        err = GT_EIO;
    if (err != GT_OK && m->err == GT_OK)
        m->err = err;
    for (size_t i = 0; err == GT_OK && i < n; i++)
        m->items[l->idx[i]] = items[i];
    pthread_mutex_unlock(&m->mu);
    if (atomic_fetch_sub(&m->left, 1) != 1)
        return;
    if (m->err != GT_OK)
        m->cb(m->arg, m->err, NULL, 0);
    else
        m->cb(m->arg, GT_OK, m->items, m->n);
    multi_free(m);
}

static void multi_placed(void *arg, gt_err_t err)
{
    sh_multi_t *m = arg;
    pthread_mutex_lock(&m->mu);
    if (err != GT_OK && m->err == GT_OK)
        m->err = GT_AGAIN;
    pthread_mutex_unlock(&m->mu);
    multi_leg_done(&m->ensure_leg, GT_OK, NULL, 0);
}

void sh_append_multi(st_store_t *st, const st_message_t *msg, const st_dest_t *dests,
                     size_t n, st_append_cb cb, void *arg)
{
    st_shard_t *s = (st_shard_t *)st;
    if (n == 0 || n > ST_DEST_MAX || dests == NULL) {
        cb(arg, GT_EINVAL, NULL, 0);
        return;
    }
    uint32_t first = 0;
    bool one = true;
    uint32_t *w = malloc(n * sizeof(*w));
    if (!w) {
        cb(arg, GT_ENOMEM, NULL, 0);
        return;
    }
    size_t unplaced = 0;
    for (size_t i = 0; i < n; i++) {
        sh_route_t r;
        sh_route_of(s, dests[i].topic, &r);
        w[i] = r.k[0];
        if (!r.placed && !st_shard_system_topic(dests[i].topic) && s->cfg.placer.ensure) {
            unplaced++;
            w[i] |= SH_UNPLACED;
        }
        if (i == 0)
            first = w[0] & ~SH_UNPLACED;
        else if ((w[i] & ~SH_UNPLACED) != first)
            one = false;
    }
    if (one && unplaced == 0) {
        free(w);
        st_store_t *c = sh_set(s, first);
        if (!c)
            cb(arg, GT_AGAIN, NULL, 0);
        else
            st_append_multi(c, msg, dests, n, cb, arg);
        return;
    }
    /* A topic named twice fails on one set only: refuse it here, before
     * another set appends. */
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (dests[i].topic && dests[j].topic && strcmp(dests[i].topic, dests[j].topic) == 0) {
                free(w);
                cb(arg, GT_EINVAL, NULL, 0);
                return;
            }
    sh_multi_t *m = calloc(1, sizeof(*m));
    if (!m || !(m->items = calloc(n, sizeof(*m->items))) ||
        !(m->idx = malloc(n * sizeof(*m->idx))) || !(m->dests = malloc(n * sizeof(*m->dests)))) {
        if (m) {
            free(m->items);
            free(m->idx);
            free(m);
        }
        free(w);
        cb(arg, GT_ENOMEM, NULL, 0);
        return;
    }
    pthread_mutex_init(&m->mu, NULL);
    m->n = n;
    m->cb = cb;
    m->arg = arg;
    m->ensure_leg.m = m;
    bool *unp = calloc(n, sizeof(*unp));
    if (!unp) {
        free(w);
        multi_free(m);
        cb(arg, GT_ENOMEM, NULL, 0);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        unp[i] = (w[i] & SH_UNPLACED) != 0;
        w[i] &= ~SH_UNPLACED;
    }
    /* Group the dests by set, keeping their order within a set. */
    uint32_t ks[ST_SHARD_MAX];
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        bool seen = false;
        for (size_t j = 0; j < m->nlegs && !seen; j++)
            seen = ks[j] == w[i];
        if (seen)
            continue;
        ks[m->nlegs] = w[i];
        sh_mleg_t *l = &m->legs[m->nlegs++];
        l->m = m;
        l->idx = m->idx + pos;
        for (size_t j = i; j < n; j++)
            if (w[j] == w[i]) {
                m->dests[pos] = dests[j];
                m->idx[pos++] = j;
                l->n++;
            }
    }
    free(w);
    /* Topics not placed yet: placed (with set 0) before the answer, as
     * for st_append. */
    atomic_store(&m->left, (int)(m->nlegs + unplaced));
    for (size_t i = 0; i < n && unplaced; i++)
        if (unp[i])
            s->cfg.placer.ensure(s->cfg.placer.ctx, dests[i].topic, true, multi_placed, m);
    free(unp);
    size_t nl = m->nlegs;
    for (size_t j = 0; j < nl; j++) {
        sh_mleg_t *l = &m->legs[j];
        st_store_t *c = sh_set(s, ks[j]);
        const st_dest_t *d = m->dests + (l->idx - m->idx);
        if (!c)
            multi_leg_done(l, GT_AGAIN, NULL, 0);
        else
            st_append_multi(c, msg, d, l->n, multi_leg_done, l);
    }
}
