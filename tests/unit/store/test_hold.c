/* Held messages through the public API: transactions (half messages,
 * commit, rollback, the pending listing with its per-message override,
 * checks and discard), delayed messages (timers: order, FIFO placement,
 * committed offsets, retention) and recall, each across clean restarts,
 * state log compaction and table snapshots. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tu.h"

static char *dir;
static st_store_t *st;

static void setup(void)
{
    dir = tu_tmpdir("hold");
    st = tu_open(dir, ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 2), GT_OK);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "U", 1), GT_OK);
}

static void reopen(void)
{
    st_close(st);
    st = tu_open(dir, ST_FLUSH_SYNC);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
}

static void teardown(void)
{
    st_close(st);
    st = NULL;
    tu_rmrf(dir);
    free(dir);
}

/* Pops everything visible to group G on topic, acking it; returns count
 * and fills bodies (concatenated, ',' separated). */
static size_t drain(const char *topic, char *bodies, size_t cap)
{
    tu_msg_t m[ST_POP_MAX];
    size_t n, total = 0;
    if (bodies)
        bodies[0] = 0;
    do {
        CU_ASSERT_EQUAL(tu_pop_simple(st, "G", topic, "*", ST_POP_MAX, 60000,
                                      m, &n), GT_OK);
        for (size_t i = 0; i < n; i++) {
            if (bodies && strlen(bodies) + strlen(m[i].body) + 2 < cap) {
                strcat(bodies, m[i].body);
                strcat(bodies, ",");
            }
            CU_ASSERT_EQUAL(tu_ack(st, "G", topic, m[i].handle), GT_OK);
        }
        total += n;
    } while (n > 0);
    return total;
}

/* Drains until `want` messages came (or 60 s passed); returns the count.
 * Timers fire on the service thread once the test clock passed their time
 * (tu_clock_advance); their copies are appended on the way. */
static size_t drain_wait(const char *topic, size_t want, char *bodies,
                         size_t cap)
{
    size_t total = 0;
    char b[256];
    if (bodies)
        bodies[0] = 0;
    for (int i = 0; i < 3000 && total < want; i++) {
        size_t n = drain(topic, b, sizeof(b));
        if (bodies && strlen(bodies) + strlen(b) < cap)
            strcat(bodies, b);
        total += n;
        if (total < want)
            tu_sleep_ms(20);
    }
    return total;
}

static bool has_prop(const tu_msg_t *m, const char *k, const char *v)
{
    for (uint32_t i = 0; i < m->nprops; i++)
        if (strcmp(m->pk[i], k) == 0 && (!v || strcmp(m->pv[i], v) == 0))
            return true;
    return false;
}

static bool internal_props(const tu_msg_t *m)
{
    for (uint32_t i = 0; i < m->nprops; i++)
        if (m->pk[i][0] == '\x01' && strcmp(m->pk[i], ST_PROP_TXCHECK) != 0)
            return true;
    return false;
}

static void test_tx_commit(void)
{
    st_append_item_t it;
    tu_msg_t m[4];
    size_t n;
    st_stats_t s;
    char b[256];
    setup();
    CU_ASSERT_EQUAL_FATAL(tu_send_held(st, "T", "h1", 0, true, NULL, &it),
                          GT_OK);
    CU_ASSERT(it.msg_id[0] != 0);
    CU_ASSERT(it.queue_id < 2);
    CU_ASSERT_EQUAL(it.queue_offset, 0);
    /* invisible: pop, pull, lookups, stats */
    CU_ASSERT_EQUAL(drain("T", NULL, 0), 0);
    for (uint32_t q = 0; q < 2; q++) {
        CU_ASSERT_EQUAL(tu_pull(st, "T", q, 0, 4, m, &n, NULL), GT_OK);
        CU_ASSERT_EQUAL(n, 0);
    }
    CU_ASSERT_EQUAL(tu_lookup(st, false, NULL, it.msg_id, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(tu_lookup(st, false, "T", it.msg_id, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(tu_lookup(st, true, NULL, "h1", m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(tu_stats(st, "T", NULL, &s), GT_OK);
    CU_ASSERT_EQUAL(s.messages, 0);
    /* commit: visible once, with its id and properties */
    CU_ASSERT_EQUAL(tu_tx_end(st, "U", it.msg_id, true), GT_ENOTFOUND);
    CU_ASSERT_EQUAL(tu_tx_end(st, "T", it.msg_id, true), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 4, 60000, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_STRING_EQUAL(m[0].body, "h1");
    CU_ASSERT_STRING_EQUAL(m[0].id, it.msg_id);
    CU_ASSERT_STRING_EQUAL(m[0].topic, "T");
    CU_ASSERT_EQUAL(m[0].queue, it.queue_id);
    CU_ASSERT(has_prop(&m[0], "color", "red"));
    CU_ASSERT_FALSE(internal_props(&m[0]));
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", m[0].handle), GT_OK);
    CU_ASSERT_EQUAL(tu_lookup(st, false, NULL, it.msg_id, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_EQUAL(tu_stats(st, "T", NULL, &s), GT_OK);
    CU_ASSERT_EQUAL(s.messages, 1);
    /* resolved: no second resolution */
    CU_ASSERT_EQUAL(tu_tx_end(st, "T", it.msg_id, true), GT_ENOTFOUND);
    CU_ASSERT_EQUAL(tu_tx_end(st, "T", it.msg_id, false), GT_ENOTFOUND);
    CU_ASSERT_EQUAL(drain("T", b, sizeof(b)), 0);
    /* system topics and groups are not listed, nor usable by clients */
    CU_ASSERT_EQUAL(tu_topic(st, "%SYS%HALF", 1), GT_EINVAL);
    CU_ASSERT_EQUAL(tu_group(st, "%SYS%HOLD", 3, ST_CONSUME_FROM_FIRST),
                    GT_EINVAL);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "%SYS%HOLD", "%SYS%HALF", "*", 4, 1000,
                                  m, &n), GT_EINVAL);
    CU_ASSERT_EQUAL(tu_send_held(st, "%SYS%HALF", "x", 0, true, NULL, NULL),
                    GT_EINVAL);
    teardown();
}

static void test_tx_rollback(void)
{
    st_append_item_t it, it2;
    tu_msg_t m[4];
    size_t n;
    setup();
    CU_ASSERT_EQUAL_FATAL(tu_send_held(st, "T", "r1", 0, true, NULL, &it),
                          GT_OK);
    CU_ASSERT_EQUAL_FATAL(tu_send_held(st, "T", "r2", 0, true, NULL, &it2),
                          GT_OK);
    CU_ASSERT_EQUAL(tu_tx_end(st, "T", "nope", true), GT_ENOTFOUND);
    CU_ASSERT_EQUAL(tu_tx_end(st, "T", "", true), GT_EINVAL);
    CU_ASSERT_EQUAL(tu_tx_end(st, "nope", it.msg_id, true), GT_ENOTFOUND);
    CU_ASSERT_EQUAL(tu_tx_end(st, "T", it.msg_id, false), GT_OK);
    CU_ASSERT_EQUAL(tu_tx_end(st, "T", it.msg_id, false), GT_ENOTFOUND);
    CU_ASSERT_EQUAL(tu_tx_end(st, "T", it.msg_id, true), GT_ENOTFOUND);
    CU_ASSERT_EQUAL(tu_tx_pending(st, 0, 8, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_STRING_EQUAL(m[0].id, it2.msg_id);
    CU_ASSERT_EQUAL(drain("T", NULL, 0), 0);
    CU_ASSERT_EQUAL(tu_tx_end(st, "T", it2.msg_id, true), GT_OK);
    char b[64];
    CU_ASSERT_EQUAL(drain("T", b, sizeof(b)), 1);
    CU_ASSERT_STRING_EQUAL(b, "r2,");
    CU_ASSERT_EQUAL(tu_tx_pending(st, 0, 8, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0);
    teardown();
}

static bool listed(const tu_msg_t *m, size_t n, const char *body)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(m[i].body, body) == 0)
            return true;
    return false;
}

static void test_tx_pending(void)
{
    st_append_item_t a, b, c;
    tu_msg_t m[8];
    size_t n;
    setup();
    CU_ASSERT_EQUAL(tu_tx_pending(st, 0, 8, m, &n), GT_OK); /* none yet */
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(tu_tx_pending(st, 0, 0, m, &n), GT_EINVAL);
    CU_ASSERT_EQUAL(tu_send_held(st, "T", "pa", 0, true, NULL, &a), GT_OK);
    tu_clock_advance(st, 1);
    CU_ASSERT_EQUAL(tu_send_held(st, "U", "pb", 0, true, "1000", &b), GT_OK);
    CU_ASSERT_EQUAL(tu_send_held(st, "T", "pc", 0, true, "100000", &c), GT_OK);
    CU_ASSERT_EQUAL(tu_tx_pending(st, 60000, 8, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0); /* all younger than their interval */
    tu_clock_advance(st, 999);
    CU_ASSERT_EQUAL(tu_tx_pending(st, 60000, 8, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0); /* pb is 999 ms old */
    tu_clock_advance(st, 1);
    CU_ASSERT_EQUAL(tu_tx_pending(st, 60000, 8, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1); /* pb's own 1000 ms override */
    CU_ASSERT_STRING_EQUAL(m[0].body, "pb");
    CU_ASSERT_STRING_EQUAL(m[0].topic, "U");
    CU_ASSERT_STRING_EQUAL(m[0].id, b.msg_id);
    CU_ASSERT_EQUAL(m[0].queue, b.queue_id);
    CU_ASSERT(has_prop(&m[0], "color", "red"));
    CU_ASSERT(has_prop(&m[0], ST_PROP_TXCHECK, "1000"));
    CU_ASSERT_FALSE(internal_props(&m[0]));
    CU_ASSERT_EQUAL(tu_tx_pending(st, 1000, 8, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT(listed(m, n, "pa") && listed(m, n, "pb"));
    CU_ASSERT_FALSE(listed(m, n, "pc"));
    CU_ASSERT_STRING_EQUAL(m[0].body, "pa"); /* oldest first */
    CU_ASSERT_EQUAL(tu_tx_pending(st, 0, 1, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 1);
    /* a check restarts the clock of that message only */
    CU_ASSERT_EQUAL(tu_tx_checked(st, "U", b.msg_id, 15), GT_OK);
    CU_ASSERT_EQUAL(tu_tx_checked(st, "T", b.msg_id, 15), GT_ENOTFOUND);
    CU_ASSERT_EQUAL(tu_tx_pending(st, 1000, 8, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_STRING_EQUAL(m[0].body, "pa");
    tu_clock_advance(st, 1000);
    CU_ASSERT_EQUAL(tu_tx_pending(st, 1000, 8, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 2);
    /* more than a pop's worth in one answer */
    static tu_msg_t many[64];
    for (int i = 0; i < 40; i++)
        CU_ASSERT_EQUAL(tu_send_held(st, "T", "more", 0, true, NULL, NULL),
                        GT_OK);
    CU_ASSERT_EQUAL(tu_tx_pending(st, 0, 64, many, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 42); /* pc waits for its own 100 s */
    CU_ASSERT_EQUAL(tu_tx_pending(st, 0, 10, many, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 10);
    for (size_t i = 0; i < 42; i++)
        if (strcmp(many[i].body, "more") == 0)
            CU_ASSERT_EQUAL(tu_tx_end(st, "T", many[i].id, false), GT_OK);
    /* resolved ones leave the listing */
    CU_ASSERT_EQUAL(tu_tx_end(st, "T", a.msg_id, true), GT_OK);
    CU_ASSERT_EQUAL(tu_tx_pending(st, 0, 8, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_STRING_EQUAL(m[0].body, "pb");
    teardown();
}

/* Two front ends sharing a store list the same due half message: the
 * check count it was listed with makes exactly one of them claim it. */
static void test_tx_claim(void)
{
    st_append_item_t a;
    tu_msg_t m[4];
    size_t n;
    setup();
    CU_ASSERT_EQUAL(tu_send_held(st, "T", "cl", 0, true, NULL, &a), GT_OK);
    CU_ASSERT_EQUAL(tu_tx_pending(st, 0, 8, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(m[0].tx_checks, 0);
    CU_ASSERT_EQUAL(tu_tx_claim(st, "T", a.msg_id, 0, 5), GT_OK);
    CU_ASSERT_EQUAL(tu_tx_claim(st, "T", a.msg_id, 0, 5), GT_EBUSY);
    CU_ASSERT_EQUAL(tu_tx_pending(st, 0, 8, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(m[0].tx_checks, 1);
    CU_ASSERT_EQUAL(tu_tx_claim(st, "T", a.msg_id, 2, 5), GT_EBUSY);
    CU_ASSERT_EQUAL(tu_tx_claim(st, "T", a.msg_id, 1, 2), GT_ERANGE);
    CU_ASSERT_EQUAL(tu_tx_claim(st, "T", a.msg_id, 2, 5), GT_ENOTFOUND);
    teardown();
}

static void test_tx_max_checks(void)
{
    st_append_item_t a;
    st_stats_t s;
    tu_msg_t m[4];
    size_t n;
    setup();
    CU_ASSERT_EQUAL(tu_send_held(st, "T", "mx", 0, true, NULL, &a), GT_OK);
    CU_ASSERT_EQUAL(tu_tx_checked(st, "T", a.msg_id, 3), GT_OK);
    CU_ASSERT_EQUAL(tu_tx_checked(st, "T", a.msg_id, 3), GT_OK);
    CU_ASSERT_EQUAL(tu_tx_checked(st, "T", a.msg_id, 3), GT_ERANGE);
    CU_ASSERT_EQUAL(tu_tx_checked(st, "T", a.msg_id, 3), GT_ENOTFOUND);
    CU_ASSERT_EQUAL(tu_tx_end(st, "T", a.msg_id, true), GT_ENOTFOUND);
    CU_ASSERT_EQUAL(tu_stats(st, "T", NULL, &s), GT_OK);
    CU_ASSERT_EQUAL(s.tx_discarded, 1);
    CU_ASSERT_EQUAL(s.messages, 0);
    CU_ASSERT_EQUAL(tu_tx_pending(st, 0, 8, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0);
    /* max_checks 0: no limit */
    CU_ASSERT_EQUAL(tu_send_held(st, "T", "nolimit", 0, true, NULL, &a),
                    GT_OK);
    for (int i = 0; i < 20; i++)
        CU_ASSERT_EQUAL(tu_tx_checked(st, "T", a.msg_id, 0), GT_OK);
    reopen(); /* the discard survives; check counts start again */
    CU_ASSERT_EQUAL(tu_tx_pending(st, 0, 8, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_STRING_EQUAL(m[0].body, "nolimit");
    CU_ASSERT_EQUAL(tu_tx_checked(st, "T", a.msg_id, 2), GT_OK);
    CU_ASSERT_EQUAL(tu_tx_checked(st, "T", a.msg_id, 2), GT_ERANGE);
    CU_ASSERT_EQUAL(drain("T", NULL, 0), 0);
    teardown();
}

static void test_tx_delayed_commit(void)
{
    st_append_item_t a, r;
    char b[64];
    setup();
    int64_t t0 = st_now_ms();
    CU_ASSERT_EQUAL(tu_send_held(st, "T", "later", t0 + 1500, true, NULL,
                                 &a), GT_OK);
    CU_ASSERT_EQUAL(tu_send_held(st, "T", "recalled", t0 + 1500, true, NULL,
                                 &r), GT_OK);
    CU_ASSERT_EQUAL(tu_recall(st, "T", r.msg_id), GT_ENOTFOUND); /* half */
    CU_ASSERT_EQUAL(tu_tx_end(st, "T", a.msg_id, true), GT_OK);
    CU_ASSERT_EQUAL(tu_tx_end(st, "T", r.msg_id, true), GT_OK);
    CU_ASSERT_EQUAL(drain("T", NULL, 0), 0); /* its delivery time rules */
    CU_ASSERT_EQUAL(tu_recall(st, "T", r.msg_id), GT_OK);
    tu_clock_advance(st, 1499);
    CU_ASSERT_EQUAL(drain("T", NULL, 0), 0); /* not before its time */
    tu_clock_advance(st, 1);
    CU_ASSERT_EQUAL(drain_wait("T", 1, b, sizeof(b)), 1);
    CU_ASSERT_STRING_EQUAL(b, "later,");
    tu_clock_advance(st, 100);
    CU_ASSERT_EQUAL(drain("T", NULL, 0), 0);
    teardown();
}

static void test_tx_restart(void)
{
    st_append_item_t it[6];
    const char *bodies[6] = {"a", "b", "c", "d", "e", "f"};
    tu_msg_t m[8];
    size_t n;
    char b[128];
    setup();
    for (int i = 0; i < 6; i++)
        CU_ASSERT_EQUAL_FATAL(tu_send_held(st, i % 2 ? "U" : "T", bodies[i],
                                           0, true, NULL, &it[i]), GT_OK);
    CU_ASSERT_EQUAL(tu_tx_end(st, "T", it[0].msg_id, true), GT_OK);
    CU_ASSERT_EQUAL(tu_tx_end(st, "U", it[1].msg_id, false), GT_OK);
    reopen(); /* clean close: table snapshot */
    CU_ASSERT_EQUAL(tu_tx_pending(st, 0, 8, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 4);
    CU_ASSERT_EQUAL(drain("T", b, sizeof(b)), 1);
    CU_ASSERT_STRING_EQUAL(b, "a,");
    CU_ASSERT_EQUAL(drain("U", NULL, 0), 0);
    CU_ASSERT_EQUAL(tu_tx_end(st, "U", it[1].msg_id, true), GT_ENOTFOUND);
    CU_ASSERT_EQUAL(tu_tx_end(st, "T", it[2].msg_id, true), GT_OK);
    CU_ASSERT_EQUAL(tu_tx_end(st, "U", it[3].msg_id, false), GT_OK);
    st_local_state_compact(st);
    /* no table snapshot this time: start-up scans the commitlog */
    st_close(st);
    char snap[1024];
    snprintf(snap, sizeof(snap), "%s/tables.snap", dir);
    unlink(snap);
    st = tu_open(dir, ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL(tu_tx_pending(st, 0, 8, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT(listed(m, n, "e") && listed(m, n, "f"));
    CU_ASSERT_EQUAL(drain("T", b, sizeof(b)), 1);
    CU_ASSERT_STRING_EQUAL(b, "c,");
    CU_ASSERT_EQUAL(tu_tx_end(st, "T", it[4].msg_id, true), GT_OK);
    CU_ASSERT_EQUAL(tu_tx_end(st, "U", it[5].msg_id, true), GT_OK);
    reopen();
    CU_ASSERT_EQUAL(tu_tx_pending(st, 0, 8, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(drain("T", b, sizeof(b)), 1);
    CU_ASSERT_STRING_EQUAL(b, "e,");
    CU_ASSERT_EQUAL(drain("U", b, sizeof(b)), 1);
    CU_ASSERT_STRING_EQUAL(b, "f,");
    teardown();
}

static void test_recall(void)
{
    st_append_item_t far, soon, now_it;
    tu_msg_t m[4];
    size_t n;
    setup();
    int64_t t0 = st_now_ms();
    CU_ASSERT_EQUAL(tu_send_held(st, "T", "far", t0 + 1500, false, NULL,
                                 &far), GT_OK);
    CU_ASSERT_EQUAL(tu_send_held(st, "T", "soon", t0 + 700, false, NULL,
                                 &soon), GT_OK);
    CU_ASSERT_EQUAL(tu_send_held(st, "T", "now", 0, false, NULL, &now_it),
                    GT_OK);
    CU_ASSERT_EQUAL(far.queue_offset, 0); /* assigned when due */
    CU_ASSERT_EQUAL(tu_recall(st, "T", "nope"), GT_ENOTFOUND);
    CU_ASSERT_EQUAL(tu_recall(st, "U", far.msg_id), GT_ENOTFOUND);
    CU_ASSERT_EQUAL(tu_recall(st, "T", ""), GT_EINVAL);
    CU_ASSERT_EQUAL(tu_recall(st, "T", now_it.msg_id), GT_EINVAL);
    CU_ASSERT_EQUAL(tu_recall(st, "T", far.msg_id), GT_OK);
    CU_ASSERT_EQUAL(tu_recall(st, "T", far.msg_id), GT_ENOTFOUND);
    /* pending delayed messages are not visible to lookups */
    CU_ASSERT_EQUAL(tu_lookup(st, false, NULL, soon.msg_id, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0);
    tu_clock_advance(st, 750);
    CU_ASSERT_EQUAL(tu_recall(st, "T", soon.msg_id), GT_EINVAL); /* too late */
    char b[64];
    CU_ASSERT_EQUAL(drain_wait("T", 2, b, sizeof(b)), 2);
    CU_ASSERT(strstr(b, "soon,") && strstr(b, "now,"));
    tu_clock_advance(st, 950); /* past far's time: it never comes */
    CU_ASSERT_EQUAL(drain("T", NULL, 0), 0);
    CU_ASSERT_EQUAL(tu_lookup(st, false, NULL, soon.msg_id, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 1);
    teardown();
}

static void test_timer_restart(void)
{
    st_append_item_t a, r, d;
    char b[128];
    setup();
    int64_t t0 = st_now_ms();
    CU_ASSERT_EQUAL(tu_send_held(st, "T", "a", t0 + 1500, false, NULL, &a),
                    GT_OK);
    CU_ASSERT_EQUAL(tu_send_held(st, "T", "r", t0 + 1600, false, NULL, &r),
                    GT_OK);
    CU_ASSERT_EQUAL(tu_send_held(st, "T", "day", t0 + 86400000, false, NULL,
                                 &d), GT_OK);
    CU_ASSERT_EQUAL(tu_recall(st, "T", r.msg_id), GT_OK);
    reopen();
    CU_ASSERT_EQUAL(drain("T", NULL, 0), 0);
    CU_ASSERT_EQUAL(tu_recall(st, "T", r.msg_id), GT_ENOTFOUND);
    st_local_state_compact(st);
    reopen();
    CU_ASSERT_EQUAL(tu_recall(st, "T", r.msg_id), GT_ENOTFOUND);
    tu_clock_advance(st, 1499);
    CU_ASSERT_EQUAL(drain("T", NULL, 0), 0); /* not before its time */
    tu_clock_advance(st, 1);
    CU_ASSERT_EQUAL(drain_wait("T", 1, b, sizeof(b)), 1);
    CU_ASSERT_STRING_EQUAL(b, "a,");
    tu_clock_advance(st, 300); /* past the recalled one's time */
    CU_ASSERT_EQUAL(drain("T", NULL, 0), 0);
    reopen(); /* fired once: not again after a restart */
    CU_ASSERT_EQUAL(drain("T", NULL, 0), 0);
    CU_ASSERT_EQUAL(tu_recall(st, "T", d.msg_id), GT_OK);
    teardown();
}

/* A long delay holds back no other message's committed offset: delayed
 * messages are not in their queue until due. */
static void test_timer_offsets(void)
{
    uint64_t off;
    tu_msg_t m[8];
    size_t n;
    setup();
    CU_ASSERT_EQUAL(tu_topic(st, "Q", 1), GT_OK);
    CU_ASSERT_EQUAL(tu_send(st, "Q", "a", NULL, "m1", 0, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_send_held(st, "Q", "long", st_now_ms() + 3600000,
                                 false, NULL, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_send(st, "Q", "a", NULL, "m3", 0, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "Q", "*", 8, 60000, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_EQUAL(tu_ack(st, "G", "Q", m[i].handle), GT_OK);
    CU_ASSERT_EQUAL(tu_offset_get(st, "G", "Q", 0, &off), GT_OK);
    CU_ASSERT_EQUAL(off, 2);
    st_stats_t s;
    CU_ASSERT_EQUAL(tu_stats(st, "Q", "G", &s), GT_OK);
    CU_ASSERT_EQUAL(s.lag, 0);
    CU_ASSERT_EQUAL(s.messages, 2);
    teardown();
}

/* Due messages come out in delivery-time order (ties: append order), each
 * in the queue its message group chose at send time. */
static void test_timer_order_fifo(void)
{
    st_append_item_t it[40];
    int64_t due[40];
    setup();
    CU_ASSERT_EQUAL(tu_topic(st, "F", 4), GT_OK);
    int64_t t0 = st_now_ms() + 1000;
    for (int i = 0; i < 40; i++) {
        st_message_t m;
        char body[16];
        memset(&m, 0, sizeof(m));
        due[i] = t0 + (i * 37 % 11) * 20;
        snprintf(body, sizeof(body), "%02d", i);
        m.body = body;
        m.body_len = 2;
        m.msg_group = "grp";
        m.queue_id = ST_QUEUE_ANY;
        m.delivery_ts_ms = due[i];
        CU_ASSERT_EQUAL_FATAL(tu_send_n(st, "F", &m, 1, &it[i]), GT_OK);
        CU_ASSERT_EQUAL(it[i].queue_id, it[0].queue_id);
    }
    tu_msg_t m[40];
    size_t n = 0;
    tu_clock_advance(st, 1000 + 10 * 20); /* all due */
    for (int i = 0; i < 3000 && n < 40; i++) {
        tu_sleep_ms(20);
        CU_ASSERT_EQUAL(tu_pull(st, "F", it[0].queue_id, 0, 40, m, &n, NULL),
                        GT_OK);
    }
    CU_ASSERT_EQUAL_FATAL(n, 40);
    for (size_t k = 1; k < n; k++) {
        int i = atoi(m[k - 1].body), j = atoi(m[k].body);
        CU_ASSERT(due[i] < due[j] || (due[i] == due[j] && i < j));
    }
    teardown();
}

/* Many timers due at one instant: their copies are appended in batches
 * that fit a segment (64 KiB here), none is lost. */
static void test_timer_burst(void)
{
    static st_message_t m[600];
    char body[120];
    setup();
    memset(body, 'b', sizeof(body));
    int64_t due = st_now_ms() + 1000;
    for (int i = 0; i < 600; i++) {
        memset(&m[i], 0, sizeof(m[i]));
        m[i].body = body;
        m[i].body_len = sizeof(body);
        m[i].queue_id = ST_QUEUE_ANY;
        m[i].delivery_ts_ms = due;
    }
    for (int i = 0; i < 600; i += 100) /* a batch must fit a segment too */
        CU_ASSERT_EQUAL(tu_send_n(st, "T", m + i, 100, NULL), GT_OK);
    CU_ASSERT_EQUAL(drain("T", NULL, 0), 0);
    tu_clock_advance(st, 1000);
    CU_ASSERT_EQUAL(drain_wait("T", 600, NULL, 0), 600);
    teardown();
}

/* The internal window's span on the timer topic (lock taken). */
static uint64_t timer_span(void)
{
    st_local_t *l = (st_local_t *)st;
    uint64_t span = UINT64_MAX;
    pthread_mutex_lock(&l->lock);
    st_group_rt_t *g = st_group_vivify(l, ST_SYS_GROUP);
    st_cs_t *cs = g && l->sys_timer ? st_cs_find(l, g, l->sys_timer, 0, false)
                                    : NULL;
    if (cs)
        span = cs->pop - cs->commit;
    pthread_mutex_unlock(&l->lock);
    return span;
}

/* Long timers are rolled forward once the ones behind them have fired:
 * the window shrinks, a rolled timer is still recalled or fired once. */
static void test_timer_roll(void)
{
    static st_message_t m[100];
    st_append_item_t lg, lg2;
    char b[64];
    setup();
    pthread_mutex_lock(&((st_local_t *)st)->lock);
    ((st_local_t *)st)->roll_span = 64;
    pthread_mutex_unlock(&((st_local_t *)st)->lock);
    int64_t t0 = st_now_ms();
    CU_ASSERT_EQUAL(tu_send_held(st, "T", "long", t0 + 3600000, false, NULL,
                                 &lg), GT_OK);
    CU_ASSERT_EQUAL(tu_send_held(st, "T", "long2", t0 + 4000, false, NULL,
                                 &lg2), GT_OK);
    for (int i = 0; i < 100; i++) {
        memset(&m[i], 0, sizeof(m[i]));
        m[i].body = "s";
        m[i].body_len = 1;
        m[i].queue_id = ST_QUEUE_ANY;
        m[i].delivery_ts_ms = t0 + 1000;
    }
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(tu_send_n(st, "T", m, 100, NULL), GT_OK);
    for (int i = 0; i < 6000 && timer_span() < 302; i++)
        tu_sleep_ms(5); /* the service thread takes them in */
    tu_clock_advance(st, 1000);
    CU_ASSERT_EQUAL(drain_wait("T", 300, NULL, 0), 300);
    for (int i = 0; i < 3000 && timer_span() > 2; i++) {
        tu_clock_advance(st, 0); /* wakes the service thread */
        tu_sleep_ms(10);
    }
    CU_ASSERT_EQUAL(timer_span(), 2); /* the two long ones, rolled */
    CU_ASSERT_EQUAL(tu_recall(st, "T", lg.msg_id), GT_OK);
    CU_ASSERT_EQUAL(tu_recall(st, "T", lg.msg_id), GT_ENOTFOUND);
    reopen();
    CU_ASSERT_EQUAL(tu_recall(st, "T", lg.msg_id), GT_ENOTFOUND);
    tu_clock_advance(st, 2999);
    CU_ASSERT_EQUAL(drain("T", NULL, 0), 0); /* not before its time */
    tu_clock_advance(st, 1);
    CU_ASSERT_EQUAL(drain_wait("T", 1, b, sizeof(b)), 1);
    CU_ASSERT_STRING_EQUAL(b, "long2,");
    tu_clock_advance(st, 200);
    CU_ASSERT_EQUAL(drain("T", NULL, 0), 0); /* once */
    teardown();
}

/* File layer that can hold commitlog writes back (state log writes pass):
 * keeps a roll's append in flight. */
static pthread_mutex_t stall_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stall_c = PTHREAD_COND_INITIALIZER;
static bool stall_on;
static int stall_waiting, stall_state_fd = -1;

static int sf_open(void *c, const char *p, int f, int m)
{
    return st_posix_file_ops.open(c, p, f, m);
}
static ssize_t sf_pwritev(void *c, int fd, const struct iovec *v, int n,
                          off_t o)
{
    pthread_mutex_lock(&stall_m);
    while (stall_on && fd != stall_state_fd) { /* the state log passes */
        stall_waiting++;
        pthread_cond_wait(&stall_c, &stall_m);
        stall_waiting--;
    }
    pthread_mutex_unlock(&stall_m);
    return st_posix_file_ops.pwritev(c, fd, v, n, o);
}
static ssize_t sf_pread(void *c, int fd, void *b, size_t n, off_t o)
{
    return st_posix_file_ops.pread(c, fd, b, n, o);
}
static int sf_sync(void *c, int fd) { return st_posix_file_ops.fdatasync(c, fd); }
static int sf_trunc(void *c, int fd, off_t l)
{
    return st_posix_file_ops.ftruncate(c, fd, l);
}
static int sf_close(void *c, int fd) { return st_posix_file_ops.close(c, fd); }
static const st_file_ops_t stall_ops = {sf_open, sf_pwritev, sf_pread,
                                        sf_sync, sf_trunc, sf_close};

typedef struct later {
    pthread_mutex_t m;
    bool done;
    gt_err_t err;
} later_t;

static void later_cb(void *arg, gt_err_t err)
{
    later_t *l = arg;
    pthread_mutex_lock(&l->m);
    l->err = err;
    l->done = true;
    pthread_mutex_unlock(&l->m);
}

static bool later_done(later_t *l)
{
    pthread_mutex_lock(&l->m);
    bool d = l->done;
    pthread_mutex_unlock(&l->m);
    return d;
}

/* A recall of a timer while it is being rolled is answered once the
 * original and its copy are both resolved: nothing of it survives. */
static void test_recall_rolling(void)
{
    static st_message_t m[64];
    st_append_item_t lg;
    st_config_t c;
    st_local_t *l;
    dir = tu_tmpdir("hold");
    tu_config(&c, dir, ST_FLUSH_SYNC);
    c.file_ops = &stall_ops;
    CU_ASSERT_EQUAL_FATAL(st_local_open(&c, &st), GT_OK);
    l = (st_local_t *)st;
    pthread_mutex_lock(&l->lock);
    stall_state_fd = l->state_fd;
    pthread_mutex_unlock(&l->lock);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    int64_t t0 = st_now_ms();
    CU_ASSERT_EQUAL(tu_send_held(st, "T", "long", t0 + 3600000, false, NULL,
                                 &lg), GT_OK);
    for (int i = 0; i < 64; i++) {
        memset(&m[i], 0, sizeof(m[i]));
        m[i].body = "s";
        m[i].body_len = 1;
        m[i].queue_id = 0;
        m[i].delivery_ts_ms = t0 + 300;
    }
    CU_ASSERT_EQUAL(tu_send_n(st, "T", m, 64, NULL), GT_OK);
    tu_clock_advance(st, 300);
    CU_ASSERT_EQUAL(drain_wait("T", 64, NULL, 0), 64);
    for (int i = 0; i < 3000 && timer_span() != 65; i++) {
        tu_clock_advance(st, 0); /* all fired and resolved; the long one left */
        tu_sleep_ms(10);
    }
    pthread_mutex_lock(&stall_m);
    stall_on = true;
    pthread_mutex_unlock(&stall_m);
    pthread_mutex_lock(&l->lock);
    l->roll_span = 32;
    pthread_cond_signal(&l->svc_cond);
    pthread_mutex_unlock(&l->lock);
    int waiting = 0;
    for (int i = 0; i < 6000 && !waiting; i++) {
        tu_sleep_ms(10);
        pthread_mutex_lock(&stall_m);
        waiting = stall_waiting;
        pthread_mutex_unlock(&stall_m);
    }
    CU_ASSERT(waiting > 0); /* the roll's append is held */
    later_t w = {.m = PTHREAD_MUTEX_INITIALIZER};
    st_recall(st, "T", lg.msg_id, later_cb, &w);
    tu_sleep_ms(50);
    CU_ASSERT_FALSE(later_done(&w)); /* waits for the roll */
    pthread_mutex_lock(&stall_m);
    stall_on = false;
    pthread_cond_broadcast(&stall_c);
    pthread_mutex_unlock(&stall_m);
    for (int i = 0; i < 6000 && !later_done(&w); i++)
        tu_sleep_ms(10);
    CU_ASSERT(later_done(&w));
    CU_ASSERT_EQUAL(w.err, GT_OK);
    CU_ASSERT_EQUAL(timer_span(), 0); /* original and copy resolved */
    CU_ASSERT_EQUAL(tu_recall(st, "T", lg.msg_id), GT_ENOTFOUND);
    reopen();
    CU_ASSERT_EQUAL(tu_recall(st, "T", lg.msg_id), GT_ENOTFOUND);
    CU_ASSERT_EQUAL(timer_span(), 0);
    teardown();
}

/* Recalled timers leave the heap (not only at their delivery time). */
static void test_recall_many(void)
{
    static st_message_t m[100];
    static st_append_item_t it[3000];
    setup();
    for (int i = 0; i < 3000; i += 100) {
        for (int j = 0; j < 100; j++) {
            memset(&m[j], 0, sizeof(m[j]));
            m[j].body = "L";
            m[j].body_len = 1;
            m[j].queue_id = ST_QUEUE_ANY;
            m[j].delivery_ts_ms = st_now_ms() + 3600000 + i + j;
        }
        CU_ASSERT_EQUAL_FATAL(tu_send_n(st, "T", m, 100, it + i), GT_OK);
    }
    for (int i = 0; i < 2000; i++)
        CU_ASSERT_EQUAL(tu_recall(st, "T", it[i].msg_id), GT_OK);
    st_local_t *l = (st_local_t *)st;
    pthread_mutex_lock(&l->lock);
    size_t n = l->theap_n;
    pthread_mutex_unlock(&l->lock);
    CU_ASSERT(n < 2000);
    for (int i = 2000; i < 3000; i++)
        CU_ASSERT_EQUAL(tu_recall(st, "T", it[i].msg_id), GT_OK);
    CU_ASSERT_EQUAL(tu_recall(st, "T", it[0].msg_id), GT_ENOTFOUND);
    teardown();
}

/* Retention keeps the segments from the oldest pending held message on. */
static void test_hold_retention(void)
{
    char body[2048];
    uint64_t off;
    st_append_item_t tm, hm;
    setup();
    memset(body, 'r', sizeof(body) - 1);
    body[sizeof(body) - 1] = 0;
    CU_ASSERT_EQUAL(tu_send_held(st, "T", "timer", st_now_ms() + 86400000,
                                 false, NULL, &tm), GT_OK);
    CU_ASSERT_EQUAL(tu_send_held(st, "T", "half", 0, true, NULL, &hm), GT_OK);
    for (int i = 0; i < 100; i++) /* ~210 KiB over 64 KiB segments */
        CU_ASSERT_EQUAL(tu_send(st, "U", "a", NULL, body, 0, NULL), GT_OK);
    st_local_retention_run(st, st_now_ms() + 73LL * 3600 * 1000);
    CU_ASSERT_EQUAL(tu_offset_query(st, "U", 0, ST_OFFSET_BEGIN, 0, &off),
                    GT_OK);
    CU_ASSERT_EQUAL(off, 0);
    CU_ASSERT_EQUAL(tu_recall(st, "T", tm.msg_id), GT_OK);
    st_local_retention_run(st, st_now_ms() + 73LL * 3600 * 1000);
    CU_ASSERT_EQUAL(tu_offset_query(st, "U", 0, ST_OFFSET_BEGIN, 0, &off),
                    GT_OK);
    CU_ASSERT_EQUAL(off, 0); /* the half message still holds it */
    CU_ASSERT_EQUAL(tu_tx_end(st, "T", hm.msg_id, true), GT_OK);
    st_local_retention_run(st, st_now_ms() + 73LL * 3600 * 1000);
    CU_ASSERT_EQUAL(tu_offset_query(st, "U", 0, ST_OFFSET_BEGIN, 0, &off),
                    GT_OK);
    CU_ASSERT(off > 50);
    teardown();
}

/* A mixed batch: direct, delayed and half messages keep their order in
 * the items, and each goes where it belongs. */
static void test_mixed_batch(void)
{
    st_message_t m[3];
    st_append_item_t it[3];
    memset(m, 0, sizeof(m));
    setup();
    for (int i = 0; i < 3; i++) {
        m[i].body = "x";
        m[i].body_len = 1;
        m[i].queue_id = 1;
    }
    m[1].delivery_ts_ms = st_now_ms() + 1000;
    m[2].tx_half = true;
    CU_ASSERT_EQUAL_FATAL(tu_send_n(st, "T", m, 3, it), GT_OK);
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(it[i].queue_id, 1);
    CU_ASSERT(strcmp(it[0].msg_id, it[1].msg_id) != 0);
    CU_ASSERT_EQUAL(drain("T", NULL, 0), 1);
    tu_clock_advance(st, 1000);
    CU_ASSERT_EQUAL(drain_wait("T", 1, NULL, 0), 1);
    CU_ASSERT_EQUAL(tu_tx_end(st, "T", it[2].msg_id, true), GT_OK);
    CU_ASSERT_EQUAL(drain("T", NULL, 0), 1);
    m[0].queue_id = 7; /* bad queue: the whole batch is refused */
    CU_ASSERT_EQUAL(tu_send_n(st, "T", m, 3, it), GT_EINVAL);
    m[0].queue_id = 0;
    m[1].queue_id = 7;
    CU_ASSERT_EQUAL(tu_send_n(st, "T", m, 3, it), GT_EINVAL);
    CU_ASSERT_EQUAL(tu_send_held(st, "nope", "x", 0, true, NULL, NULL),
                    GT_ENOTFOUND);
    teardown();
}

static const CU_TestInfo tests[] = {
    {"tx_commit", test_tx_commit},
    {"tx_rollback", test_tx_rollback},
    {"tx_pending", test_tx_pending},
    {"tx_claim", test_tx_claim},
    {"tx_max_checks", test_tx_max_checks},
    {"tx_delayed_commit", test_tx_delayed_commit},
    {"tx_restart", test_tx_restart},
    {"recall", test_recall},
    {"timer_restart", test_timer_restart},
    {"timer_offsets", test_timer_offsets},
    {"timer_order_fifo", test_timer_order_fifo},
    {"timer_burst", test_timer_burst},
    {"timer_roll", test_timer_roll},
    {"recall_many", test_recall_many},
    {"recall_rolling", test_recall_rolling},
    {"hold_retention", test_hold_retention},
    {"mixed_batch", test_mixed_batch},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    tu_clock_start(); /* time moves only by tu_clock_advance() */
    int rc = tu_run("hold", tests);
    tu_clock_stop();
    return rc;
}
