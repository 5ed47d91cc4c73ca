/* The store's decorators and metadata notifications: st_meta_watch on the
 * local engine (snapshot, then each change with an increasing version,
 * including the engine's own changes), st_exec_open (every answer and
 * notification runs on the executor's thread, with its data intact after
 * the inner store's buffers are gone) and st_late_open stacked under it
 * (answers late on another thread; the store's behaviour is unchanged;
 * closing answers a parked pop). */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_relay.h"
#include "tu.h"

/* ---- a one-thread executor that notes which thread runs the tasks ---- */

typedef struct task {
    struct task *next;
    st_task_fn fn;
    void *arg;
} task_t;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    task_t *head, *tail;
    bool stop;
    pthread_t thread;
    int ran;
    int posted;
} ex = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL,
        false, 0, 0, 0};

static gt_err_t ex_post(void *ctx, st_task_fn fn, void *arg)
{
    task_t *t = malloc(sizeof(*t));
    (void)ctx;
    if (t == NULL)
        return GT_ENOMEM;
    *t = (task_t){NULL, fn, arg};
    pthread_mutex_lock(&ex.mu);
    ex.posted++;
    if (ex.tail)
        ex.tail->next = t;
    else
        ex.head = t;
    ex.tail = t;
    pthread_cond_signal(&ex.cv);
    pthread_mutex_unlock(&ex.mu);
    return GT_OK;
}

static void *ex_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&ex.mu);
    for (;;) {
        task_t *t;
        while (ex.head == NULL && !ex.stop)
            pthread_cond_wait(&ex.cv, &ex.mu);
        if ((t = ex.head) == NULL)
            break;
        ex.head = t->next;
        if (ex.head == NULL)
            ex.tail = NULL;
        ex.ran++;
        pthread_mutex_unlock(&ex.mu);
        t->fn(t->arg);
        free(t);
        pthread_mutex_lock(&ex.mu);
    }
    pthread_mutex_unlock(&ex.mu);
    return NULL;
}

static const st_exec_t the_exec = {ex_post, NULL};

static void ex_start(void)
{
    ex.stop = false;
    ex.ran = 0;
    pthread_create(&ex.thread, NULL, ex_main, NULL);
}

static void ex_stop(void)
{
    pthread_mutex_lock(&ex.mu);
    ex.stop = true;
    pthread_cond_broadcast(&ex.cv);
    pthread_mutex_unlock(&ex.mu);
    pthread_join(ex.thread, NULL);
}

static bool on_executor(void)
{
    return pthread_equal(pthread_self(), ex.thread) != 0;
}

/* ---- a metadata watcher that keeps what it saw ---- */

#define W_MAX 64
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    st_meta_event_t ev[W_MAX];
    size_t n;
    int calls, snapshots;
    bool wrong_thread;
    bool check_thread;
} w;

static void watch_cb(void *arg, const st_meta_event_t *evs, size_t n,
                     bool snapshot)
{
    (void)arg;
    pthread_mutex_lock(&w.mu);
    if (w.check_thread && !on_executor())
        w.wrong_thread = true;
    for (size_t i = 0; i < n && w.n < W_MAX; i++)
        w.ev[w.n++] = evs[i];
    w.calls++;
    w.snapshots += snapshot;
    pthread_cond_broadcast(&w.cv);
    pthread_mutex_unlock(&w.mu);
}

static void watch_reset(bool check_thread)
{
    pthread_mutex_lock(&w.mu);
    w.n = 0;
    w.calls = w.snapshots = 0;
    w.wrong_thread = false;
    w.check_thread = check_thread;
    pthread_mutex_unlock(&w.mu);
}

/* Waits until at least `n` events arrived (answers may come late). */
static size_t watch_wait(size_t n)
{
    size_t got;
    pthread_mutex_lock(&w.mu);
    while (w.n < n)
        pthread_cond_wait(&w.cv, &w.mu);
    got = w.n;
    pthread_mutex_unlock(&w.mu);
    return got;
}

static const st_meta_event_t *watch_find(const char *name, bool deleted)
{
    for (size_t i = 0; i < w.n; i++)
        if (strcmp(w.ev[i].u.topic.name, name) == 0 && w.ev[i].deleted == deleted)
            return &w.ev[i];
    return NULL;
}

/* ---- tests ---- */

static void test_meta_watch_local(void)
{
    char *dir = tu_tmpdir("relay_meta");
    st_store_t *st = tu_open(dir, ST_FLUSH_ASYNC);
    const st_meta_event_t *e, *put;
    size_t n;
    tu_msg_t m[1];

    CU_ASSERT_EQUAL(tu_topic(st, "Before", 2), GT_OK);
    CU_ASSERT_EQUAL(tu_group(st, "G0", 5, ST_CONSUME_FROM_FIRST), GT_OK);
    watch_reset(false);
    st_meta_watch(st, watch_cb, NULL);
    /* The snapshot: existing topic and group, no system topics. */
    CU_ASSERT_EQUAL(w.snapshots, 1);
    CU_ASSERT_EQUAL(w.n, 2);
    e = watch_find("Before", false);
    CU_ASSERT_FATAL(e != NULL);
    CU_ASSERT_EQUAL(e->kind, ST_META_TOPIC);
    CU_ASSERT_EQUAL(e->u.topic.queue_count, 2);
    e = watch_find("G0", false);
    CU_ASSERT_FATAL(e != NULL);
    CU_ASSERT_EQUAL(e->kind, ST_META_GROUP);
    CU_ASSERT_EQUAL(e->u.group.max_delivery_attempts, 5);
    for (size_t i = 0; i < w.n; i++)
        CU_ASSERT(w.ev[i].u.topic.name[0] != '%');

    /* Changes, each newer than the last. */
    CU_ASSERT_EQUAL(tu_topic(st, "T", 4), GT_OK);
    CU_ASSERT_EQUAL(tu_topic(st, "T", 8), GT_OK);
    CU_ASSERT_EQUAL(tu_group(st, "G1", 3, ST_CONSUME_FROM_FIRST), GT_OK);
    n = watch_wait(5);
    CU_ASSERT_EQUAL(n, 5);
    CU_ASSERT_EQUAL(w.ev[2].u.topic.queue_count, 4);
    CU_ASSERT_EQUAL(w.ev[3].u.topic.queue_count, 8);
    CU_ASSERT(w.ev[3].version > w.ev[2].version);
    CU_ASSERT(w.ev[4].version > w.ev[3].version);
    CU_ASSERT_EQUAL(w.ev[4].kind, ST_META_GROUP);
    put = &w.ev[3];

    /* A deletion, and a group the engine creates on its first pop. */
    {
        size_t k = 0;
        CU_ASSERT_EQUAL(tu_pop_simple(st, "Gauto", "T", NULL, 1, 10000, m, &k),
                        GT_OK);
    }
    e = watch_find("Gauto", false);
    CU_ASSERT_FATAL(e != NULL);
    CU_ASSERT_EQUAL(e->kind, ST_META_GROUP);
    CU_ASSERT(e->version > put->version);

    /* Unwatched: no more events. */
    st_meta_watch(st, NULL, NULL);
    n = w.n;
    CU_ASSERT_EQUAL(tu_topic(st, "After", 1), GT_OK);
    CU_ASSERT_EQUAL(w.n, n);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

static void del_cb(void *arg, gt_err_t err)
{
    *(gt_err_t *)arg = err;
}

static void test_meta_delete(void)
{
    char *dir = tu_tmpdir("relay_del");
    st_store_t *st = tu_open(dir, ST_FLUSH_ASYNC);
    gt_err_t rc = GT_EIO;
    const st_meta_event_t *a, *b;

    CU_ASSERT_EQUAL(tu_topic(st, "T", 1), GT_OK);
    watch_reset(false);
    st_meta_watch(st, watch_cb, NULL);
    st_topic_delete(st, "T", del_cb, &rc); /* the local engine answers inline */
    CU_ASSERT_EQUAL(rc, GT_OK);
    a = watch_find("T", false);
    b = watch_find("T", true);
    CU_ASSERT_FATAL(a != NULL && b != NULL);
    CU_ASSERT(b->version > a->version);
    CU_ASSERT_EQUAL(b->kind, ST_META_TOPIC);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

/* ---- exec and late decorators ---- */

typedef struct probe {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done, wrong_thread;
    gt_err_t err;
    size_t n;
    char body[64], handle[ST_HANDLE_MAX], topic[64];
} probe_t;

static void probe_init(probe_t *p)
{
    memset(p, 0, sizeof(*p));
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
}

static void probe_done(probe_t *p, gt_err_t err)
{
    pthread_mutex_lock(&p->mu);
    p->wrong_thread = !on_executor();
    p->err = err;
    p->done = true;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static gt_err_t probe_wait(probe_t *p)
{
    pthread_mutex_lock(&p->mu);
    while (!p->done)
        pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
    return p->err;
}

static void probe_append(void *arg, gt_err_t err, const st_append_item_t *it,
                         size_t n)
{
    probe_t *p = arg;
    (void)it;
    p->n = n;
    probe_done(p, err);
}

static void probe_pop(void *arg, gt_err_t err, const st_popped_t *m, size_t n)
{
    probe_t *p = arg;
    p->n = n;
    if (n > 0) {
        snprintf(p->body, sizeof(p->body), "%.*s", (int)m[0].msg.body_len,
                 (const char *)m[0].msg.body);
        snprintf(p->handle, sizeof(p->handle), "%s", m[0].handle);
        snprintf(p->topic, sizeof(p->topic), "%s", m[0].msg.topic);
    }
    probe_done(p, err);
}

static void probe_ack(void *arg, gt_err_t err)
{
    probe_done(arg, err);
}

/* Runs a short life on `st` (decorated): every answer on the executor. */
static void decorated_life(st_store_t *st)
{
    st_message_t msg;
    st_pop_req_t req;
    probe_t p, park;
    tu_msg_t m[4];
    size_t n = 0;

    watch_reset(true);
    st_meta_watch(st, watch_cb, NULL);
    CU_ASSERT_EQUAL(watch_wait(0), 0);
    CU_ASSERT_EQUAL(tu_topic(st, "T", 2), GT_OK);
    CU_ASSERT_EQUAL(watch_wait(1), 1);
    CU_ASSERT_FALSE(w.wrong_thread);

    memset(&msg, 0, sizeof(msg));
    msg.body = "hello";
    msg.body_len = 5;
    msg.tag = "a";
    msg.queue_id = ST_QUEUE_ANY;
    probe_init(&p);
    st_append(st, "T", &msg, 1, probe_append, &p);
    CU_ASSERT_EQUAL(probe_wait(&p), GT_OK);
    CU_ASSERT_EQUAL(p.n, 1);
    CU_ASSERT_FALSE(p.wrong_thread);

    /* The popped message is the callback's own copy. */
    memset(&req, 0, sizeof(req));
    req.group = "G";
    req.topic = "T";
    req.queue_id = ST_QUEUE_ANY;
    req.max = 4;
    req.invisible_ms = 30000;
    probe_init(&p);
    st_pop(st, &req, probe_pop, &p);
    CU_ASSERT_EQUAL(probe_wait(&p), GT_OK);
    CU_ASSERT_EQUAL_FATAL(p.n, 1);
    CU_ASSERT_STRING_EQUAL(p.body, "hello");
    CU_ASSERT_STRING_EQUAL(p.topic, "T");
    CU_ASSERT_FALSE(p.wrong_thread);
    probe_init(&park);
    {
        char h[ST_HANDLE_MAX];
        snprintf(h, sizeof(h), "%s", p.handle);
        probe_init(&p);
        st_ack(st, "G", "T", h, probe_ack, &p);
        CU_ASSERT_EQUAL(probe_wait(&p), GT_OK);
        CU_ASSERT_FALSE(p.wrong_thread);
    }
    /* The blocking helpers see the same store behaviour. */
    CU_ASSERT_EQUAL(tu_send(st, "T", "b", "k1", "second", 1, NULL), GT_OK);
    CU_ASSERT_EQUAL(tu_pop_simple(st, "G", "T", "b", 4, 30000, m, &n), GT_OK);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_STRING_EQUAL(m[0].body, "second");
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", m[0].handle), GT_OK);
    CU_ASSERT_EQUAL(tu_ack(st, "G", "T", m[0].handle), GT_EINVAL);
    CU_ASSERT_EQUAL(tu_lookup(st, true, "T", "k1", m, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 1);

    /* A parked pop is answered when the store closes, on the executor. */
    req.poll_timeout_ms = 60000;
    st_pop(st, &req, probe_pop, &park);
    st_close(st);
    CU_ASSERT_TRUE(park.done);
    CU_ASSERT_EQUAL(park.err, GT_ESHUTDOWN);
    CU_ASSERT_FALSE(park.wrong_thread);
}

static void test_exec(void)
{
    char *dir = tu_tmpdir("relay_exec");
    st_store_t *st = NULL;

    ex_start();
    CU_ASSERT_EQUAL_FATAL(st_exec_open(tu_open(dir, ST_FLUSH_SYNC), &the_exec, &st),
                          GT_OK);
    CU_ASSERT_STRING_EQUAL(st->ops->name, "exec(local)");
    decorated_life(st);
    ex_stop();
    CU_ASSERT(ex.ran > 0);
    tu_rmrf(dir);
    free(dir);
}

static void test_exec_late(void)
{
    char *dir = tu_tmpdir("relay_late");
    st_store_t *late = NULL, *st = NULL;

    ex_start();
    CU_ASSERT_EQUAL_FATAL(st_late_open(tu_open(dir, ST_FLUSH_SYNC), 5000, 7, &late),
                          GT_OK);
    CU_ASSERT_EQUAL_FATAL(st_exec_open(late, &the_exec, &st), GT_OK);
    CU_ASSERT_STRING_EQUAL(st->ops->name, "exec(late(local))");
    decorated_life(st);
    ex_stop();
    tu_rmrf(dir);
    free(dir);
}

/* ---- answers held by st_sched_hold() ---- */

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int order[8];
    int n;
    bool wrong_thread;
} held = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, {0}, 0, false};

static void held_ack(void *arg, gt_err_t err)
{
    (void)err;
    pthread_mutex_lock(&held.mu);
    if (!on_executor())
        held.wrong_thread = true;
    if (held.n < 8)
        held.order[held.n] = (int)(intptr_t)arg;
    held.n++;
    pthread_cond_broadcast(&held.cv);
    pthread_mutex_unlock(&held.mu);
}

static int held_count(void)
{
    pthread_mutex_lock(&held.mu);
    int n = held.n;
    pthread_mutex_unlock(&held.mu);
    return n;
}

/* Waits until `n` held answers have run. */
static void held_wait(int n)
{
    pthread_mutex_lock(&held.mu);
    while (held.n < n)
        pthread_cond_wait(&held.cv, &held.mu);
    pthread_mutex_unlock(&held.mu);
}

/* The local engine answers an ack on the caller's thread: between
 * st_sched_hold() and st_sched_release() those answers are kept and go to
 * the executor as one task, in order, at the outermost release. */
static void test_exec_hold(void)
{
    char *dir = tu_tmpdir("relay_hold");
    st_store_t *st = NULL;
    int posted;

    ex_start();
    CU_ASSERT_EQUAL_FATAL(st_exec_open(tu_open(dir, ST_FLUSH_SYNC), &the_exec, &st),
                          GT_OK);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    pthread_mutex_lock(&ex.mu);
    posted = ex.posted;
    pthread_mutex_unlock(&ex.mu);

    st_sched_hold();
    st_sched_hold(); /* nested: only the outer release posts */
    for (int i = 0; i < 5; i++)
        st_ack(st, "G", "T", "no-such-handle", held_ack, (void *)(intptr_t)i);
    st_sched_release();
    pthread_mutex_lock(&ex.mu);
    CU_ASSERT_EQUAL(ex.posted, posted); /* still held */
    pthread_mutex_unlock(&ex.mu);
    CU_ASSERT_EQUAL(held_count(), 0);
    st_sched_release();

    held_wait(5);
    pthread_mutex_lock(&ex.mu);
    CU_ASSERT_EQUAL(ex.posted, posted + 1);
    pthread_mutex_unlock(&ex.mu);
    for (int i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(held.order[i], i);
    CU_ASSERT_FALSE(held.wrong_thread);

    /* Without a hold, each answer is its own task again. */
    st_ack(st, "G", "T", "no-such-handle", held_ack, (void *)(intptr_t)5);
    held_wait(6);
    pthread_mutex_lock(&ex.mu);
    CU_ASSERT_EQUAL(ex.posted, posted + 2);
    pthread_mutex_unlock(&ex.mu);
    st_close(st);
    ex_stop();
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    static const CU_TestInfo tests[] = {
        {"metadata watch on the local engine", test_meta_watch_local},
        {"metadata watch reports deletions", test_meta_delete},
        {"exec decorator", test_exec},
        {"exec over late decorator", test_exec_late},
        {"exec decorator: held answers go as one task", test_exec_hold},
        CU_TEST_INFO_NULL,
    };
    return tu_run("store_relay", tests);
}
