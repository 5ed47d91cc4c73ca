/* Field tables and field arrays (AMQP 0-9-1 with RabbitMQ's type
 * letters, which are not the spec's: see gw_codec.h's gw_value_t).
 *
 * A table stays in its wire form.  gw_table_validate walks it once,
 * recursively but at most GW_TABLE_MAX_DEPTH deep, checking every length
 * against what is left of the enclosing table; afterwards lookups and
 * iterators re-read it without checks that could fail, and re-encoding is
 * a copy.  The builder writes the same form into a caller buffer, with
 * length words patched when a nested table or array ends. */
#include <stdio.h>
#include <string.h>

#include "gw_codec.h"
#include "gw_wire.h"

static bool table_walk(const uint8_t *p, size_t len, bool array, int depth);

/* Reads one value of type t.  Nested bodies are validated when depth >= 0
 * (depth = how deep they sit); with depth < 0 they are trusted (already
 * validated). */
bool gw_value_read(gw_rd_t *r, char t, gw_value_t *v, int depth)
{
    const uint8_t *q;
    uint32_t n;

    v->type = t;
    switch (t) {
    case 't':
        v->v.i = gw_rd_u8(r);
        break;
    case 'b':
        v->v.i = (int8_t)gw_rd_u8(r);
        break;
    case 'B':
        v->v.u = gw_rd_u8(r);
        break;
    case 's':
        v->v.i = (int16_t)gw_rd_u16(r);
        break;
    case 'u':
        v->v.u = gw_rd_u16(r);
        break;
    case 'I':
        v->v.i = (int32_t)gw_rd_u32(r);
        break;
    case 'i':
        v->v.u = gw_rd_u32(r);
        break;
    case 'l':
    case 'L':
        v->v.i = (int64_t)gw_rd_u64(r);
        break;
    case 'T':
        v->v.u = gw_rd_u64(r);
        break;
    case 'f': {
        uint32_t bits = gw_rd_u32(r);
        memcpy(&v->v.f, &bits, sizeof bits);
        break;
    }
    case 'd': {
        uint64_t bits = gw_rd_u64(r);
        memcpy(&v->v.d, &bits, sizeof bits);
        break;
    }
    case 'D':
        v->v.dec.scale = gw_rd_u8(r);
        v->v.dec.value = gw_rd_u32(r);
        break;
    case 'S':
    case 'x':
        n = gw_rd_u32(r);
        q = gw_rd_take(r, n);
        v->v.bytes = (gw_bytes_t){q, q != NULL ? n : 0};
        break;
    case 'F':
    case 'A':
        n = gw_rd_u32(r);
        q = gw_rd_take(r, n);
        v->v.table = (gw_table_t){q, q != NULL ? n : 0};
        if (q != NULL && depth >= 0 && !table_walk(q, n, t == 'A', depth + 1))
            return false;
        break;
    case 'V':
        memset(&v->v, 0, sizeof v->v);
        break;
    default:
        return false;
    }
    return r->ok;
}

/* Validates a table (or array) body nested depth levels deep. */
static bool table_walk(const uint8_t *p, size_t len, bool array, int depth)
{
    gw_rd_t r = gw_rd(p, len);
    gw_value_t v;

    if (depth > GW_TABLE_MAX_DEPTH)
        return false;
    while (r.ok && gw_rd_left(&r) > 0) {
        if (!array) {
            uint8_t klen = gw_rd_u8(&r);
            (void)gw_rd_take(&r, klen);
        }
        char t = (char)gw_rd_u8(&r);
        if (!r.ok || !gw_value_read(&r, t, &v, depth))
            return false;
    }
    return r.ok;
}

gt_err_t gw_table_validate(const uint8_t *buf, size_t len)
{
    if (len > 0 && buf == NULL)
        return GT_EINVAL;
    return table_walk(buf, len, false, 1) ? GT_OK : GT_EINVAL;
}

gt_err_t gw_array_validate(const uint8_t *buf, size_t len)
{
    if (len > 0 && buf == NULL)
        return GT_EINVAL;
    return table_walk(buf, len, true, 1) ? GT_OK : GT_EINVAL;
}

void gw_table_iter_init(gw_table_iter_t *it, gw_table_t t)
{
    it->p = t.ptr;
    it->end = t.ptr != NULL ? t.ptr + t.len : NULL;
}

bool gw_table_iter_next(gw_table_iter_t *it, gw_str_t *key, gw_value_t *val)
{
    if (it->p == NULL || it->p >= it->end)
        return false;
    gw_rd_t r = gw_rd(it->p, (size_t)(it->end - it->p));
    uint8_t klen = gw_rd_u8(&r);
    const uint8_t *k = gw_rd_take(&r, klen);
    char t = (char)gw_rd_u8(&r);
    if (!r.ok || !gw_value_read(&r, t, val, -1)) {
        it->p = it->end; /* not validated: stop rather than misread */
        return false;
    }
    key->ptr = (const char *)k;
    key->len = klen;
    it->p = r.p;
    return true;
}

bool gw_array_iter_next(gw_table_iter_t *it, gw_value_t *val)
{
    if (it->p == NULL || it->p >= it->end)
        return false;
    gw_rd_t r = gw_rd(it->p, (size_t)(it->end - it->p));
    char t = (char)gw_rd_u8(&r);
    if (!r.ok || !gw_value_read(&r, t, val, -1)) {
        it->p = it->end;
        return false;
    }
    it->p = r.p;
    return true;
}

bool gw_table_get(gw_table_t t, const char *key, gw_value_t *val)
{
    gw_table_iter_t it;
    gw_str_t k;
    gw_value_t v;

    gw_table_iter_init(&it, t);
    while (gw_table_iter_next(&it, &k, &v)) {
        if (gw_str_eq(k, key)) {
            *val = v;
            return true;
        }
    }
    return false;
}

size_t gw_table_count(gw_table_t t)
{
    gw_table_iter_t it;
    gw_str_t k;
    gw_value_t v;
    size_t n = 0;

    gw_table_iter_init(&it, t);
    while (gw_table_iter_next(&it, &k, &v))
        n++;
    return n;
}

size_t gw_array_count(gw_array_t a)
{
    gw_table_iter_t it;
    gw_value_t v;
    size_t n = 0;

    gw_table_iter_init(&it, a);
    while (gw_array_iter_next(&it, &v))
        n++;
    return n;
}

bool gw_value_int(const gw_value_t *v, int64_t *out)
{
    switch (v->type) {
    case 'b':
    case 's':
    case 'I':
    case 'l':
    case 'L':
        *out = v->v.i;
        return true;
    case 'B':
    case 'u':
    case 'i':
        *out = (int64_t)v->v.u;
        return true;
    default:
        return false;
    }
}

gw_str_t gw_str(const char *s)
{
    return (gw_str_t){s != NULL ? s : "", s != NULL ? strlen(s) : 0};
}

bool gw_str_eq(gw_str_t s, const char *c)
{
    size_t n = strlen(c);
    return s.len == n && (n == 0 || memcmp(s.ptr, c, n) == 0);
}

/* ---- builder -------------------------------------------------------- */

void gw_tbuild_init(gw_tbuild_t *b, uint8_t *buf, size_t cap)
{
    memset(b, 0, sizeof *b);
    b->buf = buf;
    b->cap = buf != NULL ? cap : 0;
}

static uint8_t *tb_room(gw_tbuild_t *b, size_t n)
{
    if (b->overflow || b->cap - b->len < n) {
        b->overflow = true;
        return NULL;
    }
    uint8_t *q = b->buf + b->len;
    b->len += n;
    return q;
}

/* Writes the key (or checks there is none inside an array) and the type
 * letter, then returns room for n value bytes (NULL on overflow). */
static uint8_t *tb_entry(gw_tbuild_t *b, const char *key, size_t klen, char t, size_t n)
{
    bool in_array = b->is_array[b->depth];
    if (b->overflow)
        return NULL; /* already failed; levels may be off, check nothing */
    if (in_array != (key == NULL) || klen > 255) {
        b->misuse = true;
        return NULL;
    }
    uint8_t *q = tb_room(b, (in_array ? 0 : 1 + klen) + 1 + n);
    if (q == NULL)
        return NULL;
    if (!in_array) {
        *q++ = (uint8_t)klen;
        if (klen > 0)
            memcpy(q, key, klen);
        q += klen;
    }
    *q++ = (uint8_t)t;
    return q;
}

static uint8_t *tb_put(gw_tbuild_t *b, const char *key, char t, size_t n)
{
    return tb_entry(b, key, key != NULL ? strlen(key) : 0, t, n);
}

void gw_tbuild_bool(gw_tbuild_t *b, const char *key, bool v)
{
    uint8_t *q = tb_put(b, key, 't', 1);
    if (q != NULL)
        q[0] = v ? 1 : 0;
}

void gw_tbuild_int8(gw_tbuild_t *b, const char *key, int8_t v)
{
    uint8_t *q = tb_put(b, key, 'b', 1);
    if (q != NULL)
        q[0] = (uint8_t)v;
}

void gw_tbuild_uint8(gw_tbuild_t *b, const char *key, uint8_t v)
{
    uint8_t *q = tb_put(b, key, 'B', 1);
    if (q != NULL)
        q[0] = v;
}

void gw_tbuild_int16(gw_tbuild_t *b, const char *key, int16_t v)
{
    uint8_t *q = tb_put(b, key, 's', 2);
    if (q != NULL)
        gw_put_u16(q, (uint16_t)v);
}

void gw_tbuild_uint16(gw_tbuild_t *b, const char *key, uint16_t v)
{
    uint8_t *q = tb_put(b, key, 'u', 2);
    if (q != NULL)
        gw_put_u16(q, v);
}

void gw_tbuild_int32(gw_tbuild_t *b, const char *key, int32_t v)
{
    uint8_t *q = tb_put(b, key, 'I', 4);
    if (q != NULL)
        gw_put_u32(q, (uint32_t)v);
}

void gw_tbuild_uint32(gw_tbuild_t *b, const char *key, uint32_t v)
{
    uint8_t *q = tb_put(b, key, 'i', 4);
    if (q != NULL)
        gw_put_u32(q, v);
}

void gw_tbuild_int64(gw_tbuild_t *b, const char *key, int64_t v)
{
    uint8_t *q = tb_put(b, key, 'l', 8);
    if (q != NULL)
        gw_put_u64(q, (uint64_t)v);
}

void gw_tbuild_float(gw_tbuild_t *b, const char *key, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    uint8_t *q = tb_put(b, key, 'f', 4);
    if (q != NULL)
        gw_put_u32(q, bits);
}

void gw_tbuild_double(gw_tbuild_t *b, const char *key, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    uint8_t *q = tb_put(b, key, 'd', 8);
    if (q != NULL)
        gw_put_u64(q, bits);
}

void gw_tbuild_decimal(gw_tbuild_t *b, const char *key, uint8_t scale, uint32_t value)
{
    uint8_t *q = tb_put(b, key, 'D', 5);
    if (q != NULL) {
        q[0] = scale;
        gw_put_u32(q + 1, value);
    }
}

void gw_tbuild_timestamp(gw_tbuild_t *b, const char *key, uint64_t v)
{
    uint8_t *q = tb_put(b, key, 'T', 8);
    if (q != NULL)
        gw_put_u64(q, v);
}

void gw_tbuild_void(gw_tbuild_t *b, const char *key)
{
    (void)tb_put(b, key, 'V', 0);
}

static void tb_blob(gw_tbuild_t *b, const char *key, size_t klen, char t, const void *p, size_t len)
{
    if (b->overflow)
        return;
    if (len > UINT32_MAX || (len > 0 && p == NULL)) {
        b->misuse = true;
        return;
    }
    uint8_t *q = tb_entry(b, key, klen, t, 4 + len);
    if (q == NULL)
        return;
    gw_put_u32(q, (uint32_t)len);
    if (len > 0)
        memcpy(q + 4, p, len);
}

void gw_tbuild_longstr(gw_tbuild_t *b, const char *key, const void *p, size_t len)
{
    tb_blob(b, key, key != NULL ? strlen(key) : 0, 'S', p, len);
}

void gw_tbuild_string(gw_tbuild_t *b, const char *key, const char *s)
{
    gw_tbuild_longstr(b, key, s, s != NULL ? strlen(s) : 0);
}

void gw_tbuild_bytes(gw_tbuild_t *b, const char *key, const void *p, size_t len)
{
    tb_blob(b, key, key != NULL ? strlen(key) : 0, 'x', p, len);
}

void gw_tbuild_value_k(gw_tbuild_t *b, gw_str_t key, const gw_value_t *v)
{
    const char *k = key.ptr;
    size_t kl = key.len;
    size_t n;
    uint8_t *q;

    switch (v->type) {
    case 't':
    case 'b':
    case 'B':
        q = tb_entry(b, k, kl, v->type, 1);
        if (q != NULL)
            q[0] = (uint8_t)(v->type == 'B' ? v->v.u : (uint64_t)v->v.i);
        return;
    case 's':
    case 'u':
        q = tb_entry(b, k, kl, v->type, 2);
        if (q != NULL)
            gw_put_u16(q, (uint16_t)(v->type == 'u' ? v->v.u : (uint64_t)v->v.i));
        return;
    case 'I':
    case 'i':
        q = tb_entry(b, k, kl, v->type, 4);
        if (q != NULL)
            gw_put_u32(q, (uint32_t)(v->type == 'i' ? v->v.u : (uint64_t)v->v.i));
        return;
    case 'l':
    case 'L':
    case 'T':
        q = tb_entry(b, k, kl, v->type, 8);
        if (q != NULL)
            gw_put_u64(q, v->type == 'T' ? v->v.u : (uint64_t)v->v.i);
        return;
    case 'f': {
        uint32_t bits;
        memcpy(&bits, &v->v.f, sizeof bits);
        q = tb_entry(b, k, kl, 'f', 4);
        if (q != NULL)
            gw_put_u32(q, bits);
        return;
    }
    case 'd': {
        uint64_t bits;
        memcpy(&bits, &v->v.d, sizeof bits);
        q = tb_entry(b, k, kl, 'd', 8);
        if (q != NULL)
            gw_put_u64(q, bits);
        return;
    }
    case 'D':
        q = tb_entry(b, k, kl, 'D', 5);
        if (q != NULL) {
            q[0] = v->v.dec.scale;
            gw_put_u32(q + 1, v->v.dec.value);
        }
        return;
    case 'S':
    case 'x':
        tb_blob(b, k, kl, v->type, v->v.bytes.ptr, v->v.bytes.len);
        return;
    case 'F':
    case 'A':
        n = v->v.table.len;
        if (n > UINT32_MAX || (v->type == 'F' ? gw_table_validate(v->v.table.ptr, n)
                                              : gw_array_validate(v->v.table.ptr, n)) != GT_OK) {
            b->misuse = true;
            return;
        }
        tb_blob(b, k, kl, v->type, v->v.table.ptr, n);
        return;
    case 'V':
        (void)tb_entry(b, k, kl, 'V', 0);
        return;
    default:
        b->misuse = true;
        return;
    }
}

void gw_tbuild_value(gw_tbuild_t *b, const char *key, const gw_value_t *v)
{
    gw_str_t k = {key, key != NULL ? strlen(key) : 0};
    gw_tbuild_value_k(b, k, v);
}

static void tb_begin(gw_tbuild_t *b, const char *key, char t)
{
    if (b->depth >= GW_TABLE_MAX_DEPTH - 1) {
        b->misuse = true;
        return;
    }
    uint8_t *q = tb_put(b, key, t, 4);
    if (q == NULL)
        return; /* overflow or misuse recorded; depth not entered */
    b->open[b->depth] = (size_t)(q - b->buf);
    b->depth++;
    b->is_array[b->depth] = t == 'A';
}

void gw_tbuild_table_begin(gw_tbuild_t *b, const char *key)
{
    tb_begin(b, key, 'F');
}

void gw_tbuild_array_begin(gw_tbuild_t *b, const char *key)
{
    tb_begin(b, key, 'A');
}

void gw_tbuild_end(gw_tbuild_t *b)
{
    if (b->depth == 0) {
        /* Unbalanced, unless an earlier failure kept a begin from
         * opening a level: then the failure is already recorded. */
        if (!b->overflow)
            b->misuse = true;
        return;
    }
    b->depth--;
    size_t at = b->open[b->depth];
    size_t n = b->len - at - 4;
    if (n > UINT32_MAX) {
        b->misuse = true;
        return;
    }
    gw_put_u32(b->buf + at, (uint32_t)n);
}

gt_err_t gw_tbuild_finish(gw_tbuild_t *b, gw_table_t *out)
{
    if (b->misuse || (b->depth != 0 && !b->overflow))
        return GT_EINVAL;
    if (b->overflow)
        return GT_ERANGE;
    *out = (gw_table_t){b->len > 0 ? b->buf : NULL, b->len};
    return GT_OK;
}
