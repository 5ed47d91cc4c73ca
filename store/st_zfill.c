/* Zero fill ahead of the writer (sync mode), on its own thread.
 *
 * In sync mode the current segment is zero-filled ahead of its records, so
 * that the syncer's fdatasyncs find allocated blocks and an unchanged file
 * size (no metadata journal commit per sync).  The zero fill itself grows
 * the file, and on ext4 a write that grows a file can wait for an
 * fdatasync of it in progress: done by the writer just before its data (1
 * MiB past it), it held every append queued behind it for 60-370 ms under
 * bench-overload C (8 senders of 32 MiB batches), most of a control send's
 * p99, while writing over zeros already there took 1-16 ms.
 *
 * So the "st-zfill" thread keeps the current segment zero-filled
 * ST_ZF_AHEAD bytes past the written end, ST_ZF_CHUNK at a time; the
 * writer kicks it when less than ST_ZF_LOW is left, and fills inline
 * (st_log_zero_fill, as before) only when its data would pass the zeros.
 * Each chunk is written back at once (sync_file_range, a hint: errors are
 * the syncer's to meet), so that the syncer's fdatasyncs, which a small
 * append waits for, do not also carry megabytes of zeros.
 *
 * zf_lock orders the fills and the cuts: the thread claims a chunk
 * (zf_busy) and publishes the new zeroed end under it, and checks under it
 * that its segment is still the current one; the writer's truncations
 * (st_zfill_cut), its inline fills and segment rolls take it and wait for
 * the chunk in progress, so no zeros are ever written past a cut or into a
 * rolled segment.  Lock order: zf_lock before seg_lock. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>

#include "gt_log.h"
#include "st_int.h"

/* Zeros kept ahead of the written end (more than the writer writes in one
 * run: up to ST_WRITE_AHEAD plus a part), the step of one fill, and the
 * margin below which the writer kicks the thread. */
#define ST_ZF_AHEAD (24u << 20)
#define ST_ZF_CHUNK (4u << 20)
#define ST_ZF_LOW (16u << 20)

gt_err_t st_log_zero_range(st_local_t *st, st_seg_t *seg, uint64_t from,
                           uint64_t to, uint64_t *done)
{
    static const uint8_t zeros[64 * 1024];
    *done = from;
    while (*done < to) {
        struct iovec iov[16];
        int cnt = 0;
        uint64_t left = to - *done;
        while (cnt < 16 && left) {
            size_t n = left < sizeof(zeros) ? (size_t)left : sizeof(zeros);
            iov[cnt++] = (struct iovec){.iov_base = (void *)zeros,
                                        .iov_len = n};
            left -= n;
        }
        ssize_t w = st->fops->pwritev(st->fctx, seg->fd, iov, cnt,
                                      (off_t)*done);
        if (w == -EINTR)
            continue;
        if (w <= 0)
            return w == 0 ? GT_EIO : st_errno_to_err((int)w);
        *done += (uint64_t)w;
    }
    return GT_OK;
}

/* Waits for the chunk in progress; zf_lock held on return. */
static void zf_hold(st_local_t *st)
{
    pthread_mutex_lock(&st->zf_lock);
    while (st->zf_busy)
        pthread_cond_wait(&st->zf_cond, &st->zf_lock);
}

static void zf_kick(st_local_t *st)
{
    pthread_mutex_lock(&st->zf_lock);
    st->zf_kick = true;
    pthread_cond_signal(&st->zf_cond);
    pthread_mutex_unlock(&st->zf_lock);
}

gt_err_t st_zfill_ensure(st_local_t *st, st_seg_t *seg, uint64_t need)
{
    gt_err_t rc = GT_OK;
    uint64_t z = atomic_load(&seg->zeroed);
    if (need > z) {
        zf_hold(st);
        rc = st_log_zero_fill(st, seg, need);
        pthread_mutex_unlock(&st->zf_lock);
        z = atomic_load(&seg->zeroed);
    }
    if (rc == GT_OK && st->zf_running && z < st->seg_size &&
        z - need < ST_ZF_LOW)
        zf_kick(st);
    return rc;
}

int st_zfill_cut(st_local_t *st, st_seg_t *seg, uint64_t off)
{
    zf_hold(st);
    int r = st->fops->ftruncate(st->fctx, seg->fd, (off_t)off);
    if (atomic_load(&seg->zeroed) > off)
        atomic_store(&seg->zeroed, off);
    pthread_mutex_unlock(&st->zf_lock);
    return r;
}

gt_err_t st_zfill_roll(st_local_t *st)
{
    zf_hold(st);
    gt_err_t rc = st_log_roll(st);
    pthread_mutex_unlock(&st->zf_lock);
    return rc;
}

/* Claims the next chunk of `seg` if it is still the current segment and
 * short of its target; zf_lock held. */
static bool zf_claim(st_local_t *st, st_seg_t *seg, uint64_t *from,
                     uint64_t *to)
{
    st_seg_t *cur = st_log_current(st);
    bool same = cur == seg;
    st_seg_unref(st, cur);
    if (!same || st->zf_stop)
        return false;
    uint64_t target = atomic_load(&seg->end) + ST_ZF_AHEAD;
    if (target > st->seg_size)
        target = st->seg_size;
    *from = atomic_load(&seg->zeroed);
    if (*from >= target)
        return false;
    *to = *from + ST_ZF_CHUNK < target ? *from + ST_ZF_CHUNK : target;
    st->zf_busy = true;
    return true;
}

static void zf_fill(st_local_t *st, st_seg_t *seg)
{
    uint64_t from, to;
    pthread_mutex_lock(&st->zf_lock);
    while (zf_claim(st, seg, &from, &to)) {
        pthread_mutex_unlock(&st->zf_lock);
        uint64_t done;
        gt_err_t rc = st_log_zero_range(st, seg, from, to, &done);
        if (done > from)
            (void)sync_file_range(seg->fd, (off_t)from, (off_t)(done - from),
                                  SYNC_FILE_RANGE_WAIT_BEFORE |
                                      SYNC_FILE_RANGE_WRITE |
                                      SYNC_FILE_RANGE_WAIT_AFTER);
        pthread_mutex_lock(&st->zf_lock);
        st->zf_busy = false;
        if (atomic_load(&seg->zeroed) == from)
            atomic_store(&seg->zeroed, done);
        pthread_cond_broadcast(&st->zf_cond);
        if (rc != GT_OK) {
            /* The writer fills inline and reports what it meets. */
            GT_LOG(DEBUG, "store", "zero fill ahead in %s: %s", seg->path,
                   gt_err_str(rc));
            break;
        }
    }
    pthread_mutex_unlock(&st->zf_lock);
}

static void *zf_main(void *arg)
{
    st_local_t *st = arg;
    pthread_setname_np(pthread_self(), "st-zfill");
    pthread_mutex_lock(&st->zf_lock);
    for (;;) {
        while (!st->zf_kick && !st->zf_stop)
            pthread_cond_wait(&st->zf_cond, &st->zf_lock);
        if (st->zf_stop)
            break;
        st->zf_kick = false;
        pthread_mutex_unlock(&st->zf_lock);
        st_seg_t *seg = st_log_current(st);
        if (seg)
            zf_fill(st, seg);
        st_seg_unref(st, seg);
        pthread_mutex_lock(&st->zf_lock);
    }
    pthread_mutex_unlock(&st->zf_lock);
    return NULL;
}

gt_err_t st_zfill_start(st_local_t *st)
{
    st->zf_stop = st->zf_kick = st->zf_busy = false;
    st->zf_running = false;
    if (st->cfg.flush != ST_FLUSH_SYNC)
        return GT_OK;
    if (pthread_create(&st->zf_thread, NULL, zf_main, st) != 0)
        return GT_ENOMEM;
    st->zf_running = true;
    return GT_OK;
}

void st_zfill_stop(st_local_t *st)
{
    if (!st->zf_running)
        return;
    pthread_mutex_lock(&st->zf_lock);
    st->zf_stop = true;
    pthread_cond_broadcast(&st->zf_cond);
    pthread_mutex_unlock(&st->zf_lock);
    pthread_join(st->zf_thread, NULL);
    st->zf_running = false;
}
