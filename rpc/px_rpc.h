/* px_rpc: a small gRPC server runtime on the grpc C core.
 *
 * This is the only module that calls the grpc C core.  It knows nothing of
 * RocketMQ: services register a table of methods (full path -> handler,
 * kind) and receive raw request bytes; they answer through px_call_send()
 * and px_call_finish(), which queue behind at most one send in flight per
 * call (the C core allows one send and one receive batch at a time).
 *
 * Threads: N worker threads, two polling each of N/2 completion queues;
 * calls are spread over the queues round robin.  Handler callbacks
 * for one call never run concurrently with each other except
 * on_interrupt, which may arrive while on_message runs on another thread;
 * handlers guard their own per-call state.  Calls to methods that are not
 * in the table are answered UNIMPLEMENTED at once.
 *
 * Lifetime: a call object lives while the core still has a batch on it or a
 * holder has a reference (px_call_ref/unref).  on_done runs exactly once,
 * when the last reference goes, so handler state can be freed there. */
#ifndef PX_RPC_H
#define PX_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <grpc/status.h>
#include <protobuf-c/protobuf-c.h>

#include "gt_err.h"
#include "gt_tls.h"

typedef struct px_rpc_server px_rpc_server_t;
typedef struct px_call px_call_t;

typedef enum px_rpc_kind {
    PX_RPC_UNARY = 0,
    PX_RPC_SERVER_STREAM,
    PX_RPC_BIDI_STREAM,
} px_rpc_kind_t;

typedef enum px_interrupt {
    PX_INTERRUPT_CANCELLED = 1, /* client cancelled, deadline passed, or
                                   the connection dropped */
    PX_INTERRUPT_SHUTDOWN,      /* server is shutting down: finish soon */
    PX_INTERRUPT_CLOSED,        /* the call is over (after CANCELLED if it
                                   was cancelled); sent to every call */
} px_interrupt_t;

/* Why the runtime answers a request itself instead of passing it on. */
typedef enum px_reject {
    PX_REJECT_MALFORMED = 1, /* the bytes are not a valid req_desc message */
    PX_REJECT_OVERLOAD,      /* admitting it would pass an in-flight bound */
} px_reject_t;

typedef struct px_method {
    const char *path; /* "/package.Service/Method"; borrowed, static */
    px_rpc_kind_t kind;
    /* One raw request message (for methods without on_request).  Unary and
     * server-streaming methods get exactly one call (or a finish with
     * INVALID_ARGUMENT if the client sent none); bidi methods get one per
     * client message.  `data` is borrowed for the duration of the
     * callback. */
    void (*on_message)(px_call_t *call, const uint8_t *data, size_t len);
    /* Bidi only: the client half-closed its side.  May be NULL. */
    void (*on_half_close)(px_call_t *call);
    /* The call was cancelled or the server is stopping (long waits should
     * end now), or the call is over (CLOSED, exactly once per dispatched
     * call: drop references kept elsewhere).  May be NULL.  May run
     * concurrently with on_message. */
    void (*on_interrupt)(px_call_t *call, px_interrupt_t why);
    /* Last callback of a call, when no reference remains.  May be NULL. */
    void (*on_done)(px_call_t *call);
    const void *data; /* handler's static per-method data; borrowed */
    /* Decoded requests (instead of on_message): the runtime unpacks each
     * request message as `req_desc` and passes it on; a message that does
     * not decode goes to on_reject(PX_REJECT_MALFORMED) instead.  `req` is
     * freed when on_request returns unless the handler called
     * px_call_keep_request() (then it frees it with px_request_free(req);
     * the request lives in one arena, see px_request_unpack).  Same
     * arrival rules as on_message. */
    const ProtobufCMessageDescriptor *req_desc;
    const ProtobufCMessageDescriptor *resp_desc; /* for on_reject; may be NULL */
    void (*on_request)(px_call_t *call, ProtobufCMessage *req);
    /* Answers a request the runtime refused (malformed, or over an
     * in-flight bound), e.g. with an in-band status of the method's own
     * response type.  May be NULL: the call then finishes with
     * INVALID_ARGUMENT or RESOURCE_EXHAUSTED. */
    void (*on_reject)(px_call_t *call, px_reject_t why);
    /* Optional, with on_request: sees each request message's raw bytes
     * (borrowed) before they are decoded, to check what decoding hides
     * (e.g. proto3 strings that are not UTF-8 or hold a NUL, which a
     * decoded C string can no longer show).  Returns false when it
     * answered the call itself; the message is then not decoded. */
    bool (*on_screen)(px_call_t *call, const uint8_t *data, size_t len);
    /* Admission: bytes reserved against the in-flight bounds from the
     * call's arrival until its request message is in (then its real size
     * is charged).  Set it to the largest request the method normally
     * takes (e.g. one full-size message); 0 means PX_RPC_RESERVE_DEFAULT.
     * A method with reserve_bytes set reserves, on a connection that sent
     * it requests before, what their recent sizes take instead (up to
     * twice max_receive_bytes; see px_call_admit).
     * Bidi methods reserve nothing at arrival: each message is charged
     * when it is in and released when the handler returns. */
    int64_t reserve_bytes;
} px_method_t;

#define PX_RPC_RESERVE_DEFAULT 1024

/* ---- method table ---- */

typedef struct px_method_table {
    const px_method_t **methods; /* sorted by path; owned array, borrowed entries */
    size_t count;
    size_t cap;
} px_method_table_t;

void px_method_table_init(px_method_table_t *t);
void px_method_table_free(px_method_table_t *t);
/* Borrows `m` (must outlive the table).  GT_EINVAL for a path that is not
 * "/service/method", a method with neither on_message nor on_request (or
 * on_request without req_desc); GT_EEXIST for a duplicate path. */
gt_err_t px_method_table_add(px_method_table_t *t, const px_method_t *m);
/* Returns the method for an exact path, or NULL. `path` need not be
 * NUL-terminated. */
const px_method_t *px_method_table_find(const px_method_table_t *t,
                                        const char *path, size_t len);

/* ---- server ---- */

/* A dispatched call is over (px_rpc_options_t.on_call_end): what an
 * observer (metrics) may want of it.  Strings are borrowed for the
 * callback. */
typedef enum px_call_result {
    PX_CALL_SUCCESS = 0, /* its final status was handed to the transport */
    PX_CALL_CANCELLED,   /* cancelled by the client, deadline, or a drop */
    PX_CALL_SEND_FAILED, /* sending its answer failed */
} px_call_result_t;

typedef struct px_call_end {
    const px_method_t *method;
    int64_t latency_us;      /* arrival to the end of the call */
    grpc_status_code status; /* the status the server sent (CANCELLED if none) */
    /* The response's own `status.code` (the last response message whose
     * type has a message field `status` with an enum field `code`, as
     * RocketMQ's have) and the enum value's name; -1 / NULL if none. */
    int code;
    const char *code_name;
    px_call_result_t result;
} px_call_end_t;

/* TLS on the port (px_rpc_tls.h): RocketMQ proxy's tlsMode. */
typedef enum px_tls_mode {
    PX_TLS_DISABLED = 0, /* plaintext only */
    PX_TLS_PERMISSIVE,   /* TLS and plaintext on the same port */
    PX_TLS_ENFORCING,    /* TLS only */
} px_tls_mode_t;

typedef struct px_rpc_options {
    const char *listen;         /* "host:port"; borrowed */
    int threads;                /* worker threads (two per completion
                                   queue); <= 0 means one per core, at
                                   least 2 */
    int shutdown_timeout_ms;    /* bound for in-flight calls at shutdown */
    int64_t max_receive_bytes;  /* largest accepted request message: the
                                   core refuses a larger one (gRPC status
                                   RESOURCE_EXHAUSTED); grpc 1.51 checks it
                                   once the message is read, so the memory
                                   quota below is what bounds the reading */
    /* Admission control.  A call's request bytes are "in flight" from its
     * arrival (a reservation: see reserve_bytes) until the call is over
     * (its real size), for the whole server and for its connection.  A
     * call that would pass either bound is refused (on_reject(OVERLOAD))
     * without its message being read, unless nothing else is in flight
     * there; small calls may pass the server bound by a sixteenth
     * (px_rpc_int.h).  A request whose size is not known yet (see
     * reserve_bytes) counts at its worst case if that fits under the
     * server bound, else is read on its guess one at a time
     * (px_admit_enter_unknown).  <= 0: no bound. */
    int64_t max_inflight_bytes;
    int64_t max_conn_inflight_bytes;
    int max_header_bytes;       /* request metadata limit per call (a larger
                                 * call alone gets RESOURCE_EXHAUSTED; past
                                 * 1 MiB the transport drops the
                                 * connection); <= 0: 64 KiB */
    void *app;                  /* application context, see px_call_app() */
    /* Run by each worker thread after each event it handled, holding no
     * lock (e.g. work the handlers queued on that thread).  May be NULL. */
    void (*after_event)(void *ctx);
    void *after_event_ctx;
    /* Run once per call that reached a method, when it is over (on a
     * worker thread, no lock held; it must be quick).  May be NULL. */
    void (*on_call_end)(void *ctx, const px_call_end_t *end);
    void *on_call_end_ctx;
    px_tls_mode_t tls_mode;
    /* Certificate files, unless tls_mode is PX_TLS_DISABLED; borrowed for
     * the start (the paths are copied, for px_rpc_server_tls_reload). */
    const gt_tls_files_t *tls_files;
} px_rpc_options_t;

/* Counters of a running server (for metrics); a consistent snapshot. */
typedef struct px_rpc_stats {
    int64_t inflight_bytes;      /* now */
    int64_t inflight_peak_bytes; /* highest since start */
    uint64_t rejected_overload;  /* calls refused by admission control */
    uint64_t calls;              /* calls dispatched to a method */
    uint64_t admission_waiting;  /* calls of unknown size waiting for
                                  * admission (not refused, not read) */
} px_rpc_stats_t;

/* Creates and starts a server that dispatches through `methods` (borrowed;
 * must outlive the server).  On failure returns an error and writes a
 * human-readable reason to `err` (e.g. the port is in use). */
gt_err_t px_rpc_server_start(const px_rpc_options_t *opts,
                             const px_method_table_t *methods,
                             px_rpc_server_t **out, char *err, size_t errlen);

/* The port actually bound (useful with port 0). */
int px_rpc_server_port(const px_rpc_server_t *srv);
/* Fills `out` with the server's counters. */
void px_rpc_server_stats(px_rpc_server_t *srv, px_rpc_stats_t *out);

/* Reads the TLS files again (SIGHUP): new handshakes use the new
 * certificate; connections already up keep theirs.  Bad files are
 * refused with a message in err and the old ones stay.  GT_OK and nothing
 * done when TLS is disabled. */
gt_err_t px_rpc_server_tls_reload(px_rpc_server_t *srv, char *err, size_t errlen);

/* Graceful stop, first half: refuse new calls, interrupt live calls with
 * PX_INTERRUPT_SHUTDOWN, wait up to opts.shutdown_timeout_ms for them to
 * finish (handlers must have dropped their call references by then), then
 * cancel the rest.  Workers keep running, so callbacks that still hold
 * calls (e.g. from a store being closed) can complete.  Returns GT_OK if
 * every call finished within the bound, GT_ETIMEDOUT otherwise. */
gt_err_t px_rpc_server_shutdown(px_rpc_server_t *srv);
/* Second half: stops the workers and frees the server (after
 * px_rpc_server_shutdown). */
void px_rpc_server_destroy(px_rpc_server_t *srv);
/* Both halves. */
gt_err_t px_rpc_server_stop(px_rpc_server_t *srv);

/* ---- calls ---- */

/* Full method path, e.g. "/apache.rocketmq.v2.MessagingService/Heartbeat". */
const char *px_call_method(const px_call_t *call);
/* The server's application context (px_rpc_options_t.app). */
void *px_call_app(const px_call_t *call);
/* The method's table entry (for its `data`). */
const px_method_t *px_call_method_entry(const px_call_t *call);
/* The :authority the client used ("host:port"), "" if none. Borrowed. */
const char *px_call_authority(const px_call_t *call);
/* Client peer, e.g. "ipv4:127.0.0.1:5555". Borrowed. */
const char *px_call_peer(const px_call_t *call);
/* First value of request metadata `key` (lower case), NUL-terminated and
 * borrowed for the call's life; NULL if absent. */
const char *px_call_metadata(const px_call_t *call, const char *key);
/* Milliseconds until the call's deadline (INT64_MAX without one; <= 0 once
 * passed). */
int64_t px_call_deadline_left_ms(const px_call_t *call);
bool px_call_is_cancelled(const px_call_t *call);
/* The server is stopping (px_rpc_server_shutdown has begun): set before the
 * PX_INTERRUPT_SHUTDOWN notices go out, so a handler that attaches a long
 * wait after its notice came (and found nothing) sees it on a re-check. */
bool px_call_server_stopping(const px_call_t *call);

/* Per-call handler state; the runtime never touches it. */
void px_call_set_user(px_call_t *call, void *user);
void *px_call_user(const px_call_t *call);

void px_call_ref(px_call_t *call);
void px_call_unref(px_call_t *call);

/* Queue one response message (copied).  GT_ESHUTDOWN once the call has
 * been finished or cancelled (the message is dropped). */
gt_err_t px_call_send(px_call_t *call, const uint8_t *data, size_t len);
/* Messages queued behind the send in flight (not yet handed to the core):
 * grows while the client does not read.  For streams that must bound what
 * a slow reader costs.  O(backlog). */
size_t px_call_send_backlog(px_call_t *call);
/* Packs and queues a protobuf-c message (borrowed). */
gt_err_t px_call_send_pb(px_call_t *call, const ProtobufCMessage *msg);
/* Queue the final status after every queued message.  Only the first
 * finish counts; later ones return GT_ESHUTDOWN. `msg` may be NULL. */
gt_err_t px_call_finish(px_call_t *call, grpc_status_code code,
                        const char *msg);
/* Calls fn(arg, delivered) once, when the call is over (closed, no send in
 * flight): delivered is true when the batch carrying the final status
 * completed and the client had not cancelled, so every message queued
 * before it was handed to the transport; false when the call was
 * cancelled or broke first (queued messages were dropped: the client never
 * saw them).  Runs on a gRPC worker thread, or at once here when the call
 * is already over.  One watcher per call (a later one replaces it); set it
 * after the final px_call_finish(), holding a call reference.  `arg` is
 * owned by fn. */
void px_call_on_over(px_call_t *call, void (*fn)(void *arg, bool delivered),
                     void *arg);
/* From inside on_request: the handler keeps the decoded request (it frees
 * it later with px_request_free(req)). */
void px_call_keep_request(px_call_t *call);
/* Unary convenience: send `msg` then finish OK, handed to the core as one
 * batch (px_call_send then px_call_finish makes two: the status waits for
 * the message's completion).  GT_ESHUTDOWN as px_call_send. */
gt_err_t px_call_reply_pb(px_call_t *call, const ProtobufCMessage *msg);
/* The same with a packed message (copied). */
gt_err_t px_call_reply(px_call_t *call, const uint8_t *data, size_t len);

/* Runs fn(call, arg) soon on a gRPC worker thread, holding a call
 * reference until it has run.  For completions that arrive on other
 * threads (e.g. the store's writer): building and starting the reply there
 * would make that thread do the gRPC send work.  If the core refuses the
 * hand-off, fn runs at once on the calling thread.  Returns GT_ENOMEM
 * (fn not run) when out of memory. */
gt_err_t px_call_defer(px_call_t *call, void (*fn)(px_call_t *call, void *arg),
                       void *arg);

/* Unpacks a request into one arena (px_rpc_arena.c): no malloc per field,
 * freed at once with px_request_free(msg) -- never with
 * protobuf_c_message_free_unpacked.  NULL for bytes that are not a valid
 * `desc` message (or out of memory).  The runtime decodes on_request's
 * requests with it. */
ProtobufCMessage *px_request_unpack(const ProtobufCMessageDescriptor *desc,
                                    const uint8_t *data, size_t len);
void px_request_free(ProtobufCMessage *req);

/* Unpacks a request; NULL for bytes that are not a valid `desc` message.
 * Free with protobuf_c_message_free_unpacked(msg, NULL). */
ProtobufCMessage *px_pb_unpack(const ProtobufCMessageDescriptor *desc,
                               const uint8_t *data, size_t len);

#endif
