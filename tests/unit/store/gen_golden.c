/* Generates the format-version-1 golden files under tests/data/store/v1/:
 *   segment.valid      a 64 KiB-segment commitlog file with 5 records
 *   segment.truncated  the same, cut 10 bytes into the last record's end
 *   segment.bitflip    the same, one bit flipped in the third record's body
 *   checkpoint.valid   a checkpoint claiming the whole valid file is synced
 * Content is fixed (timestamps included) so the files are reproducible.
 * The segment header and checkpoint are written field by field here, not
 * through st_log.c, so a silent format change breaks the golden tests.
 * Usage: st_gen_golden <output dir>.  Run once; the files are committed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt_le.h"
#include "st_int.h"
#include "tu.h"

#define N 5
#define SEG 65536

static void out(const char *dir, const char *name, const uint8_t *b, size_t n)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b, 1, n, f) != n) {
        perror(path);
        exit(1);
    }
    fclose(f);
}

int main(int argc, char **argv)
{
    static uint8_t seg[SEG];
    size_t off = ST_SEG_HDR, ends[N];
    if (argc != 2) {
        fprintf(stderr, "usage: %s <dir>\n", argv[0]);
        return 2;
    }
    gt_le_put(seg, ST_SEG_MAGIC, 4);
    gt_le_put(seg + 4, 1, 4);
    gt_le_put(seg + 8, 0, 8);
    gt_le_put(seg + 16, SEG, 8);
    gt_le_put(seg + 24, 1700000000000ull, 8);
    gt_le_put(seg + 32, st_crc32c(0, seg, 32), 4);
    for (int i = 0; i < N; i++) {
        char id[32], key[32], pv[32], body[64];
        st_message_t m;
        size_t used;
        memset(&m, 0, sizeof(m));
        snprintf(id, sizeof(id), "GOLDEN-%d", i);
        snprintf(key, sizeof(key), "key-%d", i);
        snprintf(pv, sizeof(pv), "v-%d", i);
        snprintf(body, sizeof(body), "golden body %d", i);
        m.tag = i % 2 ? "odd" : "even";
        m.msg_id = id;
        m.keys[0] = key;
        m.nkeys = 1;
        m.props[0] = (st_prop_t){"p", pv};
        m.nprops = 1;
        m.born_ts_ms = 1700000000000 + i;
        m.born_host = "10.0.0.1:4242";
        m.msg_group = i == 4 ? "fifo-group" : NULL;
        m.delivery_ts_ms = i == 3 ? 1700000009999 : 0;
        m.body = body;
        m.body_len = (uint32_t)strlen(body);
        if (st_record_encode(seg + off, SEG - off, "golden", &m, &used)) {
            fprintf(stderr, "encode failed\n");
            return 1;
        }
        st_record_seal(seg + off, (uint32_t)(i % 2), (uint64_t)(i / 2), off,
                       1700000001000 + i);
        off += used;
        ends[i] = off;
    }
    out(argv[1], "segment.valid", seg, off);
    out(argv[1], "segment.truncated", seg, off - 10);
    size_t mid = (ends[1] + ends[2]) / 2 + 20; /* inside record 2 */
    seg[mid] ^= 0x08;
    out(argv[1], "segment.bitflip", seg, off);
    uint8_t ck[64] = {0};
    gt_le_put(ck, 0x4B435447u, 4); /* slot 1 (sequence 1) at offset 32 */
    gt_le_put(ck + 32, 0x4B435447u, 4);
    gt_le_put(ck + 36, 1, 4);
    gt_le_put(ck + 40, 1, 8);
    gt_le_put(ck + 48, off, 8);
    gt_le_put(ck + 56, st_crc32c(0, ck + 32, 24), 4);
    out(argv[1], "checkpoint.valid", ck, sizeof(ck));
    printf("records end at %zu %zu %zu %zu %zu; bit flipped at %zu\n", ends[0],
           ends[1], ends[2], ends[3], ends[4], mid);
    return 0;
}
