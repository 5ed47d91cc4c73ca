/* Loading: YAML text -> libyaml document -> a fresh cfg_t, walking the
 * descriptor tables.  The caller's cfg_t is replaced only after the whole
 * file has parsed and validated (parse, validate, then swap).
 *
 * The libyaml document API gives every node its start mark, so each error
 * names the file, the line and the key path ("topics[1].queues").  Block
 * and flow style produce the same nodes.  The schema is fixed depth
 * (root -> section -> key, root -> list -> entry -> key, at most root ->
 * amqp -> users -> entry -> tags -> item), so YAML aliases cannot make the
 * walk recurse. */
#include "cfg_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* A key that an alias also sets, as set so far (to refuse both). */
typedef struct cfg_ld_set {
    const cfg_desc_t *d;
    const char *as;     /* the path it was set by */
    unsigned long line;
} cfg_ld_set_t;

typedef struct cfg_ld {
    const char *name; /* file name for messages */
    yaml_document_t *doc;
    char *err;
    size_t errlen;
    cfg_ld_set_t set[8];
    size_t n_set;
} cfg_ld_t;

static gt_err_t ld_fail(cfg_ld_t *ld, gt_err_t rc, const yaml_node_t *n,
                        const char *path, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static gt_err_t ld_fail(cfg_ld_t *ld, gt_err_t rc, const yaml_node_t *n,
                        const char *path, const char *fmt, ...)
{
    int w = snprintf(ld->err, ld->errlen, "%s:%lu: %s: ", ld->name,
                     (unsigned long)n->start_mark.line + 1, path);
    va_list ap;

    if (w >= 0 && (size_t)w < ld->errlen) {
        va_start(ap, fmt);
        vsnprintf(ld->err + w, ld->errlen - (size_t)w, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static yaml_node_t *ld_node(cfg_ld_t *ld, int id)
{
    return yaml_document_get_node(ld->doc, id);
}

static const char *ld_kind(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_SCALAR_NODE:
        return "a scalar";
    case YAML_SEQUENCE_NODE:
        return "a list";
    case YAML_MAPPING_NODE:
        return "a mapping";
    default:
        return "nothing";
    }
}

static bool ld_is_null(const yaml_node_t *n)
{
    const char *v = (const char *)n->data.scalar.value;
    size_t len = n->data.scalar.length;

    if (n->type != YAML_SCALAR_NODE ||
        n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    return len == 0 || (len == 1 && v[0] == '~') ||
           (len == 4 && (memcmp(v, "null", 4) == 0 ||
                         memcmp(v, "Null", 4) == 0 ||
                         memcmp(v, "NULL", 4) == 0));
}

/* The path "prefix.key" with the key escaped for display. */
static void ld_path(char *buf, size_t bufsz, const char *prefix,
                    const yaml_node_t *key)
{
    char q[96];
    size_t len = key->data.scalar.length;

    cfg_msg_quote(q, sizeof(q), (const char *)key->data.scalar.value, len);
    q[strlen(q) - 1] = '\0'; /* drop the quotes: a path, not a value */
    if (prefix[0] != '\0')
        snprintf(buf, bufsz, "%s.%s", prefix, q + 1);
    else
        snprintf(buf, bufsz, "%s", q + 1);
}

static gt_err_t ld_list(cfg_ld_t *ld, const cfg_section_t *sec,
                        const yaml_node_t *seq, void *base, const char *prefix);

/* Records that d was set at node n, by the alias path as or (as NULL)
 * under its own name, when an alias stands for d; refuses a second
 * setting. */
static gt_err_t ld_note_alias(cfg_ld_t *ld, const cfg_desc_t *d, const char *as,
                              const yaml_node_t *n)
{
    const char *path = as;

    for (size_t i = 0; path == NULL && cfg_aliases[i].path != NULL; i++)
        if (cfg_path_find(cfg_aliases[i].key_path, strlen(cfg_aliases[i].key_path)) == d)
            path = cfg_aliases[i].key_path;
    if (path == NULL)
        return GT_OK;
    for (size_t i = 0; i < ld->n_set; i++)
        if (ld->set[i].d == d)
            return ld_fail(ld, GT_EINVAL, n, path, "also set as %s at line %lu; "
                           "set it once", ld->set[i].as, ld->set[i].line);
    if (ld->n_set < sizeof(ld->set) / sizeof(ld->set[0])) {
        cfg_ld_set_t *e = &ld->set[ld->n_set++];
        e->d = d;
        e->as = path; /* a stable string: an alias or a key table entry */
        e->line = (unsigned long)n->start_mark.line + 1;
    }
    return GT_OK;
}

/* A list of strings into a cfg_strlist_t field (replacing the default). */
static gt_err_t ld_strlist(cfg_ld_t *ld, const cfg_desc_t *d, const yaml_node_t *seq,
                           void *base, const char *path)
{
    cfg_strlist_t *l = (cfg_strlist_t *)((char *)base + d->off), tmp = {0};
    char ipath[300], why[256], q[96];

    for (yaml_node_item_t *it = seq->data.sequence.items.start;
         it < seq->data.sequence.items.top; it++) {
        const yaml_node_t *v = ld_node(ld, *it);
        const char *text = (const char *)v->data.scalar.value;
        size_t len = v->data.scalar.length;
        gt_err_t rc = GT_OK;

        snprintf(ipath, sizeof(ipath), "%s[%zu]", path,
                 (size_t)(it - seq->data.sequence.items.start));
        if (v->type != YAML_SCALAR_NODE)
            rc = ld_fail(ld, GT_EINVAL, v, ipath, "expected a string, got %s",
                         ld_kind(v));
        else if (ld_is_null(v))
            rc = ld_fail(ld, GT_EINVAL, v, ipath, "has no value");
        else if (memchr(text, '\0', len) != NULL)
            rc = ld_fail(ld, GT_EINVAL, v, ipath, "contains a NUL character");
        else if (cfg_strlist_add(&tmp, text, len) != GT_OK)
            rc = ld_fail(ld, GT_ENOMEM, v, ipath, "out of memory");
        else if (d->check != NULL && d->check(tmp.v[tmp.n - 1], why, sizeof(why)) != GT_OK)
            rc = ld_fail(ld, GT_EINVAL, v, ipath, "%s", why);
        for (size_t j = 0; rc == GT_OK && j + 1 < tmp.n; j++)
            if (strcmp(tmp.v[j], tmp.v[tmp.n - 1]) == 0)
                rc = d->secret ? ld_fail(ld, GT_EINVAL, v, ipath, "duplicate value")
                               : ld_fail(ld, GT_EINVAL, v, ipath, "duplicate value %s",
                                         cfg_msg_quote(q, sizeof(q), text, len));
        if (rc != GT_OK) {
            cfg_strlist_free(&tmp);
            return rc;
        }
    }
    cfg_strlist_free(l);
    *l = tmp;
    return GT_OK;
}

/* Fills the fields of keys[] in base from a mapping node.  Unknown,
 * duplicate and non-scalar keys or values (lists where the key is a list)
 * are errors; so are missing required keys.  At the top level (base is
 * the cfg_t) an alias sets the key it stands for. */
static gt_err_t ld_map(cfg_ld_t *ld, const cfg_desc_t *keys, size_t n_keys,
                       const yaml_node_t *map, void *base, const char *prefix)
{
    char path[256], why[256];
    uint32_t seen = 0;

    for (yaml_node_pair_t *p = map->data.mapping.pairs.start;
         p < map->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = ld_node(ld, p->key);
        const yaml_node_t *v = ld_node(ld, p->value);
        const cfg_desc_t *d = NULL;
        const char *as = NULL;
        gt_err_t rc;

        if (k->type != YAML_SCALAR_NODE)
            return ld_fail(ld, GT_EINVAL, k, prefix, "a key must be a scalar,"
                           " not %s", ld_kind(k));
        ld_path(path, sizeof(path), prefix, k);
        for (size_t i = 0; i < n_keys; i++)
            if (strlen(keys[i].key) == k->data.scalar.length &&
                memcmp(keys[i].key, k->data.scalar.value,
                       k->data.scalar.length) == 0)
                d = &keys[i];
        if (d == NULL) {
            d = cfg_alias_find(path, strlen(path), NULL);
            for (size_t i = 0; d != NULL && cfg_aliases[i].path != NULL; i++)
                if (strcmp(cfg_aliases[i].path, path) == 0)
                    as = cfg_aliases[i].path;
        }
        if (d == NULL)
            return ld_fail(ld, GT_EINVAL, k, path, "unknown key");
        if (as == NULL) {
            if (seen & (1u << (d - keys)))
                return ld_fail(ld, GT_EINVAL, k, path, "duplicate key");
            seen |= 1u << (d - keys);
        }
        if ((rc = ld_note_alias(ld, d, as, k)) != GT_OK)
            return rc;
        if (d->type == CFG_T_STRLIST || d->type == CFG_T_LIST) {
            if (v->type != YAML_SEQUENCE_NODE)
                return ld_fail(ld, GT_EINVAL, v, path, "expected a list, got %s",
                               ld_kind(v));
            if (d->type == CFG_T_STRLIST)
                rc = ld_strlist(ld, d, v, base, path);
            else
                rc = ld_list(ld, d->sub, v, (char *)base + d->off, path);
            if (rc != GT_OK)
                return rc;
            continue;
        }
        if (v->type != YAML_SCALAR_NODE)
            return ld_fail(ld, GT_EINVAL, v, path, "expected a scalar value, "
                           "got %s", ld_kind(v));
        rc = cfg_field_parse(d, base, (const char *)v->data.scalar.value,
                             v->data.scalar.length,
                             v->data.scalar.style != YAML_PLAIN_SCALAR_STYLE,
                             why, sizeof(why));
        if (rc != GT_OK)
            return ld_fail(ld, rc, v, path, "%s", why);
    }
    for (size_t i = 0; i < n_keys; i++) {
        if (keys[i].def == NULL && !(seen & (1u << i))) {
            snprintf(path, sizeof(path), "%s.%s", prefix, keys[i].key);
            return ld_fail(ld, GT_EINVAL, map, path, "required key is missing");
        }
    }
    return GT_OK;
}

/* Reads a list section (topics, groups, amqp.users...) into a freshly
 * allocated array at base (list_off, count_off); *count grows only when an
 * entry is complete and valid, so cfg_free() sees a consistent list after
 * any failure.  prefix names the list in messages. */
static gt_err_t ld_list(cfg_ld_t *ld, const cfg_section_t *sec,
                        const yaml_node_t *seq, void *base, const char *prefix)
{
    char **arr = (char **)((char *)base + sec->list_off);
    size_t *count = (size_t *)((char *)base + sec->count_off);
    yaml_node_item_t *items = seq->data.sequence.items.start;
    size_t n = (size_t)(seq->data.sequence.items.top - items);
    char path[256];
    gt_err_t rc;

    if (n == 0)
        return GT_OK;
    *arr = calloc(n, sec->elem_size);
    if (*arr == NULL)
        return ld_fail(ld, GT_ENOMEM, seq, prefix, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *item = ld_node(ld, items[i]);
        char *elem = *arr + i * sec->elem_size;
        const char *name;

        snprintf(path, sizeof(path), "%s[%zu]", prefix, i);
        if (item->type != YAML_MAPPING_NODE)
            return ld_fail(ld, GT_EINVAL, item, path, "expected a mapping "
                           "(e.g. {%s: X}), got %s", sec->keys[0].key,
                           ld_kind(item));
        rc = cfg_fields_default(sec->keys, sec->n_keys, elem);
        if (rc == GT_OK)
            rc = ld_map(ld, sec->keys, sec->n_keys, item, elem, path);
        else
            ld_fail(ld, rc, item, path, "out of memory");
        if (rc != GT_OK) {
            cfg_fields_free(sec->keys, sec->n_keys, elem);
            return rc;
        }
        (*count)++;
        if (sec->elem_what == NULL)
            continue;
        name = *(char **)(elem + sec->keys[0].off);
        for (size_t j = 0; j < i; j++) {
            const char *other = *(char **)(*arr + j * sec->elem_size +
                                           sec->keys[0].off);
            if (strcmp(name, other) == 0)
                return ld_fail(ld, GT_EINVAL, item, path, "duplicate %s name "
                               "\"%s\" (first defined at line %lu)",
                               sec->elem_what, name,
                               (unsigned long)ld_node(ld, items[j])
                                       ->start_mark.line + 1);
        }
    }
    return GT_OK;
}

/* The value of key in a mapping node, or NULL. */
static const yaml_node_t *ld_get(cfg_ld_t *ld, const yaml_node_t *map,
                                 const char *key)
{
    if (map == NULL || map->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start;
         p < map->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = ld_node(ld, p->key);
        if (k->type == YAML_SCALAR_NODE && strlen(key) == k->data.scalar.length &&
            memcmp(key, k->data.scalar.value, k->data.scalar.length) == 0)
            return ld_node(ld, p->value);
    }
    return NULL;
}

/* The node of item i of the list at key in map (for the line), or map. */
static const yaml_node_t *ld_item(cfg_ld_t *ld, const yaml_node_t *map,
                                  const char *key, size_t i)
{
    const yaml_node_t *seq = ld_get(ld, map, key);

    if (seq == NULL || seq->type != YAML_SEQUENCE_NODE ||
        i >= (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start))
        return map;
    return ld_node(ld, seq->data.sequence.items.start[i]);
}

/* The tls section's checks across keys: a listener that uses TLS needs the
 * certificate and key; client certificates need the CA file. */
static gt_err_t ld_tls_refs(cfg_ld_t *ld, const yaml_node_t *root, const cfg_t *cfg)
{
    const yaml_node_t *n = ld_get(ld, root, "tls");
    const char *al = cfg->amqp.tls_listen;
    bool used = strcmp(cfg->tls.mode, "disabled") != 0 || cfg->tls.http ||
                (al != NULL && al[0] != '\0' && strcmp(al, "off") != 0);

    if (n == NULL)
        n = root;
    if (used && (cfg->tls.cert_file == NULL || cfg->tls.cert_file[0] == '\0' ||
                 cfg->tls.key_file == NULL || cfg->tls.key_file[0] == '\0'))
        return ld_fail(ld, GT_EINVAL, n, "tls", "cert_file and key_file are needed "
                       "(tls.mode is %s, tls.http %s, amqp.tls_listen %s)", cfg->tls.mode,
                       cfg->tls.http ? "true" : "false", al != NULL && al[0] != '\0' ? al : "off");
    if (strcmp(cfg->tls.client_auth, "none") != 0 &&
        (cfg->tls.ca_file == NULL || cfg->tls.ca_file[0] == '\0'))
        return ld_fail(ld, GT_EINVAL, n, "tls.client_auth", "%s needs tls.ca_file",
                       cfg->tls.client_auth);
    return GT_OK;
}

/* The store section's checks across keys: cluster mode needs etcd;
 * store.endpoints names one node: in remote mode a single gantry-store
 * node holds all the data (it is not replicated), so other entries could
 * only be other nodes with other data, or the same node again -- refused
 * rather than silently ignored. */
static gt_err_t ld_store_refs(cfg_ld_t *ld, const yaml_node_t *root, const cfg_t *cfg)
{
    const yaml_node_t *n = ld_get(ld, root, "store");

    if (n == NULL)
        n = root;
    if (strcmp(cfg->store.mode, "cluster") == 0 && cfg->store.etcd.n == 0)
        return ld_fail(ld, GT_EINVAL, n, "store.etcd", "store.mode cluster needs the "
                       "etcd endpoints (store.etcd: [HOST:PORT, ...])");
    if (cfg->store.endpoints.n > 1)
        return ld_fail(ld, GT_EINVAL, ld_item(ld, n, "endpoints", 1), "store.endpoints",
                       "%zu entries; give exactly one: remote mode uses one gantry-store "
                       "node, which holds all the data (it is not replicated, so a second "
                       "address can be no failover)", cfg->store.endpoints.n);
    return GT_OK;
}

/* The amqp section's checks across entries: each user has one password
 * form matching its hashing algorithm; each permission names a known user
 * (guest when there are no users) and vhost, once per pair. */
static gt_err_t ld_amqp_refs(cfg_ld_t *ld, const yaml_node_t *root, cfg_t *cfg)
{
    const yaml_node_t *amqp = ld_get(ld, root, "amqp");
    const cfg_amqp_t *a = &cfg->amqp;
    char path[64];

    for (size_t i = 0; i < a->users.n; i++) {
        const cfg_amqp_user_t *u = &a->users.v[i];
        const yaml_node_t *n = ld_item(ld, amqp, "users", i);
        uint8_t buf[128];

        snprintf(path, sizeof(path), "amqp.users[%zu]", i);
        if ((u->password_hash == NULL) == (u->password == NULL))
            return ld_fail(ld, GT_EINVAL, n, path, "give either password_hash "
                           "or password");
        if (u->password_hash != NULL && strcmp(u->password_hash, CFG_SECRET_MASK) != 0 &&
            cfg_b64_decode(u->password_hash, buf, sizeof(buf)) !=
                (u->hashing == CFG_HASH_SHA256 ? 4 + 32 : 4 + 64))
            return ld_fail(ld, GT_EINVAL, n, path, "password_hash does not "
                           "have the length of a %s hash",
                           u->hashing == CFG_HASH_SHA256 ? "SHA-256" : "SHA-512");
    }
    for (size_t i = 0; i < a->permissions.n; i++) {
        const cfg_amqp_perm_t *p = &a->permissions.v[i];
        const yaml_node_t *n = ld_item(ld, amqp, "permissions", i);
        bool user = a->users.n == 0 && cfg->auth.users.n == 0 &&
                    strcmp(p->user, "guest") == 0;
        bool vhost = false;

        snprintf(path, sizeof(path), "amqp.permissions[%zu]", i);
        for (size_t j = 0; j < a->users.n; j++)
            user |= strcmp(a->users.v[j].name, p->user) == 0;
        for (size_t j = 0; j < cfg->auth.users.n; j++)
            user |= strcmp(cfg->auth.users.v[j].access_key, p->user) == 0;
        for (size_t j = 0; j < a->vhosts.n; j++)
            vhost |= strcmp(a->vhosts.v[j], p->vhost) == 0;
        if (!user)
            return ld_fail(ld, GT_EINVAL, n, path, "no user \"%s\" in "
                           "amqp.users or auth.users", p->user);
        if (!vhost)
            return ld_fail(ld, GT_EINVAL, n, path, "no vhost \"%s\" in "
                           "amqp.vhosts", p->vhost);
        for (size_t j = 0; j < i; j++)
            if (strcmp(a->permissions.v[j].user, p->user) == 0 &&
                strcmp(a->permissions.v[j].vhost, p->vhost) == 0)
                return ld_fail(ld, GT_EINVAL, n, path, "user \"%s\" already "
                               "has permissions on vhost \"%s\" (amqp."
                               "permissions[%zu])", p->user, p->vhost, j);
    }
    for (size_t i = 0; i < a->bridges.n; i++) {
        const cfg_amqp_bridge_t *br = &a->bridges.v[i];
        const yaml_node_t *n = ld_item(ld, amqp, "bridges", i);
        bool vhost = false;

        snprintf(path, sizeof(path), "amqp.bridges[%zu]", i);
        for (size_t j = 0; j < a->vhosts.n; j++)
            vhost |= strcmp(a->vhosts.v[j], br->vhost) == 0;
        if (!vhost)
            return ld_fail(ld, GT_EINVAL, n, path, "no vhost \"%s\" in "
                           "amqp.vhosts", br->vhost);
        for (size_t j = 0; j < i; j++) {
            const cfg_amqp_bridge_t *o = &a->bridges.v[j];
            if (strcmp(o->topic, br->topic) == 0 ||
                (strcmp(o->vhost, br->vhost) == 0 &&
                 strcmp(o->exchange, br->exchange) == 0))
                return ld_fail(ld, GT_EINVAL, n, path, "exchange \"%s\" or "
                               "topic \"%s\" is already bridged (amqp."
                               "bridges[%zu])", br->exchange, br->topic, j);
        }
    }
    for (size_t i = 0; i < a->queue_policies.n; i++) {
        const cfg_amqp_qpolicy_t *p = &a->queue_policies.v[i];
        const yaml_node_t *n = ld_item(ld, amqp, "queue_policies", i);
        bool vhost = false;

        snprintf(path, sizeof(path), "amqp.queue_policies[%zu]", i);
        for (size_t j = 0; j < a->vhosts.n; j++)
            vhost |= strcmp(a->vhosts.v[j], p->vhost) == 0;
        if (!vhost)
            return ld_fail(ld, GT_EINVAL, n, path, "no vhost \"%s\" in "
                           "amqp.vhosts", p->vhost);
        if ((p->queue == NULL) == (p->pattern == NULL))
            return ld_fail(ld, GT_EINVAL, n, path, "give either queue or pattern");
        if (p->retry_delays.n > 32)
            return ld_fail(ld, GT_EINVAL, n, path, "retry_delays has %zu steps, "
                           "at most 32", p->retry_delays.n);
    }
    for (size_t i = 0; i < a->vhost_limits.n; i++) {
        const cfg_amqp_vlimit_t *l = &a->vhost_limits.v[i];
        const yaml_node_t *n = ld_item(ld, amqp, "vhost_limits", i);
        bool vhost = false;

        snprintf(path, sizeof(path), "amqp.vhost_limits[%zu]", i);
        for (size_t j = 0; j < a->vhosts.n; j++)
            vhost |= strcmp(a->vhosts.v[j], l->vhost) == 0;
        if (!vhost)
            return ld_fail(ld, GT_EINVAL, n, path, "no vhost \"%s\" in "
                           "amqp.vhosts", l->vhost);
        for (size_t j = 0; j < i; j++)
            if (strcmp(a->vhost_limits.v[j].vhost, l->vhost) == 0)
                return ld_fail(ld, GT_EINVAL, n, path, "vhost \"%s\" already has "
                               "limits (amqp.vhost_limits[%zu])", l->vhost, j);
    }
    return GT_OK;
}

/* The auth section's checks across entries: each ACL names a user and
 * an action; an AMQP user name is not also an access key. */
static gt_err_t ld_auth_refs(cfg_ld_t *ld, const yaml_node_t *root, cfg_t *cfg)
{
    const yaml_node_t *auth = ld_get(ld, root, "auth");
    const cfg_auth_t *a = &cfg->auth;
    char path[64];

    for (size_t i = 0; i < a->users.n; i++)
        for (size_t j = 0; j < cfg->amqp.users.n; j++)
            if (strcmp(a->users.v[i].access_key, cfg->amqp.users.v[j].name) == 0) {
                snprintf(path, sizeof(path), "auth.users[%zu]", i);
                return ld_fail(ld, GT_EINVAL, ld_item(ld, auth, "users", i), path,
                               "user \"%s\" is also in amqp.users",
                               a->users.v[i].access_key);
            }
    for (size_t i = 0; i < a->acls.n; i++) {
        const cfg_auth_acl_t *e = &a->acls.v[i];
        const yaml_node_t *n = ld_item(ld, auth, "acls", i);
        bool user = false;

        snprintf(path, sizeof(path), "auth.acls[%zu]", i);
        for (size_t j = 0; j < a->users.n; j++)
            user |= strcmp(a->users.v[j].access_key, e->user) == 0;
        if (!user)
            return ld_fail(ld, GT_EINVAL, n, path, "no user \"%s\" in auth.users", e->user);
        if (e->actions.n == 0)
            return ld_fail(ld, GT_EINVAL, n, path, "actions: give at least one");
    }
    return GT_OK;
}

static gt_err_t ld_root(cfg_ld_t *ld, const yaml_node_t *root, cfg_t *cfg)
{
    uint32_t seen = 0;
    gt_err_t rc;

    if (ld_is_null(root))
        return GT_OK; /* an empty document: all defaults */
    if (root->type != YAML_MAPPING_NODE)
        return ld_fail(ld, GT_EINVAL, root, "(top level)", "expected a "
                       "mapping of sections, got %s", ld_kind(root));
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start;
         p < root->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = ld_node(ld, p->key);
        const yaml_node_t *v = ld_node(ld, p->value);
        const cfg_section_t *sec;
        char path[128];

        if (k->type != YAML_SCALAR_NODE)
            return ld_fail(ld, GT_EINVAL, k, "(top level)", "a key must be a "
                           "scalar, not %s", ld_kind(k));
        ld_path(path, sizeof(path), "", k);
        sec = cfg_section_find((const char *)k->data.scalar.value,
                               k->data.scalar.length);
        if (sec == NULL)
            return ld_fail(ld, GT_EINVAL, k, path, "unknown key");
        if (seen & (1u << (sec - cfg_sections)))
            return ld_fail(ld, GT_EINVAL, k, path, "duplicate key");
        seen |= 1u << (sec - cfg_sections);
        if (ld_is_null(v))
            continue; /* "topics:" with every entry commented out */
        if (sec->is_list && v->type != YAML_SEQUENCE_NODE)
            return ld_fail(ld, GT_EINVAL, v, path, "expected a list, got %s",
                           ld_kind(v));
        if (!sec->is_list && v->type != YAML_MAPPING_NODE)
            return ld_fail(ld, GT_EINVAL, v, path, "expected a mapping, got "
                           "%s", ld_kind(v));
        rc = sec->is_list ? ld_list(ld, sec, v, cfg, sec->name)
                          : ld_map(ld, sec->keys, sec->n_keys, v, cfg, path);
        if (rc != GT_OK)
            return rc;
    }
    rc = ld_amqp_refs(ld, root, cfg);
    if (rc != GT_OK)
        return rc;
    rc = ld_auth_refs(ld, root, cfg);
    if (rc == GT_OK)
        rc = ld_store_refs(ld, root, cfg);
    return rc != GT_OK ? rc : ld_tls_refs(ld, root, cfg);
}

/* Formats libyaml's parse error.  Reader errors (bad encoding) carry only a
 * byte offset, so their line is counted from the input. */
static gt_err_t ld_syntax_error(cfg_ld_t *ld, const yaml_parser_t *p,
                                const char *yaml, size_t len)
{
    unsigned long line = (unsigned long)p->problem_mark.line + 1;

    if (p->error == YAML_MEMORY_ERROR) {
        snprintf(ld->err, ld->errlen, "%s: out of memory", ld->name);
        return GT_ENOMEM;
    }
    if (p->error == YAML_READER_ERROR) {
        line = 1;
        for (size_t i = 0; i < p->problem_offset && i < len; i++)
            line += yaml[i] == '\n';
    }
    if (p->context != NULL)
        snprintf(ld->err, ld->errlen, "%s:%lu: invalid YAML: %s (%s at line "
                 "%lu)", ld->name, line, p->problem ? p->problem : "error",
                 p->context, (unsigned long)p->context_mark.line + 1);
    else
        snprintf(ld->err, ld->errlen, "%s:%lu: invalid YAML: %s", ld->name,
                 line, p->problem ? p->problem : "error");
    return GT_EINVAL;
}

/* Limits on hostile or broken input.  libyaml's cost grows with the square
 * of the nesting depth (a 40,000-level, 80 KB file took seconds), and the
 * schema needs five levels; the whole file is read into memory. */
#define CFG_MAX_DEPTH 32
#define CFG_MAX_FILE_BYTES (8 * 1024 * 1024)

/* Walks the event stream once, refusing nesting deeper than CFG_MAX_DEPTH
 * as soon as it appears (before the quadratic part can grow).  Syntax
 * errors are left to the loader, which reports them. */
static gt_err_t ld_check_depth(cfg_ld_t *ld, const char *yaml, size_t len)
{
    yaml_parser_t p;
    yaml_event_t ev;
    gt_err_t rc = GT_OK;
    int depth = 0;
    bool done = false;

    if (!yaml_parser_initialize(&p)) {
        snprintf(ld->err, ld->errlen, "%s: out of memory", ld->name);
        return GT_ENOMEM;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)yaml, len);
    while (!done && rc == GT_OK && yaml_parser_parse(&p, &ev)) {
        if (ev.type == YAML_SEQUENCE_START_EVENT ||
            ev.type == YAML_MAPPING_START_EVENT) {
            if (++depth > CFG_MAX_DEPTH) {
                snprintf(ld->err, ld->errlen, "%s:%lu: nesting deeper than %d "
                         "levels", ld->name,
                         (unsigned long)ev.start_mark.line + 1, CFG_MAX_DEPTH);
                rc = GT_EINVAL;
            }
        } else if (ev.type == YAML_SEQUENCE_END_EVENT ||
                   ev.type == YAML_MAPPING_END_EVENT) {
            depth--;
        }
        done = ev.type == YAML_STREAM_END_EVENT;
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    return rc;
}

/* Parses the single document of the stream into *doc.  Returns GT_OK with
 * *have_doc set, or an error (message written). */
static gt_err_t ld_parse(cfg_ld_t *ld, yaml_parser_t *p, yaml_document_t *doc,
                         bool *have_doc, const char *yaml, size_t len)
{
    yaml_document_t extra;
    yaml_node_t *root;
    gt_err_t rc = GT_OK;

    if (len > CFG_MAX_FILE_BYTES) {
        snprintf(ld->err, ld->errlen, "%s:1: the config is larger than %d "
                 "bytes", ld->name, CFG_MAX_FILE_BYTES);
        return GT_EINVAL;
    }
    if ((rc = ld_check_depth(ld, yaml, len)) != GT_OK)
        return rc;
    yaml_parser_set_input_string(p, (const unsigned char *)yaml, len);
    if (!yaml_parser_load(p, doc))
        return ld_syntax_error(ld, p, yaml, len);
    *have_doc = true;
    if (yaml_document_get_root_node(doc) == NULL)
        return GT_OK; /* empty stream */
    if (!yaml_parser_load(p, &extra))
        return ld_syntax_error(ld, p, yaml, len);
    root = yaml_document_get_root_node(&extra);
    if (root != NULL)
        rc = ld_fail(ld, GT_EINVAL, root, "(top level)", "only one YAML "
                     "document is allowed");
    yaml_document_delete(&extra);
    return rc;
}

gt_err_t cfg_load_string(cfg_t *cfg, const char *name, const char *yaml,
                         size_t len, char *err, size_t errlen)
{
    char dummy[1];
    cfg_ld_t ld = {.name = name, .err = err, .errlen = errlen};
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_node_t *root;
    bool have_doc = false;
    cfg_t tmp;
    gt_err_t rc;

    if (name == NULL)
        ld.name = name = "<config>";
    if (err == NULL) {
        ld.err = dummy;
        ld.errlen = sizeof(dummy);
    }
    if (!yaml_parser_initialize(&parser)) {
        snprintf(ld.err, ld.errlen, "%s: out of memory", name);
        return GT_ENOMEM;
    }
    cfg_init(&tmp);
    ld.doc = &doc;
    rc = ld_parse(&ld, &parser, &doc, &have_doc, yaml, len);
    if (rc != GT_OK)
        goto out;
    root = yaml_document_get_root_node(&doc);
    if (root != NULL)
        rc = ld_root(&ld, root, &tmp);
    if (rc != GT_OK)
        goto out;
    cfg_free(cfg);
    *cfg = tmp; /* the swap: tmp's contents now belong to cfg */
    memset(&tmp, 0, sizeof(tmp));
out:
    cfg_free(&tmp);
    if (have_doc)
        yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return rc;
}

gt_err_t cfg_load_file(cfg_t *cfg, const char *path, char *err, size_t errlen)
{
    char dummy[1];
    FILE *f = NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0, r;
    gt_err_t rc = GT_OK;

    if (err == NULL) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return GT_EIO;
    }
    do {
        if (len > CFG_MAX_FILE_BYTES) {
            snprintf(err, errlen, "%s:1: the config is larger than %d bytes",
                     path, CFG_MAX_FILE_BYTES);
            rc = GT_EINVAL;
            goto out;
        }
        if (len == cap) {
            char *nb = realloc(buf, cap = cap ? cap * 2 : 16384);
            if (nb == NULL) {
                snprintf(err, errlen, "%s: out of memory", path);
                rc = GT_ENOMEM;
                goto out;
            }
            buf = nb;
        }
        r = fread(buf + len, 1, cap - len, f);
        len += r;
    } while (r > 0);
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error: %s", path, strerror(errno));
        rc = GT_EIO;
        goto out;
    }
    rc = cfg_load_string(cfg, path, buf, len, err, errlen);
out:
    free(buf);
    if (f != NULL)
        fclose(f);
    return rc;
}
