/* st_cluster: the store interface on a replicated store tier (issue 12,
 * `store.mode: cluster`): an st_remote client that follows the leader of
 * one replica set (0 unless configured; st_place.h routes over several)
 * through etcd.
 *
 * It reads /gantry/<name>/rs/<k>/leader (the leader's node id) and
 * /gantry/<name>/stores/<node_id> (each node's advertised HOST:PORT) once,
 * then watches both (gt_etcd watches from the read's revision + 1; nothing
 * polls).  Whenever the leader's address changes the client is switched to
 * it (st_remote_switch: calls still open on the old node end with GT_AGAIN
 * or are sent again, the metadata watch moves).  While no leader is known
 * (key absent, or its node not registered) every operation fails at once
 * with GT_AGAIN.  A node answering UNAVAILABLE "not leader" makes it read
 * the keys again (one read at a time), in case a watch event is still on
 * its way.  Per key, the newest revision seen wins, so a read and the
 * watches may answer in any order.  A watch that etcd compacted past is
 * replaced by a new read and new watches.
 *
 * Threads: etcd answers and watch events run on the etcd client's one
 * completion thread; the state below is under st_cluster's mutex.  Close
 * the store with st_close(): it stops the watches and the etcd client
 * first. */
#ifndef ST_CLUSTER_H
#define ST_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "st_remote.h"

typedef struct st_cluster_config {
    const char *const *etcd;  /* etcd client endpoints "host:port" */
    size_t n_etcd;
    const char *name;         /* cluster name: keys under /gantry/<name>/;
                                 NULL or "": "gantry" */
    /* The replica set to follow (rs/<k>/leader); 0 by default. */
    uint32_t replica_set;
    /* st_cluster_open waits up to this long for a leader that answers
     * (start-up); 0: returns once etcd was read, leader or not. */
    int64_t leader_wait_ms;
    /* The client's settings (timeouts, retries, threads, after_event);
     * endpoints, connect_wait_ms, switchable and the hooks are set here. */
    st_remote_config_t remote;
} st_cluster_config_t;

/* Opens the client.  Borrows cfg.  Errors: GT_EINVAL (no etcd endpoint, a
 * name that does not fit), GT_EIO (etcd unreachable for the whole wait),
 * GT_AGAIN (no leader answered within leader_wait_ms), GT_ENOMEM. */
gt_err_t st_cluster_open(const st_cluster_config_t *cfg, st_store_t **out);

#endif
