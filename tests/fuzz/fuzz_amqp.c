/* libFuzzer target for the AMQP 0-9-1 codec (gateway-amqp/gw_codec.h).
 *
 * The first input byte picks the mode: bit 0 the protocol-header phase,
 * bits 1-2 frame_max (4096, 131072, 8192 or none), bits 3-7 the chunk
 * size for the incremental parser.  The rest is a byte stream from a
 * client.  Invariants (anything else aborts):
 *   - the parser fed in chunks yields exactly the frames one-shot
 *     gw_frame_decode yields, and ends in the same state (need more, or
 *     the same fault); its buffer never passes frame_max + 8;
 *   - a failure always carries a known reply code and a text of at most
 *     255 bytes starting with the code's name;
 *   - every method that decodes re-encodes (gw_method_size agrees with
 *     gw_method_encode), decodes again to the same arguments, and
 *     re-encodes to the same bytes; its tables rebuilt entry by entry
 *     from decoded values are byte-identical;
 *   - content headers re-encode to their raw property bytes (when no
 *     continuation flags word was used);
 *   - per-channel assembly never crashes and reports only 501/505/540.
 * The whole stream is also tried as a table body and an array body. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_amqp: invariant violated: %s\n", what);
        abort();
    }
}

static void check_fault(const gw_fault_t *f)
{
    size_t n = strnlen(f->text, sizeof f->text);
    fuzz_check(n < sizeof f->text, "fault text terminated");
    if (f->bad_header)
        return;
    const char *name = gw_reply_name(f->code);
    fuzz_check(strcmp(name, "UNKNOWN") != 0, "known reply code");
    fuzz_check(strncmp(f->text, name, strlen(name)) == 0, "text starts with the name");
}

/* Rebuilds a validated table (or array, inside a wrapper table entry
 * "a" whose 7 bytes are skipped when comparing) from its decoded values
 * and checks the bytes are the same; nested ones too, a few levels. */
static void check_table(gw_table_t t, bool array, int depth)
{
    size_t extra = array ? 7 : 0;
    uint8_t *buf = malloc(t.len + extra + 1);
    gw_tbuild_t b;
    gw_table_iter_t it;
    gw_str_t k;
    gw_value_t v;
    gw_table_t out;

    fuzz_check(buf != NULL, "malloc");
    gw_tbuild_init(&b, buf, t.len + extra);
    if (array)
        gw_tbuild_array_begin(&b, "a");
    gw_table_iter_init(&it, t);
    while (array ? gw_array_iter_next(&it, &v) : gw_table_iter_next(&it, &k, &v)) {
        if (array)
            gw_tbuild_value(&b, NULL, &v);
        else
            gw_tbuild_value_k(&b, k, &v);
        if ((v.type == 'F' || v.type == 'A') && depth < 4)
            check_table(v.v.table, v.type == 'A', depth + 1);
    }
    if (array)
        gw_tbuild_end(&b);
    fuzz_check(gw_tbuild_finish(&b, &out) == GT_OK, "rebuild");
    fuzz_check(out.len == t.len + extra &&
                   (t.len == 0 || memcmp(out.ptr + extra, t.ptr, t.len) == 0),
               "byte-exact");
    free(buf);
}

static int method_cmp(const gw_method_t *a, const gw_method_t *b)
{
    if (a->id != b->id)
        return 1;
    const gw_method_info_t *mi = gw_method_info((uint32_t)a->id);
    for (unsigned k = 0; k < mi->nfields; k++) {
        const gw_field_info_t *fi = &mi->fields[k];
        const uint8_t *pa = (const uint8_t *)a + fi->offset, *pb = (const uint8_t *)b + fi->offset;
        size_t n = 0;
        switch (fi->kind) {
        case GW_F_OCTET: n = 1; break;
        case GW_F_SHORT: n = 2; break;
        case GW_F_LONG: n = 4; break;
        case GW_F_LONGLONG:
        case GW_F_TIMESTAMP: n = 8; break;
        case GW_F_BIT: n = sizeof(bool); break;
        default: {
            gw_bytes_t x, y;
            memcpy(&x, pa, sizeof x);
            memcpy(&y, pb, sizeof y);
            if (x.len != y.len || (x.len > 0 && memcmp(x.ptr, y.ptr, x.len) != 0))
                return 2;
            continue;
        }
        }
        if (memcmp(pa, pb, n) != 0)
            return 3;
    }
    return 0;
}

static void check_method(const gw_frame_t *fr)
{
    gw_method_t m, m2;
    gw_fault_t f;
    if (gw_method_decode(fr->payload, fr->size, &m, &f) != GT_OK) {
        check_fault(&f);
        fuzz_check(f.code == GW_FRAME_ERROR || f.code == GW_NOT_IMPLEMENTED, "method fault code");
        return;
    }
    size_t n = gw_method_size(&m), len = 0, len2 = 0;
    fuzz_check(n >= 4 && n <= fr->size, "method size");
    uint8_t *buf = malloc(n), *buf2 = malloc(n);
    fuzz_check(buf != NULL && buf2 != NULL, "malloc");
    fuzz_check(gw_method_encode(&m, buf, n, &len) == GT_OK && len == n, "re-encode");
    fuzz_check(gw_method_decode(buf, len, &m2, &f) == GT_OK, "decode own encoding");
    fuzz_check(method_cmp(&m, &m2) == 0, "same arguments");
    fuzz_check(gw_method_encode(&m2, buf2, n, &len2) == GT_OK && len2 == len &&
                   memcmp(buf, buf2, len) == 0,
               "stable encoding");
    const gw_method_info_t *mi = gw_method_info((uint32_t)m.id);
    for (unsigned k = 0; k < mi->nfields; k++) {
        if (mi->fields[k].kind != GW_F_TABLE)
            continue;
        gw_table_t t;
        memcpy(&t, (const uint8_t *)&m + mi->fields[k].offset, sizeof t);
        check_table(t, false, 0);
    }
    free(buf);
    free(buf2);
}

/* Sends raw_props and body as content (split at frame_max) after a
 * publish, and reads it back through a fresh assembler. */
static void check_content(gw_bytes_t raw_props, const uint8_t *body, size_t blen,
                          uint32_t frame_max)
{
    static const uint8_t pub[] = {1, 0, 1, 0, 0, 0, 9, 0, 60, 0, 40, 0, 0, 0, 0, 0, 0xCE};
    size_t n = gw_content_size(NULL, raw_props, blen, frame_max), len = 0, at = 0, got = 0;
    uint8_t *buf = malloc(n > 0 ? n : 1);
    gw_asm_t a = {0};
    gw_asm_out_t o;
    gw_frame_t fr;
    gw_fault_t f;
    size_t used;

    fuzz_check(n > 0 && buf != NULL, "content size");
    fuzz_check(gw_content_encode(1, NULL, raw_props, body, blen, frame_max, buf, n, &len) == GT_OK &&
                   len == n,
               "content encode");
    fuzz_check(gw_frame_decode(pub, sizeof pub, 0, &fr, &used, &f) == GT_OK, "publish frame");
    fuzz_check(gw_asm_frame(&a, &fr, &o, &f) == GT_OK && o.event == GW_EV_CONTENT, "publish");
    do {
        fuzz_check(gw_frame_decode(buf + at, len - at, 0, &fr, &used, &f) == GT_OK, "content frame");
        fuzz_check(frame_max == 0 || fr.type != GW_FRAME_BODY || fr.size <= frame_max - 8,
                   "body frame within frame_max");
        fuzz_check(gw_asm_frame(&a, &fr, &o, &f) == GT_OK, "content assembles");
        if (o.event == GW_EV_BODY) {
            fuzz_check(memcmp(o.body.ptr, body + got, o.body.len) == 0, "body bytes");
            got += o.body.len;
        } else {
            fuzz_check(o.event == GW_EV_HEADER && o.header.body_size == blen, "header");
        }
        at += used;
    } while (!o.done);
    fuzz_check(at == len && got == blen, "whole content");
    free(buf);
}

static void check_header(const gw_frame_t *fr, uint32_t frame_max)
{
    gw_content_header_t h;
    gw_fault_t f;
    if (gw_header_decode(fr->payload, fr->size, &h, &f) != GT_OK) {
        check_fault(&f);
        fuzz_check(f.code == GW_FRAME_ERROR, "header fault code");
        return;
    }
    check_table(h.props.headers, false, 0);
    size_t n = gw_props_size(&h.props), len = 0;
    fuzz_check(n >= 2, "props size");
    uint8_t *buf = malloc(n);
    fuzz_check(buf != NULL, "malloc");
    fuzz_check(gw_props_encode(&h.props, buf, n, &len) == GT_OK && len == n, "props encode");
    if ((h.raw_props.ptr[1] & 1u) == 0)
        fuzz_check(len == h.raw_props.len && memcmp(buf, h.raw_props.ptr, len) == 0,
                   "props byte-exact");
    free(buf);
    /* The frame's own bytes as a body, cut into frames of frame_max. */
    check_content(h.raw_props, fr->payload, fr->size, frame_max != 0 ? frame_max : 9);
}

typedef struct {
    uint8_t type;
    uint16_t ch;
    uint32_t size;
    const uint8_t *payload; /* in the one-shot pass: into the input */
} seen_t;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint32_t fmax[4] = {4096, 131072, 8192, 0};
    if (size < 1)
        return 0;
    bool hdr = data[0] & 1u;
    uint32_t frame_max = fmax[(data[0] >> 1) & 3u];
    size_t step = (size_t)(data[0] >> 3) + 1;
    const uint8_t *s = data + 1;
    size_t n = size - 1;

    /* The stream as a table and as an array. */
    if (gw_table_validate(s, n) == GT_OK)
        check_table((gw_table_t){n > 0 ? s : NULL, n}, false, 0);
    if (gw_array_validate(s, n) == GT_OK)
        check_table((gw_table_t){n > 0 ? s : NULL, n}, true, 0);

    /* One shot. */
    size_t cap = 64, cnt = 0, at = 0;
    seen_t *seen = malloc(cap * sizeof *seen);
    gw_fault_t f1 = {0}, f2 = {0};
    gt_err_t end1 = GT_AGAIN;
    fuzz_check(seen != NULL, "malloc");
    if (hdr) {
        gw_header_rc_t h = gw_header_check(s, n);
        if (h == GW_HEADER_BAD) {
            end1 = GT_EINVAL;
            f1.bad_header = true;
            at = n;
        } else if (h == GW_HEADER_AGAIN) {
            at = n;
        } else {
            at = GW_HEADER_LEN;
        }
    }
    gw_asm_t asms[4] = {{0}};
    bool asm_dead[4] = {false};
    while (end1 == GT_AGAIN && at < n) {
        gw_frame_t fr;
        size_t used = 0;
        /* The parser's "no limit" is 128 MiB; ask the same of one-shot. */
        gt_err_t rc = gw_frame_decode(s + at, n - at, frame_max != 0 ? frame_max : 128u << 20, &fr,
                                      &used, &f1);
        if (rc != GT_OK) {
            end1 = rc;
            if (rc == GT_AGAIN)
                fuzz_check(used > n - at, "AGAIN asks for more");
            else
                check_fault(&f1);
            break;
        }
        fuzz_check(used == (size_t)fr.size + 8 && used <= n - at, "frame length");
        if (cnt == cap) {
            cap *= 2;
            seen = realloc(seen, cap * sizeof *seen);
            fuzz_check(seen != NULL, "realloc");
        }
        seen[cnt++] = (seen_t){fr.type, fr.channel, fr.size, fr.payload};
        if (fr.type == GW_FRAME_METHOD)
            check_method(&fr);
        else if (fr.type == GW_FRAME_HEADER)
            check_header(&fr, frame_max);
        if (fr.type != GW_FRAME_HEARTBEAT && !asm_dead[fr.channel & 3]) {
            gw_asm_out_t o;
            gw_fault_t fa;
            if (gw_asm_frame(&asms[fr.channel & 3], &fr, &o, &fa) != GT_OK) {
                check_fault(&fa);
                fuzz_check(fa.code == GW_FRAME_ERROR || fa.code == GW_UNEXPECTED_FRAME ||
                               fa.code == GW_NOT_IMPLEMENTED,
                           "assembler fault code");
                asm_dead[fr.channel & 3] = true;
            }
        }
        at += used;
    }

    /* Incremental, in chunks of `step`. */
    gw_parser_t p;
    gw_parser_init(&p, frame_max, hdr);
    size_t fed = 0, got = 0;
    gt_err_t end2;
    bool header_frame = hdr;
    for (;;) {
        gw_frame_t fr;
        while ((end2 = gw_parser_next(&p, &fr, &f2)) == GT_OK) {
            if (header_frame) {
                fuzz_check(fr.type == 0, "header reported as type 0");
                header_frame = false;
                continue;
            }
            fuzz_check(got < cnt, "no extra frames");
            fuzz_check(fr.type == seen[got].type && fr.channel == seen[got].ch &&
                           fr.size == seen[got].size &&
                           memcmp(fr.payload, seen[got].payload, fr.size) == 0,
                       "same frame as one-shot");
            got++;
        }
        if (end2 != GT_AGAIN || fed == n)
            break;
        size_t chunk = n - fed < step ? n - fed : step;
        size_t took = gw_parser_feed(&p, s + fed, chunk);
        fuzz_check(took > 0, "feed makes progress");
        fed += took;
        size_t limit = (size_t)(frame_max != 0 ? frame_max : 128u * 1024 * 1024) + 8;
        fuzz_check(p.cap <= limit || p.cap <= 4096 + 8, "bounded buffer");
    }
    fuzz_check(got == cnt, "same frame count");
    fuzz_check(end1 == end2, "same end state");
    if (end1 == GT_EINVAL) {
        fuzz_check(f1.bad_header == f2.bad_header, "same header verdict");
        if (!f1.bad_header)
            fuzz_check(f1.code == f2.code && strcmp(f1.text, f2.text) == 0, "same fault");
    }
    gw_parser_free(&p);
    free(seen);
    return 0;
}
