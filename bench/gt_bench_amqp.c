/* gt_bench_amqp: an AMQP 0-9-1 load client for scripts/bench-amqp, on
 * rabbitmq-c (librabbitmq), so Gantry and RabbitMQ are driven by the same
 * third-party client code.
 *
 *   gt_bench_amqp publish|consume|run --port P [--host H] [--publishers N]
 *       [--consumers C] [--channels K] [--queues Q] [--exchange X]
 *       [--transient] [--no-confirm] [--window W] [--size B]
 *       [--seconds S | --count M] [--prefetch F] [--idle-ms T]
 *       [--prefix NAME] [--delete] [--server-pid PID]
 *
 * Set-up (one connection, before the clock starts): the durable queues
 * NAME.0 .. NAME.Q-1 are declared; with --exchange, a durable fanout
 * exchange X is declared and every queue bound to it.
 *
 * Publishers (N connections, one thread and one channel each; publish
 * default N=1, consume N=0): publisher i sends its n-th message to queue
 * NAME.((i + n*N) % Q) through the default exchange, or to X.  Messages are
 * B bytes, persistent (delivery-mode 2) unless --transient; the first 8
 * bytes carry the send time (CLOCK_MONOTONIC) for the end-to-end latency.
 * With confirms (the default) a publisher keeps at most W unconfirmed and
 * waits for the outstanding ones when it stops (after S seconds or M
 * messages in all); its count is what was confirmed, the confirm latency of
 * a message is from its publish call to the ack covering it (an ack with
 * multiple counts for every tag it covers).  With --no-confirm it publishes
 * as fast as the socket takes them and ends with a queue.declare (passive)
 * round trip: its count is what it sent, its last time that reply.
 *
 * Consumers (C connections, one thread each, K channels per connection;
 * consume default C=1, publish C=0): channel k of connection j consumes
 * queue NAME.((j*K + k) % Q) with basic.qos prefetch F and acknowledges
 * every delivery with its own basic.ack.  They stop once every message the
 * publishers got confirmed (or sent) reached them (times Q with a fanout
 * exchange), or M deliveries in all when nobody publishes, or when no
 * delivery came for T ms (only counted once the publishers are done).
 *
 * Rates: publishing, messages over the time from the first publish to the
 * last confirm (or reply); delivering, deliveries over the time from the
 * first publish (or basic.consume) to the last delivery.  The server's peak
 * RSS is its VmHWM over the run (reset through /proc/PID/clear_refs when
 * allowed) and the largest VmRSS sampled every 50 ms.
 *
 * One line "RESULT key=value ...": msgs and rate (deliveries when there
 * are consumers, else publishes), pub_msgs, pub_rate, del_msgs, del_rate,
 * p50_ms, p99_ms (confirm), e2e_p50_ms, e2e_p99_ms (send to delivery),
 * nacks, bad (deliveries of the wrong size), errors, server_cpu
 * (utime+stime of --server-pid over the run), client_cpu, rss_hwm_kb,
 * rss_max_kb.  A measurement tool: it exits 1 only when a connection
 * fails. */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

typedef struct opts {
    const char *mode;
    const char *host;
    int port;
    int pubs, cons, chans;
    int queues;
    const char *exchange; /* fanout, or NULL: the default exchange */
    int persistent, confirm;
    int window;
    int size;
    double seconds;
    long count;
    int prefetch;
    int idle_ms;
    const char *prefix;
    int delete;
    long server_pid;
} opts_t;

/* One per thread; written by its thread only, read by main after join. */
typedef struct worker {
    const opts_t *o;
    int idx;
    long done;      /* confirmed/sent (publisher) or delivered (consumer) */
    long nacks, bad;
    int failed;
    double t_first; /* first publish / consume */
    double t_last;  /* last confirm / delivery */
    uint32_t *lat;  /* confirm (publisher) or end-to-end (consumer) latencies, us */
    size_t nlat, caplat;
} worker_t;

static atomic_long g_claimed;   /* publishes claimed against --count */
static atomic_long g_delivered; /* deliveries counted by all consumers */
static atomic_long g_target = LONG_MAX; /* consumers stop at this many */
static atomic_int g_pubs_done;  /* publishers finished (idle counts only then) */
static atomic_int g_go;         /* threads start together */
static atomic_int g_ready;      /* threads set up (or failed) */
static atomic_int g_running;    /* threads not finished */
static atomic_int g_pubs_running; /* publisher threads not finished */
static double g_deadline;       /* publishers stop publishing at this time */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double proc_cpu(long pid)
{
    char path[64], buf[1024];
    unsigned long ut = 0, st = 0;
    FILE *f;

    if (pid <= 0)
        return -1;
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* comm may hold spaces */
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* A "Vm...:" field of /proc/PID/status in kB, or -1. */
static long proc_kb(long pid, const char *field)
{
    char path[64], line[256];
    size_t fl = strlen(field);
    long v = -1;
    FILE *f;

    if (pid <= 0)
        return -1;
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (!strncmp(line, field, fl) && line[fl] == ':') {
            v = atol(line + fl + 1);
            break;
        }
    fclose(f);
    return v;
}

/* Resets the process's VmHWM to its current RSS (Linux >= 4.0, own
 * processes only); 0 when refused. */
static int hwm_reset(long pid)
{
    char path[64];
    FILE *f;

    if (pid <= 0)
        return 0;
    snprintf(path, sizeof path, "/proc/%ld/clear_refs", pid);
    f = fopen(path, "w");
    if (f == NULL)
        return 0;
    int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok;
}

static double self_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static int reply_ok(amqp_rpc_reply_t r, const char *what, int idx)
{
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return 1;
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
        (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD || r.reply.id == AMQP_CONNECTION_CLOSE_METHOD)) {
        const amqp_channel_close_t *c = r.reply.decoded; /* same layout for both */
        fprintf(stderr, "gt_bench_amqp[%d]: %s: %u %.*s\n", idx, what, c->reply_code,
                (int)c->reply_text.len, (const char *)c->reply_text.bytes);
    } else {
        fprintf(stderr, "gt_bench_amqp[%d]: %s: %s\n", idx, what,
                r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION
                    ? amqp_error_string2(r.library_error)
                    : "server exception");
    }
    return 0;
}

/* A connection with channels 1..nch open. */
static amqp_connection_state_t conn_open(const opts_t *o, int idx, int nch)
{
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = c ? amqp_tcp_socket_new(c) : NULL;
    int rc;

    if (s == NULL) {
        fprintf(stderr, "gt_bench_amqp[%d]: out of memory\n", idx);
        goto fail;
    }
    rc = amqp_socket_open(s, o->host, o->port);
    if (rc != AMQP_STATUS_OK) {
        fprintf(stderr, "gt_bench_amqp[%d]: connect %s:%d: %s\n", idx, o->host, o->port,
                amqp_error_string2(rc));
        goto fail;
    }
    if (!reply_ok(amqp_login(c, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest"),
                  "login", idx))
        goto fail;
    for (int ch = 1; ch <= nch; ch++) {
        amqp_channel_open(c, (amqp_channel_t)ch);
        if (!reply_ok(amqp_get_rpc_reply(c), "channel.open", idx))
            goto fail;
    }
    return c;
fail:
    if (c != NULL)
        amqp_destroy_connection(c);
    return NULL;
}

static void conn_close(amqp_connection_state_t c)
{
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
}

static void queue_name(const opts_t *o, int q, char *buf, size_t len)
{
    snprintf(buf, len, "%s.%d", o->prefix, q % o->queues);
}

static void lat_add(worker_t *w, double secs)
{
    if (w->nlat == w->caplat) {
        size_t cap = w->caplat ? w->caplat * 2 : 65536;
        uint32_t *p = realloc(w->lat, cap * sizeof *p);
        if (p == NULL)
            return;
        w->lat = p;
        w->caplat = cap;
    }
    double us = secs * 1e6;
    w->lat[w->nlat++] = us < 0 ? 0 : us > 4e9 ? UINT32_MAX : (uint32_t)us;
}

/* Declares the queues (and the fanout exchange, bound to each), or with
 * del deletes them; 1 when done. */
static int setup(const opts_t *o, int del)
{
    amqp_connection_state_t c = conn_open(o, -1, 1);
    char q[300];

    if (c == NULL)
        return 0;
    if (o->exchange != NULL && !del) {
        amqp_exchange_declare(c, 1, amqp_cstring_bytes(o->exchange), amqp_cstring_bytes("fanout"),
                              0, 1, 0, 0, amqp_empty_table);
        if (!reply_ok(amqp_get_rpc_reply(c), "exchange.declare", -1))
            goto fail;
    }
    for (int i = 0; i < o->queues; i++) {
        queue_name(o, i, q, sizeof q);
        if (del)
            amqp_queue_delete(c, 1, amqp_cstring_bytes(q), 0, 0);
        else
            amqp_queue_declare(c, 1, amqp_cstring_bytes(q), 0, 1, 0, 0, amqp_empty_table);
        if (!reply_ok(amqp_get_rpc_reply(c), del ? "queue.delete" : "queue.declare", -1))
            goto fail;
        if (o->exchange != NULL && !del) {
            amqp_queue_bind(c, 1, amqp_cstring_bytes(q), amqp_cstring_bytes(o->exchange),
                            amqp_empty_bytes, amqp_empty_table);
            if (!reply_ok(amqp_get_rpc_reply(c), "queue.bind", -1))
                goto fail;
        }
    }
    if (o->exchange != NULL && del) {
        amqp_exchange_delete(c, 1, amqp_cstring_bytes(o->exchange), 0);
        if (!reply_ok(amqp_get_rpc_reply(c), "exchange.delete", -1))
            goto fail;
    }
    conn_close(c);
    return 1;
fail:
    amqp_destroy_connection(c);
    return 0;
}

/* Reads confirms until nothing is waiting (blocking up to 30 s for the
 * first when block).  Tags 1.. are sent in order; sent[tag % window] holds
 * the send time, acked[] marks tags confirmed out of order; *low = the
 * highest tag below which everything is confirmed.  0 on failure. */
static int read_confirms(worker_t *w, amqp_connection_state_t c, int block, uint64_t next,
                         uint64_t *low, const double *sent, unsigned char *acked)
{
    size_t win = (size_t)w->o->window;
    struct timeval tv = {block ? 30 : 0, 0};

    for (;;) {
        amqp_frame_t f;
        int rc = amqp_simple_wait_frame_noblock(c, &f, &tv);
        if (rc == AMQP_STATUS_TIMEOUT) {
            if (block && tv.tv_sec != 0) {
                fprintf(stderr, "gt_bench_amqp[%d]: no confirm for 30 s\n", w->idx);
                return 0;
            }
            return 1;
        }
        if (rc != AMQP_STATUS_OK) {
            fprintf(stderr, "gt_bench_amqp[%d]: read: %s\n", w->idx, amqp_error_string2(rc));
            return 0;
        }
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        uint64_t tag;
        int multiple, nack = 0;
        if (f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
            amqp_basic_ack_t *a = f.payload.method.decoded;
            tag = a->delivery_tag;
            multiple = a->multiple;
        } else if (f.payload.method.id == AMQP_BASIC_NACK_METHOD) {
            amqp_basic_nack_t *a = f.payload.method.decoded;
            tag = a->delivery_tag;
            multiple = a->multiple;
            nack = 1;
        } else if (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
                   f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_channel_close_t *cl = f.payload.method.decoded;
            fprintf(stderr, "gt_bench_amqp[%d]: closed by the server: %u %.*s\n", w->idx,
                    cl->reply_code, (int)cl->reply_text.len, (const char *)cl->reply_text.bytes);
            return 0;
        } else {
            continue;
        }
        if (tag >= next || tag <= *low)
            continue; /* not outstanding */
        double t = now();
        uint64_t from = multiple ? *low + 1 : tag;
        for (uint64_t k = from; k <= tag; k++) {
            if (acked[k % win])
                continue;
            acked[k % win] = 1;
            if (nack)
                w->nacks++;
            else {
                w->done++;
                lat_add(w, t - sent[k % win]);
            }
        }
        while (*low + 1 < next && acked[(*low + 1) % win])
            (*low)++;
        w->t_last = t;
        tv.tv_sec = 0; /* got one: take the rest without blocking */
        amqp_maybe_release_buffers(c);
    }
}

static void *publisher(void *arg)
{
    worker_t *w = arg;
    const opts_t *o = w->o;
    amqp_connection_state_t c = NULL;
    size_t win = (size_t)o->window;
    double *sent = calloc(win, sizeof *sent);
    unsigned char *acked = calloc(win, 1);
    uint64_t next = 1, low = 0; /* next tag to send; all tags <= low confirmed */
    unsigned char *body = malloc((size_t)o->size < 8 ? 8 : (size_t)o->size);
    /* The queues this publisher cycles through (one with an exchange). */
    int nq = o->exchange != NULL ? 1 : (o->queues + o->pubs - 1 - w->idx) / o->pubs;
    amqp_bytes_t *keys = calloc((size_t)(nq > 0 ? nq : 1), sizeof *keys);
    char q[300];
    int stopping = 0;
    long n = 0;

    if (nq <= 0)
        nq = 1; /* more publishers than queues: queue idx % Q */
    if (sent == NULL || acked == NULL || body == NULL || keys == NULL)
        goto fail;
    queue_name(o, w->idx, q, sizeof q); /* the passive declare's, without confirms */
    for (int k = 0; k < nq; k++) {
        if (o->exchange != NULL)
            keys[k] = amqp_empty_bytes;
        else {
            queue_name(o, w->idx + k * o->pubs, q, sizeof q);
            keys[k] = amqp_bytes_malloc_dup(amqp_cstring_bytes(q));
        }
    }
    if ((c = conn_open(o, w->idx, 1)) == NULL)
        goto fail;
    memset(body, 'x', (size_t)o->size);
    if (o->confirm) {
        amqp_confirm_select(c, 1);
        if (!reply_ok(amqp_get_rpc_reply(c), "confirm.select", w->idx))
            goto fail;
    }
    amqp_bytes_t ex = o->exchange != NULL ? amqp_cstring_bytes(o->exchange) : amqp_empty_bytes;
    amqp_basic_properties_t props;
    memset(&props, 0, sizeof props);
    props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG;
    props.delivery_mode = o->persistent ? 2 : 1;
    props.content_type = amqp_cstring_bytes("application/octet-stream");
    amqp_bytes_t bbody = {(size_t)o->size, body};

    atomic_fetch_add(&g_ready, 1);
    while (!atomic_load(&g_go))
        usleep(1000);
    w->t_first = now();
    for (;;) {
        /* Fill the window (without confirms: publish until the end). */
        while (!stopping && (!o->confirm || next - low - 1 < win)) {
            double t = now();
            if (t >= g_deadline ||
                (o->count > 0 && atomic_fetch_add(&g_claimed, 1) >= o->count)) {
                stopping = 1;
                break;
            }
            if (o->size >= 8)
                memcpy(body, &t, sizeof t);
            if (amqp_basic_publish(c, 1, ex, keys[n % nq], 0, 0, &props, bbody) !=
                AMQP_STATUS_OK) {
                fprintf(stderr, "gt_bench_amqp[%d]: publish failed\n", w->idx);
                goto fail;
            }
            n++;
            if (!o->confirm) {
                w->done++;
                continue;
            }
            sent[next % win] = t;
            acked[next % win] = 0;
            next++;
        }
        if (!o->confirm) {
            /* Everything sent before this reply was taken in. */
            amqp_queue_declare(c, 1, amqp_cstring_bytes(q), 1, 0, 0, 0,
                               amqp_empty_table);
            if (!reply_ok(amqp_get_rpc_reply(c), "queue.declare (passive)", w->idx))
                goto fail;
            w->t_last = now();
            break;
        }
        if (next - low - 1 == 0 && stopping)
            break;
        /* Read confirms: block while the window is full (or stopping),
         * otherwise take only what has arrived. */
        if (!read_confirms(w, c, stopping || next - low - 1 >= win, next, &low, sent, acked))
            goto fail;
    }
    conn_close(c);
    c = NULL;
    goto out;
fail:
    if (!atomic_load(&g_go))
        atomic_fetch_add(&g_ready, 1);
    w->failed = 1;
    if (c != NULL)
        amqp_destroy_connection(c);
out:
    for (int k = 0; keys != NULL && k < nq; k++)
        if (keys[k].len)
            amqp_bytes_free(keys[k]);
    free(keys);
    free(sent);
    free(acked);
    free(body);
    atomic_fetch_sub(&g_pubs_running, 1);
    atomic_fetch_sub(&g_running, 1);
    return NULL;
}

/* A consumer channel's delivery being read. */
struct dstate {
    uint64_t tag;
    uint64_t left; /* body bytes still to come */
    uint64_t size;
    double ts;     /* send time from the body, or -1 */
    int busy;
};

static void *consumer(void *arg)
{
    worker_t *w = arg;
    const opts_t *o = w->o;
    amqp_connection_state_t c = NULL;
    struct dstate *ds = NULL;
    char q[300];

    if ((c = conn_open(o, w->idx, o->chans)) == NULL)
        goto fail;
    for (int ch = 1; ch <= o->chans; ch++) {
        amqp_basic_qos(c, (amqp_channel_t)ch, 0, (uint16_t)o->prefetch, 0);
        if (!reply_ok(amqp_get_rpc_reply(c), "basic.qos", w->idx))
            goto fail;
    }
    /* With publishers, consuming starts before the clock; a drain is
     * timed from its first basic.consume. */
    int early = o->pubs > 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == early) {
            atomic_fetch_add(&g_ready, 1);
            while (!atomic_load(&g_go))
                usleep(1000);
            w->t_first = now();
            continue;
        }
        for (int ch = 1; ch <= o->chans; ch++) {
            queue_name(o, w->idx * o->chans + ch - 1, q, sizeof q);
            amqp_basic_consume(c, (amqp_channel_t)ch, amqp_cstring_bytes(q), amqp_empty_bytes, 0,
                               0, 0, amqp_empty_table);
            if (!reply_ok(amqp_get_rpc_reply(c), "basic.consume", w->idx))
                goto fail;
        }
    }
    /* Frames read one by one (amqp_consume_message scans every channel's
     * pool per message: too slow with hundreds of channels); a channel's
     * frames come in order: deliver, header, body frames. */
    ds = calloc((size_t)o->chans + 1, sizeof *ds);
    if (ds == NULL)
        goto fail;
    int idle = 0; /* ms without a frame, once the publishers are done */
    for (;;) {
        if (atomic_load(&g_delivered) >= atomic_load(&g_target))
            break;
        amqp_frame_t f;
        struct timeval tv = {0, 100000}; /* look at the counts every 100 ms */
        int rc = amqp_simple_wait_frame_noblock(c, &f, &tv);
        if (rc == AMQP_STATUS_TIMEOUT) {
            if (atomic_load(&g_pubs_done) && (idle += 100) >= o->idle_ms)
                break; /* queues silent: drained */
            continue;
        }
        idle = 0;
        if (rc != AMQP_STATUS_OK) {
            fprintf(stderr, "gt_bench_amqp[%d]: read: %s\n", w->idx, amqp_error_string2(rc));
            goto fail;
        }
        if (f.channel == 0 || f.channel > o->chans) {
            if (f.frame_type == AMQP_FRAME_METHOD &&
                f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
                amqp_connection_close_t *cl = f.payload.method.decoded;
                fprintf(stderr, "gt_bench_amqp[%d]: closed by the server: %u %.*s\n", w->idx,
                        cl->reply_code, (int)cl->reply_text.len,
                        (const char *)cl->reply_text.bytes);
                goto fail;
            }
            continue;
        }
        struct dstate *d = &ds[f.channel];
        if (f.frame_type == AMQP_FRAME_METHOD) {
            if (f.payload.method.id == AMQP_BASIC_DELIVER_METHOD) {
                amqp_basic_deliver_t *dl = f.payload.method.decoded;
                d->tag = dl->delivery_tag;
                d->busy = 1;
                d->ts = -1;
            } else if (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD) {
                amqp_channel_close_t *cl = f.payload.method.decoded;
                fprintf(stderr, "gt_bench_amqp[%d]: channel closed by the server: %u %.*s\n",
                        w->idx, cl->reply_code, (int)cl->reply_text.len,
                        (const char *)cl->reply_text.bytes);
                goto fail;
            }
            continue;
        }
        if (!d->busy)
            continue;
        if (f.frame_type == AMQP_FRAME_HEADER) {
            d->size = d->left = f.payload.properties.body_size;
        } else if (f.frame_type == AMQP_FRAME_BODY) {
            size_t len = f.payload.body_fragment.len;
            if (d->left == d->size && len >= sizeof d->ts)
                memcpy(&d->ts, f.payload.body_fragment.bytes, sizeof d->ts);
            d->left -= len < d->left ? len : d->left;
        } else {
            continue;
        }
        if (d->left > 0)
            continue;
        /* A whole delivery. */
        double t = now();
        d->busy = 0;
        if (d->size != (uint64_t)o->size)
            w->bad++;
        else if (o->size >= 8 && d->ts >= 0)
            lat_add(w, t - d->ts);
        if (amqp_basic_ack(c, f.channel, d->tag, 0) != AMQP_STATUS_OK) {
            fprintf(stderr, "gt_bench_amqp[%d]: ack failed\n", w->idx);
            goto fail;
        }
        amqp_maybe_release_buffers_on_channel(c, f.channel);
        w->done++;
        w->t_last = t;
        atomic_fetch_add(&g_delivered, 1);
    }
    free(ds);
    conn_close(c);
    atomic_fetch_sub(&g_running, 1);
    return NULL;
fail:
    if (!atomic_load(&g_go) && w->t_first == 0)
        atomic_fetch_add(&g_ready, 1);
    free(ds);
    w->failed = 1;
    if (c != NULL)
        amqp_destroy_connection(c);
    atomic_fetch_sub(&g_running, 1);
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Sums and percentiles over workers ws[0..n-1]. */
typedef struct {
    long done, nacks, bad;
    int errors;
    double first, last, p50, p99;
} agg_t;

static agg_t aggregate(const worker_t *ws, int n)
{
    agg_t a = {0};
    size_t nlat = 0, k = 0;

    for (int i = 0; i < n; i++) {
        a.done += ws[i].done;
        a.nacks += ws[i].nacks;
        a.bad += ws[i].bad;
        a.errors += ws[i].failed;
        nlat += ws[i].nlat;
        if (ws[i].t_first > 0 && (a.first == 0 || ws[i].t_first < a.first))
            a.first = ws[i].t_first;
        if (ws[i].t_last > a.last)
            a.last = ws[i].t_last;
    }
    uint32_t *all = malloc((nlat ? nlat : 1) * sizeof *all);
    for (int i = 0; all != NULL && i < n; i++) {
        if (ws[i].nlat == 0)
            continue; /* a consumer keeps none: lat may be NULL */
        memcpy(all + k, ws[i].lat, ws[i].nlat * sizeof *all);
        k += ws[i].nlat;
    }
    if (all != NULL && k > 0) {
        qsort(all, k, sizeof *all, cmp_u32);
        a.p50 = all[k / 2] / 1e3;
        a.p99 = all[(size_t)((double)(k - 1) * 0.99)] / 1e3;
    }
    free(all);
    return a;
}

static double rate(long n, double first, double last)
{
    return last > first ? (double)n / (last - first) : 0.0;
}

static void usage(void)
{
    fprintf(stderr, "usage: gt_bench_amqp publish|consume|run --port P [--host H]\n"
                    "  [--publishers N] [--consumers C] [--channels K] [--queues Q]\n"
                    "  [--exchange X] [--transient] [--no-confirm] [--window W] [--size B]\n"
                    "  [--seconds S] [--count M] [--prefetch F] [--idle-ms T] [--prefix NAME]\n"
                    "  [--delete] [--server-pid PID]\n");
}

int main(int argc, char **argv)
{
    opts_t o = {.host = "127.0.0.1", .pubs = -1, .cons = -1, .chans = 1, .queues = 1,
                .persistent = 1, .confirm = 1, .window = 256, .size = 1024, .seconds = 10,
                .prefetch = 256, .idle_ms = 3000, .prefix = "gt_bench"};
    if (argc < 2) {
        usage();
        return 2;
    }
    o.mode = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--transient")) {
            o.persistent = 0;
            continue;
        }
        if (!strcmp(a, "--no-confirm")) {
            o.confirm = 0;
            continue;
        }
        if (!strcmp(a, "--delete")) {
            o.delete = 1;
            continue;
        }
        if (v == NULL) {
            usage();
            return 2;
        }
        if (!strcmp(a, "--host"))
            o.host = v;
        else if (!strcmp(a, "--port"))
            o.port = atoi(v);
        else if (!strcmp(a, "--publishers"))
            o.pubs = atoi(v);
        else if (!strcmp(a, "--consumers"))
            o.cons = atoi(v);
        else if (!strcmp(a, "--channels"))
            o.chans = atoi(v);
        else if (!strcmp(a, "--queues"))
            o.queues = atoi(v);
        else if (!strcmp(a, "--exchange"))
            o.exchange = v;
        else if (!strcmp(a, "--window"))
            o.window = atoi(v);
        else if (!strcmp(a, "--size"))
            o.size = atoi(v);
        else if (!strcmp(a, "--seconds"))
            o.seconds = atof(v);
        else if (!strcmp(a, "--count"))
            o.count = atol(v);
        else if (!strcmp(a, "--prefetch"))
            o.prefetch = atoi(v);
        else if (!strcmp(a, "--idle-ms"))
            o.idle_ms = atoi(v);
        else if (!strcmp(a, "--prefix"))
            o.prefix = v;
        else if (!strcmp(a, "--server-pid"))
            o.server_pid = atol(v);
        else {
            usage();
            return 2;
        }
        i++;
    }
    int pub = !strcmp(o.mode, "publish"), con = !strcmp(o.mode, "consume");
    if (o.pubs < 0)
        o.pubs = con ? 0 : 1;
    if (o.cons < 0)
        o.cons = pub ? 0 : 1;
    if ((!pub && !con && strcmp(o.mode, "run")) || o.port <= 0 || o.pubs + o.cons <= 0 ||
        o.chans <= 0 || o.chans > 2000 || o.queues <= 0 || o.window <= 0 || o.size < 0 ||
        o.prefetch < 0 || o.prefetch > 65535 || o.idle_ms <= 0) {
        usage();
        return 2;
    }

    if (!setup(&o, 0))
        return 1;
    int n = o.pubs + o.cons;
    worker_t *ws = calloc((size_t)n, sizeof *ws);
    pthread_t *th = calloc((size_t)n, sizeof *th);
    if (ws == NULL || th == NULL)
        return 1;
    if (o.pubs == 0 && o.count > 0)
        atomic_store(&g_target, o.count);
    atomic_store(&g_pubs_done, o.pubs == 0);
    atomic_store(&g_running, n);
    atomic_store(&g_pubs_running, o.pubs);
    for (int i = 0; i < n; i++) {
        ws[i].o = &o;
        ws[i].idx = i < o.pubs ? i : i - o.pubs;
        if (pthread_create(&th[i], NULL, i < o.pubs ? publisher : consumer, &ws[i]) != 0)
            return 1;
    }
    while (atomic_load(&g_ready) < n) /* connections and set-up out of the clock */
        usleep(10000);
    usleep(100000);
    int hwm_ok = hwm_reset(o.server_pid);
    long rss_max = proc_kb(o.server_pid, "VmRSS");
    double cpu0 = proc_cpu(o.server_pid), self0 = self_cpu();
    g_deadline = o.count > 0 ? now() + 1e9 : now() + o.seconds;
    atomic_store(&g_go, 1);
    /* Publishers first: once they are done the consumers know the total. */
    int pubs_left = o.pubs;
    while (atomic_load(&g_running) > 0) {
        usleep(50000);
        long r = proc_kb(o.server_pid, "VmRSS");
        if (r > rss_max)
            rss_max = r;
        if (pubs_left > 0 && atomic_load(&g_pubs_running) == 0) {
            agg_t p = aggregate(ws, o.pubs);
            long fan = o.exchange != NULL ? o.queues : 1;
            if (o.cons > 0)
                atomic_store(&g_target, p.done * fan);
            atomic_store(&g_pubs_done, 1);
            pubs_left = 0;
        }
    }
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    double cpu1 = proc_cpu(o.server_pid), self1 = self_cpu();
    long hwm = proc_kb(o.server_pid, "VmHWM");
    if (o.delete && !setup(&o, 1))
        fprintf(stderr, "gt_bench_amqp: deleting the queues failed\n");

    agg_t p = aggregate(ws, o.pubs), d = aggregate(ws + o.pubs, o.cons);
    double pr = rate(p.done, p.first, p.last);
    double dfirst = o.pubs > 0 && p.first > 0 ? p.first : d.first;
    double dr = rate(d.done, dfirst, d.last);
    printf("RESULT mode=%s pubs=%d cons=%d chans=%d queues=%d msgs=%ld rate=%.0f pub_msgs=%ld "
           "pub_secs=%.3f pub_rate=%.0f del_msgs=%ld del_secs=%.3f del_rate=%.0f p50_ms=%.3f "
           "p99_ms=%.3f e2e_p50_ms=%.3f e2e_p99_ms=%.3f nacks=%ld bad=%ld errors=%d "
           "server_cpu=%.2f client_cpu=%.2f rss_hwm_kb=%ld rss_hwm_reset=%d rss_max_kb=%ld\n",
           o.mode, o.pubs, o.cons, o.chans, o.queues, o.cons > 0 ? d.done : p.done,
           o.cons > 0 ? dr : pr, p.done, p.last > p.first ? p.last - p.first : 0, pr, d.done,
           d.last > dfirst ? d.last - dfirst : 0, dr, p.p50, p.p99, d.p50, d.p99,
           p.nacks + d.nacks, d.bad, p.errors + d.errors,
           cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1.0, self1 - self0, hwm, hwm_ok, rss_max);
    for (int i = 0; i < n; i++)
        free(ws[i].lat);
    free(ws);
    free(th);
    return p.errors + d.errors ? 1 : 0;
}
