/* The stored message record and popped messages (see gw_rec.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_bridge.h"
#include "gw_broker_int.h"
#include "gw_rec.h"

bool gw_rec_decode(const uint8_t *p, size_t n, gw_rec_t *r)
{
    size_t at = 1;
    uint32_t pl;

    if (n < 7 || p[0] != GW_REC_MAGIC)
        return false;
    r->ex = (gw_str_t){(const char *)p + at + 1, p[at]};
    at += 1 + (size_t)p[at];
    if (at + 1 > n)
        return false;
    r->rk = (gw_str_t){(const char *)p + at + 1, p[at]};
    at += 1 + (size_t)p[at];
    if (at + 4 > n)
        return false;
    pl = (uint32_t)p[at] << 24 | (uint32_t)p[at + 1] << 16 | (uint32_t)p[at + 2] << 8 | p[at + 3];
    at += 4;
    if (pl > n - at)
        return false;
    r->props = (gw_bytes_t){p + at, pl};
    at += pl;
    r->body = p + at;
    r->body_len = n - at;
    return true;
}

void *gw_popped_take(void *op, size_t head, const st_popped_t *msgs, size_t n)
{
    uint8_t *big = realloc(op, head + n * sizeof(gw_popped_t));
    gw_popped_t *p;

    if (big == NULL)
        return NULL;
    p = (gw_popped_t *)(void *)(big + head);
    for (size_t i = 0; i < n; i++) {
        memset(&p[i], 0, sizeof(p[i]));
        snprintf(p[i].handle, sizeof(p[i].handle), "%s", msgs[i].handle);
        p[i].attempt = msgs[i].attempt;
        p[i].store_ts = msgs[i].msg.store_ts_ms;
        p[i].queue_offset = msgs[i].msg.queue_offset;
        snprintf(p[i].msg_id, sizeof(p[i].msg_id), "%s",
                 msgs[i].msg.msg_id != NULL ? msgs[i].msg.msg_id : "");
        if (!gw_bridge_copy_body(&msgs[i].msg, &p[i].body, &p[i].len)) {
            p[i].body = NULL;
            p[i].len = 0;
            p[i].attempt = 0;
        }
    }
    return big;
}
