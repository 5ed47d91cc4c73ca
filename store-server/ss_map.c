/* A small byte-keyed chained hash map (FNV-1a), grown at load 1.  The
 * caller locks.  Used for parked polls' cancel keys and the de-dup window. */
#include <stdlib.h>
#include <string.h>

#include "ss_int.h"

static uint64_t ss_hash(const void *key, size_t klen)
{
    const uint8_t *p = key;
    uint64_t h = 1469598103934665603ULL;

    for (size_t i = 0; i < klen; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

void ss_map_init(ss_map_t *m)
{
    memset(m, 0, sizeof(*m));
}

void ss_map_free(ss_map_t *m)
{
    for (size_t i = 0; i < m->nb; i++) {
        ss_map_ent_t *e = m->b[i], *n;
        for (; e != NULL; e = n) {
            n = e->next;
            free(e);
        }
    }
    free(m->b);
    memset(m, 0, sizeof(*m));
}

static ss_map_ent_t **ss_map_slot(const ss_map_t *m, const void *key,
                                  size_t klen)
{
    ss_map_ent_t **pp;

    if (m->nb == 0)
        return NULL;
    pp = &m->b[ss_hash(key, klen) & (m->nb - 1)];
    for (; *pp != NULL; pp = &(*pp)->next)
        if ((*pp)->klen == klen && memcmp((*pp)->key, key, klen) == 0)
            break;
    return pp;
}

void *ss_map_get(const ss_map_t *m, const void *key, size_t klen)
{
    ss_map_ent_t **pp = ss_map_slot(m, key, klen);
    return pp != NULL && *pp != NULL ? (*pp)->val : NULL;
}

static gt_err_t ss_map_grow(ss_map_t *m)
{
    size_t nb = m->nb ? m->nb * 2 : 64;
    ss_map_ent_t **b = calloc(nb, sizeof(*b));

    if (b == NULL)
        return GT_ENOMEM;
    for (size_t i = 0; i < m->nb; i++) {
        ss_map_ent_t *e = m->b[i], *n;
        for (; e != NULL; e = n) {
            size_t j = ss_hash(e->key, e->klen) & (nb - 1);
            n = e->next;
            e->next = b[j];
            b[j] = e;
        }
    }
    free(m->b);
    m->b = b;
    m->nb = nb;
    return GT_OK;
}

gt_err_t ss_map_put(ss_map_t *m, const void *key, size_t klen, void *val)
{
    ss_map_ent_t **pp, *e;

    if (m->count >= m->nb && ss_map_grow(m) != GT_OK && m->nb == 0)
        return GT_ENOMEM;
    pp = ss_map_slot(m, key, klen);
    if (*pp != NULL)
        return GT_EEXIST;
    if ((e = malloc(sizeof(*e) + klen)) == NULL)
        return GT_ENOMEM;
    e->next = NULL;
    e->val = val;
    e->klen = klen;
    memcpy(e->key, key, klen);
    *pp = e;
    m->count++;
    return GT_OK;
}

void *ss_map_del(ss_map_t *m, const void *key, size_t klen)
{
    ss_map_ent_t **pp = ss_map_slot(m, key, klen), *e;
    void *val;

    if (pp == NULL || (e = *pp) == NULL)
        return NULL;
    *pp = e->next;
    val = e->val;
    free(e);
    m->count--;
    return val;
}
