/* The local store engine's I/O figures on /metrics (gantry in local mode,
 * gantry-store): RocketMQ's rocketmq_storage_flush_behind_bytes and an
 * fdatasync latency histogram in its style (milliseconds, like
 * rocketmq_rpc_latency).  See px_storage_metrics.h. */
#include <stdio.h>

#include "px_storage_metrics.h"

static const char *const px_sync_file_names[ST_SYNC_FILES] = {"commitlog", "state"};

void px_storage_metrics_write(FILE *out, const st_io_stats_t *s)
{
    fputs("# HELP rocketmq_storage_flush_behind_bytes Commitlog bytes written but not "
          "yet made durable (fdatasync).\n"
          "# TYPE rocketmq_storage_flush_behind_bytes gauge\n",
          out);
    fprintf(out, "rocketmq_storage_flush_behind_bytes %llu\n",
            (unsigned long long)s->flush_behind_bytes);
    fputs("# HELP rocketmq_storage_fsync_latency Time of the store's fdatasync calls, in "
          "milliseconds.\n"
          "# TYPE rocketmq_storage_fsync_latency histogram\n",
          out);
    for (int f = 0; f < ST_SYNC_FILES; f++) {
        uint64_t cum = 0;

        for (int b = 0; b < ST_FSYNC_BUCKETS; b++) {
            cum += s->fsync[f].bucket[b];
            fprintf(out, "rocketmq_storage_fsync_latency_bucket{file=\"%s\",le=\"%g\"} %llu\n",
                    px_sync_file_names[f], st_fsync_bucket_ms[b], (unsigned long long)cum);
        }
        cum += s->fsync[f].bucket[ST_FSYNC_BUCKETS];
        fprintf(out,
                "rocketmq_storage_fsync_latency_bucket{file=\"%s\",le=\"+Inf\"} %llu\n"
                "rocketmq_storage_fsync_latency_sum{file=\"%s\"} %.6f\n"
                "rocketmq_storage_fsync_latency_count{file=\"%s\"} %llu\n",
                px_sync_file_names[f], (unsigned long long)cum, px_sync_file_names[f],
                s->fsync[f].sum_ms, px_sync_file_names[f], (unsigned long long)cum);
    }
    fputs("# HELP rocketmq_storage_fsync_failures_total fdatasync calls of the store that "
          "failed.\n"
          "# TYPE rocketmq_storage_fsync_failures_total counter\n",
          out);
    for (int f = 0; f < ST_SYNC_FILES; f++)
        fprintf(out, "rocketmq_storage_fsync_failures_total{file=\"%s\"} %llu\n",
                px_sync_file_names[f], (unsigned long long)s->fsync[f].failed);
}
