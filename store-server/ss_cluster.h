/* ss_cluster: gantry-store registers itself in etcd under a lease (config
 * section `cluster`; see ss_cluster.c).  Issue 12 foundation. */
#ifndef SS_CLUSTER_H
#define SS_CLUSTER_H

#include "cfg.h"
#include "gt_err.h"

typedef struct ss_cluster ss_cluster_t;

/* Starts registering (in the background; etcd down is retried).  *out is
 * NULL when cluster.etcd is empty (off). */
gt_err_t ss_cluster_start(const cfg_t *cfg, ss_cluster_t **out);
/* Stops, revokes the lease (the key goes at once).  NULL-safe. */
void ss_cluster_stop(ss_cluster_t *c);

#endif
