/* Users and ACL entries changed through the admin API: stored as durable
 * metadata records, merged with the config's, checked by the config
 * loader and applied through a hook.  See px_users.h. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "gt_log.h"
#include "px_users.h"

struct px_users {
    pthread_mutex_t mu;
    st_store_t *store;
    const cfg_t *cfg;
    json_t *api; /* access key -> {secret_key, admin, acls}; under mu */
    px_users_apply_fn apply;
    void *apply_arg;
};

/* ---- waiting for the store */

typedef struct px_uw {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    bool done;
    gt_err_t err;
    json_t *recs; /* listing: key -> parsed value */
    bool more;
    char after[ST_META_KEY_MAX + 1];
    uint32_t after_len;
} px_uw_t;

static px_uw_t *px_uw_new(void)
{
    px_uw_t *w = calloc(1, sizeof(*w));

    if (w == NULL)
        return NULL;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->refs = 2;
    return w;
}

static void px_uw_unref(px_uw_t *w)
{
    int left;

    pthread_mutex_lock(&w->mu);
    left = --w->refs;
    pthread_mutex_unlock(&w->mu);
    if (left == 0) {
        json_decref(w->recs);
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
        free(w);
    }
}

static void px_uw_finish(px_uw_t *w, gt_err_t err)
{
    pthread_mutex_lock(&w->mu);
    w->err = err;
    w->done = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    px_uw_unref(w);
}

static gt_err_t px_uw_wait(px_uw_t *w, int64_t deadline_ms)
{
    struct timespec ts = {.tv_sec = deadline_ms / 1000,
                          .tv_nsec = (deadline_ms % 1000) * 1000000};
    gt_err_t rc;

    pthread_mutex_lock(&w->mu);
    while (!w->done && pthread_cond_timedwait(&w->cv, &w->mu, &ts) == 0)
        ;
    rc = w->done ? w->err : GT_ETIMEDOUT;
    pthread_mutex_unlock(&w->mu);
    return rc;
}

static void px_uw_done_cb(void *arg, gt_err_t err)
{
    px_uw_finish(arg, err);
}

static void px_uw_list_cb(void *arg, gt_err_t err, const st_meta_rec_t *recs, size_t n,
                          bool more)
{
    px_uw_t *w = arg;

    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; err == GT_OK && i < n; i++) {
        char key[ST_META_KEY_MAX + 1];
        json_t *v;

        if (recs[i].key_len > ST_META_KEY_MAX)
            continue;
        memcpy(key, recs[i].key, recs[i].key_len);
        key[recs[i].key_len] = '\0';
        v = json_loadb(recs[i].value, recs[i].value_len, 0, NULL);
        if (v == NULL || !json_is_object(v) || strlen(key) != recs[i].key_len) {
            GT_LOG(WARN, "admin", "stored user record %.64s is not readable; ignored", key);
            json_decref(v);
            continue;
        }
        json_object_set_new(w->recs, key, v);
    }
    w->more = err == GT_OK && more && n > 0;
    if (w->more) {
        memcpy(w->after, recs[n - 1].key, recs[n - 1].key_len);
        w->after_len = recs[n - 1].key_len;
    }
    pthread_mutex_unlock(&w->mu);
    px_uw_finish(w, err);
}

static int64_t px_users_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Every stored user (pages of ST_META_LIST_MAX) into *out. */
static gt_err_t px_users_load(px_users_t *u, int64_t deadline, json_t **out)
{
    json_t *all = json_object();
    char after[ST_META_KEY_MAX + 1];
    uint32_t after_len = 0;
    bool more = true;
    gt_err_t rc = GT_OK;

    if (all == NULL)
        return GT_ENOMEM;
    while (more && rc == GT_OK) {
        px_uw_t *w = px_uw_new();
        st_meta_list_req_t req;

        if (w == NULL || (w->recs = json_object()) == NULL) {
            if (w != NULL) {
                px_uw_unref(w);
                px_uw_unref(w);
            }
            rc = GT_ENOMEM;
            break;
        }
        memset(&req, 0, sizeof(req));
        req.ns = PX_USERS_NS;
        req.after = after_len > 0 ? after : NULL;
        req.after_len = after_len;
        st_meta_list(u->store, &req, px_uw_list_cb, w);
        rc = px_uw_wait(w, deadline);
        if (rc == GT_OK) {
            pthread_mutex_lock(&w->mu);
            json_object_update(all, w->recs);
            more = w->more;
            memcpy(after, w->after, w->after_len);
            after_len = w->after_len;
            pthread_mutex_unlock(&w->mu);
        }
        px_uw_unref(w);
    }
    if (rc != GT_OK) {
        json_decref(all);
        return rc;
    }
    *out = all;
    return GT_OK;
}

/* ---- the effective auth section */

static json_t *px_strlist_json(const cfg_strlist_t *l)
{
    json_t *a = json_array();

    for (size_t i = 0; a != NULL && i < l->n; i++)
        json_array_append_new(a, json_string(l->v[i]));
    return a;
}

static bool px_config_user(const px_users_t *u, const char *name)
{
    for (size_t i = 0; i < u->cfg->auth.users.n; i++)
        if (strcmp(u->cfg->auth.users.v[i].access_key, name) == 0)
            return true;
    return false;
}

/* One ACL entry of the config as JSON (the API's form, user left out). */
static json_t *px_acl_json(const cfg_auth_acl_t *a)
{
    return json_pack("{s:s, s:o, s:s, s:o}", "resource", a->resource, "actions",
                     px_strlist_json(&a->actions), "decision", a->deny ? "Deny" : "Allow",
                     "source_ips", px_strlist_json(&a->source_ips));
}

/* Builds the auth section of config users + api (API users; those the
 * config declares are skipped) and loads it with the config's checks into
 * *eff (cfg_init'ed here; cfg_free it).  GT_EINVAL with the loader's
 * message (which names keys, never secret values). */
static gt_err_t px_users_effective(const px_users_t *u, const json_t *api, cfg_t *eff,
                                   char *err, size_t errlen)
{
    const cfg_auth_t *ca = &u->cfg->auth;
    json_t *users = json_array(), *acls = json_array(), *doc;
    const char *name;
    json_t *rec;
    char *text, msg[512];
    gt_err_t rc;

    for (size_t i = 0; users != NULL && i < ca->users.n; i++)
        json_array_append_new(users, json_pack("{s:s, s:s, s:b}", "access_key",
                                               ca->users.v[i].access_key, "secret_key",
                                               ca->users.v[i].secret_key, "admin",
                                               ca->users.v[i].admin));
    for (size_t i = 0; acls != NULL && i < ca->acls.n; i++) {
        json_t *a = px_acl_json(&ca->acls.v[i]);

        if (a != NULL)
            json_object_set_new(a, "user", json_string(ca->acls.v[i].user));
        json_array_append_new(acls, a);
    }
    json_object_foreach((json_t *)api, name, rec) {
        json_t *ra = json_object_get(rec, "acls"), *a;
        size_t i;

        if (px_config_user(u, name))
            continue;
        json_array_append_new(users, json_pack("{s:s, s:O, s:O}", "access_key", name,
                                               "secret_key", json_object_get(rec, "secret_key"),
                                               "admin", json_object_get(rec, "admin")));
        json_array_foreach(ra, i, a) {
            json_t *c = json_deep_copy(a);

            if (c != NULL)
                json_object_set_new(c, "user", json_string(name));
            json_array_append_new(acls, c);
        }
    }
    doc = json_pack("{s:{s:b, s:i, s:o, s:o, s:o}}", "auth", "enabled", ca->enabled,
                    "max_clock_skew_s", ca->max_clock_skew_s, "admin_tokens",
                    px_strlist_json(&ca->admin_tokens), "users", users, "acls", acls);
    text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (text == NULL) {
        snprintf(err, errlen, "out of memory");
        return GT_ENOMEM;
    }
    cfg_init(eff);
    rc = cfg_load_string(eff, "users", text, strlen(text), msg, sizeof(msg));
    OPENSSL_cleanse(text, strlen(text));
    free(text);
    if (rc != GT_OK) {
        /* "users:1: auth.users[3].secret_key: must be ..." -> the key part */
        const char *k = strstr(msg, "auth.");

        snprintf(err, errlen, "%s", k != NULL ? k : msg);
        cfg_free(eff);
    }
    return rc;
}

/* Loads and applies api as the new API user set (mu held). */
static gt_err_t px_users_apply(px_users_t *u, const json_t *api, char *err, size_t errlen)
{
    cfg_t eff;
    gt_err_t rc = px_users_effective(u, api, &eff, err, errlen);

    if (rc != GT_OK)
        return rc;
    rc = u->apply != NULL ? u->apply(u->apply_arg, &eff.auth, err, errlen) : GT_OK;
    cfg_free(&eff);
    return rc;
}

gt_err_t px_users_new(st_store_t *store, const cfg_t *cfg, px_users_apply_fn apply,
                      void *apply_arg, int timeout_ms, px_users_t **out, char *err,
                      size_t errlen)
{
    px_users_t *u = calloc(1, sizeof(*u));
    const char *name;
    json_t *rec, *tmp;
    gt_err_t rc;

    *out = NULL;
    if (u == NULL) {
        snprintf(err, errlen, "out of memory");
        return GT_ENOMEM;
    }
    pthread_mutex_init(&u->mu, NULL);
    u->store = store;
    u->cfg = cfg;
    u->apply = apply;
    u->apply_arg = apply_arg;
    rc = px_users_load(u, px_users_now_ms() + timeout_ms, &u->api);
    if (rc != GT_OK) {
        snprintf(err, errlen, "cannot read the users stored through the admin API: %s",
                 gt_err_str(rc));
        goto fail;
    }
    json_object_foreach_safe(u->api, tmp, name, rec) {
        if (px_config_user(u, name)) {
            GT_LOG(WARN, "admin", "user %s is in the config file and in the store (made "
                   "through the admin API): the config's wins", name);
            json_object_del(u->api, name);
        }
    }
    if (json_object_size(u->api) > 0) { /* else the config's users are in place */
        if ((rc = px_users_apply(u, u->api, err, errlen)) != GT_OK)
            goto fail;
        GT_LOG(INFO, "admin", "%zu user(s) made through the admin API", json_object_size(u->api));
    }
    *out = u;
    return GT_OK;
fail:
    px_users_free(u);
    return rc;
}

void px_users_free(px_users_t *u)
{
    if (u == NULL)
        return;
    json_decref(u->api);
    pthread_mutex_destroy(&u->mu);
    free(u);
}

/* ---- reads */

static json_t *px_user_json(const char *name, bool admin, const char *source, json_t *acls)
{
    return json_pack("{s:s, s:b, s:s, s:o}", "access_key", name, "admin", admin, "source",
                     source, "acls", acls != NULL ? acls : json_array());
}

json_t *px_users_list(px_users_t *u, const char *name)
{
    json_t *out = json_array();
    const char *k;
    json_t *rec;

    if (out == NULL)
        return NULL;
    pthread_mutex_lock(&u->mu);
    for (size_t i = 0; i < u->cfg->auth.users.n; i++) {
        const cfg_auth_user_t *cu = &u->cfg->auth.users.v[i];
        json_t *acls;

        if (name != NULL && strcmp(name, cu->access_key) != 0)
            continue;
        acls = json_array();
        for (size_t j = 0; acls != NULL && j < u->cfg->auth.acls.n; j++)
            if (strcmp(u->cfg->auth.acls.v[j].user, cu->access_key) == 0)
                json_array_append_new(acls, px_acl_json(&u->cfg->auth.acls.v[j]));
        json_array_append_new(out, px_user_json(cu->access_key, cu->admin, "config", acls));
    }
    json_object_foreach(u->api, k, rec) {
        if (name != NULL && strcmp(name, k) != 0)
            continue;
        json_array_append_new(out, px_user_json(k, json_is_true(json_object_get(rec, "admin")),
                                                "api",
                                                json_deep_copy(json_object_get(rec, "acls"))));
    }
    pthread_mutex_unlock(&u->mu);
    if (name != NULL) {
        json_t *one = json_incref(json_array_get(out, 0));

        json_decref(out);
        return one;
    }
    return out;
}

/* ---- changes */

/* Checks the shape of one ACL entry of a body (values: the loader). */
static bool px_acl_shape(const json_t *a, char *err, size_t errlen)
{
    const char *k;
    json_t *v;

    if (!json_is_object(a)) {
        snprintf(err, errlen, "each of \"acls\" must be an object");
        return false;
    }
    json_object_foreach((json_t *)a, k, v) {
        bool ok;

        if (strcmp(k, "resource") == 0 || strcmp(k, "decision") == 0) {
            ok = json_is_string(v);
        } else if (strcmp(k, "actions") == 0 || strcmp(k, "source_ips") == 0) {
            size_t i;
            json_t *s;

            ok = json_is_array(v);
            json_array_foreach(v, i, s) ok = ok && json_is_string(s);
        } else {
            snprintf(err, errlen, "unknown ACL field \"%s\" (resource, actions, decision, "
                     "source_ips)", k);
            return false;
        }
        if (!ok) {
            snprintf(err, errlen, "ACL field \"%s\" has the wrong type", k);
            return false;
        }
    }
    if (json_object_get(a, "resource") == NULL || json_object_get(a, "actions") == NULL) {
        snprintf(err, errlen, "an ACL entry needs \"resource\" and \"actions\"");
        return false;
    }
    return true;
}

/* The stored record of an API user, as JSON text; secret values never
 * leave it but into the store. */
static gt_err_t px_users_store(px_users_t *u, const char *name, const json_t *rec,
                               int64_t deadline)
{
    px_uw_t *w = px_uw_new();
    char *text;
    gt_err_t rc;

    if (w == NULL)
        return GT_ENOMEM;
    text = rec != NULL ? json_dumps(rec, JSON_COMPACT) : NULL;
    if (rec != NULL && text == NULL) {
        px_uw_unref(w);
        px_uw_unref(w);
        return GT_ENOMEM;
    }
    if (rec != NULL)
        st_meta_put(u->store, PX_USERS_NS, name, (uint32_t)strlen(name), text,
                    (uint32_t)strlen(text), px_uw_done_cb, w);
    else
        st_meta_del(u->store, PX_USERS_NS, name, (uint32_t)strlen(name), px_uw_done_cb, w);
    rc = px_uw_wait(w, deadline);
    px_uw_unref(w);
    if (text != NULL) {
        OPENSSL_cleanse(text, strlen(text));
        free(text);
    }
    return rc;
}

/* Stores user `name`'s record `rec` (NULL: deletes it), then makes `*next`
 * (the API users with that change) the set in use, taking it: *next is
 * NULL on success.  Called with u->mu held. */
static gt_err_t px_users_commit(px_users_t *u, const char *name, const json_t *rec,
                                json_t **next, int64_t deadline_ms, char *err, size_t errlen)
{
    gt_err_t rc = px_users_store(u, name, rec, deadline_ms);

    if (rc != GT_OK) {
        snprintf(err, errlen, "cannot %s user %s: %s", rec != NULL ? "store" : "delete", name,
                 rc == GT_ETIMEDOUT ? "the store did not answer in time" : gt_err_str(rc));
        return rc;
    }
    if ((rc = px_users_apply(u, *next, err, errlen)) != GT_OK)
        return rc;
    json_decref(u->api);
    u->api = *next;
    *next = NULL;
    return GT_OK;
}

gt_err_t px_users_put(px_users_t *u, const char *name, const json_t *body, bool create,
                      int64_t deadline_ms, char *err, size_t errlen)
{
    json_t *rec, *next = NULL, *old;
    const char *k;
    json_t *v;
    gt_err_t rc;

    json_object_foreach((json_t *)body, k, v) {
        if (strcmp(k, "access_key") == 0) {
            if (!json_is_string(v) || strcmp(json_string_value(v), name) != 0) {
                snprintf(err, errlen, "\"access_key\" must be the user's name");
                return GT_EINVAL;
            }
        } else if (strcmp(k, "secret_key") == 0) {
            if (!json_is_string(v)) {
                snprintf(err, errlen, "\"secret_key\" must be a string");
                return GT_EINVAL;
            }
        } else if (strcmp(k, "admin") == 0) {
            if (!json_is_boolean(v)) {
                snprintf(err, errlen, "\"admin\" must be true or false");
                return GT_EINVAL;
            }
        } else if (strcmp(k, "acls") == 0) {
            size_t i;
            json_t *a;

            if (!json_is_array(v)) {
                snprintf(err, errlen, "\"acls\" must be an array");
                return GT_EINVAL;
            }
            json_array_foreach(v, i, a) if (!px_acl_shape(a, err, errlen)) return GT_EINVAL;
        } else {
            snprintf(err, errlen, "unknown field \"%s\" (access_key, secret_key, admin, acls)",
                     k);
            return GT_EINVAL;
        }
    }
    pthread_mutex_lock(&u->mu);
    old = json_object_get(u->api, name);
    if (px_config_user(u, name)) {
        rc = create ? GT_EEXIST : GT_EUNSUPPORTED;
        snprintf(err, errlen, create ? "user %s exists (in the config file)"
                                     : "user %s is in the config file: read-only here",
                 name);
        goto out;
    }
    if (create && old != NULL) {
        rc = GT_EEXIST;
        snprintf(err, errlen, "user %s exists", name);
        goto out;
    }
    if (!create && old == NULL) {
        rc = GT_ENOTFOUND;
        snprintf(err, errlen, "no user %s", name);
        goto out;
    }
    if (create && json_object_get(body, "secret_key") == NULL) {
        rc = GT_EINVAL;
        snprintf(err, errlen, "\"secret_key\" is required");
        goto out;
    }
    rec = old != NULL ? json_deep_copy(old)
                      : json_pack("{s:b, s:[]}", "admin", false, "acls");
    if (rec == NULL || (next = json_deep_copy(u->api)) == NULL) {
        json_decref(rec);
        rc = GT_ENOMEM;
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    json_object_foreach((json_t *)body, k, v) if (strcmp(k, "access_key") != 0)
        json_object_set_new(rec, k, json_deep_copy(v));
    {
        /* ACL entries in full: the defaults of the config's entries */
        size_t i;
        json_t *e;

        json_array_foreach(json_object_get(rec, "acls"), i, e) {
            if (json_object_get(e, "decision") == NULL)
                json_object_set_new(e, "decision", json_string("Allow"));
            if (json_object_get(e, "source_ips") == NULL)
                json_object_set_new(e, "source_ips", json_array());
        }
    }
    json_object_set_new(next, name, rec);
    {
        cfg_t eff; /* checked before anything is stored */

        if ((rc = px_users_effective(u, next, &eff, err, errlen)) != GT_OK)
            goto out;
        cfg_free(&eff);
    }
    if ((rc = px_users_commit(u, name, rec, &next, deadline_ms, err, errlen)) != GT_OK)
        goto out;
    GT_LOG(INFO, "admin", "user %s %s through the admin API", name,
           create ? "created" : "updated");
out:
    pthread_mutex_unlock(&u->mu);
    json_decref(next);
    return rc;
}

gt_err_t px_users_delete(px_users_t *u, const char *name, int64_t deadline_ms, char *err,
                         size_t errlen)
{
    json_t *next = NULL;
    gt_err_t rc;

    pthread_mutex_lock(&u->mu);
    if (px_config_user(u, name)) {
        rc = GT_EUNSUPPORTED;
        snprintf(err, errlen, "user %s is in the config file: read-only here", name);
        goto out;
    }
    if (json_object_get(u->api, name) == NULL) {
        rc = GT_ENOTFOUND;
        snprintf(err, errlen, "no user %s", name);
        goto out;
    }
    if ((next = json_deep_copy(u->api)) == NULL) {
        rc = GT_ENOMEM;
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    json_object_del(next, name);
    if ((rc = px_users_commit(u, name, NULL, &next, deadline_ms, err, errlen)) != GT_OK)
        goto out;
    GT_LOG(INFO, "admin", "user %s deleted through the admin API", name);
out:
    pthread_mutex_unlock(&u->mu);
    json_decref(next);
    return rc;
}
