/* ss_cluster: gantry-store's cluster control on etcd (config section
 * `cluster`; issue 12, docs/cluster.md): registration under a lease,
 * replica-set membership (which set rs/<k> the node is in), election among the in-sync set with epochs, the
 * in-sync set itself, and the role transitions it drives through ss_repl
 * (ss_repl.h).  One control thread does the etcd work; watches wake it. */
#ifndef SS_CLUSTER_H
#define SS_CLUSTER_H

#include <stdatomic.h>
#include <stdio.h>

#include "cfg.h"
#include "gt_err.h"
#include "ss_repl.h"

typedef struct ss_cluster ss_cluster_t;

/* Creates the control (nothing runs yet).  *out is NULL when cluster.etcd
 * is empty (off). */
gt_err_t ss_cluster_new(const cfg_t *cfg, ss_cluster_t **out);
/* The events replication reports to this control (pass them when creating
 * the ss_repl_t). */
void ss_cluster_events(ss_cluster_t *c, ss_repl_events_t *ev);
/* Keeps *slot equal to the node's replica set k (-1 until known) from now
 * on (GetInfo reads it; it must outlive the control). */
void ss_cluster_publish_set(ss_cluster_t *c, _Atomic int *slot);
/* Starts the control thread, driving `repl` (in the background; etcd down
 * is retried). */
gt_err_t ss_cluster_run(ss_cluster_t *c, ss_repl_t *repl);
/* /metrics lines: role, epoch, in-sync set size, membership, replica set. */
void ss_cluster_metrics(ss_cluster_t *c, FILE *out);
/* Stops: stands down, revokes the lease (this node's keys, the leader key
 * included, go at once).  NULL-safe. */
void ss_cluster_stop(ss_cluster_t *c);

#endif
