/* The local engine's replication hooks (st.h): marks (synced commitlog
 * end, state log identity and length) move with appends and consumption
 * state; the record, segment header and state log checks accept what the
 * engine wrote and refuse damage; and a directory built from those bytes
 * alone (segments cut at the synced end, the state log, a checkpoint
 * written with st_checkpoint_write; no cq/, index/ or tables.snap), as a
 * follower writes it, opens with the full recovery scan and serves the
 * same messages and consumption state.  A leader reads the segments
 * through the engine (st_local_repl_seg) as they are on disk. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gt_le.h"
#include "tu.h"

#define LONG_MS 600000

static void path2(char *out, size_t n, const char *dir, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

static void test_marks_move(void)
{
    char *dir = tu_tmpdir("repl_marks");
    st_store_t *st = tu_open(dir, ST_FLUSH_SYNC);
    st_repl_marks_t a, b, c;
    char p[4096];
    struct stat sb;
    tu_msg_t m[4];
    size_t n = 0;

    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    st_local_repl_marks(st, &a);
    CU_ASSERT(a.cl_synced >= ST_SEG_HDR);
    CU_ASSERT_EQUAL(a.cl_written, a.cl_synced);
    path2(p, sizeof(p), dir, "state.log");
    CU_ASSERT_EQUAL_FATAL(stat(p, &sb), 0);
    CU_ASSERT_EQUAL(a.state_ino, (uint64_t)sb.st_ino);
    CU_ASSERT_EQUAL(a.state_end, (uint64_t)sb.st_size);
    CU_ASSERT_EQUAL(tu_send(st, "T", "t", "k", "hello", 0, NULL), GT_OK);
    st_local_repl_marks(st, &b);
    CU_ASSERT(b.cl_synced > a.cl_synced); /* a sync-mode append is synced */
    CU_ASSERT_EQUAL(b.state_ino, a.state_ino);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 1, LONG_MS, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", m[0].handle), GT_OK);
    st_local_repl_marks(st, &c);
    CU_ASSERT(c.state_end > b.state_end); /* pop and ack logged */
    CU_ASSERT_EQUAL(c.cl_synced, b.cl_synced);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

static void test_checks(void)
{
    char *dir = tu_tmpdir("repl_checks");
    st_store_t *st = tu_open(dir, ST_FLUSH_SYNC);
    st_repl_marks_t mk;
    char p[4096];
    uint8_t *seg, *sl;
    size_t seg_len, sl_len, at, used;
    uint64_t base = 1;

    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 2), GT_OK);
    for (int i = 0; i < 10; i++)
        CU_ASSERT_EQUAL(tu_send(st, "T", "t", "k", "some body", -1, NULL), GT_OK);
    st_local_repl_marks(st, &mk);
    path2(p, sizeof(p), dir, "commitlog/00000000000000000000");
    seg = tu_read_file(p, &seg_len);
    path2(p, sizeof(p), dir, "state.log");
    sl = tu_read_file(p, &sl_len);
    CU_ASSERT_FATAL(seg != NULL && sl != NULL && seg_len >= mk.cl_synced);
    CU_ASSERT_EQUAL(st_seg_hdr_check(seg, seg_len, &base), GT_OK);
    CU_ASSERT_EQUAL(base, 0);
    CU_ASSERT_EQUAL(st_seg_hdr_check(seg, 10, &base), GT_AGAIN);
    /* the synced prefix is whole records */
    for (at = ST_SEG_HDR; at < mk.cl_synced; at += used)
        CU_ASSERT_EQUAL_FATAL(st_record_check(seg + at, mk.cl_synced - at, &used),
                              GT_OK);
    CU_ASSERT_EQUAL(at, mk.cl_synced);
    CU_ASSERT_EQUAL(st_record_check(seg + ST_SEG_HDR, 20, &used), GT_AGAIN);
    seg[ST_SEG_HDR + 80] ^= 1;
    CU_ASSERT_EQUAL(st_record_check(seg + ST_SEG_HDR, mk.cl_synced - ST_SEG_HDR,
                                    &used), GT_ECORRUPT);
    seg[3] ^= 1;
    CU_ASSERT_EQUAL(st_seg_hdr_check(seg, seg_len, &base), GT_ECORRUPT);
    /* the state log: header, then whole records up to state_end */
    CU_ASSERT_EQUAL(st_state_hdr_check(sl, sl_len), GT_OK);
    CU_ASSERT_EQUAL_FATAL(sl_len, mk.state_end);
    for (at = 8; at < sl_len; at += used)
        CU_ASSERT_EQUAL_FATAL(st_state_rec_check(sl + at, sl_len - at, &used),
                              GT_OK);
    CU_ASSERT_EQUAL(at, sl_len);
    CU_ASSERT_EQUAL(st_state_rec_check(sl + 8, 4, &used), GT_AGAIN);
    sl[8 + 9] ^= 0x40;
    CU_ASSERT_EQUAL(st_state_rec_check(sl + 8, sl_len - 8, &used), GT_ECORRUPT);
    sl[0] ^= 1;
    CU_ASSERT_EQUAL(st_state_hdr_check(sl, sl_len), GT_ECORRUPT);
    free(seg);
    free(sl);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

/* A follower's directory from the leader's bytes: opens, same state. */
static void test_follower_dir_opens(void)
{
    char *dir = tu_tmpdir("repl_lead");
    char *fdir = tu_tmpdir("repl_follow");
    st_store_t *st = tu_open(dir, ST_FLUSH_SYNC), *fs;
    st_repl_marks_t mk;
    char p[4096], q[4096];
    uint8_t *seg, *sl;
    size_t seg_len, sl_len, n = 0;
    tu_msg_t m[32];
    int fd;

    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 2), GT_OK);
    for (int i = 0; i < 20; i++) {
        char body[32];
        snprintf(body, sizeof(body), "m%02d", i);
        CU_ASSERT_EQUAL(tu_send(st, "T", "t", "k", body, -1, NULL), GT_OK);
    }
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 8, LONG_MS, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 8);
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_EQUAL(tu_ack(st, "G", "T", m[i].handle), GT_OK);
    st_local_repl_marks(st, &mk);
    /* the leader is still open: copy what the hooks say is safe */
    path2(p, sizeof(p), dir, "commitlog/00000000000000000000");
    seg = tu_read_file(p, &seg_len);
    path2(p, sizeof(p), dir, "state.log");
    sl = tu_read_file(p, &sl_len);
    CU_ASSERT_FATAL(seg != NULL && sl != NULL && seg_len >= mk.cl_synced &&
                    sl_len >= mk.state_end);
    path2(q, sizeof(q), fdir, "commitlog");
    CU_ASSERT_EQUAL_FATAL(mkdir(q, 0755), 0);
    path2(q, sizeof(q), fdir, "commitlog/00000000000000000000");
    tu_write_file(q, seg, mk.cl_synced);
    path2(q, sizeof(q), fdir, "state.log");
    tu_write_file(q, sl, mk.state_end);
    path2(q, sizeof(q), fdir, "checkpoint");
    fd = open(q, O_RDWR | O_CREAT, 0644);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(st_checkpoint_write(fd, 7, mk.cl_synced - 10), GT_OK);
    CU_ASSERT_EQUAL(st_checkpoint_write(fd, 8, mk.cl_synced), GT_OK);
    close(fd);
    free(seg);
    free(sl);
    st_close(st);

    fs = tu_open(fdir, ST_FLUSH_SYNC);
    CU_ASSERT_FATAL(fs != NULL);
    /* the 12 not acked come, the 8 acked do not */
    size_t got = 0;
    for (int round = 0; round < 4 && got < 12; round++) {
        size_t k = 0;
        CU_ASSERT_EQUAL(tu_pop_simple(fs, "G", "T", "*", 32, LONG_MS, m, &k),
                        GT_OK);
        for (size_t i = 0; i < k; i++) {
            int idx = atoi(m[i].body + 1);
            CU_ASSERT(idx >= 0 && idx < 20);
            got++;
        }
    }
    CU_ASSERT_EQUAL(got, 12);
    st_repl_marks_t fm;
    st_local_repl_marks(fs, &fm);
    CU_ASSERT(fm.cl_synced >= mk.cl_synced);
    st_close(fs);
    tu_rmrf(dir);
    tu_rmrf(fdir);
    free(dir);
    free(fdir);
}

/* st_local_repl_seg: each position finds the segment holding it (or the
 * first), with the neighbours' bases, its written end, and an fd that
 * reads the file's bytes; completed segments end where their files do. */
static void test_segs(void)
{
    char *dir = tu_tmpdir("repl_segs");
    st_config_t c;
    st_store_t *st = NULL;
    static char body[100001];
    st_repl_seg_t sg;
    st_repl_marks_t mk;
    uint64_t bases[8];
    size_t nb = 0;

    tu_config(&c, dir, ST_FLUSH_SYNC);
    c.segment_size = 1u << 20;
    c.max_message_bytes = 256u << 10;
    CU_ASSERT_FATAL(tu_open_cfg(&c, &st) == GT_OK);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    memset(body, 'x', sizeof(body) - 1);
    for (int i = 0; i < 25; i++) /* about 2.5 MiB: three segments */
        CU_ASSERT_EQUAL(tu_send(st, "T", "t", "k", body, -1, NULL), GT_OK);
    st_local_repl_marks(st, &mk);
    /* walk from 0 by `next` */
    uint64_t pos = 0;
    while (nb < 8 && st_local_repl_seg(st, pos, &sg) == GT_OK) {
        char p[4096], name[64];
        struct stat sb;
        uint8_t hdr[ST_SEG_HDR], disk[ST_SEG_HDR];
        uint64_t base = 0;
        CU_ASSERT_EQUAL(sg.first, 0);
        CU_ASSERT(sg.base <= pos || pos == 0);
        CU_ASSERT(sg.fd >= 0);
        CU_ASSERT_EQUAL_FATAL(pread(sg.fd, hdr, sizeof(hdr), 0),
                              (ssize_t)sizeof(hdr));
        CU_ASSERT_EQUAL(st_seg_hdr_check(hdr, sizeof(hdr), &base), GT_OK);
        CU_ASSERT_EQUAL(base, sg.base);
        snprintf(name, sizeof(name), "commitlog/%020llu",
                 (unsigned long long)sg.base);
        path2(p, sizeof(p), dir, name);
        int fd = open(p, O_RDONLY);
        CU_ASSERT_FATAL(fd >= 0);
        CU_ASSERT_EQUAL(pread(fd, disk, sizeof(disk), 0), (ssize_t)sizeof(disk));
        CU_ASSERT_EQUAL(memcmp(hdr, disk, sizeof(hdr)), 0);
        CU_ASSERT_EQUAL(fstat(fd, &sb), 0);
        close(fd);
        if (sg.next != UINT64_MAX) { /* completed: cut at its end */
            CU_ASSERT_EQUAL(sg.end, (uint64_t)sb.st_size);
            CU_ASSERT(sg.next > sg.base);
        } else {
            CU_ASSERT_EQUAL(sg.base + sg.end, mk.cl_synced);
        }
        bases[nb++] = sg.base;
        /* a position inside it finds it too */
        st_repl_seg_t in;
        CU_ASSERT_EQUAL(st_local_repl_seg(st, sg.base + sg.end - 1, &in),
                        GT_OK);
        CU_ASSERT_EQUAL(in.base, sg.base);
        st_local_repl_seg_done(st, &in);
        uint64_t next = sg.next;
        st_local_repl_seg_done(st, &sg);
        CU_ASSERT_EQUAL(sg.fd, -1);
        if (next == UINT64_MAX)
            break;
        pos = next;
    }
    CU_ASSERT_EQUAL(nb, 3);
    /* beyond the end: the newest */
    CU_ASSERT_EQUAL(st_local_repl_seg(st, UINT64_MAX - 1, &sg), GT_OK);
    CU_ASSERT_EQUAL(sg.base, bases[nb - 1]);
    CU_ASSERT_EQUAL(sg.next, UINT64_MAX);
    st_local_repl_seg_done(st, &sg);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    static const CU_TestInfo tests[] = {
        {"marks_move", test_marks_move},
        {"checks", test_checks},
        {"follower_dir_opens", test_follower_dir_opens},
        {"segs", test_segs},
        CU_TEST_INFO_NULL,
    };
    return tu_run("repl", tests);
}
