/* Internal representation of a compiled SQL92 filter, shared by the parser
 * (px_sql_parse.c) and the evaluator (px_sql_eval.c).  Only proxy/filter
 * includes it.
 *
 * A filter is a flat array of nodes referring to each other by index, plus
 * one pool holding every string literal and property name (each followed by
 * a NUL).  Lists (the operands of AND / OR, the strings of IN) are chained
 * through `next`, so building a tree never needs a per-node allocation and
 * freeing it never recurses.  The parser only ever appends, so the sizes of
 * both arrays are bounded by the length of the expression. */
#ifndef PX_SQL_INT_H
#define PX_SQL_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "px_sql.h"

#define PX_SQL_NONE UINT32_MAX /* "no node" in kid[] and next */

typedef enum px_sql_kind {
    /* values */
    PX_SQL_N_NULL = 0,
    PX_SQL_N_BOOL,   /* v.b; also a condition */
    PX_SQL_N_INT,    /* v.i */
    PX_SQL_N_DBL,    /* v.d */
    PX_SQL_N_STR,    /* v.s: literal in the pool */
    PX_SQL_N_PROP,   /* v.s: property name in the pool */
    /* conditions */
    PX_SQL_N_AND,    /* kid[0]: first operand, chained by next */
    PX_SQL_N_OR,     /* kid[0]: first operand, chained by next */
    PX_SQL_N_NOT,    /* kid[0] */
    PX_SQL_N_CMP,    /* op: px_sql_cmp_t; kid[0] op kid[1] */
    PX_SQL_N_BETWEEN,/* kid[0] [NOT] BETWEEN kid[1] AND kid[2] */
    PX_SQL_N_IN,     /* kid[0] (a PROP) [NOT] IN list at kid[1] (STRs) */
    PX_SQL_N_MATCH,  /* op: px_sql_strop_t; kid[0] [NOT] op kid[1] (STR) */
    PX_SQL_N_ISNULL, /* kid[0] IS [NOT] NULL */
} px_sql_kind_t;

typedef enum px_sql_cmp {
    PX_SQL_EQ = 0,
    PX_SQL_NE,
    PX_SQL_LT,
    PX_SQL_LE,
    PX_SQL_GT,
    PX_SQL_GE,
} px_sql_cmp_t;

typedef enum px_sql_strop {
    PX_SQL_CONTAINS = 0,
    PX_SQL_STARTSWITH,
    PX_SQL_ENDSWITH,
} px_sql_strop_t;

typedef struct px_sql_node {
    uint8_t kind;     /* px_sql_kind_t */
    uint8_t op;       /* px_sql_cmp_t or px_sql_strop_t */
    uint8_t neg;      /* NOT BETWEEN / NOT IN / NOT CONTAINS / IS NOT NULL */
    uint32_t pos;     /* 1-based byte position of the node's first token */
    uint32_t kid[3];  /* operands, PX_SQL_NONE when unused */
    uint32_t next;    /* next operand of the parent list, or PX_SQL_NONE */
    union {
        bool b;
        int64_t i;
        double d;
        struct {
            uint32_t off; /* into pool */
            uint32_t len; /* bytes, without the NUL */
        } s;
    } v;
} px_sql_node_t;

/* Immutable once compiled; owned by whoever called px_sql_compile(). */
struct px_sql {
    px_sql_node_t *nodes;
    uint32_t nnodes;
    uint32_t root;    /* a condition node */
    char *pool;
    size_t pool_len;
};

static inline bool px_sql_is_value(uint8_t kind)
{
    return kind <= PX_SQL_N_PROP;
}

static inline bool px_sql_is_cond(uint8_t kind)
{
    return kind == PX_SQL_N_BOOL || kind >= PX_SQL_N_AND;
}

/* Reads `n` bytes at `s` (and s[n] must be NUL) as a number:
 * [+-](digits[.[digits]]|.digits)[(e|E)[+-]digits].  Integers that fit in
 * int64 set *is_int and *i; any other valid number sets *d (which may be
 * infinite when the exponent is huge).  Returns false when `s` is not a
 * number.  Shared by the evaluator (property values) and the parser
 * (decimal literals). */
bool px_sql_parse_number(const char *s, size_t n, bool *is_int, int64_t *i,
                         double *d);

#endif
