/* gw_metrics: the AMQP gateway's part of /metrics under the names of
 * RabbitMQ's Prometheus plugin (rabbitmq_prometheus), so RabbitMQ
 * dashboards read it: rabbitmq_connections, rabbitmq_channels,
 * rabbitmq_consumers, rabbitmq_queues, and per queue (labels vhost,
 * queue) rabbitmq_queue_messages_ready, _unacked, rabbitmq_queue_messages
 * and rabbitmq_queue_consumers.
 *
 * The broker's state belongs to its loop thread, so a scrape posts an op
 * that copies what it needs there (a bounded wait), then asks the store
 * for each queue's counts from the scraping thread. */
#ifndef GW_METRICS_H
#define GW_METRICS_H

#include <stddef.h>
#include <stdio.h>

#include "gw_broker_int.h"

/* Writes the lines (any thread but the loop's).  Queues past max_queues
 * (0: 1000) are summed into vhost="_other", queue="_other". */
void gw_metrics_write(gw_broker_t *b, size_t max_queues, FILE *out);

#endif
