/* Appends: submission, the writer, syncer and flusher threads.
 *
 * A caller's st_append() chooses queues (under lock), encodes the records
 * into one owned buffer on the caller's thread and queues a write op.  The
 * writer thread takes every queued op at once: it assigns queue offsets
 * (lock, briefly), seals positions and CRCs and writes them with pwritev,
 * holding no lock.  In sync mode it hands the written run to the syncer
 * thread and goes on writing; the syncer's one fdatasync covers every run
 * written before it started (group commit, pipelined with the writes).  Only
 * after the sync are records published to consume queues and the index (so
 * a pop never sees a message that a crash could take back) and callbacks
 * run.  A failed write truncates the file back and rewinds that run's
 * offsets; a failed sync fails every unsynced run, and the writer truncates
 * back to the first of them before writing again.  Failed appends get a
 * retriable error; nothing unsynced is acknowledged.
 *
 * In sync mode the writer keeps at most ST_WRITE_AHEAD bytes written
 * ahead of the syncs (a larger single append is written alone), and takes
 * small appends (up to ST_SMALL_APPEND bytes) ahead of larger ones still
 * queued to other topics: a small append then waits for the sync in
 * progress and its own, not for every large batch queued before it.
 * Appends to one topic keep their order.  A batch of more than
 * ST_PART_BYTES of bodies is queued as parts of at most that size
 * (answered together when the last is done), so that a small append waits
 * for one part's write and sync, not a whole 32 MiB batch's.  Async mode
 * takes small appends first too.  The zero fill ahead of the records
 * (sync mode) is written by the zero-fill thread (st_zfill.c): the writer
 * fills inline only when it catches up with it.
 *
 * In async mode the callbacks run after the write; the flusher thread
 * fdatasyncs every flush_interval_ms and records the checkpoint.  The
 * flusher also syncs the state log in both modes (at once when kicked: a
 * sync-mode metadata put waits for it, st_kv.c). */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gt_log.h"
#include "st_int.h"
#include "st_relay.h"

#define WOP_MAX_MSGS 1024

/* Sync mode: bytes written but not yet synced the writer lets pile up
 * before it waits for the syncer (with sync flush at ~140 MB/s, 64 MiB of
 * queued batches ahead held a small send ~450 ms; a small append waits for
 * the sync in progress and its own, which together cover about this much:
 * 8 MiB syncs took 50-130 ms under bench-overload C on a loaded 2-core
 * machine), and the size of an append that is taken ahead of larger
 * ones. */
#define ST_WRITE_AHEAD (4u << 20)
#define ST_SMALL_APPEND (64u << 10)

/* A batch whose bodies come to more than this is queued as parts of at
 * most this much (at least one message each), answered together when the
 * last part is done (st_parts_t).  A small append waits for the write in
 * progress and the sync in progress: with 32 MiB batches written whole,
 * that was one whole batch's copy into the page cache (twice: zero fill,
 * then data), 80-300 ms on a loaded machine (bench-overload C).  Half the
 * write-ahead, so that one part is synced while the next is written. */
#define ST_PART_BYTES (2u << 20)

/* One st_append() call: built by the caller's thread, then owned by the
 * write queue (wq_lock), the writer, and in sync mode the syncer, which
 * completes and frees it.  No lock needed once dequeued. */
struct st_wop {
    st_wop_t *next;
    st_topic_rt_t *topic;
    size_t n;
    uint8_t *buf;          /* records back to back */
    size_t len;
    uint32_t *roff;        /* record i at buf + roff[i] */
    uint32_t *tag_hash;
    uint32_t *group_hash;
    int64_t *due;          /* delivery time of record i */
    uint32_t *ix_start;    /* index hashes of record i: ix[ix_start[i]..[i+1]) */
    uint64_t *ix;
    size_t nix;            /* room in ix */
    st_append_item_t *items;
    st_append_cb cb;
    void *arg;
    /* st_append_multi: one record (n == 1) in nd consume queues, item d
     * and topic dt[d] for destination d (dt[0] == topic); nd 0 otherwise */
    size_t nd;
    st_topic_rt_t **dt;
};

static void wop_free(st_wop_t *w)
{
    if (!w)
        return;
    free(w->buf);
    free(w->dt);
    free(w); /* the arrays live in the same block */
}

static size_t align8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

/* One zeroed block for the op and its per-record arrays (was eight
 * allocations per append): n records with nix index hashes in all. */
static st_wop_t *wop_new(size_t n, size_t nix)
{
    size_t o_items = align8(sizeof(st_wop_t));
    size_t o_due = align8(o_items + n * sizeof(st_append_item_t));
    size_t o_ix = o_due + n * sizeof(int64_t);
    size_t o_roff = o_ix + nix * sizeof(uint64_t);
    size_t o_tag = o_roff + n * sizeof(uint32_t);
    size_t o_group = o_tag + n * sizeof(uint32_t);
    size_t o_ixs = o_group + n * sizeof(uint32_t);
    uint8_t *b = calloc(1, o_ixs + (n + 1) * sizeof(uint32_t));
    if (!b)
        return NULL;
    st_wop_t *w = (st_wop_t *)b;
    w->n = n;
    w->items = (st_append_item_t *)(b + o_items);
    w->due = (int64_t *)(b + o_due);
    w->ix = (uint64_t *)(b + o_ix);
    w->roff = (uint32_t *)(b + o_roff);
    w->tag_hash = (uint32_t *)(b + o_tag);
    w->group_hash = (uint32_t *)(b + o_group);
    w->ix_start = (uint32_t *)(b + o_ixs);
    return w;
}

/* Chooses queues for the batch; lock held. */
static gt_err_t choose_queues(st_topic_rt_t *t, const st_message_t *msgs,
                              size_t n, st_append_item_t *items)
{
    uint32_t qc = t->meta.queue_count;
    uint32_t rr = t->rr++ % qc;
    for (size_t i = 0; i < n; i++) {
        const st_message_t *m = &msgs[i];
        if (m->queue_id >= 0) {
            if ((uint32_t)m->queue_id >= qc)
                return GT_EINVAL;
            items[i].queue_id = (uint32_t)m->queue_id;
        } else if (m->msg_group && m->msg_group[0]) {
            items[i].queue_id = gt_hash32(m->msg_group) % qc;
        } else {
            items[i].queue_id = rr;
        }
    }
    return GT_OK;
}

/* "GT" + 12 hex digits of the start time (ms) + 8 of the pid + 12 of a
 * per-store counter: unique per store and process start. */
static void gen_id(st_local_t *st, char *id)
{
    static const char hex[] = "0123456789ABCDEF";
    uint64_t parts[3] = {(uint64_t)st->start_ms, (uint64_t)st->pid,
                         atomic_fetch_add(&st->id_counter, 1)};
    const int digits[3] = {12, 8, 12};
    char *p = id;
    *p++ = 'G';
    *p++ = 'T';
    for (int k = 0; k < 3; k++)
        for (int d = digits[k] - 1; d >= 0; d--)
            *p++ = hex[(parts[k] >> (4 * d)) & 15];
    *p = 0;
}

/* Encodes the batch into one buffer.  The messages are read in place (an
 * st_message_t is 2.6 KB: no copies of them); the records are sealed by the
 * writer, once their positions are known. */
static gt_err_t wop_encode(st_local_t *st, st_wop_t *w, const char *topic,
                           const st_message_t *msgs, bool internal)
{
    size_t nix = 0, total = 0;
    for (size_t i = 0; i < w->n; i++) {
        const st_message_t *m = &msgs[i];
        char *id = w->items[i].msg_id;
        size_t idlen;
        if (!m->msg_id || !m->msg_id[0])
            gen_id(st, id);
        else if ((idlen = strlen(m->msg_id)) < ST_MSG_ID_MAX)
            memcpy(id, m->msg_id, idlen + 1);
        else
            return GT_EINVAL;
        size_t sz = st_record_size_as(topic, m, id);
        if (sz == 0 || sz > st->cfg.max_message_bytes)
            return GT_EINVAL;
        total += sz;
        if (total > st->seg_size - ST_SEG_HDR)
            return GT_EINVAL;
        nix += 1 + m->nkeys;
    }
    if (nix > w->nix) /* counted at submission; cannot grow */
        return GT_EINVAL;
    if (!(w->buf = malloc(total)))
        return GT_ENOMEM;
    size_t off = 0, k = 0;
    for (size_t i = 0; i < w->n; i++) {
        const st_message_t *m = &msgs[i];
        const char *id = w->items[i].msg_id;
        /* flags are the store's; DLQ copies set them */
        uint16_t flags = internal ? (uint16_t)m->flags : 0;
        size_t used = 0;
        gt_err_t rc = st_record_encode_as(w->buf + off, total - off, topic, m,
                                          id, flags, &used);
        if (rc != GT_OK)
            return rc;
        w->roff[i] = (uint32_t)off;
        w->tag_hash[i] = gt_hash32(m->tag);
        w->group_hash[i] = st_group_hash(m->msg_group);
        w->due[i] = m->delivery_ts_ms;
        w->ix_start[i] = (uint32_t)k;
        w->ix[k++] = st_hash64('I', id);
        for (uint32_t j = 0; j < m->nkeys; j++)
            w->ix[k++] = st_hash64('K', m->keys[j]);
        off += used;
    }
    w->ix_start[w->n] = (uint32_t)k;
    w->len = off;
    return GT_OK;
}

static gt_err_t wq_push(st_local_t *st, st_wop_t *w);

/* A batch queued as parts: the caller's callback runs once, when the last
 * part is done, with every item (parts complete in write order, on the
 * syncer or the writer thread).  If a part fails, the batch fails; parts
 * already written stay in the log, unanswered (as a batch whose sync
 * failed): its messages may come back as duplicates after a retry. */
typedef struct st_parts st_parts_t;
typedef struct st_part_ref {
    st_parts_t *all;
    size_t base; /* index of the part's first message */
} st_part_ref_t;

struct st_parts {
    pthread_mutex_t mu;
    size_t left;
    gt_err_t rc;
    st_append_cb cb;
    void *arg;
    size_t n;
    st_append_item_t *items;
    st_part_ref_t *refs;
};

static void parts_free(st_parts_t *p)
{
    pthread_mutex_destroy(&p->mu);
    free(p->items);
    free(p->refs);
    free(p);
}

static void parts_done(void *arg, gt_err_t rc, const st_append_item_t *items,
                       size_t n)
{
    st_part_ref_t *r = arg;
    st_parts_t *p = r->all;
    pthread_mutex_lock(&p->mu);
    if (rc != GT_OK && p->rc == GT_OK)
        p->rc = rc;
    else if (rc == GT_OK && items)
        memcpy(p->items + r->base, items, n * sizeof(*items));
    bool last = --p->left == 0;
    pthread_mutex_unlock(&p->mu);
    if (!last)
        return;
    if (p->rc == GT_OK)
        p->cb(p->arg, GT_OK, p->items, p->n);
    else
        p->cb(p->arg, p->rc, NULL, 0);
    parts_free(p);
}

/* Set while st_append_front() submits: that thread writes the small
 * append it queues itself (async mode), so the push wakes no writer. */
static _Thread_local st_local_t *wr_front;

/* Queues a chain of ops at once (one caller's parts stay together);
 * `small`: it is one small append (the writer takes those first).
 * GT_ESHUTDOWN when the writer stopped (nothing queued). */
static gt_err_t wq_push_chain(st_local_t *st, st_wop_t *head, bool small)
{
    st_wop_t *tail = head;
    gt_err_t rc = GT_OK;
    while (tail->next)
        tail = tail->next;
    pthread_mutex_lock(&st->wq_lock);
    if (st->wq_stop) {
        rc = GT_ESHUTDOWN;
    } else {
        if (st->wq_tail)
            st->wq_tail->next = head;
        else
            st->wq_head = head;
        st->wq_tail = tail;
        if (small)
            atomic_store(&st->wq_small, true);
        /* Not when a thread is writing (async mode: it takes this one
         * next, or wakes the writer when it stops), nor when this thread
         * writes this small append itself right after (st_append_front). */
        if (st->wq_waiting && !st->wq_busy && !(wr_front == st && small))
            pthread_cond_signal(&st->wq_cond);
    }
    pthread_mutex_unlock(&st->wq_lock);
    return rc;
}

/* st_append_submit of a large batch (not internal): queues are chosen
 * for the whole batch, then it is encoded and queued as parts of at most
 * ST_PART_BYTES of bodies.  `nparts` counted by the caller. */
static void append_parts(st_local_t *st, const char *topic,
                         const st_message_t *msgs, size_t n, size_t nparts,
                         st_append_cb cb, void *arg)
{
    gt_err_t rc = GT_OK;
    st_wop_t *head = NULL, **tail = &head;
    st_parts_t *p = calloc(1, sizeof(*p));
    if (!p || !(p->items = calloc(n, sizeof(*p->items))) ||
        !(p->refs = calloc(nparts, sizeof(*p->refs)))) {
        if (p) {
            free(p->items);
            free(p);
        }
        cb(arg, GT_ENOMEM, NULL, 0);
        return;
    }
    pthread_mutex_init(&p->mu, NULL);
    p->cb = cb;
    p->arg = arg;
    p->n = n;
    p->left = nparts;
    pthread_mutex_lock(&st->lock);
    st_topic_rt_t *t = st_topic_find(st, topic);
    if (st->closing)
        rc = GT_ESHUTDOWN;
    else if (!t)
        rc = GT_ENOTFOUND;
    else
        rc = choose_queues(t, msgs, n, p->items);
    pthread_mutex_unlock(&st->lock);
    size_t base = 0;
    for (size_t k = 0; rc == GT_OK && k < nparts; k++) {
        size_t cnt = 0, nix = 0;
        uint64_t bytes = 0;
        while (base + cnt < n &&
               (cnt == 0 || bytes + msgs[base + cnt].body_len <= ST_PART_BYTES)) {
            bytes += msgs[base + cnt].body_len;
            nix += 1 + msgs[base + cnt].nkeys;
            cnt++;
        }
        st_wop_t *w = wop_new(cnt, nix);
        if (!w) {
            rc = GT_ENOMEM;
            break;
        }
        *tail = w;
        tail = &w->next;
        w->nix = nix;
        w->cb = parts_done;
        w->arg = &p->refs[k];
        w->topic = t;
        p->refs[k] = (st_part_ref_t){p, base};
        for (size_t i = 0; i < cnt; i++)
            w->items[i].queue_id = p->items[base + i].queue_id;
        rc = wop_encode(st, w, topic, msgs + base, false);
        base += cnt;
    }
    if (rc == GT_OK && base != n) /* counted otherwise by the caller */
        rc = GT_EINVAL;
    if (rc == GT_OK) {
        /* wop_encode's checks no longer see the whole batch: the parts
         * must fit in one segment together, as one op would. */
        uint64_t total = 0;
        for (st_wop_t *w = head; w; w = w->next)
            total += w->len;
        if (total > st->seg_size - ST_SEG_HDR)
            rc = GT_EINVAL;
    }
    if (rc == GT_OK && (rc = wq_push_chain(st, head, false)) == GT_OK)
        return;
    while (head) {
        st_wop_t *next = head->next;
        wop_free(head);
        head = next;
    }
    parts_free(p);
    cb(arg, rc, NULL, 0);
}

/* How many parts of at most ST_PART_BYTES of bodies msgs[0..n) make. */
static size_t count_parts(const st_message_t *msgs, size_t n)
{
    size_t parts = 0;
    uint64_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || bytes + msgs[i].body_len > ST_PART_BYTES) {
            parts++;
            bytes = 0;
        }
        bytes += msgs[i].body_len;
    }
    return parts;
}

gt_err_t st_append_submit(st_local_t *st, const char *topic,
                          const st_message_t *msgs, size_t n, st_append_cb cb,
                          void *arg, bool internal)
{
    gt_err_t rc = GT_OK;
    st_wop_t *w = NULL;
    if (!topic || !msgs || n == 0 || n > WOP_MAX_MSGS) {
        rc = GT_EINVAL;
        goto out;
    }
    size_t nix = n;
    for (size_t i = 0; i < n; i++) {
        if (msgs[i].nkeys > ST_MAX_KEYS) { /* before sizing anything by it */
            rc = GT_EINVAL;
            goto out;
        }
        nix += msgs[i].nkeys;
    }
    if (!internal && n > 1) {
        size_t nparts = count_parts(msgs, n);
        if (nparts > 1) {
            append_parts(st, topic, msgs, n, nparts, cb, arg);
            return GT_OK;
        }
    }
    if (!(w = wop_new(n, nix))) {
        rc = GT_ENOMEM;
        goto out;
    }
    w->nix = nix;
    w->cb = cb;
    w->arg = arg;
    if (!internal)
        pthread_mutex_lock(&st->lock);
    st_topic_rt_t *t = st_topic_find(st, topic);
    if (st->closing)
        rc = GT_ESHUTDOWN;
    else if (!t)
        rc = GT_ENOTFOUND;
    else
        rc = choose_queues(t, msgs, n, w->items);
    w->topic = t;
    if (!internal)
        pthread_mutex_unlock(&st->lock);
    if (rc == GT_OK)
        rc = wop_encode(st, w, topic, msgs, internal);
    if (rc != GT_OK)
        goto out;
    if ((rc = wq_push(st, w)) == GT_OK)
        return GT_OK;
out:
    wop_free(w);
    if (internal)
        return rc;
    cb(arg, rc, NULL, 0);
    return GT_OK;
}

/* Queues an encoded op for the writer.  GT_ESHUTDOWN when it stopped. */
static gt_err_t wq_push(st_local_t *st, st_wop_t *w)
{
    bool small = w->len <= ST_SMALL_APPEND;
    gt_err_t rc = wq_push_chain(st, w, small);
    /* The writer may be waiting for the syncer before a large write: a
     * small append is written at once instead (it then waits for the sync
     * in progress and its own), not after that wait and that write.  (The
     * flag is set, then this one looked at; wait_ahead sets this one, then
     * looks at the flag.) */
    if (rc == GT_OK && small && atomic_load(&st->wr_ahead_wait)) {
        pthread_mutex_lock(&st->sq_lock);
        pthread_cond_broadcast(&st->sq_idle);
        pthread_mutex_unlock(&st->sq_lock);
    }
    return rc;
}

/* st_append_multi: one record, nd destinations (see st.h). */
void st_append_multi_local(st_store_t *s, const st_message_t *msg,
                           const st_dest_t *dests, size_t nd,
                           st_append_cb cb, void *arg)
{
    st_local_t *st = (st_local_t *)s;
    gt_err_t rc = GT_OK;
    st_wop_t *w = NULL;
    const char **names = NULL;
    uint32_t *queues = NULL;
    if (!msg || !dests || nd == 0 || nd > ST_DEST_MAX ||
        msg->nkeys > ST_MAX_KEYS || msg->tx_half ||
        msg->delivery_ts_ms > st_now_ms()) {
        rc = GT_EINVAL;
        goto out;
    }
    size_t nix = 1 + msg->nkeys;
    names = calloc(nd, sizeof(*names));
    queues = calloc(nd, sizeof(*queues));
    if (!names || !queues || !(w = wop_new(nd, nix)) ||
        !(w->dt = calloc(nd, sizeof(*w->dt)))) {
        rc = GT_ENOMEM;
        goto out;
    }
    w->n = 1;
    w->nd = nd;
    w->nix = nix;
    w->cb = cb;
    w->arg = arg;
    pthread_mutex_lock(&st->lock);
    if (st->closing)
        rc = GT_ESHUTDOWN;
    for (size_t d = 0; rc == GT_OK && d < nd; d++) {
        const char *tn = dests[d].topic;
        st_topic_rt_t *t = tn && !st_is_sys_name(tn) ? st_topic_find(st, tn)
                                                     : NULL;
        if (!tn || st_is_sys_name(tn)) {
            rc = GT_EINVAL;
            break;
        }
        if (!t || t->deleted) {
            rc = GT_ENOTFOUND;
            break;
        }
        for (size_t k = 0; k < d; k++) /* 1024^2 / 2 compares at most */
            if (w->dt[k] == t)
                rc = GT_EINVAL;
        uint32_t qc = t->meta.queue_count;
        int32_t want = dests[d].queue_id;
        if (want >= 0 && (uint32_t)want >= qc)
            rc = GT_EINVAL;
        w->dt[d] = t;
        names[d] = t->meta.name;
        queues[d] = want >= 0 ? (uint32_t)want
                    : msg->msg_group && msg->msg_group[0]
                        ? gt_hash32(msg->msg_group) % qc
                        : t->rr++ % qc;
        w->items[d].queue_id = queues[d];
    }
    w->topic = w->dt[0];
    pthread_mutex_unlock(&st->lock);
    if (rc != GT_OK)
        goto out;
    /* the record: the message in the first destination's topic (names are
     * the topics' own: never freed nor renamed), then the destinations */
    char *id = w->items[0].msg_id;
    size_t idlen;
    if (!msg->msg_id || !msg->msg_id[0])
        gen_id(st, id);
    else if ((idlen = strlen(msg->msg_id)) < ST_MSG_ID_MAX)
        memcpy(id, msg->msg_id, idlen + 1);
    else
        rc = GT_EINVAL;
    size_t base = rc == GT_OK ? st_record_size_as(names[0], msg, id) : 0;
    size_t total = base + st_dests_size(names, nd);
    if (base == 0 || base > st->cfg.max_message_bytes ||
        total > ST_REC_MAX_HARD || total > st->seg_size - ST_SEG_HDR)
        rc = GT_EINVAL;
    else if (!(w->buf = malloc(total)))
        rc = GT_ENOMEM;
    size_t used = 0;
    if (rc == GT_OK)
        rc = st_record_encode_as(w->buf, total, names[0], msg, id, 0, &used);
    if (rc != GT_OK)
        goto out;
    st_record_add_dests(w->buf, names, queues, nd);
    w->len = total;
    w->roff[0] = 0;
    w->tag_hash[0] = gt_hash32(msg->tag);
    w->group_hash[0] = st_group_hash(msg->msg_group);
    w->due[0] = msg->delivery_ts_ms;
    w->ix_start[0] = 0;
    w->ix[0] = st_hash64('I', id);
    for (uint32_t j = 0; j < msg->nkeys; j++)
        w->ix[1 + j] = st_hash64('K', msg->keys[j]);
    w->ix_start[1] = (uint32_t)nix;
    for (size_t d = 1; d < nd; d++)
        memcpy(w->items[d].msg_id, id, ST_MSG_ID_MAX);
    rc = wq_push(st, w);
out:
    free(names);
    free(queues);
    if (rc == GT_OK)
        return;
    wop_free(w);
    cb(arg, rc, NULL, 0);
}

/* ---- writer thread ------------------------------------------------------ */
static gt_err_t writev_full(st_local_t *st, int fd, struct iovec *iov, int cnt,
                            uint64_t off)
{
    while (cnt > 0) {
        ssize_t r = st->fops->pwritev(st->fctx, fd, iov, cnt, (off_t)off);
        if (r == -EINTR)
            continue;
        if (r <= 0)
            return r == 0 ? GT_EIO : st_errno_to_err((int)r);
        off += (uint64_t)r;
        while (cnt > 0 && (size_t)r >= iov->iov_len) {
            r -= (ssize_t)iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + r;
            iov->iov_len -= (size_t)r;
        }
    }
    return GT_OK;
}

/* st_local_on_written()'s hook, if set. */
static void written_hook(st_local_t *st)
{
    st_written_fn fn = atomic_load(&st->written_fn);
    if (fn != NULL)
        fn(atomic_load(&st->written_arg));
}

static void run_complete(st_wop_t *run, gt_err_t rc)
{
    while (run) {
        st_wop_t *next = run->next;
        if (rc == GT_OK)
            run->cb(run->arg, GT_OK, run->items, run->nd ? run->nd : run->n);
        else
            run->cb(run->arg, rc, NULL, 0);
        wop_free(run);
        run = next;
    }
}

/* Publishes a multi-queue record: an entry in each destination, one
 * index entry; lock held. */
static void publish_multi(st_local_t *st, st_wop_t *w, int64_t now)
{
    uint64_t pos = w->items[0].position;
    uint32_t sz = (uint32_t)w->len;
    for (size_t d = 0; d < w->nd; d++) {
        st_cq_entry_t e = {.pos = pos, .size = sz, .tag_hash = w->tag_hash[0],
                           .store_ts = now, .group_hash = w->group_hash[0]};
        uint32_t q = w->items[d].queue_id;
        if (st_cq_push(w->dt[d], q, &e) != GT_OK)
            GT_LOG(ERROR, "store", "out of memory publishing a message");
        w->dt[d]->cq[q].bytes += sz;
        st_publish_wake(st, w->dt[d]);
    }
    for (uint32_t k = w->ix_start[0]; k < w->ix_start[1]; k++)
        (void)st_index_add(&st->index, w->ix[k], pos);
    if (pos + sz > st->published_pos)
        st->published_pos = pos + sz;
}

/* Publishes a durable run to consume queues and the index; lock taken. */
static void run_publish(st_local_t *st, st_wop_t *run, int64_t now)
{
    pthread_mutex_lock(&st->lock);
    for (st_wop_t *w = run; w; w = w->next) {
        if (w->nd) {
            publish_multi(st, w, now);
            continue;
        }
        for (size_t i = 0; i < w->n; i++) {
            st_append_item_t *it = &w->items[i];
            uint32_t sz = (uint32_t)((i + 1 < w->n ? w->roff[i + 1] : w->len) -
                                     w->roff[i]);
            /* the timer topic's consume queue is keyed by delivery time */
            int64_t ts = w->topic == st->sys_timer ? w->due[i] : now;
            st_cq_entry_t e = {.pos = it->position, .size = sz,
                               .tag_hash = w->tag_hash[i], .store_ts = ts,
                               .group_hash = w->group_hash[i]};
            if (st_cq_push(w->topic, (uint32_t)it->queue_id, &e) != GT_OK)
                GT_LOG(ERROR, "store", "out of memory publishing a message");
            w->topic->cq[it->queue_id].bytes += sz;
            for (uint32_t k = w->ix_start[i]; k < w->ix_start[i + 1]; k++)
                (void)st_index_add(&st->index, w->ix[k], it->position);
            if (it->position + sz > st->published_pos)
                st->published_pos = it->position + sz;
        }
        st_publish_wake(st, w->topic);
    }
    pthread_mutex_unlock(&st->lock);
}

/* Rewinds the offsets a failed run assigned (it holds the highest ones). */
static void run_rewind(st_local_t *st, st_wop_t *run)
{
    pthread_mutex_lock(&st->lock);
    for (st_wop_t *w = run; w; w = w->next)
        for (size_t i = 0; i < (w->nd ? w->nd : w->n); i++) {
            st_topic_rt_t *t = w->nd ? w->dt[i] : w->topic;
            st_cq_t *q = &t->cq[w->items[i].queue_id];
            if (w->items[i].queue_offset < q->assigned)
                q->assigned = w->items[i].queue_offset;
        }
    pthread_mutex_unlock(&st->lock);
}

/* A run written in sync mode, waiting for the syncer: queued under sq_lock
 * by the writer, then owned by the syncer. */
typedef struct st_run {
    struct st_run *next;
    st_wop_t *ops;
    st_seg_t *seg;      /* ref */
    uint64_t start_off; /* file offsets in seg */
    uint64_t end_off;
    int64_t now;
} st_run_t;

static void runs_complete(st_local_t *st, st_run_t *r, gt_err_t rc)
{
    while (r) {
        st_run_t *next = r->next;
        run_complete(r->ops, rc);
        st_seg_unref(st, r->seg);
        free(r);
        r = next;
    }
}

/* Sync mode: waits until the syncer has nothing in hand; if a sync failed,
 * truncates the segment back to the first unsynced run and rewinds every
 * assigned offset to the published (= synced) end.  Writer thread. */
static void pipeline_settle(st_local_t *st, st_seg_t *seg, bool drain)
{
    pthread_mutex_lock(&st->sq_lock);
    if (!drain && !st->sq_failed) {
        pthread_mutex_unlock(&st->sq_lock);
        return;
    }
    while (st->sq_busy || st->sq_head)
        pthread_cond_wait(&st->sq_idle, &st->sq_lock);
    bool failed = st->sq_failed;
    uint64_t off = st->sq_reset_off;
    st->sq_failed = false;
    pthread_mutex_unlock(&st->sq_lock);
    if (!failed)
        return;
    if (st_zfill_cut(st, seg, off) < 0)
        st->wr_need_truncate = true;
    atomic_store(&seg->end, off);
    atomic_store(&st->written_pos, seg->base + off);
    pthread_mutex_lock(&st->lock);
    for (size_t i = 0; i < st->ntopics; i++)
        for (uint32_t q = 0; q < st->topics[i]->nq; q++)
            st->topics[i]->cq[q].assigned = st_cq_end(&st->topics[i]->cq[q]);
    pthread_mutex_unlock(&st->lock);
}

/* Sync mode: hands a written run to the syncer (or fails it if a sync
 * failed meanwhile: it sits above the data that must be cut). */
static void run_hand_over(st_local_t *st, st_seg_t *seg, st_wop_t *ops,
                          uint64_t start, uint64_t end, int64_t now)
{
    st_run_t *r = calloc(1, sizeof(*r));
    if (!r) {
        if (st_zfill_cut(st, seg, start) < 0)
            st->wr_need_truncate = true;
        atomic_store(&seg->end, start);
        run_rewind(st, ops);
        run_complete(ops, GT_ENOMEM);
        return;
    }
    *r = (st_run_t){.ops = ops, .seg = seg, .start_off = start,
                    .end_off = end, .now = now};
    atomic_fetch_add(&seg->refs, 1);
    pthread_mutex_lock(&st->sq_lock);
    if (st->sq_failed) {
        gt_err_t err = st->sq_err;
        pthread_mutex_unlock(&st->sq_lock);
        runs_complete(st, r, err);
        pipeline_settle(st, seg, false);
        return;
    }
    if (st->sq_tail)
        st->sq_tail->next = r;
    else
        st->sq_head = r;
    st->sq_tail = r;
    st->sq_ahead += end - start;
    for (st_wop_t *w = ops; w; w = w->next)
        st->sq_appends++;
    if (st->sq_waiting && st->sq_appends >= st->sq_want)
        pthread_cond_signal(&st->sq_cond);
    pthread_mutex_unlock(&st->sq_lock);
}

/* Writes one run of ops into the current segment (they fit). */
static void run_write(st_local_t *st, st_seg_t *seg, st_wop_t *run)
{
    gt_err_t rc = GT_OK;
    struct iovec iov[64];
    int cnt = 0;
    if (st->cfg.flush == ST_FLUSH_SYNC)
        pipeline_settle(st, seg, false);
    uint64_t start = atomic_load(&seg->end), off = start;
    int64_t now = st_now_ms();
    if (st->wr_need_truncate) {
        int r = st_zfill_cut(st, seg, start);
        if (r < 0) {
            run_complete(run, st_errno_to_err(r));
            return;
        }
        st->wr_need_truncate = false;
    }
    if (st->cfg.flush == ST_FLUSH_SYNC) {
        uint64_t need = start;
        for (st_wop_t *w = run; w; w = w->next)
            need += w->len;
        if ((rc = st_zfill_ensure(st, seg, need)) != GT_OK) {
            GT_LOG(ERROR, "store", "zero fill of %s failed: %s", seg->path,
                   gt_err_str(rc));
            run_complete(run, rc);
            return;
        }
    }
    pthread_mutex_lock(&st->lock);
    for (st_wop_t *w = run; w; w = w->next)
        for (size_t i = 0; i < (w->nd ? w->nd : w->n); i++)
            w->items[i].queue_offset =
                (w->nd ? w->dt[i] : w->topic)->cq[w->items[i].queue_id]
                    .assigned++;
    pthread_mutex_unlock(&st->lock);
    for (st_wop_t *w = run; w && rc == GT_OK; w = w->next) {
        for (size_t i = 0; i < w->n; i++) {
            st_append_item_t *it = &w->items[i];
            it->position = seg->base + off + w->roff[i];
            it->store_ts_ms = now;
            for (size_t d = 0; d < w->nd; d++) { /* multi: n == 1 */
                st_record_set_dest(w->buf, d, w->items[d].queue_offset);
                w->items[d].position = it->position;
                w->items[d].store_ts_ms = now;
            }
            st_record_seal(w->buf + w->roff[i], it->queue_id, it->queue_offset,
                           it->position, now);
        }
        iov[cnt].iov_base = w->buf;
        iov[cnt++].iov_len = w->len;
        off += w->len;
        if (cnt == 64 || !w->next) {
            uint64_t at = off;
            for (int j = 0; j < cnt; j++)
                at -= iov[j].iov_len;
            rc = writev_full(st, seg->fd, iov, cnt, at);
            cnt = 0;
        }
    }
    if (rc != GT_OK) {
        GT_LOG(ERROR, "store", "commitlog write to %s failed: %s; failing "
               "the batch", seg->path, gt_err_str(rc));
        if (st_zfill_cut(st, seg, start) < 0)
            st->wr_need_truncate = true;
        run_rewind(st, run);
        run_complete(run, rc);
        return;
    }
    atomic_store(&seg->end, off);
    atomic_store(&seg->last_ts, now);
    atomic_store(&st->written_pos, seg->base + off);
    if (st->cfg.flush == ST_FLUSH_SYNC) {
        run_hand_over(st, seg, run, start, off, now);
        return;
    }
    written_hook(st);
    run_publish(st, run, now);
    run_complete(run, GT_OK);
}

static void batch_process(st_local_t *st, st_wop_t *list)
{
    st_seg_t *seg = st_log_current(st);
    st_wop_t *run = NULL, **tail = &run;
    uint64_t used = atomic_load(&seg->end);
    while (list) {
        st_wop_t *w = list;
        list = w->next;
        w->next = NULL;
        if (used + w->len > st->seg_size && used > ST_SEG_HDR) {
            if (run)
                run_write(st, seg, run);
            run = NULL;
            tail = &run;
            if (st->cfg.flush == ST_FLUSH_SYNC) /* old segment fully synced */
                pipeline_settle(st, seg, true);
            st_seg_unref(st, seg);
            gt_err_t rc = st_zfill_roll(st);
            seg = st_log_current(st);
            if (rc != GT_OK) {
                GT_LOG(ERROR, "store", "segment roll failed: %s",
                       gt_err_str(rc));
                w->next = list;
                run_complete(w, rc);
                break;
            }
            used = atomic_load(&seg->end);
        }
        *tail = w;
        tail = &w->next;
        used += w->len;
    }
    if (run)
        run_write(st, seg, run);
    st_seg_unref(st, seg);
}

/* Topics an append writes to: its topic, or each destination's. */
static size_t wop_ntopics(const st_wop_t *w) { return w->nd ? w->nd : 1; }
static st_topic_rt_t *wop_topic(const st_wop_t *w, size_t i)
{
    return w->nd ? w->dt[i] : w->topic;
}

#define HELD_TOPICS_MAX 64

static bool wop_in_held(const st_wop_t *w, st_topic_rt_t *const *held, size_t n)
{
    for (size_t i = 0; i < wop_ntopics(w); i++)
        for (size_t j = 0; j < n; j++)
            if (held[j] == wop_topic(w, i))
                return true;
    return false;
}

/* Adds w's topics to held; false when there is no room. */
static bool wop_hold(const st_wop_t *w, st_topic_rt_t **held, size_t *n)
{
    for (size_t i = 0; i < wop_ntopics(w); i++) {
        st_topic_rt_t *t = wop_topic(w, i);
        size_t j = 0;
        while (j < *n && held[j] != t)
            j++;
        if (j < *n)
            continue;
        if (*n == HELD_TOPICS_MAX)
            return false;
        held[(*n)++] = t;
    }
    return true;
}

/* Sync mode: takes the small appends off the write queue, in order,
 * except those to a topic that an append left in the queue before them
 * writes to: one caller's appends to a queue keep their order (the AMQP
 * gateway and the proxy do not wait for an append's answer before the
 * next one).  wq_lock held. */
static st_wop_t *take_small(st_local_t *st)
{
    st_wop_t *out = NULL, **ot = &out, **pp = &st->wq_head, *last = NULL;
    st_topic_rt_t *held[HELD_TOPICS_MAX];
    size_t nheld = 0;
    while (*pp) {
        st_wop_t *w = *pp;
        if (w->len <= ST_SMALL_APPEND && !wop_in_held(w, held, nheld)) {
            *pp = w->next;
            w->next = NULL;
            *ot = w;
            ot = &w->next;
        } else {
            if (!wop_hold(w, held, &nheld))
                return out; /* the rest stays as it is, wq_tail too */
            last = w;
            pp = &w->next;
        }
    }
    st->wq_tail = last;
    return out;
}

/* Async mode: small appends first (their answers wait for nothing
 * else), else the whole queue.  wq_lock held. */
static st_wop_t *take_async(st_local_t *st)
{
    st_wop_t *list;
    atomic_store(&st->wq_small, false);
    if ((list = take_small(st)) == NULL) {
        list = st->wq_head;
        st->wq_head = st->wq_tail = NULL;
    }
    return list;
}

/* Sync mode: takes appends in order while they keep the bytes written
 * ahead of the syncs (`ahead` now) within ST_WRITE_AHEAD; at least one
 * when nothing is ahead.  wq_lock held. */
static st_wop_t *take_within(st_local_t *st, uint64_t ahead)
{
    st_wop_t *out = NULL, **ot = &out;
    while (st->wq_head) {
        st_wop_t *w = st->wq_head;
        if (ahead + w->len > ST_WRITE_AHEAD && (ahead > 0 || out))
            break;
        st->wq_head = w->next;
        w->next = NULL;
        *ot = w;
        ot = &w->next;
        ahead += w->len;
    }
    if (!st->wq_head)
        st->wq_tail = NULL;
    return out;
}

/* Sync mode: waits until an append of `len` bytes fits within
 * ST_WRITE_AHEAD of the syncs (or nothing is ahead, or a sync failed:
 * the writer settles that first).  Returns the bytes ahead; sets *small
 * when it returned early because a small append was queued. */
static uint64_t wait_ahead(st_local_t *st, size_t len, bool *small)
{
    bool full;
    pthread_mutex_lock(&st->sq_lock);
    atomic_store(&st->wr_ahead_wait, true);
    while ((full = st->sq_ahead > 0 && st->sq_ahead + len > ST_WRITE_AHEAD &&
                   !st->sq_failed && (st->sq_busy || st->sq_head)) &&
           !atomic_load(&st->wq_small))
        pthread_cond_wait(&st->sq_idle, &st->sq_lock);
    atomic_store(&st->wr_ahead_wait, false);
    *small = full;
    uint64_t ahead = st->sq_ahead;
    pthread_mutex_unlock(&st->sq_lock);
    return ahead;
}

static void *writer_main(void *arg)
{
    st_local_t *st = arg;
    pthread_setname_np(pthread_self(), "st-writer");
    bool sync = st->cfg.flush == ST_FLUSH_SYNC;
    for (;;) {
        pthread_mutex_lock(&st->wq_lock);
        /* (async mode: an appending thread may be writing: wq_busy) */
        while ((!st->wq_head && !st->wq_stop) || st->wq_busy) {
            st->wq_waiting = true;
            pthread_cond_wait(&st->wq_cond, &st->wq_lock);
            st->wq_waiting = false;
        }
        st_wop_t *list = NULL;
        if (!sync) {
            if ((list = take_async(st)) != NULL)
                st->wq_busy = true;
        } else {
            atomic_store(&st->wq_small, false); /* take_small() looks now */
            list = take_small(st);
        }
        if (sync && !list && st->wq_head) {
            size_t len = st->wq_head->len;
            bool small;
            pthread_mutex_unlock(&st->wq_lock);
            uint64_t ahead = wait_ahead(st, len, &small);
            pthread_mutex_lock(&st->wq_lock);
            /* Waited as long as it helps: write at least one now (unless
             * woken early by a small append: that one, or wait on). */
            if (ahead + len > ST_WRITE_AHEAD)
                ahead = 0;
            if (!(list = take_small(st)) && !small)
                list = take_within(st, ahead);
        }
        bool stop = st->wq_stop && !st->wq_head;
        pthread_mutex_unlock(&st->wq_lock);
        if (list) {
            st_sched_hold(); /* the answers of the run go as one task */
            batch_process(st, list);
            st_sched_release();
            if (!sync) {
                pthread_mutex_lock(&st->wq_lock);
                st->wq_busy = false;
                pthread_mutex_unlock(&st->wq_lock);
            }
        } else if (stop) {
            break;
        }
    }
    return NULL;
}

/* Async mode: the appending thread writes small appends (up to
 * ST_SMALL_APPEND bytes) itself when no one else is writing (wq_busy),
 * instead of waking the writer thread -- their answers are then posted
 * from here (a gRPC worker: run after its event, no hand-off either).  It
 * writes the small ones others queued meanwhile too, for up to
 * INLINE_ROUNDS rounds, then leaves the rest to the writer thread.  Large
 * appends stay with the writer thread: a front-end thread does not copy
 * megabytes into the page cache (nor wait there when the kernel throttles
 * dirty pages) while its other calls wait. */
#define INLINE_ROUNDS 4

static void write_front(st_local_t *st)
{
    st_wop_t *list;

    pthread_mutex_lock(&st->wq_lock);
    if (st->wq_busy || !st->wq_head) {
        pthread_mutex_unlock(&st->wq_lock);
        return;
    }
    st->wq_busy = true;
    for (int round = 1; round <= INLINE_ROUNDS; round++) {
        if ((list = take_small(st)) == NULL)
            break;
        pthread_mutex_unlock(&st->wq_lock);
        batch_process(st, list);
        pthread_mutex_lock(&st->wq_lock);
    }
    st->wq_busy = false;
    if ((st->wq_head || st->wq_stop) && st->wq_waiting)
        pthread_cond_signal(&st->wq_cond);
    pthread_mutex_unlock(&st->wq_lock);
}

void st_append_front(st_store_t *s, const char *topic,
                     const st_message_t *msgs, size_t n, st_append_cb cb,
                     void *arg)
{
    st_local_t *st = (st_local_t *)s;

    if (st->cfg.flush != ST_FLUSH_ASYNC) {
        st_append_local(s, topic, msgs, n, cb, arg);
        return;
    }
    wr_front = st;
    st_append_local(s, topic, msgs, n, cb, arg);
    wr_front = NULL;
    write_front(st);
}

/* ---- syncer thread (sync mode) ------------------------------------------- */
#define GATHER_US 200

/* With several appenders, their next appends arrive just after the previous
 * sync completed them.  Like PostgreSQL's commit_delay, wait a little (up to
 * GATHER_US, and only while fewer appends are queued than the last sync
 * covered) so one sync covers them all instead of alternating small and
 * large groups.  sq_lock held. */
static void gather(st_local_t *st, size_t last)
{
    if (last <= 1)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += GATHER_US * 1000;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    st->sq_waiting = true;
    st->sq_want = last;
    while (st->sq_appends < last && !st->sq_stop &&
           pthread_cond_timedwait(&st->sq_cond, &st->sq_lock, &ts) == 0)
        ;
    st->sq_waiting = false;
    st->sq_want = 0;
}

/* One fdatasync covers every run written before it started (group commit);
 * then the runs are published and completed in write order. */
static void *syncer_main(void *arg)
{
    st_local_t *st = arg;
    pthread_setname_np(pthread_self(), "st-syncer");
    size_t last = 1;
    pthread_mutex_lock(&st->sq_lock);
    for (;;) {
        while (!st->sq_head && !st->sq_stop) {
            st->sq_waiting = true;
            pthread_cond_wait(&st->sq_cond, &st->sq_lock);
            st->sq_waiting = false;
        }
        if (st->sq_head)
            gather(st, last);
        st_run_t *list = st->sq_head, *last_run = st->sq_tail;
        if (!list)
            break;
        last = st->sq_appends;
        st->sq_appends = 0;
        st->sq_head = st->sq_tail = NULL;
        st->sq_busy = true;
        pthread_mutex_unlock(&st->sq_lock);
        int r = st_timed_fdatasync(st, ST_SYNC_COMMITLOG, list->seg->fd);
        uint64_t bytes = 0;
        for (st_run_t *x = list; x; x = x->next)
            bytes += x->end_off - x->start_off;
        if (r == 0) {
            uint64_t end = last_run->seg->base + last_run->end_off;
            atomic_store(&st->synced_pos, end);
            st_log_checkpoint(st, end);
            atomic_fetch_add(&st->n_syncs, 1);
            st_sched_hold(); /* one executor wake for the group */
            written_hook(st);
            for (st_run_t *x = list; x; x = x->next) {
                run_publish(st, x->ops, x->now);
                for (st_wop_t *w = x->ops; w; w = w->next)
                    atomic_fetch_add(&st->n_synced_appends, 1);
            }
            runs_complete(st, list, GT_OK);
            st_sched_release();
            pthread_mutex_lock(&st->sq_lock);
            st->sq_ahead -= bytes;
        } else {
            gt_err_t err = st_errno_to_err(r);
            GT_LOG(ERROR, "store", "fdatasync %s failed: %s; failing the "
                   "waiting appends", list->seg->path, gt_err_str(err));
            pthread_mutex_lock(&st->sq_lock);
            st->sq_failed = true;
            st->sq_err = err;
            st->sq_reset_off = list->start_off;
            st_run_t *more = st->sq_head;
            st->sq_head = st->sq_tail = NULL;
            st->sq_appends = 0;
            st->sq_ahead = 0; /* every run handed over is failed here */
            pthread_mutex_unlock(&st->sq_lock);
            st_sched_hold();
            runs_complete(st, list, err);
            runs_complete(st, more, err);
            st_sched_release();
            pthread_mutex_lock(&st->sq_lock);
        }
        st->sq_busy = false;
        pthread_cond_broadcast(&st->sq_idle);
    }
    pthread_mutex_unlock(&st->sq_lock);
    return NULL;
}

/* ---- flusher thread ------------------------------------------------------ */
static void flush_once(st_local_t *st)
{
    if (st->cfg.flush == ST_FLUSH_ASYNC) {
        st_seg_t *seg = st_log_current(st);
        uint64_t target = atomic_load(&st->written_pos);
        uint64_t seg_end = seg->base + st->seg_size;
        if (target > seg_end)
            target = seg_end;
        if (target > atomic_load(&st->synced_pos)) {
            int r = st_timed_fdatasync(st, ST_SYNC_COMMITLOG, seg->fd);
            if (r < 0) {
                GT_LOG(ERROR, "store", "fdatasync %s failed: %s", seg->path,
                       strerror(-r));
            } else {
                uint64_t cur = atomic_load(&st->synced_pos);
                while (cur < target &&
                       !atomic_compare_exchange_weak(&st->synced_pos, &cur,
                                                     target))
                    ;
                st_log_checkpoint(st, atomic_load(&st->synced_pos));
            }
        }
        st_seg_unref(st, seg);
    }
    st_state_sync(st);
}

static void *flusher_main(void *arg)
{
    st_local_t *st = arg;
    pthread_setname_np(pthread_self(), "st-flusher");
    pthread_mutex_lock(&st->fl_lock);
    while (!st->fl_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec +
                      (uint64_t)st->cfg.flush_interval_ms * 1000000ull;
        ts.tv_sec += (time_t)(ns / 1000000000ull);
        ts.tv_nsec = (long)(ns % 1000000000ull);
        if (!st->fl_kick)
            pthread_cond_timedwait(&st->fl_cond, &st->fl_lock, &ts);
        st->fl_kick = false;
        pthread_mutex_unlock(&st->fl_lock);
        flush_once(st);
        pthread_mutex_lock(&st->fl_lock);
    }
    pthread_mutex_unlock(&st->fl_lock);
    flush_once(st);
    return NULL;
}

void st_flusher_kick(st_local_t *st)
{
    pthread_mutex_lock(&st->fl_lock);
    st->fl_kick = true;
    pthread_cond_signal(&st->fl_cond);
    pthread_mutex_unlock(&st->fl_lock);
}

static void st_writer_stop_syncer(st_local_t *st)
{
    pthread_mutex_lock(&st->sq_lock);
    st->sq_stop = true;
    pthread_cond_signal(&st->sq_cond);
    pthread_mutex_unlock(&st->sq_lock);
    pthread_join(st->syncer, NULL);
}

gt_err_t st_writer_start(st_local_t *st)
{
    if (st_zfill_start(st) != GT_OK)
        return GT_ENOMEM;
    if (pthread_create(&st->syncer, NULL, syncer_main, st) != 0) {
        st_zfill_stop(st);
        return GT_ENOMEM;
    }
    if (pthread_create(&st->writer, NULL, writer_main, st) != 0) {
        st_writer_stop_syncer(st);
        st_zfill_stop(st);
        return GT_ENOMEM;
    }
    if (pthread_create(&st->flusher, NULL, flusher_main, st) != 0) {
        pthread_mutex_lock(&st->wq_lock);
        st->wq_stop = true;
        pthread_cond_signal(&st->wq_cond);
        pthread_mutex_unlock(&st->wq_lock);
        pthread_join(st->writer, NULL);
        st_writer_stop_syncer(st);
        st_zfill_stop(st);
        return GT_ENOMEM;
    }
    return GT_OK;
}

/* Drains queued appends (they complete normally), then stops the threads;
 * the flusher's last round syncs everything. */
void st_writer_stop(st_local_t *st)
{
    pthread_mutex_lock(&st->wq_lock);
    st->wq_stop = true;
    pthread_cond_signal(&st->wq_cond);
    pthread_mutex_unlock(&st->wq_lock);
    pthread_join(st->writer, NULL);
    st_writer_stop_syncer(st);
    st_zfill_stop(st);
    pthread_mutex_lock(&st->fl_lock);
    st->fl_stop = true;
    pthread_cond_signal(&st->fl_cond);
    pthread_mutex_unlock(&st->fl_lock);
    pthread_join(st->flusher, NULL);
}
