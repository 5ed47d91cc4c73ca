/* Frames: the protocol header, one-shot frame decoding, the bounded
 * incremental parser, and the reply codes and reply texts that decoders
 * report (RabbitMQ's wording, so clients that log or match them see what
 * they would see from RabbitMQ).
 *
 * RabbitMQ facts this file keeps:
 *  - the frame header is checked before the payload is read: a size over
 *    the limit is refused at once, so a peer cannot make us buffer it;
 *  - the limit RabbitMQ applies is frame_max - 8 plus an 8-byte "fudge"
 *    for old clients that counted the overhead in, i.e. payloads of up
 *    to frame_max bytes pass; the text names frame_max - 8;
 *  - frame errors read "type T, all octets = <<...>>: {reason,...}" (or
 *    "first 16 octets" for longer payloads). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_codec.h"
#include "gw_wire.h"

const uint8_t gw_protocol_header[GW_HEADER_LEN] = {'A', 'M', 'Q', 'P', 0, 0, 9, 1};
const uint8_t gw_heartbeat_frame[GW_FRAME_OVERHEAD] = {GW_FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0,
                                                       GW_FRAME_END};

/* A frame_max of 0 ("no limit") still stops the parser's buffer here. */
#define GW_PARSER_HARD_MAX (128u * 1024 * 1024)

const char *gw_reply_name(uint16_t code)
{
    switch (code) {
    case GW_REPLY_SUCCESS: return "REPLY_SUCCESS";
    case GW_CONTENT_TOO_LARGE: return "CONTENT_TOO_LARGE";
    case GW_NO_ROUTE: return "NO_ROUTE";
    case GW_NO_CONSUMERS: return "NO_CONSUMERS";
    case GW_CONNECTION_FORCED: return "CONNECTION_FORCED";
    case GW_INVALID_PATH: return "INVALID_PATH";
    case GW_ACCESS_REFUSED: return "ACCESS_REFUSED";
    case GW_NOT_FOUND: return "NOT_FOUND";
    case GW_RESOURCE_LOCKED: return "RESOURCE_LOCKED";
    case GW_PRECONDITION_FAILED: return "PRECONDITION_FAILED";
    case GW_FRAME_ERROR: return "FRAME_ERROR";
    case GW_SYNTAX_ERROR: return "SYNTAX_ERROR";
    case GW_COMMAND_INVALID: return "COMMAND_INVALID";
    case GW_CHANNEL_ERROR: return "CHANNEL_ERROR";
    case GW_UNEXPECTED_FRAME: return "UNEXPECTED_FRAME";
    case GW_RESOURCE_ERROR: return "RESOURCE_ERROR";
    case GW_NOT_ALLOWED: return "NOT_ALLOWED";
    case GW_NOT_IMPLEMENTED: return "NOT_IMPLEMENTED";
    case GW_INTERNAL_ERROR: return "INTERNAL_ERROR";
    default: return "UNKNOWN";
    }
}

void gw_fault_set(gw_fault_t *f, uint16_t code, uint16_t class_id, uint16_t method_id,
                  const char *fmt, ...)
{
    char expl[1024];
    va_list ap;

    if (f == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(expl, sizeof expl, fmt, ap);
    va_end(ap);
    f->code = code;
    f->class_id = class_id;
    f->method_id = method_id;
    f->bad_header = false;
    int n = snprintf(f->text, sizeof f->text, "%s - %s", gw_reply_name(code), expl);
    /* RabbitMQ keeps 252 bytes and appends "..." when the text is over
     * the shortstr limit. */
    if (n > GW_REPLY_TEXT_MAX)
        memcpy(f->text + GW_REPLY_TEXT_MAX - 3, "...", 4);
}

void gw_fmt_binary(char *out, size_t cap, const uint8_t *p, size_t len, size_t max)
{
    size_t at = 0;
    int n;

    if (cap == 0)
        return;
    out[0] = '\0';
    n = snprintf(out, cap, "<<");
    at = n > 0 ? (size_t)n : 0;
    for (size_t k = 0; k < len && k < max && at < cap; k++) {
        n = snprintf(out + at, cap - at, k == 0 ? "%u" : ",%u", p[k]);
        at += n > 0 ? (size_t)n : 0;
    }
    if (at < cap)
        snprintf(out + at, cap - at, "%s>>", len > max ? ",..." : "");
}

/* RabbitMQ's fatal frame error text. */
static void frame_fault(gw_fault_t *f, uint8_t type, const uint8_t *payload, size_t len,
                        const char *reason)
{
    char bin[160];
    gw_fmt_binary(bin, sizeof bin, payload, len, 16);
    gw_fault_set(f, GW_FRAME_ERROR, 0, 0, "type %u, %s octets = %s: %s", type,
                 len > 16 ? "first 16" : "all", bin, reason);
}

gw_header_rc_t gw_header_check(const uint8_t *buf, size_t len)
{
    size_t n = len < GW_HEADER_LEN ? len : GW_HEADER_LEN;
    if (n > 0 && memcmp(buf, gw_protocol_header, n) != 0)
        return GW_HEADER_BAD;
    return len >= GW_HEADER_LEN ? GW_HEADER_OK : GW_HEADER_AGAIN;
}

gt_err_t gw_frame_decode(const uint8_t *buf, size_t len, uint32_t frame_max, gw_frame_t *out,
                         size_t *used, gw_fault_t *fault)
{
    char why[96];

    if (len < 7) {
        *used = 7;
        return GT_AGAIN;
    }
    uint8_t type = buf[0];
    uint16_t ch = gw_get_u16(buf + 1);
    uint32_t size = gw_get_u32(buf + 3);

    if (type != GW_FRAME_METHOD && type != GW_FRAME_HEADER && type != GW_FRAME_BODY &&
        type != GW_FRAME_HEARTBEAT) {
        gw_fault_set(fault, GW_FRAME_ERROR, 0, 0, "type %u, unknown frame type", type);
        return GT_EINVAL;
    }
    if (frame_max != 0 && size > frame_max) {
        snprintf(why, sizeof why, "{frame_too_large,%u,%u}", size,
                 frame_max > GW_FRAME_OVERHEAD ? frame_max - GW_FRAME_OVERHEAD : 0);
        frame_fault(fault, type, NULL, 0, why);
        return GT_EINVAL;
    }
    if (len - 7 < (size_t)size + 1) {
        *used = (size_t)size + GW_FRAME_OVERHEAD;
        return GT_AGAIN;
    }
    const uint8_t *payload = buf + 7;
    uint8_t end = payload[size];
    if (end != GW_FRAME_END) {
        snprintf(why, sizeof why, "{invalid_frame_end_marker,%u}", end);
        frame_fault(fault, type, payload, size, why);
        return GT_EINVAL;
    }
    if (type == GW_FRAME_HEARTBEAT && (size != 0 || ch != 0)) {
        if (size != 0)
            frame_fault(fault, type, payload, size, "unknown_frame");
        else
            gw_fault_set(fault, GW_FRAME_ERROR, 0, 0, "heartbeat on channel %u", ch);
        return GT_EINVAL;
    }
    if ((type == GW_FRAME_METHOD && size < 4) || (type == GW_FRAME_HEADER && size < 14)) {
        frame_fault(fault, type, payload, size, "unknown_frame");
        return GT_EINVAL;
    }
    out->type = type;
    out->channel = ch;
    out->size = size;
    out->payload = payload;
    *used = (size_t)size + GW_FRAME_OVERHEAD;
    return GT_OK;
}

void gw_frame_put_header(uint8_t *buf, uint8_t type, uint16_t channel, uint32_t size)
{
    buf[0] = type;
    gw_put_u16(buf + 1, channel);
    gw_put_u32(buf + 3, size);
}

gt_err_t gw_frame_encode(uint8_t type, uint16_t channel, const void *payload, uint32_t size,
                         uint8_t *buf, size_t cap, size_t *len)
{
    if (cap < (size_t)size + GW_FRAME_OVERHEAD)
        return GT_ERANGE;
    gw_frame_put_header(buf, type, channel, size);
    if (size > 0)
        memcpy(buf + 7, payload, size);
    buf[7 + size] = GW_FRAME_END;
    *len = (size_t)size + GW_FRAME_OVERHEAD;
    return GT_OK;
}

/* ---- incremental parser --------------------------------------------- */

static size_t parser_limit(const gw_parser_t *p)
{
    uint32_t fm = p->frame_max != 0 ? p->frame_max : GW_PARSER_HARD_MAX;
    return (size_t)fm + GW_FRAME_OVERHEAD;
}

void gw_parser_init(gw_parser_t *p, uint32_t frame_max, bool expect_header)
{
    memset(p, 0, sizeof *p);
    p->frame_max = frame_max;
    p->expect_header = expect_header;
}

void gw_parser_free(gw_parser_t *p)
{
    free(p->buf);
    p->buf = NULL;
    p->cap = p->len = p->off = 0;
}

void gw_parser_set_frame_max(gw_parser_t *p, uint32_t frame_max)
{
    p->frame_max = frame_max;
}

/* How many bytes the parser wants in all (from off) to make progress. */
static size_t parser_want(const gw_parser_t *p)
{
    size_t have = p->len - p->off;

    if (p->expect_header)
        return GW_HEADER_LEN;
    if (have < 7)
        return 7;
    uint32_t size = gw_get_u32(p->buf + p->off + 3);
    size_t need = (size_t)size + GW_FRAME_OVERHEAD;
    /* An oversized header is refused by gw_parser_next as soon as the 7
     * header bytes are in; do not ask for its payload. */
    return need <= parser_limit(p) ? need : 7;
}

size_t gw_parser_feed(gw_parser_t *p, const uint8_t *data, size_t len)
{
    size_t taken = 0;

    if (p->failed)
        return 0;
    while (taken < len) {
        size_t have = p->len - p->off, want = parser_want(p);
        if (have >= want)
            break; /* a complete unit waits for gw_parser_next */
        size_t n = want - have;
        if (n > len - taken)
            n = len - taken;
        if (p->off > 0 && p->cap - p->len < n) {
            memmove(p->buf, p->buf + p->off, have);
            p->len = have;
            p->off = 0;
        }
        if (p->cap - p->len < n) {
            size_t ncap = p->cap != 0 ? p->cap : 4096 + GW_FRAME_OVERHEAD;
            while (ncap < p->len + n)
                ncap *= 2;
            if (ncap > parser_limit(p) && parser_limit(p) >= p->len + n)
                ncap = parser_limit(p);
            uint8_t *nb = realloc(p->buf, ncap);
            if (nb == NULL) {
                p->failed = true;
                p->fault.code = 0; /* GT_ENOMEM, not a protocol error */
                return taken;
            }
            p->buf = nb;
            p->cap = ncap;
        }
        memcpy(p->buf + p->len, data + taken, n);
        p->len += n;
        taken += n;
    }
    return taken;
}

gt_err_t gw_parser_next(gw_parser_t *p, gw_frame_t *out, gw_fault_t *fault)
{
    size_t used = 0, have;
    gt_err_t rc;

    if (p->failed) {
        if (p->fault.code == 0 && !p->fault.bad_header)
            return GT_ENOMEM;
        if (fault != NULL)
            *fault = p->fault;
        return GT_EINVAL;
    }
    have = p->len - p->off;
    if (p->buf == NULL)
        return GT_AGAIN; /* nothing fed yet (and no pointer to offset) */
    if (p->expect_header) {
        gw_header_rc_t h = gw_header_check(p->buf + p->off, have);
        if (h == GW_HEADER_AGAIN)
            return GT_AGAIN;
        if (h == GW_HEADER_BAD) {
            memset(&p->fault, 0, sizeof p->fault);
            p->fault.bad_header = true;
            snprintf(p->fault.text, sizeof p->fault.text, "bad protocol header");
            p->failed = true;
            if (fault != NULL)
                *fault = p->fault;
            return GT_EINVAL;
        }
        p->expect_header = false;
        p->off += GW_HEADER_LEN;
        memset(out, 0, sizeof *out);
        return GT_OK;
    }
    rc = gw_frame_decode(p->buf + p->off, have, p->frame_max != 0 ? p->frame_max : GW_PARSER_HARD_MAX,
                         out, &used, &p->fault);
    if (rc == GT_EINVAL) {
        p->failed = true;
        if (fault != NULL)
            *fault = p->fault;
        return rc;
    }
    if (rc == GT_AGAIN) {
        if (p->off == p->len)
            p->off = p->len = 0; /* drained: start the next frame at 0 */
        return rc;
    }
    p->off += used;
    return GT_OK;
}
