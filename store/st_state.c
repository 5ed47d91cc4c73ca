/* The state log: metadata (topics, groups) and consumption state (pop
 * offsets, in-flight deliveries, acks, committed offsets), persisted as an
 * append-only file replayed at start-up; plus the metadata operations.
 *
 * <dir>/state.log starts with u32 magic "GTSL", u32 format version (1).
 * Each record: u32 length L, u32 CRC32C of bytes [8, L), u8 type, then the
 * fields of st_srec_t in a fixed order (strings as u16 length + bytes):
 *   s1, s2, u32 queue, u64 a, u64 b, u32 attempt, i64 deadline, u64 gen,
 *   u32 u1, u32 u2, u32 u3.
 * A group record carries its retry policy in a, b and attempt.
 * Metadata records (ST_SR_META_PUT / _DEL, st_meta_put) have their own
 * layout after the type: u16 length + namespace, NUL, key; u32 length +
 * value (none for a delete); up to ~66 KiB.
 * Records are written with pwrite under the store lock before the operation
 * they describe completes (a batch of acks, and what a NORMAL group's pop
 * hands out: their records in one pwrite), so
 * a SIGKILL loses nothing; the flusher fdatasyncs the file every
 * flush_interval_ms, so a power loss can lose the last interval's pops and
 * acks (those messages are delivered again).
 *
 * Replay stops at the first bad record and ignores the rest (a torn tail).
 * After replay the file is compacted -- a fresh snapshot of the live state
 * is written to state.log.tmp, synced and renamed over state.log -- unless
 * it replayed cleanly and is smaller than cfg.state_compact_bytes.  At run time
 * the service thread compacts the same way once the log passes
 * cfg.state_compact_bytes and twice its size after the last compaction. */
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

#define SL_MAGIC 0x4C535447u /* "GTSL" */
#define SL_MAX_REC 4096
/* Metadata records (st_meta_put): u8 type, u16 L1, namespace NUL key (L1
 * bytes), u32 L2, value (L2 bytes) after the length and CRC. */
#define SL_MAX_KV (9 + 2 + ST_META_NS_MAX + 1 + ST_META_KEY_MAX + 4 + \
                   ST_META_VALUE_MAX)

typedef struct sbuf {
    uint8_t b[SL_MAX_REC];
    size_t n;
} sbuf_t;

static void sb_put(sbuf_t *s, uint64_t v, int bytes)
{
    gt_le_put(s->b + s->n, v, bytes);
    s->n += (size_t)bytes;
}

static void sb_str(sbuf_t *s, const char *str)
{
    size_t n = str ? strnlen(str, ST_NAME_MAX) : 0;
    sb_put(s, n, 2);
    memcpy(s->b + s->n, str ? str : "", n);
    s->n += n;
}

static void srec_encode(const st_srec_t *r, sbuf_t *s)
{
    uint32_t u1 = 0, u2 = 0, u3 = 0;
    const char *s1 = r->group, *s2 = r->topic;
    if (r->t) {
        s1 = r->t->name;
        u1 = r->t->type;
        u2 = r->t->queue_count;
        u3 = r->t->perm;
    } else if (r->g) { /* the retry policy rides in a, b, attempt */
        s1 = r->g->name;
        u1 = r->g->max_delivery_attempts;
        u2 = r->g->fifo;
        u3 = r->g->consume_from;
    }
    s->n = 8;
    sb_put(s, r->type, 1);
    sb_str(s, s1);
    sb_str(s, s2);
    sb_put(s, r->queue, 4);
    sb_put(s, r->g ? r->g->retry.initial_ms : r->a, 8);
    sb_put(s, r->g ? r->g->retry.max_ms : r->b, 8);
    sb_put(s, r->g ? r->g->retry.multiplier : r->attempt, 4);
    sb_put(s, (uint64_t)r->deadline, 8);
    sb_put(s, r->gen, 8);
    sb_put(s, u1, 4);
    sb_put(s, u2, 4);
    sb_put(s, u3, 4);
    size_t len = s->n;
    s->n = 0;
    sb_put(s, len, 4);
    sb_put(s, st_crc32c(0, s->b + 8, len - 8), 4);
    s->n = len;
}

/* Encodes a metadata record into an owned buffer (*len bytes). */
static uint8_t *kv_encode(const st_srec_t *r, size_t *len)
{
    size_t n = 8 + 1 + 2 + r->kv_len + 4 + r->val_len;
    uint8_t *b = malloc(n);
    if (!b)
        return NULL;
    b[8] = r->type;
    gt_le_put(b + 9, r->kv_len, 2);
    memcpy(b + 11, r->kv, r->kv_len);
    gt_le_put(b + 11 + r->kv_len, r->val_len, 4);
    if (r->val_len)
        memcpy(b + 15 + r->kv_len, r->val, r->val_len);
    gt_le_put(b, n, 4);
    gt_le_put(b + 4, st_crc32c(0, b + 8, n - 8), 4);
    *len = n;
    return b;
}

/* Decoded record with its own string storage. */
typedef struct srec_dec {
    st_srec_t r;
    char s1[ST_NAME_MAX + 1], s2[ST_NAME_MAX + 1];
    st_topic_t t;
    st_group_t g;
} srec_dec_t;

static uint64_t rd(const uint8_t **p, int bytes)
{
    uint64_t v = gt_le_get(*p, bytes);
    *p += bytes;
    return v;
}

static gt_err_t rd_str(const uint8_t **p, const uint8_t *end, char *out)
{
    if (end - *p < 2)
        return GT_ECORRUPT;
    size_t n = (size_t)rd(p, 2);
    if (n > ST_NAME_MAX || (size_t)(end - *p) < n)
        return GT_ECORRUPT;
    memcpy(out, *p, n);
    out[n] = 0;
    *p += n;
    return GT_OK;
}

static uint64_t state_ino(int fd)
{
    struct stat sb;
    return fstat(fd, &sb) == 0 ? (uint64_t)sb.st_ino : 0;
}

/* Decodes the record at buf (len bytes available).  GT_AGAIN: partial. */
static gt_err_t srec_decode(const uint8_t *buf, size_t len, srec_dec_t *d,
                            size_t *used)
{
    const uint8_t *p = buf;
    if (len < 8)
        return GT_AGAIN;
    uint32_t l = (uint32_t)rd(&p, 4), crc = (uint32_t)rd(&p, 4);
    bool kv = len > 8 && (buf[8] == ST_SR_META_PUT || buf[8] == ST_SR_META_DEL);
    if (l < 9 || l > (kv ? SL_MAX_KV : SL_MAX_REC))
        return GT_ECORRUPT;
    if (len < l)
        return GT_AGAIN;
    if (st_crc32c(0, buf + 8, l - 8) != crc)
        return GT_ECORRUPT;
    const uint8_t *end = buf + l;
    memset(d, 0, sizeof(*d));
    d->r.type = (uint8_t)rd(&p, 1);
    if (kv) { /* points into buf, which outlives the replay of the record */
        if (end - p < 2)
            return GT_ECORRUPT;
        d->r.kv_len = (uint32_t)rd(&p, 2);
        d->r.kv = p;
        if ((size_t)(end - p) < (size_t)d->r.kv_len + 4)
            return GT_ECORRUPT;
        p += d->r.kv_len;
        d->r.val_len = (uint32_t)rd(&p, 4);
        d->r.val = p;
        if ((size_t)(end - p) != d->r.val_len)
            return GT_ECORRUPT;
        *used = l;
        return GT_OK;
    }
    if (rd_str(&p, end, d->s1) != GT_OK || rd_str(&p, end, d->s2) != GT_OK ||
        end - p != 4 + 8 + 8 + 4 + 8 + 8 + 12)
        return GT_ECORRUPT;
    d->r.group = d->s1;
    d->r.topic = d->s2;
    d->r.queue = (uint32_t)rd(&p, 4);
    d->r.a = rd(&p, 8);
    d->r.b = rd(&p, 8);
    d->r.attempt = (uint32_t)rd(&p, 4);
    d->r.deadline = (int64_t)rd(&p, 8);
    d->r.gen = rd(&p, 8);
    uint32_t u1 = (uint32_t)rd(&p, 4), u2 = (uint32_t)rd(&p, 4),
             u3 = (uint32_t)rd(&p, 4);
    if (d->r.type == ST_SR_TOPIC_PUT) {
        memcpy(d->t.name, d->s1, sizeof(d->t.name));
        d->t.type = (st_topic_type_t)u1;
        d->t.queue_count = u2;
        d->t.perm = u3;
        d->r.t = &d->t;
    } else if (d->r.type == ST_SR_GROUP_PUT) {
        memcpy(d->g.name, d->s1, sizeof(d->g.name));
        d->g.max_delivery_attempts = u1;
        d->g.fifo = u2 != 0;
        d->g.consume_from = (st_consume_from_t)u3;
        d->g.retry.initial_ms = (uint32_t)d->r.a;
        d->g.retry.max_ms = (uint32_t)d->r.b;
        d->g.retry.multiplier = d->r.attempt;
        d->r.g = &d->g;
    }
    *used = l;
    return GT_OK;
}

gt_err_t st_state_rec_check(const uint8_t *buf, size_t len, size_t *used)
{
    srec_dec_t d;
    return srec_decode(buf, len, &d, used);
}

gt_err_t st_state_hdr_check(const uint8_t *buf, size_t len)
{
    if (len < 8)
        return GT_AGAIN;
    return gt_le32_get(buf) == SL_MAGIC && gt_le32_get(buf + 4) == 1
               ? GT_OK : GT_ECORRUPT;
}

typedef struct dbuf dbuf_t;
static void db_put(dbuf_t *d, const void *p, size_t n);

/* Writes one record.  may_hold: on a full disk the change may stay in
 * memory only (the store enters "held" mode: no record is written until a
 * compaction -- a complete image of memory -- succeeds; the service thread
 * retries it, see st_state_maybe_compact); otherwise a write error is
 * returned and the caller must not apply the change. */
static gt_err_t state_write(st_local_t *st, const uint8_t *b, size_t n,
                             bool may_hold);

static gt_err_t state_log(st_local_t *st, const st_srec_t *r, bool may_hold)
{
    sbuf_t s;
    srec_encode(r, &s);
    return state_write(st, s.b, s.n, may_hold);
}

gt_err_t st_state_log_kv(st_local_t *st, const st_srec_t *r)
{
    size_t n;
    uint8_t *b = kv_encode(r, &n);
    if (!b)
        return GT_ENOMEM;
    gt_err_t rc = state_write(st, b, n, false);
    free(b);
    return rc;
}

static gt_err_t state_write(st_local_t *st, const uint8_t *b, size_t n,
                            bool may_hold)
{
    if (st->state_held && !may_hold)
        return GT_ENOSPC;
    if (!st->state_held) {
        gt_err_t rc = st_file_pwrite_full(st, st->state_fd, b, n,
                                          st->state_end);
        if (rc != GT_OK) {
            (void)st->fops->ftruncate(st->fctx, st->state_fd,
                                      (off_t)st->state_end);
            if (rc != GT_ENOSPC || !may_hold) {
                GT_LOG(ERROR, "store", "state log write failed: %s",
                       gt_err_str(rc));
                return rc;
            }
            GT_LOG(WARN, "store", "state log: disk full; consumption state "
                   "is kept in memory until space returns (a crash before "
                   "then redelivers what was acked meanwhile)");
            st->state_held = true;
            st->state_retry_ms = st_mono_ms() + ST_HELD_RETRY_MS;
        } else {
            st->state_end += n;
            atomic_store(&st->state_dirty, true);
        }
    }
    if (st->state_tail)
        db_put(st->state_tail, b, n);
    else if (!st->state_held) {
        uint64_t thr = 2 * st->state_compacted;
        if (thr < st->cfg.state_compact_bytes)
            thr = st->cfg.state_compact_bytes;
        if (st->state_end >= thr && st->state_end - n < thr)
            pthread_cond_signal(&st->svc_cond); /* time to compact */
    }
    return GT_OK;
}

gt_err_t st_state_log(st_local_t *st, const st_srec_t *r)
{
    return state_log(st, r, true);
}

gt_err_t st_state_log_n(st_local_t *st, const st_srec_t *r, size_t n)
{
    sbuf_t s;
    uint8_t *b = NULL;
    size_t len = 0, cap = 0;

    if (n == 1)
        return state_log(st, r, true);
    for (size_t i = 0; i < n; i++) {
        srec_encode(&r[i], &s);
        if (len + s.n > cap) {
            size_t nc = cap ? 2 * cap : n * s.n;
            uint8_t *nb;
            if (nc < len + s.n)
                nc = len + s.n;
            if ((nb = realloc(b, nc)) == NULL) {
                free(b);
                return GT_ENOMEM;
            }
            b = nb;
            cap = nc;
        }
        memcpy(b + len, s.b, s.n);
        len += s.n;
    }
    gt_err_t rc = len ? state_write(st, b, len, true) : GT_OK;
    free(b);
    return rc;
}

void st_state_sync(st_local_t *st)
{
    pthread_mutex_lock(&st->lock);
    if (st->state_held) /* the service thread retries the compaction */
        pthread_cond_signal(&st->svc_cond);
    pthread_mutex_unlock(&st->lock);
    if (!atomic_exchange(&st->state_dirty, false))
        return;
    /* compaction may swap the fd: sync a duplicate, outside the lock.
     * Metadata records logged up to kv_seq are in the file synced -- if
     * it is still the state log afterwards (a compaction swapping it
     * meanwhile sets state_dirty: the next round syncs the new one). */
    pthread_mutex_lock(&st->lock);
    int fd = st->state_fd >= 0 ? dup(st->state_fd) : -1;
    uint64_t seq = st->kv_seq, gen = st->state_fd_gen;
    pthread_mutex_unlock(&st->lock);
    if (fd < 0)
        return;
    int r = st_timed_fdatasync(st, ST_SYNC_STATE, fd);
    close(fd);
    if (r < 0) {
        GT_LOG(ERROR, "store", "state log fdatasync failed: %s", strerror(-r));
        atomic_store(&st->state_dirty, true);
    }
    st_kv_synced(st, seq, gen, r < 0 ? st_errno_to_err(r) : GT_OK);
}

/* ---- replay -------------------------------------------------------------- */
static st_cs_t *replay_cs(st_local_t *st, const st_srec_t *r)
{
    st_group_rt_t *g = st_group_vivify(st, r->group);
    st_topic_rt_t *t = st_topic_vivify(st, r->topic);
    if (!g || !t || r->queue >= 1024 || st_topic_grow(t, r->queue + 1))
        return NULL;
    return st_cs_find(st, g, t, r->queue, true);
}

static gt_err_t replay_one(st_local_t *st, const st_srec_t *in)
{
    st_cs_t *cs = NULL;
    st_went_t *e;
    st_srec_t rr = *in, *r = &rr;
    if (r->type >= ST_SR_CS_INIT && r->type <= ST_SR_COMMIT) {
        if (!(cs = replay_cs(st, r)))
            return GT_ENOMEM;
        /* Offsets past the recovered end of the queue (a lost log tail, or
         * a bad record) are clamped: the window never outgrows the queue. */
        uint64_t end = st_cq_end(&st_topic_vivify(st, r->topic)->cq[r->queue]);
        if ((r->type == ST_SR_POP || r->type == ST_SR_ACK) && r->a >= end)
            return GT_OK;
        r->a = r->a > end ? end : r->a;
        r->b = r->b > end ? end : r->b;
        if (r->b < r->a && r->type != ST_SR_COMMIT)
            r->b = r->a;
    }
    if (cs && r->type != ST_SR_CS_INIT && !cs->init)
        return GT_OK; /* state for a queue whose init was lost */
    switch (r->type) {
    case ST_SR_TOPIC_PUT:
        return st_topic_put_locked(st, r->t);
    case ST_SR_TOPIC_DEL: {
        st_topic_rt_t *t = st_topic_find(st, r->group);
        if (t)
            t->deleted = true;
        return GT_OK;
    }
    case ST_SR_GROUP_PUT: {
        st_group_rt_t *g = st_group_vivify(st, r->g->name);
        if (!g)
            return GT_ENOMEM;
        g->meta = *r->g;
        g->deleted = false;
        return GT_OK;
    }
    case ST_SR_GROUP_DEL: {
        st_group_rt_t *g = st_group_find(st, r->group);
        if (g)
            g->deleted = true;
        return GT_OK;
    }
    case ST_SR_CS_INIT:
        cs->init = true;
        st_cs_reset(cs, r->a);
        return st_cs_extend(cs, r->b, ST_E_NONE);
    case ST_SR_POP:
        if (r->a < cs->commit)
            return GT_OK;
        if (r->a >= cs->pop && st_cs_extend(cs, r->a + 1, ST_E_NONE))
            return GT_ENOMEM;
        e = st_cs_at(cs, r->a);
        e->state = ST_E_INFLIGHT;
        e->attempt = r->attempt;
        e->deadline = r->deadline;
        e->gen = r->gen;
        if (r->deadline < cs->min_deadline)
            cs->min_deadline = r->deadline;
        if (r->gen >= st->next_gen)
            st->next_gen = r->gen + 1;
        return GT_OK;
    case ST_SR_ACK:
        if (r->a >= cs->commit && r->a < cs->pop)
            st_cs_at(cs, r->a)->state = ST_E_ACKED;
        st_cs_advance(cs);
        return GT_OK;
    case ST_SR_SKIP: /* a gap before `from` is held entries */
        if ((r->a > cs->pop && st_cs_extend(cs, r->a, ST_E_NONE)) ||
            (r->b > cs->pop && st_cs_extend(cs, r->b, ST_E_ACKED)))
            return GT_ENOMEM;
        for (uint64_t o = r->a > cs->commit ? r->a : cs->commit; o < r->b; o++)
            st_cs_at(cs, o)->state = ST_E_ACKED;
        st_cs_advance(cs);
        return GT_OK;
    case ST_SR_COMMIT:
        st_cs_move_commit(cs, r->a);
        return GT_OK;
    case ST_SR_GEN:
        if (r->gen > st->next_gen)
            st->next_gen = r->gen;
        return GT_OK;
    case ST_SR_META_PUT:
        return st_kv_apply(st, r->kv, r->kv_len, r->val, r->val_len, false);
    case ST_SR_META_DEL:
        return st_kv_apply(st, r->kv, r->kv_len, NULL, 0, true);
    default:
        return GT_ECORRUPT;
    }
}

/* Replays buf; *valid is the length of its good prefix (all of it when
 * every byte was a good record). */
static gt_err_t replay(st_local_t *st, const uint8_t *buf, size_t len,
                       size_t *valid)
{
    size_t off = 8;
    while (off < len) {
        srec_dec_t d;
        size_t used;
        gt_err_t rc = srec_decode(buf + off, len - off, &d, &used);
        if (rc == GT_OK && (rc = replay_one(st, &d.r)) == GT_ENOMEM)
            return rc;
        if (rc != GT_OK) {
            GT_LOG(WARN, "store", "state log: bad record at offset %zu "
                   "(%s); ignoring the rest", off, gt_err_str(rc));
            break;
        }
        off += used;
    }
    *valid = off;
    return GT_OK;
}

/* After replay: clamp every queue state into the retained consume queue and
 * turn holes (lost pop records) into expired deliveries. */
static void replay_finish(st_local_t *st)
{
    for (size_t i = 0; i < st->ngroups; i++)
        for (st_gtopic_t *gt = st->groups[i]->topics; gt; gt = gt->next)
            for (uint32_t q = 0; q < gt->ncs; q++) {
                st_cs_t *cs = &gt->cs[q];
                if (!cs->init || q >= gt->topic->nq)
                    continue;
                st_cs_clamp(cs, &gt->topic->cq[q]);
                for (uint64_t o = cs->commit; o < cs->pop; o++) {
                    st_went_t *e = st_cs_at(cs, o);
                    if (e->state == ST_E_DLQ) { /* move it again */
                        e->state = ST_E_INFLIGHT;
                        e->deadline = 0;
                        e->gen = st->next_gen++;
                    }
                    if (e->state == ST_E_NONE) /* held: re-checked on pop */
                        e->deadline = 0;
                    if (e->state != ST_E_ACKED)
                        cs->min_deadline = 0;
                }
            }
}

/* ---- compaction ------------------------------------------------------------ */
/* A growable byte buffer for snapshots and the compaction tail. */
struct dbuf {
    uint8_t *b;
    size_t n, cap;
    bool failed;
};

static void db_put(dbuf_t *d, const void *p, size_t n)
{
    if (d->failed)
        return;
    if (d->n + n > d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 64 * 1024;
        while (cap < d->n + n)
            cap *= 2;
        uint8_t *nb = realloc(d->b, cap);
        if (!nb) {
            d->failed = true;
            return;
        }
        d->b = nb;
        d->cap = cap;
    }
    memcpy(d->b + d->n, p, n);
    d->n += n;
}

static void snap_rec(dbuf_t *d, const st_srec_t *r)
{
    sbuf_t s;
    srec_encode(r, &s);
    db_put(d, s.b, s.n);
}

static void snap_cs(dbuf_t *d, const st_group_rt_t *g, const st_gtopic_t *gt)
{
    for (uint32_t q = 0; q < gt->ncs; q++) {
        st_cs_t *cs = &gt->cs[q];
        if (!cs->init)
            continue;
        st_srec_t r = {.type = ST_SR_CS_INIT, .group = g->meta.name,
                       .topic = gt->topic->meta.name, .queue = q,
                       .a = cs->commit, .b = cs->pop};
        snap_rec(d, &r);
        for (uint64_t o = cs->commit; o < cs->pop; o++) {
            st_went_t *e = st_cs_at(cs, o);
            if (e->state == ST_E_NONE)
                continue; /* held entries are holes on replay too */
            if (e->state == ST_E_ACKED) { /* a run of acks: one SKIP */
                uint64_t end = o + 1;
                while (end < cs->pop && st_cs_at(cs, end)->state == ST_E_ACKED)
                    end++;
                st_srec_t s = {.type = ST_SR_SKIP, .group = g->meta.name,
                               .topic = gt->topic->meta.name, .queue = q,
                               .a = o, .b = end};
                snap_rec(d, &s);
                o = end - 1;
                continue;
            }
            r.type = ST_SR_POP;
            r.a = o;
            r.attempt = e->attempt;
            r.deadline = e->deadline;
            r.gen = e->gen;
            snap_rec(d, &r);
        }
    }
}

/* The live state as a state log image (header included); lock held. */
static gt_err_t snapshot_build(st_local_t *st, dbuf_t *d)
{
    static const uint8_t hdr[8] = {0x47, 0x54, 0x53, 0x4C, 1, 0, 0, 0};
    db_put(d, hdr, sizeof(hdr));
    st_srec_t r = {.type = ST_SR_GEN, .gen = st->next_gen};
    snap_rec(d, &r);
    for (size_t i = 0; i < st->ntopics; i++) {
        if (st->topics[i]->deleted)
            continue;
        st_srec_t t = {.type = ST_SR_TOPIC_PUT, .t = &st->topics[i]->meta};
        snap_rec(d, &t);
    }
    for (size_t i = 0; i < st->ngroups; i++) {
        st_group_rt_t *g = st->groups[i];
        st_srec_t gr = {.type = ST_SR_GROUP_PUT, .g = &g->meta};
        snap_rec(d, &gr);
        if (g->deleted) {
            st_srec_t del = {.type = ST_SR_GROUP_DEL, .group = g->meta.name};
            snap_rec(d, &del);
        }
        for (st_gtopic_t *gt = g->topics; gt; gt = gt->next)
            snap_cs(d, g, gt);
    }
    for (size_t i = 0; i < st->nkv && !d->failed; i++) {
        st_srec_t kv = {.type = ST_SR_META_PUT};
        st_kv_rec(st->kv[i], &kv);
        size_t n;
        uint8_t *b = kv_encode(&kv, &n);
        if (!b)
            d->failed = true;
        else
            db_put(d, b, n);
        free(b);
    }
    return d->failed ? GT_ENOMEM : GT_OK;
}

/* Writes buf to a fresh file at path and fdatasyncs it. */
static gt_err_t write_synced(st_local_t *st, const char *path, const dbuf_t *d)
{
    int fd = st->fops->open(st->fctx, path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return st_errno_to_err(fd);
    gt_err_t rc = st_file_pwrite_full(st, fd, d->b, d->n, 0);
    if (rc == GT_OK) {
        int x = st->fops->fdatasync(st->fctx, fd);
        rc = x < 0 ? st_errno_to_err(x) : GT_OK;
    }
    st->fops->close(st->fctx, fd);
    return rc;
}

static gt_err_t snapshot(st_local_t *st, const char *tmp)
{
    dbuf_t d = {0};
    gt_err_t rc = snapshot_build(st, &d);
    if (rc == GT_OK)
        rc = write_synced(st, tmp, &d);
    free(d.b);
    return rc;
}

/* Run-time compaction, from the service thread with lock held (released
 * while the snapshot is written and synced).  Records logged meanwhile are
 * also kept in st->state_tail and appended to the new file before it
 * replaces the old one, so nothing logged during compaction is lost. */
void st_state_maybe_compact(st_local_t *st)
{
    uint64_t min = st->cfg.state_compact_bytes;
    bool force = st->state_force_compact;
    st->state_force_compact = false;
    if (st->state_held) { /* disk full: retry writing the image now and then */
        int64_t now = st_mono_ms();
        if (now < st->state_retry_ms && !force)
            return;
        force = true;
        st->state_retry_ms = now + ST_HELD_RETRY_MS;
    }
    if (st->state_tail || st->state_fd < 0 ||
        (!force && (st->state_end < min ||
                    st->state_end < 2 * st->state_compacted)))
        return;
    char path[4096], tmp[4096];
    dbuf_t snap = {0};
    snprintf(path, sizeof(path), "%s/state.log", st->dir);
    snprintf(tmp, sizeof(tmp), "%s/state.log.tmp", st->dir);
    dbuf_t *tail = calloc(1, sizeof(*tail));
    if (!tail || snapshot_build(st, &snap) != GT_OK) {
        free(tail);
        free(snap.b);
        return;
    }
    st->state_tail = tail;
    pthread_mutex_unlock(&st->lock);
    gt_err_t rc = write_synced(st, tmp, &snap);
    pthread_mutex_lock(&st->lock);
    int fd = -1;
    if (rc == GT_OK && !tail->failed)
        fd = st->fops->open(st->fctx, tmp, O_RDWR, 0);
    if (fd >= 0 && (tail->n == 0 ||
                    st_file_pwrite_full(st, fd, tail->b, tail->n, snap.n) ==
                        GT_OK) &&
        rename(tmp, path) == 0) {
        int old = st->state_fd;
        st->state_fd = fd;
        st->state_fd_gen++;
        st->state_ino = state_ino(fd);
        st->state_end = st->state_compacted = snap.n + tail->n;
        atomic_store(&st->state_dirty, true);
        if (old >= 0)
            st->fops->close(st->fctx, old);
        if (st->state_held)
            GT_LOG(WARN, "store", "state log written again: consumption "
                   "state held in memory while the disk was full is saved");
        st->state_held = false; /* the image holds everything in memory */
        GT_LOG(INFO, "store", "state log compacted to %zu bytes",
               snap.n + tail->n);
        fd = -1;
    } else {
        if (!st->state_held)
            GT_LOG(WARN, "store", "state log compaction failed; keeping "
                   "the log");
        unlink(tmp);
    }
    if (fd >= 0)
        st->fops->close(st->fctx, fd);
    st->state_tail = NULL;
    free(tail->b);
    free(tail);
    free(snap.b);
    pthread_mutex_unlock(&st->lock);
    (void)st_file_sync_dir(st, st->dir);
    pthread_mutex_lock(&st->lock);
}

gt_err_t st_state_open(st_local_t *st)
{
    char *path = NULL, *tmp = NULL;
    uint8_t *buf = NULL;
    gt_err_t rc = GT_ENOMEM;
    struct stat sb = {0};
    size_t valid = 0;
    int fd = -1;
    if (asprintf(&path, "%s/state.log", st->dir) < 0 ||
        asprintf(&tmp, "%s/state.log.tmp", st->dir) < 0)
        goto out;
    fd = st->fops->open(st->fctx, path, O_RDONLY, 0);
    if (fd >= 0 && fstat(fd, &sb) == 0 && sb.st_size >= 8) {
        if (!(buf = malloc((size_t)sb.st_size)))
            goto out;
        rc = st_file_pread_full(st, fd, buf, (size_t)sb.st_size, 0);
        if (rc != GT_OK)
            goto out;
        if (buf[0] != 0x47 || buf[1] != 0x54 || buf[2] != 0x53 ||
            buf[3] != 0x4C || buf[4] != 1) {
            GT_LOG(ERROR, "store", "%s: bad magic or version", path);
            rc = GT_ECORRUPT;
            goto out;
        }
        if ((rc = replay(st, buf, (size_t)sb.st_size, &valid)) != GT_OK)
            goto out;
    }
    replay_finish(st);
    /* A clean, small log is kept and appended to; otherwise compact now
     * (which also drops a torn tail). */
    if (!buf || valid != (size_t)sb.st_size ||
        (uint64_t)sb.st_size >= st->cfg.state_compact_bytes) {
        if ((rc = snapshot(st, tmp)) == GT_OK && rename(tmp, path) < 0)
            rc = GT_EIO;
        if (rc == GT_OK)
            rc = st_file_sync_dir(st, st->dir);
        if (rc == GT_ENOSPC && valid >= 8) {
            /* A full disk must not keep the store from starting: keep the
             * log, cut a torn tail (which frees space), go on. */
            unlink(tmp);
            GT_LOG(WARN, "store", "state log compaction at start failed: "
                   "disk full; keeping %s", path);
            rc = truncate(path, (off_t)valid) < 0 ? GT_EIO : GT_OK;
        }
        if (rc != GT_OK)
            goto out;
    }
    st->state_fd = st->fops->open(st->fctx, path, O_RDWR, 0);
    if (st->state_fd < 0) {
        rc = st_errno_to_err(st->state_fd);
        st->state_fd = -1;
        goto out;
    }
    st->state_end = (uint64_t)(stat(path, &sb) == 0 ? sb.st_size : 0);
    st->state_ino = state_ino(st->state_fd);
    st->state_compacted = st->state_end;
    /* Each run hands out generations from a fresh 2^32 block, logged first:
     * even if a crash loses the last pop records, a handle from before it
     * can never match a delivery made after it. */
    st->next_gen = (st->next_gen | 0xffffffffull) + 1;
    st_srec_t g = {.type = ST_SR_GEN, .gen = st->next_gen};
    rc = st_state_log(st, &g);
    if (rc == GT_OK && st->state_held) {
        /* Not logged (disk full): should this run crash before the record
         * is written, the next one would start from the same block.  Jump
         * far ahead instead (by a varying amount, so consecutive runs on a
         * full disk differ too); the held image records it later. */
        st->next_gen += ((uint64_t)(st_now_ms() & 0xffff) + 16) << 32;
    }
out:
    if (fd >= 0)
        st->fops->close(st->fctx, fd);
    free(buf);
    free(path);
    free(tmp);
    return rc;
}

void st_state_close(st_local_t *st)
{
    pthread_mutex_lock(&st->lock);
    if (st->state_held) { /* a last try to save what is held */
        st->state_force_compact = true;
        st_state_maybe_compact(st);
        if (st->state_held)
            GT_LOG(ERROR, "store", "closing with consumption state not "
                   "written (disk full): messages acked since will be "
                   "delivered again");
    }
    pthread_mutex_unlock(&st->lock);
    st_state_sync(st);
    st_kv_synced(st, 0, 0, GT_ESHUTDOWN); /* none should be left */
    if (st->state_fd >= 0)
        st->fops->close(st->fctx, st->state_fd);
    st->state_fd = -1;
}

void st_local_state_compact(st_store_t *s)
{
    st_local_t *st = (st_local_t *)s;
    pthread_mutex_lock(&st->lock);
    st->state_force_compact = true;
    st_state_maybe_compact(st);
    pthread_mutex_unlock(&st->lock);
}

/* ---- metadata operations --------------------------------------------------- */
static bool name_ok(const char *n)
{
    size_t len = n ? strlen(n) : 0;
    if (len == 0 || len > ST_NAME_MAX)
        return false;
    return strspn(n, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                     "0123456789_-%|.") == len;
}

gt_err_t st_topic_validate(const st_topic_t *t)
{
    if (!name_ok(t->name) || t->queue_count < 1 || t->queue_count > 1024 ||
        t->type > ST_TOPIC_MIXED || (t->perm & ~(ST_PERM_READ | ST_PERM_WRITE)))
        return GT_EINVAL;
    return GT_OK;
}

gt_err_t st_group_validate(const st_group_t *g)
{
    if (!name_ok(g->name) || g->max_delivery_attempts < 1 ||
        g->consume_from > ST_CONSUME_FROM_LAST ||
        g->retry.multiplier > 10000)
        return GT_EINVAL;
    return GT_OK;
}

/* Applies a topic definition (lock held); no logging. */
gt_err_t st_topic_put_locked(st_local_t *st, const st_topic_t *t)
{
    st_topic_rt_t *rt = st_topic_vivify(st, t->name);
    if (!rt || st_topic_grow(rt, t->queue_count) != GT_OK)
        return GT_ENOMEM;
    uint32_t qc = t->queue_count; /* queue counts never shrink */
    if (!rt->deleted && rt->meta.queue_count > qc)
        qc = rt->meta.queue_count;
    rt->meta = *t;
    rt->meta.queue_count = qc;
    rt->deleted = false;
    st_meta_topic_changed(st, rt);
    return GT_OK;
}

void st_topic_put_local(st_store_t *s, const st_topic_t *t, st_done_cb cb,
                        void *arg)
{
    st_local_t *st = (st_local_t *)s;
    gt_err_t rc = st_is_sys_name(t->name) ? GT_EINVAL : st_topic_validate(t);
    if (rc == GT_OK) {
        pthread_mutex_lock(&st->lock);
        st_srec_t r = {.type = ST_SR_TOPIC_PUT, .t = t};
        st_topic_rt_t *old = st_topic_find(st, t->name);
        /* re-declaring a topic unchanged (every start) logs nothing */
        if (!old || old->meta.type != t->type || old->meta.perm != t->perm ||
            old->meta.queue_count < t->queue_count)
            rc = state_log(st, &r, false);
        if (rc == GT_OK)
            rc = st_topic_put_locked(st, t);
        pthread_mutex_unlock(&st->lock);
    }
    cb(arg, rc);
}

void st_topic_delete_local(st_store_t *s, const char *name, st_done_cb cb,
                           void *arg)
{
    st_local_t *st = (st_local_t *)s;
    gt_err_t rc = GT_ENOTFOUND;
    pthread_mutex_lock(&st->lock);
    st_topic_rt_t *t = name && !st_is_sys_name(name) ? st_topic_find(st, name)
                                                     : NULL;
    if (t) {
        st_srec_t r = {.type = ST_SR_TOPIC_DEL, .group = name};
        rc = state_log(st, &r, false);
        if (rc == GT_OK) {
            t->deleted = true;
            st_meta_topic_changed(st, t);
        }
    }
    pthread_mutex_unlock(&st->lock);
    cb(arg, rc);
}

void st_topic_get_local(st_store_t *s, const char *name, st_topic_cb cb,
                        void *arg)
{
    st_local_t *st = (st_local_t *)s;
    st_topic_t *arr = NULL;
    size_t n = 0;
    gt_err_t rc = GT_OK;
    pthread_mutex_lock(&st->lock);
    if (name) { /* one topic: a hash lookup, no list */
        st_topic_rt_t *t = st_topic_find(st, name);
        st_topic_t one = t ? t->meta : (st_topic_t){.queue_count = 0};
        pthread_mutex_unlock(&st->lock);
        cb(arg, t ? GT_OK : GT_ENOTFOUND, t ? &one : NULL, t ? 1 : 0);
        return;
    }
    if (st->ntopics && !(arr = malloc(st->ntopics * sizeof(*arr))))
        rc = GT_ENOMEM;
    for (size_t i = 0; rc == GT_OK && i < st->ntopics; i++) {
        st_topic_rt_t *t = st->topics[i];
        if (!t->deleted && (!name || strcmp(name, t->meta.name) == 0) &&
            (name || !st_is_sys_name(t->meta.name)))
            arr[n++] = t->meta;
    }
    pthread_mutex_unlock(&st->lock);
    if (rc == GT_OK && name && n == 0)
        rc = GT_ENOTFOUND;
    cb(arg, rc, rc == GT_OK ? arr : NULL, rc == GT_OK ? n : 0);
    free(arr);
}

void st_group_put_local(st_store_t *s, const st_group_t *g, st_done_cb cb,
                        void *arg)
{
    st_local_t *st = (st_local_t *)s;
    gt_err_t rc = st_is_sys_name(g->name) ? GT_EINVAL : st_group_validate(g);
    if (rc == GT_OK) {
        pthread_mutex_lock(&st->lock);
        st_group_rt_t *rt = st_group_vivify(st, g->name);
        st_srec_t r = {.type = ST_SR_GROUP_PUT, .g = g};
        const st_group_t *o = rt ? &rt->meta : NULL;
        bool same = o && !rt->deleted &&
                    o->max_delivery_attempts == g->max_delivery_attempts &&
                    o->fifo == g->fifo && o->consume_from == g->consume_from &&
                    o->retry.initial_ms == g->retry.initial_ms &&
                    o->retry.max_ms == g->retry.max_ms &&
                    o->retry.multiplier == g->retry.multiplier;
        /* re-declaring a group unchanged (every start) logs nothing */
        rc = !rt ? GT_ENOMEM : same ? GT_OK : state_log(st, &r, false);
        if (rc == GT_OK) {
            rt->meta = *g;
            rt->deleted = false;
            st_meta_group_changed(st, rt);
        }
        pthread_mutex_unlock(&st->lock);
    }
    cb(arg, rc);
}

void st_group_delete_local(st_store_t *s, const char *name, st_done_cb cb,
                           void *arg)
{
    st_local_t *st = (st_local_t *)s;
    gt_err_t rc = GT_ENOTFOUND;
    pthread_mutex_lock(&st->lock);
    st_group_rt_t *g = name ? st_group_find(st, name) : NULL;
    if (g && !g->deleted) {
        st_srec_t r = {.type = ST_SR_GROUP_DEL, .group = name};
        rc = state_log(st, &r, false);
        if (rc == GT_OK) {
            g->deleted = true;
            st_meta_group_changed(st, g);
        }
    }
    pthread_mutex_unlock(&st->lock);
    cb(arg, rc);
}

void st_group_get_local(st_store_t *s, const char *name, st_group_cb cb,
                        void *arg)
{
    st_local_t *st = (st_local_t *)s;
    st_group_t *arr = NULL;
    size_t n = 0;
    gt_err_t rc = GT_OK;
    pthread_mutex_lock(&st->lock);
    if (name) { /* one group: a hash lookup, no list */
        st_group_rt_t *g = st_group_find(st, name);
        st_group_t one = g ? g->meta : (st_group_t){.fifo = false};
        pthread_mutex_unlock(&st->lock);
        cb(arg, g ? GT_OK : GT_ENOTFOUND, g ? &one : NULL, g ? 1 : 0);
        return;
    }
    if (st->ngroups && !(arr = malloc(st->ngroups * sizeof(*arr))))
        rc = GT_ENOMEM;
    for (size_t i = 0; rc == GT_OK && i < st->ngroups; i++) {
        st_group_rt_t *g = st->groups[i];
        if (!g->deleted && (!name || strcmp(name, g->meta.name) == 0))
            arr[n++] = g->meta;
    }
    pthread_mutex_unlock(&st->lock);
    if (rc == GT_OK && name && n == 0)
        rc = GT_ENOTFOUND;
    cb(arg, rc, rc == GT_OK ? arr : NULL, rc == GT_OK ? n : 0);
    free(arr);
}
