/* gt_bench: declarations shared by the files of the load generator.
 *
 * gt_bench.c parses the flags, sets up connections and Telemetry, runs the
 * phases (warm-up, measure, drain) and prints the result line;
 * gt_bench_call.c holds the per-request state machines on the grpc C core
 * client API; gt_bench_stats.c the latency histogram and error counters.
 *
 * Threads: each worker thread owns one completion queue, the connections
 * assigned to it and their request slots, and its own gb_stats_t; nothing
 * of that is touched by another thread while the workers run.  The only
 * shared mutable state is in gb_run_t and is atomic.  The main thread
 * reads the workers' stats after joining them. */
#ifndef GT_BENCH_H
#define GT_BENCH_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>

#include "apache/rocketmq/v2/service.pb-c.h"

typedef enum gb_mode { GB_MODE_SEND = 0, GB_MODE_RECV } gb_mode_t;

typedef struct gb_opts {
    const char *target;  /* host:port; borrowed from argv */
    gb_mode_t mode;
    int conns;           /* channels, each its own TCP connection */
    int inflight;        /* concurrent requests per connection */
    int batch;           /* send: messages per request; recv: batch_size */
    int size;            /* body bytes (send) */
    int threads;         /* worker threads (completion queues) */
    bool no_deadline_timers; /* channels without deadline timers */
    int queues;          /* send: queue ids to rotate through */
    double duration_s;   /* measured window */
    double warmup_s;     /* discarded window before it */
    int long_poll_ms;    /* recv: long_polling_timeout */
    int64_t count;       /* send: stop after this many OK messages; 0: off */
    const char *topic;
    const char *group;
    const char *client_prefix; /* x-mq-client-id prefix */
    int fifo_groups;     /* send: message_group g<k>, k round-robin over N,
                          * type FIFO; recv: count the groups seen; 0 off */
    int64_t delay_ms;    /* send: delivery_timestamp = now + D; -1 off */
    int64_t deliver_at_ms; /* send: delivery_timestamp = this epoch ms for
                            * every message; 0 off */
    int topics;          /* send: topic <topic><k>, k round robin over N
                          * per request; 0 off (one topic) */
    bool tx;             /* send: type TRANSACTION, then EndTransaction
                          * COMMIT per message; ok counts committed pairs */
} gb_opts_t;

/* ---- statistics (gt_bench_stats.c) ---- */

/* Log-linear histogram of nanosecond values: 64 sub-buckets per power of
 * two, so any quantile is within 1/64 (1.6 %) of the true value. */
#define GB_HIST_SUB_BITS 6
#define GB_HIST_SUB (1 << GB_HIST_SUB_BITS)
#define GB_HIST_BUCKETS ((64 - GB_HIST_SUB_BITS + 1) * GB_HIST_SUB)

typedef struct gb_hist {
    uint64_t n;
    uint64_t b[GB_HIST_BUCKETS];
} gb_hist_t;

void gb_hist_add(gb_hist_t *h, uint64_t ns);
void gb_hist_merge(gb_hist_t *into, const gb_hist_t *from);
/* Value (ns) at quantile q in [0, 1]; 0 for an empty histogram. */
uint64_t gb_hist_quantile(const gb_hist_t *h, double q);

/* Error counts by code: RocketMQ codes are positive (e.g. 50100);
 * gRPC statuses are stored as -status; GB_ERR_DECODE for a response that
 * did not parse. */
#define GB_ERR_DECODE (-1000)
#define GB_ERR_SLOTS 32

typedef struct gb_errs {
    int32_t code[GB_ERR_SLOTS];
    uint64_t n[GB_ERR_SLOTS];
    int used;
    uint64_t other; /* codes beyond GB_ERR_SLOTS distinct ones */
} gb_errs_t;

void gb_errs_add(gb_errs_t *e, int32_t code, uint64_t n);
void gb_errs_merge(gb_errs_t *into, const gb_errs_t *from);
/* Writes "none" or "rmq50100:12,grpc14:3" into buf. */
void gb_errs_format(const gb_errs_t *e, char *buf, size_t len);
uint64_t gb_errs_total(const gb_errs_t *e);

#define GB_MAX_GROUPS 4096 /* --fifo-groups at most */

/* One worker's counters; only what completes in the measured window. */
typedef struct gb_stats {
    uint64_t ok;          /* send: entries OK; recv: acked OK */
    uint64_t received;    /* recv: messages received */
    uint64_t bytes;       /* send: body bytes sent OK; recv: received */
    uint64_t requests;    /* RPCs completed (send, receive) */
    uint64_t empty_polls; /* recv: MESSAGE_NOT_FOUND answers */
    gb_hist_t lat;        /* send: request round trip; recv: end to end */
    gb_hist_t rtt;        /* recv: ReceiveMessage call duration */
    gb_errs_t errs;
    uint64_t first_ns;    /* recv: mono time of the first message, 0 none */
    uint64_t last_ns;     /* recv: mono time of the last ack OK */
    uint64_t early;       /* recv: received before their delivery_timestamp */
    uint64_t grouped;     /* recv: messages carrying a message_group */
    uint8_t groups_seen[GB_MAX_GROUPS / 8]; /* recv: bit k for group g<k> */
    gb_hist_t late;       /* recv: receive time - delivery_timestamp, for
                           * messages that carry one (timer lateness) */
} gb_stats_t;

void gb_stats_merge(gb_stats_t *into, const gb_stats_t *from);

/* ---- run state, connections, workers ---- */

typedef enum gb_phase {
    GB_PHASE_WARMUP = 0,
    GB_PHASE_MEASURE,
    GB_PHASE_DRAIN,
} gb_phase_t;

typedef struct gb_run {
    const gb_opts_t *opts;
    _Atomic int phase;          /* gb_phase_t */
    _Atomic int64_t issued;     /* messages in started send requests */
    _Atomic int64_t total_ok;   /* OK messages in every phase */
    _Atomic uint64_t group_seq; /* --fifo-groups: next message group */
    _Atomic uint64_t topic_seq; /* --topics: next topic */
    char host[128];             /* born_host */
    uint64_t id_nonce;          /* high half of message ids */
    uint8_t *body_template;     /* opts->size bytes of filler */
} gb_run_t;

typedef struct gb_worker gb_worker_t;

/* One channel and its Telemetry stream.  Created and destroyed by the main
 * thread; between, its slots are used only by the owning worker. */
typedef struct gb_conn {
    int index;
    gb_worker_t *w;
    grpc_channel *ch;
    void *m_send, *m_recv, *m_ack, *m_end; /* registered method handles */
    grpc_metadata md[4];
    char client_id[256];
    /* Telemetry (main thread only) */
    grpc_call *tel;
    grpc_byte_buffer *tel_out, *tel_in;
    grpc_metadata_array tel_md, tel_trail;
    grpc_status_code tel_status;
    grpc_slice tel_details;
    int tel_pending; /* batches in flight on the control queue */
    int tel_stage;   /* gb_tel_stage_t in gt_bench.c */
} gb_conn_t;

typedef struct gb_slot gb_slot_t;

struct gb_worker {
    int index;
    gb_run_t *run;
    grpc_completion_queue *cq;
    gb_slot_t **slots;
    int n_slots;
    int inflight; /* slots with a call in progress */
    uint64_t seq; /* message id counter */
    gb_stats_t stats;
    pthread_t thread;
};

/* ---- request state machines (gt_bench_call.c) ---- */

/* Returns an owned slot bound to `c` (free with gb_slot_free). */
gb_slot_t *gb_slot_new(gb_worker_t *w, gb_conn_t *c);
void gb_slot_free(gb_slot_t *s);
/* Starts the slot's next request unless the run is draining. */
void gb_slot_start(gb_slot_t *s);
/* Completion-queue event for a tag that is a slot. */
void gb_slot_on_event(gb_slot_t *s, bool ok);
/* Cancels the slot's call in progress, if any (owning thread only). */
void gb_slot_cancel(gb_slot_t *s);

/* Packs a protobuf message into a new byte buffer (owned by the caller).
 * NULL on allocation failure. */
grpc_byte_buffer *gb_pack(const ProtobufCMessage *m);
/* Unpacks a byte buffer (borrowed); NULL if it does not parse.  Free with
 * protobuf_c_message_free_unpacked(msg, NULL). */
ProtobufCMessage *gb_unpack(const ProtobufCMessageDescriptor *d,
                            grpc_byte_buffer *bb);

uint64_t gb_now_mono_ns(void);
uint64_t gb_now_real_ns(void);

#endif
