/* The local store: open (recovery), close, the st_ops_t table, and the
 * read-only operations (pull, offset query, lookup, stats), retention and
 * the service thread that answers parked pops.
 *
 * Start-up order: take <dir>/LOCK (flock), note an unclean shutdown if the
 * <dir>/abort marker survived the last run, recover the commitlog (which
 * rebuilds consume queues and the index), replay and compact the state log,
 * then start the writer, flusher and service threads.  A clean close
 * removes the marker. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gt_log.h"
#include "st_pop.h"

#define RETENTION_CHECK_MS 60000

void st_config_init(st_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->segment_size = 1ull << 30;
    cfg->cq_file_entries = 65536;
    cfg->cq_tail_entries = 1024;
    cfg->flush = ST_FLUSH_SYNC;
    cfg->flush_interval_ms = 500;
    cfg->retention_hours = 72;
    cfg->max_message_bytes = 4u << 20;
    cfg->state_compact_bytes = 64u << 20;
    cfg->snapshot_interval_ms = 300000;
}

bool st_err_retriable(gt_err_t err)
{
    switch (err) {
    case GT_AGAIN:
    case GT_EIO:
    case GT_ENOSPC:
    case GT_ENOMEM:
    case GT_ESHUTDOWN:
    case GT_ETIMEDOUT:
    case GT_EBUSY:
        return true;
    default:
        return false;
    }
}

int64_t st_retry_backoff_ms(const st_retry_policy_t *p, uint32_t attempt)
{
    if (!p || !p->initial_ms)
        return 0;
    double v = p->initial_ms;
    for (uint32_t i = 1; i < attempt && p->multiplier > 100; i++) {
        v = v * p->multiplier / 100.0;
        if ((p->max_ms && v >= p->max_ms) || v > 1e12)
            break;
    }
    if (p->max_ms && v > p->max_ms)
        v = p->max_ms;
    return v > 1e12 ? (int64_t)1e12 : (int64_t)v;
}

gt_err_t st_dlq_topic_name(const char *group, char *buf, size_t size)
{
    int n = snprintf(buf, size, "%s%s", ST_DLQ_PREFIX, group ? group : "");
    return n < 0 || (size_t)n >= size || n > ST_NAME_MAX ? GT_ERANGE : GT_OK;
}

void st_publish_wake(st_local_t *st, st_topic_rt_t *t)
{
    t->version++;
    if (st_parks_wake(st, t) || t == st->sys_timer) /* timers: maybe sooner */
        pthread_cond_signal(&st->svc_cond);
}

/* ---- reads ------------------------------------------------------------------- */
/* Reads the record at pos whose size is not known (index hits). */
gt_err_t st_read_unsized(st_local_t *st, uint64_t pos, uint8_t **buf,
                         st_message_t *m)
{
    uint8_t h[12];
    uint32_t len;
    st_seg_t *seg = st_log_seg_at(st, pos);
    if (!seg)
        return GT_ENOTFOUND;
    gt_err_t rc = st_file_pread_full(st, seg->fd, h, sizeof(h),
                                     pos - seg->base);
    st_seg_unref(st, seg);
    if (rc == GT_OK)
        rc = st_record_peek(h, sizeof(h), ST_REC_MAX_HARD, &len);
    return rc == GT_OK ? st_log_read(st, pos, len, buf, m) : rc;
}

typedef struct msgs_out {
    st_message_t *m;
    uint8_t **bufs;
    size_t n, cap;
} msgs_out_t;

static gt_err_t mo_init(msgs_out_t *o, size_t cap)
{
    o->n = 0;
    o->cap = cap;
    o->m = calloc(cap ? cap : 1, sizeof(*o->m));
    o->bufs = calloc(cap ? cap : 1, sizeof(*o->bufs));
    return o->m && o->bufs ? GT_OK : GT_ENOMEM;
}

static void mo_free(msgs_out_t *o)
{
    for (size_t i = 0; i < o->n; i++)
        free(o->bufs[i]);
    free(o->m);
    free(o->bufs);
}

static void offset_query_local(st_store_t *s, const char *topic,
                               uint32_t queue, st_offset_kind_t kind,
                               int64_t ts_ms, st_offset_cb cb, void *arg)
{
    st_local_t *st = (st_local_t *)s;
    gt_err_t rc = GT_OK;
    uint64_t off = 0;
    pthread_mutex_lock(&st->lock);
    st_topic_rt_t *t = st_topic_find(st, topic);
    if (!t)
        rc = GT_ENOTFOUND;
    else if (queue >= t->meta.queue_count)
        rc = GT_EINVAL;
    else if (queue < t->nq) {
        st_cq_t *q = &t->cq[queue];
        uint64_t lo = q->min_off, hi = st_cq_end(q);
        if (kind == ST_OFFSET_BEGIN)
            off = q->min_off;
        else if (kind == ST_OFFSET_END)
            off = st_cq_end(q);
        else {
            while (lo < hi) { /* first entry with store_ts >= ts_ms */
                uint64_t mid = lo + (hi - lo) / 2;
                st_cq_entry_t e;
                if (!st_cq_get(t, queue, mid, &e)) {
                    rc = GT_EIO; /* logged */
                    break;
                }
                if (e.store_ts < ts_ms)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            off = lo;
        }
    }
    pthread_mutex_unlock(&st->lock);
    cb(arg, rc, off);
}

static void lookup(st_local_t *st, char kind, const char *topic,
                   const char *s, uint32_t max, st_msgs_cb cb, void *arg)
{
    msgs_out_t o = {0};
    if (max > ST_POP_MAX)
        max = ST_POP_MAX;
    gt_err_t rc = s ? mo_init(&o, max) : GT_EINVAL;
    pthread_mutex_lock(&st->lock);
    st_index_iter_t *it = rc == GT_OK ? malloc(sizeof(*it)) : NULL;
    uint64_t pos;
    if (rc == GT_OK && !it)
        rc = GT_ENOMEM;
    if (it)
        st_index_iter_start(it, &st->index, st_hash64(kind, s));
    while (it && o.n < max && st_index_iter_next(it, &pos)) {
        uint8_t *buf;
        st_message_t *m = &o.m[o.n];
        bool hit = false, seen = false;
        for (size_t k = 0; k < o.n && !seen; k++) /* a run and the re-scanned */
            seen = o.m[k].position == pos;     /* tail may both hold it */
        if (seen || pos < st->min_pos ||
            st_read_unsized(st, pos, &buf, m) != GT_OK)
            continue;
        if (kind == 'I')
            hit = strcmp(m->msg_id, s) == 0;
        for (uint32_t k = 0; kind == 'K' && k < m->nkeys; k++)
            hit = hit || strcmp(m->keys[k], s) == 0;
        if (hit && topic && strcmp(topic, m->topic) != 0)
            hit = false;
        if (hit && !topic && st_is_sys_name(m->topic))
            hit = false; /* held messages are not visible yet */
        if (hit)
            o.bufs[o.n++] = buf;
        else
            free(buf);
    }
    pthread_mutex_unlock(&st->lock);
    free(it);
    cb(arg, rc, rc == GT_OK ? o.m : NULL, rc == GT_OK ? o.n : 0, 0);
    mo_free(&o);
}

static void lookup_id_local(st_store_t *s, const char *topic,
                            const char *msg_id, st_msgs_cb cb, void *arg)
{
    lookup((st_local_t *)s, 'I', topic, msg_id, ST_POP_MAX, cb, arg);
}

static void lookup_key_local(st_store_t *s, const char *topic,
                             const char *key, uint32_t max, st_msgs_cb cb,
                             void *arg)
{
    lookup((st_local_t *)s, 'K', topic, key, max, cb, arg);
}

static void group_stats(st_local_t *st, st_topic_rt_t *t, st_group_rt_t *g,
                        bool from_first, st_stats_t *s, int64_t now)
{
    for (uint32_t q = 0; q < t->meta.queue_count && q < t->nq; q++) {
        st_cq_t *cq = &t->cq[q];
        st_cs_t *cs = st_cs_find(st, g, t, q, false);
        uint64_t end = st_cq_end(cq);
        if (!cs || !cs->init) {
            uint64_t start = g->meta.consume_from == ST_CONSUME_FROM_LAST && !from_first
                                 ? end : cq->min_off;
            s->ready += end - start;
            s->lag += end - start;
            continue;
        }
        st_cs_clamp(cs, cq);
        s->ready += end - cs->pop;
        s->lag += end - cs->commit;
        for (uint64_t o = cs->commit; o < cs->pop; o++) {
            st_went_t *e = st_cs_at(cs, o);
            if (e->state == ST_E_INFLIGHT && e->deadline > now)
                s->inflight++;
            else if (e->state == ST_E_INFLIGHT ||
                     (e->state == ST_E_NONE && e->deadline <= now))
                s->ready++;
        }
    }
}

static void stats_local(st_store_t *s, const st_stats_req_t *req, st_stats_cb cb,
                        void *arg)
{
    st_local_t *st = (st_local_t *)s;
    const char *topic = req->topic, *group = req->group;
    st_stats_t out = {0};
    st_queue_stats_t *qs = NULL;
    gt_err_t rc = GT_OK;
    pthread_mutex_lock(&st->lock);
    st_topic_rt_t *t = st_topic_find(st, topic);
    st_group_rt_t *g = group ? st_group_find(st, group) : NULL;
    if (!t || (group && !g))
        rc = GT_ENOTFOUND;
    else if (!(qs = calloc(t->meta.queue_count, sizeof(*qs))))
        rc = GT_ENOMEM;
    for (uint32_t q = 0; rc == GT_OK && q < t->meta.queue_count; q++) {
        if (q >= t->nq)
            continue;
        st_cq_t *cq = &t->cq[q];
        qs[q] = (st_queue_stats_t){.min_offset = cq->min_off,
                                   .max_offset = st_cq_end(cq),
                                   .bytes = cq->bytes};
        out.messages += st_cq_end(cq) - cq->min_off;
        out.bytes += cq->bytes;
    }
    if (rc == GT_OK) {
        out.nqueues = t->meta.queue_count;
        out.tx_discarded = t->tx_discarded;
        out.queues = qs;
        if (g)
            group_stats(st, t, g, req->new_from_first, &out, st_now_ms());
    }
    pthread_mutex_unlock(&st->lock);
    cb(arg, rc, rc == GT_OK ? &out : NULL);
    free(qs);
}

/* ---- retention -------------------------------------------------------------- */
static void retention_locked(st_local_t *st, int64_t now)
{
    if (st->cfg.retention_hours == 0)
        return;
    int64_t cutoff = now - (int64_t)st->cfg.retention_hours * 3600 * 1000;
    uint64_t min = st_log_retain(st, cutoff, st_hold_keep_pos(st));
    if (min <= st->min_pos)
        return;
    st->min_pos = min;
    for (size_t i = 0; i < st->ntopics; i++) {
        st_topic_rt_t *t = st->topics[i];
        for (uint32_t q = 0; q < t->nq; q++)
            st_cq_prune(t, q, min);
    }
    st_index_prune(&st->index, min);
    /* consumption state follows lazily: st_cs_clamp() on next use */
}

void st_local_index_info(st_store_t *s, st_index_info_t *out)
{
    st_local_t *st = (st_local_t *)s;
    pthread_mutex_lock(&st->lock);
    st_index_info(&st->index, out);
    pthread_mutex_unlock(&st->lock);
}

void st_local_retention_run(st_store_t *s, int64_t now_ms)
{
    st_local_t *st = (st_local_t *)s;
    pthread_mutex_lock(&st->lock);
    retention_locked(st, now_ms);
    pthread_mutex_unlock(&st->lock);
}

/* ---- service thread ------------------------------------------------------------ */
static void *svc_main(void *arg)
{
    st_local_t *st = arg;
    pthread_setname_np(pthread_self(), "st-service");
    pthread_mutex_lock(&st->lock);
    while (!st->svc_stop) {
        uint64_t kicks = st->svc_kicks; /* tests: st_local_clock_settle */
        int64_t now = st_now_ms();
        if (now >= st->next_retention) {
            retention_locked(st, now);
            st->next_retention = now + RETENTION_CHECK_MS;
        }
        st_state_maybe_compact(st);
        if (now >= st->next_snapshot) {
            /* A snapshot costs ~32 bytes per retained message; write one
             * only when the log grew by an eighth since the last (or 1 GiB),
             * so the cost stays proportional to what a start would scan. */
            uint64_t grown = st->published_pos - st->snap_pos;
            uint64_t kept = st->published_pos - st->min_pos;
            /* retention left consume queue files: they go after one */
            if (((grown && (grown * 8 >= kept || grown >= (1ull << 30))) ||
                 st->cq_unlink_due) && st_snap_write(st, true) == GT_OK)
                st->snap_pos = st->published_pos;
            st->next_snapshot = now + st->cfg.snapshot_interval_ms;
        }
        int64_t wait = st_parked_service(st, now);
        if (wait <= 0)
            continue;
        int64_t tw = st_hold_service(st, st_now_ms());
        if (tw <= 0)
            continue;
        if (tw < wait)
            wait = tw;
        if (wait > st->next_retention - now)
            wait = st->next_retention - now;
        if (wait > st->next_snapshot - now)
            wait = st->next_snapshot - now;
        if (wait > RETENTION_CHECK_MS)
            wait = RETENTION_CHECK_MS;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)wait * 1000000ull;
        ts.tv_sec += (time_t)(ns / 1000000000ull);
        ts.tv_nsec = (long)(ns % 1000000000ull);
        st->svc_kicks_done = kicks;
        if (st->svc_kicks != kicks) /* a kick came while the lock was dropped */
            continue;
        /* steps above drop the lock: a close may have signalled meanwhile */
        if (!st->svc_stop)
            pthread_cond_timedwait(&st->svc_cond, &st->lock, &ts);
    }
    pthread_mutex_unlock(&st->lock);
    return NULL;
}

/* ---- open / close --------------------------------------------------------------- */
static void local_free(st_local_t *st)
{
    for (size_t i = 0; i < st->ngroups; i++) /* FIFO indexes (st_fifo.c) */
        for (st_gtopic_t *gt = st->groups[i]->topics; gt; gt = gt->next)
            for (uint32_t q = 0; q < gt->ncs; q++)
                st_fifo_free(gt->cs[q].fifo);
    st_tables_free(st);
    st_kv_free(st);
    st_hold_close(st);
    if (st->lock_fd >= 0)
        close(st->lock_fd);
    pthread_mutex_destroy(&st->lock);
    pthread_mutex_destroy(&st->seg_lock);
    pthread_mutex_destroy(&st->wq_lock);
    pthread_mutex_destroy(&st->sq_lock);
    pthread_mutex_destroy(&st->zf_lock);
    pthread_cond_destroy(&st->zf_cond);
    pthread_cond_destroy(&st->sq_cond);
    pthread_cond_destroy(&st->sq_idle);
    pthread_mutex_destroy(&st->ck_lock);
    pthread_mutex_destroy(&st->fl_lock);
    pthread_cond_destroy(&st->wq_cond);
    pthread_cond_destroy(&st->fl_cond);
    pthread_cond_destroy(&st->svc_cond);
    free(st->dir);
    free(st->cl_dir);
    free(st->cq_dir);
    free(st);
}

static void marker_path(const st_local_t *st, char *buf, size_t n)
{
    snprintf(buf, n, "%s/abort", st->dir);
}

static void local_close(st_store_t *s)
{
    st_local_t *st = (st_local_t *)s;
    char marker[4096];
    pthread_mutex_lock(&st->lock);
    st->closing = true;
    st->svc_stop = true;
    pthread_cond_signal(&st->svc_cond);
    pthread_mutex_unlock(&st->lock);
    pthread_join(st->svc, NULL);
    st_parked_shutdown(st);
    st_writer_stop(st);
    if (atomic_load(&st->n_syncs))
        GT_LOG(INFO, "store", "closing %s: %" PRIu64 " appends in %" PRIu64
               " commitlog syncs", st->dir, atomic_load(&st->n_synced_appends),
               atomic_load(&st->n_syncs)); /* drains appends; flusher's last round syncs */
    st_index_stop(&st->index);
    st_seg_t *cur = st_log_current(st);
    bool clean = cur && st->fops->fdatasync(st->fctx, cur->fd) == 0;
    if (clean)
        st_log_checkpoint(st, cur->base + atomic_load(&cur->end));
    st_seg_unref(st, cur);
    if (clean) {
        pthread_mutex_lock(&st->lock);
        (void)st_snap_write(st, false); /* a fast next start; best effort */
        pthread_mutex_unlock(&st->lock);
    }
    st_state_close(st);
    st_log_close(st);
    marker_path(st, marker, sizeof(marker));
    if (clean)
        unlink(marker);
    local_free(st);
}

const st_ops_t st_local_ops = {
    .name = "local",
    .close = local_close,
    .topic_put = st_topic_put_local,
    .topic_delete = st_topic_delete_local,
    .topic_get = st_topic_get_local,
    .group_put = st_group_put_local,
    .group_delete = st_group_delete_local,
    .group_get = st_group_get_local,
    .append = st_append_front,
    .append_multi = st_append_multi_local,
    .pop = st_pop_local,
    .pop_cancel = st_pop_cancel_local,
    .ack = st_ack_local,
    .ack_batch = st_ack_batch_local,
    .change_invisible = st_change_local,
    .release = st_release_local,
    .pull = st_pull_local,
    .offset_get = st_offset_get_local,
    .offset_update = st_offset_update_local,
    .offset_query = offset_query_local,
    .lookup_id = lookup_id_local,
    .lookup_key = lookup_key_local,
    .stats = stats_local,
    .tx_end = st_tx_end_local,
    .tx_pending = st_tx_pending_local,
    .tx_checked = st_tx_checked_local,
    .recall = st_recall_local,
    .meta_watch = st_meta_watch_local,
    .purge = st_purge_local,
    .requeue = st_requeue_local,
    .meta_put = st_meta_put_local,
    .meta_del = st_meta_del_local,
    .meta_list = st_meta_list_local,
};

static gt_err_t cfg_check(const st_config_t *c)
{
    const char *why = NULL;
    if (!c->dir || !c->dir[0] || strlen(c->dir) > 3000)
        why = "dir must be a path (at most 3000 bytes)";
    else if (c->segment_size < 4096)
        why = "segment_size must be at least 4096";
    else if (c->cq_file_entries && (c->cq_file_entries % 128 ||
                                    c->cq_file_entries > (1u << 24)))
        why = "cq_file_entries must be a multiple of 128, at most 2^24";
    else if (c->cq_tail_entries > (1u << 20))
        why = "cq_tail_entries must be at most 2^20";
    else if (c->flush_interval_ms == 0)
        why = "flush_interval_ms must be positive";
    else if (c->max_message_bytes < 256 ||
             c->max_message_bytes > ST_REC_MAX_HARD)
        why = "max_message_bytes must be within [256, 576 MiB]";
    else if (c->max_message_bytes > c->segment_size - ST_SEG_HDR)
        why = "max_message_bytes must fit in a segment (raise segment_size)";
    if (why)
        GT_LOG(ERROR, "store", "bad store configuration: %s", why);
    return why ? GT_EINVAL : GT_OK;
}

static gt_err_t local_init(st_local_t *st, const st_config_t *cfg)
{
    st->base.ops = &st_local_ops;
    st->cfg = *cfg;
    st->fops = cfg->file_ops ? cfg->file_ops : &st_posix_file_ops;
    st->fctx = cfg->file_ctx;
    st->lock_fd = st->ck_fd = st->state_fd = -1;
    st->seg_size = cfg->segment_size;
    st->cq_chunk = cfg->cq_file_entries ? cfg->cq_file_entries : 65536;
    st->cq_tail = cfg->cq_tail_entries ? cfg->cq_tail_entries : 1024;
    if (!st->cfg.state_compact_bytes)
        st->cfg.state_compact_bytes = 64u << 20;
    if (!st->cfg.snapshot_interval_ms)
        st->cfg.snapshot_interval_ms = 300000;
    st->start_ms = st_now_ms();
    st->pid = getpid();
    st->next_snapshot = st->start_ms + st->cfg.snapshot_interval_ms;
    st->next_expiry = 0;
    st->next_retention = st->start_ms;
    pthread_mutex_init(&st->lock, NULL);
    pthread_mutex_init(&st->seg_lock, NULL);
    pthread_mutex_init(&st->wq_lock, NULL);
    pthread_mutex_init(&st->sq_lock, NULL);
    pthread_mutex_init(&st->zf_lock, NULL);
    pthread_cond_init(&st->zf_cond, NULL);
    pthread_cond_init(&st->sq_cond, NULL);
    pthread_cond_init(&st->sq_idle, NULL);
    pthread_mutex_init(&st->ck_lock, NULL);
    pthread_mutex_init(&st->fl_lock, NULL);
    pthread_cond_init(&st->wq_cond, NULL);
    pthread_cond_init(&st->fl_cond, NULL);
    pthread_cond_init(&st->svc_cond, NULL);
    st->dir = strdup(cfg->dir);
    st->cfg.dir = st->dir;
    if (!st->dir || asprintf(&st->cl_dir, "%s/commitlog", cfg->dir) < 0 ||
        asprintf(&st->cq_dir, "%s/cq", cfg->dir) < 0)
        return GT_ENOMEM;
    if (mkdir(st->dir, 0755) < 0 && errno != EEXIST) {
        GT_LOG(ERROR, "store", "cannot create %s: %s", st->dir,
               strerror(errno));
        return GT_EIO;
    }
    gt_err_t rc = st_index_init(&st->index, st, cfg->index_mem_entries);
    if (rc != GT_OK)
        return rc;
    char p[4096];
    snprintf(p, sizeof(p), "%s/LOCK", st->dir);
    st->lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (st->lock_fd < 0)
        return GT_EIO;
    if (flock(st->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        GT_LOG(ERROR, "store", "%s is in use by another process", st->dir);
        return GT_EBUSY;
    }
    return GT_OK;
}

gt_err_t st_local_open(const st_config_t *cfg, st_store_t **out)
{
    st_local_t *st = NULL;
    char marker[4096];
    gt_err_t rc = cfg ? cfg_check(cfg) : GT_EINVAL;
    *out = NULL;
    if (rc != GT_OK)
        return rc;
    if (!(st = calloc(1, sizeof(*st))))
        return GT_ENOMEM;
    rc = local_init(st, cfg);
    if (rc != GT_OK)
        goto fail;
    marker_path(st, marker, sizeof(marker));
    if (access(marker, F_OK) == 0)
        GT_LOG(WARN, "store", "%s: unclean shutdown detected; verifying the "
               "commitlog tail", st->dir);
    pthread_mutex_lock(&st->lock);
    rc = st_log_open(st);
    if (rc == GT_OK)
        rc = st_state_open(st);
    if (rc == GT_OK)
        rc = st_hold_open(st);
    pthread_mutex_unlock(&st->lock);
    if (rc != GT_OK)
        goto fail;
    int fd = open(marker, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0)
        close(fd);
    if ((rc = st_writer_start(st)) != GT_OK)
        goto fail;
    if ((rc = st_index_start(&st->index)) != GT_OK) {
        st_writer_stop(st);
        goto fail;
    }
    if (pthread_create(&st->svc, NULL, svc_main, st) != 0) {
        st_writer_stop(st);
        rc = GT_ENOMEM;
        goto fail;
    }
    GT_LOG(INFO, "store", "opened %s (%s flush, %zu segments)", st->dir,
           st->cfg.flush == ST_FLUSH_SYNC ? "sync" : "async", st->nsegs);
    *out = &st->base;
    return GT_OK;
fail:
    st_state_close(st);
    st_log_close(st);
    local_free(st);
    return rc;
}
