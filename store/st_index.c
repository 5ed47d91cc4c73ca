/* The id / key index: st_hash64('I', msg id) and ('K', key) -> commitlog
 * positions, with a bounded part in memory and the rest in immutable run
 * files.  Candidates are verified against the commitlog record by the
 * callers (st_local.c lookup, st_hold.c), so a hash collision, a stale or a
 * duplicate entry costs a read, never a wrong answer.
 *
 * Memory: the active table (hash chains, newest first) takes entries until
 * it holds mem_cap of them; it is then frozen (still searched) and the
 * index thread sorts it into a run file and swaps the run in.  Memory is
 * thus about two tables (24 B per entry, plus 4 B per bucket; mapped and
 * unmapped directly so a flushed table's pages go back to the system)
 * whatever the stored count, plus 12 B per MiB of run files (one fence
 * per group of 256 blocks).
 *
 * A run file, <dir>/index/<20-digit seq>.run (little-endian):
 *   0    u32 magic "GTIX", u32 version (1), u64 seq, u64 count,
 *        u64 min position, u64 max position, u32 level, u32 block count,
 *        u32 CRC32C of the fence table, u32 reserved, u32 CRC32C of [0, 56)
 *   4096 count (u64 hash, u64 position) pairs sorted by (hash, position),
 *        in blocks of 256 pairs (4 KiB; the last may be shorter)
 *   then the fence table: per block u64 first hash, u32 CRC32C of the block.
 * It is written as <seq>.run.tmp, fdatasynced, renamed and the directory
 * synced before anything refers to it; it never changes afterwards.
 * Opening a run reads its header and fence table (0.3% of the file),
 * checks their CRCs and keeps per group of 256 blocks the first hash and
 * the CRC of its 3 KiB of fence entries; a block's CRC is checked whenever the block is read
 * (lookup, merge).  A bad block is reported (ERROR), the run is skipped by
 * lookups from then on and the table snapshot is withdrawn, so the next
 * start rebuilds the index by the full scan.
 *
 * Lookup: the active table, the frozen ones, then the runs newest first;
 * in a run a binary search of the in-memory group fences names the group
 * whose fence entries are read (pread, CRC checked), a binary search of
 * those names the one block to read (pread, CRC), whose pairs are
 * searched: two reads per run, both usually from the page cache.  Runs are kept few by merging:
 * a flush makes a level-0 run; when MERGE_FANOUT runs share a level the
 * index thread merges them (a k-way merge of their sorted pairs into a new
 * file, dropping entries below the retained minimum and duplicates) into
 * one of the next level (the oldest MERGE_FANOUT of the lowest such level).
 * At rest at most MERGE_FANOUT - 1 runs per level remain: a lookup reads at
 * most that many blocks per factor of MERGE_FANOUT in stored entries over
 * mem_cap (10M entries over 64k: levels 0-3, at most 12 runs).
 *
 * Retention drops runs whose max position is below the first retained
 * position (file unlinked at once); entries of partly retained runs and of
 * frozen tables are filtered by the callers (pos < st->min_pos).
 *
 * Table snapshot (st_snap.c): the index section lists the live runs (seq,
 * max position) and the in-memory entries below its end position.  Merge
 * inputs are not unlinked while the newest durable tables.snap may name
 * them: they wait on a dead list until a snapshot taken after their
 * removal is durable (st_index_snap_done).  A start that loads the
 * snapshot opens the listed runs and deletes every other run file (their
 * entries come back from the scan after the snapshot); the full-scan
 * fallback deletes them all (st_index_reset) and rebuilds.  A run may hold
 * entries at or after the snapshot's end position (published but not yet
 * synced when it was written), which the scan adds again: lookup skips a
 * position it already returned.
 *
 * Locks: everything here is guarded by st->lock, except that the index
 * thread reads a frozen table and the runs it flushes or merges without
 * it (they are immutable; a run is reference-counted, so retention may
 * drop it meanwhile). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gt_le.h"
#include "gt_log.h"
#include "st_int.h"

#define RUN_MAGIC    0x58495447u /* "GTIX" */
#define RUN_VERSION  1u
#define RUN_HDR      4096u       /* pairs start here (header uses 60 B) */
#define BLOCK_PAIRS  256u
#define BLOCK_BYTES  (BLOCK_PAIRS * 16u)
#define IO_BLOCKS    16u         /* blocks per read / write in bulk I/O */
#define MERGE_FANOUT 4u
#define RETRY_MS     1000
#define DEFAULT_MEM  65536u
#define FENCE_GROUP  256u        /* blocks per fence group (3 KiB of fences) */

struct st_irun {
    uint64_t seq, count, min_pos, max_pos;
    uint32_t level, nb;
    int fd;
    _Atomic int refs;
    bool bad;             /* a block failed its CRC: skipped */
    bool merging;         /* input of the merge in progress */
    uint64_t dead_mark;   /* on the dead list: removal number */
    uint32_t ng;          /* fence groups (FENCE_GROUP blocks each) */
    uint64_t *grp_h;      /* first hash of each group's first block */
    uint32_t *grp_crc;    /* CRC32C of each group's fence entries */
};

/* ---- paths, refs ----------------------------------------------------------- */
static void run_path(const st_index_t *ix, uint64_t seq, bool tmp, char *buf,
                     size_t n)
{
    snprintf(buf, n, "%s/%020" PRIu64 ".run%s", ix->dir, seq, tmp ? ".tmp" : "");
}

static void run_unref(st_index_t *ix, st_irun_t *r)
{
    if (!r || atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    if (r->fd >= 0)
        ix->st->fops->close(ix->st->fctx, r->fd);
    free(r->grp_h);
    free(r->grp_crc);
    free(r);
}

static void run_unlink(st_index_t *ix, const st_irun_t *r)
{
    char p[4200];
    run_path(ix, r->seq, false, p, sizeof(p));
    unlink(p);
}

/* ---- in-memory tables -------------------------------------------------------- */
/* The tables and the flush's sort buffer are mapped and unmapped directly:
 * their pages are touched only as they fill, and go back to the system when
 * freed (through malloc they could stay in a heap as the allocator's mmap
 * threshold adapts, so RSS would keep the peak of a flush). */
static void *big_alloc(size_t n)
{
    void *p = mmap(NULL, n ? n : 1, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void big_free(void *p, size_t n)
{
    if (p)
        munmap(p, n ? n : 1);
}

static void mem_free(st_ixmem_t *m)
{
    if (!m)
        return;
    big_free(m->buckets, m->nbuckets * sizeof(*m->buckets));
    big_free(m->e, m->cap * sizeof(*m->e));
    memset(m, 0, sizeof(*m));
}

/* Full-size arrays at once (zero pages until used). */
static gt_err_t mem_alloc(st_ixmem_t *m, size_t cap)
{
    size_t nb = 1;
    while (nb < cap)
        nb <<= 1;
    m->nbuckets = nb;
    m->cap = cap;
    m->buckets = big_alloc(nb * sizeof(*m->buckets));
    m->e = big_alloc(cap * sizeof(*m->e));
    if (!m->buckets || !m->e) {
        mem_free(m);
        return GT_ENOMEM;
    }
    m->nbuckets = nb;
    m->cap = cap;
    m->n = 0;
    return GT_OK;
}

static void mem_add(st_ixmem_t *m, uint64_t h, uint64_t pos)
{
    size_t k = h & (m->nbuckets - 1);
    m->e[m->n] = (struct st_ient){.h = h, .pos = pos, .next = m->buckets[k]};
    m->buckets[k] = (uint32_t)(++m->n);
}

static uint32_t mem_head(const st_ixmem_t *m, uint64_t h)
{
    return m->nbuckets ? m->buckets[h & (m->nbuckets - 1)] : 0;
}

static int cmp_pair(const void *a, const void *b)
{
    const uint64_t *x = a, *y = b;
    if (x[0] != y[0])
        return x[0] < y[0] ? -1 : 1;
    return x[1] < y[1] ? -1 : x[1] > y[1];
}

/* ---- fences -------------------------------------------------------------------- */
/* Only one fence per FENCE_GROUP blocks stays in memory (the group's first
 * hash and the CRC of its 3 KiB of fence entries, 12 bytes per 1 MiB of
 * run); a lookup reads the group's fence entries, then the one block. */
static uint32_t fence_groups(uint32_t nb)
{
    return (nb + FENCE_GROUP - 1) / FENCE_GROUP;
}

static uint32_t group_blocks(const st_irun_t *r, uint32_t g)
{
    uint32_t left = r->nb - g * FENCE_GROUP;
    return left < FENCE_GROUP ? left : FENCE_GROUP;
}

/* Fills r's groups from the serialised fence table ft (nb entries). */
static gt_err_t groups_build(st_irun_t *r, const uint8_t *ft)
{
    r->ng = fence_groups(r->nb);
    r->grp_h = malloc((size_t)r->ng * 8 + 8);
    r->grp_crc = malloc((size_t)r->ng * 4 + 4);
    if (!r->grp_h || !r->grp_crc)
        return GT_ENOMEM;
    for (uint32_t g = 0; g < r->ng; g++) {
        const uint8_t *p = ft + (size_t)g * FENCE_GROUP * 12;
        r->grp_h[g] = gt_le64_get(p);
        r->grp_crc[g] = st_crc32c(0, p, (size_t)group_blocks(r, g) * 12);
    }
    return GT_OK;
}

/* Reads group g's fence entries into buf (FENCE_GROUP * 12 bytes). */
static gt_err_t fence_read(st_index_t *ix, st_irun_t *r, uint32_t g,
                           uint8_t *buf)
{
    size_t n = (size_t)group_blocks(r, g) * 12;
    gt_err_t rc = st_file_pread_full(ix->st, r->fd, buf, n,
                                     RUN_HDR + r->count * 16 +
                                         (uint64_t)g * FENCE_GROUP * 12);
    if (rc == GT_OK && st_crc32c(0, buf, n) != r->grp_crc[g])
        rc = GT_ECORRUPT;
    return rc;
}

/* ---- run writer -------------------------------------------------------------- */
typedef struct runw {
    st_index_t *ix;
    int fd;
    uint64_t seq, count, min_pos, max_pos, foff;
    uint64_t last_h, last_pos;
    uint32_t level;
    uint8_t *buf;         /* IO_BLOCKS blocks */
    size_t bn;            /* bytes buffered */
    uint64_t *fh;
    uint32_t *fc;
    size_t nb, fcap;
    gt_err_t rc;
} runw_t;

static gt_err_t rw_open(runw_t *w, st_index_t *ix, uint64_t seq,
                        uint32_t level)
{
    char p[4200];
    memset(w, 0, sizeof(*w));
    w->ix = ix;
    w->seq = seq;
    w->level = level;
    w->min_pos = UINT64_MAX;
    w->foff = RUN_HDR;
    run_path(ix, seq, true, p, sizeof(p));
    w->fd = ix->st->fops->open(ix->st->fctx, p, O_RDWR | O_CREAT | O_TRUNC,
                               0644);
    if (w->fd < 0)
        return w->rc = st_errno_to_err(w->fd);
    if (!(w->buf = malloc(IO_BLOCKS * BLOCK_BYTES)))
        w->rc = GT_ENOMEM;
    return w->rc;
}

static void rw_flush(runw_t *w)
{
    if (w->rc == GT_OK && w->bn)
        w->rc = st_file_pwrite_full(w->ix->st, w->fd, w->buf, w->bn, w->foff);
    w->foff += w->bn;
    w->bn = 0;
}

/* Closes the current block: its fence (first hash, CRC). */
static void rw_seal_block(runw_t *w, size_t start)
{
    if (w->nb == w->fcap) {
        size_t cap = w->fcap ? w->fcap * 2 : 64;
        uint64_t *h = realloc(w->fh, cap * sizeof(*h));
        if (h)
            w->fh = h;
        uint32_t *c = h ? realloc(w->fc, cap * sizeof(*c)) : NULL;
        if (c)
            w->fc = c;
        if (!h || !c) {
            w->rc = GT_ENOMEM;
            return;
        }
        w->fcap = cap;
    }
    w->fh[w->nb] = gt_le64_get(w->buf + start);
    w->fc[w->nb++] = st_crc32c(0, w->buf + start, w->bn - start);
}

static void rw_add(runw_t *w, uint64_t h, uint64_t pos)
{
    if (w->rc != GT_OK || (w->count && h == w->last_h && pos == w->last_pos))
        return; /* duplicate (a re-scanned tail, overlapping inputs) */
    gt_le64_put(w->buf + w->bn, h);
    gt_le64_put(w->buf + w->bn + 8, pos);
    w->bn += 16;
    w->count++;
    w->last_h = h;
    w->last_pos = pos;
    if (pos < w->min_pos)
        w->min_pos = pos;
    if (pos > w->max_pos)
        w->max_pos = pos;
    if (w->bn % BLOCK_BYTES == 0) {
        rw_seal_block(w, w->bn - BLOCK_BYTES);
        if (w->bn == IO_BLOCKS * BLOCK_BYTES)
            rw_flush(w);
    }
}

/* Finishes the file (fence table, header, sync, rename, directory sync)
 * and returns the open run (refs 1).  Abandons it on any error. */
static gt_err_t rw_finish(runw_t *w, st_irun_t **out)
{
    st_local_t *st = w->ix->st;
    char tmp[4200], path[4200];
    st_irun_t *r = NULL;
    *out = NULL;
    if (w->bn % BLOCK_BYTES)
        rw_seal_block(w, w->bn - w->bn % BLOCK_BYTES);
    rw_flush(w);
    uint8_t *ft = w->rc == GT_OK ? malloc(w->nb * 12 + 1) : NULL;
    if (w->rc == GT_OK && !ft)
        w->rc = GT_ENOMEM;
    if (w->rc == GT_OK) {
        for (size_t i = 0; i < w->nb; i++) {
            gt_le64_put(ft + i * 12, w->fh[i]);
            gt_le32_put(ft + i * 12 + 8, w->fc[i]);
        }
        w->rc = st_file_pwrite_full(st, w->fd, ft, w->nb * 12, w->foff);
    }
    if (w->rc == GT_OK) {
        uint8_t hd[60];
        gt_le32_put(hd, RUN_MAGIC);
        gt_le32_put(hd + 4, RUN_VERSION);
        gt_le64_put(hd + 8, w->seq);
        gt_le64_put(hd + 16, w->count);
        gt_le64_put(hd + 24, w->count ? w->min_pos : 0);
        gt_le64_put(hd + 32, w->max_pos);
        gt_le32_put(hd + 40, w->level);
        gt_le32_put(hd + 44, (uint32_t)w->nb);
        gt_le32_put(hd + 48, st_crc32c(0, ft, w->nb * 12));
        gt_le32_put(hd + 52, 0);
        gt_le32_put(hd + 56, st_crc32c(0, hd, 56));
        w->rc = st_file_pwrite_full(st, w->fd, hd, sizeof(hd), 0);
    }
    if (w->rc == GT_OK && st->fops->fdatasync(st->fctx, w->fd) < 0)
        w->rc = GT_EIO;
    run_path(w->ix, w->seq, true, tmp, sizeof(tmp));
    run_path(w->ix, w->seq, false, path, sizeof(path));
    if (w->rc == GT_OK && rename(tmp, path) < 0)
        w->rc = GT_EIO;
    if (w->rc == GT_OK)
        w->rc = st_file_sync_dir(st, w->ix->dir);
    if (w->rc == GT_OK && !(r = calloc(1, sizeof(*r))))
        w->rc = GT_ENOMEM;
    if (w->rc == GT_OK) {
        *r = (st_irun_t){.seq = w->seq, .count = w->count,
                         .min_pos = w->count ? w->min_pos : 0,
                         .max_pos = w->max_pos, .level = w->level,
                         .nb = (uint32_t)w->nb, .fd = w->fd};
        atomic_init(&r->refs, 1);
        w->fd = -1;
        if ((w->rc = groups_build(r, ft)) != GT_OK)
            run_unref(w->ix, r); /* closes the file */
        else
            *out = r;
    }
    if (w->rc != GT_OK) {
        if (w->fd >= 0)
            st->fops->close(st->fctx, w->fd);
        unlink(tmp);
        unlink(path);
    }
    free(ft);
    free(w->buf);
    free(w->fh);
    free(w->fc);
    return w->rc;
}

/* ---- run reader (bulk, for merges) ------------------------------------------- */
typedef struct runr {
    st_index_t *ix;
    st_irun_t *r;
    uint8_t *buf;
    size_t have, at;     /* pairs buffered, next one */
    uint32_t next_block;
    uint32_t fgroup;     /* group in fbuf, UINT32_MAX none */
    uint8_t *fbuf;
    gt_err_t rc;
} runr_t;

static size_t block_pairs(const st_irun_t *r, uint32_t b)
{
    uint64_t left = r->count - (uint64_t)b * BLOCK_PAIRS;
    return left < BLOCK_PAIRS ? (size_t)left : BLOCK_PAIRS;
}

static void run_damaged(st_index_t *ix, st_irun_t *r, uint32_t b)
{
    char p[4200];
    if (r->bad)
        return;
    r->bad = true;
    ix->damaged = true;
    run_path(ix, r->seq, false, p, sizeof(p));
    GT_LOG(ERROR, "store", "%s: block %" PRIu32 " fails its CRC; the index "
           "skips this file and is rebuilt at the next start", p, b);
    snprintf(p, sizeof(p), "%s/tables.snap", ix->st->dir);
    unlink(p); /* the next start scans in full */
}

/* Refills the buffer; false at the end or on error (rc). */
static bool rr_fill(runr_t *rd)
{
    if (rd->rc != GT_OK || rd->next_block >= rd->r->nb)
        return false;
    uint32_t b0 = rd->next_block, nbk = rd->r->nb - b0;
    if (nbk > IO_BLOCKS)
        nbk = IO_BLOCKS;
    size_t pairs = 0;
    for (uint32_t b = b0; b < b0 + nbk; b++)
        pairs += block_pairs(rd->r, b);
    rd->rc = st_file_pread_full(rd->ix->st, rd->r->fd, rd->buf, pairs * 16,
                                RUN_HDR + (uint64_t)b0 * BLOCK_BYTES);
    for (uint32_t b = b0; rd->rc == GT_OK && b < b0 + nbk; b++) {
        const uint8_t *p = rd->buf + (size_t)(b - b0) * BLOCK_BYTES;
        uint32_t g = b / FENCE_GROUP;
        if (g != rd->fgroup) {
            rd->rc = fence_read(rd->ix, rd->r, g, rd->fbuf);
            rd->fgroup = g;
            if (rd->rc != GT_OK)
                break;
        }
        uint32_t crc = gt_le32_get(rd->fbuf + (size_t)(b % FENCE_GROUP) * 12 + 8);
        if (st_crc32c(0, p, block_pairs(rd->r, b) * 16) != crc)
            rd->rc = GT_ECORRUPT;
    }
    rd->next_block = b0 + nbk;
    rd->have = pairs;
    rd->at = 0;
    return rd->rc == GT_OK && pairs > 0;
}

static bool rr_peek(runr_t *rd, uint64_t *h, uint64_t *pos)
{
    if (rd->at == rd->have && !rr_fill(rd))
        return false;
    *h = gt_le64_get(rd->buf + rd->at * 16);
    *pos = gt_le64_get(rd->buf + rd->at * 16 + 8);
    return true;
}

/* ---- flush and merge (index thread, or inline while opening) ----------------- */
static void lock_if(st_index_t *ix, bool unlock)
{
    if (unlock)
        pthread_mutex_lock(&ix->st->lock);
}

static void unlock_if(st_index_t *ix, bool unlock)
{
    if (unlock)
        pthread_mutex_unlock(&ix->st->lock);
}

/* Inserts r into the live list, ordered by min position (lock held). */
static gt_err_t runs_insert(st_index_t *ix, st_irun_t *r)
{
    if (ix->nruns == ix->runs_cap) {
        size_t cap = ix->runs_cap ? ix->runs_cap * 2 : 16;
        st_irun_t **n = realloc(ix->runs, cap * sizeof(*n));
        if (!n)
            return GT_ENOMEM;
        ix->runs = n;
        ix->runs_cap = cap;
    }
    size_t k = ix->nruns;
    while (k > 0 && ix->runs[k - 1]->min_pos > r->min_pos)
        k--;
    memmove(ix->runs + k + 1, ix->runs + k, (ix->nruns - k) * sizeof(*ix->runs));
    ix->runs[k] = r;
    ix->nruns++;
    return GT_OK;
}

/* Takes r off the live list (lock held); unlinked now, or after the next
 * durable snapshot when `defer` (the current one may name it). */
static void runs_remove(st_index_t *ix, st_irun_t *r, bool defer)
{
    size_t k = 0;
    while (k < ix->nruns && ix->runs[k] != r)
        k++;
    if (k == ix->nruns)
        return;
    memmove(ix->runs + k, ix->runs + k + 1,
            (ix->nruns - k - 1) * sizeof(*ix->runs));
    ix->nruns--;
    if (defer && ix->ndead < ix->dead_cap) {
        r->dead_mark = ++ix->removals;
        ix->dead[ix->ndead++] = r;
        return;
    }
    if (defer) {
        size_t cap = ix->dead_cap ? ix->dead_cap * 2 : 16;
        st_irun_t **n = realloc(ix->dead, cap * sizeof(*n));
        if (n) {
            ix->dead = n;
            ix->dead_cap = cap;
            r->dead_mark = ++ix->removals;
            ix->dead[ix->ndead++] = r;
            return;
        }
    }
    run_unlink(ix, r);
    run_unref(ix, r);
}

/* Writes the oldest frozen table as a level-0 run and swaps it in.  Lock
 * held; dropped around the I/O when `unlock`. */
static gt_err_t flush_one(st_index_t *ix, bool unlock)
{
    st_ixmem_t *m = ix->frozen[0];
    uint64_t seq = ix->next_seq++;
    uint64_t *pairs = NULL;
    runw_t w;
    st_irun_t *r = NULL;
    unlock_if(ix, unlock);
    gt_err_t rc = GT_ENOMEM;
    if ((pairs = big_alloc(m->n * 16))) {
        for (size_t i = 0; i < m->n; i++) {
            pairs[2 * i] = m->e[i].h;
            pairs[2 * i + 1] = m->e[i].pos;
        }
        qsort(pairs, m->n, 16, cmp_pair);
        rc = rw_open(&w, ix, seq, 0);
        for (size_t i = 0; i < m->n; i++)
            rw_add(&w, pairs[2 * i], pairs[2 * i + 1]);
        rc = rw_finish(&w, &r);
    }
    big_free(pairs, m->n * 16);
    lock_if(ix, unlock);
    if (rc == GT_OK && (rc = runs_insert(ix, r)) != GT_OK) {
        run_unlink(ix, r);
        run_unref(ix, r);
    }
    if (rc != GT_OK)
        return rc;
    /* frozen[0] is still the table written: only this function removes */
    memmove(ix->frozen, ix->frozen + 1, (ix->nfrozen - 1) * sizeof(*ix->frozen));
    ix->nfrozen--;
    mem_free(m);
    free(m);
    ix->flushes++;
    return GT_OK;
}

/* Picks the lowest level with MERGE_FANOUT live runs and puts its oldest
 * MERGE_FANOUT runs in in[]; -1 if there is none.  (They are adjacent in
 * the list but for runs made from a re-scanned tail after a start from the
 * snapshot; counting per level whatever the order keeps the bound.) */
static long merge_pick(const st_index_t *ix, st_irun_t **in)
{
    long best = -1;
    for (size_t i = 0; i < ix->nruns; i++) {
        uint32_t lv = ix->runs[i]->level, n = 0;
        if (ix->runs[i]->bad || (best >= 0 && lv >= (uint32_t)best))
            continue;
        for (size_t j = i; j < ix->nruns; j++)
            n += ix->runs[j]->level == lv && !ix->runs[j]->bad;
        if (n < MERGE_FANOUT)
            continue;
        best = lv;
        n = 0;
        for (size_t j = i; j < ix->nruns && n < MERGE_FANOUT; j++)
            if (ix->runs[j]->level == lv && !ix->runs[j]->bad)
                in[n++] = ix->runs[j];
    }
    return best;
}

/* Merges MERGE_FANOUT runs of one level into one of the next.  Lock held;
 * dropped around the I/O when `unlock`. */
static gt_err_t merge_one(st_index_t *ix, bool unlock)
{
    st_irun_t *in[MERGE_FANOUT];
    long level = merge_pick(ix, in);
    if (level < 0)
        return GT_ENOTFOUND;
    runr_t rd[MERGE_FANOUT];
    st_irun_t *out = NULL;
    uint64_t seq = ix->next_seq++, min = ix->min_pos;
    for (size_t i = 0; i < MERGE_FANOUT; i++) {
        atomic_fetch_add(&in[i]->refs, 1);
        in[i]->merging = true;
    }
    unlock_if(ix, unlock);
    runw_t w;
    gt_err_t rc = rw_open(&w, ix, seq, (uint32_t)level + 1);
    memset(rd, 0, sizeof(rd));
    for (size_t i = 0; i < MERGE_FANOUT; i++) {
        rd[i] = (runr_t){.ix = ix, .r = in[i], .fgroup = UINT32_MAX};
        if (!(rd[i].buf = malloc(IO_BLOCKS * BLOCK_BYTES)) ||
            !(rd[i].fbuf = malloc(FENCE_GROUP * 12)))
            rc = GT_ENOMEM;
    }
    while (rc == GT_OK && w.rc == GT_OK) {
        int best = -1;
        uint64_t bh = 0, bp = 0;
        for (int i = 0; i < (int)MERGE_FANOUT; i++) {
            uint64_t h, p;
            if (!rr_peek(&rd[i], &h, &p)) {
                if (rd[i].rc != GT_OK)
                    rc = rd[i].rc;
                continue;
            }
            if (best < 0 || h < bh || (h == bh && p < bp)) {
                best = i;
                bh = h;
                bp = p;
            }
        }
        if (best < 0 || rc != GT_OK)
            break;
        if (w.count % (16 * BLOCK_PAIRS) == 0 && atomic_load(&ix->stop))
            rc = GT_ESHUTDOWN; /* closing: the inputs stay as they are */
        rd[best].at++;
        if (bp >= min)
            rw_add(&w, bh, bp);
    }
    if (rc != GT_OK) {
        w.rc = rc;
        for (size_t i = 0; i < MERGE_FANOUT; i++)
            if (rd[i].rc == GT_ECORRUPT) {
                lock_if(ix, unlock);
                run_damaged(ix, in[i], rd[i].next_block - 1);
                unlock_if(ix, unlock);
            }
    }
    for (size_t i = 0; i < MERGE_FANOUT; i++) {
        free(rd[i].buf);
        free(rd[i].fbuf);
    }
    rc = rw_finish(&w, &out);
    lock_if(ix, unlock);
    for (size_t i = 0; i < MERGE_FANOUT; i++)
        in[i]->merging = false;
    if (rc == GT_OK && (rc = runs_insert(ix, out)) != GT_OK) {
        run_unlink(ix, out);
        run_unref(ix, out);
    }
    if (rc == GT_OK) {
        for (size_t i = 0; i < MERGE_FANOUT; i++)
            runs_remove(ix, in[i], true); /* a no-op if retention took it */
        ix->merges++;
    }
    for (size_t i = 0; i < MERGE_FANOUT; i++)
        run_unref(ix, in[i]);
    return rc;
}

/* Does the pending work inline (no index thread: while opening). */
static void work_inline(st_index_t *ix)
{
    while (ix->nfrozen && flush_one(ix, false) == GT_OK)
        ;
    while (!ix->nfrozen && merge_one(ix, false) == GT_OK)
        ;
}

static void *ix_main(void *arg)
{
    st_index_t *ix = arg;
    pthread_setname_np(pthread_self(), "st-index");
    pthread_mutex_lock(&ix->st->lock);
    while (!ix->stop) {
        gt_err_t rc = GT_ENOTFOUND;
        int64_t now = st_mono_ms();
        if (now >= ix->retry_at) {
            if (ix->nfrozen)
                rc = flush_one(ix, true);
            else
                rc = merge_one(ix, true);
        }
        if (rc == GT_OK)
            continue;
        if (rc != GT_ENOTFOUND && !atomic_load(&ix->stop)) {
            GT_LOG(WARN, "store", "index run file not written (%s); retrying",
                   gt_err_str(rc));
            ix->retry_at = st_mono_ms() + RETRY_MS;
        }
        if (ix->stop)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&ix->cond, &ix->st->lock, &ts);
    }
    pthread_mutex_unlock(&ix->st->lock);
    return NULL;
}

/* ---- API ----------------------------------------------------------------------- */
gt_err_t st_index_init(st_index_t *ix, st_local_t *st, size_t mem_cap)
{
    memset(ix, 0, sizeof(*ix));
    ix->st = st;
    ix->mem_cap = mem_cap ? mem_cap : DEFAULT_MEM;
    if (ix->mem_cap < 16)
        ix->mem_cap = 16;
    if (ix->mem_cap > (1u << 24))
        ix->mem_cap = 1u << 24;
    ix->next_seq = 1;
    pthread_cond_init(&ix->cond, NULL);
    if (asprintf(&ix->dir, "%s/index", st->dir) < 0) {
        ix->dir = NULL;
        return GT_ENOMEM;
    }
    if (mkdir(ix->dir, 0755) < 0 && errno != EEXIST)
        return GT_EIO;
    return GT_OK;
}

gt_err_t st_index_add(st_index_t *ix, uint64_t h, uint64_t pos)
{
    if (!ix->mem.cap && mem_alloc(&ix->mem, ix->mem_cap) != GT_OK)
        return GT_ENOMEM;
    mem_add(&ix->mem, h, pos);
    if (ix->mem.n < ix->mem.cap)
        return GT_OK;
    /* full: freeze it (still searched) for the index thread to write */
    st_ixmem_t *f = malloc(sizeof(*f));
    st_ixmem_t **fr = f ? realloc(ix->frozen, (ix->nfrozen + 1) * sizeof(*fr))
                        : NULL;
    if (!fr) {
        free(f);
        ix->mem.n--; /* undo: the entry is lost only on ENOMEM */
        return GT_ENOMEM;
    }
    ix->frozen = fr;
    *f = ix->mem;
    memset(&ix->mem, 0, sizeof(ix->mem));
    ix->frozen[ix->nfrozen++] = f;
    if (ix->running)
        pthread_cond_signal(&ix->cond);
    else
        work_inline(ix);
    return GT_OK;
}

void st_index_prune(st_index_t *ix, uint64_t min_pos)
{
    if (min_pos > ix->min_pos)
        ix->min_pos = min_pos;
    for (size_t i = ix->nruns; i-- > 0;)
        if (ix->runs[i]->max_pos < min_pos)
            runs_remove(ix, ix->runs[i], false);
    st_ixmem_t *m = &ix->mem;
    size_t k = 0;
    for (size_t i = 0; i < m->n; i++)
        if (m->e[i].pos >= min_pos)
            m->e[k++] = m->e[i];
    if (k == m->n)
        return;
    m->n = k;
    memset(m->buckets, 0, m->nbuckets * sizeof(*m->buckets));
    for (size_t i = 0; i < m->n; i++) { /* oldest first: chains newest first */
        size_t b = m->e[i].h & (m->nbuckets - 1);
        m->e[i].next = m->buckets[b];
        m->buckets[b] = (uint32_t)(i + 1);
    }
}

gt_err_t st_index_start(st_index_t *ix)
{
    if (ix->running)
        return GT_OK;
    atomic_store(&ix->stop, false);
    if (pthread_create(&ix->th, NULL, ix_main, ix) != 0)
        return GT_ENOMEM;
    ix->running = true;
    return GT_OK;
}

void st_index_stop(st_index_t *ix)
{
    if (!ix->running)
        return;
    pthread_mutex_lock(&ix->st->lock);
    atomic_store(&ix->stop, true);
    pthread_cond_signal(&ix->cond);
    pthread_mutex_unlock(&ix->st->lock);
    pthread_join(ix->th, NULL);
    ix->running = false;
}

/* Forgets everything in memory; files stay (dead ones too). */
static void forget(st_index_t *ix)
{
    mem_free(&ix->mem);
    for (size_t i = 0; i < ix->nfrozen; i++) {
        mem_free(ix->frozen[i]);
        free(ix->frozen[i]);
    }
    free(ix->frozen);
    ix->frozen = NULL;
    ix->nfrozen = 0;
    for (size_t i = 0; i < ix->nruns; i++)
        run_unref(ix, ix->runs[i]);
    for (size_t i = 0; i < ix->ndead; i++)
        run_unref(ix, ix->dead[i]);
    free(ix->runs);
    free(ix->dead);
    ix->runs = ix->dead = NULL;
    ix->nruns = ix->runs_cap = ix->ndead = ix->dead_cap = 0;
}

void st_index_free(st_index_t *ix)
{
    if (!ix->st)
        return; /* never set up */
    st_index_stop(ix);
    forget(ix);
    free(ix->dir);
    ix->dir = NULL;
    pthread_cond_destroy(&ix->cond);
}

/* Deletes run files of the index directory; those in keep[0..n) stay.
 * Returns the highest sequence number seen. */
static uint64_t sweep_dir(st_index_t *ix, const uint64_t *keep, size_t n)
{
    uint64_t top = 0;
    DIR *d = opendir(ix->dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        char *end;
        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        uint64_t seq = strtoull(de->d_name, &end, 10);
        bool kept = strcmp(end, ".run") == 0;
        for (size_t i = 0; kept && i < n; i++)
            if (keep[i] == seq)
                goto next;
        char p[4600];
        snprintf(p, sizeof(p), "%s/%s", ix->dir, de->d_name);
        unlink(p);
    next:
        if (seq > top)
            top = seq;
    }
    if (d)
        closedir(d);
    return top;
}

void st_index_reset(st_index_t *ix)
{
    forget(ix);
    uint64_t top = sweep_dir(ix, NULL, 0);
    if (top >= ix->next_seq)
        ix->next_seq = top + 1;
    ix->damaged = false;
    ix->loaded = false;
}

/* Opens a listed run file: header and fence table checked. */
static gt_err_t run_open(st_index_t *ix, uint64_t seq, st_irun_t **out)
{
    st_local_t *st = ix->st;
    char p[4200];
    uint8_t hd[60], *ft = NULL;
    struct stat sb;
    st_irun_t *r = calloc(1, sizeof(*r));
    gt_err_t rc = r ? GT_OK : GT_ENOMEM;
    *out = NULL;
    run_path(ix, seq, false, p, sizeof(p));
    if (r) {
        r->fd = st->fops->open(st->fctx, p, O_RDWR, 0);
        atomic_init(&r->refs, 1);
        if (r->fd < 0)
            rc = r->fd == -ENOENT ? GT_ENOTFOUND : st_errno_to_err(r->fd);
    }
    if (rc == GT_OK)
        rc = st_file_pread_full(st, r->fd, hd, sizeof(hd), 0);
    if (rc == GT_OK &&
        (gt_le32_get(hd) != RUN_MAGIC || gt_le32_get(hd + 4) != RUN_VERSION ||
         gt_le32_get(hd + 56) != st_crc32c(0, hd, 56) ||
         gt_le64_get(hd + 8) != seq))
        rc = GT_ECORRUPT;
    if (rc == GT_OK) {
        r->seq = seq;
        r->count = gt_le64_get(hd + 16);
        r->min_pos = gt_le64_get(hd + 24);
        r->max_pos = gt_le64_get(hd + 32);
        r->level = gt_le32_get(hd + 40);
        r->nb = gt_le32_get(hd + 44);
        if (r->count > (1ull << 40) || r->level > 64 ||
            r->nb != (r->count + BLOCK_PAIRS - 1) / BLOCK_PAIRS ||
            fstat(r->fd, &sb) != 0 ||
            (uint64_t)sb.st_size != RUN_HDR + r->count * 16 + (uint64_t)r->nb * 12)
            rc = GT_ECORRUPT;
    }
    if (rc == GT_OK && !(ft = malloc((size_t)r->nb * 12 + 1)))
        rc = GT_ENOMEM;
    if (rc == GT_OK)
        rc = st_file_pread_full(st, r->fd, ft, (size_t)r->nb * 12,
                                RUN_HDR + r->count * 16);
    if (rc == GT_OK && st_crc32c(0, ft, (size_t)r->nb * 12) != gt_le32_get(hd + 48))
        rc = GT_ECORRUPT;
    if (rc == GT_OK)
        rc = groups_build(r, ft);
    free(ft);
    if (rc != GT_OK) {
        if (rc == GT_ECORRUPT)
            GT_LOG(ERROR, "store", "%s: bad index run header or fence table",
                   p);
        if (r && r->fd < 0)
            r->fd = -1;
        run_unref(ix, r);
        return rc;
    }
    *out = r;
    return GT_OK;
}

gt_err_t st_index_load(st_index_t *ix, const uint64_t *seqs,
                       const uint64_t *max_pos, size_t n, uint64_t min_pos)
{
    gt_err_t rc = GT_OK;
    for (size_t i = 0; i < n && rc == GT_OK; i++) {
        st_irun_t *r;
        rc = run_open(ix, seqs[i], &r);
        if (rc == GT_ENOTFOUND && max_pos[i] < min_pos) {
            rc = GT_OK; /* deleted by retention after the snapshot */
            continue;
        }
        if (rc == GT_ENOTFOUND)
            rc = GT_ECORRUPT;
        if (rc == GT_OK && (rc = runs_insert(ix, r)) != GT_OK)
            run_unref(ix, r);
    }
    if (rc != GT_OK)
        return rc;
    uint64_t top = sweep_dir(ix, seqs, n);
    if (top >= ix->next_seq)
        ix->next_seq = top + 1;
    ix->loaded = true;
    return GT_OK;
}

/* ---- snapshot --------------------------------------------------------------------- */
static gt_err_t snap_put_mem(st_index_snap_t *s, const st_ixmem_t *m,
                             uint64_t end)
{
    for (size_t i = 0; i < m->n; i++) {
        if (m->e[i].pos >= end)
            continue;
        if (s->n == s->cap) {
            size_t cap = s->cap ? s->cap * 2 : 1024;
            uint64_t *p = realloc(s->pairs, cap * 16);
            if (!p)
                return GT_ENOMEM;
            s->pairs = p;
            s->cap = cap;
        }
        s->pairs[2 * s->n] = m->e[i].h;
        s->pairs[2 * s->n + 1] = m->e[i].pos;
        s->n++;
    }
    return GT_OK;
}

gt_err_t st_index_snap_capture(st_index_t *ix, uint64_t end,
                               st_index_snap_t *s)
{
    memset(s, 0, sizeof(*s));
    if (ix->damaged)
        return GT_ECORRUPT;
    s->mark = ix->removals;
    s->nruns = ix->nruns;
    s->runs = malloc((ix->nruns + 1) * 2 * sizeof(uint64_t));
    if (!s->runs)
        return GT_ENOMEM;
    for (size_t i = 0; i < ix->nruns; i++) {
        s->runs[2 * i] = ix->runs[i]->seq;
        s->runs[2 * i + 1] = ix->runs[i]->max_pos;
    }
    gt_err_t rc = GT_OK;
    for (size_t i = 0; i < ix->nfrozen && rc == GT_OK; i++) /* oldest first */
        rc = snap_put_mem(s, ix->frozen[i], end);
    if (rc == GT_OK)
        rc = snap_put_mem(s, &ix->mem, end);
    if (rc != GT_OK)
        st_index_snap_release(s);
    return rc;
}

void st_index_snap_release(st_index_snap_t *s)
{
    free(s->runs);
    free(s->pairs);
    memset(s, 0, sizeof(*s));
}

void st_index_snap_done(st_index_t *ix, uint64_t mark)
{
    size_t k = 0;
    for (size_t i = 0; i < ix->ndead; i++) {
        st_irun_t *r = ix->dead[i];
        if (r->dead_mark <= mark) {
            run_unlink(ix, r);
            run_unref(ix, r);
        } else {
            ix->dead[k++] = r;
        }
    }
    ix->ndead = k;
}

/* ---- lookup ------------------------------------------------------------------------- */
/* Reads block b of r into it->blk (its group's fence entries first, if
 * not at hand); false (run skipped) on error. */
static bool iter_load(st_index_iter_t *it, st_irun_t *r, uint32_t b)
{
    uint32_t g = b / FENCE_GROUP;
    if (it->frun != r || it->fgroup != g) {
        it->frun = NULL;
        gt_err_t rc = fence_read(it->ix, r, g, it->fbuf);
        if (rc == GT_ECORRUPT)
            run_damaged(it->ix, r, b);
        if (rc != GT_OK)
            return false;
        it->frun = r;
        it->fgroup = g;
    }
    size_t np = block_pairs(r, b);
    if (st_file_pread_full(it->ix->st, r->fd, it->blk, np * 16,
                           RUN_HDR + (uint64_t)b * BLOCK_BYTES) != GT_OK)
        return false;
    if (st_crc32c(0, it->blk, np * 16) !=
        gt_le32_get(it->fbuf + (size_t)(b % FENCE_GROUP) * 12 + 8)) {
        run_damaged(it->ix, r, b);
        return false;
    }
    it->block = b;
    it->bn = np;
    return true;
}

/* Positions the iterator on the last pair of run r with hash h (it->bi is
 * one past it); false if r has none. */
static bool iter_seek_run(st_index_iter_t *it, st_irun_t *r)
{
    uint64_t h = it->h;
    if (r->bad || r->nb == 0 || r->grp_h[0] > h)
        return false;
    uint32_t lo = 0, hi = r->ng; /* last group whose first hash <= h */
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (r->grp_h[mid] <= h)
            lo = mid;
        else
            hi = mid;
    }
    uint32_t g = lo;
    if (it->frun != r || it->fgroup != g) {
        it->frun = NULL;
        gt_err_t rc = fence_read(it->ix, r, g, it->fbuf);
        if (rc == GT_ECORRUPT)
            run_damaged(it->ix, r, g * FENCE_GROUP);
        if (rc != GT_OK)
            return false;
        it->frun = r;
        it->fgroup = g;
    }
    lo = 0; /* last block of the group whose first hash <= h */
    hi = group_blocks(r, g);
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (gt_le64_get(it->fbuf + (size_t)mid * 12) <= h)
            lo = mid;
        else
            hi = mid;
    }
    if (!iter_load(it, r, g * FENCE_GROUP + lo))
        return false;
    size_t a = 0, z = it->bn; /* first pair with hash > h */
    while (a < z) {
        size_t mid = a + (z - a) / 2;
        if (gt_le64_get(it->blk + mid * 16) <= h)
            a = mid + 1;
        else
            z = mid;
    }
    it->bi = a;
    return true;
}

void st_index_iter_start(st_index_iter_t *it, st_index_t *ix, uint64_t h)
{
    it->ix = ix;
    it->h = h;
    it->stage = 0;
    it->k = 0;
    it->chain = mem_head(&ix->mem, h);
    it->run = NULL;
    it->frun = NULL;
}

bool st_index_iter_next(st_index_iter_t *it, uint64_t *pos)
{
    st_index_t *ix = it->ix;
    for (;;) {
        if (it->stage <= 1) { /* active table, then frozen newest first */
            const st_ixmem_t *m = it->stage == 0 ? &ix->mem
                                                 : ix->frozen[ix->nfrozen - it->k];
            while (it->chain) {
                const struct st_ient *e = &m->e[it->chain - 1];
                it->chain = e->next;
                if (e->h == it->h) {
                    *pos = e->pos;
                    return true;
                }
            }
            if (it->stage == 0) {
                it->stage = 1;
                it->k = 0;
            }
            if (it->k < ix->nfrozen) {
                it->k++;
                it->chain = mem_head(ix->frozen[ix->nfrozen - it->k], it->h);
                continue;
            }
            it->stage = 2;
            it->k = 0;
            it->run = NULL;
        }
        if (it->run) { /* walking back over pairs with hash h */
            if (it->bi == 0 && it->block > 0 && it->bn > 0 &&
                gt_le64_get(it->blk) == it->h && /* may go on before */
                iter_load(it, it->run, it->block - 1))
                it->bi = it->bn;
            if (it->bi > 0 &&
                gt_le64_get(it->blk + (it->bi - 1) * 16) == it->h) {
                it->bi--;
                *pos = gt_le64_get(it->blk + it->bi * 16 + 8);
                return true;
            }
            it->run = NULL;
        }
        if (it->k >= ix->nruns)
            return false;
        st_irun_t *r = ix->runs[ix->nruns - 1 - it->k++]; /* newest first */
        if (iter_seek_run(it, r))
            it->run = r;
    }
}

/* ---- figures ----------------------------------------------------------------------- */
void st_index_info(const st_index_t *ix, st_index_info_t *out)
{
    memset(out, 0, sizeof(*out));
    size_t per = sizeof(struct st_ient);
    out->mem_entries = ix->mem.n;
    out->mem_bytes = ix->mem.n * per;
    if (ix->mem.cap) /* buckets are touched at random: count them all */
        out->mem_bytes += ix->mem.nbuckets * sizeof(uint32_t);
    for (size_t i = 0; i < ix->nfrozen; i++) {
        out->mem_entries += ix->frozen[i]->n;
        out->mem_bytes += ix->frozen[i]->n * per +
                          ix->frozen[i]->nbuckets * sizeof(uint32_t);
    }
    out->runs = ix->nruns;
    out->dead_runs = ix->ndead;
    out->loaded = ix->loaded;
    for (size_t i = 0; i < ix->nruns; i++) {
        out->run_entries += ix->runs[i]->count;
        out->mem_bytes += (size_t)ix->runs[i]->ng * 12 + sizeof(st_irun_t);
    }
    out->mem_bytes += ix->runs_cap * sizeof(void *);
    out->flushes = ix->flushes;
    out->merges = ix->merges;
    st_irun_t *in[MERGE_FANOUT];
    out->idle = ix->nfrozen == 0 && merge_pick(ix, in) < 0;
}
