/* The AMQP broker's vhosts: each one a namespace of its own, as in
 * RabbitMQ (its exchanges, its default and amq.* exchanges, bindings,
 * queues and so exclusive owners and consumers).  A connection finds its
 * vhost once, at connection.open (gw_broker_conn_open); the durable
 * metadata brings back each record into the vhost its key names. */
#include <stdlib.h>
#include <string.h>

#include "gt_log.h"
#include "gw_broker_int.h"

gw_vhost_t *gw_vhost_get(gw_broker_t *b, gw_str_t name, bool create)
{
    /* RabbitMQ's predeclared exchanges (durable). */
    static const struct {
        const char *name;
        gw_xtype_t type;
        uint32_t flags;
    } pre[] = {
        {"amq.direct", GW_XTYPE_DIRECT, GW_XF_DURABLE},
        {"amq.fanout", GW_XTYPE_FANOUT, GW_XF_DURABLE},
        {"amq.topic", GW_XTYPE_TOPIC, GW_XF_DURABLE},
        {"amq.headers", GW_XTYPE_HEADERS, GW_XF_DURABLE},
        {"amq.match", GW_XTYPE_HEADERS, GW_XF_DURABLE},
        {"amq.rabbitmq.trace", GW_XTYPE_TOPIC, GW_XF_DURABLE | GW_XF_INTERNAL},
    };
    gw_vhost_t *vh;

    for (vh = b->vhosts; vh != NULL; vh = vh->next)
        if (vh->nlen == name.len && memcmp(vh->name, name.ptr, name.len) == 0)
            return vh;
    if (!create || name.len > 255 || (vh = calloc(1, sizeof(*vh))) == NULL)
        return NULL;
    if ((vh->router = gw_router_new()) == NULL) {
        free(vh);
        return NULL;
    }
    vh->b = b;
    vh->nlen = (uint8_t)name.len;
    memcpy(vh->name, name.ptr, name.len);
    for (size_t i = 0; i < sizeof(pre) / sizeof(pre[0]); i++)
        gw_route_exchange_add(vh->router, gw_str(pre[i].name), pre[i].type, pre[i].flags);
    vh->next = b->vhosts;
    b->vhosts = vh;
    GT_LOG(DEBUG, "amqp", "vhost '%s' created", vh->name);
    return vh;
}

void gw_vhosts_free(gw_broker_t *b)
{
    while (b->vhosts != NULL) {
        gw_vhost_t *vh = b->vhosts;
        b->vhosts = vh->next;
        for (uint32_t h = 0; h < GW_QMAP; h++) {
            while (vh->qmap[h] != NULL) {
                gw_queue_t *q = vh->qmap[h];
                vh->qmap[h] = q->hnext;
                q->gone = true;
                gw_queue_unref(q);
            }
        }
        gw_router_free(vh->router);
        free(vh);
    }
}
