/* TLS on the gRPC port: the core's TLS credentials with a reloadable
 * certificate, and the permissive mode's front (see px_rpc_tls.h).
 *
 * Why a relay for TLS connections and not our own TLS: the core does the
 * handshake (ALPN h2, client certificates, its auth context), so no second
 * TLS stack serves gRPC; the relay only copies ciphertext, through
 * libevent buffers, at the cost of one more copy each way for TLS clients
 * in permissive mode (plaintext ones are handed over and cost nothing;
 * enforcing mode has no relay at all).
 *
 * Threads: the front's event loop runs in one thread ("px-tls"); the
 * certificate fetcher runs on the core's threads at each handshake;
 * px_tls_reload on the caller's (the main thread on SIGHUP).  `mu` guards
 * the pending certificate, the peer map and `closed`; everything of the
 * event loop is its thread's alone. */
#include "px_rpc_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <grpc/grpc_posix.h>
#include <grpc/support/alloc.h>
#include <grpc/support/string_util.h>

#include "gt_addr.h"
#include "gt_log.h"

/* A connection that sends nothing this long is closed unsniffed (the
 * core's own handshake bound is 120 s; a gRPC client speaks at once). */
#define PX_TLS_SNIFF_MS 30000
/* Relay: bytes queued toward one side before the other is not read. */
#define PX_TLS_RELAY_MAX (256 * 1024)
#define PX_TLS_PEER_BUCKETS 1024

typedef struct px_peer {
    struct px_peer *next;
    char *name; /* the core's name: "fd:N" or "ipv4:127.0.0.1:P" */
    char *real; /* the client's, as the core writes them */
} px_peer_t;

typedef struct px_sniff px_sniff_t;
typedef struct px_relay px_relay_t;

struct px_tls {
    px_tls_mode_t mode;
    char *cert_file, *key_file, *ca_file;
    gt_tls_client_auth_t client_auth;

    pthread_mutex_t mu;
    gt_tls_pem_t *pending; /* read, not yet taken by the fetcher */
    bool closed;           /* the front hands nothing over any more */
    px_peer_t *peers[PX_TLS_PEER_BUCKETS];

    /* The front (permissive only); its loop thread's. */
    grpc_server *server;
    grpc_server_credentials *insecure;
    struct sockaddr_in tls_addr; /* the core's TLS listener */
    struct event_base *base;
    struct evconnlistener *lis;
    struct event *close_ev, *stop_ev;
    pthread_t thread;
    bool thread_started;
    bool close_done;
    pthread_cond_t cv;
    px_sniff_t *sniffs;
    px_relay_t *relays;
};

struct px_sniff {
    px_tls_t *t;
    px_sniff_t *prev, *next;
    int fd;
    struct event *ev;
    char peer[80];
};

/* One relayed TLS connection: the client's side and the core's. */
struct px_relay {
    px_tls_t *t;
    px_relay_t *prev, *next;
    struct bufferevent *side[2]; /* 0: client, 1: the core; NULL once closed */
    char name[48];               /* the core's name for it */
};

/* ---- peer map ------------------------------------------------------------ */

static unsigned px_peer_hash(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % PX_TLS_PEER_BUCKETS;
}

static void px_peer_set(px_tls_t *t, const char *name, const char *real)
{
    unsigned h = px_peer_hash(name);
    px_peer_t *p;

    pthread_mutex_lock(&t->mu);
    for (p = t->peers[h]; p != NULL && strcmp(p->name, name) != 0; p = p->next)
        ;
    if (p == NULL && (p = calloc(1, sizeof(*p))) != NULL) {
        p->name = strdup(name);
        p->next = t->peers[h];
        t->peers[h] = p;
    }
    if (p != NULL) {
        free(p->real);
        p->real = strdup(real);
    }
    pthread_mutex_unlock(&t->mu);
}

static void px_peer_del(px_tls_t *t, const char *name)
{
    unsigned h = px_peer_hash(name);

    pthread_mutex_lock(&t->mu);
    for (px_peer_t **pp = &t->peers[h]; *pp != NULL; pp = &(*pp)->next) {
        if (strcmp((*pp)->name, name) == 0) {
            px_peer_t *p = *pp;
            *pp = p->next;
            free(p->name);
            free(p->real);
            free(p);
            break;
        }
    }
    pthread_mutex_unlock(&t->mu);
}

char *px_tls_peer(px_tls_t *t, const char *grpc_peer)
{
    char *out = NULL;

    if (t == NULL || grpc_peer == NULL)
        return NULL;
    pthread_mutex_lock(&t->mu);
    for (px_peer_t *p = t->peers[px_peer_hash(grpc_peer)]; p != NULL; p = p->next) {
        if (strcmp(p->name, grpc_peer) == 0) {
            if (p->real != NULL)
                out = gpr_strdup(p->real);
            break;
        }
    }
    pthread_mutex_unlock(&t->mu);
    return out;
}

/* ---- certificates ---------------------------------------------------------- */

static grpc_ssl_certificate_config_reload_status px_tls_fetch(
    void *arg, grpc_ssl_server_certificate_config **config)
{
    px_tls_t *t = arg;
    gt_tls_pem_t *pem;
    grpc_ssl_pem_key_cert_pair pair;

    pthread_mutex_lock(&t->mu);
    pem = t->pending;
    t->pending = NULL;
    pthread_mutex_unlock(&t->mu);
    if (pem == NULL)
        return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
    pair.private_key = pem->key;
    pair.cert_chain = pem->cert;
    /* The core copies the text.  grpc 1.51 asserts that a fetched config
     * has root certificates even when no client certificate is asked for
     * (ssl_security_connector.cc); they only serve to verify client
     * certificates, so without a CA file the server's own chain stands in
     * (tls.client_auth needs a CA file: config check). */
    *config = grpc_ssl_server_certificate_config_create(
        pem->ca != NULL ? pem->ca : pem->cert, &pair, 1);
    gt_tls_pem_free(pem);
    free(pem);
    return *config != NULL ? GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW
                           : GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_FAIL;
}

gt_err_t px_tls_reload(px_tls_t *t, char *err, size_t errlen)
{
    gt_tls_files_t f = {t->cert_file, t->key_file, t->ca_file, t->client_auth};
    gt_tls_pem_t *pem = calloc(1, sizeof(*pem)), *old;
    char fp[65];
    gt_err_t rc;

    if (pem == NULL) {
        snprintf(err, errlen, "out of memory");
        return GT_ENOMEM;
    }
    rc = gt_tls_pem_load(&f, pem, err, errlen);
    if (rc != GT_OK) {
        free(pem);
        return rc;
    }
    gt_tls_fingerprint(pem->cert, fp);
    pthread_mutex_lock(&t->mu);
    old = t->pending;
    t->pending = pem;
    pthread_mutex_unlock(&t->mu);
    if (old != NULL) {
        gt_tls_pem_free(old);
        free(old);
    }
    GT_LOG(INFO, "rpc", "TLS certificate %s (SHA-256 %s) for new connections",
           t->cert_file, fp);
    return GT_OK;
}

gt_err_t px_tls_new(px_tls_mode_t mode, const gt_tls_files_t *files, px_tls_t **out,
                    char *err, size_t errlen)
{
    px_tls_t *t = calloc(1, sizeof(*t));
    gt_err_t rc;

    *out = NULL;
    if (t == NULL)
        return GT_ENOMEM;
    t->mode = mode;
    t->cert_file = strdup(files->cert_file != NULL ? files->cert_file : "");
    t->key_file = strdup(files->key_file != NULL ? files->key_file : "");
    t->ca_file = strdup(files->ca_file != NULL ? files->ca_file : "");
    t->client_auth = files->client_auth;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    if (t->cert_file == NULL || t->key_file == NULL || t->ca_file == NULL) {
        px_tls_free(t);
        return GT_ENOMEM;
    }
    rc = px_tls_reload(t, err, errlen);
    if (rc != GT_OK) {
        px_tls_free(t);
        return rc;
    }
    *out = t;
    return GT_OK;
}

grpc_server_credentials *px_tls_creds(px_tls_t *t)
{
    grpc_ssl_client_certificate_request_type req =
        t->client_auth == GT_TLS_CLIENT_REQUIRE
            ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
        : t->client_auth == GT_TLS_CLIENT_OPTIONAL
            ? GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY
            : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
    grpc_ssl_server_credentials_options *o =
        grpc_ssl_server_credentials_create_options_using_config_fetcher(req, px_tls_fetch,
                                                                        t);
    return o != NULL ? grpc_ssl_server_credentials_create_with_options(o) : NULL;
}

/* ---- relay ------------------------------------------------------------------ */

static void px_relay_free(px_relay_t *r)
{
    px_tls_t *t = r->t;

    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        t->relays = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    for (int i = 0; i < 2; i++)
        if (r->side[i] != NULL)
            bufferevent_free(r->side[i]);
    px_peer_del(t, r->name);
    free(r);
}

static int px_relay_side(px_relay_t *r, struct bufferevent *bev)
{
    return r->side[0] == bev ? 0 : 1;
}

static void px_relay_read_cb(struct bufferevent *bev, void *arg)
{
    px_relay_t *r = arg;
    int i = px_relay_side(r, bev);
    struct bufferevent *other = r->side[1 - i];

    if (other == NULL) { /* the other side is gone: drop what comes */
        evbuffer_drain(bufferevent_get_input(bev), (size_t)-1);
        return;
    }
    evbuffer_add_buffer(bufferevent_get_output(other), bufferevent_get_input(bev));
    if (evbuffer_get_length(bufferevent_get_output(other)) >= PX_TLS_RELAY_MAX) {
        /* The other side does not keep up: stop reading this one until
         * it has taken half (px_relay_write_cb). */
        bufferevent_disable(bev, EV_READ);
        bufferevent_setwatermark(other, EV_WRITE, PX_TLS_RELAY_MAX / 2, 0);
    }
}

static void px_relay_write_cb(struct bufferevent *bev, void *arg)
{
    px_relay_t *r = arg;
    int i = px_relay_side(r, bev);
    struct bufferevent *other = r->side[1 - i];

    if (other == NULL) {
        /* The other side closed and this one has been given everything. */
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
            px_relay_free(r);
        return;
    }
    bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
    bufferevent_enable(other, EV_READ);
}

static void px_relay_event_cb(struct bufferevent *bev, short what, void *arg)
{
    px_relay_t *r = arg;
    int i = px_relay_side(r, bev);
    struct bufferevent *other = r->side[1 - i];

    if (what & BEV_EVENT_CONNECTED)
        return;
    /* EOF or error on one side: what it sent is already queued toward the
     * other; close the other once that is written. */
    GT_LOG(TRACE, "rpc", "TLS relay %s: the %s closed%s", r->name,
           i == 0 ? "client" : "core's side", (what & BEV_EVENT_ERROR) ? " (error)" : "");
    bufferevent_free(bev);
    r->side[i] = NULL;
    if (other == NULL || evbuffer_get_length(bufferevent_get_output(other)) == 0) {
        px_relay_free(r);
        return;
    }
    bufferevent_disable(other, EV_READ);
    bufferevent_setwatermark(other, EV_WRITE, 0, 0);
}

/* A TLS connection: relay it to the core's TLS listener. */
static void px_relay_start(px_tls_t *t, int fd, const char *peer)
{
    px_relay_t *r = calloc(1, sizeof(*r));
    struct sockaddr_in local = {.sin_family = AF_INET};
    socklen_t sl = sizeof(local);
    int ufd = -1;

    if (r == NULL)
        goto fail;
    r->t = t;
    local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ufd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    /* Bind first, so that the core's name for the connection (its peer,
     * our local address) is known before the core can see it. */
    if (ufd < 0 || bind(ufd, (struct sockaddr *)&local, sizeof(local)) != 0 ||
        getsockname(ufd, (struct sockaddr *)&local, &sl) != 0)
        goto fail;
    {
        int one = 1;
        setsockopt(ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    snprintf(r->name, sizeof(r->name), "ipv4:127.0.0.1:%u", ntohs(local.sin_port));
    r->side[0] = bufferevent_socket_new(t->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (r->side[0] == NULL)
        goto fail;
    fd = -1;
    r->side[1] = bufferevent_socket_new(t->base, ufd, BEV_OPT_CLOSE_ON_FREE);
    if (r->side[1] == NULL)
        goto fail;
    ufd = -1;
    px_peer_set(t, r->name, peer);
    for (int i = 0; i < 2; i++) {
        bufferevent_setcb(r->side[i], px_relay_read_cb, px_relay_write_cb,
                          px_relay_event_cb, r);
        bufferevent_enable(r->side[i], EV_READ);
    }
    r->next = t->relays;
    if (t->relays != NULL)
        t->relays->prev = r;
    t->relays = r;
    if (bufferevent_socket_connect(r->side[1], (struct sockaddr *)&t->tls_addr,
                                   sizeof(t->tls_addr)) != 0) {
        GT_LOG(WARN, "rpc", "%s: cannot reach the TLS listener: %s", peer,
               strerror(errno));
        px_relay_free(r);
    }
    return;
fail:
    GT_LOG(WARN, "rpc", "%s: cannot relay a TLS connection: %s", peer, strerror(errno));
    if (r != NULL) {
        for (int i = 0; i < 2; i++)
            if (r->side[i] != NULL)
                bufferevent_free(r->side[i]);
        free(r);
    }
    if (ufd >= 0)
        close(ufd);
    if (fd >= 0)
        close(fd);
}

/* ---- front: accept and sniff ---------------------------------------------- */

static void px_sniff_free(px_sniff_t *s, bool close_fd)
{
    px_tls_t *t = s->t;

    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        t->sniffs = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    event_free(s->ev);
    if (close_fd)
        close(s->fd);
    free(s);
}

static void px_sniff_cb(evutil_socket_t fd, short what, void *arg)
{
    px_sniff_t *s = arg;
    px_tls_t *t = s->t;
    unsigned char b;
    ssize_t n;

    if (what & EV_TIMEOUT) {
        GT_LOG(DEBUG, "rpc", "%s: sent nothing in %d ms: closed", s->peer,
               PX_TLS_SNIFF_MS);
        px_sniff_free(s, true);
        return;
    }
    n = recv(fd, &b, 1, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return; /* the event stays pending (EV_PERSIST) */
    if (n <= 0) {
        px_sniff_free(s, true);
        return;
    }
    if (b == 0x16) { /* a TLS record of type handshake: a ClientHello */
        char peer[sizeof(s->peer)];
        memcpy(peer, s->peer, sizeof(peer));
        px_sniff_free(s, false);
        px_relay_start(t, fd, peer);
        return;
    }
    /* Plaintext (HTTP/2's preface, or anything the core will refuse). */
    {
        char name[32];
        snprintf(name, sizeof(name), "fd:%d", (int)fd);
        px_peer_set(t, name, s->peer);
    }
    pthread_mutex_lock(&t->mu);
    if (t->closed) {
        pthread_mutex_unlock(&t->mu);
        px_sniff_free(s, true);
        return;
    }
    px_sniff_free(s, false);
    /* The core owns the socket from here. */
    grpc_server_add_channel_from_fd(t->server, fd, t->insecure);
    pthread_mutex_unlock(&t->mu);
}

/* The core's way of writing an address ("ipv4:1.2.3.4:5", "ipv6:[::1]:5"). */
static void px_peer_format(const struct sockaddr *sa, char *out, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";

    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        snprintf(out, len, "ipv6:[%s]:%u", host, ntohs(a->sin6_port));
    } else if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        snprintf(out, len, "ipv4:%s:%u", host, ntohs(a->sin_port));
    } else {
        snprintf(out, len, "unknown");
    }
}

static void px_accept_cb(struct evconnlistener *lis, evutil_socket_t fd,
                         struct sockaddr *sa, int salen, void *arg)
{
    px_tls_t *t = arg;
    px_sniff_t *s = calloc(1, sizeof(*s));
    struct timeval tv = {PX_TLS_SNIFF_MS / 1000, (PX_TLS_SNIFF_MS % 1000) * 1000};
    int one = 1;

    (void)lis;
    (void)salen;
    if (s == NULL) {
        close(fd);
        return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    s->t = t;
    s->fd = fd;
    px_peer_format(sa, s->peer, sizeof(s->peer));
    s->ev = event_new(t->base, fd, EV_READ | EV_PERSIST, px_sniff_cb, s);
    if (s->ev == NULL || event_add(s->ev, &tv) != 0) {
        if (s->ev != NULL)
            event_free(s->ev);
        close(fd);
        free(s);
        return;
    }
    s->next = t->sniffs;
    if (t->sniffs != NULL)
        t->sniffs->prev = s;
    t->sniffs = s;
}

/* On the loop: stop accepting, close what was not sniffed yet. */
static void px_close_cb(evutil_socket_t fd, short what, void *arg)
{
    px_tls_t *t = arg;

    (void)fd;
    (void)what;
    if (t->lis != NULL) {
        evconnlistener_free(t->lis);
        t->lis = NULL;
    }
    while (t->sniffs != NULL)
        px_sniff_free(t->sniffs, true);
    pthread_mutex_lock(&t->mu);
    t->close_done = true;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static void px_stop_cb(evutil_socket_t fd, short what, void *arg)
{
    px_tls_t *t = arg;

    px_close_cb(fd, what, arg);
    while (t->relays != NULL)
        px_relay_free(t->relays);
    event_base_loopbreak(t->base);
}

static void *px_front_main(void *arg)
{
    px_tls_t *t = arg;

    pthread_setname_np(pthread_self(), "px-tls");
    event_base_loop(t->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

static pthread_once_t px_ev_once = PTHREAD_ONCE_INIT;
static int px_ev_rc = -1;

static void px_ev_init(void)
{
    px_ev_rc = evthread_use_pthreads();
}

gt_err_t px_tls_front_start(px_tls_t *t, grpc_server *server, const char *listen,
                            int tls_port, int *port, char *err, size_t errlen)
{
    gt_hostport_t hp;
    const char *why;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    char pstr[8];
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int e;

    if (gt_hostport_parse(listen, 0, &hp, &why) != GT_OK) {
        snprintf(err, errlen, "listen address '%s' is not HOST:PORT (%s)", listen, why);
        return GT_EINVAL;
    }
    pthread_once(&px_ev_once, px_ev_init);
    if (px_ev_rc != 0) {
        snprintf(err, errlen, "cannot enable libevent's thread support");
        return GT_EIO;
    }
    t->server = server;
    t->insecure = grpc_insecure_server_credentials_create();
    t->tls_addr.sin_family = AF_INET;
    t->tls_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    t->tls_addr.sin_port = htons((uint16_t)tls_port);
    if ((t->base = event_base_new()) == NULL ||
        (t->close_ev = event_new(t->base, -1, 0, px_close_cb, t)) == NULL ||
        (t->stop_ev = event_new(t->base, -1, 0, px_stop_cb, t)) == NULL) {
        snprintf(err, errlen, "cannot create the TLS front's event loop");
        return GT_EIO;
    }
    snprintf(pstr, sizeof(pstr), "%u", (unsigned)hp.port);
    if ((e = getaddrinfo(hp.host, pstr, &hints, &ai)) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", listen, gai_strerror(e));
        return GT_EINVAL;
    }
    t->lis = evconnlistener_new_bind(t->base, px_accept_cb, t,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                         LEV_OPT_CLOSE_ON_EXEC,
                                     1024, ai->ai_addr, (int)ai->ai_addrlen);
    freeaddrinfo(ai);
    if (t->lis == NULL) {
        int en = errno;
        snprintf(err, errlen, "cannot listen on %s: %s%s", listen, strerror(en),
                 en == EADDRINUSE ? " (is another gantry or program using this port?)"
                                  : "");
        return en == EADDRINUSE ? GT_EBUSY : GT_EIO;
    }
    if (getsockname(evconnlistener_get_fd(t->lis), (struct sockaddr *)&ss, &sl) == 0)
        *port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    return GT_OK;
}

gt_err_t px_tls_front_run(px_tls_t *t, char *err, size_t errlen)
{
    if (pthread_create(&t->thread, NULL, px_front_main, t) != 0) {
        snprintf(err, errlen, "cannot start the TLS front's thread");
        return GT_EIO;
    }
    t->thread_started = true;
    return GT_OK;
}

void px_tls_front_close(px_tls_t *t)
{
    if (t == NULL)
        return;
    pthread_mutex_lock(&t->mu);
    t->closed = true; /* after this, no hand-over starts */
    pthread_mutex_unlock(&t->mu);
    if (!t->thread_started)
        return;
    event_active(t->close_ev, 0, 0);
    pthread_mutex_lock(&t->mu);
    while (!t->close_done)
        pthread_cond_wait(&t->cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
    /* Released here, while the core is still initialised. */
    if (t->insecure != NULL) {
        grpc_server_credentials_release(t->insecure);
        t->insecure = NULL;
    }
}

void px_tls_free(px_tls_t *t)
{
    if (t == NULL)
        return;
    if (t->thread_started) {
        event_active(t->stop_ev, 0, 0);
        pthread_join(t->thread, NULL);
    } else {
        if (t->lis != NULL)
            evconnlistener_free(t->lis);
    }
    if (t->close_ev != NULL)
        event_free(t->close_ev);
    if (t->stop_ev != NULL)
        event_free(t->stop_ev);
    if (t->base != NULL)
        event_base_free(t->base);
    for (int i = 0; i < PX_TLS_PEER_BUCKETS; i++) {
        while (t->peers[i] != NULL) {
            px_peer_t *p = t->peers[i];
            t->peers[i] = p->next;
            free(p->name);
            free(p->real);
            free(p);
        }
    }
    if (t->pending != NULL) {
        gt_tls_pem_free(t->pending);
        free(t->pending);
    }
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t->cert_file);
    free(t->key_file);
    free(t->ca_file);
    free(t);
}
