/* HOST:PORT addresses: the one parser for listen addresses (config, the
 * gRPC runtime, the HTTP endpoint), the :authority a client used (route
 * answers) and the benchmark's target. */
#ifndef GT_ADDR_H
#define GT_ADDR_H

#include <stdbool.h>
#include <stdint.h>

#include "gt_err.h"

typedef struct gt_hostport {
    char host[256]; /* without the brackets of an IPv6 address */
    uint16_t port;
    bool ipv6;      /* HOST was a bracketed IPv6 address */
} gt_hostport_t;

/* Splits `s` (borrowed) as HOST:PORT: HOST is a name, an IPv4 address or a
 * bracketed IPv6 address ([::1]), PORT a number 1..65535.  With
 * default_port > 0 a missing ":PORT" means default_port.  GT_OK with *out
 * filled, or GT_EINVAL with *why set to a static reason ("empty host",
 * "missing \":PORT\"", …). */
gt_err_t gt_hostport_parse(const char *s, int default_port, gt_hostport_t *out,
                           const char **why);

#endif
