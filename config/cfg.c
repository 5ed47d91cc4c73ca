/* cfg_t lifetime (init with defaults, free), single-key overrides
 * (cfg_set, used for command-line flags; aliases resolved) and the quoting helpers shared by
 * messages and the printer. */
#include "cfg_int.h"

#include <stdlib.h>
#include <string.h>

void cfg_init(cfg_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < cfg_n_sections; i++) {
        const cfg_section_t *sec = &cfg_sections[i];

        if (sec->is_list)
            continue;
        if (cfg_fields_default(sec->keys, sec->n_keys, cfg) != GT_OK) {
            /* Only strdup of a short default can fail: out of memory at
             * start-up, nothing sensible to continue with. */
            fputs("gantry: out of memory initialising the config\n", stderr);
            abort();
        }
    }
}

void cfg_free(cfg_t *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < cfg_n_sections; i++) {
        const cfg_section_t *sec = &cfg_sections[i];

        if (!sec->is_list) {
            cfg_fields_free(sec->keys, sec->n_keys, cfg);
            continue;
        }
        cfg_list_free(sec, cfg);
    }
    memset(cfg, 0, sizeof(*cfg));
}

gt_err_t cfg_set(cfg_t *cfg, const char *path, const char *value, char *err,
                 size_t errlen)
{
    char why[256], dummy[1];
    const char *dot = strchr(path, '.');
    const cfg_section_t *sec = NULL;
    const cfg_desc_t *d = NULL;
    gt_err_t rc;

    if (err == NULL) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    if (dot != NULL)
        sec = cfg_section_find(path, (size_t)(dot - path));
    if (sec != NULL && sec->is_list) {
        snprintf(err, errlen, "%s: %s can only be declared in the config "
                 "file", path, sec->name);
        return GT_EINVAL;
    }
    if (sec != NULL)
        d = cfg_key_find(sec, dot + 1, strlen(dot + 1));
    if (d == NULL)
        d = cfg_alias_find(path, strlen(path), NULL);
    if (d == NULL) {
        snprintf(err, errlen, "%s: unknown key", path);
        return GT_EINVAL;
    }
    if (d->type == CFG_T_STRLIST || d->type == CFG_T_LIST) {
        snprintf(err, errlen, "%s: a list, can only be declared in the "
                 "config file", path);
        return GT_EINVAL;
    }
    rc = cfg_field_parse(d, cfg, value, strlen(value), false, why,
                         sizeof(why));
    if (rc != GT_OK)
        snprintf(err, errlen, "%s: %s", path, why);
    return rc;
}

/* Appends the escaped form of byte c to buf at *n (room permitting). */
static void cfg_escape_char(char *buf, size_t bufsz, size_t *n,
                            unsigned char c)
{
    int w;

    if (c == '"' || c == '\\')
        w = snprintf(buf + *n, bufsz - *n, "\\%c", c);
    else if (c == '\n')
        w = snprintf(buf + *n, bufsz - *n, "\\n");
    else if (c == '\t')
        w = snprintf(buf + *n, bufsz - *n, "\\t");
    else if (c < 0x20 || c == 0x7f)
        w = snprintf(buf + *n, bufsz - *n, "\\x%02x", c);
    else
        w = snprintf(buf + *n, bufsz - *n, "%c", c);
    if (w > 0 && (size_t)w < bufsz - *n)
        *n += (size_t)w;
}

const char *cfg_msg_quote(char *buf, size_t bufsz, const char *s, size_t len)
{
    const size_t shown = 48; /* longer values are cut: "abc..." */
    size_t n = 0;

    if (bufsz < 16) {
        buf[0] = '\0';
        return buf;
    }
    buf[n++] = '"';
    buf[n] = '\0';
    for (size_t i = 0; i < len && i < shown && n < bufsz - 8; i++)
        cfg_escape_char(buf, bufsz - 5, &n, (unsigned char)s[i]);
    if (len > shown)
        n += (size_t)snprintf(buf + n, bufsz - n, "...");
    snprintf(buf + n, bufsz - n, "\"");
    return buf;
}

void cfg_yaml_quote(FILE *out, const char *s)
{
    char esc[8];

    fputc('"', out);
    for (; s != NULL && *s != '\0'; s++) {
        size_t n = 0;
        cfg_escape_char(esc, sizeof(esc), &n, (unsigned char)*s);
        fwrite(esc, 1, n, out);
    }
    fputc('"', out);
}
