/* gt_bench_empty: an "empty" MessagingService for the benchmark ceiling.
 *
 * It runs on the same px_rpc runtime as gantry but stores nothing:
 * Telemetry echoes the client's Settings with status OK; SendMessage
 * answers OK at once, one entry per message (message id echoed, offsets
 * from a counter); ReceiveMessage streams status OK, `batch_size` synthetic
 * messages (a body of --body-size bytes whose first 8 bytes are the current
 * CLOCK_REALTIME ns, MD5 digest, receipt handle, delivery attempt 1) and
 * the delivery timestamp; AckMessage answers OK per entry; EndTransaction
 * answers OK (SendMessage gives TRANSACTION messages transaction_id = the
 * message id, as gantry does).
 *
 * With --park, ReceiveMessage calls park instead (first come first served,
 * until a message, a cancellation or the stop) and each message a
 * SendMessage carries wakes the oldest parked one with that message's body
 * (so its first 8 bytes keep the sender's timestamp); with none parked the
 * message is dropped.  That is the parked-poll ceiling of scripts/bench's
 * park scenario: the runtime's and the core's cost of N open calls
 * without a store.  Whatever rate gt_bench reaches against it
 * is the ceiling of client + runtime + network that scripts/bench divides
 * Gantry's figures by.
 *
 * With --sync-dir DIR, SendMessage makes the bodies durable before it
 * answers, and does nothing else: one pwritev of the request's bodies into
 * a pre-zeroed file (a 64 MiB ring: rewritten pages cost an fdatasync what
 * a pre-zeroed commitlog segment does), then a group commit on the
 * handler's own thread -- the first handler that finds no fdatasync
 * running syncs for every answer queued so far and sends them, again
 * while more were queued meanwhile; the others queue theirs and return.
 * No other thread, no hand-off, no index.  That is the durable ceiling of
 * scripts/bench's sync-flush scenario: what client + runtime + this disk
 * allow a server that must fdatasync before it answers.
 *
 * With --forward HOST:PORT[,HOST:PORT...] it is one hop of a null store
 * cluster, the replication ceiling of scripts/bench's cluster scenario:
 * each SendMessage's request goes on unchanged, as one unary
 * /gantry.bench.v1.Relay/Forward call to every endpoint, and is answered
 * once --acks of them (default all) answered OK (UNAVAILABLE when too
 * many failed).  As gantry's AppendMany batcher does, at most
 * --fwd-inflight such calls (default 2) are in flight; the requests that
 * come meanwhile queue and go as one call when one ends (their bytes
 * concatenated: one SendMessageRequest with all their messages), at most
 * 64 requests or 1 MiB.  Forward calls are served too: with --write-dir DIR the
 * request's bytes are first written into DIR/gbe-write.data (a 64 MiB
 * ring of pre-zeroed pages, never synced: async flush), then forwarded as
 * a SendMessage is, or answered empty at once without --forward.  So
 * client -> front (--forward leader) -> leader (--write-dir,
 * --forward f1,f2 --acks 1) -> followers (--write-dir) moves and writes
 * what a proxy, a leader and its followers must, with no decoding, no
 * index and no store in between.
 *
 * Threads: px_rpc workers call the handlers, the --forward client's
 * completion thread the forwards' answers; the shared state is the
 * gbe_app_t counters, which are atomic, the parked list (park_mu) and the
 * group commit's queue, the --write-dir offset and the forward queue
 * (sync_mu). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/uio.h>

#include <openssl/evp.h>

#include "apache/rocketmq/v2/service.pb-c.h"
#include "gt_le.h"
#include "gt_log.h"
#include "px_rpc.h"
#include "px_rpc_client.h"

#define GBE_PREFIX "/apache.rocketmq.v2.MessagingService/"
#define GBE_MAX_BATCH 32
#define GBE_SYNC_RING (64u << 20) /* --sync-dir, --write-dir file size */
#define GBE_FORWARD "/gantry.bench.v1.Relay/Forward"
#define GBE_MAX_FORWARD 8
/* A forward batch's bounds: gantry's AppendMany batcher's defaults. */
#define GBE_BATCH_MAX 64
#define GBE_BATCH_BYTES (1u << 20)

typedef Apache__Rocketmq__V2__Status gbe_status_t;

/* A parked ReceiveMessage (--park): on the app's list, holding a call
 * reference, until a message or an interrupt takes it off. */
typedef struct gbe_parked {
    struct gbe_parked *prev, *next;
    px_call_t *call;
    char topic[128];
} gbe_parked_t;

typedef struct gbe_app {
    _Atomic uint64_t offset; /* queue offsets and message ids */
    int body_size;
    uint64_t nonce;          /* high half of message ids */
    bool park;
    pthread_mutex_t park_mu; /* guards the list and the calls' user */
    gbe_parked_t *head, *tail;
    /* --sync-dir: the file (-1 without), the next write offset in it, the
     * answers written but not yet synced, and whether a handler is
     * syncing; all under sync_mu but the fd. */
    int sync_fd;
    pthread_mutex_t sync_mu;
    uint64_t sync_off;
    struct gbe_answer *sync_head, **sync_tail;
    bool syncing;
    /* --forward: the downstream endpoints and how many must answer OK;
     * --write-dir: the ring Forward requests are written into (-1
     * without) and the next offset in it (under sync_mu). */
    px_rpc_client_t *fwd;
    int n_fwd, fwd_acks;
    /* Forward batches in flight, at most fwd_max_inflight (0: no bound);
     * the requests queued for the next one (under sync_mu). */
    int fwd_inflight, fwd_max_inflight, fwd_qlen;
    size_t fwd_qbytes;
    struct gbe_fwd *fwd_queue, **fwd_qtail;
    int write_fd;
    uint64_t write_off;
} gbe_app_t;

/* A packed SendMessage answer waiting for the fdatasync that covers its
 * bodies, holding a call reference. */
typedef struct gbe_answer {
    struct gbe_answer *next;
    px_call_t *call;
    size_t len;
    uint8_t data[];
} gbe_answer_t;

static gbe_status_t gbe_ok = {PROTOBUF_C_MESSAGE_INIT(
                                  &apache__rocketmq__v2__status__descriptor),
                              APACHE__ROCKETMQ__V2__CODE__OK, "OK"};

static uint64_t gbe_now_real_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void gbe_bad_request(px_call_t *call)
{
    px_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "malformed request");
}

/* ------------------------------------------------------------ telemetry */

static void gbe_telemetry(px_call_t *call, const uint8_t *data, size_t len)
{
    Apache__Rocketmq__V2__TelemetryCommand *req =
        (Apache__Rocketmq__V2__TelemetryCommand *)px_pb_unpack(
            &apache__rocketmq__v2__telemetry_command__descriptor, data, len);
    Apache__Rocketmq__V2__TelemetryCommand resp =
        APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__INIT;

    if (req == NULL) {
        gbe_bad_request(call);
        return;
    }
    if (req->command_case ==
        APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__COMMAND_SETTINGS) {
        resp.status_present_case =
            APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__STATUS_PRESENT_STATUS;
        resp.status = &gbe_ok;
        resp.command_case =
            APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__COMMAND_SETTINGS;
        resp.settings = req->settings;
        px_call_send_pb(call, &resp.base);
    }
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void gbe_telemetry_half_close(px_call_t *call)
{
    px_call_finish(call, GRPC_STATUS_OK, NULL);
}

static void gbe_telemetry_interrupt(px_call_t *call, px_interrupt_t why)
{
    if (why == PX_INTERRUPT_SHUTDOWN)
        px_call_finish(call, GRPC_STATUS_UNAVAILABLE, "server shutting down");
}

/* ----------------------------------------------------------------- park */

static void gbe_recv_one(px_call_t *call, gbe_app_t *app, const char *topic,
                         uint8_t *body, size_t len);

static void gbe_unlink_locked(gbe_app_t *app, gbe_parked_t *p)
{
    if (p->prev != NULL)
        p->prev->next = p->next;
    else
        app->head = p->next;
    if (p->next != NULL)
        p->next->prev = p->prev;
    else
        app->tail = p->prev;
    px_call_set_user(p->call, NULL);
}

static void gbe_park(px_call_t *call, gbe_app_t *app, const char *topic)
{
    gbe_parked_t *p = calloc(1, sizeof(*p));

    if (p == NULL) {
        px_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    p->call = call;
    snprintf(p->topic, sizeof(p->topic), "%s", topic);
    px_call_ref(call);
    pthread_mutex_lock(&app->park_mu);
    p->prev = app->tail;
    if (app->tail != NULL)
        app->tail->next = p;
    else
        app->head = p;
    app->tail = p;
    px_call_set_user(call, p);
    pthread_mutex_unlock(&app->park_mu);
}

/* Wakes the oldest parked receive with one sent message. */
static void gbe_wake(gbe_app_t *app, const Apache__Rocketmq__V2__Message *m)
{
    Apache__Rocketmq__V2__ReceiveMessageResponse r =
        APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__INIT;
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    gbe_parked_t *p;
    uint64_t now;

    if (m->body.len == 0)
        return;
    pthread_mutex_lock(&app->park_mu);
    if ((p = app->head) != NULL)
        gbe_unlink_locked(app, p);
    pthread_mutex_unlock(&app->park_mu);
    if (p == NULL)
        return; /* nobody parked: dropped */
    r.content_case = APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__CONTENT_STATUS;
    r.status = &gbe_ok;
    px_call_send_pb(p->call, &r.base);
    gbe_recv_one(p->call, app, p->topic, m->body.data, m->body.len);
    now = gbe_now_real_ns();
    ts.seconds = (int64_t)(now / 1000000000ULL);
    ts.nanos = (int32_t)(now % 1000000000ULL);
    r.content_case =
        APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__CONTENT_DELIVERY_TIMESTAMP;
    r.delivery_timestamp = &ts;
    px_call_send_pb(p->call, &r.base);
    px_call_finish(p->call, GRPC_STATUS_OK, NULL);
    px_call_unref(p->call);
    free(p);
}

/* A parked receive cancelled, or the server stopping: off the list. */
static void gbe_receive_interrupt(px_call_t *call, px_interrupt_t why)
{
    gbe_app_t *app = px_call_app(call);
    gbe_parked_t *p;

    if (why == PX_INTERRUPT_CLOSED || !app->park)
        return;
    pthread_mutex_lock(&app->park_mu);
    if ((p = px_call_user(call)) != NULL)
        gbe_unlink_locked(app, p);
    pthread_mutex_unlock(&app->park_mu);
    if (p == NULL)
        return;
    if (why == PX_INTERRUPT_SHUTDOWN)
        px_call_finish(call, GRPC_STATUS_UNAVAILABLE, "server shutting down");
    px_call_unref(call);
    free(p);
}

/* ------------------------------------------------------- durable send */

/* Creates DIR/NAME: GBE_SYNC_RING bytes of zeros, synced if `sync`. */
static int gbe_ring_open(const char *dir, const char *name, bool sync)
{
    static const uint8_t zeros[1 << 16];
    char path[4096];
    int fd;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if ((fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0)
        return -1;
    for (uint64_t off = 0; off < GBE_SYNC_RING; off += sizeof(zeros))
        if (pwrite(fd, zeros, sizeof(zeros), (off_t)off) !=
            (ssize_t)sizeof(zeros)) {
            close(fd);
            return -1;
        }
    if (sync && fdatasync(fd) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Sends (or fails) a list of answers and drops their references. */
static void gbe_answer_all(gbe_answer_t *a, bool ok)
{
    while (a != NULL) {
        gbe_answer_t *next = a->next;

        if (ok)
            px_call_reply(a->call, a->data, a->len);
        else
            px_call_finish(a->call, GRPC_STATUS_INTERNAL, "fdatasync failed");
        px_call_unref(a->call);
        free(a);
        a = next;
    }
}

/* Writes the request's bodies, queues the packed answer and, unless a
 * handler is syncing already (it will cover this one), syncs and answers
 * until nothing is queued. */
static void gbe_send_durable(gbe_app_t *app, px_call_t *call,
                             const Apache__Rocketmq__V2__SendMessageRequest *req,
                             const ProtobufCMessage *resp)
{
    size_t plen = protobuf_c_message_get_packed_size(resp), total = 0;
    gbe_answer_t *a = malloc(sizeof(*a) + plen);
    struct iovec iov[GBE_MAX_BATCH];

    if (a == NULL) {
        px_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    a->next = NULL;
    a->call = call;
    a->len = protobuf_c_message_pack(resp, a->data);
    for (size_t i = 0; i < req->n_messages; i++)
        total += req->messages[i]->body.len;
    pthread_mutex_lock(&app->sync_mu);
    if (app->sync_off + total > GBE_SYNC_RING)
        app->sync_off = 0;
    /* One pwritev per GBE_MAX_BATCH bodies (one for gt_bench's batches). */
    for (size_t i = 0; i < req->n_messages;) {
        size_t len = 0;
        int cnt = 0;

        for (; i < req->n_messages && cnt < GBE_MAX_BATCH; i++, cnt++) {
            iov[cnt].iov_base = req->messages[i]->body.data;
            iov[cnt].iov_len = req->messages[i]->body.len;
            len += iov[cnt].iov_len;
        }
        if (pwritev(app->sync_fd, iov, cnt, (off_t)app->sync_off) !=
            (ssize_t)len) {
            pthread_mutex_unlock(&app->sync_mu);
            px_call_finish(call, GRPC_STATUS_INTERNAL, "write failed");
            free(a);
            return;
        }
        app->sync_off += len;
    }
    px_call_ref(call);
    *app->sync_tail = a;
    app->sync_tail = &a->next;
    if (app->syncing) {
        pthread_mutex_unlock(&app->sync_mu);
        return;
    }
    app->syncing = true;
    while (app->sync_head != NULL) {
        gbe_answer_t *list = app->sync_head;
        bool ok;

        app->sync_head = NULL;
        app->sync_tail = &app->sync_head;
        pthread_mutex_unlock(&app->sync_mu);
        ok = fdatasync(app->sync_fd) == 0;
        gbe_answer_all(list, ok);
        pthread_mutex_lock(&app->sync_mu);
    }
    app->syncing = false;
    pthread_mutex_unlock(&app->sync_mu);
}

/* -------------------------------------------------------------- forward */

/* One request to forward: its call (a reference held until it is
 * answered), its bytes and the answer to give once enough took it. */
typedef struct gbe_fwd {
    struct gbe_fwd *next;
    px_call_t *call;
    uint8_t *req;
    size_t req_len, len;
    uint8_t data[];
} gbe_fwd_t;

/* Requests gone on as one Forward call to every endpoint (their bytes
 * concatenated: one SendMessageRequest with all their messages). */
typedef struct gbe_batch {
    gbe_app_t *app;
    gbe_fwd_t *list;
    _Atomic int need, pending;
} gbe_batch_t;

static void gbe_batch_send(gbe_app_t *app, gbe_fwd_t *list, const uint8_t *req);

static gbe_fwd_t *gbe_queue_take_locked(gbe_app_t *app)
{
    gbe_fwd_t *list = app->fwd_queue;

    app->fwd_queue = NULL;
    app->fwd_qtail = &app->fwd_queue;
    app->fwd_qlen = 0;
    app->fwd_qbytes = 0;
    return list;
}

/* A batch ended: whatever queued meanwhile goes now, as one batch. */
static void gbe_batch_next(gbe_app_t *app)
{
    gbe_fwd_t *next_list = NULL;

    pthread_mutex_lock(&app->sync_mu);
    if (app->fwd_queue != NULL)
        next_list = gbe_queue_take_locked(app);
    else
        app->fwd_inflight--;
    pthread_mutex_unlock(&app->sync_mu);
    if (next_list != NULL)
        gbe_batch_send(app, next_list, NULL);
}

static void gbe_batch_done(void *arg, grpc_status_code code,
                           const char *details, const uint8_t *resp, size_t len)
{
    gbe_batch_t *b = arg;
    gbe_app_t *app = b->app;

    (void)details, (void)resp, (void)len;
    if (code == GRPC_STATUS_OK && atomic_fetch_sub(&b->need, 1) == 1)
        for (gbe_fwd_t *f = b->list; f != NULL; f = f->next)
            px_call_reply(f->call, f->data, f->len);
    if (atomic_fetch_sub(&b->pending, 1) != 1)
        return;
    for (gbe_fwd_t *f = b->list, *n; f != NULL; f = n) {
        n = f->next;
        if (atomic_load(&b->need) > 0)
            px_call_finish(f->call, GRPC_STATUS_UNAVAILABLE, "too few forwards answered");
        px_call_unref(f->call);
        free(f->req);
        free(f);
    }
    free(b);
    gbe_batch_next(app);
}

/* Sends `list` as one Forward call to every endpoint.  `req`: the bytes
 * of a lone request sent from its handler (borrowed); NULL: each f->req. */
static void gbe_batch_send(gbe_app_t *app, gbe_fwd_t *list, const uint8_t *req)
{
    gbe_batch_t *b = malloc(sizeof(*b));
    px_rpc_part_t parts[GBE_BATCH_MAX];
    size_t n = 0;

    for (gbe_fwd_t *f = list; f != NULL; f = f->next) /* <= GBE_BATCH_MAX */
        parts[n++] = (px_rpc_part_t){req != NULL ? req : f->req, f->req_len};
    if (b == NULL) {
        for (gbe_fwd_t *f = list, *nx; f != NULL; f = nx) {
            nx = f->next;
            px_call_finish(f->call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            px_call_unref(f->call);
            free(f->req);
            free(f);
        }
        gbe_batch_next(app);
        return;
    }
    b->app = app;
    b->list = list;
    atomic_init(&b->need, app->fwd_acks);
    atomic_init(&b->pending, app->n_fwd + 1); /* + this function's own */
    for (int i = 0; i < app->n_fwd; i++) {
        px_ccall_opts_t co = {.timeout_ms = 10000, .endpoint = i};

        if (px_rpc_unary_parts(app->fwd, GBE_FORWARD, parts, n, &co,
                               gbe_batch_done, b, NULL) != GT_OK)
            atomic_fetch_sub(&b->pending, 1);
    }
    gbe_batch_done(b, GRPC_STATUS_CANCELLED, NULL, NULL, 0); /* its own */
}

/* Forwards `req` to every endpoint at once, or, with --fwd-inflight
 * batches in flight already, queues it for the next batch; `ans` is the
 * answer once enough endpoints took it. */
static void gbe_forward(gbe_app_t *app, px_call_t *call, const uint8_t *req,
                        size_t len, const uint8_t *ans, size_t ans_len)
{
    gbe_fwd_t *f = malloc(sizeof(*f) + ans_len), *send = NULL;

    if (f == NULL) {
        px_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    f->next = NULL;
    f->call = call;
    f->req = NULL;
    f->req_len = len;
    f->len = ans_len;
    if (ans_len)
        memcpy(f->data, ans, ans_len);
    px_call_ref(call);
    pthread_mutex_lock(&app->sync_mu);
    if (app->fwd_max_inflight == 0 || app->fwd_inflight < app->fwd_max_inflight) {
        app->fwd_inflight++;
        pthread_mutex_unlock(&app->sync_mu);
        /* Sent now: the request is read (copied) while it is still ours. */
        gbe_batch_send(app, f, req);
        return;
    }
    /* Queued: it outlives this call, so it gets a copy. */
    if ((f->req = malloc(len ? len : 1)) == NULL) {
        pthread_mutex_unlock(&app->sync_mu);
        px_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        px_call_unref(call);
        free(f);
        return;
    }
    memcpy(f->req, req, len);
    *app->fwd_qtail = f;
    app->fwd_qtail = &f->next;
    app->fwd_qbytes += len;
    if (++app->fwd_qlen == GBE_BATCH_MAX || app->fwd_qbytes >= GBE_BATCH_BYTES) {
        send = gbe_queue_take_locked(app); /* full: it goes now */
        app->fwd_inflight++;
    }
    pthread_mutex_unlock(&app->sync_mu);
    if (send != NULL)
        gbe_batch_send(app, send, NULL);
}

/* Writes the bytes into the --write-dir ring (page cache only). */
static bool gbe_write(gbe_app_t *app, const uint8_t *data, size_t len)
{
    bool ok;

    if (len > GBE_SYNC_RING)
        return false;
    pthread_mutex_lock(&app->sync_mu);
    if (app->write_off + len > GBE_SYNC_RING)
        app->write_off = 0;
    ok = pwrite(app->write_fd, data, len, (off_t)app->write_off) == (ssize_t)len;
    app->write_off += len;
    pthread_mutex_unlock(&app->sync_mu);
    return ok;
}

static void gbe_relay(px_call_t *call, const uint8_t *data, size_t len)
{
    gbe_app_t *app = px_call_app(call);

    if (app->write_fd >= 0 && !gbe_write(app, data, len)) {
        px_call_finish(call, GRPC_STATUS_INTERNAL, "write failed");
        return;
    }
    if (app->fwd != NULL)
        gbe_forward(app, call, data, len, NULL, 0);
    else
        px_call_reply(call, NULL, 0);
}

/* ----------------------------------------------------------------- send */

static void gbe_send(px_call_t *call, const uint8_t *data, size_t len)
{
    gbe_app_t *app = px_call_app(call);
    Apache__Rocketmq__V2__SendMessageRequest *req =
        (Apache__Rocketmq__V2__SendMessageRequest *)px_pb_unpack(
            &apache__rocketmq__v2__send_message_request__descriptor, data,
            len);
    Apache__Rocketmq__V2__SendMessageResponse resp =
        APACHE__ROCKETMQ__V2__SEND_MESSAGE_RESPONSE__INIT;
    Apache__Rocketmq__V2__SendResultEntry *ents = NULL, **entp = NULL;

    if (req == NULL) {
        gbe_bad_request(call);
        return;
    }
    ents = calloc(req->n_messages + 1, sizeof(*ents));
    entp = calloc(req->n_messages + 1, sizeof(*entp));
    if (ents == NULL || entp == NULL) {
        px_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < req->n_messages; i++) {
        const Apache__Rocketmq__V2__SystemProperties *p =
            req->messages[i]->system_properties;

        apache__rocketmq__v2__send_result_entry__init(&ents[i]);
        ents[i].status = &gbe_ok;
        ents[i].message_id = p && p->message_id ? p->message_id : "";
        ents[i].offset = (int64_t)atomic_fetch_add(&app->offset, 1);
        if (p != NULL && p->message_type ==
                             APACHE__ROCKETMQ__V2__MESSAGE_TYPE__TRANSACTION)
            ents[i].transaction_id = ents[i].message_id;
        entp[i] = &ents[i];
    }
    resp.status = &gbe_ok;
    resp.n_entries = req->n_messages;
    resp.entries = entp;
    if (app->sync_fd >= 0) {
        gbe_send_durable(app, call, req, &resp.base);
    } else if (app->fwd != NULL) {
        size_t plen = protobuf_c_message_get_packed_size(&resp.base);
        uint8_t *ans = malloc(plen ? plen : 1);

        if (ans == NULL) {
            px_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            goto out;
        }
        plen = protobuf_c_message_pack(&resp.base, ans);
        gbe_forward(app, call, data, len, ans, plen);
        free(ans);
    } else
        px_call_reply_pb(call, &resp.base);
    for (size_t i = 0; app->park && i < req->n_messages; i++)
        gbe_wake(app, req->messages[i]);
out:
    free(ents);
    free(entp);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

/* -------------------------------------------------------------- receive */

/* Uppercase hex MD5 of `body`, as RocketMQ's body_digest. */
static void gbe_md5_hex(const uint8_t *body, size_t len, char out[33])
{
    static const char hex[] = "0123456789ABCDEF";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;

    if (EVP_Digest(body, len, md, &n, EVP_md5(), NULL) != 1 || n != 16)
        n = 0;
    for (unsigned int i = 0; i < n; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[2 * n] = '\0';
}

/* One message: synthetic with the current time in its body, or (len > 0)
 * a sent body as it is. */
static void gbe_recv_one(px_call_t *call, gbe_app_t *app, const char *topic,
                         uint8_t *body, size_t len)
{
    Apache__Rocketmq__V2__ReceiveMessageResponse r =
        APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__INIT;
    Apache__Rocketmq__V2__Message m = APACHE__ROCKETMQ__V2__MESSAGE__INIT;
    Apache__Rocketmq__V2__SystemProperties p =
        APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__INIT;
    Apache__Rocketmq__V2__Resource res = APACHE__ROCKETMQ__V2__RESOURCE__INIT;
    Apache__Rocketmq__V2__Digest dig = APACHE__ROCKETMQ__V2__DIGEST__INIT;
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    uint64_t now = gbe_now_real_ns();
    uint64_t seq = atomic_fetch_add(&app->offset, 1);
    char id[40], handle[64], md5[33];

    if (len == 0) {
        len = (size_t)app->body_size;
        gt_le64_put(body, now);
    }
    gbe_md5_hex(body, len, md5);
    snprintf(id, sizeof(id), "%016" PRIX64 "%016" PRIX64, app->nonce, seq);
    snprintf(handle, sizeof(handle), "gbe-%" PRIx64 "-%" PRIu64, app->nonce,
             seq);
    ts.seconds = (int64_t)(now / 1000000000ULL);
    ts.nanos = (int32_t)(now % 1000000000ULL);
    res.name = (char *)topic;
    dig.type = APACHE__ROCKETMQ__V2__DIGEST_TYPE__MD5;
    dig.checksum = md5;
    p.message_id = id;
    p.body_digest = &dig;
    p.body_encoding = APACHE__ROCKETMQ__V2__ENCODING__IDENTITY;
    p.message_type = APACHE__ROCKETMQ__V2__MESSAGE_TYPE__NORMAL;
    p.born_timestamp = &ts;
    p.born_host = "gt_bench_empty";
    p.store_timestamp_present_case =
        APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__STORE_TIMESTAMP_PRESENT_STORE_TIMESTAMP;
    p.store_timestamp = &ts;
    p.store_host = "gt_bench_empty";
    p.receipt_handle_present_case =
        APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__RECEIPT_HANDLE_PRESENT_RECEIPT_HANDLE;
    p.receipt_handle = handle;
    p.queue_offset_present_case =
        APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__QUEUE_OFFSET_PRESENT_QUEUE_OFFSET;
    p.queue_offset = (int64_t)seq;
    p.delivery_attempt_present_case =
        APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__DELIVERY_ATTEMPT_PRESENT_DELIVERY_ATTEMPT;
    p.delivery_attempt = 1;
    m.topic = &res;
    m.system_properties = &p;
    m.body.data = body;
    m.body.len = len;
    r.content_case = APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__CONTENT_MESSAGE;
    r.message = &m;
    px_call_send_pb(call, &r.base);
}

static void gbe_receive(px_call_t *call, const uint8_t *data, size_t len)
{
    gbe_app_t *app = px_call_app(call);
    Apache__Rocketmq__V2__ReceiveMessageRequest *req =
        (Apache__Rocketmq__V2__ReceiveMessageRequest *)px_pb_unpack(
            &apache__rocketmq__v2__receive_message_request__descriptor, data,
            len);
    Apache__Rocketmq__V2__ReceiveMessageResponse r =
        APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__INIT;
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    const char *topic = "BenchTopic";
    uint8_t *body = NULL;
    uint64_t now;
    int n;

    if (req == NULL) {
        gbe_bad_request(call);
        return;
    }
    n = req->batch_size > 0 && req->batch_size <= GBE_MAX_BATCH
            ? req->batch_size : GBE_MAX_BATCH;
    if (req->message_queue != NULL && req->message_queue->topic != NULL &&
        req->message_queue->topic->name != NULL &&
        req->message_queue->topic->name[0] != '\0')
        topic = req->message_queue->topic->name;
    if (app->park) {
        gbe_park(call, app, topic);
        goto out;
    }
    body = malloc((size_t)app->body_size);
    if (body == NULL) {
        px_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (int i = 0; i < app->body_size; i++)
        body[i] = (uint8_t)('a' + i % 26);
    r.content_case = APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__CONTENT_STATUS;
    r.status = &gbe_ok;
    px_call_send_pb(call, &r.base);
    for (int i = 0; i < n; i++)
        gbe_recv_one(call, app, topic, body, 0);
    now = gbe_now_real_ns();
    ts.seconds = (int64_t)(now / 1000000000ULL);
    ts.nanos = (int32_t)(now % 1000000000ULL);
    r.content_case =
        APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__CONTENT_DELIVERY_TIMESTAMP;
    r.delivery_timestamp = &ts;
    px_call_send_pb(call, &r.base);
    px_call_finish(call, GRPC_STATUS_OK, NULL);
out:
    free(body);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

/* ------------------------------------------------------------------ ack */

static void gbe_ack(px_call_t *call, const uint8_t *data, size_t len)
{
    Apache__Rocketmq__V2__AckMessageRequest *req =
        (Apache__Rocketmq__V2__AckMessageRequest *)px_pb_unpack(
            &apache__rocketmq__v2__ack_message_request__descriptor, data, len);
    Apache__Rocketmq__V2__AckMessageResponse resp =
        APACHE__ROCKETMQ__V2__ACK_MESSAGE_RESPONSE__INIT;
    Apache__Rocketmq__V2__AckMessageResultEntry *ents = NULL, **entp = NULL;

    if (req == NULL) {
        gbe_bad_request(call);
        return;
    }
    ents = calloc(req->n_entries + 1, sizeof(*ents));
    entp = calloc(req->n_entries + 1, sizeof(*entp));
    if (ents == NULL || entp == NULL) {
        px_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < req->n_entries; i++) {
        apache__rocketmq__v2__ack_message_result_entry__init(&ents[i]);
        ents[i].message_id = req->entries[i]->message_id;
        ents[i].receipt_handle = req->entries[i]->receipt_handle;
        ents[i].status = &gbe_ok;
        entp[i] = &ents[i];
    }
    resp.status = &gbe_ok;
    resp.n_entries = req->n_entries;
    resp.entries = entp;
    px_call_reply_pb(call, &resp.base);
out:
    free(ents);
    free(entp);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

/* ------------------------------------------------------ end transaction */

/* Answers OK for any resolution: the empty server keeps no half messages. */
static void gbe_end_transaction(px_call_t *call, const uint8_t *data,
                                size_t len)
{
    Apache__Rocketmq__V2__EndTransactionRequest *req =
        (Apache__Rocketmq__V2__EndTransactionRequest *)px_pb_unpack(
            &apache__rocketmq__v2__end_transaction_request__descriptor, data,
            len);
    Apache__Rocketmq__V2__EndTransactionResponse resp =
        APACHE__ROCKETMQ__V2__END_TRANSACTION_RESPONSE__INIT;

    if (req == NULL) {
        gbe_bad_request(call);
        return;
    }
    resp.status = &gbe_ok;
    px_call_reply_pb(call, &resp.base);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

static const px_method_t gbe_methods[] = {
    {.path = GBE_PREFIX "Telemetry", .kind = PX_RPC_BIDI_STREAM,
     .on_message = gbe_telemetry, .on_half_close = gbe_telemetry_half_close,
     .on_interrupt = gbe_telemetry_interrupt},
    /* Reserved at arrival as gantry's SendMessage does (a 4 MiB body). */
    {.path = GBE_PREFIX "SendMessage", .on_message = gbe_send,
     .reserve_bytes = 4 * 1024 * 1024 + 64 * 1024},
    {.path = GBE_PREFIX "ReceiveMessage", .kind = PX_RPC_SERVER_STREAM,
     .on_message = gbe_receive, .on_interrupt = gbe_receive_interrupt},
    {.path = GBE_PREFIX "AckMessage", .on_message = gbe_ack},
    {.path = GBE_PREFIX "EndTransaction", .on_message = gbe_end_transaction},
    {.path = GBE_FORWARD, .on_message = gbe_relay},
};

/* ----------------------------------------------------------------- main */

static void gbe_usage(FILE *out)
{
    fprintf(out, "usage: gt_bench_empty [--listen HOST:PORT] [--threads N] "
                 "[--body-size BYTES] [--park]\n"
                 "                      [--sync-dir DIR]\n"
                 "                      [--max-inflight-bytes N "
                 "[--max-conn-inflight-bytes N]]\n"
                 "  defaults: --listen 127.0.0.1:0 (prints the port), "
                 "--threads 2 (0: the runtime's default), --body-size 1024, "
                 "no admission bound\n"
                 "  --park: receives park until a sent message wakes one\n"
                 "  --sync-dir: sends answer after their bodies are written "
                 "to DIR/gbe-sync.data\n"
                 "              and a group-commit fdatasync covered them\n"
                 "  --forward HOST:PORT[,...] [--acks K] [--fwd-inflight N] "
                 "[--write-dir DIR]:\n"
                 "              a hop of a null store cluster (sends and Forward "
                 "calls go on to every\n"
                 "              endpoint, answered after K OKs, default all; with N "
                 "batches in flight,\n"
                 "              default 2, 0 no bound, the next ones queue and go "
                 "as one; Forward calls\n"
                 "              are first written to DIR/gbe-write.data)\n");
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"listen", 1, NULL, 'l'}, {"threads", 1, NULL, 't'},
        {"body-size", 1, NULL, 'b'}, {"help", 0, NULL, 'h'},
        {"max-inflight-bytes", 1, NULL, 'm'},
        {"max-conn-inflight-bytes", 1, NULL, 'c'},
        {"park", 0, NULL, 'p'}, {"sync-dir", 1, NULL, 's'},
        {"forward", 1, NULL, 'f'}, {"acks", 1, NULL, 'a'},
        {"write-dir", 1, NULL, 'w'}, {"fwd-inflight", 1, NULL, 'i'},
        {NULL, 0, NULL, 0}};
    px_rpc_options_t opts = {.listen = "127.0.0.1:0", .threads = 2,
                             .shutdown_timeout_ms = 1000,
                             .max_receive_bytes = 64LL * 1024 * 1024};
    gbe_app_t app = {.body_size = 1024, .sync_fd = -1, .write_fd = -1, .fwd_acks = -1,
                     .fwd_max_inflight = 2};
    const char *sync_dir = NULL, *write_dir = NULL;
    char *fwd_list = NULL, *ep[GBE_MAX_FORWARD], *save = NULL;
    px_method_table_t table;
    px_rpc_server_t *srv = NULL;
    sigset_t sigs;
    char err[256];
    int ch, sig, rc = 1;

    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'l': opts.listen = optarg; break;
        case 't': opts.threads = atoi(optarg); break;
        case 'b': app.body_size = atoi(optarg); break;
        case 'm': opts.max_inflight_bytes = atoll(optarg); break;
        case 'c': opts.max_conn_inflight_bytes = atoll(optarg); break;
        case 'p': app.park = true; break;
        case 's': sync_dir = optarg; break;
        case 'f': fwd_list = optarg; break;
        case 'a': app.fwd_acks = atoi(optarg); break;
        case 'w': write_dir = optarg; break;
        case 'i': app.fwd_max_inflight = atoi(optarg); break;
        case 'h': gbe_usage(stdout); return 0;
        default: gbe_usage(stderr); return 2;
        }
    }
    for (char *t = fwd_list ? strtok_r(fwd_list, ",", &save) : NULL; t != NULL;
         t = strtok_r(NULL, ",", &save)) {
        if (app.n_fwd == GBE_MAX_FORWARD) {
            gbe_usage(stderr);
            return 2;
        }
        ep[app.n_fwd++] = t;
    }
    if (app.fwd_acks < 0)
        app.fwd_acks = app.n_fwd;
    if (optind != argc || app.body_size < 8 || opts.threads < 0 ||
        (fwd_list != NULL && (app.n_fwd == 0 || app.fwd_acks < 1 || app.fwd_acks > app.n_fwd)) ||
        app.fwd_max_inflight < 0 ||
        (sync_dir != NULL && fwd_list != NULL)) {
        gbe_usage(stderr);
        return 2;
    }
    app.nonce = gbe_now_real_ns();
    pthread_mutex_init(&app.park_mu, NULL);
    pthread_mutex_init(&app.sync_mu, NULL);
    app.sync_tail = &app.sync_head;
    app.fwd_qtail = &app.fwd_queue;
    if (sync_dir != NULL && (app.sync_fd = gbe_ring_open(sync_dir, "gbe-sync.data", true)) < 0) {
        fprintf(stderr, "gt_bench_empty: %s/gbe-sync.data: %s\n", sync_dir,
                strerror(errno));
        return 1;
    }
    if (write_dir != NULL && (app.write_fd = gbe_ring_open(write_dir, "gbe-write.data", false)) < 0) {
        fprintf(stderr, "gt_bench_empty: %s/gbe-write.data: %s\n", write_dir,
                strerror(errno));
        return 1;
    }
    if (app.n_fwd > 0) {
        px_rpc_client_opts_t co = {.endpoints = (const char *const *)ep,
                                   .n_endpoints = (size_t)app.n_fwd,
                                   .max_receive_bytes = 64LL * 1024 * 1024};

        if (px_rpc_client_new(&co, &app.fwd) != GT_OK) {
            fprintf(stderr, "gt_bench_empty: cannot make the --forward client\n");
            return 1;
        }
    }
    opts.app = &app;
    /* Signals are taken with sigwait; block them before any thread starts. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    px_method_table_init(&table);
    for (size_t i = 0; i < sizeof(gbe_methods) / sizeof(gbe_methods[0]); i++)
        if (px_method_table_add(&table, &gbe_methods[i]) != GT_OK)
            goto out;
    if (px_rpc_server_start(&opts, &table, &srv, err, sizeof(err)) != GT_OK) {
        fprintf(stderr, "gt_bench_empty: %s\n", err);
        goto out;
    }
    printf("gt_bench_empty: listening on port %d\n", px_rpc_server_port(srv));
    fflush(stdout);
    sigwait(&sigs, &sig);
    /* Forwards still in flight end before the server goes: their answers
     * come on the client's thread and hold calls of the server. */
    px_rpc_server_shutdown(srv);
    px_rpc_client_free(app.fwd);
    app.fwd = NULL;
    px_rpc_server_destroy(srv);
    rc = 0;
out:
    px_rpc_client_free(app.fwd);
    if (app.write_fd >= 0)
        close(app.write_fd);
    if (app.sync_fd >= 0)
        close(app.sync_fd);
    px_method_table_free(&table);
    return rc;
}
