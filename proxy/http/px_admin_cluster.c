/* /api/v1/cluster: the store tier's replica sets and topic placement
 * (store.mode cluster, store-remote/st_place.h); POST
 * /api/v1/cluster/rebalance moves the write side of topics to the sets
 * that write the fewest. */
#include <string.h>

#include "px_admin_int.h"
#include "st_place.h"

void px_admin_set_cluster(px_admin_t *a, st_store_t *router)
{
    a->cluster = router;
}

static void add_topic(void *arg, const char *topic, const uint32_t *sets, size_t n)
{
    json_t *o = arg, *v = json_array();
    for (size_t i = 0; v && i < n; i++)
        json_array_append_new(v, json_integer(sets[i]));
    if (v)
        json_object_set_new(o, topic, v);
}

static json_t *cluster_json(st_store_t *router)
{
    st_place_set_t sets[ST_SHARD_MAX];
    size_t n = st_place_sets(router, sets, ST_SHARD_MAX);
    json_t *placement = json_object(), *arr = json_array();
    if (!placement || !arr) {
        json_decref(placement);
        json_decref(arr);
        return NULL;
    }
    st_place_topics(router, add_topic, placement);
    for (size_t i = 0; i < n; i++) {
        json_t *names = json_array();
        const char *t;
        json_t *v;
        json_object_foreach(placement, t, v) {
            if (json_integer_value(json_array_get(v, 0)) == (json_int_t)sets[i].id)
                json_array_append_new(names, json_string(t));
        }
        json_array_append_new(arr, json_pack("{s:I,s:s,s:s,s:s,s:b,s:b,s:I,s:o}",
                                             "id", (json_int_t)sets[i].id,
                                             "leader", sets[i].leader,
                                             "members", sets[i].members,
                                             "isr", sets[i].isr,
                                             "open", sets[i].open,
                                             "ready", sets[i].ready,
                                             "topics", (json_int_t)sets[i].topics,
                                             "topic_names", names));
    }
    return json_pack("{s:o,s:o}", "replica_sets", arr, "placement", placement);
}

static void rebalanced(void *arg, gt_err_t err, size_t moved)
{
    px_aw_t *w = arg;
    pthread_mutex_lock(&w->mu);
    w->u[0] = moved;
    pthread_mutex_unlock(&w->mu);
    px_aw_done(w, err);
}

void px_admin_cluster(void *arg, const px_http_req_t *req, px_http_resp_t *resp)
{
    px_admin_t *a = arg;
    px_seg_t segs[PX_SEG_MAX];
    int n = px_admin_split(req->url + strlen("/api/v1/cluster"), segs, PX_SEG_MAX);

    if (a->cluster == NULL) {
        px_admin_err(resp, 404, "not a store cluster (store.mode is not cluster)");
        return;
    }
    if (n < 0 || n > 1 || (n == 1 && strcmp(segs[0], "rebalance") != 0)) {
        px_admin_err(resp, n < 0 ? 400 : 404, n < 0 ? "bad path" : "no such API path");
        return;
    }
    if (n == 0) {
        json_t *j;
        if (strcmp(req->method, "GET") != 0) {
            px_admin_err(resp, 405, "method not allowed (GET)");
            return;
        }
        if ((j = cluster_json(a->cluster)) == NULL) {
            px_admin_err(resp, 500, "out of memory");
            return;
        }
        px_admin_json(resp, 200, j);
        return;
    }
    if (strcmp(req->method, "POST") != 0) {
        px_admin_err(resp, 405, "method not allowed (POST)");
        return;
    }
    px_aw_t *w = px_aw_new(1, NULL);
    if (w == NULL) {
        px_admin_err(resp, 500, "out of memory");
        return;
    }
    st_place_rebalance(a->cluster, rebalanced, w);
    gt_err_t rc = px_aw_wait(w, px_admin_now_ms() + PX_ADMIN_WAIT_MS);
    pthread_mutex_lock(&w->mu);
    uint64_t moved = w->u[0];
    pthread_mutex_unlock(&w->mu);
    px_aw_put(w);
    if (rc != GT_OK) {
        px_admin_store_err(resp, rc, "rebalance");
        return;
    }
    json_t *j = cluster_json(a->cluster);
    if (j)
        json_object_set_new(j, "moved", json_integer((json_int_t)moved));
    px_admin_json(resp, 200, j ? j : json_pack("{s:I}", "moved", (json_int_t)moved));
}
