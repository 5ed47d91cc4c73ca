/* The config's topics and groups in the store (px_seed.h).
 *
 * A proxy declares them at start-up (gantry_main.c); in remote and cluster
 * modes the store is a gantry-store node whose data directory may be
 * wiped or replaced while the proxy runs (a node restarted empty): what
 * the proxy declared is gone then, and clients would be told the topics
 * do not exist until every proxy restarted.  The node says which data it
 * serves (GetInfo.data_id, made when its directory is new); a thread here
 * asks for it once every PX_SEED_CHECK_MS (GetInfo without the storage
 * figure, which would walk the directory) and declares everything again
 * when it is not the one gantry asked for before its start-up
 * declaration.  The declarations are idempotent (every proxy makes
 * them at start), so one more than needed -- after a cluster failover to
 * a node with its own identity -- costs nothing but the calls.  Topics
 * and groups created through the admin API or by AMQP clients live only
 * in the store and are not declared again (not yet). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gt_log.h"
#include "px_seed.h"
#include "st_remote.h"

#define PX_SEED_CHECK_MS 1000

/* The seed thread's.  `mu` guards `stop` (and the cond var that wakes the
 * thread to stop); the rest is the thread's own. */
struct px_seed {
    st_store_t *node, *st;
    const cfg_t *cfg;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    char seen[PX_SEED_ID_MAX]; /* the identity declared into; "": none */
};

/* One store answer, waited for by the thread that asked. */
typedef struct px_seed_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    gt_err_t err;
    char id[PX_SEED_ID_MAX];
} px_seed_wait_t;

#define PX_SEED_WAIT_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, GT_OK, ""}

static void px_seed_wake(px_seed_wait_t *w, gt_err_t err, const char *id)
{
    pthread_mutex_lock(&w->mu);
    w->err = err;
    if (id != NULL)
        snprintf(w->id, sizeof(w->id), "%s", id);
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void px_seed_done(void *arg, gt_err_t err)
{
    px_seed_wake(arg, err, NULL);
}

static void px_seed_id_done(void *arg, gt_err_t err, const char *data_id)
{
    px_seed_wake(arg, err, data_id);
}

static gt_err_t px_seed_wait(px_seed_wait_t *w)
{
    pthread_mutex_lock(&w->mu);
    while (!w->done)
        pthread_cond_wait(&w->cv, &w->mu);
    w->done = false;
    pthread_mutex_unlock(&w->mu);
    return w->err;
}

static const st_topic_type_t px_seed_topic_types[] = {
    [CFG_TOPIC_NORMAL] = ST_TOPIC_NORMAL, [CFG_TOPIC_FIFO] = ST_TOPIC_FIFO,
    [CFG_TOPIC_DELAY] = ST_TOPIC_DELAY, [CFG_TOPIC_TRANSACTION] = ST_TOPIC_TRANSACTION,
    [CFG_TOPIC_MIXED] = ST_TOPIC_MIXED,
};

gt_err_t px_seed_declare(st_store_t *st, const cfg_t *cfg)
{
    px_seed_wait_t w = PX_SEED_WAIT_INIT;
    gt_err_t rc = GT_OK;

    for (size_t i = 0; i < cfg->n_topics && rc == GT_OK; i++) {
        st_topic_t t;
        memset(&t, 0, sizeof(t));
        snprintf(t.name, sizeof(t.name), "%s", cfg->topics[i].name);
        t.type = px_seed_topic_types[cfg->topics[i].type];
        t.queue_count = (uint32_t)cfg->topics[i].queues;
        t.perm = ST_PERM_READ | ST_PERM_WRITE;
        st_topic_put(st, &t, px_seed_done, &w);
        if ((rc = px_seed_wait(&w)) != GT_OK)
            GT_LOG(ERROR, "main", "cannot declare topic %s: %s", t.name, gt_err_str(rc));
    }
    for (size_t i = 0; i < cfg->n_groups && rc == GT_OK; i++) {
        st_group_t g;
        memset(&g, 0, sizeof(g));
        snprintf(g.name, sizeof(g.name), "%s", cfg->groups[i].name);
        g.max_delivery_attempts = (uint32_t)cfg->groups[i].max_delivery_attempts;
        g.fifo = cfg->groups[i].fifo;
        g.consume_from = cfg->groups[i].consume_from_last ? ST_CONSUME_FROM_LAST
                                                         : ST_CONSUME_FROM_FIRST;
        st_group_put(st, &g, px_seed_done, &w);
        if ((rc = px_seed_wait(&w)) != GT_OK)
            GT_LOG(ERROR, "main", "cannot declare group %s: %s", g.name, gt_err_str(rc));
    }
    return rc;
}

/* Sleeps PX_SEED_CHECK_MS unless stopped; false when stopped. */
static bool px_seed_pause(px_seed_t *s)
{
    struct timespec ts;
    bool stop;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += PX_SEED_CHECK_MS / 1000;
    ts.tv_nsec += (long)(PX_SEED_CHECK_MS % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->mu);
    while (!s->stop && pthread_cond_timedwait(&s->cv, &s->mu, &ts) == 0)
        ;
    stop = s->stop;
    pthread_mutex_unlock(&s->mu);
    return !stop;
}

void px_seed_identity(st_store_t *node, char *out)
{
    px_seed_wait_t w = PX_SEED_WAIT_INIT;

    /* The answer always comes: the client's deadline bounds the call. */
    st_remote_data_id(node, px_seed_id_done, &w);
    if (px_seed_wait(&w) != GT_OK)
        w.id[0] = '\0';
    snprintf(out, PX_SEED_ID_MAX, "%s", w.id);
}

static void *px_seed_main(void *arg)
{
    px_seed_t *s = arg;
    char id[PX_SEED_ID_MAX];

    pthread_setname_np(pthread_self(), "px-seed");
    while (px_seed_pause(s)) {
        px_seed_identity(s->node, id);
        if (id[0] == '\0' || strcmp(id, s->seen) == 0)
            continue;
        if (s->seen[0] != '\0') {
            GT_LOG(WARN, "main", "the store node's data identity changed (%s -> %s): its data "
                   "are new; declaring the config's topics and groups again", s->seen, id);
            if (px_seed_declare(s->st, s->cfg) != GT_OK)
                continue; /* tried again at the next check */
        }
        snprintf(s->seen, sizeof(s->seen), "%s", id);
    }
    return NULL;
}

gt_err_t px_seed_watch_start(st_store_t *node, st_store_t *st, const cfg_t *cfg,
                             const char *seen, px_seed_t **out)
{
    px_seed_t *s = calloc(1, sizeof(*s));
    pthread_condattr_t ca;

    if (s == NULL)
        return GT_ENOMEM;
    s->node = node;
    s->st = st;
    s->cfg = cfg;
    snprintf(s->seen, sizeof(s->seen), "%s", seen != NULL ? seen : "");
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&s->thread, NULL, px_seed_main, s) != 0) {
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return GT_ENOMEM;
    }
    *out = s;
    return GT_OK;
}

void px_seed_stop(px_seed_t *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
