/* px_http: the operator HTTP endpoint (health and readiness for now).
 *
 * GET /healthz  -> 200 "ok" while the process runs.
 * GET /readyz   -> 200 "ready" once px_http_set_ready(true), else 503.
 * GET /metrics  -> Prometheus text (process up, gRPC methods registered).
 * Anything else -> 404; methods other than GET/HEAD -> 405; a request that
 * does not parse or does not arrive within 2 s -> 400 / closed.
 *
 * One thread accepts and answers connections one at a time: these are
 * probes, not traffic. */
#ifndef PX_HTTP_H
#define PX_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "gt_err.h"

typedef struct px_http px_http_t;

/* Binds `listen` ("host:port", borrowed) and starts the thread. */
gt_err_t px_http_start(const char *addr, px_http_t **out, char *err,
                       size_t errlen);
void px_http_set_ready(px_http_t *h, bool ready);
/* Stops the thread, closes the socket, frees `h`. NULL-safe. */
void px_http_stop(px_http_t *h);

#endif
