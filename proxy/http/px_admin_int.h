/* Internal header of the admin API (px_admin*.c): the waiter that turns
 * the store's callbacks into a bounded wait, JSON answers, path parsing. */
#ifndef PX_ADMIN_INT_H
#define PX_ADMIN_INT_H

#include <pthread.h>
#include <stdint.h>

#include <jansson.h>

#include "px_admin.h"
#include "px_svc_int.h"
#include "px_users.h"

struct px_admin {
    px_http_t *http;
    px_svc_t *svc;
    st_store_t *store;
    const cfg_t *cfg;
    px_users_t *users; /* /api/v1/users (NULL: 503) */
    /* Test only (GANTRY_TEST_ADMIN_STALL_MS): every request first waits
     * this long, as behind a slow store (admin_stall.test.mjs). */
    int test_stall_ms;
    /* px_admin_set_amqp: amqp_mu guards amqp and amqp_calls (calls in
     * progress, waited for by a change). */
    pthread_mutex_t amqp_mu;
    pthread_cond_t amqp_cv;
    px_admin_amqp_ops_t amqp;
    int amqp_calls;
    /* px_admin_set_cluster: the store router (st_place.h); NULL: not a
     * store cluster.  Set before serving. */
    st_store_t *cluster;
};

/* A wait for `pending` store callbacks.  Two references: the handler's
 * and the callbacks' (dropped by the last one), so a handler that gave
 * up (timeout) leaves the waiter to the callbacks still due.  `out` and
 * `u` are the callbacks' to fill, under mu. */
typedef struct px_aw {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    int pending;
    gt_err_t err;       /* the first error a callback reported */
    json_t *out;
    uint64_t u[4];
    st_group_t group;   /* one group's settings, when asked for (or
                           the name callbacks work on) */
    st_store_t *store;  /* for callbacks that call the store again */
    void *ctx;          /* the handler's, read-only for callbacks */
} px_aw_t;

px_aw_t *px_aw_new(int pending, void *ctx);
/* Adds to pending before the callbacks it counts are started. */
void px_aw_add(px_aw_t *w, int n);
/* One callback done (err GT_OK or its error): call without mu. */
void px_aw_done(px_aw_t *w, gt_err_t err);
/* Waits until pending is 0 or deadline_ms (wall clock) passes: GT_OK,
 * GT_ETIMEDOUT, or the first callback error. */
gt_err_t px_aw_wait(px_aw_t *w, int64_t deadline_ms);
/* The handler lets go of w (after reading what it needs). */
void px_aw_put(px_aw_t *w);

int64_t px_admin_now_ms(void);

/* Answers: json (stolen) with code; an error {"error": text}. */
void px_admin_json(px_http_resp_t *r, unsigned code, json_t *j);
void px_admin_err(px_http_resp_t *r, unsigned code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The HTTP status for a store error. */
unsigned px_admin_code(gt_err_t err);
/* Answers a store error err while doing `what`. */
void px_admin_store_err(px_http_resp_t *r, gt_err_t err, const char *what);

/* Splits the path after a route's prefix into %-decoded segments (each at
 * most ST_NAME_MAX bytes, no NUL).  Returns the count, or -1 for a bad
 * segment or more than max. */
#define PX_SEG_MAX 6
typedef char px_seg_t[ST_NAME_MAX + 1];
int px_admin_split(const char *path, px_seg_t *segs, int max);
/* %-decodes a query value into out[cap]; false when bad or too long. */
bool px_admin_unescape(const char *in, char *out, size_t cap);
/* The request body as a JSON object; NULL after answering 400. */
json_t *px_admin_body(const px_http_req_t *req, px_http_resp_t *resp);

/* Replaces, in place, the values of secret keys (password,
 * password_hash, secret, secret_key, token, tokens) in cfg_print's YAML
 * with asterisks. */
void px_admin_mask_secrets(char *yaml);

/* Topics, groups: names and kinds. */
const char *px_admin_type_name(st_topic_type_t t);
bool px_admin_type_parse(const char *s, st_topic_type_t *out);
/* A %SYS%, %DLQ% or %RETRY% name. */
bool px_admin_reserved(const char *name);
/* A queue's lag: messages after the committed offset.  The end and the
 * committed offset are read by two store calls, so a consumer that moves
 * on in between (or a topic deleted and created again) can leave the
 * committed one beyond the end read: no lag then, not a wrapped one. */
static inline uint64_t px_admin_lag(uint64_t max_offset, uint64_t committed)
{
    return committed < max_offset ? max_offset - committed : 0;
}

/* Messages (px_admin_msg.c): one store message as JSON; body_max caps
 * the body bytes shown. */
json_t *px_admin_msg_json(const st_message_t *m, size_t body_max);

/* The route handlers. */
void px_admin_topics(void *arg, const px_http_req_t *req, px_http_resp_t *resp);
void px_admin_groups(void *arg, const px_http_req_t *req, px_http_resp_t *resp);
void px_admin_clients(void *arg, const px_http_req_t *req, px_http_resp_t *resp);
void px_admin_messages(void *arg, const px_http_req_t *req, px_http_resp_t *resp);
void px_admin_users(void *arg, const px_http_req_t *req, px_http_resp_t *resp);
void px_admin_cluster(void *arg, const px_http_req_t *req, px_http_resp_t *resp);
/* GET /api/v1/messages/ID/trace (px_admin_trace.c). */
void px_admin_trace(px_admin_t *a, const char *id, const px_http_req_t *req,
                    px_http_resp_t *resp);
/* GET /api/v1/topics/T/queues/Q/offsets/O (px_admin_msg.c). */
void px_admin_msg_at(px_admin_t *a, const char *topic, const char *queue,
                     const char *offset, const px_http_req_t *req,
                     px_http_resp_t *resp);
/* st_topic_cb for a waiter: u[0] = the queue count (0: none found). */
void px_admin_topic_count(void *arg, gt_err_t err, const st_topic_t *t, size_t n);
/* GT_OK when group name exists, GT_ENOTFOUND, or the store's error. */
gt_err_t px_admin_group_check(px_admin_t *a, const char *name, int64_t deadline);
/* POST /api/v1/groups/G/dlq/redrive (px_admin_dlq.c). */
void px_admin_dlq_redrive(px_admin_t *a, const char *group, const px_http_req_t *req,
                          px_http_resp_t *resp);
/* Topic and group lists, for handlers that walk them: a JSON array of
 * names (NULL on error, err set). */
json_t *px_admin_names(px_admin_t *a, bool groups, int64_t deadline, gt_err_t *err);

#endif
