/* st_shard (st_shard.h): message writes and the reads that go to a
 * topic's writer set only: append (a topic not placed yet is placed
 * before the answer), append_multi split per writer set, pull and
 * offsets. */
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

void sh_pull(st_store_t *st, const st_pull_req_t *req, st_msgs_cb cb, void *arg)
{
    st_store_t *c = writer((st_shard_t *)st, req->topic);
    if (!c)
        cb(arg, GT_AGAIN, NULL, 0, 0);
    else
        st_pull(c, req, cb, arg);
}

void sh_offset_get(st_store_t *st, const char *group, const char *topic, uint32_t q,
                   st_offset_cb cb, void *arg)
{
    st_store_t *c = writer((st_shard_t *)st, topic);
    if (!c)
        cb(arg, GT_AGAIN, 0);
    else
        st_offset_get(c, group, topic, q, cb, arg);
}

void sh_offset_update(st_store_t *st, const char *group, const char *topic, uint32_t q,
                      uint64_t off, st_done_cb cb, void *arg)
{
    st_store_t *c = writer((st_shard_t *)st, topic);
    if (!c)
        cb(arg, GT_AGAIN);
    else
        st_offset_update(c, group, topic, q, off, cb, arg);
}

void sh_offset_query(st_store_t *st, const char *topic, uint32_t q,
                     st_offset_kind_t kind, int64_t ts, st_offset_cb cb, void *arg)
{
    st_store_t *c = writer((st_shard_t *)st, topic);
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
