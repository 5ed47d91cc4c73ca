/* ss_repl: roles of a gantry-store node in its replica set and the
 * leader's side of replication (docs/store-protocol.md "Replication", contract in ss_repl.h;
 * the fetch answers themselves are built in ss_repl_ship.c).
 *
 * Leader.  A ReplicaFetch is handled on the RPC thread it arrives on:
 * it records what the follower acknowledged (a request acknowledges every
 * byte before its positions), answers the store calls that this releases,
 * answers at once when there is something to ship and parks the call
 * otherwise.  The engine's writer thread takes the parked fetches as
 * soon as records are written (st_local_on_written) and answers them
 * there; a store answer that has to wait (a gate) takes any still parked
 * and answers them on its own thread.  The leader thread answers
 * parked fetches whose wait_ms passed, reports followers' transitions to
 * the control (in order, from that one thread) and backs the others up
 * (kick: look at the parked fetches again).  Answers ship raw
 * bytes of the data directory's files: commitlog segments up to the
 * engine's synced end (with flush: async its written end: an async append
 * is answered once written; whole records, by segment base and file
 * offset),
 * and the state log up to the engine's written end (whole records),
 * identified by (epoch, inode) -- compaction makes a new stream.
 *
 * Gating.  Every answer of a store call goes through ss_repl_reply(): it
 * captures the engine's marks (commitlog end, state log generation and
 * length) after the operation completed and holds the packed answer until
 * q = max(min_insync, a majority) of the in-sync set hold them (the
 * leader counts; a member the control is removing does not: "leaving")
 * and every joining follower does.  A later stream (generation) holds
 * everything of the earlier ones once the follower has its first
 * swap_len bytes (then it swapped it in).  Which member may then win an
 * election is decided by position (docs/cluster.md, "Positions"); answers
 * ship state log records only with the commitlog complete up to their
 * marks, which is what makes positions comparable.
 *
 * Joining.  A follower outside the in-sync set is reported caught up only
 * from the leader thread's pass that sees it hold the current marks, and
 * that same pass (under mu) adds it to the gated set as "joining": every
 * answer made before had marks at or below those, every answer after waits
 * for it too.  So by the time the control lists it in etcd (and it may
 * win an election) it holds everything ever acknowledged.  A joining
 * follower leaves the gated set only through the control
 * (ss_repl_set_isr, ss_repl_isr_unjoin), which knows what etcd lists.
 * Without a control (static test roles: no peer_changed) nobody joins.
 *
 * Locking: mu guards everything below it in ss_repl; it is never held
 * across file I/O, a gRPC send or an engine open/close; the engine's lock
 * (st_local_repl_marks) nests inside mu. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gt_log.h"
#include "ss_int.h"
#include "ss_repl_lead.h"

/* ---- small helpers ---- */

void ss_lead_unavailable(px_call_t *call)
{
    px_call_finish(call, GRPC_STATUS_UNAVAILABLE, "not leader");
}

static void reply_again(px_call_t *call)
{
    static const uint8_t again[2] = {0x08, (uint8_t)GT_AGAIN};
    px_call_reply(call, again, sizeof(again));
}

const ss_repl_config_t *ss_repl_cfg(const ss_repl_t *r)
{
    return &r->cfg;
}

void ss_repl_newer_epoch(ss_repl_t *r, int64_t epoch)
{
    ss_repl_events_t ev;

    pthread_mutex_lock(&r->mu);
    ev = r->cfg.events;
    pthread_mutex_unlock(&r->mu);
    if (ev.newer_epoch != NULL)
        ev.newer_epoch(ev.arg, epoch);
}

void ss_repl_set_hist(ss_repl_t *r, const ss_hist_t *h)
{
    pthread_mutex_lock(&r->mu);
    r->hist = *h;
    pthread_mutex_unlock(&r->mu);
}

void ss_repl_get_hist(ss_repl_t *r, ss_hist_t *h)
{
    pthread_mutex_lock(&r->mu);
    *h = r->hist;
    pthread_mutex_unlock(&r->mu);
}

/* mu held.  Registers the marks' state stream (first seen: its length
 * then is what a follower must hold before swapping it in). */
const ss_stream_t *ss_lead_stream_note(ss_repl_t *r, const st_repl_marks_t *m)
{
    for (size_t i = r->n_streams; i > 0; i--)
        if (r->streams[i - 1].gen == (int64_t)m->state_gen)
            return &r->streams[i - 1];
    if (r->n_streams == SS_REPL_MAX_STREAMS) {
        memmove(r->streams, r->streams + 1,
                (SS_REPL_MAX_STREAMS - 1) * sizeof(r->streams[0]));
        r->n_streams--;
    }
    ss_stream_t *s = &r->streams[r->n_streams++];
    s->gen = (int64_t)m->state_gen;
    s->ino = m->state_ino;
    s->base_len = m->state_end;
    return s;
}

static const ss_stream_t *stream_by_ino(const ss_repl_t *r, uint64_t ino)
{
    for (size_t i = r->n_streams; i > 0; i--)
        if (r->streams[i - 1].ino == ino)
            return &r->streams[i - 1];
    return NULL;
}

static ss_peer_t *peer_get(ss_repl_t *r, const char *id, bool create)
{
    for (size_t i = 0; i < r->n_peers; i++)
        if (strcmp(r->peers[i].id, id) == 0)
            return &r->peers[i];
    if (!create || r->n_peers == SS_REPL_MAX_PEERS)
        return NULL;
    ss_peer_t *p = &r->peers[r->n_peers++];
    memset(p, 0, sizeof(*p));
    snprintf(p->id, sizeof(p->id), "%s", id);
    p->st_gen = -1;
    p->caught_up_ms = ss_repl_now_ms();
    return p;
}

uint64_t ss_lead_mark_cl(const ss_repl_t *r, const st_repl_marks_t *m)
{
    return r->cfg.flush_async ? m->cl_written : m->cl_synced;
}

static bool peer_has(const ss_peer_t *p, uint64_t cl, int64_t gen,
                     uint64_t end)
{
    return p->cl >= cl &&
           (p->st_gen > gen || (p->st_gen == gen && p->st_off >= end));
}

static bool id_in(char (*ids)[SS_REPL_ID_MAX], size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(ids[i], id) == 0)
            return true;
    return false;
}

/* mu held: answers wait for this node (in-sync or joining). */
static bool gated(ss_repl_t *r, const char *id)
{
    return id_in(r->isr, r->n_isr, id) || id_in(r->joining, r->n_joining, id);
}

static int need_insync(const ss_repl_t *r)
{
    return r->cfg.min_insync > 0 ? r->cfg.min_insync : 1;
}

/* How many members of an in-sync set of n must hold an answer before it
 * goes: min_insync, and at least a majority of the set, so that the set
 * can elect a leader that holds it while a majority lives (an election
 * compares the positions of n - quorum + 1 members: gt_elect.h). */
static size_t quorum(const ss_repl_t *r, size_t n)
{
    size_t q = n / 2 + 1, m = (size_t)need_insync(r);
    return q > m ? q : m;
}

/* mu held: members of the in-sync set, not leaving, other than `skip`
 * (NULL: none), that hold (cl, gen, end); the leader (which holds
 * everything it answers) counts. */
static int isr_count(ss_repl_t *r, const char *skip, uint64_t cl, int64_t gen,
                     uint64_t end)
{
    int n = 0;

    for (size_t i = 0; i < r->n_isr; i++) {
        const char *id = r->isr[i];
        if ((skip != NULL && strcmp(id, skip) == 0) ||
            id_in(r->leaving, r->n_leaving, id))
            continue;
        if (strcmp(id, r->node_id) == 0) {
            n++;
            continue;
        }
        ss_peer_t *p = peer_get(r, id, false);
        if (p != NULL && peer_has(p, cl, gen, end))
            n++;
    }
    return n;
}

/* mu held: may an answer made at marks (cl, gen, end) go?  Once a quorum
 * of the in-sync set holds them (the leader among them; members leaving
 * the set do not count) and every joining follower does (it is about to
 * be listed: see "Joining"). */
static bool isr_holds(ss_repl_t *r, uint64_t cl, int64_t gen, uint64_t end)
{
    for (size_t i = 0; i < r->n_joining; i++) {
        ss_peer_t *p = peer_get(r, r->joining[i], false);
        if (p == NULL || !peer_has(p, cl, gen, end))
            return false;
    }
    return (size_t)isr_count(r, NULL, cl, gen, end) >= quorum(r, r->n_isr);
}

/* mu held: an answer made at these marks was released (marks only grow). */
static void acked_note(ss_repl_t *r, uint64_t cl, int64_t gen, uint64_t end)
{
    if (cl > r->ack_cl)
        r->ack_cl = cl;
    if (gen > r->ack_gen) {
        r->ack_gen = gen;
        r->ack_end = end;
    } else if (gen == r->ack_gen && end > r->ack_end) {
        r->ack_end = end;
    }
}

/* mu held: drops `id` from the joining list. */
static void unjoin(ss_repl_t *r, const char *id)
{
    for (size_t i = 0; i < r->n_joining; i++) {
        if (strcmp(r->joining[i], id) == 0) {
            memmove(r->joining[i], r->joining[i + 1],
                    (r->n_joining - i - 1) * sizeof(r->joining[0]));
            r->n_joining--;
            return;
        }
    }
}

static bool isr_enough(const ss_repl_t *r)
{
    return r->n_isr >= (size_t)need_insync(r);
}

/* mu held: unlinks the gates that may be answered now (all of them with
 * `all`) into *out. */
static void gates_take(ss_repl_t *r, bool all, ss_gate_t **out)
{
    ss_gate_t **pp = &r->gates;

    *out = NULL;
    while (*pp != NULL) {
        ss_gate_t *g = *pp;
        if (all || isr_holds(r, g->cl, g->gen, g->st_end)) {
            if (!all)
                acked_note(r, g->cl, g->gen, g->st_end);
            *pp = g->next;
            g->next = *out;
            *out = g;
        } else {
            pp = &g->next;
        }
    }
    r->gates_tail = pp;
}

enum { GATE_SEND, GATE_AGAIN, GATE_UNAVAILABLE };

static void gates_answer(ss_gate_t *g, int how)
{
    /* *out of gates_take is in reverse order: answer oldest first */
    ss_gate_t *rev = NULL;
    while (g != NULL) {
        ss_gate_t *n = g->next;
        g->next = rev;
        rev = g;
        g = n;
    }
    while (rev != NULL) {
        ss_gate_t *n = rev->next;
        if (how == GATE_SEND) {
            px_call_reply(rev->call, rev->data, rev->len);
        } else if (how == GATE_AGAIN) {
            reply_again(rev->call);
        } else {
            ss_lead_unavailable(rev->call);
        }
        px_call_unref(rev->call);
        free(rev);
        rev = n;
    }
}

/* ---- gating (store answers) ---- */

/* mu held: takes every parked fetch for the caller to answer
 * (ss_lead_serve_claimed), counted in r->serving when there are any. */
ss_fetch_t *ss_lead_claim(ss_repl_t *r)
{
    ss_fetch_t *claimed = r->parked;

    r->parked = NULL;
    if (claimed != NULL)
        r->serving++;
    return claimed;
}

bool ss_repl_serving(ss_repl_t *r)
{
    pthread_mutex_lock(&r->mu);
    bool on = r->role == SS_ROLE_LEADER && r->local != NULL;
    pthread_mutex_unlock(&r->mu);
    return on;
}

void ss_repl_reply(ss_repl_t *r, px_call_t *call, const uint8_t *data,
                   size_t len)
{
    st_repl_marks_t m;
    ss_gate_t *g;

    pthread_mutex_lock(&r->mu);
    if (r->role != SS_ROLE_LEADER || r->local == NULL) {
        pthread_mutex_unlock(&r->mu);
        ss_lead_unavailable(call);
        return;
    }
    if (!isr_enough(r)) {
        pthread_mutex_unlock(&r->mu);
        reply_again(call);
        return;
    }
    st_local_repl_marks(r->local, &m);
    ss_lead_stream_note(r, &m);
    if (isr_holds(r, ss_lead_mark_cl(r, &m), (int64_t)m.state_gen, m.state_end)) {
        acked_note(r, ss_lead_mark_cl(r, &m), (int64_t)m.state_gen, m.state_end);
        pthread_mutex_unlock(&r->mu);
        px_call_reply(call, data, len);
        return;
    }
    if ((g = malloc(sizeof(*g) + len)) == NULL) {
        pthread_mutex_unlock(&r->mu);
        px_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    g->next = NULL;
    g->call = call;
    g->cl = ss_lead_mark_cl(r, &m);
    g->gen = (int64_t)m.state_gen;
    g->st_end = m.state_end;
    g->len = len;
    memcpy(g->data, data, len);
    px_call_ref(call);
    *r->gates_tail = g;
    r->gates_tail = &g->next;
    /* followers waiting for data get it from this thread (no hand-off);
     * fetches claimed by another thread meanwhile: that thread checks the
     * marks again before parking them, the leader thread is the backstop */
    ss_fetch_t *claimed = ss_lead_claim(r);
    if (claimed == NULL && atomic_load(&r->n_parked) > 0 && !r->kick) {
        r->kick = true;
        pthread_cond_broadcast(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
    if (claimed != NULL)
        ss_lead_serve_claimed(r, claimed);
}

/* ---- ReplicaFetch ---- */

/* mu held: a request's acknowledgement. */
static void peer_ack(ss_repl_t *r, const ss_fetch_t *f,
                     const st_repl_marks_t *m, int64_t now)
{
    ss_peer_t *p = peer_get(r, f->node_id, true);

    if (p == NULL)
        return;
    /* A log that is not ours past some point (the answer will be a
     * truncation) acknowledges only the common part before it. */
    uint64_t cl = f->cl_next, cut = ss_lead_mark_cl(r, m);
    for (size_t i = 0; i < r->hist.n; i++) {
        if (r->hist.e[i].epoch > f->last_epoch) {
            if (r->hist.e[i].pos < cut)
                cut = r->hist.e[i].pos;
            break;
        }
    }
    if (cl > cut)
        cl = cut;
    p->cl = cl;
    p->last_fetch_ms = now;
    p->fresh = true;
    if (f->state_epoch == r->epoch) {
        const ss_stream_t *s = stream_by_ino(r, f->state_ino);
        if (s != NULL && f->state_offset >= s->base_len &&
            (s->gen > p->st_gen || (s->gen == p->st_gen &&
                                    f->state_offset > p->st_off))) {
            p->st_gen = s->gen;
            p->st_off = f->state_offset;
        }
    }
    if (p->cl >= ss_lead_mark_cl(r, m) && p->st_gen == (int64_t)m->state_gen &&
        p->st_off >= m->state_end)
        p->caught_up_ms = now;
}

static void fetch_in(px_call_t *call, ProtobufCMessage *msg, bool stream)
{
    ss_repl_t *r = ss_srv(call)->repl;
    ss_fetch_req_t *req = (void *)msg;
    ss_fetch_t *f;

    if (r == NULL || req->node_id == NULL || req->node_id[0] == '\0' ||
        strlen(req->node_id) >= SS_REPL_ID_MAX) {
        if (r == NULL)
            ss_lead_unavailable(call);
        else
            px_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "node_id");
        return;
    }
    if ((f = calloc(1, sizeof(*f))) == NULL) {
        px_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    f->call = call;
    f->stream = stream;
    snprintf(f->node_id, sizeof(f->node_id), "%s", req->node_id);
    f->epoch = req->epoch;
    f->last_epoch = req->last_epoch;
    f->state_epoch = req->state_epoch;
    f->cl_next = req->cl_next;
    f->state_ino = req->state_ino;
    f->state_offset = req->state_offset;
    f->max_bytes = req->max_bytes > 0 && req->max_bytes < SS_REPL_CHUNK_BYTES
                       ? req->max_bytes : SS_REPL_CHUNK_BYTES;
    int64_t now = ss_repl_now_ms();
    int64_t wait = req->wait_ms > 60000 ? 60000 : (int64_t)req->wait_ms;
    f->deadline = now + wait;
    pthread_mutex_lock(&r->mu);
    bool leader = r->role == SS_ROLE_LEADER && r->lthread_on && !r->lstop &&
                  r->local != NULL;
    if (!leader || atomic_load(&r->n_parked) >= SS_REPL_MAX_PARKED) {
        pthread_mutex_unlock(&r->mu);
        free(f);
        if (leader)
            px_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "too many fetches");
        else
            ss_lead_unavailable(call);
        return;
    }
    px_call_ref(call);
    atomic_fetch_add(&r->n_parked, 1);
    if (wait > 0 && wait < r->tick_ms)
        r->tick_ms = wait;
    /* The acknowledgement, and the answers it releases, on this thread. */
    ss_gate_t *ready = NULL;
    if (f->epoch == r->epoch) {
        st_repl_marks_t m;
        st_local_repl_marks(r->local, &m);
        ss_lead_stream_note(r, &m);
        peer_ack(r, f, &m, now);
        gates_take(r, false, &ready);
        /* Caught up now (it holds m), not reported yet.  Outside the
         * gated set it joins in this section, as the leader thread's pass
         * would (see "Joining": answers made before had marks at or below
         * m, later ones wait for it); that pass reports it, in order with
         * its other reports. */
        ss_peer_t *p = peer_get(r, f->node_id, false);
        if (p != NULL && !p->caught_up &&
            peer_has(p, ss_lead_mark_cl(r, &m), (int64_t)m.state_gen, m.state_end)) {
            if (!gated(r, p->id) && r->cfg.events.peer_changed != NULL &&
                r->n_joining < SS_REPL_MAX_PEERS)
                snprintf(r->joining[r->n_joining++], SS_REPL_ID_MAX, "%s",
                         p->id);
            if (gated(r, p->id) && !r->kick) {
                r->kick = true;
                pthread_cond_broadcast(&r->cv);
            }
        }
    }
    r->serving++;
    pthread_mutex_unlock(&r->mu);
    gates_answer(ready, GATE_SEND);
    f->next = NULL;
    ss_lead_serve_claimed(r, f);
}

void ss_repl_fetch(px_call_t *call, ProtobufCMessage *msg)
{
    fetch_in(call, msg, false);
}

/* ReplicaStream: each request message is a fetch, answered by one
 * response message; an error status ends the stream (the follower opens
 * another). */
void ss_repl_stream(px_call_t *call, ProtobufCMessage *msg)
{
    fetch_in(call, msg, true);
}

/* mu held: peer_changed events for transitions (collected, sent after;
 * only the leader thread calls this, so reports keep their order).
 * m: the engine's marks now.  A follower outside the gated set is up only
 * when a request since the last check (fresh) acknowledged holding m:
 * every answer made before had marks at or below m; it then joins the
 * gated set in this same section, before it is reported (see "Joining"
 * above). */
static size_t peers_check(ss_repl_t *r, int64_t now,
                          const st_repl_marks_t *m, ss_repl_peer_t *ev,
                          size_t max)
{
    size_t n = 0;
    int64_t lag = r->cfg.replica_lag_ms > 0 ? r->cfg.replica_lag_ms : 10000;

    for (size_t i = 0; i < r->n_peers && n < max; i++) {
        ss_peer_t *p = &r->peers[i];
        bool late = now - p->caught_up_ms > lag;
        bool up;
        if (gated(r, p->id)) {
            /* late: its last fetch (long ago) was caught up, it is gone */
            up = p->caught_up_ms >= p->last_fetch_ms && p->last_fetch_ms > 0 &&
                 !late;
        } else {
            /* without a control (static test roles) nothing lists it:
             * no use waiting for it */
            p->caught_up = false; /* reported when it joins */
            up = r->cfg.events.peer_changed != NULL && p->fresh &&
                 peer_has(p, ss_lead_mark_cl(r, m), (int64_t)m->state_gen,
                          m->state_end) &&
                 r->n_joining < SS_REPL_MAX_PEERS;
            if (up)
                snprintf(r->joining[r->n_joining++], SS_REPL_ID_MAX, "%s",
                         p->id);
        }
        p->fresh = false;
        bool report = false;
        if (up && !p->caught_up) {
            p->caught_up = true;
            p->lagging = false;
            report = true;
        } else if (late && !p->lagging) {
            p->lagging = true;
            p->caught_up = false;
            report = true;
        }
        if (report) {
            snprintf(ev[n].node_id, sizeof(ev[n].node_id), "%s", p->id);
            ev[n].acked_cl_pos = p->cl;
            ev[n].caught_up = p->caught_up;
            ev[n].idle_ms = now - p->last_fetch_ms;
            n++;
        }
    }
    return n;
}

/* The leader thread: answers fetches whose deadline comes, reports
 * followers' transitions (peers_check) and backs up the other threads
 * (a kick: look at the parked fetches again). */
static void *leader_main(void *arg)
{
    ss_repl_t *r = arg;
    ss_work_t *w = ss_lead_work_new();

    pthread_mutex_lock(&r->mu);
    while (!r->lstop && w != NULL) {
        st_repl_marks_t m;
        ss_gate_t *ready;
        ss_repl_peer_t ev[SS_REPL_MAX_PEERS];
        size_t nev;
        int64_t now = ss_repl_now_ms();

        r->kick = false;
        st_local_repl_marks(r->local, &m);
        ss_lead_stream_note(r, &m);
        gates_take(r, false, &ready);
        nev = peers_check(r, now, &m, ev, SS_REPL_MAX_PEERS);
        ss_repl_events_t evs = r->cfg.events;
        ss_fetch_t *claimed = r->parked;
        r->parked = NULL;
        r->serving++;
        pthread_mutex_unlock(&r->mu);

        gates_answer(ready, GATE_SEND);
        for (size_t i = 0; i < nev; i++)
            if (evs.peer_changed != NULL)
                evs.peer_changed(evs.arg, &ev[i]);
        ss_lead_serve(r, claimed, w);

        pthread_mutex_lock(&r->mu);
        int64_t next_wake = ss_repl_now_ms() + r->tick_ms;
        for (ss_fetch_t *f = r->parked; f != NULL; f = f->next)
            if (f->deadline < next_wake)
                next_wake = f->deadline;
        r->lwake_at = next_wake;
        if (!r->kick && !r->lstop) {
            int64_t wait = next_wake - ss_repl_now_ms();
            if (wait > 0) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_sec += wait / 1000;
                ts.tv_nsec += (wait % 1000) * 1000000;
                if (ts.tv_nsec >= 1000000000) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000;
                }
                pthread_cond_timedwait(&r->cv, &r->mu, &ts);
            }
        }
    }
    /* stopping: the rest are not answered by this leader (threads still
     * answering see lstop and answer theirs "not leader") */
    ss_fetch_t *rest = r->parked;
    r->parked = NULL;
    pthread_mutex_unlock(&r->mu);
    ss_lead_fail(r, rest);
    ss_lead_work_free(w);
    return NULL;
}

/* ---- roles ---- */

gt_err_t ss_repl_new(const ss_repl_config_t *cfg, ss_repl_t **out)
{
    ss_repl_t *r = calloc(1, sizeof(*r));

    *out = NULL;
    if (r == NULL || (r->dir = strdup(cfg->data_dir)) == NULL) {
        free(r);
        return GT_ENOMEM;
    }
    r->cfg = *cfg;
    r->cfg.data_dir = r->dir;
    snprintf(r->node_id, sizeof(r->node_id), "%s",
             cfg->node_id != NULL ? cfg->node_id : "");
    r->cfg.node_id = r->node_id;
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->role_mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    pthread_cond_init(&r->serve_cv, NULL);
    r->gates_tail = &r->gates;
    atomic_init(&r->n_parked, 0);
    if (ss_hist_load(r->dir, &r->hist) != GT_OK ||
        ss_cl_scan_end(r->dir, false, &r->cl_end_known) != GT_OK) {
        GT_LOG(ERROR, "repl", "cannot read %s", r->dir);
        ss_repl_free(r);
        return GT_EIO;
    }
    *out = r;
    return GT_OK;
}

void ss_repl_set_events(ss_repl_t *r, const ss_repl_events_t *ev)
{
    pthread_mutex_lock(&r->mu);
    r->cfg.events = *ev;
    pthread_mutex_unlock(&r->mu);
}

/* role_mu held.  Leader -> standby: answers held and parked calls
 * "not leader", stops the leader thread, closes the engine. */
static void leader_stop(ss_repl_t *r)
{
    ss_gate_t *all;
    bool had_engine;

    pthread_mutex_lock(&r->mu);
    r->role = SS_ROLE_STANDBY;
    had_engine = r->local != NULL;
    r->local = NULL;
    r->n_joining = 0;
    r->n_leaving = 0;
    gates_take(r, true, &all);
    r->lstop = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    gates_answer(all, GATE_UNAVAILABLE);
    pthread_mutex_lock(&r->mu);
    bool joined = r->lthread_on;
    r->lthread_on = false;
    pthread_mutex_unlock(&r->mu);
    if (joined)
        pthread_join(r->lthread, NULL);
    /* threads answering fetches read the data directory: done first */
    pthread_mutex_lock(&r->mu);
    while (r->serving > 0)
        pthread_cond_wait(&r->serve_cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
    /* the store threads' work area and its state log fd (put back
     * before their r->serving count drops) */
    ss_lead_work_free(atomic_exchange(&r->spare, NULL));
    if (had_engine) {
        uint64_t end = 0;
        ss_cl_scan_end(r->dir, false, &end);
        r->cfg.engine.close(r->cfg.engine.arg);
        pthread_mutex_lock(&r->mu);
        r->cl_end_known = end;
        pthread_mutex_unlock(&r->mu);
    }
}

static void follower_stop(ss_repl_t *r)
{
    ss_follow_t *f;

    pthread_mutex_lock(&r->mu);
    f = r->fol;
    r->fol = NULL;
    r->role = SS_ROLE_STANDBY;
    pthread_mutex_unlock(&r->mu);
    if (f != NULL) {
        uint64_t end = ss_follow_cl_next(f);
        ss_follow_stop(f);
        pthread_mutex_lock(&r->mu);
        r->cl_end_known = end;
        pthread_mutex_unlock(&r->mu);
    }
}

/* mu held.  Members that never fetch are known too (reported lagging
 * after replica_lag_ms). */
static void copy_isr(ss_repl_t *r, const char *const *isr, size_t n)
{
    r->n_isr = 0;
    for (size_t i = 0; i < n && r->n_isr < SS_REPL_MAX_PEERS; i++) {
        snprintf(r->isr[r->n_isr++], SS_REPL_ID_MAX, "%s", isr[i]);
        if (strcmp(isr[i], r->node_id) != 0)
            peer_get(r, isr[i], true);
    }
}

gt_err_t ss_repl_lead(ss_repl_t *r, int64_t epoch, const char *const *isr,
                      size_t n_isr, uint64_t *history_out)
{
    st_store_t *local = NULL;
    st_repl_marks_t m;
    ss_hist_t *h;
    gt_err_t rc;

    pthread_mutex_lock(&r->role_mu);
    if (r->role == SS_ROLE_FOLLOWER)
        follower_stop(r);
    if (r->role == SS_ROLE_LEADER) {
        pthread_mutex_lock(&r->mu);
        local = r->local;
        pthread_mutex_unlock(&r->mu);
    } else if ((rc = r->cfg.engine.open(r->cfg.engine.arg, &local)) != GT_OK) {
        pthread_mutex_unlock(&r->role_mu);
        return rc;
    } else {
        st_local_on_written(local, ss_lead_on_written, r);
    }
    st_local_repl_marks(local, &m);
    if ((h = malloc(sizeof(*h))) == NULL) {
        rc = GT_ENOMEM;
        goto fail;
    }
    ss_repl_get_hist(r, h);
    if (ss_hist_last_epoch(h) < epoch) {
        if (h->n == SS_REPL_MAX_HIST) {
            memmove(h->e, h->e + 1, (SS_REPL_MAX_HIST - 1) * sizeof(h->e[0]));
            h->n--;
        }
        h->e[h->n].epoch = epoch;
        h->e[h->n].pos = m.cl_synced;
        h->n++;
        if ((rc = ss_hist_save(r->dir, h)) != GT_OK) {
            free(h);
            goto fail;
        }
    }
    if (history_out != NULL)
        *history_out = h->e[h->n - 1].pos;
    {   /* a follower's stream identity means nothing once it leads; that
         * it led this epoch ranks its position above the followers' of the
         * epoch in the next election (docs/cluster.md, "Positions") */
        ss_stream_id_t id = { .led_epoch = epoch };
        if ((rc = ss_stream_id_save(r->dir, &id)) != GT_OK) {
            free(h);
            goto fail;
        }
    }
    pthread_mutex_lock(&r->mu);
    r->hist = *h;
    free(h);
    if (r->epoch != epoch) {
        r->n_peers = 0;
        r->n_streams = 0;
    }
    r->epoch = epoch;
    r->local = local;
    copy_isr(r, isr, n_isr);
    r->n_joining = 0;
    r->n_leaving = 0;
    /* what earlier epochs acknowledged: all of the log it starts from */
    r->ack_cl = ss_lead_mark_cl(r, &m);
    r->ack_gen = (int64_t)m.state_gen;
    r->ack_end = m.state_end;
    r->role = SS_ROLE_LEADER;
    ss_lead_stream_note(r, &m);
    r->lstop = false;
    r->tick_ms = 1000;
    r->lwake_at = INT64_MAX;
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_lock(&r->mu);
    bool running = r->lthread_on;
    pthread_mutex_unlock(&r->mu);
    if (!running) {
        if (pthread_create(&r->lthread, NULL, leader_main, r) != 0) {
            leader_stop(r);
            pthread_mutex_unlock(&r->role_mu);
            return GT_ENOMEM;
        }
        pthread_mutex_lock(&r->mu);
        r->lthread_on = true;
        pthread_mutex_unlock(&r->mu);
    }
    GT_LOG(INFO, "repl", "leader of epoch %lld from commitlog position %llu "
           "(%zu in sync, min %d)", (long long)epoch,
           (unsigned long long)m.cl_synced, n_isr, r->cfg.min_insync);
    pthread_mutex_unlock(&r->role_mu);
    return GT_OK;
fail:
    pthread_mutex_lock(&r->mu);
    r->local = local;
    pthread_mutex_unlock(&r->mu);
    leader_stop(r);
    pthread_mutex_unlock(&r->role_mu);
    return rc;
}

void ss_repl_set_isr(ss_repl_t *r, int64_t epoch, const char *const *isr,
                     size_t n_isr)
{
    ss_gate_t *ready;
    bool enough;

    pthread_mutex_lock(&r->mu);
    if (r->role != SS_ROLE_LEADER || r->epoch != epoch) {
        pthread_mutex_unlock(&r->mu);
        return;
    }
    copy_isr(r, isr, n_isr);
    for (size_t i = 0; i < n_isr; i++)
        unjoin(r, isr[i]);
    r->n_leaving = 0;
    enough = isr_enough(r);
    gates_take(r, !enough, &ready);
    pthread_mutex_unlock(&r->mu);
    gates_answer(ready, enough ? GATE_SEND : GATE_AGAIN);
}

bool ss_repl_isr_leave(ss_repl_t *r, int64_t epoch, const char *id)
{
    bool ok = false;

    pthread_mutex_lock(&r->mu);
    if (r->role == SS_ROLE_LEADER && r->epoch == epoch &&
        id_in(r->isr, r->n_isr, id)) {
        if (!id_in(r->leaving, r->n_leaving, id) &&
            r->n_leaving < SS_REPL_MAX_PEERS)
            snprintf(r->leaving[r->n_leaving++], SS_REPL_ID_MAX, "%s", id);
        /* from here on answers do not count it; those released before
         * may have: the others must hold all of them min_insync times */
        size_t q = quorum(r, r->n_isr - 1);
        if (q > r->n_isr - 1) /* below min_insync: writes stop anyway */
            q = r->n_isr - 1;
        ok = id_in(r->leaving, r->n_leaving, id) &&
             (size_t)isr_count(r, id, r->ack_cl, r->ack_gen, r->ack_end) >= q;
        if (!ok) {
            for (size_t i = 0; i < r->n_leaving; i++) {
                if (strcmp(r->leaving[i], id) == 0) {
                    memmove(r->leaving[i], r->leaving[i + 1],
                            (r->n_leaving - i - 1) * sizeof(r->leaving[0]));
                    r->n_leaving--;
                    break;
                }
            }
        }
    }
    pthread_mutex_unlock(&r->mu);
    return ok;
}

void ss_repl_isr_unjoin(ss_repl_t *r, int64_t epoch, const char *id,
                        bool lagging_only)
{
    ss_gate_t *ready;

    pthread_mutex_lock(&r->mu);
    ss_peer_t *p = peer_get(r, id, false);
    if (r->role != SS_ROLE_LEADER || r->epoch != epoch ||
        !id_in(r->joining, r->n_joining, id) ||
        (lagging_only && p != NULL && p->caught_up)) {
        pthread_mutex_unlock(&r->mu);
        return;
    }
    unjoin(r, id);
    if (p != NULL)
        p->caught_up = false; /* reported again once it joins again */
    gates_take(r, false, &ready);
    pthread_mutex_unlock(&r->mu);
    gates_answer(ready, GATE_SEND);
}

void ss_repl_peer_retry(ss_repl_t *r, int64_t epoch, const char *id)
{
    pthread_mutex_lock(&r->mu);
    ss_peer_t *p = peer_get(r, id, false);
    if (r->role == SS_ROLE_LEADER && r->epoch == epoch && p != NULL) {
        p->caught_up = false;
        p->lagging = false;
    }
    pthread_mutex_unlock(&r->mu);
}

gt_err_t ss_repl_follow(ss_repl_t *r, int64_t epoch, const char *leader_id,
                        const char *leader_addr)
{
    ss_follow_t *f;
    gt_err_t rc;

    pthread_mutex_lock(&r->role_mu);
    if (r->role == SS_ROLE_LEADER)
        leader_stop(r);
    if (r->role == SS_ROLE_FOLLOWER)
        follower_stop(r);
    ss_follower_clean(r->dir);
    if ((rc = ss_follow_start(r, epoch, leader_id, leader_addr, &f)) != GT_OK) {
        pthread_mutex_unlock(&r->role_mu);
        return rc;
    }
    pthread_mutex_lock(&r->mu);
    r->fol = f;
    r->epoch = epoch;
    r->role = SS_ROLE_FOLLOWER;
    pthread_mutex_unlock(&r->mu);
    GT_LOG(INFO, "repl", "following %s at %s in epoch %lld", leader_id,
           leader_addr, (long long)epoch);
    pthread_mutex_unlock(&r->role_mu);
    return GT_OK;
}

void ss_repl_stand_down(ss_repl_t *r)
{
    pthread_mutex_lock(&r->role_mu);
    if (r->role == SS_ROLE_LEADER)
        leader_stop(r);
    else if (r->role == SS_ROLE_FOLLOWER)
        follower_stop(r);
    pthread_mutex_unlock(&r->role_mu);
}

void ss_repl_free(ss_repl_t *r)
{
    if (r == NULL)
        return;
    ss_repl_stand_down(r);
    ss_lead_work_free(atomic_exchange(&r->spare, NULL));
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->role_mu);
    pthread_cond_destroy(&r->cv);
    pthread_cond_destroy(&r->serve_cv);
    free(r->dir);
    free(r);
}

ss_role_t ss_repl_role(const ss_repl_t *r)
{
    ss_repl_t *w = (ss_repl_t *)r;
    pthread_mutex_lock(&w->mu);
    ss_role_t role = w->role;
    pthread_mutex_unlock(&w->mu);
    return role;
}

void ss_repl_position(const ss_repl_t *r, int64_t *last_epoch,
                      uint64_t *cl_end)
{
    ss_repl_t *w = (ss_repl_t *)r;
    pthread_mutex_lock(&w->mu);
    *last_epoch = ss_hist_last_epoch(&w->hist);
    if (w->role == SS_ROLE_LEADER && w->local != NULL) {
        st_repl_marks_t m;
        st_local_repl_marks(w->local, &m);
        *cl_end = m.cl_synced;
    } else if (w->role == SS_ROLE_FOLLOWER && w->fol != NULL) {
        *cl_end = ss_follow_cl_next(w->fol);
    } else {
        *cl_end = w->cl_end_known;
    }
    pthread_mutex_unlock(&w->mu);
}

bool ss_repl_elect_key(ss_repl_t *r, char *buf, size_t size)
{
    ss_stream_id_t id;
    uint64_t st = 0, cl;
    bool synced = true;

    pthread_mutex_lock(&r->mu);
    cl = r->cl_end_known;
    pthread_mutex_unlock(&r->mu);
    {   /* what it names must be durable: a fetch stopped midway may have
         * written without syncing */
        uint64_t *bases = NULL;
        size_t n = 0;
        char p[4096];
        if (ss_segs_list(r->dir, &bases, &n) == GT_OK && n > 0) {
            ss_seg_path(r->dir, bases[n - 1], p, sizeof(p));
            int fd = open(p, O_RDONLY);
            if (fd >= 0) {
                synced = fdatasync(fd) == 0;
                close(fd);
            }
        }
        free(bases);
        snprintf(p, sizeof(p), "%s/state.log", r->dir);
        int fd = open(p, O_RDONLY);
        if (fd >= 0) {
            synced = fdatasync(fd) == 0 && synced;
            close(fd);
        }
    }
    if (!synced || ss_stream_id_load(r->dir, &id) != GT_OK)
        return false;
    if (id.led_epoch > 0) {
        snprintf(buf, size, "%020lld 1 %020d %020d %020d",
                 (long long)id.led_epoch, 0, 0, 0);
        return true;
    }
    if (id.epoch > 0) {
        char p[4096];
        snprintf(p, sizeof(p), "%s/state.log", r->dir);
        if (ss_state_scan(p, false, &st) != GT_OK)
            return false;
    }
    if (st == 0) /* no stream it could have been credited with */
        id.epoch = 0, id.gen = 0;
    snprintf(buf, size, "%020lld 0 %020lld %020llu %020llu",
             (long long)id.epoch, (long long)id.gen, (unsigned long long)st,
             (unsigned long long)cl);
    return true;
}

size_t ss_repl_peers(const ss_repl_t *r, ss_repl_peer_t *out, size_t max)
{
    ss_repl_t *w = (ss_repl_t *)r;
    int64_t now = ss_repl_now_ms();
    size_t n = 0;

    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < w->n_peers && n < max; i++, n++) {
        snprintf(out[n].node_id, sizeof(out[n].node_id), "%s", w->peers[i].id);
        out[n].acked_cl_pos = w->peers[i].cl;
        out[n].caught_up = w->peers[i].caught_up;
        out[n].idle_ms = now - w->peers[i].last_fetch_ms;
    }
    pthread_mutex_unlock(&w->mu);
    return n;
}

/* ---- test-only static roles ---- */

gt_err_t ss_repl_test_role(ss_repl_t *r, bool *used)
{
    const char *role = getenv("GANTRY_TEST_REPL_ROLE");
    const char *ep = getenv("GANTRY_TEST_REPL_EPOCH");
    int64_t epoch = ep != NULL ? strtoll(ep, NULL, 10) : 1;

    *used = false;
    if (role == NULL || role[0] == '\0')
        return GT_OK;
    *used = true;
    GT_LOG(WARN, "repl", "test mode: static replication role %s, epoch %lld",
           role, (long long)epoch);
    if (strcmp(role, "leader") == 0) {
        const char *isr_env = getenv("GANTRY_TEST_REPL_ISR");
        char buf[1024];
        const char *ids[SS_REPL_MAX_PEERS];
        size_t n = 0;
        snprintf(buf, sizeof(buf), "%s", isr_env != NULL ? isr_env : r->node_id);
        for (char *save = NULL, *t = strtok_r(buf, ",", &save);
             t != NULL && n < SS_REPL_MAX_PEERS; t = strtok_r(NULL, ",", &save))
            ids[n++] = t;
        return ss_repl_lead(r, epoch, ids, n, NULL);
    }
    if (strcmp(role, "follower") == 0) {
        const char *addr = getenv("GANTRY_TEST_REPL_LEADER");
        if (addr == NULL || addr[0] == '\0')
            return GT_EINVAL;
        return ss_repl_follow(r, epoch, "leader", addr);
    }
    return GT_EINVAL;
}
