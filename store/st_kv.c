/* Durable metadata records (st_meta_put / st_meta_del / st_meta_list): the
 * front ends' own namespaced key/value records, kept with the topics and
 * groups.
 *
 * In memory: one array of entries sorted by composite key -- namespace,
 * NUL, key -- compared bytewise (a shorter key first), so a namespace's
 * records, and those under a key prefix, are one contiguous run found by
 * binary search.  Inserts move pointers (a table of 100k records moves
 * under 1 MB); metadata changes are rare next to messages.
 *
 * On disk: each change is a state log record (st_state.c), written under
 * the lock before the change is applied; compaction writes every live
 * record.  Durability follows the flush mode: in sync mode a put waits
 * for the flusher's next fdatasync of the state log (kicked at once), then
 * completes on the flusher thread; in async mode it completes after the
 * write (synced within the flush interval). */
#include <stdlib.h>
#include <string.h>

#include "gt_log.h"
#include "st_int.h"

struct st_kv_ent {
    uint32_t kv_len;  /* composite key bytes */
    uint32_t val_len;
    uint8_t b[];      /* composite key, then value */
};

/* A sync-mode put waiting for the state log sync covering its record. */
struct st_kvw {
    struct st_kvw *next;
    uint64_t seq;
    st_done_cb cb;
    void *arg;
};

static int kv_cmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    return c ? c : an < bn ? -1 : an > bn;
}

/* First index whose key is >= (or > when upper) k. */
static size_t kv_bound(const st_local_t *st, const uint8_t *k, size_t kn,
                       bool upper)
{
    size_t lo = 0, hi = st->nkv;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const st_kv_ent_t *e = st->kv[mid];
        int c = kv_cmp(e->b, e->kv_len, k, kn);
        if (c < 0 || (upper && c == 0))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

gt_err_t st_kv_apply(st_local_t *st, const uint8_t *kv, uint32_t kv_len,
                     const uint8_t *val, uint32_t val_len, bool del)
{
    size_t i = kv_bound(st, kv, kv_len, false);
    bool found = i < st->nkv &&
                 kv_cmp(st->kv[i]->b, st->kv[i]->kv_len, kv, kv_len) == 0;
    if (del) {
        if (!found)
            return GT_ENOTFOUND;
        st->kv_bytes -= st->kv[i]->kv_len + st->kv[i]->val_len;
        free(st->kv[i]);
        memmove(st->kv + i, st->kv + i + 1, (st->nkv - i - 1) * sizeof(*st->kv));
        st->nkv--;
        return GT_OK;
    }
    st_kv_ent_t *e = malloc(sizeof(*e) + kv_len + val_len);
    if (!e)
        return GT_ENOMEM;
    e->kv_len = kv_len;
    e->val_len = val_len;
    memcpy(e->b, kv, kv_len);
    if (val_len)
        memcpy(e->b + kv_len, val, val_len);
    if (found) {
        st->kv_bytes -= st->kv[i]->kv_len + st->kv[i]->val_len;
        free(st->kv[i]);
        st->kv[i] = e;
    } else {
        if (st->nkv == st->kv_cap) {
            size_t cap = st->kv_cap ? st->kv_cap * 2 : 64;
            st_kv_ent_t **n = realloc(st->kv, cap * sizeof(*n));
            if (!n) {
                free(e);
                return GT_ENOMEM;
            }
            st->kv = n;
            st->kv_cap = cap;
        }
        memmove(st->kv + i + 1, st->kv + i, (st->nkv - i) * sizeof(*st->kv));
        st->kv[i] = e;
        st->nkv++;
    }
    st->kv_bytes += kv_len + val_len;
    return GT_OK;
}

void st_kv_rec(const st_kv_ent_t *e, st_srec_t *r)
{
    r->kv = e->b;
    r->kv_len = e->kv_len;
    r->val = e->b + e->kv_len;
    r->val_len = e->val_len;
}

void st_kv_free(st_local_t *st)
{
    for (size_t i = 0; i < st->nkv; i++)
        free(st->kv[i]);
    free(st->kv);
    st->kv = NULL;
    st->nkv = st->kv_cap = 0;
}

void st_kv_synced(st_local_t *st, uint64_t seq, uint64_t gen, gt_err_t err)
{
    struct st_kvw *done = NULL, **dt = &done;
    bool again = false;
    pthread_mutex_lock(&st->lock);
    if (err == GT_ESHUTDOWN || gen == st->state_fd_gen) {
        struct st_kvw **pp = &st->kv_wait;
        while (*pp) {
            struct st_kvw *w = *pp;
            if (err == GT_ESHUTDOWN || w->seq <= seq) {
                *pp = w->next;
                w->next = NULL;
                *dt = w;
                dt = &w->next;
            } else {
                pp = &w->next;
            }
        }
        st->kv_wait_tail = pp;
    }
    again = st->kv_wait != NULL;
    pthread_mutex_unlock(&st->lock);
    if (again && err != GT_ESHUTDOWN)
        st_flusher_kick(st); /* a later record, or the log was swapped */
    while (done) {
        struct st_kvw *next = done->next;
        done->cb(done->arg, err);
        free(done);
        done = next;
    }
}

/* ---- the operations ---------------------------------------------------- */
static bool ns_ok(const char *ns)
{
    size_t n = ns ? strnlen(ns, ST_META_NS_MAX + 1) : 0;
    return n >= 1 && n <= ST_META_NS_MAX &&
           strspn(ns, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                      "0123456789_.-") == n;
}

/* The composite key ns NUL key[0..len) into buf (ST_META_NS_MAX + 1 +
 * ST_META_KEY_MAX bytes); its length. */
static uint32_t composite(uint8_t *buf, const char *ns, const void *key,
                          uint32_t len)
{
    size_t n = strlen(ns);
    memcpy(buf, ns, n + 1);
    if (len)
        memcpy(buf + n + 1, key, len);
    return (uint32_t)(n + 1 + len);
}

#define KV_BUF (ST_META_NS_MAX + 1 + ST_META_KEY_MAX)

static void kv_change(st_local_t *st, const char *ns, const void *key,
                      uint32_t key_len, const void *value, uint32_t value_len,
                      bool del, st_done_cb cb, void *arg)
{
    uint8_t kb[KV_BUF];
    struct st_kvw *w = NULL;
    gt_err_t rc = GT_OK;
    if (!ns_ok(ns) || !key || key_len < 1 || key_len > ST_META_KEY_MAX ||
        value_len > ST_META_VALUE_MAX || (value_len && !value)) {
        cb(arg, GT_EINVAL);
        return;
    }
    uint32_t kn = composite(kb, ns, key, key_len);
    bool sync = st->cfg.flush == ST_FLUSH_SYNC;
    if (sync && !(w = calloc(1, sizeof(*w)))) {
        cb(arg, GT_ENOMEM);
        return;
    }
    pthread_mutex_lock(&st->lock);
    size_t i = kv_bound(st, kb, kn, false);
    bool found = i < st->nkv &&
                 kv_cmp(st->kv[i]->b, st->kv[i]->kv_len, kb, kn) == 0;
    uint64_t after = st->kv_bytes + (del ? 0 : kn + value_len) -
                     (found ? st->kv[i]->kv_len + st->kv[i]->val_len : 0);
    if (st->closing)
        rc = GT_ESHUTDOWN;
    else if (del && !found)
        rc = GT_ENOTFOUND;
    else if (!del && after > ST_META_TOTAL_MAX)
        rc = GT_ENOSPC;
    if (rc == GT_OK) {
        st_srec_t r = {.type = del ? ST_SR_META_DEL : ST_SR_META_PUT,
                       .kv = kb, .kv_len = kn, .val = value,
                       .val_len = del ? 0 : value_len};
        /* the record first: a change that cannot be logged is not made;
         * applying then fails only for memory, and a failed put leaves
         * the logged record to the next start (a redo of the put) */
        rc = st_state_log_kv(st, &r);
        if (rc == GT_OK) {
            st->kv_seq++;
            rc = st_kv_apply(st, kb, kn, value, value_len, del);
        }
    }
    if (rc == GT_OK && w) {
        w->seq = st->kv_seq;
        w->cb = cb;
        w->arg = arg;
        if (!st->kv_wait_tail)
            st->kv_wait_tail = &st->kv_wait;
        *st->kv_wait_tail = w;
        st->kv_wait_tail = &w->next;
    }
    pthread_mutex_unlock(&st->lock);
    if (rc == GT_OK && w) {
        st_flusher_kick(st);
        return;
    }
    free(w);
    cb(arg, rc);
}

void st_meta_put_local(st_store_t *s, const char *ns, const void *key,
                       uint32_t key_len, const void *value, uint32_t value_len,
                       st_done_cb cb, void *arg)
{
    kv_change((st_local_t *)s, ns, key, key_len, value, value_len, false, cb,
              arg);
}

void st_meta_del_local(st_store_t *s, const char *ns, const void *key,
                       uint32_t key_len, st_done_cb cb, void *arg)
{
    kv_change((st_local_t *)s, ns, key, key_len, NULL, 0, true, cb, arg);
}

void st_meta_list_local(st_store_t *s, const st_meta_list_req_t *req,
                        st_meta_list_cb cb, void *arg)
{
    st_local_t *st = (st_local_t *)s;
    uint8_t pb[KV_BUF], ab[KV_BUF];
    if (!req || !ns_ok(req->ns) || req->prefix_len > ST_META_KEY_MAX ||
        req->after_len > ST_META_KEY_MAX ||
        (req->prefix_len && !req->prefix) || (req->after_len && !req->after)) {
        cb(arg, GT_EINVAL, NULL, 0, false);
        return;
    }
    uint32_t max = req->max && req->max < ST_META_LIST_MAX ? req->max
                                                            : ST_META_LIST_MAX;
    uint32_t nslen = (uint32_t)strlen(req->ns) + 1;
    uint32_t pn = composite(pb, req->ns, req->prefix, req->prefix_len);
    st_meta_rec_t *recs = NULL;
    uint8_t *data = NULL;
    size_t n = 0, bytes = 0;
    bool more = false;
    gt_err_t rc = GT_OK;
    pthread_mutex_lock(&st->lock);
    size_t i = kv_bound(st, pb, pn, false);
    if (req->after_len) {
        uint32_t an = composite(ab, req->ns, req->after, req->after_len);
        size_t j = kv_bound(st, ab, an, true);
        if (j > i)
            i = j;
    }
    size_t end = i;
    while (end < st->nkv) { /* the answer: count and size it first */
        const st_kv_ent_t *e = st->kv[end];
        if (e->kv_len < pn || memcmp(e->b, pb, pn) != 0)
            break;
        size_t z = e->kv_len - nslen + e->val_len;
        if (n == max || (n > 0 && bytes + z > ST_META_LIST_BYTES)) {
            more = true;
            break;
        }
        bytes += z;
        n++;
        end++;
    }
    if (n && (!(recs = calloc(n, sizeof(*recs))) ||
              !(data = malloc(bytes ? bytes : 1))))
        rc = GT_ENOMEM;
    for (size_t k = 0, off = 0; rc == GT_OK && k < n; k++) {
        const st_kv_ent_t *e = st->kv[i + k];
        uint32_t kl = e->kv_len - nslen;
        memcpy(data + off, e->b + nslen, kl);
        recs[k].key = data + off;
        recs[k].key_len = kl;
        off += kl;
        if (e->val_len)
            memcpy(data + off, e->b + e->kv_len, e->val_len);
        recs[k].value = data + off;
        recs[k].value_len = e->val_len;
        off += e->val_len;
    }
    pthread_mutex_unlock(&st->lock);
    if (rc == GT_OK)
        cb(arg, GT_OK, recs, n, more);
    else
        cb(arg, rc, NULL, 0, false);
    free(recs);
    free(data);
}
