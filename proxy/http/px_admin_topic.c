/* /api/v1/topics: list, show (per-queue offsets, sizes, first and last
 * store times), create, update (queue count up, permissions, type),
 * delete (never a %SYS%, %DLQ% or %RETRY% topic).  See docs/admin.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt_log.h"
#include "px_admin_int.h"

#define PX_DEFAULT_QUEUES 8

static const char *perm_str(uint32_t p)
{
    bool r = p & ST_PERM_READ, w = p & ST_PERM_WRITE;

    return r && w ? "rw" : r ? "r" : w ? "w" : "";
}

static bool perm_parse(const json_t *v, uint32_t *out)
{
    const char *s = json_string_value(v);

    if (s == NULL)
        return false;
    *out = 0;
    for (; *s != '\0'; s++) {
        if (*s == 'r' && !(*out & ST_PERM_READ))
            *out |= ST_PERM_READ;
        else if (*s == 'w' && !(*out & ST_PERM_WRITE))
            *out |= ST_PERM_WRITE;
        else
            return false;
    }
    return true;
}

/* RocketMQ's topic name rule: 1..127 of [%|a-zA-Z0-9_-] (the store
 * allows more; the admin API holds names to what clients can use). */
static bool name_ok(const char *n)
{
    size_t len = strlen(n);

    if (len == 0 || len > 127)
        return false;
    for (const char *p = n; *p != '\0'; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' || *p == '%' ||
              *p == '|'))
            return false;
    return true;
}

static json_t *topic_json(const st_topic_t *t)
{
    return json_pack("{s:s, s:s, s:i, s:s, s:b}", "name", t->name, "type",
                     px_admin_type_name(t->type), "queues", (json_int_t)t->queue_count,
                     "perm", perm_str(t->perm), "system", px_admin_reserved(t->name));
}

static void got_topics(void *arg, gt_err_t err, const st_topic_t *t, size_t n)
{
    px_aw_t *w = arg;

    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; err == GT_OK && i < n; i++)
        json_array_append_new(w->out, topic_json(&t[i]));
    pthread_mutex_unlock(&w->mu);
    px_aw_done(w, err);
}

void px_admin_topic_count(void *arg, gt_err_t err, const st_topic_t *t, size_t n)
{
    px_aw_t *w = arg;

    pthread_mutex_lock(&w->mu);
    w->u[0] = err == GT_OK && n > 0 ? t[0].queue_count : 0;
    pthread_mutex_unlock(&w->mu);
    px_aw_done(w, err);
}

/* Fetches one topic (name) or all (NULL) into a new array; NULL with err. */
static json_t *get_topics(px_admin_t *a, const char *name, int64_t deadline, gt_err_t *err)
{
    px_aw_t *w = px_aw_new(1, NULL);
    json_t *out = NULL;

    if (w == NULL) {
        *err = GT_ENOMEM;
        return NULL;
    }
    w->out = json_array();
    st_topic_get(a->store, name, got_topics, w);
    *err = px_aw_wait(w, deadline);
    if (*err == GT_OK && name != NULL && json_array_size(w->out) == 0)
        *err = GT_ENOTFOUND;
    if (*err == GT_OK)
        out = json_deep_copy(w->out);
    px_aw_put(w);
    return out;
}

static void put_done(void *arg, gt_err_t err)
{
    px_aw_done(arg, err);
}

static gt_err_t put_topic(px_admin_t *a, const st_topic_t *t, int64_t deadline)
{
    px_aw_t *w = px_aw_new(1, NULL);
    gt_err_t rc;

    if (w == NULL)
        return GT_ENOMEM;
    st_topic_put(a->store, t, put_done, w);
    rc = px_aw_wait(w, deadline);
    px_aw_put(w);
    return rc;
}

/* ---- show */

static void got_stats(void *arg, gt_err_t err, const st_stats_t *s)
{
    px_aw_t *w = arg;

    pthread_mutex_lock(&w->mu);
    if (err == GT_OK) {
        json_t *qs = json_array();

        json_object_set_new(w->out, "messages", json_integer((json_int_t)s->messages));
        json_object_set_new(w->out, "bytes", json_integer((json_int_t)s->bytes));
        for (uint32_t q = 0; q < s->nqueues; q++)
            json_array_append_new(
                qs, json_pack("{s:i, s:I, s:I, s:I, s:I}", "queue", (json_int_t)q,
                              "min_offset", (json_int_t)s->queues[q].min_offset,
                              "max_offset", (json_int_t)s->queues[q].max_offset,
                              "messages",
                              (json_int_t)(s->queues[q].max_offset -
                                           s->queues[q].min_offset),
                              "bytes", (json_int_t)s->queues[q].bytes));
        json_object_set_new(w->out, "queue_stats", qs);
    }
    pthread_mutex_unlock(&w->mu);
    px_aw_done(w, err);
}

/* First (u[0], 0: none) and last (u[1]) store times over the pulls. */
static void got_edge(void *arg, gt_err_t err, const st_message_t *m, size_t n,
                     uint64_t next)
{
    px_aw_t *w = arg;

    (void)next;
    pthread_mutex_lock(&w->mu);
    if (err == GT_OK && n > 0 && m[0].store_ts_ms > 0) {
        uint64_t t = (uint64_t)m[0].store_ts_ms;

        if (w->u[0] == 0 || t < w->u[0])
            w->u[0] = t;
        if (t > w->u[1])
            w->u[1] = t;
    }
    pthread_mutex_unlock(&w->mu);
    /* a queue trimmed meanwhile: no time from it, not an error */
    px_aw_done(w, GT_OK);
}

static json_t *ms_json(uint64_t ms)
{
    return ms == 0 ? json_null() : json_integer((json_int_t)ms);
}

static void topic_show(px_admin_t *a, const char *name, px_http_resp_t *resp)
{
    int64_t deadline = px_admin_now_ms() + PX_ADMIN_WAIT_MS;
    gt_err_t rc;
    json_t *arr = get_topics(a, name, deadline, &rc), *t, *qs, *q;
    px_aw_t *w;
    size_t i;

    if (arr == NULL) {
        px_admin_store_err(resp, rc, name);
        return;
    }
    t = json_incref(json_array_get(arr, 0));
    json_decref(arr);
    if ((w = px_aw_new(1, NULL)) == NULL) {
        json_decref(t);
        px_admin_err(resp, 500, "out of memory");
        return;
    }
    w->out = json_object();
    st_stats(a->store, name, NULL, got_stats, w);
    if ((rc = px_aw_wait(w, deadline)) != GT_OK) {
        px_aw_put(w);
        json_decref(t);
        px_admin_store_err(resp, rc, name);
        return;
    }
    json_object_update(t, w->out);
    px_aw_put(w);
    /* The store times of each queue's first and last retained message. */
    qs = json_object_get(t, "queue_stats");
    if ((w = px_aw_new(1, NULL)) == NULL) {
        json_decref(t);
        px_admin_err(resp, 500, "out of memory");
        return;
    }
    json_array_foreach(qs, i, q) {
        uint64_t lo = (uint64_t)json_integer_value(json_object_get(q, "min_offset"));
        uint64_t hi = (uint64_t)json_integer_value(json_object_get(q, "max_offset"));

        if (hi <= lo)
            continue;
        for (int e = 0; e < 2; e++) {
            st_pull_req_t pr = {.topic = name, .queue = (uint32_t)i,
                                .offset = e == 0 ? lo : hi - 1, .max = 1};
            px_aw_add(w, 1);
            st_pull(a->store, &pr, got_edge, w);
        }
    }
    px_aw_done(w, GT_OK); /* the one counted at creation */
    rc = px_aw_wait(w, deadline);
    pthread_mutex_lock(&w->mu);
    json_object_set_new(t, "first_store_time_ms", ms_json(w->u[0]));
    json_object_set_new(t, "last_store_time_ms", ms_json(w->u[1]));
    pthread_mutex_unlock(&w->mu);
    px_aw_put(w);
    if (rc != GT_OK) {
        json_decref(t);
        px_admin_store_err(resp, rc, name);
        return;
    }
    px_admin_json(resp, 200, t);
}

/* ---- create / update / delete */

/* Reads type, queues and perm from body into t (keeping t's values for
 * absent ones); false after answering 400. */
static bool topic_fields(json_t *b, st_topic_t *t, px_http_resp_t *resp)
{
    json_t *v;

    if ((v = json_object_get(b, "type")) != NULL &&
        (!json_is_string(v) || !px_admin_type_parse(json_string_value(v), &t->type))) {
        px_admin_err(resp, 400, "\"type\" must be NORMAL, FIFO, DELAY, TRANSACTION or MIXED");
        return false;
    }
    if ((v = json_object_get(b, "queues")) != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
            json_integer_value(v) > 1024) {
            px_admin_err(resp, 400, "\"queues\" must be an integer 1..1024");
            return false;
        }
        if ((uint32_t)json_integer_value(v) < t->queue_count) {
            px_admin_err(resp, 400, "\"queues\" can only grow (the topic has %u)",
                         t->queue_count);
            return false;
        }
        t->queue_count = (uint32_t)json_integer_value(v);
    }
    if ((v = json_object_get(b, "perm")) != NULL && !perm_parse(v, &t->perm)) {
        px_admin_err(resp, 400, "\"perm\" must be \"rw\", \"r\", \"w\" or \"\"");
        return false;
    }
    return true;
}

static void topic_create(px_admin_t *a, const px_http_req_t *req, px_http_resp_t *resp)
{
    int64_t deadline = px_admin_now_ms() + PX_ADMIN_WAIT_MS;
    json_t *b = px_admin_body(req, resp), *old;
    const char *name;
    st_topic_t t;
    gt_err_t rc;

    if (b == NULL)
        return;
    memset(&t, 0, sizeof(t));
    name = json_string_value(json_object_get(b, "name"));
    if (name == NULL || !name_ok(name)) {
        json_decref(b);
        px_admin_err(resp, 400, "\"name\" must be 1..127 characters of [%%|a-zA-Z0-9_-]");
        return;
    }
    snprintf(t.name, sizeof(t.name), "%s", name);
    if (px_admin_reserved(t.name)) {
        json_decref(b);
        px_admin_err(resp, 403, "%s is a system name", t.name);
        return;
    }
    t.type = ST_TOPIC_NORMAL;
    t.queue_count = 0; /* any count may be asked for */
    t.perm = ST_PERM_READ | ST_PERM_WRITE;
    if (!topic_fields(b, &t, resp)) {
        json_decref(b);
        return;
    }
    if (t.queue_count == 0)
        t.queue_count = PX_DEFAULT_QUEUES;
    json_decref(b);
    old = get_topics(a, t.name, deadline, &rc);
    json_decref(old);
    if (rc == GT_OK) {
        px_admin_err(resp, 409, "topic %s exists", t.name);
        return;
    }
    if (rc != GT_ENOTFOUND || (rc = put_topic(a, &t, deadline)) != GT_OK) {
        px_admin_store_err(resp, rc, t.name);
        return;
    }
    GT_LOG(INFO, "admin", "topic %s created (%s, %u queues)", t.name,
           px_admin_type_name(t.type), t.queue_count);
    px_admin_json(resp, 201, topic_json(&t));
}

static void topic_update(px_admin_t *a, const char *name, const px_http_req_t *req,
                         px_http_resp_t *resp)
{
    int64_t deadline = px_admin_now_ms() + PX_ADMIN_WAIT_MS;
    json_t *b, *arr, *cur;
    st_topic_t t;
    gt_err_t rc;

    if (px_admin_reserved(name)) {
        px_admin_err(resp, 403, "%s is a system topic", name);
        return;
    }
    if ((b = px_admin_body(req, resp)) == NULL)
        return;
    if ((arr = get_topics(a, name, deadline, &rc)) == NULL) {
        json_decref(b);
        px_admin_store_err(resp, rc, name);
        return;
    }
    cur = json_array_get(arr, 0);
    memset(&t, 0, sizeof(t));
    snprintf(t.name, sizeof(t.name), "%s", name);
    px_admin_type_parse(json_string_value(json_object_get(cur, "type")), &t.type);
    t.queue_count = (uint32_t)json_integer_value(json_object_get(cur, "queues"));
    perm_parse(json_object_get(cur, "perm"), &t.perm);
    json_decref(arr);
    if (!topic_fields(b, &t, resp)) {
        json_decref(b);
        return;
    }
    json_decref(b);
    if ((rc = put_topic(a, &t, deadline)) != GT_OK) {
        px_admin_store_err(resp, rc, name);
        return;
    }
    GT_LOG(INFO, "admin", "topic %s updated (%s, %u queues, perm %s)", t.name,
           px_admin_type_name(t.type), t.queue_count, perm_str(t.perm));
    px_admin_json(resp, 200, topic_json(&t));
}

static void topic_delete(px_admin_t *a, const char *name, px_http_resp_t *resp)
{
    int64_t deadline = px_admin_now_ms() + PX_ADMIN_WAIT_MS;
    json_t *arr;
    px_aw_t *w;
    gt_err_t rc;

    if (px_admin_reserved(name)) {
        px_admin_err(resp, 403, "%s is a system topic: it cannot be deleted", name);
        return;
    }
    if ((arr = get_topics(a, name, deadline, &rc)) == NULL) {
        px_admin_store_err(resp, rc, name);
        return;
    }
    json_decref(arr);
    if ((w = px_aw_new(1, NULL)) == NULL) {
        px_admin_err(resp, 500, "out of memory");
        return;
    }
    st_topic_delete(a->store, name, put_done, w);
    rc = px_aw_wait(w, deadline);
    px_aw_put(w);
    if (rc != GT_OK) {
        px_admin_store_err(resp, rc, name);
        return;
    }
    GT_LOG(INFO, "admin", "topic %s deleted", name);
    px_admin_json(resp, 200, json_pack("{s:s}", "deleted", name));
}

void px_admin_topics(void *arg, const px_http_req_t *req, px_http_resp_t *resp)
{
    px_admin_t *a = arg;
    const char *rest = req->url + strlen("/api/v1/topics");
    const char *m = req->method;
    px_seg_t seg[PX_SEG_MAX];
    int n;

    if (*rest != '\0' && *rest != '/') {
        px_admin_err(resp, 404, "no such API path");
        return;
    }
    if ((n = px_admin_split(rest, seg, PX_SEG_MAX)) < 0) {
        px_admin_err(resp, 400, "bad path segment");
        return;
    }
    if (n == 0) {
        if (strcmp(m, "GET") == 0) {
            gt_err_t rc;
            json_t *arr = get_topics(a, NULL, px_admin_now_ms() + PX_ADMIN_WAIT_MS, &rc);

            if (arr == NULL)
                px_admin_store_err(resp, rc, "topics");
            else
                px_admin_json(resp, 200, json_pack("{s:o}", "topics", arr));
        } else if (strcmp(m, "POST") == 0) {
            topic_create(a, req, resp);
        } else {
            px_admin_err(resp, 405, "method not allowed (GET, POST)");
        }
        return;
    }
    if (n == 1) {
        if (strcmp(m, "GET") == 0)
            topic_show(a, seg[0], resp);
        else if (strcmp(m, "PUT") == 0)
            topic_update(a, seg[0], req, resp);
        else if (strcmp(m, "DELETE") == 0)
            topic_delete(a, seg[0], resp);
        else
            px_admin_err(resp, 405, "method not allowed (GET, PUT, DELETE)");
        return;
    }
    if (n == 5 && strcmp(seg[1], "queues") == 0 && strcmp(seg[3], "offsets") == 0) {
        if (strcmp(m, "GET") != 0)
            px_admin_err(resp, 405, "method not allowed (GET)");
        else
            px_admin_msg_at(a, seg[0], seg[2], seg[4], req, resp);
        return;
    }
    px_admin_err(resp, 404, "no such API path");
}
