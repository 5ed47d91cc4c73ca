/* Acks to the store, batched.  gw_msg_ack() (gw_broker_int.h) notes the
 * handle under its queue; once the loop round's callbacks have run (a
 * connection's read with a basic.ack multiple=true, a burst of acks, the
 * store answers of a round), each queue's acks go to the store as one
 * st_ack_batch on its (group, topic), ST_ACK_MAX at most per batch.  Each
 * handle keeps its own result (a stale handle fails alone); a batch the
 * store refuses as a whole (out of memory...) is acked one by one.  An ack
 * not sent (no memory) acts as a lost ack: the message comes back when its
 * invisibility ends. */
#ifndef GW_ACKS_H
#define GW_ACKS_H

#include <stdbool.h>

#include "gw_broker_int.h"

bool gw_acks_new(gw_broker_t *b);
/* Sends what is pending now (the loop does it after each round; the
 * broker's drain at free after each batch of answers). */
void gw_acks_flush(gw_broker_t *b);
void gw_acks_free(gw_broker_t *b);
/* One ack of store topic and group id, at once, its result ignored (the
 * message comes back when it failed). */
void gw_store_ack(gw_broker_t *b, const char *id, const char *handle);

#endif
