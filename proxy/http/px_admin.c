/* The admin API: routes, the bounded store wait, JSON
 * helpers, and /api/v1/config.  See px_admin.h and docs/admin.md. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gt_log.h"
#include "px_admin_int.h"

/* ---- the waiter */

px_aw_t *px_aw_new(int pending, void *ctx)
{
    px_aw_t *w = calloc(1, sizeof(*w));

    if (w == NULL)
        return NULL;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->refs = 2;
    w->pending = pending;
    w->ctx = ctx;
    return w;
}

void px_aw_add(px_aw_t *w, int n)
{
    pthread_mutex_lock(&w->mu);
    w->pending += n;
    pthread_mutex_unlock(&w->mu);
}

static void px_aw_unref(px_aw_t *w)
{
    int left;

    pthread_mutex_lock(&w->mu);
    left = --w->refs;
    pthread_mutex_unlock(&w->mu);
    if (left == 0) {
        json_decref(w->out);
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
        free(w);
    }
}

void px_aw_done(px_aw_t *w, gt_err_t err)
{
    bool last;

    pthread_mutex_lock(&w->mu);
    if (err != GT_OK && w->err == GT_OK)
        w->err = err;
    last = --w->pending == 0;
    if (last)
        pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    if (last)
        px_aw_unref(w);
}

gt_err_t px_aw_wait(px_aw_t *w, int64_t deadline_ms)
{
    struct timespec ts = {.tv_sec = deadline_ms / 1000,
                          .tv_nsec = (deadline_ms % 1000) * 1000000};
    gt_err_t rc;

    pthread_mutex_lock(&w->mu);
    while (w->pending > 0)
        if (pthread_cond_timedwait(&w->cv, &w->mu, &ts) == ETIMEDOUT &&
            w->pending > 0)
            break;
    rc = w->pending > 0 ? GT_ETIMEDOUT : w->err;
    pthread_mutex_unlock(&w->mu);
    return rc;
}

void px_aw_put(px_aw_t *w)
{
    if (w != NULL)
        px_aw_unref(w);
}

int64_t px_admin_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- answers */

void px_admin_json(px_http_resp_t *r, unsigned code, json_t *j)
{
    char *s = j != NULL ? json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;

    json_decref(j);
    if (s == NULL) {
        px_admin_err(r, 500, "out of memory");
        return;
    }
    free(r->body);
    r->body = NULL;
    r->code = code;
    r->len = strlen(s);
    /* one line, ended by a newline */
    if ((r->body = malloc(r->len + 2)) == NULL) {
        r->body = s;
        return;
    }
    memcpy(r->body, s, r->len);
    r->body[r->len++] = '\n';
    r->body[r->len] = '\0';
    free(s);
}

void px_admin_err(px_http_resp_t *r, unsigned code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    json_t *j;
    char *s;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    free(r->body);
    r->body = NULL;
    r->len = 0;
    r->code = code;
    j = json_pack("{s:s}", "error", msg);
    s = j != NULL ? json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    json_decref(j);
    if (s == NULL) {
        /* messages are ours; a name in one may not be UTF-8 */
        s = strdup("{\"error\":\"(unprintable)\"}");
        if (s == NULL)
            return;
    }
    r->len = strlen(s);
    r->body = s;
}

unsigned px_admin_code(gt_err_t err)
{
    switch (err) {
    case GT_OK: return 200;
    case GT_EINVAL: return 400;
    case GT_ERANGE: return 400;
    case GT_ENOTFOUND: return 404;
    case GT_EEXIST: return 409;
    case GT_ETIMEDOUT: return 504;
    case GT_ESHUTDOWN: return 503;
    case GT_ENOSPC: return 507;
    case GT_EUNSUPPORTED: return 501;
    default: return 500;
    }
}

void px_admin_store_err(px_http_resp_t *r, gt_err_t err, const char *what)
{
    px_admin_err(r, px_admin_code(err), "%s: %s", what,
                 err == GT_ETIMEDOUT ? "the store did not answer in time"
                                     : gt_err_str(err));
}

/* ---- requests */

static int px_hex(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Decodes n bytes of in into out[cap]: false when bad, too long or with
 * a NUL. */
static bool px_unescape_n(const char *in, size_t n, char *out, size_t cap)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)in[i];

        if (c == '%') {
            int hi, lo;

            if (i + 2 >= n || (hi = px_hex(in[i + 1])) < 0 ||
                (lo = px_hex(in[i + 2])) < 0)
                return false;
            c = hi * 16 + lo;
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (c == 0 || o + 1 >= cap)
            return false;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return true;
}

bool px_admin_unescape(const char *in, char *out, size_t cap)
{
    return px_unescape_n(in, strlen(in), out, cap);
}

int px_admin_split(const char *path, px_seg_t *segs, int max)
{
    int n = 0;

    while (*path == '/')
        path++;
    while (*path != '\0') {
        const char *e = strchr(path, '/');
        size_t len = e != NULL ? (size_t)(e - path) : strlen(path);

        if (len == 0 || n == max ||
            !px_unescape_n(path, len, segs[n], sizeof(segs[n])) || segs[n][0] == '\0')
            return -1;
        n++;
        path += len;
        if (*path == '/')
            path++;
    }
    return n;
}

json_t *px_admin_body(const px_http_req_t *req, px_http_resp_t *resp)
{
    json_error_t je;
    json_t *j;

    if (req->body_len == 0) {
        px_admin_err(resp, 400, "a JSON object body is required");
        return NULL;
    }
    j = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL) {
        px_admin_err(resp, 400, "bad JSON: %s (line %d, column %d)", je.text, je.line,
                     je.column);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        px_admin_err(resp, 400, "the body must be a JSON object");
        return NULL;
    }
    return j;
}

/* ---- names */

static const char *const type_names[] = {"NORMAL", "FIFO", "DELAY", "TRANSACTION",
                                         "MIXED"};

const char *px_admin_type_name(st_topic_type_t t)
{
    return (unsigned)t < sizeof(type_names) / sizeof(type_names[0]) ? type_names[t]
                                                                    : "UNKNOWN";
}

bool px_admin_type_parse(const char *s, st_topic_type_t *out)
{
    for (size_t i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++)
        if (strcasecmp(s, type_names[i]) == 0) {
            *out = (st_topic_type_t)i;
            return true;
        }
    return false;
}

bool px_admin_reserved(const char *name)
{
    return st_is_sys_name(name) || strcmp(name, PX_TRACE_TOPIC) == 0 ||
           strncmp(name, ST_DLQ_PREFIX, sizeof(ST_DLQ_PREFIX) - 1) == 0 ||
           strncmp(name, ST_RETRY_PREFIX, sizeof(ST_RETRY_PREFIX) - 1) == 0;
}

static void names_topics(void *arg, gt_err_t err, const st_topic_t *t, size_t n)
{
    px_aw_t *w = arg;

    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; err == GT_OK && i < n; i++)
        json_array_append_new(w->out, json_string(t[i].name));
    pthread_mutex_unlock(&w->mu);
    px_aw_done(w, err);
}

static void names_groups(void *arg, gt_err_t err, const st_group_t *g, size_t n)
{
    px_aw_t *w = arg;

    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; err == GT_OK && i < n; i++)
        json_array_append_new(w->out, json_string(g[i].name));
    pthread_mutex_unlock(&w->mu);
    px_aw_done(w, err);
}

json_t *px_admin_names(px_admin_t *a, bool groups, int64_t deadline, gt_err_t *err)
{
    px_aw_t *w = px_aw_new(1, NULL);
    json_t *out = NULL;

    if (w == NULL || (w->out = json_array()) == NULL) {
        *err = GT_ENOMEM;
        if (w != NULL) {
            px_aw_done(w, GT_OK);
            px_aw_put(w);
        }
        return NULL;
    }
    if (groups)
        st_group_get(a->store, NULL, names_groups, w);
    else
        st_topic_get(a->store, NULL, names_topics, w);
    *err = px_aw_wait(w, deadline);
    if (*err == GT_OK)
        out = json_deep_copy(w->out);
    px_aw_put(w);
    if (*err == GT_OK && out == NULL)
        *err = GT_ENOMEM;
    return out;
}

/* ---- /api/v1/config */

/* Replaces the values of secret keys in YAML text (cfg_print's) with
 * asterisks: "KEY: value" up to the next ',', '}' or line end. */
void px_admin_mask_secrets(char *s)
{
    static const char *const keys[] = {"password", "password_hash", "secret",
                                       "secret_key", "token", "tokens", NULL};

    for (char *p = s; *p != '\0'; p++) {
        if (p != s && (isalnum((unsigned char)p[-1]) || p[-1] == '_'))
            continue;
        for (size_t k = 0; keys[k] != NULL; k++) {
            size_t kl = strlen(keys[k]);

            if (strncmp(p, keys[k], kl) != 0 || p[kl] != ':' || p[kl + 1] != ' ')
                continue;
            char *v = p + kl + 2, *e = v;

            while (*e != '\0' && *e != ',' && *e != '}' && *e != '\n')
                e++;
            if (e > v && !(e - v == 4 && strncmp(v, "null", 4) == 0) &&
                !(e - v == 2 && strncmp(v, "\"\"", 2) == 0))
                for (char *q = v; q < e; q++)
                    *q = '*';
            p = e - 1;
            break;
        }
    }
}

static void px_admin_config(void *arg, const px_http_req_t *req, px_http_resp_t *resp)
{
    px_admin_t *a = arg;
    const char *rest = req->url + strlen("/api/v1/config");

    if (strcmp(rest, "") == 0 || strcmp(rest, "/") == 0) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f;

        if (strcmp(req->method, "GET") != 0) {
            px_admin_err(resp, 405, "method not allowed (GET)");
            return;
        }
        if ((f = open_memstream(&buf, &len)) == NULL) {
            px_admin_err(resp, 500, "out of memory");
            return;
        }
        cfg_print(a->cfg, f);
        fclose(f);
        px_admin_mask_secrets(buf);
        px_admin_json(resp, 200,
                      json_pack("{s:s, s:s}", "yaml", buf, "log_level",
                                gt_log_level_name((gt_log_level_t)atomic_load(
                                    &gt_log_level_current))));
        free(buf);
        return;
    }
    if (strcmp(rest, "/log-level") == 0) {
        gt_log_level_t lvl;
        const char *name;
        json_t *b;

        if (strcmp(req->method, "GET") == 0) {
            px_admin_json(resp, 200,
                          json_pack("{s:s}", "level",
                                    gt_log_level_name((gt_log_level_t)atomic_load(
                                        &gt_log_level_current))));
            return;
        }
        if (strcmp(req->method, "PUT") != 0) {
            px_admin_err(resp, 405, "method not allowed (GET, PUT)");
            return;
        }
        if ((b = px_admin_body(req, resp)) == NULL)
            return;
        name = json_string_value(json_object_get(b, "level"));
        if (name == NULL || gt_log_level_parse(name, &lvl) != 0) {
            json_decref(b);
            px_admin_err(resp, 400, "\"level\" must be one of debug, info, warn, error");
            return;
        }
        json_decref(b);
        gt_log_set_level(lvl);
        GT_LOG(WARN, "admin", "log level set to %s through the admin API",
               gt_log_level_name(lvl));
        px_admin_json(resp, 200, json_pack("{s:s}", "level", gt_log_level_name(lvl)));
        return;
    }
    px_admin_err(resp, 404, "no such API path");
}

/* ---- routing */

typedef void (*px_admin_fn)(void *arg, const px_http_req_t *req, px_http_resp_t *resp);

/* Every route goes through here (px_http has checked access already). */
static void px_admin_gate(px_admin_t *a, px_admin_fn fn, const px_http_req_t *req,
                          px_http_resp_t *resp)
{
    if (a->test_stall_ms > 0) {
        GT_LOG(INFO, "admin", "test stall: %s %s", req->method, req->url);
        usleep((useconds_t)a->test_stall_ms * 1000);
    }
    fn(a, req, resp);
    GT_LOG(DEBUG, "admin", "%s %s -> %u", req->method, req->url, resp->code);
}

#define PX_ADMIN_ROUTE(name, fn)                                                  \
    static void name(void *arg, const px_http_req_t *req, px_http_resp_t *resp)  \
    {                                                                             \
        px_admin_gate(arg, fn, req, resp);                                        \
    }
PX_ADMIN_ROUTE(route_topics, px_admin_topics)
PX_ADMIN_ROUTE(route_groups, px_admin_groups)
PX_ADMIN_ROUTE(route_clients, px_admin_clients)
PX_ADMIN_ROUTE(route_messages, px_admin_messages)
PX_ADMIN_ROUTE(route_config, px_admin_config)
PX_ADMIN_ROUTE(route_users, px_admin_users)
PX_ADMIN_ROUTE(route_cluster, px_admin_cluster)

px_admin_t *px_admin_start(px_http_t *h, px_svc_t *svc, st_store_t *store,
                           const cfg_t *cfg, px_users_t *users)
{
    static const struct {
        const char *prefix;
        px_http_route_fn fn;
    } routes[] = {
        {"/api/v1/topics", route_topics},     {"/api/v1/groups", route_groups},
        {"/api/v1/clients", route_clients},   {"/api/v1/messages", route_messages},
        {"/api/v1/config", route_config},     {"/api/v1/users", route_users},
        {"/api/v1/cluster", route_cluster},
    };
    px_admin_t *a = calloc(1, sizeof(*a));

    if (a == NULL)
        return NULL;
    pthread_mutex_init(&a->amqp_mu, NULL);
    pthread_cond_init(&a->amqp_cv, NULL);
    a->http = h;
    a->svc = svc;
    a->store = store;
    a->cfg = cfg;
    a->users = users;
    {
        const char *stall = getenv("GANTRY_TEST_ADMIN_STALL_MS");

        a->test_stall_ms = stall != NULL ? atoi(stall) : 0;
    }
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
        if (px_http_route_add(h, routes[i].prefix, PX_ADMIN_MAX_BODY, routes[i].fn, a) !=
            GT_OK) {
            px_admin_stop(a);
            return NULL;
        }
    return a;
}

void px_admin_stop(px_admin_t *a)
{
    if (a == NULL)
        return;
    px_http_route_remove(a->http, a);
    pthread_mutex_destroy(&a->amqp_mu);
    pthread_cond_destroy(&a->amqp_cv);
    free(a);
}
