/* Unit tests for the request arenas (rpc/px_rpc_arena.c): a request
 * decoded into an arena equals protobuf-c's own decoding (packed back to
 * the same bytes), including one larger than the first chunk and with
 * many small fields; bytes that do not decode give NULL and leak nothing
 * (the ASan build checks leaks). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "apache/rocketmq/v2/service.pb-c.h"
#include "px_rpc.h"

typedef Apache__Rocketmq__V2__SendMessageRequest send_req_t;

/* A SendMessageRequest of n messages with `props` user properties each and
 * `body` body bytes, packed; *len set. */
static uint8_t *pack_send(size_t n, size_t props, size_t body, size_t *len)
{
    send_req_t req = APACHE__ROCKETMQ__V2__SEND_MESSAGE_REQUEST__INIT;
    Apache__Rocketmq__V2__Message *msgs = calloc(n, sizeof(*msgs));
    Apache__Rocketmq__V2__Message **mp = calloc(n, sizeof(*mp));
    Apache__Rocketmq__V2__SystemProperties *sps = calloc(n, sizeof(*sps));
    Apache__Rocketmq__V2__Resource topic = APACHE__ROCKETMQ__V2__RESOURCE__INIT;
    Google__Protobuf__Timestamp born = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    Apache__Rocketmq__V2__Message__UserPropertiesEntry *pe =
        calloc(props ? props : 1, sizeof(*pe));
    Apache__Rocketmq__V2__Message__UserPropertiesEntry **pp =
        calloc(props ? props : 1, sizeof(*pp));
    char (*ids)[32] = calloc(n, sizeof(*ids));
    char *keys[2] = {"k1", "key-two"};
    uint8_t *bodybuf = malloc(body ? body : 1), *out;

    topic.name = "ArenaTopic";
    born.seconds = 1700000000;
    born.nanos = 5;
    for (size_t i = 0; i < body; i++)
        bodybuf[i] = (uint8_t)(i * 7);
    for (size_t k = 0; k < props; k++) {
        apache__rocketmq__v2__message__user_properties_entry__init(&pe[k]);
        pe[k].key = "prop";
        pe[k].value = "some value";
        pp[k] = &pe[k];
    }
    for (size_t i = 0; i < n; i++) {
        apache__rocketmq__v2__message__init(&msgs[i]);
        apache__rocketmq__v2__system_properties__init(&sps[i]);
        snprintf(ids[i], sizeof(ids[i]), "ID%06zu", i);
        sps[i].message_id = ids[i];
        sps[i].tag_present_case =
            APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__TAG_PRESENT_TAG;
        sps[i].tag = "TagA";
        sps[i].n_keys = 2;
        sps[i].keys = keys;
        sps[i].born_timestamp = &born;
        sps[i].born_host = "10.0.0.1";
        msgs[i].topic = &topic;
        msgs[i].system_properties = &sps[i];
        msgs[i].n_user_properties = props;
        msgs[i].user_properties = pp;
        msgs[i].body.len = body;
        msgs[i].body.data = bodybuf;
        mp[i] = &msgs[i];
    }
    req.n_messages = n;
    req.messages = mp;
    *len = protobuf_c_message_get_packed_size(&req.base);
    out = malloc(*len ? *len : 1);
    protobuf_c_message_pack(&req.base, out);
    free(msgs);
    free(mp);
    free(sps);
    free(pe);
    free(pp);
    free(ids);
    free(bodybuf);
    return out;
}

/* Decodes `wire` into an arena, packs it back and compares. */
static void roundtrip(const uint8_t *wire, size_t len)
{
    ProtobufCMessage *m = px_request_unpack(
        &apache__rocketmq__v2__send_message_request__descriptor, wire, len);
    uint8_t *again;

    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_EQUAL(protobuf_c_message_get_packed_size(m), len);
    again = malloc(len ? len : 1);
    CU_ASSERT_EQUAL(protobuf_c_message_pack(m, again), len);
    CU_ASSERT_EQUAL(memcmp(again, wire, len), 0);
    free(again);
    px_request_free(m);
}

static void test_roundtrip_small(void)
{
    size_t len;
    uint8_t *w = pack_send(1, 0, 16, &len);
    roundtrip(w, len);
    free(w);
}

static void test_roundtrip_batch(void)
{
    size_t len;
    uint8_t *w = pack_send(32, 3, 1024, &len);
    send_req_t *r;

    roundtrip(w, len);
    r = (send_req_t *)px_request_unpack(
        &apache__rocketmq__v2__send_message_request__descriptor, w, len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(r->n_messages, 32);
    CU_ASSERT_STRING_EQUAL(r->messages[31]->system_properties->message_id,
                           "ID000031");
    CU_ASSERT_STRING_EQUAL(r->messages[7]->system_properties->keys[1], "key-two");
    CU_ASSERT_EQUAL(r->messages[5]->system_properties->born_timestamp->nanos, 5);
    CU_ASSERT_EQUAL(r->messages[3]->body.len, 1024);
    CU_ASSERT_EQUAL(r->messages[3]->body.data[100], (uint8_t)700);
    CU_ASSERT_EQUAL(((uintptr_t)r->messages[9] % _Alignof(max_align_t)), 0);
    px_request_free(&r->base);
    free(w);
}

/* Many small fields: the decoded form outgrows the first chunk (sized from
 * the wire length) several times over. */
static void test_roundtrip_many_fields(void)
{
    size_t len;
    uint8_t *w = pack_send(64, 120, 1, &len);
    roundtrip(w, len);
    free(w);
}

static void test_malformed(void)
{
    size_t len;
    uint8_t *w = pack_send(4, 2, 100, &len);

    /* cut inside the last message */
    CU_ASSERT_PTR_NULL(px_request_unpack(
        &apache__rocketmq__v2__send_message_request__descriptor, w, len - 10));
    /* a length prefix past the end */
    w[1] = 0xff;
    CU_ASSERT_PTR_NULL(px_request_unpack(
        &apache__rocketmq__v2__send_message_request__descriptor, w, len));
    free(w);
    px_request_free(NULL);
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("rpc_arena", NULL, NULL);
    CU_add_test(s, "decoded request packs back to the same bytes",
                test_roundtrip_small);
    CU_add_test(s, "batch of 32 with bodies and properties", test_roundtrip_batch);
    CU_add_test(s, "many small fields outgrow the first chunk",
                test_roundtrip_many_fields);
    CU_add_test(s, "malformed bytes give NULL", test_malformed);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed == 0 ? 0 : 1;
}
