/* Methods: one descriptor per (class, method) -- its name, direction,
 * content flag and argument list with each argument's wire type and
 * place in gw_method_t -- and one generic decoder and encoder driven by
 * it.  Argument lists are AMQP 0-9-1 as RabbitMQ implements it (its
 * extensions: connection.blocked/unblocked 10/60-61, update-secret
 * 10/70-71, exchange.bind/unbind 40/30-31 with unbind-ok 51, basic.nack
 * 60/120, confirm.select 85/10-11, basic.cancel sent by the server).
 *
 * Wire rules: consecutive bit arguments pack into one octet, first bit
 * in the lowest position; any other argument ends the run.  RabbitMQ
 * matches the argument list exactly, so a short or long payload, or a
 * table inside that does not parse, is refused with 501 FRAME_ERROR
 * "cannot decode <<...>>" (its text) naming the method. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "gw_codec.h"
#include "gw_wire.h"

#define F(kind, member, field, name) {kind, (uint16_t)offsetof(gw_method_t, u.member.field), name}
#define OCTET(m, f, n) F(GW_F_OCTET, m, f, n)
#define SHORT(m, f, n) F(GW_F_SHORT, m, f, n)
#define LONG(m, f, n) F(GW_F_LONG, m, f, n)
#define LLONG(m, f, n) F(GW_F_LONGLONG, m, f, n)
#define SSTR(m, f, n) F(GW_F_SHORTSTR, m, f, n)
#define LSTR(m, f, n) F(GW_F_LONGSTR, m, f, n)
#define BIT(m, f, n) F(GW_F_BIT, m, f, n)
#define TABLE(m, f, n) F(GW_F_TABLE, m, f, n)

static const gw_field_info_t f_conn_start[] = {
    OCTET(connection_start, version_major, "version-major"),
    OCTET(connection_start, version_minor, "version-minor"),
    TABLE(connection_start, server_properties, "server-properties"),
    LSTR(connection_start, mechanisms, "mechanisms"),
    LSTR(connection_start, locales, "locales"),
};
static const gw_field_info_t f_conn_start_ok[] = {
    TABLE(connection_start_ok, client_properties, "client-properties"),
    SSTR(connection_start_ok, mechanism, "mechanism"),
    LSTR(connection_start_ok, response, "response"),
    SSTR(connection_start_ok, locale, "locale"),
};
static const gw_field_info_t f_conn_secure[] = {
    LSTR(connection_secure, challenge, "challenge"),
};
static const gw_field_info_t f_conn_secure_ok[] = {
    LSTR(connection_secure_ok, response, "response"),
};
static const gw_field_info_t f_conn_tune[] = {
    SHORT(connection_tune, channel_max, "channel-max"),
    LONG(connection_tune, frame_max, "frame-max"),
    SHORT(connection_tune, heartbeat, "heartbeat"),
};
static const gw_field_info_t f_conn_open[] = {
    SSTR(connection_open, virtual_host, "virtual-host"),
    SSTR(connection_open, capabilities, "capabilities"),
    BIT(connection_open, insist, "insist"),
};
static const gw_field_info_t f_conn_open_ok[] = {
    SSTR(connection_open_ok, known_hosts, "known-hosts"),
};
static const gw_field_info_t f_close[] = {
    SHORT(close, reply_code, "reply-code"),
    SSTR(close, reply_text, "reply-text"),
    SHORT(close, class_id, "class-id"),
    SHORT(close, method_id, "method-id"),
};
static const gw_field_info_t f_conn_blocked[] = {
    SSTR(connection_blocked, reason, "reason"),
};
static const gw_field_info_t f_conn_update_secret[] = {
    LSTR(connection_update_secret, new_secret, "new-secret"),
    SSTR(connection_update_secret, reason, "reason"),
};
static const gw_field_info_t f_chan_open[] = {
    SSTR(channel_open, out_of_band, "out-of-band"),
};
static const gw_field_info_t f_chan_open_ok[] = {
    LSTR(channel_open_ok, channel_id, "channel-id"),
};
static const gw_field_info_t f_chan_flow[] = {
    BIT(channel_flow, active, "active"),
};
static const gw_field_info_t f_access_request[] = {
    SSTR(access_request, realm, "realm"),
    BIT(access_request, exclusive, "exclusive"),
    BIT(access_request, passive, "passive"),
    BIT(access_request, active, "active"),
    BIT(access_request, write, "write"),
    BIT(access_request, read, "read"),
};
static const gw_field_info_t f_access_request_ok[] = {
    SHORT(access_request_ok, ticket, "ticket"),
};
static const gw_field_info_t f_exch_declare[] = {
    SHORT(exchange_declare, ticket, "ticket"),
    SSTR(exchange_declare, exchange, "exchange"),
    SSTR(exchange_declare, type, "type"),
    BIT(exchange_declare, passive, "passive"),
    BIT(exchange_declare, durable, "durable"),
    BIT(exchange_declare, auto_delete, "auto-delete"),
    BIT(exchange_declare, internal, "internal"),
    BIT(exchange_declare, nowait, "no-wait"),
    TABLE(exchange_declare, arguments, "arguments"),
};
static const gw_field_info_t f_exch_delete[] = {
    SHORT(exchange_delete, ticket, "ticket"),
    SSTR(exchange_delete, exchange, "exchange"),
    BIT(exchange_delete, if_unused, "if-unused"),
    BIT(exchange_delete, nowait, "no-wait"),
};
static const gw_field_info_t f_exch_bind[] = {
    SHORT(exchange_bind, ticket, "ticket"),
    SSTR(exchange_bind, destination, "destination"),
    SSTR(exchange_bind, source, "source"),
    SSTR(exchange_bind, routing_key, "routing-key"),
    BIT(exchange_bind, nowait, "no-wait"),
    TABLE(exchange_bind, arguments, "arguments"),
};
static const gw_field_info_t f_queue_declare[] = {
    SHORT(queue_declare, ticket, "ticket"),
    SSTR(queue_declare, queue, "queue"),
    BIT(queue_declare, passive, "passive"),
    BIT(queue_declare, durable, "durable"),
    BIT(queue_declare, exclusive, "exclusive"),
    BIT(queue_declare, auto_delete, "auto-delete"),
    BIT(queue_declare, nowait, "no-wait"),
    TABLE(queue_declare, arguments, "arguments"),
};
static const gw_field_info_t f_queue_declare_ok[] = {
    SSTR(queue_declare_ok, queue, "queue"),
    LONG(queue_declare_ok, message_count, "message-count"),
    LONG(queue_declare_ok, consumer_count, "consumer-count"),
};
static const gw_field_info_t f_queue_bind[] = {
    SHORT(queue_bind, ticket, "ticket"),
    SSTR(queue_bind, queue, "queue"),
    SSTR(queue_bind, exchange, "exchange"),
    SSTR(queue_bind, routing_key, "routing-key"),
    BIT(queue_bind, nowait, "no-wait"),
    TABLE(queue_bind, arguments, "arguments"),
};
static const gw_field_info_t f_queue_purge[] = {
    SHORT(queue_purge, ticket, "ticket"),
    SSTR(queue_purge, queue, "queue"),
    BIT(queue_purge, nowait, "no-wait"),
};
static const gw_field_info_t f_message_count[] = {
    LONG(message_count, message_count, "message-count"),
};
static const gw_field_info_t f_queue_delete[] = {
    SHORT(queue_delete, ticket, "ticket"),
    SSTR(queue_delete, queue, "queue"),
    BIT(queue_delete, if_unused, "if-unused"),
    BIT(queue_delete, if_empty, "if-empty"),
    BIT(queue_delete, nowait, "no-wait"),
};
static const gw_field_info_t f_queue_unbind[] = { /* no no-wait */
    SHORT(queue_bind, ticket, "ticket"),
    SSTR(queue_bind, queue, "queue"),
    SSTR(queue_bind, exchange, "exchange"),
    SSTR(queue_bind, routing_key, "routing-key"),
    TABLE(queue_bind, arguments, "arguments"),
};
static const gw_field_info_t f_basic_qos[] = {
    LONG(basic_qos, prefetch_size, "prefetch-size"),
    SHORT(basic_qos, prefetch_count, "prefetch-count"),
    BIT(basic_qos, global, "global"),
};
static const gw_field_info_t f_basic_consume[] = {
    SHORT(basic_consume, ticket, "ticket"),
    SSTR(basic_consume, queue, "queue"),
    SSTR(basic_consume, consumer_tag, "consumer-tag"),
    BIT(basic_consume, no_local, "no-local"),
    BIT(basic_consume, no_ack, "no-ack"),
    BIT(basic_consume, exclusive, "exclusive"),
    BIT(basic_consume, nowait, "no-wait"),
    TABLE(basic_consume, arguments, "arguments"),
};
static const gw_field_info_t f_consumer_tag[] = {
    SSTR(consumer_tag, consumer_tag, "consumer-tag"),
};
static const gw_field_info_t f_basic_cancel[] = {
    SSTR(basic_cancel, consumer_tag, "consumer-tag"),
    BIT(basic_cancel, nowait, "no-wait"),
};
static const gw_field_info_t f_basic_publish[] = {
    SHORT(basic_publish, ticket, "ticket"),
    SSTR(basic_publish, exchange, "exchange"),
    SSTR(basic_publish, routing_key, "routing-key"),
    BIT(basic_publish, mandatory, "mandatory"),
    BIT(basic_publish, immediate, "immediate"),
};
static const gw_field_info_t f_basic_return[] = {
    SHORT(basic_return, reply_code, "reply-code"),
    SSTR(basic_return, reply_text, "reply-text"),
    SSTR(basic_return, exchange, "exchange"),
    SSTR(basic_return, routing_key, "routing-key"),
};
static const gw_field_info_t f_basic_deliver[] = {
    SSTR(basic_deliver, consumer_tag, "consumer-tag"),
    LLONG(basic_deliver, delivery_tag, "delivery-tag"),
    BIT(basic_deliver, redelivered, "redelivered"),
    SSTR(basic_deliver, exchange, "exchange"),
    SSTR(basic_deliver, routing_key, "routing-key"),
};
static const gw_field_info_t f_basic_get[] = {
    SHORT(basic_get, ticket, "ticket"),
    SSTR(basic_get, queue, "queue"),
    BIT(basic_get, no_ack, "no-ack"),
};
static const gw_field_info_t f_basic_get_ok[] = {
    LLONG(basic_get_ok, delivery_tag, "delivery-tag"),
    BIT(basic_get_ok, redelivered, "redelivered"),
    SSTR(basic_get_ok, exchange, "exchange"),
    SSTR(basic_get_ok, routing_key, "routing-key"),
    LONG(basic_get_ok, message_count, "message-count"),
};
static const gw_field_info_t f_basic_get_empty[] = {
    SSTR(basic_get_empty, cluster_id, "cluster-id"),
};
static const gw_field_info_t f_basic_ack[] = {
    LLONG(basic_ack, delivery_tag, "delivery-tag"),
    BIT(basic_ack, multiple, "multiple"),
};
static const gw_field_info_t f_basic_reject[] = {
    LLONG(basic_reject, delivery_tag, "delivery-tag"),
    BIT(basic_reject, requeue, "requeue"),
};
static const gw_field_info_t f_basic_recover[] = {
    BIT(basic_recover, requeue, "requeue"),
};
static const gw_field_info_t f_basic_nack[] = {
    LLONG(basic_nack, delivery_tag, "delivery-tag"),
    BIT(basic_nack, multiple, "multiple"),
    BIT(basic_nack, requeue, "requeue"),
};
static const gw_field_info_t f_confirm_select[] = {
    BIT(confirm_select, nowait, "nowait"),
};

#define C GW_FROM_CLIENT
#define S GW_FROM_SERVER
#define CS (GW_FROM_CLIENT | GW_FROM_SERVER)
#define M(id, name, from, content, sync, fields) \
    {id, name, from, content, sync, (uint8_t)(sizeof fields / sizeof fields[0]), fields}
#define M0(id, name, from, sync) {id, name, from, false, sync, 0, NULL}

/* Sorted by id (class << 16 | method) for the binary search. */
static const gw_method_info_t methods[] = {
    M(GW_CONNECTION_START, "connection.start", S, false, true, f_conn_start),
    M(GW_CONNECTION_START_OK, "connection.start_ok", C, false, false, f_conn_start_ok),
    M(GW_CONNECTION_SECURE, "connection.secure", S, false, true, f_conn_secure),
    M(GW_CONNECTION_SECURE_OK, "connection.secure_ok", C, false, false, f_conn_secure_ok),
    M(GW_CONNECTION_TUNE, "connection.tune", S, false, true, f_conn_tune),
    M(GW_CONNECTION_TUNE_OK, "connection.tune_ok", C, false, false, f_conn_tune),
    M(GW_CONNECTION_OPEN, "connection.open", C, false, true, f_conn_open),
    M(GW_CONNECTION_OPEN_OK, "connection.open_ok", S, false, false, f_conn_open_ok),
    M(GW_CONNECTION_CLOSE, "connection.close", CS, false, true, f_close),
    M0(GW_CONNECTION_CLOSE_OK, "connection.close_ok", CS, false),
    M(GW_CONNECTION_BLOCKED, "connection.blocked", CS, false, false, f_conn_blocked),
    M0(GW_CONNECTION_UNBLOCKED, "connection.unblocked", CS, false),
    M(GW_CONNECTION_UPDATE_SECRET, "connection.update_secret", C, false, true,
      f_conn_update_secret),
    M0(GW_CONNECTION_UPDATE_SECRET_OK, "connection.update_secret_ok", S, false),
    M(GW_CHANNEL_OPEN, "channel.open", C, false, true, f_chan_open),
    M(GW_CHANNEL_OPEN_OK, "channel.open_ok", S, false, false, f_chan_open_ok),
    M(GW_CHANNEL_FLOW, "channel.flow", CS, false, true, f_chan_flow),
    M(GW_CHANNEL_FLOW_OK, "channel.flow_ok", CS, false, false, f_chan_flow),
    M(GW_CHANNEL_CLOSE, "channel.close", CS, false, true, f_close),
    M0(GW_CHANNEL_CLOSE_OK, "channel.close_ok", CS, false),
    M(GW_ACCESS_REQUEST, "access.request", C, false, true, f_access_request),
    M(GW_ACCESS_REQUEST_OK, "access.request_ok", S, false, false, f_access_request_ok),
    M(GW_EXCHANGE_DECLARE, "exchange.declare", C, false, true, f_exch_declare),
    M0(GW_EXCHANGE_DECLARE_OK, "exchange.declare_ok", S, false),
    M(GW_EXCHANGE_DELETE, "exchange.delete", C, false, true, f_exch_delete),
    M0(GW_EXCHANGE_DELETE_OK, "exchange.delete_ok", S, false),
    M(GW_EXCHANGE_BIND, "exchange.bind", C, false, true, f_exch_bind),
    M0(GW_EXCHANGE_BIND_OK, "exchange.bind_ok", S, false),
    M(GW_EXCHANGE_UNBIND, "exchange.unbind", C, false, true, f_exch_bind),
    M0(GW_EXCHANGE_UNBIND_OK, "exchange.unbind_ok", S, false),
    M(GW_QUEUE_DECLARE, "queue.declare", C, false, true, f_queue_declare),
    M(GW_QUEUE_DECLARE_OK, "queue.declare_ok", S, false, false, f_queue_declare_ok),
    M(GW_QUEUE_BIND, "queue.bind", C, false, true, f_queue_bind),
    M0(GW_QUEUE_BIND_OK, "queue.bind_ok", S, false),
    M(GW_QUEUE_PURGE, "queue.purge", C, false, true, f_queue_purge),
    M(GW_QUEUE_PURGE_OK, "queue.purge_ok", S, false, false, f_message_count),
    M(GW_QUEUE_DELETE, "queue.delete", C, false, true, f_queue_delete),
    M(GW_QUEUE_DELETE_OK, "queue.delete_ok", S, false, false, f_message_count),
    M(GW_QUEUE_UNBIND, "queue.unbind", C, false, true, f_queue_unbind),
    M0(GW_QUEUE_UNBIND_OK, "queue.unbind_ok", S, false),
    M(GW_BASIC_QOS, "basic.qos", C, false, true, f_basic_qos),
    M0(GW_BASIC_QOS_OK, "basic.qos_ok", S, false),
    M(GW_BASIC_CONSUME, "basic.consume", C, false, true, f_basic_consume),
    M(GW_BASIC_CONSUME_OK, "basic.consume_ok", S, false, false, f_consumer_tag),
    M(GW_BASIC_CANCEL, "basic.cancel", CS, false, true, f_basic_cancel),
    M(GW_BASIC_CANCEL_OK, "basic.cancel_ok", CS, false, false, f_consumer_tag),
    M(GW_BASIC_PUBLISH, "basic.publish", C, true, false, f_basic_publish),
    M(GW_BASIC_RETURN, "basic.return", S, true, false, f_basic_return),
    M(GW_BASIC_DELIVER, "basic.deliver", S, true, false, f_basic_deliver),
    M(GW_BASIC_GET, "basic.get", C, false, true, f_basic_get),
    M(GW_BASIC_GET_OK, "basic.get_ok", S, true, false, f_basic_get_ok),
    M(GW_BASIC_GET_EMPTY, "basic.get_empty", S, false, false, f_basic_get_empty),
    M(GW_BASIC_ACK, "basic.ack", CS, false, false, f_basic_ack),
    M(GW_BASIC_REJECT, "basic.reject", C, false, false, f_basic_reject),
    M(GW_BASIC_RECOVER_ASYNC, "basic.recover_async", C, false, false, f_basic_recover),
    M(GW_BASIC_RECOVER, "basic.recover", C, false, true, f_basic_recover),
    M0(GW_BASIC_RECOVER_OK, "basic.recover_ok", S, false),
    M(GW_BASIC_NACK, "basic.nack", CS, false, false, f_basic_nack),
    M(GW_CONFIRM_SELECT, "confirm.select", C, false, true, f_confirm_select),
    M0(GW_CONFIRM_SELECT_OK, "confirm.select_ok", S, false),
    M0(GW_TX_SELECT, "tx.select", C, true),
    M0(GW_TX_SELECT_OK, "tx.select_ok", S, false),
    M0(GW_TX_COMMIT, "tx.commit", C, true),
    M0(GW_TX_COMMIT_OK, "tx.commit_ok", S, false),
    M0(GW_TX_ROLLBACK, "tx.rollback", C, true),
    M0(GW_TX_ROLLBACK_OK, "tx.rollback_ok", S, false),
};

#define NMETHODS (sizeof methods / sizeof methods[0])

const gw_method_info_t *gw_method_info(uint32_t id)
{
    size_t lo = 0, hi = NMETHODS;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if ((uint32_t)methods[mid].id == id)
            return &methods[mid];
        if ((uint32_t)methods[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const gw_method_info_t *gw_method_all(size_t *n)
{
    *n = NMETHODS;
    return methods;
}

/* ---- decode --------------------------------------------------------- */

gt_err_t gw_method_decode(const uint8_t *payload, size_t len, gw_method_t *out, gw_fault_t *fault)
{
    gw_rd_t r = gw_rd(payload, len);
    uint16_t cid = gw_rd_u16(&r), mid = gw_rd_u16(&r);
    const gw_method_info_t *mi;
    uint8_t bits = 0;
    int nbit = 8; /* bits left in the current octet; 8 = start a new one */

    if (!r.ok) {
        gw_fault_set(fault, GW_FRAME_ERROR, 0, 0, "method frame too short");
        return GT_EINVAL;
    }
    mi = gw_method_info(GW_MID(cid, mid));
    if (mi == NULL) {
        gw_fault_set(fault, GW_NOT_IMPLEMENTED, cid, mid, "unknown method class %u method %u",
                     cid, mid);
        return GT_EINVAL;
    }
    memset(out, 0, sizeof *out);
    out->id = mi->id;
    for (unsigned k = 0; k < mi->nfields && r.ok; k++) {
        const gw_field_info_t *fi = &mi->fields[k];
        uint8_t *dst = (uint8_t *)out + fi->offset;
        if (fi->kind != GW_F_BIT)
            nbit = 8;
        switch (fi->kind) {
        case GW_F_OCTET:
            *dst = gw_rd_u8(&r);
            break;
        case GW_F_SHORT: {
            uint16_t v = gw_rd_u16(&r);
            memcpy(dst, &v, sizeof v);
            break;
        }
        case GW_F_LONG: {
            uint32_t v = gw_rd_u32(&r);
            memcpy(dst, &v, sizeof v);
            break;
        }
        case GW_F_LONGLONG:
        case GW_F_TIMESTAMP: {
            uint64_t v = gw_rd_u64(&r);
            memcpy(dst, &v, sizeof v);
            break;
        }
        case GW_F_SHORTSTR: {
            uint8_t n = gw_rd_u8(&r);
            const uint8_t *q = gw_rd_take(&r, n);
            gw_str_t s = {q != NULL ? (const char *)q : "", q != NULL ? n : 0};
            memcpy(dst, &s, sizeof s);
            break;
        }
        case GW_F_LONGSTR: {
            uint32_t n = gw_rd_u32(&r);
            const uint8_t *q = gw_rd_take(&r, n);
            gw_bytes_t b = {q, q != NULL ? n : 0};
            memcpy(dst, &b, sizeof b);
            break;
        }
        case GW_F_TABLE: {
            uint32_t n = gw_rd_u32(&r);
            const uint8_t *q = gw_rd_take(&r, n);
            gw_table_t t = {n > 0 ? q : NULL, q != NULL ? n : 0};
            if (q != NULL && gw_table_validate(q, n) != GT_OK)
                r.ok = false;
            memcpy(dst, &t, sizeof t);
            break;
        }
        case GW_F_BIT: {
            if (nbit == 8) {
                bits = gw_rd_u8(&r);
                nbit = 0;
            }
            bool v = (bits >> nbit) & 1u;
            nbit++;
            memcpy(dst, &v, sizeof v);
            break;
        }
        }
    }
    if (!r.ok || gw_rd_left(&r) != 0) {
        char bin[200];
        gw_fmt_binary(bin, sizeof bin, payload + 4, len - 4, 32);
        gw_fault_set(fault, GW_FRAME_ERROR, cid, mid, "cannot decode %s", bin);
        return GT_EINVAL;
    }
    return GT_OK;
}

/* ---- encode --------------------------------------------------------- */

/* Writes (or, with a measuring writer, measures) m's payload.
 * Returns false when a value cannot be encoded. */
static bool method_write(const gw_method_t *m, gw_wr_t *w)
{
    const gw_method_info_t *mi = gw_method_info((uint32_t)m->id);
    uint8_t *bitp = NULL;
    int nbit = 8;

    if (mi == NULL)
        return false;
    gw_wr_u16(w, (uint16_t)(mi->id >> 16));
    gw_wr_u16(w, (uint16_t)mi->id);
    for (unsigned k = 0; k < mi->nfields; k++) {
        const gw_field_info_t *fi = &mi->fields[k];
        const uint8_t *src = (const uint8_t *)m + fi->offset;
        if (fi->kind != GW_F_BIT)
            nbit = 8;
        switch (fi->kind) {
        case GW_F_OCTET:
            gw_wr_u8(w, *src);
            break;
        case GW_F_SHORT: {
            uint16_t v;
            memcpy(&v, src, sizeof v);
            gw_wr_u16(w, v);
            break;
        }
        case GW_F_LONG: {
            uint32_t v;
            memcpy(&v, src, sizeof v);
            gw_wr_u32(w, v);
            break;
        }
        case GW_F_LONGLONG:
        case GW_F_TIMESTAMP: {
            uint64_t v;
            memcpy(&v, src, sizeof v);
            gw_wr_u64(w, v);
            break;
        }
        case GW_F_SHORTSTR: {
            gw_str_t s;
            memcpy(&s, src, sizeof s);
            if (s.len > 255 || (s.len > 0 && s.ptr == NULL))
                return false;
            gw_wr_u8(w, (uint8_t)s.len);
            gw_wr_mem(w, s.ptr, s.len);
            break;
        }
        case GW_F_LONGSTR:
        case GW_F_TABLE: {
            gw_bytes_t b; /* gw_table_t has the same layout */
            memcpy(&b, src, sizeof b);
            if (b.len > UINT32_MAX || (b.len > 0 && b.ptr == NULL))
                return false;
            gw_wr_u32(w, (uint32_t)b.len);
            gw_wr_mem(w, b.ptr, b.len);
            break;
        }
        case GW_F_BIT: {
            bool v;
            memcpy(&v, src, sizeof v);
            if (nbit == 8) {
                bitp = gw_wr_room(w, 1);
                if (bitp != NULL)
                    *bitp = 0;
                nbit = 0;
            }
            if (v && bitp != NULL)
                *bitp |= (uint8_t)(1u << nbit);
            nbit++;
            break;
        }
        }
    }
    return true;
}

size_t gw_method_size(const gw_method_t *m)
{
    gw_wr_t w = GW_WR_MEASURE;
    if (!method_write(m, &w) || !w.ok)
        return 0;
    return w.len;
}

gt_err_t gw_method_encode(const gw_method_t *m, uint8_t *buf, size_t cap, size_t *len)
{
    size_t need = gw_method_size(m);
    if (need == 0)
        return GT_EINVAL;
    if (cap < need || buf == NULL)
        return GT_ERANGE;
    gw_wr_t w = gw_wr(buf, cap);
    if (!method_write(m, &w) || !w.ok)
        return GT_EINVAL;
    *len = w.len;
    return GT_OK;
}

gt_err_t gw_method_frame(uint16_t ch, const gw_method_t *m, uint8_t *buf, size_t cap, size_t *len)
{
    size_t n = gw_method_size(m), plen = 0;
    if (n == 0 || n > UINT32_MAX)
        return GT_EINVAL;
    if (cap < n + GW_FRAME_OVERHEAD)
        return GT_ERANGE;
    gt_err_t rc = gw_method_encode(m, buf + 7, cap - GW_FRAME_OVERHEAD, &plen);
    if (rc != GT_OK)
        return rc;
    gw_frame_put_header(buf, GW_FRAME_METHOD, ch, (uint32_t)plen);
    buf[7 + plen] = GW_FRAME_END;
    *len = plen + GW_FRAME_OVERHEAD;
    return GT_OK;
}

void gw_fault_close(const gw_fault_t *f, bool channel, gw_method_t *out)
{
    memset(out, 0, sizeof *out);
    out->id = channel ? GW_CHANNEL_CLOSE : GW_CONNECTION_CLOSE;
    out->u.close.reply_code = f->code;
    out->u.close.reply_text = (gw_str_t){f->text, strnlen(f->text, GW_REPLY_TEXT_MAX)};
    out->u.close.class_id = f->class_id;
    out->u.close.method_id = f->method_id;
}
