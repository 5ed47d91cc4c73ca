/* Queue arguments: parse, validate and compare queue.declare's x-*
 * arguments as RabbitMQ 3.10 does (see gw_qargs.h; the texts were checked
 * against RabbitMQ 3.10.8, tests/integration/amqp_qargs.test.mjs). */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_qargs.h"

const char *gw_qargs_type_name(char type)
{
    switch (type) {
    case 'S': return "longstr";
    case 'I': return "signedint";
    case 'T': return "timestamp";
    case 'F': return "table";
    case 'A': return "array";
    case 'b': return "byte";
    case 'B': return "unsignedbyte";
    case 'd': return "double";
    case 'f': return "float";
    case 'l':
    case 'L': return "long";
    case 's': return "short";
    case 'u': return "unsignedshort";
    case 'i': return "unsignedint";
    case 't': return "bool";
    case 'x': return "binary";
    case 'V': return "void";
    case 'D': return "decimal";
    default: return "unknown";
    }
}

/* ---- the checks -------------------------------------------------------- */

typedef enum {
    CK_EXPIRES,      /* int, > 0, <= max */
    CK_TTL,          /* int, >= 0, <= max */
    CK_DLX,          /* longstr (type checked first, by the channel) */
    CK_DLRK,         /* longstr; needs a DLX */
    CK_NONNEG,       /* int >= 0 */
    CK_PRIORITY,     /* int 0..255 */
    CK_OVERFLOW,     /* drop-head | reject-publish | reject-publish-dlx */
    CK_MODE,         /* default | lazy */
    CK_BOOL,         /* bool */
    CK_TYPE,         /* classic | quorum */
    CK_NONE,         /* compared only */
} check_t;

typedef struct {
    const char *key;
    check_t check;
} arg_t;

/* RabbitMQ's declare_args order (checks and comparisons go in it). */
static const arg_t args_order[] = {
    {"x-expires", CK_EXPIRES},
    {"x-message-ttl", CK_TTL},
    {"x-dead-letter-exchange", CK_DLX},
    {"x-dead-letter-routing-key", CK_DLRK},
    {"x-max-length", CK_NONNEG},
    {"x-max-length-bytes", CK_NONNEG},
    {"x-max-priority", CK_PRIORITY},
    {"x-overflow", CK_OVERFLOW},
    {"x-queue-mode", CK_MODE},
    {"x-single-active-consumer", CK_BOOL},
    {"x-queue-type", CK_TYPE},
    {"x-delivery-limit", CK_NONE},
    {"x-queue-master-locator", CK_NONE},
};

/* Arguments a queue type refuses ("invalid arg ... of queue type"). */
static const char *const classic_refuses[] = {
    "x-delivery-limit", "x-max-in-memory-length", "x-max-in-memory-bytes",
    "x-dead-letter-strategy", "x-queue-leader-locator", "x-max-age",
    "x-stream-max-segment-size-bytes", "x-initial-cluster-size", "x-quorum-initial-group-size",
    NULL,
};
static const char *const quorum_refuses[] = {
    "x-max-priority", "x-queue-mode", "x-queue-master-locator", "x-max-age",
    "x-stream-max-segment-size-bytes", "x-initial-cluster-size", NULL,
};

static bool in_list(const char *const *l, gw_str_t k)
{
    for (; *l != NULL; l++)
        if (gw_str_eq(k, *l))
            return true;
    return false;
}

static void fail(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void fail(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;

    if (cap == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

#define INVALID(fmt, ...)                                                                      \
    fail(err, cap, "invalid arg '%s' for queue '%.*s' in vhost '%s': " fmt, key,             \
         (int)qname.len, qname.ptr, vhost, __VA_ARGS__)

static bool str_is(const gw_value_t *v, const char *s)
{
    size_t n = strlen(s);

    return v->type == 'S' && v->v.bytes.len == n && memcmp(v->v.bytes.ptr, s, n) == 0;
}

/* One generic check (RabbitMQ's check functions).  Fills out. */
static bool check_one(const arg_t *a, const gw_value_t *v, gw_qargs_t *out, gw_str_t qname,
                      const char *vhost, char *err, size_t cap)
{
    const char *key = a->key;
    int64_t n = 0;
    bool isint = gw_value_int(v, &n);

    switch (a->check) {
    case CK_EXPIRES:
    case CK_TTL:
    case CK_NONNEG:
    case CK_PRIORITY:
        if (!isint) {
            INVALID("\"expected integer, got %s\"", gw_qargs_type_name(v->type));
            return false;
        }
        if (n < 0) {
            INVALID("{value_negative,%" PRId64 "}", n);
            return false;
        }
        if (a->check == CK_EXPIRES && n == 0) {
            INVALID("{value_zero,%" PRId64 "}", n);
            return false;
        }
        if ((a->check == CK_EXPIRES || a->check == CK_TTL) && n > GW_QARGS_MAX_EXPIRY) {
            INVALID("{value_too_large,%" PRId64 "}", n);
            return false;
        }
        if (a->check == CK_PRIORITY && n > 255) {
            INVALID("{max_value_exceeded,%" PRId64 "}", n);
            return false;
        }
        if (a->check == CK_EXPIRES) {
            out->has_expires = true;
            out->expires = n;
        } else if (a->check == CK_TTL) {
            out->has_message_ttl = true;
            out->message_ttl = n;
        } else if (a->check == CK_PRIORITY) {
            out->has_max_priority = true;
            out->max_priority = (uint8_t)n;
        } else if (strcmp(key, "x-max-length") == 0) {
            out->has_max_length = true;
            out->max_length = n;
        } else if (strcmp(key, "x-max-length-bytes") == 0) {
            out->has_max_length_bytes = true;
            out->max_length_bytes = n;
        }
        return true;
    case CK_DLX:
        /* the type was checked first (RabbitMQ's channel does it) */
        out->has_dlx = true;
        out->dlx_len = (uint8_t)(v->v.bytes.len > 255 ? 255 : v->v.bytes.len);
        memcpy(out->dlx, v->v.bytes.ptr, out->dlx_len);
        return true;
    case CK_DLRK:
        if (v->type != 'S') {
            INVALID("{unacceptable_type,%s}", gw_qargs_type_name(v->type));
            return false;
        }
        if (!out->has_dlx) {
            INVALID("%s", "routing_key_but_no_dlx_defined");
            return false;
        }
        out->has_dlrk = true;
        out->dlrk_len = (uint8_t)(v->v.bytes.len > 255 ? 255 : v->v.bytes.len);
        memcpy(out->dlrk, v->v.bytes.ptr, out->dlrk_len);
        return true;
    case CK_OVERFLOW:
        if (v->type != 'S') {
            INVALID("{unacceptable_type,%s}", gw_qargs_type_name(v->type));
            return false;
        }
        if (str_is(v, "drop-head"))
            out->overflow = GW_OVERFLOW_DROP_HEAD;
        else if (str_is(v, "reject-publish"))
            out->overflow = GW_OVERFLOW_REJECT_PUBLISH;
        else if (str_is(v, "reject-publish-dlx"))
            out->overflow = GW_OVERFLOW_REJECT_PUBLISH_DLX;
        else {
            INVALID("%s", "invalid_overflow");
            return false;
        }
        return true;
    case CK_MODE:
        if (v->type != 'S') {
            INVALID("{unacceptable_type,%s}", gw_qargs_type_name(v->type));
            return false;
        }
        if (!str_is(v, "default") && !str_is(v, "lazy")) {
            INVALID("\"unsupported queue mode '%.*s'\"", (int)v->v.bytes.len,
                    (const char *)v->v.bytes.ptr);
            return false;
        }
        out->lazy = str_is(v, "lazy");
        return true;
    case CK_BOOL:
        if (v->type != 't') {
            INVALID("{unacceptable_type,%s}", gw_qargs_type_name(v->type));
            return false;
        }
        out->single_active_consumer = v->v.i != 0;
        return true;
    case CK_TYPE:
    case CK_NONE:
        return true;
    }
    return true;
}

static bool keep_raw(gw_table_t args, gw_qargs_t *out)
{
    if (args.len == 0)
        return true;
    if ((out->raw = malloc(args.len)) == NULL)
        return false;
    memcpy(out->raw, args.ptr, args.len);
    out->raw_len = args.len;
    return true;
}

bool gw_qargs_parse(gw_table_t args, gw_str_t qname, const char *vhost, bool durable,
                    bool exclusive, bool auto_delete, gw_qargs_t *out, char *err, size_t cap)
{
    gw_value_t v;
    gw_table_iter_t it;
    gw_str_t k;

    memset(out, 0, sizeof(*out));
    /* 1. the DLX's type (RabbitMQ's channel checks it before the queue) */
    if (gw_table_get(args, "x-dead-letter-exchange", &v) && v.type != 'S') {
        fail(err, cap, "invalid type '%s' for arg 'x-dead-letter-exchange' in queue '%.*s' in "
                       "vhost '%s'",
             gw_qargs_type_name(v.type), (int)qname.len, qname.ptr, vhost);
        return false;
    }
    /* 2. the queue type */
    if (gw_table_get(args, "x-queue-type", &v)) {
        const char *key = "x-queue-type";
        if (v.type != 'S') {
            INVALID("{unacceptable_type,%s}", gw_qargs_type_name(v.type));
            return false;
        }
        if (str_is(&v, "quorum")) {
            out->type = GW_QTYPE_QUORUM;
        } else if (!str_is(&v, "classic")) {
            /* RabbitMQ 3.10 also has "stream"; Gantry has no streams */
            INVALID("\"unsupported queue type '%.*s'\"", (int)v.v.bytes.len,
                    (const char *)v.v.bytes.ptr);
            return false;
        }
    }
    /* 3. the generic checks, in RabbitMQ's order */
    for (size_t i = 0; i < sizeof(args_order) / sizeof(args_order[0]); i++)
        if (gw_table_get(args, args_order[i].key, &v) &&
            !check_one(&args_order[i], &v, out, qname, vhost, err, cap))
            return false;
    /* 4. what the queue type does not take, in wire order */
    gw_table_iter_init(&it, args);
    while (gw_table_iter_next(&it, &k, &v)) {
        const char *const *refuses =
            out->type == GW_QTYPE_QUORUM ? quorum_refuses : classic_refuses;
        if (in_list(refuses, k)) {
            fail(err, cap, "invalid arg '%.*s' for queue '%.*s' in vhost '%s' of queue type %s",
                 (int)k.len, k.ptr, (int)qname.len, qname.ptr, vhost,
                 out->type == GW_QTYPE_QUORUM ? "rabbit_quorum_queue" : "rabbit_classic_queue");
            return false;
        }
    }
    /* 5. the values only the queue type reads */
    if (out->type == GW_QTYPE_QUORUM && gw_table_get(args, "x-delivery-limit", &v) &&
        gw_value_int(&v, &out->delivery_limit))
        out->has_delivery_limit = true;
    if (out->type == GW_QTYPE_CLASSIC && gw_table_get(args, "x-queue-master-locator", &v)) {
        /* RabbitMQ 3.10 fails with 541 INTERNAL_ERROR on a bad value: a 406 here */
        const char *key = "x-queue-master-locator";
        if (v.type != 'S') {
            INVALID("{unacceptable_type,%s}", gw_qargs_type_name(v.type));
            return false;
        }
        if (!str_is(&v, "min-masters") && !str_is(&v, "client-local") &&
            !str_is(&v, "random")) {
            INVALID("\"'%.*s' invalid queue-master-locator value\"", (int)v.v.bytes.len,
                    (const char *)v.v.bytes.ptr);
            return false;
        }
    }
    /* 6. quorum queues' properties */
    if (out->type == GW_QTYPE_QUORUM) {
        const char *bad = auto_delete ? "auto-delete"
                          : exclusive ? "exclusive-owner"
                          : !durable  ? "non-durable"
                                      : NULL;
        if (bad != NULL) {
            fail(err, cap, "invalid property '%s' for queue '%.*s' in vhost '%s'", bad,
                 (int)qname.len, qname.ptr, vhost);
            return false;
        }
    }
    if (!keep_raw(args, out)) {
        fail(err, cap, "out of memory");
        return false;
    }
    return true;
}

bool gw_qargs_load(const uint8_t *raw, size_t len, gw_qargs_t *out)
{
    gw_table_t t = {len > 0 ? raw : NULL, len};
    char err[256];

    memset(out, 0, sizeof(*out));
    if (len > 0 && gw_table_validate(raw, len) != GT_OK)
        return false;
    if (gw_qargs_parse(t, gw_str("-"), "/", true, false, false, out, err, sizeof(err)))
        return true;
    /* Refused now (not expected for what this gateway wrote): kept as
     * declared with the defaults. */
    memset(out, 0, sizeof(*out));
    return keep_raw(t, out);
}

gw_table_t gw_qargs_table(const gw_qargs_t *a)
{
    return (gw_table_t){a->raw, a->raw_len};
}

void gw_qargs_free(gw_qargs_t *a)
{
    free(a->raw);
    a->raw = NULL;
    a->raw_len = 0;
}

/* ---- redeclare --------------------------------------------------------- */

/* A value as RabbitMQ prints it with ~s / ~p (integers, strings, bools;
 * the rest by type name, as they never match anyway). */
static void val_text(const gw_value_t *v, char *buf, size_t cap)
{
    int64_t n;

    if (gw_value_int(v, &n))
        snprintf(buf, cap, "%" PRId64, n);
    else if (v->type == 'S' || v->type == 'x')
        snprintf(buf, cap, "%.*s", (int)(v->v.bytes.len > 200 ? 200 : v->v.bytes.len),
                 (const char *)v->v.bytes.ptr);
    else if (v->type == 't')
        snprintf(buf, cap, "%s", v->v.i ? "true" : "false");
    else if (v->type == 'd')
        snprintf(buf, cap, "%g", v->v.d);
    else if (v->type == 'f')
        snprintf(buf, cap, "%g", (double)v->v.f);
    else if (v->type == 'T')
        snprintf(buf, cap, "%" PRIu64, v->v.u);
    else
        snprintf(buf, cap, "%s", gw_qargs_type_name(v->type));
}

static bool same_value(const gw_value_t *a, const gw_value_t *b)
{
    int64_t x, y;

    if (gw_value_int(a, &x) && gw_value_int(b, &y))
        return x == y;
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case 'S':
    case 'x':
        return a->v.bytes.len == b->v.bytes.len &&
               (a->v.bytes.len == 0 || memcmp(a->v.bytes.ptr, b->v.bytes.ptr, a->v.bytes.len) == 0);
    case 'F':
    case 'A':
        return a->v.table.len == b->v.table.len &&
               (a->v.table.len == 0 || memcmp(a->v.table.ptr, b->v.table.ptr, a->v.table.len) == 0);
    case 't':
        return (a->v.i != 0) == (b->v.i != 0);
    case 'd':
        return a->v.d == b->v.d;
    case 'f':
        return a->v.f == b->v.f;
    case 'T':
        return a->v.u == b->v.u;
    case 'D':
        return a->v.dec.scale == b->v.dec.scale && a->v.dec.value == b->v.dec.value;
    default:
        return true; /* void */
    }
}

bool gw_qargs_equivalent(const gw_qargs_t *cur, gw_table_t args, gw_str_t qname,
                         const char *vhost, char *err, size_t cap)
{
    gw_table_t have = gw_qargs_table(cur);

    for (size_t i = 0; i < sizeof(args_order) / sizeof(args_order[0]); i++) {
        const char *key = args_order[i].key;
        gw_value_t a, b;
        bool ha = gw_table_get(have, key, &a), hb = gw_table_get(args, key, &b);
        char ta[256], tb[256];
        if (args_order[i].check == CK_TYPE) {
            /* no x-queue-type is a classic queue */
            if (!ha && hb && str_is(&b, "classic"))
                continue;
            if (ha && !hb && str_is(&a, "classic"))
                continue;
        }
        if (!ha && !hb)
            continue;
        if (ha && hb && same_value(&a, &b))
            continue;
        if (ha)
            val_text(&a, ta, sizeof(ta));
        if (hb)
            val_text(&b, tb, sizeof(tb));
        if (ha && hb)
            fail(err, cap,
                 "inequivalent arg '%s' for queue '%.*s' in vhost '%s': received '%s' but "
                 "current is '%s'",
                 key, (int)qname.len, qname.ptr, vhost, tb, ta);
        else if (ha)
            fail(err, cap,
                 "inequivalent arg '%s' for queue '%.*s' in vhost '%s': received none but "
                 "current is the value '%s' of type '%s'",
                 key, (int)qname.len, qname.ptr, vhost, ta, gw_qargs_type_name(a.type));
        else
            fail(err, cap,
                 "inequivalent arg '%s' for queue '%.*s' in vhost '%s': received the value '%s' "
                 "of type '%s' but current is none",
                 key, (int)qname.len, qname.ptr, vhost, tb, gw_qargs_type_name(b.type));
        return false;
    }
    return true;
}
