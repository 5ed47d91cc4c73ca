/* The web dashboard's files, from the table embed.cmake generates.  See
 * px_dashboard.h.  A path is looked up by exact name, so '..', '%2e' and
 * the like reach nothing: they are not in the table. */
#include <stdbool.h>
#include <string.h>

#include "px_dashboard.h"
#include "px_dashboard_int.h"

#define PX_DASH_PREFIX "/dashboard"

static const char *const px_dash_headers_redirect[] = {
    "Location", PX_DASH_PREFIX "/", "Cache-Control", "no-cache", NULL};
static const char *const px_dash_headers_error[] = {
    "Cache-Control", "no-cache", "X-Content-Type-Options", "nosniff", NULL};
static const char *const px_dash_headers_405[] = {
    "Allow", "GET, HEAD", "Cache-Control", "no-cache", NULL};

static void px_dash_text(px_http_resp_t *resp, unsigned code, const char *text,
                         const char *const *headers)
{
    resp->code = code;
    resp->body = (char *)text;
    resp->len = strlen(text);
    resp->body_static = true;
    resp->ctype = "text/plain; charset=utf-8";
    resp->headers = headers;
}

static const px_dashboard_file_t *px_dash_find(const char *path)
{
    if (strcmp(path, "/") == 0)
        path = "/index.html";
    for (size_t i = 0; i < px_dashboard_nfiles; i++)
        if (strcmp(px_dashboard_files[i].path, path) == 0)
            return &px_dashboard_files[i];
    return NULL;
}

/* Whether an If-None-Match value names etag (or is "*"). */
static bool px_dash_etag_matches(const char *inm, const char *etag)
{
    return inm != NULL && (strcmp(inm, "*") == 0 || strstr(inm, etag) != NULL);
}

static void px_dash_route(void *arg, const px_http_req_t *req,
                          px_http_resp_t *resp)
{
    const char *path = req->url + strlen(PX_DASH_PREFIX);
    const px_dashboard_file_t *f;

    (void)arg;
    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        px_dash_text(resp, 405, "method not allowed\n", px_dash_headers_405);
        return;
    }
    if (*path == '\0') {
        px_dash_text(resp, 301, "moved to " PX_DASH_PREFIX "/\n",
                     px_dash_headers_redirect);
        return;
    }
    if (*path != '/' || (f = px_dash_find(path)) == NULL) {
        px_dash_text(resp, 404, "not found\n", px_dash_headers_error);
        return;
    }
    resp->ctype = f->ctype;
    resp->body_static = true;
    resp->headers = f->headers;
    if (px_dash_etag_matches(px_http_req_header(req, "If-None-Match"), f->etag)) {
        resp->code = 304;
        resp->body = NULL;
        resp->len = 0;
    } else {
        resp->code = 200;
        resp->body = (char *)f->data;
        resp->len = f->len;
    }
}

gt_err_t px_dashboard_register(px_http_t *h)
{
    return px_http_route_add(h, PX_DASH_PREFIX, 0, px_dash_route,
                             (void *)px_dashboard_files);
}
