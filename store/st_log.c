/* The commitlog: segment files shared by all topics, the checkpoint, the
 * recovery scan, reads and retention.
 *
 * Segment files live in <dir>/commitlog/, named by the 20-digit global
 * position of their first byte (a multiple of the segment size).  Each
 * starts with a 64-byte header: u32 magic "GTCL", u32 format version (1),
 * u64 base position, u64 segment size, i64 creation time (ms), u32 CRC32C of
 * the preceding 32 bytes, zero padding.  Records (st_int.h) follow back to
 * back; a record never spans two segments, and a segment's file length is
 * exactly the end of its last record.
 *
 * The checkpoint file holds two 32-byte slots written alternately (u32
 * magic "GTCK", u32 version, u64 sequence, u64 synced position, u32 CRC,
 * u32 pad); the valid slot with the highest sequence wins.  It is written
 * after each fdatasync of the commitlog, so it never claims more than what
 * is on disk.
 *
 * Recovery (st_log_open) scans every record of every segment, verifying
 * CRCs and positions, and rebuilds consume queues and the index -- or loads
 * them from the table snapshot (st_snap.c) and scans only what follows it.  The first
 * bad or partial record ends the valid log.  If it lies at or above the
 * checkpointed synced position it is a torn tail: the file is truncated there
 * and later segments are deleted.  Below the synced position it is
 * corruption: open fails naming the file and offset, unless cfg.repair.
 * Zeros from a record boundary to the end of the file are the zero fill:
 * a clean end, but only in the last segment and at or above the synced
 * position (elsewhere they are lost data). */
#include <dirent.h>
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

#define CK_MAGIC 0x4B435447u /* "GTCK" */

/* ---- segments ----------------------------------------------------------- */
static char *seg_path(const st_local_t *st, uint64_t base)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%020" PRIu64, st->cl_dir, base) < 0)
        return NULL;
    return p;
}

void st_seg_unref(st_local_t *st, st_seg_t *seg)
{
    if (!seg || atomic_fetch_sub(&seg->refs, 1) != 1)
        return;
    st->fops->close(st->fctx, seg->fd);
    if (atomic_load(&seg->unlink_on_free))
        unlink(seg->path);
    free(seg->path);
    free(seg);
}

static gt_err_t segs_push(st_local_t *st, st_seg_t *seg)
{
    pthread_mutex_lock(&st->seg_lock);
    if (st->nsegs == st->segs_cap) {
        size_t cap = st->segs_cap ? st->segs_cap * 2 : 16;
        st_seg_t **n = realloc(st->segs, cap * sizeof(*n));
        if (!n) {
            pthread_mutex_unlock(&st->seg_lock);
            return GT_ENOMEM;
        }
        st->segs = n;
        st->segs_cap = cap;
    }
    st->segs[st->nsegs++] = seg;
    pthread_mutex_unlock(&st->seg_lock);
    return GT_OK;
}

st_seg_t *st_log_current(st_local_t *st)
{
    st_seg_t *s = NULL;
    pthread_mutex_lock(&st->seg_lock);
    if (st->nsegs) {
        s = st->segs[st->nsegs - 1];
        atomic_fetch_add(&s->refs, 1);
    }
    pthread_mutex_unlock(&st->seg_lock);
    return s;
}

size_t st_log_segs_upto(const st_local_t *st, uint64_t pos)
{
    size_t lo = 0, hi = st->nsegs;
    while (lo < hi) { /* segments with base <= pos: [0, lo) */
        size_t mid = lo + (hi - lo) / 2;
        if (st->segs[mid]->base <= pos)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

st_seg_t *st_log_seg_at(st_local_t *st, uint64_t pos)
{
    st_seg_t *s = NULL;
    pthread_mutex_lock(&st->seg_lock);
    size_t lo = st_log_segs_upto(st, pos);
    if (lo > 0 && pos < st->segs[lo - 1]->base + st->seg_size) {
        s = st->segs[lo - 1];
        atomic_fetch_add(&s->refs, 1);
    }
    pthread_mutex_unlock(&st->seg_lock);
    return s;
}

static st_seg_t *seg_new(uint64_t base, int fd, char *path)
{
    st_seg_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->base = base;
    s->fd = fd;
    s->path = path;
    atomic_init(&s->refs, 1);
    return s;
}

/* Creates a segment file with its header, durable (file + directory). */
static gt_err_t seg_create(st_local_t *st, uint64_t base, st_seg_t **out)
{
    gt_err_t rc = GT_ENOMEM;
    char *path = seg_path(st, base);
    int fd = -1;
    uint8_t h[ST_SEG_HDR] = {0};
    if (!path)
        goto out;
    fd = st->fops->open(st->fctx, path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        rc = st_errno_to_err(fd);
        goto out;
    }
    gt_le32_put(h, ST_SEG_MAGIC);
    gt_le32_put(h + 4, ST_FORMAT_VERSION);
    gt_le64_put(h + 8, base);
    gt_le64_put(h + 16, st->seg_size);
    gt_le64_put(h + 24, (uint64_t)st_now_ms());
    gt_le32_put(h + 32, st_crc32c(0, h, 32));
    rc = st_file_pwrite_full(st, fd, h, sizeof(h), 0);
    if (rc == GT_OK) {
        int r = st->fops->fdatasync(st->fctx, fd);
        rc = r < 0 ? st_errno_to_err(r) : st_file_sync_dir(st, st->cl_dir);
    }
    if (rc != GT_OK)
        goto out;
    *out = seg_new(base, fd, path);
    if (!*out) {
        rc = GT_ENOMEM;
        goto out;
    }
    atomic_store(&(*out)->end, ST_SEG_HDR);
    (*out)->zeroed = ST_SEG_HDR;
    return GT_OK;
out:
    if (fd >= 0) {
        st->fops->close(st->fctx, fd);
        unlink(path);
    }
    free(path);
    return rc;
}

gt_err_t st_log_roll(st_local_t *st)
{
    st_seg_t *cur = st_log_current(st), *n = NULL;
    int r = st->fops->ftruncate(st->fctx, cur->fd,
                                (off_t)atomic_load(&cur->end));
    if (r == 0)
        r = st_timed_fdatasync(st, ST_SYNC_COMMITLOG, cur->fd);
    gt_err_t rc = r < 0 ? st_errno_to_err(r) : GT_OK;
    if (rc == GT_OK)
        cur->zeroed = atomic_load(&cur->end);
    uint64_t end = cur->base + atomic_load(&cur->end);
    uint64_t base = cur->base + st->seg_size;
    st_seg_unref(st, cur);
    if (rc != GT_OK)
        return rc;
    atomic_store(&st->synced_pos, end);
    st_log_checkpoint(st, end);
    rc = seg_create(st, base, &n);
    if (rc != GT_OK)
        return rc;
    rc = segs_push(st, n);
    if (rc != GT_OK) {
        atomic_store(&n->unlink_on_free, true);
        st_seg_unref(st, n);
        return rc;
    }
    atomic_store(&st->written_pos, base + ST_SEG_HDR);
    atomic_store(&st->synced_pos, base + ST_SEG_HDR);
    return GT_OK;
}

gt_err_t st_log_zero_fill(st_local_t *st, st_seg_t *seg, uint64_t need)
{
    uint64_t from = atomic_load(&seg->zeroed), done;
    if (need <= from)
        return GT_OK;
    uint64_t target = need + (1u << 20);
    if (target > st->seg_size)
        target = st->seg_size;
    gt_err_t rc = st_log_zero_range(st, seg, from, target, &done);
    atomic_store(&seg->zeroed, done);
    return rc;
}

/* ---- checkpoint ---------------------------------------------------------- */
/* One checkpoint slot (32 bytes). */
static void checkpoint_encode(uint8_t b[32], uint64_t seq, uint64_t synced)
{
    memset(b, 0, 32);
    gt_le32_put(b, CK_MAGIC);
    gt_le32_put(b + 4, ST_FORMAT_VERSION);
    gt_le64_put(b + 8, seq);
    gt_le64_put(b + 16, synced);
    gt_le32_put(b + 24, st_crc32c(0, b, 24));
}

gt_err_t st_checkpoint_write(int fd, uint64_t seq, uint64_t synced)
{
    uint8_t b[32];
    checkpoint_encode(b, seq, synced);
    ssize_t w = pwrite(fd, b, sizeof(b), (off_t)((seq & 1) * 32));
    if (w != (ssize_t)sizeof(b))
        return w < 0 ? st_errno_to_err(-errno) : GT_EIO;
    return GT_OK;
}

void st_log_checkpoint(st_local_t *st, uint64_t synced)
{
    uint8_t b[32];
    pthread_mutex_lock(&st->ck_lock);
    st->ck_seq++;
    checkpoint_encode(b, st->ck_seq, synced);
    if (st->ck_fd >= 0 &&
        st_file_pwrite_full(st, st->ck_fd, b, 32, (st->ck_seq & 1) * 32) !=
            GT_OK)
        GT_LOG(WARN, "store", "checkpoint write failed");
    pthread_mutex_unlock(&st->ck_lock);
}

static uint64_t checkpoint_read(st_local_t *st)
{
    uint8_t b[64];
    uint64_t best_seq = 0, synced = 0;
    memset(b, 0, sizeof(b));
    for (int slot = 0; slot < 2; slot++) {
        const uint8_t *p = b + 32 * slot;
        if (st_file_pread_full(st, st->ck_fd, b + 32 * slot, 32,
                               (uint64_t)slot * 32) != GT_OK)
            continue;
        if (gt_le32_get(p) != CK_MAGIC || gt_le32_get(p + 4) != ST_FORMAT_VERSION ||
            gt_le32_get(p + 24) != st_crc32c(0, p, 24))
            continue;
        if (gt_le64_get(p + 8) >= best_seq) {
            best_seq = gt_le64_get(p + 8);
            synced = gt_le64_get(p + 16);
        }
    }
    st->ck_seq = best_seq;
    return synced;
}

/* ---- recovery ------------------------------------------------------------ */
static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static gt_err_t list_segments(st_local_t *st, uint64_t **out, size_t *n)
{
    DIR *d = opendir(st->cl_dir);
    size_t cap = 0;
    *out = NULL;
    *n = 0;
    if (!d)
        return GT_EIO;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strlen(de->d_name) != 20 ||
            strspn(de->d_name, "0123456789") != 20)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            uint64_t *p = realloc(*out, cap * sizeof(*p));
            if (!p) {
                closedir(d);
                return GT_ENOMEM;
            }
            *out = p;
        }
        (*out)[(*n)++] = strtoull(de->d_name, NULL, 10);
    }
    closedir(d);
    if (*n)
        qsort(*out, *n, sizeof(**out), cmp_u64);
    return GT_OK;
}

/* Rebuilds the consume queue entry of (topic, queue, qoff) for the record
 * m at pos. */
static gt_err_t apply_entry(st_local_t *st, const st_message_t *m,
                            const char *topic, int64_t queue, uint64_t qoff,
                            uint64_t pos, uint32_t len, const char **why)
{
    st_topic_rt_t *t = st_topic_vivify(st, topic);
    if (!t)
        return GT_ENOMEM;
    if (queue < 0 || queue >= 1024) {
        *why = "queue id out of range";
        return GT_ECORRUPT;
    }
    if (st_topic_grow(t, (uint32_t)queue + 1) != GT_OK)
        return GT_ENOMEM;
    st_cq_t *q = &t->cq[queue];
    if (q->end == q->min_off && q->min_off == 0)
        st_cq_start(t, (uint32_t)queue, qoff);
    if (qoff != st_cq_end(q)) {
        *why = "queue offset out of sequence";
        return GT_ECORRUPT;
    }
    /* the timer topic's consume queue is keyed by delivery time */
    bool timer = strcmp(topic, ST_SYS_TIMER) == 0;
    st_cq_entry_t e = {.pos = pos, .size = len, .tag_hash = gt_hash32(m->tag),
                       .store_ts = timer ? m->delivery_ts_ms : m->store_ts_ms,
                       .group_hash = st_group_hash(m->msg_group)};
    if (st_cq_push(t, (uint32_t)queue, &e) != GT_OK)
        return GT_ENOMEM;
    q = &t->cq[queue];
    q->assigned = st_cq_end(q);
    q->bytes += len;
    return GT_OK;
}

/* Rebuilds consume queue and index entries from one record (rec: its
 * bytes): one entry, or one per destination of a multi-queue record. */
static gt_err_t apply_record(st_local_t *st, const uint8_t *rec,
                             const st_message_t *m, uint64_t pos, uint32_t len,
                             const char **why)
{
    st_rdests_t d;
    gt_err_t rc = GT_OK;
    st_record_dests(rec, &d);
    if (d.count == 0)
        rc = apply_entry(st, m, m->topic, m->queue_id, m->queue_offset, pos,
                         len, why);
    for (uint32_t i = 0; i < d.count && rc == GT_OK; i++) {
        char name[ST_NAME_MAX + 1];
        uint32_t queue;
        uint64_t qoff;
        st_rdest_next(&d, i, name, &queue, &qoff);
        rc = apply_entry(st, m, name, queue, qoff, pos, len, why);
    }
    if (rc != GT_OK)
        return rc;
    if (m->msg_id[0] && st_index_add(&st->index, st_hash64('I', m->msg_id), pos))
        return GT_ENOMEM;
    for (uint32_t i = 0; i < m->nkeys; i++)
        if (st_index_add(&st->index, st_hash64('K', m->keys[i]), pos))
            return GT_ENOMEM;
    return GT_OK;
}

typedef struct scan {
    uint8_t *b;
    size_t cap, blen;
    uint64_t bstart;
} scan_t;

/* Scans records of seg from the header to fsize.  Returns GT_OK with
 * *end = fsize, or GT_ECORRUPT with *end = offset of the first bad record and
 * *why set.  Other errors are I/O or memory failures. */
/* True if bytes [off, fsize) of seg are all zero (the zero fill). */
static gt_err_t zeros_to_eof(st_local_t *st, st_seg_t *seg, uint64_t off,
                             uint64_t fsize, scan_t *sc, bool *zero)
{
    *zero = true;
    while (off < fsize && *zero) {
        size_t n = (size_t)(fsize - off < sc->cap ? fsize - off : sc->cap);
        gt_err_t rc = st_file_pread_full(st, seg->fd, sc->b, n, off);
        if (rc != GT_OK)
            return rc;
        for (size_t i = 0; i < n && *zero; i++)
            *zero = sc->b[i] == 0;
        off += n;
    }
    sc->blen = 0; /* buffer reused */
    return GT_OK;
}

static gt_err_t scan_seg(st_local_t *st, st_seg_t *seg, uint64_t fsize,
                         uint64_t from, bool last, uint64_t synced,
                         scan_t *sc, uint64_t *end, const char **why)
{
    uint64_t off = from;
    gt_err_t rc = GT_OK;
    sc->blen = 0;
    sc->bstart = off;
    while (off < fsize) {
        uint64_t rem = fsize - off;
        size_t avail = (size_t)(sc->bstart + sc->blen - off);
        uint32_t rl = 0;
        if (avail < 12 && avail < rem) {
            sc->bstart = off;
            sc->blen = (size_t)(rem < sc->cap ? rem : sc->cap);
            rc = st_file_pread_full(st, seg->fd, sc->b, sc->blen, off);
            if (rc != GT_OK)
                return rc;
            avail = sc->blen;
        }
        const uint8_t *p = sc->b + (off - sc->bstart);
        rc = st_record_peek(p, avail, ST_REC_MAX_HARD, &rl);
        if (rc != GT_OK || rl > rem) {
            *why = rc == GT_AGAIN ? "partial record header"
                   : rc != GT_OK  ? "bad record magic or length"
                                  : "record extends past end of file";
            break;
        }
        if (rl > avail) {
            if (rl > sc->cap) {
                uint8_t *nb = realloc(sc->b, rl);
                if (!nb)
                    return GT_ENOMEM;
                sc->b = nb;
                sc->cap = rl;
            }
            sc->bstart = off;
            sc->blen = (size_t)(rem < sc->cap ? rem : sc->cap);
            rc = st_file_pread_full(st, seg->fd, sc->b, sc->blen, off);
            if (rc != GT_OK)
                return rc;
            p = sc->b;
            avail = sc->blen;
        }
        st_message_t m;
        size_t used;
        rc = st_record_decode(p, avail, ST_REC_MAX_HARD, &m, &used);
        if (rc != GT_OK) {
            *why = "record CRC or structure mismatch";
            break;
        }
        if (m.position != seg->base + off) {
            *why = "record position mismatch";
            rc = GT_ECORRUPT;
            break;
        }
        rc = apply_record(st, p, &m, seg->base + off, (uint32_t)used, why);
        if (rc != GT_OK)
            break;
        atomic_store(&seg->last_ts, m.store_ts_ms);
        off += used;
    }
    *end = off;
    if (off == fsize && rc == GT_OK)
        return GT_OK;
    if (rc != GT_OK && rc != GT_AGAIN && rc != GT_ECORRUPT)
        return rc; /* I/O or memory, not the data */
    if (last && seg->base + off >= synced) {
        bool zero;
        rc = zeros_to_eof(st, seg, off, fsize, sc, &zero);
        if (rc != GT_OK || zero)
            return rc;
    }
    return GT_ECORRUPT;
}

static gt_err_t seg_open_existing(st_local_t *st, uint64_t base,
                                  st_seg_t **out, uint64_t *fsize,
                                  const char **why)
{
    char *path = seg_path(st, base);
    uint8_t h[ST_SEG_HDR];
    struct stat sb;
    if (!path)
        return GT_ENOMEM;
    int fd = st->fops->open(st->fctx, path, O_RDWR, 0);
    if (fd < 0 || fstat(fd, &sb) < 0) {
        GT_LOG(ERROR, "store", "cannot open %s", path);
        if (fd >= 0)
            st->fops->close(st->fctx, fd);
        free(path);
        return GT_EIO;
    }
    *out = seg_new(base, fd, path);
    if (!*out) {
        st->fops->close(st->fctx, fd);
        free(path);
        return GT_ENOMEM;
    }
    *fsize = (uint64_t)sb.st_size;
    if (st_file_pread_full(st, fd, h, sizeof(h), 0) != GT_OK) {
        *why = "short segment header";
        return GT_ECORRUPT;
    }
    bool pad_zero = true;
    for (size_t i = 36; i < ST_SEG_HDR; i++)
        pad_zero = pad_zero && h[i] == 0;
    if (gt_le32_get(h) != ST_SEG_MAGIC || gt_le32_get(h + 32) != st_crc32c(0, h, 32) ||
        gt_le64_get(h + 8) != base || !pad_zero) {
        *why = "bad segment header";
        return GT_ECORRUPT;
    }
    if (gt_le32_get(h + 4) != ST_FORMAT_VERSION) {
        *why = "unsupported segment format version";
        return GT_EUNSUPPORTED;
    }
    st->seg_size = gt_le64_get(h + 16);
    return GT_OK;
}

/* Handles damage at global position pos of segment index i.  Returns
 * GT_OK when the tail was cut (segments after i are deleted). */
static gt_err_t damage(st_local_t *st, st_seg_t *seg, uint64_t off,
                       uint64_t synced, const char *why)
{
    uint64_t pos = seg->base + off;
    if (pos < synced && !st->cfg.repair) {
        GT_LOG(ERROR, "store",
               "commitlog corrupt: %s offset %" PRIu64 ": %s (below synced "
               "position %" PRIu64 "); refusing to start (repair truncates)",
               seg->path, off, why, synced);
        return GT_ECORRUPT;
    }
    GT_LOG(WARN, "store", "commitlog %s offset %" PRIu64 ": %s; %s there",
           seg->path, off, why, pos < synced ? "repair: truncating" :
           "torn tail: truncating");
    int r = st->fops->ftruncate(st->fctx, seg->fd, (off_t)off);
    return r < 0 ? st_errno_to_err(r) : GT_OK;
}

/* Scans (or, for segments a table snapshot covers, trusts) every segment
 * and registers it; cuts a torn tail. */
static gt_err_t recover_segments(st_local_t *st, uint64_t *bases, size_t n,
                                 uint64_t synced, const st_snap_seg_t *ss)
{
    scan_t sc = {.cap = 1 << 20};
    gt_err_t rc = GT_OK;
    size_t i;
    if (!(sc.b = malloc(sc.cap)))
        return GT_ENOMEM;
    for (i = 0; i < n; i++) {
        st_seg_t *seg = NULL;
        uint64_t fsize = 0, end = 0;
        const char *why = NULL;
        rc = seg_open_existing(st, bases[i], &seg, &fsize, &why);
        bool covered = ss && ss[i].end, last_cov = covered &&
                       (i + 1 == n || !ss[i + 1].end);
        uint64_t from = covered ? ss[i].end : ST_SEG_HDR;
        if (rc == GT_OK && covered)
            atomic_store(&seg->last_ts, ss[i].last_ts);
        if (rc == GT_OK && covered && !last_cov)
            end = fsize; /* covered by the snapshot, same length */
        else if (rc == GT_OK)
            rc = scan_seg(st, seg, fsize, from, i + 1 == n, synced, &sc, &end,
                          &why);
        else if (rc == GT_ECORRUPT)
            end = 0;
        if (rc == GT_ECORRUPT && end == 0) {
            /* header damaged: the whole file goes (or open fails) */
            rc = damage(st, seg, 0, synced, why);
            if (rc == GT_OK)
                atomic_store(&seg->unlink_on_free, true);
            st_seg_unref(st, seg);
            break;
        }
        bool cut = rc == GT_ECORRUPT;
        if (cut)
            rc = damage(st, seg, end, synced, why);
        if (rc != GT_OK) {
            st_seg_unref(st, seg);
            break;
        }
        atomic_store(&seg->end, end);
        seg->zeroed = cut ? end : fsize; /* the last one may end in zeros */
        if ((rc = segs_push(st, seg)) != GT_OK) {
            st_seg_unref(st, seg);
            break;
        }
        if (cut) {
            i++;
            break;
        }
    }
    for (size_t j = i; rc == GT_OK && j < n; j++) {
        char *p = seg_path(st, bases[j]);
        GT_LOG(WARN, "store", "removing segment %s after truncated tail",
               p ? p : "?");
        if (p)
            unlink(p);
        free(p);
    }
    free(sc.b);
    return rc;
}

/* Forgets consume queues and the index (a bad snapshot was half loaded). */
static void tables_reset(st_local_t *st)
{
    for (size_t i = 0; i < st->ntopics; i++)
        for (uint32_t q = 0; q < st->topics[i]->nq; q++)
            st_cq_free(&st->topics[i]->cq[q]);
    st_index_reset(&st->index);
}

gt_err_t st_log_open(st_local_t *st)
{
    uint64_t *bases = NULL;
    size_t n = 0;
    char *ck = NULL;
    gt_err_t rc;
    if ((mkdir(st->cl_dir, 0755) < 0 && errno != EEXIST) ||
        (mkdir(st->cq_dir, 0755) < 0 && errno != EEXIST))
        return GT_EIO;
    if (asprintf(&ck, "%s/checkpoint", st->dir) < 0)
        return GT_ENOMEM;
    st->ck_fd = st->fops->open(st->fctx, ck, O_RDWR | O_CREAT, 0644);
    free(ck);
    if (st->ck_fd < 0)
        return st_errno_to_err(st->ck_fd);
    uint64_t synced = checkpoint_read(st);
    st_snap_seg_t *ss = NULL;
    rc = list_segments(st, &bases, &n);
    if (rc == GT_OK && n) {
        gt_err_t lr = st_snap_load(st, bases, n, &ss);
        if (lr == GT_ECORRUPT)
            tables_reset(st);
        else if (lr != GT_OK && lr != GT_ENOTFOUND)
            rc = lr;
        if (ss)
            GT_LOG(INFO, "store", "loaded the table snapshot; scanning the "
                   "commitlog after it");
    }
    if (rc == GT_OK && !ss) { /* full scan: consume queue files and index
                                 runs are rebuilt too */
        st_index_reset(&st->index);
        rc = st_cq_wipe(st);
    }
    if (rc == GT_OK)
        rc = recover_segments(st, bases, n, synced, ss);
    free(ss);
    free(bases);
    if (rc != GT_OK)
        return rc;
    if (st->nsegs == 0) {
        st_seg_t *s = NULL;
        rc = seg_create(st, 0, &s);
        if (rc == GT_OK && (rc = segs_push(st, s)) != GT_OK)
            st_seg_unref(st, s);
        if (rc != GT_OK)
            return rc;
    }
    st_seg_t *cur = st->segs[st->nsegs - 1];
    /* What survived a crash in the page cache is made durable now. */
    int r = st->fops->fdatasync(st->fctx, cur->fd);
    if (r < 0)
        return st_errno_to_err(r);
    uint64_t end = cur->base + atomic_load(&cur->end);
    atomic_store(&st->written_pos, end);
    atomic_store(&st->synced_pos, end);
    st->published_pos = end;
    st->min_pos = st->segs[0]->base + ST_SEG_HDR;
    st_log_checkpoint(st, end);
    return GT_OK;
}

void st_log_close(st_local_t *st)
{
    pthread_mutex_lock(&st->seg_lock);
    size_t n = st->nsegs;
    st_seg_t **segs = st->segs;
    st->segs = NULL;
    st->nsegs = st->segs_cap = 0;
    pthread_mutex_unlock(&st->seg_lock);
    for (size_t i = 0; i < n; i++)
        st_seg_unref(st, segs[i]);
    free(segs);
    if (st->ck_fd >= 0)
        st->fops->close(st->fctx, st->ck_fd);
    st->ck_fd = -1;
}

/* ---- reads and retention ----------------------------------------------------- */
gt_err_t st_log_read(st_local_t *st, uint64_t pos, uint32_t size,
                     uint8_t **buf, st_message_t *msg)
{
    st_seg_t *seg = st_log_seg_at(st, pos);
    size_t used;
    *buf = NULL;
    if (!seg)
        return GT_ENOTFOUND;
    uint8_t *b = malloc(size);
    gt_err_t rc = b ? st_file_pread_full(st, seg->fd, b, size, pos - seg->base)
                    : GT_ENOMEM;
    st_seg_unref(st, seg);
    if (rc == GT_OK)
        rc = st_record_decode(b, size, size, msg, &used);
    if (rc == GT_OK && msg->position != pos)
        rc = GT_ECORRUPT;
    if (rc != GT_OK) {
        if (rc == GT_AGAIN)
            rc = GT_ECORRUPT;
        GT_LOG(ERROR, "store", "read at position %" PRIu64 " failed: %s", pos,
               gt_err_str(rc));
        free(b);
        return rc;
    }
    *buf = b;
    return GT_OK;
}

uint64_t st_log_retain(st_local_t *st, int64_t cutoff_ms, uint64_t keep_pos)
{
    pthread_mutex_lock(&st->seg_lock);
    size_t k = 0;
    while (k + 1 < st->nsegs && atomic_load(&st->segs[k]->last_ts) < cutoff_ms &&
           st->segs[k + 1]->base <= keep_pos)
        k++;
    st_seg_t **gone = NULL;
    if (k && (gone = malloc(k * sizeof(*gone)))) {
        memcpy(gone, st->segs, k * sizeof(*gone));
        memmove(st->segs, st->segs + k, (st->nsegs - k) * sizeof(*gone));
        st->nsegs -= k;
    } else {
        k = 0;
    }
    uint64_t min = st->segs[0]->base + ST_SEG_HDR;
    pthread_mutex_unlock(&st->seg_lock);
    for (size_t i = 0; i < k; i++) {
        GT_LOG(INFO, "store", "retention: deleting %s", gone[i]->path);
        atomic_store(&gone[i]->unlink_on_free, true);
        st_seg_unref(st, gone[i]);
    }
    free(gone);
    return min;
}
