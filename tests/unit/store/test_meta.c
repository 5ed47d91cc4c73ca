/* Durable metadata records (st_meta_put / st_meta_del / st_meta_list):
 * binary keys up to ST_META_KEY_MAX, values up to ST_META_VALUE_MAX,
 * ordered listing by prefix with pages, bad input refused, and durability:
 * kept across a close, a state log compaction and a SIGKILL; in sync mode
 * a put completes only after an fdatasync of the state log.  Also through
 * the late decorator (answers copied, delivered on a foreign thread). */
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tu.h"

static tu_kv_t *list_all(st_store_t *st, const char *ns, const char *prefix,
                         size_t *n)
{
    st_meta_list_req_t req = {.ns = ns, .prefix = prefix,
                              .prefix_len = prefix ? (uint32_t)strlen(prefix)
                                                   : 0};
    tu_kv_t *kv = NULL;
    bool more = true;
    CU_ASSERT_EQUAL(tu_meta_list(st, &req, &kv, n, &more), GT_OK);
    CU_ASSERT_FALSE(more);
    return kv;
}

static bool has(const tu_kv_t *kv, size_t n, const char *key,
                const char *value)
{
    for (size_t i = 0; i < n; i++)
        if (kv[i].key_len == strlen(key) && !memcmp(kv[i].key, key, kv[i].key_len))
            return kv[i].value_len == strlen(value) &&
                   !memcmp(kv[i].value, value, kv[i].value_len);
    return false;
}

static void test_basic(void)
{
    char *dir = tu_tmpdir("meta_basic");
    st_store_t *st = tu_open(dir, ST_FLUSH_SYNC);
    size_t n;
    tu_kv_t *kv;

    CU_ASSERT_EQUAL(tu_meta_put(st, "amqp.q", "/\0q2", 4, "two", 3), GT_OK);
    CU_ASSERT_EQUAL(tu_meta_put(st, "amqp.q", "/\0q1", 4, "one", 3), GT_OK);
    CU_ASSERT_EQUAL(tu_meta_put(st, "amqp.q", "v2\0q1", 5, "", 0), GT_OK);
    CU_ASSERT_EQUAL(tu_meta_put(st, "amqp.x", "/\0x", 3, "ex", 2), GT_OK);
    CU_ASSERT_EQUAL(tu_meta_put(st, "amqp", "/\0q1", 4, "other ns", 8), GT_OK);
    /* replace */
    CU_ASSERT_EQUAL(tu_meta_put(st, "amqp.q", "/\0q1", 4, "uno", 3), GT_OK);

    kv = list_all(st, "amqp.q", NULL, &n);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    CU_ASSERT(kv[0].key_len == 4 && !memcmp(kv[0].key, "/\0q1", 4));
    CU_ASSERT(kv[0].value_len == 3 && !memcmp(kv[0].value, "uno", 3));
    CU_ASSERT(kv[1].key_len == 4 && !memcmp(kv[1].key, "/\0q2", 4));
    CU_ASSERT(kv[2].key_len == 5 && kv[2].value_len == 0);
    tu_kv_free(kv, n);

    st_meta_list_req_t req = {.ns = "amqp.q", .prefix = "/\0", .prefix_len = 2};
    bool more;
    CU_ASSERT_EQUAL(tu_meta_list(st, &req, &kv, &n, &more), GT_OK);
    CU_ASSERT_EQUAL(n, 2);
    tu_kv_free(kv, n);
    kv = list_all(st, "amqp", NULL, &n); /* not amqp.q's records */
    CU_ASSERT_EQUAL(n, 1);
    tu_kv_free(kv, n);
    kv = list_all(st, "none", NULL, &n);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_PTR_NULL(kv);

    CU_ASSERT_EQUAL(tu_meta_del(st, "amqp.q", "/\0q2", 4), GT_OK);
    CU_ASSERT_EQUAL(tu_meta_del(st, "amqp.q", "/\0q2", 4), GT_ENOTFOUND);
    CU_ASSERT_EQUAL(tu_meta_del(st, "amqp.x", "/\0q1", 4), GT_ENOTFOUND);
    kv = list_all(st, "amqp.q", NULL, &n);
    CU_ASSERT_EQUAL(n, 2);
    tu_kv_free(kv, n);

    /* limits: a 600-byte key and a 64 KiB value; one more byte of either
     * is refused, as are bad namespaces and empty keys */
    static uint8_t big[ST_META_VALUE_MAX + 1];
    uint8_t key[ST_META_KEY_MAX + 1];
    memset(big, 0xab, sizeof(big));
    memset(key, 0xc3, sizeof(key));
    CU_ASSERT_EQUAL(tu_meta_put(st, "big", key, 600, big, ST_META_VALUE_MAX),
                    GT_OK);
    CU_ASSERT_EQUAL(tu_meta_put(st, "big", key, ST_META_KEY_MAX, "v", 1), GT_OK);
    CU_ASSERT_EQUAL(tu_meta_put(st, "big", key, ST_META_KEY_MAX + 1, "v", 1),
                    GT_EINVAL);
    CU_ASSERT_EQUAL(tu_meta_put(st, "big", key, 1, big, ST_META_VALUE_MAX + 1),
                    GT_EINVAL);
    CU_ASSERT_EQUAL(tu_meta_put(st, "big", key, 0, "v", 1), GT_EINVAL);
    CU_ASSERT_EQUAL(tu_meta_put(st, "", key, 1, "v", 1), GT_EINVAL);
    CU_ASSERT_EQUAL(tu_meta_put(st, NULL, key, 1, "v", 1), GT_EINVAL);
    CU_ASSERT_EQUAL(tu_meta_put(st, "a/b", key, 1, "v", 1), GT_EINVAL);
    char longns[ST_META_NS_MAX + 2];
    memset(longns, 'n', sizeof(longns) - 1);
    longns[ST_META_NS_MAX + 1] = 0;
    CU_ASSERT_EQUAL(tu_meta_put(st, longns, key, 1, "v", 1), GT_EINVAL);
    longns[ST_META_NS_MAX] = 0;
    CU_ASSERT_EQUAL(tu_meta_put(st, longns, key, 1, "v", 1), GT_OK);
    CU_ASSERT_EQUAL(tu_meta_del(st, "big", key, 0), GT_EINVAL);
    req = (st_meta_list_req_t){.ns = "big", .prefix_len = 3};
    CU_ASSERT_EQUAL(tu_meta_list(st, &req, &kv, &n, &more), GT_EINVAL);
    kv = list_all(st, "big", NULL, &n);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_EQUAL(kv[0].key_len, 600); /* a prefix sorts first */
    CU_ASSERT_EQUAL(kv[0].value_len, ST_META_VALUE_MAX);
    CU_ASSERT(kv[0].value[0] == 0xab && kv[0].value[ST_META_VALUE_MAX - 1] == 0xab);
    tu_kv_free(kv, n);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

/* Pages: max records per answer, and ST_META_LIST_BYTES. */
static void test_pages(void)
{
    char *dir = tu_tmpdir("meta_pages");
    st_store_t *st = tu_open(dir, ST_FLUSH_ASYNC);
    static uint8_t val[ST_META_VALUE_MAX];
    char key[32];
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "k%03d", i);
        CU_ASSERT_EQUAL(tu_meta_put(st, "p", key, 4, val, sizeof(val)), GT_OK);
    }
    size_t total = 0, n, pages = 0;
    bool more = true;
    char after[8] = "";
    while (more) {
        st_meta_list_req_t req = {.ns = "p", .after = after,
                                  .after_len = (uint32_t)strlen(after),
                                  .max = 30};
        tu_kv_t *kv;
        CU_ASSERT_EQUAL_FATAL(tu_meta_list(st, &req, &kv, &n, &more), GT_OK);
        CU_ASSERT(n >= 1 && n <= 30);
        /* 64 KiB values: the byte bound stops a page before 30 */
        CU_ASSERT(n * (4 + sizeof(val)) <= ST_META_LIST_BYTES);
        for (size_t i = 0; i < n; i++) {
            snprintf(key, sizeof(key), "k%03zu", total + i);
            CU_ASSERT(kv[i].key_len == 4 && !memcmp(kv[i].key, key, 4));
        }
        if (n)
            memcpy(after, kv[n - 1].key, 4);
        after[4] = 0;
        total += n;
        pages++;
        tu_kv_free(kv, n);
        if (pages > 100)
            break;
    }
    CU_ASSERT_EQUAL(total, 100);
    CU_ASSERT(pages >= 2);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

/* Close + reopen, then a compaction + reopen (the compacted image carries
 * the records), in both flush modes. */
static void test_reopen(void)
{
    for (int mode = 0; mode < 2; mode++) {
        st_flush_t fl = mode ? ST_FLUSH_ASYNC : ST_FLUSH_SYNC;
        char *dir = tu_tmpdir("meta_reopen");
        st_store_t *st = tu_open(dir, fl);
        size_t n;
        tu_kv_t *kv;
        CU_ASSERT_EQUAL(tu_topic(st, "T", 2), GT_OK);
        CU_ASSERT_EQUAL(tu_meta_put(st, "ns", "a", 1, "1", 1), GT_OK);
        CU_ASSERT_EQUAL(tu_meta_put(st, "ns", "b", 1, "2", 1), GT_OK);
        CU_ASSERT_EQUAL(tu_meta_put(st, "ns", "c", 1, "3", 1), GT_OK);
        CU_ASSERT_EQUAL(tu_meta_del(st, "ns", "b", 1), GT_OK);
        CU_ASSERT_EQUAL(tu_meta_put(st, "ns", "a", 1, "11", 2), GT_OK);
        st_close(st);
        st = tu_open(dir, fl);
        kv = list_all(st, "ns", NULL, &n);
        CU_ASSERT_EQUAL(n, 2);
        CU_ASSERT(has(kv, n, "a", "11") && has(kv, n, "c", "3"));
        tu_kv_free(kv, n);
        st_local_state_compact(st);
        CU_ASSERT_EQUAL(tu_meta_put(st, "ns", "d", 1, "4", 1), GT_OK);
        st_close(st);
        st = tu_open(dir, fl);
        kv = list_all(st, "ns", NULL, &n);
        CU_ASSERT_EQUAL(n, 3);
        CU_ASSERT(has(kv, n, "a", "11") && has(kv, n, "c", "3") &&
                  has(kv, n, "d", "4"));
        tu_kv_free(kv, n);
        st_topic_t t;
        (void)t;
        st_close(st);
        tu_rmrf(dir);
        free(dir);
    }
}

/* ---- sync mode: the callback comes after an fdatasync of state.log ---- */
static char sync_dir[4096];
static _Atomic int state_syncs;

static int f_open(void *ctx, const char *path, int flags, int mode)
{
    return st_posix_file_ops.open(ctx, path, flags, mode);
}

static int f_sync(void *ctx, int fd)
{
    struct stat a, b;
    char p[4200];
    snprintf(p, sizeof(p), "%s/state.log", sync_dir);
    int r = st_posix_file_ops.fdatasync(ctx, fd);
    if (r == 0 && fstat(fd, &a) == 0 && stat(p, &b) == 0 &&
        a.st_ino == b.st_ino && a.st_dev == b.st_dev)
        atomic_fetch_add(&state_syncs, 1);
    return r;
}

typedef struct seen {
    pthread_mutex_t m;
    pthread_cond_t c;
    bool done;
    gt_err_t err;
    int syncs_at_cb;
} seen_t;

static void seen_cb(void *arg, gt_err_t err)
{
    seen_t *s = arg;
    pthread_mutex_lock(&s->m);
    s->syncs_at_cb = atomic_load(&state_syncs);
    s->err = err;
    s->done = true;
    pthread_cond_signal(&s->c);
    pthread_mutex_unlock(&s->m);
}

static void test_sync_durable(void)
{
    char *dir = tu_tmpdir("meta_sync");
    st_file_ops_t fops = st_posix_file_ops;
    fops.open = f_open;
    fops.fdatasync = f_sync;
    snprintf(sync_dir, sizeof(sync_dir), "%s", dir);
    st_config_t c;
    tu_config(&c, dir, ST_FLUSH_SYNC);
    c.flush_interval_ms = 3600 * 1000; /* only the put's kick syncs */
    c.file_ops = &fops;
    st_store_t *st = NULL;
    CU_ASSERT_EQUAL_FATAL(tu_open_cfg(&c, &st), GT_OK);
    for (int i = 0; i < 3; i++) {
        seen_t s = {.done = false};
        pthread_mutex_init(&s.m, NULL);
        pthread_cond_init(&s.c, NULL);
        int before = atomic_load(&state_syncs);
        if (i < 2)
            st_meta_put(st, "ns", "k", 1, "v", 1, seen_cb, &s);
        else
            st_meta_del(st, "ns", "k", 1, seen_cb, &s);
        pthread_mutex_lock(&s.m);
        while (!s.done)
            pthread_cond_wait(&s.c, &s.m);
        pthread_mutex_unlock(&s.m);
        CU_ASSERT_EQUAL(s.err, GT_OK);
        CU_ASSERT(s.syncs_at_cb > before);
        pthread_mutex_destroy(&s.m);
        pthread_cond_destroy(&s.c);
    }
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

/* ---- SIGKILL: every put and delete reported done is there ---- */
#define CRASH_N 300

static void test_crash(void)
{
    char *dir = tu_tmpdir("meta_crash");
    int fds[2];
    CU_ASSERT_EQUAL_FATAL(pipe(fds), 0);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        st_store_t *st = tu_open(dir, ST_FLUSH_SYNC);
        char key[600], val[64];
        memset(key, 'q', sizeof(key));
        for (int i = 0; i < CRASH_N; i++) {
            snprintf(key, 16, "%05d", i);
            snprintf(val, sizeof(val), "v%d", i);
            if (tu_meta_put(st, "amqp.queue", key, sizeof(key), val,
                            (uint32_t)strlen(val)) != GT_OK)
                _exit(3);
            if (i % 3 == 0 && tu_meta_del(st, "amqp.queue", key,
                                          sizeof(key)) != GT_OK)
                _exit(3);
            if (write(fds[1], &i, sizeof(i)) != (ssize_t)sizeof(i))
                _exit(4);
        }
        for (;;) /* killed here, or earlier by the parent */
            pause();
    }
    close(fds[1]);
    int last = -1, v;
    while (last < CRASH_N / 2 && read(fds[0], &v, sizeof(v)) == sizeof(v))
        last = v;
    kill(pid, SIGKILL);
    while (read(fds[0], &v, sizeof(v)) == sizeof(v)) /* already reported */
        last = v;
    int status;
    waitpid(pid, &status, 0);
    CU_ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    close(fds[0]);
    st_store_t *st = tu_open(dir, ST_FLUSH_SYNC);
    size_t n;
    tu_kv_t *kv = list_all(st, "amqp.queue", NULL, &n);
    int found = 0;
    for (int i = 0; i <= last; i++) {
        char key[600], val[64];
        memset(key, 'q', sizeof(key));
        snprintf(key, 16, "%05d", i);
        snprintf(val, sizeof(val), "v%d", i);
        bool there = false;
        for (size_t k = 0; k < n; k++)
            there = there || (kv[k].key_len == sizeof(key) &&
                              !memcmp(kv[k].key, key, sizeof(key)) &&
                              kv[k].value_len == strlen(val) &&
                              !memcmp(kv[k].value, val, strlen(val)));
        CU_ASSERT_EQUAL(there, i % 3 != 0);
        found += there;
    }
    CU_ASSERT(n >= (size_t)found && n <= (size_t)found + 1); /* + in flight */
    tu_kv_free(kv, n);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

/* Damage in a state log holding metadata records (a flipped bit, a cut
 * tail): the start never crashes, refuses only a bad header, and what it
 * keeps are records as they were put, never altered ones. */
static void test_flips(void)
{
    char *src = tu_tmpdir("meta_fsrc"), *dir = tu_tmpdir("meta_flip");
    char p[1200];
    static uint8_t val[3000];
    st_store_t *st = tu_open(src, ST_FLUSH_ASYNC);
    CU_ASSERT_EQUAL_FATAL(tu_topic(st, "T", 1), GT_OK);
    for (int i = 0; i < 30; i++) {
        char key[16];
        snprintf(key, sizeof(key), "key%02d", i);
        memset(val, 'a' + i % 26, sizeof(val));
        CU_ASSERT_EQUAL(tu_meta_put(st, "ns", key, 5, val, (uint32_t)(i * 100)),
                        GT_OK);
    }
    st_close(st);
    size_t len;
    snprintf(p, sizeof(p), "%s/state.log", src);
    uint8_t *state = tu_read_file(p, &len), *copy = malloc(len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(state);
    unsigned seed = 11;
    for (int run = 0; run < 120; run++) {
        size_t clen = len;
        memcpy(copy, state, len);
        if (run % 4 == 3)
            clen = (size_t)rand_r(&seed) % len; /* a cut tail */
        else
            copy[rand_r(&seed) % len] ^= (uint8_t)(1 << (rand_r(&seed) % 8));
        tu_rmrf(dir);
        mkdir(dir, 0755);
        snprintf(p, sizeof(p), "%s/state.log", dir);
        tu_write_file(p, copy, clen);
        st_config_t c;
        tu_config(&c, dir, ST_FLUSH_ASYNC);
        gt_err_t rc = st_local_open(&c, &st);
        if (rc != GT_OK) {
            CU_ASSERT_EQUAL(rc, GT_ECORRUPT);
            continue;
        }
        size_t n;
        tu_kv_t *kv = list_all(st, "ns", NULL, &n);
        CU_ASSERT(n <= 30);
        for (size_t k = 0; k < n; k++) {
            int i = -1;
            if (kv[k].key_len == 5 && sscanf((char *)kv[k].key, "key%2d", &i) == 1 &&
                i >= 0 && i < 30) {
                bool same = kv[k].value_len == (uint32_t)(i * 100);
                for (uint32_t b = 0; same && b < kv[k].value_len; b++)
                    same = kv[k].value[b] == 'a' + i % 26;
                CU_ASSERT(same);
            } else {
                CU_FAIL("a record that was never put");
            }
        }
        tu_kv_free(kv, n);
        st_close(st);
    }
    free(state);
    free(copy);
    tu_rmrf(src);
    tu_rmrf(dir);
    free(src);
    free(dir);
}

/* Through st_late_open (a network store's timing): answers are copies. */
static void test_late(void)
{
    char *dir = tu_tmpdir("meta_late");
    st_store_t *st = NULL;
    CU_ASSERT_EQUAL_FATAL(st_late_open(tu_open(dir, ST_FLUSH_SYNC), 2000, 3,
                                       &st), GT_OK);
    CU_ASSERT_EQUAL(tu_meta_put(st, "ns", "k1", 2, "v1", 2), GT_OK);
    CU_ASSERT_EQUAL(tu_meta_put(st, "ns", "k2", 2, "v2", 2), GT_OK);
    CU_ASSERT_EQUAL(tu_meta_del(st, "ns", "k3", 2), GT_ENOTFOUND);
    size_t n;
    tu_kv_t *kv = list_all(st, "ns", "k", &n);
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT(has(kv, n, "k1", "v1") && has(kv, n, "k2", "v2"));
    tu_kv_free(kv, n);
    st_close(st);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    static const CU_TestInfo tests[] = {
        {"put, replace, delete, list by prefix, limits", test_basic},
        {"pages by max and bytes", test_pages},
        {"kept across reopen and compaction", test_reopen},
        {"sync mode: done after an fdatasync of state.log", test_sync_durable},
        {"SIGKILL keeps every completed put and delete", test_crash},
        {"damaged state log: no crash, no altered record", test_flips},
        {"through the late decorator", test_late},
        CU_TEST_INFO_NULL,
    };
    return tu_run("store_meta", tests);
}
