/* The id / key index on disk (st_index.c): lookups find entries in the
 * in-memory table, in run files and across a reopen (from the table
 * snapshot, and from the full scan); merges keep every entry; retention
 * drops runs; a damaged run file is detected (header: the start falls back
 * to the full scan; a block: the lookup reports it and the next start
 * rebuilds); a start after a crash that followed merges still uses the
 * snapshot; run files refused by the disk are retried (entries searched in
 * memory meanwhile); 1,000 ids are found after 1M appends.  Small in-memory tables
 * (index_mem_entries) make runs and merges happen with few messages. */
#include <dirent.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tu.h"

static st_store_t *open_ix(const char *dir, uint32_t mem, uint64_t seg)
{
    st_config_t c;
    st_store_t *st = NULL;
    tu_config(&c, dir, ST_FLUSH_ASYNC);
    c.index_mem_entries = mem;
    if (seg)
        c.segment_size = seg;
    CU_ASSERT_FATAL(tu_open_cfg(&c, &st) == GT_OK);
    return st;
}

/* Waits for the index thread to have flushed and merged what is due. */
static st_index_info_t settle(st_store_t *st)
{
    st_index_info_t i;
    for (;;) {
        st_local_index_info(st, &i);
        if (i.idle)
            return i;
        tu_sleep_ms(2);
    }
}

/* Sends n messages (key "k<i % keymod>" when keymod) and records ids. */
static void send_many(st_store_t *st, int from, int n, int keymod,
                      char (*ids)[ST_MSG_ID_MAX])
{
    enum { B = 64 };
    st_message_t m[B];
    st_append_item_t it[B];
    char keys[B][16];
    for (int i = 0; i < n; i += B) {
        int k = n - i < B ? n - i : B;
        memset(m, 0, sizeof(m));
        for (int j = 0; j < k; j++) {
            m[j].tag = "t";
            m[j].body = "x";
            m[j].body_len = 1;
            m[j].queue_id = 0;
            if (keymod) {
                snprintf(keys[j], sizeof(keys[j]), "k%d", (from + i + j) % keymod);
                m[j].keys[0] = keys[j];
                m[j].nkeys = 1;
            }
        }
        CU_ASSERT_EQUAL_FATAL(tu_send_n(st, "T", m, (size_t)k, it), GT_OK);
        for (int j = 0; ids && j < k; j++)
            memcpy(ids[from + i + j], it[j].msg_id, ST_MSG_ID_MAX);
    }
}

static int found_ids(st_store_t *st, char (*ids)[ST_MSG_ID_MAX], int n,
                     int step)
{
    int found = 0;
    tu_msg_t m[ST_POP_MAX];
    size_t k;
    for (int i = 0; i < n; i += step)
        if (tu_lookup(st, false, "T", ids[i], m, &k) == GT_OK && k == 1 &&
            strcmp(m[0].id, ids[i]) == 0)
            found++;
    return found;
}

static int run_files(const char *dir)
{
    char p[1100];
    int n = 0;
    snprintf(p, sizeof(p), "%s/index", dir);
    DIR *d = opendir(p);
    struct dirent *de;
    while (d && (de = readdir(d)))
        n += strstr(de->d_name, ".run") != NULL;
    if (d)
        closedir(d);
    return n;
}

/* Flips a bit in every run file: in the header's count (header) or in a
 * position of every block (!header). */
static int damage_runs(const char *dir, bool header)
{
    char p[1100];
    int n = 0;
    snprintf(p, sizeof(p), "%s/index", dir);
    DIR *d = opendir(p);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (!strstr(de->d_name, ".run"))
            continue;
        char f[1400];
        size_t len;
        snprintf(f, sizeof(f), "%s/%s", p, de->d_name);
        uint8_t *b = tu_read_file(f, &len);
        if (!b || len < 4096 + 16)
            continue;
        uint64_t count = 0;
        for (int k = 0; k < 8; k++)
            count |= (uint64_t)b[16 + k] << (8 * k);
        if (header)
            b[16] ^= 0x10;
        for (uint64_t k = 4096 + 8; !header && k < 4096 + count * 16; k += 4096)
            b[k] ^= 0x01;
        tu_write_file(f, b, len);
        free(b);
        n++;
    }
    if (d)
        closedir(d);
    return n;
}

#define NM 3000

static void test_memory_runs_reopen(void)
{
    char *dir = tu_tmpdir("ixruns");
    static char ids[NM][ST_MSG_ID_MAX];
    st_store_t *st = open_ix(dir, 64, 0);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    send_many(st, 0, 10, 0, ids);
    st_index_info_t i = settle(st);
    CU_ASSERT_EQUAL(i.runs, 0);
    CU_ASSERT_EQUAL(i.mem_entries, 10);
    CU_ASSERT_EQUAL(found_ids(st, ids, 10, 1), 10); /* in memory */
    send_many(st, 10, NM - 10, 0, ids);
    i = settle(st);
    CU_ASSERT(i.runs >= 1);
    CU_ASSERT(i.merges >= 2); /* 46 flushes: levels 0, 1 and 2 */
    CU_ASSERT(i.mem_entries < 64);
    CU_ASSERT_EQUAL(i.run_entries + i.mem_entries, NM); /* merges keep all */
    CU_ASSERT(i.runs <= 3 * 3);
    CU_ASSERT_EQUAL(found_ids(st, ids, NM, 1), NM);
    tu_msg_t m[ST_POP_MAX];
    size_t k;
    CU_ASSERT_EQUAL(tu_lookup(st, false, "T", "no-such-id", m, &k), GT_OK);
    CU_ASSERT_EQUAL(k, 0);
    st_close(st);
    int files = run_files(dir);
    CU_ASSERT_EQUAL(files, (int)i.runs); /* merged-away inputs were deleted */
    /* reopen from the snapshot: runs listed, memory entries restored */
    st = open_ix(dir, 64, 0);
    st_index_info_t j;
    st_local_index_info(st, &j);
    CU_ASSERT(j.loaded);
    CU_ASSERT_EQUAL(j.runs, i.runs);
    CU_ASSERT_EQUAL(j.run_entries + j.mem_entries, NM);
    CU_ASSERT_EQUAL(found_ids(st, ids, NM, 1), NM);
    st_close(st);
    /* reopen by the full scan (no snapshot): the runs are rebuilt */
    char p[1100];
    snprintf(p, sizeof(p), "%s/tables.snap", dir);
    unlink(p);
    st = open_ix(dir, 64, 0);
    i = settle(st);
    CU_ASSERT(!i.loaded);
    CU_ASSERT_EQUAL(i.run_entries + i.mem_entries, NM);
    CU_ASSERT_EQUAL(found_ids(st, ids, NM, 1), NM);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

/* A key on many messages: the most recent ST_POP_MAX, newest first, from
 * runs and memory alike. */
static void test_key_newest_first(void)
{
    char *dir = tu_tmpdir("ixkey");
    st_store_t *st = open_ix(dir, 32, 0);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    send_many(st, 0, 1000, 1, NULL); /* all carry key "k0" */
    settle(st);
    tu_msg_t m[ST_POP_MAX];
    size_t k;
    CU_ASSERT_EQUAL(tu_lookup(st, true, "T", "k0", m, &k), GT_OK);
    CU_ASSERT_EQUAL_FATAL(k, ST_POP_MAX);
    for (size_t j = 0; j < k; j++)
        CU_ASSERT_EQUAL(m[j].offset, 999 - j);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

static void test_retention_drops_runs(void)
{
    char *dir = tu_tmpdir("ixret");
    static char ids[NM][ST_MSG_ID_MAX];
    char body[2048];
    memset(body, 'r', sizeof(body) - 1);
    body[sizeof(body) - 1] = 0;
    st_store_t *st = open_ix(dir, 16, 0);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    for (int i = 0; i < 300; i++) { /* ~620 KiB over 64 KiB segments */
        st_append_item_t it;
        CU_ASSERT_EQUAL_FATAL(tu_send(st, "T", "a", NULL, body, 0, &it), GT_OK);
        memcpy(ids[i], it.msg_id, ST_MSG_ID_MAX);
    }
    st_index_info_t a = settle(st);
    int files_before = run_files(dir);
    CU_ASSERT(a.runs >= 2);
    st_local_retention_run(st, st_now_ms() + 73LL * 3600 * 1000);
    st_index_info_t b = settle(st);
    CU_ASSERT(b.runs < a.runs);
    CU_ASSERT(run_files(dir) < files_before); /* unlinked */
    CU_ASSERT_EQUAL(found_ids(st, ids, 1, 1), 0);
    CU_ASSERT_EQUAL(found_ids(st, ids + 299, 1, 1), 1);
    st_close(st);
    st = open_ix(dir, 16, 0);
    CU_ASSERT_EQUAL(found_ids(st, ids, 1, 1), 0);
    CU_ASSERT_EQUAL(found_ids(st, ids + 299, 1, 1), 1);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

/* Header damage: the start sees it and rebuilds by the full scan. */
static void test_corrupt_run_header(void)
{
    char *dir = tu_tmpdir("ixbadh");
    static char ids[NM][ST_MSG_ID_MAX];
    st_store_t *st = open_ix(dir, 64, 0);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    send_many(st, 0, 1000, 0, ids);
    settle(st);
    st_close(st);
    CU_ASSERT(damage_runs(dir, true) > 0);
    st = open_ix(dir, 64, 0);
    CU_ASSERT_EQUAL(found_ids(st, ids, 1000, 1), 1000);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

/* Block damage: a lookup reads the block, reports it and skips the run;
 * no snapshot is kept, so the next start rebuilds the index. */
static void test_corrupt_run_block(void)
{
    char *dir = tu_tmpdir("ixbadb"), p[1100];
    static char ids[NM][ST_MSG_ID_MAX];
    st_store_t *st = open_ix(dir, 64, 0);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    send_many(st, 0, 1000, 0, ids);
    settle(st);
    st_close(st);
    CU_ASSERT(damage_runs(dir, false) > 0);
    st = open_ix(dir, 64, 0);
    CU_ASSERT(found_ids(st, ids, 1000, 1) < 1000); /* those in the run */
    CU_ASSERT_EQUAL(st_local_snapshot(st), GT_ECORRUPT);
    st_close(st);
    snprintf(p, sizeof(p), "%s/tables.snap", dir);
    CU_ASSERT_EQUAL(access(p, F_OK), -1);
    st = open_ix(dir, 64, 0);
    CU_ASSERT_EQUAL(found_ids(st, ids, 1000, 1), 1000);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

/* A start after a crash that follows merges: the last snapshot names runs
 * merged away since, whose files must still be there (they go only after
 * the next snapshot), and the runs made after it are dropped and rebuilt
 * from the scan.  The child stops with _exit (no close, no snapshot). */
static void test_crash_after_merge(void)
{
    char *dir = tu_tmpdir("ixcrash");
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        st_store_t *st = open_ix(dir, 64, 0);
        if (tu_topic(st, "T", 1) != GT_OK)
            _exit(2);
        send_many(st, 0, 1000, 100000, NULL); /* keys k0..k999 */
        settle(st);
        tu_wait_synced(st);
        if (st_local_snapshot(st) != GT_OK)
            _exit(3);
        send_many(st, 1000, 1000, 100000, NULL);
        st_index_info_t i = settle(st);
        tu_wait_synced(st);
        _exit(i.dead_runs > 0 ? 0 : 4); /* merged since the snapshot */
    }
    int status = 0;
    CU_ASSERT_EQUAL_FATAL(waitpid(pid, &status, 0), pid);
    CU_ASSERT_FATAL(WIFEXITED(status));
    CU_ASSERT_EQUAL_FATAL(WEXITSTATUS(status), 0);
    st_store_t *st = open_ix(dir, 64, 0);
    st_index_info_t i;
    st_local_index_info(st, &i);
    CU_ASSERT(i.loaded); /* the listed runs were all there */
    int found = 0;
    for (int x = 0; x < 2000; x++) {
        char key[16];
        tu_msg_t m[ST_POP_MAX];
        size_t k;
        snprintf(key, sizeof(key), "k%d", x);
        found += tu_lookup(st, true, "T", key, m, &k) == GT_OK && k == 1;
    }
    CU_ASSERT_EQUAL(found, 2000);
    i = settle(st);
    CU_ASSERT_EQUAL(i.run_entries + i.mem_entries, 4000); /* id + key each */
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

/* Run files that cannot be written (ENOSPC at their creation): the full
 * tables stay in memory and are searched, the index thread retries, and
 * once the disk takes them again they become runs. */
static atomic_bool ix_fail;
static atomic_int ix_refused;

static int f_open(void *ctx, const char *path, int flags, int mode)
{
    if (atomic_load(&ix_fail) && strstr(path, ".run.tmp")) {
        atomic_fetch_add(&ix_refused, 1);
        return -ENOSPC;
    }
    return st_posix_file_ops.open(ctx, path, flags, mode);
}

static void test_run_write_fails(void)
{
    st_file_ops_t ops = st_posix_file_ops;
    ops.open = f_open;
    char *dir = tu_tmpdir("ixfull");
    static char ids[NM][ST_MSG_ID_MAX];
    st_config_t c;
    st_store_t *st = NULL;
    tu_config(&c, dir, ST_FLUSH_ASYNC);
    c.index_mem_entries = 64;
    c.file_ops = &ops;
    CU_ASSERT_FATAL(tu_open_cfg(&c, &st) == GT_OK);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    atomic_store(&ix_fail, true);
    send_many(st, 0, 500, 0, ids);
    while (atomic_load(&ix_refused) == 0)
        tu_sleep_ms(2);
    st_index_info_t i;
    st_local_index_info(st, &i);
    CU_ASSERT_EQUAL(i.runs, 0);
    CU_ASSERT_EQUAL(i.mem_entries, 500); /* frozen tables, still searched */
    CU_ASSERT_EQUAL(found_ids(st, ids, 500, 1), 500);
    atomic_store(&ix_fail, false);
    i = settle(st); /* the retry (a second later) writes them */
    CU_ASSERT(i.runs >= 1);
    CU_ASSERT_EQUAL(i.run_entries + i.mem_entries, 500);
    CU_ASSERT_EQUAL(found_ids(st, ids, 500, 1), 500);
    st_close(st);
    CU_ASSERT_FATAL(tu_open_cfg(&c, &st) == GT_OK);
    CU_ASSERT_EQUAL(found_ids(st, ids, 500, 1), 500);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

/* 1M appends with the default-sized tables' little sibling (8192 entries:
 * 122 flushes, runs up to level 3); 1,000 ids spread over them are found,
 * before and after a reopen. */
static void test_million(void)
{
    enum { N = 1000000 };
    char *dir = tu_tmpdir("ixmillion");
    static char ids[N][ST_MSG_ID_MAX];
    st_store_t *st = open_ix(dir, 8192, 64u << 20);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    send_many(st, 0, N, 0, ids);
    st_index_info_t i = settle(st);
    CU_ASSERT_EQUAL(i.run_entries + i.mem_entries, N);
    CU_ASSERT(i.runs <= 3 * 4);
    CU_ASSERT_EQUAL(found_ids(st, ids, N, N / 1000), 1000);
    st_close(st);
    st = open_ix(dir, 8192, 64u << 20);
    CU_ASSERT_EQUAL(found_ids(st, ids, N, N / 1000), 1000);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    CU_TestInfo tests[] = {
        {"memory_runs_reopen", test_memory_runs_reopen},
        {"key_newest_first", test_key_newest_first},
        {"retention_drops_runs", test_retention_drops_runs},
        {"corrupt_run_header", test_corrupt_run_header},
        {"corrupt_run_block", test_corrupt_run_block},
        {"crash_after_merge", test_crash_after_merge},
        {"run_write_fails", test_run_write_fails},
        {"million", test_million},
        CU_TEST_INFO_NULL,
    };
    return tu_run("index", tests);
}
