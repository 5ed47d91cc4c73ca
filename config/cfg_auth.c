/* The auth section's descriptor table and value checks: RocketMQ 5's ACL
 * users and policy entries for gRPC clients (proxy/service/px_auth.c
 * enforces them), users the AMQP gateway shares (gateway-amqp/gw_auth.c).
 *
 * Resources are RocketMQ 5's resource keys: "Topic:NAME" and "Group:NAME"
 * (literal), "Topic:PREFIX*" (prefixed), "Topic:*" (any topic), "*"
 * (anything).  Actions and decisions are RocketMQ's names, matched without
 * regard to case. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cfg_int.h"

#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

static gt_err_t cfg_check_access_key(const char *v, char *why, size_t whylen)
{
    size_t n = strlen(v);

    if (n == 0 || n > 128) {
        snprintf(why, whylen, "must be 1 to 128 characters, not %zu", n);
        return GT_EINVAL;
    }
    /* The authorization header separates its parts with ',', '/' and
     * spaces: an access key holding one could not be sent. */
    for (size_t i = 0; i < n; i++)
        if (v[i] <= ' ' || v[i] > '~' || v[i] == ',' || v[i] == '/') {
            snprintf(why, whylen, "must be printable ASCII without spaces, ',' or '/'");
            return GT_EINVAL;
        }
    return GT_OK;
}

static gt_err_t cfg_check_secret_key(const char *v, char *why, size_t whylen)
{
    size_t n = strlen(v);

    /* The value itself never goes into a message. */
    if (n == 0 || n > 256) {
        snprintf(why, whylen, "must be 1 to 256 characters");
        return GT_EINVAL;
    }
    return GT_OK;
}

static gt_err_t cfg_check_admin_token(const char *v, char *why, size_t whylen)
{
    size_t n = strlen(v);

    /* The value itself never goes into a message. */
    if (n < 16 || n > 256) {
        snprintf(why, whylen, "must be 16 to 256 characters");
        return GT_EINVAL;
    }
    for (size_t i = 0; i < n; i++)
        if (v[i] <= ' ' || v[i] > '~') {
            snprintf(why, whylen, "must be printable ASCII without spaces");
            return GT_EINVAL;
        }
    return GT_OK;
}

static bool cfg_res_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '%' || c == '|' || c == '_' || c == '-';
}

static gt_err_t cfg_check_resource(const char *v, char *why, size_t whylen)
{
    const char *colon = strchr(v, ':'), *name;
    size_t n;

    if (strcmp(v, "*") == 0)
        return GT_OK;
    if (colon == NULL || !((colon - v == 5 && strncasecmp(v, "Topic", 5) == 0) ||
                           (colon - v == 5 && strncasecmp(v, "Group", 5) == 0)))
        goto bad;
    name = colon + 1;
    n = strlen(name);
    if (n > 0 && name[n - 1] == '*')
        n--; /* a prefix, or "*" alone: any name */
    else if (n == 0)
        goto bad;
    if (n > 127)
        goto bad;
    for (size_t i = 0; i < n; i++)
        if (!cfg_res_char(name[i]))
            goto bad;
    return GT_OK;
bad:
    snprintf(why, whylen, "must be \"Topic:NAME\", \"Group:NAME\", \"Topic:PREFIX*\", "
                          "\"Group:*\"... or \"*\"");
    return GT_EINVAL;
}

static const char *const cfg_auth_actions[] = {"Pub", "Sub",  "Create", "Update",
                                               "Delete", "Get", "List",   "All"};

static gt_err_t cfg_check_action(const char *v, char *why, size_t whylen)
{
    for (size_t i = 0; i < sizeof(cfg_auth_actions) / sizeof(cfg_auth_actions[0]); i++)
        if (strcasecmp(v, cfg_auth_actions[i]) == 0)
            return GT_OK;
    snprintf(why, whylen, "must be one of Pub, Sub, Create, Update, Delete, Get, List, All");
    return GT_EINVAL;
}

gt_err_t cfg_cidr_parse(const char *s, uint8_t addr[16], int *family, int *prefix)
{
    char host[64];
    const char *slash = strchr(s, '/');
    size_t hl = slash != NULL ? (size_t)(slash - s) : strlen(s);
    int max;

    if (hl == 0 || hl >= sizeof(host))
        return GT_EINVAL;
    memcpy(host, s, hl);
    host[hl] = '\0';
    memset(addr, 0, 16);
    if (inet_pton(AF_INET, host, addr) == 1) {
        *family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, host, addr) == 1) {
        *family = AF_INET6;
        max = 128;
    } else {
        return GT_EINVAL;
    }
    *prefix = max;
    if (slash != NULL) {
        char *end = NULL;
        long p;

        if (slash[1] < '0' || slash[1] > '9')
            return GT_EINVAL;
        p = strtol(slash + 1, &end, 10);
        if (*end != '\0' || p < 0 || p > max)
            return GT_EINVAL;
        *prefix = (int)p;
    }
    return GT_OK;
}

static gt_err_t cfg_check_cidr(const char *v, char *why, size_t whylen)
{
    uint8_t a[16];
    int fam, pre;

    if (cfg_cidr_parse(v, a, &fam, &pre) == GT_OK)
        return GT_OK;
    snprintf(why, whylen, "must be an IPv4 or IPv6 address, optionally with /PREFIX-LENGTH");
    return GT_EINVAL;
}

static const cfg_desc_t cfg_auth_user_keys[] = {
    {.key = "access_key", .type = CFG_T_STR, CFG_FIELD(cfg_auth_user_t, access_key),
     .check = cfg_check_access_key, .what = "string",
     .doc = "The access key (RocketMQ's user name): a client's "
            "`sessionCredentials.accessKey`, and the user name of an AMQP login; unique."},
    {.key = "secret_key", .type = CFG_T_STR, CFG_FIELD(cfg_auth_user_t, secret_key),
     .check = cfg_check_secret_key, .what = "string", .secret = true,
     .doc = "The secret key a client signs with (`sessionCredentials.accessSecret`), "
            "and the password of an AMQP login. Kept in plain text (HMAC needs it); "
            "`--print-config` masks it."},
    {.key = "admin", .type = CFG_T_BOOL, CFG_FIELD(cfg_auth_user_t, admin), .def = "false",
     .doc = "An admin (RocketMQ's Super user) passes every ACL, and has `.*` on every "
            "AMQP vhost it has no `amqp.permissions` entry for."},
};

static const cfg_section_t cfg_auth_users = {
    "users", cfg_auth_user_keys, sizeof(cfg_auth_user_keys) / sizeof(cfg_auth_user_keys[0]),
    true, 0, sizeof(cfg_auth_user_t *), sizeof(cfg_auth_user_t), "user", NULL};

static const char *const cfg_decisions[] = {"Allow", "Deny", NULL};

static const cfg_desc_t cfg_auth_acl_keys[] = {
    {.key = "user", .type = CFG_T_STR, CFG_FIELD(cfg_auth_acl_t, user),
     .check = cfg_check_access_key, .what = "access key",
     .doc = "The `access_key` of an `auth.users` entry."},
    {.key = "resource", .type = CFG_T_STR, CFG_FIELD(cfg_auth_acl_t, resource),
     .check = cfg_check_resource, .what = "resource",
     .doc = "`Topic:NAME` or `Group:NAME` (that name), `Topic:PREFIX*` (names that "
            "start with it), `Topic:*` / `Group:*` (any), `*` (anything)."},
    {.key = "actions", .type = CFG_T_STRLIST, CFG_FIELD(cfg_auth_acl_t, actions),
     .def = "", .check = cfg_check_action, .what = "list of actions",
     .doc = "`Pub`, `Sub`, `Create`, `Update`, `Delete`, `Get`, `List`, `All` (at least "
            "one)."},
    {.key = "decision", .type = CFG_T_ENUM, CFG_FIELD(cfg_auth_acl_t, deny), .def = "Allow",
     .choices = cfg_decisions,
     .doc = "Whether the entry allows or denies. Of the entries that match a request, "
            "the most specific resource decides (a name before a prefix, a longer "
            "prefix before a shorter one, before `*`), `Deny` on a tie; with none, "
            "the request is refused."},
    {.key = "source_ips", .type = CFG_T_STRLIST, CFG_FIELD(cfg_auth_acl_t, source_ips),
     .def = "", .check = cfg_check_cidr, .what = "list of addresses",
     .doc = "Client addresses the entry applies to (`10.0.0.5`, `10.0.0.0/8`, "
            "`::1`); `[]`: any."},
};

static const cfg_section_t cfg_auth_acls = {
    "acls", cfg_auth_acl_keys, sizeof(cfg_auth_acl_keys) / sizeof(cfg_auth_acl_keys[0]),
    true, 0, sizeof(cfg_auth_acl_t *), sizeof(cfg_auth_acl_t), NULL, NULL};

const cfg_desc_t cfg_auth_keys[CFG_N_AUTH_KEYS] = {
    {.key = "enabled", .type = CFG_T_BOOL, CFG_FIELD(cfg_t, auth.enabled), .def = "false",
     .doc = "Authenticate gRPC clients (RocketMQ 5's `authorization` header, "
            "`MQv2-HMAC-SHA1`) and check `acls` on every request. A request without "
            "valid credentials gets UNAUTHORIZED (40100), one the ACLs refuse "
            "FORBIDDEN (40300); the admin API (`/api/`) needs a token or an admin user "
            "(`admin_tokens`). Off: every client may do everything."},
    {.key = "max_clock_skew_s", .type = CFG_T_INT, CFG_FIELD(cfg_t, auth.max_clock_skew_s),
     .def = "900", .min = 1, .max = 86400,
     .doc = "A signed `x-mq-date-time` further than this from the server's clock "
            "is refused (UNAUTHORIZED), so that a captured header cannot be "
            "replayed later. A Telemetry stream is checked when it opens."},
    {.key = "users", .type = CFG_T_LIST, CFG_FIELD(cfg_t, auth.users), .def = "",
     .sub = &cfg_auth_users, .what = "list of users",
     .doc = "The users (also AMQP users, next to `amqp.users`)."},
    {.key = "acls", .type = CFG_T_LIST, CFG_FIELD(cfg_t, auth.acls), .def = "",
     .sub = &cfg_auth_acls, .what = "list of ACL entries",
     .doc = "Who may do what on which topic or group (admin users need none)."},
    {.key = "admin_tokens", .type = CFG_T_STRLIST, CFG_FIELD(cfg_t, auth.admin_tokens),
     .def = "", .check = cfg_check_admin_token, .what = "list of tokens", .secret = true,
     .doc = "Bearer tokens of the admin API (16 to 256 printable characters each). "
            "With `enabled`, every `/api/` request needs `Authorization: Bearer TOKEN` "
            "with one of them, or HTTP Basic `access_key:secret_key` of an admin user "
            "(a valid non-admin user gets 403); `/healthz`, `/readyz` and `/metrics` "
            "stay open. `--print-config` masks them."},
};
