/* /api/v1/messages: look a message up by id (GET /api/v1/messages/ID),
 * by key (GET /api/v1/messages?topic=T&key=K) or by position (GET
 * /api/v1/topics/T/queues/Q/offsets/O, routed from px_admin_topic.c).
 * Each message shows its properties (user ones; the store's internal
 * ones are left out), its body as text when it is printable UTF-8, else
 * base64, cut at body_max bytes, and for every group that consumes its
 * queue the committed offset and whether it is consumed (acked) yet. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "px_admin_int.h"

#define PX_BODY_MAX_DEFAULT 4096
#define PX_BODY_MAX_LIMIT (1024 * 1024)
#define PX_GROUPS_MAX 256

/* A JSON string of s; bytes that are not UTF-8 become '?'. */
static json_t *str_json(const char *s, size_t len)
{
    json_t *j = json_stringn(s, len);
    char *c;

    if (j != NULL || (c = malloc(len + 1)) == NULL)
        return j;
    for (size_t i = 0; i < len; i++)
        c[i] = (unsigned char)s[i] < 0x80 && s[i] != '\0' ? s[i] : '?';
    j = json_stringn(c, len);
    free(c);
    return j;
}

static json_t *opt_str(const char *s)
{
    return s != NULL && s[0] != '\0' ? str_json(s, strlen(s)) : json_null();
}

/* Printable UTF-8 (tabs and line ends allowed). */
static bool printable(const unsigned char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i] < 0x20 && b[i] != '\t' && b[i] != '\n' && b[i] != '\r')
            return false;
    json_t *j = json_stringn((const char *)b, n);
    bool ok = j != NULL;

    json_decref(j);
    return ok;
}

json_t *px_admin_msg_json(const st_message_t *m, size_t body_max)
{
    json_t *j = json_object(), *props = json_object(), *keys = json_array();
    size_t n = m->body_len < body_max ? m->body_len : body_max;

    for (uint32_t i = 0; i < m->nprops; i++)
        if (m->props[i].key != NULL && m->props[i].key[0] != ST_PROP_SYS[0])
            json_object_set_new(props, m->props[i].key,
                                opt_str(m->props[i].value != NULL ? m->props[i].value : ""));
    for (uint32_t i = 0; i < m->nkeys; i++)
        json_array_append_new(keys, opt_str(m->keys[i]));
    json_object_set_new(j, "msg_id", opt_str(m->msg_id));
    json_object_set_new(j, "topic", opt_str(m->topic));
    json_object_set_new(j, "queue", json_integer(m->queue_id));
    json_object_set_new(j, "offset", json_integer((json_int_t)m->queue_offset));
    json_object_set_new(j, "tag", opt_str(m->tag));
    json_object_set_new(j, "keys", keys);
    json_object_set_new(j, "message_group", opt_str(m->msg_group));
    json_object_set_new(j, "properties", props);
    json_object_set_new(j, "born_time_ms", json_integer(m->born_ts_ms));
    json_object_set_new(j, "born_host", opt_str(m->born_host));
    json_object_set_new(j, "store_time_ms", json_integer(m->store_ts_ms));
    json_object_set_new(j, "delivery_time_ms",
                        m->delivery_ts_ms > 0 ? json_integer(m->delivery_ts_ms) : json_null());
    json_object_set_new(j, "body_size", json_integer(m->body_len));
    json_object_set_new(j, "body_truncated", json_boolean(n < m->body_len));
    if (printable(m->body, n)) {
        json_object_set_new(j, "body_encoding", json_string("text"));
        json_object_set_new(j, "body", json_stringn(m->body, n));
    } else {
        char *b64 = malloc(4 * ((n + 2) / 3) + 1);

        if (b64 != NULL)
            EVP_EncodeBlock((unsigned char *)b64, m->body, (int)n);
        json_object_set_new(j, "body_encoding", json_string("base64"));
        json_object_set_new(j, "body", b64 != NULL ? json_string(b64) : json_null());
        free(b64);
    }
    return j;
}

/* st_msgs_cb: appends the messages to w->out (u[1]: body_max; u[2]: the
 * offset wanted, u[3] = 1 to keep only that one). */
static void got_msgs(void *arg, gt_err_t err, const st_message_t *m, size_t n,
                     uint64_t next)
{
    px_aw_t *w = arg;

    (void)next;
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; err == GT_OK && i < n; i++)
        if (w->u[3] == 0 || m[i].queue_offset == w->u[2])
            json_array_append_new(w->out, px_admin_msg_json(&m[i], (size_t)w->u[1]));
    pthread_mutex_unlock(&w->mu);
    px_aw_done(w, err);
}

typedef struct {
    px_aw_t *w;
    size_t msg;
    char group[ST_NAME_MAX + 1];
} px_mc_t;

static void got_offset(void *arg, gt_err_t err, uint64_t committed)
{
    px_mc_t *c = arg;
    px_aw_t *w = c->w;

    pthread_mutex_lock(&w->mu);
    if (err == GT_OK) {
        json_t *m = json_array_get(w->out, c->msg);
        uint64_t off = (uint64_t)json_integer_value(json_object_get(m, "offset"));

        json_array_append_new(json_object_get(m, "groups"),
                              json_pack("{s:s, s:I, s:b}", "group", c->group, "committed",
                                        (json_int_t)committed, "consumed", off < committed));
    }
    pthread_mutex_unlock(&w->mu);
    free(c);
    px_aw_done(w, GT_OK); /* a group that never read the queue: not listed */
}

/* Runs the lookup started by start(w) and answers with the messages and
 * their consumption state per group. */
static void lookup(px_admin_t *a, const px_http_req_t *req, px_http_resp_t *resp,
                   void (*start)(px_admin_t *, px_aw_t *, const void *), const void *sarg,
                   uint64_t want_off, bool want, const char *what)
{
    int64_t deadline = px_admin_now_ms() + PX_ADMIN_WAIT_MS;
    const char *bm = px_http_req_arg(req, "body_max");
    json_t *msgs, *groups, *m, *gv;
    size_t body_max = PX_BODY_MAX_DEFAULT, i, k;
    px_aw_t *w;
    gt_err_t rc;

    if (bm != NULL) {
        char *end;
        unsigned long long v = strtoull(bm, &end, 10);

        if (*bm == '\0' || *end != '\0' || v > PX_BODY_MAX_LIMIT) {
            px_admin_err(resp, 400, "body_max must be 0..%d", PX_BODY_MAX_LIMIT);
            return;
        }
        body_max = (size_t)v;
    }
    if ((w = px_aw_new(1, NULL)) == NULL) {
        px_admin_err(resp, 500, "out of memory");
        return;
    }
    w->out = json_array();
    w->u[1] = body_max;
    w->u[2] = want_off;
    w->u[3] = want;
    start(a, w, sarg);
    if ((rc = px_aw_wait(w, deadline)) != GT_OK) {
        px_aw_put(w);
        if (rc == GT_ERANGE) /* past the queue's end */
            px_admin_err(resp, 404, "no message %s", what);
        else
            px_admin_store_err(resp, rc, what);
        return;
    }
    pthread_mutex_lock(&w->mu);
    msgs = json_deep_copy(w->out);
    pthread_mutex_unlock(&w->mu);
    px_aw_put(w);
    if (json_array_size(msgs) == 0) {
        json_decref(msgs);
        px_admin_err(resp, 404, "no message %s", what);
        return;
    }
    /* consumption state: every group's committed offset on the queue */
    if ((groups = px_admin_names(a, true, deadline, &rc)) == NULL ||
        (w = px_aw_new(1, NULL)) == NULL) {
        json_decref(groups);
        json_decref(msgs);
        px_admin_store_err(resp, rc != GT_OK ? rc : GT_ENOMEM, what);
        return;
    }
    json_array_foreach(msgs, i, m) json_object_set_new(m, "groups", json_array());
    w->out = msgs;
    json_array_foreach(msgs, i, m) {
        const char *topic = json_string_value(json_object_get(m, "topic"));
        json_int_t q = json_integer_value(json_object_get(m, "queue"));

        json_array_foreach(groups, k, gv) {
            const char *g = json_string_value(gv);
            px_mc_t *c;

            if (k >= PX_GROUPS_MAX || topic == NULL || st_is_sys_name(g) ||
                (c = calloc(1, sizeof(*c))) == NULL)
                continue;
            c->w = w;
            c->msg = i;
            snprintf(c->group, sizeof(c->group), "%s", g);
            px_aw_add(w, 1);
            st_offset_get(a->store, g, topic, (uint32_t)q, got_offset, c);
        }
    }
    json_decref(groups);
    px_aw_done(w, GT_OK);
    rc = px_aw_wait(w, deadline);
    pthread_mutex_lock(&w->mu);
    msgs = json_deep_copy(w->out);
    pthread_mutex_unlock(&w->mu);
    px_aw_put(w);
    if (rc != GT_OK) {
        json_decref(msgs);
        px_admin_store_err(resp, rc, what);
        return;
    }
    px_admin_json(resp, 200, json_pack("{s:o}", "messages", msgs));
}

/* ---- the three lookups */

typedef struct {
    const char *topic, *id, *key;
    uint32_t queue;
    uint64_t offset;
} px_lk_t;

static void start_id(px_admin_t *a, px_aw_t *w, const void *arg)
{
    const px_lk_t *l = arg;

    st_lookup_id(a->store, l->topic, l->id, got_msgs, w);
}

static void start_key(px_admin_t *a, px_aw_t *w, const void *arg)
{
    const px_lk_t *l = arg;

    st_lookup_key(a->store, l->topic, l->key, ST_POP_MAX, got_msgs, w);
}

static void start_at(px_admin_t *a, px_aw_t *w, const void *arg)
{
    const px_lk_t *l = arg;
    st_pull_req_t pr = {.topic = l->topic, .queue = l->queue, .offset = l->offset, .max = 1};

    st_pull(a->store, &pr, got_msgs, w);
}

/* A decoded query value into out; false after answering 400. */
static bool arg_str(const px_http_req_t *req, const char *k, char *out, size_t cap,
                    px_http_resp_t *resp)
{
    const char *v = px_http_req_arg(req, k);

    out[0] = '\0';
    if (v != NULL && !px_admin_unescape(v, out, cap)) {
        px_admin_err(resp, 400, "bad %s", k);
        return false;
    }
    return true;
}

void px_admin_messages(void *arg, const px_http_req_t *req, px_http_resp_t *resp)
{
    px_admin_t *a = arg;
    const char *rest = req->url + strlen("/api/v1/messages");
    char topic[ST_NAME_MAX + 1], key[ST_NAME_MAX + 1], what[600];
    px_seg_t seg[PX_SEG_MAX];
    px_lk_t l = {0};
    int n;

    if (*rest != '\0' && *rest != '/') {
        px_admin_err(resp, 404, "no such API path");
        return;
    }
    if ((n = px_admin_split(rest, seg, PX_SEG_MAX)) < 0) {
        px_admin_err(resp, 400, "bad path segment");
        return;
    }
    if (n == 2 && strcmp(seg[1], "trace") == 0) { /* px_admin_trace.c */
        px_admin_trace(a, seg[0], req, resp);
        return;
    }
    if (n > 1) {
        px_admin_err(resp, 404, "no such API path");
        return;
    }
    if (strcmp(req->method, "GET") != 0) {
        px_admin_err(resp, 405, "method not allowed (GET)");
        return;
    }
    if (!arg_str(req, "topic", topic, sizeof(topic), resp) ||
        !arg_str(req, "key", key, sizeof(key), resp))
        return;
    l.topic = topic[0] != '\0' ? topic : NULL;
    if (n == 1) {
        l.id = seg[0];
        snprintf(what, sizeof(what), "with id %.255s", seg[0]);
        lookup(a, req, resp, start_id, &l, 0, false, what);
        return;
    }
    if (key[0] == '\0' || l.topic == NULL) {
        px_admin_err(resp, 400, "give ?topic=T&key=K, or GET /api/v1/messages/ID");
        return;
    }
    l.key = key;
    snprintf(what, sizeof(what), "with key %.255s in %.255s", key, topic);
    lookup(a, req, resp, start_key, &l, 0, false, what);
}

void px_admin_msg_at(px_admin_t *a, const char *topic, const char *queue,
                     const char *offset, const px_http_req_t *req,
                     px_http_resp_t *resp)
{
    char *e1, *e2, what[600];
    unsigned long q = strtoul(queue, &e1, 10);
    unsigned long long off = strtoull(offset, &e2, 10);
    px_lk_t l = {.topic = topic};

    if (*e1 != '\0' || *e2 != '\0' || q > 1024 || queue[0] == '-' || offset[0] == '-') {
        px_admin_err(resp, 400, "queue and offset must be non-negative integers");
        return;
    }
    l.queue = (uint32_t)q;
    l.offset = off;
    snprintf(what, sizeof(what), "at %.255s/%lu/%llu", topic, q, off);
    lookup(a, req, resp, start_at, &l, off, true, what);
}
