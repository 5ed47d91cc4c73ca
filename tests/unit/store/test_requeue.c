/* What the AMQP gateway needs for RabbitMQ's semantics: a nack with
 * requeue (st_change_invisible with 0) is delivered again at once, ahead
 * of newer messages, with its attempt raised (the gateway says
 * redelivered); st_release gives deliveries back at once, ahead of newer
 * ones, without counting; st_purge drops what is ready (not what is in
 * flight) and says how many, durably; st_requeue gives back everything in
 * flight (a restart's unacked deliveries); st_stats' ready / inflight are the
 * counts queue.declare-ok reports.  The test clock stands still
 * throughout: nothing becomes visible by time passing. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tu.h"

#define LONG_MS 600000

typedef struct cw {
    pthread_mutex_t m;
    pthread_cond_t c;
    bool done;
    gt_err_t err;
    uint64_t n;
} cw_t;

static void count_cb(void *arg, gt_err_t err, uint64_t n)
{
    cw_t *w = arg;
    pthread_mutex_lock(&w->m);
    w->err = err;
    w->n = n;
    w->done = true;
    pthread_cond_signal(&w->c);
    pthread_mutex_unlock(&w->m);
}

static gt_err_t counted(bool all, st_store_t *st, const char *g,
                        const char *t, uint64_t *n)
{
    cw_t w = {.done = false};
    pthread_mutex_init(&w.m, NULL);
    pthread_cond_init(&w.c, NULL);
    if (all)
        st_requeue(st, g, t, count_cb, &w);
    else
        st_purge(st, g, t, count_cb, &w);
    pthread_mutex_lock(&w.m);
    while (!w.done)
        pthread_cond_wait(&w.c, &w.m);
    pthread_mutex_unlock(&w.m);
    pthread_mutex_destroy(&w.m);
    pthread_cond_destroy(&w.c);
    *n = w.n;
    return w.err;
}

static gt_err_t purge(st_store_t *st, const char *g, const char *t,
                      uint64_t *n)
{
    return counted(false, st, g, t, n);
}

static void send_range(st_store_t *st, const char *topic, int from, int to)
{
    for (int i = from; i < to; i++) {
        char body[16];
        snprintf(body, sizeof(body), "m%d", i);
        CU_ASSERT_EQUAL_FATAL(tu_send(st, topic, "t", NULL, body, 0, NULL),
                              GT_OK);
    }
}

static void ready_inflight(st_store_t *st, const char *t, const char *g,
                           uint64_t ready, uint64_t inflight)
{
    st_stats_t s;
    CU_ASSERT_EQUAL_FATAL(tu_stats(st, t, g, &s), GT_OK);
    CU_ASSERT_EQUAL(s.ready, ready);
    CU_ASSERT_EQUAL(s.inflight, inflight);
}

static void test_requeue(void)
{
    char *dir = tu_tmpdir("requeue");
    tu_clock_start();
    st_store_t *st = tu_open(dir, ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    CU_ASSERT_EQUAL_FATAL(tu_group(st, "G", 3, ST_CONSUME_FROM_FIRST), GT_OK);
    send_range(st, "T", 0, 5);
    tu_msg_t out[8];
    size_t n;
    char h[ST_HANDLE_MAX];
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", NULL, 2, LONG_MS, out, &n),
                    GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    ready_inflight(st, "T", "G", 3, 2);
    /* nack m1 with requeue: at once, ahead of m2..m4, attempt 2 */
    CU_ASSERT_EQUAL(tu_change(st, "G", "T", out[1].handle, 0, h), GT_OK);
    ready_inflight(st, "T", "G", 4, 1);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", out[1].handle), GT_EINVAL);
    tu_msg_t m1[2];
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", NULL, 2, LONG_MS, m1, &n),
                    GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_STRING_EQUAL(m1[0].body, "m1");
    CU_ASSERT_EQUAL(m1[0].attempt, 2);
    CU_ASSERT_STRING_EQUAL(m1[1].body, "m2");
    CU_ASSERT_EQUAL(m1[1].attempt, 1);
    /* both of the popped ones requeued (a closed channel): they come back
     * in offset order before m3, m4 */
    CU_ASSERT_EQUAL(tu_change(st, "G", "T", m1[1].handle, 0, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_change(st, "G", "T", m1[0].handle, 0, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_change(st, "G", "T", out[0].handle, 0, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", NULL, 8, LONG_MS, out, &n),
                    GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 5);
    const char *want[5] = {"m0", "m1", "m2", "m3", "m4"};
    const uint32_t att[5] = {2, 3, 2, 1, 1};
    for (size_t i = 0; i < 5; i++) {
        CU_ASSERT_STRING_EQUAL(out[i].body, want[i]);
        CU_ASSERT_EQUAL(out[i].attempt, att[i]);
    }
    /* negative durations stay refused */
    CU_ASSERT_EQUAL(tu_change(st, "G", "T", out[0].handle, -1, NULL),
                    GT_EINVAL);
    /* the third requeue of m1 (3 attempts made, the group's max): to the DLQ */
    CU_ASSERT_EQUAL(tu_change(st, "G", "T", out[1].handle, 0, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", NULL, 8, LONG_MS, out, &n),
                    GT_OK);
    CU_ASSERT_EQUAL(n, 0);
    st_close(st);
    tu_clock_stop();
    tu_rmrf(dir);
    free(dir);
}

/* A parked pop gets a requeued message at once. */
typedef struct parked {
    pthread_mutex_t m;
    pthread_cond_t c;
    bool done;
    size_t n;
    char body[32];
    uint32_t attempt;
} parked_t;

static void parked_cb(void *arg, gt_err_t err, const st_popped_t *msgs,
                      size_t n)
{
    parked_t *p = arg;
    pthread_mutex_lock(&p->m);
    CU_ASSERT_EQUAL(err, GT_OK);
    p->n = n;
    if (n) {
        snprintf(p->body, sizeof(p->body), "%.*s", (int)msgs[0].msg.body_len,
                 (const char *)msgs[0].msg.body);
        p->attempt = msgs[0].attempt;
    }
    p->done = true;
    pthread_cond_signal(&p->c);
    pthread_mutex_unlock(&p->m);
}

static void test_requeue_parked(void)
{
    char *dir = tu_tmpdir("requeue_park");
    tu_clock_start();
    st_store_t *st = tu_open(dir, ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    send_range(st, "T", 0, 1);
    tu_msg_t out[1];
    size_t n;
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", NULL, 1, LONG_MS, out, &n),
                    GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    parked_t p = {.done = false};
    pthread_mutex_init(&p.m, NULL);
    pthread_cond_init(&p.c, NULL);
    st_pop_req_t req = {.group = "G", .topic = "T", .queue_id = ST_QUEUE_ANY,
                        .max = 1, .invisible_ms = LONG_MS,
                        .poll_timeout_ms = 3600 * 1000};
    st_pop(st, &req, parked_cb, &p);
    tu_wait_parked(st, 1);
    /* (fatal: without it the parked pop waits for its hour) */
    CU_ASSERT_EQUAL_FATAL(tu_change(st, "G", "T", out[0].handle, 0, NULL),
                          GT_OK);
    pthread_mutex_lock(&p.m);
    while (!p.done)
        pthread_cond_wait(&p.c, &p.m);
    pthread_mutex_unlock(&p.m);
    CU_ASSERT_EQUAL(p.n, 1);
    CU_ASSERT_STRING_EQUAL(p.body, "m0");
    CU_ASSERT_EQUAL(p.attempt, 2);
    st_close(st);
    tu_clock_stop();
    tu_rmrf(dir);
    free(dir);
}

/* max_bytes: a pop stops once its bodies reach the bound, always takes one,
 * and the rest stays ready in order (the AMQP gateway bounds pops of big
 * messages this way); redeliveries count too. */
static void test_pop_max_bytes(void)
{
    char *dir = tu_tmpdir("pop_max_bytes");
    tu_clock_start();
    st_store_t *st = tu_open(dir, ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    send_range(st, "T", 0, 8); /* bodies "m0".."m7": 2 bytes each */
    tu_msg_t out[8];
    size_t n;
    st_pop_req_t req = {.group = "G", .topic = "T", .queue_id = ST_QUEUE_ANY,
                        .max = 8, .max_bytes = 5, .invisible_ms = LONG_MS};
    CU_ASSERT_EQUAL(tu_pop(st, &req, out, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 3); /* 2 + 2 < 5, 6 >= 5 */
    CU_ASSERT_STRING_EQUAL(out[0].body, "m0");
    CU_ASSERT_STRING_EQUAL(out[2].body, "m2");
    req.max_bytes = 1; /* under one body: one message */
    CU_ASSERT_EQUAL(tu_pop(st, &req, out, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_STRING_EQUAL(out[0].body, "m3");
    CU_ASSERT_EQUAL(tu_change(st, "G", "T", out[0].handle, 0, NULL), GT_OK);
    req.max_bytes = 4; /* the requeued one first, then one new */
    CU_ASSERT_EQUAL(tu_pop(st, &req, out, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_STRING_EQUAL(out[0].body, "m3");
    CU_ASSERT_STRING_EQUAL(out[1].body, "m4");
    req.max_bytes = 0; /* no bound: the rest */
    CU_ASSERT_EQUAL(tu_pop(st, &req, out, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 3);
    st_close(st);
    tu_clock_stop();
    tu_rmrf(dir);
    free(dir);
}

/* st_release: at once, ahead of newer messages, attempt not counted. */
static void test_release_order(void)
{
    char *dir = tu_tmpdir("release_order");
    tu_clock_start();
    st_store_t *st = tu_open(dir, ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    send_range(st, "T", 0, 6);
    tu_msg_t out[8], again[8];
    size_t n;
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", NULL, 3, LONG_MS, out, &n),
                    GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    for (size_t i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(tu_release(st, "G", "T", out[i].handle), GT_OK);
    ready_inflight(st, "T", "G", 6, 0);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", NULL, 4, LONG_MS, again, &n),
                    GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 4);
    for (size_t i = 0; i < 4; i++) {
        char b[8];
        snprintf(b, sizeof(b), "m%zu", i);
        CU_ASSERT_STRING_EQUAL(again[i].body, b);
        CU_ASSERT_EQUAL(again[i].attempt, 1);
    }
    st_close(st);
    tu_clock_stop();
    tu_rmrf(dir);
    free(dir);
}

static void test_purge(void)
{
    char *dir = tu_tmpdir("purge");
    tu_clock_start();
    st_store_t *st = tu_open(dir, ST_FLUSH_SYNC);
    uint64_t n64;
    tu_msg_t out[8];
    size_t n;
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 2), GT_OK);
    CU_ASSERT_EQUAL_FATAL(tu_group(st, "G", 16, ST_CONSUME_FROM_FIRST), GT_OK);
    CU_ASSERT_EQUAL_FATAL(tu_group(st, "H", 16, ST_CONSUME_FROM_FIRST), GT_OK);
    for (int i = 0; i < 10; i++) { /* 5 per queue */
        char body[16];
        snprintf(body, sizeof(body), "m%d", i);
        CU_ASSERT_EQUAL_FATAL(tu_send(st, "T", "t", NULL, body, i % 2, NULL),
                              GT_OK);
    }
    /* a group with no state yet: everything is ready */
    ready_inflight(st, "T", "H", 10, 0);
    CU_ASSERT_EQUAL(purge(st, "H", "T", &n64), GT_OK);
    CU_ASSERT_EQUAL(n64, 10);
    ready_inflight(st, "T", "H", 0, 0);
    /* G: 3 in flight, one of them requeued */
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", NULL, 3, LONG_MS, out, &n),
                    GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    CU_ASSERT_EQUAL(tu_change(st, "G", "T", out[2].handle, 0, NULL), GT_OK);
    ready_inflight(st, "T", "G", 8, 2);
    CU_ASSERT_EQUAL(purge(st, "G", "T", &n64), GT_OK);
    CU_ASSERT_EQUAL(n64, 8);
    ready_inflight(st, "T", "G", 0, 2);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", NULL, 8, LONG_MS, out + 4, &n),
                    GT_OK);
    CU_ASSERT_EQUAL(n, 0);
    /* the ones in flight stay ackable; nacked, they come back */
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", out[0].handle), GT_OK);
    CU_ASSERT_EQUAL(tu_change(st, "G", "T", out[1].handle, 0, NULL), GT_OK);
    ready_inflight(st, "T", "G", 1, 0);
    /* new messages after a purge are delivered */
    CU_ASSERT_EQUAL(tu_send(st, "T", "t", NULL, "new", 0, NULL), GT_OK);
    ready_inflight(st, "T", "G", 2, 0);
    /* durable: a restart agrees (H also purged, then one new message) */
    st_close(st);
    st = tu_open(dir, ST_FLUSH_SYNC);
    ready_inflight(st, "T", "G", 2, 0);
    ready_inflight(st, "T", "H", 1, 0);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", NULL, 8, LONG_MS, out, &n),
                    GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT(strcmp(out[0].body, "new") == 0 || strcmp(out[1].body, "new") == 0);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "H", "T", NULL, 8, LONG_MS, out, &n),
                    GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_STRING_EQUAL(out[0].body, "new");
    /* a purge behind a delivery in flight, then a compaction and restart */
    send_range(st, "T", 10, 20);
    CU_ASSERT_EQUAL(purge(st, "H", "T", &n64), GT_OK);
    CU_ASSERT_EQUAL(n64, 10);
    st_local_state_compact(st);
    st_close(st);
    st = tu_open(dir, ST_FLUSH_SYNC);
    ready_inflight(st, "T", "H", 0, 1);
    CU_ASSERT_EQUAL(purge(st, "H", "T", &n64), GT_OK);
    CU_ASSERT_EQUAL(n64, 0);
    /* errors */
    CU_ASSERT_EQUAL(purge(st, "nope", "T", &n64), GT_ENOTFOUND);
    CU_ASSERT_EQUAL(purge(st, "G", "nope", &n64), GT_ENOTFOUND);
    CU_ASSERT_EQUAL(purge(st, ST_SYS_GROUP, ST_SYS_TIMER, &n64), GT_EINVAL);
    st_close(st);
    tu_clock_stop();
    tu_rmrf(dir);
    free(dir);
}

/* st_requeue: every delivery in flight is given back at once, attempt
 * raised, old handles dead; durable; ready and acked ones untouched. */
static void test_requeue_all(void)
{
    char *dir = tu_tmpdir("requeue_all");
    tu_clock_start();
    st_store_t *st = tu_open(dir, ST_FLUSH_SYNC), *late = NULL;
    uint64_t n64;
    tu_msg_t out[8];
    size_t n;
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 2), GT_OK);
    CU_ASSERT_EQUAL_FATAL(tu_group(st, "G", 16, ST_CONSUME_FROM_FIRST), GT_OK);
    for (int i = 0; i < 6; i++) { /* 3 per queue */
        char body[16];
        snprintf(body, sizeof(body), "m%d", i);
        CU_ASSERT_EQUAL_FATAL(tu_send(st, "T", "t", NULL, body, i % 2, NULL),
                              GT_OK);
    }
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", NULL, 4, LONG_MS, out, &n),
                    GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 4);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", out[0].handle), GT_OK);
    ready_inflight(st, "T", "G", 2, 3);
    CU_ASSERT_EQUAL(counted(true, st, "G", "T", &n64), GT_OK);
    CU_ASSERT_EQUAL(n64, 3);
    ready_inflight(st, "T", "G", 5, 0);
    for (size_t i = 1; i < 4; i++)
        CU_ASSERT_EQUAL(tu_ack(st, "G", "T", out[i].handle), GT_EINVAL);
    /* durable: a restart agrees, and nothing is in flight to requeue */
    st_close(st);
    st = tu_open(dir, ST_FLUSH_SYNC);
    ready_inflight(st, "T", "G", 5, 0);
    CU_ASSERT_EQUAL(counted(true, st, "G", "T", &n64), GT_OK);
    CU_ASSERT_EQUAL(n64, 0);
    tu_msg_t again[8];
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", NULL, 8, LONG_MS, again, &n),
                    GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 5);
    for (size_t i = 0; i < 5; i++) {
        bool was = false;
        for (size_t j = 1; j < 4; j++)
            was = was || strcmp(again[i].body, out[j].body) == 0;
        CU_ASSERT_EQUAL(again[i].attempt, was ? 2u : 1u);
    }
    /* through the late decorator (a remote store's timing) */
    CU_ASSERT_EQUAL_FATAL(st_late_open(st, 2000, 9, &late), GT_OK);
    CU_ASSERT_EQUAL(counted(true, late, "G", "T", &n64), GT_OK);
    CU_ASSERT_EQUAL(n64, 5);
    CU_ASSERT_EQUAL(counted(true, late, "nope", "T", &n64), GT_ENOTFOUND);
    CU_ASSERT_EQUAL(counted(true, late, ST_SYS_GROUP, ST_SYS_TIMER, &n64),
                    GT_EINVAL);
    st_close(late);
    tu_clock_stop();
    tu_rmrf(dir);
    free(dir);
}

/* Purge through the late decorator (a remote store's timing). */
static void test_purge_late(void)
{
    char *dir = tu_tmpdir("purge_late");
    st_store_t *in = tu_open(dir, ST_FLUSH_SYNC), *st = NULL;
    CU_ASSERT_EQUAL_FATAL(tu_topic(in, "T", 1), GT_OK);
    CU_ASSERT_EQUAL_FATAL(tu_group(in, "G", 16, ST_CONSUME_FROM_FIRST), GT_OK);
    send_range(in, "T", 0, 7);
    CU_ASSERT_EQUAL_FATAL(st_late_open(in, 2000, 9, &st), GT_OK);
    uint64_t n64 = 0;
    CU_ASSERT_EQUAL(purge(st, "G", "T", &n64), GT_OK);
    CU_ASSERT_EQUAL(n64, 7);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    static const CU_TestInfo tests[] = {
        {"requeue (change invisible 0): at once, ahead, attempt + 1",
         test_requeue},
        {"requeue wakes a parked pop", test_requeue_parked},
        {"release: at once, ahead, attempt kept", test_release_order},
        {"pop max_bytes: stops at the bound, takes one", test_pop_max_bytes},
        {"purge: ready only, counted, durable", test_purge},
        {"purge through the late decorator", test_purge_late},
        {"requeue all in flight: at once, attempt + 1, durable",
         test_requeue_all},
        CU_TEST_INFO_NULL,
    };
    return tu_run("store_requeue", tests);
}
