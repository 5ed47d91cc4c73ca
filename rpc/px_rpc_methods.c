/* The method table: full gRPC path -> handler, kept sorted for bsearch.
 * Built once at start-up and read-only afterwards, so lookups from worker
 * threads take no lock. */
#include <stdlib.h>
#include <string.h>

#include "px_rpc.h"

void px_method_table_init(px_method_table_t *t)
{
    memset(t, 0, sizeof(*t));
}

void px_method_table_free(px_method_table_t *t)
{
    free(t->methods);
    memset(t, 0, sizeof(*t));
}

/* Compares a counted path with a NUL-terminated one, like strcmp. */
static int px_path_cmp(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c != 0)
        return c;
    return alen < blen ? -1 : alen > blen ? 1 : 0;
}

/* "/svc/method" with both parts non-empty and no further slash. */
static bool px_path_valid(const char *p)
{
    const char *slash;
    if (p == NULL || p[0] != '/')
        return false;
    slash = strchr(p + 1, '/');
    return slash != NULL && slash > p + 1 && slash[1] != '\0' &&
           strchr(slash + 1, '/') == NULL;
}

gt_err_t px_method_table_add(px_method_table_t *t, const px_method_t *m)
{
    size_t lo = 0, hi = t->count;

    if (m == NULL || !px_path_valid(m->path))
        return GT_EINVAL;
    if (m->on_request != NULL ? m->req_desc == NULL || m->on_message != NULL
                              : m->on_message == NULL)
        return GT_EINVAL;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = px_path_cmp(m->path, strlen(m->path), t->methods[mid]->path);
        if (c == 0)
            return GT_EEXIST;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    if (t->count == t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 16;
        const px_method_t **n = realloc(t->methods, ncap * sizeof(*n));
        if (n == NULL)
            return GT_ENOMEM;
        t->methods = n;
        t->cap = ncap;
    }
    memmove(&t->methods[lo + 1], &t->methods[lo],
            (t->count - lo) * sizeof(*t->methods));
    t->methods[lo] = m;
    t->count++;
    return GT_OK;
}

const px_method_t *px_method_table_find(const px_method_table_t *t,
                                        const char *path, size_t len)
{
    size_t lo = 0, hi = t->count;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = px_path_cmp(path, len, t->methods[mid]->path);
        if (c == 0)
            return t->methods[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}
