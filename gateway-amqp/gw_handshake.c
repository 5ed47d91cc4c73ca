/* The AMQP 0-9-1 connection handshake of the gateway's connection layer
 * (gw_server.c hands it the protocol header and the connection-class
 * methods before the connection is open): connection.start with the
 * server properties, start-ok (SASL PLAIN / AMQPLAIN login through
 * gw_auth), tune / tune-ok (RabbitMQ's negotiation rules), and open
 * (the vhost grant, the broker's connection state, the operator's list
 * and the heartbeat).  Runs on the gateway's event-loop thread. */
#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "gt_log.h"
#include "gw_auth.h"
#include "gw_codec.h"
#include "gw_int.h"
#include "gw_server_int.h"


/* The RabbitMQ release whose AMQP dialect the gateway follows. */
#define GW_RABBITMQ_DIALECT "3.10.8"

#ifndef GANTRY_VERSION
#define GANTRY_VERSION "dev"
#endif

void gw_conn_send_start(gw_conn_t *c)
{
    uint8_t tbuf[1024];
    gw_tbuild_t b;
    gw_table_t props;
    gw_method_t m = {.id = GW_CONNECTION_START};
    static const char *const caps[] = {
        "publisher_confirms",     "exchange_exchange_bindings", "basic.nack",
        "consumer_cancel_notify", "connection.blocked",         "authentication_failure_close",
        "per_consumer_qos",       "direct_reply_to",
    };

    gw_tbuild_init(&b, tbuf, sizeof(tbuf));
    gw_tbuild_table_begin(&b, "capabilities");
    for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++)
        gw_tbuild_bool(&b, caps[i], true);
    gw_tbuild_end(&b);
    gw_tbuild_string(&b, "cluster_name", c->srv->cluster_name);
    gw_tbuild_string(&b, "copyright", "Gantry contributors");
    gw_tbuild_string(&b, "gantry_version", GANTRY_VERSION);
    gw_tbuild_string(&b, "information",
                     "Gantry " GANTRY_VERSION ": an AMQP 0-9-1 gateway "
                     "speaking RabbitMQ 3.10's dialect");
    gw_tbuild_string(&b, "platform", "C11 / libevent " LIBEVENT_VERSION);
    /* Clients and their suites check product == "RabbitMQ" (amqplib's
     * connect.js does; so do libraries that turn RabbitMQ's extensions
     * on by it): by default Gantry answers as the server whose dialect
     * it speaks, with RabbitMQ's version of that dialect; its own name
     * and version are in information / gantry_version. */
    gw_tbuild_string(&b, "product", c->srv->product);
    gw_tbuild_string(&b, "version", strcmp(c->srv->product, "RabbitMQ") == 0
                                        ? GW_RABBITMQ_DIALECT
                                        : GANTRY_VERSION);
    if (gw_tbuild_finish(&b, &props) != GT_OK) {
        gw_conn_finish(c);
        return;
    }
    m.u.connection_start.version_major = 0;
    m.u.connection_start.version_minor = 9;
    m.u.connection_start.server_properties = props;
    m.u.connection_start.mechanisms = (gw_bytes_t){(const uint8_t *)"PLAIN AMQPLAIN", 14};
    m.u.connection_start.locales = (gw_bytes_t){(const uint8_t *)"en_US", 5};
    gw_conn_send_method_any(c, 0, &m);
    c->state = CS_START_OK;
}

/* Splits the SASL response into user and password (borrowed). */
static bool sasl_credentials(const gw_connection_start_ok_t *so, gw_str_t *user, gw_str_t *pass)
{
    const uint8_t *p = so->response.ptr;
    size_t n = so->response.len;

    if (gw_str_eq(so->mechanism, "PLAIN")) {
        /* [authzid] NUL authcid NUL passwd */
        const uint8_t *z1 = memchr(p, 0, n), *z2;
        if (z1 == NULL)
            return false;
        z2 = memchr(z1 + 1, 0, n - (size_t)(z1 + 1 - p));
        if (z2 == NULL)
            return false;
        *user = (gw_str_t){(const char *)z1 + 1, (size_t)(z2 - z1 - 1)};
        *pass = (gw_str_t){(const char *)z2 + 1, n - (size_t)(z2 + 1 - p)};
        return true;
    }
    if (gw_str_eq(so->mechanism, "AMQPLAIN")) {
        gw_table_t t = {p, n};
        gw_value_t lv, pv;
        if (gw_table_validate(p, n) != GT_OK || !gw_table_get(t, "LOGIN", &lv) ||
            !gw_table_get(t, "PASSWORD", &pv) || lv.type != 'S' || pv.type != 'S')
            return false;
        *user = (gw_str_t){(const char *)lv.v.bytes.ptr, lv.v.bytes.len};
        *pass = (gw_str_t){(const char *)pv.v.bytes.ptr, pv.v.bytes.len};
        return true;
    }
    return false;
}

/* A client property's text (long string) into out, "" when absent; bytes
 * that are not printable ASCII become '?'. */
static void prop_string(gw_table_t t, const char *key, char *out, size_t cap)
{
    gw_value_t v;
    size_t n = 0;

    if (gw_table_get(t, key, &v) && v.type == 'S')
        for (; n < v.v.bytes.len && n + 1 < cap; n++) {
            unsigned char ch = v.v.bytes.ptr[n];
            out[n] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
        }
    out[n] = '\0';
}

void gw_conn_on_start_ok(gw_conn_t *c, const gw_method_t *m)
{
    const gw_connection_start_ok_t *so = &m->u.connection_start_ok;
    gw_value_t caps, afc;
    gw_str_t user = {0}, pass = {0};
    gw_method_t tune = {.id = GW_CONNECTION_TUNE};
    char why[256];
    bool ok;

    if (gw_table_get(so->client_properties, "capabilities", &caps) && caps.type == 'F' &&
        gw_table_get(caps.v.table, "authentication_failure_close", &afc) && afc.type == 't')
        c->auth_failure_close = afc.v.i != 0;
    if (caps.type == 'F' && gw_table_get(caps.v.table, "consumer_cancel_notify", &afc) &&
        afc.type == 't')
        c->cancel_notify = afc.v.i != 0;
    if (caps.type == 'F' && gw_table_get(caps.v.table, "connection.blocked", &afc) &&
        afc.type == 't')
        c->blocked_notify = afc.v.i != 0;
    prop_string(so->client_properties, "product", c->product, sizeof(c->product));
    prop_string(so->client_properties, "version", c->version, sizeof(c->version));
    if (!gw_str_eq(so->mechanism, "PLAIN") && !gw_str_eq(so->mechanism, "AMQPLAIN")) {
        gw_conn_error(c, GW_COMMAND_INVALID, m->id, "unknown authentication mechanism '%.*s'",
                   (int)(so->mechanism.len > 64 ? 64 : so->mechanism.len), so->mechanism.ptr);
        return;
    }
    ok = sasl_credentials(so, &user, &pass);
    snprintf(c->user, sizeof(c->user), "%.*s", (int)(user.len > 63 ? 63 : user.len),
             user.ptr != NULL ? user.ptr : "");
    c->auth_user = ok ? gw_auth_login(atomic_load(&c->srv->auth), user, pass, c->loopback, why, sizeof(why))
                      : NULL;
    if (c->auth_user == NULL) {
        GT_LOG(INFO, "amqp", "%s: %.*s login refused: %s", c->peer, (int)so->mechanism.len,
               so->mechanism.ptr, ok ? why : "malformed response");
        if (c->auth_failure_close) {
            gw_conn_error(c, GW_ACCESS_REFUSED, m->id,
                       "Login was refused using authentication mechanism %.*s. For details "
                       "see the broker logfile.",
                       (int)so->mechanism.len, so->mechanism.ptr);
        } else {
            gw_conn_finish(c);
        }
        return;
    }
    tune.u.connection_tune.channel_max = c->srv->channel_max;
    tune.u.connection_tune.frame_max = c->srv->frame_max;
    tune.u.connection_tune.heartbeat = c->srv->heartbeat_s;
    gw_conn_send_method_any(c, 0, &tune);
    c->state = CS_TUNE_OK;
}

/* RabbitMQ's rule for a negotiated value: 0 means "no limit", which is
 * over any server limit; a non-zero value must lie in [min, max]. */
static bool tune_value_ok(gw_conn_t *c, const char *name, uint32_t v, uint32_t min, uint32_t max)
{
    if (v != 0 && v < min) {
        gw_conn_error(c, GW_NOT_ALLOWED, GW_CONNECTION_TUNE,
                   "negotiated %s = %u is lower than the minimum allowed value (%u)", name, v,
                   min);
        return false;
    }
    if (v == 0 || v > max) {
        gw_conn_error(c, GW_NOT_ALLOWED, GW_CONNECTION_TUNE,
                   "negotiated %s = %u is higher than the maximum allowed value (%u)", name, v,
                   max);
        return false;
    }
    return true;
}

void gw_conn_on_tune_ok(gw_conn_t *c, const gw_method_t *m)
{
    const gw_connection_tune_t *t = &m->u.connection_tune;

    if (!tune_value_ok(c, "channel_max", t->channel_max, 0, c->srv->channel_max) ||
        !tune_value_ok(c, "frame_max", t->frame_max, GW_FRAME_MIN_SIZE, c->srv->frame_max))
        return;
    c->channel_max = t->channel_max;
    c->frame_max = t->frame_max;
    c->heartbeat = t->heartbeat;
    gw_parser_set_frame_max(&c->parser, c->frame_max);
    c->state = CS_OPEN;
}


void gw_conn_on_open(gw_conn_t *c, const gw_method_t *m)
{
    gw_method_t ok = {.id = GW_CONNECTION_OPEN_OK};
    char why[GW_REPLY_TEXT_MAX + 1];

    c->grant = gw_auth_open(atomic_load(&c->srv->auth), c->auth_user, m->u.connection_open.virtual_host, why,
                            sizeof(why));
    if (c->grant == NULL) {
        gw_conn_error(c, GW_NOT_ALLOWED, m->id, "%s", why);
        return;
    }
    if (c->srv->broker != NULL && (c->bc = gw_broker_conn_open(c->srv->broker, c)) == NULL) {
        gw_conn_error(c, GW_INTERNAL_ERROR, m->id, "out of memory");
        return;
    }
    gw_conn_send_method_any(c, 0, &ok);
    c->state = CS_RUNNING;
    event_del(c->deadline);
    {
        gw_server_t *s = c->srv;
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        c->since_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
        pthread_mutex_lock(&s->reg_mu);
        c->id = ++s->next_conn_id;
        c->onext = s->open_conns;
        if (s->open_conns != NULL)
            s->open_conns->oprev = c;
        s->open_conns = c;
        c->listed = true;
        pthread_mutex_unlock(&s->reg_mu);
    }
    if (c->heartbeat > 0) {
        /* Ticks at half the interval: a heartbeat goes out when nothing
         * was sent for about an interval, and a peer silent for two
         * intervals is dropped (as RabbitMQ does, without a close). */
        struct timeval tv = ms_tv((uint32_t)c->heartbeat * 500u);
        c->hb = event_new(c->srv->base, -1, EV_PERSIST, gw_conn_hb_cb, c);
        if (c->hb != NULL)
            event_add(c->hb, &tv);
    }
    GT_LOG(DEBUG, "amqp", "%s: open (user %s, vhost %s, channel_max %u, frame_max %u, "
           "heartbeat %u)", c->peer, c->user, gw_grant_vhost(c->grant), c->channel_max,
           c->frame_max, c->heartbeat);
}
