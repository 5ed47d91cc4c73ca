/* ss_cluster: gantry-store's membership in the store cluster (issue 12,
 * foundation).  With cluster.etcd set the node grants itself an etcd lease
 * of cluster.lease_ttl_s, keeps it alive (gt_etcd keepalive, every TTL/3)
 * and puts /gantry/<name>/stores/<node_id> = its advertised address under
 * that lease: when the node dies or is cut off, etcd removes the key after
 * the TTL.  A clean stop revokes the lease (the key goes at once).  If etcd
 * says the lease is gone while the node runs (it was cut off too long),
 * the node registers again with a new lease. */
#include "ss_cluster.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gt_etcd.h"
#include "gt_log.h"

struct ss_cluster {
    gt_etcd_t *e;
    char key[512];
    char value[256];
    int64_t ttl;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
    bool lost;        /* the lease went: register again */
    int64_t lease;
    gt_etcd_keepalive_t *ka;
    pthread_t thread;
};

typedef struct wait_res {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    gt_err_t err;
    int64_t id;
} wait_res_t;

static void wr_done(wait_res_t *w, gt_err_t err, int64_t id)
{
    pthread_mutex_lock(&w->mu);
    w->err = err;
    w->id = id;
    w->done = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void on_grant(void *arg, gt_err_t err, int64_t id, int64_t ttl)
{
    (void)ttl;
    wr_done(arg, err, id);
}

static void on_write(void *arg, gt_err_t err, int64_t rev, int64_t n)
{
    (void)rev;
    (void)n;
    wr_done(arg, err, 0);
}

static gt_err_t wr_wait(wait_res_t *w)
{
    pthread_mutex_lock(&w->mu);
    while (!w->done)
        pthread_cond_wait(&w->cv, &w->mu); /* calls have deadlines */
    gt_err_t err = w->err;
    pthread_mutex_unlock(&w->mu);
    return err;
}

static void wr_init(wait_res_t *w)
{
    memset(w, 0, sizeof(*w));
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
}

static void wr_fini(wait_res_t *w)
{
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
}

static void on_lost(void *arg)
{
    ss_cluster_t *c = arg;
    pthread_mutex_lock(&c->mu);
    c->lost = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* One registration: lease, keepalive, key.  GT_OK or the failing step's. */
static gt_err_t register_once(ss_cluster_t *c)
{
    wait_res_t w;
    wr_init(&w);
    gt_err_t err = gt_etcd_lease_grant(c->e, c->ttl, on_grant, &w);
    if (err == GT_OK)
        err = wr_wait(&w);
    int64_t lease = w.id;
    wr_fini(&w);
    if (err != GT_OK)
        return err;
    gt_etcd_keepalive_t *ka = NULL;
    if ((err = gt_etcd_keepalive_start(c->e, lease, c->ttl, on_lost, c, &ka))
            != GT_OK)
        return err;
    wr_init(&w);
    err = gt_etcd_put(c->e, c->key, c->value, strlen(c->value), lease,
                      on_write, &w);
    if (err == GT_OK)
        err = wr_wait(&w);
    wr_fini(&w);
    pthread_mutex_lock(&c->mu);
    c->lease = lease;
    c->ka = ka;
    c->lost = false;
    pthread_mutex_unlock(&c->mu);
    return err;
}

/* Registers, and again whenever the lease is lost or a step failed. */
static void *cluster_main(void *arg)
{
    ss_cluster_t *c = arg;
    for (;;) {
        gt_err_t err = register_once(c);
        if (err == GT_OK)
            GT_LOG(INFO, "cluster", "registered %s = %s (lease ttl %llds)",
                   c->key, c->value, (long long)c->ttl);
        else
            GT_LOG(WARN, "cluster", "cannot register %s in etcd: %s; retrying",
                   c->key, gt_err_str(err));
        pthread_mutex_lock(&c->mu);
        if (err == GT_OK) {
            while (!c->stopping && !c->lost)
                pthread_cond_wait(&c->cv, &c->mu);
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            while (!c->stopping &&
                   pthread_cond_timedwait(&c->cv, &c->mu, &ts) == 0)
                ;
        }
        bool stop = c->stopping;
        gt_etcd_keepalive_t *ka = c->ka;
        c->ka = NULL;
        pthread_mutex_unlock(&c->mu);
        gt_etcd_keepalive_stop(ka);
        if (stop)
            return NULL;
        if (err == GT_OK)
            GT_LOG(WARN, "cluster", "etcd lease of %s lost: registering again",
                   c->key);
    }
}

gt_err_t ss_cluster_start(const cfg_t *cfg, ss_cluster_t **out)
{
    *out = NULL;
    if (cfg->cluster.etcd.n == 0)
        return GT_OK;
    ss_cluster_t *c = calloc(1, sizeof(*c));
    if (!c)
        return GT_ENOMEM;
    const char *adv = cfg->cluster.advertise && cfg->cluster.advertise[0]
                          ? cfg->cluster.advertise : cfg->store_server.listen;
    const char *id = cfg->cluster.node_id && cfg->cluster.node_id[0]
                         ? cfg->cluster.node_id : adv;
    snprintf(c->key, sizeof(c->key), "/gantry/%s/stores/%s",
             cfg->cluster.name, id);
    snprintf(c->value, sizeof(c->value), "%s", adv);
    c->ttl = cfg->cluster.lease_ttl_s;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    gt_etcd_opts_t o = {
        .endpoints = (const char *const *)cfg->cluster.etcd.v,
        .n_endpoints = cfg->cluster.etcd.n,
    };
    gt_err_t err = gt_etcd_new(&o, &c->e);
    if (err == GT_OK &&
        pthread_create(&c->thread, NULL, cluster_main, c) != 0) {
        gt_etcd_free(c->e);
        err = GT_ENOMEM;
    }
    if (err != GT_OK) {
        pthread_mutex_destroy(&c->mu);
        pthread_cond_destroy(&c->cv);
        free(c);
        return err;
    }
    *out = c;
    return GT_OK;
}

void ss_cluster_stop(ss_cluster_t *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->stopping = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    if (c->lease != 0) { /* unregister at once */
        wait_res_t w;
        wr_init(&w);
        if (gt_etcd_lease_revoke(c->e, c->lease, on_write, &w) == GT_OK)
            wr_wait(&w);
        wr_fini(&w);
    }
    gt_etcd_free(c->e);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}
