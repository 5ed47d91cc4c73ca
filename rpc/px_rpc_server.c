/* The server side of px_rpc: completion-queue workers, a call's arrival,
 * admission and receive side, and the server's start and graceful
 * shutdown.  The call object and its send queue are px_rpc_call.c's; the
 * structs both use are in px_rpc_server_int.h.
 *
 * Every batch started on the core carries a px_tag_t embedded in the call
 * (or the server); the worker that dequeues it dispatches on tag->kind. */
#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "gt_addr.h"
#include "gt_log.h"
#include "gt_tsan.h"
#include "px_rpc_server_int.h"
#include "px_rpc_tls.h"

/* Request bytes are counted this many times (see px_call_admit_message). */
#define PX_RPC_COPIES 2

/* The core's memory quota: the admission bound plus this, room for the
 * one read of unknown size (which may be a message past the receive
 * limit, read whole) beside what admission covers.  Quota exhaustion is
 * not aimed: the core's reclaimers then cancel streams and close
 * connections of any client.  Measured with scripts/bench-overload at a
 * 128 MiB bound: with 0, senders of 128 MiB batches (B) exhausted it at
 * every read and 10-18 of ~400 control sends failed; with 64 MiB (and
 * the hold-off of px_admit_note_unread) none, peak RSS 209 MiB in B,
 * 210 MiB in A, 165 MiB in C; 128 MiB gave A 230 MiB.  (Before reads of
 * unknown size were one at a time, 64 MiB let C peak at 381 MiB.) */
#define PX_RPC_QUOTA_SLACK (64LL << 20)
/* The worst case of a read of unknown size: none (see px_call_admit). */
#define PX_RPC_WORST_UNBOUNDED (INT64_MAX / 4)

/* Request metadata: the limit a call is held to (px_opts max_header_bytes
 * when set), and the transport's own, past which grpc 1.51 drops the whole
 * connection (a header list is parsed before any call exists to refuse). */
#define PX_RPC_HEADER_BYTES (64 * 1024)
#define PX_RPC_HEADER_HARD_BYTES (1024 * 1024)

/* Requests kept posted so bursts of new calls do not wait for a worker. */
#define PX_RPC_PENDING_REQUESTS 32

/* Completion queues: n_workers / 2 (at least one), two workers polling
 * each, so a worker held by one event (a trim, a slow handler) does not
 * hold up the other calls of its queue.  Workers default to one per core,
 * as more queues than that cost more than they save with few open calls
 * (measured on 2 cores: 16 workers on 8 queues gave a 0.51 ms wake p50
 * with 10 parked polls against 0.29 for 2 workers on one queue, and no
 * better p50 with 100,000 parked: 0.62 vs 0.65 ms).  The core's cost per
 * completion grows with the batches still outstanding on its queue: the
 * Debian build of grpc 1.51 has its debug checks on (no NDEBUG) and looks
 * every completed tag up in a plain array of the queue's outstanding tags.
 * A parked long poll keeps a batch outstanding (RECV_CLOSE_ON_SERVER) for
 * its whole wait, so with 100,000 parked polls on one queue every
 * completion -- a send's, an ack's, a wake's -- scanned 100,000 pointers
 * under the queue's lock.  Calls are spread over the queues round robin, so
 * each holds 1/N of them. */

/* Transport buffers of this many request bytes freed: trim at once (see
 * px_call_raw_freed). */
#define PX_RPC_RAW_TRIM_BYTES (16LL * 1024 * 1024)

/* Unary requests of at least this many bytes are read and handled on a
 * thread of their own (px_call_big). */
#define PX_RPC_BIG_BYTES (1LL << 20)

/* The request's size is known (its message is in), or the call ends:
 * releases what admission held for a request of unknown size. */
void px_call_unknown_done(px_call_t *c)
{
    bool released = c->unknown_held != 0 || c->unknown_guessed;

    px_admit_unknown_done(&c->srv->admit, c->unknown_held, c->unknown_guessed);
    c->unknown_held = 0;
    c->unknown_guessed = false;
    if (released)
        px_server_admit_waiters(c->srv, false);
}

static char *px_slice_dup(grpc_slice s)
{
    size_t len = GRPC_SLICE_LENGTH(s);
    char *p = malloc(len + 1);
    if (p != NULL) {
        memcpy(p, GRPC_SLICE_START_PTR(s), len);
        p[len] = '\0';
    }
    return p;
}

/* Copies what handlers may read into NUL-terminated strings. */
static gt_err_t px_call_capture(px_call_t *c)
{
    c->path = px_slice_dup(c->details.method);
    c->authority = px_slice_dup(c->details.host);
    c->peer = grpc_call_get_peer(c->call);
    if (c->srv->tls != NULL && c->peer != NULL) {
        /* A socket the TLS front handed over or relays: its client. */
        char *real = px_tls_peer(c->srv->tls, c->peer);
        if (real != NULL) {
            gpr_free(c->peer);
            c->peer = real;
        }
    }
    if (c->path == NULL || c->authority == NULL)
        return GT_ENOMEM;
    if (c->md_in.count > 0) {
        c->md = calloc(c->md_in.count, sizeof(*c->md));
        if (c->md == NULL)
            return GT_ENOMEM;
    }
    for (size_t i = 0; i < c->md_in.count; i++) {
        c->md[i].key = px_slice_dup(c->md_in.metadata[i].key);
        c->md[i].value = px_slice_dup(c->md_in.metadata[i].value);
        c->n_md++;
        if (c->md[i].key == NULL || c->md[i].value == NULL)
            return GT_ENOMEM;
    }
    return GT_OK;
}

/* Request metadata as HTTP/2 counts a header list (RFC 7540 6.5.2: name
 * + value + 32 per field), the pseudo-headers (:path, :authority) too. */
static size_t px_call_metadata_bytes(const px_call_t *c)
{
    size_t n = strlen(c->path) + 5 + 32 + strlen(c->authority) + 10 + 32;
    for (size_t i = 0; i < c->md_in.count; i++)
        n += GRPC_SLICE_LENGTH(c->md_in.metadata[i].key) +
             GRPC_SLICE_LENGTH(c->md_in.metadata[i].value) + 32;
    return n;
}

static size_t px_server_header_limit(const px_rpc_server_t *srv)
{
    return srv->opts.max_header_bytes > 0 ? (size_t)srv->opts.max_header_bytes
                                          : PX_RPC_HEADER_BYTES;
}

static bool px_call_start_recv(px_call_t *c)
{
    grpc_op op;

    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_buf;
    pthread_mutex_lock(&c->mu);
    c->refs++;
    pthread_mutex_unlock(&c->mu);
    GT_TSAN_RELEASE(&c->t_recv);
    if (grpc_call_start_batch(c->call, &op, 1, &c->t_recv, NULL) !=
        GRPC_CALL_OK) {
        px_call_unref(c);
        return false;
    }
    return true;
}

void px_call_keep_request(px_call_t *c) { c->req_kept = true; }

/* Answers a refused request through the method's responder, or with a
 * plain gRPC status. */
static void px_call_reject(px_call_t *c, px_reject_t why)
{
    const px_method_t *m = c->method;
    char msg[200];

    if (m->on_reject != NULL) {
        m->on_reject(c, why);
        return;
    }
    if (why == PX_REJECT_MALFORMED) {
        snprintf(msg, sizeof(msg), "malformed %.150s",
                 m->req_desc != NULL ? m->req_desc->short_name : "request");
        px_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, msg);
    } else {
        px_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
                       "too many request bytes in flight");
    }
}

/* Releases a request message's bytes: `*s`, or the byte buffer `bb` it
 * lies in when it is the transport's own slice (the contiguous case of
 * px_call_read).  The transport takes its read buffers from the server's
 * resource quota, and the last unref of such a slice gives the bytes back
 * to it, which can wake the quota's reclamation (under memory pressure it
 * waits for reclaimers): grpc core schedules that on the calling thread's
 * ExecCtx, and a thread of ours has none outside grpc's calls.
 * grpc_slice_unref and grpc_slice_buffer_destroy make none in grpc 1.51,
 * grpc_byte_buffer_destroy does: the worker crashed in ExecCtx::Run
 * (SIGSEGV, bench-overload B: 8 senders of 128 MiB batches). */
static void px_request_bytes_release(grpc_slice *s, grpc_byte_buffer *bb)
{
    if (bb != NULL)
        grpc_byte_buffer_destroy(bb);
    else
        grpc_slice_unref(*s);
}

/* Hands one request message (`*s`, released here, with `bb` when it lies
 * in it) to the method: raw, or decoded once here, the bytes released
 * before the handler runs. */
static void px_call_deliver(px_call_t *c, grpc_slice *s, grpc_byte_buffer *bb)
{
    const px_method_t *m = c->method;
    ProtobufCMessage *req;

    if (m->on_request == NULL) {
        m->on_message(c, GRPC_SLICE_START_PTR(*s), GRPC_SLICE_LENGTH(*s));
        px_request_bytes_release(s, bb);
        return;
    }
    if (m->on_screen != NULL &&
        !m->on_screen(c, GRPC_SLICE_START_PTR(*s), GRPC_SLICE_LENGTH(*s))) {
        px_request_bytes_release(s, bb);
        return;
    }
    req = px_request_unpack(m->req_desc, GRPC_SLICE_START_PTR(*s),
                            GRPC_SLICE_LENGTH(*s));
    px_request_bytes_release(s, bb);
    if (req == NULL) {
        px_call_reject(c, PX_REJECT_MALFORMED);
        return;
    }
    c->req_kept = false;
    m->on_request(c, req);
    if (!c->req_kept)
        px_request_free(req);
}

/* Charges a message of `len` bytes that just arrived: unary and
 * server-streaming calls swap their reservation for it (refused, and
 * answered OVERLOAD, if that passes a bound); bidi calls add it until the
 * handler returns, never refused (a refusal would end the stream). */
static void px_call_note_size(px_call_t *c, int64_t len);

static bool px_call_admit_message(px_call_t *c, int64_t len)
{
    bool bidi = c->method->kind == PX_RPC_BIDI_STREAM;

    if (!bidi) {
        px_call_note_size(c, len);
        px_admit_note_size(&c->srv->admit, c->conn, c->midx, len);
        /* Two copies live while a request is served: the raw bytes and
         * the decoded message while decoding, then the decoded message
         * and what the handler derives from it (e.g. the store's encoded
         * records until they are written). */
        len *= PX_RPC_COPIES;
    }
    if (!px_admit_adjust(&c->srv->admit, c->conn, bidi ? 0 : c->charged, len,
                         bidi)) {
        GT_LOG(DEBUG, "rpc", "%s from %s: %lld request bytes refused (overload)",
               c->path, px_call_peer(c), (long long)len);
        px_call_reject(c, PX_REJECT_OVERLOAD);
        return false;
    }
    if (!bidi) {
        c->charged = len;
        /* From here on the status's send may release the charge (the
         * lock orders this write before that read). */
        pthread_mutex_lock(&c->mu);
        c->msg_in = true;
        pthread_mutex_unlock(&c->mu);
    }
    return true;
}

/* The transport's buffers of a request message of `len` bytes were just
 * freed.  grpc reads a message into 64 KiB slices (malloc'd below the mmap
 * threshold, so from the heap and the thread arenas); freed, glibc keeps
 * those pages resident for reuse, and only a drained burst used to trim
 * them.  Under sustained large requests the heaps then held the high-water
 * mark of everything the transport ever buffered at once -- up to its
 * quota, 141 MiB in bench-overload C at a 128 MiB bound -- on top of the
 * admitted copies (peak RSS 183-327 MiB).  So every PX_RPC_RAW_TRIM_BYTES
 * of freed request bytes give the free pages back (malloc_trim releases
 * whole free pages inside the heaps, not just their tops): the heaps then
 * hold what the transport holds now, which admission counts. */
static void px_call_raw_freed(px_rpc_server_t *srv, int64_t len)
{
    if (len < PX_ADMIT_SMALL_BYTES)
        return;
    if (atomic_fetch_add_explicit(&srv->raw_freed, len, memory_order_relaxed) +
            len < PX_RPC_RAW_TRIM_BYTES)
        return;
    atomic_store_explicit(&srv->raw_freed, 0, memory_order_relaxed);
    malloc_trim(0);
}

/* Makes the admitted message `bb` of `len` bytes one slice and hands it
 * to the method. */
static void px_call_read(px_call_t *c, grpc_byte_buffer *bb, int64_t len)
{
    grpc_byte_buffer_reader rd;
    grpc_slice s;

    if (bb->type == GRPC_BB_RAW &&
        bb->data.raw.compression == GRPC_COMPRESS_NONE &&
        bb->data.raw.slice_buffer.count == 1) {
        /* Already contiguous (most small requests): no copy. */
        s = bb->data.raw.slice_buffer.slices[0];
        px_call_deliver(c, &s, bb);
    } else if (grpc_byte_buffer_reader_init(&rd, bb)) {
        s = grpc_byte_buffer_reader_readall(&rd);
        grpc_byte_buffer_reader_destroy(&rd);
        /* One copy of the request at a time: drop the core's. */
        grpc_byte_buffer_destroy(bb);
        px_call_raw_freed(c->srv, len);
        px_call_deliver(c, &s, NULL);
    } else {
        grpc_byte_buffer_destroy(bb);
        px_call_finish(c, GRPC_STATUS_INTERNAL,
                       "cannot read the request message");
    }
}

typedef struct px_big {
    px_call_t *c;
    grpc_byte_buffer *bb;
    int64_t len;
} px_big_t;

static void px_big_done(px_rpc_server_t *srv)
{
    pthread_mutex_lock(&srv->mu);
    if (--srv->n_big == 0)
        pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
}

static void *px_big_main(void *arg)
{
    px_big_t *b = arg;
    px_rpc_server_t *srv = b->c->srv;

    pthread_setname_np(pthread_self(), "px-big");
    px_call_read(b->c, b->bb, b->len);
    px_call_unref(b->c);
    free(b);
    px_big_done(srv);
    return NULL;
}

/* A large unary request (a batch of up to message.max_batch_bytes) is
 * read, decoded and handled (the store encodes and checksums it) on a
 * thread of its own, with the worker's reference to the call: on the
 * worker, that held every other call of its completion queue behind it --
 * under bench-overload C (8 senders of 32 MiB batches) a control send's
 * answer waited up to 350 ms for its worker there, after the store had
 * answered in 5 ms.  Admission bounds how many there are at once.  False:
 * not large, or no thread (then it runs here). */
static bool px_call_big(px_call_t *c, grpc_byte_buffer *bb, int64_t len)
{
    px_rpc_server_t *srv = c->srv;
    pthread_attr_t at;
    pthread_t th;
    px_big_t *b;
    int r;

    if (len < PX_RPC_BIG_BYTES || c->method->kind != PX_RPC_UNARY ||
        (b = malloc(sizeof(*b))) == NULL)
        return false;
    *b = (px_big_t){c, bb, len};
    pthread_mutex_lock(&srv->mu);
    srv->n_big++;
    pthread_mutex_unlock(&srv->mu);
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    r = pthread_create(&th, &at, px_big_main, b);
    pthread_attr_destroy(&at);
    if (r != 0) {
        free(b);
        px_big_done(srv);
        return false;
    }
    return true;
}

static void px_call_on_recv(px_call_t *c, bool ok)
{
    grpc_byte_buffer *bb = c->recv_buf;
    const px_method_t *m = c->method;
    bool bidi = m->kind == PX_RPC_BIDI_STREAM;
    bool unknown = c->unknown_held != 0 || c->unknown_guessed;

    c->recv_buf = NULL;
    /* The read is over (a message, none, or failed): its size is no
     * longer unknown. */
    px_call_unknown_done(c);
    if (ok && bb != NULL) {
        int64_t len = (int64_t)grpc_byte_buffer_length(bb);

        if (!px_call_admit_message(c, len)) {
            grpc_byte_buffer_destroy(bb);
            px_call_raw_freed(c->srv, len);
            px_call_unref(c);
            return;
        }
        if (px_call_big(c, bb, len))
            return; /* with this reference */
        px_call_read(c, bb, len);
        if (bidi) {
            px_admit_adjust(&c->srv->admit, c->conn, len, 0, true);
            if (!px_call_is_cancelled(c))
                px_call_start_recv(c);
        }
    } else if (!ok && !bidi && m->reserve_bytes > 0 && c->conn != NULL) {
        GT_LOG(DEBUG, "rpc", "%s from %s: the request was not read", c->path,
               px_call_peer(c));
        px_admit_note_unread(&c->srv->admit, c->conn, c->midx, unknown,
                             px_mono_ms());
    } else if (ok) {
        /* The client half-closed. */
        if (bidi) {
            if (m->on_half_close != NULL)
                m->on_half_close(c);
        } else {
            px_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT,
                           "the request message is missing");
        }
    }
    px_call_unref(c);
}

static void px_server_live_remove(px_rpc_server_t *srv, px_call_t *c)
{
    pthread_mutex_lock(&srv->mu);
    if (c->live_prev != NULL)
        c->live_prev->live_next = c->live_next;
    else if (srv->live == c)
        srv->live = c->live_next;
    if (c->live_next != NULL)
        c->live_next->live_prev = c->live_prev;
    c->live_prev = c->live_next = NULL;
    srv->n_live--;
    pthread_mutex_unlock(&srv->mu);
}

static void px_call_on_close(px_call_t *c)
{
    bool cancelled;
    void (*over_fn)(void *, bool) = NULL;
    void *over_arg = NULL;
    bool over, delivered = false;
    px_call_end_t end = {.method = c->method};

    pthread_mutex_lock(&c->mu);
    c->closed = true;
    cancelled = c->close_cancelled != 0;
    if (cancelled) {
        c->cancelled = true;
        c->finished = true;
        if (!c->send_in_flight)
            px_call_drop_queue_locked(c);
    }
    over = px_call_over_take_locked(c, &over_fn, &over_arg, &delivered);
    end.status = c->sent_status;
    end.code = c->code;
    end.code_name = c->code_name;
    end.result = cancelled ? PX_CALL_CANCELLED
                 : c->finished && !c->status_ok && !c->send_in_flight ? PX_CALL_SEND_FAILED
                                                                       : PX_CALL_SUCCESS;
    pthread_mutex_unlock(&c->mu);
    if (c->method != NULL && c->srv->opts.on_call_end != NULL) {
        end.latency_us = px_mono_us() - c->t_start_us;
        c->srv->opts.on_call_end(c->srv->opts.on_call_end_ctx, &end);
    }
    if (over)
        over_fn(over_arg, delivered);
    if (cancelled && px_admit_wait_remove(&c->srv->waitq, &c->wait))
        px_call_unref(c); /* the queue's reference */
    px_server_live_remove(c->srv, c);
    if (c->method != NULL && c->method->on_interrupt != NULL) {
        if (cancelled)
            c->method->on_interrupt(c, PX_INTERRUPT_CANCELLED);
        c->method->on_interrupt(c, PX_INTERRUPT_CLOSED);
    }
    px_call_unref(c);
}

static void px_server_request(px_rpc_server_t *srv);

/* Admission at arrival, before the message is read.  A method that takes
 * large requests (reserve_bytes set) reserves what this connection's
 * recent requests of it took (PX_RPC_COPIES times their average size, at
 * most that of the largest message the core accepts): a connection of
 * small requests reserves little and is served beside large ones (the
 * bound keeps headroom for small calls, px_rpc_admit.c), and a run of
 * batches is limited before the core buffers them -- their whole charge
 * is known, so none is read only to be refused.  A connection's first
 * request reserves twice the method's recent average over all
 * connections, at most its reserve_bytes -- and if that is refused, its
 * next one reserves 1 KiB, so that its size is learnt even while the
 * bound stays full (one message read per such connection, at most);
 * other methods reserve 1 KiB.  Those two (a first request and a probe)
 * are of unknown size, and no worst case bounds them: the core reads a
 * message past its receive limit whole before refusing it.  So they are
 * admitted on their guess one at a time server-wide
 * (px_admit_enter_unknown with an unbounded worst case), until their
 * message is in.  A request that ended unread (past the limit, or
 * cancelled) makes its connection's next one of the method a probe, and
 * if it was of unknown size already, holds the connection off for a
 * while: its next requests of the method are refused at arrival
 * (px_admit_note_unread).
 * Bidi streams reserve nothing and are always admitted.  A refused call
 * is answered without its message being read: the core never opens the
 * stream's flow-control window for it. */
static px_admit_verdict_t px_call_admit(px_call_t *c)
{
    atomic_store_explicit(&c->srv->active_since_trim, true,
                          memory_order_relaxed);
    const px_method_t *m = c->method;
    px_rpc_server_t *srv = c->srv;
    bool bidi = m->kind == PX_RPC_BIDI_STREAM;
    int64_t cap = m->reserve_bytes > 0 ? m->reserve_bytes
                                       : PX_RPC_RESERVE_DEFAULT;
    int64_t most = srv->opts.max_receive_bytes > cap
                       ? srv->opts.max_receive_bytes
                       : cap;
    int64_t want = 0, seen = 0;
    px_admit_verdict_t ok;

    for (c->midx = 0; c->midx < srv->methods->count &&
                      srv->methods->methods[c->midx] != m;
         c->midx++)
        ;
    if (!bidi && m->reserve_bytes > 0 &&
        px_admit_held_off(&srv->admit, px_call_peer(c), c->midx,
                          px_mono_ms())) {
        GT_LOG(DEBUG, "rpc", "%s from %s refused at arrival: its "
               "connection's last request of it was not read", c->path,
               px_call_peer(c));
        return PX_ADMIT_REFUSED;
    }
    if (!bidi && m->reserve_bytes > 0)
        seen = px_admit_conn_size(&srv->admit, px_call_peer(c), c->midx);
    if (seen < 0) {
        /* Refused before without a size to go by: probe with a small
         * reservation, and learn the size. */
        want = PX_RPC_RESERVE_DEFAULT;
    } else if (seen > 0) {
        want = seen > most ? most : seen;
        want *= PX_RPC_COPIES;
        if (want < PX_RPC_RESERVE_DEFAULT)
            want = PX_RPC_RESERVE_DEFAULT;
    } else if (!bidi) {
        want = 2 * atomic_load_explicit(&srv->req_avg[c->midx],
                                        memory_order_relaxed);
        want = want < PX_RPC_RESERVE_DEFAULT ? PX_RPC_RESERVE_DEFAULT
               : want > cap                  ? cap
                                             : want;
    }
    if (!bidi && m->reserve_bytes > 0 && seen <= 0) {
        c->wait.peer = px_call_peer(c);
        c->wait.want = want;
        c->wait.worst = PX_RPC_WORST_UNBOUNDED;
        px_call_ref(c); /* the queue's, if it waits */
        ok = px_admit_wait_enter(&srv->waitq, &c->wait, px_mono_ms());
        if (ok == PX_ADMIT_WAIT)
            return ok;
        px_call_unref(c);
        c->conn = c->wait.conn;
        c->unknown_held = c->wait.held;
        c->unknown_guessed = c->wait.guessed;
    } else {
        ok = px_admit_enter(&srv->admit, px_call_peer(c), want, bidi, &c->conn)
                 ? PX_ADMIT_OK
                 : PX_ADMIT_REFUSED;
    }
    if (ok == PX_ADMIT_REFUSED) {
        px_rpc_stats_t st;
        if (seen <= 0 && m->reserve_bytes > 0 && !bidi)
            px_admit_note_refused(&srv->admit, px_call_peer(c), c->midx);
        px_admit_stats(&srv->admit, &st);
        GT_LOG(DEBUG, "rpc", "%s from %s refused at arrival (overload): "
               "wants %lld, %lld in flight", c->path, px_call_peer(c),
               (long long)want, (long long)st.inflight_bytes);
        return ok;
    }
    c->charged = want;
    return ok;
}

/* ------------------------------------------------- waiting for admission
 *
 * A request of unknown size that would fit but finds the one slot of
 * reads on a guess taken waits in srv->waitq (px_rpc_admit_wait.c), with
 * no receive posted: the transport buffers at most its stream window
 * (64 KiB) for it.  The queue is bounded (at most half the bound's worth
 * of windows) and a call waits at most PX_RPC_ADMIT_WAIT_MS.  Whatever
 * releases admission bytes or the slot serves the queue's head
 * (px_server_admit_waiters); the workers also do, at least once a second,
 * to expire old waiters. */
#define PX_RPC_ADMIT_WAIT_MS 2000
#define PX_RPC_WAIT_WINDOW_BYTES (64 * 1024)

#define PX_CALL_OF_WAITER(w) \
    ((px_call_t *)(void *)((char *)(w) - offsetof(px_call_t, wait)))

void px_server_admit_waiters(px_rpc_server_t *srv, bool expire)
{
    px_admit_waiter_t *w;
    px_admit_verdict_t v;

    while ((w = px_admit_wait_next(&srv->waitq, expire,
                                   expire ? px_mono_ms() : 0, &v)) != NULL) {
        px_call_t *c = PX_CALL_OF_WAITER(w);

        if (v == PX_ADMIT_OK) {
            c->conn = w->conn;
            c->unknown_held = w->held;
            c->unknown_guessed = w->guessed;
            c->charged = w->want;
            GT_LOG(TRACE, "rpc", "call %s from %s admitted after %lld ms",
                   c->path, px_call_peer(c),
                   (long long)(px_mono_ms() - w->since_ms));
            px_call_start_recv(c);
        } else {
            px_admit_note_refused(&srv->admit, px_call_peer(c), c->midx);
            GT_LOG(DEBUG, "rpc", "%s from %s refused after waiting for "
                   "admission", c->path, px_call_peer(c));
            px_call_reject(c, PX_REJECT_OVERLOAD);
        }
        px_call_unref(c); /* the queue's reference */
    }
}

/* Folds a request's size into its method's average (weight 1/4). */
static void px_call_note_size(px_call_t *c, int64_t len)
{
    _Atomic int64_t *avg = &c->srv->req_avg[c->midx];
    int64_t a = atomic_load_explicit(avg, memory_order_relaxed);

    atomic_store_explicit(avg, a + (len - a) / 4, memory_order_relaxed);
}

/* A new call arrived: capture it, post the CLOSE and RECV batches, or
 * answer UNIMPLEMENTED when no method matches. */
static void px_call_on_request(px_call_t *c, bool ok)
{
    px_rpc_server_t *srv = c->srv;
    grpc_op op;
    size_t md_bytes;
    px_admit_verdict_t v;

    if (!ok) { /* server shutting down: the request was withdrawn */
        px_call_unref(c);
        return;
    }
    px_server_request(srv);
    if (px_call_capture(c) != GT_OK) {
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                     "out of memory", NULL);
        px_call_unref(c);
        return;
    }
    c->method = px_method_table_find(srv->methods, c->path, strlen(c->path));
    c->t_start_us = px_mono_us();

    pthread_mutex_lock(&srv->mu);
    c->live_next = srv->live;
    if (srv->live != NULL)
        srv->live->live_prev = c;
    srv->live = c;
    srv->n_live++;
    pthread_mutex_unlock(&srv->mu);

    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->close_cancelled;
    px_call_ref(c);
    GT_TSAN_RELEASE(&c->t_close);
    if (grpc_call_start_batch(c->call, &op, 1, &c->t_close, NULL) !=
        GRPC_CALL_OK) {
        px_server_live_remove(srv, c);
        px_call_unref(c); /* the CLOSE ref */
        px_call_unref(c); /* the request ref */
        return;
    }
    md_bytes = px_call_metadata_bytes(c);
    /* Copied by px_call_capture: the core's array of it (~1 KB with an
     * SDK's headers) is not kept for the call's life (a parked long poll
     * holds its call for up to its whole poll). */
    grpc_metadata_array_destroy(&c->md_in);
    grpc_metadata_array_init(&c->md_in);
    if (md_bytes > px_server_header_limit(srv)) {
        char msg[200];
        snprintf(msg, sizeof(msg),
                 "request metadata of %zu bytes exceeds the limit of %zu "
                 "bytes", md_bytes, px_server_header_limit(srv));
        GT_LOG(DEBUG, "rpc", "%s (%s from %s)", msg, c->path,
               px_call_peer(c));
        px_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, msg);
    } else if (c->method == NULL) {
        char msg[300];
        snprintf(msg, sizeof(msg), "unknown method %.250s", c->path);
        GT_LOG(DEBUG, "rpc", "%s from %s", msg, px_call_peer(c));
        px_call_finish(c, GRPC_STATUS_UNIMPLEMENTED, msg);
    } else if ((v = px_call_admit(c)) == PX_ADMIT_REFUSED) {
        px_call_reject(c, PX_REJECT_OVERLOAD);
    } else if (v == PX_ADMIT_WAIT) {
        GT_LOG(TRACE, "rpc", "call %s from %s waits for admission", c->path,
               px_call_peer(c));
        /* The slot may have been freed between the verdict and the
         * queueing, with nobody left to look. */
        px_server_admit_waiters(srv, false);
    } else {
        GT_LOG(TRACE, "rpc", "call %s from %s", c->path, px_call_peer(c));
        px_call_start_recv(c);
    }
    px_call_unref(c); /* the request ref */
}

/* ---------------------------------------------------------------- server */

static void px_server_request(px_rpc_server_t *srv)
{
    px_call_t *c;
    grpc_completion_queue *cq;
    bool stopping;

    pthread_mutex_lock(&srv->mu);
    stopping = srv->stopping;
    pthread_mutex_unlock(&srv->mu);
    if (stopping)
        return;
    c = px_call_new(srv);
    if (c == NULL) {
        GT_LOG(ERROR, "rpc", "out of memory accepting a call");
        return;
    }
    /* The call's batches all complete on the queue it is requested on. */
    cq = srv->cqs[atomic_fetch_add_explicit(&srv->next_cq, 1,
                                            memory_order_relaxed) %
                  (unsigned)srv->n_cqs];
    GT_TSAN_RELEASE(&c->t_request);
    if (grpc_server_request_call(srv->server, &c->call, &c->details,
                                 &c->md_in, cq, cq,
                                 &c->t_request) != GRPC_CALL_OK)
        px_call_unref(c);
}

typedef struct px_worker_arg {
    px_rpc_server_t *srv;
    grpc_completion_queue *cq;
} px_worker_arg_t;

static void *px_worker_main(void *arg)
{
    px_rpc_server_t *srv = ((px_worker_arg_t *)arg)->srv;
    grpc_completion_queue *cq = ((px_worker_arg_t *)arg)->cq;

    free(arg);
    pthread_setname_np(pthread_self(), "px-grpc");
    for (;;) {
        /* Wake at least once a second for a due trim. */
        grpc_event ev = grpc_completion_queue_next(
            cq, gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                  gpr_time_from_millis(1000, GPR_TIMESPAN)),
            NULL);
        int64_t due = atomic_load_explicit(&srv->trim_due_ms,
                                           memory_order_relaxed);
        px_tag_t *t;

        /* A quiet second after activity also trims: memory the core freed
         * for calls the runtime never counted (e.g. messages over the
         * receive limit, refused by the core once read). */
        if (due != 0 && px_mono_ms() >= due &&
            atomic_compare_exchange_strong(&srv->trim_due_ms, &due, 0))
            malloc_trim(0);
        else if (ev.type == GRPC_QUEUE_TIMEOUT &&
                 atomic_exchange(&srv->active_since_trim, false))
            malloc_trim(0);
        if (px_admit_wait_count(&srv->waitq) > 0)
            px_server_admit_waiters(srv, true); /* expires old waiters */
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        t = ev.tag;
        GT_TSAN_ACQUIRE(t);
        switch (t->kind) {
        case PX_TAG_REQUEST:
            px_call_on_request(t->owner, ev.success);
            break;
        case PX_TAG_RECV:
            px_call_on_recv(t->owner, ev.success);
            break;
        case PX_TAG_SEND:
            px_call_on_send(t->owner, ev.success);
            break;
        case PX_TAG_CLOSE:
            px_call_on_close(t->owner);
            break;
        case PX_TAG_DEFER:
            px_call_on_defer((px_defer_t *)t);
            break;
        case PX_TAG_SHUTDOWN:
            pthread_mutex_lock(&srv->mu);
            srv->shutdown_done = true;
            pthread_cond_broadcast(&srv->cv);
            pthread_mutex_unlock(&srv->mu);
            break;
        }
        if (srv->opts.after_event != NULL)
            srv->opts.after_event(srv->opts.after_event_ctx);
    }
    return NULL;
}

/* Frees what px_rpc_server_start allocated (the core's parts are gone). */
static void px_server_free(px_rpc_server_t *srv)
{
    free(srv->workers);
    free(srv->cqs);
    pthread_mutex_destroy(&srv->mu);
    px_admit_wait_destroy(&srv->waitq);
    pthread_cond_destroy(&srv->cv);
    px_admit_destroy(&srv->admit);
    free(srv->req_avg);
    px_tls_free(srv->tls);
    free(srv);
}

/* Binds the address once ourselves to turn "address in use" into a clear
 * message; the core's own failure text is generic. */
static gt_err_t px_listen_probe(const char *listen, char *err, size_t errlen)
{
    const char *why;
    struct addrinfo hints, *res = NULL;
    gt_err_t rc = GT_OK;
    gt_hostport_t hp;
    char port[8];
    size_t len = strlen(listen);

    /* Port 0: the core picks a free port (gt_bench_empty); nothing to
     * probe, and HOST:PORT parsing refuses port 0. */
    if (len >= 2 && strcmp(listen + len - 2, ":0") == 0)
        return GT_OK;
    if (gt_hostport_parse(listen, 0, &hp, &why) != GT_OK) {
        snprintf(err, errlen, "listen address '%s' is not HOST:PORT (%s)",
                 listen, why);
        return GT_EINVAL;
    }
    snprintf(port, sizeof(port), "%u", (unsigned)hp.port);
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    if (getaddrinfo(hp.host, port, &hints, &res) != 0 || res == NULL) {
        snprintf(err, errlen, "cannot resolve listen address '%s'", listen);
        return GT_EINVAL;
    }
    int fd = socket(res->ai_family, SOCK_STREAM, 0);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, res->ai_addr, res->ai_addrlen) != 0) {
            snprintf(err, errlen, "cannot listen on %s: %s%s", listen,
                     strerror(errno),
                     errno == EADDRINUSE
                         ? " (is another gantry or program using this port?)"
                         : "");
            rc = errno == EADDRINUSE ? GT_EBUSY : GT_EIO;
        }
        close(fd);
    }
    freeaddrinfo(res);
    return rc;
}

gt_err_t px_rpc_server_start(const px_rpc_options_t *opts,
                             const px_method_table_t *methods,
                             px_rpc_server_t **out, char *err, size_t errlen)
{
    px_rpc_server_t *srv = NULL;
    grpc_server_credentials *creds = NULL;
    gt_err_t rc;
    grpc_arg args[11];
    grpc_resource_quota *quota = NULL;
    grpc_channel_args chargs;

    rc = px_listen_probe(opts->listen, err, errlen);
    if (rc != GT_OK)
        return rc;
    srv = calloc(1, sizeof(*srv));
    if (srv == NULL ||
        (srv->req_avg = calloc(methods->count + 1, sizeof(*srv->req_avg))) ==
            NULL) {
        free(srv);
        return GT_ENOMEM;
    }
    srv->opts = *opts;
    srv->opts.tls_files = NULL; /* borrowed for the start only */
    if (opts->tls_mode != PX_TLS_DISABLED) {
        rc = px_tls_new(opts->tls_mode, opts->tls_files, &srv->tls, err, errlen);
        if (rc != GT_OK) {
            free(srv->req_avg);
            free(srv);
            return rc;
        }
    }
    {
        const char *env = getenv("GANTRY_TEST_CALL_END_DELAY_MS");
        if (env != NULL && atoi(env) > 0 && atoi(env) <= 10000) {
            srv->test_end_delay_ms = atoi(env);
            GT_LOG(WARN, "rpc", "test hook GANTRY_TEST_CALL_END_DELAY_MS=%d "
                   "is set", srv->test_end_delay_ms);
        }
        srv->admit_wait_ms = PX_RPC_ADMIT_WAIT_MS;
        env = getenv("GANTRY_TEST_ADMIT_WAIT_MS");
        if (env != NULL && atoi(env) > 0) {
            srv->admit_wait_ms = atoi(env);
            GT_LOG(WARN, "rpc", "test hook GANTRY_TEST_ADMIT_WAIT_MS=%lld is "
                   "set", (long long)srv->admit_wait_ms);
        }
    }
    srv->methods = methods;
    px_admit_init(&srv->admit, opts->max_inflight_bytes,
                  opts->max_conn_inflight_bytes);
    {
        const char *env = getenv("GANTRY_TEST_UNREAD_HOLD_MS");
        if (env != NULL && atoi(env) > 0) {
            srv->admit.unread_hold_ms = srv->admit.unread_hold_max_ms =
                atoi(env);
            GT_LOG(WARN, "rpc", "test hook GANTRY_TEST_UNREAD_HOLD_MS=%d is "
                   "set", atoi(env));
        }
    }
    {
        /* Waiting calls each let the transport buffer up to their
         * window: together at most half the bound. */
        size_t n_wait_max =
            opts->max_inflight_bytes > 0
                ? (size_t)(opts->max_inflight_bytes / 2 /
                           PX_RPC_WAIT_WINDOW_BYTES)
                : 0;
        if (opts->max_inflight_bytes > 0 && n_wait_max < 16)
            n_wait_max = 16;
        px_admit_wait_init(&srv->waitq, &srv->admit, n_wait_max,
                           srv->admit_wait_ms);
    }
    pthread_mutex_init(&srv->mu, NULL);
    pthread_cond_init(&srv->cv, NULL);
    srv->t_shutdown = (px_tag_t){PX_TAG_SHUTDOWN, srv};

    grpc_init();
    /* SO_REUSEPORT off: a second instance must fail, not share the port.
     * Keepalive: the SDKs ping idle connections; never answer them with
     * too_many_pings. */
    args[0] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_ALLOW_REUSEPORT,
                         {.integer = 0}};
    args[1] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                         {.integer = (int)opts->max_receive_bytes}};
    args[2] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS,
                         {.integer = 1}};
    args[3] = (grpc_arg){GRPC_ARG_INTEGER,
                         GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                         {.integer = 1000}};
    args[4] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_HTTP2_MAX_PING_STRIKES,
                         {.integer = 0}};
    args[5] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
                         {.integer = -1}};
    /* Admission control relies on flow control: a stream whose message
     * has not been asked for (no receive posted: not admitted yet) may
     * only send the initial window.  BDP probing would grow that window
     * to megabytes per stream, so that hundreds of waiting streams could
     * hold hundreds of megabytes before any is admitted. */
    args[6] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_HTTP2_BDP_PROBE,
                         {.integer = 0}};
    args[7] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES,
                         {.integer = 64 * 1024}};
    /* Request metadata: when one call passes the core's limit (default
     * 8 KiB), grpc 1.51's HPACK parser fails the whole connection, every
     * call in flight on it.  So the core gets a much larger limit
     * (PX_RPC_HEADER_HARD_BYTES) and the real one (max_header_bytes) is
     * checked per call in px_server_on_call: that call alone is refused. */
    args[8] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_MAX_METADATA_SIZE,
                         {.integer = PX_RPC_HEADER_HARD_BYTES}};
    /* No deadline timer per call: a client whose deadline passes cancels
     * the call itself (RST_STREAM, seen as a cancellation), and handlers
     * that wait bound their wait by the deadline (px_call_deadline_left_ms).
     * The core's timers cost more per timer the more there are (the Debian
     * build keeps every pending timer in a 1009-bucket debug hash and walks
     * its bucket on each add and cancel), and each parked long poll held
     * one for its whole wait. */
    args[9] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_ENABLE_DEADLINE_CHECKS,
                         {.integer = 0}};
    chargs.num_args = sizeof(args) / sizeof(args[0]) - 1;
    /* The core's own buffers get a quota too, as a backstop for what
     * admission cannot see: messages are counted once read, and one
     * whose receive is posted is read whole (the receive limit is checked
     * after that).  Under pressure the core cancels streams (status
     * RESOURCE_EXHAUSTED) instead of growing without bound. */
    if (opts->max_inflight_bytes > 0) {
        quota = grpc_resource_quota_create("gantry-rpc");
        grpc_resource_quota_resize(
            quota, (size_t)opts->max_inflight_bytes + PX_RPC_QUOTA_SLACK);
        args[10].type = GRPC_ARG_POINTER;
        args[10].key = GRPC_ARG_RESOURCE_QUOTA;
        args[10].value.pointer.p = quota;
        args[10].value.pointer.vtable = grpc_resource_quota_arg_vtable();
        chargs.num_args++;
    }
    chargs.args = args;
    srv->server = grpc_server_create(&chargs, NULL);
    if (quota != NULL)
        grpc_resource_quota_unref(quota); /* the server holds its own ref */
    srv->n_workers = opts->threads;
    if (srv->n_workers <= 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        srv->n_workers = cores > 2 ? (int)cores : 2;
    }
    srv->n_cqs = srv->n_workers >= 2 ? srv->n_workers / 2 : 1;
    srv->cqs = calloc((size_t)srv->n_cqs, sizeof(*srv->cqs));
    srv->workers = calloc((size_t)srv->n_workers, sizeof(pthread_t));
    if (srv->cqs == NULL || srv->workers == NULL) {
        grpc_server_destroy(srv->server);
        grpc_shutdown();
        px_server_free(srv);
        return GT_ENOMEM;
    }
    for (int i = 0; i < srv->n_cqs; i++) {
        srv->cqs[i] = grpc_completion_queue_create_for_next(NULL);
        grpc_server_register_completion_queue(srv->server, srv->cqs[i], NULL);
    }
    if (opts->tls_mode == PX_TLS_DISABLED) {
        creds = grpc_insecure_server_credentials_create();
        srv->port = grpc_server_add_http2_port(srv->server, opts->listen, creds);
        snprintf(err, errlen, "cannot listen on %s (gRPC)", opts->listen);
    } else if (opts->tls_mode == PX_TLS_ENFORCING) {
        creds = px_tls_creds(srv->tls);
        srv->port = creds != NULL
                        ? grpc_server_add_http2_port(srv->server, opts->listen, creds)
                        : 0;
        snprintf(err, errlen, "cannot listen on %s (gRPC with TLS)", opts->listen);
    } else {
        /* Permissive: the core's TLS listener on loopback, behind the
         * front on the public port (px_rpc_tls.h). */
        int tls_port;
        creds = px_tls_creds(srv->tls);
        tls_port = creds != NULL
                       ? grpc_server_add_http2_port(srv->server, "127.0.0.1:0", creds)
                       : 0;
        snprintf(err, errlen, "cannot listen on 127.0.0.1 (gRPC with TLS)");
        if (tls_port != 0 &&
            px_tls_front_start(srv->tls, srv->server, opts->listen, tls_port, &srv->port,
                               err, errlen) != GT_OK)
            srv->port = 0;
    }
    if (creds != NULL)
        grpc_server_credentials_release(creds);
    if (srv->port == 0) {
        grpc_server_destroy(srv->server);
        for (int i = 0; i < srv->n_cqs; i++) {
            grpc_completion_queue_shutdown(srv->cqs[i]);
            while (grpc_completion_queue_next(
                       srv->cqs[i], gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
                       .type != GRPC_QUEUE_SHUTDOWN)
                ;
            grpc_completion_queue_destroy(srv->cqs[i]);
        }
        px_tls_front_close(srv->tls);
        grpc_shutdown();
        px_server_free(srv);
        return GT_EBUSY;
    }
    err[0] = '\0';
    grpc_server_start(srv->server);
    if (opts->tls_mode == PX_TLS_PERMISSIVE &&
        px_tls_front_run(srv->tls, err, errlen) != GT_OK) {
        /* Not expected (a thread could not start): the process gives up. */
        GT_LOG(ERROR, "rpc", "%s", err);
        abort();
    }

    for (int i = 0; i < srv->n_workers; i++) {
        px_worker_arg_t *wa = malloc(sizeof(*wa));
        if (wa == NULL) {
            GT_LOG(ERROR, "rpc", "out of memory starting the workers");
            abort();
        }
        wa->srv = srv;
        wa->cq = srv->cqs[i % srv->n_cqs];
        pthread_create(&srv->workers[i], NULL, px_worker_main, wa);
    }
    for (int i = 0; i < PX_RPC_PENDING_REQUESTS; i++)
        px_server_request(srv);
    *out = srv;
    return GT_OK;
}

int px_rpc_server_port(const px_rpc_server_t *srv) { return srv->port; }

gt_err_t px_rpc_server_tls_reload(px_rpc_server_t *srv, char *err, size_t errlen)
{
    return srv->tls != NULL ? px_tls_reload(srv->tls, err, errlen) : GT_OK;
}

void px_rpc_server_stats(px_rpc_server_t *srv, px_rpc_stats_t *out)
{
    px_admit_stats(&srv->admit, out);
    out->admission_waiting = px_admit_wait_count(&srv->waitq);
}

/* Interrupts every live call with SHUTDOWN, outside the server lock. */
static void px_server_interrupt_all(px_rpc_server_t *srv)
{
    px_call_t **snap = NULL;
    size_t n = 0;

    pthread_mutex_lock(&srv->mu);
    if (srv->n_live > 0)
        snap = calloc(srv->n_live, sizeof(*snap));
    for (px_call_t *c = srv->live; c != NULL && snap != NULL; c = c->live_next) {
        px_call_ref(c);
        snap[n++] = c;
    }
    pthread_mutex_unlock(&srv->mu);
    for (size_t i = 0; i < n; i++) {
        if (snap[i]->method != NULL && snap[i]->method->on_interrupt != NULL)
            snap[i]->method->on_interrupt(snap[i], PX_INTERRUPT_SHUTDOWN);
        px_call_unref(snap[i]);
    }
    free(snap);
}

static bool px_server_wait_shutdown(px_rpc_server_t *srv, int ms)
{
    struct timespec ts;
    bool done;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&srv->mu);
    while (!srv->shutdown_done &&
           pthread_cond_timedwait(&srv->cv, &srv->mu, &ts) == 0)
        ;
    done = srv->shutdown_done;
    pthread_mutex_unlock(&srv->mu);
    return done;
}

gt_err_t px_rpc_server_shutdown(px_rpc_server_t *srv)
{
    gt_err_t rc = GT_OK;

    pthread_mutex_lock(&srv->mu);
    srv->stopping = true;
    pthread_mutex_unlock(&srv->mu);
    px_tls_front_close(srv->tls); /* no socket is handed over any more */
    grpc_server_shutdown_and_notify(srv->server, srv->cqs[0],
                                    &srv->t_shutdown);
    px_server_interrupt_all(srv);
    if (!px_server_wait_shutdown(srv, srv->opts.shutdown_timeout_ms)) {
        GT_LOG(WARN, "rpc", "calls still running after %d ms: cancelling them",
               srv->opts.shutdown_timeout_ms);
        grpc_server_cancel_all_calls(srv->server);
        rc = GT_ETIMEDOUT;
        px_server_wait_shutdown(srv, 2000);
    }
    return rc;
}

void px_rpc_server_destroy(px_rpc_server_t *srv)
{
    pthread_mutex_lock(&srv->mu);
    while (srv->n_big > 0)
        pthread_cond_wait(&srv->cv, &srv->mu);
    pthread_mutex_unlock(&srv->mu);
    grpc_server_destroy(srv->server);
    for (int i = 0; i < srv->n_cqs; i++)
        grpc_completion_queue_shutdown(srv->cqs[i]);
    for (int i = 0; i < srv->n_workers; i++)
        pthread_join(srv->workers[i], NULL);
    for (int i = 0; i < srv->n_cqs; i++)
        grpc_completion_queue_destroy(srv->cqs[i]);
    grpc_shutdown();
    px_server_free(srv);
}

gt_err_t px_rpc_server_stop(px_rpc_server_t *srv)
{
    gt_err_t rc = px_rpc_server_shutdown(srv);
    px_rpc_server_destroy(srv);
    return rc;
}
