/* st_ack_batch(): per-handle results for a mix of valid, malformed,
 * superseded, expired, already acked and repeated handles; errors of the
 * request as a whole; a full ST_ACK_MAX batch; acks that survive a reopen
 * (sync flush); one state log write per batch, and a failed one acks
 * nothing; the same through the late decorator (answers on its own
 * thread, after a delay); and one state log write per pop. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tu.h"

/* A file layer that counts the writes to the state log and can fail them
 * (EIO). */
typedef struct slog {
    atomic_int fds[4];      /* state log files open (fd + 1; 0: none) */
    atomic_int writes;
    atomic_bool fail;
} slog_t;

static bool is_slog(slog_t *l, int fd)
{
    for (int i = 0; i < 4; i++)
        if (atomic_load(&l->fds[i]) == fd + 1)
            return true;
    return false;
}

static int f_open(void *ctx, const char *path, int flags, int mode)
{
    slog_t *l = ctx;
    int fd = st_posix_file_ops.open(NULL, path, flags, mode);
    if (fd >= 0 && strstr(path, "state.log") != NULL)
        for (int i = 0; i < 4; i++) {
            int none = 0;
            if (atomic_compare_exchange_strong(&l->fds[i], &none, fd + 1))
                break;
        }
    return fd;
}
static ssize_t f_pwritev(void *ctx, int fd, const struct iovec *iov, int cnt,
                         off_t off)
{
    slog_t *l = ctx;
    if (is_slog(l, fd)) {
        atomic_fetch_add(&l->writes, 1);
        if (atomic_load(&l->fail))
            return -EIO;
    }
    return st_posix_file_ops.pwritev(NULL, fd, iov, cnt, off);
}
static ssize_t f_pread(void *ctx, int fd, void *buf, size_t n, off_t off)
{
    (void)ctx;
    return st_posix_file_ops.pread(NULL, fd, buf, n, off);
}
static int f_fdatasync(void *ctx, int fd)
{
    (void)ctx;
    return st_posix_file_ops.fdatasync(NULL, fd);
}
static int f_ftruncate(void *ctx, int fd, off_t len)
{
    (void)ctx;
    return st_posix_file_ops.ftruncate(NULL, fd, len);
}
static int f_close(void *ctx, int fd)
{
    slog_t *l = ctx;
    for (int i = 0; i < 4; i++) {
        int me = fd + 1;
        atomic_compare_exchange_strong(&l->fds[i], &me, 0);
    }
    return st_posix_file_ops.close(NULL, fd);
}

static const st_file_ops_t slog_ops = {f_open, f_pwritev, f_pread,
                                       f_fdatasync, f_ftruncate, f_close};

/* Opens a store (sync flush) in dir on the counting file layer l. */
static st_store_t *slog_open(const char *dir, slog_t *l, st_config_t *c)
{
    st_store_t *st = NULL;

    memset(l, 0, sizeof(*l));
    tu_config(c, dir, ST_FLUSH_SYNC);
    c->file_ops = &slog_ops;
    c->file_ctx = l;
    CU_ASSERT_EQUAL_FATAL(st_local_open(c, &st), GT_OK);
    return st;
}

/* Pops everything ready for G on T (up to cap), invisible for inv_ms. */
static size_t pop_all(st_store_t *st, int64_t inv_ms, tu_msg_t *m, size_t cap)
{
    size_t got = 0, n;
    do {
        n = 0;
        CU_ASSERT_EQUAL_FATAL(tu_pop_simple(st, "G", "T", "*",
                                            cap - got < ST_POP_MAX
                                                ? (uint32_t)(cap - got)
                                                : ST_POP_MAX,
                                            inv_ms, m + got, &n), GT_OK);
        got += n;
    } while (n > 0 && got < cap);
    return got;
}

/* clock: the local store under st (for tu_clock_advance). */
static void mixed(st_store_t *st, st_store_t *clock)
{
    tu_msg_t a[8], e[2], again[8];
    char moved[ST_HANDLE_MAX];
    size_t n;
    gt_err_t errs[10];

    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 2), GT_OK);
    for (int i = 0; i < 4; i++)
        CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "m", -1, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 4, 30000, a, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 4);
    /* one to expire: invisible for 100 ms, then the clock passes that */
    CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "x", -1, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 1, 100, e, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    tu_clock_advance(clock, 100);
    /* a[1] superseded by a new handle; a[3] already acked */
    CU_ASSERT_EQUAL(tu_change(st, "G", "T", a[1].handle, 30000, moved), GT_OK);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", a[3].handle), GT_OK);

    const char *h[] = {a[0].handle, "garbage", a[1].handle, a[2].handle,
                       a[3].handle, a[0].handle, moved, "", e[0].handle};
    const gt_err_t want[] = {GT_OK, GT_EINVAL, GT_EINVAL, GT_OK, GT_EINVAL,
                             GT_EINVAL, GT_OK, GT_EINVAL, GT_EINVAL};
    size_t nh = sizeof(h) / sizeof(h[0]);
    for (size_t i = 0; i < nh; i++)
        errs[i] = GT_EIO;
    CU_ASSERT_EQUAL(tu_ack_batch(st, "G", "T", h, nh, errs, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, nh);
    for (size_t i = 0; i < nh; i++)
        CU_ASSERT_EQUAL(errs[i], want[i]);
    /* the acked ones are done: the same batch again acks nothing */
    CU_ASSERT_EQUAL(tu_ack_batch(st, "G", "T", h, nh, errs, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, nh);
    for (size_t i = 0; i < nh; i++)
        CU_ASSERT_EQUAL(errs[i], GT_EINVAL);
    /* only the expired one comes back (attempt 2), now or after the
     * others' invisible time */
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 8, 30000, again, &n),
                    GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_STRING_EQUAL(again[0].body, "x");
    CU_ASSERT_EQUAL(again[0].attempt, 2);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", again[0].handle), GT_OK);
    tu_clock_advance(clock, 30000);
    CU_ASSERT_EQUAL(pop_all(st, 30000, again, 8), 0);
    st_stats_t s;
    CU_ASSERT_EQUAL(tu_stats(st, "T", "G", &s), GT_OK);
    CU_ASSERT_EQUAL(s.inflight, 0);
    CU_ASSERT_EQUAL(s.lag, 0);

    /* the request as a whole */
    CU_ASSERT_EQUAL(tu_ack_batch(st, "G", "nope", h, 1, errs, &n), GT_ENOTFOUND);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(tu_ack_batch(st, "nope", "T", h, 1, errs, &n), GT_ENOTFOUND);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(tu_ack_batch(st, "G", "T", h, 0, errs, &n), GT_EINVAL);
    CU_ASSERT_EQUAL(n, 0);
    const char **many = calloc(ST_ACK_MAX + 1, sizeof(*many));
    for (size_t i = 0; i <= ST_ACK_MAX; i++)
        many[i] = "garbage";
    CU_ASSERT_EQUAL(tu_ack_batch(st, "G", "T", many, ST_ACK_MAX + 1, NULL, &n),
                    GT_EINVAL);
    CU_ASSERT_EQUAL(n, 0);
    free(many);
}

static void test_mixed(void)
{
    char *dir = tu_tmpdir("ackbatch");
    st_store_t *st = tu_open(dir, ST_FLUSH_SYNC);
    mixed(st, st);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

static void test_mixed_late(void)
{
    char *dir = tu_tmpdir("ackbatch_late");
    st_store_t *inner = tu_open(dir, ST_FLUSH_SYNC), *st = NULL;
    CU_ASSERT_EQUAL_FATAL(st_late_open(inner, 5000, 11, &st), GT_OK);
    CU_ASSERT_STRING_EQUAL(st->ops->name, "late(local)");
    mixed(st, inner);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

/* A full batch (records written as one buffer), half of it acked after a
 * reopen: what was acked stays acked, the rest comes back. */
static void test_full_reopen(void)
{
    char *dir = tu_tmpdir("ackbatch_reopen");
    st_store_t *st = tu_open(dir, ST_FLUSH_SYNC);
    enum { N = ST_ACK_MAX };
    tu_msg_t *m = calloc(N, sizeof(*m));
    const char **h = calloc(N, sizeof(*h));
    gt_err_t *errs = calloc(N, sizeof(*errs));
    st_message_t msg[64];
    size_t n;

    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 4), GT_OK);
    memset(msg, 0, sizeof(msg));
    for (size_t i = 0; i < 64; i++) {
        msg[i].body = "b";
        msg[i].body_len = 1;
        msg[i].queue_id = ST_QUEUE_ANY;
    }
    for (size_t i = 0; i < N / 64; i++)
        CU_ASSERT_EQUAL_FATAL(tu_send_n(st, "T", msg, 64, NULL), GT_OK);
    CU_ASSERT_EQUAL_FATAL(pop_all(st, 60000, m, N), N);
    /* every other handle acked, the others malformed (a byte too many):
     * N results in one batch */
    char (*bad)[ST_HANDLE_MAX + 1] = calloc(N, ST_HANDLE_MAX + 1);
    for (size_t i = 0; i < N; i++) {
        if (i % 2 == 0) {
            h[i] = m[i].handle;
        } else {
            snprintf(bad[i], sizeof(bad[i]), "%sZ", m[i].handle);
            h[i] = bad[i];
        }
    }
    CU_ASSERT_EQUAL(tu_ack_batch(st, "G", "T", h, N, errs, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, N);
    for (size_t i = 0; i < N; i++)
        CU_ASSERT_EQUAL(errs[i], i % 2 == 0 ? GT_OK : GT_EINVAL);

    st_close(st);
    st = tu_open(dir, ST_FLUSH_SYNC);
    /* acked stay acked; the others are still in flight, ackable */
    CU_ASSERT_EQUAL(tu_ack_batch(st, "G", "T", h, N, errs, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, N);
    for (size_t i = 0; i < N; i++)
        CU_ASSERT_EQUAL(errs[i], GT_EINVAL);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", m[1].handle), GT_OK);
    tu_clock_advance(st, 60000);
    tu_msg_t *back = calloc(N, sizeof(*back));
    CU_ASSERT_EQUAL(pop_all(st, 60000, back, N), N / 2 - 1);
    for (size_t i = 0; i < N / 2 - 1; i++)
        CU_ASSERT_EQUAL(back[i].attempt, 2);
    st_stats_t s;
    CU_ASSERT_EQUAL(tu_stats(st, "T", "G", &s), GT_OK);
    CU_ASSERT_EQUAL(s.inflight, N / 2 - 1);
    st_close(st);
    free(back);
    free(bad);
    free(m);
    free(h);
    free(errs);
    tu_rmrf(dir);
    free(dir);
}

/* One write to the state log for a batch; when it fails (EIO), no
 * handle of the batch is acked and each valid one reports the error. */
static void test_one_write(void)
{
    char *dir = tu_tmpdir("ackbatch_write");
    slog_t l;
    st_config_t c;
    st_store_t *st = NULL;
    tu_msg_t m[8];
    gt_err_t errs[9];
    size_t n;

    st = slog_open(dir, &l, &c);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 2), GT_OK);
    for (int i = 0; i < 8; i++)
        CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "m", -1, NULL), GT_OK);
    CU_ASSERT_EQUAL_FATAL(pop_all(st, 30000, m, 8), 8);
    const char *h[9];
    for (int i = 0; i < 8; i++)
        h[i] = m[i].handle;
    h[8] = "garbage";

    atomic_store(&l.fail, true);
    int before = atomic_load(&l.writes);
    CU_ASSERT_EQUAL(tu_ack_batch(st, "G", "T", h, 4, errs, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 4);
    for (int i = 0; i < 4; i++)
        CU_ASSERT_EQUAL(errs[i], GT_EIO);
    CU_ASSERT_EQUAL(atomic_load(&l.writes) - before, 1);
    atomic_store(&l.fail, false);

    before = atomic_load(&l.writes);
    CU_ASSERT_EQUAL(tu_ack_batch(st, "G", "T", h, 9, errs, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 9);
    for (int i = 0; i < 9; i++) /* the failed ones were still in flight */
        CU_ASSERT_EQUAL(errs[i], i < 8 ? GT_OK : GT_EINVAL);
    CU_ASSERT_EQUAL(atomic_load(&l.writes) - before, 1);
    /* nothing valid: nothing written */
    before = atomic_load(&l.writes);
    CU_ASSERT_EQUAL(tu_ack_batch(st, "G", "T", h, 9, errs, &n), GT_OK);
    CU_ASSERT_EQUAL(atomic_load(&l.writes) - before, 0);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

/* A pop writes the POP records of what it hands out in one write (it was
 * one write per message); when that write fails (EIO) it hands out
 * nothing, and the next pop hands out the same messages, attempt 1, as
 * never delivered.  Across a reopen the failed pop left no trace. */
static void test_pop_one_write(void)
{
    char *dir = tu_tmpdir("ackbatch_pop");
    slog_t l;
    st_config_t c;
    st_store_t *st = NULL;
    tu_msg_t m[16];
    const char *h[16];
    gt_err_t errs[16];
    size_t n, k = 0;
    char body[16];

    st = slog_open(dir, &l, &c);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    for (int i = 0; i < 9; i++) {
        snprintf(body, sizeof(body), "m%d", i);
        CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, body, -1, NULL), GT_OK);
    }
    /* the first pop also starts the group's consumption state */
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 1, 30000, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    k = 1;
    int before = atomic_load(&l.writes);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 4, 30000, m + k, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 4);
    CU_ASSERT_EQUAL(atomic_load(&l.writes) - before, 1);
    k += n;

    atomic_store(&l.fail, true);
    before = atomic_load(&l.writes);
    n = 99;
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 4, 30000, m + k, &n),
                    GT_EIO);
    CU_ASSERT_EQUAL(atomic_load(&l.writes) - before, 1);
    atomic_store(&l.fail, false);
    /* the same four, as if the failed pop had not happened */
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 8, 30000, m + k, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 4);
    for (size_t i = 0; i < 9 && i < k + n; i++) {
        snprintf(body, sizeof(body), "m%zu", i);
        CU_ASSERT_STRING_EQUAL(m[i].body, body);
        CU_ASSERT_EQUAL(m[i].attempt, 1);
        h[i] = m[i].handle;
    }
    k += n;
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 8, 30000, m + k, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(tu_ack_batch(st, "G", "T", h, 9, errs, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 9);
    for (int i = 0; i < 9; i++)
        CU_ASSERT_EQUAL(errs[i], GT_OK);
    st_close(st);
    /* reopened: everything acked, nothing comes again */
    memset(&l, 0, sizeof(l));
    CU_ASSERT_EQUAL_FATAL(st_local_open(&c, &st), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 8, 30000, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    static const CU_TestInfo tests[] = {
        {"mixed handles", test_mixed},
        {"mixed handles through the late decorator", test_mixed_late},
        {"a full batch survives a reopen", test_full_reopen},
        {"one state log write per batch", test_one_write},
        {"one state log write per pop", test_pop_one_write},
        CU_TEST_INFO_NULL,
    };
    tu_clock_start(); /* time moves only by tu_clock_advance() */
    int rc = tu_run("store_ackbatch", tests);
    tu_clock_stop();
    return rc;
}
