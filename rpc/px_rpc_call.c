/* A call of the gRPC server runtime: its references and life, the send
 * queue and the accessors handlers use (px_rpc.h's px_call_* functions).
 * Arrival, admission and the receive side are px_rpc_server.c's; the
 * structs both use are in px_rpc_server_int.h.
 *
 * A call holds one reference per batch in flight plus the references its
 * holders took; the last unref runs on_done and frees it.
 *
 * Per call, the C core allows one send batch and one receive batch in
 * flight.  Sends therefore go through a queue: px_call_send() appends, and
 * px_call_pump() starts the next batch when none is in flight, folding a
 * queued final status into the same batch as the last message. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "gt_log.h"
#include "gt_tsan.h"
#include "px_rpc_server_int.h"


/* Takes the px_call_on_over() watcher once the call is over (closed, no
 * send in flight).  Called with c->mu held; the caller runs it unlocked. */
bool px_call_over_take_locked(px_call_t *c, void (**fn)(void *, bool),
                                     void **arg, bool *delivered)
{
    if (c->over_fn == NULL || !c->closed || c->send_in_flight)
        return false;
    *fn = c->over_fn;
    *arg = c->over_arg;
    *delivered = c->status_ok && !c->cancelled;
    c->over_fn = NULL;
    return true;
}

static void px_call_free(px_call_t *c)
{
    if (c->over_fn != NULL) /* never closed: nothing was confirmed */
        c->over_fn(c->over_arg, false);
    if (c->method != NULL && c->method->on_done != NULL)
        c->method->on_done(c);
    px_call_unknown_done(c);
    if (c->conn != NULL && px_admit_leave(&c->srv->admit, c->conn, c->charged))
        atomic_store(&c->srv->trim_due_ms, px_mono_ms() + PX_RPC_TRIM_DELAY_MS);
    if (c->conn != NULL)
        px_server_admit_waiters(c->srv, false); /* bytes were freed */
    px_call_drop_queue_locked(c); /* the last reference: no lock needed */
    if (c->call != NULL)
        grpc_call_unref(c->call);
    grpc_call_details_destroy(&c->details);
    grpc_metadata_array_destroy(&c->md_in);
    for (size_t i = 0; i < c->n_md; i++) {
        free(c->md[i].key);
        free(c->md[i].value);
    }
    free(c->md);
    free(c->path);
    free(c->authority);
    if (c->peer != NULL)
        gpr_free(c->peer);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

void px_call_ref(px_call_t *c)
{
    pthread_mutex_lock(&c->mu);
    c->refs++;
    pthread_mutex_unlock(&c->mu);
}

void px_call_unref(px_call_t *c)
{
    int left;
    pthread_mutex_lock(&c->mu);
    left = --c->refs;
    pthread_mutex_unlock(&c->mu);
    if (left == 0)
        px_call_free(c);
}

px_call_t *px_call_new(px_rpc_server_t *srv)
{
    px_call_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->srv = srv;
    grpc_call_details_init(&c->details);
    grpc_metadata_array_init(&c->md_in);
    c->t_request = (px_tag_t){PX_TAG_REQUEST, c};
    c->t_recv = (px_tag_t){PX_TAG_RECV, c};
    c->t_send = (px_tag_t){PX_TAG_SEND, c};
    c->t_close = (px_tag_t){PX_TAG_CLOSE, c};
    pthread_mutex_init(&c->mu, NULL);
    c->refs = 1; /* the pending request */
    c->code = -1;
    c->sent_status = GRPC_STATUS_CANCELLED;
    return c;
}

void px_call_drop_queue_locked(px_call_t *c)
{
    while (c->q_head != NULL) {
        px_send_item_t *it = c->q_head;
        c->q_head = it->next;
        grpc_byte_buffer_destroy(it->msg);
        free(it->details);
        free(it);
    }
    c->q_tail = NULL;
}

/* Starts the next send batch if none is in flight.  Called with c->mu held. */
static void px_call_pump_locked(px_call_t *c)
{
    grpc_op ops[3];
    size_t n = 0;
    px_send_item_t *first, *second = NULL;

    if (c->send_in_flight || c->q_head == NULL)
        return;
    if (c->finished) {
        px_call_drop_queue_locked(c);
        return;
    }
    first = c->q_head;
    c->q_head = first->next;
    /* Fold a status that directly follows a message into the same batch. */
    if (!first->is_status && c->q_head != NULL && c->q_head->is_status) {
        second = c->q_head;
        c->q_head = second->next;
    }
    if (c->q_head == NULL)
        c->q_tail = NULL;
    first->next = second;
    if (second != NULL)
        second->next = NULL;

    memset(ops, 0, sizeof(ops));
    if (!c->initial_md_sent) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
        c->initial_md_sent = true;
    }
    for (px_send_item_t *it = first; it != NULL; it = it->next) {
        if (it->msg != NULL) {
            ops[n].op = GRPC_OP_SEND_MESSAGE;
            ops[n].data.send_message.send_message = it->msg;
            n++;
        }
        if (it->is_status) {
            c->status_slice = grpc_slice_from_copied_string(
                it->details != NULL ? it->details : "");
            ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
            ops[n].data.send_status_from_server.status = it->code;
            ops[n].data.send_status_from_server.status_details =
                &c->status_slice;
            n++;
        }
    }
    /* The status goes out: the request's bytes are no longer held, so
     * release their charge now, before the client can see the answer.
     * Released only when the call ends (px_call_free), a client sending
     * large messages one after another on a connection found its previous
     * request still charged and was refused TOO_MANY_REQUESTS. */
    if (c->msg_in && c->charged > 0) {
        for (px_send_item_t *it = first; it != NULL; it = it->next) {
            if (it->is_status) {
                px_admit_adjust(&c->srv->admit, c->conn, c->charged, 0, true);
                c->charged = 0;
                break;
            }
        }
    }
    c->inflight = first;
    c->send_in_flight = true;
    c->refs++;
    GT_TSAN_RELEASE(&c->t_send);
    if (grpc_call_start_batch(c->call, ops, n, &c->t_send, NULL) !=
        GRPC_CALL_OK) {
        /* Not started: no completion will come; undo here. */
        GT_LOG(WARN, "rpc", "%s: send batch refused by the core", c->path);
        c->send_in_flight = false;
        c->refs--;
        c->finished = true;
        c->inflight = NULL;
        while (first != NULL) {
            px_send_item_t *next = first->next;
            if (first->is_status)
                grpc_slice_unref(c->status_slice);
            grpc_byte_buffer_destroy(first->msg);
            free(first->details);
            free(first);
            first = next;
        }
        px_call_drop_queue_locked(c);
    }
}

void px_call_on_send(px_call_t *c, bool ok)
{
    px_send_item_t *items;
    void (*over_fn)(void *, bool) = NULL;
    void *over_arg = NULL;
    bool over, delivered = false;

    if (c->srv->test_end_delay_ms > 0) {
        bool status = false;
        pthread_mutex_lock(&c->mu);
        for (px_send_item_t *it = c->inflight; it != NULL; it = it->next)
            status = status || it->is_status;
        pthread_mutex_unlock(&c->mu);
        if (status) {
            struct timespec ts = {c->srv->test_end_delay_ms / 1000,
                                  (c->srv->test_end_delay_ms % 1000) *
                                      1000000L};
            nanosleep(&ts, NULL);
        }
    }
    pthread_mutex_lock(&c->mu);
    items = c->inflight;
    c->inflight = NULL;
    c->send_in_flight = false;
    for (px_send_item_t *it = items; it != NULL; it = it->next) {
        if (it->is_status) {
            c->finished = true;
            c->status_ok = ok;
            grpc_slice_unref(c->status_slice);
        }
    }
    if (!ok)
        c->finished = true; /* the call broke; further sends are pointless */
    px_call_pump_locked(c);
    over = px_call_over_take_locked(c, &over_fn, &over_arg, &delivered);
    pthread_mutex_unlock(&c->mu);
    if (over)
        over_fn(over_arg, delivered);
    while (items != NULL) {
        px_send_item_t *next = items->next;
        grpc_byte_buffer_destroy(items->msg);
        free(items->details);
        free(items);
        items = next;
    }
    px_call_unref(c);
}

static gt_err_t px_call_enqueue(px_call_t *c, px_send_item_t *it)
{
    pthread_mutex_lock(&c->mu);
    if (c->finished || c->finish_queued || c->cancelled) {
        pthread_mutex_unlock(&c->mu);
        grpc_byte_buffer_destroy(it->msg);
        free(it->details);
        free(it);
        return GT_ESHUTDOWN;
    }
    if (it->is_status) {
        c->finish_queued = true;
        c->sent_status = it->code;
    }
    if (c->q_tail != NULL)
        c->q_tail->next = it;
    else
        c->q_head = it;
    c->q_tail = it;
    px_call_pump_locked(c);
    pthread_mutex_unlock(&c->mu);
    return GT_OK;
}

size_t px_call_send_backlog(px_call_t *c)
{
    size_t n = 0;

    pthread_mutex_lock(&c->mu);
    for (px_send_item_t *it = c->q_head; it != NULL; it = it->next)
        n++;
    pthread_mutex_unlock(&c->mu);
    return n;
}

gt_err_t px_call_send(px_call_t *c, const uint8_t *data, size_t len)
{
    px_send_item_t *it = calloc(1, sizeof(*it));
    grpc_slice s;

    if (it == NULL)
        return GT_ENOMEM;
    s = grpc_slice_from_copied_buffer((const char *)data, len);
    it->msg = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return px_call_enqueue(c, it);
}

/* For on_call_end: the `status.code` of a response that has one (found
 * by the field names, so the runtime needs no service's types). */
static void px_call_note_code(px_call_t *c, const ProtobufCMessage *msg)
{
    const ProtobufCFieldDescriptor *f, *cf;
    const ProtobufCMessage *st;
    const ProtobufCEnumValue *ev;
    int code;

    f = protobuf_c_message_descriptor_get_field_by_name(msg->descriptor, "status");
    if (f == NULL || f->type != PROTOBUF_C_TYPE_MESSAGE || f->label == PROTOBUF_C_LABEL_REPEATED)
        return;
    if (f->quantifier_offset != 0 && f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF &&
        *(const uint32_t *)((const char *)msg + f->quantifier_offset) != f->id)
        return;
    st = *(const ProtobufCMessage *const *)((const char *)msg + f->offset);
    if (st == NULL)
        return;
    cf = protobuf_c_message_descriptor_get_field_by_name(st->descriptor, "code");
    if (cf == NULL || cf->type != PROTOBUF_C_TYPE_ENUM || cf->label == PROTOBUF_C_LABEL_REPEATED)
        return;
    code = *(const int *)((const char *)st + cf->offset);
    ev = protobuf_c_enum_descriptor_get_value(cf->descriptor, code);
    pthread_mutex_lock(&c->mu);
    c->code = code;
    c->code_name = ev != NULL ? ev->name : NULL;
    pthread_mutex_unlock(&c->mu);
}

gt_err_t px_call_send_pb(px_call_t *c, const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    px_send_item_t *it = calloc(1, sizeof(*it));
    grpc_slice s;

    if (it == NULL)
        return GT_ENOMEM;
    /* Pack straight into the slice the core will send: no extra copy. */
    if (c->srv->opts.on_call_end != NULL)
        px_call_note_code(c, msg);
    s = grpc_slice_malloc(len);
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
    it->msg = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return px_call_enqueue(c, it);
}

gt_err_t px_call_finish(px_call_t *c, grpc_status_code code, const char *msg)
{
    px_send_item_t *it = calloc(1, sizeof(*it));

    if (it == NULL)
        return GT_ENOMEM;
    it->is_status = true;
    it->code = code;
    if (msg != NULL && (it->details = strdup(msg)) == NULL) {
        free(it);
        return GT_ENOMEM;
    }
    return px_call_enqueue(c, it);
}

void px_call_on_over(px_call_t *c, void (*fn)(void *arg, bool delivered),
                     void *arg)
{
    void (*over_fn)(void *, bool) = NULL;
    void *over_arg = NULL;
    bool over, delivered = false;

    pthread_mutex_lock(&c->mu);
    c->over_fn = fn;
    c->over_arg = arg;
    over = px_call_over_take_locked(c, &over_fn, &over_arg, &delivered);
    pthread_mutex_unlock(&c->mu);
    if (over)
        over_fn(over_arg, delivered);
}

/* The message `it` and the final status OK queued together, so that the
 * pump hands them to the core as one batch (queued one after the other,
 * the message goes alone and the status waits for its completion: a
 * worker thread's turn later, a second write on the wire). */
static gt_err_t px_call_enqueue_reply(px_call_t *c, px_send_item_t *it)
{
    px_send_item_t *st = calloc(1, sizeof(*st));

    pthread_mutex_lock(&c->mu);
    if (st == NULL || c->finished || c->finish_queued || c->cancelled) {
        pthread_mutex_unlock(&c->mu);
        grpc_byte_buffer_destroy(it->msg);
        free(it);
        free(st);
        return st == NULL ? GT_ENOMEM : GT_ESHUTDOWN;
    }
    st->is_status = true;
    st->code = GRPC_STATUS_OK;
    c->finish_queued = true;
    c->sent_status = GRPC_STATUS_OK;
    it->next = st;
    if (c->q_tail != NULL)
        c->q_tail->next = it;
    else
        c->q_head = it;
    c->q_tail = st;
    px_call_pump_locked(c);
    pthread_mutex_unlock(&c->mu);
    return GT_OK;
}

gt_err_t px_call_reply(px_call_t *c, const uint8_t *data, size_t len)
{
    px_send_item_t *it = calloc(1, sizeof(*it));
    grpc_slice s;

    if (it == NULL)
        return GT_ENOMEM;
    s = grpc_slice_from_copied_buffer((const char *)data, len);
    it->msg = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return px_call_enqueue_reply(c, it);
}

gt_err_t px_call_reply_pb(px_call_t *c, const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    px_send_item_t *it = calloc(1, sizeof(*it));
    grpc_slice s;

    if (it == NULL)
        return GT_ENOMEM;
    if (c->srv->opts.on_call_end != NULL)
        px_call_note_code(c, msg);
    s = grpc_slice_malloc(len);
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
    it->msg = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return px_call_enqueue_reply(c, it);
}

gt_err_t px_call_defer(px_call_t *c, void (*fn)(px_call_t *call, void *arg),
                       void *arg)
{
    px_defer_t *d = malloc(sizeof(*d));
    grpc_call_error rc;

    if (d == NULL)
        return GT_ENOMEM;
    d->tag = (px_tag_t){PX_TAG_DEFER, c};
    d->fn = fn;
    d->arg = arg;
    pthread_mutex_lock(&c->mu);
    c->refs++;
    /* An empty batch completes at once: its tag goes straight to the
     * completion queue, where a worker picks it up. */
    GT_TSAN_RELEASE(&d->tag);
    rc = grpc_call_start_batch(c->call, NULL, 0, &d->tag, NULL);
    if (rc != GRPC_CALL_OK)
        c->refs--;
    pthread_mutex_unlock(&c->mu);
    if (rc != GRPC_CALL_OK) {
        free(d);
        fn(c, arg);
    }
    return GT_OK;
}

void px_call_on_defer(px_defer_t *d)
{
    px_call_t *c = d->tag.owner;
    d->fn(c, d->arg);
    free(d);
    px_call_unref(c);
}

ProtobufCMessage *px_pb_unpack(const ProtobufCMessageDescriptor *desc,
                               const uint8_t *data, size_t len)
{
    return protobuf_c_message_unpack(desc, NULL, len, data);
}

const char *px_call_method(const px_call_t *c) { return c->path; }
void *px_call_app(const px_call_t *c) { return c->srv->opts.app; }
const px_method_t *px_call_method_entry(const px_call_t *c)
{
    return c->method;
}
const char *px_call_authority(const px_call_t *c) { return c->authority; }
const char *px_call_peer(const px_call_t *c)
{
    return c->peer != NULL ? c->peer : "";
}

const char *px_call_metadata(const px_call_t *c, const char *key)
{
    for (size_t i = 0; i < c->n_md; i++)
        if (strcmp(c->md[i].key, key) == 0)
            return c->md[i].value;
    return NULL;
}

int64_t px_call_deadline_left_ms(const px_call_t *c)
{
    gpr_timespec dl = c->details.deadline;
    gpr_timespec now;

    if (gpr_time_cmp(dl, gpr_inf_future(dl.clock_type)) == 0)
        return INT64_MAX;
    now = gpr_now(dl.clock_type);
    return gpr_time_to_millis(gpr_time_sub(dl, now));
}

bool px_call_is_cancelled(const px_call_t *c)
{
    bool v;
    pthread_mutex_lock((pthread_mutex_t *)&c->mu);
    v = c->cancelled;
    pthread_mutex_unlock((pthread_mutex_t *)&c->mu);
    return v;
}

bool px_call_server_stopping(const px_call_t *c)
{
    bool v;
    pthread_mutex_lock(&c->srv->mu);
    v = c->srv->stopping;
    pthread_mutex_unlock(&c->srv->mu);
    return v;
}

void px_call_set_user(px_call_t *c, void *user) { c->user = user; }
void *px_call_user(const px_call_t *c) { return c->user; }
