/* Decoded requests in one arena each (px_request_unpack/px_request_free).
 *
 * protobuf-c allocates every sub-message, repeated array, string and bytes
 * field of a decoded message separately, and protobuf_c_message_free_unpacked
 * walks the message through its descriptors to free them one by one: for a
 * SendMessage of 32 messages that is some 400 mallocs and frees.  Here the
 * decoder gets an allocator that bumps a pointer through chunks (the first
 * one sized from the wire length, in the same block as the arena), its
 * frees do nothing, and the whole request goes at once.
 *
 * Every allocation is preceded by a pointer to its arena, so the message
 * alone finds it (whichever allocation protobuf-c makes first).  Scratch
 * memory the decoder frees meanwhile stays in the arena until the end; it
 * is small next to the message. */
#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "gt_log.h"
#include "px_rpc.h"

#define PX_ARENA_MAGIC 0x6172656e61727067ull /* "gprarena" */
#define PX_ARENA_ALIGN alignof(max_align_t)
#define PX_ARENA_SLOT PX_ARENA_ALIGN /* the back pointer before each block */
#define PX_ARENA_MIN_CHUNK 4096
#define PX_ARENA_MAX_CHUNK (1 << 20)

typedef struct px_arena_chunk {
    struct px_arena_chunk *next;
} px_arena_chunk_t;

typedef struct px_arena {
    uint64_t magic;
    px_arena_chunk_t *chunks; /* chunks after the first, newest first */
    uint8_t *at, *end;        /* free space in the current chunk */
    size_t next_chunk;        /* size of the next chunk */
    ProtobufCAllocator alloc;
} px_arena_t;

static size_t px_arena_round(size_t n)
{
    return (n + PX_ARENA_ALIGN - 1) & ~(size_t)(PX_ARENA_ALIGN - 1);
}

#define PX_ARENA_HDR px_arena_round(sizeof(px_arena_t))
#define PX_CHUNK_HDR px_arena_round(sizeof(px_arena_chunk_t))

static void *px_arena_alloc(void *data, size_t size)
{
    px_arena_t *a = data;
    size_t need;
    uint8_t *p;

    if (size > SIZE_MAX / 2)
        return NULL;
    need = PX_ARENA_SLOT + px_arena_round(size);
    if ((size_t)(a->end - a->at) < need) {
        size_t csize = need > a->next_chunk ? need : a->next_chunk;
        px_arena_chunk_t *c = malloc(PX_CHUNK_HDR + csize);

        if (c == NULL)
            return NULL;
        c->next = a->chunks;
        a->chunks = c;
        a->at = (uint8_t *)c + PX_CHUNK_HDR;
        a->end = a->at + csize;
        if (a->next_chunk < PX_ARENA_MAX_CHUNK)
            a->next_chunk *= 2;
    }
    p = a->at;
    a->at += need;
    *(px_arena_t **)p = a;
    return p + PX_ARENA_SLOT;
}

static void px_arena_free_block(void *data, void *p)
{
    (void)data; /* freed with the arena */
    (void)p;
}

static void px_arena_destroy(px_arena_t *a)
{
    px_arena_chunk_t *c = a->chunks;

    while (c != NULL) {
        px_arena_chunk_t *next = c->next;
        free(c);
        c = next;
    }
    a->magic = 0;
    free(a);
}

ProtobufCMessage *px_request_unpack(const ProtobufCMessageDescriptor *desc,
                                    const uint8_t *data, size_t len)
{
    /* The decoded form is about the wire size plus the structs: a quarter
     * more and 2 KiB covers the common requests in the first chunk. */
    size_t first = len < SIZE_MAX / 4 - 4096 ? px_arena_round(len + len / 4 + 2048)
                                             : 0;
    px_arena_t *a;
    ProtobufCMessage *msg;

    if (first == 0 || (a = malloc(PX_ARENA_HDR + first)) == NULL)
        return NULL;
    a->magic = PX_ARENA_MAGIC;
    a->chunks = NULL;
    a->at = (uint8_t *)a + PX_ARENA_HDR;
    a->end = a->at + first;
    a->next_chunk = PX_ARENA_MIN_CHUNK;
    a->alloc = (ProtobufCAllocator){px_arena_alloc, px_arena_free_block, a};
    msg = protobuf_c_message_unpack(desc, &a->alloc, len, data);
    if (msg == NULL)
        px_arena_destroy(a);
    return msg;
}

void px_request_free(ProtobufCMessage *req)
{
    px_arena_t *a;

    if (req == NULL)
        return;
    a = *(px_arena_t **)((uint8_t *)req - PX_ARENA_SLOT);
    if (a->magic != PX_ARENA_MAGIC) {
        /* Not from px_request_unpack: a bug, and freeing it would be
         * another. */
        GT_LOG(ERROR, "rpc", "px_request_free: not a decoded request");
        abort();
    }
    px_arena_destroy(a);
}
