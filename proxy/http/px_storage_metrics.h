/* px_storage_metrics: the local store engine's I/O figures (st_local_io_stats)
 * as Prometheus text, for gantry (store.mode local) and gantry-store:
 *
 *   rocketmq_storage_flush_behind_bytes              gauge
 *   rocketmq_storage_fsync_latency{file}             histogram, ms
 *   rocketmq_storage_fsync_failures_total{file}      counter
 *
 * file is "commitlog" or "state" (the state log).  docs/metrics.md. */
#ifndef PX_STORAGE_METRICS_H
#define PX_STORAGE_METRICS_H

#include <stdio.h>

#include "st.h"

void px_storage_metrics_write(FILE *out, const st_io_stats_t *s);

#endif
