/* HMAC-SHA1 and hex (see gt_hmac.h): OpenSSL 3's one-shot EVP_Q_mac. */
#include "gt_hmac.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

gt_err_t gt_hmac_sha1(const void *key, size_t keylen, const void *data, size_t len,
                      uint8_t out[GT_SHA1_LEN])
{
    static const uint8_t empty[1];
    size_t n = 0;

    /* OpenSSL refuses a NULL key; an empty one is a valid HMAC key. */
    if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA1", NULL, keylen > 0 ? key : empty, keylen,
                  data, len, out, GT_SHA1_LEN, &n) == NULL ||
        n != GT_SHA1_LEN)
        return GT_EIO;
    return GT_OK;
}

bool gt_hmac_equal(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

void gt_hex_encode(const uint8_t *in, size_t n, char *out, size_t outlen)
{
    static const char digits[] = "0123456789ABCDEF";
    size_t o = 0;

    if (outlen == 0)
        return;
    for (size_t i = 0; i < n && o + 2 < outlen; i++) {
        out[o++] = digits[in[i] >> 4];
        out[o++] = digits[in[i] & 15];
    }
    out[o] = '\0';
}

static int hex_val(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int gt_hex_decode(const char *s, size_t len, uint8_t *out, size_t cap)
{
    if (len % 2 != 0 || len / 2 > cap)
        return -1;
    for (size_t i = 0; i < len; i += 2) {
        int hi = hex_val(s[i]), lo = hex_val(s[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    return (int)(len / 2);
}
