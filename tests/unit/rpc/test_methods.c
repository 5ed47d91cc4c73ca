/* Unit tests for the px_rpc method table and the RocketMQ service table
 * built on it: registration rules, lookup by counted path, ordering, and
 * that every MessagingService RPC of the protocol is registered with the
 * right streaming kind. */
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "apache/rocketmq/v2/service.pb-c.h"
#include "px_rpc.h"
#include "px_service.h"

static void noop_msg(px_call_t *c, const uint8_t *d, size_t n)
{
    (void)c;
    (void)d;
    (void)n;
}

#define M(p) {.path = p, .kind = PX_RPC_UNARY, .on_message = noop_msg}

static void test_add_find(void)
{
    static const px_method_t a = M("/pkg.Svc/B"), b = M("/pkg.Svc/A"),
                             c = M("/other.Svc/Z");
    px_method_table_t t;

    px_method_table_init(&t);
    CU_ASSERT_EQUAL(px_method_table_add(&t, &a), GT_OK);
    CU_ASSERT_EQUAL(px_method_table_add(&t, &b), GT_OK);
    CU_ASSERT_EQUAL(px_method_table_add(&t, &c), GT_OK);
    CU_ASSERT_EQUAL(t.count, 3);
    /* kept sorted */
    CU_ASSERT_STRING_EQUAL(t.methods[0]->path, "/other.Svc/Z");
    CU_ASSERT_STRING_EQUAL(t.methods[1]->path, "/pkg.Svc/A");
    CU_ASSERT_STRING_EQUAL(t.methods[2]->path, "/pkg.Svc/B");
    CU_ASSERT_PTR_EQUAL(px_method_table_find(&t, "/pkg.Svc/A", 10), &b);
    CU_ASSERT_PTR_EQUAL(px_method_table_find(&t, "/pkg.Svc/B", 10), &a);
    CU_ASSERT_PTR_EQUAL(px_method_table_find(&t, "/other.Svc/Z", 12), &c);
    px_method_table_free(&t);
}

static void test_counted_lookup(void)
{
    static const px_method_t a = M("/pkg.Svc/Send");
    static const px_method_t b = M("/pkg.Svc/SendMessage");
    px_method_table_t t;
    const char buf[] = "/pkg.Svc/SendMessageXYZ";

    px_method_table_init(&t);
    CU_ASSERT_EQUAL(px_method_table_add(&t, &a), GT_OK);
    CU_ASSERT_EQUAL(px_method_table_add(&t, &b), GT_OK);
    /* Only the first `len` bytes count: prefixes and longer names differ. */
    CU_ASSERT_PTR_EQUAL(px_method_table_find(&t, buf, 13), &a);
    CU_ASSERT_PTR_EQUAL(px_method_table_find(&t, buf, 20), &b);
    CU_ASSERT_PTR_NULL(px_method_table_find(&t, buf, 12));
    CU_ASSERT_PTR_NULL(px_method_table_find(&t, buf, 21));
    CU_ASSERT_PTR_NULL(px_method_table_find(&t, buf, sizeof(buf) - 1));
    CU_ASSERT_PTR_NULL(px_method_table_find(&t, "", 0));
    px_method_table_free(&t);
}

static void test_rejects(void)
{
    static const px_method_t ok = M("/a.B/C"), dup = M("/a.B/C"),
                             noslash = M("a.B/C"), nomethod = M("/a.B/"),
                             nosvc = M("//C"), extra = M("/a/B/C");
    static const px_method_t nohandler = {.path = "/a.B/D"};
    px_method_table_t t;

    px_method_table_init(&t);
    CU_ASSERT_EQUAL(px_method_table_add(&t, &ok), GT_OK);
    CU_ASSERT_EQUAL(px_method_table_add(&t, &dup), GT_EEXIST);
    CU_ASSERT_EQUAL(px_method_table_add(&t, &noslash), GT_EINVAL);
    CU_ASSERT_EQUAL(px_method_table_add(&t, &nomethod), GT_EINVAL);
    CU_ASSERT_EQUAL(px_method_table_add(&t, &nosvc), GT_EINVAL);
    CU_ASSERT_EQUAL(px_method_table_add(&t, &extra), GT_EINVAL);
    CU_ASSERT_EQUAL(px_method_table_add(&t, &nohandler), GT_EINVAL);
    CU_ASSERT_EQUAL(px_method_table_add(&t, NULL), GT_EINVAL);
    CU_ASSERT_EQUAL(t.count, 1);
    px_method_table_free(&t);
}

static void noop_req(px_call_t *c, ProtobufCMessage *req)
{
    (void)c;
    (void)req;
}

/* Decoded-request entries need a request descriptor and exclude on_message. */
static void test_decoded_entries(void)
{
    px_method_t ok = M("/a.B/Dec"), nodesc = M("/a.B/NoDesc"),
                both = M("/a.B/Both");
    px_method_table_t t;

    ok.on_message = NULL;
    ok.on_request = noop_req;
    ok.req_desc = &apache__rocketmq__v2__heartbeat_request__descriptor;
    nodesc.on_message = NULL;
    nodesc.on_request = noop_req;
    both.on_request = noop_req;
    both.req_desc = ok.req_desc;
    px_method_table_init(&t);
    CU_ASSERT_EQUAL(px_method_table_add(&t, &ok), GT_OK);
    CU_ASSERT_EQUAL(px_method_table_add(&t, &nodesc), GT_EINVAL);
    CU_ASSERT_EQUAL(px_method_table_add(&t, &both), GT_EINVAL);
    CU_ASSERT_EQUAL(t.count, 1);
    px_method_table_free(&t);
}

static void test_growth(void)
{
    enum { N = 100 };
    static px_method_t ms[N];
    static char names[N][32];
    px_method_table_t t;

    px_method_table_init(&t);
    for (int i = N - 1; i >= 0; i--) {
        snprintf(names[i], sizeof(names[i]), "/svc.S/M%03d", i);
        ms[i] = (px_method_t)M(names[i]);
        CU_ASSERT_EQUAL_FATAL(px_method_table_add(&t, &ms[i]), GT_OK);
    }
    CU_ASSERT_EQUAL(t.count, N);
    for (int i = 0; i < N; i++)
        CU_ASSERT_PTR_EQUAL(px_method_table_find(&t, names[i], strlen(names[i])),
                            &ms[i]);
    px_method_table_free(&t);
}

/* The RocketMQ v2 MessagingService as the SDKs call it. */
static const struct {
    const char *name;
    px_rpc_kind_t kind;
} rocketmq_rpcs[] = {
    {"QueryRoute", PX_RPC_UNARY},
    {"Heartbeat", PX_RPC_UNARY},
    {"SendMessage", PX_RPC_UNARY},
    {"QueryAssignment", PX_RPC_UNARY},
    {"ReceiveMessage", PX_RPC_SERVER_STREAM},
    {"AckMessage", PX_RPC_UNARY},
    {"ForwardMessageToDeadLetterQueue", PX_RPC_UNARY},
    {"PullMessage", PX_RPC_SERVER_STREAM},
    {"UpdateOffset", PX_RPC_UNARY},
    {"GetOffset", PX_RPC_UNARY},
    {"QueryOffset", PX_RPC_UNARY},
    {"EndTransaction", PX_RPC_UNARY},
    {"Telemetry", PX_RPC_BIDI_STREAM},
    {"NotifyClientTermination", PX_RPC_UNARY},
    {"ChangeInvisibleDuration", PX_RPC_UNARY},
    {"RecallMessage", PX_RPC_UNARY},
    {"SyncLiteSubscription", PX_RPC_UNARY},
};

static void test_service_table(void)
{
    px_method_table_t t;
    char path[128];
    size_t n = sizeof(rocketmq_rpcs) / sizeof(rocketmq_rpcs[0]);

    px_method_table_init(&t);
    CU_ASSERT_EQUAL_FATAL(px_service_register(&t), GT_OK);
    CU_ASSERT_EQUAL(px_service_messaging_count(), n);
    for (size_t i = 0; i < n; i++) {
        const px_method_t *m;
        snprintf(path, sizeof(path), "/apache.rocketmq.v2.MessagingService/%s",
                 rocketmq_rpcs[i].name);
        m = px_method_table_find(&t, path, strlen(path));
        CU_ASSERT_PTR_NOT_NULL(m);
        if (m != NULL)
            CU_ASSERT_EQUAL(m->kind, rocketmq_rpcs[i].kind);
    }
    CU_ASSERT_PTR_NOT_NULL(px_method_table_find(
        &t, "/apache.rocketmq.v2.Admin/ChangeLogLevel", 40));
    CU_ASSERT_EQUAL(t.count, n + 1);
    /* Registering twice is refused, not silently doubled. */
    CU_ASSERT_EQUAL(px_service_register(&t), GT_EEXIST);
    px_method_table_free(&t);
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("rpc_methods", NULL, NULL);
    CU_add_test(s, "add and find", test_add_find);
    CU_add_test(s, "counted lookup", test_counted_lookup);
    CU_add_test(s, "rejects bad entries", test_rejects);
    CU_add_test(s, "decoded-request entries", test_decoded_entries);
    CU_add_test(s, "growth past initial capacity", test_growth);
    CU_add_test(s, "MessagingService table", test_service_table);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int failed = CU_get_number_of_failures() != 0 || CU_get_error() != 0;
    CU_cleanup_registry();
    return failed;
}
