/* The table snapshot written in chunks: one over many entries (consume
 * queue entries live in their files, so its size no longer grows with
 * them) is used by the next start (shown by a damaged record under it, which only a
 * start that trusts the snapshot gets past), and one written while appends
 * run (the lock dropped between chunks) loads consistently: with the tail
 * scanned after it, every message and every key is found. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tu.h"

#define N 40000

static gt_err_t send_batch(st_store_t *st, int from, int n, const char *key)
{
    st_message_t m[64];
    char bodies[64][16];
    memset(m, 0, sizeof(m));
    for (int i = 0; i < n; i++) {
        snprintf(bodies[i], sizeof(bodies[i]), "b%d", from + i);
        m[i].tag = "t";
        m[i].body = bodies[i];
        m[i].body_len = (uint32_t)strlen(bodies[i]) + 1;
        m[i].queue_id = (from + i) % 4;
        m[i].keys[0] = key;
        m[i].nkeys = 1;
    }
    return tu_send_n(st, "T", m, (size_t)n, NULL);
}

static uint64_t count_all(st_store_t *st)
{
    st_stats_t s;
    CU_ASSERT_EQUAL(tu_stats(st, "T", NULL, &s), GT_OK);
    return s.messages;
}

static void test_big_snapshot_used(void)
{
    char *dir = tu_tmpdir("snapbig"), p[1100];
    st_store_t *st = tu_open(dir, ST_FLUSH_ASYNC);
    st_append_item_t it;
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 4), GT_OK);
    CU_ASSERT_EQUAL_FATAL(tu_send(st, "T", "t", "first", "victim", 0, &it), GT_OK);
    for (int i = 0; i < N; i += 64)
        CU_ASSERT_EQUAL_FATAL(send_batch(st, i, 64, "many"), GT_OK);
    st_close(st);
    snprintf(p, sizeof(p), "%s/tables.snap", dir);
    CU_ASSERT(tu_file_size(p) > 0);
    /* damage the first record's body: below the synced position, so only a
     * start that loads the snapshot (and does not re-read) gets past it */
    snprintf(p, sizeof(p), "%s/commitlog/00000000000000000000", dir);
    size_t len;
    uint8_t *b = tu_read_file(p, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    b[it.position + 80] ^= 0x01;
    tu_write_file(p, b, len);
    free(b);
    st_store_t *st2 = NULL;
    st_config_t c;
    tu_config(&c, dir, ST_FLUSH_ASYNC);
    CU_ASSERT_EQUAL_FATAL(st_local_open(&c, &st2), GT_OK);
    CU_ASSERT_EQUAL(count_all(st2), (uint64_t)N + 1);
    tu_msg_t m[4];
    size_t n;
    uint64_t next;
    CU_ASSERT_EQUAL(tu_pull(st2, "T", 0, 0, 1, m, &n, &next), GT_ECORRUPT);
    st_close(st2);
    tu_rmrf(dir);
    free(dir);
}

typedef struct sender {
    st_store_t *st;
    int from, n;
    gt_err_t rc;
} sender_t;

static void *sender_main(void *arg)
{
    sender_t *s = arg;
    for (int i = 0; i < s->n && s->rc == GT_OK; i += 64)
        s->rc = send_batch(s->st, s->from + i, 64, "late");
    return NULL;
}

static void test_snapshot_during_appends(void)
{
    char *dir = tu_tmpdir("snaprace"), p[1100], keep[1100];
    st_store_t *st = tu_open(dir, ST_FLUSH_ASYNC);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 4), GT_OK);
    for (int i = 0; i < N; i += 64)
        CU_ASSERT_EQUAL_FATAL(send_batch(st, i, 64, "early"), GT_OK);
    tu_wait_synced(st); /* async: a snapshot covers what was synced */
    sender_t s = {.st = st, .from = N, .n = N};
    pthread_t th;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, sender_main, &s), 0);
    int written = 0;
    snprintf(p, sizeof(p), "%s/tables.snap", dir);
    snprintf(keep, sizeof(keep), "%s/tables.mid", dir);
    for (int k = 0; k < 5; k++) { /* while the sender runs */
        if (st_local_snapshot(st) == GT_OK) {
            tu_copy_file(p, keep);
            written++;
        }
    }
    pthread_join(th, NULL);
    CU_ASSERT_EQUAL(s.rc, GT_OK);
    CU_ASSERT(written > 0);
    st_close(st);
    /* restart from a snapshot taken mid-run: the tail scan adds the rest */
    tu_copy_file(keep, p);
    st = tu_open(dir, ST_FLUSH_ASYNC);
    CU_ASSERT_EQUAL(count_all(st), 2ull * N);
    static tu_msg_t m[ST_POP_MAX]; /* tu_lookup fills up to ST_POP_MAX */
    size_t n;
    CU_ASSERT_EQUAL(tu_lookup(st, true, "T", "early", m, &n), GT_OK);
    CU_ASSERT(n > 0);
    CU_ASSERT_EQUAL(tu_lookup(st, true, "T", "late", m, &n), GT_OK);
    CU_ASSERT(n > 0);
    for (uint32_t q = 0; q < 4; q++) { /* offsets contiguous in every queue */
        uint64_t off = 0, next;
        size_t k, total = 0;
        tu_msg_t pm[8];
        do {
            CU_ASSERT_EQUAL_FATAL(tu_pull(st, "T", q, off, 8, pm, &k, &next), GT_OK);
            for (size_t i = 0; i < k; i++)
                CU_ASSERT_EQUAL(pm[i].offset, off + i);
            total += k;
            off = next;
        } while (k > 0 && total < 2 * N);
        CU_ASSERT_EQUAL(total, (size_t)(2 * N / 4));
    }
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

static const CU_TestInfo tests[] = {
    {"big_snapshot_used", test_big_snapshot_used},
    {"snapshot_during_appends", test_snapshot_during_appends},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return tu_run("snap", tests);
}
