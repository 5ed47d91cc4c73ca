/* The service's copy of the store's topics and groups.
 *
 * Every request names a topic and most a group; the handlers check them
 * here, without a store round trip, so no gRPC worker ever waits on the
 * store.  The store keeps the copy current (st_meta_watch): a snapshot at
 * start-up, then every change, including changes other front ends make to
 * a shared store.  Changes arrive on executor threads, possibly out of
 * order, so each entry keeps the store's version of its last change and an
 * older event never overwrites a newer one; deleted names stay as
 * tombstones for the same reason.  Two hash tables (topics, groups) under
 * one rwlock: many readers, rare writers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt_log.h"
#include "px_svc_int.h"

struct px_meta_ent {
    struct px_meta_ent *next;
    uint64_t version;
    bool deleted;
    union {
        st_topic_t topic;
        st_group_t group;
    } u; /* both start with the name */
};

static uint64_t px_meta_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static px_meta_ent_t *px_meta_find(const px_meta_tab_t *t, const char *name)
{
    if (t->nb == 0)
        return NULL;
    for (px_meta_ent_t *e = t->b[px_meta_hash(name) % t->nb]; e; e = e->next)
        if (strcmp(e->u.topic.name, name) == 0)
            return e;
    return NULL;
}

/* Adds a new entry (write lock held).  NULL when out of memory. */
static px_meta_ent_t *px_meta_add(px_meta_tab_t *t, const char *name)
{
    px_meta_ent_t *e;
    size_t i;

    if (t->n >= t->nb) { /* keep chains short: grow at load 1 */
        size_t nb = t->nb ? t->nb * 2 : 64;
        px_meta_ent_t **b = calloc(nb, sizeof(*b));
        if (b == NULL)
            return NULL;
        for (i = 0; i < t->nb; i++) {
            while ((e = t->b[i]) != NULL) {
                t->b[i] = e->next;
                size_t j = px_meta_hash(e->u.topic.name) % nb;
                e->next = b[j];
                b[j] = e;
            }
        }
        free(t->b);
        t->b = b;
        t->nb = nb;
    }
    if ((e = calloc(1, sizeof(*e))) == NULL)
        return NULL;
    snprintf(e->u.topic.name, sizeof(e->u.topic.name), "%s", name);
    i = px_meta_hash(name) % t->nb;
    e->next = t->b[i];
    t->b[i] = e;
    t->n++;
    return e;
}

static void px_meta_tab_free(px_meta_tab_t *t)
{
    for (size_t i = 0; i < t->nb; i++) {
        while (t->b[i] != NULL) {
            px_meta_ent_t *e = t->b[i];
            t->b[i] = e->next;
            free(e);
        }
    }
    free(t->b);
    memset(t, 0, sizeof(*t));
}

void px_meta_init(px_meta_t *m)
{
    memset(m, 0, sizeof(*m));
    pthread_rwlock_init(&m->lock, NULL);
    pthread_mutex_init(&m->prime_mu, NULL);
    pthread_cond_init(&m->prime_cv, NULL);
}

void px_meta_free(px_meta_t *m)
{
    px_meta_tab_free(&m->topics);
    px_meta_tab_free(&m->groups);
    pthread_rwlock_destroy(&m->lock);
    pthread_mutex_destroy(&m->prime_mu);
    pthread_cond_destroy(&m->prime_cv);
}

/* Applies one event when it is newer than the entry (write lock held). */
static void px_meta_apply(px_meta_t *m, const st_meta_event_t *ev)
{
    px_meta_tab_t *t = ev->kind == ST_META_TOPIC ? &m->topics : &m->groups;
    const char *name = ev->u.topic.name; /* both start with the name */
    px_meta_ent_t *e = px_meta_find(t, name);

    if (e != NULL && ev->version <= e->version)
        return;
    if (e == NULL && (e = px_meta_add(t, name)) == NULL) {
        GT_LOG(ERROR, "svc", "metadata of %s lost: out of memory", name);
        return;
    }
    e->version = ev->version;
    e->deleted = ev->deleted;
    if (ev->deleted)
        return;
    if (ev->kind == ST_META_TOPIC)
        e->u.topic = ev->u.topic;
    else
        e->u.group = ev->u.group;
}

void px_meta_on_events(void *arg, const st_meta_event_t *evs, size_t n,
                       bool snapshot)
{
    px_meta_t *m = &((px_svc_t *)arg)->meta;

    pthread_rwlock_wrlock(&m->lock);
    for (size_t i = 0; i < n; i++)
        px_meta_apply(m, &evs[i]);
    pthread_rwlock_unlock(&m->lock);
    if (snapshot) {
        pthread_mutex_lock(&m->prime_mu);
        m->primed = true;
        pthread_cond_broadcast(&m->prime_cv);
        pthread_mutex_unlock(&m->prime_mu);
        GT_LOG(DEBUG, "svc", "metadata: %zu topics and groups from the store", n);
    }
}

void px_meta_wait_primed(px_meta_t *m)
{
    pthread_mutex_lock(&m->prime_mu);
    while (!m->primed)
        pthread_cond_wait(&m->prime_cv, &m->prime_mu);
    pthread_mutex_unlock(&m->prime_mu);
}

void px_meta_learn_topic(px_svc_t *svc, const st_topic_t *t)
{
    px_meta_t *m = &svc->meta;
    px_meta_ent_t *e;

    pthread_rwlock_wrlock(&m->lock);
    e = px_meta_find(&m->topics, t->name);
    if (e == NULL && (e = px_meta_add(&m->topics, t->name)) != NULL)
        e->deleted = true;
    /* Only fills a gap: the store's own notification, with its version,
     * stays authoritative whenever it comes. */
    if (e != NULL && e->deleted) {
        e->deleted = false;
        e->u.topic = *t;
    }
    pthread_rwlock_unlock(&m->lock);
}

gt_err_t px_topic_find(px_svc_t *svc, const char *name, st_topic_t *out)
{
    px_meta_ent_t *e;
    gt_err_t rc = GT_ENOTFOUND;

    pthread_rwlock_rdlock(&svc->meta.lock);
    e = px_meta_find(&svc->meta.topics, name);
    if (e != NULL && !e->deleted) {
        *out = e->u.topic;
        rc = GT_OK;
    }
    pthread_rwlock_unlock(&svc->meta.lock);
    return rc;
}

gt_err_t px_group_find(px_svc_t *svc, const char *name, st_group_t *out)
{
    px_meta_ent_t *e;
    gt_err_t rc = GT_ENOTFOUND;

    pthread_rwlock_rdlock(&svc->meta.lock);
    e = px_meta_find(&svc->meta.groups, name);
    if (e != NULL && !e->deleted) {
        *out = e->u.group;
        rc = GT_OK;
    }
    pthread_rwlock_unlock(&svc->meta.lock);
    return rc;
}
