/* gt_tls: the server certificate files of Gantry's TLS listeners (the gRPC
 * port and AMQPS), read and checked with OpenSSL.
 *
 * gt_tls_pem_load() reads the PEM files and checks them the way a
 * handshake would use them (the chain parses, the key matches the
 * certificate, the CA file parses), so that a bad file is refused at start
 * or on reload instead of failing every handshake later.  The gRPC side
 * passes the checked text to the grpc core; the AMQPS side builds an
 * SSL_CTX from it (gt_tls_ctx_new).  Both re-read the files on SIGHUP and
 * keep the old certificate when the new files are bad. */
#ifndef GT_TLS_H
#define GT_TLS_H

#include <stddef.h>

#include "gt_err.h"

typedef enum gt_tls_client_auth {
    GT_TLS_CLIENT_NONE = 0, /* no client certificate asked for */
    GT_TLS_CLIENT_OPTIONAL, /* asked for; verified when one is sent */
    GT_TLS_CLIENT_REQUIRE,  /* a verified one is needed */
} gt_tls_client_auth_t;

typedef struct gt_tls_files {
    const char *cert_file; /* PEM chain, server certificate first */
    const char *key_file;  /* PEM private key */
    const char *ca_file;   /* PEM roots for client certificates; NULL/"" none */
    gt_tls_client_auth_t client_auth;
} gt_tls_files_t;

/* The files' text, NUL-terminated.  ca is NULL without a CA file. */
typedef struct gt_tls_pem {
    char *cert, *key, *ca;
    gt_tls_client_auth_t client_auth;
} gt_tls_pem_t;

/* Parses "none" | "optional" | "require" (the config's tls.client_auth). */
gt_tls_client_auth_t gt_tls_client_auth_parse(const char *s);

/* Reads and checks the files (borrowed).  GT_OK with *out filled (free
 * with gt_tls_pem_free); GT_EIO (cannot read) or GT_EINVAL (not valid PEM,
 * key does not match) with a message in err. */
gt_err_t gt_tls_pem_load(const gt_tls_files_t *f, gt_tls_pem_t *out, char *err,
                         size_t errlen);
/* NULL-safe; zeroes *p. */
void gt_tls_pem_free(gt_tls_pem_t *p);

/* A server SSL_CTX (TLS 1.2 and up) from checked text (borrowed):
 * returns an owned SSL_CTX * (as void *, so that this header needs no
 * OpenSSL include; free with SSL_CTX_free), or NULL with a message. */
void *gt_tls_ctx_new(const gt_tls_pem_t *pem, char *err, size_t errlen);

/* SHA-256 fingerprint of the first certificate in `pem` (borrowed) as 64
 * hex digits, for logs; "?" if it does not parse. */
void gt_tls_fingerprint(const char *pem, char out[65]);

#endif
