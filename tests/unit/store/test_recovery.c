/* Recovery and failure handling: a truncation sweep over every byte of the
 * last three records, a bit-flip sweep (>= 200 runs), and a fault-injecting
 * file layer (write / fdatasync failing after N calls, ENOSPC) showing that
 * nothing unacknowledged is kept, nothing acknowledged is lost, and the
 * store keeps working afterwards. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tu.h"

#define NREC 8

typedef struct sample {
    char *src;                 /* a closed store with NREC messages */
    uint8_t *seg;
    size_t seg_len;
    uint64_t start[NREC + 1];  /* file offset of each record; [NREC] = end
                                  of data (zero fill may follow) */
    uint8_t *state;
    size_t state_len;
} sample_t;

static void sample_make(sample_t *s)
{
    char p[1024];
    st_append_item_t it;
    memset(s, 0, sizeof(*s));
    s->src = tu_tmpdir("sample");
    st_store_t *st = tu_open(s->src, ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    for (int i = 0; i < NREC; i++) {
        char body[32];
        snprintf(body, sizeof(body), "message-%d", i);
        CU_ASSERT_EQUAL_FATAL(tu_send(st, "T", "t", NULL, body, 0, &it), GT_OK);
        s->start[i] = it.position;
    }
    st_close(st);
    snprintf(p, sizeof(p), "%s/commitlog/00000000000000000000", s->src);
    s->seg = tu_read_file(p, &s->seg_len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s->seg);
    uint32_t last_len = 0; /* data end; in sync mode zero fill follows */
    CU_ASSERT_EQUAL_FATAL(st_record_peek(s->seg + s->start[NREC - 1],
                                         s->seg_len - s->start[NREC - 1],
                                         1 << 20, &last_len), GT_OK);
    s->start[NREC] = s->start[NREC - 1] + last_len;
    CU_ASSERT(s->seg_len >= s->start[NREC]);
    snprintf(p, sizeof(p), "%s/state.log", s->src);
    s->state = tu_read_file(p, &s->state_len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s->state);
}

static void sample_free(sample_t *s)
{
    tu_rmrf(s->src);
    free(s->src);
    free(s->seg);
    free(s->state);
}

/* Writes a data dir holding seg (len bytes) and the sample's state log;
 * with_ck copies the sample's checkpoint (everything synced). */
static void build_dir(const sample_t *s, const char *dir, const uint8_t *seg,
                      size_t len, bool with_ck)
{
    char p[1024], q[1024];
    tu_rmrf(dir);
    mkdir(dir, 0755);
    snprintf(p, sizeof(p), "%s/commitlog", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/commitlog/00000000000000000000", dir);
    tu_write_file(p, seg, len);
    snprintf(p, sizeof(p), "%s/state.log", dir);
    tu_write_file(p, s->state, s->state_len);
    if (with_ck) {
        snprintf(p, sizeof(p), "%s/checkpoint", s->src);
        snprintf(q, sizeof(q), "%s/checkpoint", dir);
        tu_copy_file(p, q);
    }
}

/* The sweeps test the recovery scan, not durability: a file layer without
 * fdatasync keeps hundreds of opens fast on a busy disk. */
static int ns_open(void *c, const char *p, int f, int m)
{
    return st_posix_file_ops.open(c, p, f, m);
}
static ssize_t ns_pwritev(void *c, int fd, const struct iovec *v, int n,
                          off_t o)
{
    return st_posix_file_ops.pwritev(c, fd, v, n, o);
}
static ssize_t ns_pread(void *c, int fd, void *b, size_t n, off_t o)
{
    return st_posix_file_ops.pread(c, fd, b, n, o);
}
static int ns_sync(void *c, int fd) { return 0; }
static int ns_trunc(void *c, int fd, off_t l)
{
    return st_posix_file_ops.ftruncate(c, fd, l);
}
static int ns_close(void *c, int fd) { return st_posix_file_ops.close(c, fd); }
static const st_file_ops_t nosync_ops = {ns_open, ns_pwritev, ns_pread,
                                         ns_sync, ns_trunc, ns_close};

/* Opens dir; returns the open code and checks that exactly the first
 * `expect` messages are there, in order, and that appending continues the
 * queue without a gap. */
static gt_err_t check_prefix(const char *dir, bool repair, int expect)
{
    st_config_t c;
    st_store_t *st = NULL;
    tu_msg_t m[NREC + 2];
    size_t n;
    st_append_item_t it;
    tu_config(&c, dir, ST_FLUSH_SYNC);
    c.repair = repair;
    c.file_ops = &nosync_ops;
    gt_err_t rc = st_local_open(&c, &st);
    if (rc != GT_OK)
        return rc;
    CU_ASSERT_EQUAL(tu_pull(st, "T", 0, 0, NREC + 2, m, &n, NULL), GT_OK);
    CU_ASSERT_EQUAL(n, (size_t)expect);
    for (size_t i = 0; i < n; i++) {
        char body[32];
        snprintf(body, sizeof(body), "message-%zu", i);
        CU_ASSERT_STRING_EQUAL(m[i].body, body);
    }
    CU_ASSERT_EQUAL(tu_send(st, "T", "t", NULL, "after", 0, &it), GT_OK);
    CU_ASSERT_EQUAL(it.queue_offset, (uint64_t)expect);
    st_close(st);
    return GT_OK;
}

static void test_truncation_sweep(void)
{
    sample_t s;
    char *dir = tu_tmpdir("trunc");
    int runs = 0;
    sample_make(&s);
    uint64_t stop = s.start[NREC] + 64 < s.seg_len ? s.start[NREC] + 64
                                                   : s.seg_len;
    for (uint64_t cut = s.start[NREC - 3]; cut < stop; cut++) {
        int whole = 0;
        while (whole < NREC && s.start[whole + 1] <= cut)
            whole++;
        build_dir(&s, dir, s.seg, (size_t)cut, false);
        CU_ASSERT_EQUAL(check_prefix(dir, false, whole), GT_OK);
        if (cut % 16 == 0 && cut < s.start[NREC]) {
            /* the same cut below the synced position */
            build_dir(&s, dir, s.seg, (size_t)cut, true);
            CU_ASSERT_EQUAL(check_prefix(dir, false, whole), GT_ECORRUPT);
            CU_ASSERT_EQUAL(check_prefix(dir, true, whole), GT_OK);
        }
        runs++;
    }
    CU_ASSERT(runs > 3 * 90);
    tu_rmrf(dir);
    free(dir);
    sample_free(&s);
}

static void test_bitflip_sweep(void)
{
    sample_t s;
    char *dir = tu_tmpdir("flip");
    uint8_t *copy;
    unsigned seed = 20261121;
    const char *env = getenv("ST_FLIP_SEED");
    if (env)
        seed = (unsigned)strtoul(env, NULL, 10);
    sample_make(&s);
    copy = malloc(s.seg_len);
    size_t span = (size_t)s.start[NREC] + 256 < s.seg_len
                      ? (size_t)s.start[NREC] + 256 : s.seg_len;
    for (int run = 0; run < 200; run++) {
        /* mostly in the records; a few in the zero fill after them */
        size_t at = (size_t)(rand_r(&seed) % span);
        int bit = rand_r(&seed) % 8;
        int expect = 0;
        while (expect < NREC && s.start[expect + 1] <= at)
            expect++;
        if (at < ST_SEG_HDR)
            expect = 0;
        memcpy(copy, s.seg, s.seg_len);
        copy[at] ^= (uint8_t)(1 << bit);
        bool synced = run % 4 == 0;
        /* damage in the records, below the synced end, must be refused;
         * a flip in the zero fill above it is a torn tail */
        gt_err_t want = synced && at < s.start[NREC] ? GT_ECORRUPT : GT_OK;
        build_dir(&s, dir, copy, s.seg_len, synced);
        gt_err_t rc = check_prefix(dir, false, expect);
        CU_ASSERT_EQUAL(rc, want);
        if (rc != want)
            fprintf(stderr, "seed %u run %d: byte %zu bit %d -> %d\n", seed,
                    run, at, bit, rc);
    }
    free(copy);
    tu_rmrf(dir);
    free(dir);
    sample_free(&s);
}

/* Damage anywhere in the state log: start-up must not crash, keeps what
 * precedes the damage, and never loses a message (unacked ones are
 * delivered again; at worst acked ones come back). */
static void test_state_log_flips(void)
{
    char *src = tu_tmpdir("stsrc"), *dir = tu_tmpdir("stflip");
    char p[1024], q[1024];
    tu_msg_t m[32];
    size_t n, len;
    st_store_t *st = tu_open(src, ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 2), GT_OK);
    for (int i = 0; i < 20; i++)
        CU_ASSERT_EQUAL(tu_send(st, "T", "t", NULL, "s", -1, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 10, 30, m, &n), GT_OK);
    for (size_t i = 0; i < n; i += 2)
        CU_ASSERT_EQUAL(tu_ack(st, "G", "T", m[i].handle), GT_OK);
    st_close(st);
    tu_clock_advance(NULL, 30); /* the unacked five are due again */
    snprintf(p, sizeof(p), "%s/state.log", src);
    uint8_t *state = tu_read_file(p, &len), *copy = malloc(len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(state);
    unsigned seed = 7;
    for (int run = 0; run < 100; run++) {
        memcpy(copy, state, len);
        copy[rand_r(&seed) % len] ^= (uint8_t)(1 << (rand_r(&seed) % 8));
        tu_rmrf(dir);
        mkdir(dir, 0755);
        snprintf(q, sizeof(q), "%s/commitlog", dir);
        mkdir(q, 0755);
        snprintf(p, sizeof(p), "%s/commitlog/00000000000000000000", src);
        snprintf(q, sizeof(q), "%s/commitlog/00000000000000000000", dir);
        tu_copy_file(p, q);
        snprintf(q, sizeof(q), "%s/state.log", dir);
        tu_write_file(q, copy, len);
        st_config_t c;
        tu_config(&c, dir, ST_FLUSH_SYNC);
        c.file_ops = &nosync_ops;
        gt_err_t rc = st_local_open(&c, &st);
        if (rc != GT_OK) { /* a damaged header is refused, clearly */
            CU_ASSERT_EQUAL(rc, GT_ECORRUPT);
            continue;
        }
        /* the topic may be lost with the damage: declare it again */
        CU_ASSERT_EQUAL(tu_topic(st, "T", 2), GT_OK);
        bool seen[2][16] = {{false}};
        size_t distinct = 0;
        do {
            CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 32, 60000, m, &n),
                            GT_OK);
            for (size_t i = 0; i < n; i++)
                if (m[i].queue < 2 && m[i].offset < 16 &&
                    !seen[m[i].queue][m[i].offset]) {
                    seen[m[i].queue][m[i].offset] = true;
                    distinct++;
                }
        } while (n > 0);
        CU_ASSERT(distinct >= 15 && distinct <= 20); /* all but the acked */
        st_close(st);
    }
    free(state);
    free(copy);
    tu_rmrf(src);
    tu_rmrf(dir);
    free(src);
    free(dir);
}

/* Damage the start-up scan does not see (under a table snapshot) shows at
 * read time: pull reports it, and a pop reports and skips the record rather
 * than blocking its queue. */
static void test_unreadable_record(void)
{
    char *dir = tu_tmpdir("unread"), p[1024];
    st_append_item_t it[6];
    tu_msg_t m[8];
    size_t n, len;
    st_store_t *st = tu_open(dir, ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    for (int i = 0; i < 6; i++) {
        char body[16];
        snprintf(body, sizeof(body), "u-%d", i);
        CU_ASSERT_EQUAL(tu_send(st, "T", "t", NULL, body, 0, &it[i]), GT_OK);
    }
    st_close(st); /* writes tables.snap */
    snprintf(p, sizeof(p), "%s/commitlog/00000000000000000000", dir);
    uint8_t *seg = tu_read_file(p, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(seg);
    seg[it[2].position + ST_REC_HDR + 3] ^= 0x10; /* inside record 2 */
    tu_write_file(p, seg, len);
    free(seg);
    st = tu_open(dir, ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL(tu_pull(st, "T", 0, 2, 1, m, &n, NULL), GT_ECORRUPT);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 8, 60000, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 5);
    CU_ASSERT_STRING_EQUAL(m[2].body, "u-3");
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_EQUAL(tu_ack(st, "G", "T", m[i].handle), GT_OK);
    uint64_t off;
    CU_ASSERT_EQUAL(tu_offset_get(st, "G", "T", 0, &off), GT_OK);
    CU_ASSERT_EQUAL(off, 6);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

/* ---- fault injection --------------------------------------------------------- */
typedef struct fault {
    _Atomic int ops_left;   /* commitlog writes+syncs before failing; <0 off */
    int err;
    _Atomic int failed;
    _Atomic bool cl_fd[4096];
} fault_t;

static bool faulty(fault_t *f, int fd)
{
    if (fd < 0 || fd >= 4096 || !atomic_load(&f->cl_fd[fd]))
        return false;
    int left = atomic_load(&f->ops_left);
    if (left < 0)
        return false;
    if (left == 0) {
        atomic_fetch_add(&f->failed, 1);
        return true;
    }
    atomic_fetch_sub(&f->ops_left, 1);
    return false;
}

static int f_open(void *ctx, const char *path, int flags, int mode)
{
    fault_t *f = ctx;
    int fd = st_posix_file_ops.open(NULL, path, flags, mode);
    if (fd >= 0 && fd < 4096)
        atomic_store(&f->cl_fd[fd], strstr(path, "/commitlog/") != NULL);
    return fd;
}

static ssize_t f_pwritev(void *ctx, int fd, const struct iovec *iov, int cnt,
                         off_t off)
{
    fault_t *f = ctx;
    if (faulty(f, fd)) {
        /* a partial write first, as a real full disk may do */
        if (f->err == ENOSPC && iov[0].iov_len > 1) {
            struct iovec half = {iov[0].iov_base, iov[0].iov_len / 2};
            (void)st_posix_file_ops.pwritev(NULL, fd, &half, 1, off);
        }
        return -f->err;
    }
    return st_posix_file_ops.pwritev(NULL, fd, iov, cnt, off);
}

static ssize_t f_pread(void *ctx, int fd, void *buf, size_t n, off_t off)
{
    return st_posix_file_ops.pread(NULL, fd, buf, n, off);
}

static int f_fdatasync(void *ctx, int fd)
{
    return faulty(ctx, fd) ? -((fault_t *)ctx)->err
                           : st_posix_file_ops.fdatasync(NULL, fd);
}

static int f_ftruncate(void *ctx, int fd, off_t len)
{
    return st_posix_file_ops.ftruncate(NULL, fd, len);
}

static int f_close(void *ctx, int fd)
{
    fault_t *f = ctx;
    if (fd >= 0 && fd < 4096)
        atomic_store(&f->cl_fd[fd], false);
    return st_posix_file_ops.close(NULL, fd);
}

static const st_file_ops_t fault_ops = {f_open, f_pwritev, f_pread,
                                        f_fdatasync, f_ftruncate, f_close};

static st_store_t *open_faulty(const char *dir, fault_t *f)
{
    st_config_t c;
    st_store_t *st = NULL;
    tu_config(&c, dir, ST_FLUSH_SYNC);
    c.file_ops = &fault_ops;
    c.file_ctx = f;
    CU_ASSERT_EQUAL_FATAL(st_local_open(&c, &st), GT_OK);
    return st;
}

/* Reopens dir normally and checks: acked[i] present, failed ones absent,
 * offsets contiguous from 0. */
static void verify(const char *dir, const bool *acked, int n)
{
    st_store_t *st = tu_open(dir, ST_FLUSH_SYNC);
    tu_msg_t *m = calloc((size_t)n + 8, sizeof(*m));
    size_t got = 0, k;
    uint64_t next = 0;
    do {
        CU_ASSERT_EQUAL_FATAL(tu_pull(st, "T", 0, next, 8, m + got, &k, &next),
                              GT_OK);
        got += k;
    } while (k > 0 && got < (size_t)n);
    int want = 0;
    for (int i = 0; i < n; i++)
        want += acked[i];
    CU_ASSERT_EQUAL(got, (size_t)want);
    size_t j = 0;
    for (int i = 0; i < n && j < got; i++) {
        char body[32];
        if (!acked[i])
            continue;
        snprintf(body, sizeof(body), "f-%d", i);
        CU_ASSERT_STRING_EQUAL(m[j].body, body);
        CU_ASSERT_EQUAL(m[j].offset, j);
        j++;
    }
    free(m);
    st_close(st);
}

static char *fbody(int i, char *buf, size_t big)
{
    snprintf(buf, 8192, "f-%d", i);
    return buf;
}

/* Sends "f-<i>", NUL, then `big` bytes of padding (bodies still compare as
 * "f-<i>" in tu_msg_t). */
static gt_err_t send_big(st_store_t *st, int i, size_t big)
{
    static char buf[8192];
    st_message_t m;
    int n = snprintf(buf, sizeof(buf), "f-%d", i);
    memset(buf + n + 1, 'p', big);
    memset(&m, 0, sizeof(m));
    m.tag = "t";
    m.body = buf;
    m.body_len = (uint32_t)(n + 1 + big);
    m.queue_id = 0;
    return tu_send_n(st, "T", &m, 1, NULL);
}

static void test_fault_enospc(void)
{
    char *dir = tu_tmpdir("enospc"), body[8192];
    fault_t *f = calloc(1, sizeof(*f));
    bool acked[12] = {0};
    atomic_store(&f->ops_left, -1);
    f->err = ENOSPC;
    st_store_t *st = open_faulty(dir, f);
    CU_ASSERT_EQUAL(tu_topic(st, "T", 1), GT_OK);
    for (int i = 0; i < 12; i++) {
        if (i == 4)
            atomic_store(&f->ops_left, 0); /* disk full */
        if (i == 8)
            atomic_store(&f->ops_left, -1); /* space is back */
        gt_err_t rc = tu_send(st, "T", "t", NULL, fbody(i, body, 0), 0, NULL);
        acked[i] = rc == GT_OK;
        CU_ASSERT_EQUAL(rc, i >= 4 && i < 8 ? GT_ENOSPC : GT_OK);
        CU_ASSERT_TRUE(rc == GT_OK || st_err_retriable(rc));
    }
    tu_msg_t m[16];
    size_t n;
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 16, 60000, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 8);
    st_close(st);
    verify(dir, acked, 12);
    tu_rmrf(dir);
    free(dir);
    free(f);
}

/* Write or fdatasync failing after N commitlog calls, N = 0..39, with
 * appends that roll segments. */
static void sweep(int err)
{
    for (int nfail = 0; nfail < 40; nfail++) {
        char *dir = tu_tmpdir("fault");
        fault_t *f = calloc(1, sizeof(*f));
        bool acked[24] = {0};
        int failures = 0;
        f->err = err;
        atomic_store(&f->ops_left, -1);
        st_store_t *st = open_faulty(dir, f);
        CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
        atomic_store(&f->ops_left, nfail);
        for (int i = 0; i < 24; i++) {
            if (i == 20)
                atomic_store(&f->ops_left, -1);
            gt_err_t rc = send_big(st, i, 6000);
            acked[i] = rc == GT_OK;
            failures += !acked[i];
            CU_ASSERT_TRUE(rc == GT_OK || st_err_retriable(rc));
        }
        CU_ASSERT(failures > 0 || nfail > 40);
        for (int i = 20; i < 24; i++)
            CU_ASSERT_TRUE(acked[i]); /* works again once the fault clears */
        st_close(st);
        verify(dir, acked, 24);
        tu_rmrf(dir);
        free(dir);
        free(f);
    }
}

static void test_fault_sweep_eio(void) { sweep(EIO); }
static void test_fault_sweep_enospc(void) { sweep(ENOSPC); }

static const CU_TestInfo tests[] = {
    {"truncation_sweep", test_truncation_sweep},
    {"bitflip_sweep", test_bitflip_sweep},
    {"state_log_flips", test_state_log_flips},
    {"unreadable_record", test_unreadable_record},
    {"fault_enospc", test_fault_enospc},
    {"fault_sweep_eio", test_fault_sweep_eio},
    {"fault_sweep_enospc", test_fault_sweep_enospc},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    tu_clock_start(); /* time moves only by tu_clock_advance() */
    int rc = tu_run("recovery", tests);
    tu_clock_stop();
    return rc;
}
