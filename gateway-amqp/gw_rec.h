/* The stored message record: what the gateway keeps as a message's store
 * body (written by gw_publish.c, rewritten by gw_dlx.c and gw_delay.c):
 * GW_REC_MAGIC (0xA1), the exchange (u8 length + bytes), the routing key
 * (u8 + bytes), the content header's property list as received (u32
 * big-endian length + bytes), then the body.  A bridged RocketMQ message
 * carries the same record, split (gw_bridge.h). */
#ifndef GW_REC_H
#define GW_REC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gw_codec.h"
#include "st.h"

typedef struct gw_rec {
    gw_str_t ex, rk;
    gw_bytes_t props; /* the property list (no content header around it) */
    const uint8_t *body;
    size_t body_len;
} gw_rec_t;

/* Views p[0..n) as a record (pointers into p); false when it is not one
 * (a foreign message, a cut record). */
bool gw_rec_decode(const uint8_t *p, size_t n, gw_rec_t *r);

/* A popped message as the pops of the gateway keep it (consumers and
 * basic.get, TTL sweeps, drop-head). */
typedef struct gw_popped {
    char handle[ST_HANDLE_MAX];
    uint32_t attempt; /* 0: the copy failed (no memory), body is NULL */
    int64_t store_ts; /* wall ms: its TTL counts from here */
    uint8_t *body;    /* its record (malloc'd): a bridged message's rebuilt
                         from its envelope (gw_bridge.h) */
    size_t len;
    uint64_t queue_offset;
    char msg_id[ST_MSG_ID_MAX]; /* the store's (message trace) */
} gw_popped_t;

/* st_pop's answer into an op: grows op (malloc'd, its gw_popped_t array
 * last, at offset head) to hold msgs[0..n) and copies them.  Returns the
 * grown op, or NULL when out of memory (op unchanged, nothing copied; the
 * messages come back when their invisibility ends). */
void *gw_popped_take(void *op, size_t head, const st_popped_t *msgs, size_t n);

#endif
