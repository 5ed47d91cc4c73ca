/* st_cluster (st_cluster.h): st_remote following replica set 0's leader
 * through etcd. */
#include "st_cluster.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gt_etcd.h"
#include "gt_log.h"

#define SC_ID_MAX 256    /* node ids and addresses longer than this are ignored */
#define SC_KEY_MAX 512

/* A node's registration: its address, or a tombstone (addr[0] == 0) that
 * remembers the revision it went at. */
typedef struct sc_node {
    char id[SC_ID_MAX];
    char addr[SC_ID_MAX];
    int64_t rev;
} sc_node_t;

typedef struct st_cluster {
    gt_etcd_t *e;
    st_store_t *st;          /* the st_remote client (owns this) */
    char prefix[SC_KEY_MAX]; /* /gantry/<name>/ */
    char leader_key[SC_KEY_MAX];
    unsigned rs;             /* the replica set followed */
    char stores_prefix[SC_KEY_MAX];

    pthread_mutex_t mu;      /* everything below */
    pthread_cond_t cv;       /* start-up: a read done, an address known */
    bool closing;
    char leader[SC_ID_MAX];  /* "" = none */
    int64_t leader_rev;
    sc_node_t *nodes;
    size_t n_nodes, cap_nodes;
    char cur[SC_ID_MAX];     /* the address the client is on; "" = none */
    int64_t read_rev;        /* the last full read's revision; 0 = none yet */
    gt_err_t read_err;       /* the last read's error */
    int reads;               /* reads answered (start-up waits for one) */
    gt_etcd_watch_t *w_leader, *w_stores;
    bool rewatch;            /* a compacted watch: re-read and watch again */

    atomic_bool reading;     /* a read is in flight */
    atomic_int_fast64_t not_leader_log_ms;
} st_cluster_t;

/* ---- state ---------------------------------------------------------------- */

static sc_node_t *node_find(st_cluster_t *c, const char *id)
{
    for (size_t i = 0; i < c->n_nodes; i++)
        if (strcmp(c->nodes[i].id, id) == 0)
            return &c->nodes[i];
    return NULL;
}

/* With mu held: a registration put (addr) or gone (NULL) at revision rev,
 * unless something newer was seen. */
static void node_set(st_cluster_t *c, const char *id, const char *addr, int64_t rev)
{
    sc_node_t *n = node_find(c, id);
    if (n && n->rev >= rev)
        return;
    if (!n) {
        if (c->n_nodes == c->cap_nodes) {
            size_t cap = c->cap_nodes ? c->cap_nodes * 2 : 8;
            sc_node_t *v = realloc(c->nodes, cap * sizeof(*v));
            if (!v)
                return; /* the next read tries again */
            c->nodes = v;
            c->cap_nodes = cap;
        }
        n = &c->nodes[c->n_nodes++];
        snprintf(n->id, sizeof(n->id), "%s", id);
    }
    snprintf(n->addr, sizeof(n->addr), "%s", addr ? addr : "");
    n->rev = rev;
}

static void leader_set(st_cluster_t *c, const char *id, int64_t rev)
{
    if (c->leader_rev >= rev)
        return;
    snprintf(c->leader, sizeof(c->leader), "%s", id ? id : "");
    c->leader_rev = rev;
}

/* A kv's value as a string in buf; false when it does not fit. */
static bool kv_str(const uint8_t *p, size_t len, char *buf, size_t cap)
{
    if (len >= cap || memchr(p, 0, len))
        return false;
    memcpy(buf, p, len);
    buf[len] = '\0';
    return true;
}

/* With mu held: one key put (value) or deleted (value NULL) at rev. */
static void apply_kv(st_cluster_t *c, const gt_etcd_kv_t *kv, bool put, int64_t rev)
{
    char key[SC_KEY_MAX], val[SC_ID_MAX];
    if (!kv_str(kv->key, kv->key_len, key, sizeof(key)))
        return;
    if (put && !kv_str(kv->value, kv->value_len, val, sizeof(val)))
        return;
    size_t sp = strlen(c->stores_prefix);
    if (strcmp(key, c->leader_key) == 0)
        leader_set(c, put ? val : NULL, rev);
    else if (strncmp(key, c->stores_prefix, sp) == 0 && key[sp] && strlen(key + sp) < SC_ID_MAX)
        node_set(c, key + sp, put ? val : NULL, rev);
}

/* With mu held: points the client at the leader's address if it changed. */
static void follow(st_cluster_t *c)
{
    const sc_node_t *n = c->leader[0] ? node_find(c, c->leader) : NULL;
    const char *addr = n && n->addr[0] ? n->addr : "";
    if (c->closing || strcmp(addr, c->cur) == 0)
        return;
    gt_err_t rc = st_remote_switch(c->st, addr[0] ? addr : NULL);
    if (rc != GT_OK) {
        GT_LOG(WARN, "store", "cannot switch to store node %s: %s", addr, gt_err_str(rc));
        return;
    }
    if (addr[0])
        GT_LOG(INFO, "store", "replica set %u leader: %s at %s", c->rs, c->leader, addr);
    else
        GT_LOG(WARN, "store", "replica set %u has no %s: store operations fail (retriable) "
               "until one is elected", c->rs, c->leader[0] ? "registered leader" : "leader");
    snprintf(c->cur, sizeof(c->cur), "%s", addr);
    pthread_cond_broadcast(&c->cv);
}

/* ---- reads and watches ---------------------------------------------------- */

static void on_read(void *arg, gt_err_t err, int64_t revision, const gt_etcd_kv_t *kvs,
                    size_t n)
{
    st_cluster_t *c = arg;
    pthread_mutex_lock(&c->mu);
    c->read_err = err;
    if (err == GT_OK) {
        bool leader = false;
        for (size_t i = 0; i < n; i++) {
            apply_kv(c, &kvs[i], true, kvs[i].mod_revision);
            leader |= kvs[i].key_len == strlen(c->leader_key) &&
                      memcmp(kvs[i].key, c->leader_key, kvs[i].key_len) == 0;
        }
        /* Keys absent from the read went at or before its revision. */
        if (!leader)
            leader_set(c, NULL, revision);
        for (size_t i = 0; i < c->n_nodes; i++) {
            bool seen = false;
            size_t sp = strlen(c->stores_prefix);
            for (size_t j = 0; j < n && !seen; j++)
                seen = kvs[j].key_len == sp + strlen(c->nodes[i].id) &&
                       memcmp(kvs[j].key, c->stores_prefix, sp) == 0 &&
                       memcmp(kvs[j].key + sp, c->nodes[i].id, kvs[j].key_len - sp) == 0;
            if (!seen && c->nodes[i].rev < revision) {
                c->nodes[i].addr[0] = '\0';
                c->nodes[i].rev = revision;
            }
        }
        c->read_rev = revision;
        follow(c);
    } else {
        GT_LOG(WARN, "store", "cannot read the store cluster's keys from etcd: %s",
               gt_err_str(err));
    }
    atomic_store(&c->reading, false);
    c->reads++;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Starts a read of /gantry/<name>/ unless one is in flight.  False: none
 * started and none in flight. */
static bool read_start(st_cluster_t *c)
{
    bool idle = false;
    if (!atomic_compare_exchange_strong(&c->reading, &idle, true))
        return true;
    if (gt_etcd_get(c->e, c->prefix, true, on_read, c) == GT_OK)
        return true;
    atomic_store(&c->reading, false);
    return false;
}

static void on_events(void *arg, const gt_etcd_event_t *evs, size_t n)
{
    st_cluster_t *c = arg;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < n; i++)
        apply_kv(c, &evs[i].kv, evs[i].type == GT_ETCD_EV_PUT, evs[i].kv.mod_revision);
    follow(c);
    pthread_mutex_unlock(&c->mu);
}

static void watches_start_locked(st_cluster_t *c, int64_t from);

/* After a watch ended for good (compacted): new read, new watches (from
 * the etcd client's timer, where cancelling the old handles is allowed). */
static void rewatch(void *arg)
{
    st_cluster_t *c = arg;
    pthread_mutex_lock(&c->mu);
    if (!c->closing && c->rewatch) {
        c->rewatch = false;
        gt_etcd_watch_t *a = c->w_leader, *b = c->w_stores;
        c->w_leader = c->w_stores = NULL;
        pthread_mutex_unlock(&c->mu);
        gt_etcd_watch_cancel(a);
        gt_etcd_watch_cancel(b);
        /* From now: the read that follows covers what was missed. */
        pthread_mutex_lock(&c->mu);
        if (!c->closing)
            watches_start_locked(c, 0);
        pthread_mutex_unlock(&c->mu);
        (void)read_start(c);
        return;
    }
    pthread_mutex_unlock(&c->mu);
}

static void on_end(void *arg, gt_err_t err)
{
    st_cluster_t *c = arg;
    if (err == GT_ESHUTDOWN)
        return;
    GT_LOG(WARN, "store", "etcd watch of the store cluster ended (%s): reading again",
           gt_err_str(err));
    pthread_mutex_lock(&c->mu);
    bool start = !c->closing && !c->rewatch;
    c->rewatch = true;
    pthread_mutex_unlock(&c->mu);
    if (start && gt_etcd_after(c->e, 100, rewatch, c) != GT_OK)
        GT_LOG(ERROR, "store", "cannot watch etcd again: the proxy no longer follows the "
               "store leader");
}

static void watches_start_locked(st_cluster_t *c, int64_t from)
{
    static const gt_etcd_watch_cbs_t cbs = {on_events, on_end};
    gt_err_t rc = gt_etcd_watch(c->e, c->leader_key, false, from, &cbs, c, &c->w_leader);
    if (rc == GT_OK)
        rc = gt_etcd_watch(c->e, c->stores_prefix, true, from, &cbs, c, &c->w_stores);
    if (rc != GT_OK)
        GT_LOG(ERROR, "store", "cannot watch etcd: %s", gt_err_str(rc));
}

/* ---- hooks of the client ---------------------------------------------------- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sc_not_leader(void *ctx)
{
    st_cluster_t *c = ctx;
    /* No lock of ours here (see st_remote_config_t); logged at most once
     * a second. */
    int64_t now = mono_ms(), last = atomic_load(&c->not_leader_log_ms);
    if (now - last >= 1000 && atomic_compare_exchange_strong(&c->not_leader_log_ms, &last, now))
        GT_LOG(INFO, "store", "the store node answered \"not leader\": reading the leader "
               "from etcd again");
    (void)read_start(c);
}

static void sc_close(void *ctx)
{
    st_cluster_t *c = ctx;
    pthread_mutex_lock(&c->mu);
    c->closing = true;
    gt_etcd_watch_t *a = c->w_leader, *b = c->w_stores;
    c->w_leader = c->w_stores = NULL;
    pthread_mutex_unlock(&c->mu);
    gt_etcd_watch_cancel(a);
    gt_etcd_watch_cancel(b);
    gt_etcd_free(c->e); /* runs what is pending (rewatch sees closing) */
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c->nodes);
    free(c);
}

/* ---- open ------------------------------------------------------------------- */

static void deadline_in(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static int64_t ms_left(const struct timespec *until)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (until->tv_sec - now.tv_sec) * 1000 + (until->tv_nsec - now.tv_nsec) / 1000000;
}

gt_err_t st_cluster_open(const st_cluster_config_t *cfg, st_store_t **out)
{
    *out = NULL;
    if (!cfg || cfg->n_etcd == 0)
        return GT_EINVAL;
    const char *name = cfg->name && cfg->name[0] ? cfg->name : "gantry";
    st_cluster_t *c = calloc(1, sizeof(*c));
    if (!c)
        return GT_ENOMEM;
    int k1 = snprintf(c->prefix, sizeof(c->prefix), "/gantry/%s/", name);
    c->rs = cfg->replica_set;
    int k2 = snprintf(c->leader_key, sizeof(c->leader_key), "/gantry/%s/rs/%u/leader", name,
                      c->rs);
    int k3 = snprintf(c->stores_prefix, sizeof(c->stores_prefix), "/gantry/%s/stores/", name);
    if (k1 >= (int)sizeof(c->prefix) || k2 >= (int)sizeof(c->leader_key) ||
        k3 >= (int)sizeof(c->stores_prefix)) {
        free(c);
        return GT_EINVAL;
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    gt_etcd_opts_t eo = {.endpoints = cfg->etcd, .n_endpoints = cfg->n_etcd};
    gt_err_t rc = gt_etcd_new(&eo, &c->e);
    if (rc != GT_OK) {
        pthread_mutex_destroy(&c->mu);
        pthread_cond_destroy(&c->cv);
        free(c);
        return rc;
    }
    st_remote_config_t rc_cfg = cfg->remote;
    rc_cfg.endpoints = NULL;
    rc_cfg.n_endpoints = 0;
    rc_cfg.connect_wait_ms = 0;
    rc_cfg.switchable = true;
    rc_cfg.on_not_leader = sc_not_leader;
    rc_cfg.on_close = sc_close;
    rc_cfg.hook_ctx = c;
    if ((rc = st_remote_open(&rc_cfg, &c->st)) != GT_OK) {
        sc_close(c);
        return rc;
    }
    st_store_t *st = c->st; /* from here st_close(st) frees c too */

    /* The first read (again while etcd does not answer), then watches
     * from the revision after it. */
    struct timespec until;
    deadline_in(&until, cfg->leader_wait_ms);
    pthread_mutex_lock(&c->mu);
    for (;;) {
        int seen = c->reads;
        pthread_mutex_unlock(&c->mu);
        bool started = read_start(c);
        pthread_mutex_lock(&c->mu);
        if (!started)
            c->read_err = GT_ENOMEM;
        while (started && c->reads == seen)
            pthread_cond_wait(&c->cv, &c->mu); /* etcd calls have deadlines */
        if (c->read_err == GT_OK || ms_left(&until) <= 0)
            break;
        struct timespec pause;
        deadline_in(&pause, 200);
        pthread_cond_timedwait(&c->cv, &c->mu, &pause);
    }
    rc = c->read_err;
    if (rc == GT_OK)
        watches_start_locked(c, c->read_rev + 1);
    pthread_mutex_unlock(&c->mu);
    if (rc != GT_OK) {
        GT_LOG(ERROR, "store", "etcd (%s) does not answer: %s", cfg->etcd[0], gt_err_str(rc));
        st_close(st);
        return rc;
    }

    /* A leader that answers. */
    pthread_mutex_lock(&c->mu);
    if (!c->cur[0] && cfg->leader_wait_ms > 0)
        GT_LOG(INFO, "store", "no leader of replica set %u under %s yet: waiting up to "
               "%" PRId64 " ms", c->rs, c->prefix, cfg->leader_wait_ms);
    pthread_mutex_unlock(&c->mu);
    while (cfg->leader_wait_ms > 0) {
        pthread_mutex_lock(&c->mu);
        while (!c->cur[0] && ms_left(&until) > 0)
            pthread_cond_timedwait(&c->cv, &c->mu, &until);
        bool known = c->cur[0] != '\0';
        pthread_mutex_unlock(&c->mu);
        int64_t left = ms_left(&until);
        if (!known || left <= 0) {
            GT_LOG(ERROR, "store", "no leader of replica set %u in %s within %" PRId64 " ms",
                   c->rs, c->prefix, cfg->leader_wait_ms);
            rc = GT_AGAIN;
            break;
        }
        /* One GetInfo at a time, short, so that a leader change meanwhile
         * is followed. */
        rc = st_remote_wait_ready(st, left < 2000 ? left : 2000);
        if (rc == GT_OK)
            break;
        if (ms_left(&until) <= 0)
            break;
        struct timespec pause;
        deadline_in(&pause, 200);
        pthread_mutex_lock(&c->mu);
        pthread_cond_timedwait(&c->cv, &c->mu, &pause);
        pthread_mutex_unlock(&c->mu);
    }
    if (rc != GT_OK) {
        st_close(st);
        return rc;
    }
    *out = st;
    return GT_OK;
}
