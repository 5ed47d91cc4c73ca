/* The leader's side of ss_repl, shared by ss_repl.c (roles, gating of
 * answers, acknowledgements, the leader thread) and ss_repl_ship.c
 * (answering fetches: the files' bytes read into ReplicaFetch answers).
 * Private to those two files; the design is in ss_repl.c's header. */
#ifndef SS_REPL_LEAD_H
#define SS_REPL_LEAD_H

#include "ss_repl_int.h"

typedef Gantry__Store__V1__ReplicaFetchRequest ss_fetch_req_t;
typedef Gantry__Store__V1__ReplicaFetchResponse ss_fetch_resp_t;

typedef struct ss_peer {
    char id[SS_REPL_ID_MAX];
    uint64_t cl;             /* commitlog acknowledged */
    int64_t st_gen;          /* state stream held durably (-1: none) */
    uint64_t st_off;
    int64_t last_fetch_ms;
    int64_t caught_up_ms;    /* last time it held everything */
    bool caught_up, lagging; /* as last reported */
    bool fresh;              /* a request since the last peers_check */
} ss_peer_t;

typedef struct ss_gate {
    struct ss_gate *next;
    px_call_t *call;
    uint64_t cl;
    int64_t gen;
    uint64_t st_end;
    size_t len;
    uint8_t data[];
} ss_gate_t;

typedef struct ss_fetch {
    struct ss_fetch *next;
    px_call_t *call;
    bool stream;             /* a ReplicaStream message (answered with a
                                message on it) or a unary ReplicaFetch */
    char node_id[SS_REPL_ID_MAX];
    int64_t epoch, last_epoch, state_epoch;
    uint64_t cl_next, state_ino, state_offset;
    uint32_t max_bytes;
    int64_t deadline;
} ss_fetch_t;

typedef struct ss_stream {
    int64_t gen;
    uint64_t ino, base_len;
} ss_stream_t;

struct ss_repl {
    ss_repl_config_t cfg;
    char node_id[SS_REPL_ID_MAX];
    char *dir;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_cond_t serve_cv;    /* serving dropped to 0 (not cv: that
                                   would wake the leader thread after
                                   every answer) */
    pthread_mutex_t role_mu;    /* serialises role changes */
    ss_role_t role;
    int64_t epoch;
    st_store_t *local;          /* the engine, open while leader */
    ss_hist_t hist;
    /* leader */
    char isr[SS_REPL_MAX_PEERS][SS_REPL_ID_MAX];
    size_t n_isr;
    char joining[SS_REPL_MAX_PEERS][SS_REPL_ID_MAX]; /* gated, not in isr */
    size_t n_joining;
    char leaving[SS_REPL_MAX_PEERS][SS_REPL_ID_MAX]; /* in isr, not counted */
    size_t n_leaving;
    uint64_t ack_cl;            /* the marks of the latest answer released */
    int64_t ack_gen;
    uint64_t ack_end;
    ss_peer_t peers[SS_REPL_MAX_PEERS];
    size_t n_peers;
    ss_gate_t *gates, **gates_tail;
    ss_fetch_t *parked;         /* waiting for data or their deadline */
    _Atomic size_t n_parked;    /* accepted, not answered yet */
    int serving;                /* threads answering claimed fetches */
    _Atomic(struct ss_work *) spare; /* a store or RPC thread's, kept for
                                   the next (with its state log fd) */
    int64_t lwake_at;           /* the leader thread's next pass */
    int64_t tick_ms;            /* its pace without parked fetches */
    ss_stream_t streams[SS_REPL_MAX_STREAMS];
    size_t n_streams;
    bool kick, lstop, lthread_on;
    pthread_t lthread;
    /* follower */
    ss_follow_t *fol;
    uint64_t cl_end_known;      /* standby: scanned at start */
};

/* ---- ss_repl.c ---- */
/* Answers "not leader" (UNAVAILABLE). */
void ss_lead_unavailable(px_call_t *call);
/* The commitlog mark that ships: written (flush async) or synced. */
uint64_t ss_lead_mark_cl(const ss_repl_t *r, const st_repl_marks_t *m);
/* mu held.  Registers the marks' state stream (first seen: its length
 * then is what a follower must hold before swapping it in). */
const ss_stream_t *ss_lead_stream_note(ss_repl_t *r, const st_repl_marks_t *m);
/* mu held: takes every parked fetch for the caller to answer
 * (ss_lead_serve_claimed), counted in r->serving when there are any. */
ss_fetch_t *ss_lead_claim(ss_repl_t *r);

/* ---- ss_repl_ship.c ---- */
/* What a thread answering fetches needs (the leader thread keeps one). */
typedef struct ss_work ss_work_t;
ss_work_t *ss_lead_work_new(void);
void ss_lead_work_free(ss_work_t *w);
/* The caller counts in r->serving and holds the fetches of `list` (off
 * r->parked, still in n_parked): answers or parks them again (see there).
 * Drops the caller's r->serving count. */
void ss_lead_serve(ss_repl_t *r, ss_fetch_t *list, ss_work_t *w);
/* Answers every fetch of `list` "not leader". */
void ss_lead_fail(ss_repl_t *r, ss_fetch_t *list);
/* From a store or RPC thread (r->serving counted): ss_lead_serve with a
 * work area of its own. */
void ss_lead_serve_claimed(ss_repl_t *r, ss_fetch_t *list);
/* st_local_on_written's callback (arg: the ss_repl_t). */
void ss_lead_on_written(void *arg);

#endif
