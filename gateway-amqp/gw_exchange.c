/* The AMQP broker's exchanges and bindings on the router (gw_route.h):
 * exchange.declare / delete / bind / unbind, queue.bind / unbind. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gt_log.h"
#include "gw_broker_int.h"
#include "gw_delay.h"

/* ---- exchanges and bindings (the router, gw_route.h) -------------------- */

static bool is_amq(gw_str_t n)
{
    return n.len >= 4 && memcmp(n.ptr, "amq.", 4) == 0;
}

static void default_refused(gw_chan_t *ch, uint32_t mid)
{
    CH_ERR(ch, GW_ACCESS_REFUSED, mid, "operation not permitted on the default exchange");
}

static bool exchange_known(gw_chan_t *ch, uint32_t mid, gw_str_t name)
{
    if (gw_route_exchange_get(ch->bc->vh->router, name, NULL, NULL))
        return true;
    CH_ERR(ch, GW_NOT_FOUND, mid, "no exchange '%.*s' in vhost '%s'", (int)name.len, name.ptr,
           GW_VHOST(ch));
    return false;
}

void gw_on_exchange_declare(gw_chan_t *ch, const gw_method_t *m)
{
    const gw_exchange_declare_t *d = &m->u.exchange_declare;
    gw_router_t *r = ch->bc->vh->router;
    gw_method_t ok = {.id = GW_EXCHANGE_DECLARE_OK};
    gw_xtype_t type, cur;
    uint32_t flags = (d->durable ? GW_XF_DURABLE : 0) | (d->auto_delete ? GW_XF_AUTO_DELETE : 0) |
                     (d->internal ? GW_XF_INTERNAL : 0),
             curf;

    if (d->passive) {
        if (d->exchange.len == 0) {
            default_refused(ch, m->id);
            return;
        }
        if (!exchange_known(ch, m->id, d->exchange))
            return;
        if (!d->nowait)
            gw_chan_reply(ch, &ok);
        return;
    }
    if (d->exchange.len > 0 &&
        !gw_chan_allowed(ch, m->id, GW_PERM_CONFIGURE, GW_RES_EXCHANGE, d->exchange))
        return;
    if (gw_str_eq(d->type, "x-delayed-message")) {
        type = GW_XTYPE_DIRECT; /* x-delayed-type, checked on creation */
        flags |= GW_XF_DELAYED;
    } else if (gw_xtype_parse(d->type, &type) != GT_OK) {
        gw_conn_error(ch->bc->c, GW_COMMAND_INVALID, m->id, "unknown exchange type '%.*s'",
                      (int)d->type.len, d->type.ptr);
        return;
    }
    if (d->exchange.len == 0) {
        default_refused(ch, m->id);
        return;
    }
    if (gw_route_exchange_get(r, d->exchange, &cur, &curf)) {
        static const struct {
            uint32_t bit;
            const char *name;
        } fl[] = {{GW_XF_DURABLE, "durable"},
                  {GW_XF_AUTO_DELETE, "auto_delete"},
                  {GW_XF_INTERNAL, "internal"}};
        /* A delayed exchange's type is x-delayed-message whatever its
         * x-delayed-type (which a redeclare does not compare, as RabbitMQ). */
        const char *tn = (flags & GW_XF_DELAYED) ? "x-delayed-message" : gw_xtype_name(type),
                   *cn = (curf & GW_XF_DELAYED) ? "x-delayed-message" : gw_xtype_name(cur);
        if (strcmp(tn, cn) != 0) {
            CH_ERR(ch, GW_PRECONDITION_FAILED, m->id,
                   "inequivalent arg 'type' for exchange '%.*s' in vhost '%s': received '%s' but "
                   "current is '%s'",
                   (int)d->exchange.len, d->exchange.ptr, GW_VHOST(ch), tn, cn);
            return;
        }
        for (size_t i = 0; i < sizeof(fl) / sizeof(fl[0]); i++) {
            if ((curf & fl[i].bit) != (flags & fl[i].bit)) {
                CH_ERR(ch, GW_PRECONDITION_FAILED, m->id,
                       "inequivalent arg '%s' for exchange '%.*s' in vhost '%s': received '%s' "
                       "but current is '%s'",
                       fl[i].name, (int)d->exchange.len, d->exchange.ptr, GW_VHOST(ch),
                       gw_yn(flags & fl[i].bit), gw_yn(curf & fl[i].bit));
                return;
            }
        }
    } else {
        if (is_amq(d->exchange)) {
            CH_ERR(ch, GW_ACCESS_REFUSED, m->id,
                   "exchange name '%.*s' contains reserved prefix 'amq.*'", (int)d->exchange.len,
                   d->exchange.ptr);
            return;
        }
        if ((flags & GW_XF_DELAYED) && !gw_delay_declare(ch, m->id, d->arguments, &type))
            return;
        if (gw_route_exchange_add(r, d->exchange, type, flags) != GT_OK) {
            CH_ERR(ch, GW_INTERNAL_ERROR, m->id, "cannot declare exchange '%.*s'",
                   (int)d->exchange.len, d->exchange.ptr);
            return;
        }
        {
            gw_value_t ae;
            gw_str_t an = {"", 0};
            if (gw_table_get(d->arguments, "alternate-exchange", &ae) && ae.type == 'S' &&
                ae.v.bytes.len <= 255) {
                an = (gw_str_t){(const char *)ae.v.bytes.ptr, ae.v.bytes.len};
                gw_route_exchange_set_alternate(r, d->exchange, &an);
            }
            if (d->durable) {
                uint8_t k[GW_META_KEY], v[300];
                size_t kl = gw_meta_name_key(k, ch->bc->vh, d->exchange), vl = 0;
                v[vl++] = 1;
                v[vl++] = (uint8_t)type;
                v[vl++] = (uint8_t)flags;
                vl += gw_meta_put_s8(v + vl, an);
                if (gw_meta_write(ch->bc->b, ch, m->id, GW_EXCHANGE_DECLARE_OK, d->nowait,
                               GW_NS_EXCHANGE, k, kl, v, vl, false))
                    return;
            }
        }
    }
    if (!d->nowait)
        gw_chan_reply(ch, &ok);
}

/* Auto-delete: an exchange that lost its last binding as a source goes. */
typedef struct {
    gw_vhost_t *vh;
    gw_str_t src[16];
    char buf[16][256];
    size_t n;
} lost_t;

static void note_lost(void *ctx, const gw_binding_t *bd)
{
    lost_t *l = ctx;

    gw_meta_binding_forget(l->vh, bd);

    for (size_t i = 0; i < l->n; i++)
        if (l->src[i].len == bd->source.len && memcmp(l->src[i].ptr, bd->source.ptr, bd->source.len) == 0)
            return;
    if (l->n < 16) {
        memcpy(l->buf[l->n], bd->source.ptr, bd->source.len);
        l->src[l->n] = (gw_str_t){l->buf[l->n], bd->source.len};
        l->n++;
    }
}

/* Removes an exchange with its bindings and their records. */
static void exchange_drop(gw_vhost_t *vh, gw_str_t name, uint32_t flags, lost_t *l)
{
    if (flags & GW_XF_DURABLE) {
        uint8_t k[GW_META_KEY];
        size_t kl = gw_meta_name_key(k, vh, name);
        gw_meta_write(vh->b, NULL, 0, 0, true, GW_NS_EXCHANGE, k, kl, NULL, 0, true);
    }
    if (l != NULL)
        gw_route_exchange_remove(vh->router, name, note_lost, l);
    else
        gw_route_exchange_remove(vh->router, name, gw_meta_binding_forget, vh);
}

static void auto_delete_sources(gw_router_t *r, lost_t *l)
{
    for (size_t i = 0; i < l->n; i++) {
        uint32_t f;
        if (gw_route_exchange_get(r, l->src[i], NULL, &f) && (f & GW_XF_AUTO_DELETE) &&
            gw_route_count_source(r, l->src[i]) == 0)
            exchange_drop(l->vh, l->src[i], f, NULL);
    }
}

void gw_on_exchange_delete(gw_chan_t *ch, const gw_method_t *m)
{
    const gw_exchange_delete_t *d = &m->u.exchange_delete;
    gw_router_t *r = ch->bc->vh->router;
    gw_method_t ok = {.id = GW_EXCHANGE_DELETE_OK};
    lost_t *l;

    if (d->exchange.len == 0) {
        default_refused(ch, m->id);
        return;
    }
    if (!gw_chan_allowed(ch, m->id, GW_PERM_CONFIGURE, GW_RES_EXCHANGE, d->exchange))
        return;
    if (gw_route_exchange_get(r, d->exchange, NULL, NULL)) {
        if (d->if_unused && gw_route_count_source(r, d->exchange) > 0) {
            CH_ERR(ch, GW_PRECONDITION_FAILED, m->id, "exchange '%.*s' in vhost '%s' in use",
                   (int)d->exchange.len, d->exchange.ptr, GW_VHOST(ch));
            return;
        }
        uint32_t f = 0;
        gw_route_exchange_get(r, d->exchange, NULL, &f);
        if ((l = calloc(1, sizeof(*l))) != NULL) {
            l->vh = ch->bc->vh;
            exchange_drop(ch->bc->vh, d->exchange, f, l);
            auto_delete_sources(r, l);
            free(l);
        } else {
            exchange_drop(ch->bc->vh, d->exchange, f, NULL);
        }
    }
    if (!d->nowait)
        gw_chan_reply(ch, &ok);
}

static void bind_common(gw_chan_t *ch, uint32_t mid, gw_str_t src, gw_dest_kind_t kind,
                        gw_str_t dest, gw_str_t key, gw_table_t args, bool bind, bool nowait,
                        gw_method_id_t okid)
{
    gw_router_t *r = ch->bc->vh->router;
    gw_method_t ok = {.id = okid};
    gt_err_t rc;

    if (src.len == 0 || (kind == GW_DEST_EXCHANGE && dest.len == 0)) {
        default_refused(ch, mid);
        return;
    }
    /* RabbitMQ: write on the destination, read on the source. */
    if (!gw_chan_allowed(ch, mid, GW_PERM_WRITE,
                         kind == GW_DEST_QUEUE ? GW_RES_QUEUE : GW_RES_EXCHANGE, dest) ||
        !gw_chan_allowed(ch, mid, GW_PERM_READ, GW_RES_EXCHANGE, src))
        return;
    if (bind) {
        gw_xtype_t t;
        if (kind == GW_DEST_EXCHANGE && !exchange_known(ch, mid, dest))
            return;
        if (!exchange_known(ch, mid, src))
            return;
        if (gw_route_exchange_get(r, src, &t, NULL) && t == GW_XTYPE_HEADERS) {
            char text[256];
            if (gw_route_headers_check(args, text, sizeof(text)) != GT_OK) {
                CH_ERR(ch, GW_PRECONDITION_FAILED, mid, "%s", text);
                return;
            }
        }
        gw_vhost_t *vh = ch->bc->vh;
        rc = gw_route_bind(r, src, kind, dest, key, args, NULL);
        if (rc == GT_OK && gw_exchange_durable(vh, src) &&
            (kind == GW_DEST_EXCHANGE ? gw_exchange_durable(vh, dest)
                                      : gw_queue_find(vh, dest) != NULL &&
                                            gw_queue_find(vh, dest)->durable) &&
            gw_meta_binding_fits(vh, src, dest, key)) {
            uint8_t k[GW_META_KEY + 64];
            size_t kl = gw_meta_binding_key(k, vh, src, kind, dest, key, args);
            if (gw_meta_write(ch->bc->b, ch, mid, okid, nowait, GW_NS_BINDING, k, kl,
                           args.ptr != NULL ? args.ptr : (const uint8_t *)"", args.len, false))
                return;
        }
    } else {
        lost_t *l = calloc(1, sizeof(*l));
        bool removed = false;
        rc = gw_route_unbind(r, src, kind, dest, key, args, &removed);
        if (l != NULL) {
            l->vh = ch->bc->vh;
            if (rc == GT_OK && removed) {
                gw_binding_t bd = {.source = src, .dest_kind = kind, .dest = dest, .key = key,
                                   .args = args};
                note_lost(l, &bd);
                auto_delete_sources(r, l);
            }
            free(l);
        }
    }
    if (rc == GT_ENOTFOUND) {
        CH_ERR(ch, GW_NOT_FOUND, mid, "no exchange '%.*s' in vhost '%s'", (int)src.len, src.ptr,
               GW_VHOST(ch));
        return;
    }
    if (rc != GT_OK) {
        CH_ERR(ch, rc == GT_EINVAL ? GW_PRECONDITION_FAILED : GW_INTERNAL_ERROR, mid,
               "cannot %s: %s", bind ? "bind" : "unbind", gt_err_str(rc));
        return;
    }
    if (!nowait)
        gw_chan_reply(ch, &ok);
}

void gw_on_queue_bind(gw_chan_t *ch, const gw_method_t *m)
{
    const gw_queue_bind_t *qb = &m->u.queue_bind;
    bool bind = m->id == GW_QUEUE_BIND;
    gw_str_t name, key = qb->routing_key;

    if (!gw_chan_queue_name(ch, m->id, qb->queue, &name))
        return;
    if (qb->queue.len == 0 && key.len == 0)
        key = name; /* RabbitMQ's shortcut: the queue's name as key */
    if (qb->exchange.len == 0) {
        default_refused(ch, m->id);
        return;
    }
    if (bind || gw_queue_find(ch->bc->vh, name) != NULL) {
        if (gw_queue_for(ch, m->id, name) == NULL)
            return;
    }
    bind_common(ch, m->id, qb->exchange, GW_DEST_QUEUE, name, key, qb->arguments, bind,
                bind ? qb->nowait : false, bind ? GW_QUEUE_BIND_OK : GW_QUEUE_UNBIND_OK);
}

void gw_on_exchange_bind(gw_chan_t *ch, const gw_method_t *m)
{
    const gw_exchange_bind_t *eb = &m->u.exchange_bind;
    bool bind = m->id == GW_EXCHANGE_BIND;

    bind_common(ch, m->id, eb->source, GW_DEST_EXCHANGE, eb->destination, eb->routing_key,
                eb->arguments, bind, eb->nowait, bind ? GW_EXCHANGE_BIND_OK : GW_EXCHANGE_UNBIND_OK);
}

