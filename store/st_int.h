/* Internals of the local store engine.  Only store/ and its unit tests
 * include this header.
 *
 * Layout of the engine:
 *   st_codec.c   pure codecs: CRC32C, commitlog records, receipt handles,
 *                hashes, tag expressions
 *   st_file.c    the file layer (st_file_ops_t) and its POSIX implementation
 *   st_log.c     commitlog segments, checkpoint, recovery scan, reads
 *   st_writer.c  append submission, the writer thread (group commit) and the
 *                flusher thread
 *   st_state.c   the state log (metadata + consumption state), replay,
 *                compaction, metadata operations
 *   st_cq.c      consume queue files: tails, chunk files, page cache
 *   st_consume.c consume queues, pop / ack / change invisible / DLQ, parked
 *                pops, committed offsets
 *   st_local.c   open / close, the ops table, pull, lookup, stats, retention,
 *                the service thread
 *   st_hold.c    held messages: half messages (transactions), delay timers
 *                (a heap over a system topic), recall; append routing
 *   st_index.c   the id / key index: bounded in memory, sorted run files,
 *                merges on its own thread
 *   st_kv.c      durable metadata records (st_meta_put): a sorted table,
 *                logged in the state log
 *
 * Threads and locks (lock order: lock -> seg_lock / wq_lock / sq_lock /
 * ck_lock; no lock is held across a write, a sync or a callback):
 *   callers   submit appends (wq_lock), run pops/acks (lock)
 *   writer    assigns offsets (lock, briefly), writes; in async mode it
 *             publishes (lock) and runs append callbacks, in sync mode it
 *             hands the written run to the syncer.  In async mode a
 *             front end's appending thread does this itself for small
 *             appends when no one else is writing (st_append_front,
 *             wq_busy)
 *   syncer    (sync mode) fdatasyncs, publishes, runs append callbacks
 *   flusher   fdatasyncs the commitlog (async mode) and the state log
 *   service   answers parked pops on arrival / expiry / timeout, retention,
 *             fires due delay timers
 *   index     writes full index tables as run files and merges runs
 *             (lock, dropped around its I/O) */
#ifndef ST_INT_H
#define ST_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "gt_tagexpr.h"
#include "st.h"

/* ---- CRC, hashes ------------------------------------------------------- */
uint32_t st_crc32c(uint32_t crc, const void *buf, size_t len);
uint64_t st_hash64(char kind, const char *s); /* index: 'I' id, 'K' key */

/* ---- commitlog record codec (format version 1) --------------------------
 * Little-endian.  A record is:
 *   0  u32 magic ST_REC_MAGIC        36 i64 store timestamp (ms)
 *   4  u32 total length L            44 i64 born timestamp (ms)
 *   8  u32 CRC32C of bytes [12, L)   52 i64 delivery timestamp (ms, 0 none)
 *  12  u16 flags                     60 u32 destinations length D
 *  14  u16 header length (72)        64 u32 body length
 *  16  u32 queue id                  68 u32 variable section length V
 *  20  u64 queue offset
 *  28  u64 commitlog position of this record
 *  72  V bytes: strings topic, tag, msg id, born host, msg group; u16 key
 *      count + keys; u16 property count + (key, value) pairs.  A string is
 *      u16 length, the bytes, and a NUL (so decoded views are C strings).
 *  72+V body
 *  72+V+B destinations (D bytes; D == 0 for a record in one queue): a
 *      record stored once for several consume queues (st_append_multi)
 *      lists them all, the first being the header's topic / queue /
 *      offset: u32 count N, N x (u32 queue, u64 queue offset), N x (u16
 *      length + topic name bytes).
 * L = 72 + V + body length + D.  Writers before D existed wrote 0 there. */
#define ST_REC_MAGIC     0x31525447u /* "GTR1" */
#define ST_REC_HDR       72u
#define ST_REC_MAX_HARD  (576u << 20) /* decode bound, whatever the config:
                                        a 512 MiB AMQP body and its header */
#define ST_REC_OFF_QUEUE 16
#define ST_REC_OFF_QOFF  20
#define ST_REC_OFF_POS   28
#define ST_REC_OFF_STS   36

/* Encoded size of msg in topic, or 0 if a field exceeds a format limit. */
size_t st_record_size(const char *topic, const st_message_t *msg);

/* Encodes into buf (cap >= st_record_size()).  Queue, offset, position and
 * store time are placeholders until st_record_seal().  Borrows everything. */
gt_err_t st_record_encode(uint8_t *buf, size_t cap, const char *topic,
                          const st_message_t *msg, size_t *used);

/* The writer's forms: the message id and flags given apart from the
 * message (no copy of it), and no CRC -- the record is sealed once its
 * place is known (st_record_seal). */
size_t st_record_size_as(const char *topic, const st_message_t *msg,
                         const char *msg_id);
gt_err_t st_record_encode_as(uint8_t *buf, size_t cap, const char *topic,
                             const st_message_t *msg, const char *msg_id,
                             uint16_t flags, size_t *used);

/* Destinations of a multi-queue record. */
size_t st_dests_size(const char *const *topics, size_t n);
/* Appends the destination section to a record encoded at buf (its length
 * grows by st_dests_size(); cap must hold it); queue offsets 0 until
 * st_record_set_dest(). */
void st_record_add_dests(uint8_t *buf, const char *const *topics,
                         const uint32_t *queues, size_t n);
/* Sets destination i's queue offset (before st_record_seal). */
void st_record_set_dest(uint8_t *rec, size_t i, uint64_t qoff);
/* The destination section of a decoded record (D bytes at rec + L - D);
 * count 0 for a record in one queue. */
typedef struct st_rdests {
    const uint8_t *p;    /* the section */
    uint32_t count;
    size_t name_at;      /* iteration: next name's offset in p */
} st_rdests_t;
void st_record_dests(const uint8_t *rec, st_rdests_t *d);
/* Destination i (in order; call for i = 0, 1, ...): topic name copied
 * into name (ST_NAME_MAX + 1 bytes). */
void st_rdest_next(st_rdests_t *d, size_t i, char *name, uint32_t *queue,
                   uint64_t *qoff);

/* Writes the writer-assigned fields into an encoded record and its CRC. */
void st_record_seal(uint8_t *rec, uint32_t queue, uint64_t qoff, uint64_t pos,
                    int64_t store_ts);

/* Reads the length of the record at buf.  GT_AGAIN if len < 12, GT_ECORRUPT
 * for a bad magic or a length outside [72, max_len]. */
gt_err_t st_record_peek(const uint8_t *buf, size_t len, size_t max_len,
                        uint32_t *rec_len);

/* Decodes one record.  GT_OK: *out points into buf, *used = record length.
 * GT_AGAIN: buf holds only part of a plausible record.  GT_ECORRUPT: bad
 * magic, length, CRC or structure.  Never allocates. */
gt_err_t st_record_decode(const uint8_t *buf, size_t len, size_t max_len,
                          st_message_t *out, size_t *used);

/* ---- receipt handles ----------------------------------------------------
 * Hex text of: u8 version(1) u32 queue u64 queue offset u64 generation
 * u32 CRC32C of the preceding 21 bytes.  The generation is unique per
 * delivery in a store, so a superseded handle never matches. */
typedef struct st_handle {
    uint32_t queue;
    uint64_t offset;
    uint64_t gen;
} st_handle_t;

void st_handle_encode(const st_handle_t *h, char out[ST_HANDLE_MAX]);
gt_err_t st_handle_decode(const char *s, st_handle_t *h);

/* Tag expressions and the FNV-1a hash of tags and message groups are
 * common/gt_tagexpr.h (gt_tagexpr_t, gt_hash32). */

/* ---- file layer ---------------------------------------------------------
 * Every commitlog / state / checkpoint I/O goes through this table so tests
 * can inject EIO / ENOSPC.  Functions return >= 0 or -errno. */
typedef struct st_file_ops {
    int (*open)(void *ctx, const char *path, int flags, int mode);
    ssize_t (*pwritev)(void *ctx, int fd, const struct iovec *iov, int iovcnt,
                       off_t off);
    ssize_t (*pread)(void *ctx, int fd, void *buf, size_t n, off_t off);
    int (*fdatasync)(void *ctx, int fd);
    int (*ftruncate)(void *ctx, int fd, off_t len);
    int (*close)(void *ctx, int fd);
} st_file_ops_t;

extern const st_file_ops_t st_posix_file_ops;
gt_err_t st_errno_to_err(int neg_errno);

/* ---- in-memory structures ----------------------------------------------- */
typedef struct st_seg {
    uint64_t base;           /* global position of file offset 0 */
    int fd;
    char *path;
    _Atomic int refs;        /* array reference + readers */
    _Atomic uint64_t end;    /* file bytes written (writer / recovery) */
    _Atomic int64_t last_ts; /* store time of its last record */
    _Atomic bool unlink_on_free;
    _Atomic uint64_t zeroed; /* file length incl. zero fill (st_zfill.c) */
} st_seg_t;

/* Consume queue entry (decoded).  On disk (st_cq.c) an entry is 32 bytes:
 * u64 position, u32 size, u32 tag hash, i64 store time, u32 message-group
 * hash, u32 CRC32C of its queue offset (u64) and the 28 bytes before. */
typedef struct st_cq_entry {
    uint64_t pos;
    uint32_t size;
    uint32_t tag_hash;
    int64_t store_ts;
    uint32_t group_hash;   /* st_group_hash(message group), 0 = none */
} st_cq_entry_t;

/* Hash of a FIFO message group; 0 means "no group". */
static inline uint32_t st_group_hash(const char *msg_group)
{
    return msg_group && *msg_group ? gt_hash32(msg_group) | 1u : 0;
}

/* A consume queue (st_cq.c): entries [min_off, flushed) are in the chunk
 * files <dir>/cq/<topic>/<queue>/<first offset, 20 digits> (ST_CQ_CHUNK
 * entries each; read through the store's page cache), entries
 * [flushed, end) in the tail buffer (allocated on the first push, flushed
 * when it holds ST_CQ_TAIL entries).  An idle queue costs this header. */
typedef struct st_cq {
    uint64_t min_off;      /* first retained offset */
    uint64_t end;          /* next offset pushed */
    uint64_t flushed;      /* entries below are written to chunk files */
    uint64_t synced;       /* entries below are fdatasynced (snapshots) */
    uint64_t files_from;   /* chunk files below this offset are unlinked */
    uint64_t assigned;     /* next offset the writer assigns (>= end) */
    uint64_t bytes;
    st_cq_entry_t *tail;   /* tail[i] is offset flushed + i */
    uint32_t tail_cap;
    bool fresh;            /* a file or directory was created: the snapshot
                            * syncs the directories too */
} st_cq_t;

static inline uint64_t st_cq_end(const st_cq_t *q)
{
    return q->end;
}

/* A topic at run time.  Guarded by st->lock.  Never freed before close
 * (a deleted topic keeps its object; re-creating revives it). */
typedef struct st_topic_rt {
    st_topic_t meta;
    struct st_local *st;   /* its store (consume queue files and cache) */
    bool deleted;
    uint32_t nq;           /* consume queues allocated (>= meta.queue_count) */
    st_cq_t *cq;
    uint32_t rr;           /* queue round robin for ST_QUEUE_ANY */
    uint64_t version;      /* bumped on every publish: wakes parked pops */
    uint64_t tx_discarded; /* half messages discarded after max checks */
    uint64_t meta_version; /* st_meta.c: version of the last change */
} st_topic_rt_t;

/* Window entry for offsets between committed and pop position.  NONE: not
 * delivered yet, held back (a delayed message until `deadline`, or a FIFO
 * message whose group has an earlier message in flight). */
enum { ST_E_NONE = 0, ST_E_INFLIGHT, ST_E_ACKED, ST_E_DLQ };
typedef struct st_went {
    uint8_t state;
    uint32_t attempt;
    int64_t deadline;
    uint64_t gen;
} st_went_t;

/* Consumption state of (group, topic, queue).  Guarded by st->lock. */
typedef struct st_cs {
    bool init;
    uint64_t commit;       /* every offset below is acked */
    uint64_t pop;          /* next never-delivered offset */
    st_went_t *w;          /* ring: offset o at w[(wh + o - commit) % wcap] */
    size_t wh, wcap;
    int64_t min_deadline;  /* lower bound of in-flight deadlines */
    struct st_fifo *fifo;  /* FIFO groups: index of the window (st_fifo.c) */
    bool fifo_stale;
} st_cs_t;

/* Open-addressing hash map of object pointers by a 64-bit hash (linear
 * probing, power-of-two capacity, at most half full; no removal: the
 * objects it maps -- topics, groups, a group's topics -- live until close).
 * Callers compare candidates with the real key.  Guarded by st->lock. */
typedef struct st_map {
    struct st_mslot { uint64_t h; void *p; } *s; /* p NULL = empty */
    size_t cap, n;
} st_map_t;

typedef struct st_gtopic {
    struct st_gtopic *next;
    st_topic_rt_t *topic;
    uint32_t ncs;
    st_cs_t *cs;
    uint32_t rr;
} st_gtopic_t;

typedef struct st_group_rt {
    st_group_t meta;
    bool deleted;
    st_gtopic_t *topics;
    st_map_t tmap;         /* topic pointer -> its st_gtopic_t */
    uint64_t meta_version; /* st_meta.c: version of the last change */
} st_group_rt_t;

/* Index (st_index.c): hash -> commitlog positions; candidates are verified
 * on read.  A bounded in-memory part (hash chains, newest first) and
 * immutable sorted run files.  Guarded by st->lock (see st_index.c). */
typedef struct st_ixmem {
    uint32_t *buckets;     /* head entry + 1, 0 = empty */
    size_t nbuckets;       /* a power of two */
    struct st_ient { uint64_t h, pos; uint32_t next; } *e;
    size_t n, cap;
} st_ixmem_t;

typedef struct st_irun st_irun_t;

typedef struct st_index {
    struct st_local *st;
    char *dir;             /* <dir>/index */
    size_t mem_cap;        /* entries per in-memory table */
    st_ixmem_t mem;        /* the active table */
    st_ixmem_t **frozen;   /* full tables awaiting their run, oldest first */
    size_t nfrozen;
    st_irun_t **runs;      /* live runs, by min position (oldest first) */
    size_t nruns, runs_cap;
    st_irun_t **dead;      /* merged away; unlinked after the next snapshot */
    size_t ndead, dead_cap;
    uint64_t removals;     /* numbers dead runs */
    uint64_t next_seq;
    uint64_t min_pos;      /* retained minimum (merges drop what is below) */
    bool damaged;          /* a run failed a CRC: no snapshot until restart */
    bool loaded;           /* runs came from the table snapshot (tests) */
    uint64_t flushes, merges;
    /* the index thread: flushes frozen tables, merges runs */
    pthread_t th;
    pthread_cond_t cond;   /* with st->lock */
    bool running;
    _Atomic bool stop;     /* also read by a merge in progress (unlocked) */
    int64_t retry_at;      /* after a failure (st_mono_ms) */
} st_index_t;

/* Lookup iterator: a stack struct, positions newest first (lock held
 * throughout; nothing to release).  Positions may repeat. */
typedef struct st_index_iter {
    st_index_t *ix;
    uint64_t h;
    int stage;             /* 0 active table, 1 frozen, 2 runs */
    size_t k;
    uint32_t chain;
    st_irun_t *run;        /* run being walked */
    uint32_t block;
    size_t bn, bi;         /* pairs in blk, next one back is bi - 1 */
    st_irun_t *frun;       /* fence entries in fbuf: run, group */
    uint32_t fgroup;
    uint8_t blk[4096];
    uint8_t fbuf[256 * 12];
} st_index_iter_t;

/* What a table snapshot saves of the index (st_index_snap_capture). */
typedef struct st_index_snap {
    uint64_t *runs;        /* (seq, max position) pairs */
    size_t nruns;
    uint64_t *pairs;       /* (hash, position) in-memory entries, oldest first */
    size_t n, cap;
    uint64_t mark;         /* dead runs up to this number may go after it */
} st_index_snap_t;

typedef struct st_index_info {
    size_t mem_entries, mem_bytes; /* tables + fences + run objects */
    size_t runs, dead_runs; /* dead: merged away, file kept for now */
    uint64_t run_entries, flushes, merges;
    bool idle;             /* nothing to flush or merge */
    bool loaded;           /* the start loaded the runs of tables.snap */
} st_index_info_t;

typedef struct st_wop st_wop_t;
typedef struct st_park st_park_t;

typedef struct st_local {
    st_store_t base;
    st_config_t cfg;
    char *dir, *cl_dir;
    const st_file_ops_t *fops;
    void *fctx;
    int lock_fd;
    int64_t start_ms;
    pid_t pid;
    _Atomic uint64_t id_counter;
    uint64_t seg_size;

    /* segments: guarded by seg_lock; the writer alone appends/rolls */
    pthread_mutex_t seg_lock;
    st_seg_t **segs;
    size_t nsegs, segs_cap;

    /* write queue: guarded by wq_lock */
    pthread_mutex_t wq_lock;
    pthread_cond_t wq_cond;
    st_wop_t *wq_head, *wq_tail;
    bool wq_stop;
    bool wq_waiting;                /* the writer sleeps on wq_cond */
    /* async mode: a thread (the writer, or an appending one:
     * st_append_front) is writing; it alone touches what "the writer"
     * owns below and in the segments */
    bool wq_busy;
    pthread_t writer;
    bool wr_need_truncate;          /* the writing thread only */

    /* sync mode pipeline: written runs awaiting fdatasync by the syncer
     * thread, so the writer writes batch N+1 while N is being synced.
     * Guarded by sq_lock. */
    pthread_mutex_t sq_lock;
    pthread_cond_t sq_cond;         /* syncer waits for runs */
    pthread_cond_t sq_idle;         /* writer waits for an empty pipeline */
    struct st_run *sq_head, *sq_tail;
    size_t sq_appends;              /* appends in the runs queued */
    uint64_t sq_ahead;              /* bytes handed over, not yet synced */
    size_t sq_want;                 /* syncer sleeps until this many */
    bool sq_busy, sq_stop, sq_waiting;
    bool sq_failed;                 /* a sync failed: writer must reset */
    /* A small append was queued since the writer last took them, and the
     * writer waits for the syncer (wait_ahead): the former wakes it. */
    atomic_bool wq_small, wr_ahead_wait;
    gt_err_t sq_err;
    uint64_t sq_reset_off;          /* file offset to truncate back to */
    /* zero fill ahead of the writer (sync mode, st_zfill.c) */
    pthread_t zf_thread;
    pthread_mutex_t zf_lock;
    pthread_cond_t zf_cond;
    bool zf_running, zf_stop, zf_kick, zf_busy;
    pthread_t syncer;
    _Atomic uint64_t n_syncs, n_synced_appends; /* group commit figures */
    _Atomic uint64_t written_pos;   /* end of written data */
    _Atomic uint64_t synced_pos;    /* end of fdatasync'd data */
    /* st_local_on_written(): arg stored before fn, read after it */
    _Atomic(st_written_fn) written_fn;
    void *_Atomic written_arg;
    struct st_fsync_hist {          /* st_timed_fdatasync, st_local_io_stats */
        _Atomic uint64_t count, failed, sum_ns;
        _Atomic uint64_t bucket[ST_FSYNC_BUCKETS + 1];
    } fsync_hist[ST_SYNC_FILES];
    uint64_t published_pos;         /* lock: end of published records */

    /* checkpoint file: ck_lock serialises its writes */
    pthread_mutex_t ck_lock;
    int ck_fd;
    uint64_t ck_seq;

    /* flusher: fl_lock/fl_cond for its sleep */
    pthread_t flusher;
    pthread_mutex_t fl_lock;
    pthread_cond_t fl_cond;
    bool fl_stop;
    bool fl_kick;                   /* sync the state log now (st_kv.c) */

    /* everything below: guarded by lock */
    pthread_mutex_t lock;
    pthread_cond_t svc_cond;
    pthread_t svc;
    bool svc_stop, closing;
    st_topic_rt_t **topics;
    size_t ntopics, topics_cap;
    st_group_rt_t **groups;
    size_t ngroups, groups_cap;
    st_map_t topic_map, group_map;  /* by name, deleted ones included */
    st_index_t index;
    char *cq_dir;                   /* <dir>/cq */
    uint32_t cq_chunk, cq_tail;     /* entries per file; tail to flush */
    struct st_cqcache *cqc;         /* st_cq.c: cache of cq file pages */
    bool cq_unlink_due;             /* retention left chunk files to unlink
                                     * after the next table snapshot */
    bool cq_warned;                 /* a flush failed (logged once) */
    int64_t cq_logged_ms;           /* last unreadable-entry log line */
    struct st_parks *parks;         /* st_park.c: parked pops/pulls */
    bool expiry_due;
    int64_t next_expiry;
    uint64_t svc_kicks, svc_kicks_done; /* st_local_clock_kick/_settle */
    int64_t next_retention;
    int64_t next_snapshot;
    uint64_t snap_pos;              /* published_pos at the last snapshot */
    bool snap_busy;                 /* a table snapshot is being written */
    uint64_t min_pos;               /* first retained commitlog position */
    int state_fd;
    uint64_t state_end;
    uint64_t state_compacted;       /* size after the last compaction */
    struct dbuf *state_tail;        /* records logged while compacting */
    bool state_held;                /* disk full: records not written since;
                                     * memory is ahead of state.log until a
                                     * compaction succeeds (retried) */
    int64_t state_retry_ms;         /* next compaction attempt when held */
    bool state_force_compact;
    _Atomic bool state_dirty;
    uint64_t next_gen;

    /* held messages (st_hold.c): the system topics holding half messages
     * and pending timers, the internal group whose windows track which of
     * them are resolved, and the timer heap (min-heap on (due, offset) of
     * the timer topic's unresolved offsets; stale entries -- recalled ones
     * -- are dropped when they reach the top).  Guarded by lock. */
    st_topic_rt_t *sys_timer, *sys_half;
    struct st_tent { int64_t due; uint64_t off; } *theap;
    size_t theap_n, theap_cap;
    size_t theap_stale;             /* about how many entries are dead */
    struct st_rrecall *roll_recalls; /* recalls waiting for a roll */
    size_t rolls_out;               /* roll appends not completed yet */
    uint64_t roll_span;             /* roll timers when the window is longer */
    _Atomic uint64_t timers_fired;

    /* durable metadata records (st_kv.c); guarded by lock: the table
     * sorted by composite key, its bytes, the count of records logged,
     * the generation of the state log file (bumped when compaction swaps
     * it), and the sync-mode puts waiting for a state log sync */
    struct st_kv_ent **kv;
    size_t nkv, kv_cap;
    uint64_t kv_bytes;
    uint64_t kv_seq;
    uint64_t state_fd_gen;
    uint64_t state_ino;             /* lock: inode of state_fd (replication) */
    struct st_kvw *kv_wait, **kv_wait_tail;

    /* metadata watcher (st_meta.c); guarded by lock */
    st_meta_cb meta_cb;
    void *meta_arg;
    uint64_t meta_version;
} st_local_t;

/* ---- st_file.c helpers --------------------------------------------------- */
gt_err_t st_file_pread_full(st_local_t *st, int fd, void *buf, size_t n,
                            uint64_t off);
gt_err_t st_file_pwrite_full(st_local_t *st, int fd, const void *buf,
                             size_t n, uint64_t off);
gt_err_t st_file_sync_dir(st_local_t *st, const char *dir);
int64_t st_now_ms(void);
int64_t st_mono_ms(void);
/* Tests: replaces the wall clock (st_now_ms) of every store in the
 * process, next to the file layer's fault injection (NULL: the real
 * clock again); st_local_clock_kick() makes a store's service thread look
 * at it after it moved (st_park.c). */
typedef int64_t (*st_clock_fn)(void *ctx);
void st_test_clock(st_clock_fn fn, void *ctx);
void st_local_clock_kick(st_store_t *s);
/* Kicks and waits until the service thread has finished a pass begun
 * after the kick (timers, checks, expiries due by the clock handled). */
void st_local_clock_settle(st_store_t *s);
/* The local engine's operations (st_local.c): a store whose ops are these
 * is an st_local_t. */
extern const st_ops_t st_local_ops;

/* ---- st_log.c ------------------------------------------------------------ */
#define ST_SEG_HDR 64u
#define ST_SEG_MAGIC 0x4C435447u /* "GTCL" */
#define ST_FORMAT_VERSION 1u

gt_err_t st_log_open(st_local_t *st);   /* recover + rebuild cq/index */
void st_log_close(st_local_t *st);
st_seg_t *st_log_current(st_local_t *st);          /* ref'd, or NULL */
st_seg_t *st_log_seg_at(st_local_t *st, uint64_t pos); /* ref'd, or NULL */
/* How many segments start at or before pos (their index is sorted by
 * base); the caller holds seg_lock. */
size_t st_log_segs_upto(const st_local_t *st, uint64_t pos);
void st_seg_unref(st_local_t *st, st_seg_t *seg);
gt_err_t st_log_roll(st_local_t *st);   /* writer thread */
/* fops->fdatasync(fd), its time and result counted in fsync_hist[file]
 * (st_iostats.c); returns what it returned (0 or -errno). */
int st_timed_fdatasync(st_local_t *st, st_sync_file_t file, int fd);
/* Sync mode: makes the file at least `need` bytes long by writing zeros
 * ahead (to need + 1 MiB, capped at the segment size), so later
 * fdatasyncs overwrite allocated blocks instead of growing the file (no
 * metadata journal commit per sync).  Writer thread, zf_lock held
 * (st_zfill_ensure; the zero-fill thread keeps it ahead, st_zfill.c). */
gt_err_t st_log_zero_fill(st_local_t *st, st_seg_t *seg, uint64_t need);
/* st_zfill.c: writes zeros to [from, to) of seg (*done: how far it got). */
gt_err_t st_log_zero_range(st_local_t *st, st_seg_t *seg, uint64_t from,
                           uint64_t to, uint64_t *done);
/* The zero-fill thread (sync mode) and the writer's side of it: make
 * [.., need) zero-filled (inline if the thread is behind) and kick the
 * thread when little is left; truncate seg to off; roll the segment.
 * Writer thread. */
gt_err_t st_zfill_start(st_local_t *st);
void st_zfill_stop(st_local_t *st);
gt_err_t st_zfill_ensure(st_local_t *st, st_seg_t *seg, uint64_t need);
int st_zfill_cut(st_local_t *st, st_seg_t *seg, uint64_t off);
gt_err_t st_zfill_roll(st_local_t *st);
void st_log_checkpoint(st_local_t *st, uint64_t synced);
/* Reads the record at pos into a buffer it returns owned (free()); decodes. */
gt_err_t st_log_read(st_local_t *st, uint64_t pos, uint32_t size,
                     uint8_t **buf, st_message_t *msg);
/* Deletes segments whose last record is older than cutoff_ms (never the
 * current one, nor one holding keep_pos or later).  Returns the new first
 * retained position. */
uint64_t st_log_retain(st_local_t *st, int64_t cutoff_ms, uint64_t keep_pos);

/* ---- st_hold.c: half messages, timers, recall ------------------------- */
/* (The %SYS% names are in st.h.) */
/* After state replay (lock held): rebuilds the timer heap. */
gt_err_t st_hold_open(st_local_t *st);
void st_hold_close(st_local_t *st);
/* Service thread (lock held, dropped while firing): fires due timers;
 * returns ms until the next one (INT64_MAX: none). */
int64_t st_hold_service(st_local_t *st, int64_t now);
/* First commitlog position retention must keep (pending held messages). */
uint64_t st_hold_keep_pos(st_local_t *st);
void st_append_local(st_store_t *s, const char *topic,
                     const st_message_t *msgs, size_t n, st_append_cb cb,
                     void *arg);
/* The append op (st_writer.c): st_append_local(), then in async mode the
 * calling thread writes the queued small appends (up to 64 KiB) itself if
 * no one else is writing; large ones are left to the writer thread. */
void st_append_front(st_store_t *s, const char *topic,
                     const st_message_t *msgs, size_t n, st_append_cb cb,
                     void *arg);
void st_tx_end_local(st_store_t *s, const char *topic, const char *msg_id,
                     bool commit, st_done_cb cb, void *arg);
void st_tx_pending_local(st_store_t *s, int64_t unresolved_for_ms,
                         uint32_t max, st_msgs_cb cb, void *arg);
void st_tx_checked_local(st_store_t *s, const char *topic, const char *msg_id,
                         uint32_t seen_checks,
                         uint32_t max_checks, st_done_cb cb, void *arg);
void st_recall_local(st_store_t *s, const char *topic, const char *msg_id,
                     st_done_cb cb, void *arg);
/* Reads the record at pos whose size is not known (index hits). */
gt_err_t st_read_unsized(st_local_t *st, uint64_t pos, uint8_t **buf,
                         st_message_t *m);

/* ---- st_snap.c: consume queues + index saved at a clean close ---------- */
typedef struct st_snap_seg {
    uint64_t base, end;  /* end: file offset after the last record */
    int64_t last_ts;
} st_snap_seg_t;

/* Saves the durable prefix's tables; lock held (dropped around the file
 * write when unlock).  GT_AGAIN: nothing consistent to save now. */
gt_err_t st_snap_write(st_local_t *st, bool unlock);
/* Loads <dir>/tables.snap if it matches the segment files bases[0..n).
 * GT_OK: tables filled; (*segs)[i].end (owned array, free()) is where to
 * start scanning file i (0: from the header; past the last covered one
 * all are 0).  GT_ENOTFOUND: no usable snapshot, tables untouched.
 * GT_ECORRUPT: tables partially filled; reset them and scan in full. */
gt_err_t st_snap_load(st_local_t *st, const uint64_t *bases, size_t n,
                      st_snap_seg_t **segs);

/* ---- st_writer.c --------------------------------------------------------- */
gt_err_t st_writer_start(st_local_t *st);
void st_writer_stop(st_local_t *st);
/* Submits an append.  internal == true: the caller (DLQ) holds lock,
 * msgs[].flags are kept, and a submission error is returned instead of
 * calling cb.  Otherwise lock must not be held and cb always runs. */
gt_err_t st_append_submit(st_local_t *st, const char *topic,
                          const st_message_t *msgs, size_t n,
                          st_append_cb cb, void *arg, bool internal);
void st_append_multi_local(st_store_t *s, const st_message_t *msg,
                           const st_dest_t *dests, size_t nd,
                           st_append_cb cb, void *arg);

/* ---- st_consume.c / st_local.c (called with lock held) ---------------- */
st_topic_rt_t *st_topic_find(st_local_t *st, const char *name);
st_topic_rt_t *st_topic_vivify(st_local_t *st, const char *name);
gt_err_t st_topic_grow(st_topic_rt_t *t, uint32_t nq);
st_group_rt_t *st_group_find(st_local_t *st, const char *name);
st_group_rt_t *st_group_vivify(st_local_t *st, const char *name);
st_cs_t *st_cs_find(st_local_t *st, st_group_rt_t *g, st_topic_rt_t *t,
                    uint32_t q, bool create);
/* The group's state for topic t, created on demand; NULL: none / no memory. */
st_gtopic_t *st_gtopic_find(st_group_rt_t *g, st_topic_rt_t *t, bool create);
/* Frees every topic, group and their tables (close). */
void st_tables_free(st_local_t *st);

/* ---- st_cq.c: consume queues in files (lock held) ---------------------- */
#define ST_CQ_ENTRY 32u         /* bytes per entry (and file header) */
#define ST_CQ_PAGE 4096u        /* cache page: 128 entries */
#define ST_CQ_CACHE_PAGES 1024u /* per store: 4 MiB */
/* (entries per file and the tail to flush: st->cq_chunk, st->cq_tail) */
/* Appends the entry for offset st_cq_end(q); flushes a full tail. */
gt_err_t st_cq_push(st_topic_rt_t *t, uint32_t q, const st_cq_entry_t *e);
/* Copies the entry at off into *out and returns out; NULL when off is
 * outside [min_off, end) or its file entry is unreadable or fails its CRC
 * (logged).  Pointers into the cache would not be stable, hence the copy. */
const st_cq_entry_t *st_cq_get(st_topic_rt_t *t, uint32_t q, uint64_t off,
                               st_cq_entry_t *out);
/* Empty queue: its entries start at off (recovery after retention). */
void st_cq_start(st_topic_rt_t *t, uint32_t q, uint64_t off);
/* Drops entries whose position is below min_pos (retention); their chunk
 * files are unlinked after the next table snapshot (st_cq_unlink). */
void st_cq_prune(st_topic_rt_t *t, uint32_t q, uint64_t min_pos);
/* Before a table snapshot: flushes tails of at least a page and
 * fdatasyncs what was flushed since (files, then new directories).  The
 * lock is dropped around the syncs when unlock. */
gt_err_t st_cq_sync(st_local_t *st, bool unlock);
/* After a table snapshot: unlinks chunk files below each queue's first
 * offset (the snapshot no longer refers to them). */
void st_cq_unlink(st_local_t *st);
/* Snapshot load: the chunk files hold [q->min_off, upto) of queue q
 * (present, long enough, first and last entries pass their CRC). */
gt_err_t st_cq_check(st_topic_rt_t *t, uint32_t q, uint64_t upto);
/* Full scan: removes every chunk file, empties the cache. */
gt_err_t st_cq_wipe(st_local_t *st);
/* Frees a queue's tail; frees the cache (close). */
void st_cq_free(st_cq_t *q);
void st_cq_cache_free(st_local_t *st);
/* For tests: page cache hits and misses since open. */
void st_cq_cache_stats(st_store_t *s, uint64_t *hits, uint64_t *misses);
void st_publish_wake(st_local_t *st, st_topic_rt_t *t);

/* ---- st_index.c: the id / key index (lock held unless said) ------------ */
/* Sets up an empty index over <st->dir>/index (created); mem_cap entries
 * per in-memory table (0: the default). */
gt_err_t st_index_init(st_index_t *ix, struct st_local *st, size_t mem_cap);
gt_err_t st_index_add(st_index_t *ix, uint64_t h, uint64_t pos);
/* Closes everything (stops the thread; lock not held); files stay. */
void st_index_free(st_index_t *ix);
/* Drops runs wholly below min_pos and the active table's entries below it
 * (after retention). */
void st_index_prune(st_index_t *ix, uint64_t min_pos);
/* Full-scan fallback: forgets every entry and deletes every run file. */
void st_index_reset(st_index_t *ix);
/* Snapshot load: opens the listed runs (a missing one is fine if wholly
 * below min_pos) and deletes the other files.  GT_ECORRUPT: a listed run is
 * missing or damaged. */
gt_err_t st_index_load(st_index_t *ix, const uint64_t *seqs,
                       const uint64_t *max_pos, size_t n, uint64_t min_pos);
/* Starts / stops the index thread (lock not held). */
gt_err_t st_index_start(st_index_t *ix);
void st_index_stop(st_index_t *ix);
void st_index_iter_start(st_index_iter_t *it, st_index_t *ix, uint64_t h);
bool st_index_iter_next(st_index_iter_t *it, uint64_t *pos);
/* The snapshot's index section: live runs and in-memory entries below end
 * (s owned: st_index_snap_release).  GT_ECORRUPT: a run was found damaged
 * (no snapshot then: the next start must scan). */
gt_err_t st_index_snap_capture(st_index_t *ix, uint64_t end,
                               st_index_snap_t *s);
void st_index_snap_release(st_index_snap_t *s);
/* A snapshot captured with mark is durable: unlinks runs merged away
 * before it. */
void st_index_snap_done(st_index_t *ix, uint64_t mark);
void st_index_info(const st_index_t *ix, st_index_info_t *out);
/* For tests and the bench: the index figures of a local store. */
void st_local_index_info(st_store_t *s, st_index_info_t *out);

/* window primitives, shared by run time and replay */
st_went_t *st_cs_at(st_cs_t *cs, uint64_t off);
gt_err_t st_cs_extend(st_cs_t *cs, uint64_t to, uint8_t state);
void st_cs_advance(st_cs_t *cs);
void st_cs_reset(st_cs_t *cs, uint64_t commit);
void st_cs_move_commit(st_cs_t *cs, uint64_t off);
void st_cs_clamp(st_cs_t *cs, const st_cq_t *q);

void st_pop_local(st_store_t *s, const st_pop_req_t *req, st_pop_cb cb,
                  void *arg);
void st_pop_cancel_local(st_store_t *s, uint64_t cancel_key);
void st_ack_local(st_store_t *s, const char *group, const char *topic,
                  const char *handle, st_done_cb cb, void *arg);
void st_purge_local(st_store_t *s, const char *group, const char *topic,
                    st_count_cb cb, void *arg);
void st_requeue_local(st_store_t *s, const char *group, const char *topic,
                      st_count_cb cb, void *arg);
void st_ack_batch_local(st_store_t *s, const char *group, const char *topic,
                        const char *const *handles, size_t n, st_acks_cb cb,
                        void *arg);
void st_change_local(st_store_t *s, const char *group, const char *topic,
                     const char *handle, int64_t invisible_ms,
                     st_handle_cb cb, void *arg);
void st_release_local(st_store_t *s, const char *group, const char *topic,
                      const char *handle, st_done_cb cb, void *arg);
void st_offset_get_local(st_store_t *s, const char *group, const char *topic,
                         uint32_t queue, st_offset_cb cb, void *arg);
void st_offset_update_local(st_store_t *s, const char *group,
                            const char *topic, uint32_t queue, uint64_t offset,
                            st_done_cb cb, void *arg);
/* Service thread body: retries parked pops; returns ms until next wake. */
int64_t st_parked_service(st_local_t *st, int64_t now);
void st_parked_shutdown(st_local_t *st);

/* ---- st_state.c ---------------------------------------------------------- */
enum {
    ST_SR_TOPIC_PUT = 1, ST_SR_TOPIC_DEL, ST_SR_GROUP_PUT, ST_SR_GROUP_DEL,
    ST_SR_CS_INIT, ST_SR_POP, ST_SR_ACK, ST_SR_SKIP, ST_SR_COMMIT, ST_SR_GEN,
    ST_SR_META_PUT, ST_SR_META_DEL,
};
typedef struct st_srec {
    uint8_t type;
    const char *group, *topic;
    uint32_t queue;
    uint64_t a, b;        /* offset / from,to / commit,pop / gen */
    uint32_t attempt;
    int64_t deadline;
    uint64_t gen;
    const st_topic_t *t;
    const st_group_t *g;
    /* ST_SR_META_*: namespace NUL key, and the value */
    const uint8_t *kv, *val;
    uint32_t kv_len, val_len;
} st_srec_t;

#define ST_HELD_RETRY_MS 1000  /* held state: compaction retry interval */
gt_err_t st_state_open(st_local_t *st);   /* replay + compact; lock held */
void st_state_close(st_local_t *st);
gt_err_t st_state_log(st_local_t *st, const st_srec_t *r); /* lock held */
/* n records in one write (one buffer, one pwrite), held on a full disk as
 * st_state_log() does; on error none was written.  Lock held. */
gt_err_t st_state_log_n(st_local_t *st, const st_srec_t *r, size_t n);
/* A metadata record (ST_SR_META_*); never held: a full disk fails it. */
gt_err_t st_state_log_kv(st_local_t *st, const st_srec_t *r);
void st_state_sync(st_local_t *st);            /* takes lock briefly */
void st_state_maybe_compact(st_local_t *st);   /* lock held; drops it */
gt_err_t st_topic_validate(const st_topic_t *t);
gt_err_t st_group_validate(const st_group_t *g);
gt_err_t st_topic_put_locked(st_local_t *st, const st_topic_t *t);
void st_topic_put_local(st_store_t *s, const st_topic_t *t, st_done_cb cb,
                        void *arg);
void st_topic_delete_local(st_store_t *s, const char *name, st_done_cb cb,
                           void *arg);
void st_topic_get_local(st_store_t *s, const char *name, st_topic_cb cb,
                        void *arg);
void st_group_put_local(st_store_t *s, const st_group_t *g, st_done_cb cb,
                        void *arg);
void st_group_delete_local(st_store_t *s, const char *name, st_done_cb cb,
                           void *arg);
void st_group_get_local(st_store_t *s, const char *name, st_group_cb cb,
                        void *arg);

/* ---- st_kv.c: durable metadata records (lock held unless said) ---- */
typedef struct st_kv_ent st_kv_ent_t;
/* Applies a put (or a delete) of the record with composite key kv
 * (namespace NUL key) to the table; replay and run time. */
gt_err_t st_kv_apply(st_local_t *st, const uint8_t *kv, uint32_t kv_len,
                     const uint8_t *val, uint32_t val_len, bool del);
/* Fills the kv / val fields of r from an entry (compaction). */
void st_kv_rec(const st_kv_ent_t *e, st_srec_t *r);
/* After a state log sync (lock not held): completes the puts waiting for
 * records up to seq when the state log file is still generation gen;
 * err GT_ESHUTDOWN fails every waiter (close). */
void st_kv_synced(st_local_t *st, uint64_t seq, uint64_t gen, gt_err_t err);
void st_kv_free(st_local_t *st);
void st_meta_put_local(st_store_t *s, const char *ns, const void *key,
                       uint32_t key_len, const void *value, uint32_t value_len,
                       st_done_cb cb, void *arg);
void st_meta_del_local(st_store_t *s, const char *ns, const void *key,
                       uint32_t key_len, st_done_cb cb, void *arg);
void st_meta_list_local(st_store_t *s, const st_meta_list_req_t *req,
                        st_meta_list_cb cb, void *arg);
/* Wakes the flusher for a state log sync now (sync mode puts). */
void st_flusher_kick(st_local_t *st);

/* ---- st_meta.c: metadata notifications (lock held) ---- */
void st_meta_topic_changed(st_local_t *st, st_topic_rt_t *t);
void st_meta_group_changed(st_local_t *st, st_group_rt_t *g);
void st_meta_watch_local(st_store_t *s, st_meta_cb cb, void *arg);

/* For tests: write the table snapshot now. */
gt_err_t st_local_snapshot(st_store_t *s);

/* For tests: compact the state log now. */
void st_local_state_compact(st_store_t *s);

/* For tests: run retention now as if the clock read now_ms. */
void st_local_retention_run(st_store_t *s, int64_t now_ms);

#endif
