/* Certificate files for the TLS listeners (see gt_tls.h). */
#include "gt_tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

/* A PEM file larger than this is not a certificate file. */
#define GT_TLS_FILE_MAX (1 << 20)

gt_tls_client_auth_t gt_tls_client_auth_parse(const char *s)
{
    if (s != NULL && strcmp(s, "optional") == 0)
        return GT_TLS_CLIENT_OPTIONAL;
    if (s != NULL && strcmp(s, "require") == 0)
        return GT_TLS_CLIENT_REQUIRE;
    return GT_TLS_CLIENT_NONE;
}

static gt_err_t tls_read(const char *path, const char *what, char **out, char *err,
                         size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0;

    *out = NULL;
    if (f == NULL) {
        snprintf(err, errlen, "cannot read the TLS %s %s: %s", what, path, strerror(errno));
        return GT_EIO;
    }
    buf = malloc(GT_TLS_FILE_MAX + 1);
    if (buf == NULL) {
        fclose(f);
        snprintf(err, errlen, "out of memory reading %s", path);
        return GT_ENOMEM;
    }
    n = fread(buf, 1, GT_TLS_FILE_MAX + 1, f);
    fclose(f);
    if (n > GT_TLS_FILE_MAX) {
        free(buf);
        snprintf(err, errlen, "the TLS %s %s is larger than %d bytes", what, path,
                 GT_TLS_FILE_MAX);
        return GT_EINVAL;
    }
    buf[n] = '\0';
    *out = buf;
    return GT_OK;
}

/* OpenSSL's most recent error as text (and clears the queue). */
static const char *tls_ossl_err(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();

    if (e == 0)
        snprintf(buf, len, "no PEM data");
    else
        ERR_error_string_n(e, buf, len);
    ERR_clear_error();
    return buf;
}

/* The certificates in `pem`, in order; NULL if there are none. */
static STACK_OF(X509) *tls_certs(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    STACK_OF(X509) *sk = sk_X509_new_null();
    X509 *x;

    if (b == NULL || sk == NULL)
        goto fail;
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        if (!sk_X509_push(sk, x)) {
            X509_free(x);
            goto fail;
        }
    }
    ERR_clear_error(); /* the end of the data reads as an error */
    BIO_free(b);
    if (sk_X509_num(sk) == 0) {
        sk_X509_free(sk);
        return NULL;
    }
    return sk;
fail:
    BIO_free(b);
    sk_X509_pop_free(sk, X509_free);
    return NULL;
}

static EVP_PKEY *tls_key(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *k = b != NULL ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;

    BIO_free(b);
    return k;
}

void gt_tls_pem_free(gt_tls_pem_t *p)
{
    if (p == NULL)
        return;
    free(p->cert);
    if (p->key != NULL) {
        OPENSSL_cleanse(p->key, strlen(p->key));
        free(p->key);
    }
    free(p->ca);
    memset(p, 0, sizeof(*p));
}

gt_err_t gt_tls_pem_load(const gt_tls_files_t *f, gt_tls_pem_t *out, char *err,
                         size_t errlen)
{
    gt_tls_pem_t p = {.client_auth = f->client_auth};
    STACK_OF(X509) *chain = NULL, *roots = NULL;
    EVP_PKEY *key = NULL;
    char why[256];
    gt_err_t rc;

    memset(out, 0, sizeof(*out));
    if ((rc = tls_read(f->cert_file, "certificate file", &p.cert, err, errlen)) != GT_OK ||
        (rc = tls_read(f->key_file, "key file", &p.key, err, errlen)) != GT_OK)
        goto out;
    if (f->ca_file != NULL && f->ca_file[0] != '\0' &&
        (rc = tls_read(f->ca_file, "CA file", &p.ca, err, errlen)) != GT_OK)
        goto out;
    rc = GT_EINVAL;
    if ((chain = tls_certs(p.cert)) == NULL) {
        snprintf(err, errlen, "the TLS certificate file %s holds no PEM certificate (%s)",
                 f->cert_file, tls_ossl_err(why, sizeof(why)));
        goto out;
    }
    if ((key = tls_key(p.key)) == NULL) {
        snprintf(err, errlen, "the TLS key file %s holds no PEM private key (%s)",
                 f->key_file, tls_ossl_err(why, sizeof(why)));
        goto out;
    }
    if (X509_check_private_key(sk_X509_value(chain, 0), key) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "the TLS key file %s does not match the certificate in %s",
                 f->key_file, f->cert_file);
        goto out;
    }
    if (p.ca != NULL && (roots = tls_certs(p.ca)) == NULL) {
        snprintf(err, errlen, "the TLS CA file %s holds no PEM certificate (%s)", f->ca_file,
                 tls_ossl_err(why, sizeof(why)));
        goto out;
    }
    rc = GT_OK;
    *out = p;
    memset(&p, 0, sizeof(p));
out:
    sk_X509_pop_free(chain, X509_free);
    sk_X509_pop_free(roots, X509_free);
    EVP_PKEY_free(key);
    gt_tls_pem_free(&p);
    return rc;
}

void *gt_tls_ctx_new(const gt_tls_pem_t *pem, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    STACK_OF(X509) *chain = tls_certs(pem->cert), *roots = NULL;
    EVP_PKEY *key = tls_key(pem->key);
    static const unsigned char sid[] = "gantry";
    char why[256];
    int mode = SSL_VERIFY_NONE;

    if (ctx == NULL || chain == NULL || key == NULL) {
        snprintf(err, errlen, "cannot set up TLS: %s", tls_ossl_err(why, sizeof(why)));
        goto fail;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate(ctx, sk_X509_value(chain, 0)) != 1 ||
        SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1)
        goto ossl;
    for (int i = 1; i < sk_X509_num(chain); i++)
        if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(chain, i)) != 1)
            goto ossl;
    if (pem->ca != NULL && pem->client_auth != GT_TLS_CLIENT_NONE) {
        X509_STORE *st = SSL_CTX_get_cert_store(ctx);
        STACK_OF(X509_NAME) *names = sk_X509_NAME_new_null();

        roots = tls_certs(pem->ca);
        if (roots == NULL || names == NULL) {
            sk_X509_NAME_free(names);
            goto ossl;
        }
        for (int i = 0; i < sk_X509_num(roots); i++) {
            X509_NAME *nm = X509_NAME_dup(X509_get_subject_name(sk_X509_value(roots, i)));
            if (X509_STORE_add_cert(st, sk_X509_value(roots, i)) != 1 || nm == NULL ||
                !sk_X509_NAME_push(names, nm)) {
                X509_NAME_free(nm);
                sk_X509_NAME_pop_free(names, X509_NAME_free);
                goto ossl;
            }
        }
        SSL_CTX_set_client_CA_list(ctx, names); /* takes names */
        mode = SSL_VERIFY_PEER;
        if (pem->client_auth == GT_TLS_CLIENT_REQUIRE)
            mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    }
    SSL_CTX_set_verify(ctx, mode, NULL);
    SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid) - 1);
    sk_X509_pop_free(chain, X509_free);
    sk_X509_pop_free(roots, X509_free);
    EVP_PKEY_free(key);
    return ctx;
ossl:
    snprintf(err, errlen, "cannot set up TLS: %s", tls_ossl_err(why, sizeof(why)));
fail:
    SSL_CTX_free(ctx);
    sk_X509_pop_free(chain, X509_free);
    sk_X509_pop_free(roots, X509_free);
    EVP_PKEY_free(key);
    return NULL;
}

void gt_tls_fingerprint(const char *pem, char out[65])
{
    STACK_OF(X509) *sk = tls_certs(pem);
    unsigned char md[32];
    unsigned int n = 0;

    strcpy(out, "?");
    if (sk != NULL && X509_digest(sk_X509_value(sk, 0), EVP_sha256(), md, &n) == 1 &&
        n == 32)
        for (unsigned i = 0; i < 32; i++)
            snprintf(out + 2 * i, 3, "%02x", md[i]);
    sk_X509_pop_free(sk, X509_free);
}
