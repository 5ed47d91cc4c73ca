/* The protobuf wire walk of gt_pbwire.h.  Only length-delimited fields are
 * looked into; varints and fixed-size fields are stepped over, and groups
 * (not proto3) end the walk for the decoder to judge. */
#include <string.h>

#include "gt_pbwire.h"
#include "gt_text.h"

static bool gt_pbwire_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t r = 0;

    for (unsigned shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        r |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = r;
            return true;
        }
    }
    return false;
}

static bool gt_pbwire_walk(const ProtobufCMessageDescriptor *desc, const uint8_t *p,
                           size_t len, const ProtobufCFieldDescriptor *parent, bool utf8,
                           int depth, int max_depth, gt_pbwire_bad_t *bad)
{
    const uint8_t *end = p + len;

    while (p < end) {
        const ProtobufCFieldDescriptor *f;
        uint64_t key, n;

        if (!gt_pbwire_varint(&p, end, &key))
            return true;
        switch (key & 7) {
        case 0:
            if (!gt_pbwire_varint(&p, end, &n))
                return true;
            break;
        case 1:
        case 5:
            n = (key & 7) == 1 ? 8 : 4;
            if ((uint64_t)(end - p) < n)
                return true;
            p += n;
            break;
        case 2:
            if (!gt_pbwire_varint(&p, end, &n) || n > (uint64_t)(end - p))
                return true;
            f = (key >> 3) <= UINT32_MAX
                    ? protobuf_c_message_descriptor_get_field(desc, (unsigned)(key >> 3))
                    : NULL;
            if (f != NULL && f->type == PROTOBUF_C_TYPE_STRING) {
                bool nul = memchr(p, 0, n) != NULL;
                if (nul || (utf8 && !gt_utf8_valid(p, n))) {
                    *bad = (gt_pbwire_bad_t){f, desc, parent, nul};
                    return false;
                }
            } else if (f != NULL && f->type == PROTOBUF_C_TYPE_MESSAGE && depth < max_depth &&
                       !gt_pbwire_walk(f->descriptor, p, n, f, utf8, depth + 1, max_depth,
                                       bad)) {
                return false;
            }
            p += n;
            break;
        default:
            return true; /* groups are not proto3: the decoder decides */
        }
    }
    return true;
}

bool gt_pbwire_strings_ok(const ProtobufCMessageDescriptor *desc, const uint8_t *p,
                          size_t len, bool utf8, int max_depth, gt_pbwire_bad_t *bad)
{
    return gt_pbwire_walk(desc, p, len, NULL, utf8, 0, max_depth, bad);
}
