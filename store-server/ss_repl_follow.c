/* ss_repl_follow: a follower's fetch loop (docs/store-protocol.md, Replication).  A chain
 * of fetches on one ReplicaStream to its leader (a long poll per request;
 * on the follower's own gRPC client, each answer is handled, and the next
 * request sent, on that client's completion thread; a thread of its own
 * opens the stream and, when it ends, backs off and opens another) checks
 * every record it receives (magic, length, CRC and
 * structure, with the engine's own checks; a commitlog record's stored
 * position must be where it goes), writes them to the same files at the
 * same offsets, fdatasyncs, and only then asks again: the next request
 * acknowledges them.  A new state log stream is filled into
 * state.log.repl and renamed over state.log once it holds the length the
 * leader names (the stream's identity, (epoch, inode), is kept in
 * repl.state).  The leader's epoch history is kept as far as this node
 * holds the log; segments below the leader's first retained one are
 * deleted; a truncation the leader asks for is done first.  The
 * follower writes a checkpoint after each sync so that the engine, opened
 * on this directory at promotion, knows what is synced. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gt_le.h"
#include "gt_log.h"
#include "px_rpc_client.h"
#include "ss_repl_int.h"

typedef Gantry__Store__V1__ReplicaFetchRequest ss_fetch_req_t;
typedef Gantry__Store__V1__ReplicaFetchResponse ss_fetch_resp_t;

struct ss_follow {
    ss_repl_t *r;
    const char *dir;
    char node_id[SS_REPL_ID_MAX];
    char leader_id[SS_REPL_ID_MAX];
    char addr[256];
    int64_t epoch;
    pthread_t th;
    px_rpc_client_t *cli;
    /* guarded by mu: the stream in flight, stop */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    px_ccall_t *call;          /* the ReplicaStream, while open */
    int64_t answer_ms;         /* its last answer (or its start) */
    bool stop, done, progress;
    grpc_status_code code;     /* how the chain ended */
    gt_err_t rc;
    char details[160];
    _Atomic uint64_t cl_pub;   /* cl_next for other threads */
    /* fetch thread only */
    uint64_t cl_next;
    uint64_t seg_base;
    int seg_fd;                /* segment cl_next is in; -1 none */
    uint64_t seg_wb, seg_drop; /* its offsets: written back from, kept from */
    bool seg_dirty, dir_dirty;
    int ck_fd;
    uint64_t ck_seq;
    int64_t st_epoch, st_gen;
    uint64_t st_ino, st_off;
    int st_fd;
    bool st_dirty;
    bool tmp_on;
    int64_t tmp_epoch, tmp_gen;
    uint64_t tmp_ino, tmp_off, tmp_swap;
    int tmp_fd;
    ss_hist_t hist;
    int64_t log_ms;            /* last error line (rate limit) */
    uint32_t wait_ms;          /* long poll per request */
    uint64_t dropped_below;    /* segments below it are gone (the
                                  leader's first_segment, last applied) */
};

uint64_t ss_follow_cl_next(ss_follow_t *f)
{
    return atomic_load(&f->cl_pub);
}

static void path_of(const ss_follow_t *f, const char *name, char *out,
                    size_t size)
{
    snprintf(out, size, "%s/%s", f->dir, name);
}

/* repl.state: (epoch, inode, generation) of the stream in state.log. */
static void stream_load(ss_follow_t *f)
{
    ss_stream_id_t id;

    ss_stream_id_load(f->dir, &id);
    f->st_epoch = id.epoch;
    f->st_ino = id.ino;
    f->st_gen = id.gen;
}

static gt_err_t stream_save(ss_follow_t *f)
{
    ss_stream_id_t id = { .epoch = f->st_epoch, .ino = f->st_ino,
                          .gen = f->st_gen };
    return ss_stream_id_save(f->dir, &id);
}

static void seg_close(ss_follow_t *f)
{
    if (f->seg_fd >= 0)
        close(f->seg_fd);
    f->seg_fd = -1;
    f->seg_wb = f->seg_drop = 0;
}

/* A follower does not read its commitlog while it follows, so its pages
 * need not stay cached: every SS_DROP_STEP bytes, the range written since
 * the last step is handed to writeback, and the range handed over the step
 * before is dropped from the page cache once written back (a wait only
 * when the disk is more than a step behind; the kernel drops clean pages
 * only).  New pages are then recycled ones: on a VM that reports free
 * memory to its host, a write into pages not touched for seconds costs
 * several times the copy (docs/cluster.md, "Where the time goes"), and
 * the cache stays the leader's hot data's. */
#define SS_DROP_STEP (8u << 20)

static void seg_drop_behind(ss_follow_t *f)
{
    uint64_t end = f->cl_next - f->seg_base;

    if (f->seg_fd < 0 || end < f->seg_wb + SS_DROP_STEP)
        return;
    if (f->seg_wb > f->seg_drop) {
        (void)sync_file_range(f->seg_fd, (off_t)f->seg_drop,
                              (off_t)(f->seg_wb - f->seg_drop),
                              SYNC_FILE_RANGE_WAIT_BEFORE);
        (void)posix_fadvise(f->seg_fd, (off_t)f->seg_drop,
                            (off_t)(f->seg_wb - f->seg_drop),
                            POSIX_FADV_DONTNEED);
    }
    f->seg_drop = f->seg_wb;
    (void)sync_file_range(f->seg_fd, (off_t)f->seg_wb,
                          (off_t)(end - f->seg_wb), SYNC_FILE_RANGE_WRITE);
    f->seg_wb = end;
}

/* Opens the segment holding cl_next (the last one at or below it). */
static gt_err_t seg_open_cur(ss_follow_t *f)
{
    uint64_t *bases;
    size_t n;
    char p[4096];
    gt_err_t rc;

    seg_close(f);
    if ((rc = ss_segs_list(f->dir, &bases, &n)) != GT_OK)
        return rc;
    while (n > 0 && bases[n - 1] > f->cl_next)
        n--;
    if (n > 0) {
        f->seg_base = bases[n - 1];
        ss_seg_path(f->dir, f->seg_base, p, sizeof(p));
        if ((f->seg_fd = open(p, O_RDWR)) < 0)
            rc = GT_EIO;
        f->seg_wb = f->seg_drop = f->cl_next - f->seg_base;
    }
    free(bases);
    return rc;
}

static uint64_t ck_next_seq(ss_follow_t *f)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t s = (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
    f->ck_seq = s > f->ck_seq ? s : f->ck_seq + 1;
    return f->ck_seq;
}

static gt_err_t truncate_to(ss_follow_t *f, uint64_t pos)
{
    uint64_t *bases;
    size_t n;
    gt_err_t rc;

    GT_LOG(WARN, "repl", "truncating the commitlog from %llu to %llu "
           "(not the leader's history)", (unsigned long long)f->cl_next,
           (unsigned long long)pos);
    seg_close(f);
    if ((rc = ss_segs_list(f->dir, &bases, &n)) != GT_OK)
        return rc;
    for (size_t i = n; i > 0 && rc == GT_OK; i--) {
        char p[4096];
        ss_seg_path(f->dir, bases[i - 1], p, sizeof(p));
        if (bases[i - 1] >= pos) {
            unlink(p);
            continue;
        }
        int fd = open(p, O_RDWR);
        if (fd < 0 || ftruncate(fd, (off_t)(pos - bases[i - 1])) != 0 ||
            fdatasync(fd) != 0)
            rc = GT_EIO;
        if (fd >= 0)
            close(fd);
        break;
    }
    free(bases);
    if (rc == GT_OK)
        rc = ss_sync_dir(f->dir);
    if (rc != GT_OK)
        return rc;
    f->cl_next = pos;
    atomic_store(&f->cl_pub, pos);
    if (f->ck_fd >= 0 &&
        (st_checkpoint_write(f->ck_fd, ck_next_seq(f), pos) != GT_OK ||
         fdatasync(f->ck_fd) != 0))
        return GT_EIO;
    /* history entries past the new end are not ours */
    while (f->hist.n > 0 && f->hist.e[f->hist.n - 1].pos > pos)
        f->hist.n--;
    if ((rc = ss_hist_save(f->dir, &f->hist)) != GT_OK)
        return rc;
    ss_repl_set_hist(f->r, &f->hist);
    return seg_open_cur(f);
}

/* Checks that data (at file offset off of segment base) is whole valid
 * records, each stored at its own position. */
static gt_err_t check_records(uint64_t base, uint64_t off, const uint8_t *d,
                              size_t len)
{
    size_t at = 0, used;

    if (off == 0) {
        uint64_t hb;
        if (st_seg_hdr_check(d, len, &hb) != GT_OK || hb != base)
            return GT_ECORRUPT;
        at = 64;
    }
    while (at < len) {
        if (st_record_check(d + at, len - at, &used) != GT_OK ||
            gt_le64_get(d + at + 28) != base + off + at)
            return GT_ECORRUPT;
        at += used;
    }
    return GT_OK;
}

static gt_err_t pwrite_full(int fd, const uint8_t *d, size_t len, uint64_t off)
{
    while (len > 0) {
        ssize_t w = pwrite(fd, d, len, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return errno == ENOSPC ? GT_ENOSPC : GT_EIO;
        d += w;
        len -= (size_t)w;
        off += (uint64_t)w;
    }
    return GT_OK;
}

static gt_err_t apply_chunk(ss_follow_t *f,
                            const Gantry__Store__V1__CommitlogChunk *c)
{
    const uint8_t *d = c->data.data;
    size_t len = c->data.len;
    uint64_t base = c->segment_base, off = c->file_offset;
    gt_err_t rc;

    if (len == 0)
        return GT_OK;
    if ((rc = check_records(base, off, d, len)) != GT_OK) {
        GT_LOG(ERROR, "repl", "refusing commitlog bytes from the leader at "
               "%llu+%llu: bad record", (unsigned long long)base,
               (unsigned long long)off);
        return rc;
    }
    if (off == 0) {
        char p[4096], dir[4096];
        if (base < f->cl_next)
            return GT_ECORRUPT;
        if (f->seg_fd >= 0) { /* the previous segment is complete */
            if (f->seg_dirty && fdatasync(f->seg_fd) != 0)
                return GT_EIO;
            f->seg_dirty = false;
            /* synced, so clean: its tail (what seg_drop_behind has not
             * dropped yet, up to two steps) need not stay cached either */
            (void)posix_fadvise(f->seg_fd, (off_t)f->seg_drop, 0,
                                POSIX_FADV_DONTNEED);
        }
        seg_close(f);
        snprintf(dir, sizeof(dir), "%s/commitlog", f->dir);
        mkdir(dir, 0755);
        ss_seg_path(f->dir, base, p, sizeof(p));
        if ((f->seg_fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644)) < 0)
            return GT_EIO;
        f->seg_base = base;
        f->dir_dirty = true;
    } else if (f->seg_fd < 0 || base != f->seg_base ||
               base + off != f->cl_next) {
        return GT_ECORRUPT;
    }
    if ((rc = pwrite_full(f->seg_fd, d, len, off)) != GT_OK)
        return rc;
    f->seg_dirty = true;
    f->cl_next = base + off + len;
    seg_drop_behind(f);
    return GT_OK;
}

static gt_err_t check_state(uint64_t off, const uint8_t *d, size_t len)
{
    size_t at = 0, used;

    if (off == 0) {
        if (st_state_hdr_check(d, len) != GT_OK)
            return GT_ECORRUPT;
        at = 8;
    }
    while (at < len) {
        if (st_state_rec_check(d + at, len - at, &used) != GT_OK)
            return GT_ECORRUPT;
        at += used;
    }
    return GT_OK;
}

static gt_err_t apply_state(ss_follow_t *f, const ss_fetch_resp_t *s)
{
    const uint8_t *d = s->state_data.data;
    size_t len = s->state_data.len;
    bool cur = !f->tmp_on && s->state_epoch == f->st_epoch &&
               s->state_ino == f->st_ino;
    bool tmp = f->tmp_on && s->state_epoch == f->tmp_epoch &&
               s->state_ino == f->tmp_ino;
    gt_err_t rc;

    if (s->state_epoch == 0)
        return GT_OK;
    if (len > 0 && check_state(s->state_offset, d, len) != GT_OK) {
        GT_LOG(ERROR, "repl", "refusing state log bytes from the leader at "
               "%llu: bad record", (unsigned long long)s->state_offset);
        return GT_ECORRUPT;
    }
    if (cur) {
        if (s->state_offset != f->st_off)
            return GT_ECORRUPT;
        if (len == 0)
            return GT_OK;
        if (f->st_fd < 0) {
            char p[4096];
            path_of(f, "state.log", p, sizeof(p));
            if ((f->st_fd = open(p, O_RDWR)) < 0)
                return GT_EIO;
        }
        if ((rc = pwrite_full(f->st_fd, d, len, f->st_off)) != GT_OK)
            return rc;
        f->st_off += len;
        f->st_dirty = true;
        return GT_OK;
    }
    if (!tmp) { /* a new stream: fill state.log.repl from 0 */
        char p[4096];
        if (s->state_offset != 0)
            return GT_ECORRUPT;
        if (f->tmp_fd >= 0)
            close(f->tmp_fd);
        path_of(f, "state.log.repl", p, sizeof(p));
        if ((f->tmp_fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644)) < 0)
            return GT_EIO;
        f->tmp_on = true;
        f->tmp_epoch = s->state_epoch;
        f->tmp_gen = s->state_gen;
        f->tmp_ino = s->state_ino;
        f->tmp_off = 0;
        f->tmp_swap = s->state_swap_len;
    } else if (s->state_offset != f->tmp_off) {
        return GT_ECORRUPT;
    }
    if (len > 0 && (rc = pwrite_full(f->tmp_fd, d, len, f->tmp_off)) != GT_OK)
        return rc;
    f->tmp_off += len;
    return GT_OK;
}

/* After the data is synced: swap a complete new stream in. */
static gt_err_t state_swap(ss_follow_t *f)
{
    char p[4096], t[4096];

    if (!f->tmp_on || f->tmp_off < f->tmp_swap || f->tmp_off < 8)
        return GT_OK;
    path_of(f, "state.log", p, sizeof(p));
    path_of(f, "state.log.repl", t, sizeof(t));
    if (fdatasync(f->tmp_fd) != 0 || rename(t, p) != 0)
        return GT_EIO;
    if (f->st_fd >= 0)
        close(f->st_fd);
    f->st_fd = f->tmp_fd;
    f->tmp_fd = -1;
    f->tmp_on = false;
    f->st_epoch = f->tmp_epoch;
    f->st_gen = f->tmp_gen;
    f->st_ino = f->tmp_ino;
    f->st_off = f->tmp_off;
    return stream_save(f); /* syncs the directory too */
}

static void drop_old_segments(ss_follow_t *f, uint64_t first)
{
    uint64_t *bases;
    size_t n;

    /* segments are only ever made at or above the leader's first one:
     * the directory is listed again only when that moves */
    if (first == 0 || first <= f->dropped_below ||
        ss_segs_list(f->dir, &bases, &n) != GT_OK)
        return;
    for (size_t i = 0; i < n && bases[i] < first; i++) {
        char p[4096];
        if (f->seg_fd >= 0 && bases[i] == f->seg_base)
            seg_close(f);
        ss_seg_path(f->dir, bases[i], p, sizeof(p));
        unlink(p);
    }
    free(bases);
    f->dropped_below = first;
}

/* The leader's history, as far as this node holds the log. */
static void hist_merge(ss_follow_t *f, const ss_fetch_resp_t *s)
{
    ss_hist_t *h = malloc(sizeof(*h));
    bool changed = false;

    if (h == NULL)
        return;
    h->n = 0;
    for (size_t i = 0; i < s->n_history && h->n < SS_REPL_MAX_HIST; i++) {
        if (s->history[i]->cl_pos > f->cl_next)
            break;
        h->e[h->n].epoch = s->history[i]->epoch;
        h->e[h->n].pos = s->history[i]->cl_pos;
        h->n++;
    }
    if (h->n != f->hist.n)
        changed = true;
    for (size_t i = 0; !changed && i < h->n; i++)
        changed = h->e[i].epoch != f->hist.e[i].epoch ||
                  h->e[i].pos != f->hist.e[i].pos;
    if (changed && ss_hist_save(f->dir, h) == GT_OK) {
        f->hist = *h;
        ss_repl_set_hist(f->r, h);
    }
    free(h);
}

/* Sleeps ms unless stopped.  Returns false when stopping. */
static bool nap(ss_follow_t *f, int64_t ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&f->mu);
    if (!f->stop)
        pthread_cond_timedwait(&f->cv, &f->mu, &ts);
    bool go = !f->stop;
    pthread_mutex_unlock(&f->mu);
    return go;
}

static void fail_log(ss_follow_t *f, const char *what)
{
    int64_t now = ss_repl_now_ms();
    if (now - f->log_ms >= 5000) {
        f->log_ms = now;
        GT_LOG(WARN, "repl", "fetch from %s (%s): %s", f->leader_id, f->addr,
               what);
    }
}

/* One answer: apply, sync, then the next request acknowledges it. */
static gt_err_t apply(ss_follow_t *f, const ss_fetch_resp_t *s)
{
    gt_err_t rc = GT_OK;

    if (s->leader_epoch > f->epoch) {
        ss_repl_newer_epoch(f->r, s->leader_epoch);
        return GT_AGAIN;
    }
    if (s->err != GANTRY__STORE__V1__ERROR_CODE__OK ||
        s->leader_epoch != f->epoch)
        return GT_AGAIN;
    if (s->truncate)
        return truncate_to(f, s->truncate_to);
    drop_old_segments(f, s->first_segment);
    for (size_t i = 0; i < s->n_chunks && rc == GT_OK; i++)
        rc = apply_chunk(f, s->chunks[i]);
    /* durable before the next request acknowledges it (flush: async, as
     * the leader's appends: written; the engine's flusher syncs once this
     * node leads).  The commitlog is synced before any state log byte of
     * the answer is written: a state position this node holds (after a
     * crash too) never runs ahead of the commitlog the leader had when it
     * wrote those records, which makes followers' positions comparable in
     * an election (docs/cluster.md, "Positions"). */
    if (f->seg_dirty && f->seg_fd >= 0) {
        if (!ss_repl_cfg(f->r)->flush_async && fdatasync(f->seg_fd) != 0)
            rc = GT_EIO;
        f->seg_dirty = false;
    }
    if (f->dir_dirty) {
        char d[4096];
        snprintf(d, sizeof(d), "%s/commitlog", f->dir);
        if (ss_sync_dir(d) != GT_OK)
            rc = GT_EIO;
        f->dir_dirty = false;
    }
    if (rc == GT_OK)
        rc = apply_state(f, s);
    if (f->st_dirty && f->st_fd >= 0) {
        if (!ss_repl_cfg(f->r)->flush_async && fdatasync(f->st_fd) != 0)
            rc = GT_EIO;
        f->st_dirty = false;
    }
    if (f->tmp_on && f->tmp_fd >= 0 && fdatasync(f->tmp_fd) != 0)
        rc = GT_EIO;
    if (rc == GT_OK)
        rc = state_swap(f);
    if (f->ck_fd >= 0 && s->n_chunks > 0 && !ss_repl_cfg(f->r)->flush_async &&
        rc == GT_OK) /* never more than what is synced */
        st_checkpoint_write(f->ck_fd, ck_next_seq(f), f->cl_next);
    atomic_store(&f->cl_pub, f->cl_next);
    if (rc == GT_OK)
        hist_merge(f, s);
    return rc;
}

/* The next request (it acknowledges everything applied), packed. */
static uint8_t *req_pack(ss_follow_t *f, size_t *len)
{
    ss_fetch_req_t req = GANTRY__STORE__V1__REPLICA_FETCH_REQUEST__INIT;
    uint8_t *buf;

    req.epoch = f->epoch;
    req.node_id = f->node_id;
    req.cl_next = f->cl_next;
    req.last_epoch = ss_hist_last_epoch(&f->hist);
    req.state_epoch = f->tmp_on ? f->tmp_epoch : f->st_epoch;
    req.state_ino = f->tmp_on ? f->tmp_ino : f->st_ino;
    req.state_offset = f->tmp_on ? f->tmp_off : f->st_off;
    req.max_bytes = SS_REPL_CHUNK_BYTES;
    req.wait_ms = f->wait_ms;
    *len = protobuf_c_message_get_packed_size(&req.base);
    if ((buf = malloc(*len > 0 ? *len : 1)) == NULL)
        return NULL;
    protobuf_c_message_pack(&req.base, buf);
    return buf;
}

static void on_answer(void *arg, const uint8_t *resp, size_t len);
static void on_close(void *arg, grpc_status_code code, const char *details);
static const px_stream_cbs_t chain_cbs = {on_answer, on_close};

/* The fetch thread: opens the stream with its first request. */
static gt_err_t chain_start(ss_follow_t *f)
{
    size_t len;
    uint8_t *buf = req_pack(f, &len);
    gt_err_t rc;

    if (buf == NULL)
        return GT_ENOMEM;
    /* mu held: the first answer (on the client's thread) finds f->call. */
    pthread_mutex_lock(&f->mu);
    f->answer_ms = ss_repl_now_ms();
    rc = px_rpc_bidi(f->cli, "/gantry.store.v1.Store/ReplicaStream", buf, len,
                     NULL, &chain_cbs, f, &f->call);
    pthread_mutex_unlock(&f->mu);
    free(buf);
    return rc;
}

/* On the client's thread, after an answer was applied. */
static gt_err_t chain_next(ss_follow_t *f)
{
    size_t len;
    uint8_t *buf = req_pack(f, &len);
    gt_err_t rc = GT_ESHUTDOWN;

    if (buf == NULL)
        return GT_ENOMEM;
    pthread_mutex_lock(&f->mu);
    if (!f->stop && f->call != NULL)
        rc = px_ccall_send(f->call, buf, len);
    pthread_mutex_unlock(&f->mu);
    free(buf);
    return rc;
}

/* On the client's completion thread (the client is this follower's own,
 * with one thread and no executor): an answer is applied and the next
 * request sent on the stream right here, so that the acknowledgement
 * leaves without waking another thread.  Anything else (an answer that
 * cannot be applied, a stop) cancels the stream; its close ends the chain
 * (the fetch thread then backs off and opens another). */
static void on_answer(void *arg, const uint8_t *resp, size_t len)
{
    ss_follow_t *f = arg;
    ss_fetch_resp_t *s = (void *)protobuf_c_message_unpack(
        &gantry__store__v1__replica_fetch_response__descriptor, NULL, len, resp);
    gt_err_t rc = s != NULL ? apply(f, s) : GT_EINVAL;

    if (s != NULL)
        protobuf_c_message_free_unpacked(&s->base, NULL);
    pthread_mutex_lock(&f->mu);
    f->answer_ms = ss_repl_now_ms();
    if (rc == GT_OK)
        f->progress = true;
    pthread_mutex_unlock(&f->mu);
    if (rc == GT_OK && (rc = chain_next(f)) == GT_OK)
        return;
    pthread_mutex_lock(&f->mu);
    if (f->rc == GT_OK)
        f->rc = rc;
    if (f->call != NULL)
        px_ccall_cancel(f->call);
    pthread_mutex_unlock(&f->mu);
}

static void on_close(void *arg, grpc_status_code code, const char *details)
{
    ss_follow_t *f = arg;

    pthread_mutex_lock(&f->mu);
    f->code = code;
    snprintf(f->details, sizeof(f->details), "%s", details ? details : "");
    f->done = true;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

/* Opens the stream and, each time it ends on an error, backs off and
 * opens another.  A stream with no answer for wait_ms + 10 s (a leader
 * that stopped answering but whose connection lives) is cancelled. */
static void *follow_main(void *arg)
{
    ss_follow_t *f = arg;
    int64_t backoff = 50;

    for (;;) {
        pthread_mutex_lock(&f->mu);
        f->done = false;
        f->progress = false;
        f->rc = GT_OK;
        f->code = GRPC_STATUS_OK;
        f->details[0] = '\0';
        bool stop = f->stop;
        pthread_mutex_unlock(&f->mu);
        if (stop)
            break;
        gt_err_t rc = chain_start(f);
        if (rc != GT_OK) {
            fail_log(f, gt_err_str(rc));
            if (!nap(f, backoff))
                break;
            continue;
        }
        pthread_mutex_lock(&f->mu);
        while (!f->done && !f->stop) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&f->cv, &f->mu, &ts);
            if (!f->done && ss_repl_now_ms() - f->answer_ms >
                                (int64_t)f->wait_ms + 10000) {
                if (f->rc == GT_OK)
                    f->rc = GT_ETIMEDOUT;
                px_ccall_cancel(f->call);
                f->answer_ms = INT64_MAX / 2; /* once */
            }
        }
        px_ccall_t *k = f->call;
        f->call = NULL;
        if (f->stop) {
            pthread_mutex_unlock(&f->mu);
            px_ccall_cancel(k);
            px_ccall_unref(k);
            break;
        }
        grpc_status_code code = f->code;
        rc = f->rc;
        if (f->progress)
            backoff = 50;
        if (rc != GT_OK)
            fail_log(f, gt_err_str(rc));
        else if (code != GRPC_STATUS_OK)
            fail_log(f, f->details[0] ? f->details : "call failed");
        pthread_mutex_unlock(&f->mu);
        px_ccall_unref(k);
        if (!nap(f, backoff))
            break;
        backoff = backoff * 2 > 1000 ? 1000 : backoff * 2;
    }
    return NULL;
}

gt_err_t ss_follow_start(ss_repl_t *r, int64_t epoch, const char *leader_id,
                         const char *addr, ss_follow_t **out)
{
    const ss_repl_config_t *cfg = ss_repl_cfg(r);
    ss_follow_t *f = calloc(1, sizeof(*f));
    char p[4096];
    const char *eps[1];
    px_rpc_client_opts_t o;
    gt_err_t rc;

    *out = NULL;
    if (f == NULL)
        return GT_ENOMEM;
    f->r = r;
    f->dir = cfg->data_dir;
    snprintf(f->node_id, sizeof(f->node_id), "%s", cfg->node_id);
    snprintf(f->leader_id, sizeof(f->leader_id), "%s", leader_id);
    snprintf(f->addr, sizeof(f->addr), "%s", addr);
    f->epoch = epoch;
    f->wait_ms = (uint32_t)(cfg->replica_lag_ms > 0 ? cfg->replica_lag_ms / 4 : 250);
    if (f->wait_ms < 20)
        f->wait_ms = 20;
    if (f->wait_ms > 1000)
        f->wait_ms = 1000;
    f->seg_fd = f->st_fd = f->tmp_fd = f->ck_fd = -1;
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    /* what this node holds (cut torn tails) */
    if ((rc = ss_cl_scan_end(f->dir, true, &f->cl_next)) != GT_OK ||
        (rc = ss_hist_load(f->dir, &f->hist)) != GT_OK)
        goto fail;
    atomic_init(&f->cl_pub, f->cl_next);
    if ((rc = seg_open_cur(f)) != GT_OK)
        goto fail;
    stream_load(f);
    path_of(f, "state.log", p, sizeof(p));
    if ((rc = ss_state_scan(p, true, &f->st_off)) != GT_OK)
        goto fail;
    if (f->st_off == 0)
        f->st_epoch = 0, f->st_ino = 0, f->st_gen = 0; /* fetch anew */
    path_of(f, "checkpoint", p, sizeof(p));
    if ((f->ck_fd = open(p, O_RDWR | O_CREAT, 0644)) < 0) {
        rc = GT_EIO;
        goto fail;
    }
    if (f->seg_fd < 0 || fdatasync(f->seg_fd) == 0)
        st_checkpoint_write(f->ck_fd, ck_next_seq(f), f->cl_next);
    eps[0] = f->addr;
    memset(&o, 0, sizeof(o));
    o.endpoints = eps;
    o.n_endpoints = 1;
    o.channels_per_endpoint = 1;
    o.threads = 1;
    o.max_receive_bytes = 2 * SS_REPL_CHUNK_BYTES + (640u << 20);
    o.keepalive_ms = 2000;
    if ((rc = px_rpc_client_new(&o, &f->cli)) != GT_OK)
        goto fail;
    if (pthread_create(&f->th, NULL, follow_main, f) != 0) {
        rc = GT_ENOMEM;
        goto fail;
    }
    *out = f;
    return GT_OK;
fail:
    px_rpc_client_free(f->cli);
    seg_close(f);
    if (f->ck_fd >= 0)
        close(f->ck_fd);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(f);
    return rc;
}

void ss_follow_stop(ss_follow_t *f)
{
    if (f == NULL)
        return;
    pthread_mutex_lock(&f->mu);
    f->stop = true;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    pthread_join(f->th, NULL);
    px_rpc_client_free(f->cli); /* runs the last answer's callback */
    if (f->seg_fd >= 0 && fdatasync(f->seg_fd) == 0 && f->ck_fd >= 0)
        st_checkpoint_write(f->ck_fd, ck_next_seq(f), f->cl_next);
    seg_close(f);
    if (f->st_fd >= 0) {
        fdatasync(f->st_fd);
        close(f->st_fd);
    }
    if (f->tmp_fd >= 0)
        close(f->tmp_fd);
    if (f->ck_fd >= 0) {
        fdatasync(f->ck_fd);
        close(f->ck_fd);
    }
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(f);
}
