/* Internal to the codec: big-endian reads and writes over a bounded
 * cursor.  A read past the end sets ok = false and returns zeros, so a
 * decoder reads a whole argument list and checks ok once; a write past
 * cap likewise sets ok = false and writes nothing more. */
#ifndef GW_WIRE_H
#define GW_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct gw_rd {
    const uint8_t *p, *end;
    bool ok;
} gw_rd_t;

static inline gw_rd_t gw_rd(const uint8_t *p, size_t len)
{
    return (gw_rd_t){p, p + len, true};
}

static inline size_t gw_rd_left(const gw_rd_t *r)
{
    return (size_t)(r->end - r->p);
}

/* Returns a pointer to the next n bytes and skips them, or NULL. */
static inline const uint8_t *gw_rd_take(gw_rd_t *r, size_t n)
{
    if (!r->ok || gw_rd_left(r) < n) {
        r->ok = false;
        return NULL;
    }
    const uint8_t *q = r->p;
    r->p += n;
    return q;
}

static inline uint8_t gw_rd_u8(gw_rd_t *r)
{
    const uint8_t *q = gw_rd_take(r, 1);
    return q != NULL ? q[0] : 0;
}

static inline uint16_t gw_rd_u16(gw_rd_t *r)
{
    const uint8_t *q = gw_rd_take(r, 2);
    return q != NULL ? (uint16_t)((q[0] << 8) | q[1]) : 0;
}

static inline uint32_t gw_rd_u32(gw_rd_t *r)
{
    const uint8_t *q = gw_rd_take(r, 4);
    return q != NULL ? ((uint32_t)q[0] << 24) | ((uint32_t)q[1] << 16) | ((uint32_t)q[2] << 8) | q[3]
                     : 0;
}

static inline uint64_t gw_rd_u64(gw_rd_t *r)
{
    uint64_t hi = gw_rd_u32(r);
    return (hi << 32) | gw_rd_u32(r);
}

static inline uint16_t gw_get_u16(const uint8_t *q)
{
    return (uint16_t)((q[0] << 8) | q[1]);
}

static inline uint32_t gw_get_u32(const uint8_t *q)
{
    return ((uint32_t)q[0] << 24) | ((uint32_t)q[1] << 16) | ((uint32_t)q[2] << 8) | q[3];
}

static inline void gw_put_u16(uint8_t *q, uint16_t v)
{
    q[0] = (uint8_t)(v >> 8);
    q[1] = (uint8_t)v;
}

static inline void gw_put_u32(uint8_t *q, uint32_t v)
{
    q[0] = (uint8_t)(v >> 24);
    q[1] = (uint8_t)(v >> 16);
    q[2] = (uint8_t)(v >> 8);
    q[3] = (uint8_t)v;
}

static inline void gw_put_u64(uint8_t *q, uint64_t v)
{
    gw_put_u32(q, (uint32_t)(v >> 32));
    gw_put_u32(q + 4, (uint32_t)v);
}

typedef struct gw_wr {
    uint8_t *buf;
    size_t cap, len;
    bool ok;
} gw_wr_t;

/* A measuring writer (see gw_wr_room). */
#define GW_WR_MEASURE ((gw_wr_t){NULL, SIZE_MAX, 0, true})

static inline gw_wr_t gw_wr(uint8_t *buf, size_t cap)
{
    return (gw_wr_t){buf, cap, 0, true};
}

/* Reserves n bytes and returns them, or NULL (and ok = false).  A writer
 * without a buffer only measures: it counts and returns NULL. */
static inline uint8_t *gw_wr_room(gw_wr_t *w, size_t n)
{
    if (!w->ok || w->cap - w->len < n) {
        w->ok = false;
        return NULL;
    }
    if (w->buf == NULL) {
        w->len += n;
        return NULL;
    }
    uint8_t *q = w->buf + w->len;
    w->len += n;
    return q;
}

static inline void gw_wr_u8(gw_wr_t *w, uint8_t v)
{
    uint8_t *q = gw_wr_room(w, 1);
    if (q != NULL)
        q[0] = v;
}

static inline void gw_wr_u16(gw_wr_t *w, uint16_t v)
{
    uint8_t *q = gw_wr_room(w, 2);
    if (q != NULL)
        gw_put_u16(q, v);
}

static inline void gw_wr_u32(gw_wr_t *w, uint32_t v)
{
    uint8_t *q = gw_wr_room(w, 4);
    if (q != NULL)
        gw_put_u32(q, v);
}

static inline void gw_wr_u64(gw_wr_t *w, uint64_t v)
{
    uint8_t *q = gw_wr_room(w, 8);
    if (q != NULL)
        gw_put_u64(q, v);
}

static inline void gw_wr_mem(gw_wr_t *w, const void *p, size_t n)
{
    uint8_t *q = gw_wr_room(w, n);
    if (q != NULL && n > 0)
        memcpy(q, p, n);
}

/* Internal: formats an Erlang-style binary <<1,2,3>> of the first max
 * bytes (appending ",..." when cut) into out. */
void gw_fmt_binary(char *out, size_t cap, const uint8_t *p, size_t len, size_t max);

/* Internal: skips one field value of type t (table/array bodies are
 * validated to depth levels).  Returns false when malformed. */
bool gw_value_read(gw_rd_t *r, char t, struct gw_value *v, int depth);

#endif
