/* The local engine's I/O figures: fdatasync latency per file, counted by
 * the thread that syncs (syncer, flusher), and the commitlog's flush-behind
 * bytes, read from the positions the writer and syncer keep.  Relaxed
 * atomics: a reader may see a count without its sum for an instant, never
 * a torn value.  See st_local_io_stats in st.h. */
#include <string.h>
#include <time.h>

#include "st_int.h"

const double st_fsync_bucket_ms[ST_FSYNC_BUCKETS] = {
    0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 1000,
};

static uint64_t st_mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int st_timed_fdatasync(st_local_t *st, st_sync_file_t file, int fd)
{
    struct st_fsync_hist *h = &st->fsync_hist[file];
    uint64_t t0 = st_mono_ns();
    int r = st->fops->fdatasync(st->fctx, fd);
    uint64_t ns = st_mono_ns() - t0;
    size_t b = 0;

    while (b < ST_FSYNC_BUCKETS && (double)ns > st_fsync_bucket_ms[b] * 1e6)
        b++;
    atomic_fetch_add_explicit(&h->bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
    if (r < 0)
        atomic_fetch_add_explicit(&h->failed, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    return r;
}

gt_err_t st_local_io_stats(st_store_t *local, st_io_stats_t *out)
{
    st_local_t *st;

    if (local == NULL || local->ops != &st_local_ops)
        return GT_EINVAL;
    st = (st_local_t *)local;
    memset(out, 0, sizeof(*out));
    /* synced first: a write landing between the two loads can only make
     * the difference larger, never negative */
    out->synced_pos = atomic_load(&st->synced_pos);
    out->written_pos = atomic_load(&st->written_pos);
    out->flush_behind_bytes =
        out->written_pos > out->synced_pos ? out->written_pos - out->synced_pos : 0;
    for (int f = 0; f < ST_SYNC_FILES; f++) {
        const struct st_fsync_hist *h = &st->fsync_hist[f];

        out->fsync[f].count = atomic_load_explicit(&h->count, memory_order_relaxed);
        out->fsync[f].failed = atomic_load_explicit(&h->failed, memory_order_relaxed);
        out->fsync[f].sum_ms =
            (double)atomic_load_explicit(&h->sum_ns, memory_order_relaxed) / 1e6;
        for (int b = 0; b <= ST_FSYNC_BUCKETS; b++)
            out->fsync[f].bucket[b] =
                atomic_load_explicit(&h->bucket[b], memory_order_relaxed);
    }
    return GT_OK;
}
