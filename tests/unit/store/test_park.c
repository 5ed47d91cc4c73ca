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

static const CU_TestInfo tests[] = {
    {"pull_filter", test_pull_filter},
    {"cancel", test_cancel},
    {"cancel_early", test_cancel_early},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return tu_run("park", tests);
}
