/* px_http: the operator HTTP endpoint, on libmicrohttpd.
 *
 * GET /healthz  -> 200 "ok" while the process runs.
 * GET /readyz   -> 200 "ready" once px_http_set_ready(true), else 503.
 * GET /metrics  -> Prometheus text (process up, start time, and what the
 *                  metrics hook adds).
 * /api/...      -> the access check first (px_http_set_api_auth: 401 /
 *                  403 when it refuses), then a registered route (px_http_route_add: the longest
 *                  matching path prefix gets the request and its body),
 *                  else /api/v1/amqp/... to the AMQP hook
 *                  (px_http_set_admin: any method, a body is read and
 *                  ignored), else 404 with a JSON error.
 * Other paths   -> a registered route whose prefix matches (the dashboard,
 *                  /dashboard), else 404; methods other than GET/HEAD
 *                  -> 405.
 *
 * /api/ requests (and routed paths such as /dashboard) run on
 * PX_HTTP_WORKERS worker threads of their own (px_http.c) while their connections are suspended: a route or hook that
 * waits (for the store, the gateway) never holds a daemon thread.
 *
 * libmicrohttpd serves every connection from an epoll loop on a small
 * thread pool, so a slow or idle client holds one connection slot and
 * nothing else: probes keep being answered.  Connections are capped
 * (PX_HTTP_MAX_CONNECTIONS) and one idle for PX_HTTP_IDLE_TIMEOUT_S is
 * closed; a request head larger than the per-connection memory is
 * refused.
 *
 * HTTPS (px_http_start_tls): the whole port is TLS, probes included
 * (Kubernetes: `scheme: HTTPS`, which does not verify the certificate). */
#ifndef PX_HTTP_H
#define PX_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "gt_err.h"
#include "gt_tls.h"

typedef struct px_http px_http_t;

#define PX_HTTP_MAX_CONNECTIONS 4096
#define PX_HTTP_IDLE_TIMEOUT_S 10

/* Binds `addr` ("host:port", borrowed) and starts serving.  On failure
 * writes a reason to `err`. */
gt_err_t px_http_start(const char *addr, px_http_t **out, char *err,
                       size_t errlen);
/* The same, serving HTTPS only (libmicrohttpd's GnuTLS, TLS 1.2 and up)
 * with tls's certificate and key when tls is not NULL: a plaintext
 * request gets no HTTP answer (its connection is closed).  The files are
 * borrowed and must outlive h (px_http_tls_reload reads them again); no
 * client certificate is asked for.  One HTTPS endpoint per process
 * (GT_EBUSY for a second).  Bad files: GT_EIO / GT_EINVAL with err. */
gt_err_t px_http_start_tls(const char *addr, const gt_tls_files_t *tls, px_http_t **out,
                           char *err, size_t errlen);
/* Reads the certificate files again (SIGHUP): handshakes from now on use
 * them; open connections keep theirs.  Bad files: an error in err and the
 * old certificate stays.  GT_OK (also for a plaintext endpoint: nothing
 * to do). */
gt_err_t px_http_tls_reload(px_http_t *h, char *err, size_t errlen);
void px_http_set_ready(px_http_t *h, bool ready);
/* Adds fn(arg, out) to /metrics: it writes Prometheus text lines to `out`.
 * Called on an HTTP thread; set once, before the hook's data can go away
 * call px_http_set_metrics(h, NULL, NULL).  `arg` is borrowed. */
void px_http_set_metrics(px_http_t *h, void (*fn)(void *arg, FILE *out),
                         void *arg);
/* Answers an /api/ request: returns the HTTP status and writes a short
 * text answer (NUL-terminated) into text[cap].  Called on a worker
 * thread; it may wait (for the AMQP gateway).  url is the path as sent. */
typedef unsigned (*px_http_admin_fn)(void *arg, const char *method, const char *url,
                                     char *text, size_t cap);
/* Sets the admin hook; NULL removes it (waiting for calls in progress). */
void px_http_set_admin(px_http_t *h, px_http_admin_fn fn, void *arg);

/* The access check of every /api/ request (routes and the AMQP hook
 * alike), run first on the worker: 0 serves the request; 401 or 403 is
 * the answer (401 with WWW-Authenticate: Bearer realm="gantry").
 * authorization: the header, or NULL.  NULL fn: everything is served. */
typedef unsigned (*px_http_api_auth_fn)(void *arg, const char *method, const char *url,
                                        const char *authorization);
void px_http_set_api_auth(px_http_t *h, px_http_api_auth_fn fn, void *arg);
/* ---- routes (/api/...) */

/* One request to a route.  Strings are borrowed for the call. */
typedef struct px_http_req {
    const char *method;
    const char *url;    /* the path as sent (%-escapes kept), no query */
    const char *body;   /* NUL-terminated; "" without a body */
    size_t body_len;
    const char *auth;   /* the Authorization header, or NULL */
    void *conn_;        /* for px_http_req_arg */
} px_http_req_t;

/* The answer: `body` is malloc'ed by the route (NULL: empty) and freed by
 * px_http, unless `body_static` (then it is borrowed and outlives px_http);
 * ctype is static (NULL: application/json); headers (static, may be NULL)
 * are more name, value pairs ended by a NULL name. */
typedef struct px_http_resp {
    unsigned code;
    char *body;
    size_t len;
    const char *ctype;
    bool body_static;
    const char *const *headers;
} px_http_resp_t;

/* The raw (%-escaped) value of query argument `key`, or NULL. */
const char *px_http_req_arg(const px_http_req_t *req, const char *key);
/* The value of request header `name` (case-insensitive), or NULL: only
 * Authorization and If-None-Match are kept for routes. */
const char *px_http_req_header(const px_http_req_t *req, const char *name);

/* Called on a worker thread once the whole request is in; it may wait,
 * boundedly (it holds one of the workers, and its client waits). */
typedef void (*px_http_route_fn)(void *arg, const px_http_req_t *req,
                                 px_http_resp_t *resp);

#define PX_HTTP_ROUTES_MAX 16

/* Routes requests whose path starts with `prefix` (copied; e.g.
 * "/api/v1/topics", or "/dashboard" outside /api/) to fn; a longer
 * matching prefix wins.  Bodies larger
 * than max_body get 413 without reaching fn (at once when the
 * Content-Length says so).  GT_EEXIST / GT_ENOSPC / GT_ENOMEM. */
gt_err_t px_http_route_add(px_http_t *h, const char *prefix, size_t max_body,
                           px_http_route_fn fn, void *arg);
/* Removes every route whose arg is `arg`, waiting for calls in progress. */
void px_http_route_remove(px_http_t *h, void *arg);

/* Stops serving, closes the socket, frees `h`. NULL-safe. */
void px_http_stop(px_http_t *h);

#endif
