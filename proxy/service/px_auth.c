/* Users and ACLs of RocketMQ clients (see px_auth.h): tables built once
 * from the config's auth section, signatures checked with OpenSSL's HMAC
 * (common/gt_hmac.c). */
#include "px_auth.h"

#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>


struct px_auth_user {
    char *ak;
    char *secret;
    size_t secret_len;
    bool admin;
};

typedef enum px_pattern {
    PX_PAT_LITERAL, /* most specific */
    PX_PAT_PREFIX,
    PX_PAT_ANY_NAME, /* "Topic:*" */
    PX_PAT_ANY,      /* "*": any type too */
} px_pattern_t;

typedef struct px_cidr {
    uint8_t addr[16];
    int family; /* AF_INET, AF_INET6 */
    int prefix;
} px_cidr_t;

typedef struct px_acl {
    const px_auth_user_t *user;
    px_res_type_t type; /* unused for PX_PAT_ANY */
    px_pattern_t pattern;
    char *name; /* literal name or prefix; NULL for the any patterns */
    size_t name_len;
    unsigned actions;
    bool deny;
    px_cidr_t *cidrs;
    size_t n_cidrs;
} px_acl_t;

struct px_auth {
    px_auth_user_t *users;
    size_t n_users;
    px_acl_t *acls;
    size_t n_acls;
    int64_t max_skew_ms;
};

static const struct {
    const char *name;
    unsigned bit;
} px_actions[] = {{"Pub", PX_ACT_PUB},       {"Sub", PX_ACT_SUB},       {"Create", PX_ACT_CREATE},
                  {"Update", PX_ACT_UPDATE}, {"Delete", PX_ACT_DELETE}, {"Get", PX_ACT_GET},
                  {"List", PX_ACT_LIST},     {"All", PX_ACT_ALL}};

static const px_auth_user_t *user_find(const px_auth_t *a, const char *ak, size_t len)
{
    for (size_t i = 0; i < a->n_users; i++)
        if (strlen(a->users[i].ak) == len && memcmp(a->users[i].ak, ak, len) == 0)
            return &a->users[i];
    return NULL;
}

static gt_err_t acl_init(px_auth_t *a, px_acl_t *e, const cfg_auth_acl_t *c, char *err,
                         size_t errlen)
{
    const char *r = c->resource, *colon = strchr(r, ':');

    e->user = user_find(a, c->user, strlen(c->user));
    e->deny = c->deny;
    if (e->user == NULL) {
        snprintf(err, errlen, "auth.acls: no user \"%s\" in auth.users", c->user);
        return GT_EINVAL;
    }
    for (size_t i = 0; i < c->actions.n; i++)
        for (size_t j = 0; j < sizeof(px_actions) / sizeof(px_actions[0]); j++)
            if (strcasecmp(c->actions.v[i], px_actions[j].name) == 0)
                e->actions |= px_actions[j].bit;
    if (strcmp(r, "*") == 0) {
        e->pattern = PX_PAT_ANY;
    } else {
        const char *name = colon != NULL ? colon + 1 : "";
        size_t n = strlen(name);

        if (colon == NULL) {
            snprintf(err, errlen, "auth.acls: bad resource \"%s\"", r);
            return GT_EINVAL;
        }
        e->type = strncasecmp(r, "Topic", 5) == 0 ? PX_RES_TOPIC : PX_RES_GROUP;
        if (strcmp(name, "*") == 0) {
            e->pattern = PX_PAT_ANY_NAME;
        } else {
            e->pattern = name[n - 1] == '*' ? PX_PAT_PREFIX : PX_PAT_LITERAL;
            e->name_len = e->pattern == PX_PAT_PREFIX ? n - 1 : n;
            if ((e->name = strndup(name, e->name_len)) == NULL)
                goto oom;
        }
    }
    if (c->source_ips.n > 0 && (e->cidrs = calloc(c->source_ips.n, sizeof(px_cidr_t))) == NULL)
        goto oom;
    for (size_t i = 0; i < c->source_ips.n; i++) {
        px_cidr_t *x = &e->cidrs[i];
        if (cfg_cidr_parse(c->source_ips.v[i], x->addr, &x->family, &x->prefix) != GT_OK) {
            snprintf(err, errlen, "auth.acls: bad source address \"%s\"", c->source_ips.v[i]);
            return GT_EINVAL;
        }
        e->n_cidrs = i + 1;
    }
    return GT_OK;
oom:
    snprintf(err, errlen, "auth: out of memory");
    return GT_ENOMEM;
}

gt_err_t px_auth_new(const cfg_auth_t *cfg, px_auth_t **out, char *err, size_t errlen)
{
    px_auth_t *a = calloc(1, sizeof(*a));
    gt_err_t rc = GT_ENOMEM;

    *out = NULL;
    if (a == NULL || (cfg->users.n > 0 && (a->users = calloc(cfg->users.n, sizeof(*a->users))) ==
                                              NULL) ||
        (cfg->acls.n > 0 && (a->acls = calloc(cfg->acls.n, sizeof(*a->acls))) == NULL))
        goto oom;
    a->max_skew_ms = (int64_t)cfg->max_clock_skew_s * 1000;
    for (size_t i = 0; i < cfg->users.n; i++) {
        px_auth_user_t *u = &a->users[i];
        a->n_users = i + 1;
        if ((u->ak = strdup(cfg->users.v[i].access_key)) == NULL ||
            (u->secret = strdup(cfg->users.v[i].secret_key)) == NULL)
            goto oom;
        u->secret_len = strlen(u->secret);
        u->admin = cfg->users.v[i].admin;
    }
    for (size_t i = 0; i < cfg->acls.n; i++) {
        a->n_acls = i + 1;
        if ((rc = acl_init(a, &a->acls[i], &cfg->acls.v[i], err, errlen)) != GT_OK)
            goto fail;
    }
    *out = a;
    return GT_OK;
oom:
    snprintf(err, errlen, "auth: out of memory");
    rc = GT_ENOMEM;
fail:
    px_auth_free(a);
    return rc;
}

void px_auth_free(px_auth_t *a)
{
    if (a == NULL)
        return;
    for (size_t i = 0; i < a->n_acls; i++) {
        free(a->acls[i].name);
        free(a->acls[i].cidrs);
    }
    free(a->acls);
    for (size_t i = 0; i < a->n_users; i++) {
        free(a->users[i].ak);
        if (a->users[i].secret != NULL)
            OPENSSL_cleanse(a->users[i].secret, a->users[i].secret_len);
        free(a->users[i].secret);
    }
    free(a->users);
    free(a);
}

const char *px_auth_user_name(const px_auth_user_t *u)
{
    return u->ak;
}

bool px_auth_user_admin(const px_auth_user_t *u)
{
    return u->admin;
}

const px_auth_user_t *px_auth_login(const px_auth_t *a, const char *authorization,
                                    const char *datetime, int64_t now_ms, bool check_skew,
                                    char *why, size_t whylen)
{
    static const char no_secret[] = "";
    const px_auth_user_t *u;
    const char *bad = NULL;
    px_auth_hdr_t h;
    uint8_t mac[GT_SHA1_LEN];
    int64_t at_ms = 0;
    bool ok;

    if (authorization == NULL || authorization[0] == '\0') {
        snprintf(why, whylen, "authorization metadata is required: authentication is enabled");
        return NULL;
    }
    if (datetime == NULL || datetime[0] == '\0') {
        snprintf(why, whylen, "x-mq-date-time metadata is required: authentication is enabled");
        return NULL;
    }
    if (px_auth_header_parse(authorization, strlen(authorization), &h, &bad) != GT_OK) {
        snprintf(why, whylen, "malformed authorization header: %s", bad);
        return NULL;
    }
    u = user_find(a, h.ak, h.ak_len);
    /* An unknown access key costs an HMAC too: the answer's timing does
     * not tell which keys exist. */
    ok = gt_hmac_sha1(u != NULL ? u->secret : no_secret, u != NULL ? u->secret_len : 0,
                      datetime, strlen(datetime), mac) == GT_OK &&
         gt_hmac_equal(mac, h.sig, GT_SHA1_LEN);
    if (u == NULL) {
        snprintf(why, whylen, "user \"%.*s\" is not found", (int)(h.ak_len > 128 ? 128 : h.ak_len),
                 h.ak);
        return NULL;
    }
    if (!ok) {
        snprintf(why, whylen, "check signature failed for user \"%s\"", u->ak);
        return NULL;
    }
    if (check_skew) {
        if (px_auth_datetime_parse(datetime, strlen(datetime), &at_ms) != GT_OK) {
            snprintf(why, whylen, "x-mq-date-time \"%.32s\" is not yyyyMMddTHHmmssZ", datetime);
            return NULL;
        }
        if (at_ms > now_ms + a->max_skew_ms || at_ms < now_ms - a->max_skew_ms) {
            snprintf(why, whylen, "x-mq-date-time %.32s is more than %lld s away from the "
                     "server's clock", datetime, (long long)(a->max_skew_ms / 1000));
            return NULL;
        }
    }
    return u;
}

/* The client's address from gRPC's peer text. */
static bool peer_addr(const char *peer, uint8_t addr[16], int *family)
{
    char host[64];
    const char *b, *e;

    memset(addr, 0, 16);
    if (peer == NULL)
        return false;
    if (strncmp(peer, "ipv4:", 5) == 0) {
        b = peer + 5;
        e = strrchr(b, ':');
        *family = AF_INET;
    } else if (strncmp(peer, "ipv6:[", 6) == 0) {
        b = peer + 6;
        e = strchr(b, ']');
        *family = AF_INET6;
    } else {
        return false;
    }
    if (e == NULL || (size_t)(e - b) >= sizeof(host))
        return false;
    memcpy(host, b, (size_t)(e - b));
    host[e - b] = '\0';
    /* gRPC may write a zone (%eth0) after a link-local address. */
    if (strchr(host, '%') != NULL)
        *strchr(host, '%') = '\0';
    if (inet_pton(*family, host, addr) != 1)
        return false;
    /* An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is that IPv4 one. */
    if (*family == AF_INET6 && memcmp(addr, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0) {
        memmove(addr, addr + 12, 4);
        memset(addr + 4, 0, 12);
        *family = AF_INET;
    }
    return true;
}

static bool cidr_match(const px_cidr_t *c, const uint8_t addr[16], int family)
{
    int full = c->prefix / 8, rest = c->prefix % 8;

    /* The peer's address is IPv4 also when it came mapped (peer_addr); an
     * IPv6 entry matches it as its mapped form (::ffff:10.0.0.0/104 is
     * 10.0.0.0/8). */
    if (c->family == AF_INET6 && family == AF_INET) {
        uint8_t mapped[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

        memcpy(mapped + 12, addr, 4);
        return cidr_match(c, mapped, AF_INET6);
    }
    if (c->family != family)
        return false;
    if (memcmp(c->addr, addr, (size_t)full) != 0)
        return false;
    if (rest == 0)
        return true;
    return ((c->addr[full] ^ addr[full]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

static bool acl_matches(const px_acl_t *e, px_res_type_t type, const char *name, size_t len,
                        unsigned actions, bool have_addr, const uint8_t addr[16], int family)
{
    bool from = e->n_cidrs == 0;

    if (e->pattern != PX_PAT_ANY && e->type != type)
        return false;
    if (e->pattern == PX_PAT_LITERAL && !(len == e->name_len && memcmp(name, e->name, len) == 0))
        return false;
    if (e->pattern == PX_PAT_PREFIX &&
        !(len >= e->name_len && memcmp(name, e->name, e->name_len) == 0))
        return false;
    if ((e->actions & actions) == 0)
        return false;
    for (size_t i = 0; i < e->n_cidrs && !from && have_addr; i++)
        from = cidr_match(&e->cidrs[i], addr, family);
    return from;
}

/* Whether entry x decides before entry y: a more specific resource, then
 * Deny. */
static bool acl_before(const px_acl_t *x, const px_acl_t *y)
{
    if (x->pattern != y->pattern)
        return x->pattern < y->pattern;
    if (x->pattern == PX_PAT_PREFIX && x->name_len != y->name_len)
        return x->name_len > y->name_len;
    return x->deny && !y->deny;
}

bool px_auth_allowed(const px_auth_t *a, const px_auth_user_t *u, px_res_type_t type,
                     const char *name, unsigned actions, const char *peer, char *why,
                     size_t whylen)
{
    const px_acl_t *best = NULL;
    uint8_t addr[16];
    int family = 0;
    bool have_addr = peer_addr(peer, addr, &family);
    size_t len = strlen(name);

    if (u->admin)
        return true;
    for (size_t i = 0; i < a->n_acls; i++) {
        const px_acl_t *e = &a->acls[i];
        if (e->user == u && acl_matches(e, type, name, len, actions, have_addr, addr, family) &&
            (best == NULL || acl_before(e, best)))
            best = e;
    }
    if (best != NULL && !best->deny)
        return true;
    snprintf(why, whylen, "user \"%s\" has no permission to access %s:%.160s from %.64s, %s",
             u->ak, type == PX_RES_TOPIC ? "Topic" : "Group", name,
             peer != NULL ? peer : "?", best == NULL ? "no matched policies" : "the decision is deny");
    return false;
}
