/* The AMQP 0-9-1 router (gw_route.h): exchanges, bindings, and routing
 * with RabbitMQ 3.10's semantics.
 *
 * Layout.  Every object is found through one of five chained hash tables
 * owned by the router (exchanges by name, queues by name, topic trie edges
 * by (parent node, word), direct buckets by (exchange, key), bindings by
 * their full identity), and linked into intrusive lists: an exchange's
 * outgoing and incoming bindings, a queue's incoming ones, a topic node's
 * or direct bucket's bindings.  So every operation is O(1) or O(what it
 * returns) except the headers exchange, which (as RabbitMQ's) tests each
 * of its bindings.
 *
 * Topic exchanges keep one trie per exchange, as rabbit_exchange_type_topic
 * does: a node per binding-key prefix, '*' and '#' children held apart
 * from the literal ones.  Matching runs the trie as an NFA: the set of
 * nodes reachable after each word (marked with a step counter, so each
 * node is in a set once), a '#' node staying in the set on any word and
 * its '#' child joining the set without a word (the closure).  This is
 * the trie walk RabbitMQ does, without its backtracking: one step per word
 * (256 for a 255-byte key; CC keys may be longer), each linear in the set,
 * and no recursion.
 *
 * Queues exist here only while something is bound to them (a record with
 * their bindings and a route mark).  A route marks every exchange and
 * queue it reaches with a per-route generation number, which gives both
 * the each-exchange-once rule and queue de-duplication without a set.
 *
 * Recursion: only the table normalisation and comparison of nested
 * tables, bounded by GW_TABLE_MAX_DEPTH (tables are validated first). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_route.h"
#include "gw_route_int.h"

#define CONTAINER(p, T, m) ((T *)(void *)((char *)(p) - offsetof(T, m)))

/* ---- intrusive lists ------------------------------------------------ */

typedef struct rlink {
    struct rlink *prev, *next;
} rlink_t;

static void rl_init(rlink_t *h)
{
    h->prev = h->next = h;
}

static bool rl_empty(const rlink_t *h)
{
    return h->next == h;
}

static void rl_push(rlink_t *h, rlink_t *e)
{
    e->prev = h->prev;
    e->next = h;
    h->prev->next = e;
    h->prev = e;
}

static void rl_del(rlink_t *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->prev = e->next = e;
}

/* ---- hash tables ---------------------------------------------------- */

/* Chained, power-of-two buckets, allocated when the router is made so an
 * insert never fails: growing is tried at load 1 and skipped (longer
 * chains) when memory is short. */
typedef struct hlink {
    struct hlink *next;
    uint64_t hash;
} hlink_t;

typedef struct htab {
    hlink_t **b;
    size_t nb, n;
} htab_t;

#define HT_INITIAL 16u

static bool ht_init(htab_t *t)
{
    t->b = calloc(HT_INITIAL, sizeof *t->b);
    t->nb = HT_INITIAL;
    t->n = 0;
    return t->b != NULL;
}

static void ht_add(htab_t *t, hlink_t *l)
{
    if (t->n >= t->nb && t->nb <= SIZE_MAX / 2 / sizeof *t->b) {
        size_t nb = t->nb * 2;
        hlink_t **b = calloc(nb, sizeof *b);
        if (b != NULL) {
            for (size_t i = 0; i < t->nb; i++) {
                hlink_t *e = t->b[i];
                while (e != NULL) {
                    hlink_t *next = e->next;
                    e->next = b[e->hash & (nb - 1)];
                    b[e->hash & (nb - 1)] = e;
                    e = next;
                }
            }
            free(t->b);
            t->b = b;
            t->nb = nb;
        }
    }
    hlink_t **slot = &t->b[l->hash & (t->nb - 1)];
    l->next = *slot;
    *slot = l;
    t->n++;
}

static void ht_del(htab_t *t, hlink_t *l)
{
    hlink_t **pp = &t->b[l->hash & (t->nb - 1)];
    while (*pp != NULL && *pp != l)
        pp = &(*pp)->next;
    if (*pp == l) {
        *pp = l->next;
        t->n--;
    }
}

static hlink_t *ht_first(const htab_t *t, uint64_t h)
{
    return t->b[h & (t->nb - 1)];
}

/* FNV-1a over the bytes from a seeded state, then a splitmix64 finish
 * (FNV alone spreads short keys poorly over the low bits). */
static uint64_t h_bytes(uint64_t h, const void *p, size_t n)
{
    const uint8_t *s = p;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint64_t h_fin(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static uint64_t h_ptr(uint64_t h, const void *p)
{
    uintptr_t v = (uintptr_t)p;
    return h_bytes(h, &v, sizeof v);
}

/* ---- objects -------------------------------------------------------- */

typedef struct rqueue {
    hlink_t h; /* r->qs, by name */
    rlink_t in;
    size_t nin;
    uint64_t seen; /* route generation that reached it */
    uint8_t nlen;
    char name[];
} rqueue_t;

typedef struct tnode {
    hlink_t h; /* r->edges by (parent, word); only literal children */
    struct tnode *parent;
    struct tnode *star, *hash;
    size_t nchild; /* literal children + star + hash */
    rlink_t binds;
    uint64_t mark;
    bool is_hash; /* reached through a '#' word */
    uint8_t wlen;
    char word[];
} tnode_t;

struct rexch;

typedef struct dbucket {
    hlink_t h; /* r->direct by (exchange, key) */
    struct rexch *x;
    rlink_t binds;
    uint8_t klen;
    char key[];
} dbucket_t;

typedef struct rexch {
    hlink_t h; /* r->xs, by name */
    gw_xtype_t type;
    uint32_t flags;
    rlink_t out, in;
    size_t nout, nin;
    uint64_t seen;
    tnode_t *root; /* topic only */
    bool has_ae;
    uint8_t aelen;
    char ae[GW_ROUTE_NAME_MAX];
    uint8_t nlen;
    char name[];
} rexch_t;

typedef struct rbind {
    hlink_t h; /* r->binds by identity */
    rexch_t *src;
    gw_dest_kind_t kind;
    void *dest; /* rqueue_t * or rexch_t * */
    rlink_t src_link, dest_link, idx_link;
    void *idx; /* tnode_t * (topic) or dbucket_t * (direct) */
    gw_hent_t *pat; /* headers: the sorted arguments */
    size_t npat;
    int xmatch;
    size_t alen;
    uint8_t klen;
    uint8_t data[]; /* key, then normalised args */
} rbind_t;

struct gw_router {
    uint64_t seed;
    htab_t xs, qs, edges, direct, binds;
    uint64_t gen;  /* per route */
    uint64_t step; /* per topic word */
    /* route scratch */
    rexch_t **work;
    size_t cap_work;
    gw_str_t *outq;
    size_t nout, cap_out;
    gw_str_t *outx; /* exchanges held (gw_route_held) */
    size_t nheld, cap_held;
    tnode_t **ta, **tb;
    size_t cap_ta, cap_tb;
    gw_hent_t *hd;
    size_t cap_hd;
};

static gw_str_t str_of(const char *p, size_t n)
{
    gw_str_t s = {p, n};
    return s;
}

static bool str_same(const char *a, size_t an, gw_str_t b)
{
    return an == b.len && (an == 0 || memcmp(a, b.ptr, an) == 0);
}

/* ---- types ---------------------------------------------------------- */

static const char *const xtype_names[] = {"direct", "fanout", "topic", "headers"};

gt_err_t gw_xtype_parse(gw_str_t name, gw_xtype_t *out)
{
    for (size_t i = 0; i < sizeof xtype_names / sizeof xtype_names[0]; i++) {
        if (gw_str_eq(name, xtype_names[i])) {
            *out = (gw_xtype_t)i;
            return GT_OK;
        }
    }
    return GT_EINVAL;
}

const char *gw_xtype_name(gw_xtype_t t)
{
    return (unsigned)t < 4 ? xtype_names[t] : "?";
}

/* ---- lookups -------------------------------------------------------- */

static uint64_t name_hash(const gw_router_t *r, gw_str_t n)
{
    return h_fin(h_bytes(r->seed, n.ptr, n.len));
}

static rexch_t *xfind(const gw_router_t *r, gw_str_t name)
{
    uint64_t h = name_hash(r, name);
    for (hlink_t *l = ht_first(&r->xs, h); l != NULL; l = l->next) {
        rexch_t *x = (rexch_t *)l;
        if (l->hash == h && str_same(x->name, x->nlen, name))
            return x;
    }
    return NULL;
}

static rqueue_t *qfind(const gw_router_t *r, gw_str_t name)
{
    uint64_t h = name_hash(r, name) ^ 0x9e3779b97f4a7c15ull;
    for (hlink_t *l = ht_first(&r->qs, h); l != NULL; l = l->next) {
        rqueue_t *q = (rqueue_t *)l;
        if (l->hash == h && str_same(q->name, q->nlen, name))
            return q;
    }
    return NULL;
}

static rqueue_t *qmake(gw_router_t *r, gw_str_t name)
{
    rqueue_t *q = calloc(1, sizeof *q + name.len);
    if (q == NULL)
        return NULL;
    q->h.hash = name_hash(r, name) ^ 0x9e3779b97f4a7c15ull;
    rl_init(&q->in);
    q->nlen = (uint8_t)name.len;
    if (name.len)
        memcpy(q->name, name.ptr, name.len);
    ht_add(&r->qs, &q->h);
    return q;
}

static void qdrop_if_unused(gw_router_t *r, rqueue_t *q)
{
    if (q->nin == 0) {
        ht_del(&r->qs, &q->h);
        free(q);
    }
}

static gw_str_t dest_name(const rbind_t *b)
{
    if (b->kind == GW_DEST_QUEUE) {
        const rqueue_t *q = b->dest;
        return str_of(q->name, q->nlen);
    }
    const rexch_t *x = b->dest;
    return str_of(x->name, x->nlen);
}

static void binding_view(const rbind_t *b, gw_binding_t *out)
{
    out->source = str_of(b->src->name, b->src->nlen);
    out->dest_kind = b->kind;
    out->dest = dest_name(b);
    out->key = str_of((const char *)b->data, b->klen);
    out->args.ptr = b->alen ? b->data + b->klen : NULL;
    out->args.len = b->alen;
}

/* ---- topic words ---------------------------------------------------- */

/* RabbitMQ's split_topic_key: "" is no words; otherwise the pieces
 * between dots, empty ones included. */
typedef struct wit {
    const char *p, *end;
    bool done;
} wit_t;

static void wit_init(wit_t *it, gw_str_t k)
{
    it->p = k.ptr;
    it->end = k.ptr + k.len;
    it->done = k.len == 0;
}

static bool wit_next(wit_t *it, gw_str_t *w)
{
    if (it->done)
        return false;
    const char *dot = memchr(it->p, '.', (size_t)(it->end - it->p));
    w->ptr = it->p;
    if (dot == NULL) {
        w->len = (size_t)(it->end - it->p);
        it->done = true;
    } else {
        w->len = (size_t)(dot - it->p);
        it->p = dot + 1;
    }
    return true;
}

static bool is_star(gw_str_t w)
{
    return w.len == 1 && w.ptr[0] == '*';
}

static bool is_hash(gw_str_t w)
{
    return w.len == 1 && w.ptr[0] == '#';
}

bool gw_route_topic_match(gw_str_t pattern, gw_str_t key)
{
    /* Wildcard matching over words, one row of the table at a time:
     * m[j] = the pattern's words so far match the key's first j words. */
    gw_str_t kw[GW_ROUTE_KEY_MAX + 1];
    bool m[GW_ROUTE_KEY_MAX + 2], nm[GW_ROUTE_KEY_MAX + 2];
    size_t nk = 0;
    wit_t it;
    gw_str_t w;

    if (pattern.len > GW_ROUTE_KEY_MAX || key.len > GW_ROUTE_KEY_MAX)
        return false;
    wit_init(&it, key);
    while (wit_next(&it, &w))
        kw[nk++] = w;
    memset(m, 0, sizeof m);
    m[0] = true;
    wit_init(&it, pattern);
    while (wit_next(&it, &w)) {
        memset(nm, 0, sizeof nm);
        for (size_t j = 0; j <= nk; j++) {
            if (is_hash(w))
                nm[j] = m[j] || (j > 0 && nm[j - 1]);
            else if (j > 0 && m[j - 1])
                nm[j] = is_star(w) || gw_strcmp(w, kw[j - 1]) == 0;
        }
        memcpy(m, nm, sizeof m);
    }
    return m[nk];
}

/* ---- topic trie ----------------------------------------------------- */

static uint64_t edge_hash(const gw_router_t *r, const tnode_t *parent, gw_str_t w)
{
    return h_fin(h_bytes(h_ptr(r->seed, parent), w.ptr, w.len));
}

static tnode_t *tn_child(const gw_router_t *r, const tnode_t *n, gw_str_t w)
{
    if (is_star(w))
        return n->star;
    if (is_hash(w))
        return n->hash;
    uint64_t h = edge_hash(r, n, w);
    for (hlink_t *l = ht_first(&r->edges, h); l != NULL; l = l->next) {
        tnode_t *c = (tnode_t *)l;
        if (l->hash == h && c->parent == n && str_same(c->word, c->wlen, w))
            return c;
    }
    return NULL;
}

static tnode_t *tn_new(gw_router_t *r, tnode_t *parent, gw_str_t w)
{
    tnode_t *n = calloc(1, sizeof *n + w.len);
    if (n == NULL)
        return NULL;
    rl_init(&n->binds);
    n->parent = parent;
    if (parent == NULL)
        return n;
    n->wlen = (uint8_t)w.len;
    if (w.len)
        memcpy(n->word, w.ptr, w.len);
    parent->nchild++;
    if (is_star(w)) {
        parent->star = n;
    } else if (is_hash(w)) {
        parent->hash = n;
        n->is_hash = true;
    } else {
        n->h.hash = edge_hash(r, parent, w);
        ht_add(&r->edges, &n->h);
    }
    return n;
}

/* Frees n and its empty ancestors (not the root) that hold neither
 * bindings nor children. */
static void tn_prune(gw_router_t *r, tnode_t *n)
{
    while (n->parent != NULL && n->nchild == 0 && rl_empty(&n->binds)) {
        tnode_t *p = n->parent;
        if (p->star == n)
            p->star = NULL;
        else if (p->hash == n)
            p->hash = NULL;
        else
            ht_del(&r->edges, &n->h);
        p->nchild--;
        free(n);
        n = p;
    }
}

/* The node for binding key `key` under root, created when create is set
 * (then NULL only when out of memory, after undoing partial work). */
static tnode_t *tn_path(gw_router_t *r, tnode_t *root, gw_str_t key, bool create)
{
    tnode_t *n = root;
    wit_t it;
    gw_str_t w;
    wit_init(&it, key);
    while (wit_next(&it, &w)) {
        tnode_t *c = tn_child(r, n, w);
        if (c == NULL) {
            if (!create)
                return NULL;
            c = tn_new(r, n, w);
            if (c == NULL) {
                tn_prune(r, n);
                return NULL;
            }
        }
        n = c;
    }
    return n;
}

static void tn_free_all(gw_router_t *r, tnode_t *root)
{
    /* Called when the exchange has no bindings left: pruning already took
     * every node but the root. */
    (void)r;
    free(root);
}

/* ---- direct buckets ------------------------------------------------- */

static uint64_t direct_hash(const gw_router_t *r, const rexch_t *x, gw_str_t key)
{
    return h_fin(h_bytes(h_ptr(r->seed ^ 0x5bd1e995u, x), key.ptr, key.len));
}

static dbucket_t *dfind(const gw_router_t *r, const rexch_t *x, gw_str_t key)
{
    uint64_t h = direct_hash(r, x, key);
    for (hlink_t *l = ht_first(&r->direct, h); l != NULL; l = l->next) {
        dbucket_t *d = (dbucket_t *)l;
        if (l->hash == h && d->x == x && str_same(d->key, d->klen, key))
            return d;
    }
    return NULL;
}

/* ---- bindings ------------------------------------------------------- */

static uint64_t bind_hash(const gw_router_t *r, const rexch_t *src, gw_dest_kind_t kind,
                          const void *dest, gw_str_t key, const uint8_t *args, size_t alen)
{
    uint64_t h = h_ptr(r->seed ^ (uint64_t)kind, src);
    h = h_ptr(h, dest);
    uint8_t kl = (uint8_t)key.len;
    h = h_bytes(h, &kl, 1);
    h = h_bytes(h, key.ptr, key.len);
    h = h_bytes(h, args, alen);
    return h_fin(h);
}

static rbind_t *bfind(const gw_router_t *r, const rexch_t *src, gw_dest_kind_t kind,
                      const void *dest, gw_str_t key, const uint8_t *args, size_t alen)
{
    uint64_t h = bind_hash(r, src, kind, dest, key, args, alen);
    for (hlink_t *l = ht_first(&r->binds, h); l != NULL; l = l->next) {
        rbind_t *b = (rbind_t *)l;
        if (l->hash == h && b->src == src && b->kind == kind && b->dest == dest &&
            b->klen == key.len && b->alen == alen &&
            (key.len == 0 || memcmp(b->data, key.ptr, key.len) == 0) &&
            (alen == 0 || memcmp(b->data + b->klen, args, alen) == 0))
            return b;
    }
    return NULL;
}

static void bind_free(gw_router_t *r, rbind_t *b, gw_binding_fn fn, void *ctx)
{
    if (fn != NULL) {
        gw_binding_t v;
        binding_view(b, &v);
        fn(ctx, &v);
    }
    ht_del(&r->binds, &b->h);
    rl_del(&b->src_link);
    b->src->nout--;
    rl_del(&b->dest_link);
    rl_del(&b->idx_link);
    if (b->src->type == GW_XTYPE_TOPIC) {
        tn_prune(r, b->idx);
    } else if (b->src->type == GW_XTYPE_DIRECT) {
        dbucket_t *d = b->idx;
        if (rl_empty(&d->binds)) {
            ht_del(&r->direct, &d->h);
            free(d);
        }
    }
    if (b->kind == GW_DEST_QUEUE) {
        rqueue_t *q = b->dest;
        q->nin--;
        qdrop_if_unused(r, q);
    } else {
        ((rexch_t *)b->dest)->nin--;
    }
    free(b->pat);
    free(b);
}

static bool names_ok(gw_str_t a, gw_str_t b, gw_str_t key)
{
    return a.len <= GW_ROUTE_NAME_MAX && b.len <= GW_ROUTE_NAME_MAX &&
           key.len <= GW_ROUTE_KEY_MAX;
}

/* Puts b into its exchange's index: the topic trie node for its key, or
 * the direct bucket (fanout and headers have none: they use x->out).
 * false when out of memory (nothing changed). */
static bool bind_index(gw_router_t *r, rexch_t *x, rbind_t *b, gw_str_t key)
{
    if (x->type == GW_XTYPE_TOPIC) {
        tnode_t *n = tn_path(r, x->root, key, true);
        if (n == NULL)
            return false;
        rl_push(&n->binds, &b->idx_link);
        b->idx = n;
    } else if (x->type == GW_XTYPE_DIRECT) {
        dbucket_t *d = dfind(r, x, key);
        if (d == NULL) {
            d = calloc(1, sizeof *d + key.len);
            if (d == NULL)
                return false;
            d->h.hash = direct_hash(r, x, key);
            d->x = x;
            rl_init(&d->binds);
            d->klen = (uint8_t)key.len;
            if (key.len)
                memcpy(d->key, key.ptr, key.len);
            ht_add(&r->direct, &d->h);
        }
        rl_push(&d->binds, &b->idx_link);
        b->idx = d;
    }
    return true;
}

gt_err_t gw_route_bind(gw_router_t *r, gw_str_t source, gw_dest_kind_t kind, gw_str_t dest,
                       gw_str_t key, gw_table_t args, bool *created)
{
    gt_err_t rc = GT_OK;
    uint8_t *canon = NULL;
    rqueue_t *q = NULL;
    rbind_t *b = NULL;
    void *dptr;

    if (created != NULL)
        *created = false;
    if (!names_ok(source, dest, key) || (args.len > 0 && args.ptr == NULL) ||
        gw_table_validate(args.ptr, args.len) != GT_OK)
        return GT_EINVAL;
    rexch_t *x = xfind(r, source);
    if (x == NULL)
        return GT_ENOTFOUND;
    if (kind == GW_DEST_EXCHANGE) {
        dptr = xfind(r, dest);
        if (dptr == NULL)
            return GT_ENOTFOUND;
    } else {
        dptr = q = qfind(r, dest);
    }
    if (x->type == GW_XTYPE_HEADERS && gw_route_headers_check(args, NULL, 0) != GT_OK)
        return GT_EINVAL;
    if (args.len > 0) {
        canon = malloc(args.len);
        if (canon == NULL)
            return GT_ENOMEM;
        rc = gw_args_normalise(args, canon);
        if (rc != GT_OK)
            goto out;
    }
    if (dptr != NULL && bfind(r, x, kind, dptr, key, canon, args.len) != NULL)
        goto out; /* exact duplicate: nothing to do */

    b = calloc(1, sizeof *b + key.len + args.len);
    if (b == NULL) {
        rc = GT_ENOMEM;
        goto out;
    }
    b->src = x;
    b->kind = kind;
    b->klen = (uint8_t)key.len;
    b->alen = args.len;
    if (key.len)
        memcpy(b->data, key.ptr, key.len);
    if (args.len)
        memcpy(b->data + key.len, canon, args.len);
    rl_init(&b->idx_link);
    if (x->type == GW_XTYPE_HEADERS) {
        size_t cap = 0;
        gw_table_t t = {args.len ? b->data + key.len : NULL, args.len};
        if (!gw_hents_sorted(t, &b->pat, &cap, &b->npat)) {
            rc = GT_ENOMEM;
            goto out;
        }
        b->xmatch = gw_xmatch_of(t);
    }
    if (kind == GW_DEST_QUEUE && q == NULL) {
        q = qmake(r, dest);
        if (q == NULL) {
            rc = GT_ENOMEM;
            goto out;
        }
        dptr = q;
    }
    /* The index entry last: it is the only other step that can fail. */
    if (!bind_index(r, x, b, key)) {
        rc = GT_ENOMEM;
        goto out;
    }
    b->dest = dptr;
    rl_push(&x->out, &b->src_link);
    x->nout++;
    if (kind == GW_DEST_QUEUE) {
        rl_push(&q->in, &b->dest_link);
        q->nin++;
    } else {
        rl_push(&((rexch_t *)dptr)->in, &b->dest_link);
        ((rexch_t *)dptr)->nin++;
    }
    b->h.hash = bind_hash(r, x, kind, dptr, key, canon, args.len);
    ht_add(&r->binds, &b->h);
    b = NULL;
    if (created != NULL)
        *created = true;
out:
    if (b != NULL) {
        free(b->pat);
        free(b);
        if (q != NULL)
            qdrop_if_unused(r, q);
    }
    free(canon);
    return rc;
}

gt_err_t gw_route_unbind(gw_router_t *r, gw_str_t source, gw_dest_kind_t kind, gw_str_t dest,
                         gw_str_t key, gw_table_t args, bool *removed)
{
    uint8_t *canon = NULL;
    gt_err_t rc = GT_OK;

    if (removed != NULL)
        *removed = false;
    if (!names_ok(source, dest, key) || (args.len > 0 && args.ptr == NULL) ||
        gw_table_validate(args.ptr, args.len) != GT_OK)
        return GT_EINVAL;
    rexch_t *x = xfind(r, source);
    void *dptr = kind == GW_DEST_EXCHANGE ? (void *)xfind(r, dest) : (void *)qfind(r, dest);
    if (x == NULL || dptr == NULL)
        return GT_OK;
    if (args.len > 0) {
        canon = malloc(args.len);
        if (canon == NULL)
            return GT_ENOMEM;
        rc = gw_args_normalise(args, canon);
        if (rc != GT_OK)
            goto out;
    }
    rbind_t *b = bfind(r, x, kind, dptr, key, canon, args.len);
    if (b != NULL) {
        bind_free(r, b, NULL, NULL);
        if (removed != NULL)
            *removed = true;
    }
out:
    free(canon);
    return rc;
}

size_t gw_route_unbind_queue(gw_router_t *r, gw_str_t queue, gw_binding_fn fn, void *ctx)
{
    rqueue_t *q = queue.len <= GW_ROUTE_NAME_MAX ? qfind(r, queue) : NULL;
    if (q == NULL)
        return 0;
    size_t n = q->nin; /* q is freed with its last binding */
    for (size_t i = 0; i < n; i++)
        bind_free(r, CONTAINER(q->in.next, rbind_t, dest_link), fn, ctx);
    return n;
}

static size_t list_bindings(const rlink_t *head, size_t off, gw_binding_fn fn, void *ctx)
{
    size_t n = 0;
    for (const rlink_t *l = head->next; l != head; l = l->next) {
        const rbind_t *b = (const rbind_t *)(const void *)((const char *)l - off);
        if (fn != NULL) {
            gw_binding_t v;
            binding_view(b, &v);
            fn(ctx, &v);
        }
        n++;
    }
    return n;
}

size_t gw_route_list_source(const gw_router_t *r, gw_str_t source, gw_binding_fn fn, void *ctx)
{
    const rexch_t *x = source.len <= GW_ROUTE_NAME_MAX ? xfind(r, source) : NULL;
    if (x == NULL)
        return 0;
    return list_bindings(&x->out, offsetof(rbind_t, src_link), fn, ctx);
}

size_t gw_route_list_dest(const gw_router_t *r, gw_dest_kind_t kind, gw_str_t dest,
                          gw_binding_fn fn, void *ctx)
{
    if (dest.len > GW_ROUTE_NAME_MAX)
        return 0;
    const rlink_t *head = NULL;
    if (kind == GW_DEST_EXCHANGE) {
        const rexch_t *x = xfind(r, dest);
        head = x != NULL ? &x->in : NULL;
    } else {
        const rqueue_t *q = qfind(r, dest);
        head = q != NULL ? &q->in : NULL;
    }
    return head != NULL ? list_bindings(head, offsetof(rbind_t, dest_link), fn, ctx) : 0;
}

size_t gw_route_count_source(const gw_router_t *r, gw_str_t source)
{
    const rexch_t *x = source.len <= GW_ROUTE_NAME_MAX ? xfind(r, source) : NULL;
    return x != NULL ? x->nout : 0;
}

size_t gw_route_count_dest(const gw_router_t *r, gw_dest_kind_t kind, gw_str_t dest)
{
    if (dest.len > GW_ROUTE_NAME_MAX)
        return 0;
    if (kind == GW_DEST_EXCHANGE) {
        const rexch_t *x = xfind(r, dest);
        return x != NULL ? x->nin : 0;
    }
    const rqueue_t *q = qfind(r, dest);
    return q != NULL ? q->nin : 0;
}

size_t gw_route_binding_count(const gw_router_t *r)
{
    return r->binds.n;
}

/* ---- router and exchanges ------------------------------------------- */

gw_router_t *gw_router_new(void)
{
    gw_router_t *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    /* Seeded from the router's address (ASLR): chains cannot be aimed at
     * from outside without knowing it. */
    r->seed = h_fin((uint64_t)(uintptr_t)r ^ 0xcbf29ce484222325ull);
    if (!ht_init(&r->xs) || !ht_init(&r->qs) || !ht_init(&r->edges) || !ht_init(&r->direct) ||
        !ht_init(&r->binds)) {
        gw_router_free(r);
        return NULL;
    }
    return r;
}

static void xfree(gw_router_t *r, rexch_t *x, gw_binding_fn fn, void *ctx)
{
    while (!rl_empty(&x->out))
        bind_free(r, CONTAINER(x->out.next, rbind_t, src_link), fn, ctx);
    while (!rl_empty(&x->in))
        bind_free(r, CONTAINER(x->in.next, rbind_t, dest_link), fn, ctx);
    ht_del(&r->xs, &x->h);
    if (x->root != NULL)
        tn_free_all(r, x->root);
    free(x);
}

void gw_router_free(gw_router_t *r)
{
    if (r == NULL)
        return;
    if (r->xs.b != NULL) {
        for (size_t i = 0; i < r->xs.nb; i++)
            while (r->xs.b[i] != NULL)
                xfree(r, (rexch_t *)r->xs.b[i], NULL, NULL);
    }
    free(r->xs.b);
    free(r->qs.b);
    free(r->edges.b);
    free(r->direct.b);
    free(r->binds.b);
    free(r->work);
    free(r->outq);
    free(r->outx);
    free(r->ta);
    free(r->tb);
    free(r->hd);
    free(r);
}

gt_err_t gw_route_exchange_add(gw_router_t *r, gw_str_t name, gw_xtype_t type, uint32_t flags)
{
    if (name.len > GW_ROUTE_NAME_MAX || (unsigned)type > GW_XTYPE_HEADERS)
        return GT_EINVAL;
    if (xfind(r, name) != NULL)
        return GT_EEXIST;
    rexch_t *x = calloc(1, sizeof *x + name.len);
    if (x == NULL)
        return GT_ENOMEM;
    if (type == GW_XTYPE_TOPIC) {
        x->root = tn_new(r, NULL, str_of(NULL, 0));
        if (x->root == NULL) {
            free(x);
            return GT_ENOMEM;
        }
    }
    x->type = type;
    x->flags = flags;
    rl_init(&x->out);
    rl_init(&x->in);
    x->nlen = (uint8_t)name.len;
    if (name.len)
        memcpy(x->name, name.ptr, name.len);
    x->h.hash = name_hash(r, name);
    ht_add(&r->xs, &x->h);
    return GT_OK;
}

bool gw_route_exchange_get(const gw_router_t *r, gw_str_t name, gw_xtype_t *type,
                           uint32_t *flags)
{
    const rexch_t *x = name.len <= GW_ROUTE_NAME_MAX ? xfind(r, name) : NULL;
    if (x == NULL)
        return false;
    if (type != NULL)
        *type = x->type;
    if (flags != NULL)
        *flags = x->flags;
    return true;
}

gt_err_t gw_route_exchange_set_flags(gw_router_t *r, gw_str_t name, uint32_t flags)
{
    rexch_t *x = name.len <= GW_ROUTE_NAME_MAX ? xfind(r, name) : NULL;
    if (x == NULL)
        return GT_ENOTFOUND;
    x->flags = flags;
    return GT_OK;
}

gt_err_t gw_route_exchange_set_alternate(gw_router_t *r, gw_str_t name, const gw_str_t *ae)
{
    if (ae != NULL && ae->len > GW_ROUTE_NAME_MAX)
        return GT_EINVAL;
    rexch_t *x = name.len <= GW_ROUTE_NAME_MAX ? xfind(r, name) : NULL;
    if (x == NULL)
        return GT_ENOTFOUND;
    x->has_ae = ae != NULL;
    x->aelen = ae != NULL ? (uint8_t)ae->len : 0;
    if (x->aelen)
        memcpy(x->ae, ae->ptr, x->aelen);
    return GT_OK;
}

gt_err_t gw_route_exchange_remove(gw_router_t *r, gw_str_t name, gw_binding_fn fn, void *ctx)
{
    rexch_t *x = name.len <= GW_ROUTE_NAME_MAX ? xfind(r, name) : NULL;
    if (x == NULL)
        return GT_ENOTFOUND;
    xfree(r, x, fn, ctx);
    return GT_OK;
}

void gw_route_exchange_each(const gw_router_t *r, gw_exchange_fn fn, void *ctx)
{
    for (size_t i = 0; i < r->xs.nb; i++)
        for (const hlink_t *l = r->xs.b[i]; l != NULL; l = l->next) {
            const rexch_t *x = (const rexch_t *)l;
            fn(ctx, str_of(x->name, x->nlen), x->type, x->flags);
        }
}

size_t gw_route_exchange_count(const gw_router_t *r)
{
    return r->xs.n;
}

/* ---- routing -------------------------------------------------------- */

typedef struct rstate {
    gw_router_t *r;
    uint32_t hold; /* exchanges reached with one of these flags are held */
    size_t nwork;
    gw_table_t headers;
    bool hparsed;
    size_t nhd;
} rstate_t;

/* A matched binding's destination joins the result (a queue) or the work
 * list (an exchange), each once per route. */
static bool deliver(rstate_t *s, const rbind_t *b)
{
    gw_router_t *r = s->r;
    if (b->kind == GW_DEST_QUEUE) {
        rqueue_t *q = b->dest;
        if (q->seen == r->gen)
            return true;
        if (!gw_grow(&r->outq, &r->cap_out, r->nout + 1, sizeof *r->outq))
            return false;
        q->seen = r->gen;
        r->outq[r->nout++] = str_of(q->name, q->nlen);
        return true;
    }
    rexch_t *x = b->dest;
    if (x->seen == r->gen)
        return true;
    if (x->flags & s->hold) { /* not routed through: the caller's */
        if (!gw_grow(&r->outx, &r->cap_held, r->nheld + 1, sizeof *r->outx))
            return false;
        x->seen = r->gen;
        r->outx[r->nheld++] = str_of(x->name, x->nlen);
        return true;
    }
    if (!gw_grow(&r->work, &r->cap_work, s->nwork + 1, sizeof *r->work))
        return false;
    x->seen = r->gen;
    r->work[s->nwork++] = x;
    return true;
}

static bool tset_add(tnode_t ***set, size_t *cap, size_t *n, tnode_t *node, uint64_t mark)
{
    if (node == NULL || node->mark == mark)
        return true;
    if (!gw_grow(set, cap, *n + 1, sizeof **set))
        return false;
    node->mark = mark;
    (*set)[(*n)++] = node;
    return true;
}

/* Adds the '#' children of the set's nodes (a '#' matches zero words),
 * and theirs, to the set. */
static bool tset_close(tnode_t ***set, size_t *cap, size_t *n, uint64_t mark)
{
    for (size_t i = 0; i < *n; i++)
        if (!tset_add(set, cap, n, (*set)[i]->hash, mark))
            return false;
    return true;
}

/* key may be longer than 255 bytes (a CC entry): one step per word all
 * the same, so the work stays linear in the key. */
static bool route_topic(rstate_t *s, rexch_t *x, gw_str_t key, size_t *matched)
{
    gw_router_t *r = s->r;
    size_t na = 0, nb;
    wit_t it;
    gw_str_t w;

    r->step++;
    if (!tset_add(&r->ta, &r->cap_ta, &na, x->root, r->step) ||
        !tset_close(&r->ta, &r->cap_ta, &na, r->step))
        return false;
    wit_init(&it, key);
    while (na > 0 && wit_next(&it, &w)) {
        r->step++;
        nb = 0;
        for (size_t i = 0; i < na; i++) {
            tnode_t *n = r->ta[i];
            if ((n->is_hash && !tset_add(&r->tb, &r->cap_tb, &nb, n, r->step)) ||
                !tset_add(&r->tb, &r->cap_tb, &nb, tn_child(r, n, w), r->step) ||
                !tset_add(&r->tb, &r->cap_tb, &nb, n->star, r->step))
                return false;
        }
        if (!tset_close(&r->tb, &r->cap_tb, &nb, r->step))
            return false;
        tnode_t **t = r->ta;
        size_t c = r->cap_ta;
        r->ta = r->tb;
        r->cap_ta = r->cap_tb;
        r->tb = t;
        r->cap_tb = c;
        na = nb;
    }
    for (size_t i = 0; i < na; i++)
        for (rlink_t *l = r->ta[i]->binds.next; l != &r->ta[i]->binds; l = l->next) {
            (*matched)++;
            if (!deliver(s, CONTAINER(l, rbind_t, idx_link)))
                return false;
        }
    return true;
}

static bool route_one(rstate_t *s, rexch_t *x, const gw_str_t *keys, size_t nkeys,
                      size_t *matched)
{
    gw_router_t *r = s->r;
    switch (x->type) {
    case GW_XTYPE_FANOUT:
        for (rlink_t *l = x->out.next; l != &x->out; l = l->next) {
            (*matched)++;
            if (!deliver(s, CONTAINER(l, rbind_t, src_link)))
                return false;
        }
        return true;
    case GW_XTYPE_DIRECT:
        for (size_t k = 0; k < nkeys; k++) {
            dbucket_t *d = dfind(r, x, keys[k]);
            if (d == NULL)
                continue;
            for (rlink_t *l = d->binds.next; l != &d->binds; l = l->next) {
                (*matched)++;
                if (!deliver(s, CONTAINER(l, rbind_t, idx_link)))
                    return false;
            }
        }
        return true;
    case GW_XTYPE_TOPIC:
        for (size_t k = 0; k < nkeys; k++)
            if (!route_topic(s, x, keys[k], matched))
                return false;
        return true;
    case GW_XTYPE_HEADERS:
        if (!s->hparsed) {
            if (!gw_hents_sorted(s->headers, &r->hd, &r->cap_hd, &s->nhd))
                return false;
            s->hparsed = true;
        }
        for (rlink_t *l = x->out.next; l != &x->out; l = l->next) {
            rbind_t *b = CONTAINER(l, rbind_t, src_link);
            if (gw_hmatch(b->pat, b->npat, b->xmatch, r->hd, s->nhd)) {
                (*matched)++;
                if (!deliver(s, b))
                    return false;
            }
        }
        return true;
    }
    return true;
}

gt_err_t gw_route_header_keys(gw_table_t headers, gw_str_t *keys, size_t cap, size_t *n,
                              char *text, size_t textcap)
{
    static const char *const names[] = {"CC", "BCC"};
    size_t count = 0;

    for (size_t i = 0; i < 2; i++) {
        gw_value_t v;
        if (!gw_table_get(headers, names[i], &v))
            continue;
        if (v.type != 'A') {
            if (text != NULL && textcap > 0)
                snprintf(text, textcap, "invalid message: {unacceptable_type_in_header,\"%s\",%s}",
                         names[i], gw_route_type_atom(v.type));
            return GT_EINVAL;
        }
        gw_table_iter_t it;
        gw_value_t e;
        gw_table_iter_init(&it, v.v.table);
        while (gw_array_iter_next(&it, &e)) {
            if (e.type != 'S') /* only longstr elements route */
                continue;
            if (count < cap)
                keys[count] = str_of((const char *)e.v.bytes.ptr, e.v.bytes.len);
            count++;
        }
    }
    *n = count;
    return GT_OK;
}

static int qname_cmp(const void *a, const void *b)
{
    return gw_strcmp(*(const gw_str_t *)a, *(const gw_str_t *)b);
}

gt_err_t gw_route(gw_router_t *r, gw_str_t exchange, const gw_str_t *keys, size_t nkeys,
                  gw_table_t headers, gw_route_out_t *out)
{
    return gw_route_held(r, exchange, keys, nkeys, headers, 0, out);
}

gt_err_t gw_route_held(gw_router_t *r, gw_str_t exchange, const gw_str_t *keys, size_t nkeys,
                       gw_table_t headers, uint32_t hold, gw_route_out_t *out)
{
    rstate_t s = {.r = r, .hold = hold, .headers = headers};

    out->queues = NULL;
    out->n = 0;
    out->held = NULL;
    out->nheld = 0;
    r->nheld = 0;
    rexch_t *x = exchange.len <= GW_ROUTE_NAME_MAX ? xfind(r, exchange) : NULL;
    if (x == NULL)
        return GT_ENOTFOUND;
    r->gen++;
    r->nout = 0;
    if (!gw_grow(&r->work, &r->cap_work, 1, sizeof *r->work))
        return GT_ENOMEM;
    x->seen = r->gen;
    r->work[s.nwork++] = x;
    while (s.nwork > 0) {
        rexch_t *cur = r->work[--s.nwork];
        size_t matched = 0;
        if (!route_one(&s, cur, keys, nkeys, &matched)) {
            r->nout = r->nheld = 0;
            return GT_ENOMEM;
        }
        if (matched == 0 && cur->has_ae) {
            rexch_t *ae = xfind(r, str_of(cur->ae, cur->aelen));
            if (ae != NULL && ae->seen != r->gen) {
                if (!gw_grow(&r->work, &r->cap_work, s.nwork + 1, sizeof *r->work)) {
                    r->nout = r->nheld = 0;
                    return GT_ENOMEM;
                }
                ae->seen = r->gen;
                r->work[s.nwork++] = ae;
            }
        }
    }
    if (r->nout > 1)
        qsort(r->outq, r->nout, sizeof *r->outq, qname_cmp);
    out->queues = r->outq;
    out->n = r->nout;
    out->held = r->outx;
    out->nheld = r->nheld;
    return GT_OK;
}
