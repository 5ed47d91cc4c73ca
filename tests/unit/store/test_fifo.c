/* FIFO groups through the window index (store/st_fifo.c): per message
 * group order over a backlog much larger than a pop, with acks out of
 * order; a dead-lettered head unblocks its group; an offset reset restarts
 * the window; a changed invisible time moves a head's redelivery; batches
 * of consecutive messages of a group, held from other consumers while any
 * of them is in flight, redelivered from the lowest unacked one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tu.h"

static char *dir;
static st_store_t *st;

static void setup(void)
{
    dir = tu_tmpdir("fifo");
    st = tu_open(dir, ST_FLUSH_ASYNC);
}

static void teardown(void)
{
    st_close(st);
    st = NULL;
    tu_rmrf(dir);
    free(dir);
}

enum { NG = 7, PER = 300 };

static void send_all(const char *topic)
{
    static st_message_t m[NG * PER];
    static char bodies[NG * PER][16], groups[NG][8];
    for (int g = 0; g < NG; g++)
        snprintf(groups[g], sizeof(groups[g]), "g%d", g);
    for (int i = 0; i < NG * PER; i++) {
        int g = (i * 5 + i / 3) % NG; /* uneven interleaving */
        memset(&m[i], 0, sizeof(m[i]));
        m[i].queue_id = 0;
        m[i].msg_group = groups[g];
        m[i].body = bodies[i];
        m[i].body_len = (uint32_t)strlen(bodies[i]);
    }
    int next[NG] = {0};
    for (int i = 0; i < NG * PER; i++) {
        int g = (i * 5 + i / 3) % NG;
        snprintf(bodies[i], sizeof(bodies[i]), "%d-%d", g, next[g]++);
        m[i].body_len = (uint32_t)strlen(bodies[i]);
    }
    for (int i = 0; i < NG * PER; i += 100) {
        size_t k = NG * PER - i < 100 ? (size_t)(NG * PER - i) : 100;
        gt_err_t rc = tu_send_n(st, topic, &m[i], k, NULL);
        if (rc != GT_OK)
            fprintf(stderr, "send: %s\n", gt_err_str(rc));
        CU_ASSERT_EQUAL_FATAL(rc, GT_OK);
    }
}

/* Every message once, each group in order: a pop hands out consecutive
 * messages of a group, and none of a group whose messages are in flight;
 * acks of a batch in reverse order (out of order within a group). */
static void test_order(void)
{
    static tu_msg_t m[32];
    int next[NG] = {0}, got = 0;
    size_t n;
    setup();
    CU_ASSERT_EQUAL(tu_topic(st, "F", 1), GT_OK);
    CU_ASSERT_EQUAL(tu_fifo_group(st, "FG"), GT_OK);
    send_all("F");
    while (got < NG * PER) {
        CU_ASSERT_EQUAL_FATAL(tu_pop_simple(st, "FG", "F", "*", 32, 600000,
                                            m, &n), GT_OK);
        CU_ASSERT_FATAL(n > 0);
        for (size_t i = 0; i < n; i++) {
            int g, k;
            CU_ASSERT_EQUAL_FATAL(sscanf(m[i].body, "%d-%d", &g, &k), 2);
            CU_ASSERT_EQUAL(k, next[g]);
            next[g] = k + 1;
            CU_ASSERT_EQUAL(m[i].attempt, 1);
        }
        for (size_t i = n; i-- > 0;)
            CU_ASSERT_EQUAL(tu_ack(st, "FG", "F", m[i].handle), GT_OK);
        got += (int)n;
    }
    CU_ASSERT_EQUAL(got, NG * PER);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "FG", "F", "*", 32, 600000, m, &n),
                    GT_OK);
    CU_ASSERT_EQUAL(n, 0);
    /* an offset reset restarts the window from there, in order again */
    CU_ASSERT_EQUAL(tu_offset_update(st, "FG", "F", 0, 0), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "FG", "F", "*", 32, 600000, m, &n),
                    GT_OK);
    CU_ASSERT_EQUAL(n, 32);
    memset(next, 0, sizeof(next));
    for (size_t i = 0; i < n; i++) {
        int g, k;
        CU_ASSERT_EQUAL(sscanf(m[i].body, "%d-%d", &g, &k), 2);
        CU_ASSERT_EQUAL(k, next[g]);
        next[g] = k + 1;
    }
    teardown();
}

/* A head past its delivery attempts goes to the DLQ and its group goes
 * on; a head whose invisible time is shortened comes back first. */
static void test_dlq_and_change(void)
{
    tu_msg_t m[8], h[8];
    size_t n;
    setup();
    CU_ASSERT_EQUAL(tu_topic(st, "F", 1), GT_OK);
    st_group_t g = {.name = "FG", .max_delivery_attempts = 1, .fifo = true};
    CU_ASSERT_EQUAL(tu_group_put(st, &g), GT_OK);
    st_message_t s[3];
    const char *b[] = {"a1", "a2", "b1"};
    for (int i = 0; i < 3; i++) {
        memset(&s[i], 0, sizeof(s[i]));
        s[i].queue_id = 0;
        s[i].msg_group = i < 2 ? "a" : "b";
        s[i].body = b[i];
        s[i].body_len = 2;
    }
    CU_ASSERT_EQUAL(tu_send_n(st, "F", s, 3, NULL), GT_OK);
    /* a pop of one: a1; the next skips a2 (its group is in flight) */
    CU_ASSERT_EQUAL(tu_pop_simple(st, "FG", "F", "*", 1, 600000, m, &n),
                    GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "FG", "F", "*", 8, 600000, m + 1, &n),
                    GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_STRING_EQUAL(m[0].body, "a1");
    CU_ASSERT_STRING_EQUAL(m[1].body, "b1");
    /* a1 expires at once: one attempt allowed, so it is dead-lettered and
     * a2 follows (wait for it: the DLQ append completes on another
     * thread) */
    CU_ASSERT_EQUAL(tu_change(st, "FG", "F", m[0].handle, 1, NULL), GT_OK);
    do {
        tu_sleep_ms(1);
        CU_ASSERT_EQUAL_FATAL(tu_pop_simple(st, "FG", "F", "*", 8, 600000,
                                            h, &n), GT_OK);
    } while (n == 0);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_STRING_EQUAL(h[0].body, "a2");
    CU_ASSERT_EQUAL(tu_pull(st, "%DLQ%FG", 0, 0, 8, m + 2, &n, NULL), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_STRING_EQUAL(m[2].body, "a1");
    /* b1 acked: nothing else is due */
    CU_ASSERT_EQUAL(tu_ack(st, "FG", "F", m[1].handle), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "FG", "F", "*", 8, 600000, m, &n),
                    GT_OK);
    CU_ASSERT_EQUAL(n, 0);
    teardown();
}

static void send_groups(const char *const *bodies, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        st_message_t m;
        char grp[2] = {bodies[i][0], '\0'};
        memset(&m, 0, sizeof(m));
        m.queue_id = 0;
        m.msg_group = grp;
        m.body = bodies[i];
        m.body_len = (uint32_t)strlen(bodies[i]);
        CU_ASSERT_EQUAL_FATAL(tu_send_n(st, "F", &m, 1, NULL), GT_OK);
    }
}

static void expect(const tu_msg_t *m, size_t n, const char *const *bodies,
                   const uint32_t *attempts, size_t want)
{
    CU_ASSERT_EQUAL_FATAL(n, want);
    for (size_t i = 0; i < n; i++) {
        CU_ASSERT_STRING_EQUAL(m[i].body, bodies[i]);
        CU_ASSERT_EQUAL(m[i].attempt, attempts[i]);
    }
}

/* A pop hands out consecutive messages of a group together, in order;
 * while any of them is unacked, no other pop gets a later message of the
 * group; after they expire the group restarts from its lowest unacked
 * message; an entry behind the head whose invisible time was extended
 * keeps its group busy until it is acked or expires. */
static void test_batch(void)
{
    static const char *const sent[] = {"a0", "a1", "b0", "a2", "b1", "a3"};
    static const uint32_t one[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    tu_msg_t m[8], h[8], x[8];
    size_t n;
    tu_clock_start();
    setup();
    CU_ASSERT_EQUAL(tu_topic(st, "F", 1), GT_OK);
    CU_ASSERT_EQUAL(tu_fifo_group(st, "FG"), GT_OK);
    send_groups(sent, 6);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "FG", "F", "*", 3, 60000, m, &n), GT_OK);
    expect(m, n, (const char *const[]){"a0", "a1", "b0"}, one, 3);
    /* another consumer: a and b have messages in flight */
    CU_ASSERT_EQUAL(tu_pop_simple(st, "FG", "F", "*", 8, 60000, h, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(tu_ack(st, "FG", "F", m[0].handle), GT_OK); /* a0 */
    CU_ASSERT_EQUAL(tu_pop_simple(st, "FG", "F", "*", 8, 60000, h, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0); /* a1 still in flight */
    CU_ASSERT_EQUAL(tu_ack(st, "FG", "F", m[1].handle), GT_OK); /* a1 */
    CU_ASSERT_EQUAL(tu_pop_simple(st, "FG", "F", "*", 8, 60000, h, &n), GT_OK);
    expect(h, n, (const char *const[]){"a2", "a3"}, one, 2);
    /* acked out of order: a3 first, the group waits for a2 */
    CU_ASSERT_EQUAL(tu_ack(st, "FG", "F", h[1].handle), GT_OK);
    CU_ASSERT_EQUAL(tu_ack(st, "FG", "F", h[0].handle), GT_OK);
    /* b0 expires: b restarts from it, b1 with it */
    tu_clock_advance(st, 60000);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "FG", "F", "*", 8, 1000, h, &n), GT_OK);
    expect(h, n, (const char *const[]){"b0", "b1"},
           (const uint32_t[]){2, 1}, 2);
    /* b1 kept invisible longer: b0's expiry alone does not free b */
    CU_ASSERT_EQUAL(tu_change(st, "FG", "F", h[1].handle, 5000, NULL), GT_OK);
    tu_clock_advance(st, 1500);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "FG", "F", "*", 8, 1000, x, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0);
    tu_clock_advance(st, 4000);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "FG", "F", "*", 8, 60000, x, &n), GT_OK);
    expect(x, n, (const char *const[]){"b0", "b1"},
           (const uint32_t[]){3, 2}, 2);
    /* out-of-order again: b1 acked, b0 not: b stays busy until b0 is */
    CU_ASSERT_EQUAL(tu_ack(st, "FG", "F", x[1].handle), GT_OK);
    send_groups((const char *const[]){"b2"}, 1);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "FG", "F", "*", 8, 60000, h, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(tu_ack(st, "FG", "F", x[0].handle), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "FG", "F", "*", 8, 60000, h, &n), GT_OK);
    expect(h, n, (const char *const[]){"b2"}, one, 1);
    teardown();
    tu_clock_stop();
}

static const CU_TestInfo tests[] = {
    {"order", test_order},
    {"dlq_and_change", test_dlq_and_change},
    {"batch", test_batch},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return tu_run("fifo", tests);
}
