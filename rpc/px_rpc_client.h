/* px_rpc_client: the client side of the gRPC runtime, on the grpc C core.
 *
 * Like the server side it knows nothing of RocketMQ: a caller names a
 * method ("/package.Service/Method"), passes one request message as bytes
 * and gets response bytes back.  Two kinds of call: unary (one response)
 * and server streaming (any number of responses, then a status).
 *
 * Channels.  A client connects to one or more endpoints ("host:port"),
 * with a few channels per endpoint (each its own TCP connection: the
 * channels use local subchannel pools); calls take the channels in turn.
 * A channel that loses its connection reconnects by itself with
 * exponential backoff (initial .. max, the core's channel arguments).
 * Calls are fail-fast by default: a call started while its channel has no
 * connection ends at once with UNAVAILABLE (PX_CCALL_WAIT_FOR_READY makes
 * it wait for one until its deadline instead).  The core does not retry
 * (retries are disabled): the caller decides what is safe to repeat.
 *
 * Threads.  Completions are taken off the completion queues by the
 * client's own threads.  Each callback is then handed to the executor
 * given in the options (px_rpc_exec_t; it runs there, never inside the
 * call that started it), or runs on the completion-queue thread when
 * there is none (it must then be short and never block).  With the
 * after_event hook (px_exec_after_event) the callbacks' own posts to the
 * service's executor are queued on the completion thread and run there
 * right after the callback, which saves a thread wake-up per answer.
 * Starting a call never blocks on the network.
 *
 * Per call the core allows one send batch and one receive batch in
 * flight: a unary call is one batch; a streaming call sends its request
 * once and then keeps one message receive in flight, starting the next
 * only after the previous message's callback has returned (messages come
 * in order, and a slow reader holds back the sender through HTTP/2 flow
 * control).
 *
 * Lifetime.  A callback's data (response bytes, details) is borrowed for
 * its duration.  For every call that was started (GT_OK) the final
 * callback (on_done / on_close) runs exactly once, also when the call is
 * cancelled, its deadline passes or the client shuts down (CANCELLED /
 * DEADLINE_EXCEEDED / UNAVAILABLE).  A call that could not be started
 * returns an error and runs no callback. */
#ifndef PX_RPC_CLIENT_H
#define PX_RPC_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <grpc/status.h>

#include "gt_err.h"

typedef struct px_rpc_client px_rpc_client_t;
typedef struct px_ccall px_ccall_t;

typedef void (*px_rpc_task_fn)(void *arg);

/* Where callbacks run: post(ctx, fn, arg) runs fn(arg) soon on another
 * thread.  An error means it cannot: the callback then runs on the
 * completion-queue thread. */
typedef struct px_rpc_exec {
    gt_err_t (*post)(void *ctx, px_rpc_task_fn fn, void *arg);
    void *ctx;
} px_rpc_exec_t;

typedef struct px_rpc_client_opts {
    const char *const *endpoints;   /* "host:port"; borrowed (copied) */
    size_t n_endpoints;             /* >= 1 */
    int channels_per_endpoint;      /* <= 0: 2 */
    int threads;                    /* completion queues, one thread each;
                                       <= 0: 1 */
    int backoff_initial_ms;         /* reconnect backoff; <= 0: 100 */
    int backoff_max_ms;             /* <= 0: 2000 */
    int connect_timeout_ms;         /* least time one connection attempt
                                       gets; <= 0: 1000 */
    int64_t max_receive_bytes;      /* largest response; <= 0: 64 MiB */
    int keepalive_ms;               /* HTTP/2 pings while calls are open,
                                       to find a dead peer; <= 0: none */
    /* Several endpoints serving the same thing (an etcd cluster's
     * members): a call for any endpoint goes to the next one in turn
     * whose channel is connected, else to one that is connecting or idle,
     * and only when all are failing to the next in turn.  false: strictly
     * in turn. */
    bool prefer_ready;
    const px_rpc_exec_t *exec;      /* NULL: callbacks on the queue thread;
                                       borrowed, must outlive the client */
    /* Run by each completion-queue thread once when it starts and after
     * each completion it handled, holding no lock: e.g. the work its
     * callbacks queued on that thread (px_exec_after_event), so that an
     * answer is handled there instead of waking another thread.  May be
     * NULL. */
    void (*after_event)(void *ctx);
    void *after_event_ctx;
} px_rpc_client_opts_t;

/* Creates the channels (they connect at once, in the background) and
 * starts the completion-queue threads.  GT_EINVAL for no endpoint or an
 * empty one; GT_ENOMEM. */
gt_err_t px_rpc_client_new(const px_rpc_client_opts_t *opts,
                           px_rpc_client_t **out);

/* Cancels every call still open, waits for their final callbacks to have
 * run (they run with CANCELLED), then closes the channels and stops the
 * threads.  Calls started after it began fail with GT_ESHUTDOWN.  Must not
 * run on one of the client's threads or inside one of its callbacks.
 * NULL-safe. */
void px_rpc_client_free(px_rpc_client_t *c);

/* True when at least one channel of every endpoint is connected.  Asks
 * idle channels to connect (it never waits). */
bool px_rpc_client_ready(px_rpc_client_t *c);

/* For tests: the connectivity state (grpc_connectivity_state) of channel
 * `ch` of endpoint `e`, -1 if there is none.  reset_backoff: first ends
 * its reconnect backoff and asks it to connect now. */
int px_rpc_client_channel_state(px_rpc_client_t *c, size_t e, int ch,
                                bool reset_backoff);

/* Calls open now (started, final callback not yet run). */
size_t px_rpc_client_open_calls(px_rpc_client_t *c);

/* Per-call flags. */
#define PX_CCALL_WAIT_FOR_READY 0x1u /* wait for a connection (until the
                                        deadline) instead of failing fast */

/* One request metadata entry (lower-case key; copied at the call's start). */
typedef struct px_rpc_md {
    const char *key;
    const char *value;
} px_rpc_md_t;

#define PX_CCALL_MD_MAX 8

typedef struct px_ccall_opts {
    int64_t timeout_ms;   /* deadline from now; <= 0: none */
    uint32_t flags;       /* PX_CCALL_* */
    int endpoint;         /* index into opts.endpoints; < 0: any (in turn) */
    const px_rpc_md_t *md; /* request metadata, up to PX_CCALL_MD_MAX */
    size_t n_md;
} px_ccall_opts_t;

/* Unary answer: code GRPC_STATUS_OK with the response (resp may be NULL
 * with len 0 for an empty message), or an error code with its details
 * ("" if none) and no response. */
typedef void (*px_unary_cb)(void *arg, grpc_status_code code,
                            const char *details, const uint8_t *resp,
                            size_t len);

/* Starts a unary call of `method` (borrowed; copied) with request `req`
 * (copied) and the options `co` (NULL: no deadline, no metadata, any
 * endpoint).  `out` (may be NULL) receives a reference to the call for
 * px_ccall_cancel(); drop it with px_ccall_unref().  GT_ESHUTDOWN when the
 * client is stopping; GT_EINVAL for more than PX_CCALL_MD_MAX metadata
 * entries; GT_ENOMEM. */
gt_err_t px_rpc_unary(px_rpc_client_t *c, const char *method,
                      const uint8_t *req, size_t len,
                      const px_ccall_opts_t *co, px_unary_cb cb, void *arg,
                      px_ccall_t **out);

/* A request made of consecutive parts (borrowed, copied), e.g. records
 * already packed by their owners, concatenated on the wire.  Each part is
 * copied into a slice of its own: nothing is allocated larger than the
 * largest part (a contiguous copy of a large request would be a fresh
 * mapping each time, page faults and all, at gantry's mmap threshold).
 * n_parts >= 1; otherwise as px_rpc_unary. */
typedef struct px_rpc_part {
    const void *p;
    size_t len;
} px_rpc_part_t;

gt_err_t px_rpc_unary_parts(px_rpc_client_t *c, const char *method,
                            const px_rpc_part_t *parts, size_t n_parts,
                            const px_ccall_opts_t *co, px_unary_cb cb, void *arg,
                            px_ccall_t **out);

/* Server streaming: on_message for each response in order (one at a time),
 * then on_close once with the call's status (after the last on_message). */
typedef struct px_stream_cbs {
    void (*on_message)(void *arg, const uint8_t *data, size_t len);
    void (*on_close)(void *arg, grpc_status_code code, const char *details);
} px_stream_cbs_t;

gt_err_t px_rpc_stream(px_rpc_client_t *c, const char *method,
                       const uint8_t *req, size_t len,
                       const px_ccall_opts_t *co, const px_stream_cbs_t *cbs,
                       void *arg, px_ccall_t **out);

/* Bidirectional streaming: `req` is the first request message; later ones
 * go with px_ccall_send().  The client never half-closes: px_ccall_cancel()
 * ends the call.  Responses and the close as px_rpc_stream.  `out` is
 * required (the handle to send on). */
gt_err_t px_rpc_bidi(px_rpc_client_t *c, const char *method,
                     const uint8_t *req, size_t len,
                     const px_ccall_opts_t *co, const px_stream_cbs_t *cbs,
                     void *arg, px_ccall_t **out);
/* Queues one more request message (copied) on a bidi call: sent at once,
 * or after the send in flight (gRPC allows one at a time).  At most one
 * message waits: GT_EBUSY for a second.  GT_ESHUTDOWN once the call has
 * ended; GT_EINVAL for a call that is not bidi. */
gt_err_t px_ccall_send(px_ccall_t *call, const uint8_t *msg, size_t len);

/* Cancels the call (its final callback then gets CANCELLED unless it had
 * already ended).  Safe from any thread, any number of times, also after
 * the call ended, while the reference is held.  References must be dropped
 * before px_rpc_client_free. */
void px_ccall_cancel(px_ccall_t *call);
void px_ccall_unref(px_ccall_t *call);

/* Runs fn(arg) after `ms` milliseconds on the client's timer thread (then
 * handed to the executor like a callback).  For retries with backoff.
 * Pending timers run at once (early) when the client is freed, so that
 * their owners can finish.  GT_ESHUTDOWN, GT_ENOMEM. */
gt_err_t px_rpc_client_after(px_rpc_client_t *c, int64_t ms,
                             px_rpc_task_fn fn, void *arg);

/* True for statuses after which a call may have done nothing on the
 * server and may be retried if it is idempotent: UNAVAILABLE,
 * DEADLINE_EXCEEDED (whether it did anything is unknown). */
bool px_rpc_status_transient(grpc_status_code code);

#endif
