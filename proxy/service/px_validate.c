/* Request validation that every RocketMQ handler shares: topic and group
 * names (including the store's system names, which clients may never
 * reach) and protobuf time values.
 *
 * The rules and codes follow the upstream proxy's validator: a bad or
 * system topic is ILLEGAL_TOPIC, a bad or system group
 * ILLEGAL_CONSUMER_GROUP, checked before any lookup so that the answer
 * does not depend on whether the name exists. */
#include <stdio.h>
#include <string.h>

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
    return st_is_sys_name(name);
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
