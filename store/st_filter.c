/* Pop filters: a tag expression or a SQL92 selector, received as text and
 * compiled here, where messages are matched (see st_pop.h). */
#include <stdlib.h>
#include <string.h>

#include "st_pop.h"

gt_err_t st_filter_compile(st_filter_kind_t kind, const char *expr,
                           st_filter_t *f)
{
    memset(f, 0, sizeof(*f));
    f->kind = kind;
    if (!(f->text = strdup(expr ? expr : "")))
        return GT_ENOMEM;
    gt_err_t rc;
    if (kind == ST_FILTER_TAG) {
        rc = gt_tagexpr_parse(expr, &f->tx);
    } else if (kind == ST_FILTER_SQL92) {
        f->tx.all = true;
        rc = gt_sql_compile(f->text, strlen(f->text), &f->sql, NULL, 0);
    } else {
        rc = GT_EINVAL;
    }
    if (rc != GT_OK)
        st_filter_free(f);
    return rc;
}

void st_filter_free(st_filter_t *f)
{
    gt_tagexpr_free(&f->tx);
    gt_sql_free(f->sql);
    free(f->text);
    f->sql = NULL;
    f->text = NULL;
}

bool st_filter_match_hash(const st_filter_t *f, uint32_t tag_hash)
{
    return gt_tagexpr_match_hash(&f->tx, tag_hash);
}

/* User properties by exact key; `TAGS` is the message tag.  An empty tag is
 * "no tag" (the store keeps NULL and "" alike), so `TAGS IS NULL` holds. */
static const char *msg_lookup(void *ctx, const char *name, size_t len)
{
    const st_message_t *m = ctx;
    if (len == 4 && memcmp(name, "TAGS", 4) == 0)
        return m->tag && m->tag[0] ? m->tag : NULL;
    uint32_t n = m->nprops < ST_MAX_PROPS ? m->nprops : ST_MAX_PROPS;
    for (uint32_t k = 0; k < n; k++) {
        const char *key = m->props[k].key;
        if (key && strncmp(key, name, len) == 0 && key[len] == '\0')
            return m->props[k].value ? m->props[k].value : "";
    }
    return NULL;
}

bool st_filter_match(const st_filter_t *f, const st_message_t *m)
{
    if (!gt_tagexpr_match(&f->tx, m->tag))
        return false;
    return !f->sql || gt_sql_eval(f->sql, msg_lookup, (void *)m);
}

bool st_filter_same(const st_filter_t *a, const st_filter_t *b)
{
    return a->kind == b->kind && strcmp(a->text, b->text) == 0;
}
