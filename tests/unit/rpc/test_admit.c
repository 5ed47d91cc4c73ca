/* Unit tests for the runtime's admission bookkeeping (px_admit_t): the
 * global and per-connection bounds, the "alone" rule, adjusting a
 * reservation to the real size, releasing, and the trim signal. */
#include <stdio.h>

#include <CUnit/Basic.h>

#include "px_rpc_int.h"

#define MiB (1024LL * 1024)

static void test_bounds(void)
{
    px_admit_t a;
    px_conn_t *c1, *c2, *c3, *x;
    px_rpc_stats_t st;

    px_admit_init(&a, 10 * MiB, 6 * MiB);
    CU_ASSERT_TRUE(px_admit_enter(&a, "ipv4:1", 4 * MiB, false, &c1));
    /* Same connection: 4 + 4 > 6 is refused. */
    CU_ASSERT_FALSE(px_admit_enter(&a, "ipv4:1", 4 * MiB, false, &x));
    CU_ASSERT_PTR_NULL(x);
    /* Another connection fits globally (8 <= 10). */
    CU_ASSERT_TRUE(px_admit_enter(&a, "ipv4:2", 4 * MiB, false, &c2));
    /* 8 + 4 > 10: refused globally, whatever the connection. */
    CU_ASSERT_FALSE(px_admit_enter(&a, "ipv4:3", 4 * MiB, false, &x));
    /* Forced (a bidi stream): admitted anyway. */
    CU_ASSERT_TRUE(px_admit_enter(&a, "ipv4:3", 0, true, &c3));
    px_admit_stats(&a, &st);
    CU_ASSERT_EQUAL(st.inflight_bytes, 8 * MiB);
    CU_ASSERT_EQUAL(st.rejected_overload, 2);
    CU_ASSERT_EQUAL(st.calls, 3);
    px_admit_leave(&a, c1, 4 * MiB);
    px_admit_leave(&a, c2, 4 * MiB);
    px_admit_leave(&a, c3, 0);
    px_admit_stats(&a, &st);
    CU_ASSERT_EQUAL(st.inflight_bytes, 0);
    CU_ASSERT_EQUAL(st.inflight_peak_bytes, 8 * MiB);
    px_admit_destroy(&a);
}

/* A request larger than a bound is served when nothing else is there. */
static void test_alone(void)
{
    px_admit_t a;
    px_conn_t *c1, *c2;

    px_admit_init(&a, 10 * MiB, 6 * MiB);
    CU_ASSERT_TRUE(px_admit_enter(&a, "p", 1024, false, &c1));
    CU_ASSERT_TRUE(px_admit_adjust(&a, c1, 1024, 50 * MiB, false));
    /* Nothing fits beside it now. */
    CU_ASSERT_FALSE(px_admit_enter(&a, "q", 1024, false, &c2));
    px_admit_leave(&a, c1, 50 * MiB);
    CU_ASSERT_TRUE(px_admit_enter(&a, "q", 1024, false, &c2));
    px_admit_leave(&a, c2, 1024);
    px_admit_destroy(&a);
}

static void test_adjust(void)
{
    px_admit_t a;
    px_conn_t *c1, *c2;
    px_rpc_stats_t st;

    px_admit_init(&a, 10 * MiB, 0 /* no per-connection bound */);
    CU_ASSERT_TRUE(px_admit_enter(&a, "p", 1024, false, &c1));
    CU_ASSERT_TRUE(px_admit_enter(&a, "p", 1024, false, &c2));
    CU_ASSERT_TRUE(px_admit_adjust(&a, c1, 1024, 8 * MiB, false));
    /* The second grows past the bound beside the first: refused, its
     * charge stays the reservation. */
    CU_ASSERT_FALSE(px_admit_adjust(&a, c2, 1024, 4 * MiB, false));
    px_admit_stats(&a, &st);
    CU_ASSERT_EQUAL(st.inflight_bytes, 8 * MiB + 1024);
    CU_ASSERT_EQUAL(st.rejected_overload, 1);
    /* Shrinking is always allowed. */
    CU_ASSERT_TRUE(px_admit_adjust(&a, c2, 1024, 10, false));
    /* Forced growth (bidi messages) is always allowed. */
    CU_ASSERT_TRUE(px_admit_adjust(&a, c2, 10, 20 * MiB, true));
    px_admit_leave(&a, c2, 20 * MiB);
    px_admit_leave(&a, c1, 8 * MiB);
    px_admit_stats(&a, &st);
    CU_ASSERT_EQUAL(st.inflight_bytes, 0);
    px_admit_destroy(&a);
}

/* Small calls keep a sixteenth of the bound above it: served while
 * large ones fill the bound, up to that headroom. */
static void test_small_headroom(void)
{
    enum { N = 16 };
    px_admit_t a;
    px_conn_t *big, *x, *small[N];
    px_rpc_stats_t st;

    px_admit_init(&a, 16 * MiB, 0);
    CU_ASSERT_TRUE(px_admit_enter(&a, "big", 16 * MiB, false, &big));
    /* Full for anything larger than small... */
    CU_ASSERT_FALSE(px_admit_enter(&a, "other", PX_ADMIT_SMALL_BYTES + 1, false, &x));
    /* ...not for small calls, up to 1 MiB (16 MiB / 16) of them. */
    for (int i = 0; i < N; i++)
        CU_ASSERT_TRUE(px_admit_enter(&a, "ctl", PX_ADMIT_SMALL_BYTES, false, &small[i]));
    CU_ASSERT_FALSE(px_admit_enter(&a, "ctl", 1024, false, &x));
    /* A small call may shrink, and grow within the small size. */
    CU_ASSERT_TRUE(px_admit_adjust(&a, small[0], PX_ADMIT_SMALL_BYTES, 1000, false));
    CU_ASSERT_TRUE(px_admit_adjust(&a, small[0], 1000, 2000, false));
    CU_ASSERT_FALSE(px_admit_adjust(&a, small[1], PX_ADMIT_SMALL_BYTES,
                                    PX_ADMIT_SMALL_BYTES + 1, false));
    px_admit_stats(&a, &st);
    CU_ASSERT_EQUAL(st.inflight_bytes, 16 * MiB + (N - 1) * PX_ADMIT_SMALL_BYTES + 2000);
    px_admit_leave(&a, small[0], 2000);
    for (int i = 1; i < N; i++)
        px_admit_leave(&a, small[i], PX_ADMIT_SMALL_BYTES);
    px_admit_leave(&a, big, 16 * MiB);
    px_admit_destroy(&a);
}

/* Request sizes are remembered per connection and method index. */
static void test_conn_size(void)
{
    px_admit_t a;
    px_conn_t *c, *d;

    px_admit_init(&a, 0, 0);
    CU_ASSERT_EQUAL(px_admit_conn_size(&a, "p", 2), 0); /* unknown */
    CU_ASSERT_TRUE(px_admit_enter(&a, "p", 1024, false, &c));
    CU_ASSERT_EQUAL(px_admit_conn_size(&a, "p", 2), 0); /* nothing read */
    px_admit_note_size(&a, c, 2, 1000); /* the first sets it */
    CU_ASSERT_EQUAL(px_admit_conn_size(&a, "p", 2), 1000);
    px_admit_note_size(&a, c, 2, 5000); /* then weight 1/4 */
    CU_ASSERT_EQUAL(px_admit_conn_size(&a, "p", 2), 2000);
    CU_ASSERT_EQUAL(px_admit_conn_size(&a, "p", 3), 0); /* another method */
    CU_ASSERT_EQUAL(px_admit_conn_size(&a, "q", 2), 0); /* another peer */
    px_admit_note_size(&a, c, PX_ADMIT_METHODS, 7); /* not kept */
    CU_ASSERT_EQUAL(px_admit_conn_size(&a, "p", PX_ADMIT_METHODS), 0);
    px_admit_leave(&a, c, 1024);
    /* Kept while the connection is idle: its next call finds it. */
    CU_ASSERT_EQUAL(px_admit_conn_size(&a, "p", 2), 2000);
    CU_ASSERT_TRUE(px_admit_enter(&a, "p", 1024, false, &d));
    CU_ASSERT_PTR_EQUAL(c, d);
    px_admit_leave(&a, d, 1024);
    px_admit_destroy(&a);
}

/* A connection refused without a known size probes once: its next call
 * is told to reserve little, so that its size is learnt. */
static void test_probe(void)
{
    px_admit_t a;
    px_conn_t *c;

    px_admit_init(&a, 0, 0);
    px_admit_note_refused(&a, "p", 1); /* creates the entry */
    CU_ASSERT_EQUAL(a.n_conns, 1);
    CU_ASSERT_EQUAL(a.n_idle, 1);
    CU_ASSERT_EQUAL(px_admit_conn_size(&a, "p", 1), -1);
    /* One probe at a time: the next ones go by the usual guess. */
    CU_ASSERT_EQUAL(px_admit_conn_size(&a, "p", 1), 0);
    /* A refused probe (or a call beside it): the next call probes. */
    px_admit_note_refused(&a, "p", 1);
    CU_ASSERT_EQUAL(px_admit_conn_size(&a, "p", 1), -1);
    CU_ASSERT_EQUAL(px_admit_conn_size(&a, "p", 1), 0);
    CU_ASSERT_EQUAL(px_admit_conn_size(&a, "p", 2), 0); /* other method */
    /* The probe's size is noted: known from then on. */
    CU_ASSERT_TRUE(px_admit_enter(&a, "p", 1024, false, &c));
    CU_ASSERT_EQUAL(a.n_idle, 0);
    px_admit_note_size(&a, c, 1, 300);
    CU_ASSERT_EQUAL(px_admit_conn_size(&a, "p", 1), 300);
    px_admit_note_refused(&a, "p", 1); /* a known size is kept */
    CU_ASSERT_EQUAL(px_admit_conn_size(&a, "p", 1), 300);
    px_admit_leave(&a, c, 1024);
    px_admit_destroy(&a);
}

/* A request admitted but never read (the core refused it past its
 * receive limit after reading it whole): one of known size makes the
 * next one a probe; one of unknown size holds the connection's next ones
 * of that method off, longer with each such in a row, and the one after
 * the hold probes; a request read resets it. */
static void test_unread_hold(void)
{
    px_admit_t a;
    px_conn_t *c;
    px_rpc_stats_t st;
    const int64_t h = PX_ADMIT_UNREAD_HOLD_MS;

    px_admit_init(&a, 0, 0);
    CU_ASSERT_TRUE(px_admit_enter(&a, "p", 1024, false, &c));
    px_admit_note_size(&a, c, 1, 300);
    px_admit_note_unread(&a, c, 1, false, 1000); /* of known size */
    CU_ASSERT_FALSE(px_admit_held_off(&a, "p", 1, 1000));
    CU_ASSERT_EQUAL(px_admit_conn_size(&a, "p", 1), -1); /* a probe */
    px_admit_note_size(&a, c, 1, 300);
    CU_ASSERT_FALSE(px_admit_held_off(&a, "p", 1, 1000));
    px_admit_note_unread(&a, c, 1, true, 1000);
    CU_ASSERT_TRUE(px_admit_held_off(&a, "p", 1, 1000));
    CU_ASSERT_TRUE(px_admit_held_off(&a, "p", 1, 1000 + h - 1));
    CU_ASSERT_FALSE(px_admit_held_off(&a, "p", 1, 1000 + h));
    CU_ASSERT_FALSE(px_admit_held_off(&a, "p", 2, 1000)); /* other method */
    CU_ASSERT_FALSE(px_admit_held_off(&a, "q", 1, 1000)); /* other peer */
    px_admit_stats(&a, &st);
    CU_ASSERT_EQUAL(st.rejected_overload, 2); /* each hold is a refusal */
    /* After the hold, a probe: its size was forgotten. */
    CU_ASSERT_EQUAL(px_admit_conn_size(&a, "p", 1), -1);
    /* Another unread one in a row: twice the hold. */
    px_admit_note_unread(&a, c, 1, true, 5000);
    CU_ASSERT_TRUE(px_admit_held_off(&a, "p", 1, 5000 + 2 * h - 1));
    CU_ASSERT_FALSE(px_admit_held_off(&a, "p", 1, 5000 + 2 * h));
    /* Up to the longest hold. */
    for (int i = 0; i < 20; i++)
        px_admit_note_unread(&a, c, 1, true, 9000);
    CU_ASSERT_TRUE(px_admit_held_off(&a, "p", 1,
                                      9000 + PX_ADMIT_UNREAD_HOLD_MAX_MS - 1));
    CU_ASSERT_FALSE(px_admit_held_off(&a, "p", 1,
                                       9000 + PX_ADMIT_UNREAD_HOLD_MAX_MS));
    /* A request read resets the count: the next unread one holds h. */
    px_admit_note_size(&a, c, 1, 300);
    px_admit_note_unread(&a, c, 1, true, 100000);
    CU_ASSERT_TRUE(px_admit_held_off(&a, "p", 1, 100000 + h - 1));
    CU_ASSERT_FALSE(px_admit_held_off(&a, "p", 1, 100000 + h));
    px_admit_note_unread(&a, NULL, 1, true, 0);               /* no entry: nothing */
    px_admit_note_unread(&a, c, PX_ADMIT_METHODS, true, 0); /* not kept */
    CU_ASSERT_FALSE(px_admit_held_off(&a, "p", PX_ADMIT_METHODS, 0));
    px_admit_leave(&a, c, 1024);
    px_admit_destroy(&a);
}

/* Reads of unknown size when the bound is tight (their worst case never
 * fits): one at a time, on its guess; others of unknown size are
 * refused meanwhile, those of known size are not. */
static void test_unknown_tight(void)
{
    px_admit_t a;
    px_conn_t *c1, *c2, *k, *x;
    int64_t held;
    bool guessed;
    px_rpc_stats_t st;

    px_admit_init(&a, 16 * MiB, 0);
    CU_ASSERT_EQUAL(px_admit_enter_unknown(&a, "p1", 1024, 40 * MiB, &c1,
                                          &held, &guessed), PX_ADMIT_OK);
    CU_ASSERT_EQUAL(held, 0);
    CU_ASSERT_TRUE(guessed);
    /* Another connection's first request waits for that one's size
     * (queued by the runtime, not refused: not counted). */
    CU_ASSERT_EQUAL(px_admit_enter_unknown(&a, "p2", 1024, 40 * MiB, &x,
                                           &held, &guessed), PX_ADMIT_WAIT);
    CU_ASSERT_PTR_NULL(x);
    CU_ASSERT_FALSE(guessed);
    /* A request of known size is not held up. */
    CU_ASSERT_TRUE(px_admit_enter(&a, "k", 4 * MiB, false, &k));
    px_admit_stats(&a, &st);
    CU_ASSERT_EQUAL(st.inflight_bytes, 1024 + 4 * MiB);
    CU_ASSERT_EQUAL(st.rejected_overload, 0);
    px_admit_count_refusal(&a);
    px_admit_stats(&a, &st);
    CU_ASSERT_EQUAL(st.rejected_overload, 1);
    /* The first one's message is in: the next may be read. */
    px_admit_unknown_done(&a, 0, true);
    CU_ASSERT_TRUE(px_admit_adjust(&a, c1, 1024, 6 * MiB, false));
    CU_ASSERT_EQUAL(px_admit_enter_unknown(&a, "p2", 1024, 40 * MiB, &c2,
                                          &held, &guessed), PX_ADMIT_OK);
    CU_ASSERT_TRUE(guessed);
    px_admit_unknown_done(&a, 0, true);
    /* The slot needs the guess to fit too (here a small one, with the
     * headroom for small calls): a full bound refuses it. */
    CU_ASSERT_TRUE(px_admit_adjust(&a, c2, 1024, 6 * MiB, false));
    CU_ASSERT_EQUAL(px_admit_enter_unknown(&a, "p3", 2 * MiB, 40 * MiB, &x,
                                           &held, &guessed), PX_ADMIT_REFUSED);
    px_admit_leave(&a, c1, 6 * MiB);
    px_admit_leave(&a, c2, 6 * MiB);
    px_admit_leave(&a, k, 4 * MiB);
    /* Without a server bound nothing of this applies. */
    px_admit_destroy(&a);
    px_admit_init(&a, 0, 0);
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(px_admit_enter_unknown(&a, "p", 1024, 40 * MiB, &c1,
                                              &held, &guessed), PX_ADMIT_OK);
        CU_ASSERT_EQUAL(held, 0);
        CU_ASSERT_FALSE(guessed);
    }
    for (int i = 0; i < 3; i++)
        px_admit_leave(&a, c1, 1024);
    px_admit_destroy(&a);
}

/* Reads of unknown size when the bound is loose: each holds its worst
 * case under the bound, as many as fit; past that one more goes on its
 * guess. */
static void test_unknown_loose(void)
{
    enum { N = 8 };
    px_admit_t a;
    px_conn_t *c[N + 1], *x;
    int64_t held[N + 1], h;
    bool guessed[N + 1], g;
    char peer[16];
    px_rpc_stats_t st;

    /* The connection bound (2 MiB) goes by the guess, not the worst case
     * (which is server-wide only). */
    px_admit_init(&a, N * 10 * MiB, 2 * MiB);
    for (int i = 0; i < N; i++) {
        snprintf(peer, sizeof(peer), "p%d", i);
        CU_ASSERT_EQUAL(px_admit_enter_unknown(&a, peer, 1024, 10 * MiB, &c[i],
                                              &held[i], &guessed[i]), PX_ADMIT_OK);
        CU_ASSERT_EQUAL(held[i], 10 * MiB - 1024);
        CU_ASSERT_FALSE(guessed[i]);
    }
    px_admit_stats(&a, &st);
    CU_ASSERT_EQUAL(st.inflight_bytes, N * 10 * MiB);
    CU_ASSERT_EQUAL(st.inflight_peak_bytes, N * 10 * MiB);
    /* The worst cases fill the bound, for known sizes too... */
    CU_ASSERT_FALSE(px_admit_enter(&a, "k", MiB, false, &x));
    /* ...except the headroom of small calls... */
    CU_ASSERT_TRUE(px_admit_enter(&a, "k", 1024, false, &x));
    px_admit_leave(&a, x, 1024);
    /* ...and one read on its guess. */
    CU_ASSERT_EQUAL(px_admit_enter_unknown(&a, "q", 1024, 10 * MiB, &c[N],
                                          &held[N], &guessed[N]), PX_ADMIT_OK);
    CU_ASSERT_TRUE(guessed[N]);
    CU_ASSERT_EQUAL(px_admit_enter_unknown(&a, "r", 1024, 10 * MiB, &x, &h, &g),
                    PX_ADMIT_WAIT);
    /* A guess that does not fit even with the headroom is refused. */
    CU_ASSERT_EQUAL(px_admit_enter_unknown(&a, "r", 4 * MiB, 10 * MiB, &x, &h,
                                           &g),
                    PX_ADMIT_REFUSED);
    /* Messages in: holds released, real sizes charged. */
    for (int i = 0; i <= N; i++) {
        px_admit_unknown_done(&a, held[i], guessed[i]);
        CU_ASSERT_TRUE(px_admit_adjust(&a, c[i], 1024, 2 * MiB, false));
    }
    px_admit_stats(&a, &st);
    CU_ASSERT_EQUAL(st.inflight_bytes, (N + 1) * 2 * MiB);
    CU_ASSERT_EQUAL(a.held, 0);
    CU_ASSERT_EQUAL(a.guessed, 0);
    for (int i = 0; i <= N; i++)
        px_admit_leave(&a, c[i], 2 * MiB);
    px_admit_destroy(&a);
}

/* A waiter of unknown size (px_admit_wait_t), as the server fills it. */
static px_admit_waiter_t waiter(const char *peer)
{
    return (px_admit_waiter_t){.peer = peer, .want = 1024, .worst = 40 * MiB};
}

/* The wait queue: calls that find the slot of reads on a guess taken are
 * queued (not refused, not counted), served oldest first as the slot
 * frees, expire after the limit, leave when cancelled, and are refused
 * once the queue is full. */
static void test_wait_queue(void)
{
    px_admit_t a;
    px_admit_wait_t q;
    px_admit_waiter_t first = waiter("p0"), w1 = waiter("p1"),
                      w2 = waiter("p2"), w3 = waiter("p3"), w4 = waiter("p4");
    px_admit_verdict_t v;
    px_rpc_stats_t st;

    px_admit_init(&a, 16 * MiB, 0);
    px_admit_wait_init(&q, &a, 3, 100);
    /* The queue is empty: the first takes the slot. */
    CU_ASSERT_EQUAL(px_admit_wait_enter(&q, &first, 0), PX_ADMIT_OK);
    CU_ASSERT_TRUE(first.guessed);
    CU_ASSERT_PTR_NOT_NULL(first.conn);
    CU_ASSERT_EQUAL(px_admit_wait_enter(&q, &w1, 10), PX_ADMIT_WAIT);
    CU_ASSERT_EQUAL(px_admit_wait_enter(&q, &w2, 20), PX_ADMIT_WAIT);
    CU_ASSERT_EQUAL(px_admit_wait_enter(&q, &w3, 30), PX_ADMIT_WAIT);
    CU_ASSERT_EQUAL(px_admit_wait_count(&q), 3);
    /* Full: refused, counted. */
    CU_ASSERT_EQUAL(px_admit_wait_enter(&q, &w4, 40), PX_ADMIT_REFUSED);
    px_admit_stats(&a, &st);
    CU_ASSERT_EQUAL(st.rejected_overload, 1);
    /* Nothing released: nobody is served, nobody expires yet. */
    CU_ASSERT_PTR_NULL(px_admit_wait_next(&q, false, 0, &v));
    CU_ASSERT_PTR_NULL(px_admit_wait_next(&q, true, 105, &v));
    /* A cancelled call leaves (once). */
    CU_ASSERT_TRUE(px_admit_wait_remove(&q, &w2));
    CU_ASSERT_FALSE(px_admit_wait_remove(&q, &w2));
    CU_ASSERT_EQUAL(px_admit_wait_count(&q), 2);
    /* The slot frees: the oldest is served, the next waits on. */
    px_admit_unknown_done(&a, first.held, first.guessed);
    CU_ASSERT_PTR_EQUAL(px_admit_wait_next(&q, false, 0, &v), &w1);
    CU_ASSERT_EQUAL(v, PX_ADMIT_OK);
    CU_ASSERT_TRUE(w1.guessed);
    CU_ASSERT_PTR_NOT_NULL(w1.conn);
    CU_ASSERT_PTR_NULL(px_admit_wait_next(&q, false, 0, &v));
    /* Past its limit (100 ms from 30), the last is refused. */
    CU_ASSERT_PTR_EQUAL(px_admit_wait_next(&q, true, 130, &v), &w3);
    CU_ASSERT_EQUAL(v, PX_ADMIT_REFUSED);
    CU_ASSERT_EQUAL(px_admit_wait_count(&q), 0);
    px_admit_stats(&a, &st);
    CU_ASSERT_EQUAL(st.rejected_overload, 2);
    px_admit_unknown_done(&a, w1.held, w1.guessed);
    px_admit_leave(&a, first.conn, 1024);
    px_admit_leave(&a, w1.conn, 1024);
    px_admit_wait_destroy(&q);
    px_admit_destroy(&a);
}

/* A call arriving while others wait queues behind them, even at the
 * moment the slot is free: the slot is released first and the queue
 * served after (px_rpc_server.c), and an arrival in between took the
 * slot ahead of calls that had waited for it (review finding). */
static void test_wait_fair(void)
{
    px_admit_t a;
    px_admit_wait_t q;
    px_admit_waiter_t first = waiter("p0"), w1 = waiter("p1"),
                      late = waiter("p2"), big = waiter("p3");
    px_admit_verdict_t v;

    px_admit_init(&a, 16 * MiB, 0);
    px_admit_wait_init(&q, &a, 8, 1000);
    CU_ASSERT_EQUAL(px_admit_wait_enter(&q, &first, 0), PX_ADMIT_OK);
    CU_ASSERT_EQUAL(px_admit_wait_enter(&q, &w1, 0), PX_ADMIT_WAIT);
    px_admit_unknown_done(&a, first.held, first.guessed);
    /* Released, not yet served: a newcomer waits its turn... */
    CU_ASSERT_EQUAL_FATAL(px_admit_wait_enter(&q, &late, 0), PX_ADMIT_WAIT);
    CU_ASSERT_PTR_NULL(late.conn);
    CU_ASSERT_EQUAL(a.guessed, 0);
    /* ...unless it would be refused anyway (its guess does not fit). */
    big.want = 32 * MiB;
    CU_ASSERT_EQUAL(px_admit_wait_enter(&q, &big, 0), PX_ADMIT_REFUSED);
    /* The queue is served in order. */
    CU_ASSERT_PTR_EQUAL(px_admit_wait_next(&q, false, 0, &v), &w1);
    CU_ASSERT_EQUAL(v, PX_ADMIT_OK);
    CU_ASSERT_PTR_NULL(px_admit_wait_next(&q, false, 0, &v));
    px_admit_unknown_done(&a, w1.held, w1.guessed);
    CU_ASSERT_PTR_EQUAL(px_admit_wait_next(&q, false, 0, &v), &late);
    CU_ASSERT_EQUAL(v, PX_ADMIT_OK);
    px_admit_unknown_done(&a, late.held, late.guessed);
    CU_ASSERT_EQUAL(px_admit_wait_count(&q), 0);
    /* An empty queue: straight in. */
    first = waiter("p0");
    CU_ASSERT_EQUAL(px_admit_wait_enter(&q, &first, 0), PX_ADMIT_OK);
    px_admit_unknown_done(&a, first.held, first.guessed);
    px_admit_leave(&a, first.conn, 1024);
    px_admit_leave(&a, first.conn, 1024);
    px_admit_leave(&a, w1.conn, 1024);
    px_admit_leave(&a, late.conn, 1024);
    px_admit_wait_destroy(&q);
    px_admit_destroy(&a);
}

/* The trim signal: once per drained burst of at least 16 MiB. */
static void test_trim(void)
{
    px_admit_t a;
    px_conn_t *c[4];

    px_admit_init(&a, 0, 0);
    CU_ASSERT_TRUE(px_admit_enter(&a, "p", MiB, false, &c[0]));
    CU_ASSERT_FALSE(px_admit_leave(&a, c[0], MiB)); /* small: no trim */
    for (int i = 0; i < 4; i++)
        CU_ASSERT_TRUE(px_admit_enter(&a, "p", 8 * MiB, false, &c[i]));
    CU_ASSERT_FALSE(px_admit_leave(&a, c[0], 8 * MiB)); /* 24 left */
    CU_ASSERT_FALSE(px_admit_leave(&a, c[1], 8 * MiB)); /* 16 left */
    CU_ASSERT_FALSE(px_admit_leave(&a, c[2], 8 * MiB)); /* 8 left */
    CU_ASSERT_TRUE(px_admit_leave(&a, c[3], 8 * MiB));  /* drained */
    CU_ASSERT_TRUE(px_admit_enter(&a, "p", MiB, false, &c[0]));
    CU_ASSERT_FALSE(px_admit_leave(&a, c[0], MiB)); /* no new burst */
    px_admit_destroy(&a);
}

/* Many connections: idle entries are kept up to PX_ADMIT_MAX_IDLE, then
 * swept when a new connection comes. */
static void test_many_conns(void)
{
    enum { N = PX_ADMIT_MAX_IDLE + 10 };
    static px_conn_t *cs[N];
    px_admit_t a;
    char peer[32];
    px_rpc_stats_t st;

    px_admit_init(&a, 0, 1024);
    for (int i = 0; i < N; i++) {
        snprintf(peer, sizeof(peer), "ipv4:127.0.0.1:%d", i);
        CU_ASSERT_TRUE_FATAL(px_admit_enter(&a, peer, 1000, false, &cs[i]));
    }
    for (int i = 0; i < N; i++)
        px_admit_leave(&a, cs[i], 1000);
    px_admit_stats(&a, &st);
    CU_ASSERT_EQUAL(st.inflight_bytes, 0);
    CU_ASSERT_EQUAL(a.n_conns, N);
    CU_ASSERT_EQUAL(a.n_idle, N);
    /* A known connection reuses its entry. */
    CU_ASSERT_TRUE(px_admit_enter(&a, "ipv4:127.0.0.1:7", 10, false, &cs[0]));
    CU_ASSERT_EQUAL(a.n_conns, N);
    CU_ASSERT_EQUAL(a.n_idle, N - 1);
    /* A new one sweeps the idle entries first. */
    CU_ASSERT_TRUE(px_admit_enter(&a, "ipv4:10.0.0.1:1", 10, false, &cs[1]));
    CU_ASSERT_EQUAL(a.n_conns, 2);
    CU_ASSERT_EQUAL(a.n_idle, 0);
    px_admit_leave(&a, cs[0], 10);
    px_admit_leave(&a, cs[1], 10);
    px_admit_destroy(&a);
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("rpc_admit", NULL, NULL);
    CU_add_test(s, "global and connection bounds", test_bounds);
    CU_add_test(s, "alone over the bound", test_alone);
    CU_add_test(s, "adjust to the real size", test_adjust);
    CU_add_test(s, "headroom for small calls", test_small_headroom);
    CU_add_test(s, "request sizes per connection", test_conn_size);
    CU_add_test(s, "a refused connection of unknown size probes", test_probe);
    CU_add_test(s, "a connection whose request was not read is held off",
                test_unread_hold);
    CU_add_test(s, "one read of unknown size at a time, tight bound",
                test_unknown_tight);
    CU_add_test(s, "reads of unknown size at their worst, loose bound",
                test_unknown_loose);
    CU_add_test(s, "the wait queue of unknown sizes", test_wait_queue);
    CU_add_test(s, "a newcomer waits behind the queue", test_wait_fair);
    CU_add_test(s, "trim once per drained burst", test_trim);
    CU_add_test(s, "many connections", test_many_conns);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int failed = CU_get_number_of_failures() != 0 || CU_get_error() != 0;
    CU_cleanup_registry();
    return failed;
}
