/* libFuzzer target for the SQL92 filter compiler and evaluator
 * (common/filter/gt_sql.h).
 *
 * Each input is an expression.  It must either compile, and then evaluate
 * without incident against a fixed message and an empty one, giving the
 * same answer every time; or fail with GT_EINVAL, a NULL filter and a
 * NUL-terminated "position N: ..." message.  As a cheap oracle, an
 * expression that compiles must still compile inside "(...)" and
 * "NOT (...)" (unless that crosses the depth or length limit), with the
 * same result in parentheses and never TRUE under NOT when it was TRUE
 * without.  Anything else aborts, so the fuzzer (and the corpus replay
 * under CTest) reports it.  Built twice by
 * CMakeLists.txt: with -fsanitize=fuzzer when GANTRY_FUZZ=ON under clang,
 * and always with fuzz_replay.c's main(). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt_sql.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const fuzz_props[][2] = {
    {"TAGS", "TagA"}, {"a", "1"},         {"b", "2.5"},    {"c", "abc"},
    {"d", ""},        {"neg", "-7"},      {"big", "9223372036854775807"},
    {"e", "1e400"},   {"t", "true"},      {"x.y", "42"},   {"$z", "-0.5e-3"},
    {"q", "it's"},    {"h", "hello world"}, {"min", "-9223372036854775808"},
};

static void fuzz_check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_sql: invariant violated: %s\n", what);
        abort();
    }
}

static const char *fuzz_lookup(void *ctx, const char *name, size_t len)
{
    (void)ctx;
    fuzz_check(name[len] == '\0' && strlen(name) == len, "lookup name length");
    for (size_t k = 0; k < sizeof fuzz_props / sizeof fuzz_props[0]; k++)
        if (strcmp(fuzz_props[k][0], name) == 0)
            return fuzz_props[k][1];
    return NULL;
}

/* Compiles `pre` + input + "\n)" (the newline ends a trailing "--"
 * comment) and evaluates it; -1 when it hit a limit. */
static int fuzz_wrapped(const char *pre, const uint8_t *data, size_t size)
{
    size_t plen = strlen(pre), n = plen + size + 2;
    char *buf = malloc(n), err[160];
    gt_sql_t *f = NULL;
    int r = -1;

    fuzz_check(buf != NULL, "malloc");
    memcpy(buf, pre, plen);
    memcpy(buf + plen, data, size);
    memcpy(buf + plen + size, "\n)", 2);
    if (gt_sql_compile(buf, n, &f, err, sizeof err) == GT_OK) {
        r = gt_sql_eval(f, fuzz_lookup, NULL) ? 1 : 0;
    } else {
        fuzz_check(strstr(err, "nested too deeply") != NULL ||
                       strncmp(err, "expression too long", 19) == 0,
                   "wrapped expression compiles");
    }
    gt_sql_free(f);
    free(buf);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[160];
    gt_sql_t *f = (gt_sql_t *)err;

    memset(err, 'x', sizeof err);
    gt_err_t rc = gt_sql_compile((const char *)data, size, &f, err, sizeof err);
    if (rc != GT_OK) {
        fuzz_check(rc == GT_EINVAL, "error code");
        fuzz_check(f == NULL, "filter NULL on error");
        fuzz_check(memchr(err, '\0', sizeof err) != NULL, "error NUL-terminated");
        fuzz_check(strncmp(err, "position ", 9) == 0 ||
                       strncmp(err, "expression too long", 19) == 0,
                   "error names a position");
        return 0;
    }
    fuzz_check(f != NULL, "filter on success");
    bool r1 = gt_sql_eval(f, fuzz_lookup, NULL);
    bool r2 = gt_sql_eval(f, fuzz_lookup, NULL);
    fuzz_check(r1 == r2, "deterministic");
    (void)gt_sql_eval(f, NULL, NULL);
    gt_sql_free(f);

    int in_parens = fuzz_wrapped("(", data, size);
    fuzz_check(in_parens == -1 || in_parens == (int)r1, "same result in parentheses");
    int negated = fuzz_wrapped("NOT (", data, size);
    fuzz_check(negated == -1 || !(r1 && negated == 1), "NOT of TRUE is not TRUE");
    return 0;
}
