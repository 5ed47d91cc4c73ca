/* st_remote: the store interface (st.h) on a remote `gantry-store` node,
 * through the store protocol gantry.store.v1 (docs/store-protocol.md) and
 * the gRPC client runtime (rpc/px_rpc_client.h).
 *
 * Every operation is one RPC; its answer completes the st callback on the
 * client's completion-queue thread (open it through st_exec_open(), as
 * front ends do, so that callbacks reach their executor).  Nothing ever
 * waits on the network on the caller's thread.  The node's gt_err_t codes
 * come back unchanged; a call that failed as a whole maps to:
 * UNAVAILABLE -> GT_AGAIN, DEADLINE_EXCEEDED -> GT_ETIMEDOUT,
 * RESOURCE_EXHAUSTED -> GT_EBUSY, INVALID_ARGUMENT -> GT_EINVAL,
 * UNIMPLEMENTED -> GT_EUNSUPPORTED, cancelled by st_close -> GT_ESHUTDOWN,
 * anything else -> GT_EIO (all retriable except EINVAL/EUNSUPPORTED).
 *
 * Retries.  Appends carry an idempotency key, the first message's id (the
 * client fills in ids the caller left NULL), and are retried on
 * UNAVAILABLE / DEADLINE_EXCEEDED with the same key, so that the node
 * stores them once.  Reads and metadata puts are retried likewise.  Pops,
 * acks, invisibility changes, releases, purges, requeues, transaction
 * ends, checks, recalls, offset updates and metadata deletes are never
 * retried: their failure goes to the caller.
 *
 * Batching.  While two append calls are in flight, further appends wait
 * and go together, when one ends, as one AppendMany call (or at once when
 * they reach a count or byte cap): no timer, so a lone append waits for
 * nothing; each append keeps its own key, retries and answer.  A node
 * without AppendMany (UNIMPLEMENTED) gets Appends of their own from then
 * on (st_remote_append.c).
 *
 * Long polls (pop, pull) wait on the node; their deadline is the poll
 * time plus the request timeout.  st_pop_cancel() becomes a PopCancel RPC
 * under this client's random id.  st_meta_watch() is a MetaWatch stream,
 * opened again (with a fresh snapshot) whenever it ends, e.g. after the
 * node restarted.
 *
 * Switching nodes (cluster mode, st_cluster.h).  Opened `switchable`, the
 * client starts with no node or the first endpoint, and st_remote_switch()
 * points it at another: new channels to that node; calls still open on
 * the old one are cancelled and end with GT_AGAIN (idempotent ones are
 * sent again on the new node, within their retries); long polls end the
 * same way and their callers issue them again; the metadata watch is
 * opened on the new node (its snapshot tells the watcher what changed).
 * With no node every operation fails at once with GT_AGAIN.  A node that
 * answers UNAVAILABLE "not leader" (GT_AGAIN to the caller) runs the
 * on_not_leader hook, so the owner can look up the leader again. */
#ifndef ST_REMOTE_H
#define ST_REMOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "st.h"

typedef struct st_remote_config {
    const char *const *endpoints; /* "host:port" of the store node; only
                                     the first is used */
    size_t n_endpoints;
    int channels_per_endpoint;    /* <= 0: 2 */
    int threads;                  /* completion-queue threads; <= 0: 2 */
    int64_t timeout_ms;           /* deadline of one request (beyond a
                                     long poll's wait); <= 0: 10000 */
    int retries;                  /* extra attempts of retried operations;
                                     < 0: 3 */
    int64_t connect_wait_ms;      /* st_remote_open waits this long for the
                                     node to answer; 0: does not wait */
    /* Run by the client's completion-queue threads when they start and
     * after each completion (px_rpc_client_opts_t.after_event): with
     * px_exec_after_event, the answers this store hands to that executor
     * run on the completion thread instead of waking one of its threads.
     * May be NULL. */
    void (*after_event)(void *ctx);
    void *after_event_ctx;
    /* Appends (see "Batching" above): at most append_inflight append
     * calls in flight before further appends wait and go together as one
     * AppendMany; 0: 2; < 0: no batching (one call per append, at once).
     * A waiting group goes at once when it reaches append_batch_max
     * appends (0: 64; at most 256) or append_batch_bytes packed request
     * bytes (0: 1 MiB). */
    int append_inflight;
    size_t append_batch_max;
    size_t append_batch_bytes;
    /* Cluster mode: endpoints may be empty; st_remote_switch() allowed. */
    bool switchable;
    /* Run (any thread, holding a lock of the client: short, must not call
     * into this store) when a node answers UNAVAILABLE "not leader".  May
     * be NULL. */
    void (*on_not_leader)(void *ctx);
    /* Run first by st_close(), on its thread, before anything is torn down
     * and after which no hook runs: the owner stops switching there.  May
     * be NULL. */
    void (*on_close)(void *ctx);
    void *hook_ctx;
} st_remote_config_t;

/* Asks the node (GetInfo) how much disk space its data directory takes;
 * cb runs once, on the client's executor, with the bytes. */
typedef void (*st_remote_storage_cb)(void *arg, gt_err_t err, uint64_t bytes);
void st_remote_storage(st_store_t *st, st_remote_storage_cb cb, void *arg);

/* Asks the node (GetInfo, without the storage figure) for the identity of
 * its data directory (GetInfo.data_id: a new one means the node's data
 * are new); cb runs once, on the client's executor, with it (borrowed for
 * the callback; "" from a node that has none). */
typedef void (*st_remote_data_id_cb)(void *arg, gt_err_t err, const char *data_id);
void st_remote_data_id(st_store_t *st, st_remote_data_id_cb cb, void *arg);

/* Opens a client of the node(s).  With connect_wait_ms > 0 it waits until
 * the node answers GetInfo (start-up only), failing with GT_ETIMEDOUT /
 * GT_AGAIN when it does not.  GT_EINVAL: no endpoint.  Release it with
 * st_close(): in-flight operations then complete with GT_ESHUTDOWN. */
gt_err_t st_remote_open(const st_remote_config_t *cfg, st_store_t **out);

/* Points a switchable client at the node `addr` ("host:port", copied;
 * NULL: none).  The same node again does nothing.  Any thread except the
 * client's own callbacks' lock holders; never blocks on the network.
 * GT_EINVAL: not switchable; GT_ESHUTDOWN: closing; GT_ENOMEM. */
gt_err_t st_remote_switch(st_store_t *s, const char *addr);

/* Waits up to ms for the current node to answer GetInfo (start-up only).
 * GT_AGAIN: no node, or it was switched away meanwhile. */
gt_err_t st_remote_wait_ready(st_store_t *s, int64_t ms);

#endif
