/* Behaviour of the local store through the public API: append/pull, pop,
 * ack, expiry and redelivery, change invisible, stale handles, DLQ, tag
 * filters, offsets, lookup, long polling, restart, retention, stats and
 * concurrent appenders. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tu.h"

static char *dir;
static st_store_t *st;

static void setup(st_flush_t flush)
{
    dir = tu_tmpdir("store");
    st = tu_open(dir, flush);
}

static void teardown(void)
{
    st_close(st);
    st = NULL;
    tu_rmrf(dir);
    free(dir);
}

static void test_append_pull(void)
{
    st_append_item_t it[12];
    char body[32];
    setup(ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL(tu_topic(st, "T", 4), GT_OK);
    CU_ASSERT_EQUAL(tu_send(st, "nope", "a", NULL, "x", -1, it), GT_ENOTFOUND);
    CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "x", 4, it), GT_EINVAL);
    for (int i = 0; i < 12; i++) {
        snprintf(body, sizeof(body), "body-%d", i);
        CU_ASSERT_EQUAL_FATAL(tu_send(st, "T", "a", NULL, body, i % 4, &it[i]),
                              GT_OK);
        CU_ASSERT_EQUAL(it[i].queue_id, (uint32_t)(i % 4));
        CU_ASSERT_EQUAL(it[i].queue_offset, (uint64_t)(i / 4));
        CU_ASSERT(it[i].msg_id[0] != 0);
        if (i)
            CU_ASSERT(it[i].position > it[i - 1].position);
    }
    for (uint32_t q = 0; q < 4; q++) {
        tu_msg_t m[8];
        size_t n;
        uint64_t next;
        CU_ASSERT_EQUAL(tu_pull(st, "T", q, 0, 8, m, &n, &next), GT_OK);
        CU_ASSERT_EQUAL_FATAL(n, 3);
        CU_ASSERT_EQUAL(next, 3);
        for (size_t k = 0; k < n; k++) {
            snprintf(body, sizeof(body), "body-%zu", k * 4 + q);
            CU_ASSERT_STRING_EQUAL(m[k].body, body);
            CU_ASSERT_STRING_EQUAL(m[k].topic, "T");
            CU_ASSERT_STRING_EQUAL(m[k].tag, "a");
            CU_ASSERT_EQUAL(m[k].offset, k);
            CU_ASSERT_STRING_EQUAL(m[k].id, it[k * 4 + q].msg_id);
        }
        CU_ASSERT_EQUAL(tu_pull(st, "T", q, 3, 8, m, &n, &next), GT_OK);
        CU_ASSERT_EQUAL(n, 0);
        CU_ASSERT_EQUAL(tu_pull(st, "T", q, 9, 8, m, &n, &next), GT_ERANGE);
    }
    /* a batch with store-chosen queue lands in one queue, in order */
    st_message_t b[3];
    memset(b, 0, sizeof(b));
    for (int i = 0; i < 3; i++) {
        b[i].body = "b";
        b[i].body_len = 1;
        b[i].queue_id = ST_QUEUE_ANY;
    }
    CU_ASSERT_EQUAL(tu_send_n(st, "T", b, 3, it), GT_OK);
    CU_ASSERT_EQUAL(it[0].queue_id, it[2].queue_id);
    CU_ASSERT_EQUAL(it[2].queue_offset, it[0].queue_offset + 2);
    teardown();
}

static void test_pop_ack(void)
{
    tu_msg_t m[32];
    size_t n;
    uint64_t off;
    setup(ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL(tu_topic(st, "T", 2), GT_OK);
    for (int i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "m", -1, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 32, 30000, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 5);
    for (size_t i = 0; i < n; i++) {
        CU_ASSERT_EQUAL(m[i].attempt, 1);
        for (size_t j = 0; j < i; j++)
            CU_ASSERT(strcmp(m[i].handle, m[j].handle) != 0);
    }
    /* invisible: nothing more to pop */
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 32, 30000, m + 5, &n),
                    GT_OK);
    CU_ASSERT_EQUAL(n, 0);
    for (size_t i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(tu_ack(st, "G", "T", m[i].handle), GT_OK);
    uint64_t total = 0;
    for (uint32_t q = 0; q < 2; q++) {
        CU_ASSERT_EQUAL(tu_offset_get(st, "G", "T", q, &off), GT_OK);
        total += off;
    }
    CU_ASSERT_EQUAL(total, 5);
    /* another group sees everything again */
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G2", "T", NULL, 3, 30000, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 3);
    teardown();
}

static void test_expiry_redelivery(void)
{
    tu_msg_t a[4], b[4];
    size_t n;
    setup(ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL(tu_topic(st, "T", 1), GT_OK);
    CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "once", -1, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 4, 200, a, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 4, 200, b, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0); /* never to two consumers in one window */
    tu_clock_advance(st, 199);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 4, 200, b, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0); /* still its window */
    tu_clock_advance(st, 1);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 4, 5000, b, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(b[0].attempt, 2);
    CU_ASSERT_STRING_EQUAL(b[0].body, "once");
    CU_ASSERT_STRING_EQUAL(b[0].id, a[0].id);
    CU_ASSERT(strcmp(a[0].handle, b[0].handle) != 0);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", a[0].handle), GT_EINVAL);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", b[0].handle), GT_OK);
    teardown();
}

static void test_change_invisible(void)
{
    tu_msg_t a[2], b[2];
    size_t n;
    char nh[ST_HANDLE_MAX], nh2[ST_HANDLE_MAX];
    setup(ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL(tu_topic(st, "T", 1), GT_OK);
    CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "x", -1, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 1, 200, a, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(tu_change(st, "G", "T", a[0].handle, 2000, nh), GT_OK);
    CU_ASSERT(strcmp(nh, a[0].handle) != 0);
    CU_ASSERT_EQUAL(tu_change(st, "G", "T", a[0].handle, 2000, nh2),
                    GT_EINVAL);
    tu_clock_advance(st, 300);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 1, 200, b, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0); /* the extension holds */
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", a[0].handle), GT_EINVAL);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", nh), GT_OK);
    teardown();
}

static void test_stale_handles(void)
{
    tu_msg_t a[2];
    size_t n;
    setup(ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL(tu_topic(st, "T", 1), GT_OK);
    CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "x", -1, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 1, 100, a, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", "garbage"), GT_EINVAL);
    CU_ASSERT_EQUAL(tu_change(st, "G", "T", a[0].handle, INT64_MAX, NULL),
                    GT_EINVAL);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 1, INT64_MAX, a + 1, &n),
                    GT_EINVAL);
    char bad[ST_HANDLE_MAX];
    strcpy(bad, a[0].handle);
    bad[10] = bad[10] == '0' ? '1' : '0';
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", bad), GT_EINVAL);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "nope", a[0].handle), GT_ENOTFOUND);
    CU_ASSERT_EQUAL(tu_ack(st, "H", "T", a[0].handle), GT_ENOTFOUND);
    tu_clock_advance(st, 100); /* expired */
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", a[0].handle), GT_EINVAL);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 1, 10000, a, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", a[0].handle), GT_OK);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", a[0].handle), GT_EINVAL); /* twice */
    teardown();
}

static const char *prop(const tu_msg_t *m, const char *k)
{
    for (uint32_t i = 0; i < m->nprops; i++)
        if (strcmp(m->pk[i], k) == 0)
            return m->pv[i];
    return NULL;
}

static void test_dlq(void)
{
    tu_msg_t a[2], d[4];
    size_t n;
    uint64_t off;
    st_message_t m;
    st_append_item_t it;
    setup(ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL(tu_topic(st, "T", 1), GT_OK);
    CU_ASSERT_EQUAL(tu_group(st, "G", 2, ST_CONSUME_FROM_FIRST), GT_OK);
    memset(&m, 0, sizeof(m));
    m.tag = "tg";
    m.keys[0] = "k1";
    m.nkeys = 1;
    m.props[0] = (st_prop_t){"color", "blue"};
    m.nprops = 1;
    m.body = "poison";
    m.body_len = 6;
    m.queue_id = ST_QUEUE_ANY;
    CU_ASSERT_EQUAL(tu_send_n(st, "T", &m, 1, &it), GT_OK);
    for (uint32_t attempt = 1; attempt <= 2; attempt++) {
        CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 1, 100, a, &n), GT_OK);
        CU_ASSERT_EQUAL_FATAL(n, 1);
        CU_ASSERT_EQUAL(a[0].attempt, attempt);
        tu_clock_advance(st, 100);
    }
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 1, 100, a, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0); /* moved, not redelivered */
    for (;;) { /* the DLQ append completes async */
        if (tu_offset_get(st, "G", "T", 0, &off) == GT_OK && off == 1)
            break;
        tu_sleep_ms(10);
    }
    CU_ASSERT_EQUAL(off, 1);
    CU_ASSERT_EQUAL(tu_pull(st, "%DLQ%G", 0, 0, 4, d, &n, NULL), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_STRING_EQUAL(d[0].body, "poison");
    CU_ASSERT_STRING_EQUAL(d[0].tag, "tg");
    CU_ASSERT_STRING_EQUAL(d[0].keys[0], "k1");
    CU_ASSERT_STRING_EQUAL(d[0].id, it.msg_id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(prop(&d[0], "color"));
    CU_ASSERT_STRING_EQUAL(prop(&d[0], "color"), "blue");
    CU_ASSERT_PTR_NOT_NULL_FATAL(prop(&d[0], "RETRY_TOPIC"));
    CU_ASSERT_STRING_EQUAL(prop(&d[0], "RETRY_TOPIC"), "T");
    CU_ASSERT_PTR_NOT_NULL_FATAL(prop(&d[0], "ORIGIN_MESSAGE_ID"));
    CU_ASSERT_STRING_EQUAL(prop(&d[0], "ORIGIN_MESSAGE_ID"), it.msg_id);
    /* the DLQ is a normal topic: a group can pop it */
    CU_ASSERT_EQUAL(tu_pop_simple(st, "ops", "%DLQ%G", "*", 4, 1000, d, &n),
                    GT_OK);
    CU_ASSERT_EQUAL(n, 1);
    teardown();
}

static void test_tag_filter(void)
{
    tu_msg_t m[8];
    size_t n;
    const char *tags[] = {"a", "b", "c", "a", "b", "c"};
    setup(ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL(tu_topic(st, "T", 1), GT_OK);
    for (int i = 0; i < 6; i++) {
        char body[4];
        snprintf(body, sizeof(body), "%d", i);
        CU_ASSERT_EQUAL(tu_send(st, "T", tags[i], NULL, body, 0, NULL), GT_OK);
    }
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", " a || c ", 8, 10000, m, &n),
                    GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 4);
    for (size_t i = 0; i < n; i++)
        CU_ASSERT(strcmp(m[i].tag, "b") != 0);
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_EQUAL(tu_ack(st, "G", "T", m[i].handle), GT_OK);
    uint64_t off;
    CU_ASSERT_EQUAL(tu_offset_get(st, "G", "T", 0, &off), GT_OK);
    CU_ASSERT_EQUAL(off, 6); /* filtered-out messages count as consumed */
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G2", "T", "*", 8, 10000, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 6);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G3", "T", "zzz", 8, 10000, m, &n),
                    GT_OK);
    CU_ASSERT_EQUAL(n, 0);
    /* a SQL92 filter travels as text and is compiled by the store */
    st_pop_req_t r = {.group = "G4", .topic = "T", .queue_id = 0,
                      .filter_kind = ST_FILTER_SQL92,
                      .filter_expr = "TAGS = 'a' OR (TAGS = 'c' AND TAGS <> 'c')",
                      .max = 8, .invisible_ms = 10000};
    CU_ASSERT_EQUAL(tu_pop(st, &r, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_STRING_EQUAL(m[0].body, "0");
    CU_ASSERT_STRING_EQUAL(m[1].body, "3");
    r.group = "G5";
    r.filter_expr = "TAGS = ";
    CU_ASSERT_EQUAL(tu_pop(st, &r, m, &n), GT_EINVAL);
    r.filter_kind = (st_filter_kind_t)7;
    r.filter_expr = NULL;
    CU_ASSERT_EQUAL(tu_pop(st, &r, m, &n), GT_EINVAL);
    teardown();
}

static void test_offsets(void)
{
    uint64_t off;
    tu_msg_t m[8];
    size_t n;
    setup(ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL(tu_topic(st, "T", 1), GT_OK);
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "old", 0, NULL), GT_OK);
    tu_clock_advance(st, 20);
    int64_t mid = tu_clock_now();
    tu_clock_advance(st, 5);
    for (int i = 0; i < 2; i++)
        CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "new", 0, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_offset_query(st, "T", 0, ST_OFFSET_BEGIN, 0, &off),
                    GT_OK);
    CU_ASSERT_EQUAL(off, 0);
    CU_ASSERT_EQUAL(tu_offset_query(st, "T", 0, ST_OFFSET_END, 0, &off), GT_OK);
    CU_ASSERT_EQUAL(off, 5);
    CU_ASSERT_EQUAL(tu_offset_query(st, "T", 0, ST_OFFSET_TIME, mid, &off),
                    GT_OK);
    CU_ASSERT_EQUAL(off, 3);
    CU_ASSERT_EQUAL(tu_offset_get(st, "G", "T", 0, &off), GT_ENOTFOUND);
    CU_ASSERT_EQUAL(tu_offset_update(st, "G", "T", 0, 4), GT_OK);
    CU_ASSERT_EQUAL(tu_offset_get(st, "G", "T", 0, &off), GT_OK);
    CU_ASSERT_EQUAL(off, 4);
    CU_ASSERT_EQUAL(tu_offset_update(st, "G", "T", 0, 9), GT_ERANGE);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 8, 10000, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_EQUAL(m[0].offset, 4);
    /* consume_from last: starts at the end as of the first pop */
    CU_ASSERT_EQUAL(tu_group(st, "L", 16, ST_CONSUME_FROM_LAST), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "L", "T", "*", 8, 10000, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "later", 0, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "L", "T", "*", 8, 10000, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_STRING_EQUAL(m[0].body, "later");
    /* a declared group (first) sees messages sent before it first popped */
    CU_ASSERT_EQUAL(tu_group(st, "F", 16, ST_CONSUME_FROM_FIRST), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "F", "T", "*", 8, 10000, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 6);
    teardown();
}

static void test_lookup(void)
{
    st_append_item_t it[3];
    tu_msg_t m[ST_POP_MAX];
    size_t n;
    setup(ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL(tu_topic(st, "T", 2), GT_OK);
    CU_ASSERT_EQUAL(tu_topic(st, "U", 1), GT_OK);
    CU_ASSERT_EQUAL(tu_send(st, "T", "a", "order-1", "one", -1, &it[0]), GT_OK);
    CU_ASSERT_EQUAL(tu_send(st, "T", "a", "order-2", "two", -1, &it[1]), GT_OK);
    CU_ASSERT_EQUAL(tu_send(st, "U", "a", "order-1", "three", -1, &it[2]),
                    GT_OK);
    CU_ASSERT_EQUAL(tu_lookup(st, false, NULL, it[1].msg_id, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_STRING_EQUAL(m[0].body, "two");
    CU_ASSERT_EQUAL(m[0].position, it[1].position);
    CU_ASSERT_EQUAL(tu_lookup(st, false, NULL, "no-such-id", m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(tu_lookup(st, true, NULL, "order-1", m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT_EQUAL(tu_lookup(st, true, "T", "order-1", m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_STRING_EQUAL(m[0].body, "one");
    teardown();
}

/* ---- long polling ------------------------------------------------------------ */
typedef struct lp {
    pthread_mutex_t m;
    pthread_cond_t c;
    bool done;
    gt_err_t err;
    size_t n;
    char body[32];
    int64_t at;
} lp_t;

static void lp_cb(void *arg, gt_err_t err, const st_popped_t *msgs, size_t n)
{
    lp_t *l = arg;
    pthread_mutex_lock(&l->m);
    l->err = err;
    l->n = n;
    if (n)
        snprintf(l->body, sizeof(l->body), "%.*s", (int)msgs[0].msg.body_len,
                 (const char *)msgs[0].msg.body);
    l->at = tu_clock_now();
    l->done = true;
    pthread_cond_signal(&l->c);
    pthread_mutex_unlock(&l->m);
}

static void lp_wait(lp_t *l)
{
    pthread_mutex_lock(&l->m);
    while (!l->done)
        pthread_cond_wait(&l->c, &l->m);
    pthread_mutex_unlock(&l->m);
}

static void test_long_poll(void)
{
    lp_t l = {.m = PTHREAD_MUTEX_INITIALIZER, .c = PTHREAD_COND_INITIALIZER};
    setup(ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL(tu_topic(st, "T", 2), GT_OK);
    st_pop_req_t r = {.group = "G", .topic = "T", .queue_id = ST_QUEUE_ANY,
                      .max = 4, .invisible_ms = 10000,
                      .poll_timeout_ms = 5000};
    int64_t t0 = tu_clock_now();
    st_pop(st, &r, lp_cb, &l);
    tu_wait_parked(st, 1);
    CU_ASSERT_FALSE(l.done); /* parked */
    CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "wake", -1, NULL), GT_OK);
    lp_wait(&l);
    CU_ASSERT_EQUAL(l.err, GT_OK);
    CU_ASSERT_EQUAL(l.n, 1);
    CU_ASSERT_STRING_EQUAL(l.body, "wake");
    CU_ASSERT(l.at - t0 < 2000);
    /* timeout with nothing: empty answer after the poll time */
    lp_t e = {.m = PTHREAD_MUTEX_INITIALIZER, .c = PTHREAD_COND_INITIALIZER};
    r.poll_timeout_ms = 200;
    t0 = tu_clock_now();
    st_pop(st, &r, lp_cb, &e);
    tu_wait_parked(st, 1);
    tu_clock_advance(st, 199);
    CU_ASSERT_FALSE(e.done);
    tu_clock_advance(st, 1);
    lp_wait(&e);
    CU_ASSERT_EQUAL(e.err, GT_OK);
    CU_ASSERT_EQUAL(e.n, 0);
    CU_ASSERT(e.at - t0 >= 190);
    CU_ASSERT(e.at - t0 < 2000);
    /* an expiring delivery wakes a parked pop */
    lp_t x = {.m = PTHREAD_MUTEX_INITIALIZER, .c = PTHREAD_COND_INITIALIZER};
    tu_msg_t m[1];
    size_t n;
    CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "again", -1, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 1, 300, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 1);
    r.poll_timeout_ms = 5000;
    t0 = tu_clock_now();
    st_pop(st, &r, lp_cb, &x);
    tu_wait_parked(st, 1);
    CU_ASSERT_FALSE(x.done);
    tu_clock_advance(st, 300);
    lp_wait(&x);
    CU_ASSERT_EQUAL(x.n, 1);
    CU_ASSERT_STRING_EQUAL(x.body, "again");
    CU_ASSERT(x.at - t0 >= 200 && x.at - t0 < 3000);
    /* close answers a parked pop */
    lp_t z = {.m = PTHREAD_MUTEX_INITIALIZER, .c = PTHREAD_COND_INITIALIZER};
    st_pop(st, &r, lp_cb, &z);
    teardown();
    CU_ASSERT_TRUE(z.done);
    CU_ASSERT_EQUAL(z.err, GT_ESHUTDOWN);
}

/* Several consumers of one group parked on a topic: each arrival goes to
 * one of them, first come first served; the others stay parked. */
static void test_parked_many(void)
{
    lp_t l[3];
    setup(ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL(tu_topic(st, "T", 2), GT_OK);
    st_pop_req_t r = {.group = "G", .topic = "T", .queue_id = ST_QUEUE_ANY,
                      .max = 4, .invisible_ms = 60000,
                      .poll_timeout_ms = 10000};
    for (int i = 0; i < 3; i++) {
        l[i] = (lp_t){.m = PTHREAD_MUTEX_INITIALIZER,
                      .c = PTHREAD_COND_INITIALIZER};
        st_pop(st, &r, lp_cb, &l[i]);
        tu_wait_parked(st, (size_t)i + 1); /* parked in this order */
    }
    CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "one", -1, NULL), GT_OK);
    lp_wait(&l[0]);
    CU_ASSERT_EQUAL(l[0].n, 1);
    CU_ASSERT_STRING_EQUAL(l[0].body, "one");
    tu_wait_parked(st, 2);
    CU_ASSERT_FALSE(l[1].done);
    CU_ASSERT_FALSE(l[2].done);
    CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "two", -1, NULL), GT_OK);
    lp_wait(&l[1]);
    CU_ASSERT_EQUAL(l[1].n, 1);
    CU_ASSERT_STRING_EQUAL(l[1].body, "two");
    tu_wait_parked(st, 1);
    CU_ASSERT_FALSE(l[2].done);
    teardown();
    CU_ASSERT_TRUE(l[2].done);
    CU_ASSERT_EQUAL(l[2].err, GT_ESHUTDOWN);
}

static gt_err_t send_ex(const char *topic, const char *body, const char *grp,
                        int64_t deliver_at)
{
    st_message_t m;
    memset(&m, 0, sizeof(m));
    m.tag = "x";
    m.body = body;
    m.body_len = (uint32_t)strlen(body);
    m.msg_group = grp;
    m.delivery_ts_ms = deliver_at;
    m.queue_id = 0;
    return tu_send_n(st, topic, &m, 1, NULL);
}

static void test_fifo(void)
{
    tu_msg_t m[8], h[8];
    size_t n;
    setup(ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL(tu_topic(st, "F", 1), GT_OK);
    CU_ASSERT_EQUAL(tu_group(st, "PLAIN", 16, ST_CONSUME_FROM_FIRST), GT_OK);
    CU_ASSERT_EQUAL(send_ex("F", "A1", "a", 0), GT_OK);
    CU_ASSERT_EQUAL(send_ex("F", "A2", "a", 0), GT_OK);
    CU_ASSERT_EQUAL(send_ex("F", "B1", "b", 0), GT_OK);
    CU_ASSERT_EQUAL(send_ex("F", "A3", "a", 0), GT_OK);
    CU_ASSERT_EQUAL(send_ex("F", "B2", "b", 0), GT_OK);
    CU_ASSERT_EQUAL(send_ex("F", "N1", NULL, 0), GT_OK);
    CU_ASSERT_EQUAL(tu_fifo_group(st, "FG"), GT_OK);
    /* consecutive messages of a group go out together, in order */
    CU_ASSERT_EQUAL(tu_pop_simple(st, "FG", "F", "*", 8, 300, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 6);
    const char *first[] = {"A1", "A2", "B1", "A3", "B2", "N1"};
    for (size_t i = 0; i < 6; i++)
        CU_ASSERT_STRING_EQUAL(m[i].body, first[i]);
    /* groups in flight: a later message of theirs waits */
    CU_ASSERT_EQUAL(send_ex("F", "A4", "a", 0), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "FG", "F", "*", 8, 300, h, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(tu_ack(st, "FG", "F", m[0].handle), GT_OK); /* A1 */
    CU_ASSERT_EQUAL(tu_ack(st, "FG", "F", m[5].handle), GT_OK); /* N1 */
    CU_ASSERT_EQUAL(tu_pop_simple(st, "FG", "F", "*", 8, 300, h, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0); /* A2, A3 still in flight */
    tu_clock_advance(st, 300); /* all expire: each group from its lowest */
    CU_ASSERT_EQUAL(tu_pop_simple(st, "FG", "F", "*", 8, 60000, h, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 5);
    const char *again[] = {"A2", "A3", "A4", "B1", "B2"};
    const uint32_t att[] = {2, 2, 1, 2, 2};
    for (size_t i = 0; i < 5; i++) {
        CU_ASSERT_STRING_EQUAL(h[i].body, again[i]);
        CU_ASSERT_EQUAL(h[i].attempt, att[i]);
    }
    CU_ASSERT_EQUAL(tu_ack(st, "FG", "F", h[3].handle), GT_OK); /* B1 */
    CU_ASSERT_EQUAL(tu_ack(st, "FG", "F", h[4].handle), GT_OK); /* B2 */
    CU_ASSERT_EQUAL(send_ex("F", "B3", "b", 0), GT_OK);
    st_close(st); /* held entries and in-flight state survive a restart */
    st = tu_open(dir, ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "FG", "F", "*", 8, 60000, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_STRING_EQUAL(m[0].body, "B3");
    CU_ASSERT_EQUAL(tu_ack(st, "FG", "F", h[0].handle), GT_OK); /* A2 */
    CU_ASSERT_EQUAL(tu_ack(st, "FG", "F", h[1].handle), GT_OK); /* A3 */
    CU_ASSERT_EQUAL(tu_pop_simple(st, "FG", "F", "*", 8, 60000, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0); /* A4 in flight */
    /* a non-FIFO group gets everything at once */
    CU_ASSERT_EQUAL(tu_pop_simple(st, "PLAIN", "F", "*", 8, 60000, m, &n),
                    GT_OK);
    CU_ASSERT_EQUAL(n, 8);
    teardown();
}

static void test_delay(void)
{
    tu_msg_t m[4];
    size_t n;
    lp_t l = {.m = PTHREAD_MUTEX_INITIALIZER, .c = PTHREAD_COND_INITIALIZER};
    setup(ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL(tu_topic(st, "D", 1), GT_OK);
    int64_t t0 = tu_clock_now();
    CU_ASSERT_EQUAL(send_ex("D", "later", NULL, t0 + 300), GT_OK);
    CU_ASSERT_EQUAL(send_ex("D", "now", NULL, 0), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "D", "*", 4, 60000, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_STRING_EQUAL(m[0].body, "now");
    st_pop_req_t r = {.group = "G", .topic = "D", .queue_id = ST_QUEUE_ANY,
                      .max = 4, .invisible_ms = 60000,
                      .poll_timeout_ms = 5000};
    st_pop(st, &r, lp_cb, &l); /* parked until the delivery time */
    tu_wait_parked(st, 1);
    tu_clock_advance(st, 299);
    CU_ASSERT_FALSE(l.done);
    tu_clock_advance(st, 1);
    lp_wait(&l);
    CU_ASSERT_EQUAL(l.n, 1);
    CU_ASSERT_STRING_EQUAL(l.body, "later");
    CU_ASSERT(l.at - t0 >= 250 && l.at - t0 < 3000);
    /* held across a restart */
    CU_ASSERT_EQUAL(send_ex("D", "after-restart", NULL, st_now_ms() + 400),
                    GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "D", "*", 4, 60000, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0);
    st_close(st);
    st = tu_open(dir, ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "D", "*", 4, 60000, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0);
    tu_clock_advance(st, 400);
    for (;;) { /* the service thread moves it to its queue */
        CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "D", "*", 4, 60000, m, &n),
                        GT_OK);
        if (n > 0)
            break;
        tu_sleep_ms(1);
    }
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_STRING_EQUAL(m[0].body, "after-restart");
    teardown();
}

static void test_restart(void)
{
    tu_msg_t a[8], b[8];
    size_t n;
    uint64_t off;
    setup(ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL(tu_topic(st, "T", 1), GT_OK);
    CU_ASSERT_EQUAL(tu_group(st, "G", 5, ST_CONSUME_FROM_FIRST), GT_OK);
    for (int i = 0; i < 5; i++) {
        char body[8];
        snprintf(body, sizeof(body), "r%d", i);
        CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, body, 0, NULL), GT_OK);
    }
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 3, 60000, a, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", a[0].handle), GT_OK);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", a[2].handle), GT_OK);
    st_close(st);
    st = tu_open(dir, ST_FLUSH_SYNC);
    /* metadata survived */
    CU_ASSERT_EQUAL(tu_offset_get(st, "G", "T", 0, &off), GT_OK);
    CU_ASSERT_EQUAL(off, 1);
    /* r1 is still in flight: the rest are r3, r4 */
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 8, 60000, b, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_STRING_EQUAL(b[0].body, "r3");
    CU_ASSERT_STRING_EQUAL(b[1].body, "r4");
    st_handle_t h0, h1; /* each run hands out a fresh block of generations */
    CU_ASSERT_EQUAL(st_handle_decode(a[1].handle, &h0), GT_OK);
    CU_ASSERT_EQUAL(st_handle_decode(b[0].handle, &h1), GT_OK);
    CU_ASSERT(h1.gen >> 32 > h0.gen >> 32);
    /* the handle from before the restart still works */
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", a[1].handle), GT_OK);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", a[0].handle), GT_EINVAL);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", b[0].handle), GT_OK);
    CU_ASSERT_EQUAL(tu_offset_get(st, "G", "T", 0, &off), GT_OK);
    CU_ASSERT_EQUAL(off, 4);
    st_close(st);
    /* and once more: the compacted state log replays the same */
    st = tu_open(dir, ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL(tu_offset_get(st, "G", "T", 0, &off), GT_OK);
    CU_ASSERT_EQUAL(off, 4);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", b[1].handle), GT_OK);
    CU_ASSERT_EQUAL(tu_offset_get(st, "G", "T", 0, &off), GT_OK);
    CU_ASSERT_EQUAL(off, 5);
    st_topic_t t;
    memset(&t, 0, sizeof(t));
    teardown();
}

static void test_retention(void)
{
    char body[2048];
    uint64_t off;
    tu_msg_t m[ST_POP_MAX];
    size_t n;
    uint64_t next;
    setup(ST_FLUSH_ASYNC);
    memset(body, 'r', sizeof(body) - 1);
    body[sizeof(body) - 1] = 0;
    CU_ASSERT_EQUAL(tu_topic(st, "T", 1), GT_OK);
    for (int i = 0; i < 100; i++) { /* ~210 KiB over 64 KiB segments */
        char key[16];
        snprintf(key, sizeof(key), "k%d", i);
        CU_ASSERT_EQUAL(tu_send(st, "T", "a", key, body, 0, NULL), GT_OK);
    }
    st_index_info_t ixi;
    st_local_index_info(st, &ixi);
    size_t ix_before = ixi.mem_entries;
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 1, 60000, m, &n), GT_OK);
    tu_wait_synced(st); /* async: the snapshot covers what was synced */
    CU_ASSERT_EQUAL(st_local_snapshot(st), GT_OK);
    char snap[1024], old[1024];
    snprintf(snap, sizeof(snap), "%s/tables.snap", dir);
    snprintf(old, sizeof(old), "%s/tables.old", dir);
    tu_copy_file(snap, old);
    st_local_retention_run(st, st_now_ms() - 3600 * 1000);
    CU_ASSERT_EQUAL(tu_offset_query(st, "T", 0, ST_OFFSET_BEGIN, 0, &off),
                    GT_OK);
    CU_ASSERT_EQUAL(off, 0); /* nothing old enough yet */
    st_local_retention_run(st, st_now_ms() + 73LL * 3600 * 1000);
    CU_ASSERT_EQUAL(tu_offset_query(st, "T", 0, ST_OFFSET_BEGIN, 0, &off),
                    GT_OK);
    CU_ASSERT(off > 50); /* all but the current segment went */
    uint64_t min = off;
    CU_ASSERT_EQUAL(tu_pull(st, "T", 0, 0, 4, m, &n, &next), GT_OK);
    CU_ASSERT_EQUAL(n, 4);
    CU_ASSERT_EQUAL(m[0].offset, min);
    CU_ASSERT_EQUAL(tu_offset_get(st, "G", "T", 0, &off), GT_OK);
    CU_ASSERT_EQUAL(off, min); /* consumers move to the new minimum */
    /* the index follows: old keys are gone, recent ones found */
    st_local_index_info(st, &ixi);
    CU_ASSERT(ixi.mem_entries < ix_before);
    CU_ASSERT_EQUAL(tu_lookup(st, true, NULL, "k0", m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(tu_lookup(st, true, NULL, "k99", m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 1);
    st_close(st);
    st = tu_open(dir, ST_FLUSH_ASYNC);
    CU_ASSERT_EQUAL(tu_offset_query(st, "T", 0, ST_OFFSET_BEGIN, 0, &off),
                    GT_OK);
    CU_ASSERT_EQUAL(off, min);
    CU_ASSERT_EQUAL(tu_offset_query(st, "T", 0, ST_OFFSET_END, 0, &off), GT_OK);
    CU_ASSERT_EQUAL(off, 100);
    st_close(st);
    /* a snapshot from before retention: segments gone from the front */
    tu_copy_file(old, snap);
    st = tu_open(dir, ST_FLUSH_ASYNC);
    CU_ASSERT_EQUAL(tu_offset_query(st, "T", 0, ST_OFFSET_BEGIN, 0, &off),
                    GT_OK);
    CU_ASSERT_EQUAL(off, min);
    CU_ASSERT_EQUAL(tu_offset_query(st, "T", 0, ST_OFFSET_END, 0, &off), GT_OK);
    CU_ASSERT_EQUAL(off, 100);
    CU_ASSERT_EQUAL(tu_lookup(st, true, NULL, "k0", m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(tu_lookup(st, true, NULL, "k99", m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 1);
    unlink(old);
    teardown();
}

/* The size of the state log once the service thread is not compacting it
 * and it is under want bytes (waits a while for that, then answers the
 * size anyway). */
static long state_size_idle(const char *path, long want)
{
    st_local_t *sl = (st_local_t *)st;
    long size = 0;
    for (int i = 0; i < 30000; i++) {
        pthread_mutex_lock(&sl->lock);
        bool busy = sl->state_tail != NULL;
        pthread_mutex_unlock(&sl->lock);
        size = tu_file_size(path);
        if (!busy && size > 0 && size < want)
            break;
        tu_clock_advance(st, 0); /* wakes the service thread */
        tu_sleep_ms(1);
    }
    return size;
}

static void test_state_compaction(void)
{
    st_config_t c;
    char path[1024];
    tu_msg_t m[32];
    size_t n;
    uint64_t off;
    dir = tu_tmpdir("compact");
    tu_config(&c, dir, ST_FLUSH_ASYNC);
    c.state_compact_bytes = 16 * 1024;
    CU_ASSERT_EQUAL_FATAL(st_local_open(&c, &st), GT_OK);
    CU_ASSERT_EQUAL(tu_topic(st, "T", 2), GT_OK);
    for (int i = 0; i < 600; i++)
        CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "c", -1, NULL), GT_OK);
    /* 600 pops + 599 acks: ~100 KiB of records; one stays in flight */
    char keep[ST_HANDLE_MAX] = "";
    size_t total = 0;
    do {
        CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 32, 60000, m, &n),
                        GT_OK);
        for (size_t i = 0; i < n; i++) {
            if (!keep[0])
                strcpy(keep, m[i].handle);
            else
                CU_ASSERT_EQUAL(tu_ack(st, "G", "T", m[i].handle), GT_OK);
        }
        total += n;
    } while (n > 0);
    CU_ASSERT_EQUAL(total, 600);
    snprintf(path, sizeof(path), "%s/state.log", dir);
    /* ~80 KiB were logged; the service thread compacted on the way */
    long size = state_size_idle(path, 70 * 1024);
    CU_ASSERT(size > 0 && size < 70 * 1024);
    st_local_state_compact(st); /* a no-op if the service thread is at it */
    long after = state_size_idle(path, 40 * 1024);
    CU_ASSERT(after > 0 && after < 40 * 1024);
    st_close(st);
    CU_ASSERT_EQUAL_FATAL(st_local_open(&c, &st), GT_OK);
    uint64_t sum = 0;
    for (uint32_t q = 0; q < 2; q++) {
        CU_ASSERT_EQUAL(tu_offset_get(st, "G", "T", q, &off), GT_OK);
        sum += off;
    }
    CU_ASSERT(sum < 600); /* the kept one holds its queue back */
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", keep), GT_OK);
    sum = 0;
    for (uint32_t q = 0; q < 2; q++) {
        CU_ASSERT_EQUAL(tu_offset_get(st, "G", "T", q, &off), GT_OK);
        sum += off;
    }
    CU_ASSERT_EQUAL(sum, 600);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 32, 60000, m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 0);
    teardown();
}

static size_t count_all(const char *topic)
{
    tu_msg_t m[64];
    size_t n, total = 0;
    uint64_t next = 0;
    do {
        CU_ASSERT_EQUAL_FATAL(tu_pull(st, topic, 0, next, 64, m, &n, &next),
                              GT_OK);
        total += n;
    } while (n > 0);
    return total;
}

/* A clean close saves consume queues and the index; the next start loads
 * them and scans only what follows.  Stale or damaged snapshots must not
 * change what a start sees. */
static void test_table_snapshot(void)
{
    char snap[1024], old[1024], body[2048];
    tu_msg_t m[ST_POP_MAX];
    size_t n;
    setup(ST_FLUSH_SYNC);
    snprintf(snap, sizeof(snap), "%s/tables.snap", dir);
    snprintf(old, sizeof(old), "%s/tables.old", dir);
    CU_ASSERT_EQUAL(tu_topic(st, "T", 1), GT_OK);
    for (int i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(tu_send(st, "T", "a", "k-early", "e", 0, NULL), GT_OK);
    st_close(st);
    CU_ASSERT(tu_file_size(snap) > 0);
    tu_copy_file(snap, old);
    st = tu_open(dir, ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL(count_all("T"), 5);
    for (int i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(tu_send(st, "T", "a", "k-late", "l", 0, NULL), GT_OK);
    st_close(st);
    /* stale but compatible: the tail scan adds what came later */
    tu_copy_file(old, snap);
    st = tu_open(dir, ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL(count_all("T"), 10);
    CU_ASSERT_EQUAL(tu_lookup(st, true, NULL, "k-late", m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 5);
    CU_ASSERT_EQUAL(tu_lookup(st, true, NULL, "k-early", m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 5);
    st_close(st);
    /* damaged: ignored */
    size_t len;
    uint8_t *b = tu_read_file(snap, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    b[len / 2] ^= 0x40;
    tu_write_file(snap, b, len);
    free(b);
    st = tu_open(dir, ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL(count_all("T"), 10);
    memset(body, 'x', sizeof(body) - 1);
    body[sizeof(body) - 1] = 0;
    for (int i = 0; i < 40; i++) /* rolls to new segments */
        CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, body, 0, NULL), GT_OK);
    st_close(st);
    /* stale and incompatible (other segments): full scan */
    tu_copy_file(old, snap);
    st = tu_open(dir, ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL(count_all("T"), 50);
    CU_ASSERT_EQUAL(tu_lookup(st, true, NULL, "k-late", m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 5);
    unlink(old);
    teardown();
}

static void test_stats(void)
{
    st_stats_t s;
    tu_msg_t m[4];
    size_t n;
    setup(ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL(tu_topic(st, "T", 2), GT_OK);
    for (int i = 0; i < 6; i++)
        CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "s", i % 2, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 3, 60000, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", m[0].handle), GT_OK);
    CU_ASSERT_EQUAL(tu_stats(st, "T", "G", &s), GT_OK);
    CU_ASSERT_EQUAL(s.nqueues, 2);
    CU_ASSERT_EQUAL(s.messages, 6);
    CU_ASSERT(s.bytes > 6 * ST_REC_HDR);
    CU_ASSERT_EQUAL(s.inflight, 2);
    CU_ASSERT_EQUAL(s.ready, 3);
    CU_ASSERT(s.lag == 5 || s.lag == 6);
    CU_ASSERT_EQUAL(tu_stats(st, "T", "nope", &s), GT_ENOTFOUND);
    teardown();
}

/* ---- concurrency ----------------------------------------------------------------- */
typedef struct app_arg {
    st_store_t *st;
    int id;
    uint64_t pos[200];
    int ok;
} app_arg_t;

static void *appender(void *p)
{
    app_arg_t *a = p;
    for (int i = 0; i < 200; i++) {
        st_append_item_t it;
        char body[32];
        snprintf(body, sizeof(body), "t%d-%d", a->id, i);
        if (tu_send(a->st, "T", "a", NULL, body, -1, &it) == GT_OK)
            a->pos[a->ok++] = it.position;
    }
    return NULL;
}

static void concurrent(st_flush_t flush)
{
    pthread_t th[4];
    app_arg_t args[4];
    setup(flush);
    CU_ASSERT_EQUAL(tu_topic(st, "T", 3), GT_OK);
    for (int i = 0; i < 4; i++) {
        memset(&args[i], 0, sizeof(args[i]));
        args[i].st = st;
        args[i].id = i;
        pthread_create(&th[i], NULL, appender, &args[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    st_stats_t s;
    CU_ASSERT_EQUAL(tu_stats(st, "T", NULL, &s), GT_OK);
    CU_ASSERT_EQUAL(s.messages, 800);
    for (int i = 0; i < 4; i++)
        CU_ASSERT_EQUAL(args[i].ok, 200);
    /* every message is poppable exactly once */
    size_t total = 0, n;
    tu_msg_t m[32];
    do {
        CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "*", 32, 60000, m, &n),
                        GT_OK);
        total += n;
    } while (n > 0);
    CU_ASSERT_EQUAL(total, 800);
    teardown();
}

static void test_concurrent_sync(void) { concurrent(ST_FLUSH_SYNC); }
static void test_concurrent_async(void) { concurrent(ST_FLUSH_ASYNC); }

static void test_metadata(void)
{
    setup(ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL(tu_topic(st, "bad name", 1), GT_EINVAL);
    CU_ASSERT_EQUAL(tu_topic(st, "T", 0), GT_EINVAL);
    CU_ASSERT_EQUAL(tu_topic(st, "T", 2), GT_OK);
    CU_ASSERT_EQUAL(tu_topic(st, "T", 4), GT_OK); /* grows */
    CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "x", 3, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_group(st, "G", 0, ST_CONSUME_FROM_FIRST), GT_EINVAL);
    CU_ASSERT_EQUAL(tu_group(st, "G", 3, ST_CONSUME_FROM_LAST), GT_OK);
    st_group_t rg = {.name = "R", .max_delivery_attempts = 5,
                     .retry = {.initial_ms = 1000, .max_ms = 60000,
                               .multiplier = 200}};
    CU_ASSERT_EQUAL(tu_group_put(st, &rg), GT_OK);
    rg.retry.multiplier = 20000;
    CU_ASSERT_EQUAL(tu_group_put(st, &rg), GT_EINVAL);
    st_close(st);
    st = tu_open(dir, ST_FLUSH_SYNC);
    st_group_t got;
    memset(&got, 0, sizeof(got));
    CU_ASSERT_EQUAL(tu_group_get(st, "R", &got), GT_OK); /* persisted */
    CU_ASSERT_EQUAL(got.max_delivery_attempts, 5);
    CU_ASSERT_EQUAL(got.retry.initial_ms, 1000);
    CU_ASSERT_EQUAL(got.retry.max_ms, 60000);
    CU_ASSERT_EQUAL(got.retry.multiplier, 200);
    CU_ASSERT_EQUAL(tu_group_get(st, "G", &got), GT_OK);
    CU_ASSERT_EQUAL(got.consume_from, ST_CONSUME_FROM_LAST);
    CU_ASSERT_EQUAL(got.retry.initial_ms, 0);
    CU_ASSERT_EQUAL(tu_group_get(st, "nope", &got), GT_ENOTFOUND);
    st_retry_policy_t p = {1000, 60000, 200}, fixed = {500, 0, 0};
    CU_ASSERT_EQUAL(st_retry_backoff_ms(&p, 1), 1000);
    CU_ASSERT_EQUAL(st_retry_backoff_ms(&p, 2), 2000);
    CU_ASSERT_EQUAL(st_retry_backoff_ms(&p, 4), 8000);
    CU_ASSERT_EQUAL(st_retry_backoff_ms(&p, 30), 60000);
    CU_ASSERT_EQUAL(st_retry_backoff_ms(&fixed, 7), 500);
    CU_ASSERT_EQUAL(st_retry_backoff_ms(NULL, 3), 0);
    CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "x", 3, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_send(st, "T", "a", NULL, "x", 4, NULL), GT_EINVAL);
    teardown();
}

static void test_config(void)
{
    st_config_t c;
    st_store_t *s = NULL;
    char *d = tu_tmpdir("cfg");
    st_config_init(&c);
    CU_ASSERT_EQUAL(c.segment_size, 1ull << 30);
    CU_ASSERT_EQUAL(c.flush, ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL(c.retention_hours, 72);
    CU_ASSERT_EQUAL(st_local_open(&c, &s), GT_EINVAL); /* no dir */
    c.dir = d;
    c.segment_size = 1 << 20; /* smaller than a 4 MiB message */
    CU_ASSERT_EQUAL(st_local_open(&c, &s), GT_EINVAL);
    CU_ASSERT_PTR_NULL(s);
    tu_config(&c, d, ST_FLUSH_SYNC);
    CU_ASSERT_EQUAL_FATAL(st_local_open(&c, &s), GT_OK);
    st_store_t *s2 = NULL; /* one process per data directory */
    CU_ASSERT_EQUAL(st_local_open(&c, &s2), GT_EBUSY);
    st_close(s);
    CU_ASSERT_TRUE(st_err_retriable(GT_ENOSPC));
    CU_ASSERT_FALSE(st_err_retriable(GT_EINVAL));
    char name[ST_NAME_MAX + 1];
    CU_ASSERT_EQUAL(st_dlq_topic_name("g1", name, sizeof(name)), GT_OK);
    CU_ASSERT_STRING_EQUAL(name, "%DLQ%g1");
    tu_rmrf(d);
    free(d);
}

static const CU_TestInfo tests[] = {
    {"append_pull", test_append_pull},
    {"pop_ack", test_pop_ack},
    {"expiry_redelivery", test_expiry_redelivery},
    {"change_invisible", test_change_invisible},
    {"stale_handles", test_stale_handles},
    {"dlq", test_dlq},
    {"tag_filter", test_tag_filter},
    {"offsets", test_offsets},
    {"lookup", test_lookup},
    {"long_poll", test_long_poll},
    {"parked_many", test_parked_many},
    {"fifo", test_fifo},
    {"delay", test_delay},
    {"restart", test_restart},
    {"retention", test_retention},
    {"state_compaction", test_state_compaction},
    {"table_snapshot", test_table_snapshot},
    {"stats", test_stats},
    {"concurrent_sync", test_concurrent_sync},
    {"concurrent_async", test_concurrent_async},
    {"metadata", test_metadata},
    {"config", test_config},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    tu_clock_start(); /* time moves only by tu_clock_advance() */
    int rc = tu_run("store", tests);
    tu_clock_stop();
    return rc;
}
