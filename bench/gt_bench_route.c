/* gt_bench_route: the AMQP router's routing rate with many bindings,
 * next to the linear scan it replaces.
 *
 *   gt_bench_route [bindings] [routes]      (defaults 100000, 200000)
 *
 * One topic exchange gets `bindings` bindings, each to its own queue, in
 * the shape of a market-data or per-device fan-in: "md.<i%50>.<i>.*" for
 * most, with every 100th "md.<i%50>.#" and every 1000th "#.<i>";  one
 * direct exchange gets the same number of bindings "k<i>".  Then `routes`
 * routing keys "md.<j%50>.<j % bindings>.x" go through gw_route, and a
 * sample of them through a linear scan of every binding with
 * gw_route_topic_match (what a per-binding matcher costs), checking that
 * both reach the same number of queues.  Prints routes/s for each and
 * their ratio.  Machine-dependent figures: not a test, nothing asserted
 * but agreement. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gw_route.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct pat {
    char key[48];
} pat_t;

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 100000;
    long routes = argc > 2 ? atol(argv[2]) : 200000;
    gw_router_t *r = gw_router_new();
    pat_t *pats = calloc((size_t)n, sizeof *pats);
    char q[32], key[64];
    gw_table_t none = {NULL, 0};

    if (r == NULL || pats == NULL || n <= 0 || routes <= 0)
        return 2;
    if (gw_route_exchange_add(r, gw_str("t"), GW_XTYPE_TOPIC, 0) != GT_OK ||
        gw_route_exchange_add(r, gw_str("d"), GW_XTYPE_DIRECT, 0) != GT_OK)
        return 2;
    double t0 = now();
    for (long i = 0; i < n; i++) {
        if (i % 1000 == 0)
            snprintf(pats[i].key, sizeof pats[i].key, "#.%ld", i);
        else if (i % 100 == 0)
            snprintf(pats[i].key, sizeof pats[i].key, "md.%ld.#", i % 50);
        else
            snprintf(pats[i].key, sizeof pats[i].key, "md.%ld.%ld.*", i % 50, i);
        snprintf(q, sizeof q, "q%ld", i);
        snprintf(key, sizeof key, "k%ld", i);
        if (gw_route_bind(r, gw_str("t"), GW_DEST_QUEUE, gw_str(q), gw_str(pats[i].key), none,
                          NULL) != GT_OK ||
            gw_route_bind(r, gw_str("d"), GW_DEST_QUEUE, gw_str(q), gw_str(key), none, NULL) !=
                GT_OK)
            return 2;
    }
    double t_bind = now() - t0;

    size_t reached = 0;
    t0 = now();
    for (long j = 0; j < routes; j++) {
        snprintf(key, sizeof key, "md.%ld.%ld.x", j % 50, j % n);
        gw_str_t k = gw_str(key);
        gw_route_out_t out;
        if (gw_route(r, gw_str("t"), &k, 1, none, &out) != GT_OK)
            return 1;
        reached += out.n;
    }
    double t_trie = now() - t0;

    t0 = now();
    for (long j = 0; j < routes; j++) {
        snprintf(key, sizeof key, "k%ld", j % n);
        gw_str_t k = gw_str(key);
        gw_route_out_t out;
        if (gw_route(r, gw_str("d"), &k, 1, none, &out) != GT_OK || out.n != 1)
            return 1;
    }
    double t_direct = now() - t0;

    /* the linear scan, on a sample (it is slow), checked against the trie */
    long sample = routes < 200 ? routes : 200;
    t0 = now();
    for (long j = 0; j < sample; j++) {
        snprintf(key, sizeof key, "md.%ld.%ld.x", j % 50, j % n);
        size_t hits = 0;
        for (long i = 0; i < n; i++)
            hits += gw_route_topic_match(gw_str(pats[i].key), gw_str(key));
        gw_str_t k = gw_str(key);
        gw_route_out_t out;
        if (gw_route(r, gw_str("t"), &k, 1, none, &out) != GT_OK || out.n != hits) {
            fprintf(stderr, "gt_bench_route: trie and scan disagree on %s\n", key);
            return 1;
        }
    }
    double t_scan = now() - t0;
    /* the sample's trie routes were included in t_scan: negligible */

    double trie_rate = (double)routes / t_trie, scan_rate = (double)sample / t_scan;
    printf("bindings %ld topic + %ld direct, bound in %.2f s\n", n, n, t_bind);
    printf("topic  (trie):        %10.0f routes/s  (%.1f queues per route)\n", trie_rate,
           (double)reached / (double)routes);
    printf("direct (hash):        %10.0f routes/s\n", (double)routes / t_direct);
    printf("topic  (linear scan): %10.0f routes/s  (sample of %ld)\n", scan_rate, sample);
    printf("trie / linear scan:   %10.0fx\n", trie_rate / scan_rate);
    gw_router_free(r);
    free(pats);
    return 0;
}
