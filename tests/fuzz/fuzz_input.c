/* libFuzzer target for the request screening of proxy/service/px_validate.c
 * and the text parsers of common/ (gt_text, gt_addr, gt_tagexpr).
 *
 * The first input byte picks a MessagingService request type; the rest is
 * its wire bytes.  px_validate_wire() must answer OK or a code with a
 * NUL-terminated reason; when it answers OK and protobuf-c decodes the
 * bytes, every string of the decoded message must be valid UTF-8 (the
 * screen let nothing else through).  The rest of the input, as a string,
 * also goes through gt_hostport_parse() (a parsed port is 1..65535),
 * gt_tagexpr_check()/gt_tagexpr_parse() (an accepted expression parses,
 * and matching a tag by text and by hash agree) and gt_utf8_copy() (the
 * copy of valid UTF-8 stays valid).  Anything else aborts.  Built twice by
 * CMakeLists.txt, like fuzz_sql. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt_addr.h"
#include "gt_tagexpr.h"
#include "gt_text.h"
#include "px_svc_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define D(x) &apache__rocketmq__v2__##x##__descriptor
static const ProtobufCMessageDescriptor *const fuzz_reqs[] = {
    D(query_route_request), D(heartbeat_request), D(send_message_request),
    D(query_assignment_request), D(receive_message_request), D(ack_message_request),
    D(forward_message_to_dead_letter_queue_request), D(pull_message_request),
    D(update_offset_request), D(get_offset_request), D(query_offset_request),
    D(end_transaction_request), D(telemetry_command),
    D(notify_client_termination_request), D(change_invisible_duration_request),
    D(recall_message_request),
};

static void fuzz_check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_input: invariant violated: %s\n", what);
        abort();
    }
}

static void fuzz_check_str(const char *s)
{
    if (s != NULL)
        fuzz_check(gt_utf8_valid((const uint8_t *)s, strlen(s)), "decoded string is UTF-8");
}

/* Every string field of a decoded message, recursively. */
static void fuzz_walk(const ProtobufCMessage *m, int depth)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;

    fuzz_check(depth < 100, "depth");
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *base = (const char *)m;
        size_t n = 1;
        const void *const *items;

        if (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)(base + f->quantifier_offset) != f->id)
            continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            n = *(const size_t *)(base + f->quantifier_offset);
            items = *(const void *const *const *)(base + f->offset);
        } else {
            items = (const void *const *)(base + f->offset);
        }
        for (size_t k = 0; k < n; k++) {
            if (items[k] == NULL)
                continue;
            if (f->type == PROTOBUF_C_TYPE_STRING)
                fuzz_check_str(items[k]);
            else
                fuzz_walk(items[k], depth + 1);
        }
    }
}

static void fuzz_text(const char *s)
{
    gt_hostport_t hp;
    gt_tagexpr_t t;
    const char *why = NULL;
    char cut[16];

    if (gt_hostport_parse(s, 8081, &hp, &why) == GT_OK)
        fuzz_check(hp.port >= 1 && strlen(hp.host) < sizeof(hp.host), "parsed address");
    else
        fuzz_check(why != NULL, "address refusal has a reason");
    if (gt_tagexpr_check(s) == GT_OK) {
        gt_err_t rc = gt_tagexpr_parse(s, &t);
        fuzz_check(rc == GT_OK || rc == GT_EINVAL, "accepted expression parses");
        for (uint32_t i = 0; rc == GT_OK && i < t.n; i++)
            fuzz_check(gt_tagexpr_match(&t, t.tags[i]) &&
                           gt_tagexpr_match_hash(&t, gt_hash32(t.tags[i])),
                       "a parsed tag matches by text and by hash");
        if (rc == GT_OK)
            gt_tagexpr_free(&t);
    }
    if (gt_utf8_valid((const uint8_t *)s, strlen(s))) {
        size_t n = gt_utf8_copy(cut, sizeof(cut), s);
        fuzz_check(n < sizeof(cut) && gt_utf8_valid((const uint8_t *)cut, n),
                   "a cut copy of UTF-8 is UTF-8");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const ProtobufCMessageDescriptor *desc;
    ProtobufCMessage *m;
    char why[256];
    char *text;
    px_code_t code;

    if (size == 0)
        return 0;
    desc = fuzz_reqs[data[0] % (sizeof(fuzz_reqs) / sizeof(fuzz_reqs[0]))];
    why[0] = 'x';
    code = px_validate_wire(desc, data + 1, size - 1, why, sizeof(why));
    fuzz_check(code == PX_CODE(OK) || memchr(why, '\0', sizeof(why)) != NULL,
               "a refusal has a NUL-terminated reason");
    if (code == PX_CODE(OK) &&
        (m = protobuf_c_message_unpack(desc, NULL, size - 1, data + 1)) != NULL) {
        fuzz_walk(m, 0);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    if ((text = malloc(size)) != NULL) {
        memcpy(text, data + 1, size - 1);
        text[size - 1] = '\0';
        fuzz_text(text);
        free(text);
    }
    return 0;
}
