/* A full disk: a file layer that refuses (ENOSPC) every write that would
 * grow a file -- overwrites in place still succeed, as on a real full file
 * system -- shows that sends fail in-band while receive, ack, change of
 * invisible time and offset updates keep working (their state held in
 * memory), that the held state is written once space returns, that a crash
 * before then redelivers (at least once, never loses a message), and that
 * the store starts on a full disk, even with a torn state log tail. */
#include <dirent.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tu.h"

typedef struct full {
    atomic_bool full;
    atomic_int refused;
} full_t;

static ssize_t f_pwritev(void *ctx, int fd, const struct iovec *iov, int cnt,
                         off_t off)
{
    full_t *f = ctx;
    if (atomic_load(&f->full)) {
        struct stat sb;
        size_t len = 0;
        for (int i = 0; i < cnt; i++)
            len += iov[i].iov_len;
        if (fstat(fd, &sb) == 0 && (uint64_t)off + len > (uint64_t)sb.st_size) {
            atomic_fetch_add(&f->refused, 1);
            return -ENOSPC;
        }
    }
    return st_posix_file_ops.pwritev(NULL, fd, iov, cnt, off);
}

static int f_open(void *ctx, const char *path, int flags, int mode)
{
    return st_posix_file_ops.open(ctx, path, flags, mode);
}
static ssize_t f_pread(void *ctx, int fd, void *buf, size_t n, off_t off)
{
    return st_posix_file_ops.pread(ctx, fd, buf, n, off);
}
static int f_fdatasync(void *ctx, int fd)
{
    return st_posix_file_ops.fdatasync(ctx, fd);
}
static int f_ftruncate(void *ctx, int fd, off_t len)
{
    full_t *f = ctx;
    struct stat sb;
    if (atomic_load(&f->full) && fstat(fd, &sb) == 0 && len > sb.st_size)
        return -ENOSPC;
    return st_posix_file_ops.ftruncate(ctx, fd, len);
}
static int f_close(void *ctx, int fd)
{
    return st_posix_file_ops.close(ctx, fd);
}

static const st_file_ops_t full_ops = {f_open, f_pwritev, f_pread,
                                       f_fdatasync, f_ftruncate, f_close};

static gt_err_t open_full(const char *dir, full_t *f, st_flush_t flush,
                          st_store_t **st)
{
    st_config_t c;
    tu_config(&c, dir, flush);
    c.file_ops = &full_ops;
    c.file_ctx = f;
    return st_local_open(&c, st);
}

static bool held(st_store_t *s)
{
    st_local_t *st = (st_local_t *)s;
    pthread_mutex_lock(&st->lock);
    bool h = st->state_held;
    pthread_mutex_unlock(&st->lock);
    return h;
}

/* Waits (up to a minute: a condition, not a timing) until the store has
 * written its held state. */
static bool wait_unheld(st_store_t *st)
{
    for (int i = 0; i < 6000 && held(st); i++)
        tu_sleep_ms(10);
    return !held(st);
}

/* Copies what a crash would leave: state log, checkpoint, segments. */
static void crash_image(const char *from, const char *to)
{
    char a[1024], b[1024];
    const char *files[] = {"state.log", "checkpoint"};
    mkdir(to, 0755);
    for (size_t i = 0; i < 2; i++) {
        snprintf(a, sizeof(a), "%s/%s", from, files[i]);
        snprintf(b, sizeof(b), "%s/%s", to, files[i]);
        tu_copy_file(a, b);
    }
    snprintf(a, sizeof(a), "%s/commitlog", from);
    snprintf(b, sizeof(b), "%s/commitlog", to);
    mkdir(b, 0755);
    DIR *d = opendir(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(a, sizeof(a), "%s/commitlog/%s", from, e->d_name);
        snprintf(b, sizeof(b), "%s/commitlog/%s", to, e->d_name);
        tu_copy_file(a, b);
    }
    closedir(d);
}

static void send_ten(st_store_t *st)
{
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    for (int i = 0; i < 10; i++) {
        char body[16];
        snprintf(body, sizeof(body), "m%d", i);
        CU_ASSERT_EQUAL_FATAL(tu_send(st, "T", "t", NULL, body, 0, NULL), GT_OK);
    }
}

/* Bodies popped by G from T (up to 16), as a bit set of m<i>. */
static unsigned pop_set(st_store_t *st, tu_msg_t *m, size_t *n)
{
    unsigned set = 0;
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 16, 60000, m, n), GT_OK);
    for (size_t i = 0; i < *n; i++)
        set |= 1u << atoi(m[i].body + 1);
    return set;
}

static void test_reads_on_full_disk(void)
{
    char *dir = tu_tmpdir("full"), img[1100];
    full_t *f = calloc(1, sizeof(*f));
    st_store_t *st = NULL;
    tu_msg_t m[16];
    size_t n;
    char newh[ST_HANDLE_MAX];
    /* async: sync mode writes zeros ahead, which a full disk lets it use */
    CU_ASSERT_EQUAL_FATAL(open_full(dir, f, ST_FLUSH_ASYNC, &st), GT_OK);
    send_ten(st);
    atomic_store(&f->full, true);
    /* sends fail in-band, retriable */
    gt_err_t rc = tu_send(st, "T", "t", NULL, "late", 0, NULL);
    CU_ASSERT_EQUAL(rc, GT_ENOSPC);
    CU_ASSERT_TRUE(st_err_retriable(rc));
    /* receive, ack, change invisible, offsets keep working */
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 5, 60000, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 5);
    CU_ASSERT_TRUE(held(st));
    for (size_t i = 0; i < 4; i++)
        CU_ASSERT_EQUAL(tu_ack(st, "G", "T", m[i].handle), GT_OK);
    CU_ASSERT_EQUAL(tu_change(st, "G", "T", m[4].handle, 60000, newh), GT_OK);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", m[4].handle), GT_EINVAL); /* superseded */
    CU_ASSERT_EQUAL(tu_offset_update(st, "G2", "T", 0, 3), GT_OK);
    /* explicit metadata changes are refused (retriable); unchanged ones pass */
    CU_ASSERT_EQUAL(tu_topic(st, "T2", 1), GT_ENOSPC);
    CU_ASSERT_EQUAL(tu_topic(st, "T", 1), GT_OK);
    tu_msg_t one;
    size_t k;
    uint64_t next;
    CU_ASSERT_EQUAL(tu_pull(st, "T", 0, 0, 1, &one, &k, &next), GT_OK);
    CU_ASSERT_EQUAL(k, 1);
    CU_ASSERT_TRUE(atomic_load(&f->refused) > 0);
    /* space returns: the service thread writes the held state */
    atomic_store(&f->full, false);
    CU_ASSERT_TRUE_FATAL(wait_unheld(st));
    CU_ASSERT_EQUAL(tu_send(st, "T", "t", NULL, "m10", 0, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_topic(st, "T2", 1), GT_OK);
    /* a crash now keeps those acks: only m5..m10 come back (m4 is
     * invisible under its changed handle) */
    snprintf(img, sizeof(img), "%s-img", dir);
    crash_image(dir, img);
    st_close(st);
    st = tu_open(img, ST_FLUSH_ASYNC);
    unsigned set = pop_set(st, m, &n);
    CU_ASSERT_EQUAL(set, 0x7e0u);
    uint64_t off = 0;
    CU_ASSERT_EQUAL(tu_offset_get(st, "G2", "T", 0, &off), GT_OK);
    CU_ASSERT_EQUAL(off, 3);
    st_close(st);
    tu_rmrf(img);
    tu_rmrf(dir);
    free(dir);
    free(f);
}

/* A crash while the disk is still full loses the held acks (at least once:
 * those messages come again), and the store starts on the full disk. */
static void test_crash_while_full_and_start(void)
{
    char *dir = tu_tmpdir("full-crash"), img[1100];
    full_t *f = calloc(1, sizeof(*f));
    st_store_t *st = NULL;
    tu_msg_t m[16];
    size_t n;
    CU_ASSERT_EQUAL_FATAL(open_full(dir, f, ST_FLUSH_ASYNC, &st), GT_OK);
    send_ten(st);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 3, 60000, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_EQUAL(tu_ack(st, "G", "T", m[i].handle), GT_OK); /* logged */
    atomic_store(&f->full, true);
    CU_ASSERT_EQUAL(pop_set(st, m, &n), 0x3f8u);
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_EQUAL(tu_ack(st, "G", "T", m[i].handle), GT_OK); /* held */
    snprintf(img, sizeof(img), "%s-img", dir);
    crash_image(dir, img);
    st_close(st); /* cannot write either: still full */
    /* start on the full disk: read-only, the held acks were lost */
    st = NULL;
    CU_ASSERT_EQUAL_FATAL(open_full(img, f, ST_FLUSH_ASYNC, &st), GT_OK);
    CU_ASSERT_TRUE(held(st)); /* its generation record waits for space */
    CU_ASSERT_EQUAL(tu_send(st, "T", "t", NULL, "x", 0, NULL), GT_ENOSPC);
    CU_ASSERT_EQUAL(pop_set(st, m, &n), 0x3f8u);
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_EQUAL(tu_ack(st, "G", "T", m[i].handle), GT_OK);
    atomic_store(&f->full, false);
    CU_ASSERT_TRUE(wait_unheld(st));
    st_close(st);
    st = tu_open(img, ST_FLUSH_ASYNC);
    CU_ASSERT_EQUAL(pop_set(st, m, &n), 0u);
    CU_ASSERT_EQUAL(n, 0);
    st_close(st);
    tu_rmrf(img);
    tu_rmrf(dir);
    free(dir);
    free(f);
}

/* A torn state log tail needs a compaction at start; on a full disk the
 * start cuts the tail instead and goes on. */
static void test_start_full_torn_state(void)
{
    char *dir = tu_tmpdir("full-torn"), p[1100];
    full_t *f = calloc(1, sizeof(*f));
    st_store_t *st = NULL;
    tu_msg_t m[16];
    size_t n;
    CU_ASSERT_EQUAL_FATAL(open_full(dir, f, ST_FLUSH_SYNC, &st), GT_OK);
    send_ten(st);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 2, 60000, m, &n), GT_OK);
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_EQUAL(tu_ack(st, "G", "T", m[i].handle), GT_OK);
    st_close(st);
    snprintf(p, sizeof(p), "%s/state.log", dir);
    size_t len;
    uint8_t *buf = tu_read_file(p, &len);
    uint8_t *torn = malloc(len + 7);
    memcpy(torn, buf, len);
    memcpy(torn + len, "\x30\0\0\0torn", 7); /* a partial record */
    tu_write_file(p, torn, len + 7);
    atomic_store(&f->full, true);
    st = NULL;
    CU_ASSERT_EQUAL_FATAL(open_full(dir, f, ST_FLUSH_SYNC, &st), GT_OK);
    CU_ASSERT_EQUAL(tu_file_size(p), (long)len); /* the tail was cut */
    CU_ASSERT_EQUAL(pop_set(st, m, &n), 0x3fcu);
    st_close(st);
    atomic_store(&f->full, false);
    st = tu_open(dir, ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL(pop_set(st, m, &n), 0x3fcu); /* popped while held: again */
    st_close(st);
    free(buf);
    free(torn);
    tu_rmrf(dir);
    free(dir);
    free(f);
}

static const CU_TestInfo tests[] = {
    {"reads_on_full_disk", test_reads_on_full_disk},
    {"crash_while_full_and_start", test_crash_while_full_and_start},
    {"start_full_torn_state", test_start_full_torn_state},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return tu_run("diskfull", tests);
}
