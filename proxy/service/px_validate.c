/* Request validation that every RocketMQ handler shares: topic and group
 * names (including the store's system names, which clients may never
 * reach), protobuf time values, and the strings of the raw request.
 *
 * Strings.  proto3 `string` fields must be UTF-8, and Java and Go clients
 * refuse responses that are not, so a tag, key or property that is not
 * must be refused on the way in, not stored and echoed to consumers.  A NUL
 * is valid UTF-8 but our decoded C strings end there ("a\0b" would be
 * stored as "a"), so it is refused too.  Decoded messages no longer show
 * either, hence px_validate_wire() walks the wire bytes against the
 * request's descriptor before they are decoded (gt_pbwire.h).
 *
 * The rules and codes follow the upstream proxy's validator: a bad or
 * system topic is ILLEGAL_TOPIC, a bad or system group
 * ILLEGAL_CONSUMER_GROUP, checked before any lookup so that the answer
 * does not depend on whether the name exists. */
#include <stdio.h>
#include <string.h>

#include "gt_pbwire.h"
#include "gt_sql.h"
#include "gt_tagexpr.h"
#include "gt_text.h"
#include "px_svc_int.h"

bool px_name_is_derived(const char *name)
{
    return strncmp(name, ST_DLQ_PREFIX, strlen(ST_DLQ_PREFIX)) == 0 ||
           strncmp(name, ST_RETRY_PREFIX, strlen(ST_RETRY_PREFIX)) == 0;
}

bool px_name_is_system(const char *name)
{
    if (strncmp(name, ST_DLQ_PREFIX, strlen(ST_DLQ_PREFIX)) == 0)
        name += strlen(ST_DLQ_PREFIX);
    else if (strncmp(name, ST_RETRY_PREFIX, strlen(ST_RETRY_PREFIX)) == 0)
        name += strlen(ST_RETRY_PREFIX);
    return st_is_sys_name(name) || strcmp(name, PX_TRACE_TOPIC) == 0;
}

px_code_t px_check_topic(const Apache__Rocketmq__V2__Resource *r, char *why,
                         size_t whylen)
{
    char reason[128];

    if (r == NULL || r->name == NULL || r->name[0] == '\0') {
        snprintf(why, whylen, "topic is required");
        return PX_CODE(ILLEGAL_TOPIC);
    }
    if (px_name_is_system(r->name)) {
        snprintf(why, whylen, "topic \"%.160s\" is a system topic: clients cannot "
                 "access it", r->name);
        return PX_CODE(ILLEGAL_TOPIC);
    }
    /* A group's %DLQ% (and %RETRY%) topic is readable by consumers. */
    if (px_name_is_derived(r->name)) {
        if (strlen(r->name) > 127 || r->name[strspn(r->name,
                "%|abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")] != '\0') {
            snprintf(why, whylen, "topic \"%.160s\" is not a valid name", r->name);
            return PX_CODE(ILLEGAL_TOPIC);
        }
        return PX_CODE(OK);
    }
    if (cfg_topic_name_check(r->name, reason, sizeof(reason)) != GT_OK) {
        snprintf(why, whylen, "topic \"%.160s\": %s", r->name, reason);
        return PX_CODE(ILLEGAL_TOPIC);
    }
    return PX_CODE(OK);
}

px_code_t px_check_group(const Apache__Rocketmq__V2__Resource *r, char *why,
                         size_t whylen)
{
    char reason[128];

    if (r == NULL || r->name == NULL || r->name[0] == '\0') {
        snprintf(why, whylen, "consumer group is required");
        return PX_CODE(ILLEGAL_CONSUMER_GROUP);
    }
    if (px_name_is_system(r->name)) {
        snprintf(why, whylen, "group \"%.160s\" is a system group: clients cannot "
                 "use it", r->name);
        return PX_CODE(ILLEGAL_CONSUMER_GROUP);
    }
    if (cfg_group_name_check(r->name, reason, sizeof(reason)) != GT_OK) {
        snprintf(why, whylen, "group \"%.160s\": %s", r->name, reason);
        return PX_CODE(ILLEGAL_CONSUMER_GROUP);
    }
    return PX_CODE(OK);
}

/* google.protobuf.Timestamp's documented range: 0001-01-01T00:00:00Z to
 * 9999-12-31T23:59:59.999999999Z. */
#define PX_TS_MIN_SECONDS (-62135596800LL)
#define PX_TS_MAX_SECONDS 253402300799LL

bool px_timestamp_valid(const Google__Protobuf__Timestamp *t)
{
    return t->seconds >= PX_TS_MIN_SECONDS && t->seconds <= PX_TS_MAX_SECONDS &&
           t->nanos >= 0 && t->nanos <= 999999999;
}

/* ---- strings on the wire ---- */

#define PX_WIRE_MAX_DEPTH 32

/* The RocketMQ code for a bad string, by field (and the field holding its
 * message, for Resource names and property entries). */
static const struct {
    const char *field;
    const char *parent; /* NULL: any */
    px_code_t code;
} px_wire_codes[] = {
    {"tag", NULL, PX_CODE(ILLEGAL_MESSAGE_TAG)},
    {"keys", NULL, PX_CODE(ILLEGAL_MESSAGE_KEY)},
    {"message_group", NULL, PX_CODE(ILLEGAL_MESSAGE_GROUP)},
    {"message_id", NULL, PX_CODE(ILLEGAL_MESSAGE_ID)},
    {"key", "user_properties", PX_CODE(ILLEGAL_MESSAGE_PROPERTY_KEY)},
    {"value", "user_properties", PX_CODE(ILLEGAL_MESSAGE_PROPERTY_KEY)},
    {"name", "topic", PX_CODE(ILLEGAL_TOPIC)},
    {"name", "topics", PX_CODE(ILLEGAL_TOPIC)},
    {"name", "group", PX_CODE(ILLEGAL_CONSUMER_GROUP)},
    {"receipt_handle", NULL, PX_CODE(INVALID_RECEIPT_HANDLE)},
    {"transaction_id", NULL, PX_CODE(INVALID_TRANSACTION_ID)},
    {"expression", NULL, PX_CODE(ILLEGAL_FILTER_EXPRESSION)},
};

px_code_t px_validate_wire(const ProtobufCMessageDescriptor *desc,
                           const uint8_t *data, size_t len, char *why,
                           size_t whylen)
{
    gt_pbwire_bad_t bad;
    const char *parent;

    if (gt_pbwire_strings_ok(desc, data, len, true, PX_WIRE_MAX_DEPTH, &bad))
        return PX_CODE(OK);
    parent = bad.parent != NULL ? bad.parent->name : "";
    snprintf(why, whylen, "%s%s%s.%s %s", parent, parent[0] ? " " : "",
             bad.msg->short_name, bad.field->name,
             bad.nul ? "contains a NUL character" : "is not valid UTF-8");
    for (size_t i = 0; i < sizeof(px_wire_codes) / sizeof(px_wire_codes[0]); i++)
        if (strcmp(bad.field->name, px_wire_codes[i].field) == 0 &&
            (px_wire_codes[i].parent == NULL || strcmp(parent, px_wire_codes[i].parent) == 0))
            return px_wire_codes[i].code;
    return PX_CODE(BAD_REQUEST);
}

bool px_screen_request(px_call_t *call, const uint8_t *data, size_t len)
{
    const px_method_t *m = px_call_method_entry(call);
    char why[256];
    px_code_t code = px_validate_wire(m->req_desc, data, len, why, sizeof(why));

    if (code == PX_CODE(OK))
        return true;
    if (m->kind == PX_RPC_BIDI_STREAM)
        px_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, why);
    else if (px_require_client(call, m->resp_desc))
        px_reply_status(call, m->resp_desc, code, why);
    return false;
}

const char *px_authority_text(px_call_t *call)
{
    const char *auth = px_call_authority(call);

    return gt_utf8_valid((const uint8_t *)auth, strlen(auth)) ? auth : "";
}

px_code_t px_check_filter(const Apache__Rocketmq__V2__FilterExpression *f, bool *sql,
                          char *why, size_t whylen)
{
    const char *e = f != NULL && f->expression != NULL ? f->expression : "";
    char err[160];
    gt_sql_t *tree = NULL;

    *sql = f != NULL && f->type == APACHE__ROCKETMQ__V2__FILTER_TYPE__SQL;
    if (*sql) {
        if (gt_sql_compile(e, strlen(e), &tree, err, sizeof(err)) != GT_OK) {
            snprintf(why, whylen, "SQL92 filter: %.150s", err);
            return PX_CODE(ILLEGAL_FILTER_EXPRESSION);
        }
        gt_sql_free(tree); /* checked here; the store compiles its own */
    } else if (gt_tagexpr_check(e) != GT_OK) {
        snprintf(why, whylen, "tag expression \"%.120s\" is not valid", e);
        return PX_CODE(ILLEGAL_FILTER_EXPRESSION);
    }
    return PX_CODE(OK);
}
