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

#endif
