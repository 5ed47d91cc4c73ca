/* ss_repl internals shared by ss_repl.c (roles, leader side: ReplicaFetch,
 * gating of answers; ss_repl_ship.c builds the fetch answers, with
 * ss_repl_lead.h between the two), ss_repl_follow.c (the follower's fetch loop) and
 * ss_repl_disk.c (files of the data directory: epoch history, segments,
 * state log scans). */
#ifndef SS_REPL_INT_H
#define SS_REPL_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "gantry/store/v1/store.pb-c.h"
#include "px_rpc.h"
#include "ss_repl.h"
#include "st.h"

#define SS_REPL_MAX_PEERS 16
#define SS_REPL_MAX_STREAMS 64
#define SS_REPL_MAX_HIST 1024
#define SS_REPL_CHUNK_BYTES (4u << 20)
#define SS_REPL_MAX_PARKED 64
#define SS_REPL_ID_MAX 128

typedef struct ss_epoch_start {
    int64_t epoch;
    uint64_t pos;
} ss_epoch_start_t;

typedef struct ss_hist {
    ss_epoch_start_t e[SS_REPL_MAX_HIST];
    size_t n;
} ss_hist_t;

/* ---- ss_repl_disk.c ---- */
/* <dir>/epochs: "epoch pos" lines.  Missing file: empty. */
gt_err_t ss_hist_load(const char *dir, ss_hist_t *h);
/* Written to a temporary file, synced, renamed (directory synced). */
gt_err_t ss_hist_save(const char *dir, const ss_hist_t *h);
int64_t ss_hist_last_epoch(const ss_hist_t *h);
/* <dir>/repl.state: what the node's state.log is.  A follower's: the
 * leader's stream (epoch, inode, generation: "E ino gen"); a node that led
 * epoch E since: "E 0 0 led" (its state log is its own).  Missing or bad
 * file: all zero. */
typedef struct ss_stream_id {
    int64_t epoch;      /* the leader epoch of the stream (0: none) */
    uint64_t ino;
    int64_t gen;
    int64_t led_epoch;  /* > 0: this node led that epoch last */
} ss_stream_id_t;
gt_err_t ss_stream_id_load(const char *dir, ss_stream_id_t *id);
/* Written to a temporary file, synced, renamed (directory synced). */
gt_err_t ss_stream_id_save(const char *dir, const ss_stream_id_t *id);

/* Segment bases of <dir>/commitlog, ascending (malloc'd; *n 0 -> NULL). */
gt_err_t ss_segs_list(const char *dir, uint64_t **bases, size_t *n);
void ss_seg_path(const char *dir, uint64_t base, char *out, size_t size);
/* The end of the valid records of the last segment (global position; 0
 * without segments).  truncate: cut the file there (and drop a last
 * segment whose header is bad). */
gt_err_t ss_cl_scan_end(const char *dir, bool truncate, uint64_t *end);
/* Whole valid state log records in `path` from 0: *valid bytes (0 for a
 * missing file or a bad header).  truncate: cut the file there. */
gt_err_t ss_state_scan(const char *path, bool truncate, uint64_t *valid);
gt_err_t ss_sync_dir(const char *dir);
/* Removes what a follower must not keep: cq/, index/, tables.snap. */
void ss_follower_clean(const char *dir);
/* rm -r of one directory (no symlinks followed). */
void ss_rmtree(const char *path);
int64_t ss_repl_now_ms(void); /* CLOCK_MONOTONIC */

/* ---- ss_repl_follow.c ---- */
typedef struct ss_follow ss_follow_t;
gt_err_t ss_follow_start(ss_repl_t *r, int64_t epoch, const char *leader_id,
                         const char *addr, ss_follow_t **out);
void ss_follow_stop(ss_follow_t *f);
uint64_t ss_follow_cl_next(ss_follow_t *f);

/* ---- ss_repl.c: what the follower needs of the node ---- */
const ss_repl_config_t *ss_repl_cfg(const ss_repl_t *r);
void ss_repl_newer_epoch(ss_repl_t *r, int64_t epoch);
/* The follower's history changed (copied from its leader). */
void ss_repl_set_hist(ss_repl_t *r, const ss_hist_t *h);
void ss_repl_get_hist(ss_repl_t *r, ss_hist_t *h);

#endif
