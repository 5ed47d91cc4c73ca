/* Tag expressions (see gt_tagexpr.h). */
#include "gt_tagexpr.h"

#include <stdlib.h>
#include <string.h>

uint32_t gt_hash32(const char *s)
{
    uint32_t h = 2166136261u;

    for (; s && *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static bool gt_blank(char c) { return c == ' ' || c == '\t'; }

/* The next tag of an expression: [*b, *e) trimmed of blanks; advances *p
 * past its separator.  False at the end. */
static bool gt_tagexpr_next(const char **p, const char **b, const char **e)
{
    const char *sep, *end;

    if (*p == NULL)
        return false;
    sep = strstr(*p, "||");
    end = sep ? sep : *p + strlen(*p);
    *b = *p;
    while (*b < end && gt_blank(**b))
        (*b)++;
    *e = end;
    while (*e > *b && gt_blank((*e)[-1]))
        (*e)--;
    *p = sep ? sep + 2 : NULL;
    return true;
}

/* True for NULL, blanks only, or "*" (blanks around it allowed). */
static bool gt_tagexpr_is_all(const char *expr)
{
    const char *p = expr, *b, *e;

    if (expr == NULL || strstr(expr, "||") != NULL)
        return expr == NULL;
    gt_tagexpr_next(&p, &b, &e);
    return b == e || (e - b == 1 && *b == '*');
}

gt_err_t gt_tagexpr_check(const char *expr)
{
    const char *p = expr, *b, *e;

    for (const char *q = expr; q != NULL && *q; q++)
        if (((unsigned char)*q < 0x20 && *q != '\t') || *q == 0x7f)
            return GT_EINVAL;
    if (gt_tagexpr_is_all(expr))
        return GT_OK;
    while (gt_tagexpr_next(&p, &b, &e))
        if (b == e)
            return GT_EINVAL;
    return GT_OK;
}

void gt_tagexpr_free(gt_tagexpr_t *t)
{
    for (uint32_t i = 0; i < t->n; i++)
        free(t->tags[i]);
    t->n = 0;
}

gt_err_t gt_tagexpr_parse(const char *expr, gt_tagexpr_t *out)
{
    const char *p = expr, *b, *e;

    memset(out, 0, sizeof(*out));
    if (gt_tagexpr_is_all(expr)) {
        out->all = true;
        return GT_OK;
    }
    while (gt_tagexpr_next(&p, &b, &e)) {
        char *tag;
        if (b == e)
            continue;
        if (out->n == GT_TAGS_MAX) {
            gt_tagexpr_free(out);
            return GT_EINVAL;
        }
        if ((tag = strndup(b, (size_t)(e - b))) == NULL) {
            gt_tagexpr_free(out);
            return GT_ENOMEM;
        }
        if (strcmp(tag, "*") == 0)
            out->all = true;
        out->hash[out->n] = gt_hash32(tag);
        out->tags[out->n++] = tag;
    }
    if (out->n == 0)
        out->all = true;
    return GT_OK;
}

bool gt_tagexpr_match_hash(const gt_tagexpr_t *t, uint32_t hash)
{
    if (t->all)
        return true;
    for (uint32_t i = 0; i < t->n; i++)
        if (t->hash[i] == hash)
            return true;
    return false;
}

bool gt_tagexpr_match(const gt_tagexpr_t *t, const char *tag)
{
    if (t->all)
        return true;
    for (uint32_t i = 0; i < t->n; i++)
        if (strcmp(t->tags[i], tag ? tag : "") == 0)
            return true;
    return false;
}
