/* Unit tests for the store protocol's contract with store/st.h: the enums
 * the protocol copies keep their numbers (checked at compile time), the
 * Store service has one RPC per st_ops_t operation with the right streaming
 * kind, and a request with every kind of field survives pack/unpack. */
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "gantry/store/v1/store.pb-c.h"
#include "gt_err.h"
#include "st.h"

#define SAME(a, b) _Static_assert((int)(a) == (int)(b), #a " != " #b)
SAME(GANTRY__STORE__V1__ERROR_CODE__OK, GT_OK);
SAME(GANTRY__STORE__V1__ERROR_CODE__AGAIN, GT_AGAIN);
SAME(GANTRY__STORE__V1__ERROR_CODE__EINVAL, GT_EINVAL);
SAME(GANTRY__STORE__V1__ERROR_CODE__ENOMEM, GT_ENOMEM);
SAME(GANTRY__STORE__V1__ERROR_CODE__EIO, GT_EIO);
SAME(GANTRY__STORE__V1__ERROR_CODE__ENOSPC, GT_ENOSPC);
SAME(GANTRY__STORE__V1__ERROR_CODE__ENOTFOUND, GT_ENOTFOUND);
SAME(GANTRY__STORE__V1__ERROR_CODE__EEXIST, GT_EEXIST);
SAME(GANTRY__STORE__V1__ERROR_CODE__ERANGE, GT_ERANGE);
SAME(GANTRY__STORE__V1__ERROR_CODE__ECORRUPT, GT_ECORRUPT);
SAME(GANTRY__STORE__V1__ERROR_CODE__ESHUTDOWN, GT_ESHUTDOWN);
SAME(GANTRY__STORE__V1__ERROR_CODE__ETIMEDOUT, GT_ETIMEDOUT);
SAME(GANTRY__STORE__V1__ERROR_CODE__EBUSY, GT_EBUSY);
SAME(GANTRY__STORE__V1__ERROR_CODE__EUNSUPPORTED, GT_EUNSUPPORTED);
SAME(GANTRY__STORE__V1__ERROR_CODE__EUNSUPPORTED + 1, GT_ERR_MAX_);
SAME(GANTRY__STORE__V1__TOPIC_TYPE__TOPIC_NORMAL, ST_TOPIC_NORMAL);
SAME(GANTRY__STORE__V1__TOPIC_TYPE__TOPIC_FIFO, ST_TOPIC_FIFO);
SAME(GANTRY__STORE__V1__TOPIC_TYPE__TOPIC_DELAY, ST_TOPIC_DELAY);
SAME(GANTRY__STORE__V1__TOPIC_TYPE__TOPIC_TRANSACTION, ST_TOPIC_TRANSACTION);
SAME(GANTRY__STORE__V1__TOPIC_TYPE__TOPIC_MIXED, ST_TOPIC_MIXED);
SAME(GANTRY__STORE__V1__CONSUME_FROM__CONSUME_FROM_FIRST, ST_CONSUME_FROM_FIRST);
SAME(GANTRY__STORE__V1__CONSUME_FROM__CONSUME_FROM_LAST, ST_CONSUME_FROM_LAST);
SAME(GANTRY__STORE__V1__FILTER_KIND__FILTER_TAG, ST_FILTER_TAG);
SAME(GANTRY__STORE__V1__FILTER_KIND__FILTER_SQL92, ST_FILTER_SQL92);
SAME(GANTRY__STORE__V1__OFFSET_KIND__OFFSET_BEGIN, ST_OFFSET_BEGIN);
SAME(GANTRY__STORE__V1__OFFSET_KIND__OFFSET_END, ST_OFFSET_END);
SAME(GANTRY__STORE__V1__OFFSET_KIND__OFFSET_TIME, ST_OFFSET_TIME);
SAME(GANTRY__STORE__V1__META_KIND__META_TOPIC, ST_META_TOPIC);
SAME(GANTRY__STORE__V1__META_KIND__META_GROUP, ST_META_GROUP);

/* st_ops_t operation -> RPC (close has none; GetInfo is the node's own). */
static const struct {
    const char *rpc;
    bool server_stream;
} store_rpcs[] = {
    {"GetInfo", false},     {"PutTopic", false},     {"DeleteTopic", false},
    {"GetTopics", false},   {"PutGroup", false},     {"DeleteGroup", false},
    {"GetGroups", false},   {"Append", false},       {"AppendMulti", false},
    {"Pop", false},         {"PopCancel", false},    {"Ack", false},
    {"AckBatch", false},    {"ChangeInvisible", false},
    {"Release", false},     {"Purge", false},        {"Requeue", false},
    {"Pull", false},        {"GetOffset", false},    {"UpdateOffset", false},
    {"QueryOffset", false}, {"LookupId", false},     {"LookupKey", false},
    {"Stats", false},       {"TxEnd", false},        {"TxPending", false},
    {"TxChecked", false},   {"Recall", false},       {"MetaWatch", true},
    {"MetaPut", false},     {"MetaDel", false},      {"MetaList", false},
};

static void test_service(void)
{
    const ProtobufCServiceDescriptor *d = &gantry__store__v1__store__descriptor;
    size_t n = sizeof(store_rpcs) / sizeof(store_rpcs[0]);

    CU_ASSERT_STRING_EQUAL(d->name, "gantry.store.v1.Store");
    /* st_ops_t has 32 operations besides close, one RPC each, + GetInfo */
    CU_ASSERT_EQUAL(n, 32);
    /* + ReplicaFetch and ReplicaStream (replication between store nodes,
     * no st_ops_t op) + AppendMany (several appends in one call) */
    CU_ASSERT_EQUAL(d->n_methods, n + 3);
    CU_ASSERT_PTR_NOT_NULL(
        protobuf_c_service_descriptor_get_method_by_name(d, "ReplicaFetch"));
    CU_ASSERT_PTR_NOT_NULL(
        protobuf_c_service_descriptor_get_method_by_name(d, "ReplicaStream"));
    CU_ASSERT_PTR_NOT_NULL(
        protobuf_c_service_descriptor_get_method_by_name(d, "AppendMany"));
    for (size_t i = 0; i < n; i++) {
        const ProtobufCMethodDescriptor *m =
            protobuf_c_service_descriptor_get_method_by_name(d,
                                                             store_rpcs[i].rpc);
        CU_ASSERT_PTR_NOT_NULL(m);
    }
}

static void test_roundtrip(void)
{
    Gantry__Store__V1__AppendRequest req =
        GANTRY__STORE__V1__APPEND_REQUEST__INIT;
    Gantry__Store__V1__Message m = GANTRY__STORE__V1__MESSAGE__INIT;
    Gantry__Store__V1__Property p = GANTRY__STORE__V1__PROPERTY__INIT;
    Gantry__Store__V1__Message *mp = &m;
    Gantry__Store__V1__Property *pp = &p;
    char *keys[] = {"k1", "k2"};
    static const uint8_t body[] = {0, 1, 2, 0xff};
    Gantry__Store__V1__AppendRequest *out;
    uint8_t *buf;
    size_t len;

    p.key = ST_PROP_TRACE;
    p.value = "trace-1";
    m.tag = "tagA";
    m.n_keys = 2;
    m.keys = keys;
    m.msg_id = "01ABC";
    m.n_props = 1;
    m.props = &pp;
    m.born_ts_ms = 1700000000123;
    m.delivery_ts_ms = -1; /* signed fields keep their sign */
    m.body.data = (uint8_t *)body;
    m.body.len = sizeof(body);
    m.queue_id = ST_QUEUE_ANY;
    req.topic = "T";
    req.n_messages = 1;
    req.messages = &mp;
    req.idempotency_key = "01ABC";

    len = gantry__store__v1__append_request__get_packed_size(&req);
    buf = malloc(len);
    CU_ASSERT_FATAL(buf != NULL);
    CU_ASSERT_EQUAL(gantry__store__v1__append_request__pack(&req, buf), len);
    out = gantry__store__v1__append_request__unpack(NULL, len, buf);
    CU_ASSERT_FATAL(out != NULL);
    CU_ASSERT_STRING_EQUAL(out->topic, "T");
    CU_ASSERT_STRING_EQUAL(out->idempotency_key, "01ABC");
    CU_ASSERT_EQUAL_FATAL(out->n_messages, 1);
    CU_ASSERT_STRING_EQUAL(out->messages[0]->tag, "tagA");
    CU_ASSERT_EQUAL(out->messages[0]->n_keys, 2);
    CU_ASSERT_STRING_EQUAL(out->messages[0]->keys[1], "k2");
    CU_ASSERT_STRING_EQUAL(out->messages[0]->props[0]->key, ST_PROP_TRACE);
    CU_ASSERT_EQUAL(out->messages[0]->born_ts_ms, 1700000000123);
    CU_ASSERT_EQUAL(out->messages[0]->delivery_ts_ms, -1);
    CU_ASSERT_EQUAL(out->messages[0]->queue_id, ST_QUEUE_ANY);
    CU_ASSERT_EQUAL(out->messages[0]->body.len, sizeof(body));
    CU_ASSERT(memcmp(out->messages[0]->body.data, body, sizeof(body)) == 0);
    gantry__store__v1__append_request__free_unpacked(out, NULL);
    /* A truncated request does not decode (no crash, no partial result). */
    CU_ASSERT_PTR_NULL(
        gantry__store__v1__append_request__unpack(NULL, len - 1, buf));
    free(buf);
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("store_proto", NULL, NULL);
    CU_add_test(s, "one RPC per st_ops_t operation", test_service);
    CU_add_test(s, "pack/unpack round trip", test_roundtrip);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int failed = CU_get_number_of_failures() != 0 || CU_get_error() != 0;
    CU_cleanup_registry();
    return failed;
}
