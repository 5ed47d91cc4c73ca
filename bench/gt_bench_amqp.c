/* gt_bench_amqp: an AMQP 0-9-1 load client for scripts/bench-amqp, on
 * rabbitmq-c (librabbitmq), so Gantry and RabbitMQ are driven by the same
 * third-party client code.
 *
 *   gt_bench_amqp publish --port P [--host H] [--publishers N] [--queues Q]
 *                 [--window W] [--size B] [--seconds S | --count M]
 *                 [--prefix NAME] [--server-pid PID]
 *   gt_bench_amqp consume --port P [--consumers N] [--queues Q]
 *                 [--prefetch K] [--count M] [--idle-ms T] [--prefix NAME]
 *                 [--server-pid PID]
 *
 * publish: N connections (one thread, one channel each) declare the durable
 * queues NAME.0 .. NAME.Q-1 (publisher i uses NAME.(i % Q)), turn on
 * confirm.select and publish persistent (delivery-mode 2) messages of B
 * bytes to the default exchange, never more than W unconfirmed; after S
 * seconds (or M messages in all) they stop publishing and wait for the
 * outstanding confirms.  The rate is confirmed messages over the time from
 * the first publish to the last confirm; the confirm latency of a message
 * is from its publish call to the ack that covers it (acks with multiple
 * count for every tag they cover).
 *
 * consume: N connections each consume NAME.(i % Q) with basic.qos prefetch
 * K (per consumer) and acknowledge every delivery with its own basic.ack;
 * a consumer stops once M deliveries were counted in all or its queue was
 * silent for T ms.  The rate is deliveries over the time from the first
 * basic.consume to the last delivery.
 *
 * Both print one line "RESULT key=value ..." (msgs, secs, rate, p50_ms,
 * p99_ms, nacks, errors, server_cpu (utime+stime of --server-pid from
 * /proc over the run), client_cpu (this process)).  A measurement tool: it
 * exits 1 only when a connection fails. */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <errno.h>
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
    int conns;
    int queues;
    int window;
    int size;
    double seconds;
    long count;
    int prefetch;
    int idle_ms;
    const char *prefix;
    long server_pid;
} opts_t;

/* One per thread; written by its thread only, read by main after join. */
typedef struct worker {
    const opts_t *o;
    int idx;
    long done;     /* confirmed (publish) or delivered (consume) */
    long nacks;
    int failed;
    double t_first; /* first publish / consume */
    double t_last;  /* last confirm / delivery */
    uint32_t *lat;  /* confirm latencies, microseconds */
    size_t nlat, caplat;
} worker_t;

static atomic_long g_total;  /* messages published (publish) / delivered (consume) */
static atomic_int g_go;      /* threads start together */
static double g_deadline;    /* publish: stop publishing at this time */

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

static amqp_connection_state_t conn_open(worker_t *w)
{
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = c ? amqp_tcp_socket_new(c) : NULL;
    int rc;

    if (s == NULL) {
        fprintf(stderr, "gt_bench_amqp[%d]: out of memory\n", w->idx);
        goto fail;
    }
    rc = amqp_socket_open(s, w->o->host, w->o->port);
    if (rc != AMQP_STATUS_OK) {
        fprintf(stderr, "gt_bench_amqp[%d]: connect %s:%d: %s\n", w->idx, w->o->host, w->o->port,
                amqp_error_string2(rc));
        goto fail;
    }
    if (!reply_ok(amqp_login(c, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest"),
                  "login", w->idx))
        goto fail;
    amqp_channel_open(c, 1);
    if (!reply_ok(amqp_get_rpc_reply(c), "channel.open", w->idx))
        goto fail;
    return c;
fail:
    if (c != NULL)
        amqp_destroy_connection(c);
    return NULL;
}

static void conn_close(amqp_connection_state_t c)
{
    amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
}

static void queue_name(const opts_t *o, int idx, char *buf, size_t len)
{
    snprintf(buf, len, "%s.%d", o->prefix, idx % o->queues);
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
    w->lat[w->nlat++] = us > 4e9 ? UINT32_MAX : (uint32_t)us;
}

/* Publisher: tags 1.. are sent in order; sent[tag % window] holds the send
 * time, acked[] marks tags confirmed out of order; low = highest tag below
 * which everything is confirmed. */
static void *publisher(void *arg)
{
    worker_t *w = arg;
    const opts_t *o = w->o;
    amqp_connection_state_t c = NULL;
    char q[300];
    size_t win = (size_t)o->window;
    double *sent = calloc(win, sizeof *sent);
    unsigned char *acked = calloc(win, 1);
    uint64_t next = 1, low = 0; /* next tag to send; all tags <= low confirmed */
    void *body = malloc((size_t)o->size);
    int stopping = 0;

    if (sent == NULL || acked == NULL || body == NULL || (c = conn_open(w)) == NULL)
        goto fail;
    memset(body, 'x', (size_t)o->size);
    queue_name(o, w->idx, q, sizeof q);
    amqp_queue_declare(c, 1, amqp_cstring_bytes(q), 0, 1, 0, 0, amqp_empty_table);
    if (!reply_ok(amqp_get_rpc_reply(c), "queue.declare", w->idx))
        goto fail;
    amqp_confirm_select(c, 1);
    if (!reply_ok(amqp_get_rpc_reply(c), "confirm.select", w->idx))
        goto fail;

    amqp_basic_properties_t props;
    memset(&props, 0, sizeof props);
    props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG;
    props.delivery_mode = 2;
    props.content_type = amqp_cstring_bytes("application/octet-stream");
    amqp_bytes_t bbody = {(size_t)o->size, body};

    while (!atomic_load(&g_go))
        usleep(1000);
    w->t_first = now();
    for (;;) {
        /* Fill the window. */
        while (!stopping && next - low - 1 < win) {
            double t = now();
            if (t >= g_deadline ||
                (o->count > 0 && atomic_fetch_add(&g_total, 1) >= o->count)) {
                stopping = 1;
                break;
            }
            if (amqp_basic_publish(c, 1, amqp_empty_bytes, amqp_cstring_bytes(q), 0, 0, &props,
                                   bbody) != AMQP_STATUS_OK) {
                fprintf(stderr, "gt_bench_amqp[%d]: publish failed\n", w->idx);
                goto fail;
            }
            sent[next % win] = t;
            acked[next % win] = 0;
            next++;
        }
        if (next - low - 1 == 0 && stopping)
            break;
        /* Read confirms: block while the window is full (or stopping),
         * otherwise take only what has arrived. */
        int blocking = stopping || next - low - 1 >= win;
        struct timeval tv = {blocking ? 30 : 0, 0};
        for (;;) {
            amqp_frame_t f;
            int rc = amqp_simple_wait_frame_noblock(c, &f, &tv);
            if (rc == AMQP_STATUS_TIMEOUT) {
                if (blocking && tv.tv_sec != 0) {
                    fprintf(stderr, "gt_bench_amqp[%d]: no confirm for 30 s\n", w->idx);
                    goto fail;
                }
                break;
            }
            if (rc != AMQP_STATUS_OK) {
                fprintf(stderr, "gt_bench_amqp[%d]: read: %s\n", w->idx, amqp_error_string2(rc));
                goto fail;
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
                        cl->reply_code, (int)cl->reply_text.len,
                        (const char *)cl->reply_text.bytes);
                goto fail;
            } else {
                continue;
            }
            if (tag >= next || tag <= low)
                continue; /* not outstanding */
            double t = now();
            uint64_t from = multiple ? low + 1 : tag;
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
            while (low + 1 < next && acked[(low + 1) % win])
                low++;
            w->t_last = t;
            tv.tv_sec = 0; /* got one: take the rest without blocking */
            amqp_maybe_release_buffers(c);
        }
    }
    conn_close(c);
    free(sent);
    free(acked);
    free(body);
    return NULL;
fail:
    w->failed = 1;
    if (c != NULL)
        amqp_destroy_connection(c);
    free(sent);
    free(acked);
    free(body);
    return NULL;
}

static void *consumer(void *arg)
{
    worker_t *w = arg;
    const opts_t *o = w->o;
    amqp_connection_state_t c = NULL;
    char q[300];

    if ((c = conn_open(w)) == NULL)
        goto fail;
    queue_name(o, w->idx, q, sizeof q);
    amqp_basic_qos(c, 1, 0, (uint16_t)o->prefetch, 0);
    if (!reply_ok(amqp_get_rpc_reply(c), "basic.qos", w->idx))
        goto fail;
    while (!atomic_load(&g_go))
        usleep(1000);
    w->t_first = now();
    amqp_basic_consume(c, 1, amqp_cstring_bytes(q), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
    if (!reply_ok(amqp_get_rpc_reply(c), "basic.consume", w->idx))
        goto fail;
    int idle = 0; /* ms without a delivery */
    for (;;) {
        if (o->count > 0 && atomic_load(&g_total) >= o->count)
            break;
        amqp_envelope_t env;
        struct timeval tv = {0, 100000}; /* look at g_total every 100 ms */
        amqp_maybe_release_buffers(c);
        amqp_rpc_reply_t r = amqp_consume_message(c, &env, &tv, 0);
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_TIMEOUT) {
            idle += 100;
            if (idle >= o->idle_ms)
                break; /* queue silent: drained */
            continue;
        }
        idle = 0;
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            reply_ok(r, "consume", w->idx);
            goto fail;
        }
        if (env.message.body.len != (size_t)o->size)
            w->nacks++; /* counted as a wrong body */
        int rc = amqp_basic_ack(c, 1, env.delivery_tag, 0);
        amqp_destroy_envelope(&env);
        if (rc != AMQP_STATUS_OK) {
            fprintf(stderr, "gt_bench_amqp[%d]: ack failed\n", w->idx);
            goto fail;
        }
        w->done++;
        w->t_last = now();
        atomic_fetch_add(&g_total, 1);
    }
    conn_close(c);
    return NULL;
fail:
    w->failed = 1;
    if (c != NULL)
        amqp_destroy_connection(c);
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void usage(void)
{
    fprintf(stderr, "usage: gt_bench_amqp publish|consume --port P [--host H] [--publishers N]\n"
                    "  [--consumers N] [--queues Q] [--window W] [--size B] [--seconds S]\n"
                    "  [--count M] [--prefetch K] [--idle-ms T] [--prefix NAME]"
                    " [--server-pid PID]\n");
}

int main(int argc, char **argv)
{
    opts_t o = {.host = "127.0.0.1", .conns = 1, .queues = 1, .window = 256, .size = 1024,
                .seconds = 10, .prefetch = 256, .idle_ms = 3000, .prefix = "gt_bench"};
    if (argc < 2) {
        usage();
        return 2;
    }
    o.mode = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL) {
            usage();
            return 2;
        }
        if (!strcmp(a, "--host"))
            o.host = v;
        else if (!strcmp(a, "--port"))
            o.port = atoi(v);
        else if (!strcmp(a, "--publishers") || !strcmp(a, "--consumers"))
            o.conns = atoi(v);
        else if (!strcmp(a, "--queues"))
            o.queues = atoi(v);
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
    int pub = !strcmp(o.mode, "publish");
    if ((!pub && strcmp(o.mode, "consume")) || o.port <= 0 || o.conns <= 0 || o.queues <= 0 ||
        o.window <= 0 || o.size < 0 || o.prefetch < 0 || o.prefetch > 65535 || o.idle_ms <= 0) {
        usage();
        return 2;
    }

    worker_t *ws = calloc((size_t)o.conns, sizeof *ws);
    pthread_t *th = calloc((size_t)o.conns, sizeof *th);
    if (ws == NULL || th == NULL)
        return 1;
    for (int i = 0; i < o.conns; i++) {
        ws[i].o = &o;
        ws[i].idx = i;
        if (pthread_create(&th[i], NULL, pub ? publisher : consumer, &ws[i]) != 0)
            return 1;
    }
    usleep(200000); /* connections and declares out of the measurement */
    double cpu0 = proc_cpu(o.server_pid), self0 = self_cpu(), t0 = now();
    g_deadline = o.count > 0 ? t0 + 1e9 : t0 + o.seconds;
    atomic_store(&g_go, 1);
    for (int i = 0; i < o.conns; i++)
        pthread_join(th[i], NULL);
    double cpu1 = proc_cpu(o.server_pid), self1 = self_cpu();

    long done = 0, nacks = 0;
    int errors = 0;
    double first = 0, last = 0;
    size_t nlat = 0;
    for (int i = 0; i < o.conns; i++) {
        done += ws[i].done;
        nacks += ws[i].nacks;
        errors += ws[i].failed;
        nlat += ws[i].nlat;
        if (ws[i].t_first > 0 && (first == 0 || ws[i].t_first < first))
            first = ws[i].t_first;
        if (ws[i].t_last > last)
            last = ws[i].t_last;
    }
    uint32_t *all = malloc((nlat ? nlat : 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; all != NULL && i < o.conns; i++) {
        memcpy(all + k, ws[i].lat, ws[i].nlat * sizeof *all);
        k += ws[i].nlat;
    }
    double p50 = 0, p99 = 0;
    if (all != NULL && k > 0) {
        qsort(all, k, sizeof *all, cmp_u32);
        p50 = all[k / 2] / 1e3;
        p99 = all[(size_t)((double)(k - 1) * 0.99)] / 1e3;
    }
    double secs = last > first ? last - first : 0;
    printf("RESULT mode=%s conns=%d queues=%d msgs=%ld secs=%.3f rate=%.0f p50_ms=%.3f "
           "p99_ms=%.3f nacks=%ld errors=%d server_cpu=%.2f client_cpu=%.2f\n",
           o.mode, o.conns, o.queues, done, secs, secs > 0 ? (double)done / secs : 0.0, p50, p99,
           nacks, errors, cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1.0, self1 - self0);
    for (int i = 0; i < o.conns; i++)
        free(ws[i].lat);
    free(all);
    free(ws);
    free(th);
    return errors ? 1 : 0;
}
