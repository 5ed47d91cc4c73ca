/* libFuzzer target for the AMQP router (gateway-amqp/gw_route.h).
 *
 * The input is a program of operations on one router over a small world
 * (exchanges e0..e7, queues q0..q7, keys over "ab.*#", headers tables of a
 * few entries and types): add/remove exchanges, bind/unbind to queues and
 * exchanges, remove a queue's bindings, set alternate exchanges, route.
 * Every route is checked against a naive model built only from the
 * router's listings and the plain matchers (gw_route_topic_match,
 * gw_route_headers_match): a worklist over exchanges that scans every
 * binding.  Invariants (anything else aborts):
 *   - the router's result equals the model's, sorted and without repeats;
 *   - counts agree with listings; removals report what they remove;
 *   - duplicate binds are no-ops and unbinds of what was just bound
 *     remove it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_route: invariant failed: %s\n", what);
        abort();
    }
}

typedef struct in {
    const uint8_t *p;
    size_t n;
} in_t;

static uint8_t take(in_t *in)
{
    if (in->n == 0)
        return 0;
    in->n--;
    return *in->p++;
}

static const char *const XN[8] = {"e0", "e1", "e2", "e3", "e4", "e5", "e6", "e7"};
static const char *const QN[8] = {"q0", "q1", "q2", "q3", "q4", "q5", "q6", "q7"};

/* A key of up to 15 characters over "ab.*#" (so empty words, '*' and '#'
 * inside words, and all the topic cases appear). */
static gw_str_t take_key(in_t *in, char *buf)
{
    static const char alpha[] = "ab.*#";
    size_t n = take(in) % 16;
    for (size_t i = 0; i < n; i++)
        buf[i] = alpha[take(in) % 5];
    gw_str_t s = {buf, n};
    return s;
}

/* A table of up to 3 entries: keys a, b, x-a, x-match; values of several
 * types with small numbers, so cross-type equality comes up. */
static gw_table_t take_table(in_t *in, uint8_t *buf, size_t cap)
{
    static const char *const keys[] = {"a", "b", "x-a", "x-match"};
    static const char *const xm[] = {"all", "any", "all-with-x", "any-with-x", "bogus"};
    gw_tbuild_t b;
    gw_table_t t = {NULL, 0};
    size_t n = take(in) % 4;
    gw_tbuild_init(&b, buf, cap);
    for (size_t i = 0; i < n; i++) {
        uint8_t k = take(in), v = take(in);
        const char *key = keys[k % 4];
        if (k % 4 == 3) {
            gw_tbuild_string(&b, key, xm[v % 5]);
            continue;
        }
        switch ((k >> 2) % 9) {
        case 0: gw_tbuild_int8(&b, key, (int8_t)(v % 3)); break;
        case 1: gw_tbuild_int64(&b, key, v % 3); break;
        case 2: gw_tbuild_double(&b, key, (double)(v % 3) / ((v & 4) ? 2 : 1)); break;
        case 3: gw_tbuild_longstr(&b, key, "1", v % 2); break;
        case 4: gw_tbuild_bytes(&b, key, "1", v % 2); break;
        case 5: gw_tbuild_void(&b, key); break;
        case 6: gw_tbuild_bool(&b, key, v & 1); break;
        case 7: gw_tbuild_timestamp(&b, key, v % 3); break;
        default:
            if (v & 1)
                gw_tbuild_table_begin(&b, key);
            else
                gw_tbuild_array_begin(&b, key);
            if (v & 2)
                gw_tbuild_int8(&b, (v & 1) ? "k" : NULL, 1);
            gw_tbuild_end(&b);
            break;
        }
    }
    if (gw_tbuild_finish(&b, &t) != GT_OK) {
        t.ptr = NULL;
        t.len = 0;
    }
    return t;
}

/* ---- the model ------------------------------------------------------ */

typedef struct model {
    bool has_ae[8];
    int ae[8];
} model_t;

typedef struct blist {
    gw_binding_t b[512];
    uint8_t args[512][256];
    size_t n;
} blist_t;

static void collect(void *ctx, const gw_binding_t *b)
{
    blist_t *l = ctx;
    if (l->n >= 512)
        return;
    l->b[l->n] = *b;
    memcpy(l->args[l->n], b->args.ptr ? b->args.ptr : (const uint8_t *)"", b->args.len);
    l->b[l->n].args.ptr = b->args.len ? l->args[l->n] : NULL;
    l->n++;
}

static int xindex(gw_str_t s)
{
    for (int i = 0; i < 8; i++)
        if (gw_str_eq(s, XN[i]))
            return i;
    return -1;
}

/* Which queues the naive model reaches: bit i for q<i>. */
static unsigned model_route(const gw_router_t *r, const model_t *m, int x0, const gw_str_t *keys,
                            size_t nkeys, gw_table_t headers)
{
    static blist_t l;
    bool seen[8] = {false};
    int work[8], nw = 0;
    unsigned queues = 0;
    work[nw++] = x0;
    seen[x0] = true;
    while (nw > 0) {
        int x = work[--nw];
        gw_xtype_t t;
        fuzz_check(gw_route_exchange_get(r, gw_str(XN[x]), &t, NULL), "model: exchange");
        l.n = 0;
        gw_route_list_source(r, gw_str(XN[x]), collect, &l);
        size_t matched = 0;
        for (size_t i = 0; i < l.n; i++) {
            const gw_binding_t *b = &l.b[i];
            bool hit = false;
            switch (t) {
            case GW_XTYPE_FANOUT: hit = true; break;
            case GW_XTYPE_HEADERS: hit = gw_route_headers_match(b->args, headers); break;
            case GW_XTYPE_DIRECT:
            case GW_XTYPE_TOPIC:
                for (size_t k = 0; k < nkeys && !hit; k++)
                    hit = t == GW_XTYPE_DIRECT
                              ? (b->key.len == keys[k].len &&
                                 (b->key.len == 0 || memcmp(b->key.ptr, keys[k].ptr, b->key.len) == 0))
                              : gw_route_topic_match(b->key, keys[k]);
                break;
            }
            if (!hit)
                continue;
            matched++;
            if (b->dest_kind == GW_DEST_QUEUE) {
                queues |= 1u << (b->dest.ptr[1] - '0');
            } else {
                int d = xindex(b->dest);
                if (!seen[d]) {
                    seen[d] = true;
                    work[nw++] = d;
                }
            }
        }
        if (matched == 0 && m->has_ae[x] &&
            gw_route_exchange_get(r, gw_str(XN[m->ae[x]]), NULL, NULL) && !seen[m->ae[x]]) {
            seen[m->ae[x]] = true;
            work[nw++] = m->ae[x];
        }
    }
    return queues;
}

static void count_cb(void *ctx, const gw_binding_t *b)
{
    (void)b;
    (*(size_t *)ctx)++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    in_t in = {data, size};
    gw_router_t *r = gw_router_new();
    model_t m;
    char kbuf[4][16];
    uint8_t tbuf[2][256];

    if (r == NULL)
        return 0;
    memset(&m, 0, sizeof m);
    for (size_t steps = 0; in.n > 0 && steps < 400; steps++) {
        uint8_t op = take(&in), a = take(&in), b = take(&in);
        gw_str_t x = gw_str(XN[a % 8]), q = gw_str(QN[b % 8]), xd = gw_str(XN[b % 8]);
        switch (op % 9) {
        case 0: {
            gt_err_t rc = gw_route_exchange_add(r, x, (gw_xtype_t)(b % 4), b);
            fuzz_check(rc == GT_OK || rc == GT_EEXIST, "exchange add");
            break;
        }
        case 1: {
            size_t src = gw_route_count_source(r, x), dst = gw_route_count_dest(r, GW_DEST_EXCHANGE, x);
            size_t self = 0, reported = 0;
            static blist_t l;
            l.n = 0;
            gw_route_list_source(r, x, collect, &l);
            for (size_t i = 0; i < l.n; i++)
                self += l.b[i].dest_kind == GW_DEST_EXCHANGE && gw_str_eq(l.b[i].dest, XN[a % 8]);
            bool existed = gw_route_exchange_get(r, x, NULL, NULL);
            gt_err_t rc = gw_route_exchange_remove(r, x, count_cb, &reported);
            fuzz_check(existed ? rc == GT_OK : rc == GT_ENOTFOUND, "exchange remove");
            fuzz_check(reported == src + dst - self, "exchange remove reports");
            break;
        }
        case 2:
        case 3: {
            gw_dest_kind_t kind = op % 9 == 2 ? GW_DEST_QUEUE : GW_DEST_EXCHANGE;
            gw_str_t d = kind == GW_DEST_QUEUE ? q : xd;
            gw_str_t key = take_key(&in, kbuf[0]);
            gw_table_t args = take_table(&in, tbuf[0], sizeof tbuf[0]);
            size_t before = gw_route_binding_count(r);
            bool created = false, created2 = true;
            gt_err_t rc = gw_route_bind(r, x, kind, d, key, args, &created);
            if (rc != GT_OK) {
                fuzz_check(rc == GT_ENOTFOUND || rc == GT_EINVAL, "bind error");
                fuzz_check(gw_route_binding_count(r) == before, "failed bind changed nothing");
                break;
            }
            fuzz_check(gw_route_binding_count(r) == before + created, "bind count");
            fuzz_check(gw_route_bind(r, x, kind, d, key, args, &created2) == GT_OK && !created2,
                       "duplicate bind is a no-op");
            if (take(&in) & 1) {
                bool removed = false;
                fuzz_check(gw_route_unbind(r, x, kind, d, key, args, &removed) == GT_OK && removed,
                           "unbind what was bound");
                fuzz_check(gw_route_binding_count(r) == before - !created, "unbind count");
            }
            break;
        }
        case 4: {
            gw_str_t key = take_key(&in, kbuf[0]);
            gw_table_t args = take_table(&in, tbuf[0], sizeof tbuf[0]);
            bool removed;
            gw_dest_kind_t kind = (b & 8) ? GW_DEST_EXCHANGE : GW_DEST_QUEUE;
            size_t before = gw_route_binding_count(r);
            gt_err_t rc = gw_route_unbind(r, x, kind, kind == GW_DEST_QUEUE ? q : xd, key, args,
                                          &removed);
            fuzz_check(rc == GT_OK, "unbind");
            fuzz_check(gw_route_binding_count(r) == before - removed, "unbind count");
            break;
        }
        case 5: {
            size_t n = gw_route_count_dest(r, GW_DEST_QUEUE, q), listed = 0, reported = 0;
            gw_route_list_dest(r, GW_DEST_QUEUE, q, count_cb, &listed);
            fuzz_check(n == listed, "queue count = listing");
            fuzz_check(gw_route_unbind_queue(r, q, count_cb, &reported) == n && reported == n,
                       "unbind_queue reports");
            fuzz_check(gw_route_count_dest(r, GW_DEST_QUEUE, q) == 0, "queue unbound");
            break;
        }
        case 6: {
            gw_str_t ae = xd;
            bool set = b & 8;
            gt_err_t rc = gw_route_exchange_set_alternate(r, x, set ? &ae : NULL);
            if (rc == GT_OK) {
                m.has_ae[a % 8] = set;
                m.ae[a % 8] = b % 8;
            } else {
                fuzz_check(rc == GT_ENOTFOUND, "set alternate");
            }
            break;
        }
        case 7:
        case 8: {
            gw_str_t keys[3];
            size_t nkeys = b % 4;
            for (size_t k = 0; k < nkeys; k++)
                keys[k] = take_key(&in, kbuf[k]);
            gw_table_t h = take_table(&in, tbuf[1], sizeof tbuf[1]);
            gw_route_out_t out;
            gt_err_t rc = gw_route(r, x, keys, nkeys, h, &out);
            if (!gw_route_exchange_get(r, x, NULL, NULL)) {
                fuzz_check(rc == GT_ENOTFOUND, "route to a missing exchange");
                break;
            }
            fuzz_check(rc == GT_OK, "route");
            unsigned got = 0;
            for (size_t i = 0; i < out.n; i++) {
                fuzz_check(out.queues[i].len == 2 && out.queues[i].ptr[0] == 'q', "queue name");
                unsigned bit = 1u << (out.queues[i].ptr[1] - '0');
                fuzz_check(!(got & bit), "queue once");
                fuzz_check(i == 0 || memcmp(out.queues[i - 1].ptr, out.queues[i].ptr, 2) < 0,
                           "sorted");
                got |= bit;
            }
            fuzz_check(got == model_route(r, &m, a % 8, keys, nkeys, h), "route = model");
            break;
        }
        }
        if (m.has_ae[a % 8] && !gw_route_exchange_get(r, x, NULL, NULL))
            m.has_ae[a % 8] = false; /* removed: a re-added one starts without */
    }
    gw_router_free(r);
    return 0;
}
