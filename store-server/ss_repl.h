/* ss_repl: replication of one gantry-store node's data within its replica
 * set (issue 12; docs/store-protocol.md, Replication).  This header is the contract
 * between the data path (ss_repl*.c: ReplicaFetch, the follower's fetch
 * loop, gating of answers on the in-sync set) and the control on etcd
 * (ss_cluster*.c: membership, election, epochs, in-sync set changes),
 * which calls the role functions below.
 *
 * Roles.  A node starts as STANDBY: store RPCs answer gRPC UNAVAILABLE
 * "not leader".  ss_repl_lead() makes it the leader of an epoch (opens the
 * local engine on its data directory if it is closed, then serves);
 * ss_repl_follow() makes it a follower of the named leader (closes the
 * engine if open, truncates its commitlog as the leader says, fetches);
 * ss_repl_stand_down() stops serving at once (lease lost, fenced).
 * Role functions may block (opening the engine is start-up work) and are
 * called from one control thread, never from a store or RPC thread. */
#ifndef SS_REPL_H
#define SS_REPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gt_err.h"

struct st_store;
struct px_call;
struct ProtobufCMessage;

typedef struct ss_repl ss_repl_t;

typedef enum ss_role {
    SS_ROLE_STANDBY = 0,
    SS_ROLE_LEADER,
    SS_ROLE_FOLLOWER,
} ss_role_t;

/* What the leader knows of one follower (for in-sync set decisions). */
typedef struct ss_repl_peer {
    char node_id[128];
    uint64_t acked_cl_pos;   /* commitlog bytes the follower holds durably */
    bool caught_up;          /* holds everything the leader has synced */
    int64_t idle_ms;         /* since its last fetch */
} ss_repl_peer_t;

typedef struct ss_repl_events {
    /* Leader: a follower's state changed enough to matter (caught up
     * now, or lagging more than cluster.replica_lag_ms).  Runs on a
     * replication thread; must not block (hand off to the control
     * thread). */
    void (*peer_changed)(void *arg, const ss_repl_peer_t *peer);
    /* Any role: a ReplicaFetch or a leader's answer carried an epoch
     * newer than ours (we are fenced: step down, re-read etcd). */
    void (*newer_epoch)(void *arg, int64_t epoch);
    void *arg;
} ss_repl_events_t;

/* ---- construction (gantry-store's main) ---- */

/* The node's engine, opened and closed by main (it owns what hangs on the
 * store: the executor wrapper, the metadata watcher).  open() makes it
 * serve and hands back the local engine (st_local_open's store, for its
 * replication marks); close() stops serving it and closes it. */
typedef struct ss_repl_engine {
    gt_err_t (*open)(void *arg, struct st_store **local);
    void (*close)(void *arg);
    void *arg;
} ss_repl_engine_t;

typedef struct ss_repl_config {
    const char *node_id;      /* cluster.node_id */
    const char *data_dir;     /* store.data_dir */
    bool flush_async;         /* store.flush: async (marks use the written
                                 commitlog end, shipped once synced) */
    int min_insync;           /* cluster.min_insync */
    int64_t replica_lag_ms;   /* cluster.replica_lag_ms */
    ss_repl_engine_t engine;
    ss_repl_events_t events;
} ss_repl_config_t;

/* A node in STANDBY (engine closed).  GT_ENOMEM, GT_EIO. */
gt_err_t ss_repl_new(const ss_repl_config_t *cfg, ss_repl_t **out);
/* Stands down (closing the engine) and frees.  NULL-safe. */
void ss_repl_free(ss_repl_t *r);
/* Sets the events (the control, created after the node serves). */
void ss_repl_set_events(ss_repl_t *r, const ss_repl_events_t *ev);

/* Leader of `epoch` with in-sync set `isr` (node ids, the leader among
 * them).  Appends (epoch, its commitlog end) to the local epoch history
 * before the first write of the epoch.  history_out (may be NULL) gets
 * that start position for the etcd history key. */
gt_err_t ss_repl_lead(ss_repl_t *r, int64_t epoch, const char *const *isr,
                      size_t n_isr, uint64_t *history_out);
/* The leader's in-sync set changed (after the etcd txn succeeded): answers
 * now wait for these members (and for followers still joining, below).
 * Fewer than min_insync members: writes answer a retriable error until it
 * grows again.
 *
 * Joining: a follower outside the set is reported caught up (peer_changed)
 * only once it holds everything this leader has, and from that moment
 * answers wait for it as well, so that it holds every acknowledged write
 * when etcd lists it.  It stays "joining" until a set naming it is given
 * here, or until the control drops it with ss_repl_isr_unjoin() (etcd
 * does not list it and will not: the txn failed, it is lagging). */
void ss_repl_set_isr(ss_repl_t *r, int64_t epoch, const char *const *isr,
                     size_t n_isr);
/* Before the control removes `id` from the in-sync set in etcd: answers
 * stop counting it at once, and true when the other members still hold
 * every answer released so far as many times as an answer needs now (the
 * leader counts; all of them when that would be fewer than min_insync); then
 * the control may remove it.  False (and it counts again): not now, ask
 * again later.  Cleared by the next ss_repl_set_isr(). */
bool ss_repl_isr_leave(ss_repl_t *r, int64_t epoch, const char *id);
/* Answers stop waiting for the joining follower `id` (with lagging_only:
 * unless it was reported caught up again meanwhile).  No-op if it is not
 * joining, or this is not the leader of `epoch`. */
void ss_repl_isr_unjoin(ss_repl_t *r, int64_t epoch, const char *id,
                        bool lagging_only);
/* The control could not act on a peer_changed event for `id` (etcd did not
 * answer, or the outcome of its write is unknown): the follower's state is
 * reported again at the leader's next check (about once a second, or at its
 * next fetch), as if it had never been reported.  A joining follower stays
 * joining meanwhile (a write that timed out may still have listed it).
 * No-op if this is not the leader of `epoch`. */
void ss_repl_peer_retry(ss_repl_t *r, int64_t epoch, const char *id);
/* Follower of the leader `leader_id` at `leader_addr` (HOST:PORT) in
 * `epoch`. */
gt_err_t ss_repl_follow(ss_repl_t *r, int64_t epoch, const char *leader_id,
                        const char *leader_addr);
/* Stops serving store RPCs and fetching (STANDBY). */
void ss_repl_stand_down(ss_repl_t *r);

ss_role_t ss_repl_role(const ss_repl_t *r);
/* The last epoch this node holds data of (from its local history) and its
 * durable commitlog end: a control may prefer the most complete in-sync
 * member. */
void ss_repl_position(const ss_repl_t *r, int64_t *last_epoch,
                      uint64_t *cl_end);
/* A standby node's position for an election (docs/cluster.md,
 * "Positions"), as a string that compares (strcmp) like the positions:
 * a node that led epoch E ranks above every follower of E; followers by
 * (stream epoch, stream generation, state log bytes, commitlog end).
 * Meaningful in STANDBY only (nothing moves it then).  Syncs what it
 * names first; false (nothing to publish) when it cannot. */
#define SS_REPL_KEY_MAX 112
bool ss_repl_elect_key(ss_repl_t *r, char *buf, size_t size);
/* Snapshot of the followers the leader knows (n written, <= max). */
size_t ss_repl_peers(const ss_repl_t *r, ss_repl_peer_t *out, size_t max);


/* ---- the service's side (ss_service.c, ss_repl_srv.c) ---- */

/* True while this node serves store RPCs (leader, engine open). */
bool ss_repl_serving(ss_repl_t *r);
/* Answers a store call with `data` (a packed response) once q members of
 * the in-sync set, q = max(min_insync, a majority of the set) (the leader
 * among them; members leaving do not count), and every joining
 * follower hold what the store had done when the answer was made (the
 * commitlog's synced end, the state log's length): at once when that is
 * so already.  In-sync set smaller than min_insync: answers AGAIN
 * instead.  Not the leader (any more): UNAVAILABLE "not leader". */
void ss_repl_reply(ss_repl_t *r, struct px_call *call, const uint8_t *data,
                   size_t len);
/* ReplicaFetch (the method table's handler). */
void ss_repl_fetch(struct px_call *call, struct ProtobufCMessage *req);
/* ReplicaStream (bidi): each request message is handled as a
 * ReplicaFetch and answered by one response message on the stream; what
 * ReplicaFetch answers with an error status ends the stream with it. */
void ss_repl_stream(struct px_call *call, struct ProtobufCMessage *req);

/* Test only: the node's role fixed from the environment at start-up
 * (GANTRY_TEST_REPL_ROLE=leader|follower, GANTRY_TEST_REPL_EPOCH (1),
 * GANTRY_TEST_REPL_ISR=id,id,... (the leader's in-sync set, itself
 * included), GANTRY_TEST_REPL_LEADER=HOST:PORT (a follower's leader)).
 * No-op (GT_OK, *used false) when the role variable is unset. */
gt_err_t ss_repl_test_role(ss_repl_t *r, bool *used);

#endif
