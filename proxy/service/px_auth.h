/* Authentication and ACLs of RocketMQ 5 gRPC clients (config section
 * auth), as RocketMQ 5's ACL checks them.
 *
 * Authentication.  A client signs each request's metadata: x-mq-date-time
 * ("yyyyMMdd'T'HHmmss'Z'", UTC) and
 *     authorization: MQv2-HMAC-SHA1 Credential=AK, SignedHeaders=x-mq-date-time,
 *                    Signature=HEX
 * where HEX is the HMAC-SHA1 of the x-mq-date-time value keyed with the
 * user's secret key (the SDKs write it upper case; either case is taken).
 * After the scheme, the header is comma-separated KEY=VALUE items with
 * spaces around them; a Credential's value ends at its first '/' (the
 * rest, a region/service scope in some SDKs, is ignored); unknown items
 * are ignored.  Signatures are compared in constant time, and a date
 * further than auth.max_clock_skew_s from the server's clock is refused
 * (RocketMQ itself does not bound it).
 *
 * Authorization.  Each request needs actions on resources (px_auth_rpc.c
 * has RocketMQ 5's mapping per RPC).  Of a user's ACL entries, those whose
 * resource, one of whose actions (or All), and whose source addresses
 * match count; the most specific resource decides (a name, then the
 * longest prefix, then "Topic:*", then "*"), Deny winning a tie; with none
 * the request is refused.  Admin users pass without ACLs.
 *
 * A px_auth_t is built once from the config and immutable afterwards: any
 * thread may use it.  Secrets never leave it (no log line or message
 * carries one). */
#ifndef PX_AUTH_H
#define PX_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "gt_err.h"
#include "gt_hmac.h"

typedef struct px_auth px_auth_t;
typedef struct px_auth_user px_auth_user_t;

/* Actions (bits), RocketMQ's names. */
enum {
    PX_ACT_PUB = 1,
    PX_ACT_SUB = 2,
    PX_ACT_CREATE = 4,
    PX_ACT_UPDATE = 8,
    PX_ACT_DELETE = 16,
    PX_ACT_GET = 32,
    PX_ACT_LIST = 64,
    PX_ACT_ALL = 127,
};

typedef enum px_res_type {
    PX_RES_TOPIC = 1,
    PX_RES_GROUP = 2,
} px_res_type_t;

/* The parsed authorization header: ak points into the parsed text. */
typedef struct px_auth_hdr {
    const char *ak;
    size_t ak_len;
    uint8_t sig[GT_SHA1_LEN];
} px_auth_hdr_t;

/* Parses the len bytes at s (borrowed; need not be NUL-terminated) as an
 * authorization header.  GT_OK with *out filled, or GT_EINVAL with a
 * static reason in *why: another scheme, an item without '=', no
 * Credential or an empty access key, no Signature or one that is not 40
 * hex digits.  Pure: no allocation, globals or logging. */
gt_err_t px_auth_header_parse(const char *s, size_t len, px_auth_hdr_t *out,
                              const char **why);

/* Parses x-mq-date-time ("20231227T194619Z") into milliseconds since the
 * epoch.  GT_OK, or GT_EINVAL for any other form or an impossible date. */
gt_err_t px_auth_datetime_parse(const char *s, size_t len, int64_t *ms);

/* Builds the users and compiled ACLs of a loaded (validated) section.
 * GT_OK with *out (free with px_auth_free), GT_EINVAL with a message in
 * err for what the config check cannot see, GT_ENOMEM. */
gt_err_t px_auth_new(const cfg_auth_t *cfg, px_auth_t **out, char *err, size_t errlen);
void px_auth_free(px_auth_t *a);

/* Authenticates one request from its metadata (borrowed; NULL when
 * absent): the user, or NULL with the reason in why (no secret in it).
 * now_ms: the server's clock; check_skew false skips the date bound (the
 * later messages of a stream whose first one was checked). */
const px_auth_user_t *px_auth_login(const px_auth_t *a, const char *authorization,
                                    const char *datetime, int64_t now_ms, bool check_skew,
                                    char *why, size_t whylen);

/* The user's access key (NUL-terminated). */
const char *px_auth_user_name(const px_auth_user_t *u);
/* An admin user (passes every ACL). */
bool px_auth_user_admin(const px_auth_user_t *u);

/* May user u do one of `actions` on the resource (type, name) from the
 * client address peer (gRPC's "ipv4:1.2.3.4:5", "ipv6:[::1]:5"; another
 * form matches only entries without source_ips)?  true when allowed; when
 * refused, why gets the explanation. */
bool px_auth_allowed(const px_auth_t *a, const px_auth_user_t *u, px_res_type_t type,
                     const char *name, unsigned actions, const char *peer, char *why,
                     size_t whylen);

#endif
