/* The local engine's I/O figures (st_local_io_stats): commitlog
 * flush-behind bytes in sync and async mode, fdatasync counts and
 * latency buckets per file (commitlog, state log), failed syncs counted
 * (a file layer that fails the commitlog's next fdatasync), and a store
 * that is not the local engine refused. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tu.h"

static uint64_t bucket_sum(const st_io_stats_t *s, st_sync_file_t f)
{
    uint64_t n = 0;

    for (int b = 0; b <= ST_FSYNC_BUCKETS; b++)
        n += s->fsync[f].bucket[b];
    return n;
}

static void test_sync_mode(void)
{
    char *dir = tu_tmpdir("iostats-sync");
    st_store_t *st = tu_open(dir, ST_FLUSH_SYNC);
    st_io_stats_t a, b;
    st_append_item_t it;

    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    CU_ASSERT_EQUAL(st_local_io_stats(st, &a), GT_OK);
    for (int i = 0; i < 5; i++)
        CU_ASSERT_EQUAL_FATAL(tu_send(st, "T", "t", NULL, "body", 0, &it), GT_OK);
    CU_ASSERT_EQUAL(st_local_io_stats(st, &b), GT_OK);
    /* every append is answered after its sync: nothing behind */
    CU_ASSERT_EQUAL(b.flush_behind_bytes, 0);
    CU_ASSERT_EQUAL(b.written_pos, b.synced_pos);
    CU_ASSERT(b.written_pos > it.position);
    /* five appends one after the other: five commitlog syncs at least */
    CU_ASSERT(b.fsync[ST_SYNC_COMMITLOG].count >= a.fsync[ST_SYNC_COMMITLOG].count + 5);
    CU_ASSERT_EQUAL(bucket_sum(&b, ST_SYNC_COMMITLOG), b.fsync[ST_SYNC_COMMITLOG].count);
    CU_ASSERT_EQUAL(b.fsync[ST_SYNC_COMMITLOG].failed, 0);
    CU_ASSERT(b.fsync[ST_SYNC_COMMITLOG].sum_ms > 0);
    /* a metadata record in sync mode waits for the state log's sync */
    CU_ASSERT_EQUAL(tu_meta_put(st, "ns", "k", 1, "v", 1), GT_OK);
    CU_ASSERT_EQUAL(st_local_io_stats(st, &a), GT_OK);
    CU_ASSERT(a.fsync[ST_SYNC_STATE].count >= b.fsync[ST_SYNC_STATE].count + 1);
    CU_ASSERT_EQUAL(bucket_sum(&a, ST_SYNC_STATE), a.fsync[ST_SYNC_STATE].count);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

/* ---- a file layer that fails the commitlog's next fdatasync (armed) */
static _Atomic int fail_next;

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

static int f_open(void *ctx, const char *path, int flags, int mode)
{
    return st_posix_file_ops.open(ctx, path, flags, mode);
}
static ssize_t f_pwritev(void *ctx, int fd, const struct iovec *iov, int cnt, off_t off)
{
    return st_posix_file_ops.pwritev(ctx, fd, iov, cnt, off);
}
static ssize_t f_pread(void *ctx, int fd, void *buf, size_t n, off_t off)
{
    return st_posix_file_ops.pread(ctx, fd, buf, n, off);
}
static _Atomic uint64_t cl_syncs; /* commitlog fdatasyncs seen */

static int f_fdatasync(void *ctx, int fd)
{
    if (!is_commitlog(fd))
        return st_posix_file_ops.fdatasync(ctx, fd);
    atomic_fetch_add(&cl_syncs, 1);
    if (atomic_exchange(&fail_next, 0))
        return -EIO;
    return st_posix_file_ops.fdatasync(ctx, fd);
}
static int f_ftruncate(void *ctx, int fd, off_t len)
{
    return st_posix_file_ops.ftruncate(ctx, fd, len);
}
static int f_close(void *ctx, int fd)
{
    return st_posix_file_ops.close(ctx, fd);
}

static const st_file_ops_t fail_ops = {f_open, f_pwritev, f_pread, f_fdatasync, f_ftruncate,
                                       f_close};

/* Async mode: appends are answered after the write, so they are behind
 * until the flusher syncs.  The flusher may run a round of its own at any
 * time (a kick left by the topic's metadata), so the figures are compared
 * with what the file layer saw (cl_syncs, counted by f_fdatasync) once
 * both agree (a sync counted by the file layer is in the histogram once
 * its call returns). */
static void test_async_mode(void)
{
    char *dir = tu_tmpdir("iostats-async");
    st_config_t c;
    st_store_t *st = NULL;
    st_io_stats_t s;
    st_append_item_t first, last;
    uint64_t c1, c2, base;

    tu_config(&c, dir, ST_FLUSH_ASYNC);
    c.flush_interval_ms = 3600 * 1000; /* only kicks sync */
    c.file_ops = &fail_ops;
    CU_ASSERT_EQUAL_FATAL(tu_open_cfg(&c, &st), GT_OK);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    /* the new segment's sync (not a timed one) is all the file layer saw:
     * nothing is behind, no flusher round syncs the commitlog */
    CU_ASSERT_EQUAL_FATAL(st_local_io_stats(st, &s), GT_OK);
    CU_ASSERT_EQUAL(s.flush_behind_bytes, 0);
    base = atomic_load(&cl_syncs) - s.fsync[ST_SYNC_COMMITLOG].count;
    CU_ASSERT_EQUAL_FATAL(tu_send(st, "T", "t", NULL, "first", 0, &first), GT_OK);
    for (int i = 0; i < 9; i++)
        CU_ASSERT_EQUAL_FATAL(tu_send(st, "T", "t", NULL, "more", 0, &last), GT_OK);
    do {
        c1 = atomic_load(&cl_syncs);
        CU_ASSERT_EQUAL_FATAL(st_local_io_stats(st, &s), GT_OK);
        c2 = atomic_load(&cl_syncs);
    } while (c1 != c2 || s.fsync[ST_SYNC_COMMITLOG].count + base != c1);
    CU_ASSERT_EQUAL(bucket_sum(&s, ST_SYNC_COMMITLOG), c1 - base);
    CU_ASSERT_EQUAL(s.flush_behind_bytes, s.written_pos - s.synced_pos);
    CU_ASSERT(s.written_pos > last.position);
    if (s.synced_pos == first.position) /* no flusher round since: all ten behind */
        CU_ASSERT(s.flush_behind_bytes > 10 * 4);
    st_flusher_kick((st_local_t *)st);
    tu_wait_synced(st);
    CU_ASSERT_EQUAL(st_local_io_stats(st, &s), GT_OK);
    CU_ASSERT_EQUAL(s.flush_behind_bytes, 0);
    CU_ASSERT(s.fsync[ST_SYNC_COMMITLOG].count >= 1);
    CU_ASSERT_EQUAL(s.fsync[ST_SYNC_COMMITLOG].failed, 0);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

static void test_failed_sync(void)
{
    char *dir = tu_tmpdir("iostats-fail");
    st_config_t c;
    st_store_t *st = NULL;
    st_io_stats_t a, b;
    st_append_item_t it;

    tu_config(&c, dir, ST_FLUSH_SYNC);
    c.file_ops = &fail_ops;
    CU_ASSERT_EQUAL_FATAL(tu_open_cfg(&c, &st), GT_OK);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    CU_ASSERT_EQUAL(st_local_io_stats(st, &a), GT_OK);
    CU_ASSERT_EQUAL(a.fsync[ST_SYNC_COMMITLOG].failed, 0);
    atomic_store(&fail_next, 1);
    CU_ASSERT_NOT_EQUAL(tu_send(st, "T", "t", NULL, "lost", 0, &it), GT_OK);
    CU_ASSERT_EQUAL(st_local_io_stats(st, &b), GT_OK);
    CU_ASSERT_EQUAL(b.fsync[ST_SYNC_COMMITLOG].failed, 1);
    CU_ASSERT_EQUAL(b.fsync[ST_SYNC_COMMITLOG].count, a.fsync[ST_SYNC_COMMITLOG].count + 1);
    CU_ASSERT_EQUAL(bucket_sum(&b, ST_SYNC_COMMITLOG), b.fsync[ST_SYNC_COMMITLOG].count);
    /* the next append goes through; nothing counted as failed again */
    CU_ASSERT_EQUAL(tu_send(st, "T", "t", NULL, "kept", 0, &it), GT_OK);
    CU_ASSERT_EQUAL(st_local_io_stats(st, &b), GT_OK);
    CU_ASSERT_EQUAL(b.fsync[ST_SYNC_COMMITLOG].failed, 1);
    CU_ASSERT_EQUAL(b.flush_behind_bytes, 0);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

static void test_not_local(void)
{
    char *dir = tu_tmpdir("iostats-late");
    st_store_t *st = tu_open(dir, ST_FLUSH_SYNC), *late = NULL;
    st_io_stats_t s;

    CU_ASSERT_EQUAL_FATAL(st_late_open(st, 10, 1, &late), GT_OK);
    CU_ASSERT_EQUAL(st_local_io_stats(late, &s), GT_EINVAL);
    CU_ASSERT_EQUAL(st_local_io_stats(NULL, &s), GT_EINVAL);
    st_close(late);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    CU_TestInfo tests[] = {
        {"sync_mode", test_sync_mode},
        {"async_mode", test_async_mode},
        {"failed_sync", test_failed_sync},
        {"not_local", test_not_local},
        CU_TEST_INFO_NULL,
    };
    return tu_run("iostats", tests);
}
