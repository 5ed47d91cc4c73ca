/* The file layer: every disk operation of the engine goes through an
 * st_file_ops_t so tests can substitute a fault-injecting one (like
 * sqlite's test_vfs).  This file holds the POSIX implementation, the
 * errno -> gt_err_t mapping and small "do it fully" helpers. */
#include <errno.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "st_int.h"

static int px_open(void *ctx, const char *path, int flags, int mode)
{
    int fd = open(path, flags | O_CLOEXEC, mode);
    return fd < 0 ? -errno : fd;
}

static ssize_t px_pwritev(void *ctx, int fd, const struct iovec *iov,
                          int iovcnt, off_t off)
{
    ssize_t n = pwritev(fd, iov, iovcnt, off);
    return n < 0 ? -errno : n;
}

static ssize_t px_pread(void *ctx, int fd, void *buf, size_t n, off_t off)
{
    ssize_t r = pread(fd, buf, n, off);
    return r < 0 ? -errno : r;
}

static int px_fdatasync(void *ctx, int fd)
{
    return fdatasync(fd) < 0 ? -errno : 0;
}

static int px_ftruncate(void *ctx, int fd, off_t len)
{
    return ftruncate(fd, len) < 0 ? -errno : 0;
}

static int px_close(void *ctx, int fd)
{
    return close(fd) < 0 ? -errno : 0;
}

const st_file_ops_t st_posix_file_ops = {
    .open = px_open,
    .pwritev = px_pwritev,
    .pread = px_pread,
    .fdatasync = px_fdatasync,
    .ftruncate = px_ftruncate,
    .close = px_close,
};

gt_err_t st_errno_to_err(int neg_errno)
{
    switch (-neg_errno) {
    case 0:
        return GT_OK;
    case ENOSPC:
    case EDQUOT:
        return GT_ENOSPC;
    case ENOMEM:
        return GT_ENOMEM;
    case ENOENT:
        return GT_ENOTFOUND;
    case EEXIST:
        return GT_EEXIST;
    default:
        return GT_EIO;
    }
}

gt_err_t st_file_pread_full(st_local_t *st, int fd, void *buf, size_t n,
                            uint64_t off)
{
    uint8_t *p = buf;
    while (n) {
        ssize_t r = st->fops->pread(st->fctx, fd, p, n, (off_t)off);
        if (r == -EINTR)
            continue;
        if (r < 0)
            return st_errno_to_err((int)r);
        if (r == 0)
            return GT_AGAIN; /* short file */
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return GT_OK;
}

gt_err_t st_file_pwrite_full(st_local_t *st, int fd, const void *buf,
                             size_t n, uint64_t off)
{
    const uint8_t *p = buf;
    while (n) {
        struct iovec iov = {.iov_base = (void *)p, .iov_len = n};
        ssize_t r = st->fops->pwritev(st->fctx, fd, &iov, 1, (off_t)off);
        if (r == -EINTR)
            continue;
        if (r <= 0)
            return r == 0 ? GT_EIO : st_errno_to_err((int)r);
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return GT_OK;
}

gt_err_t st_file_sync_dir(st_local_t *st, const char *dir)
{
    int fd = st->fops->open(st->fctx, dir, O_RDONLY | O_DIRECTORY, 0);
    if (fd < 0)
        return st_errno_to_err(fd);
    int r = st->fops->fdatasync(st->fctx, fd);
    st->fops->close(st->fctx, fd);
    return r < 0 ? st_errno_to_err(r) : GT_OK;
}

/* The test clock (st_test_clock), when set. */
static _Atomic(st_clock_fn) test_clock;
static void *_Atomic test_clock_ctx;

void st_test_clock(st_clock_fn fn, void *ctx)
{
    atomic_store(&test_clock_ctx, ctx);
    atomic_store(&test_clock, fn);
}

int64_t st_now_ms(void)
{
    st_clock_fn fn = atomic_load(&test_clock);
    if (fn)
        return fn(atomic_load(&test_clock_ctx));
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t st_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
