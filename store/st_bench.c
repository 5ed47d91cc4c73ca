/* gt_bench_store: the store benchmark behind scripts/bench-store (not a
 * test).  In one run it measures the disk's own figures in the data
 * directory -- sequential buffered 1 MiB writes (MB/s) and fdatasync'd 4 KiB
 * appends per second from one writer -- then the store's: 1 KiB appends/s
 * and MB/s with 1, 4 and 16 appenders in sync and async mode, and pop+ack
 * per second, each also printed as a ratio to the disk's figure; then delay
 * timers: how many fire per second (reach their topic) when 100k come due
 * at once with 100k more pending, in sync and async mode.
 *
 * Each appender is a thread that keeps up to `window` appends of one 1 KiB
 * message in flight (1 in sync mode: a blocking producer; 64 in async mode:
 * a pipelining producer).  MB/s counts message bodies only.
 *
 * Then the pop path (st_bench_pop.c): parked long polls (park rate, wake
 * latency and cancel rate at 10 / 10k / 100k parked) and FIFO vs normal
 * drain on the same backlog.
 *
 * Then (section "topics") async appends spread over 1 .. 100,000 declared
 * topics (BENCH_TOPICS, BENCH_REPEAT), as a ratio to one topic, with the
 * store's heap bytes per idle queue.  Section "mem" (only when named):
 * RSS and reopen time with 100k and 10M stored 1 KiB messages.
 *
 * Usage: gt_bench_store <dir> [seconds per measurement, default 3]
 *                      [sections: comma list of append,popack,timers,park,
 *                       fifo,topics,mem; default all, except mem, which
 *                       writes ~10 GB: BENCH_MEM_COUNTS] */
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gt_log.h"
#include "st.h"
#include "st_int.h" /* st_local_index_info */

double bench_now_s(void);
st_store_t *bench_open_store(const char *dir, st_flush_t flush);
void bench_park(const char *dir);          /* st_bench_pop.c */
void bench_fifo(const char *dir, double secs);
double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double seconds = 3.0;
static char body[1024];

/* ---- disk baseline --------------------------------------------------------- */
static double disk_buffered_mbs(const char *dir)
{
    char path[4096];
    static char chunk[1 << 20];
    snprintf(path, sizeof(path), "%s/disk-seq.tmp", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return 0;
    memset(chunk, 'd', sizeof(chunk));
    double t0 = bench_now_s(), t;
    size_t bytes = 0;
    while ((t = bench_now_s()) - t0 < seconds && bytes < (size_t)8 << 30) {
        if (write(fd, chunk, sizeof(chunk)) != (ssize_t)sizeof(chunk))
            break;
        bytes += sizeof(chunk);
    }
    close(fd);
    unlink(path);
    return (double)bytes / 1e6 / (t - t0);
}

static double disk_sync_appends(const char *dir)
{
    char path[4096], blk[4096];
    snprintf(path, sizeof(path), "%s/disk-sync.tmp", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    if (fd < 0)
        return 0;
    memset(blk, 's', sizeof(blk));
    double t0 = bench_now_s(), t;
    long n = 0;
    while ((t = bench_now_s()) - t0 < seconds) {
        if (write(fd, blk, sizeof(blk)) != (ssize_t)sizeof(blk) ||
            fdatasync(fd) != 0)
            break;
        n++;
    }
    close(fd);
    unlink(path);
    return (double)n / (t - t0);
}

/* ---- store helpers ------------------------------------------------------------ */
typedef struct wait1 {
    pthread_mutex_t m;
    pthread_cond_t c;
    int pending;
    gt_err_t err;
} wait1_t;

static void done_cb(void *arg, gt_err_t err)
{
    wait1_t *w = arg;
    pthread_mutex_lock(&w->m);
    w->err = err;
    w->pending--;
    pthread_cond_signal(&w->c);
    pthread_mutex_unlock(&w->m);
}

static void wait_all(wait1_t *w)
{
    pthread_mutex_lock(&w->m);
    while (w->pending > 0)
        pthread_cond_wait(&w->c, &w->m);
    pthread_mutex_unlock(&w->m);
}

st_store_t *bench_open_store(const char *dir, st_flush_t flush)
{
    st_config_t c;
    st_store_t *st = NULL;
    wait1_t w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 1, 0};
    st_topic_t t = {.name = "bench", .type = ST_TOPIC_NORMAL,
                    .queue_count = 8, .perm = ST_PERM_READ | ST_PERM_WRITE};
    st_config_init(&c);
    c.dir = dir;
    c.flush = flush;
    c.segment_size = 256u << 20;
    if (st_local_open(&c, &st) != GT_OK) {
        fprintf(stderr, "cannot open store in %s\n", dir);
        exit(1);
    }
    st_topic_put(st, &t, done_cb, &w);
    wait_all(&w);
    return st;
}

/* ---- appenders ----------------------------------------------------------------- */
typedef struct appender {
    st_store_t *st;
    char (*topics)[24];  /* NULL: "bench"; else spread round robin */
    size_t ntopics, next;
    int window;
    double deadline;
    pthread_mutex_t m;
    pthread_cond_t c;
    int inflight;
    bool waiting;
    long done, failed;
} appender_t;

static void append_cb(void *arg, gt_err_t err, const st_append_item_t *items,
                      size_t n)
{
    appender_t *a = arg;
    pthread_mutex_lock(&a->m);
    a->inflight--;
    if (err == GT_OK)
        a->done++;
    else
        a->failed++;
    /* wake the producer when half its window is free (or at the end),
     * like a pipelining client would, not on every completion */
    if (a->waiting && (a->inflight <= a->window / 2 || a->inflight == 0))
        pthread_cond_signal(&a->c);
    pthread_mutex_unlock(&a->m);
}

static void *appender_main(void *p)
{
    appender_t *a = p;
    st_message_t m;
    memset(&m, 0, sizeof(m));
    m.tag = "bench";
    m.body = body;
    m.body_len = sizeof(body);
    m.queue_id = ST_QUEUE_ANY;
    while (bench_now_s() < a->deadline) {
        pthread_mutex_lock(&a->m);
        while (a->inflight >= a->window) {
            a->waiting = true;
            pthread_cond_wait(&a->c, &a->m);
            a->waiting = false;
        }
        a->inflight++;
        pthread_mutex_unlock(&a->m);
        const char *topic = "bench";
        if (a->topics) {
            topic = a->topics[a->next];
            a->next = (a->next + 1) % a->ntopics;
        }
        st_append(a->st, topic, &m, 1, append_cb, a);
    }
    pthread_mutex_lock(&a->m);
    while (a->inflight > 0) {
        a->waiting = true;
        pthread_cond_wait(&a->c, &a->m);
        a->waiting = false;
    }
    pthread_mutex_unlock(&a->m);
    return NULL;
}

static char (*spread_topics)[24]; /* run_appenders: topics to spread over */
static size_t spread_n;

static double run_appenders(st_store_t *st, int n, int window, long *total)
{
    appender_t *a = calloc((size_t)n, sizeof(*a));
    pthread_t *th = calloc((size_t)n, sizeof(*th));
    double t0 = bench_now_s();
    for (int i = 0; i < n; i++) {
        a[i] = (appender_t){.st = st, .window = window,
                            .deadline = t0 + seconds,
                            .topics = spread_topics, .ntopics = spread_n,
                            .next = spread_n ? spread_n * (size_t)i / (size_t)n
                                             : 0};
        pthread_mutex_init(&a[i].m, NULL);
        pthread_cond_init(&a[i].c, NULL);
        pthread_create(&th[i], NULL, appender_main, &a[i]);
    }
    long done = 0, failed = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        done += a[i].done;
        failed += a[i].failed;
    }
    double dt = bench_now_s() - t0;
    if (failed)
        fprintf(stderr, "%ld appends failed\n", failed);
    free(a);
    free(th);
    *total = done;
    return (double)done / dt;
}

/* ---- pop + ack ------------------------------------------------------------------- */
typedef struct popper {
    st_store_t *st;
    wait1_t w;
    long acked;
    int got;
    char handles[32][ST_HANDLE_MAX];
} popper_t;

static void pop_cb(void *arg, gt_err_t err, const st_popped_t *msgs, size_t n)
{
    popper_t *p = arg;
    p->got = (int)n;
    for (size_t i = 0; i < n; i++)
        memcpy(p->handles[i], msgs[i].handle, ST_HANDLE_MAX);
    done_cb(&p->w, err);
}

static double run_pop_ack(st_store_t *st, long available)
{
    popper_t p = {.st = st,
                  .w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0,
                        0}};
    st_pop_req_t r = {.group = "bench-g", .topic = "bench",
                      .queue_id = ST_QUEUE_ANY, .max = 32,
                      .invisible_ms = 60000};
    double t0 = bench_now_s();
    while (bench_now_s() - t0 < seconds && p.acked < available) {
        p.w.pending = 1;
        st_pop(st, &r, pop_cb, &p);
        wait_all(&p.w);
        if (p.got == 0)
            break;
        p.w.pending = p.got;
        for (int i = 0; i < p.got; i++)
            st_ack(st, "bench-g", "bench", p.handles[i], done_cb, &p.w);
        wait_all(&p.w);
        p.acked += p.got;
    }
    return (double)p.acked / (bench_now_s() - t0);
}

/* ---- timers ------------------------------------------------------------------------ */
static void append_n_cb(void *arg, gt_err_t err, const st_append_item_t *items,
                        size_t n)
{
    (void)items;
    (void)n;
    done_cb(arg, err);
}

static void stats_cb(void *arg, gt_err_t err, const st_stats_t *s)
{
    uint64_t *out = arg;
    *out = err == GT_OK ? s->messages : 0;
}

static uint64_t topic_messages(st_store_t *st, const char *topic)
{
    uint64_t n = 0;
    st_stats(st, topic, NULL, stats_cb, &n); /* answers immediately */
    return n;
}

/* Sends `due_n` delayed 100-byte messages due all at the same instant in
 * `lead_s` seconds, on top of `pending` due in an hour (sent first, or
 * interleaved with them so that every fired one needs its own resolution
 * record), then times how fast the due ones reach their topic (timers
 * fired per second while `pending` + the rest wait). */
static double run_timers(st_store_t *st, long due_n, long pending,
                         bool interleave, double lead_s, double *first_ms)
{
    enum { B = 256 };
    static st_message_t m[B];
    wait1_t w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
    int64_t now_ms;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    now_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    int64_t due = now_ms + (int64_t)(lead_s * 1000);
    for (long i = 0; i < due_n + pending;) {
        int k = 0;
        for (; k < B && i < due_n + pending; k++, i++) {
            memset(&m[k], 0, sizeof(m[k]));
            m[k].body = body;
            m[k].body_len = 100;
            m[k].queue_id = ST_QUEUE_ANY;
            bool now_due = interleave ? i % 2 == 0 : i < due_n;
            m[k].delivery_ts_ms = now_due ? due : due + 3600000 + i;
        }
        pthread_mutex_lock(&w.m);
        w.pending++;
        pthread_mutex_unlock(&w.m);
        st_append(st, "bench", m, (size_t)k, append_n_cb, &w);
        if (i % (B * 64) == 0)
            wait_all(&w);
    }
    wait_all(&w);
    clock_gettime(CLOCK_REALTIME, &ts); /* `due` on the monotonic clock */
    double t_due = bench_now_s() + (double)(due - ((int64_t)ts.tv_sec * 1000 +
                                      ts.tv_nsec / 1000000)) / 1000.0;
    if (t_due < bench_now_s()) {
        fprintf(stderr, "timers: sending took longer than the lead time\n");
        return 0;
    }
    uint64_t base = topic_messages(st, "bench");
    *first_ms = -1;
    double t;
    while ((t = bench_now_s()) - t_due < 120) {
        uint64_t got = topic_messages(st, "bench") - base;
        if (got > 0 && *first_ms < 0)
            *first_ms = (t - t_due) * 1000;
        if (got >= (uint64_t)due_n)
            break;
        struct timespec sl = {0, 1000000};
        nanosleep(&sl, NULL);
    }
    return (double)due_n / (t - t_due);
}

/* ---- many topics ------------------------------------------------------------------ */
static double heap_bytes(void)
{
    struct mallinfo2 mi = mallinfo2();
    return (double)(mi.uordblks + mi.hblkhd);
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

typedef struct topics_fig {
    double rate, cpu_us, idle_b, used_b;
} topics_fig_t;

/* One run on a fresh store: declares n topics x 8 queues, then appends
 * spread round robin over them. */
static topics_fig_t topics_run(const char *dir, size_t n)
{
    char sub[4096], cmd[4200];
    topics_fig_t f = {0};
    snprintf(sub, sizeof(sub), "%s/store-topics-%zu", dir, n);
    st_store_t *st = bench_open_store(sub, ST_FLUSH_ASYNC);
    spread_topics = calloc(n, sizeof(*spread_topics));
    spread_n = n;
    double h0 = heap_bytes();
    wait1_t w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
    for (size_t i = 0; i < n; i++) {
        st_topic_t t = {.type = ST_TOPIC_NORMAL, .queue_count = 8,
                        .perm = ST_PERM_READ | ST_PERM_WRITE};
        snprintf(spread_topics[i], sizeof(spread_topics[i]), "t%zu", i);
        snprintf(t.name, sizeof(t.name), "%s", spread_topics[i]);
        w.pending = 1;
        st_topic_put(st, &t, done_cb, &w);
        wait_all(&w);
    }
    /* the bench's own name table is not the store's */
    double h1 = heap_bytes() - (double)(n * sizeof(*spread_topics));
    double c0 = cpu_s();
    long total;
    f.rate = run_appenders(st, 4, 64, &total);
    f.cpu_us = total ? (cpu_s() - c0) * 1e6 / (double)total : 0;
    double queues = (double)n * 8;
    f.idle_b = (h1 - h0) / queues;
    st_close(st);
    free(spread_topics);
    spread_topics = NULL;
    spread_n = 0;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", sub);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", sub);
    return f;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Async 1 KiB appends from 4 appenders (window 64) spread round robin over
 * N declared topics of 8 queues, for each N in BENCH_TOPICS (default
 * 1,1000,10000,100000), each on a fresh store, BENCH_REPEAT rounds
 * (default 1; the counts alternate within a round, medians are shown);
 * rates as a ratio to the first N.  Also heap bytes per idle queue: the
 * store's heap growth from declaring the topics, over their queues (the
 * topic object's share included). */
static void run_topics(const char *dir)
{
    const char *list = getenv("BENCH_TOPICS");
    int rounds = getenv("BENCH_REPEAT") ? atoi(getenv("BENCH_REPEAT")) : 1;
    char buf[256];
    size_t counts[16], nc = 0;
    snprintf(buf, sizeof(buf), "%s", list ? list : "1,1000,10000,100000");
    for (char *tok = strtok(buf, ","); tok && nc < 16; tok = strtok(NULL, ","))
        if (atol(tok) > 0)
            counts[nc++] = (size_t)atol(tok);
    if (rounds < 1 || rounds > 15)
        rounds = 1;
    static topics_fig_t fig[15][16];
    for (int r = 0; r < rounds; r++)
        for (size_t c = 0; c < nc; c++)
            fig[r][c] = topics_run(dir, counts[c]);
    printf("many topics: async 1 KiB appends, 4 appenders x window 64, "
           "round robin over N topics x 8 queues (median of %d):\n", rounds);
    printf("  %8s %12s %8s %12s %18s\n", "topics", "appends/s", "ratio",
           "CPU us/msg", "heap B/idle queue");
    double base = 0;
    for (size_t c = 0; c < nc; c++) {
        double v[4][15];
        for (int r = 0; r < rounds; r++) {
            v[0][r] = fig[r][c].rate;
            v[1][r] = fig[r][c].cpu_us;
            v[2][r] = fig[r][c].idle_b;
        }
        for (int k = 0; k < 3; k++)
            qsort(v[k], (size_t)rounds, sizeof(double), cmp_dbl);
        double rate = v[0][rounds / 2];
        if (c == 0)
            base = rate;
        printf("  %8zu %12.0f %7.2fx %12.2f %18.0f\n", counts[c], rate,
               rate / base, v[1][rounds / 2], v[2][rounds / 2]);
    }
    fflush(stdout);
}

/* ---- memory per stored message ----------------------------------------------- */
static double status_mib(const char *key) /* "VmRSS:" etc. */
{
    char line[256];
    long kb = 0;
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, key, strlen(key)) == 0) {
            kb = strtol(line + strlen(key), NULL, 10);
            break;
        }
    if (f)
        fclose(f);
    return (double)kb / 1024.0;
}

static double rss_mib(void)
{
    return status_mib("VmRSS:");
}

/* Resets the peak RSS (VmHWM) to the current RSS; false if not possible. */
static bool hwm_reset(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    bool ok = f && fputs("5", f) >= 0;
    if (f)
        ok = fclose(f) == 0 && ok;
    return ok;
}

static void lookup_cb(void *arg, gt_err_t err, const st_message_t *msgs,
                      size_t n, uint64_t next)
{
    (void)msgs;
    (void)next;
    long *hits = arg;
    *hits += err == GT_OK && n == 1;
}

/* Looks up k ids of the n stored (spread evenly, from a random start), or
 * k absent ones (index cost alone: no record to read); returns lookups/s
 * and counts hits. */
static double lookups(st_store_t *st, long n, long k, bool absent,
                      long *hits)
{
    char id[32];
    long step = n / k > 0 ? n / k : 1, at = rand() % step;
    double t0 = bench_now_s();
    for (long i = 0; i < k; i++, at = (at + step) % n) {
        snprintf(id, sizeof(id), "%s-%ld", absent ? "absent" : "bench", at);
        st_lookup_id(st, "bench", id, lookup_cb, hits); /* local: inline */
    }
    return (double)k / (bench_now_s() - t0);
}

/* Stores n 1 KiB messages (async, batches of 32, ids "bench-<i>": one index
 * entry each) in a fresh store, then closes it, reopens it and reports RSS
 * and the open time, for each n in BENCH_MEM_COUNTS (default
 * 100000,10000000; the data, ~1 KiB per message, is deleted after each).
 * Then the index: its memory (in-memory tables, fences) and run count after
 * the reopen, and 10,000 lookups by id (one at a time, page cache warm or
 * not as the run left it). */
static void run_mem(const char *dir)
{
    enum { B = 32 };
    const char *list = getenv("BENCH_MEM_COUNTS");
    char buf[256], sub[4096], cmd[4200];
    double first_rss = 0;
    static st_message_t m[B];
    static char ids[B][32];
    struct ixrow {
        long n, hits, false_hits;
        st_index_info_t ii;
        double lk, lk_absent;
    } ixr[16];
    int nix = 0;
    snprintf(buf, sizeof(buf), "%s", list ? list : "100000,10000000");
    printf("memory per stored message: async 1 KiB appends (batches of %d), "
           "then close and reopen:\n", B);
    printf("  %10s %12s %12s %10s %14s %10s %12s %12s %12s\n", "messages",
           "RSS MiB", "RSS reopen", "open s", "B/msg reopen", "x first",
           "close peak", "total RSS", "total reopen");
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        long n = atol(tok);
        if (n <= 0)
            continue;
        snprintf(sub, sizeof(sub), "%s/store-mem-%ld", dir, n);
        double base = rss_mib();
        st_store_t *st = bench_open_store(sub, ST_FLUSH_ASYNC);
        wait1_t w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
        for (long i = 0; i < n;) {
            int k = 0;
            for (; k < B && i < n; k++, i++) {
                memset(&m[k], 0, sizeof(m[k]));
                m[k].tag = "bench";
                snprintf(ids[k], sizeof(ids[k]), "bench-%ld", i);
                m[k].msg_id = ids[k];
                m[k].body = body;
                m[k].body_len = sizeof(body);
                m[k].queue_id = ST_QUEUE_ANY;
            }
            pthread_mutex_lock(&w.m);
            w.pending++;
            pthread_mutex_unlock(&w.m);
            st_append(st, "bench", m, (size_t)k, append_n_cb, &w);
            if ((i / B) % 64 == 0)
                wait_all(&w);
        }
        wait_all(&w);
        malloc_trim(0);
        double total = rss_mib(), rss = total - base;
        /* the close writes the table snapshot: its peak over the RSS before */
        bool hwm = hwm_reset();
        double before = rss_mib();
        st_close(st);
        double spike = hwm ? status_mib("VmHWM:") / before : 0;
        malloc_trim(0);
        double base2 = rss_mib(), t0 = bench_now_s();
        st = bench_open_store(sub, ST_FLUSH_ASYNC);
        double open_s = bench_now_s() - t0;
        malloc_trim(0);
        double total2 = rss_mib(), rss2 = total2 - base2;
        if (first_rss == 0)
            first_rss = rss2;
        printf("  %10ld %12.1f %12.1f %10.2f %14.1f %9.2fx %11.2fx %12.1f "
               "%12.1f\n", n, rss, rss2, open_s, rss2 * 1048576.0 / (double)n,
               rss2 / first_rss, spike, total, total2);
        fflush(stdout);
        if (nix < 16) {
            struct ixrow *x = &ixr[nix++];
            x->n = n;
            x->hits = x->false_hits = 0;
            st_local_index_info(st, &x->ii);
            x->lk = lookups(st, n, 10000, false, &x->hits);
            x->lk_absent = lookups(st, n, 10000, true, &x->false_hits);
        }
        st_close(st);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", sub);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", sub);
    }
    printf("  id / key index after the reopen (in-memory part: tables, "
           "fences), 10,000 lookups by id, stored and absent (one at a time):\n");
    printf("  %10s %12s %10s %8s %12s %10s %14s\n", "messages", "index KiB",
           "in memory", "runs", "lookups/s", "found", "absent ids/s");
    for (int i = 0; i < nix; i++)
        printf("  %10ld %12.0f %10zu %8zu %12.0f %10ld %14.0f\n", ixr[i].n,
               ixr[i].ii.mem_bytes / 1024.0, ixr[i].ii.mem_entries,
               ixr[i].ii.runs, ixr[i].lk, ixr[i].hits, ixr[i].lk_absent);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s <dir> [seconds] [sections]\n", argv[0]);
        return 2;
    }
    if (argc > 2)
        seconds = atof(argv[2]);
    const char *only = argc > 3 ? argv[3] : "all";
#define WANT(x) (strcmp(only, "all") == 0 || strstr(only, x) != NULL)
    gt_log_set_level(getenv("BENCH_VERBOSE") ? GT_LOG_LEVEL_INFO : GT_LOG_LEVEL_WARN);
    memset(body, 'b', sizeof(body));
    const char *dir = argv[1];
    mkdir(dir, 0755);
    char sub[4096];
    if (WANT("append") || WANT("popack")) {
        double disk_mbs = disk_buffered_mbs(dir);
        double disk_sync = disk_sync_appends(dir);
        printf("disk (%s):\n", dir);
        printf("  sequential buffered 1 MiB writes : %10.1f MB/s\n", disk_mbs);
        printf("  fdatasync'd 4 KiB appends        : %10.0f /s\n\n", disk_sync);
        printf("store appends, 1 KiB messages (MB/s counts bodies):\n");
        printf("  %-5s %9s %6s %12s %9s %14s %14s\n", "mode", "appenders",
               "window", "appends/s", "MB/s", "x disk fsync/s", "of disk MB/s");
        long last_total = 0;
        st_store_t *last = NULL;
        for (int mode = 0; mode < 2; mode++) {
            int counts[] = {1, 4, 16};
            for (int i = 0; i < 3; i++) {
                snprintf(sub, sizeof(sub), "%s/store-%d-%d", dir, mode, counts[i]);
                st_store_t *st = bench_open_store(sub, mode ? ST_FLUSH_ASYNC
                                                      : ST_FLUSH_SYNC);
                long total;
                int window = mode ? 64 : 1;
                double rate = run_appenders(st, counts[i], window, &total);
                double mbs = rate * sizeof(body) / 1e6;
                printf("  %-5s %9d %6d %12.0f %9.1f %13.2fx %13.1f%%\n",
                       mode ? "async" : "sync", counts[i], window, rate, mbs,
                       rate / disk_sync, 100.0 * mbs / disk_mbs);
                fflush(stdout);
                if (mode == 1 && i == 2) { /* keep the last one for pop+ack */
                    last = st;
                    last_total = total;
                } else {
                    st_close(st);
                }
            }
        }
        double pa = run_pop_ack(last, last_total);
        printf("\npop+ack (1 consumer, batches of 32, async store): %.0f "
               "messages/s (%.2fx disk fsync/s)\n", pa, pa / disk_sync);
        st_close(last);
    }
    if (WANT("timers")) {
        printf("\ndelay timers: 100k due at one instant, 100k more pending an "
               "hour ahead (100-byte bodies):\n");
        for (int run = 0; run < 4; run++) {
            int mode = run & 1;
            bool inter = run >= 2;
            double first = -1;
            snprintf(sub, sizeof(sub), "%s/store-timers-%d", dir, run);
            st_store_t *st = bench_open_store(sub, mode ? ST_FLUSH_ASYNC
                                                  : ST_FLUSH_SYNC);
            double rate = run_timers(st, 100000, 100000, inter, mode ? 3.0 : 8.0,
                                     &first);
            printf("  %-5s %-11s timers fired/s %10.0f   (first visible %.0f ms "
                   "after its time)\n", mode ? "async" : "sync",
                   inter ? "interleaved" : "in a run", rate, first);
            fflush(stdout);
            st_close(st);
        }
    }
    if (WANT("park"))
        bench_park(dir);
    if (WANT("fifo"))
        bench_fifo(dir, seconds * 10);
    if (WANT("topics"))
        run_topics(dir);
    if (strstr(only, "mem")) /* only when asked: it writes ~10 GB */
        run_mem(dir);
    return 0;
}
