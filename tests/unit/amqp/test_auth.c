/* CUnit tests for gateway-amqp/gw_auth.h: logins against RabbitMQ's own
 * password hashes, the default guest, loopback users, connection.open's
 * 530 texts and the permission check's 403 texts, all as RabbitMQ 3.10
 * answers them (texts checked against a local RabbitMQ 3.10.8). */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <string.h>

#include "cfg.h"
#include "gw_auth.h"

/* Hashes exported by RabbitMQ 3.10.8 (rabbitmqctl export_definitions) for
 * "guest" and for the UTF-8 password "p@ss wörd". */
#define RMQ_GUEST_HASH "JmaHioqUginIjVKjKm/ofePbHGzslRU4pmu0M81pI1k0TH2z"
#define RMQ_UTF8_HASH "mJ91pPZBFinCujk4IRDgpt76UtpsLeQs0rC1077VOVCeKj0V"

static char err[512];

static gw_auth_t *make(const char *yaml)
{
    cfg_t c;
    gw_auth_t *a = NULL;

    cfg_init(&c);
    if (cfg_load_string(&c, "t.yaml", yaml, strlen(yaml), err, sizeof(err)) != GT_OK)
        fprintf(stderr, "\n%s\n", err);
    CU_ASSERT_EQUAL(gw_auth_new(&c.amqp, &c.auth, &a, err, sizeof(err)), GT_OK);
    cfg_free(&c); /* the auth keeps its own copies */
    return a;
}

static const gw_user_t *login(const gw_auth_t *a, const char *u, const char *p, bool lo)
{
    return gw_auth_login(a, gw_str(u), gw_str(p), lo, err, sizeof(err));
}

static void test_default_guest(void)
{
    gw_auth_t *a = make("");
    const gw_user_t *u;
    const gw_grant_t *g;

    CU_ASSERT_PTR_NULL(login(a, "guest", "guest", false));
    CU_ASSERT_STRING_EQUAL(err, "user 'guest' can only connect via localhost");
    CU_ASSERT_PTR_NULL(login(a, "guest", "guesT", true));
    CU_ASSERT_STRING_EQUAL(err, "user 'guest' - invalid credentials");
    CU_ASSERT_PTR_NULL(login(a, "bob", "guest", true));
    CU_ASSERT_STRING_EQUAL(err, "user 'bob' - invalid credentials");
    CU_ASSERT_PTR_NULL(login(a, "guest", "", true));
    u = login(a, "guest", "guest", true);
    CU_ASSERT_PTR_NOT_NULL_FATAL(u);
    CU_ASSERT_STRING_EQUAL(gw_user_name(u), "guest");
    CU_ASSERT_PTR_NULL(gw_auth_open(a, u, gw_str("x"), err, sizeof(err)));
    CU_ASSERT_STRING_EQUAL(err, "vhost x not found");
    g = gw_auth_open(a, u, gw_str("/"), err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    CU_ASSERT_STRING_EQUAL(gw_grant_vhost(g), "/");
    CU_ASSERT_TRUE(gw_auth_check(g, GW_PERM_CONFIGURE | GW_PERM_WRITE | GW_PERM_READ,
                                 GW_RES_QUEUE, "anything", 8, err, sizeof(err)));
    gw_auth_free(a);
    /* loopback_users: [] lets guest in from anywhere. */
    a = make("amqp: {loopback_users: []}");
    CU_ASSERT_PTR_NOT_NULL(login(a, "guest", "guest", false));
    gw_auth_free(a);
}

static void test_users(void)
{
    gw_auth_t *a = make("amqp:\n"
                        "  users:\n"
                        "    - {name: app, password_hash: \"" RMQ_GUEST_HASH "\"}\n"
                        "    - {name: utf, password_hash: \"" RMQ_UTF8_HASH "\"}\n"
                        "    - {name: dev, password: devpw}\n"
                        "    - {name: guest, password: other}\n"
                        "  vhosts: [\"/\", prod]\n"
                        "  permissions:\n"
                        "    - {user: app, vhost: prod, configure: \"^app\\\\.\", "
                        "write: \"^(amq\\\\.default|app\\\\..*)$\", read: \"\"}\n"
                        "    - {user: dev, vhost: \"/\", configure: \".*\", write: \".*\", "
                        "read: \".*\"}\n"
                        "  loopback_users: [dev]\n");
    const gw_user_t *app, *utf, *dev, *guest;
    const gw_grant_t *g;
    gw_fault_t f;

    app = login(a, "app", "guest", false);
    CU_ASSERT_PTR_NOT_NULL_FATAL(app);
    utf = login(a, "utf", "p@ss w\xc3\xb6rd", false);
    CU_ASSERT_PTR_NOT_NULL(utf);
    CU_ASSERT_PTR_NULL(login(a, "utf", "p@ss word", false));
    CU_ASSERT_PTR_NULL(login(a, "app", "guest2", false));
    CU_ASSERT_PTR_NULL(login(a, "dev", "devpw", false));
    CU_ASSERT_STRING_EQUAL(err, "user 'dev' can only connect via localhost");
    dev = login(a, "dev", "devpw", true);
    CU_ASSERT_PTR_NOT_NULL(dev);
    /* A configured guest replaces the default one, loopback rule and all
     * (loopback_users no longer names it). */
    CU_ASSERT_PTR_NULL(login(a, "guest", "guest", true));
    guest = login(a, "guest", "other", false);
    CU_ASSERT_PTR_NOT_NULL_FATAL(guest);

    /* connection.open */
    CU_ASSERT_PTR_NULL(gw_auth_open(a, app, gw_str("/"), err, sizeof(err)));
    CU_ASSERT_STRING_EQUAL(err, "access to vhost '/' refused for user 'app'");
    CU_ASSERT_PTR_NULL(gw_auth_open(a, guest, gw_str("prod"), err, sizeof(err)));
    CU_ASSERT_STRING_EQUAL(err, "access to vhost 'prod' refused for user 'guest'");
    CU_ASSERT_PTR_NULL(gw_auth_open(a, app, (gw_str_t){"prodx", 4 + 1}, err, sizeof(err)));
    CU_ASSERT_STRING_EQUAL(err, "vhost prodx not found");
    g = gw_auth_open(a, app, (gw_str_t){"prodx", 4}, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);

    /* The checks, with RabbitMQ's texts. */
    CU_ASSERT_TRUE(gw_auth_check(g, GW_PERM_CONFIGURE, GW_RES_QUEUE, "app.q", 5, err,
                                 sizeof(err)));
    CU_ASSERT_FALSE(gw_auth_check(g, GW_PERM_CONFIGURE, GW_RES_QUEUE, "other", 5, err,
                                  sizeof(err)));
    CU_ASSERT_STRING_EQUAL(err, "access to queue 'other' in vhost 'prod' refused for user 'app'");
    /* Matched anywhere unless anchored: "^app\." does not match "xapp.q". */
    CU_ASSERT_FALSE(gw_auth_check(g, GW_PERM_CONFIGURE, GW_RES_EXCHANGE, "xapp.q", 6, err,
                                  sizeof(err)));
    CU_ASSERT_STRING_EQUAL(err, "access to exchange 'xapp.q' in vhost 'prod' refused for user "
                                "'app'");
    /* The length ends the name, not a NUL. */
    CU_ASSERT_TRUE(gw_auth_check(g, GW_PERM_WRITE, GW_RES_EXCHANGE, "app.x-more", 5, err,
                                 sizeof(err)));
    CU_ASSERT_FALSE(gw_auth_check(g, GW_PERM_WRITE, GW_RES_EXCHANGE, "app.\0x", 6, err,
                                  sizeof(err)));
    /* The default exchange is amq.default. */
    CU_ASSERT_TRUE(gw_auth_check(g, GW_PERM_WRITE, GW_RES_EXCHANGE, "", 0, err, sizeof(err)));
    CU_ASSERT_FALSE(gw_auth_check(g, GW_PERM_CONFIGURE, GW_RES_EXCHANGE, "", 0, err,
                                  sizeof(err)));
    CU_ASSERT_STRING_EQUAL(err, "access to exchange 'amq.default' in vhost 'prod' refused for "
                                "user 'app'");
    /* "" matches nothing (RabbitMQ's "^$"). */
    CU_ASSERT_FALSE(gw_auth_check(g, GW_PERM_READ, GW_RES_QUEUE, "app.q", 5, err,
                                  sizeof(err)));
    /* Several bits: all must match. */
    CU_ASSERT_FALSE(gw_auth_check(g, GW_PERM_CONFIGURE | GW_PERM_READ, GW_RES_QUEUE, "app.q",
                                  5, err, sizeof(err)));
    CU_ASSERT_FALSE(gw_auth_check(NULL, GW_PERM_READ, GW_RES_QUEUE, "q", 1, NULL, 0));
    /* The fault form: 403 and the full reply text. */
    CU_ASSERT_FALSE(gw_auth_check_fault(g, GW_PERM_READ, GW_RES_QUEUE, "q1", 2, 50, 10, &f));
    CU_ASSERT_EQUAL(f.code, 403);
    CU_ASSERT_EQUAL(f.class_id, 50);
    CU_ASSERT_EQUAL(f.method_id, 10);
    CU_ASSERT_STRING_EQUAL(f.text,
                           "ACCESS_REFUSED - access to queue 'q1' in vhost 'prod' refused for "
                           "user 'app'");
    CU_ASSERT_TRUE(gw_auth_check_fault(g, GW_PERM_CONFIGURE, GW_RES_QUEUE, "app.1", 5, 50, 10,
                                       &f));
    gw_auth_free(a);
}

/* auth.users (RocketMQ's ACL users) log in to the gateway too: the
 * access key with the secret key; an admin has ".*" where it has no
 * amqp.permissions entry; guest is gone once any user is configured. */
static void test_shared_users(void)
{
    gw_auth_t *a = make("auth:\n  users:\n"
                        "    - {access_key: rk, secret_key: \"s3cret\"}\n"
                        "    - {access_key: boss, secret_key: \"b0ss\", admin: true}\n"
                        "amqp:\n  vhosts: [\"/\", prod]\n"
                        "  users: [{name: app, password: pw}]\n"
                        "  loopback_users: []\n"
                        "  permissions:\n"
                        "    - {user: rk, vhost: prod, configure: \"\", write: \"^x$\", read: \"\"}\n"
                        "    - {user: boss, vhost: prod, configure: \"\", write: \"\", read: \"\"}\n");
    const gw_user_t *u;
    const gw_grant_t *g;

    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NULL(login(a, "guest", "guest", true));
    CU_ASSERT_PTR_NOT_NULL(login(a, "app", "pw", false));
    CU_ASSERT_PTR_NULL(login(a, "rk", "s3creT", false));
    CU_ASSERT_STRING_EQUAL(err, "user 'rk' - invalid credentials");
    u = login(a, "rk", "s3cret", false);
    CU_ASSERT_PTR_NOT_NULL_FATAL(u);
    CU_ASSERT_STRING_EQUAL(gw_user_name(u), "rk");
    /* A normal user gets only its amqp.permissions. */
    CU_ASSERT_PTR_NULL(gw_auth_open(a, u, gw_str("/"), err, sizeof(err)));
    g = gw_auth_open(a, u, gw_str("prod"), err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    CU_ASSERT_TRUE(gw_auth_check(g, GW_PERM_WRITE, GW_RES_EXCHANGE, "x", 1, err, sizeof(err)));
    CU_ASSERT_FALSE(gw_auth_check(g, GW_PERM_READ, GW_RES_QUEUE, "x", 1, err, sizeof(err)));
    /* An admin: everything on "/", its own entry on prod. */
    u = login(a, "boss", "b0ss", false);
    CU_ASSERT_PTR_NOT_NULL_FATAL(u);
    g = gw_auth_open(a, u, gw_str("/"), err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    CU_ASSERT_TRUE(gw_auth_check(g, GW_PERM_CONFIGURE | GW_PERM_WRITE | GW_PERM_READ,
                                 GW_RES_QUEUE, "q", 1, err, sizeof(err)));
    g = gw_auth_open(a, u, gw_str("prod"), err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    CU_ASSERT_FALSE(gw_auth_check(g, GW_PERM_READ, GW_RES_QUEUE, "q", 1, err, sizeof(err)));
    gw_auth_free(a);
    /* Only auth users: no guest, and an admin alone has every vhost. */
    a = make("auth: {users: [{access_key: boss, secret_key: b0ss, admin: true}]}");
    CU_ASSERT_PTR_NULL(login(a, "guest", "guest", true));
    u = login(a, "boss", "b0ss", true);
    CU_ASSERT_PTR_NOT_NULL_FATAL(u);
    CU_ASSERT_PTR_NOT_NULL(gw_auth_open(a, u, gw_str("/"), err, sizeof(err)));
    gw_auth_free(a);
}

static void test_hash_password(void)
{
    char h1[64], h2[64];
    gw_auth_t *a;
    char yaml[256];

    CU_ASSERT_EQUAL(gw_auth_hash_password("s3cret", h1, sizeof(h1)), GT_OK);
    CU_ASSERT_EQUAL(gw_auth_hash_password("s3cret", h2, sizeof(h2)), GT_OK);
    CU_ASSERT_EQUAL(strlen(h1), 48);
    CU_ASSERT_STRING_NOT_EQUAL(h1, h2); /* salted */
    CU_ASSERT_EQUAL(gw_auth_hash_password("x", h1, 48), GT_ERANGE);
    snprintf(yaml, sizeof(yaml), "amqp: {users: [{name: u, password_hash: \"%s\"}]}", h2);
    a = make(yaml);
    CU_ASSERT_PTR_NOT_NULL(login(a, "u", "s3cret", true));
    CU_ASSERT_PTR_NULL(login(a, "u", "s3cre", true));
    gw_auth_free(a);
    /* SHA-512 (rabbit_password_hashing_sha512) works too: a plain
     * password hashed at start-up. */
    a = make("amqp: {users: [{name: u, password: pw, hashing_algorithm: "
             "rabbit_password_hashing_sha512}]}");
    CU_ASSERT_PTR_NOT_NULL(login(a, "u", "pw", true));
    CU_ASSERT_PTR_NULL(login(a, "u", "pW", true));
    gw_auth_free(a);
}

int main(void)
{
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    suite = CU_add_suite("amqp_auth", NULL, NULL);
    if (suite == NULL || CU_add_test(suite, "default guest", test_default_guest) == NULL ||
        CU_add_test(suite, "users, vhosts, permissions", test_users) == NULL ||
        CU_add_test(suite, "auth.users share the store", test_shared_users) == NULL ||
        CU_add_test(suite, "hash_password", test_hash_password) == NULL)
        goto out;
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
out:
    {
        unsigned failed = CU_get_number_of_failures();
        CU_cleanup_registry();
        return failed == 0 && CU_get_error() == CUE_SUCCESS ? 0 : 1;
    }
}
