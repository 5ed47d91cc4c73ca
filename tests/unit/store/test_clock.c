/* The store on a test clock (st_test_clock): long-poll timeouts and
 * invisible-time expiries happen when the test moves the clock, with no
 * sleeps and no dependence on the machine's speed. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_pop.h"
#include "tu.h"

static char *dir;
static st_store_t *st;
static _Atomic int64_t fake_now;

static int64_t fake_clock(void *ctx)
{
    (void)ctx;
    return atomic_load(&fake_now);
}

static void advance(int64_t ms)
{
    atomic_fetch_add(&fake_now, ms);
    st_local_clock_settle(st); /* the service thread looked at the new time */
}

static void setup(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    atomic_store(&fake_now, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    st_test_clock(fake_clock, NULL);
    dir = tu_tmpdir("clock");
    st = tu_open(dir, ST_FLUSH_ASYNC);
}

static void teardown(void)
{
    st_close(st);
    st = NULL;
    st_test_clock(NULL, NULL);
    tu_rmrf(dir);
    free(dir);
}

typedef struct ans {
    pthread_mutex_t m;
    pthread_cond_t c;
    bool done;
    gt_err_t err;
    size_t n;
} ans_t;

static void pop_cb(void *arg, gt_err_t err, const st_popped_t *msgs, size_t n)
{
    ans_t *a = arg;
    (void)msgs;
    pthread_mutex_lock(&a->m);
    a->err = err;
    a->n = n;
    a->done = true;
    pthread_cond_signal(&a->c);
    pthread_mutex_unlock(&a->m);
}

static void pull_cb(void *arg, gt_err_t err, const st_message_t *msgs,
                    size_t n, uint64_t next)
{
    (void)msgs;
    (void)next;
    pop_cb(arg, err, NULL, n);
}

static void ans_wait(ans_t *a)
{
    pthread_mutex_lock(&a->m);
    while (!a->done)
        pthread_cond_wait(&a->c, &a->m);
    pthread_mutex_unlock(&a->m);
}

static void wait_parked(size_t n)
{
    while (st_local_parked(st) != n)
        tu_sleep_ms(1);
}

/* A parked pop and a parked pull end empty when the clock passes their
 * poll timeout, not before. */
static void test_poll_timeout(void)
{
    ans_t a = {.m = PTHREAD_MUTEX_INITIALIZER, .c = PTHREAD_COND_INITIALIZER};
    ans_t b = {.m = PTHREAD_MUTEX_INITIALIZER, .c = PTHREAD_COND_INITIALIZER};
    setup();
    CU_ASSERT_EQUAL(tu_topic(st, "T", 2), GT_OK);
    st_pop_req_t r = {.group = "G", .topic = "T", .queue_id = ST_QUEUE_ANY,
                      .max = 4, .invisible_ms = 1000,
                      .poll_timeout_ms = 60000};
    st_pop(st, &r, pop_cb, &a);
    st_pull_req_t p = {.topic = "T", .queue = 1, .max = 4,
                       .poll_timeout_ms = 90000};
    st_pull(st, &p, pull_cb, &b);
    wait_parked(2);
    advance(59999);
    wait_parked(2); /* the service thread looked: still parked */
    CU_ASSERT_EQUAL(st_local_parked(st), 2);
    advance(1);
    ans_wait(&a);
    CU_ASSERT_EQUAL(a.err, GT_OK);
    CU_ASSERT_EQUAL(a.n, 0);
    CU_ASSERT_EQUAL(st_local_parked(st), 1);
    advance(30000);
    ans_wait(&b);
    CU_ASSERT_EQUAL(b.err, GT_OK);
    CU_ASSERT_EQUAL(b.n, 0);
    teardown();
}

/* A delivery comes back once its invisible time has passed on the clock,
 * to a pop parked for it, as attempt 2. */
static void test_redelivery(void)
{
    ans_t a = {.m = PTHREAD_MUTEX_INITIALIZER, .c = PTHREAD_COND_INITIALIZER};
    tu_msg_t m[2];
    size_t n;
    setup();
    CU_ASSERT_EQUAL(tu_topic(st, "T", 1), GT_OK);
    CU_ASSERT_EQUAL(tu_send(st, "T", "t", NULL, "x", 0, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 1, 30000, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 1, 30000, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0);
    st_pop_req_t r = {.group = "G", .topic = "T", .queue_id = ST_QUEUE_ANY,
                      .max = 1, .invisible_ms = 30000,
                      .poll_timeout_ms = 3600000};
    st_pop(st, &r, pop_cb, &a);
    wait_parked(1);
    advance(30000);
    ans_wait(&a);
    CU_ASSERT_EQUAL(a.err, GT_OK);
    CU_ASSERT_EQUAL(a.n, 1);
    teardown();
}

static const CU_TestInfo tests[] = {
    {"poll_timeout", test_poll_timeout},
    {"redelivery", test_redelivery},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return tu_run("clock", tests);
}
