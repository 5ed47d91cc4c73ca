/* gt_bench: a load generator for apache.rocketmq.v2.MessagingService.
 *
 * It behaves like the RocketMQ 5 SDKs on the wire (x-mq-* metadata, a
 * Telemetry stream per client that sends Settings first) and then drives
 * one of two workloads on C connections x M requests in flight:
 *
 *   send   SendMessage with B messages of S bytes per request; latency is
 *          the request round trip.
 *   recv   ReceiveMessage (batch B, long poll) followed by one AckMessage
 *          per receive; latency is end to end, from the send timestamp in
 *          the first 8 body bytes (little-endian CLOCK_REALTIME ns).
 *
 * Message types for send: --fifo-groups N (FIFO, message_group g<k> round
 * robin, queue_id k mod --queues as the SDKs derive it from the group),
 * --delay-ms / --deliver-at-ms (DELAY, delivery_timestamp), --tx
 * (TRANSACTION, then one EndTransaction COMMIT per stored message; `ok`
 * counts committed send+commit pairs and latency is the pair's).  recv
 * reports, besides its rate over the window, the rate over the span from
 * the first message to the last ack (what a drain of a burst of due timers
 * measures), the lateness of messages that carry a delivery_timestamp and,
 * with --fifo-groups, how many groups it saw.
 *
 * A run is warm-up, measured window, drain; only what completes in the
 * measured window counts.  It prints one "gt_bench: key=value ..." line
 * (scripts/bench parses it).  Requests run on a few worker threads, each
 * polling its own completion queue (see gt_bench_call.c). */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include "gt_addr.h"
#include "gt_bench.h"

#define GB_MS_PREFIX "/apache.rocketmq.v2.MessagingService/"
#define GB_TEL_WAIT_MS 5000  /* for the Settings replies */
#define GB_CLOSE_WAIT_MS 2000
#define GB_DRAIN_GRACE_NS 2000000000ULL /* then cancel what is in flight */

typedef enum gb_tel_stage {
    GB_TEL_NONE = 0,
    GB_TEL_OPENING, /* Settings sent, reply awaited */
    GB_TEL_OPEN,
    GB_TEL_CLOSING,
} gb_tel_stage_t;

static void gb_usage(FILE *out)
{
    fprintf(out,
        "usage: gt_bench --target HOST:PORT [options]\n"
        "  --mode send|recv     workload (default send)\n"
        "  --conns C            connections (default 16)\n"
        "  --inflight M         requests in flight per connection (default 4)\n"
        "  --batch B            send: messages per request; recv: batch_size\n"
        "                       (default 1 for send, 32 for recv)\n"
        "  --size S             body bytes, >= 8 (default 1024)\n"
        "  --duration SECS      measured window (default 10)\n"
        "  --warmup SECS        discarded window before it (default 1)\n"
        "  --threads N          worker threads (default 2)\n"
        "  --queues N           queue ids to rotate through (default 8)\n"
        "  --long-poll-ms MS    recv: long_polling_timeout (default 5000)\n"
        "  --no-deadline-timers calls still carry their deadline, but the\n"
        "                       client arms no timer for it (thousands of\n"
        "                       parked polls: the core's cost per timer grows\n"
        "                       with their number)\n"
        "  --topic NAME         (default BenchTopic)\n"
        "  --group NAME         (default BenchGroup)\n"
        "  --fifo-groups N      send: FIFO messages, message_group g<k> round\n"
        "                       robin over N groups; recv: count groups seen\n"
        "  --delay-ms D         send: DELAY messages due now + D ms\n"
        "  --deliver-at-ms T    send: DELAY messages all due at epoch ms T\n"
        "  --topics N           send: spread requests round robin over topics\n"
        "                       <topic>0 .. <topic>N-1 (declared by the caller)\n"
        "  --tx                 send: TRANSACTION messages, each committed\n"
        "                       with EndTransaction; ok = send+commit pairs\n"
        "  --count N            stop after N messages stored (send), pairs\n"
        "                       committed (--tx) or acked (recv)\n");
}

static int gb_parse_args(int argc, char **argv, gb_opts_t *o)
{
    static const struct option lo[] = {
        {"target", 1, NULL, 't'},   {"mode", 1, NULL, 'm'},
        {"conns", 1, NULL, 'c'},    {"inflight", 1, NULL, 'i'},
        {"batch", 1, NULL, 'b'},    {"size", 1, NULL, 's'},
        {"duration", 1, NULL, 'd'}, {"warmup", 1, NULL, 'w'},
        {"threads", 1, NULL, 'T'},  {"queues", 1, NULL, 'q'},
        {"long-poll-ms", 1, NULL, 'l'}, {"count", 1, NULL, 'n'},
        {"topic", 1, NULL, 'o'},    {"group", 1, NULL, 'g'},
        {"topics", 1, NULL, 'N'},
        {"fifo-groups", 1, NULL, 'F'}, {"delay-ms", 1, NULL, 'D'},
        {"deliver-at-ms", 1, NULL, 'A'}, {"tx", 0, NULL, 'X'},
        {"no-deadline-timers", 0, NULL, 'Z'},
        {"help", 0, NULL, 'h'},     {NULL, 0, NULL, 0}};
    int ch;

    *o = (gb_opts_t){.mode = GB_MODE_SEND, .conns = 16, .inflight = 4,
                     .batch = 0, .size = 1024, .threads = 2, .queues = 8,
                     .duration_s = 10, .warmup_s = 1, .long_poll_ms = 5000,
                     .topic = "BenchTopic", .group = "BenchGroup",
                     .client_prefix = "gt_bench", .delay_ms = -1};
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 't': o->target = optarg; break;
        case 'm':
            if (strcmp(optarg, "send") == 0)
                o->mode = GB_MODE_SEND;
            else if (strcmp(optarg, "recv") == 0)
                o->mode = GB_MODE_RECV;
            else
                return 2;
            break;
        case 'c': o->conns = atoi(optarg); break;
        case 'i': o->inflight = atoi(optarg); break;
        case 'b': o->batch = atoi(optarg); break;
        case 's': o->size = atoi(optarg); break;
        case 'd': o->duration_s = atof(optarg); break;
        case 'w': o->warmup_s = atof(optarg); break;
        case 'T': o->threads = atoi(optarg); break;
        case 'q': o->queues = atoi(optarg); break;
        case 'l': o->long_poll_ms = atoi(optarg); break;
        case 'n': o->count = strtoll(optarg, NULL, 10); break;
        case 'o': o->topic = optarg; break;
        case 'g': o->group = optarg; break;
        case 'F': o->fifo_groups = atoi(optarg); break;
        case 'N': o->topics = atoi(optarg); break;
        case 'D': o->delay_ms = strtoll(optarg, NULL, 10); break;
        case 'A': o->deliver_at_ms = strtoll(optarg, NULL, 10); break;
        case 'X': o->tx = true; break;
        case 'Z': o->no_deadline_timers = true; break;
        case 'h': gb_usage(stdout); exit(0);
        default: return 2;
        }
    }
    if (o->batch == 0)
        o->batch = o->mode == GB_MODE_SEND ? 1 : 32;
    if (optind != argc || o->target == NULL || o->conns < 1 ||
        o->inflight < 1 || o->batch < 1 || o->size < 8 || o->threads < 1 ||
        o->duration_s <= 0 || o->warmup_s < 0 || o->long_poll_ms < 0 ||
        o->count < 0 || o->fifo_groups < 0 || o->topics < 0 ||
        o->fifo_groups > GB_MAX_GROUPS || o->deliver_at_ms < 0)
        return 2;
    /* One message type per run: the topic accepts one. */
    if ((o->fifo_groups > 0) + (o->delay_ms >= 0 || o->deliver_at_ms > 0) +
            o->tx > 1)
        return 2;
    if (o->threads > o->conns)
        o->threads = o->conns;
    return 0;
}

/* ----------------------------------------------------------- connections */

static void gb_conn_md_fill(gb_conn_t *c)
{
    static const char *const keys[4] = {"x-mq-client-id", "x-mq-language",
                                        "x-mq-protocol", "x-mq-client-version"};
    const char *vals[4] = {c->client_id, "CPP", "v2", "5.0.0"};

    for (int i = 0; i < 4; i++) {
        memset(&c->md[i], 0, sizeof(c->md[i]));
        c->md[i].key = grpc_slice_from_static_string(keys[i]);
        c->md[i].value = grpc_slice_from_copied_string(vals[i]);
    }
}

/* Opens channel `c` with arguments that keep it on its own TCP connection:
 * a local subchannel pool and a distinct per-connection argument. */
static int gb_conn_open(gb_conn_t *c, int index, const gb_opts_t *o,
                        const gb_run_t *run)
{
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_arg args[5];
    grpc_channel_args ca;

    c->index = index;
    snprintf(c->client_id, sizeof(c->client_id), "%s@%s@%d@%d@%" PRIx64,
             o->client_prefix, run->host, (int)getpid(), index, run->id_nonce);
    args[0] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL,
                         {.integer = 1}};
    args[1] = (grpc_arg){GRPC_ARG_INTEGER, "gantry.bench.connection",
                         {.integer = index}};
    args[2] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_ENABLE_RETRIES,
                         {.integer = 0}};
    args[3] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                         {.integer = -1}};
    /* The deadline still goes out (grpc-timeout); the server enforces it
     * (gantry by its long-poll clamp, the client by its drain grace). */
    args[4] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_ENABLE_DEADLINE_CHECKS,
                         {.integer = 0}};
    ca.num_args = o->no_deadline_timers ? 5 : 4;
    ca.args = args;
    c->ch = grpc_channel_create(o->target, creds, &ca);
    grpc_channel_credentials_release(creds);
    if (c->ch == NULL)
        return -1;
    c->m_send = grpc_channel_register_call(c->ch, GB_MS_PREFIX "SendMessage",
                                           NULL, NULL);
    c->m_recv = grpc_channel_register_call(c->ch, GB_MS_PREFIX "ReceiveMessage",
                                           NULL, NULL);
    c->m_ack = grpc_channel_register_call(c->ch, GB_MS_PREFIX "AckMessage",
                                          NULL, NULL);
    c->m_end = grpc_channel_register_call(
        c->ch, GB_MS_PREFIX "EndTransaction", NULL, NULL);
    gb_conn_md_fill(c);
    grpc_metadata_array_init(&c->tel_md);
    grpc_metadata_array_init(&c->tel_trail);
    c->tel_details = grpc_empty_slice();
    return 0;
}

static void gb_conn_close(gb_conn_t *c)
{
    for (int i = 0; i < 4; i++)
        grpc_slice_unref(c->md[i].value);
    if (c->tel != NULL)
        grpc_call_unref(c->tel);
    if (c->tel_out != NULL)
        grpc_byte_buffer_destroy(c->tel_out);
    if (c->tel_in != NULL)
        grpc_byte_buffer_destroy(c->tel_in);
    grpc_metadata_array_destroy(&c->tel_md);
    grpc_metadata_array_destroy(&c->tel_trail);
    grpc_slice_unref(c->tel_details);
    if (c->ch != NULL)
        grpc_channel_destroy(c->ch);
}

/* ------------------------------------------------------------- telemetry */

/* The Settings a producer or a simple consumer sends first. */
static grpc_byte_buffer *gb_settings_pack(const gb_opts_t *o,
                                          const gb_run_t *run)
{
    Apache__Rocketmq__V2__TelemetryCommand cmd =
        APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__INIT;
    Apache__Rocketmq__V2__Settings st = APACHE__ROCKETMQ__V2__SETTINGS__INIT;
    Apache__Rocketmq__V2__Endpoints ep = APACHE__ROCKETMQ__V2__ENDPOINTS__INIT;
    Apache__Rocketmq__V2__Address addr = APACHE__ROCKETMQ__V2__ADDRESS__INIT;
    Apache__Rocketmq__V2__Address *addrs[1] = {&addr};
    Google__Protobuf__Duration timeout = GOOGLE__PROTOBUF__DURATION__INIT;
    Google__Protobuf__Duration poll = GOOGLE__PROTOBUF__DURATION__INIT;
    Apache__Rocketmq__V2__Publishing pub =
        APACHE__ROCKETMQ__V2__PUBLISHING__INIT;
    Apache__Rocketmq__V2__Subscription sub =
        APACHE__ROCKETMQ__V2__SUBSCRIPTION__INIT;
    Apache__Rocketmq__V2__SubscriptionEntry ent =
        APACHE__ROCKETMQ__V2__SUBSCRIPTION_ENTRY__INIT;
    Apache__Rocketmq__V2__SubscriptionEntry *ents[1] = {&ent};
    Apache__Rocketmq__V2__FilterExpression filter =
        APACHE__ROCKETMQ__V2__FILTER_EXPRESSION__INIT;
    Apache__Rocketmq__V2__Resource topic = APACHE__ROCKETMQ__V2__RESOURCE__INIT;
    Apache__Rocketmq__V2__Resource *topics[1] = {&topic};
    Apache__Rocketmq__V2__Resource group = APACHE__ROCKETMQ__V2__RESOURCE__INIT;
    Apache__Rocketmq__V2__UA ua = APACHE__ROCKETMQ__V2__UA__INIT;
    gt_hostport_t hp = {.host = ""};
    const char *why;

    (void)gt_hostport_parse(o->target, 8081, &hp, &why);
    addr.host = hp.host;
    addr.port = hp.port;
    ep.scheme = APACHE__ROCKETMQ__V2__ADDRESS_SCHEME__IPv4;
    ep.n_addresses = 1;
    ep.addresses = addrs;
    topic.name = (char *)o->topic;
    group.name = (char *)o->group;
    timeout.seconds = 3;
    ua.language = APACHE__ROCKETMQ__V2__LANGUAGE__CPP;
    ua.version = "5.0.0";
    ua.platform = "Linux";
    ua.hostname = (char *)run->host;

    st.access_point_present_case =
        APACHE__ROCKETMQ__V2__SETTINGS__ACCESS_POINT_PRESENT_ACCESS_POINT;
    st.access_point = &ep;
    st.request_timeout_present_case =
        APACHE__ROCKETMQ__V2__SETTINGS__REQUEST_TIMEOUT_PRESENT_REQUEST_TIMEOUT;
    st.request_timeout = &timeout;
    st.user_agent = &ua;
    st.client_type_present_case =
        APACHE__ROCKETMQ__V2__SETTINGS__CLIENT_TYPE_PRESENT_CLIENT_TYPE;
    if (o->mode == GB_MODE_SEND) {
        st.client_type = APACHE__ROCKETMQ__V2__CLIENT_TYPE__PRODUCER;
        pub.n_topics = 1;
        pub.topics = topics;
        pub.max_body_size = 4 * 1024 * 1024;
        pub.validate_message_type = true;
        st.pub_sub_case = APACHE__ROCKETMQ__V2__SETTINGS__PUB_SUB_PUBLISHING;
        st.publishing = &pub;
    } else {
        st.client_type = APACHE__ROCKETMQ__V2__CLIENT_TYPE__SIMPLE_CONSUMER;
        filter.type = APACHE__ROCKETMQ__V2__FILTER_TYPE__TAG;
        filter.expression = "*";
        ent.topic = &topic;
        ent.expression = &filter;
        sub.group_present_case =
            APACHE__ROCKETMQ__V2__SUBSCRIPTION__GROUP_PRESENT_GROUP;
        sub.group = &group;
        sub.n_subscriptions = 1;
        sub.subscriptions = ents;
        poll.seconds = o->long_poll_ms / 1000;
        sub.long_polling_timeout_present_case =
            APACHE__ROCKETMQ__V2__SUBSCRIPTION__LONG_POLLING_TIMEOUT_PRESENT_LONG_POLLING_TIMEOUT;
        sub.long_polling_timeout = &poll;
        st.pub_sub_case = APACHE__ROCKETMQ__V2__SETTINGS__PUB_SUB_SUBSCRIPTION;
        st.subscription = &sub;
    }
    cmd.command_case = APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__COMMAND_SETTINGS;
    cmd.settings = &st;
    return gb_pack(&cmd.base);
}

/* Opens the Telemetry stream of `c` on `cq` and sends Settings; the reply
 * arrives as an event tagged `c`. */
static int gb_tel_open(gb_conn_t *c, grpc_completion_queue *cq,
                       const gb_opts_t *o, const gb_run_t *run)
{
    grpc_op ops[4];

    c->tel = grpc_channel_create_call(
        c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
        grpc_slice_from_static_string(GB_MS_PREFIX "Telemetry"), NULL,
        gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    c->tel_out = gb_settings_pack(o, run);
    if (c->tel == NULL || c->tel_out == NULL)
        return -1;
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = 4;
    ops[0].data.send_initial_metadata.metadata = c->md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = c->tel_out;
    ops[2].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[2].data.recv_initial_metadata.recv_initial_metadata = &c->tel_md;
    ops[3].op = GRPC_OP_RECV_MESSAGE;
    ops[3].data.recv_message.recv_message = &c->tel_in;
    if (grpc_call_start_batch(c->tel, ops, 4, c, NULL) != GRPC_CALL_OK)
        return -1;
    c->tel_pending++;
    c->tel_stage = GB_TEL_OPENING;
    return 0;
}

/* Tally of the Settings replies, for one warning line instead of C. */
typedef struct gb_tel_tally {
    int ok, bad_code, no_reply;
    int32_t code;
    char text[160];
} gb_tel_tally_t;

static void gb_tel_on_reply(gb_conn_t *c, bool ok, gb_tel_tally_t *t)
{
    Apache__Rocketmq__V2__TelemetryCommand *cmd = NULL;

    c->tel_stage = GB_TEL_OPEN;
    if (ok && c->tel_in != NULL)
        cmd = (Apache__Rocketmq__V2__TelemetryCommand *)gb_unpack(
            &apache__rocketmq__v2__telemetry_command__descriptor, c->tel_in);
    if (cmd == NULL) {
        t->no_reply++;
    } else if (cmd->status_present_case != 0 && cmd->status != NULL &&
               cmd->status->code != APACHE__ROCKETMQ__V2__CODE__OK) {
        t->bad_code++;
        t->code = (int32_t)cmd->status->code;
        snprintf(t->text, sizeof(t->text), "%s",
                 cmd->status->message ? cmd->status->message : "");
    } else {
        t->ok++;
    }
    if (cmd != NULL)
        protobuf_c_message_free_unpacked(&cmd->base, NULL);
}

/* Waits on the control queue until no telemetry batch is pending or
 * `ms` pass; replies are tallied into `t` (may be NULL while closing). */
static void gb_tel_wait(gb_conn_t *conns, int n, grpc_completion_queue *cq,
                        int ms, gb_tel_tally_t *t)
{
    gpr_timespec dl = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                   gpr_time_from_millis(ms, GPR_TIMESPAN));
    int pending = 0;

    for (int i = 0; i < n; i++)
        pending += conns[i].tel_pending;
    while (pending > 0) {
        grpc_event ev = grpc_completion_queue_next(cq, dl, NULL);
        gb_conn_t *c;

        if (ev.type != GRPC_OP_COMPLETE)
            return; /* timed out */
        c = ev.tag;
        c->tel_pending--;
        pending--;
        if (c->tel_stage == GB_TEL_OPENING && t != NULL)
            gb_tel_on_reply(c, ev.success, t);
    }
}

static void gb_tel_report(const gb_tel_tally_t *t, int n)
{
    int silent = n - t->ok - t->bad_code - t->no_reply;

    if (t->bad_code > 0)
        fprintf(stderr,
                "gt_bench: warning: %d/%d Settings replies carry code %d "
                "(%s); continuing\n", t->bad_code, n, (int)t->code, t->text);
    if (t->no_reply > 0)
        fprintf(stderr, "gt_bench: warning: %d/%d Telemetry streams ended "
                "without a Settings reply; continuing\n", t->no_reply, n);
    if (silent > 0)
        fprintf(stderr, "gt_bench: warning: %d/%d Settings not answered "
                "within %d ms; continuing\n", silent, n, GB_TEL_WAIT_MS);
}

/* Half-closes every stream and collects its status; cancels streams the
 * server does not end within GB_CLOSE_WAIT_MS. */
static void gb_tel_close_all(gb_conn_t *conns, int n,
                             grpc_completion_queue *cq)
{
    for (int i = 0; i < n; i++) {
        gb_conn_t *c = &conns[i];
        grpc_op ops[2];

        if (c->tel == NULL)
            continue;
        memset(ops, 0, sizeof(ops));
        ops[0].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        ops[1].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        ops[1].data.recv_status_on_client.trailing_metadata = &c->tel_trail;
        ops[1].data.recv_status_on_client.status = &c->tel_status;
        ops[1].data.recv_status_on_client.status_details = &c->tel_details;
        c->tel_stage = GB_TEL_CLOSING;
        if (grpc_call_start_batch(c->tel, ops, 2, c, NULL) == GRPC_CALL_OK)
            c->tel_pending++;
    }
    gb_tel_wait(conns, n, cq, GB_CLOSE_WAIT_MS, NULL);
    for (int i = 0; i < n; i++)
        if (conns[i].tel != NULL && conns[i].tel_pending > 0)
            grpc_call_cancel(conns[i].tel, NULL);
    gb_tel_wait(conns, n, cq, GB_CLOSE_WAIT_MS, NULL);
}

/* --------------------------------------------------------------- workers */

static void *gb_worker_main(void *arg)
{
    gb_worker_t *w = arg;
    uint64_t drain_since = 0;
    bool cancelled = false;

    for (int i = 0; i < w->n_slots; i++)
        gb_slot_start(w->slots[i]);
    while (w->inflight > 0) {
        gpr_timespec dl = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                       gpr_time_from_millis(100, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(w->cq, dl, NULL);

        if (ev.type == GRPC_OP_COMPLETE)
            gb_slot_on_event(ev.tag, ev.success);
        if (atomic_load(&w->run->phase) != GB_PHASE_DRAIN || cancelled)
            continue;
        if (drain_since == 0) {
            drain_since = gb_now_mono_ns();
        } else if (gb_now_mono_ns() - drain_since > GB_DRAIN_GRACE_NS) {
            for (int i = 0; i < w->n_slots; i++)
                gb_slot_cancel(w->slots[i]);
            cancelled = true;
        }
    }
    return NULL;
}

static int gb_workers_create(gb_worker_t *ws, gb_run_t *run, gb_conn_t *conns)
{
    const gb_opts_t *o = run->opts;

    for (int t = 0; t < o->threads; t++) {
        gb_worker_t *w = &ws[t];
        int n_conns = (o->conns - t + o->threads - 1) / o->threads;

        w->index = t;
        w->run = run;
        w->cq = grpc_completion_queue_create_for_next(NULL);
        w->slots = calloc((size_t)n_conns * (size_t)o->inflight,
                          sizeof(*w->slots));
        if (w->cq == NULL || w->slots == NULL)
            return -1;
    }
    /* Connection i belongs to worker i % threads; its M slots too. */
    for (int i = 0; i < o->conns; i++) {
        gb_worker_t *w = &ws[i % o->threads];

        conns[i].w = w;
        for (int m = 0; m < o->inflight; m++) {
            gb_slot_t *s = gb_slot_new(w, &conns[i]);

            if (s == NULL)
                return -1;
            w->slots[w->n_slots++] = s;
        }
    }
    return 0;
}

static void gb_workers_destroy(gb_worker_t *ws, int n)
{
    for (int t = 0; t < n; t++) {
        gb_worker_t *w = &ws[t];

        for (int i = 0; i < w->n_slots; i++)
            gb_slot_free(w->slots[i]);
        free(w->slots);
        if (w->cq != NULL) {
            grpc_completion_queue_shutdown(w->cq);
            while (grpc_completion_queue_next(
                       w->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
                       .type != GRPC_QUEUE_SHUTDOWN)
                ;
            grpc_completion_queue_destroy(w->cq);
        }
    }
}

static void gb_sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000ULL),
                          (long)(ns % 1000000000ULL)};

    nanosleep(&ts, NULL);
}

/* Runs warm-up and the measured window on the started workers, then asks
 * them to drain and joins them.  Returns the measured seconds. */
static double gb_run_phases(gb_run_t *run, gb_worker_t *ws)
{
    const gb_opts_t *o = run->opts;
    uint64_t warm = (uint64_t)(o->warmup_s * 1e9);
    uint64_t dur = (uint64_t)(o->duration_s * 1e9);
    uint64_t t0, t1;
    int expect = GB_PHASE_WARMUP;

    if (warm > 0)
        gb_sleep_ns(warm);
    atomic_compare_exchange_strong(&run->phase, &expect, GB_PHASE_MEASURE);
    t0 = gb_now_mono_ns();
    while (gb_now_mono_ns() - t0 < dur &&
           atomic_load(&run->phase) != GB_PHASE_DRAIN)
        gb_sleep_ns(20000000ULL);
    t1 = gb_now_mono_ns();
    atomic_store(&run->phase, GB_PHASE_DRAIN);
    for (int t = 0; t < o->threads; t++)
        pthread_join(ws[t].thread, NULL);
    return (double)(t1 - t0) / 1e9;
}

/* ---------------------------------------------------------------- report */

static void gb_report(const gb_opts_t *o, const gb_run_t *run,
                      const gb_stats_t *st, double secs)
{
    char errs[512];
    const double ms = 1e6;

    gb_errs_format(&st->errs, errs, sizeof(errs));
    printf("gt_bench: mode=%s conns=%d inflight=%d batch=%d size=%d "
           "secs=%.2f msgs_s=%.0f mb_s=%.2f p50_ms=%.3f p99_ms=%.3f "
           "p999_ms=%.3f ok=%" PRIu64 " requests=%" PRIu64,
           o->mode == GB_MODE_SEND ? "send" : "recv", o->conns, o->inflight,
           o->batch, o->size, secs, (double)st->ok / secs,
           (double)st->bytes / secs / 1e6,
           (double)gb_hist_quantile(&st->lat, 0.50) / ms,
           (double)gb_hist_quantile(&st->lat, 0.99) / ms,
           (double)gb_hist_quantile(&st->lat, 0.999) / ms, st->ok,
           st->requests);
    if (o->mode == GB_MODE_RECV)
        printf(" received=%" PRIu64 " empty_polls=%" PRIu64
               " rtt_p50_ms=%.3f rtt_p99_ms=%.3f",
               st->received, st->empty_polls,
               (double)gb_hist_quantile(&st->rtt, 0.50) / ms,
               (double)gb_hist_quantile(&st->rtt, 0.99) / ms);
    if (o->mode == GB_MODE_RECV) {
        double span = st->last_ns > st->first_ns && st->first_ns != 0
                          ? (double)(st->last_ns - st->first_ns) / 1e9
                          : 0;

        printf(" span_s=%.2f span_msgs_s=%.0f", span,
               span > 0 ? (double)st->ok / span : 0.0);
        if (st->late.n > 0)
            printf(" late_n=%" PRIu64 " early=%" PRIu64 " late_p50_ms=%.3f"
                   " late_p99_ms=%.3f late_max_ms=%.3f", st->late.n, st->early,
                   (double)gb_hist_quantile(&st->late, 0.50) / ms,
                   (double)gb_hist_quantile(&st->late, 0.99) / ms,
                   (double)gb_hist_quantile(&st->late, 1.0) / ms);
        if (o->fifo_groups > 0) {
            int seen = 0;

            for (int k = 0; k < o->fifo_groups; k++)
                seen += (st->groups_seen[k / 8] >> (k % 8)) & 1;
            printf(" grouped=%" PRIu64 " groups_seen=%d", st->grouped, seen);
        }
    }
    if (o->mode == GB_MODE_SEND)
        printf(" type=%s", o->tx ? "tx" : o->fifo_groups > 0 ? "fifo"
                        : o->delay_ms >= 0 || o->deliver_at_ms > 0 ? "delay"
                                                                   : "normal");
    printf(" total_ok=%" PRId64 " error_count=%" PRIu64 " errors=%s\n",
           atomic_load(&run->total_ok), gb_errs_total(&st->errs), errs);
    fflush(stdout);
}

/* ------------------------------------------------------------------ main */

static int gb_run_init(gb_run_t *run, const gb_opts_t *o)
{
    memset(run, 0, sizeof(*run));
    run->opts = o;
    atomic_init(&run->phase, o->warmup_s > 0 ? GB_PHASE_WARMUP
                                             : GB_PHASE_MEASURE);
    if (gethostname(run->host, sizeof(run->host) - 1) != 0)
        snprintf(run->host, sizeof(run->host), "localhost");
    run->id_nonce = gb_now_real_ns() ^ ((uint64_t)getpid() << 40);
    run->body_template = malloc((size_t)o->size);
    if (run->body_template == NULL)
        return -1;
    for (int i = 0; i < o->size; i++)
        run->body_template[i] = (uint8_t)('a' + i % 26);
    return 0;
}

int main(int argc, char **argv)
{
    gb_opts_t o;
    gb_run_t run;
    gb_conn_t *conns = NULL;
    gb_worker_t *ws = NULL;
    grpc_completion_queue *ctl = NULL;
    gb_tel_tally_t tally = {0};
    gb_stats_t *total = NULL;
    int rc = 1;
    double secs;

    if (gb_parse_args(argc, argv, &o) != 0) {
        gb_usage(stderr);
        return 2;
    }
    grpc_init();
    conns = calloc((size_t)o.conns, sizeof(*conns));
    ws = calloc((size_t)o.threads, sizeof(*ws));
    total = calloc(1, sizeof(*total));
    ctl = grpc_completion_queue_create_for_next(NULL);
    if (gb_run_init(&run, &o) != 0 || conns == NULL || ws == NULL ||
        total == NULL)
        goto out;
    for (int i = 0; i < o.conns; i++) {
        if (gb_conn_open(&conns[i], i, &o, &run) != 0 ||
            gb_tel_open(&conns[i], ctl, &o, &run) != 0) {
            fprintf(stderr, "gt_bench: cannot open connection %d to %s\n", i,
                    o.target);
            goto out;
        }
    }
    gb_tel_wait(conns, o.conns, ctl, GB_TEL_WAIT_MS, &tally);
    gb_tel_report(&tally, o.conns);
    if (gb_workers_create(ws, &run, conns) != 0) {
        fprintf(stderr, "gt_bench: out of memory\n");
        goto out;
    }
    for (int t = 0; t < o.threads; t++)
        pthread_create(&ws[t].thread, NULL, gb_worker_main, &ws[t]);
    secs = gb_run_phases(&run, ws);
    for (int t = 0; t < o.threads; t++)
        gb_stats_merge(total, &ws[t].stats);
    gb_report(&o, &run, total, secs);
    rc = 0;
out:
    if (conns != NULL)
        gb_tel_close_all(conns, o.conns, ctl);
    if (ws != NULL)
        gb_workers_destroy(ws, o.threads);
    for (int i = 0; conns != NULL && i < o.conns; i++)
        gb_conn_close(&conns[i]);
    grpc_completion_queue_shutdown(ctl);
    while (grpc_completion_queue_next(ctl, gpr_inf_future(GPR_CLOCK_REALTIME),
                                      NULL).type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(ctl);
    free(conns);
    free(ws);
    free(total);
    free(run.body_template);
    grpc_shutdown();
    return rc;
}
