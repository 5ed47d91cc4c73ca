/* gt_bench statistics: a log-linear latency histogram and a small table
 * of error counts by code.
 *
 * Each worker thread fills its own copies without locks; the main thread
 * merges them after the workers have joined.  The histogram keeps values
 * below 64 ns exact and, above, 64 sub-buckets per power of two: bucket
 * (e, sub) holds values in [(64 + sub) << (e - 6), (65 + sub) << (e - 6)). */
#include <stdio.h>
#include <string.h>

#include "gt_bench.h"

static int gb_hist_index(uint64_t v)
{
    int e;

    if (v < GB_HIST_SUB)
        return (int)v;
    e = 63 - __builtin_clzll(v); /* >= GB_HIST_SUB_BITS */
    return (e - GB_HIST_SUB_BITS + 1) * GB_HIST_SUB +
           (int)((v >> (e - GB_HIST_SUB_BITS)) & (GB_HIST_SUB - 1));
}

/* Middle of bucket `i`. */
static uint64_t gb_hist_value(int i)
{
    int e, sub;
    uint64_t lo, width;

    if (i < GB_HIST_SUB)
        return (uint64_t)i;
    e = i / GB_HIST_SUB + GB_HIST_SUB_BITS - 1;
    sub = i % GB_HIST_SUB;
    width = 1ULL << (e - GB_HIST_SUB_BITS);
    lo = ((uint64_t)GB_HIST_SUB + (uint64_t)sub) * width;
    return lo + width / 2;
}

void gb_hist_add(gb_hist_t *h, uint64_t ns)
{
    h->b[gb_hist_index(ns)]++;
    h->n++;
}

void gb_hist_merge(gb_hist_t *into, const gb_hist_t *from)
{
    for (int i = 0; i < GB_HIST_BUCKETS; i++)
        into->b[i] += from->b[i];
    into->n += from->n;
}

uint64_t gb_hist_quantile(const gb_hist_t *h, double q)
{
    uint64_t rank, seen = 0;

    if (h->n == 0)
        return 0;
    rank = (uint64_t)(q * (double)h->n);
    if (rank >= h->n)
        rank = h->n - 1;
    for (int i = 0; i < GB_HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen > rank)
            return gb_hist_value(i);
    }
    return gb_hist_value(GB_HIST_BUCKETS - 1);
}

void gb_errs_add(gb_errs_t *e, int32_t code, uint64_t n)
{
    for (int i = 0; i < e->used; i++) {
        if (e->code[i] == code) {
            e->n[i] += n;
            return;
        }
    }
    if (e->used == GB_ERR_SLOTS) {
        e->other += n;
        return;
    }
    e->code[e->used] = code;
    e->n[e->used++] = n;
}

void gb_errs_merge(gb_errs_t *into, const gb_errs_t *from)
{
    for (int i = 0; i < from->used; i++)
        gb_errs_add(into, from->code[i], from->n[i]);
    into->other += from->other;
}

uint64_t gb_errs_total(const gb_errs_t *e)
{
    uint64_t t = e->other;

    for (int i = 0; i < e->used; i++)
        t += e->n[i];
    return t;
}

void gb_errs_format(const gb_errs_t *e, char *buf, size_t len)
{
    size_t off = 0;

    buf[0] = '\0';
    if (gb_errs_total(e) == 0) {
        snprintf(buf, len, "none");
        return;
    }
    for (int i = 0; i < e->used && off < len; i++) {
        int32_t c = e->code[i];
        int w;

        if (c == GB_ERR_DECODE)
            w = snprintf(buf + off, len - off, "%sdecode:%llu",
                         off ? "," : "", (unsigned long long)e->n[i]);
        else if (c < 0)
            w = snprintf(buf + off, len - off, "%sgrpc%d:%llu", off ? "," : "",
                         -c, (unsigned long long)e->n[i]);
        else
            w = snprintf(buf + off, len - off, "%srmq%d:%llu", off ? "," : "",
                         c, (unsigned long long)e->n[i]);
        if (w < 0)
            return;
        off += (size_t)w;
    }
    if (e->other != 0 && off < len)
        snprintf(buf + off, len - off, "%sother:%llu", off ? "," : "",
                 (unsigned long long)e->other);
}

void gb_stats_merge(gb_stats_t *into, const gb_stats_t *from)
{
    into->ok += from->ok;
    into->received += from->received;
    into->bytes += from->bytes;
    into->requests += from->requests;
    into->empty_polls += from->empty_polls;
    gb_hist_merge(&into->lat, &from->lat);
    gb_hist_merge(&into->rtt, &from->rtt);
    gb_errs_merge(&into->errs, &from->errs);
    if (from->first_ns != 0 &&
        (into->first_ns == 0 || from->first_ns < into->first_ns))
        into->first_ns = from->first_ns;
    if (from->last_ns > into->last_ns)
        into->last_ns = from->last_ns;
    into->early += from->early;
    into->grouped += from->grouped;
    for (size_t i = 0; i < sizeof(into->groups_seen); i++)
        into->groups_seen[i] |= from->groups_seen[i];
    gb_hist_merge(&into->late, &from->late);
}
