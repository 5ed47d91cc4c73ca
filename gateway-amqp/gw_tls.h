/* AMQPS: the TLS context of the gateway's TLS listener (gw_tls.c).
 *
 * One SSL_CTX built from the tls section's files; connections accepted
 * after a reload (SIGHUP) get the new one, open ones keep theirs (an SSL
 * holds its own reference to the context it was made from). */
#ifndef GW_TLS_H
#define GW_TLS_H

#include <stddef.h>

#include "gt_err.h"
#include "gt_tls.h"

typedef struct gw_tls gw_tls_t;

/* Reads and checks the files (borrowed; the paths are copied).  GT_OK
 * with *out, or an error with a message in err. */
gt_err_t gw_tls_new(const gt_tls_files_t *files, gw_tls_t **out, char *err, size_t errlen);
/* A new server-side SSL (an SSL *, owned by the caller) from the current
 * context; NULL when out of memory.  Any thread. */
void *gw_tls_ssl_new(gw_tls_t *t);
/* Reads the files again; on failure the old context stays.  Any thread. */
gt_err_t gw_tls_reload(gw_tls_t *t, char *err, size_t errlen);
/* NULL-safe. */
void gw_tls_free(gw_tls_t *t);

#endif
