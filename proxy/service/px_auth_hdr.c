/* The authorization header and x-mq-date-time codecs (see px_auth.h):
 * pure functions over borrowed bytes, shared by the service and the fuzz
 * target tests/fuzz/fuzz_auth.c. */
#include <string.h>

#include "px_auth.h"

#define PX_AUTH_SCHEME "MQv2-HMAC-SHA1"

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static bool item_is(const char *k, size_t klen, const char *name)
{
    return klen == strlen(name) && memcmp(k, name, klen) == 0;
}

gt_err_t px_auth_header_parse(const char *s, size_t len, px_auth_hdr_t *out,
                              const char **why)
{
    const char *sp = memchr(s, ' ', len), *p, *end = s + len;
    bool have_ak = false, have_sig = false;

    memset(out, 0, sizeof(*out));
    if (sp == NULL) {
        *why = "no credentials after the scheme";
        return GT_EINVAL;
    }
    if ((size_t)(sp - s) != strlen(PX_AUTH_SCHEME) ||
        memcmp(s, PX_AUTH_SCHEME, (size_t)(sp - s)) != 0) {
        *why = "the scheme is not " PX_AUTH_SCHEME;
        return GT_EINVAL;
    }
    for (p = sp + 1; p <= end;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *ie = comma != NULL ? comma : end, *ib = p, *eq;

        while (ib < ie && is_blank(*ib))
            ib++;
        while (ie > ib && is_blank(ie[-1]))
            ie--;
        eq = memchr(ib, '=', (size_t)(ie - ib));
        if (eq == NULL) {
            *why = "an item is not KEY=VALUE";
            return GT_EINVAL;
        }
        if (item_is(ib, (size_t)(eq - ib), "Credential")) {
            const char *v = eq + 1, *slash = memchr(v, '/', (size_t)(ie - v));

            out->ak = v;
            out->ak_len = (size_t)((slash != NULL ? slash : ie) - v);
            have_ak = out->ak_len > 0;
        } else if (item_is(ib, (size_t)(eq - ib), "Signature")) {
            have_sig = ie - (eq + 1) == 2 * GT_SHA1_LEN &&
                       gt_hex_decode(eq + 1, 2 * GT_SHA1_LEN, out->sig, sizeof(out->sig)) ==
                           GT_SHA1_LEN;
            if (!have_sig) {
                *why = "the Signature is not 40 hex digits";
                return GT_EINVAL;
            }
        }
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    if (!have_ak) {
        *why = "no Credential (access key)";
        return GT_EINVAL;
    }
    if (!have_sig) {
        *why = "no Signature";
        return GT_EINVAL;
    }
    return GT_OK;
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t era;
    unsigned yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned)(y - era * 400);
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static bool digits(const char *s, size_t n, unsigned *v)
{
    *v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        *v = *v * 10 + (unsigned)(s[i] - '0');
    }
    return true;
}

gt_err_t px_auth_datetime_parse(const char *s, size_t len, int64_t *ms)
{
    static const unsigned mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    unsigned y, mo, d, h, mi, se;
    bool leap;

    if (len != 16 || s[8] != 'T' || s[15] != 'Z' || !digits(s, 4, &y) ||
        !digits(s + 4, 2, &mo) || !digits(s + 6, 2, &d) || !digits(s + 9, 2, &h) ||
        !digits(s + 11, 2, &mi) || !digits(s + 13, 2, &se))
        return GT_EINVAL;
    leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || (mo == 2 && d == 29 && !leap) ||
        h > 23 || mi > 59 || se > 59)
        return GT_EINVAL;
    *ms = ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60000 + (int64_t)se * 1000;
    return GT_OK;
}
