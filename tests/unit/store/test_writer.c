/* The writer.  In async mode an appending thread writes small appends
 * itself when no one else is writing (test_async_caller_writes).  In sync
 * mode: a small append goes ahead of large ones to other topics that wait
 * for room in the write-ahead (ST_WRITE_AHEAD bytes written but not
 * synced), instead of waiting for their syncs; one to the same topic stays
 * behind them (a caller's appends keep their order); a large batch is
 * written in parts, and a small append goes between them; the segment is
 * zero-filled ahead of the writer by another thread, so appends are not
 * held by a write that grows the file.  The commitlog's syncs (and writes
 * that grow it) are held by a gate in the file layer, so what is written
 * while a sync is in progress is decided by the test, not by the disk's
 * speed. */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tu.h"

#define MiB (1024u * 1024u)

typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool armed;
    int entered; /* commitlog syncs begun while armed */
    int allowed; /* of them, how many may go on */
    bool grow_armed; /* commitlog writes that grow the file wait */
    int grow_held;   /* how many waited */
    uint64_t written_end; /* largest commitlog file offset written */
    bool write_armed; /* commitlog writes wait */
    int write_held;   /* how many waited */
} gate_t;

static gate_t gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                      false, 0, 0, false, 0, 0, false, 0};

static bool is_commitlog(int fd)
{
    char link[64], path[PATH_MAX];
    ssize_t n;

    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    n = readlink(link, path, sizeof(path) - 1);
    if (n <= 0)
        return false;
    path[n] = '\0';
    return strstr(path, "/commitlog/") != NULL;
}

static int g_open(void *ctx, const char *path, int flags, int mode)
{
    return st_posix_file_ops.open(ctx, path, flags, mode);
}
/* A write that grows a file can wait for an fdatasync of it in progress
 * (ext4: 60-370 ms under bench-overload C); armed, the gate holds such a
 * commitlog write until disarmed. */
static ssize_t g_pwritev(void *ctx, int fd, const struct iovec *iov, int cnt,
                         off_t off)
{
    uint64_t len = 0;
    struct stat sb;
    ssize_t r;

    for (int i = 0; i < cnt; i++)
        len += iov[i].iov_len;
    if (is_commitlog(fd)) {
        pthread_mutex_lock(&gate.mu);
        if (gate.write_armed) {
            gate.write_held++;
            pthread_cond_broadcast(&gate.cv);
            while (gate.write_armed)
                pthread_cond_wait(&gate.cv, &gate.mu);
        }
        if (gate.grow_armed && fstat(fd, &sb) == 0 &&
            (uint64_t)off + len > (uint64_t)sb.st_size) {
            gate.grow_held++;
            while (gate.grow_armed)
                pthread_cond_wait(&gate.cv, &gate.mu);
        }
        pthread_mutex_unlock(&gate.mu);
    }
    r = st_posix_file_ops.pwritev(ctx, fd, iov, cnt, off);
    if (r > 0 && is_commitlog(fd)) {
        pthread_mutex_lock(&gate.mu);
        if ((uint64_t)off + (uint64_t)r > gate.written_end)
            gate.written_end = (uint64_t)off + (uint64_t)r;
        pthread_cond_broadcast(&gate.cv);
        pthread_mutex_unlock(&gate.mu);
    }
    return r;
}
static ssize_t g_pread(void *ctx, int fd, void *buf, size_t n, off_t off)
{
    return st_posix_file_ops.pread(ctx, fd, buf, n, off);
}
static int g_fdatasync(void *ctx, int fd)
{
    (void)ctx;
    if (is_commitlog(fd)) {
        pthread_mutex_lock(&gate.mu);
        if (gate.armed) {
            int me = gate.entered++;
            pthread_cond_broadcast(&gate.cv);
            while (gate.armed && me >= gate.allowed)
                pthread_cond_wait(&gate.cv, &gate.mu);
        }
        pthread_mutex_unlock(&gate.mu);
    }
    return st_posix_file_ops.fdatasync(NULL, fd);
}
static int g_ftruncate(void *ctx, int fd, off_t len)
{
    return st_posix_file_ops.ftruncate(ctx, fd, len);
}
static int g_close(void *ctx, int fd)
{
    return st_posix_file_ops.close(ctx, fd);
}

static const st_file_ops_t gate_ops = {g_open, g_pwritev, g_pread,
                                       g_fdatasync, g_ftruncate, g_close};

/* One asynchronous append: its outcome and its place among completions. */
typedef struct sent {
    pthread_mutex_t *mu;
    pthread_cond_t *cv;
    int *order;
    int done; /* 0 while pending, else 1 + its completion rank */
    gt_err_t err;
    uint64_t position;
    pthread_t by; /* the thread it completed on */
} sent_t;

static void sent_cb(void *arg, gt_err_t err, const st_append_item_t *items,
                    size_t n)
{
    sent_t *s = arg;
    pthread_mutex_lock(s->mu);
    s->err = err;
    s->position = err == GT_OK && n > 0 ? items[0].position : 0;
    s->done = ++*s->order;
    s->by = pthread_self();
    pthread_cond_broadcast(s->cv);
    pthread_mutex_unlock(s->mu);
}

static void send_body_to(st_store_t *st, const char *topic, size_t len, sent_t *s)
{
    st_message_t m;
    char *body = malloc(len);

    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    memset(body, 'b', len);
    memset(&m, 0, sizeof(m));
    m.tag = "t";
    m.body = body;
    m.body_len = (uint32_t)len;
    m.queue_id = 0;
    m.born_ts_ms = 1700000000000;
    m.born_host = "127.0.0.1:1234";
    st_append(st, topic, &m, 1, sent_cb, s); /* encoded before it returns */
    free(body);
}

static void send_body(st_store_t *st, size_t len, sent_t *s)
{
    send_body_to(st, "T", len, s);
}

static void gate_wait_entered(int n)
{
    pthread_mutex_lock(&gate.mu);
    while (gate.entered < n)
        pthread_cond_wait(&gate.cv, &gate.mu);
    pthread_mutex_unlock(&gate.mu);
}

static void test_small_ahead_of_large(void)
{
    char *dir = tu_tmpdir("writer");
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    int order = 0;
    sent_t a = {&mu, &cv, &order, 0, GT_OK, 0, 0};
    sent_t b = a, s = a, t = a;
    st_config_t c;
    st_store_t *st = NULL;

    tu_config(&c, dir, ST_FLUSH_SYNC);
    c.segment_size = 64 * MiB;
    c.max_message_bytes = 8 * MiB;
    c.file_ops = &gate_ops;
    c.file_ctx = &gate;
    CU_ASSERT_EQUAL_FATAL(tu_open_cfg(&c, &st), GT_OK);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "U", 1), GT_OK);

    pthread_mutex_lock(&gate.mu);
    gate.armed = true;
    gate.entered = gate.allowed = 0;
    pthread_mutex_unlock(&gate.mu);
    /* A is written and its sync held: 5 MiB are ahead of the syncs. */
    send_body(st, 5 * MiB, &a);
    gate_wait_entered(1);
    /* B would pass the write-ahead: it waits for A's sync.  S (small, to
     * another topic) and T (small, to B's topic) come after B. */
    send_body(st, 5 * MiB, &b);
    send_body(st, 100, &t);
    send_body_to(st, "U", 100, &s);
    /* Let every sync go. */
    pthread_mutex_lock(&gate.mu);
    gate.armed = false;
    pthread_cond_broadcast(&gate.cv);
    pthread_mutex_unlock(&gate.mu);

    pthread_mutex_lock(&mu);
    while (!a.done || !b.done || !s.done || !t.done)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    CU_ASSERT_EQUAL(a.err, GT_OK);
    CU_ASSERT_EQUAL(b.err, GT_OK);
    CU_ASSERT_EQUAL(s.err, GT_OK);
    CU_ASSERT_EQUAL(t.err, GT_OK);
    /* S was written before B (and after A), and completed before it. */
    CU_ASSERT(a.position < s.position);
    CU_ASSERT(s.position < b.position);
    CU_ASSERT(s.done < b.done);
    CU_ASSERT_EQUAL(a.done, 1);
    /* T, to B's topic, stayed behind B: one queue keeps its order. */
    CU_ASSERT(b.position < t.position);
    CU_ASSERT(b.done < t.done);

    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

/* A large batch's answer: every item's position and queue offset. */
typedef struct batch_sent {
    sent_t s;
    size_t n;
    uint64_t pos[8], qoff[8];
    uint32_t qid[8];
} batch_sent_t;

static void batch_cb(void *arg, gt_err_t err, const st_append_item_t *items,
                     size_t n)
{
    batch_sent_t *b = arg;
    pthread_mutex_lock(b->s.mu);
    b->n = err == GT_OK ? n : 0;
    for (size_t i = 0; i < b->n && i < 8; i++) {
        b->pos[i] = items[i].position;
        b->qoff[i] = items[i].queue_offset;
        b->qid[i] = items[i].queue_id;
    }
    b->s.err = err;
    b->s.done = ++*b->s.order;
    pthread_cond_broadcast(b->s.cv);
    pthread_mutex_unlock(b->s.mu);
}

/* A batch of more than ST_PART_BYTES (4 MiB) of bodies is written in
 * parts: a small append to another topic that comes while its first part
 * is being synced is written before the rest of the batch, and answered
 * first (written whole, a 32 MiB batch held every small append behind
 * its whole write and sync: bench-overload C).  The batch is answered
 * once, with every item, in order, in the queue it chose. */
static void test_small_between_parts(void)
{
    enum { N = 4 };
    char *dir = tu_tmpdir("writer");
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    int order = 0;
    batch_sent_t big = {{&mu, &cv, &order, 0, GT_OK, 0, 0}, 0, {0}, {0}, {0}};
    sent_t s = {&mu, &cv, &order, 0, GT_OK, 0, 0};
    st_message_t m[N];
    char *body = malloc(3 * MiB);
    st_config_t c;
    st_store_t *st = NULL;

    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    memset(body, 'b', 3 * MiB);
    tu_config(&c, dir, ST_FLUSH_SYNC);
    c.segment_size = 64 * MiB;
    c.max_message_bytes = 8 * MiB;
    c.file_ops = &gate_ops;
    c.file_ctx = &gate;
    CU_ASSERT_EQUAL_FATAL(tu_open_cfg(&c, &st), GT_OK);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 4), GT_OK);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "U", 1), GT_OK);
    memset(m, 0, sizeof(m));
    for (int i = 0; i < N; i++) {
        m[i].tag = "t";
        m[i].body = body;
        m[i].body_len = 3 * MiB;
        m[i].queue_id = -1; /* the store chooses, once for the batch */
        m[i].born_ts_ms = 1700000000000;
        m[i].born_host = "127.0.0.1:1234";
    }

    pthread_mutex_lock(&gate.mu);
    gate.armed = true;
    gate.entered = gate.allowed = 0;
    pthread_mutex_unlock(&gate.mu);
    /* 12 MiB of bodies: the first part is written, its sync held. */
    st_append(st, "T", m, N, batch_cb, &big);
    gate_wait_entered(1);
    send_body_to(st, "U", 100, &s);
    pthread_mutex_lock(&gate.mu);
    gate.armed = false;
    pthread_cond_broadcast(&gate.cv);
    pthread_mutex_unlock(&gate.mu);

    pthread_mutex_lock(&mu);
    while (!big.s.done || !s.done)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    CU_ASSERT_EQUAL(big.s.err, GT_OK);
    CU_ASSERT_EQUAL(s.err, GT_OK);
    CU_ASSERT_EQUAL_FATAL(big.n, N);
    /* The small one went in before the batch's last part... */
    CU_ASSERT(big.pos[0] < s.position);
    CU_ASSERT(s.position < big.pos[N - 1]);
    CU_ASSERT(s.done < big.s.done);
    /* ...and the batch is whole: one queue, consecutive offsets, in
     * order. */
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(big.qid[i], big.qid[0]);
        CU_ASSERT_EQUAL(big.qoff[i], (uint64_t)i);
        if (i > 0)
            CU_ASSERT(big.pos[i - 1] < big.pos[i]);
    }

    st_close(st);
    tu_rmrf(dir);
    free(dir);
    free(body);
}

/* Waits (at most 30 s) for `*done` under mu/cv; false if it never came. */
static bool wait_done(pthread_mutex_t *mu, pthread_cond_t *cv, const int *done)
{
    struct timespec ts;
    bool ok;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 30;
    pthread_mutex_lock(mu);
    while (!*done && pthread_cond_timedwait(cv, mu, &ts) == 0)
        ;
    ok = *done != 0;
    pthread_mutex_unlock(mu);
    return ok;
}

/* The zero fill ahead of the records is written by its own thread, well
 * ahead of the writer: appends then write over zeros and are not held by
 * a write that grows the file (filled by the writer just before its data,
 * such a write held every append queued behind it).  Failed before: the
 * file never grew more than 1 MiB past the records, and with writes that
 * grow it held, the 5 MiB append and the small one behind it were never
 * answered. */
static void test_fill_ahead_of_writer(void)
{
    char *dir = tu_tmpdir("writer");
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    int order = 0;
    sent_t first = {&mu, &cv, &order, 0, GT_OK, 0, 0};
    sent_t big = first, s = first;
    struct timespec ts;
    st_config_t c;
    st_store_t *st = NULL;

    tu_config(&c, dir, ST_FLUSH_SYNC);
    c.segment_size = 64 * MiB;
    c.max_message_bytes = 8 * MiB;
    c.file_ops = &gate_ops;
    c.file_ctx = &gate;
    pthread_mutex_lock(&gate.mu);
    gate.written_end = 0;
    gate.grow_held = 0;
    pthread_mutex_unlock(&gate.mu);
    CU_ASSERT_EQUAL_FATAL(tu_open_cfg(&c, &st), GT_OK);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "U", 1), GT_OK);
    send_body(st, 100, &first);
    CU_ASSERT_FATAL(wait_done(&mu, &cv, &first.done));
    CU_ASSERT_EQUAL(first.err, GT_OK);

    /* The zero fill runs ahead: 16 MiB written means the fill has
     * published at least 11 MiB (it writes 4 MiB steps, 1 MiB a call),
     * more than the 5 MiB append below needs. */
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 30;
    pthread_mutex_lock(&gate.mu);
    while (gate.written_end < 16 * MiB &&
           pthread_cond_timedwait(&gate.cv, &gate.mu, &ts) == 0)
        ;
    CU_ASSERT(gate.written_end >= 16 * MiB);
    gate.grow_armed = true;
    pthread_mutex_unlock(&gate.mu);

    /* Writes that grow the file are held now: both appends fit in the
     * zeros and are answered. */
    send_body(st, 5 * MiB, &big);
    send_body_to(st, "U", 100, &s);
    CU_ASSERT(wait_done(&mu, &cv, &big.done));
    CU_ASSERT(wait_done(&mu, &cv, &s.done));
    CU_ASSERT_EQUAL(big.err, GT_OK);
    CU_ASSERT_EQUAL(s.err, GT_OK);

    pthread_mutex_lock(&gate.mu);
    gate.grow_armed = false;
    pthread_cond_broadcast(&gate.cv);
    pthread_mutex_unlock(&gate.mu);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

/* Async mode: a small append to an idle store is written by the
 * appending thread itself and answered before st_append() returns (no
 * hand-off to the writer thread).  One made while another thread is
 * writing is queued: its st_append() returns at once, and the writing
 * thread writes it after its own, in order, and answers it.  A large one
 * (past ST_SMALL_APPEND, 64 KiB) is written by the writer thread. */
typedef struct appender {
    st_store_t *st;
    sent_t *s;
    size_t len;
    int done_at_return; /* answers given when its st_append() returned */
    pthread_t self;
} appender_t;

static void *appender_main(void *arg)
{
    appender_t *a = arg;

    a->self = pthread_self();
    send_body(a->st, a->len, a->s);
    pthread_mutex_lock(a->s->mu);
    a->done_at_return = *a->s->order;
    pthread_mutex_unlock(a->s->mu);
    return NULL;
}

static void test_async_caller_writes(void)
{
    char *dir = tu_tmpdir("writer");
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    int order = 0;
    sent_t first = {&mu, &cv, &order, 0, GT_OK, 0, 0};
    sent_t held = first, queued = first, large = first;
    appender_t a = {NULL, &held, 100, 0, 0}, b = {NULL, &queued, 200, 0, 0};
    pthread_t ta, tb;
    st_config_t c;
    st_store_t *st = NULL;

    tu_config(&c, dir, ST_FLUSH_ASYNC);
    c.segment_size = 4 * MiB;
    c.max_message_bytes = 1 * MiB;
    c.file_ops = &gate_ops;
    c.file_ctx = &gate;
    CU_ASSERT_EQUAL_FATAL(tu_open_cfg(&c, &st), GT_OK);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);

    /* idle: written and answered on this thread, inside st_append() */
    send_body(st, 100, &first);
    pthread_mutex_lock(&mu);
    CU_ASSERT_EQUAL(first.done, 1);
    CU_ASSERT_EQUAL(first.err, GT_OK);
    CU_ASSERT(first.done && pthread_equal(first.by, pthread_self()));
    pthread_mutex_unlock(&mu);

    /* a's write is held in the file layer; b appends meanwhile */
    pthread_mutex_lock(&gate.mu);
    gate.write_armed = true;
    gate.write_held = 0;
    pthread_mutex_unlock(&gate.mu);
    a.st = b.st = st;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&ta, NULL, appender_main, &a), 0);
    pthread_mutex_lock(&gate.mu);
    while (gate.write_held < 1)
        pthread_cond_wait(&gate.cv, &gate.mu);
    pthread_mutex_unlock(&gate.mu);
    CU_ASSERT_EQUAL_FATAL(pthread_create(&tb, NULL, appender_main, &b), 0);
    pthread_join(tb, NULL); /* returns while a still writes */
    pthread_mutex_lock(&mu);
    CU_ASSERT_EQUAL(b.done_at_return, 1); /* first's */
    CU_ASSERT_EQUAL(queued.done, 0);
    pthread_mutex_unlock(&mu);
    pthread_mutex_lock(&gate.mu);
    CU_ASSERT_EQUAL(gate.write_held, 1); /* the writer thread took nothing */
    gate.write_armed = false;
    pthread_cond_broadcast(&gate.cv);
    pthread_mutex_unlock(&gate.mu);
    pthread_join(ta, NULL);

    /* a wrote and answered both before its st_append() returned, its own
     * first */
    CU_ASSERT_EQUAL(a.done_at_return, 3);
    CU_ASSERT_EQUAL(held.done, 2);
    CU_ASSERT_EQUAL(queued.done, 3);
    CU_ASSERT_EQUAL(held.err, GT_OK);
    CU_ASSERT_EQUAL(queued.err, GT_OK);
    CU_ASSERT(pthread_equal(held.by, a.self));
    CU_ASSERT(pthread_equal(queued.by, a.self));
    CU_ASSERT(held.position > first.position);
    CU_ASSERT(queued.position > held.position);

    /* a large append is left to the writer thread */
    send_body(st, 256 * 1024, &large);
    CU_ASSERT_FATAL(wait_done(&mu, &cv, &large.done));
    CU_ASSERT_EQUAL(large.err, GT_OK);
    CU_ASSERT(!pthread_equal(large.by, pthread_self()));
    CU_ASSERT(large.position > queued.position);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    static const CU_TestInfo tests[] = {
        {"small_ahead_of_large", test_small_ahead_of_large},
        {"small_between_parts", test_small_between_parts},
        {"fill_ahead_of_writer", test_fill_ahead_of_writer},
        {"async_caller_writes", test_async_caller_writes},
        CU_TEST_INFO_NULL,
    };
    return tu_run("writer", tests);
}
