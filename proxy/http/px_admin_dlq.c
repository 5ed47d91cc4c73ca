/* POST /api/v1/groups/G/dlq/redrive {max?}: moves up to max (default
 * 100, at most 10000) dead letters of group G back to their topic.
 *
 * The messages of %DLQ%G are taken with G itself as the consumer of the
 * DLQ topic (its offsets there start at the beginning the first time):
 * each popped copy is appended to the topic its RETRY_TOPIC property
 * names, with its original message id (ORIGIN_MESSAGE_ID) and without
 * those two properties, and the DLQ delivery is acked once the append is
 * durable.  A message that cannot be moved (no RETRY_TOPIC, the topic is
 * gone) is given back to the DLQ (st_release) and counted as failed; a
 * round that moves nothing ends the redrive.  Every group of the topic
 * gets the moved messages again, as new messages. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt_log.h"
#include "px_admin_int.h"

#define PX_REDRIVE_DEFAULT 100
#define PX_REDRIVE_MAX 10000
#define PX_REDRIVE_INVISIBLE_MS 60000
#define PX_REDRIVE_ERRORS_MAX 16

/* u[0]: popped, u[1]: moved, u[2]: failed; out: the first errors. */
typedef struct {
    px_aw_t *w;
    st_store_t *store;
    char group[ST_NAME_MAX + 1];
    char dlq[ST_NAME_MAX + 1];
    char handle[ST_HANDLE_MAX];
    char msg_id[ST_MSG_ID_MAX];
} px_rd_t;

static void rd_note(px_aw_t *w, int which, const char *msg_id, const char *why)
{
    pthread_mutex_lock(&w->mu);
    w->u[which]++;
    if (why != NULL && json_array_size(w->out) < PX_REDRIVE_ERRORS_MAX)
        json_array_append_new(w->out, json_pack("{s:s, s:s}", "msg_id", msg_id, "error", why));
    pthread_mutex_unlock(&w->mu);
}

static void rd_released(void *arg, gt_err_t err)
{
    px_rd_t *c = arg;

    (void)err;
    px_aw_done(c->w, GT_OK);
    free(c);
}

/* Counts a failure and gives the message back to the DLQ. */
static void rd_fail(px_rd_t *c, const char *why)
{
    rd_note(c->w, 2, c->msg_id, why);
    st_release(c->store, c->group, c->dlq, c->handle, rd_released, c);
}

static void rd_acked(void *arg, gt_err_t err)
{
    px_rd_t *c = arg;

    /* moved either way; an ack that failed leaves a duplicate in the DLQ */
    rd_note(c->w, 1, c->msg_id, err != GT_OK ? "moved, but the DLQ ack failed" : NULL);
    px_aw_done(c->w, GT_OK);
    free(c);
}

static void rd_appended(void *arg, gt_err_t err, const st_append_item_t *items, size_t n)
{
    px_rd_t *c = arg;

    (void)items;
    (void)n;
    if (err != GT_OK) {
        rd_fail(c, gt_err_str(err));
        return;
    }
    st_ack(c->store, c->group, c->dlq, c->handle, rd_acked, c);
}

static const char *prop_of(const st_message_t *m, const char *key)
{
    for (uint32_t i = 0; i < m->nprops; i++)
        if (m->props[i].key != NULL && strcmp(m->props[i].key, key) == 0)
            return m->props[i].value;
    return NULL;
}

/* One popped dead letter: append it to its topic (pending + 1). */
static void rd_one(px_aw_t *w, const char *group, const char *dlq, const st_popped_t *p)
{
    const char *topic = prop_of(&p->msg, "RETRY_TOPIC");
    const char *origin = prop_of(&p->msg, "ORIGIN_MESSAGE_ID");
    px_rd_t *c = calloc(1, sizeof(*c));
    st_message_t m;

    if (c == NULL)
        return; /* stays invisible for a while, then back in the DLQ */
    px_aw_add(w, 1);
    c->w = w;
    c->store = w->store;
    snprintf(c->group, sizeof(c->group), "%s", group);
    snprintf(c->dlq, sizeof(c->dlq), "%s", dlq);
    snprintf(c->handle, sizeof(c->handle), "%s", p->handle);
    snprintf(c->msg_id, sizeof(c->msg_id), "%s", p->msg.msg_id != NULL ? p->msg.msg_id : "");
    pthread_mutex_lock(&w->mu);
    w->u[0]++;
    pthread_mutex_unlock(&w->mu);
    if (topic == NULL || topic[0] == '\0') {
        rd_fail(c, "no RETRY_TOPIC property");
        return;
    }
    m = p->msg;
    m.nprops = 0;
    for (uint32_t i = 0; i < p->msg.nprops; i++)
        if (p->msg.props[i].key == NULL ||
            (strcmp(p->msg.props[i].key, "RETRY_TOPIC") != 0 &&
             strcmp(p->msg.props[i].key, "ORIGIN_MESSAGE_ID") != 0))
            m.props[m.nprops++] = p->msg.props[i];
    m.msg_id = origin != NULL && origin[0] != '\0' ? origin : p->msg.msg_id;
    m.queue_id = ST_QUEUE_ANY;
    m.delivery_ts_ms = 0;
    m.tx_half = false;
    m.topic = NULL;
    st_append(w->store, topic, &m, 1, rd_appended, c);
}

typedef struct {
    px_aw_t *w;
    char group[ST_NAME_MAX + 1];
    char dlq[ST_NAME_MAX + 1];
} px_rpop_t;

static void rd_popped(void *arg, gt_err_t err, const st_popped_t *msgs, size_t n)
{
    px_rpop_t *c = arg;

    for (size_t i = 0; err == GT_OK && i < n; i++)
        rd_one(c->w, c->group, c->dlq, &msgs[i]);
    px_aw_done(c->w, err);
    free(c);
}

/* ---- G's offsets on the DLQ: from its beginning the first time */

typedef struct {
    px_aw_t *w;
    st_store_t *store;
    char group[ST_NAME_MAX + 1];
    char dlq[ST_NAME_MAX + 1];
    uint32_t queue;
} px_rinit_t;

static void init_set(void *arg, gt_err_t err)
{
    px_rinit_t *c = arg;

    px_aw_done(c->w, err);
    free(c);
}

static void init_begin(void *arg, gt_err_t err, uint64_t off)
{
    px_rinit_t *c = arg;

    if (err != GT_OK) {
        init_set(c, err);
        return;
    }
    st_offset_update(c->store, c->group, c->dlq, c->queue, off, init_set, c);
}

static void init_got(void *arg, gt_err_t err, uint64_t off)
{
    px_rinit_t *c = arg;

    (void)off;
    if (err == GT_ENOTFOUND) {
        st_offset_query(c->store, c->dlq, c->queue, ST_OFFSET_BEGIN, 0, init_begin, c);
        return;
    }
    init_set(c, err);
}

static px_aw_t *rd_waiter(px_admin_t *a)
{
    px_aw_t *w = px_aw_new(1, NULL);

    if (w != NULL) {
        w->out = json_array();
        w->store = a->store;
    }
    return w;
}

void px_admin_dlq_redrive(px_admin_t *a, const char *group, const px_http_req_t *req,
                          px_http_resp_t *resp)
{
    int64_t deadline = px_admin_now_ms() + PX_ADMIN_WAIT_MS;
    char dlq[ST_NAME_MAX + 1];
    uint64_t max = PX_REDRIVE_DEFAULT, popped = 0, moved = 0, failed = 0;
    json_t *b, *v, *errors = json_array();
    uint32_t nq;
    px_aw_t *w;
    gt_err_t rc = GT_OK;

    if (req->body_len > 0) {
        if ((b = px_admin_body(req, resp)) == NULL)
            goto out;
        v = json_object_get(b, "max");
        if (v != NULL && (!json_is_integer(v) || json_integer_value(v) < 1 ||
                          json_integer_value(v) > PX_REDRIVE_MAX)) {
            json_decref(b);
            px_admin_err(resp, 400, "\"max\" must be an integer 1..%d", PX_REDRIVE_MAX);
            goto out;
        }
        if (v != NULL)
            max = (uint64_t)json_integer_value(v);
        json_decref(b);
    }
    if (px_admin_reserved(group) ||
        (size_t)snprintf(dlq, sizeof(dlq), "%s%s", ST_DLQ_PREFIX, group) >= sizeof(dlq)) {
        px_admin_err(resp, 403, "%s has no dead-letter queue of its own", group);
        goto out;
    }
    /* the group, then its DLQ topic's queues */
    if ((rc = px_admin_group_check(a, group, deadline)) != GT_OK) {
        px_admin_store_err(resp, rc, group);
        goto out;
    }
    if ((w = px_aw_new(1, NULL)) == NULL)
        goto oom;
    st_topic_get(a->store, dlq, px_admin_topic_count, w);
    rc = px_aw_wait(w, deadline);
    nq = (uint32_t)w->u[0];
    px_aw_put(w);
    if (rc == GT_ENOTFOUND || (rc == GT_OK && nq == 0)) {
        rc = GT_OK; /* nothing was ever dead-lettered */
        goto answer;
    }
    if (rc != GT_OK)
        goto store_err;
    if ((w = px_aw_new(1, NULL)) == NULL)
        goto oom;
    for (uint32_t q = 0; q < nq; q++) {
        px_rinit_t *c = calloc(1, sizeof(*c));

        if (c == NULL)
            continue;
        c->w = w;
        c->store = a->store;
        c->queue = q;
        snprintf(c->group, sizeof(c->group), "%s", group);
        snprintf(c->dlq, sizeof(c->dlq), "%s", dlq);
        px_aw_add(w, 1);
        st_offset_get(a->store, group, dlq, q, init_got, c);
    }
    px_aw_done(w, GT_OK);
    rc = px_aw_wait(w, deadline);
    px_aw_put(w);
    if (rc != GT_OK)
        goto store_err;
    /* rounds of pops until max, an empty pop or a round that moved nothing */
    while (popped < max) {
        uint64_t round_moved;
        px_rpop_t *c = calloc(1, sizeof(*c));
        st_pop_req_t pr = {.group = group, .topic = dlq, .queue_id = ST_QUEUE_ANY,
                           .max = (uint32_t)(max - popped < ST_POP_MAX ? max - popped
                                                                       : ST_POP_MAX),
                           .invisible_ms = PX_REDRIVE_INVISIBLE_MS};

        if (c == NULL || (w = rd_waiter(a)) == NULL) {
            free(c);
            goto oom;
        }
        c->w = w;
        snprintf(c->group, sizeof(c->group), "%s", group);
        snprintf(c->dlq, sizeof(c->dlq), "%s", dlq);
        st_pop(a->store, &pr, rd_popped, c);
        rc = px_aw_wait(w, deadline);
        pthread_mutex_lock(&w->mu);
        popped += w->u[0];
        moved += round_moved = w->u[1];
        failed += w->u[2];
        json_array_extend(errors, w->out);
        pthread_mutex_unlock(&w->mu);
        if (rc != GT_OK || w->u[0] == 0 || round_moved == 0) {
            px_aw_put(w);
            break;
        }
        px_aw_put(w);
    }
    if (rc != GT_OK && moved == 0)
        goto store_err;
    if (moved > 0)
        GT_LOG(INFO, "admin", "group %s: %llu dead letters moved back to their topics", group,
               (unsigned long long)moved);
answer:
    px_admin_json(resp, 200,
                  json_pack("{s:s, s:I, s:I, s:O, s:b}", "group", group, "moved",
                            (json_int_t)moved, "failed", (json_int_t)failed, "errors", errors,
                            "max_reached", popped >= max));
    goto out;
store_err:
    px_admin_store_err(resp, rc, dlq);
    goto out;
oom:
    px_admin_err(resp, 500, "out of memory");
out:
    json_decref(errors);
}
