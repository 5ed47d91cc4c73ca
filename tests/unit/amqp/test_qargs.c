/* CUnit tests for gateway-amqp/gw_qargs.h: what the parse keeps from
 * valid arguments, reading a kept table back (the durable queue record,
 * including records without arguments), and the redeclare comparison
 * across integer types.  RabbitMQ's texts for every bad argument are
 * compared with a real RabbitMQ 3.10.8 by amqp_qargs.test.mjs. */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <string.h>

#include "gw_qargs.h"

static char err[256];
static uint8_t buf[4096];

static gw_table_t args_all(void)
{
    gw_tbuild_t b;
    gw_table_t t;

    gw_tbuild_init(&b, buf, sizeof(buf));
    gw_tbuild_string(&b, "x-queue-type", "quorum");
    gw_tbuild_int32(&b, "x-message-ttl", 60000);
    gw_tbuild_int64(&b, "x-expires", 1000);
    gw_tbuild_uint8(&b, "x-max-length", 7);
    gw_tbuild_int16(&b, "x-max-length-bytes", 4096);
    gw_tbuild_string(&b, "x-overflow", "reject-publish-dlx");
    gw_tbuild_string(&b, "x-dead-letter-exchange", "dlx");
    gw_tbuild_string(&b, "x-dead-letter-routing-key", "dead");
    gw_tbuild_int8(&b, "x-delivery-limit", 3);
    gw_tbuild_bool(&b, "x-single-active-consumer", true);
    gw_tbuild_string(&b, "x-unknown", "kept");
    CU_ASSERT_EQUAL_FATAL(gw_tbuild_finish(&b, &t), GT_OK);
    return t;
}

static void check_all(const gw_qargs_t *a)
{
    CU_ASSERT_EQUAL(a->type, GW_QTYPE_QUORUM);
    CU_ASSERT(a->has_message_ttl && a->message_ttl == 60000);
    CU_ASSERT(a->has_expires && a->expires == 1000);
    CU_ASSERT(a->has_max_length && a->max_length == 7);
    CU_ASSERT(a->has_max_length_bytes && a->max_length_bytes == 4096);
    CU_ASSERT_EQUAL(a->overflow, GW_OVERFLOW_REJECT_PUBLISH_DLX);
    CU_ASSERT(a->has_dlx && a->dlx_len == 3 && memcmp(a->dlx, "dlx", 3) == 0);
    CU_ASSERT(a->has_dlrk && a->dlrk_len == 4 && memcmp(a->dlrk, "dead", 4) == 0);
    CU_ASSERT(a->has_delivery_limit && a->delivery_limit == 3);
    CU_ASSERT(a->single_active_consumer);
    CU_ASSERT(!a->has_max_priority);
}

static void test_parse(void)
{
    gw_table_t t = args_all();
    gw_qargs_t a;

    CU_ASSERT_FATAL(gw_qargs_parse(t, gw_str("q"), "/", true, false, false, &a, err,
                                   sizeof(err)));
    check_all(&a);
    CU_ASSERT_EQUAL(gw_qargs_table(&a).len, t.len);
    CU_ASSERT(memcmp(gw_qargs_table(&a).ptr, t.ptr, t.len) == 0);
    gw_qargs_free(&a);
    /* a quorum queue must be durable (RabbitMQ's text) */
    CU_ASSERT(!gw_qargs_parse(t, gw_str("q"), "v", false, false, false, &a, err, sizeof(err)));
    CU_ASSERT_STRING_EQUAL(err, "invalid property 'non-durable' for queue 'q' in vhost 'v'");
    /* no arguments: a classic queue with the defaults */
    CU_ASSERT_FATAL(gw_qargs_parse((gw_table_t){NULL, 0}, gw_str("q"), "/", false, true, true, &a,
                                   err, sizeof(err)));
    CU_ASSERT_EQUAL(a.type, GW_QTYPE_CLASSIC);
    CU_ASSERT(!a.has_dlx && !a.has_message_ttl && a.overflow == GW_OVERFLOW_DROP_HEAD);
    CU_ASSERT_EQUAL(gw_qargs_table(&a).len, 0);
    gw_qargs_free(&a);
}

static void test_load(void)
{
    gw_table_t t = args_all();
    gw_qargs_t a;
    uint8_t bad[3] = {1, 'x', 'S'}; /* truncated */

    CU_ASSERT_FATAL(gw_qargs_load(t.ptr, t.len, &a));
    check_all(&a);
    gw_qargs_free(&a);
    /* records written before the arguments were kept: an empty table */
    CU_ASSERT_FATAL(gw_qargs_load(NULL, 0, &a));
    CU_ASSERT_EQUAL(a.type, GW_QTYPE_CLASSIC);
    CU_ASSERT(!a.has_dlx);
    gw_qargs_free(&a);
    CU_ASSERT(!gw_qargs_load(bad, sizeof(bad), &a));
}

static void test_equivalent(void)
{
    gw_table_t t = args_all();
    gw_qargs_t a;
    gw_tbuild_t b;
    uint8_t b2[4096];
    gw_table_t t2;

    CU_ASSERT_FATAL(gw_qargs_parse(t, gw_str("q"), "/", true, false, false, &a, err,
                                   sizeof(err)));
    CU_ASSERT(gw_qargs_equivalent(&a, t, gw_str("q"), "/", err, sizeof(err)));
    /* the same values in other integer types, without the unknown one */
    gw_tbuild_init(&b, b2, sizeof(b2));
    gw_tbuild_string(&b, "x-queue-type", "quorum");
    gw_tbuild_int64(&b, "x-message-ttl", 60000);
    gw_tbuild_uint16(&b, "x-expires", 1000);
    gw_tbuild_int64(&b, "x-max-length", 7);
    gw_tbuild_uint32(&b, "x-max-length-bytes", 4096);
    gw_tbuild_string(&b, "x-overflow", "reject-publish-dlx");
    gw_tbuild_string(&b, "x-dead-letter-exchange", "dlx");
    gw_tbuild_string(&b, "x-dead-letter-routing-key", "dead");
    gw_tbuild_int32(&b, "x-delivery-limit", 3);
    gw_tbuild_bool(&b, "x-single-active-consumer", true);
    CU_ASSERT_EQUAL_FATAL(gw_tbuild_finish(&b, &t2), GT_OK);
    CU_ASSERT(gw_qargs_equivalent(&a, t2, gw_str("q"), "/", err, sizeof(err)));
    /* one differs */
    gw_tbuild_init(&b, b2, sizeof(b2));
    gw_tbuild_string(&b, "x-queue-type", "quorum");
    gw_tbuild_int64(&b, "x-message-ttl", 60000);
    CU_ASSERT_EQUAL_FATAL(gw_tbuild_finish(&b, &t2), GT_OK);
    CU_ASSERT(!gw_qargs_equivalent(&a, t2, gw_str("q"), "/", err, sizeof(err)));
    CU_ASSERT_STRING_EQUAL(err, "inequivalent arg 'x-expires' for queue 'q' in vhost '/': "
                                "received none but current is the value '1000' of type 'long'");
    gw_qargs_free(&a);
}

int main(void)
{
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    suite = CU_add_suite("amqp_qargs", NULL, NULL);
    if (suite == NULL || CU_add_test(suite, "parse", test_parse) == NULL ||
        CU_add_test(suite, "load", test_load) == NULL ||
        CU_add_test(suite, "equivalent", test_equivalent) == NULL)
        goto out;
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
out:;
    unsigned fails = CU_get_number_of_failures();
    CU_cleanup_registry();
    return fails == 0 && CU_get_error() == CUE_SUCCESS ? 0 : 1;
}
