/* The client side of px_rpc (px_rpc_client.h): channels, calls, the
 * completion-queue threads, the executor hand-off and a timer thread.
 *
 * Each call is bound to one completion queue, whose one thread takes all
 * of its completions, so they arrive in turn; the streaming state that
 * executor threads touch too (the next receive, the close) is guarded by
 * the call's mutex.  References: one per batch in flight, one while the
 * call is open (until its final callback has run), one per task handed
 * to the executor, one for the holder of px_ccall_t *out.  The last one
 * releases the core's call and frees it. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "gt_log.h"
#include "gt_tsan.h"
#include "px_rpc_client.h"

typedef enum px_ctag_kind {
    PX_CT_UNARY = 1, /* the one batch of a unary call */
    PX_CT_START,     /* a stream's send batch */
    PX_CT_RECV,      /* a stream's message receive */
    PX_CT_STATUS,    /* a stream's status */
    PX_CT_SEND,      /* a bidi stream's later message */
} px_ctag_kind_t;

typedef struct px_ctag {
    px_ctag_kind_t kind;
    px_ccall_t *call;
} px_ctag_t;

typedef struct px_cq {
    px_rpc_client_t *c;
    grpc_completion_queue *cq;
    pthread_t thread;
    bool started;
} px_cq_t;

typedef struct px_timer {
    struct px_timer *next;
    struct timespec due;
    px_rpc_task_fn fn;
    void *arg;
} px_timer_t;

struct px_rpc_client {
    px_rpc_exec_t exec;
    bool has_exec;
    void (*after_event)(void *ctx);
    void *after_event_ctx;
    size_t n_endpoints;
    int per_endpoint;
    bool prefer_ready;
    grpc_channel **channels; /* n_endpoints * per_endpoint */
    char **endpoints;
    px_cq_t *cqs;
    int n_cqs;
    atomic_uint next_channel;
    atomic_uint next_cq;

    pthread_mutex_t mu;
    pthread_cond_t cond;      /* open/tasks/timers reached 0; timer list */
    bool stopping;
    px_ccall_t *open_head;    /* open calls (final callback not yet run) */
    size_t open;
    size_t tasks;             /* timer tasks handed out, not yet run */
    px_timer_t *timers;       /* sorted by due */
    pthread_t timer_thread;
    bool timer_started;
};

struct px_ccall {
    px_rpc_client_t *c;
    grpc_call *call;
    bool stream;
    px_unary_cb ucb;
    px_stream_cbs_t scb;
    void *arg;
    px_ctag_t t_main, t_recv, t_status, t_send;
    grpc_metadata_array md_init, md_trail;
    grpc_metadata md_out[PX_CCALL_MD_MAX];
    size_t n_md_out;
    grpc_byte_buffer *send_buf;
    grpc_byte_buffer *recv_buf;
    grpc_status_code status;
    grpc_slice details;
    atomic_int refs;
    px_ccall_t *prev, *next; /* in c->open_head, guarded by c->mu */

    pthread_mutex_t mu;      /* stream state below */
    bool bidi;
    bool sending;            /* a send batch in flight (send_buf) */
    grpc_byte_buffer *send_next; /* bidi: the one message waiting for it */
    bool status_done;
    bool recv_ended;
    bool close_sent;
};

/* A callback on its way to the executor. */
typedef struct px_ctask {
    px_ccall_t *call;
    int what;                /* PX_CT_UNARY, PX_CT_RECV (a message),
                                PX_CT_STATUS (a stream's close) */
    grpc_status_code code;
    char *details;
    grpc_slice data;
    bool has_data;
} px_ctask_t;

static void ccall_unref(px_ccall_t *k);

/* ---- helpers ---------------------------------------------------------- */

bool px_rpc_status_transient(grpc_status_code code)
{
    return code == GRPC_STATUS_UNAVAILABLE || code == GRPC_STATUS_DEADLINE_EXCEEDED;
}

static grpc_slice buffer_slice(grpc_byte_buffer *bb, bool *ok)
{
    grpc_byte_buffer_reader r;
    *ok = false;
    if (!grpc_byte_buffer_reader_init(&r, bb))
        return grpc_empty_slice();
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    *ok = true;
    return s;
}

static void run_task(void *p);

static void dispatch(px_rpc_client_t *c, px_ctask_t *t)
{
    if (c->has_exec && c->exec.post(c->exec.ctx, run_task, t) == GT_OK)
        return;
    run_task(t);
}

/* The final callback has run: the call leaves the open list.  Its open
 * reference goes before the count drops, so that px_rpc_client_free never
 * proceeds while this thread still releases the core's call. */
static void call_close_open(px_ccall_t *k)
{
    px_rpc_client_t *c = k->c;
    pthread_mutex_lock(&c->mu);
    if (k->prev)
        k->prev->next = k->next;
    else
        c->open_head = k->next;
    if (k->next)
        k->next->prev = k->prev;
    k->prev = k->next = NULL;
    pthread_mutex_unlock(&c->mu);
    ccall_unref(k); /* the open reference; k may be gone now */
    pthread_mutex_lock(&c->mu);
    if (--c->open == 0)
        pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
}

static void stream_next_recv(px_ccall_t *k);

static void run_task(void *p)
{
    px_ctask_t *t = p;
    px_ccall_t *k = t->call;
    const uint8_t *data = t->has_data ? GRPC_SLICE_START_PTR(t->data) : NULL;
    size_t len = t->has_data ? GRPC_SLICE_LENGTH(t->data) : 0;

    if (t->what == PX_CT_UNARY) {
        k->ucb(k->arg, t->code, t->details ? t->details : "", data, len);
    } else if (t->what == PX_CT_RECV) {
        if (k->scb.on_message)
            k->scb.on_message(k->arg, data, len);
    } else {
        k->scb.on_close(k->arg, t->code, t->details ? t->details : "");
    }
    if (t->has_data)
        grpc_slice_unref(t->data);
    gpr_free(t->details);
    int what = t->what;
    free(t);
    if (what == PX_CT_RECV) {
        stream_next_recv(k);
        ccall_unref(k);
    } else {
        ccall_unref(k); /* the task's */
        call_close_open(k);
    }
}

/* ---- calls ------------------------------------------------------------ */

static void ccall_unref(px_ccall_t *k)
{
    if (atomic_fetch_sub_explicit(&k->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (k->call)
        grpc_call_unref(k->call);
    grpc_metadata_array_destroy(&k->md_init);
    grpc_metadata_array_destroy(&k->md_trail);
    if (k->send_buf)
        grpc_byte_buffer_destroy(k->send_buf);
    if (k->send_next)
        grpc_byte_buffer_destroy(k->send_next);
    if (k->recv_buf)
        grpc_byte_buffer_destroy(k->recv_buf);
    grpc_slice_unref(k->details);
    for (size_t i = 0; i < k->n_md_out; i++) {
        grpc_slice_unref(k->md_out[i].key);
        grpc_slice_unref(k->md_out[i].value);
    }
    pthread_mutex_destroy(&k->mu);
    free(k);
}

void px_ccall_unref(px_ccall_t *call)
{
    if (call)
        ccall_unref(call);
}

void px_ccall_cancel(px_ccall_t *call)
{
    if (!call)
        return;
    /* The core's call lives until the last reference, which the caller
     * holds here. */
    grpc_call_cancel(call->call, NULL);
}

/* Hands the final status (unary: with the response) to the executor. */
static void finish_task(px_ccall_t *k, int what, const grpc_slice *data)
{
    px_ctask_t *t = calloc(1, sizeof(*t));
    if (!t) {
        /* A completion that cannot be carried would hang its caller. */
        GT_LOG(ERROR, "rpc", "client: out of memory for a completion");
        abort();
    }
    t->call = k;
    t->what = what;
    t->code = k->status;
    if (what != PX_CT_RECV && k->status != GRPC_STATUS_OK)
        t->details = grpc_slice_to_c_string(k->details);
    if (data) {
        t->data = *data;
        t->has_data = true;
    }
    atomic_fetch_add(&k->refs, 1);
    dispatch(k->c, t);
}

static void stream_maybe_close(px_ccall_t *k)
{
    bool go = false;
    pthread_mutex_lock(&k->mu);
    if (k->status_done && k->recv_ended && !k->close_sent)
        go = k->close_sent = true;
    pthread_mutex_unlock(&k->mu);
    if (go)
        finish_task(k, PX_CT_STATUS, NULL);
}

static void stream_next_recv(px_ccall_t *k)
{
    grpc_op op = {.op = GRPC_OP_RECV_MESSAGE};
    op.data.recv_message.recv_message = &k->recv_buf;
    atomic_fetch_add(&k->refs, 1);
    GT_TSAN_RELEASE(&k->t_recv);
    if (grpc_call_start_batch(k->call, &op, 1, &k->t_recv, NULL) != GRPC_CALL_OK) {
        atomic_fetch_sub(&k->refs, 1);
        pthread_mutex_lock(&k->mu);
        k->recv_ended = true;
        pthread_mutex_unlock(&k->mu);
        stream_maybe_close(k);
    }
}

/* Sends k->send_buf (sending set by the caller), with a batch reference. */
static void bidi_send_start(px_ccall_t *k)
{
    grpc_op op = {.op = GRPC_OP_SEND_MESSAGE};
    op.data.send_message.send_message = k->send_buf;
    atomic_fetch_add(&k->refs, 1);
    GT_TSAN_RELEASE(&k->t_send);
    if (grpc_call_start_batch(k->call, &op, 1, &k->t_send, NULL) != GRPC_CALL_OK) {
        atomic_fetch_sub(&k->refs, 1);
        pthread_mutex_lock(&k->mu);
        k->sending = false;
        pthread_mutex_unlock(&k->mu);
    }
}

/* A bidi stream's send batch completed: its message is released and the
 * one waiting (if any) goes next.  A failed send (the call is ending)
 * drops what waits. */
static void bidi_sent(px_ccall_t *k, bool ok)
{
    pthread_mutex_lock(&k->mu);
    if (k->send_buf)
        grpc_byte_buffer_destroy(k->send_buf);
    k->send_buf = ok ? k->send_next : NULL;
    if (!ok && k->send_next)
        grpc_byte_buffer_destroy(k->send_next);
    k->send_next = NULL;
    k->sending = k->send_buf != NULL;
    bool go = k->sending;
    pthread_mutex_unlock(&k->mu);
    if (go)
        bidi_send_start(k);
}

static void on_event(px_ctag_t *tag, bool ok)
{
    px_ccall_t *k = tag->call;
    switch (tag->kind) {
    case PX_CT_UNARY: {
        grpc_slice s = grpc_empty_slice();
        bool have = false;
        if (k->status == GRPC_STATUS_OK && k->recv_buf) {
            s = buffer_slice(k->recv_buf, &have);
            if (!have) {
                k->status = GRPC_STATUS_INTERNAL;
                grpc_slice_unref(k->details);
                k->details = grpc_slice_from_static_string("undecodable response");
            }
        } else if (k->status == GRPC_STATUS_OK) {
            have = true; /* OK without a message: an empty response */
        }
        finish_task(k, PX_CT_UNARY, have ? &s : NULL);
        break;
    }
    case PX_CT_START:
    case PX_CT_SEND:
        if (k->bidi)
            bidi_sent(k, ok);
        break;
    case PX_CT_RECV: {
        grpc_byte_buffer *bb = k->recv_buf;
        k->recv_buf = NULL;
        bool have = false;
        grpc_slice s = grpc_empty_slice();
        if (ok && bb)
            s = buffer_slice(bb, &have);
        if (bb)
            grpc_byte_buffer_destroy(bb);
        if (have) {
            finish_task(k, PX_CT_RECV, &s); /* next receive after it ran */
        } else {
            pthread_mutex_lock(&k->mu);
            k->recv_ended = true;
            pthread_mutex_unlock(&k->mu);
            stream_maybe_close(k);
        }
        break;
    }
    case PX_CT_STATUS:
        pthread_mutex_lock(&k->mu);
        k->status_done = true;
        pthread_mutex_unlock(&k->mu);
        stream_maybe_close(k);
        break;
    }
    ccall_unref(k); /* the batch's reference */
}

static void *cq_main(void *p)
{
    px_cq_t *q = p;
    px_rpc_client_t *c = q->c;
    pthread_setname_np(pthread_self(), "px-client");
    if (c->after_event)
        c->after_event(c->after_event_ctx);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(q->cq, gpr_inf_future(GPR_CLOCK_REALTIME),
                                                   NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type == GRPC_OP_COMPLETE) {
            GT_TSAN_ACQUIRE(ev.tag);
            on_event(ev.tag, ev.success != 0);
            if (c->after_event)
                c->after_event(c->after_event_ctx);
        }
    }
    return NULL;
}

/* Channel `ch` of endpoint `e`, or, when it is not connected and another
 * channel of that endpoint is, that one: after the node restarts, the
 * channels reconnect one by one (each with its own backoff), and a call
 * without wait-for-ready on one still failing ends at once with
 * UNAVAILABLE (an ack answered "try again" right after a send went
 * through the other channel, integration_store_remote under ASan). */
static grpc_channel *endpoint_channel(px_rpc_client_t *c, size_t e, size_t ch)
{
    grpc_channel *x = c->channels[e * (size_t)c->per_endpoint + ch];

    if (c->per_endpoint < 2 ||
        grpc_channel_check_connectivity_state(x, 1) == GRPC_CHANNEL_READY)
        return x;
    for (int i = 1; i < c->per_endpoint; i++) {
        grpc_channel *y = c->channels[e * (size_t)c->per_endpoint +
                                      (ch + (size_t)i) % (size_t)c->per_endpoint];
        if (grpc_channel_check_connectivity_state(y, 0) == GRPC_CHANNEL_READY)
            return y;
    }
    return x;
}

static grpc_channel *pick_channel(px_rpc_client_t *c, int endpoint)
{
    unsigned n = atomic_fetch_add(&c->next_channel, 1);
    if (endpoint >= 0 && (size_t)endpoint < c->n_endpoints)
        return endpoint_channel(c, (size_t)endpoint,
                                n % (unsigned)c->per_endpoint);
    /* Endpoints in turn, then their channels. */
    size_t e = n % c->n_endpoints;
    size_t ch = (n / c->n_endpoints) % (unsigned)c->per_endpoint;
    grpc_channel *first = c->channels[e * (size_t)c->per_endpoint + ch];
    if (!c->prefer_ready || c->n_endpoints < 2)
        return endpoint_channel(c, e, ch);
    /* From there on, the first connected channel; else the first not
     * failing (idle ones are asked to connect). */
    grpc_channel *maybe = NULL;
    for (size_t i = 0; i < c->n_endpoints; i++) {
        grpc_channel *x =
            c->channels[((e + i) % c->n_endpoints) * (size_t)c->per_endpoint + ch];
        grpc_connectivity_state st = grpc_channel_check_connectivity_state(x, 1);
        if (st == GRPC_CHANNEL_READY)
            return x;
        if (!maybe && st != GRPC_CHANNEL_TRANSIENT_FAILURE && st != GRPC_CHANNEL_SHUTDOWN)
            maybe = x;
    }
    return maybe ? maybe : first;
}

static gt_err_t start_call(px_rpc_client_t *c, const char *method,
                           const px_rpc_part_t *parts, size_t n_parts,
                           const px_ccall_opts_t *co, bool stream, bool bidi,
                           px_unary_cb ucb, const px_stream_cbs_t *scb, void *arg,
                           px_ccall_t **out)
{
    static const px_ccall_opts_t defaults = {.endpoint = -1};
    if (!co)
        co = &defaults;
    if (out)
        *out = NULL;
    if (co->n_md > PX_CCALL_MD_MAX || n_parts == 0)
        return GT_EINVAL;
    /* One slice per part: the core writes them as they are (an iovec
     * each), and no allocation is larger than the largest part. */
    grpc_slice one, *sl = n_parts == 1 ? &one : malloc(n_parts * sizeof(*sl));
    if (!sl)
        return GT_ENOMEM;
    for (size_t i = 0; i < n_parts; i++)
        sl[i] = grpc_slice_from_copied_buffer((const char *)parts[i].p, parts[i].len);
    grpc_byte_buffer *send_buf = grpc_raw_byte_buffer_create(sl, n_parts);
    for (size_t i = 0; i < n_parts; i++)
        grpc_slice_unref(sl[i]);
    if (sl != &one)
        free(sl);
    px_ccall_t *k = calloc(1, sizeof(*k));
    if (!k) {
        grpc_byte_buffer_destroy(send_buf);
        return GT_ENOMEM;
    }
    k->c = c;
    k->stream = stream;
    k->ucb = ucb;
    if (scb)
        k->scb = *scb;
    k->arg = arg;
    k->t_main = (px_ctag_t){stream ? PX_CT_START : PX_CT_UNARY, k};
    k->t_recv = (px_ctag_t){PX_CT_RECV, k};
    k->t_status = (px_ctag_t){PX_CT_STATUS, k};
    k->t_send = (px_ctag_t){PX_CT_SEND, k};
    k->bidi = bidi;
    k->sending = bidi; /* the first message, in the start batch */
    k->details = grpc_empty_slice();
    grpc_metadata_array_init(&k->md_init);
    grpc_metadata_array_init(&k->md_trail);
    pthread_mutex_init(&k->mu, NULL);
    for (size_t i = 0; i < co->n_md; i++) {
        k->md_out[i].key = grpc_slice_from_copied_string(co->md[i].key);
        k->md_out[i].value = grpc_slice_from_copied_string(co->md[i].value);
    }
    k->n_md_out = co->n_md;
    k->send_buf = send_buf;

    gpr_timespec deadline = gpr_inf_future(GPR_CLOCK_MONOTONIC);
    if (co->timeout_ms > 0)
        deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                gpr_time_from_millis(co->timeout_ms, GPR_TIMESPAN));
    px_cq_t *q = &c->cqs[atomic_fetch_add(&c->next_cq, 1) % (unsigned)c->n_cqs];
    grpc_slice mslice = grpc_slice_from_copied_string(method);

    pthread_mutex_lock(&c->mu);
    if (c->stopping) {
        pthread_mutex_unlock(&c->mu);
        grpc_slice_unref(mslice);
        atomic_store(&k->refs, 1);
        ccall_unref(k);
        return GT_ESHUTDOWN;
    }
    k->call = grpc_channel_create_call(pick_channel(c, co->endpoint), NULL,
                                       GRPC_PROPAGATE_DEFAULTS, q->cq, mslice, NULL,
                                       deadline, NULL);
    grpc_slice_unref(mslice);
    if (!k->call) {
        pthread_mutex_unlock(&c->mu);
        atomic_store(&k->refs, 1);
        ccall_unref(k);
        return GT_ENOMEM;
    }
    /* Open: on the list, so that px_rpc_client_free cancels it. */
    k->next = c->open_head;
    if (c->open_head)
        c->open_head->prev = k;
    c->open_head = k;
    c->open++;
    atomic_store(&k->refs, 1 + (out ? 1 : 0));

    uint32_t md_flags = (co->flags & PX_CCALL_WAIT_FOR_READY) ? GRPC_INITIAL_METADATA_WAIT_FOR_READY
                                                             : 0;
    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].data.send_initial_metadata.count = k->n_md_out;
    ops[n].data.send_initial_metadata.metadata = k->n_md_out ? k->md_out : NULL;
    ops[n++].flags = md_flags;
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = k->send_buf;
    if (!bidi)
        ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[n++].data.recv_initial_metadata.recv_initial_metadata = &k->md_init;
    grpc_call_error e;
    GT_TSAN_RELEASE(&k->t_main);
    GT_TSAN_RELEASE(&k->t_recv);
    GT_TSAN_RELEASE(&k->t_status);
    if (!stream) {
        ops[n].op = GRPC_OP_RECV_MESSAGE;
        ops[n++].data.recv_message.recv_message = &k->recv_buf;
        ops[n].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        ops[n].data.recv_status_on_client.trailing_metadata = &k->md_trail;
        ops[n].data.recv_status_on_client.status = &k->status;
        ops[n++].data.recv_status_on_client.status_details = &k->details;
        atomic_fetch_add(&k->refs, 1);
        e = grpc_call_start_batch(k->call, ops, n, &k->t_main, NULL);
    } else {
        atomic_fetch_add(&k->refs, 3);
        e = grpc_call_start_batch(k->call, ops, n, &k->t_main, NULL);
        if (e == GRPC_CALL_OK) {
            grpc_op st = {.op = GRPC_OP_RECV_STATUS_ON_CLIENT};
            st.data.recv_status_on_client.trailing_metadata = &k->md_trail;
            st.data.recv_status_on_client.status = &k->status;
            st.data.recv_status_on_client.status_details = &k->details;
            e = grpc_call_start_batch(k->call, &st, 1, &k->t_status, NULL);
            grpc_op rm = {.op = GRPC_OP_RECV_MESSAGE};
            rm.data.recv_message.recv_message = &k->recv_buf;
            if (e == GRPC_CALL_OK)
                e = grpc_call_start_batch(k->call, &rm, 1, &k->t_recv, NULL);
            if (e != GRPC_CALL_OK) {
                /* Cannot happen with a fresh call; keep it from hanging. */
                GT_LOG(ERROR, "rpc", "client: stream batches refused (%d)", (int)e);
                abort();
            }
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (e != GRPC_CALL_OK) {
        GT_LOG(ERROR, "rpc", "client: call batch refused (%d)", (int)e);
        abort(); /* a fresh call takes its first batch */
    }
    if (out)
        *out = k;
    return GT_OK;
}

gt_err_t px_rpc_unary(px_rpc_client_t *c, const char *method, const uint8_t *req,
                      size_t len, const px_ccall_opts_t *co, px_unary_cb cb, void *arg,
                      px_ccall_t **out)
{
    if (!c || !method || !cb)
        return GT_EINVAL;
    px_rpc_part_t part = {req, len};
    return start_call(c, method, &part, 1, co, false, false, cb, NULL, arg, out);
}

gt_err_t px_rpc_unary_parts(px_rpc_client_t *c, const char *method,
                            const px_rpc_part_t *parts, size_t n_parts,
                            const px_ccall_opts_t *co, px_unary_cb cb, void *arg,
                            px_ccall_t **out)
{
    if (!c || !method || !cb || !parts)
        return GT_EINVAL;
    return start_call(c, method, parts, n_parts, co, false, false, cb, NULL, arg, out);
}

gt_err_t px_rpc_stream(px_rpc_client_t *c, const char *method, const uint8_t *req,
                       size_t len, const px_ccall_opts_t *co, const px_stream_cbs_t *cbs,
                       void *arg, px_ccall_t **out)
{
    if (!c || !method || !cbs || !cbs->on_close)
        return GT_EINVAL;
    px_rpc_part_t part = {req, len};
    return start_call(c, method, &part, 1, co, true, false, NULL, cbs, arg, out);
}

gt_err_t px_rpc_bidi(px_rpc_client_t *c, const char *method, const uint8_t *req,
                     size_t len, const px_ccall_opts_t *co, const px_stream_cbs_t *cbs,
                     void *arg, px_ccall_t **out)
{
    if (!c || !method || !cbs || !cbs->on_close || !out)
        return GT_EINVAL;
    px_rpc_part_t part = {req, len};
    return start_call(c, method, &part, 1, co, true, true, NULL, cbs, arg, out);
}

gt_err_t px_ccall_send(px_ccall_t *k, const uint8_t *msg, size_t len)
{
    if (!k || !k->bidi)
        return GT_EINVAL;
    grpc_slice sl = grpc_slice_from_copied_buffer((const char *)msg, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    pthread_mutex_lock(&k->mu);
    if (k->status_done || k->recv_ended) {
        pthread_mutex_unlock(&k->mu);
        grpc_byte_buffer_destroy(bb);
        return GT_ESHUTDOWN;
    }
    if (k->sending) {
        bool busy = k->send_next != NULL;
        if (!busy)
            k->send_next = bb;
        pthread_mutex_unlock(&k->mu);
        if (busy)
            grpc_byte_buffer_destroy(bb);
        return busy ? GT_EBUSY : GT_OK;
    }
    k->send_buf = bb;
    k->sending = true;
    pthread_mutex_unlock(&k->mu);
    bidi_send_start(k);
    return GT_OK;
}

/* ---- timers ----------------------------------------------------------- */

typedef struct px_ttask {
    px_rpc_client_t *c;
    px_rpc_task_fn fn;
    void *arg;
} px_ttask_t;

static void ttask_run(void *p)
{
    px_ttask_t *t = p;
    px_rpc_client_t *c = t->c;
    t->fn(t->arg);
    free(t);
    pthread_mutex_lock(&c->mu);
    if (--c->tasks == 0)
        pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
}

/* With c->mu held: hands a due timer to the executor (or runs it on this
 * thread, unlocked). */
static void timer_fire(px_rpc_client_t *c, px_timer_t *tm)
{
    px_ttask_t *t = malloc(sizeof(*t));
    c->tasks++;
    pthread_mutex_unlock(&c->mu);
    if (!t) {
        GT_LOG(ERROR, "rpc", "client: out of memory for a timer");
        abort();
    }
    *t = (px_ttask_t){c, tm->fn, tm->arg};
    free(tm);
    if (!c->has_exec || c->exec.post(c->exec.ctx, ttask_run, t) != GT_OK)
        ttask_run(t);
    pthread_mutex_lock(&c->mu);
}

static bool ts_before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

static void *timer_main(void *p)
{
    px_rpc_client_t *c = p;
    pthread_setname_np(pthread_self(), "px-timer");
    pthread_mutex_lock(&c->mu);
    for (;;) {
        if (c->stopping) {
            while (c->timers) {
                px_timer_t *tm = c->timers;
                c->timers = tm->next;
                timer_fire(c, tm);
            }
            break;
        }
        if (!c->timers) {
            pthread_cond_wait(&c->cond, &c->mu);
            continue;
        }
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (!ts_before(&now, &c->timers->due)) {
            px_timer_t *tm = c->timers;
            c->timers = tm->next;
            timer_fire(c, tm);
            continue;
        }
        struct timespec due = c->timers->due;
        pthread_cond_timedwait(&c->cond, &c->mu, &due);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

gt_err_t px_rpc_client_after(px_rpc_client_t *c, int64_t ms, px_rpc_task_fn fn, void *arg)
{
    if (!c || !fn)
        return GT_EINVAL;
    px_timer_t *tm = calloc(1, sizeof(*tm));
    if (!tm)
        return GT_ENOMEM;
    if (ms < 0)
        ms = 0;
    clock_gettime(CLOCK_MONOTONIC, &tm->due);
    tm->due.tv_sec += ms / 1000;
    tm->due.tv_nsec += (ms % 1000) * 1000000L;
    if (tm->due.tv_nsec >= 1000000000L) {
        tm->due.tv_sec++;
        tm->due.tv_nsec -= 1000000000L;
    }
    tm->fn = fn;
    tm->arg = arg;
    pthread_mutex_lock(&c->mu);
    if (c->stopping) {
        pthread_mutex_unlock(&c->mu);
        free(tm);
        return GT_ESHUTDOWN;
    }
    px_timer_t **pp = &c->timers;
    while (*pp && !ts_before(&tm->due, &(*pp)->due))
        pp = &(*pp)->next;
    tm->next = *pp;
    *pp = tm;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
    return GT_OK;
}

/* ---- the client ------------------------------------------------------- */

gt_err_t px_rpc_client_new(const px_rpc_client_opts_t *o, px_rpc_client_t **out)
{
    *out = NULL;
    if (!o || !o->endpoints || o->n_endpoints == 0)
        return GT_EINVAL;
    for (size_t i = 0; i < o->n_endpoints; i++)
        if (!o->endpoints[i] || !o->endpoints[i][0])
            return GT_EINVAL;
    px_rpc_client_t *c = calloc(1, sizeof(*c));
    if (!c)
        return GT_ENOMEM;
    grpc_init();
    c->n_endpoints = o->n_endpoints;
    c->per_endpoint = o->channels_per_endpoint > 0 ? o->channels_per_endpoint : 2;
    c->prefer_ready = o->prefer_ready;
    c->n_cqs = o->threads > 0 ? o->threads : 1;
    if (o->exec && o->exec->post) {
        c->exec = *o->exec;
        c->has_exec = true;
    }
    c->after_event = o->after_event;
    c->after_event_ctx = o->after_event_ctx;
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cond, &ca);
    pthread_condattr_destroy(&ca);

    size_t nch = c->n_endpoints * (size_t)c->per_endpoint;
    c->channels = calloc(nch, sizeof(*c->channels));
    c->endpoints = calloc(c->n_endpoints, sizeof(*c->endpoints));
    c->cqs = calloc((size_t)c->n_cqs, sizeof(*c->cqs));
    if (!c->channels || !c->endpoints || !c->cqs)
        goto nomem;

    int initial = o->backoff_initial_ms > 0 ? o->backoff_initial_ms : 100;
    int maxb = o->backoff_max_ms > 0 ? o->backoff_max_ms : 2000;
    int conn = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 1000;
    int64_t maxr = o->max_receive_bytes > 0 ? o->max_receive_bytes : 64LL << 20;
    if (maxr > INT32_MAX)
        maxr = INT32_MAX;
    grpc_arg args[10];
    size_t na = 0;
    args[na++] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                            .key = GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL,
                            .value.integer = 1};
    args[na++] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                            .key = GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
                            .value.integer = initial};
    args[na++] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                            .key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
                            .value.integer = maxb};
    args[na++] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                            .key = GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
                            .value.integer = conn};
    args[na++] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                            .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                            .value.integer = (int)maxr};
    args[na++] = (grpc_arg){.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_ENABLE_RETRIES,
                            .value.integer = 0};
    if (o->keepalive_ms > 0) {
        args[na++] = (grpc_arg){.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_KEEPALIVE_TIME_MS,
                                .value.integer = o->keepalive_ms};
        args[na++] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                                .key = GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                                .value.integer = o->keepalive_ms};
    }
    grpc_channel_args cargs = {.num_args = na, .args = args};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    for (size_t e = 0; e < c->n_endpoints; e++) {
        if (!(c->endpoints[e] = strdup(o->endpoints[e])))
            goto nomem_creds;
        for (int i = 0; i < c->per_endpoint; i++) {
            grpc_channel *ch = grpc_channel_create(c->endpoints[e], creds, &cargs);
            if (!ch)
                goto nomem_creds;
            c->channels[e * (size_t)c->per_endpoint + (size_t)i] = ch;
            /* Connect now, in the background. */
            grpc_channel_check_connectivity_state(ch, 1);
        }
    }
    grpc_channel_credentials_release(creds);

    for (int i = 0; i < c->n_cqs; i++) {
        c->cqs[i].c = c;
        c->cqs[i].cq = grpc_completion_queue_create_for_next(NULL);
        if (pthread_create(&c->cqs[i].thread, NULL, cq_main, &c->cqs[i]) != 0)
            goto nomem;
        c->cqs[i].started = true;
    }
    if (pthread_create(&c->timer_thread, NULL, timer_main, c) != 0)
        goto nomem;
    c->timer_started = true;
    *out = c;
    return GT_OK;

nomem_creds:
    grpc_channel_credentials_release(creds);
nomem:
    px_rpc_client_free(c);
    return GT_ENOMEM;
}

bool px_rpc_client_ready(px_rpc_client_t *c)
{
    for (size_t e = 0; e < c->n_endpoints; e++) {
        bool any = false;
        for (int i = 0; i < c->per_endpoint; i++) {
            grpc_channel *ch = c->channels[e * (size_t)c->per_endpoint + (size_t)i];
            if (grpc_channel_check_connectivity_state(ch, 1) == GRPC_CHANNEL_READY)
                any = true;
        }
        if (!any)
            return false;
    }
    return true;
}

int px_rpc_client_channel_state(px_rpc_client_t *c, size_t e, int ch,
                                bool reset_backoff)
{
    grpc_channel *x;

    if (e >= c->n_endpoints || ch < 0 || ch >= c->per_endpoint)
        return -1;
    x = c->channels[e * (size_t)c->per_endpoint + (size_t)ch];
    if (reset_backoff)
        grpc_channel_reset_connect_backoff(x);
    return (int)grpc_channel_check_connectivity_state(x, reset_backoff);
}

size_t px_rpc_client_open_calls(px_rpc_client_t *c)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->open;
    pthread_mutex_unlock(&c->mu);
    return n;
}

void px_rpc_client_free(px_rpc_client_t *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->stopping = true;
    pthread_cond_broadcast(&c->cond); /* the timer thread fires what is left */
    for (px_ccall_t *k = c->open_head; k; k = k->next)
        grpc_call_cancel(k->call, NULL);
    pthread_mutex_unlock(&c->mu);
    if (c->timer_started)
        pthread_join(c->timer_thread, NULL);
    pthread_mutex_lock(&c->mu);
    while (c->open > 0 || c->tasks > 0)
        pthread_cond_wait(&c->cond, &c->mu);
    pthread_mutex_unlock(&c->mu);

    size_t nch = c->n_endpoints * (size_t)c->per_endpoint;
    for (size_t i = 0; c->channels && i < nch; i++)
        if (c->channels[i])
            grpc_channel_destroy(c->channels[i]);
    for (int i = 0; c->cqs && i < c->n_cqs; i++) {
        if (!c->cqs[i].cq)
            continue;
        grpc_completion_queue_shutdown(c->cqs[i].cq);
        if (c->cqs[i].started)
            pthread_join(c->cqs[i].thread, NULL);
        else
            while (grpc_completion_queue_next(c->cqs[i].cq,
                                              gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
                       .type != GRPC_QUEUE_SHUTDOWN)
                ;
        grpc_completion_queue_destroy(c->cqs[i].cq);
    }
    for (size_t e = 0; c->endpoints && e < c->n_endpoints; e++)
        free(c->endpoints[e]);
    free(c->endpoints);
    free(c->channels);
    free(c->cqs);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->mu);
    free(c);
    grpc_shutdown();
}
