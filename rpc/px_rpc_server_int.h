/* Internal header of the gRPC server runtime (rpc/), shared by
 * px_rpc_server.c (arrival, admission, the receive side, the workers and
 * the server's life) and px_rpc_call.c (the call object: references, the
 * send queue, the accessors handlers use): the call and server structs
 * and the few functions one calls in the other.  Only those two include
 * it. */
#ifndef PX_RPC_SERVER_INT_H
#define PX_RPC_SERVER_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <grpc/grpc.h>

#include "px_rpc.h"
#include "px_rpc_int.h"
#include "px_rpc_tls.h"


typedef enum px_tag_kind {
    PX_TAG_REQUEST = 1, /* a new call arrived */
    PX_TAG_RECV,        /* a request message (or half-close) arrived */
    PX_TAG_SEND,        /* a send batch completed */
    PX_TAG_CLOSE,       /* the call is over (status sent or cancelled) */
    PX_TAG_SHUTDOWN,    /* grpc_server_shutdown_and_notify completed */
    PX_TAG_DEFER,       /* an empty batch: run deferred work (px_defer_t) */
} px_tag_kind_t;

typedef struct px_tag {
    px_tag_kind_t kind;
    void *owner; /* px_call_t or px_rpc_server_t */
} px_tag_t;

/* Work handed to a worker thread through an empty batch. */
typedef struct px_defer {
    px_tag_t tag; /* first: the completion's tag points here */
    void (*fn)(px_call_t *call, void *arg);
    void *arg;
} px_defer_t;

typedef struct px_send_item {
    struct px_send_item *next;
    grpc_byte_buffer *msg; /* NULL for a status-only item */
    bool is_status;
    grpc_status_code code;
    char *details;
} px_send_item_t;

typedef struct px_md_kv {
    char *key;
    char *value;
} px_md_kv_t;

/* A call.  Fields above `mu` are written once while the call is being
 * dispatched (before any handler sees it) and then read-only; fields below
 * are guarded by `mu`. */
struct px_call {
    px_rpc_server_t *srv;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md_in;
    const px_method_t *method;
    char *path;
    char *authority;
    char *peer;
    px_md_kv_t *md;
    size_t n_md;
    px_tag_t t_request, t_recv, t_send, t_close;
    grpc_byte_buffer *recv_buf; /* owned by the RECV batch in flight */
    int close_cancelled;        /* written by the core for the CLOSE batch */
    bool req_kept;              /* set by on_request (its thread only) */
    /* Admission: the connection entry and the bytes this call holds in
     * it; written by the thread that runs the call's receive steps (one
     * at a time), read when the call is freed -- and, once `msg_in` is
     * set, zeroed under `mu` when the status is sent. */
    px_conn_t *conn;
    int64_t charged;
    /* A request of unknown size until it is in: what admission holds
     * for its worst case, or whether it took the one slot of reads
     * admitted on a guess (px_admit_enter_unknown).  Same threads as
     * `charged`; released by px_call_unknown_done. */
    int64_t unknown_held;
    bool unknown_guessed;
    size_t midx; /* index of `method` in the table */
    /* Waiting for admission (PX_ADMIT_WAIT, px_rpc_admit_wait.c). */
    px_admit_waiter_t wait;
    int64_t t_start_us; /* arrival (monotonic), for on_call_end */

    pthread_mutex_t mu;
    int refs;
    px_send_item_t *q_head, *q_tail;
    px_send_item_t *inflight;     /* items of the send batch in flight */
    bool msg_in; /* the request message was charged (unary, server-stream) */
    grpc_slice status_slice;      /* details of an in-flight status */
    bool send_in_flight;
    bool initial_md_sent;
    bool finish_queued;
    bool finished;  /* status sent, or the call can no longer send */
    bool closed;    /* CLOSE batch completed */
    bool cancelled;
    bool status_ok; /* a send batch carrying the status completed ok */
    grpc_status_code sent_status; /* of the queued finish, for on_call_end */
    int code;                     /* in-band status.code seen, -1: none */
    const char *code_name;
    void (*over_fn)(void *arg, bool delivered); /* px_call_on_over() */
    void *over_arg;
    void *user;
    struct px_call *live_prev, *live_next; /* guarded by srv->mu */
};

/* The server.  `mu` guards the live-call list, `stopping` and the shutdown
 * flag; everything else is set before the workers start. */
struct px_rpc_server {
    grpc_server *server;
    grpc_completion_queue **cqs; /* n_cqs queues; worker i polls i % n_cqs */
    int n_cqs;
    _Atomic unsigned next_cq;    /* where the next call request goes */
    const px_method_table_t *methods;
    px_rpc_options_t opts;
    int port;
    pthread_t *workers;
    int n_workers;
    /* Test only (GANTRY_TEST_CALL_END_DELAY_MS, 0 otherwise): a send batch
     * that carried a call's status is processed this much later, which
     * widens the window between the client seeing the answer and the
     * call being freed. */
    int test_end_delay_ms;
    /* How long a call may wait for admission (PX_RPC_ADMIT_WAIT_MS; tests
     * change it with GANTRY_TEST_ADMIT_WAIT_MS). */
    int64_t admit_wait_ms;
    px_tag_t t_shutdown;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
    bool shutdown_done;
    px_call_t *live;
    size_t n_live;
    int n_big; /* large requests on threads of their own (px_call_big) */

    px_admit_t admit; /* its own lock */
    /* Calls of unknown size waiting for admission (px_call_admit); each
     * queued call holds a reference.  Its own lock, before admit's. */
    px_admit_wait_t waitq;
    px_tls_t *tls;    /* NULL when TLS is disabled; its own lock */
    /* Per method (index as in methods->methods): a moving average of its
     * request sizes, which sizes the reservation at arrival. */
    _Atomic int64_t *req_avg;
    /* Monotonic ms at which to give freed memory back (malloc_trim), 0 if
     * nothing is due: set when a burst of requests drains, done by a
     * worker a little later, once the transport has freed its buffers
     * too. */
    _Atomic int64_t trim_due_ms;
    atomic_bool active_since_trim; /* a call arrived since the last trim */
    /* Request bytes whose transport buffers were freed since the last
     * trim of them (px_call_raw_freed). */
    _Atomic int64_t raw_freed;
};

/* Delay between a drained burst and the trim (px_call_free sets it, a
 * worker does it). */
#define PX_RPC_TRIM_DELAY_MS 1000

static inline int64_t px_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static inline int64_t px_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------ px_rpc_call.c */

/* A new call object for a request about to be posted on `srv`, with one
 * reference (the pending request's).  NULL when out of memory. */
px_call_t *px_call_new(px_rpc_server_t *srv);
/* Drops the queued sends.  Called with c->mu held. */
void px_call_drop_queue_locked(px_call_t *c);
/* Takes the px_call_on_over() watcher once the call is over (closed, no
 * send in flight).  Called with c->mu held; the caller runs it unlocked. */
bool px_call_over_take_locked(px_call_t *c, void (**fn)(void *, bool),
                              void **arg, bool *delivered);
/* Completions the workers dispatch: a send batch, deferred work. */
void px_call_on_send(px_call_t *c, bool ok);
void px_call_on_defer(px_defer_t *d);

/* ---------------------------------------------------- px_rpc_server.c */

/* The request's size is known (its message is in), or the call ends:
 * releases what admission held for a request of unknown size (and serves
 * the waiting calls if that freed something). */
void px_call_unknown_done(px_call_t *c);
/* Admission bytes or the slot of reads on a guess were released: serves
 * the calls waiting for admission; `expire`: also refuses those that
 * waited too long. */
void px_server_admit_waiters(px_rpc_server_t *srv, bool expire);

#endif
