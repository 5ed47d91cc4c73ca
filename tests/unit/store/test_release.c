/* st_release(): a delivery given back without counting.  The message is
 * visible again at once with its attempt restored, the handle stops
 * working, a parked pop gets it, a restart agrees, and the decorators
 * pass it through.  No test waits on the clock: invisible times are long,
 * so only the release can make a message visible again. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tu.h"

#define LONG_MS 600000 /* never expires during a test */

static char *dir;
static st_store_t *st;

static void setup(void)
{
    dir = tu_tmpdir("release");
    st = tu_open(dir, ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 2), GT_OK);
    CU_ASSERT_EQUAL_FATAL(tu_group(st, "G", 3, ST_CONSUME_FROM_FIRST), GT_OK);
}

static void teardown(void)
{
    st_close(st);
    st = NULL;
    tu_rmrf(dir);
    free(dir);
}

/* More releases than the group's max attempts (3): never dead-lettered
 * (a counted give-back would send it to the DLQ on the fourth pop), every
 * pop is attempt 1 again. */
static void test_release_does_not_count(void)
{
    tu_msg_t m[2];
    size_t n;
    setup();
    CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "x", -1, NULL), GT_OK);
    for (int i = 0; i < 10; i++) {
        CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 2, LONG_MS, m, &n),
                        GT_OK);
        CU_ASSERT_EQUAL_FATAL(n, 1);
        CU_ASSERT_EQUAL(m[0].attempt, 1);
        CU_ASSERT_STRING_EQUAL(m[0].body, "x");
        CU_ASSERT_EQUAL(tu_release(st, "G", "T", m[0].handle), GT_OK);
        /* the handle no longer works */
        CU_ASSERT_EQUAL(tu_release(st, "G", "T", m[0].handle), GT_EINVAL);
        CU_ASSERT_EQUAL(tu_ack(st, "G", "T", m[0].handle), GT_EINVAL);
        CU_ASSERT_EQUAL(tu_change(st, "G", "T", m[0].handle, 1000, NULL),
                        GT_EINVAL);
    }
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 2, LONG_MS, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(m[0].attempt, 1);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", m[0].handle), GT_OK);
    teardown();
}

/* A redelivery given back keeps the attempts before it. */
static void test_release_restores_previous_attempt(void)
{
    tu_msg_t a[2], b[2];
    size_t n = 0;
    setup();
    CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "x", -1, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 2, LONG_MS, a, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    /* expire it (1 ms) and wait until it comes back: attempt 2 */
    CU_ASSERT_EQUAL(tu_change(st, "G", "T", a[0].handle, 1, NULL), GT_OK);
    for (n = 0; n == 0;)
        CU_ASSERT_EQUAL_FATAL(tu_pop_simple(st, "G", "T", "*", 2, LONG_MS, b,
                                            &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(b[0].attempt, 2);
    CU_ASSERT_EQUAL(tu_release(st, "G", "T", b[0].handle), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 2, LONG_MS, a, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(a[0].attempt, 2);
    CU_ASSERT_STRING_EQUAL(a[0].id, b[0].id);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", a[0].handle), GT_OK);
    teardown();
}

/* Only the released message comes back; the others stay in flight. */
static void test_release_one_of_many(void)
{
    tu_msg_t m[4], r[4];
    size_t n;
    setup();
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "x", -1, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 4, LONG_MS, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    CU_ASSERT_EQUAL(tu_release(st, "G", "T", m[1].handle), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 4, LONG_MS, r, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_STRING_EQUAL(r[0].id, m[1].id);
    CU_ASSERT_EQUAL(r[0].attempt, 1);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", m[0].handle), GT_OK);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", m[2].handle), GT_OK);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", r[0].handle), GT_OK);
    teardown();
}

static void test_release_errors(void)
{
    tu_msg_t m[2];
    size_t n;
    setup();
    CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "x", -1, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 2, LONG_MS, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(tu_release(st, "G", "T", "garbage"), GT_EINVAL);
    CU_ASSERT_EQUAL(tu_release(st, "G", "nope", m[0].handle), GT_ENOTFOUND);
    CU_ASSERT_EQUAL(tu_release(st, "nope", "T", m[0].handle), GT_ENOTFOUND);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", m[0].handle), GT_OK);
    CU_ASSERT_EQUAL(tu_release(st, "G", "T", m[0].handle), GT_EINVAL);
    teardown();
}

typedef struct parked {
    tu_msg_t m[2];
    size_t n;
    gt_err_t rc;
} parked_t;

static void *parked_pop(void *arg)
{
    parked_t *p = arg;
    st_pop_req_t r = {.group = "G", .topic = "T", .queue_id = ST_QUEUE_ANY,
                      .filter_expr = "*", .max = 2, .invisible_ms = LONG_MS,
                      .poll_timeout_ms = ST_POLL_MAX_MS};
    p->rc = tu_pop(st, &r, p->m, &p->n);
    return NULL;
}

/* A long poll waiting on the group gets the released message (it would
 * otherwise wait out its whole poll time and come back empty). */
static void test_release_wakes_parked_pop(void)
{
    tu_msg_t m[2];
    size_t n;
    parked_t p = {0};
    pthread_t th;
    setup();
    CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "x", -1, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 2, LONG_MS, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, parked_pop, &p), 0);
    /* Parked or not yet: either way the pop must end with the message. */
    CU_ASSERT_EQUAL(tu_release(st, "G", "T", m[0].handle), GT_OK);
    pthread_join(th, NULL);
    CU_ASSERT_EQUAL(p.rc, GT_OK);
    CU_ASSERT_EQUAL_FATAL(p.n, 1);
    CU_ASSERT_STRING_EQUAL(p.m[0].id, m[0].id);
    CU_ASSERT_EQUAL(p.m[0].attempt, 1);
    teardown();
}

/* The release is in the state log: after a restart the message is visible
 * with its attempt restored, and the released handle stays dead. */
static void test_release_survives_restart(void)
{
    tu_msg_t m[2], r[2];
    size_t n;
    setup();
    CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "x", -1, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "y", -1, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 2, LONG_MS, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_EQUAL(tu_release(st, "G", "T", m[0].handle), GT_OK);
    st_close(st);
    st = tu_open(dir, ST_FLUSH_SYNC);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", m[0].handle), GT_EINVAL);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 2, LONG_MS, r, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1); /* the other one is still in flight */
    CU_ASSERT_STRING_EQUAL(r[0].id, m[0].id);
    CU_ASSERT_EQUAL(r[0].attempt, 1);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", m[1].handle), GT_OK);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", r[0].handle), GT_OK);
    teardown();
}

/* Through the test-only late decorator (a relay, as the executor one). */
static void test_release_through_relay(void)
{
    st_store_t *late = NULL;
    tu_msg_t m[2];
    size_t n;
    setup();
    CU_ASSERT_EQUAL_FATAL(st_late_open(st, 2000, 7, &late), GT_OK);
    st = late;
    CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "x", -1, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 2, LONG_MS, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(tu_release(st, "G", "T", m[0].handle), GT_OK);
    CU_ASSERT_EQUAL(tu_release(st, "G", "T", m[0].handle), GT_EINVAL);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 2, LONG_MS, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(m[0].attempt, 1);
    teardown();
}

int main(void)
{
    static const CU_TestInfo tests[] = {
        {"release_does_not_count", test_release_does_not_count},
        {"release_restores_previous_attempt",
         test_release_restores_previous_attempt},
        {"release_one_of_many", test_release_one_of_many},
        {"release_errors", test_release_errors},
        {"release_wakes_parked_pop", test_release_wakes_parked_pop},
        {"release_survives_restart", test_release_survives_restart},
        {"release_through_relay", test_release_through_relay},
        CU_TEST_INFO_NULL,
    };
    return tu_run("release", tests);
}
