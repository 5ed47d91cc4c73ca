/* px_admin: the admin API, JSON over the operator HTTP endpoint
 * (/api/v1/topics, /groups, /clients, /messages, /config).  See
 * docs/admin.md for the routes, their bodies and their answers.
 *
 * Every handler runs on an HTTP thread and reaches the store through its
 * asynchronous API, waiting for the answers at most PX_ADMIN_WAIT_MS in
 * all (then 504): a slow store holds one HTTP thread that long, never the
 * store or the gRPC side.  Changes go through the store (st_topic_put,
 * st_group_put, st_offset_update...), which persists them.
 *
 * Access: open by default.  px_admin_set_auth installs a check that sees
 * every request's method, path and Authorization header first (bearer
 * tokens, users with an admin role): false answers 401. */
#ifndef PX_ADMIN_H
#define PX_ADMIN_H

#include <stdbool.h>

#include "cfg.h"
#include "px_http.h"
#include "px_service.h"
#include "st.h"

#define PX_ADMIN_WAIT_MS 5000
#define PX_ADMIN_MAX_BODY (64 * 1024)

typedef struct px_admin px_admin_t;

/* Registers the routes on h.  Borrows everything (it must outlive
 * px_admin_stop).  NULL when out of memory or the routes are taken. */
px_admin_t *px_admin_start(px_http_t *h, px_svc_t *svc, st_store_t *store,
                           const cfg_t *cfg);
/* Unregisters (waiting for calls in progress) and frees.  NULL-safe. */
void px_admin_stop(px_admin_t *a);

/* The access check: fn(arg, method, url, authorization or NULL) -> true
 * to serve the request.  NULL: everything is served. */
typedef bool (*px_admin_auth_fn)(void *arg, const char *method, const char *url,
                                 const char *authorization);
void px_admin_set_auth(px_admin_t *a, px_admin_auth_fn fn, void *arg);

#endif
