/* Per-field operations driven by a descriptor: parse and validate a scalar
 * into a field, set defaults, free, and print as YAML.
 *
 * Every value, whether it comes from the file, a command-line override or a
 * table default, goes through cfg_field_parse(), so all three obey the same
 * types and ranges.  A field is written only after its value has passed. */
#include "cfg_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool cfg_scalar_is(const char *text, size_t len, const char *word)
{
    return strlen(word) == len && memcmp(text, word, len) == 0;
}

/* YAML's plain null: empty, ~, null, Null, NULL. */
static bool cfg_is_null(const char *text, size_t len)
{
    return len == 0 || cfg_scalar_is(text, len, "~") ||
           cfg_scalar_is(text, len, "null") ||
           cfg_scalar_is(text, len, "Null") ||
           cfg_scalar_is(text, len, "NULL");
}

/* Decimal integer with an optional sign.  Returns 0, or -1 when text is not
 * an integer, or 1 when it is one but overflows int64. */
static int cfg_parse_int(const char *text, size_t len, int64_t *out)
{
    char buf[32];
    char *end;
    size_t i = 0;

    if (len > 0 && (text[0] == '-' || text[0] == '+'))
        i++;
    if (i == len)
        return -1;
    for (; i < len; i++)
        if (text[i] < '0' || text[i] > '9')
            return -1;
    if (len >= sizeof(buf))
        return 1;
    memcpy(buf, text, len);
    buf[len] = '\0';
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno == ERANGE)
        return 1;
    *out = (int64_t)v;
    return 0;
}

static int cfg_choice_index(const cfg_desc_t *d, const char *text, size_t len)
{
    for (int i = 0; d->choices[i] != NULL; i++)
        if (strlen(d->choices[i]) == len &&
            strncasecmp(d->choices[i], text, len) == 0)
            return i;
    return -1;
}

static void cfg_choices_join(const cfg_desc_t *d, char *buf, size_t bufsz)
{
    size_t n = 0;

    buf[0] = '\0';
    for (int i = 0; d->choices[i] != NULL && n < bufsz; i++) {
        int w = snprintf(buf + n, bufsz - n, "%s%s", i ? "|" : "",
                         d->choices[i]);
        if (w < 0)
            break;
        n += (size_t)w;
    }
}

static gt_err_t cfg_parse_str(const cfg_desc_t *d, char **field,
                              const char *text, size_t len, char *why,
                              size_t whylen)
{
    gt_err_t rc;
    char *s = strndup(text, len);

    if (s == NULL) {
        snprintf(why, whylen, "out of memory");
        return GT_ENOMEM;
    }
    if (d->check != NULL && (rc = d->check(s, why, whylen)) != GT_OK) {
        free(s);
        return rc;
    }
    free(*field);
    *field = s;
    return GT_OK;
}

static gt_err_t cfg_parse_intfield(const cfg_desc_t *d, void *field,
                                   const char *text, size_t len, bool quoted,
                                   char *why, size_t whylen)
{
    char q[96];
    int64_t v = 0;
    int r = quoted ? -1 : cfg_parse_int(text, len, &v);

    cfg_msg_quote(q, sizeof(q), text, len);
    if (r < 0) {
        snprintf(why, whylen, "%s is not an integer%s", q,
                 quoted ? " (it is quoted, so it is a string)" : "");
        return GT_EINVAL;
    }
    if (r > 0 || v < d->min || v > d->max) {
        snprintf(why, whylen, "%.*s is out of range (%" PRId64 "..%" PRId64
                 ")", (int)len, text, d->min, d->max);
        return GT_EINVAL;
    }
    if (d->size == sizeof(int64_t))
        *(int64_t *)field = v;
    else
        *(int *)field = (int)v;
    return GT_OK;
}

static gt_err_t cfg_parse_bool(void *field, const char *text, size_t len,
                               bool quoted, char *why, size_t whylen)
{
    static const char *const yes[] = {"true", "True", "TRUE"};
    static const char *const no[] = {"false", "False", "FALSE"};
    char q[96];

    for (size_t i = 0; !quoted && i < 3; i++) {
        if (cfg_scalar_is(text, len, yes[i])) {
            *(bool *)field = true;
            return GT_OK;
        }
        if (cfg_scalar_is(text, len, no[i])) {
            *(bool *)field = false;
            return GT_OK;
        }
    }
    snprintf(why, whylen, "%s is not a boolean (true|false)%s",
             cfg_msg_quote(q, sizeof(q), text, len),
             quoted ? "; it is quoted, so it is a string" : "");
    return GT_EINVAL;
}

static gt_err_t cfg_parse_choice(const cfg_desc_t *d, void *field,
                                 const char *text, size_t len, char *why,
                                 size_t whylen)
{
    char q[96], list[128];
    int idx = cfg_choice_index(d, text, len);

    if (idx < 0) {
        cfg_choices_join(d, list, sizeof(list));
        snprintf(why, whylen, "%s is not one of %s",
                 cfg_msg_quote(q, sizeof(q), text, len), list);
        return GT_EINVAL;
    }
    if (d->type == CFG_T_CHOICE) {
        char *s = strdup(d->choices[idx]);
        if (s == NULL) {
            snprintf(why, whylen, "out of memory");
            return GT_ENOMEM;
        }
        free(*(char **)field);
        *(char **)field = s;
    } else if (d->size == sizeof(bool)) {
        *(bool *)field = idx != 0;
    } else {
        *(int *)field = idx;
    }
    return GT_OK;
}

gt_err_t cfg_field_parse(const cfg_desc_t *d, void *base, const char *text,
                         size_t len, bool quoted, char *why, size_t whylen)
{
    void *field = (char *)base + d->off;

    if (!quoted && cfg_is_null(text, len)) {
        snprintf(why, whylen, "has no value");
        return GT_EINVAL;
    }
    if (memchr(text, '\0', len) != NULL) {
        snprintf(why, whylen, "contains a NUL character");
        return GT_EINVAL;
    }
    switch (d->type) {
    case CFG_T_STR:
        return cfg_parse_str(d, (char **)field, text, len, why, whylen);
    case CFG_T_INT:
        return cfg_parse_intfield(d, field, text, len, quoted, why, whylen);
    case CFG_T_BOOL:
        return cfg_parse_bool(field, text, len, quoted, why, whylen);
    case CFG_T_CHOICE:
    case CFG_T_ENUM:
        return cfg_parse_choice(d, field, text, len, why, whylen);
    case CFG_T_STRLIST:
    case CFG_T_LIST:
        snprintf(why, whylen, "expected a list, got a scalar");
        return GT_EINVAL;
    }
    snprintf(why, whylen, "unknown field type");
    return GT_EINVAL;
}

gt_err_t cfg_fields_default(const cfg_desc_t *keys, size_t n, void *base)
{
    char why[256];

    for (size_t i = 0; i < n; i++) {
        const cfg_desc_t *d = &keys[i];
        gt_err_t rc;

        if (d->def == NULL || d->def == CFG_OPTIONAL || d->type == CFG_T_LIST)
            continue;
        if (d->type == CFG_T_STRLIST) {
            cfg_strlist_t *l = (cfg_strlist_t *)((char *)base + d->off);
            if (d->def[0] != '\0' &&
                cfg_strlist_add(l, d->def, strlen(d->def)) != GT_OK)
                return GT_ENOMEM;
            continue;
        }
        rc = cfg_field_parse(d, base, d->def, strlen(d->def), false, why,
                             sizeof(why));
        if (rc != GT_OK)
            return rc; /* GT_ENOMEM; the tables' defaults are tested valid */
    }
    return GT_OK;
}

const char cfg_optional[] = "";

gt_err_t cfg_strlist_add(cfg_strlist_t *l, const char *s, size_t len)
{
    char **nv = realloc(l->v, (l->n + 1) * sizeof(*nv));
    char *c;

    if (nv == NULL)
        return GT_ENOMEM;
    l->v = nv;
    if ((c = strndup(s, len)) == NULL)
        return GT_ENOMEM;
    l->v[l->n++] = c;
    return GT_OK;
}

void cfg_strlist_free(cfg_strlist_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

void cfg_list_free(const cfg_section_t *sec, void *base)
{
    char **arr = (char **)((char *)base + sec->list_off);
    size_t *n = (size_t *)((char *)base + sec->count_off);

    for (size_t j = 0; j < *n; j++)
        cfg_fields_free(sec->keys, sec->n_keys, *arr + j * sec->elem_size);
    free(*arr);
    *arr = NULL;
    *n = 0;
}

void cfg_fields_free(const cfg_desc_t *keys, size_t n, void *base)
{
    for (size_t i = 0; i < n; i++) {
        void *field = (char *)base + keys[i].off;

        if (keys[i].type == CFG_T_STR || keys[i].type == CFG_T_CHOICE) {
            free(*(char **)field);
            *(char **)field = NULL;
        } else if (keys[i].type == CFG_T_STRLIST) {
            cfg_strlist_free(field);
        } else if (keys[i].type == CFG_T_LIST) {
            cfg_list_free(keys[i].sub, field);
        }
    }
}

/* A list section's elements as a YAML flow sequence of flow mappings. */
static void cfg_list_print(const cfg_section_t *sec, const void *base, FILE *out)
{
    const char *arr = *(char *const *)((const char *)base + sec->list_off);
    size_t n = *(const size_t *)((const char *)base + sec->count_off);

    fputc('[', out);
    for (size_t j = 0; j < n; j++) {
        fputs(j ? ", {" : "{", out);
        for (size_t k = 0; k < sec->n_keys; k++) {
            const cfg_desc_t *d = &sec->keys[k];
            const void *f = arr + j * sec->elem_size + d->off;

            if (d->type == CFG_T_STR && *(char *const *)f == NULL)
                continue; /* an optional key that was not given */
            fprintf(out, "%s%s: ", k ? ", " : "", d->key);
            cfg_field_print(d, arr + j * sec->elem_size, out);
        }
        fputc('}', out);
    }
    fputc(']', out);
}

void cfg_field_print(const cfg_desc_t *d, const void *base, FILE *out)
{
    const void *field = (const char *)base + d->off;

    switch (d->type) {
    case CFG_T_STR:
        /* A set secret is never printed (--print-config, the admin API). */
        cfg_yaml_quote(out, d->secret && *(char *const *)field != NULL ? CFG_SECRET_MASK
                                                                        : *(char *const *)field);
        break;
    case CFG_T_INT:
        if (d->size == sizeof(int64_t))
            fprintf(out, "%" PRId64, *(const int64_t *)field);
        else
            fprintf(out, "%d", *(const int *)field);
        break;
    case CFG_T_BOOL:
        fputs(*(const bool *)field ? "true" : "false", out);
        break;
    case CFG_T_CHOICE: /* choices are plain identifiers */
        fputs(*(char *const *)field, out);
        break;
    case CFG_T_ENUM: {
        int idx = d->size == sizeof(bool) ? (int)*(const bool *)field
                                          : *(const int *)field;
        fputs(d->choices[idx], out);
        break;
    }
    case CFG_T_STRLIST: {
        const cfg_strlist_t *l = field;
        fputc('[', out);
        for (size_t i = 0; i < l->n; i++) {
            if (i)
                fputs(", ", out);
            cfg_yaml_quote(out, d->secret ? CFG_SECRET_MASK : l->v[i]);
        }
        fputc(']', out);
        break;
    }
    case CFG_T_LIST:
        cfg_list_print(d->sub, field, out);
        break;
    }
}
