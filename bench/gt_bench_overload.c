/* gt_bench_overload: the load generator of scripts/bench-overload (issue 8,
 * section 4), on the grpc C core so that the client takes little of the
 * machine's CPU next to the server it measures.
 *
 * It runs, for --duration seconds:
 *   - --senders S connections (one channel each, one SendMessage in flight
 *     per connection) sending pre-serialized requests of --batch messages
 *     with bodies of --min-body..--max-body bytes (a few variants, packed
 *     once: each send only references the packed slice).  A send answered
 *     with anything but OK backs off --backoff-ms before the next;
 *   - unless --no-control, a control client on its own connection and
 *     thread: a Telemetry stream (simple consumer Settings), then small
 *     send + receive (batch 32, 5 s long poll) + ack round trips with a
 *     10 ms pause between them, each send and receive timed.  A send not
 *     answered OK is counted as refused and followed by another send;
 *   - with --pid P, a sampler of P's VmRSS every 20 ms (and its VmHWM at
 *     the end).
 * When the window ends no new sends start; calls in flight finish (the
 * ones still running after 30 s are cancelled).  It then prints one line,
 * "gt_bench_overload: key=value ...", that scripts/bench-overload.mjs
 * parses: sends ok / refused (TOO_MANY_REQUESTS) / other (by code), the
 * senders' p50, the control client's send and receive p50/p90/p99/max,
 * the peak RSS and the client's own CPU seconds (getrusage).
 *
 * Threads: --threads sender threads, each owning a completion queue and
 * its senders; the control thread with its own (pluck) queue; the main
 * thread samples memory and ends the run.  Sender counters are per
 * thread, merged after the join. */
#include <getopt.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include "gt_bench.h"

#define GO_MS_PREFIX "/apache.rocketmq.v2.MessagingService/"
#define GO_SEND_TIMEOUT_MS 60000
#define GO_CTL_TIMEOUT_MS 30000
#define GO_LONG_POLL_MS 5000
#define GO_CTL_PAUSE_MS 10
#define GO_DRAIN_MS 30000 /* then cancel what is still in flight */
#define GO_VARIANTS 8

typedef struct go_opts {
    const char *target;
    int senders, batch, threads;
    int64_t min_body, max_body;
    double duration_s;
    int backoff_ms;
    const char *topic, *ctl_topic, *ctl_group;
    bool control;
    int pid;
} go_opts_t;

typedef enum go_state { GO_IDLE = 0, GO_WAIT, GO_BACKOFF } go_state_t;

typedef struct go_sender {
    grpc_channel *ch;
    void *m_send;
    grpc_metadata md[3];
    char client_id[96];
    go_state_t state;
    grpc_call *call;
    grpc_byte_buffer *out, *in;
    grpc_metadata_array md_in, trail;
    grpc_status_code status;
    grpc_slice details;
    uint64_t t_start, resume_ns;
    int next_variant;
} go_sender_t;

typedef struct go_counts {
    uint64_t ok, refused, other;
    gb_errs_t other_codes;
    gb_hist_t lat;
} go_counts_t;

typedef struct go_thread {
    grpc_completion_queue *cq;
    go_sender_t *s;
    int n;
    int inflight;
    go_counts_t counts;
    pthread_t thread;
} go_thread_t;

typedef struct go_ctl_result {
    uint64_t n, refused, recv_failed, received;
    gb_hist_t send, recv;
    gb_errs_t fail_codes; /* control sends not OK, by code (as other_codes) */
} go_ctl_result_t;

static const go_opts_t *go_o;
static grpc_slice go_variants[GO_VARIANTS];
static int go_n_variants;
static _Atomic bool go_stopping;
static _Atomic bool go_cancel;
static char go_host[64];

static void go_usage(FILE *out)
{
    fprintf(out,
        "usage: gt_bench_overload --target HOST:PORT [options]\n"
        "  --senders S        large-send connections (default 200; 0: none)\n"
        "  --batch B          messages per send (default 1)\n"
        "  --min-body N       smallest body, bytes (default 1 MiB)\n"
        "  --max-body N       largest body, bytes (default 4 MiB)\n"
        "  --duration SECS    window (default 15)\n"
        "  --threads T        sender threads (default 1)\n"
        "  --backoff-ms MS    pause after a refused send (default 20)\n"
        "  --topic NAME       senders' topic (default Load)\n"
        "  --control-topic T  control client's topic (default Control)\n"
        "  --control-group G  control client's group (default ControlGroup)\n"
        "  --no-control       no control client\n"
        "  --pid P            sample P's resident memory every 20 ms\n");
}

static int go_parse(int argc, char **argv, go_opts_t *o)
{
    static const struct option lo[] = {
        {"target", 1, NULL, 't'},       {"senders", 1, NULL, 's'},
        {"batch", 1, NULL, 'b'},        {"min-body", 1, NULL, 'm'},
        {"max-body", 1, NULL, 'M'},     {"duration", 1, NULL, 'd'},
        {"threads", 1, NULL, 'T'},      {"backoff-ms", 1, NULL, 'B'},
        {"topic", 1, NULL, 'o'},        {"control-topic", 1, NULL, 'C'},
        {"control-group", 1, NULL, 'G'}, {"no-control", 0, NULL, 'n'},
        {"pid", 1, NULL, 'p'},          {"help", 0, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    int ch;

    *o = (go_opts_t){.senders = 200, .batch = 1, .threads = 1,
                     .min_body = 1 << 20, .max_body = 4 << 20,
                     .duration_s = 15, .backoff_ms = 20, .topic = "Load",
                     .ctl_topic = "Control", .ctl_group = "ControlGroup",
                     .control = true};
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 't': o->target = optarg; break;
        case 's': o->senders = atoi(optarg); break;
        case 'b': o->batch = atoi(optarg); break;
        case 'm': o->min_body = strtoll(optarg, NULL, 10); break;
        case 'M': o->max_body = strtoll(optarg, NULL, 10); break;
        case 'd': o->duration_s = atof(optarg); break;
        case 'T': o->threads = atoi(optarg); break;
        case 'B': o->backoff_ms = atoi(optarg); break;
        case 'o': o->topic = optarg; break;
        case 'C': o->ctl_topic = optarg; break;
        case 'G': o->ctl_group = optarg; break;
        case 'n': o->control = false; break;
        case 'p': o->pid = atoi(optarg); break;
        case 'h': go_usage(stdout); exit(0);
        default: return 2;
        }
    }
    if (optind != argc || o->target == NULL || o->senders < 0 ||
        o->batch < 1 || o->min_body < 1 || o->max_body < o->min_body ||
        o->threads < 1 || o->duration_s <= 0 || o->backoff_ms < 0)
        return 2;
    if (o->threads > o->senders && o->senders > 0)
        o->threads = o->senders;
    return 0;
}

/* ------------------------------------------------------------ requests */

/* Fills `m` (and its properties, owned by the caller) as the SDKs send a
 * NORMAL message of `body`. */
static void go_msg_fill(Apache__Rocketmq__V2__Message *m,
                        Apache__Rocketmq__V2__SystemProperties *p,
                        Google__Protobuf__Timestamp *born,
                        Apache__Rocketmq__V2__Resource *topic, char *id,
                        uint8_t *body, size_t len)
{
    uint64_t now = gb_now_real_ns();
    static _Atomic uint64_t seq;

    apache__rocketmq__v2__message__init(m);
    apache__rocketmq__v2__system_properties__init(p);
    google__protobuf__timestamp__init(born);
    snprintf(id, 40, "01%014" PRIX64 "%016" PRIX64,
             (uint64_t)((uint64_t)getpid() & 0xffffffffffffffULL),
             (uint64_t)(atomic_fetch_add(&seq, 1) ^ now));
    born->seconds = (int64_t)(now / 1000000000ULL);
    born->nanos = (int32_t)(now % 1000000000ULL);
    p->message_id = id;
    p->message_type = APACHE__ROCKETMQ__V2__MESSAGE_TYPE__NORMAL;
    p->body_encoding = APACHE__ROCKETMQ__V2__ENCODING__IDENTITY;
    p->born_timestamp = born;
    p->born_host = go_host;
    m->topic = topic;
    m->system_properties = p;
    m->body.data = body;
    m->body.len = len;
}

/* Packs the load's request variants once (bodies spread over the range as
 * the Node generator spreads them). */
static int go_variants_make(const go_opts_t *o)
{
    size_t b = (size_t)o->batch;
    Apache__Rocketmq__V2__Message *msgs = calloc(b, sizeof(*msgs));
    Apache__Rocketmq__V2__Message **mp = calloc(b, sizeof(*mp));
    Apache__Rocketmq__V2__SystemProperties *props = calloc(b, sizeof(*props));
    Google__Protobuf__Timestamp *born = calloc(b, sizeof(*born));
    char (*ids)[40] = calloc(b, sizeof(*ids));
    uint8_t *body = malloc((size_t)o->max_body);
    Apache__Rocketmq__V2__Resource topic = APACHE__ROCKETMQ__V2__RESOURCE__INIT;
    int rc = -1;

    if (!msgs || !mp || !props || !born || !ids || !body)
        goto out;
    topic.name = (char *)o->topic;
    go_n_variants = o->senders < GO_VARIANTS ? o->senders : GO_VARIANTS;
    for (int v = 0; v < go_n_variants; v++) {
        Apache__Rocketmq__V2__SendMessageRequest req =
            APACHE__ROCKETMQ__V2__SEND_MESSAGE_REQUEST__INIT;
        size_t n;

        for (size_t i = 0; i < b; i++) {
            int64_t span = o->max_body - o->min_body + 1;
            size_t len = (size_t)(o->min_body +
                                  (int64_t)(((uint64_t)v * b + i) * 7919 %
                                            (uint64_t)span));

            memset(body, 'a' + (int)(i % 26), len);
            go_msg_fill(&msgs[i], &props[i], &born[i], &topic, ids[i], body,
                        len);
            mp[i] = &msgs[i];
        }
        req.n_messages = b;
        req.messages = mp;
        n = protobuf_c_message_get_packed_size(&req.base);
        go_variants[v] = grpc_slice_malloc(n);
        protobuf_c_message_pack(&req.base,
                                GRPC_SLICE_START_PTR(go_variants[v]));
    }
    rc = 0;
out:
    free(msgs);
    free(mp);
    free(props);
    free(born);
    free(ids);
    free(body);
    return rc;
}

static grpc_channel *go_channel(int index)
{
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_arg args[4];
    grpc_channel_args ca;
    grpc_channel *ch;

    /* Its own TCP connection: a local subchannel pool and a distinct
     * argument per channel. */
    args[0] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL,
                         {.integer = 1}};
    args[1] = (grpc_arg){GRPC_ARG_INTEGER, "gantry.bench.connection",
                         {.integer = index}};
    args[2] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_ENABLE_RETRIES,
                         {.integer = 0}};
    args[3] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                         {.integer = -1}};
    ca.num_args = 4;
    ca.args = args;
    ch = grpc_channel_create(go_o->target, creds, &ca);
    grpc_channel_credentials_release(creds);
    return ch;
}

static void go_md_fill(grpc_metadata md[3], char *client_id, size_t cap,
                       int index)
{
    snprintf(client_id, cap, "gt_bench_overload@%s@%d@%d", go_host,
             (int)getpid(), index);
    memset(md, 0, 3 * sizeof(*md));
    md[0].key = grpc_slice_from_static_string("x-mq-client-id");
    md[0].value = grpc_slice_from_static_string(client_id);
    md[1].key = grpc_slice_from_static_string("x-mq-language");
    md[1].value = grpc_slice_from_static_string("CPP");
    md[2].key = grpc_slice_from_static_string("x-mq-protocol");
    md[2].value = grpc_slice_from_static_string("v2");
}

static gpr_timespec go_deadline(int64_t ms)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_millis(ms, GPR_TIMESPAN));
}

/* Returns the RocketMQ code of the first entry (or the status) of a
 * SendMessageResponse; GB_ERR_DECODE if it does not parse. */
static int32_t go_send_code(grpc_byte_buffer *bb)
{
    Apache__Rocketmq__V2__SendMessageResponse *r =
        (Apache__Rocketmq__V2__SendMessageResponse *)gb_unpack(
            &apache__rocketmq__v2__send_message_response__descriptor, bb);
    int32_t code;

    if (r == NULL)
        return GB_ERR_DECODE;
    if (r->n_entries > 0 && r->entries[0]->status != NULL)
        code = (int32_t)r->entries[0]->status->code;
    else
        code = r->status != NULL ? (int32_t)r->status->code : 0;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return code;
}

/* -------------------------------------------------------------- senders */

static void go_send_start(go_thread_t *t, go_sender_t *s)
{
    grpc_op ops[6];

    memset(ops, 0, sizeof(ops));
    s->out = grpc_raw_byte_buffer_create(&go_variants[s->next_variant], 1);
    s->next_variant = (s->next_variant + 1) % go_n_variants;
    s->call = grpc_channel_create_registered_call(
        s->ch, NULL, GRPC_PROPAGATE_DEFAULTS, t->cq, s->m_send,
        go_deadline(GO_SEND_TIMEOUT_MS), NULL);
    grpc_metadata_array_init(&s->md_in);
    grpc_metadata_array_init(&s->trail);
    s->details = grpc_empty_slice();
    s->in = NULL;
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = 3;
    ops[0].data.send_initial_metadata.metadata = s->md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = s->out;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->md_in;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &s->in;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &s->trail;
    ops[5].data.recv_status_on_client.status = &s->status;
    ops[5].data.recv_status_on_client.status_details = &s->details;
    s->t_start = gb_now_mono_ns();
    s->state = GO_WAIT;
    t->inflight++;
    if (grpc_call_start_batch(s->call, ops, 6, s, NULL) != GRPC_CALL_OK) {
        fprintf(stderr, "gt_bench_overload: cannot start a send\n");
        exit(1);
    }
}

static void go_send_done(go_thread_t *t, go_sender_t *s, bool ok)
{
    go_counts_t *c = &t->counts;
    int32_t code;

    gb_hist_add(&c->lat, gb_now_mono_ns() - s->t_start);
    if (!ok)
        code = -(int32_t)GRPC_STATUS_UNKNOWN;
    else if (s->status != GRPC_STATUS_OK)
        code = -(int32_t)s->status;
    else
        code = go_send_code(s->in);
    if (code == APACHE__ROCKETMQ__V2__CODE__OK) {
        c->ok++;
    } else if (code == APACHE__ROCKETMQ__V2__CODE__TOO_MANY_REQUESTS) {
        c->refused++;
    } else {
        c->other++;
        gb_errs_add(&c->other_codes, code, 1);
    }
    grpc_call_unref(s->call);
    s->call = NULL;
    grpc_byte_buffer_destroy(s->out);
    if (s->in != NULL)
        grpc_byte_buffer_destroy(s->in);
    s->out = s->in = NULL;
    grpc_metadata_array_destroy(&s->md_in);
    grpc_metadata_array_destroy(&s->trail);
    grpc_slice_unref(s->details);
    t->inflight--;
    s->state = GO_IDLE;
    if (code != APACHE__ROCKETMQ__V2__CODE__OK && go_o->backoff_ms > 0) {
        s->state = GO_BACKOFF;
        s->resume_ns = gb_now_mono_ns() +
                       (uint64_t)go_o->backoff_ms * 1000000ULL;
    }
}

static void *go_sender_main(void *arg)
{
    go_thread_t *t = arg;
    bool cancelled = false;
    uint64_t stop_ns = 0;

    for (;;) {
        bool stopping = atomic_load(&go_stopping);
        uint64_t now = gb_now_mono_ns(), wake = now + 50000000ULL;
        grpc_event ev;

        for (int i = 0; i < t->n; i++) {
            go_sender_t *s = &t->s[i];

            if (s->state == GO_BACKOFF && s->resume_ns <= now)
                s->state = GO_IDLE;
            if (s->state == GO_IDLE && !stopping)
                go_send_start(t, s);
            else if (s->state == GO_BACKOFF && s->resume_ns < wake)
                wake = s->resume_ns;
        }
        if (stopping && t->inflight == 0)
            break;
        if (stopping && stop_ns == 0)
            stop_ns = now;
        if (stopping && !cancelled && atomic_load(&go_cancel)) {
            for (int i = 0; i < t->n; i++)
                if (t->s[i].call != NULL)
                    grpc_call_cancel(t->s[i].call, NULL);
            cancelled = true;
        }
        ev = grpc_completion_queue_next(
            t->cq, go_deadline((int64_t)((wake - now) / 1000000ULL) + 1),
            NULL);
        if (ev.type == GRPC_OP_COMPLETE)
            go_send_done(t, ev.tag, ev.success);
        /* Take whatever else is ready before looking at the senders. */
        while (ev.type == GRPC_OP_COMPLETE) {
            ev = grpc_completion_queue_next(
                t->cq, gpr_inf_past(GPR_CLOCK_MONOTONIC), NULL);
            if (ev.type == GRPC_OP_COMPLETE)
                go_send_done(t, ev.tag, ev.success);
        }
    }
    return NULL;
}

/* -------------------------------------------------------------- control */

typedef struct go_ctl {
    grpc_channel *ch;
    grpc_completion_queue *cq;
    grpc_metadata md[3];
    char client_id[96];
    grpc_call *tel;
    grpc_byte_buffer *tel_out, *tel_in;
    grpc_metadata_array tel_md;
    go_ctl_result_t res;
    pthread_t thread;
    char **ids, **handles;
    size_t n_got, cap;
} go_ctl_t;

/* Runs one batch on the control queue and waits for it. */
static bool go_ctl_batch(go_ctl_t *c, grpc_call *call, grpc_op *ops, size_t n)
{
    grpc_event ev;

    if (grpc_call_start_batch(call, ops, n, ops, NULL) != GRPC_CALL_OK)
        return false;
    ev = grpc_completion_queue_pluck(c->cq, ops,
                                     gpr_inf_future(GPR_CLOCK_REALTIME),
                                     NULL);
    return ev.type == GRPC_OP_COMPLETE && ev.success;
}

static grpc_call *go_ctl_call(go_ctl_t *c, const char *method, int64_t ms)
{
    char path[128];

    snprintf(path, sizeof(path), GO_MS_PREFIX "%s", method);
    return grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS,
                                    c->cq, grpc_slice_from_copied_string(path),
                                    NULL, go_deadline(ms), NULL);
}

/* A unary call: `out` (consumed) in, the response (owned by the caller,
 * NULL on failure, with its gRPC status in *st when st is set) out. */
static grpc_byte_buffer *go_ctl_unary(go_ctl_t *c, const char *method,
                                      grpc_byte_buffer *out,
                                      grpc_status_code *st)
{
    grpc_call *call = go_ctl_call(c, method, GO_CTL_TIMEOUT_MS);
    grpc_byte_buffer *in = NULL;
    grpc_metadata_array md, trail;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6];
    bool ok;

    grpc_metadata_array_init(&md);
    grpc_metadata_array_init(&trail);
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = 3;
    ops[0].data.send_initial_metadata.metadata = c->md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = out;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &in;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trail;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;
    ok = go_ctl_batch(c, call, ops, 6) && status == GRPC_STATUS_OK;
    if (st != NULL)
        *st = ok ? GRPC_STATUS_OK
                 : status == GRPC_STATUS_OK ? GRPC_STATUS_UNKNOWN : status;
    grpc_byte_buffer_destroy(out);
    grpc_metadata_array_destroy(&md);
    grpc_metadata_array_destroy(&trail);
    grpc_slice_unref(details);
    grpc_call_unref(call);
    if (!ok && in != NULL) {
        grpc_byte_buffer_destroy(in);
        in = NULL;
    }
    return in;
}

static void go_ctl_keep(go_ctl_t *c, const char *id, const char *h)
{
    if (c->n_got == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 32;
        char **ids = realloc(c->ids, cap * sizeof(*ids));
        char **hs = ids ? realloc(c->handles, cap * sizeof(*hs)) : NULL;

        if (ids != NULL)
            c->ids = ids;
        if (hs == NULL)
            return;
        c->handles = hs;
        c->cap = cap;
    }
    c->ids[c->n_got] = strdup(id);
    c->handles[c->n_got] = strdup(h);
    c->n_got++;
}

/* One ReceiveMessage (server stream) to its end; keeps the handles.
 * False if the call failed. */
static bool go_ctl_receive(go_ctl_t *c)
{
    const go_opts_t *o = go_o;
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
    grpc_call *call;
    grpc_byte_buffer *out, *in = NULL;
    grpc_metadata_array md, trail;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[5];
    bool ok;

    group.name = (char *)o->ctl_group;
    topic.name = (char *)o->ctl_topic;
    mq.topic = &topic;
    mq.permission = APACHE__ROCKETMQ__V2__PERMISSION__READ_WRITE;
    filter.type = APACHE__ROCKETMQ__V2__FILTER_TYPE__TAG;
    filter.expression = "*";
    invis.seconds = 30;
    poll.seconds = GO_LONG_POLL_MS / 1000;
    req.group = &group;
    req.message_queue = &mq;
    req.filter_expression = &filter;
    req.batch_size = 32;
    req.invisible_duration_present_case =
        APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_REQUEST__INVISIBLE_DURATION_PRESENT_INVISIBLE_DURATION;
    req.invisible_duration = &invis;
    req.long_polling_timeout_present_case =
        APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_REQUEST__LONG_POLLING_TIMEOUT_PRESENT_LONG_POLLING_TIMEOUT;
    req.long_polling_timeout = &poll;
    out = gb_pack(&req.base);
    call = go_ctl_call(c, "ReceiveMessage", GO_CTL_TIMEOUT_MS);
    grpc_metadata_array_init(&md);
    grpc_metadata_array_init(&trail);
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = 3;
    ops[0].data.send_initial_metadata.metadata = c->md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = out;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &in;
    ok = go_ctl_batch(c, call, ops, 5);
    while (ok && in != NULL) {
        Apache__Rocketmq__V2__ReceiveMessageResponse *r =
            (Apache__Rocketmq__V2__ReceiveMessageResponse *)gb_unpack(
                &apache__rocketmq__v2__receive_message_response__descriptor,
                in);

        if (r != NULL &&
            r->content_case ==
                APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__CONTENT_MESSAGE &&
            r->message->system_properties != NULL &&
            r->message->system_properties->receipt_handle_present_case) {
            const Apache__Rocketmq__V2__SystemProperties *p =
                r->message->system_properties;

            go_ctl_keep(c, p->message_id ? p->message_id : "",
                        p->receipt_handle);
            c->res.received++;
        }
        if (r != NULL)
            protobuf_c_message_free_unpacked(&r->base, NULL);
        grpc_byte_buffer_destroy(in);
        in = NULL;
        memset(ops, 0, sizeof(ops));
        ops[0].op = GRPC_OP_RECV_MESSAGE;
        ops[0].data.recv_message.recv_message = &in;
        ok = go_ctl_batch(c, call, ops, 1);
    }
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &trail;
    ops[0].data.recv_status_on_client.status = &status;
    ops[0].data.recv_status_on_client.status_details = &details;
    ok = go_ctl_batch(c, call, ops, 1) && status == GRPC_STATUS_OK;
    if (in != NULL)
        grpc_byte_buffer_destroy(in);
    grpc_byte_buffer_destroy(out);
    grpc_metadata_array_destroy(&md);
    grpc_metadata_array_destroy(&trail);
    grpc_slice_unref(details);
    grpc_call_unref(call);
    return ok;
}

static void go_ctl_ack(go_ctl_t *c)
{
    Apache__Rocketmq__V2__AckMessageRequest req =
        APACHE__ROCKETMQ__V2__ACK_MESSAGE_REQUEST__INIT;
    Apache__Rocketmq__V2__Resource group = APACHE__ROCKETMQ__V2__RESOURCE__INIT;
    Apache__Rocketmq__V2__Resource topic = APACHE__ROCKETMQ__V2__RESOURCE__INIT;
    Apache__Rocketmq__V2__AckMessageEntry *ents = calloc(c->n_got,
                                                         sizeof(*ents));
    Apache__Rocketmq__V2__AckMessageEntry **entp = calloc(c->n_got,
                                                          sizeof(*entp));
    grpc_byte_buffer *in;

    if (ents != NULL && entp != NULL) {
        group.name = (char *)go_o->ctl_group;
        topic.name = (char *)go_o->ctl_topic;
        req.group = &group;
        req.topic = &topic;
        for (size_t i = 0; i < c->n_got; i++) {
            apache__rocketmq__v2__ack_message_entry__init(&ents[i]);
            ents[i].message_id = c->ids[i];
            ents[i].receipt_handle = c->handles[i];
            entp[i] = &ents[i];
        }
        req.n_entries = c->n_got;
        req.entries = entp;
        in = go_ctl_unary(c, "AckMessage", gb_pack(&req.base), NULL);
        if (in != NULL)
            grpc_byte_buffer_destroy(in);
    }
    free(ents);
    free(entp);
    for (size_t i = 0; i < c->n_got; i++) {
        free(c->ids[i]);
        free(c->handles[i]);
    }
    c->n_got = 0;
}

/* The simple consumer's Telemetry stream: Settings out, the reply in. */
static void go_ctl_telemetry(go_ctl_t *c)
{
    Apache__Rocketmq__V2__TelemetryCommand cmd =
        APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__INIT;
    Apache__Rocketmq__V2__Settings st = APACHE__ROCKETMQ__V2__SETTINGS__INIT;
    Apache__Rocketmq__V2__Subscription sub =
        APACHE__ROCKETMQ__V2__SUBSCRIPTION__INIT;
    Apache__Rocketmq__V2__SubscriptionEntry ent =
        APACHE__ROCKETMQ__V2__SUBSCRIPTION_ENTRY__INIT;
    Apache__Rocketmq__V2__SubscriptionEntry *ents[1] = {&ent};
    Apache__Rocketmq__V2__FilterExpression filter =
        APACHE__ROCKETMQ__V2__FILTER_EXPRESSION__INIT;
    Apache__Rocketmq__V2__Resource topic = APACHE__ROCKETMQ__V2__RESOURCE__INIT;
    Apache__Rocketmq__V2__Resource group = APACHE__ROCKETMQ__V2__RESOURCE__INIT;
    Google__Protobuf__Duration timeout = GOOGLE__PROTOBUF__DURATION__INIT;
    Google__Protobuf__Duration poll = GOOGLE__PROTOBUF__DURATION__INIT;
    grpc_op ops[4];

    topic.name = (char *)go_o->ctl_topic;
    group.name = (char *)go_o->ctl_group;
    filter.type = APACHE__ROCKETMQ__V2__FILTER_TYPE__TAG;
    filter.expression = "*";
    ent.topic = &topic;
    ent.expression = &filter;
    poll.seconds = 20;
    sub.group_present_case =
        APACHE__ROCKETMQ__V2__SUBSCRIPTION__GROUP_PRESENT_GROUP;
    sub.group = &group;
    sub.n_subscriptions = 1;
    sub.subscriptions = ents;
    sub.long_polling_timeout_present_case =
        APACHE__ROCKETMQ__V2__SUBSCRIPTION__LONG_POLLING_TIMEOUT_PRESENT_LONG_POLLING_TIMEOUT;
    sub.long_polling_timeout = &poll;
    timeout.seconds = 3;
    st.client_type_present_case =
        APACHE__ROCKETMQ__V2__SETTINGS__CLIENT_TYPE_PRESENT_CLIENT_TYPE;
    st.client_type = APACHE__ROCKETMQ__V2__CLIENT_TYPE__SIMPLE_CONSUMER;
    st.request_timeout_present_case =
        APACHE__ROCKETMQ__V2__SETTINGS__REQUEST_TIMEOUT_PRESENT_REQUEST_TIMEOUT;
    st.request_timeout = &timeout;
    st.pub_sub_case = APACHE__ROCKETMQ__V2__SETTINGS__PUB_SUB_SUBSCRIPTION;
    st.subscription = &sub;
    cmd.command_case = APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__COMMAND_SETTINGS;
    cmd.settings = &st;
    c->tel = grpc_channel_create_call(
        c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq,
        grpc_slice_from_static_string(GO_MS_PREFIX "Telemetry"), NULL,
        gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    c->tel_out = gb_pack(&cmd.base);
    grpc_metadata_array_init(&c->tel_md);
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = 3;
    ops[0].data.send_initial_metadata.metadata = c->md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = c->tel_out;
    ops[2].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[2].data.recv_initial_metadata.recv_initial_metadata = &c->tel_md;
    ops[3].op = GRPC_OP_RECV_MESSAGE;
    ops[3].data.recv_message.recv_message = &c->tel_in;
    if (!go_ctl_batch(c, c->tel, ops, 4))
        fprintf(stderr, "gt_bench_overload: warning: no Settings reply\n");
}

static void go_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

static void *go_ctl_main(void *arg)
{
    go_ctl_t *c = arg;

    while (!atomic_load(&go_stopping)) {
        Apache__Rocketmq__V2__SendMessageRequest req =
            APACHE__ROCKETMQ__V2__SEND_MESSAGE_REQUEST__INIT;
        Apache__Rocketmq__V2__Message msg;
        Apache__Rocketmq__V2__Message *mp[1] = {&msg};
        Apache__Rocketmq__V2__SystemProperties props;
        Google__Protobuf__Timestamp born;
        Apache__Rocketmq__V2__Resource topic =
            APACHE__ROCKETMQ__V2__RESOURCE__INIT;
        char id[40];
        uint8_t body[4] = {'p', 'i', 'n', 'g'};
        grpc_byte_buffer *in;
        int32_t code = GB_ERR_DECODE;
        grpc_status_code st;
        uint64_t t0;
        bool ok;

        topic.name = (char *)go_o->ctl_topic;
        go_msg_fill(&msg, &props, &born, &topic, id, body, sizeof(body));
        req.n_messages = 1;
        req.messages = mp;
        t0 = gb_now_mono_ns();
        in = go_ctl_unary(c, "SendMessage", gb_pack(&req.base), &st);
        gb_hist_add(&c->res.send, gb_now_mono_ns() - t0);
        c->res.n++;
        if (in != NULL) {
            code = go_send_code(in);
            grpc_byte_buffer_destroy(in);
        } else {
            code = -(int32_t)st;
        }
        if (code != APACHE__ROCKETMQ__V2__CODE__OK) {
            c->res.refused++;
            gb_errs_add(&c->res.fail_codes, code, 1);
            continue;
        }
        t0 = gb_now_mono_ns();
        ok = go_ctl_receive(c);
        gb_hist_add(&c->res.recv, gb_now_mono_ns() - t0);
        if (!ok)
            c->res.recv_failed++;
        if (c->n_got > 0)
            go_ctl_ack(c);
        go_sleep_ms(GO_CTL_PAUSE_MS);
    }
    return NULL;
}

static void go_ctl_close(go_ctl_t *c)
{
    if (c->tel != NULL) {
        grpc_call_cancel(c->tel, NULL);
        grpc_call_unref(c->tel);
    }
    if (c->tel_out != NULL)
        grpc_byte_buffer_destroy(c->tel_out);
    if (c->tel_in != NULL)
        grpc_byte_buffer_destroy(c->tel_in);
    grpc_metadata_array_destroy(&c->tel_md);
    grpc_channel_destroy(c->ch);
    grpc_completion_queue_shutdown(c->cq);
    while (grpc_completion_queue_pluck(c->cq, NULL,
                                       gpr_inf_future(GPR_CLOCK_REALTIME),
                                       NULL).type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(c->cq);
    free(c->ids);
    free(c->handles);
}

/* ---------------------------------------------------------------- main */

/* VmRSS and VmHWM of `pid` in bytes (0 when gone). */
static void go_mem(int pid, int64_t *rss, int64_t *hwm)
{
    char path[64], line[256];
    FILE *f;

    *rss = *hwm = 0;
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    if ((f = fopen(path, "r")) == NULL)
        return;
    while (fgets(line, sizeof(line), f) != NULL) {
        long long kb;

        if (sscanf(line, "VmRSS: %lld kB", &kb) == 1)
            *rss = kb * 1024;
        else if (sscanf(line, "VmHWM: %lld kB", &kb) == 1)
            *hwm = kb * 1024;
    }
    fclose(f);
}

static double go_ms(const gb_hist_t *h, double q)
{
    return h->n == 0 ? -1 : (double)gb_hist_quantile(h, q) / 1e6;
}

int main(int argc, char **argv)
{
    go_opts_t o;
    go_thread_t *ts;
    go_ctl_t ctl;
    go_counts_t all;
    int64_t peak = 0, rss, hwm;
    uint64_t t0, end_ns, cancel_ns;
    struct rusage ru;
    char codes[512];

    if (go_parse(argc, argv, &o) != 0) {
        go_usage(stderr);
        return 2;
    }
    go_o = &o;
    if (gethostname(go_host, sizeof(go_host) - 1) != 0)
        snprintf(go_host, sizeof(go_host), "localhost");
    grpc_init();
    if (o.senders > 0 && go_variants_make(&o) != 0) {
        fprintf(stderr, "gt_bench_overload: out of memory\n");
        return 1;
    }
    ts = calloc((size_t)o.threads, sizeof(*ts));
    memset(&ctl, 0, sizeof(ctl));
    memset(&all, 0, sizeof(all));
    if (ts == NULL)
        return 1;
    for (int t = 0; t < o.threads; t++) {
        ts[t].cq = grpc_completion_queue_create_for_next(NULL);
        ts[t].s = calloc((size_t)o.senders / (size_t)o.threads + 1,
                         sizeof(go_sender_t));
        if (ts[t].s == NULL)
            return 1;
    }
    for (int i = 0; i < o.senders; i++) {
        go_thread_t *t = &ts[i % o.threads];
        go_sender_t *s = &t->s[t->n++];

        s->ch = go_channel(i);
        s->m_send = grpc_channel_register_call(s->ch,
                                               GO_MS_PREFIX "SendMessage",
                                               NULL, NULL);
        go_md_fill(s->md, s->client_id, sizeof(s->client_id), i);
        s->next_variant = i % go_n_variants;
    }
    if (o.control) {
        ctl.ch = go_channel(o.senders);
        ctl.cq = grpc_completion_queue_create_for_pluck(NULL);
        go_md_fill(ctl.md, ctl.client_id, sizeof(ctl.client_id), o.senders);
        go_ctl_telemetry(&ctl);
    }
    t0 = gb_now_mono_ns();
    end_ns = t0 + (uint64_t)(o.duration_s * 1e9);
    for (int t = 0; t < o.threads && o.senders > 0; t++)
        pthread_create(&ts[t].thread, NULL, go_sender_main, &ts[t]);
    if (o.control)
        pthread_create(&ctl.thread, NULL, go_ctl_main, &ctl);
    while (gb_now_mono_ns() < end_ns) {
        if (o.pid > 0) {
            go_mem(o.pid, &rss, &hwm);
            if (rss > peak)
                peak = rss;
        }
        go_sleep_ms(20);
    }
    atomic_store(&go_stopping, true);
    cancel_ns = gb_now_mono_ns() + (uint64_t)GO_DRAIN_MS * 1000000ULL;
    /* Keep sampling while the calls in flight finish. */
    for (;;) {
        bool busy = false;

        for (int t = 0; t < o.threads && o.senders > 0; t++)
            busy |= pthread_tryjoin_np(ts[t].thread, NULL) != 0;
        if (!busy)
            break;
        if (gb_now_mono_ns() > cancel_ns)
            atomic_store(&go_cancel, true);
        if (o.pid > 0) {
            go_mem(o.pid, &rss, &hwm);
            if (rss > peak)
                peak = rss;
        }
        go_sleep_ms(20);
    }
    if (o.control)
        pthread_join(ctl.thread, NULL);
    hwm = 0;
    if (o.pid > 0)
        go_mem(o.pid, &rss, &hwm);
    for (int t = 0; t < o.threads; t++) {
        all.ok += ts[t].counts.ok;
        all.refused += ts[t].counts.refused;
        all.other += ts[t].counts.other;
        gb_errs_merge(&all.other_codes, &ts[t].counts.other_codes);
        gb_hist_merge(&all.lat, &ts[t].counts.lat);
    }
    getrusage(RUSAGE_SELF, &ru);
    gb_errs_format(&all.other_codes, codes, sizeof(codes));
    printf("gt_bench_overload: secs=%.2f ok=%" PRIu64 " refused=%" PRIu64
           " other=%" PRIu64 " other_codes=%s send_p50_ms=%.1f"
           " peak_rss=%" PRId64 " peak_hwm=%" PRId64 " cpu_s=%.2f",
           (double)(gb_now_mono_ns() - t0) / 1e9, all.ok, all.refused,
           all.other, codes, go_ms(&all.lat, 0.5), peak, hwm,
           (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
               (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
    if (o.control) {
        gb_errs_format(&ctl.res.fail_codes, codes, sizeof(codes));
        printf(" ctl_n=%" PRIu64 " ctl_refused=%" PRIu64 " ctl_fail_codes=%s"
               " ctl_recv_failed=%" PRIu64 " ctl_received=%" PRIu64
               " ctl_send_p50_ms=%.1f ctl_send_p90_ms=%.1f"
               " ctl_send_p99_ms=%.1f ctl_send_max_ms=%.1f"
               " ctl_recv_p50_ms=%.1f ctl_recv_p90_ms=%.1f"
               " ctl_recv_p99_ms=%.1f ctl_recv_max_ms=%.1f",
               ctl.res.n, ctl.res.refused, codes, ctl.res.recv_failed,
               ctl.res.received, go_ms(&ctl.res.send, 0.5),
               go_ms(&ctl.res.send, 0.9), go_ms(&ctl.res.send, 0.99),
               go_ms(&ctl.res.send, 1.0), go_ms(&ctl.res.recv, 0.5),
               go_ms(&ctl.res.recv, 0.9), go_ms(&ctl.res.recv, 0.99),
               go_ms(&ctl.res.recv, 1.0));
    }
    printf("\n");
    fflush(stdout);
    if (o.control)
        go_ctl_close(&ctl);
    for (int t = 0; t < o.threads; t++) {
        for (int i = 0; i < ts[t].n; i++)
            grpc_channel_destroy(ts[t].s[i].ch);
        grpc_completion_queue_shutdown(ts[t].cq);
        while (grpc_completion_queue_next(ts[t].cq,
                                          gpr_inf_future(GPR_CLOCK_REALTIME),
                                          NULL).type != GRPC_QUEUE_SHUTDOWN)
            ;
        grpc_completion_queue_destroy(ts[t].cq);
        free(ts[t].s);
    }
    free(ts);
    for (int v = 0; v < go_n_variants; v++)
        grpc_slice_unref(go_variants[v]);
    grpc_shutdown();
    return 0;
}
