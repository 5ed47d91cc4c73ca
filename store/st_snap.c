/* The table snapshot: consume queue metadata, index and segment list of
 * the durable prefix of the commitlog, so a start loads them instead of
 * scanning the whole log.  Written at a clean close and every
 * SNAP_INTERVAL_MS by the service thread.
 *
 * <dir>/tables.snap (format version 2, little-endian):
 *   u32 magic "GTTB", u32 version, u64 segment size, u32 entries per
 *     consume queue file, u64 end position (the snapshot covers records
 *     below it: published and synced),
 *   u32 segment count, per segment: u64 base, u64 end (file offset after its
 *     last record below the end position), i64 store time of that record,
 *   u32 topic count, per topic: u16 name length + name, u32 queue count,
 *     per queue: u64 first offset, u64 file offset F (entries [first, F)
 *     are in the consume queue files, fdatasynced before this was
 *     written), u64 end offset E (at the end position), u64 bytes, then
 *     E - F entries: u64 position, u32 size, u32 tag hash, i64 store time,
 *     u32 message-group hash,
 *   the index (st_index.c): u32 run count, per run u64 sequence number,
 *     u64 max position; u64 in-memory entry count, per entry u64 hash,
 *     u64 position (bounded: at most a few in-memory tables),
 *   u32 CRC32C of everything before it.
 * Its size depends on the number of queues (and their unflushed tails,
 * under a page each after st_cq_sync), not on the stored count.
 *
 * A start uses it if the segment files on disk are the listed ones (minus
 * any that retention removed from the front, plus any created later), each
 * listed non-last one exactly as long as recorded and the last at least as
 * long.  It then scans the last listed segment from the recorded end and
 * later segments in full, so everything after the snapshot is verified and
 * indexed as usual; entries of removed segments are pruned.  The listed
 * index runs are opened (header and fence table checked) and every other
 * run file is deleted.  Anything else (no file, bad CRC, another version,
 * mismatch, a consume queue file missing, short or failing its CRC at the
 * first or last entry it should hold, a missing or damaged index run, a
 * repair start) falls back to the full scan, which rebuilds the consume
 * queue files and the index runs too; the scan after a loaded snapshot
 * pushes entries from each queue's end offset E on, overwriting what the
 * files hold beyond F.
 * The snapshot never covers data that was not synced, so recovery never
 * cuts below it except in repair mode, which ignores it. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gt_le.h"
#include "gt_log.h"
#include "st_int.h"

#define SNAP_MAGIC 0x42545447u /* "GTTB" */
#define SNAP_VERSION 2u
#define ENTRY_BYTES 28

typedef struct obuf {
    uint8_t *b;
    size_t n, cap;
    bool failed;
} obuf_t;

static void ob_put(obuf_t *o, uint64_t v, int bytes)
{
    if (o->failed)
        return;
    if (o->n + (size_t)bytes > o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 1 << 16;
        uint8_t *nb = realloc(o->b, cap);
        if (!nb) {
            o->failed = true;
            return;
        }
        o->b = nb;
        o->cap = cap;
    }
    gt_le_put(o->b + o->n, v, bytes);
    o->n += (size_t)bytes;
}

/* The snapshot is written as it is serialised, in chunks of SNAP_CHUNK
 * bytes, so it never exists in memory whole (a whole image cost ~44 bytes
 * per retained message on top of the tables: a 1.7x RSS spike).  Between
 * chunks the lock is dropped when `unlock`: everything written describes
 * records below `end`, which do not change; counts are taken before their
 * items and the items are found again by queue offset / index position, so
 * appends meanwhile (new entries, grown arrays, new topics) do not matter.
 * Retention (which drops entries) runs on the service thread, like the
 * periodic snapshot; should entries vanish anyway, the snapshot is
 * abandoned (GT_AGAIN). */
#define SNAP_CHUNK (1u << 20)

typedef struct swriter {
    st_local_t *st;
    bool unlock;
    int fd;
    uint64_t foff;
    uint32_t crc;
    gt_err_t rc;
    obuf_t o;
    const st_index_snap_t *ix; /* the index section, captured at the start */
} swriter_t;

/* Writes what is buffered (lock held on entry and exit). */
static void sw_flush(swriter_t *w)
{
    if (w->rc == GT_OK && w->o.failed)
        w->rc = GT_ENOMEM;
    if (w->rc == GT_OK && w->o.n) {
        w->crc = st_crc32c(w->crc, w->o.b, w->o.n);
        if (w->unlock)
            pthread_mutex_unlock(&w->st->lock);
        w->rc = st_file_pwrite_full(w->st, w->fd, w->o.b, w->o.n, w->foff);
        if (w->unlock)
            pthread_mutex_lock(&w->st->lock);
        w->foff += w->o.n;
    }
    w->o.n = 0;
}

static void sw_put(swriter_t *w, uint64_t v, int bytes)
{
    ob_put(&w->o, v, bytes);
    if (w->o.n >= SNAP_CHUNK)
        sw_flush(w);
}

/* Per queue: first offset, file offset F, end offset E at the end
 * position, bytes below it, the entries [F, E).  Entries are found again
 * by offset after each chunk (the lock may have been dropped). */
static void snap_queue(swriter_t *w, st_topic_rt_t *t, uint32_t q,
                       uint64_t end)
{
    st_cq_t *cq = &t->cq[q];
    uint64_t first = cq->min_off, e_off = st_cq_end(cq), bytes = cq->bytes;
    st_cq_entry_t e;
    while (e_off > first && st_cq_get(t, q, e_off - 1, &e) && e.pos >= end) {
        bytes -= e.size; /* published, not yet synced: positions grow */
        e_off--;
    }
    uint64_t f_off = cq->synced < first ? first : cq->synced;
    if (f_off > e_off)
        f_off = e_off;
    sw_put(w, first, 8);
    sw_put(w, f_off, 8);
    sw_put(w, e_off, 8);
    sw_put(w, bytes, 8);
    for (uint64_t o = f_off; o < e_off && w->rc == GT_OK; o++) {
        if (!st_cq_get(t, q, o, &e)) {
            w->rc = GT_AGAIN;
            break;
        }
        sw_put(w, e.pos, 8);
        sw_put(w, e.size, 4);
        sw_put(w, e.tag_hash, 4);
        sw_put(w, (uint64_t)e.store_ts, 8);
        sw_put(w, e.group_hash, 4);
    }
}

static void snap_tables(swriter_t *w, uint64_t end)
{
    st_local_t *st = w->st;
    size_t nt = st->ntopics;
    sw_put(w, nt, 4);
    for (size_t i = 0; i < nt && w->rc == GT_OK; i++) {
        st_topic_rt_t *t = st->topics[i];
        size_t len = strlen(t->meta.name);
        uint32_t nq = t->nq;
        sw_put(w, len, 2);
        for (size_t k = 0; k < len; k++)
            sw_put(w, (uint8_t)t->meta.name[k], 1);
        sw_put(w, nq, 4);
        for (uint32_t q = 0; q < nq && w->rc == GT_OK; q++)
            snap_queue(w, t, q, end);
    }
    const st_index_snap_t *ix = w->ix;
    sw_put(w, ix->nruns, 4);
    for (size_t i = 0; i < ix->nruns; i++) {
        sw_put(w, ix->runs[2 * i], 8);
        sw_put(w, ix->runs[2 * i + 1], 8);
    }
    sw_put(w, ix->n, 8);
    for (size_t i = 0; i < ix->n && w->rc == GT_OK; i++) {
        sw_put(w, ix->pairs[2 * i], 8);
        sw_put(w, ix->pairs[2 * i + 1], 8);
    }
}

/* Header and segment list of the durable prefix (lock held).  Returns
 * false if there is nothing consistent to save right now. */
static bool snap_header(st_local_t *st, obuf_t *o, uint64_t *end_out)
{
    uint64_t end = atomic_load(&st->synced_pos);
    if (st->published_pos < end)
        end = st->published_pos;
    ob_put(o, SNAP_MAGIC, 4);
    ob_put(o, SNAP_VERSION, 4);
    ob_put(o, st->seg_size, 8);
    ob_put(o, st->cq_chunk, 4);
    ob_put(o, end, 8);
    pthread_mutex_lock(&st->seg_lock);
    size_t n = 0;
    while (n < st->nsegs && st->segs[n]->base < end)
        n++;
    bool ok = n > 0 && end <= st->segs[n - 1]->base + st->seg_size;
    ob_put(o, n, 4);
    for (size_t i = 0; ok && i < n; i++) {
        st_seg_t *sg = st->segs[i];
        uint64_t e = atomic_load(&sg->end);
        if (i + 1 == n)
            e = end - sg->base;
        ob_put(o, sg->base, 8);
        ob_put(o, e, 8);
        ob_put(o, (uint64_t)atomic_load(&sg->last_ts), 8);
    }
    pthread_mutex_unlock(&st->seg_lock);
    *end_out = end;
    return ok && !o->failed;
}

/* Writes the snapshot.  Lock held; released between chunks and around the
 * sync when `unlock` (service thread), kept at close. */
gt_err_t st_snap_write(st_local_t *st, bool unlock)
{
    swriter_t w = {.st = st, .unlock = unlock, .fd = -1};
    char path[4096], tmp[4096];
    uint64_t end;
    snprintf(path, sizeof(path), "%s/tables.snap", st->dir);
    snprintf(tmp, sizeof(tmp), "%s/tables.snap.tmp", st->dir);
    st_index_snap_t ix;
    memset(&ix, 0, sizeof(ix));
    if (st->snap_busy) {
        free(w.o.b);
        return GT_AGAIN;
    }
    st->snap_busy = true; /* one writer of tables.snap.tmp at a time */
    /* consume queue files durable first: the snapshot refers to them */
    gt_err_t crc = st_cq_sync(st, unlock);
    if (crc != GT_OK || !snap_header(st, &w.o, &end)) {
        if (crc != GT_OK)
            GT_LOG(WARN, "store", "table snapshot not written: consume "
                   "queue files not synced (%s)", gt_err_str(crc));
        st->snap_busy = false;
        free(w.o.b);
        return crc != GT_OK ? crc : GT_AGAIN;
    }
    /* the index section as of now (bounded), so the lock may drop */
    gt_err_t irc = st_index_snap_capture(&st->index, end, &ix);
    if (irc != GT_OK) {
        st->snap_busy = false;
        free(w.o.b);
        return irc;
    }
    w.ix = &ix;
    w.fd = st->fops->open(st->fctx, tmp, O_RDWR | O_CREAT | O_TRUNC, 0644);
    w.rc = w.fd < 0 ? st_errno_to_err(w.fd) : GT_OK;
    if (w.rc == GT_OK)
        snap_tables(&w, end);
    sw_flush(&w);
    if (w.rc == GT_OK) {
        ob_put(&w.o, w.crc, 4); /* CRC of everything before it */
        w.crc = 0;
        if (unlock)
            pthread_mutex_unlock(&st->lock);
        w.rc = w.o.failed ? GT_ENOMEM
                          : st_file_pwrite_full(st, w.fd, w.o.b, w.o.n, w.foff);
        if (w.rc == GT_OK && st->fops->fdatasync(st->fctx, w.fd) < 0)
            w.rc = GT_EIO;
        if (unlock)
            pthread_mutex_lock(&st->lock);
    }
    if (w.fd >= 0)
        st->fops->close(st->fctx, w.fd);
    if (w.rc == GT_OK && rename(tmp, path) < 0)
        w.rc = GT_EIO;
    if (w.rc == GT_OK) {
        if (unlock)
            pthread_mutex_unlock(&st->lock);
        w.rc = st_file_sync_dir(st, st->dir);
        if (unlock)
            pthread_mutex_lock(&st->lock);
    }
    if (w.rc != GT_OK) {
        if (w.rc != GT_AGAIN)
            GT_LOG(WARN, "store", "table snapshot not written (%s)",
                   gt_err_str(w.rc));
        unlink(tmp);
    } else {
        if (st->cq_unlink_due)
            st_cq_unlink(st); /* files below the first offsets it recorded */
        st_index_snap_done(&st->index, ix.mark); /* merged-away runs go */
    }
    st->snap_busy = false;
    st_index_snap_release(&ix);
    free(w.o.b);
    return w.rc;
}

gt_err_t st_local_snapshot(st_store_t *s)
{
    st_local_t *st = (st_local_t *)s;
    pthread_mutex_lock(&st->lock);
    gt_err_t rc = st_snap_write(st, true);
    pthread_mutex_unlock(&st->lock);
    return rc;
}

/* ---- load ------------------------------------------------------------------ */
typedef struct ibuf {
    const uint8_t *p, *end;
    bool bad;
} ibuf_t;

static uint64_t ib_get(ibuf_t *i, int bytes)
{
    uint64_t v = 0;
    if (i->bad || i->end - i->p < bytes) {
        i->bad = true;
        return 0;
    }
    for (int k = 0; k < bytes; k++)
        v |= (uint64_t)i->p[k] << (8 * k);
    i->p += bytes;
    return v;
}

/* Matches the snapshot's segment list against the files on disk: the
 * files are the listed segments from some index k on (retention removed
 * those before), then possibly newer ones.  Fills segs[] (one per file,
 * end = where to start scanning; 0 = scan from the header) and returns the
 * number of files the snapshot covers, or -1 on mismatch; *dropped: some
 * listed ones are gone. */
static long segs_match(st_local_t *st, ibuf_t *in, const uint64_t *bases,
                       size_t n, st_snap_seg_t *segs, bool *dropped)
{
    uint32_t ns = (uint32_t)ib_get(in, 4);
    long covered = 0;
    size_t j = 0;
    for (uint32_t i = 0; i < ns && !in->bad; i++) {
        uint64_t base = ib_get(in, 8), end = ib_get(in, 8);
        int64_t ts = (int64_t)ib_get(in, 8);
        if (j == 0 && (n == 0 || base < bases[0])) {
            *dropped = true;
            continue; /* deleted by retention */
        }
        char path[4096];
        struct stat sb;
        snprintf(path, sizeof(path), "%s/%020" PRIu64, st->cl_dir, base);
        bool last = i + 1 == ns;
        if (j >= n || bases[j] != base || stat(path, &sb) != 0 ||
            end < ST_SEG_HDR || end > (uint64_t)sb.st_size ||
            (!last && end != (uint64_t)sb.st_size))
            return -1;
        segs[j++] = (st_snap_seg_t){.base = base, .end = end, .last_ts = ts};
        covered = (long)j;
    }
    if (in->bad || covered == 0)
        return -1;
    for (; j < n; j++)
        segs[j] = (st_snap_seg_t){.base = bases[j], .end = 0};
    return covered;
}

/* Fills consume queues and the index (lock held). */
static gt_err_t load_tables(st_local_t *st, ibuf_t *in, uint64_t min_pos)
{
    uint32_t nt = (uint32_t)ib_get(in, 4);
    for (uint32_t i = 0; i < nt && !in->bad; i++) {
        char name[ST_NAME_MAX + 1];
        size_t len = (size_t)ib_get(in, 2);
        if (len == 0 || len > ST_NAME_MAX || (size_t)(in->end - in->p) < len)
            return GT_ECORRUPT;
        memcpy(name, in->p, len);
        name[len] = 0;
        in->p += len;
        uint32_t nq = (uint32_t)ib_get(in, 4);
        st_topic_rt_t *t = st_topic_vivify(st, name);
        if (nq > 1024 || !t || st_topic_grow(t, nq) != GT_OK)
            return in->bad || nq > 1024 ? GT_ECORRUPT : GT_ENOMEM;
        for (uint32_t q = 0; q < nq && !in->bad; q++) {
            st_cq_t *cq = &t->cq[q];
            uint64_t first = ib_get(in, 8), f_off = ib_get(in, 8);
            uint64_t e_off = ib_get(in, 8), bytes = ib_get(in, 8);
            if (in->bad || first > f_off || f_off > e_off ||
                (uint64_t)(in->end - in->p) / ENTRY_BYTES < e_off - f_off)
                return GT_ECORRUPT;
            st_cq_start(t, q, first);
            cq->end = cq->flushed = cq->synced = cq->assigned = f_off;
            cq->bytes = bytes;
            gt_err_t rc = st_cq_check(t, q, f_off);
            if (rc != GT_OK)
                return rc;
            for (uint64_t k = f_off; k < e_off; k++) {
                st_cq_entry_t e = {.pos = ib_get(in, 8),
                                   .size = (uint32_t)ib_get(in, 4),
                                   .tag_hash = (uint32_t)ib_get(in, 4),
                                   .store_ts = (int64_t)ib_get(in, 8),
                                   .group_hash = (uint32_t)ib_get(in, 4)};
                if (st_cq_push(t, q, &e) != GT_OK)
                    return GT_ENOMEM;
            }
            cq = &t->cq[q];
            cq->assigned = st_cq_end(cq);
        }
    }
    uint32_t nr = (uint32_t)ib_get(in, 4);
    if (in->bad || (uint64_t)(in->end - in->p) / 16 < nr)
        return GT_ECORRUPT;
    uint64_t *runs = malloc(((size_t)nr + 1) * 2 * sizeof(*runs));
    if (!runs)
        return GT_ENOMEM;
    for (uint32_t k = 0; k < nr; k++) {
        runs[k] = ib_get(in, 8);
        runs[nr + k] = ib_get(in, 8);
    }
    gt_err_t rc = st_index_load(&st->index, runs, runs + nr, nr, min_pos);
    free(runs);
    if (rc != GT_OK)
        return rc;
    uint64_t ni = ib_get(in, 8);
    if (in->bad || (uint64_t)(in->end - in->p) / 16 < ni)
        return GT_ECORRUPT;
    for (uint64_t k = 0; k < ni; k++) {
        uint64_t h = ib_get(in, 8), pos = ib_get(in, 8);
        if (pos >= min_pos && st_index_add(&st->index, h, pos) != GT_OK)
            return GT_ENOMEM;
    }
    return in->p == in->end ? GT_OK : GT_ECORRUPT;
}

gt_err_t st_snap_load(st_local_t *st, const uint64_t *bases, size_t n,
                      st_snap_seg_t **out)
{
    char path[4096];
    struct stat sb;
    uint8_t *buf = NULL;
    st_snap_seg_t *segs = NULL;
    gt_err_t rc = GT_ENOTFOUND;
    *out = NULL;
    snprintf(path, sizeof(path), "%s/tables.snap", st->dir);
    if (st->cfg.repair || n == 0)
        return GT_ENOTFOUND;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return GT_ENOTFOUND;
    if (fstat(fd, &sb) != 0 || sb.st_size < 32 ||
        !(buf = malloc((size_t)sb.st_size)) ||
        !(segs = calloc(n, sizeof(*segs))) ||
        st_file_pread_full(st, fd, buf, (size_t)sb.st_size, 0) != GT_OK)
        goto out;
    size_t len = (size_t)sb.st_size - 4;
    ibuf_t in = {buf, buf + len, false}, crc = {buf + len, buf + len + 4, false};
    if (st_crc32c(0, buf, len) != (uint32_t)ib_get(&crc, 4) ||
        ib_get(&in, 4) != SNAP_MAGIC || ib_get(&in, 4) != SNAP_VERSION ||
        ib_get(&in, 8) != st->seg_size || ib_get(&in, 4) != st->cq_chunk)
        goto out;
    (void)ib_get(&in, 8); /* end position: implied by the segment ends */
    bool dropped = false;
    if (segs_match(st, &in, bases, n, segs, &dropped) < 0)
        goto out;
    uint64_t min = bases[0] + ST_SEG_HDR;
    rc = load_tables(st, &in, min);
    if (rc == GT_OK) { /* drop what retention removed since */
        for (size_t i = 0; dropped && i < st->ntopics; i++) /* reads files */
            for (uint32_t q = 0; q < st->topics[i]->nq; q++)
                st_cq_prune(st->topics[i], q, min);
        st_index_prune(&st->index, min);
    } else if (rc == GT_ECORRUPT) {
        GT_LOG(ERROR, "store", "%s: inconsistent table snapshot", path);
    }
out:
    close(fd);
    free(buf);
    if (rc == GT_OK)
        *out = segs;
    else
        free(segs);
    return rc;
}
