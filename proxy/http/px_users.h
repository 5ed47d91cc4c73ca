/* px_users: the users and ACL entries of the auth section changed at
 * runtime through the admin API (/api/v1/users, px_admin_user.c).
 *
 * Two kinds of users: those of the config file (auth.users and their
 * auth.acls), read-only here, and those created through the API, kept as
 * durable metadata records of the store (namespace PX_USERS_NS, key the
 * access key, value a JSON object {secret_key, admin, acls}), so that they
 * survive a restart and, with a remote store, are shared by the proxies
 * that read them at start.  The effective user set, config users first,
 * is rebuilt as a config auth section (loaded through the config's own
 * checks, so an API user is held to the rules of a config one) and handed
 * to the apply hook, which swaps what the gRPC ACL check, the AMQP
 * gateway and the admin API's Basic check use.  A stored user whose access
 * key the config now declares is ignored (the config wins; logged).
 *
 * Thread-safety: changes are serialised by a mutex; the hook runs under it. */
#ifndef PX_USERS_H
#define PX_USERS_H

#include <jansson.h>

#include "cfg.h"
#include "gt_err.h"
#include "st.h"

#define PX_USERS_NS "gantry.auth.users"

typedef struct px_users px_users_t;

/* Makes the effective users current (eff is borrowed for the call): GT_OK,
 * or an error with a message (then nothing changed). */
typedef gt_err_t (*px_users_apply_fn)(void *arg, const cfg_auth_t *eff, char *err,
                                      size_t errlen);

/* Reads the stored users (waiting at most timeout_ms for the store) and,
 * when there are any, applies the effective set once.  Borrows store and cfg (they outlive
 * the result).  GT_OK with *out; else an error in err. */
gt_err_t px_users_new(st_store_t *store, const cfg_t *cfg, px_users_apply_fn apply,
                      void *apply_arg, int timeout_ms, px_users_t **out, char *err,
                      size_t errlen);
void px_users_free(px_users_t *u);

/* The users as JSON, secrets left out: [{access_key, admin, source
 * ("config" | "api"), acls: [{resource, actions, decision, source_ips}]}];
 * only `name` when not NULL (NULL result: no such user). */
json_t *px_users_list(px_users_t *u, const char *name);

/* Creates (create true: GT_EEXIST when it exists) or updates (GT_ENOTFOUND
 * for an unknown user) the API user `name` from body fields secret_key,
 * admin, acls (an update keeps what it does not give); GT_EUNSUPPORTED
 * for a config user (read-only here); GT_EINVAL with the reason in err for a bad field or value;
 * a store error otherwise.  Persisted before it applies. */
gt_err_t px_users_put(px_users_t *u, const char *name, const json_t *body, bool create,
                      int64_t deadline_ms, char *err, size_t errlen);
/* Deletes API user `name`: GT_ENOTFOUND, GT_EUNSUPPORTED (config user), a store error. */
gt_err_t px_users_delete(px_users_t *u, const char *name, int64_t deadline_ms, char *err,
                         size_t errlen);

#endif
