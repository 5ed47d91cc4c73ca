/* The routing store over several replica sets (store-remote/st_shard.c)
 * over two real local engines standing for replica sets 0 and 1, with a
 * placement table in the test (no etcd): routing of appends by placement,
 * receipt handle prefixes, pops over an old and a new set (older first,
 * the FIFO rule), metadata written to every set and read from set 0,
 * lookups / transactions tried over the sets, stats summed, ack batches
 * and multi-appends split per set, system topics, and a set added later
 * getting set 0's metadata before it is ready; a close while a topic
 * create still has its placement step to come (the placer is freed only
 * after it). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_shard.h"
#include "tu.h"

/* ---- the placement table ---------------------------------------------------- */

#define NPL 16
static struct {
    pthread_mutex_t mu;
    char topic[NPL][64];
    uint32_t sets[NPL][4];
    size_t n[NPL];
    size_t count;
    int ensures, ensures_used, forgets;
    uint32_t choose; /* what ensure places topics on */
} pl = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void pl_set(const char *topic, const uint32_t *sets, size_t n)
{
    pthread_mutex_lock(&pl.mu);
    size_t i;
    for (i = 0; i < pl.count && strcmp(pl.topic[i], topic) != 0; i++)
        ;
    if (i == pl.count) {
        CU_ASSERT_FATAL(pl.count < NPL);
        snprintf(pl.topic[pl.count++], 64, "%s", topic);
    }
    memcpy(pl.sets[i], sets, n * sizeof(*sets));
    pl.n[i] = n;
    pthread_mutex_unlock(&pl.mu);
}

static size_t pl_lookup(void *ctx, const char *topic, uint32_t *sets, size_t cap)
{
    (void)ctx;
    size_t n = 0;
    pthread_mutex_lock(&pl.mu);
    for (size_t i = 0; i < pl.count; i++)
        if (strcmp(pl.topic[i], topic) == 0) {
            n = pl.n[i] < cap ? pl.n[i] : cap;
            memcpy(sets, pl.sets[i], n * sizeof(*sets));
        }
    pthread_mutex_unlock(&pl.mu);
    return n;
}

static void pl_ensure(void *ctx, const char *topic, bool used, st_done_cb cb, void *arg)
{
    (void)ctx;
    pthread_mutex_lock(&pl.mu);
    pl.ensures++;
    pl.ensures_used += used;
    uint32_t k = pl.choose;
    pthread_mutex_unlock(&pl.mu);
    uint32_t v[2] = {k, 0};
    pl_set(topic, v, used && k != 0 ? 2 : 1);
    cb(arg, GT_OK);
}

/* Drops the topic (n = 0, as the etcd placer's cache does). */
static void pl_forget(void *ctx, const char *topic, st_done_cb cb, void *arg)
{
    (void)ctx;
    pthread_mutex_lock(&pl.mu);
    pl.forgets++;
    for (size_t i = 0; i < pl.count; i++)
        if (strcmp(pl.topic[i], topic) == 0)
            pl.n[i] = 0;
    pthread_mutex_unlock(&pl.mu);
    cb(arg, GT_OK);
}

static void pl_reset(void)
{
    pthread_mutex_lock(&pl.mu);
    pl.count = 0;
    pl.ensures = pl.ensures_used = pl.forgets = 0;
    pl.choose = 1;
    pthread_mutex_unlock(&pl.mu);
}

/* ---- fixture -------------------------------------------------------------------- */

static const char *const meta_ns[] = {"test.ns"};

typedef struct fx {
    char *dir[2];
    st_store_t *set[2]; /* borrowed: owned by sh */
    st_store_t *sh;
} fx_t;

static void fx_open(fx_t *f, const char *name, bool both)
{
    char n[64];
    pl_reset();
    st_shard_config_t cfg = {.placer = {pl_lookup, pl_ensure, NULL, pl_forget},
                             .meta_ns = meta_ns, .n_meta_ns = 1};
    CU_ASSERT_FATAL(st_shard_open(&cfg, &f->sh) == GT_OK);
    for (int k = 0; k < 2; k++) {
        snprintf(n, sizeof(n), "%s_%d", name, k);
        f->dir[k] = tu_tmpdir(n);
        f->set[k] = tu_open(f->dir[k], ST_FLUSH_ASYNC);
    }
    CU_ASSERT_FATAL(st_shard_add(f->sh, 0, f->set[0], NULL, NULL) == GT_OK);
    if (both)
        CU_ASSERT_FATAL(st_shard_add(f->sh, 1, f->set[1], NULL, NULL) == GT_OK);
}

static void fx_close(fx_t *f)
{
    if (!st_shard_child(f->sh, 1))
        st_close(f->set[1]);
    st_close(f->sh);
    for (int k = 0; k < 2; k++) {
        tu_rmrf(f->dir[k]);
        free(f->dir[k]);
    }
}

static gt_err_t topic_exists(st_store_t *st, const char *name);

typedef struct wt {
    pthread_mutex_t m;
    pthread_cond_t c;
    bool done;
    gt_err_t err;
    size_t n;
} wt_t;

static void wt_init(wt_t *w)
{
    memset(w, 0, sizeof(*w));
    pthread_mutex_init(&w->m, NULL);
    pthread_cond_init(&w->c, NULL);
}

static void wt_done(wt_t *w, gt_err_t err, size_t n)
{
    pthread_mutex_lock(&w->m);
    w->err = err;
    w->n = n;
    w->done = true;
    pthread_cond_signal(&w->c);
    pthread_mutex_unlock(&w->m);
}

static gt_err_t wt_wait(wt_t *w)
{
    pthread_mutex_lock(&w->m);
    while (!w->done)
        pthread_cond_wait(&w->c, &w->m);
    pthread_mutex_unlock(&w->m);
    pthread_mutex_destroy(&w->m);
    pthread_cond_destroy(&w->c);
    return w->err;
}

static void topic_cb(void *arg, gt_err_t err, const st_topic_t *t, size_t n)
{
    (void)t;
    wt_done(arg, err, n);
}

static gt_err_t topic_exists(st_store_t *st, const char *name)
{
    wt_t w;
    wt_init(&w);
    st_topic_get(st, name, topic_cb, &w);
    return wt_wait(&w);
}

static void done_cb(void *arg, gt_err_t err)
{
    wt_done(arg, err, 0);
}

static void count_cb(void *arg, gt_err_t err, uint64_t n)
{
    wt_done(arg, err, (size_t)n);
}

static size_t ready_count(st_store_t *st, const char *topic, const char *group)
{
    st_stats_t s;
    CU_ASSERT_FATAL(tu_stats(st, topic, group, &s) == GT_OK);
    return (size_t)s.ready;
}

/* ---- tests ------------------------------------------------------------------------- */

static void test_handles(void)
{
    uint32_t k;
    const char *in;
    char out[ST_HANDLE_MAX];
    CU_ASSERT(st_shard_handle_split("0a0b", &k, &in) == GT_OK && k == 0 && strcmp(in, "0a0b") == 0);
    CU_ASSERT(st_shard_handle_join(0, "0a0b", out) == GT_OK && strcmp(out, "0a0b") == 0);
    CU_ASSERT(st_shard_handle_join(7, "0a0b", out) == GT_OK && strcmp(out, "7.0a0b") == 0);
    CU_ASSERT(st_shard_handle_split(out, &k, &in) == GT_OK && k == 7 && strcmp(in, "0a0b") == 0);
    CU_ASSERT(st_shard_handle_join(63, "ff", out) == GT_OK && strcmp(out, "63.ff") == 0);
    CU_ASSERT(st_shard_handle_split("64.ff", &k, &in) == GT_EINVAL);
    CU_ASSERT(st_shard_handle_split("0.ff", &k, &in) == GT_EINVAL);
    CU_ASSERT(st_shard_handle_split("07.ff", &k, &in) == GT_EINVAL);
    CU_ASSERT(st_shard_handle_split("", &k, &in) == GT_OK && k == 0);
    char big[ST_HANDLE_MAX];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    CU_ASSERT(st_shard_handle_join(1, big, out) == GT_ERANGE);
}

/* A declared topic exists on both sets and is placed by ensure; appends
 * go to its writer set; handles from set 1 carry "1." and ack / change
 * invisible / release through the router. */
static void test_routing(void)
{
    fx_t f;
    fx_open(&f, "shard_route", true);
    CU_ASSERT_FATAL(tu_topic(f.sh, "T1", 2) == GT_OK);
    CU_ASSERT(pl.ensures == 1 && pl.ensures_used == 0);
    CU_ASSERT(topic_exists(f.set[0], "T1") == GT_OK);
    CU_ASSERT(topic_exists(f.set[1], "T1") == GT_OK);
    uint32_t k[4];
    CU_ASSERT(pl_lookup(NULL, "T1", k, 4) == 1 && k[0] == 1);
    CU_ASSERT_FATAL(tu_group(f.sh, "G", 16, ST_CONSUME_FROM_FIRST) == GT_OK);

    for (int i = 0; i < 3; i++)
        CU_ASSERT(tu_send(f.sh, "T1", "a", NULL, "m", ST_QUEUE_ANY, NULL) == GT_OK);
    CU_ASSERT(ready_count(f.set[1], "T1", "G") == 3);
    CU_ASSERT(ready_count(f.set[0], "T1", "G") == 0);

    tu_msg_t m[8];
    size_t n = 0;
    CU_ASSERT_FATAL(tu_pop_simple(f.sh, "G", "T1", NULL, 8, 30000, m, &n) == GT_OK);
    CU_ASSERT_FATAL(n == 3);
    for (size_t i = 0; i < n; i++)
        CU_ASSERT(strncmp(m[i].handle, "1.", 2) == 0);
    CU_ASSERT(tu_ack(f.sh, "G", "T1", m[0].handle) == GT_OK);
    CU_ASSERT(tu_ack(f.sh, "G", "T1", m[0].handle) == GT_EINVAL); /* acked */
    CU_ASSERT(tu_ack(f.sh, "G", "T1", "9.00") == GT_AGAIN);        /* set 9 not known (yet) */
    CU_ASSERT(tu_ack(f.sh, "G", "T1", "99.00") == GT_EINVAL);      /* no set at all */
    char nh[ST_HANDLE_MAX];
    CU_ASSERT(tu_change(f.sh, "G", "T1", m[1].handle, 0, nh) == GT_OK);
    CU_ASSERT(strncmp(nh, "1.", 2) == 0);
    CU_ASSERT(tu_release(f.sh, "G", "T1", m[2].handle) == GT_OK);
    CU_ASSERT(ready_count(f.set[1], "T1", "G") == 2);

    /* A topic used before it was placed: written to set 0, placed "1,0". */
    CU_ASSERT_FATAL(tu_topic(f.set[0], "OLD", 1) == GT_OK);
    CU_ASSERT_FATAL(tu_topic(f.set[1], "OLD", 1) == GT_OK);
    CU_ASSERT(tu_send(f.sh, "OLD", "a", NULL, "x", ST_QUEUE_ANY, NULL) == GT_OK);
    CU_ASSERT(pl.ensures_used == 1);
    CU_ASSERT(pl_lookup(NULL, "OLD", k, 4) == 2 && k[0] == 1 && k[1] == 0);
    CU_ASSERT(ready_count(f.set[0], "OLD", "G") == 1);
    /* Likewise through a multi-append (with a placed topic beside it). */
    CU_ASSERT_FATAL(tu_topic(f.set[0], "OLD2", 1) == GT_OK);
    CU_ASSERT_FATAL(tu_topic(f.set[1], "OLD2", 1) == GT_OK);
    st_message_t msg;
    memset(&msg, 0, sizeof(msg));
    msg.body = "mm";
    msg.body_len = 2;
    msg.queue_id = ST_QUEUE_ANY;
    st_dest_t d[2] = {{"OLD2", ST_QUEUE_ANY}, {"T1", ST_QUEUE_ANY}};
    st_append_item_t items[2];
    CU_ASSERT(tu_send_multi(f.sh, &msg, d, 2, items) == GT_OK);
    CU_ASSERT(pl.ensures_used == 2);
    CU_ASSERT(pl_lookup(NULL, "OLD2", k, 4) == 2 && k[0] == 1 && k[1] == 0);
    CU_ASSERT(ready_count(f.set[0], "OLD2", "G") == 1);
    CU_ASSERT(ready_count(f.set[1], "T1", "G") == 3);
    fx_close(&f);
}

/* Placed "1,0": set 0's (older) messages come first, then set 1's; the
 * FIFO rule holds set 1's back while set 0 has the group's in flight. */
static void test_pop_two_sets(void)
{
    fx_t f;
    fx_open(&f, "shard_pop", true);
    uint32_t v[2] = {1, 0};
    pl_set("T", v, 2);
    CU_ASSERT_FATAL(tu_topic(f.sh, "T", 1) == GT_OK);
    CU_ASSERT(pl.ensures == 0); /* already placed */
    CU_ASSERT_FATAL(tu_group(f.sh, "G", 16, ST_CONSUME_FROM_FIRST) == GT_OK);
    CU_ASSERT_FATAL(tu_fifo_group(f.sh, "F") == GT_OK);
    CU_ASSERT(tu_send(f.set[0], "T", "a", NULL, "old1", ST_QUEUE_ANY, NULL) == GT_OK);
    CU_ASSERT(tu_send(f.set[0], "T", "a", NULL, "old2", ST_QUEUE_ANY, NULL) == GT_OK);
    CU_ASSERT(tu_send(f.sh, "T", "a", NULL, "new1", ST_QUEUE_ANY, NULL) == GT_OK);
    CU_ASSERT(tu_send(f.sh, "T", "a", NULL, "new2", ST_QUEUE_ANY, NULL) == GT_OK);
    CU_ASSERT(ready_count(f.set[1], "T", "G") == 2);

    /* Stats sum the sets. */
    st_stats_t s;
    CU_ASSERT(tu_stats(f.sh, "T", "G", &s) == GT_OK && s.ready == 4 && s.messages == 4);

    tu_msg_t m[8];
    size_t n = 0;
    CU_ASSERT_FATAL(tu_pop_simple(f.sh, "G", "T", NULL, 8, 30000, m, &n) == GT_OK);
    CU_ASSERT_FATAL(n == 2);
    CU_ASSERT(strcmp(m[0].body, "old1") == 0 && strcmp(m[1].body, "old2") == 0);
    CU_ASSERT(strncmp(m[0].handle, "1.", 2) != 0);
    const char *hs[4] = {m[0].handle, m[1].handle};
    CU_ASSERT_FATAL(tu_pop_simple(f.sh, "G", "T", NULL, 8, 30000, m + 2, &n) == GT_OK);
    CU_ASSERT_FATAL(n == 2);
    CU_ASSERT(strcmp(m[2].body, "new1") == 0 && strncmp(m[2].handle, "1.", 2) == 0);
    hs[2] = m[2].handle;
    hs[3] = "5.00"; /* a set that is not there */
    gt_err_t errs[4];
    size_t nr = 0;
    /* One batch over both sets, results in order. */
    CU_ASSERT(tu_ack_batch(f.sh, "G", "T", hs, 4, errs, &nr) == GT_OK);
    CU_ASSERT(nr == 4 && errs[0] == GT_OK && errs[1] == GT_OK && errs[2] == GT_OK &&
              errs[3] == GT_AGAIN);
    CU_ASSERT(tu_ack(f.sh, "G", "T", m[3].handle) == GT_OK);
    CU_ASSERT(tu_stats(f.sh, "T", "G", &s) == GT_OK && s.ready == 0 && s.inflight == 0);

    /* FIFO group F: one of set 0's in flight holds back set 1's. */
    CU_ASSERT_FATAL(tu_pop_simple(f.sh, "F", "T", NULL, 1, 30000, m, &n) == GT_OK);
    CU_ASSERT_FATAL(n == 1 && strcmp(m[0].body, "old1") == 0);
    CU_ASSERT_FATAL(tu_pop_simple(f.sh, "F", "T", NULL, 8, 30000, m + 1, &n) == GT_OK);
    CU_ASSERT_FATAL(n == 1 && strcmp(m[1].body, "old2") == 0);
    CU_ASSERT(tu_pop_simple(f.sh, "F", "T", NULL, 8, 30000, m + 2, &n) == GT_OK && n == 0);
    CU_ASSERT(tu_ack(f.sh, "F", "T", m[0].handle) == GT_OK);
    CU_ASSERT(tu_pop_simple(f.sh, "F", "T", NULL, 8, 30000, m + 2, &n) == GT_OK && n == 0);
    CU_ASSERT(tu_ack(f.sh, "F", "T", m[1].handle) == GT_OK);
    CU_ASSERT_FATAL(tu_pop_simple(f.sh, "F", "T", NULL, 8, 30000, m + 2, &n) == GT_OK);
    CU_ASSERT(n >= 1 && strcmp(m[2].body, "new1") == 0);
    fx_close(&f);
}

/* A group that consumes from the last offset, on a topic moved to a new
 * set while set 0 still had its backlog: it reads set 0 to the end, then
 * every message written to the new set since the move (it had no position
 * there yet, and all of them came after its start).  Before the fix its
 * first pop on the new set started at that set's end: new1 and new2 were
 * skipped. */
static void test_move_last_group(void)
{
    fx_t f;
    fx_open(&f, "shard_last", true);
    uint32_t v[2] = {0, 0};
    pl_set("M", v, 1);
    CU_ASSERT_FATAL(tu_topic(f.sh, "M", 1) == GT_OK);
    CU_ASSERT_FATAL(tu_group(f.sh, "L", 16, ST_CONSUME_FROM_LAST) == GT_OK);
    CU_ASSERT(tu_send(f.sh, "M", "a", NULL, "pre", ST_QUEUE_ANY, NULL) == GT_OK);
    tu_msg_t m[8];
    size_t n = 0;
    /* The first pop starts L at set 0's end: "pre" is before its start. */
    CU_ASSERT_FATAL(tu_pop_simple(f.sh, "L", "M", NULL, 8, 30000, m, &n) == GT_OK);
    CU_ASSERT_FATAL(n == 0);
    CU_ASSERT(tu_send(f.sh, "M", "a", NULL, "old1", ST_QUEUE_ANY, NULL) == GT_OK);
    v[0] = 1; /* rebalance: M now writes to set 1 */
    pl_set("M", v, 2);
    CU_ASSERT(tu_send(f.sh, "M", "a", NULL, "new1", ST_QUEUE_ANY, NULL) == GT_OK);
    CU_ASSERT(tu_send(f.sh, "M", "a", NULL, "new2", ST_QUEUE_ANY, NULL) == GT_OK);
    /* Its stats count what its pops will hand out: "old1" on set 0 and
     * both new ones on set 1, where it has no position yet (before: set 1
     * counted from its end, 0). */
    st_stats_t ls;
    CU_ASSERT(tu_stats(f.sh, "M", "L", &ls) == GT_OK);
    CU_ASSERT_EQUAL(ls.ready, 3);
    CU_ASSERT_EQUAL(ls.lag, 3);
    CU_ASSERT_FATAL(tu_pop_simple(f.sh, "L", "M", NULL, 8, 30000, m, &n) == GT_OK);
    CU_ASSERT_FATAL(n == 1);
    CU_ASSERT(strcmp(m[0].body, "old1") == 0);
    CU_ASSERT(tu_ack(f.sh, "L", "M", m[0].handle) == GT_OK);
    size_t got = 0;
    static char bodies[4][sizeof(m[0].body)];
    while (got < 4) {
        CU_ASSERT_FATAL(tu_pop_simple(f.sh, "L", "M", NULL, 8, 30000, m, &n) == GT_OK);
        if (n == 0)
            break;
        for (size_t i = 0; i < n && got < 4; i++) {
            CU_ASSERT(strncmp(m[i].handle, "1.", 2) == 0);
            snprintf(bodies[got++], sizeof(bodies[0]), "%s", m[i].body);
            CU_ASSERT(tu_ack(f.sh, "L", "M", m[i].handle) == GT_OK);
        }
    }
    CU_ASSERT_EQUAL(got, 2);
    CU_ASSERT(strcmp(bodies[0], "new1") == 0 && strcmp(bodies[1], "new2") == 0);
    /* A later message on the new set comes next, once. */
    CU_ASSERT(tu_send(f.sh, "M", "a", NULL, "new3", ST_QUEUE_ANY, NULL) == GT_OK);
    CU_ASSERT_FATAL(tu_pop_simple(f.sh, "L", "M", NULL, 8, 30000, m, &n) == GT_OK);
    CU_ASSERT(n == 1 && strcmp(m[0].body, "new3") == 0);
    fx_close(&f);
}

/* The router's metadata watch and %DLQ% topics of other sets. */
static struct {
    pthread_mutex_t mu;
    int changes;   /* %DLQ%DG in a change */
    int snapshots; /* %DLQ%DG in a snapshot */
    int calls;
} wr = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void watch_rec(void *arg, const st_meta_event_t *evs, size_t n, bool snapshot)
{
    (void)arg;
    pthread_mutex_lock(&wr.mu);
    wr.calls++;
    for (size_t i = 0; i < n; i++)
        if (evs[i].kind == ST_META_TOPIC && !evs[i].deleted &&
            strcmp(evs[i].u.topic.name, "%DLQ%DG") == 0) {
            if (snapshot)
                wr.snapshots++;
            else
                wr.changes++;
        }
    pthread_mutex_unlock(&wr.mu);
}

static int wr_get(int *field)
{
    pthread_mutex_lock(&wr.mu);
    int v = *field;
    pthread_mutex_unlock(&wr.mu);
    return v;
}

/* A message of a topic written to set 1 runs out of delivery attempts:
 * the move creates %DLQ%DG on set 1 only.  The router's metadata watch
 * (set 0's) reports it all the same, and a later snapshot (a new watcher,
 * or set 0's watch starting over) still carries it, so every proxy knows
 * the dead-letter topic and a consumer can read it.  Before, the front
 * end never heard of it. */
static void test_dlq_other_set(void)
{
    fx_t f;
    fx_open(&f, "shard_dlq", true);
    uint32_t v[1] = {1};
    pl_set("DT", v, 1);
    CU_ASSERT_FATAL(tu_topic(f.sh, "DT", 1) == GT_OK);
    CU_ASSERT_FATAL(tu_group(f.sh, "DG", 1, ST_CONSUME_FROM_FIRST) == GT_OK);
    pthread_mutex_lock(&wr.mu);
    wr.changes = wr.snapshots = wr.calls = 0;
    pthread_mutex_unlock(&wr.mu);
    st_meta_watch(f.sh, watch_rec, NULL);
    CU_ASSERT(wr_get(&wr.calls) >= 1 && wr_get(&wr.snapshots) == 0);
    CU_ASSERT(tu_send(f.sh, "DT", "a", NULL, "dead", ST_QUEUE_ANY, NULL) == GT_OK);
    tu_msg_t m[4];
    size_t n = 0;
    CU_ASSERT_FATAL(tu_pop_simple(f.sh, "DG", "DT", NULL, 4, 30000, m, &n) == GT_OK);
    CU_ASSERT_FATAL(n == 1 && strncmp(m[0].handle, "1.", 2) == 0);
    /* Visible again at once: its one attempt is spent, the next pop moves
     * it (the move completes on another thread: wait for it). */
    CU_ASSERT(tu_change(f.sh, "DG", "DT", m[0].handle, 1, NULL) == GT_OK);
    for (int i = 0; i < 10000 && topic_exists(f.set[1], "%DLQ%DG") != GT_OK; i++) {
        CU_ASSERT_FATAL(tu_pop_simple(f.sh, "DG", "DT", NULL, 4, 30000, m, &n) == GT_OK);
        CU_ASSERT(n == 0);
        tu_sleep_ms(1);
    }
    CU_ASSERT_FATAL(topic_exists(f.set[1], "%DLQ%DG") == GT_OK);
    CU_ASSERT(topic_exists(f.set[0], "%DLQ%DG") == GT_ENOTFOUND);
    for (int i = 0; i < 10000 && wr_get(&wr.changes) == 0; i++)
        tu_sleep_ms(1);
    CU_ASSERT_EQUAL(wr_get(&wr.changes), 1);
    /* Topic reads through the router know it too (a get, a listing). */
    CU_ASSERT(topic_exists(f.sh, "%DLQ%DG") == GT_OK);
    wt_t w;
    wt_init(&w);
    st_topic_get(f.sh, NULL, topic_cb, &w);
    CU_ASSERT(wt_wait(&w) == GT_OK);
    size_t listed = w.n;
    wt_init(&w);
    st_topic_get(f.set[0], NULL, topic_cb, &w);
    CU_ASSERT(wt_wait(&w) == GT_OK && listed == w.n + 1);
    /* Its stats come from the set that has it (set 0 does not). */
    st_stats_t ds;
    CU_ASSERT(tu_stats(f.sh, "%DLQ%DG", NULL, &ds) == GT_OK && ds.messages == 1);
    CU_ASSERT(tu_stats(f.sh, "%DLQ%nothing", NULL, &ds) == GT_ENOTFOUND);
    /* Pulls and offset queries go there too (before: to set 0, which
     * answered "not found"), as do a pull consumer's offsets (below). */
    tu_msg_t pm[4];
    size_t pn = 0;
    uint64_t next = 0, off = 0;
    CU_ASSERT(tu_pull(f.sh, "%DLQ%DG", 0, 0, 4, pm, &pn, &next) == GT_OK);
    CU_ASSERT(pn == 1 && next == 1 && strcmp(pm[0].body, "dead") == 0);
    CU_ASSERT(tu_offset_query(f.sh, "%DLQ%DG", 0, ST_OFFSET_END, 0, &off) == GT_OK && off == 1);
    CU_ASSERT(tu_pull(f.sh, "%DLQ%nothing", 0, 0, 4, pm, &pn, &next) == GT_ENOTFOUND);
    CU_ASSERT(tu_offset_query(f.sh, "%DLQ%nothing", 0, ST_OFFSET_END, 0, &off) ==
              GT_ENOTFOUND);
    /* A new watcher's snapshot has it too. */
    st_meta_watch(f.sh, watch_rec, NULL);
    CU_ASSERT(wr_get(&wr.snapshots) == 1);
    CU_ASSERT_EQUAL(wr_get(&wr.changes), 1); /* not again */
    /* The dead letter is there to read, from the router. */
    CU_ASSERT(tu_pop_simple(f.sh, "DG", "%DLQ%DG", NULL, 4, 30000, m, &n) == GT_OK);
    CU_ASSERT(n == 1 && strcmp(m[0].body, "dead") == 0);
    CU_ASSERT(tu_offset_update(f.sh, "DG", "%DLQ%DG", 0, 1) == GT_OK);
    off = 0;
    CU_ASSERT(tu_offset_get(f.sh, "DG", "%DLQ%DG", 0, &off) == GT_OK && off == 1);
    off = 0;
    CU_ASSERT(tu_offset_get(f.set[1], "DG", "%DLQ%DG", 0, &off) == GT_OK && off == 1);
    st_meta_watch(f.sh, NULL, NULL);
    fx_close(&f);
}

/* Topics, groups and records are on every set; reads come from set 0. */
static void test_meta_broadcast(void)
{
    fx_t f;
    fx_open(&f, "shard_meta", true);
    CU_ASSERT_FATAL(tu_group(f.sh, "G", 5, ST_CONSUME_FROM_LAST) == GT_OK);
    st_group_t g;
    for (int k = 0; k < 2; k++) {
        CU_ASSERT(tu_group_get(f.set[k], "G", &g) == GT_OK && g.max_delivery_attempts == 5);
    }
    CU_ASSERT(tu_meta_put(f.sh, "test.ns", "k1", 2, "v1", 2) == GT_OK);
    st_meta_list_req_t req = {.ns = "test.ns"};
    tu_kv_t *kv;
    size_t n;
    bool more;
    for (int k = 0; k < 2; k++) {
        CU_ASSERT_FATAL(tu_meta_list(f.set[k], &req, &kv, &n, &more) == GT_OK);
        CU_ASSERT(n == 1 && kv[0].value_len == 2 && memcmp(kv[0].value, "v1", 2) == 0);
        tu_kv_free(kv, n);
    }
    /* Read from set 0: a record only set 1 has is not listed. */
    CU_ASSERT(tu_meta_put(f.set[1], "test.ns", "only1", 5, "x", 1) == GT_OK);
    CU_ASSERT_FATAL(tu_meta_list(f.sh, &req, &kv, &n, &more) == GT_OK);
    CU_ASSERT(n == 1);
    tu_kv_free(kv, n);
    CU_ASSERT(tu_meta_del(f.sh, "test.ns", "k1", 2) == GT_OK);
    CU_ASSERT_FATAL(tu_meta_list(f.set[1], &req, &kv, &n, &more) == GT_OK);
    CU_ASSERT(n == 1); /* only1 */
    tu_kv_free(kv, n);
    /* A delete set 1 does not know still succeeds (set 0 answers). */
    CU_ASSERT(tu_meta_put(f.set[0], "test.ns", "only0", 5, "x", 1) == GT_OK);
    CU_ASSERT(tu_meta_del(f.sh, "test.ns", "only0", 5) == GT_OK);
    CU_ASSERT(tu_meta_del(f.sh, "test.ns", "nothing", 7) == GT_ENOTFOUND);
    /* Topic delete on both; its placement goes too (before, it stayed:
     * it still counted for placement and rebalance). */
    CU_ASSERT_FATAL(tu_topic(f.sh, "D", 1) == GT_OK);
    uint32_t sets[4];
    CU_ASSERT(pl_lookup(NULL, "D", sets, 4) == 1 && sets[0] == 1);
    wt_t w;
    wt_init(&w);
    st_topic_delete(f.sh, "D", done_cb, &w);
    CU_ASSERT(wt_wait(&w) == GT_OK);
    CU_ASSERT(topic_exists(f.set[0], "D") == GT_ENOTFOUND);
    CU_ASSERT(topic_exists(f.set[1], "D") == GT_ENOTFOUND);
    CU_ASSERT(pl_lookup(NULL, "D", sets, 4) == 0);
    CU_ASSERT(pl.forgets == 1);
    /* Made again: placed anew. */
    pl.choose = 0;
    CU_ASSERT_FATAL(tu_topic(f.sh, "D", 1) == GT_OK);
    CU_ASSERT(pl_lookup(NULL, "D", sets, 4) == 1 && sets[0] == 0);
    /* A delete no set knows still drops a placement left behind; a system
     * topic has none to drop. */
    pl_set("GONE", (uint32_t[]){1}, 1);
    wt_init(&w);
    st_topic_delete(f.sh, "GONE", done_cb, &w);
    CU_ASSERT(wt_wait(&w) == GT_ENOTFOUND);
    CU_ASSERT(pl_lookup(NULL, "GONE", sets, 4) == 0);
    CU_ASSERT(pl.forgets == 2);
    CU_ASSERT_FATAL(tu_topic(f.sh, "%DLQ%GX", 1) == GT_OK);
    wt_init(&w);
    st_topic_delete(f.sh, "%DLQ%GX", done_cb, &w);
    CU_ASSERT(wt_wait(&w) == GT_OK);
    CU_ASSERT(pl.forgets == 2);
    fx_close(&f);
}

/* Lookups, transactions and recall find messages on any set of the
 * topic; multi-appends split per writer set; system topics go to set 0
 * and are read from all. */
static void test_by_id(void)
{
    fx_t f;
    fx_open(&f, "shard_id", true);
    uint32_t v[2] = {1, 0};
    pl_set("T", v, 2);
    uint32_t v0[1] = {0};
    pl_set("T0", v0, 1);
    CU_ASSERT_FATAL(tu_topic(f.sh, "T", 1) == GT_OK);
    CU_ASSERT_FATAL(tu_topic(f.sh, "T0", 1) == GT_OK);
    CU_ASSERT_FATAL(tu_group(f.sh, "G", 16, ST_CONSUME_FROM_FIRST) == GT_OK);
    st_append_item_t it;
    CU_ASSERT_FATAL(tu_send(f.set[0], "T", "a", "key0", "on0", ST_QUEUE_ANY, &it) == GT_OK);
    tu_msg_t m[4];
    size_t n = 0;
    CU_ASSERT(tu_lookup(f.sh, false, "T", it.msg_id, m, &n) == GT_OK && n == 1);
    CU_ASSERT(tu_lookup(f.sh, true, "T", "key0", m, &n) == GT_OK && n == 1);
    CU_ASSERT(tu_lookup(f.sh, false, NULL, it.msg_id, m, &n) == GT_OK && n == 1);
    CU_ASSERT(tu_lookup(f.sh, false, "T", "nosuchid", m, &n) == GT_OK && n == 0);

    /* A half message on the old set is committed through the router. */
    st_append_item_t half;
    CU_ASSERT_FATAL(tu_send_held(f.set[0], "T", "h0", 0, true, NULL, &half) == GT_OK);
    CU_ASSERT(tu_tx_end(f.sh, "T", half.msg_id, true) == GT_OK);
    CU_ASSERT(tu_tx_end(f.sh, "T", half.msg_id, true) == GT_ENOTFOUND);
    /* Pending halves of both sets are listed over calls. */
    CU_ASSERT_FATAL(tu_send_held(f.set[0], "T", "p0", 0, true, NULL, &half) == GT_OK);
    CU_ASSERT_FATAL(tu_send_held(f.sh, "T", "p1", 0, true, NULL, &half) == GT_OK);
    int seen0 = 0, seen1 = 0;
    for (int i = 0; i < 4; i++) {
        CU_ASSERT_FATAL(tu_tx_pending(f.sh, 0, 16, m, &n) == GT_OK);
        for (size_t j = 0; j < n; j++) {
            seen0 += strcmp(m[j].body, "p0") == 0;
            seen1 += strcmp(m[j].body, "p1") == 0;
        }
    }
    CU_ASSERT(seen0 > 0 && seen1 > 0);
    CU_ASSERT(tu_tx_end(f.sh, "T", half.msg_id, false) == GT_OK); /* p1, on set 1 */
    /* Recall of a delayed message on the old set. */
    st_append_item_t late;
    CU_ASSERT_FATAL(tu_send_held(f.set[0], "T", "d0", tu_clock_now() + 3600000, false, NULL,
                                 &late) == GT_OK);
    CU_ASSERT(tu_recall(f.sh, "T", late.msg_id) == GT_OK);
    CU_ASSERT(tu_recall(f.sh, "T", late.msg_id) == GT_ENOTFOUND);

    /* One message to T (set 1) and T0 (set 0). */
    st_message_t msg;
    memset(&msg, 0, sizeof(msg));
    msg.body = "multi";
    msg.body_len = 5;
    msg.queue_id = ST_QUEUE_ANY;
    st_dest_t d[3] = {{"T0", ST_QUEUE_ANY}, {"T", ST_QUEUE_ANY}, {"T0", 0}};
    st_append_item_t items[3];
    CU_ASSERT(tu_send_multi(f.sh, &msg, d, 2, items) == GT_OK);
    /* T0 twice: refused before any set appends (none on set 1 either). */
    CU_ASSERT(tu_send_multi(f.sh, &msg, d, 3, items) == GT_EINVAL);
    CU_ASSERT(ready_count(f.set[0], "T0", "G") == 1);
    CU_ASSERT(ready_count(f.set[1], "T", "G") == 1);

    /* A DLQ-like system topic: written to set 0, read from both. */
    CU_ASSERT_FATAL(tu_topic(f.sh, "%DLQ%G", 1) == GT_OK);
    CU_ASSERT(pl_lookup(NULL, "%DLQ%G", v, 2) == 0);
    CU_ASSERT(tu_send(f.sh, "%DLQ%G", "a", NULL, "d0", ST_QUEUE_ANY, NULL) == GT_OK);
    CU_ASSERT(tu_send(f.set[1], "%DLQ%G", "a", NULL, "d1", ST_QUEUE_ANY, NULL) == GT_OK);
    CU_ASSERT(ready_count(f.set[0], "%DLQ%G", "G") == 1);
    CU_ASSERT_FATAL(tu_pop_simple(f.sh, "G", "%DLQ%G", NULL, 8, 30000, m, &n) == GT_OK);
    CU_ASSERT(n == 1 && strcmp(m[0].body, "d1") == 0 && strncmp(m[0].handle, "1.", 2) == 0);
    CU_ASSERT_FATAL(tu_pop_simple(f.sh, "G", "%DLQ%G", NULL, 8, 30000, m + 1, &n) == GT_OK);
    CU_ASSERT(n == 1 && strcmp(m[1].body, "d0") == 0);
    /* Purge over both sets of T: set 0's "on0" and "h0", set 1's "multi". */
    wt_t w;
    wt_init(&w);
    st_purge(f.sh, "G", "T", count_cb, &w);
    CU_ASSERT(wt_wait(&w) == GT_OK && w.n == 3);
    fx_close(&f);
}

/* A set added later gets set 0's topics, groups and records first. */
static void test_new_set(void)
{
    fx_t f;
    fx_open(&f, "shard_new", false);
    pl.choose = 0;
    CU_ASSERT_FATAL(tu_topic(f.sh, "A", 4) == GT_OK);
    CU_ASSERT_FATAL(tu_fifo_group(f.sh, "F") == GT_OK);
    char key[16];
    for (int i = 0; i < 1500; i++) { /* more than one page */
        snprintf(key, sizeof(key), "k%05d", i);
        CU_ASSERT_FATAL(tu_meta_put(f.sh, "test.ns", key, (uint32_t)strlen(key), "v", 1) == GT_OK);
    }
    CU_ASSERT(st_shard_ready(f.sh, 0));
    CU_ASSERT(!st_shard_ready(f.sh, 1));
    wt_t w;
    wt_init(&w);
    CU_ASSERT_FATAL(st_shard_add(f.sh, 1, f.set[1], done_cb, &w) == GT_OK);
    CU_ASSERT(wt_wait(&w) == GT_OK);
    CU_ASSERT(st_shard_ready(f.sh, 1));
    CU_ASSERT(st_shard_add(f.sh, 1, NULL, NULL, NULL) == GT_EINVAL);
    CU_ASSERT(topic_exists(f.set[1], "A") == GT_OK);
    st_group_t g;
    CU_ASSERT(tu_group_get(f.set[1], "F", &g) == GT_OK && g.fifo);
    st_meta_list_req_t req = {.ns = "test.ns"};
    tu_kv_t *kv;
    size_t n, total = 0;
    bool more = true;
    CU_ASSERT_FATAL(tu_meta_list(f.set[1], &req, &kv, &n, &more) == GT_OK);
    total += n;
    if (more && n) {
        req.after = kv[n - 1].key;
        req.after_len = kv[n - 1].key_len;
        tu_kv_t *kv2;
        size_t n2;
        CU_ASSERT_FATAL(tu_meta_list(f.set[1], &req, &kv2, &n2, &more) == GT_OK);
        total += n2;
        tu_kv_free(kv2, n2);
    }
    tu_kv_free(kv, n);
    CU_ASSERT(total == 1500);
    fx_close(&f);
}

/* ---- close with a topic create in flight ------------------------------------------ */

/* The placer of this case lives on the heap and goes in on_close, as
 * st_place's does; its lookup waits until the test has begun closing the
 * router, so a topic create's placement step is still to come then. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool closing, waiting;
} cl = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false};

static size_t cl_lookup(void *ctx, const char *topic, uint32_t *sets, size_t cap)
{
    pthread_mutex_lock(&cl.mu);
    cl.waiting = true;
    pthread_cond_broadcast(&cl.cv);
    while (!cl.closing)
        pthread_cond_wait(&cl.cv, &cl.mu);
    pthread_mutex_unlock(&cl.mu);
    (void)topic, (void)sets, (void)cap;
    volatile int state = *(int *)ctx; /* the placer's state */
    (void)state;
    return 0;
}

static void cl_ensure(void *ctx, const char *topic, bool used, st_done_cb cb, void *arg)
{
    (void)topic, (void)used;
    cb(arg, *(int *)ctx > 0 ? GT_OK : GT_EIO);
}

static void cl_free(void *ctx)
{
    free(ctx);
}

typedef struct cl_put {
    st_store_t *sh;
    st_topic_t t;
    wt_t w;
} cl_put_t;

/* The local engines answer on the caller's thread: a thread of its own. */
static void *cl_put_main(void *arg)
{
    cl_put_t *c = arg;
    st_topic_put(c->sh, &c->t, done_cb, &c->w);
    return NULL;
}

static void test_close_in_flight(void)
{
    for (int round = 0; round < 5; round++) {
        int *ctx = malloc(sizeof(*ctx));
        CU_ASSERT_FATAL(ctx != NULL);
        *ctx = 1;
        st_shard_config_t cfg = {.placer = {cl_lookup, cl_ensure, ctx},
                                 .on_close = cl_free, .close_ctx = ctx};
        st_store_t *sh = NULL;
        CU_ASSERT_FATAL(st_shard_open(&cfg, &sh) == GT_OK);
        char *dir[2];
        for (int k = 0; k < 2; k++) {
            char n[64];
            snprintf(n, sizeof(n), "shard_close_%d_%d", round, k);
            dir[k] = tu_tmpdir(n);
            CU_ASSERT_FATAL(st_shard_add(sh, (uint32_t)k, tu_open(dir[k], ST_FLUSH_ASYNC), NULL,
                                         NULL) == GT_OK);
        }
        pthread_mutex_lock(&cl.mu);
        cl.closing = cl.waiting = false;
        pthread_mutex_unlock(&cl.mu);
        cl_put_t c = {.sh = sh};
        wt_init(&c.w);
        snprintf(c.t.name, sizeof(c.t.name), "CloseT%d", round);
        c.t.queue_count = 1;
        c.t.perm = ST_PERM_READ | ST_PERM_WRITE;
        pthread_t th;
        CU_ASSERT_FATAL(pthread_create(&th, NULL, cl_put_main, &c) == 0);
        pthread_mutex_lock(&cl.mu);
        while (!cl.waiting) /* the create is at its placement step */
            pthread_cond_wait(&cl.cv, &cl.mu);
        cl.closing = true;
        pthread_cond_broadcast(&cl.cv);
        pthread_mutex_unlock(&cl.mu);
        st_close(sh); /* the create finishes first, then the placer goes */
        pthread_join(th, NULL);
        CU_ASSERT_EQUAL(wt_wait(&c.w), GT_OK);
        for (int k = 0; k < 2; k++) {
            tu_rmrf(dir[k]);
            free(dir[k]);
        }
    }
}

int main(void)
{
    static const CU_TestInfo tests[] = {
        {"handle prefixes", test_handles},
        {"routing by placement", test_routing},
        {"pops over two sets", test_pop_two_sets},
        {"consume from last across a move", test_move_last_group},
        {"metadata on every set", test_meta_broadcast},
        {"a dead-letter topic of another set is watched", test_dlq_other_set},
        {"by id over the sets", test_by_id},
        {"a new set gets the metadata", test_new_set},
        {"close with a topic create in flight", test_close_in_flight},
        CU_TEST_INFO_NULL,
    };
    return tu_run("shard", tests);
}
