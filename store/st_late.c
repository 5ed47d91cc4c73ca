/* st_late_open() (tests only): the relay (st_relay.c) scheduled on a
 * thread of its own after a random delay, so every answer comes late, on
 * a foreign thread and possibly out of order -- as a store across a
 * network would answer.  Running the integration suite against it proves
 * the front end assumes nothing about when or where answers arrive.
 *
 * Answers wait in a list sorted by due time (a test's load is small);
 * the thread sleeps until the first is due. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "st_relay.h"

/* Guarded by mu. */
typedef struct st_late {
    pthread_mutex_t mu;
    pthread_cond_t cv;  /* CLOCK_MONOTONIC */
    pthread_t thread;
    st_res_t *head;     /* sorted by due time */
    bool stop;
    unsigned seed;
    uint32_t max_us;
} st_late_t;

static int64_t late_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void late_sched(void *ctx, st_res_t *res)
{
    st_late_t *l = ctx;
    st_res_t **pp;
    int64_t due;

    pthread_mutex_lock(&l->mu);
    due = late_now_us() + (int64_t)(rand_r(&l->seed) % (l->max_us + 1));
    *st_res_due(res) = due;
    for (pp = &l->head; *pp != NULL && *st_res_due(*pp) <= due; pp = st_res_next(*pp))
        ;
    *st_res_next(res) = *pp;
    *pp = res;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

static void *late_main(void *arg)
{
    st_late_t *l = arg;
    struct timespec ts;

    pthread_mutex_lock(&l->mu);
    for (;;) {
        st_res_t *r = l->head;
        int64_t now = late_now_us();
        if (r == NULL) {
            if (l->stop)
                break;
            pthread_cond_wait(&l->cv, &l->mu);
            continue;
        }
        if (*st_res_due(r) > now) {
            int64_t due = *st_res_due(r);
            ts.tv_sec = (time_t)(due / 1000000);
            ts.tv_nsec = (long)(due % 1000000) * 1000;
            pthread_cond_timedwait(&l->cv, &l->mu, &ts);
            continue;
        }
        l->head = *st_res_next(r);
        pthread_mutex_unlock(&l->mu);
        st_res_deliver(r);
        pthread_mutex_lock(&l->mu);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static void late_close(void *ctx)
{
    st_late_t *l = ctx;

    pthread_mutex_lock(&l->mu);
    l->stop = true;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l);
}

gt_err_t st_late_open(st_store_t *inner, uint32_t max_delay_us, unsigned seed,
                      st_store_t **out)
{
    st_late_t *l;
    st_relay_cfg_t cfg;
    pthread_condattr_t ca;
    char name[64];
    gt_err_t rc;

    if (inner == NULL)
        return GT_EINVAL;
    if ((l = calloc(1, sizeof(*l))) == NULL)
        return GT_ENOMEM;
    l->seed = seed;
    l->max_us = max_delay_us;
    pthread_mutex_init(&l->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&l->thread, NULL, late_main, l) != 0) {
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->cv);
        free(l);
        return GT_ENOMEM;
    }
    snprintf(name, sizeof(name), "late(%s)", inner->ops->name);
    cfg = (st_relay_cfg_t){name, late_sched, l, late_close};
    rc = st_relay_open(inner, &cfg, out);
    if (rc != GT_OK)
        late_close(l);
    return rc;
}
