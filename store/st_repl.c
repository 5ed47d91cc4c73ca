/* st_repl: the local engine's hooks for replication (store-server/ss_repl*.c;
 * docs/store-protocol.md, Replication): the positions a leader may ship,
 * and checks of what a follower received, in the formats of st_log.c /
 * st_state.c. */
#include <string.h>

#include "gt_le.h"
#include "st_int.h"

void st_local_on_written(st_store_t *local, st_written_fn fn, void *arg)
{
    st_local_t *st = (st_local_t *)local;

    atomic_store(&st->written_arg, arg);
    atomic_store(&st->written_fn, fn);
}

void st_local_repl_marks(st_store_t *local, st_repl_marks_t *out)
{
    st_local_t *st = (st_local_t *)local;

    out->cl_synced = atomic_load(&st->synced_pos);
    out->cl_written = atomic_load(&st->written_pos);
    pthread_mutex_lock(&st->lock);
    out->state_gen = st->state_fd_gen;
    out->state_ino = st->state_ino;
    out->state_end = st->state_end;
    pthread_mutex_unlock(&st->lock);
}

gt_err_t st_local_repl_seg(st_store_t *local, uint64_t pos,
                           st_repl_seg_t *out)
{
    st_local_t *st = (st_local_t *)local;

    memset(out, 0, sizeof(*out));
    out->fd = -1;
    pthread_mutex_lock(&st->seg_lock);
    if (st->nsegs == 0) {
        pthread_mutex_unlock(&st->seg_lock);
        return GT_ENOTFOUND;
    }
    size_t lo = st_log_segs_upto(st, pos);
    size_t i = lo > 0 ? lo - 1 : 0;
    st_seg_t *s = st->segs[i];
    atomic_fetch_add(&s->refs, 1);
    out->base = s->base;
    out->end = atomic_load(&s->end);
    out->next = i + 1 < st->nsegs ? st->segs[i + 1]->base : UINT64_MAX;
    out->first = st->segs[0]->base;
    out->fd = s->fd;
    out->ref = s;
    pthread_mutex_unlock(&st->seg_lock);
    return GT_OK;
}

void st_local_repl_seg_done(st_store_t *local, st_repl_seg_t *seg)
{
    if (seg->ref != NULL)
        st_seg_unref((st_local_t *)local, seg->ref);
    seg->ref = NULL;
    seg->fd = -1;
}

gt_err_t st_record_check(const uint8_t *buf, size_t len, size_t *used)
{
    st_message_t m;
    return st_record_decode(buf, len, ST_REC_MAX_HARD, &m, used);
}

gt_err_t st_seg_hdr_check(const uint8_t *buf, size_t len, uint64_t *base)
{
    if (len < ST_SEG_HDR)
        return GT_AGAIN;
    if (gt_le32_get(buf) != ST_SEG_MAGIC ||
        gt_le32_get(buf + 4) != ST_FORMAT_VERSION ||
        gt_le32_get(buf + 32) != st_crc32c(0, buf, 32))
        return GT_ECORRUPT;
    for (size_t i = 36; i < ST_SEG_HDR; i++)
        if (buf[i] != 0)
            return GT_ECORRUPT;
    *base = gt_le64_get(buf + 8);
    return GT_OK;
}
