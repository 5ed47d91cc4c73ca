/* Tag expressions: "", "*", or tags joined by "||" ("TagA || TagB"), the
 * filter of RocketMQ's TAG subscriptions.  One home for the client rule
 * (what the front ends accept) and the parsed form the store matches with.
 *
 * gt_hash32() is FNV-1a 32; the store keeps tags' hashes in its consume
 * queue entries (and hashes message groups to queues), so it must never
 * change. */
#ifndef GT_TAGEXPR_H
#define GT_TAGEXPR_H

#include <stdbool.h>
#include <stdint.h>

#include "gt_err.h"

#define GT_TAGS_MAX 32

typedef struct gt_tagexpr {
    bool all;                /* "", "*" or a "*" among the tags */
    uint32_t n;
    uint32_t hash[GT_TAGS_MAX];
    char *tags[GT_TAGS_MAX]; /* owned */
} gt_tagexpr_t;

/* FNV-1a 32 of the NUL-terminated `s` (NULL hashes as ""). */
uint32_t gt_hash32(const char *s);

/* The client rule: GT_OK for a blank expression, "*", or non-blank tags
 * joined by "||" (blanks -- space, tab -- around them allowed); GT_EINVAL
 * for an empty tag between separators or another control character.
 * Borrows expr. */
gt_err_t gt_tagexpr_check(const char *expr);

/* Parses expr (borrowed; NULL means all) into *out, skipping empty tags as
 * RocketMQ does; at most GT_TAGS_MAX tags (GT_EINVAL beyond), GT_ENOMEM.
 * On GT_OK release *out with gt_tagexpr_free(). */
gt_err_t gt_tagexpr_parse(const char *expr, gt_tagexpr_t *out);
void gt_tagexpr_free(gt_tagexpr_t *t);

/* Whether a message with `tag` (NULL: none) / with this tag hash passes. */
bool gt_tagexpr_match(const gt_tagexpr_t *t, const char *tag);
bool gt_tagexpr_match_hash(const gt_tagexpr_t *t, uint32_t hash);

#endif
