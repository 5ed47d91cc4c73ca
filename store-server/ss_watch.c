/* MetaWatch: any number of streams over the store's one metadata watcher.
 *
 * The server keeps a copy of every topic and group (with the version of
 * its last change, and deleted ones as tombstones, so that events applied
 * out of order -- the executor runs them on several threads -- keep the
 * newest).  A new stream gets the copy as its snapshot, then every change;
 * both happen under `mu`, so a change is either in a stream's snapshot or
 * sent to it after.  A stream with SS_WATCH_BACKLOG_MAX messages unread is
 * ended with RESOURCE_EXHAUSTED. */
#include <stdlib.h>
#include <string.h>

#include "gt_log.h"
#include "ss_int.h"

/* Change messages a stream may have queued unread before it is ended
 * (RESOURCE_EXHAUSTED): a watcher that does not read costs this much. */
#define SS_WATCH_BACKLOG_MAX 256

typedef struct ss_watcher {
    struct ss_watcher *next;
    px_call_t *call; /* a reference while listed */
} ss_watcher_t;

/* Everything under mu. */
struct ss_watch {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool have_snapshot;
    st_meta_event_t *evs; /* the copy: one per (kind, name) */
    size_t n, cap;
    ss_watcher_t *watchers;
    size_t nwatchers;
};

static const char *ss_ev_name(const st_meta_event_t *e)
{
    return e->kind == ST_META_TOPIC ? e->u.topic.name : e->u.group.name;
}

/* Applies one event to the copy (hold mu); false when it is older than
 * what the copy holds (then it is not passed on either). */
static bool ss_watch_apply(ss_watch_t *w, const st_meta_event_t *ev)
{
    const char *name = ss_ev_name(ev);

    for (size_t i = 0; i < w->n; i++) {
        if (w->evs[i].kind == ev->kind &&
            strcmp(ss_ev_name(&w->evs[i]), name) == 0) {
            if (w->evs[i].version > ev->version)
                return false;
            w->evs[i] = *ev;
            return true;
        }
    }
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        st_meta_event_t *n = realloc(w->evs, cap * sizeof(*n));
        if (n == NULL)
            return true; /* pass it on; the copy misses it */
        w->evs = n;
        w->cap = cap;
    }
    w->evs[w->n++] = *ev;
    return true;
}

static void ss_pb_event(const st_meta_event_t *e, Gantry__Store__V1__MetaEvent *pe,
                        Gantry__Store__V1__Topic *t, Gantry__Store__V1__Group *g,
                        Gantry__Store__V1__RetryPolicy *r)
{
    gantry__store__v1__meta_event__init(pe);
    pe->kind = (Gantry__Store__V1__MetaKind)e->kind;
    pe->deleted = e->deleted;
    pe->version = e->version;
    if (e->kind == ST_META_TOPIC) {
        gantry__store__v1__topic__init(t);
        t->name = (char *)e->u.topic.name;
        t->type = (Gantry__Store__V1__TopicType)e->u.topic.type;
        t->queue_count = e->u.topic.queue_count;
        t->perm = e->u.topic.perm;
        pe->topic = t;
    } else {
        gantry__store__v1__group__init(g);
        gantry__store__v1__retry_policy__init(r);
        g->name = (char *)e->u.group.name;
        g->max_delivery_attempts = e->u.group.max_delivery_attempts;
        g->fifo = e->u.group.fifo;
        g->consume_from = (Gantry__Store__V1__ConsumeFrom)e->u.group.consume_from;
        r->initial_ms = e->u.group.retry.initial_ms;
        r->max_ms = e->u.group.retry.max_ms;
        r->multiplier = e->u.group.retry.multiplier;
        g->retry = r;
        pe->group = g;
    }
}

/* Sends n events (the deleted ones too unless `snapshot`) to one call. */
static gt_err_t ss_watch_send(px_call_t *call, const st_meta_event_t *evs,
                              size_t n, bool snapshot)
{
    Gantry__Store__V1__MetaWatchResponse resp =
        GANTRY__STORE__V1__META_WATCH_RESPONSE__INIT;
    Gantry__Store__V1__MetaEvent *pe = calloc(n ? n : 1, sizeof(*pe));
    Gantry__Store__V1__MetaEvent **pp = calloc(n ? n : 1, sizeof(*pp));
    Gantry__Store__V1__Topic *t = calloc(n ? n : 1, sizeof(*t));
    Gantry__Store__V1__Group *g = calloc(n ? n : 1, sizeof(*g));
    Gantry__Store__V1__RetryPolicy *r = calloc(n ? n : 1, sizeof(*r));
    size_t k = 0;
    gt_err_t rc = GT_ENOMEM;

    if (pe != NULL && pp != NULL && t != NULL && g != NULL && r != NULL) {
        for (size_t i = 0; i < n; i++) {
            if (snapshot && evs[i].deleted)
                continue;
            ss_pb_event(&evs[i], &pe[k], &t[k], &g[k], &r[k]);
            pp[k] = &pe[k];
            k++;
        }
        resp.snapshot = snapshot;
        resp.n_events = k;
        resp.events = pp;
        rc = px_call_send_pb(call, &resp.base);
    }
    free(pe);
    free(pp);
    free(t);
    free(g);
    free(r);
    return rc;
}

/* The store's watcher (executor thread; the events are ours). */
static void ss_watch_cb(void *arg, const st_meta_event_t *evs, size_t n,
                        bool snapshot)
{
    ss_watch_t *w = arg;
    st_meta_event_t *fresh = malloc((n ? n : 1) * sizeof(*fresh));
    ss_watcher_t *slow = NULL;
    size_t k = 0;

    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < n; i++)
        if (ss_watch_apply(w, &evs[i]) && fresh != NULL)
            fresh[k++] = evs[i];
    if (snapshot) {
        w->have_snapshot = true;
        pthread_cond_broadcast(&w->cv);
    }
    for (ss_watcher_t **pp = &w->watchers; *pp != NULL && k > 0;) {
        ss_watcher_t *x = *pp;
        if (px_call_send_backlog(x->call) < SS_WATCH_BACKLOG_MAX) {
            ss_watch_send(x->call, fresh, k, false);
            pp = &x->next;
            continue;
        }
        /* It does not read: end it rather than queue without bound. */
        *pp = x->next;
        x->next = slow;
        slow = x;
        w->nwatchers--;
    }
    pthread_mutex_unlock(&w->mu);
    free(fresh);
    while (slow != NULL) {
        ss_watcher_t *x = slow;
        slow = x->next;
        GT_LOG(WARN, "watch", "MetaWatch from %s ended: %d changes unread",
               px_call_peer(x->call), SS_WATCH_BACKLOG_MAX);
        px_call_finish(x->call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                       "too many unread changes; watch again");
        px_call_unref(x->call);
        free(x);
    }
}

ss_watch_t *ss_watch_start(st_store_t *store)
{
    ss_watch_t *w = calloc(1, sizeof(*w));

    if (w == NULL)
        return NULL;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    st_meta_watch(store, ss_watch_cb, w);
    pthread_mutex_lock(&w->mu);
    while (!w->have_snapshot)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
    return w;
}

void ss_watch_stop(ss_watch_t *w, st_store_t *store)
{
    if (w == NULL)
        return;
    st_meta_watch(store, NULL, NULL);
    /* At a server shutdown the calls were all interrupted and unlisted;
     * when replication closes the engine of a running node (it stands
     * down) the streams still listed end here. */
    pthread_mutex_lock(&w->mu);
    while (w->watchers != NULL) {
        ss_watcher_t *x = w->watchers;
        w->watchers = x->next;
        px_call_finish(x->call, GRPC_STATUS_UNAVAILABLE, "not leader");
        px_call_unref(x->call);
        free(x);
    }
    pthread_mutex_unlock(&w->mu);
    free(w->evs);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}

size_t ss_watch_count(ss_watch_t *w)
{
    size_t n;

    if (w == NULL)
        return 0;
    pthread_mutex_lock(&w->mu);
    n = w->nwatchers;
    pthread_mutex_unlock(&w->mu);
    return n;
}

void ss_meta_watch(px_call_t *call, ProtobufCMessage *msg)
{
    ss_srv_t *s = ss_srv(call);
    ss_watch_t *w;
    ss_watcher_t *x = malloc(sizeof(*x));

    (void)msg;
    if (x == NULL) {
        px_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    px_call_ref(call);
    x->call = call;
    /* Listed under the read lock: the watch is not stopped (and freed)
     * meanwhile; once it left, the node no longer serves one. */
    pthread_rwlock_rdlock(&s->late_lock);
    if ((w = s->watch) == NULL) {
        pthread_rwlock_unlock(&s->late_lock);
        px_call_finish(call, GRPC_STATUS_UNAVAILABLE, "not leader");
        px_call_unref(call);
        free(x);
        return;
    }
    pthread_mutex_lock(&w->mu);
    if (ss_watch_send(call, w->evs, w->n, true) != GT_OK) {
        pthread_mutex_unlock(&w->mu);
        pthread_rwlock_unlock(&s->late_lock);
        px_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        px_call_unref(call);
        free(x);
        return;
    }
    x->next = w->watchers;
    w->watchers = x;
    w->nwatchers++;
    pthread_mutex_unlock(&w->mu);
    pthread_rwlock_unlock(&s->late_lock);
    /* A cancel or a stop that came before we listed it found nothing. */
    if (px_call_is_cancelled(call))
        ss_meta_watch_interrupt(call, PX_INTERRUPT_CANCELLED);
    else if (px_call_server_stopping(call))
        ss_meta_watch_interrupt(call, PX_INTERRUPT_SHUTDOWN);
}

void ss_meta_watch_interrupt(px_call_t *call, px_interrupt_t why)
{
    ss_srv_t *s = ss_srv(call);
    ss_watch_t *w;
    ss_watcher_t **pp, *x = NULL;

    /* Replication may close the engine (and its watch) while the node
     * serves: the read lock keeps it until this is done. */
    pthread_rwlock_rdlock(&s->late_lock);
    if ((w = s->watch) == NULL) {
        pthread_rwlock_unlock(&s->late_lock);
        return;
    }
    pthread_mutex_lock(&w->mu);
    for (pp = &w->watchers; *pp != NULL; pp = &(*pp)->next) {
        if ((*pp)->call == call) {
            x = *pp;
            *pp = x->next;
            w->nwatchers--;
            break;
        }
    }
    pthread_mutex_unlock(&w->mu);
    pthread_rwlock_unlock(&s->late_lock);
    if (x == NULL)
        return;
    if (why == PX_INTERRUPT_SHUTDOWN)
        px_call_finish(call, GRPC_STATUS_UNAVAILABLE, "store node stopping");
    else
        px_call_finish(call, GRPC_STATUS_CANCELLED, NULL);
    px_call_unref(call);
    free(x);
}
