/* /api/v1/groups: list, show (settings, lag per topic and queue, ready,
 * in flight, DLQ depth, connected members), create, update, delete, and
 * POST .../reset-offset.  See docs/admin.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gt_log.h"
#include "px_admin_int.h"

#define PX_DEFAULT_ATTEMPTS 16

static json_t *group_json(const st_group_t *g)
{
    return json_pack("{s:s, s:b, s:i, s:s, s:{s:i, s:i, s:i}, s:b}", "name", g->name,
                     "fifo", g->fifo, "max_delivery_attempts",
                     (json_int_t)g->max_delivery_attempts, "consume_from",
                     g->consume_from == ST_CONSUME_FROM_LAST ? "LAST" : "FIRST", "retry",
                     "initial_ms", (json_int_t)g->retry.initial_ms, "max_ms",
                     (json_int_t)g->retry.max_ms, "multiplier",
                     (json_int_t)g->retry.multiplier, "system", px_admin_reserved(g->name));
}

/* The group as stored, for updates: out filled; w->u[0] = 1 when found. */
static void got_groups(void *arg, gt_err_t err, const st_group_t *g, size_t n)
{
    px_aw_t *w = arg;

    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; err == GT_OK && i < n; i++)
        json_array_append_new(w->out, group_json(&g[i]));
    if (err == GT_OK && n > 0)
        w->group = g[0];
    pthread_mutex_unlock(&w->mu);
    px_aw_done(w, err);
}

/* One group (name; into *one when given) or all: a new array; NULL with
 * err (GT_ENOTFOUND for an unknown name). */
static json_t *get_groups(px_admin_t *a, const char *name, st_group_t *one,
                          int64_t deadline, gt_err_t *err)
{
    px_aw_t *w = px_aw_new(1, NULL);
    json_t *out = NULL;

    if (w == NULL) {
        *err = GT_ENOMEM;
        return NULL;
    }
    w->out = json_array();
    st_group_get(a->store, name, got_groups, w);
    *err = px_aw_wait(w, deadline);
    if (*err == GT_OK && name != NULL && json_array_size(w->out) == 0)
        *err = GT_ENOTFOUND;
    if (*err == GT_OK) {
        out = json_deep_copy(w->out);
        if (one != NULL)
            *one = w->group;
    }
    px_aw_put(w);
    return out;
}

gt_err_t px_admin_group_check(px_admin_t *a, const char *name, int64_t deadline)
{
    gt_err_t rc;
    json_t *arr = get_groups(a, name, NULL, deadline, &rc);

    json_decref(arr);
    return rc;
}

static void done_cb(void *arg, gt_err_t err)
{
    px_aw_done(arg, err);
}

static gt_err_t wait_done(px_aw_t *w, int64_t deadline)
{
    gt_err_t rc = px_aw_wait(w, deadline);

    px_aw_put(w);
    return rc;
}

/* ---- show */

/* Per-topic stats of the group: out[topic] = {ready, inflight, lag,
 * queues: [{queue, max_offset, committed}]}.  ctx: the topic name
 * (owned by the request). */
typedef struct {
    px_aw_t *w;
    char topic[ST_NAME_MAX + 1];
    uint32_t queue;
} px_gq_t;

static void got_gstats(void *arg, gt_err_t err, const st_stats_t *s)
{
    px_gq_t *c = arg;
    px_aw_t *w = c->w;

    pthread_mutex_lock(&w->mu);
    if (err == GT_OK) {
        json_t *qs = json_array();

        for (uint32_t q = 0; q < s->nqueues; q++)
            json_array_append_new(qs, json_pack("{s:i, s:I, s:I, s:n}", "queue",
                                                (json_int_t)q, "min_offset",
                                                (json_int_t)s->queues[q].min_offset,
                                                "max_offset",
                                                (json_int_t)s->queues[q].max_offset,
                                                "committed"));
        json_object_set_new(w->out, c->topic,
                            json_pack("{s:s, s:I, s:I, s:I, s:o}", "topic", c->topic,
                                      "ready", (json_int_t)s->ready, "inflight",
                                      (json_int_t)s->inflight, "lag",
                                      (json_int_t)s->lag, "queues", qs));
    }
    pthread_mutex_unlock(&w->mu);
    free(c);
    /* a topic deleted meanwhile is just left out */
    px_aw_done(w, err == GT_ENOTFOUND ? GT_OK : err);
}

static void got_committed(void *arg, gt_err_t err, uint64_t off)
{
    px_gq_t *c = arg;
    px_aw_t *w = c->w;

    pthread_mutex_lock(&w->mu);
    if (err == GT_OK) {
        json_t *t = json_object_get(w->out, c->topic);
        json_t *q = json_array_get(json_object_get(t, "queues"), c->queue);

        json_object_set_new(q, "committed", json_integer((json_int_t)off));
        json_object_set_new(t, "consumed", json_true());
    }
    pthread_mutex_unlock(&w->mu);
    free(c);
    px_aw_done(w, err == GT_ENOTFOUND ? GT_OK : err);
}

/* The dead letters not moved back yet: every message of %DLQ%G minus
 * those below G's own committed offset there (px_admin_dlq.c consumes
 * the DLQ as G). u[0]: the count. */
typedef struct {
    px_aw_t *w;
    uint64_t min;
} px_dq_t;

static void got_dlq_off(void *arg, gt_err_t err, uint64_t committed)
{
    px_dq_t *c = arg;
    px_aw_t *w = c->w;

    pthread_mutex_lock(&w->mu);
    if (err == GT_OK && committed > c->min)
        w->u[0] -= committed - c->min < w->u[0] ? committed - c->min : w->u[0];
    pthread_mutex_unlock(&w->mu);
    free(c);
    px_aw_done(w, err == GT_ENOTFOUND ? GT_OK : err);
}

static void got_dlq(void *arg, gt_err_t err, const st_stats_t *s)
{
    px_aw_t *w = arg;

    pthread_mutex_lock(&w->mu);
    w->u[0] = err == GT_OK ? s->messages : 0;
    pthread_mutex_unlock(&w->mu);
    for (uint32_t q = 0; err == GT_OK && q < s->nqueues; q++) {
        px_dq_t *c = calloc(1, sizeof(*c));
        char dlq[ST_NAME_MAX + sizeof(ST_DLQ_PREFIX)];

        if (c == NULL)
            continue;
        c->w = w;
        c->min = s->queues[q].min_offset;
        snprintf(dlq, sizeof(dlq), "%s%s", ST_DLQ_PREFIX, w->group.name);
        px_aw_add(w, 1);
        st_offset_get(w->store, w->group.name, dlq, q, got_dlq_off, c);
    }
    px_aw_done(w, err == GT_ENOTFOUND ? GT_OK : err);
}

/* The connected clients of group g (the registry's subscriptions). */
static json_t *members(px_admin_t *a, const char *g)
{
    json_t *arr = json_array();

    pthread_mutex_lock(&a->svc->clients_mu);
    for (px_client_t *c = a->svc->clients; c != NULL; c = c->next)
        if (strcmp(c->group, g) == 0)
            json_array_append_new(arr, json_string(c->id));
    pthread_mutex_unlock(&a->svc->clients_mu);
    return arr;
}

/* Copies w->out once every callback ran, and lets go of w. */
static json_t *take_out(px_aw_t *w)
{
    json_t *out;

    pthread_mutex_lock(&w->mu);
    out = json_deep_copy(w->out);
    pthread_mutex_unlock(&w->mu);
    px_aw_put(w);
    return out;
}

static void group_show(px_admin_t *a, const char *name, px_http_resp_t *resp)
{
    int64_t deadline = px_admin_now_ms() + PX_ADMIN_WAIT_MS;
    json_t *arr, *g, *names, *tv, *stats = NULL, *topics;
    uint64_t tot_lag = 0, tot_ready = 0, tot_inflight = 0, dlq = 0;
    char dlq_name[ST_NAME_MAX + sizeof(ST_DLQ_PREFIX)];
    px_aw_t *w;
    gt_err_t rc;
    size_t i;
    const char *key;

    if ((arr = get_groups(a, name, NULL, deadline, &rc)) == NULL) {
        px_admin_store_err(resp, rc, name);
        return;
    }
    g = json_incref(json_array_get(arr, 0));
    json_decref(arr);
    if ((names = px_admin_names(a, false, deadline, &rc)) == NULL) {
        json_decref(g);
        px_admin_store_err(resp, rc, "topics");
        return;
    }
    snprintf(dlq_name, sizeof(dlq_name), "%s%s", ST_DLQ_PREFIX, name);
    /* 1. each topic's stats for the group */
    if ((w = px_aw_new(1, NULL)) == NULL) {
        rc = GT_ENOMEM;
        goto fail;
    }
    w->out = json_object();
    json_array_foreach(names, i, tv) {
        const char *t = json_string_value(tv);
        px_gq_t *c;

        /* not its own DLQ either: a redrive consumes it as the group */
        if (st_is_sys_name(t) || strcmp(t, dlq_name) == 0 ||
            (c = calloc(1, sizeof(*c))) == NULL)
            continue;
        c->w = w;
        snprintf(c->topic, sizeof(c->topic), "%s", t);
        px_aw_add(w, 1);
        st_stats(a->store, t, name, got_gstats, c);
    }
    px_aw_done(w, GT_OK);
    if ((rc = px_aw_wait(w, deadline)) != GT_OK) {
        px_aw_put(w);
        goto fail;
    }
    stats = take_out(w);
    /* 2. each queue's committed offset: set where the group has state */
    if (stats == NULL || (w = px_aw_new(1, NULL)) == NULL) {
        rc = GT_ENOMEM;
        goto fail;
    }
    w->out = stats;
    stats = NULL;
    json_object_foreach(w->out, key, tv) {
        size_t nq = json_array_size(json_object_get(tv, "queues"));

        for (size_t q = 0; q < nq; q++) {
            px_gq_t *c = calloc(1, sizeof(*c));

            if (c == NULL)
                continue;
            c->w = w;
            snprintf(c->topic, sizeof(c->topic), "%s", key);
            c->queue = (uint32_t)q;
            px_aw_add(w, 1);
            st_offset_get(a->store, name, key, (uint32_t)q, got_committed, c);
        }
    }
    px_aw_done(w, GT_OK);
    if ((rc = px_aw_wait(w, deadline)) != GT_OK) {
        px_aw_put(w);
        goto fail;
    }
    if ((stats = take_out(w)) == NULL) {
        rc = GT_ENOMEM;
        goto fail;
    }
    /* 3. the dead letters */
    if ((w = px_aw_new(1, NULL)) == NULL) {
        rc = GT_ENOMEM;
        goto fail;
    }
    w->store = a->store;
    snprintf(w->group.name, sizeof(w->group.name), "%s", name);
    st_stats(a->store, dlq_name, NULL, got_dlq, w);
    rc = px_aw_wait(w, deadline);
    dlq = w->u[0];
    px_aw_put(w);
    if (rc != GT_OK)
        goto fail;
    /* The topics the group consumes, with the lag of each queue. */
    topics = json_array();
    json_object_foreach(stats, key, tv) {
        json_t *qs = json_object_get(tv, "queues"), *q;
        size_t j;

        if (!json_is_true(json_object_get(tv, "consumed")))
            continue;
        json_object_del(tv, "consumed");
        json_array_foreach(qs, j, q) {
            json_t *c = json_object_get(q, "committed");
            uint64_t max = (uint64_t)json_integer_value(json_object_get(q, "max_offset"));
            uint64_t com = json_is_integer(c) ? (uint64_t)json_integer_value(c) : 0;

            json_object_set_new(q, "lag",
                                json_is_integer(c)
                                    ? json_integer((json_int_t)px_admin_lag(max, com))
                                    : json_null());
        }
        tot_lag += (uint64_t)json_integer_value(json_object_get(tv, "lag"));
        tot_ready += (uint64_t)json_integer_value(json_object_get(tv, "ready"));
        tot_inflight += (uint64_t)json_integer_value(json_object_get(tv, "inflight"));
        json_array_append(topics, tv);
    }
    json_decref(stats);
    json_decref(names);
    json_object_set_new(g, "lag", json_integer((json_int_t)tot_lag));
    json_object_set_new(g, "ready", json_integer((json_int_t)tot_ready));
    json_object_set_new(g, "inflight", json_integer((json_int_t)tot_inflight));
    json_object_set_new(g, "dlq_messages", json_integer((json_int_t)dlq));
    json_object_set_new(g, "topics", topics);
    json_object_set_new(g, "members", members(a, name));
    px_admin_json(resp, 200, g);
    return;
fail:
    json_decref(stats);
    json_decref(names);
    json_decref(g);
    px_admin_store_err(resp, rc, name);
}

/* ---- create / update / delete */

static bool u32_field(json_t *b, const char *k, uint32_t lo, uint32_t hi, uint32_t *out,
                      px_http_resp_t *resp)
{
    json_t *v = json_object_get(b, k);

    if (v == NULL)
        return true;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        px_admin_err(resp, 400, "\"%s\" must be an integer %u..%u", k, lo, hi);
        return false;
    }
    *out = (uint32_t)json_integer_value(v);
    return true;
}

/* Reads the group fields of body into g (absent ones kept); false after
 * answering 400. */
static bool group_fields(json_t *b, st_group_t *g, px_http_resp_t *resp)
{
    json_t *v, *r;

    if ((v = json_object_get(b, "fifo")) != NULL) {
        if (!json_is_boolean(v)) {
            px_admin_err(resp, 400, "\"fifo\" must be true or false");
            return false;
        }
        g->fifo = json_is_true(v);
    }
    if (!u32_field(b, "max_delivery_attempts", 1, 1000, &g->max_delivery_attempts, resp))
        return false;
    if ((v = json_object_get(b, "consume_from")) != NULL) {
        const char *s = json_string_value(v);

        if (s != NULL && strcasecmp(s, "FIRST") == 0)
            g->consume_from = ST_CONSUME_FROM_FIRST;
        else if (s != NULL && strcasecmp(s, "LAST") == 0)
            g->consume_from = ST_CONSUME_FROM_LAST;
        else {
            px_admin_err(resp, 400, "\"consume_from\" must be FIRST or LAST");
            return false;
        }
    }
    if ((r = json_object_get(b, "retry")) != NULL) {
        if (!json_is_object(r)) {
            px_admin_err(resp, 400, "\"retry\" must be an object");
            return false;
        }
        if (!u32_field(r, "initial_ms", 0, 86400000, &g->retry.initial_ms, resp) ||
            !u32_field(r, "max_ms", 0, 86400000, &g->retry.max_ms, resp) ||
            !u32_field(r, "multiplier", 0, 10000, &g->retry.multiplier, resp))
            return false;
    }
    return true;
}

static gt_err_t put_group(px_admin_t *a, const st_group_t *g, int64_t deadline)
{
    px_aw_t *w = px_aw_new(1, NULL);

    if (w == NULL)
        return GT_ENOMEM;
    st_group_put(a->store, g, done_cb, w);
    return wait_done(w, deadline);
}

static bool group_name_ok(const char *n)
{
    size_t len = strlen(n);

    if (len == 0 || len > 255)
        return false;
    for (const char *p = n; *p != '\0'; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' || *p == '%' ||
              *p == '|'))
            return false;
    return true;
}

static void group_create(px_admin_t *a, const px_http_req_t *req, px_http_resp_t *resp)
{
    int64_t deadline = px_admin_now_ms() + PX_ADMIN_WAIT_MS;
    json_t *b = px_admin_body(req, resp), *old;
    const char *name;
    st_group_t g;
    gt_err_t rc;

    if (b == NULL)
        return;
    memset(&g, 0, sizeof(g));
    name = json_string_value(json_object_get(b, "name"));
    if (name == NULL || !group_name_ok(name)) {
        json_decref(b);
        px_admin_err(resp, 400, "\"name\" must be 1..255 characters of [%%|a-zA-Z0-9_-]");
        return;
    }
    snprintf(g.name, sizeof(g.name), "%s", name);
    if (px_admin_reserved(g.name)) {
        json_decref(b);
        px_admin_err(resp, 403, "%s is a system name", g.name);
        return;
    }
    g.max_delivery_attempts = PX_DEFAULT_ATTEMPTS;
    if (!group_fields(b, &g, resp)) {
        json_decref(b);
        return;
    }
    json_decref(b);
    old = get_groups(a, g.name, NULL, deadline, &rc);
    json_decref(old);
    if (rc == GT_OK) {
        px_admin_err(resp, 409, "group %s exists", g.name);
        return;
    }
    if (rc != GT_ENOTFOUND || (rc = put_group(a, &g, deadline)) != GT_OK) {
        px_admin_store_err(resp, rc, g.name);
        return;
    }
    GT_LOG(INFO, "admin", "group %s created", g.name);
    px_admin_json(resp, 201, group_json(&g));
}

static void group_update(px_admin_t *a, const char *name, const px_http_req_t *req,
                         px_http_resp_t *resp)
{
    int64_t deadline = px_admin_now_ms() + PX_ADMIN_WAIT_MS;
    json_t *b, *old;
    st_group_t g;
    gt_err_t rc;

    if (px_admin_reserved(name)) {
        px_admin_err(resp, 403, "%s is a system group", name);
        return;
    }
    if ((b = px_admin_body(req, resp)) == NULL)
        return;
    if ((old = get_groups(a, name, &g, deadline, &rc)) == NULL) {
        json_decref(b);
        px_admin_store_err(resp, rc, name);
        return;
    }
    json_decref(old);
    if (!group_fields(b, &g, resp)) {
        json_decref(b);
        return;
    }
    json_decref(b);
    if ((rc = put_group(a, &g, deadline)) != GT_OK) {
        px_admin_store_err(resp, rc, name);
        return;
    }
    GT_LOG(INFO, "admin", "group %s updated", g.name);
    px_admin_json(resp, 200, group_json(&g));
}

static void group_delete(px_admin_t *a, const char *name, px_http_resp_t *resp)
{
    int64_t deadline = px_admin_now_ms() + PX_ADMIN_WAIT_MS;
    json_t *old;
    px_aw_t *w;
    gt_err_t rc;

    if (px_admin_reserved(name)) {
        px_admin_err(resp, 403, "%s is a system group: it cannot be deleted", name);
        return;
    }
    if ((old = get_groups(a, name, NULL, deadline, &rc)) == NULL) {
        px_admin_store_err(resp, rc, name);
        return;
    }
    json_decref(old);
    if ((w = px_aw_new(1, NULL)) == NULL) {
        px_admin_err(resp, 500, "out of memory");
        return;
    }
    st_group_delete(a->store, name, done_cb, w);
    if ((rc = wait_done(w, deadline)) != GT_OK) {
        px_admin_store_err(resp, rc, name);
        return;
    }
    GT_LOG(INFO, "admin", "group %s deleted", name);
    px_admin_json(resp, 200, json_pack("{s:s}", "deleted", name));
}

/* ---- reset-offset */

/* "2026-12-03T16:00:00Z" or with ".123" milliseconds: ms since the
 * epoch, or -1. */
static int64_t parse_time(const char *s)
{
    struct tm tm;
    const char *p;
    int64_t ms = 0;

    memset(&tm, 0, sizeof(tm));
    if ((p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm)) == NULL)
        return -1;
    if (*p == '.') {
        int digits = 0;

        for (p++; *p >= '0' && *p <= '9'; p++, digits++)
            if (digits < 3)
                ms = ms * 10 + (*p - '0');
        if (digits == 0)
            return -1;
        for (; digits < 3; digits++)
            ms *= 10;
    }
    if (strcmp(p, "Z") != 0)
        return -1;
    return (int64_t)timegm(&tm) * 1000 + ms;
}

typedef struct {
    px_aw_t *w;
    uint32_t queue;
} px_rq_t;

static void got_query(void *arg, gt_err_t err, uint64_t off)
{
    px_rq_t *c = arg;
    px_aw_t *w = c->w;

    pthread_mutex_lock(&w->mu);
    if (err == GT_OK)
        json_array_set_new(w->out, c->queue, json_integer((json_int_t)off));
    pthread_mutex_unlock(&w->mu);
    free(c);
    px_aw_done(w, err);
}

static void group_reset(px_admin_t *a, const char *name, const px_http_req_t *req,
                        px_http_resp_t *resp)
{
    int64_t deadline = px_admin_now_ms() + PX_ADMIN_WAIT_MS, ts = 0;
    json_t *b = px_admin_body(req, resp), *offs, *v, *out;
    const char *topic, *to_s;
    char to[16];
    st_offset_kind_t kind;
    uint32_t nq;
    px_aw_t *w;
    gt_err_t rc;
    size_t q;

    if (b == NULL)
        return;
    topic = json_string_value(json_object_get(b, "topic"));
    to_s = json_string_value(json_object_get(b, "to"));
    snprintf(to, sizeof(to), "%s", to_s != NULL ? to_s : "");
    if (topic == NULL || to_s == NULL) {
        json_decref(b);
        px_admin_err(resp, 400, "\"topic\" and \"to\" (beginning, end or time) are required");
        return;
    }
    if (strcmp(to, "beginning") == 0) {
        kind = ST_OFFSET_BEGIN;
    } else if (strcmp(to, "end") == 0) {
        kind = ST_OFFSET_END;
    } else if (strcmp(to, "time") == 0) {
        kind = ST_OFFSET_TIME;
        v = json_object_get(b, "time");
        if (json_is_integer(v) && json_integer_value(v) >= 0)
            ts = json_integer_value(v);
        else if (json_is_string(v))
            ts = parse_time(json_string_value(v));
        else
            ts = -1;
        if (ts < 0) {
            json_decref(b);
            px_admin_err(resp, 400, "\"time\" must be ms since the epoch or "
                                    "YYYY-MM-DDTHH:MM:SS[.mmm]Z");
            return;
        }
    } else {
        json_decref(b);
        px_admin_err(resp, 400, "\"to\" must be beginning, end or time");
        return;
    }
    if (px_admin_reserved(name)) {
        json_decref(b);
        px_admin_err(resp, 403, "%s is a system group", name);
        return;
    }
    /* Checked before the name is copied into a topic-name buffer: a longer
     * one would be cut to another name. */
    if (topic[0] == '\0' || strlen(topic) > ST_NAME_MAX) {
        json_decref(b);
        px_admin_err(resp, 400, "\"topic\" must be 1..%d characters", ST_NAME_MAX);
        return;
    }
    if (px_admin_reserved(topic)) {
        px_admin_err(resp, 403, "%.255s is a system topic: its offsets are the broker's",
                     topic);
        json_decref(b);
        return;
    }
    if ((v = get_groups(a, name, NULL, deadline, &rc)) == NULL) {
        json_decref(b);
        px_admin_store_err(resp, rc, name);
        return;
    }
    json_decref(v);
    {
        /* the topic's queue count */
        char tn[ST_NAME_MAX + 1];

        snprintf(tn, sizeof(tn), "%s", topic);
        json_decref(b);
        topic = NULL;
        if ((w = px_aw_new(1, NULL)) == NULL) {
            px_admin_err(resp, 500, "out of memory");
            return;
        }
        st_topic_get(a->store, tn, px_admin_topic_count, w);
        rc = px_aw_wait(w, deadline);
        nq = (uint32_t)w->u[0];
        px_aw_put(w);
        if (rc == GT_OK && nq == 0)
            rc = GT_ENOTFOUND;
        if (rc != GT_OK) {
            px_admin_store_err(resp, rc, tn);
            return;
        }
        /* where each queue goes */
        if ((w = px_aw_new(1, NULL)) == NULL) {
            px_admin_err(resp, 500, "out of memory");
            return;
        }
        w->out = json_array();
        for (q = 0; q < nq; q++)
            json_array_append_new(w->out, json_null());
        for (q = 0; q < nq; q++) {
            px_rq_t *c = calloc(1, sizeof(*c));

            if (c == NULL)
                continue;
            c->w = w;
            c->queue = (uint32_t)q;
            px_aw_add(w, 1);
            st_offset_query(a->store, tn, (uint32_t)q, kind, ts, got_query, c);
        }
        px_aw_done(w, GT_OK);
        if ((rc = px_aw_wait(w, deadline)) != GT_OK) {
            px_aw_put(w);
            px_admin_store_err(resp, rc, tn);
            return;
        }
        if ((offs = take_out(w)) == NULL || (w = px_aw_new(1, NULL)) == NULL) {
            json_decref(offs);
            px_admin_err(resp, 500, "out of memory");
            return;
        }
        json_array_foreach(offs, q, v) {
            if (!json_is_integer(v))
                continue;
            px_aw_add(w, 1);
            st_offset_update(a->store, name, tn, (uint32_t)q, (uint64_t)json_integer_value(v),
                             done_cb, w);
        }
        px_aw_done(w, GT_OK);
        if ((rc = wait_done(w, deadline)) != GT_OK) {
            json_decref(offs);
            px_admin_store_err(resp, rc, tn);
            return;
        }
        GT_LOG(INFO, "admin", "group %s: offsets of topic %s reset to %s", name, tn, to);
        out = json_pack("{s:s, s:s, s:s, s:o}", "group", name, "topic", tn, "to", to,
                        "offsets", offs);
        px_admin_json(resp, 200, out);
    }
}

void px_admin_groups(void *arg, const px_http_req_t *req, px_http_resp_t *resp)
{
    px_admin_t *a = arg;
    const char *rest = req->url + strlen("/api/v1/groups");
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
            json_t *arr =
                get_groups(a, NULL, NULL, px_admin_now_ms() + PX_ADMIN_WAIT_MS, &rc);

            if (arr == NULL)
                px_admin_store_err(resp, rc, "groups");
            else
                px_admin_json(resp, 200, json_pack("{s:o}", "groups", arr));
        } else if (strcmp(m, "POST") == 0) {
            group_create(a, req, resp);
        } else {
            px_admin_err(resp, 405, "method not allowed (GET, POST)");
        }
        return;
    }
    if (n == 1) {
        if (strcmp(m, "GET") == 0)
            group_show(a, seg[0], resp);
        else if (strcmp(m, "PUT") == 0)
            group_update(a, seg[0], req, resp);
        else if (strcmp(m, "DELETE") == 0)
            group_delete(a, seg[0], resp);
        else
            px_admin_err(resp, 405, "method not allowed (GET, PUT, DELETE)");
        return;
    }
    if (n == 3 && strcmp(seg[1], "dlq") == 0 && strcmp(seg[2], "redrive") == 0) {
        if (strcmp(m, "POST") != 0)
            px_admin_err(resp, 405, "method not allowed (POST)");
        else
            px_admin_dlq_redrive(a, seg[0], req, resp);
        return;
    }
    if (n == 2 && strcmp(seg[1], "reset-offset") == 0) {
        if (strcmp(m, "POST") != 0)
            px_admin_err(resp, 405, "method not allowed (POST)");
        else
            group_reset(a, seg[0], req, resp);
        return;
    }
    px_admin_err(resp, 404, "no such API path");
}
