/* gantry-store: the store node.  Opens the local engine (as gantry does in
 * local mode) and serves it over gRPC as gantry.store.v1.Store
 * (docs/store-protocol.md) on the shared runtime (rpc/), with the same
 * conventions as gantry: a YAML config plus flag overrides, --check-config,
 * /healthz /readyz /metrics on the HTTP endpoint, SIGTERM/SIGINT for a
 * graceful stop (sigwait on the main thread).  Exit status: 0 after a
 * clean stop, 1 on a config or start-up error, 2 on bad usage.  The
 * start-up steps it shares with gantry are in common/gt_start.c. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cfg.h"
#include "ss_cluster.h"
#include "gt_log.h"
#include "gt_start.h"
#include "px_exec.h"
#include "px_http.h"
#include "px_storage_metrics.h"
#include "px_rpc.h"
#include "ss_int.h"
#include "st.h"

/* Room above message.max_batch_bytes for properties and framing, as gantry. */
#define SS_BATCH_OVERHEAD_BYTES (16LL * 1024 * 1024 + 64 * 1024)

static void usage(FILE *out)
{
    fprintf(out,
            "usage: gantry-store [options]\n"
            "  --config FILE          read FILE (YAML); default: built-in defaults\n"
            "  --data-dir DIR         store.data_dir\n"
            "  --listen H:P           store_server.listen (default 0.0.0.0:10911)\n"
            "  --http-listen H:P      store_server.http_listen (default 0.0.0.0:10912)\n"
            "  --log-level LEVEL      trace|debug|info|warn|error|off\n"
            "  --node-id ID           cluster.node_id (e.g. the pod's name)\n"
            "  --advertise H:P        cluster.advertise (the address peers and\n"
            "                         proxies use)\n"
            "  --repair-store         truncate the commitlog at damage below the\n"
            "                         last synced position instead of refusing to start\n"
            "  --check-config FILE    validate FILE and exit 0 (valid) or 1\n"
            "  --print-config         print the effective config and exit\n"
            "  --version              print the version\n");
}

enum {
    OPT_CONFIG = 256, OPT_DATA_DIR, OPT_LISTEN, OPT_HTTP, OPT_LOG, OPT_CHECK,
    OPT_PRINT, OPT_VERSION, OPT_HELP, OPT_REPAIR, OPT_NODE_ID, OPT_ADVERTISE
};

static const struct option ss_opts[] = {
    {"config", required_argument, NULL, OPT_CONFIG},
    {"data-dir", required_argument, NULL, OPT_DATA_DIR},
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"http-listen", required_argument, NULL, OPT_HTTP},
    {"log-level", required_argument, NULL, OPT_LOG},
    {"check-config", required_argument, NULL, OPT_CHECK},
    {"print-config", no_argument, NULL, OPT_PRINT},
    {"version", no_argument, NULL, OPT_VERSION},
    {"help", no_argument, NULL, OPT_HELP},
    {"repair-store", no_argument, NULL, OPT_REPAIR},
    {"node-id", required_argument, NULL, OPT_NODE_ID},
    {"advertise", required_argument, NULL, OPT_ADVERTISE},
    {NULL, 0, NULL, 0},
};

static int parse_args(int argc, char **argv, gt_start_args_t *a)
{
    static const char *const paths[] = {
        [OPT_DATA_DIR - OPT_DATA_DIR] = "store.data_dir",
        [OPT_LISTEN - OPT_DATA_DIR] = "store_server.listen",
        [OPT_HTTP - OPT_DATA_DIR] = "store_server.http_listen",
        [OPT_LOG - OPT_DATA_DIR] = "log.level",
        [OPT_NODE_ID - OPT_DATA_DIR] = "cluster.node_id",
        [OPT_ADVERTISE - OPT_DATA_DIR] = "cluster.advertise",
    };
    int c;

    while ((c = getopt_long(argc, argv, "", ss_opts, NULL)) != -1) {
        switch (c) {
        case OPT_CONFIG:
            a->config = optarg;
            break;
        case OPT_DATA_DIR:
        case OPT_LISTEN:
        case OPT_HTTP:
        case OPT_LOG:
        case OPT_NODE_ID:
        case OPT_ADVERTISE:
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
        case OPT_VERSION:
            printf("gantry-store %s\n", GANTRY_VERSION);
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
        fprintf(stderr, "gantry-store: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    return -1;
}

static gt_err_t open_store(const cfg_t *cfg, bool repair, const st_exec_t *ex,
                           st_store_t **out, const char **engine,
                           st_store_t **inner)
{
    st_store_t *st = NULL;
    gt_err_t rc;

    if ((rc = gt_start_open_local(cfg, repair, &st)) != GT_OK)
        return rc;
    *engine = st->ops->name;
    if (inner != NULL)
        *inner = st; /* owned by the wrapper from here */
    if ((rc = st_exec_open(st, ex, out)) != GT_OK) {
        st_close(st);
        if (inner != NULL)
            *inner = NULL;
    }
    return rc;
}

/* Replication (ss_repl.h) opens and closes the engine with the node's
 * role: the served store and its metadata watcher hang on srv. */
typedef struct ss_engine_ctx {
    const cfg_t *cfg;
    bool repair;
    px_exec_t *exec;
    ss_srv_t *srv;
} ss_engine_ctx_t;

static gt_err_t engine_open(void *arg, st_store_t **local)
{
    ss_engine_ctx_t *e = arg;
    st_store_t *store = NULL;
    ss_watch_t *watch;
    const char *name = NULL;
    gt_err_t rc;

    if ((rc = open_store(e->cfg, e->repair, px_exec_store(e->exec), &store,
                         &name, local)) != GT_OK)
        return rc;
    if ((watch = ss_watch_start(store)) == NULL) {
        st_close(store);
        return GT_ENOMEM;
    }
    ss_dedup_forget(e->srv->dedup); /* answers of an earlier leadership */
    pthread_rwlock_wrlock(&e->srv->late_lock);
    e->srv->engine = name;
    e->srv->watch = watch;
    e->srv->store = store;
    pthread_rwlock_unlock(&e->srv->late_lock);
    return GT_OK;
}

static void engine_close(void *arg)
{
    ss_engine_ctx_t *e = arg;
    st_store_t *store;
    ss_watch_t *watch;

    pthread_rwlock_wrlock(&e->srv->late_lock);
    store = e->srv->store;
    watch = e->srv->watch;
    e->srv->store = NULL;
    e->srv->watch = NULL;
    pthread_rwlock_unlock(&e->srv->late_lock);
    if (watch != NULL)
        ss_watch_stop(watch, store);
    st_close(store);
}

/* /metrics lines (HTTP thread). */
typedef struct ss_metrics_src {
    px_rpc_server_t *rpc;
    ss_srv_t *srv;
    ss_cluster_t *cluster;  /* NULL: not in a cluster */
    st_store_t *local; /* the engine, for its I/O figures */
} ss_metrics_src_t;

static void ss_metrics(void *arg, FILE *out)
{
    ss_metrics_src_t *m = arg;
    px_rpc_stats_t rs;
    uint64_t dd_entries, dd_items;
    size_t watchers = 0;

    px_rpc_server_stats(m->rpc, &rs);
    ss_dedup_counts(m->srv->dedup, &dd_entries, &dd_items);
    /* The watcher comes and goes with the engine (replication opens and
     * closes it): none on a follower or in standby. */
    pthread_rwlock_rdlock(&m->srv->late_lock);
    if (m->srv->watch != NULL)
        watchers = ss_watch_count(m->srv->watch);
    pthread_rwlock_unlock(&m->srv->late_lock);
    fprintf(out,
            "# HELP gantry_store_grpc_calls_total gRPC calls dispatched to a method.\n"
            "# TYPE gantry_store_grpc_calls_total counter\n"
            "gantry_store_grpc_calls_total %llu\n"
            "# HELP gantry_store_grpc_overload_rejected_total Calls refused by "
            "admission control.\n"
            "# TYPE gantry_store_grpc_overload_rejected_total counter\n"
            "gantry_store_grpc_overload_rejected_total %llu\n"
            "# HELP gantry_store_parked_polls Pop and Pull calls waiting now.\n"
            "# TYPE gantry_store_parked_polls gauge\n"
            "gantry_store_parked_polls %llu\n"
            "# HELP gantry_store_dedup_hits_total Appends answered from the "
            "de-dup window (retries).\n"
            "# TYPE gantry_store_dedup_hits_total counter\n"
            "gantry_store_dedup_hits_total %llu\n"
            "# HELP gantry_store_dedup_entries Appends remembered for de-dup.\n"
            "# TYPE gantry_store_dedup_entries gauge\n"
            "gantry_store_dedup_entries %llu\n"
            "# HELP gantry_store_meta_watchers Open MetaWatch streams.\n"
            "# TYPE gantry_store_meta_watchers gauge\n"
            "gantry_store_meta_watchers %zu\n",
            (unsigned long long)rs.calls,
            (unsigned long long)rs.rejected_overload,
            (unsigned long long)atomic_load(&m->srv->parked_now),
            (unsigned long long)atomic_load(&m->srv->dedup_hits),
            (unsigned long long)dd_entries, watchers);
    fprintf(out,
            "# HELP gantry_store_append_many_calls_total AppendMany calls "
            "(appends that clients sent together).\n"
            "# TYPE gantry_store_append_many_calls_total counter\n"
            "gantry_store_append_many_calls_total %llu\n"
            "# HELP gantry_store_append_many_appends_total Appends that came in "
            "AppendMany calls.\n"
            "# TYPE gantry_store_append_many_appends_total counter\n"
            "gantry_store_append_many_appends_total %llu\n",
            (unsigned long long)atomic_load(&m->srv->many_calls),
            (unsigned long long)atomic_load(&m->srv->many_appends));
    if (m->cluster != NULL)
        ss_cluster_metrics(m->cluster, out);
    if (m->local != NULL) {
        st_io_stats_t io;

        if (st_local_io_stats(m->local, &io) == GT_OK)
            px_storage_metrics_write(out, &io);
    }
}

static int serve(const cfg_t *cfg, bool repair)
{
    st_store_t *store = NULL;
    px_exec_t *exec = NULL;
    px_method_table_t methods;
    px_rpc_server_t *rpc = NULL;
    px_http_t *http = NULL;
    ss_srv_t srv;
    ss_metrics_src_t msrc;
    ss_cluster_t *cluster = NULL;
    ss_engine_ctx_t engine;
    ss_watch_t *watch = NULL;
    const char *role_env = getenv("GANTRY_TEST_REPL_ROLE");
    bool test_role = role_env != NULL && role_env[0] != '\0';
    char err[512];
    sigset_t sigs;
    int sig = 0, status = 1;
    px_rpc_options_t ro = {
        .listen = cfg->store_server.listen,
        .threads = cfg->server.threads,
        .shutdown_timeout_ms = cfg->server.shutdown_timeout_ms,
        .max_receive_bytes = cfg->message.max_batch_bytes + SS_BATCH_OVERHEAD_BYTES,
        .max_inflight_bytes = cfg->server.max_inflight_bytes,
        .max_conn_inflight_bytes = cfg->server.max_conn_inflight_bytes,
        .app = &srv,
    };
    gt_tls_files_t tls_files = {cfg->tls.cert_file, cfg->tls.key_file, NULL,
                                GT_TLS_CLIENT_NONE};

    memset(&srv, 0, sizeof(srv));
    atomic_init(&srv.replica_set, -1);
    ss_poll_init(&srv);
    if (getenv("GANTRY_TEST_LATE_ATTACH") != NULL) {
        srv.test_late_attach = true;
        GT_LOG(WARN, "main", "test mode: polls attach only after their call's interrupt");
    }
    px_method_table_init(&methods);
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP); /* reloads the HTTPS certificate (tls.http) */
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    GT_LOG(INFO, "main", "gantry-store %s starting: grpc=%s http=%s data_dir=%s flush=%s",
           GANTRY_VERSION, cfg->store_server.listen, cfg->store_server.http_listen,
           cfg->store.data_dir, cfg->store.flush);
    if (strcmp(cfg->store.mode, "local") != 0)
        GT_LOG(WARN, "main", "store.mode %s is for gantry proxies; a store node "
               "always keeps its messages in store.data_dir", cfg->store.mode);
    if (gt_start_mkdir(cfg->store.data_dir) != 0) {
        GT_LOG(ERROR, "main", "cannot create data dir %s: %s",
               cfg->store.data_dir, strerror(errno));
        goto out;
    }
    if (ss_data_id_load(cfg->store.data_dir, srv.data_id) != GT_OK) {
        GT_LOG(ERROR, "main", "cannot write the data identity into %s", cfg->store.data_dir);
        goto out;
    }
    if ((exec = px_exec_new(cfg->server.threads)) == NULL) {
        GT_LOG(ERROR, "main", "cannot start the executor threads");
        goto out;
    }
    memset(&msrc, 0, sizeof(msrc));
    engine.cfg = cfg;
    engine.repair = repair;
    engine.exec = exec;
    engine.srv = &srv;
    if (ss_cluster_new(cfg, &cluster) != GT_OK) {
        GT_LOG(ERROR, "main", "cannot start the cluster control");
        goto out;
    }
    /* Replicated (a replica set member): the engine opens when the node
     * leads (ss_repl_lead, called by the cluster control or the test
     * role); until then store RPCs answer "not leader". */
    if (test_role || cluster != NULL) {
        ss_repl_config_t rc = {
            .node_id = cfg->cluster.node_id != NULL && cfg->cluster.node_id[0]
                           ? cfg->cluster.node_id : cfg->store_server.listen,
            .data_dir = cfg->store.data_dir,
            .flush_async = strcmp(cfg->store.flush, "async") == 0,
            .min_insync = cfg->cluster.min_insync,
            .replica_lag_ms = cfg->cluster.replica_lag_ms,
            .engine = {engine_open, engine_close, &engine},
        };
        if (cluster != NULL) {
            ss_cluster_events(cluster, &rc.events);
            ss_cluster_publish_set(cluster, &srv.replica_set);
        }
        if (ss_repl_new(&rc, &srv.repl) != GT_OK)
            goto out;
    } else {
        /* the engine's I/O figures on /metrics (not yet on a node whose
         * engine replication opens and closes) */
        if (open_store(cfg, repair, px_exec_store(exec), &store, &srv.engine,
                       &msrc.local) != GT_OK)
            goto out;
        srv.store = store;
    }
    srv.data_dir = cfg->store.data_dir;
    if (cfg->store_server.dedup_entries > 0 &&
        (srv.dedup = ss_dedup_new((uint32_t)cfg->store_server.dedup_entries,
                                  cfg->store_server.dedup_window_ms)) == NULL) {
        GT_LOG(ERROR, "main", "out of memory");
        goto out;
    }
    if (srv.dedup == NULL)
        GT_LOG(WARN, "main", "de-duplication of retried appends is off "
               "(store_server.dedup_entries 0): a proxy's retry after a lost answer "
               "stores its messages again");
    if (store != NULL && (srv.watch = ss_watch_start(store)) == NULL) {
        GT_LOG(ERROR, "main", "out of memory");
        goto out;
    }
    if (ss_service_register(&methods) != GT_OK) {
        GT_LOG(ERROR, "main", "cannot build the method table");
        goto out;
    }
    if (px_http_start_tls(cfg->store_server.http_listen, cfg->tls.http ? &tls_files : NULL,
                          &http, err, sizeof(err)) != GT_OK) {
        GT_LOG(ERROR, "main", "%s", err);
        goto out;
    }
    ro.after_event = px_exec_after_event;
    ro.after_event_ctx = exec;
    if (px_rpc_server_start(&ro, &methods, &rpc, err, sizeof(err)) != GT_OK) {
        GT_LOG(ERROR, "main", "%s", err);
        goto out;
    }
    msrc.rpc = rpc;
    msrc.srv = &srv;
    msrc.cluster = cluster;
    px_http_set_metrics(http, ss_metrics, &msrc);
    px_http_set_ready(http, true);
    if (srv.repl != NULL) {
        bool used;
        if (ss_repl_test_role(srv.repl, &used) != GT_OK) {
            GT_LOG(ERROR, "main", "cannot take the test replication role");
            goto out;
        }
    }
    /* The control on etcd drives replication's role from now on. */
    if (cluster != NULL && ss_cluster_run(cluster, srv.repl) != GT_OK) {
        GT_LOG(ERROR, "main", "cannot start the cluster control");
        goto out;
    }
    GT_LOG(INFO, "main", "ready: gantry.store.v1 on %s (port %d, %zu methods), HTTP on %s",
           cfg->store_server.listen, px_rpc_server_port(rpc), methods.count,
           cfg->store_server.http_listen);

    for (;;) {
        while (sigwait(&sigs, &sig) != 0)
            ;
        if (sig != SIGHUP)
            break;
        GT_LOG(INFO, "main", "received SIGHUP: reloading the HTTPS certificate");
        if (px_http_tls_reload(http, err, sizeof(err)) != GT_OK)
            GT_LOG(ERROR, "main", "HTTPS reload refused, the old certificate stays: %s", err);
    }
    GT_LOG(INFO, "main", "received %s: stopping",
           sig == SIGTERM ? "SIGTERM" : "SIGINT");
    px_http_set_ready(http, false);
    px_http_set_metrics(http, NULL, NULL);
    ss_cluster_stop(cluster);
    cluster = NULL;
    /* Replication next: held answers and fetches end "not leader", the
     * engine it opened closes. */
    if (srv.repl != NULL)
        ss_repl_stand_down(srv.repl);
    /* Stop the calls (parked polls answer ESHUTDOWN, watch streams end),
     * then the store (its last answers still run on the executor), then
     * the gRPC server's workers. */
    if (px_rpc_server_shutdown(rpc) != GT_OK)
        GT_LOG(WARN, "main", "some calls were cancelled at shutdown");
    /* The watch leaves under the write lock (a late interrupt reads it
     * under the read lock, and then finds none), and stops after. */
    pthread_rwlock_wrlock(&srv.late_lock); /* no give-back enters the store */
    watch = srv.watch;
    srv.watch = NULL;
    srv.store = NULL;
    pthread_rwlock_unlock(&srv.late_lock);
    ss_watch_stop(watch, store);
    st_close(store);
    store = NULL;
    px_rpc_server_destroy(rpc);
    rpc = NULL;
    status = 0;
    GT_LOG(INFO, "main", "stopped");
out:
    if (http != NULL)
        px_http_set_metrics(http, NULL, NULL);
    ss_cluster_stop(cluster);
    if (srv.repl != NULL)
        ss_repl_stand_down(srv.repl);
    if (rpc != NULL)
        px_rpc_server_shutdown(rpc);
    pthread_rwlock_wrlock(&srv.late_lock);
    watch = srv.watch;
    srv.watch = NULL;
    srv.store = NULL;
    pthread_rwlock_unlock(&srv.late_lock);
    ss_watch_stop(watch, store);
    st_close(store);
    if (rpc != NULL)
        px_rpc_server_destroy(rpc);
    ss_repl_free(srv.repl);
    px_exec_free(exec);
    px_http_stop(http);
    px_method_table_free(&methods);
    ss_dedup_free(srv.dedup);
    ss_poll_fini(&srv);
    return status;
}

int main(int argc, char **argv)
{
    gt_start_args_t args;
    cfg_t cfg;
    int rc;

    memset(&args, 0, sizeof(args));
    if ((rc = parse_args(argc, argv, &args)) >= 0)
        return rc;
    if ((rc = gt_start_config("gantry-store", &args, false, &cfg)) >= 0)
        return rc;
    rc = serve(&cfg, args.repair);
    cfg_free(&cfg);
    return rc;
}
