/* The descriptor tables: every config key, once.
 *
 * Loading, validation, cfg_set() overrides, cfg_print() and the generated
 * reference docs/config.md all read these tables, so adding a key here is
 * the whole job (plus the field in cfg_t).  Also here: the value checks that
 * the tables point to (HOST:PORT, topic and group names).
 *
 * Name rules follow Apache RocketMQ: TopicValidator (charset
 * ^[%|a-zA-Z0-9_-]+$, 127 characters, the system topic set and the rmq_sys_
 * prefix) and MixAll (built-in groups, the CID_RMQ_SYS_ prefix, the %RETRY%
 * and %DLQ% topics it derives from group names). */
#include "cfg_int.h"
#include "gt_addr.h"
#include "st.h" /* the store's reserved names */

#include <stdio.h>
#include <string.h>

/* ---- value checks ---------------------------------------------------- */

static gt_err_t cfg_check_nonempty(const char *v, char *why, size_t whylen)
{
    if (v[0] != '\0')
        return GT_OK;
    snprintf(why, whylen, "must not be empty");
    return GT_EINVAL;
}

static gt_err_t cfg_check_listen(const char *v, char *why, size_t whylen)
{
    char q[96];
    const char *problem;
    gt_hostport_t hp;

    if (gt_hostport_parse(v, 0, &hp, &problem) == GT_OK)
        return GT_OK;
    snprintf(why, whylen, "%s is not a valid HOST:PORT address (%s)",
             cfg_msg_quote(q, sizeof(q), v, strlen(v)), problem);
    return GT_EINVAL;
}

/* An optional listener: "" or "off" disables it. */
static gt_err_t cfg_check_listen_opt(const char *v, char *why, size_t whylen)
{
    if (v[0] == '\0' || strcmp(v, "off") == 0)
        return GT_OK;
    return cfg_check_listen(v, why, whylen);
}

/* ---- topic and group names ------------------------------------------- */

const char *const cfg_reserved_topics[] = {
    "TBW102",
    "SCHEDULE_TOPIC_XXXX",
    "BenchmarkTest",
    "RMQ_SYS_TRANS_HALF_TOPIC",
    "RMQ_SYS_TRANS_OP_HALF_TOPIC",
    "RMQ_SYS_TRACE_TOPIC",
    "TRANS_CHECK_MAX_TIME_TOPIC",
    "SELF_TEST_TOPIC",
    "OFFSET_MOVED_EVENT",
    NULL,
};

/* %RETRY%<group> and %DLQ%<group> are created by the proxy for each group;
 * %LMQ% marks RocketMQ's light message queues; %SYS% names are the store's
 * own (st.h). */
const char *const cfg_reserved_topic_prefixes[] = {
    "rmq_sys_", "RMQ_SYS_", ST_RETRY_PREFIX, ST_DLQ_PREFIX, "%LMQ%",
    ST_SYS_PREFIX, NULL,
};

const char *const cfg_reserved_groups[] = {
    "DEFAULT_CONSUMER",
    "DEFAULT_PRODUCER",
    "TOOLS_CONSUMER",
    "FILTERSRV_CONSUMER",
    "SCHEDULE_CONSUMER",
    "__MONITOR_CONSUMER",
    "CLIENT_INNER_PRODUCER",
    "SELF_TEST_P_GROUP",
    "SELF_TEST_C_GROUP",
    "CID_ONS-HTTP-PROXY",
    "CID_ONSAPI_PERMISSION",
    "CID_ONSAPI_OWNER",
    "CID_ONSAPI_PULL",
    NULL,
};

const char *const cfg_reserved_group_prefixes[] = {"CID_RMQ_SYS_", ST_SYS_PREFIX,
                                                    NULL};

static bool cfg_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '%' || c == '|' || c == '_' ||
           c == '-';
}

/* The name quoted for an error message (formatted only on the error
 * paths: names are checked on every request). */
#define CFG_Q(q, name, len) cfg_msg_quote(q, sizeof(q), name, len)

static gt_err_t cfg_name_check(const char *name, const char *what,
                               size_t max, const char *const *reserved,
                               const char *const *prefixes, char *why,
                               size_t whylen)
{
    char q[96];
    size_t len = strlen(name), i;
    char dummy[1];

    if (why == NULL) {
        why = dummy;
        whylen = sizeof(dummy);
    }
    if (len == 0) {
        snprintf(why, whylen, "%s name must not be empty", what);
        return GT_EINVAL;
    }
    if (len > max) {
        snprintf(why, whylen, "%s is not a valid %s name (%zu characters, at "
                 "most %zu)", CFG_Q(q, name, len), what, len, max);
        return GT_EINVAL;
    }
    for (i = 0; i < len; i++) {
        if (!cfg_name_char(name[i])) {
            snprintf(why, whylen, "%s is not a valid %s name (allowed: "
                     "^[%%|a-zA-Z0-9_-]+$)", CFG_Q(q, name, len), what);
            return GT_EINVAL;
        }
    }
    for (i = 0; reserved[i] != NULL; i++) {
        if (strcmp(name, reserved[i]) == 0) {
            snprintf(why, whylen, "%s is a reserved system %s name",
                     CFG_Q(q, name, len), what);
            return GT_EINVAL;
        }
    }
    for (i = 0; prefixes[i] != NULL; i++) {
        if (strncmp(name, prefixes[i], strlen(prefixes[i])) == 0) {
            snprintf(why, whylen, "%s is a reserved system %s name (prefix "
                     "%s)", CFG_Q(q, name, len), what, prefixes[i]);
            return GT_EINVAL;
        }
    }
    return GT_OK;
}

gt_err_t cfg_topic_name_check(const char *name, char *why, size_t whylen)
{
    return cfg_name_check(name, "topic", CFG_TOPIC_NAME_MAX,
                          cfg_reserved_topics, cfg_reserved_topic_prefixes,
                          why, whylen);
}

gt_err_t cfg_group_name_check(const char *name, char *why, size_t whylen)
{
    return cfg_name_check(name, "group", CFG_GROUP_NAME_MAX,
                          cfg_reserved_groups, cfg_reserved_group_prefixes,
                          why, whylen);
}

/* ---- the tables ------------------------------------------------------ */

static const char *const cfg_levels[] = {"trace", "debug", "info", "warn",
                                         "error", "off",   NULL};
static const char *const cfg_modes[] = {"local", "remote", NULL};
static const char *const cfg_flushes[] = {"sync", "async", NULL};
/* Index order matches cfg_topic_type_t. */
static const char *const cfg_topic_types[] = {
    "NORMAL", "FIFO", "DELAY", "TRANSACTION", "MIXED", NULL};
/* Index 1 ("last") sets consume_from_last. */
static const char *const cfg_consume_from[] = {"first", "last", NULL};

#define GIB ((int64_t)1 << 30)

static const cfg_desc_t cfg_server_keys[] = {
    {"grpc_listen", CFG_T_STR, CFG_FIELD(cfg_t, server.grpc_listen),
     "0.0.0.0:8081", 0, 0, NULL, cfg_check_listen, "HOST:PORT",
     "Address of the gRPC endpoint the RocketMQ 5 SDKs connect to."},
    {"http_listen", CFG_T_STR, CFG_FIELD(cfg_t, server.http_listen),
     "0.0.0.0:5557", 0, 0, NULL, cfg_check_listen, "HOST:PORT",
     "Address of the HTTP endpoint (health, readiness, metrics, admin API)."},
    {"amqp_listen", CFG_T_STR, CFG_FIELD(cfg_t, server.amqp_listen),
     "0.0.0.0:5672", 0, 0, NULL, cfg_check_listen_opt, "HOST:PORT",
     "Address of the AMQP 0-9-1 gateway; \"\" or \"off\" disables it."},
    {"threads", CFG_T_INT, CFG_FIELD(cfg_t, server.threads), "0", 0, 256,
     NULL, NULL, NULL,
     "Completion-queue worker threads; 0 means one per CPU core."},
    {"shutdown_timeout_ms", CFG_T_INT,
     CFG_FIELD(cfg_t, server.shutdown_timeout_ms), "4000", 100, 60000, NULL,
     NULL, NULL,
     "On SIGTERM/SIGINT, how long in-flight calls may take to finish before "
     "they are cancelled."},
    {"auto_create_topics", CFG_T_BOOL,
     CFG_FIELD(cfg_t, server.auto_create_topics), "false", 0, 0, NULL, NULL,
     NULL,
     "Create a topic when a client first uses an unknown one, "
     "instead of refusing it."},
    {"max_inflight_bytes", CFG_T_INT,
     CFG_FIELD(cfg_t, server.max_inflight_bytes), "134217728", 1 << 20,
     64 * GIB, NULL, NULL, NULL,
     "Admission control: request bytes in flight (received or being "
     "received, not yet answered; counted twice, for the copies a request "
     "needs) in the whole server. A request that would pass it is answered "
     "TOO_MANY_REQUESTS (42900), if possible without being read, unless "
     "nothing else is in flight. Small requests (up to 64 KiB) may go a "
     "sixteenth past it, so that clients of small requests are served while "
     "large ones fill it. The gRPC layer's own buffers get a memory "
     "quota of the same size: past it the layer cancels streams with "
     "RESOURCE_EXHAUSTED (default 128 MiB)."},
    {"max_conn_inflight_bytes", CFG_T_INT,
     CFG_FIELD(cfg_t, server.max_conn_inflight_bytes), "67108864", 1 << 20,
     64 * GIB, NULL, NULL, NULL,
     "The same bound for one client connection (default 64 MiB)."},
};

static const cfg_desc_t cfg_log_keys[] = {
    {"level", CFG_T_CHOICE, CFG_FIELD(cfg_t, log.level), "info", 0, 0,
     cfg_levels, NULL, NULL, "Lowest level that is logged."},
};

static const cfg_desc_t cfg_store_keys[] = {
    {"mode", CFG_T_CHOICE, CFG_FIELD(cfg_t, store.mode), "local", 0, 0,
     cfg_modes, NULL, NULL,
     "`local`: the embedded store keeps messages in `data_dir`; `remote`: "
     "messages live on `gantry-store` nodes and this process keeps none."},
    {"data_dir", CFG_T_STR, CFG_FIELD(cfg_t, store.data_dir), "data", 0, 0,
     NULL, cfg_check_nonempty, "path",
     "Directory of the local store; a relative path is taken from the "
     "working directory."},
    {"flush", CFG_T_CHOICE, CFG_FIELD(cfg_t, store.flush), "sync", 0, 0,
     cfg_flushes, NULL, NULL,
     "`sync`: a send is acknowledged after its data is fsynced; `async`: "
     "after it is written, with an fsync every `flush_interval_ms`."},
    {"flush_interval_ms", CFG_T_INT,
     CFG_FIELD(cfg_t, store.flush_interval_ms), "200", 1, 60000, NULL, NULL,
     NULL, "Interval between fsyncs in `async` mode."},
    {"segment_size", CFG_T_INT, CFG_FIELD(cfg_t, store.segment_size),
     "1073741824", 4096, 64 * GIB, NULL, NULL, NULL,
     "Size in bytes of one commit-log segment file."},
    {"retention_hours", CFG_T_INT, CFG_FIELD(cfg_t, store.retention_hours),
     "72", 1, 87600, NULL, NULL, NULL,
     "Commit-log segments older than this are deleted once no state "
     "refers to them."},
    {"index_mem_entries", CFG_T_INT,
     CFG_FIELD(cfg_t, store.index_mem_entries), "65536", 16, 1 << 24, NULL,
     NULL, NULL,
     "Entries of the message id / key index kept in memory (24 bytes each "
     "plus 4 per bucket) before they are sorted into a run file on disk; "
     "up to about twice this many are in memory at once."},
};

static const cfg_desc_t cfg_message_keys[] = {
    {"max_delay_ms", CFG_T_INT, CFG_FIELD(cfg_t, message.max_delay_ms),
     "86400000", 1000, 7 * 86400000, NULL, NULL, NULL,
     "Farthest a delayed message's delivery time may be ahead of now; "
     "further is refused with ILLEGAL_DELIVERY_TIME (default 1 day, at most "
     "7)."},
    {"max_batch_bytes", CFG_T_INT, CFG_FIELD(cfg_t, message.max_batch_bytes),
     "33554432", 4 << 20, 1 << 30, NULL, NULL, NULL,
     "Largest total body size of one SendMessage batch; a larger batch is "
     "refused with MESSAGE_BODY_TOO_LARGE. A request message more than "
     "16 MiB above it is refused by the gRPC layer, without reaching the "
     "service (status RESOURCE_EXHAUSTED). Default 32 MiB."},
    {"tx_check_after_ms", CFG_T_INT, CFG_FIELD(cfg_t, message.tx_check_after_ms),
     "6000", 100, 3600000, NULL, NULL, NULL,
     "A transactional half message unresolved this long (or for its own "
     "orphaned_transaction_recovery_duration, at most 1 h) is checked with "
     "its producer."},
    {"tx_check_interval_ms", CFG_T_INT,
     CFG_FIELD(cfg_t, message.tx_check_interval_ms), "30000", 100, 3600000,
     NULL, NULL, NULL,
     "How often unresolved half messages are looked for (a due one is "
     "checked within this time)."},
    {"tx_max_checks", CFG_T_INT, CFG_FIELD(cfg_t, message.tx_max_checks), "15",
     1, 1000, NULL, NULL, NULL,
     "After this many checks without a resolution the half message is "
     "discarded and counted."},
};

static const cfg_desc_t cfg_topic_keys[] = {
    {"name", CFG_T_STR, CFG_FIELD(cfg_topic_t, name), NULL, 0, 0, NULL,
     cfg_topic_name_check, "topic name",
     "Topic name; unique. See *Names* below."},
    {"type", CFG_T_ENUM, CFG_FIELD(cfg_topic_t, type), "NORMAL", 0, 0,
     cfg_topic_types, NULL, NULL,
     "Message type the topic accepts; MIXED accepts all."},
    {"queues", CFG_T_INT, CFG_FIELD(cfg_topic_t, queues), "8", 1, 1024, NULL,
     NULL, NULL, "Number of message queues."},
};

static const cfg_desc_t cfg_group_keys[] = {
    {"name", CFG_T_STR, CFG_FIELD(cfg_group_t, name), NULL, 0, 0, NULL,
     cfg_group_name_check, "group name",
     "Consumer group name; unique. See *Names* below."},
    {"max_delivery_attempts", CFG_T_INT,
     CFG_FIELD(cfg_group_t, max_delivery_attempts), "16", 1, 1000, NULL, NULL,
     NULL,
     "Deliveries of one message before it goes to the group's dead-letter "
     "topic `%DLQ%<name>`."},
    {"fifo", CFG_T_BOOL, CFG_FIELD(cfg_group_t, fifo), "false", 0, 0, NULL,
     NULL, NULL,
     "Deliver messages of one message group in order: a receive gets "
     "consecutive messages of a group, and the group's next ones only after "
     "those are acked (or expired: then again from the first unacked)."},
    {"consume_from", CFG_T_ENUM, CFG_FIELD(cfg_group_t, consume_from_last),
     "first", 0, 0, cfg_consume_from, NULL, NULL,
     "Where a new group starts: the oldest retained message (`first`) or "
     "only new messages (`last`)."},
};

#define N(a) (sizeof(a) / sizeof((a)[0]))

const cfg_section_t cfg_sections[] = {
    {"server", cfg_server_keys, N(cfg_server_keys), false, 0, 0, 0, NULL,
     "Network listeners and the server runtime."},
    {"log", cfg_log_keys, N(cfg_log_keys), false, 0, 0, 0, NULL,
     "Logging to stderr."},
    {"store", cfg_store_keys, N(cfg_store_keys), false, 0, 0, 0, NULL,
     "Message storage."},
    {"message", cfg_message_keys, N(cfg_message_keys), false, 0, 0, 0, NULL,
     "Delayed and transactional message rules."},
    {"topics", cfg_topic_keys, N(cfg_topic_keys), true,
     offsetof(cfg_t, topics), offsetof(cfg_t, n_topics), sizeof(cfg_topic_t),
     "topic",
     "A list of topics, one mapping per topic:\n\n"
     "```yaml\ntopics:\n  - {name: TopicTest, type: NORMAL, queues: 8}\n"
     "  - name: FifoTopic\n    type: FIFO\n```"},
    {"groups", cfg_group_keys, N(cfg_group_keys), true,
     offsetof(cfg_t, groups), offsetof(cfg_t, n_groups), sizeof(cfg_group_t),
     "group",
     "A list of consumer groups, one mapping per group:\n\n"
     "```yaml\ngroups:\n  - {name: GroupTest, max_delivery_attempts: 16}\n"
     "  - {name: FifoGroup, fifo: true, consume_from: last}\n```"},
};

const size_t cfg_n_sections = N(cfg_sections);

const cfg_section_t *cfg_section_find(const char *name, size_t len)
{
    for (size_t i = 0; i < cfg_n_sections; i++)
        if (strlen(cfg_sections[i].name) == len &&
            memcmp(cfg_sections[i].name, name, len) == 0)
            return &cfg_sections[i];
    return NULL;
}

const cfg_desc_t *cfg_key_find(const cfg_section_t *sec, const char *key,
                               size_t len)
{
    for (size_t i = 0; i < sec->n_keys; i++)
        if (strlen(sec->keys[i].key) == len &&
            memcmp(sec->keys[i].key, key, len) == 0)
            return &sec->keys[i];
    return NULL;
}
