/* Test helpers: temporary directories and blocking wrappers around the
 * store's callback API (each waits on a condition variable for its
 * callback, which may run on a store thread). */
#include "tu.h"
#include "st_pop.h"

#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct waiter {
    pthread_mutex_t m;
    pthread_cond_t c;
    bool done;
    gt_err_t err;
    tu_msg_t *out;
    size_t n, cap;
    uint64_t u64;
    st_append_item_t *items;
    char handle[ST_HANDLE_MAX];
    st_stats_t stats;
    st_group_t *group;
    tu_kv_t *kv;
    bool more;
} waiter_t;

static void w_init(waiter_t *w)
{
    memset(w, 0, sizeof(*w));
    pthread_mutex_init(&w->m, NULL);
    pthread_cond_init(&w->c, NULL);
}

static gt_err_t w_wait(waiter_t *w)
{
    pthread_mutex_lock(&w->m);
    while (!w->done)
        pthread_cond_wait(&w->c, &w->m);
    pthread_mutex_unlock(&w->m);
    pthread_mutex_destroy(&w->m);
    pthread_cond_destroy(&w->c);
    return w->err;
}

static void w_done(waiter_t *w, gt_err_t err)
{
    pthread_mutex_lock(&w->m);
    w->err = err;
    w->done = true;
    pthread_cond_signal(&w->c);
    pthread_mutex_unlock(&w->m);
}

static void copy_msg(tu_msg_t *d, const st_message_t *m)
{
    memset(d, 0, sizeof(*d));
    snprintf(d->topic, sizeof(d->topic), "%s", m->topic ? m->topic : "");
    snprintf(d->tag, sizeof(d->tag), "%s", m->tag ? m->tag : "");
    snprintf(d->id, sizeof(d->id), "%s", m->msg_id ? m->msg_id : "");
    size_t bl = m->body_len < sizeof(d->body) - 1 ? m->body_len
                                                  : sizeof(d->body) - 1;
    memcpy(d->body, m->body, bl);
    for (uint32_t i = 0; i < m->nkeys && i < 4; i++)
        snprintf(d->keys[d->nkeys++], 64, "%s", m->keys[i]);
    for (uint32_t i = 0; i < m->nprops && i < 8; i++) {
        snprintf(d->pk[i], sizeof(d->pk[i]), "%s", m->props[i].key);
        snprintf(d->pv[i], sizeof(d->pv[i]), "%s", m->props[i].value);
        d->nprops++;
    }
    d->queue = (uint32_t)m->queue_id;
    d->offset = m->queue_offset;
    d->position = m->position;
    d->store_ts = m->store_ts_ms;
    d->tx_checks = m->tx_checks;
}

/* ---- files ----------------------------------------------------------------- */
char *tu_tmpdir(const char *name)
{
    const char *base = getenv("TMPDIR");
    char *p = NULL;
    if (!base || !*base)
        base = "/tmp";
    (void)mkdir(base, 0755); /* CTest's TMPDIR (tests/CMakeLists.txt) */
    if (asprintf(&p, "%s/gt-st-%s-XXXXXX", base, name) < 0 || !mkdtemp(p)) {
        perror("mkdtemp");
        abort();
    }
    return p;
}

static int rm_cb(const char *p, const struct stat *sb, int flag,
                 struct FTW *f)
{
    return remove(p);
}

void tu_rmrf(const char *path)
{
    nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

uint8_t *tu_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

void tu_write_file(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    CU_ASSERT_FATAL(f != NULL);
    CU_ASSERT_FATAL(fwrite(buf, 1, len, f) == len);
    fclose(f);
}

void tu_copy_file(const char *from, const char *to)
{
    size_t n;
    uint8_t *b = tu_read_file(from, &n);
    CU_ASSERT_FATAL(b != NULL);
    tu_write_file(to, b, n);
    free(b);
}

long tu_file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

void tu_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- test clock ------------------------------------------------------------ */
static _Atomic int64_t clock_now;

static int64_t clock_fake(void *ctx)
{
    (void)ctx;
    return atomic_load(&clock_now);
}

void tu_clock_start(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    atomic_store(&clock_now, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    st_test_clock(clock_fake, NULL);
}

void tu_clock_stop(void)
{
    st_test_clock(NULL, NULL);
}

void tu_clock_advance(st_store_t *st, int64_t ms)
{
    atomic_fetch_add(&clock_now, ms);
    if (st)
        st_local_clock_settle(st);
}

int64_t tu_clock_now(void)
{
    return st_now_ms();
}

void tu_wait_synced(st_store_t *st)
{
    st_local_t *l = (st_local_t *)st;
    for (;;) {
        pthread_mutex_lock(&l->lock);
        bool done = atomic_load(&l->synced_pos) >= l->published_pos;
        pthread_mutex_unlock(&l->lock);
        if (done)
            return;
        tu_sleep_ms(1);
    }
}

void tu_wait_parked(st_store_t *st, size_t n)
{
    while (st_local_parked(st) != n)
        tu_sleep_ms(1);
}

/* ---- store ----------------------------------------------------------------- */
void tu_config(st_config_t *c, const char *dir, st_flush_t flush)
{
    st_config_init(c);
    c->dir = dir;
    c->flush = flush;
    c->segment_size = 64 * 1024;
    c->max_message_bytes = 16 * 1024;
    c->flush_interval_ms = 20;
}

gt_err_t tu_open_cfg(const st_config_t *c, st_store_t **out)
{
    return st_local_open(c, out);
}

st_store_t *tu_open(const char *dir, st_flush_t flush)
{
    st_config_t c;
    st_store_t *st = NULL;
    tu_config(&c, dir, flush);
    CU_ASSERT_FATAL(st_local_open(&c, &st) == GT_OK);
    return st;
}

static void done_cb(void *arg, gt_err_t err) { w_done(arg, err); }

gt_err_t tu_topic(st_store_t *st, const char *name, uint32_t nq)
{
    waiter_t w;
    st_topic_t t = {.type = ST_TOPIC_NORMAL, .queue_count = nq,
                    .perm = ST_PERM_READ | ST_PERM_WRITE};
    snprintf(t.name, sizeof(t.name), "%s", name);
    w_init(&w);
    st_topic_put(st, &t, done_cb, &w);
    return w_wait(&w);
}

gt_err_t tu_group(st_store_t *st, const char *name, uint32_t max_attempts,
                  st_consume_from_t from)
{
    waiter_t w;
    st_group_t g = {.max_delivery_attempts = max_attempts,
                    .consume_from = from};
    snprintf(g.name, sizeof(g.name), "%s", name);
    w_init(&w);
    st_group_put(st, &g, done_cb, &w);
    return w_wait(&w);
}

gt_err_t tu_fifo_group(st_store_t *st, const char *name)
{
    waiter_t w;
    st_group_t g = {.max_delivery_attempts = 16, .fifo = true};
    snprintf(g.name, sizeof(g.name), "%s", name);
    w_init(&w);
    st_group_put(st, &g, done_cb, &w);
    return w_wait(&w);
}

gt_err_t tu_group_put(st_store_t *st, const st_group_t *g)
{
    waiter_t w;
    w_init(&w);
    st_group_put(st, g, done_cb, &w);
    return w_wait(&w);
}

static void group_cb(void *arg, gt_err_t err, const st_group_t *g, size_t n)
{
    waiter_t *w = arg;
    if (err == GT_OK && n == 1 && w->group)
        *w->group = g[0];
    w_done(w, err);
}

gt_err_t tu_group_get(st_store_t *st, const char *name, st_group_t *out)
{
    waiter_t w;
    w_init(&w);
    w.group = out;
    st_group_get(st, name, group_cb, &w);
    return w_wait(&w);
}

static void append_cb(void *arg, gt_err_t err, const st_append_item_t *items,
                      size_t n)
{
    waiter_t *w = arg;
    if (err == GT_OK && w->items)
        memcpy(w->items, items, n * sizeof(*items));
    w_done(w, err);
}

gt_err_t tu_send_n(st_store_t *st, const char *topic, const st_message_t *m,
                   size_t n, st_append_item_t *items)
{
    waiter_t w;
    w_init(&w);
    w.items = items;
    st_append(st, topic, m, n, append_cb, &w);
    return w_wait(&w);
}

gt_err_t tu_send(st_store_t *st, const char *topic, const char *tag,
                 const char *key, const char *body, int32_t queue,
                 st_append_item_t *item)
{
    st_message_t m;
    memset(&m, 0, sizeof(m));
    m.tag = tag;
    if (key) {
        m.keys[0] = key;
        m.nkeys = 1;
    }
    m.body = body;
    m.body_len = (uint32_t)strlen(body);
    m.queue_id = queue;
    m.born_ts_ms = 1700000000000;
    m.born_host = "127.0.0.1:1234";
    return tu_send_n(st, topic, &m, 1, item);
}

static void pop_cb(void *arg, gt_err_t err, const st_popped_t *msgs, size_t n)
{
    waiter_t *w = arg;
    for (size_t i = 0; i < n && w->n < w->cap; i++) {
        tu_msg_t *d = &w->out[w->n++];
        copy_msg(d, &msgs[i].msg);
        snprintf(d->handle, sizeof(d->handle), "%s", msgs[i].handle);
        d->attempt = msgs[i].attempt;
    }
    w_done(w, err);
}

gt_err_t tu_pop(st_store_t *st, const st_pop_req_t *req, tu_msg_t *out,
                size_t *n)
{
    waiter_t w;
    w_init(&w);
    w.out = out;
    w.cap = req->max;
    st_pop(st, req, pop_cb, &w);
    gt_err_t rc = w_wait(&w);
    *n = w.n;
    return rc;
}

gt_err_t tu_pop_simple(st_store_t *st, const char *group, const char *topic,
                       const char *tags, uint32_t max, int64_t inv_ms,
                       tu_msg_t *out, size_t *n)
{
    st_pop_req_t r = {.group = group, .topic = topic,
                      .queue_id = ST_QUEUE_ANY, .filter_expr = tags, .max = max,
                      .invisible_ms = inv_ms, .poll_timeout_ms = 0};
    return tu_pop(st, &r, out, n);
}

gt_err_t tu_ack(st_store_t *st, const char *group, const char *topic,
                const char *handle)
{
    waiter_t w;
    w_init(&w);
    st_ack(st, group, topic, handle, done_cb, &w);
    return w_wait(&w);
}

typedef struct acks_w {
    waiter_t w;
    gt_err_t *errs;
    size_t cap, n;
} acks_w_t;

static void acks_cb(void *arg, gt_err_t err, const gt_err_t *errs, size_t n)
{
    acks_w_t *a = arg;
    a->n = n;
    for (size_t i = 0; i < n && i < a->cap; i++)
        a->errs[i] = errs[i];
    w_done(&a->w, err);
}

gt_err_t tu_ack_batch(st_store_t *st, const char *group, const char *topic,
                      const char *const *handles, size_t n, gt_err_t *errs,
                      size_t *nres)
{
    acks_w_t a = {.errs = errs, .cap = n};
    w_init(&a.w);
    st_ack_batch(st, group, topic, handles, n, acks_cb, &a);
    gt_err_t rc = w_wait(&a.w);
    if (nres)
        *nres = a.n;
    return rc;
}

gt_err_t tu_release(st_store_t *st, const char *group, const char *topic,
                    const char *handle)
{
    waiter_t w;
    w_init(&w);
    st_release(st, group, topic, handle, done_cb, &w);
    return w_wait(&w);
}

static void handle_cb(void *arg, gt_err_t err, const char *h)
{
    waiter_t *w = arg;
    if (h)
        snprintf(w->handle, sizeof(w->handle), "%s", h);
    w_done(w, err);
}

gt_err_t tu_change(st_store_t *st, const char *group, const char *topic,
                   const char *handle, int64_t ms, char *newh)
{
    waiter_t w;
    w_init(&w);
    st_change_invisible(st, group, topic, handle, ms, handle_cb, &w);
    gt_err_t rc = w_wait(&w);
    if (newh)
        memcpy(newh, w.handle, ST_HANDLE_MAX);
    return rc;
}

static void msgs_cb(void *arg, gt_err_t err, const st_message_t *msgs,
                    size_t n, uint64_t next)
{
    waiter_t *w = arg;
    for (size_t i = 0; i < n && w->n < w->cap; i++)
        copy_msg(&w->out[w->n++], &msgs[i]);
    w->u64 = next;
    w_done(w, err);
}

gt_err_t tu_pull(st_store_t *st, const char *topic, uint32_t q, uint64_t off,
                 uint32_t max, tu_msg_t *out, size_t *n, uint64_t *next)
{
    waiter_t w;
    w_init(&w);
    w.out = out;
    w.cap = max;
    st_pull_req_t r = {.topic = topic, .queue = q, .offset = off, .max = max};
    st_pull(st, &r, msgs_cb, &w);
    gt_err_t rc = w_wait(&w);
    *n = w.n;
    if (next)
        *next = w.u64;
    return rc;
}

static void off_cb(void *arg, gt_err_t err, uint64_t off)
{
    waiter_t *w = arg;
    w->u64 = off;
    w_done(w, err);
}

gt_err_t tu_offset_get(st_store_t *st, const char *g, const char *t,
                       uint32_t q, uint64_t *off)
{
    waiter_t w;
    w_init(&w);
    st_offset_get(st, g, t, q, off_cb, &w);
    gt_err_t rc = w_wait(&w);
    *off = w.u64;
    return rc;
}

gt_err_t tu_offset_update(st_store_t *st, const char *g, const char *t,
                          uint32_t q, uint64_t off)
{
    waiter_t w;
    w_init(&w);
    st_offset_update(st, g, t, q, off, done_cb, &w);
    return w_wait(&w);
}

gt_err_t tu_offset_query(st_store_t *st, const char *t, uint32_t q,
                         st_offset_kind_t k, int64_t ts, uint64_t *off)
{
    waiter_t w;
    w_init(&w);
    st_offset_query(st, t, q, k, ts, off_cb, &w);
    gt_err_t rc = w_wait(&w);
    *off = w.u64;
    return rc;
}

gt_err_t tu_lookup(st_store_t *st, bool by_key, const char *topic,
                   const char *s, tu_msg_t *out, size_t *n)
{
    waiter_t w;
    w_init(&w);
    w.out = out;
    w.cap = ST_POP_MAX;
    if (by_key)
        st_lookup_key(st, topic, s, ST_POP_MAX, msgs_cb, &w);
    else
        st_lookup_id(st, topic, s, msgs_cb, &w);
    gt_err_t rc = w_wait(&w);
    *n = w.n;
    return rc;
}

static void stats_cb(void *arg, gt_err_t err, const st_stats_t *s)
{
    waiter_t *w = arg;
    if (s) {
        w->stats = *s;
        w->stats.queues = NULL;
    }
    w_done(w, err);
}

gt_err_t tu_stats(st_store_t *st, const char *topic, const char *group,
                  st_stats_t *out)
{
    waiter_t w;
    w_init(&w);
    st_stats(st, topic, group, stats_cb, &w);
    gt_err_t rc = w_wait(&w);
    *out = w.stats;
    return rc;
}

int tu_run(const char *suite, const CU_TestInfo *tests)
{
    CU_SuiteInfo suites[] = {{suite, NULL, NULL, NULL, NULL,
                              (CU_TestInfo *)tests},
                             CU_SUITE_INFO_NULL};
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    if (CU_register_suites(suites) != CUE_SUCCESS) {
        CU_cleanup_registry();
        return 2;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() +
                      CU_get_number_of_tests_failed();
    unsigned run = CU_get_number_of_tests_run();
    CU_cleanup_registry();
    return failed || run == 0 ? 1 : 0;
}

/* ---- held messages: transactions, timers, recall ---------------------------- */
gt_err_t tu_send_held(st_store_t *st, const char *topic, const char *body,
                      int64_t delivery_ts, bool half, const char *txcheck,
                      st_append_item_t *item)
{
    st_message_t m;
    memset(&m, 0, sizeof(m));
    m.tag = "h";
    m.keys[0] = body;
    m.nkeys = 1;
    m.body = body;
    m.body_len = (uint32_t)strlen(body);
    m.queue_id = ST_QUEUE_ANY;
    m.delivery_ts_ms = delivery_ts;
    m.tx_half = half;
    m.props[0] = (st_prop_t){"color", "red"};
    m.nprops = 1;
    if (txcheck)
        m.props[m.nprops++] = (st_prop_t){ST_PROP_TXCHECK, txcheck};
    return tu_send_n(st, topic, &m, 1, item);
}

gt_err_t tu_tx_end(st_store_t *st, const char *topic, const char *id,
                   bool commit)
{
    waiter_t w;
    w_init(&w);
    st_tx_end(st, topic, id, commit, done_cb, &w);
    return w_wait(&w);
}

gt_err_t tu_tx_checked(st_store_t *st, const char *topic, const char *id,
                       uint32_t max_checks)
{
    return tu_tx_claim(st, topic, id, ST_TX_CHECKS_ANY, max_checks);
}

gt_err_t tu_tx_claim(st_store_t *st, const char *topic, const char *id,
                     uint32_t seen_checks, uint32_t max_checks)
{
    waiter_t w;
    w_init(&w);
    st_tx_checked(st, topic, id, seen_checks, max_checks, done_cb, &w);
    return w_wait(&w);
}

gt_err_t tu_tx_pending(st_store_t *st, int64_t ms, uint32_t max,
                       tu_msg_t *out, size_t *n)
{
    waiter_t w;
    w_init(&w);
    w.out = out;
    w.cap = max;
    st_tx_pending(st, ms, max, msgs_cb, &w);
    gt_err_t rc = w_wait(&w);
    *n = w.n;
    return rc;
}

gt_err_t tu_recall(st_store_t *st, const char *topic, const char *id)
{
    waiter_t w;
    w_init(&w);
    st_recall(st, topic, id, done_cb, &w);
    return w_wait(&w);
}

/* ---- durable metadata records ---- */
gt_err_t tu_meta_put(st_store_t *st, const char *ns, const void *key,
                     uint32_t key_len, const void *value, uint32_t value_len)
{
    waiter_t w;
    w_init(&w);
    st_meta_put(st, ns, key, key_len, value, value_len, done_cb, &w);
    return w_wait(&w);
}

gt_err_t tu_meta_del(st_store_t *st, const char *ns, const void *key,
                     uint32_t key_len)
{
    waiter_t w;
    w_init(&w);
    st_meta_del(st, ns, key, key_len, done_cb, &w);
    return w_wait(&w);
}

static void *dup_bytes(const void *p, uint32_t n)
{
    uint8_t *d = malloc(n + 1u);
    CU_ASSERT_FATAL(d != NULL);
    if (n)
        memcpy(d, p, n);
    d[n] = 0;
    return d;
}

static void meta_list_cb(void *arg, gt_err_t err, const st_meta_rec_t *recs,
                         size_t n, bool more)
{
    waiter_t *w = arg;
    w->n = n;
    w->more = more;
    w->kv = n ? calloc(n, sizeof(*w->kv)) : NULL;
    for (size_t i = 0; i < n && w->kv; i++) {
        w->kv[i].key = dup_bytes(recs[i].key, recs[i].key_len);
        w->kv[i].key_len = recs[i].key_len;
        w->kv[i].value = dup_bytes(recs[i].value, recs[i].value_len);
        w->kv[i].value_len = recs[i].value_len;
    }
    w_done(w, err);
}

gt_err_t tu_meta_list(st_store_t *st, const st_meta_list_req_t *req,
                      tu_kv_t **out, size_t *n, bool *more)
{
    waiter_t w;
    w_init(&w);
    st_meta_list(st, req, meta_list_cb, &w);
    gt_err_t rc = w_wait(&w);
    *out = w.kv;
    *n = w.n;
    if (more)
        *more = w.more;
    return rc;
}

void tu_kv_free(tu_kv_t *kv, size_t n)
{
    for (size_t i = 0; kv && i < n; i++) {
        free(kv[i].key);
        free(kv[i].value);
    }
    free(kv);
}

gt_err_t tu_send_multi(st_store_t *st, const st_message_t *m,
                       const st_dest_t *dests, size_t n,
                       st_append_item_t *items)
{
    waiter_t w;
    w_init(&w);
    w.items = items;
    st_append_multi(st, m, dests, n, append_cb, &w);
    return w_wait(&w);
}
