/* Pops that take a topic's queues as priority levels (st_pop_req_t
 * high_first, for AMQP's x-max-priority): the highest queue id first, each
 * drained -- its given-back deliveries, then its new messages -- before
 * the next lower one; FIFO within a level; a restart keeps the order; a
 * message appended to several topics (st_append_multi) lands in the level
 * its destination names.  The test clock stands still throughout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tu.h"

#define LONG_MS 600000

static gt_err_t pop_hi(st_store_t *st, const char *t, uint32_t max, tu_msg_t *out, size_t *n)
{
    st_pop_req_t req = {.group = "G", .topic = t, .queue_id = ST_QUEUE_ANY,
                        .high_first = true, .max = max,
                        .invisible_ms = LONG_MS};
    return tu_pop(st, &req, out, n);
}

static void send(st_store_t *st, const char *t, const char *body, int32_t q)
{
    CU_ASSERT_EQUAL_FATAL(tu_send(st, t, "t", NULL, body, q, NULL), GT_OK);
}

static void expect(const tu_msg_t *out, size_t n, const char *const *want,
                   const uint32_t *attempt, size_t nwant)
{
    CU_ASSERT_EQUAL_FATAL(n, nwant);
    for (size_t i = 0; i < nwant; i++) {
        if (strcmp(out[i].body, want[i]) != 0)
            fprintf(stderr, "  #%zu: got %s, want %s\n", i, out[i].body, want[i]);
        CU_ASSERT_STRING_EQUAL(out[i].body, want[i]);
        CU_ASSERT_EQUAL(out[i].attempt, attempt ? attempt[i] : 1u);
    }
}

static void test_levels(void)
{
    char *dir = tu_tmpdir("prio_levels");
    tu_clock_start();
    st_store_t *st = tu_open(dir, ST_FLUSH_SYNC);
    tu_msg_t out[40];
    size_t n;
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 4), GT_OK);
    CU_ASSERT_EQUAL_FATAL(tu_group(st, "G", 100, ST_CONSUME_FROM_FIRST), GT_OK);
    send(st, "T", "a0", 0);
    send(st, "T", "a1", 0);
    send(st, "T", "d0", 3);
    send(st, "T", "b0", 1);
    send(st, "T", "d1", 3);
    send(st, "T", "c0", 2);
    /* a batch stops inside a level; the next pop goes on from there */
    CU_ASSERT_EQUAL(pop_hi(st, "T", 3, out, &n), GT_OK);
    expect(out, n, (const char *[]){"d0", "d1", "c0"}, NULL, 3);
    CU_ASSERT_EQUAL(pop_hi(st, "T", 2, out + 3, &n), GT_OK);
    expect(out + 3, n, (const char *[]){"b0", "a0"}, NULL, 2);
    /* given back: each in its level, ahead of that level's newer ones,
     * behind every higher level's */
    CU_ASSERT_EQUAL(tu_change(st, "G", "T", out[4].handle, 0, NULL), GT_OK); /* a0 */
    CU_ASSERT_EQUAL(tu_change(st, "G", "T", out[2].handle, 0, NULL), GT_OK); /* c0 */
    send(st, "T", "c1", 2);
    send(st, "T", "b1", 1);
    send(st, "T", "d2", 3);
    CU_ASSERT_EQUAL(pop_hi(st, "T", 32, out, &n), GT_OK);
    expect(out, n, (const char *[]){"d2", "c0", "c1", "b1", "a0", "a1"},
           (const uint32_t[]){1, 2, 1, 1, 2, 1}, 6);
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_EQUAL(tu_ack(st, "G", "T", out[i].handle), GT_OK);
    /* a backlog in a low level does not crowd out a high one (the
     * prefetch reads the high level first) */
    for (int i = 0; i < 40; i++) {
        char b[16];
        snprintf(b, sizeof(b), "low%d", i);
        send(st, "T", b, 0);
    }
    send(st, "T", "hi0", 3);
    send(st, "T", "mid0", 1);
    CU_ASSERT_EQUAL(pop_hi(st, "T", 32, out, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 32);
    CU_ASSERT_STRING_EQUAL(out[0].body, "hi0");
    CU_ASSERT_STRING_EQUAL(out[1].body, "mid0");
    CU_ASSERT_STRING_EQUAL(out[2].body, "low0");
    CU_ASSERT_STRING_EQUAL(out[31].body, "low29");
    /* a restart: the in-flight ones come back in their levels, in order */
    for (size_t i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(tu_change(st, "G", "T", out[i].handle, 0, NULL), GT_OK);
    for (size_t i = 3; i < 32; i++)
        CU_ASSERT_EQUAL(tu_ack(st, "G", "T", out[i].handle), GT_OK);
    send(st, "T", "hi1", 3);
    st_close(st);
    st = tu_open(dir, ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL(pop_hi(st, "T", 5, out, &n), GT_OK);
    expect(out, n, (const char *[]){"hi0", "hi1", "mid0", "low0", "low30"},
           (const uint32_t[]){2, 1, 2, 2, 1}, 5);
    /* one queue of the topic named: that queue only, as before */
    send(st, "T", "hi2", 3);
    st_pop_req_t one = {.group = "G", .topic = "T", .queue_id = 0, .high_first = true,
                        .max = 1, .invisible_ms = LONG_MS};
    CU_ASSERT_EQUAL(tu_pop(st, &one, out, &n), GT_OK);
    expect(out, n, (const char *[]){"low31"}, NULL, 1);
    st_close(st);
    tu_clock_stop();
    tu_rmrf(dir);
    free(dir);
}

/* One record for two priority topics, each entry in its own level. */
static void test_multi_levels(void)
{
    char *dir = tu_tmpdir("prio_multi");
    tu_clock_start();
    st_store_t *st = tu_open(dir, ST_FLUSH_SYNC);
    tu_msg_t out[8];
    size_t n;
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "A", 3), GT_OK);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "B", 2), GT_OK);
    send(st, "A", "a-low", 0);
    send(st, "B", "b-low", 0);
    st_message_t m;
    memset(&m, 0, sizeof(m));
    m.tag = "t";
    m.body = "both";
    m.body_len = 4;
    st_dest_t d[2] = {{.topic = "A", .queue_id = 2}, {.topic = "B", .queue_id = 1}};
    st_append_item_t items[2];
    CU_ASSERT_EQUAL_FATAL(tu_send_multi(st, &m, d, 2, items), GT_OK);
    CU_ASSERT_EQUAL(items[0].queue_id, 2);
    CU_ASSERT_EQUAL(items[1].queue_id, 1);
    CU_ASSERT_EQUAL(pop_hi(st, "A", 8, out, &n), GT_OK);
    expect(out, n, (const char *[]){"both", "a-low"}, NULL, 2);
    CU_ASSERT_EQUAL(pop_hi(st, "B", 8, out, &n), GT_OK);
    expect(out, n, (const char *[]){"both", "b-low"}, NULL, 2);
    st_close(st);
    tu_clock_stop();
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    static const CU_TestInfo tests[] = {
        {"high_first: levels in order, FIFO within, requeue, restart", test_levels},
        {"high_first: one record in two topics' levels", test_multi_levels},
        CU_TEST_INFO_NULL,
    };
    return tu_run("store_prio", tests);
}
