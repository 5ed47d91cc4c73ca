/* st_shard (st_shard.h): pops over a topic's sets (older sets first,
 * FIFO groups held back while an older set still has theirs) and the
 * receipt-handle ops (ack, ack_batch, change-invisible, release), whose
 * handles carry the set they came from. */
#include "st_shard_int.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SH_FIFO_WAIT_MS 1000 /* a FIFO pop waiting on an older set: per call */

/* ---- pops --------------------------------------------------------------------------- */

typedef struct sh_pop {
    st_shard_t *s;
    st_pop_req_t req;
    char group[ST_NAME_MAX + 1];
    char topic[ST_NAME_MAX + 1];
    char *filter;
    sh_route_t r;
    size_t next;       /* index into r.k of the older set to try next */
    uint32_t cur;      /* the set asked now */
    size_t fifo_left;  /* FIFO check: stats answers outstanding */
    uint32_t busy;     /* FIFO check: an older set still busy (ST_SHARD_MAX: none) */
    st_pop_cb cb;
    void *arg;
} sh_pop_t;

static void pop_step(sh_pop_t *p);

static bool moved_to(const sh_pop_t *p, uint32_t k)
{
    return sh_moved_to(&p->r, k);
}

static void pop_free(sh_pop_t *p)
{
    free(p->filter);
    free(p);
}

/* Hands msgs (from set p->cur) to the caller with prefixed handles. */
static void pop_deliver(sh_pop_t *p, gt_err_t err, const st_popped_t *msgs, size_t n)
{
    if (err != GT_OK || n == 0 || p->cur == 0) {
        p->cb(p->arg, err, msgs, n);
        pop_free(p);
        return;
    }
    st_popped_t *v = malloc(n * sizeof(*v));
    if (!v) {
        /* They stay invisible until their time passes: redelivered then. */
        p->cb(p->arg, GT_ENOMEM, NULL, 0);
        pop_free(p);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        v[i] = msgs[i];
        if (st_shard_handle_join(p->cur, msgs[i].handle, v[i].handle) != GT_OK)
            v[i].handle[0] = '\0'; /* cannot happen with the store's handles */
    }
    p->cb(p->arg, GT_OK, v, n);
    free(v);
    pop_free(p);
}

static void pop_older_done(void *arg, gt_err_t err, const st_popped_t *msgs, size_t n)
{
    sh_pop_t *p = arg;
    if (err == GT_OK && n > 0) {
        pop_deliver(p, err, msgs, n);
        return;
    }
    /* Empty, or that set cannot answer now: its messages wait. */
    pop_step(p);
}

static void pop_last_done(void *arg, gt_err_t err, const st_popped_t *msgs, size_t n)
{
    pop_deliver(arg, err, msgs, n);
}

static void pop_writer(sh_pop_t *p)
{
    st_store_t *c = sh_set(p->s, p->r.k[0]);
    p->cur = p->r.k[0];
    if (!c) {
        pop_deliver(p, GT_AGAIN, NULL, 0);
        return;
    }
    p->req.new_from_first = moved_to(p, p->cur);
    st_pop(c, &p->req, pop_last_done, p);
}

static void pop_fifo_stats(void *arg, gt_err_t err, const st_stats_t *st);

/* The group's figures on older set p->cur (c), counted as its pops there
 * would start. */
static void older_stats(sh_pop_t *p, st_store_t *c)
{
    st_stats_req_t req = {.topic = p->topic, .group = p->group,
                          .new_from_first = moved_to(p, p->cur)};
    st_stats_req(c, &req, pop_fifo_stats, p);
}

/* FIFO: the group's messages still on an older set hold back the writer's. */
static void pop_fifo_stats(void *arg, gt_err_t err, const st_stats_t *st)
{
    sh_pop_t *p = arg;
    (void)err;
    /* One stats call at a time (sequential over the older sets). */
    if (err == GT_OK && st && st->ready + st->inflight > 0 && p->busy == ST_SHARD_MAX)
        p->busy = p->cur;
    p->fifo_left--;
    if (p->fifo_left > 0 && p->busy == ST_SHARD_MAX) {
        p->cur = p->r.k[p->r.n - p->fifo_left];
        st_store_t *c = sh_set(p->s, p->cur);
        if (c) {
            older_stats(p, c);
            return;
        }
        pop_fifo_stats(p, GT_AGAIN, NULL);
        return;
    }
    if (p->busy == ST_SHARD_MAX) {
        pop_writer(p);
        return;
    }
    /* Wait on the busy older set for a while: a message given back there
     * comes out first. */
    st_store_t *c = sh_set(p->s, p->busy);
    p->cur = p->busy;
    if (!c) {
        pop_deliver(p, GT_OK, NULL, 0);
        return;
    }
    if (p->req.poll_timeout_ms > SH_FIFO_WAIT_MS)
        p->req.poll_timeout_ms = SH_FIFO_WAIT_MS;
    p->req.new_from_first = moved_to(p, p->cur);
    st_pop(c, &p->req, pop_last_done, p);
}

static void pop_fifo_group(void *arg, gt_err_t err, const st_group_t *g, size_t n)
{
    sh_pop_t *p = arg;
    if (err != GT_OK || n == 0 || !g[0].fifo) {
        pop_writer(p);
        return;
    }
    p->busy = ST_SHARD_MAX;
    p->fifo_left = p->r.n - 1;
    p->cur = p->r.k[1];
    st_store_t *c = sh_set(p->s, p->cur);
    if (c)
        older_stats(p, c);
    else
        pop_fifo_stats(p, GT_AGAIN, NULL);
}

/* Older sets first, each without waiting; then the writer with the
 * caller's poll. */
static void pop_step(sh_pop_t *p)
{
    while (p->next < p->r.n) {
        uint32_t k = p->r.k[p->next++];
        st_store_t *c = sh_set(p->s, k);
        if (!c)
            continue;
        st_pop_req_t q = p->req;
        q.poll_timeout_ms = 0;
        q.cancel_key = 0;
        q.new_from_first = moved_to(p, k);
        p->cur = k;
        st_pop(c, &q, pop_older_done, p);
        return;
    }
    if (p->r.placed && p->r.n > 1) {
        st_store_t *c0 = sh_set0(p->s);
        if (c0) {
            st_group_get(c0, p->group, pop_fifo_group, p);
            return;
        }
    }
    pop_writer(p);
}

void sh_pop(st_store_t *st, const st_pop_req_t *req, st_pop_cb cb, void *arg)
{
    st_shard_t *s = (st_shard_t *)st;
    sh_route_t r;
    sh_route_of(s, req->topic, &r);
    if (r.n == 1 && r.k[0] == 0) {
        st_store_t *c = sh_set0(s);
        if (!c)
            cb(arg, GT_AGAIN, NULL, 0);
        else
            st_pop(c, req, cb, arg);
        return;
    }
    sh_pop_t *p = calloc(1, sizeof(*p));
    if (!p || (req->filter_expr && !(p->filter = strdup(req->filter_expr)))) {
        free(p);
        cb(arg, GT_ENOMEM, NULL, 0);
        return;
    }
    p->s = s;
    p->r = r;
    p->next = 1;
    p->cb = cb;
    p->arg = arg;
    p->req = *req;
    snprintf(p->group, sizeof(p->group), "%s", req->group ? req->group : "");
    snprintf(p->topic, sizeof(p->topic), "%s", req->topic ? req->topic : "");
    p->req.group = p->group;
    p->req.topic = p->topic;
    p->req.filter_expr = p->filter;
    pop_step(p);
}

void sh_pop_cancel(st_store_t *st, uint64_t key)
{
    sh_route_t r;
    sh_route_all((st_shard_t *)st, &r);
    for (size_t i = 0; i < r.n; i++) {
        st_store_t *c = sh_set((st_shard_t *)st, r.k[i]);
        if (c)
            st_pop_cancel(c, key);
    }
}

/* ---- handles ------------------------------------------------------------------------ */

void sh_ack(st_store_t *st, const char *group, const char *topic, const char *handle,
            st_done_cb cb, void *arg)
{
    uint32_t k;
    const char *h;
    if (st_shard_handle_split(handle, &k, &h) != GT_OK) {
        cb(arg, GT_EINVAL);
        return;
    }
    st_store_t *c = sh_set((st_shard_t *)st, k);
    if (!c)
        cb(arg, GT_AGAIN);
    else
        st_ack(c, group, topic, h, cb, arg);
}

void sh_release(st_store_t *st, const char *group, const char *topic,
                const char *handle, st_done_cb cb, void *arg)
{
    uint32_t k;
    const char *h;
    if (st_shard_handle_split(handle, &k, &h) != GT_OK) {
        cb(arg, GT_EINVAL);
        return;
    }
    st_store_t *c = sh_set((st_shard_t *)st, k);
    if (!c)
        cb(arg, GT_AGAIN);
    else
        st_release(c, group, topic, h, cb, arg);
}

typedef struct sh_ci {
    uint32_t k;
    st_handle_cb cb;
    void *arg;
} sh_ci_t;

static void ci_done(void *arg, gt_err_t err, const char *handle)
{
    sh_ci_t *ci = arg;
    char h[ST_HANDLE_MAX];
    if (err == GT_OK && st_shard_handle_join(ci->k, handle, h) != GT_OK)
        err = GT_EIO;
    ci->cb(ci->arg, err, err == GT_OK ? h : NULL);
    free(ci);
}

void sh_change_invisible(st_store_t *st, const char *group, const char *topic,
                         const char *handle, int64_t ms, st_handle_cb cb, void *arg)
{
    uint32_t k;
    const char *h;
    if (st_shard_handle_split(handle, &k, &h) != GT_OK) {
        cb(arg, GT_EINVAL, NULL);
        return;
    }
    st_store_t *c = sh_set((st_shard_t *)st, k);
    if (!c) {
        cb(arg, GT_AGAIN, NULL);
        return;
    }
    if (k == 0) {
        st_change_invisible(c, group, topic, h, ms, cb, arg);
        return;
    }
    sh_ci_t *ci = malloc(sizeof(*ci));
    if (!ci) {
        cb(arg, GT_ENOMEM, NULL);
        return;
    }
    *ci = (sh_ci_t){k, cb, arg};
    st_change_invisible(c, group, topic, h, ms, ci_done, ci);
}

/* ack_batch: one batch per set, results back in the caller's order. */
typedef struct sh_ab sh_ab_t;
typedef struct sh_ableg {
    sh_ab_t *ab;
    size_t *idx;
    size_t n;
} sh_ableg_t;

struct sh_ab {
    atomic_int left;
    pthread_mutex_t mu;
    gt_err_t err;
    gt_err_t *errs;
    size_t n;
    size_t *idx;
    const char **hs;
    st_acks_cb cb;
    void *arg;
    sh_ableg_t legs[ST_SHARD_MAX];
};

static void ab_free(sh_ab_t *a)
{
    pthread_mutex_destroy(&a->mu);
    free(a->errs);
    free(a->idx);
    free(a->hs);
    free(a);
}

static void ab_leg_done(void *arg, gt_err_t err, const gt_err_t *errs, size_t n)
{
    sh_ableg_t *l = arg;
    sh_ab_t *a = l->ab;
    pthread_mutex_lock(&a->mu);
    for (size_t i = 0; i < l->n; i++)
        a->errs[l->idx[i]] = err != GT_OK ? err : i < n ? errs[i] : GT_EIO;
    pthread_mutex_unlock(&a->mu);
    if (atomic_fetch_sub(&a->left, 1) != 1)
        return;
    a->cb(a->arg, GT_OK, a->errs, a->n);
    ab_free(a);
}

void sh_ack_batch(st_store_t *st, const char *group, const char *topic,
                  const char *const *handles, size_t n, st_acks_cb cb, void *arg)
{
    st_shard_t *s = (st_shard_t *)st;
    if (n == 0 || n > ST_ACK_MAX || handles == NULL) {
        cb(arg, GT_EINVAL, NULL, 0);
        return;
    }
    /* All on set 0 (always so with one set): as is. */
    bool all0 = true;
    for (size_t i = 0; i < n && all0; i++) {
        uint32_t k;
        const char *h;
        all0 = handles[i] == NULL || (st_shard_handle_split(handles[i], &k, &h) == GT_OK && k == 0);
    }
    if (all0) {
        st_store_t *c = sh_set0(s);
        if (!c)
            cb(arg, GT_AGAIN, NULL, 0);
        else
            st_ack_batch(c, group, topic, handles, n, cb, arg);
        return;
    }
    sh_ab_t *a = calloc(1, sizeof(*a));
    uint32_t *ks = malloc(n * sizeof(*ks));
    if (!a || !ks || !(a->errs = calloc(n, sizeof(*a->errs))) ||
        !(a->idx = malloc(n * sizeof(*a->idx))) || !(a->hs = malloc(n * sizeof(*a->hs)))) {
        if (a) {
            free(a->errs);
            free(a->idx);
            free(a);
        }
        free(ks);
        cb(arg, GT_ENOMEM, NULL, 0);
        return;
    }
    pthread_mutex_init(&a->mu, NULL);
    a->n = n;
    a->cb = cb;
    a->arg = arg;
    /* Bad prefixes answer EINVAL themselves; the rest go to their set. */
    const char **inner = a->hs;
    for (size_t i = 0; i < n; i++) {
        if (handles[i] == NULL) {
            ks[i] = 0;
            inner[i] = NULL;
        } else if (st_shard_handle_split(handles[i], &ks[i], &inner[i]) != GT_OK) {
            ks[i] = ST_SHARD_MAX;
            a->errs[i] = GT_EINVAL;
        }
    }
    uint32_t lk[ST_SHARD_MAX];
    size_t nl = 0, pos = 0;
    const char **grouped = malloc(n * sizeof(*grouped));
    if (!grouped) {
        free(ks);
        ab_free(a);
        cb(arg, GT_ENOMEM, NULL, 0);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (ks[i] == ST_SHARD_MAX)
            continue;
        bool seen = false;
        for (size_t j = 0; j < nl && !seen; j++)
            seen = lk[j] == ks[i];
        if (seen)
            continue;
        lk[nl] = ks[i];
        sh_ableg_t *l = &a->legs[nl++];
        l->ab = a;
        l->idx = a->idx + pos;
        for (size_t j = i; j < n; j++)
            if (ks[j] == ks[i]) {
                grouped[pos] = inner[j];
                a->idx[pos++] = j;
                l->n++;
            }
    }
    free(ks);
    if (nl == 0) {
        free(grouped);
        cb(arg, GT_OK, a->errs, n);
        ab_free(a);
        return;
    }
    /* grouped replaces hs (inner pointers point into the caller's
     * handles, valid until return; every leg is issued before that). */
    free(a->hs);
    a->hs = grouped;
    atomic_store(&a->left, (int)nl);
    for (size_t j = 0; j < nl; j++) {
        sh_ableg_t *l = &a->legs[j];
        st_store_t *c = sh_set(s, lk[j]);
        const char *const *hs = a->hs + (l->idx - a->idx);
        if (!c)
            ab_leg_done(l, GT_AGAIN, NULL, 0);
        else
            st_ack_batch(c, group, topic, hs, l->n, ab_leg_done, l);
    }
}
