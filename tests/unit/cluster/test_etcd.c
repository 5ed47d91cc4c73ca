/* cluster/gt_etcd.c against a real etcd (Debian etcd-server 3.4): a private
 * single-member etcd started per suite on loopback ports (in TMPDIR, stopped
 * by PID).  put/get/delete, compare-and-swap transactions from two clients
 * at once (exactly one winner per key; no lost increment), a lease kept
 * alive past its TTL and gone after the keepalive stops, a prefix watch
 * seeing puts and deletes in order, and a watch and writes going on after
 * etcd is SIGKILLed and restarted.  Waits are for conditions, bounded
 * generously (a failure is a timeout, never a measure of speed). */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#include <CUnit/Basic.h>

#include "gt_elect.h"
#include "gt_etcd.h"

#define WAIT_MS 20000

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* ---- a private etcd ------------------------------------------------------ */

static char data_dir[512];
static char endpoint[64];
static int client_port, peer_port;
static pid_t etcd_pid = -1;

static bool port_free(int port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    bool ok = bind(s, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(s);
    return ok;
}

/* Below the ephemeral range, as the integration harness does. */
static int pick_port(int avoid)
{
    for (int i = 0; i < 200; i++) {
        int p = 10000 + rand() % 22000;
        if (p != avoid && p + 1 != avoid && port_free(p))
            return p;
    }
    return -1;
}

static bool etcd_start(void)
{
    char cu[64], pu[64], cluster[96], log[600];
    snprintf(cu, sizeof(cu), "http://127.0.0.1:%d", client_port);
    snprintf(pu, sizeof(pu), "http://127.0.0.1:%d", peer_port);
    snprintf(cluster, sizeof(cluster), "default=%s", pu);
    snprintf(log, sizeof(log), "%s.log", data_dir);
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a crashed test */
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execlp("etcd", "etcd", "--data-dir", data_dir,
               "--listen-client-urls", cu, "--advertise-client-urls", cu,
               "--listen-peer-urls", pu, "--initial-advertise-peer-urls", pu,
               "--initial-cluster", cluster, (char *)NULL);
        _exit(127);
    }
    etcd_pid = pid;
    return true;
}

static void etcd_kill(void)
{
    if (etcd_pid > 0) {
        kill(etcd_pid, SIGKILL);
        waitpid(etcd_pid, NULL, 0);
        etcd_pid = -1;
    }
}

/* ---- a result slot ------------------------------------------------------- */

typedef struct res {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    gt_err_t err;
    int64_t rev, num, id;
    bool ok;
    size_t n;
    char key[8][64];
    char val[8][64];
} res_t;

static void res_init(res_t *r)
{
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
}

static void res_fini(res_t *r)
{
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
}

static void res_finish(res_t *r)
{
    pthread_mutex_lock(&r->mu);
    r->done = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static bool res_wait(res_t *r)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += WAIT_MS / 1000;
    pthread_mutex_lock(&r->mu);
    while (!r->done) {
        if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) == ETIMEDOUT)
            break;
    }
    bool d = r->done;
    pthread_mutex_unlock(&r->mu);
    return d;
}

static void copy_str(char *dst, const uint8_t *p, size_t n)
{
    if (n > 63)
        n = 63;
    if (n)
        memcpy(dst, p, n);
    dst[n] = 0;
}

static void on_get(void *arg, gt_err_t err, int64_t rev,
                   const gt_etcd_kv_t *kvs, size_t n)
{
    res_t *r = arg;
    r->err = err;
    r->rev = rev;
    r->n = n;
    for (size_t i = 0; i < n && i < 8; i++) {
        copy_str(r->key[i], kvs[i].key, kvs[i].key_len);
        copy_str(r->val[i], kvs[i].value, kvs[i].value_len);
        if (i == 0)
            r->num = kvs[i].mod_revision;
    }
    res_finish(r);
}

static void on_write(void *arg, gt_err_t err, int64_t rev, int64_t deleted)
{
    res_t *r = arg;
    r->err = err;
    r->rev = rev;
    r->num = deleted;
    res_finish(r);
}

static void on_txn(void *arg, gt_err_t err, bool ok, int64_t rev)
{
    res_t *r = arg;
    r->err = err;
    r->ok = ok;
    r->rev = rev;
    res_finish(r);
}

static void on_lease(void *arg, gt_err_t err, int64_t id, int64_t ttl)
{
    res_t *r = arg;
    r->err = err;
    r->id = id;
    r->num = ttl;
    res_finish(r);
}

/* Synchronous wrappers for the tests. */
static gt_err_t get(gt_etcd_t *e, const char *key, bool prefix, res_t *r)
{
    res_init(r);
    gt_err_t err = gt_etcd_get(e, key, prefix, on_get, r);
    if (err == GT_OK)
        err = res_wait(r) ? r->err : GT_ETIMEDOUT;
    res_fini(r);
    return err;
}

static gt_err_t put(gt_etcd_t *e, const char *key, const char *val,
                    int64_t lease)
{
    res_t r;
    res_init(&r);
    gt_err_t err = gt_etcd_put(e, key, val, strlen(val), lease, on_write, &r);
    if (err == GT_OK)
        err = res_wait(&r) ? r.err : GT_ETIMEDOUT;
    res_fini(&r);
    return err;
}

static gt_err_t del(gt_etcd_t *e, const char *key, bool prefix,
                    int64_t *deleted)
{
    res_t r;
    res_init(&r);
    gt_err_t err = gt_etcd_delete(e, key, prefix, on_write, &r);
    if (err == GT_OK)
        err = res_wait(&r) ? r.err : GT_ETIMEDOUT;
    if (deleted)
        *deleted = r.num;
    res_fini(&r);
    return err;
}

static gt_etcd_t *client(void)
{
    const char *eps[] = { endpoint };
    gt_etcd_opts_t o = { .endpoints = eps, .n_endpoints = 1 };
    gt_etcd_t *e = NULL;
    CU_ASSERT_EQUAL_FATAL(gt_etcd_new(&o, &e), GT_OK);
    return e;
}

/* Waits until etcd answers a read (it starts in about a second). */
static bool wait_ready(gt_etcd_t *e)
{
    int64_t end = now_ms() + WAIT_MS;
    res_t r;
    while (now_ms() < end) {
        if (get(e, "/ready", false, &r) == GT_OK)
            return true;
        usleep(50000);
    }
    return false;
}

static gt_etcd_t *ec; /* the suite's client */

static int suite_init(void)
{
    srand((unsigned)getpid() ^ (unsigned)time(NULL));
    const char *tmp = getenv("TMPDIR");
    snprintf(data_dir, sizeof(data_dir), "%s/gt-etcd-XXXXXX",
             tmp ? tmp : "/tmp");
    if (!mkdtemp(data_dir))
        return -1;
    client_port = pick_port(0);
    peer_port = pick_port(client_port);
    if (client_port < 0 || peer_port < 0)
        return -1;
    snprintf(endpoint, sizeof(endpoint), "127.0.0.1:%d", client_port);
    if (!etcd_start())
        return -1;
    const char *eps[] = { endpoint };
    gt_etcd_opts_t o = { .endpoints = eps, .n_endpoints = 1 };
    if (gt_etcd_new(&o, &ec) != GT_OK)
        return -1;
    return wait_ready(ec) ? 0 : -1;
}

static int suite_clean(void)
{
    gt_etcd_free(ec);
    etcd_kill();
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s.log'", data_dir, data_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- tests --------------------------------------------------------------- */

static void test_put_get_delete(void)
{
    res_t r;
    CU_ASSERT_EQUAL(put(ec, "/t1/a", "one", 0), GT_OK);
    CU_ASSERT_EQUAL(put(ec, "/t1/b", "two", 0), GT_OK);
    CU_ASSERT_EQUAL(put(ec, "/t10", "other", 0), GT_OK);
    CU_ASSERT_EQUAL(get(ec, "/t1/a", false, &r), GT_OK);
    CU_ASSERT_EQUAL(r.n, 1);
    CU_ASSERT_STRING_EQUAL(r.val[0], "one");
    CU_ASSERT_EQUAL(get(ec, "/t1/", true, &r), GT_OK);
    CU_ASSERT_EQUAL_FATAL(r.n, 2);
    CU_ASSERT_STRING_EQUAL(r.key[0], "/t1/a");
    CU_ASSERT_STRING_EQUAL(r.key[1], "/t1/b");
    CU_ASSERT_STRING_EQUAL(r.val[1], "two");
    CU_ASSERT_EQUAL(get(ec, "/t1/missing", false, &r), GT_OK);
    CU_ASSERT_EQUAL(r.n, 0);
    int64_t deleted = 0;
    CU_ASSERT_EQUAL(del(ec, "/t1/", true, &deleted), GT_OK);
    CU_ASSERT_EQUAL(deleted, 2);
    CU_ASSERT_EQUAL(get(ec, "/t1", true, &r), GT_OK);
    CU_ASSERT_EQUAL(r.n, 1); /* /t10 is not under "/t1/" */
}

/* Two writers, each with its own client, in their own threads. */
typedef struct writer {
    gt_etcd_t *e;
    const char *name;
    int wins;         /* create-if-absent transactions won */
    int incs;         /* increments done */
    gt_err_t err;
} writer_t;

#define CAS_KEYS 40
#define INCS 25

static void *writer_main(void *arg)
{
    writer_t *w = arg;
    for (int i = 0; i < CAS_KEYS; i++) {
        char key[64];
        snprintf(key, sizeof(key), "/cas/key%d", i);
        gt_etcd_cmp_t c = { .key = key, .target = GT_ETCD_CMP_VERSION,
                            .op = GT_ETCD_EQ, .num = 0 };
        gt_etcd_op_t op = { .kind = GT_ETCD_OP_PUT, .key = key,
                            .value = w->name, .value_len = strlen(w->name) };
        res_t r;
        res_init(&r);
        gt_err_t err = gt_etcd_txn(w->e, &c, 1, &op, 1, NULL, 0, on_txn, &r);
        if (err == GT_OK)
            err = res_wait(&r) ? r.err : GT_ETIMEDOUT;
        if (err != GT_OK)
            w->err = err;
        else if (r.ok)
            w->wins++;
        res_fini(&r);
    }
    /* Increments: read, then write value+1 only if the value is unchanged. */
    while (w->incs < INCS && w->err == GT_OK) {
        res_t r;
        gt_err_t err = get(w->e, "/cas/counter", false, &r);
        if (err != GT_OK) {
            w->err = err;
            break;
        }
        char cur[64], next[64];
        snprintf(cur, sizeof(cur), "%s", r.n ? r.val[0] : "0");
        snprintf(next, sizeof(next), "%ld", atol(cur) + 1);
        gt_etcd_cmp_t c = { .key = "/cas/counter", .target = GT_ETCD_CMP_VALUE,
                            .op = GT_ETCD_EQ, .value = cur,
                            .value_len = strlen(cur) };
        gt_etcd_op_t op = { .kind = GT_ETCD_OP_PUT, .key = "/cas/counter",
                            .value = next, .value_len = strlen(next) };
        res_init(&r);
        err = gt_etcd_txn(w->e, &c, 1, &op, 1, NULL, 0, on_txn, &r);
        if (err == GT_OK)
            err = res_wait(&r) ? r.err : GT_ETIMEDOUT;
        if (err != GT_OK)
            w->err = err;
        else if (r.ok)
            w->incs++;
        res_fini(&r);
    }
    return NULL;
}

static void test_txn_cas_two_writers(void)
{
    CU_ASSERT_EQUAL_FATAL(put(ec, "/cas/counter", "0", 0), GT_OK);
    writer_t w[2] = { { .e = client(), .name = "A" },
                      { .e = client(), .name = "B" } };
    CU_ASSERT_FATAL(wait_ready(w[0].e) && wait_ready(w[1].e));
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, writer_main, &w[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    CU_ASSERT_EQUAL(w[0].err, GT_OK);
    CU_ASSERT_EQUAL(w[1].err, GT_OK);
    /* Every key created exactly once, by the writer whose value it holds. */
    CU_ASSERT_EQUAL(w[0].wins + w[1].wins, CAS_KEYS);
    int a = 0;
    for (int i = 0; i < CAS_KEYS; i++) {
        char key[64];
        res_t r;
        snprintf(key, sizeof(key), "/cas/key%d", i);
        CU_ASSERT_EQUAL(get(ec, key, false, &r), GT_OK);
        CU_ASSERT_EQUAL(r.n, 1);
        a += r.n == 1 && strcmp(r.val[0], "A") == 0;
    }
    CU_ASSERT_EQUAL(a, w[0].wins);
    /* No increment lost or doubled. */
    res_t r;
    CU_ASSERT_EQUAL(get(ec, "/cas/counter", false, &r), GT_OK);
    CU_ASSERT_STRING_EQUAL(r.val[0], "50");
    /* The failure branch runs when the compare fails. */
    gt_etcd_cmp_t c = { .key = "/cas/counter", .target = GT_ETCD_CMP_VERSION,
                        .op = GT_ETCD_EQ, .num = 0 };
    gt_etcd_op_t okop = { .kind = GT_ETCD_OP_PUT, .key = "/cas/counter",
                          .value = "x", .value_len = 1 };
    gt_etcd_op_t failop = { .kind = GT_ETCD_OP_DELETE, .key = "/cas/key0" };
    res_t tr;
    res_init(&tr);
    CU_ASSERT_EQUAL(gt_etcd_txn(ec, &c, 1, &okop, 1, &failop, 1, on_txn, &tr),
                    GT_OK);
    CU_ASSERT(res_wait(&tr));
    CU_ASSERT_EQUAL(tr.err, GT_OK);
    CU_ASSERT(!tr.ok);
    res_fini(&tr);
    CU_ASSERT_EQUAL(get(ec, "/cas/key0", false, &r), GT_OK);
    CU_ASSERT_EQUAL(r.n, 0);
    CU_ASSERT_EQUAL(get(ec, "/cas/counter", false, &r), GT_OK);
    CU_ASSERT_STRING_EQUAL(r.val[0], "50");
    gt_etcd_free(w[0].e);
    gt_etcd_free(w[1].e);
}

static void on_lost(void *arg)
{
    res_finish(arg);
}

static int64_t grant(gt_etcd_t *e, int64_t ttl)
{
    res_t r;
    res_init(&r);
    CU_ASSERT_EQUAL(gt_etcd_lease_grant(e, ttl, on_lease, &r), GT_OK);
    CU_ASSERT(res_wait(&r));
    CU_ASSERT_EQUAL(r.err, GT_OK);
    CU_ASSERT_EQUAL(r.num, ttl);
    int64_t id = r.id;
    res_fini(&r);
    return id;
}

static void test_lease_keepalive_and_expiry(void)
{
    const int64_t ttl = 4; /* a stall of 2 s (a loaded sanitizer run) still renews */
    int64_t id = grant(ec, ttl);
    CU_ASSERT_FATAL(id != 0);
    CU_ASSERT_EQUAL(put(ec, "/lease/node1", "up", id), GT_OK);
    res_t lost;
    res_init(&lost);
    gt_etcd_keepalive_t *k = NULL;
    CU_ASSERT_EQUAL_FATAL(gt_etcd_keepalive_start(ec, id, ttl, on_lost, &lost,
                                                  &k), GT_OK);
    /* Alive well past its TTL while the keepalive runs (several renewals:
     * the lease's remaining TTL gets reset, so this holds on any machine). */
    int64_t end = now_ms() + 3 * ttl * 1000;
    res_t r;
    while (now_ms() < end) {
        CU_ASSERT_EQUAL(get(ec, "/lease/node1", false, &r), GT_OK);
        CU_ASSERT_EQUAL_FATAL(r.n, 1);
        usleep(200000);
    }
    gt_etcd_keepalive_stop(k);
    CU_ASSERT(!lost.done);
    /* Without renewals etcd expires the lease and the key goes. */
    end = now_ms() + WAIT_MS;
    do {
        CU_ASSERT_EQUAL(get(ec, "/lease/node1", false, &r), GT_OK);
        if (r.n == 0)
            break;
        usleep(100000);
    } while (now_ms() < end);
    CU_ASSERT_EQUAL(r.n, 0);
    res_fini(&lost);

    /* A revoked lease: the keepalive reports it lost; its key is gone. */
    id = grant(ec, 30);
    CU_ASSERT_EQUAL(put(ec, "/lease/node2", "up", id), GT_OK);
    res_init(&lost);
    CU_ASSERT_EQUAL_FATAL(gt_etcd_keepalive_start(ec, id, 1, on_lost, &lost,
                                                  &k), GT_OK);
    res_t rv;
    res_init(&rv);
    CU_ASSERT_EQUAL(gt_etcd_lease_revoke(ec, id, on_write, &rv), GT_OK);
    CU_ASSERT(res_wait(&rv));
    CU_ASSERT_EQUAL(rv.err, GT_OK);
    res_fini(&rv);
    CU_ASSERT(res_wait(&lost));
    gt_etcd_keepalive_stop(k);
    res_fini(&lost);
    CU_ASSERT_EQUAL(get(ec, "/lease/node2", false, &r), GT_OK);
    CU_ASSERT_EQUAL(r.n, 0);
}

/* A cluster member that is down (here: the first endpoint listed, a port
 * nobody listens on) is passed over: every call and every lease renewal
 * goes to a member that answers.  (Before, calls and renewals all went to
 * the first endpoint: its member's death stopped every renewal, and a
 * store leader stood down although two of three members served.) */
static void test_dead_member_passed_over(void)
{
    char dead[64];
    int dp = pick_port(client_port);
    CU_ASSERT_FATAL(dp > 0);
    snprintf(dead, sizeof(dead), "127.0.0.1:%d", dp);
    const char *eps[] = { dead, endpoint, dead };
    gt_etcd_opts_t o = { .endpoints = eps, .n_endpoints = 3 };
    gt_etcd_t *e = NULL;
    CU_ASSERT_EQUAL_FATAL(gt_etcd_new(&o, &e), GT_OK);
    CU_ASSERT_FATAL(wait_ready(e));
    res_t r;
    for (int i = 0; i < 30; i++) {
        char v[16];
        snprintf(v, sizeof(v), "%d", i);
        CU_ASSERT_EQUAL(put(e, "/dead/k", v, 0), GT_OK);
        CU_ASSERT_EQUAL(get(e, "/dead/k", false, &r), GT_OK);
    }
    const int64_t ttl = 4; /* a stall of 2 s (a loaded sanitizer run) still renews */
    int64_t id = grant(e, ttl);
    CU_ASSERT_FATAL(id != 0);
    CU_ASSERT_EQUAL(put(e, "/dead/lease", "up", id), GT_OK);
    res_t lost;
    res_init(&lost);
    gt_etcd_keepalive_t *k = NULL;
    CU_ASSERT_EQUAL_FATAL(gt_etcd_keepalive_start(e, id, ttl, on_lost, &lost,
                                                  &k), GT_OK);
    /* The lease lives on over several TTLs (its key stays), and renewals
     * sent after the first TTL were answered: the validity they prove
     * reaches past start + 2 TTL (waited for, bounded generously). */
    int64_t start = now_ms();
    int64_t end = start + 3 * ttl * 1000;
    while (now_ms() < end) {
        CU_ASSERT_EQUAL(get(ec, "/dead/lease", false, &r), GT_OK);
        CU_ASSERT_EQUAL(r.n, 1);
        usleep(200000);
    }
    end = now_ms() + WAIT_MS;
    while (gt_etcd_keepalive_valid_until(k) <= start + 2 * ttl * 1000 && now_ms() < end)
        usleep(50000);
    CU_ASSERT(gt_etcd_keepalive_valid_until(k) > start + 2 * ttl * 1000);
    CU_ASSERT(!lost.done);
    gt_etcd_keepalive_stop(k);
    res_fini(&lost);
    gt_etcd_free(e);
}

/* A watch recording its events as "P key=value" / "D key". */
typedef struct wrec {
    pthread_mutex_t mu;
    char log[64][160];
    int n;
    int64_t last_rev;
    bool order_ok;
    gt_err_t ended;
} wrec_t;

static void on_events(void *arg, const gt_etcd_event_t *ev, size_t n)
{
    wrec_t *w = arg;
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < n; i++) {
        if (ev[i].kv.mod_revision <= w->last_rev)
            w->order_ok = false;
        w->last_rev = ev[i].kv.mod_revision;
        if (w->n < 64) {
            char k[64], v[64];
            copy_str(k, ev[i].kv.key, ev[i].kv.key_len);
            copy_str(v, ev[i].kv.value, ev[i].kv.value_len);
            if (ev[i].type == GT_ETCD_EV_PUT)
                snprintf(w->log[w->n], 160, "P %s=%s", k, v);
            else
                snprintf(w->log[w->n], 160, "D %s", k);
            w->n++;
        }
    }
    pthread_mutex_unlock(&w->mu);
}

static void on_end(void *arg, gt_err_t err)
{
    wrec_t *w = arg;
    pthread_mutex_lock(&w->mu);
    w->ended = err;
    pthread_mutex_unlock(&w->mu);
}

static bool wait_events(wrec_t *w, int n)
{
    int64_t end = now_ms() + WAIT_MS;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        int have = w->n;
        pthread_mutex_unlock(&w->mu);
        if (have >= n)
            return true;
        if (now_ms() > end)
            return false;
        usleep(10000);
    }
}

static void test_watch_prefix_in_order(void)
{
    res_t r;
    CU_ASSERT_EQUAL(get(ec, "/nothing", false, &r), GT_OK);
    int64_t from = r.rev + 1;
    wrec_t w = { .order_ok = true };
    pthread_mutex_init(&w.mu, NULL);
    gt_etcd_watch_cbs_t cbs = { on_events, on_end };
    gt_etcd_watch_t *wh = NULL;
    /* From a revision: events written before the stream opens still come. */
    CU_ASSERT_EQUAL(put(ec, "/w/a", "1", 0), GT_OK);
    CU_ASSERT_EQUAL_FATAL(gt_etcd_watch(ec, "/w/", true, from, &cbs, &w, &wh),
                          GT_OK);
    CU_ASSERT_EQUAL(put(ec, "/w/b", "2", 0), GT_OK);
    CU_ASSERT_EQUAL(put(ec, "/other", "x", 0), GT_OK);
    CU_ASSERT_EQUAL(put(ec, "/w/a", "3", 0), GT_OK);
    CU_ASSERT_EQUAL(del(ec, "/w/a", false, NULL), GT_OK);
    CU_ASSERT(wait_events(&w, 4));
    gt_etcd_watch_cancel(wh);
    CU_ASSERT_EQUAL_FATAL(w.n, 4);
    CU_ASSERT_STRING_EQUAL(w.log[0], "P /w/a=1");
    CU_ASSERT_STRING_EQUAL(w.log[1], "P /w/b=2");
    CU_ASSERT_STRING_EQUAL(w.log[2], "P /w/a=3");
    CU_ASSERT_STRING_EQUAL(w.log[3], "D /w/a");
    CU_ASSERT(w.order_ok);
    CU_ASSERT_EQUAL(w.ended, GT_OK);
    pthread_mutex_destroy(&w.mu);
}

/* etcd SIGKILLed and restarted on the same data dir and port: writes
 * succeed again once it is back and the watch resumes after the last event
 * it delivered (nothing lost, nothing repeated). */
static void test_restart(void)
{
    wrec_t w = { .order_ok = true };
    pthread_mutex_init(&w.mu, NULL);
    gt_etcd_watch_cbs_t cbs = { on_events, on_end };
    gt_etcd_watch_t *wh = NULL;
    res_t r0;
    CU_ASSERT_EQUAL_FATAL(get(ec, "/rs/", true, &r0), GT_OK);
    CU_ASSERT_EQUAL_FATAL(gt_etcd_watch(ec, "/rs/", true, r0.rev + 1, &cbs,
                                        &w, &wh), GT_OK);
    /* The watch is open once it sees a put (retry puts until it does). */
    int64_t end = now_ms() + WAIT_MS;
    int i = 0;
    char key[32];
    while (now_ms() < end) {
        snprintf(key, sizeof(key), "/rs/pre%d", i++);
        CU_ASSERT_EQUAL(put(ec, key, "v", 0), GT_OK);
        pthread_mutex_lock(&w.mu);
        int n = w.n;
        pthread_mutex_unlock(&w.mu);
        if (n > 0)
            break;
        usleep(20000);
    }
    CU_ASSERT_FATAL(wait_events(&w, i));
    int before = i;

    etcd_kill();
    CU_ASSERT_NOT_EQUAL(put(ec, "/rs/during", "x", 0), GT_OK);
    CU_ASSERT_FATAL(etcd_start());
    CU_ASSERT_FATAL(wait_ready(ec));
    CU_ASSERT_EQUAL(put(ec, "/rs/after", "1", 0), GT_OK);
    CU_ASSERT(wait_events(&w, before + 1));
    gt_etcd_watch_cancel(wh);
    CU_ASSERT_EQUAL(w.n, before + 1);
    CU_ASSERT_STRING_EQUAL(w.log[w.n - 1], "P /rs/after=1");
    CU_ASSERT(w.order_ok);
    CU_ASSERT_EQUAL(w.ended, GT_OK);
    pthread_mutex_destroy(&w.mu);
}

/* ---- leader election: contender processes --------------------------------- */

static char self_exe[4096];

/* A contender (this binary run as `test_etcd contender ENDPOINT PREFIX ID
 * FILE`): lease of 2 s kept alive, campaigns; appends "follower" to FILE
 * once it has lost a campaign and "leader EPOCH" when it wins; runs until
 * killed. */
static void on_won(void *arg, int64_t epoch)
{
    FILE *f = fopen(arg, "a");
    if (f) {
        fprintf(f, "leader %lld\n", (long long)epoch);
        fclose(f);
    }
}

static int contender_main(char **argv)
{
    snprintf(endpoint, sizeof(endpoint), "%s", argv[2]);
    const char *eps[] = { endpoint };
    gt_etcd_opts_t o = { .endpoints = eps, .n_endpoints = 1 };
    gt_etcd_t *e = NULL;
    if (gt_etcd_new(&o, &e) != GT_OK || !wait_ready(e))
        return 2;
    res_t r;
    res_init(&r);
    if (gt_etcd_lease_grant(e, 2, on_lease, &r) != GT_OK || !res_wait(&r) ||
        r.err != GT_OK)
        return 3;
    gt_etcd_keepalive_t *k = NULL;
    if (gt_etcd_keepalive_start(e, r.id, 2, NULL, NULL, &k) != GT_OK)
        return 4;
    gt_elect_t *el = NULL;
    if (gt_elect_start(e, argv[3], argv[4], r.id, on_won, argv[5], &el)
            != GT_OK)
        return 5;
    bool said = false;
    for (;;) { /* until SIGKILL */
        if (!said && gt_elect_lost(el) > 0) {
            FILE *f = fopen(argv[5], "a");
            if (f) {
                fputs("follower\n", f);
                fclose(f);
            }
            said = true;
        }
        usleep(20000);
    }
}

static pid_t contender_start(const char *prefix, const char *id,
                             const char *file)
{
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execl(self_exe, self_exe, "contender", endpoint, prefix, id, file,
              (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void read_file(const char *path, char *buf, size_t n)
{
    buf[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    size_t l = fread(buf, 1, n - 1, f);
    buf[l] = 0;
    fclose(f);
}

/* Two contenders: exactly one becomes leader (epoch 1) while the other
 * follows; SIGKILL of the leader: its lease expires and the other takes
 * over with epoch 2. */
static void test_election_takeover(void)
{
    char fa[600], fb[600];
    snprintf(fa, sizeof(fa), "%s.A", data_dir);
    snprintf(fb, sizeof(fb), "%s.B", data_dir);
    pid_t pa = contender_start("/el/g1", "A", fa);
    pid_t pb = contender_start("/el/g1", "B", fb);
    CU_ASSERT_FATAL(pa > 0 && pb > 0);
    char a[256], b[256];
    int64_t end = now_ms() + WAIT_MS;
    bool settled = false;
    while (now_ms() < end && !settled) {
        read_file(fa, a, sizeof(a));
        read_file(fb, b, sizeof(b));
        settled = (strstr(a, "leader") && strstr(b, "follower")) ||
                  (strstr(b, "leader") && strstr(a, "follower"));
        usleep(20000);
    }
    CU_ASSERT_FATAL(settled);
    bool a_won = strstr(a, "leader 1") != NULL;
    CU_ASSERT(a_won != (strstr(b, "leader 1") != NULL));
    CU_ASSERT(!strstr(a_won ? b : a, "leader"));
    res_t r;
    CU_ASSERT_EQUAL(get(ec, "/el/g1/leader", false, &r), GT_OK);
    CU_ASSERT_EQUAL_FATAL(r.n, 1);
    CU_ASSERT_STRING_EQUAL(r.val[0], a_won ? "A" : "B");
    CU_ASSERT_EQUAL(get(ec, "/el/g1/epoch", false, &r), GT_OK);
    CU_ASSERT_STRING_EQUAL(r.val[0], "1");

    pid_t winner = a_won ? pa : pb, other = a_won ? pb : pa;
    kill(winner, SIGKILL);
    waitpid(winner, NULL, 0);
    const char *of = a_won ? fb : fa;
    char o[256];
    end = now_ms() + WAIT_MS;
    do {
        read_file(of, o, sizeof(o));
        if (strstr(o, "leader 2"))
            break;
        usleep(20000);
    } while (now_ms() < end);
    CU_ASSERT_PTR_NOT_NULL(strstr(o, "leader 2"));
    CU_ASSERT_EQUAL(get(ec, "/el/g1/leader", false, &r), GT_OK);
    CU_ASSERT_EQUAL(r.n, 1);
    if (r.n == 1)
        CU_ASSERT_STRING_EQUAL(r.val[0], a_won ? "B" : "A");
    CU_ASSERT_EQUAL(get(ec, "/el/g1/epoch", false, &r), GT_OK);
    CU_ASSERT_STRING_EQUAL(r.val[0], "2");
    kill(other, SIGKILL);
    waitpid(other, NULL, 0);
    unlink(fa);
    unlink(fb);
}

/* gantry-store with a cluster section registers itself under a lease;
 * SIGKILL: the key goes once the lease expires. */
static void test_store_registers(void)
{
    int p1 = pick_port(client_port), p2 = pick_port(p1);
    CU_ASSERT_FATAL(p1 > 0 && p2 > 0);
    char conf[600], dir[600], log[600];
    snprintf(conf, sizeof(conf), "%s.store.yaml", data_dir);
    snprintf(dir, sizeof(dir), "%s.store", data_dir);
    snprintf(log, sizeof(log), "%s.store.log", data_dir);
    FILE *f = fopen(conf, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fprintf(f,
            "store_server:\n  listen: \"127.0.0.1:%d\"\n"
            "  http_listen: \"127.0.0.1:%d\"\n"
            "cluster:\n  etcd: [\"%s\"]\n  name: it\n  node_id: n1\n"
            "  lease_ttl_s: 2\n", p1, p2, endpoint);
    fclose(f);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(GANTRY_STORE_BIN, GANTRY_STORE_BIN, "--config", conf,
              "--data-dir", dir, (char *)NULL);
        _exit(127);
    }
    CU_ASSERT_FATAL(pid > 0);
    char want[64];
    snprintf(want, sizeof(want), "127.0.0.1:%d", p1);
    res_t r;
    int64_t end = now_ms() + WAIT_MS;
    do {
        CU_ASSERT_EQUAL(get(ec, "/gantry/it/stores/", true, &r), GT_OK);
        if (r.n > 0)
            break;
        usleep(50000);
    } while (now_ms() < end);
    CU_ASSERT_EQUAL_FATAL(r.n, 1);
    CU_ASSERT_STRING_EQUAL(r.key[0], "/gantry/it/stores/n1");
    CU_ASSERT_STRING_EQUAL(r.val[0], want);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    end = now_ms() + WAIT_MS;
    do {
        CU_ASSERT_EQUAL(get(ec, "/gantry/it/stores/", true, &r), GT_OK);
        if (r.n == 0)
            break;
        usleep(100000);
    } while (now_ms() < end);
    CU_ASSERT_EQUAL(r.n, 0);
    char cmd[2000];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s' '%s'", conf, dir, log);
    CU_ASSERT_EQUAL(system(cmd), 0);
}

int main(int argc, char **argv)
{
    if (argc == 6 && strcmp(argv[1], "contender") == 0)
        return contender_main(argv);
    ssize_t l = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
    if (l <= 0)
        return 1;
    self_exe[l] = 0;
    signal(SIGPIPE, SIG_IGN);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("gt_etcd", suite_init, suite_clean);
    CU_add_test(s, "put_get_delete", test_put_get_delete);
    CU_add_test(s, "txn_cas_two_writers", test_txn_cas_two_writers);
    CU_add_test(s, "lease_keepalive_and_expiry",
                test_lease_keepalive_and_expiry);
    CU_add_test(s, "dead_member_passed_over", test_dead_member_passed_over);
    CU_add_test(s, "watch_prefix_in_order", test_watch_prefix_in_order);
    CU_add_test(s, "restart", test_restart);
    CU_add_test(s, "election_takeover", test_election_takeover);
    CU_add_test(s, "store_registers", test_store_registers);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures() +
                     CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    etcd_kill();
    return fails ? 1 : 0;
}
