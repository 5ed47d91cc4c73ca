/* gt_etcd: an asynchronous client for etcd's v3 API (issue 12: etcd is the
 * store cluster's coordination service).
 *
 * It speaks gRPC through rpc/px_rpc_client.h with the message definitions
 * in apis/etcd/v3/etcd.proto.  Every operation starts a call and returns at
 * once; its callback runs later, once, on the client's executor (or on a
 * completion-queue thread when none is given), never inside the call that
 * started it.  Data passed to a callback is borrowed for its duration.
 *
 * Errors given to callbacks: GT_OK; GT_EIO (etcd answered with an error,
 * or it is unreachable: UNAVAILABLE); GT_ETIMEDOUT (the per-call deadline
 * passed: whether a write happened is unknown); GT_ESHUTDOWN (the client is
 * being freed); GT_ECORRUPT (a response that does not decode).
 *
 * Keys are byte strings given as C strings; `prefix` operations cover every
 * key starting with the key (range_end = key with its last byte + 1).
 *
 * Leases.  gt_etcd_lease_grant then gt_etcd_keepalive_start keeps the lease
 * alive with one LeaseKeepAlive exchange every min(TTL/3, 500 ms) (each a stream opened, one request, one response, closed: etcd answers
 * each request and ends the stream when the client half-closes).  A tick
 * does not wait for earlier exchanges: a slow answer (etcd or this process
 * stalled) neither delays nor cancels the next renewal; each exchange may
 * take up to the TTL.  When etcd answers TTL <= 0 the lease is gone
 * (expired or revoked): on_lost runs once and the keepalive stops.
 * Transient failures (etcd restarting) are retried at the next tick; the
 * lease survives as long as one renewal lands within its TTL.
 *
 * Watches.  gt_etcd_watch streams PUT/DELETE events of a key or prefix from
 * a revision on, in revision order.  When the stream breaks (etcd restart,
 * connection loss) it is re-established after a short backoff from the last
 * revision delivered + 1, so no event is lost or repeated.  If etcd has
 * compacted past that revision the watch ends with on_end(GT_ERANGE) (the
 * owner must re-read and watch again).
 *
 * Not here yet: authentication, TLS to etcd, more than one endpoint's
 * failover policy beyond the rpc client's own round robin. */
#ifndef GT_ETCD_H
#define GT_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gt_err.h"
#include "px_rpc_client.h"

typedef struct gt_etcd gt_etcd_t;

typedef struct gt_etcd_opts {
    const char *const *endpoints; /* "host:port" of etcd's client URLs */
    size_t n_endpoints;
    const px_rpc_exec_t *exec;    /* where callbacks run; NULL: queue thread */
    int64_t call_timeout_ms;      /* unary calls' deadline; <= 0: 5000 */
} gt_etcd_opts_t;

gt_err_t gt_etcd_new(const gt_etcd_opts_t *opts, gt_etcd_t **out);
/* Cancels calls still open (their callbacks run with GT_ESHUTDOWN) and
 * waits for callbacks to finish.  Keepalives and watches must have been
 * stopped/cancelled before.  Not from a callback.  NULL-safe. */
void gt_etcd_free(gt_etcd_t *e);

typedef struct gt_etcd_kv {
    const uint8_t *key;
    size_t key_len;
    const uint8_t *value;
    size_t value_len;
    int64_t create_revision;
    int64_t mod_revision;
    int64_t version;  /* 0 never: a key that exists has version >= 1 */
    int64_t lease;
} gt_etcd_kv_t;

/* get: kvs in key order; revision is the store's revision of the read. */
typedef void (*gt_etcd_get_cb)(void *arg, gt_err_t err, int64_t revision,
                               const gt_etcd_kv_t *kvs, size_t n);
/* put/delete: revision after the write; deleted counts removed keys. */
typedef void (*gt_etcd_write_cb)(void *arg, gt_err_t err, int64_t revision,
                                 int64_t deleted);

gt_err_t gt_etcd_get(gt_etcd_t *e, const char *key, bool prefix,
                     gt_etcd_get_cb cb, void *arg);
gt_err_t gt_etcd_put(gt_etcd_t *e, const char *key, const void *value,
                     size_t len, int64_t lease, gt_etcd_write_cb cb,
                     void *arg);
gt_err_t gt_etcd_delete(gt_etcd_t *e, const char *key, bool prefix,
                        gt_etcd_write_cb cb, void *arg);

/* Transactions: if every compare holds, the success ops run, else the
 * failure ops; atomically at one revision. */
typedef enum gt_etcd_cmp_target {
    GT_ETCD_CMP_VERSION, /* key's version; 0 = the key does not exist */
    GT_ETCD_CMP_VALUE,
    GT_ETCD_CMP_MOD,     /* mod_revision */
} gt_etcd_cmp_target_t;

typedef enum gt_etcd_cmp_op {
    GT_ETCD_EQ, GT_ETCD_NE, GT_ETCD_LT, GT_ETCD_GT,
} gt_etcd_cmp_op_t;

typedef struct gt_etcd_cmp {
    const char *key;
    gt_etcd_cmp_target_t target;
    gt_etcd_cmp_op_t op;
    int64_t num;          /* VERSION, MOD */
    const void *value;    /* VALUE */
    size_t value_len;
} gt_etcd_cmp_t;

typedef enum gt_etcd_op_kind { GT_ETCD_OP_PUT, GT_ETCD_OP_DELETE } gt_etcd_op_kind_t;

typedef struct gt_etcd_op {
    gt_etcd_op_kind_t kind;
    const char *key;
    const void *value;    /* PUT */
    size_t value_len;
    int64_t lease;        /* PUT; 0: none */
} gt_etcd_op_t;

/* succeeded: whether the compares held (the success branch ran). */
typedef void (*gt_etcd_txn_cb)(void *arg, gt_err_t err, bool succeeded,
                               int64_t revision);

gt_err_t gt_etcd_txn(gt_etcd_t *e, const gt_etcd_cmp_t *cmp, size_t n_cmp,
                     const gt_etcd_op_t *ok, size_t n_ok,
                     const gt_etcd_op_t *fail, size_t n_fail,
                     gt_etcd_txn_cb cb, void *arg);

/* Leases. */
typedef void (*gt_etcd_lease_cb)(void *arg, gt_err_t err, int64_t id,
                                 int64_t ttl_s);
gt_err_t gt_etcd_lease_grant(gt_etcd_t *e, int64_t ttl_s,
                             gt_etcd_lease_cb cb, void *arg);
gt_err_t gt_etcd_lease_revoke(gt_etcd_t *e, int64_t id, gt_etcd_write_cb cb,
                              void *arg);

typedef struct gt_etcd_keepalive gt_etcd_keepalive_t;
/* on_lost(arg) runs at most once, when etcd says the lease is gone. */
gt_err_t gt_etcd_keepalive_start(gt_etcd_t *e, int64_t id, int64_t ttl_s,
                                 void (*on_lost)(void *arg), void *arg,
                                 gt_etcd_keepalive_t **out);
/* CLOCK_MONOTONIC ms until which the lease surely lives (the send time of
 * the last renewal etcd answered, plus its TTL); 0 once lost.  A holder
 * cut off from etcd must assume the lease gone past it. */
int64_t gt_etcd_keepalive_valid_until(gt_etcd_keepalive_t *k);
/* Stops renewing (the lease then expires after its TTL unless revoked).
 * After it returns on_lost will not start; frees the handle. */
void gt_etcd_keepalive_stop(gt_etcd_keepalive_t *k);

/* Watches. */
typedef enum gt_etcd_ev_type { GT_ETCD_EV_PUT, GT_ETCD_EV_DELETE } gt_etcd_ev_type_t;

typedef struct gt_etcd_event {
    gt_etcd_ev_type_t type;
    gt_etcd_kv_t kv;      /* for DELETE: key and mod_revision only */
} gt_etcd_event_t;

typedef struct gt_etcd_watch_cbs {
    void (*on_events)(void *arg, const gt_etcd_event_t *evs, size_t n);
    /* The watch ended for good (GT_ERANGE: compacted; GT_ESHUTDOWN). */
    void (*on_end)(void *arg, gt_err_t err);
} gt_etcd_watch_cbs_t;

typedef struct gt_etcd_watch gt_etcd_watch_t;
/* start_revision <= 0: from now. */
gt_err_t gt_etcd_watch(gt_etcd_t *e, const char *key, bool prefix,
                       int64_t start_revision, const gt_etcd_watch_cbs_t *cbs,
                       void *arg, gt_etcd_watch_t **out);
/* Ends the watch: after it returns no callback of it starts or runs;
 * frees the handle.  Not from the watch's own callbacks. */
void gt_etcd_watch_cancel(gt_etcd_watch_t *w);

/* Runs fn(arg) after ms milliseconds on the client's timer (then on the
 * executor).  Pending ones run early when the client is freed. */
gt_err_t gt_etcd_after(gt_etcd_t *e, int64_t ms, void (*fn)(void *arg),
                       void *arg);

#endif
