/* Unit tests for the SQL92 property filter (common/filter/gt_sql.h).
 *
 * Most cases are tables: an expression and whether it matches one fixed
 * message (properties below), or an expression that must not compile, with
 * the 1-based position and a phrase the error must contain.  Separate tests
 * cover limits (length, nesting, long chains), the st_message_t bridge,
 * argument handling and concurrent evaluation of one compiled filter. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "gt_sql.h"
#include "st_pop.h" /* the store's bridge to st_message_t */

/* ---- the fixed message ------------------------------------------------- */

static const char *const props[][2] = {
    {"TAGS", "TagA"},
    {"a", "1"},
    {"b", "2.5"},
    {"c", "abc"},
    {"d", ""},
    {"neg", "-7"},
    {"big", "9223372036854775807"},
    {"flag", "TRUE"},
    {"f", "false"},
    {"num", "10"},
    {"s10", "010"},
    {"user.id", "42"},
    {"$x", "dollar"},
    {"Key", "upper"},
    {"quote", "it's"},
    {"sp", " 5"},
    {"exp", "1e3"},
    {"h", "hello world"},
};

static int lookups_bad; /* lookups whose name was not NUL-terminated at len */

static const char *lookup(void *ctx, const char *name, size_t len)
{
    (void)ctx;
    if (name[len] != '\0' || strlen(name) != len)
        lookups_bad++;
    for (size_t k = 0; k < sizeof props / sizeof props[0]; k++)
        if (strcmp(props[k][0], name) == 0)
            return props[k][1];
    return NULL;
}

/* Compiles and evaluates; -1 when the expression does not compile. */
static int run(const char *expr)
{
    char err[200];
    gt_sql_t *f = NULL;
    gt_err_t rc = gt_sql_compile(expr, strlen(expr), &f, err, sizeof err);
    if (rc != GT_OK) {
        fprintf(stderr, "\n  unexpected error for [%s]: %s\n", expr, err);
        return -1;
    }
    int r = gt_sql_eval(f, lookup, NULL) ? 1 : 0;
    gt_sql_free(f);
    return r;
}

typedef struct match_case {
    const char *expr;
    int want; /* 1 match, 0 no match */
} match_case_t;

static void check_cases(const match_case_t *cases, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        int got = run(cases[k].expr);
        if (got != cases[k].want)
            fprintf(stderr, "\n  [%s]: got %d, want %d\n", cases[k].expr, got, cases[k].want);
        CU_ASSERT_EQUAL(got, cases[k].want);
    }
    CU_ASSERT_EQUAL(lookups_bad, 0);
}

#define CHECK(tbl) check_cases(tbl, sizeof tbl / sizeof tbl[0])

/* ---- semantics --------------------------------------------------------- */

static void test_numeric(void)
{
    static const match_case_t t[] = {
        {"a = 1", 1},          {"a = 1.0", 1},        {"a <> 1", 0},
        {"a != 2", 1},         {"a > 0", 1},          {"a > 1", 0},
        {"a >= 1", 1},         {"a < 2", 1},          {"a <= 1", 1},
        {"a < 1", 0},          {"b > 2", 1},          {"b < 3", 1},
        {"b = 2.5", 1},        {"b > 2.5", 0},        {"b >= 2.5", 1},
        {"neg < 0", 1},        {"neg = -7", 1},       {"neg > -8", 1},
        {"neg < -7", 0},       {"neg = - -7", 0},     {"neg = -+7", 1},
        {"neg = - 7", 1},      {"num > 9", 1},        {"exp = 1000", 1},
        {"exp > 999.5", 1},    {"s10 = 10", 1},       {"user.id = 42", 1},
        {"big = 9223372036854775807", 1},
        {"big > 9223372036854775806", 1},
        {"a > -9223372036854775808", 1},
        {"a = 1L", 1},         {"a = 1l", 1},         {"a = +1", 1},
        {"a = 1.", 1},         {"b = .25e1", 1},      {"b = 25E-1", 1},
        {"b = 2.5e+0", 1},     {"a < 1e300", 1},
        /* a value that is not a number: UNKNOWN, never TRUE even under NOT */
        {"c > 1", 0},          {"NOT (c > 1)", 0},    {"c = 1", 0},
        {"c <> 1", 0},         {"sp = 5", 0},         {"d = 0", 0},
        {"NOT (c = 1)", 0},
        /* literals on both sides */
        {"1 = 1", 1},          {"1 < 2", 1},          {"2 < 1", 0},
        {"1 = 1.0", 1},        {"'5' = 5", 1},        {"2.5 >= 2.5", 1},
        {"a = b", 0},          {"a < b", 1},          {"num > b", 1},
        {"c < a", 0},
    };
    CHECK(t);
}

static void test_string(void)
{
    static const match_case_t t[] = {
        {"c = 'abc'", 1},      {"c = 'ABC'", 0},      {"c <> 'abd'", 1},
        {"c = 'ab'", 0},       {"c = 'abcd'", 0},     {"quote = 'it''s'", 1},
        {"d = ''", 1},         {"s10 = '10'", 0},     {"s10 = '010'", 1},
        {"a = '1'", 1},        {"a = '1.0'", 0},      {"'a' = 'a'", 1},
        {"'a' <> 'b'", 1},     {"$x = 'dollar'", 1},  {"Key = 'upper'", 1},
        {"key = 'upper'", 0},  {"key IS NULL", 1},    {"c IN ('abc')", 1},
        {"c NOT IN ('abc')", 0}, {"a IN ('1')", 1},   {"a IN ('1.0')", 0},
        {"c IN ('x', 'y', 'abc', 'z')", 1},           {"c NOT IN ('x', 'y')", 1},
        {"d IN ('')", 1},      {"quote IN ('it''s')", 1},
        {"h = 'hello world'", 1},
    };
    CHECK(t);
}

static void test_tags(void)
{
    static const match_case_t t[] = {
        {"TAGS = 'TagA'", 1},                  {"TAGS = 'taga'", 0},
        {"TAGS IN ('TagA', 'TagB')", 1},       {"TAGS IN ('TagB', 'TagC')", 0},
        {"TAGS NOT IN ('TagB')", 1},           {"TAGS IS NOT NULL", 1},
        {"tags = 'TagA'", 0},                  {"tags IS NULL", 1},
        {"(TAGS is not null and TAGS in ('TagA', 'TagB')) and (a is not null and a between 0 and 3)", 1},
        {"TAGS STARTSWITH 'Tag'", 1},
    };
    CHECK(t);
}

static void test_boolean(void)
{
    static const match_case_t t[] = {
        {"TRUE", 1},           {"FALSE", 0},          {"NOT FALSE", 1},
        {"true", 1},           {"NOT TRUE", 0},       {"flag = TRUE", 1},
        {"flag = true", 1},    {"f = FALSE", 1},      {"f = TRUE", 0},
        {"c = TRUE", 0},       {"c = FALSE", 1},      {"TRUE = TRUE", 1},
        {"TRUE <> FALSE", 1},  {"FALSE = TRUE", 0},   {"flag = 'TRUE'", 1},
        {"flag = 'true'", 0},  {"missing = TRUE", 0}, {"missing = FALSE", 0},
        {"TRUE AND a = 1", 1}, {"FALSE OR a = 1", 1}, {"(TRUE)", 1},
    };
    CHECK(t);
}

static void test_null(void)
{
    static const match_case_t t[] = {
        {"missing = 1", 0},              {"missing <> 1", 0},
        {"NOT (missing = 1)", 0},        {"missing > 1", 0},
        {"NOT (missing > 1)", 0},        {"missing = 'x'", 0},
        {"missing <> 'x'", 0},           {"missing IS NULL", 1},
        {"missing IS NOT NULL", 0},      {"NOT (missing IS NULL)", 0},
        {"NOT (missing IS NOT NULL)", 1}, {"missing IN ('a')", 0},
        {"missing NOT IN ('a')", 0},     {"NOT (missing IN ('a'))", 0},
        {"missing BETWEEN 1 AND 2", 0},  {"missing NOT BETWEEN 1 AND 2", 0},
        {"missing CONTAINS 'a'", 0},     {"missing NOT CONTAINS 'a'", 0},
        {"NOT (missing CONTAINS 'a')", 0},
        {"missing = 1 OR a = 1", 1},     {"missing = 1 AND a = 1", 0},
        {"NOT (missing = 1 AND a = 2)", 1}, /* UNKNOWN AND FALSE = FALSE */
        {"NOT (missing = 1 OR a = 2)", 0},  /* UNKNOWN OR FALSE = UNKNOWN */
        {"NOT (missing = 1 OR a = 1)", 0},
        {"missing = missing", 0},        {"missing IS NULL AND a = 1", 1},
        {"a = missing", 0},              {"d IS NULL", 0},
        {"d IS NOT NULL", 1},            {"NULL IS NULL", 1},
        {"1 IS NULL", 0},                {"'x' IS NOT NULL", 1},
        {"a is null", 0},                {"a IS not NULL", 1},
    };
    CHECK(t);
}

static void test_between(void)
{
    static const match_case_t t[] = {
        {"a BETWEEN 1 AND 3", 1},         {"a BETWEEN 2 AND 3", 0},
        {"b BETWEEN 2 AND 3", 1},         {"a NOT BETWEEN 2 AND 3", 1},
        {"a NOT BETWEEN 0 AND 3", 0},     {"a BETWEEN 1 AND 1", 1},
        {"neg BETWEEN -10 AND -5", 1},    {"c BETWEEN 1 AND 2", 0},
        {"NOT (c BETWEEN 1 AND 2)", 0},   {"a BETWEEN 0 AND num", 1},
        {"a BETWEEN missing AND 5", 0},   {"a NOT BETWEEN missing AND 0", 1},
        {"a BETWEEN 0 AND 2 AND b > 2", 1}, {"a BETWEEN 0 AND 2 AND b > 3", 0},
        {"a BETWEEN 0.5 AND 1.5", 1},     {"b BETWEEN 2 AND 2.4", 0},
        {"a NOT BETWEEN 3 AND 1", 1},     {"a between 0 and 2", 1},
        {"NOT a BETWEEN 0 AND 2", 0},     {"a BETWEEN (0) AND (2)", 1},
    };
    CHECK(t);
}

static void test_string_match(void)
{
    static const match_case_t t[] = {
        {"h CONTAINS 'lo w'", 1},         {"h CONTAINS 'xyz'", 0},
        {"h NOT CONTAINS 'xyz'", 1},      {"h NOT CONTAINS 'lo'", 0},
        {"h STARTSWITH 'hell'", 1},       {"h STARTSWITH 'world'", 0},
        {"h ENDSWITH 'world'", 1},        {"h ENDSWITH 'hello'", 0},
        {"h NOT ENDSWITH 'world'", 0},    {"h NOT STARTSWITH 'x'", 1},
        {"h CONTAINS ''", 0},             {"h NOT CONTAINS ''", 0},
        {"c CONTAINS 'abcd'", 0},         {"c ENDSWITH 'abc'", 1},
        {"c STARTSWITH 'abc'", 1},        {"'abc' CONTAINS 'b'", 1},
        {"h contains 'o'", 1},            {"d CONTAINS 'a'", 0},
        {"d NOT CONTAINS 'a'", 1},        {"h CONTAINS 'hello world!'", 0},
        {"quote CONTAINS ''''", 1},
    };
    CHECK(t);
}

static void test_precedence(void)
{
    static const match_case_t t[] = {
        {"a = 1 OR a = 2 AND a = 3", 1},       /* AND before OR */
        {"(a = 1 OR a = 2) AND a = 3", 0},
        {"a = 3 AND a = 2 OR a = 1", 1},
        {"a = 3 AND (a = 2 OR a = 1)", 0},
        {"NOT a = 1 OR a = 1", 1},             /* NOT before OR */
        {"NOT (a = 1 OR a = 1)", 0},
        {"NOT a = 2 AND a = 1", 1},            /* NOT before AND */
        {"NOT a = 1 AND a = 1", 0},
        {"NOT (a = 2 AND a = 1)", 1},
        {"FALSE AND FALSE OR TRUE", 1},
        {"FALSE AND (FALSE OR TRUE)", 0},
        {"TRUE OR TRUE AND FALSE", 1},
        {"NOT NOT a = 1", 1},                  {"NOT NOT NOT a = 1", 0},
        {"NOT NOT NOT NOT a = 1", 1},          {"NOT (NOT (a = 1))", 1},
        {"((((a = 1))))", 1},                  {"(a) = 1", 1},
        {"a = (1)", 1},                        {"((a)) = ((1))", 1},
        {"a = 1 AND b = 2.5 AND c = 'abc' AND TAGS = 'TagA'", 1},
        {"a = 2 OR b = 2 OR c = 'x' OR TAGS = 'TagA'", 1},
        {"a = 2 OR b = 2 OR c = 'x' OR TAGS = 'TagB'", 0},
    };
    CHECK(t);
}

static void test_whitespace_case(void)
{
    static const match_case_t t[] = {
        {"  a=1  ", 1},                   {"\ta\n=\r1\f", 1},
        {"(a=1)AND(b>2)", 1},             {"a=1 and b>2", 1},
        {"a = 1 And B IS NULL", 1},       {"a<>2", 1},
        {"a>=1", 1},                      {"a<=1", 1},
        {"a!=1", 0},                      {"TAGS in('TagA')", 1},
        {"a = 1 -- trailing comment", 1}, {"/* lead */ a = 1", 1},
        {"a /* mid */ = 1", 1},           {"a = 1 --\nAND b = 3", 0},
        {"a = 1 /* x */ OR /**/ FALSE", 1}, {"nOt a = 2", 1},
        {"a BeTwEeN 0 AnD 2", 1},         {"h eNdSwItH 'world'", 1},
    };
    CHECK(t);
}

/* How a property value is read when compared with a number. */
static const char *one_value;

static const char *lookup_one(void *ctx, const char *name, size_t len)
{
    (void)ctx;
    return len == 1 && name[0] == 'v' ? one_value : NULL;
}

static void test_value_formats(void)
{
    static const struct {
        const char *value, *expr;
        int want;
    } t[] = {
        {"5", "v = 5", 1},          {"+5", "v = 5", 1},        {"-5", "v = -5", 1},
        {"05", "v = 5", 1},         {"5.", "v = 5", 1},        {".5", "v = 0.5", 1},
        {"5e0", "v = 5", 1},        {"5E+1", "v = 50", 1},     {"500e-2", "v = 5", 1},
        {"-0", "v = 0", 1},         {"0.1", "v > 0.09", 1},
        {"9223372036854775808", "v > 9223372036854775807", 0}, /* both 2^63 as doubles */
        {"9223372036854775808", "v >= 9223372036854775807", 1},
        {"-9223372036854775808", "v = -9223372036854775808", 1},
        {"-9223372036854775809", "v < -9223372036854774000", 1},
        {"1e400", "v > 1e300", 1},  {"-1e400", "v < -1e300", 1},
        {"1e-400", "v = 0", 1},
        /* not numbers: UNKNOWN both ways */
        {" 5", "v = 5", 0},         {" 5", "NOT (v = 5)", 0},  {"5 ", "v = 5", 0},
        {"", "v = 0", 0},           {"+", "v = 0", 0},         {"-", "v = 0", 0},
        {".", "v = 0", 0},          {"e1", "v = 10", 0},       {"1e", "v = 1", 0},
        {"1e+", "v = 1", 0},        {"--5", "v = 5", 0},       {"0x10", "v = 16", 0},
        {"NaN", "v = 0", 0},        {"NaN", "v <> 0", 0},      {"Infinity", "v > 0", 0},
        {"inf", "v > 0", 0},        {"1_000", "v = 1000", 0},  {"5L", "v = 5", 0},
        {"1.2.3", "v > 1", 0},      {"5d", "v = 5", 0},        {"\xef\xbc\x95", "v = 5", 0},
        /* strings are compared as bytes */
        {"5", "v = '5'", 1},        {"5.0", "v = '5'", 0},     {"5.0", "v = 5", 1},
        {"5.0", "v <> 5", 0},
    };
    char err[200];

    for (size_t k = 0; k < sizeof t / sizeof t[0]; k++) {
        gt_sql_t *f = NULL;
        one_value = t[k].value;
        CU_ASSERT_EQUAL_FATAL(gt_sql_compile(t[k].expr, strlen(t[k].expr), &f, err, sizeof err),
                              GT_OK);
        int got = gt_sql_eval(f, lookup_one, NULL) ? 1 : 0;
        if (got != t[k].want)
            fprintf(stderr, "\n  v='%s' [%s]: got %d, want %d\n", t[k].value, t[k].expr, got,
                    t[k].want);
        CU_ASSERT_EQUAL(got, t[k].want);
        gt_sql_free(f);
    }
}

/* ---- parse errors ------------------------------------------------------ */

typedef struct err_case {
    const char *expr;
    size_t len;     /* 0: strlen */
    int pos;        /* expected "position N:", 0: do not check */
    const char *phrase;
} err_case_t;

static void test_errors(void)
{
    static const err_case_t t[] = {
        {"", 0, 1, "empty expression"},
        {"   ", 0, 4, "empty expression"},
        {"-- only a comment", 0, 18, "empty expression"},
        {"a", 0, 1, "bare value"},
        {"5", 0, 1, "bare value"},
        {"'x'", 0, 1, "bare value"},
        {"NOT a", 0, 5, "bare value"},
        {"a AND b = 1", 0, 1, "bare value"},
        {"a = 1 AND b", 0, 11, "bare value"},
        {"a = 1 OR 7", 0, 10, "bare value"},
        {"a =", 0, 4, "found end of input"},
        {"a = 1 AND", 0, 10, "found end of input"},
        {"a = 1 OR", 0, 9, "end of input"},
        {"NOT", 0, 4, "end of input"},
        {"(a = 1", 0, 7, "expected ')'"},
        {"((a = 1)", 0, 9, "expected ')'"},
        {"a = 1)", 0, 6, "AND, OR or end of input"},
        {"()", 0, 2, "a property, a literal or '('"},
        {"a = 1 b = 2", 0, 7, "AND, OR or end of input"},
        {"a 1", 0, 3, "expected an operator"},
        {"a LIKE 'x%'", 0, 3, "expected an operator"},
        {"a NOT LIKE 'x%'", 0, 7, "after NOT"},
        {"a NOT = 1", 0, 7, "after NOT"},
        {"a == 1", 0, 4, "a property, a literal or '('"},
        {"a = 1 AND AND b = 2", 0, 11, "found 'AND'"},
        {"a = 'x", 0, 5, "unterminated string literal"},
        {"a = 'it''s", 0, 5, "unterminated string literal"},
        {"a = NULL", 0, 5, "NULL cannot be compared"},
        {"NULL <> a", 0, 1, "NULL cannot be compared"},
        {"a > 'x'", 0, 5, "compares numbers"},
        {"'x' < 1", 0, 1, "compares numbers"},
        {"a > TRUE", 0, 5, "compares numbers"},
        {"a >= NULL", 0, 6, "compares numbers"},
        {"a BETWEEN 'a' AND 'b'", 0, 11, "compares numbers"},
        {"'a' BETWEEN 1 AND 2", 0, 1, "compares numbers"},
        {"a BETWEEN 3 AND 1", 0, 11, "reversed"},
        {"a BETWEEN 1.5 AND 1", 0, 11, "reversed"},
        {"a BETWEEN 1 OR 2", 0, 13, "expected AND"},
        {"a BETWEEN 1", 0, 12, "expected AND"},
        {"a IN ()", 0, 7, "a string literal"},
        {"a IN (1, 2)", 0, 7, "a string literal"},
        {"a IN 'x'", 0, 6, "'('"},
        {"a IN ('x'", 0, 10, "',' or ')'"},
        {"a IN ('x',)", 0, 11, "a string literal"},
        {"a IN ('x' 'y')", 0, 11, "',' or ')'"},
        {"1 IN ('x')", 0, 1, "IN needs a property"},
        {"'a' IN ('x')", 0, 1, "IN needs a property"},
        {"a IS 5", 0, 6, "NULL or NOT NULL"},
        {"a IS NOT 5", 0, 10, "expected NULL"},
        {"a IS", 0, 5, "end of input"},
        {"a ! 1", 0, 3, "unexpected character '!'"},
        {"a = 1 # x", 0, 7, "unexpected character '#'"},
        {"a = \x01", 0, 5, "unexpected byte 0x01"},
        {"a = \0", 5, 5, "unexpected byte 0x00"},
        {"a = 'x\0y'", 9, 7, "NUL byte"},
        {"a = \xc3\xa9", 0, 5, "unexpected byte 0xc3"},
        {"a = 99999999999999999999", 0, 5, "integer out of range"},
        {"a = 9223372036854775808", 0, 5, "integer out of range"},
        {"a = 1e999", 0, 5, "number out of range"},
        {"a = 1.2.3", 0, 5, "malformed number"},
        {"a = 12abc", 0, 5, "malformed number"},
        {"a = 1e", 0, 5, "malformed number"},
        {"a = 1.5L", 0, 5, "malformed number"},
        {"a = 1=1", 0, 6, "AND, OR or end of input"},
        {"a = -'x'", 0, 6, "a number after the sign"},
        {"a = -b", 0, 6, "a number after the sign"},
        {"a = -", 0, 6, "a number after the sign"},
        {"TRUE = 1", 0, 1, "boolean literal"},
        {"'a' = TRUE", 0, 1, "boolean literal"},
        {"(a = 1) = TRUE", 0, 2, "found a condition"},
        {"a = (b = 1)", 0, 6, "found a condition"},
        {"(a = 1) > 2", 0, 2, "found a condition"},
        {"(a = 1) IS NULL", 0, 2, "found a condition"},
        {"(a = 1) CONTAINS 'x'", 0, 2, "found a condition"},
        {"/* unterminated", 0, 1, "unterminated comment"},
        {"a = 1 /*", 0, 7, "unterminated comment"},
        {"a = 1 /* *", 0, 7, "unterminated comment"},
        {"a CONTAINS 1", 0, 12, "a string literal"},
        {"a STARTSWITH b", 0, 14, "a string literal"},
        {"1 CONTAINS 'x'", 0, 1, "needs a property or a string"},
        {"a < = 1", 0, 5, "a property, a literal or '('"},
        {"AND = 1", 0, 1, "a property, a literal or '('"},
        {"a = 1 OR OR", 0, 10, "found 'OR'"},
        {"a IN ('x') = 1", 0, 12, "AND, OR or end of input"},
        {"a = 1 = 1", 0, 7, "AND, OR or end of input"},
        {"1a = 1", 0, 1, "malformed number"},
    };
    char err[256];

    for (size_t k = 0; k < sizeof t / sizeof t[0]; k++) {
        size_t len = t[k].len != 0 ? t[k].len : strlen(t[k].expr);
        gt_sql_t *f = (gt_sql_t *)&err; /* must be reset to NULL */
        memset(err, 'x', sizeof err);
        gt_err_t rc = gt_sql_compile(t[k].expr, len, &f, err, sizeof err);
        CU_ASSERT_EQUAL(rc, GT_EINVAL);
        CU_ASSERT_PTR_NULL(f);
        if (rc != GT_EINVAL) {
            fprintf(stderr, "\n  [%s] compiled\n", t[k].expr);
            gt_sql_free(f);
            continue;
        }
        CU_ASSERT_PTR_NOT_NULL(memchr(err, '\0', sizeof err));
        char want[32];
        snprintf(want, sizeof want, "position %d: ", t[k].pos);
        bool ok = strstr(err, t[k].phrase) != NULL &&
                  (t[k].pos == 0 || strncmp(err, want, strlen(want)) == 0);
        if (!ok)
            fprintf(stderr, "\n  [%s]: got \"%s\", want \"%s...%s\"\n", t[k].expr, err,
                    want, t[k].phrase);
        CU_ASSERT(ok);
    }
}

/* ---- limits ------------------------------------------------------------ */

static int compile_only(const char *expr, size_t len, char *err, size_t errlen)
{
    gt_sql_t *f = NULL;
    gt_err_t rc = gt_sql_compile(expr, len, &f, err, errlen);
    int r = rc == GT_OK ? (gt_sql_eval(f, lookup, NULL) ? 1 : 0) : -1;
    gt_sql_free(f);
    return r;
}

static void test_limits(void)
{
    char err[200];
    size_t max = 65536;
    char *buf = malloc(max + 2);
    CU_ASSERT_FATAL(buf != NULL);

    /* Exactly the maximum length compiles; one byte more does not. */
    memset(buf, ' ', max + 1);
    memcpy(buf, "a = 1", 5);
    CU_ASSERT_EQUAL(compile_only(buf, max, err, sizeof err), 1);
    CU_ASSERT_EQUAL(compile_only(buf, max + 1, err, sizeof err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "too long"));

    /* 64 levels of parentheses compile, 65 do not. */
    for (int depth = 64; depth <= 65; depth++) {
        size_t o = 0;
        for (int k = 0; k < depth; k++)
            buf[o++] = '(';
        memcpy(buf + o, "a = 1", 5);
        o += 5;
        for (int k = 0; k < depth; k++)
            buf[o++] = ')';
        int r = compile_only(buf, o, err, sizeof err);
        CU_ASSERT_EQUAL(r, depth == 64 ? 1 : -1);
        if (depth == 65)
            CU_ASSERT_PTR_NOT_NULL(strstr(err, "position 65: expression nested too deeply"));
    }

    /* A maximal run of '(' fails cleanly. */
    memset(buf, '(', max);
    CU_ASSERT_EQUAL(compile_only(buf, max, err, sizeof err), -1);

    /* Long flat chains are lists, not deep trees. */
    size_t o = 0;
    while (o + 16 < max) {
        memcpy(buf + o, "a = 2 OR ", 9);
        o += 9;
    }
    memcpy(buf + o, "a = 1", 5);
    CU_ASSERT_EQUAL(compile_only(buf, o + 5, err, sizeof err), 1);
    o = 0;
    while (o + 16 < max) {
        memcpy(buf + o, "a = 1 AND ", 10);
        o += 10;
    }
    memcpy(buf + o, "a = 2", 5);
    CU_ASSERT_EQUAL(compile_only(buf, o + 5, err, sizeof err), 0);

    /* A long run of NOT folds. */
    o = 0;
    while (o + 16 < max) {
        memcpy(buf + o, "NOT ", 4);
        o += 4;
    }
    size_t nots = o / 4;
    memcpy(buf + o, "a = 1", 5);
    CU_ASSERT_EQUAL(compile_only(buf, o + 5, err, sizeof err), nots % 2 == 0 ? 1 : 0);

    /* A long run of signs folds too. */
    o = 0;
    memcpy(buf, "neg = ", 6);
    o = 6;
    while (o + 16 < max)
        buf[o++] = '+';
    buf[o++] = '-';
    buf[o++] = '7';
    CU_ASSERT_EQUAL(compile_only(buf, o, err, sizeof err), 1);

    /* A long IN list. */
    memcpy(buf, "c IN (", 6);
    o = 6;
    while (o + 16 < max) {
        memcpy(buf + o, "'x', ", 5);
        o += 5;
    }
    memcpy(buf + o, "'abc')", 6);
    CU_ASSERT_EQUAL(compile_only(buf, o + 6, err, sizeof err), 1);

    /* A long string and a long name. */
    memcpy(buf, "c = '", 5);
    memset(buf + 5, 'z', max - 6);
    buf[max - 1] = '\'';
    CU_ASSERT_EQUAL(compile_only(buf, max, err, sizeof err), 0);
    memset(buf, 'n', max - 12);
    memcpy(buf + max - 12, " IS NULL    ", 12);
    CU_ASSERT_EQUAL(compile_only(buf, max, err, sizeof err), 1);

    /* A long decimal literal. */
    memcpy(buf, "b = 2.", 6);
    memset(buf + 6, '5', max - 6);
    CU_ASSERT_EQUAL(compile_only(buf, max, err, sizeof err), 0);
    const char *close = "b < 2.5000000000001";
    CU_ASSERT_EQUAL(compile_only(close, strlen(close), err, sizeof err), 1);
    free(buf);
}

/* ---- API edges --------------------------------------------------------- */

static void test_api(void)
{
    char err[200];
    gt_sql_t *f = NULL;

    CU_ASSERT_EQUAL(gt_sql_compile("a = 1", 5, NULL, err, sizeof err), GT_EINVAL);
    CU_ASSERT_EQUAL(gt_sql_compile(NULL, 3, &f, err, sizeof err), GT_EINVAL);
    CU_ASSERT_PTR_NULL(f);
    CU_ASSERT_EQUAL(gt_sql_compile(NULL, 0, &f, err, sizeof err), GT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "empty"));

    /* No error buffer, and a tiny one: still NUL-terminated. */
    CU_ASSERT_EQUAL(gt_sql_compile("a =", 3, &f, NULL, 0), GT_EINVAL);
    memset(err, 'x', sizeof err);
    CU_ASSERT_EQUAL(gt_sql_compile("a =", 3, &f, err, 5), GT_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "posi");
    memset(err, 'x', sizeof err);
    CU_ASSERT_EQUAL(gt_sql_compile("a =", 3, &f, err, 1), GT_EINVAL);
    CU_ASSERT_EQUAL(err[0], '\0');
    CU_ASSERT_EQUAL(err[1], 'x');

    /* The text need not be NUL-terminated: only len bytes are read. */
    CU_ASSERT_EQUAL(gt_sql_compile("a = 1 garbage", 5, &f, err, sizeof err), GT_OK);
    CU_ASSERT_TRUE(gt_sql_eval(f, lookup, NULL));
    /* No lookup: every property is missing. */
    CU_ASSERT_FALSE(gt_sql_eval(f, NULL, NULL));
    gt_sql_free(f);
    f = NULL;
    CU_ASSERT_EQUAL(gt_sql_compile("a IS NULL", 9, &f, err, sizeof err), GT_OK);
    CU_ASSERT_TRUE(gt_sql_eval(f, NULL, NULL));
    gt_sql_free(f);

    CU_ASSERT_FALSE(gt_sql_eval(NULL, lookup, NULL));
    gt_sql_free(NULL);
}

/* ---- the st_message_t bridge ------------------------------------------- */

static bool match_msg(const char *expr, const st_message_t *m)
{
    st_filter_t f;
    if (st_filter_compile(ST_FILTER_SQL92, expr, &f) != GT_OK) {
        fprintf(stderr, "\n  [%s]: does not compile\n", expr);
        CU_FAIL("compile");
        return false;
    }
    bool r = st_filter_match(&f, m);
    st_filter_free(&f);
    return r;
}

static void test_message(void)
{
    st_message_t m;

    memset(&m, 0, sizeof m);
    m.tag = "TagA";
    m.props[0] = (st_prop_t){"region", "eu"};
    m.props[1] = (st_prop_t){"price", "100"};
    m.props[2] = (st_prop_t){"empty", NULL};
    m.props[3] = (st_prop_t){NULL, "orphan"};
    m.props[4] = (st_prop_t){"price", "1"}; /* duplicate: first wins */
    m.props[5] = (st_prop_t){"hidden", "x"}; /* beyond nprops */
    m.nprops = 5;

    CU_ASSERT_TRUE(match_msg("TAGS = 'TagA' AND region = 'eu' AND price > 99", &m));
    CU_ASSERT_TRUE(match_msg("price = 100", &m));
    CU_ASSERT_TRUE(match_msg("empty = '' AND empty IS NOT NULL", &m));
    CU_ASSERT_TRUE(match_msg("hidden IS NULL", &m));
    CU_ASSERT_TRUE(match_msg("regio IS NULL AND regionx IS NULL", &m));
    CU_ASSERT_FALSE(match_msg("region IN ('us', 'ap')", &m));
    CU_ASSERT_TRUE(match_msg("TAGS IS NOT NULL", &m));
    m.tag = "";
    CU_ASSERT_TRUE(match_msg("TAGS IS NULL", &m));
    m.tag = NULL;
    CU_ASSERT_TRUE(match_msg("TAGS IS NULL", &m));
    CU_ASSERT_FALSE(match_msg("TAGS = 'TagA'", &m));
    /* A user property called TAGS does not replace the tag. */
    m.props[0] = (st_prop_t){"TAGS", "fake"};
    CU_ASSERT_TRUE(match_msg("TAGS IS NULL", &m));
    m.nprops = 1000; /* corrupt count: clamped to ST_MAX_PROPS */
    for (int k = 6; k < ST_MAX_PROPS; k++)
        m.props[k] = (st_prop_t){"k", "v"};
    CU_ASSERT_TRUE(match_msg("k = 'v'", &m));
}

/* ---- concurrency ------------------------------------------------------- */

typedef struct worker {
    const gt_sql_t *f;
    int mismatches;
} worker_t;

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    for (int k = 0; k < 20000; k++) {
        if (!gt_sql_eval(w->f, lookup, NULL))
            w->mismatches++;
        if (gt_sql_eval(w->f, NULL, NULL))
            w->mismatches++;
    }
    return NULL;
}

static void test_threads(void)
{
    const char *expr = "TAGS IN ('TagA', 'TagB') AND (b BETWEEN 2 AND 3 OR c = 'x') "
                       "AND NOT (h CONTAINS 'bye') AND missing IS NULL";
    gt_sql_t *f = NULL;
    CU_ASSERT_EQUAL_FATAL(gt_sql_compile(expr, strlen(expr), &f, NULL, 0), GT_OK);
    pthread_t th[4];
    worker_t w[4];
    for (int k = 0; k < 4; k++) {
        w[k] = (worker_t){f, 0};
        CU_ASSERT_EQUAL(pthread_create(&th[k], NULL, worker_main, &w[k]), 0);
    }
    for (int k = 0; k < 4; k++) {
        pthread_join(th[k], NULL);
        CU_ASSERT_EQUAL(w[k].mismatches, 0);
    }
    gt_sql_free(f);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("filter_sql", NULL, NULL);
    if (s == NULL ||
        !CU_add_test(s, "numeric comparisons", test_numeric) ||
        !CU_add_test(s, "string comparisons and IN", test_string) ||
        !CU_add_test(s, "TAGS pseudo-property", test_tags) ||
        !CU_add_test(s, "booleans", test_boolean) ||
        !CU_add_test(s, "null semantics", test_null) ||
        !CU_add_test(s, "BETWEEN", test_between) ||
        !CU_add_test(s, "CONTAINS / STARTSWITH / ENDSWITH", test_string_match) ||
        !CU_add_test(s, "precedence", test_precedence) ||
        !CU_add_test(s, "whitespace, case, comments", test_whitespace_case) ||
        !CU_add_test(s, "property values read as numbers", test_value_formats) ||
        !CU_add_test(s, "parse errors", test_errors) ||
        !CU_add_test(s, "limits", test_limits) ||
        !CU_add_test(s, "API edges", test_api) ||
        !CU_add_test(s, "st_message_t bridge", test_message) ||
        !CU_add_test(s, "concurrent evaluation", test_threads)) {
        CU_cleanup_registry();
        return 1;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return failed != 0 ? 1 : 0;
}
