/* Unit tests for the service's executor (px_exec.c): a post from a foreign
 * thread runs on an executor thread; a post from an executor task, or from
 * a thread that called px_exec_after_event() (a gRPC worker), runs on the
 * posting thread once its current task or event is over -- never inside
 * the post -- in the order posted, including what those tasks post. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include <CUnit/Basic.h>

#include "px_service.h"

typedef struct probe {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t ran_on[8];
    int order[8];
    int n;
    const st_exec_t *ex;
    bool in_post;       /* set around a post: a task seeing it ran inline */
    bool ran_inline;
} probe_t;

static probe_t P;

static void probe_reset(const st_exec_t *ex)
{
    P.n = 0;
    P.ex = ex;
    P.in_post = false;
    P.ran_inline = false;
}

static void record(int id)
{
    pthread_mutex_lock(&P.mu);
    if (P.in_post && pthread_equal(pthread_self(), P.ran_on[0]))
        P.ran_inline = true;
    P.ran_on[P.n] = pthread_self();
    P.order[P.n++] = id;
    pthread_cond_broadcast(&P.cv);
    pthread_mutex_unlock(&P.mu);
}

static void wait_count(int n)
{
    pthread_mutex_lock(&P.mu);
    while (P.n < n)
        pthread_cond_wait(&P.cv, &P.mu);
    pthread_mutex_unlock(&P.mu);
}

static void task_leaf(void *arg)
{
    record((int)(intptr_t)arg);
}

/* Posts two leaves (2, 3); the second leaf posts nothing.  Records 1. */
static void task_parent(void *arg)
{
    (void)arg;
    record(1);
    P.in_post = true;
    CU_ASSERT_EQUAL(P.ex->post(P.ex->ctx, task_leaf, (void *)(intptr_t)2), GT_OK);
    CU_ASSERT_EQUAL(P.ex->post(P.ex->ctx, task_leaf, (void *)(intptr_t)3), GT_OK);
    P.in_post = false;
}

static void test_foreign_and_task_posts(void)
{
    px_exec_t *x = px_exec_new(2);
    const st_exec_t *ex;

    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    ex = px_exec_store(x);
    probe_reset(ex);
    /* From this (foreign) thread: runs on an executor thread. */
    CU_ASSERT_EQUAL(ex->post(ex->ctx, task_parent, NULL), GT_OK);
    wait_count(3);
    CU_ASSERT_FALSE(pthread_equal(P.ran_on[0], pthread_self()));
    /* Its posts ran after it, on the same executor thread, in order. */
    CU_ASSERT_EQUAL(P.order[0], 1);
    CU_ASSERT_EQUAL(P.order[1], 2);
    CU_ASSERT_EQUAL(P.order[2], 3);
    CU_ASSERT_TRUE(pthread_equal(P.ran_on[1], P.ran_on[0]));
    CU_ASSERT_TRUE(pthread_equal(P.ran_on[2], P.ran_on[0]));
    CU_ASSERT_FALSE(P.ran_inline);
    px_exec_free(x);
}

/* A "gRPC worker": after_event enables local posts on it and runs them. */
typedef struct worker_arg {
    px_exec_t *x;
    int before_event;   /* tasks run when the first post returned */
    int after_event;    /* tasks run when after_event returned */
    pthread_t self;
} worker_arg_t;

static void *worker_main(void *arg)
{
    worker_arg_t *w = arg;
    const st_exec_t *ex = px_exec_store(w->x);

    w->self = pthread_self();
    px_exec_after_event(w->x); /* as after the worker's first event */
    P.ran_on[0] = pthread_self();
    P.in_post = true;
    CU_ASSERT_EQUAL(ex->post(ex->ctx, task_parent, NULL), GT_OK);
    P.in_post = false;
    pthread_mutex_lock(&P.mu);
    w->before_event = P.n;
    pthread_mutex_unlock(&P.mu);
    px_exec_after_event(w->x); /* the event is over */
    pthread_mutex_lock(&P.mu);
    w->after_event = P.n;
    pthread_mutex_unlock(&P.mu);
    return NULL;
}

static void test_worker_posts(void)
{
    px_exec_t *x = px_exec_new(1);
    worker_arg_t w = {.x = x};
    pthread_t th;

    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    probe_reset(px_exec_store(x));
    CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, worker_main, &w), 0);
    pthread_join(th, NULL);
    CU_ASSERT_EQUAL(w.before_event, 0);
    CU_ASSERT_EQUAL(w.after_event, 3);
    CU_ASSERT_FALSE(P.ran_inline);
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(P.order[i], i + 1);
        CU_ASSERT_TRUE(pthread_equal(P.ran_on[i], w.self));
    }
    px_exec_free(x);
}

int main(void)
{
    CU_pSuite s;

    pthread_mutex_init(&P.mu, NULL);
    pthread_cond_init(&P.cv, NULL);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("px_exec", NULL, NULL);
    CU_add_test(s, "posts from outside and from a task", test_foreign_and_task_posts);
    CU_add_test(s, "posts from a worker run after its event", test_worker_posts);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed == 0 ? 0 : 1;
}
