/* /api/v1/users: the users and ACL entries of RocketMQ and AMQP clients
 * (px_users.c keeps them).  Secrets are taken, never answered. */
#include <string.h>

#include "px_admin_int.h"

void px_admin_users(void *arg, const px_http_req_t *req, px_http_resp_t *resp)
{
    px_admin_t *a = arg;
    px_seg_t segs[PX_SEG_MAX];
    int n = px_admin_split(req->url + strlen("/api/v1/users"), segs, PX_SEG_MAX);
    int64_t deadline = px_admin_now_ms() + PX_ADMIN_WAIT_MS;
    char err[512];
    gt_err_t rc;
    json_t *b, *j;

    if (a->users == NULL) {
        px_admin_err(resp, 503, "users are not available");
        return;
    }
    if (n < 0 || n > 1) {
        px_admin_err(resp, n < 0 ? 400 : 404, n < 0 ? "bad path" : "no such API path");
        return;
    }
    if (n == 0 && strcmp(req->method, "GET") == 0) {
        if ((j = px_users_list(a->users, NULL)) == NULL) {
            px_admin_err(resp, 500, "out of memory");
            return;
        }
        px_admin_json(resp, 200, json_pack("{s:o}", "users", j));
        return;
    }
    if (n == 0 && strcmp(req->method, "POST") == 0) {
        const char *name;

        if ((b = px_admin_body(req, resp)) == NULL)
            return;
        name = json_string_value(json_object_get(b, "access_key"));
        if (name == NULL) {
            json_decref(b);
            px_admin_err(resp, 400, "\"access_key\" is required");
            return;
        }
        rc = px_users_put(a->users, name, b, true, deadline, err, sizeof(err));
        if (rc != GT_OK)
            px_admin_err(resp, px_admin_code(rc), "%s", err);
        else
            px_admin_json(resp, 201, px_users_list(a->users, name));
        json_decref(b); /* name is b's */
        return;
    }
    if (n == 0) {
        px_admin_err(resp, 405, "method not allowed (GET, POST)");
        return;
    }
    if (strcmp(req->method, "GET") == 0) {
        if ((j = px_users_list(a->users, segs[0])) == NULL) {
            px_admin_err(resp, 404, "no user %s", segs[0]);
            return;
        }
        px_admin_json(resp, 200, j);
        return;
    }
    if (strcmp(req->method, "PUT") == 0) {
        if ((b = px_admin_body(req, resp)) == NULL)
            return;
        rc = px_users_put(a->users, segs[0], b, false, deadline, err, sizeof(err));
        json_decref(b);
        if (rc != GT_OK) {
            px_admin_err(resp, rc == GT_EUNSUPPORTED ? 403 : px_admin_code(rc), "%s", err);
            return;
        }
        px_admin_json(resp, 200, px_users_list(a->users, segs[0]));
        return;
    }
    if (strcmp(req->method, "DELETE") == 0) {
        rc = px_users_delete(a->users, segs[0], deadline, err, sizeof(err));
        if (rc != GT_OK) {
            px_admin_err(resp, rc == GT_EUNSUPPORTED ? 403 : px_admin_code(rc), "%s", err);
            return;
        }
        px_admin_json(resp, 200, json_pack("{s:s}", "deleted", segs[0]));
        return;
    }
    px_admin_err(resp, 405, "method not allowed (GET, PUT, DELETE)");
}
