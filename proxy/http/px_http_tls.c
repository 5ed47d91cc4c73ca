/* px_http_tls: the operator endpoint's certificate, for libmicrohttpd's
 * HTTPS (GnuTLS; Debian's libmicrohttpd is built with it).
 *
 * The files are read and checked by gt_tls_pem_load (the same checks as
 * the gRPC port and AMQPS: the chain parses, the key matches), then
 * imported into GnuTLS.  libmicrohttpd asks for the certificate at each
 * handshake through a GnuTLS retrieve callback
 * (MHD_OPTION_HTTPS_CERT_CALLBACK), so a reload only swaps the current
 * credentials: the next handshake takes them, open connections keep what
 * they had.  That callback has no user pointer, hence one process-wide
 * slot: one HTTPS endpoint per process (gantry and gantry-store each have
 * one).  Credentials a reload replaces are kept until the endpoint stops
 * (a session may still refer to them; a few KiB per reload). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>

#include "gt_log.h"
#include "px_http_tls.h"

/* Certificates of one chain at most. */
#define PX_TLS_CHAIN_MAX 16

typedef struct px_tls_cred {
    gnutls_pcert_st pcert[PX_TLS_CHAIN_MAX];
    unsigned npcert;
    gnutls_privkey_t key;
    struct px_tls_cred *older;
} px_tls_cred_t;

struct px_http_tls {
    gt_tls_files_t files; /* borrowed: they outlive the endpoint */
    px_tls_cred_t *cur;   /* under px_tls_mu; older ones chained */
};

static pthread_mutex_t px_tls_mu = PTHREAD_MUTEX_INITIALIZER;
static px_http_tls_t *px_tls_live; /* the process's HTTPS endpoint */

static void px_tls_cred_free(px_tls_cred_t *c)
{
    while (c != NULL) {
        px_tls_cred_t *next = c->older;

        for (unsigned i = 0; i < c->npcert; i++)
            gnutls_pcert_deinit(&c->pcert[i]);
        if (c->key != NULL)
            gnutls_privkey_deinit(c->key);
        free(c);
        c = next;
    }
}

/* Reads, checks and imports the files. */
static gt_err_t px_tls_cred_load(const gt_tls_files_t *f, px_tls_cred_t **out, char *err,
                                 size_t errlen)
{
    gt_tls_pem_t pem = {0};
    px_tls_cred_t *c;
    gnutls_datum_t d;
    gt_err_t rc;
    int g;
    char fp[65];

    *out = NULL;
    if ((rc = gt_tls_pem_load(f, &pem, err, errlen)) != GT_OK)
        return rc;
    if ((c = calloc(1, sizeof(*c))) == NULL) {
        gt_tls_pem_free(&pem);
        snprintf(err, errlen, "out of memory");
        return GT_ENOMEM;
    }
    c->npcert = PX_TLS_CHAIN_MAX;
    d.data = (unsigned char *)pem.cert;
    d.size = (unsigned)strlen(pem.cert);
    g = gnutls_pcert_list_import_x509_raw(c->pcert, &c->npcert, &d, GNUTLS_X509_FMT_PEM, 0);
    if (g < 0) {
        c->npcert = 0;
        snprintf(err, errlen, "GnuTLS cannot use the certificate chain %s: %s", f->cert_file,
                 gnutls_strerror(g));
        goto fail;
    }
    d.data = (unsigned char *)pem.key;
    d.size = (unsigned)strlen(pem.key);
    if ((g = gnutls_privkey_init(&c->key)) < 0 ||
        (g = gnutls_privkey_import_x509_raw(c->key, &d, GNUTLS_X509_FMT_PEM, NULL, 0)) < 0) {
        snprintf(err, errlen, "GnuTLS cannot use the private key %s: %s", f->key_file,
                 gnutls_strerror(g));
        goto fail;
    }
    gt_tls_fingerprint(pem.cert, fp);
    GT_LOG(INFO, "http", "HTTPS certificate %s (SHA-256 %s)", f->cert_file, fp);
    gt_tls_pem_free(&pem);
    *out = c;
    return GT_OK;
fail:
    gt_tls_pem_free(&pem);
    px_tls_cred_free(c);
    return GT_EINVAL;
}

/* GnuTLS asks for the server's certificate (each handshake). */
static int px_tls_retrieve(gnutls_session_t s, const gnutls_datum_t *req_ca_dn, int nreqs,
                           const gnutls_pk_algorithm_t *algos, int nalgos,
                           gnutls_pcert_st **pcert, unsigned int *npcert,
                           gnutls_privkey_t *key)
{
    int rc = -1;

    (void)s;
    (void)req_ca_dn;
    (void)nreqs;
    (void)algos;
    (void)nalgos;
    pthread_mutex_lock(&px_tls_mu);
    if (px_tls_live != NULL && px_tls_live->cur != NULL) {
        *pcert = px_tls_live->cur->pcert;
        *npcert = px_tls_live->cur->npcert;
        *key = px_tls_live->cur->key;
        rc = 0;
    }
    pthread_mutex_unlock(&px_tls_mu);
    return rc;
}

gnutls_certificate_retrieve_function2 *px_http_tls_callback(void)
{
    return px_tls_retrieve;
}

gt_err_t px_http_tls_new(const gt_tls_files_t *files, px_http_tls_t **out, char *err,
                         size_t errlen)
{
    px_http_tls_t *t;
    gt_err_t rc;

    *out = NULL;
    if (files->cert_file == NULL || files->cert_file[0] == '\0' || files->key_file == NULL ||
        files->key_file[0] == '\0') {
        snprintf(err, errlen, "HTTPS needs tls.cert_file and tls.key_file");
        return GT_EINVAL;
    }
    if ((t = calloc(1, sizeof(*t))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return GT_ENOMEM;
    }
    t->files = *files;
    if ((rc = px_tls_cred_load(files, &t->cur, err, errlen)) != GT_OK) {
        free(t);
        return rc;
    }
    pthread_mutex_lock(&px_tls_mu);
    if (px_tls_live == NULL) {
        px_tls_live = t;
    } else {
        rc = GT_EBUSY;
        snprintf(err, errlen, "only one HTTPS endpoint per process");
    }
    pthread_mutex_unlock(&px_tls_mu);
    if (rc != GT_OK) {
        px_tls_cred_free(t->cur);
        free(t);
        return rc;
    }
    *out = t;
    return GT_OK;
}

gt_err_t px_http_tls_cert_reload(px_http_tls_t *t, char *err, size_t errlen)
{
    px_tls_cred_t *c;
    gt_err_t rc = px_tls_cred_load(&t->files, &c, err, errlen);

    if (rc != GT_OK)
        return rc;
    pthread_mutex_lock(&px_tls_mu);
    c->older = t->cur;
    t->cur = c;
    pthread_mutex_unlock(&px_tls_mu);
    return GT_OK;
}

void px_http_tls_free(px_http_tls_t *t)
{
    if (t == NULL)
        return;
    pthread_mutex_lock(&px_tls_mu);
    if (px_tls_live == t)
        px_tls_live = NULL;
    pthread_mutex_unlock(&px_tls_mu);
    px_tls_cred_free(t->cur);
    free(t);
}
