/* ss_repl's leader answering fetches (ss_repl_lead.h): the commitlog
 * segments' and the state log's bytes read into ReplicaFetch answers, on
 * whichever thread claimed the parked fetches (the engine's writer, a store
 * answer's thread, the RPC thread a fetch arrived on, the leader thread).
 * What an answer may carry, and why state records go only with the
 * commitlog up to their marks, is in ss_repl.c's header and
 * docs/cluster.md, "Positions". */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gt_log.h"
#include "ss_repl_lead.h"

static uint32_t rec_len_at(const uint8_t *p, bool state)
{
    const uint8_t *q = state ? p : p + 4; /* state: u32 L first; GTR1: magic */
    return (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 |
           (uint32_t)q[3] << 24;
}

/* Reads whole records of [off, limit) of fd (which holds only whole
 * records there) into a new buffer of about `budget` bytes, at least one
 * record.  off 0 includes the file header (hdr bytes). */
static gt_err_t read_records(int fd, uint64_t off, uint64_t limit,
                             size_t budget, size_t hdr, bool state,
                             uint8_t **out, size_t *len)
{
    uint64_t avail = limit - off;
    size_t start = off == 0 ? hdr : 0;
    size_t want = avail < budget ? (size_t)avail : budget;
    uint8_t *b;

    *out = NULL;
    *len = 0;
    if (want < start + 8)
        want = avail < start + 8 ? (size_t)avail : start + 8;
    for (;;) {
        size_t at = start;
        if ((b = malloc(want > 0 ? want : 1)) == NULL)
            return GT_ENOMEM;
        if (pread(fd, b, want, (off_t)off) != (ssize_t)want) {
            free(b);
            return GT_EIO;
        }
        while (at + 8 <= want) {
            uint32_t l = rec_len_at(b + at, state);
            if (l < 8 || at + l > want)
                break;
            at += l;
        }
        if (at > start || want == avail || at + 8 > want) {
            *out = b;
            *len = at;
            return GT_OK;
        }
        /* the first record is larger than the budget: read all of it */
        uint32_t l = rec_len_at(b + at, state);
        free(b);
        if (l < 8 || start + l > avail)
            return GT_ECORRUPT;
        want = start + l;
    }
}

typedef struct ss_resp_buf {
    ss_fetch_resp_t resp;
    Gantry__Store__V1__CommitlogChunk chunks[16], *pchunks[16];
    Gantry__Store__V1__EpochStart hist[SS_REPL_MAX_HIST], *phist[SS_REPL_MAX_HIST];
    uint8_t *bufs[17];
    size_t nbufs;
} ss_resp_buf_t;

static void resp_free(ss_resp_buf_t *b)
{
    for (size_t i = 0; i < b->nbufs; i++)
        free(b->bufs[i]);
    b->nbufs = 0;
}

/* The leader's state log fd for stream `ino` (opened by path; -1 when the
 * file at the path is another one: a swap in progress). */
typedef struct ss_lstate {
    int fd;
    uint64_t ino;
} ss_lstate_t;

static int lstate_fd(ss_repl_t *r, ss_lstate_t *ls, uint64_t ino)
{
    char path[4096];
    struct stat sb;
    int fd;

    if (ls->fd >= 0 && ls->ino == ino)
        return ls->fd;
    snprintf(path, sizeof(path), "%s/state.log", r->dir);
    if ((fd = open(path, O_RDONLY)) < 0)
        return -1;
    if (fstat(fd, &sb) != 0 || (uint64_t)sb.st_ino != ino) {
        close(fd);
        return -1;
    }
    if (ls->fd >= 0)
        close(ls->fd);
    ls->fd = fd;
    ls->ino = ino;
    return fd;
}

/* Builds the answer to f from the marks.  Returns true when it has
 * something (data, truncation, a new stream). */
static bool build(ss_repl_t *r, st_store_t *local, ss_lstate_t *ls,
                  const ss_fetch_t *f, const st_repl_marks_t *m,
                  const ss_hist_t *hist, const ss_stream_t *cur,
                  int64_t epoch, ss_resp_buf_t *b)
{
    ss_fetch_resp_t *resp = &b->resp;
    size_t budget = f->max_bytes;
    uint64_t P = f->cl_next, S = ss_lead_mark_cl(r, m);
    bool some = false, held;
    st_repl_seg_t sg;

    gantry__store__v1__replica_fetch_response__init(resp);
    resp->leader_epoch = epoch;
    resp->cl_synced = S;
    for (size_t i = 0; i < hist->n; i++) {
        gantry__store__v1__epoch_start__init(&b->hist[i]);
        b->hist[i].epoch = hist->e[i].epoch;
        b->hist[i].cl_pos = hist->e[i].pos;
        b->phist[i] = &b->hist[i];
    }
    resp->n_history = hist->n;
    resp->history = b->phist;
    /* the segment holding P (or the first): also names the oldest one */
    held = st_local_repl_seg(local, P, &sg) == GT_OK;
    if (held)
        resp->first_segment = sg.first;
    /* divergence: the follower's tail after its last epoch is not ours */
    for (size_t i = 0; i < hist->n; i++) {
        if (hist->e[i].epoch > f->last_epoch) {
            if (P > hist->e[i].pos) {
                resp->truncate = true;
                resp->truncate_to = hist->e[i].pos;
            }
            break;
        }
    }
    if (!resp->truncate && P > S) {
        resp->truncate = true;
        resp->truncate_to = S;
    }
    if (resp->truncate) {
        if (held)
            st_local_repl_seg_done(local, &sg);
        return true;
    }
    /* commitlog chunks, each from one segment's open file */
    while (budget > 0 && resp->n_chunks < 16) {
        if (!held && st_local_repl_seg(local, P, &sg) != GT_OK)
            break;
        held = false;
        if (sg.base > P) { /* P is below the oldest segment */
            if (sg.base > S) {
                st_local_repl_seg_done(local, &sg);
                break;
            }
            P = sg.base;
        }
        bool last = sg.next == UINT64_MAX || sg.next > S;
        uint64_t limit = sg.end;
        if (last && S - sg.base < limit)
            limit = S > sg.base ? S - sg.base : 0;
        uint64_t off = P - sg.base;
        if (off < limit) {
            uint8_t *data;
            size_t len;
            gt_err_t rc = read_records(sg.fd, off, limit, budget, 64, false,
                                       &data, &len);
            uint64_t base = sg.base;
            st_local_repl_seg_done(local, &sg);
            if (rc != GT_OK || len == 0) {
                free(data);
                if (rc != GT_OK)
                    GT_LOG(WARN, "repl", "cannot read segment %llu at %llu: %s",
                           (unsigned long long)base, (unsigned long long)off,
                           gt_err_str(rc));
                break;
            }
            Gantry__Store__V1__CommitlogChunk *c = &b->chunks[resp->n_chunks];
            gantry__store__v1__commitlog_chunk__init(c);
            c->segment_base = base;
            c->file_offset = off;
            c->data.data = data;
            c->data.len = len;
            b->bufs[b->nbufs++] = data;
            b->pchunks[resp->n_chunks++] = c;
            P += len;
            budget = len < budget ? budget - len : 0;
            some = true;
            continue;
        }
        uint64_t next = sg.next;
        st_local_repl_seg_done(local, &sg);
        if (last)
            break;
        P = next;
    }
    if (held)
        st_local_repl_seg_done(local, &sg);
    resp->chunks = b->pchunks;
    /* state log: only with the commitlog complete up to S (the marks'),
     * so that a follower never holds state records written after commitlog
     * it lacks (docs/cluster.md, "Positions"); the next answer has it */
    if (P < S)
        return some;
    resp->state_epoch = epoch;
    resp->state_gen = cur->gen;
    resp->state_ino = cur->ino;
    bool same = f->state_epoch == epoch && f->state_ino == cur->ino &&
                f->state_offset <= m->state_end;
    uint64_t soff = same ? f->state_offset : 0;
    resp->state_offset = soff;
    if (!same) {
        resp->state_swap_len = cur->base_len;
        some = true;
    }
    if (soff < m->state_end) {
        int fd = lstate_fd(r, ls, cur->ino);
        uint8_t *data = NULL;
        size_t len = 0;
        if (fd >= 0 && read_records(fd, soff, m->state_end, f->max_bytes, 8,
                                    true, &data, &len) == GT_OK && len > 0) {
            resp->state_data.data = data;
            resp->state_data.len = len;
            b->bufs[b->nbufs++] = data;
            some = true;
        } else {
            free(data);
            if (!same) /* the file is being swapped: next time */
                some = false;
        }
    }
    return some;
}

/* Cheap test before build(): the follower holds everything already. */
static bool nothing_new(ss_repl_t *r, const ss_fetch_t *f,
                        const st_repl_marks_t *m, const ss_hist_t *hist,
                        const ss_stream_t *cur, int64_t epoch)
{
    if (f->cl_next != ss_lead_mark_cl(r, m) || f->state_epoch != epoch ||
        f->state_ino != cur->ino || f->state_offset != m->state_end)
        return false;
    for (size_t i = 0; i < hist->n; i++)
        if (hist->e[i].epoch > f->last_epoch)
            return f->cl_next <= hist->e[i].pos;
    return true;
}

static void fetch_answer(ss_repl_t *r, ss_fetch_t *f, ss_resp_buf_t *b)
{
    if (f->stream)
        px_call_send_pb(f->call, &b->resp.base);
    else
        px_call_reply_pb(f->call, &b->resp.base);
    px_call_unref(f->call);
    free(f);
    atomic_fetch_sub(&r->n_parked, 1);
}

void ss_lead_fail(ss_repl_t *r, ss_fetch_t *list)
{
    while (list != NULL) {
        ss_fetch_t *n = list->next;
        ss_lead_unavailable(list->call);
        px_call_unref(list->call);
        free(list);
        atomic_fetch_sub(&r->n_parked, 1);
        list = n;
    }
}

static bool marks_same(const st_repl_marks_t *a, const st_repl_marks_t *b)
{
    return a->cl_written == b->cl_written && a->cl_synced == b->cl_synced &&
           a->state_gen == b->state_gen && a->state_end == b->state_end;
}

/* What a thread answering fetches needs (the leader thread keeps one). */
struct ss_work {
    ss_resp_buf_t b;
    ss_hist_t hist;
    ss_lstate_t ls;
};

ss_work_t *ss_lead_work_new(void)
{
    ss_work_t *w = malloc(sizeof(*w));

    if (w != NULL) {
        w->ls.fd = -1;
        w->ls.ino = 0;
    }
    return w;
}

void ss_lead_work_free(ss_work_t *w)
{
    if (w != NULL && w->ls.fd >= 0)
        close(w->ls.fd);
    free(w);
}

/* ss_lead_serve without dropping the caller's r->serving count. */
static void serve_list(ss_repl_t *r, ss_fetch_t *list, ss_work_t *w)
{
    while (list != NULL) {
        st_repl_marks_t m;
        ss_stream_t cur;
        int64_t now, epoch;
        st_store_t *local;

        pthread_mutex_lock(&r->mu);
        if (r->role != SS_ROLE_LEADER || r->local == NULL || r->lstop) {
            pthread_mutex_unlock(&r->mu);
            ss_lead_fail(r, list);
            list = NULL;
            break;
        }
        /* open until r->serving drops to 0 (leader_stop waits for it) */
        local = r->local;
        st_local_repl_marks(local, &m);
        cur = *ss_lead_stream_note(r, &m);
        w->hist.n = r->hist.n;
        memcpy(w->hist.e, r->hist.e, r->hist.n * sizeof(r->hist.e[0]));
        epoch = r->epoch;
        pthread_mutex_unlock(&r->mu);
        now = ss_repl_now_ms();

        ss_fetch_t *keep = NULL, **kt = &keep;
        while (list != NULL) {
            ss_fetch_t *f = list;
            ss_resp_buf_t *b = &w->b;
            list = f->next;
            f->next = NULL;
            bool fenced = f->epoch != epoch, go;
            if (f->epoch > epoch)
                ss_repl_newer_epoch(r, f->epoch);
            b->nbufs = 0;
            if (fenced) {
                gantry__store__v1__replica_fetch_response__init(&b->resp);
                b->resp.err = GANTRY__STORE__V1__ERROR_CODE__AGAIN;
                b->resp.leader_epoch = epoch;
                go = true;
            } else if (nothing_new(r, f, &m, &w->hist, &cur, epoch)) {
                go = f->deadline <= now;
                if (go) /* the empty answer (history, ends) */
                    build(r, local, &w->ls, f, &m, &w->hist, &cur, epoch, b);
            } else {
                go = build(r, local, &w->ls, f, &m, &w->hist, &cur, epoch, b) ||
                     f->deadline <= now;
            }
            if (go)
                fetch_answer(r, f, b);
            else {
                *kt = f;
                kt = &f->next;
            }
            resp_free(b);
        }
        if (keep == NULL)
            break;
        pthread_mutex_lock(&r->mu);
        if (r->role != SS_ROLE_LEADER || r->local == NULL || r->lstop) {
            pthread_mutex_unlock(&r->mu);
            ss_lead_fail(r, keep);
            break;
        }
        st_repl_marks_t m2;
        st_local_repl_marks(r->local, &m2);
        if (!marks_same(&m, &m2)) { /* new data meanwhile: look again */
            pthread_mutex_unlock(&r->mu);
            list = keep;
            continue;
        }
        bool wake = false;
        for (ss_fetch_t *f = keep; f != NULL; f = f->next)
            wake = wake || f->deadline < r->lwake_at;
        *kt = r->parked;
        r->parked = keep;
        if (wake && !r->kick) {
            r->kick = true;
            pthread_cond_broadcast(&r->cv);
        }
        pthread_mutex_unlock(&r->mu);
    }
}

static void serving_done(ss_repl_t *r)
{
    pthread_mutex_lock(&r->mu);
    if (--r->serving == 0)
        pthread_cond_broadcast(&r->serve_cv);
    pthread_mutex_unlock(&r->mu);
}

/* The caller counts in r->serving and holds the fetches of `list` (off
 * r->parked, still in n_parked).  Answers those that have something (or
 * are due) from the marks now, parks the others again unless the marks
 * moved meanwhile (then looks again), or answers "not leader" when the
 * node stopped leading.  Drops the caller's r->serving count. */
void ss_lead_serve(ss_repl_t *r, ss_fetch_t *list, ss_work_t *w)
{
    serve_list(r, list, w);
    serving_done(r);
}

/* From a store or RPC thread (r->serving counted).  The work area (and
 * the state log fd it keeps) goes on to the next such thread. */
void ss_lead_serve_claimed(ss_repl_t *r, ss_fetch_t *list)
{
    ss_work_t *w = atomic_exchange(&r->spare, NULL), *none = NULL;

    if (w == NULL)
        w = ss_lead_work_new();
    if (w == NULL) { /* the leader thread answers them */
        pthread_mutex_lock(&r->mu);
        ss_fetch_t **t = &list;
        while (*t != NULL)
            t = &(*t)->next;
        *t = r->parked;
        r->parked = list;
        r->kick = true;
        if (--r->serving == 0)
            pthread_cond_broadcast(&r->serve_cv);
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        return;
    }
    serve_list(r, list, w);
    /* put back while still counted: leader_stop and ss_repl_free, which
     * wait for r->serving to drop, then find it there */
    if (!atomic_compare_exchange_strong(&r->spare, &none, w))
        ss_lead_work_free(w);
    serving_done(r);
}

/* The engine's writer thread, records just became shippable
 * (st_local_on_written): parked fetches are answered from here, one
 * thread hand-off earlier than from the store answer that will gate on
 * them (ss_repl_reply), which then finds them taken. */
void ss_lead_on_written(void *arg)
{
    ss_repl_t *r = arg;

    if (atomic_load(&r->n_parked) == 0)
        return;
    pthread_mutex_lock(&r->mu);
    ss_fetch_t *claimed = NULL;
    if (r->role == SS_ROLE_LEADER && r->local != NULL && !r->lstop)
        claimed = ss_lead_claim(r);
    pthread_mutex_unlock(&r->mu);
    if (claimed != NULL)
        ss_lead_serve_claimed(r, claimed);
}
