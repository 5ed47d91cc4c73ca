/* gt_metrics: labelled counters for /metrics, cheap on the hot path and
 * bounded in cardinality.
 *
 * A family (gt_mfam_t) is a set of series keyed by 1..GT_MFAM_MAX_LABELS
 * label values (e.g. topic and consumer group).  Each series holds `nvals`
 * 64-bit atomic values: counters, or a histogram's buckets and sum (see
 * gt_mseries_observe).  A hot path finds its series with gt_mfam_get()
 * (a hash lookup without a lock) and adds with relaxed atomics: no lock
 * is shared per message.  Only adding a new label set takes the family's
 * mutex.  A family holds at most `max_sets` label sets; later ones all
 * count in one overflow series whose label values are "_other", so a
 * client inventing names cannot grow /metrics or memory without bound.
 * Series are never removed (until gt_mfam_free).
 *
 * A scrape walks the series with gt_mfam_count() / gt_mfam_at() while
 * they are updated: each value is read atomically; values of one series
 * are not a snapshot together. */
#ifndef GT_METRICS_H
#define GT_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define GT_MFAM_MAX_LABELS 5
#define GT_MFAM_OTHER "_other"

typedef struct gt_mseries {
    uint64_t hash;
    const char *labels[GT_MFAM_MAX_LABELS]; /* point into the same block */
    _Atomic uint64_t *v;                    /* nvals of them */
} gt_mseries_t;

typedef struct gt_mfam gt_mfam_t;

/* A family of nlabels (1..GT_MFAM_MAX_LABELS) label values and nvals
 * values per series, at most max_sets (>= 1) label sets.  NULL when out of
 * memory or the arguments are out of range.  Free with gt_mfam_free. */
gt_mfam_t *gt_mfam_new(unsigned nlabels, unsigned nvals, size_t max_sets);
void gt_mfam_free(gt_mfam_t *f); /* NULL-safe; no user may remain */

/* The series of vals[0..nlabels-1] (borrowed; NULL counts as ""), added
 * when new; the overflow series when the family is full; NULL only when
 * out of memory.  The series lives as long as the family.  Any thread. */
gt_mseries_t *gt_mfam_get(gt_mfam_t *f, const char *const *vals);

/* Series in the order they were added (the overflow series last, once it
 * was used).  count is a moment's: later series may follow. */
size_t gt_mfam_count(const gt_mfam_t *f);
const gt_mseries_t *gt_mfam_at(const gt_mfam_t *f, size_t i);
const gt_mseries_t *gt_mfam_other(const gt_mfam_t *f); /* NULL: unused */
unsigned gt_mfam_nlabels(const gt_mfam_t *f);

static inline void gt_mseries_add(gt_mseries_t *s, unsigned i, uint64_t n)
{
    atomic_fetch_add_explicit(&s->v[i], n, memory_order_relaxed);
}

static inline uint64_t gt_mseries_val(const gt_mseries_t *s, unsigned i)
{
    return atomic_load_explicit(&s->v[i], memory_order_relaxed);
}

/* Histogram in values base .. base+nb+1: v[base+b] counts observations in
 * bucket b (the first bound >= x; b = nb: above every bound), v[base+nb+1]
 * their sum.  Bounds ascend.  Counts are per bucket; writers make them
 * cumulative (gt_metrics_write_hist). */
void gt_mseries_observe(gt_mseries_t *s, unsigned base, const uint64_t *bounds,
                        unsigned nb, uint64_t x);

/* ---- writing the Prometheus text format 0.0.4 ---- */

/* "# HELP name help\n# TYPE name type\n" */
void gt_metrics_head(FILE *out, const char *name, const char *type, const char *help);
/* A label value with \\, \" and \n escaped. */
void gt_metrics_label_value(FILE *out, const char *s);
/* "name{k0="v0",...,extra} " -- names[i] for the series' labels; extra
 * (may be NULL) is appended inside the braces as is. */
void gt_metrics_series(FILE *out, const char *name, const char *const *names,
                       const gt_mseries_t *s, unsigned nlabels, const char *extra);
/* One counter (or gauge) family: every series' value i. */
void gt_metrics_write_val(FILE *out, const gt_mfam_t *f, const char *name,
                          const char *const *names, unsigned i);
/* One histogram family: _bucket lines (cumulative, le bounds scaled by
 * 1/div, then +Inf), _sum (scaled likewise) and _count (= the +Inf
 * bucket) of every series. */
void gt_metrics_write_hist(FILE *out, const gt_mfam_t *f, const char *name,
                           const char *const *names, unsigned base,
                           const uint64_t *bounds, unsigned nb, double div);

#endif
