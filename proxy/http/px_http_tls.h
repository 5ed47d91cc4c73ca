/* px_http_tls: the certificate of the operator endpoint's HTTPS (internal
 * to px_http; see px_http_tls.c). */
#ifndef PX_HTTP_TLS_H
#define PX_HTTP_TLS_H

#include <stddef.h>

#include <gnutls/abstract.h>

#include "gt_err.h"
#include "gt_tls.h"

typedef struct px_http_tls px_http_tls_t;

/* Reads and checks the certificate and key (files borrowed, kept for
 * reloads: they must outlive the result) and makes them the process's
 * HTTPS certificate.  GT_OK; GT_EIO / GT_EINVAL (bad files), GT_EBUSY
 * (another HTTPS endpoint lives in this process), GT_ENOMEM, with a
 * message in err. */
gt_err_t px_http_tls_new(const gt_tls_files_t *files, px_http_tls_t **out, char *err,
                         size_t errlen);
/* Reads the files again; on success the next handshakes use them, else
 * the old certificate stays and err says why. */
gt_err_t px_http_tls_cert_reload(px_http_tls_t *t, char *err, size_t errlen);
/* After the daemon has stopped.  NULL-safe. */
void px_http_tls_free(px_http_tls_t *t);
/* The GnuTLS retrieve function for MHD_OPTION_HTTPS_CERT_CALLBACK. */
gnutls_certificate_retrieve_function2 *px_http_tls_callback(void);

#endif
