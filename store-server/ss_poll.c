/* Pop and Pull: long polls parked on the store node, and PopCancel.
 *
 * A poll gets an engine cancel key of the server's own (from 1, never
 * reused), so clients need not share a key space; a poll that carries a
 * (client_id, cancel_key) pair is entered in `parked` under it while it
 * waits, which is how PopCancel finds it.  A PopCancel that finds nothing
 * is remembered in `cancelled` for SS_CANCEL_KEEP_MS (at most
 * SS_CANCEL_MAX), so a poll that arrives after its cancel (the two calls
 * raced) answers empty at once, as st_pop_cancel() does for the engine.
 *
 * The call and its poll: the poll holds a call reference while attached
 * (px_call_user is the poll); the store's answer detaches it and answers,
 * a cancelled call (client gone, deadline, server stopping) detaches it
 * and cancels the store poll, so the store hands it no message.  Messages
 * the store handed out in the race go back with st_release(). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gt_log.h"
#include "ss_int.h"

#define SS_CANCEL_KEEP_MS 10000
#define SS_CANCEL_MAX 65536
#define SS_CLIENT_ID_MAX 128

typedef struct ss_poll {
    ss_srv_t *srv;
    px_call_t *call;       /* poll_mu; NULL once detached */
    bool pull;
    uint64_t ikey;         /* the engine's cancel key */
    size_t mklen;          /* 0: not in `parked` */
    uint8_t mkey[SS_CLIENT_ID_MAX + 8];
    char group[ST_NAME_MAX + 1];
    char topic[ST_NAME_MAX + 1];
} ss_poll_t;

/* (client_id, cancel_key) as map key bytes; 0 for a bad client id. */
static size_t ss_poll_mkey(const char *client_id, uint64_t key, uint8_t *out)
{
    size_t n = strlen(client_id);

    if (n > SS_CLIENT_ID_MAX)
        return 0;
    memcpy(out, client_id, n);
    memcpy(out + n, &key, 8);
    return n + 8;
}

void ss_poll_init(ss_srv_t *s)
{
    pthread_mutex_init(&s->poll_mu, NULL);
    pthread_rwlock_init(&s->late_lock, NULL);
    pthread_cond_init(&s->test_cv, NULL);
    ss_map_init(&s->parked);
    ss_map_init(&s->cancelled);
}

void ss_poll_fini(ss_srv_t *s)
{
    ss_map_free(&s->parked);
    ss_map_free(&s->cancelled);
    pthread_mutex_destroy(&s->poll_mu);
    pthread_rwlock_destroy(&s->late_lock);
    pthread_cond_destroy(&s->test_cv);
}

/* Takes a remembered cancel for this key (hold poll_mu). */
static bool ss_poll_take_cancel(ss_srv_t *s, const uint8_t *k, size_t klen)
{
    void *v = ss_map_del(&s->cancelled, k, klen);
    return v != NULL && (int64_t)(uintptr_t)v > ss_now_ms();
}

/* Drops expired remembered cancels (hold poll_mu): when the map is full,
 * so its cost is spread over SS_CANCEL_MAX inserts. */
static void ss_poll_prune(ss_srv_t *s)
{
    int64_t now = ss_now_ms();
    ss_map_t *m = &s->cancelled;

    for (size_t i = 0; i < m->nb; i++) {
        ss_map_ent_t **pp = &m->b[i];
        while (*pp != NULL) {
            ss_map_ent_t *e = *pp;
            if ((int64_t)(uintptr_t)e->val <= now) {
                *pp = e->next;
                free(e);
                m->count--;
            } else {
                pp = &e->next;
            }
        }
    }
}

/* Detaches the poll from its call (hold poll_mu); returns the call (its
 * reference now the caller's) or NULL if already detached. */
static px_call_t *ss_poll_detach(ss_poll_t *p)
{
    px_call_t *call = p->call;

    if (call != NULL) {
        p->call = NULL;
        px_call_set_user(call, NULL);
    }
    if (p->mklen > 0) {
        ss_map_del(&p->srv->parked, p->mkey, p->mklen);
        p->mklen = 0;
    }
    return call;
}

static void ss_poll_end(ss_poll_t *p, px_call_t **call)
{
    pthread_mutex_lock(&p->srv->poll_mu);
    *call = ss_poll_detach(p);
    pthread_mutex_unlock(&p->srv->poll_mu);
    atomic_fetch_sub(&p->srv->parked_now, 1);
}

static void ss_release_done(void *arg, gt_err_t err)
{
    (void)arg;
    (void)err;
}

/* Gives popped messages back unspent (st_release), unless the store is
 * being closed. */
static void ss_give_back(ss_srv_t *s, const char *group, const char *topic,
                         const st_popped_t *msgs, size_t n)
{
    pthread_rwlock_rdlock(&s->late_lock);
    for (size_t i = 0; s->store != NULL && i < n; i++)
        st_release(s->store, group, topic, msgs[i].handle, ss_release_done,
                   NULL);
    pthread_rwlock_unlock(&s->late_lock);
}

/* The handles of a pop answer, until the call is over: if the answer was
 * not delivered (the client reset the call or went away while it was on
 * its way), they are given back, so the messages are not hidden for their
 * invisible time with an attempt spent. */
typedef struct ss_pop_watch {
    ss_srv_t *srv;
    char group[ST_NAME_MAX + 1];
    char topic[ST_NAME_MAX + 1];
    size_t n;
    char handles[][ST_HANDLE_MAX];
} ss_pop_watch_t;

static void ss_pop_over(void *arg, bool delivered)
{
    ss_pop_watch_t *w = arg;
    ss_srv_t *s = w->srv;

    if (!delivered) {
        pthread_rwlock_rdlock(&s->late_lock);
        for (size_t i = 0; s->store != NULL && i < w->n; i++)
            st_release(s->store, w->group, w->topic, w->handles[i],
                       ss_release_done, NULL);
        pthread_rwlock_unlock(&s->late_lock);
        GT_LOG(DEBUG, "poll", "pop answer not delivered: %zu messages given back",
               w->n);
    }
    free(w);
}

static void ss_pop_watch(ss_poll_t *p, px_call_t *call, const st_popped_t *msgs,
                         size_t n)
{
    ss_pop_watch_t *w = malloc(sizeof(*w) + n * ST_HANDLE_MAX);

    if (w == NULL)
        return; /* they come back after their invisible time */
    w->srv = p->srv;
    memcpy(w->group, p->group, sizeof(w->group));
    memcpy(w->topic, p->topic, sizeof(w->topic));
    w->n = n;
    for (size_t i = 0; i < n; i++)
        memcpy(w->handles[i], msgs[i].handle, ST_HANDLE_MAX);
    px_call_on_over(call, ss_pop_over, w);
}

static void ss_pop_done(void *arg, gt_err_t err, const st_popped_t *msgs,
                        size_t n)
{
    ss_poll_t *p = arg;
    px_call_t *call;
    Gantry__Store__V1__PopResponse resp = GANTRY__STORE__V1__POP_RESPONSE__INIT;
    Gantry__Store__V1__Popped pops[ST_POP_MAX], *pp[ST_POP_MAX];
    ss_msgs_out_t outs = {NULL, NULL};

    ss_poll_end(p, &call);
    if (n > ST_POP_MAX)
        n = ST_POP_MAX;
    if (call == NULL) {
        /* Nobody to hand them to: give them back unspent. */
        if (err == GT_OK)
            ss_give_back(p->srv, p->group, p->topic, msgs, n);
        free(p);
        return;
    }
    if (err == GT_OK && n > 0) {
        if (ss_msgs_to_pb(&msgs[0].msg, sizeof(*msgs), n, &outs) != GT_OK) {
            ss_give_back(p->srv, p->group, p->topic, msgs, n);
            err = GT_ENOMEM;
            n = 0;
        }
        for (size_t i = 0; i < n; i++) {
            gantry__store__v1__popped__init(&pops[i]);
            pops[i].message = outs.pm[i];
            pops[i].handle = (char *)msgs[i].handle;
            pops[i].attempt = msgs[i].attempt;
            pops[i].invisible_until_ms = msgs[i].invisible_until_ms;
            pp[i] = &pops[i];
        }
        resp.n_messages = n;
        resp.messages = pp;
    }
    resp.err = (Gantry__Store__V1__ErrorCode)err;
    ss_reply_pb(call, &resp.base);
    if (n > 0)
        ss_pop_watch(p, call, msgs, n);
    ss_msgs_out_free(&outs);
    px_call_unref(call);
    free(p);
}

static void ss_pull_done(void *arg, gt_err_t err, const st_message_t *msgs,
                         size_t n, uint64_t next)
{
    ss_poll_t *p = arg;
    px_call_t *call;

    ss_poll_end(p, &call);
    if (call != NULL) {
        ss_reply_msgs(call, err, msgs, n, next);
        px_call_unref(call);
    }
    free(p);
}

static bool ss_test_seen(const ss_srv_t *s, const px_call_t *call)
{
    for (size_t i = 0; i < sizeof(s->test_seen) / sizeof(s->test_seen[0]); i++)
        if (s->test_seen[i] == call)
            return true;
    return false;
}

/* Test hook: waits (10 s at most) until the call's cancel or shutdown
 * interrupt has come and found nothing to end, so that the re-check after
 * attaching (ss_poll_recheck) is what ends the poll. */
static void ss_test_late_attach(ss_srv_t *s, px_call_t *call)
{
    struct timespec until;
    bool seen;

    GT_LOG(WARN, "poll", "test hook: a poll waits for its call's interrupt");
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&s->poll_mu);
    while (!(seen = ss_test_seen(s, call)) &&
           pthread_cond_timedwait(&s->test_cv, &s->poll_mu, &until) == 0)
        ;
    seen = seen || ss_test_seen(s, call);
    pthread_mutex_unlock(&s->poll_mu);
    GT_LOG(WARN, "poll", "test hook: the poll attaches %s its call's interrupt",
           seen ? "after" : "(10 s passed) without");
}

/* Registers and attaches a poll; false when it was answered here (a bad
 * client id, a key in use, a cancel that came first). */
static bool ss_poll_attach(px_call_t *call, ss_poll_t *p,
                           const char *client_id, uint64_t cancel_key)
{
    ss_srv_t *s = ss_srv(call);
    gt_err_t err = GT_OK;
    bool cancelled = false;

    if (s->test_late_attach)
        ss_test_late_attach(s, call);
    p->srv = s;
    p->call = call;
    p->ikey = atomic_fetch_add(&s->next_key, 1) + 1;
    pthread_mutex_lock(&s->poll_mu);
    if (cancel_key != 0) {
        p->mklen = ss_poll_mkey(client_id, cancel_key, p->mkey);
        if (p->mklen == 0)
            err = GT_EINVAL;
        else if (ss_poll_take_cancel(s, p->mkey, p->mklen))
            cancelled = true;
        else if ((err = ss_map_put(&s->parked, p->mkey, p->mklen, p)) ==
                 GT_EEXIST)
            err = GT_EINVAL; /* two parked polls under one key */
        if (err != GT_OK || cancelled)
            p->mklen = 0;
    }
    if (err == GT_OK && !cancelled) {
        px_call_ref(call);
        px_call_set_user(call, p);
    }
    pthread_mutex_unlock(&s->poll_mu);
    if (err != GT_OK || cancelled) {
        ss_reply_err(call, err); /* cancelled: OK and no message */
        free(p);
        return false;
    }
    atomic_fetch_add(&s->parked_now, 1);
    return true;
}

/* After the store call: an interrupt that came before the attachment
 * found nothing to end; end it now. */
static void ss_poll_recheck(px_call_t *call)
{
    if (px_call_is_cancelled(call))
        ss_poll_interrupt(call, PX_INTERRUPT_CANCELLED);
    else if (px_call_server_stopping(call))
        ss_poll_interrupt(call, PX_INTERRUPT_SHUTDOWN);
}

void ss_pop(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__PopRequest *req = (void *)msg;
    ss_poll_t *p;
    st_pop_req_t pr;

    if (strlen(req->group) > ST_NAME_MAX || strlen(req->topic) > ST_NAME_MAX ||
        (unsigned)req->filter_kind > ST_FILTER_SQL92) {
        ss_reply_err(call, GT_EINVAL);
        return;
    }
    if ((p = calloc(1, sizeof(*p))) == NULL) {
        ss_reply_err(call, GT_ENOMEM);
        return;
    }
    snprintf(p->group, sizeof(p->group), "%s", req->group);
    snprintf(p->topic, sizeof(p->topic), "%s", req->topic);
    if (!ss_poll_attach(call, p, req->client_id, req->cancel_key))
        return;
    memset(&pr, 0, sizeof(pr));
    pr.group = req->group;
    pr.topic = req->topic;
    pr.queue_id = req->queue_id;
    pr.high_first = req->high_first;
    pr.filter_kind = (st_filter_kind_t)req->filter_kind;
    pr.filter_expr = ss_opt(req->filter_expr);
    pr.max = req->max;
    pr.max_bytes = req->max_bytes;
    pr.invisible_ms = req->invisible_ms;
    pr.poll_timeout_ms = req->poll_timeout_ms;
    pr.cancel_key = p->ikey;
    pr.new_from_first = req->new_from_first;
    st_pop(ss_srv(call)->store, &pr, ss_pop_done, p);
    ss_poll_recheck(call);
}

void ss_pull(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__PullRequest *req = (void *)msg;
    ss_poll_t *p;
    st_pull_req_t pr;

    if ((unsigned)req->filter_kind > ST_FILTER_SQL92) {
        ss_reply_err(call, GT_EINVAL);
        return;
    }
    if ((p = calloc(1, sizeof(*p))) == NULL) {
        ss_reply_err(call, GT_ENOMEM);
        return;
    }
    p->pull = true;
    if (!ss_poll_attach(call, p, req->client_id, req->cancel_key))
        return;
    memset(&pr, 0, sizeof(pr));
    pr.topic = req->topic;
    pr.queue = req->queue;
    pr.offset = req->offset;
    pr.max = req->max;
    pr.filter_kind = (st_filter_kind_t)req->filter_kind;
    pr.filter_expr = ss_opt(req->filter_expr);
    pr.poll_timeout_ms = req->poll_timeout_ms;
    pr.cancel_key = p->ikey;
    st_pull(ss_srv(call)->store, &pr, ss_pull_done, p);
    ss_poll_recheck(call);
}

void ss_poll_interrupt(px_call_t *call, px_interrupt_t why)
{
    ss_srv_t *s = ss_srv(call);
    ss_poll_t *p;
    px_call_t *held = NULL;
    uint64_t key = 0;

    if (why == PX_INTERRUPT_CLOSED)
        return;
    pthread_mutex_lock(&s->poll_mu);
    p = px_call_user(call);
    if (p != NULL && p->call == call) {
        key = p->ikey;
        held = ss_poll_detach(p); /* p is freed by its store answer */
    }
    if (s->test_late_attach) {
        s->test_seen[s->test_seen_next++ % 16] = call;
        pthread_cond_broadcast(&s->test_cv);
    }
    pthread_mutex_unlock(&s->poll_mu);
    if (held == NULL)
        return;
    /* The store must not hand this poll any message from now on (a store
     * closed by replication meanwhile answered it already). */
    pthread_rwlock_rdlock(&s->late_lock);
    if (s->store != NULL)
        st_pop_cancel(s->store, key);
    pthread_rwlock_unlock(&s->late_lock);
    if (why == PX_INTERRUPT_SHUTDOWN)
        ss_reply_err(call, GT_ESHUTDOWN);
    px_call_unref(held);
}

void ss_pop_cancel(px_call_t *call, ProtobufCMessage *msg)
{
    Gantry__Store__V1__PopCancelRequest *req = (void *)msg;
    ss_srv_t *s = ss_srv(call);
    uint8_t k[SS_CLIENT_ID_MAX + 8];
    size_t klen;
    ss_poll_t *p;
    uint64_t key = 0;
    gt_err_t err = GT_OK;

    if (req->cancel_key == 0 ||
        (klen = ss_poll_mkey(req->client_id, req->cancel_key, k)) == 0) {
        ss_reply_err(call, GT_EINVAL);
        return;
    }
    pthread_mutex_lock(&s->poll_mu);
    if ((p = ss_map_get(&s->parked, k, klen)) != NULL) {
        key = p->ikey;
    } else {
        int64_t until = ss_now_ms() + SS_CANCEL_KEEP_MS;
        if (s->cancelled.count >= SS_CANCEL_MAX)
            ss_poll_prune(s);
        if (s->cancelled.count >= SS_CANCEL_MAX)
            err = GT_EBUSY;
        else if (ss_map_put(&s->cancelled, k, klen, (void *)(uintptr_t)until) ==
                 GT_ENOMEM)
            err = GT_ENOMEM;
    }
    pthread_mutex_unlock(&s->poll_mu);
    if (key != 0)
        st_pop_cancel(s->store, key); /* it answers empty, on the executor */
    ss_reply_err(call, err);
}
