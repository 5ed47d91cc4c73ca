/* In-memory tables of the local engine: topics with their consume queues,
 * groups with their per-queue consumption state (the window of offsets
 * between the committed offset and the pop position).  Everything here is
 * guarded by st->lock; callers hold it.  Consume queues (their files and
 * cache are st_cq.c) are rebuilt from the commitlog at start-up or loaded
 * from the table snapshot, consumption state from the state log.  The id /
 * key index is st_index.c. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "st_int.h"

/* ---- hash maps ------------------------------------------------------------ */
static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a 64 */
    while (*s)
        h = (h ^ (uint8_t)*s++) * 1099511628211ull;
    return h ^ (h >> 29);
}

static uint64_t ptr_hash(const void *p)
{
    uint64_t h = (uint64_t)(uintptr_t)p * 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 31);
}

/* First slot of hash h; iterate with (i + 1) & (cap - 1) until p == NULL. */
static size_t map_first(const st_map_t *m, uint64_t h)
{
    return (size_t)h & (m->cap - 1);
}

static gt_err_t map_put(st_map_t *m, uint64_t h, void *p)
{
    if ((m->n + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        struct st_mslot *s = calloc(cap, sizeof(*s));
        if (!s)
            return GT_ENOMEM;
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->s[i].p)
                continue;
            size_t k = (size_t)m->s[i].h & (cap - 1);
            while (s[k].p)
                k = (k + 1) & (cap - 1);
            s[k] = m->s[i];
        }
        free(m->s);
        m->s = s;
        m->cap = cap;
    }
    size_t k = map_first(m, h);
    while (m->s[k].p)
        k = (k + 1) & (m->cap - 1);
    m->s[k] = (struct st_mslot){.h = h, .p = p};
    m->n++;
    return GT_OK;
}

static void map_free(st_map_t *m)
{
    free(m->s);
    memset(m, 0, sizeof(*m));
}

/* ---- topics -------------------------------------------------------------- */
/* The topic object named name, deleted or not; NULL if there is none. */
static st_topic_rt_t *topic_lookup(st_local_t *st, const char *name)
{
    st_map_t *m = &st->topic_map;
    if (!m->cap)
        return NULL;
    uint64_t h = name_hash(name);
    for (size_t k = map_first(m, h); m->s[k].p; k = (k + 1) & (m->cap - 1)) {
        st_topic_rt_t *t = m->s[k].p;
        if (m->s[k].h == h && strcmp(t->meta.name, name) == 0)
            return t;
    }
    return NULL;
}

st_topic_rt_t *st_topic_find(st_local_t *st, const char *name)
{
    st_topic_rt_t *t = name ? topic_lookup(st, name) : NULL;
    return t && !t->deleted ? t : NULL;
}

/* Finds a topic object, deleted or not, creating a (deleted) one. */
st_topic_rt_t *st_topic_vivify(st_local_t *st, const char *name)
{
    if (!name || strlen(name) > ST_NAME_MAX)
        return NULL;
    st_topic_rt_t *t = topic_lookup(st, name);
    if (t)
        return t;
    if (st->ntopics == st->topics_cap) {
        size_t cap = st->topics_cap ? st->topics_cap * 2 : 16;
        st_topic_rt_t **n = realloc(st->topics, cap * sizeof(*n));
        if (!n)
            return NULL;
        st->topics = n;
        st->topics_cap = cap;
    }
    if (!(t = calloc(1, sizeof(*t))))
        return NULL;
    strcpy(t->meta.name, name);
    t->st = st;
    t->meta.perm = ST_PERM_READ | ST_PERM_WRITE;
    t->deleted = true;
    if (map_put(&st->topic_map, name_hash(name), t) != GT_OK) {
        free(t);
        return NULL;
    }
    st->topics[st->ntopics++] = t;
    return t;
}

gt_err_t st_topic_grow(st_topic_rt_t *t, uint32_t nq)
{
    if (nq <= t->nq)
        return GT_OK;
    st_cq_t *n = realloc(t->cq, nq * sizeof(*n));
    if (!n)
        return GT_ENOMEM;
    memset(n + t->nq, 0, (nq - t->nq) * sizeof(*n));
    t->cq = n;
    t->nq = nq;
    return GT_OK;
}

/* ---- groups -------------------------------------------------------------- */
static st_group_rt_t *group_lookup(st_local_t *st, const char *name)
{
    st_map_t *m = &st->group_map;
    if (!m->cap)
        return NULL;
    uint64_t h = name_hash(name);
    for (size_t k = map_first(m, h); m->s[k].p; k = (k + 1) & (m->cap - 1)) {
        st_group_rt_t *g = m->s[k].p;
        if (m->s[k].h == h && strcmp(g->meta.name, name) == 0)
            return g;
    }
    return NULL;
}

st_group_rt_t *st_group_find(st_local_t *st, const char *name)
{
    st_group_rt_t *g = name ? group_lookup(st, name) : NULL;
    return g && !g->deleted ? g : NULL;
}

/* Finds a group object, deleted or not, creating one with defaults. */
st_group_rt_t *st_group_vivify(st_local_t *st, const char *name)
{
    if (!name || strlen(name) > ST_NAME_MAX)
        return NULL;
    st_group_rt_t *g = group_lookup(st, name);
    if (g)
        return g;
    if (st->ngroups == st->groups_cap) {
        size_t cap = st->groups_cap ? st->groups_cap * 2 : 16;
        st_group_rt_t **n = realloc(st->groups, cap * sizeof(*n));
        if (!n)
            return NULL;
        st->groups = n;
        st->groups_cap = cap;
    }
    if (!(g = calloc(1, sizeof(*g))))
        return NULL;
    strcpy(g->meta.name, name);
    g->meta.max_delivery_attempts = 16;
    g->meta.consume_from = ST_CONSUME_FROM_FIRST;
    g->deleted = true;
    if (map_put(&st->group_map, name_hash(name), g) != GT_OK) {
        free(g);
        return NULL;
    }
    st->groups[st->ngroups++] = g;
    return g;
}

st_gtopic_t *st_gtopic_find(st_group_rt_t *g, st_topic_rt_t *t, bool create)
{
    st_map_t *m = &g->tmap;
    uint64_t h = ptr_hash(t);
    if (m->cap)
        for (size_t k = map_first(m, h); m->s[k].p; k = (k + 1) & (m->cap - 1))
            if (((st_gtopic_t *)m->s[k].p)->topic == t)
                return m->s[k].p;
    st_gtopic_t *gt;
    if (!create || !(gt = calloc(1, sizeof(*gt))))
        return NULL;
    gt->topic = t;
    if (map_put(m, h, gt) != GT_OK) {
        free(gt);
        return NULL;
    }
    gt->next = g->topics;
    g->topics = gt;
    return gt;
}

st_cs_t *st_cs_find(st_local_t *st, st_group_rt_t *g, st_topic_rt_t *t,
                    uint32_t q, bool create)
{
    (void)st;
    st_gtopic_t *gt = st_gtopic_find(g, t, create);
    if (!gt)
        return NULL;
    if (q >= gt->ncs) {
        if (!create)
            return NULL;
        st_cs_t *n = realloc(gt->cs, (q + 1) * sizeof(*n));
        if (!n)
            return NULL;
        memset(n + gt->ncs, 0, (q + 1 - gt->ncs) * sizeof(*n));
        for (uint32_t i = gt->ncs; i <= q; i++)
            n[i].min_deadline = INT64_MAX;
        gt->cs = n;
        gt->ncs = q + 1;
    }
    return &gt->cs[q];
}

void st_tables_free(st_local_t *st)
{
    for (size_t i = 0; i < st->ntopics; i++) {
        for (uint32_t q = 0; q < st->topics[i]->nq; q++)
            st_cq_free(&st->topics[i]->cq[q]);
        free(st->topics[i]->cq);
        free(st->topics[i]);
    }
    for (size_t i = 0; i < st->ngroups; i++) {
        st_gtopic_t *gt = st->groups[i]->topics;
        while (gt) {
            st_gtopic_t *next = gt->next;
            for (uint32_t q = 0; q < gt->ncs; q++)
                free(gt->cs[q].w);
            free(gt->cs);
            free(gt);
            gt = next;
        }
        map_free(&st->groups[i]->tmap);
        free(st->groups[i]);
    }
    free(st->topics);
    free(st->groups);
    map_free(&st->topic_map);
    map_free(&st->group_map);
    st->topics = NULL;
    st->groups = NULL;
    st->ntopics = st->ngroups = st->topics_cap = st->groups_cap = 0;
    st_index_free(&st->index);
    st_cq_cache_free(st);
}

/* ---- consumption windows ------------------------------------------------------ */
st_went_t *st_cs_at(st_cs_t *cs, uint64_t off)
{
    return &cs->w[(cs->wh + (size_t)(off - cs->commit)) % cs->wcap];
}

gt_err_t st_cs_extend(st_cs_t *cs, uint64_t to, uint8_t state)
{
    while (cs->pop < to) {
        size_t used = (size_t)(cs->pop - cs->commit);
        if (used + 1 > cs->wcap) {
            size_t cap = cs->wcap ? cs->wcap * 2 : 64;
            st_went_t *n = malloc(cap * sizeof(*n));
            if (!n)
                return GT_ENOMEM;
            for (size_t i = 0; i < used; i++)
                n[i] = cs->w[(cs->wh + i) % cs->wcap];
            free(cs->w);
            cs->w = n;
            cs->wcap = cap;
            cs->wh = 0;
        }
        cs->pop++;
        *st_cs_at(cs, cs->pop - 1) = (st_went_t){.state = state};
    }
    return GT_OK;
}

void st_cs_advance(st_cs_t *cs)
{
    while (cs->commit < cs->pop && st_cs_at(cs, cs->commit)->state == ST_E_ACKED) {
        cs->wh = (cs->wh + 1) % cs->wcap;
        cs->commit++;
    }
}

void st_cs_reset(st_cs_t *cs, uint64_t commit)
{
    cs->commit = cs->pop = commit;
    cs->wh = 0;
    cs->min_deadline = INT64_MAX;
}

void st_cs_move_commit(st_cs_t *cs, uint64_t off)
{
    if (off <= cs->commit || off >= cs->pop) {
        if (off != cs->commit || off >= cs->pop)
            st_cs_reset(cs, off);
        return;
    }
    cs->wh = (cs->wh + (size_t)(off - cs->commit)) % cs->wcap;
    cs->commit = off;
    st_cs_advance(cs);
}

void st_cs_clamp(st_cs_t *cs, const st_cq_t *q)
{
    uint64_t end = st_cq_end(q);
    if (cs->commit > end)
        st_cs_reset(cs, end);
    else if (cs->pop > end)
        cs->pop = end; /* entries beyond the end were lost with the log tail */
    if (cs->commit < q->min_off)
        st_cs_move_commit(cs, q->min_off);
}
