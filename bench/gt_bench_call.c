/* gt_bench request slots: the client side of SendMessage, ReceiveMessage
 * and AckMessage on the grpc C core, as small state machines.
 *
 * A slot is one request kept in flight on one connection: when its call
 * completes, the completion-queue event comes back to the worker that owns
 * the slot, which records the outcome and starts the next request at once.
 * So C connections x M slots keep C x M requests in flight with a few
 * threads, whatever the latency.
 *
 *   send:  SEND_WAIT (one batch: metadata, message, half-close, response,
 *          status) -> next send; with --tx: -> END_WAIT (one
 *          EndTransaction COMMIT per message stored, one after another)
 *          -> next send
 *   recv:  RECV_FIRST (metadata, request, half-close, first response) ->
 *          RECV_MSG* (one response each: status, messages,
 *          delivery_timestamp) -> end of stream -> RECV_STATUS ->
 *          ACK_WAIT (one AckMessage with every receipt handle of this
 *          receive) -> next receive
 *
 * A slot is touched only by its worker thread (see gt_bench.h). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/support/time.h>

#include "gt_bench.h"
#include "gt_le.h"

#define GB_UNARY_TIMEOUT_MS 30000
#define GB_RECV_GRACE_MS 10000 /* receive deadline beyond the long poll */
#define GB_INVISIBLE_S 30

typedef Apache__Rocketmq__V2__Message gb_msg_t;

typedef enum gb_state {
    GB_IDLE = 0,
    GB_SEND_WAIT,
    GB_RECV_FIRST,
    GB_RECV_MSG,
    GB_RECV_STATUS,
    GB_ACK_WAIT,
    GB_END_WAIT,
} gb_state_t;

/* A SendMessageRequest built once per slot; each send only rewrites the
 * message ids, timestamps and the first 8 body bytes. */
typedef struct gb_sendbuf {
    Apache__Rocketmq__V2__SendMessageRequest req;
    Apache__Rocketmq__V2__Resource topic;
    gb_msg_t *msgs;
    gb_msg_t **msgp;
    Apache__Rocketmq__V2__SystemProperties *props;
    Google__Protobuf__Timestamp *born;
    char (*ids)[40];
    char (*groups)[16];               /* --fifo-groups: "g<k>" */
    char topic_name[300];             /* --topics: "<topic><k>" */
    Google__Protobuf__Timestamp *due; /* delay: delivery_timestamp */
    uint8_t *bodies;
} gb_sendbuf_t;

struct gb_slot {
    gb_worker_t *w;
    gb_conn_t *c;
    gb_state_t state;
    grpc_call *call;
    grpc_byte_buffer *out, *in;
    grpc_metadata_array md, trail;
    grpc_status_code status;
    grpc_slice details;
    uint64_t t_start;
    int queue;           /* next queue id (send) */
    gb_sendbuf_t *sb;    /* send mode only */
    int32_t recv_code;   /* Status of the current receive */
    size_t n_got, cap;   /* receipt handles held for the next ack */
    size_t n_acking;     /* entries in the AckMessage in flight */
    char **ids, **handles; /* recv: ids + receipt handles; --tx: ids +
                            * transaction ids of the half messages stored */
    size_t n_ended;      /* --tx: EndTransactions answered so far */
    uint64_t t_pair;     /* --tx: start of the send of this round */
};

/* ------------------------------------------------------------ helpers */

uint64_t gb_now_mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t gb_now_real_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

grpc_byte_buffer *gb_pack(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    grpc_slice sl = grpc_slice_malloc(n);
    grpc_byte_buffer *bb;

    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(sl));
    bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    return bb;
}

ProtobufCMessage *gb_unpack(const ProtobufCMessageDescriptor *d,
                            grpc_byte_buffer *bb)
{
    grpc_byte_buffer_reader r;
    grpc_slice sl;
    ProtobufCMessage *m;

    if (bb == NULL || !grpc_byte_buffer_reader_init(&r, bb))
        return NULL;
    sl = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    m = protobuf_c_message_unpack(d, NULL, GRPC_SLICE_LENGTH(sl),
                                  GRPC_SLICE_START_PTR(sl));
    grpc_slice_unref(sl);
    return m;
}

static bool gb_measuring(const gb_slot_t *s)
{
    return atomic_load_explicit(&s->w->run->phase, memory_order_relaxed) ==
           GB_PHASE_MEASURE;
}

static void gb_count_ok(gb_slot_t *s, uint64_t n, bool measuring)
{
    const gb_opts_t *o = s->w->run->opts;
    int64_t total;

    if (measuring) {
        s->w->stats.ok += n;
        if (o->mode == GB_MODE_SEND)
            s->w->stats.bytes += n * (uint64_t)o->size;
    }
    total = atomic_fetch_add(&s->w->run->total_ok, (int64_t)n) + (int64_t)n;
    if (o->count > 0 && total >= o->count)
        atomic_store(&s->w->run->phase, GB_PHASE_DRAIN);
}

/* Opens a call on the slot's connection and worker queue. */
static bool gb_call_open(gb_slot_t *s, void *method, int64_t timeout_ms)
{
    gpr_timespec dl = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                   gpr_time_from_millis(timeout_ms,
                                                        GPR_TIMESPAN));

    s->call = grpc_channel_create_registered_call(
        s->c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, s->w->cq, method, dl, NULL);
    if (s->call == NULL)
        return false;
    grpc_metadata_array_init(&s->md);
    grpc_metadata_array_init(&s->trail);
    s->details = grpc_empty_slice();
    s->status = GRPC_STATUS_OK;
    s->t_start = gb_now_mono_ns();
    s->w->inflight++;
    return true;
}

static void gb_call_close(gb_slot_t *s)
{
    if (s->call == NULL)
        return;
    grpc_call_unref(s->call);
    s->call = NULL;
    grpc_metadata_array_destroy(&s->md);
    grpc_metadata_array_destroy(&s->trail);
    grpc_slice_unref(s->details);
    if (s->out != NULL)
        grpc_byte_buffer_destroy(s->out);
    if (s->in != NULL)
        grpc_byte_buffer_destroy(s->in);
    s->out = s->in = NULL;
    s->state = GB_IDLE;
    s->w->inflight--;
}

/* Starts the request half of a call: metadata, `s->out`, half-close, the
 * response metadata and the first response; with `with_status` also the
 * final status (a unary call in one batch). */
static bool gb_call_start(gb_slot_t *s, bool with_status)
{
    grpc_op ops[6];
    size_t n = 0;

    memset(ops, 0, sizeof(ops));
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].data.send_initial_metadata.count = 4;
    ops[n++].data.send_initial_metadata.metadata = s->c->md;
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = s->out;
    ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[n++].data.recv_initial_metadata.recv_initial_metadata = &s->md;
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = &s->in;
    if (with_status) {
        ops[n].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        ops[n].data.recv_status_on_client.trailing_metadata = &s->trail;
        ops[n].data.recv_status_on_client.status = &s->status;
        ops[n++].data.recv_status_on_client.status_details = &s->details;
    }
    return grpc_call_start_batch(s->call, ops, n, s, NULL) == GRPC_CALL_OK;
}

static bool gb_call_recv_one(gb_slot_t *s, bool status)
{
    grpc_op op;

    memset(&op, 0, sizeof(op));
    if (status) {
        op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        op.data.recv_status_on_client.trailing_metadata = &s->trail;
        op.data.recv_status_on_client.status = &s->status;
        op.data.recv_status_on_client.status_details = &s->details;
    } else {
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &s->in;
    }
    return grpc_call_start_batch(s->call, &op, 1, s, NULL) == GRPC_CALL_OK;
}

/* A call that could not start: count it and leave the slot idle, so a
 * broken channel does not spin. */
static void gb_call_failed(gb_slot_t *s, uint64_t msgs)
{
    if (gb_measuring(s))
        gb_errs_add(&s->w->stats.errs, -(int32_t)GRPC_STATUS_INTERNAL, msgs);
    gb_call_close(s);
}

/* Appends a pair of strings (copied) to s->ids / s->handles; drops it if
 * memory runs out. */
static void gb_keep(gb_slot_t *s, const char *id, const char *h)
{
    if (s->n_got == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 32;
        char **ids = realloc(s->ids, cap * sizeof(*ids));
        char **hs;

        if (ids == NULL)
            return;
        s->ids = ids;
        hs = realloc(s->handles, cap * sizeof(*hs));
        if (hs == NULL)
            return;
        s->handles = hs;
        s->cap = cap;
    }
    s->ids[s->n_got] = strdup(id);
    s->handles[s->n_got] = strdup(h);
    if (s->ids[s->n_got] == NULL || s->handles[s->n_got] == NULL) {
        free(s->ids[s->n_got]);
        free(s->handles[s->n_got]);
        return;
    }
    s->n_got++;
}

static void gb_ack_forget(gb_slot_t *s)
{
    for (size_t i = 0; i < s->n_got; i++) {
        free(s->ids[i]);
        free(s->handles[i]);
    }
    s->n_got = 0;
}

/* --------------------------------------------------------------- send */

static gb_sendbuf_t *gb_sendbuf_new(const gb_run_t *run)
{
    const gb_opts_t *o = run->opts;
    size_t b = (size_t)o->batch, sz = (size_t)o->size;
    gb_sendbuf_t *sb = calloc(1, sizeof(*sb));

    if (sb == NULL)
        return NULL;
    sb->msgs = calloc(b, sizeof(*sb->msgs));
    sb->msgp = calloc(b, sizeof(*sb->msgp));
    sb->props = calloc(b, sizeof(*sb->props));
    sb->born = calloc(b, sizeof(*sb->born));
    sb->ids = calloc(b, sizeof(*sb->ids));
    sb->groups = calloc(b, sizeof(*sb->groups));
    sb->due = calloc(b, sizeof(*sb->due));
    sb->bodies = malloc(b * sz);
    if (!sb->msgs || !sb->msgp || !sb->props || !sb->born || !sb->ids ||
        !sb->groups || !sb->due || !sb->bodies)
        return sb; /* gb_slot_new checks bodies and frees */
    apache__rocketmq__v2__send_message_request__init(&sb->req);
    apache__rocketmq__v2__resource__init(&sb->topic);
    sb->topic.name = (char *)o->topic;
    sb->req.n_messages = b;
    sb->req.messages = sb->msgp;
    for (size_t i = 0; i < b; i++) {
        gb_msg_t *m = &sb->msgs[i];
        Apache__Rocketmq__V2__SystemProperties *p = &sb->props[i];

        apache__rocketmq__v2__message__init(m);
        apache__rocketmq__v2__system_properties__init(p);
        google__protobuf__timestamp__init(&sb->born[i]);
        google__protobuf__timestamp__init(&sb->due[i]);
        memcpy(sb->bodies + i * sz, run->body_template, sz);
        m->topic = &sb->topic;
        m->system_properties = p;
        m->body.data = sb->bodies + i * sz;
        m->body.len = sz;
        p->message_id = sb->ids[i];
        p->message_type = APACHE__ROCKETMQ__V2__MESSAGE_TYPE__NORMAL;
        p->body_encoding = APACHE__ROCKETMQ__V2__ENCODING__IDENTITY;
        p->born_timestamp = &sb->born[i];
        p->born_host = (char *)run->host;
        if (o->fifo_groups > 0) {
            p->message_type = APACHE__ROCKETMQ__V2__MESSAGE_TYPE__FIFO;
            p->message_group_present_case =
                APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__MESSAGE_GROUP_PRESENT_MESSAGE_GROUP;
            p->message_group = sb->groups[i];
        } else if (o->delay_ms >= 0 || o->deliver_at_ms > 0) {
            p->message_type = APACHE__ROCKETMQ__V2__MESSAGE_TYPE__DELAY;
            p->delivery_timestamp_present_case =
                APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__DELIVERY_TIMESTAMP_PRESENT_DELIVERY_TIMESTAMP;
            p->delivery_timestamp = &sb->due[i];
        } else if (o->tx) {
            p->message_type = APACHE__ROCKETMQ__V2__MESSAGE_TYPE__TRANSACTION;
        }
        sb->msgp[i] = m;
    }
    return sb;
}

static void gb_sendbuf_free(gb_sendbuf_t *sb)
{
    if (sb == NULL)
        return;
    free(sb->msgs);
    free(sb->msgp);
    free(sb->props);
    free(sb->born);
    free(sb->ids);
    free(sb->groups);
    free(sb->due);
    free(sb->bodies);
    free(sb);
}

static void gb_send_start(gb_slot_t *s)
{
    gb_run_t *run = s->w->run;
    const gb_opts_t *o = run->opts;
    gb_sendbuf_t *sb = s->sb;
    uint64_t now = gb_now_real_ns();

    if (o->count > 0 &&
        atomic_fetch_add(&run->issued, o->batch) >= o->count)
        return;
    for (int i = 0; i < o->batch; i++) {
        gb_msg_t *m = &sb->msgs[i];
        uint64_t due_ms = o->deliver_at_ms > 0
                              ? (uint64_t)o->deliver_at_ms
                              : now / 1000000ULL + (uint64_t)o->delay_ms;

        snprintf(sb->ids[i], sizeof(sb->ids[i]), "%016" PRIX64 "%02X%014" PRIX64,
                 run->id_nonce, (unsigned)s->w->index & 0xff,
                 (uint64_t)(s->w->seq++ & 0xffffffffffffffULL));
        sb->born[i].seconds = (int64_t)(now / 1000000000ULL);
        sb->born[i].nanos = (int32_t)(now % 1000000000ULL);
        sb->props[i].queue_id = s->queue;
        if (o->fifo_groups > 0) {
            /* The SDKs pick the queue from the group: keep a group on one. */
            uint64_t k = atomic_fetch_add_explicit(&run->group_seq, 1,
                                                   memory_order_relaxed) %
                         (uint64_t)o->fifo_groups;

            snprintf(sb->groups[i], sizeof(sb->groups[i]), "g%u",
                     (unsigned)k);
            sb->props[i].queue_id =
                (int32_t)(k % (uint64_t)(o->queues > 0 ? o->queues : 1));
        } else if (o->delay_ms >= 0 || o->deliver_at_ms > 0) {
            sb->due[i].seconds = (int64_t)(due_ms / 1000);
            sb->due[i].nanos = (int32_t)(due_ms % 1000) * 1000000;
        }
        gt_le64_put(m->body.data, now);
    }
    if (o->topics > 0) { /* one topic per request, round robin */
        uint64_t k = atomic_fetch_add_explicit(&run->topic_seq, 1,
                                               memory_order_relaxed) %
                     (uint64_t)o->topics;

        snprintf(sb->topic_name, sizeof(sb->topic_name), "%s%u", o->topic,
                 (unsigned)k);
        sb->topic.name = sb->topic_name;
    }
    s->queue = (s->queue + 1) % (o->queues > 0 ? o->queues : 1);
    s->out = gb_pack(&sb->req.base);
    if (s->out == NULL || !gb_call_open(s, s->c->m_send, GB_UNARY_TIMEOUT_MS)) {
        if (s->out != NULL)
            grpc_byte_buffer_destroy(s->out);
        s->out = NULL;
        return;
    }
    s->state = GB_SEND_WAIT;
    s->t_pair = s->t_start;
    if (!gb_call_start(s, true))
        gb_call_failed(s, (uint64_t)o->batch);
}

static void gb_end_start(gb_slot_t *s);

static void gb_send_done(gb_slot_t *s, bool ok)
{
    const gb_opts_t *o = s->w->run->opts;
    bool meas = gb_measuring(s);
    gb_stats_t *st = &s->w->stats;
    Apache__Rocketmq__V2__SendMessageResponse *r = NULL;
    uint64_t n_ok = 0;

    if (!ok || s->status != GRPC_STATUS_OK) {
        if (meas)
            gb_errs_add(&st->errs,
                        -(int32_t)(ok ? s->status : GRPC_STATUS_UNKNOWN),
                        (uint64_t)o->batch);
    } else if ((r = (Apache__Rocketmq__V2__SendMessageResponse *)gb_unpack(
                    &apache__rocketmq__v2__send_message_response__descriptor,
                    s->in)) == NULL) {
        if (meas)
            gb_errs_add(&st->errs, GB_ERR_DECODE, (uint64_t)o->batch);
    } else if (r->n_entries == 0) {
        if (meas)
            gb_errs_add(&st->errs, r->status ? (int32_t)r->status->code : 0,
                        (uint64_t)o->batch);
    } else {
        for (size_t i = 0; i < r->n_entries; i++) {
            const Apache__Rocketmq__V2__Status *es = r->entries[i]->status;

            if (es != NULL && es->code == APACHE__ROCKETMQ__V2__CODE__OK) {
                n_ok++;
                if (o->tx)
                    gb_keep(s,
                            r->entries[i]->message_id
                                ? r->entries[i]->message_id : "",
                            r->entries[i]->transaction_id
                                ? r->entries[i]->transaction_id : "");
            } else if (meas) {
                gb_errs_add(&st->errs, es ? (int32_t)es->code : 0, 1);
            }
        }
    }
    if (r != NULL)
        protobuf_c_message_free_unpacked(&r->base, NULL);
    if (meas)
        st->requests++;
    gb_call_close(s);
    if (o->tx) {
        /* Counted when committed; the pair's latency at the last commit. */
        s->n_ended = 0;
        if (s->n_got > 0)
            gb_end_start(s);
        else
            gb_slot_start(s);
        return;
    }
    if (meas)
        gb_hist_add(&st->lat, gb_now_mono_ns() - s->t_start);
    gb_count_ok(s, n_ok, meas);
    gb_slot_start(s);
}

/* --------------------------------------------------------- transaction */

/* EndTransaction COMMIT for the next half message this slot stored.  It
 * runs on even while the run drains, so no half message is left for the
 * server's orphan check (the worker still cancels after its grace). */
static void gb_end_start(gb_slot_t *s)
{
    const gb_opts_t *o = s->w->run->opts;
    Apache__Rocketmq__V2__EndTransactionRequest req =
        APACHE__ROCKETMQ__V2__END_TRANSACTION_REQUEST__INIT;
    Apache__Rocketmq__V2__Resource topic = APACHE__ROCKETMQ__V2__RESOURCE__INIT;

    topic.name = (char *)o->topic;
    req.topic = &topic;
    req.message_id = s->ids[s->n_ended];
    req.transaction_id = s->handles[s->n_ended];
    req.resolution = APACHE__ROCKETMQ__V2__TRANSACTION_RESOLUTION__COMMIT;
    req.source = APACHE__ROCKETMQ__V2__TRANSACTION_SOURCE__SOURCE_CLIENT;
    s->out = gb_pack(&req.base);
    if (s->out == NULL || !gb_call_open(s, s->c->m_end, GB_UNARY_TIMEOUT_MS)) {
        if (s->out != NULL)
            grpc_byte_buffer_destroy(s->out);
        s->out = NULL;
        return;
    }
    s->state = GB_END_WAIT;
    if (!gb_call_start(s, true))
        gb_call_failed(s, 1);
}

static void gb_end_done(gb_slot_t *s, bool ok)
{
    bool meas = gb_measuring(s);
    gb_stats_t *st = &s->w->stats;
    Apache__Rocketmq__V2__EndTransactionResponse *r = NULL;
    uint64_t n_ok = 0;

    if (!ok || s->status != GRPC_STATUS_OK) {
        if (meas)
            gb_errs_add(&st->errs,
                        -(int32_t)(ok ? s->status : GRPC_STATUS_UNKNOWN), 1);
    } else if ((r = (Apache__Rocketmq__V2__EndTransactionResponse *)gb_unpack(
                    &apache__rocketmq__v2__end_transaction_response__descriptor,
                    s->in)) == NULL) {
        if (meas)
            gb_errs_add(&st->errs, GB_ERR_DECODE, 1);
    } else if (r->status != NULL &&
               r->status->code == APACHE__ROCKETMQ__V2__CODE__OK) {
        n_ok = 1;
    } else if (meas) {
        gb_errs_add(&st->errs, r->status ? (int32_t)r->status->code : 0, 1);
    }
    if (r != NULL)
        protobuf_c_message_free_unpacked(&r->base, NULL);
    if (meas)
        st->requests++;
    gb_count_ok(s, n_ok, meas);
    gb_call_close(s);
    if (++s->n_ended < s->n_got) {
        gb_end_start(s);
        return;
    }
    if (meas)
        gb_hist_add(&st->lat, gb_now_mono_ns() - s->t_pair);
    gb_ack_forget(s);
    s->n_ended = 0;
    gb_slot_start(s);
}

/* ------------------------------------------------------------ receive */

static void gb_ack_start(gb_slot_t *s);

static void gb_recv_start(gb_slot_t *s)
{
    const gb_opts_t *o = s->w->run->opts;
    Apache__Rocketmq__V2__ReceiveMessageRequest req =
        APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_REQUEST__INIT;
    Apache__Rocketmq__V2__Resource group = APACHE__ROCKETMQ__V2__RESOURCE__INIT;
    Apache__Rocketmq__V2__Resource topic = APACHE__ROCKETMQ__V2__RESOURCE__INIT;
    Apache__Rocketmq__V2__MessageQueue mq =
        APACHE__ROCKETMQ__V2__MESSAGE_QUEUE__INIT;
    Apache__Rocketmq__V2__FilterExpression filter =
        APACHE__ROCKETMQ__V2__FILTER_EXPRESSION__INIT;
    Google__Protobuf__Duration invis = GOOGLE__PROTOBUF__DURATION__INIT;
    Google__Protobuf__Duration poll = GOOGLE__PROTOBUF__DURATION__INIT;

    group.name = (char *)o->group;
    topic.name = (char *)o->topic;
    mq.topic = &topic;
    mq.id = s->queue;
    mq.permission = APACHE__ROCKETMQ__V2__PERMISSION__READ_WRITE;
    filter.type = APACHE__ROCKETMQ__V2__FILTER_TYPE__TAG;
    filter.expression = "*";
    invis.seconds = GB_INVISIBLE_S;
    poll.seconds = o->long_poll_ms / 1000;
    poll.nanos = (o->long_poll_ms % 1000) * 1000000;
    req.group = &group;
    req.message_queue = &mq;
    req.filter_expression = &filter;
    req.batch_size = o->batch;
    req.invisible_duration_present_case =
        APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_REQUEST__INVISIBLE_DURATION_PRESENT_INVISIBLE_DURATION;
    req.invisible_duration = &invis;
    req.auto_renew = false;
    req.long_polling_timeout_present_case =
        APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_REQUEST__LONG_POLLING_TIMEOUT_PRESENT_LONG_POLLING_TIMEOUT;
    req.long_polling_timeout = &poll;

    s->queue = (s->queue + 1) % (o->queues > 0 ? o->queues : 1);
    s->recv_code = 0;
    s->out = gb_pack(&req.base);
    if (s->out == NULL ||
        !gb_call_open(s, s->c->m_recv, o->long_poll_ms + GB_RECV_GRACE_MS)) {
        if (s->out != NULL)
            grpc_byte_buffer_destroy(s->out);
        s->out = NULL;
        return;
    }
    s->state = GB_RECV_FIRST;
    if (!gb_call_start(s, false))
        gb_call_failed(s, 0);
}

/* Keeps the message's id and receipt handle for the ack. */
static void gb_recv_keep(gb_slot_t *s, const gb_msg_t *m)
{
    const Apache__Rocketmq__V2__SystemProperties *p = m->system_properties;

    if (p == NULL || p->receipt_handle_present_case == 0)
        return;
    gb_keep(s, p->message_id ? p->message_id : "", p->receipt_handle);
}

/* Type-specific counters of one received message: the span's start, timer
 * lateness (now - delivery_timestamp) and the FIFO groups seen. */
static void gb_recv_types(gb_slot_t *s, const gb_msg_t *m)
{
    const gb_opts_t *o = s->w->run->opts;
    const Apache__Rocketmq__V2__SystemProperties *p = m->system_properties;
    gb_stats_t *st = &s->w->stats;

    if (st->first_ns == 0)
        st->first_ns = gb_now_mono_ns();
    if (p == NULL)
        return;
    if (p->delivery_timestamp_present_case && p->delivery_timestamp != NULL) {
        int64_t due = p->delivery_timestamp->seconds * 1000000000LL +
                      p->delivery_timestamp->nanos;
        int64_t now = (int64_t)gb_now_real_ns();

        gb_hist_add(&st->late, now > due ? (uint64_t)(now - due) : 0);
        if (now < due)
            st->early++;
    }
    if (p->message_group_present_case && p->message_group != NULL) {
        const char *g = p->message_group;
        char *end;
        unsigned long k;

        st->grouped++;
        if (g[0] == 'g' && g[1] != '\0') {
            k = strtoul(g + 1, &end, 10);
            if (*end == '\0' && k < (unsigned long)o->fifo_groups)
                st->groups_seen[k / 8] |= (uint8_t)(1u << (k % 8));
        }
    }
}

static void gb_recv_response(gb_slot_t *s)
{
    Apache__Rocketmq__V2__ReceiveMessageResponse *r;
    gb_stats_t *st = &s->w->stats;
    bool meas = gb_measuring(s);

    r = (Apache__Rocketmq__V2__ReceiveMessageResponse *)gb_unpack(
        &apache__rocketmq__v2__receive_message_response__descriptor, s->in);
    if (r == NULL) {
        if (meas)
            gb_errs_add(&st->errs, GB_ERR_DECODE, 1);
        return;
    }
    switch (r->content_case) {
    case APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__CONTENT_STATUS:
        s->recv_code = (int32_t)r->status->code;
        break;
    case APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__CONTENT_MESSAGE:
        if (meas) {
            gb_recv_types(s, r->message);
            st->received++;
            st->bytes += r->message->body.len;
            if (r->message->body.len >= 8) {
                uint64_t ts = gt_le64_get(r->message->body.data);
                uint64_t now = gb_now_real_ns();

                gb_hist_add(&st->lat, now > ts ? now - ts : 0);
            }
        }
        gb_recv_keep(s, r->message);
        break;
    default:
        break;
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

static void gb_recv_on_message(gb_slot_t *s, bool ok)
{
    if (s->out != NULL) {
        grpc_byte_buffer_destroy(s->out);
        s->out = NULL;
    }
    if (ok && s->in != NULL) {
        gb_recv_response(s);
        grpc_byte_buffer_destroy(s->in);
        s->in = NULL;
        s->state = GB_RECV_MSG;
        if (gb_call_recv_one(s, false))
            return;
    }
    s->state = GB_RECV_STATUS;
    if (!gb_call_recv_one(s, true))
        gb_call_failed(s, 0);
}

static void gb_recv_on_status(gb_slot_t *s, bool ok)
{
    gb_stats_t *st = &s->w->stats;
    bool meas = gb_measuring(s);
    int32_t code = s->recv_code;

    if (meas) {
        st->requests++;
        if (!ok || s->status != GRPC_STATUS_OK)
            gb_errs_add(&st->errs,
                        -(int32_t)(ok ? s->status : GRPC_STATUS_UNKNOWN), 1);
        else if (code == APACHE__ROCKETMQ__V2__CODE__MESSAGE_NOT_FOUND)
            st->empty_polls++;
        else if (code != APACHE__ROCKETMQ__V2__CODE__OK)
            gb_errs_add(&st->errs, code, 1);
        if (s->n_got > 0)
            gb_hist_add(&st->rtt, gb_now_mono_ns() - s->t_start);
    }
    gb_call_close(s);
    if (s->n_got > 0)
        gb_ack_start(s);
    else
        gb_slot_start(s);
}

/* ---------------------------------------------------------------- ack */

/* One AckMessage for every message of the receive that just ended. */
static void gb_ack_start(gb_slot_t *s)
{
    const gb_opts_t *o = s->w->run->opts;
    Apache__Rocketmq__V2__AckMessageRequest req =
        APACHE__ROCKETMQ__V2__ACK_MESSAGE_REQUEST__INIT;
    Apache__Rocketmq__V2__Resource group = APACHE__ROCKETMQ__V2__RESOURCE__INIT;
    Apache__Rocketmq__V2__Resource topic = APACHE__ROCKETMQ__V2__RESOURCE__INIT;
    Apache__Rocketmq__V2__AckMessageEntry *ents = calloc(s->n_got,
                                                         sizeof(*ents));
    Apache__Rocketmq__V2__AckMessageEntry **entp = calloc(s->n_got,
                                                          sizeof(*entp));

    s->n_acking = s->n_got;
    if (ents != NULL && entp != NULL) {
        group.name = (char *)o->group;
        topic.name = (char *)o->topic;
        req.group = &group;
        req.topic = &topic;
        for (size_t i = 0; i < s->n_got; i++) {
            apache__rocketmq__v2__ack_message_entry__init(&ents[i]);
            ents[i].message_id = s->ids[i];
            ents[i].receipt_handle = s->handles[i];
            entp[i] = &ents[i];
        }
        req.n_entries = s->n_got;
        req.entries = entp;
        s->out = gb_pack(&req.base);
    }
    free(ents);
    free(entp);
    gb_ack_forget(s);
    if (s->out == NULL || !gb_call_open(s, s->c->m_ack, GB_UNARY_TIMEOUT_MS)) {
        if (s->out != NULL)
            grpc_byte_buffer_destroy(s->out);
        s->out = NULL;
        return;
    }
    s->state = GB_ACK_WAIT;
    if (!gb_call_start(s, true))
        gb_call_failed(s, s->n_acking);
}

static void gb_ack_done(gb_slot_t *s, bool ok)
{
    bool meas = gb_measuring(s);
    gb_stats_t *st = &s->w->stats;
    Apache__Rocketmq__V2__AckMessageResponse *r = NULL;
    uint64_t n_ok = 0;

    if (!ok || s->status != GRPC_STATUS_OK) {
        if (meas)
            gb_errs_add(&st->errs,
                        -(int32_t)(ok ? s->status : GRPC_STATUS_UNKNOWN),
                        s->n_acking);
    } else if ((r = (Apache__Rocketmq__V2__AckMessageResponse *)gb_unpack(
                    &apache__rocketmq__v2__ack_message_response__descriptor,
                    s->in)) == NULL) {
        if (meas)
            gb_errs_add(&st->errs, GB_ERR_DECODE, s->n_acking);
    } else if (r->n_entries == 0) {
        if (r->status != NULL &&
            r->status->code == APACHE__ROCKETMQ__V2__CODE__OK)
            n_ok = s->n_acking;
        else if (meas)
            gb_errs_add(&st->errs, r->status ? (int32_t)r->status->code : 0,
                        s->n_acking);
    } else {
        for (size_t i = 0; i < r->n_entries; i++) {
            const Apache__Rocketmq__V2__Status *es = r->entries[i]->status;

            if (es != NULL && es->code == APACHE__ROCKETMQ__V2__CODE__OK)
                n_ok++;
            else if (meas)
                gb_errs_add(&st->errs, es ? (int32_t)es->code : 0, 1);
        }
    }
    if (r != NULL)
        protobuf_c_message_free_unpacked(&r->base, NULL);
    if (meas && n_ok > 0)
        st->last_ns = gb_now_mono_ns();
    gb_count_ok(s, n_ok, meas);
    gb_call_close(s);
    gb_slot_start(s);
}

/* --------------------------------------------------------------- slots */

gb_slot_t *gb_slot_new(gb_worker_t *w, gb_conn_t *c)
{
    gb_slot_t *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return NULL;
    s->w = w;
    s->c = c;
    s->queue = (c->index + w->n_slots) % (w->run->opts->queues > 0
                                              ? w->run->opts->queues
                                              : 1);
    if (w->run->opts->mode == GB_MODE_SEND) {
        s->sb = gb_sendbuf_new(w->run);
        if (s->sb == NULL || s->sb->bodies == NULL || s->sb->ids == NULL ||
            s->sb->born == NULL || s->sb->props == NULL ||
            s->sb->groups == NULL || s->sb->due == NULL ||
            s->sb->msgp == NULL || s->sb->msgs == NULL) {
            gb_sendbuf_free(s->sb);
            free(s);
            return NULL;
        }
    }
    return s;
}

void gb_slot_free(gb_slot_t *s)
{
    if (s == NULL)
        return;
    gb_call_close(s);
    gb_ack_forget(s);
    free(s->ids);
    free(s->handles);
    gb_sendbuf_free(s->sb);
    free(s);
}

void gb_slot_start(gb_slot_t *s)
{
    if (atomic_load(&s->w->run->phase) == GB_PHASE_DRAIN)
        return;
    if (s->w->run->opts->mode == GB_MODE_SEND)
        gb_send_start(s);
    else
        gb_recv_start(s);
}

void gb_slot_on_event(gb_slot_t *s, bool ok)
{
    switch (s->state) {
    case GB_SEND_WAIT:
        gb_send_done(s, ok);
        break;
    case GB_RECV_FIRST:
    case GB_RECV_MSG:
        gb_recv_on_message(s, ok);
        break;
    case GB_RECV_STATUS:
        gb_recv_on_status(s, ok);
        break;
    case GB_ACK_WAIT:
        gb_ack_done(s, ok);
        break;
    case GB_END_WAIT:
        gb_end_done(s, ok);
        break;
    case GB_IDLE:
        break;
    }
}

void gb_slot_cancel(gb_slot_t *s)
{
    if (s->call != NULL)
        grpc_call_cancel(s->call, NULL);
}
