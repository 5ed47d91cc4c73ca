/* The AMQP gateway's users, vhosts and permissions (config section amqp),
 * checked as RabbitMQ's internal auth backend checks them.
 *
 * A gw_auth_t is built once from the config and is immutable afterwards:
 * any thread may use it, and the users and grants it hands out live as
 * long as it does.  With no amqp.users there is RabbitMQ's default user
 * guest/guest; with neither users nor permissions, guest has ".*" for
 * configure, write and read on vhost "/" (when "/" is a vhost).  The users
 * of the auth section (RocketMQ's ACL users) log in here too: one user
 * store for both protocols (see gw_auth_new).
 *
 * Passwords: amqp.users[].password_hash is RabbitMQ's format, base64 of a
 * 4-byte salt followed by H(salt || UTF-8 password) with H SHA-256
 * (rabbit_password_hashing_sha256) or SHA-512; a plain amqp.users[].password
 * is hashed the same way at start-up.  A login compares digests with
 * CRYPTO_memcmp.  An empty password never logs in (RabbitMQ refuses blank
 * passwords).
 *
 * Permissions: RabbitMQ's three regular expressions per user and vhost,
 * matched anywhere in the resource name (POSIX extended here, PCRE in
 * RabbitMQ: the common subset behaves the same); "" matches only the empty
 * name, i.e. nothing, as RabbitMQ turns it into "^$". */
#ifndef GW_AUTH_H
#define GW_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "cfg.h"
#include "gt_err.h"
#include "gw_codec.h"

typedef struct gw_auth gw_auth_t;
typedef struct gw_user gw_user_t;
/* One user's permissions in one vhost (what connection.open grants). */
typedef struct gw_grant gw_grant_t;

/* Permission bits, RabbitMQ's three. */
enum {
    GW_PERM_CONFIGURE = 1, /* declare / delete exchanges and queues */
    GW_PERM_WRITE = 2,     /* publish to an exchange, bind a queue (destination) */
    GW_PERM_READ = 4,      /* consume / get / purge a queue, bind from an exchange */
};

/* The kind of resource, as RabbitMQ names it in its messages. */
typedef enum gw_res_kind {
    GW_RES_EXCHANGE,
    GW_RES_QUEUE,
} gw_res_kind_t;

/* Builds the tables from a loaded (validated) config section, and the
 * users of the auth section (auth, may be NULL) next to amqp.users: an
 * access key logs in with its secret key as the password, and an admin
 * one has ".*" on every vhost it has no amqp.permissions entry for.  The
 * default guest exists only when neither section has users.  GT_OK with
 * *out; GT_EINVAL (a regex the config check let through but regcomp
 * refuses here) or GT_ENOMEM with a message in err.  Logs a warning per
 * user with a plain-text password in amqp.users. */
gt_err_t gw_auth_new(const cfg_amqp_t *cfg, const cfg_auth_t *auth, gw_auth_t **out, char *err,
                     size_t errlen);
/* NULL is a no-op. */
void gw_auth_free(gw_auth_t *a);

/* A login (PLAIN / AMQPLAIN credentials): the user, or NULL when refused,
 * with the reason for the log in why, in RabbitMQ's words ("user 'u' -
 * invalid credentials", "user 'guest' can only connect via localhost").
 * loopback: the peer's address is a loopback one. */
const gw_user_t *gw_auth_login(const gw_auth_t *a, gw_str_t user, gw_str_t password,
                               bool loopback, char *why, size_t whylen);

/* The user's name (NUL-terminated). */
const char *gw_user_name(const gw_user_t *u);
/* Does a have a user of that name? */
bool gw_auth_has_user(const gw_auth_t *a, const char *name);

/* connection.open: the user's grant on vhost, or NULL and err gets the
 * 530 NOT_ALLOWED explanation, without the "NOT_ALLOWED - " prefix that
 * gw_fault_set adds: "vhost X not found" or "access to vhost 'X' refused
 * for user 'U'" (RabbitMQ 3.10's texts). */
const gw_grant_t *gw_auth_open(const gw_auth_t *a, const gw_user_t *u, gw_str_t vhost,
                               char *err, size_t errlen);

/* The vhost a grant is for (NUL-terminated). */
const char *gw_grant_vhost(const gw_grant_t *g);

/* The permission check for the model: may the connection holding grant g
 * do perm (one GW_PERM_* bit, or several: all must match) on the exchange
 * or queue called name?  true when allowed.  When refused, err gets the
 * 403 ACCESS_REFUSED explanation without the "ACCESS_REFUSED - " prefix
 * that gw_fault_set adds, in RabbitMQ's words:
 *     access to queue 'q' in vhost '/' refused for user 'u'
 * (RabbitMQ closes the channel with it).  The default exchange "" is
 * checked, and named, as "amq.default", as RabbitMQ does.  name is len
 * bytes, not NUL-terminated; g NULL refuses everything. */
bool gw_auth_check(const gw_grant_t *g, unsigned perm, gw_res_kind_t kind, const char *name,
                   size_t len, char *err, size_t errlen);

/* The same, filling *f (403, class_id / method_id of the refused method)
 * for channel.close when refused. */
bool gw_auth_check_fault(const gw_grant_t *g, unsigned perm, gw_res_kind_t kind,
                         const char *name, size_t len, uint16_t class_id, uint16_t method_id,
                         gw_fault_t *f);

/* RabbitMQ's SHA-256 password hash of password, with a random salt, for
 * amqp.users[].password_hash (`gantry --hash-password`): base64 of
 * salt[4] || SHA-256(salt || password), 48 characters and a NUL in out
 * (outlen >= 49).  GT_EIO when no random salt can be had, GT_ERANGE when
 * out is too small. */
gt_err_t gw_auth_hash_password(const char *password, char *out, size_t outlen);

#endif
