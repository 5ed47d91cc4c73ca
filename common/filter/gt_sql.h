/* SQL92 property filters (RocketMQ `FilterType.SQL`).
 *
 * A consumer's filter expression travels to the store as text (st_pop_req_t:
 * kind ST_FILTER_SQL92) and is compiled there once per pop into an
 * immutable tree, then evaluated per message (store/st_filter.c); front
 * ends compile it too, only to answer a malformed one in-band.  Evaluation sees the message's user
 * properties plus the pseudo-property `TAGS` (the message tag) through a
 * lookup callback, so this module knows nothing about sockets, the store or
 * the wire: it is a pure codec-like pair (compile / evaluate) that the unit
 * tests and the fuzzer drive directly.
 *
 * Grammar (RocketMQ's selector grammar; keywords are case-insensitive,
 * property names are case-sensitive):
 *
 *   cond   := cond OR cond | cond AND cond | NOT cond | '(' cond ')'
 *           | TRUE | FALSE | pred
 *   pred   := value ('=' | '<>' | '!=' | '<' | '<=' | '>' | '>=') value
 *           | value [NOT] BETWEEN value AND value
 *           | name [NOT] IN '(' string (',' string)* ')'
 *           | value [NOT] (CONTAINS | STARTSWITH | ENDSWITH) string
 *           | value IS [NOT] NULL
 *   value  := name | string | number | TRUE | FALSE | NULL | '(' value ')'
 *   name   := [A-Za-z_$][A-Za-z0-9_$.]*      (not a keyword)
 *   string := '...' with '' for a quote
 *   number := ['+'|'-']* (integer ['L'] | decimal [exponent])
 *
 * Precedence: comparisons, then NOT, then AND, then OR.  `--` line and
 * C-style block comments are skipped.
 *
 * Semantics (three-valued, as upstream): a missing property is NULL and
 * makes every comparison on it UNKNOWN, which no NOT turns into TRUE; only
 * IS [NOT] NULL looks at NULL directly.  A message matches only when the
 * whole expression is TRUE.  Property values are strings: compared with a
 * number they are read as numbers (a value that is not a number makes the
 * comparison UNKNOWN); compared with a string, byte-for-byte; compared with
 * TRUE/FALSE, "true" in any case is TRUE and anything else FALSE.  Ordering
 * comparisons and BETWEEN take only numbers and properties. */
#ifndef GT_SQL_H
#define GT_SQL_H

#include <stdbool.h>
#include <stddef.h>

#include "gt_err.h"

#define GT_SQL_MAX_LEN   65536u /* longest accepted expression, bytes */
#define GT_SQL_MAX_DEPTH 64u    /* deepest parenthesis nesting */

/* A compiled filter.  Immutable after gt_sql_compile(), so any number of
 * threads may evaluate it at once; freed by its owner with gt_sql_free(). */
typedef struct gt_sql gt_sql_t;

/* Returns the value of property `name` (`len` bytes, also NUL-terminated)
 * as a NUL-terminated string borrowed until the evaluation returns, or
 * NULL when the message has no such property.  Must be thread-safe if the
 * caller evaluates from several threads. */
typedef const char *(*gt_sql_lookup_fn)(void *ctx, const char *name, size_t len);

/* Compiles `len` bytes of `expr` (borrowed; need not be NUL-terminated).
 * On GT_OK stores a filter in *out, returned owned (free with gt_sql_free).
 * On a malformed expression returns GT_EINVAL, sets *out to NULL and writes
 * a message naming the 1-based byte position into `err` (always
 * NUL-terminated when errlen > 0), e.g. "position 12: expected ')' but found
 * end of input".  GT_ENOMEM when memory runs out. */
gt_err_t gt_sql_compile(const char *expr, size_t len, gt_sql_t **out,
                        char *err, size_t errlen);

/* True when the expression is TRUE for the properties `lookup` returns
 * (borrows everything; `lookup` NULL means "no properties").  False for a
 * NULL filter. */
bool gt_sql_eval(const gt_sql_t *f, gt_sql_lookup_fn lookup, void *ctx);

/* Frees a filter; NULL is a no-op. */
void gt_sql_free(gt_sql_t *f);

#endif
