/* Unit tests for RocketMQ 5 authentication and ACLs (px_auth.h): the
 * HMAC-SHA1 test vector, the authorization header parser, x-mq-date-time,
 * logins (right key, wrong secret, unknown key, clock skew) and the ACL
 * decision (literal / prefix / any resources, Deny on a tie, source
 * addresses, admin users). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "cfg.h"
#include "gt_hmac.h"
#include "px_auth.h"
#include "px_svc_int.h"

#define DT "20231227T194619Z"
#define DT_MS 1703706379000LL
/* HMAC-SHA1(key "12345678", "20231227T194619Z"), from the algorithm: also
 * `printf %s 20231227T194619Z | openssl dgst -sha1 -hmac 12345678`. */
#define VECTOR "B78A646B41B898E9A4B565927A888B247EA32E86"

static char why[512];

static void test_hmac_vector(void)
{
    uint8_t mac[GT_SHA1_LEN], back[GT_SHA1_LEN];
    char hex[2 * GT_SHA1_LEN + 1];

    CU_ASSERT_EQUAL_FATAL(gt_hmac_sha1("12345678", 8, DT, 16, mac), GT_OK);
    gt_hex_encode(mac, sizeof(mac), hex, sizeof(hex));
    CU_ASSERT_STRING_EQUAL(hex, VECTOR);
    CU_ASSERT_EQUAL(strncmp(hex, "B78A", 4), 0);
    CU_ASSERT_STRING_EQUAL(hex + 36, "2E86");
    CU_ASSERT_EQUAL(gt_hex_decode("b78a646b41b898e9a4b565927a888b247ea32e86", 40, back,
                                  sizeof(back)), GT_SHA1_LEN);
    CU_ASSERT_TRUE(gt_hmac_equal(mac, back, GT_SHA1_LEN));
    back[19] ^= 1;
    CU_ASSERT_FALSE(gt_hmac_equal(mac, back, GT_SHA1_LEN));
    CU_ASSERT_EQUAL(gt_hex_decode("abc", 3, back, sizeof(back)), -1);
    CU_ASSERT_EQUAL(gt_hex_decode("zz", 2, back, sizeof(back)), -1);
    CU_ASSERT_EQUAL(gt_hex_decode("0011", 4, back, 1), -1);
    /* An empty key is a key (no crash, a digest). */
    CU_ASSERT_EQUAL(gt_hmac_sha1("", 0, DT, 16, mac), GT_OK);
}

static gt_err_t parse(const char *s, px_auth_hdr_t *h, const char **bad)
{
    return px_auth_header_parse(s, strlen(s), h, bad);
}

static void test_header(void)
{
    px_auth_hdr_t h;
    const char *bad = NULL;
    uint8_t want[GT_SHA1_LEN];

    gt_hex_decode(VECTOR, 40, want, sizeof(want));
    /* The official SDKs' form. */
    CU_ASSERT_EQUAL_FATAL(parse("MQv2-HMAC-SHA1 Credential=RocketMQ, "
                                "SignedHeaders=x-mq-date-time, Signature=" VECTOR, &h, &bad),
                          GT_OK);
    CU_ASSERT_EQUAL(h.ak_len, 8);
    CU_ASSERT_EQUAL(memcmp(h.ak, "RocketMQ", 8), 0);
    CU_ASSERT_EQUAL(memcmp(h.sig, want, GT_SHA1_LEN), 0);
    /* Lower-case hex, a scoped credential, no spaces, items reordered,
     * unknown items. */
    CU_ASSERT_EQUAL_FATAL(parse("MQv2-HMAC-SHA1 Signature=b78a646b41b898e9a4b565927a888b247ea"
                                "32e86,Credential=ak/cn-north/rmq,Extra=1", &h, &bad),
                          GT_OK);
    CU_ASSERT_EQUAL(h.ak_len, 2);
    CU_ASSERT_EQUAL(memcmp(h.ak, "ak", 2), 0);
    CU_ASSERT_EQUAL(memcmp(h.sig, want, GT_SHA1_LEN), 0);
    CU_ASSERT_EQUAL(parse("MQv2-HMAC-SHA1  Credential=a ,\tSignature=" VECTOR "  ", &h, &bad),
                    GT_OK);
    /* A value may hold '=' (only the first one splits). */
    CU_ASSERT_EQUAL(parse("MQv2-HMAC-SHA1 Credential=a=b, Signature=" VECTOR, &h, &bad), GT_OK);
    CU_ASSERT_EQUAL(h.ak_len, 3);

    static const struct {
        const char *in, *why;
    } badv[] = {
        {"", "no credentials after the scheme"},
        {"MQv2-HMAC-SHA1", "no credentials after the scheme"},
        {"MQv2-HMAC-SHA256 Credential=a, Signature=" VECTOR, "the scheme is not"},
        {"Bearer xyz", "the scheme is not"},
        {"MQv2-HMAC-SHA1 Credential=a, Signature", "not KEY=VALUE"},
        {"MQv2-HMAC-SHA1 Credential=a,, Signature=" VECTOR, "not KEY=VALUE"},
        {"MQv2-HMAC-SHA1 Signature=" VECTOR, "no Credential"},
        {"MQv2-HMAC-SHA1 Credential=, Signature=" VECTOR, "no Credential"},
        {"MQv2-HMAC-SHA1 Credential=/x, Signature=" VECTOR, "no Credential"},
        {"MQv2-HMAC-SHA1 Credential=a", "no Signature"},
        {"MQv2-HMAC-SHA1 Credential=a, Signature=B78A", "not 40 hex digits"},
        {"MQv2-HMAC-SHA1 Credential=a, Signature=" VECTOR "00", "not 40 hex digits"},
        {"MQv2-HMAC-SHA1 Credential=a, Signature=G78A646B41B898E9A4B565927A888B247EA32E86",
         "not 40 hex digits"},
    };
    for (size_t i = 0; i < sizeof(badv) / sizeof(badv[0]); i++) {
        bad = "";
        CU_ASSERT_EQUAL(parse(badv[i].in, &h, &bad), GT_EINVAL);
        if (strstr(bad, badv[i].why) == NULL)
            fprintf(stderr, "\n  %s: got \"%s\", want \"%s\"\n", badv[i].in, bad, badv[i].why);
        CU_ASSERT_PTR_NOT_NULL(strstr(bad, badv[i].why));
    }
    /* Not NUL-terminated: the length ends it. */
    CU_ASSERT_EQUAL(px_auth_header_parse("MQv2-HMAC-SHA1 Credential=a, Signature=" VECTOR "XX",
                                         39 + 40, &h, &bad), GT_OK);
}

static void test_datetime(void)
{
    int64_t ms = 0;

    CU_ASSERT_EQUAL(px_auth_datetime_parse(DT, 16, &ms), GT_OK);
    CU_ASSERT_EQUAL(ms, DT_MS);
    CU_ASSERT_EQUAL(px_auth_datetime_parse("19700101T000000Z", 16, &ms), GT_OK);
    CU_ASSERT_EQUAL(ms, 0);
    CU_ASSERT_EQUAL(px_auth_datetime_parse("20240229T235959Z", 16, &ms), GT_OK);
    CU_ASSERT_EQUAL(px_auth_datetime_parse("20230229T000000Z", 16, &ms), GT_EINVAL);
    CU_ASSERT_EQUAL(px_auth_datetime_parse("20231327T000000Z", 16, &ms), GT_EINVAL);
    CU_ASSERT_EQUAL(px_auth_datetime_parse("20231227T246019Z", 16, &ms), GT_EINVAL);
    CU_ASSERT_EQUAL(px_auth_datetime_parse("20231227 194619Z", 16, &ms), GT_EINVAL);
    CU_ASSERT_EQUAL(px_auth_datetime_parse("20231227T194619", 15, &ms), GT_EINVAL);
    CU_ASSERT_EQUAL(px_auth_datetime_parse("2023-12-27T19:46", 16, &ms), GT_EINVAL);
    CU_ASSERT_EQUAL(px_auth_datetime_parse("+0231227T194619Z", 16, &ms), GT_EINVAL);
}

static px_auth_t *make(const char *yaml)
{
    cfg_t c;
    px_auth_t *a = NULL;
    char err[256];

    cfg_init(&c);
    if (cfg_load_string(&c, "t.yaml", yaml, strlen(yaml), err, sizeof(err)) != GT_OK)
        fprintf(stderr, "\n%s\n", err);
    CU_ASSERT_EQUAL(px_auth_new(&c.auth, &a, err, sizeof(err)), GT_OK);
    cfg_free(&c); /* the auth keeps its own copies */
    return a;
}

static const px_auth_user_t *login(const px_auth_t *a, const char *hdr, const char *dt,
                                   int64_t now, bool skew)
{
    why[0] = '\0';
    return px_auth_login(a, hdr, dt, now, skew, why, sizeof(why));
}

#define HDR(ak, sig) "MQv2-HMAC-SHA1 Credential=" ak ", SignedHeaders=x-mq-date-time, " \
                     "Signature=" sig

static void test_login(void)
{
    px_auth_t *a = make("auth:\n  max_clock_skew_s: 60\n  users:\n"
                        "    - {access_key: RocketMQ, secret_key: \"12345678\"}\n"
                        "    - {access_key: other, secret_key: \"87654321\"}\n");
    const px_auth_user_t *u;

    u = login(a, HDR("RocketMQ", VECTOR), DT, DT_MS, true);
    CU_ASSERT_PTR_NOT_NULL_FATAL(u);
    CU_ASSERT_STRING_EQUAL(px_auth_user_name(u), "RocketMQ");
    CU_ASSERT_FALSE(px_auth_user_admin(u));
    /* Within the skew, either side. */
    CU_ASSERT_PTR_NOT_NULL(login(a, HDR("RocketMQ", VECTOR), DT, DT_MS + 60000, true));
    CU_ASSERT_PTR_NOT_NULL(login(a, HDR("RocketMQ", VECTOR), DT, DT_MS - 60000, true));
    /* Skewed. */
    CU_ASSERT_PTR_NULL(login(a, HDR("RocketMQ", VECTOR), DT, DT_MS + 61000, true));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "more than 60 s away from the server's clock"));
    CU_ASSERT_PTR_NULL(login(a, HDR("RocketMQ", VECTOR), DT, DT_MS - 61000, true));
    /* A stream's later message: the date is not checked again. */
    CU_ASSERT_PTR_NOT_NULL(login(a, HDR("RocketMQ", VECTOR), DT, DT_MS + 86400000, false));
    /* Wrong secret: another user's key signs the date differently. */
    CU_ASSERT_PTR_NULL(login(a, HDR("other", VECTOR), DT, DT_MS, true));
    CU_ASSERT_STRING_EQUAL(why, "check signature failed for user \"other\"");
    CU_ASSERT_PTR_NULL(strstr(why, "87654321"));
    /* The signature is over the date: another date fails. */
    CU_ASSERT_PTR_NULL(login(a, HDR("RocketMQ", VECTOR), "20231227T194620Z", DT_MS, true));
    /* Unknown key. */
    CU_ASSERT_PTR_NULL(login(a, HDR("nobody", VECTOR), DT, DT_MS, true));
    CU_ASSERT_STRING_EQUAL(why, "user \"nobody\" is not found");
    /* Missing or malformed metadata. */
    CU_ASSERT_PTR_NULL(login(a, NULL, DT, DT_MS, true));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "authorization metadata is required"));
    CU_ASSERT_PTR_NULL(login(a, HDR("RocketMQ", VECTOR), NULL, DT_MS, true));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "x-mq-date-time metadata is required"));
    CU_ASSERT_PTR_NULL(login(a, "MQv2-HMAC-SHA1 Credential=RocketMQ", DT, DT_MS, true));
    CU_ASSERT_STRING_EQUAL(why, "malformed authorization header: no Signature");
    /* A signed date that is not one: refused when checked. */
    {
        uint8_t mac[GT_SHA1_LEN];
        char hex[41], hdr[200];
        gt_hmac_sha1("12345678", 8, "yesterday", 9, mac);
        gt_hex_encode(mac, sizeof(mac), hex, sizeof(hex));
        snprintf(hdr, sizeof(hdr), HDR("RocketMQ", "%s"), hex);
        CU_ASSERT_PTR_NULL(login(a, hdr, "yesterday", DT_MS, true));
        CU_ASSERT_PTR_NOT_NULL(strstr(why, "is not yyyyMMddTHHmmssZ"));
    }
    px_auth_free(a);
}

static const char *acl_yaml =
    "auth:\n  users:\n"
    "    - {access_key: app, secret_key: s}\n"
    "    - {access_key: boss, secret_key: s, admin: true}\n"
    "    - {access_key: far, secret_key: s}\n"
    "  acls:\n"
    "    - {user: app, resource: \"Topic:orders*\", actions: [Pub, Sub]}\n"
    "    - {user: app, resource: \"Topic:orders-audit\", actions: [All], decision: Deny}\n"
    "    - {user: app, resource: \"Topic:orders-eu*\", actions: [Pub], decision: Deny}\n"
    "    - {user: app, resource: \"Topic:orders-eu-1*\", actions: [Pub]}\n"
    "    - {user: app, resource: \"Group:*\", actions: [Sub]}\n"
    "    - {user: app, resource: \"Group:locked\", actions: [Sub], decision: Deny}\n"
    "    - {user: app, resource: \"Topic:tie\", actions: [Pub]}\n"
    "    - {user: app, resource: \"Topic:tie\", actions: [Pub], decision: Deny}\n"
    "    - {user: far, resource: \"*\", actions: [All], source_ips: [\"10.1.0.0/16\", "
    "\"2001:db8::/32\", \"127.0.0.1\", \"::ffff:192.168.0.0/112\"]}\n";

#define P4 "ipv4:10.1.2.3:40000"

static bool allowed(const px_auth_t *a, const px_auth_user_t *u, px_res_type_t t,
                    const char *name, unsigned act, const char *peer)
{
    why[0] = '\0';
    return px_auth_allowed(a, u, t, name, act, peer, why, sizeof(why));
}

static const px_auth_user_t *user(const px_auth_t *a, const char *ak, const char *secret)
{
    uint8_t mac[GT_SHA1_LEN];
    char hex[41], hdr[256];

    gt_hmac_sha1(secret, strlen(secret), DT, 16, mac);
    gt_hex_encode(mac, sizeof(mac), hex, sizeof(hex));
    snprintf(hdr, sizeof(hdr), "MQv2-HMAC-SHA1 Credential=%s, Signature=%s", ak, hex);
    return login(a, hdr, DT, DT_MS, true);
}

static void test_acl(void)
{
    px_auth_t *a = make(acl_yaml);
    const px_auth_user_t *app = user(a, "app", "s"), *boss = user(a, "boss", "s"),
                         *far = user(a, "far", "s");

    CU_ASSERT_PTR_NOT_NULL_FATAL(app);
    CU_ASSERT_PTR_NOT_NULL_FATAL(boss);
    CU_ASSERT_PTR_NOT_NULL_FATAL(far);
    /* Prefix. */
    CU_ASSERT_TRUE(allowed(a, app, PX_RES_TOPIC, "orders", PX_ACT_PUB, P4));
    CU_ASSERT_TRUE(allowed(a, app, PX_RES_TOPIC, "orders-us", PX_ACT_SUB, P4));
    /* One of the actions suffices (QueryRoute: Pub or Sub). */
    CU_ASSERT_TRUE(allowed(a, app, PX_RES_TOPIC, "orders-us", PX_ACT_PUB | PX_ACT_SUB, P4));
    CU_ASSERT_FALSE(allowed(a, app, PX_RES_TOPIC, "orders-us", PX_ACT_DELETE, P4));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "no matched policies"));
    /* No entry: refused. */
    CU_ASSERT_FALSE(allowed(a, app, PX_RES_TOPIC, "payments", PX_ACT_PUB, P4));
    CU_ASSERT_STRING_EQUAL(why, "user \"app\" has no permission to access Topic:payments from "
                                "ipv4:10.1.2.3:40000, no matched policies");
    /* A literal Deny beats the prefix Allow. */
    CU_ASSERT_FALSE(allowed(a, app, PX_RES_TOPIC, "orders-audit", PX_ACT_SUB, P4));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "the decision is deny"));
    /* The longest prefix decides: Deny orders-eu*, Allow orders-eu-1*. */
    CU_ASSERT_FALSE(allowed(a, app, PX_RES_TOPIC, "orders-eu-2", PX_ACT_PUB, P4));
    CU_ASSERT_TRUE(allowed(a, app, PX_RES_TOPIC, "orders-eu-10", PX_ACT_PUB, P4));
    /* The Deny orders-eu* is for Pub only: Sub falls to orders*. */
    CU_ASSERT_TRUE(allowed(a, app, PX_RES_TOPIC, "orders-eu-2", PX_ACT_SUB, P4));
    /* Any name of a type, a literal Deny above it; types do not mix. */
    CU_ASSERT_TRUE(allowed(a, app, PX_RES_GROUP, "g1", PX_ACT_SUB, P4));
    CU_ASSERT_FALSE(allowed(a, app, PX_RES_GROUP, "locked", PX_ACT_SUB, P4));
    CU_ASSERT_FALSE(allowed(a, app, PX_RES_GROUP, "orders", PX_ACT_PUB, P4));
    /* Same resource, Allow and Deny: Deny. */
    CU_ASSERT_FALSE(allowed(a, app, PX_RES_TOPIC, "tie", PX_ACT_PUB, P4));
    /* Admin: everything, without entries. */
    CU_ASSERT_TRUE(px_auth_user_admin(boss));
    CU_ASSERT_TRUE(allowed(a, boss, PX_RES_TOPIC, "payments", PX_ACT_ALL, NULL));
    /* Source addresses. */
    CU_ASSERT_TRUE(allowed(a, far, PX_RES_TOPIC, "t", PX_ACT_PUB, P4));
    CU_ASSERT_TRUE(allowed(a, far, PX_RES_GROUP, "g", PX_ACT_SUB, "ipv4:127.0.0.1:1"));
    CU_ASSERT_FALSE(allowed(a, far, PX_RES_TOPIC, "t", PX_ACT_PUB, "ipv4:10.2.0.1:1"));
    CU_ASSERT_FALSE(allowed(a, far, PX_RES_TOPIC, "t", PX_ACT_PUB, "ipv4:127.0.0.2:1"));
    CU_ASSERT_TRUE(allowed(a, far, PX_RES_TOPIC, "t", PX_ACT_PUB, "ipv6:[2001:db8:1::5]:1"));
    CU_ASSERT_FALSE(allowed(a, far, PX_RES_TOPIC, "t", PX_ACT_PUB, "ipv6:[2001:db9::5]:1"));
    CU_ASSERT_TRUE(allowed(a, far, PX_RES_TOPIC, "t", PX_ACT_PUB, "ipv6:[::ffff:10.1.9.9]:1"));
    /* An IPv4-mapped entry (::ffff:192.168.0.0/112) is that IPv4 block,
     * whether the peer comes as IPv4 or mapped. */
    CU_ASSERT_TRUE(allowed(a, far, PX_RES_TOPIC, "t", PX_ACT_PUB, "ipv4:192.168.7.7:1"));
    CU_ASSERT_TRUE(allowed(a, far, PX_RES_TOPIC, "t", PX_ACT_PUB, "ipv6:[::ffff:192.168.7.7]:1"));
    CU_ASSERT_FALSE(allowed(a, far, PX_RES_TOPIC, "t", PX_ACT_PUB, "ipv4:192.169.7.7:1"));
    CU_ASSERT_FALSE(allowed(a, far, PX_RES_TOPIC, "t", PX_ACT_PUB, "unix:/tmp/s"));
    CU_ASSERT_FALSE(allowed(a, far, PX_RES_TOPIC, "t", PX_ACT_PUB, NULL));
    CU_ASSERT_FALSE(allowed(a, far, PX_RES_TOPIC, "t", PX_ACT_PUB, "ipv4:garbage"));
    px_auth_free(a);
}

/* RocketMQ 5's per-RPC mapping (px_auth_rpc.c): which resources and
 * actions each request needs. */
static Apache__Rocketmq__V2__Resource res(char *name)
{
    Apache__Rocketmq__V2__Resource r = APACHE__ROCKETMQ__V2__RESOURCE__INIT;

    r.name = name;
    return r;
}

static const char *map_yaml =
    "auth:\n  users: [{access_key: m, secret_key: s}]\n  acls:\n"
    "    - {user: m, resource: \"Topic:pub-only\", actions: [Pub]}\n"
    "    - {user: m, resource: \"Topic:sub-only\", actions: [Sub]}\n"
    "    - {user: m, resource: \"Group:g\", actions: [Sub]}\n";

static bool req_ok(const px_auth_t *a, const px_auth_user_t *u, const void *req)
{
    why[0] = '\0';
    return px_auth_request_allowed(a, u, req, P4, why, sizeof(why));
}

static void test_rpc_mapping(void)
{
    px_auth_t *a = make(map_yaml);
    const px_auth_user_t *u = user(a, "m", "s");
    Apache__Rocketmq__V2__Resource pub = res("pub-only"), sub = res("sub-only"),
                                   other = res("other"), g = res("g"), h = res("h"),
                                   dlq = res("%DLQ%g"), retry = res("%RETRY%h"), empty = res("");

    CU_ASSERT_PTR_NOT_NULL_FATAL(u);
    {   /* QueryRoute: Pub or Sub. */
        Apache__Rocketmq__V2__QueryRouteRequest r = APACHE__ROCKETMQ__V2__QUERY_ROUTE_REQUEST__INIT;
        r.topic = &pub;
        CU_ASSERT_TRUE(req_ok(a, u, &r));
        r.topic = &sub;
        CU_ASSERT_TRUE(req_ok(a, u, &r));
        r.topic = &other;
        CU_ASSERT_FALSE(req_ok(a, u, &r));
        CU_ASSERT_PTR_NOT_NULL(strstr(why, "Topic:other"));
        /* No name: the handler refuses it (ILLEGAL_TOPIC). */
        r.topic = &empty;
        CU_ASSERT_TRUE(req_ok(a, u, &r));
        r.topic = NULL;
        CU_ASSERT_TRUE(req_ok(a, u, &r));
    }
    {   /* SendMessage: Pub on every message's topic. */
        Apache__Rocketmq__V2__Message m1 = APACHE__ROCKETMQ__V2__MESSAGE__INIT,
                                      m2 = APACHE__ROCKETMQ__V2__MESSAGE__INIT;
        Apache__Rocketmq__V2__Message *ms[] = {&m1, &m2};
        Apache__Rocketmq__V2__SendMessageRequest r = APACHE__ROCKETMQ__V2__SEND_MESSAGE_REQUEST__INIT;
        m1.topic = &pub;
        m2.topic = &pub;
        r.messages = ms;
        r.n_messages = 2;
        CU_ASSERT_TRUE(req_ok(a, u, &r));
        m2.topic = &sub;
        CU_ASSERT_FALSE(req_ok(a, u, &r));
    }
    {   /* EndTransaction, RecallMessage: Pub. */
        Apache__Rocketmq__V2__EndTransactionRequest e = APACHE__ROCKETMQ__V2__END_TRANSACTION_REQUEST__INIT;
        Apache__Rocketmq__V2__RecallMessageRequest rc = APACHE__ROCKETMQ__V2__RECALL_MESSAGE_REQUEST__INIT;
        e.topic = &pub;
        CU_ASSERT_TRUE(req_ok(a, u, &e));
        e.topic = &sub;
        CU_ASSERT_FALSE(req_ok(a, u, &e));
        rc.topic = &sub;
        CU_ASSERT_FALSE(req_ok(a, u, &rc));
        rc.topic = &pub;
        CU_ASSERT_TRUE(req_ok(a, u, &rc));
    }
    {   /* ReceiveMessage: Sub on the group and the queue's topic; a %DLQ%
         * topic is its group's. */
        Apache__Rocketmq__V2__MessageQueue mq = APACHE__ROCKETMQ__V2__MESSAGE_QUEUE__INIT;
        Apache__Rocketmq__V2__ReceiveMessageRequest r = APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_REQUEST__INIT;
        r.group = &g;
        r.message_queue = &mq;
        mq.topic = &sub;
        CU_ASSERT_TRUE(req_ok(a, u, &r));
        mq.topic = &pub;
        CU_ASSERT_FALSE(req_ok(a, u, &r));
        mq.topic = &dlq;
        CU_ASSERT_TRUE(req_ok(a, u, &r));
        mq.topic = &retry;
        CU_ASSERT_FALSE(req_ok(a, u, &r));
        CU_ASSERT_PTR_NOT_NULL(strstr(why, "Group:h"));
        mq.topic = &sub;
        r.group = &h;
        CU_ASSERT_FALSE(req_ok(a, u, &r));
    }
    {   /* Ack, DLQ, QueryAssignment: Sub on group and topic. */
        Apache__Rocketmq__V2__AckMessageRequest ack = APACHE__ROCKETMQ__V2__ACK_MESSAGE_REQUEST__INIT;
        Apache__Rocketmq__V2__ForwardMessageToDeadLetterQueueRequest d =
            APACHE__ROCKETMQ__V2__FORWARD_MESSAGE_TO_DEAD_LETTER_QUEUE_REQUEST__INIT;
        Apache__Rocketmq__V2__QueryAssignmentRequest qa = APACHE__ROCKETMQ__V2__QUERY_ASSIGNMENT_REQUEST__INIT;
        ack.group = &g;
        ack.topic = &sub;
        CU_ASSERT_TRUE(req_ok(a, u, &ack));
        ack.topic = &pub;
        CU_ASSERT_FALSE(req_ok(a, u, &ack));
        d.group = &h;
        d.topic = &sub;
        CU_ASSERT_FALSE(req_ok(a, u, &d));
        qa.group = &g;
        qa.topic = &sub;
        CU_ASSERT_TRUE(req_ok(a, u, &qa));
        qa.topic = &other;
        CU_ASSERT_FALSE(req_ok(a, u, &qa));
    }
    {   /* PullMessage and offsets: Sub (or Update / Get) on group and topic. */
        Apache__Rocketmq__V2__MessageQueue mq = APACHE__ROCKETMQ__V2__MESSAGE_QUEUE__INIT;
        Apache__Rocketmq__V2__PullMessageRequest pl = APACHE__ROCKETMQ__V2__PULL_MESSAGE_REQUEST__INIT;
        Apache__Rocketmq__V2__UpdateOffsetRequest uo = APACHE__ROCKETMQ__V2__UPDATE_OFFSET_REQUEST__INIT;
        Apache__Rocketmq__V2__GetOffsetRequest go = APACHE__ROCKETMQ__V2__GET_OFFSET_REQUEST__INIT;
        Apache__Rocketmq__V2__QueryOffsetRequest qo = APACHE__ROCKETMQ__V2__QUERY_OFFSET_REQUEST__INIT;
        mq.topic = &sub;
        pl.group = uo.group = go.group = &g;
        pl.message_queue = uo.message_queue = go.message_queue = qo.message_queue = &mq;
        CU_ASSERT_TRUE(req_ok(a, u, &pl));
        CU_ASSERT_TRUE(req_ok(a, u, &uo));
        CU_ASSERT_TRUE(req_ok(a, u, &go));
        CU_ASSERT_TRUE(req_ok(a, u, &qo));
        mq.topic = &pub;
        CU_ASSERT_FALSE(req_ok(a, u, &pl));
        CU_ASSERT_FALSE(req_ok(a, u, &uo));
        CU_ASSERT_FALSE(req_ok(a, u, &go));
        CU_ASSERT_FALSE(req_ok(a, u, &qo));
    }
    {   /* Heartbeat: consumers need Sub on their group; producers nothing. */
        Apache__Rocketmq__V2__HeartbeatRequest hb = APACHE__ROCKETMQ__V2__HEARTBEAT_REQUEST__INIT;
        hb.client_type = APACHE__ROCKETMQ__V2__CLIENT_TYPE__PRODUCER;
        CU_ASSERT_TRUE(req_ok(a, u, &hb));
        hb.client_type = APACHE__ROCKETMQ__V2__CLIENT_TYPE__SIMPLE_CONSUMER;
        hb.group_present_case = APACHE__ROCKETMQ__V2__HEARTBEAT_REQUEST__GROUP_PRESENT_GROUP;
        hb.group = &h;
        CU_ASSERT_FALSE(req_ok(a, u, &hb));
        hb.group = &g;
        CU_ASSERT_TRUE(req_ok(a, u, &hb));
    }
    {   /* NotifyClientTermination and ChangeInvisibleDuration: the group. */
        Apache__Rocketmq__V2__NotifyClientTerminationRequest nt =
            APACHE__ROCKETMQ__V2__NOTIFY_CLIENT_TERMINATION_REQUEST__INIT;
        Apache__Rocketmq__V2__ChangeInvisibleDurationRequest ci =
            APACHE__ROCKETMQ__V2__CHANGE_INVISIBLE_DURATION_REQUEST__INIT;
        CU_ASSERT_TRUE(req_ok(a, u, &nt));
        nt.group_present_case = APACHE__ROCKETMQ__V2__NOTIFY_CLIENT_TERMINATION_REQUEST__GROUP_PRESENT_GROUP;
        nt.group = &h;
        CU_ASSERT_FALSE(req_ok(a, u, &nt));
        ci.group = &g;
        ci.topic = &other; /* RocketMQ checks the group only */
        CU_ASSERT_TRUE(req_ok(a, u, &ci));
        ci.group = &h;
        CU_ASSERT_FALSE(req_ok(a, u, &ci));
    }
    {   /* Telemetry settings: Pub per publishing topic; Sub on the
         * subscription's group and topics; other commands nothing. */
        Apache__Rocketmq__V2__Resource *topics[] = {&pub, &sub};
        Apache__Rocketmq__V2__Publishing p = APACHE__ROCKETMQ__V2__PUBLISHING__INIT;
        Apache__Rocketmq__V2__SubscriptionEntry e = APACHE__ROCKETMQ__V2__SUBSCRIPTION_ENTRY__INIT;
        Apache__Rocketmq__V2__SubscriptionEntry *es[] = {&e};
        Apache__Rocketmq__V2__Subscription sb = APACHE__ROCKETMQ__V2__SUBSCRIPTION__INIT;
        Apache__Rocketmq__V2__Settings st = APACHE__ROCKETMQ__V2__SETTINGS__INIT;
        Apache__Rocketmq__V2__TelemetryCommand t = APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__INIT;
        CU_ASSERT_TRUE(req_ok(a, u, &t));
        t.command_case = APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__COMMAND_SETTINGS;
        t.settings = &st;
        st.pub_sub_case = APACHE__ROCKETMQ__V2__SETTINGS__PUB_SUB_PUBLISHING;
        st.publishing = &p;
        p.topics = topics;
        p.n_topics = 1;
        CU_ASSERT_TRUE(req_ok(a, u, &t));
        p.n_topics = 2;
        CU_ASSERT_FALSE(req_ok(a, u, &t));
        CU_ASSERT_PTR_NOT_NULL(strstr(why, "Topic:sub-only"));
        st.pub_sub_case = APACHE__ROCKETMQ__V2__SETTINGS__PUB_SUB_SUBSCRIPTION;
        st.subscription = &sb;
        sb.group_present_case = APACHE__ROCKETMQ__V2__SUBSCRIPTION__GROUP_PRESENT_GROUP;
        sb.group = &g;
        sb.subscriptions = es;
        sb.n_subscriptions = 1;
        e.topic = &sub;
        CU_ASSERT_TRUE(req_ok(a, u, &t));
        e.topic = &pub;
        CU_ASSERT_FALSE(req_ok(a, u, &t));
        e.topic = &sub;
        sb.group = &h;
        CU_ASSERT_FALSE(req_ok(a, u, &t));
    }
    px_auth_free(a);
}

int main(void)
{
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    suite = CU_add_suite("px_auth", NULL, NULL);
    if (suite == NULL || CU_add_test(suite, "HMAC-SHA1 vector", test_hmac_vector) == NULL ||
        CU_add_test(suite, "authorization header", test_header) == NULL ||
        CU_add_test(suite, "x-mq-date-time", test_datetime) == NULL ||
        CU_add_test(suite, "logins", test_login) == NULL ||
        CU_add_test(suite, "ACL decisions", test_acl) == NULL ||
        CU_add_test(suite, "per-RPC resources and actions", test_rpc_mapping) == NULL) {
        CU_cleanup_registry();
        return 1;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed == 0 ? 0 : 1;
}
