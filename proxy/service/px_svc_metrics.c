/* The service's part of /metrics: connected RocketMQ clients (those with a
 * Telemetry stream open, by client type) and the store gauges of
 * px_metrics_write_store(). */
#include <stdio.h>

#include "px_metrics.h"
#include "px_svc_int.h"

void px_svc_set_metrics(px_svc_t *svc, px_metrics_t *m)
{
    svc->metrics = m;
}

void px_svc_write_metrics(px_svc_t *svc, FILE *out)
{
    uint64_t producers = 0, consumers = 0;

    pthread_mutex_lock(&svc->clients_mu);
    for (const px_client_t *c = svc->clients; c != NULL; c = c->next) {
        if (c->telemetry == NULL)
            continue;
        if (c->client_type == APACHE__ROCKETMQ__V2__CLIENT_TYPE__PRODUCER)
            producers++;
        else if (c->client_type != APACHE__ROCKETMQ__V2__CLIENT_TYPE__CLIENT_TYPE_UNSPECIFIED)
            consumers++;
    }
    pthread_mutex_unlock(&svc->clients_mu);
    fprintf(out,
            "# HELP rocketmq_producer_connections Producers connected (Telemetry open).\n"
            "# TYPE rocketmq_producer_connections gauge\n"
            "rocketmq_producer_connections %llu\n"
            "# HELP rocketmq_consumer_connections Consumers connected (Telemetry open).\n"
            "# TYPE rocketmq_consumer_connections gauge\n"
            "rocketmq_consumer_connections %llu\n",
            (unsigned long long)producers, (unsigned long long)consumers);
    if (svc->metrics != NULL)
        px_metrics_write_store(svc->metrics, svc->store, svc->cfg->store.data_dir, out);
}
