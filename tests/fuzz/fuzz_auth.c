/* libFuzzer target for RocketMQ 5 authentication (proxy/service/px_auth*):
 * the authorization header parser, the x-mq-date-time parser and a whole
 * login.
 *
 * The input goes through px_auth_header_parse() (on OK the access key lies
 * inside the input, is not empty and holds no '/', and the header with
 * that key and the signature in hex parses back to the same), through
 * px_auth_datetime_parse() (an accepted date prints back to the same 16
 * bytes) and, NUL-cut, as the authorization of px_auth_login() against a
 * fixed user (never a crash; a login only with the right signature).
 * Anything else aborts.  Built twice by CMakeLists.txt, like fuzz_sql. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cfg.h"
#include "gt_hmac.h"
#include "px_auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_auth: invariant violated: %s\n", what);
        abort();
    }
}

static px_auth_t *fuzz_auth(void)
{
    static px_auth_t *a;
    static const char yaml[] = "auth: {users: [{access_key: RocketMQ, secret_key: \"12345678\"}]}";
    cfg_t c;
    char err[256];

    if (a != NULL)
        return a;
    cfg_init(&c);
    fuzz_check(cfg_load_string(&c, "fuzz", yaml, sizeof(yaml) - 1, err, sizeof(err)) == GT_OK,
               "config loads");
    fuzz_check(px_auth_new(&c.auth, &a, err, sizeof(err)) == GT_OK, "auth builds");
    cfg_free(&c);
    return a;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data, *bad = NULL;
    px_auth_hdr_t h, h2;
    int64_t ms;
    char *z, why[512];

    if (px_auth_header_parse(s, size, &h, &bad) == GT_OK) {
        char hex[41], *again;
        size_t n;

        fuzz_check(h.ak >= s && h.ak + h.ak_len <= s + size, "access key inside the input");
        fuzz_check(h.ak_len > 0 && memchr(h.ak, '/', h.ak_len) == NULL, "access key shape");
        gt_hex_encode(h.sig, sizeof(h.sig), hex, sizeof(hex));
        n = h.ak_len + 80;
        again = malloc(n);
        fuzz_check(again != NULL, "malloc");
        snprintf(again, n, "MQv2-HMAC-SHA1 Credential=%.*s, Signature=%s", (int)h.ak_len, h.ak,
                 hex);
        /* A key with ',' or blanks at its ends does not survive printing
         * (the parser trims and splits there): compare clean keys only. */
        if (memchr(h.ak, ',', h.ak_len) == NULL && memchr(h.ak, '\0', h.ak_len) == NULL &&
            h.ak[0] != ' ' && h.ak[0] != '\t' &&
            h.ak[h.ak_len - 1] != ' ' && h.ak[h.ak_len - 1] != '\t') {
            fuzz_check(px_auth_header_parse(again, strlen(again), &h2, &bad) == GT_OK,
                       "printed header parses");
            fuzz_check(h2.ak_len == h.ak_len && memcmp(h2.ak, h.ak, h.ak_len) == 0 &&
                           memcmp(h2.sig, h.sig, sizeof(h.sig)) == 0,
                       "printed header round trip");
        }
        free(again);
    } else {
        fuzz_check(bad != NULL && bad[0] != '\0', "a reason");
    }
    if (px_auth_datetime_parse(s, size, &ms) == GT_OK) {
        time_t t = (time_t)(ms / 1000);
        struct tm tm;
        char back[96];

        fuzz_check(ms % 1000 == 0 && gmtime_r(&t, &tm) != NULL, "a whole second");
        snprintf(back, sizeof(back), "%04d%02d%02dT%02d%02d%02dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        fuzz_check(size == 16 && memcmp(back, s, 16) == 0, "date round trip");
    }
    if ((z = malloc(size + 1)) == NULL)
        return 0;
    memcpy(z, data, size);
    z[size] = '\0';
    if (px_auth_login(fuzz_auth(), z, "20231227T194619Z", 1703706379000LL, true, why,
                      sizeof(why)) != NULL) {
        for (char *p = z; *p != '\0'; p++)
            if (*p >= 'a' && *p <= 'f')
                *p = (char)(*p - 'a' + 'A');
        fuzz_check(strstr(z, "B78A646B41B898E9A4B565927A888B247EA32E86") != NULL,
                   "a login holds the right signature");
    } else {
        fuzz_check(why[0] != '\0', "a refusal has a reason");
    }
    free(z);
    return 0;
}
