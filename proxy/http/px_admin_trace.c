/* GET /api/v1/messages/ID/trace: the message trace events of one message
 * id (px_trace.c writes them to PX_TRACE_TOPIC, keyed by the id), in time
 * order:
 *
 *   {"msg_id": ID, "enabled": true, "truncated": false,
 *    "events": [{"time_ms": ms, "seq": n, "kind": "publish", "msg_id": ...,
 *                "topic": ..., "group": ..., "client_id": ..., "addr": ...,
 *                "result": "OK", "attempt": n, "queue": q, "offset": o,
 *                "invisible_ms": ms}, ...]}
 *
 * (attempt, queue, offset and invisible_ms null where they do not apply).
 * A stored record holds up to 32 events of several ids in a compact form
 * (px_trace.c, px_trace_record; records of earlier versions: events as
 * objects, members that are empty or null left out); this keeps those of
 * ID and fills every member in.  The events of the PX_TRACE_MAX_EVENTS most recent
 * records with ID ("truncated" says when there may be more).  An id without events gives an empty list, not 404:
 * tracing may be off for its topic, or its events not written yet. */
#include <stdlib.h>
#include <string.h>

#include "px_admin_int.h"
#include "px_trace.h"

/* Every member of an event, with its value where the record leaves it out. */
static const char *const ev_strs[] = {"msg_id", "topic", "group", "client_id",
                                      "addr", "tag", "vhost", "amqp_message_id"};
static const char *const ev_nums[] = {"attempt", "queue", "offset", "invisible_ms",
                                      "body_size"};

static bool member_is(const json_t *e, const char *k, const char *v)
{
    const json_t *m = json_object_get(e, k);

    return json_is_string(m) && strcmp(json_string_value(m), v) == 0;
}

/* Appends e (borrowed) to out when it is an event of id (its message id,
 * or its AMQP message-id property), completed. */
static void add_event(json_t *out, json_t *e, const char *id)
{
    json_t *c;

    if (!json_is_object(e) ||
        !(member_is(e, "msg_id", id) || member_is(e, "amqp_message_id", id)) ||
        (c = json_copy(e)) == NULL)
        return;
    for (size_t i = 0; i < sizeof(ev_strs) / sizeof(ev_strs[0]); i++)
        if (json_object_get(c, ev_strs[i]) == NULL)
            json_object_set_new(c, ev_strs[i], json_string(""));
    if (json_object_get(c, "result") == NULL)
        json_object_set_new(c, "result", json_string("OK"));
    for (size_t i = 0; i < sizeof(ev_nums) / sizeof(ev_nums[0]); i++)
        if (json_object_get(c, ev_nums[i]) == NULL)
            json_object_set_new(c, ev_nums[i], json_null());
    json_array_append_new(out, c);
}

/* Member i of a v3 event array, an integer (-1 when it is not one). */
static json_int_t v3_int(const json_t *a, size_t i)
{
    const json_t *v = json_array_get(a, i);

    return json_is_integer(v) ? json_integer_value(v) : -1;
}

/* String index i of the record's table s, "" when out of range. */
static const char *v3_str(const json_t *s, json_int_t i)
{
    const char *v = i >= 0 ? json_string_value(json_array_get(s, (size_t)i)) : NULL;

    return v != NULL ? v : "";
}

/* Key index i of m, "" when out of range. */
static const char *v3_key(const st_message_t *m, json_int_t i)
{
    return i >= 0 && i < (json_int_t)m->nkeys ? m->keys[i] : "";
}

/* The events of id in a v3 record (px_trace.c, px_trace_record: events
 * as arrays, strings as indexes into its table "s" and its keys). */
static void add_v3(json_t *out, const json_t *r, const st_message_t *m, const char *id)
{
    static const char *const strs[] = {"topic", "group", "client_id", "addr", "result",
                                       "tag", "vhost"};
    static const char *const nums[] = {"attempt", "queue", "offset", "invisible_ms",
                                       "body_size"};
    const json_t *evs = json_object_get(r, "e"), *tab = json_object_get(r, "s");
    json_int_t t0 = json_integer_value(json_object_get(r, "t"));
    json_int_t q0 = json_integer_value(json_object_get(r, "q"));

    for (size_t j = 0; j < json_array_size(evs); j++) {
        const json_t *a = json_array_get(evs, j);
        const char *mid = v3_key(m, v3_int(a, 2)), *amid = v3_key(m, v3_int(a, 3));
        json_t *e;

        if (!json_is_array(a) || (strcmp(mid, id) != 0 && strcmp(amid, id) != 0) ||
            (e = json_object()) == NULL)
            continue;
        json_object_set_new(e, "time_ms", json_integer(t0 + v3_int(a, 0)));
        json_object_set_new(e, "seq", json_integer(q0 + (json_int_t)j));
        json_object_set_new(e, "kind", json_string(px_trace_kind_name((long)v3_int(a, 1))));
        json_object_set_new(e, "msg_id", json_string(mid));
        json_object_set_new(e, "amqp_message_id", json_string(amid));
        for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
            json_object_set_new(e, strs[i], json_string(v3_str(tab, v3_int(a, 4 + i))));
        for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
            json_int_t v = v3_int(a, 11 + i);

            json_object_set_new(e, nums[i], v >= 0 ? json_integer(v) : json_null());
        }
        json_array_append_new(out, e);
    }
}

static void got_events(void *arg, gt_err_t err, const st_message_t *m, size_t n,
                       uint64_t next)
{
    px_aw_t *w = arg;

    (void)next;
    if (err == GT_ENOTFOUND) /* no trace topic: tracing never ran */
        err = GT_OK;
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; err == GT_OK && i < n; i++) {
        /* {"v":3,...} (px_trace.c), {"v":2,"events":[...]} or one event
         * per record (what earlier versions wrote) */
        json_t *r = json_loadb(m[i].body, m[i].body_len, 0, NULL);
        json_t *evs = json_object_get(r, "events");

        if (json_integer_value(json_object_get(r, "v")) == 3) {
            add_v3(w->out, r, &m[i], w->group.name);
        } else if (json_is_array(evs)) {
            for (size_t j = 0; j < json_array_size(evs); j++)
                add_event(w->out, json_array_get(evs, j), w->group.name);
        } else {
            add_event(w->out, r, w->group.name);
        }
        json_decref(r);
    }
    w->u[0] = n;
    pthread_mutex_unlock(&w->mu);
    px_aw_done(w, err);
}

static int64_t ev_int(const json_t *e, const char *k)
{
    return (int64_t)json_integer_value(json_object_get(e, k));
}

static int ev_cmp(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    int64_t tx = ev_int(x, "time_ms"), ty = ev_int(y, "time_ms");

    if (tx != ty)
        return tx < ty ? -1 : 1;
    tx = ev_int(x, "seq");
    ty = ev_int(y, "seq");
    return tx < ty ? -1 : tx > ty;
}

void px_admin_trace(px_admin_t *a, const char *id, const px_http_req_t *req,
                    px_http_resp_t *resp)
{
    int64_t deadline = px_admin_now_ms() + PX_ADMIN_WAIT_MS;
    json_t *evs, *sorted, **v;
    size_t n, found;
    px_aw_t *w;
    gt_err_t rc;

    if (strcmp(req->method, "GET") != 0) {
        px_admin_err(resp, 405, "method not allowed (GET)");
        return;
    }
    if (id[0] == '\0' || strlen(id) >= ST_MSG_ID_MAX) {
        px_admin_err(resp, 400, "bad message id");
        return;
    }
    if ((w = px_aw_new(1, NULL)) == NULL || (w->out = json_array()) == NULL) {
        if (w != NULL) {
            px_aw_done(w, GT_OK);
            px_aw_put(w);
        }
        px_admin_err(resp, 500, "out of memory");
        return;
    }
    snprintf(w->group.name, sizeof(w->group.name), "%s", id); /* for got_events */
    st_lookup_key(a->store, PX_TRACE_TOPIC, id, PX_TRACE_MAX_EVENTS, got_events, w);
    rc = px_aw_wait(w, deadline);
    pthread_mutex_lock(&w->mu);
    evs = json_deep_copy(w->out);
    found = (size_t)w->u[0];
    pthread_mutex_unlock(&w->mu);
    px_aw_put(w);
    if (rc != GT_OK || evs == NULL) {
        json_decref(evs);
        px_admin_store_err(resp, rc != GT_OK ? rc : GT_ENOMEM, "reading the trace");
        return;
    }
    n = json_array_size(evs);
    sorted = json_array();
    if ((v = calloc(n ? n : 1, sizeof(*v))) == NULL || sorted == NULL) {
        free(v);
        json_decref(evs);
        json_decref(sorted);
        px_admin_err(resp, 500, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++)
        v[i] = json_array_get(evs, i);
    qsort(v, n, sizeof(*v), ev_cmp);
    for (size_t i = 0; i < n; i++)
        json_array_append(sorted, v[i]);
    free(v);
    json_decref(evs);
    px_admin_json(resp, 200,
                  json_pack("{s:s, s:b, s:b, s:o}", "msg_id", id, "enabled",
                            px_trace_enabled(a->cfg), "truncated",
                            found >= PX_TRACE_MAX_EVENTS, "events", sorted));
}
