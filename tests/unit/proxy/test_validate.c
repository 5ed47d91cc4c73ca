/* Unit tests for request validation: strict UTF-8 (gt_utf8_valid), the
 * raw-request string check px_validate_wire() and its RocketMQ codes,
 * system names, and protobuf time values. */
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "gt_pbwire.h"
#include "gt_text.h"
#include "px_service.h"
#include "px_svc_int.h"

#define U8(s) ((const uint8_t *)(s)), (sizeof(s) - 1)

static void test_utf8(void)
{
    CU_ASSERT_TRUE(gt_utf8_valid(U8("")));
    CU_ASSERT_TRUE(gt_utf8_valid(U8("plain ascii")));
    CU_ASSERT_TRUE(gt_utf8_valid(U8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80")));
    CU_ASSERT_TRUE(gt_utf8_valid(U8("\xf4\x8f\xbf\xbf")));       /* U+10FFFF */
    CU_ASSERT_FALSE(gt_utf8_valid(U8("\xff")));
    CU_ASSERT_FALSE(gt_utf8_valid(U8("\x80")));                  /* lone continuation */
    CU_ASSERT_FALSE(gt_utf8_valid(U8("\xc0\x80")));              /* overlong NUL */
    CU_ASSERT_FALSE(gt_utf8_valid(U8("\xe0\x80\xaf")));          /* overlong '/' */
    CU_ASSERT_FALSE(gt_utf8_valid(U8("\xed\xa0\x80")));          /* surrogate */
    CU_ASSERT_FALSE(gt_utf8_valid(U8("\xf4\x90\x80\x80")));      /* > U+10FFFF */
    CU_ASSERT_FALSE(gt_utf8_valid(U8("ok\xe2\x82")));            /* truncated */
    CU_ASSERT_FALSE(gt_utf8_valid(U8("\xc3" "a")));              /* bad continuation */

    char out[6];
    CU_ASSERT_EQUAL(gt_utf8_copy(out, sizeof(out), "abc"), 3);
    CU_ASSERT_STRING_EQUAL(out, "abc");
    /* "ab€" is 5 bytes: fits; "abc€" would be cut inside the euro sign */
    CU_ASSERT_EQUAL(gt_utf8_copy(out, sizeof(out), "ab\xe2\x82\xac"), 5);
    CU_ASSERT_EQUAL(gt_utf8_copy(out, sizeof(out), "abc\xe2\x82\xac"), 3);
    CU_ASSERT_STRING_EQUAL(out, "abc");
    CU_ASSERT_EQUAL(gt_utf8_copy(out, sizeof(out), NULL), 0);
    CU_ASSERT_STRING_EQUAL(out, "");
}

/* Long strings (the ASCII runs are checked eight bytes at a time): a bad
 * or multi-byte sequence at every position of 40 ASCII bytes, also cut at
 * every length, is judged as byte by byte. */
static void test_utf8_long(void)
{
    static const struct {
        const char *seq;
        size_t len;
        bool ok;
    } seqs[] = {{"\xc3\xa9", 2, true},         {"\xf0\x9f\x98\x80", 4, true},
                {"\xff", 1, false},             {"\x80", 1, false},
                {"\xed\xa0\x80", 3, false},     {"\xc3" "a", 2, false}};
    uint8_t buf[48];

    memset(buf, 'a', sizeof(buf));
    CU_ASSERT_TRUE(gt_utf8_valid(buf, sizeof(buf)));
    for (size_t k = 0; k < sizeof(seqs) / sizeof(seqs[0]); k++) {
        for (size_t at = 0; at + seqs[k].len <= 40; at++) {
            memset(buf, 'a', sizeof(buf));
            memcpy(buf + at, seqs[k].seq, seqs[k].len);
            CU_ASSERT_EQUAL(gt_utf8_valid(buf, 40), seqs[k].ok);
            /* cut inside the sequence: never valid */
            if (seqs[k].len > 1 && seqs[k].ok)
                CU_ASSERT_FALSE(gt_utf8_valid(buf, at + 1));
        }
    }
}

/* A SendMessageRequest whose string fields carry markers, packed; `mark`
 * names the field whose marker byte 'X' gets replaced by `with`. */
static px_code_t send_with(const char *mark, uint8_t with)
{
    Apache__Rocketmq__V2__SendMessageRequest req =
        APACHE__ROCKETMQ__V2__SEND_MESSAGE_REQUEST__INIT;
    Apache__Rocketmq__V2__Message m = APACHE__ROCKETMQ__V2__MESSAGE__INIT;
    Apache__Rocketmq__V2__Message *mp = &m;
    Apache__Rocketmq__V2__Resource topic = APACHE__ROCKETMQ__V2__RESOURCE__INIT;
    Apache__Rocketmq__V2__SystemProperties sp =
        APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__INIT;
    Apache__Rocketmq__V2__Message__UserPropertiesEntry up =
        APACHE__ROCKETMQ__V2__MESSAGE__USER_PROPERTIES_ENTRY__INIT;
    Apache__Rocketmq__V2__Message__UserPropertiesEntry *upp = &up;
    char tname[] = "T_topic", tag[] = "T_tag", k0[] = "T_key", id[] = "T_id",
         grp[] = "T_group", pk[] = "T_pkey", pv[] = "T_pval", trace[] = "T_trace",
         body[] = "T_body";
    char *keys[] = {k0};
    struct { const char *name; char *s; } marks[] = {
        {"topic", tname}, {"tag", tag}, {"key", k0}, {"id", id}, {"group", grp},
        {"pkey", pk}, {"pval", pv}, {"trace", trace}, {"body", body}};
    char why[256];
    uint8_t buf[512];
    size_t n;

    for (size_t i = 0; i < sizeof(marks) / sizeof(marks[0]); i++)
        if (strcmp(marks[i].name, mark) == 0)
            marks[i].s[0] = 'X';
    topic.name = tname;
    sp.tag_present_case = APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__TAG_PRESENT_TAG;
    sp.tag = tag;
    sp.n_keys = 1;
    sp.keys = keys;
    sp.message_id = id;
    sp.message_group_present_case =
        APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__MESSAGE_GROUP_PRESENT_MESSAGE_GROUP;
    sp.message_group = grp;
    sp.trace_context_present_case =
        APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__TRACE_CONTEXT_PRESENT_TRACE_CONTEXT;
    sp.trace_context = trace;
    up.key = pk;
    up.value = pv;
    m.topic = &topic;
    m.system_properties = &sp;
    m.n_user_properties = 1;
    m.user_properties = &upp;
    m.body.data = (uint8_t *)body;
    m.body.len = strlen(body);
    req.n_messages = 1;
    req.messages = &mp;
    n = protobuf_c_message_pack(&req.base, buf);
    CU_ASSERT_FATAL(n < sizeof(buf));
    for (size_t i = 0; i < n; i++)
        if (buf[i] == 'X')
            buf[i] = with;
    return px_validate_wire(&apache__rocketmq__v2__send_message_request__descriptor,
                            buf, n, why, sizeof(why));
}

static void test_wire_send(void)
{
    static const uint8_t bad[] = {0x00, 0xff, 0xc0};
    for (size_t i = 0; i < sizeof(bad); i++) {
        CU_ASSERT_EQUAL(send_with("none", bad[i]), PX_CODE(OK));
        CU_ASSERT_EQUAL(send_with("tag", bad[i]), PX_CODE(ILLEGAL_MESSAGE_TAG));
        CU_ASSERT_EQUAL(send_with("key", bad[i]), PX_CODE(ILLEGAL_MESSAGE_KEY));
        CU_ASSERT_EQUAL(send_with("id", bad[i]), PX_CODE(ILLEGAL_MESSAGE_ID));
        CU_ASSERT_EQUAL(send_with("group", bad[i]), PX_CODE(ILLEGAL_MESSAGE_GROUP));
        CU_ASSERT_EQUAL(send_with("pkey", bad[i]), PX_CODE(ILLEGAL_MESSAGE_PROPERTY_KEY));
        CU_ASSERT_EQUAL(send_with("pval", bad[i]), PX_CODE(ILLEGAL_MESSAGE_PROPERTY_KEY));
        CU_ASSERT_EQUAL(send_with("topic", bad[i]), PX_CODE(ILLEGAL_TOPIC));
        CU_ASSERT_EQUAL(send_with("trace", bad[i]), PX_CODE(BAD_REQUEST));
        /* bytes fields are not strings */
        CU_ASSERT_EQUAL(send_with("body", bad[i]), PX_CODE(OK));
    }
}

static void test_wire_other(void)
{
    Apache__Rocketmq__V2__AckMessageRequest req =
        APACHE__ROCKETMQ__V2__ACK_MESSAGE_REQUEST__INIT;
    Apache__Rocketmq__V2__Resource g = APACHE__ROCKETMQ__V2__RESOURCE__INIT,
                                   t = APACHE__ROCKETMQ__V2__RESOURCE__INIT;
    Apache__Rocketmq__V2__AckMessageEntry e = APACHE__ROCKETMQ__V2__ACK_MESSAGE_ENTRY__INIT;
    Apache__Rocketmq__V2__AckMessageEntry *ep = &e;
    char gname[] = "G", tname[] = "T", handle[] = "H", id[] = "I", why[256];
    uint8_t buf[256];
    size_t n;
    const ProtobufCMessageDescriptor *d = &apache__rocketmq__v2__ack_message_request__descriptor;

    g.name = gname;
    t.name = tname;
    e.receipt_handle = handle;
    e.message_id = id;
    req.group = &g;
    req.topic = &t;
    req.n_entries = 1;
    req.entries = &ep;
    n = protobuf_c_message_pack(&req.base, buf);
    CU_ASSERT_EQUAL(px_validate_wire(d, buf, n, why, sizeof(why)), PX_CODE(OK));
    /* truncated bytes: left to the decoder */
    CU_ASSERT_EQUAL(px_validate_wire(d, buf, n - 1, why, sizeof(why)), PX_CODE(OK));
    handle[0] = '\xff';
    n = protobuf_c_message_pack(&req.base, buf);
    CU_ASSERT_EQUAL(px_validate_wire(d, buf, n, why, sizeof(why)),
                    PX_CODE(INVALID_RECEIPT_HANDLE));
    handle[0] = 'H';
    gname[0] = '\xfe';
    n = protobuf_c_message_pack(&req.base, buf);
    CU_ASSERT_EQUAL(px_validate_wire(d, buf, n, why, sizeof(why)),
                    PX_CODE(ILLEGAL_CONSUMER_GROUP));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "not valid UTF-8"));
}

/* The walk itself (common/gt_pbwire.c), as gantry-store uses it: NULs
 * only, UTF-8 left alone; the bad field, its message and the field
 * holding that message; nesting below max_depth not looked into. */
static void test_pbwire(void)
{
    Apache__Rocketmq__V2__AckMessageRequest req = APACHE__ROCKETMQ__V2__ACK_MESSAGE_REQUEST__INIT;
    Apache__Rocketmq__V2__Resource g = APACHE__ROCKETMQ__V2__RESOURCE__INIT;
    const ProtobufCMessageDescriptor *d = &apache__rocketmq__v2__ack_message_request__descriptor;
    char gname[] = "G\xff";
    gt_pbwire_bad_t bad;
    uint8_t buf[64];
    size_t n;

    g.name = gname;
    req.group = &g;
    n = protobuf_c_message_pack(&req.base, buf);
    CU_ASSERT_TRUE(gt_pbwire_strings_ok(d, buf, n, false, 8, &bad));
    CU_ASSERT_FALSE(gt_pbwire_strings_ok(d, buf, n, true, 8, &bad));
    CU_ASSERT_FALSE(bad.nul);
    /* a NUL: packed by hand, a C string cannot hold one */
    n = protobuf_c_message_pack(&req.base, buf);
    buf[n - 1] = '\0';
    CU_ASSERT_FALSE(gt_pbwire_strings_ok(d, buf, n, false, 8, &bad));
    CU_ASSERT_TRUE(bad.nul);
    CU_ASSERT_STRING_EQUAL(bad.field->name, "name");
    CU_ASSERT_STRING_EQUAL(bad.parent->name, "group");
    CU_ASSERT_STRING_EQUAL(bad.msg->short_name, "Resource");
    /* not looked into below max_depth */
    CU_ASSERT_TRUE(gt_pbwire_strings_ok(d, buf, n, false, 0, &bad));
}

static void test_system_names(void)
{
    CU_ASSERT_TRUE(px_name_is_system("%SYS%HALF"));
    CU_ASSERT_TRUE(px_name_is_system("%SYS%anything"));
    CU_ASSERT_TRUE(px_name_is_system("%DLQ%%SYS%HOLD"));
    CU_ASSERT_TRUE(px_name_is_system("%RETRY%%SYS%HOLD"));
    CU_ASSERT_FALSE(px_name_is_system("%DLQ%G1"));
    CU_ASSERT_FALSE(px_name_is_system("T%SYS%"));
    CU_ASSERT_TRUE(px_name_is_derived("%DLQ%G1"));
    CU_ASSERT_FALSE(px_name_is_derived("G1"));
}

static void test_time(void)
{
    Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
    Google__Protobuf__Timestamp t = GOOGLE__PROTOBUF__TIMESTAMP__INIT;

    d.seconds = INT64_MAX;
    CU_ASSERT_EQUAL(px_duration_ms(&d), INT64_MAX);
    d.seconds = ((int64_t)1 << 61) + 512; /* would wrap to 512 s */
    CU_ASSERT_EQUAL(px_duration_ms(&d), INT64_MAX);
    d.seconds = INT64_MIN;
    CU_ASSERT_EQUAL(px_duration_ms(&d), INT64_MIN);
    d.seconds = INT64_MAX / 1000;
    d.nanos = 999999999;
    CU_ASSERT_EQUAL(px_duration_ms(&d), INT64_MAX);
    d.seconds = 12;
    d.nanos = 345000000;
    CU_ASSERT_EQUAL(px_duration_ms(&d), 12345);
    t.seconds = (int64_t)1 << 62;
    CU_ASSERT_EQUAL(px_timestamp_ms(&t), INT64_MAX);
    CU_ASSERT_FALSE(px_timestamp_valid(&t));
    t.seconds = 253402300799LL;
    CU_ASSERT_TRUE(px_timestamp_valid(&t));
    t.nanos = -1;
    CU_ASSERT_FALSE(px_timestamp_valid(&t));
}

/* Every MessagingService method screens its raw request (a table entry
 * written without it would let invalid strings through). */
static void test_table_screens(void)
{
    px_method_table_t t;
    size_t n = 0;

    px_method_table_init(&t);
    CU_ASSERT_EQUAL_FATAL(px_service_register(&t), GT_OK);
    for (size_t i = 0; i < t.count; i++) {
        if (strncmp(t.methods[i]->path, "/apache.rocketmq.v2.MessagingService/", 37) != 0)
            continue;
        n++;
        if (t.methods[i]->on_screen != px_screen_request)
            CU_FAIL(t.methods[i]->path);
    }
    CU_ASSERT_EQUAL(n, px_service_messaging_count());
    px_method_table_free(&t);
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("px_validate", NULL, NULL);
    CU_add_test(s, "strict UTF-8", test_utf8);
    CU_add_test(s, "strict UTF-8, long strings", test_utf8_long);
    CU_add_test(s, "SendMessage strings and their codes", test_wire_send);
    CU_add_test(s, "other requests, truncated bytes", test_wire_other);
    CU_add_test(s, "the wire walk: NULs only, depth", test_pbwire);
    CU_add_test(s, "system names", test_system_names);
    CU_add_test(s, "time values saturate", test_time);
    CU_add_test(s, "every MessagingService method screens", test_table_screens);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int failed = CU_get_number_of_failures() != 0 || CU_get_error() != 0;
    CU_cleanup_registry();
    return failed;
}
