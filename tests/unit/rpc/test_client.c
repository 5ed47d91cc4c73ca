/* The gRPC client runtime (rpc/px_rpc_client.c) against real servers on
 * loopback: the server runtime (px_rpc_server) with small test methods,
 * and gantry's own MessagingService (QueryRoute, ReceiveMessage's stream)
 * over a local store.  Unary and streaming calls, status and details,
 * deadlines, cancellation, callbacks on the given executor, fail-fast and
 * wait-for-ready while the server is down, reconnection when it is back,
 * shutdown with calls open.  Waits are for conditions, bounded generously
 * (a failure is a timeout, never a measure of speed). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <grpc/grpc.h>

#include "apache/rocketmq/v2/service.pb-c.h"
#include "px_rpc.h"
#include "px_rpc_client.h"
#include "px_service.h"
#include "st.h"

#define WAIT_MS 20000 /* bound for conditions that should hold at once */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* ---- a result slot the callbacks fill --------------------------------- */

typedef struct res {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    grpc_status_code code;
    char details[256];
    uint8_t resp[4096];
    size_t len;
    int msgs;             /* stream messages seen */
    char last[64];        /* last stream message */
    bool order_ok;        /* stream messages came 0, 1, 2, ... */
    bool msg_after_close;
    pthread_t thread;     /* thread of the final callback */
} res_t;

static void res_init(res_t *r)
{
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->order_ok = true;
}

static void res_destroy(res_t *r)
{
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
}

static bool res_wait(res_t *r, int64_t ms)
{
    int64_t end = now_ms() + ms;
    pthread_mutex_lock(&r->mu);
    while (!r->done && now_ms() < end) {
        pthread_mutex_unlock(&r->mu);
        usleep(2000);
        pthread_mutex_lock(&r->mu);
    }
    bool d = r->done;
    pthread_mutex_unlock(&r->mu);
    return d;
}

/* A call leaves the open count just after its final callback returns, on
 * the executor's thread: wait for the count to drain, then return it. */
static size_t open_calls_settled(px_rpc_client_t *c)
{
    int64_t end = now_ms() + WAIT_MS;
    while (px_rpc_client_open_calls(c) && now_ms() < end)
        usleep(2000);
    return px_rpc_client_open_calls(c);
}

static void on_unary(void *arg, grpc_status_code code, const char *details,
                     const uint8_t *resp, size_t len)
{
    res_t *r = arg;
    pthread_mutex_lock(&r->mu);
    r->code = code;
    snprintf(r->details, sizeof(r->details), "%s", details);
    r->len = len < sizeof(r->resp) ? len : sizeof(r->resp);
    if (len)
        memcpy(r->resp, resp, r->len);
    r->thread = pthread_self();
    r->done = true;
    pthread_mutex_unlock(&r->mu);
}

static void on_smsg(void *arg, const uint8_t *data, size_t len)
{
    res_t *r = arg;
    pthread_mutex_lock(&r->mu);
    if (r->done)
        r->msg_after_close = true;
    char want[32];
    snprintf(want, sizeof(want), "%d", r->msgs);
    size_t n = len < sizeof(r->last) - 1 ? len : sizeof(r->last) - 1;
    memcpy(r->last, data, n);
    r->last[n] = 0;
    if (strcmp(want, r->last) != 0)
        r->order_ok = false;
    r->msgs++;
    pthread_mutex_unlock(&r->mu);
}

static void on_sclose(void *arg, grpc_status_code code, const char *details)
{
    res_t *r = arg;
    pthread_mutex_lock(&r->mu);
    r->code = code;
    snprintf(r->details, sizeof(r->details), "%s", details);
    r->thread = pthread_self();
    r->done = true;
    pthread_mutex_unlock(&r->mu);
}

static const px_stream_cbs_t scbs = {on_smsg, on_sclose};

/* ---- an executor: one thread running posted tasks ---------------------- */

typedef struct task {
    struct task *next;
    px_rpc_task_fn fn;
    void *arg;
} task_t;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    task_t *head, *tail;
    bool stop;
    pthread_t thread;
    atomic_int posted;
} ex = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void *ex_main(void *p)
{
    (void)p;
    pthread_mutex_lock(&ex.mu);
    for (;;) {
        while (!ex.head && !ex.stop)
            pthread_cond_wait(&ex.cv, &ex.mu);
        if (!ex.head)
            break;
        task_t *t = ex.head;
        ex.head = t->next;
        if (!ex.head)
            ex.tail = NULL;
        pthread_mutex_unlock(&ex.mu);
        t->fn(t->arg);
        free(t);
        pthread_mutex_lock(&ex.mu);
    }
    pthread_mutex_unlock(&ex.mu);
    return NULL;
}

static gt_err_t ex_post(void *ctx, px_rpc_task_fn fn, void *arg)
{
    (void)ctx;
    task_t *t = malloc(sizeof(*t));
    if (!t)
        return GT_ENOMEM;
    *t = (task_t){NULL, fn, arg};
    pthread_mutex_lock(&ex.mu);
    if (ex.tail)
        ex.tail->next = t;
    else
        ex.head = t;
    ex.tail = t;
    atomic_fetch_add(&ex.posted, 1);
    pthread_cond_signal(&ex.cv);
    pthread_mutex_unlock(&ex.mu);
    return GT_OK;
}

static const px_rpc_exec_t test_exec = {ex_post, NULL};

/* ---- the test server's methods ----------------------------------------- */

static void m_echo(px_call_t *call, const uint8_t *d, size_t n)
{
    px_call_send(call, d, n);
    px_call_finish(call, GRPC_STATUS_OK, NULL);
}

static void m_fail(px_call_t *call, const uint8_t *d, size_t n)
{
    (void)d;
    (void)n;
    px_call_finish(call, GRPC_STATUS_NOT_FOUND, "no such thing");
}

static atomic_int hang_closed; /* Hang calls the server saw end */

static void m_hang(px_call_t *call, const uint8_t *d, size_t n)
{
    (void)call;
    (void)d;
    (void)n; /* never answers: the client's deadline or cancel ends it */
}

static void m_hang_int(px_call_t *call, px_interrupt_t why)
{
    (void)call;
    if (why == PX_INTERRUPT_CLOSED)
        atomic_fetch_add(&hang_closed, 1);
}

/* Count: the request is a decimal n; answers "0" .. "n-1", then OK. */
static void m_count(px_call_t *call, const uint8_t *d, size_t n)
{
    char buf[32];
    size_t k = n < sizeof(buf) - 1 ? n : sizeof(buf) - 1;
    memcpy(buf, d, k);
    buf[k] = 0;
    int cnt = atoi(buf);
    for (int i = 0; i < cnt; i++) {
        char m[32];
        int l = snprintf(m, sizeof(m), "%d", i);
        px_call_send(call, (const uint8_t *)m, (size_t)l);
    }
    px_call_finish(call, GRPC_STATUS_OK, NULL);
}

/* Trickle: one message, then nothing until the client goes away. */
static void m_trickle(px_call_t *call, const uint8_t *d, size_t n)
{
    (void)d;
    (void)n;
    px_call_send(call, (const uint8_t *)"0", 1);
}

/* Reply: px_call_reply (message and status as one batch); a finish after
 * it is refused (counted). */
static atomic_int reply_late_refused;

static void m_reply(px_call_t *call, const uint8_t *d, size_t n)
{
    CU_ASSERT_EQUAL(px_call_reply(call, d, n), GT_OK);
    if (px_call_finish(call, GRPC_STATUS_INTERNAL, "late") == GT_ESHUTDOWN)
        atomic_fetch_add(&reply_late_refused, 1);
}

/* CountReply: "0" .. "n-2" queued behind each other, then "n-1" with the
 * status through px_call_reply (n >= 1). */
static void m_count_reply(px_call_t *call, const uint8_t *d, size_t n)
{
    char buf[32];
    size_t k = n < sizeof(buf) - 1 ? n : sizeof(buf) - 1;
    memcpy(buf, d, k);
    buf[k] = 0;
    int cnt = atoi(buf);
    char m[32];
    int l;
    for (int i = 0; i + 1 < cnt; i++) {
        l = snprintf(m, sizeof(m), "%d", i);
        px_call_send(call, (const uint8_t *)m, (size_t)l);
    }
    l = snprintf(m, sizeof(m), "%d", cnt - 1);
    px_call_reply(call, (const uint8_t *)m, (size_t)l);
}

/* Ping (bidi): echoes each message; "end" finishes the call OK. */
static void m_ping(px_call_t *call, const uint8_t *d, size_t n)
{
    if (n == 3 && memcmp(d, "end", 3) == 0) {
        px_call_finish(call, GRPC_STATUS_OK, NULL);
        return;
    }
    px_call_send(call, d, n);
}

static const px_method_t methods[] = {
    {.path = "/t.T/Ping", .kind = PX_RPC_BIDI_STREAM, .on_message = m_ping},
    {.path = "/t.T/Echo", .kind = PX_RPC_UNARY, .on_message = m_echo},
    {.path = "/t.T/Reply", .kind = PX_RPC_UNARY, .on_message = m_reply},
    {.path = "/t.T/CountReply", .kind = PX_RPC_SERVER_STREAM,
     .on_message = m_count_reply},
    {.path = "/t.T/Fail", .kind = PX_RPC_UNARY, .on_message = m_fail},
    {.path = "/t.T/Hang", .kind = PX_RPC_UNARY, .on_message = m_hang,
     .on_interrupt = m_hang_int},
    {.path = "/t.T/Count", .kind = PX_RPC_SERVER_STREAM, .on_message = m_count},
    {.path = "/t.T/Trickle", .kind = PX_RPC_SERVER_STREAM, .on_message = m_trickle},
};

static px_method_table_t table;
static px_rpc_server_t *srv;
static int port;
static char endpoint[64];

static gt_err_t server_start(int p)
{
    char listen[64], err[256];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", p);
    px_rpc_options_t o = {.listen = listen, .threads = 2, .shutdown_timeout_ms = 2000,
                          .max_receive_bytes = 1 << 20};
    gt_err_t rc = px_rpc_server_start(&o, &table, &srv, err, sizeof(err));
    if (rc == GT_OK)
        port = px_rpc_server_port(srv);
    return rc;
}

static void server_stop(void)
{
    px_rpc_server_stop(srv);
    srv = NULL;
}

static px_rpc_client_t *client_new(const px_rpc_exec_t *x)
{
    const char *eps[] = {endpoint};
    px_rpc_client_opts_t o = {.endpoints = eps, .n_endpoints = 1,
                              .channels_per_endpoint = 2, .threads = 2,
                              .backoff_initial_ms = 50, .backoff_max_ms = 200,
                              .connect_timeout_ms = 200, .exec = x};
    px_rpc_client_t *c = NULL;
    CU_ASSERT_EQUAL_FATAL(px_rpc_client_new(&o, &c), GT_OK);
    return c;
}

static int suite_init(void)
{
    px_method_table_init(&table);
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (px_method_table_add(&table, &methods[i]) != GT_OK)
            return -1;
    if (server_start(0) != GT_OK)
        return -1;
    snprintf(endpoint, sizeof(endpoint), "127.0.0.1:%d", port);
    return pthread_create(&ex.thread, NULL, ex_main, NULL) == 0 ? 0 : -1;
}

static int suite_clean(void)
{
    if (srv)
        server_stop();
    px_method_table_free(&table);
    pthread_mutex_lock(&ex.mu);
    ex.stop = true;
    pthread_cond_signal(&ex.cv);
    pthread_mutex_unlock(&ex.mu);
    pthread_join(ex.thread, NULL);
    return 0;
}

/* ---- tests ------------------------------------------------------------- */

static void test_unary(void)
{
    px_rpc_client_t *c = client_new(&test_exec);
    /* Many calls over both channels, each answered with its own bytes. */
    enum { N = 64 };
    static res_t r[N];
    for (int i = 0; i < N; i++) {
        res_init(&r[i]);
        char b[32];
        int l = snprintf(b, sizeof(b), "hello %d", i);
        px_ccall_opts_t co = {.timeout_ms = WAIT_MS, .endpoint = -1};
        CU_ASSERT_EQUAL(px_rpc_unary(c, "/t.T/Echo", (const uint8_t *)b, (size_t)l, &co,
                                     on_unary, &r[i], NULL),
                        GT_OK);
    }
    for (int i = 0; i < N; i++) {
        CU_ASSERT_FATAL(res_wait(&r[i], WAIT_MS));
        char b[32];
        int l = snprintf(b, sizeof(b), "hello %d", i);
        if (r[i].code != GRPC_STATUS_OK) fprintf(stderr, "code %d %s\n", r[i].code, r[i].details);
        CU_ASSERT_EQUAL(r[i].code, GRPC_STATUS_OK);
        CU_ASSERT_EQUAL(r[i].len, (size_t)l);
        CU_ASSERT(memcmp(r[i].resp, b, (size_t)l) == 0);
        /* On the executor's thread. */
        CU_ASSERT(pthread_equal(r[i].thread, ex.thread));
        res_destroy(&r[i]);
    }
    /* An empty request and response. */
    res_t e;
    res_init(&e);
    CU_ASSERT_EQUAL(px_rpc_unary(c, "/t.T/Echo", NULL, 0, NULL, on_unary, &e, NULL), GT_OK);
    CU_ASSERT_FATAL(res_wait(&e, WAIT_MS));
    CU_ASSERT_EQUAL(e.code, GRPC_STATUS_OK);
    CU_ASSERT_EQUAL(e.len, 0);
    res_destroy(&e);
    CU_ASSERT(px_rpc_client_ready(c));
    CU_ASSERT_EQUAL(open_calls_settled(c), 0);
    px_rpc_client_free(c);
}

/* px_rpc_unary_parts: the server gets the parts as one message, in order
 * (an empty part and parts of a few KiB among them); no part: EINVAL. */
static void test_unary_parts(void)
{
    px_rpc_client_t *c = client_new(&test_exec);
    static uint8_t big[3000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 7 + 1);
    px_rpc_part_t parts[] = {{"he", 2}, {"", 0}, {big, sizeof(big)}, {"llo", 3}};
    res_t r;
    res_init(&r);
    CU_ASSERT_EQUAL(px_rpc_unary_parts(c, "/t.T/Echo", parts, 4, NULL, on_unary, &r, NULL),
                    GT_OK);
    CU_ASSERT_FATAL(res_wait(&r, WAIT_MS));
    CU_ASSERT_EQUAL(r.code, GRPC_STATUS_OK);
    CU_ASSERT_EQUAL_FATAL(r.len, 2 + sizeof(big) + 3);
    CU_ASSERT(memcmp(r.resp, "he", 2) == 0);
    CU_ASSERT(memcmp(r.resp + 2, big, sizeof(big)) == 0);
    CU_ASSERT(memcmp(r.resp + 2 + sizeof(big), "llo", 3) == 0);
    res_destroy(&r);
    CU_ASSERT_EQUAL(px_rpc_unary_parts(c, "/t.T/Echo", parts, 0, NULL, on_unary, &r, NULL),
                    GT_EINVAL);
    CU_ASSERT_EQUAL(open_calls_settled(c), 0);
    px_rpc_client_free(c);
}

/* px_call_reply: the message and OK arrive (unary and after queued
 * stream messages, in order); a finish after it is refused. */
static void test_reply(void)
{
    px_rpc_client_t *c = client_new(&test_exec);
    res_t r;
    int refused = atomic_load(&reply_late_refused);

    res_init(&r);
    CU_ASSERT_EQUAL(px_rpc_unary(c, "/t.T/Reply", (const uint8_t *)"abc", 3, NULL,
                                 on_unary, &r, NULL),
                    GT_OK);
    CU_ASSERT_FATAL(res_wait(&r, WAIT_MS));
    CU_ASSERT_EQUAL(r.code, GRPC_STATUS_OK);
    CU_ASSERT_EQUAL(r.len, 3);
    CU_ASSERT(memcmp(r.resp, "abc", 3) == 0);
    /* The handler counts the refusal after its reply went out: the reply
     * may arrive here first. */
    int64_t end = now_ms() + WAIT_MS;
    while (atomic_load(&reply_late_refused) == refused && now_ms() < end)
        usleep(2000);
    CU_ASSERT_EQUAL(atomic_load(&reply_late_refused), refused + 1);
    res_destroy(&r);

    res_init(&r);
    px_ccall_opts_t co = {.timeout_ms = WAIT_MS, .endpoint = 0};
    CU_ASSERT_EQUAL(px_rpc_stream(c, "/t.T/CountReply", (const uint8_t *)"300", 3, &co,
                                  &scbs, &r, NULL),
                    GT_OK);
    CU_ASSERT_FATAL(res_wait(&r, WAIT_MS));
    CU_ASSERT_EQUAL(r.code, GRPC_STATUS_OK);
    CU_ASSERT_EQUAL(r.msgs, 300);
    CU_ASSERT(r.order_ok);
    CU_ASSERT(!r.msg_after_close);
    res_destroy(&r);
    px_rpc_client_free(c);
}

static void test_status(void)
{
    px_rpc_client_t *c = client_new(NULL);
    res_t r;
    res_init(&r);
    CU_ASSERT_EQUAL(px_rpc_unary(c, "/t.T/Fail", (const uint8_t *)"x", 1, NULL, on_unary, &r,
                                 NULL),
                    GT_OK);
    CU_ASSERT_FATAL(res_wait(&r, WAIT_MS));
    CU_ASSERT_EQUAL(r.code, GRPC_STATUS_NOT_FOUND);
    CU_ASSERT_STRING_EQUAL(r.details, "no such thing");
    CU_ASSERT_EQUAL(r.len, 0);
    res_destroy(&r);

    res_init(&r);
    CU_ASSERT_EQUAL(px_rpc_unary(c, "/t.T/Nope", (const uint8_t *)"x", 1, NULL, on_unary, &r,
                                 NULL),
                    GT_OK);
    CU_ASSERT_FATAL(res_wait(&r, WAIT_MS));
    CU_ASSERT_EQUAL(r.code, GRPC_STATUS_UNIMPLEMENTED);
    res_destroy(&r);
    px_rpc_client_free(c);
}

static void test_stream(void)
{
    px_rpc_client_t *c = client_new(&test_exec);
    res_t r;
    res_init(&r);
    px_ccall_opts_t co = {.timeout_ms = WAIT_MS, .endpoint = 0};
    CU_ASSERT_EQUAL(px_rpc_stream(c, "/t.T/Count", (const uint8_t *)"500", 3, &co, &scbs, &r,
                                  NULL),
                    GT_OK);
    CU_ASSERT_FATAL(res_wait(&r, WAIT_MS));
    CU_ASSERT_EQUAL(r.code, GRPC_STATUS_OK);
    CU_ASSERT_EQUAL(r.msgs, 500);
    CU_ASSERT(r.order_ok);
    CU_ASSERT(!r.msg_after_close);
    CU_ASSERT(pthread_equal(r.thread, ex.thread));
    res_destroy(&r);

    /* No message at all. */
    res_init(&r);
    CU_ASSERT_EQUAL(px_rpc_stream(c, "/t.T/Count", (const uint8_t *)"0", 1, &co, &scbs, &r,
                                  NULL),
                    GT_OK);
    CU_ASSERT_FATAL(res_wait(&r, WAIT_MS));
    CU_ASSERT_EQUAL(r.code, GRPC_STATUS_OK);
    CU_ASSERT_EQUAL(r.msgs, 0);
    res_destroy(&r);
    px_rpc_client_free(c);
}

/* A bidi ping-pong: each answer is handled on the executor and sends the
 * next request from there (as a follower's fetch chain does). */
typedef struct pingpong {
    res_t r;
    px_ccall_t *call;
    int rounds;
    gt_err_t send_rc;
} pingpong_t;

static void on_pong(void *arg, const uint8_t *data, size_t len)
{
    pingpong_t *p = arg;
    on_smsg(&p->r, data, len);
    pthread_mutex_lock(&p->r.mu);
    int next = p->r.msgs;
    px_ccall_t *k = p->call;
    pthread_mutex_unlock(&p->r.mu);
    char m[32];
    int l = next < p->rounds ? snprintf(m, sizeof(m), "%d", next)
                             : snprintf(m, sizeof(m), "end");
    gt_err_t rc = px_ccall_send(k, (const uint8_t *)m, (size_t)l);
    if (rc != GT_OK) {
        pthread_mutex_lock(&p->r.mu);
        p->send_rc = rc;
        pthread_mutex_unlock(&p->r.mu);
    }
}

static void on_pong_close(void *arg, grpc_status_code code, const char *details)
{
    on_sclose(&((pingpong_t *)arg)->r, code, details);
}

static const px_stream_cbs_t pcbs = {on_pong, on_pong_close};

static void test_bidi(void)
{
    px_rpc_client_t *c = client_new(&test_exec);
    pingpong_t p = {.rounds = 200};
    px_ccall_t *k = NULL;
    res_init(&p.r);
    pthread_mutex_lock(&p.r.mu); /* the first answer waits for p.call */
    CU_ASSERT_EQUAL_FATAL(px_rpc_bidi(c, "/t.T/Ping", (const uint8_t *)"0", 1, NULL, &pcbs,
                                      &p, &k),
                          GT_OK);
    p.call = k;
    pthread_mutex_unlock(&p.r.mu);
    CU_ASSERT_FATAL(res_wait(&p.r, WAIT_MS));
    CU_ASSERT_EQUAL(p.r.code, GRPC_STATUS_OK);
    CU_ASSERT_EQUAL(p.r.msgs, 200);
    CU_ASSERT(p.r.order_ok);
    CU_ASSERT(!p.r.msg_after_close);
    CU_ASSERT_EQUAL(p.send_rc, GT_OK);
    /* Ended: nothing more goes. */
    CU_ASSERT_EQUAL(px_ccall_send(k, (const uint8_t *)"x", 1), GT_ESHUTDOWN);
    px_ccall_unref(k);
    res_destroy(&p.r);

    /* Sends right behind the first message: one waits for the send in
     * flight, a further one is refused (GT_EBUSY) until that went; every
     * accepted message is answered, in order. */
    pingpong_t q = {.rounds = 0};
    res_init(&q.r);
    k = NULL;
    CU_ASSERT_EQUAL_FATAL(px_rpc_bidi(c, "/t.T/Ping", (const uint8_t *)"0", 1, NULL, &scbs,
                                      &q.r, &k),
                          GT_OK);
    gt_err_t a = px_ccall_send(k, (const uint8_t *)"1", 1);
    CU_ASSERT_EQUAL(a, GT_OK);
    gt_err_t b;
    while ((b = px_ccall_send(k, (const uint8_t *)"2", 1)) == GT_EBUSY)
        usleep(1000);
    CU_ASSERT_EQUAL(b, GT_OK);
    int64_t end = now_ms() + WAIT_MS;
    for (;;) {
        pthread_mutex_lock(&q.r.mu);
        int got = q.r.msgs;
        pthread_mutex_unlock(&q.r.mu);
        if (got >= 3 || now_ms() > end)
            break;
        usleep(2000);
    }
    px_ccall_cancel(k);
    CU_ASSERT_FATAL(res_wait(&q.r, WAIT_MS));
    CU_ASSERT_EQUAL(q.r.msgs, 3);
    CU_ASSERT(q.r.order_ok);
    CU_ASSERT_EQUAL(q.r.code, GRPC_STATUS_CANCELLED);
    /* Not a bidi call. */
    px_ccall_t *u = NULL;
    res_t r;
    res_init(&r);
    CU_ASSERT_EQUAL(px_rpc_stream(c, "/t.T/Count", (const uint8_t *)"1", 1, NULL, &scbs, &r,
                                  &u),
                    GT_OK);
    CU_ASSERT_EQUAL(px_ccall_send(u, (const uint8_t *)"x", 1), GT_EINVAL);
    CU_ASSERT_FATAL(res_wait(&r, WAIT_MS));
    CU_ASSERT_EQUAL(px_rpc_bidi(c, "/t.T/Ping", (const uint8_t *)"0", 1, NULL, &scbs, &r,
                                NULL),
                    GT_EINVAL);
    px_ccall_unref(u);
    px_ccall_unref(k);
    res_destroy(&r);
    res_destroy(&q.r);
    px_rpc_client_free(c);
}

static void test_deadline(void)
{
    px_rpc_client_t *c = client_new(&test_exec);
    int before = atomic_load(&hang_closed);
    res_t r, s;
    /* Both channels connected first: the 150 ms deadline is for the calls,
     * not for connecting (a loaded sanitizer run can take longer). */
    int64_t ready_by = now_ms() + WAIT_MS;
    for (int ch = 0; ch < 2; ch++)
        while (px_rpc_client_channel_state(c, 0, ch, true) != GRPC_CHANNEL_READY &&
               now_ms() < ready_by)
            usleep(5000);
    CU_ASSERT_EQUAL_FATAL(px_rpc_client_channel_state(c, 0, 0, false), GRPC_CHANNEL_READY);
    CU_ASSERT_EQUAL_FATAL(px_rpc_client_channel_state(c, 0, 1, false), GRPC_CHANNEL_READY);
    res_init(&r);
    res_init(&s);
    px_ccall_opts_t co = {.timeout_ms = 150, .endpoint = -1};
    int64_t t0 = now_ms();
    CU_ASSERT_EQUAL(px_rpc_unary(c, "/t.T/Hang", (const uint8_t *)"x", 1, &co, on_unary, &r,
                                 NULL),
                    GT_OK);
    CU_ASSERT_EQUAL(px_rpc_stream(c, "/t.T/Trickle", (const uint8_t *)"x", 1, &co, &scbs, &s,
                                  NULL),
                    GT_OK);
    CU_ASSERT_FATAL(res_wait(&r, WAIT_MS));
    CU_ASSERT_FATAL(res_wait(&s, WAIT_MS));
    CU_ASSERT(now_ms() - t0 >= 150); /* not before its deadline */
    CU_ASSERT_EQUAL(r.code, GRPC_STATUS_DEADLINE_EXCEEDED);
    CU_ASSERT_EQUAL(s.code, GRPC_STATUS_DEADLINE_EXCEEDED);
    CU_ASSERT_EQUAL(s.msgs, 1); /* the message before the deadline came */
    CU_ASSERT(px_rpc_status_transient(r.code));
    res_destroy(&r);
    res_destroy(&s);
    /* The server saw the call end too. */
    int64_t end = now_ms() + WAIT_MS;
    while (atomic_load(&hang_closed) == before && now_ms() < end)
        usleep(2000);
    CU_ASSERT(atomic_load(&hang_closed) > before);
    px_rpc_client_free(c);
}

static void test_cancel(void)
{
    px_rpc_client_t *c = client_new(&test_exec);
    res_t r, s;
    res_init(&r);
    res_init(&s);
    px_ccall_t *k1 = NULL, *k2 = NULL;
    CU_ASSERT_EQUAL(px_rpc_unary(c, "/t.T/Hang", (const uint8_t *)"x", 1, NULL, on_unary, &r,
                                 &k1),
                    GT_OK);
    CU_ASSERT_EQUAL(px_rpc_stream(c, "/t.T/Trickle", (const uint8_t *)"x", 1, NULL, &scbs, &s,
                                  &k2),
                    GT_OK);
    /* The stream's first message is in: it is open mid-stream. */
    int64_t end = now_ms() + WAIT_MS;
    for (;;) {
        pthread_mutex_lock(&s.mu);
        int m = s.msgs;
        pthread_mutex_unlock(&s.mu);
        if (m == 1 || now_ms() > end)
            break;
        usleep(2000);
    }
    CU_ASSERT_EQUAL(px_rpc_client_open_calls(c), 2);
    CU_ASSERT(!res_wait(&r, 0));
    px_ccall_cancel(k1);
    px_ccall_cancel(k2);
    px_ccall_cancel(k2); /* twice is harmless */
    CU_ASSERT_FATAL(res_wait(&r, WAIT_MS));
    CU_ASSERT_FATAL(res_wait(&s, WAIT_MS));
    CU_ASSERT_EQUAL(r.code, GRPC_STATUS_CANCELLED);
    CU_ASSERT_EQUAL(s.code, GRPC_STATUS_CANCELLED);
    CU_ASSERT_EQUAL(s.msgs, 1);
    px_ccall_cancel(k1); /* after the end: nothing */
    px_ccall_unref(k1);
    px_ccall_unref(k2);
    res_destroy(&r);
    res_destroy(&s);
    CU_ASSERT_EQUAL(open_calls_settled(c), 0);
    px_rpc_client_free(c);
}

/* Freeing the client with calls open: each gets its final callback. */
static void test_free_open(void)
{
    px_rpc_client_t *c = client_new(&test_exec);
    res_t r, s;
    res_init(&r);
    res_init(&s);
    CU_ASSERT_EQUAL(px_rpc_unary(c, "/t.T/Hang", (const uint8_t *)"x", 1, NULL, on_unary, &r,
                                 NULL),
                    GT_OK);
    CU_ASSERT_EQUAL(px_rpc_stream(c, "/t.T/Trickle", (const uint8_t *)"x", 1, NULL, &scbs, &s,
                                  NULL),
                    GT_OK);
    px_rpc_client_free(c); /* returns after both callbacks ran */
    CU_ASSERT(res_wait(&r, 0));
    CU_ASSERT(res_wait(&s, 0));
    CU_ASSERT_EQUAL(r.code, GRPC_STATUS_CANCELLED);
    CU_ASSERT_EQUAL(s.code, GRPC_STATUS_CANCELLED);
    res_destroy(&r);
    res_destroy(&s);
}

static atomic_int timer_ran;
static void on_timer(void *arg)
{
    (void)arg;
    atomic_fetch_add(&timer_ran, 1);
}

static void test_timer(void)
{
    px_rpc_client_t *c = client_new(&test_exec);
    atomic_store(&timer_ran, 0);
    int64_t t0 = now_ms();
    CU_ASSERT_EQUAL(px_rpc_client_after(c, 50, on_timer, NULL), GT_OK);
    CU_ASSERT_EQUAL(px_rpc_client_after(c, 3600 * 1000, on_timer, NULL), GT_OK);
    int64_t end = now_ms() + WAIT_MS;
    while (atomic_load(&timer_ran) == 0 && now_ms() < end)
        usleep(2000);
    CU_ASSERT_EQUAL(atomic_load(&timer_ran), 1);
    CU_ASSERT(now_ms() - t0 >= 50);
    /* The hour-long one runs (early) when the client goes. */
    px_rpc_client_free(c);
    CU_ASSERT_EQUAL(atomic_load(&timer_ran), 2);
}

/* Server down: fail-fast calls end UNAVAILABLE at once, wait-for-ready
 * calls wait; server back on the same port: the channels reconnect by
 * themselves and the waiting call goes through. */
static void test_reconnect(void)
{
    px_rpc_client_t *c = client_new(&test_exec);
    res_t r;
    res_init(&r);
    CU_ASSERT_EQUAL(px_rpc_unary(c, "/t.T/Echo", (const uint8_t *)"a", 1, NULL, on_unary, &r,
                                 NULL),
                    GT_OK);
    CU_ASSERT_FATAL(res_wait(&r, WAIT_MS));
    CU_ASSERT_EQUAL(r.code, GRPC_STATUS_OK);
    res_destroy(&r);

    int old_port = port;
    server_stop();
    /* Until the channels notice, a call may still fail otherwise; wait for
     * the fail-fast answer. */
    int64_t end = now_ms() + WAIT_MS;
    grpc_status_code code = GRPC_STATUS_OK;
    while (now_ms() < end) {
        res_init(&r);
        px_ccall_opts_t co = {.timeout_ms = WAIT_MS, .endpoint = -1};
        CU_ASSERT_EQUAL_FATAL(px_rpc_unary(c, "/t.T/Echo", (const uint8_t *)"b", 1, &co,
                                           on_unary, &r, NULL),
                              GT_OK);
        CU_ASSERT_FATAL(res_wait(&r, WAIT_MS));
        code = r.code;
        res_destroy(&r);
        if (code == GRPC_STATUS_UNAVAILABLE)
            break;
        usleep(10000);
    }
    CU_ASSERT_EQUAL(code, GRPC_STATUS_UNAVAILABLE);
    /* Each channel notices the server gone on its own. */
    end = now_ms() + WAIT_MS;
    while (px_rpc_client_ready(c) && now_ms() < end)
        usleep(5000);
    CU_ASSERT(!px_rpc_client_ready(c));

    /* A wait-for-ready call started while the server is down. */
    res_t w;
    res_init(&w);
    px_ccall_opts_t wco = {.timeout_ms = WAIT_MS, .flags = PX_CCALL_WAIT_FOR_READY,
                           .endpoint = -1};
    CU_ASSERT_EQUAL(px_rpc_unary(c, "/t.T/Echo", (const uint8_t *)"w", 1, &wco, on_unary, &w,
                                 NULL),
                    GT_OK);
    usleep(100000); /* not a timing assertion: gives it a chance to fail */
    CU_ASSERT(!res_wait(&w, 0));

    CU_ASSERT_EQUAL_FATAL(server_start(old_port), GT_OK);
    CU_ASSERT_FATAL(res_wait(&w, WAIT_MS));
    CU_ASSERT_EQUAL(w.code, GRPC_STATUS_OK);
    CU_ASSERT_EQUAL(w.len, 1);
    res_destroy(&w);
    /* And fail-fast calls work again without anyone's help. */
    end = now_ms() + WAIT_MS;
    code = GRPC_STATUS_UNAVAILABLE;
    while (code != GRPC_STATUS_OK && now_ms() < end) {
        res_init(&r);
        CU_ASSERT_EQUAL_FATAL(px_rpc_unary(c, "/t.T/Echo", (const uint8_t *)"c", 1, NULL,
                                           on_unary, &r, NULL),
                              GT_OK);
        CU_ASSERT_FATAL(res_wait(&r, WAIT_MS));
        code = r.code;
        res_destroy(&r);
        if (code != GRPC_STATUS_OK)
            usleep(10000);
    }
    CU_ASSERT_EQUAL(code, GRPC_STATUS_OK);
    px_rpc_client_free(c);
}

/* Waits until channel `ch` of the one endpoint is in `state` (without
 * asking it to connect); true if it got there. */
static bool channel_wait(px_rpc_client_t *c, int ch, int state)
{
    int64_t end = now_ms() + WAIT_MS;
    while (px_rpc_client_channel_state(c, 0, ch, false) != state) {
        if (now_ms() >= end)
            return false;
        usleep(5000);
    }
    return true;
}

/* One fail-fast Echo; its status. */
static grpc_status_code echo_once(px_rpc_client_t *c)
{
    res_t r;
    grpc_status_code code;

    res_init(&r);
    CU_ASSERT_EQUAL_FATAL(px_rpc_unary(c, "/t.T/Echo", (const uint8_t *)"s", 1, NULL,
                                       on_unary, &r, NULL),
                          GT_OK);
    CU_ASSERT_FATAL(res_wait(&r, WAIT_MS));
    code = r.code;
    res_destroy(&r);
    return code;
}

/* After the server restarts, one channel of the endpoint is connected and
 * the other still waits out its reconnect backoff (a minute here): calls
 * in turn for the waiting one go through the connected one instead of
 * failing with UNAVAILABLE (they did: an ack got "try again" right after a
 * store node restarted, integration_store_remote under ASan). */
static void test_sibling_channel(void)
{
    const char *eps[] = {endpoint};
    px_rpc_client_opts_t o = {.endpoints = eps, .n_endpoints = 1,
                              .channels_per_endpoint = 2, .threads = 1,
                              .backoff_initial_ms = 60000,
                              .backoff_max_ms = 60000,
                              .connect_timeout_ms = 200, .exec = &test_exec};
    px_rpc_client_t *c = NULL;
    int old_port = port, failed = 0;

    CU_ASSERT_EQUAL_FATAL(px_rpc_client_new(&o, &c), GT_OK);
    CU_ASSERT_FATAL(channel_wait(c, 0, GRPC_CHANNEL_READY));
    CU_ASSERT_FATAL(channel_wait(c, 1, GRPC_CHANNEL_READY));
    server_stop();
    /* Both channels try to reconnect, fail, and wait out their backoff. */
    for (int i = 0; i < 2; i++) {
        int64_t end = now_ms() + WAIT_MS;
        while (px_rpc_client_channel_state(c, 0, i, false) !=
                   GRPC_CHANNEL_TRANSIENT_FAILURE &&
               now_ms() < end) {
            (void)px_rpc_client_channel_state(c, 0, i, true);
            usleep(5000);
        }
    }
    CU_ASSERT_EQUAL_FATAL(px_rpc_client_channel_state(c, 0, 0, false),
                          GRPC_CHANNEL_TRANSIENT_FAILURE);
    CU_ASSERT_EQUAL_FATAL(px_rpc_client_channel_state(c, 0, 1, false),
                          GRPC_CHANNEL_TRANSIENT_FAILURE);
    CU_ASSERT_EQUAL_FATAL(server_start(old_port), GT_OK);
    /* Channel 1 reconnects now; channel 0 stays in its backoff. */
    (void)px_rpc_client_channel_state(c, 0, 1, true);
    CU_ASSERT_FATAL(channel_wait(c, 1, GRPC_CHANNEL_READY));
    CU_ASSERT_EQUAL(px_rpc_client_channel_state(c, 0, 0, false),
                    GRPC_CHANNEL_TRANSIENT_FAILURE);
    for (int i = 0; i < 6; i++)
        if (echo_once(c) != GRPC_STATUS_OK)
            failed++;
    CU_ASSERT_EQUAL(failed, 0);
    px_rpc_client_free(c);
}

static void test_bad_args(void)
{
    px_rpc_client_t *c = NULL;
    const char *none[] = {""};
    px_rpc_client_opts_t o = {.endpoints = none, .n_endpoints = 1};
    CU_ASSERT_EQUAL(px_rpc_client_new(&o, &c), GT_EINVAL);
    o.n_endpoints = 0;
    CU_ASSERT_EQUAL(px_rpc_client_new(&o, &c), GT_EINVAL);
    CU_ASSERT_PTR_NULL(c);
    px_rpc_client_free(NULL);
}

/* ---- gantry's own MessagingService ------------------------------------- */

typedef struct wait_done {
    atomic_int done;
    gt_err_t err;
} wait_done_t;

static void on_st_done(void *arg, gt_err_t err)
{
    wait_done_t *w = arg;
    w->err = err;
    atomic_store(&w->done, 1);
}

static gt_err_t st_wait(wait_done_t *w)
{
    int64_t end = now_ms() + WAIT_MS;
    while (!atomic_load(&w->done) && now_ms() < end)
        usleep(1000);
    return atomic_load(&w->done) ? w->err : GT_ETIMEDOUT;
}

/* Collects ReceiveMessage responses. */
typedef struct rx {
    res_t r;
    int statuses, messages;
    int last_code;
} rx_t;

static void on_rx_msg(void *arg, const uint8_t *data, size_t len)
{
    rx_t *x = arg;
    Apache__Rocketmq__V2__ReceiveMessageResponse *m =
        apache__rocketmq__v2__receive_message_response__unpack(NULL, len, data);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    pthread_mutex_lock(&x->r.mu);
    if (m->content_case == APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__CONTENT_STATUS) {
        x->statuses++;
        x->last_code = m->status->code;
    } else if (m->content_case == APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__CONTENT_MESSAGE) {
        x->messages++;
    }
    pthread_mutex_unlock(&x->r.mu);
    apache__rocketmq__v2__receive_message_response__free_unpacked(m, NULL);
}

static void on_rx_close(void *arg, grpc_status_code code, const char *details)
{
    on_sclose(&((rx_t *)arg)->r, code, details);
}

static void test_messaging_service(void)
{
    char dir[] = "/tmp/gt-rpc-client-XXXXXX";
    const char *tmp = getenv("TMPDIR");
    char path[512];
    snprintf(path, sizeof(path), "%s/gt-rpc-client-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(path));
    (void)dir;

    cfg_t cfg;
    cfg_init(&cfg);
    px_exec_t *x = px_exec_new(2);
    st_config_t sc;
    st_config_init(&sc);
    sc.dir = path;
    st_store_t *inner = NULL, *st = NULL;
    CU_ASSERT_EQUAL_FATAL(st_local_open(&sc, &inner), GT_OK);
    CU_ASSERT_EQUAL_FATAL(st_exec_open(inner, px_exec_store(x), &st), GT_OK);
    st_topic_t t = {.type = ST_TOPIC_NORMAL, .queue_count = 4, .perm = ST_PERM_READ | ST_PERM_WRITE};
    snprintf(t.name, sizeof(t.name), "rpc-topic");
    wait_done_t w = {0};
    st_topic_put(st, &t, on_st_done, &w);
    CU_ASSERT_EQUAL_FATAL(st_wait(&w), GT_OK);
    st_group_t g = {.max_delivery_attempts = 16};
    snprintf(g.name, sizeof(g.name), "rpc-group");
    wait_done_t w2 = {0};
    st_group_put(st, &g, on_st_done, &w2);
    CU_ASSERT_EQUAL_FATAL(st_wait(&w2), GT_OK);

    px_svc_t *svc = px_svc_new(st, &cfg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(svc);
    CU_ASSERT_EQUAL_FATAL(px_svc_start(svc), GT_OK);
    px_method_table_t mt;
    px_method_table_init(&mt);
    CU_ASSERT_EQUAL_FATAL(px_service_register(&mt), GT_OK);
    char err[256];
    px_rpc_options_t o = {.listen = "127.0.0.1:0", .threads = 2, .shutdown_timeout_ms = 2000,
                          .max_receive_bytes = 8 << 20, .app = svc};
    px_rpc_server_t *gs = NULL;
    CU_ASSERT_EQUAL_FATAL(px_rpc_server_start(&o, &mt, &gs, err, sizeof(err)), GT_OK);
    char ep[64];
    snprintf(ep, sizeof(ep), "127.0.0.1:%d", px_rpc_server_port(gs));
    const char *eps[] = {ep};
    px_rpc_client_opts_t co = {.endpoints = eps, .n_endpoints = 1, .exec = &test_exec};
    px_rpc_client_t *c = NULL;
    CU_ASSERT_EQUAL_FATAL(px_rpc_client_new(&co, &c), GT_OK);

    /* QueryRoute: the topic's four queues. */
    Apache__Rocketmq__V2__Resource topic = APACHE__ROCKETMQ__V2__RESOURCE__INIT;
    topic.name = "rpc-topic";
    Apache__Rocketmq__V2__Resource group = APACHE__ROCKETMQ__V2__RESOURCE__INIT;
    group.name = "rpc-group";
    Apache__Rocketmq__V2__QueryRouteRequest qr = APACHE__ROCKETMQ__V2__QUERY_ROUTE_REQUEST__INIT;
    qr.topic = &topic;
    uint8_t buf[1024];
    size_t n = apache__rocketmq__v2__query_route_request__pack(&qr, buf);
    res_t r;
    res_init(&r);
    static const px_rpc_md_t md[] = {{"x-mq-client-id", "rpc-client-test"},
                                     {"x-mq-language", "CPP"},
                                     {"x-mq-protocol", "v2"}};
    px_ccall_opts_t uo = {.timeout_ms = WAIT_MS, .endpoint = -1, .md = md, .n_md = 3};
    CU_ASSERT_EQUAL(px_rpc_unary(c, "/apache.rocketmq.v2.MessagingService/QueryRoute", buf, n,
                                 &uo, on_unary, &r, NULL),
                    GT_OK);
    CU_ASSERT_FATAL(res_wait(&r, WAIT_MS));
    CU_ASSERT_EQUAL_FATAL(r.code, GRPC_STATUS_OK);
    Apache__Rocketmq__V2__QueryRouteResponse *qa =
        apache__rocketmq__v2__query_route_response__unpack(NULL, r.len, r.resp);
    CU_ASSERT_PTR_NOT_NULL_FATAL(qa);
    if (qa->status->code != APACHE__ROCKETMQ__V2__CODE__OK)
        fprintf(stderr, "QueryRoute: %d %s\n", qa->status->code, qa->status->message);
    CU_ASSERT_EQUAL(qa->status->code, APACHE__ROCKETMQ__V2__CODE__OK);
    CU_ASSERT(qa->n_message_queues >= 4);
    apache__rocketmq__v2__query_route_response__free_unpacked(qa, NULL);
    res_destroy(&r);

    /* ReceiveMessage on an empty topic, long polling 30 s: the stream
     * stays open (parked on the server) until the client cancels it. */
    Apache__Rocketmq__V2__MessageQueue mq = APACHE__ROCKETMQ__V2__MESSAGE_QUEUE__INIT;
    mq.topic = &topic;
    mq.id = -1;
    Apache__Rocketmq__V2__FilterExpression fe = APACHE__ROCKETMQ__V2__FILTER_EXPRESSION__INIT;
    fe.type = APACHE__ROCKETMQ__V2__FILTER_TYPE__TAG;
    fe.expression = "*";
    Google__Protobuf__Duration inv = GOOGLE__PROTOBUF__DURATION__INIT, lp = inv;
    inv.seconds = 30;
    lp.seconds = 30;
    Apache__Rocketmq__V2__ReceiveMessageRequest rq =
        APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_REQUEST__INIT;
    rq.group = &group;
    rq.message_queue = &mq;
    rq.filter_expression = &fe;
    rq.batch_size = 8;
    rq.invisible_duration_present_case =
        APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_REQUEST__INVISIBLE_DURATION_PRESENT_INVISIBLE_DURATION;
    rq.invisible_duration = &inv;
    rq.long_polling_timeout_present_case =
        APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_REQUEST__LONG_POLLING_TIMEOUT_PRESENT_LONG_POLLING_TIMEOUT;
    rq.long_polling_timeout = &lp;
    n = apache__rocketmq__v2__receive_message_request__pack(&rq, buf);
    static const px_stream_cbs_t rxcbs = {on_rx_msg, on_rx_close};
    rx_t a;
    memset(&a, 0, sizeof(a));
    res_init(&a.r);
    px_ccall_opts_t so = {.timeout_ms = 60000, .endpoint = -1, .md = md, .n_md = 3};
    px_ccall_t *ak = NULL;
    CU_ASSERT_EQUAL(px_rpc_stream(c, "/apache.rocketmq.v2.MessagingService/ReceiveMessage", buf,
                                  n, &so, &rxcbs, &a, &ak),
                    GT_OK);
    CU_ASSERT(!res_wait(&a.r, 100)); /* not a timing assertion: still open */
    px_ccall_cancel(ak);
    CU_ASSERT_FATAL(res_wait(&a.r, WAIT_MS));
    CU_ASSERT_EQUAL(a.r.code, GRPC_STATUS_CANCELLED);
    CU_ASSERT_EQUAL(a.messages, 0);
    px_ccall_unref(ak);
    res_destroy(&a.r);

    /* A message appended while a receive is parked wakes it: the stream
     * brings the message, its status, and ends OK. */
    rx_t b;
    memset(&b, 0, sizeof(b));
    res_init(&b.r);
    px_ccall_t *bk = NULL;
    CU_ASSERT_EQUAL(px_rpc_stream(c, "/apache.rocketmq.v2.MessagingService/ReceiveMessage", buf,
                                  n, &so, &rxcbs, &b, &bk),
                    GT_OK);
    Apache__Rocketmq__V2__SystemProperties sp = APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__INIT;
    sp.message_id = "0123456789ABCDEF0123456789ABCDEF";
    sp.body_encoding = APACHE__ROCKETMQ__V2__ENCODING__IDENTITY;
    sp.message_type = APACHE__ROCKETMQ__V2__MESSAGE_TYPE__NORMAL;
    Apache__Rocketmq__V2__Message msg = APACHE__ROCKETMQ__V2__MESSAGE__INIT;
    msg.topic = &topic;
    msg.system_properties = &sp;
    msg.body.data = (uint8_t *)"hi";
    msg.body.len = 2;
    Apache__Rocketmq__V2__Message *msgs[] = {&msg};
    Apache__Rocketmq__V2__SendMessageRequest sq = APACHE__ROCKETMQ__V2__SEND_MESSAGE_REQUEST__INIT;
    sq.n_messages = 1;
    sq.messages = msgs;
    size_t sn = apache__rocketmq__v2__send_message_request__pack(&sq, buf + 512);
    /* The receive may not be parked yet when the send lands; either way
     * its message comes on this stream. */
    res_init(&r);
    CU_ASSERT_EQUAL(px_rpc_unary(c, "/apache.rocketmq.v2.MessagingService/SendMessage",
                                 buf + 512, sn, &uo, on_unary, &r, NULL),
                    GT_OK);
    CU_ASSERT_FATAL(res_wait(&r, WAIT_MS));
    CU_ASSERT_EQUAL(r.code, GRPC_STATUS_OK);
    res_destroy(&r);
    CU_ASSERT_FATAL(res_wait(&b.r, WAIT_MS));
    CU_ASSERT_EQUAL(b.r.code, GRPC_STATUS_OK);
    CU_ASSERT_EQUAL(b.messages, 1);
    CU_ASSERT(b.statuses >= 1);
    CU_ASSERT_EQUAL(b.last_code, APACHE__ROCKETMQ__V2__CODE__OK);
    px_ccall_unref(bk);
    res_destroy(&b.r);

    px_rpc_client_free(c);
    px_rpc_server_shutdown(gs);
    px_svc_stop(svc);
    st_close(st);
    px_rpc_server_destroy(gs);
    px_svc_free(svc);
    px_exec_free(x);
    px_method_table_free(&mt);
    cfg_free(&cfg);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
    CU_ASSERT_EQUAL(system(cmd), 0);
}

/* A large request is handled on a thread of its own, not on the worker
 * whose completion queue also serves other calls: with one worker, a small
 * call is answered while a 1 MiB request's handler is still busy.  (On the
 * worker, bench-overload C's 32 MiB batches held a control send's answer
 * up to 350 ms; here the small call was never answered while the large
 * one's handler ran, failing before.) */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool in, release;
} big_gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false};

static void m_big(px_call_t *call, const uint8_t *d, size_t n)
{
    (void)d;
    (void)n;
    pthread_mutex_lock(&big_gate.mu);
    big_gate.in = true;
    pthread_cond_broadcast(&big_gate.cv);
    while (!big_gate.release)
        pthread_cond_wait(&big_gate.cv, &big_gate.mu);
    pthread_mutex_unlock(&big_gate.mu);
    px_call_finish(call, GRPC_STATUS_OK, NULL);
}

static void test_big_own_thread(void)
{
    static const px_method_t bm[] = {
        {.path = "/t.B/Big", .kind = PX_RPC_UNARY, .on_message = m_big},
        {.path = "/t.B/Echo", .kind = PX_RPC_UNARY, .on_message = m_echo},
    };
    px_method_table_t mt;
    px_rpc_server_t *bs = NULL;
    char err[256], ep[64];
    size_t big_len = (1u << 20) + 1;
    uint8_t *big = calloc(1, big_len);
    res_t rb, re;

    CU_ASSERT_PTR_NOT_NULL_FATAL(big);
    px_method_table_init(&mt);
    for (size_t i = 0; i < 2; i++)
        CU_ASSERT_EQUAL_FATAL(px_method_table_add(&mt, &bm[i]), GT_OK);
    px_rpc_options_t o = {.listen = "127.0.0.1:0", .threads = 1,
                          .shutdown_timeout_ms = 2000,
                          .max_receive_bytes = 4 << 20};
    CU_ASSERT_EQUAL_FATAL(px_rpc_server_start(&o, &mt, &bs, err, sizeof(err)), GT_OK);
    snprintf(ep, sizeof(ep), "127.0.0.1:%d", px_rpc_server_port(bs));
    const char *eps[] = {ep};
    px_rpc_client_opts_t co = {.endpoints = eps, .n_endpoints = 1, .exec = &test_exec};
    px_rpc_client_t *c = NULL;
    CU_ASSERT_EQUAL_FATAL(px_rpc_client_new(&co, &c), GT_OK);

    res_init(&rb);
    res_init(&re);
    CU_ASSERT_EQUAL(px_rpc_unary(c, "/t.B/Big", big, big_len, NULL, on_unary, &rb,
                                 NULL), GT_OK);
    pthread_mutex_lock(&big_gate.mu);
    while (!big_gate.in)
        pthread_cond_wait(&big_gate.cv, &big_gate.mu);
    pthread_mutex_unlock(&big_gate.mu);
    /* The large request's handler is busy: a small call is answered. */
    CU_ASSERT_EQUAL(px_rpc_unary(c, "/t.B/Echo", (const uint8_t *)"hi", 2, NULL,
                                 on_unary, &re, NULL), GT_OK);
    CU_ASSERT(res_wait(&re, WAIT_MS));
    CU_ASSERT_EQUAL(re.code, GRPC_STATUS_OK);
    pthread_mutex_lock(&big_gate.mu);
    big_gate.release = true;
    pthread_cond_broadcast(&big_gate.cv);
    pthread_mutex_unlock(&big_gate.mu);
    CU_ASSERT_FATAL(res_wait(&rb, WAIT_MS));
    CU_ASSERT_FATAL(res_wait(&re, WAIT_MS));
    CU_ASSERT_EQUAL(rb.code, GRPC_STATUS_OK);
    res_destroy(&rb);
    res_destroy(&re);
    px_rpc_client_free(c);
    px_rpc_server_stop(bs);
    px_method_table_free(&mt);
    free(big);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("rpc_client", suite_init, suite_clean);
    CU_add_test(s, "unary", test_unary);
    CU_add_test(s, "unary_parts", test_unary_parts);
    CU_add_test(s, "status", test_status);
    CU_add_test(s, "stream", test_stream);
    CU_add_test(s, "bidi", test_bidi);
    CU_add_test(s, "deadline", test_deadline);
    CU_add_test(s, "cancel", test_cancel);
    CU_add_test(s, "free_open", test_free_open);
    CU_add_test(s, "timer", test_timer);
    CU_add_test(s, "bad_args", test_bad_args);
    CU_add_test(s, "reconnect", test_reconnect);
    CU_add_test(s, "sibling_channel", test_sibling_channel);
    CU_add_test(s, "messaging_service", test_messaging_service);
    CU_add_test(s, "big_own_thread", test_big_own_thread);
    CU_add_test(s, "reply", test_reply);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
