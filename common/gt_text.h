/* Text checks shared by every protocol edge.
 *
 * gt_utf8_valid() is the strict UTF-8 of RFC 3629 (what proto3 requires of
 * `string` fields and what Java and Go clients enforce on the strings they
 * receive): no overlong forms, no UTF-16 surrogates, nothing above
 * U+10FFFF. */
#ifndef GT_TEXT_H
#define GT_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* True when the n bytes at s (borrowed) are well-formed UTF-8. */
bool gt_utf8_valid(const uint8_t *s, size_t n);

/* Copies the NUL-terminated `src` (borrowed; NULL is "") into dst (size >=
 * 1), cut to at most size - 1 bytes but never inside a UTF-8 sequence, and
 * NUL-terminates.  Returns the bytes copied. */
size_t gt_utf8_copy(char *dst, size_t size, const char *src);

#endif
