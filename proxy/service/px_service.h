/* px_service: apache.rocketmq.v2.MessagingService and Admin on px_rpc.
 *
 * Registers every RPC of the RocketMQ v2 protocol in a method table and
 * implements them on the store interface (st.h).  Errors travel in-band in
 * each response's Status with RocketMQ's Code values.  RPCs that are not
 * implemented yet answer at once, in-band, with NOT_IMPLEMENTED (streams:
 * one response carrying it); none of them ever leaves a call hanging. */
#ifndef PX_SERVICE_H
#define PX_SERVICE_H

#include <stdio.h>

#include "cfg.h"
#include "gt_err.h"
#include "px_exec.h"
#include "px_rpc.h"
#include "st.h"

typedef struct px_svc px_svc_t;

/* Creates the service context.  Borrows `store` and `cfg`, which must
 * outlive it.  Pass the result as px_rpc_options_t.app.  Returns NULL on
 * allocation failure. */
px_svc_t *px_svc_new(st_store_t *store, const cfg_t *cfg);
/* Starts the service's background work (auto-renewal of push consumers'
 * deliveries) and its copy of the store's topics and groups: waits for the
 * store's metadata snapshot (start-up), which needs the store opened
 * through st_exec_open().  Call before serving. */
gt_err_t px_svc_start(px_svc_t *svc);
/* The message trace (px_trace.h) once started; NULL when nothing is
 * traced. */
struct px_trace *px_svc_trace(px_svc_t *svc);
/* The server is about to stop: from now on, streams that end are not
 * clients going away (their messages are not given back). */
void px_svc_drain(px_svc_t *svc);
/* Stops the background work and drops stream references; call after
 * px_rpc_server_shutdown() and before the store closes. */
void px_svc_stop(px_svc_t *svc);
/* Frees the context (after the server stopped).  NULL-safe. */
void px_svc_free(px_svc_t *svc);

/* A hook for SendMessage's appends (the AMQP gateway's topic bridges,
 * docs/amqp.md): called with st_append()'s arguments for every append of
 * a SendMessage; true when it took the append (cb then runs exactly once,
 * never inside the call), false to let the service append as usual.  It
 * must not block.  fn NULL removes it; the call returns once no append
 * is inside the old hook. */
typedef bool (*px_append_hook_fn)(void *arg, const char *topic, const st_message_t *msgs,
                                  size_t n, st_append_cb cb, void *cb_arg);
void px_svc_set_append_hook(px_svc_t *svc, px_append_hook_fn fn, void *arg);
/* st_append() through the hook, if any (px_send.c). */
void px_svc_append(px_svc_t *svc, const char *topic, const st_message_t *msgs, size_t n,
                   st_append_cb cb, void *cb_arg);

/* Metrics (proxy/http/px_metrics.h): the service counts messages in and
 * out and transactions there.  Set before serving; `m` is borrowed and
 * must outlive the service's calls; NULL: none. */
typedef struct px_metrics px_metrics_t;
void px_svc_set_metrics(px_svc_t *svc, px_metrics_t *m);
/* Remote store: rocketmq_storage_size comes from fn (it may wait; GT_OK
 * and the node's bytes) instead of measuring store.data_dir.  Set before
 * serving. */
typedef gt_err_t (*px_storage_bytes_fn)(void *arg, uint64_t *bytes);
void px_svc_set_storage_bytes(px_svc_t *svc, px_storage_bytes_fn fn, void *arg);
/* Replaces the users and ACLs that gRPC calls are checked against (the
 * admin API changed them; auth borrowed for the call).  Nothing when
 * auth.enabled is off.  The replaced set is freed with svc.  One caller at
 * a time.  GT_OK, or an error with a message (the old set stays). */
gt_err_t px_svc_set_auth(px_svc_t *svc, const cfg_auth_t *auth, char *err, size_t errlen);
/* /metrics lines of the service (HTTP thread): connected clients and the
 * store gauges (px_metrics_write_store). */
void px_svc_write_metrics(px_svc_t *svc, FILE *out);

/* Adds the MessagingService and Admin methods to `t`.  The entries are
 * static; the table borrows them. */
gt_err_t px_service_register(px_method_table_t *t);

/* Number of MessagingService RPCs registered (for tests and logs). */
size_t px_service_messaging_count(void);

#endif
