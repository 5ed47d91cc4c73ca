/* Parked (long-polling) pops and pulls, indexed so that parking,
 * cancelling and waking cost O(log n) in the number parked, and pull.
 *
 * A request that finds nothing parks in a *class*: the requests of a class
 * ask the same question (pop: topic, group, queue, filter; pull: topic,
 * queue, offset, filter), so while the first of a class (the earliest to
 * arrive) finds nothing, so would the rest.  Classes hang off their topic's
 * waiter record; a publish marks that record dirty (st_parks_wake), and
 * the service thread retries only dirty topics, class by class, head
 * first, handing messages out first come first served until a head finds
 * nothing.  An expiring delivery (st->next_expiry) marks every topic with
 * waiters dirty.  Deadlines sit in one min-heap; cancel keys in a hash.
 * All of it is guarded by st->lock; callbacks run after it is released,
 * on the service thread. */
#include <stdlib.h>
#include <time.h>
#include <string.h>

#include "st_pop.h"

#define PULL_MAX 256
#define PULL_SCAN 4096 /* entries a pull steps over at most */
#define TOMBS 256      /* early cancels remembered */

enum { PK_POP = 0, PK_PULL };

/* Intrusive chained hash table keyed by a 64-bit hash; callers compare
 * the full key along the chain. */
typedef struct hnode {
    struct hnode *next;
    uint64_t h;
} hnode_t;

typedef struct hmap {
    hnode_t **b;
    size_t nb, n;
} hmap_t;

#define CONTAINER(p, T, m) ((T *)(void *)((char *)(p) - offsetof(T, m)))

typedef struct twait twait_t;
typedef struct pclass pclass_t;

struct st_park {
    hnode_t kn;             /* by cancel key (when key != 0) */
    uint8_t kind;
    uint64_t key, seq;
    int64_t deadline;
    size_t hidx;            /* position in the deadline heap */
    pclass_t *cls;
    st_park_t *prev, *next; /* in the class, arrival order */
    union {
        st_pop_req_t pop;
        st_pull_req_t pull;
    } req;                  /* strings point at the copies below */
    char *group, *topic;
    st_filter_t f;
    union {
        st_pop_cb pop;
        st_msgs_cb pull;
    } cb;
    void *arg;
};

struct pclass {
    hnode_t hn;
    twait_t *tw;
    pclass_t *prev, *next;  /* in the topic's class list */
    st_park_t *head, *tail;
};

struct twait {
    hnode_t hn;
    st_topic_rt_t *t;
    pclass_t *classes;
    twait_t *dnext;         /* on the dirty list */
    bool dirty;
};

typedef struct st_parks {
    hmap_t topics, classes, keys;
    st_park_t **heap;
    size_t n, cap;
    twait_t *dirty;
    uint64_t seq;
    uint64_t tombs[TOMBS];
    size_t tomb_next;
    struct done *cancelled; /* completed by the service thread */
} st_parks_t;

/* A request taken off the index, to be answered unlocked. */
typedef struct done {
    struct done *next;
    st_park_t *p;
    gt_err_t rc;
    st_pop_out_t pop;
    st_message_t *m;        /* pull */
    uint8_t **bufs;
    size_t n;
    uint64_t next_off;
} done_t;

/* ---- hash table --------------------------------------------------------- */
static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    return h * 0xff51afd7ed558ccdull;
}

static uint64_t hash_str(uint64_t h, const char *s)
{
    for (; s && *s; s++)
        h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return mix(h, 1);
}

static gt_err_t hm_reserve(hmap_t *m)
{
    if (m->n + 1 <= m->nb)
        return GT_OK;
    size_t nb = m->nb ? m->nb * 2 : 64;
    hnode_t **b = calloc(nb, sizeof(*b));
    if (!b)
        return m->nb ? GT_OK : GT_ENOMEM; /* longer chains will do */
    for (size_t i = 0; i < m->nb; i++)
        for (hnode_t *e = m->b[i], *next; e; e = next) {
            next = e->next;
            e->next = b[e->h & (nb - 1)];
            b[e->h & (nb - 1)] = e;
        }
    free(m->b);
    m->b = b;
    m->nb = nb;
    return GT_OK;
}

static void hm_add(hmap_t *m, hnode_t *e)
{
    hnode_t **b = &m->b[e->h & (m->nb - 1)];
    e->next = *b;
    *b = e;
    m->n++;
}

static hnode_t *hm_first(const hmap_t *m, uint64_t h)
{
    hnode_t *e = m->nb ? m->b[h & (m->nb - 1)] : NULL;
    while (e && e->h != h)
        e = e->next;
    return e;
}

static hnode_t *hm_next(hnode_t *e)
{
    uint64_t h = e->h;
    for (e = e->next; e && e->h != h; e = e->next)
        ;
    return e;
}

static void hm_del(hmap_t *m, hnode_t *e)
{
    hnode_t **pp = &m->b[e->h & (m->nb - 1)];
    while (*pp != e)
        pp = &(*pp)->next;
    *pp = e->next;
    m->n--;
}

/* ---- deadline heap (ties: arrival order) -------------------------------- */
static bool heap_less(const st_park_t *a, const st_park_t *b)
{
    return a->deadline < b->deadline ||
           (a->deadline == b->deadline && a->seq < b->seq);
}

static void heap_set(st_parks_t *P, size_t i, st_park_t *p)
{
    P->heap[i] = p;
    p->hidx = i;
}

static void heap_up(st_parks_t *P, size_t i)
{
    st_park_t *p = P->heap[i];
    while (i > 0 && heap_less(p, P->heap[(i - 1) / 2])) {
        heap_set(P, i, P->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_set(P, i, p);
}

static void heap_down(st_parks_t *P, size_t i)
{
    st_park_t *p = P->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= P->n)
            break;
        if (c + 1 < P->n && heap_less(P->heap[c + 1], P->heap[c]))
            c++;
        if (!heap_less(P->heap[c], p))
            break;
        heap_set(P, i, P->heap[c]);
        i = c;
    }
    heap_set(P, i, p);
}

static void heap_remove(st_parks_t *P, st_park_t *p)
{
    size_t i = p->hidx;
    st_park_t *last = P->heap[--P->n];
    if (i == P->n)
        return;
    heap_set(P, i, last);
    heap_down(P, i);
    heap_up(P, last->hidx);
}

/* ---- classes ------------------------------------------------------------ */
static uint64_t class_hash(const st_park_t *p, const st_topic_rt_t *t)
{
    uint64_t h = mix((uint64_t)(uintptr_t)t, p->kind);
    h = mix(hash_str(h, p->f.text), p->f.kind);
    if (p->kind == PK_POP)
        return mix(hash_str(h, p->group), (uint64_t)(uint32_t)p->req.pop.queue_id);
    return mix(mix(h, p->req.pull.queue), p->req.pull.offset);
}

static bool class_is(const pclass_t *c, const st_park_t *p,
                     const st_topic_rt_t *t)
{
    const st_park_t *h = c->head;
    if (c->tw->t != t || h->kind != p->kind || !st_filter_same(&h->f, &p->f))
        return false;
    if (p->kind == PK_POP)
        return h->req.pop.queue_id == p->req.pop.queue_id &&
               h->req.pop.high_first == p->req.pop.high_first &&
               strcmp(h->group, p->group) == 0;
    return h->req.pull.queue == p->req.pull.queue &&
           h->req.pull.offset == p->req.pull.offset;
}

static twait_t *twait_find(const st_parks_t *P, const st_topic_rt_t *t)
{
    uint64_t h = mix((uint64_t)(uintptr_t)t, 7);
    for (hnode_t *e = hm_first(&P->topics, h); e; e = hm_next(e)) {
        twait_t *tw = CONTAINER(e, twait_t, hn);
        if (tw->t == t)
            return tw;
    }
    return NULL;
}

static gt_err_t parks_get(st_local_t *st, st_parks_t **out)
{
    if (!st->parks && !(st->parks = calloc(1, sizeof(*st->parks))))
        return GT_ENOMEM;
    *out = st->parks;
    return GT_OK;
}

/* Adds p to the index (takes it on GT_OK).  Lock held. */
static gt_err_t index_add(st_local_t *st, st_park_t *p, st_topic_rt_t *t)
{
    st_parks_t *P;
    gt_err_t rc = parks_get(st, &P);
    if (rc == GT_OK && P->n == P->cap) {
        size_t cap = P->cap ? P->cap * 2 : 256;
        st_park_t **h = realloc(P->heap, cap * sizeof(*h));
        if (!h)
            rc = GT_ENOMEM;
        else {
            P->heap = h;
            P->cap = cap;
        }
    }
    if (rc != GT_OK || (rc = hm_reserve(&P->topics)) != GT_OK ||
        (rc = hm_reserve(&P->classes)) != GT_OK ||
        (rc = hm_reserve(&P->keys)) != GT_OK)
        return rc;
    twait_t *tw = twait_find(P, t);
    if (!tw) {
        if (!(tw = calloc(1, sizeof(*tw))))
            return GT_ENOMEM;
        tw->t = t;
        tw->hn.h = mix((uint64_t)(uintptr_t)t, 7);
        hm_add(&P->topics, &tw->hn);
    }
    uint64_t ch = class_hash(p, t);
    pclass_t *c = NULL;
    for (hnode_t *e = hm_first(&P->classes, ch); e && !c; e = hm_next(e))
        if (class_is(CONTAINER(e, pclass_t, hn), p, t))
            c = CONTAINER(e, pclass_t, hn);
    if (!c) {
        if (!(c = calloc(1, sizeof(*c))))
            return GT_ENOMEM; /* tw stays, empty: freed at close */
        c->hn.h = ch;
        c->tw = tw;
        c->next = tw->classes;
        if (tw->classes)
            tw->classes->prev = c;
        tw->classes = c;
        hm_add(&P->classes, &c->hn);
    }
    p->cls = c;
    p->prev = c->tail;
    if (c->tail)
        c->tail->next = p;
    else
        c->head = p;
    c->tail = p;
    p->seq = ++P->seq;
    if (p->key) {
        p->kn.h = mix(p->key, 3);
        hm_add(&P->keys, &p->kn);
    }
    heap_set(P, P->n++, p);
    heap_up(P, P->n - 1);
    return GT_OK;
}

/* Takes p off the index (not freed).  Lock held. */
static void index_del(st_parks_t *P, st_park_t *p)
{
    pclass_t *c = p->cls;
    if (p->prev)
        p->prev->next = p->next;
    else
        c->head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        c->tail = p->prev;
    if (!c->head) {
        twait_t *tw = c->tw;
        if (c->prev)
            c->prev->next = c->next;
        else
            tw->classes = c->next;
        if (c->next)
            c->next->prev = c->prev;
        hm_del(&P->classes, &c->hn);
        free(c);
    }
    if (p->key)
        hm_del(&P->keys, &p->kn);
    heap_remove(P, p);
}

static void park_free(st_park_t *p)
{
    st_filter_free(&p->f);
    free(p->group);
    free(p->topic);
    free(p);
}

static bool tomb_take(st_parks_t *P, uint64_t key)
{
    for (size_t i = 0; P && key && i < TOMBS; i++)
        if (P->tombs[i] == key) {
            P->tombs[i] = 0;
            return true;
        }
    return false;
}

/* Parks a request (lock held).  On GT_OK takes *f; *cancelled tells that
 * its cancel came first (then nothing was parked and *f is not taken). */
static gt_err_t park(st_local_t *st, st_park_t *p, st_topic_rt_t *t,
                     st_filter_t *f, int64_t now, int64_t timeout,
                     bool *cancelled)
{
    uint64_t key = p->kind == PK_POP ? p->req.pop.cancel_key
                                     : p->req.pull.cancel_key;
    *cancelled = tomb_take(st->parks, key);
    if (*cancelled)
        return GT_OK;
    p->key = key;
    p->f = *f;
    p->deadline = now + timeout;
    gt_err_t rc = index_add(st, p, t);
    if (rc != GT_OK) {
        p->f = (st_filter_t){0};
        return rc;
    }
    *f = (st_filter_t){0};
    pthread_cond_signal(&st->svc_cond);
    return GT_OK;
}

gt_err_t st_park_pop(st_local_t *st, const st_pop_req_t *req,
                     st_topic_rt_t *t, st_filter_t *f, int64_t now,
                     st_pop_cb cb, void *arg, bool *cancelled)
{
    st_park_t *p = calloc(1, sizeof(*p));
    if (!p || !(p->group = strdup(req->group)) ||
        !(p->topic = strdup(req->topic))) {
        if (p)
            free(p->group);
        free(p);
        return GT_ENOMEM;
    }
    p->kind = PK_POP;
    p->req.pop = *req;
    p->req.pop.group = p->group;
    p->req.pop.topic = p->topic;
    p->req.pop.filter_expr = NULL;
    p->cb.pop = cb;
    p->arg = arg;
    gt_err_t rc = park(st, p, t, f, now, req->poll_timeout_ms, cancelled);
    if (rc != GT_OK || *cancelled)
        park_free(p);
    return rc;
}

bool st_parks_any(const st_local_t *st)
{
    return st->parks && st->parks->n > 0;
}

bool st_parks_wake(st_local_t *st, st_topic_rt_t *t)
{
    st_parks_t *P = st->parks;
    twait_t *tw = P && P->n ? twait_find(P, t) : NULL;
    if (!tw || !tw->classes)
        return false;
    if (!tw->dirty) {
        tw->dirty = true;
        tw->dnext = P->dirty;
        P->dirty = tw;
    }
    return true;
}

void st_local_clock_kick(st_store_t *s)
{
    st_local_t *st = (st_local_t *)s;
    pthread_mutex_lock(&st->lock);
    st->next_expiry = INT64_MIN; /* recompute expiries at the new time */
    st->svc_kicks++;
    pthread_cond_signal(&st->svc_cond);
    pthread_mutex_unlock(&st->lock);
}

void st_local_clock_settle(st_store_t *s)
{
    st_local_t *st = (st_local_t *)s;
    st_local_clock_kick(s);
    pthread_mutex_lock(&st->lock);
    uint64_t k = st->svc_kicks;
    while (st->svc_kicks_done < k && !st->svc_stop) {
        pthread_mutex_unlock(&st->lock);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&st->lock);
    }
    pthread_mutex_unlock(&st->lock);
}

size_t st_local_parked(st_store_t *s)
{
    st_local_t *st = (st_local_t *)s;
    pthread_mutex_lock(&st->lock);
    size_t n = st->parks ? st->parks->n : 0;
    pthread_mutex_unlock(&st->lock);
    return n;
}

void st_pop_cancel_local(st_store_t *s, uint64_t key)
{
    st_local_t *st = (st_local_t *)s;
    st_parks_t *P;
    done_t *d = calloc(1, sizeof(*d));
    pthread_mutex_lock(&st->lock);
    st_park_t *p = NULL;
    if (key && d && !st->closing && parks_get(st, &P) == GT_OK) {
        for (hnode_t *e = hm_first(&P->keys, mix(key, 3)); e && !p;
             e = hm_next(e))
            if (CONTAINER(e, st_park_t, kn)->key == key)
                p = CONTAINER(e, st_park_t, kn);
        if (p) {
            index_del(P, p);
            d->p = p;
            d->next = P->cancelled;
            if (!P->cancelled) /* the service thread takes them all */
                pthread_cond_signal(&st->svc_cond);
            P->cancelled = d;
            d = NULL;
        } else {
            P->tombs[P->tomb_next++ % TOMBS] = key;
        }
    }
    pthread_mutex_unlock(&st->lock);
    free(d);
}

/* ---- pull --------------------------------------------------------------- */
static gt_err_t pull_alloc(done_t *d, uint32_t max)
{
    d->m = calloc(max, sizeof(*d->m));
    d->bufs = calloc(max, sizeof(*d->bufs));
    return d->m && d->bufs ? GT_OK : GT_ENOMEM;
}

/* Reads what a pull returns (lock held): matching records from *next,
 * stepping over those the filter rejects (at most PULL_SCAN entries).
 * GT_AGAIN: nothing yet at the end of the queue (a long poll may wait). */
static gt_err_t pull_collect(st_local_t *st, st_topic_rt_t *t,
                             const st_pull_req_t *r, const st_filter_t *f,
                             uint32_t max, done_t *d)
{
    gt_err_t rc = GT_OK;
    d->next_off = r->offset;
    if (r->queue >= t->meta.queue_count)
        return GT_EINVAL;
    if (r->queue >= t->nq)
        return GT_AGAIN; /* no message was ever written there */
    st_cq_t *q = &t->cq[r->queue];
    if (d->next_off < q->min_off)
        d->next_off = q->min_off;
    if (d->next_off > st_cq_end(q))
        return GT_ERANGE;
    for (uint32_t seen = 0; rc == GT_OK && d->n < max && seen < PULL_SCAN &&
                            d->next_off < st_cq_end(q); seen++) {
        st_cq_entry_t eb;
        const st_cq_entry_t *e = st_cq_get(t, r->queue, d->next_off, &eb);
        if (!e) { /* unreadable consume queue entry (logged) */
            rc = GT_EIO;
            break;
        }
        if (st_filter_match_hash(f, e->tag_hash)) {
            rc = st_log_read(st, e->pos, e->size, &d->bufs[d->n], &d->m[d->n]);
            if (rc != GT_OK)
                break;
            /* the queue read (a multi-queue record names its first) */
            d->m[d->n].topic = t->meta.name;
            d->m[d->n].queue_id = (int32_t)r->queue;
            d->m[d->n].queue_offset = d->next_off;
            if (st_filter_match(f, &d->m[d->n]))
                d->n++;
            else
                free(d->bufs[d->n]);
        }
        d->next_off++;
    }
    if (d->n)
        return GT_OK;
    return rc == GT_OK && d->next_off == st_cq_end(q) ? GT_AGAIN : rc;
}

static uint32_t pull_max(const st_pull_req_t *r)
{
    return r->max > PULL_MAX ? PULL_MAX : r->max ? r->max : 1;
}

static gt_err_t park_pull(st_local_t *st, const st_pull_req_t *req,
                          st_topic_rt_t *t, st_filter_t *f, uint64_t from,
                          st_msgs_cb cb, void *arg, bool *cancelled)
{
    st_park_t *p = calloc(1, sizeof(*p));
    if (!p || !(p->topic = strdup(req->topic))) {
        free(p);
        return GT_ENOMEM;
    }
    p->kind = PK_PULL;
    p->req.pull = *req;
    p->req.pull.topic = p->topic;
    p->req.pull.filter_expr = NULL;
    p->req.pull.offset = from; /* the class: where it waits */
    p->cb.pull = cb;
    p->arg = arg;
    gt_err_t rc = park(st, p, t, f, st_now_ms(), req->poll_timeout_ms,
                       cancelled);
    if (rc != GT_OK || *cancelled)
        park_free(p);
    return rc;
}

static void done_free(done_t *d)
{
    st_pop_out_free(&d->pop);
    for (size_t i = 0; i < d->n; i++)
        free(d->bufs[i]);
    free(d->m);
    free(d->bufs);
    free(d);
}

void st_pull_local(st_store_t *s, const st_pull_req_t *req, st_msgs_cb cb,
                   void *arg)
{
    st_local_t *st = (st_local_t *)s;
    st_filter_t f = {0};
    bool parked = false, cancelled = false;
    done_t *d = calloc(1, sizeof(*d));
    gt_err_t rc = d && req->topic ? pull_alloc(d, pull_max(req)) : GT_EINVAL;
    if (!d)
        rc = GT_ENOMEM;
    else if (rc == GT_OK)
        d->next_off = req->offset;
    if (rc == GT_OK && (req->poll_timeout_ms < 0 ||
                        req->poll_timeout_ms > ST_POLL_MAX_MS))
        rc = GT_EINVAL;
    if (rc == GT_OK)
        rc = st_filter_compile(req->filter_kind, req->filter_expr, &f);
    pthread_mutex_lock(&st->lock);
    st_topic_rt_t *t = rc == GT_OK ? st_topic_find(st, req->topic) : NULL;
    if (rc == GT_OK && !t)
        rc = GT_ENOTFOUND;
    else if (rc == GT_OK)
        rc = pull_collect(st, t, req, &f, pull_max(req), d);
    if (rc == GT_AGAIN && req->poll_timeout_ms > 0 && !st->closing)
        parked = park_pull(st, req, t, &f, d->next_off, cb, arg,
                           &cancelled) == GT_OK && !cancelled;
    pthread_mutex_unlock(&st->lock);
    st_filter_free(&f);
    if (rc == GT_AGAIN)
        rc = GT_OK;
    if (!parked)
        cb(arg, rc, rc == GT_OK ? d->m : NULL, rc == GT_OK ? d->n : 0,
           d ? d->next_off : req->offset);
    if (d)
        done_free(d);
}

/* ---- service ------------------------------------------------------------ */
/* Retries p (lock held): a done record when it is answered now, NULL
 * when it keeps waiting (or memory ran out: it waits on). */
static done_t *retry(st_local_t *st, st_park_t *p, int64_t now)
{
    st_topic_rt_t *t = p->cls->tw->t;
    done_t *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    if (t->deleted) {
        d->rc = GT_ENOTFOUND;
    } else if (p->kind == PK_POP) {
        d->rc = st_pop_attempt(st, t, &p->req.pop, &p->f, now, &d->pop);
        if (d->rc == GT_OK && d->pop.n == 0)
            d->rc = GT_AGAIN;
    } else if ((d->rc = pull_alloc(d, pull_max(&p->req.pull))) == GT_OK) {
        d->rc = pull_collect(st, t, &p->req.pull, &p->f,
                             pull_max(&p->req.pull), d);
    }
    if (d->rc == GT_AGAIN) {
        done_free(d);
        return NULL;
    }
    d->p = p;
    return d;
}

static int cmp_head(const void *a, const void *b)
{
    const pclass_t *x = *(pclass_t *const *)a, *y = *(pclass_t *const *)b;
    return x->head->seq < y->head->seq ? -1 : x->head->seq > y->head->seq;
}

/* Hands out to one topic's classes, earliest waiter's class first; each
 * class head first until a head finds nothing. */
static void serve_topic(st_local_t *st, twait_t *tw, int64_t now,
                        done_t ***tail)
{
    st_parks_t *P = st->parks;
    size_t n = 0, i = 0;
    for (pclass_t *c = tw->classes; c; c = c->next)
        n++;
    pclass_t **v = n > 1 ? malloc(n * sizeof(*v)) : NULL;
    pclass_t *one = tw->classes;
    if (v) {
        for (pclass_t *c = tw->classes; c; c = c->next)
            v[i++] = c;
        qsort(v, n, sizeof(*v), cmp_head);
    } else if (n > 1) {
        n = 1; /* no memory: serve the first class; the rest next time */
        tw->dirty = true;
    }
    for (i = 0; i < n; i++) {
        pclass_t *c = v ? v[i] : one;
        bool more = true;
        while (more) {
            st_park_t *p = c->head;
            done_t *d = retry(st, p, now);
            if (!d)
                break;
            more = p->next != NULL; /* index_del frees an emptied class */
            index_del(P, p);
            **tail = d;
            *tail = &d->next;
        }
    }
    free(v);
}

static void complete_list(done_t *d)
{
    while (d) {
        done_t *next = d->next;
        st_park_t *p = d->p;
        if (p->kind == PK_POP)
            p->cb.pop(p->arg, d->rc, d->rc == GT_OK ? d->pop.msgs : NULL,
                      d->rc == GT_OK ? d->pop.n : 0);
        else
            p->cb.pull(p->arg, d->rc, d->rc == GT_OK ? d->m : NULL,
                       d->rc == GT_OK ? d->n : 0,
                       d->n ? d->next_off : p->req.pull.offset);
        park_free(p);
        done_free(d);
        d = next;
    }
}

/* Marks every topic with waiters dirty (a delivery expired). */
static void wake_all(st_parks_t *P)
{
    for (size_t i = 0; i < P->topics.nb; i++)
        for (hnode_t *e = P->topics.b[i]; e; e = e->next) {
            twait_t *tw = CONTAINER(e, twait_t, hn);
            if (tw->classes && !tw->dirty) {
                tw->dirty = true;
                tw->dnext = P->dirty;
                P->dirty = tw;
            }
        }
}

int64_t st_parked_service(st_local_t *st, int64_t now)
{
    st_parks_t *P = st->parks;
    done_t *done = NULL, **tail = &done;
    bool expired = now >= st->next_expiry;
    if (P && P->n && expired)
        wake_all(P);
    if (expired)
        st_expiry_recompute(st, now);
    if (!P)
        return INT64_MAX;
    if (P->cancelled) {
        *tail = P->cancelled;
        while (*tail) {
            (*tail)->rc = GT_OK;
            tail = &(*tail)->next;
        }
        P->cancelled = NULL;
    }
    twait_t *dirty = P->dirty;
    P->dirty = NULL;
    while (dirty) {
        twait_t *tw = dirty;
        dirty = tw->dnext;
        tw->dirty = false;
        serve_topic(st, tw, now, &tail);
        if (tw->dirty) { /* put back: served partly */
            tw->dnext = P->dirty;
            P->dirty = tw;
        }
    }
    while (P->n && P->heap[0]->deadline <= now) {
        st_park_t *p = P->heap[0];
        done_t *d = calloc(1, sizeof(*d));
        if (!d)
            break;
        index_del(P, p);
        d->p = p;
        *tail = d;
        tail = &d->next;
    }
    int64_t wake = P->n ? P->heap[0]->deadline : INT64_MAX;
    if (P->n && st->next_expiry < wake)
        wake = st->next_expiry;
    if (done) {
        pthread_mutex_unlock(&st->lock);
        complete_list(done);
        pthread_mutex_lock(&st->lock);
        return 0; /* state may have moved while unlocked: look again */
    }
    return wake == INT64_MAX ? INT64_MAX : wake - now;
}

void st_parked_shutdown(st_local_t *st)
{
    done_t *done = NULL;
    pthread_mutex_lock(&st->lock);
    st_parks_t *P = st->parks;
    st->parks = NULL;
    pthread_mutex_unlock(&st->lock);
    if (!P)
        return;
    done = P->cancelled;
    while (P->n) {
        st_park_t *p = P->heap[0];
        index_del(P, p);
        done_t *d = calloc(1, sizeof(*d));
        if (!d) {
            if (p->kind == PK_POP)
                p->cb.pop(p->arg, GT_ESHUTDOWN, NULL, 0);
            else
                p->cb.pull(p->arg, GT_ESHUTDOWN, NULL, 0, p->req.pull.offset);
            park_free(p);
            continue;
        }
        d->p = p;
        d->rc = GT_ESHUTDOWN;
        d->next = done;
        done = d;
    }
    complete_list(done);
    for (size_t i = 0; i < P->topics.nb; i++)
        for (hnode_t *e = P->topics.b[i], *next; e; e = next) {
            next = e->next;
            free(CONTAINER(e, twait_t, hn));
        }
    free(P->topics.b);
    free(P->classes.b);
    free(P->keys.b);
    free(P->heap);
    free(P);
}
