/* Label-set families for /metrics.  See gt_metrics.h.
 *
 * Lookups probe an open-addressing table of atomic series pointers
 * (2 x max_sets slots or more, so probes stay short) without a lock: a
 * slot goes from NULL to a series once and never changes again.  Adding
 * takes `mu`, looks again and publishes the series (release), then
 * appends it to `order` for scrapes. */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "gt_metrics.h"

struct gt_mfam {
    unsigned nlabels, nvals;
    size_t max_sets;
    size_t mask;                      /* slots - 1 */
    _Atomic(gt_mseries_t *) *slots;
    _Atomic(gt_mseries_t *) *order;   /* max_sets of them, in added order */
    _Atomic size_t n;                 /* published in order[] */
    gt_mseries_t *other;              /* overflow series */
    atomic_bool other_used;
    pthread_mutex_t mu;               /* adding */
};

static uint64_t gt_mfam_hash(unsigned nlabels, const char *const *vals)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */

    for (unsigned i = 0; i < nlabels; i++) {
        const char *s = vals[i] != NULL ? vals[i] : "";
        for (; *s != '\0'; s++)
            h = (h ^ (uint8_t)*s) * 1099511628211ULL;
        h = (h ^ 0xff) * 1099511628211ULL; /* separator: no byte of a name */
    }
    return h;
}

static gt_mseries_t *gt_mseries_new(unsigned nlabels, unsigned nvals,
                                    const char *const *vals, uint64_t hash)
{
    size_t len[GT_MFAM_MAX_LABELS], total = 0;
    size_t head = (sizeof(gt_mseries_t) + 7) & ~(size_t)7;
    gt_mseries_t *s;
    char *p;

    for (unsigned i = 0; i < nlabels; i++) {
        len[i] = strlen(vals[i] != NULL ? vals[i] : "");
        total += len[i] + 1;
    }
    s = calloc(1, head + nvals * sizeof(uint64_t) + total);
    if (s == NULL)
        return NULL;
    s->hash = hash;
    s->v = (_Atomic uint64_t *)((char *)s + head);
    for (unsigned i = 0; i < nvals; i++)
        atomic_init(&s->v[i], 0);
    p = (char *)s + head + nvals * sizeof(uint64_t);
    for (unsigned i = 0; i < nlabels; i++) {
        memcpy(p, vals[i] != NULL ? vals[i] : "", len[i] + 1);
        s->labels[i] = p;
        p += len[i] + 1;
    }
    return s;
}

gt_mfam_t *gt_mfam_new(unsigned nlabels, unsigned nvals, size_t max_sets)
{
    const char *other[GT_MFAM_MAX_LABELS];
    gt_mfam_t *f;
    size_t slots = 16;

    if (nlabels < 1 || nlabels > GT_MFAM_MAX_LABELS || nvals < 1 ||
        max_sets < 1 || max_sets > (1u << 24))
        return NULL;
    if ((f = calloc(1, sizeof(*f))) == NULL)
        return NULL;
    while (slots < 2 * max_sets)
        slots *= 2;
    f->nlabels = nlabels;
    f->nvals = nvals;
    f->max_sets = max_sets;
    f->mask = slots - 1;
    for (unsigned i = 0; i < nlabels; i++)
        other[i] = GT_MFAM_OTHER;
    f->slots = calloc(slots, sizeof(*f->slots));
    f->order = calloc(max_sets, sizeof(*f->order));
    f->other = gt_mseries_new(nlabels, nvals, other, 0);
    if (f->slots == NULL || f->order == NULL || f->other == NULL) {
        free(f->slots);
        free(f->order);
        free(f->other);
        free(f);
        return NULL;
    }
    atomic_init(&f->n, 0);
    atomic_init(&f->other_used, false);
    pthread_mutex_init(&f->mu, NULL);
    return f;
}

void gt_mfam_free(gt_mfam_t *f)
{
    if (f == NULL)
        return;
    for (size_t i = 0; i < atomic_load(&f->n); i++)
        free(atomic_load(&f->order[i]));
    free(f->slots);
    free(f->order);
    free(f->other);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

static bool gt_mseries_is(const gt_mseries_t *s, unsigned nlabels,
                          const char *const *vals, uint64_t hash)
{
    if (s->hash != hash)
        return false;
    for (unsigned i = 0; i < nlabels; i++)
        if (strcmp(s->labels[i], vals[i] != NULL ? vals[i] : "") != 0)
            return false;
    return true;
}

/* The slot holding the label set, or the empty slot where it would go
 * (the table is never full: it has twice max_sets slots). */
static _Atomic(gt_mseries_t *) *gt_mfam_probe(gt_mfam_t *f, const char *const *vals,
                                              uint64_t hash, gt_mseries_t **found)
{
    for (size_t i = hash & f->mask;; i = (i + 1) & f->mask) {
        gt_mseries_t *s = atomic_load_explicit(&f->slots[i], memory_order_acquire);
        if (s == NULL || gt_mseries_is(s, f->nlabels, vals, hash)) {
            *found = s;
            return &f->slots[i];
        }
    }
}

gt_mseries_t *gt_mfam_get(gt_mfam_t *f, const char *const *vals)
{
    uint64_t hash = gt_mfam_hash(f->nlabels, vals);
    _Atomic(gt_mseries_t *) *slot;
    gt_mseries_t *s;
    size_t n;

    gt_mfam_probe(f, vals, hash, &s);
    if (s != NULL)
        return s;
    pthread_mutex_lock(&f->mu);
    slot = gt_mfam_probe(f, vals, hash, &s);
    n = atomic_load_explicit(&f->n, memory_order_relaxed);
    if (s == NULL && n < f->max_sets &&
        (s = gt_mseries_new(f->nlabels, f->nvals, vals, hash)) != NULL) {
        atomic_store_explicit(slot, s, memory_order_release);
        atomic_store_explicit(&f->order[n], s, memory_order_release);
        atomic_store_explicit(&f->n, n + 1, memory_order_release);
    }
    pthread_mutex_unlock(&f->mu);
    if (s == NULL && n >= f->max_sets) {
        atomic_store_explicit(&f->other_used, true, memory_order_relaxed);
        s = f->other;
    }
    return s;
}

size_t gt_mfam_count(const gt_mfam_t *f)
{
    return atomic_load_explicit(&f->n, memory_order_acquire);
}

const gt_mseries_t *gt_mfam_at(const gt_mfam_t *f, size_t i)
{
    return atomic_load_explicit(&f->order[i], memory_order_acquire);
}

const gt_mseries_t *gt_mfam_other(const gt_mfam_t *f)
{
    return atomic_load_explicit(&f->other_used, memory_order_relaxed) ? f->other : NULL;
}

unsigned gt_mfam_nlabels(const gt_mfam_t *f) { return f->nlabels; }

void gt_mseries_observe(gt_mseries_t *s, unsigned base, const uint64_t *bounds,
                        unsigned nb, uint64_t x)
{
    unsigned b = 0;

    while (b < nb && x > bounds[b])
        b++;
    gt_mseries_add(s, base + b, 1);
    gt_mseries_add(s, base + nb + 1, x);
}

/* ---- text format ---- */

void gt_metrics_head(FILE *out, const char *name, const char *type, const char *help)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void gt_metrics_label_value(FILE *out, const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\' || *s == '"')
            fputc('\\', out), fputc(*s, out);
        else if (*s == '\n')
            fputs("\\n", out);
        else
            fputc(*s, out);
    }
}

void gt_metrics_series(FILE *out, const char *name, const char *const *names,
                       const gt_mseries_t *s, unsigned nlabels, const char *extra)
{
    fputs(name, out);
    fputc('{', out);
    for (unsigned i = 0; i < nlabels; i++) {
        fprintf(out, "%s%s=\"", i > 0 ? "," : "", names[i]);
        gt_metrics_label_value(out, s->labels[i]);
        fputc('"', out);
    }
    if (extra != NULL)
        fprintf(out, "%s%s", nlabels > 0 ? "," : "", extra);
    fputs("} ", out);
}

static void gt_metrics_each(const gt_mfam_t *f,
                            void (*fn)(const gt_mseries_t *s, void *arg), void *arg)
{
    size_t n = gt_mfam_count(f);

    for (size_t i = 0; i < n; i++) {
        const gt_mseries_t *s = gt_mfam_at(f, i);
        if (s != NULL)
            fn(s, arg);
    }
    if (gt_mfam_other(f) != NULL)
        fn(gt_mfam_other(f), arg);
}

typedef struct {
    FILE *out;
    const gt_mfam_t *f;
    const char *name;
    const char *const *names;
    unsigned i, nb;
    const uint64_t *bounds;
    double div;
} gt_mwrite_t;

static void gt_metrics_val_one(const gt_mseries_t *s, void *arg)
{
    gt_mwrite_t *w = arg;

    gt_metrics_series(w->out, w->name, w->names, s, w->f->nlabels, NULL);
    fprintf(w->out, "%llu\n", (unsigned long long)gt_mseries_val(s, w->i));
}

void gt_metrics_write_val(FILE *out, const gt_mfam_t *f, const char *name,
                          const char *const *names, unsigned i)
{
    gt_mwrite_t w = {.out = out, .f = f, .name = name, .names = names, .i = i};

    gt_metrics_each(f, gt_metrics_val_one, &w);
}

static void gt_metrics_hist_one(const gt_mseries_t *s, void *arg)
{
    gt_mwrite_t *w = arg;
    char n[128], le[48];
    uint64_t cum = 0;

    snprintf(n, sizeof(n), "%s_bucket", w->name);
    for (unsigned b = 0; b <= w->nb; b++) {
        cum += gt_mseries_val(s, w->i + b);
        if (b < w->nb)
            snprintf(le, sizeof(le), "le=\"%.17g\"", (double)w->bounds[b] / w->div);
        else
            snprintf(le, sizeof(le), "le=\"+Inf\"");
        gt_metrics_series(w->out, n, w->names, s, w->f->nlabels, le);
        fprintf(w->out, "%llu\n", (unsigned long long)cum);
    }
    snprintf(n, sizeof(n), "%s_sum", w->name);
    gt_metrics_series(w->out, n, w->names, s, w->f->nlabels, NULL);
    fprintf(w->out, "%.17g\n", (double)gt_mseries_val(s, w->i + w->nb + 1) / w->div);
    snprintf(n, sizeof(n), "%s_count", w->name);
    gt_metrics_series(w->out, n, w->names, s, w->f->nlabels, NULL);
    fprintf(w->out, "%llu\n", (unsigned long long)cum);
}

void gt_metrics_write_hist(FILE *out, const gt_mfam_t *f, const char *name,
                           const char *const *names, unsigned base,
                           const uint64_t *bounds, unsigned nb, double div)
{
    gt_mwrite_t w = {.out = out, .f = f, .name = name, .names = names,
                     .i = base, .nb = nb, .bounds = bounds, .div = div};

    gt_metrics_each(f, gt_metrics_hist_one, &w);
}
