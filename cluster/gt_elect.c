/* gt_elect: leader election on etcd (see gt_elect.h). */
#include "gt_elect.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RETRY_MS 200

struct gt_elect {
    gt_etcd_t *e;
    char *prefix;     /* "P/": the watch covers every key under it */
    char *leader_key;
    char *epoch_key;
    char *isr_key;    /* NULL: no in-sync set required */
    char *pos_pfx;    /* "P/pos/" with min_insync, else NULL */
    int min_insync;
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
    int64_t inelig;  /* reads that found it not in the in-sync set */
    int64_t outranked; /* reads without enough positions or above its own */
    gt_elect_tally_t *tally; /* may be NULL */
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
        free(el->prefix);
        free(el->leader_key);
        free(el->epoch_key);
        free(el->isr_key);
        free(el->pos_pfx);
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

static bool key_is(const gt_etcd_kv_t *kv, const char *key)
{
    return kv->key_len == strlen(key) && memcmp(kv->key, key, kv->key_len) == 0;
}

/* One watch of P/ for the contender's life, from `rev` on. */
static void ensure_watch(gt_elect_t *el, int64_t rev);

static void on_events(void *arg, const gt_etcd_event_t *ev, size_t n)
{
    gt_elect_t *el = arg;
    for (size_t i = 0; i < n; i++) {
        const gt_etcd_kv_t *kv = &ev[i].kv;
        if (key_is(kv, el->leader_key) && ev[i].type == GT_ETCD_EV_DELETE) {
            campaign(el);
            return;
        }
        if (el->isr_key && key_is(kv, el->isr_key)) {
            campaign(el);
            return;
        }
        if (el->pos_pfx && ev[i].type == GT_ETCD_EV_PUT &&
            kv->key_len > strlen(el->pos_pfx) &&
            memcmp(kv->key, el->pos_pfx, strlen(el->pos_pfx)) == 0) {
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
        if (el->tally)
            atomic_fetch_add(&el->tally->lost, 1);
        /* Lost: watch from just after this transaction. */
        ensure_watch(el, rev + 1);
        campaign_over(el, false);
    } else {
        campaign_over(el, true);
    }
    el_unref(el); /* the call's */
}

static void ensure_watch(gt_elect_t *el, int64_t rev)
{
    pthread_mutex_lock(&el->mu);
    bool start = !el->watch && !el->stopped;
    pthread_mutex_unlock(&el->mu);
    if (!start)
        return;
    static const gt_etcd_watch_cbs_t cbs = { on_events, on_end };
    gt_etcd_watch_t *w = NULL;
    if (gt_etcd_watch(el->e, el->prefix, true, rev, &cbs, el, &w) == GT_OK) {
        pthread_mutex_lock(&el->mu);
        bool late = el->stopped || el->watch;
        if (!late)
            el->watch = w;
        pthread_mutex_unlock(&el->mu);
        if (late)
            gt_etcd_watch_cancel(w);
    }
}

bool gt_elect_isr_has(const uint8_t *v, size_t len, const char *node)
{
    const uint8_t *colon = memchr(v, ':', len);
    if (!colon)
        return false;
    size_t nl = strlen(node);
    const uint8_t *p = colon + 1, *end = v + len;
    while (p < end) {
        const uint8_t *c = memchr(p, ',', (size_t)(end - p));
        size_t l = (size_t)((c ? c : end) - p);
        if (l == nl && memcmp(p, node, nl) == 0)
            return true;
        p += l + 1;
    }
    return false;
}

/* Positions (min_insync): P/pos/<id> = "<epoch> <key>", put by each
 * member of P/isr while nobody leads, `epoch` being the one whose leader
 * is gone.  This contender may campaign only with the positions of at
 * least |isr| - min_insync + 1 listed members for that epoch, its own
 * among them, and none above its own (keys compare as strings). */
static bool positions_allow(gt_elect_t *el, const gt_etcd_kv_t *kvs, size_t n,
                            int64_t epoch)
{
    const gt_etcd_kv_t *isr = NULL;
    size_t pl = strlen(el->pos_pfx), n_isr = 0, have = 0;
    const uint8_t *own = NULL, *best = NULL;
    size_t own_l = 0, best_l = 0;

    for (size_t i = 0; i < n; i++)
        if (key_is(&kvs[i], el->isr_key))
            isr = &kvs[i];
    if (isr == NULL)
        return false;
    const uint8_t *colon = memchr(isr->value, ':', isr->value_len);
    if (colon != NULL && colon + 1 < isr->value + isr->value_len) {
        n_isr = 1;
        for (const uint8_t *p = colon + 1; p < isr->value + isr->value_len; p++)
            n_isr += *p == ',';
    }
    for (size_t i = 0; i < n; i++) {
        const gt_etcd_kv_t *kv = &kvs[i];
        char id[256], ep[24];
        if (kv->key_len <= pl || kv->key_len - pl >= sizeof(id) ||
            memcmp(kv->key, el->pos_pfx, pl) != 0)
            continue;
        memcpy(id, kv->key + pl, kv->key_len - pl);
        id[kv->key_len - pl] = 0;
        const uint8_t *sp = memchr(kv->value, ' ', kv->value_len);
        if (sp == NULL || (size_t)(sp - kv->value) >= sizeof(ep))
            continue;
        memcpy(ep, kv->value, (size_t)(sp - kv->value));
        ep[sp - kv->value] = 0;
        if (strtoll(ep, NULL, 10) != epoch ||
            !gt_elect_isr_has(isr->value, isr->value_len, id))
            continue;
        const uint8_t *k = sp + 1;
        size_t kl = kv->value_len - (size_t)(k - kv->value);
        if (strcmp(id, el->node) == 0) {
            /* put in this life (an earlier one's goes with its lease) */
            if (kv->lease != el->lease)
                continue;
            own = k;
            own_l = kl;
        }
        have++;
        if (best == NULL || kl > best_l ||
            (kl == best_l && memcmp(k, best, kl) > 0)) {
            best = k;
            best_l = kl;
        }
    }
    /* an answer went once q = max(min_insync, majority) members held it */
    size_t q = n_isr / 2 + 1;
    if ((size_t)el->min_insync > q)
        q = (size_t)el->min_insync;
    size_t need = q <= n_isr ? n_isr - q + 1 : 1;
    return own != NULL && have >= need && own_l == best_l &&
           memcmp(own, best, own_l) == 0;
}

/* The read of P/ (leader, epoch, isr, ...) at revision `rev`. */
static void on_read(void *arg, gt_err_t err, int64_t rev,
                    const gt_etcd_kv_t *kvs, size_t n)
{
    gt_elect_t *el = arg;
    if (err != GT_OK) {
        campaign_over(el, true);
        el_unref(el);
        return;
    }
    int64_t epoch = 0, mod = 0, isr_mod = 0;
    bool leader = false, listed = false;
    for (size_t i = 0; i < n; i++) {
        if (key_is(&kvs[i], el->leader_key)) {
            leader = true;
        } else if (key_is(&kvs[i], el->epoch_key)) {
            char buf[24];
            size_t l = kvs[i].value_len < sizeof(buf) - 1 ? kvs[i].value_len
                                                          : sizeof(buf) - 1;
            memcpy(buf, kvs[i].value, l);
            buf[l] = 0;
            epoch = strtoll(buf, NULL, 10);
            mod = kvs[i].mod_revision;
        } else if (el->isr_key && key_is(&kvs[i], el->isr_key)) {
            isr_mod = kvs[i].mod_revision;
            listed = gt_elect_isr_has(kvs[i].value, kvs[i].value_len,
                                      el->node);
        }
    }
    if (!leader && listed && el->pos_pfx &&
        !positions_allow(el, kvs, n, epoch)) {
        pthread_mutex_lock(&el->mu);
        el->outranked++;
        if (el->tally)
            atomic_fetch_add(&el->tally->deferred, 1);
        pthread_mutex_unlock(&el->mu);
        ensure_watch(el, rev + 1);
        campaign_over(el, false);
        el_unref(el);
        return;
    }
    if (leader || (el->isr_key && !listed)) {
        /* Someone leads, or we may not: wait for P/ to change. */
        pthread_mutex_lock(&el->mu);
        if (leader)
            el->lost++;
        else
            el->inelig++;
        if (el->tally)
            atomic_fetch_add(leader ? &el->tally->lost
                                    : &el->tally->ineligible, 1);
        pthread_mutex_unlock(&el->mu);
        ensure_watch(el, rev + 1);
        campaign_over(el, false);
        el_unref(el);
        return;
    }
    pthread_mutex_lock(&el->mu);
    el->epoch = epoch;
    snprintf(el->next, sizeof(el->next), "%lld", (long long)(epoch + 1));
    pthread_mutex_unlock(&el->mu);
    gt_etcd_cmp_t cmp[3] = {
        { .key = el->leader_key, .target = GT_ETCD_CMP_VERSION,
          .op = GT_ETCD_EQ, .num = 0 },
        { .key = el->epoch_key, .target = GT_ETCD_CMP_MOD, .op = GT_ETCD_EQ,
          .num = mod },
        { .key = el->isr_key, .target = GT_ETCD_CMP_MOD, .op = GT_ETCD_EQ,
          .num = isr_mod },
    };
    gt_etcd_op_t ops[2] = {
        { .kind = GT_ETCD_OP_PUT, .key = el->leader_key, .value = el->node,
          .value_len = strlen(el->node), .lease = el->lease },
        { .kind = GT_ETCD_OP_PUT, .key = el->epoch_key, .value = el->next,
          .value_len = strlen(el->next) },
    };
    /* The read's reference passes to the transaction. */
    if (gt_etcd_txn(el->e, cmp, el->isr_key ? 3 : 2, ops, 2, NULL, 0, on_txn,
                    el) != GT_OK) {
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
    if (go && gt_etcd_get(el->e, el->prefix, true, on_read, el) != GT_OK) {
        el_unref(el);
        campaign_over(el, true);
    }
}

gt_err_t gt_elect_start_opts(gt_etcd_t *e, const gt_elect_opts_t *o,
                             gt_elect_t **out)
{
    if (!e || !o || !o->prefix || !o->node_id || !o->on_leader || !out)
        return GT_EINVAL;
    gt_elect_t *el = calloc(1, sizeof(*el));
    if (!el)
        return GT_ENOMEM;
    size_t pl = strlen(o->prefix) + 16;
    el->prefix = malloc(pl);
    el->leader_key = malloc(pl);
    el->epoch_key = malloc(pl);
    el->isr_key = o->require_isr ? malloc(pl) : NULL;
    el->pos_pfx = o->require_isr && o->min_insync > 0 ? malloc(pl) : NULL;
    el->node = strdup(o->node_id);
    if (!el->prefix || !el->leader_key || !el->epoch_key || !el->node ||
        (o->require_isr && !el->isr_key) ||
        (o->require_isr && o->min_insync > 0 && !el->pos_pfx)) {
        free(el->prefix);
        free(el->leader_key);
        free(el->epoch_key);
        free(el->isr_key);
        free(el->pos_pfx);
        free(el->node);
        free(el);
        return GT_ENOMEM;
    }
    snprintf(el->prefix, pl, "%s/", o->prefix);
    snprintf(el->leader_key, pl, "%s/leader", o->prefix);
    snprintf(el->epoch_key, pl, "%s/epoch", o->prefix);
    if (el->isr_key)
        snprintf(el->isr_key, pl, "%s/isr", o->prefix);
    if (el->pos_pfx)
        snprintf(el->pos_pfx, pl, "%s/pos/", o->prefix);
    el->min_insync = o->min_insync;
    el->e = e;
    el->lease = o->lease;
    el->on_leader = o->on_leader;
    el->arg = o->arg;
    el->tally = o->tally;
    el->refs = 1;
    pthread_mutex_init(&el->mu, NULL);
    pthread_cond_init(&el->cv, NULL);
    campaign(el);
    *out = el;
    return GT_OK;
}

gt_err_t gt_elect_start(gt_etcd_t *e, const char *prefix,
                        const char *node_id, int64_t lease,
                        void (*on_leader)(void *arg, int64_t epoch),
                        void *arg, gt_elect_t **out)
{
    gt_elect_opts_t o = { .prefix = prefix, .node_id = node_id,
                          .lease = lease, .on_leader = on_leader, .arg = arg };
    return gt_elect_start_opts(e, &o, out);
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

int64_t gt_elect_outranked(gt_elect_t *el)
{
    pthread_mutex_lock(&el->mu);
    int64_t n = el->outranked;
    pthread_mutex_unlock(&el->mu);
    return n;
}

int64_t gt_elect_ineligible(gt_elect_t *el)
{
    pthread_mutex_lock(&el->mu);
    int64_t n = el->inelig;
    pthread_mutex_unlock(&el->mu);
    return n;
}
