/* HOST:PORT parsing (see gt_addr.h). */
#include "gt_addr.h"

#include <string.h>

static bool gt_host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

static bool gt_host6_char(char c)
{
    return (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
           (c >= '0' && c <= '9') || c == ':' || c == '.';
}

/* Checks HOST (between h and end); NULL or why not. */
static const char *gt_host_problem(const char *h, const char *end, bool v6)
{
    if (h == end)
        return "empty host";
    if ((size_t)(end - h) >= sizeof(((gt_hostport_t *)0)->host))
        return "host too long";
    for (const char *p = h; p < end; p++) {
        if (v6 && !gt_host6_char(*p))
            return "bad character in IPv6 address";
        if (!v6 && *p == ':')
            return "IPv6 addresses need brackets, e.g. [::1]:8081";
        if (!v6 && !gt_host_char(*p))
            return "bad character in host";
    }
    return NULL;
}

gt_err_t gt_hostport_parse(const char *s, int default_port, gt_hostport_t *out,
                           const char **why)
{
    const char *h = s, *end, *colon, *problem;
    long port = 0;
    bool v6 = s[0] == '[';

    if (v6) {
        const char *close = strchr(s, ']');
        if (close == NULL) {
            *why = "missing ']' after the IPv6 address";
            return GT_EINVAL;
        }
        h = s + 1;
        end = close;
        colon = close[1] == ':' ? close + 1 : NULL;
        if ((problem = gt_host_problem(h, end, true)) == NULL && colon == NULL &&
            (close[1] != '\0' || default_port <= 0))
            problem = "missing \":PORT\"";
    } else {
        colon = strrchr(s, ':');
        end = colon != NULL ? colon : s + strlen(s);
        problem = colon == NULL && default_port <= 0
                      ? "missing \":PORT\""
                      : gt_host_problem(h, end, false);
    }
    if (problem != NULL) {
        *why = problem;
        return GT_EINVAL;
    }
    if (colon != NULL) {
        if (colon[1] == '\0') {
            *why = "empty port";
            return GT_EINVAL;
        }
        for (const char *p = colon + 1; *p != '\0'; p++) {
            if (*p < '0' || *p > '9' || p - colon > 5) {
                *why = "port must be a number 1..65535";
                return GT_EINVAL;
            }
            port = port * 10 + (*p - '0');
        }
    } else {
        port = default_port;
    }
    if (port < 1 || port > 65535) {
        *why = "port must be a number 1..65535";
        return GT_EINVAL;
    }
    memcpy(out->host, h, (size_t)(end - h));
    out->host[end - h] = '\0';
    out->port = (uint16_t)port;
    out->ipv6 = v6;
    return GT_OK;
}
