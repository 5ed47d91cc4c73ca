/* st_shard (st_shard.h): metadata over several replica sets.  Topics,
 * groups and st_meta records are written to every set (set 0's answer
 * wins) and read from set 0, as is the metadata watch; a set added after
 * the first gets set 0's metadata copied to it before it is ready. */
#include "st_shard_int.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt_log.h"

/* ---- broadcasts: metadata to every set ---------------------------------------- */

typedef struct sh_bc sh_bc_t;
typedef struct sh_leg {
    sh_bc_t *bc;
    uint32_t k;
} sh_leg_t;

struct sh_bc {
    st_shard_t *s;
    atomic_int left;
    gt_err_t err0;        /* set 0's answer */
    gt_err_t err;         /* the first other failure (not "not found") */
    pthread_mutex_t mu;
    st_done_cb cb;
    void *arg;
    char topic[ST_NAME_MAX + 1]; /* topic_put: placed after; topic_delete: forgotten */
    bool forget;                 /* topic_delete */
    sh_leg_t legs[ST_SHARD_MAX];
};

static void bc_finish(sh_bc_t *b)
{
    gt_err_t err = b->err0 != GT_OK ? b->err0 : b->err;
    st_done_cb cb = b->cb;
    void *arg = b->arg;
    st_shard_t *s = b->s;
    pthread_mutex_destroy(&b->mu);
    free(b);
    cb(arg, err);
    sh_op_end(s);
}

static void bc_placed(void *arg, gt_err_t err)
{
    sh_bc_t *b = arg;
    if (err != GT_OK && b->err == GT_OK)
        b->err = err;
    bc_finish(b);
}

/* The topic's placement is gone (or could not be dropped: the delete then
 * fails as retriable; deleting again drops it). */
static void bc_forgot(void *arg, gt_err_t err)
{
    sh_bc_t *b = arg;
    if (err != GT_OK && b->err == GT_OK)
        b->err = err;
    bc_finish(b);
}

static void bc_leg_done(void *arg, gt_err_t err)
{
    sh_leg_t *l = arg;
    sh_bc_t *b = l->bc;
    pthread_mutex_lock(&b->mu);
    if (l->k == 0)
        b->err0 = err;
    else if (err != GT_OK && err != GT_ENOTFOUND && b->err == GT_OK)
        b->err = err;
    pthread_mutex_unlock(&b->mu);
    if (atomic_fetch_sub(&b->left, 1) != 1)
        return;
    st_shard_t *s = b->s;
    if (b->forget) {
        /* Deleted from every set (or known to none): its placement goes,
         * so that it counts no more for placement and rebalance, and a
         * topic made again under the name is placed anew (st_place.c
         * keeps its old sets after the new one). */
        if ((b->err0 == GT_OK || b->err0 == GT_ENOTFOUND) && b->err == GT_OK &&
            !atomic_load(&s->closing) && s->cfg.placer.forget &&
            !st_shard_system_topic(b->topic)) {
            s->cfg.placer.forget(s->cfg.placer.ctx, b->topic, bc_forgot, b);
            return;
        }
        bc_finish(b);
        return;
    }
    if (b->topic[0] && b->err0 == GT_OK && !atomic_load(&s->closing) && b->err == GT_OK && s->cfg.placer.ensure &&
        !st_shard_system_topic(b->topic)) {
        uint32_t k[1];
        if (!s->cfg.placer.lookup || s->cfg.placer.lookup(s->cfg.placer.ctx, b->topic, k, 1) == 0) {
            s->cfg.placer.ensure(s->cfg.placer.ctx, b->topic, false, bc_placed, b);
            return;
        }
    }
    bc_finish(b);
}

typedef void (*sh_bc_fn)(st_store_t *child, const void *a, const void *b, uint32_t la,
                         uint32_t lb, st_done_cb cb, void *arg);

static void bc_topic_put(st_store_t *c, const void *a, const void *b, uint32_t la,
                         uint32_t lb, st_done_cb cb, void *arg)
{
    (void)b, (void)la, (void)lb;
    st_topic_put(c, a, cb, arg);
}

static void bc_topic_del(st_store_t *c, const void *a, const void *b, uint32_t la,
                         uint32_t lb, st_done_cb cb, void *arg)
{
    (void)b, (void)la, (void)lb;
    st_topic_delete(c, a, cb, arg);
}

static void bc_group_put(st_store_t *c, const void *a, const void *b, uint32_t la,
                         uint32_t lb, st_done_cb cb, void *arg)
{
    (void)b, (void)la, (void)lb;
    st_group_put(c, a, cb, arg);
}

static void bc_group_del(st_store_t *c, const void *a, const void *b, uint32_t la,
                         uint32_t lb, st_done_cb cb, void *arg)
{
    (void)b, (void)la, (void)lb;
    st_group_delete(c, a, cb, arg);
}

/* meta records: a = {ns, key}, la = key length; b = value, lb its length */
typedef struct sh_mkey {
    const char *ns;
    const void *key;
} sh_mkey_t;

static void bc_meta_put(st_store_t *c, const void *a, const void *b, uint32_t la,
                        uint32_t lb, st_done_cb cb, void *arg)
{
    const sh_mkey_t *m = a;
    st_meta_put(c, m->ns, m->key, la, b, lb, cb, arg);
}

static void bc_meta_del(st_store_t *c, const void *a, const void *b, uint32_t la,
                        uint32_t lb, st_done_cb cb, void *arg)
{
    const sh_mkey_t *m = a;
    (void)b, (void)lb;
    st_meta_del(c, m->ns, m->key, la, cb, arg);
}

/* Runs fn on every present set; cb gets set 0's answer (or another set's
 * failure).  topic: place it afterwards (topic_put), or with forget, drop
 * its placement afterwards (topic_delete). */
static void bc_run(st_shard_t *s, sh_bc_fn fn, const void *a, const void *b, uint32_t la,
                   uint32_t lb, const char *topic, bool forget, st_done_cb cb, void *arg)
{
    sh_bc_t *bc = calloc(1, sizeof(*bc));
    sh_op_begin(s);
    if (!bc) {
        sh_op_end(s);
        cb(arg, GT_ENOMEM);
        return;
    }
    sh_route_t r;
    sh_route_all(s, &r);
    bc->s = s;
    bc->cb = cb;
    bc->arg = arg;
    bc->err0 = GT_AGAIN; /* no set 0 yet */
    pthread_mutex_init(&bc->mu, NULL);
    if (topic)
        snprintf(bc->topic, sizeof(bc->topic), "%s", topic);
    bc->forget = forget;
    atomic_store(&bc->left, (int)r.n);
    for (size_t i = 0; i < r.n; i++) {
        bc->legs[i] = (sh_leg_t){bc, r.k[i]};
        st_store_t *c = sh_set(s, r.k[i]);
        if (c)
            fn(c, a, b, la, lb, bc_leg_done, &bc->legs[i]);
        else
            bc_leg_done(&bc->legs[i], GT_AGAIN);
    }
}

void sh_topic_put(st_store_t *st, const st_topic_t *t, st_done_cb cb, void *arg)
{
    bc_run((st_shard_t *)st, bc_topic_put, t, NULL, 0, 0, t->name, false, cb, arg);
}

void sh_topic_delete(st_store_t *st, const char *name, st_done_cb cb, void *arg)
{
    bc_run((st_shard_t *)st, bc_topic_del, name, NULL, 0, 0, name, true, cb, arg);
}

void sh_group_put(st_store_t *st, const st_group_t *g, st_done_cb cb, void *arg)
{
    bc_run((st_shard_t *)st, bc_group_put, g, NULL, 0, 0, NULL, false, cb, arg);
}

void sh_group_delete(st_store_t *st, const char *name, st_done_cb cb, void *arg)
{
    bc_run((st_shard_t *)st, bc_group_del, name, NULL, 0, 0, NULL, false, cb, arg);
}

void sh_meta_put(st_store_t *st, const char *ns, const void *key, uint32_t key_len,
                 const void *value, uint32_t value_len, st_done_cb cb, void *arg)
{
    sh_mkey_t m = {ns, key};
    bc_run((st_shard_t *)st, bc_meta_put, &m, value, key_len, value_len, NULL, false, cb,
           arg);
}

void sh_meta_del(st_store_t *st, const char *ns, const void *key, uint32_t key_len,
                 st_done_cb cb, void *arg)
{
    sh_mkey_t m = {ns, key};
    bc_run((st_shard_t *)st, bc_meta_del, &m, NULL, key_len, 0, NULL, false, cb, arg);
}

/* ---- set 0 only ----------------------------------------------------------------- */

static const st_meta_event_t *dlq_find(st_shard_t *s, const char *name);

st_store_t *sh_set0(st_shard_t *s)
{
    return sh_set(s, 0);
}

/* Set 0's answer, with the %DLQ% topics only other sets have (those the
 * watch has seen: sh_meta_watch) added to a listing, or answering a get of
 * one that set 0 does not have. */
typedef struct sh_tget {
    st_shard_t *s;
    st_topic_cb cb;
    void *arg;
    bool list;
    char name[ST_NAME_MAX + 1];
} sh_tget_t;

static void tget_done(void *arg, gt_err_t err, const st_topic_t *t, size_t n)
{
    sh_tget_t *g = arg;
    st_shard_t *s = g->s;
    st_topic_t *all = NULL;
    size_t m = n;
    pthread_mutex_lock(&s->w_mu);
    if (g->list && err == GT_OK && s->n_dlq > 0 &&
        (all = malloc((n + s->n_dlq) * sizeof(*all)))) {
        if (n)
            memcpy(all, t, n * sizeof(*all));
        for (size_t i = 0; i < s->n_dlq; i++) {
            bool have = false;
            for (size_t j = 0; j < n && !have; j++)
                have = strcmp(t[j].name, s->dlq[i].u.topic.name) == 0;
            if (!have)
                all[m++] = s->dlq[i].u.topic;
        }
    } else if (!g->list && (err == GT_ENOTFOUND || (err == GT_OK && n == 0))) {
        const st_meta_event_t *e = dlq_find(s, g->name);
        if (e && (all = malloc(sizeof(*all)))) {
            *all = e->u.topic;
            m = 1;
            err = GT_OK;
        }
    }
    pthread_mutex_unlock(&s->w_mu);
    g->cb(g->arg, err, all ? all : t, all ? m : n);
    free(all);
    free(g);
}

void sh_topic_get(st_store_t *st, const char *name, st_topic_cb cb, void *arg)
{
    st_shard_t *s = (st_shard_t *)st;
    st_store_t *c = sh_set0(s);
    if (!c) {
        cb(arg, GT_AGAIN, NULL, 0);
        return;
    }
    bool dlq = name && strncmp(name, ST_DLQ_PREFIX, strlen(ST_DLQ_PREFIX)) == 0 &&
               strlen(name) <= ST_NAME_MAX;
    sh_tget_t *g = (name == NULL || dlq) ? calloc(1, sizeof(*g)) : NULL;
    if (!g) {
        st_topic_get(c, name, cb, arg);
        return;
    }
    g->s = s;
    g->cb = cb;
    g->arg = arg;
    g->list = name == NULL;
    if (name)
        snprintf(g->name, sizeof(g->name), "%s", name);
    st_topic_get(c, name, tget_done, g);
}

void sh_group_get(st_store_t *st, const char *name, st_group_cb cb, void *arg)
{
    st_store_t *c = sh_set0((st_shard_t *)st);
    if (!c)
        cb(arg, GT_AGAIN, NULL, 0);
    else
        st_group_get(c, name, cb, arg);
}

/* ---- the metadata watch --------------------------------------------------------- */

static bool is_dlq(const st_meta_event_t *e)
{
    return e->kind == ST_META_TOPIC && !e->deleted &&
           strncmp(e->u.topic.name, ST_DLQ_PREFIX, strlen(ST_DLQ_PREFIX)) == 0;
}

/* w_mu held. */
static const st_meta_event_t *dlq_find(st_shard_t *s, const char *name)
{
    for (size_t i = 0; i < s->n_dlq; i++)
        if (strcmp(s->dlq[i].u.topic.name, name) == 0)
            return &s->dlq[i];
    return NULL;
}

/* Set 0's events as they come; a snapshot gets the remembered %DLQ%
 * topics it lacks appended. */
static void w0_cb(void *arg, const st_meta_event_t *evs, size_t n, bool snapshot)
{
    sh_wset_t *w = arg;
    st_shard_t *s = w->s;
    pthread_mutex_lock(&s->w_mu);
    st_meta_event_t *all = NULL;
    size_t m = n;
    if (snapshot && s->n_dlq > 0 && (all = malloc((n + s->n_dlq) * sizeof(*all)))) {
        if (n)
            memcpy(all, evs, n * sizeof(*all));
        for (size_t i = 0; i < s->n_dlq; i++) {
            bool have = false;
            for (size_t j = 0; j < n && !have; j++)
                have = evs[j].kind == ST_META_TOPIC &&
                       strcmp(evs[j].u.topic.name, s->dlq[i].u.topic.name) == 0;
            if (!have)
                all[m++] = s->dlq[i];
        }
    }
    if (s->w_cb)
        s->w_cb(s->w_arg, all ? all : evs, m, snapshot);
    pthread_mutex_unlock(&s->w_mu);
    free(all);
}

/* Another set's events: only the %DLQ% topics it creates, new ones passed
 * on as changes (never a snapshot, never a delete: set 0 has the rest). */
static void wk_cb(void *arg, const st_meta_event_t *evs, size_t n, bool snapshot)
{
    (void)snapshot;
    sh_wset_t *w = arg;
    st_shard_t *s = w->s;
    pthread_mutex_lock(&s->w_mu);
    size_t first = s->n_dlq;
    for (size_t i = 0; i < n; i++) {
        if (!is_dlq(&evs[i]) || dlq_find(s, evs[i].u.topic.name))
            continue;
        if (s->n_dlq == s->cap_dlq) {
            size_t cap = s->cap_dlq ? s->cap_dlq * 2 : 8;
            st_meta_event_t *d = realloc(s->dlq, cap * sizeof(*d));
            if (!d)
                break;
            s->dlq = d;
            s->cap_dlq = cap;
        }
        s->dlq[s->n_dlq++] = evs[i];
        GT_LOG(INFO, "store", "%s created on set %" PRIu32 " (a dead letter moved there)",
               evs[i].u.topic.name, w->k);
    }
    if (s->w_cb && s->n_dlq > first)
        s->w_cb(s->w_arg, s->dlq + first, s->n_dlq - first, false);
    pthread_mutex_unlock(&s->w_mu);
}

static void watch_set(st_shard_t *s, uint32_t k, bool on)
{
    st_store_t *c = sh_set(s, k);
    if (!c)
        return;
    s->wset[k].s = s;
    s->wset[k].k = k;
    if (on)
        st_meta_watch(c, k == 0 ? w0_cb : wk_cb, &s->wset[k]);
    else
        st_meta_watch(c, NULL, NULL);
}

void sh_meta_watch(st_store_t *st, st_meta_cb cb, void *arg)
{
    st_shard_t *s = (st_shard_t *)st;
    pthread_mutex_lock(&s->w_mu);
    s->w_cb = cb;
    s->w_arg = arg;
    pthread_mutex_unlock(&s->w_mu);
    /* Not under w_mu: a local child calls back at once. */
    if (!sh_set0(s) && cb)
        cb(arg, NULL, 0, true);
    unsigned top = atomic_load(&s->top);
    for (uint32_t k = 0; k < top && k < ST_SHARD_MAX; k++)
        watch_set(s, k, cb != NULL);
}

void sh_meta_watch_add(st_shard_t *s, uint32_t k)
{
    pthread_mutex_lock(&s->w_mu);
    bool on = s->w_cb != NULL;
    pthread_mutex_unlock(&s->w_mu);
    if (on)
        watch_set(s, k, true);
}

void sh_meta_list(st_store_t *st, const st_meta_list_req_t *req, st_meta_list_cb cb,
                  void *arg)
{
    st_store_t *c = sh_set0((st_shard_t *)st);
    if (!c)
        cb(arg, GT_AGAIN, NULL, 0, false);
    else
        st_meta_list(c, req, cb, arg);
}

/* ---- a new set: metadata from set 0 ----------------------------------------------------- */

/* Topics, then groups, then each namespace's records page by page; the
 * puts of one step go out together (a counter, no recursion). */
struct sh_copy {
    st_shard_t *s;
    uint32_t k;
    st_store_t *from, *to;
    st_done_cb cb;
    void *arg;
    atomic_int left;
    pthread_mutex_t mu;
    gt_err_t err;
    int phase;          /* 0 topics, 1 groups, 2.. namespace phase-2 */
    st_topic_t *topics;
    st_group_t *groups;
    /* the current page of records (owned copies) */
    uint8_t **keys, **vals;
    uint32_t *klen, *vlen;
    size_t nrec;
    bool more;
    uint8_t after[ST_META_KEY_MAX];
    uint32_t after_len;
};

static void copy_phase(sh_copy_t *c);

static void copy_page_free(sh_copy_t *c)
{
    for (size_t i = 0; i < c->nrec; i++) {
        free(c->keys[i]);
        free(c->vals[i]);
    }
    free(c->keys);
    free(c->vals);
    free(c->klen);
    free(c->vlen);
    c->keys = c->vals = NULL;
    c->klen = c->vlen = NULL;
    c->nrec = 0;
}

static void copy_finish(sh_copy_t *c)
{
    st_shard_t *s = c->s;
    gt_err_t err = c->err;
    if (err == GT_OK) {
        atomic_store(&s->ready[c->k], true);
        GT_LOG(INFO, "store", "replica set %u has the metadata of set 0: it may take topics",
               (unsigned)c->k);
    } else {
        GT_LOG(WARN, "store", "cannot copy the metadata of replica set 0 to set %u: %s",
               (unsigned)c->k, gt_err_str(err));
    }
    copy_page_free(c);
    free(c->topics);
    free(c->groups);
    pthread_mutex_destroy(&c->mu);
    atomic_store(&s->copying[c->k], false);
    st_done_cb cb = c->cb;
    void *arg = c->arg;
    free(c);
    if (cb)
        cb(arg, err);
    sh_op_end(s);
}

static void copy_put_done(void *arg, gt_err_t err)
{
    sh_copy_t *c = arg;
    if (err != GT_OK) {
        pthread_mutex_lock(&c->mu);
        if (c->err == GT_OK)
            c->err = err;
        pthread_mutex_unlock(&c->mu);
    }
    if (atomic_fetch_sub(&c->left, 1) != 1)
        return;
    if (c->err != GT_OK) {
        copy_finish(c);
        return;
    }
    if (c->phase >= 2 && c->more) {
        copy_page_free(c);
        copy_phase(c); /* the next page of the same namespace */
        return;
    }
    copy_page_free(c);
    c->phase++;
    c->after_len = 0;
    copy_phase(c);
}

/* Issues n puts through put(i); with none, moves on. */
static void copy_puts(sh_copy_t *c, size_t n, void (*put)(sh_copy_t *c, size_t i))
{
    atomic_store(&c->left, (int)n + 1);
    for (size_t i = 0; i < n; i++)
        put(c, i);
    copy_put_done(c, GT_OK); /* the +1: all issued */
}

static void put_topic(sh_copy_t *c, size_t i)
{
    st_topic_put(c->to, &c->topics[i], copy_put_done, c);
}

static void put_group(sh_copy_t *c, size_t i)
{
    st_group_put(c->to, &c->groups[i], copy_put_done, c);
}

static void put_rec(sh_copy_t *c, size_t i)
{
    st_meta_put(c->to, c->s->cfg.meta_ns[c->phase - 2], c->keys[i], c->klen[i], c->vals[i],
                c->vlen[i], copy_put_done, c);
}

static void copy_topics(void *arg, gt_err_t err, const st_topic_t *t, size_t n)
{
    sh_copy_t *c = arg;
    if (err == GT_OK && n && !(c->topics = malloc(n * sizeof(*t))))
        err = GT_ENOMEM;
    if (err != GT_OK) {
        c->err = err;
        copy_finish(c);
        return;
    }
    if (n)
        memcpy(c->topics, t, n * sizeof(*t));
    copy_puts(c, n, put_topic);
}

static void copy_groups(void *arg, gt_err_t err, const st_group_t *g, size_t n)
{
    sh_copy_t *c = arg;
    if (err == GT_OK && n && !(c->groups = malloc(n * sizeof(*g))))
        err = GT_ENOMEM;
    if (err != GT_OK) {
        c->err = err;
        copy_finish(c);
        return;
    }
    if (n)
        memcpy(c->groups, g, n * sizeof(*g));
    copy_puts(c, n, put_group);
}

static void copy_recs(void *arg, gt_err_t err, const st_meta_rec_t *r, size_t n, bool more)
{
    sh_copy_t *c = arg;
    if (err == GT_OK && n) {
        c->keys = calloc(n, sizeof(*c->keys));
        c->vals = calloc(n, sizeof(*c->vals));
        c->klen = calloc(n, sizeof(*c->klen));
        c->vlen = calloc(n, sizeof(*c->vlen));
        if (!c->keys || !c->vals || !c->klen || !c->vlen)
            err = GT_ENOMEM;
        for (size_t i = 0; err == GT_OK && i < n; i++) {
            c->nrec = i + 1;
            c->keys[i] = malloc(r[i].key_len ? r[i].key_len : 1);
            c->vals[i] = malloc(r[i].value_len ? r[i].value_len : 1);
            if (!c->keys[i] || !c->vals[i]) {
                err = GT_ENOMEM;
                break;
            }
            memcpy(c->keys[i], r[i].key, r[i].key_len);
            if (r[i].value_len)
                memcpy(c->vals[i], r[i].value, r[i].value_len);
            c->klen[i] = r[i].key_len;
            c->vlen[i] = r[i].value_len;
        }
        if (err == GT_OK && r[n - 1].key_len <= sizeof(c->after)) {
            memcpy(c->after, r[n - 1].key, r[n - 1].key_len);
            c->after_len = r[n - 1].key_len;
        } else if (err == GT_OK) {
            more = false;
        }
    }
    if (err != GT_OK) {
        c->err = err;
        copy_finish(c);
        return;
    }
    c->more = more && n > 0;
    copy_puts(c, n, put_rec);
}

static void copy_phase(sh_copy_t *c)
{
    if (c->phase == 0) {
        st_topic_get(c->from, NULL, copy_topics, c);
    } else if (c->phase == 1) {
        st_group_get(c->from, NULL, copy_groups, c);
    } else if ((size_t)(c->phase - 2) < c->s->cfg.n_meta_ns) {
        st_meta_list_req_t req = {.ns = c->s->cfg.meta_ns[c->phase - 2],
                                  .after = c->after_len ? c->after : NULL,
                                  .after_len = c->after_len,
                                  .max = ST_META_LIST_MAX};
        st_meta_list(c->from, &req, copy_recs, c);
    } else {
        copy_finish(c);
    }
}

void sh_copy_run(sh_copy_t *c)
{
    copy_phase(c);
}

sh_copy_t *sh_copy_new(st_shard_t *s, uint32_t k, st_store_t *from, st_store_t *to,
                       st_done_cb cb, void *arg)
{
    sh_copy_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    sh_op_begin(s);
    c->s = s;
    c->k = k;
    c->from = from;
    c->to = to;
    c->cb = cb;
    c->arg = arg;
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

gt_err_t st_shard_copy(st_store_t *st, uint32_t k, st_done_cb cb, void *arg)
{
    st_shard_t *s = (st_shard_t *)st;
    st_store_t *to = sh_set(s, k), *from = sh_set0(s);
    bool idle = false;
    if (k == 0 || !to || !from || atomic_load(&s->ready[k]))
        return GT_EINVAL;
    if (!atomic_compare_exchange_strong(&s->copying[k], &idle, true))
        return GT_EBUSY;
    sh_copy_t *c = sh_copy_new(s, k, from, to, cb, arg);
    if (!c) {
        atomic_store(&s->copying[k], false);
        return GT_ENOMEM;
    }
    copy_phase(c);
    return GT_OK;
}
