/* gt_elect: leader election on etcd (see gt_elect.h). */
#include "gt_elect.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RETRY_MS 200

struct gt_elect {
    gt_etcd_t *e;
    char *leader_key;
    char *epoch_key;
    char *node;
    int64_t lease;
    void (*on_leader)(void *arg, int64_t epoch);
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    int in_cb;
    bool stopped;
    bool won;
    bool busy;       /* a campaign is under way */
    bool again;      /* the leader key went while it was */
    gt_etcd_watch_t *watch;
    int64_t lost;    /* campaigns lost */
    int64_t epoch;   /* read by the campaign under way */
    char next[24];
};

static void el_unref(gt_elect_t *el)
{
    pthread_mutex_lock(&el->mu);
    int r = --el->refs;
    pthread_mutex_unlock(&el->mu);
    if (r == 0) {
        pthread_mutex_destroy(&el->mu);
        pthread_cond_destroy(&el->cv);
        free(el->leader_key);
        free(el->epoch_key);
        free(el->node);
        free(el);
    }
}

static void campaign(gt_elect_t *el);

static void retry_tick(void *arg)
{
    gt_elect_t *el = arg;
    campaign(el);
    el_unref(el); /* the timer's */
}

/* The campaign under way ended without a win: run again now (again) or
 * after a delay (error), or wait for the watch. */
static void campaign_over(gt_elect_t *el, bool error)
{
    pthread_mutex_lock(&el->mu);
    el->busy = false;
    bool now = el->again && !el->stopped;
    el->again = false;
    bool later = !now && error && !el->stopped;
    if (later)
        el->refs++;
    pthread_mutex_unlock(&el->mu);
    if (now)
        campaign(el);
    else if (later && gt_etcd_after(el->e, RETRY_MS, retry_tick, el) != GT_OK)
        el_unref(el);
}

static void on_events(void *arg, const gt_etcd_event_t *ev, size_t n)
{
    gt_elect_t *el = arg;
    for (size_t i = 0; i < n; i++) {
        if (ev[i].type == GT_ETCD_EV_DELETE) {
            campaign(el);
            return;
        }
    }
}

static void on_end(void *arg, gt_err_t err)
{
    (void)err; /* compacted: a campaign now finds the current state */
    campaign(arg);
}

static void on_txn(void *arg, gt_err_t err, bool ok, int64_t rev)
{
    gt_elect_t *el = arg;
    if (err == GT_OK && ok) {
        pthread_mutex_lock(&el->mu);
        bool call = !el->stopped;
        el->won = true;
        el->busy = false;
        if (call)
            el->in_cb++;
        int64_t epoch = el->epoch + 1;
        pthread_mutex_unlock(&el->mu);
        if (call) {
            el->on_leader(el->arg, epoch);
            pthread_mutex_lock(&el->mu);
            el->in_cb--;
            pthread_cond_broadcast(&el->cv);
            pthread_mutex_unlock(&el->mu);
        }
    } else if (err == GT_OK) {
        pthread_mutex_lock(&el->mu);
        el->lost++;
        pthread_mutex_unlock(&el->mu);
        /* Lost: watch the leader key from just after this transaction
         * (one watch for the contender's life). */
        pthread_mutex_lock(&el->mu);
        bool start = !el->watch && !el->stopped;
        pthread_mutex_unlock(&el->mu);
        if (start) {
            static const gt_etcd_watch_cbs_t cbs = { on_events, on_end };
            gt_etcd_watch_t *w = NULL;
            if (gt_etcd_watch(el->e, el->leader_key, false, rev + 1, &cbs, el,
                              &w) == GT_OK) {
                pthread_mutex_lock(&el->mu);
                bool late = el->stopped || el->watch;
                if (!late)
                    el->watch = w;
                pthread_mutex_unlock(&el->mu);
                if (late)
                    gt_etcd_watch_cancel(w);
            }
        }
        campaign_over(el, false);
    } else {
        campaign_over(el, true);
    }
    el_unref(el); /* the call's */
}

static void on_epoch(void *arg, gt_err_t err, int64_t rev,
                     const gt_etcd_kv_t *kvs, size_t n)
{
    (void)rev;
    gt_elect_t *el = arg;
    if (err != GT_OK) {
        campaign_over(el, true);
        el_unref(el);
        return;
    }
    int64_t epoch = 0, mod = 0;
    if (n == 1) {
        char buf[24];
        size_t l = kvs[0].value_len < sizeof(buf) - 1 ? kvs[0].value_len
                                                      : sizeof(buf) - 1;
        memcpy(buf, kvs[0].value, l);
        buf[l] = 0;
        epoch = strtoll(buf, NULL, 10);
        mod = kvs[0].mod_revision;
    }
    pthread_mutex_lock(&el->mu);
    el->epoch = epoch;
    snprintf(el->next, sizeof(el->next), "%lld", (long long)(epoch + 1));
    pthread_mutex_unlock(&el->mu);
    gt_etcd_cmp_t cmp[2] = {
        { .key = el->leader_key, .target = GT_ETCD_CMP_VERSION,
          .op = GT_ETCD_EQ, .num = 0 },
        { .key = el->epoch_key, .target = GT_ETCD_CMP_MOD, .op = GT_ETCD_EQ,
          .num = mod },
    };
    gt_etcd_op_t ops[2] = {
        { .kind = GT_ETCD_OP_PUT, .key = el->leader_key, .value = el->node,
          .value_len = strlen(el->node), .lease = el->lease },
        { .kind = GT_ETCD_OP_PUT, .key = el->epoch_key, .value = el->next,
          .value_len = strlen(el->next) },
    };
    /* The get's reference passes to the transaction. */
    if (gt_etcd_txn(el->e, cmp, 2, ops, 2, NULL, 0, on_txn, el) != GT_OK) {
        campaign_over(el, true);
        el_unref(el);
    }
}

static void campaign(gt_elect_t *el)
{
    pthread_mutex_lock(&el->mu);
    bool go = !el->stopped && !el->won && !el->busy;
    if (!go && el->busy)
        el->again = true;
    if (go) {
        el->busy = true;
        el->refs++; /* the calls' */
    }
    pthread_mutex_unlock(&el->mu);
    if (go && gt_etcd_get(el->e, el->epoch_key, false, on_epoch, el)
                  != GT_OK) {
        el_unref(el);
        campaign_over(el, true);
    }
}

gt_err_t gt_elect_start(gt_etcd_t *e, const char *prefix,
                        const char *node_id, int64_t lease,
                        void (*on_leader)(void *arg, int64_t epoch),
                        void *arg, gt_elect_t **out)
{
    if (!e || !prefix || !node_id || !on_leader || !out)
        return GT_EINVAL;
    gt_elect_t *el = calloc(1, sizeof(*el));
    if (!el)
        return GT_ENOMEM;
    size_t pl = strlen(prefix);
    el->leader_key = malloc(pl + 8);
    el->epoch_key = malloc(pl + 7);
    el->node = strdup(node_id);
    if (!el->leader_key || !el->epoch_key || !el->node) {
        free(el->leader_key);
        free(el->epoch_key);
        free(el->node);
        free(el);
        return GT_ENOMEM;
    }
    snprintf(el->leader_key, pl + 8, "%s/leader", prefix);
    snprintf(el->epoch_key, pl + 7, "%s/epoch", prefix);
    el->e = e;
    el->lease = lease;
    el->on_leader = on_leader;
    el->arg = arg;
    el->refs = 1;
    pthread_mutex_init(&el->mu, NULL);
    pthread_cond_init(&el->cv, NULL);
    campaign(el);
    *out = el;
    return GT_OK;
}

void gt_elect_stop(gt_elect_t *el)
{
    if (!el)
        return;
    pthread_mutex_lock(&el->mu);
    el->stopped = true;
    while (el->in_cb > 0)
        pthread_cond_wait(&el->cv, &el->mu);
    gt_etcd_watch_t *w = el->watch;
    el->watch = NULL;
    pthread_mutex_unlock(&el->mu);
    gt_etcd_watch_cancel(w);
    el_unref(el);
}

int64_t gt_elect_lost(gt_elect_t *el)
{
    pthread_mutex_lock(&el->mu);
    int64_t n = el->lost;
    pthread_mutex_unlock(&el->mu);
    return n;
}
