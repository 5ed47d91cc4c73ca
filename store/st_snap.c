/* The table snapshot: consume queues, index and segment list written at a
 * clean close, so the next start loads them instead of scanning the whole
 * commitlog.
 *
 * <dir>/tables.snap (format version 1, little-endian):
 *   u32 magic "GTTB", u32 version, u64 segment size,
 *   u32 segment count, per segment: u64 base, u64 end (file offset of the
 *     end of its last record), i64 store time of its last record,
 *   u32 topic count, per topic: u16 name length + name, u32 queue count,
 *     per queue: u64 first offset, u64 bytes, u64 entry count, then per
 *     entry u64 position, u32 size, u32 tag hash, i64 store time,
 *     u32 message-group hash,
 *   u64 index entry count, per entry u64 hash, u64 position,
 *   u32 CRC32C of everything before it.
 *
 * The file is used once: it is removed as soon as it is read, so after a
 * crash the next start scans the commitlog in full.  It is used only if the
 * segment files on disk are exactly those it lists (non-last ones of the
 * listed length, the last one at least as long); the last segment is then
 * still scanned from the recorded end to verify its tail.  Anything else
 * (missing, bad CRC, mismatch) falls back to the full scan. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gt_log.h"
#include "st_int.h"

#define SNAP_MAGIC 0x42545447u /* "GTTB" */
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
    for (int i = 0; i < bytes; i++)
        o->b[o->n++] = (uint8_t)(v >> (8 * i));
}

static void snap_tables(st_local_t *st, obuf_t *o)
{
    ob_put(o, st->ntopics, 4);
    for (size_t i = 0; i < st->ntopics; i++) {
        st_topic_rt_t *t = st->topics[i];
        size_t len = strlen(t->meta.name);
        ob_put(o, len, 2);
        for (size_t k = 0; k < len; k++)
            ob_put(o, (uint8_t)t->meta.name[k], 1);
        ob_put(o, t->nq, 4);
        for (uint32_t q = 0; q < t->nq; q++) {
            st_cq_t *cq = &t->cq[q];
            ob_put(o, cq->min_off, 8);
            ob_put(o, cq->bytes, 8);
            ob_put(o, cq->len - cq->head, 8);
            for (size_t k = cq->head; k < cq->len; k++) {
                ob_put(o, cq->e[k].pos, 8);
                ob_put(o, cq->e[k].size, 4);
                ob_put(o, cq->e[k].tag_hash, 4);
                ob_put(o, (uint64_t)cq->e[k].store_ts, 8);
                ob_put(o, cq->e[k].group_hash, 4);
            }
        }
    }
    ob_put(o, st->index.n, 8);
    for (size_t i = 0; i < st->index.n; i++) {
        ob_put(o, st->index.e[i].h, 8);
        ob_put(o, st->index.e[i].pos, 8);
    }
}

gt_err_t st_snap_write(st_local_t *st)
{
    obuf_t o = {0};
    char path[4096], tmp[4096];
    gt_err_t rc = GT_ENOMEM;
    snprintf(path, sizeof(path), "%s/tables.snap", st->dir);
    snprintf(tmp, sizeof(tmp), "%s/tables.snap.tmp", st->dir);
    ob_put(&o, SNAP_MAGIC, 4);
    ob_put(&o, ST_FORMAT_VERSION, 4);
    ob_put(&o, st->seg_size, 8);
    pthread_mutex_lock(&st->seg_lock);
    ob_put(&o, st->nsegs, 4);
    for (size_t i = 0; i < st->nsegs; i++) {
        ob_put(&o, st->segs[i]->base, 8);
        ob_put(&o, atomic_load(&st->segs[i]->end), 8);
        ob_put(&o, (uint64_t)atomic_load(&st->segs[i]->last_ts), 8);
    }
    pthread_mutex_unlock(&st->seg_lock);
    snap_tables(st, &o);
    ob_put(&o, o.failed ? 0 : st_crc32c(0, o.b, o.n), 4);
    if (o.failed)
        goto out;
    int fd = st->fops->open(st->fctx, tmp, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        rc = st_errno_to_err(fd);
        goto out;
    }
    rc = st_file_pwrite_full(st, fd, o.b, o.n, 0);
    if (rc == GT_OK && st->fops->fdatasync(st->fctx, fd) < 0)
        rc = GT_EIO;
    st->fops->close(st->fctx, fd);
    if (rc == GT_OK && rename(tmp, path) < 0)
        rc = GT_EIO;
    if (rc == GT_OK)
        rc = st_file_sync_dir(st, st->dir);
out:
    if (rc != GT_OK) {
        GT_LOG(WARN, "store", "table snapshot not written (%s); the next "
               "start scans the commitlog", gt_err_str(rc));
        unlink(tmp);
    }
    free(o.b);
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

/* Checks the segment list against the files on disk. */
static bool segs_match(st_local_t *st, ibuf_t *in, const uint64_t *bases,
                       size_t n, st_snap_seg_t *segs)
{
    uint32_t ns = (uint32_t)ib_get(in, 4);
    if (in->bad || ns != n || n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        struct stat sb;
        segs[i].base = ib_get(in, 8);
        segs[i].end = ib_get(in, 8);
        segs[i].last_ts = (int64_t)ib_get(in, 8);
        snprintf(path, sizeof(path), "%s/%020" PRIu64, st->cl_dir, bases[i]);
        if (in->bad || segs[i].base != bases[i] || stat(path, &sb) != 0 ||
            segs[i].end < ST_SEG_HDR || segs[i].end > (uint64_t)sb.st_size ||
            (i + 1 < n && segs[i].end != (uint64_t)sb.st_size))
            return false;
    }
    return true;
}

/* Fills consume queues and the index (lock held). */
static gt_err_t load_tables(st_local_t *st, ibuf_t *in)
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
            cq->min_off = ib_get(in, 8);
            cq->bytes = ib_get(in, 8);
            uint64_t cnt = ib_get(in, 8);
            if ((uint64_t)(in->end - in->p) / ENTRY_BYTES < cnt)
                return GT_ECORRUPT;
            for (uint64_t k = 0; k < cnt; k++) {
                st_cq_entry_t e = {.pos = ib_get(in, 8),
                                   .size = (uint32_t)ib_get(in, 4),
                                   .tag_hash = (uint32_t)ib_get(in, 4),
                                   .store_ts = (int64_t)ib_get(in, 8),
                                   .group_hash = (uint32_t)ib_get(in, 4)};
                if (st_cq_push(cq, &e) != GT_OK)
                    return GT_ENOMEM;
            }
            cq->assigned = st_cq_end(cq);
        }
    }
    uint64_t ni = ib_get(in, 8);
    if (in->bad || (uint64_t)(in->end - in->p) / 16 < ni)
        return GT_ECORRUPT;
    for (uint64_t k = 0; k < ni; k++) {
        uint64_t h = ib_get(in, 8), pos = ib_get(in, 8);
        if (st_index_add(&st->index, h, pos) != GT_OK)
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
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return GT_ENOTFOUND;
    unlink(path); /* one use only: a crash after this start scans in full */
    if (fstat(fd, &sb) != 0 || sb.st_size < 32 ||
        !(buf = malloc((size_t)sb.st_size)) ||
        !(segs = calloc(n ? n : 1, sizeof(*segs))) ||
        st_file_pread_full(st, fd, buf, (size_t)sb.st_size, 0) != GT_OK)
        goto out;
    size_t len = (size_t)sb.st_size - 4;
    ibuf_t in = {buf, buf + len, false}, crc = {buf + len, buf + len + 4, false};
    if (st_crc32c(0, buf, len) != (uint32_t)ib_get(&crc, 4) ||
        ib_get(&in, 4) != SNAP_MAGIC || ib_get(&in, 4) != ST_FORMAT_VERSION ||
        ib_get(&in, 8) != st->seg_size || !segs_match(st, &in, bases, n, segs))
        goto out;
    rc = load_tables(st, &in);
    if (rc == GT_ECORRUPT)
        GT_LOG(ERROR, "store", "%s: inconsistent table snapshot", path);
out:
    close(fd);
    free(buf);
    if (rc == GT_OK)
        *out = segs;
    else
        free(segs);
    return rc;
}
