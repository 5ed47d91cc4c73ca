/* Pure codecs of the local store: CRC32C, the commitlog record (format
 * version 1, layout in st_int.h), receipt handles and hashes (tag
 * expressions are common/gt_tagexpr.c).  No I/O, no globals except constant tables, no logging:
 * decoders check every bound and return GT_AGAIN / GT_ECORRUPT. */
#include <stdlib.h>
#include <string.h>

#include "gt_le.h"
#include "st_int.h"

/* ---- CRC32C (Castagnoli), table driven, SSE4.2 when available ----------- */
static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^
                              crc_table[0][crc_table[t - 1][i] & 0xff];
}

static uint32_t crc_sw(uint32_t crc, const uint8_t *p, size_t len)
{
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        v ^= crc;
        crc = crc_table[7][v & 0xff] ^ crc_table[6][(v >> 8) & 0xff] ^
              crc_table[5][(v >> 16) & 0xff] ^ crc_table[4][(v >> 24) & 0xff] ^
              crc_table[3][(v >> 32) & 0xff] ^ crc_table[2][(v >> 40) & 0xff] ^
              crc_table[1][(v >> 48) & 0xff] ^ crc_table[0][v >> 56];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc,
                                                          const uint8_t *p,
                                                          size_t len)
{
    uint64_t c = crc;
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        len -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (len--)
        c32 = __builtin_ia32_crc32qi(c32, *p++);
    return c32;
}
#endif

uint32_t st_crc32c(uint32_t crc, const void *buf, size_t len)
{
    crc = ~crc;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("sse4.2"))
        return ~crc_hw(crc, buf, len);
#endif
    pthread_once(&crc_once, crc_init);
    return ~crc_sw(crc, buf, len);
}

/* ---- hashes -------------------------------------------------------------- */

uint64_t st_hash64(char kind, const char *s)
{
    uint64_t h = 14695981039346656037ull;
    h = (h ^ (uint8_t)kind) * 1099511628211ull;
    for (; s && *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

/* ---- record encode --------------------------------------------------------- */
static size_t str_size(const char *s, bool *ok)
{
    size_t n = s ? strlen(s) : 0;
    if (n > 0xffff)
        *ok = false;
    return 2 + n + 1;
}

static size_t var_size(const char *topic, const st_message_t *m,
                       const char *msg_id, bool *ok)
{
    size_t v = str_size(topic, ok) + str_size(m->tag, ok) +
               str_size(msg_id, ok) + str_size(m->born_host, ok) +
               str_size(m->msg_group, ok) + 2 + 2;
    if (m->nkeys > ST_MAX_KEYS || m->nprops > ST_MAX_PROPS) {
        *ok = false;
        return 0;
    }
    for (uint32_t i = 0; i < m->nkeys; i++)
        v += str_size(m->keys[i], ok);
    for (uint32_t i = 0; i < m->nprops; i++)
        v += str_size(m->props[i].key, ok) + str_size(m->props[i].value, ok);
    return v;
}

size_t st_record_size_as(const char *topic, const st_message_t *msg,
                         const char *msg_id)
{
    bool ok = true;
    size_t v = var_size(topic, msg, msg_id, &ok);
    size_t total = ST_REC_HDR + v + msg->body_len;
    if (!ok || total > ST_REC_MAX_HARD || (msg->body_len && !msg->body))
        return 0;
    return total;
}

size_t st_record_size(const char *topic, const st_message_t *msg)
{
    return st_record_size_as(topic, msg, msg->msg_id);
}

static uint8_t *put_str(uint8_t *p, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    gt_le16_put(p, (uint16_t)n);
    if (n)
        memcpy(p + 2, s, n);
    p[2 + n] = 0;
    return p + 2 + n + 1;
}

gt_err_t st_record_encode_as(uint8_t *buf, size_t cap, const char *topic,
                             const st_message_t *m, const char *msg_id,
                             uint16_t flags, size_t *used)
{
    size_t total = st_record_size_as(topic, m, msg_id);
    if (total == 0)
        return GT_EINVAL;
    if (cap < total)
        return GT_ERANGE;
    memset(buf, 0, ST_REC_HDR);
    gt_le32_put(buf, ST_REC_MAGIC);
    gt_le32_put(buf + 4, (uint32_t)total);
    gt_le16_put(buf + 12, flags);
    gt_le16_put(buf + 14, ST_REC_HDR);
    gt_le64_put(buf + 44, (uint64_t)m->born_ts_ms);
    gt_le64_put(buf + 52, (uint64_t)m->delivery_ts_ms);
    gt_le32_put(buf + 64, m->body_len);
    uint8_t *p = buf + ST_REC_HDR;
    p = put_str(p, topic);
    p = put_str(p, m->tag);
    p = put_str(p, msg_id);
    p = put_str(p, m->born_host);
    p = put_str(p, m->msg_group);
    gt_le16_put(p, (uint16_t)m->nkeys);
    p += 2;
    for (uint32_t i = 0; i < m->nkeys; i++)
        p = put_str(p, m->keys[i]);
    gt_le16_put(p, (uint16_t)m->nprops);
    p += 2;
    for (uint32_t i = 0; i < m->nprops; i++) {
        p = put_str(p, m->props[i].key);
        p = put_str(p, m->props[i].value);
    }
    gt_le32_put(buf + 68, (uint32_t)(p - buf - ST_REC_HDR));
    if (m->body_len)
        memcpy(p, m->body, m->body_len);
    *used = total;
    return GT_OK;
}

gt_err_t st_record_encode(uint8_t *buf, size_t cap, const char *topic,
                          const st_message_t *m, size_t *used)
{
    gt_err_t rc = st_record_encode_as(buf, cap, topic, m, m->msg_id,
                                      (uint16_t)m->flags, used);
    if (rc == GT_OK)
        st_record_seal(buf, 0, 0, 0, 0);
    return rc;
}

size_t st_dests_size(const char *const *topics, size_t n)
{
    size_t z = 4;
    for (size_t i = 0; i < n; i++)
        z += 12 + 2 + strlen(topics[i]);
    return z;
}

void st_record_add_dests(uint8_t *buf, const char *const *topics,
                         const uint32_t *queues, size_t n)
{
    uint32_t len = gt_le32_get(buf + 4);
    size_t d = st_dests_size(topics, n);
    uint8_t *p = buf + len, *names = p + 4 + 12 * n;
    gt_le32_put(p, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        size_t tl = strlen(topics[i]);
        gt_le32_put(p + 4 + 12 * i, queues[i]);
        gt_le64_put(p + 8 + 12 * i, 0);
        gt_le16_put(names, (uint16_t)tl);
        memcpy(names + 2, topics[i], tl);
        names += 2 + tl;
    }
    gt_le32_put(buf + 4, (uint32_t)(len + d));
    gt_le32_put(buf + 60, (uint32_t)d);
}

void st_record_set_dest(uint8_t *rec, size_t i, uint64_t qoff)
{
    uint32_t len = gt_le32_get(rec + 4), d = gt_le32_get(rec + 60);
    gt_le64_put(rec + len - d + 8 + 12 * i, qoff);
}

void st_record_dests(const uint8_t *rec, st_rdests_t *d)
{
    uint32_t len = gt_le32_get(rec + 4), dl = gt_le32_get(rec + 60);
    d->p = rec + len - dl;
    d->count = dl ? gt_le32_get(d->p) : 0;
    d->name_at = 4 + 12 * (size_t)d->count;
}

void st_rdest_next(st_rdests_t *d, size_t i, char *name, uint32_t *queue,
                   uint64_t *qoff)
{
    uint16_t n = gt_le16_get(d->p + d->name_at);
    memcpy(name, d->p + d->name_at + 2, n);
    name[n] = 0;
    d->name_at += 2 + (size_t)n;
    *queue = gt_le32_get(d->p + 4 + 12 * i);
    *qoff = gt_le64_get(d->p + 8 + 12 * i);
}

/* A destination section (checked by st_record_decode): N >= 1 entries,
 * names of 1..ST_NAME_MAX bytes without NUL, exactly D bytes. */
static bool dests_ok(const uint8_t *p, uint32_t dl)
{
    if (dl < 4)
        return false;
    uint32_t n = gt_le32_get(p);
    if (n < 1 || n > 1024 || (uint64_t)4 + 15ull * n > dl)
        return false;
    size_t at = 4 + 12 * (size_t)n;
    for (uint32_t i = 0; i < n; i++) {
        if (dl - at < 2)
            return false;
        uint16_t tl = gt_le16_get(p + at);
        if (tl < 1 || tl > ST_NAME_MAX || dl - at - 2 < tl ||
            memchr(p + at + 2, 0, tl))
            return false;
        at += 2 + (size_t)tl;
    }
    return at == dl;
}

void st_record_seal(uint8_t *rec, uint32_t queue, uint64_t qoff, uint64_t pos,
                    int64_t store_ts)
{
    gt_le32_put(rec + ST_REC_OFF_QUEUE, queue);
    gt_le64_put(rec + ST_REC_OFF_QOFF, qoff);
    gt_le64_put(rec + ST_REC_OFF_POS, pos);
    gt_le64_put(rec + ST_REC_OFF_STS, (uint64_t)store_ts);
    uint32_t len = gt_le32_get(rec + 4);
    gt_le32_put(rec + 8, st_crc32c(0, rec + 12, len - 12));
}

/* ---- record decode ------------------------------------------------------------ */
gt_err_t st_record_peek(const uint8_t *buf, size_t len, size_t max_len,
                        uint32_t *rec_len)
{
    if (len < 12)
        return GT_AGAIN;
    if (gt_le32_get(buf) != ST_REC_MAGIC)
        return GT_ECORRUPT;
    uint32_t l = gt_le32_get(buf + 4);
    if (l < ST_REC_HDR || l > max_len || l > ST_REC_MAX_HARD)
        return GT_ECORRUPT;
    *rec_len = l;
    return GT_OK;
}

/* Reads one string at *p (bounded by end); returns NULL on overrun. */
static const char *get_str(const uint8_t **p, const uint8_t *end)
{
    if (end - *p < 3)
        return NULL;
    uint16_t n = gt_le16_get(*p);
    if ((size_t)(end - *p) < (size_t)n + 3 || (*p)[2 + n] != 0)
        return NULL;
    const char *s = (const char *)(*p + 2);
    if (memchr(s, 0, n))
        return NULL;
    *p += 2 + n + 1;
    return s;
}

static gt_err_t decode_var(const uint8_t *p, const uint8_t *end,
                           st_message_t *m)
{
    const char *s[5];
    for (int i = 0; i < 5; i++)
        if (!(s[i] = get_str(&p, end)))
            return GT_ECORRUPT;
    m->topic = s[0];
    m->tag = s[1];
    m->msg_id = s[2];
    m->born_host = s[3];
    m->msg_group = s[4][0] ? s[4] : NULL;
    if (end - p < 2)
        return GT_ECORRUPT;
    m->nkeys = gt_le16_get(p);
    p += 2;
    if (m->nkeys > ST_MAX_KEYS)
        return GT_ECORRUPT;
    for (uint32_t i = 0; i < m->nkeys; i++)
        if (!(m->keys[i] = get_str(&p, end)))
            return GT_ECORRUPT;
    if (end - p < 2)
        return GT_ECORRUPT;
    m->nprops = gt_le16_get(p);
    p += 2;
    if (m->nprops > ST_MAX_PROPS)
        return GT_ECORRUPT;
    for (uint32_t i = 0; i < m->nprops; i++) {
        if (!(m->props[i].key = get_str(&p, end)) ||
            !(m->props[i].value = get_str(&p, end)))
            return GT_ECORRUPT;
    }
    return p == end ? GT_OK : GT_ECORRUPT;
}

gt_err_t st_record_decode(const uint8_t *buf, size_t len, size_t max_len,
                          st_message_t *out, size_t *used)
{
    uint32_t l;
    gt_err_t rc = st_record_peek(buf, len, max_len, &l);
    if (rc != GT_OK)
        return rc;
    if (len < l)
        return GT_AGAIN;
    if (st_crc32c(0, buf + 12, l - 12) != gt_le32_get(buf + 8))
        return GT_ECORRUPT;
    if (gt_le16_get(buf + 14) != ST_REC_HDR)
        return GT_ECORRUPT;
    uint32_t body_len = gt_le32_get(buf + 64), var_len = gt_le32_get(buf + 68);
    uint32_t dl = gt_le32_get(buf + 60);
    if ((uint64_t)ST_REC_HDR + var_len + body_len + dl != l ||
        (dl && !dests_ok(buf + l - dl, dl)))
        return GT_ECORRUPT;
    memset(out, 0, sizeof(*out));
    out->flags = gt_le16_get(buf + 12);
    out->queue_id = (int32_t)gt_le32_get(buf + ST_REC_OFF_QUEUE);
    out->queue_offset = gt_le64_get(buf + ST_REC_OFF_QOFF);
    out->position = gt_le64_get(buf + ST_REC_OFF_POS);
    out->store_ts_ms = (int64_t)gt_le64_get(buf + ST_REC_OFF_STS);
    out->born_ts_ms = (int64_t)gt_le64_get(buf + 44);
    out->delivery_ts_ms = (int64_t)gt_le64_get(buf + 52);
    rc = decode_var(buf + ST_REC_HDR, buf + ST_REC_HDR + var_len, out);
    if (rc != GT_OK)
        return rc;
    out->body = buf + ST_REC_HDR + var_len;
    out->body_len = body_len;
    *used = l;
    return GT_OK;
}

/* ---- receipt handles ---------------------------------------------------------- */
#define HANDLE_BIN 25

void st_handle_encode(const st_handle_t *h, char out[ST_HANDLE_MAX])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t b[HANDLE_BIN];
    b[0] = 1;
    gt_le32_put(b + 1, h->queue);
    gt_le64_put(b + 5, h->offset);
    gt_le64_put(b + 13, h->gen);
    gt_le32_put(b + 21, st_crc32c(0, b, 21));
    for (int i = 0; i < HANDLE_BIN; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[2 * HANDLE_BIN] = 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

gt_err_t st_handle_decode(const char *s, st_handle_t *h)
{
    uint8_t b[HANDLE_BIN];
    if (!s || strlen(s) != 2 * HANDLE_BIN)
        return GT_EINVAL;
    for (int i = 0; i < HANDLE_BIN; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return GT_EINVAL;
        b[i] = (uint8_t)(hi << 4 | lo);
    }
    if (b[0] != 1 || gt_le32_get(b + 21) != st_crc32c(0, b, 21))
        return GT_EINVAL;
    h->queue = gt_le32_get(b + 1);
    h->offset = gt_le64_get(b + 5);
    h->gen = gt_le64_get(b + 13);
    return GT_OK;
}

