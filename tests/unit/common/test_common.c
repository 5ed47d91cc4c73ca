/* Unit tests for common/: HOST:PORT parsing (gt_addr) and little-endian
 * helpers (gt_le). */
#include <string.h>

#include <CUnit/Basic.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gt_addr.h"
#include "gt_du.h"
#include "gt_le.h"
#include "gt_tagexpr.h"

static const char *bad(const char *s, int def)
{
    gt_hostport_t hp;
    const char *why = NULL;
    return gt_hostport_parse(s, def, &hp, &why) == GT_OK ? NULL : why;
}

static void test_hostport(void)
{
    gt_hostport_t hp;
    const char *why;

    CU_ASSERT_EQUAL(gt_hostport_parse("0.0.0.0:8081", 0, &hp, &why), GT_OK);
    CU_ASSERT_STRING_EQUAL(hp.host, "0.0.0.0");
    CU_ASSERT_EQUAL(hp.port, 8081);
    CU_ASSERT_FALSE(hp.ipv6);
    CU_ASSERT_EQUAL(gt_hostport_parse("[::1]:5557", 0, &hp, &why), GT_OK);
    CU_ASSERT_STRING_EQUAL(hp.host, "::1");
    CU_ASSERT_EQUAL(hp.port, 5557);
    CU_ASSERT_TRUE(hp.ipv6);
    CU_ASSERT_EQUAL(gt_hostport_parse("my-host.example_1:65535", 0, &hp, &why), GT_OK);
    CU_ASSERT_EQUAL(hp.port, 65535);
    /* default port (a client's :authority) */
    CU_ASSERT_EQUAL(gt_hostport_parse("localhost", 8081, &hp, &why), GT_OK);
    CU_ASSERT_STRING_EQUAL(hp.host, "localhost");
    CU_ASSERT_EQUAL(hp.port, 8081);
    CU_ASSERT_EQUAL(gt_hostport_parse("[fe80::1]", 8081, &hp, &why), GT_OK);
    CU_ASSERT_STRING_EQUAL(hp.host, "fe80::1");
    /* the config's reasons */
    CU_ASSERT_STRING_EQUAL(bad("localhost", 0), "missing \":PORT\"");
    CU_ASSERT_STRING_EQUAL(bad(":8081", 0), "empty host");
    CU_ASSERT_STRING_EQUAL(bad("[]:8081", 0), "empty host");
    CU_ASSERT_STRING_EQUAL(bad("[::1:8081", 0), "missing ']' after the IPv6 address");
    CU_ASSERT_STRING_EQUAL(bad("[::1]", 0), "missing \":PORT\"");
    CU_ASSERT_STRING_EQUAL(bad("[::1]x", 8081), "missing \":PORT\"");
    CU_ASSERT_STRING_EQUAL(bad("[::g]:1", 0), "bad character in IPv6 address");
    CU_ASSERT_STRING_EQUAL(bad("::1:8081", 0), "IPv6 addresses need brackets, e.g. [::1]:8081");
    CU_ASSERT_STRING_EQUAL(bad("a b:1", 0), "bad character in host");
    CU_ASSERT_STRING_EQUAL(bad("h:", 0), "empty port");
    CU_ASSERT_STRING_EQUAL(bad("h:0", 0), "port must be a number 1..65535");
    CU_ASSERT_STRING_EQUAL(bad("h:65536", 0), "port must be a number 1..65535");
    CU_ASSERT_STRING_EQUAL(bad("h:123456", 0), "port must be a number 1..65535");
    CU_ASSERT_STRING_EQUAL(bad("h:8x", 0), "port must be a number 1..65535");
    char longhost[300];
    memset(longhost, 'a', sizeof(longhost));
    strcpy(longhost + 290, ":1");
    CU_ASSERT_STRING_EQUAL(bad(longhost, 0), "host too long");
}

static void test_le(void)
{
    uint8_t b[8];

    gt_le32_put(b, 0x11223344u);
    CU_ASSERT_EQUAL(b[0], 0x44);
    CU_ASSERT_EQUAL(b[3], 0x11);
    CU_ASSERT_EQUAL(gt_le32_get(b), 0x11223344u);
    gt_le64_put(b, 0x0102030405060708ull);
    CU_ASSERT_EQUAL(b[0], 0x08);
    CU_ASSERT_EQUAL(b[7], 0x01);
    CU_ASSERT_EQUAL(gt_le64_get(b), 0x0102030405060708ull);
    gt_le16_put(b, 0xbeef);
    CU_ASSERT_EQUAL(gt_le16_get(b), 0xbeef);
    gt_le_put(b, 0xabcdef, 3);
    CU_ASSERT_EQUAL(gt_le_get(b, 3), 0xabcdef);
}

static void test_tagexpr(void)
{
    gt_tagexpr_t t;

    CU_ASSERT_EQUAL(gt_tagexpr_parse(NULL, &t), GT_OK);
    CU_ASSERT_TRUE(t.all);
    gt_tagexpr_free(&t);
    CU_ASSERT_EQUAL(gt_tagexpr_parse(" * ", &t), GT_OK);
    CU_ASSERT_TRUE(t.all);
    gt_tagexpr_free(&t);
    CU_ASSERT_EQUAL(gt_tagexpr_parse("a || b||c ", &t), GT_OK);
    CU_ASSERT_FALSE(t.all);
    CU_ASSERT_EQUAL(t.n, 3);
    CU_ASSERT_TRUE(gt_tagexpr_match(&t, "b"));
    CU_ASSERT_TRUE(gt_tagexpr_match(&t, "c"));
    CU_ASSERT_FALSE(gt_tagexpr_match(&t, "d"));
    CU_ASSERT_FALSE(gt_tagexpr_match(&t, NULL));
    CU_ASSERT_TRUE(gt_tagexpr_match_hash(&t, gt_hash32("a")));
    CU_ASSERT_FALSE(gt_tagexpr_match_hash(&t, gt_hash32("ab")));
    gt_tagexpr_free(&t);
    /* empty tags are skipped, a "*" among tags matches all */
    CU_ASSERT_EQUAL(gt_tagexpr_parse("a|| ||b||||", &t), GT_OK);
    CU_ASSERT_EQUAL(t.n, 2);
    gt_tagexpr_free(&t);
    CU_ASSERT_EQUAL(gt_tagexpr_parse("a||*", &t), GT_OK);
    CU_ASSERT_TRUE(gt_tagexpr_match(&t, "zzz"));
    gt_tagexpr_free(&t);
    CU_ASSERT_EQUAL(gt_hash32(""), 2166136261u);
    CU_ASSERT_EQUAL(gt_hash32("a"), 0xe40c292cu);
    /* the client rule */
    CU_ASSERT_EQUAL(gt_tagexpr_check(""), GT_OK);
    CU_ASSERT_EQUAL(gt_tagexpr_check(" * "), GT_OK);
    CU_ASSERT_EQUAL(gt_tagexpr_check("a"), GT_OK);
    CU_ASSERT_EQUAL(gt_tagexpr_check("\ta || b "), GT_OK);
    CU_ASSERT_EQUAL(gt_tagexpr_check("a||"), GT_EINVAL);
    CU_ASSERT_EQUAL(gt_tagexpr_check("a|| ||b"), GT_EINVAL);
    CU_ASSERT_EQUAL(gt_tagexpr_check("||"), GT_EINVAL);
    CU_ASSERT_EQUAL(gt_tagexpr_check("a\x01"), GT_EINVAL);
    CU_ASSERT_EQUAL(gt_tagexpr_check("a||b\n"), GT_EINVAL);
}

/* A file of n bytes at path; returns the blocks it takes (st_blocks * 512). */
static uint64_t du_file(const char *path, size_t n)
{
    char buf[4096];
    struct stat sb;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

    memset(buf, 'x', sizeof(buf));
    CU_ASSERT_FATAL(fd >= 0);
    for (size_t done = 0; done < n; done += sizeof(buf))
        CU_ASSERT(write(fd, buf, n - done < sizeof(buf) ? n - done : sizeof(buf)) > 0);
    CU_ASSERT(fsync(fd) == 0);
    close(fd);
    CU_ASSERT_FATAL(stat(path, &sb) == 0);
    return (uint64_t)sb.st_blocks * 512;
}

typedef struct du_arg {
    const char *dir;
    uint64_t want;
    int bad;
} du_arg_t;

static void *du_thread(void *arg)
{
    du_arg_t *a = arg;

    for (int i = 0; i < 200; i++)
        if (gt_du_bytes(a->dir) != a->want)
            a->bad++;
    return NULL;
}

/* gt_du_bytes: files at every level, symbolic links not followed, a
 * missing directory 0; two threads measuring two trees at once each get
 * their own tree's sum (what a shared accumulator would mix). */
static void test_du(void)
{
    char root[] = "/tmp/gt-du-XXXXXX", a[64], b[64], p[128];
    du_arg_t x, y;
    pthread_t t1, t2;
    uint64_t wa = 0, wb = 0;

    CU_ASSERT_FATAL(mkdtemp(root) != NULL);
    snprintf(a, sizeof(a), "%s/a", root);
    snprintf(b, sizeof(b), "%s/b", root);
    CU_ASSERT_FATAL(mkdir(a, 0755) == 0 && mkdir(b, 0755) == 0);
    snprintf(p, sizeof(p), "%s/sub", a);
    CU_ASSERT_FATAL(mkdir(p, 0755) == 0);
    snprintf(p, sizeof(p), "%s/f1", a);
    wa += du_file(p, 100000);
    snprintf(p, sizeof(p), "%s/sub/f2", a);
    wa += du_file(p, 8192);
    snprintf(p, sizeof(p), "%s/loop", a);
    CU_ASSERT(symlink(root, p) == 0);
    snprintf(p, sizeof(p), "%s/g", b);
    wb += du_file(p, 3 * 1024 * 1024);
    CU_ASSERT(wa > 0 && wb > wa);
    CU_ASSERT_EQUAL(gt_du_bytes(a), wa);
    CU_ASSERT_EQUAL(gt_du_bytes(b), wb);
    CU_ASSERT_EQUAL(gt_du_bytes(root), wa + wb);
    snprintf(p, sizeof(p), "%s/none", root);
    CU_ASSERT_EQUAL(gt_du_bytes(p), 0);

    x = (du_arg_t){a, wa, 0};
    y = (du_arg_t){b, wb, 0};
    CU_ASSERT_FATAL(pthread_create(&t1, NULL, du_thread, &x) == 0);
    CU_ASSERT_FATAL(pthread_create(&t2, NULL, du_thread, &y) == 0);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    CU_ASSERT_EQUAL(x.bad, 0);
    CU_ASSERT_EQUAL(y.bad, 0);

    snprintf(p, sizeof(p), "rm -rf %s", root);
    CU_ASSERT(system(p) == 0);
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("gt_common", NULL, NULL);
    CU_add_test(s, "HOST:PORT", test_hostport);
    CU_add_test(s, "little-endian", test_le);
    CU_add_test(s, "tag expressions", test_tagexpr);
    CU_add_test(s, "du of a tree, concurrent callers", test_du);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int failed = CU_get_number_of_failures() != 0 || CU_get_error() != 0;
    CU_cleanup_registry();
    return failed;
}
