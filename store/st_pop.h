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

/* st_fifo.c, lock held: the FIFO index of one window (see there). */
typedef struct st_fifo st_fifo_t;
void st_fifo_free(st_fifo_t *f);
/* The window's index, built or rebuilt when it is missing or behind. */
gt_err_t st_fifo_sync(st_topic_rt_t *t, uint32_t q, st_cs_t *cs,
                      st_fifo_t **out);
/* Records the window as in step with the index (after a pop). */
void st_fifo_seen(st_cs_t *cs);
/* True when the window has an index that follows it. */
bool st_fifo_in_step(const st_cs_t *cs);
/* True when message group gh has an unacked entry. */
bool st_fifo_busy(st_fifo_t *f, uint32_t gh);
/* A new window entry off of group gh (0: none), in its state already. */
gt_err_t st_fifo_add(st_fifo_t *f, st_cs_t *cs, uint32_t gh, uint64_t off);
/* The state or deadline of entry off changed (a head, or one in flight
 * behind its head: its group is looked at again at its deadline). */
void st_fifo_moved(st_cs_t *cs, uint64_t off);
/* Off's message group is to be looked at again at `at` (it is blocked
 * until then by an entry in flight). */
void st_fifo_recheck(st_cs_t *cs, uint64_t off, int64_t at);
/* Takes the next head to hand out: timed: one whose deadline passed
 * (expired in flight, or delayed until now), earliest first; else a held
 * one, lowest offset first.  false: none.  The head's group may still be
 * busy (an entry behind it in flight): the caller checks its members. */
bool st_fifo_next(st_fifo_t *f, st_topic_rt_t *t, uint32_t q, st_cs_t *cs,
                  int64_t now, bool timed, uint64_t *off);
/* The unacked entries of head's message group from head on, oldest first:
 * up to max of them into out; *more when the group has further ones.  0
 * when head is not its group's head.  A message without a group is alone. */
size_t st_fifo_members(st_fifo_t *f, st_topic_rt_t *t, uint32_t q,
                       st_cs_t *cs, uint64_t head, uint64_t *out, size_t max,
                       bool *more);
/* Earliest time a head is due: an in-flight or delayed head's deadline, or
 * a blocked group's next look (INT64_MAX: none). */
int64_t st_fifo_min_deadline(st_fifo_t *f, st_topic_rt_t *t, uint32_t q,
                             st_cs_t *cs);
/* Entry off was acked: the next of its group becomes head; advances the
 * committed offset (st_cs_advance).  Safe without an index. */
void st_fifo_acked(st_topic_rt_t *t, uint32_t q, st_cs_t *cs, uint64_t off);

/* For tests: how many pops and pulls are parked. */
size_t st_local_parked(st_store_t *s);

#endif
