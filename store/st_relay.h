/* The relay: a store decorator that forwards every operation to an inner
 * store and hands each answer, deep-copied, to a scheduler instead of
 * running the caller's callback on the inner store's thread.  st_exec.c
 * schedules on the front end's executor; st_late.c (tests) after a random
 * delay on its own thread.  Internal to the store's decorators. */
#ifndef ST_RELAY_H
#define ST_RELAY_H

#include "st.h"

/* One captured answer: the caller's callback and a private copy of what
 * the inner store passed.  Owned by the relay until st_res_deliver(). */
typedef struct st_res st_res_t;

/* Takes a captured answer and must eventually call st_res_deliver(res)
 * exactly once, on a thread of its choosing (never inline when it can
 * help it).  Runs on whatever thread the inner store answered, possibly
 * with its locks held: queue and return. */
typedef void (*st_relay_sched_fn)(void *ctx, st_res_t *res);

typedef struct st_relay_cfg {
    const char *name;             /* ops name, e.g. "exec(local)" */
    st_relay_sched_fn sched;
    void *ctx;
    /* Called by st_close() once every answer was delivered (the inner
     * store is closed by then): stop threads, free ctx.  May be NULL. */
    void (*ctx_close)(void *ctx);
} st_relay_cfg_t;

/* Wraps inner (takes ownership).  Borrows cfg (copied). */
gt_err_t st_relay_open(st_store_t *inner, const st_relay_cfg_t *cfg,
                       st_store_t **out);

/* Runs the caller's callback with the copied result, then frees res. */
void st_res_deliver(st_res_t *res);

/* The next link of a scheduler's own list (st_late.c), and the due time
 * it may keep with it. */
st_res_t **st_res_next(st_res_t *res);
int64_t *st_res_due(st_res_t *res);

/* Between st_sched_hold() and st_sched_release() (nested: the outermost
 * release counts), answers that the calling thread hands to an executor
 * (st_exec_open) are kept, in order, and posted as one task at the
 * release: a store thread that completes a group of appends (the syncer
 * after an fdatasync) wakes an executor thread once, instead of once per
 * answer -- each woken thread preempted the poster, ran one answer and
 * slept again.  Nothing in between may wait for a held answer to run. */
void st_sched_hold(void);
void st_sched_release(void);

#endif
