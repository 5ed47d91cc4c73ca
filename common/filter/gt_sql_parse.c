/* Compiler for RocketMQ SQL92 filter expressions: lexer + recursive-descent
 * parser producing the flat tree of gt_sql_int.h.
 *
 * The input is untrusted (it comes straight from a client's
 * FilterExpression), so the parser is written to be fuzzed: every read is
 * bounds-checked against `len` (the text need not be NUL-terminated), the
 * only recursion is through parentheses and stops at GT_SQL_MAX_DEPTH, runs
 * of NOT and of unary signs are folded in loops, AND / OR chains become one
 * flat list, and memory grows only with the input (nodes <= tokens, pool <=
 * input bytes).  Type rules that upstream enforces when it builds its tree
 * (no NULL in '=', only numbers in '<' and BETWEEN, only strings in IN) are
 * compile errors here too, reported with the 1-based byte position.
 *
 * Where upstream's JavaCC grammar is looser than useful, the parser is
 * stricter and says so: a bare property or number is not a condition, and
 * comparisons do not chain (`a = b = c`). */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt_sql_int.h"

typedef enum tk {
    TK_END = 0,
    TK_LPAREN,
    TK_RPAREN,
    TK_COMMA,
    TK_EQ,
    TK_NE,
    TK_LT,
    TK_LE,
    TK_GT,
    TK_GE,
    TK_PLUS,
    TK_MINUS,
    TK_INT,
    TK_DBL,
    TK_STR,
    TK_NAME,
    TK_NOT,
    TK_AND,
    TK_OR,
    TK_BETWEEN,
    TK_IN,
    TK_TRUE,
    TK_FALSE,
    TK_NULL,
    TK_IS,
    TK_CONTAINS,
    TK_STARTSWITH,
    TK_ENDSWITH,
} tk_t;

static const struct {
    const char *word;
    tk_t tk;
} gt_sql_keywords[] = {
    {"NOT", TK_NOT},         {"AND", TK_AND},
    {"OR", TK_OR},           {"BETWEEN", TK_BETWEEN},
    {"IN", TK_IN},           {"TRUE", TK_TRUE},
    {"FALSE", TK_FALSE},     {"NULL", TK_NULL},
    {"IS", TK_IS},           {"CONTAINS", TK_CONTAINS},
    {"STARTSWITH", TK_STARTSWITH}, {"ENDSWITH", TK_ENDSWITH},
};

typedef struct tok {
    tk_t kind;
    size_t start, end; /* byte range in the source */
    uint64_t u;        /* TK_INT: magnitude, at most 2^63 */
    double d;          /* TK_DBL */
} tok_t;

typedef struct parser {
    const char *src;
    size_t len;
    size_t at;       /* next byte to scan */
    tok_t tok;       /* current token */
    unsigned depth;  /* open parentheses */
    gt_sql_t *f;     /* being built */
    size_t ncap;     /* capacity of f->nodes */
    size_t pcap;     /* capacity of f->pool */
    char *err;
    size_t errlen;
} parser_t;

#define INT_MAG_MAX ((uint64_t)INT64_MAX + 1u) /* |INT64_MIN| */

/* ---- errors ------------------------------------------------------------ */

static gt_err_t fail(parser_t *p, size_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static gt_err_t fail(parser_t *p, size_t at, const char *fmt, ...)
{
    if (p->err != NULL && p->errlen > 0) {
        int n = snprintf(p->err, p->errlen, "position %zu: ", at + 1);
        if (n >= 0 && (size_t)n < p->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return GT_EINVAL;
}

static gt_err_t oom(parser_t *p)
{
    if (p->err != NULL && p->errlen > 0)
        snprintf(p->err, p->errlen, "out of memory");
    return GT_ENOMEM;
}

/* "expected X but found Y", Y quoted from the source (printable ASCII only,
 * shortened) so a hostile expression cannot put anything odd in a log. */
static gt_err_t fail_tok(parser_t *p, const char *expected)
{
    char text[40];
    const tok_t *t = &p->tok;

    if (t->kind == TK_END)
        return fail(p, t->start, "expected %s but found end of input", expected);
    size_t n = t->end - t->start, k, o = 0;
    text[o++] = t->kind == TK_STR ? '"' : '\'';
    for (k = 0; k < n && k < 24; k++) {
        unsigned char c = (unsigned char)p->src[t->start + k];
        text[o++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    if (k < n) {
        memcpy(text + o, "...", 3);
        o += 3;
    }
    text[o++] = t->kind == TK_STR ? '"' : '\'';
    text[o] = '\0';
    return fail(p, t->start, "expected %s but found %s", expected, text);
}

/* ---- storage ----------------------------------------------------------- */

static gt_err_t node_new(parser_t *p, gt_sql_kind_t kind, size_t pos, uint32_t *out)
{
    gt_sql_t *f = p->f;

    if (f->nnodes == p->ncap) {
        size_t cap = p->ncap != 0 ? p->ncap * 2 : 16;
        gt_sql_node_t *nodes = realloc(f->nodes, cap * sizeof *nodes);
        if (nodes == NULL)
            return oom(p);
        f->nodes = nodes;
        p->ncap = cap;
    }
    gt_sql_node_t *nd = &f->nodes[f->nnodes];
    memset(nd, 0, sizeof *nd);
    nd->kind = (uint8_t)kind;
    nd->pos = (uint32_t)pos + 1;
    nd->kid[0] = nd->kid[1] = nd->kid[2] = GT_SQL_NONE;
    nd->next = GT_SQL_NONE;
    *out = f->nnodes++;
    return GT_OK;
}

/* Makes room for `n` more pool bytes. */
static gt_err_t pool_reserve(parser_t *p, size_t n)
{
    gt_sql_t *f = p->f;

    if (p->pcap - f->pool_len >= n)
        return GT_OK;
    size_t cap = p->pcap != 0 ? p->pcap : 64;
    while (cap - f->pool_len < n)
        cap *= 2;
    char *pool = realloc(f->pool, cap);
    if (pool == NULL)
        return oom(p);
    f->pool = pool;
    p->pcap = cap;
    return GT_OK;
}

/* Copies the current token's text into the pool as a NUL-terminated
 * string, undoubling '' when it is a string literal, and points node `idx`
 * at it. */
static gt_err_t pool_take(parser_t *p, uint32_t idx)
{
    const tok_t *t = &p->tok;
    size_t s = t->start, e = t->end;

    if (t->kind == TK_STR) {
        s++;
        e--;
    }
    gt_err_t rc = pool_reserve(p, e - s + 1);
    if (rc != GT_OK)
        return rc;
    gt_sql_t *f = p->f;
    size_t o = f->pool_len;
    for (size_t k = s; k < e; k++) {
        f->pool[o++] = p->src[k];
        if (t->kind == TK_STR && p->src[k] == '\'')
            k++; /* the lexer guarantees the pair */
    }
    f->nodes[idx].v.s.off = (uint32_t)f->pool_len;
    f->nodes[idx].v.s.len = (uint32_t)(o - f->pool_len);
    f->pool[o++] = '\0';
    f->pool_len = o;
    return GT_OK;
}

/* ---- lexer ------------------------------------------------------------- */

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_name_start(char c)
{
    return is_alpha(c) || c == '_' || c == '$';
}

static bool is_name_char(char c)
{
    return is_name_start(c) || is_digit(c) || c == '.';
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}

/* ASCII case-insensitive match of `n` source bytes against a keyword. */
static bool word_is(const char *s, size_t n, const char *kw)
{
    size_t k;
    for (k = 0; k < n; k++) {
        char c = s[k];
        if (c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        if (kw[k] == '\0' || c != kw[k])
            return false;
    }
    return kw[k] == '\0';
}

static gt_err_t skip_blank(parser_t *p)
{
    const char *s = p->src;

    for (;;) {
        while (p->at < p->len && is_space(s[p->at]))
            p->at++;
        if (p->at + 1 < p->len && s[p->at] == '-' && s[p->at + 1] == '-') {
            while (p->at < p->len && s[p->at] != '\n' && s[p->at] != '\r')
                p->at++;
            continue;
        }
        if (p->at + 1 < p->len && s[p->at] == '/' && s[p->at + 1] == '*') {
            size_t start = p->at;
            p->at += 2;
            for (;;) {
                if (p->at + 1 >= p->len)
                    return fail(p, start, "unterminated comment");
                if (s[p->at] == '*' && s[p->at + 1] == '/')
                    break;
                p->at++;
            }
            p->at += 2;
            continue;
        }
        return GT_OK;
    }
}

static gt_err_t lex_number(parser_t *p)
{
    const char *s = p->src;
    size_t start = p->at, at = p->at;
    bool is_float = false;

    while (at < p->len && is_digit(s[at]))
        at++;
    if (at < p->len && s[at] == '.') {
        is_float = true;
        at++;
        while (at < p->len && is_digit(s[at]))
            at++;
    }
    if (at < p->len && (s[at] == 'e' || s[at] == 'E')) {
        size_t q = at + 1;
        if (q < p->len && (s[q] == '+' || s[q] == '-'))
            q++;
        if (q < p->len && is_digit(s[q])) {
            while (q < p->len && is_digit(s[q]))
                q++;
            at = q;
            is_float = true;
        }
    }
    size_t num_end = at;
    if (!is_float && at < p->len && (s[at] == 'l' || s[at] == 'L'))
        at++;
    if (at < p->len && is_name_char(s[at]))
        return fail(p, start, "malformed number");
    p->tok.kind = is_float ? TK_DBL : TK_INT;
    p->tok.start = start;
    p->tok.end = at;
    p->at = at;

    if (!is_float) {
        uint64_t mag = 0;
        for (size_t k = start; k < num_end; k++) {
            unsigned dg = (unsigned)(s[k] - '0');
            if (mag > (INT_MAG_MAX - dg) / 10u)
                return fail(p, start, "integer out of range");
            mag = mag * 10u + dg;
        }
        p->tok.u = mag;
        return GT_OK;
    }
    /* strtod wants a NUL-terminated copy: borrow the pool's free tail. */
    size_t n = num_end - start;
    gt_err_t rc = pool_reserve(p, n + 1);
    if (rc != GT_OK)
        return rc;
    char *tmp = p->f->pool + p->f->pool_len;
    memcpy(tmp, s + start, n);
    tmp[n] = '\0';
    bool is_int = false;
    int64_t ignored = 0;
    if (!gt_sql_parse_number(tmp, n, &is_int, &ignored, &p->tok.d) || is_int)
        return fail(p, start, "malformed number");
    if (isinf(p->tok.d))
        return fail(p, start, "number out of range");
    return GT_OK;
}

static gt_err_t lex_string(parser_t *p)
{
    const char *s = p->src;
    size_t start = p->at, at = p->at + 1;

    for (;;) {
        if (at >= p->len)
            return fail(p, start, "unterminated string literal");
        if (s[at] == '\0')
            return fail(p, at, "NUL byte in string literal");
        if (s[at] == '\'') {
            if (at + 1 < p->len && s[at + 1] == '\'') {
                at += 2;
                continue;
            }
            at++;
            break;
        }
        at++;
    }
    p->tok.kind = TK_STR;
    p->tok.start = start;
    p->tok.end = at;
    p->at = at;
    return GT_OK;
}

/* Advances to the next token. */
static gt_err_t lex_next(parser_t *p)
{
    const char *s = p->src;
    gt_err_t rc = skip_blank(p);

    if (rc != GT_OK)
        return rc;
    memset(&p->tok, 0, sizeof p->tok);
    p->tok.start = p->tok.end = p->at;
    if (p->at >= p->len) {
        p->tok.kind = TK_END;
        return GT_OK;
    }
    char c = s[p->at];
    char c2 = p->at + 1 < p->len ? s[p->at + 1] : '\0';
    size_t width = 1;
    switch (c) {
    case '(': p->tok.kind = TK_LPAREN; break;
    case ')': p->tok.kind = TK_RPAREN; break;
    case ',': p->tok.kind = TK_COMMA; break;
    case '=': p->tok.kind = TK_EQ; break;
    case '+': p->tok.kind = TK_PLUS; break;
    case '-': p->tok.kind = TK_MINUS; break;
    case '<':
        if (c2 == '=') {
            p->tok.kind = TK_LE;
            width = 2;
        } else if (c2 == '>') {
            p->tok.kind = TK_NE;
            width = 2;
        } else {
            p->tok.kind = TK_LT;
        }
        break;
    case '>':
        if (c2 == '=') {
            p->tok.kind = TK_GE;
            width = 2;
        } else {
            p->tok.kind = TK_GT;
        }
        break;
    case '!':
        if (c2 != '=')
            return fail(p, p->at, "unexpected character '!'");
        p->tok.kind = TK_NE;
        width = 2;
        break;
    case '\'':
        return lex_string(p);
    default:
        if (is_digit(c) || (c == '.' && is_digit(c2)))
            return lex_number(p);
        if (is_name_start(c)) {
            size_t e = p->at + 1;
            while (e < p->len && is_name_char(s[e]))
                e++;
            p->tok.kind = TK_NAME;
            for (size_t k = 0; k < sizeof gt_sql_keywords / sizeof gt_sql_keywords[0]; k++) {
                if (word_is(s + p->at, e - p->at, gt_sql_keywords[k].word)) {
                    p->tok.kind = gt_sql_keywords[k].tk;
                    break;
                }
            }
            width = e - p->at;
            break;
        }
        if ((unsigned char)c >= 0x20 && (unsigned char)c < 0x7f)
            return fail(p, p->at, "unexpected character '%c'", c);
        return fail(p, p->at, "unexpected byte 0x%02x", (unsigned)(unsigned char)c);
    }
    p->at += width;
    p->tok.end = p->at;
    return GT_OK;
}

/* ---- parser ------------------------------------------------------------ */

static gt_err_t parse_logic(parser_t *p, int level, uint32_t *out);

static const gt_sql_node_t *nd(const parser_t *p, uint32_t idx)
{
    return &p->f->nodes[idx];
}

static gt_err_t need_cond(parser_t *p, uint32_t idx)
{
    if (gt_sql_is_cond(nd(p, idx)->kind))
        return GT_OK;
    return fail(p, nd(p, idx)->pos - 1u,
                "expected a condition but found a bare value "
                "(compare it, e.g. x = 'v' or x IS NOT NULL)");
}

static gt_err_t need_value(parser_t *p, uint32_t idx)
{
    if (gt_sql_is_value(nd(p, idx)->kind))
        return GT_OK;
    return fail(p, nd(p, idx)->pos - 1u,
                "expected a property or a literal but found a condition");
}

/* Operands of <, <=, >, >= and BETWEEN: numbers and properties only. */
static gt_err_t need_numeric(parser_t *p, uint32_t idx, const char *op)
{
    gt_err_t rc = need_value(p, idx);
    if (rc != GT_OK)
        return rc;
    uint8_t k = nd(p, idx)->kind;
    if (k == GT_SQL_N_INT || k == GT_SQL_N_DBL || k == GT_SQL_N_PROP)
        return GT_OK;
    return fail(p, nd(p, idx)->pos - 1u,
                "%s compares numbers: expected a number or a property", op);
}

/* primary := ['+'|'-']* number | string | TRUE | FALSE | NULL | name
 *          | '(' or ')' */
static gt_err_t parse_primary(parser_t *p, uint32_t *out)
{
    size_t pos = p->tok.start;
    bool neg = false, sign = false;
    gt_err_t rc;

    while (p->tok.kind == TK_PLUS || p->tok.kind == TK_MINUS) {
        if (p->tok.kind == TK_MINUS)
            neg = !neg;
        sign = true;
        rc = lex_next(p);
        if (rc != GT_OK)
            return rc;
    }
    if (sign && p->tok.kind != TK_INT && p->tok.kind != TK_DBL)
        return fail_tok(p, "a number after the sign");

    switch (p->tok.kind) {
    case TK_INT:
        if (!neg && p->tok.u > (uint64_t)INT64_MAX)
            return fail(p, p->tok.start, "integer out of range");
        rc = node_new(p, GT_SQL_N_INT, pos, out);
        if (rc != GT_OK)
            return rc;
        if (!neg)
            p->f->nodes[*out].v.i = (int64_t)p->tok.u;
        else if (p->tok.u == INT_MAG_MAX)
            p->f->nodes[*out].v.i = INT64_MIN;
        else
            p->f->nodes[*out].v.i = -(int64_t)p->tok.u;
        break;
    case TK_DBL:
        rc = node_new(p, GT_SQL_N_DBL, pos, out);
        if (rc != GT_OK)
            return rc;
        p->f->nodes[*out].v.d = neg ? -p->tok.d : p->tok.d;
        break;
    case TK_STR:
    case TK_NAME:
        rc = node_new(p, p->tok.kind == TK_STR ? GT_SQL_N_STR : GT_SQL_N_PROP, pos, out);
        if (rc != GT_OK)
            return rc;
        rc = pool_take(p, *out);
        if (rc != GT_OK)
            return rc;
        break;
    case TK_TRUE:
    case TK_FALSE:
        rc = node_new(p, GT_SQL_N_BOOL, pos, out);
        if (rc != GT_OK)
            return rc;
        p->f->nodes[*out].v.b = p->tok.kind == TK_TRUE;
        break;
    case TK_NULL:
        rc = node_new(p, GT_SQL_N_NULL, pos, out);
        if (rc != GT_OK)
            return rc;
        break;
    case TK_LPAREN:
        if (p->depth >= GT_SQL_MAX_DEPTH)
            return fail(p, pos, "expression nested too deeply (more than %u parentheses)",
                        GT_SQL_MAX_DEPTH);
        p->depth++;
        rc = lex_next(p);
        if (rc != GT_OK)
            return rc;
        rc = parse_logic(p, 0, out);
        if (rc != GT_OK)
            return rc;
        if (p->tok.kind != TK_RPAREN)
            return fail_tok(p, "')'");
        p->depth--;
        break;
    default:
        return fail_tok(p, "a property, a literal or '('");
    }
    return lex_next(p);
}

/* '=' '<>' '!=' '<' '<=' '>' '>=' after the left operand `l`. */
static gt_err_t parse_compare(parser_t *p, uint32_t l, size_t pos, uint32_t *out)
{
    static const gt_sql_cmp_t ops[] = {
        [TK_EQ] = GT_SQL_EQ, [TK_NE] = GT_SQL_NE, [TK_LT] = GT_SQL_LT,
        [TK_LE] = GT_SQL_LE, [TK_GT] = GT_SQL_GT, [TK_GE] = GT_SQL_GE,
    };
    gt_sql_cmp_t op = ops[p->tok.kind];
    char optext[3] = {0};
    uint32_t r;
    gt_err_t rc;

    memcpy(optext, p->src + p->tok.start, p->tok.end - p->tok.start);
    rc = lex_next(p);
    if (rc == GT_OK)
        rc = parse_primary(p, &r);
    if (rc != GT_OK)
        return rc;
    if (op == GT_SQL_EQ || op == GT_SQL_NE) {
        uint32_t side[2] = {l, r};
        for (int k = 0; k < 2; k++) {
            rc = need_value(p, side[k]);
            if (rc != GT_OK)
                return rc;
            if (nd(p, side[k])->kind == GT_SQL_N_NULL)
                return fail(p, nd(p, side[k])->pos - 1u,
                            "NULL cannot be compared with '%s': use IS NULL or IS NOT NULL",
                            optext);
        }
        uint8_t lk = nd(p, l)->kind, rk = nd(p, r)->kind;
        if (lk != GT_SQL_N_PROP && rk != GT_SQL_N_PROP &&
            (lk == GT_SQL_N_BOOL) != (rk == GT_SQL_N_BOOL))
            return fail(p, pos, "a boolean literal cannot be compared with a non-boolean literal");
    } else {
        rc = need_numeric(p, l, optext);
        if (rc == GT_OK)
            rc = need_numeric(p, r, optext);
        if (rc != GT_OK)
            return rc;
    }
    rc = node_new(p, GT_SQL_N_CMP, pos, out);
    if (rc != GT_OK)
        return rc;
    p->f->nodes[*out].op = (uint8_t)op;
    p->f->nodes[*out].kid[0] = l;
    p->f->nodes[*out].kid[1] = r;
    return GT_OK;
}

static double num_of(const gt_sql_node_t *n)
{
    return n->kind == GT_SQL_N_INT ? (double)n->v.i : n->v.d;
}

/* [NOT] BETWEEN lo AND hi; the current token is BETWEEN. */
static gt_err_t parse_between(parser_t *p, uint32_t x, bool neg, size_t pos, uint32_t *out)
{
    uint32_t lo, hi;
    gt_err_t rc = need_numeric(p, x, "BETWEEN");

    if (rc == GT_OK)
        rc = lex_next(p);
    if (rc == GT_OK)
        rc = parse_primary(p, &lo);
    if (rc != GT_OK)
        return rc;
    if (p->tok.kind != TK_AND)
        return fail_tok(p, "AND");
    rc = lex_next(p);
    if (rc == GT_OK)
        rc = parse_primary(p, &hi);
    if (rc == GT_OK)
        rc = need_numeric(p, lo, "BETWEEN");
    if (rc == GT_OK)
        rc = need_numeric(p, hi, "BETWEEN");
    if (rc != GT_OK)
        return rc;
    /* Upstream refuses constant bounds in the wrong order (BETWEEN only). */
    const gt_sql_node_t *a = nd(p, lo), *b = nd(p, hi);
    if (!neg && a->kind != GT_SQL_N_PROP && b->kind != GT_SQL_N_PROP) {
        bool reversed = a->kind == GT_SQL_N_INT && b->kind == GT_SQL_N_INT
                            ? a->v.i > b->v.i
                            : num_of(a) > num_of(b);
        if (reversed)
            return fail(p, a->pos - 1u, "BETWEEN bounds are reversed (low > high)");
    }
    rc = node_new(p, GT_SQL_N_BETWEEN, pos, out);
    if (rc != GT_OK)
        return rc;
    gt_sql_node_t *n = &p->f->nodes[*out];
    n->neg = neg;
    n->kid[0] = x;
    n->kid[1] = lo;
    n->kid[2] = hi;
    return GT_OK;
}

/* [NOT] IN ('a', 'b', ...); the current token is IN. */
static gt_err_t parse_in(parser_t *p, uint32_t x, bool neg, size_t pos, uint32_t *out)
{
    uint32_t last = GT_SQL_NONE, item;
    gt_err_t rc;

    if (nd(p, x)->kind != GT_SQL_N_PROP)
        return fail(p, nd(p, x)->pos - 1u, "IN needs a property on its left");
    rc = node_new(p, GT_SQL_N_IN, pos, out);
    if (rc == GT_OK)
        rc = lex_next(p);
    if (rc != GT_OK)
        return rc;
    p->f->nodes[*out].neg = neg;
    p->f->nodes[*out].kid[0] = x;
    if (p->tok.kind != TK_LPAREN)
        return fail_tok(p, "'('");
    for (;;) {
        rc = lex_next(p);
        if (rc != GT_OK)
            return rc;
        if (p->tok.kind != TK_STR)
            return fail_tok(p, "a string literal");
        rc = node_new(p, GT_SQL_N_STR, p->tok.start, &item);
        if (rc == GT_OK)
            rc = pool_take(p, item);
        if (rc == GT_OK)
            rc = lex_next(p);
        if (rc != GT_OK)
            return rc;
        if (last == GT_SQL_NONE)
            p->f->nodes[*out].kid[1] = item;
        else
            p->f->nodes[last].next = item;
        last = item;
        if (p->tok.kind == TK_RPAREN)
            return lex_next(p);
        if (p->tok.kind != TK_COMMA)
            return fail_tok(p, "',' or ')'");
    }
}

/* [NOT] CONTAINS|STARTSWITH|ENDSWITH 'str'; the current token is the verb. */
static gt_err_t parse_match(parser_t *p, uint32_t x, bool neg, size_t pos, uint32_t *out)
{
    static const char *const names[] = {"CONTAINS", "STARTSWITH", "ENDSWITH"};
    gt_sql_strop_t op = p->tok.kind == TK_CONTAINS     ? GT_SQL_CONTAINS
                        : p->tok.kind == TK_STARTSWITH ? GT_SQL_STARTSWITH
                                                       : GT_SQL_ENDSWITH;
    uint32_t needle;
    gt_err_t rc;

    uint8_t k = nd(p, x)->kind;
    if (k != GT_SQL_N_PROP && k != GT_SQL_N_STR)
        return fail(p, nd(p, x)->pos - 1u, "%s needs a property or a string on its left",
                    names[op]);
    rc = lex_next(p);
    if (rc != GT_OK)
        return rc;
    if (p->tok.kind != TK_STR)
        return fail_tok(p, "a string literal");
    rc = node_new(p, GT_SQL_N_STR, p->tok.start, &needle);
    if (rc == GT_OK)
        rc = pool_take(p, needle);
    if (rc == GT_OK)
        rc = node_new(p, GT_SQL_N_MATCH, pos, out);
    if (rc != GT_OK)
        return rc;
    gt_sql_node_t *n = &p->f->nodes[*out];
    n->op = (uint8_t)op;
    n->neg = neg;
    n->kid[0] = x;
    n->kid[1] = needle;
    return lex_next(p);
}

/* IS [NOT] NULL; the current token is IS. */
static gt_err_t parse_is(parser_t *p, uint32_t x, size_t pos, uint32_t *out)
{
    bool neg = false;
    gt_err_t rc = need_value(p, x);

    if (rc == GT_OK)
        rc = lex_next(p);
    if (rc != GT_OK)
        return rc;
    if (p->tok.kind == TK_NOT) {
        neg = true;
        rc = lex_next(p);
        if (rc != GT_OK)
            return rc;
    }
    if (p->tok.kind != TK_NULL)
        return fail_tok(p, neg ? "NULL" : "NULL or NOT NULL");
    rc = node_new(p, GT_SQL_N_ISNULL, pos, out);
    if (rc != GT_OK)
        return rc;
    p->f->nodes[*out].neg = neg;
    p->f->nodes[*out].kid[0] = x;
    return lex_next(p);
}

/* pred := primary [comparison | [NOT] BETWEEN/IN/CONTAINS/... | IS [NOT] NULL] */
static gt_err_t parse_pred(parser_t *p, uint32_t *out)
{
    size_t pos = p->tok.start;
    uint32_t l;
    bool neg = false;
    gt_err_t rc = parse_primary(p, &l);

    if (rc != GT_OK)
        return rc;
    switch (p->tok.kind) {
    case TK_EQ:
    case TK_NE:
    case TK_LT:
    case TK_LE:
    case TK_GT:
    case TK_GE:
        return parse_compare(p, l, pos, out);
    case TK_IS:
        return parse_is(p, l, pos, out);
    case TK_NOT:
        neg = true;
        rc = lex_next(p);
        if (rc != GT_OK)
            return rc;
        break;
    case TK_BETWEEN:
    case TK_IN:
    case TK_CONTAINS:
    case TK_STARTSWITH:
    case TK_ENDSWITH:
        break;
    case TK_AND:
    case TK_OR:
    case TK_RPAREN:
    case TK_END:
        *out = l; /* a condition in parentheses, TRUE, or a value the caller rejects */
        return GT_OK;
    default:
        if (gt_sql_is_value(nd(p, l)->kind))
            return fail_tok(p, "an operator (=, <>, <, <=, >, >=, BETWEEN, IN, IS, ...)");
        *out = l; /* the caller names what it expected */
        return GT_OK;
    }
    switch (p->tok.kind) {
    case TK_BETWEEN:
        return parse_between(p, l, neg, pos, out);
    case TK_IN:
        return parse_in(p, l, neg, pos, out);
    case TK_CONTAINS:
    case TK_STARTSWITH:
    case TK_ENDSWITH:
        rc = need_value(p, l);
        if (rc != GT_OK)
            return rc;
        return parse_match(p, l, neg, pos, out);
    default:
        return fail_tok(p, "BETWEEN, IN, CONTAINS, STARTSWITH or ENDSWITH after NOT");
    }
}

/* not := NOT* pred.  A run of NOTs is folded (NOT NOT x is x in three-valued
 * logic too), so it costs no recursion. */
static gt_err_t parse_not(parser_t *p, uint32_t *out)
{
    size_t pos = p->tok.start;
    size_t nots = 0;
    uint32_t x = GT_SQL_NONE;
    gt_err_t rc;

    while (p->tok.kind == TK_NOT) {
        nots++;
        rc = lex_next(p);
        if (rc != GT_OK)
            return rc;
    }
    rc = parse_pred(p, &x);
    if (rc != GT_OK || nots == 0) {
        *out = x;
        return rc;
    }
    rc = need_cond(p, x);
    if (rc != GT_OK)
        return rc;
    if (nots % 2 == 0) {
        *out = x;
        return GT_OK;
    }
    rc = node_new(p, GT_SQL_N_NOT, pos, out);
    if (rc != GT_OK)
        return rc;
    p->f->nodes[*out].kid[0] = x;
    return GT_OK;
}

/* level 0: or := and (OR and)*;  level 1: and := not (AND not)*.
 * A chain becomes one node whose operands are linked through `next`. */
static gt_err_t parse_logic(parser_t *p, int level, uint32_t *out)
{
    tk_t sep = level == 0 ? TK_OR : TK_AND;
    size_t pos = p->tok.start;
    uint32_t first, last, x;
    gt_err_t rc = level == 0 ? parse_logic(p, 1, &first) : parse_not(p, &first);

    if (rc != GT_OK)
        return rc;
    if (p->tok.kind != sep) {
        *out = first;
        return GT_OK;
    }
    rc = need_cond(p, first);
    if (rc == GT_OK)
        rc = node_new(p, level == 0 ? GT_SQL_N_OR : GT_SQL_N_AND, pos, out);
    if (rc != GT_OK)
        return rc;
    p->f->nodes[*out].kid[0] = first;
    last = first;
    while (p->tok.kind == sep) {
        rc = lex_next(p);
        if (rc == GT_OK)
            rc = level == 0 ? parse_logic(p, 1, &x) : parse_not(p, &x);
        if (rc == GT_OK)
            rc = need_cond(p, x);
        if (rc != GT_OK)
            return rc;
        p->f->nodes[last].next = x;
        last = x;
    }
    return GT_OK;
}

gt_err_t gt_sql_compile(const char *expr, size_t len, gt_sql_t **out,
                        char *err, size_t errlen)
{
    parser_t p = {.src = expr, .len = len, .err = err, .errlen = errlen};
    uint32_t root = GT_SQL_NONE;
    gt_err_t rc;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (out == NULL)
        return GT_EINVAL;
    *out = NULL;
    if (expr == NULL && len > 0)
        return fail(&p, 0, "no expression");
    if (len > GT_SQL_MAX_LEN) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "expression too long (%zu bytes, limit %u)", len,
                     GT_SQL_MAX_LEN);
        return GT_EINVAL;
    }
    p.f = calloc(1, sizeof *p.f);
    if (p.f == NULL)
        return oom(&p);

    rc = lex_next(&p);
    if (rc != GT_OK)
        goto out;
    if (p.tok.kind == TK_END) {
        rc = fail(&p, p.tok.start, "empty expression");
        goto out;
    }
    rc = parse_logic(&p, 0, &root);
    if (rc != GT_OK)
        goto out;
    if (p.tok.kind != TK_END) {
        rc = fail_tok(&p, "AND, OR or end of input");
        goto out;
    }
    rc = need_cond(&p, root);
    if (rc != GT_OK)
        goto out;
    p.f->root = root;
    *out = p.f;
    p.f = NULL;
out:
    gt_sql_free(p.f);
    return rc;
}
