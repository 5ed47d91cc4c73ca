/* Consume queues in files, as RocketMQ's store keeps them: fixed-size
 * entries in chunk files, so memory does not grow with the stored count.
 *
 * Layout: <dir>/cq/<topic>/<queue>/<first offset, 20 digits>, each file
 * a 32-byte header (u32 magic "GTCQ", u32 version 1, u64 first offset,
 * u32 entries per file, u32 entry size 32, u32 reserved, u32 CRC32C of
 * the 28 bytes before) and then st->cq_chunk (cfg.cq_file_entries, 65536)
 * entries of ST_CQ_ENTRY (32) bytes for the offsets
 * [first, first + cq_chunk): u64 commitlog position, u32 size,
 * u32 tag hash, i64 store time (delivery time for %SYS%TIMER), u32
 * message-group hash, u32 CRC32C of the entry's queue offset (u64 LE) and
 * the 28 bytes before (a zeroed, truncated or misplaced entry never
 * passes).  A topic directory is the topic name, prefixed with '+' when it
 * starts with '.' (no valid name starts with '+').
 *
 * Writes: a queue's newest entries [flushed, end) are in its tail buffer,
 * allocated on the first push (an idle queue costs its header only) and
 * grown by doubling; when it holds st->cq_tail (cfg.cq_tail_entries,
 * 1024) entries they are pwritten to their chunk file(s) in one go.  No
 * fsync there: the files are derived data.  A table snapshot (st_snap.c) first flushes tails of
 * a page or more and fdatasyncs what was written since the previous one
 * (st_cq_sync), then records per queue its first offset, the offset below
 * which the files are durable, and the remaining entries themselves.
 *
 * Reads below `flushed` go through one cache per store: ST_CQ_CACHE_PAGES
 * (1024) pages of ST_CQ_PAGE (4 KiB, 128 entries) keyed by (topic, queue,
 * page), LRU, filled with pread; a flush writes through to cached pages.
 * st_cq_get copies the entry out (cached pages move).
 *
 * Retention (st_cq_prune) moves a queue's first offset past entries whose
 * record was deleted; their chunk files are unlinked after the next table
 * snapshot (st_cq_unlink), so a crash before it still finds the files the
 * previous snapshot refers to.  A start that cannot use a snapshot removes
 * the directory and rebuilds it from the commitlog (st_cq_wipe).
 *
 * Everything here runs under st->lock, like the tables it belongs to. */
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

#define CQ_MAGIC 0x51435447u /* "GTCQ" */
#define CQ_VERSION 1u
#define PER_PAGE (ST_CQ_PAGE / ST_CQ_ENTRY)
#define IO_ENTRIES 256 /* entries per pwrite / bulk pread buffer (8 KiB) */

typedef struct cpage {
    st_topic_rt_t *t;   /* NULL: free */
    uint32_t q;
    uint64_t pno;       /* queue offset / PER_PAGE */
    uint32_t prev, next; /* LRU list (index + 1; 0 = none), prev = newer */
    uint32_t hnext;     /* hash chain (index + 1) */
    uint32_t n;         /* entries read from the file */
    uint8_t b[ST_CQ_PAGE];
} cpage_t;

struct st_cqcache {
    cpage_t *p;         /* ST_CQ_CACHE_PAGES, touched as used */
    uint32_t used;      /* pages handed out so far */
    uint32_t bucket[2 * ST_CQ_CACHE_PAGES]; /* index + 1 */
    uint32_t mru, lru;  /* index + 1 */
    uint64_t hits, misses;
};

/* ---- entry codec ---------------------------------------------------------- */
static uint32_t ent_crc(const uint8_t *b, uint64_t off)
{
    uint8_t o[8];
    gt_le_put(o, off, 8);
    return st_crc32c(st_crc32c(0, o, 8), b, 28);
}

static void ent_encode(uint8_t *b, uint64_t off, const st_cq_entry_t *e)
{
    gt_le_put(b, e->pos, 8);
    gt_le_put(b + 8, e->size, 4);
    gt_le_put(b + 12, e->tag_hash, 4);
    gt_le_put(b + 16, (uint64_t)e->store_ts, 8);
    gt_le_put(b + 24, e->group_hash, 4);
    gt_le_put(b + 28, ent_crc(b, off), 4);
}

static bool ent_decode(const uint8_t *b, uint64_t off, st_cq_entry_t *e)
{
    if ((uint32_t)gt_le_get(b + 28, 4) != ent_crc(b, off))
        return false;
    e->pos = gt_le_get(b, 8);
    e->size = (uint32_t)gt_le_get(b + 8, 4);
    e->tag_hash = (uint32_t)gt_le_get(b + 12, 4);
    e->store_ts = (int64_t)gt_le_get(b + 16, 8);
    e->group_hash = (uint32_t)gt_le_get(b + 24, 4);
    return true;
}

/* File header, one entry slot: u32 magic "GTCQ", u32 version, u64 first
 * offset, u32 entries per file, u32 entry size, u32 reserved (0), u32
 * CRC32C of the 28 bytes before it. */
static void hdr_encode(uint8_t *b, uint64_t first, uint32_t per_file)
{
    memset(b, 0, ST_CQ_ENTRY);
    gt_le_put(b, CQ_MAGIC, 4);
    gt_le_put(b + 4, CQ_VERSION, 4);
    gt_le_put(b + 8, first, 8);
    gt_le_put(b + 16, per_file, 4);
    gt_le_put(b + 20, ST_CQ_ENTRY, 4);
    gt_le_put(b + 28, st_crc32c(0, b, 28), 4);
}

static bool hdr_ok(const uint8_t *b, uint64_t first, uint32_t per_file)
{
    uint8_t want[ST_CQ_ENTRY];
    hdr_encode(want, first, per_file);
    return memcmp(b, want, ST_CQ_ENTRY) == 0;
}

/* ---- paths ------------------------------------------------------------------ */
static uint64_t chunk_of(const st_local_t *st, uint64_t off)
{
    return off - off % st->cq_chunk;
}

/* Byte offset of entry off in the file of chunk c (after the header). */
static uint64_t file_off(uint64_t c, uint64_t off)
{
    return (off - c + 1) * ST_CQ_ENTRY;
}

/* <cq>/<topic>/<q>[/<chunk>]; chunk UINT64_MAX: the queue directory;
 * q UINT32_MAX: the topic directory. */
static void cq_path(const st_topic_rt_t *t, uint32_t q, uint64_t chunk,
                    char *buf, size_t cap)
{
    const char *n = t->meta.name, *pre = n[0] == '.' ? "+" : "";
    if (q == UINT32_MAX)
        snprintf(buf, cap, "%s/%s%s", t->st->cq_dir, pre, n);
    else if (chunk == UINT64_MAX)
        snprintf(buf, cap, "%s/%s%s/%u", t->st->cq_dir, pre, n, q);
    else
        snprintf(buf, cap, "%s/%s%s/%u/%020" PRIu64, t->st->cq_dir, pre, n, q,
                 chunk);
}

static int open_chunk(st_topic_rt_t *t, uint32_t q, uint64_t chunk, int flags)
{
    char p[4096];
    cq_path(t, q, chunk, p, sizeof(p));
    int fd = open(p, flags | O_CLOEXEC, 0644);
    if (fd < 0 && errno == ENOENT && (flags & O_CREAT)) {
        char d[4096];
        cq_path(t, UINT32_MAX, 0, d, sizeof(d));
        (void)mkdir(t->st->cq_dir, 0755);
        (void)mkdir(d, 0755);
        cq_path(t, q, UINT64_MAX, d, sizeof(d));
        (void)mkdir(d, 0755);
        t->cq[q].fresh = true;
        fd = open(p, flags | O_CLOEXEC, 0644);
    }
    return fd;
}

static bool pread_full(int fd, void *buf, size_t n, uint64_t off, size_t *got)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, (uint8_t *)buf + done, n - done,
                          (off_t)(off + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return false;
        if (r == 0)
            break;
        done += (size_t)r;
    }
    *got = done;
    return true;
}

static bool pwrite_full(int fd, const void *buf, size_t n, uint64_t off)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = pwrite(fd, (const uint8_t *)buf + done, n - done,
                           (off_t)(off + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        done += (size_t)r;
    }
    return true;
}

/* ---- page cache ------------------------------------------------------------- */
static uint32_t page_hash(const st_topic_rt_t *t, uint32_t q, uint64_t pno)
{
    uint64_t h = ((uint64_t)(uintptr_t)t * 0x9E3779B97F4A7C15ull) ^
                 ((uint64_t)q << 40) ^ (pno * 0xC2B2AE3D27D4EB4Full);
    h ^= h >> 29;
    return (uint32_t)(h & (2 * ST_CQ_CACHE_PAGES - 1));
}

static void lru_unlink(struct st_cqcache *c, uint32_t i)
{
    cpage_t *p = &c->p[i - 1];
    if (p->prev)
        c->p[p->prev - 1].next = p->next;
    else
        c->mru = p->next;
    if (p->next)
        c->p[p->next - 1].prev = p->prev;
    else
        c->lru = p->prev;
    p->prev = p->next = 0;
}

static void lru_front(struct st_cqcache *c, uint32_t i)
{
    cpage_t *p = &c->p[i - 1];
    p->prev = 0;
    p->next = c->mru;
    if (c->mru)
        c->p[c->mru - 1].prev = i;
    c->mru = i;
    if (!c->lru)
        c->lru = i;
}

static uint32_t page_find(struct st_cqcache *c, const st_topic_rt_t *t,
                          uint32_t q, uint64_t pno)
{
    for (uint32_t i = c->bucket[page_hash(t, q, pno)]; i; i = c->p[i - 1].hnext)
        if (c->p[i - 1].t == t && c->p[i - 1].q == q && c->p[i - 1].pno == pno)
            return i;
    return 0;
}

static void page_unhash(struct st_cqcache *c, uint32_t i)
{
    cpage_t *p = &c->p[i - 1];
    if (!p->t)
        return;
    uint32_t *pp = &c->bucket[page_hash(p->t, p->q, p->pno)];
    while (*pp && *pp != i)
        pp = &c->p[*pp - 1].hnext;
    if (*pp)
        *pp = p->hnext;
    p->t = NULL;
}

static struct st_cqcache *cache_get(st_local_t *st)
{
    if (!st->cqc) {
        struct st_cqcache *c = calloc(1, sizeof(*c));
        if (!c || !(c->p = calloc(ST_CQ_CACHE_PAGES, sizeof(cpage_t)))) {
            free(c);
            return NULL;
        }
        st->cqc = c;
    }
    return st->cqc;
}

/* The page holding entry off of queue q, read on a miss; NULL on failure. */
static const uint8_t *cache_entry(st_topic_rt_t *t, uint32_t q, uint64_t off)
{
    struct st_cqcache *c = cache_get(t->st);
    uint64_t pno = off / PER_PAGE;
    uint32_t idx = (uint32_t)(off % PER_PAGE);
    if (!c)
        return NULL;
    uint32_t i = page_find(c, t, q, pno);
    if (i && c->p[i - 1].n > idx) {
        c->hits++;
        lru_unlink(c, i);
        lru_front(c, i);
        return c->p[i - 1].b + idx * ST_CQ_ENTRY;
    }
    c->misses++;
    if (!i) {
        if (c->used < ST_CQ_CACHE_PAGES) {
            i = ++c->used;
        } else {
            i = c->lru;
            lru_unlink(c, i);
            page_unhash(c, i);
        }
        cpage_t *p = &c->p[i - 1];
        *p = (cpage_t){.t = t, .q = q, .pno = pno};
        uint32_t h = page_hash(t, q, pno);
        p->hnext = c->bucket[h];
        c->bucket[h] = i;
    } else {
        lru_unlink(c, i);
    }
    lru_front(c, i);
    cpage_t *p = &c->p[i - 1];
    uint64_t first = pno * PER_PAGE, chunk = chunk_of(t->st, first);
    int fd = open_chunk(t, q, chunk, O_RDONLY);
    size_t got = 0;
    bool ok = fd >= 0 && pread_full(fd, p->b, ST_CQ_PAGE,
                                    file_off(chunk, first), &got);
    if (fd >= 0)
        close(fd);
    p->n = ok ? (uint32_t)(got / ST_CQ_ENTRY) : 0;
    return p->n > idx ? p->b + idx * ST_CQ_ENTRY : NULL;
}

/* A flush wrote n encoded entries from off: cached pages follow. */
static void cache_update(st_topic_rt_t *t, uint32_t q, uint64_t off,
                         const uint8_t *b, size_t n)
{
    struct st_cqcache *c = t->st->cqc;
    if (!c)
        return;
    while (n) {
        uint64_t pno = off / PER_PAGE;
        uint32_t idx = (uint32_t)(off % PER_PAGE);
        size_t k = PER_PAGE - idx < n ? PER_PAGE - idx : n;
        uint32_t i = page_find(c, t, q, pno);
        if (i) {
            cpage_t *p = &c->p[i - 1];
            if (p->n >= idx) { /* contiguous with what it holds */
                memcpy(p->b + idx * ST_CQ_ENTRY, b, k * ST_CQ_ENTRY);
                if (p->n < idx + k)
                    p->n = idx + (uint32_t)k;
            } else {
                p->n = 0; /* a hole: read again when needed */
            }
        }
        off += k;
        b += k * ST_CQ_ENTRY;
        n -= k;
    }
}

void st_cq_cache_free(st_local_t *st)
{
    if (st->cqc)
        free(st->cqc->p);
    free(st->cqc);
    st->cqc = NULL;
}

void st_cq_cache_stats(st_store_t *s, uint64_t *hits, uint64_t *misses)
{
    st_local_t *st = (st_local_t *)s;
    pthread_mutex_lock(&st->lock);
    *hits = st->cqc ? st->cqc->hits : 0;
    *misses = st->cqc ? st->cqc->misses : 0;
    pthread_mutex_unlock(&st->lock);
}

/* ---- writes ------------------------------------------------------------------ */
/* Writes tail entries [flushed, end) to their chunk files. */
static gt_err_t cq_flush(st_topic_rt_t *t, uint32_t qi)
{
    st_cq_t *q = &t->cq[qi];
    uint8_t buf[IO_ENTRIES * ST_CQ_ENTRY];
    uint64_t o = q->flushed;
    gt_err_t rc = GT_OK;
    while (o < q->end && rc == GT_OK) {
        uint64_t chunk = chunk_of(t->st, o), stop = chunk + t->st->cq_chunk;
        struct stat sb;
        if (stop > q->end)
            stop = q->end;
        int fd = open_chunk(t, qi, chunk, O_WRONLY | O_CREAT);
        if (fd < 0) {
            rc = st_errno_to_err(-errno);
            break;
        }
        if (fstat(fd, &sb) == 0 && sb.st_size < (off_t)ST_CQ_ENTRY) {
            hdr_encode(buf, chunk, t->st->cq_chunk); /* a new file */
            if (!pwrite_full(fd, buf, ST_CQ_ENTRY, 0))
                rc = errno == ENOSPC ? GT_ENOSPC : GT_EIO;
        }
        while (o < stop && rc == GT_OK) {
            size_t k = stop - o < IO_ENTRIES ? (size_t)(stop - o) : IO_ENTRIES;
            for (size_t i = 0; i < k; i++)
                ent_encode(buf + i * ST_CQ_ENTRY, o + i,
                           &q->tail[o + i - q->flushed]);
            if (!pwrite_full(fd, buf, k * ST_CQ_ENTRY, file_off(chunk, o))) {
                rc = errno == ENOSPC ? GT_ENOSPC : GT_EIO;
                break;
            }
            cache_update(t, qi, o, buf, k);
            o += k;
        }
        close(fd);
    }
    if (o > q->flushed) {
        memmove(q->tail, q->tail + (o - q->flushed),
                (size_t)(q->end - o) * sizeof(*q->tail));
        q->flushed = o;
    }
    return rc;
}

gt_err_t st_cq_push(st_topic_rt_t *t, uint32_t qi, const st_cq_entry_t *e)
{
    st_cq_t *q = &t->cq[qi];
    size_t len = (size_t)(q->end - q->flushed);
    gt_err_t rc = len >= t->st->cq_tail ? cq_flush(t, qi) : GT_OK;
    if (rc != GT_OK && !t->st->cq_warned) {
        t->st->cq_warned = true;
        GT_LOG(WARN, "store", "consume queue %s/%u: cannot write its file "
               "(%s); entries stay in memory until it works", t->meta.name,
               qi, gt_err_str(rc));
    }
    len = (size_t)(q->end - q->flushed);
    if (len == q->tail_cap) {
        size_t cap = q->tail_cap ? (size_t)q->tail_cap * 2 : 2;
        st_cq_entry_t *n = cap <= UINT32_MAX
                               ? realloc(q->tail, cap * sizeof(*n)) : NULL;
        if (!n)
            return GT_ENOMEM;
        q->tail = n;
        q->tail_cap = (uint32_t)cap;
    }
    q->tail[len] = *e;
    q->end++;
    return GT_OK;
}

void st_cq_start(st_topic_rt_t *t, uint32_t qi, uint64_t off)
{
    st_cq_t *q = &t->cq[qi];
    q->min_off = q->end = q->flushed = q->synced = q->assigned = off;
    q->files_from = chunk_of(t->st, off);
}

/* ---- reads ------------------------------------------------------------------- */
const st_cq_entry_t *st_cq_get(st_topic_rt_t *t, uint32_t qi, uint64_t off,
                               st_cq_entry_t *out)
{
    const st_cq_t *q = &t->cq[qi];
    if (off < q->min_off || off >= q->end)
        return NULL;
    if (off >= q->flushed) {
        *out = q->tail[off - q->flushed];
        return out;
    }
    const uint8_t *b = cache_entry(t, qi, off);
    if (b && ent_decode(b, off, out))
        return out;
    int64_t now = st_mono_ms();
    if (now - t->st->cq_logged_ms >= 1000) { /* one line a second at most */
        t->st->cq_logged_ms = now;
        GT_LOG(ERROR, "store", "consume queue %s/%u: entry %" PRIu64 " is %s",
               t->meta.name, qi, off, b ? "corrupt (CRC)" : "unreadable");
    }
    return NULL;
}

/* ---- retention ----------------------------------------------------------------- */
void st_cq_prune(st_topic_rt_t *t, uint32_t qi, uint64_t min_pos)
{
    st_cq_t *q = &t->cq[qi];
    uint8_t buf[IO_ENTRIES * ST_CQ_ENTRY];
    uint64_t o = q->min_off;
    bool done = false;
    while (o < q->flushed && !done) { /* from the files, past the cache */
        uint64_t chunk = chunk_of(t->st, o), lim = chunk + t->st->cq_chunk;
        if (lim > q->flushed)
            lim = q->flushed;
        int fd = open_chunk(t, qi, chunk, O_RDONLY);
        done = fd < 0;
        while (!done && o < lim) {
            size_t k = lim - o < IO_ENTRIES ? (size_t)(lim - o) : IO_ENTRIES;
            size_t got = 0, m;
            if (!pread_full(fd, buf, k * ST_CQ_ENTRY, file_off(chunk, o),
                            &got))
                got = 0;
            m = got / ST_CQ_ENTRY;
            done = m < k;
            for (size_t i = 0; i < m; i++) {
                st_cq_entry_t e;
                if (!ent_decode(buf + i * ST_CQ_ENTRY, o, &e) ||
                    e.pos >= min_pos) {
                    done = true;
                    break;
                }
                q->bytes -= e.size;
                o++;
            }
        }
        if (fd >= 0)
            close(fd);
    }
    if (o < q->flushed) {
        st_cq_entry_t e; /* stopped at a live entry, or an unreadable one */
        if (!st_cq_get(t, qi, o, &e))
            GT_LOG(ERROR, "store", "consume queue %s/%u: retention stops at "
                   "unreadable entry %" PRIu64, t->meta.name, qi, o);
    } else {
        while (o < q->end && q->tail[o - q->flushed].pos < min_pos)
            q->bytes -= q->tail[o++ - q->flushed].size;
        if (o > q->flushed) {
            memmove(q->tail, q->tail + (o - q->flushed),
                    (size_t)(q->end - o) * sizeof(*q->tail));
            q->flushed = o;
            if (q->synced < o)
                q->synced = o;
        }
    }
    q->min_off = o;
    if (chunk_of(t->st, o) > q->files_from)
        t->st->cq_unlink_due = true;
}

void st_cq_unlink(st_local_t *st)
{
    char p[4096];
    st->cq_unlink_due = false;
    for (size_t i = 0; i < st->ntopics; i++) {
        st_topic_rt_t *t = st->topics[i];
        for (uint32_t q = 0; q < t->nq; q++) {
            st_cq_t *cq = &t->cq[q];
            uint64_t lim = chunk_of(st, cq->min_off);
            for (; cq->files_from < lim; cq->files_from += st->cq_chunk) {
                cq_path(t, q, cq->files_from, p, sizeof(p));
                if (unlink(p) == 0)
                    GT_LOG(DEBUG, "store", "retention: deleting %s", p);
            }
        }
    }
}

/* ---- snapshots ---------------------------------------------------------------- */
static int sync_path(const char *p, bool dir)
{
    int fd = open(p, (dir ? O_RDONLY | O_DIRECTORY : O_WRONLY) | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -1; /* unlinked meanwhile: nothing to do */
    int r = fdatasync(fd);
    close(fd);
    return r;
}

/* More files and directories to sync than this: syncfs() once. */
#define SYNC_MANY 64

typedef struct sync_item {
    st_topic_rt_t *t;
    uint32_t q;
    bool fresh;
    uint64_t from, to; /* entries [from, to) to make durable */
} sync_item_t;

gt_err_t st_cq_sync(st_local_t *st, bool unlock)
{
    sync_item_t *v = NULL;
    size_t n = 0, cap = 0;
    gt_err_t rc = GT_OK;
    for (size_t i = 0; i < st->ntopics && rc == GT_OK; i++) {
        st_topic_rt_t *t = st->topics[i];
        for (uint32_t q = 0; q < t->nq && rc == GT_OK; q++) {
            st_cq_t *cq = &t->cq[q];
            if (cq->end - cq->flushed >= PER_PAGE)
                (void)cq_flush(t, q); /* keeps the snapshot small */
            if (cq->synced >= cq->flushed && !cq->fresh)
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 64;
                sync_item_t *nv = realloc(v, cap * sizeof(*nv));
                if (!nv) {
                    rc = GT_ENOMEM;
                    break;
                }
                v = nv;
            }
            v[n++] = (sync_item_t){t, q, cq->fresh,
                                   cq->synced < cq->min_off ? cq->min_off
                                                            : cq->synced,
                                   cq->flushed};
            cq->fresh = false;
        }
    }
    /* paths are built under the lock (topic objects live until close);
     * more than SYNC_MANY: one syncfs() instead */
    size_t need = 0;
    for (size_t k = 0; k < n; k++)
        need += (size_t)((v[k].to + st->cq_chunk - 1 -
                          chunk_of(st, v[k].from)) / st->cq_chunk) +
                (v[k].fresh ? 3 : 0);
    char (*paths)[4096] = NULL;
    size_t np = 0, nfiles = 0;
    bool many = need > SYNC_MANY;
    if (rc == GT_OK && need && !many &&
        !(paths = malloc(need * sizeof(*paths))))
        rc = GT_ENOMEM;
    for (size_t k = 0; k < n && paths; k++)
        for (uint64_t c = chunk_of(st, v[k].from); c < v[k].to;
             c += st->cq_chunk)
            cq_path(v[k].t, v[k].q, c, paths[np++], sizeof(*paths));
    nfiles = np;
    for (size_t k = 0; k < n && paths; k++) { /* then directories */
        if (!v[k].fresh)
            continue;
        cq_path(v[k].t, v[k].q, UINT64_MAX, paths[np++], sizeof(*paths));
        cq_path(v[k].t, UINT32_MAX, 0, paths[np++], sizeof(*paths));
        snprintf(paths[np++], sizeof(*paths), "%s", st->cq_dir);
    }
    if (unlock)
        pthread_mutex_unlock(&st->lock);
    if (rc == GT_OK && many) {
        int fd = open(st->cq_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || syncfs(fd) < 0)
            rc = GT_EIO;
        if (fd >= 0)
            close(fd);
    }
    for (size_t k = 0; k < np && rc == GT_OK; k++) {
        if (k > nfiles && strcmp(paths[k], paths[k - 1]) == 0)
            continue;
        if (sync_path(paths[k], k >= nfiles) < 0)
            rc = GT_EIO;
    }
    if (unlock)
        pthread_mutex_lock(&st->lock);
    for (size_t k = 0; k < n; k++) {
        st_cq_t *cq = &v[k].t->cq[v[k].q];
        if (rc != GT_OK)
            cq->fresh = cq->fresh || v[k].fresh;
        else if (cq->synced < v[k].to && v[k].to <= cq->flushed)
            cq->synced = v[k].to;
    }
    free(paths);
    free(v);
    return rc;
}

gt_err_t st_cq_check(st_topic_rt_t *t, uint32_t qi, uint64_t upto)
{
    st_cq_t *q = &t->cq[qi];
    st_local_t *st = t->st;
    if (upto <= q->min_off)
        return GT_OK; /* nothing in the files (retention may have passed
                       * entries never flushed) */
    for (uint64_t c = chunk_of(st, q->min_off); c < upto; c += st->cq_chunk) {
        uint64_t last = upto - c < st->cq_chunk ? upto - 1 : c + st->cq_chunk - 1;
        uint8_t h[ST_CQ_ENTRY];
        struct stat sb;
        size_t got = 0;
        int fd = open_chunk(t, qi, c, O_RDONLY);
        bool ok = fd >= 0 && fstat(fd, &sb) == 0 &&
                  (uint64_t)sb.st_size >= file_off(c, last) + ST_CQ_ENTRY &&
                  pread_full(fd, h, sizeof(h), 0, &got) && got == sizeof(h) &&
                  hdr_ok(h, c, st->cq_chunk);
        if (fd >= 0)
            close(fd);
        if (!ok) {
            char p[4096];
            cq_path(t, qi, c, p, sizeof(p));
            GT_LOG(ERROR, "store", "%s: consume queue file missing, short or "
                   "with a bad header (the table snapshot needs it)", p);
            return GT_ECORRUPT;
        }
    }
    st_cq_entry_t e;
    if (!st_cq_get(t, qi, q->min_off, &e) || !st_cq_get(t, qi, upto - 1, &e))
        return GT_ECORRUPT;
    return GT_OK;
}

static int rm_tree(int dfd, const char *name)
{
    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return unlinkat(dfd, name, 0) == 0 || errno == ENOENT ? 0 : -1;
    DIR *d = fdopendir(fd);
    int rc = 0;
    if (!d) {
        close(fd);
        return -1;
    }
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
            rm_tree(dirfd(d), de->d_name) < 0)
            rc = -1;
    closedir(d);
    if (unlinkat(dfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        rc = -1;
    return rc;
}

gt_err_t st_cq_wipe(st_local_t *st)
{
    st_cq_cache_free(st);
    if (rm_tree(AT_FDCWD, st->cq_dir) < 0) {
        GT_LOG(ERROR, "store", "cannot remove %s: %s", st->cq_dir,
               strerror(errno));
        return GT_EIO;
    }
    if (mkdir(st->cq_dir, 0755) < 0 && errno != EEXIST)
        return GT_EIO;
    return GT_OK;
}

void st_cq_free(st_cq_t *q)
{
    free(q->tail);
    memset(q, 0, sizeof(*q));
}
