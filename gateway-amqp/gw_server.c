/* The AMQP 0-9-1 gateway's connection layer on libevent 2.1 (see
 * gw_server.h).  One event_base in one thread holds the listener and
 * every connection; gw_server_stop wakes it through an event made
 * active from the caller's thread (libevent's pthread locking is on).
 * The loop runs one round of events at a time and then the front end's
 * after_event hook (gw_server_opts_t), which runs the store answers this
 * thread's own store calls queued (an ack, a pop that found messages)
 * here instead of waking an executor thread for each.
 *
 * A connection reads into its gw_parser_t (bounded by frame_max) and
 * answers through its bufferevent's output buffer.  Output only grows in
 * answer to input (plus one heartbeat per interval), so when the output
 * holds more than out_limit bytes the connection stops reading until the
 * peer has taken half of it: a peer that stops reading costs a bounded
 * amount of memory.
 *
 * Errors are RabbitMQ's: a bad protocol header gets the supported header
 * and a close; a framing error gets connection.close (501) and the socket
 * is closed once the close is written (the stream can no longer be
 * parsed); a method-level error gets connection.close and the server
 * waits (CLOSE_WAIT_MS) for close-ok.
 *
 * AMQPS: a second listener (amqp.tls_listen) whose connections run through
 * libevent's OpenSSL bufferevents (gw_tls.c holds the context); past the
 * handshake they are the same connections.
 *
 * The handshake (connection.start to open) is gw_handshake.c's; the
 * structs both use are in gw_server_int.h. */
#include "gw_bridge.h"
#include "gw_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "gt_addr.h"
#include "gt_log.h"
#include "gw_auth.h"
#include "gw_codec.h"
#include "gw_int.h"
#include "gw_metrics.h"
#include "gw_ops.h"
#include "gw_server_int.h"
#include "gw_tls.h"

#include <openssl/ssl.h>

/* ---- connection lifetime --------------------------------------------- */

/* Ends what the connection holds besides its socket: the operator's
 * listing and the broker's state (channels, consumers, unacked deliveries
 * requeued).  Idempotent. */
static void conn_release(gw_conn_t *c)
{
    gw_server_t *s = c->srv;

    if (c->listed) {
        pthread_mutex_lock(&s->reg_mu);
        if (c->oprev != NULL)
            c->oprev->onext = c->onext;
        else
            s->open_conns = c->onext;
        if (c->onext != NULL)
            c->onext->oprev = c->oprev;
        c->listed = false;
        pthread_mutex_unlock(&s->reg_mu);
    }
    gw_broker_conn_close(c->bc);
    c->bc = NULL;
}

static void conn_free(gw_conn_t *c)
{
    gw_server_t *s = c->srv;

    conn_release(c);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    if (c->resume != NULL)
        event_free(c->resume);
    if (c->deadline != NULL)
        event_free(c->deadline);
    if (c->hb != NULL)
        event_free(c->hb);
    bufferevent_free(c->bev);
    gw_parser_free(&c->parser);
    free(c->chan);
    free(c);
}

static size_t out_len(const gw_conn_t *c)
{
    return evbuffer_get_length(bufferevent_get_output(c->bev));
}

static void set_deadline(gw_conn_t *c, uint32_t ms)
{
    struct timeval tv = ms_tv(ms);

    event_add(c->deadline, &tv);
}

/* Ends the connection: no more frames are taken, its output is written,
 * then it lingers (conn_reap) until the peer closes, at most CLOSE_WAIT_MS
 * from here.  What the peer still sends is read and dropped: a socket
 * closed with unread input is reset, and the reset can reach the client
 * before the close-ok it has not read yet (amqplib's close() then never
 * returns).  RabbitMQ, too, waits for the client to close after close-ok. */
void gw_conn_finish(gw_conn_t *c)
{
    c->state = CS_DEAD;
    bufferevent_enable(c->bev, EV_READ);
    if (c->hb != NULL)
        event_del(c->hb);
    set_deadline(c, GW_CLOSE_WAIT_MS);
}

/* Once a finished connection's output is written: its broker state goes,
 * and a plain socket is shut for writing (the peer reads the end after
 * the last frame); the socket itself goes when the peer closes (event_cb)
 * or at the deadline.  true when c is finished and written: the caller
 * must not use it for frames. */
static bool conn_reap(gw_conn_t *c)
{
    if (c->state != CS_DEAD || out_len(c) != 0)
        return false;
    if (!c->lingering) {
        c->lingering = true;
        conn_release(c);
        if (!c->tls)
            shutdown(bufferevent_getfd(c->bev), SHUT_WR);
    }
    return true;
}

/* ---- output ---------------------------------------------------------- */

static void send_bytes(gw_conn_t *c, const void *p, size_t n)
{
    evbuffer_add(bufferevent_get_output(c->bev), p, n);
    c->last_out_ms = now_ms();
}

void gw_conn_send_method_any(gw_conn_t *c, uint16_t ch, const gw_method_t *m)
{
    uint8_t stack[1024], *buf = stack;
    size_t need = gw_method_size(m) + GW_FRAME_OVERHEAD, len = 0;

    if (need > sizeof(stack) && (buf = malloc(need)) == NULL) {
        gw_conn_finish(c);
        return;
    }
    if (gw_method_frame(ch, m, buf, need, &len) == GT_OK)
        send_bytes(c, buf, len);
    else
        GT_LOG(ERROR, "amqp", "%s: cannot encode method %08x", c->peer, (unsigned)m->id);
    if (buf != stack)
        free(buf);
}

void gw_conn_send_method(gw_conn_t *c, uint16_t ch, const gw_method_t *m)
{
    if (c->state == CS_RUNNING)
        gw_conn_send_method_any(c, ch, m);
}

void gw_conn_send_content(gw_conn_t *c, uint16_t ch, const gw_method_t *m, gw_bytes_t raw_props,
                          const void *body, size_t body_len)
{
    size_t msize = gw_method_size(m) + GW_FRAME_OVERHEAD, len = 0, clen = 0;
    size_t need = msize + gw_content_size(NULL, raw_props, body_len, c->frame_max);
    uint8_t *buf;

    if (c->state != CS_RUNNING)
        return;
    if ((buf = malloc(need)) == NULL) {
        GT_LOG(ERROR, "amqp", "%s: out of memory for a %zu-byte delivery", c->peer, need);
        return;
    }
    if (gw_method_frame(ch, m, buf, need, &len) == GT_OK &&
        gw_content_encode(ch, NULL, raw_props, body, body_len, c->frame_max, buf + len,
                          need - len, &clen) == GT_OK)
        send_bytes(c, buf, len + clen);
    else
        GT_LOG(ERROR, "amqp", "%s: cannot encode %08x with content", c->peer, (unsigned)m->id);
    free(buf);
}

size_t gw_conn_out_len(const gw_conn_t *c)
{
    return out_len(c);
}

size_t gw_conn_out_limit(const gw_conn_t *c)
{
    return c->srv->out_limit;
}

uint32_t gw_conn_frame_max(const gw_conn_t *c)
{
    return c->frame_max;
}

const gw_grant_t *gw_conn_grant(const gw_conn_t *c)
{
    return c->grant;
}

uint64_t gw_conn_max_message_size(const gw_conn_t *c)
{
    return c->srv->max_message_size;
}

uint32_t gw_conn_consumer_timeout_ms(const gw_conn_t *c)
{
    return c->srv->consumer_timeout_ms;
}

bool gw_conn_cancel_notify(const gw_conn_t *c)
{
    return c->cancel_notify;
}

bool gw_conn_blocked_notify(const gw_conn_t *c)
{
    return c->blocked_notify;
}

bool gw_conn_running(const gw_conn_t *c)
{
    return c->state == CS_RUNNING;
}

const char *gw_conn_peer(const gw_conn_t *c)
{
    return c->peer;
}

/* Reading is on unless the peer does not read or frames are stalled. */
static void conn_set_reading(gw_conn_t *c)
{
    if (c->state == CS_DEAD)
        return;
    if (c->paused || c->stall > 0)
        bufferevent_disable(c->bev, EV_READ);
    else
        bufferevent_enable(c->bev, EV_READ);
}

void gw_conn_stall(gw_conn_t *c)
{
    if (c->stall++ == 0)
        conn_set_reading(c);
}

void gw_conn_unstall(gw_conn_t *c)
{
    if (c->stall > 0 && --c->stall == 0 && c->resume != NULL)
        event_active(c->resume, 0, 0);
}

/* Sends connection.close for f and waits for close-ok (framing errors:
 * closes once written, since nothing more can be parsed). */
static void conn_fail(gw_conn_t *c, const gw_fault_t *f, bool framing)
{
    gw_method_t m;

    GT_LOG(INFO, "amqp", "%s: closing the connection: %s", c->peer, f->text);
    gw_fault_close(f, false, &m);
    gw_conn_send_method_any(c, 0, &m);
    if (framing) {
        gw_conn_finish(c);
        return;
    }
    c->state = CS_CLOSING;
    if (c->hb != NULL)
        event_del(c->hb);
    set_deadline(c, GW_CLOSE_WAIT_MS);
}

static void conn_verror(gw_conn_t *c, uint16_t code, uint32_t mid, const char *fmt, va_list ap)
{
    gw_fault_t f;
    char text[GW_REPLY_TEXT_MAX + 1];

    if (c->state == CS_CLOSING || c->state == CS_DEAD)
        return;
    vsnprintf(text, sizeof(text), fmt, ap);
    gw_fault_set(&f, code, (uint16_t)(mid >> 16), (uint16_t)(mid & 0xffff), "%s", text);
    conn_fail(c, &f, false);
}

void gw_conn_error(gw_conn_t *c, uint16_t code, uint32_t mid, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    conn_verror(c, code, mid, fmt, ap);
    va_end(ap);
}

#define conn_error gw_conn_error

void gw_conn_channel_error(gw_conn_t *c, uint16_t ch, uint16_t code, uint32_t mid,
                           const char *fmt, ...)
{
    gw_fault_t f;
    gw_method_t m;
    char text[GW_REPLY_TEXT_MAX + 1];
    va_list ap;

    if (c->state != CS_RUNNING || c->chan[ch] != CH_OPEN)
        return;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    gw_fault_set(&f, code, (uint16_t)(mid >> 16), (uint16_t)(mid & 0xffff), "%s", text);
    GT_LOG(DEBUG, "amqp", "%s: closing channel %u: %s", c->peer, ch, f.text);
    gw_fault_close(&f, true, &m);
    gw_conn_send_method_any(c, ch, &m);
    c->chan[ch] = CH_CLOSING;
    atomic_fetch_sub(&c->nchan, 1);
    if (c->bc != NULL)
        gw_broker_chan_close(c->bc, ch);
}

/* ---- running --------------------------------------------------------- */

static void on_channel_method(gw_conn_t *c, uint16_t ch, const gw_method_t *m)
{
    const gw_method_info_t *mi = gw_method_info(m->id);
    uint16_t cls = (uint16_t)(m->id >> 16);

    if (c->chan[ch] == CH_CLOSING) {
        /* After our channel.close only close and close-ok count. */
        if (m->id == GW_CHANNEL_CLOSE_OK) {
            c->chan[ch] = CH_CLOSED;
        } else if (m->id == GW_CHANNEL_CLOSE) {
            gw_method_t r = {.id = GW_CHANNEL_CLOSE_OK};
            gw_conn_send_method_any(c, ch, &r);
        }
        return;
    }
    if (c->chan[ch] == CH_CLOSED) {
        gw_method_t r = {.id = GW_CHANNEL_OPEN_OK};
        if (m->id != GW_CHANNEL_OPEN) {
            conn_error(c, GW_CHANNEL_ERROR, m->id, "expected 'channel.open'");
            return;
        }
        if (c->bc != NULL && !gw_broker_chan_open(c->bc, ch)) {
            conn_error(c, GW_INTERNAL_ERROR, m->id, "cannot open channel %u", ch);
            return;
        }
        c->chan[ch] = CH_OPEN;
        atomic_fetch_add(&c->nchan, 1);
        gw_conn_send_method_any(c, ch, &r);
        return;
    }
    if (mi == NULL || !(mi->from & GW_FROM_CLIENT) || cls == GW_CLASS_CONNECTION) {
        conn_error(c, GW_COMMAND_INVALID, m->id, "%s is not allowed on channel %u",
                   mi != NULL ? mi->name : "method", ch);
        return;
    }
    switch (m->id) {
    case GW_CHANNEL_OPEN:
        conn_error(c, GW_CHANNEL_ERROR, m->id, "second 'channel.open' seen");
        return;
    case GW_CHANNEL_CLOSE: {
        gw_method_t r = {.id = GW_CHANNEL_CLOSE_OK};
        c->chan[ch] = CH_CLOSED;
        atomic_fetch_sub(&c->nchan, 1);
        if (c->bc != NULL)
            gw_broker_chan_close(c->bc, ch);
        gw_conn_send_method_any(c, ch, &r);
        return;
    }
    case GW_CHANNEL_CLOSE_OK:
        return; /* we never sent channel.close on this channel: ignored */
    case GW_CHANNEL_FLOW: {
        gw_method_t r = {.id = GW_CHANNEL_FLOW_OK};
        if (!m->u.channel_flow.active) {
            /* RabbitMQ dropped consumer-side flow control (3.3). */
            conn_error(c, GW_NOT_IMPLEMENTED, m->id, "active=false");
            return;
        }
        r.u.channel_flow.active = true;
        gw_conn_send_method_any(c, ch, &r);
        return;
    }
    case GW_CHANNEL_FLOW_OK:
        return;
    case GW_ACCESS_REQUEST: {
        gw_method_t r = {.id = GW_ACCESS_REQUEST_OK};
        r.u.access_request_ok.ticket = 1;
        gw_conn_send_method_any(c, ch, &r);
        return;
    }
    default:
        conn_error(c, GW_NOT_IMPLEMENTED, m->id,
                   "%s is not implemented by this gateway yet (no exchanges, queues or "
                   "messages)",
                   mi->name);
        return;
    }
}

static void on_connection_method(gw_conn_t *c, const gw_method_t *m)
{
    switch (m->id) {
    case GW_CONNECTION_CLOSE: {
        gw_method_t r = {.id = GW_CONNECTION_CLOSE_OK};
        gw_conn_send_method_any(c, 0, &r);
        gw_conn_finish(c);
        return;
    }
    case GW_CONNECTION_CLOSE_OK:
        if (c->state == CS_CLOSING)
            gw_conn_finish(c);
        return;
    default:
        break;
    }
    if (c->state == CS_CLOSING)
        return; /* only close / close-ok matter now */
    switch (c->state) {
    case CS_START_OK:
        if (m->id == GW_CONNECTION_START_OK) {
            gw_conn_on_start_ok(c, m);
            return;
        }
        break;
    case CS_TUNE_OK:
        if (m->id == GW_CONNECTION_TUNE_OK) {
            gw_conn_on_tune_ok(c, m);
            return;
        }
        break;
    case CS_OPEN:
        if (m->id == GW_CONNECTION_OPEN) {
            gw_conn_on_open(c, m);
            return;
        }
        break;
    case CS_RUNNING:
        if (m->id == GW_CONNECTION_UPDATE_SECRET) {
            /* Accepted as RabbitMQ's internal backend does: the secret is
             * not checked again (users with expiring secrets come later). */
            gw_method_t r = {.id = GW_CONNECTION_UPDATE_SECRET_OK};
            gw_conn_send_method_any(c, 0, &r);
            return;
        }
        break;
    default:
        break;
    }
    {
        const gw_method_info_t *mi = gw_method_info(m->id);
        conn_error(c, GW_COMMAND_INVALID, m->id, "unexpected %s in connection state %d",
                   mi != NULL ? mi->name : "method", (int)c->state);
    }
}

static void on_frame(gw_conn_t *c, const gw_frame_t *fr)
{
    gw_method_t m;
    gw_fault_t f;

    if (fr->type == 0) { /* the protocol header */
        gw_conn_send_start(c);
        return;
    }
    if (fr->type == GW_FRAME_HEARTBEAT)
        return;
    if (c->state == CS_CLOSING && fr->type != GW_FRAME_METHOD)
        return;
    if (fr->channel == 0 || c->state != CS_RUNNING) {
        if (fr->type != GW_FRAME_METHOD) {
            if (c->state == CS_CLOSING)
                return;
            conn_error(c, GW_UNEXPECTED_FRAME, 0,
                       "expected method frame, got non method frame instead");
            return;
        }
        if (gw_method_decode(fr->payload, fr->size, &m, &f) != GT_OK) {
            conn_fail(c, &f, false);
            return;
        }
        if (c->state == CS_CLOSING && m.id != GW_CONNECTION_CLOSE &&
            m.id != GW_CONNECTION_CLOSE_OK)
            return;
        if ((m.id >> 16) != GW_CLASS_CONNECTION || fr->channel != 0) {
            conn_error(c, c->state == CS_RUNNING ? GW_COMMAND_INVALID : GW_UNEXPECTED_FRAME,
                       m.id, "%s not allowed on channel %u in this state",
                       gw_method_info(m.id)->name, fr->channel);
            return;
        }
        on_connection_method(c, &m);
        return;
    }
    if (fr->channel > c->channel_max) {
        conn_error(c, GW_CHANNEL_ERROR, 0, "channel %u over the negotiated channel_max %u",
                   fr->channel, c->channel_max);
        return;
    }
    if (c->bc != NULL && c->chan[fr->channel] == CH_OPEN) {
        /* Classes exchange..tx go to the broker, through the channel's
         * assembler (publish: method, header, bodies). */
        gw_asm_out_t ev;
        gw_asm_t *a = gw_broker_asm(c->bc, fr->channel);
        uint16_t cls;

        if (a == NULL) {
            conn_error(c, GW_INTERNAL_ERROR, 0, "channel %u has no state", fr->channel);
            return;
        }
        if (gw_asm_frame(a, fr, &ev, &f) != GT_OK) {
            conn_fail(c, &f, false);
            return;
        }
        cls = (uint16_t)(ev.method.id >> 16);
        if (ev.event == GW_EV_METHOD &&
            (cls == GW_CLASS_CHANNEL || cls == GW_CLASS_ACCESS || cls == GW_CLASS_CONNECTION)) {
            on_channel_method(c, fr->channel, &ev.method);
            return;
        }
        gw_broker_event(c->bc, fr->channel, &ev, fr);
        return;
    }
    if (fr->type != GW_FRAME_METHOD) {
        if (c->chan[fr->channel] == CH_CLOSING)
            return;
        if (c->chan[fr->channel] == CH_CLOSED)
            conn_error(c, GW_CHANNEL_ERROR, 0, "expected 'channel.open'");
        else
            conn_error(c, GW_UNEXPECTED_FRAME, 0,
                       "expected method frame, got non method frame instead");
        return;
    }
    if (gw_method_decode(fr->payload, fr->size, &m, &f) != GT_OK) {
        conn_fail(c, &f, false);
        return;
    }
    on_channel_method(c, fr->channel, &m);
}

/* ---- libevent callbacks ---------------------------------------------- */

static void read_cb(struct bufferevent *bev, void *arg)
{
    gw_conn_t *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    if (c->in_read)
        return; /* a store answer inside a frame: the outer loop goes on */
    if (c->state == CS_DEAD) { /* finished: input is dropped */
        evbuffer_drain(in, evbuffer_get_length(in));
        conn_reap(c);
        return;
    }
    c->in_read = true;
    c->last_in_ms = now_ms();
    while (c->state != CS_DEAD && c->stall == 0) {
        struct evbuffer_iovec v;
        gw_frame_t fr;
        gw_fault_t f;
        gt_err_t rc = GT_OK;
        size_t took = 0;

        if (out_len(c) > c->srv->out_limit) {
            /* The peer is not reading: stop reading it until it does. */
            bufferevent_disable(bev, EV_READ);
            c->paused = true;
            break;
        }
        if (evbuffer_peek(in, -1, NULL, &v, 1) > 0 && v.iov_len > 0) {
            took = gw_parser_feed(&c->parser, v.iov_base, v.iov_len);
            evbuffer_drain(in, took);
        }
        while (c->state != CS_DEAD && c->stall == 0 &&
               (rc = gw_parser_next(&c->parser, &fr, &f)) == GT_OK)
            on_frame(c, &fr);
        if (c->state == CS_DEAD || c->stall > 0)
            break;
        if (rc == GT_EINVAL) {
            if (f.bad_header) {
                GT_LOG(INFO, "amqp", "%s: bad protocol header", c->peer);
                send_bytes(c, gw_protocol_header, GW_HEADER_LEN);
                gw_conn_finish(c);
            } else {
                conn_fail(c, &f, true);
            }
            break;
        }
        if (rc == GT_ENOMEM) {
            gw_conn_finish(c);
            break;
        }
        if (took == 0 && evbuffer_get_length(in) == 0)
            break;
        if (took == 0)
            break; /* cannot happen: the parser takes what it can hold */
    }
    c->in_read = false;
    if (c->state != CS_DEAD)
        conn_set_reading(c);
    conn_reap(c);
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
    gw_conn_t *c = arg;

    (void)fd;
    (void)what;
    if (c->state == CS_DEAD || c->stall > 0)
        return;
    conn_set_reading(c);
    read_cb(c->bev, c);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    gw_conn_t *c = arg;

    if (conn_reap(c))
        return;
    if (c->paused && out_len(c) <= c->srv->out_limit / 2) {
        c->paused = false;
        conn_set_reading(c);
        read_cb(bev, c); /* what is buffered already */
        if (conn_reap(c))
            return;
    }
    if (c->bc != NULL && c->state == CS_RUNNING && out_len(c) <= c->srv->out_limit / 2)
        gw_broker_writable(c->bc);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    gw_conn_t *c = arg;

    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        GT_LOG(DEBUG, "amqp", "%s: connection closed by the peer%s", c->peer,
               (what & BEV_EVENT_ERROR) ? " (error)" : "");
        conn_free(c);
    }
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    gw_conn_t *c = arg;

    (void)fd;
    (void)what;
    if (c->state < CS_RUNNING)
        GT_LOG(INFO, "amqp", "%s: handshake timeout", c->peer);
    conn_free(c);
}

void gw_conn_hb_cb(evutil_socket_t fd, short what, void *arg)
{
    gw_conn_t *c = arg;
    int64_t now = now_ms(), iv = (int64_t)c->heartbeat * 1000;

    (void)fd;
    (void)what;
    if (now - c->last_in_ms >= 2 * iv) {
        GT_LOG(INFO, "amqp", "%s: missed heartbeats from the client, timeout: %us", c->peer,
               c->heartbeat);
        conn_free(c);
        return;
    }
    if (now - c->last_out_ms >= iv - iv / 4 && out_len(c) < c->srv->out_limit)
        send_bytes(c, gw_heartbeat_frame, sizeof(gw_heartbeat_frame));
}

static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_LOOPBACK(&a->sin6_addr))
            return true;
        return IN6_IS_ADDR_V4MAPPED(&a->sin6_addr) && a->sin6_addr.s6_addr[12] == 127;
    }
    return false;
}

/* A new connection on fd; `ssl` (owned, may be NULL) makes it AMQPS. */
static void conn_accept(gw_server_t *s, evutil_socket_t fd, struct sockaddr *sa, SSL *ssl)
{
    gw_conn_t *c = calloc(1, sizeof(*c));
    char host[INET6_ADDRSTRLEN] = "?";

    if (c == NULL) {
        SSL_free(ssl);
        evutil_closesocket(fd);
        return;
    }
    c->srv = s;
    if (ssl == NULL) {
        c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    } else {
        /* Frees ssl and closes fd on bufferevent_free; on failure libevent
         * 2.1 frees ssl but leaves fd open. */
        c->bev = bufferevent_openssl_socket_new(s->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                BEV_OPT_CLOSE_ON_FREE);
        if (c->bev == NULL) {
            evutil_closesocket(fd);
            free(c);
            return;
        }
        /* A client may close without close_notify: an end, not an error. */
        bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    }
    c->deadline = evtimer_new(s->base, deadline_cb, c);
    c->resume = event_new(s->base, -1, 0, resume_cb, c);
    c->chan = calloc((size_t)s->channel_max + 1, 1);
    if (c->bev == NULL || c->deadline == NULL || c->resume == NULL || c->chan == NULL) {
        if (c->bev != NULL)
            bufferevent_free(c->bev);
        else
            evutil_closesocket(fd);
        if (c->deadline != NULL)
            event_free(c->deadline);
        if (c->resume != NULL)
            event_free(c->resume);
        free(c->chan);
        free(c);
        return;
    }
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, host, sizeof(host));
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, host, sizeof(host));
    snprintf(c->peer, sizeof(c->peer), "%s:%u", host,
             sa->sa_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)sa)->sin6_port)
                                       : ntohs(((struct sockaddr_in *)sa)->sin_port));
    c->loopback = is_loopback(sa);
    c->tls = ssl != NULL;
    atomic_init(&c->nchan, 0);
    c->state = CS_HEADER;
    c->last_in_ms = c->last_out_ms = now_ms();
    gw_parser_init(&c->parser, GW_FRAME_MIN_SIZE, true);
    c->next = s->conns;
    if (s->conns != NULL)
        s->conns->prev = c;
    s->conns = c;
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    bufferevent_setwatermark(c->bev, EV_WRITE, s->out_limit / 2, 0);
    bufferevent_enable(c->bev, EV_READ);
    set_deadline(c, s->handshake_ms);
    GT_LOG(DEBUG, "amqp", "%s: accepted%s", c->peer, ssl != NULL ? " (AMQPS)" : "");
}

static void accept_cb(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    (void)lis;
    (void)salen;
    conn_accept(arg, fd, sa, NULL);
}

static void tls_accept_cb(struct evconnlistener *lis, evutil_socket_t fd,
                          struct sockaddr *sa, int salen, void *arg)
{
    gw_server_t *s = arg;
    SSL *ssl = gw_tls_ssl_new(s->tls);

    (void)lis;
    (void)salen;
    if (ssl == NULL) {
        GT_LOG(WARN, "amqp", "out of memory for an AMQPS connection");
        evutil_closesocket(fd);
        return;
    }
    conn_accept(s, fd, sa, ssl);
}

/* ---- the operator's view --------------------------------------------- */

/* The operator's close requests (loop thread): connection.close 320
 * CONNECTION_FORCED, as RabbitMQ's management API closes one; the socket
 * goes once the client answers close-ok or CLOSE_WAIT_MS passes.  After
 * the users changed (gw_server_set_auth), the connections of users that
 * are gone are closed the same way, as RabbitMQ closes a deleted user's
 * (since 3.7); a user whose password changed keeps its connections. */
static void close_req_cb(evutil_socket_t fd, short what, void *arg)
{
    gw_server_t *s = arg;
    uint64_t ids[GW_CLOSE_REQ_MAX];
    bool users_changed;
    size_t n;

    (void)fd;
    (void)what;
    pthread_mutex_lock(&s->reg_mu);
    n = s->nclose_req;
    memcpy(ids, s->close_req, n * sizeof(ids[0]));
    s->nclose_req = 0;
    users_changed = s->users_changed;
    s->users_changed = false;
    pthread_mutex_unlock(&s->reg_mu);
    if (users_changed) {
        const gw_auth_t *auth = atomic_load(&s->auth);

        for (gw_conn_t *c = s->open_conns, *next; c != NULL; c = next) {
            next = c->onext;
            if (c->state != CS_RUNNING || c->auth_user == NULL ||
                gw_auth_has_user(auth, gw_user_name(c->auth_user)))
                continue;
            GT_LOG(INFO, "amqp", "%s: connection %llu closed: user %s was deleted", c->peer,
                   (unsigned long long)c->id, c->user);
            gw_conn_error(c, GW_CONNECTION_FORCED, 0, "user '%s' was deleted",
                          gw_user_name(c->auth_user));
        }
    }
    for (size_t i = 0; i < n; i++)
        for (gw_conn_t *c = s->open_conns; c != NULL; c = c->onext)
            if (c->id == ids[i] && c->state == CS_RUNNING) {
                GT_LOG(INFO, "amqp", "%s: connection %llu (user %s) closed by the operator",
                       c->peer, (unsigned long long)c->id, c->user);
                gw_conn_error(c, GW_CONNECTION_FORCED, 0, "Closed via management plugin");
                break;
            }
}

uint64_t gw_conn_id(const gw_conn_t *c)
{
    return c->id;
}

gw_conn_info_t *gw_server_conns(gw_server_t *s, size_t *n)
{
    gw_conn_info_t *v = NULL;
    size_t k = 0, cap = 0;

    *n = 0;
    pthread_mutex_lock(&s->reg_mu);
    for (gw_conn_t *c = s->open_conns; c != NULL; c = c->onext)
        cap++;
    if (cap > 0 && (v = calloc(cap, sizeof(*v))) != NULL)
        for (gw_conn_t *c = s->open_conns; c != NULL && k < cap; c = c->onext, k++) {
            gw_conn_info_t *i = &v[k];

            i->id = c->id;
            i->since_ms = c->since_ms;
            i->channels = atomic_load(&c->nchan);
            i->tls = c->tls;
            snprintf(i->peer, sizeof(i->peer), "%s", c->peer);
            snprintf(i->user, sizeof(i->user), "%s", c->user);
            snprintf(i->vhost, sizeof(i->vhost), "%s", gw_grant_vhost(c->grant));
            snprintf(i->product, sizeof(i->product), "%s", c->product);
            snprintf(i->version, sizeof(i->version), "%s", c->version);
        }
    pthread_mutex_unlock(&s->reg_mu);
    *n = v != NULL ? k : 0;
    return v;
}

gt_err_t gw_server_conn_close(gw_server_t *s, uint64_t id)
{
    gt_err_t rc = GT_ENOTFOUND;

    pthread_mutex_lock(&s->reg_mu);
    for (gw_conn_t *c = s->open_conns; c != NULL; c = c->onext)
        if (c->id == id) {
            rc = GT_OK;
            break;
        }
    if (rc == GT_OK) {
        if (s->nclose_req < GW_CLOSE_REQ_MAX)
            s->close_req[s->nclose_req++] = id;
        else
            rc = GT_AGAIN;
    }
    pthread_mutex_unlock(&s->reg_mu);
    if (rc == GT_OK)
        event_active(s->close_ev, 0, 0);
    return rc;
}

/* ---- server ---------------------------------------------------------- */

static void stop_cb(evutil_socket_t fd, short what, void *arg)
{
    gw_server_t *s = arg;

    (void)fd;
    (void)what;
    gw_broker_stop(s->broker);
    while (s->conns != NULL)
        conn_free(s->conns);
    if (s->lis != NULL) {
        evconnlistener_free(s->lis);
        s->lis = NULL;
    }
    if (s->tls_lis != NULL) {
        evconnlistener_free(s->tls_lis);
        s->tls_lis = NULL;
    }
    s->stopped = true;
    event_base_loopbreak(s->base);
}

static void *loop_main(void *arg)
{
    gw_server_t *s = arg;

    pthread_setname_np(pthread_self(), "gw-amqp");
    if (s->after_event == NULL) {
        event_base_loop(s->base, EVLOOP_NO_EXIT_ON_EMPTY);
        return NULL;
    }
    /* One round of active events at a time, then the hook (stop_cb sets
     * stopped from inside a round, so no stop is missed between rounds). */
    while (!s->stopped) {
        if (event_base_loop(s->base, EVLOOP_ONCE | EVLOOP_NO_EXIT_ON_EMPTY) < 0)
            break;
        s->after_event(s->after_event_ctx);
    }
    s->after_event(s->after_event_ctx);
    return NULL;
}

/* The broker has read its durable metadata: connections are welcome. */
static void broker_ready(void *arg)
{
    gw_server_t *s = arg;

    s->ready = true;
    if (s->lis != NULL)
        evconnlistener_enable(s->lis);
    if (s->tls_lis != NULL)
        evconnlistener_enable(s->tls_lis);
}

static pthread_once_t threads_once = PTHREAD_ONCE_INIT;
static int threads_rc = -1;

static void threads_init(void)
{
    threads_rc = evthread_use_pthreads();
}

/* The AMQPS listener (before the loop thread starts). */
static gt_err_t tls_listen(gw_server_t *s, const gw_server_opts_t *o, char *err,
                           size_t errlen)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    gt_hostport_t hp;
    const char *why;
    char port[8];
    gt_err_t rc;
    int e;

    if (gt_hostport_parse(o->tls_listen, 0, &hp, &why) != GT_OK) {
        snprintf(err, errlen, "AMQPS: bad listen address '%s' (%s)", o->tls_listen, why);
        return GT_EINVAL;
    }
    if (o->tls_files == NULL) {
        snprintf(err, errlen, "AMQPS: no certificate files");
        return GT_EINVAL;
    }
    if ((rc = gw_tls_new(o->tls_files, &s->tls, err, errlen)) != GT_OK)
        return rc;
    snprintf(port, sizeof(port), "%u", hp.port);
    if ((e = getaddrinfo(hp.host, port, &hints, &ai)) != 0) {
        snprintf(err, errlen, "AMQPS: cannot listen on %s: %s", o->tls_listen, gai_strerror(e));
        return GT_EIO;
    }
    s->tls_lis = evconnlistener_new_bind(s->base, tls_accept_cb, s,
                                         LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                             LEV_OPT_CLOSE_ON_EXEC,
                                         128, ai->ai_addr, (int)ai->ai_addrlen);
    freeaddrinfo(ai);
    if (s->tls_lis == NULL) {
        int en = errno;
        snprintf(err, errlen, "AMQPS: cannot listen on %s: %s", o->tls_listen, strerror(en));
        return en == EADDRINUSE ? GT_EBUSY : GT_EIO;
    }
    if (s->broker != NULL && !s->ready)
        evconnlistener_disable(s->tls_lis);
    if (getsockname(evconnlistener_get_fd(s->tls_lis), (struct sockaddr *)&ss, &sl) == 0)
        s->tls_port = ntohs(ss.ss_family == AF_INET6
                                ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                : ((struct sockaddr_in *)&ss)->sin_port);
    return GT_OK;
}

gt_err_t gw_server_start(const gw_server_opts_t *o, gw_server_t **out, char *err,
                         size_t errlen)
{
    gw_server_t *s;
    gt_hostport_t hp;
    const char *why;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    char port[8];
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    const cfg_amqp_t *amqp;
    cfg_t defaults;
    gt_err_t rc;
    int e;

    *out = NULL;
    if (gt_hostport_parse(o->listen, 0, &hp, &why) != GT_OK) {
        snprintf(err, errlen, "AMQP: bad listen address '%s' (%s)", o->listen, why);
        return GT_EINVAL;
    }
    pthread_once(&threads_once, threads_init);
    if (threads_rc != 0) {
        snprintf(err, errlen, "AMQP: cannot enable libevent's thread support");
        return GT_EIO;
    }
    if ((s = calloc(1, sizeof(*s))) == NULL) {
        snprintf(err, errlen, "AMQP: out of memory");
        return GT_ENOMEM;
    }
    pthread_mutex_init(&s->reg_mu, NULL);
    if (o->amqp != NULL) {
        amqp = o->amqp;
    } else {
        /* The config's defaults. */
        cfg_init(&defaults);
        amqp = &defaults.amqp;
    }
    s->heartbeat_s = (uint16_t)amqp->heartbeat;
    s->channel_max = (uint16_t)amqp->channel_max;
    s->frame_max = (uint32_t)amqp->frame_max;
    s->consumer_timeout_ms = (uint32_t)amqp->consumer_timeout_ms;
    s->max_message_size = (uint64_t)amqp->max_message_size;
    s->block_bytes = (uint64_t)amqp->flow_control_bytes;
    {
        double rel;
        uint64_t abs;
        char wwhy[160];
        if (amqp->memory_high_watermark != NULL &&
            cfg_watermark_parse(amqp->memory_high_watermark, &rel, &abs, wwhy, sizeof(wwhy)) ==
                GT_OK) {
            /* 0.0 blocks every publisher: a mark of one byte */
            s->mem_mark = rel >= 0 ? (uint64_t)(rel * (double)gw_flow_total_memory()) : abs;
            if (s->mem_mark == 0)
                s->mem_mark = 1;
        }
    }
    snprintf(s->product, sizeof(s->product), "%s",
             amqp->server_product != NULL ? amqp->server_product : "RabbitMQ");
    {
        gw_auth_t *auth = NULL;

        rc = gw_auth_new(amqp, o->auth, &auth, err, errlen);
        atomic_init(&s->auth, auth);
    }
    if (amqp == &defaults.amqp)
        cfg_free(&defaults);
    if (rc != GT_OK) {
        gw_server_stop(s);
        return rc;
    }
    s->handshake_ms = o->handshake_ms != 0 ? o->handshake_ms : 10000;
    s->after_event = o->after_event;
    s->after_event_ctx = o->after_event_ctx;
    s->metrics_max_queues = o->metrics_max_queues;
    s->out_limit = o->out_limit != 0 ? o->out_limit : GW_DEFAULT_OUT_LIMIT;
    snprintf(s->cluster_name, sizeof(s->cluster_name), "%s",
             o->cluster_name != NULL ? o->cluster_name : "gantry");
    if ((s->base = event_base_new()) == NULL ||
        (s->stop_ev = event_new(s->base, -1, 0, stop_cb, s)) == NULL ||
        (s->close_ev = event_new(s->base, -1, 0, close_req_cb, s)) == NULL) {
        snprintf(err, errlen, "AMQP: cannot create the event loop");
        goto fail;
    }
    if (o->store != NULL) {
        /* The smaller of amqp.max_message_size and what the store takes. */
        gw_broker_opts_t bo = {
            .max_message = o->max_message != 0 && o->max_message < s->max_message_size
                               ? o->max_message
                               : s->max_message_size,
            .consumer_timeout_ms = s->consumer_timeout_ms,
            .block_bytes = s->block_bytes,
            .mem_mark = s->mem_mark,
            .bridges = o->amqp != NULL ? o->amqp->bridges.v : NULL,
            .nbridges = o->amqp != NULL ? o->amqp->bridges.n : 0,
            .auto_create_topics = o->auto_create_topics,
            .amqp = o->amqp,
            .trace = o->trace,
        };
        s->broker = gw_broker_new(s->base, o->store, &bo, broker_ready, s);
    }
    if (o->store != NULL && s->broker == NULL) {
        snprintf(err, errlen, "AMQP: out of memory");
        goto fail;
    }
    snprintf(port, sizeof(port), "%u", hp.port);
    if ((e = getaddrinfo(hp.host, port, &hints, &ai)) != 0) {
        snprintf(err, errlen, "AMQP: cannot listen on %s: %s", o->listen, gai_strerror(e));
        goto fail;
    }
    s->lis = evconnlistener_new_bind(s->base, accept_cb, s,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                         LEV_OPT_CLOSE_ON_EXEC,
                                     128, ai->ai_addr, (int)ai->ai_addrlen);
    if (s->lis == NULL) {
        int en = errno;
        snprintf(err, errlen, "AMQP: cannot listen on %s: %s", o->listen, strerror(en));
        freeaddrinfo(ai);
        gw_server_stop(s);
        return en == EADDRINUSE ? GT_EBUSY : GT_EIO;
    }
    freeaddrinfo(ai);
    if (s->broker != NULL && !s->ready)
        evconnlistener_disable(s->lis); /* until the metadata is read back */
    if (getsockname(evconnlistener_get_fd(s->lis), (struct sockaddr *)&ss, &sl) == 0)
        s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    if (o->tls_listen != NULL && (rc = tls_listen(s, o, err, errlen)) != GT_OK) {
        gw_server_stop(s);
        return rc;
    }
    if (pthread_create(&s->thread, NULL, loop_main, s) != 0) {
        snprintf(err, errlen, "AMQP: cannot start the event-loop thread");
        goto fail;
    }
    s->thread_started = true;
    *out = s;
    return GT_OK;
fail:
    gw_server_stop(s);
    return GT_EIO;
}

bool gw_server_append_hook(void *arg, const char *topic, const st_message_t *msgs, size_t n,
                           st_append_cb cb, void *cb_arg)
{
    gw_server_t *s = arg;

    return s != NULL && s->broker != NULL &&
           gw_bridge_append_hook(s->broker, topic, msgs, n, cb, cb_arg);
}

int gw_server_port(const gw_server_t *s)
{
    return s->port;
}

int gw_server_tls_port(const gw_server_t *s)
{
    return s->tls_port;
}

gt_err_t gw_server_set_auth(gw_server_t *s, const cfg_amqp_t *amqp, const cfg_auth_t *auth,
                            char *err, size_t errlen)
{
    gw_auth_t *next = NULL, **old;
    gt_err_t rc;

    if (s == NULL)
        return GT_OK;
    if ((old = realloc(s->auth_old, (s->n_auth_old + 1) * sizeof(*old))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return GT_ENOMEM;
    }
    s->auth_old = old;
    if ((rc = gw_auth_new(amqp, auth, &next, err, errlen)) != GT_OK)
        return rc;
    s->auth_old[s->n_auth_old++] = atomic_exchange(&s->auth, next);
    /* the loop thread closes the connections of users that are gone */
    pthread_mutex_lock(&s->reg_mu);
    s->users_changed = true;
    pthread_mutex_unlock(&s->reg_mu);
    if (s->close_ev != NULL)
        event_active(s->close_ev, 0, 0);
    return GT_OK;
}

gt_err_t gw_server_tls_reload(gw_server_t *s, char *err, size_t errlen)
{
    return s != NULL && s->tls != NULL ? gw_tls_reload(s->tls, err, errlen) : GT_OK;
}

unsigned gw_server_admin(gw_server_t *s, const char *method, const char *url, char *text,
                         size_t cap)
{
    if (s->broker == NULL) {
        snprintf(text, cap, "the AMQP gateway has no store\n");
        return 404;
    }
    return gw_ops_http(s->broker, method, url, text, cap);
}

void gw_server_metrics(gw_server_t *s, FILE *out)
{
    if (s->broker != NULL) {
        gw_ops_metrics(s->broker, out);
        gw_metrics_write(s->broker, s->metrics_max_queues, out);
    }
}

void gw_server_stop(gw_server_t *s)
{
    if (s == NULL)
        return;
    if (s->thread_started) {
        event_active(s->stop_ev, 0, 0);
        pthread_join(s->thread, NULL);
    } else {
        while (s->conns != NULL)
            conn_free(s->conns);
        if (s->lis != NULL)
            evconnlistener_free(s->lis);
        if (s->tls_lis != NULL)
            evconnlistener_free(s->tls_lis);
    }
    gw_broker_free(s->broker); /* waits for its store requests */
    if (s->stop_ev != NULL)
        event_free(s->stop_ev);
    if (s->close_ev != NULL)
        event_free(s->close_ev);
    pthread_mutex_destroy(&s->reg_mu);
    if (s->base != NULL)
        event_base_free(s->base);
    gw_auth_free(atomic_load(&s->auth));
    for (size_t i = 0; i < s->n_auth_old; i++)
        gw_auth_free(s->auth_old[i]);
    free(s->auth_old);
    gw_tls_free(s->tls);
    free(s);
}
