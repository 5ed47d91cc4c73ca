/* gantry-admin: the operator CLI over Gantry's admin API (JSON over the
 * HTTP port, docs/admin.md).  Verbs follow what mqadmin users know
 * (topicList, topicStatus, updateTopic, deleteTopic, consumerProgress,
 * resetOffsetByTime, queryMsgById, queryMsgByKey, consumerConnection...)
 * under "noun verb" names; see usage().
 *
 * Exit codes: 0 done, 1 the server refused (its error is printed),
 * 2 usage error, 3 the server could not be reached. */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "ga.h"

#define GA_EXIT_OK 0
#define GA_EXIT_REFUSED 1
#define GA_EXIT_USAGE 2
#define GA_EXIT_UNREACHABLE 3
#define GA_DEFAULT_SERVER "http://127.0.0.1:5557"
#define GA_MAX_ANSWER (64u << 20)
#define GA_POS_MAX 5
#define GA_ACL_MAX 64

typedef struct ga_opts {
    const char *server, *token, *user; /* user: AK:SK, HTTP Basic */
    const char *cacert;                /* PEM CA file for https:// */
    long timeout_s;
    bool json;
    const char *pos[GA_POS_MAX];
    int npos;
    /* command options (NULL / -1: not given) */
    const char *type, *perm, *consume_from, *topic, *to, *time, *level;
    long queues, max_attempts, body_max, max, retry_initial, retry_max, retry_mult;
    int fifo; /* -1 unset, 0, 1 */
    int admin; /* user --admin / --no-admin: -1 unset, 0, 1 */
    const char *secret_key;
    const char *acl[GA_ACL_MAX]; /* --acl RESOURCE=ACTIONS[@IPS][!] */
    int nacl;
} ga_opts_t;

static void usage(FILE *out)
{
    fputs(
        "usage: gantry-admin [--server URL] [--cacert PEM] [--token TOKEN | --user AK:SK]\n"
        "                    [--json] [--timeout S] COMMAND\n"
        "\n"
        "topics (mqadmin topicList, topicStatus, updateTopic, deleteTopic):\n"
        "  topic list\n"
        "  topic show TOPIC                queues, offsets, sizes, store times\n"
        "  topic create TOPIC [--type NORMAL|FIFO|DELAY|TRANSACTION|MIXED]\n"
        "                     [--queues N] [--perm rw|r|w]\n"
        "  topic update TOPIC [--queues N] [--perm P] [--type T]\n"
        "  topic delete TOPIC\n"
        "groups (consumerProgress, updateSubGroup, deleteSubGroup, resetOffsetByTime):\n"
        "  group list\n"
        "  group show GROUP                settings, lag, in flight, DLQ depth, members\n"
        "  group lag GROUP                 lag per topic and queue\n"
        "  group create GROUP [--fifo|--no-fifo] [--max-attempts N]\n"
        "                     [--consume-from first|last] [--retry-initial-ms N]\n"
        "                     [--retry-max-ms N] [--retry-multiplier PERCENT]\n"
        "  group update GROUP (same options)\n"
        "  group delete GROUP\n"
        "  group reset-offset GROUP --topic TOPIC --to beginning|end|time\n"
        "                     [--time YYYY-MM-DDTHH:MM:SS[.mmm]Z|MS]\n"
        "  group redrive-dlq GROUP [--max N]  dead letters back to their topic\n"
        "clients (consumerConnection, producerConnection):\n"
        "  client list\n"
        "  client close CLIENT_ID\n"
        "messages (queryMsgById, queryMsgByKey, queryMsgByOffset):\n"
        "  message id MSG_ID [--topic TOPIC] [--body-max BYTES]\n"
        "  message key KEY --topic TOPIC [--body-max BYTES]\n"
        "  message at TOPIC QUEUE OFFSET [--body-max BYTES]\n"
        "  message trace MSG_ID            its trace events (publish, deliveries, acks...)\n"
        "config:\n"
        "  config show                     the effective config (secrets masked)\n"
        "  config log-level [LEVEL]        show or set (debug|info|warn|error)\n"
        "users and ACLs (RocketMQ clients and AMQP; secrets are never shown):\n"
        "  user list | show ACCESS_KEY\n"
        "  user create ACCESS_KEY --secret-key S [--admin] [--acl SPEC]...\n"
        "  user update ACCESS_KEY [--secret-key S] [--admin|--no-admin] [--acl SPEC]...\n"
        "  user delete ACCESS_KEY\n"
        "    SPEC: RESOURCE=ACTION[,ACTION...][@IP[,IP...]][!]  e.g. Topic:orders*=Pub,Sub\n"
        "    (! denies; the --acl list replaces the user's ACL entries)\n"
        "store cluster (store.mode cluster):\n"
        "  cluster                         replica sets, leaders, in-sync sets, topics per set\n"
        "  cluster rebalance               move topics' writes to the sets that write the fewest\n"
        "\n"
        "--server defaults to $GANTRY_ADMIN_SERVER or " GA_DEFAULT_SERVER ";\n"
        "--token to $GANTRY_ADMIN_TOKEN (sent as \"Authorization: Bearer TOKEN\").\n"
        "--user AK:SK (an auth user with admin: true) is sent as HTTP Basic instead.\n"
        "--cacert (or $GANTRY_ADMIN_CACERT): the CA file that verifies an https:// server\n"
        "(default: the system's trust store).\n"
        "Exit codes: 0 done, 1 refused by the server, 2 usage error, 3 unreachable.\n",
        out);
}

static int usage_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_err(const char *fmt, ...)
{
    va_list ap;

    fputs("gantry-admin: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(gantry-admin --help for usage)\n", stderr);
    return GA_EXIT_USAGE;
}

static bool parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno != 0 || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* Parses argv into o: 0, or an exit code (usage printed). */
static int parse_args(int argc, char **argv, ga_opts_t *o)
{
    static const struct {
        const char *name;
        size_t str_off;  /* for string options */
        size_t long_off; /* for integer options */
        long lo, hi;
    } opts[] = {
#define S(n, f) {n, offsetof(ga_opts_t, f) + 1, 0, 0, 0}
#define L(n, f, lo, hi) {n, 0, offsetof(ga_opts_t, f) + 1, lo, hi}
        S("--server", server), S("--cacert", cacert), S("--secret-key", secret_key), S("--token", token), S("--user", user), S("--type", type), S("--perm", perm),
        S("--consume-from", consume_from), S("--topic", topic), S("--to", to),
        S("--time", time), L("--timeout", timeout_s, 1, 3600), L("--queues", queues, 1, 1024),
        L("--max-attempts", max_attempts, 1, 1000), L("--max", max, 1, 10000), L("--body-max", body_max, 0, 1 << 20),
        L("--retry-initial-ms", retry_initial, 0, 86400000),
        L("--retry-max-ms", retry_max, 0, 86400000),
        L("--retry-multiplier", retry_mult, 0, 10000),
#undef S
#undef L
    };

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool found = false;

        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return -1;
        }
        if (strcmp(a, "--json") == 0) {
            o->json = true;
            continue;
        }
        if (strcmp(a, "--fifo") == 0 || strcmp(a, "--no-fifo") == 0) {
            o->fifo = strcmp(a, "--fifo") == 0;
            continue;
        }
        if (strcmp(a, "--admin") == 0 || strcmp(a, "--no-admin") == 0) {
            o->admin = strcmp(a, "--admin") == 0;
            continue;
        }
        if (strcmp(a, "--acl") == 0) {
            if (i + 1 >= argc)
                return usage_err("--acl needs a value");
            if (o->nacl == GA_ACL_MAX)
                return usage_err("at most %d --acl", GA_ACL_MAX);
            o->acl[o->nacl++] = argv[++i];
            continue;
        }
        if (strncmp(a, "--", 2) != 0 || strcmp(a, "--") == 0) {
            if (o->npos == GA_POS_MAX)
                return usage_err("too many arguments at '%s'", a);
            o->pos[o->npos++] = a;
            continue;
        }
        for (size_t k = 0; k < sizeof(opts) / sizeof(opts[0]); k++) {
            if (strcmp(a, opts[k].name) != 0)
                continue;
            found = true;
            if (i + 1 >= argc)
                return usage_err("%s needs a value", a);
            i++;
            if (opts[k].str_off != 0) {
                *(const char **)((char *)o + opts[k].str_off - 1) = argv[i];
            } else if (!parse_long(argv[i], opts[k].lo, opts[k].hi,
                                   (long *)((char *)o + opts[k].long_off - 1))) {
                fprintf(stderr, "gantry-admin: %s must be an integer %ld..%ld\n", a,
                        opts[k].lo, opts[k].hi);
                return GA_EXIT_USAGE;
            }
            break;
        }
        if (!found)
            return usage_err("unknown option '%s'", a);
    }
    return 0;
}

/* ---- HTTP */

typedef struct ga_buf {
    char *p;
    size_t n;
    bool over;
} ga_buf_t;

static size_t on_data(char *d, size_t sz, size_t n, void *arg)
{
    ga_buf_t *b = arg;
    size_t len = sz * n;
    char *np;

    if (b->n + len > GA_MAX_ANSWER) {
        b->over = true;
        return 0;
    }
    if ((np = realloc(b->p, b->n + len + 1)) == NULL)
        return 0;
    b->p = np;
    memcpy(b->p + b->n, d, len);
    b->n += len;
    b->p[b->n] = '\0';
    return len;
}

/* Sends method path (already escaped) with an optional JSON body; prints
 * the answer.  Returns the exit code. */
static int call(const ga_opts_t *o, const char *method, const char *path, json_t *body)
{
    CURL *c = curl_easy_init();
    struct curl_slist *hdr = NULL;
    char *url = NULL, *payload = NULL, *auth = NULL;
    ga_buf_t b = {0};
    long code = 0;
    int rc = GA_EXIT_UNREACHABLE;
    CURLcode cr;
    json_t *ans = NULL;

    if (c == NULL || asprintf(&url, "%s%s", o->server, path) < 0) {
        fprintf(stderr, "gantry-admin: out of memory\n");
        goto out;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, o->timeout_s);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (o->cacert != NULL && o->cacert[0] != '\0')
        curl_easy_setopt(c, CURLOPT_CAINFO, o->cacert);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    if (o->user != NULL) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(c, CURLOPT_USERPWD, o->user);
    } else if (o->token != NULL && o->token[0] != '\0') {
        if (asprintf(&auth, "Authorization: Bearer %s", o->token) < 0)
            goto out;
        hdr = curl_slist_append(hdr, auth);
    }
    if (body != NULL) {
        payload = json_dumps(body, JSON_COMPACT);
        hdr = curl_slist_append(hdr, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload != NULL ? payload : "{}");
    }
    if (hdr != NULL)
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    if ((cr = curl_easy_perform(c)) != CURLE_OK) {
        fprintf(stderr, "gantry-admin: %s: %s\n", o->server,
                b.over ? "answer too large" : curl_easy_strerror(cr));
        goto out;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    ans = b.p != NULL ? json_loadb(b.p, b.n, 0, NULL) : NULL;
    if (code < 200 || code > 299) {
        const char *msg = json_string_value(json_object_get(ans, "error"));

        fprintf(stderr, "gantry-admin: %s (HTTP %ld)\n",
                msg != NULL ? msg : (b.p != NULL ? b.p : "no answer"), code);
        rc = GA_EXIT_REFUSED;
        goto out;
    }
    if (ans == NULL) {
        fprintf(stderr, "gantry-admin: the answer is not JSON (is %s a gantry HTTP port?)\n",
                o->server);
        rc = GA_EXIT_REFUSED;
        goto out;
    }
    if (o->json) {
        json_dumpf(ans, stdout, JSON_INDENT(2));
        fputc('\n', stdout);
    } else {
        ga_print(stdout, ans);
    }
    rc = GA_EXIT_OK;
out:
    json_decref(ans);
    json_decref(body);
    free(b.p);
    free(url);
    free(payload);
    free(auth);
    curl_slist_free_all(hdr);
    if (c != NULL)
        curl_easy_cleanup(c);
    return rc;
}

/* "/api/v1/<what>/<escaped name>[suffix]" into a new string. */
static char *path_of(const char *what, const char *name, const char *suffix)
{
    char *esc = curl_easy_escape(NULL, name, 0), *p = NULL;

    if (esc == NULL || asprintf(&p, "/api/v1/%s/%s%s", what, esc, suffix) < 0)
        p = NULL;
    curl_free(esc);
    return p;
}

static int call_path(const ga_opts_t *o, const char *method, char *path, json_t *body)
{
    int rc;

    if (path == NULL) {
        json_decref(body);
        fprintf(stderr, "gantry-admin: out of memory\n");
        return GA_EXIT_UNREACHABLE;
    }
    rc = call(o, method, path, body);
    free(path);
    return rc;
}

/* ---- commands */

static int need(const ga_opts_t *o, int n, const char *form)
{
    if (o->npos != n) {
        fprintf(stderr, "gantry-admin: usage: gantry-admin %s\n", form);
        return GA_EXIT_USAGE;
    }
    return 0;
}

static json_t *topic_body(const ga_opts_t *o, const char *name)
{
    json_t *b = json_object();

    if (name != NULL)
        json_object_set_new(b, "name", json_string(name));
    if (o->type != NULL)
        json_object_set_new(b, "type", json_string(o->type));
    if (o->queues >= 0)
        json_object_set_new(b, "queues", json_integer(o->queues));
    if (o->perm != NULL)
        json_object_set_new(b, "perm", json_string(o->perm));
    return b;
}

/* One --acl: RESOURCE=ACTION[,ACTION...][@IP[,IP...]][!] (! : Deny). */
static json_t *acl_entry(const char *spec)
{
    char *d = strdup(spec), *eq, *at, *tok, *save = NULL;
    json_t *e = NULL, *acts, *ips;
    size_t n;

    if (d == NULL || (eq = strchr(d, '=')) == NULL || eq == d)
        goto out;
    *eq = '\0';
    n = strlen(eq + 1);
    e = json_pack("{s:s, s:[], s:s}", "resource", d, "actions", "decision", "Allow");
    if (n > 0 && eq[1 + n - 1] == '!') {
        eq[1 + n - 1] = '\0';
        json_object_set_new(e, "decision", json_string("Deny"));
    }
    if ((at = strchr(eq + 1, '@')) != NULL) {
        *at = '\0';
        ips = json_array();
        for (tok = strtok_r(at + 1, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save))
            json_array_append_new(ips, json_string(tok));
        json_object_set_new(e, "source_ips", ips);
    }
    acts = json_object_get(e, "actions");
    save = NULL;
    for (tok = strtok_r(eq + 1, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save))
        json_array_append_new(acts, json_string(tok));
    if (json_array_size(acts) == 0) {
        json_decref(e);
        e = NULL;
    }
out:
    free(d);
    return e;
}

/* The body of user create / update; NULL after a usage error (*rc set). */
static json_t *user_body(const ga_opts_t *o, const char *name, int *rc)
{
    json_t *b = json_object();

    if (name != NULL)
        json_object_set_new(b, "access_key", json_string(name));
    if (o->secret_key != NULL)
        json_object_set_new(b, "secret_key", json_string(o->secret_key));
    if (o->admin >= 0)
        json_object_set_new(b, "admin", json_boolean(o->admin));
    if (o->nacl > 0) {
        json_t *acls = json_array();

        for (int i = 0; i < o->nacl; i++) {
            json_t *e = acl_entry(o->acl[i]);

            if (e == NULL) {
                json_decref(acls);
                json_decref(b);
                *rc = usage_err("--acl '%s' is not RESOURCE=ACTION[,ACTION...][@IP,...][!]",
                                o->acl[i]);
                return NULL;
            }
            json_array_append_new(acls, e);
        }
        json_object_set_new(b, "acls", acls);
    }
    return b;
}

static int cmd_user(const ga_opts_t *o)
{
    const char *v = o->npos > 1 ? o->pos[1] : "";
    json_t *b;
    int rc = 0;

    if (strcmp(v, "list") == 0)
        return (rc = need(o, 2, "user list")) ? rc : call(o, "GET", "/api/v1/users", NULL);
    if (strcmp(v, "show") == 0)
        return (rc = need(o, 3, "user show ACCESS_KEY"))
                   ? rc
                   : call_path(o, "GET", path_of("users", o->pos[2], ""), NULL);
    if (strcmp(v, "create") == 0) {
        if ((rc = need(o, 3, "user create ACCESS_KEY --secret-key S [--admin] [--acl ...]")))
            return rc;
        if (o->secret_key == NULL)
            return usage_err("user create: --secret-key is required");
        if ((b = user_body(o, o->pos[2], &rc)) == NULL)
            return rc;
        return call(o, "POST", "/api/v1/users", b);
    }
    if (strcmp(v, "update") == 0) {
        if ((rc = need(o, 3, "user update ACCESS_KEY [--secret-key S] [--admin|--no-admin] "
                             "[--acl ...]")))
            return rc;
        if (o->secret_key == NULL && o->admin < 0 && o->nacl == 0)
            return usage_err("user update: give --secret-key, --admin, --no-admin or --acl");
        if ((b = user_body(o, NULL, &rc)) == NULL)
            return rc;
        return call_path(o, "PUT", path_of("users", o->pos[2], ""), b);
    }
    if (strcmp(v, "delete") == 0)
        return (rc = need(o, 3, "user delete ACCESS_KEY"))
                   ? rc
                   : call_path(o, "DELETE", path_of("users", o->pos[2], ""), NULL);
    return usage_err("unknown user command '%s' (list, show, create, update, delete)", v);
}

static int cmd_topic(const ga_opts_t *o)
{
    const char *v = o->npos > 1 ? o->pos[1] : "";
    int rc;

    if (strcmp(v, "list") == 0)
        return (rc = need(o, 2, "topic list")) ? rc : call(o, "GET", "/api/v1/topics", NULL);
    if (strcmp(v, "show") == 0)
        return (rc = need(o, 3, "topic show TOPIC"))
                   ? rc
                   : call_path(o, "GET", path_of("topics", o->pos[2], ""), NULL);
    if (strcmp(v, "create") == 0)
        return (rc = need(o, 3, "topic create TOPIC [--type T] [--queues N] [--perm P]"))
                   ? rc
                   : call(o, "POST", "/api/v1/topics", topic_body(o, o->pos[2]));
    if (strcmp(v, "update") == 0) {
        if ((rc = need(o, 3, "topic update TOPIC [--queues N] [--perm P] [--type T]")))
            return rc;
        if (o->queues < 0 && o->perm == NULL && o->type == NULL)
            return usage_err("%s: give --queues, --perm or --type", "topic update");
        return call_path(o, "PUT", path_of("topics", o->pos[2], ""), topic_body(o, NULL));
    }
    if (strcmp(v, "delete") == 0)
        return (rc = need(o, 3, "topic delete TOPIC"))
                   ? rc
                   : call_path(o, "DELETE", path_of("topics", o->pos[2], ""), NULL);
    return usage_err("unknown topic command '%s' (list, show, create, update, delete)", v);
}

static json_t *group_body(const ga_opts_t *o, const char *name)
{
    json_t *b = json_object(), *r = json_object();

    if (name != NULL)
        json_object_set_new(b, "name", json_string(name));
    if (o->fifo >= 0)
        json_object_set_new(b, "fifo", json_boolean(o->fifo));
    if (o->max_attempts >= 0)
        json_object_set_new(b, "max_delivery_attempts", json_integer(o->max_attempts));
    if (o->consume_from != NULL)
        json_object_set_new(b, "consume_from", json_string(o->consume_from));
    if (o->retry_initial >= 0)
        json_object_set_new(r, "initial_ms", json_integer(o->retry_initial));
    if (o->retry_max >= 0)
        json_object_set_new(r, "max_ms", json_integer(o->retry_max));
    if (o->retry_mult >= 0)
        json_object_set_new(r, "multiplier", json_integer(o->retry_mult));
    if (json_object_size(r) > 0)
        json_object_set(b, "retry", r);
    json_decref(r);
    return b;
}

/* group lag: the show answer reduced to its lag table. */
static int group_lag(const ga_opts_t *o)
{
    ga_opts_t q = *o;
    char *path = path_of("groups", o->pos[2], "");
    FILE *saved;
    int rc;

    if (o->json || path == NULL) {
        /* --json: the whole answer */
        return call_path(o, "GET", path, NULL);
    }
    /* fetch as JSON into a buffer, then print the rows */
    q.json = true;
    {
        char *buf = NULL;
        size_t len = 0;
        FILE *mem = open_memstream(&buf, &len);
        json_t *j, *topics, *t, *qv, *rows;
        size_t i, k;

        if (mem == NULL) {
            free(path);
            return GA_EXIT_UNREACHABLE;
        }
        saved = stdout;
        stdout = mem;
        rc = call_path(&q, "GET", path, NULL);
        stdout = saved;
        fclose(mem);
        if (rc != GA_EXIT_OK || (j = json_loads(buf, 0, NULL)) == NULL) {
            free(buf);
            return rc != GA_EXIT_OK ? rc : GA_EXIT_REFUSED;
        }
        free(buf);
        rows = json_array();
        topics = json_object_get(j, "topics");
        json_array_foreach(topics, i, t) {
            json_array_foreach(json_object_get(t, "queues"), k, qv) {
                json_t *r = json_pack("{s:O, s:O, s:O, s:O, s:O}", "topic",
                                      json_object_get(t, "topic"), "queue",
                                      json_object_get(qv, "queue"), "max_offset",
                                      json_object_get(qv, "max_offset"), "committed",
                                      json_object_get(qv, "committed"), "lag",
                                      json_object_get(qv, "lag"));
                if (r != NULL)
                    json_array_append_new(rows, r);
            }
        }
        printf("group: %s\nlag: %" JSON_INTEGER_FORMAT "\ninflight: %" JSON_INTEGER_FORMAT
               "\ndlq_messages: %" JSON_INTEGER_FORMAT "\n",
               o->pos[2], json_integer_value(json_object_get(j, "lag")),
               json_integer_value(json_object_get(j, "inflight")),
               json_integer_value(json_object_get(j, "dlq_messages")));
        {
            json_t *wrap = json_pack("{s:o}", "queues", rows);

            ga_print(stdout, wrap);
            json_decref(wrap);
        }
        json_decref(j);
    }
    return GA_EXIT_OK;
}

static int cmd_group(const ga_opts_t *o)
{
    const char *v = o->npos > 1 ? o->pos[1] : "";
    int rc;

    if (strcmp(v, "list") == 0)
        return (rc = need(o, 2, "group list")) ? rc : call(o, "GET", "/api/v1/groups", NULL);
    if (strcmp(v, "show") == 0)
        return (rc = need(o, 3, "group show GROUP"))
                   ? rc
                   : call_path(o, "GET", path_of("groups", o->pos[2], ""), NULL);
    if (strcmp(v, "lag") == 0)
        return (rc = need(o, 3, "group lag GROUP")) ? rc : group_lag(o);
    if (strcmp(v, "create") == 0)
        return (rc = need(o, 3, "group create GROUP [options]"))
                   ? rc
                   : call(o, "POST", "/api/v1/groups", group_body(o, o->pos[2]));
    if (strcmp(v, "update") == 0)
        return (rc = need(o, 3, "group update GROUP [options]"))
                   ? rc
                   : call_path(o, "PUT", path_of("groups", o->pos[2], ""),
                               group_body(o, NULL));
    if (strcmp(v, "delete") == 0)
        return (rc = need(o, 3, "group delete GROUP"))
                   ? rc
                   : call_path(o, "DELETE", path_of("groups", o->pos[2], ""), NULL);
    if (strcmp(v, "reset-offset") == 0) {
        json_t *b;

        if ((rc = need(o, 3, "group reset-offset GROUP --topic T --to beginning|end|time "
                             "[--time TIME]")))
            return rc;
        if (o->topic == NULL || o->to == NULL)
            return usage_err("%s: --topic and --to are required", "group reset-offset");
        if (strcmp(o->to, "beginning") != 0 && strcmp(o->to, "end") != 0 &&
            strcmp(o->to, "time") != 0)
            return usage_err("--to must be beginning, end or time, not '%s'", o->to);
        if ((strcmp(o->to, "time") == 0) != (o->time != NULL))
            return usage_err("%s: --time goes with --to time (and only with it)",
                             "group reset-offset");
        b = json_pack("{s:s, s:s}", "topic", o->topic, "to", o->to);
        if (o->time != NULL) {
            long ms;

            json_object_set_new(b, "time", parse_long(o->time, 0, 0x7fffffffffffffffL, &ms)
                                               ? json_integer(ms)
                                               : json_string(o->time));
        }
        return call_path(o, "POST", path_of("groups", o->pos[2], "/reset-offset"), b);
    }
    if (strcmp(v, "redrive-dlq") == 0) {
        json_t *b = json_object();

        if ((rc = need(o, 3, "group redrive-dlq GROUP [--max N]"))) {
            json_decref(b);
            return rc;
        }
        if (o->max >= 0)
            json_object_set_new(b, "max", json_integer(o->max));
        return call_path(o, "POST", path_of("groups", o->pos[2], "/dlq/redrive"), b);
    }
    return usage_err("unknown group command '%s' (list, show, lag, create, update, delete, "
                     "reset-offset, redrive-dlq)", v);
}

static int cmd_client(const ga_opts_t *o)
{
    const char *v = o->npos > 1 ? o->pos[1] : "";
    int rc;

    if (strcmp(v, "list") == 0)
        return (rc = need(o, 2, "client list")) ? rc : call(o, "GET", "/api/v1/clients", NULL);
    if (strcmp(v, "close") == 0)
        return (rc = need(o, 3, "client close CLIENT_ID"))
                   ? rc
                   : call_path(o, "DELETE", path_of("clients", o->pos[2], ""), NULL);
    return usage_err("unknown client command '%s' (list, close)", v);
}

/* "?body_max=N" and "&topic=T" tails. */
static char *query_of(const ga_opts_t *o, const char *key)
{
    char *t = o->topic != NULL ? curl_easy_escape(NULL, o->topic, 0) : NULL;
    char *k = key != NULL ? curl_easy_escape(NULL, key, 0) : NULL;
    char *q = NULL;

    if (asprintf(&q, "?x=1%s%s%s%s", t != NULL ? "&topic=" : "", t != NULL ? t : "",
                 k != NULL ? "&key=" : "", k != NULL ? k : "") < 0)
        q = NULL;
    if (q != NULL && o->body_max >= 0) {
        char *q2 = NULL;

        if (asprintf(&q2, "%s&body_max=%ld", q, o->body_max) < 0)
            q2 = NULL;
        free(q);
        q = q2;
    }
    curl_free(t);
    curl_free(k);
    return q;
}

static int cmd_message(const ga_opts_t *o)
{
    const char *v = o->npos > 1 ? o->pos[1] : "";
    char *q = NULL, *p = NULL;
    int rc;

    if (strcmp(v, "id") == 0) {
        if ((rc = need(o, 3, "message id MSG_ID [--topic T]")))
            return rc;
        q = query_of(o, NULL);
        p = q != NULL ? path_of("messages", o->pos[2], q) : NULL;
    } else if (strcmp(v, "key") == 0) {
        if ((rc = need(o, 3, "message key KEY --topic TOPIC")))
            return rc;
        if (o->topic == NULL)
            return usage_err("%s: --topic is required", "message key");
        q = query_of(o, o->pos[2]);
        if (q != NULL && asprintf(&p, "/api/v1/messages%s", q) < 0)
            p = NULL;
    } else if (strcmp(v, "at") == 0) {
        long qn, off;
        char tail[96];

        if ((rc = need(o, 5, "message at TOPIC QUEUE OFFSET")))
            return rc;
        if (!parse_long(o->pos[3], 0, 1023, &qn) ||
            !parse_long(o->pos[4], 0, 0x7fffffffffffffffL, &off))
            return usage_err("%s: QUEUE and OFFSET must be non-negative integers",
                             "message at");
        q = query_of(o, NULL);
        snprintf(tail, sizeof(tail), "/queues/%ld/offsets/%ld", qn, off);
        if (q != NULL) {
            char *t2 = NULL;

            if (asprintf(&t2, "%s%s", tail, q) >= 0)
                p = path_of("topics", o->pos[2], t2);
            free(t2);
        }
    } else if (strcmp(v, "trace") == 0) {
        if ((rc = need(o, 3, "message trace MSG_ID")))
            return rc;
        p = path_of("messages", o->pos[2], "/trace");
    } else {
        return usage_err("unknown message command '%s' (id, key, at, trace)", v);
    }
    free(q);
    return call_path(o, "GET", p, NULL);
}

static int cmd_config(const ga_opts_t *o)
{
    const char *v = o->npos > 1 ? o->pos[1] : "";

    if (strcmp(v, "show") == 0 && o->npos == 2)
        return call(o, "GET", "/api/v1/config", NULL);
    if (strcmp(v, "log-level") == 0 && o->npos == 2)
        return call(o, "GET", "/api/v1/config/log-level", NULL);
    if (strcmp(v, "log-level") == 0 && o->npos == 3)
        return call(o, "PUT", "/api/v1/config/log-level",
                    json_pack("{s:s}", "level", o->pos[2]));
    return usage_err("unknown config command '%s' (show, log-level [LEVEL])", v);
}

static int cmd_cluster(const ga_opts_t *o)
{
    const char *v = o->npos > 1 ? o->pos[1] : "";

    if (o->npos == 1)
        return call(o, "GET", "/api/v1/cluster", NULL);
    if (strcmp(v, "rebalance") == 0 && o->npos == 2)
        return call(o, "POST", "/api/v1/cluster/rebalance", json_object());
    return usage_err("unknown cluster command '%s' (cluster, cluster rebalance)", v);
}

int main(int argc, char **argv)
{
    ga_opts_t o = {.queues = -1, .max_attempts = -1, .max = -1, .body_max = -1, .retry_initial = -1,
                   .retry_max = -1, .retry_mult = -1, .fifo = -1, .admin = -1, .timeout_s = 30};
    const char *noun;
    int rc;

    o.server = getenv("GANTRY_ADMIN_SERVER");
    o.token = getenv("GANTRY_ADMIN_TOKEN");
    o.cacert = getenv("GANTRY_ADMIN_CACERT");
    if ((rc = parse_args(argc, argv, &o)) != 0)
        return rc < 0 ? GA_EXIT_OK : rc;
    if (o.server == NULL || o.server[0] == '\0')
        o.server = GA_DEFAULT_SERVER;
    if (strncmp(o.server, "http://", 7) != 0 && strncmp(o.server, "https://", 8) != 0)
        return usage_err("--server must be an http:// or https:// URL, not '%s'", o.server);
    if (o.user != NULL && strchr(o.user, ':') == NULL)
        return usage_err("--user must be ACCESS_KEY:SECRET_KEY");
    if (o.npos == 0) {
        usage(stderr);
        return GA_EXIT_USAGE;
    }
    noun = o.pos[0];
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        fprintf(stderr, "gantry-admin: cannot initialise libcurl\n");
        return GA_EXIT_UNREACHABLE;
    }
    if (strcmp(noun, "topic") == 0)
        rc = cmd_topic(&o);
    else if (strcmp(noun, "group") == 0)
        rc = cmd_group(&o);
    else if (strcmp(noun, "client") == 0)
        rc = cmd_client(&o);
    else if (strcmp(noun, "message") == 0)
        rc = cmd_message(&o);
    else if (strcmp(noun, "config") == 0)
        rc = cmd_config(&o);
    else if (strcmp(noun, "user") == 0)
        rc = cmd_user(&o);
    else if (strcmp(noun, "cluster") == 0)
        rc = cmd_cluster(&o);
    else
        rc = usage_err("unknown command '%s' (topic, group, client, message, config, user, "
                       "cluster)", noun);
    curl_global_cleanup();
    return rc;
}
