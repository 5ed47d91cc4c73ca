/* Store acks, batched (see gw_acks.h): the acks of one loop round go to the
 * store as one st_ack_batch per queue (its store group and topic). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "gt_log.h"
#include "gw_acks.h"

/* A queue's acks of this round. */
typedef struct {
    gw_queue_t *q; /* ref */
    size_t n, cap;
    char (*h)[ST_HANDLE_MAX];
} ackq_t;

struct gw_acks {
    struct event *ev; /* the flush, after the round's callbacks */
    bool armed;
    ackq_t *v; /* queues with acks, in order of their first ack */
    size_t n, cap;
};

/* One st_ack_batch in flight. */
typedef struct {
    gw_op_t op;
    char id[sizeof(((gw_queue_t *)0)->id)];
    size_t n;
    char (*h)[ST_HANDLE_MAX];
    const char **ptrs;
    gt_err_t *errs; /* the per-handle results, when the batch was taken */
} batch_op_t;

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    gw_acks_flush(arg);
}

bool gw_acks_new(gw_broker_t *b)
{
    struct gw_acks *a = calloc(1, sizeof(*a));

    if (a == NULL || (a->ev = event_new(b->base, -1, 0, flush_cb, b)) == NULL) {
        free(a);
        return false;
    }
    b->acks = a;
    return true;
}

void gw_acks_free(gw_broker_t *b)
{
    struct gw_acks *a = b->acks;

    if (a == NULL)
        return;
    gw_acks_flush(b); /* (nothing is pending after the broker's drain) */
    event_free(a->ev);
    free(a->v);
    free(a);
    b->acks = NULL;
}

void gw_store_ack(gw_broker_t *b, const char *id, const char *handle)
{
    gw_op_t *op = gw_op_new(b, sizeof(*op), gw_op_free_fn);

    if (op != NULL)
        st_ack(b->store, id, id, handle, gw_op_done_cb, op);
}

static void batch_fn(gw_op_t *op)
{
    batch_op_t *o = (batch_op_t *)op;
    gw_broker_t *b = op->b;
    size_t failed = 0;

    if (op->err == GT_OK && o->errs != NULL) {
        for (size_t i = 0; i < o->n; i++)
            if (o->errs[i] != GT_OK && failed++ == 0) /* the first one named */
                GT_LOG(DEBUG, "amqp", "store ack of %s in %s: %s", o->h[i], o->id,
                       gt_err_str(o->errs[i]));
        if (failed > 1)
            GT_LOG(DEBUG, "amqp", "store acks in %s: %zu of %zu failed", o->id, failed, o->n);
    } else if (op->err != GT_ENOTFOUND && op->err != GT_ESHUTDOWN) {
        /* The batch as a whole was refused (memory...): each ack alone,
         * each with its own result, as before batching. */
        GT_LOG(DEBUG, "amqp", "store ack batch of %zu in %s: %s; acking one by one", o->n,
               o->id, gt_err_str(op->err));
        for (size_t i = 0; i < o->n; i++)
            gw_store_ack(b, o->id, o->h[i]);
    }
    free(o->errs);
    free(o->ptrs);
    free(o->h);
    free(o);
}

static void batch_cb(void *arg, gt_err_t err, const gt_err_t *errs, size_t n)
{
    batch_op_t *o = arg;

    o->op.err = err;
    if (err == GT_OK && errs != NULL && n == o->n &&
        (o->errs = malloc(n * sizeof(*o->errs))) != NULL)
        memcpy(o->errs, errs, n * sizeof(*errs));
    else if (err == GT_OK)
        o->op.err = GT_ENOMEM; /* results unknown: batch_fn acks one by one */
    gw_op_post(&o->op);
}

/* Sends h[0..n) of q as one batch; takes h (malloc'd). */
static void send_batch(gw_broker_t *b, const gw_queue_t *q, char (*h)[ST_HANDLE_MAX], size_t n)
{
    batch_op_t *o = gw_op_new(b, sizeof(*o), batch_fn);

    if (o != NULL)
        memcpy(o->id, q->id, sizeof(o->id));
    if (o == NULL || (o->ptrs = malloc(n * sizeof(*o->ptrs))) == NULL) {
        if (o != NULL) { /* counted: answered at once, acked one by one */
            o->h = h;
            o->n = n;
            o->op.err = GT_ENOMEM;
            gw_op_post(&o->op);
        } else {
            free(h); /* no memory for an op either: they come back when
                        their invisibility ends, as a lost ack would */
        }
        return;
    }
    o->h = h;
    o->n = n;
    for (size_t i = 0; i < n; i++)
        o->ptrs[i] = h[i];
    st_ack_batch(b->store, o->id, o->id, o->ptrs, n, batch_cb, o);
    /* After the call (o may be gone): the embedded store has written the
     * acks by now, so a test that reads this line and then kills the
     * process finds them after a restart (logged before the call, a
     * SIGKILL in between lost them once under load). */
    GT_LOG(DEBUG, "amqp", "store ack batch: %zu of queue '%.*s' (%s)", n, (int)q->nlen, q->name,
           q->id);
}

/* Sends the pending acks of a slot and empties it. */
static void flush_slot(gw_broker_t *b, ackq_t *s)
{
    gw_queue_t *q = s->q;

    q->ack_slot = 0;
    if (s->n > 0)
        send_batch(b, q, s->h, s->n);
    else
        free(s->h);
    s->h = NULL;
    s->n = s->cap = 0;
    s->q = NULL;
    gw_queue_unref(q);
}

void gw_acks_flush(gw_broker_t *b)
{
    struct gw_acks *a = b->acks;

    if (a == NULL)
        return;
    a->armed = false;
    /* flush_slot may not add slots (it sends; answers come later) */
    for (size_t i = 0; i < a->n; i++)
        flush_slot(b, &a->v[i]);
    a->n = 0;
}

void gw_msg_ack(gw_broker_t *b, gw_queue_t *q, const char *handle)
{
    struct gw_acks *a = b->acks;
    ackq_t *s;

    if (a == NULL || b->store->ops->ack_batch == NULL) {
        gw_store_ack(b, q->id, handle);
        return;
    }
    if (q->ack_slot == 0) {
        if (a->n == a->cap) {
            size_t cap = a->cap ? a->cap * 2 : 16;
            ackq_t *v = realloc(a->v, cap * sizeof(*v));
            if (v == NULL) {
                gw_store_ack(b, q->id, handle);
                return;
            }
            a->v = v;
            a->cap = cap;
        }
        s = &a->v[a->n++];
        memset(s, 0, sizeof(*s));
        gw_queue_ref(q);
        s->q = q;
        q->ack_slot = (uint32_t)a->n;
    }
    s = &a->v[q->ack_slot - 1];
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        void *h = cap <= ST_ACK_MAX ? realloc(s->h, cap * sizeof(*s->h)) : NULL;
        if (h == NULL) {
            gw_store_ack(b, q->id, handle);
            return;
        }
        s->h = h;
        s->cap = cap;
    }
    snprintf(s->h[s->n++], ST_HANDLE_MAX, "%s", handle);
    if (s->n == ST_ACK_MAX) { /* a full batch goes now */
        send_batch(b, q, s->h, s->n);
        s->h = NULL;
        s->n = s->cap = 0;
    }
    if (!a->armed && !b->stopping) {
        a->armed = true;
        event_active(a->ev, EV_TIMEOUT, 1);
    }
}
