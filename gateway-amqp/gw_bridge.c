/* Bridges between AMQP exchanges and RocketMQ topics (gw_bridge.h,
 * docs/amqp.md "Both protocols on one data set").
 *
 * Threads.  The table is read by the proxy's threads (the append hook) and
 * the loop, under its own mutex.  Everything else runs on the loop, except
 * the append hook's entry (it copies the messages and posts them) and the
 * store callbacks of its appends (they fill the SendMessage's items and
 * answer it on the executor when the last one is in). */
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gt_log.h"
#include "gw_bridge.h"
#include "gw_broker_int.h"

struct gw_bridges {
    pthread_mutex_t mu;
    gw_bridge_t *v;
    size_t n, cap;
    atomic_size_t count; /* n, read without the lock by the append hook */
    bool auto_create;
    /* loop only: SendMessages that came before the metadata was read
     * (their routes need the bindings), run by gw_bridge_ready */
    struct xsend *wait, *wait_tail;
};

/* ---- the table --------------------------------------------------------- */

static gt_err_t bridge_fill(gw_bridge_t *br, const char *vhost, const char *exchange,
                            const char *xtype, const char *topic, const char *rkey)
{
    gw_xtype_t t = GW_XTYPE_DIRECT;

    memset(br, 0, sizeof(*br));
    if (strlen(vhost) > 255 || strlen(exchange) > 255 || exchange[0] == '\0' ||
        strlen(topic) > ST_NAME_MAX || topic[0] == '\0')
        return GT_EINVAL;
    if (xtype != NULL && gw_xtype_parse(gw_str(xtype), &t) != GT_OK)
        return GT_EINVAL;
    snprintf(br->vhost, sizeof(br->vhost), "%s", vhost);
    snprintf(br->exchange, sizeof(br->exchange), "%s", exchange);
    snprintf(br->topic, sizeof(br->topic), "%s", topic);
    if (rkey != NULL && strncmp(rkey, "property:", 9) == 0)
        snprintf(br->prop, sizeof(br->prop), "%s", rkey + 9);
    br->xtype = t;
    return GT_OK;
}

/* Adds br unless its exchange or topic is bridged already (false then). */
static bool table_add(gw_bridges_t *t, const gw_bridge_t *br)
{
    bool ok = true;

    pthread_mutex_lock(&t->mu);
    for (size_t i = 0; i < t->n && ok; i++)
        ok = strcmp(t->v[i].topic, br->topic) != 0 &&
             (strcmp(t->v[i].vhost, br->vhost) != 0 ||
              strcmp(t->v[i].exchange, br->exchange) != 0);
    if (ok && t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 4;
        gw_bridge_t *v = realloc(t->v, cap * sizeof(*v));
        if (v == NULL)
            ok = false;
        else
            t->v = v, t->cap = cap;
    }
    if (ok) {
        t->v[t->n++] = *br;
        atomic_store(&t->count, t->n);
    }
    pthread_mutex_unlock(&t->mu);
    return ok;
}

gw_bridges_t *gw_bridges_new(const cfg_amqp_bridge_t *v, size_t n, bool auto_create_topics)
{
    gw_bridges_t *t = calloc(1, sizeof(*t));

    if (t == NULL)
        return NULL;
    pthread_mutex_init(&t->mu, NULL);
    t->auto_create = auto_create_topics;
    for (size_t i = 0; i < n; i++) {
        gw_bridge_t br;
        if (bridge_fill(&br, v[i].vhost, v[i].exchange, v[i].exchange_type, v[i].topic,
                        v[i].routing_key) != GT_OK) {
            GT_LOG(ERROR, "amqp", "bridge %zu (%s -> %s) is not valid: skipped", i,
                   v[i].exchange, v[i].topic);
            continue;
        }
        br.from_config = true;
        if (!table_add(t, &br))
            GT_LOG(ERROR, "amqp", "bridge %s -> %s: exchange or topic bridged twice: skipped",
                   br.exchange, br.topic);
    }
    return t;
}

void gw_bridges_free(gw_bridges_t *t)
{
    if (t == NULL)
        return;
    pthread_mutex_destroy(&t->mu);
    free(t->v);
    free(t);
}

bool gw_bridge_by_exchange(gw_broker_t *b, const char *vhost, gw_str_t exchange,
                           gw_bridge_t *out)
{
    gw_bridges_t *t = b->bridges;
    bool found = false;

    if (t == NULL || exchange.len == 0 || atomic_load(&t->count) == 0)
        return false;
    pthread_mutex_lock(&t->mu);
    for (size_t i = 0; i < t->n && !found; i++) {
        const gw_bridge_t *br = &t->v[i];
        if (strlen(br->exchange) == exchange.len &&
            memcmp(br->exchange, exchange.ptr, exchange.len) == 0 &&
            strcmp(br->vhost, vhost) == 0) {
            *out = *br;
            found = true;
        }
    }
    pthread_mutex_unlock(&t->mu);
    return found;
}

bool gw_bridge_by_topic(gw_broker_t *b, const char *topic, gw_bridge_t *out)
{
    gw_bridges_t *t = b->bridges;
    bool found = false;

    if (t == NULL || atomic_load(&t->count) == 0)
        return false;
    pthread_mutex_lock(&t->mu);
    for (size_t i = 0; i < t->n && !found; i++)
        if (strcmp(t->v[i].topic, topic) == 0) {
            *out = t->v[i];
            found = true;
        }
    pthread_mutex_unlock(&t->mu);
    return found;
}

/* ---- helpers ------------------------------------------------------------ */

/* Base64 (the envelope travels in a string property). */
static char *b64_encode(const uint8_t *p, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1);

    if (out != NULL)
        EVP_EncodeBlock((unsigned char *)out, p, (int)n);
    return out;
}

static uint8_t *b64_decode(const char *s, size_t *len)
{
    size_t n = strlen(s);
    uint8_t *out;
    int got;

    if (n % 4 != 0 || (out = malloc(n / 4 * 3 + 1)) == NULL)
        return NULL;
    if ((got = EVP_DecodeBlock(out, (const unsigned char *)s, (int)n)) < 0) {
        free(out);
        return NULL;
    }
    if (n > 0 && s[n - 1] == '=')
        got--;
    if (n > 1 && s[n - 2] == '=')
        got--;
    *len = (size_t)got;
    return out;
}

/* Decodes a property list as stored (flags first). */
static bool props_decode(const uint8_t *raw, size_t len, gw_props_t *out)
{
    uint8_t stack[512], *payload = len + 12 <= sizeof(stack) ? stack : malloc(len + 12);
    gw_content_header_t h;
    gw_fault_t f;
    bool ok;

    if (payload == NULL)
        return false;
    memset(payload, 0, 12);
    payload[1] = 60;
    memcpy(payload + 12, raw, len);
    ok = gw_header_decode(payload, 12 + len, &h, &f) == GT_OK;
    if (ok) {
        /* The decoded strings point into payload: move them to raw. */
        *out = h.props;
#define GW_REBASE(s)                                                                           \
    if ((s).ptr != NULL)                                                                       \
    (s).ptr = (const char *)raw + ((const uint8_t *)(s).ptr - (payload + 12))
        GW_REBASE(out->content_type);
        GW_REBASE(out->content_encoding);
        GW_REBASE(out->correlation_id);
        GW_REBASE(out->reply_to);
        GW_REBASE(out->expiration);
        GW_REBASE(out->message_id);
        GW_REBASE(out->type);
        GW_REBASE(out->user_id);
        GW_REBASE(out->app_id);
        GW_REBASE(out->cluster_id);
#undef GW_REBASE
        if (out->headers.ptr != NULL)
            out->headers.ptr = raw + (out->headers.ptr - (payload + 12));
    }
    if (payload != stack)
        free(payload);
    return ok;
}

/* A bump allocator over one buffer sized up front. */
typedef struct {
    char *p;
    size_t len, cap;
} arena_t;

static const char *arena_str(arena_t *a, const void *s, size_t n)
{
    char *r;

    if (memchr(s, '\0', n) != NULL || a->len + n + 1 > a->cap)
        return NULL;
    r = a->p + a->len;
    memcpy(r, s, n);
    r[n] = '\0';
    a->len += n + 1;
    return r;
}

static bool has_ctl(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return true;
    return false;
}

/* ---- AMQP publish -> RocketMQ form -------------------------------------- */

/* The AMQP properties kept as user properties, by name. */
#define GW_XP "amqp."

static void put_prop(st_message_t *m, arena_t *a, const char *key, gw_str_t val, bool on)
{
    const char *v;

    if (!on || m->nprops >= ST_MAX_PROPS - 5)
        return;
    if ((v = arena_str(a, val.ptr, val.len)) == NULL)
        return;
    m->props[m->nprops].key = key;
    m->props[m->nprops++].value = v;
}

static void put_num(st_message_t *m, arena_t *a, const char *key, unsigned long long v, bool on)
{
    char buf[24];
    int n = snprintf(buf, sizeof(buf), "%llu", v);

    put_prop(m, a, key, (gw_str_t){buf, (size_t)n}, on);
}

/* A header value as text: strings as they are, numbers in decimal,
 * booleans true/false; tables, arrays, byte arrays with a NUL and void
 * have no text form (they stay in the envelope). */
static bool value_text(const gw_value_t *v, char *buf, size_t cap, gw_str_t *out)
{
    int n;

    switch (v->type) {
    case 'S':
    case 'x':
        *out = (gw_str_t){(const char *)v->v.bytes.ptr, v->v.bytes.len};
        return memchr(v->v.bytes.ptr, '\0', v->v.bytes.len) == NULL;
    case 't':
        *out = gw_str(v->v.i ? "true" : "false");
        return true;
    case 'b':
    case 's':
    case 'I':
    case 'l':
    case 'L':
        n = snprintf(buf, cap, "%lld", (long long)v->v.i);
        break;
    case 'B':
    case 'u':
    case 'i':
    case 'T':
        n = snprintf(buf, cap, "%llu", (unsigned long long)v->v.u);
        break;
    case 'f':
        n = snprintf(buf, cap, "%.9g", (double)v->v.f);
        break;
    case 'd':
        n = snprintf(buf, cap, "%.17g", v->v.d);
        break;
    default:
        return false;
    }
    *out = (gw_str_t){buf, (size_t)n};
    return true;
}

bool gw_bridge_publish_msg(gw_chan_t *ch, const gw_bridge_t *br, st_message_t *msg,
                           void **scratch)
{
    const uint8_t *raw = ch->pbuf + ch->props_off;
    gw_props_t p;
    arena_t a;
    gw_str_t rk = {ch->rk, ch->rklen};
    char *env;

    *scratch = NULL;
    memset(&p, 0, sizeof(p));
    if (ch->props_len > 0 && !props_decode(raw, ch->props_len, &p))
        memset(&p, 0, sizeof(p)); /* decoded at the header already: cannot happen */
    a.cap = 16 * ch->props_len + ch->rklen + 1024;
    a.len = 0;
    if ((a.p = malloc(a.cap)) == NULL)
        return false;
    if ((env = b64_encode(ch->pbuf, ch->body_off)) == NULL) {
        free(a.p);
        return false;
    }
    msg->body = ch->pbuf + ch->body_off;
    msg->body_len = (uint32_t)(ch->plen - ch->body_off);
    msg->queue_id = ST_QUEUE_ANY;
    msg->born_ts_ms = (int64_t)time(NULL) * 1000;
    if (br->prop[0] == '\0')
        msg->tag = rk.len > 0 ? arena_str(&a, rk.ptr, rk.len) : NULL;
    else if (rk.len > 0)
        put_prop(msg, &a, br->prop, rk, true);
    put_prop(msg, &a, GW_XP "content-type", p.content_type, p.flags & GW_P_CONTENT_TYPE);
    put_prop(msg, &a, GW_XP "content-encoding", p.content_encoding,
             p.flags & GW_P_CONTENT_ENCODING);
    put_num(msg, &a, GW_XP "delivery-mode", p.delivery_mode, p.flags & GW_P_DELIVERY_MODE);
    put_num(msg, &a, GW_XP "priority", p.priority, p.flags & GW_P_PRIORITY);
    put_prop(msg, &a, GW_XP "correlation-id", p.correlation_id, p.flags & GW_P_CORRELATION_ID);
    put_prop(msg, &a, GW_XP "reply-to", p.reply_to, p.flags & GW_P_REPLY_TO);
    put_prop(msg, &a, GW_XP "expiration", p.expiration, p.flags & GW_P_EXPIRATION);
    put_prop(msg, &a, GW_XP "message-id", p.message_id, p.flags & GW_P_MESSAGE_ID);
    put_num(msg, &a, GW_XP "timestamp", p.timestamp, p.flags & GW_P_TIMESTAMP);
    put_prop(msg, &a, GW_XP "type", p.type, p.flags & GW_P_TYPE);
    put_prop(msg, &a, GW_XP "user-id", p.user_id, p.flags & GW_P_USER_ID);
    put_prop(msg, &a, GW_XP "app-id", p.app_id, p.flags & GW_P_APP_ID);
    if ((p.flags & GW_P_HEADERS) && p.headers.len > 0) {
        gw_table_iter_t it;
        gw_str_t key;
        gw_value_t val;

        gw_table_iter_init(&it, p.headers);
        while (gw_table_iter_next(&it, &key, &val)) {
            char buf[40];
            gw_str_t text;
            const char *k;

            if (gw_str_eq(key, "rocketmq.keys") && val.type == 'A') {
                gw_table_iter_t ai;
                gw_value_t e;
                gw_table_iter_init(&ai, val.v.table);
                while (gw_array_iter_next(&ai, &e) && msg->nkeys < ST_MAX_KEYS) {
                    const char *s;
                    if ((e.type == 'S' || e.type == 'x') &&
                        (s = arena_str(&a, e.v.bytes.ptr, e.v.bytes.len)) != NULL)
                        msg->keys[msg->nkeys++] = s;
                }
                continue;
            }
            if (key.len == 0 || has_ctl(key.ptr, key.len) ||
                !value_text(&val, buf, sizeof(buf), &text) ||
                (k = arena_str(&a, key.ptr, key.len)) == NULL)
                continue;
            put_prop(msg, &a, k, text, true);
        }
    }
    /* the envelope, for AMQP consumers: the last property */
    msg->props[msg->nprops].key = ST_PROP_AMQP;
    msg->props[msg->nprops++].value = env;
    /* *scratch holds both allocations (gw_bridge_scratch_free) */
    {
        void **both = malloc(2 * sizeof(void *));
        if (both == NULL) {
            free(env);
            free(a.p);
            *scratch = NULL;
            return false;
        }
        both[0] = a.p;
        both[1] = env;
        *scratch = both;
    }
    return true;
}

void gw_bridge_scratch_free(void *scratch)
{
    void **both = scratch;

    if (both == NULL)
        return;
    free(both[0]);
    free(both[1]);
    free(both);
}

/* ---- RocketMQ message -> AMQP envelope ---------------------------------- */

static const char *msg_prop(const st_message_t *m, const char *key)
{
    for (uint32_t i = 0; i < m->nprops; i++)
        if (strcmp(m->props[i].key, key) == 0)
            return m->props[i].value;
    return NULL;
}

static gw_str_t short_of(const char *s)
{
    gw_str_t r = gw_str(s);

    if (r.len > 255)
        r.len = 255;
    return r;
}

/* The envelope of a message a RocketMQ producer sent: 0xA1, exchange,
 * routing key, property list (see docs/amqp.md for the mapping).  *hdrs
 * and *rk point into it.  NULL: no memory. */
static uint8_t *sdk_envelope(const gw_bridge_t *br, const st_message_t *m, size_t *len,
                             gw_table_t *hdrs, gw_str_t *rk)
{
    size_t cap = 256, plen = 0, psize, at = 0;
    uint8_t *tbuf, *env = NULL;
    gw_tbuild_t tb;
    gw_props_t p;
    gw_str_t key, ex = gw_str(br->exchange);
    const char *s;

    for (uint32_t i = 0; i < m->nprops; i++)
        cap += strlen(m->props[i].key) + strlen(m->props[i].value) + 8;
    for (uint32_t i = 0; i < m->nkeys; i++)
        cap += strlen(m->keys[i]) + 8;
    cap += (m->tag ? strlen(m->tag) : 0) + (m->msg_group ? strlen(m->msg_group) : 0) + 96;
    if ((tbuf = malloc(cap)) == NULL)
        return NULL;
    gw_tbuild_init(&tb, tbuf, cap);
    for (uint32_t i = 0; i < m->nprops; i++) {
        const char *k = m->props[i].key, *v = m->props[i].value;
        if (k[0] == ST_PROP_SYS[0] || strlen(k) > 255)
            continue;
        gw_tbuild_longstr(&tb, k, v, strlen(v));
    }
    if (m->nkeys > 0) {
        gw_tbuild_array_begin(&tb, "rocketmq.keys");
        for (uint32_t i = 0; i < m->nkeys; i++)
            gw_tbuild_longstr(&tb, NULL, m->keys[i], strlen(m->keys[i]));
        gw_tbuild_end(&tb);
    }
    if (m->tag != NULL && m->tag[0] != '\0')
        gw_tbuild_longstr(&tb, "rocketmq.tag", m->tag, strlen(m->tag));
    if (m->msg_group != NULL && m->msg_group[0] != '\0')
        gw_tbuild_longstr(&tb, "rocketmq.message-group", m->msg_group, strlen(m->msg_group));
    memset(&p, 0, sizeof(p));
    if (gw_tbuild_finish(&tb, &p.headers) != GT_OK)
        goto out;
    p.flags = GW_P_HEADERS | GW_P_DELIVERY_MODE;
    p.delivery_mode = 2;
    if (m->msg_id != NULL && m->msg_id[0] != '\0') {
        p.flags |= GW_P_MESSAGE_ID;
        p.message_id = short_of(m->msg_id);
    }
    if (m->born_ts_ms > 0) {
        p.flags |= GW_P_TIMESTAMP;
        p.timestamp = (uint64_t)m->born_ts_ms / 1000;
    }
    if ((s = msg_prop(m, GW_XP "content-type")) != NULL) {
        p.flags |= GW_P_CONTENT_TYPE;
        p.content_type = short_of(s);
    }
    if ((s = msg_prop(m, GW_XP "content-encoding")) != NULL ||
        ((s = msg_prop(m, ST_PROP_ENCODING)) != NULL && strcmp(s, "gzip") == 0)) {
        /* a body the producer compressed stays compressed: say so */
        p.flags |= GW_P_CONTENT_ENCODING;
        p.content_encoding = short_of(s);
    }
    if ((s = msg_prop(m, GW_XP "correlation-id")) != NULL) {
        p.flags |= GW_P_CORRELATION_ID;
        p.correlation_id = short_of(s);
    }
    if ((s = msg_prop(m, GW_XP "reply-to")) != NULL) {
        p.flags |= GW_P_REPLY_TO;
        p.reply_to = short_of(s);
    }
    if ((s = msg_prop(m, GW_XP "type")) != NULL) {
        p.flags |= GW_P_TYPE;
        p.type = short_of(s);
    }
    if ((s = msg_prop(m, GW_XP "app-id")) != NULL) {
        p.flags |= GW_P_APP_ID;
        p.app_id = short_of(s);
    }
    if (br->prop[0] == '\0')
        key = short_of(m->tag);
    else
        key = short_of(msg_prop(m, br->prop));
    if ((psize = gw_props_size(&p)) == 0 ||
        (env = malloc(1 + 1 + ex.len + 1 + key.len + 4 + psize)) == NULL)
        goto out;
    env[at++] = GW_REC_MAGIC;
    env[at++] = (uint8_t)ex.len;
    memcpy(env + at, ex.ptr, ex.len);
    at += ex.len;
    env[at++] = (uint8_t)key.len;
    memcpy(env + at, key.ptr, key.len);
    *rk = (gw_str_t){(const char *)env + at, key.len};
    at += key.len;
    env[at++] = (uint8_t)(psize >> 24);
    env[at++] = (uint8_t)(psize >> 16);
    env[at++] = (uint8_t)(psize >> 8);
    env[at++] = (uint8_t)psize;
    if (gw_props_encode(&p, env + at, psize, &plen) != GT_OK || plen != psize) {
        free(env);
        env = NULL;
        goto out;
    }
    at += plen;
    *len = at;
    /* the headers table again, pointing into the envelope, for routing */
    if (!props_decode(env + at - plen, plen, &p)) {
        free(env);
        env = NULL;
        goto out;
    }
    *hdrs = p.headers;
out:
    free(tbuf);
    return env;
}

/* ---- SendMessage to a bridged topic ------------------------------------- */

typedef struct xsend xsend_t;

/* One message's append: after the answer, the loop kicks the queues. */
typedef struct {
    gw_op_t op;
    xsend_t *s;
    size_t i;
    size_t nq;
    gw_queue_t *qs[]; /* refs */
} xmsg_t;

struct xsend {
    gw_op_t op;
    struct xsend *wait_next;
    gw_bridge_t br;
    st_append_cb cb;
    void *cb_arg;
    size_t n;
    atomic_size_t left;
    _Atomic gt_err_t err;
    st_append_item_t *items;
    st_message_t msgs[];
};

static void xmsg_fn(gw_op_t *op)
{
    xmsg_t *x = (xmsg_t *)op;

    for (size_t i = 0; i < x->nq; i++) {
        if (op->err == GT_OK && !x->qs[i]->gone)
            gw_queue_kick(x->qs[i]);
        gw_queue_unref(x->qs[i]);
    }
    free(x);
}

/* One message's answer (executor); the last one answers the SendMessage. */
static void xsend_one(xsend_t *s, size_t i, gt_err_t err, const st_append_item_t *item)
{
    if (err != GT_OK) {
        gt_err_t none = GT_OK;
        atomic_compare_exchange_strong(&s->err, &none, err);
    } else if (item != NULL) {
        s->items[i] = *item;
    }
    if (atomic_fetch_sub(&s->left, 1) != 1)
        return;
    err = atomic_load(&s->err);
    if (err == GT_OK)
        s->cb(s->cb_arg, GT_OK, s->items, s->n);
    else
        s->cb(s->cb_arg, err, NULL, 0);
    free(s->items);
    free(s);
}

static void xmsg_cb(void *arg, gt_err_t err, const st_append_item_t *items, size_t n)
{
    xmsg_t *x = arg;

    xsend_one(x->s, x->i, err, err == GT_OK && n > 0 ? &items[0] : NULL);
    x->s = NULL;
    x->op.err = err;
    gw_op_post(&x->op);
}

/* On the loop: route and append each message, in order. */
static void xsend_fn(gw_op_t *op)
{
    xsend_t *s = (xsend_t *)op;
    gw_broker_t *b = op->b;
    size_t n = s->n;

    if (!b->loaded && !b->stopping) {
        /* routes need the bindings: after the metadata (gw_bridge_ready) */
        gw_bridges_t *t = b->bridges;
        s->wait_next = NULL;
        if (t->wait_tail != NULL)
            t->wait_tail->wait_next = s;
        else
            t->wait = s;
        t->wait_tail = s;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        st_message_t *m = &s->msgs[i];
        gw_route_out_t out = {0};
        gw_table_t hdrs = {NULL, 0};
        gw_str_t rk = {"", 0};
        size_t elen = 0, nq = 0;
        uint8_t *env = NULL;
        char *text = NULL;
        st_dest_t *dests = NULL;
        xmsg_t *x = NULL;
        gw_vhost_t *vh;

        if (b->stopping) {
            xsend_one(s, i, GT_ESHUTDOWN, NULL);
            continue;
        }
        if ((env = sdk_envelope(&s->br, m, &elen, &hdrs, &rk)) == NULL ||
            (text = b64_encode(env, elen)) == NULL || m->nprops >= ST_MAX_PROPS) {
            free(env);
            free(text);
            xsend_one(s, i, env == NULL || text == NULL ? GT_ENOMEM : GT_EINVAL, NULL);
            continue;
        }
        m->props[m->nprops].key = ST_PROP_AMQP;
        m->props[m->nprops++].value = text;
        vh = gw_vhost_get(b, gw_str(s->br.vhost), false);
        if (vh == NULL || gw_route(vh->router, gw_str(s->br.exchange), &rk, 1, hdrs, &out) != GT_OK)
            out.n = 0; /* no exchange: the topic alone */
        if (out.n > ST_DEST_MAX - 1)
            out.n = ST_DEST_MAX - 1;
        if ((x = gw_op_new(b, sizeof(*x) + out.n * sizeof(x->qs[0]), xmsg_fn)) == NULL ||
            (dests = calloc(out.n + 1, sizeof(*dests))) == NULL) {
            if (x != NULL) {
                free(x);
                pthread_mutex_lock(&b->mu);
                b->ops--;
                pthread_mutex_unlock(&b->mu);
            }
            free(env);
            free(text);
            xsend_one(s, i, GT_ENOMEM, NULL);
            continue;
        }
        /* the queue the client picked (checked by the proxy), as without a bridge */
        dests[0] = (st_dest_t){.topic = s->br.topic, .queue_id = m->queue_id};
        for (size_t k = 0; k < out.n; k++) {
            gw_queue_t *q = gw_queue_find(vh, out.queues[k]);
            if (q == NULL || q->gone || !q->ready)
                continue;
            gw_queue_ref(q);
            x->qs[nq++] = q;
            dests[nq] = (st_dest_t){.topic = q->id, .queue_id = 0};
        }
        x->s = s;
        x->i = i;
        x->nq = nq;
        if (nq == 0)
            st_append(b->store, s->br.topic, m, 1, xmsg_cb, x);
        else
            st_append_multi(b->store, m, dests, nq + 1, xmsg_cb, x);
        /* the store copied the message: its envelope text may go */
        free(dests);
        free(env);
        free(text);
    }
    /* s lives on until the last answer (xsend_one frees it) */
}

static void wait_run(gw_broker_t *b)
{
    gw_bridges_t *t = b->bridges;

    while (t != NULL && t->wait != NULL) {
        xsend_t *s = t->wait;
        t->wait = s->wait_next;
        if (t->wait == NULL)
            t->wait_tail = NULL;
        xsend_fn(&s->op); /* b->loaded or b->stopping: runs (or refuses) now */
    }
}

void gw_bridge_ready(gw_broker_t *b) { wait_run(b); }

void gw_bridge_stop(gw_broker_t *b)
{
    b->stopping = true;
    wait_run(b);
}

bool gw_bridge_append_hook(void *arg, const char *topic, const st_message_t *msgs, size_t n,
                           st_append_cb cb, void *cb_arg)
{
    gw_broker_t *b = arg;
    int64_t now = (int64_t)time(NULL) * 1000;
    gw_bridge_t br;
    xsend_t *s;

    if (b == NULL || n == 0 || !gw_bridge_by_topic(b, topic, &br))
        return false;
    for (size_t i = 0; i < n; i++)
        if (msgs[i].tx_half || msgs[i].delivery_ts_ms > now)
            return false; /* parked by the store: the topic alone */
    if ((s = gw_op_new(b, sizeof(*s) + n * sizeof(s->msgs[0]), xsend_fn)) == NULL)
        return false;
    if ((s->items = calloc(n, sizeof(*s->items))) == NULL) {
        free(s);
        pthread_mutex_lock(&b->mu);
        b->ops--;
        pthread_mutex_unlock(&b->mu);
        return false;
    }
    s->br = br;
    s->cb = cb;
    s->cb_arg = cb_arg;
    s->n = n;
    atomic_init(&s->left, n);
    atomic_init(&s->err, GT_OK);
    /* The strings stay the caller's until cb (the proxy keeps the request). */
    memcpy(s->msgs, msgs, n * sizeof(*msgs));
    gw_op_post(&s->op);
    return true;
}

/* ---- deliveries ------------------------------------------------------------ */

bool gw_bridge_copy_body(const st_message_t *m, uint8_t **out, size_t *len)
{
    const char *text = NULL;
    uint8_t *env, *rec;
    size_t elen = 0;

    for (uint32_t i = 0; i < m->nprops && text == NULL; i++)
        if (strcmp(m->props[i].key, ST_PROP_AMQP) == 0)
            text = m->props[i].value;
    if (text == NULL || (env = b64_decode(text, &elen)) == NULL || elen < 7 ||
        env[0] != GW_REC_MAGIC) {
        if (text != NULL)
            GT_LOG(WARN, "amqp", "a bridged message's envelope does not decode: its body "
                   "alone is delivered");
        *len = m->body_len;
        if ((*out = malloc(m->body_len > 0 ? m->body_len : 1)) == NULL)
            return false;
        if (m->body_len > 0)
            memcpy(*out, m->body, m->body_len);
        return true;
    }
    if ((rec = malloc(elen + m->body_len + 1)) == NULL) {
        free(env);
        return false;
    }
    memcpy(rec, env, elen);
    if (m->body_len > 0)
        memcpy(rec + elen, m->body, m->body_len);
    free(env);
    *out = rec;
    *len = elen + m->body_len;
    return true;
}

/* ---- start: exchanges, topics, records ---------------------------------- */

typedef struct {
    gw_op_t op;
    gw_bridge_t br;
    bool create; /* the topic's get answered NOTFOUND: create it */
} tstep_t;

static void tput_fn(gw_op_t *op)
{
    tstep_t *t = (tstep_t *)op;
    gw_broker_t *b = op->b;

    if (op->err != GT_OK)
        GT_LOG(ERROR, "amqp", "bridge %s -> %s: cannot create the topic: %s",
               t->br.exchange, t->br.topic, gt_err_str(op->err));
    else
        GT_LOG(INFO, "amqp", "bridge %s -> %s: topic created", t->br.exchange, t->br.topic);
    free(t);
    gw_meta_ready_step(b);
}

static void tget_fn(gw_op_t *op)
{
    tstep_t *t = (tstep_t *)op;
    gw_broker_t *b = op->b;

    if (t->create && !b->stopping && b->bridges->auto_create) {
        tstep_t *c = gw_op_new(b, sizeof(*c), tput_fn);
        if (c != NULL) {
            st_topic_t topic;
            memset(&topic, 0, sizeof(topic));
            snprintf(topic.name, sizeof(topic.name), "%s", t->br.topic);
            topic.type = ST_TOPIC_NORMAL;
            topic.queue_count = 8;
            topic.perm = ST_PERM_READ | ST_PERM_WRITE;
            c->br = t->br;
            b->requeues++;
            st_topic_put(b->store, &topic, gw_op_done_cb, c);
        }
    } else if (t->create) {
        GT_LOG(ERROR, "amqp", "bridge %s -> %s: the topic does not exist "
               "(server.auto_create_topics is off): publishes to the exchange are nacked",
               t->br.exchange, t->br.topic);
    }
    free(t);
    gw_meta_ready_step(b);
}

static void tget_cb(void *arg, gt_err_t err, const st_topic_t *topics, size_t n)
{
    tstep_t *t = arg;

    (void)topics;
    t->create = err == GT_ENOTFOUND || (err == GT_OK && n == 0);
    t->op.err = err;
    gw_op_post(&t->op);
}

static size_t bridge_key(uint8_t *k, const gw_bridge_t *br)
{
    size_t kl = gw_meta_put_s8(k, gw_str(br->vhost));
    return kl + gw_meta_put_s8(k + kl, gw_str(br->exchange));
}

/* Record value: version 1, origin (1 config, 2 admin), exchange type,
 * topic (s8), routing key property (s8, empty: the tag). */
static size_t bridge_value(uint8_t *v, const gw_bridge_t *br)
{
    size_t vl = 0;

    v[vl++] = 1;
    v[vl++] = br->from_config ? 1 : 2;
    v[vl++] = (uint8_t)br->xtype;
    vl += gw_meta_put_s8(v + vl, gw_str(br->topic));
    vl += gw_meta_put_s8(v + vl, gw_str(br->prop));
    return vl;
}

/* Records of an earlier run: admin ones join the table, config ones no
 * longer configured are deleted. */
typedef struct {
    gw_op_t op;
    size_t n;
    gw_bridge_t *found; /* decoded records */
    uint8_t (*keys)[520];
    size_t *klens;
} rlist_t;

static bool s8_get(const uint8_t *v, size_t vl, size_t *at, char *out)
{
    size_t n;

    if (*at >= vl || (n = v[*at]) > vl - *at - 1)
        return false;
    memcpy(out, v + *at + 1, n);
    out[n] = '\0';
    *at += 1 + n;
    return true;
}

static void rlist_fn(gw_op_t *op)
{
    rlist_t *r = (rlist_t *)op;
    gw_broker_t *b = op->b;

    for (size_t i = 0; i < r->n && op->err == GT_OK && !b->stopping; i++) {
        gw_bridge_t *br = &r->found[i], cur;
        if (br->from_config) {
            if (!gw_bridge_by_exchange(b, br->vhost, gw_str(br->exchange), &cur) ||
                !cur.from_config) {
                GT_LOG(INFO, "amqp", "bridge %s -> %s is no longer configured: its record "
                       "goes", br->exchange, br->topic);
                gw_meta_write(b, NULL, 0, 0, true, GW_NS_BRIDGE, r->keys[i], r->klens[i], NULL,
                              0, true);
            }
        } else if (!table_add(b->bridges, br)) {
            GT_LOG(WARN, "amqp", "bridge %s -> %s (kept record): exchange or topic bridged "
                   "by the config too: the config's is used", br->exchange, br->topic);
        }
    }
    if (op->err != GT_OK)
        GT_LOG(ERROR, "amqp", "cannot read the bridge records: %s", gt_err_str(op->err));
    free(r->found);
    free(r->keys);
    free(r->klens);
    free(r);
    gw_meta_ready_step(b);
}

static void rlist_cb(void *arg, gt_err_t err, const st_meta_rec_t *recs, size_t n, bool more)
{
    rlist_t *r = arg;

    (void)more; /* up to ST_META_LIST_MAX bridges */
    r->op.err = err;
    if (err == GT_OK && n > 0) {
        r->found = calloc(n, sizeof(*r->found));
        r->keys = calloc(n, sizeof(*r->keys));
        r->klens = calloc(n, sizeof(*r->klens));
        if (r->found == NULL || r->keys == NULL || r->klens == NULL) {
            r->op.err = GT_ENOMEM;
            gw_op_post(&r->op);
            return;
        }
        for (size_t i = 0; i < n; i++) {
            const uint8_t *k = recs[i].key, *v = recs[i].value;
            size_t ka = 0, va = 3;
            gw_bridge_t *br = &r->found[r->n];
            char xt[256];
            if (recs[i].key_len > sizeof(r->keys[0]) || recs[i].value_len < 3 || v[0] != 1 ||
                !s8_get(k, recs[i].key_len, &ka, br->vhost) ||
                !s8_get(k, recs[i].key_len, &ka, br->exchange) ||
                !s8_get(v, recs[i].value_len, &va, br->topic) ||
                !s8_get(v, recs[i].value_len, &va, xt))
                continue;
            snprintf(br->prop, sizeof(br->prop), "%s", xt);
            br->from_config = v[1] == 1;
            br->xtype = (gw_xtype_t)v[2];
            memcpy(r->keys[r->n], k, recs[i].key_len);
            r->klens[r->n] = recs[i].key_len;
            r->n++;
        }
    }
    gw_op_post(&r->op);
}

void gw_bridge_start(gw_broker_t *b)
{
    gw_bridges_t *t = b->bridges;
    gw_bridge_t *v = NULL;
    size_t n = 0;

    if (t == NULL)
        return;
    pthread_mutex_lock(&t->mu);
    if (t->n > 0 && (v = malloc(t->n * sizeof(*v))) != NULL) {
        memcpy(v, t->v, t->n * sizeof(*v));
        n = t->n;
    }
    pthread_mutex_unlock(&t->mu);
    {
        rlist_t *r = gw_op_new(b, sizeof(*r), rlist_fn);
        if (r != NULL) {
            st_meta_list_req_t req = {.ns = GW_NS_BRIDGE, .max = ST_META_LIST_MAX};
            b->requeues++;
            st_meta_list(b->store, &req, rlist_cb, r);
        }
    }
    for (size_t i = 0; i < n; i++) {
        const gw_bridge_t *br = &v[i];
        gw_str_t ex = gw_str(br->exchange);
        gw_xtype_t type;
        uint8_t k[GW_META_KEY], val[600];
        size_t kl, vl;
        tstep_t *ts;
        gw_vhost_t *vh = gw_vhost_get(b, gw_str(br->vhost), true);

        if (vh == NULL) {
            GT_LOG(ERROR, "amqp", "bridge %s -> %s: out of memory", br->exchange, br->topic);
        } else if (gw_route_exchange_get(vh->router, ex, &type, NULL)) {
            if (type != br->xtype)
                GT_LOG(WARN, "amqp", "bridge %s -> %s: the exchange exists as %s (kept)",
                       br->exchange, br->topic, gw_xtype_name(type));
        } else if (gw_route_exchange_add(vh->router, ex, br->xtype, GW_XF_DURABLE) == GT_OK) {
            kl = gw_meta_name_key(k, vh, ex);
            vl = 0;
            val[vl++] = 1;
            val[vl++] = (uint8_t)br->xtype;
            val[vl++] = (uint8_t)GW_XF_DURABLE;
            vl += gw_meta_put_s8(val + vl, gw_str(NULL));
            gw_meta_write(b, NULL, 0, 0, true, GW_NS_EXCHANGE, k, kl, val, vl, false);
        }
        kl = bridge_key(k, br);
        vl = bridge_value(val, br);
        gw_meta_write(b, NULL, 0, 0, true, GW_NS_BRIDGE, k, kl, val, vl, false);
        if ((ts = gw_op_new(b, sizeof(*ts), tget_fn)) != NULL) {
            ts->br = *br;
            b->requeues++;
            st_topic_get(b->store, br->topic, tget_cb, ts);
        }
        GT_LOG(INFO, "amqp", "bridge: exchange '%s' in vhost '%s' <-> topic %s (routing key: %s%s)",
               br->exchange, br->vhost, br->topic, br->prop[0] ? "property " : "tag",
               br->prop);
    }
    free(v);
}
