/* HMAC-SHA1 and hex, for RocketMQ 5's request signatures (the gRPC
 * `authorization` header signs x-mq-date-time with the user's secret key,
 * proxy/service/px_auth.c).  OpenSSL does the digest; comparisons of
 * secrets go through gt_hmac_equal (CRYPTO_memcmp: constant time). */
#ifndef GT_HMAC_H
#define GT_HMAC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gt_err.h"

#define GT_SHA1_LEN 20

/* HMAC-SHA1 of the len bytes at data (borrowed) keyed with the keylen
 * bytes at key (borrowed) into out.  GT_OK, or GT_EIO when OpenSSL fails
 * (out of memory inside it). */
gt_err_t gt_hmac_sha1(const void *key, size_t keylen, const void *data, size_t len,
                      uint8_t out[GT_SHA1_LEN]);

/* True when the n bytes at a and b are equal, in a time that does not
 * depend on where they differ. */
bool gt_hmac_equal(const void *a, const void *b, size_t n);

/* Writes the n bytes at in as 2n upper-case hex digits and a NUL into out
 * (outlen >= 2n + 1; the digits are cut otherwise, still NUL-terminated). */
void gt_hex_encode(const uint8_t *in, size_t n, char *out, size_t outlen);

/* Decodes len hex digits (either case) at s into out (cap bytes).  The
 * number of bytes, or -1 for an odd length, a non-hex character or more
 * than cap bytes. */
int gt_hex_decode(const char *s, size_t len, uint8_t *out, size_t cap);

#endif
