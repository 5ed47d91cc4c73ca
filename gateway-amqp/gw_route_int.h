/* Internal to the router (gw_route.c, gw_route_tbl.c): field-table work
 * shared by both files.  Not for other modules: they include gw_route.h. */
#ifndef GW_ROUTE_INT_H
#define GW_ROUTE_INT_H

#include <stdlib.h>
#include <string.h>

#include "gw_route.h"

/* One entry of a field table, for the headers merge. */
typedef struct gw_hent {
    gw_str_t key;
    gw_value_t val;
    size_t pos; /* wire position, to keep the sort stable */
} gw_hent_t;

/* x-match kinds. */
enum { GW_XM_ALL, GW_XM_ANY, GW_XM_ALL_X, GW_XM_ANY_X };

/* Grows *pp (an array of elem-byte items, *cap of them) to hold need;
 * false when out of memory (the array is unchanged). */
static inline bool gw_grow(void *pp, size_t *cap, size_t need, size_t elem)
{
    void **p = pp;
    if (need <= *cap)
        return true;
    size_t n = *cap ? *cap : 16;
    while (n < need) {
        if (n > SIZE_MAX / 2 / elem)
            return false;
        n *= 2;
    }
    void *q = realloc(*p, n * elem);
    if (q == NULL)
        return false;
    *p = q;
    *cap = n;
    return true;
}

/* Erlang's binary order: bytewise, a prefix first. */
static inline int gw_strcmp(gw_str_t a, gw_str_t b)
{
    size_t n = a.len < b.len ? a.len : b.len;
    int c = n ? memcmp(a.ptr, b.ptr, n) : 0;
    if (c != 0)
        return c;
    return a.len < b.len ? -1 : a.len > b.len;
}

/* Writes the normalised form of validated table `in` into out (in.len
 * bytes): top-level entries stably sorted by key (rabbit_binding's
 * sort_args), 'L' as 'l', booleans as octet 0/1, nested ones too.
 * GT_ENOMEM. */
gt_err_t gw_args_normalise(gw_table_t in, uint8_t *out);

/* Fills (*arr)[0..*n) (grown with gw_grow) with validated table t's
 * entries stably sorted by key.  false when out of memory. */
bool gw_hents_sorted(gw_table_t t, gw_hent_t **arr, size_t *cap, size_t *n);

/* The x-match kind of a headers binding's arguments. */
int gw_xmatch_of(gw_table_t args);

/* RabbitMQ's headers_match over sorted entries: binding p, message d. */
bool gw_hmatch(const gw_hent_t *p, size_t np, int kind, const gw_hent_t *d, size_t nd);

/* RabbitMQ's name for a type letter ("longstr", "signedint", ...), as
 * its error texts print it. */
const char *gw_route_type_atom(char t);

#endif
