/* st_shard (st_shard.h): the routing store over several replica sets:
 * routing helpers, the receipt-handle codec, the set table, open/close
 * and the ops table (the ops themselves: st_shard_meta.c, _write.c,
 * _pop.c, _query.c; shared internals in st_shard_int.h). */
#include "st_shard_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gt_log.h"

#define SH_CLOSE_WAIT_MS 10000 /* close: in-flight broadcasts and copies */

static const st_ops_t sh_ops;

/* ---- helpers ----------------------------------------------------------------- */

st_store_t *sh_set(st_shard_t *s, uint32_t k)
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
void sh_route_all(st_shard_t *s, sh_route_t *r)
{
    unsigned top = atomic_load(&s->top);
    r->n = 0;
    r->placed = false;
    for (uint32_t k = 0; k < top && k < ST_SHARD_MAX; k++)
        if (sh_set(s, k))
            r->k[r->n++] = k;
    if (r->n == 0)
        r->k[r->n++] = 0; /* calls then fail with GT_AGAIN */
}

void sh_route_of(st_shard_t *s, const char *topic, sh_route_t *r)
{
    size_t n = 0;
    if (topic && !st_shard_system_topic(topic) && s->cfg.placer.lookup)
        n = s->cfg.placer.lookup(s->cfg.placer.ctx, topic, r->k, ST_SHARD_MAX);
    if (n == 0) {
        sh_route_all(s, r);
        return;
    }
    r->n = n;
    r->placed = true;
}

bool sh_moved_to(const sh_route_t *r, uint32_t k)
{
    return r->placed && r->n > 1 && k != r->k[r->n - 1];
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

/* ---- the set table ------------------------------------------------------------------------ */

gt_err_t st_shard_add(st_store_t *st, uint32_t k, st_store_t *child, st_done_cb cb, void *arg)
{
    st_shard_t *s = (st_shard_t *)st;
    if (k >= ST_SHARD_MAX || child == NULL) {
        st_close(child);
        return GT_EINVAL;
    }
    pthread_mutex_lock(&s->add_mu);
    bool first = atomic_load(&s->top) == 0;
    if (sh_set(s, k)) {
        pthread_mutex_unlock(&s->add_mu);
        st_close(child);
        return GT_EINVAL;
    }
    st_store_t *from = sh_set0(s);
    sh_copy_t *c = NULL;
    if (!first && from && k != 0) {
        if (!(c = sh_copy_new(s, k, from, child, cb, arg))) {
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
     * what set 0 had before.  A watch covers it from now on. */
    sh_meta_watch_add(s, k);
    if (c)
        sh_copy_run(c);
    else if (cb)
        cb(arg, GT_OK);
    return GT_OK;
}

bool st_shard_ready(st_store_t *st, uint32_t k)
{
    st_shard_t *s = (st_shard_t *)st;
    return k < ST_SHARD_MAX && sh_set(s, k) && atomic_load(&s->ready[k]);
}

void *st_shard_owner(st_store_t *st)
{
    return st && st->ops == &sh_ops ? ((st_shard_t *)st)->cfg.close_ctx : NULL;
}

st_store_t *st_shard_child(st_store_t *st, uint32_t k)
{
    return sh_set((st_shard_t *)st, k);
}

/* ---- open / close --------------------------------------------------------------------------- */

void sh_op_begin(st_shard_t *s)
{
    atomic_fetch_add(&s->inflight, 1);
}

void sh_op_end(st_shard_t *s)
{
    atomic_fetch_sub(&s->inflight, 1);
}

static void sh_close(st_store_t *st)
{
    st_shard_t *s = (st_shard_t *)st;
    /* A topic create waiting for its placement, or a metadata copy, calls
     * the placer and the children after its first answers: it finishes
     * before they go.  Bounded: etcd and store calls have deadlines. */
    atomic_store(&s->closing, true);
    for (int i = 0; i < SH_CLOSE_WAIT_MS && atomic_load(&s->inflight) > 0; i++) {
        struct timespec ts = {0, 1000000L};
        nanosleep(&ts, NULL);
    }
    if (atomic_load(&s->inflight) > 0)
        GT_LOG(WARN, "store", "closing the store with %d operation(s) still in flight",
               atomic_load(&s->inflight));
    if (s->cfg.on_close)
        s->cfg.on_close(s->cfg.close_ctx);
    for (uint32_t k = 0; k < ST_SHARD_MAX; k++)
        st_close(atomic_exchange(&s->sets[k], NULL));
    pthread_mutex_destroy(&s->add_mu);
    pthread_mutex_destroy(&s->w_mu);
    free(s->dlq);
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
    pthread_mutex_init(&s->w_mu, NULL);
    *out = &s->base;
    return GT_OK;
}
