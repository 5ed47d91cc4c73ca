/* px_dashboard: the web dashboard, static files compiled into the binary
 * and served from the HTTP port under /dashboard/ (the page itself talks to
 * the admin API, /api/v1, and reads /metrics).
 *
 * GET|HEAD /dashboard        -> 301 to /dashboard/
 * GET|HEAD /dashboard/       -> index.html
 * GET|HEAD /dashboard/<file> -> that file, by exact name from a fixed table
 *                               (no file system: nothing else is reachable)
 * Anything else under /dashboard -> 404; other methods -> 405.
 * Every answer has its content type, `Cache-Control: no-cache` and an ETag
 * (If-None-Match -> 304), `X-Content-Type-Options: nosniff` and a
 * Content-Security-Policy allowing this origin only. */
#ifndef PX_DASHBOARD_H
#define PX_DASHBOARD_H

#include "gt_err.h"
#include "px_http.h"

/* Registers the /dashboard route on h (borrowed; the route needs no state
 * and is removed with h). */
gt_err_t px_dashboard_register(px_http_t *h);

#endif
