/* Consume queues in files (store/st_cq.c), with small chunk files (256
 * entries) and tails (16 entries) so a few thousand messages span several
 * files: entries survive a restart through the files (the snapshot holds
 * metadata only), a read far below the tail goes through the page cache,
 * retention unlinks chunk files after the next snapshot, a missing or
 * truncated file under a valid snapshot makes the start rebuild everything
 * from the commitlog, a damaged entry is refused rather than served, and a
 * crash image taken after a snapshot (entries in the files beyond what the
 * snapshot recorded, some damaged) recovers every message at its offset. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gt_le.h"
#include "tu.h"

#define CHUNK 256
#define TAIL 16
/* byte offset of entry o in the file starting at offset c (32-byte header) */
#define EOFF(o, c) (((o) - (c) + 1) * 32)

static st_store_t *cq_open(const char *dir, st_flush_t flush)
{
    st_config_t c;
    st_store_t *st = NULL;
    tu_config(&c, dir, flush);
    c.cq_file_entries = CHUNK;
    c.cq_tail_entries = TAIL;
    CU_ASSERT_EQUAL_FATAL(st_local_open(&c, &st), GT_OK);
    return st;
}

/* n messages to queue q of T, bodies "m<i>" from `from`, key "k<i>". */
static void send_range(st_store_t *st, uint32_t q, int from, int n)
{
    st_message_t m[32];
    char bodies[32][16], keys[32][16];
    for (int i = 0; i < n;) {
        int k = 0;
        memset(m, 0, sizeof(m));
        for (; k < 32 && i < n; k++, i++) {
            snprintf(bodies[k], sizeof(bodies[k]), "m%d", from + i);
            snprintf(keys[k], sizeof(keys[k]), "k%d", from + i);
            m[k].tag = "t";
            m[k].body = bodies[k];
            m[k].body_len = (uint32_t)strlen(bodies[k]) + 1;
            m[k].queue_id = (int32_t)q;
            m[k].keys[0] = keys[k];
            m[k].nkeys = 1;
        }
        CU_ASSERT_EQUAL_FATAL(tu_send_n(st, "T", m, (size_t)k, NULL), GT_OK);
    }
}

/* Every offset [from, to) of queue q reads back with its own body. */
static void check_range(st_store_t *st, uint32_t q, int from, int to)
{
    tu_msg_t m[32];
    size_t n;
    uint64_t next;
    int bad = 0;
    for (int o = from; o < to;) {
        gt_err_t rc = tu_pull(st, "T", q, (uint64_t)o, 32, m, &n, &next);
        CU_ASSERT_EQUAL_FATAL(rc, GT_OK);
        CU_ASSERT_FATAL(n > 0);
        for (size_t i = 0; i < n; i++, o++) {
            char want[16];
            snprintf(want, sizeof(want), "m%d", o);
            bad += m[i].offset != (uint64_t)o || strcmp(m[i].body, want) != 0;
        }
    }
    CU_ASSERT_EQUAL(bad, 0);
}

static void chunk_path(char *buf, size_t cap, const char *dir, uint32_t q,
                       uint64_t first)
{
    snprintf(buf, cap, "%s/cq/T/%u/%020llu", dir, q, (unsigned long long)first);
}

static bool exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

static void test_files_survive_reopen(void)
{
    char *dir = tu_tmpdir("cqreopen"), p[1200];
    st_store_t *st = cq_open(dir, ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 2), GT_OK);
    send_range(st, 0, 0, 1000);
    send_range(st, 1, 0, 5); /* stays in its tail */
    for (uint64_t c = 0; c < 1000 - TAIL; c += CHUNK) {
        chunk_path(p, sizeof(p), dir, 0, c);
        CU_ASSERT(exists(p));
    }
    chunk_path(p, sizeof(p), dir, 1, 0);
    CU_ASSERT(!exists(p));
    check_range(st, 0, 0, 1000);
    /* the format: header, then entry 257 at its slot with its position */
    chunk_path(p, sizeof(p), dir, 0, CHUNK);
    size_t len;
    uint8_t *b = tu_read_file(p, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_EQUAL(len, EOFF(2 * CHUNK, CHUNK));
    CU_ASSERT_EQUAL(memcmp(b, "GTCQ", 4), 0);
    CU_ASSERT_EQUAL(gt_le_get(b + 4, 4), 1);        /* version */
    CU_ASSERT_EQUAL(gt_le_get(b + 8, 8), CHUNK);    /* first offset */
    CU_ASSERT_EQUAL(gt_le_get(b + 16, 4), CHUNK);   /* entries per file */
    CU_ASSERT_EQUAL(gt_le_get(b + 20, 4), 32);      /* entry size */
    CU_ASSERT_EQUAL(gt_le_get(b + 28, 4), st_crc32c(0, b, 28));
    tu_msg_t m[1];
    size_t n;
    uint64_t next;
    CU_ASSERT_EQUAL(tu_pull(st, "T", 0, CHUNK + 1, 1, m, &n, &next), GT_OK);
    const uint8_t *e = b + EOFF(CHUNK + 1, CHUNK);
    CU_ASSERT_EQUAL(gt_le_get(e, 8), m[0].position);
    CU_ASSERT_EQUAL(gt_le_get(e + 12, 4), gt_hash32("t")); /* tag hash */
    uint8_t o[8];
    gt_le_put(o, CHUNK + 1, 8);
    CU_ASSERT_EQUAL(gt_le_get(e + 28, 4), st_crc32c(st_crc32c(0, o, 8), e, 28));
    free(b);
    st_close(st);
    /* the snapshot holds metadata and short tails, not the entries */
    snprintf(p, sizeof(p), "%s/tables.snap", dir);
    CU_ASSERT(tu_file_size(p) > 0 &&
              tu_file_size(p) < 2010 * 16 + 2048); /* index + metadata */
    st = cq_open(dir, ST_FLUSH_SYNC);
    st_stats_t s;
    CU_ASSERT_EQUAL(tu_stats(st, "T", NULL, &s), GT_OK);
    CU_ASSERT_EQUAL(s.messages, 1005);
    check_range(st, 0, 0, 1000);
    check_range(st, 1, 0, 5);
    send_range(st, 0, 1000, 100); /* appends continue at the right offsets */
    check_range(st, 0, 990, 1100);
    /* the time index reads the files too */
    uint64_t off = 7;
    CU_ASSERT_EQUAL(tu_offset_query(st, "T", 0, ST_OFFSET_TIME, 0, &off),
                    GT_OK);
    CU_ASSERT_EQUAL(off, 0);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

static void test_read_below_tail_uses_cache(void)
{
    char *dir = tu_tmpdir("cqcache");
    st_store_t *st = cq_open(dir, ST_FLUSH_ASYNC);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    send_range(st, 0, 0, 2000);
    uint64_t h0, m0, h1, m1, h2, m2;
    st_cq_cache_stats(st, &h0, &m0);
    tu_msg_t m[32];
    size_t n;
    uint64_t next;
    CU_ASSERT_EQUAL(tu_pull(st, "T", 0, 300, 1, m, &n, &next), GT_OK);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_STRING_EQUAL(m[0].body, "m300");
    st_cq_cache_stats(st, &h1, &m1);
    CU_ASSERT_EQUAL(m1, m0 + 1); /* one page read from the file */
    CU_ASSERT_EQUAL(tu_pull(st, "T", 0, 301, 2, m, &n, &next), GT_OK);
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT_STRING_EQUAL(m[1].body, "m302");
    st_cq_cache_stats(st, &h2, &m2);
    CU_ASSERT_EQUAL(m2, m1); /* same page: served by the cache */
    CU_ASSERT(h2 >= h1 + 2);
    /* the newest entries are in the tail: no cache traffic */
    CU_ASSERT_EQUAL(tu_pull(st, "T", 0, 1999, 1, m, &n, &next), GT_OK);
    CU_ASSERT_STRING_EQUAL(m[0].body, "m1999");
    st_cq_cache_stats(st, &h1, &m1);
    CU_ASSERT_EQUAL(h1, h2);
    CU_ASSERT_EQUAL(m1, m2);
    /* pops read through it as well */
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 32, 60000, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 32);
    CU_ASSERT_STRING_EQUAL(m[0].body, "m0");
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

static void test_retention_unlinks_files(void)
{
    char *dir = tu_tmpdir("cqretain"), p[1200];
    char body[600];
    st_store_t *st = cq_open(dir, ST_FLUSH_ASYNC);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    memset(body, 'x', sizeof(body) - 1);
    body[sizeof(body) - 1] = 0;
    for (int i = 0; i < 1500; i++) /* ~1 MiB over 64 KiB segments */
        CU_ASSERT_EQUAL_FATAL(tu_send(st, "T", "a", NULL, body, 0, NULL),
                              GT_OK);
    tu_wait_synced(st);
    CU_ASSERT_EQUAL(st_local_snapshot(st), GT_OK);
    st_local_retention_run(st, st_now_ms() + 73LL * 3600 * 1000);
    uint64_t min;
    CU_ASSERT_EQUAL(tu_offset_query(st, "T", 0, ST_OFFSET_BEGIN, 0, &min),
                    GT_OK);
    CU_ASSERT_FATAL(min > 2 * CHUNK); /* all but the current segment went */
    st_stats_t s;
    CU_ASSERT_EQUAL(tu_stats(st, "T", NULL, &s), GT_OK);
    CU_ASSERT_EQUAL(s.messages, 1500 - min);
    CU_ASSERT(s.bytes > 0 && s.bytes < (1500 - min + 1) * 800);
    /* still there until a snapshot no longer refers to them */
    chunk_path(p, sizeof(p), dir, 0, 0);
    CU_ASSERT(exists(p));
    CU_ASSERT_EQUAL(st_local_snapshot(st), GT_OK);
    for (uint64_t c = 0; c + CHUNK <= min; c += CHUNK) {
        chunk_path(p, sizeof(p), dir, 0, c);
        CU_ASSERT(!exists(p));
    }
    chunk_path(p, sizeof(p), dir, 0, min - min % CHUNK);
    CU_ASSERT(exists(p));
    tu_msg_t m[4];
    size_t n;
    uint64_t next;
    CU_ASSERT_EQUAL(tu_pull(st, "T", 0, 0, 4, m, &n, &next), GT_OK);
    CU_ASSERT_EQUAL(n, 4);
    CU_ASSERT_EQUAL(m[0].offset, min);
    st_close(st);
    st = cq_open(dir, ST_FLUSH_ASYNC); /* from the snapshot */
    uint64_t min2;
    CU_ASSERT_EQUAL(tu_offset_query(st, "T", 0, ST_OFFSET_BEGIN, 0, &min2),
                    GT_OK);
    CU_ASSERT_EQUAL(min2, min);
    CU_ASSERT_EQUAL(tu_stats(st, "T", NULL, &s), GT_OK);
    CU_ASSERT_EQUAL(s.messages, 1500 - min);
    CU_ASSERT_EQUAL(tu_pull(st, "T", 0, 0, 4, m, &n, &next), GT_OK);
    CU_ASSERT_EQUAL(m[0].offset, min);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

/* kind 0: the file is deleted; 1: truncated; 2: its header is damaged.
 * A valid snapshot refers to it: the start must notice and rebuild from
 * the commitlog. */
static void damaged_file(int kind)
{
    char *dir = tu_tmpdir("cqdamage"), p[1200];
    st_store_t *st = cq_open(dir, ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    send_range(st, 0, 0, 1000);
    st_close(st);
    chunk_path(p, sizeof(p), dir, 0, CHUNK);
    if (kind == 0) {
        CU_ASSERT_EQUAL(unlink(p), 0);
    } else {
        size_t len;
        uint8_t *b = tu_read_file(p, &len);
        CU_ASSERT_PTR_NOT_NULL_FATAL(b);
        if (kind == 2)
            b[9] ^= 1; /* first offset */
        tu_write_file(p, b, kind == 1 ? 100 : len);
        free(b);
    }
    char keep[1200];
    snprintf(keep, sizeof(keep), "%s/cq/keep", dir);
    tu_write_file(keep, "k", 1);
    st = cq_open(dir, ST_FLUSH_SYNC);
    CU_ASSERT(!exists(keep)); /* full scan: the directory was rebuilt */
    CU_ASSERT_EQUAL(tu_file_size(p), EOFF(2 * CHUNK, CHUNK));
    check_range(st, 0, 0, 1000);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

static void test_missing_file_full_scan(void)
{
    damaged_file(0);
}

static void test_truncated_file_full_scan(void)
{
    damaged_file(1);
}

static void test_bad_header_full_scan(void)
{
    damaged_file(2);
}

/* A damaged entry inside a file the snapshot vouches for fails its CRC
 * when read: the pull fails instead of reading another record. */
static void test_damaged_entry_refused(void)
{
    char *dir = tu_tmpdir("cqcrc"), p[1200];
    st_store_t *st = cq_open(dir, ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    send_range(st, 0, 0, 1000);
    st_close(st);
    chunk_path(p, sizeof(p), dir, 0, CHUNK);
    size_t len;
    uint8_t *b = tu_read_file(p, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    /* entry 300: point its position at the record of entry 299 */
    memcpy(b + EOFF(300, CHUNK), b + EOFF(299, CHUNK), 8);
    tu_write_file(p, b, len);
    free(b);
    st = cq_open(dir, ST_FLUSH_SYNC);
    tu_msg_t m[4];
    size_t n;
    uint64_t next;
    CU_ASSERT_EQUAL(tu_pull(st, "T", 0, 299, 1, m, &n, &next), GT_OK);
    CU_ASSERT_STRING_EQUAL(m[0].body, "m299");
    n = 9;
    CU_ASSERT_NOT_EQUAL(tu_pull(st, "T", 0, 300, 1, m, &n, &next), GT_OK);
    CU_ASSERT_EQUAL(tu_pull(st, "T", 0, 301, 1, m, &n, &next), GT_OK);
    CU_ASSERT_STRING_EQUAL(m[0].body, "m301");
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

/* The state a SIGKILL leaves: a periodic snapshot, then more appends whose
 * entries reached the files; some of those file entries are damaged (as
 * if their pages never reached the disk).  The start loads the snapshot,
 * scans the commitlog after it and rewrites the entries beyond it. */
static void test_crash_after_snapshot(void)
{
    char *dir = tu_tmpdir("cqcrash"), *img = tu_tmpdir("cqcrashimg");
    char cmd[2600], p[1200];
    st_store_t *st = cq_open(dir, ST_FLUSH_ASYNC);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    send_range(st, 0, 0, 500);
    tu_wait_synced(st);
    CU_ASSERT_EQUAL(st_local_snapshot(st), GT_OK);
    send_range(st, 0, 500, 600);
    tu_wait_synced(st);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && cp -a '%s' '%s'", img, dir, img);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0); /* the image of a crash */
    st_close(st);
    chunk_path(p, sizeof(p), img, 0, 2 * CHUNK); /* entries 512..767 */
    size_t len;
    uint8_t *b = tu_read_file(p, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT(len >= EOFF(2 * CHUNK + 200, 2 * CHUNK));
    memset(b + EOFF(2 * CHUNK + 1, 2 * CHUNK), 0xAB, 150 * 32);
    tu_write_file(p, b, len);
    free(b);
    char keep[1200];
    snprintf(keep, sizeof(keep), "%s/cq/keep", img);
    tu_write_file(keep, "k", 1); /* a full scan would remove it */
    st = cq_open(img, ST_FLUSH_ASYNC);
    CU_ASSERT(exists(keep)); /* the snapshot was used */
    st_stats_t s;
    CU_ASSERT_EQUAL(tu_stats(st, "T", NULL, &s), GT_OK);
    CU_ASSERT_EQUAL(s.messages, 1100);
    check_range(st, 0, 0, 1100);
    send_range(st, 0, 1100, 50);
    check_range(st, 0, 1090, 1150);
    st_close(st);
    st = cq_open(img, ST_FLUSH_ASYNC); /* and once more, cleanly */
    check_range(st, 0, 0, 1150);
    st_close(st);
    tu_rmrf(dir);
    tu_rmrf(img);
    free(dir);
    free(img);
}

static const CU_TestInfo tests[] = {
    {"files_survive_reopen", test_files_survive_reopen},
    {"read_below_tail_uses_cache", test_read_below_tail_uses_cache},
    {"retention_unlinks_files", test_retention_unlinks_files},
    {"missing_file_full_scan", test_missing_file_full_scan},
    {"truncated_file_full_scan", test_truncated_file_full_scan},
    {"bad_header_full_scan", test_bad_header_full_scan},
    {"damaged_entry_refused", test_damaged_entry_refused},
    {"crash_after_snapshot", test_crash_after_snapshot},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return tu_run("cq", tests);
}
