/* The AMQP broker's TTLs: x-message-ttl, the `expiration` property and
 * x-expires (see gw_ttl.h for the model).  Checked against RabbitMQ 3.10.8:
 * - an expiration is parsed as Erlang's string:to_integer does (an optional
 *   sign, then digits; nothing else may follow), must not be negative and is
 *   at most 10 years; otherwise the publish is 406 `invalid expiration
 *   '<value>': <reason>` (the reason as Erlang's ~p prints it);
 * - the effective TTL is the smaller of the queue's and the message's;
 * - TTL 0: the message expires unless a consumer can take it at once;
 * - classic queues expire messages at the head: an expired message behind
 *   an unexpired head stays counted until it reaches the head;
 * - declare-ok counts after removing the expired head run; basic.get
 *   takes the first unexpired message, then removes the expired head run
 *   behind it before counting what is left;
 * - an x-expires queue unused (no consumer, basic.get or declare) for its
 *   time is deleted; a durable one's lease starts anew at a restart. */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gt_log.h"
#include "gw_broker_int.h"
#include "gw_dlx.h"
#include "gw_maxlen.h"
#include "gw_ops.h"
#include "gw_rec.h"
#include "gw_trace_int.h"

/* A TTL-0 message reached a queue whose consumer could take it: that
 * consumer's pop may come this long after the store time. */
#define GW_TTL_ZERO_GRACE_MS 1000
#define GW_SWEEP_BATCH 16u /* after a first pop of the head alone */

struct gw_ttl_wait {
    gw_ttl_wait_t *next;
    void (*fn)(void *arg);
    void *arg;
};

int64_t gw_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- a message's expiration ------------------------------------------- */

/* RabbitMQ's ceiling for an expiration (ms): 10 years. */
#define GW_TTL_MAX_MS 315360000000LL

/* Erlang's ~p of a string: printable ASCII in quotes (with its escapes),
 * anything else as a list of integers. */
static size_t erl_string(char *o, size_t cap, const char *p, size_t n)
{
    size_t k = 0;
    bool printable = true;

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (!((c >= 32 && c < 127) || strchr("\t\n\r\v\b\f\x1b", c) != NULL) || c == 0)
            printable = false;
    }
#define PUT(...) (k += (size_t)snprintf(o + (k < cap ? k : cap), k < cap ? cap - k : 0, __VA_ARGS__))
    if (!printable) {
        PUT("[");
        for (size_t i = 0; i < n; i++)
            PUT("%s%u", i > 0 ? "," : "", (unsigned char)p[i]);
        PUT("]");
        return k;
    }
    PUT("\"");
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        const char *e = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\t' ? "\\t" :
                        c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\v' ? "\\v" :
                        c == '\b' ? "\\b" : c == '\f' ? "\\f" : c == 0x1b ? "\\e" : NULL;
        if (e != NULL)
            PUT("%s", e);
        else
            PUT("%c", c);
    }
    PUT("\"");
#undef PUT
    return k;
}

/* why = RabbitMQ's error term {tag,value} as Erlang's ~p prints it after
 * "invalid expiration '<s>': " (col characters): past column 78 the
 * value goes on the next line, under the tuple's first element. */
static void erl_tuple(char *why, size_t cap, size_t col, const char *tag, const char *val)
{
    size_t len = 1 + strlen(tag) + 1 + strlen(val) + 1;
    int n;

    if (col + len > 78)
        n = snprintf(why, cap, "{%s,\n%*s%s}", tag, (int)(col + 1), "", val);
    else
        n = snprintf(why, cap, "{%s,%s}", tag, val);
    if (n < 0 || (size_t)n >= cap) /* cut: reply texts stop at 255 bytes anyway */
        why[cap - 1] = '\0';
}

/* Erlang's string:to_integer on s, then RabbitMQ's check: the ms, or -1
 * with why (RabbitMQ's words) in why. */
static int64_t parse_expiration(gw_str_t s, char *why, size_t cap)
{
    size_t i = 0, ds, col = strlen("invalid expiration '") + s.len + 3;
    bool neg = false;
    int64_t n = 0;
    char val[300];

    if (i < s.len && (s.ptr[i] == '+' || s.ptr[i] == '-'))
        neg = s.ptr[i++] == '-';
    ds = i;
    for (; i < s.len && s.ptr[i] >= '0' && s.ptr[i] <= '9'; i++)
        n = n > GW_TTL_MAX_MS ? n : n * 10 + (s.ptr[i] - '0');
    if (i == ds) {
        snprintf(why, cap, "no_integer");
        return -1;
    }
    if (i < s.len) {
        erl_string(val, sizeof(val), s.ptr + i, s.len - i);
        erl_tuple(why, cap, col, "leftover_string", val);
        return -1;
    }
    while (ds + 1 < i && s.ptr[ds] == '0') /* the integer, as Erlang prints it */
        ds++;
    if (neg && n > 0) {
        snprintf(val, sizeof(val), "-%.*s", (int)(i - ds), s.ptr + ds);
        erl_tuple(why, cap, col, "value_negative", val);
        return -1;
    }
    if (n > GW_TTL_MAX_MS) {
        snprintf(val, sizeof(val), "%.*s", (int)(i - ds), s.ptr + ds);
        erl_tuple(why, cap, col, "value_too_large", val);
        return -1;
    }
    return n;
}

static bool skip_s8(const uint8_t *p, size_t n, size_t *at)
{
    if (*at >= n || p[*at] > n - *at - 1)
        return false;
    *at += 1 + p[*at];
    return true;
}

/* The expiration property of a property list (flags, then the fields
 * before it); false when it has none. */
static bool props_expiration(const uint8_t *p, size_t n, gw_str_t *out)
{
    uint16_t f;
    size_t at = 2;

    if (n < 2)
        return false;
    f = (uint16_t)(p[0] << 8 | p[1]);
    if (!(f & GW_P_EXPIRATION))
        return false;
    if ((f & GW_P_CONTENT_TYPE) && !skip_s8(p, n, &at))
        return false;
    if ((f & GW_P_CONTENT_ENCODING) && !skip_s8(p, n, &at))
        return false;
    if (f & GW_P_HEADERS) {
        uint32_t tl;
        if (n - at < 4)
            return false;
        tl = (uint32_t)p[at] << 24 | (uint32_t)p[at + 1] << 16 | (uint32_t)p[at + 2] << 8 |
             p[at + 3];
        if (tl > n - at - 4)
            return false;
        at += 4 + tl;
    }
    if (f & GW_P_DELIVERY_MODE)
        at++;
    if (f & GW_P_PRIORITY)
        at++;
    if ((f & GW_P_CORRELATION_ID) && !skip_s8(p, n, &at))
        return false;
    if ((f & GW_P_REPLY_TO) && !skip_s8(p, n, &at))
        return false;
    if (at >= n || p[at] > n - at - 1)
        return false;
    *out = (gw_str_t){(const char *)p + at + 1, p[at]};
    return true;
}

/* The property list of a stored record (gw_rec.h). */
static bool rec_props(const uint8_t *rec, size_t n, const uint8_t **p, size_t *pl)
{
    gw_rec_t r;

    if (!gw_rec_decode(rec, n, &r))
        return false;
    *p = r.props.ptr;
    *pl = r.props.len;
    return true;
}

int64_t gw_ttl_rec_expiration(const uint8_t *rec, size_t len)
{
    const uint8_t *p;
    size_t pl;
    gw_str_t s;
    char why[8];

    if (!rec_props(rec, len, &p, &pl) || !props_expiration(p, pl, &s))
        return -1;
    return parse_expiration(s, why, sizeof(why));
}

bool gw_ttl_publish_check(gw_chan_t *ch)
{
    gw_str_t s;
    char why[300];

    if (!props_expiration(ch->pbuf + ch->props_off, ch->props_len, &s) ||
        parse_expiration(s, why, sizeof(why)) >= 0)
        return true;
    CH_ERR(ch, GW_PRECONDITION_FAILED, GW_BASIC_PUBLISH, "invalid expiration '%.*s': %s",
           (int)s.len, s.ptr, why);
    return false;
}

/* The effective TTL for q of a message with expiration exp: -1 none. */
static int64_t eff_ttl(const gw_queue_t *q, int64_t exp)
{
    int64_t t = q->ttl.msg_ttl;

    if (exp >= 0 && (t < 0 || exp < t))
        t = exp;
    return t;
}

/* ---- expiring ---------------------------------------------------------- */

static void expired_log(const gw_queue_t *q)
{
    gw_qstats_inc(q, GW_QS_EXPIRED, 1);
    GT_LOG(DEBUG, "amqp", "a message expired in queue '%.*s'", (int)q->nlen, q->name);
}

static void dl_done(void *arg, bool ok)
{
    (void)arg;
    (void)ok; /* never stored: nothing to ack or give back */
}

bool gw_ttl_expired(const gw_queue_t *q, int64_t store_ts, const uint8_t *rec, size_t len,
                    bool consumer, int64_t now)
{
    int64_t t;

    if ((t = eff_ttl(q, gw_ttl_rec_expiration(rec, len))) < 0)
        return false;
    if (t == 0)
        return !consumer || now > store_ts + GW_TTL_ZERO_GRACE_MS;
    return now >= store_ts + t;
}

/* Dead-lettered with reason `expired` (dropped without a DLX); the
 * delivery is acked once the dead-letter append is answered. */
void gw_ttl_expire_popped(gw_queue_t *q, const char *handle, const uint8_t *rec, size_t len,
                          const char *msg_id, uint32_t attempt)
{
    expired_log(q);
    gw_trace_dead(q, msg_id, rec, len, attempt, GW_DL_EXPIRED);
    gw_dead_letter_ack(q, rec, len, GW_DL_EXPIRED, handle);
}

bool gw_ttl_route_keep(gw_queue_t *q, int64_t exp, const uint8_t *rec, size_t len)
{
    if (eff_ttl(q, exp) != 0 || gw_queue_has_credit(q))
        return true;
    expired_log(q);
    gw_dead_letter(q, rec, len, GW_DL_EXPIRED, dl_done, NULL);
    return false;
}

/* ---- the head timer ---------------------------------------------------- */

static void arm(gw_queue_t *q, int64_t at)
{
    int64_t d;
    struct timeval tv;

    if (q->gone || q->b->stopping || q->ttl.head_ev == NULL ||
        (q->ttl.armed && q->ttl.head_at <= at))
        return;
    d = at - gw_wall_ms() + 1;
    if (d < 0)
        d = 0;
    tv.tv_sec = (time_t)(d / 1000);
    tv.tv_usec = (suseconds_t)(d % 1000) * 1000;
    q->ttl.armed = true;
    q->ttl.head_at = at;
    evtimer_add(q->ttl.head_ev, &tv);
}

void gw_ttl_appended(gw_queue_t *q, int64_t exp)
{
    int64_t t = eff_ttl(q, exp);

    if (t < 0)
        return;
    q->ttl.may_expire = true;
    if (t == 0 && !gw_queue_has_credit(q))
        arm(q, gw_wall_ms()); /* e.g. dead-lettered into a TTL-0 queue: expired at once */
    else
        arm(q, gw_wall_ms() + (t == 0 ? GW_TTL_ZERO_GRACE_MS : t));
}

void gw_ttl_requeued(gw_queue_t *q)
{
    if (q->ttl.may_expire)
        arm(q, gw_wall_ms());
}

static void head_cb(evutil_socket_t fd, short what, void *arg)
{
    gw_queue_t *q = arg;

    (void)fd;
    (void)what;
    q->ttl.armed = false;
    gw_ttl_sweep(q, NULL, NULL);
}

/* ---- sweeps ------------------------------------------------------------ */

typedef struct {
    gw_op_t op;
    gw_queue_t *q; /* ref */
    uint32_t asked;
    size_t n;
    gw_popped_t msgs[]; /* (gw_rec.h) */
} sweep_op_t;

static void sweep_pop(gw_queue_t *q, uint32_t max);

static void sweep_end(gw_queue_t *q)
{
    gw_ttl_wait_t *w = q->ttl.waiters;

    q->ttl.sweeping = false;
    q->ttl.waiters = NULL;
    while (w != NULL) {
        gw_ttl_wait_t *next = w->next;
        w->fn(w->arg);
        free(w);
        w = next;
    }
    if (q->ttl.again && !q->gone) {
        q->ttl.again = false;
        gw_ttl_sweep(q, NULL, NULL);
    }
    if (!q->ttl.sweeping && !q->gone)
        gw_queue_kick(q);
}

static void sweep_fn(gw_op_t *op)
{
    sweep_op_t *o = (sweep_op_t *)op;
    gw_queue_t *q = o->q;
    int64_t now = gw_wall_ms();
    size_t i = 0;
    bool more;

    if (op->err != GT_OK && op->err != GT_ENOTFOUND)
        GT_LOG(WARN, "amqp", "expiry sweep of %s failed: %s", q->id, gt_err_str(op->err));
    /* The expired run at the head goes; the rest goes back in place. */
    for (; i < o->n && !q->gone && o->msgs[i].body != NULL &&
           gw_ttl_expired(q, o->msgs[i].store_ts, o->msgs[i].body, o->msgs[i].len, false, now);
         i++) {
        gw_maxlen_taken(q, gw_maxlen_body_len(o->msgs[i].body, o->msgs[i].len));
        gw_ttl_expire_popped(q, o->msgs[i].handle, o->msgs[i].body, o->msgs[i].len,
                             o->msgs[i].msg_id, o->msgs[i].attempt);
    }
    more = op->err == GT_OK && o->n == o->asked && i == o->n && !q->gone;
    if (i < o->n && !q->gone && o->msgs[i].body != NULL) {
        int64_t t = eff_ttl(q, gw_ttl_rec_expiration(o->msgs[i].body, o->msgs[i].len));
        if (t >= 0)
            arm(q, o->msgs[i].store_ts + (t == 0 ? GW_TTL_ZERO_GRACE_MS : t));
    }
    if (o->n == 0 && op->err == GT_OK && q->ttl.msg_ttl < 0 && q->ttl.out_exp == 0 &&
        q->requeuing == 0)
        q->ttl.may_expire = false; /* empty, nothing out to come back: no expiry left */
    for (size_t k = i; k < o->n; k++)
        if (!q->gone)
            gw_msg_release(op->b, q, o->msgs[k].handle);
    for (size_t k = 0; k < o->n; k++)
        free(o->msgs[k].body);
    if (more)
        sweep_pop(q, GW_SWEEP_BATCH);
    else
        sweep_end(q);
    gw_queue_unref(q);
    free(o);
}

static void sweep_cb(void *arg, gt_err_t err, const st_popped_t *msgs, size_t n)
{
    sweep_op_t *o = arg, *big;

    o->op.err = err;
    if (err == GT_OK && n > 0) {
        if ((big = gw_popped_take(o, offsetof(sweep_op_t, msgs), msgs, n)) == NULL) {
            o->op.err = GT_ENOMEM; /* the popped ones come back after their invisibility */
            gw_op_post(&o->op);
            return;
        }
        o = big;
        o->n = n;
    }
    gw_op_post(&o->op);
}

/* The head alone first (usually not expired: one message popped and
 * given back); batches while everything popped was expired. */
static void sweep_pop(gw_queue_t *q, uint32_t max)
{
    gw_broker_t *b = q->b;
    sweep_op_t *o = gw_op_new(b, sizeof(*o), sweep_fn);
    st_pop_req_t req;

    if (o == NULL) {
        sweep_end(q);
        return;
    }
    gw_queue_ref(q);
    o->q = q;
    o->asked = max;
    memset(&req, 0, sizeof(req));
    req.group = q->id;
    req.topic = q->id;
    req.queue_id = ST_QUEUE_ANY;
    req.high_first = q->args.max_priority > 0;
    req.max = max;
    req.invisible_ms = b->invisible_ms;
    st_pop(b->store, &req, sweep_cb, o);
}

static bool add_waiter(gw_queue_t *q, void (*fn)(void *), void *arg)
{
    gw_ttl_wait_t *w, **pp;

    if (fn == NULL)
        return true;
    if ((w = calloc(1, sizeof(*w))) == NULL)
        return false;
    w->fn = fn;
    w->arg = arg;
    for (pp = &q->ttl.waiters; *pp != NULL; pp = &(*pp)->next)
        ;
    *pp = w;
    return true;
}

void gw_ttl_sweep(gw_queue_t *q, void (*fn)(void *arg), void *arg)
{
    if (q->ttl.sweeping) {
        if (fn == NULL)
            q->ttl.again = true;
        else if (!add_waiter(q, fn, arg))
            fn(arg);
        return;
    }
    if (!q->ttl.may_expire || !q->ready || q->gone || q->b->stopping) {
        if (fn != NULL)
            fn(arg);
        return;
    }
    if (!add_waiter(q, fn, arg)) {
        fn(arg);
        return;
    }
    q->ttl.sweeping = true;
    sweep_pop(q, 1);
}

bool gw_ttl_busy(const gw_queue_t *q) { return q->ttl.sweeping; }

void gw_ttl_after_sweep(gw_queue_t *q, void (*fn)(void *arg), void *arg)
{
    if (!q->ttl.sweeping || !add_waiter(q, fn, arg))
        fn(arg);
}

/* ---- x-expires --------------------------------------------------------- */

/* The lease is timed on CLOCK_MONOTONIC read here, not by the timer alone:
 * libevent's timers run on CLOCK_MONOTONIC_COARSE (a tick of a few ms)
 * cached for a loop round, so exp_ev may fire a few ms before x-expires
 * has passed; exp_cb then waits for the rest. */
static int64_t mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void exp_arm(gw_queue_t *q, int64_t us)
{
    struct timeval tv;

    tv.tv_sec = (time_t)(us / 1000000);
    tv.tv_usec = (suseconds_t)(us % 1000000);
    evtimer_add(q->ttl.exp_ev, &tv);
}

static void exp_cb(evutil_socket_t fd, short what, void *arg)
{
    gw_queue_t *q = arg;
    int64_t left;

    (void)fd;
    (void)what;
    if (q->gone || q->nconsumers > 0 || q->b->stopping)
        return;
    left = q->ttl.unused_us + q->ttl.expires * 1000 - mono_us();
    if (left > 0) {
        exp_arm(q, left);
        return;
    }
    GT_LOG(INFO, "amqp", "queue '%.*s' unused for %" PRId64 " ms (x-expires): deleted",
           (int)q->nlen, q->name, q->ttl.expires);
    gw_queue_drop(q);
}

void gw_ttl_touch(gw_queue_t *q)
{
    if (q->ttl.expires <= 0 || q->ttl.exp_ev == NULL || q->gone)
        return;
    event_del(q->ttl.exp_ev);
    if (q->nconsumers > 0)
        return;
    q->ttl.unused_us = mono_us();
    exp_arm(q, q->ttl.expires * 1000);
}

/* ---- life cycle -------------------------------------------------------- */

bool gw_ttl_from_args(gw_queue_t *q)
{
    return gw_ttl_init(q, q->args.has_message_ttl ? q->args.message_ttl : -1,
                       q->args.has_expires ? q->args.expires : 0);
}

bool gw_ttl_init(gw_queue_t *q, int64_t msg_ttl, int64_t expires)
{
    q->ttl.msg_ttl = msg_ttl;
    q->ttl.expires = expires;
    q->ttl.may_expire = msg_ttl >= 0;
    if (q->ttl.head_ev == NULL && (q->ttl.head_ev = evtimer_new(q->b->base, head_cb, q)) == NULL)
        return false;
    if (expires > 0 && q->ttl.exp_ev == NULL &&
        (q->ttl.exp_ev = evtimer_new(q->b->base, exp_cb, q)) == NULL)
        return false;
    return true;
}

void gw_ttl_loaded(gw_queue_t *q)
{
    /* Messages of the last run may carry expirations: look at the head
     * once; a durable queue's x-expires lease starts anew. */
    q->ttl.may_expire = true;
    arm(q, gw_wall_ms());
    gw_ttl_touch(q);
}

void gw_ttl_stop(gw_queue_t *q)
{
    if (q->ttl.head_ev != NULL)
        event_del(q->ttl.head_ev);
    if (q->ttl.exp_ev != NULL)
        event_del(q->ttl.exp_ev);
    q->ttl.armed = false;
}

void gw_ttl_free(gw_queue_t *q)
{
    if (q->ttl.head_ev != NULL)
        event_free(q->ttl.head_ev);
    if (q->ttl.exp_ev != NULL)
        event_free(q->ttl.exp_ev);
    q->ttl.head_ev = q->ttl.exp_ev = NULL;
}
