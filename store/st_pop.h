/* Internals of the pop path shared by st_consume.c (pop itself),
 * st_park.c (parked pops) and st_filter.c (filters).  Store only. */
#ifndef ST_POP_H
#define ST_POP_H

#include "gt_sql.h"
#include "st_int.h"

/* A pop's filter compiled from its (kind, expression): a tag expression
 * (SQL92 filters match every tag) and, for SQL92, the compiled tree.
 * `text` keeps the expression: two pops whose kind and text are equal
 * select the same messages. */
typedef struct st_filter {
    st_filter_kind_t kind;
    st_tagexpr_t tx;
    gt_sql_t *sql;
    char *text;   /* owned; "" when none */
} st_filter_t;

/* Compiles expr (borrowed; NULL = everything) into *f, owned until
 * st_filter_free().  GT_EINVAL: unknown kind or an expression that does
 * not compile; GT_ENOMEM. */
gt_err_t st_filter_compile(st_filter_kind_t kind, const char *expr,
                           st_filter_t *f);
void st_filter_free(st_filter_t *f);
/* Cheap pre-check on the consume queue entry's tag hash. */
bool st_filter_match_hash(const st_filter_t *f, uint32_t tag_hash);
/* The full check on a decoded message. */
bool st_filter_match(const st_filter_t *f, const st_message_t *m);
/* True when a and b select the same messages. */
bool st_filter_same(const st_filter_t *a, const st_filter_t *b);

/* For tests: how many pops and pulls are parked. */
size_t st_local_parked(st_store_t *s);

#endif
