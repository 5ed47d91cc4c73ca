/* Config internals: the descriptor tables and the per-field helpers that
 * every part of the module (loader, cfg_set, printer, doc generator) drives
 * through.  Not for use outside config/. */
#ifndef CFG_INT_H
#define CFG_INT_H

#include <stddef.h>
#include <stdint.h>

#include "cfg.h"

typedef enum cfg_type {
    CFG_T_STR,    /* char *; optional check function */
    CFG_T_INT,    /* int or int64_t (by field size); min..max */
    CFG_T_BOOL,   /* bool */
    CFG_T_CHOICE, /* char * holding one of choices, canonical spelling */
    CFG_T_ENUM,   /* enum/int or bool field holding the index into choices */
    CFG_T_STRLIST, /* cfg_strlist_t: a YAML list of strings, each checked by
                      check; no duplicates; def "" = [], else [def] */
    CFG_T_LIST,   /* {T *v; size_t n;}: a YAML list of mappings described
                     by sub (a list section); default [] */
} cfg_type_t;

/* Validates a string value; on failure writes a reason (quoting the value
 * itself, without key path) into why. */
typedef gt_err_t (*cfg_check_fn)(const char *val, char *why, size_t whylen);

/* One key.  off/size locate the field in the section's struct (cfg_t for
 * mapping sections, the element type for list sections). */
typedef struct cfg_desc {
    const char *key;
    cfg_type_t type;
    size_t off, size;
    const char *def;             /* default, read as a plain YAML scalar;
                                    NULL = required key; CFG_OPTIONAL =
                                    optional, NULL when absent (CFG_T_STR) */
    int64_t min, max;            /* CFG_T_INT */
    const char *const *choices;  /* CFG_T_CHOICE, CFG_T_ENUM; NULL-terminated */
    cfg_check_fn check;          /* CFG_T_STR */
    const char *what;            /* type shown in docs, e.g. "HOST:PORT" */
    const char *doc;
    const struct cfg_section *sub; /* CFG_T_LIST: the entries' keys */
    bool secret; /* CFG_T_STR, CFG_T_STRLIST (each element): printed masked
                    (CFG_SECRET_MASK), never logged */
} cfg_desc_t;

/* CFG_SECRET_MASK (cfg.h): what cfg_print() shows for a set secret. */

extern const char cfg_optional[];
#define CFG_OPTIONAL cfg_optional

#define CFG_FIELD(st, m) offsetof(st, m), sizeof(((st *)0)->m)

/* A top-level section: a mapping of keys into cfg_t, or a list of mappings
 * each filling one element (cfg_topic_t, cfg_group_t).  A CFG_T_LIST key's
 * sub is a list section too, its offsets relative to the key's field. */
typedef struct cfg_section {
    const char *name;
    const cfg_desc_t *keys;
    size_t n_keys;
    bool is_list;
    size_t list_off, count_off, elem_size; /* is_list only */
    const char *elem_what; /* "topic", "group": duplicate-name messages;
                              keys[0] is the element's unique name (NULL:
                              names need not be unique) */
    const char *doc;       /* Markdown paragraph for the reference */
} cfg_section_t;

extern const cfg_section_t cfg_sections[];
/* The auth section's keys (cfg_auth.c). */
#define CFG_N_AUTH_KEYS 5
extern const cfg_desc_t cfg_auth_keys[CFG_N_AUTH_KEYS];

extern const size_t cfg_n_sections;

/* Reserved names, for the checks and the generated docs. */
extern const char *const cfg_reserved_topics[];
extern const char *const cfg_reserved_topic_prefixes[];
extern const char *const cfg_reserved_groups[];
extern const char *const cfg_reserved_group_prefixes[];
#define CFG_TOPIC_NAME_MAX 127
#define CFG_GROUP_NAME_MAX 120

/* Older key paths that still work in files and cfg_set(), each standing
 * for one key of a mapping section; NULL-terminated.  Setting both an
 * alias and its key in one file is an error. */
typedef struct cfg_alias {
    const char *path, *key_path; /* "server.amqp_listen", "amqp.listen" */
} cfg_alias_t;
extern const cfg_alias_t cfg_aliases[];

/* The key an alias path stands for, or NULL. */
const cfg_desc_t *cfg_alias_find(const char *path, size_t len,
                                 const char **key_path);
/* The descriptor of a mapping section's key "section.key", or NULL. */
const cfg_desc_t *cfg_path_find(const char *path, size_t len);

const cfg_section_t *cfg_section_find(const char *name, size_t len);
const cfg_desc_t *cfg_key_find(const cfg_section_t *sec, const char *key,
                               size_t len);

/* Parses len bytes of text (quoted: the YAML scalar was quoted, so it is a
 * string for sure) into d's field of base.  The field changes only on
 * success.  Returns GT_OK, GT_EINVAL or GT_ENOMEM with a reason in why. */
gt_err_t cfg_field_parse(const cfg_desc_t *d, void *base, const char *text,
                         size_t len, bool quoted, char *why, size_t whylen);

/* Sets every field of a table to its default (required fields to 0/NULL,
 * lists to []).  GT_ENOMEM on allocation failure. */
gt_err_t cfg_fields_default(const cfg_desc_t *keys, size_t n, void *base);

/* Frees the strings and lists of a table's fields and NULLs them. */
void cfg_fields_free(const cfg_desc_t *keys, size_t n, void *base);

/* Writes the field's value as a YAML scalar (lists in flow style). */
void cfg_field_print(const cfg_desc_t *d, const void *base, FILE *out);

/* Writes s as a YAML double-quoted scalar (escaping as needed). */
void cfg_yaml_quote(FILE *out, const char *s);

/* Appends a copy of len bytes of s to the list (the caller has checked
 * the item).  GT_ENOMEM. */
gt_err_t cfg_strlist_add(cfg_strlist_t *l, const char *s, size_t len);
void cfg_strlist_free(cfg_strlist_t *l);

/* Frees the elements of a list section's array at base (list_off,
 * count_off) and the array. */
void cfg_list_free(const cfg_section_t *sec, void *base);

/* Decodes base64 s (padded, no line breaks) into out; the length, or -1
 * when s is not base64 or does not fit. */
int cfg_b64_decode(const char *s, uint8_t *out, size_t cap);

/* Formats len bytes of s for a message: double-quoted, escaped, cut after
 * a few dozen characters.  Returns buf. */
const char *cfg_msg_quote(char *buf, size_t bufsz, const char *s, size_t len);

#endif
