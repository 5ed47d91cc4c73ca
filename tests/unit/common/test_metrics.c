/* Unit tests for common/gt_metrics: label-set families (lookup, the cap and
 * its _other series, escaping, histogram output) and concurrent adds from
 * threads racing to create the same and different label sets (run under
 * TSan by the TSan build). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "gt_metrics.h"

static void test_family(void)
{
    gt_mfam_t *f = gt_mfam_new(2, 1, 2);
    const char *a[2] = {"t1", "g1"}, *b[2] = {"t1", "g2"}, *c[2] = {"t2", "g1"};
    gt_mseries_t *sa, *sb, *sc;

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    sa = gt_mfam_get(f, a);
    CU_ASSERT_PTR_EQUAL(gt_mfam_get(f, a), sa);
    sb = gt_mfam_get(f, b);
    CU_ASSERT_PTR_NOT_EQUAL(sa, sb);
    CU_ASSERT_PTR_NULL(gt_mfam_other(f));
    sc = gt_mfam_get(f, c); /* the third set: past the cap of 2 */
    CU_ASSERT_PTR_NOT_NULL(sc);
    CU_ASSERT_STRING_EQUAL(sc->labels[0], "_other");
    CU_ASSERT_PTR_EQUAL(gt_mfam_other(f), sc);
    CU_ASSERT_EQUAL(gt_mfam_count(f), 2);
    gt_mseries_add(sa, 0, 3);
    gt_mseries_add(sc, 0, 5);
    CU_ASSERT_EQUAL(gt_mseries_val(gt_mfam_get(f, a), 0), 3);
    CU_ASSERT_EQUAL(gt_mseries_val(gt_mfam_get(f, c), 0), 5);
    /* An existing set is still found once the family is full. */
    CU_ASSERT_PTR_EQUAL(gt_mfam_get(f, b), sb);
    gt_mfam_free(f);
    CU_ASSERT_PTR_NULL(gt_mfam_new(0, 1, 1));
    CU_ASSERT_PTR_NULL(gt_mfam_new(6, 1, 1));
}

static void test_write(void)
{
    static const uint64_t bounds[] = {10, 100};
    static const char *const names[] = {"topic"};
    gt_mfam_t *f = gt_mfam_new(1, 4, 10);
    const char *v[1] = {"a\"b\\c\nd"};
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    gt_mseries_t *s = gt_mfam_get(f, v);

    gt_mseries_observe(s, 0, bounds, 2, 5);
    gt_mseries_observe(s, 0, bounds, 2, 10);
    gt_mseries_observe(s, 0, bounds, 2, 50);
    gt_mseries_observe(s, 0, bounds, 2, 1000);
    gt_metrics_write_hist(out, f, "h", names, 0, bounds, 2, 10);
    fclose(out);
    CU_ASSERT_STRING_EQUAL(buf,
        "h_bucket{topic=\"a\\\"b\\\\c\\nd\",le=\"1\"} 2\n"
        "h_bucket{topic=\"a\\\"b\\\\c\\nd\",le=\"10\"} 3\n"
        "h_bucket{topic=\"a\\\"b\\\\c\\nd\",le=\"+Inf\"} 4\n"
        "h_sum{topic=\"a\\\"b\\\\c\\nd\"} 106.5\n"
        "h_count{topic=\"a\\\"b\\\\c\\nd\"} 4\n");
    free(buf);
    gt_mfam_free(f);
}

#define THREADS 4
#define ROUNDS 20000

static void *adder(void *arg)
{
    gt_mfam_t *f = arg;
    char name[32];

    for (int i = 0; i < ROUNDS; i++) {
        const char *v[1] = {name};
        snprintf(name, sizeof(name), "t%d", i % 40);
        gt_mseries_add(gt_mfam_get(f, v), 0, 1);
    }
    return NULL;
}

static void test_concurrent(void)
{
    gt_mfam_t *f = gt_mfam_new(1, 1, 30); /* 40 names: 10 go to _other */
    pthread_t t[THREADS];
    uint64_t sum = 0;

    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, adder, f);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    CU_ASSERT_EQUAL(gt_mfam_count(f), 30);
    for (size_t i = 0; i < gt_mfam_count(f); i++)
        sum += gt_mseries_val(gt_mfam_at(f, i), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(gt_mfam_other(f));
    CU_ASSERT_EQUAL(gt_mseries_val(gt_mfam_other(f), 0), (uint64_t)THREADS * ROUNDS / 4);
    sum += gt_mseries_val(gt_mfam_other(f), 0);
    CU_ASSERT_EQUAL(sum, (uint64_t)THREADS * ROUNDS);
    gt_mfam_free(f);
}

int main(void)
{
    CU_pSuite s;
    unsigned fails;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("gt_metrics", NULL, NULL);
    CU_add_test(s, "family and cap", test_family);
    CU_add_test(s, "text output", test_write);
    CU_add_test(s, "concurrent adds", test_concurrent);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    fails = CU_get_number_of_failures();
    CU_cleanup_registry();
    return fails == 0 ? 0 : 1;
}
