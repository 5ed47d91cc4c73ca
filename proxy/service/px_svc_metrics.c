/* The service's part of /metrics: connected RocketMQ clients (those with a
 * Telemetry stream open; producers by language and version, consumers by
 * group, language, version and consume mode, as RocketMQ labels them) and
 * the store gauges of px_metrics_write_store(). */
#include <stdio.h>

#include "gt_metrics.h"
#include "px_metrics.h"
#include "px_svc_int.h"

void px_svc_set_metrics(px_svc_t *svc, px_metrics_t *m)
{
    svc->metrics = m;
}

void px_svc_set_storage_bytes(px_svc_t *svc, px_storage_bytes_fn fn, void *arg)
{
    svc->storage_bytes = fn;
    svc->storage_bytes_arg = arg;
}

/* consume_mode as RocketMQ labels it: gRPC push and simple consumers
 * both receive by pop; pull consumers pull. */
static const char *px_consume_mode(int type)
{
    return type == APACHE__ROCKETMQ__V2__CLIENT_TYPE__PULL_CONSUMER ? "pull" : "pop";
}

void px_svc_write_metrics(px_svc_t *svc, FILE *out)
{
    static const char *const pl[] = {"language", "version"};
    static const char *const cl[] = {"consumer_group", "language", "version", "consume_mode"};
    size_t cap = svc->metrics != NULL ? px_metrics_max_sets(svc->metrics) : 1000;
    /* Counted into families of their own, so their label sets are capped
     * like the others'. */
    gt_mfam_t *prod = gt_mfam_new(2, 1, cap), *cons = gt_mfam_new(4, 1, cap);

    if (prod == NULL || cons == NULL)
        goto out;
    pthread_mutex_lock(&svc->clients_mu);
    for (const px_client_t *c = svc->clients; c != NULL; c = c->next) {
        gt_mseries_t *s;
        if (c->telemetry == NULL ||
            c->client_type == APACHE__ROCKETMQ__V2__CLIENT_TYPE__CLIENT_TYPE_UNSPECIFIED)
            continue;
        if (c->client_type == APACHE__ROCKETMQ__V2__CLIENT_TYPE__PRODUCER) {
            const char *v[2] = {c->language, c->version};
            s = gt_mfam_get(prod, v);
        } else {
            const char *v[4] = {c->group, c->language, c->version,
                                px_consume_mode(c->client_type)};
            s = gt_mfam_get(cons, v);
        }
        if (s != NULL)
            gt_mseries_add(s, 0, 1);
    }
    pthread_mutex_unlock(&svc->clients_mu);
    gt_metrics_head(out, "rocketmq_producer_connections", "gauge",
                    "Producers connected (Telemetry stream open).");
    gt_metrics_write_val(out, prod, "rocketmq_producer_connections", pl, 0);
    gt_metrics_head(out, "rocketmq_consumer_connections", "gauge",
                    "Consumers connected (Telemetry stream open).");
    gt_metrics_write_val(out, cons, "rocketmq_consumer_connections", cl, 0);
    px_trace_write_metrics(svc->trace, out);
    if (svc->metrics != NULL) {
        uint64_t bytes = 0;
        px_metrics_write_store(svc->metrics, svc->store,
                               svc->storage_bytes == NULL ? svc->cfg->store.data_dir : NULL, out);
        if (svc->storage_bytes != NULL &&
            svc->storage_bytes(svc->storage_bytes_arg, &bytes) == GT_OK) {
            gt_metrics_head(out, "rocketmq_storage_size", "gauge",
                            "Disk space the store's files take, in bytes.");
            fprintf(out, "rocketmq_storage_size %llu\n", (unsigned long long)bytes);
        }
    }
out:
    gt_mfam_free(prod);
    gt_mfam_free(cons);
}
