/* st_place (st_place.h): replica sets and topic placement from etcd, for
 * the st_shard router. */
#include "st_place.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gt_etcd.h"
#include "gt_log.h"

#define PL_KEY_MAX 600
#define PL_VAL_MAX 512
#define PL_BUCKETS 1024
#define PL_ENSURE_TRIES 5

typedef struct pl_topic {
    struct pl_topic *next;
    uint32_t sets[ST_SHARD_MAX];
    size_t n;          /* 0: deleted (sets keeps the first n_old it had) */
    size_t n_old;
    int64_t rev;       /* the key's mod revision */
    char name[];
} pl_topic_t;

typedef struct pl_set {
    char leader[256], members[512], isr[512];
    bool open;         /* a client was added to the router */
    bool opening;
} pl_set_t;

/* Guarded by mu, except the configuration (set at open). */
typedef struct st_place {
    st_store_t *shard;         /* the router (owns this through on_close) */
    gt_etcd_t *e;
    st_cluster_config_t cfg;   /* copied; etcd strings below */
    char **etcd;
    char name[256];            /* the cluster name (keys fit PL_KEY_MAX) */
    char prefix[PL_KEY_MAX];   /* /gantry/<name>/ */
    char rs_prefix[PL_KEY_MAX];
    char pl_prefix[PL_KEY_MAX];

    pthread_mutex_t mu;
    pthread_cond_t cv;         /* the opener thread's work */
    bool closing;
    pl_set_t sets[ST_SHARD_MAX];
    uint32_t writes[ST_SHARD_MAX]; /* topics whose writer is the set */
    pl_topic_t *buckets[PL_BUCKETS];
    gt_etcd_watch_t *w_rs, *w_pl;
    bool rewatch;
    pthread_t opener;
    bool opener_started;
} st_place_t;

/* ---- the placement cache --------------------------------------------------- */

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static pl_topic_t *topic_find(st_place_t *p, const char *name)
{
    for (pl_topic_t *t = p->buckets[hash_str(name) % PL_BUCKETS]; t; t = t->next)
        if (strcmp(t->name, name) == 0)
            return t;
    return NULL;
}

/* "<k>[,<k>...]" -> sets; 0 when malformed. */
static size_t parse_sets(const char *v, uint32_t *sets)
{
    size_t n = 0;
    while (*v && n < ST_SHARD_MAX) {
        char *end;
        unsigned long k = strtoul(v, &end, 10);
        if (end == v || k >= ST_SHARD_MAX)
            return 0;
        for (size_t i = 0; i < n; i++)
            if (sets[i] == k)
                return 0;
        sets[n++] = (uint32_t)k;
        if (*end == '\0')
            return n;
        if (*end != ',')
            return 0;
        v = end + 1;
    }
    return 0;
}

static void format_sets(const uint32_t *sets, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && o < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, "%s%u", i ? "," : "", (unsigned)sets[i]);
}

/* With mu held: the topic's placement at rev (n == 0: gone), unless newer
 * is known. */
static void topic_set(st_place_t *p, const char *name, const uint32_t *sets, size_t n,
                      int64_t rev)
{
    pl_topic_t *t = topic_find(p, name);
    if (t && t->rev >= rev)
        return;
    if (!t) {
        if (n == 0)
            return;
        size_t len = strlen(name);
        if (!(t = calloc(1, sizeof(*t) + len + 1)))
            return;
        memcpy(t->name, name, len + 1);
        uint32_t b = hash_str(name) % PL_BUCKETS;
        t->next = p->buckets[b];
        p->buckets[b] = t;
    }
    if (t->n)
        p->writes[t->sets[0]]--;
    if (n == 0 && t->n)
        t->n_old = t->n;
    if (n) /* a drop passes sets NULL (forget_done): no copy from it */
        memcpy(t->sets, sets, n * sizeof(*sets));
    t->n = n;
    t->rev = rev;
    if (n)
        p->writes[sets[0]]++;
}

/* ---- replica sets ------------------------------------------------------------ */

/* With mu held: a set that is complete and has no client yet wakes the
 * opener. */
static void sets_check(st_place_t *p)
{
    for (uint32_t k = 1; k < ST_SHARD_MAX; k++) {
        pl_set_t *s = &p->sets[k];
        if (!s->open && !s->opening && (s->leader[0] || s->isr[0])) {
            pthread_cond_broadcast(&p->cv);
            return;
        }
    }
}

/* Waits for a metadata copy (start-up). */
typedef struct pl_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;           /* the waiter's and the callback's */
    bool done;
    gt_err_t err;
} pl_wait_t;

static void pl_wait_put(pl_wait_t *w)
{
    pthread_mutex_lock(&w->mu);
    bool last = --w->refs == 0;
    pthread_mutex_unlock(&w->mu);
    if (last) {
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
        free(w);
    }
}

static void pl_wait_done(void *arg, gt_err_t err)
{
    pl_wait_t *w = arg;
    pthread_mutex_lock(&w->mu);
    w->done = true;
    w->err = err;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pl_wait_put(w);
}

/* Opens a client of set k and adds it to the router (metadata copy
 * started); with wait_ms > 0 waits that long for the copy.  Without mu. */
static gt_err_t open_set(st_place_t *p, uint32_t k, int64_t wait_ms)
{
    st_cluster_config_t cc = p->cfg;
    cc.replica_set = k;
    cc.leader_wait_ms = 0;
    st_store_t *child = NULL;
    gt_err_t rc = st_cluster_open(&cc, &child);
    if (rc != GT_OK)
        return rc;
    pl_wait_t *w = calloc(1, sizeof(*w));
    if (!w) {
        st_close(child);
        return GT_ENOMEM;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->refs = 2;
    if ((rc = st_shard_add(p->shard, k, child, pl_wait_done, w)) != GT_OK) {
        free(w); /* no callback: st_shard_add failed before the copy */
        return rc;
    }
    GT_LOG(INFO, "store", "replica set %u joined the store tier: copying the metadata of set "
           "0 to it", (unsigned)k);
    if (wait_ms > 0) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += wait_ms / 1000;
        until.tv_nsec += (wait_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&w->mu);
        while (!w->done && pthread_cond_timedwait(&w->cv, &w->mu, &until) == 0)
            ;
        pthread_mutex_unlock(&w->mu);
    }
    pl_wait_put(w);
    return GT_OK;
}

static void copy_again_done(void *arg, gt_err_t err)
{
    (void)arg;
    (void)err; /* logged by the router; tried again by the opener */
}

/* The opener: clients for sets that became complete, and another
 * metadata copy for sets whose copy failed (no leader then).  It looks at
 * this module's state once a second and when a watch event wakes it
 * (never at etcd). */
static void *opener_main(void *arg)
{
    st_place_t *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->closing) {
        uint32_t k;
        for (k = 1; k < ST_SHARD_MAX; k++) {
            pl_set_t *s = &p->sets[k];
            if (!s->open && !s->opening && (s->leader[0] || s->isr[0]))
                break;
        }
        if (k == ST_SHARD_MAX) {
            for (uint32_t j = 1; j < ST_SHARD_MAX; j++)
                if (p->sets[j].open && p->sets[j].leader[0] && !st_shard_ready(p->shard, j))
                    (void)st_shard_copy(p->shard, j, copy_again_done, NULL);
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&p->cv, &p->mu, &ts);
            continue;
        }
        p->sets[k].opening = true;
        pthread_mutex_unlock(&p->mu);
        gt_err_t rc = open_set(p, k, 0);
        pthread_mutex_lock(&p->mu);
        p->sets[k].opening = false;
        if (rc == GT_OK) {
            p->sets[k].open = true;
        } else {
            GT_LOG(WARN, "store", "cannot follow replica set %u: %s (trying again)", (unsigned)k,
                   gt_err_str(rc));
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&p->cv, &p->mu, &ts);
        }
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* ---- etcd: reads and watches ------------------------------------------------- */

static bool kv_str(const uint8_t *b, size_t len, char *out, size_t cap)
{
    if (len >= cap || memchr(b, 0, len))
        return false;
    memcpy(out, b, len);
    out[len] = '\0';
    return true;
}

/* src into dst, cut to fit. */
static void str_set(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* With mu held. */
static void apply(st_place_t *p, const gt_etcd_kv_t *kv, bool put, int64_t rev)
{
    char key[PL_KEY_MAX], val[PL_VAL_MAX];
    if (!kv_str(kv->key, kv->key_len, key, sizeof(key)))
        return;
    if (!put)
        val[0] = '\0';
    else if (!kv_str(kv->value, kv->value_len, val, sizeof(val)))
        return;
    size_t lp = strlen(p->pl_prefix), lr = strlen(p->rs_prefix);
    if (strncmp(key, p->pl_prefix, lp) == 0 && key[lp]) {
        uint32_t sets[ST_SHARD_MAX];
        size_t n = put ? parse_sets(val, sets) : 0;
        if (put && n == 0) {
            GT_LOG(WARN, "store", "ignoring placement %s = \"%s\" (not <set>[,<set>...])", key,
                   val);
            return;
        }
        topic_set(p, key + lp, sets, n, rev);
    } else if (strncmp(key, p->rs_prefix, lr) == 0) {
        char *end;
        unsigned long k = strtoul(key + lr, &end, 10);
        if (end == key + lr || k >= ST_SHARD_MAX || *end != '/')
            return;
        pl_set_t *s = &p->sets[k];
        if (strcmp(end, "/leader") == 0)
            str_set(s->leader, sizeof(s->leader), val); /* longer ids: no node has one */
        else if (strcmp(end, "/members") == 0)
            snprintf(s->members, sizeof(s->members), "%s", val);
        else if (strcmp(end, "/isr") == 0)
            snprintf(s->isr, sizeof(s->isr), "%s", val);
        else
            return;
        sets_check(p);
    }
}

static void on_events(void *arg, const gt_etcd_event_t *evs, size_t n)
{
    st_place_t *p = arg;
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < n; i++)
        apply(p, &evs[i].kv, evs[i].type == GT_ETCD_EV_PUT, evs[i].kv.mod_revision);
    pthread_mutex_unlock(&p->mu);
}

typedef struct pl_read {
    st_place_t *p;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    gt_err_t err;
    int64_t rev;
} pl_read_t;

static void on_read(void *arg, gt_err_t err, int64_t rev, const gt_etcd_kv_t *kvs, size_t n)
{
    pl_read_t *r = arg;
    st_place_t *p = r->p;
    if (err == GT_OK) {
        pthread_mutex_lock(&p->mu);
        for (size_t i = 0; i < n; i++)
            apply(p, &kvs[i], true, kvs[i].mod_revision);
        pthread_mutex_unlock(&p->mu);
    }
    pthread_mutex_lock(&r->mu);
    r->err = err;
    r->rev = rev;
    r->done = true;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void on_end(void *arg, gt_err_t err);

static const gt_etcd_watch_cbs_t watch_cbs = {on_events, on_end};

static gt_err_t watches_start(st_place_t *p, int64_t from)
{
    gt_err_t rc = gt_etcd_watch(p->e, p->rs_prefix, true, from, &watch_cbs, p, &p->w_rs);
    if (rc == GT_OK)
        rc = gt_etcd_watch(p->e, p->pl_prefix, true, from, &watch_cbs, p, &p->w_pl);
    return rc;
}

/* Reads rs/ and placement/ (blocking: open and the re-watch timer). */
static gt_err_t read_all(st_place_t *p, int64_t *rev)
{
    pl_read_t r = {.p = p, .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    gt_err_t rc = gt_etcd_get(p->e, p->prefix, true, on_read, &r);
    if (rc != GT_OK)
        return rc;
    pthread_mutex_lock(&r.mu);
    while (!r.done)
        pthread_cond_wait(&r.cv, &r.mu); /* etcd calls have deadlines */
    pthread_mutex_unlock(&r.mu);
    *rev = r.rev;
    return r.err;
}

/* A watch compacted away: read again and watch from there (a thread of
 * its own: the read blocks). */
static void *rewatch_main(void *arg)
{
    st_place_t *p = arg;
    pthread_mutex_lock(&p->mu);
    gt_etcd_watch_t *a = p->w_rs, *b = p->w_pl;
    p->w_rs = p->w_pl = NULL;
    bool closing = p->closing;
    pthread_mutex_unlock(&p->mu);
    gt_etcd_watch_cancel(a);
    gt_etcd_watch_cancel(b);
    int64_t rev = 0;
    while (!closing) {
        if (read_all(p, &rev) == GT_OK) {
            pthread_mutex_lock(&p->mu);
            if (!p->closing && watches_start(p, rev + 1) != GT_OK)
                GT_LOG(ERROR, "store", "cannot watch the placement in etcd again");
            p->rewatch = false;
            pthread_cond_broadcast(&p->cv);
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&p->mu);
        closing = p->closing;
        pthread_mutex_unlock(&p->mu);
    }
    pthread_mutex_lock(&p->mu);
    p->rewatch = false;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void on_end(void *arg, gt_err_t err)
{
    st_place_t *p = arg;
    if (err == GT_ESHUTDOWN)
        return;
    GT_LOG(WARN, "store", "etcd watch of the placement ended (%s): reading again",
           gt_err_str(err));
    pthread_mutex_lock(&p->mu);
    bool start = !p->closing && !p->rewatch;
    if (start)
        p->rewatch = true;
    pthread_mutex_unlock(&p->mu);
    pthread_t t;
    if (start) {
        if (pthread_create(&t, NULL, rewatch_main, p) == 0) {
            pthread_detach(t);
        } else {
            pthread_mutex_lock(&p->mu);
            p->rewatch = false;
            pthread_mutex_unlock(&p->mu);
        }
    }
}

/* ---- the placer (st_shard calls) ---------------------------------------------- */

static size_t pl_lookup(void *ctx, const char *topic, uint32_t *sets, size_t cap)
{
    st_place_t *p = ctx;
    size_t n = 0;
    pthread_mutex_lock(&p->mu);
    pl_topic_t *t = topic_find(p, topic);
    if (t && t->n) {
        n = t->n < cap ? t->n : cap;
        memcpy(sets, t->sets, n * sizeof(*sets));
    }
    pthread_mutex_unlock(&p->mu);
    return n;
}

/* With mu held: the set that should take a new topic (ready, with a
 * leader, fewest written topics); -1 when none. */
static int choose(st_place_t *p)
{
    int best = -1;
    for (uint32_t k = 0; k < ST_SHARD_MAX; k++) {
        if (!p->sets[k].leader[0] || !st_shard_ready(p->shard, k))
            continue;
        if (best < 0 || p->writes[k] < p->writes[best])
            best = (int)k;
    }
    return best;
}

typedef struct pl_ensure {
    st_place_t *p;
    char key[PL_KEY_MAX];
    char val[PL_VAL_MAX];
    bool used;
    int tries;
    st_done_cb cb;
    void *arg;
    char topic[];
} pl_ensure_t;

static void ensure_try(pl_ensure_t *q);
static void ensure_txn(void *arg, gt_err_t err, bool ok, int64_t rev);

static void ensure_end(pl_ensure_t *q, gt_err_t err)
{
    if (err != GT_OK)
        GT_LOG(WARN, "store", "cannot place topic %s in etcd: %s", q->topic, gt_err_str(err));
    q->cb(q->arg, err);
    free(q);
}

/* The key as it is now (created by another proxy, or ours): cached; a
 * topic used before placement must list set 0 too. */
static void ensure_read(void *arg, gt_err_t err, int64_t rev, const gt_etcd_kv_t *kvs,
                        size_t n)
{
    pl_ensure_t *q = arg;
    st_place_t *p = q->p;
    (void)rev;
    if (err != GT_OK) {
        ensure_end(q, GT_AGAIN);
        return;
    }
    if (n == 0) { /* deleted meanwhile */
        ensure_try(q);
        return;
    }
    char val[PL_VAL_MAX];
    uint32_t sets[ST_SHARD_MAX];
    size_t ns = kv_str(kvs[0].value, kvs[0].value_len, val, sizeof(val)) ? parse_sets(val, sets)
                                                                          : 0;
    if (ns == 0) {
        ensure_end(q, GT_EINVAL);
        return;
    }
    pthread_mutex_lock(&p->mu);
    topic_set(p, q->topic, sets, ns, kvs[0].mod_revision);
    pthread_mutex_unlock(&p->mu);
    bool has0 = false;
    for (size_t i = 0; i < ns; i++)
        has0 |= sets[i] == 0;
    if (!q->used || has0) {
        ensure_end(q, GT_OK);
        return;
    }
    /* Add set 0 at the end (compare the mod revision). */
    if (++q->tries > PL_ENSURE_TRIES) {
        ensure_end(q, GT_AGAIN);
        return;
    }
    sets[ns++] = 0;
    format_sets(sets, ns, q->val, sizeof(q->val));
    GT_LOG(INFO, "store", "topic %s was used on replica set 0 before its placement was known "
           "here: placement %s", q->topic, q->val);
    gt_etcd_cmp_t cmp = {.key = q->key, .target = GT_ETCD_CMP_MOD, .op = GT_ETCD_EQ,
                         .num = kvs[0].mod_revision};
    gt_etcd_op_t op = {.kind = GT_ETCD_OP_PUT, .key = q->key, .value = q->val,
                       .value_len = strlen(q->val)};
    if (gt_etcd_txn(p->e, &cmp, 1, &op, 1, NULL, 0, ensure_txn, q) != GT_OK)
        ensure_end(q, GT_AGAIN);
}

static void ensure_txn(void *arg, gt_err_t err, bool ok, int64_t rev)
{
    pl_ensure_t *q = arg;
    st_place_t *p = q->p;
    if (err != GT_OK) {
        ensure_end(q, GT_AGAIN);
        return;
    }
    if (!ok) { /* someone else's placement: read it */
        if (++q->tries > PL_ENSURE_TRIES || gt_etcd_get(p->e, q->key, false, ensure_read, q) != GT_OK)
            ensure_end(q, GT_AGAIN);
        return;
    }
    uint32_t sets[ST_SHARD_MAX];
    size_t n = parse_sets(q->val, sets);
    pthread_mutex_lock(&p->mu);
    topic_set(p, q->topic, sets, n, rev);
    pthread_mutex_unlock(&p->mu);
    GT_LOG(INFO, "store", "topic %s placed on replica set%s %s", q->topic, n > 1 ? "s" : "",
           q->val);
    ensure_end(q, GT_OK);
}

/* Create if absent, on the chosen set.  A topic made again after its
 * placement was dropped keeps the sets it had after the new one: a proxy
 * that has not seen the drop yet may still write there. */
static void ensure_try(pl_ensure_t *q)
{
    st_place_t *p = q->p;
    uint32_t sets[ST_SHARD_MAX];
    size_t n = 0;
    pthread_mutex_lock(&p->mu);
    int k = choose(p);
    if (k >= 0) {
        sets[n++] = (uint32_t)k;
        if (q->used && k != 0)
            sets[n++] = 0;
        const pl_topic_t *t = topic_find(p, q->topic);
        for (size_t i = 0; t && t->n == 0 && i < t->n_old && n < ST_SHARD_MAX; i++) {
            bool dup = false;
            for (size_t j = 0; j < n; j++)
                dup |= sets[j] == t->sets[i];
            if (!dup)
                sets[n++] = t->sets[i];
        }
    }
    pthread_mutex_unlock(&p->mu);
    if (k < 0) {
        ensure_end(q, GT_AGAIN);
        return;
    }
    format_sets(sets, n, q->val, sizeof(q->val));
    gt_etcd_cmp_t cmp = {.key = q->key, .target = GT_ETCD_CMP_VERSION, .op = GT_ETCD_EQ, .num = 0};
    gt_etcd_op_t op = {.kind = GT_ETCD_OP_PUT, .key = q->key, .value = q->val,
                       .value_len = strlen(q->val)};
    if (gt_etcd_txn(p->e, &cmp, 1, &op, 1, NULL, 0, ensure_txn, q) != GT_OK)
        ensure_end(q, GT_AGAIN);
}

static void pl_ensure(void *ctx, const char *topic, bool used, st_done_cb cb, void *arg)
{
    st_place_t *p = ctx;
    uint32_t sets[ST_SHARD_MAX];
    size_t n = pl_lookup(p, topic, sets, ST_SHARD_MAX);
    bool has0 = false;
    for (size_t i = 0; i < n; i++)
        has0 |= sets[i] == 0;
    if (n > 0 && (!used || has0)) {
        cb(arg, GT_OK);
        return;
    }
    size_t len = strlen(topic);
    pl_ensure_t *q = calloc(1, sizeof(*q) + len + 1);
    if (!q) {
        cb(arg, GT_ENOMEM);
        return;
    }
    memcpy(q->topic, topic, len + 1);
    q->p = p;
    q->used = used;
    q->cb = cb;
    q->arg = arg;
    if (snprintf(q->key, sizeof(q->key), "%s%s", p->pl_prefix, topic) >= (int)sizeof(q->key)) {
        free(q);
        cb(arg, GT_EINVAL);
        return;
    }
    if (n > 0) { /* placed without set 0, but used there: add it */
        if (gt_etcd_get(p->e, q->key, false, ensure_read, q) != GT_OK)
            ensure_end(q, GT_AGAIN);
        return;
    }
    ensure_try(q);
}

typedef struct pl_forget {
    st_place_t *p;
    st_done_cb cb;
    void *arg;
    char topic[];
} pl_forget_t;

/* The key is gone: forgotten here at once (the watch brings the same
 * delete to the other proxies). */
static void forget_done(void *arg, gt_err_t err, int64_t rev, int64_t deleted)
{
    pl_forget_t *q = arg;
    st_place_t *p = q->p;
    (void)deleted;
    if (err == GT_OK) {
        pthread_mutex_lock(&p->mu);
        topic_set(p, q->topic, NULL, 0, rev);
        pthread_mutex_unlock(&p->mu);
        GT_LOG(INFO, "store", "topic %s deleted: its placement is dropped", q->topic);
    } else {
        GT_LOG(WARN, "store", "cannot drop the placement of deleted topic %s in etcd: %s",
               q->topic, gt_err_str(err));
    }
    q->cb(q->arg, err == GT_OK ? GT_OK : GT_AGAIN);
    free(q);
}

static void pl_forget(void *ctx, const char *topic, st_done_cb cb, void *arg)
{
    st_place_t *p = ctx;
    char key[PL_KEY_MAX];
    size_t len = strlen(topic);
    if (snprintf(key, sizeof(key), "%s%s", p->pl_prefix, topic) >= (int)sizeof(key)) {
        cb(arg, GT_OK); /* such a key is never made (pl_ensure) */
        return;
    }
    pl_forget_t *q = malloc(sizeof(*q) + len + 1);
    if (!q) {
        cb(arg, GT_ENOMEM);
        return;
    }
    *q = (pl_forget_t){.p = p, .cb = cb, .arg = arg};
    memcpy(q->topic, topic, len + 1);
    if (gt_etcd_delete(p->e, key, false, forget_done, q) != GT_OK) {
        free(q);
        cb(arg, GT_AGAIN);
    }
}

/* ---- rebalance ------------------------------------------------------------------ */

typedef struct pl_move {
    char key[PL_KEY_MAX];
    char val[PL_VAL_MAX];
    int64_t rev;
} pl_move_t;

typedef struct pl_rb pl_rb_t;

/* One move's transaction. */
typedef struct pl_rb_one {
    pl_rb_t *b;
    size_t i;
} pl_rb_one_t;

struct pl_rb {
    st_place_t *p;
    pl_move_t *moves;
    pl_rb_one_t *ones;
    size_t n;
    atomic_size_t left;
    atomic_size_t moved;
    atomic_int err;
    st_place_rebalance_cb cb;
    void *arg;
};

/* A move that took effect is applied here at once, as a placement this
 * proxy made is (ensure_txn): the answer of the rebalance, and the calls
 * after it, see it without waiting for the watch to bring it back. */
static void rb_txn(void *arg, gt_err_t err, bool ok, int64_t rev)
{
    pl_rb_one_t *one = arg;
    pl_rb_t *b = one->b;
    if (err != GT_OK)
        atomic_store(&b->err, (int)GT_AGAIN);
    else if (!ok)
        atomic_store(&b->err, (int)GT_AGAIN);
    else {
        const pl_move_t *m = &b->moves[one->i];
        uint32_t sets[ST_SHARD_MAX];
        size_t n = parse_sets(m->val, sets);
        pthread_mutex_lock(&b->p->mu);
        topic_set(b->p, m->key + strlen(b->p->pl_prefix), sets, n, rev);
        pthread_mutex_unlock(&b->p->mu);
        atomic_fetch_add(&b->moved, 1);
    }
    if (atomic_fetch_sub(&b->left, 1) != 1)
        return;
    size_t moved = atomic_load(&b->moved);
    GT_LOG(INFO, "store", "rebalance: %zu of %zu topic(s) moved to a new writer set", moved, b->n);
    b->cb(b->arg, (gt_err_t)atomic_load(&b->err), moved);
    free(b->moves);
    free(b->ones);
    free(b);
}

void st_place_rebalance(st_store_t *st, st_place_rebalance_cb cb, void *arg)
{
    st_place_t *p = st_shard_owner(st);
    if (!p) {
        cb(arg, GT_EINVAL, 0);
        return;
    }
    pl_rb_t *b = calloc(1, sizeof(*b));
    if (!b) {
        cb(arg, GT_ENOMEM, 0);
        return;
    }
    b->p = p;
    b->cb = cb;
    b->arg = arg;
    size_t cap = 0;
    pthread_mutex_lock(&p->mu);
    uint32_t cnt[ST_SHARD_MAX];
    bool ok[ST_SHARD_MAX];
    size_t nok = 0;
    for (uint32_t k = 0; k < ST_SHARD_MAX; k++) {
        cnt[k] = p->writes[k];
        ok[k] = p->sets[k].leader[0] && st_shard_ready(p->shard, k);
        nok += ok[k];
    }
    for (;;) {
        int hi = -1, lo = -1;
        for (uint32_t k = 0; k < ST_SHARD_MAX; k++) {
            if (cnt[k] > 0 && (hi < 0 || cnt[k] > cnt[hi]))
                hi = (int)k; /* any set may give topics away */
            if (ok[k] && (lo < 0 || cnt[k] < cnt[lo]))
                lo = (int)k;
        }
        if (hi < 0 || lo < 0 || hi == lo || cnt[hi] <= cnt[lo] + 1 || nok == 0)
            break;
        /* A topic that set hi writes and that this run has not moved. */
        pl_topic_t *t = NULL;
        for (size_t i = 0; i < PL_BUCKETS && !t; i++)
            for (pl_topic_t *c = p->buckets[i]; c && !t; c = c->next) {
                if (!c->n || c->sets[0] != (uint32_t)hi)
                    continue;
                bool moved = false;
                char key[PL_KEY_MAX];
                snprintf(key, sizeof(key), "%s%s", p->pl_prefix, c->name);
                for (size_t j = 0; j < b->n && !moved; j++)
                    moved = strcmp(b->moves[j].key, key) == 0;
                if (!moved)
                    t = c;
            }
        if (!t)
            break;
        if (b->n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            pl_move_t *v = realloc(b->moves, nc * sizeof(*v));
            if (!v)
                break;
            b->moves = v;
            cap = nc;
        }
        pl_move_t *m = &b->moves[b->n++];
        snprintf(m->key, sizeof(m->key), "%s%s", p->pl_prefix, t->name);
        uint32_t sets[ST_SHARD_MAX];
        size_t ns = 0;
        sets[ns++] = (uint32_t)lo;
        for (size_t j = 0; j < t->n && ns < ST_SHARD_MAX; j++)
            if (t->sets[j] != (uint32_t)lo)
                sets[ns++] = t->sets[j];
        format_sets(sets, ns, m->val, sizeof(m->val));
        m->rev = t->rev;
        cnt[hi]--;
        cnt[lo]++;
    }
    pthread_mutex_unlock(&p->mu);
    if (b->n == 0) {
        cb(arg, GT_OK, 0);
        free(b->moves);
        free(b);
        return;
    }
    if (!(b->ones = calloc(b->n, sizeof(*b->ones)))) {
        cb(arg, GT_ENOMEM, 0);
        free(b->moves);
        free(b);
        return;
    }
    atomic_store(&b->left, b->n);
    size_t n = b->n;
    for (size_t i = 0; i < n; i++)
        b->ones[i] = (pl_rb_one_t){b, i};
    for (size_t i = 0; i < n; i++) {
        pl_move_t *m = &b->moves[i];
        GT_LOG(INFO, "store", "rebalance: %s -> %s", m->key + strlen(p->pl_prefix), m->val);
        gt_etcd_cmp_t cmp = {.key = m->key, .target = GT_ETCD_CMP_MOD, .op = GT_ETCD_EQ,
                             .num = m->rev};
        gt_etcd_op_t op = {.kind = GT_ETCD_OP_PUT, .key = m->key, .value = m->val,
                           .value_len = strlen(m->val)};
        if (gt_etcd_txn(p->e, &cmp, 1, &op, 1, NULL, 0, rb_txn, &b->ones[i]) != GT_OK)
            rb_txn(&b->ones[i], GT_EIO, false, 0);
    }
}

/* ---- what the admin API shows ------------------------------------------------------ */

size_t st_place_sets(st_store_t *st, st_place_set_t *out, size_t cap)
{
    st_place_t *p = st_shard_owner(st);
    size_t n = 0;
    if (!p)
        return 0;
    pthread_mutex_lock(&p->mu);
    for (uint32_t k = 0; k < ST_SHARD_MAX && n < cap; k++) {
        pl_set_t *s = &p->sets[k];
        bool open = k == 0 || s->open;
        if (!open && !s->leader[0] && !s->isr[0] && !s->members[0] && !p->writes[k])
            continue;
        st_place_set_t *o = &out[n++];
        memset(o, 0, sizeof(*o));
        o->id = k;
        snprintf(o->leader, sizeof(o->leader), "%s", s->leader);
        snprintf(o->members, sizeof(o->members), "%s", s->members);
        snprintf(o->isr, sizeof(o->isr), "%s", s->isr);
        o->open = open;
        o->ready = st_shard_ready(p->shard, k);
        o->topics = p->writes[k];
    }
    pthread_mutex_unlock(&p->mu);
    return n;
}

void st_place_topics(st_store_t *st,
                     void (*fn)(void *arg, const char *topic, const uint32_t *sets, size_t n),
                     void *arg)
{
    st_place_t *p = st_shard_owner(st);
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < PL_BUCKETS; i++)
        for (pl_topic_t *t = p->buckets[i]; t; t = t->next)
            if (t->n)
                fn(arg, t->name, t->sets, t->n);
    pthread_mutex_unlock(&p->mu);
}

/* ---- open / close ------------------------------------------------------------------- */

/* The router's on_close: before its children close. */
static void pl_close(void *ctx)
{
    st_place_t *p = ctx;
    pthread_mutex_lock(&p->mu);
    p->closing = true;
    pthread_cond_broadcast(&p->cv);
    gt_etcd_watch_t *a = p->w_rs, *b = p->w_pl;
    p->w_rs = p->w_pl = NULL;
    pthread_mutex_unlock(&p->mu);
    if (p->opener_started)
        pthread_join(p->opener, NULL);
    gt_etcd_watch_cancel(a);
    gt_etcd_watch_cancel(b);
    /* A re-watch thread in progress finishes on its own (it sees closing). */
    pthread_mutex_lock(&p->mu);
    while (p->rewatch)
        pthread_cond_wait(&p->cv, &p->mu);
    a = p->w_rs;
    b = p->w_pl;
    p->w_rs = p->w_pl = NULL;
    pthread_mutex_unlock(&p->mu);
    gt_etcd_watch_cancel(a);
    gt_etcd_watch_cancel(b);
    gt_etcd_free(p->e);
    for (size_t i = 0; i < PL_BUCKETS; i++)
        while (p->buckets[i]) {
            pl_topic_t *t = p->buckets[i];
            p->buckets[i] = t->next;
            free(t);
        }
    for (size_t i = 0; p->etcd && i < p->cfg.n_etcd; i++)
        free(p->etcd[i]);
    free(p->etcd);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

static const char *const meta_ns[] = {
    /* The front ends' record namespaces (px_users.h, gateway-amqp). */
    "gantry.auth.users", "amqp.queue", "amqp.exchange", "amqp.binding", "amqp.bridge",
    "amqp.qops",
};

gt_err_t st_place_open(const st_cluster_config_t *cfg, st_store_t **out, st_store_t **set0)
{
    *out = NULL;
    if (set0)
        *set0 = NULL;
    if (!cfg || cfg->n_etcd == 0)
        return GT_EINVAL;
    st_place_t *p = calloc(1, sizeof(*p));
    if (!p)
        return GT_ENOMEM;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->cfg = *cfg;
    snprintf(p->name, sizeof(p->name), "%s", cfg->name && cfg->name[0] ? cfg->name : "gantry");
    p->cfg.name = p->name;
    p->etcd = calloc(cfg->n_etcd, sizeof(*p->etcd));
    gt_err_t rc = p->etcd ? GT_OK : GT_ENOMEM;
    for (size_t i = 0; rc == GT_OK && i < cfg->n_etcd; i++)
        if (!(p->etcd[i] = strdup(cfg->etcd[i])))
            rc = GT_ENOMEM;
    p->cfg.etcd = (const char *const *)p->etcd;
    if (rc == GT_OK &&
        (snprintf(p->prefix, sizeof(p->prefix), "/gantry/%s/", p->name) >= (int)sizeof(p->prefix) - 20))
        rc = GT_EINVAL;
    snprintf(p->rs_prefix, sizeof(p->rs_prefix), "/gantry/%s/rs/", p->name);
    snprintf(p->pl_prefix, sizeof(p->pl_prefix), "/gantry/%s/placement/", p->name);
    gt_etcd_opts_t eo = {.endpoints = p->cfg.etcd, .n_endpoints = p->cfg.n_etcd};
    if (rc == GT_OK)
        rc = gt_etcd_new(&eo, &p->e);
    st_shard_config_t sc = {.placer = {pl_lookup, pl_ensure, p, pl_forget},
                            .meta_ns = meta_ns,
                            .n_meta_ns = sizeof(meta_ns) / sizeof(meta_ns[0]),
                            .on_close = pl_close,
                            .close_ctx = p};
    st_store_t *sh = NULL;
    if (rc == GT_OK)
        rc = st_shard_open(&sc, &sh);
    if (rc != GT_OK) {
        pl_close(p);
        return rc;
    }
    p->shard = sh; /* from here st_close(sh) frees p */

    /* Set 0 first, as st_cluster alone does (the start-up wait). */
    st_store_t *c0 = NULL;
    st_cluster_config_t c0cfg = p->cfg;
    c0cfg.replica_set = 0;
    if ((rc = st_cluster_open(&c0cfg, &c0)) != GT_OK ||
        (rc = st_shard_add(sh, 0, c0, NULL, NULL)) != GT_OK) {
        st_close(sh);
        return rc;
    }
    pthread_mutex_lock(&p->mu);
    p->sets[0].open = true;
    pthread_mutex_unlock(&p->mu);

    int64_t rev = 0;
    if ((rc = read_all(p, &rev)) == GT_OK) {
        pthread_mutex_lock(&p->mu);
        rc = watches_start(p, rev + 1);
        pthread_mutex_unlock(&p->mu);
    }
    /* The sets complete now, before the front end declares its topics
     * (so that their placement can spread); a set that cannot be reached
     * now is the opener's. */
    for (uint32_t k = 1; rc == GT_OK && k < ST_SHARD_MAX; k++) {
        pthread_mutex_lock(&p->mu);
        bool go = p->sets[k].leader[0] && !p->sets[k].open;
        pthread_mutex_unlock(&p->mu);
        if (go && open_set(p, k, 10000) == GT_OK) {
            pthread_mutex_lock(&p->mu);
            p->sets[k].open = true;
            pthread_mutex_unlock(&p->mu);
        }
    }
    if (rc == GT_OK && pthread_create(&p->opener, NULL, opener_main, p) == 0)
        p->opener_started = true;
    else if (rc == GT_OK)
        rc = GT_ENOMEM;
    if (rc != GT_OK) {
        GT_LOG(ERROR, "store", "cannot read the placement of topics from etcd: %s",
               gt_err_str(rc));
        st_close(sh);
        return rc;
    }
    if (set0)
        *set0 = c0;
    *out = sh;
    return GT_OK;
}
