/* Pure codecs: record round trip, truncated and corrupt decodes, CRC32C,
 * receipt handles, tag expressions; and the format-version-1 golden files
 * under tests/data/store/v1 (decoded directly and opened as a store). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tu.h"

static size_t encode_sample(uint8_t *buf, size_t cap)
{
    st_message_t m;
    size_t used = 0;
    memset(&m, 0, sizeof(m));
    m.tag = "TagA";
    m.keys[0] = "k1";
    m.keys[1] = "k2";
    m.nkeys = 2;
    m.msg_id = "01ABCDEF";
    m.props[0] = (st_prop_t){"a", "1"};
    m.props[1] = (st_prop_t){"bee", ""};
    m.nprops = 2;
    m.born_ts_ms = 111;
    m.born_host = "1.2.3.4:5";
    m.msg_group = "mg";
    m.delivery_ts_ms = 222;
    m.body = "hello\0world";
    m.body_len = 11;
    CU_ASSERT_FATAL(st_record_size("topicX", &m) > ST_REC_HDR + 11);
    CU_ASSERT_EQUAL_FATAL(st_record_encode(buf, cap, "topicX", &m, &used),
                          GT_OK);
    st_record_seal(buf, 7, 42, 4096, 333);
    return used;
}

static void test_roundtrip(void)
{
    uint8_t buf[512];
    st_message_t d;
    size_t used = 0, n = encode_sample(buf, sizeof(buf));
    uint8_t small[10];
    memset(&d, 0, sizeof(d));
    CU_ASSERT_EQUAL(st_record_encode(small, sizeof(small), "topicX", &d,
                                     &used), GT_ERANGE);
    CU_ASSERT_EQUAL_FATAL(st_record_decode(buf, n, 1 << 20, &d, &used), GT_OK);
    CU_ASSERT_EQUAL(used, n);
    CU_ASSERT_STRING_EQUAL(d.topic, "topicX");
    CU_ASSERT_STRING_EQUAL(d.tag, "TagA");
    CU_ASSERT_STRING_EQUAL(d.msg_id, "01ABCDEF");
    CU_ASSERT_STRING_EQUAL(d.born_host, "1.2.3.4:5");
    CU_ASSERT_STRING_EQUAL(d.msg_group, "mg");
    CU_ASSERT_EQUAL(d.nkeys, 2);
    CU_ASSERT_STRING_EQUAL(d.keys[1], "k2");
    CU_ASSERT_EQUAL(d.nprops, 2);
    CU_ASSERT_STRING_EQUAL(d.props[1].key, "bee");
    CU_ASSERT_STRING_EQUAL(d.props[1].value, "");
    CU_ASSERT_EQUAL(d.body_len, 11);
    CU_ASSERT(memcmp(d.body, "hello\0world", 11) == 0);
    CU_ASSERT_EQUAL(d.queue_id, 7);
    CU_ASSERT_EQUAL(d.queue_offset, 42);
    CU_ASSERT_EQUAL(d.position, 4096);
    CU_ASSERT_EQUAL(d.store_ts_ms, 333);
    CU_ASSERT_EQUAL(d.born_ts_ms, 111);
    CU_ASSERT_EQUAL(d.delivery_ts_ms, 222);
    /* two records back to back decode one at a time */
    memcpy(buf + n, buf, n);
    CU_ASSERT_EQUAL(st_record_decode(buf, 2 * n, 1 << 20, &d, &used), GT_OK);
    CU_ASSERT_EQUAL(used, n);
}

static void test_truncated(void)
{
    uint8_t buf[512];
    st_message_t d;
    size_t used, n = encode_sample(buf, sizeof(buf));
    for (size_t len = 0; len < n; len++) {
        uint8_t *copy = malloc(len ? len : 1); /* ASan catches overreads */
        memcpy(copy, buf, len);
        CU_ASSERT_EQUAL(st_record_decode(copy, len, 1 << 20, &d, &used),
                        GT_AGAIN);
        free(copy);
    }
}

static void test_corrupt(void)
{
    uint8_t buf[512], copy[512];
    st_message_t d;
    size_t used, n = encode_sample(buf, sizeof(buf));
    for (size_t i = 0; i < n; i++)
        for (int bit = 0; bit < 8; bit++) {
            memcpy(copy, buf, n);
            copy[i] ^= (uint8_t)(1 << bit);
            gt_err_t rc = st_record_decode(copy, n, 1 << 20, &d, &used);
            CU_ASSERT(rc == GT_ECORRUPT || rc == GT_AGAIN);
        }
    /* a huge length is rejected before anyone allocates for it */
    memcpy(copy, buf, n);
    copy[4] = copy[5] = copy[6] = 0xff;
    copy[7] = 0x7f;
    CU_ASSERT_EQUAL(st_record_decode(copy, n, 1 << 20, &d, &used), GT_ECORRUPT);
    uint32_t l;
    CU_ASSERT_EQUAL(st_record_peek(copy, n, 1 << 20, &l), GT_ECORRUPT);
    /* a length below the header */
    memcpy(copy, buf, n);
    copy[4] = 10;
    copy[5] = copy[6] = copy[7] = 0;
    CU_ASSERT_EQUAL(st_record_decode(copy, n, 1 << 20, &d, &used), GT_ECORRUPT);
    /* a record larger than the caller's bound */
    CU_ASSERT_EQUAL(st_record_decode(buf, n, 100, &d, &used), GT_ECORRUPT);
    /* zeros are not a record */
    memset(copy, 0, sizeof(copy));
    CU_ASSERT_EQUAL(st_record_decode(copy, n, 1 << 20, &d, &used), GT_ECORRUPT);
}

static void test_limits(void)
{
    st_message_t m;
    memset(&m, 0, sizeof(m));
    m.nkeys = ST_MAX_KEYS + 1;
    CU_ASSERT_EQUAL(st_record_size("t", &m), 0);
    m.nkeys = 0;
    m.nprops = ST_MAX_PROPS + 1;
    CU_ASSERT_EQUAL(st_record_size("t", &m), 0);
    m.nprops = 0;
    char *big = malloc(70000);
    memset(big, 'x', 69999);
    big[69999] = 0;
    m.tag = big;
    CU_ASSERT_EQUAL(st_record_size("t", &m), 0);
    free(big);
}

static void test_crc(void)
{
    CU_ASSERT_EQUAL(st_crc32c(0, "123456789", 9), 0xE3069283u);
    CU_ASSERT_EQUAL(st_crc32c(st_crc32c(0, "1234", 4), "56789", 5),
                    0xE3069283u);
    CU_ASSERT_EQUAL(st_crc32c(0, "", 0), 0);
}

static void test_handle(void)
{
    st_handle_t h = {.queue = 3, .offset = 123456789012ull, .gen = 77}, d;
    char s[ST_HANDLE_MAX];
    st_handle_encode(&h, s);
    CU_ASSERT_EQUAL(strlen(s), 50);
    CU_ASSERT_EQUAL_FATAL(st_handle_decode(s, &d), GT_OK);
    CU_ASSERT_EQUAL(d.queue, 3);
    CU_ASSERT_EQUAL(d.offset, 123456789012ull);
    CU_ASSERT_EQUAL(d.gen, 77);
    CU_ASSERT_EQUAL(st_handle_decode(NULL, &d), GT_EINVAL);
    CU_ASSERT_EQUAL(st_handle_decode("", &d), GT_EINVAL);
    CU_ASSERT_EQUAL(st_handle_decode("zz", &d), GT_EINVAL);
    for (size_t i = 0; i < 50; i++) {
        char c[ST_HANDLE_MAX];
        strcpy(c, s);
        c[i] = c[i] == 'a' ? 'b' : 'a';
        CU_ASSERT_EQUAL(st_handle_decode(c, &d), GT_EINVAL);
    }
}

/* ---- golden files ------------------------------------------------------------ */
static uint8_t *golden(const char *name, size_t *n)
{
    char p[1024];
    snprintf(p, sizeof(p), "%s/v1/%s", ST_TEST_DATA, name);
    uint8_t *b = tu_read_file(p, n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    return b;
}

/* Decodes records from the header on; returns how many were good and the
 * code that stopped the scan. */
static int scan(const uint8_t *b, size_t n, gt_err_t *stop)
{
    size_t off = ST_SEG_HDR, used;
    int k = 0;
    st_message_t m;
    *stop = GT_OK;
    while (off < n) {
        *stop = st_record_decode(b + off, n - off, 1 << 20, &m, &used);
        if (*stop != GT_OK)
            break;
        char id[32], body[32];
        snprintf(id, sizeof(id), "GOLDEN-%d", k);
        snprintf(body, sizeof(body), "golden body %d", k);
        CU_ASSERT_STRING_EQUAL(m.msg_id, id);
        CU_ASSERT_STRING_EQUAL(m.topic, "golden");
        CU_ASSERT_EQUAL(m.body_len, strlen(body));
        CU_ASSERT(memcmp(m.body, body, m.body_len) == 0);
        CU_ASSERT_EQUAL(m.queue_id, k % 2);
        CU_ASSERT_EQUAL(m.queue_offset, (uint64_t)(k / 2));
        CU_ASSERT_EQUAL(m.position, off);
        CU_ASSERT_EQUAL(m.store_ts_ms, 1700000001000 + k);
        off += used;
        k++;
    }
    return k;
}

static void test_golden_decode(void)
{
    size_t n;
    gt_err_t stop;
    uint8_t *b = golden("segment.valid", &n);
    CU_ASSERT_EQUAL(b[0], 'G'); /* magic "GTCL", version 1 */
    CU_ASSERT_EQUAL(b[3], 'L');
    CU_ASSERT_EQUAL(b[4], 1);
    CU_ASSERT_EQUAL(scan(b, n, &stop), 5);
    CU_ASSERT_EQUAL(stop, GT_OK);
    free(b);
    b = golden("segment.truncated", &n);
    CU_ASSERT_EQUAL(scan(b, n, &stop), 4);
    CU_ASSERT_EQUAL(stop, GT_AGAIN);
    free(b);
    b = golden("segment.bitflip", &n);
    CU_ASSERT_EQUAL(scan(b, n, &stop), 2);
    CU_ASSERT_EQUAL(stop, GT_ECORRUPT);
    free(b);
}

/* Builds a data dir from a golden segment (+ checkpoint) and opens it.
 * Returns the open code; on success *count = messages found. */
static gt_err_t golden_open(const char *seg, bool with_ck, bool repair,
                            int *count)
{
    char *dir = tu_tmpdir("golden"), p[1024], src[1024];
    st_config_t c;
    st_store_t *st = NULL;
    snprintf(p, sizeof(p), "%s/commitlog", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/commitlog/00000000000000000000", dir);
    snprintf(src, sizeof(src), "%s/v1/%s", ST_TEST_DATA, seg);
    tu_copy_file(src, p);
    if (with_ck) {
        snprintf(p, sizeof(p), "%s/checkpoint", dir);
        snprintf(src, sizeof(src), "%s/v1/checkpoint.valid", ST_TEST_DATA);
        tu_copy_file(src, p);
    }
    tu_config(&c, dir, ST_FLUSH_SYNC);
    c.repair = repair;
    gt_err_t rc = st_local_open(&c, &st);
    *count = 0;
    if (rc == GT_OK) {
        tu_msg_t m[8];
        size_t n;
        CU_ASSERT_EQUAL(tu_topic(st, "golden", 2), GT_OK);
        for (uint32_t q = 0; q < 2; q++) {
            CU_ASSERT_EQUAL(tu_pull(st, "golden", q, 0, 8, m, &n, NULL), GT_OK);
            for (size_t i = 0; i < n; i++) {
                char body[32];
                snprintf(body, sizeof(body), "golden body %u",
                         (unsigned)(m[i].offset * 2 + q));
                CU_ASSERT_STRING_EQUAL(m[i].body, body);
            }
            *count += (int)n;
        }
        CU_ASSERT_EQUAL(tu_lookup(st, true, NULL, "key-1", m, &n), GT_OK);
        CU_ASSERT_EQUAL(n, 1);
        st_close(st);
    }
    tu_rmrf(dir);
    free(dir);
    return rc;
}

static void test_golden_open(void)
{
    int n;
    CU_ASSERT_EQUAL(golden_open("segment.valid", true, false, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 5);
    /* torn tail above the synced point: cut */
    CU_ASSERT_EQUAL(golden_open("segment.truncated", false, false, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 4);
    CU_ASSERT_EQUAL(golden_open("segment.bitflip", false, false, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 2);
    /* the same damage below the synced point: refuse, unless repair */
    CU_ASSERT_EQUAL(golden_open("segment.truncated", true, false, &n),
                    GT_ECORRUPT);
    CU_ASSERT_EQUAL(golden_open("segment.bitflip", true, false, &n),
                    GT_ECORRUPT);
    CU_ASSERT_EQUAL(golden_open("segment.bitflip", true, true, &n), GT_OK);
    CU_ASSERT_EQUAL(n, 2);
}

static const CU_TestInfo tests[] = {
    {"roundtrip", test_roundtrip},
    {"truncated", test_truncated},
    {"corrupt", test_corrupt},
    {"limits", test_limits},
    {"crc32c", test_crc},
    {"handle", test_handle},
    {"golden_decode", test_golden_decode},
    {"golden_open", test_golden_open},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return tu_run("record", tests);
}
