/* The relay decorator (see st_relay.h): forwards each operation to the
 * inner store at once and captures its answer -- error, counts and a deep
 * copy of every array, string and body the inner store lent -- into one
 * record that a scheduler later delivers to the caller's callback.  The
 * copy is what makes the answer the callback's own: the inner store's
 * buffers are gone by the time the scheduler runs it.
 *
 * Closing: st_close() stops forwarding (operations issued from then on,
 * e.g. by callbacks that continue a chain, are answered GT_ESHUTDOWN
 * through the scheduler), waits for operations being forwarded, closes the
 * inner store (which answers whatever it still holds), and returns once
 * every answer was delivered. */
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt_log.h"
#include "st_relay.h"

typedef enum st_res_kind {
    R_DONE = 0,
    R_TOPIC,
    R_GROUP,
    R_APPEND,
    R_POP,
    R_HANDLE,
    R_MSGS,
    R_OFFSET,
    R_STATS,
    R_META,
    R_META_LIST,
    R_ACKS,
} st_res_kind_t;

typedef union st_res_cb {
    st_done_cb done;
    st_topic_cb topic;
    st_group_cb group;
    st_append_cb append;
    st_pop_cb pop;
    st_handle_cb handle;
    st_msgs_cb msgs;
    st_offset_cb offset;
    st_stats_cb stats;
    st_meta_list_cb meta_list;
    st_acks_cb acks;
} st_res_cb_t;

/* The decorator.  `inner`, `cfg` and `ops` are set at open and read-only
 * after; the counters, flag and watcher are under mu. */
typedef struct st_relay {
    st_store_t base; /* first: the store handle points here */
    st_ops_t ops;    /* relay_ops with this relay's name */
    char name[64];
    st_store_t *inner;
    st_relay_cfg_t cfg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t active;   /* operations inside an inner call right now */
    size_t pending;  /* answers (and notifications) not delivered yet */
    bool closing;
    st_meta_cb meta_cb;
    void *meta_arg;
} st_relay_t;

struct st_res {
    st_res_t *next;  /* for the scheduler */
    int64_t due;     /* for the scheduler */
    st_relay_t *rl;
    st_res_kind_t kind;
    st_res_cb_t cb;
    void *arg;
    gt_err_t err;
    size_t n;
    uint64_t u64;    /* offset, next offset */
    bool snapshot;   /* R_META; R_META_LIST: more */
    void *data;      /* owned copy of the result */
};

st_res_t **st_res_next(st_res_t *res) { return &res->next; }
int64_t *st_res_due(st_res_t *res) { return &res->due; }

/* ---- deep copies ---- */

static size_t str_size(const char *s)
{
    return s != NULL ? strlen(s) + 1 : 0;
}

static const char *str_put(char **cur, const char *s)
{
    size_t len;
    const char *out = *cur;

    if (s == NULL)
        return NULL;
    len = strlen(s) + 1;
    memcpy(*cur, s, len);
    *cur += len;
    return out;
}

/* Bytes a message's strings and body take. */
static size_t msg_extra(const st_message_t *m)
{
    size_t z = str_size(m->tag) + str_size(m->msg_id) + str_size(m->born_host) +
               str_size(m->msg_group) + str_size(m->topic) + m->body_len;

    for (uint32_t i = 0; i < m->nkeys && i < ST_MAX_KEYS; i++)
        z += str_size(m->keys[i]);
    for (uint32_t i = 0; i < m->nprops && i < ST_MAX_PROPS; i++)
        z += str_size(m->props[i].key) + str_size(m->props[i].value);
    return z;
}

static void msg_pack(st_message_t *d, const st_message_t *s, char **cur)
{
    *d = *s;
    d->tag = str_put(cur, s->tag);
    d->msg_id = str_put(cur, s->msg_id);
    d->born_host = str_put(cur, s->born_host);
    d->msg_group = str_put(cur, s->msg_group);
    d->topic = str_put(cur, s->topic);
    for (uint32_t i = 0; i < s->nkeys && i < ST_MAX_KEYS; i++)
        d->keys[i] = str_put(cur, s->keys[i]);
    for (uint32_t i = 0; i < s->nprops && i < ST_MAX_PROPS; i++) {
        d->props[i].key = str_put(cur, s->props[i].key);
        d->props[i].value = str_put(cur, s->props[i].value);
    }
    d->body = NULL;
    if (s->body_len > 0) {
        memcpy(*cur, s->body, s->body_len);
        d->body = *cur;
        *cur += s->body_len;
    }
}

/* One allocation: n elements of `stride` bytes (each holding an
 * st_message_t at `off`), then their strings and bodies. */
static void *msgs_copy(const void *src, size_t n, size_t stride, size_t off)
{
    size_t z = n * stride;
    char *out, *cur;

    for (size_t i = 0; i < n; i++)
        z += msg_extra((const st_message_t *)((const char *)src + i * stride + off));
    if ((out = malloc(z ? z : 1)) == NULL)
        return NULL;
    memcpy(out, src, n * stride);
    cur = out + n * stride;
    for (size_t i = 0; i < n; i++)
        msg_pack((st_message_t *)(out + i * stride + off),
                 (const st_message_t *)((const char *)src + i * stride + off), &cur);
    return out;
}

static void *mem_copy(const void *src, size_t len)
{
    void *out;

    if (len == 0 || src == NULL)
        return NULL;
    if ((out = malloc(len)) != NULL)
        memcpy(out, src, len);
    return out;
}

/* ---- capture (inner store's thread) and delivery (scheduler's) ---- */

static void res_sched(st_res_t *r)
{
    r->rl->cfg.sched(r->rl->cfg.ctx, r);
}

/* Records the copy; a failed copy turns the answer into GT_ENOMEM. */
static void res_keep(st_res_t *r, gt_err_t err, void *copy, size_t n)
{
    r->err = err;
    r->n = n;
    r->data = copy;
    if (n > 0 && copy == NULL) {
        r->err = GT_ENOMEM;
        r->n = 0;
    }
    res_sched(r);
}

static void cap_done(void *arg, gt_err_t err)
{
    res_keep(arg, err, NULL, 0);
}

static void cap_topic(void *arg, gt_err_t err, const st_topic_t *t, size_t n)
{
    res_keep(arg, err, mem_copy(t, n * sizeof(*t)), n);
}

static void cap_group(void *arg, gt_err_t err, const st_group_t *g, size_t n)
{
    res_keep(arg, err, mem_copy(g, n * sizeof(*g)), n);
}

static void cap_append(void *arg, gt_err_t err, const st_append_item_t *it,
                       size_t n)
{
    res_keep(arg, err, mem_copy(it, n * sizeof(*it)), n);
}

static void cap_pop(void *arg, gt_err_t err, const st_popped_t *p, size_t n)
{
    res_keep(arg, err, n ? msgs_copy(p, n, sizeof(*p), offsetof(st_popped_t, msg))
                         : NULL, n);
}

static void cap_handle(void *arg, gt_err_t err, const char *handle)
{
    st_res_t *r = arg;
    char *h = handle != NULL ? strdup(handle) : NULL;

    r->err = handle != NULL && h == NULL ? GT_ENOMEM : err;
    r->data = h;
    res_sched(r);
}

static void cap_msgs(void *arg, gt_err_t err, const st_message_t *m, size_t n,
                     uint64_t next)
{
    st_res_t *r = arg;

    r->u64 = next;
    res_keep(r, err, n ? msgs_copy(m, n, sizeof(*m), 0) : NULL, n);
}

static void cap_offset(void *arg, gt_err_t err, uint64_t off)
{
    st_res_t *r = arg;

    r->u64 = off;
    res_keep(r, err, NULL, 0);
}

static void cap_stats(void *arg, gt_err_t err, const st_stats_t *s)
{
    st_res_t *r = arg;
    st_stats_t *c = NULL;

    if (s != NULL) {
        size_t qz = (size_t)s->nqueues * sizeof(*s->queues);
        if ((c = malloc(sizeof(*c) + qz)) != NULL) {
            *c = *s;
            c->queues = NULL;
            if (qz > 0 && s->queues != NULL) {
                memcpy(c + 1, s->queues, qz);
                c->queues = (const st_queue_stats_t *)(c + 1);
            }
        }
    }
    r->err = s != NULL && c == NULL ? GT_ENOMEM : err;
    r->data = c;
    res_sched(r);
}

static void cap_acks(void *arg, gt_err_t err, const gt_err_t *errs, size_t n)
{
    res_keep(arg, err, mem_copy(errs, n * sizeof(*errs)), n);
}

static void cap_meta_list(void *arg, gt_err_t err, const st_meta_rec_t *recs,
                          size_t n, bool more)
{
    st_res_t *r = arg;
    size_t z = n * sizeof(*recs);
    char *out = NULL, *cur;

    for (size_t i = 0; i < n; i++)
        z += (size_t)recs[i].key_len + recs[i].value_len;
    if (n > 0 && (out = malloc(z)) != NULL) {
        st_meta_rec_t *c = (st_meta_rec_t *)out;
        cur = out + n * sizeof(*recs);
        for (size_t i = 0; i < n; i++) {
            c[i] = recs[i];
            memcpy(cur, recs[i].key, recs[i].key_len);
            c[i].key = cur;
            cur += recs[i].key_len;
            if (recs[i].value_len > 0)
                memcpy(cur, recs[i].value, recs[i].value_len);
            c[i].value = cur;
            cur += recs[i].value_len;
        }
    }
    r->snapshot = more;
    res_keep(r, err, out, n);
}

static void cap_meta(void *arg, const st_meta_event_t *evs, size_t n,
                     bool snapshot)
{
    st_relay_t *rl = arg;
    st_res_t *r = calloc(1, sizeof(*r));
    void *copy = mem_copy(evs, n * sizeof(*evs));

    if (r == NULL || (n > 0 && copy == NULL)) {
        GT_LOG(ERROR, "store", "%s: metadata change lost (out of memory)",
               rl->name);
        free(r);
        free(copy);
        return;
    }
    r->rl = rl;
    r->kind = R_META;
    r->data = copy;
    r->n = n;
    r->snapshot = snapshot;
    pthread_mutex_lock(&rl->mu);
    rl->pending++;
    pthread_mutex_unlock(&rl->mu);
    res_sched(r);
}

/* Answers a callback at once, with an error and no data. */
static void res_fail(st_res_kind_t kind, st_res_cb_t cb, void *arg,
                     gt_err_t err)
{
    static const st_stats_t no_stats;

    switch (kind) {
    case R_DONE: cb.done(arg, err); break;
    case R_TOPIC: cb.topic(arg, err, NULL, 0); break;
    case R_GROUP: cb.group(arg, err, NULL, 0); break;
    case R_APPEND: cb.append(arg, err, NULL, 0); break;
    case R_POP: cb.pop(arg, err, NULL, 0); break;
    case R_HANDLE: cb.handle(arg, err, NULL); break;
    case R_MSGS: cb.msgs(arg, err, NULL, 0, 0); break;
    case R_OFFSET: cb.offset(arg, err, 0); break;
    case R_STATS: cb.stats(arg, err, &no_stats); break;
    case R_META_LIST: cb.meta_list(arg, err, NULL, 0, false); break;
    case R_ACKS: cb.acks(arg, err, NULL, 0); break;
    case R_META: break;
    }
}

void st_res_deliver(st_res_t *r)
{
    st_relay_t *rl = r->rl;
    st_meta_cb meta_cb;
    void *meta_arg;

    switch (r->kind) {
    case R_DONE: r->cb.done(r->arg, r->err); break;
    case R_TOPIC: r->cb.topic(r->arg, r->err, r->data, r->n); break;
    case R_GROUP: r->cb.group(r->arg, r->err, r->data, r->n); break;
    case R_APPEND: r->cb.append(r->arg, r->err, r->data, r->n); break;
    case R_POP: r->cb.pop(r->arg, r->err, r->data, r->n); break;
    case R_HANDLE: r->cb.handle(r->arg, r->err, r->data); break;
    case R_MSGS: r->cb.msgs(r->arg, r->err, r->data, r->n, r->u64); break;
    case R_OFFSET: r->cb.offset(r->arg, r->err, r->u64); break;
    case R_ACKS: r->cb.acks(r->arg, r->err, r->data, r->n); break;
    case R_META_LIST:
        r->cb.meta_list(r->arg, r->err, r->data, r->n, r->snapshot);
        break;
    case R_STATS:
        if (r->data != NULL) {
            r->cb.stats(r->arg, r->err, r->data);
        } else {
            st_stats_t none;
            memset(&none, 0, sizeof(none));
            r->cb.stats(r->arg, r->err != GT_OK ? r->err : GT_ENOMEM, &none);
        }
        break;
    case R_META:
        pthread_mutex_lock(&rl->mu);
        meta_cb = rl->meta_cb;
        meta_arg = rl->meta_arg;
        pthread_mutex_unlock(&rl->mu);
        if (meta_cb != NULL)
            meta_cb(meta_arg, r->data, r->n, r->snapshot);
        break;
    }
    free(r->data);
    free(r);
    /* Last: st_close() may free the relay as soon as this drops to 0. */
    pthread_mutex_lock(&rl->mu);
    if (--rl->pending == 0)
        pthread_cond_broadcast(&rl->cv);
    pthread_mutex_unlock(&rl->mu);
}

/* Starts one operation: returns its answer record to hand the inner store,
 * or NULL when it must not be forwarded (closing: answered GT_ESHUTDOWN
 * through the scheduler; out of memory: answered at once). */
static st_res_t *relay_begin(st_relay_t *rl, st_res_kind_t kind, st_res_cb_t cb,
                             void *arg)
{
    st_res_t *r = calloc(1, sizeof(*r));
    bool fwd;

    if (r == NULL) {
        res_fail(kind, cb, arg, GT_ENOMEM);
        return NULL;
    }
    r->rl = rl;
    r->kind = kind;
    r->cb = cb;
    r->arg = arg;
    pthread_mutex_lock(&rl->mu);
    rl->pending++;
    fwd = !rl->closing;
    if (fwd)
        rl->active++;
    pthread_mutex_unlock(&rl->mu);
    if (!fwd) {
        r->err = GT_ESHUTDOWN;
        res_sched(r);
        return NULL;
    }
    return r;
}

static void relay_end(st_relay_t *rl)
{
    pthread_mutex_lock(&rl->mu);
    if (--rl->active == 0 && rl->closing)
        pthread_cond_broadcast(&rl->cv);
    pthread_mutex_unlock(&rl->mu);
}

/* ---- the operations ---- */

#define RL(s) ((st_relay_t *)(s))

static void r_close(st_store_t *s)
{
    st_relay_t *rl = RL(s);

    pthread_mutex_lock(&rl->mu);
    rl->closing = true;
    while (rl->active > 0)
        pthread_cond_wait(&rl->cv, &rl->mu);
    pthread_mutex_unlock(&rl->mu);
    st_close(rl->inner);
    pthread_mutex_lock(&rl->mu);
    while (rl->pending > 0)
        pthread_cond_wait(&rl->cv, &rl->mu);
    pthread_mutex_unlock(&rl->mu);
    if (rl->cfg.ctx_close != NULL)
        rl->cfg.ctx_close(rl->cfg.ctx);
    pthread_mutex_destroy(&rl->mu);
    pthread_cond_destroy(&rl->cv);
    free(rl);
}

static void r_topic_put(st_store_t *s, const st_topic_t *t, st_done_cb cb,
                        void *arg)
{
    st_res_t *r = relay_begin(RL(s), R_DONE, (st_res_cb_t){.done = cb}, arg);
    if (r == NULL)
        return;
    st_topic_put(RL(s)->inner, t, cap_done, r);
    relay_end(RL(s));
}

static void r_topic_delete(st_store_t *s, const char *name, st_done_cb cb,
                           void *arg)
{
    st_res_t *r = relay_begin(RL(s), R_DONE, (st_res_cb_t){.done = cb}, arg);
    if (r == NULL)
        return;
    st_topic_delete(RL(s)->inner, name, cap_done, r);
    relay_end(RL(s));
}

static void r_topic_get(st_store_t *s, const char *name, st_topic_cb cb,
                        void *arg)
{
    st_res_t *r = relay_begin(RL(s), R_TOPIC, (st_res_cb_t){.topic = cb}, arg);
    if (r == NULL)
        return;
    st_topic_get(RL(s)->inner, name, cap_topic, r);
    relay_end(RL(s));
}

static void r_group_put(st_store_t *s, const st_group_t *g, st_done_cb cb,
                        void *arg)
{
    st_res_t *r = relay_begin(RL(s), R_DONE, (st_res_cb_t){.done = cb}, arg);
    if (r == NULL)
        return;
    st_group_put(RL(s)->inner, g, cap_done, r);
    relay_end(RL(s));
}

static void r_group_delete(st_store_t *s, const char *name, st_done_cb cb,
                           void *arg)
{
    st_res_t *r = relay_begin(RL(s), R_DONE, (st_res_cb_t){.done = cb}, arg);
    if (r == NULL)
        return;
    st_group_delete(RL(s)->inner, name, cap_done, r);
    relay_end(RL(s));
}

static void r_group_get(st_store_t *s, const char *name, st_group_cb cb,
                        void *arg)
{
    st_res_t *r = relay_begin(RL(s), R_GROUP, (st_res_cb_t){.group = cb}, arg);
    if (r == NULL)
        return;
    st_group_get(RL(s)->inner, name, cap_group, r);
    relay_end(RL(s));
}

static void r_append(st_store_t *s, const char *topic, const st_message_t *msgs,
                     size_t n, st_append_cb cb, void *arg)
{
    st_res_t *r = relay_begin(RL(s), R_APPEND, (st_res_cb_t){.append = cb}, arg);
    if (r == NULL)
        return;
    st_append(RL(s)->inner, topic, msgs, n, cap_append, r);
    relay_end(RL(s));
}

static void r_append_multi(st_store_t *s, const st_message_t *msg,
                           const st_dest_t *dests, size_t n, st_append_cb cb,
                           void *arg)
{
    st_res_t *r = relay_begin(RL(s), R_APPEND, (st_res_cb_t){.append = cb}, arg);
    if (r == NULL)
        return;
    st_append_multi(RL(s)->inner, msg, dests, n, cap_append, r);
    relay_end(RL(s));
}

static void r_pop(st_store_t *s, const st_pop_req_t *req, st_pop_cb cb,
                  void *arg)
{
    st_res_t *r = relay_begin(RL(s), R_POP, (st_res_cb_t){.pop = cb}, arg);
    if (r == NULL)
        return;
    st_pop(RL(s)->inner, req, cap_pop, r);
    relay_end(RL(s));
}

static void r_ack(st_store_t *s, const char *group, const char *topic,
                  const char *handle, st_done_cb cb, void *arg)
{
    st_res_t *r = relay_begin(RL(s), R_DONE, (st_res_cb_t){.done = cb}, arg);
    if (r == NULL)
        return;
    st_ack(RL(s)->inner, group, topic, handle, cap_done, r);
    relay_end(RL(s));
}

static void r_ack_batch(st_store_t *s, const char *group, const char *topic,
                        const char *const *handles, size_t n, st_acks_cb cb,
                        void *arg)
{
    st_res_t *r = relay_begin(RL(s), R_ACKS, (st_res_cb_t){.acks = cb}, arg);
    if (r == NULL)
        return;
    st_ack_batch(RL(s)->inner, group, topic, handles, n, cap_acks, r);
    relay_end(RL(s));
}

static void r_change_invisible(st_store_t *s, const char *group,
                               const char *topic, const char *handle,
                               int64_t ms, st_handle_cb cb, void *arg)
{
    st_res_t *r = relay_begin(RL(s), R_HANDLE, (st_res_cb_t){.handle = cb}, arg);
    if (r == NULL)
        return;
    st_change_invisible(RL(s)->inner, group, topic, handle, ms, cap_handle, r);
    relay_end(RL(s));
}

static void r_release(st_store_t *s, const char *group, const char *topic,
                      const char *handle, st_done_cb cb, void *arg)
{
    st_res_t *r = relay_begin(RL(s), R_DONE, (st_res_cb_t){.done = cb}, arg);
    if (r == NULL)
        return;
    st_release(RL(s)->inner, group, topic, handle, cap_done, r);
    relay_end(RL(s));
}

static void r_pop_cancel(st_store_t *s, uint64_t cancel_key)
{
    st_relay_t *rl = RL(s);
    bool fwd;

    /* No answer of its own: the cancelled pop answers through its record. */
    pthread_mutex_lock(&rl->mu);
    fwd = !rl->closing;
    if (fwd)
        rl->active++;
    pthread_mutex_unlock(&rl->mu);
    if (!fwd)
        return; /* closing answers every parked pop anyway */
    st_pop_cancel(rl->inner, cancel_key);
    relay_end(rl);
}

static void r_pull(st_store_t *s, const st_pull_req_t *req, st_msgs_cb cb,
                   void *arg)
{
    st_res_t *r = relay_begin(RL(s), R_MSGS, (st_res_cb_t){.msgs = cb}, arg);
    if (r == NULL)
        return;
    st_pull(RL(s)->inner, req, cap_msgs, r);
    relay_end(RL(s));
}

static void r_offset_get(st_store_t *s, const char *group, const char *topic,
                         uint32_t queue, st_offset_cb cb, void *arg)
{
    st_res_t *r = relay_begin(RL(s), R_OFFSET, (st_res_cb_t){.offset = cb}, arg);
    if (r == NULL)
        return;
    st_offset_get(RL(s)->inner, group, topic, queue, cap_offset, r);
    relay_end(RL(s));
}

static void r_offset_update(st_store_t *s, const char *group, const char *topic,
                            uint32_t queue, uint64_t offset, st_done_cb cb,
                            void *arg)
{
    st_res_t *r = relay_begin(RL(s), R_DONE, (st_res_cb_t){.done = cb}, arg);
    if (r == NULL)
        return;
    st_offset_update(RL(s)->inner, group, topic, queue, offset, cap_done, r);
    relay_end(RL(s));
}

static void r_offset_query(st_store_t *s, const char *topic, uint32_t queue,
                           st_offset_kind_t kind, int64_t ts_ms, st_offset_cb cb,
                           void *arg)
{
    st_res_t *r = relay_begin(RL(s), R_OFFSET, (st_res_cb_t){.offset = cb}, arg);
    if (r == NULL)
        return;
    st_offset_query(RL(s)->inner, topic, queue, kind, ts_ms, cap_offset, r);
    relay_end(RL(s));
}

static void r_lookup_id(st_store_t *s, const char *topic, const char *msg_id,
                        st_msgs_cb cb, void *arg)
{
    st_res_t *r = relay_begin(RL(s), R_MSGS, (st_res_cb_t){.msgs = cb}, arg);
    if (r == NULL)
        return;
    st_lookup_id(RL(s)->inner, topic, msg_id, cap_msgs, r);
    relay_end(RL(s));
}

static void r_lookup_key(st_store_t *s, const char *topic, const char *key,
                         uint32_t max, st_msgs_cb cb, void *arg)
{
    st_res_t *r = relay_begin(RL(s), R_MSGS, (st_res_cb_t){.msgs = cb}, arg);
    if (r == NULL)
        return;
    st_lookup_key(RL(s)->inner, topic, key, max, cap_msgs, r);
    relay_end(RL(s));
}

static void r_stats(st_store_t *s, const st_stats_req_t *req, st_stats_cb cb,
                    void *arg)
{
    st_res_t *r = relay_begin(RL(s), R_STATS, (st_res_cb_t){.stats = cb}, arg);
    if (r == NULL)
        return;
    st_stats_req(RL(s)->inner, req, cap_stats, r);
    relay_end(RL(s));
}

static void r_tx_end(st_store_t *s, const char *topic, const char *msg_id,
                     bool commit, st_done_cb cb, void *arg)
{
    st_res_t *r = relay_begin(RL(s), R_DONE, (st_res_cb_t){.done = cb}, arg);
    if (r == NULL)
        return;
    st_tx_end(RL(s)->inner, topic, msg_id, commit, cap_done, r);
    relay_end(RL(s));
}

static void r_tx_pending(st_store_t *s, int64_t unresolved_for_ms, uint32_t max,
                         st_msgs_cb cb, void *arg)
{
    st_res_t *r = relay_begin(RL(s), R_MSGS, (st_res_cb_t){.msgs = cb}, arg);
    if (r == NULL)
        return;
    st_tx_pending(RL(s)->inner, unresolved_for_ms, max, cap_msgs, r);
    relay_end(RL(s));
}

static void r_tx_checked(st_store_t *s, const char *topic, const char *msg_id,
                         uint32_t seen_checks, uint32_t max_checks, st_done_cb cb,
                         void *arg)
{
    st_res_t *r = relay_begin(RL(s), R_DONE, (st_res_cb_t){.done = cb}, arg);
    if (r == NULL)
        return;
    st_tx_checked(RL(s)->inner, topic, msg_id, seen_checks, max_checks, cap_done, r);
    relay_end(RL(s));
}

static void r_recall(st_store_t *s, const char *topic, const char *msg_id,
                     st_done_cb cb, void *arg)
{
    st_res_t *r = relay_begin(RL(s), R_DONE, (st_res_cb_t){.done = cb}, arg);
    if (r == NULL)
        return;
    st_recall(RL(s)->inner, topic, msg_id, cap_done, r);
    relay_end(RL(s));
}

static void r_meta_watch(st_store_t *s, st_meta_cb cb, void *arg)
{
    st_relay_t *rl = RL(s);

    pthread_mutex_lock(&rl->mu);
    rl->meta_cb = cb;
    rl->meta_arg = arg;
    pthread_mutex_unlock(&rl->mu);
    st_meta_watch(rl->inner, cb != NULL ? cap_meta : NULL, rl);
}

static void r_purge(st_store_t *s, const char *group, const char *topic,
                    st_count_cb cb, void *arg)
{
    st_res_t *r = relay_begin(RL(s), R_OFFSET, (st_res_cb_t){.offset = cb}, arg);
    if (r == NULL)
        return;
    st_purge(RL(s)->inner, group, topic, cap_offset, r);
    relay_end(RL(s));
}

static void r_requeue(st_store_t *s, const char *group, const char *topic,
                      st_count_cb cb, void *arg)
{
    st_res_t *r = relay_begin(RL(s), R_OFFSET, (st_res_cb_t){.offset = cb}, arg);
    if (r == NULL)
        return;
    st_requeue(RL(s)->inner, group, topic, cap_offset, r);
    relay_end(RL(s));
}

static void r_meta_put(st_store_t *s, const char *ns, const void *key,
                       uint32_t key_len, const void *value, uint32_t value_len,
                       st_done_cb cb, void *arg)
{
    st_res_t *r = relay_begin(RL(s), R_DONE, (st_res_cb_t){.done = cb}, arg);
    if (r == NULL)
        return;
    st_meta_put(RL(s)->inner, ns, key, key_len, value, value_len, cap_done, r);
    relay_end(RL(s));
}

static void r_meta_del(st_store_t *s, const char *ns, const void *key,
                       uint32_t key_len, st_done_cb cb, void *arg)
{
    st_res_t *r = relay_begin(RL(s), R_DONE, (st_res_cb_t){.done = cb}, arg);
    if (r == NULL)
        return;
    st_meta_del(RL(s)->inner, ns, key, key_len, cap_done, r);
    relay_end(RL(s));
}

static void r_meta_list(st_store_t *s, const st_meta_list_req_t *req,
                        st_meta_list_cb cb, void *arg)
{
    st_res_t *r = relay_begin(RL(s), R_META_LIST,
                              (st_res_cb_t){.meta_list = cb}, arg);
    if (r == NULL)
        return;
    st_meta_list(RL(s)->inner, req, cap_meta_list, r);
    relay_end(RL(s));
}

static const st_ops_t relay_ops = {
    .name = "relay",
    .close = r_close,
    .topic_put = r_topic_put,
    .topic_delete = r_topic_delete,
    .topic_get = r_topic_get,
    .group_put = r_group_put,
    .group_delete = r_group_delete,
    .group_get = r_group_get,
    .append = r_append,
    .append_multi = r_append_multi,
    .pop = r_pop,
    .pop_cancel = r_pop_cancel,
    .ack = r_ack,
    .ack_batch = r_ack_batch,
    .change_invisible = r_change_invisible,
    .release = r_release,
    .pull = r_pull,
    .offset_get = r_offset_get,
    .offset_update = r_offset_update,
    .offset_query = r_offset_query,
    .lookup_id = r_lookup_id,
    .lookup_key = r_lookup_key,
    .stats = r_stats,
    .tx_end = r_tx_end,
    .tx_pending = r_tx_pending,
    .tx_checked = r_tx_checked,
    .recall = r_recall,
    .meta_watch = r_meta_watch,
    .purge = r_purge,
    .requeue = r_requeue,
    .meta_put = r_meta_put,
    .meta_del = r_meta_del,
    .meta_list = r_meta_list,
};

gt_err_t st_relay_open(st_store_t *inner, const st_relay_cfg_t *cfg,
                       st_store_t **out)
{
    st_relay_t *rl;

    if (inner == NULL || cfg == NULL || cfg->sched == NULL)
        return GT_EINVAL;
    if ((rl = calloc(1, sizeof(*rl))) == NULL)
        return GT_ENOMEM;
    rl->ops = relay_ops;
    snprintf(rl->name, sizeof(rl->name), "%s", cfg->name ? cfg->name : "relay");
    rl->ops.name = rl->name;
    rl->base.ops = &rl->ops;
    rl->inner = inner;
    rl->cfg = *cfg;
    pthread_mutex_init(&rl->mu, NULL);
    pthread_cond_init(&rl->cv, NULL);
    *out = &rl->base;
    return GT_OK;
}
