/* Text checks shared by every protocol edge (see gt_text.h). */
#include "gt_text.h"

#include <stdint.h>
#include <string.h>

bool gt_utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        uint8_t c = s[i];
        size_t len;
        uint32_t cp, min;

        if (n - i >= 8) { /* ASCII runs, eight bytes at a time */
            uint64_t v;
            memcpy(&v, s + i, 8);
            if ((v & 0x8080808080808080ull) == 0) {
                i += 8;
                continue;
            }
        }
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xe0) == 0xc0) {
            len = 2, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return false; /* continuation byte or 0xf8.. lead */
        }
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

size_t gt_utf8_copy(char *dst, size_t size, const char *src)
{
    size_t n = src != NULL ? strnlen(src, size) : 0;

    if (n >= size) {
        n = size - 1;
        /* Back off to the start of a sequence cut by the limit. */
        while (n > 0 && ((uint8_t)src[n] & 0xc0) == 0x80)
            n--;
    }
    memcpy(dst, src != NULL ? src : "", n);
    dst[n] = '\0';
    return n;
}
