/* px_service: apache.rocketmq.v2.MessagingService and Admin on px_rpc.
 *
 * Registers every RPC of the RocketMQ v2 protocol in a method table.  RPCs
 * that are not implemented yet answer at once, in-band, with
 * Status.code = NOT_IMPLEMENTED (streams: one response carrying it); none
 * of them ever leaves a call hanging. */
#ifndef PX_SERVICE_H
#define PX_SERVICE_H

#include "gt_err.h"
#include "px_rpc.h"

/* Adds the MessagingService and Admin methods to `t`.  The entries are
 * static; the table borrows them. */
gt_err_t px_service_register(px_method_table_t *t);

/* Number of MessagingService RPCs registered (for tests and logs). */
size_t px_service_messaging_count(void);

#endif
