/* px_metrics: the RocketMQ 5 metrics of /metrics (names, types, units and
 * labels as RocketMQ's broker and proxy export them: BrokerMetricsConstant,
 * RemotingMetricsConstant, ProxyMetricsConstant), counted by the gRPC
 * service and runtime, and gauges read from the store at scrape time.
 *
 * Counters (hot path, lock-free: gt_metrics.h), per label set, bounded by
 * metrics.max_label_sets per family (the rest fold into "_other"):
 *   rocketmq_messages_in_total / rocketmq_throughput_in_total{topic,message_type}
 *   rocketmq_message_size{topic,message_type}      histogram, bytes
 *   rocketmq_messages_out_total / rocketmq_throughput_out_total{topic,consumer_group}
 *   rocketmq_commit_messages_total / rocketmq_rollback_messages_total{topic}
 *   rocketmq_rpc_latency{protocol_type,request_code,response_code,
 *                        is_long_polling,result}   histogram, ms
 * Gauges at scrape (px_metrics_write_store), per (topic, consumer_group)
 * that consumed since start:
 *   rocketmq_consumer_ready_messages, rocketmq_consumer_inflight_messages,
 *   rocketmq_consumer_lag_messages, rocketmq_send_to_dlq_messages_total
 *   (a counter: the group's %DLQ% topic's end offsets, which survive
 *   restarts), rocketmq_half_messages{topic} (counted since start),
 *   rocketmq_storage_size. */
#ifndef PX_METRICS_H
#define PX_METRICS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "px_rpc.h"
#include "st.h"

typedef struct px_metrics px_metrics_t;

#define PX_METRICS_DEFAULT_SETS 1000

/* Owned (free with px_metrics_free), or NULL when out of memory.
 * max_sets: label sets per family (metrics.max_label_sets). */
px_metrics_t *px_metrics_new(size_t max_sets);
void px_metrics_free(px_metrics_t *m); /* NULL-safe, after the last user */
/* The label-set cap it was made with. */
size_t px_metrics_max_sets(const px_metrics_t *m);

/* Hot-path hooks; any thread; m may be NULL (no metrics). */
/* One message stored for a producer: message_type is RocketMQ's label
 * value (normal, fifo, delay, transaction). */
void px_metrics_in(px_metrics_t *m, const char *topic, const char *message_type,
                   uint64_t body_bytes);
/* n messages of `bytes` body bytes delivered to a consumer of `group`;
 * n may be 0 (a receive that found none: the pair is still a consumer's). */
void px_metrics_out(px_metrics_t *m, const char *topic, const char *group, uint64_t n,
                    uint64_t bytes);
void px_metrics_tx(px_metrics_t *m, const char *topic, bool commit);
/* px_rpc_options_t.on_call_end (ctx: the px_metrics_t). */
void px_metrics_call_end(void *ctx, const px_call_end_t *end);

/* Writes the counters and histograms (HTTP thread).  proxy_mode is the
 * rocketmq_proxy_up label ("local": store in this process). */
void px_metrics_write(px_metrics_t *m, const char *proxy_mode, FILE *out);
/* Writes the gauges read from the store: one st_stats() per consumer pair
 * (each holds the store's lock for that topic's queues only), waiting for
 * each answer; data_dir (may be NULL) is measured for storage size. */
void px_metrics_write_store(px_metrics_t *m, st_store_t *st, const char *data_dir,
                            FILE *out);

#endif
