/* The remote store's append batcher (store-remote/st_remote_append.c)
 * against the store node's service (store-server/, AppendMany) on
 * loopback, in one process: a real local store behind st_exec_open() whose
 * answers pass a gate the test opens and closes, so that an append call is
 * held in flight for as long as a test needs (no timing assumptions):
 * - appends made while one is in flight go together as one AppendMany and
 *   each caller gets its own answer (ids, queues, positions);
 * - one failing append in it does not fail the others;
 * - an append sent again with the same key is answered from the de-dup
 *   window, inside one AppendMany and after it; a whole AppendMany that
 *   times out is retried and stores nothing twice;
 * - a node without AppendMany (UNIMPLEMENTED) gets them as Appends;
 * - appends that cannot be sent (no node, closing) end and free their
 *   place in the batcher. */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <CUnit/Basic.h>

#include "px_exec.h"
#include "px_rpc.h"
#include "ss_int.h"
#include "st_remote.h"
#include "tu.h"

/* ---- the gate: an executor that holds the node's store answers ---- */

typedef struct held {
    struct held *next;
    st_task_fn fn;
    void *arg;
} held_t;

static struct {
    pthread_mutex_t mu;
    bool closed;
    held_t *head, *tail;
    size_t n_held;
    const st_exec_t *inner;
} gate = {.mu = PTHREAD_MUTEX_INITIALIZER};

static gt_err_t gate_post(void *ctx, st_task_fn fn, void *arg)
{
    (void)ctx;
    pthread_mutex_lock(&gate.mu);
    if (gate.closed) {
        held_t *h = malloc(sizeof(*h));
        if (!h) {
            pthread_mutex_unlock(&gate.mu);
            return GT_ENOMEM;
        }
        *h = (held_t){NULL, fn, arg};
        if (gate.tail)
            gate.tail->next = h;
        else
            gate.head = h;
        gate.tail = h;
        gate.n_held++;
        pthread_mutex_unlock(&gate.mu);
        return GT_OK;
    }
    pthread_mutex_unlock(&gate.mu);
    return gate.inner->post(gate.inner->ctx, fn, arg);
}

static const st_exec_t gate_exec = {gate_post, NULL};

static void gate_close(void)
{
    pthread_mutex_lock(&gate.mu);
    gate.closed = true;
    pthread_mutex_unlock(&gate.mu);
}

static void gate_open(void)
{
    pthread_mutex_lock(&gate.mu);
    gate.closed = false;
    held_t *h = gate.head;
    gate.head = gate.tail = NULL;
    gate.n_held = 0;
    pthread_mutex_unlock(&gate.mu);
    while (h) {
        held_t *n = h->next;
        if (gate.inner->post(gate.inner->ctx, h->fn, h->arg) != GT_OK)
            abort(); /* an answer would be lost */
        free(h);
        h = n;
    }
}

static size_t gate_held(void)
{
    pthread_mutex_lock(&gate.mu);
    size_t n = gate.n_held;
    pthread_mutex_unlock(&gate.mu);
    return n;
}

/* Waits (up to 30 s, polling) for cond(); false if it never held. */
static bool wait_for(bool (*cond)(void))
{
    for (int i = 0; i < 30000; i++) {
        if (cond())
            return true;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return cond();
}

/* ---- the node ---- */

static char *dir;
static px_exec_t *exec;
static st_store_t *node_store;
static ss_srv_t srv;
static px_method_table_t methods;
static px_rpc_server_t *server;
static char endpoint[64];

/* The first test: starts the node (tu_* assert, so not in a suite init). */
static void test_start(void)
{
    dir = tu_tmpdir("remote-batch");
    st_store_t *local = tu_open(dir, ST_FLUSH_ASYNC);
    CU_ASSERT_FATAL(local != NULL);
    CU_ASSERT_FATAL(tu_topic(local, "T", 4) == GT_OK);
    exec = px_exec_new(2);
    CU_ASSERT_FATAL(exec != NULL);
    gate.inner = px_exec_store(exec);
    CU_ASSERT_FATAL(st_exec_open(local, &gate_exec, &node_store) == GT_OK);
    memset(&srv, 0, sizeof(srv));
    ss_poll_init(&srv);
    pthread_rwlock_init(&srv.late_lock, NULL);
    srv.store = node_store;
    srv.engine = "local";
    srv.dedup = ss_dedup_new(100000, 600000);
    px_method_table_init(&methods);
    CU_ASSERT_FATAL(ss_service_register(&methods) == GT_OK);
    char err[256];
    px_rpc_options_t o = {.listen = "127.0.0.1:0", .threads = 2, .shutdown_timeout_ms = 2000,
                          .max_receive_bytes = 64 << 20, .app = &srv,
                          .after_event = px_exec_after_event, .after_event_ctx = exec};
    if (px_rpc_server_start(&o, &methods, &server, err, sizeof(err)) != GT_OK)
        fprintf(stderr, "%s\n", err);
    CU_ASSERT_FATAL(server != NULL);
    snprintf(endpoint, sizeof(endpoint), "127.0.0.1:%d", px_rpc_server_port(server));
}

static int suite_fini(void)
{
    if (!server)
        return 0;
    gate_open();
    px_rpc_server_stop(server);
    ss_poll_fini(&srv);
    st_close(node_store);
    ss_dedup_free(srv.dedup);
    px_method_table_free(&methods);
    px_exec_free(exec);
    pthread_rwlock_destroy(&srv.late_lock);
    tu_rmrf(dir);
    free(dir);
    return 0;
}

static st_store_t *client(int64_t timeout_ms, int retries)
{
    const char *eps[1] = {endpoint};
    /* One append call in flight at a time: the second waits. */
    st_remote_config_t c = {.endpoints = eps, .n_endpoints = 1, .timeout_ms = timeout_ms,
                            .retries = retries, .connect_wait_ms = 10000,
                            .append_inflight = 1};
    st_store_t *st = NULL;
    CU_ASSERT_EQUAL_FATAL(st_remote_open(&c, &st), GT_OK);
    return st;
}

/* ---- appends and their answers ---- */

#define NMSG 3 /* messages per append */

typedef struct app {
    char topic[32];
    char ids[NMSG][ST_MSG_ID_MAX];
    st_message_t m[NMSG];
    bool done;
    gt_err_t err;
    size_t n;
    st_append_item_t items[NMSG];
} app_t;

static pthread_mutex_t res_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_size_t n_done;

static void app_cb(void *arg, gt_err_t err, const st_append_item_t *items, size_t n)
{
    app_t *a = arg;
    pthread_mutex_lock(&res_mu);
    a->err = err;
    a->n = n;
    if (err == GT_OK && n <= NMSG)
        memcpy(a->items, items, n * sizeof(*items));
    a->done = true;
    pthread_mutex_unlock(&res_mu);
    atomic_fetch_add(&n_done, 1);
}

/* Append `a` (NMSG messages with ids "<tag>-<k>-<j>"), client's send. */
static void app_send(st_store_t *st, app_t *a, const char *topic, const char *tag, int k)
{
    memset(a, 0, sizeof(*a));
    snprintf(a->topic, sizeof(a->topic), "%s", topic);
    for (int j = 0; j < NMSG; j++) {
        snprintf(a->ids[j], sizeof(a->ids[j]), "%s-%d-%d", tag, k, j);
        a->m[j].msg_id = a->ids[j];
        a->m[j].body = "payload";
        a->m[j].body_len = 7;
        a->m[j].queue_id = ST_QUEUE_ANY;
        a->m[j].dedup_by_id = true;
    }
    st_append(st, a->topic, a->m, NMSG, app_cb, a);
}

static size_t done_count(void)
{
    return atomic_load(&n_done);
}

static size_t want_done;
static bool all_done(void)
{
    return done_count() >= want_done;
}

static size_t want_held;
static bool enough_held(void)
{
    return gate_held() >= want_held;
}

static uint64_t want_hits;
static bool enough_hits(void)
{
    return atomic_load(&srv.dedup_hits) >= want_hits;
}

/* Checks that a's answer is its own: its ids, in order. */
static void check_own(const app_t *a)
{
    CU_ASSERT_EQUAL(a->err, GT_OK);
    CU_ASSERT_EQUAL(a->n, NMSG);
    for (size_t j = 0; j < a->n && j < NMSG; j++)
        CU_ASSERT_STRING_EQUAL(a->items[j].msg_id, a->ids[j]);
}

typedef struct count_res {
    bool done;
    gt_err_t err;
    uint64_t messages;
} count_res_t;

static void stats_cb(void *arg, gt_err_t err, const st_stats_t *s)
{
    count_res_t *r = arg;
    pthread_mutex_lock(&res_mu);
    r->err = err;
    r->messages = s ? s->messages : 0;
    r->done = true;
    pthread_mutex_unlock(&res_mu);
}

static count_res_t *stats_wait;
static bool stats_done(void)
{
    pthread_mutex_lock(&res_mu);
    bool d = stats_wait->done;
    pthread_mutex_unlock(&res_mu);
    return d;
}

/* Messages in topic T, from the node. */
static uint64_t topic_messages(st_store_t *st)
{
    count_res_t r = {0};
    stats_wait = &r;
    st_stats(st, "T", NULL, stats_cb, &r);
    CU_ASSERT_FATAL(wait_for(stats_done));
    CU_ASSERT_EQUAL(r.err, GT_OK);
    return r.messages;
}

/* Holds the first append in flight (its answer at the gate), then makes
 * n - 1 more: they wait in the batcher until the gate opens. */
static void send_held(st_store_t *st, app_t *apps, size_t n, const char *tag,
                      const char *bad_topic_at)
{
    atomic_store(&n_done, 0);
    gate_close();
    want_held = gate_held() + 1;
    app_send(st, &apps[0], "T", tag, 0);
    CU_ASSERT_FATAL(wait_for(enough_held)); /* the first is in flight */
    for (size_t k = 1; k < n; k++)
        app_send(st, &apps[k], bad_topic_at && k == 3 ? bad_topic_at : "T", tag, (int)k);
}

/* ---- tests ---- */

static void test_coalesce(void)
{
    st_store_t *st = client(10000, 3);
    enum { N = 20 };
    static app_t apps[N];
    uint64_t calls0 = atomic_load(&srv.many_calls), apps0 = atomic_load(&srv.many_appends);
    uint64_t before = topic_messages(st);
    send_held(st, apps, N, "co", NULL);
    CU_ASSERT_EQUAL(done_count(), 0);
    gate_open();
    want_done = N;
    CU_ASSERT_FATAL(wait_for(all_done));
    for (size_t k = 0; k < N; k++)
        check_own(&apps[k]);
    /* The 19 that waited went as one call. */
    CU_ASSERT_EQUAL(atomic_load(&srv.many_calls) - calls0, 1);
    CU_ASSERT_EQUAL(atomic_load(&srv.many_appends) - apps0, N - 1);
    /* Each where the node put it: distinct positions. */
    for (size_t a = 0; a < N; a++)
        for (size_t b = a + 1; b < N; b++)
            CU_ASSERT_NOT_EQUAL(apps[a].items[0].position, apps[b].items[0].position);
    CU_ASSERT_EQUAL(topic_messages(st) - before, (uint64_t)N * NMSG);
    st_close(st);
}

static void test_one_fails(void)
{
    st_store_t *st = client(10000, 3);
    enum { N = 8 };
    static app_t apps[N];
    uint64_t calls0 = atomic_load(&srv.many_calls);
    uint64_t before = topic_messages(st);
    send_held(st, apps, N, "bad", "NoSuchTopic");
    gate_open();
    want_done = N;
    CU_ASSERT_FATAL(wait_for(all_done));
    CU_ASSERT_EQUAL(atomic_load(&srv.many_calls) - calls0, 1);
    for (size_t k = 0; k < N; k++) {
        if (k == 3) {
            CU_ASSERT_NOT_EQUAL(apps[k].err, GT_OK);
            CU_ASSERT_EQUAL(apps[k].n, 0);
        } else {
            check_own(&apps[k]);
        }
    }
    CU_ASSERT_EQUAL(topic_messages(st) - before, (uint64_t)(N - 1) * NMSG);
    st_close(st);
}

static void test_dedup(void)
{
    st_store_t *st = client(10000, 3);
    enum { N = 6 };
    static app_t apps[N], again;
    uint64_t before = topic_messages(st);
    /* Appends 4 and 5 repeat 1 and 2's ids (the same keys) in the same
     * AppendMany. */
    send_held(st, apps, 4, "dd", NULL);
    app_send(st, &apps[4], "T", "dd", 1);
    app_send(st, &apps[5], "T", "dd", 2);
    gate_open();
    want_done = N;
    CU_ASSERT_FATAL(wait_for(all_done));
    for (size_t k = 0; k < N; k++)
        check_own(&apps[k]);
    for (size_t j = 0; j < NMSG; j++) {
        CU_ASSERT_EQUAL(apps[4].items[j].position, apps[1].items[j].position);
        CU_ASSERT_EQUAL(apps[5].items[j].position, apps[2].items[j].position);
    }
    /* Later, alone: the same answer again. */
    atomic_store(&n_done, 0);
    app_send(st, &again, "T", "dd", 3);
    want_done = 1;
    CU_ASSERT_FATAL(wait_for(all_done));
    check_own(&again);
    CU_ASSERT_EQUAL(again.items[0].position, apps[3].items[0].position);
    CU_ASSERT_EQUAL(topic_messages(st) - before, 4u * NMSG);
    st_close(st);
}

/* A whole AppendMany whose answer does not come in time is retried (each
 * append with its own key) and stores nothing twice. */
static void test_retry_dedup(void)
{
    st_store_t *st = client(300, 50);
    enum { N = 6 };
    static app_t apps[N];
    uint64_t before = topic_messages(st);
    uint64_t hits0 = atomic_load(&srv.dedup_hits);
    uint64_t calls0 = atomic_load(&srv.many_calls);
    send_held(st, apps, N, "rt", NULL);
    /* Every append came again (deadline, retry with its key) and waits
     * on its first attempt, the batched ones in another AppendMany. */
    want_hits = hits0 + N;
    CU_ASSERT_FATAL(wait_for(enough_hits));
    CU_ASSERT(atomic_load(&srv.many_calls) - calls0 >= 2);
    CU_ASSERT_EQUAL(done_count(), 0);
    gate_open();
    want_done = N;
    CU_ASSERT_FATAL(wait_for(all_done));
    for (size_t k = 0; k < N; k++)
        check_own(&apps[k]);
    CU_ASSERT_EQUAL(topic_messages(st) - before, (uint64_t)N * NMSG);
    st_close(st);
}

/* A node without AppendMany: the waiting appends go as Appends. */
static void test_old_node(void)
{
    st_store_t *st = client(10000, 3);
    enum { N = 10 };
    static app_t apps[N];
    uint64_t before = topic_messages(st);
    uint64_t apps0 = atomic_load(&srv.many_appends);
    srv.test_no_append_many = true;
    send_held(st, apps, N, "old", NULL);
    gate_open();
    want_done = N;
    CU_ASSERT_FATAL(wait_for(all_done));
    for (size_t k = 0; k < N; k++)
        check_own(&apps[k]);
    /* And from then on, held or not, no AppendMany is tried. */
    static app_t more[N];
    send_held(st, more, N, "old2", NULL);
    gate_open();
    CU_ASSERT_FATAL(wait_for(all_done));
    for (size_t k = 0; k < N; k++)
        check_own(&more[k]);
    srv.test_no_append_many = false;
    CU_ASSERT_EQUAL(atomic_load(&srv.many_appends), apps0);
    CU_ASSERT_EQUAL(topic_messages(st) - before, 2u * N * NMSG);
    st_close(st);
}

/* Closing the client with appends waiting: each ends (ESHUTDOWN). */
static void test_close_waiting(void)
{
    st_store_t *st = client(10000, 3);
    enum { N = 5 };
    static app_t apps[N];
    send_held(st, apps, N, "cl", NULL);
    st_close(st);
    want_done = N;
    CU_ASSERT_FATAL(wait_for(all_done));
    for (size_t k = 0; k < N; k++)
        CU_ASSERT_EQUAL(apps[k].err, GT_ESHUTDOWN);
    gate_open();
}

/* No node (cluster mode, no leader known): appends fail at once with
 * AGAIN, one after the other, and take no batcher slot with them; once a
 * node is there they go. */
static void test_no_node(void)
{
    st_remote_config_t c = {.switchable = true, .timeout_ms = 10000, .retries = 0};
    st_store_t *st = NULL;
    CU_ASSERT_FATAL(st_remote_open(&c, &st) == GT_OK);
    static app_t apps[4];
    for (int k = 0; k < 3; k++) {
        atomic_store(&n_done, 0);
        want_done = 1;
        app_send(st, &apps[k], "T", "nn", k);
        CU_ASSERT_FATAL(wait_for(all_done));
        CU_ASSERT_EQUAL(apps[k].err, GT_AGAIN);
    }
    CU_ASSERT_EQUAL_FATAL(st_remote_switch(st, endpoint), GT_OK);
    CU_ASSERT_EQUAL_FATAL(st_remote_wait_ready(st, 10000), GT_OK);
    atomic_store(&n_done, 0);
    app_send(st, &apps[3], "T", "nn", 3);
    CU_ASSERT_FATAL(wait_for(all_done));
    check_own(&apps[3]);
    st_close(st);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("remote_batch", NULL, suite_fini);
    CU_add_test(s, "start", test_start);
    CU_add_test(s, "coalesce", test_coalesce);
    CU_add_test(s, "one_fails", test_one_fails);
    CU_add_test(s, "dedup", test_dedup);
    CU_add_test(s, "retry_dedup", test_retry_dedup);
    CU_add_test(s, "old_node", test_old_node);
    CU_add_test(s, "close_waiting", test_close_waiting);
    CU_add_test(s, "no_node", test_no_node);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
