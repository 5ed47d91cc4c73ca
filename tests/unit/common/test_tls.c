/* Unit tests for common/gt_tls: reading and checking certificate files.
 * Keys and self-signed certificates are made here with OpenSSL into a
 * temp dir (nothing is committed). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "gt_tls.h"

static char dir[] = "/tmp/gt-tls-unit-XXXXXX";

static const char *path(const char *name)
{
    static char buf[4][256];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof(buf[i]), "%s/%s", dir, name);
    return buf[i];
}

static void write_text(const char *name, const char *text)
{
    FILE *f = fopen(path(name), "w");
    fputs(text, f);
    fclose(f);
}

/* A P-256 key and a self-signed certificate for it: <name>.key/.pem. */
static void make_pair(const char *name, long serial)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    char f[64];
    FILE *out;

    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, k);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)name, -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_sign(x, k, EVP_sha256());
    snprintf(f, sizeof(f), "%s.key", name);
    out = fopen(path(f), "w");
    PEM_write_PrivateKey(out, k, NULL, NULL, 0, NULL, NULL);
    fclose(out);
    snprintf(f, sizeof(f), "%s.pem", name);
    out = fopen(path(f), "w");
    PEM_write_X509(out, x);
    fclose(out);
    X509_free(x);
    EVP_PKEY_free(k);
}

static gt_err_t load(const char *cert, const char *key, const char *ca, gt_tls_pem_t *p,
                     char *err, size_t errlen)
{
    gt_tls_files_t f = {path(cert), path(key), ca != NULL ? path(ca) : NULL,
                        ca != NULL ? GT_TLS_CLIENT_REQUIRE : GT_TLS_CLIENT_NONE};
    return gt_tls_pem_load(&f, p, err, errlen);
}

static void test_load(void)
{
    gt_tls_pem_t p;
    char err[512], fp[65];
    void *ctx;

    CU_ASSERT_EQUAL_FATAL(load("a.pem", "a.key", NULL, &p, err, sizeof(err)), GT_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.cert, "BEGIN CERTIFICATE"));
    CU_ASSERT_PTR_NULL(p.ca);
    gt_tls_fingerprint(p.cert, fp);
    CU_ASSERT_EQUAL(strlen(fp), 64);
    CU_ASSERT_EQUAL(strspn(fp, "0123456789abcdef"), 64);
    ctx = gt_tls_ctx_new(&p, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL(ctx);
    SSL_CTX_free(ctx);
    gt_tls_pem_free(&p);
    gt_tls_pem_free(&p); /* idempotent */

    /* with a CA for client certificates */
    CU_ASSERT_EQUAL_FATAL(load("a.pem", "a.key", "b.pem", &p, err, sizeof(err)), GT_OK);
    CU_ASSERT_PTR_NOT_NULL(p.ca);
    ctx = gt_tls_ctx_new(&p, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL(ctx);
    if (ctx != NULL)
        CU_ASSERT_EQUAL(SSL_CTX_get_verify_mode(ctx),
                        SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
    SSL_CTX_free(ctx);
    gt_tls_pem_free(&p);
}

static void test_bad(void)
{
    gt_tls_pem_t p;
    char err[512];

    CU_ASSERT_EQUAL(load("missing.pem", "a.key", NULL, &p, err, sizeof(err)), GT_EIO);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "missing.pem"));
    CU_ASSERT_EQUAL(load("a.pem", "b.key", NULL, &p, err, sizeof(err)), GT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "does not match"));
    CU_ASSERT_EQUAL(load("junk.txt", "a.key", NULL, &p, err, sizeof(err)), GT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "no PEM certificate"));
    CU_ASSERT_EQUAL(load("a.pem", "junk.txt", NULL, &p, err, sizeof(err)), GT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "no PEM private key"));
    CU_ASSERT_EQUAL(load("a.pem", "a.key", "junk.txt", &p, err, sizeof(err)), GT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "CA file"));
    /* a key where the certificate should be, and a truncated certificate */
    CU_ASSERT_EQUAL(load("a.key", "a.key", NULL, &p, err, sizeof(err)), GT_EINVAL);
    CU_ASSERT_EQUAL(load("cut.pem", "a.key", NULL, &p, err, sizeof(err)), GT_EINVAL);
    CU_ASSERT_PTR_NULL(p.cert); /* nothing kept on failure */
}

static int setup(void)
{
    FILE *in, *out;
    char buf[4096];
    size_t n;

    if (mkdtemp(dir) == NULL)
        return 1;
    make_pair("a", 1);
    make_pair("b", 2);
    write_text("junk.txt", "not a certificate\n\x16\x03\x01 garbage\n");
    in = fopen(path("a.pem"), "r");
    n = fread(buf, 1, sizeof(buf), in);
    fclose(in);
    out = fopen(path("cut.pem"), "w");
    fwrite(buf, 1, n / 2, out);
    fclose(out);
    return 0;
}

static int teardown(void)
{
    const char *names[] = {"a.pem", "a.key", "b.pem", "b.key", "junk.txt", "cut.pem"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        unlink(path(names[i]));
    rmdir(dir);
    return 0;
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("gt_tls", setup, teardown);
    CU_add_test(s, "good files", test_load);
    CU_add_test(s, "bad files", test_bad);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int failed = CU_get_number_of_failures() != 0 || CU_get_error() != 0;
    CU_cleanup_registry();
    return failed;
}
