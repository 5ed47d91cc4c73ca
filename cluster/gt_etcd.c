/* gt_etcd: etcd v3 client on the gRPC client runtime (see gt_etcd.h). */
#include "gt_etcd.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "etcd/v3/etcd.pb-c.h"

#define WATCH_RETRY_MS 200

struct gt_etcd {
    px_rpc_client_t *rpc;
    int64_t timeout_ms;
};

gt_err_t gt_etcd_new(const gt_etcd_opts_t *opts, gt_etcd_t **out)
{
    if (!opts || !out || opts->n_endpoints == 0)
        return GT_EINVAL;
    gt_etcd_t *e = calloc(1, sizeof(*e));
    if (!e)
        return GT_ENOMEM;
    px_rpc_client_opts_t co = {
        .endpoints = opts->endpoints,
        .n_endpoints = opts->n_endpoints,
        .channels_per_endpoint = 1,
        .threads = 1,
        .backoff_initial_ms = 100,
        .backoff_max_ms = 1000,
        /* any member serves: a dead one is passed over */
        .prefer_ready = true,
        .exec = opts->exec,
    };
    gt_err_t err = px_rpc_client_new(&co, &e->rpc);
    if (err != GT_OK) {
        free(e);
        return err;
    }
    e->timeout_ms = opts->call_timeout_ms > 0 ? opts->call_timeout_ms : 5000;
    *out = e;
    return GT_OK;
}

void gt_etcd_free(gt_etcd_t *e)
{
    if (!e)
        return;
    px_rpc_client_free(e->rpc);
    free(e);
}

/* ---- helpers ------------------------------------------------------------ */

static gt_err_t status_err(grpc_status_code code)
{
    switch (code) {
    case GRPC_STATUS_OK: return GT_OK;
    case GRPC_STATUS_DEADLINE_EXCEEDED: return GT_ETIMEDOUT;
    case GRPC_STATUS_CANCELLED: return GT_ESHUTDOWN;
    default: return GT_EIO;
    }
}

static ProtobufCBinaryData bin(const void *p, size_t n)
{
    ProtobufCBinaryData b = { n, (uint8_t *)(uintptr_t)p };
    return b;
}

/* range_end for a prefix: the key with its last byte below 0xff + 1,
 * shortened; "\0" (everything) when every byte is 0xff.  buf >= len+1. */
static ProtobufCBinaryData prefix_end(const char *key, uint8_t *buf)
{
    size_t n = strlen(key);
    memcpy(buf, key, n);
    while (n > 0) {
        if (buf[n - 1] < 0xff) {
            buf[n - 1]++;
            return bin(buf, n);
        }
        n--;
    }
    buf[0] = 0;
    return bin(buf, 1);
}

static void kv_from(gt_etcd_kv_t *o, const Etcdserverpb__KeyValue *kv)
{
    o->key = kv->key.data;
    o->key_len = kv->key.len;
    o->value = kv->value.data;
    o->value_len = kv->value.len;
    o->create_revision = kv->create_revision;
    o->mod_revision = kv->mod_revision;
    o->version = kv->version;
    o->lease = kv->lease;
}

/* One unary call: packs `msg`, calls `method`, hands the bytes to done(). */
typedef struct ucall {
    void (*done)(struct ucall *u, gt_err_t err, const uint8_t *resp,
                 size_t len);
    void *cb;
    void *arg;
} ucall_t;

static void on_unary(void *arg, grpc_status_code code, const char *details,
                     const uint8_t *resp, size_t len)
{
    (void)details;
    ucall_t *u = arg;
    u->done(u, status_err(code), resp, len);
    free(u);
}

static gt_err_t unary(gt_etcd_t *e, const char *method,
                      const ProtobufCMessage *msg,
                      void (*done)(ucall_t *, gt_err_t, const uint8_t *,
                                   size_t),
                      void *cb, void *arg)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(n ? n : 1);
    ucall_t *u = malloc(sizeof(*u));
    if (!buf || !u) {
        free(buf);
        free(u);
        return GT_ENOMEM;
    }
    protobuf_c_message_pack(msg, buf);
    u->done = done;
    u->cb = cb;
    u->arg = arg;
    px_ccall_opts_t co = { .timeout_ms = e->timeout_ms, .endpoint = -1 };
    gt_err_t err = px_rpc_unary(e->rpc, method, buf, n, &co, on_unary, u,
                                NULL);
    free(buf);
    if (err != GT_OK)
        free(u);
    return err;
}

static int64_t hdr_rev(const Etcdserverpb__ResponseHeader *h)
{
    return h ? h->revision : 0;
}

/* ---- get / put / delete ------------------------------------------------- */

static void get_done(ucall_t *u, gt_err_t err, const uint8_t *resp,
                     size_t len)
{
    gt_etcd_get_cb cb = (gt_etcd_get_cb)u->cb;
    if (err != GT_OK) {
        cb(u->arg, err, 0, NULL, 0);
        return;
    }
    Etcdserverpb__RangeResponse *r =
        etcdserverpb__range_response__unpack(NULL, len, resp);
    if (!r) {
        cb(u->arg, GT_ECORRUPT, 0, NULL, 0);
        return;
    }
    gt_etcd_kv_t *kvs = r->n_kvs ? calloc(r->n_kvs, sizeof(*kvs)) : NULL;
    if (r->n_kvs && !kvs) {
        cb(u->arg, GT_ENOMEM, 0, NULL, 0);
    } else {
        for (size_t i = 0; i < r->n_kvs; i++)
            kv_from(&kvs[i], r->kvs[i]);
        cb(u->arg, GT_OK, hdr_rev(r->header), kvs, r->n_kvs);
    }
    free(kvs);
    etcdserverpb__range_response__free_unpacked(r, NULL);
}

gt_err_t gt_etcd_get(gt_etcd_t *e, const char *key, bool prefix,
                     gt_etcd_get_cb cb, void *arg)
{
    size_t kl = strlen(key);
    uint8_t *end = malloc(kl + 1);
    if (!end)
        return GT_ENOMEM;
    Etcdserverpb__RangeRequest rq = ETCDSERVERPB__RANGE_REQUEST__INIT;
    rq.key = bin(key, kl);
    if (prefix)
        rq.range_end = prefix_end(key, end);
    gt_err_t err = unary(e, "/etcdserverpb.KV/Range", &rq.base, get_done,
                         (void *)cb, arg);
    free(end);
    return err;
}

static void put_done(ucall_t *u, gt_err_t err, const uint8_t *resp,
                     size_t len)
{
    gt_etcd_write_cb cb = (gt_etcd_write_cb)u->cb;
    if (err != GT_OK) {
        cb(u->arg, err, 0, 0);
        return;
    }
    Etcdserverpb__PutResponse *r =
        etcdserverpb__put_response__unpack(NULL, len, resp);
    if (!r) {
        cb(u->arg, GT_ECORRUPT, 0, 0);
        return;
    }
    cb(u->arg, GT_OK, hdr_rev(r->header), 0);
    etcdserverpb__put_response__free_unpacked(r, NULL);
}

gt_err_t gt_etcd_put(gt_etcd_t *e, const char *key, const void *value,
                     size_t len, int64_t lease, gt_etcd_write_cb cb,
                     void *arg)
{
    Etcdserverpb__PutRequest rq = ETCDSERVERPB__PUT_REQUEST__INIT;
    rq.key = bin(key, strlen(key));
    rq.value = bin(value, len);
    rq.lease = lease;
    return unary(e, "/etcdserverpb.KV/Put", &rq.base, put_done, (void *)cb,
                 arg);
}

static void del_done(ucall_t *u, gt_err_t err, const uint8_t *resp,
                     size_t len)
{
    gt_etcd_write_cb cb = (gt_etcd_write_cb)u->cb;
    if (err != GT_OK) {
        cb(u->arg, err, 0, 0);
        return;
    }
    Etcdserverpb__DeleteRangeResponse *r =
        etcdserverpb__delete_range_response__unpack(NULL, len, resp);
    if (!r) {
        cb(u->arg, GT_ECORRUPT, 0, 0);
        return;
    }
    cb(u->arg, GT_OK, hdr_rev(r->header), r->deleted);
    etcdserverpb__delete_range_response__free_unpacked(r, NULL);
}

gt_err_t gt_etcd_delete(gt_etcd_t *e, const char *key, bool prefix,
                        gt_etcd_write_cb cb, void *arg)
{
    size_t kl = strlen(key);
    uint8_t *end = malloc(kl + 1);
    if (!end)
        return GT_ENOMEM;
    Etcdserverpb__DeleteRangeRequest rq =
        ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    rq.key = bin(key, kl);
    if (prefix)
        rq.range_end = prefix_end(key, end);
    gt_err_t err = unary(e, "/etcdserverpb.KV/DeleteRange", &rq.base,
                         del_done, (void *)cb, arg);
    free(end);
    return err;
}

/* ---- txn ---------------------------------------------------------------- */

static void txn_done(ucall_t *u, gt_err_t err, const uint8_t *resp,
                     size_t len)
{
    gt_etcd_txn_cb cb = (gt_etcd_txn_cb)u->cb;
    if (err != GT_OK) {
        cb(u->arg, err, false, 0);
        return;
    }
    Etcdserverpb__TxnResponse *r =
        etcdserverpb__txn_response__unpack(NULL, len, resp);
    if (!r) {
        cb(u->arg, GT_ECORRUPT, false, 0);
        return;
    }
    cb(u->arg, GT_OK, r->succeeded, hdr_rev(r->header));
    etcdserverpb__txn_response__free_unpacked(r, NULL);
}

typedef struct txn_ops {
    Etcdserverpb__RequestOp op;
    Etcdserverpb__PutRequest put;
    Etcdserverpb__DeleteRangeRequest del;
} txn_op_t;

static void txn_op_fill(txn_op_t *t, const gt_etcd_op_t *o)
{
    Etcdserverpb__RequestOp op = ETCDSERVERPB__REQUEST_OP__INIT;
    t->op = op;
    if (o->kind == GT_ETCD_OP_PUT) {
        Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
        t->put = p;
        t->put.key = bin(o->key, strlen(o->key));
        t->put.value = bin(o->value, o->value_len);
        t->put.lease = o->lease;
        t->op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
        t->op.request_put = &t->put;
    } else {
        Etcdserverpb__DeleteRangeRequest d =
            ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
        t->del = d;
        t->del.key = bin(o->key, strlen(o->key));
        t->op.request_case =
            ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
        t->op.request_delete_range = &t->del;
    }
}

gt_err_t gt_etcd_txn(gt_etcd_t *e, const gt_etcd_cmp_t *cmp, size_t n_cmp,
                     const gt_etcd_op_t *ok, size_t n_ok,
                     const gt_etcd_op_t *fail, size_t n_fail,
                     gt_etcd_txn_cb cb, void *arg)
{
    size_t n_all = n_cmp + n_ok + n_fail;
    Etcdserverpb__Compare *cs = calloc(n_cmp + 1, sizeof(*cs));
    Etcdserverpb__Compare **cp = calloc(n_cmp + 1, sizeof(*cp));
    txn_op_t *ts = calloc(n_ok + n_fail + 1, sizeof(*ts));
    Etcdserverpb__RequestOp **op = calloc(n_ok + n_fail + 1, sizeof(*op));
    gt_err_t err = GT_ENOMEM;
    (void)n_all;
    if (!cs || !cp || !ts || !op)
        goto out;
    for (size_t i = 0; i < n_cmp; i++) {
        Etcdserverpb__Compare c = ETCDSERVERPB__COMPARE__INIT;
        cs[i] = c;
        cs[i].key = bin(cmp[i].key, strlen(cmp[i].key));
        switch (cmp[i].op) {
        case GT_ETCD_EQ: cs[i].result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL; break;
        case GT_ETCD_NE: cs[i].result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__NOT_EQUAL; break;
        case GT_ETCD_LT: cs[i].result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__LESS; break;
        case GT_ETCD_GT: cs[i].result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__GREATER; break;
        }
        switch (cmp[i].target) {
        case GT_ETCD_CMP_VERSION:
            cs[i].target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION;
            cs[i].target_union_case =
                ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION;
            cs[i].version = cmp[i].num;
            break;
        case GT_ETCD_CMP_MOD:
            cs[i].target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
            cs[i].target_union_case =
                ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
            cs[i].mod_revision = cmp[i].num;
            break;
        case GT_ETCD_CMP_VALUE:
            cs[i].target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE;
            cs[i].target_union_case =
                ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
            cs[i].value = bin(cmp[i].value, cmp[i].value_len);
            break;
        }
        cp[i] = &cs[i];
    }
    for (size_t i = 0; i < n_ok + n_fail; i++) {
        txn_op_fill(&ts[i], i < n_ok ? &ok[i] : &fail[i - n_ok]);
        op[i] = &ts[i].op;
    }
    Etcdserverpb__TxnRequest rq = ETCDSERVERPB__TXN_REQUEST__INIT;
    rq.n_compare = n_cmp;
    rq.compare = cp;
    rq.n_success = n_ok;
    rq.success = op;
    rq.n_failure = n_fail;
    rq.failure = op + n_ok;
    err = unary(e, "/etcdserverpb.KV/Txn", &rq.base, txn_done, (void *)cb,
                arg);
out:
    free(cs);
    free(cp);
    free(ts);
    free(op);
    return err;
}

/* ---- leases ------------------------------------------------------------- */

static void grant_done(ucall_t *u, gt_err_t err, const uint8_t *resp,
                       size_t len)
{
    gt_etcd_lease_cb cb = (gt_etcd_lease_cb)u->cb;
    if (err != GT_OK) {
        cb(u->arg, err, 0, 0);
        return;
    }
    Etcdserverpb__LeaseGrantResponse *r =
        etcdserverpb__lease_grant_response__unpack(NULL, len, resp);
    if (!r) {
        cb(u->arg, GT_ECORRUPT, 0, 0);
        return;
    }
    if (r->error && r->error[0])
        cb(u->arg, GT_EIO, 0, 0);
    else
        cb(u->arg, GT_OK, r->id, r->ttl);
    etcdserverpb__lease_grant_response__free_unpacked(r, NULL);
}

gt_err_t gt_etcd_lease_grant(gt_etcd_t *e, int64_t ttl_s,
                             gt_etcd_lease_cb cb, void *arg)
{
    if (ttl_s <= 0)
        return GT_EINVAL;
    Etcdserverpb__LeaseGrantRequest rq =
        ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
    rq.ttl = ttl_s;
    return unary(e, "/etcdserverpb.Lease/LeaseGrant", &rq.base, grant_done,
                 (void *)cb, arg);
}

static void revoke_done(ucall_t *u, gt_err_t err, const uint8_t *resp,
                        size_t len)
{
    (void)resp;
    (void)len;
    ((gt_etcd_write_cb)u->cb)(u->arg, err, 0, 0);
}

gt_err_t gt_etcd_lease_revoke(gt_etcd_t *e, int64_t id, gt_etcd_write_cb cb,
                              void *arg)
{
    Etcdserverpb__LeaseRevokeRequest rq =
        ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
    rq.id = id;
    return unary(e, "/etcdserverpb.Lease/LeaseRevoke", &rq.base, revoke_done,
                 (void *)cb, arg);
}

/* Keepalive: a timer every period_ms; each tick starts one LeaseKeepAlive
 * exchange, whether or not earlier ones have been answered (a slow answer
 * does not hold back the next renewal), with a deadline of the TTL (an
 * answer later than that is of no use).  Each answer proves the lease
 * lived at its exchange's send time, so valid_until is the latest such
 * send time plus the TTL.  References: the owner's, a pending timer's, one
 * per open exchange. */
#define KA_MAX_OPEN 16   /* exchanges open at once (etcd unreachable) */
#define KA_PERIOD_MAX_MS 500

typedef struct ka_call {
    struct ka_call *next;
    struct gt_etcd_keepalive *k;
    px_ccall_t *call;
    int64_t sent_ms;
} ka_call_t;

struct gt_etcd_keepalive {
    gt_etcd_t *e;
    int64_t id;
    int64_t ttl_ms;
    int64_t period_ms;
    void (*on_lost)(void *arg);
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    int in_cb;
    bool stopped;
    bool lost;
    ka_call_t *open;        /* exchanges under way */
    int n_open;
    int64_t valid_until_ms; /* the lease lives at least until then */
};

static int64_t ka_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static void ka_unref(gt_etcd_keepalive_t *k)
{
    pthread_mutex_lock(&k->mu);
    int r = --k->refs;
    pthread_mutex_unlock(&k->mu);
    if (r == 0) {
        pthread_mutex_destroy(&k->mu);
        pthread_cond_destroy(&k->cv);
        free(k);
    }
}

static void ka_tick(void *arg);

static void ka_schedule(gt_etcd_keepalive_t *k)
{
    pthread_mutex_lock(&k->mu);
    bool go = !k->stopped && !k->lost;
    if (go)
        k->refs++;
    pthread_mutex_unlock(&k->mu);
    if (go && px_rpc_client_after(k->e->rpc, k->period_ms, ka_tick, k)
                  != GT_OK)
        ka_unref(k);
}

static void ka_msg(void *arg, const uint8_t *data, size_t len)
{
    ka_call_t *kc = arg;
    gt_etcd_keepalive_t *k = kc->k;
    Etcdserverpb__LeaseKeepAliveResponse *r =
        etcdserverpb__lease_keep_alive_response__unpack(NULL, len, data);
    if (!r)
        return;
    bool gone = r->ttl <= 0;
    int64_t ttl = r->ttl;
    etcdserverpb__lease_keep_alive_response__free_unpacked(r, NULL);
    if (!gone) {
        /* etcd renewed it on receipt, after we sent: from the send on it
         * lives for ttl at least. */
        pthread_mutex_lock(&k->mu);
        int64_t until = kc->sent_ms + ttl * 1000;
        if (until > k->valid_until_ms)
            k->valid_until_ms = until;
        pthread_mutex_unlock(&k->mu);
        return;
    }
    pthread_mutex_lock(&k->mu);
    bool call = !k->stopped && !k->lost;
    k->lost = true;
    if (call)
        k->in_cb++;
    pthread_mutex_unlock(&k->mu);
    if (!call)
        return;
    if (k->on_lost)
        k->on_lost(k->arg);
    pthread_mutex_lock(&k->mu);
    k->in_cb--;
    pthread_cond_broadcast(&k->cv);
    pthread_mutex_unlock(&k->mu);
}

/* The exchange ended (answered, failed or past its deadline): the next
 * tick renews again either way. */
static void ka_close(void *arg, grpc_status_code code, const char *details)
{
    (void)code;
    (void)details;
    ka_call_t *kc = arg;
    gt_etcd_keepalive_t *k = kc->k;
    pthread_mutex_lock(&k->mu);
    for (ka_call_t **pp = &k->open; *pp; pp = &(*pp)->next) {
        if (*pp == kc) {
            *pp = kc->next;
            k->n_open--;
            break;
        }
    }
    px_ccall_t *c = kc->call;
    kc->call = NULL;
    pthread_mutex_unlock(&k->mu);
    if (c)
        px_ccall_unref(c);
    free(kc);
    ka_unref(k); /* the exchange's */
}

static void ka_tick(void *arg)
{
    gt_etcd_keepalive_t *k = arg;
    pthread_mutex_lock(&k->mu);
    bool go = !k->stopped && !k->lost && k->n_open < KA_MAX_OPEN;
    ka_call_t *kc = go ? calloc(1, sizeof(*kc)) : NULL;
    if (kc) {
        k->refs++; /* the exchange's */
        kc->k = k;
        Etcdserverpb__LeaseKeepAliveRequest rq =
            ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;
        rq.id = k->id;
        uint8_t buf[16];
        size_t n = etcdserverpb__lease_keep_alive_request__pack(&rq, buf);
        static const px_stream_cbs_t cbs = { ka_msg, ka_close };
        px_ccall_opts_t co = { .timeout_ms = k->ttl_ms, .endpoint = -1 };
        kc->sent_ms = ka_now_ms();
        /* Callbacks run on another thread and take k->mu: they see kc
         * linked. */
        gt_err_t err = px_rpc_stream(k->e->rpc,
                                     "/etcdserverpb.Lease/LeaseKeepAlive",
                                     buf, n, &co, &cbs, kc, &kc->call);
        if (err == GT_OK) {
            kc->next = k->open;
            k->open = kc;
            k->n_open++;
        } else {
            free(kc);
            k->refs--; /* the owner's and the timer's remain */
        }
    }
    pthread_mutex_unlock(&k->mu);
    ka_schedule(k); /* the next renewal, answered or not */
    ka_unref(k);    /* the timer's */
}

gt_err_t gt_etcd_keepalive_start(gt_etcd_t *e, int64_t id, int64_t ttl_s,
                                 void (*on_lost)(void *arg), void *arg,
                                 gt_etcd_keepalive_t **out)
{
    if (ttl_s <= 0 || !out)
        return GT_EINVAL;
    gt_etcd_keepalive_t *k = calloc(1, sizeof(*k));
    if (!k)
        return GT_ENOMEM;
    k->e = e;
    k->id = id;
    k->ttl_ms = ttl_s * 1000;
    k->period_ms = k->ttl_ms / 3;
    if (k->period_ms > KA_PERIOD_MAX_MS)
        k->period_ms = KA_PERIOD_MAX_MS;
    if (k->period_ms < 100)
        k->period_ms = 100;
    k->on_lost = on_lost;
    k->arg = arg;
    k->refs = 2; /* the owner's, the first timer's */
    /* Granted before now by at most a call's time: assume half the TTL
     * until the first renewal answers. */
    k->valid_until_ms = ka_now_ms() + ttl_s * 1000 / 2;
    pthread_mutex_init(&k->mu, NULL);
    pthread_cond_init(&k->cv, NULL);
    gt_err_t err = px_rpc_client_after(e->rpc, 0, ka_tick, k);
    if (err != GT_OK) {
        pthread_mutex_destroy(&k->mu);
        pthread_cond_destroy(&k->cv);
        free(k);
        return err;
    }
    *out = k;
    return GT_OK;
}

int64_t gt_etcd_keepalive_valid_until(gt_etcd_keepalive_t *k)
{
    pthread_mutex_lock(&k->mu);
    int64_t t = k->lost ? 0 : k->valid_until_ms;
    pthread_mutex_unlock(&k->mu);
    return t;
}

void gt_etcd_keepalive_stop(gt_etcd_keepalive_t *k)
{
    if (!k)
        return;
    pthread_mutex_lock(&k->mu);
    k->stopped = true;
    while (k->in_cb > 0)
        pthread_cond_wait(&k->cv, &k->mu);
    for (ka_call_t *kc = k->open; kc; kc = kc->next)
        px_ccall_cancel(kc->call);
    pthread_mutex_unlock(&k->mu);
    ka_unref(k);
}

/* ---- watch -------------------------------------------------------------- */

struct gt_etcd_watch {
    gt_etcd_t *e;
    char *key;
    bool prefix;
    int64_t next_rev;      /* where a re-established stream starts */
    gt_etcd_watch_cbs_t cbs;
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    int in_cb;
    bool stopped;
    bool ended;
    px_ccall_t *call;
};

static void w_unref(gt_etcd_watch_t *w)
{
    pthread_mutex_lock(&w->mu);
    int r = --w->refs;
    pthread_mutex_unlock(&w->mu);
    if (r == 0) {
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
        free(w->key);
        free(w);
    }
}

/* Enters a user callback unless the watch is stopped/ended. */
static bool w_enter(gt_etcd_watch_t *w)
{
    pthread_mutex_lock(&w->mu);
    bool go = !w->stopped && !w->ended;
    if (go)
        w->in_cb++;
    pthread_mutex_unlock(&w->mu);
    return go;
}

static void w_leave(gt_etcd_watch_t *w)
{
    pthread_mutex_lock(&w->mu);
    w->in_cb--;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void w_end(gt_etcd_watch_t *w, gt_err_t err)
{
    if (!w_enter(w))
        return;
    if (w->cbs.on_end)
        w->cbs.on_end(w->arg, err);
    pthread_mutex_lock(&w->mu);
    w->ended = true;
    w->in_cb--;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void w_open(void *arg);

static void w_msg(void *arg, const uint8_t *data, size_t len)
{
    gt_etcd_watch_t *w = arg;
    Etcdserverpb__WatchResponse *r =
        etcdserverpb__watch_response__unpack(NULL, len, data);
    if (!r)
        return;
    if (r->compact_revision > 0) {
        etcdserverpb__watch_response__free_unpacked(r, NULL);
        w_end(w, GT_ERANGE);
        return;
    }
    if (r->n_events > 0) {
        gt_etcd_event_t *ev = calloc(r->n_events, sizeof(*ev));
        if (ev) {
            int64_t last = 0;
            for (size_t i = 0; i < r->n_events; i++) {
                Etcdserverpb__Event *x = r->events[i];
                ev[i].type = x->type == ETCDSERVERPB__EVENT__EVENT_TYPE__DELETE
                                 ? GT_ETCD_EV_DELETE : GT_ETCD_EV_PUT;
                if (x->kv)
                    kv_from(&ev[i].kv, x->kv);
                if (ev[i].kv.mod_revision > last)
                    last = ev[i].kv.mod_revision;
            }
            if (w_enter(w)) {
                w->cbs.on_events(w->arg, ev, r->n_events);
                pthread_mutex_lock(&w->mu);
                if (last + 1 > w->next_rev)
                    w->next_rev = last + 1;
                pthread_mutex_unlock(&w->mu);
                w_leave(w);
            }
            free(ev);
        }
    } else if (r->created && r->header) {
        /* From here on the stream covers everything after this revision:
         * a restart need not go further back. */
        pthread_mutex_lock(&w->mu);
        if (w->next_rev <= 0)
            w->next_rev = r->header->revision + 1;
        pthread_mutex_unlock(&w->mu);
    }
    etcdserverpb__watch_response__free_unpacked(r, NULL);
}

static void w_close(void *arg, grpc_status_code code, const char *details)
{
    (void)code;
    (void)details;
    gt_etcd_watch_t *w = arg;
    pthread_mutex_lock(&w->mu);
    px_ccall_t *c = w->call;
    w->call = NULL;
    bool again = !w->stopped && !w->ended;
    if (again)
        w->refs++; /* the timer's */
    pthread_mutex_unlock(&w->mu);
    if (c)
        px_ccall_unref(c);
    if (again) {
        gt_err_t err = px_rpc_client_after(w->e->rpc, WATCH_RETRY_MS, w_open,
                                           w);
        if (err != GT_OK) {
            w_unref(w);
            w_end(w, err);
        }
    }
    w_unref(w); /* the call's */
}

static void w_open(void *arg)
{
    gt_etcd_watch_t *w = arg;
    pthread_mutex_lock(&w->mu);
    bool go = !w->stopped && !w->ended;
    int64_t rev = w->next_rev;
    if (go)
        w->refs++; /* the call's */
    pthread_mutex_unlock(&w->mu);
    if (go) {
        size_t kl = strlen(w->key);
        uint8_t *end = malloc(kl + 1);
        Etcdserverpb__WatchCreateRequest cr =
            ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
        cr.key = bin(w->key, kl);
        if (w->prefix && end)
            cr.range_end = prefix_end(w->key, end);
        cr.start_revision = rev > 0 ? rev : 0;
        Etcdserverpb__WatchRequest rq = ETCDSERVERPB__WATCH_REQUEST__INIT;
        rq.request_union_case =
            ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
        rq.create_request = &cr;
        size_t n = etcdserverpb__watch_request__get_packed_size(&rq);
        uint8_t *buf = malloc(n ? n : 1);
        gt_err_t err = GT_ENOMEM;
        if (buf && end) {
            etcdserverpb__watch_request__pack(&rq, buf);
            static const px_stream_cbs_t cbs = { w_msg, w_close };
            px_ccall_t *c = NULL;
            pthread_mutex_lock(&w->mu);
            err = px_rpc_stream(w->e->rpc, "/etcdserverpb.Watch/Watch", buf,
                                n, NULL, &cbs, w, &c);
            if (err == GT_OK)
                w->call = c;
            bool cancel = err == GT_OK && w->stopped;
            pthread_mutex_unlock(&w->mu);
            if (cancel)
                px_ccall_cancel(c);
        }
        free(buf);
        free(end);
        if (err != GT_OK) {
            w_unref(w); /* the call's */
            w_end(w, err);
        }
    }
    w_unref(w); /* the timer's */
}

gt_err_t gt_etcd_watch(gt_etcd_t *e, const char *key, bool prefix,
                       int64_t start_revision, const gt_etcd_watch_cbs_t *cbs,
                       void *arg, gt_etcd_watch_t **out)
{
    if (!cbs || !cbs->on_events || !out)
        return GT_EINVAL;
    gt_etcd_watch_t *w = calloc(1, sizeof(*w));
    if (!w || !(w->key = strdup(key))) {
        free(w);
        return GT_ENOMEM;
    }
    w->e = e;
    w->prefix = prefix;
    w->next_rev = start_revision > 0 ? start_revision : 0;
    w->cbs = *cbs;
    w->arg = arg;
    w->refs = 2; /* the owner's, the first opening's */
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    gt_err_t err = px_rpc_client_after(e->rpc, 0, w_open, w);
    if (err != GT_OK) {
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
        free(w->key);
        free(w);
        return err;
    }
    *out = w;
    return GT_OK;
}

void gt_etcd_watch_cancel(gt_etcd_watch_t *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stopped = true;
    while (w->in_cb > 0)
        pthread_cond_wait(&w->cv, &w->mu);
    if (w->call)
        px_ccall_cancel(w->call);
    pthread_mutex_unlock(&w->mu);
    w_unref(w);
}

gt_err_t gt_etcd_after(gt_etcd_t *e, int64_t ms, void (*fn)(void *arg),
                       void *arg)
{
    return px_rpc_client_after(e->rpc, ms, fn, arg);
}
