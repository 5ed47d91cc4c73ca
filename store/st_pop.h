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
    gt_tagexpr_t tx;
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

/* Messages collected by one pop (buffers owned). */
typedef struct st_pop_out {
    st_popped_t msgs[ST_POP_MAX];
    uint8_t *bufs[ST_POP_MAX];
    size_t n;
} st_pop_out_t;
void st_pop_out_free(st_pop_out_t *o);

/* st_consume.c, lock held: one pop attempt for req (its group is created
 * on first use); fills out.  Recomputes st->next_expiry over queues whose
 * lower bound has passed. */
gt_err_t st_pop_attempt(st_local_t *st, st_topic_rt_t *t,
                        const st_pop_req_t *req, const st_filter_t *f,
                        int64_t now, st_pop_out_t *out);
void st_expiry_recompute(st_local_t *st, int64_t now);

/* st_park.c, lock held.  Parks a pop that found nothing; on GT_OK takes
 * *f unless *cancelled (its cancel came first: nothing parked). */
gt_err_t st_park_pop(st_local_t *st, const st_pop_req_t *req,
                     st_topic_rt_t *t, st_filter_t *f, int64_t now,
                     st_pop_cb cb, void *arg, bool *cancelled);
/* True when anything is parked. */
bool st_parks_any(const st_local_t *st);
/* t got messages (or a FIFO group unblocked): marks its waiters for the
 * service thread; true when it has any. */
bool st_parks_wake(st_local_t *st, st_topic_rt_t *t);
void st_pull_local(st_store_t *s, const st_pull_req_t *req, st_msgs_cb cb,
                   void *arg);

/* For tests: how many pops and pulls are parked. */
size_t st_local_parked(st_store_t *s);

#endif
