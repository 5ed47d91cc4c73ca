/* Metadata change notifications of the local engine (st_meta_watch).
 *
 * Every change of a topic or group -- through the API, by the engine itself
 * (a %DLQ% topic for a move, a group created by its first pop) or while
 * replaying the state log -- bumps a store-wide version and records it on
 * the object; the one registered watcher gets the change at once, with the
 * lock held, so watchers see changes in the order they were made.  System
 * names (%SYS%...) are internal and never reported. */
#include <stdlib.h>
#include <string.h>

#include "st_int.h"

static void meta_emit(st_local_t *st, const st_meta_event_t *ev)
{
    if (st->meta_cb != NULL)
        st->meta_cb(st->meta_arg, ev, 1, false);
}

void st_meta_topic_changed(st_local_t *st, st_topic_rt_t *t)
{
    st_meta_event_t ev;

    t->meta_version = ++st->meta_version;
    if (st->meta_cb == NULL || st_is_sys_name(t->meta.name))
        return;
    memset(&ev, 0, sizeof(ev));
    ev.kind = ST_META_TOPIC;
    ev.deleted = t->deleted;
    ev.version = t->meta_version;
    ev.u.topic = t->meta;
    meta_emit(st, &ev);
}

void st_meta_group_changed(st_local_t *st, st_group_rt_t *g)
{
    st_meta_event_t ev;

    g->meta_version = ++st->meta_version;
    if (st->meta_cb == NULL || st_is_sys_name(g->meta.name))
        return;
    memset(&ev, 0, sizeof(ev));
    ev.kind = ST_META_GROUP;
    ev.deleted = g->deleted;
    ev.version = g->meta_version;
    ev.u.group = g->meta;
    meta_emit(st, &ev);
}

void st_meta_watch_local(st_store_t *s, st_meta_cb cb, void *arg)
{
    st_local_t *st = (st_local_t *)s;
    st_meta_event_t *evs = NULL;
    size_t n = 0;

    pthread_mutex_lock(&st->lock);
    st->meta_cb = cb;
    st->meta_arg = arg;
    if (cb == NULL)
        goto out;
    evs = calloc(st->ntopics + st->ngroups + 1, sizeof(*evs));
    for (size_t i = 0; evs != NULL && i < st->ntopics; i++) {
        st_topic_rt_t *t = st->topics[i];
        if (t->deleted || st_is_sys_name(t->meta.name))
            continue;
        evs[n].kind = ST_META_TOPIC;
        evs[n].version = t->meta_version;
        evs[n++].u.topic = t->meta;
    }
    for (size_t i = 0; evs != NULL && i < st->ngroups; i++) {
        st_group_rt_t *g = st->groups[i];
        if (g->deleted || st_is_sys_name(g->meta.name))
            continue;
        evs[n].kind = ST_META_GROUP;
        evs[n].version = g->meta_version;
        evs[n++].u.group = g->meta;
    }
    /* Under the lock, so no change can come before the snapshot.  Out of
     * memory: an empty snapshot is wrong, so say nothing and stay
     * unwatched (the caller waits for the snapshot and reports it). */
    if (evs != NULL)
        cb(arg, evs, n, true);
    else
        st->meta_cb = NULL;
out:
    pthread_mutex_unlock(&st->lock);
    free(evs);
}
