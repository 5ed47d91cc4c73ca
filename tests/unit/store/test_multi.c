/* One message, many queues (st_append_multi): one commitlog record with an
 * entry in each destination's consume queue.  1024 destinations answered
 * with their own offsets and one position; the body stored once; pops,
 * acks and pulls per destination on their own; the record codec's
 * destination section (round trip, damage); recovery by the table
 * snapshot and by the full scan, and after a SIGKILL; retention; errors;
 * through the late decorator. */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gt_le.h"
#include "tu.h"

#define ND 1024

static char names[ND][24];
static st_dest_t dests[ND];

static st_store_t *open_big(const char *dir, st_flush_t fl)
{
    st_config_t c;
    st_store_t *st = NULL;
    tu_config(&c, dir, fl);
    c.segment_size = 1u << 20;
    c.max_message_bytes = 256u << 10;
    CU_ASSERT_FATAL(tu_open_cfg(&c, &st) == GT_OK);
    return st;
}

/* Topics Q0000.. (1 queue each) and a group G0000.. per topic. */
static void declare(st_store_t *st, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        snprintf(names[i], sizeof(names[i]), "Q%04zu", i);
        dests[i] = (st_dest_t){.topic = names[i], .queue_id = ST_QUEUE_ANY};
        CU_ASSERT_EQUAL_FATAL(tu_topic(st, names[i], 1), GT_OK);
    }
}

static void group_of(size_t i, char *g) /* 24 bytes */
{
    snprintf(g, 24, "G%04zu", i);
}

static st_message_t msg_of(const char *body, uint32_t len)
{
    st_message_t m;
    memset(&m, 0, sizeof(m));
    m.tag = "t";
    m.keys[0] = "k1";
    m.nkeys = 1;
    m.body = body;
    m.body_len = len;
    m.queue_id = ST_QUEUE_ANY;
    return m;
}

static void test_many(void)
{
    char *dir = tu_tmpdir("multi_many");
    st_store_t *st = open_big(dir, ST_FLUSH_SYNC);
    st_local_t *sl = (st_local_t *)st;
    declare(st, ND);
    static char body[100 * 1024];
    memset(body, 'b', sizeof(body));
    memcpy(body, "hello", 5);
    st_message_t m = msg_of(body, sizeof(body));
    static st_append_item_t it[ND];
    uint64_t before = sl->published_pos;
    CU_ASSERT_EQUAL_FATAL(tu_send_multi(st, &m, dests, ND, it), GT_OK);
    /* one record: the body once, plus the destination list */
    uint64_t grew = sl->published_pos - before;
    CU_ASSERT(grew > sizeof(body) && grew < sizeof(body) + ND * 32 + 1024);
    for (size_t i = 0; i < ND; i++) {
        CU_ASSERT_EQUAL(it[i].queue_id, 0);
        CU_ASSERT_EQUAL(it[i].queue_offset, 0);
        CU_ASSERT_EQUAL(it[i].position, it[0].position);
        CU_ASSERT_STRING_EQUAL(it[i].msg_id, it[0].msg_id);
    }
    /* a second message to every other destination: offsets 1 there */
    static st_dest_t half[ND / 2];
    for (size_t i = 0; i < ND / 2; i++)
        half[i] = dests[2 * i];
    m.body_len = 6;
    memcpy(body, "second", 6);
    CU_ASSERT_EQUAL_FATAL(tu_send_multi(st, &m, half, ND / 2, it), GT_OK);
    for (size_t i = 0; i < ND / 2; i++)
        CU_ASSERT_EQUAL(it[i].queue_offset, 1);
    /* each destination pops on its own: its topic, queue and offset */
    for (size_t i = 0; i < ND; i++) {
        char g[24];
        tu_msg_t out[2];
        size_t n = 0;
        group_of(i, g);
        CU_ASSERT_EQUAL(tu_pop_simple(st, g, names[i], NULL, 2, 60000, out, &n),
                        GT_OK);
        CU_ASSERT_EQUAL_FATAL(n, i % 2 ? 1u : 2u);
        CU_ASSERT_STRING_EQUAL(out[0].topic, names[i]);
        CU_ASSERT_EQUAL(out[0].offset, 0);
        CU_ASSERT(memcmp(out[0].body, "hello", 5) == 0);
        CU_ASSERT_STRING_EQUAL(out[0].keys[0], "k1");
        if (n == 2) {
            CU_ASSERT_STRING_EQUAL(out[1].topic, names[i]);
            CU_ASSERT_EQUAL(out[1].offset, 1);
            CU_ASSERT(memcmp(out[1].body, "second", 6) == 0);
        }
        /* ack only in some destinations */
        if (i % 3 == 0)
            for (size_t k = 0; k < n; k++)
                CU_ASSERT_EQUAL(tu_ack(st, g, names[i], out[k].handle), GT_OK);
    }
    for (size_t i = 0; i < 12; i++) {
        st_stats_t s;
        char g[24];
        group_of(i, g);
        CU_ASSERT_EQUAL(tu_stats(st, names[i], g, &s), GT_OK);
        CU_ASSERT_EQUAL(s.messages, i % 2 ? 1u : 2u);
        CU_ASSERT_EQUAL(s.inflight, i % 3 == 0 ? 0u : s.messages);
        CU_ASSERT_EQUAL(s.ready, 0);
    }
    /* pull from one destination */
    tu_msg_t pm[2];
    size_t n;
    uint64_t next;
    CU_ASSERT_EQUAL(tu_pull(st, names[10], 0, 0, 2, pm, &n, &next), GT_OK);
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT_STRING_EQUAL(pm[1].topic, names[10]);
    CU_ASSERT_EQUAL(pm[1].offset, 1);
    CU_ASSERT_EQUAL(next, 2);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

/* Every destination's entries, as pulls see them, after a reopen. */
static void check_all(st_store_t *st, size_t nd, size_t nmsg)
{
    for (size_t i = 0; i < nd; i++) {
        tu_msg_t out[16];
        size_t n = 0;
        CU_ASSERT_EQUAL(tu_pull(st, names[i], 0, 0, 16, out, &n, NULL), GT_OK);
        /* message j goes to destinations i with i % (j + 1) == 0 */
        size_t want = 0;
        for (size_t j = 0; j < nmsg; j++) {
            if (i % (j + 1))
                continue;
            char body[32];
            snprintf(body, sizeof(body), "m%zu", j);
            CU_ASSERT_FATAL(want < n);
            CU_ASSERT_STRING_EQUAL(out[want].body, body);
            CU_ASSERT_STRING_EQUAL(out[want].topic, names[i]);
            CU_ASSERT_EQUAL(out[want].offset, want);
            want++;
        }
        CU_ASSERT_EQUAL(n, want);
    }
}

static void send_pattern(st_store_t *st, size_t nd, size_t nmsg)
{
    for (size_t j = 0; j < nmsg; j++) {
        st_dest_t d[64];
        size_t k = 0;
        char body[32];
        for (size_t i = 0; i < nd; i++)
            if (i % (j + 1) == 0)
                d[k++] = dests[i];
        snprintf(body, sizeof(body), "m%zu", j);
        st_message_t m = msg_of(body, (uint32_t)strlen(body) + 1);
        CU_ASSERT_EQUAL_FATAL(tu_send_multi(st, &m, d, k, NULL), GT_OK);
        /* a plain append in between: offsets stay per queue */
        if (j == 2)
            CU_ASSERT_EQUAL(tu_send(st, "P", "t", NULL, "plain", -1, NULL),
                            GT_OK);
    }
}

static void test_recovery(void)
{
    char *dir = tu_tmpdir("multi_rec"), p[4200];
    st_store_t *st = tu_open(dir, ST_FLUSH_SYNC);
    declare(st, 40);
    CU_ASSERT_EQUAL(tu_topic(st, "P", 1), GT_OK);
    send_pattern(st, 40, 8);
    check_all(st, 40, 8);
    st_close(st); /* the table snapshot path */
    st = tu_open(dir, ST_FLUSH_SYNC);
    check_all(st, 40, 8);
    st_close(st);
    snprintf(p, sizeof(p), "%s/tables.snap", dir); /* the full scan */
    CU_ASSERT_EQUAL(unlink(p), 0);
    st = tu_open(dir, ST_FLUSH_SYNC);
    check_all(st, 40, 8);
    /* appends continue at the right offsets in every destination */
    st_append_item_t it[40];
    st_message_t m = msg_of("late", 5);
    CU_ASSERT_EQUAL(tu_send_multi(st, &m, dests, 40, it), GT_OK);
    CU_ASSERT_EQUAL(it[0].queue_offset, 8);
    CU_ASSERT_EQUAL(it[1].queue_offset, 1);
    CU_ASSERT_EQUAL(it[6].queue_offset, 4); /* 6 % j+1 == 0: j = 0,1,2,5 */
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

/* A child appends to 1..8 destinations (sync flush), reporting each
 * completed append; SIGKILLed midway, the store (full scan: no snapshot)
 * has every reported one in every destination, at its offsets. */
typedef struct rep {
    uint32_t j;
    uint32_t nd;
    uint64_t off[8];
} rep_t;

static void test_crash(void)
{
    char *dir = tu_tmpdir("multi_crash");
    int fds[2];
    st_store_t *st = tu_open(dir, ST_FLUSH_SYNC);
    declare(st, 8);
    st_close(st);
    CU_ASSERT_EQUAL_FATAL(pipe(fds), 0);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        st = tu_open(dir, ST_FLUSH_SYNC);
        for (uint32_t j = 0;; j++) {
            char body[32];
            st_append_item_t it[8];
            rep_t r = {.j = j, .nd = 1 + j % 8};
            snprintf(body, sizeof(body), "c%u", j);
            st_message_t m = msg_of(body, (uint32_t)strlen(body) + 1);
            if (tu_send_multi(st, &m, dests, r.nd, it) != GT_OK)
                _exit(3);
            for (uint32_t k = 0; k < r.nd; k++)
                r.off[k] = it[k].queue_offset;
            if (write(fds[1], &r, sizeof(r)) != (ssize_t)sizeof(r))
                _exit(4);
        }
    }
    close(fds[1]);
    static rep_t reps[100000];
    size_t nr = 0;
    while (nr < 300 && read(fds[0], &reps[nr], sizeof(rep_t)) == sizeof(rep_t))
        nr++;
    kill(pid, SIGKILL);
    while (nr < 100000 &&
           read(fds[0], &reps[nr], sizeof(rep_t)) == sizeof(rep_t))
        nr++;
    int status;
    waitpid(pid, &status, 0);
    CU_ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    close(fds[0]);
    st = tu_open(dir, ST_FLUSH_SYNC);
    size_t bad = 0;
    for (size_t r = 0; r < nr; r++)
        for (uint32_t k = 0; k < reps[r].nd; k++) {
            tu_msg_t out;
            size_t n = 0;
            char body[32];
            snprintf(body, sizeof(body), "c%u", reps[r].j);
            if (tu_pull(st, names[k], 0, reps[r].off[k], 1, &out, &n, NULL) !=
                    GT_OK || n != 1 || strcmp(out.body, body) != 0 ||
                out.offset != reps[r].off[k])
                bad++;
        }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT(nr >= 300);
    /* every destination can be popped from and acked on its own */
    for (size_t i = 0; i < 8; i++) {
        char g[24];
        tu_msg_t out[4];
        size_t n = 0;
        group_of(i, g);
        CU_ASSERT_EQUAL(tu_pop_simple(st, g, names[i], NULL, 4, 60000, out, &n),
                        GT_OK);
        CU_ASSERT_EQUAL(n, 4);
        for (size_t k = 0; k < n; k++)
            CU_ASSERT_EQUAL(tu_ack(st, g, names[i], out[k].handle), GT_OK);
    }
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

/* Retention deletes old segments: every destination's entries below the
 * new first position go with them, none is left pointing into a deleted
 * segment, and reading continues at the new minimum. */
static void test_retention(void)
{
    char *dir = tu_tmpdir("multi_ret");
    st_config_t c;
    st_store_t *st = NULL;
    tu_config(&c, dir, ST_FLUSH_ASYNC); /* 64 KiB segments */
    c.cq_file_entries = 128; /* entries in consume queue files: the */
    c.cq_tail_entries = 32;  /* reopen checks them */
    CU_ASSERT_FATAL(tu_open_cfg(&c, &st) == GT_OK);
    declare(st, 4);
    char body[2000];
    memset(body, 'r', sizeof(body) - 1);
    body[sizeof(body) - 1] = 0;
    for (int j = 0; j < 200; j++) { /* ~400 KiB: several segments */
        st_message_t m = msg_of(body, sizeof(body));
        CU_ASSERT_EQUAL_FATAL(tu_send_multi(st, &m, dests, 4, NULL), GT_OK);
    }
    tu_wait_synced(st);
    st_local_retention_run(st, st_now_ms() + 73LL * 3600 * 1000);
    uint64_t min[4];
    for (size_t i = 0; i < 4; i++) {
        CU_ASSERT_EQUAL(tu_offset_query(st, names[i], 0, ST_OFFSET_BEGIN, 0,
                                        &min[i]), GT_OK);
        CU_ASSERT_EQUAL(min[i], min[0]);
    }
    CU_ASSERT(min[0] > 100 && min[0] < 200);
    for (size_t i = 0; i < 4; i++) {
        tu_msg_t out[4];
        size_t n = 0;
        char g[24];
        group_of(i, g);
        CU_ASSERT_EQUAL(tu_pull(st, names[i], 0, 0, 4, out, &n, NULL), GT_OK);
        CU_ASSERT_EQUAL(n, 4);
        CU_ASSERT_EQUAL(out[0].offset, min[0]);
        CU_ASSERT_EQUAL(tu_pop_simple(st, g, names[i], NULL, 4, 60000, out, &n),
                        GT_OK);
        CU_ASSERT_EQUAL(n, 4);
        CU_ASSERT_EQUAL(out[0].offset, min[0]);
    }
    st_close(st);
    CU_ASSERT_FATAL(tu_open_cfg(&c, &st) == GT_OK);
    for (size_t i = 0; i < 4; i++) {
        uint64_t m2;
        tu_msg_t out[4];
        size_t n = 0;
        CU_ASSERT_EQUAL(tu_offset_query(st, names[i], 0, ST_OFFSET_BEGIN, 0,
                                        &m2), GT_OK);
        CU_ASSERT_EQUAL(m2, min[0]);
        CU_ASSERT_EQUAL(tu_pull(st, names[i], 0, 190, 4, out, &n, NULL), GT_OK);
        CU_ASSERT_EQUAL(n, 4);
        CU_ASSERT_EQUAL(out[0].offset, 190);
        CU_ASSERT_STRING_EQUAL(out[0].topic, names[i]);
    }
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

static void test_errors(void)
{
    char *dir = tu_tmpdir("multi_err");
    st_store_t *st = tu_open(dir, ST_FLUSH_SYNC);
    declare(st, 3);
    st_message_t m = msg_of("x", 2);
    st_dest_t d[3] = {dests[0], {.topic = "nope", .queue_id = -1}, dests[2]};
    CU_ASSERT_EQUAL(tu_send_multi(st, &m, d, 3, NULL), GT_ENOTFOUND);
    d[1] = dests[0]; /* twice */
    CU_ASSERT_EQUAL(tu_send_multi(st, &m, d, 3, NULL), GT_EINVAL);
    d[1] = (st_dest_t){.topic = names[1], .queue_id = 1}; /* 1 queue */
    CU_ASSERT_EQUAL(tu_send_multi(st, &m, d, 3, NULL), GT_EINVAL);
    d[1] = (st_dest_t){.topic = ST_SYS_TIMER, .queue_id = 0};
    CU_ASSERT_EQUAL(tu_send_multi(st, &m, d, 3, NULL), GT_EINVAL);
    d[1] = (st_dest_t){.topic = NULL, .queue_id = 0};
    CU_ASSERT_EQUAL(tu_send_multi(st, &m, d, 3, NULL), GT_EINVAL);
    CU_ASSERT_EQUAL(tu_send_multi(st, &m, dests, 0, NULL), GT_EINVAL);
    CU_ASSERT_EQUAL(tu_send_multi(st, &m, dests, ST_DEST_MAX + 1, NULL),
                    GT_EINVAL);
    m.delivery_ts_ms = st_now_ms() + 60000;
    CU_ASSERT_EQUAL(tu_send_multi(st, &m, dests, 3, NULL), GT_EINVAL);
    m.delivery_ts_ms = 0;
    m.tx_half = true;
    CU_ASSERT_EQUAL(tu_send_multi(st, &m, dests, 3, NULL), GT_EINVAL);
    m.tx_half = false;
    static char big[20000]; /* over max_message_bytes (16 KiB) */
    st_message_t b = msg_of(big, sizeof(big));
    CU_ASSERT_EQUAL(tu_send_multi(st, &b, dests, 3, NULL), GT_EINVAL);
    /* none of that appended anything */
    for (size_t i = 0; i < 3; i++) {
        st_stats_t s;
        CU_ASSERT_EQUAL(tu_stats(st, names[i], NULL, &s), GT_OK);
        CU_ASSERT_EQUAL(s.messages, 0);
    }
    CU_ASSERT_EQUAL(tu_send_multi(st, &m, dests, 3, NULL), GT_OK);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

/* The record codec: the destination section round-trips and damage to its
 * structure (even with a good CRC) is refused. */
static void test_codec(void)
{
    st_message_t m = msg_of("body", 4);
    const char *tn[3] = {"A", "BB", "CCC"};
    uint32_t qs[3] = {0, 5, 7};
    size_t base = st_record_size_as("A", &m, "id1");
    size_t total = base + st_dests_size(tn, 3);
    uint8_t *buf = malloc(total);
    size_t used;
    CU_ASSERT_EQUAL_FATAL(st_record_encode_as(buf, total, "A", &m, "id1", 0,
                                              &used), GT_OK);
    st_record_add_dests(buf, tn, qs, 3);
    for (size_t i = 0; i < 3; i++)
        st_record_set_dest(buf, i, 100 + i);
    st_record_seal(buf, 0, 100, 4096, 1);
    st_message_t out;
    CU_ASSERT_EQUAL(st_record_decode(buf, total, total, &out, &used), GT_OK);
    CU_ASSERT_EQUAL(used, total);
    CU_ASSERT_EQUAL(out.body_len, 4);
    CU_ASSERT(memcmp(out.body, "body", 4) == 0);
    st_rdests_t d;
    st_record_dests(buf, &d);
    CU_ASSERT_EQUAL_FATAL(d.count, 3);
    for (size_t i = 0; i < 3; i++) {
        char name[ST_NAME_MAX + 1];
        uint32_t q;
        uint64_t off;
        st_rdest_next(&d, i, name, &q, &off);
        CU_ASSERT_STRING_EQUAL(name, tn[i]);
        CU_ASSERT_EQUAL(q, qs[i]);
        CU_ASSERT_EQUAL(off, 100 + i);
    }
    /* structure damage, resealed so the CRC passes */
    uint8_t *sec = buf + base;
    gt_le32_put(sec, 4); /* count beyond the names */
    st_record_seal(buf, 0, 100, 4096, 1);
    CU_ASSERT_EQUAL(st_record_decode(buf, total, total, &out, &used),
                    GT_ECORRUPT);
    gt_le32_put(sec, 0);
    st_record_seal(buf, 0, 100, 4096, 1);
    CU_ASSERT_EQUAL(st_record_decode(buf, total, total, &out, &used),
                    GT_ECORRUPT);
    gt_le32_put(sec, 3);
    gt_le16_put(sec + 4 + 36, 0); /* an empty name */
    st_record_seal(buf, 0, 100, 4096, 1);
    CU_ASSERT_EQUAL(st_record_decode(buf, total, total, &out, &used),
                    GT_ECORRUPT);
    gt_le16_put(sec + 4 + 36, 1);
    st_record_seal(buf, 0, 100, 4096, 1);
    CU_ASSERT_EQUAL(st_record_decode(buf, total, total, &out, &used), GT_OK);
    gt_le32_put(buf + 60, (uint32_t)(total - base - 1)); /* length off */
    st_record_seal(buf, 0, 100, 4096, 1);
    CU_ASSERT_EQUAL(st_record_decode(buf, total, total, &out, &used),
                    GT_ECORRUPT);
    /* a bit flip anywhere in the section: the CRC */
    gt_le32_put(buf + 60, (uint32_t)(total - base));
    st_record_seal(buf, 0, 100, 4096, 1);
    for (size_t i = base; i < total; i++) {
        buf[i] ^= 0x10;
        CU_ASSERT_EQUAL(st_record_decode(buf, total, total, &out, &used),
                        GT_ECORRUPT);
        buf[i] ^= 0x10;
    }
    free(buf);
}

static void test_late(void)
{
    char *dir = tu_tmpdir("multi_late");
    st_store_t *in = tu_open(dir, ST_FLUSH_SYNC), *st = NULL;
    declare(in, 5);
    CU_ASSERT_EQUAL_FATAL(st_late_open(in, 2000, 5, &st), GT_OK);
    st_append_item_t it[5];
    st_message_t m = msg_of("late", 5);
    CU_ASSERT_EQUAL(tu_send_multi(st, &m, dests, 5, it), GT_OK);
    CU_ASSERT_EQUAL(tu_send_multi(st, &m, dests + 1, 4, it), GT_OK);
    for (size_t i = 0; i < 4; i++)
        CU_ASSERT_EQUAL(it[i].queue_offset, 1);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    static const CU_TestInfo tests[] = {
        {"1024 destinations: one record, each pops on its own", test_many},
        {"recovery: table snapshot and full scan", test_recovery},
        {"SIGKILL: every reported append in every destination", test_crash},
        {"retention prunes every destination", test_retention},
        {"errors append nothing", test_errors},
        {"record codec: destination section", test_codec},
        {"through the late decorator", test_late},
        CU_TEST_INFO_NULL,
    };
    return tu_run("store_multi", tests);
}
