/* Field-table work for the router (gw_route.h): binding arguments
 * normalised as RabbitMQ stores them, and the headers exchange's match.
 *
 * Both follow RabbitMQ 3.10's decoded form of a table (rabbit_binary_parser):
 * a list of {Key, Type, Value} where 'l' and 'L' are both `long` and a
 * boolean is true/false whatever its octet.  Binding identity compares
 * those lists after rabbit_binding's stable sort by key; the headers
 * exchange compares values with Erlang's == (types ignored at the top,
 * kept inside nested tables and arrays).  Recursion only over nested
 * tables, bounded by GW_TABLE_MAX_DEPTH (tables are validated first). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_route_int.h"

static gw_str_t str_of(const char *p, size_t n)
{
    gw_str_t s = {p, n};
    return s;
}

/* ---- argument normalisation ----------------------------------------- */

/* Rewrites, in place, what RabbitMQ's decoder folds: 'L' is 'l', a
 * boolean is true or false (octet 1 or 0).  Sizes do not change.  base is
 * writable; t lies inside it and is validated. */
static void norm_values(uint8_t *base, gw_table_t t, bool array)
{
    gw_table_iter_t it;
    gw_table_iter_init(&it, t);
    for (;;) {
        const uint8_t *at = it.p;
        gw_str_t k;
        gw_value_t v;
        bool ok = array ? gw_array_iter_next(&it, &v) : gw_table_iter_next(&it, &k, &v);
        if (!ok)
            break;
        uint8_t *tp = base + (at - base) + (array ? 0 : 1 + k.len);
        if (*tp == 'L')
            *tp = 'l';
        else if (*tp == 't')
            tp[1] = tp[1] != 0;
        else if (*tp == 'F' || *tp == 'A')
            norm_values(base, v.v.table, *tp == 'A');
    }
}

typedef struct ent {
    gw_str_t key;
    size_t off, len, pos;
} ent_t;

static int ent_cmp(const void *a, const void *b)
{
    const ent_t *x = a, *y = b;
    int c = gw_strcmp(x->key, y->key);
    if (c != 0)
        return c;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* Writes the normalised form of validated table `in` into out (in.len
 * bytes): top-level entries stably sorted by key (rabbit_binding's
 * sort_args), values folded as norm_values.  GT_ENOMEM. */
gt_err_t gw_args_normalise(gw_table_t in, uint8_t *out)
{
    size_t n = gw_table_count(in);
    if (n == 0)
        return GT_OK;
    ent_t *e = malloc(n * sizeof *e);
    if (e == NULL)
        return GT_ENOMEM;
    gw_table_iter_t it;
    gw_str_t k;
    gw_value_t v;
    size_t i = 0;
    gw_table_iter_init(&it, in);
    const uint8_t *at = it.p;
    while (i < n && gw_table_iter_next(&it, &k, &v)) {
        e[i].key = k;
        e[i].off = (size_t)(at - in.ptr);
        e[i].len = (size_t)(it.p - at);
        e[i].pos = i;
        i++;
        at = it.p;
    }
    qsort(e, i, sizeof *e, ent_cmp);
    size_t o = 0;
    for (size_t j = 0; j < i; j++) {
        memcpy(out + o, in.ptr + e[j].off, e[j].len);
        o += e[j].len;
    }
    free(e);
    gw_table_t t = {out, o};
    norm_values(out, t, false);
    return GT_OK;
}

/* ---- headers matching ----------------------------------------------- */

enum { VC_INT, VC_UINT, VC_FLOAT, VC_BIN, VC_BOOL, VC_DEC, VC_VOID, VC_LIST, VC_OTHER };

static int vclass(char t)
{
    switch (t) {
    case 'b':
    case 's':
    case 'I':
    case 'l':
    case 'L':
        return VC_INT;
    case 'B':
    case 'u':
    case 'i':
    case 'T':
        return VC_UINT;
    case 'f':
    case 'd':
        return VC_FLOAT;
    case 'S':
    case 'x':
        return VC_BIN;
    case 't':
        return VC_BOOL;
    case 'D':
        return VC_DEC;
    case 'V':
        return VC_VOID;
    case 'F':
    case 'A':
        return VC_LIST;
    default:
        return VC_OTHER;
    }
}

static double fval(const gw_value_t *v)
{
    return v->type == 'f' ? (double)v->v.f : v->v.d;
}

/* Erlang's == between an integer and a float: exact numeric equality. */
static bool int_float_eq(const gw_value_t *iv, bool is_unsigned, double d)
{
    if (is_unsigned) {
        if (!(d >= 0.0 && d < 18446744073709551616.0))
            return false;
        uint64_t x = (uint64_t)d;
        return (double)x == d && x == iv->v.u;
    }
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0))
        return false;
    int64_t x = (int64_t)d;
    return (double)x == d && x == iv->v.i;
}

static bool list_eq(const gw_value_t *a, const gw_value_t *b);

/* Erlang's == on two decoded values (what headers_match compares: the
 * values without their type tags). */
static bool val_eq(const gw_value_t *a, const gw_value_t *b)
{
    int ca = vclass(a->type), cb = vclass(b->type);
    if ((ca == VC_INT || ca == VC_UINT) && (cb == VC_INT || cb == VC_UINT)) {
        if (ca == cb)
            return ca == VC_INT ? a->v.i == b->v.i : a->v.u == b->v.u;
        const gw_value_t *s = ca == VC_INT ? a : b, *u = ca == VC_INT ? b : a;
        return s->v.i >= 0 && (uint64_t)s->v.i == u->v.u;
    }
    if ((ca == VC_INT || ca == VC_UINT) && cb == VC_FLOAT)
        return int_float_eq(a, ca == VC_UINT, fval(b));
    if (ca == VC_FLOAT && (cb == VC_INT || cb == VC_UINT))
        return int_float_eq(b, cb == VC_UINT, fval(a));
    if (ca != cb)
        return false;
    switch (ca) {
    case VC_FLOAT:
        return fval(a) == fval(b);
    case VC_BIN:
        return a->v.bytes.len == b->v.bytes.len &&
               (a->v.bytes.len == 0 ||
                memcmp(a->v.bytes.ptr, b->v.bytes.ptr, a->v.bytes.len) == 0);
    case VC_BOOL:
        return (a->v.i != 0) == (b->v.i != 0);
    case VC_DEC:
        return a->v.dec.scale == b->v.dec.scale && a->v.dec.value == b->v.dec.value;
    case VC_VOID:
        return true;
    case VC_LIST:
        if (a->type != b->type) /* [] == [] is the only table = array case */
            return a->v.table.len == 0 && b->v.table.len == 0;
        return list_eq(a, b);
    default:
        return false;
    }
}

static char type_atom(char t)
{
    return t == 'L' ? 'l' : t; /* both decode to 'long' */
}

/* Tables and arrays compare as Erlang lists of {Key, Type, Value} /
 * {Type, Value}: same length, same keys and type tags in order, values
 * ==.  Depth bounded by validation. */
static bool list_eq(const gw_value_t *a, const gw_value_t *b)
{
    bool array = a->type == 'A';
    gw_table_iter_t ia, ib;
    gw_table_iter_init(&ia, a->v.table);
    gw_table_iter_init(&ib, b->v.table);
    for (;;) {
        gw_str_t ka = {0}, kb = {0};
        gw_value_t va, vb;
        bool ha = array ? gw_array_iter_next(&ia, &va) : gw_table_iter_next(&ia, &ka, &va);
        bool hb = array ? gw_array_iter_next(&ib, &vb) : gw_table_iter_next(&ib, &kb, &vb);
        if (!ha || !hb)
            return ha == hb;
        if (!array && gw_strcmp(ka, kb) != 0)
            return false;
        if (type_atom(va.type) != type_atom(vb.type) || !val_eq(&va, &vb))
            return false;
    }
}

static int hent_cmp(const void *a, const void *b)
{
    const gw_hent_t *x = a, *y = b;
    int c = gw_strcmp(x->key, y->key);
    if (c != 0)
        return c;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* Fills (*arr)[0..n) with the table's entries stably sorted by key. */
bool gw_hents_sorted(gw_table_t t, gw_hent_t **arr, size_t *cap, size_t *n)
{
    size_t cnt = gw_table_count(t), i = 0;
    *n = 0;
    if (cnt == 0)
        return true;
    if (!gw_grow(arr, cap, cnt, sizeof **arr))
        return false;
    gw_table_iter_t it;
    gw_table_iter_init(&it, t);
    while (i < cnt && gw_table_iter_next(&it, &(*arr)[i].key, &(*arr)[i].val)) {
        (*arr)[i].pos = i;
        i++;
    }
    qsort(*arr, i, sizeof **arr, hent_cmp);
    *n = i;
    return true;
}

int gw_xmatch_of(gw_table_t args)
{
    gw_value_t v;
    if (!gw_table_get(args, "x-match", &v) || v.type != 'S')
        return GW_XM_ALL;
    gw_str_t s = str_of((const char *)v.v.bytes.ptr, v.v.bytes.len);
    if (gw_str_eq(s, "any"))
        return GW_XM_ANY;
    if (gw_str_eq(s, "all-with-x"))
        return GW_XM_ALL_X;
    if (gw_str_eq(s, "any-with-x"))
        return GW_XM_ANY_X;
    return GW_XM_ALL;
}

/* rabbit_exchange_type_headers:headers_match/5 over sorted arrays. */
bool gw_hmatch(const gw_hent_t *p, size_t np, int kind, const gw_hent_t *d, size_t nd)
{
    bool all = true, any = false;
    bool is_all = kind == GW_XM_ALL || kind == GW_XM_ALL_X;
    bool with_x = kind == GW_XM_ALL_X || kind == GW_XM_ANY_X;
    size_t i = 0, j = 0;
    for (;;) {
        if (is_all && !all)
            return false;
        if (!is_all && any)
            return true;
        if (i == np)
            return is_all ? all : any;
        gw_str_t pk = p[i].key;
        if (gw_str_eq(pk, "x-match") ||
            (!with_x && pk.len >= 2 && pk.ptr[0] == 'x' && pk.ptr[1] == '-')) {
            i++;
            continue;
        }
        if (j == nd) { /* keys left in the binding, none in the message */
            all = false;
            i = np;
            continue;
        }
        int c = gw_strcmp(pk, d[j].key);
        if (c > 0) {
            j++;
        } else if (c < 0) {
            all = false;
            i++;
        } else {
            if (p[i].val.type == 'V' || val_eq(&p[i].val, &d[j].val))
                any = true;
            else
                all = false;
            i++;
            j++;
        }
    }
}

bool gw_route_headers_match(gw_table_t args, gw_table_t headers)
{
    gw_hent_t *pa = NULL, *da = NULL;
    size_t pc = 0, dc = 0, np, nd;
    bool m = false;
    if (gw_hents_sorted(args, &pa, &pc, &np) && gw_hents_sorted(headers, &da, &dc, &nd))
        m = gw_hmatch(pa, np, gw_xmatch_of(args), da, nd);
    free(pa);
    free(da);
    return m;
}

/* Erlang's ~p of a binary (what RabbitMQ's reply texts show): <<"...">>
 * when every byte is a printable latin-1 character (32..126, 160..255, or
 * one of \b \t \n \v \f \r \e, written escaped like " and \), else
 * the byte values <<1,2,3>>.  UTF-8 text is printable latin-1 byte by
 * byte, so it comes back as sent.  (~p would also break a value longer
 * than a line; reply texts are cut at 255 bytes anyway.) */
static const char *latin1_escape(uint8_t c)
{
    switch (c) {
    case '"': return "\\\"";
    case '\\': return "\\\\";
    case '\b': return "\\b";
    case '\t': return "\\t";
    case '\n': return "\\n";
    case '\v': return "\\v";
    case '\f': return "\\f";
    case '\r': return "\\r";
    case 27: return "\\e";
    default: return NULL;
    }
}

static void fmt_binary(char *buf, size_t cap, const uint8_t *p, size_t n)
{
    bool printable = true;
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= 32 && p[i] <= 126) || p[i] >= 160 ||
              (latin1_escape(p[i]) != NULL)))
            printable = false;
    size_t o = 0;
#define PUT(...)                                                                   \
    do {                                                                           \
        int w_ = snprintf(buf + o, o < cap ? cap - o : 0, __VA_ARGS__);            \
        if (w_ > 0)                                                                \
            o += (size_t)w_;                                                       \
    } while (0)
    PUT("<<");
    if (n > 0 && printable) {
        PUT("\"");
        for (size_t i = 0; i < n; i++) {
            const char *e = latin1_escape(p[i]);
            if (e != NULL)
                PUT("%s", e);
            else
                PUT("%c", p[i]);
        }
        PUT("\"");
    } else {
        for (size_t i = 0; i < n; i++)
            PUT(i ? ",%u" : "%u", p[i]);
    }
    PUT(">>");
#undef PUT
}

/* Erlang's ~p of a float, near enough: the shortest digits that read
 * back the same, always with a fraction ("2.0", "1.5", "0.1"). */
static void fmt_float(char *buf, size_t cap, double d)
{
    char tmp[64];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, d);
        if (strtod(tmp, NULL) == d)
            break;
    }
    if (strpbrk(tmp, ".en") == NULL) /* no point, exponent, inf or nan */
        snprintf(buf, cap, "%s.0", tmp);
    else
        snprintf(buf, cap, "%s", tmp);
}

const char *gw_route_type_atom(char t)
{
    switch (t) {
    case 'S': return "longstr";
    case 'T': return "timestamp";
    case 'b': return "byte";
    case 'B': return "unsignedbyte";
    case 's': return "short";
    case 'u': return "unsignedshort";
    case 'I': return "signedint";
    case 'i': return "unsignedint";
    case 'd': return "double";
    case 'f': return "float";
    case 'l':
    case 'L': return "long";
    case 't': return "bool";
    case 'D': return "decimal";
    case 'F': return "table";
    case 'A': return "array";
    case 'x': return "binary";
    case 'V': return "void";
    default: return "?";
    }
}

static void fmt_value(char *buf, size_t cap, const gw_value_t *v)
{
    switch (vclass(v->type)) {
    case VC_INT:
        snprintf(buf, cap, "%lld", (long long)v->v.i);
        break;
    case VC_UINT:
        snprintf(buf, cap, "%llu", (unsigned long long)v->v.u);
        break;
    case VC_FLOAT:
        fmt_float(buf, cap, fval(v));
        break;
    case VC_BIN:
        fmt_binary(buf, cap, v->v.bytes.ptr, v->v.bytes.len);
        break;
    case VC_BOOL:
        snprintf(buf, cap, "%s", v->v.i ? "true" : "false");
        break;
    case VC_DEC:
        snprintf(buf, cap, "{%u,%u}", v->v.dec.scale, v->v.dec.value);
        break;
    case VC_VOID:
        snprintf(buf, cap, "undefined");
        break;
    default: /* a table or array: RabbitMQ prints the decoded list */
        snprintf(buf, cap, "%s", v->v.table.len ? "[...]" : "[]");
        break;
    }
}

gt_err_t gw_route_headers_check(gw_table_t args, char *text, size_t cap)
{
    gw_value_t v;
    char val[600];
    if (!gw_table_get(args, "x-match", &v))
        return GT_OK;
    if (v.type == 'S') {
        gw_str_t s = str_of((const char *)v.v.bytes.ptr, v.v.bytes.len);
        if (gw_str_eq(s, "all") || gw_str_eq(s, "any") || gw_str_eq(s, "all-with-x") ||
            gw_str_eq(s, "any-with-x"))
            return GT_OK;
        if (text != NULL && cap > 0) {
            fmt_value(val, sizeof val, &v);
            snprintf(text, cap,
                     "Invalid x-match field value %s; expected all, any, all-with-x, or "
                     "any-with-x",
                     val);
        }
        return GT_EINVAL;
    }
    if (text != NULL && cap > 0) {
        fmt_value(val, sizeof val, &v);
        snprintf(text, cap, "Invalid x-match field type %s (value %s); expected longstr",
                 gw_route_type_atom(v.type), val);
    }
    return GT_EINVAL;
}
