/* The gateway's users, vhosts and permissions (see gw_auth.h): tables
 * built once from the config, OpenSSL for the password digests. */
#include "gw_auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt_log.h"

#define GW_SALT_LEN 4
#define GW_DIGEST_MAX 64

struct gw_user {
    char *name;
    cfg_amqp_hashing_t hashing;
    uint8_t salt[GW_SALT_LEN];
    uint8_t digest[GW_DIGEST_MAX];
    bool loopback_only;
};

struct gw_grant {
    const gw_user_t *user;
    const char *vhost; /* the auth's copy */
    regex_t re[3];     /* configure, write, read */
    int n_re;          /* compiled so far (for the free) */
};

struct gw_auth {
    gw_user_t *users;
    size_t n_users;
    char **vhosts;
    size_t n_vhosts;
    gw_grant_t *grants;
    size_t n_grants;
};

static size_t digest_len(cfg_amqp_hashing_t h)
{
    return h == CFG_HASH_SHA512 ? 64 : 32;
}

/* H(salt || password) into out (digest_len bytes). */
static bool salted_digest(cfg_amqp_hashing_t h, const uint8_t salt[GW_SALT_LEN],
                          const char *pw, size_t pwlen, uint8_t *out)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int n = 0;
    bool ok;

    if (ctx == NULL)
        return false;
    ok = EVP_DigestInit_ex(ctx, h == CFG_HASH_SHA512 ? EVP_sha512() : EVP_sha256(), NULL) == 1 &&
         EVP_DigestUpdate(ctx, salt, GW_SALT_LEN) == 1 &&
         EVP_DigestUpdate(ctx, pw, pwlen) == 1 && EVP_DigestFinal_ex(ctx, out, &n) == 1 &&
         n == digest_len(h);
    EVP_MD_CTX_free(ctx);
    return ok;
}

static bool in_list(const cfg_strlist_t *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], s) == 0)
            return true;
    return false;
}

static bool str_is(gw_str_t s, const char *c)
{
    return s.len == strlen(c) && memcmp(s.ptr, c, s.len) == 0;
}

/* One user from its config entry (password_hash decoded, or password
 * hashed with a fresh salt). */
static gt_err_t user_init(gw_user_t *u, const cfg_amqp_user_t *cu, const cfg_amqp_t *cfg,
                          char *err, size_t errlen)
{
    u->name = strdup(cu->name);
    if (u->name == NULL) {
        snprintf(err, errlen, "AMQP: out of memory");
        return GT_ENOMEM;
    }
    u->hashing = cu->hashing;
    u->loopback_only = in_list(&cfg->loopback_users, cu->name);
    if (cu->password_hash != NULL && strcmp(cu->password_hash, CFG_SECRET_MASK) == 0) {
        /* A printed config loaded back: the hash is gone.  A random
         * digest that no password makes. */
        GT_LOG(WARN, "amqp", "user '%s': password_hash is masked (%s, a printed config): "
               "this user cannot log in", cu->name, CFG_SECRET_MASK);
        if (RAND_bytes(u->salt, GW_SALT_LEN) != 1 || RAND_bytes(u->digest, GW_DIGEST_MAX) != 1) {
            snprintf(err, errlen, "AMQP: no random bytes for user '%s'", cu->name);
            return GT_EIO;
        }
        return GT_OK;
    }
    if (cu->password_hash != NULL) {
        uint8_t buf[GW_SALT_LEN + GW_DIGEST_MAX + 4];
        int n = EVP_DecodeBlock(buf, (const unsigned char *)cu->password_hash,
                                (int)strlen(cu->password_hash));
        size_t want = GW_SALT_LEN + digest_len(cu->hashing);

        /* EVP_DecodeBlock counts the padding's zero bytes: the config
         * check made sure the length fits. */
        if (n < (int)want) {
            snprintf(err, errlen, "AMQP: user '%s': bad password_hash", cu->name);
            return GT_EINVAL;
        }
        memcpy(u->salt, buf, GW_SALT_LEN);
        memcpy(u->digest, buf + GW_SALT_LEN, digest_len(cu->hashing));
        return GT_OK;
    }
    GT_LOG(WARN, "amqp", "user '%s' has a plain-text password in the config; use "
                         "password_hash (gantry --hash-password) outside development",
           cu->name);
    if (RAND_bytes(u->salt, GW_SALT_LEN) != 1 ||
        !salted_digest(u->hashing, u->salt, cu->password != NULL ? cu->password : "",
                       cu->password != NULL ? strlen(cu->password) : 0, u->digest)) {
        snprintf(err, errlen, "AMQP: cannot hash the password of user '%s'", cu->name);
        return GT_EIO;
    }
    return GT_OK;
}

static gt_err_t grant_init(gw_auth_t *a, gw_grant_t *g, const cfg_amqp_perm_t *p, char *err,
                           size_t errlen)
{
    const char *res[3] = {p->configure, p->write, p->read};

    for (size_t i = 0; i < a->n_users && g->user == NULL; i++)
        if (strcmp(a->users[i].name, p->user) == 0)
            g->user = &a->users[i];
    for (size_t i = 0; i < a->n_vhosts && g->vhost == NULL; i++)
        if (strcmp(a->vhosts[i], p->vhost) == 0)
            g->vhost = a->vhosts[i];
    if (g->user == NULL || g->vhost == NULL) {
        snprintf(err, errlen, "AMQP: permissions for unknown user '%s' or vhost '%s'", p->user,
                 p->vhost);
        return GT_EINVAL;
    }
    for (int i = 0; i < 3; i++) {
        /* RabbitMQ: "" is "^$", which matches no resource name. */
        if (regcomp(&g->re[i], res[i][0] != '\0' ? res[i] : "^$", REG_EXTENDED | REG_NOSUB) != 0) {
            snprintf(err, errlen, "AMQP: permissions of '%s' on '%s': bad regex '%s'", p->user,
                     p->vhost, res[i]);
            return GT_EINVAL;
        }
        g->n_re++;
    }
    return GT_OK;
}

/* A user of auth.users (RocketMQ's ACL users): the access key logs in
 * with the secret key as its password, hashed here like a plain one. */
static gt_err_t auth_user_init(gw_user_t *u, const cfg_auth_user_t *au, const cfg_amqp_t *cfg,
                               char *err, size_t errlen)
{
    if ((u->name = strdup(au->access_key)) == NULL) {
        snprintf(err, errlen, "AMQP: out of memory");
        return GT_ENOMEM;
    }
    u->hashing = CFG_HASH_SHA256;
    u->loopback_only = in_list(&cfg->loopback_users, au->access_key);
    if (RAND_bytes(u->salt, GW_SALT_LEN) != 1 ||
        !salted_digest(CFG_HASH_SHA256, u->salt, au->secret_key, strlen(au->secret_key),
                       u->digest)) {
        snprintf(err, errlen, "AMQP: cannot hash the secret key of user '%s'", au->access_key);
        return GT_EIO;
    }
    return GT_OK;
}

/* An admin of auth.users gets ".*" on each vhost it has no grant for. */
static gt_err_t admin_grants(gw_auth_t *a, const cfg_auth_t *auth, size_t first_auth_user,
                             char *err, size_t errlen)
{
    for (size_t i = 0; auth != NULL && i < auth->users.n; i++) {
        const gw_user_t *u = &a->users[first_auth_user + i];

        if (!auth->users.v[i].admin)
            continue;
        for (size_t v = 0; v < a->n_vhosts; v++) {
            bool has = false;
            gw_grant_t *g;

            for (size_t j = 0; j < a->n_grants && !has; j++)
                has = a->grants[j].user == u && a->grants[j].vhost == a->vhosts[v];
            if (has)
                continue;
            g = &a->grants[a->n_grants++];
            g->user = u;
            g->vhost = a->vhosts[v];
            for (int r = 0; r < 3; r++) {
                if (regcomp(&g->re[r], ".*", REG_EXTENDED | REG_NOSUB) != 0) {
                    snprintf(err, errlen, "AMQP: cannot compile a permission");
                    return GT_ENOMEM;
                }
                g->n_re++;
            }
        }
    }
    return GT_OK;
}

gt_err_t gw_auth_new(const cfg_amqp_t *cfg, const cfg_auth_t *auth, gw_auth_t **out, char *err,
                     size_t errlen)
{
    static const cfg_amqp_user_t guest = {.name = "guest", .password = "guest"};
    static const cfg_amqp_perm_t guest_all = {
        .user = "guest", .vhost = "/", .configure = ".*", .write = ".*", .read = ".*"};
    size_t n_auth = auth != NULL ? auth->users.n : 0, n_admin = 0;
    bool no_users = cfg->users.n == 0 && n_auth == 0;
    const cfg_amqp_user_t *users = cfg->users.n > 0 ? cfg->users.v : &guest;
    size_t n_users = cfg->users.n > 0 ? cfg->users.n : no_users ? 1 : 0;
    const cfg_amqp_perm_t *perms = cfg->permissions.v;
    size_t n_perms = cfg->permissions.n;
    gw_auth_t *a = calloc(1, sizeof(*a));
    gt_err_t rc = GT_ENOMEM;

    *out = NULL;
    for (size_t i = 0; i < n_auth; i++)
        n_admin += auth->users.v[i].admin;
    if (no_users && n_perms == 0 && in_list(&cfg->vhosts, "/")) {
        perms = &guest_all;
        n_perms = 1;
    }
    if (a == NULL || (a->users = calloc(n_users + n_auth + 1, sizeof(*a->users))) == NULL ||
        (cfg->vhosts.n > 0 && (a->vhosts = calloc(cfg->vhosts.n, sizeof(char *))) == NULL) ||
        (n_perms + n_admin * cfg->vhosts.n > 0 &&
         (a->grants = calloc(n_perms + n_admin * cfg->vhosts.n, sizeof(*a->grants))) == NULL))
        goto fail_oom;
    for (size_t i = 0; i < n_users; i++) {
        /* The default guest is hashed like a configured plain password,
         * without the warning: it is RabbitMQ's default too. */
        if (users == &guest) {
            gw_user_t *u = &a->users[0];
            if ((u->name = strdup("guest")) == NULL)
                goto fail_oom;
            a->n_users = 1;
            u->loopback_only = in_list(&cfg->loopback_users, "guest");
            if (RAND_bytes(u->salt, GW_SALT_LEN) != 1 ||
                !salted_digest(CFG_HASH_SHA256, u->salt, "guest", 5, u->digest)) {
                snprintf(err, errlen, "AMQP: cannot hash the default password");
                rc = GT_EIO;
                goto fail;
            }
            continue;
        }
        a->n_users = i + 1;
        if ((rc = user_init(&a->users[i], &users[i], cfg, err, errlen)) != GT_OK)
            goto fail;
    }
    for (size_t i = 0; i < n_auth; i++) {
        a->n_users = n_users + i + 1;
        if ((rc = auth_user_init(&a->users[n_users + i], &auth->users.v[i], cfg, err, errlen)) !=
            GT_OK)
            goto fail;
    }
    for (size_t i = 0; i < cfg->vhosts.n; i++) {
        if ((a->vhosts[i] = strdup(cfg->vhosts.v[i])) == NULL)
            goto fail_oom;
        a->n_vhosts = i + 1;
    }
    for (size_t i = 0; i < n_perms; i++) {
        a->n_grants = i + 1;
        if ((rc = grant_init(a, &a->grants[i], &perms[i], err, errlen)) != GT_OK)
            goto fail;
    }
    if ((rc = admin_grants(a, auth, n_users, err, errlen)) != GT_OK)
        goto fail;
    *out = a;
    return GT_OK;
fail_oom:
    snprintf(err, errlen, "AMQP: out of memory");
    rc = GT_ENOMEM;
fail:
    gw_auth_free(a);
    return rc;
}

void gw_auth_free(gw_auth_t *a)
{
    if (a == NULL)
        return;
    for (size_t i = 0; i < a->n_grants; i++)
        for (int j = 0; j < a->grants[i].n_re; j++)
            regfree(&a->grants[i].re[j]);
    free(a->grants);
    for (size_t i = 0; i < a->n_users; i++)
        free(a->users[i].name);
    free(a->users);
    for (size_t i = 0; i < a->n_vhosts; i++)
        free(a->vhosts[i]);
    free(a->vhosts);
    free(a);
}

const gw_user_t *gw_auth_login(const gw_auth_t *a, gw_str_t user, gw_str_t password,
                               bool loopback, char *why, size_t whylen)
{
    static const uint8_t dummy_salt[GW_SALT_LEN];
    const gw_user_t *u = NULL;
    uint8_t digest[GW_DIGEST_MAX];
    int ulen = (int)(user.len > 64 ? 64 : user.len);
    bool ok;

    for (size_t i = 0; i < a->n_users && u == NULL; i++)
        if (str_is(user, a->users[i].name))
            u = &a->users[i];
    if (password.len == 0) {
        snprintf(why, whylen, "user '%.*s' attempted to log in with a blank password, which "
                 "is prohibited", ulen, user.ptr);
        return NULL;
    }
    /* An unknown user costs a digest too, so that timing does not tell
     * which names exist. */
    ok = salted_digest(u != NULL ? u->hashing : CFG_HASH_SHA256,
                       u != NULL ? u->salt : dummy_salt, password.ptr, password.len, digest) &&
         u != NULL && CRYPTO_memcmp(digest, u->digest, digest_len(u->hashing)) == 0;
    if (!ok) {
        snprintf(why, whylen, "user '%.*s' - invalid credentials", ulen, user.ptr);
        return NULL;
    }
    if (u->loopback_only && !loopback) {
        snprintf(why, whylen, "user '%s' can only connect via localhost", u->name);
        return NULL;
    }
    return u;
}

const char *gw_user_name(const gw_user_t *u)
{
    return u->name;
}

bool gw_auth_has_user(const gw_auth_t *a, const char *name)
{
    for (size_t i = 0; i < a->n_users; i++)
        if (strcmp(a->users[i].name, name) == 0)
            return true;
    return false;
}

const gw_grant_t *gw_auth_open(const gw_auth_t *a, const gw_user_t *u, gw_str_t vhost,
                               char *err, size_t errlen)
{
    bool exists = false;

    for (size_t i = 0; i < a->n_vhosts && !exists; i++)
        exists = str_is(vhost, a->vhosts[i]);
    if (!exists) {
        snprintf(err, errlen, "vhost %.*s not found", (int)vhost.len, vhost.ptr);
        return NULL;
    }
    for (size_t i = 0; i < a->n_grants; i++)
        if (a->grants[i].user == u && str_is(vhost, a->grants[i].vhost))
            return &a->grants[i];
    snprintf(err, errlen, "access to vhost '%.*s' refused for user '%s'", (int)vhost.len,
             vhost.ptr, u->name);
    return NULL;
}

const char *gw_grant_vhost(const gw_grant_t *g)
{
    return g->vhost;
}

static bool perm_match(const regex_t *re, const char *name, size_t len)
{
    char stack[256], *buf = stack;
    regmatch_t m = {.rm_so = 0, .rm_eo = (regoff_t)len};
    bool hit;

    if (len >= sizeof(stack) && (buf = malloc(len + 1)) == NULL)
        return false;
    memcpy(buf, name, len);
    buf[len] = '\0';
    /* REG_STARTEND: the name's length, not its first NUL, ends it. */
    hit = regexec(re, buf, 1, &m, REG_STARTEND) == 0;
    if (buf != stack)
        free(buf);
    return hit;
}

bool gw_auth_check(const gw_grant_t *g, unsigned perm, gw_res_kind_t kind, const char *name,
                   size_t len, char *err, size_t errlen)
{
    const char *kname = kind == GW_RES_EXCHANGE ? "exchange" : "queue";

    if (kind == GW_RES_EXCHANGE && len == 0) {
        name = "amq.default";
        len = 11;
    }
    for (int i = 0; g != NULL && i < 3; i++) {
        if (!(perm & (1u << i)))
            continue;
        if (!perm_match(&g->re[i], name, len))
            goto refused;
    }
    if (g != NULL)
        return true;
refused:
    if (err != NULL)
        snprintf(err, errlen, "access to %s '%.*s' in vhost '%s' refused for user '%s'", kname,
                 (int)len, name, g != NULL ? g->vhost : "", g != NULL ? g->user->name : "");
    return false;
}

bool gw_auth_check_fault(const gw_grant_t *g, unsigned perm, gw_res_kind_t kind,
                         const char *name, size_t len, uint16_t class_id, uint16_t method_id,
                         gw_fault_t *f)
{
    char text[GW_REPLY_TEXT_MAX + 1];

    if (gw_auth_check(g, perm, kind, name, len, text, sizeof(text)))
        return true;
    gw_fault_set(f, GW_ACCESS_REFUSED, class_id, method_id, "%s", text);
    return false;
}

gt_err_t gw_auth_hash_password(const char *password, char *out, size_t outlen)
{
    uint8_t raw[GW_SALT_LEN + 32];

    if (outlen < 49)
        return GT_ERANGE;
    if (RAND_bytes(raw, GW_SALT_LEN) != 1 ||
        !salted_digest(CFG_HASH_SHA256, raw, password, strlen(password), raw + GW_SALT_LEN))
        return GT_EIO;
    EVP_EncodeBlock((unsigned char *)out, raw, sizeof(raw));
    return GT_OK;
}
