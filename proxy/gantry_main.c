/* gantry: process entry point.
 *
 * Reads the config (file, then flag overrides), starts the gRPC server and
 * the HTTP endpoint, and waits for SIGTERM/SIGINT on the main thread with
 * sigwait(): the signals are blocked in every thread, so no async handler
 * runs and shutdown happens in ordinary code.  Exit status: 0 after a
 * clean stop, 1 on a config or start-up error, 2 on bad usage.  The
 * start-up steps gantry-store shares are in common/gt_start.c. */
#include <errno.h>
#include <pthread.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cfg.h"
#include "gt_log.h"
#include "gt_start.h"
#include "gw_auth.h"
#include "gw_server.h"
#include "px_admin.h"
#include "px_dashboard.h"
#include "px_http.h"
#include "px_users.h"
#include "px_metrics.h"
#include "px_rpc.h"
#include "px_rpc_health.h"
#include "px_seed.h"
#include "px_service.h"
#include "px_storage_metrics.h"
#include "px_trace.h"
#include "st.h"
#include "st_cluster.h"
#include "st_place.h"
#include "st_remote.h"

/* The gRPC layer refuses a request message this far above
 * message.max_batch_bytes (it never reaches the service): room for the
 * properties and framing of a full batch (1024 messages x 16 KiB). */
#define GANTRY_BATCH_OVERHEAD_BYTES (16LL * 1024 * 1024 + 64 * 1024)

static void usage(FILE *out)
{
    fprintf(out,
            "usage: gantry [options]\n"
            "  --config FILE          read FILE (YAML); default: built-in defaults\n"
            "  --data-dir DIR         store.data_dir\n"
            "  --grpc-listen H:P      server.grpc_listen (default 0.0.0.0:8081)\n"
            "  --http-listen H:P      server.http_listen (default 0.0.0.0:5557)\n"
            "  --amqp-listen H:P      amqp.listen (default 0.0.0.0:5672; off: none)\n"
            "  --log-level LEVEL      trace|debug|info|warn|error|off\n"
            "  --repair-store         at start, truncate the commitlog at damage below\n"
            "                         the last synced position instead of refusing to\n"
            "                         start (the data after the damage is lost)\n"
            "  --check-config FILE    validate FILE and exit 0 (valid) or 1\n"
            "  --print-config         print the effective config and exit\n"
            "  --config-doc           print the config reference (Markdown)\n"
            "  --hash-password        read a password (one line) from stdin and print\n"
            "                         its hash for amqp.users[].password_hash\n"
            "  --version              print the version\n");
}

enum {
    OPT_CONFIG = 256, OPT_DATA_DIR, OPT_GRPC, OPT_HTTP, OPT_AMQP, OPT_LOG,
    OPT_CHECK, OPT_PRINT, OPT_DOC, OPT_VERSION, OPT_HELP, OPT_REPAIR,
    OPT_HASH
};

static const struct option gantry_opts[] = {
    {"config", required_argument, NULL, OPT_CONFIG},
    {"data-dir", required_argument, NULL, OPT_DATA_DIR},
    {"grpc-listen", required_argument, NULL, OPT_GRPC},
    {"http-listen", required_argument, NULL, OPT_HTTP},
    {"amqp-listen", required_argument, NULL, OPT_AMQP},
    {"log-level", required_argument, NULL, OPT_LOG},
    {"check-config", required_argument, NULL, OPT_CHECK},
    {"print-config", no_argument, NULL, OPT_PRINT},
    {"config-doc", no_argument, NULL, OPT_DOC},
    {"version", no_argument, NULL, OPT_VERSION},
    {"help", no_argument, NULL, OPT_HELP},
    {"repair-store", no_argument, NULL, OPT_REPAIR},
    {"hash-password", no_argument, NULL, OPT_HASH},
    {NULL, 0, NULL, 0},
};

/* --hash-password: the first line of stdin (without its line end) hashed
 * as RabbitMQ does.  Returns the exit status. */
static int hash_password(void)
{
    char line[4096], out[64];
    size_t n;

    if (fgets(line, sizeof(line), stdin) == NULL) {
        fprintf(stderr, "gantry: --hash-password: no password on stdin\n");
        return 1;
    }
    n = strcspn(line, "\r\n");
    line[n] = '\0';
    if (n == 0) {
        fprintf(stderr, "gantry: --hash-password: the password is empty (an empty "
                "password never logs in)\n");
        return 1;
    }
    if (gw_auth_hash_password(line, out, sizeof(out)) != GT_OK) {
        fprintf(stderr, "gantry: --hash-password: cannot get random bytes\n");
        return 1;
    }
    printf("%s\n", out);
    return 0;
}

/* Returns -1 to continue, else the exit status. */
static int parse_args(int argc, char **argv, gt_start_args_t *a)
{
    static const char *const paths[] = {
        [OPT_DATA_DIR - OPT_DATA_DIR] = "store.data_dir",
        [OPT_GRPC - OPT_DATA_DIR] = "server.grpc_listen",
        [OPT_HTTP - OPT_DATA_DIR] = "server.http_listen",
        [OPT_AMQP - OPT_DATA_DIR] = "amqp.listen",
        [OPT_LOG - OPT_DATA_DIR] = "log.level",
    };
    int c;

    while ((c = getopt_long(argc, argv, "", gantry_opts, NULL)) != -1) {
        switch (c) {
        case OPT_CONFIG:
            a->config = optarg;
            break;
        case OPT_DATA_DIR:
        case OPT_GRPC:
        case OPT_HTTP:
        case OPT_AMQP:
        case OPT_LOG:
            gt_start_args_set(a, paths[c - OPT_DATA_DIR], optarg);
            break;
        case OPT_CHECK:
            a->check = optarg;
            break;
        case OPT_PRINT:
            a->print = true;
            break;
        case OPT_REPAIR:
            a->repair = true;
            break;
        case OPT_DOC:
            cfg_write_doc(stdout);
            return 0;
        case OPT_HASH:
            return hash_password();
        case OPT_VERSION:
            printf("gantry %s\n", GANTRY_VERSION);
            return 0;
        case OPT_HELP:
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "gantry: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    return -1;
}

/* Test only: GANTRY_TEST_LATE_STORE=<max µs> makes every store answer come
 * late (a random 0..max µs, on another thread), as a remote store's would;
 * the integration suite runs against it (st_late_open). */
static gt_err_t wrap_late(st_store_t **st)
{
    const char *env = getenv("GANTRY_TEST_LATE_STORE");
    char *end;
    unsigned long us;
    st_store_t *late;
    gt_err_t rc;

    if (env == NULL || env[0] == '\0')
        return GT_OK;
    us = strtoul(env, &end, 10);
    if (*end != '\0' || us > 10000000) {
        GT_LOG(ERROR, "main", "GANTRY_TEST_LATE_STORE must be a number of µs");
        return GT_EINVAL;
    }
    if ((rc = st_late_open(*st, (uint32_t)us, (unsigned)getpid(), &late)) != GT_OK)
        return rc;
    GT_LOG(WARN, "main", "test mode: every store answer comes 0..%lu µs late", us);
    *st = late;
    return GT_OK;
}

/* The remote store client, unwrapped (for GetInfo; in cluster mode it
 * follows the leader of replica set 0); NULL in local mode. */
static st_store_t *remote_node;
/* Its data identity when gantry declared its topics and groups (px_seed.h). */
static char seed_seen[PX_SEED_ID_MAX];
/* store.mode cluster: the router over the replica sets (st_place.h), for
 * the admin API's /api/v1/cluster; NULL otherwise. */
static st_store_t *cluster_router;

typedef struct storage_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    gt_err_t err;
    uint64_t bytes;
} storage_wait_t;

static void storage_answer(void *arg, gt_err_t err, uint64_t bytes)
{
    storage_wait_t *w = arg;

    pthread_mutex_lock(&w->mu);
    w->err = err;
    w->bytes = bytes;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* rocketmq_storage_size in remote mode: the node's data directory (HTTP
 * thread; the answer comes on the store's executor). */
static gt_err_t remote_storage_bytes(void *arg, uint64_t *bytes)
{
    storage_wait_t w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, GT_OK, 0};

    st_remote_storage(arg, storage_answer, &w);
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    *bytes = w.bytes;
    return w.err;
}

/* store.mode remote: a client of the gantry-store node(s); waits (start-up)
 * up to a minute for one to answer.  Its completion-queue threads run the
 * answers they hand to the executor `ex` (px_exec) themselves, after each
 * completion, instead of waking an executor thread. */
static gt_err_t open_remote(const cfg_t *cfg, const st_exec_t *ex, st_store_t **st)
{
    st_remote_config_t rc = {.endpoints = (const char *const *)cfg->store.endpoints.v,
                             .n_endpoints = cfg->store.endpoints.n,
                             .timeout_ms = cfg->store.remote_timeout_ms,
                             .retries = -1,
                             .connect_wait_ms = 60000,
                             .after_event = px_exec_after_event,
                             .after_event_ctx = ex->ctx};
    gt_err_t err;

    if (rc.n_endpoints == 0) {
        GT_LOG(ERROR, "main", "store.mode remote needs store.endpoints (HOST:PORT of "
               "gantry-store)");
        return GT_EINVAL;
    }
    if ((err = st_remote_open(&rc, st)) != GT_OK)
        GT_LOG(ERROR, "main", "cannot reach the store node %s: %s",
               cfg->store.endpoints.v[0], gt_err_str(err));
    else
        remote_node = *st;
    return err;
}

/* store.mode cluster: clients that follow the store tier's replica set
 * leaders through etcd (st_cluster.h), routed by topic placement
 * (st_place.h); waits (start-up) up to a minute for set 0's leader to
 * answer.  Same threads as open_remote. */
static gt_err_t open_cluster(const cfg_t *cfg, const st_exec_t *ex, st_store_t **st)
{
    st_cluster_config_t cc = {.etcd = (const char *const *)cfg->store.etcd.v,
                              .n_etcd = cfg->store.etcd.n,
                              .name = cfg->store.cluster_name,
                              .leader_wait_ms = 60000,
                              .remote = {.timeout_ms = cfg->store.remote_timeout_ms,
                                         .retries = -1,
                                         .after_event = px_exec_after_event,
                                         .after_event_ctx = ex->ctx}};
    gt_err_t err;

    if (cc.n_etcd == 0) {
        GT_LOG(ERROR, "main", "store.mode cluster needs store.etcd (HOST:PORT of etcd)");
        return GT_EINVAL;
    }
    /* The router over the replica sets (st_place.h); set 0's client
     * answers GetInfo. */
    if ((err = st_place_open(&cc, st, &remote_node)) != GT_OK)
        GT_LOG(ERROR, "main", "no store cluster leader to use (etcd %s, cluster %s): %s",
               cfg->store.etcd.v[0], cfg->store.cluster_name, gt_err_str(err));
    else
        cluster_router = *st;
    return err;
}

/* Opens the embedded store, declares the config's topics and groups, and
 * wraps it so that its answers run on `ex` (the service's executor). */
static gt_err_t open_store(const cfg_t *cfg, bool repair, const st_exec_t *ex,
                           st_store_t **out, st_store_t **engine)
{
    st_store_t *st = NULL;
    gt_err_t rc;

    if (strcmp(cfg->store.mode, "remote") == 0) {
        if ((rc = open_remote(cfg, ex, &st)) != GT_OK)
            return rc;
        goto declare;
    }
    if (strcmp(cfg->store.mode, "cluster") == 0) {
        if ((rc = open_cluster(cfg, ex, &st)) != GT_OK)
            return rc;
        goto declare;
    }
    if ((rc = gt_start_open_local(cfg, repair, &st)) != GT_OK)
        return rc;
    *engine = st; /* for its I/O figures; owned by the wrappers from here */
declare:
    /* Idempotent: in remote and cluster modes every proxy declares them at
     * start. */
    /* The node's data identity before declaring: a change from it means
     * that what is declared here went into data that are gone. */
    if (remote_node != NULL)
        px_seed_identity(remote_node, seed_seen);
    rc = px_seed_declare(st, cfg);
    if (rc == GT_OK)
        rc = wrap_late(&st);
    if (rc == GT_OK && (rc = st_exec_open(st, ex, out)) == GT_OK)
        return GT_OK;
    st_close(st);
    *engine = NULL;
    return rc;
}

/* /metrics lines of the gRPC runtime (HTTP thread). */
static void rpc_metrics(void *arg, FILE *out)
{
    px_rpc_stats_t st;

    px_rpc_server_stats(arg, &st);
    fprintf(out,
            "# HELP gantry_grpc_calls_total gRPC calls dispatched to a method.\n"
            "# TYPE gantry_grpc_calls_total counter\n"
            "gantry_grpc_calls_total %llu\n"
            "# HELP gantry_grpc_overload_rejected_total Calls refused with "
            "TOO_MANY_REQUESTS by admission control.\n"
            "# TYPE gantry_grpc_overload_rejected_total counter\n"
            "gantry_grpc_overload_rejected_total %llu\n"
            "# HELP gantry_grpc_inflight_request_bytes Request bytes in flight.\n"
            "# TYPE gantry_grpc_inflight_request_bytes gauge\n"
            "gantry_grpc_inflight_request_bytes %lld\n"
            "# HELP gantry_grpc_inflight_request_bytes_peak Highest request "
            "bytes in flight since start.\n"
            "# TYPE gantry_grpc_inflight_request_bytes_peak gauge\n"
            "gantry_grpc_inflight_request_bytes_peak %lld\n"
            "# HELP gantry_grpc_admission_waiting_calls Calls whose request "
            "size is not known yet, waiting to be read.\n"
            "# TYPE gantry_grpc_admission_waiting_calls gauge\n"
            "gantry_grpc_admission_waiting_calls %llu\n",
            (unsigned long long)st.calls,
            (unsigned long long)st.rejected_overload,
            (long long)st.inflight_bytes, (long long)st.inflight_peak_bytes,
            (unsigned long long)st.admission_waiting);
}

/* /metrics: the gRPC runtime's lines, RocketMQ's metrics, then the AMQP
 * gateway's. */
typedef struct {
    px_rpc_server_t *rpc;
    px_metrics_t *rmq;
    px_svc_t *svc;
    const char *proxy_mode;
    gw_server_t *amqp; /* NULL: AMQP off */
    st_store_t *engine; /* the local engine (NULL: remote store) */
} metrics_src_t;

static void all_metrics(void *arg, FILE *out)
{
    metrics_src_t *m = arg;

    rpc_metrics(m->rpc, out);
    px_metrics_write(m->rmq, m->proxy_mode, out);
    px_svc_write_metrics(m->svc, out);
    if (m->engine != NULL) {
        st_io_stats_t io;

        if (st_local_io_stats(m->engine, &io) == GT_OK)
            px_storage_metrics_write(out, &io);
    }
    if (m->amqp != NULL)
        gw_server_metrics(m->amqp, out);
}

/* /api/: the AMQP gateway's operations (HTTP thread). */
static unsigned amqp_admin(void *arg, const char *method, const char *url, char *text,
                           size_t cap)
{
    return gw_server_admin(arg, method, url, text, cap);
}

/* The admin API's client list: the gateway's AMQP connections. */
static px_admin_amqp_conn_t *amqp_conns(void *arg, size_t *n)
{
    gw_conn_info_t *g = gw_server_conns(arg, n);
    px_admin_amqp_conn_t *v = *n > 0 ? calloc(*n, sizeof(*v)) : NULL;

    for (size_t i = 0; v != NULL && i < *n; i++) {
        v[i].id = g[i].id;
        v[i].since_ms = g[i].since_ms;
        v[i].channels = g[i].channels;
        v[i].tls = g[i].tls;
        memcpy(v[i].peer, g[i].peer, sizeof(v[i].peer));
        memcpy(v[i].user, g[i].user, sizeof(v[i].user));
        memcpy(v[i].vhost, g[i].vhost, sizeof(v[i].vhost));
        memcpy(v[i].product, g[i].product, sizeof(v[i].product));
        memcpy(v[i].version, g[i].version, sizeof(v[i].version));
    }
    if (v == NULL)
        *n = 0;
    free(g);
    return v;
}

static gt_err_t amqp_conn_close(void *arg, uint64_t id)
{
    return gw_server_conn_close(arg, id);
}

/* The gateway's message trace events into the service's trace. */
static bool amqp_trace_wants(void *arg, const char *vhost, const char *queue)
{
    (void)vhost;
    return px_trace_wants_queue(arg, queue);
}

static void amqp_trace_note(void *arg, const gw_trace_ev_t *e)
{
    px_trace_ext_t x = {.kind = e->kind, .msg_id = e->msg_id,
                        .amqp_message_id = e->amqp_message_id, .vhost = e->vhost,
                        .queue = e->queue, .client_id = e->conn, .addr = e->peer,
                        .result = e->result, .attempt = e->attempt, .offset = e->offset,
                        .body_size = e->body_size};

    px_trace_note_ext(arg, &x);
}

/* Many probe, client and store files: use the whole allowance. */
static void raise_fd_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            GT_LOG(WARN, "main", "cannot raise the open-file limit: %s",
                   strerror(errno));
    }
}

/* SIGHUP: the TLS listeners read their certificate files again (bad files
 * are refused and the old certificate stays). */
static void tls_reload(px_rpc_server_t *rpc, gw_server_t *amqp, px_http_t *http)
{
    char err[512];

    GT_LOG(INFO, "main", "received SIGHUP: reloading the TLS certificates");
    if (px_rpc_server_tls_reload(rpc, err, sizeof(err)) != GT_OK)
        GT_LOG(ERROR, "main", "gRPC TLS reload refused, the old certificate stays: %s",
               err);
    if (gw_server_tls_reload(amqp, err, sizeof(err)) != GT_OK)
        GT_LOG(ERROR, "main", "AMQPS reload refused, the old certificate stays: %s", err);
    if (px_http_tls_reload(http, err, sizeof(err)) != GT_OK)
        GT_LOG(ERROR, "main", "HTTPS reload refused, the old certificate stays: %s", err);
}

/* What the users of the admin API (px_users) are applied to. */
typedef struct auth_live {
    const cfg_t *cfg;
    px_svc_t *svc;
    gw_server_t *amqp;           /* NULL: AMQP off */
    px_admin_auth_t *admin_auth; /* NULL: auth.enabled off */
} auth_live_t;

static gt_err_t auth_apply(void *arg, const cfg_auth_t *eff, char *err, size_t errlen)
{
    auth_live_t *l = arg;
    gt_err_t rc;

    if ((rc = px_svc_set_auth(l->svc, eff, err, errlen)) != GT_OK ||
        (rc = gw_server_set_auth(l->amqp, &l->cfg->amqp, eff, err, errlen)) != GT_OK)
        return rc;
    if (l->admin_auth != NULL && (rc = px_admin_auth_update(l->admin_auth, eff)) != GT_OK)
        snprintf(err, errlen, "out of memory");
    return rc;
}

static int serve(const cfg_t *cfg, bool repair)
{
    st_store_t *store = NULL;
    px_exec_t *exec = NULL;
    px_svc_t *svc = NULL;
    px_method_table_t methods;
    px_rpc_server_t *rpc = NULL;
    px_http_t *http = NULL;
    px_admin_t *admin = NULL;
    px_admin_auth_t *admin_auth = NULL;
    px_users_t *users = NULL;
    px_seed_t *seed = NULL;
    auth_live_t live = {.cfg = cfg};
    px_health_t *health = NULL;
    px_metrics_t *rmq = NULL;
    gw_server_t *amqp = NULL;
    const char *amqp_listen = cfg->amqp.listen;
    bool amqp_on = amqp_listen != NULL && amqp_listen[0] != '\0' &&
                   strcmp(amqp_listen, "off") != 0;
    char err[512];
    metrics_src_t msrc = {0};
    sigset_t sigs;
    int sig = 0, status = 1;
    px_rpc_options_t ro = {
        .listen = cfg->server.grpc_listen,
        .threads = cfg->server.threads,
        .shutdown_timeout_ms = cfg->server.shutdown_timeout_ms,
        .max_receive_bytes =
            cfg->message.max_batch_bytes + GANTRY_BATCH_OVERHEAD_BYTES,
        .max_inflight_bytes = cfg->server.max_inflight_bytes,
        .max_conn_inflight_bytes = cfg->server.max_conn_inflight_bytes,
        .tls_mode = strcmp(cfg->tls.mode, "permissive") == 0  ? PX_TLS_PERMISSIVE
                    : strcmp(cfg->tls.mode, "enforcing") == 0 ? PX_TLS_ENFORCING
                                                              : PX_TLS_DISABLED,
    };
    gt_tls_files_t tls_files = {cfg->tls.cert_file, cfg->tls.key_file, cfg->tls.ca_file,
                                gt_tls_client_auth_parse(cfg->tls.client_auth)};

    /* Block the stop signals in every thread; the main thread sigwait()s. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP); /* reloads the TLS certificates */
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();

    GT_LOG(INFO, "main",
           "gantry %s starting: grpc=%s http=%s data_dir=%s store=%s flush=%s "
           "topics=%zu groups=%zu",
           GANTRY_VERSION, cfg->server.grpc_listen, cfg->server.http_listen,
           cfg->store.data_dir, cfg->store.mode, cfg->store.flush,
           cfg->n_topics, cfg->n_groups);
    if (strcmp(cfg->store.mode, "local") == 0 && gt_start_mkdir(cfg->store.data_dir) != 0) {
        GT_LOG(ERROR, "main", "cannot create data dir %s: %s",
               cfg->store.data_dir, strerror(errno));
        return 1;
    }
    px_method_table_init(&methods);
    /* Store answers run on the executor's threads, never on the store's. */
    if ((exec = px_exec_new(cfg->server.threads)) == NULL) {
        GT_LOG(ERROR, "main", "cannot start the executor threads");
        goto out;
    }
    if (open_store(cfg, repair, px_exec_store(exec), &store, &msrc.engine) != GT_OK)
        goto out;
    if ((rmq = px_metrics_new((size_t)cfg->metrics.max_label_sets)) == NULL ||
        (svc = px_svc_new(store, cfg)) == NULL) {
        GT_LOG(ERROR, "main", "out of memory");
        goto out;
    }
    ro.app = svc;
    px_svc_set_metrics(svc, rmq);
    if (remote_node != NULL)
        px_svc_set_storage_bytes(svc, remote_storage_bytes, remote_node);
    /* A store node restarted on a new (wiped) data dir gets the config's
     * topics and groups again. */
    if (remote_node != NULL &&
        px_seed_watch_start(remote_node, store, cfg, seed_seen, &seed) != GT_OK) {
        GT_LOG(ERROR, "main", "cannot start the seed thread");
        goto out;
    }
    ro.on_call_end = px_metrics_call_end;
    ro.on_call_end_ctx = rmq;
    ro.tls_files = &tls_files;
    ro.after_event = px_exec_after_event;
    ro.after_event_ctx = exec;
    if (px_svc_start(svc) != GT_OK) {
        GT_LOG(ERROR, "main", "cannot start the service threads");
        goto out;
    }
    if (px_service_register(&methods) != GT_OK ||
        (health = px_health_new()) == NULL ||
        px_health_register(health, &methods) != GT_OK) {
        GT_LOG(ERROR, "main", "cannot build the method table");
        goto out;
    }
    if (px_http_start_tls(cfg->server.http_listen, cfg->tls.http ? &tls_files : NULL, &http,
                          err, sizeof(err)) != GT_OK) {
        GT_LOG(ERROR, "main", "%s", err);
        goto out;
    }
    if (cfg->auth.enabled) { /* before any /api/ route or hook exists */
        if (px_admin_auth_new(&cfg->auth, &admin_auth) != GT_OK) {
            GT_LOG(ERROR, "main", "out of memory");
            goto out;
        }
        px_http_set_api_auth(http, px_admin_auth_check, admin_auth);
    }
    if (amqp_on) {
        /* Bodies up to amqp.max_message_size, unless a small segment_size
         * keeps the store's records smaller (gt_start_record_limit()). */
        uint64_t rec = gt_start_record_limit(cfg), room = gt_start_amqp_record_room(cfg);
        gw_server_opts_t ao = {.listen = amqp_listen, .amqp = &cfg->amqp, .auth = &cfg->auth,
                               .store = store,
                               .max_message = rec > room ? rec - room : 1,
                               .after_event = px_exec_after_event, .after_event_ctx = exec,
                               .auto_create_topics = cfg->server.auto_create_topics,
                               .tls_files = &tls_files,
                               .metrics_max_queues = (size_t)cfg->metrics.max_label_sets};
        gw_trace_hooks_t trace_hooks = {amqp_trace_wants, amqp_trace_note, px_svc_trace(svc)};
        if (px_svc_trace(svc) != NULL)
            ao.trace = &trace_hooks;
        if (cfg->amqp.tls_listen != NULL && cfg->amqp.tls_listen[0] != '\0' &&
            strcmp(cfg->amqp.tls_listen, "off") != 0)
            ao.tls_listen = cfg->amqp.tls_listen;
        if (ao.max_message < (uint64_t)cfg->amqp.max_message_size)
            GT_LOG(WARN, "main",
                   "AMQP bodies are limited to %llu bytes (amqp.max_message_size %lld): "
                   "store.segment_size is too small for more",
                   (unsigned long long)ao.max_message, (long long)cfg->amqp.max_message_size);
        if (gw_server_start(&ao, &amqp, err, sizeof(err)) != GT_OK) {
            GT_LOG(ERROR, "main", "%s", err);
            goto out;
        }
        /* SendMessage to a bridged topic also reaches the exchange's
         * queues: from the first call on (the gateway starts first) */
        px_svc_set_append_hook(svc, gw_server_append_hook, amqp);
    }
    /* The users made through the admin API, before any client comes. */
    live.svc = svc;
    live.amqp = amqp;
    live.admin_auth = admin_auth;
    if (px_users_new(store, cfg, auth_apply, &live, PX_ADMIN_WAIT_MS, &users, err,
                     sizeof(err)) != GT_OK) {
        GT_LOG(ERROR, "main", "%s", err);
        goto out;
    }
    if (px_rpc_server_start(&ro, &methods, &rpc, err, sizeof(err)) != GT_OK) {
        GT_LOG(ERROR, "main", "%s", err);
        goto out;
    }
    msrc.rpc = rpc;
    msrc.rmq = rmq;
    msrc.svc = svc;
    msrc.proxy_mode = cfg->store.mode;
    msrc.amqp = amqp;
    px_http_set_metrics(http, all_metrics, &msrc);
    if (amqp != NULL)
        px_http_set_admin(http, amqp_admin, amqp);
    if ((admin = px_admin_start(http, svc, store, cfg, users)) == NULL) {
        GT_LOG(ERROR, "main", "cannot start the admin API");
        goto out;
    }
    if (amqp != NULL)
        px_admin_set_amqp(admin, &(px_admin_amqp_ops_t){amqp_conns, amqp_conn_close, amqp});
    if (cluster_router != NULL)
        px_admin_set_cluster(admin, cluster_router);
    if (px_dashboard_register(http) != GT_OK)
        GT_LOG(WARN, "main", "cannot serve the web dashboard (/dashboard/)");
    px_http_set_ready(http, true);
    px_health_set_serving(health, true); /* grpc.health.v1: as /readyz */
    GT_LOG(INFO, "main", "ready: gRPC on %s (port %d, %zu methods, TLS %s), HTTP%s on %s, "
           "AMQP %s", cfg->server.grpc_listen, px_rpc_server_port(rpc), methods.count,
           cfg->tls.mode, cfg->tls.http ? "S" : "",
           cfg->server.http_listen, amqp_on ? amqp_listen : "off");
    if (amqp != NULL && gw_server_tls_port(amqp) != 0)
        GT_LOG(INFO, "main", "AMQPS on %s (port %d)", cfg->amqp.tls_listen,
               gw_server_tls_port(amqp));

    for (;;) {
        while (sigwait(&sigs, &sig) != 0)
            ;
        if (sig != SIGHUP)
            break;
        tls_reload(rpc, amqp, http);
    }
    GT_LOG(INFO, "main", "received %s: stopping",
           sig == SIGTERM ? "SIGTERM" : "SIGINT");
    px_seed_stop(seed);
    seed = NULL;
    px_http_set_ready(http, false);
    px_health_set_serving(health, false); /* watchers see NOT_SERVING */
    px_http_set_metrics(http, NULL, NULL);
    px_http_set_admin(http, NULL, NULL); /* before the gateway stops */
    px_admin_stop(admin); /* before the service and the store go */
    admin = NULL;
    /* Order: stop the calls, then the AMQP gateway (SendMessages to a
     * bridged topic go through it until the last call), then close the
     * store (its last callbacks may still release call references), then
     * free the gRPC server. */
    px_svc_drain(svc);
    {
        px_rpc_stats_t rs;
        px_rpc_server_stats(rpc, &rs);
        GT_LOG(INFO, "main", "gRPC: %llu calls, %llu refused for overload, "
               "request bytes in flight peaked at %lld",
               (unsigned long long)rs.calls,
               (unsigned long long)rs.rejected_overload,
               (long long)rs.inflight_peak_bytes);
    }
    if (px_rpc_server_shutdown(rpc) != GT_OK)
        GT_LOG(WARN, "main", "some calls were cancelled at shutdown");
    px_svc_set_append_hook(svc, NULL, NULL); /* no send enters the gateway any more */
    gw_server_stop(amqp); /* closes its connections, waits for its store requests */
    amqp = NULL;
    px_svc_stop(svc);
    st_close(store);
    store = NULL;
    px_rpc_server_destroy(rpc);
    rpc = NULL;
    status = 0;
    GT_LOG(INFO, "main", "stopped");
out:
    if (svc != NULL)
        px_svc_set_append_hook(svc, NULL, NULL);
    if (http != NULL) {
        px_http_set_metrics(http, NULL, NULL);
        px_http_set_admin(http, NULL, NULL);
        px_http_set_api_auth(http, NULL, NULL);
    }
    px_admin_stop(admin);
    px_seed_stop(seed);
    px_users_free(users); /* after the routes that use it */
    gw_server_stop(amqp);
    if (rpc != NULL)
        px_rpc_server_shutdown(rpc);
    px_svc_stop(svc);
    st_close(store);
    if (rpc != NULL)
        px_rpc_server_destroy(rpc);
    px_exec_free(exec); /* after the store: its last answers run there */
    px_svc_free(svc);
    px_http_stop(http);
    px_admin_auth_free(admin_auth);
    px_method_table_free(&methods);
    px_health_free(health); /* after the server and the table */
    px_metrics_free(rmq);   /* after the server and the service */
    return status;
}

int main(int argc, char **argv)
{
    gt_start_args_t args;
    cfg_t cfg;
    int rc;

    /* Large request buffers (up to message.max_batch_bytes) come and go
     * in bursts: keep them in their own mappings so that freeing returns
     * them to the system at once.  glibc would otherwise raise its mmap
     * threshold after the first such free and serve later ones from the
     * heap, which it keeps (the RSS stayed high after a burst). */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    /* The transport's receive buffers are small allocations: each thread
     * arena keeps its own high-water mark of them resident (glibc's
     * default is 8 arenas per core).  With 32 MiB batches at a 128 MiB
     * bound the arenas held 175 MiB beside the admitted bytes (peak RSS
     * 250-270 MiB); with two arenas none was left in thread arenas and
     * the peak was 183-256 MiB over several runs (bench-overload C). */
    mallopt(M_ARENA_MAX, 2);
    memset(&args, 0, sizeof(args));
    rc = parse_args(argc, argv, &args);
    if (rc >= 0)
        return rc;
    if ((rc = gt_start_config("gantry", &args, true, &cfg)) >= 0)
        return rc;
    rc = serve(&cfg, args.repair);
    cfg_free(&cfg);
    return rc;
}
