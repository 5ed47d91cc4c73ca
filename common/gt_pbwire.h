/* A walk over protobuf wire bytes, before they are decoded: the gRPC edges
 * (the proxy's RocketMQ service, px_validate.c, and gantry-store's store
 * protocol, ss_conv.c) refuse requests whose `string` fields hold a NUL
 * (our decoded C strings would end there and name something else) or,
 * where the protocol asks for it, bytes that are not UTF-8.  The decoded
 * message no longer shows either, hence a walk of the raw bytes against
 * the request's descriptor.  Pure: no allocation, no logging. */
#ifndef GT_PBWIRE_H
#define GT_PBWIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

/* The first bad string field a walk found. */
typedef struct gt_pbwire_bad {
    const ProtobufCFieldDescriptor *field;  /* the string field */
    const ProtobufCMessageDescriptor *msg;  /* the message holding it */
    const ProtobufCFieldDescriptor *parent; /* the field holding that
                                               message; NULL at the top */
    bool nul; /* it holds a NUL byte (else: it is not valid UTF-8) */
} gt_pbwire_bad_t;

/* Walks the `len` wire bytes at `p` (borrowed) of a `desc` message, and the
 * messages inside it down to `max_depth` levels, and returns false at the
 * first string field that holds a NUL byte or, when `utf8`, is not valid
 * UTF-8 (gt_utf8_valid), with *bad filled.  Bytes that do not parse end
 * the walk with true: the decoder refuses them itself. */
bool gt_pbwire_strings_ok(const ProtobufCMessageDescriptor *desc, const uint8_t *p,
                          size_t len, bool utf8, int max_depth, gt_pbwire_bad_t *bad);

#endif
