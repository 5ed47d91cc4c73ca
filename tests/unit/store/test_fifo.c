/* FIFO groups through the window index (store/st_fifo.c): per message
 * group order over a backlog much larger than a pop, with acks out of
 * order; a dead-lettered head unblocks its group; an offset reset restarts
 * the window; a changed invisible time moves a head's redelivery. */
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

/* Every message once, each group in order, never two of a group in
 * flight; acks of a batch in reverse order. */
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
        bool seen[NG] = {false};
        for (size_t i = 0; i < n; i++) {
            int g, k;
            CU_ASSERT_EQUAL_FATAL(sscanf(m[i].body, "%d-%d", &g, &k), 2);
            CU_ASSERT_FALSE(seen[g]);
            seen[g] = true;
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
    CU_ASSERT_EQUAL(n, NG);
    for (size_t i = 0; i < n; i++) {
        int g, k;
        CU_ASSERT_EQUAL(sscanf(m[i].body, "%d-%d", &g, &k), 2);
        CU_ASSERT_EQUAL(k, 0);
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
    CU_ASSERT_EQUAL(tu_pop_simple(st, "FG", "F", "*", 8, 600000, m, &n),
                    GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 2);
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

static const CU_TestInfo tests[] = {
    {"order", test_order},
    {"dlq_and_change", test_dlq_and_change},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return tu_run("fifo", tests);
}
