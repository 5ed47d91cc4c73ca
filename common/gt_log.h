/* Logging: one macro, levels, subsystem tags.
 *
 * GT_LOG(WARN, "store", "segment %s: %s", path, why);
 *
 * The level is checked before any argument is formatted, so debug lines cost
 * one comparison when disabled.  Output goes to stderr, one line per call,
 * written with a single write(2) so lines from several threads do not
 * interleave.  The level and the sink are the only process-wide state. */
#ifndef GT_LOG_H
#define GT_LOG_H

#include <stdatomic.h>

typedef enum gt_log_level {
    GT_LOG_LEVEL_TRACE = 0,
    GT_LOG_LEVEL_DEBUG,
    GT_LOG_LEVEL_INFO,
    GT_LOG_LEVEL_WARN,
    GT_LOG_LEVEL_ERROR,
    GT_LOG_LEVEL_OFF,
} gt_log_level_t;

extern _Atomic int gt_log_level_current;

#define GT_LOG(lvl, subsys, ...)                                               \
    do {                                                                       \
        if (GT_LOG_LEVEL_##lvl >= atomic_load_explicit(&gt_log_level_current,  \
                                                       memory_order_relaxed))  \
            gt_log_write(GT_LOG_LEVEL_##lvl, (subsys), __VA_ARGS__);           \
    } while (0)

void gt_log_write(gt_log_level_t lvl, const char *subsys, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Parses "trace", "debug", "info", "warn", "error", "off".  Returns 0 and
 * stores the level, or -1 for an unknown name. */
int gt_log_level_parse(const char *name, gt_log_level_t *out);
const char *gt_log_level_name(gt_log_level_t lvl);
void gt_log_set_level(gt_log_level_t lvl);

#endif
