/* The operator HTTP endpoint on libmicrohttpd.  See px_http.h.
 *
 * We bind the socket ourselves (clear errors for a busy port, the same
 * HOST:PORT parser as the gRPC side) and hand it to the daemon.  Every
 * answer is a small copied buffer built in the access handler: nothing
 * outlives the request. */
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "gt_addr.h"
#include "gt_log.h"
#include "px_http.h"
#include "px_http_tls.h"

/* Memory per connection, which bounds a request head (MHD's default is
 * 32 KiB). */
#define PX_HTTP_CONN_MEMORY (16 * 1024)
#define PX_HTTP_THREADS 2
/* Threads that run /api/ routes and the AMQP hook, which may wait (for
 * the store, the gateway): their connections are suspended meanwhile, so
 * the daemon's threads keep answering probes and metrics. */
#define PX_HTTP_WORKERS 2
#define PX_HTTP_ARGS_MAX 32

typedef struct px_http_body px_http_body_t;

/* `ready` is written by the main thread and read by the HTTP threads; the
 * metrics hook is under `mu`; the rest is set before the daemon starts. */
struct px_http {
    struct MHD_Daemon *d;
    px_http_tls_t *tls; /* NULL: plaintext */
    int lfd;
    time_t started;
    atomic_bool ready;
    pthread_mutex_t mu;
    void (*metrics)(void *arg, FILE *out);
    void *metrics_arg;
    /* The admin hook is under amu (its calls may wait for the gateway). */
    pthread_mutex_t amu;
    px_http_admin_fn admin;
    void *admin_arg;
    /* Routes and the access check: read-locked around each call,
     * written by add / remove / set_api_auth. */
    pthread_rwlock_t rmu;
    px_http_api_auth_fn api_auth;
    void *api_auth_arg;
    struct px_http_route {
        char prefix[64];
        size_t plen, max_body;
        px_http_route_fn fn;
        void *arg;
    } routes[PX_HTTP_ROUTES_MAX];
    size_t nroutes;
    /* Requests waiting for a worker (FIFO), under jmu. */
    pthread_mutex_t jmu;
    pthread_cond_t jcv;
    px_http_body_t *jhead, *jtail;
    bool jstop;
    pthread_t workers[PX_HTTP_WORKERS];
    int nworkers;
};

/* An /api/ request: its body (up to the route's limit) while it is read;
 * then, from the daemon thread that suspends its connection to the
 * worker that answers and resumes it, a job (nothing else touches it
 * then); the answer is sent when the daemon calls back. */
struct px_http_body {
    char *buf;
    size_t len, cap, max;
    bool too_big;
    enum { PX_JOB_READING, PX_JOB_QUEUED, PX_JOB_DONE } state;
    struct MHD_Connection *conn;
    char *url, *method, *auth, *inm; /* inm: If-None-Match */
    char *args[PX_HTTP_ARGS_MAX][2]; /* query arguments, copied */
    size_t nargs;
    px_http_resp_t resp;
    px_http_body_t *jnext;
};

static enum MHD_Result px_http_send(struct MHD_Connection *conn,
                                    unsigned code, const char *ctype,
                                    const char *body, size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, (void *)body, MHD_RESPMEM_MUST_COPY);
    enum MHD_Result rc;

    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    rc = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result px_http_text(struct MHD_Connection *conn,
                                    unsigned code, const char *body)
{
    return px_http_send(conn, code, "text/plain", body, strlen(body));
}

static enum MHD_Result px_http_metrics(px_http_t *h,
                                       struct MHD_Connection *conn)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    enum MHD_Result rc;

    if (out == NULL)
        return px_http_text(conn, 500, "out of memory\n");
    fprintf(out,
            "# HELP gantry_up 1 while the process serves.\n"
            "# TYPE gantry_up gauge\ngantry_up 1\n"
            "# HELP gantry_start_time_seconds Start time, unix seconds.\n"
            "# TYPE gantry_start_time_seconds gauge\n"
            "gantry_start_time_seconds %lld\n",
            (long long)h->started);
    pthread_mutex_lock(&h->mu);
    if (h->metrics != NULL)
        h->metrics(h->metrics_arg, out);
    pthread_mutex_unlock(&h->mu);
    if (fclose(out) != 0) {
        free(buf);
        return px_http_text(conn, 500, "out of memory\n");
    }
    rc = px_http_send(conn, 200, "text/plain; version=0.0.4", buf, len);
    free(buf);
    return rc;
}

/* The route for url (rmu held), or NULL. */
static const struct px_http_route *px_http_route_find(const px_http_t *h,
                                                     const char *url)
{
    const struct px_http_route *best = NULL;

    for (size_t i = 0; i < h->nroutes; i++)
        if (strncmp(url, h->routes[i].prefix, h->routes[i].plen) == 0 &&
            (best == NULL || h->routes[i].plen > best->plen))
            best = &h->routes[i];
    return best;
}

/* Whether a route takes url (outside /api/: the dashboard). */
static bool px_http_routed(px_http_t *h, const char *url)
{
    bool found;

    pthread_rwlock_rdlock(&h->rmu);
    found = px_http_route_find(h, url) != NULL;
    pthread_rwlock_unlock(&h->rmu);
    return found;
}

static enum MHD_Result px_http_json_error(struct MHD_Connection *conn,
                                          unsigned code, const char *msg)
{
    char buf[256];
    int n = snprintf(buf, sizeof(buf), "{\"error\":\"%s\"}\n", msg);

    return px_http_send(conn, code, "application/json", buf, (size_t)n);
}

const char *px_http_req_arg(const px_http_req_t *req, const char *key)
{
    const px_http_body_t *b = req->conn_;

    for (size_t i = 0; i < b->nargs; i++)
        if (strcmp(b->args[i][0], key) == 0)
            return b->args[i][1];
    return NULL;
}

static enum MHD_Result px_http_arg_copy(void *cls, enum MHD_ValueKind kind,
                                        const char *key, const char *value)
{
    px_http_body_t *b = cls;

    (void)kind;
    if (b->nargs == PX_HTTP_ARGS_MAX)
        return MHD_NO;
    b->args[b->nargs][0] = strdup(key);
    b->args[b->nargs][1] = strdup(value != NULL ? value : "");
    if (b->args[b->nargs][0] == NULL || b->args[b->nargs][1] == NULL) {
        free(b->args[b->nargs][0]);
        free(b->args[b->nargs][1]);
        return MHD_NO;
    }
    b->nargs++;
    return MHD_YES;
}

const char *px_http_req_header(const px_http_req_t *req, const char *name)
{
    const px_http_body_t *b = req->conn_;

    if (strcasecmp(name, MHD_HTTP_HEADER_AUTHORIZATION) == 0)
        return b->auth;
    if (strcasecmp(name, MHD_HTTP_HEADER_IF_NONE_MATCH) == 0)
        return b->inm;
    return NULL;
}

/* Sends a route's answer with its extra headers. */
static enum MHD_Result px_http_send_resp(struct MHD_Connection *conn,
                                         const px_http_resp_t *resp)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        resp->len, resp->body != NULL ? (void *)resp->body : (void *)"",
        resp->body_static ? MHD_RESPMEM_PERSISTENT : MHD_RESPMEM_MUST_COPY);
    enum MHD_Result rc;

    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            resp->ctype != NULL ? resp->ctype : "application/json");
    for (size_t i = 0; resp->headers != NULL && resp->headers[i] != NULL; i += 2)
        MHD_add_response_header(r, resp->headers[i], resp->headers[i + 1]);
    rc = MHD_queue_response(conn, resp->code, r);
    MHD_destroy_response(r);
    return rc;
}

/* Runs a job's route (or the AMQP hook) on a worker. */
static void px_http_run(px_http_t *h, px_http_body_t *b)
{
    const struct px_http_route *r;
    px_http_resp_t *resp = &b->resp;
    static const char *const hdr_401[] = {"WWW-Authenticate", "Bearer realm=\"gantry\"",
                                          NULL};
    unsigned denied;

    pthread_rwlock_rdlock(&h->rmu);
    denied = h->api_auth != NULL && strncmp(b->url, "/api/", 5) == 0
                 ? h->api_auth(h->api_auth_arg, b->method, b->url, b->auth)
                 : 0;
    if (denied != 0) {
        pthread_rwlock_unlock(&h->rmu);
        resp->code = denied;
        resp->body = strdup(denied == 403 ? "{\"error\":\"forbidden: not an admin user\"}\n"
                                          : "{\"error\":\"unauthorized\"}\n");
        resp->len = resp->body != NULL ? strlen(resp->body) : 0;
        resp->headers = denied == 401 ? hdr_401 : NULL;
        return;
    }
    r = px_http_route_find(h, b->url);
    if (r != NULL) {
        px_http_req_t req = {
            .method = b->method, .url = b->url,
            .body = b->buf != NULL ? b->buf : "", .body_len = b->len,
            .auth = b->auth, .conn_ = b,
        };
        resp->code = 500;
        r->fn(r->arg, &req, resp);
    }
    pthread_rwlock_unlock(&h->rmu);
    if (r != NULL)
        return;
    if (strncmp(b->url, "/api/v1/amqp/", 13) == 0) {
        char text[512];

        resp->code = 404;
        snprintf(text, sizeof(text), "not found\n");
        pthread_mutex_lock(&h->amu);
        if (h->admin != NULL)
            resp->code = h->admin(h->admin_arg, b->method, b->url, text, sizeof(text));
        pthread_mutex_unlock(&h->amu);
        resp->body = strdup(text);
        resp->len = resp->body != NULL ? strlen(resp->body) : 0;
        resp->ctype = "text/plain";
        return;
    }
    resp->code = 404;
    resp->body = strdup("{\"error\":\"no such API path\"}\n");
    resp->len = resp->body != NULL ? strlen(resp->body) : 0;
}

static void *px_http_worker(void *arg)
{
    px_http_t *h = arg;

    for (;;) {
        px_http_body_t *b;

        pthread_mutex_lock(&h->jmu);
        while (h->jhead == NULL && !h->jstop)
            pthread_cond_wait(&h->jcv, &h->jmu);
        if ((b = h->jhead) == NULL) { /* stopping, nothing left */
            pthread_mutex_unlock(&h->jmu);
            return NULL;
        }
        if ((h->jhead = b->jnext) == NULL)
            h->jtail = NULL;
        pthread_mutex_unlock(&h->jmu);
        px_http_run(h, b);
        b->state = PX_JOB_DONE;
        /* b is the daemon's again from here */
        MHD_resume_connection(b->conn);
    }
}

/* The request is in: hands it to a worker (its connection suspended
 * until the answer is ready), or answers it when the worker is done. */
static enum MHD_Result px_http_dispatch(px_http_t *h, struct MHD_Connection *conn,
                                        const char *url, const char *method,
                                        px_http_body_t *b)
{
    const char *auth, *inm;
    bool queued = false;

    if (b->too_big)
        return px_http_json_error(conn, 413, "request body too large");
    if (b->state == PX_JOB_DONE)
        return px_http_send_resp(conn, &b->resp);
    if (b->state != PX_JOB_READING)
        return MHD_NO;
    auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                       MHD_HTTP_HEADER_AUTHORIZATION);
    b->conn = conn;
    b->url = strdup(url);
    b->method = strdup(method);
    b->auth = auth != NULL ? strdup(auth) : NULL;
    inm = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                      MHD_HTTP_HEADER_IF_NONE_MATCH);
    b->inm = inm != NULL ? strdup(inm) : NULL;
    if (b->url == NULL || b->method == NULL || (auth != NULL && b->auth == NULL) ||
        (inm != NULL && b->inm == NULL) ||
        MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, px_http_arg_copy, b) < 0)
        return px_http_json_error(conn, 500, "out of memory");
    if (b->nargs == PX_HTTP_ARGS_MAX)
        return px_http_json_error(conn, 400, "too many query arguments");
    pthread_mutex_lock(&h->jmu);
    if (!h->jstop) {
        b->state = PX_JOB_QUEUED;
        b->jnext = NULL;
        if (h->jtail != NULL)
            h->jtail->jnext = b;
        else
            h->jhead = b;
        h->jtail = b;
        /* suspended before a worker can resume it: under jmu */
        MHD_suspend_connection(conn);
        pthread_cond_signal(&h->jcv);
        queued = true;
    }
    pthread_mutex_unlock(&h->jmu);
    return queued ? MHD_YES : px_http_json_error(conn, 503, "stopping");
}

/* /api/...: reads the body (bounded by the route's limit), then
 * dispatches. */
static enum MHD_Result px_http_api(px_http_t *h, struct MHD_Connection *conn,
                                   const char *url, const char *method,
                                   const char *upload_data,
                                   size_t *upload_data_size, void **state)
{
    px_http_body_t *b = *state;

    if (b == NULL) {
        const struct px_http_route *r;
        const char *cl;

        if ((b = calloc(1, sizeof(*b))) == NULL)
            return MHD_NO;
        *state = b;
        b->max = 64 * 1024; /* the AMQP hook ignores bodies: read a little */
        pthread_rwlock_rdlock(&h->rmu);
        if ((r = px_http_route_find(h, url)) != NULL)
            b->max = r->max_body;
        pthread_rwlock_unlock(&h->rmu);
        cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                         MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl != NULL && strtoull(cl, NULL, 10) > b->max) {
            b->too_big = true; /* answered before the body is read */
            return px_http_json_error(conn, 413, "request body too large");
        }
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;

        *upload_data_size = 0;
        if (b->too_big || b->len + n > b->max) {
            b->too_big = true; /* read and dropped; 413 at the end */
            return MHD_YES;
        }
        if (b->len + n + 1 > b->cap) {
            size_t cap = b->cap ? b->cap : 1024;
            char *nb;

            while (cap < b->len + n + 1)
                cap *= 2;
            if ((nb = realloc(b->buf, cap)) == NULL)
                return MHD_NO;
            b->buf = nb;
            b->cap = cap;
        }
        memcpy(b->buf + b->len, upload_data, n);
        b->len += n;
        b->buf[b->len] = '\0';
        return MHD_YES;
    }
    return px_http_dispatch(h, conn, url, method, b);
}

static void px_http_completed(void *cls, struct MHD_Connection *conn,
                              void **state, enum MHD_RequestTerminationCode why)
{
    px_http_body_t *b = *state;

    (void)cls;
    (void)conn;
    (void)why;
    if (b != NULL) {
        free(b->buf);
        free(b->url);
        free(b->method);
        free(b->auth);
        free(b->inm);
        for (size_t i = 0; i < b->nargs; i++) {
            free(b->args[i][0]);
            free(b->args[i][1]);
        }
        if (!b->resp.body_static)
            free(b->resp.body);
        free(b);
        *state = NULL;
    }
}

static enum MHD_Result px_http_handle(void *cls, struct MHD_Connection *conn,
                                      const char *url, const char *method,
                                      const char *version,
                                      const char *upload_data,
                                      size_t *upload_data_size, void **state)
{
    px_http_t *h = cls;

    (void)version;
    if (strncmp(url, "/api/", 5) == 0 || px_http_routed(h, url))
        return px_http_api(h, conn, url, method, upload_data, upload_data_size,
                           state);
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
        strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return px_http_text(conn, 405, "method not allowed\n");
    if (strcmp(url, "/healthz") == 0)
        return px_http_text(conn, 200, "ok\n");
    if (strcmp(url, "/readyz") == 0)
        return atomic_load(&h->ready) ? px_http_text(conn, 200, "ready\n")
                                      : px_http_text(conn, 503, "starting\n");
    if (strcmp(url, "/metrics") == 0)
        return px_http_metrics(h, conn);
    return px_http_text(conn, 404, "not found\n");
}

static void px_http_log(void *cls, const char *fmt, va_list ap)
{
    char msg[256];
    size_t n;

    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    GT_LOG(DEBUG, "http", "%s", msg);
}

/* The URL is handed over as sent (percent escapes kept), so that a path
 * segment may hold an escaped '/' (the vhost "/" is %2F). */
static size_t px_http_no_unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls;
    (void)conn;
    return strlen(s);
}

static int px_http_bind(const char *addr, char *err, size_t errlen)
{
    const char *why;
    struct addrinfo hints, *res = NULL;
    gt_hostport_t hp;
    char port[8];
    int fd, one = 1;

    if (gt_hostport_parse(addr, 0, &hp, &why) != GT_OK) {
        snprintf(err, errlen, "HTTP listen address '%s' is not HOST:PORT (%s)",
                 addr, why);
        return -1;
    }
    snprintf(port, sizeof(port), "%u", (unsigned)hp.port);
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    if (getaddrinfo(hp.host, port, &hints, &res) != 0 || res == NULL) {
        snprintf(err, errlen, "cannot resolve HTTP listen address '%s'", addr);
        return -1;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 ||
            listen(fd, 1024) != 0) {
            snprintf(err, errlen, "cannot listen on %s (HTTP): %s%s", addr,
                     strerror(errno),
                     errno == EADDRINUSE
                         ? " (is another gantry or program using this port?)"
                         : "");
            close(fd);
            fd = -1;
        }
    } else {
        snprintf(err, errlen, "socket: %s", strerror(errno));
    }
    freeaddrinfo(res);
    return fd;
}

gt_err_t px_http_start(const char *addr, px_http_t **out, char *err,
                       size_t errlen)
{
    return px_http_start_tls(addr, NULL, out, err, errlen);
}

/* GnuTLS priorities: its defaults less the protocol versions before 1.2
 * (as the gRPC port and AMQPS, which OpenSSL limits to 1.2 and up). */
#define PX_HTTP_TLS_PRIORITIES "NORMAL:-VERS-TLS1.1:-VERS-TLS1.0:-VERS-SSL3.0"

gt_err_t px_http_start_tls(const char *addr, const gt_tls_files_t *tls, px_http_t **out,
                           char *err, size_t errlen)
{
    px_http_t *h = calloc(1, sizeof(*h));
    unsigned int flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG | MHD_USE_ITC |
                         MHD_ALLOW_SUSPEND_RESUME;
    gt_err_t rc;

    if (h == NULL)
        return GT_ENOMEM;
    if (tls != NULL) {
        if (MHD_is_feature_supported(MHD_FEATURE_HTTPS_CERT_CALLBACK) != MHD_YES) {
            snprintf(err, errlen, "this libmicrohttpd has no HTTPS (GnuTLS) support");
            free(h);
            return GT_EINVAL;
        }
        if ((rc = px_http_tls_new(tls, &h->tls, err, errlen)) != GT_OK) {
            free(h);
            return rc;
        }
        flags |= MHD_USE_TLS;
    }
    h->lfd = px_http_bind(addr, err, errlen);
    if (h->lfd < 0) {
        px_http_tls_free(h->tls);
        free(h);
        return GT_EBUSY;
    }
    h->started = time(NULL);
    atomic_init(&h->ready, false);
    pthread_mutex_init(&h->mu, NULL);
    pthread_mutex_init(&h->amu, NULL);
    pthread_rwlock_init(&h->rmu, NULL);
    pthread_mutex_init(&h->jmu, NULL);
    pthread_cond_init(&h->jcv, NULL);
    /* The TLS options come last: for a plaintext endpoint the list ends
     * before them (the arguments after MHD_OPTION_END are not read). */
    h->d = MHD_start_daemon(
        flags, 0,
        NULL, NULL, px_http_handle, h,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)h->lfd,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)PX_HTTP_THREADS,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)PX_HTTP_MAX_CONNECTIONS,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)PX_HTTP_IDLE_TIMEOUT_S,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)PX_HTTP_CONN_MEMORY,
        MHD_OPTION_EXTERNAL_LOGGER, px_http_log, NULL,
        MHD_OPTION_UNESCAPE_CALLBACK, px_http_no_unescape, NULL,
        MHD_OPTION_NOTIFY_COMPLETED, px_http_completed, NULL,
        h->tls != NULL ? MHD_OPTION_HTTPS_CERT_CALLBACK : MHD_OPTION_END,
        px_http_tls_callback(),
        MHD_OPTION_HTTPS_PRIORITIES, PX_HTTP_TLS_PRIORITIES,
        MHD_OPTION_END);
    if (h->d == NULL) {
        snprintf(err, errlen, "cannot start the HTTP server on %s", addr);
        close(h->lfd);
        px_http_tls_free(h->tls);
        pthread_mutex_destroy(&h->mu);
        pthread_mutex_destroy(&h->amu);
        pthread_rwlock_destroy(&h->rmu);
        pthread_mutex_destroy(&h->jmu);
        pthread_cond_destroy(&h->jcv);
        free(h);
        return GT_EIO;
    }
    while (h->nworkers < PX_HTTP_WORKERS &&
           pthread_create(&h->workers[h->nworkers], NULL, px_http_worker, h) == 0)
        h->nworkers++;
    if (h->nworkers == 0) {
        snprintf(err, errlen, "cannot start the HTTP worker threads");
        px_http_stop(h);
        return GT_EIO;
    }
    *out = h;
    return GT_OK;
}

void px_http_set_ready(px_http_t *h, bool ready)
{
    atomic_store(&h->ready, ready);
}

void px_http_set_metrics(px_http_t *h, void (*fn)(void *arg, FILE *out),
                         void *arg)
{
    pthread_mutex_lock(&h->mu);
    h->metrics = fn;
    h->metrics_arg = arg;
    pthread_mutex_unlock(&h->mu);
}

void px_http_set_admin(px_http_t *h, px_http_admin_fn fn, void *arg)
{
    pthread_mutex_lock(&h->amu);
    h->admin = fn;
    h->admin_arg = arg;
    pthread_mutex_unlock(&h->amu);
}

void px_http_set_api_auth(px_http_t *h, px_http_api_auth_fn fn, void *arg)
{
    pthread_rwlock_wrlock(&h->rmu);
    h->api_auth = fn;
    h->api_auth_arg = arg;
    pthread_rwlock_unlock(&h->rmu);
}

gt_err_t px_http_route_add(px_http_t *h, const char *prefix, size_t max_body,
                           px_http_route_fn fn, void *arg)
{
    gt_err_t rc = GT_OK;

    if (strlen(prefix) >= sizeof(h->routes[0].prefix))
        return GT_EINVAL;
    pthread_rwlock_wrlock(&h->rmu);
    for (size_t i = 0; i < h->nroutes; i++)
        if (strcmp(h->routes[i].prefix, prefix) == 0)
            rc = GT_EEXIST;
    if (rc == GT_OK && h->nroutes == PX_HTTP_ROUTES_MAX)
        rc = GT_ENOSPC;
    if (rc == GT_OK) {
        struct px_http_route *r = &h->routes[h->nroutes++];

        snprintf(r->prefix, sizeof(r->prefix), "%s", prefix);
        r->plen = strlen(prefix);
        r->max_body = max_body;
        r->fn = fn;
        r->arg = arg;
    }
    pthread_rwlock_unlock(&h->rmu);
    return rc;
}

void px_http_route_remove(px_http_t *h, void *arg)
{
    size_t j = 0;

    pthread_rwlock_wrlock(&h->rmu);
    for (size_t i = 0; i < h->nroutes; i++)
        if (h->routes[i].arg != arg)
            h->routes[j++] = h->routes[i];
    h->nroutes = j;
    pthread_rwlock_unlock(&h->rmu);
}

void px_http_stop(px_http_t *h)
{
    if (h == NULL)
        return;
    /* The workers answer what is queued (resuming those connections),
     * then stop; requests complete from now on get 503. */
    pthread_mutex_lock(&h->jmu);
    h->jstop = true;
    pthread_cond_broadcast(&h->jcv);
    pthread_mutex_unlock(&h->jmu);
    for (int i = 0; i < h->nworkers; i++)
        pthread_join(h->workers[i], NULL);
    /* Quiescing hands the listen socket back, so it is closed once. */
    MHD_socket fd = MHD_quiesce_daemon(h->d);
    MHD_stop_daemon(h->d);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    pthread_mutex_destroy(&h->mu);
    pthread_mutex_destroy(&h->amu);
    pthread_rwlock_destroy(&h->rmu);
    pthread_mutex_destroy(&h->jmu);
    pthread_cond_destroy(&h->jcv);
    px_http_tls_free(h->tls);
    free(h);
}

gt_err_t px_http_tls_reload(px_http_t *h, char *err, size_t errlen)
{
    return h->tls != NULL ? px_http_tls_cert_reload(h->tls, err, errlen) : GT_OK;
}
