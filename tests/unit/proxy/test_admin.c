/* Unit tests for the admin API's helpers (px_admin.c): the store waiter
 * gives up at its deadline and the callback that comes later still finds
 * it (it frees it); path segments are %-decoded and bad ones refused;
 * secrets in the printed config are masked. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "px_admin_int.h"

static void *late_done(void *arg)
{
    px_aw_t *w = arg;

    usleep(50 * 1000);
    pthread_mutex_lock(&w->mu);
    json_array_append_new(w->out, json_integer(1)); /* writes after the wait ended */
    pthread_mutex_unlock(&w->mu);
    px_aw_done(w, GT_OK);
    return NULL;
}

static void test_waiter_timeout(void)
{
    px_aw_t *w = px_aw_new(1, NULL);
    pthread_t t;

    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    w->out = json_array();
    CU_ASSERT_EQUAL(px_aw_wait(w, px_admin_now_ms() + 10), GT_ETIMEDOUT);
    pthread_create(&t, NULL, late_done, w);
    px_aw_put(w); /* the handler gives up first: the callback frees */
    pthread_join(t, NULL);
}

static void *done_err(void *arg)
{
    px_aw_t *w = arg;

    px_aw_done(w, GT_OK);
    px_aw_done(w, GT_ENOTFOUND);
    px_aw_done(w, GT_EIO);
    return NULL;
}

static void test_waiter_errors(void)
{
    px_aw_t *w = px_aw_new(1, NULL);
    pthread_t t;

    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    px_aw_add(w, 2);
    pthread_create(&t, NULL, done_err, w);
    /* the first error of the three callbacks */
    CU_ASSERT_EQUAL(px_aw_wait(w, px_admin_now_ms() + 10000), GT_ENOTFOUND);
    pthread_join(t, NULL);
    px_aw_put(w);
}

static void test_split(void)
{
    px_seg_t seg[PX_SEG_MAX];

    CU_ASSERT_EQUAL(px_admin_split("", seg, PX_SEG_MAX), 0);
    CU_ASSERT_EQUAL(px_admin_split("/", seg, PX_SEG_MAX), 0);
    CU_ASSERT_EQUAL(px_admin_split("/%25DLQ%25G/reset-offset", seg, PX_SEG_MAX), 2);
    CU_ASSERT_STRING_EQUAL(seg[0], "%DLQ%G");
    CU_ASSERT_STRING_EQUAL(seg[1], "reset-offset");
    CU_ASSERT_EQUAL(px_admin_split("/a%2Fb", seg, PX_SEG_MAX), 1);
    CU_ASSERT_STRING_EQUAL(seg[0], "a/b");
    CU_ASSERT_EQUAL(px_admin_split("/a//b", seg, PX_SEG_MAX), -1);
    CU_ASSERT_EQUAL(px_admin_split("/a%00b", seg, PX_SEG_MAX), -1);
    CU_ASSERT_EQUAL(px_admin_split("/a%zz", seg, PX_SEG_MAX), -1);
    CU_ASSERT_EQUAL(px_admin_split("/a%2", seg, PX_SEG_MAX), -1);
    CU_ASSERT_EQUAL(px_admin_split("/a%", seg, PX_SEG_MAX), -1);
    CU_ASSERT_EQUAL(px_admin_split("/1/2/3/4/5/6/7", seg, PX_SEG_MAX), -1);
    {
        char longseg[400];

        memset(longseg, 'x', sizeof(longseg) - 1);
        longseg[0] = '/';
        longseg[sizeof(longseg) - 1] = '\0';
        CU_ASSERT_EQUAL(px_admin_split(longseg, seg, PX_SEG_MAX), -1);
    }
}

static void test_mask(void)
{
    char yaml[] = "amqp:\n  users:\n  - {name: ops, password: \"hunter2\", password_hash: null}\n"
                  "  - {name: b, password_hash: abcd==, tags: []}\n"
                  "server:\n  token: s3cr3t\n  nopassword: visible\n";

    px_admin_mask_secrets(yaml);
    CU_ASSERT_PTR_NULL(strstr(yaml, "hunter2"));
    CU_ASSERT_PTR_NULL(strstr(yaml, "abcd=="));
    CU_ASSERT_PTR_NULL(strstr(yaml, "s3cr3t"));
    CU_ASSERT_PTR_NOT_NULL(strstr(yaml, "password: *********,"));
    CU_ASSERT_PTR_NOT_NULL(strstr(yaml, "password_hash: null"));
    CU_ASSERT_PTR_NOT_NULL(strstr(yaml, "nopassword: visible"));
    CU_ASSERT_PTR_NOT_NULL(strstr(yaml, "tags: []"));
}

/* Committed beyond the end read (a consumer moved on between the two
 * store calls): no lag; the former max - committed wrapped to 2^64 - 2. */
static void test_lag(void)
{
    CU_ASSERT_EQUAL(px_admin_lag(10, 4), 6);
    CU_ASSERT_EQUAL(px_admin_lag(10, 10), 0);
    CU_ASSERT_EQUAL(px_admin_lag(3, 5), 0);
    CU_ASSERT_EQUAL(px_admin_lag(0, UINT64_MAX), 0);
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("px_admin", NULL, NULL);
    CU_add_test(s, "a waiter outlives its handler's timeout", test_waiter_timeout);
    CU_add_test(s, "a waiter reports the first error", test_waiter_errors);
    CU_add_test(s, "path segments", test_split);
    CU_add_test(s, "secrets masked", test_mask);
    CU_add_test(s, "lag never wraps", test_lag);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed == 0 ? 0 : 1;
}
