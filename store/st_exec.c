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

static void exec_sched(void *ctx, st_res_t *res)
{
    st_exec_ctx_t *x = ctx;

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
