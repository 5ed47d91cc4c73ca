/* px_admin: the admin API, JSON over the operator HTTP endpoint
 * (/api/v1/topics, /groups, /clients, /messages, /config, /users,
 * /cluster).  See
 * docs/admin.md for the routes, their bodies and their answers.
 *
 * Every handler runs on an HTTP thread and reaches the store through its
 * asynchronous API, waiting for the answers at most PX_ADMIN_WAIT_MS in
 * all (then 504): a slow store holds one HTTP thread that long, never the
 * store or the gRPC side.  Changes go through the store (st_topic_put,
 * st_group_put, st_offset_update...), which persists them.
 *
 * Access: open when auth.enabled is off.  When on, px_admin_auth_check
 * (px_admin_auth.c, installed with px_http_set_api_auth) guards every
 * /api/ request, reads too: Authorization: Bearer with one of
 * auth.admin_tokens, or Basic access_key:secret_key of an auth.users
 * entry with admin: true; a valid non-admin user gets 403, anything else
 * 401.  /healthz, /readyz and /metrics stay open. */
#ifndef PX_ADMIN_H
#define PX_ADMIN_H

#include <stdbool.h>
#include <stdint.h>

#include "cfg.h"
#include "px_http.h"
#include "px_service.h"
#include "px_users.h"
#include "st.h"

#define PX_ADMIN_WAIT_MS 5000
#define PX_ADMIN_MAX_BODY (64 * 1024)

typedef struct px_admin px_admin_t;

/* Registers the routes on h.  Borrows everything (it must outlive
 * px_admin_stop); users (NULL: /api/v1/users answers 503) is the user
 * set of px_users.h.  NULL when out of memory or the routes are taken. */
px_admin_t *px_admin_start(px_http_t *h, px_svc_t *svc, st_store_t *store,
                           const cfg_t *cfg, px_users_t *users);
/* One AMQP connection for GET /api/v1/clients (the gateway's view,
 * gw_server_conns, copied by the front end). */
typedef struct px_admin_amqp_conn {
    uint64_t id;
    int64_t since_ms;
    uint32_t channels;
    bool tls;
    char peer[64], user[64], vhost[256], product[64], version[64];
} px_admin_amqp_conn_t;
typedef struct px_admin_amqp_ops {
    /* An array to free() (NULL with *n 0: none). */
    px_admin_amqp_conn_t *(*list)(void *arg, size_t *n);
    /* GT_OK (closing), GT_ENOTFOUND, GT_AGAIN (busy). */
    gt_err_t (*close)(void *arg, uint64_t id);
    void *arg;
} px_admin_amqp_ops_t;
/* AMQP connections in the client list (copied; NULL removes them, waiting
 * for calls in progress).  Call before the gateway stops. */
void px_admin_set_amqp(px_admin_t *a, const px_admin_amqp_ops_t *ops);

/* store.mode cluster: the store router of st_place.h (borrowed until
 * px_admin_stop) for GET /api/v1/cluster and POST
 * /api/v1/cluster/rebalance (404 without).  Call before serving. */
void px_admin_set_cluster(px_admin_t *a, st_store_t *router);

/* Unregisters (waiting for calls in progress) and frees.  NULL-safe. */
void px_admin_stop(px_admin_t *a);

/* The admin API's credentials, built from the auth section (tokens and
 * users kept as digests only).  Any thread may check. */
typedef struct px_admin_auth px_admin_auth_t;
gt_err_t px_admin_auth_new(const cfg_auth_t *cfg, px_admin_auth_t **out);
void px_admin_auth_free(px_admin_auth_t *a);
/* Replaces the users (the admin API changed them; tokens stay): checks
 * from now on see the new ones.  GT_OK or GT_ENOMEM (the old ones stay). */
gt_err_t px_admin_auth_update(px_admin_auth_t *a, const cfg_auth_t *cfg);
/* A px_http_api_auth_fn (arg: a px_admin_auth_t): 0, 401 or 403. */
unsigned px_admin_auth_check(void *arg, const char *method, const char *url,
                             const char *authorization);

#endif
