/* st_exec_open(): the relay (st_relay.c) scheduled on the front end's
 * executor, so store answers always reach the front end on its own
 * threads, as owned copies, whichever thread the wrapped store completed
 * on -- the one rule front ends write their continuations against. */
#include <stdio.h>
#include <stdlib.h>

#include "gt_log.h"
#include "st_relay.h"

typedef struct st_exec_ctx {
    st_exec_t ex;
} st_exec_ctx_t;

static void exec_run(void *arg)
{
    st_res_deliver(arg);
}

/* Answers held on this thread (st_sched_hold), in order, and the
 * executor they go to. */
static _Thread_local int held_depth;
static _Thread_local st_exec_ctx_t *held_x;
static _Thread_local st_res_t *held_head, **held_tail;

static void exec_run_list(void *arg)
{
    st_res_t *res = arg;

    while (res != NULL) {
        st_res_t *next = *st_res_next(res);
        st_res_deliver(res);
        res = next;
    }
}

/* Posts the held answers as one task. */
static void held_post(void)
{
    st_exec_ctx_t *x = held_x;
    st_res_t *list = held_head;

    held_head = NULL;
    held_tail = &held_head;
    held_x = NULL;
    if (list == NULL)
        return;
    if (x->ex.post(x->ex.ctx, exec_run_list, list) == GT_OK)
        return;
    GT_LOG(WARN, "store", "executor refused store answers; running them inline");
    exec_run_list(list);
}

void st_sched_hold(void)
{
    if (held_depth++ == 0) {
        held_head = NULL;
        held_tail = &held_head;
        held_x = NULL;
    }
}

void st_sched_release(void)
{
    if (held_depth > 0 && --held_depth == 0)
        held_post();
}

static void exec_sched(void *ctx, st_res_t *res)
{
    st_exec_ctx_t *x = ctx;

    if (held_depth > 0) {
        if (held_x != NULL && held_x != x)
            held_post();
        held_x = x;
        *st_res_next(res) = NULL;
        *held_tail = res;
        held_tail = st_res_next(res);
        return;
    }
    if (x->ex.post(x->ex.ctx, exec_run, res) == GT_OK)
        return;
    /* The executor refused (out of memory, or stopped too early): an
     * answer must not be lost, so it runs here. */
    GT_LOG(WARN, "store", "executor refused a store answer; running it inline");
    st_res_deliver(res);
}

static void exec_close(void *ctx)
{
    free(ctx);
}

gt_err_t st_exec_open(st_store_t *inner, const st_exec_t *ex, st_store_t **out)
{
    st_exec_ctx_t *x;
    st_relay_cfg_t cfg;
    char name[64];
    gt_err_t rc;

    if (inner == NULL || ex == NULL || ex->post == NULL)
        return GT_EINVAL;
    if ((x = calloc(1, sizeof(*x))) == NULL)
        return GT_ENOMEM;
    x->ex = *ex;
    snprintf(name, sizeof(name), "exec(%s)", inner->ops->name);
    cfg = (st_relay_cfg_t){name, exec_sched, x, exec_close};
    rc = st_relay_open(inner, &cfg, out);
    if (rc != GT_OK)
        free(x);
    return rc;
}
