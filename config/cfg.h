/* Gantry configuration: the typed struct, loading, overrides, printing.
 *
 * The config file is YAML (block or flow style).  Every key is described once
 * in a descriptor table (cfg_table.c: key, type, field offset, default,
 * range, doc); the same tables drive loading, validation, cfg_set()
 * overrides, cfg_print() and the generated reference docs/config.md
 * (cfg_write_doc()).
 *
 * Loading is parse, validate, then swap: a file is read into a fresh struct
 * that starts from the defaults, and the caller's struct is replaced only
 * when everything is valid.  Error messages have the form
 *     FILE:LINE: KEY.PATH: what is wrong
 * e.g. "gantry.yaml:7: store.flsuh: unknown key".
 *
 * A cfg_t is plain data owned by its creator; it has no locks.  Load it at
 * start-up, then share it read-only. */
#ifndef CFG_H
#define CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "gt_err.h"

typedef enum cfg_topic_type {
    CFG_TOPIC_NORMAL,
    CFG_TOPIC_FIFO,
    CFG_TOPIC_DELAY,
    CFG_TOPIC_TRANSACTION,
    CFG_TOPIC_MIXED
} cfg_topic_type_t;

typedef struct cfg_topic {
    char *name;
    cfg_topic_type_t type;
    int queues;
} cfg_topic_t;

typedef struct cfg_group {
    char *name;
    int max_delivery_attempts;
    bool fifo;
    bool consume_from_last; /* YAML: consume_from: first | last */
} cfg_group_t;

/* What cfg_print() shows for a set secret (auth secret keys, AMQP
 * passwords and password hashes): reloading the printed config gives this
 * text, not the secret (a masked password_hash is loaded as a user who
 * cannot log in). */
#define CFG_SECRET_MASK "********"

/* A YAML list of strings. */
typedef struct cfg_strlist {
    char **v;
    size_t n;
} cfg_strlist_t;

typedef enum cfg_amqp_hashing {
    CFG_HASH_SHA256, /* rabbit_password_hashing_sha256 */
    CFG_HASH_SHA512, /* rabbit_password_hashing_sha512 */
} cfg_amqp_hashing_t;

/* An AMQP user.  Exactly one of password_hash (RabbitMQ's format: base64
 * of a 4-byte salt followed by H(salt || UTF-8 password)) and password
 * (plain text, for development) is set; the other is NULL. */
typedef struct cfg_amqp_user {
    char *name;
    char *password_hash;
    char *password;
    cfg_amqp_hashing_t hashing;
    cfg_strlist_t tags;
} cfg_amqp_user_t;

/* A user's permissions in one vhost: RabbitMQ's configure / write / read
 * regular expressions (POSIX extended here; "" matches no name). */
typedef struct cfg_amqp_perm {
    char *user, *vhost;
    char *configure, *write, *read;
} cfg_amqp_perm_t;

/* A bridge between an AMQP exchange and a RocketMQ topic (docs/amqp.md,
 * "Both protocols on one data set"): routing_key is "tag" or
 * "property:NAME"; exchange_type is direct | fanout | topic | headers. */
typedef struct cfg_amqp_bridge {
    char *vhost, *exchange, *exchange_type, *topic, *routing_key;
} cfg_amqp_bridge_t;

/* An operator policy for the AMQP queues it matches (amqp.queue_policies):
 * the first entry whose vhost and queue (exact) or pattern (POSIX ERE,
 * matched anywhere in the name) match applies. */
typedef struct cfg_amqp_qpolicy {
    char *vhost;
    char *queue;   /* exact name, or NULL */
    char *pattern; /* regex, or NULL; exactly one of queue / pattern */
    bool paused;
    int rate_limit; /* deliveries per second to the queue's consumers; 0: none */
    int burst;      /* token bucket size; 0: rate_limit */
    cfg_strlist_t retry_delays; /* durations ("500ms", "1s", "2m", "1h") */
} cfg_amqp_qpolicy_t;

/* A vhost's own limits (amqp.vhost_limits). */
typedef struct cfg_amqp_vlimit {
    char *vhost;
    int64_t max_message_size; /* 0: amqp.max_message_size */
} cfg_amqp_vlimit_t;

/* The amqp section.  With no users, the gateway has RabbitMQ's default
 * user guest/guest (and, with no permissions either, full permissions on
 * vhost "/"). */
typedef struct cfg_amqp {
    char *listen;            /* HOST:PORT, or "" / "off" */
    int frame_max;           /* proposed in connection.tune */
    int heartbeat;           /* seconds; 0 disables */
    int channel_max;
    int consumer_timeout_ms; /* 0 disables */
    int64_t max_message_size;
    int64_t flow_control_bytes;   /* appends in flight: publishers blocked */
    char *memory_high_watermark;  /* "0.4" (of RAM) or "2GiB"; see below */
    struct {
        cfg_amqp_user_t *v;
        size_t n;
    } users;
    cfg_strlist_t vhosts;
    struct {
        cfg_amqp_perm_t *v;
        size_t n;
    } permissions;
    cfg_strlist_t loopback_users;
    struct {
        cfg_amqp_bridge_t *v;
        size_t n;
    } bridges;
    char *server_product; /* connection.start's server-properties product */
    char *tls_listen;     /* AMQPS HOST:PORT (certificates: the tls section);
                             NULL, "" or "off": none */
    struct {
        cfg_amqp_qpolicy_t *v;
        size_t n;
    } queue_policies;
    struct {
        cfg_amqp_vlimit_t *v;
        size_t n;
    } vhost_limits;
} cfg_amqp_t;

/* A user of RocketMQ 5's ACL (auth.users): the access key a gRPC client
 * signs as (Credential=) and the secret key it signs with; an admin user
 * (RocketMQ's Super user) passes every ACL.  The same users may log in to
 * the AMQP gateway (PLAIN / AMQPLAIN: user name = access key, password =
 * secret key). */
typedef struct cfg_auth_user {
    char *access_key;
    char *secret_key;
    bool admin;
} cfg_auth_user_t;

/* One ACL entry (auth.acls): RocketMQ 5's policy entry for one user. */
typedef struct cfg_auth_acl {
    char *user;              /* an auth.users access key */
    char *resource;          /* "Topic:T", "Group:G", "Topic:pre*", "Topic:*", "*" */
    cfg_strlist_t actions;   /* Pub Sub Create Update Delete Get List All */
    bool deny;               /* YAML: decision: Allow | Deny */
    cfg_strlist_t source_ips; /* addresses or CIDRs; [] = from anywhere */
} cfg_auth_acl_t;

/* The auth section: authentication and ACLs of gRPC clients. */
typedef struct cfg_auth {
    bool enabled;
    int max_clock_skew_s; /* x-mq-date-time this far from now is refused */
    struct {
        cfg_auth_user_t *v;
        size_t n;
    } users;
    struct {
        cfg_auth_acl_t *v;
        size_t n;
    } acls;
    cfg_strlist_t admin_tokens; /* bearer tokens of the admin API (secrets) */
} cfg_auth_t;

/* All strings and arrays are owned by the cfg_t and released by cfg_free().
 * String-valued enums (log.level, store.mode, store.flush) always hold one
 * of their documented values in lower case. */
typedef struct cfg {
    struct {
        char *grpc_listen, *http_listen; /* HOST:PORT */
        int threads;             /* 0 = number of cores */
        int shutdown_timeout_ms;
        bool auto_create_topics;
        int64_t max_inflight_bytes;      /* admission bound, whole server */
        int64_t max_conn_inflight_bytes; /* admission bound, per connection */
    } server;
    struct {
        char *level;             /* trace|debug|info|warn|error|off */
    } log;
    struct {
        char *mode;              /* local | remote | cluster */
        char *data_dir;
        char *flush;             /* sync | async */
        int flush_interval_ms;
        int64_t segment_size;
        int retention_hours;
        int index_mem_entries;   /* message id / key index, in memory */
        cfg_strlist_t endpoints; /* remote: gantry-store HOST:PORTs */
        int remote_timeout_ms;   /* remote: one request's deadline */
        cfg_strlist_t etcd;      /* cluster: etcd client HOST:PORTs */
        char *cluster_name;      /* cluster: keys under /gantry/<name>/ */
    } store;
    struct {
        int max_delay_ms;         /* delay messages: farthest ahead */
        int64_t max_batch_bytes;  /* bodies of one SendMessage, in total */
        int tx_check_after_ms;    /* half message unresolved this long */
        int tx_check_interval_ms; /* orphan check period */
        int tx_max_checks;        /* then discarded */
    } message;
    struct {                      /* gantry-store only */
        char *listen, *http_listen; /* HOST:PORT */
        int dedup_entries;        /* append de-dup window: entries, 0 off */
        int dedup_window_ms;      /* ... and how long one is kept */
    } store_server;
    struct {                      /* gantry-store: issue 12 foundation */
        cfg_strlist_t etcd;       /* etcd client HOST:PORTs; [] = off */
        char *name;               /* cluster name: /gantry/<name>/... */
        char *node_id;            /* "" = the listen address */
        char *advertise;          /* "" = store_server.listen */
        int lease_ttl_s;
        /* replication (store-server/ss_repl*.c) */
        int replicas;             /* R: members of the replica set */
        int min_insync;           /* writes need this many in sync */
        int replica_lag_ms;       /* a follower this late leaves the set */
    } cluster;
    struct {
        int max_label_sets;       /* per metric family, then "_other" */
    } metrics;
    struct {                      /* message trace (proxy/service/px_trace.c) */
        cfg_strlist_t topics, groups; /* traced; "*" = all */
        int buffer_events;        /* bounded buffer; full: drop and count */
        int flush_ms;             /* flush period */
    } trace;
    cfg_amqp_t amqp;
    cfg_auth_t auth;
    struct {
        char *mode;        /* disabled | permissive | enforcing (gRPC port) */
        char *cert_file;   /* PEM chain; NULL when unset */
        char *key_file;    /* PEM private key; NULL when unset */
        char *ca_file;     /* PEM roots for client certificates; NULL: none */
        char *client_auth; /* none | optional | require */
        bool http;         /* HTTPS on the operator (HTTP) port */
    } tls;
    cfg_topic_t *topics;
    size_t n_topics;
    cfg_group_t *groups;
    size_t n_groups;
} cfg_t;

/* Fills *cfg with the defaults and no topics or groups.  Aborts if memory
 * for the default strings cannot be allocated (start-up only).  Free with
 * cfg_free(). */
void cfg_init(cfg_t *cfg);

/* Releases everything *cfg owns and zeroes it.  NULL-safe; idempotent. */
void cfg_free(cfg_t *cfg);

/* Loads the YAML file at path (borrowed).  On success the old contents of
 * *cfg are freed and replaced by the file's values on top of the defaults;
 * on failure *cfg is untouched and err (borrowed, may be NULL) receives one
 * line "path:LINE: key.path: message".  Returns GT_OK, GT_EINVAL (invalid
 * config), GT_EIO (cannot read) or GT_ENOMEM. */
gt_err_t cfg_load_file(cfg_t *cfg, const char *path, char *err, size_t errlen);

/* As cfg_load_file() for the len bytes at yaml (borrowed); name is used in
 * place of the file name in messages. */
gt_err_t cfg_load_string(cfg_t *cfg, const char *name, const char *yaml,
                         size_t len, char *err, size_t errlen);

/* Sets one key, e.g. ("server.grpc_listen", "127.0.0.1:9000"), validated
 * through the same table as the file (value is read like a plain YAML
 * scalar).  Only scalar keys of the mapping sections (server, log, store,
 * message, store_server, amqp) can be set; an alias (server.amqp_listen) sets the key it
 * stands for.  On failure *cfg is untouched and err gets "key.path: message".
 * Returns GT_OK, GT_EINVAL or GT_ENOMEM.  path and value are borrowed. */
gt_err_t cfg_set(cfg_t *cfg, const char *path, const char *value, char *err,
                 size_t errlen);

/* Writes the effective config as YAML that cfg_load_file() accepts back
 * and that reloads to an equal config. */
void cfg_print(const cfg_t *cfg, FILE *out);

/* Writes the Markdown reference (docs/config.md), generated from the
 * descriptor tables: every key with type, default, range and doc. */
void cfg_write_doc(FILE *out);

/* Name rules shared with the proxy (RocketMQ's TopicValidator and group
 * checks): charset ^[%|a-zA-Z0-9_-]+$, at most 127 (topic) or 120 (group)
 * characters, reserved system names refused.  Return GT_OK, or GT_EINVAL
 * with a reason (no key path) in why (may be NULL). */
/* amqp.memory_high_watermark: a fraction of the memory limit with a
 * decimal point ("0.4", 0 to 1: *rel set, *abs 0) or a byte count with an
 * optional unit k/kB (1000), KiB (1024), MB, MiB, GB, GiB ("2GB": *abs set,
 * *rel -1), as RabbitMQ's vm_memory_high_watermark .relative / .absolute. */
gt_err_t cfg_watermark_parse(const char *v, double *rel, uint64_t *abs, char *why,
                             size_t whylen);
/* A duration of the config ("250ms", "1s", "5m", "2h", "1d"): 1 ms to 30
 * days, in milliseconds; GT_EINVAL with a reason in why (may be NULL). */
gt_err_t cfg_duration_ms(const char *s, int64_t *ms, char *why, size_t whylen);

/* A source address of auth.acls: an IPv4 or IPv6 address, optionally
 * with /PREFIX-LENGTH.  GT_OK with the address (network order, IPv4 in
 * the first 4 bytes), *family AF_INET / AF_INET6 and *prefix (the full
 * length without one); GT_EINVAL.  The config check and the proxy's
 * matching use this one parser. */
gt_err_t cfg_cidr_parse(const char *s, uint8_t addr[16], int *family, int *prefix);

gt_err_t cfg_topic_name_check(const char *name, char *why, size_t whylen);
gt_err_t cfg_group_name_check(const char *name, char *why, size_t whylen);

#endif
