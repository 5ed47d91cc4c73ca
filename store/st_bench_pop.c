/* gt_bench_store's pop-path figures (not a test): parked long polls and
 * FIFO drain.
 *
 * park: for 10, 10,000 and 100,000 parked pops of one group on one topic
 * (async store), how fast they park (st_pop calls/s, each parking), the
 * wake latency of one message (append call to the parked pop's callback;
 * median and p90 of 50 rounds, the woken pop re-parked each time), and
 * how fast st_pop_cancel ends them all (cancel call to the last callback).
 *
 * fifo: a backlog of B messages (100-byte bodies, 16 message groups,
 * 8 queues) drained by 4 receiver threads popping batches of 32 and acking
 * them, once by a FIFO group and once by a normal group on the same topic;
 * messages/s of each and their ratio, for B = 10,000 and 1,000,000 (or
 * BENCH_FIFO_MAX). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "st.h"

double bench_now_s(void);
st_store_t *bench_open_store(const char *dir, st_flush_t flush);

/* ---- parked pops ------------------------------------------------------- */
typedef struct pk {
    pthread_mutex_t m;
    pthread_cond_t c;
    long done, got;
} pk_t;

static void pk_cb(void *arg, gt_err_t err, const st_popped_t *msgs, size_t n)
{
    pk_t *k = arg;
    pthread_mutex_lock(&k->m);
    k->done++;
    if (err == GT_OK && n > 0)
        k->got++;
    pthread_cond_broadcast(&k->c);
    pthread_mutex_unlock(&k->m);
}

static void append_cb(void *arg, gt_err_t err, const st_append_item_t *it,
                      size_t n)
{
    (void)arg;
    (void)it;
    (void)n;
    if (err != GT_OK)
        fprintf(stderr, "append failed: %s\n", gt_err_str(err));
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static st_pop_req_t pk_req(uint64_t key)
{
    return (st_pop_req_t){.group = "pk-g", .topic = "bench",
                          .queue_id = ST_QUEUE_ANY, .max = 1,
                          .invisible_ms = 600000,
                          .poll_timeout_ms = ST_POLL_MAX_MS,
                          .cancel_key = key};
}

static void park_one(const char *dir, long n)
{
    enum { ROUNDS = 50 };
    char sub[4096];
    pk_t k = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
    double lat[ROUNDS];
    static char b[100];
    snprintf(sub, sizeof(sub), "%s/park-%ld", dir, n);
    st_store_t *st = bench_open_store(sub, ST_FLUSH_ASYNC);
    st_pop_req_t r = pk_req(0);
    r.poll_timeout_ms = 0;
    st_pop(st, &r, pk_cb, &k); /* creates the group */
    long keys = 0;
    double t0 = bench_now_s();
    for (long i = 0; i < n; i++) {
        r = pk_req((uint64_t)++keys);
        st_pop(st, &r, pk_cb, &k);
    }
    double t_park = bench_now_s() - t0;
    st_message_t m;
    memset(&m, 0, sizeof(m));
    m.body = b;
    m.body_len = sizeof(b);
    m.queue_id = ST_QUEUE_ANY;
    for (int i = 0; i < ROUNDS; i++) {
        pthread_mutex_lock(&k.m);
        long got = k.got;
        pthread_mutex_unlock(&k.m);
        double t = bench_now_s();
        st_append(st, "bench", &m, 1, append_cb, NULL);
        pthread_mutex_lock(&k.m);
        while (k.got == got)
            pthread_cond_wait(&k.c, &k.m);
        pthread_mutex_unlock(&k.m);
        lat[i] = (bench_now_s() - t) * 1000;
        r = pk_req((uint64_t)++keys); /* keep n parked */
        st_pop(st, &r, pk_cb, &k);
    }
    qsort(lat, ROUNDS, sizeof(lat[0]), cmp_d);
    pthread_mutex_lock(&k.m);
    long before = k.done;
    pthread_mutex_unlock(&k.m);
    t0 = bench_now_s();
    for (uint64_t key = 1; key <= (uint64_t)keys; key++)
        st_pop_cancel(st, key);
    pthread_mutex_lock(&k.m);
    while (k.done < before + n)
        pthread_cond_wait(&k.c, &k.m);
    pthread_mutex_unlock(&k.m);
    double t_cancel = bench_now_s() - t0;
    printf("  %8ld parked: park %9.0f /s   wake latency p50 %6.3f ms  "
           "p90 %6.3f ms   cancel %9.0f /s\n", n, n / t_park,
           lat[ROUNDS / 2], lat[ROUNDS * 9 / 10], n / t_cancel);
    fflush(stdout);
    st_close(st);
}

void bench_park(const char *dir)
{
    printf("\nparked long polls (one group, one topic, async store):\n");
    long ns[] = {10, 10000, 100000};
    for (size_t i = 0; i < sizeof(ns) / sizeof(ns[0]); i++)
        park_one(dir, ns[i]);
}

/* ---- FIFO drain -------------------------------------------------------- */
typedef struct drain {
    st_store_t *st;
    const char *group;
    long target;
    pthread_mutex_t *m;
    long *acked;
    double deadline;
} drain_t;

typedef struct one_pop {
    pthread_mutex_t m;
    pthread_cond_t c;
    bool done;
    int n;
    char h[ST_POP_MAX][ST_HANDLE_MAX];
    int pending;
} one_pop_t;

static void dr_pop_cb(void *arg, gt_err_t err, const st_popped_t *msgs,
                      size_t n)
{
    one_pop_t *o = arg;
    pthread_mutex_lock(&o->m);
    o->n = err == GT_OK ? (int)n : 0;
    for (size_t i = 0; i < n && err == GT_OK; i++)
        memcpy(o->h[i], msgs[i].handle, ST_HANDLE_MAX);
    o->done = true;
    pthread_cond_signal(&o->c);
    pthread_mutex_unlock(&o->m);
}

static void dr_ack_cb(void *arg, gt_err_t err)
{
    one_pop_t *o = arg;
    (void)err;
    pthread_mutex_lock(&o->m);
    o->pending--;
    pthread_cond_signal(&o->c);
    pthread_mutex_unlock(&o->m);
}

static void *drain_main(void *p)
{
    drain_t *d = p;
    one_pop_t o = {.m = PTHREAD_MUTEX_INITIALIZER,
                   .c = PTHREAD_COND_INITIALIZER};
    st_pop_req_t r = {.group = d->group, .topic = "fifo",
                      .queue_id = ST_QUEUE_ANY, .max = 32,
                      .invisible_ms = 600000, .poll_timeout_ms = 0};
    for (;;) {
        pthread_mutex_lock(d->m);
        bool stop = *d->acked >= d->target || bench_now_s() > d->deadline;
        pthread_mutex_unlock(d->m);
        if (stop)
            break;
        o.done = false;
        st_pop(d->st, &r, dr_pop_cb, &o);
        pthread_mutex_lock(&o.m);
        while (!o.done)
            pthread_cond_wait(&o.c, &o.m);
        o.pending = o.n;
        pthread_mutex_unlock(&o.m);
        for (int i = 0; i < o.n; i++)
            st_ack(d->st, d->group, "fifo", o.h[i], dr_ack_cb, &o);
        pthread_mutex_lock(&o.m);
        while (o.pending > 0)
            pthread_cond_wait(&o.c, &o.m);
        pthread_mutex_unlock(&o.m);
        pthread_mutex_lock(d->m);
        *d->acked += o.n;
        pthread_mutex_unlock(d->m);
        if (o.n == 0)
            sched_yield(); /* every group in flight at another receiver */
    }
    return NULL;
}

static double drain(st_store_t *st, const char *group, long target,
                    double secs)
{
    enum { R = 4 };
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    long acked = 0;
    pthread_t th[R];
    drain_t d = {.st = st, .group = group, .target = target, .m = &m,
                 .acked = &acked};
    double t0 = bench_now_s();
    d.deadline = t0 + secs;
    for (int i = 0; i < R; i++)
        pthread_create(&th[i], NULL, drain_main, &d);
    for (int i = 0; i < R; i++)
        pthread_join(th[i], NULL);
    return (double)acked / (bench_now_s() - t0);
}

static void done1(void *arg, gt_err_t err)
{
    *(gt_err_t *)arg = err;
}

typedef struct fill {
    pthread_mutex_t m;
    pthread_cond_t c;
    long pending;
} fill_t;

static void fill_cb(void *arg, gt_err_t err, const st_append_item_t *it,
                    size_t n)
{
    fill_t *f = arg;
    (void)it;
    (void)n;
    if (err != GT_OK)
        fprintf(stderr, "append failed: %s\n", gt_err_str(err));
    pthread_mutex_lock(&f->m);
    f->pending--;
    pthread_cond_signal(&f->c);
    pthread_mutex_unlock(&f->m);
}

static void fifo_one(const char *dir, long backlog, double secs)
{
    enum { B = 256, GROUPS = 16 };
    static st_message_t m[B];
    static char b[100];
    static char names[GROUPS][8];
    char sub[4096];
    fill_t f = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    snprintf(sub, sizeof(sub), "%s/fifo-%ld", dir, backlog);
    st_store_t *st = bench_open_store(sub, ST_FLUSH_ASYNC);
    gt_err_t rc = GT_OK;
    st_topic_t t = {.name = "fifo", .type = ST_TOPIC_FIFO, .queue_count = 8,
                    .perm = ST_PERM_READ | ST_PERM_WRITE};
    st_topic_put(st, &t, done1, &rc);
    st_group_t g = {.name = "fifo-g", .max_delivery_attempts = 16,
                    .fifo = true};
    st_group_put(st, &g, done1, &rc);
    st_group_t g2 = {.name = "norm-g", .max_delivery_attempts = 16};
    st_group_put(st, &g2, done1, &rc);
    for (int k = 0; k < GROUPS; k++)
        snprintf(names[k], sizeof(names[k]), "g%d", k);
    for (long i = 0; i < backlog;) {
        int k = 0;
        for (; k < B && i < backlog; k++, i++) {
            memset(&m[k], 0, sizeof(m[k]));
            m[k].body = b;
            m[k].body_len = sizeof(b);
            m[k].queue_id = ST_QUEUE_ANY;
            m[k].msg_group = names[i % GROUPS];
        }
        pthread_mutex_lock(&f.m);
        while (f.pending >= 64)
            pthread_cond_wait(&f.c, &f.m);
        f.pending++;
        pthread_mutex_unlock(&f.m);
        st_append(st, "fifo", m, (size_t)k, fill_cb, &f);
    }
    pthread_mutex_lock(&f.m);
    while (f.pending > 0)
        pthread_cond_wait(&f.c, &f.m);
    pthread_mutex_unlock(&f.m);
    double norm = drain(st, "norm-g", backlog, secs);
    double fifo = drain(st, "fifo-g", backlog, secs);
    printf("  backlog %8ld: normal %9.0f msgs/s   fifo %9.0f msgs/s   "
           "fifo/normal %.2f\n", backlog, norm, fifo, fifo / norm);
    fflush(stdout);
    st_close(st);
}

void bench_fifo(const char *dir, double secs)
{
    printf("\nFIFO vs normal drain (16 message groups, 8 queues, 4 receivers,"
           " batch 32, pop+ack, async store, %.0f s at most each):\n", secs);
    const char *mx = getenv("BENCH_FIFO_MAX");
    long max = mx ? atol(mx) : 1000000;
    long bs[] = {10000, 100000, 1000000};
    for (size_t i = 0; i < sizeof(bs) / sizeof(bs[0]); i++)
        if (bs[i] <= max)
            fifo_one(dir, bs[i], secs);
}
