/* CUnit tests for config/: defaults, block and flow style, every error path
 * of the loader (syntax, unknown and duplicate keys, types, ranges, enums,
 * addresses, names, duplicates, missing names), cfg_set overrides, the
 * print -> reload round trip, failure atomicity, the shipped
 * config/gantry.yaml and the generated reference.  White-box where useful:
 * it includes cfg_int.h to walk the descriptor tables. */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "cfg_int.h"

static char err[1024];

static gt_err_t load(cfg_t *c, const char *yaml)
{
    err[0] = '\0';
    return cfg_load_string(c, "t.yaml", yaml, strlen(yaml), err, sizeof(err));
}

/* Loading yaml must fail with GT_EINVAL and a message containing want. */
static void expect_fail_at(const char *yaml, const char *want, int line)
{
    cfg_t c;
    gt_err_t rc;

    cfg_init(&c);
    rc = load(&c, yaml);
    if (rc != GT_EINVAL || strstr(err, want) == NULL)
        fprintf(stderr, "\n  line %d: yaml:\n%s\n  got rc=%d err: %s\n  want: %s\n",
                line, yaml, (int)rc, err, want);
    CU_ASSERT_EQUAL(rc, GT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, want));
    cfg_free(&c);
}
#define expect_fail(yaml, want) expect_fail_at((yaml), (want), __LINE__)

static void expect_ok_at(const char *yaml, int line)
{
    cfg_t c;
    gt_err_t rc;

    cfg_init(&c);
    rc = load(&c, yaml);
    if (rc != GT_OK)
        fprintf(stderr, "\n  line %d: yaml:\n%s\n  unexpected err: %s\n", line,
                yaml, err);
    CU_ASSERT_EQUAL(rc, GT_OK);
    cfg_free(&c);
}
#define expect_ok(yaml) expect_ok_at((yaml), __LINE__)

/* cfg_print into a malloc'd string. */
static char *print_str(const cfg_t *c)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    cfg_print(c, f);
    fclose(f);
    return buf;
}

static const char full_yaml[] =
    "# a complete config in block style\n"
    "server:\n"
    "  grpc_listen: \"127.0.0.1:9081\"\n"
    "  http_listen: localhost:9557\n"
    "  amqp_listen: \"[::1]:9672\"\n"
    "  threads: 4\n"
    "  shutdown_timeout_ms: 2500\n"
    "  auto_create_topics: true\n"
    "log:\n"
    "  level: DEBUG\n"
    "store:\n"
    "  mode: local\n"
    "  data_dir: \"/var/lib/gantry \\\"x\\\" \\\\ \\t end\"\n"
    "  flush: async\n"
    "  flush_interval_ms: 50\n"
    "  segment_size: 68719476736\n"
    "  retention_hours: 1\n"
    "topics:\n"
    "  - name: T1\n"
    "    type: FIFO\n"
    "    queues: 1024\n"
    "  - name: \"a%b|c_d-e\"\n"
    "    type: mixed\n"
    "  - {name: T3, type: TRANSACTION, queues: 1}\n"
    "groups:\n"
    "  - name: G1\n"
    "    max_delivery_attempts: 1000\n"
    "    fifo: true\n"
    "    consume_from: last\n"
    "  - {name: G2}\n";

/* ---- defaults and styles ---------------------------------------------- */

static void check_defaults(const cfg_t *c)
{
    CU_ASSERT_STRING_EQUAL(c->server.grpc_listen, "0.0.0.0:8081");
    CU_ASSERT_STRING_EQUAL(c->server.http_listen, "0.0.0.0:5557");
    CU_ASSERT_STRING_EQUAL(c->amqp.listen, "0.0.0.0:5672");
    CU_ASSERT_EQUAL(c->amqp.frame_max, 131072);
    CU_ASSERT_EQUAL(c->amqp.heartbeat, 60);
    CU_ASSERT_EQUAL(c->amqp.channel_max, 2047);
    CU_ASSERT_EQUAL(c->amqp.consumer_timeout_ms, 1800000);
    CU_ASSERT_EQUAL(c->amqp.max_message_size, 134217728);
    CU_ASSERT_EQUAL(c->amqp.flow_control_bytes, 67108864);
    CU_ASSERT_STRING_EQUAL(c->amqp.memory_high_watermark, "0.4");
    CU_ASSERT_EQUAL(c->amqp.users.n, 0);
    CU_ASSERT_EQUAL(c->amqp.permissions.n, 0);
    CU_ASSERT_EQUAL_FATAL(c->amqp.vhosts.n, 1);
    CU_ASSERT_STRING_EQUAL(c->amqp.vhosts.v[0], "/");
    CU_ASSERT_EQUAL_FATAL(c->amqp.loopback_users.n, 1);
    CU_ASSERT_STRING_EQUAL(c->amqp.loopback_users.v[0], "guest");
    CU_ASSERT_EQUAL(c->server.threads, 0);
    CU_ASSERT_EQUAL(c->server.shutdown_timeout_ms, 4000);
    CU_ASSERT_FALSE(c->server.auto_create_topics);
    CU_ASSERT_STRING_EQUAL(c->log.level, "info");
    CU_ASSERT_STRING_EQUAL(c->store.mode, "local");
    CU_ASSERT_STRING_EQUAL(c->store.data_dir, "data");
    CU_ASSERT_STRING_EQUAL(c->store.flush, "sync");
    CU_ASSERT_EQUAL(c->store.flush_interval_ms, 200);
    CU_ASSERT_EQUAL(c->store.segment_size, 1073741824LL);
    CU_ASSERT_EQUAL(c->store.retention_hours, 72);
    CU_ASSERT_EQUAL(c->store.index_mem_entries, 65536);
    CU_ASSERT_EQUAL(c->n_topics, 0);
    CU_ASSERT_PTR_NULL(c->topics);
    CU_ASSERT_EQUAL(c->n_groups, 0);
    CU_ASSERT_PTR_NULL(c->groups);
}

static void test_defaults(void)
{
    static const char *const empties[] = {
        "", "# only a comment\n", "---\n", "~\n", "topics:\nserver:\nlog: ~\n",
        "topics: []\ngroups: []\nstore: {}\n",
    };
    cfg_t c;

    cfg_init(&c);
    check_defaults(&c);
    for (size_t i = 0; i < sizeof(empties) / sizeof(empties[0]); i++) {
        CU_ASSERT_EQUAL(load(&c, empties[i]), GT_OK);
        check_defaults(&c);
    }
    cfg_free(&c);
    cfg_free(&c); /* idempotent */
    cfg_free(NULL);
}

static void test_block_style(void)
{
    cfg_t c;

    cfg_init(&c);
    CU_ASSERT_EQUAL_FATAL(load(&c, full_yaml), GT_OK);
    CU_ASSERT_STRING_EQUAL(c.server.grpc_listen, "127.0.0.1:9081");
    CU_ASSERT_STRING_EQUAL(c.server.http_listen, "localhost:9557");
    CU_ASSERT_STRING_EQUAL(c.amqp.listen, "[::1]:9672"); /* the older name */
    CU_ASSERT_EQUAL(c.server.threads, 4);
    CU_ASSERT_EQUAL(c.server.shutdown_timeout_ms, 2500);
    CU_ASSERT_TRUE(c.server.auto_create_topics);
    CU_ASSERT_STRING_EQUAL(c.log.level, "debug");
    CU_ASSERT_STRING_EQUAL(c.store.data_dir,
                           "/var/lib/gantry \"x\" \\ \t end");
    CU_ASSERT_STRING_EQUAL(c.store.flush, "async");
    CU_ASSERT_EQUAL(c.store.flush_interval_ms, 50);
    CU_ASSERT_EQUAL(c.store.segment_size, 68719476736LL);
    CU_ASSERT_EQUAL(c.store.retention_hours, 1);
    CU_ASSERT_EQUAL_FATAL(c.n_topics, 3);
    CU_ASSERT_STRING_EQUAL(c.topics[0].name, "T1");
    CU_ASSERT_EQUAL(c.topics[0].type, CFG_TOPIC_FIFO);
    CU_ASSERT_EQUAL(c.topics[0].queues, 1024);
    CU_ASSERT_STRING_EQUAL(c.topics[1].name, "a%b|c_d-e");
    CU_ASSERT_EQUAL(c.topics[1].type, CFG_TOPIC_MIXED);
    CU_ASSERT_EQUAL(c.topics[1].queues, 8);
    CU_ASSERT_EQUAL(c.topics[2].type, CFG_TOPIC_TRANSACTION);
    CU_ASSERT_EQUAL_FATAL(c.n_groups, 2);
    CU_ASSERT_STRING_EQUAL(c.groups[0].name, "G1");
    CU_ASSERT_EQUAL(c.groups[0].max_delivery_attempts, 1000);
    CU_ASSERT_TRUE(c.groups[0].fifo);
    CU_ASSERT_TRUE(c.groups[0].consume_from_last);
    CU_ASSERT_STRING_EQUAL(c.groups[1].name, "G2");
    CU_ASSERT_EQUAL(c.groups[1].max_delivery_attempts, 16);
    CU_ASSERT_FALSE(c.groups[1].fifo);
    CU_ASSERT_FALSE(c.groups[1].consume_from_last);
    cfg_free(&c);
}

static void test_flow_style(void)
{
    static const char yaml[] =
        "topics:\n"
        "  - {name: T1, type: NORMAL, queues: 8}\n"
        "groups:\n"
        "  - {name: G1, max_delivery_attempts: 16, fifo: false}\n"
        "store: {mode: local, flush: sync}\n";
    static const char all_flow[] =
        "{server: {threads: 2}, store: {mode: remote, flush: async},"
        " topics: [{name: A, type: DELAY}, {name: B}], groups: [{name: G}]}";
    cfg_t c;

    cfg_init(&c);
    CU_ASSERT_EQUAL_FATAL(load(&c, yaml), GT_OK);
    CU_ASSERT_EQUAL_FATAL(c.n_topics, 1);
    CU_ASSERT_STRING_EQUAL(c.topics[0].name, "T1");
    CU_ASSERT_EQUAL(c.topics[0].type, CFG_TOPIC_NORMAL);
    CU_ASSERT_EQUAL(c.topics[0].queues, 8);
    CU_ASSERT_EQUAL_FATAL(c.n_groups, 1);
    CU_ASSERT_EQUAL(c.groups[0].max_delivery_attempts, 16);
    CU_ASSERT_STRING_EQUAL(c.store.mode, "local");
    CU_ASSERT_STRING_EQUAL(c.store.flush, "sync");

    CU_ASSERT_EQUAL_FATAL(load(&c, all_flow), GT_OK);
    CU_ASSERT_EQUAL(c.server.threads, 2);
    CU_ASSERT_STRING_EQUAL(c.store.mode, "remote");
    CU_ASSERT_STRING_EQUAL(c.store.flush, "async");
    CU_ASSERT_EQUAL_FATAL(c.n_topics, 2);
    CU_ASSERT_EQUAL(c.topics[0].type, CFG_TOPIC_DELAY);
    CU_ASSERT_STRING_EQUAL(c.topics[1].name, "B");
    CU_ASSERT_EQUAL(c.n_groups, 1);
    /* Loading starts from the defaults, not from the previous file. */
    CU_ASSERT_EQUAL(c.store.flush_interval_ms, 200);
    cfg_free(&c);
}

/* ---- error paths -------------------------------------------------------- */

static void test_syntax_error(void)
{
    expect_fail("server:\n  threads: [1, 2\n", "t.yaml:3: invalid YAML: ");
    expect_fail("server:\n  threads: 1\n bad: 2\n", "t.yaml:3: invalid YAML");
    expect_fail("server:\n\tthreads: 1\n", "t.yaml:2: invalid YAML");
    expect_fail("log: {level: info\n", "invalid YAML");
    expect_fail("server:\n  grpc_listen: \"unterminated\n", "invalid YAML");
    expect_fail("store:\n  data_dir: \"\xff\"\n", "t.yaml:2: invalid YAML");
    expect_fail("server: {}\n---\nlog: {}\n",
                "t.yaml:3: (top level): only one YAML document is allowed");
    expect_fail("- a\n- b\n",
                "t.yaml:1: (top level): expected a mapping of sections, got a list");
}

static void test_unknown_key(void)
{
    cfg_t c;

    cfg_init(&c);
    CU_ASSERT_EQUAL(load(&c, "server:\n  threads: 1\nstore:\n  mode: local\n"
                             "\n  flsuh: sync\n"), GT_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "t.yaml:6: store.flsuh: unknown key");
    cfg_free(&c);
    expect_fail("stroe: {}\n", "t.yaml:1: stroe: unknown key");
    expect_fail("topics:\n  - {name: T1}\n  - {name: T2, qeues: 3}\n",
                "t.yaml:3: topics[1].qeues: unknown key");
    expect_fail("groups:\n  - name: G1\n    retries: 3\n",
                "t.yaml:3: groups[0].retries: unknown key");
    expect_fail("server:\n  \"bad\\nkey\": 1\n", "server.bad\\nkey: unknown key");
    expect_fail("server:\n  ? [a, b]\n  : 1\n",
                "server: a key must be a scalar, not a list");
}

static void test_duplicate_key(void)
{
    expect_fail("server:\n  threads: 1\n  threads: 2\n",
                "t.yaml:3: server.threads: duplicate key");
    expect_fail("log: {level: info}\nlog: {level: warn}\n",
                "t.yaml:2: log: duplicate key");
    expect_fail("topics:\n  - {name: T1, name: T2}\n",
                "topics[0].name: duplicate key");
}

static void test_wrong_type(void)
{
    expect_fail("server:\n  threads: abc\n",
                "t.yaml:2: server.threads: \"abc\" is not an integer");
    expect_fail("server:\n  threads: \"8\"\n",
                "server.threads: \"8\" is not an integer (it is quoted");
    expect_fail("server:\n  threads: 1.5\n", "\"1.5\" is not an integer");
    expect_fail("server:\n  threads: 0x10\n", "is not an integer");
    expect_fail("server:\n  threads:\n", "t.yaml:2: server.threads: has no value");
    expect_fail("server:\n  auto_create_topics: yes\n",
                "server.auto_create_topics: \"yes\" is not a boolean (true|false)");
    expect_fail("groups:\n  - {name: G, fifo: \"true\"}\n",
                "groups[0].fifo: \"true\" is not a boolean");
    expect_fail("store:\n  mode: {a: b}\n",
                "t.yaml:2: store.mode: expected a scalar value, got a mapping");
    expect_fail("store:\n  data_dir: [a]\n",
                "store.data_dir: expected a scalar value, got a list");
    expect_fail("store:\n  data_dir: \"\"\n", "store.data_dir: must not be empty");
    expect_fail("server: 5\n", "t.yaml:1: server: expected a mapping, got a scalar");
    expect_fail("topics: {name: T1}\n", "topics: expected a list, got a mapping");
    expect_fail("topics:\n  - T1\n",
                "t.yaml:2: topics[0]: expected a mapping (e.g. {name: X}), got a scalar");
    expect_fail("store:\n  data_dir: \"a\\0b\"\n",
                "store.data_dir: contains a NUL character");
    expect_ok("server:\n  threads: +3\n  auto_create_topics: TRUE\n");
}

static void test_out_of_range(void)
{
    cfg_t c;

    cfg_init(&c);
    CU_ASSERT_EQUAL(load(&c, "topics:\n  - {name: T1}\n"
                             "  - {name: T2, queues: 5000}\n"), GT_EINVAL);
    CU_ASSERT_STRING_EQUAL(err,
        "t.yaml:3: topics[1].queues: 5000 is out of range (1..1024)");
    cfg_free(&c);
    expect_fail("topics:\n  - {name: T, queues: 0}\n",
                "topics[0].queues: 0 is out of range (1..1024)");
    expect_fail("server: {threads: -1}\n", "server.threads: -1 is out of range (0..256)");
    expect_fail("server: {threads: 257}\n", "257 is out of range (0..256)");
    expect_fail("server: {shutdown_timeout_ms: 99}\n", "(100..60000)");
    expect_fail("store: {flush_interval_ms: 0}\n", "(1..60000)");
    expect_fail("store: {retention_hours: 87601}\n", "(1..87600)");
    expect_fail("store: {segment_size: 4095}\n",
                "store.segment_size: 4095 is out of range (4096..68719476736)");
    expect_fail("store: {segment_size: 68719476737}\n", "is out of range");
    expect_fail("store: {segment_size: 99999999999999999999999}\n",
                "99999999999999999999999 is out of range");
    expect_fail("server: {threads: 4294967296}\n", "is out of range");
    expect_fail("groups: [{name: G, max_delivery_attempts: 1001}]\n",
                "groups[0].max_delivery_attempts: 1001 is out of range (1..1000)");
    expect_ok("server: {threads: 256, shutdown_timeout_ms: 60000}\n"
              "store: {segment_size: 4096, retention_hours: 87600}\n"
              "topics: [{name: T, queues: 1024}]\n");
}

/* store.index_mem_entries: a valid value reaches cfg_t; out of its range
 * (the store's own bounds, 16..2^24) it is refused with its key path. */
static void test_index_mem_entries(void)
{
    cfg_t c;

    cfg_init(&c);
    CU_ASSERT_EQUAL(load(&c, "store:\n  index_mem_entries: 1024\n"), GT_OK);
    CU_ASSERT_EQUAL(c.store.index_mem_entries, 1024);
    CU_ASSERT_EQUAL(load(&c, "store: {index_mem_entries: 16777216}\n"), GT_OK);
    CU_ASSERT_EQUAL(c.store.index_mem_entries, 16777216);
    CU_ASSERT_EQUAL(load(&c, "store: {index_mem_entries: 16}\n"), GT_OK);
    CU_ASSERT_EQUAL(c.store.index_mem_entries, 16);
    cfg_free(&c);
    expect_fail("store:\n  index_mem_entries: 15\n",
                "t.yaml:2: store.index_mem_entries: 15 is out of range "
                "(16..16777216)");
    expect_fail("store: {index_mem_entries: 16777217}\n",
                "store.index_mem_entries: 16777217 is out of range "
                "(16..16777216)");
    expect_fail("store: {index_mem_entries: -1}\n",
                "store.index_mem_entries: -1 is out of range");
}

static void test_bad_enum(void)
{
    cfg_t c;

    expect_fail("store:\n  flush: fast\n",
                "t.yaml:2: store.flush: \"fast\" is not one of sync|async");
    expect_fail("store: {mode: cloud}\n", "\"cloud\" is not one of local|remote");
    expect_fail("log: {level: verbose}\n",
                "log.level: \"verbose\" is not one of trace|debug|info|warn|error|off");
    expect_fail("topics: [{name: T, type: QUEUE}]\n",
                "topics[0].type: \"QUEUE\" is not one of "
                "NORMAL|FIFO|DELAY|TRANSACTION|MIXED");
    expect_fail("groups: [{name: G, consume_from: middle}]\n",
                "groups[0].consume_from: \"middle\" is not one of first|last");
    cfg_init(&c);
    CU_ASSERT_EQUAL(load(&c, "log: {level: WARN}\ntopics: [{name: T, type: fifo}]\n"),
                    GT_OK);
    CU_ASSERT_STRING_EQUAL(c.log.level, "warn");
    CU_ASSERT_EQUAL(c.topics[0].type, CFG_TOPIC_FIFO);
    cfg_free(&c);
}

static void test_bad_listen(void)
{
    static const char *const bad[] = {
        "0.0.0.0", ":8081", "host:", "host:0", "host:65536", "host:80a",
        "host:123456", "::1:80", "[::1:80", "[]:80", "[::1]80", "ho st:80",
        "[::g]:80",
    };
    static const char *const good[] = {
        "[::]:8081", "localhost:1", "127.0.0.1:65535", "my-host.example:80",
    };
    char yaml[128];

    expect_fail("server:\n  grpc_listen: 0.0.0.0\n",
                "t.yaml:2: server.grpc_listen: \"0.0.0.0\" is not a valid "
                "HOST:PORT address (missing \":PORT\")");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(yaml, sizeof(yaml), "server: {http_listen: \"%s\"}\n", bad[i]);
        expect_fail(yaml, "server.http_listen: ");
        expect_fail(yaml, "is not a valid HOST:PORT address");
    }
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(yaml, sizeof(yaml), "server: {amqp_listen: \"%s\"}\n", good[i]);
        expect_ok(yaml);
    }
}

static void test_bad_topic_name(void)
{
    char yaml[512], name[200];

    expect_fail("topics:\n  - {name: T1}\n  - {name: T2}\n  - {name: \"a b\"}\n",
                "t.yaml:4: topics[2].name: \"a b\" is not a valid topic name "
                "(allowed: ^[%|a-zA-Z0-9_-]+$)");
    expect_fail("topics: [{name: a.b}]\n", "\"a.b\" is not a valid topic name");
    expect_fail("topics: [{name: \"\"}]\n", "topics[0].name: topic name must not be empty");
    memset(name, 'x', 128);
    name[128] = '\0';
    snprintf(yaml, sizeof(yaml), "topics: [{name: %s}]\n", name);
    expect_fail(yaml, "is not a valid topic name (128 characters, at most 127)");
    name[127] = '\0';
    snprintf(yaml, sizeof(yaml), "topics: [{name: %s}]\n", name);
    expect_ok(yaml);
    expect_fail("topics: [{name: TBW102}]\n",
                "topics[0].name: \"TBW102\" is a reserved system topic name");
    expect_fail("topics: [{name: SCHEDULE_TOPIC_XXXX}]\n", "reserved system topic");
    expect_fail("topics: [{name: RMQ_SYS_TRACE_TOPIC}]\n", "reserved system topic");
    expect_fail("topics: [{name: rmq_sys_anything}]\n",
                "reserved system topic name (prefix rmq_sys_)");
    expect_fail("topics: [{name: RMQ_SYS_X}]\n", "(prefix RMQ_SYS_)");
    expect_fail("topics: [{name: \"%RETRY%G1\"}]\n", "(prefix %RETRY%)");
    expect_fail("topics: [{name: \"%DLQ%G1\"}]\n", "(prefix %DLQ%)");
    expect_fail("topics: [{name: \"%SYS%HALF\"}]\n", "(prefix %SYS%)");
    expect_fail("groups: [{name: \"%SYS%HOLD\"}]\n", "(prefix %SYS%)");
    CU_ASSERT_EQUAL(cfg_topic_name_check("OK_name-1", NULL, 0), GT_OK);
    CU_ASSERT_EQUAL(cfg_topic_name_check("BenchmarkTest", NULL, 0), GT_EINVAL);
}

static void test_bad_group_name(void)
{
    char yaml[512], name[200];

    expect_fail("groups: [{name: G1}, {name: \"g/1\"}]\n",
                "groups[1].name: \"g/1\" is not a valid group name (allowed: "
                "^[%|a-zA-Z0-9_-]+$)");
    memset(name, 'g', 121);
    name[121] = '\0';
    snprintf(yaml, sizeof(yaml), "groups: [{name: %s}]\n", name);
    expect_fail(yaml, "is not a valid group name (121 characters, at most 120)");
    name[120] = '\0';
    snprintf(yaml, sizeof(yaml), "groups: [{name: %s}]\n", name);
    expect_ok(yaml);
    expect_fail("groups: [{name: DEFAULT_CONSUMER}]\n",
                "groups[0].name: \"DEFAULT_CONSUMER\" is a reserved system group name");
    expect_fail("groups: [{name: TOOLS_CONSUMER}]\n", "reserved system group");
    expect_fail("groups: [{name: CID_RMQ_SYS_TRANS}]\n", "(prefix CID_RMQ_SYS_)");
    CU_ASSERT_EQUAL(cfg_group_name_check("GID_ok", NULL, 0), GT_OK);
}

static void test_duplicates_and_missing_name(void)
{
    expect_fail("topics:\n  - {name: T1}\n  - {name: T2}\n  - name: T1\n    queues: 2\n",
                "t.yaml:4: topics[2]: duplicate topic name \"T1\" (first "
                "defined at line 2)");
    expect_fail("groups:\n  - {name: G1}\n  - {name: G1, fifo: true}\n",
                "t.yaml:3: groups[1]: duplicate group name \"G1\" (first "
                "defined at line 2)");
    /* A topic and a group may share a name. */
    expect_ok("topics: [{name: X}]\ngroups: [{name: X}]\n");
    expect_fail("topics:\n  - {name: T1}\n  - {type: FIFO, queues: 2}\n",
                "t.yaml:3: topics[1].name: required key is missing");
    expect_fail("groups:\n  - {}\n", "t.yaml:2: groups[0].name: required key is missing");
    expect_fail("groups:\n  - name:\n", "groups[0].name: has no value");
}


/* ---- amqp ------------------------------------------------------------- */

/* RabbitMQ 3.10.8's own hash of "guest" (rabbitmqctl export_definitions). */
#define RMQ_GUEST_HASH "JmaHioqUginIjVKjKm/ofePbHGzslRU4pmu0M81pI1k0TH2z"

static const char amqp_yaml[] =
    "amqp:\n"
    "  listen: \"127.0.0.1:5673\"\n"
    "  frame_max: 4096\n"
    "  heartbeat: 0\n"
    "  channel_max: 2047\n"
    "  consumer_timeout_ms: 0\n"
    "  max_message_size: 536870912\n"
    "  users:\n"
    "    - name: app\n"
    "      password_hash: \"" RMQ_GUEST_HASH "\"\n"
    "      tags: [administrator, management]\n"
    "    - {name: dev, password: \"p@ss w\\u00f6rd\"}\n"
    "    - {name: big, password_hash: \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\", hashing_algorithm: rabbit_password_hashing_sha512}\n"
    "  vhosts: [\"/\", prod, \"a b/c\"]\n"
    "  permissions:\n"
    "    - {user: app, vhost: prod, configure: \"^app\\\\.\", write: \".*\", read: \"\"}\n"
    "    - {user: dev, vhost: \"/\", configure: \".*\", write: \".*\", read: \".*\"}\n"
    "  loopback_users: []\n";

/* amqp.memory_high_watermark: RabbitMQ's relative and absolute forms. */
static void test_watermark(void)
{
    static const struct {
        const char *v;
        bool ok;
        double rel;
        uint64_t abs;
    } cases[] = {
        {"0.4", true, 0.4, 0},          {"0.0", true, 0.0, 0},
        {"1.0", true, 1.0, 0},          {".5", false, 0, 0},
        {"1.5", false, 0, 0},           {"0.4x", false, 0, 0},
        {"2GiB", true, -1, 2147483648ull}, {"1500MB", true, -1, 1500000000ull},
        {"1048576", true, -1, 1048576}, {"64KiB", true, -1, 65536},
        {"3k", true, -1, 3000},         {"0", false, 0, 0},
        {"2TB", false, 0, 0},           {"", false, 0, 0},
        {"-1", false, 0, 0},            {"99999999999999999999", false, 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        double rel = 9;
        uint64_t abs = 9;
        char why[200] = "";
        gt_err_t rc = cfg_watermark_parse(cases[i].v, &rel, &abs, why, sizeof(why));
        CU_ASSERT_EQUAL(rc == GT_OK, cases[i].ok);
        if (rc == GT_OK) {
            CU_ASSERT_DOUBLE_EQUAL(rel, cases[i].rel, 1e-9);
            CU_ASSERT_EQUAL(abs, cases[i].abs);
        } else {
            CU_ASSERT(why[0] != '\0');
        }
    }
    cfg_t c;
    cfg_init(&c);
    CU_ASSERT_NOT_EQUAL(load(&c, "amqp:\n  memory_high_watermark: \"1.5\"\n"), GT_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "memory_high_watermark"));
    cfg_free(&c);
    cfg_init(&c);
    CU_ASSERT_EQUAL(load(&c, "amqp:\n  memory_high_watermark: 0.25\n"
                             "  flow_control_bytes: 65536\n"), GT_OK);
    CU_ASSERT_STRING_EQUAL(c.amqp.memory_high_watermark, "0.25");
    CU_ASSERT_EQUAL(c.amqp.flow_control_bytes, 65536);
    cfg_free(&c);
}

static void test_amqp(void)
{
    cfg_t c, d;
    char *pa, *pb;

    cfg_init(&c);
    cfg_init(&d);
    if (load(&c, amqp_yaml) != GT_OK)
        fprintf(stderr, "\n%s\n", err);
    CU_ASSERT_STRING_EQUAL(c.amqp.listen, "127.0.0.1:5673");
    CU_ASSERT_EQUAL(c.amqp.frame_max, 4096);
    CU_ASSERT_EQUAL(c.amqp.heartbeat, 0);
    CU_ASSERT_EQUAL(c.amqp.channel_max, 2047);
    CU_ASSERT_EQUAL(c.amqp.consumer_timeout_ms, 0);
    CU_ASSERT_EQUAL(c.amqp.max_message_size, 536870912);
    CU_ASSERT_EQUAL_FATAL(c.amqp.users.n, 3);
    CU_ASSERT_STRING_EQUAL(c.amqp.users.v[0].name, "app");
    CU_ASSERT_STRING_EQUAL(c.amqp.users.v[0].password_hash, RMQ_GUEST_HASH);
    CU_ASSERT_PTR_NULL(c.amqp.users.v[0].password);
    CU_ASSERT_EQUAL(c.amqp.users.v[0].hashing, CFG_HASH_SHA256);
    CU_ASSERT_EQUAL_FATAL(c.amqp.users.v[0].tags.n, 2);
    CU_ASSERT_STRING_EQUAL(c.amqp.users.v[0].tags.v[1], "management");
    CU_ASSERT_STRING_EQUAL(c.amqp.users.v[1].password, "p@ss w\xc3\xb6rd");
    CU_ASSERT_PTR_NULL(c.amqp.users.v[1].password_hash);
    CU_ASSERT_EQUAL(c.amqp.users.v[1].tags.n, 0);
    CU_ASSERT_EQUAL(c.amqp.users.v[2].hashing, CFG_HASH_SHA512);
    CU_ASSERT_EQUAL_FATAL(c.amqp.vhosts.n, 3);
    CU_ASSERT_STRING_EQUAL(c.amqp.vhosts.v[2], "a b/c");
    CU_ASSERT_EQUAL_FATAL(c.amqp.permissions.n, 2);
    CU_ASSERT_STRING_EQUAL(c.amqp.permissions.v[0].configure, "^app\\.");
    CU_ASSERT_STRING_EQUAL(c.amqp.permissions.v[0].read, "");
    CU_ASSERT_STRING_EQUAL(c.amqp.permissions.v[1].vhost, "/");
    CU_ASSERT_EQUAL(c.amqp.loopback_users.n, 0);
    /* Printed and loaded back: the same config. */
    pa = print_str(&c);
    if (load(&d, pa) != GT_OK)
        fprintf(stderr, "\n%s\n%s\n", pa, err);
    pb = print_str(&d);
    CU_ASSERT_STRING_EQUAL(pa, pb);
    CU_ASSERT_EQUAL(d.amqp.users.n, 3);
    /* A plain password is a secret: printed masked, never as itself. */
    CU_ASSERT_STRING_EQUAL(d.amqp.users.v[1].password, "********");
    CU_ASSERT_PTR_NULL(strstr(pa, "p@ss"));
    /* So is a password hash (it can be attacked offline). */
    CU_ASSERT_STRING_EQUAL(d.amqp.users.v[0].password_hash, "********");
    CU_ASSERT_PTR_NULL(strstr(pa, RMQ_GUEST_HASH));
    CU_ASSERT_PTR_NULL(strstr(pa, "AAAAAAAAAAAA"));
    free(pa);
    free(pb);
    /* Overrides: scalar keys (and the older name) only. */
    CU_ASSERT_EQUAL(cfg_set(&c, "amqp.listen", "off", err, sizeof(err)), GT_OK);
    CU_ASSERT_STRING_EQUAL(c.amqp.listen, "off");
    CU_ASSERT_EQUAL(cfg_set(&c, "server.amqp_listen", "[::1]:1", err, sizeof(err)), GT_OK);
    CU_ASSERT_STRING_EQUAL(c.amqp.listen, "[::1]:1");
    CU_ASSERT_EQUAL(cfg_set(&c, "amqp.heartbeat", "5", err, sizeof(err)), GT_OK);
    CU_ASSERT_EQUAL(c.amqp.heartbeat, 5);
    CU_ASSERT_EQUAL(cfg_set(&c, "amqp.vhosts", "x", err, sizeof(err)), GT_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "amqp.vhosts: a list, can only be declared in the config file");
    CU_ASSERT_EQUAL(cfg_set(&c, "amqp.frame_max", "4095", err, sizeof(err)), GT_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "amqp.frame_max: 4095 is out of range (4096..16777216)");
    cfg_free(&c);
    cfg_free(&d);

    /* Without users: guest may be given permissions. */
    expect_ok("amqp: {vhosts: [a], permissions: [{user: guest, vhost: a, configure: x, "
              "write: x, read: x}]}\n");
    expect_ok("amqp: {users: [], vhosts: [], loopback_users: [guest, app]}\n");
}

static void test_amqp_bridges(void)
{
    cfg_t c;
    gt_err_t rc;

    static const char y[] = "amqp:\n  vhosts: [\"/\", prod]\n  bridges:\n"
                            "    - {exchange: orders, topic: Orders}\n"
                            "    - {vhost: prod, exchange: ev, topic: Ev, exchange_type: topic,"
                            " routing_key: \"property:rk\"}\n";

    cfg_init(&c);
    rc = cfg_load_string(&c, "t.yaml", y, strlen(y), err, sizeof(err));
    CU_ASSERT_EQUAL_FATAL(rc, GT_OK);
    CU_ASSERT_EQUAL_FATAL(c.amqp.bridges.n, 2);
    CU_ASSERT_STRING_EQUAL(c.amqp.bridges.v[0].vhost, "/");
    CU_ASSERT_STRING_EQUAL(c.amqp.bridges.v[0].exchange, "orders");
    CU_ASSERT_STRING_EQUAL(c.amqp.bridges.v[0].exchange_type, "direct");
    CU_ASSERT_STRING_EQUAL(c.amqp.bridges.v[0].topic, "Orders");
    CU_ASSERT_STRING_EQUAL(c.amqp.bridges.v[0].routing_key, "tag");
    CU_ASSERT_STRING_EQUAL(c.amqp.bridges.v[1].vhost, "prod");
    CU_ASSERT_STRING_EQUAL(c.amqp.bridges.v[1].exchange_type, "topic");
    CU_ASSERT_STRING_EQUAL(c.amqp.bridges.v[1].routing_key, "property:rk");
    cfg_free(&c);
}

static void test_amqp_ops(void)
{
    static const char yaml[] =
        "amqp:\n"
        "  vhosts: [\"/\", prod]\n"
        "  queue_policies:\n"
        "    - {queue: orders, rate_limit: 100, burst: 20, retry_delays: [500ms, 1s, 2m, 1h, 1d]}\n"
        "    - {vhost: prod, pattern: \"^app\\\\.\", paused: true}\n"
        "  vhost_limits:\n"
        "    - {vhost: prod, max_message_size: 1000}\n";
    char *pa, *pb;
    cfg_t c, d;
    int64_t ms;

    cfg_init(&c);
    CU_ASSERT_EQUAL_FATAL(cfg_load_string(&c, "t.yaml", yaml, strlen(yaml), err, sizeof(err)),
                          GT_OK);
    CU_ASSERT_EQUAL_FATAL(c.amqp.queue_policies.n, 2);
    CU_ASSERT_STRING_EQUAL(c.amqp.queue_policies.v[0].vhost, "/");
    CU_ASSERT_STRING_EQUAL(c.amqp.queue_policies.v[0].queue, "orders");
    CU_ASSERT_PTR_NULL(c.amqp.queue_policies.v[0].pattern);
    CU_ASSERT_EQUAL(c.amqp.queue_policies.v[0].rate_limit, 100);
    CU_ASSERT_EQUAL(c.amqp.queue_policies.v[0].burst, 20);
    CU_ASSERT_FALSE(c.amqp.queue_policies.v[0].paused);
    CU_ASSERT_EQUAL_FATAL(c.amqp.queue_policies.v[0].retry_delays.n, 5);
    CU_ASSERT_STRING_EQUAL(c.amqp.queue_policies.v[1].pattern, "^app\\.");
    CU_ASSERT_TRUE(c.amqp.queue_policies.v[1].paused);
    CU_ASSERT_EQUAL_FATAL(c.amqp.vhost_limits.n, 1);
    CU_ASSERT_EQUAL(c.amqp.vhost_limits.v[0].max_message_size, 1000);
    /* Durations. */
    CU_ASSERT_EQUAL(cfg_duration_ms("500ms", &ms, NULL, 0), GT_OK);
    CU_ASSERT_EQUAL(ms, 500);
    CU_ASSERT_EQUAL(cfg_duration_ms("2m", &ms, NULL, 0), GT_OK);
    CU_ASSERT_EQUAL(ms, 120000);
    CU_ASSERT_EQUAL(cfg_duration_ms("30d", &ms, NULL, 0), GT_OK);
    CU_ASSERT_EQUAL(ms, 30LL * 86400000);
    CU_ASSERT_EQUAL(cfg_duration_ms("1", &ms, NULL, 0), GT_EINVAL);
    CU_ASSERT_EQUAL(cfg_duration_ms("s", &ms, NULL, 0), GT_EINVAL);
    CU_ASSERT_EQUAL(cfg_duration_ms("-1s", &ms, NULL, 0), GT_EINVAL);
    CU_ASSERT_EQUAL(cfg_duration_ms("99999999999999999999s", &ms, NULL, 0), GT_EINVAL);
    /* Printed and loaded back: the same. */
    pa = print_str(&c);
    cfg_init(&d);
    CU_ASSERT_EQUAL(cfg_load_string(&d, "p.yaml", pa, strlen(pa), err, sizeof(err)), GT_OK);
    pb = print_str(&d);
    CU_ASSERT_STRING_EQUAL(pa, pb);
    free(pa);
    free(pb);
    cfg_free(&c);
    cfg_free(&d);
}

static void test_amqp_invalid(void)
{
    static const struct {
        const char *yaml, *want;
    } bad[] = {
        {"amqp: {frame_max: 4095}", "t.yaml:1: amqp.frame_max: 4095 is out of range "
                                    "(4096..16777216)"},
        {"amqp: {frame_max: 16777217}", "amqp.frame_max: 16777217 is out of range"},
        {"amqp: {heartbeat: -1}", "amqp.heartbeat: -1 is out of range (0..65535)"},
        {"amqp: {heartbeat: 65536}", "amqp.heartbeat: 65536 is out of range"},
        {"amqp: {channel_max: 0}", "amqp.channel_max: 0 is out of range (1..2047)"},
        {"amqp: {channel_max: 2048}", "amqp.channel_max: 2048 is out of range (1..2047)"},
        {"amqp: {consumer_timeout_ms: -5}", "amqp.consumer_timeout_ms: -5 is out of range"},
        {"amqp: {max_message_size: 0}", "amqp.max_message_size: 0 is out of range "
                                        "(1..536870912)"},
        {"amqp: {max_message_size: 536870913}", "amqp.max_message_size: 536870913 is out"},
        {"amqp: {listen: nope}", "amqp.listen: \"nope\" is not a valid HOST:PORT"},
        {"amqp: {lisen: x}", "amqp.lisen: unknown key"},
        {"amqp: {users: x}", "amqp.users: expected a list, got a scalar"},
        {"amqp: {users: [x]}", "amqp.users[0]: expected a mapping (e.g. {name: X}), got a "
                               "scalar"},
        {"amqp: {users: [{password: x}]}", "amqp.users[0].name: required key is missing"},
        {"amqp: {users: [{name: a}]}", "t.yaml:1: amqp.users[0]: give either password_hash "
                                       "or password"},
        {"amqp:\n  users:\n    - {name: a, password: x}\n    - {name: b, password: y, "
         "password_hash: \"" RMQ_GUEST_HASH "\"}\n",
         "t.yaml:4: amqp.users[1]: give either password_hash or password"},
        {"amqp: {users: [{name: a, password_hash: abc}]}",
         "amqp.users[0].password_hash: is not a RabbitMQ password hash"},
        {"amqp: {users: [{name: a, password_hash: \"" RMQ_GUEST_HASH "x\"}]}",
         "amqp.users[0].password_hash: is not a RabbitMQ password hash"},
        {"amqp: {users: [{name: a, password_hash: \"" RMQ_GUEST_HASH "\", "
         "hashing_algorithm: rabbit_password_hashing_sha512}]}",
         "amqp.users[0]: password_hash does not have the length of a SHA-512 hash"},
        {"amqp: {users: [{name: a, password: x, hashing_algorithm: md5}]}",
         "amqp.users[0].hashing_algorithm: \"md5\" is not one of"},
        {"amqp: {users: [{name: a, password: x, passwd: y}]}",
         "amqp.users[0].passwd: unknown key"},
        {"amqp: {users: [{name: a, password: x}, {name: a, password: y}]}",
         "amqp.users[1]: duplicate user name \"a\""},
        {"amqp: {users: [{name: \"\", password: x}]}",
         "amqp.users[0].name: must not be empty"},
        {"amqp: {users: [{name: a, password: x, tags: [[t]]}]}",
         "amqp.users[0].tags[0]: expected a string, got a list"},
        {"amqp: {users: [{name: a, password: x, tags: t}]}",
         "amqp.users[0].tags: expected a list, got a scalar"},
        {"amqp: {vhosts: [\"/\", \"/\"]}", "amqp.vhosts[1]: duplicate value \"/\""},
        {"amqp: {vhosts: [\"\"]}", "amqp.vhosts[0]: a vhost name must not be empty"},
        {"amqp: {vhosts: [~]}", "amqp.vhosts[0]: has no value"},
        {"amqp: {vhosts: \"/\"}", "amqp.vhosts: expected a list, got a scalar"},
        {"amqp: {loopback_users: [{a: b}]}",
         "amqp.loopback_users[0]: expected a string, got a mapping"},
        {"amqp: {permissions: [{user: bob, vhost: /, configure: x, write: x, read: x}]}",
         "amqp.permissions[0]: no user \"bob\" in amqp.users"},
        {"amqp: {users: [{name: bob, password: x}], permissions: [{user: guest, vhost: /, "
         "configure: x, write: x, read: x}]}",
         "amqp.permissions[0]: no user \"guest\" in amqp.users"},
        {"amqp: {permissions: [{user: guest, vhost: v, configure: x, write: x, read: x}]}",
         "amqp.permissions[0]: no vhost \"v\" in amqp.vhosts"},
        {"amqp:\n  permissions:\n"
         "    - {user: guest, vhost: /, configure: x, write: x, read: x}\n"
         "    - {user: guest, vhost: /, configure: y, write: y, read: y}\n",
         "t.yaml:4: amqp.permissions[1]: user \"guest\" already has permissions on vhost "
         "\"/\" (amqp.permissions[0])"},
        {"amqp: {permissions: [{user: guest, vhost: /, configure: x, write: x}]}",
         "amqp.permissions[0].read: required key is missing"},
        {"amqp: {permissions: [{user: guest, vhost: /, configure: x, write: x, read: \"(\"}]}",
         "amqp.permissions[0].read: \"(\" is not a valid POSIX extended regular expression"},
        {"amqp: {permissions: [{user: guest, vhost: /, configure: \"a{2,1}\", write: x, "
         "read: x}]}",
         "amqp.permissions[0].configure: \"a{2,1}\" is not a valid POSIX extended"},
        {"amqp: {queue_policies: [{queue: a, pattern: b}]}",
         "amqp.queue_policies[0]: give either queue or pattern"},
        {"amqp: {queue_policies: [{paused: true}]}",
         "amqp.queue_policies[0]: give either queue or pattern"},
        {"amqp: {queue_policies: [{queue: a, vhost: v}]}",
         "amqp.queue_policies[0]: no vhost \"v\" in amqp.vhosts"},
        {"amqp: {queue_policies: [{queue: a, rate_limit: -1}]}",
         "amqp.queue_policies[0].rate_limit: -1 is out of range (0..1000000)"},
        {"amqp: {queue_policies: [{queue: a, retry_delays: [1s, 5x]}]}",
         "amqp.queue_policies[0].retry_delays[1]: \"5x\" is not a duration"},
        {"amqp: {queue_policies: [{queue: a, retry_delays: [0s]}]}",
         "amqp.queue_policies[0].retry_delays[0]: \"0s\" is not a duration"},
        {"amqp: {queue_policies: [{queue: a, retry_delays: [31d]}]}",
         "amqp.queue_policies[0].retry_delays[0]: \"31d\" is not a duration"},
        {"amqp: {queue_policies: [{pattern: \"(\"}]}",
         "amqp.queue_policies[0].pattern: \"(\" is not a valid POSIX extended"},
        {"amqp: {vhost_limits: [{vhost: v, max_message_size: 5}]}",
         "amqp.vhost_limits[0]: no vhost \"v\" in amqp.vhosts"},
        {"amqp: {vhost_limits: [{vhost: /, max_message_size: 5}, {vhost: /}]}",
         "amqp.vhost_limits[1]: vhost \"/\" already has limits (amqp.vhost_limits[0])"},
        {"amqp: {vhost_limits: [{vhost: /, max_message_size: 536870913}]}",
         "amqp.vhost_limits[0].max_message_size: 536870913 is out of range"},
        {"server: {amqp_listen: \"127.0.0.1:1\"}\namqp: {listen: \"127.0.0.1:2\"}\n",
         "t.yaml:2: amqp.listen: also set as server.amqp_listen at line 1; set it once"},
        {"amqp: {listen: \"127.0.0.1:2\"}\nserver: {amqp_listen: \"127.0.0.1:1\"}\n",
         "t.yaml:2: server.amqp_listen: also set as amqp.listen at line 1; set it once"},
        {"amqp: {bridges: [{exchange: x, topic: T, vhost: v}]}",
         "amqp.bridges[0]: no vhost \"v\" in amqp.vhosts"},
        {"amqp: {bridges: [{exchange: x, topic: T}, {exchange: y, topic: T}]}",
         "amqp.bridges[1]: exchange \"y\" or topic \"T\" is already bridged (amqp.bridges[0])"},
        {"amqp: {bridges: [{exchange: x, topic: T}, {exchange: x, topic: U}]}",
         "amqp.bridges[1]: exchange \"x\" or topic \"U\" is already bridged"},
        {"amqp: {bridges: [{exchange: x, topic: T, routing_key: key}]}",
         "amqp.bridges[0].routing_key: must be \"tag\" or \"property:NAME\""},
        {"amqp: {bridges: [{exchange: x, topic: T, routing_key: \"property:\"}]}",
         "amqp.bridges[0].routing_key: must be \"tag\" or \"property:NAME\""},
        {"amqp: {bridges: [{exchange: amq.direct, topic: T}]}",
         "amqp.bridges[0].exchange: must be 1 to 255 bytes and not start with \"amq.\""},
        {"amqp: {bridges: [{exchange: x, topic: \"a b\"}]}", "amqp.bridges[0].topic:"},
        {"amqp: {bridges: [{exchange: x, topic: T, exchange_type: x-delayed}]}",
         "amqp.bridges[0].exchange_type:"},
        {"amqp: {bridges: [{topic: T}]}", "amqp.bridges[0].exchange: required key is missing"},
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_fail_at(bad[i].yaml, bad[i].want, (int)i);
}

/* ---- API behaviour ---------------------------------------------------- */

static void test_cfg_set(void)
{
    cfg_t c;
    char *before, *after;

    cfg_init(&c);
    CU_ASSERT_EQUAL(cfg_set(&c, "server.grpc_listen", "127.0.0.1:9000", err,
                            sizeof(err)), GT_OK);
    CU_ASSERT_STRING_EQUAL(c.server.grpc_listen, "127.0.0.1:9000");
    CU_ASSERT_EQUAL(cfg_set(&c, "store.data_dir", "/tmp/g d", err, sizeof(err)),
                    GT_OK);
    CU_ASSERT_STRING_EQUAL(c.store.data_dir, "/tmp/g d");
    CU_ASSERT_EQUAL(cfg_set(&c, "log.level", "DEBUG", err, sizeof(err)), GT_OK);
    CU_ASSERT_STRING_EQUAL(c.log.level, "debug");
    CU_ASSERT_EQUAL(cfg_set(&c, "server.threads", "16", err, sizeof(err)), GT_OK);
    CU_ASSERT_EQUAL(c.server.threads, 16);
    CU_ASSERT_EQUAL(cfg_set(&c, "store.segment_size", "8192", NULL, 0), GT_OK);
    CU_ASSERT_EQUAL(c.store.segment_size, 8192);

    before = print_str(&c);
    CU_ASSERT_EQUAL(cfg_set(&c, "server.grpc_listen", "nope", err, sizeof(err)),
                    GT_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "server.grpc_listen: \"nope\" is not a valid "
                                "HOST:PORT address (missing \":PORT\")");
    CU_ASSERT_EQUAL(cfg_set(&c, "server.threads", "x", err, sizeof(err)), GT_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "server.threads: \"x\" is not an integer");
    CU_ASSERT_EQUAL(cfg_set(&c, "server.threads", "1000", err, sizeof(err)),
                    GT_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "server.threads: 1000 is out of range (0..256)");
    CU_ASSERT_EQUAL(cfg_set(&c, "log.level", "loud", err, sizeof(err)), GT_EINVAL);
    CU_ASSERT_EQUAL(cfg_set(&c, "store.data_dir", "", err, sizeof(err)), GT_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "store.data_dir: has no value");
    CU_ASSERT_EQUAL(cfg_set(&c, "server.nope", "1", err, sizeof(err)), GT_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "server.nope: unknown key");
    CU_ASSERT_EQUAL(cfg_set(&c, "threads", "1", err, sizeof(err)), GT_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "threads: unknown key");
    CU_ASSERT_EQUAL(cfg_set(&c, "server.threads.x", "1", err, sizeof(err)),
                    GT_EINVAL);
    CU_ASSERT_EQUAL(cfg_set(&c, "topics.name", "T", err, sizeof(err)), GT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "can only be declared in the config file"));
    after = print_str(&c);
    CU_ASSERT_STRING_EQUAL(before, after); /* failed sets change nothing */
    free(before);
    free(after);
    cfg_free(&c);
}

static void test_round_trip(void)
{
    cfg_t a, b;
    char *pa, *pb;

    cfg_init(&a);
    cfg_init(&b);
    CU_ASSERT_EQUAL_FATAL(load(&a, full_yaml), GT_OK);
    pa = print_str(&a);
    CU_ASSERT_EQUAL(load(&b, pa), GT_OK);
    if (err[0] != '\0')
        fprintf(stderr, "\n%s\n%s\n", pa, err);
    pb = print_str(&b);
    CU_ASSERT_STRING_EQUAL(pa, pb);
    CU_ASSERT_STRING_EQUAL(a.store.data_dir, b.store.data_dir);
    CU_ASSERT_EQUAL(a.store.segment_size, b.store.segment_size);
    CU_ASSERT_EQUAL_FATAL(b.n_topics, a.n_topics);
    for (size_t i = 0; i < a.n_topics; i++) {
        CU_ASSERT_STRING_EQUAL(a.topics[i].name, b.topics[i].name);
        CU_ASSERT_EQUAL(a.topics[i].type, b.topics[i].type);
        CU_ASSERT_EQUAL(a.topics[i].queues, b.topics[i].queues);
    }
    CU_ASSERT_EQUAL_FATAL(b.n_groups, a.n_groups);
    for (size_t i = 0; i < a.n_groups; i++) {
        CU_ASSERT_STRING_EQUAL(a.groups[i].name, b.groups[i].name);
        CU_ASSERT_EQUAL(a.groups[i].fifo, b.groups[i].fifo);
        CU_ASSERT_EQUAL(a.groups[i].consume_from_last, b.groups[i].consume_from_last);
        CU_ASSERT_EQUAL(a.groups[i].max_delivery_attempts,
                        b.groups[i].max_delivery_attempts);
    }
    free(pa);
    free(pb);
    /* The defaults (empty lists) round-trip too. */
    cfg_free(&a);
    cfg_init(&a);
    pa = print_str(&a);
    CU_ASSERT_EQUAL(load(&b, pa), GT_OK);
    check_defaults(&b);
    free(pa);
    cfg_free(&a);
    cfg_free(&b);
}

static void test_failed_load_keeps_cfg(void)
{
    static const char *const bad[] = {
        "server: {threads: 3}\ntopics: [{name: T1}, {name: T1}]\n",
        "server: {threads: 3}\ngroups: [{name: G}, {name: \"a b\"}]\n",
        "topics: [{name: OK}]\nstore: {flsuh: x}\n",
        "server: {threads: [\n",
    };
    cfg_t c;
    char *before, *after;

    cfg_init(&c);
    CU_ASSERT_EQUAL_FATAL(load(&c, full_yaml), GT_OK);
    before = print_str(&c);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CU_ASSERT_EQUAL(load(&c, bad[i]), GT_EINVAL);
        after = print_str(&c);
        CU_ASSERT_STRING_EQUAL(before, after);
        free(after);
    }
    CU_ASSERT_EQUAL(cfg_load_file(&c, "/nonexistent/gantry.yaml", err,
                                  sizeof(err)), GT_EIO);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "/nonexistent/gantry.yaml: cannot open"));
    after = print_str(&c);
    CU_ASSERT_STRING_EQUAL(before, after);
    free(after);
    free(before);
    cfg_free(&c);
}

static void test_load_file(void)
{
    char path[] = "/tmp/test_cfg_XXXXXX";
    int fd = mkstemp(path);
    cfg_t c;
    FILE *f;

    CU_ASSERT_FATAL(fd >= 0);
    f = fdopen(fd, "w");
    fputs("server:\n  threads: 2\n  thread: 3\n", f);
    fclose(f);
    cfg_init(&c);
    CU_ASSERT_EQUAL(cfg_load_file(&c, path, err, sizeof(err)), GT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, ":3: server.thread: unknown key"));
    CU_ASSERT_EQUAL(strncmp(err, path, strlen(path)), 0);
    CU_ASSERT_EQUAL(cfg_load_file(&c, "/tmp", err, sizeof(err)), GT_EIO);
    f = fopen(path, "w");
    fputs("server:\n  threads: 2\n", f);
    fclose(f);
    CU_ASSERT_EQUAL(cfg_load_file(&c, path, NULL, 0), GT_OK);
    CU_ASSERT_EQUAL(c.server.threads, 2);
    unlink(path);
    cfg_free(&c);
}

/* 40,000 nested flow sequences (80 KB) took 7-10 s inside libyaml
 * (quadratic); block nesting likewise.  Refused early, naming the line. */
static void test_deep_nesting(void)
{
    enum { DEEP = 40000 };
    char *y = malloc(2 * DEEP + 64);
    char *b;
    size_t n = 0;

    CU_ASSERT_FATAL(y != NULL);
    n += (size_t)sprintf(y, "server:\n  threads: 1\nx: ");
    memset(y + n, '[', DEEP);
    memset(y + n + DEEP, ']', DEEP);
    y[n + 2 * DEEP] = '\0';
    expect_fail(y, "t.yaml:3: nesting deeper than 32 levels");
    /* Mappings in flow style. */
    n = (size_t)sprintf(y, "a: ");
    for (int i = 0; i < 100; i++)
        n += (size_t)sprintf(y + n, "{b: ");
    strcpy(y + n, "1");
    expect_fail(y, "t.yaml:1: nesting deeper than 32 levels");
    free(y);
    /* Block style: one more level per line. */
    b = malloc(40 * 41 + 64);
    CU_ASSERT_FATAL(b != NULL);
    n = 0;
    for (int i = 0; i < 40; i++)
        n += (size_t)sprintf(b + n, "%*sk%d:\n", i, "", i);
    expect_fail(b, "t.yaml:33: nesting deeper than 32 levels");
    free(b);
    /* The real schema is far shallower: a normal file loads. */
    expect_ok("topics:\n  - {name: T, queues: 2}\n");
}

/* A file above the size cap is refused before it is parsed. */
static void test_file_too_large(void)
{
    char path[] = "/tmp/test_cfg_XXXXXX";
    int fd = mkstemp(path);
    cfg_t c;
    FILE *f;

    CU_ASSERT_FATAL(fd >= 0);
    f = fdopen(fd, "w");
    fputs("server:\n  threads: 2\n", f);
    for (int i = 0; i < 9 * 1024; i++)
        fprintf(f, "# %01020d\n", i); /* 1 KiB per line, 9 MiB */
    fclose(f);
    cfg_init(&c);
    CU_ASSERT_EQUAL(cfg_load_file(&c, path, err, sizeof(err)), GT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "larger than 8388608 bytes"));
    CU_ASSERT_EQUAL(strncmp(err, path, strlen(path)), 0);
    unlink(path);
    cfg_free(&c);
}

static void test_shipped_gantry_yaml(void)
{
    cfg_t c;

    cfg_init(&c);
    CU_ASSERT_EQUAL_FATAL(cfg_load_file(&c, GANTRY_SOURCE_DIR "/config/gantry.yaml",
                                        err, sizeof(err)), GT_OK);
    CU_ASSERT_STRING_EQUAL(c.server.grpc_listen, "0.0.0.0:8081");
    CU_ASSERT_STRING_EQUAL(c.server.http_listen, "0.0.0.0:5557");
    CU_ASSERT_STRING_EQUAL(c.amqp.listen, "0.0.0.0:5672");
    CU_ASSERT_STRING_EQUAL(c.store.mode, "local");
    CU_ASSERT_STRING_EQUAL(c.store.flush, "sync");
    CU_ASSERT_STRING_EQUAL(c.store.data_dir, "data");
    CU_ASSERT_EQUAL_FATAL(c.n_topics, 4);
    CU_ASSERT_STRING_EQUAL(c.topics[0].name, "TopicTest");
    CU_ASSERT_EQUAL(c.topics[1].type, CFG_TOPIC_FIFO);
    CU_ASSERT_EQUAL(c.topics[2].type, CFG_TOPIC_DELAY);
    CU_ASSERT_EQUAL(c.topics[3].type, CFG_TOPIC_TRANSACTION);
    CU_ASSERT_EQUAL_FATAL(c.n_groups, 2);
    CU_ASSERT_STRING_EQUAL(c.groups[1].name, "FifoGroup");
    CU_ASSERT_TRUE(c.groups[1].fifo);
    cfg_free(&c);
}

static void test_tables_and_doc(void)
{
    char *doc = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&doc, &len);
    char want[128];

    cfg_write_doc(f);
    fclose(f);
    for (size_t i = 0; i < cfg_n_sections; i++) {
        const cfg_section_t *sec = &cfg_sections[i];

        CU_ASSERT(sec->n_keys <= 32); /* the loader's seen-bitmask */
        CU_ASSERT_PTR_NOT_NULL(sec->doc);
        if (sec->is_list) {
            CU_ASSERT_STRING_EQUAL(sec->keys[0].key, "name");
            CU_ASSERT_PTR_NULL(sec->keys[0].def);
        }
        for (size_t k = 0; k < sec->n_keys; k++) {
            const cfg_desc_t *d = &sec->keys[k];

            snprintf(want, sizeof(want), "| `%s%s%s` |", sec->name,
                     sec->is_list ? "[]." : ".", d->key);
            CU_ASSERT_PTR_NOT_NULL(strstr(doc, want));
            CU_ASSERT_PTR_NOT_NULL(d->doc);
            if (!sec->is_list)
                CU_ASSERT_PTR_NOT_NULL(d->def);
        }
    }
    CU_ASSERT_PTR_NOT_NULL(strstr(doc, "`TBW102`"));
    CU_ASSERT_PTR_NOT_NULL(strstr(doc, "`CID_RMQ_SYS_`"));
    free(doc);
}

/* The auth section: users and ACL entries, secrets masked in print,
 * references checked across entries (and with amqp). */
static void test_auth(void)
{
    cfg_t c;
    char *pa;

    cfg_init(&c);
    CU_ASSERT_FALSE(c.auth.enabled);
    CU_ASSERT_EQUAL(c.auth.max_clock_skew_s, 900);
    CU_ASSERT_EQUAL_FATAL(load(&c, "auth:\n  enabled: true\n  max_clock_skew_s: 60\n"
                                   "  users:\n"
                                   "    - {access_key: rk, secret_key: \"top-s3cret\"}\n"
                                   "    - {access_key: boss, secret_key: \"x\", admin: true}\n"
                                   "  acls:\n"
                                   "    - {user: rk, resource: \"Topic:orders*\", actions: [pub, "
                                   "Sub], source_ips: [\"10.0.0.0/8\", \"::1\"]}\n"
                                   "    - {user: rk, resource: \"*\", actions: [All], "
                                   "decision: deny}\n"),
                          GT_OK);
    CU_ASSERT_TRUE(c.auth.enabled);
    CU_ASSERT_EQUAL(c.auth.max_clock_skew_s, 60);
    CU_ASSERT_EQUAL_FATAL(c.auth.users.n, 2);
    CU_ASSERT_STRING_EQUAL(c.auth.users.v[0].secret_key, "top-s3cret");
    CU_ASSERT_TRUE(c.auth.users.v[1].admin);
    CU_ASSERT_EQUAL_FATAL(c.auth.acls.n, 2);
    CU_ASSERT_FALSE(c.auth.acls.v[0].deny);
    CU_ASSERT_TRUE(c.auth.acls.v[1].deny);
    CU_ASSERT_EQUAL(c.auth.acls.v[0].source_ips.n, 2);
    pa = print_str(&c);
    CU_ASSERT_PTR_NULL(strstr(pa, "top-s3cret"));
    CU_ASSERT_PTR_NOT_NULL(strstr(pa, "secret_key: \"********\""));
    free(pa);
    cfg_free(&c);
    expect_fail("auth: {users: [{access_key: \"a b\", secret_key: x}]}",
                "auth.users[0].access_key: must be printable ASCII without spaces");
    expect_fail("auth: {users: [{access_key: a}]}", "auth.users[0].secret_key: required key");
    expect_fail("auth: {users: [{access_key: a, secret_key: x}, {access_key: a, secret_key: y}]}",
                "auth.users[1]");
    expect_fail("auth: {users: [{access_key: a, secret_key: x}], acls: [{user: b, resource: "
                "\"Topic:t\", actions: [Pub]}]}",
                "auth.acls[0]: no user \"b\" in auth.users");
    expect_fail("auth: {users: [{access_key: a, secret_key: x}], acls: [{user: a, resource: "
                "\"Topic:t\"}]}",
                "auth.acls[0]: actions: give at least one");
    expect_fail("auth: {users: [{access_key: a, secret_key: x}], acls: [{user: a, resource: "
                "\"Queue:t\", actions: [Pub]}]}",
                "auth.acls[0].resource: must be \"Topic:NAME\"");
    expect_fail("auth: {users: [{access_key: a, secret_key: x}], acls: [{user: a, resource: "
                "\"Topic:\", actions: [Pub]}]}",
                "auth.acls[0].resource");
    expect_fail("auth: {users: [{access_key: a, secret_key: x}], acls: [{user: a, resource: "
                "\"Topic:a*b\", actions: [Pub]}]}",
                "auth.acls[0].resource");
    expect_fail("auth: {users: [{access_key: a, secret_key: x}], acls: [{user: a, resource: "
                "\"*\", actions: [Publish]}]}",
                "auth.acls[0].actions[0]: must be one of Pub");
    expect_fail("auth: {users: [{access_key: a, secret_key: x}], acls: [{user: a, resource: "
                "\"*\", actions: [Pub], decision: maybe}]}",
                "auth.acls[0].decision");
    expect_fail("auth: {users: [{access_key: a, secret_key: x}], acls: [{user: a, resource: "
                "\"*\", actions: [Pub], source_ips: [\"10.0.0.0/33\"]}]}",
                "auth.acls[0].source_ips[0]: must be an IPv4 or IPv6 address");
    expect_fail("auth: {max_clock_skew_s: 0}", "auth.max_clock_skew_s: 0 is out of range");
    expect_fail("auth: {users: [{access_key: app, secret_key: x}]}\n"
                "amqp: {users: [{name: app, password: y}]}",
                "auth.users[0]: user \"app\" is also in amqp.users");
    /* amqp.permissions may name an auth user; guest is no default then. */
    expect_ok("auth: {users: [{access_key: rk, secret_key: x}]}\n"
              "amqp: {permissions: [{user: rk, vhost: /, configure: x, write: x, read: x}]}");
    expect_fail("auth: {users: [{access_key: rk, secret_key: x}]}\n"
                "amqp: {permissions: [{user: guest, vhost: /, configure: x, write: x, read: x}]}",
                "amqp.permissions[0]: no user \"guest\"");
}

/* store.endpoints: one gantry-store node, not a list of failovers (its
 * data is not replicated): a second entry is refused, not ignored. */
static void test_store_endpoints(void)
{
    cfg_t c;

    cfg_init(&c);
    CU_ASSERT_EQUAL(load(&c, "store: {mode: remote, endpoints: [\"10.0.0.1:10911\"]}\n"), GT_OK);
    CU_ASSERT_EQUAL(c.store.endpoints.n, 1);
    cfg_free(&c);
    expect_fail("store:\n  mode: remote\n  endpoints:\n    - \"10.0.0.1:10911\"\n"
                "    - \"10.0.0.2:10911\"\n",
                "t.yaml:5: store.endpoints: 2 entries; give exactly one");
}

int main(void)
{
    static const struct {
        const char *name;
        CU_TestFunc fn;
    } tests[] = {
        {"defaults", test_defaults},
        {"block style", test_block_style},
        {"flow style", test_flow_style},
        {"bad YAML syntax", test_syntax_error},
        {"unknown key", test_unknown_key},
        {"duplicate key", test_duplicate_key},
        {"wrong type", test_wrong_type},
        {"out of range", test_out_of_range},
        {"store.index_mem_entries", test_index_mem_entries},
        {"bad enum", test_bad_enum},
        {"bad listen address", test_bad_listen},
        {"amqp section", test_amqp},
        {"auth section", test_auth},
        {"amqp section: invalid values named", test_amqp_invalid},
        {"amqp.bridges: parsed with defaults", test_amqp_bridges},
        {"amqp section: queue policies and vhost limits", test_amqp_ops},
        {"bad topic name", test_bad_topic_name},
        {"bad group name", test_bad_group_name},
        {"duplicate names, missing name", test_duplicates_and_missing_name},
        {"cfg_set", test_cfg_set},
        {"print/reload round trip", test_round_trip},
        {"failed load keeps cfg", test_failed_load_keeps_cfg},
        {"cfg_load_file", test_load_file},
        {"amqp.memory_high_watermark forms", test_watermark},
        {"deep nesting refused", test_deep_nesting},
        {"store.endpoints: one node", test_store_endpoints},
        {"file size cap", test_file_too_large},
        {"config/gantry.yaml loads", test_shipped_gantry_yaml},
        {"tables and generated doc", test_tables_and_doc},
    };
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    suite = CU_add_suite("config", NULL, NULL);
    if (suite == NULL)
        goto out;
    for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)
        if (CU_add_test(suite, tests[i].name, tests[i].fn) == NULL)
            goto out;
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
out:;
    int rc = CU_get_number_of_failures() != 0 || CU_get_error();
    CU_cleanup_registry();
    return rc;
}
