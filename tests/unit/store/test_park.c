/* Parked pops and pulls: cancellation (st_pop_cancel), first come first
 * served hand-out, and long-polling pulls.  No fixed sleeps: tests wait
 * for the store to report how many requests are parked. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_pop.h"
#include "tu.h"

static char *dir;
static st_store_t *st;

static void setup(void)
{
    dir = tu_tmpdir("park");
    st = tu_open(dir, ST_FLUSH_ASYNC);
}

static void teardown(void)
{
    st_close(st);
    st = NULL;
    tu_rmrf(dir);
    free(dir);
}

/* One asynchronous answer (pop or pull). */
typedef struct ans {
    pthread_mutex_t m;
    pthread_cond_t c;
    bool done;
    gt_err_t err;
    size_t n;
    char body[32];
    uint64_t next;
} ans_t;

static void ans_init(ans_t *a)
{
    memset(a, 0, sizeof(*a));
    pthread_mutex_init(&a->m, NULL);
    pthread_cond_init(&a->c, NULL);
}

static void ans_set(ans_t *a, gt_err_t err, size_t n, const st_message_t *m,
                    uint64_t next)
{
    pthread_mutex_lock(&a->m);
    a->err = err;
    a->n = n;
    a->next = next;
    if (n)
        snprintf(a->body, sizeof(a->body), "%.*s", (int)m->body_len,
                 (const char *)m->body);
    a->done = true;
    pthread_cond_signal(&a->c);
    pthread_mutex_unlock(&a->m);
}

static void pop_cb(void *arg, gt_err_t err, const st_popped_t *msgs, size_t n)
{
    ans_set(arg, err, n, n ? &msgs[0].msg : NULL, 0);
}

static void pull_cb(void *arg, gt_err_t err, const st_message_t *msgs,
                    size_t n, uint64_t next)
{
    ans_set(arg, err, n, msgs, next);
}

static void ans_wait(ans_t *a)
{
    pthread_mutex_lock(&a->m);
    while (!a->done)
        pthread_cond_wait(&a->c, &a->m);
    pthread_mutex_unlock(&a->m);
}

static bool ans_done(ans_t *a)
{
    pthread_mutex_lock(&a->m);
    bool d = a->done;
    pthread_mutex_unlock(&a->m);
    return d;
}

/* Waits until exactly n requests are parked. */
static void wait_parked(size_t n)
{
    while (st_local_parked(st) != n)
        tu_sleep_ms(1);
}

static st_pop_req_t preq(uint64_t key)
{
    return (st_pop_req_t){.group = "G", .topic = "T",
                          .queue_id = ST_QUEUE_ANY, .max = 4,
                          .invisible_ms = 60000,
                          .poll_timeout_ms = ST_POLL_MAX_MS,
                          .cancel_key = key};
}

/* A cancelled parked pop completes empty and takes nothing: the next one
 * in line gets the message. */
static void test_cancel(void)
{
    ans_t a, b;
    setup();
    CU_ASSERT_EQUAL(tu_topic(st, "T", 2), GT_OK);
    ans_init(&a);
    ans_init(&b);
    st_pop_req_t r = preq(11);
    st_pop(st, &r, pop_cb, &a);
    r.cancel_key = 12;
    st_pop(st, &r, pop_cb, &b);
    wait_parked(2);
    st_pop_cancel(st, 11);
    ans_wait(&a);
    CU_ASSERT_EQUAL(a.err, GT_OK);
    CU_ASSERT_EQUAL(a.n, 0);
    wait_parked(1);
    st_pop_cancel(st, 99); /* unknown: ignored */
    st_pop_cancel(st, 0);
    CU_ASSERT_FALSE(ans_done(&b));
    CU_ASSERT_EQUAL(tu_send(st, "T", "x", NULL, "one", -1, NULL), GT_OK);
    ans_wait(&b);
    CU_ASSERT_EQUAL(b.err, GT_OK);
    CU_ASSERT_EQUAL_FATAL(b.n, 1);
    CU_ASSERT_STRING_EQUAL(b.body, "one");
    wait_parked(0);
    teardown();
}

/* A cancel that arrives before its pop parks (the two raced) is kept:
 * the pop then completes empty instead of parking. */
static void test_cancel_early(void)
{
    ans_t a;
    setup();
    CU_ASSERT_EQUAL(tu_topic(st, "T", 1), GT_OK);
    st_pop_cancel(st, 21);
    ans_init(&a);
    st_pop_req_t r = preq(21);
    st_pop(st, &r, pop_cb, &a);
    ans_wait(&a);
    CU_ASSERT_EQUAL(a.err, GT_OK);
    CU_ASSERT_EQUAL(a.n, 0);
    /* the remembered key was used up: the same key parks again */
    ans_init(&a);
    st_pop(st, &r, pop_cb, &a);
    wait_parked(1);
    st_pop_cancel(st, 21);
    ans_wait(&a);
    CU_ASSERT_EQUAL(a.n, 0);
    teardown();
}

/* A pull's filter runs in the store: rejected messages are stepped over
 * and next_offset moves past them. */
static void test_pull_filter(void)
{
    ans_t a;
    const char *tags[] = {"a", "b", "a", "c"};
    setup();
    CU_ASSERT_EQUAL(tu_topic(st, "T", 1), GT_OK);
    for (int i = 0; i < 4; i++) {
        char body[8];
        snprintf(body, sizeof(body), "m%d", i);
        CU_ASSERT_EQUAL(tu_send(st, "T", tags[i], NULL, body, 0, NULL), GT_OK);
    }
    st_pull_req_t r = {.topic = "T", .queue = 0, .offset = 0, .max = 8,
                       .filter_expr = "b || c"};
    ans_init(&a);
    st_pull(st, &r, pull_cb, &a);
    ans_wait(&a);
    CU_ASSERT_EQUAL(a.err, GT_OK);
    CU_ASSERT_EQUAL(a.n, 2);
    CU_ASSERT_STRING_EQUAL(a.body, "m1");
    CU_ASSERT_EQUAL(a.next, 4);
    r.filter_kind = ST_FILTER_SQL92;
    r.filter_expr = "TAGS = 'c'";
    r.max = 1;
    ans_init(&a);
    st_pull(st, &r, pull_cb, &a);
    ans_wait(&a);
    CU_ASSERT_EQUAL(a.n, 1);
    CU_ASSERT_STRING_EQUAL(a.body, "m3");
    CU_ASSERT_EQUAL(a.next, 4);
    r.filter_expr = "TAGS = 'zz'"; /* none: read to the end */
    ans_init(&a);
    st_pull(st, &r, pull_cb, &a);
    ans_wait(&a);
    CU_ASSERT_EQUAL(a.err, GT_OK);
    CU_ASSERT_EQUAL(a.n, 0);
    CU_ASSERT_EQUAL(a.next, 4);
    r.filter_expr = "TAGS ==";
    ans_init(&a);
    st_pull(st, &r, pull_cb, &a);
    ans_wait(&a);
    CU_ASSERT_EQUAL(a.err, GT_EINVAL);
    teardown();
}

/* A pull at the end of its queue parks until a message arrives there;
 * with nothing it answers empty at its timeout; a cancel ends it. */
static void test_pull_long_poll(void)
{
    ans_t a;
    setup();
    CU_ASSERT_EQUAL(tu_topic(st, "T", 2), GT_OK);
    CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "old", 1, NULL), GT_OK);
    st_pull_req_t r = {.topic = "T", .queue = 1, .offset = 1, .max = 8,
                       .poll_timeout_ms = ST_POLL_MAX_MS};
    ans_init(&a);
    st_pull(st, &r, pull_cb, &a);
    wait_parked(1);
    CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "other", 0, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_send(st, "T", "b", NULL, "new", 1, NULL), GT_OK);
    ans_wait(&a);
    CU_ASSERT_EQUAL(a.err, GT_OK);
    CU_ASSERT_EQUAL_FATAL(a.n, 1);
    CU_ASSERT_STRING_EQUAL(a.body, "new");
    CU_ASSERT_EQUAL(a.next, 2);
    /* a filtered pull waits past messages it does not want */
    r.offset = 2;
    r.filter_expr = "want";
    ans_init(&a);
    st_pull(st, &r, pull_cb, &a);
    wait_parked(1);
    CU_ASSERT_EQUAL(tu_send(st, "T", "skip", NULL, "s", 1, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_send(st, "T", "want", NULL, "w", 1, NULL), GT_OK);
    ans_wait(&a);
    CU_ASSERT_EQUAL_FATAL(a.n, 1);
    CU_ASSERT_STRING_EQUAL(a.body, "w");
    CU_ASSERT_EQUAL(a.next, 4);
    /* timeout: empty, next_offset unchanged */
    r.offset = 4;
    r.poll_timeout_ms = 1;
    ans_init(&a);
    st_pull(st, &r, pull_cb, &a);
    ans_wait(&a);
    CU_ASSERT_EQUAL(a.err, GT_OK);
    CU_ASSERT_EQUAL(a.n, 0);
    CU_ASSERT_EQUAL(a.next, 4);
    /* cancel */
    r.poll_timeout_ms = ST_POLL_MAX_MS;
    r.cancel_key = 5;
    ans_init(&a);
    st_pull(st, &r, pull_cb, &a);
    wait_parked(1);
    st_pop_cancel(st, 5);
    ans_wait(&a);
    CU_ASSERT_EQUAL(a.err, GT_OK);
    CU_ASSERT_EQUAL(a.n, 0);
    /* close answers a parked pull */
    ans_init(&a);
    st_pull(st, &r, pull_cb, &a);
    wait_parked(1);
    teardown();
    CU_ASSERT_TRUE(ans_done(&a));
    CU_ASSERT_EQUAL(a.err, GT_ESHUTDOWN);
}

/* Waiters that ask different questions do not stand for each other: two
 * groups each get the message; a group whose filter does not match stays
 * parked while a later one whose does is answered. */
static void test_classes(void)
{
    ans_t g1, g2, x, y;
    setup();
    CU_ASSERT_EQUAL(tu_topic(st, "T", 4), GT_OK);
    ans_init(&g1);
    ans_init(&g2);
    ans_init(&x);
    ans_init(&y);
    st_pop_req_t r = preq(0);
    r.group = "G1";
    st_pop(st, &r, pop_cb, &g1);
    r.group = "G2";
    st_pop(st, &r, pop_cb, &g2);
    r.group = "G3";
    r.filter_expr = "x";
    st_pop(st, &r, pop_cb, &x);
    r.group = "G4";
    r.filter_kind = ST_FILTER_SQL92;
    r.filter_expr = "TAGS = 'y'";
    st_pop(st, &r, pop_cb, &y);
    wait_parked(4);
    CU_ASSERT_EQUAL(tu_send(st, "T", "y", NULL, "msg", -1, NULL), GT_OK);
    ans_wait(&g1);
    ans_wait(&g2);
    ans_wait(&y);
    CU_ASSERT_EQUAL(g1.n, 1);
    CU_ASSERT_EQUAL(g2.n, 1);
    CU_ASSERT_EQUAL(y.n, 1);
    CU_ASSERT_STRING_EQUAL(y.body, "msg");
    wait_parked(1);
    CU_ASSERT_FALSE(ans_done(&x));
    teardown();
    CU_ASSERT_EQUAL(x.err, GT_ESHUTDOWN);
}

/* Many parked pops of one group: each message goes to the earliest one
 * still waiting, in arrival order. */
static void test_fcfs(void)
{
    enum { N = 200 };
    static ans_t a[N];
    setup();
    CU_ASSERT_EQUAL(tu_topic(st, "T", 2), GT_OK);
    for (int i = 0; i < N; i++) {
        ans_init(&a[i]);
        st_pop_req_t r = preq((uint64_t)i + 1);
        r.max = 1;
        st_pop(st, &r, pop_cb, &a[i]);
    }
    wait_parked(N);
    st_pop_cancel(st, 1); /* the first one went away */
    ans_wait(&a[0]);
    CU_ASSERT_EQUAL(a[0].n, 0);
    for (int i = 1; i < N; i += 2) {
        char body[16];
        snprintf(body, sizeof(body), "m%d", i);
        CU_ASSERT_EQUAL(tu_send(st, "T", "t", NULL, body, -1, NULL), GT_OK);
        ans_wait(&a[i]);
        CU_ASSERT_EQUAL(a[i].n, 1);
        CU_ASSERT_STRING_EQUAL(a[i].body, body);
        if (i + 1 < N) {
            CU_ASSERT_EQUAL(tu_send(st, "T", "t", NULL, "x", -1, NULL), GT_OK);
            ans_wait(&a[i + 1]);
        }
    }
    wait_parked(0);
    teardown();
}

/* Many parked pops cancelled at once: none of them takes a message sent
 * afterwards; a live pop gets every one. */
static void test_cancel_many(void)
{
    enum { N = 2000 };
    static ans_t a[N];
    tu_msg_t m[8];
    size_t n;
    setup();
    CU_ASSERT_EQUAL(tu_topic(st, "T", 8), GT_OK);
    for (int i = 0; i < N; i++) {
        ans_init(&a[i]);
        st_pop_req_t r = preq((uint64_t)i + 1000);
        r.max = 1;
        st_pop(st, &r, pop_cb, &a[i]);
    }
    wait_parked(N);
    for (int i = 0; i < N; i++)
        st_pop_cancel(st, (uint64_t)i + 1000);
    wait_parked(0);
    for (int i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(tu_send(st, "T", "t", NULL, "m", -1, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 8, 60000, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 5);
    for (int i = 0; i < N; i++) {
        ans_wait(&a[i]);
        CU_ASSERT_EQUAL(a[i].n, 0);
    }
    teardown();
}

static const CU_TestInfo tests[] = {
    {"cancel_many", test_cancel_many},
    {"pull_long_poll", test_pull_long_poll},
    {"classes", test_classes},
    {"fcfs", test_fcfs},
    {"pull_filter", test_pull_filter},
    {"cancel", test_cancel},
    {"cancel_early", test_cancel_early},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return tu_run("park", tests);
}
