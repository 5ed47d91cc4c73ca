/* Evaluation of a compiled SQL92 filter against one message's properties.
 *
 * Three-valued logic as in RocketMQ's selector (inherited from JMS): every
 * condition is TRUE, FALSE or UNKNOWN.  A missing property is NULL, and any
 * comparison touching NULL is UNKNOWN; so is a comparison whose string
 * operand has to be read as a number but is not one (upstream throws there,
 * which also drops the message).  NOT UNKNOWN stays UNKNOWN, AND / OR follow
 * SQL's tables, and a message matches only when the result is TRUE.
 *
 * Evaluation only reads the filter and allocates nothing, so one compiled
 * filter can serve any number of threads.  Recursion follows the tree,
 * whose depth the parser bounds (GT_SQL_MAX_DEPTH levels of parentheses;
 * AND / OR chains are flat lists and NOT chains are folded). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gt_sql_int.h"

typedef enum tv {
    TV_FALSE = 0,
    TV_TRUE,
    TV_UNKNOWN,
} tv_t;

/* A runtime value: a literal, or a property resolved through the lookup. */
typedef enum vkind {
    V_NULL = 0,
    V_STR,
    V_INT,
    V_DBL,
    V_BOOL,
} vkind_t;

typedef struct val {
    vkind_t k;
    bool b;
    int64_t i;
    double d;
    const char *s; /* NUL-terminated */
    size_t n;
} val_t;

typedef struct ev {
    const gt_sql_t *f;
    gt_sql_lookup_fn lookup;
    void *ctx;
} ev_t;

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

bool gt_sql_parse_number(const char *s, size_t n, bool *is_int, int64_t *i,
                         double *d)
{
    size_t p = 0, digits = 0;
    bool integral = true;

    if (p < n && (s[p] == '+' || s[p] == '-'))
        p++;
    while (p < n && is_digit(s[p])) {
        p++;
        digits++;
    }
    if (p < n && s[p] == '.') {
        integral = false;
        p++;
        while (p < n && is_digit(s[p])) {
            p++;
            digits++;
        }
    }
    if (digits == 0)
        return false;
    if (p < n && (s[p] == 'e' || s[p] == 'E')) {
        size_t q = p + 1, edigits = 0;
        if (q < n && (s[q] == '+' || s[q] == '-'))
            q++;
        while (q < n && is_digit(s[q])) {
            q++;
            edigits++;
        }
        if (edigits == 0)
            return false;
        integral = false;
        p = q;
    }
    if (p != n)
        return false;

    if (integral) {
        /* Exact int64 when it fits; otherwise fall through to a double,
         * as Java's Long.valueOf would fail and Double.valueOf succeed. */
        bool negative = s[0] == '-';
        size_t q = (s[0] == '+' || s[0] == '-') ? 1 : 0;
        uint64_t mag = 0, limit = negative ? (uint64_t)INT64_MAX + 1u : (uint64_t)INT64_MAX;
        bool fits = true;
        for (; q < n; q++) {
            unsigned dg = (unsigned)(s[q] - '0');
            if (mag > (limit - dg) / 10u) {
                fits = false;
                break;
            }
            mag = mag * 10u + dg;
        }
        if (fits) {
            *is_int = true;
            if (negative)
                *i = mag == (uint64_t)INT64_MAX + 1u ? INT64_MIN : -(int64_t)mag;
            else
                *i = (int64_t)mag;
            return true;
        }
    }
    /* The syntax was checked above, so strtod consumes all of it (the
     * process keeps the "C" numeric locale). */
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end != s + n)
        return false;
    *is_int = false;
    *d = v;
    return true;
}

static void load(const ev_t *e, uint32_t idx, val_t *v)
{
    const gt_sql_node_t *nd = &e->f->nodes[idx];

    memset(v, 0, sizeof *v);
    switch ((gt_sql_kind_t)nd->kind) {
    case GT_SQL_N_BOOL:
        v->k = V_BOOL;
        v->b = nd->v.b;
        break;
    case GT_SQL_N_INT:
        v->k = V_INT;
        v->i = nd->v.i;
        break;
    case GT_SQL_N_DBL:
        v->k = V_DBL;
        v->d = nd->v.d;
        break;
    case GT_SQL_N_STR:
        v->k = V_STR;
        v->s = e->f->pool + nd->v.s.off;
        v->n = nd->v.s.len;
        break;
    case GT_SQL_N_PROP: {
        const char *s = NULL;
        if (e->lookup != NULL)
            s = e->lookup(e->ctx, e->f->pool + nd->v.s.off, nd->v.s.len);
        if (s != NULL) {
            v->k = V_STR;
            v->s = s;
            v->n = strlen(s);
        }
        break;
    }
    default: /* GT_SQL_N_NULL; conditions never reach here */
        break;
    }
}

/* Converts a string or a number to a number; false when it is not one. */
static bool to_num(const val_t *in, val_t *out)
{
    *out = *in;
    if (in->k == V_INT || in->k == V_DBL)
        return true;
    if (in->k != V_STR)
        return false;
    bool is_int = false;
    if (!gt_sql_parse_number(in->s, in->n, &is_int, &out->i, &out->d))
        return false;
    out->k = is_int ? V_INT : V_DBL;
    return true;
}

static int num_cmp(const val_t *a, const val_t *b)
{
    if (a->k == V_INT && b->k == V_INT)
        return (a->i > b->i) - (a->i < b->i);
    double x = a->k == V_INT ? (double)a->i : a->d;
    double y = b->k == V_INT ? (double)b->i : b->d;
    return (x > y) - (x < y);
}

/* Java's Boolean.valueOf(String): "true" in any case, else false. */
static bool str_true(const val_t *v)
{
    static const char t[] = "true";
    if (v->n != 4)
        return false;
    for (size_t k = 0; k < 4; k++) {
        char c = v->s[k];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != t[k])
            return false;
    }
    return true;
}

static tv_t eq(const val_t *l, const val_t *r)
{
    if (l->k == V_NULL || r->k == V_NULL)
        return TV_UNKNOWN;
    if (l->k == V_STR && r->k == V_STR)
        return l->n == r->n && memcmp(l->s, r->s, l->n) == 0 ? TV_TRUE : TV_FALSE;
    if (l->k == V_BOOL || r->k == V_BOOL) {
        const val_t *b = l->k == V_BOOL ? l : r;
        const val_t *o = l->k == V_BOOL ? r : l;
        if (o->k == V_BOOL)
            return b->b == o->b ? TV_TRUE : TV_FALSE;
        if (o->k == V_STR)
            return str_true(o) == b->b ? TV_TRUE : TV_FALSE;
        return TV_FALSE; /* a boolean never equals a number */
    }
    val_t a, b;
    if (!to_num(l, &a) || !to_num(r, &b))
        return TV_UNKNOWN;
    return num_cmp(&a, &b) == 0 ? TV_TRUE : TV_FALSE;
}

static tv_t ord(gt_sql_cmp_t op, const val_t *l, const val_t *r)
{
    val_t a, b;
    if (l->k == V_NULL || r->k == V_NULL)
        return TV_UNKNOWN;
    if (!to_num(l, &a) || !to_num(r, &b))
        return TV_UNKNOWN;
    int c = num_cmp(&a, &b);
    bool res;
    switch (op) {
    case GT_SQL_LT: res = c < 0; break;
    case GT_SQL_LE: res = c <= 0; break;
    case GT_SQL_GT: res = c > 0; break;
    case GT_SQL_GE: res = c >= 0; break;
    default: return TV_UNKNOWN;
    }
    return res ? TV_TRUE : TV_FALSE;
}

static tv_t tv_not(tv_t t)
{
    return t == TV_UNKNOWN ? TV_UNKNOWN : (t == TV_TRUE ? TV_FALSE : TV_TRUE);
}

static tv_t tv_and(tv_t a, tv_t b)
{
    if (a == TV_FALSE || b == TV_FALSE)
        return TV_FALSE;
    return a == TV_TRUE && b == TV_TRUE ? TV_TRUE : TV_UNKNOWN;
}

static tv_t tv_or(tv_t a, tv_t b)
{
    if (a == TV_TRUE || b == TV_TRUE)
        return TV_TRUE;
    return a == TV_FALSE && b == TV_FALSE ? TV_FALSE : TV_UNKNOWN;
}

static tv_t eval_match(const ev_t *e, const gt_sql_node_t *nd)
{
    val_t x, needle;

    load(e, nd->kid[0], &x);
    load(e, nd->kid[1], &needle);
    if (x.k == V_NULL)
        return TV_UNKNOWN;
    /* Upstream: an empty needle or a non-string operand is FALSE for both
     * the plain and the NOT form. */
    if (x.k != V_STR || needle.n == 0)
        return TV_FALSE;
    bool hit = false;
    if (needle.n <= x.n) {
        switch ((gt_sql_strop_t)nd->op) {
        case GT_SQL_CONTAINS:
            hit = memmem(x.s, x.n, needle.s, needle.n) != NULL;
            break;
        case GT_SQL_STARTSWITH:
            hit = memcmp(x.s, needle.s, needle.n) == 0;
            break;
        case GT_SQL_ENDSWITH:
            hit = memcmp(x.s + x.n - needle.n, needle.s, needle.n) == 0;
            break;
        }
    }
    return hit != (nd->neg != 0) ? TV_TRUE : TV_FALSE;
}

static tv_t eval_in(const ev_t *e, const gt_sql_node_t *nd)
{
    val_t x;

    load(e, nd->kid[0], &x);
    if (x.k != V_STR)
        return TV_UNKNOWN;
    bool hit = false;
    for (uint32_t k = nd->kid[1]; k != GT_SQL_NONE && !hit; k = e->f->nodes[k].next) {
        const gt_sql_node_t *it = &e->f->nodes[k];
        hit = it->v.s.len == x.n &&
              memcmp(e->f->pool + it->v.s.off, x.s, x.n) == 0;
    }
    return hit != (nd->neg != 0) ? TV_TRUE : TV_FALSE;
}

static tv_t eval_cond(const ev_t *e, uint32_t idx)
{
    const gt_sql_node_t *nd = &e->f->nodes[idx];
    val_t a, b, c;
    tv_t t;

    switch ((gt_sql_kind_t)nd->kind) {
    case GT_SQL_N_BOOL:
        return nd->v.b ? TV_TRUE : TV_FALSE;
    case GT_SQL_N_AND:
        /* Stops at the first FALSE; UNKNOWN only if nothing is FALSE. */
        t = TV_TRUE;
        for (uint32_t k = nd->kid[0]; k != GT_SQL_NONE; k = e->f->nodes[k].next) {
            t = tv_and(t, eval_cond(e, k));
            if (t == TV_FALSE)
                break;
        }
        return t;
    case GT_SQL_N_OR:
        t = TV_FALSE;
        for (uint32_t k = nd->kid[0]; k != GT_SQL_NONE; k = e->f->nodes[k].next) {
            t = tv_or(t, eval_cond(e, k));
            if (t == TV_TRUE)
                break;
        }
        return t;
    case GT_SQL_N_NOT:
        return tv_not(eval_cond(e, nd->kid[0]));
    case GT_SQL_N_CMP:
        load(e, nd->kid[0], &a);
        load(e, nd->kid[1], &b);
        if (nd->op == GT_SQL_EQ)
            return eq(&a, &b);
        if (nd->op == GT_SQL_NE)
            return tv_not(eq(&a, &b));
        return ord((gt_sql_cmp_t)nd->op, &a, &b);
    case GT_SQL_N_BETWEEN:
        load(e, nd->kid[0], &a);
        load(e, nd->kid[1], &b);
        load(e, nd->kid[2], &c);
        /* As upstream: x >= lo AND x <= hi; NOT: x < lo OR x > hi. */
        if (nd->neg)
            return tv_or(ord(GT_SQL_LT, &a, &b), ord(GT_SQL_GT, &a, &c));
        return tv_and(ord(GT_SQL_GE, &a, &b), ord(GT_SQL_LE, &a, &c));
    case GT_SQL_N_IN:
        return eval_in(e, nd);
    case GT_SQL_N_MATCH:
        return eval_match(e, nd);
    case GT_SQL_N_ISNULL:
        load(e, nd->kid[0], &a);
        return (a.k == V_NULL) != (nd->neg != 0) ? TV_TRUE : TV_FALSE;
    default:
        return TV_UNKNOWN; /* a value where a condition belongs: the parser rejects it */
    }
}

bool gt_sql_eval(const gt_sql_t *f, gt_sql_lookup_fn lookup, void *ctx)
{
    if (f == NULL || f->nnodes == 0 || f->root >= f->nnodes)
        return false;
    ev_t e = {.f = f, .lookup = lookup, .ctx = ctx};
    return eval_cond(&e, f->root) == TV_TRUE;
}

void gt_sql_free(gt_sql_t *f)
{
    if (f == NULL)
        return;
    free(f->nodes);
    free(f->pool);
    free(f);
}
