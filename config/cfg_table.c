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
#include <errno.h>
#include <stdlib.h>

#include "cfg_int.h"
#include "gt_addr.h"
#include "st.h" /* the store's reserved names */

/* The older entries are positional and leave out the trailing members
 * (sub), which are zero for them. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#include <openssl/evp.h>
#include <regex.h>
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

/* An optional address: "" (as printed when unset) or HOST:PORT. */
static gt_err_t cfg_check_listen_or_empty(const char *v, char *why,
                                          size_t whylen)
{
    return v[0] == '\0' ? GT_OK : cfg_check_listen(v, why, whylen);
}

/* ---- amqp values ------------------------------------------------------ */

/* amqp.server_product: 1..63 printable ASCII characters. */
/* See cfg.h. */
gt_err_t cfg_watermark_parse(const char *v, double *rel, uint64_t *abs, char *why,
                             size_t whylen)
{
    char *end = NULL;

    *rel = -1;
    *abs = 0;
    if (v == NULL || v[0] < '0' || v[0] > '9') {
        snprintf(why, whylen, "must be a fraction such as 0.4 or a size such as 2GiB");
        return GT_EINVAL;
    }
    if (strchr(v, '.') != NULL) {
        double d = strtod(v, &end);
        if (*end != '\0' || !(d >= 0.0 && d <= 1.0)) {
            snprintf(why, whylen, "a fraction of the memory limit must be within 0 .. 1");
            return GT_EINVAL;
        }
        *rel = d;
        return GT_OK;
    }
    static const struct {
        const char *unit;
        uint64_t mul;
    } units[] = {{"", 1}, {"k", 1000}, {"kB", 1000}, {"KB", 1000}, {"KiB", 1024},
                 {"M", 1000000}, {"MB", 1000000}, {"MiB", 1048576},
                 {"G", 1000000000}, {"GB", 1000000000}, {"GiB", 1073741824}};
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    for (size_t i = 0; errno == 0 && i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(end, units[i].unit) != 0)
            continue;
        if (n == 0 || n > UINT64_MAX / units[i].mul / 2) {
            snprintf(why, whylen, "a size must be above 0 and below 2^62 bytes");
            return GT_EINVAL;
        }
        *abs = (uint64_t)n * units[i].mul;
        return GT_OK;
    }
    snprintf(why, whylen, "must be a fraction such as 0.4 or a size such as 2GiB "
                          "(units k, kB, KiB, M, MB, MiB, G, GB, GiB)");
    return GT_EINVAL;
}

static gt_err_t cfg_check_watermark(const char *v, char *why, size_t whylen)
{
    double rel;
    uint64_t abs;
    return cfg_watermark_parse(v, &rel, &abs, why, whylen);
}

static gt_err_t cfg_check_product(const char *v, char *why, size_t whylen)
{
    size_t n = strlen(v);

    if (n == 0 || n > 63) {
        snprintf(why, whylen, "must be 1 to 63 characters, not %zu", n);
        return GT_EINVAL;
    }
    for (const char *p = v; *p != '\0'; p++) {
        if (*p < 0x20 || *p > 0x7e) {
            snprintf(why, whylen, "must be printable ASCII");
            return GT_EINVAL;
        }
    }
    return GT_OK;
}

/* A vhost name: an AMQP shortstr (1..255 bytes). */
static gt_err_t cfg_check_vhost(const char *v, char *why, size_t whylen)
{
    char q[96];

    if (v[0] == '\0') {
        snprintf(why, whylen, "a vhost name must not be empty");
        return GT_EINVAL;
    }
    if (strlen(v) > 255) {
        snprintf(why, whylen, "%s is not a valid vhost name (%zu bytes, at "
                 "most 255)", cfg_msg_quote(q, sizeof(q), v, strlen(v)),
                 strlen(v));
        return GT_EINVAL;
    }
    return GT_OK;
}

/* A permission: a POSIX extended regular expression ("" is allowed and
 * matches no name, as in RabbitMQ). */
static gt_err_t cfg_check_regex(const char *v, char *why, size_t whylen)
{
    char q[96], what[128];
    regex_t re;
    int rc;

    if ((rc = regcomp(&re, v[0] != '\0' ? v : "^$", REG_EXTENDED | REG_NOSUB)) == 0) {
        regfree(&re);
        return GT_OK;
    }
    regerror(rc, &re, what, sizeof(what));
    snprintf(why, whylen, "%s is not a valid POSIX extended regular "
             "expression (%s)", cfg_msg_quote(q, sizeof(q), v, strlen(v)), what);
    return GT_EINVAL;
}

gt_err_t cfg_duration_ms(const char *s, int64_t *ms, char *why, size_t whylen)
{
    static const struct {
        const char *unit;
        int64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    char q[96];
    const char *p = s;
    int64_t v = 0;

    while (*p >= '0' && *p <= '9' && v <= ST_INVISIBLE_MAX_MS)
        v = v * 10 + (*p++ - '0');
    for (size_t i = 0; p != s && i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(p, units[i].unit) != 0)
            continue;
        if (v <= 0 || v > ST_INVISIBLE_MAX_MS / units[i].ms)
            break;
        *ms = v * units[i].ms;
        return GT_OK;
    }
    if (why != NULL)
        snprintf(why, whylen, "%s is not a duration from 1ms to 30d (a number "
                 "and one of ms, s, m, h, d: \"500ms\", \"5s\", \"2m\")",
                 cfg_msg_quote(q, sizeof(q), s, strlen(s)));
    return GT_EINVAL;
}

static gt_err_t cfg_check_duration(const char *v, char *why, size_t whylen)
{
    int64_t ms;

    return cfg_duration_ms(v, &ms, why, whylen);
}

/* A queue name: an AMQP shortstr (1..255 bytes). */
static gt_err_t cfg_check_qname(const char *v, char *why, size_t whylen)
{
    if (v[0] != '\0' && strlen(v) <= 255)
        return GT_OK;
    snprintf(why, whylen, "a queue name has 1 to 255 bytes, not %zu", strlen(v));
    return GT_EINVAL;
}

int cfg_b64_decode(const char *s, uint8_t *out, size_t cap)
{
    size_t len = strlen(s), pad = 0;
    int n;

    if (len == 0 || len % 4 != 0 || len / 4 * 3 > cap)
        return -1;
    while (pad < 2 && s[len - 1 - pad] == '=')
        pad++;
    for (size_t i = 0; i < len - pad; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9') || c == '+' || c == '/'))
            return -1;
    }
    n = EVP_DecodeBlock(out, (const unsigned char *)s, (int)len);
    return n < 0 ? -1 : n - (int)pad;
}

/* RabbitMQ's password hash: base64 of salt[4] || SHA-256 (32 bytes) or
 * SHA-512 (64 bytes); which one must match hashing_algorithm (checked by
 * the loader once both are known). */
static gt_err_t cfg_check_password_hash(const char *v, char *why, size_t whylen)
{
    uint8_t buf[128];
    int n = cfg_b64_decode(v, buf, sizeof(buf));

    if (n == 4 + 32 || n == 4 + 64 || strcmp(v, CFG_SECRET_MASK) == 0)
        return GT_OK;
    snprintf(why, whylen, "is not a RabbitMQ password hash (base64 of a "
             "4-byte salt and a SHA-256 or SHA-512 digest: 48 or 92 "
             "characters; `gantry --hash-password` makes one)");
    return GT_EINVAL;
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
static const char *const cfg_modes[] = {"local", "remote", "cluster", NULL};
static const char *const cfg_flushes[] = {"sync", "async", NULL};
static const char *const cfg_tls_modes[] = {"disabled", "permissive", "enforcing",
                                            NULL};
static const char *const cfg_tls_client_auths[] = {"none", "optional", "require",
                                                   NULL};
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
    {"threads", CFG_T_INT, CFG_FIELD(cfg_t, server.threads), "0", 0, 256,
     NULL, NULL, NULL,
     "gRPC worker threads, two polling each completion queue; 0 means one "
     "per CPU core, at least 2 (also the executor's threads: 0 means one "
     "per core)."},
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
     "needs) in the whole server (default 128 MiB). A request that would "
     "pass it is answered TOO_MANY_REQUESTS (42900), if possible without "
     "being read, unless "
     "nothing else is in flight. A connection's first send, whose size is "
     "not known yet, is read only while no other such send is (it waits "
     "for that, at most 2 s). A connection whose send could not be read "
     "(past the gRPC receive limit, or cancelled) gets TOO_MANY_REQUESTS "
     "for its next sends, unread, for 0.5 s doubling up to 8 s. Small "
     "requests (up to 64 KiB) may go a sixteenth past it, so that clients "
     "of small requests are served while large ones fill it. The gRPC "
     "layer's own buffers get a memory quota of this + 64 MiB: past it the "
     "layer cancels streams with RESOURCE_EXHAUSTED."},
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
     "messages live on a `gantry-store` node and this process keeps none; "
     "`cluster`: messages live on a replicated `gantry-store` tier and the "
     "proxy sends every store operation to its leader, found and followed "
     "through etcd (`etcd`, `cluster_name`; see docs/architecture.md, "
     "Cluster coordination)."},
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
    {.key = "endpoints", .type = CFG_T_STRLIST, CFG_FIELD(cfg_t, store.endpoints),
     .def = "", .check = cfg_check_listen, .what = "list of HOST:PORT",
     .doc = "`remote` mode: the `gantry-store` node to use (its store "
            "protocol gRPC endpoint, `store_server.listen`). Exactly one "
            "entry: that node holds all the data (it is not replicated), so "
            "more than one is refused; a replicated tier is `cluster` mode."},
    {"remote_timeout_ms", CFG_T_INT, CFG_FIELD(cfg_t, store.remote_timeout_ms),
     "10000", 100, 600000, NULL, NULL, NULL,
     "`remote` and `cluster` modes: deadline of one request to the store "
     "node, beyond a "
     "long poll's own wait; appends and reads that fail with a timeout or "
     "an unreachable node are retried (with the same idempotency key)."},
    {.key = "etcd", .type = CFG_T_STRLIST, CFG_FIELD(cfg_t, store.etcd),
     .def = "", .check = cfg_check_listen, .what = "list of HOST:PORT",
     .doc = "`cluster` mode (required there): etcd client endpoints (etcd v3 "
            "API) where the store nodes register and elect their leader "
            "(the nodes' `cluster.etcd`)."},
    {.key = "cluster_name", .type = CFG_T_STR, CFG_FIELD(cfg_t, store.cluster_name),
     .def = "gantry", .check = cfg_check_nonempty, .what = "string",
     .doc = "`cluster` mode: the store cluster's name (the nodes' "
            "`cluster.name`): the proxy follows `/gantry/<name>/rs/0/leader` "
            "and `/gantry/<name>/stores/`."},
};

static const cfg_desc_t cfg_store_server_keys[] = {
    {"listen", CFG_T_STR, CFG_FIELD(cfg_t, store_server.listen),
     "0.0.0.0:10911", 0, 0, NULL, cfg_check_listen, "HOST:PORT",
     "Address of the store protocol's gRPC endpoint (gantry.store.v1, "
     "docs/store-protocol.md) that `gantry` proxies in remote mode use."},
    {"http_listen", CFG_T_STR, CFG_FIELD(cfg_t, store_server.http_listen),
     "0.0.0.0:10912", 0, 0, NULL, cfg_check_listen, "HOST:PORT",
     "Address of gantry-store's HTTP endpoint (health, readiness, metrics)."},
    {"dedup_entries", CFG_T_INT, CFG_FIELD(cfg_t, store_server.dedup_entries),
     "65536", 0, 1 << 24, NULL, NULL, NULL,
     "Appends remembered by their idempotency key, so that a client's retry "
     "is answered with the first attempt's result instead of being stored "
     "twice; the oldest is forgotten first (counted in messages, an append "
     "in flight included). 0 turns de-duplication off (logged at start): "
     "a proxy's retry after a lost answer then stores its messages again."},
    {"dedup_window_ms", CFG_T_INT,
     CFG_FIELD(cfg_t, store_server.dedup_window_ms), "60000", 1000, 3600000,
     NULL, NULL, NULL,
     "How long an append is remembered for de-duplication."},
};

static const cfg_desc_t cfg_cluster_keys[] = {
    {.key = "etcd", .type = CFG_T_STRLIST, CFG_FIELD(cfg_t, cluster.etcd),
     .def = "", .check = cfg_check_listen, .what = "list of HOST:PORT",
     .doc = "etcd client endpoints (etcd v3 API). Empty: the node runs "
            "alone and registers nowhere."},
    {.key = "name", .type = CFG_T_STR, CFG_FIELD(cfg_t, cluster.name),
     .def = "gantry", .check = cfg_check_nonempty, .what = "string",
     .doc = "Cluster name: the node's keys are under `/gantry/<name>/`."},
    {.key = "node_id", .type = CFG_T_STR, CFG_FIELD(cfg_t, cluster.node_id),
     .def = CFG_OPTIONAL, .what = "string",
     .doc = "This node's id in the cluster (`/gantry/<name>/stores/<node_id>`); "
            "unset: the advertised address."},
    {.key = "advertise", .type = CFG_T_STR, CFG_FIELD(cfg_t, cluster.advertise),
     .def = CFG_OPTIONAL, .check = cfg_check_listen_or_empty, .what = "HOST:PORT",
     .doc = "The store protocol address other nodes and proxies use; unset: "
            "`store_server.listen`."},
    {.key = "lease_ttl_s", .type = CFG_T_INT, CFG_FIELD(cfg_t, cluster.lease_ttl_s),
     .def = "3", .min = 2, .max = 300,
     .doc = "TTL of the node's etcd lease: a node that stops renewing it "
            "(killed, paused, cut off) is unregistered this long after its "
            "last renewal, and a dead leader is replaced about this long "
            "after its death (docs/cluster.md, failover timings). Renewed "
            "every TTL/3, at most 500 ms apart; a leader stands down when "
            "no renewal sent in the last TTL was answered. etcd's own "
            "minimum is 2."},
    {.key = "replicas", .type = CFG_T_INT, CFG_FIELD(cfg_t, cluster.replicas),
     .def = "3", .min = 1, .max = 16,
     .doc = "Store nodes per replica set (R): the leader and R-1 "
            "followers holding byte-identical copies of its data. A node "
            "joins the lowest replica set k whose member list "
            "(`/gantry/<name>/rs/<k>/members`, kept in etcd across "
            "restarts) has fewer than R ids: the first R nodes form rs/0, "
            "the next R rs/1, and so on. A set elects its first leader once "
            "all R have joined. 1: no replication (one set per node)."},
    {.key = "min_insync", .type = CFG_T_INT, CFG_FIELD(cfg_t, cluster.min_insync),
     .def = "2", .min = 1, .max = 16,
     .doc = "Writes (appends and every consumption-state change) are "
            "answered only while the in-sync set has at least this many "
            "members, the leader included, and only once max(this, a "
            "majority of the in-sync set) members hold them durably "
            "(docs/cluster.md, \"Acknowledging at a quorum\"); fewer "
            "members: a retriable error."},
    {.key = "replica_lag_ms", .type = CFG_T_INT,
     CFG_FIELD(cfg_t, cluster.replica_lag_ms), .def = "5000", .min = 100,
     .max = 600000,
     .doc = "A follower that has not held everything the leader synced for "
            "this long is reported lagging (and leaves the in-sync set); "
            "followers long-poll the leader with a quarter of it."},
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
#define MIB ((int64_t)1 << 20)

static const char *const cfg_hashings[] = {
    "rabbit_password_hashing_sha256", "rabbit_password_hashing_sha512", NULL};

static const cfg_desc_t cfg_amqp_user_keys[] = {
    {.key = "name", .type = CFG_T_STR, CFG_FIELD(cfg_amqp_user_t, name),
     .check = cfg_check_nonempty, .what = "string",
     .doc = "User name; unique."},
    {.key = "password_hash", .type = CFG_T_STR,
     CFG_FIELD(cfg_amqp_user_t, password_hash), .def = CFG_OPTIONAL,
     .check = cfg_check_password_hash, .what = "base64", .secret = true,
     .doc = "The password in RabbitMQ's format (as its definitions "
            "exports give it): base64 of a "
            "4-byte salt followed by SHA-256(salt + UTF-8 password). "
            "`gantry --hash-password` makes one. Give this or `password`. "
            "`--print-config` masks it (loaded back masked, the user cannot "
            "log in)."},
    {.key = "password", .type = CFG_T_STR, CFG_FIELD(cfg_amqp_user_t, password), .secret = true,
     .def = CFG_OPTIONAL, .what = "string",
     .doc = "The password in plain text, for development: Gantry logs a "
            "warning at start (`--print-config` masks it). Give this or "
            "`password_hash`. An empty "
            "password never logs in (as RabbitMQ)."},
    {.key = "hashing_algorithm", .type = CFG_T_ENUM,
     CFG_FIELD(cfg_amqp_user_t, hashing),
     .def = "rabbit_password_hashing_sha256", .choices = cfg_hashings,
     .doc = "The digest of `password_hash`, named as in RabbitMQ's "
            "definitions."},
    {.key = "tags", .type = CFG_T_STRLIST, CFG_FIELD(cfg_amqp_user_t, tags),
     .def = "", .check = cfg_check_nonempty, .what = "list of strings",
     .doc = "RabbitMQ's user tags (`administrator`, `management`...); "
            "kept, not used by the gateway yet."},
};

static const cfg_section_t cfg_amqp_users = {
    "users", cfg_amqp_user_keys, N(cfg_amqp_user_keys), true, 0,
    sizeof(cfg_amqp_user_t *), sizeof(cfg_amqp_user_t), "user", NULL};

static const cfg_desc_t cfg_amqp_perm_keys[] = {
    {.key = "user", .type = CFG_T_STR, CFG_FIELD(cfg_amqp_perm_t, user),
     .check = cfg_check_nonempty, .what = "string",
     .doc = "A user of `amqp.users` (or `guest` when there are none)."},
    {.key = "vhost", .type = CFG_T_STR, CFG_FIELD(cfg_amqp_perm_t, vhost),
     .check = cfg_check_vhost, .what = "string",
     .doc = "A vhost of `amqp.vhosts`. One entry per user and vhost."},
    {.key = "configure", .type = CFG_T_STR,
     CFG_FIELD(cfg_amqp_perm_t, configure), .check = cfg_check_regex,
     .what = "regex",
     .doc = "Names of the exchanges and queues the user may declare and "
            "delete: a POSIX extended regular expression matched anywhere "
            "in the name, as RabbitMQ matches its own (`^` / `$` anchor "
            "it); `.*` is everything, `\"\"` nothing."},
    {.key = "write", .type = CFG_T_STR, CFG_FIELD(cfg_amqp_perm_t, write),
     .check = cfg_check_regex, .what = "regex",
     .doc = "Exchanges the user may publish to and queues it may bind "
            "(RabbitMQ's write permission); the default exchange is "
            "`amq.default`."},
    {.key = "read", .type = CFG_T_STR, CFG_FIELD(cfg_amqp_perm_t, read),
     .check = cfg_check_regex, .what = "regex",
     .doc = "Queues the user may consume from, get from and purge, and "
            "exchanges it may bind from (RabbitMQ's read permission)."},
};

static const cfg_section_t cfg_amqp_perms = {
    "permissions", cfg_amqp_perm_keys, N(cfg_amqp_perm_keys), true, 0,
    sizeof(cfg_amqp_perm_t *), sizeof(cfg_amqp_perm_t), NULL, NULL};

static gt_err_t cfg_check_bridge_key(const char *v, char *why, size_t whylen)
{
    if (strcmp(v, "tag") == 0 ||
        (strncmp(v, "property:", 9) == 0 && v[9] != '\0' && strlen(v + 9) <= 255))
        return GT_OK;
    snprintf(why, whylen, "must be \"tag\" or \"property:NAME\"");
    return GT_EINVAL;
}

static gt_err_t cfg_check_bridge_exchange(const char *v, char *why, size_t whylen)
{
    if (v[0] == '\0' || strlen(v) > 255 || strncmp(v, "amq.", 4) == 0) {
        snprintf(why, whylen, "must be 1 to 255 bytes and not start with \"amq.\"");
        return GT_EINVAL;
    }
    return GT_OK;
}

static const char *const cfg_bridge_xtypes[] = {"direct", "fanout", "topic", "headers", NULL};

static const cfg_desc_t cfg_amqp_bridge_keys[] = {
    {.key = "vhost", .type = CFG_T_STR, CFG_FIELD(cfg_amqp_bridge_t, vhost), .def = "/",
     .check = cfg_check_vhost, .what = "string",
     .doc = "The exchange's vhost (one of `amqp.vhosts`)."},
    {.key = "exchange", .type = CFG_T_STR, CFG_FIELD(cfg_amqp_bridge_t, exchange),
     .check = cfg_check_bridge_exchange, .what = "string",
     .doc = "The AMQP exchange; declared (durable) at start when it does not "
            "exist. One bridge per exchange and per topic."},
    {.key = "exchange_type", .type = CFG_T_CHOICE,
     CFG_FIELD(cfg_amqp_bridge_t, exchange_type), .def = "direct",
     .choices = cfg_bridge_xtypes,
     .doc = "The type the exchange is declared with when it does not exist."},
    {.key = "topic", .type = CFG_T_STR, CFG_FIELD(cfg_amqp_bridge_t, topic),
     .check = cfg_topic_name_check, .what = "topic name",
     .doc = "The RocketMQ topic; created at start (NORMAL, 8 queues) when it "
            "does not exist and `server.auto_create_topics` is on."},
    {.key = "routing_key", .type = CFG_T_STR,
     CFG_FIELD(cfg_amqp_bridge_t, routing_key), .def = "tag",
     .check = cfg_check_bridge_key, .what = "tag or property:NAME",
     .doc = "What a RocketMQ message's AMQP routing key is, and where an AMQP "
            "publish's routing key goes: the tag, or the user property NAME."},
};

static const cfg_section_t cfg_amqp_bridges = {
    "bridges", cfg_amqp_bridge_keys, N(cfg_amqp_bridge_keys), true, 0,
    sizeof(cfg_amqp_bridge_t *), sizeof(cfg_amqp_bridge_t), NULL, NULL};

static const cfg_desc_t cfg_amqp_qpolicy_keys[] = {
    {.key = "vhost", .type = CFG_T_STR, CFG_FIELD(cfg_amqp_qpolicy_t, vhost), .def = "/",
     .check = cfg_check_vhost, .what = "string",
     .doc = "The vhost of the queues (one of `amqp.vhosts`)."},
    {.key = "queue", .type = CFG_T_STR, CFG_FIELD(cfg_amqp_qpolicy_t, queue),
     .def = CFG_OPTIONAL, .check = cfg_check_qname, .what = "string",
     .doc = "The queue's exact name. Give this or `pattern`."},
    {.key = "pattern", .type = CFG_T_STR, CFG_FIELD(cfg_amqp_qpolicy_t, pattern),
     .def = CFG_OPTIONAL, .check = cfg_check_regex, .what = "regex",
     .doc = "Queue names as a POSIX extended regular expression matched anywhere in the "
            "name, as RabbitMQ's policy patterns (`^orders\\.` for a prefix). Give this "
            "or `queue`."},
    {.key = "paused", .type = CFG_T_BOOL, CFG_FIELD(cfg_amqp_qpolicy_t, paused),
     .def = "false",
     .doc = "Deliver nothing to the queue's consumers (basic.get finds it empty); "
            "publishes are still taken and confirmed and the messages wait. "
            "`POST /api/v1/amqp/queues/VHOST/QUEUE/pause` or `/resume` on the HTTP "
            "endpoint overrides it at run time (kept across restarts)."},
    {.key = "rate_limit", .type = CFG_T_INT, CFG_FIELD(cfg_amqp_qpolicy_t, rate_limit),
     .def = "0", .min = 0, .max = 1000000,
     .doc = "Deliveries per second to all the queue's consumers together (consumers on "
            "any connection and channel, and basic.get), as a token bucket; 0: no "
            "limit."},
    {.key = "burst", .type = CFG_T_INT, CFG_FIELD(cfg_amqp_qpolicy_t, burst), .def = "0",
     .min = 0, .max = 1000000,
     .doc = "The bucket's size: deliveries that may go at once after an idle spell; 0: "
            "`rate_limit` (one second's worth)."},
    {.key = "retry_delays", .type = CFG_T_STRLIST,
     CFG_FIELD(cfg_amqp_qpolicy_t, retry_delays), .def = "", .check = cfg_check_duration,
     .what = "list of durations",
     .doc = "Graded retry: a message nacked or rejected without requeue after its "
            "delivery N comes back (redelivered) after the N-th delay; after the last "
            "step it is dead-lettered (dropped without a dead-letter exchange), e.g. "
            "`[1s, 5s, 30s, 2m]`. Durations: a number and `ms`, `s`, `m`, `h` or `d`, "
            "up to 30 days; at most 32 steps."},
};

static const cfg_section_t cfg_amqp_qpolicies = {
    "queue_policies", cfg_amqp_qpolicy_keys, N(cfg_amqp_qpolicy_keys), true, 0,
    sizeof(cfg_amqp_qpolicy_t *), sizeof(cfg_amqp_qpolicy_t), NULL, NULL};

static const cfg_desc_t cfg_amqp_vlimit_keys[] = {
    {.key = "vhost", .type = CFG_T_STR, CFG_FIELD(cfg_amqp_vlimit_t, vhost),
     .check = cfg_check_vhost, .what = "string",
     .doc = "A vhost of `amqp.vhosts`; one entry per vhost."},
    {.key = "max_message_size", .type = CFG_T_INT,
     CFG_FIELD(cfg_amqp_vlimit_t, max_message_size), .def = "0", .min = 0,
     .max = 512 * MIB,
     .doc = "Largest message body a publisher may send in this vhost (406 "
            "PRECONDITION_FAILED beyond, as `amqp.max_message_size`, which still bounds "
            "it); 0: `amqp.max_message_size`."},
};

static const cfg_section_t cfg_amqp_vlimits = {
    "vhost_limits", cfg_amqp_vlimit_keys, N(cfg_amqp_vlimit_keys), true, 0,
    sizeof(cfg_amqp_vlimit_t *), sizeof(cfg_amqp_vlimit_t), NULL, NULL};

static const cfg_desc_t cfg_amqp_keys[] = {
    {.key = "listen", .type = CFG_T_STR, CFG_FIELD(cfg_t, amqp.listen),
     .def = "0.0.0.0:5672", .check = cfg_check_listen_opt, .what = "HOST:PORT",
     .doc = "Address of the AMQP 0-9-1 gateway; \"\" or \"off\" disables "
            "it. Also `--amqp-listen`; `server.amqp_listen` is an older "
            "name for it."},
    {.key = "frame_max", .type = CFG_T_INT, CFG_FIELD(cfg_t, amqp.frame_max),
     .def = "131072", .min = 4096, .max = 16 * MIB,
     .doc = "Largest frame the gateway proposes in connection.tune (bytes, "
            "RabbitMQ's default; 4096 is the protocol's floor). A client may "
            "ask for less, never for more."},
    {.key = "server_product", .type = CFG_T_STR,
     CFG_FIELD(cfg_t, amqp.server_product), .def = "RabbitMQ",
     .check = cfg_check_product, .what = "string",
     .doc = "The `product` Gantry gives in connection.start's "
            "server-properties. RabbitMQ's name by default, with `version` "
            "3.10.8 (the dialect spoken): clients and their test suites "
            "check it; Gantry's own name and version are in `information` "
            "and `gantry_version`. Any other value is sent with Gantry's "
            "version."},
    {.key = "heartbeat", .type = CFG_T_INT, CFG_FIELD(cfg_t, amqp.heartbeat),
     .def = "60", .min = 0, .max = 65535,
     .doc = "Heartbeat interval proposed in connection.tune (seconds; the "
            "client's answer is used, 0 disables). A peer silent for two "
            "intervals is closed."},
    {.key = "channel_max", .type = CFG_T_INT, CFG_FIELD(cfg_t, amqp.channel_max),
     .def = "2047", .min = 1, .max = 2047,
     .doc = "Most channels per connection, proposed in connection.tune (at "
            "most 2047 for now: the broker's channel table)."},
    {.key = "consumer_timeout_ms", .type = CFG_T_INT,
     CFG_FIELD(cfg_t, amqp.consumer_timeout_ms), .def = "1800000", .min = 0,
     .max = 2147483647,
     .doc = "A delivery unacknowledged this long closes its channel with 406 "
            "PRECONDITION_FAILED (RabbitMQ's consumer_timeout, 30 min); 0 "
            "disables it."},
    {.key = "max_message_size", .type = CFG_T_INT,
     CFG_FIELD(cfg_t, amqp.max_message_size), .def = "134217728", .min = 1,
     .max = 512 * MIB,
     .doc = "Largest message body a publisher may send; a larger one closes "
            "the channel with 406 PRECONDITION_FAILED (RabbitMQ's "
            "max_message_size: default 128 MiB, at most 512 MiB)."},
    {.key = "flow_control_bytes", .type = CFG_T_INT,
     CFG_FIELD(cfg_t, amqp.flow_control_bytes), .def = "67108864", .min = 65536,
     .max = (int64_t)1 << 40,
     .doc = "Bytes of published messages the store has not answered yet above "
            "which publishing connections get connection.blocked and are not "
            "read; under half of it they get connection.unblocked."},
    {.key = "memory_high_watermark", .type = CFG_T_STR,
     CFG_FIELD(cfg_t, amqp.memory_high_watermark), .def = "0.4",
     .check = cfg_check_watermark, .what = "fraction or size",
     .doc = "Resident memory of the process above which publishing "
            "connections get connection.blocked (\"low on memory\") until it "
            "is back under (RabbitMQ's vm_memory_high_watermark): a fraction "
            "of the machine's memory or the cgroup's limit if lower, with a "
            "decimal point (`0.4`, RabbitMQ's default; `0.0` blocks every "
            "publisher), or a size with an optional unit (`2GiB`, `1500MB`)."},
    {.key = "tls_listen", .type = CFG_T_STR, CFG_FIELD(cfg_t, amqp.tls_listen),
     .def = CFG_OPTIONAL, .check = cfg_check_listen_opt, .what = "HOST:PORT",
     .doc = "Address of the AMQPS listener (AMQP 0-9-1 over TLS; RabbitMQ's "
            "port is 5671), with the certificate and key of the `tls` section "
            "(its `mode` is the gRPC port's and does not apply here). Unset "
            "(the default), \"\" or \"off\": none."},
    {.key = "users", .type = CFG_T_LIST, CFG_FIELD(cfg_t, amqp.users), .def = "",
     .sub = &cfg_amqp_users, .what = "list of users",
     .doc = "Users that may log in (PLAIN or AMQPLAIN). With none, there is "
            "RabbitMQ's default user `guest`, password `guest`."},
    {.key = "vhosts", .type = CFG_T_STRLIST, CFG_FIELD(cfg_t, amqp.vhosts),
     .def = "/", .check = cfg_check_vhost, .what = "list of strings",
     .doc = "The virtual hosts; connection.open of another one is refused "
            "with 530 NOT_ALLOWED."},
    {.key = "permissions", .type = CFG_T_LIST, CFG_FIELD(cfg_t, amqp.permissions),
     .def = "", .sub = &cfg_amqp_perms, .what = "list of permissions",
     .doc = "Who may do what in which vhost (RabbitMQ's configure / write / "
            "read regular expressions). A user may open only the vhosts it "
            "has an entry for. With neither users nor permissions, `guest` "
            "has `.*` for all three on `/`."},
    {.key = "loopback_users", .type = CFG_T_STRLIST,
     CFG_FIELD(cfg_t, amqp.loopback_users), .def = "guest",
     .check = cfg_check_nonempty, .what = "list of strings",
     .doc = "Users that may log in only from a loopback address (RabbitMQ's "
            "loopback_users); `[]` lets `guest` in from anywhere."},
    {.key = "bridges", .type = CFG_T_LIST, CFG_FIELD(cfg_t, amqp.bridges), .def = "",
     .sub = &cfg_amqp_bridges, .what = "list of bridges",
     .doc = "AMQP exchanges bound to RocketMQ topics (both protocols on one "
            "data set, docs/amqp.md): RocketMQ messages sent to the topic "
            "reach the queues bound to the exchange, AMQP publishes to the "
            "exchange reach the topic's consumer groups. Kept as metadata "
            "records (`amqp.bridge`) at start."},
    {.key = "queue_policies", .type = CFG_T_LIST, CFG_FIELD(cfg_t, amqp.queue_policies),
     .def = "", .sub = &cfg_amqp_qpolicies, .what = "list of queue policies",
     .doc = "Migration operations on queues (Gantry's own, not RabbitMQ's): pause, a "
            "delivery rate limit, graded retry delays. The first entry that matches a "
            "queue applies to it (when the queue is declared or the gateway starts)."},
    {.key = "vhost_limits", .type = CFG_T_LIST, CFG_FIELD(cfg_t, amqp.vhost_limits),
     .def = "", .sub = &cfg_amqp_vlimits, .what = "list of vhost limits",
     .doc = "Per-vhost limits."},
};

static const cfg_desc_t cfg_metrics_keys[] = {
    {"max_label_sets", CFG_T_INT, CFG_FIELD(cfg_t, metrics.max_label_sets), "1000", 1,
     100000, NULL, NULL, NULL,
     "Label sets (e.g. topic and consumer group) each metric family of "
     "`/metrics` keeps; the ones past it are counted together under the "
     "label value `_other`, so clients inventing names cannot grow the "
     "output without bound."},
};

static const cfg_desc_t cfg_tls_keys[] = {
    {.key = "mode", .type = CFG_T_CHOICE, CFG_FIELD(cfg_t, tls.mode), .def = "disabled",
     .choices = cfg_tls_modes,
     .doc = "TLS on the gRPC port (RocketMQ proxy's tlsMode): `disabled` serves "
            "plaintext only, `enforcing` TLS only, `permissive` both on the same "
            "port (each connection's first bytes tell which)."},
    {.key = "cert_file", .type = CFG_T_STR, CFG_FIELD(cfg_t, tls.cert_file), .def = CFG_OPTIONAL,
     .what = "path",
     .doc = "PEM certificate chain of the server (needed unless `mode` is "
            "`disabled` and `amqp.tls_listen` is off). Read again, with the key "
            "and CA files, on SIGHUP: new connections get the new certificate."},
    {.key = "key_file", .type = CFG_T_STR, CFG_FIELD(cfg_t, tls.key_file), .def = CFG_OPTIONAL,
     .what = "path", .doc = "PEM private key of `cert_file`."},
    {.key = "ca_file", .type = CFG_T_STR, CFG_FIELD(cfg_t, tls.ca_file), .def = CFG_OPTIONAL,
     .what = "path",
     .doc = "PEM certificates that client certificates must chain to (needed "
            "when `client_auth` is not `none`)."},
    {.key = "client_auth", .type = CFG_T_CHOICE, CFG_FIELD(cfg_t, tls.client_auth),
     .def = "none", .choices = cfg_tls_client_auths,
     .doc = "Client certificates: `none` (not asked for), `optional` (asked "
            "for, checked against `ca_file` when given), `require` (a "
            "connection without a valid one fails its handshake)."},
    {.key = "http", .type = CFG_T_BOOL, CFG_FIELD(cfg_t, tls.http), .def = "false",
     .doc = "HTTPS on the operator port (`server.http_listen`; `store_server.http_listen` "
            "of `gantry-store`) with `cert_file` and `key_file`: the admin API, "
            "dashboard, `/metrics` and the probes, which then need `scheme: HTTPS` in "
            "Kubernetes. The port then serves TLS only (a plaintext request gets no "
            "answer); no client certificate is asked for. Reloaded on SIGHUP too."},
};

static const cfg_desc_t cfg_trace_keys[] = {
    {.key = "topics", .type = CFG_T_STRLIST, CFG_FIELD(cfg_t, trace.topics), .def = "",
     .check = cfg_check_nonempty, .what = "list of strings",
     .doc = "Topics whose messages are traced (`*`: all), and AMQP queues by name: "
            "publish, each delivery, ack, nack, reject, dead-lettering and transaction "
            "end, written to the system "
            "topic `RMQ_SYS_TRACE_TOPIC` and read by message id through "
            "`GET /api/v1/messages/{id}/trace` (docs/admin.md)."},
    {.key = "groups", .type = CFG_T_STRLIST, CFG_FIELD(cfg_t, trace.groups), .def = "",
     .check = cfg_check_nonempty, .what = "list of strings",
     .doc = "Consumer groups whose deliveries, acks, nacks and dead-lettering are "
            "traced, whatever the topic (`*`: all)."},
    {"buffer_events", CFG_T_INT, CFG_FIELD(cfg_t, trace.buffer_events), "65536", 1,
     1000000, NULL, NULL, NULL,
     "Trace events held in memory until written (256 bytes of memory each, "
     "allocated at start; an event takes 100-250 bytes); when full, new events are "
     "dropped and counted (`gantry_trace_events_total{result=\"dropped\"}`), never "
     "waited for.  The default holds about 0.2 s of events at 300k traced messages/s."},
    {"flush_ms", CFG_T_INT, CFG_FIELD(cfg_t, trace.flush_ms), "100", 1, 60000, NULL,
     NULL, NULL,
     "How often buffered trace events are written at most (sooner when 4096 "
     "events or a quarter of the buffer are waiting)."},
};

const cfg_section_t cfg_sections[] = {
    {"server", cfg_server_keys, N(cfg_server_keys), false, 0, 0, 0, NULL,
     "Network listeners and the server runtime."},
    {"log", cfg_log_keys, N(cfg_log_keys), false, 0, 0, 0, NULL,
     "Logging to stderr."},
    {"store", cfg_store_keys, N(cfg_store_keys), false, 0, 0, 0, NULL,
     "Message storage."},
    {"message", cfg_message_keys, N(cfg_message_keys), false, 0, 0, 0, NULL,
     "Delayed and transactional message rules."},
    {"store_server", cfg_store_server_keys, N(cfg_store_server_keys), false,
     0, 0, 0, NULL,
     "`gantry-store` only (the store node; `gantry` ignores this section): "
     "its listeners and the append de-duplication window. It reads `store`, "
     "`log` and `server.threads` / `shutdown_timeout_ms` / "
     "`max_inflight_bytes` / `max_conn_inflight_bytes` too."},
    {"cluster", cfg_cluster_keys, N(cfg_cluster_keys), false, 0, 0, 0, NULL,
     "`gantry-store` only: store-cluster coordination through etcd (issue "
     "12): with `etcd` set the node registers itself under a lease at "
     "`/gantry/<name>/stores/<node_id>` (value: its advertised address), "
     "joins a replica set, and the set elects a leader that replicates to "
     "its followers and is replaced when it dies (docs/cluster.md)."},
    {"metrics", cfg_metrics_keys, N(cfg_metrics_keys), false, 0, 0, 0, NULL,
     "The Prometheus endpoint `/metrics` (RocketMQ's metric names)."},
    {"trace", cfg_trace_keys, N(cfg_trace_keys), false, 0, 0, 0, NULL,
     "Message trace (opt-in per topic or group; off by default)."},
    {"amqp", cfg_amqp_keys, N(cfg_amqp_keys), false, 0, 0, 0, NULL,
     "The AMQP 0-9-1 gateway (RabbitMQ clients): its listener, the values "
     "it proposes in connection.tune, limits, and its users, vhosts and "
     "permissions, as in RabbitMQ:\n\n"
     "```yaml\namqp:\n  listen: \"0.0.0.0:5672\"\n  users:\n"
     "    - {name: app, password_hash: \"5xrOF/x4HRWv1amhyNn/BMcmu2X5eGM3OaoM"
     "21yeHowtbz37\"}   # secret\n"
     "  vhosts: [\"/\", prod]\n  permissions:\n"
     "    - {user: app, vhost: prod, configure: \"^app\\\\.\", write: \".*\","
     " read: \".*\"}\n  loopback_users: []\n```"},
    {"auth", cfg_auth_keys, CFG_N_AUTH_KEYS, false, 0, 0, 0, NULL,
     "Authentication and ACLs of RocketMQ clients, as RocketMQ 5's ACL:\n\n"
     "```yaml\nauth:\n  enabled: true\n  users:\n"
     "    - {access_key: app, secret_key: \"change-me\"}\n"
     "    - {access_key: ops, secret_key: \"change-me-too\", admin: true}\n"
     "  acls:\n"
     "    - {user: app, resource: \"Topic:orders*\", actions: [Pub, Sub]}\n"
     "    - {user: app, resource: \"Group:billing\", actions: [Sub]}\n"
     "    - {user: app, resource: \"Topic:orders-audit\", actions: [All], decision: Deny}\n```"},
    {"tls", cfg_tls_keys, N(cfg_tls_keys), false, 0, 0, 0, NULL,
     "TLS for the gRPC port and the AMQPS listener:\n\n"
     "```yaml\ntls:\n  mode: permissive\n  cert_file: /etc/gantry/tls.crt\n"
     "  key_file: /etc/gantry/tls.key\n```"},
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

const cfg_alias_t cfg_aliases[] = {
    {"server.amqp_listen", "amqp.listen"},
    {NULL, NULL},
};

const cfg_desc_t *cfg_path_find(const char *path, size_t len)
{
    const char *dot = memchr(path, '.', len);
    const cfg_section_t *sec;

    if (dot == NULL)
        return NULL;
    sec = cfg_section_find(path, (size_t)(dot - path));
    if (sec == NULL || sec->is_list)
        return NULL;
    return cfg_key_find(sec, dot + 1, len - (size_t)(dot + 1 - path));
}

const cfg_desc_t *cfg_alias_find(const char *path, size_t len,
                                 const char **key_path)
{
    for (size_t i = 0; cfg_aliases[i].path != NULL; i++) {
        if (strlen(cfg_aliases[i].path) == len &&
            memcmp(cfg_aliases[i].path, path, len) == 0) {
            if (key_path != NULL)
                *key_path = cfg_aliases[i].key_path;
            return cfg_path_find(cfg_aliases[i].key_path,
                                 strlen(cfg_aliases[i].key_path));
        }
    }
    return NULL;
}

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
