/* Output from the descriptor tables: the effective config as YAML
 * (cfg_print, for --print-config; it loads back to an equal config) and the
 * Markdown reference docs/config.md (cfg_write_doc, for --config-doc). */
#include "cfg_int.h"

#include <inttypes.h>
#include <string.h>

void cfg_print(const cfg_t *cfg, FILE *out)
{
    fputs("# Gantry effective configuration\n", out);
    for (size_t i = 0; i < cfg_n_sections; i++) {
        const cfg_section_t *sec = &cfg_sections[i];

        if (!sec->is_list) {
            fprintf(out, "%s:\n", sec->name);
            for (size_t k = 0; k < sec->n_keys; k++) {
                fprintf(out, "  %s: ", sec->keys[k].key);
                cfg_field_print(&sec->keys[k], cfg, out);
                fputc('\n', out);
            }
            continue;
        }
        const char *arr = *(char *const *)((const char *)cfg + sec->list_off);
        size_t n = *(const size_t *)((const char *)cfg + sec->count_off);
        fprintf(out, "%s:%s\n", sec->name, n == 0 ? " []" : "");
        for (size_t j = 0; j < n; j++) {
            fputs("  - {", out);
            for (size_t k = 0; k < sec->n_keys; k++) {
                fprintf(out, "%s%s: ", k ? ", " : "", sec->keys[k].key);
                cfg_field_print(&sec->keys[k], arr + j * sec->elem_size, out);
            }
            fputs("}\n", out);
        }
    }
}

static const char *doc_type(const cfg_desc_t *d)
{
    if (d->what != NULL)
        return d->what;
    switch (d->type) {
    case CFG_T_STR:
        return "string";
    case CFG_T_INT:
        return "integer";
    case CFG_T_BOOL:
        return "boolean";
    case CFG_T_CHOICE:
    case CFG_T_ENUM:
        return "enum";
    case CFG_T_STRLIST:
    case CFG_T_LIST:
        return "list";
    }
    return "?";
}

static void doc_allowed(const cfg_desc_t *d, FILE *out)
{
    switch (d->type) {
    case CFG_T_INT:
        fprintf(out, "%" PRId64 " .. %" PRId64, d->min, d->max);
        break;
    case CFG_T_BOOL:
        fputs("`true`, `false`", out);
        break;
    case CFG_T_CHOICE:
    case CFG_T_ENUM:
        for (size_t i = 0; d->choices[i] != NULL; i++)
            fprintf(out, "%s`%s`", i ? ", " : "", d->choices[i]);
        break;
    case CFG_T_STR:
    case CFG_T_STRLIST:
    case CFG_T_LIST:
        break;
    }
}

static void doc_default(const cfg_desc_t *d, FILE *out)
{
    if (d->def == NULL)
        fputs("*required*", out);
    else if (d->def == CFG_OPTIONAL)
        fputs("none", out);
    else if (d->type == CFG_T_LIST || (d->type == CFG_T_STRLIST && d->def[0] == '\0'))
        fputs("`[]`", out);
    else if (d->type == CFG_T_STRLIST)
        fprintf(out, "`[\"%s\"]`", d->def);
    else if (d->type == CFG_T_STR)
        fprintf(out, "`\"%s\"`", d->def);
    else
        fprintf(out, "`%s`", d->def);
}

/* The table rows of a section's keys, each named prefix + key; a list of
 * mappings gets its entries' keys as prefix.key[].sub rows. */
static void doc_rows(const cfg_section_t *sec, const char *prefix, FILE *out)
{
    char sub[128];

    for (size_t k = 0; k < sec->n_keys; k++) {
        const cfg_desc_t *d = &sec->keys[k];

        fprintf(out, "| `%s%s` | %s | ", prefix, d->key, doc_type(d));
        doc_default(d, out);
        fputs(" | ", out);
        doc_allowed(d, out);
        fprintf(out, " | %s |\n", d->doc);
        if (d->type == CFG_T_LIST) {
            snprintf(sub, sizeof(sub), "%s%s[].", prefix, d->key);
            doc_rows(d->sub, sub, out);
        }
    }
}

static void doc_section(const cfg_section_t *sec, FILE *out)
{
    char prefix[64];

    fprintf(out, "## `%s`\n\n%s\n\n", sec->name, sec->doc);
    fputs("| Key | Type | Default | Allowed | Description |\n"
          "|-----|------|---------|---------|-------------|\n", out);
    snprintf(prefix, sizeof(prefix), "%s%s", sec->name, sec->is_list ? "[]." : ".");
    doc_rows(sec, prefix, out);
    fputc('\n', out);
}

static void doc_names(const char *const *names, FILE *out)
{
    for (size_t i = 0; names[i] != NULL; i++)
        fprintf(out, "%s`%s`", i ? ", " : "", names[i]);
}

static const char doc_intro[] =
    "# Gantry configuration reference\n"
    "\n"
    "<!-- Generated from the descriptor tables in config/cfg_table.c by\n"
    "     `gantry --config-doc`. Do not edit by hand: the test\n"
    "     config_doc_fresh fails when this file is stale. -->\n"
    "\n"
    "Gantry reads one YAML file. Block style and flow style are both\n"
    "accepted, and the two can be mixed:\n"
    "\n"
    "```yaml\n"
    "server:\n"
    "  grpc_listen: \"0.0.0.0:8081\"\n"
    "store: {mode: local, flush: sync}\n"
    "topics:\n"
    "  - {name: TopicTest, type: NORMAL, queues: 8}\n"
    "groups:\n"
    "  - {name: GroupTest, max_delivery_attempts: 16}\n"
    "```\n"
    "\n"
    "- Every key is optional and takes its default when missing; only the\n"
    "  keys marked *required* must be given in list entries (`topics`,\n"
    "  `groups`, `amqp.users`, `amqp.permissions`).\n"
    "- Unknown or repeated keys, values of the wrong type, numbers out of\n"
    "  range, unknown enum values, malformed addresses and bad names refuse\n"
    "  the whole file. The message names the file, the line and the key:\n"
    "\n"
    "  ```\n"
    "  gantry.yaml:7: store.flsuh: unknown key\n"
    "  gantry.yaml:9: topics[1].queues: 5000 is out of range (1..1024)\n"
    "  ```\n"
    "- Integers are plain decimal numbers. A quoted value such as `\"8\"`\n"
    "  is a string and is refused where an integer or a boolean is\n"
    "  expected. Booleans are `true` or `false`. Enum values match\n"
    "  case-insensitively.\n"
    "- `HOST:PORT` takes a host name, an IPv4 address or a bracketed IPv6\n"
    "  address (`[::]:8081`), and a port 1..65535.\n"
    "- Command-line flags override values from the file.\n"
    "- A file larger than 8 MiB, or nested deeper than 32 levels (the\n"
    "  schema needs five), is refused before it is loaded\n"
    "  (`gantry.yaml:1: nesting deeper than 32 levels`).\n"
    "\n";

void cfg_write_doc(FILE *out)
{
    fputs(doc_intro, out);
    for (size_t i = 0; i < cfg_n_sections; i++)
        doc_section(&cfg_sections[i], out);
    fputs("## Older key names\n\n"
          "These names of earlier versions still work in the file; setting one "
          "and the key it stands for in the same file is an error.\n\n", out);
    for (size_t i = 0; cfg_aliases[i].path != NULL; i++)
        fprintf(out, "- `%s`: `%s`\n", cfg_aliases[i].path,
                cfg_aliases[i].key_path);
    fputc('\n', out);
    fprintf(out,
            "## Names\n"
            "\n"
            "Topic and group names follow Apache RocketMQ's rules:\n"
            "\n"
            "- allowed characters `^[%%|a-zA-Z0-9_-]+$`; topic names have at "
            "most %d\n  characters, group names at most %d;\n"
            "- names are unique within `topics` and within `groups`;\n"
            "- reserved topic names: ", CFG_TOPIC_NAME_MAX,
            CFG_GROUP_NAME_MAX);
    doc_names(cfg_reserved_topics, out);
    fputs(";\n- reserved topic prefixes: ", out);
    doc_names(cfg_reserved_topic_prefixes, out);
    fputs(";\n- reserved group names: ", out);
    doc_names(cfg_reserved_groups, out);
    fputs(";\n- reserved group prefixes: ", out);
    doc_names(cfg_reserved_group_prefixes, out);
    fputs(".\n", out);
}
