/* AMQPS TLS context (see gw_tls.h).  `mu` guards `ctx`, which a reload
 * replaces: SSL_new takes its own reference, so the old context lives on
 * in the connections made from it. */
#include "gw_tls.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ssl.h>

#include "gt_log.h"

struct gw_tls {
    char *cert_file, *key_file, *ca_file;
    gt_tls_client_auth_t client_auth;
    pthread_mutex_t mu;
    SSL_CTX *ctx;
};

gt_err_t gw_tls_reload(gw_tls_t *t, char *err, size_t errlen)
{
    gt_tls_files_t f = {t->cert_file, t->key_file, t->ca_file, t->client_auth};
    gt_tls_pem_t pem;
    SSL_CTX *ctx, *old;
    char fp[65];
    gt_err_t rc;

    rc = gt_tls_pem_load(&f, &pem, err, errlen);
    if (rc != GT_OK)
        return rc;
    ctx = gt_tls_ctx_new(&pem, err, errlen);
    gt_tls_fingerprint(pem.cert, fp);
    gt_tls_pem_free(&pem);
    if (ctx == NULL)
        return GT_EINVAL;
    pthread_mutex_lock(&t->mu);
    old = t->ctx;
    t->ctx = ctx;
    pthread_mutex_unlock(&t->mu);
    SSL_CTX_free(old);
    GT_LOG(INFO, "amqp", "AMQPS certificate %s (SHA-256 %s) for new connections",
           t->cert_file, fp);
    return GT_OK;
}

gt_err_t gw_tls_new(const gt_tls_files_t *files, gw_tls_t **out, char *err, size_t errlen)
{
    gw_tls_t *t = calloc(1, sizeof(*t));
    gt_err_t rc;

    *out = NULL;
    if (t == NULL)
        return GT_ENOMEM;
    pthread_mutex_init(&t->mu, NULL);
    t->cert_file = strdup(files->cert_file != NULL ? files->cert_file : "");
    t->key_file = strdup(files->key_file != NULL ? files->key_file : "");
    t->ca_file = strdup(files->ca_file != NULL ? files->ca_file : "");
    t->client_auth = files->client_auth;
    if (t->cert_file == NULL || t->key_file == NULL || t->ca_file == NULL) {
        gw_tls_free(t);
        snprintf(err, errlen, "out of memory");
        return GT_ENOMEM;
    }
    rc = gw_tls_reload(t, err, errlen);
    if (rc != GT_OK) {
        gw_tls_free(t);
        return rc;
    }
    *out = t;
    return GT_OK;
}

void *gw_tls_ssl_new(gw_tls_t *t)
{
    SSL *ssl;

    pthread_mutex_lock(&t->mu);
    ssl = SSL_new(t->ctx);
    pthread_mutex_unlock(&t->mu);
    return ssl;
}

void gw_tls_free(gw_tls_t *t)
{
    if (t == NULL)
        return;
    SSL_CTX_free(t->ctx);
    pthread_mutex_destroy(&t->mu);
    free(t->cert_file);
    free(t->key_file);
    free(t->ca_file);
    free(t);
}
