/* gantry-admin's table output.  See ga.h. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ga.h"

#define GA_COLS_MAX 16
#define GA_CELL_MAX 96

static bool is_time_key(const char *k)
{
    size_t n = strlen(k);

    return n > 8 && strcmp(k + n - 3, "_ms") == 0 &&
           (strstr(k, "time") != NULL || strstr(k, "since") != NULL);
}

/* One scalar as text into buf. */
static void cell(const char *key, const json_t *v, char *buf, size_t cap)
{
    if (json_is_string(v)) {
        snprintf(buf, cap, "%s", json_string_value(v));
    } else if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);

        if (key != NULL && is_time_key(key) && i > 0) {
            time_t s = (time_t)(i / 1000);
            struct tm tm;

            gmtime_r(&s, &tm);
            snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (int)(i % 1000));
        } else {
            snprintf(buf, cap, "%" JSON_INTEGER_FORMAT, i);
        }
    } else if (json_is_real(v)) {
        snprintf(buf, cap, "%g", json_real_value(v));
    } else if (json_is_true(v)) {
        snprintf(buf, cap, "yes");
    } else if (json_is_false(v)) {
        snprintf(buf, cap, "no");
    } else if (json_is_null(v)) {
        snprintf(buf, cap, "-");
    } else if (json_is_array(v)) {
        size_t i, o = 0;
        const json_t *e;

        buf[0] = '\0';
        json_array_foreach(v, i, e) {
            char one[GA_CELL_MAX];

            cell(NULL, e, one, sizeof(one));
            o += (size_t)snprintf(buf + o, o < cap ? cap - o : 0, "%s%s", i ? "," : "",
                                  one);
            if (o >= cap)
                break;
        }
        if (o == 0)
            snprintf(buf, cap, "-");
    } else {
        snprintf(buf, cap, "{...}");
    }
}

static bool is_scalar(const json_t *v)
{
    return !json_is_object(v) &&
           !(json_is_array(v) && json_array_size(v) > 0 &&
             json_is_object(json_array_get(v, 0)));
}

static void table(FILE *out, const json_t *rows, int indent)
{
    const char *cols[GA_COLS_MAX];
    size_t ncol = 0, width[GA_COLS_MAX], i;
    const json_t *first = json_array_get(rows, 0), *row, *v;
    const char *k;
    char buf[GA_CELL_MAX];

    json_object_foreach((json_t *)first, k, v) {
        if (ncol < GA_COLS_MAX && is_scalar(v)) {
            cols[ncol] = k;
            width[ncol] = strlen(k);
            ncol++;
        }
    }
    json_array_foreach(rows, i, row) {
        for (size_t c = 0; c < ncol; c++) {
            cell(cols[c], json_object_get(row, cols[c]), buf, sizeof(buf));
            if (strlen(buf) > width[c])
                width[c] = strlen(buf);
        }
    }
    fprintf(out, "%*s", indent, "");
    for (size_t c = 0; c < ncol; c++) {
        for (const char *p = cols[c]; *p != '\0'; p++)
            fputc(*p >= 'a' && *p <= 'z' ? *p - 32 : *p, out);
        fprintf(out, "%*s", c + 1 < ncol ? (int)(width[c] - strlen(cols[c]) + 2) : 0, "");
    }
    fputc('\n', out);
    json_array_foreach(rows, i, row) {
        fprintf(out, "%*s", indent, "");
        for (size_t c = 0; c < ncol; c++) {
            cell(cols[c], json_object_get(row, cols[c]), buf, sizeof(buf));
            fprintf(out, "%-*s", c + 1 < ncol ? (int)width[c] + 2 : 0, buf);
        }
        fputc('\n', out);
    }
}

static void print_obj(FILE *out, const json_t *j, int indent)
{
    const char *k;
    const json_t *v;
    char buf[GA_CELL_MAX];

    /* scalars first, then the tables */
    json_object_foreach((json_t *)j, k, v) {
        if (!is_scalar(v))
            continue;
        if (json_is_string(v) && strchr(json_string_value(v), '\n') != NULL) {
            fprintf(out, "%*s%s: |\n", indent, "", k);
            for (const char *p = json_string_value(v); *p != '\0';) {
                const char *e = strchr(p, '\n');
                int n = e != NULL ? (int)(e - p) : (int)strlen(p);

                fprintf(out, "%*s  %.*s\n", indent, "", n, p);
                p += n + (e != NULL);
            }
            continue;
        }
        if (json_is_string(v))
            snprintf(buf, sizeof(buf), "%s", json_string_value(v));
        else
            cell(k, v, buf, sizeof(buf));
        /* long strings (bodies) in full */
        if (json_is_string(v) && strlen(json_string_value(v)) >= sizeof(buf) - 1)
            fprintf(out, "%*s%s: %s\n", indent, "", k, json_string_value(v));
        else
            fprintf(out, "%*s%s: %s\n", indent, "", k, buf);
    }
    json_object_foreach((json_t *)j, k, v) {
        if (is_scalar(v))
            continue;
        if (json_is_object(v)) {
            fprintf(out, "%*s%s:\n", indent, "", k);
            print_obj(out, v, indent + 2);
        } else {
            fprintf(out, "%*s%s:\n", indent, "", k);
            table(out, v, indent + 2);
        }
    }
}

void ga_print(FILE *out, const json_t *j)
{
    /* a list answer ({"topics": [...]}) is just its table */
    if (json_is_object(j) && json_object_size(j) == 1) {
        const json_t *v = json_object_iter_value(json_object_iter((json_t *)j));

        const char *key = json_object_iter_key(json_object_iter((json_t *)j));

        if (json_is_array(v) && strcmp(key, "messages") == 0) {
            size_t i;
            const json_t *m;

            json_array_foreach(v, i, m) {
                if (i > 0)
                    fputc('\n', out);
                print_obj(out, m, 0);
            }
            return;
        }
        if (json_is_array(v)) {
            if (json_array_size(v) == 0)
                fprintf(out, "(none)\n");
            else if (json_is_object(json_array_get(v, 0)))
                table(out, v, 0);
            else
                print_obj(out, j, 0);
            return;
        }
    }
    if (json_is_object(j))
        print_obj(out, j, 0);
}
