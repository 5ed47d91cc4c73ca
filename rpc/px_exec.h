/* px_exec: the executor store answers run on, shared by gantry and
 * gantry-store (rpc/px_exec.c).  It speaks the store interface's executor
 * type (st_exec_t, store/st.h) and nothing else of the store. */
#ifndef PX_EXEC_H
#define PX_EXEC_H

#include "st.h"

/* The executor store answers run on (px_exec.c): `threads` threads (<= 0:
 * one per core) running posted tasks.  Returns NULL when out of memory. */
typedef struct px_exec px_exec_t;
px_exec_t *px_exec_new(int threads);
/* The executor as the store wants it (st_exec_open()); borrowed, valid
 * until px_exec_free(). */
const st_exec_t *px_exec_store(px_exec_t *x);
/* For px_rpc_options_t.after_event and gw_server_opts_t.after_event (ctx:
 * the executor): from then on, answers posted on the calling thread (a
 * gRPC worker, the AMQP loop) run on it, after the event that posted them
 * (here), instead of waking an executor thread. */
void px_exec_after_event(void *ctx);
/* Runs what is still queued, stops the threads and frees.  Call after the
 * store that posts to it was closed.  NULL-safe. */
void px_exec_free(px_exec_t *x);

#endif
