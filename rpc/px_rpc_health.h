/* px_rpc_health: grpc.health.v1.Health (Check, Watch) on a px_rpc server,
 * for Kubernetes gRPC probes and load balancers.
 *
 * One status for the whole server: SERVING or NOT_SERVING, set by the
 * owner (gantry: SERVING once ready, as /readyz, NOT_SERVING from the
 * start of a drain).  The service "" and every service with a method in
 * the server's table answer that status; any other name is unknown:
 * Check finishes NOT_FOUND, Watch sends SERVICE_UNKNOWN and stays open,
 * as the gRPC health-checking specification says.  Watch streams get the
 * status at once and again on every change; they end (status OK) when
 * the server stops. */
#ifndef PX_RPC_HEALTH_H
#define PX_RPC_HEALTH_H

#include <stdbool.h>

#include "gt_err.h"
#include "px_rpc.h"

typedef struct px_health px_health_t;

/* Returns an owned health service (free with px_health_free), NOT_SERVING
 * to begin with, or NULL when out of memory. */
px_health_t *px_health_new(void);
/* Adds Check and Watch to `t` (the entries live in `h`, which must
 * outlive the table and the server).  `t` is also where the known
 * services are looked up, so add the other services too (before or
 * after); the table is borrowed. */
gt_err_t px_health_register(px_health_t *h, px_method_table_t *t);
/* Sets the status; watchers whose status changes get it at once.  Any
 * thread. */
void px_health_set_serving(px_health_t *h, bool serving);
/* Frees `h` after the server that used it was destroyed.  NULL-safe. */
void px_health_free(px_health_t *h);

#endif
