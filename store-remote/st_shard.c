/* st_shard (st_shard.h): the routing store over several replica sets. */
#include "st_shard.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt_log.h"

#define SH_FIFO_WAIT_MS 1000 /* a FIFO pop waiting on an older set: per call */
#define SH_UNPLACED 0x80000000u  /* append_multi: a dest's topic has no placement */

/* The set table is written by st_shard_add (once per slot) and read by
 * every op without a lock. */
typedef struct st_shard {
    st_store_t base;
    st_shard_config_t cfg;
    _Atomic(st_store_t *) sets[ST_SHARD_MAX];
    atomic_bool ready[ST_SHARD_MAX];
    atomic_bool copying[ST_SHARD_MAX]; /* a metadata copy in progress */
    atomic_uint top;        /* highest present id + 1 */
    atomic_uint tx_turn;    /* tx_pending's rotating start */
    pthread_mutex_t add_mu; /* st_shard_add */
} st_shard_t;

/* A topic's route: its sets, writer first. */
typedef struct sh_route {
    uint32_t k[ST_SHARD_MAX];
    size_t n;
    bool placed;
} sh_route_t;

/* ---- helpers ----------------------------------------------------------------- */

static st_store_t *set_of(st_shard_t *s, uint32_t k)
{
    return k < ST_SHARD_MAX ? atomic_load(&s->sets[k]) : NULL;
}

bool st_shard_system_topic(const char *t)
{
    return t == NULL || strncmp(t, ST_SYS_PREFIX, strlen(ST_SYS_PREFIX)) == 0 ||
           strncmp(t, ST_DLQ_PREFIX, strlen(ST_DLQ_PREFIX)) == 0 ||
           strncmp(t, ST_RETRY_PREFIX, strlen(ST_RETRY_PREFIX)) == 0 ||
           strcmp(t, "RMQ_SYS_TRACE_TOPIC") == 0;
}

/* Every present set, 0 first. */
static void route_all(st_shard_t *s, sh_route_t *r)
{
    unsigned top = atomic_load(&s->top);
    r->n = 0;
    r->placed = false;
    for (uint32_t k = 0; k < top && k < ST_SHARD_MAX; k++)
        if (set_of(s, k))
            r->k[r->n++] = k;
    if (r->n == 0)
        r->k[r->n++] = 0; /* calls then fail with GT_AGAIN */
}

static void route_of(st_shard_t *s, const char *topic, sh_route_t *r)
{
    size_t n = 0;
    if (topic && !st_shard_system_topic(topic) && s->cfg.placer.lookup)
        n = s->cfg.placer.lookup(s->cfg.placer.ctx, topic, r->k, ST_SHARD_MAX);
    if (n == 0) {
        route_all(s, r);
        return;
    }
    r->n = n;
    r->placed = true;
}

gt_err_t st_shard_handle_split(const char *h, uint32_t *k, const char **inner)
{
    size_t i = 0;
    uint32_t v = 0;
    *k = 0;
    *inner = h;
    if (h == NULL)
        return GT_OK;
    while (h[i] >= '0' && h[i] <= '9' && i < 3)
        v = v * 10 + (uint32_t)(h[i++] - '0');
    if (i == 0 || h[i] != '.')
        return GT_OK; /* no prefix: set 0 */
    if (v == 0 || v >= ST_SHARD_MAX || (h[0] == '0'))
        return GT_EINVAL;
    *k = v;
    *inner = h + i + 1;
    return GT_OK;
}

gt_err_t st_shard_handle_join(uint32_t k, const char *inner, char out[ST_HANDLE_MAX])
{
    int n = k == 0 ? snprintf(out, ST_HANDLE_MAX, "%s", inner)
                   : snprintf(out, ST_HANDLE_MAX, "%u.%s", (unsigned)k, inner);
    return n < 0 || n >= ST_HANDLE_MAX ? GT_ERANGE : GT_OK;
}

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
    char topic[ST_NAME_MAX + 1]; /* topic_put: placed after */
    sh_leg_t legs[ST_SHARD_MAX];
};

static void bc_finish(sh_bc_t *b)
{
    gt_err_t err = b->err0 != GT_OK ? b->err0 : b->err;
    st_done_cb cb = b->cb;
    void *arg = b->arg;
    pthread_mutex_destroy(&b->mu);
    free(b);
    cb(arg, err);
}

static void bc_placed(void *arg, gt_err_t err)
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
    if (b->topic[0] && b->err0 == GT_OK && b->err == GT_OK && s->cfg.placer.ensure &&
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
 * failure).  topic: place it afterwards (topic_put). */
static void bc_run(st_shard_t *s, sh_bc_fn fn, const void *a, const void *b, uint32_t la,
                   uint32_t lb, const char *topic, st_done_cb cb, void *arg)
{
    sh_bc_t *bc = calloc(1, sizeof(*bc));
    if (!bc) {
        cb(arg, GT_ENOMEM);
        return;
    }
    sh_route_t r;
    route_all(s, &r);
    bc->s = s;
    bc->cb = cb;
    bc->arg = arg;
    bc->err0 = GT_AGAIN; /* no set 0 yet */
    pthread_mutex_init(&bc->mu, NULL);
    if (topic)
        snprintf(bc->topic, sizeof(bc->topic), "%s", topic);
    atomic_store(&bc->left, (int)r.n);
    for (size_t i = 0; i < r.n; i++) {
        bc->legs[i] = (sh_leg_t){bc, r.k[i]};
        st_store_t *c = set_of(s, r.k[i]);
        if (c)
            fn(c, a, b, la, lb, bc_leg_done, &bc->legs[i]);
        else
            bc_leg_done(&bc->legs[i], GT_AGAIN);
    }
}

static void sh_topic_put(st_store_t *st, const st_topic_t *t, st_done_cb cb, void *arg)
{
    bc_run((st_shard_t *)st, bc_topic_put, t, NULL, 0, 0, t->name, cb, arg);
}

static void sh_topic_delete(st_store_t *st, const char *name, st_done_cb cb, void *arg)
{
    bc_run((st_shard_t *)st, bc_topic_del, name, NULL, 0, 0, NULL, cb, arg);
}

static void sh_group_put(st_store_t *st, const st_group_t *g, st_done_cb cb, void *arg)
{
    bc_run((st_shard_t *)st, bc_group_put, g, NULL, 0, 0, NULL, cb, arg);
}

static void sh_group_delete(st_store_t *st, const char *name, st_done_cb cb, void *arg)
{
    bc_run((st_shard_t *)st, bc_group_del, name, NULL, 0, 0, NULL, cb, arg);
}

static void sh_meta_put(st_store_t *st, const char *ns, const void *key, uint32_t key_len,
                        const void *value, uint32_t value_len, st_done_cb cb, void *arg)
{
    sh_mkey_t m = {ns, key};
    bc_run((st_shard_t *)st, bc_meta_put, &m, value, key_len, value_len, NULL, cb, arg);
}

static void sh_meta_del(st_store_t *st, const char *ns, const void *key, uint32_t key_len,
                        st_done_cb cb, void *arg)
{
    sh_mkey_t m = {ns, key};
    bc_run((st_shard_t *)st, bc_meta_del, &m, NULL, key_len, 0, NULL, cb, arg);
}

/* ---- set 0 only ----------------------------------------------------------------- */

static st_store_t *set0(st_shard_t *s)
{
    return set_of(s, 0);
}

static void sh_topic_get(st_store_t *st, const char *name, st_topic_cb cb, void *arg)
{
    st_store_t *c = set0((st_shard_t *)st);
    if (!c)
        cb(arg, GT_AGAIN, NULL, 0);
    else
        st_topic_get(c, name, cb, arg);
}

static void sh_group_get(st_store_t *st, const char *name, st_group_cb cb, void *arg)
{
    st_store_t *c = set0((st_shard_t *)st);
    if (!c)
        cb(arg, GT_AGAIN, NULL, 0);
    else
        st_group_get(c, name, cb, arg);
}

static void sh_meta_watch(st_store_t *st, st_meta_cb cb, void *arg)
{
    st_store_t *c = set0((st_shard_t *)st);
    if (c)
        st_meta_watch(c, cb, arg);
    else if (cb)
        cb(arg, NULL, 0, true);
}

static void sh_meta_list(st_store_t *st, const st_meta_list_req_t *req, st_meta_list_cb cb,
                         void *arg)
{
    st_store_t *c = set0((st_shard_t *)st);
    if (!c)
        cb(arg, GT_AGAIN, NULL, 0, false);
    else
        st_meta_list(c, req, cb, arg);
}

/* ---- writer set only -------------------------------------------------------------- */

static st_store_t *writer(st_shard_t *s, const char *topic)
{
    sh_route_t r;
    route_of(s, topic, &r);
    return set_of(s, r.k[0]);
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

static void sh_append(st_store_t *st, const char *topic, const st_message_t *msgs, size_t n,
                      st_append_cb cb, void *arg)
{
    st_shard_t *s = (st_shard_t *)st;
    sh_route_t r;
    route_of(s, topic, &r);
    st_store_t *c = set_of(s, r.k[0]);
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

static void sh_pull(st_store_t *st, const st_pull_req_t *req, st_msgs_cb cb, void *arg)
{
    st_store_t *c = writer((st_shard_t *)st, req->topic);
    if (!c)
        cb(arg, GT_AGAIN, NULL, 0, 0);
    else
        st_pull(c, req, cb, arg);
}

static void sh_offset_get(st_store_t *st, const char *group, const char *topic, uint32_t q,
                          st_offset_cb cb, void *arg)
{
    st_store_t *c = writer((st_shard_t *)st, topic);
    if (!c)
        cb(arg, GT_AGAIN, 0);
    else
        st_offset_get(c, group, topic, q, cb, arg);
}

static void sh_offset_update(st_store_t *st, const char *group, const char *topic, uint32_t q,
                             uint64_t off, st_done_cb cb, void *arg)
{
    st_store_t *c = writer((st_shard_t *)st, topic);
    if (!c)
        cb(arg, GT_AGAIN);
    else
        st_offset_update(c, group, topic, q, off, cb, arg);
}

static void sh_offset_query(st_store_t *st, const char *topic, uint32_t q,
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

static void sh_append_multi(st_store_t *st, const st_message_t *msg, const st_dest_t *dests,
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
        route_of(s, dests[i].topic, &r);
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
        st_store_t *c = set_of(s, first);
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
        st_store_t *c = set_of(s, ks[j]);
        const st_dest_t *d = m->dests + (l->idx - m->idx);
        if (!c)
            multi_leg_done(l, GT_AGAIN, NULL, 0);
        else
            st_append_multi(c, msg, d, l->n, multi_leg_done, l);
    }
}

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
    st_store_t *c = set_of(p->s, p->r.k[0]);
    p->cur = p->r.k[0];
    if (!c) {
        pop_deliver(p, GT_AGAIN, NULL, 0);
        return;
    }
    st_pop(c, &p->req, pop_last_done, p);
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
        st_store_t *c = set_of(p->s, p->cur);
        if (c) {
            st_stats(c, p->topic, p->group, pop_fifo_stats, p);
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
    st_store_t *c = set_of(p->s, p->busy);
    p->cur = p->busy;
    if (!c) {
        pop_deliver(p, GT_OK, NULL, 0);
        return;
    }
    if (p->req.poll_timeout_ms > SH_FIFO_WAIT_MS)
        p->req.poll_timeout_ms = SH_FIFO_WAIT_MS;
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
    st_store_t *c = set_of(p->s, p->cur);
    if (c)
        st_stats(c, p->topic, p->group, pop_fifo_stats, p);
    else
        pop_fifo_stats(p, GT_AGAIN, NULL);
}

/* Older sets first, each without waiting; then the writer with the
 * caller's poll. */
static void pop_step(sh_pop_t *p)
{
    while (p->next < p->r.n) {
        uint32_t k = p->r.k[p->next++];
        st_store_t *c = set_of(p->s, k);
        if (!c)
            continue;
        st_pop_req_t q = p->req;
        q.poll_timeout_ms = 0;
        q.cancel_key = 0;
        p->cur = k;
        st_pop(c, &q, pop_older_done, p);
        return;
    }
    if (p->r.placed && p->r.n > 1) {
        st_store_t *c0 = set0(p->s);
        if (c0) {
            st_group_get(c0, p->group, pop_fifo_group, p);
            return;
        }
    }
    pop_writer(p);
}

static void sh_pop(st_store_t *st, const st_pop_req_t *req, st_pop_cb cb, void *arg)
{
    st_shard_t *s = (st_shard_t *)st;
    sh_route_t r;
    route_of(s, req->topic, &r);
    if (r.n == 1 && r.k[0] == 0) {
        st_store_t *c = set0(s);
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

static void sh_pop_cancel(st_store_t *st, uint64_t key)
{
    sh_route_t r;
    route_all((st_shard_t *)st, &r);
    for (size_t i = 0; i < r.n; i++) {
        st_store_t *c = set_of((st_shard_t *)st, r.k[i]);
        if (c)
            st_pop_cancel(c, key);
    }
}

/* ---- handles ------------------------------------------------------------------------ */

static void sh_ack(st_store_t *st, const char *group, const char *topic, const char *handle,
                   st_done_cb cb, void *arg)
{
    uint32_t k;
    const char *h;
    if (st_shard_handle_split(handle, &k, &h) != GT_OK) {
        cb(arg, GT_EINVAL);
        return;
    }
    st_store_t *c = set_of((st_shard_t *)st, k);
    if (!c)
        cb(arg, GT_AGAIN);
    else
        st_ack(c, group, topic, h, cb, arg);
}

static void sh_release(st_store_t *st, const char *group, const char *topic,
                       const char *handle, st_done_cb cb, void *arg)
{
    uint32_t k;
    const char *h;
    if (st_shard_handle_split(handle, &k, &h) != GT_OK) {
        cb(arg, GT_EINVAL);
        return;
    }
    st_store_t *c = set_of((st_shard_t *)st, k);
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

static void sh_change_invisible(st_store_t *st, const char *group, const char *topic,
                                const char *handle, int64_t ms, st_handle_cb cb, void *arg)
{
    uint32_t k;
    const char *h;
    if (st_shard_handle_split(handle, &k, &h) != GT_OK) {
        cb(arg, GT_EINVAL, NULL);
        return;
    }
    st_store_t *c = set_of((st_shard_t *)st, k);
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

static void sh_ack_batch(st_store_t *st, const char *group, const char *topic,
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
        st_store_t *c = set0(s);
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
        st_store_t *c = set_of(s, lk[j]);
        const char *const *hs = a->hs + (l->idx - a->idx);
        if (!c)
            ab_leg_done(l, GT_AGAIN, NULL, 0);
        else
            st_ack_batch(c, group, topic, hs, l->n, ab_leg_done, l);
    }
}

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
        st_store_t *c = set_of(m->s, m->r.k[m->i++]);
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
    route_of(m->s, topic, &m->r);
    snprintf(m->group, sizeof(m->group), "%s", group ? group : "");
    snprintf(m->topic, sizeof(m->topic), "%s", topic ? topic : "");
    m->requeue = requeue;
    m->cb = cb;
    m->arg = arg;
    sum_next(m);
}

static void sh_purge(st_store_t *st, const char *group, const char *topic, st_count_cb cb,
                     void *arg)
{
    sum_start(st, group, topic, false, cb, arg);
}

static void sh_requeue(st_store_t *st, const char *group, const char *topic, st_count_cb cb,
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
    st_stats_t sum;
    st_queue_stats_t *queues;
    st_stats_cb cb;
    void *arg;
} sh_stats_t;

static void stats_next(sh_stats_t *m);

static void stats_finish(sh_stats_t *m, gt_err_t err)
{
    m->cb(m->arg, err, err == GT_OK ? &m->sum : NULL);
    free(m->queues);
    free(m);
}

static void stats_done(void *arg, gt_err_t err, const st_stats_t *st)
{
    sh_stats_t *m = arg;
    if (err != GT_OK || !st) {
        if (m->i == 1) { /* the writer set's answer is the one that counts */
            stats_finish(m, err != GT_OK ? err : GT_EIO);
            return;
        }
        stats_next(m);
        return;
    }
    if (m->i == 1) {
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
        st_store_t *c = set_of(m->s, m->r.k[m->i++]);
        if (!c) {
            if (m->i == 1) {
                stats_finish(m, GT_AGAIN);
                return;
            }
            continue;
        }
        st_stats(c, m->topic, m->has_group ? m->group : NULL, stats_done, m);
        return;
    }
    stats_finish(m, GT_OK);
}

static void sh_stats(st_store_t *st, const char *topic, const char *group, st_stats_cb cb,
                     void *arg)
{
    st_shard_t *s = (st_shard_t *)st;
    sh_route_t r;
    route_of(s, topic, &r);
    if (r.n == 1) {
        st_store_t *c = set_of(s, r.k[0]);
        if (!c)
            cb(arg, GT_AGAIN, NULL);
        else
            st_stats(c, topic, group, cb, arg);
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
        st_store_t *c = set_of(t->s, t->r.k[t->i++]);
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
    route_of(t->s, topic, &t->r);
    return t;
}

static void sh_lookup_id(st_store_t *st, const char *topic, const char *id, st_msgs_cb cb,
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

static void sh_lookup_key(st_store_t *st, const char *topic, const char *key, uint32_t max,
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

static void sh_tx_end(st_store_t *st, const char *topic, const char *id, bool commit,
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

static void sh_tx_checked(st_store_t *st, const char *topic, const char *id, uint32_t seen,
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

static void sh_recall(st_store_t *st, const char *topic, const char *id, st_done_cb cb,
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
        st_store_t *c = set_of(t->s, k);
        if (!c)
            continue;
        st_tx_pending(c, t->ms, t->max, txp_done, t);
        return;
    }
    t->cb(t->arg, t->err, NULL, 0, 0);
    free(t);
}

static void sh_tx_pending(st_store_t *st, int64_t ms, uint32_t max, st_msgs_cb cb, void *arg)
{
    st_shard_t *s = (st_shard_t *)st;
    sh_txp_t *t = calloc(1, sizeof(*t));
    if (!t) {
        cb(arg, GT_ENOMEM, NULL, 0, 0);
        return;
    }
    t->s = s;
    route_all(s, &t->r);
    if (t->r.n == 1) {
        free(t);
        st_store_t *c = set0(s);
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

static const st_ops_t sh_ops;

/* ---- a new set: metadata from set 0 ----------------------------------------------------- */

/* Topics, then groups, then each namespace's records page by page; the
 * puts of one step go out together (a counter, no recursion). */
typedef struct sh_copy {
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
} sh_copy_t;

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

/* ---- the set table ------------------------------------------------------------------------ */

static sh_copy_t *copy_new(st_shard_t *s, uint32_t k, st_store_t *from, st_store_t *to,
                           st_done_cb cb, void *arg)
{
    sh_copy_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
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
    st_store_t *to = set_of(s, k), *from = set0(s);
    bool idle = false;
    if (k == 0 || !to || !from || atomic_load(&s->ready[k]))
        return GT_EINVAL;
    if (!atomic_compare_exchange_strong(&s->copying[k], &idle, true))
        return GT_EBUSY;
    sh_copy_t *c = copy_new(s, k, from, to, cb, arg);
    if (!c) {
        atomic_store(&s->copying[k], false);
        return GT_ENOMEM;
    }
    copy_phase(c);
    return GT_OK;
}

gt_err_t st_shard_add(st_store_t *st, uint32_t k, st_store_t *child, st_done_cb cb, void *arg)
{
    st_shard_t *s = (st_shard_t *)st;
    if (k >= ST_SHARD_MAX || child == NULL) {
        st_close(child);
        return GT_EINVAL;
    }
    pthread_mutex_lock(&s->add_mu);
    bool first = atomic_load(&s->top) == 0;
    if (set_of(s, k)) {
        pthread_mutex_unlock(&s->add_mu);
        st_close(child);
        return GT_EINVAL;
    }
    st_store_t *from = set0(s);
    sh_copy_t *c = NULL;
    if (!first && from && k != 0) {
        if (!(c = copy_new(s, k, from, child, cb, arg))) {
            pthread_mutex_unlock(&s->add_mu);
            st_close(child);
            return GT_ENOMEM;
        }
        atomic_store(&s->copying[k], true);
    }
    atomic_store(&s->sets[k], child);
    if (atomic_load(&s->top) < k + 1)
        atomic_store(&s->top, k + 1);
    if (!c)
        atomic_store(&s->ready[k], true);
    pthread_mutex_unlock(&s->add_mu);
    /* From here metadata writes go to the new set too; the copy brings
     * what set 0 had before. */
    if (c)
        copy_phase(c);
    else if (cb)
        cb(arg, GT_OK);
    return GT_OK;
}

bool st_shard_ready(st_store_t *st, uint32_t k)
{
    st_shard_t *s = (st_shard_t *)st;
    return k < ST_SHARD_MAX && set_of(s, k) && atomic_load(&s->ready[k]);
}

void *st_shard_owner(st_store_t *st)
{
    return st && st->ops == &sh_ops ? ((st_shard_t *)st)->cfg.close_ctx : NULL;
}

st_store_t *st_shard_child(st_store_t *st, uint32_t k)
{
    return set_of((st_shard_t *)st, k);
}

/* ---- open / close --------------------------------------------------------------------------- */

static void sh_close(st_store_t *st)
{
    st_shard_t *s = (st_shard_t *)st;
    if (s->cfg.on_close)
        s->cfg.on_close(s->cfg.close_ctx);
    for (uint32_t k = 0; k < ST_SHARD_MAX; k++)
        st_close(atomic_exchange(&s->sets[k], NULL));
    pthread_mutex_destroy(&s->add_mu);
    free(s);
}

static const st_ops_t sh_ops = {
    .name = "shard",
    .close = sh_close,
    .topic_put = sh_topic_put,
    .topic_delete = sh_topic_delete,
    .topic_get = sh_topic_get,
    .group_put = sh_group_put,
    .group_delete = sh_group_delete,
    .group_get = sh_group_get,
    .append = sh_append,
    .pop = sh_pop,
    .pop_cancel = sh_pop_cancel,
    .ack = sh_ack,
    .ack_batch = sh_ack_batch,
    .change_invisible = sh_change_invisible,
    .release = sh_release,
    .pull = sh_pull,
    .offset_get = sh_offset_get,
    .offset_update = sh_offset_update,
    .offset_query = sh_offset_query,
    .lookup_id = sh_lookup_id,
    .lookup_key = sh_lookup_key,
    .stats = sh_stats,
    .tx_end = sh_tx_end,
    .tx_pending = sh_tx_pending,
    .tx_checked = sh_tx_checked,
    .recall = sh_recall,
    .meta_watch = sh_meta_watch,
    .append_multi = sh_append_multi,
    .purge = sh_purge,
    .requeue = sh_requeue,
    .meta_put = sh_meta_put,
    .meta_del = sh_meta_del,
    .meta_list = sh_meta_list,
};

gt_err_t st_shard_open(const st_shard_config_t *cfg, st_store_t **out)
{
    *out = NULL;
    st_shard_t *s = calloc(1, sizeof(*s));
    if (!s)
        return GT_ENOMEM;
    s->base.ops = &sh_ops;
    if (cfg)
        s->cfg = *cfg;
    pthread_mutex_init(&s->add_mu, NULL);
    *out = &s->base;
    return GT_OK;
}
