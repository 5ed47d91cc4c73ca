/* px_admin_auth: who may use the admin API when auth.enabled is on (see
 * px_admin.h).  Secrets are kept only as HMAC-SHA1 digests under a fixed
 * key, so that every comparison is of 20 bytes, in constant time
 * (gt_hmac_equal), whatever the length of what was sent; every token is
 * compared (no early exit).  Nothing here logs a secret. */
#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "gt_hmac.h"
#include "gt_log.h"
#include "px_admin.h"

struct px_admin_auth {
    /* users are replaced by px_admin_auth_update (write lock) while
     * checks read them (read lock) */
    pthread_rwlock_t lk;
    size_t ntokens, nusers;
    uint8_t (*tokens)[GT_SHA1_LEN];
    struct px_admin_user {
        char *ak;
        uint8_t sk[GT_SHA1_LEN];
        bool admin;
    } *users;
};

static const char px_aa_key[] = "gantry admin API";

static bool px_aa_digest(const void *s, size_t n, uint8_t out[GT_SHA1_LEN])
{
    return gt_hmac_sha1(px_aa_key, sizeof(px_aa_key) - 1, s, n, out) == GT_OK;
}

gt_err_t px_admin_auth_new(const cfg_auth_t *cfg, px_admin_auth_t **out)
{
    px_admin_auth_t *a = calloc(1, sizeof(*a));

    *out = NULL;
    if (a == NULL)
        return GT_ENOMEM;
    pthread_rwlock_init(&a->lk, NULL);
    a->tokens = calloc(cfg->admin_tokens.n + 1, sizeof(*a->tokens));
    a->users = calloc(cfg->users.n + 1, sizeof(*a->users));
    if (a->tokens == NULL || a->users == NULL)
        goto nomem;
    for (size_t i = 0; i < cfg->admin_tokens.n; i++, a->ntokens++)
        if (!px_aa_digest(cfg->admin_tokens.v[i], strlen(cfg->admin_tokens.v[i]),
                          a->tokens[i]))
            goto nomem;
    for (size_t i = 0; i < cfg->users.n; i++, a->nusers++) {
        const cfg_auth_user_t *u = &cfg->users.v[i];

        if ((a->users[i].ak = strdup(u->access_key)) == NULL ||
            !px_aa_digest(u->secret_key, strlen(u->secret_key), a->users[i].sk))
            goto nomem;
        a->users[i].admin = u->admin;
    }
    *out = a;
    return GT_OK;
nomem:
    px_admin_auth_free(a);
    return GT_ENOMEM;
}

void px_admin_auth_free(px_admin_auth_t *a)
{
    if (a == NULL)
        return;
    for (size_t i = 0; i < a->nusers; i++)
        free(a->users[i].ak);
    free(a->users);
    free(a->tokens);
    pthread_rwlock_destroy(&a->lk);
    free(a);
}

gt_err_t px_admin_auth_update(px_admin_auth_t *a, const cfg_auth_t *cfg)
{
    px_admin_auth_t *n;
    struct px_admin_user *old;
    size_t nold;
    gt_err_t rc = px_admin_auth_new(cfg, &n);

    if (rc != GT_OK)
        return rc;
    pthread_rwlock_wrlock(&a->lk);
    old = a->users;
    nold = a->nusers;
    a->users = n->users;
    a->nusers = n->nusers;
    pthread_rwlock_unlock(&a->lk);
    n->users = old;
    n->nusers = nold;
    px_admin_auth_free(n);
    return GT_OK;
}

/* The credentials after "SCHEME " (case-insensitive), or NULL. */
static const char *px_aa_scheme(const char *h, const char *scheme)
{
    size_t n = strlen(scheme);

    if (strncasecmp(h, scheme, n) != 0 || h[n] != ' ')
        return NULL;
    h += n;
    while (*h == ' ')
        h++;
    return h;
}

static unsigned px_aa_bearer(const px_admin_auth_t *a, const char *tok)
{
    uint8_t d[GT_SHA1_LEN];
    bool ok = false;

    if (!px_aa_digest(tok, strlen(tok), d))
        return 401;
    for (size_t i = 0; i < a->ntokens; i++)
        ok |= gt_hmac_equal(d, a->tokens[i], GT_SHA1_LEN);
    return ok ? 0 : 401;
}

/* Basic base64(access_key:secret_key): 0 for an admin user, 403 for
 * another user, 401 otherwise. */
static unsigned px_aa_basic(const px_admin_auth_t *a, const char *b64)
{
    size_t n = strlen(b64), pad = 0;
    unsigned char *plain;
    unsigned rc = 401;
    uint8_t d[GT_SHA1_LEN];
    char *colon;
    int len;

    while (n > 0 && b64[n - 1] == ' ')
        n--;
    if (n == 0 || n % 4 != 0 || n > 1024)
        return 401;
    pad = (b64[n - 1] == '=') + (b64[n - 2] == '=');
    if ((plain = malloc(n / 4 * 3 + 1)) == NULL)
        return 401;
    len = EVP_DecodeBlock(plain, (const unsigned char *)b64, (int)n);
    if (len < 0 || (size_t)len < pad)
        goto out;
    len -= (int)pad;
    plain[len] = '\0';
    if (memchr(plain, '\0', (size_t)len) != NULL ||
        (colon = strchr((char *)plain, ':')) == NULL)
        goto out;
    *colon = '\0';
    if (!px_aa_digest(colon + 1, strlen(colon + 1), d))
        goto out;
    for (size_t i = 0; i < a->nusers; i++)
        if (strcmp(a->users[i].ak, (char *)plain) == 0) {
            if (gt_hmac_equal(d, a->users[i].sk, GT_SHA1_LEN))
                rc = a->users[i].admin ? 0 : 403;
            break;
        }
out:
    OPENSSL_cleanse(plain, n / 4 * 3 + 1);
    free(plain);
    return rc;
}

unsigned px_admin_auth_check(void *arg, const char *method, const char *url,
                             const char *authorization)
{
    const px_admin_auth_t *a = arg;
    const char *cred;
    unsigned rc = 401;

    if (authorization == NULL)
        rc = 401;
    else if ((cred = px_aa_scheme(authorization, "Bearer")) != NULL)
        rc = px_aa_bearer(a, cred);
    else if ((cred = px_aa_scheme(authorization, "Basic")) != NULL) {
        pthread_rwlock_rdlock((pthread_rwlock_t *)&a->lk);
        rc = px_aa_basic(a, cred);
        pthread_rwlock_unlock((pthread_rwlock_t *)&a->lk);
    }
    if (rc != 0)
        GT_LOG(DEBUG, "admin", "%s %s -> %u (%s)", method, url, rc,
               authorization == NULL ? "no credentials"
               : rc == 403           ? "not an admin user"
                                     : "bad credentials");
    return rc;
}
