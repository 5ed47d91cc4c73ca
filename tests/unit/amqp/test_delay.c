/* CUnit tests for the pure parts of gateway-amqp/gw_delay.h: the x-delay
 * header read as RabbitMQ's delayed message plugin reads it, and the
 * stored record rewrites (x-delay swapped to -delay with BCC dropped, as a
 * fired timer is delivered; reply_to set for direct reply-to, with the
 * headers table's new place).  The end-to-end behaviour is in
 * tests/integration/amqp_delayed.test.mjs and amqp_reply_to.test.mjs. */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_delay.h"

static uint8_t tbuf[1024];

/* A headers table with one x-delay entry of the given kind. */
static gw_table_t delay_table(char kind, int64_t i, double d, const char *s)
{
    gw_tbuild_t b;
    gw_table_t t;

    gw_tbuild_init(&b, tbuf, sizeof(tbuf));
    gw_tbuild_string(&b, "other", "x");
    switch (kind) {
    case 'b': gw_tbuild_int8(&b, "x-delay", (int8_t)i); break;
    case 'B': gw_tbuild_uint8(&b, "x-delay", (uint8_t)i); break;
    case 's': gw_tbuild_int16(&b, "x-delay", (int16_t)i); break;
    case 'I': gw_tbuild_int32(&b, "x-delay", (int32_t)i); break;
    case 'i': gw_tbuild_uint32(&b, "x-delay", (uint32_t)i); break;
    case 'l': gw_tbuild_int64(&b, "x-delay", i); break;
    case 'd': gw_tbuild_double(&b, "x-delay", d); break;
    case 'f': gw_tbuild_float(&b, "x-delay", (float)d); break;
    case 'S': gw_tbuild_string(&b, "x-delay", s); break;
    case 'T': gw_tbuild_timestamp(&b, "x-delay", (uint64_t)i); break;
    case 't': gw_tbuild_bool(&b, "x-delay", true); break;
    default: break; /* no x-delay */
    }
    CU_ASSERT_EQUAL_FATAL(gw_tbuild_finish(&b, &t), GT_OK);
    return t;
}

static void test_delay_of(void)
{
    CU_ASSERT_EQUAL(gw_delay_of((gw_table_t){NULL, 0}), 0);
    CU_ASSERT_EQUAL(gw_delay_of(delay_table('-', 0, 0, NULL)), 0);
    CU_ASSERT_EQUAL(gw_delay_of(delay_table('b', 5, 0, NULL)), 5);
    CU_ASSERT_EQUAL(gw_delay_of(delay_table('B', 200, 0, NULL)), 200);
    CU_ASSERT_EQUAL(gw_delay_of(delay_table('s', 3000, 0, NULL)), 3000);
    CU_ASSERT_EQUAL(gw_delay_of(delay_table('I', 60000, 0, NULL)), 60000);
    CU_ASSERT_EQUAL(gw_delay_of(delay_table('i', 4000000000LL, 0, NULL)), 4000000000LL);
    CU_ASSERT_EQUAL(gw_delay_of(delay_table('l', 4294967295LL, 0, NULL)), 4294967295LL);
    /* <= 0 and past Erlang's timer limit: not delayed */
    CU_ASSERT_EQUAL(gw_delay_of(delay_table('I', 0, 0, NULL)), 0);
    CU_ASSERT_EQUAL(gw_delay_of(delay_table('I', -100, 0, NULL)), 0);
    CU_ASSERT_EQUAL(gw_delay_of(delay_table('l', 4294967296LL, 0, NULL)), 0);
    /* floats truncated, decimal strings read, other types not a delay */
    CU_ASSERT_EQUAL(gw_delay_of(delay_table('d', 0, 1500.9, NULL)), 1500);
    CU_ASSERT_EQUAL(gw_delay_of(delay_table('f', 0, 250.5, NULL)), 250);
    CU_ASSERT_EQUAL(gw_delay_of(delay_table('d', 0, -3.0, NULL)), 0);
    CU_ASSERT_EQUAL(gw_delay_of(delay_table('S', 0, 0, "2500")), 2500);
    CU_ASSERT_EQUAL(gw_delay_of(delay_table('S', 0, 0, "+70")), 70);
    CU_ASSERT_EQUAL(gw_delay_of(delay_table('S', 0, 0, "-70")), 0);
    CU_ASSERT_EQUAL(gw_delay_of(delay_table('S', 0, 0, "12ms")), 0);
    CU_ASSERT_EQUAL(gw_delay_of(delay_table('S', 0, 0, "")), 0);
    CU_ASSERT_EQUAL(gw_delay_of(delay_table('T', 5000, 0, NULL)), 0);
    CU_ASSERT_EQUAL(gw_delay_of(delay_table('t', 0, 0, NULL)), 0);
}

/* A 0xA1 record: exchange, routing key, property list, body. */
static size_t make_rec(uint8_t *out, const gw_props_t *p, const char *body)
{
    size_t at = 0, plen = 0, psize = gw_props_size(p);

    out[at++] = 0xA1;
    out[at++] = 2;
    memcpy(out + at, "ex", 2);
    at += 2;
    out[at++] = 1;
    out[at++] = 'k';
    out[at++] = (uint8_t)(psize >> 24);
    out[at++] = (uint8_t)(psize >> 16);
    out[at++] = (uint8_t)(psize >> 8);
    out[at++] = (uint8_t)psize;
    CU_ASSERT_EQUAL_FATAL(gw_props_encode(p, out + at, psize, &plen), GT_OK);
    at += plen;
    memcpy(out + at, body, strlen(body));
    return at + strlen(body);
}

/* Decodes the property list of record rec (0xA1 "ex" "k" layout). */
static void rec_props(const uint8_t *rec, size_t len, gw_props_t *p, uint8_t *scratch,
                      size_t *body_off)
{
    size_t pl = (size_t)rec[6] << 24 | (size_t)rec[7] << 16 | (size_t)rec[8] << 8 | rec[9];
    gw_content_header_t h;
    gw_fault_t f;

    CU_ASSERT_FATAL(10 + pl <= len);
    memset(scratch, 0, 12);
    scratch[1] = 60;
    memcpy(scratch + 12, rec + 10, pl);
    CU_ASSERT_EQUAL_FATAL(gw_header_decode(scratch, 12 + pl, &h, &f), GT_OK);
    *p = h.props;
    *body_off = 10 + pl;
}

static void test_rewrite(void)
{
    uint8_t hb[256], rec[1024], scratch[1024];
    gw_tbuild_t b;
    gw_props_t p, q;
    gw_value_t v;
    size_t len, out_len = 0, body_off;
    uint8_t *out = NULL;

    gw_tbuild_init(&b, hb, sizeof(hb));
    gw_tbuild_string(&b, "a", "1");
    gw_tbuild_int16(&b, "x-delay", 3000);
    gw_tbuild_array_begin(&b, "BCC");
    gw_tbuild_string(&b, NULL, "hidden");
    gw_tbuild_end(&b);
    gw_tbuild_string(&b, "z", "2");
    memset(&p, 0, sizeof(p));
    CU_ASSERT_EQUAL_FATAL(gw_tbuild_finish(&b, &p.headers), GT_OK);
    p.flags = GW_P_CONTENT_TYPE | GW_P_HEADERS | GW_P_CORRELATION_ID;
    p.content_type = gw_str("text/plain");
    p.correlation_id = gw_str("c1");
    len = make_rec(rec, &p, "body!");

    CU_ASSERT_FATAL(gw_rec_rewrite(rec, len, true, true, -3000, &out, &out_len));
    CU_ASSERT(memcmp(out, rec, 6) == 0); /* magic, exchange, routing key */
    rec_props(out, out_len, &q, scratch, &body_off);
    CU_ASSERT(gw_str_eq(q.content_type, "text/plain"));
    CU_ASSERT(gw_str_eq(q.correlation_id, "c1"));
    CU_ASSERT(!gw_table_get(q.headers, "BCC", &v));
    CU_ASSERT(gw_table_get(q.headers, "x-delay", &v) && v.type == 'I' && v.v.i == -3000);
    CU_ASSERT(gw_table_get(q.headers, "a", &v) && v.type == 'S');
    CU_ASSERT(gw_table_get(q.headers, "z", &v) && v.type == 'S');
    CU_ASSERT_EQUAL(out_len - body_off, 5);
    CU_ASSERT(memcmp(out + body_off, "body!", 5) == 0);
    free(out);

    /* no headers: nothing to rewrite */
    p.flags = GW_P_CONTENT_TYPE;
    len = make_rec(rec, &p, "b");
    CU_ASSERT(!gw_rec_rewrite(rec, len, true, true, -1, &out, &out_len));
    CU_ASSERT_PTR_NULL(out);
    /* not a record */
    CU_ASSERT(!gw_rec_rewrite((const uint8_t *)"xyz", 3, true, true, -1, &out, &out_len));
}

static void test_reply_to(void)
{
    uint8_t hb[128], rec[1024], scratch[1024];
    gw_tbuild_t b;
    gw_props_t p, q;
    gw_table_t t;
    size_t len, out_len = 0, hoff = 0, hlen = 0, body_off;
    uint8_t *out = NULL;

    gw_tbuild_init(&b, hb, sizeof(hb));
    gw_tbuild_int32(&b, "n", 7);
    memset(&p, 0, sizeof(p));
    CU_ASSERT_EQUAL_FATAL(gw_tbuild_finish(&b, &p.headers), GT_OK);
    p.flags = GW_P_CONTENT_TYPE | GW_P_CONTENT_ENCODING | GW_P_HEADERS | GW_P_REPLY_TO;
    p.content_type = gw_str("application/json");
    p.content_encoding = gw_str("gzip");
    p.reply_to = gw_str("amq.rabbitmq.reply-to");
    len = make_rec(rec, &p, "{}");
    CU_ASSERT_FATAL(gw_rec_set_reply_to(rec, len, gw_str("amq.rabbitmq.reply-to.0001.abcd"),
                                        &out, &out_len, &hoff, &hlen));
    rec_props(out, out_len, &q, scratch, &body_off);
    CU_ASSERT(gw_str_eq(q.reply_to, "amq.rabbitmq.reply-to.0001.abcd"));
    CU_ASSERT(gw_str_eq(q.content_encoding, "gzip"));
    /* the headers table is where the offsets say */
    CU_ASSERT_EQUAL(hlen, p.headers.len);
    t = (gw_table_t){out + hoff, hlen};
    CU_ASSERT(memcmp(t.ptr, p.headers.ptr, hlen) == 0);
    CU_ASSERT(memcmp(out + body_off, "{}", 2) == 0);
    free(out);

    /* no headers: offsets 0 */
    p.flags = GW_P_REPLY_TO;
    len = make_rec(rec, &p, "");
    CU_ASSERT_FATAL(gw_rec_set_reply_to(rec, len, gw_str("r"), &out, &out_len, &hoff, &hlen));
    CU_ASSERT(hoff == 0 && hlen == 0);
    free(out);
}

int main(void)
{
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    suite = CU_add_suite("amqp_delay", NULL, NULL);
    if (suite == NULL || CU_add_test(suite, "delay_of", test_delay_of) == NULL ||
        CU_add_test(suite, "rewrite", test_rewrite) == NULL ||
        CU_add_test(suite, "reply_to", test_reply_to) == NULL)
        goto out;
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
out:;
    unsigned fails = CU_get_number_of_failures();
    CU_cleanup_registry();
    return fails == 0 && CU_get_error() == CUE_SUCCESS ? 0 : 1;
}
