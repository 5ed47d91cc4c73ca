/* The front end's executor (gantry's service, gantry-store's): a few threads that run posted tasks in the
 * order they were posted (several at once when there are several threads).
 *
 * The store is opened through st_exec_open() with this executor, so every
 * store answer -- a SendMessage's append, a parked ReceiveMessage's pop, a
 * metadata change -- runs here as owned data, never on a store thread.  It
 * is the service's own rather than the gRPC runtime's completion queue
 * because it must run before the gRPC server accepts calls (the metadata
 * snapshot at start-up) and after it stopped them (the store's last
 * answers while it closes), and because work without a call (renewals,
 * transaction checks, metadata) has no call to defer on.
 *
 * Posts from the executor's own threads, from gRPC workers and from the
 * AMQP gateway's loop thread (which call px_exec_after_event() after each
 * event, resp. round of events) do not wake another thread: they
 * queue on the posting thread and run there as soon as its current task or
 * event is over -- never inside the store call that posted them.  An
 * answer the store gives on the caller's thread (a pop that found
 * messages, an ack) is then handled without a hand-off, as is a send
 * whose append a gRPC worker wrote itself.  Posts from other threads (the
 * store's syncer, renewals) go to the shared queue. */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "gt_log.h"
#include "px_exec.h"

typedef struct px_task {
    struct px_task *next;
    st_task_fn fn;
    void *arg;
} px_task_t;

/* The queue and the stop flag are under mu; threads are set at start. */
struct px_exec {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    px_task_t *head, *tail;
    bool stop;
    size_t nthreads;
    pthread_t *threads;
    st_exec_t st;
};

/* The calling thread's own queue: enabled (px_local_exec set) on the
 * executor's threads and on gRPC workers, run when their current task or
 * event is over.  Thread-local, so no lock. */
static _Thread_local px_exec_t *px_local_exec;
static _Thread_local px_task_t *px_local_head, *px_local_tail;

/* Runs the calling thread's own queue, including what its tasks post. */
static void px_exec_run_local(void)
{
    px_task_t *t;

    while ((t = px_local_head) != NULL) {
        px_local_head = t->next;
        if (px_local_head == NULL)
            px_local_tail = NULL;
        t->fn(t->arg);
        free(t);
    }
}

static gt_err_t px_exec_post(void *ctx, st_task_fn fn, void *arg)
{
    px_exec_t *x = ctx;
    px_task_t *t = malloc(sizeof(*t));

    if (t == NULL)
        return GT_ENOMEM;
    t->next = NULL;
    t->fn = fn;
    t->arg = arg;
    if (px_local_exec == x) {
        if (px_local_tail != NULL)
            px_local_tail->next = t;
        else
            px_local_head = t;
        px_local_tail = t;
        return GT_OK;
    }
    pthread_mutex_lock(&x->mu);
    if (x->tail != NULL)
        x->tail->next = t;
    else
        x->head = t;
    x->tail = t;
    pthread_cond_signal(&x->cv);
    pthread_mutex_unlock(&x->mu);
    return GT_OK;
}

static void *px_exec_main(void *arg)
{
    px_exec_t *x = arg;
    px_task_t *t;

    pthread_setname_np(pthread_self(), "px-exec");
    px_local_exec = x;
    pthread_mutex_lock(&x->mu);
    for (;;) {
        while (x->head == NULL && !x->stop)
            pthread_cond_wait(&x->cv, &x->mu);
        if ((t = x->head) == NULL)
            break; /* stopping and drained */
        x->head = t->next;
        if (x->head == NULL)
            x->tail = NULL;
        pthread_mutex_unlock(&x->mu);
        t->fn(t->arg);
        free(t);
        px_exec_run_local();
        pthread_mutex_lock(&x->mu);
    }
    pthread_mutex_unlock(&x->mu);
    return NULL;
}

px_exec_t *px_exec_new(int threads)
{
    px_exec_t *x = calloc(1, sizeof(*x));
    long cores = sysconf(_SC_NPROCESSORS_ONLN);

    if (x == NULL)
        return NULL;
    x->nthreads = threads > 0 ? (size_t)threads : cores > 0 ? (size_t)cores : 1;
    if ((x->threads = calloc(x->nthreads, sizeof(*x->threads))) == NULL) {
        free(x);
        return NULL;
    }
    pthread_mutex_init(&x->mu, NULL);
    pthread_cond_init(&x->cv, NULL);
    x->st = (st_exec_t){px_exec_post, x};
    for (size_t i = 0; i < x->nthreads; i++) {
        if (pthread_create(&x->threads[i], NULL, px_exec_main, x) != 0) {
            x->nthreads = i;
            px_exec_free(x);
            return NULL;
        }
    }
    return x;
}

void px_exec_after_event(void *ctx)
{
    px_local_exec = ctx;
    px_exec_run_local();
}

const st_exec_t *px_exec_store(px_exec_t *x)
{
    return &x->st;
}

void px_exec_free(px_exec_t *x)
{
    if (x == NULL)
        return;
    pthread_mutex_lock(&x->mu);
    x->stop = true;
    pthread_cond_broadcast(&x->cv);
    pthread_mutex_unlock(&x->mu);
    for (size_t i = 0; i < x->nthreads; i++)
        pthread_join(x->threads[i], NULL);
    pthread_mutex_destroy(&x->mu);
    pthread_cond_destroy(&x->cv);
    free(x->threads);
    free(x);
}
