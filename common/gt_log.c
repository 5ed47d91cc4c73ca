/* The log sink: formatted lines on stderr with an ISO-8601 UTC timestamp. */
#include "gt_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

_Atomic int gt_log_level_current = GT_LOG_LEVEL_INFO;

static const char *const gt_log_names[] = {"trace", "debug", "info",
                                           "warn",  "error", "off"};

void gt_log_write(gt_log_level_t lvl, const char *subsys, const char *fmt, ...)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    size_t n;
    va_list ap;
    int w;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    w = snprintf(line + n, sizeof(line) - n, ".%03ldZ %-5s [%s] ",
                 ts.tv_nsec / 1000000L, gt_log_level_name(lvl), subsys);
    if (w > 0)
        n += (size_t)w < sizeof(line) - n ? (size_t)w : sizeof(line) - n - 1;
    va_start(ap, fmt);
    w = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    va_end(ap);
    if (w > 0)
        n += (size_t)w < sizeof(line) - n ? (size_t)w : sizeof(line) - n - 1;
    if (n >= sizeof(line) - 1)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    /* One write per line: concurrent lines do not interleave. */
    ssize_t r = write(STDERR_FILENO, line, n);
    (void)r;
}

int gt_log_level_parse(const char *name, gt_log_level_t *out)
{
    for (int i = 0; i <= GT_LOG_LEVEL_OFF; i++) {
        if (strcasecmp(name, gt_log_names[i]) == 0) {
            *out = (gt_log_level_t)i;
            return 0;
        }
    }
    return -1;
}

const char *gt_log_level_name(gt_log_level_t lvl)
{
    if ((int)lvl < 0 || lvl > GT_LOG_LEVEL_OFF)
        return "?";
    return gt_log_names[lvl];
}

void gt_log_set_level(gt_log_level_t lvl)
{
    atomic_store(&gt_log_level_current, (int)lvl);
}
