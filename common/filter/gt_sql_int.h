/* Internal representation of a compiled SQL92 filter, shared by the parser
 * (gt_sql_parse.c) and the evaluator (gt_sql_eval.c).  Only common/filter
 * includes it.
 *
 * A filter is a flat array of nodes referring to each other by index, plus
 * one pool holding every string literal and property name (each followed by
 * a NUL).  Lists (the operands of AND / OR, the strings of IN) are chained
 * through `next`, so building a tree never needs a per-node allocation and
 * freeing it never recurses.  The parser only ever appends, so the sizes of
 * both arrays are bounded by the length of the expression. */
#ifndef GT_SQL_INT_H
#define GT_SQL_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gt_sql.h"

#define GT_SQL_NONE UINT32_MAX /* "no node" in kid[] and next */

typedef enum gt_sql_kind {
    /* values */
    GT_SQL_N_NULL = 0,
    GT_SQL_N_BOOL,   /* v.b; also a condition */
    GT_SQL_N_INT,    /* v.i */
    GT_SQL_N_DBL,    /* v.d */
    GT_SQL_N_STR,    /* v.s: literal in the pool */
    GT_SQL_N_PROP,   /* v.s: property name in the pool */
    /* conditions */
    GT_SQL_N_AND,    /* kid[0]: first operand, chained by next */
    GT_SQL_N_OR,     /* kid[0]: first operand, chained by next */
    GT_SQL_N_NOT,    /* kid[0] */
    GT_SQL_N_CMP,    /* op: gt_sql_cmp_t; kid[0] op kid[1] */
    GT_SQL_N_BETWEEN,/* kid[0] [NOT] BETWEEN kid[1] AND kid[2] */
    GT_SQL_N_IN,     /* kid[0] (a PROP) [NOT] IN list at kid[1] (STRs) */
    GT_SQL_N_MATCH,  /* op: gt_sql_strop_t; kid[0] [NOT] op kid[1] (STR) */
    GT_SQL_N_ISNULL, /* kid[0] IS [NOT] NULL */
} gt_sql_kind_t;

typedef enum gt_sql_cmp {
    GT_SQL_EQ = 0,
    GT_SQL_NE,
    GT_SQL_LT,
    GT_SQL_LE,
    GT_SQL_GT,
    GT_SQL_GE,
} gt_sql_cmp_t;

typedef enum gt_sql_strop {
    GT_SQL_CONTAINS = 0,
    GT_SQL_STARTSWITH,
    GT_SQL_ENDSWITH,
} gt_sql_strop_t;

typedef struct gt_sql_node {
    uint8_t kind;     /* gt_sql_kind_t */
    uint8_t op;       /* gt_sql_cmp_t or gt_sql_strop_t */
    uint8_t neg;      /* NOT BETWEEN / NOT IN / NOT CONTAINS / IS NOT NULL */
    uint32_t pos;     /* 1-based byte position of the node's first token */
    uint32_t kid[3];  /* operands, GT_SQL_NONE when unused */
    uint32_t next;    /* next operand of the parent list, or GT_SQL_NONE */
    union {
        bool b;
        int64_t i;
        double d;
        struct {
            uint32_t off; /* into pool */
            uint32_t len; /* bytes, without the NUL */
        } s;
    } v;
} gt_sql_node_t;

/* Immutable once compiled; owned by whoever called gt_sql_compile(). */
struct gt_sql {
    gt_sql_node_t *nodes;
    uint32_t nnodes;
    uint32_t root;    /* a condition node */
    char *pool;
    size_t pool_len;
};

static inline bool gt_sql_is_value(uint8_t kind)
{
    return kind <= GT_SQL_N_PROP;
}

static inline bool gt_sql_is_cond(uint8_t kind)
{
    return kind == GT_SQL_N_BOOL || kind >= GT_SQL_N_AND;
}

/* Reads `n` bytes at `s` (and s[n] must be NUL) as a number:
 * [+-](digits[.[digits]]|.digits)[(e|E)[+-]digits].  Integers that fit in
 * int64 set *is_int and *i; any other valid number sets *d (which may be
 * infinite when the exponent is huge).  Returns false when `s` is not a
 * number.  Shared by the evaluator (property values) and the parser
 * (decimal literals). */
bool gt_sql_parse_number(const char *s, size_t n, bool *is_int, int64_t *i,
                         double *d);

#endif
