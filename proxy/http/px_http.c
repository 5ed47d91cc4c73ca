/* The operator HTTP endpoint: a poll loop on one thread.  See px_http.h. */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gt_addr.h"
#include "gt_log.h"
#include "px_http.h"

#define PX_HTTP_REQ_MAX 8192
#define PX_HTTP_READ_MS 2000

/* `ready` is written by the main thread and read by the HTTP thread; the
 * rest belongs to the HTTP thread once started. */
struct px_http {
    int lfd;
    int stop_pipe[2];
    pthread_t thread;
    atomic_bool ready;
    time_t started;
};

static void px_http_respond(int fd, int code, const char *reason,
                            const char *ctype, const char *body, bool head)
{
    char hdr[256];
    size_t blen = strlen(body);
    int n = snprintf(hdr, sizeof(hdr),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                     code, reason, ctype, blen);
    if (send(fd, hdr, (size_t)n, MSG_NOSIGNAL) < 0)
        return;
    if (!head && blen > 0)
        (void)send(fd, body, blen, MSG_NOSIGNAL);
}

/* Reads until the end of the request head, the size limit or the timeout.
 * Returns the bytes read, or -1. */
static ssize_t px_http_read_head(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};

    while (n + 1 < cap) {
        ssize_t r;
        if (poll(&p, 1, PX_HTTP_READ_MS) <= 0)
            return -1;
        r = recv(fd, buf + n, cap - 1 - n, 0);
        if (r <= 0)
            return -1;
        n += (size_t)r;
        buf[n] = '\0';
        if (strstr(buf, "\r\n\r\n") != NULL || strstr(buf, "\n\n") != NULL)
            return (ssize_t)n;
    }
    return (ssize_t)n;
}

static void px_http_serve(px_http_t *h, int fd)
{
    char buf[PX_HTTP_REQ_MAX];
    char method[16], path[1024], body[512];
    ssize_t n = px_http_read_head(fd, buf, sizeof(buf));
    bool head;

    if (n <= 0)
        return;
    if (sscanf(buf, "%15s %1023s HTTP/1.%*c", method, path) != 2) {
        px_http_respond(fd, 400, "Bad Request", "text/plain", "bad request\n",
                        false);
        return;
    }
    head = strcmp(method, "HEAD") == 0;
    if (!head && strcmp(method, "GET") != 0) {
        px_http_respond(fd, 405, "Method Not Allowed", "text/plain",
                        "method not allowed\n", false);
        return;
    }
    if (strcmp(path, "/healthz") == 0) {
        px_http_respond(fd, 200, "OK", "text/plain", "ok\n", head);
    } else if (strcmp(path, "/readyz") == 0) {
        if (atomic_load(&h->ready))
            px_http_respond(fd, 200, "OK", "text/plain", "ready\n", head);
        else
            px_http_respond(fd, 503, "Service Unavailable", "text/plain",
                            "starting\n", head);
    } else if (strcmp(path, "/metrics") == 0) {
        snprintf(body, sizeof(body),
                 "# HELP gantry_up 1 while the process serves.\n"
                 "# TYPE gantry_up gauge\ngantry_up 1\n"
                 "# HELP gantry_start_time_seconds Start time, unix seconds.\n"
                 "# TYPE gantry_start_time_seconds gauge\n"
                 "gantry_start_time_seconds %lld\n",
                 (long long)h->started);
        px_http_respond(fd, 200, "OK", "text/plain; version=0.0.4", body, head);
    } else {
        px_http_respond(fd, 404, "Not Found", "text/plain", "not found\n", head);
    }
}

static void *px_http_main(void *arg)
{
    px_http_t *h = arg;
    struct pollfd p[2] = {{.fd = h->lfd, .events = POLLIN},
                          {.fd = h->stop_pipe[0], .events = POLLIN}};

    for (;;) {
        int fd;
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[1].revents)
            break;
        if (!(p[0].revents & POLLIN))
            continue;
        fd = accept(h->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        px_http_serve(h, fd);
        close(fd);
    }
    return NULL;
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
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 ||
            listen(fd, 64) != 0) {
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
    px_http_t *h = calloc(1, sizeof(*h));

    if (h == NULL)
        return GT_ENOMEM;
    h->lfd = px_http_bind(addr, err, errlen);
    if (h->lfd < 0) {
        free(h);
        return GT_EBUSY;
    }
    if (pipe(h->stop_pipe) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        close(h->lfd);
        free(h);
        return GT_EIO;
    }
    h->started = time(NULL);
    atomic_init(&h->ready, false);
    if (pthread_create(&h->thread, NULL, px_http_main, h) != 0) {
        snprintf(err, errlen, "cannot start the HTTP thread");
        close(h->lfd);
        close(h->stop_pipe[0]);
        close(h->stop_pipe[1]);
        free(h);
        return GT_EIO;
    }
    *out = h;
    return GT_OK;
}

void px_http_set_ready(px_http_t *h, bool ready)
{
    atomic_store(&h->ready, ready);
}

void px_http_stop(px_http_t *h)
{
    if (h == NULL)
        return;
    if (write(h->stop_pipe[1], "x", 1) < 0)
        GT_LOG(WARN, "http", "cannot wake the HTTP thread");
    pthread_join(h->thread, NULL);
    close(h->lfd);
    close(h->stop_pipe[0]);
    close(h->stop_pipe[1]);
    free(h);
}
