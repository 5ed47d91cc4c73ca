/* ss_repl_disk: the files of a replica's data directory that replication
 * reads and writes itself (docs/store-protocol.md, Replication): the epoch history
 * (<dir>/epochs), commitlog segments and the state log, checked with the
 * engine's own record checks (st.h, replication hooks). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gt_log.h"
#include "ss_repl_int.h"

int64_t ss_repl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

gt_err_t ss_sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return GT_EIO;
    int r = fsync(fd);
    close(fd);
    return r == 0 ? GT_OK : GT_EIO;
}

gt_err_t ss_hist_load(const char *dir, ss_hist_t *h)
{
    char path[4096], line[128];
    FILE *f;

    h->n = 0;
    snprintf(path, sizeof(path), "%s/epochs", dir);
    if ((f = fopen(path, "r")) == NULL)
        return errno == ENOENT ? GT_OK : GT_EIO;
    while (fgets(line, sizeof(line), f) != NULL && h->n < SS_REPL_MAX_HIST) {
        long long e;
        unsigned long long p;
        if (sscanf(line, "%lld %llu", &e, &p) == 2 && e > 0) {
            h->e[h->n].epoch = e;
            h->e[h->n].pos = p;
            h->n++;
        }
    }
    fclose(f);
    return GT_OK;
}

/* <dir>/<name> replaced by what fill writes: written to <name>.tmp,
 * synced, renamed over it, the directory synced. */
static gt_err_t save_synced(const char *dir, const char *name,
                            void (*fill)(FILE *f, const void *arg),
                            const void *arg)
{
    char path[4096], tmp[4096];
    FILE *f;
    bool ok;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    snprintf(tmp, sizeof(tmp), "%s/%s.tmp", dir, name);
    if ((f = fopen(tmp, "w")) == NULL)
        return GT_EIO;
    fill(f, arg);
    ok = fflush(f) == 0 && !ferror(f) && fdatasync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return GT_EIO;
    }
    return ss_sync_dir(dir);
}

static void hist_fill(FILE *f, const void *arg)
{
    const ss_hist_t *h = arg;

    for (size_t i = 0; i < h->n; i++)
        fprintf(f, "%lld %llu\n", (long long)h->e[i].epoch,
                (unsigned long long)h->e[i].pos);
}

gt_err_t ss_hist_save(const char *dir, const ss_hist_t *h)
{
    return save_synced(dir, "epochs", hist_fill, h);
}

gt_err_t ss_stream_id_load(const char *dir, ss_stream_id_t *id)
{
    char path[4096], kind[8] = "";
    FILE *f;
    long long e = 0, g = 0;
    unsigned long long ino = 0;

    memset(id, 0, sizeof(*id));
    snprintf(path, sizeof(path), "%s/repl.state", dir);
    if ((f = fopen(path, "r")) == NULL)
        return errno == ENOENT ? GT_OK : GT_EIO;
    int n = fscanf(f, "%lld %llu %lld %7s", &e, &ino, &g, kind);
    fclose(f);
    if (n < 2 || e < 0)
        return GT_OK;
    if (n >= 4 && strcmp(kind, "led") == 0) {
        id->led_epoch = e;
        return GT_OK;
    }
    id->epoch = e;
    id->ino = ino;
    id->gen = n >= 3 ? g : 0;
    return GT_OK;
}

static void stream_id_fill(FILE *f, const void *arg)
{
    const ss_stream_id_t *id = arg;

    if (id->led_epoch > 0)
        fprintf(f, "%lld 0 0 led\n", (long long)id->led_epoch);
    else
        fprintf(f, "%lld %llu %lld\n", (long long)id->epoch,
                (unsigned long long)id->ino, (long long)id->gen);
}

gt_err_t ss_stream_id_save(const char *dir, const ss_stream_id_t *id)
{
    return save_synced(dir, "repl.state", stream_id_fill, id);
}

int64_t ss_hist_last_epoch(const ss_hist_t *h)
{
    return h->n > 0 ? h->e[h->n - 1].epoch : 0;
}

void ss_seg_path(const char *dir, uint64_t base, char *out, size_t size)
{
    snprintf(out, size, "%s/commitlog/%020" PRIu64, dir, base);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

gt_err_t ss_segs_list(const char *dir, uint64_t **bases, size_t *n)
{
    char path[4096];
    DIR *d;
    struct dirent *de;
    uint64_t *v = NULL;
    size_t cnt = 0, cap = 0;

    *bases = NULL;
    *n = 0;
    snprintf(path, sizeof(path), "%s/commitlog", dir);
    if ((d = opendir(path)) == NULL)
        return errno == ENOENT ? GT_OK : GT_EIO;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        bool digits = len == 20;
        for (size_t i = 0; digits && i < len; i++)
            digits = de->d_name[i] >= '0' && de->d_name[i] <= '9';
        if (!digits)
            continue;
        if (cnt == cap) {
            size_t nc = cap ? cap * 2 : 16;
            uint64_t *nv = realloc(v, nc * sizeof(*nv));
            if (nv == NULL) {
                free(v);
                closedir(d);
                return GT_ENOMEM;
            }
            v = nv;
            cap = nc;
        }
        v[cnt++] = strtoull(de->d_name, NULL, 10);
    }
    closedir(d);
    qsort(v, cnt, sizeof(*v), cmp_u64);
    *bases = v;
    *n = cnt;
    return GT_OK;
}

/* Valid records of one segment file from its header: *end file offset. */
static gt_err_t seg_scan(int fd, uint64_t base, uint64_t fsize, uint64_t *end)
{
    uint8_t hdr[64];
    uint64_t hb, off = 64;
    size_t cap = 1u << 20;
    uint8_t *buf;

    *end = 0;
    if (pread(fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) ||
        st_seg_hdr_check(hdr, sizeof(hdr), &hb) != GT_OK || hb != base)
        return GT_ECORRUPT;
    if ((buf = malloc(cap)) == NULL)
        return GT_ENOMEM;
    while (off < fsize) {
        size_t want = fsize - off < cap ? (size_t)(fsize - off) : cap;
        ssize_t got = pread(fd, buf, want, (off_t)off);
        size_t at = 0, used = 0;
        gt_err_t rc = GT_OK;
        if (got <= 0)
            break;
        while (at < (size_t)got &&
               (rc = st_record_check(buf + at, (size_t)got - at, &used)) == GT_OK)
            at += used;
        off += at;
        if (rc == GT_OK)
            continue;
        if (rc != GT_AGAIN || off + ((size_t)got - at) >= fsize)
            break; /* damage, or a torn record at the end */
        if (at == 0) { /* one record larger than the buffer */
            uint8_t *nb = cap < (640u << 20) ? realloc(buf, cap * 2) : NULL;
            if (nb == NULL)
                break;
            buf = nb;
            cap *= 2;
        }
    }
    free(buf);
    *end = off;
    return GT_OK;
}

gt_err_t ss_cl_scan_end(const char *dir, bool truncate, uint64_t *end)
{
    uint64_t *bases;
    size_t n;
    gt_err_t rc;

    *end = 0;
    if ((rc = ss_segs_list(dir, &bases, &n)) != GT_OK)
        return rc;
    while (n > 0) {
        char path[4096];
        struct stat sb;
        uint64_t base = bases[n - 1], fend = 0;
        int fd;

        ss_seg_path(dir, base, path, sizeof(path));
        fd = open(path, truncate ? O_RDWR : O_RDONLY);
        if (fd < 0 || fstat(fd, &sb) != 0) {
            if (fd >= 0)
                close(fd);
            free(bases);
            return GT_EIO;
        }
        rc = seg_scan(fd, base, (uint64_t)sb.st_size, &fend);
        if (rc == GT_ECORRUPT) {
            close(fd);
            if (!truncate)
                break;
            GT_LOG(WARN, "repl", "dropping %s: bad segment header", path);
            unlink(path);
            n--;
            continue;
        }
        if (rc == GT_OK && truncate && fend < (uint64_t)sb.st_size) {
            GT_LOG(WARN, "repl", "%s: cutting %llu bytes after the last "
                   "whole record", path,
                   (unsigned long long)((uint64_t)sb.st_size - fend));
            if (ftruncate(fd, (off_t)fend) != 0 || fdatasync(fd) != 0)
                rc = GT_EIO;
        }
        close(fd);
        if (rc == GT_OK)
            *end = base + fend;
        break;
    }
    free(bases);
    return rc == GT_ECORRUPT ? GT_OK : rc;
}

gt_err_t ss_state_scan(const char *path, bool truncate, uint64_t *valid)
{
    int fd = open(path, truncate ? O_RDWR : O_RDONLY);
    struct stat sb;
    uint8_t *buf = NULL;
    uint64_t at = 0;
    gt_err_t rc = GT_OK;

    *valid = 0;
    if (fd < 0)
        return errno == ENOENT ? GT_OK : GT_EIO;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        return GT_EIO;
    }
    if (sb.st_size > 0) {
        size_t len = (size_t)sb.st_size, used;
        if ((buf = malloc(len)) == NULL) {
            close(fd);
            return GT_ENOMEM;
        }
        if (pread(fd, buf, len, 0) != (ssize_t)len) {
            rc = GT_EIO;
        } else if (st_state_hdr_check(buf, len) == GT_OK) {
            at = 8;
            while (at < len && st_state_rec_check(buf + at, len - at, &used) ==
                                   GT_OK)
                at += used;
        }
    }
    if (rc == GT_OK && truncate && at < (uint64_t)sb.st_size &&
        (ftruncate(fd, (off_t)at) != 0 || fdatasync(fd) != 0))
        rc = GT_EIO;
    free(buf);
    close(fd);
    *valid = at;
    return rc;
}

void ss_rmtree(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *de;

    if (d == NULL) {
        unlink(path);
        return;
    }
    while ((de = readdir(d)) != NULL) {
        char sub[4096];
        struct stat sb;
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
        if (lstat(sub, &sb) == 0 && S_ISDIR(sb.st_mode))
            ss_rmtree(sub);
        else
            unlink(sub);
    }
    closedir(d);
    rmdir(path);
}

void ss_follower_clean(const char *dir)
{
    char p[4096];

    snprintf(p, sizeof(p), "%s/cq", dir);
    ss_rmtree(p);
    snprintf(p, sizeof(p), "%s/index", dir);
    ss_rmtree(p);
    snprintf(p, sizeof(p), "%s/tables.snap", dir);
    unlink(p);
    snprintf(p, sizeof(p), "%s/state.log.repl", dir);
    unlink(p);
}
