/* px_dashboard: the table of the dashboard's files, generated at build
 * time from proxy/http/dashboard/ (embed.cmake). */
#ifndef PX_DASHBOARD_INT_H
#define PX_DASHBOARD_INT_H

#include <stddef.h>

typedef struct px_dashboard_file {
    const char *path;  /* "/index.html": under /dashboard */
    const char *ctype;
    const char *etag;  /* quoted, a hash of the content */
    const char *const *headers; /* PX_DASHBOARD_HEADERS(etag) */
    const unsigned char *data;
    size_t len;
} px_dashboard_file_t;

/* The headers of a file's answer (200 and 304): name, value pairs. */
#define PX_DASHBOARD_CSP                                                   \
    "default-src 'self'; img-src 'self' data:; style-src 'self'; "         \
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
#define PX_DASHBOARD_HEADERS(etag)                                         \
    "Cache-Control", "no-cache", "ETag", etag, "X-Content-Type-Options",   \
        "nosniff", "Content-Security-Policy", PX_DASHBOARD_CSP, NULL

extern const px_dashboard_file_t px_dashboard_files[];
extern const size_t px_dashboard_nfiles;

#endif
