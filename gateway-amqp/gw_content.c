/* Content: the content header (class, weight, body size, the basic
 * class's 14 properties behind a flags word), body frames cut at
 * frame_max, and the per-channel assembler that checks a command's frame
 * sequence the way RabbitMQ's command assembler does (its texts too).
 *
 * Properties appear in flag order: bit 15 content-type down to bit 2
 * cluster-id; bit 0 of a flags word says another flags word follows.
 * Basic defines only 14 properties, so a continuation word may carry no
 * property bits; we accept (and skip) continuation words that are zero
 * apart from their own continuation bit. */
#include <stdio.h>
#include <string.h>

#include "gw_codec.h"
#include "gw_wire.h"

/* RabbitMQ's hard ceiling on a message body (?MAX_MSG_SIZE, 512 MiB). */
#define GW_MAX_BODY_DEFAULT (512ull * 1024 * 1024)

enum { ASM_METHOD = 0, ASM_HEADER, ASM_BODY };

static void rd_shortstr(gw_rd_t *r, gw_str_t *s)
{
    uint8_t n = gw_rd_u8(r);
    const uint8_t *q = gw_rd_take(r, n);
    *s = (gw_str_t){q != NULL ? (const char *)q : "", q != NULL ? n : 0};
}

static void props_fault(gw_fault_t *f, const uint8_t *p, size_t len)
{
    char bin[200];
    gw_fmt_binary(bin, sizeof bin, p, len, 32);
    gw_fault_set(f, GW_FRAME_ERROR, GW_CLASS_BASIC, 0, "cannot decode properties %s", bin);
}

gt_err_t gw_header_decode(const uint8_t *payload, size_t len, gw_content_header_t *out,
                          gw_fault_t *fault)
{
    gw_rd_t r = gw_rd(payload, len);
    gw_props_t *p = &out->props;

    memset(out, 0, sizeof *out);
    out->class_id = gw_rd_u16(&r);
    out->weight = gw_rd_u16(&r);
    out->body_size = gw_rd_u64(&r);
    if (!r.ok) {
        gw_fault_set(fault, GW_FRAME_ERROR, 0, 0, "content header too short");
        return GT_EINVAL;
    }
    out->raw_props = (gw_bytes_t){r.p, gw_rd_left(&r)};
    uint16_t flags = gw_rd_u16(&r);
    uint16_t more = flags;
    while (r.ok && (more & 1u)) {
        more = gw_rd_u16(&r);
        if ((more & 0xFFFEu) != 0)
            r.ok = false;
    }
    p->flags = flags & 0xFFFCu;
    if ((flags & 2u) != 0)
        r.ok = false; /* no 15th property in class basic */
    if (p->flags & GW_P_CONTENT_TYPE)
        rd_shortstr(&r, &p->content_type);
    if (p->flags & GW_P_CONTENT_ENCODING)
        rd_shortstr(&r, &p->content_encoding);
    if ((p->flags & GW_P_HEADERS) && r.ok) {
        uint32_t n = gw_rd_u32(&r);
        const uint8_t *q = gw_rd_take(&r, n);
        p->headers = (gw_table_t){n > 0 ? q : NULL, q != NULL ? n : 0};
        if (q != NULL && gw_table_validate(q, n) != GT_OK)
            r.ok = false;
    }
    if (p->flags & GW_P_DELIVERY_MODE)
        p->delivery_mode = gw_rd_u8(&r);
    if (p->flags & GW_P_PRIORITY)
        p->priority = gw_rd_u8(&r);
    if (p->flags & GW_P_CORRELATION_ID)
        rd_shortstr(&r, &p->correlation_id);
    if (p->flags & GW_P_REPLY_TO)
        rd_shortstr(&r, &p->reply_to);
    if (p->flags & GW_P_EXPIRATION)
        rd_shortstr(&r, &p->expiration);
    if (p->flags & GW_P_MESSAGE_ID)
        rd_shortstr(&r, &p->message_id);
    if (p->flags & GW_P_TIMESTAMP)
        p->timestamp = gw_rd_u64(&r);
    if (p->flags & GW_P_TYPE)
        rd_shortstr(&r, &p->type);
    if (p->flags & GW_P_USER_ID)
        rd_shortstr(&r, &p->user_id);
    if (p->flags & GW_P_APP_ID)
        rd_shortstr(&r, &p->app_id);
    if (p->flags & GW_P_CLUSTER_ID)
        rd_shortstr(&r, &p->cluster_id);
    if (!r.ok || gw_rd_left(&r) != 0) {
        props_fault(fault, out->raw_props.ptr, out->raw_props.len);
        return GT_EINVAL;
    }
    return GT_OK;
}

static bool wr_shortstr(gw_wr_t *w, gw_str_t s)
{
    if (s.len > 255 || (s.len > 0 && s.ptr == NULL))
        return false;
    gw_wr_u8(w, (uint8_t)s.len);
    gw_wr_mem(w, s.ptr, s.len);
    return true;
}

static bool props_write(const gw_props_t *p, gw_wr_t *w)
{
    bool ok = true;
    uint16_t f = p->flags & 0xFFFCu; /* only the 14 defined bits */

    gw_wr_u16(w, f);
    if (f & GW_P_CONTENT_TYPE)
        ok &= wr_shortstr(w, p->content_type);
    if (f & GW_P_CONTENT_ENCODING)
        ok &= wr_shortstr(w, p->content_encoding);
    if (f & GW_P_HEADERS) {
        if (p->headers.len > UINT32_MAX || (p->headers.len > 0 && p->headers.ptr == NULL))
            return false;
        gw_wr_u32(w, (uint32_t)p->headers.len);
        gw_wr_mem(w, p->headers.ptr, p->headers.len);
    }
    if (f & GW_P_DELIVERY_MODE)
        gw_wr_u8(w, p->delivery_mode);
    if (f & GW_P_PRIORITY)
        gw_wr_u8(w, p->priority);
    if (f & GW_P_CORRELATION_ID)
        ok &= wr_shortstr(w, p->correlation_id);
    if (f & GW_P_REPLY_TO)
        ok &= wr_shortstr(w, p->reply_to);
    if (f & GW_P_EXPIRATION)
        ok &= wr_shortstr(w, p->expiration);
    if (f & GW_P_MESSAGE_ID)
        ok &= wr_shortstr(w, p->message_id);
    if (f & GW_P_TIMESTAMP)
        gw_wr_u64(w, p->timestamp);
    if (f & GW_P_TYPE)
        ok &= wr_shortstr(w, p->type);
    if (f & GW_P_USER_ID)
        ok &= wr_shortstr(w, p->user_id);
    if (f & GW_P_APP_ID)
        ok &= wr_shortstr(w, p->app_id);
    if (f & GW_P_CLUSTER_ID)
        ok &= wr_shortstr(w, p->cluster_id);
    return ok && w->ok;
}

size_t gw_props_size(const gw_props_t *p)
{
    gw_wr_t w = GW_WR_MEASURE;
    return props_write(p, &w) ? w.len : 0;
}

gt_err_t gw_props_encode(const gw_props_t *p, uint8_t *buf, size_t cap, size_t *len)
{
    size_t need = gw_props_size(p);
    if (need == 0)
        return GT_EINVAL;
    if (cap < need || buf == NULL)
        return GT_ERANGE;
    gw_wr_t w = gw_wr(buf, cap);
    if (!props_write(p, &w))
        return GT_EINVAL;
    *len = w.len;
    return GT_OK;
}

/* Body bytes per body frame (0: no split). */
static size_t body_chunk(uint32_t frame_max)
{
    return frame_max > GW_FRAME_OVERHEAD ? frame_max - GW_FRAME_OVERHEAD : 0;
}

size_t gw_content_size(const gw_props_t *props, gw_bytes_t raw_props, size_t body_len,
                       uint32_t frame_max)
{
    size_t plen = props != NULL ? gw_props_size(props) : raw_props.len;
    size_t chunk = body_chunk(frame_max);
    if (plen == 0 || (frame_max != 0 && chunk == 0))
        return 0;
    size_t nframes = body_len == 0 ? 0 : chunk == 0 ? 1 : (body_len + chunk - 1) / chunk;
    return GW_FRAME_OVERHEAD + 12 + plen + nframes * GW_FRAME_OVERHEAD + body_len;
}

gt_err_t gw_content_encode(uint16_t ch, const gw_props_t *props, gw_bytes_t raw_props,
                           const void *body, size_t body_len, uint32_t frame_max, uint8_t *buf,
                           size_t cap, size_t *len)
{
    size_t need = gw_content_size(props, raw_props, body_len, frame_max);
    size_t chunk = body_chunk(frame_max), plen = 0, at;
    const uint8_t *b = body;

    if (need == 0 || (props == NULL && raw_props.len > 0 && raw_props.ptr == NULL) ||
        (body_len > 0 && body == NULL))
        return GT_EINVAL;
    if (buf == NULL || cap < need)
        return GT_ERANGE;
    /* header frame: class, weight 0, body size, properties */
    gw_put_u16(buf + 7, GW_CLASS_BASIC);
    gw_put_u16(buf + 9, 0);
    gw_put_u64(buf + 11, body_len);
    if (props != NULL) {
        gt_err_t rc = gw_props_encode(props, buf + 19, cap - 19, &plen);
        if (rc != GT_OK)
            return rc;
    } else {
        plen = raw_props.len;
        memcpy(buf + 19, raw_props.ptr, plen);
    }
    if (12 + plen > UINT32_MAX)
        return GT_EINVAL;
    gw_frame_put_header(buf, GW_FRAME_HEADER, ch, (uint32_t)(12 + plen));
    at = 19 + plen;
    buf[at++] = GW_FRAME_END;
    /* body frames */
    for (size_t off = 0; off < body_len;) {
        size_t n = body_len - off;
        if (chunk != 0 && n > chunk)
            n = chunk;
        if (n > UINT32_MAX)
            return GT_EINVAL;
        gw_frame_put_header(buf + at, GW_FRAME_BODY, ch, (uint32_t)n);
        memcpy(buf + at + 7, b + off, n);
        at += 7 + n;
        buf[at++] = GW_FRAME_END;
        off += n;
    }
    *len = at;
    return GT_OK;
}

/* ---- assembler ------------------------------------------------------ */

/* 505 naming the content-bearing method in progress (none in ASM_METHOD). */
static void asm_unexpected(gw_fault_t *f, const gw_asm_t *a, const char *msg)
{
    uint16_t cid = a->state == ASM_METHOD ? 0 : (uint16_t)(a->method >> 16);
    uint16_t mid = a->state == ASM_METHOD ? 0 : (uint16_t)a->method;
    gw_fault_set(f, GW_UNEXPECTED_FRAME, cid, mid, "%s", msg);
}

gt_err_t gw_asm_frame(gw_asm_t *a, const gw_frame_t *fr, gw_asm_out_t *out, gw_fault_t *fault)
{
    uint64_t max_body = a->max_body != 0 ? a->max_body : GW_MAX_BODY_DEFAULT;
    unsigned cls = (unsigned)(a->method >> 16);
    char msg[128];
    gt_err_t rc;

    memset(out, 0, sizeof *out);
    switch (a->state) {
    case ASM_METHOD:
        if (fr->type != GW_FRAME_METHOD) {
            asm_unexpected(fault, a, "expected method frame, got non method frame instead");
            return GT_EINVAL;
        }
        rc = gw_method_decode(fr->payload, fr->size, &out->method, fault);
        if (rc != GT_OK)
            return rc;
        if (gw_method_info((uint32_t)out->method.id)->has_content) {
            a->state = ASM_HEADER;
            a->method = out->method.id;
            out->event = GW_EV_CONTENT;
        } else {
            out->event = GW_EV_METHOD;
            out->done = true;
        }
        return GT_OK;
    case ASM_HEADER:
        snprintf(msg, sizeof msg,
                 "expected content header for class %u, got non content header frame instead",
                 cls);
        if (fr->type != GW_FRAME_HEADER) {
            asm_unexpected(fault, a, msg);
            return GT_EINVAL;
        }
        rc = gw_header_decode(fr->payload, fr->size, &out->header, fault);
        if (rc != GT_OK) {
            fault->method_id = (uint16_t)a->method;
            return rc;
        }
        if (out->header.weight != 0) {
            asm_unexpected(fault, a, msg); /* RabbitMQ matches weight 0 only */
            return GT_EINVAL;
        }
        if (out->header.class_id != cls) {
            snprintf(msg, sizeof msg,
                     "expected content header for class %u, got one for class %u instead", cls,
                     out->header.class_id);
            asm_unexpected(fault, a, msg);
            return GT_EINVAL;
        }
        if (out->header.body_size > max_body) {
            gw_fault_set(fault, GW_FRAME_ERROR, (uint16_t)(a->method >> 16), (uint16_t)a->method,
                         "content body size %llu exceeds maximum allowed size %llu",
                         (unsigned long long)out->header.body_size,
                         (unsigned long long)max_body);
            return GT_EINVAL;
        }
        out->event = GW_EV_HEADER;
        out->method.id = a->method;
        if (out->header.body_size == 0) {
            a->state = ASM_METHOD;
            out->done = true;
        } else {
            a->state = ASM_BODY;
            a->remaining = out->header.body_size;
        }
        return GT_OK;
    default:
        if (fr->type != GW_FRAME_BODY) {
            asm_unexpected(fault, a, "expected content body, got non content body frame instead");
            return GT_EINVAL;
        }
        if (fr->size > a->remaining) {
            gw_fault_set(fault, GW_FRAME_ERROR, (uint16_t)(a->method >> 16), (uint16_t)a->method,
                         "content body frame exceeds remaining content size");
            return GT_EINVAL;
        }
        a->remaining -= fr->size;
        out->event = GW_EV_BODY;
        out->method.id = a->method;
        out->body = (gw_bytes_t){fr->payload, fr->size};
        if (a->remaining == 0) {
            a->state = ASM_METHOD;
            out->done = true;
        }
        return GT_OK;
    }
}
