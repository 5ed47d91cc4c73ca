/* The bridge from a compiled SQL92 filter to the store's messages.
 *
 * The evaluator sees properties only through a lookup callback; this file
 * provides the one over store/st.h's st_message_t and the st_filter_fn
 * adapter the service hands to st_pop().  It is the only file of the
 * module that knows the store's types (header only: nothing is linked). */
#include <string.h>

#include "px_sql.h"
#include "st.h"

/* User properties by exact key; `TAGS` is the message tag.  An empty tag is
 * "no tag" (the store keeps NULL and "" alike), so `TAGS IS NULL` holds. */
static const char *px_sql_msg_lookup(void *ctx, const char *name, size_t len)
{
    const st_message_t *m = ctx;

    if (len == 4 && memcmp(name, "TAGS", 4) == 0)
        return m->tag != NULL && m->tag[0] != '\0' ? m->tag : NULL;
    uint32_t n = m->nprops < ST_MAX_PROPS ? m->nprops : ST_MAX_PROPS;
    for (uint32_t k = 0; k < n; k++) {
        const char *key = m->props[k].key;
        if (key != NULL && strncmp(key, name, len) == 0 && key[len] == '\0')
            return m->props[k].value != NULL ? m->props[k].value : "";
    }
    return NULL;
}

bool px_sql_match_message(const px_sql_t *f, const struct st_message *m)
{
    if (m == NULL)
        return false;
    return px_sql_eval(f, px_sql_msg_lookup, (void *)m);
}

bool px_sql_st_filter(void *f, const struct st_message *m)
{
    return px_sql_match_message(f, m);
}
