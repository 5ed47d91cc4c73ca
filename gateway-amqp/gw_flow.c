/* The AMQP broker's flow control, RabbitMQ's connection.blocked: while the
 * store has more than block_bytes of appends to answer, or while the
 * process's resident memory is over the memory high watermark, publishing
 * connections get connection.blocked (when they take it) and are not read.
 * They are unblocked when the appends are under half the mark and the
 * memory under its mark.  Connections that never published (consumers) go
 * on.  Loop thread only. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gt_log.h"
#include "gw_broker_int.h"

#define GW_MEM_SAMPLE_MS 100 /* resident memory read at most this often ... */
#define GW_MEM_SAMPLE_BYTES ((uint64_t)1 << 20) /* ... unless an append is big */
#define GW_TRIM_MS 1000 /* malloc_trim() at most this often */

uint64_t gw_flow_rss(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, res = 0;
    long page = sysconf(_SC_PAGESIZE);

    if (f == NULL)
        return 0;
    if (fscanf(f, "%llu %llu", &size, &res) != 2)
        res = 0;
    fclose(f);
    return (uint64_t)res * (uint64_t)(page > 0 ? page : 4096);
}

/* A cgroup's memory limit in bytes from file path, or 0 ("max", none). */
static uint64_t cgroup_limit(const char *path)
{
    FILE *f = fopen(path, "r");
    unsigned long long v = 0;

    if (f == NULL)
        return 0;
    if (fscanf(f, "%llu", &v) != 1)
        v = 0;
    fclose(f);
    return (uint64_t)v;
}

uint64_t gw_flow_total_memory(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    uint64_t total = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
    /* A container's limit counts, as RabbitMQ takes it into account. */
    const char *paths[] = {"/sys/fs/cgroup/memory.max",
                           "/sys/fs/cgroup/memory/memory.limit_in_bytes"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        uint64_t l = cgroup_limit(paths[i]);
        if (l > 0 && (total == 0 || l < total))
            total = l;
    }
    return total;
}

static void block_one(gw_bconn_t *bc, const char *reason)
{
    gw_method_t m = {.id = GW_CONNECTION_BLOCKED};

    if (bc->block_stall || bc->c == NULL)
        return;
    bc->block_stall = true;
    m.u.connection_blocked.reason = gw_str(reason);
    if (gw_conn_blocked_notify(bc->c))
        gw_conn_send_method(bc->c, 0, &m);
    gw_conn_stall(bc->c);
}

void gw_flow_block_new(gw_bconn_t *bc)
{
    if (bc->b->blocked)
        block_one(bc, "low on memory");
}

void gw_flow_check(gw_broker_t *b, uint64_t appended)
{
    if (b->mem_mark != UINT64_MAX) {
        int64_t now = gw_now_ms();
        if (appended >= GW_MEM_SAMPLE_BYTES || now - b->mem_at >= GW_MEM_SAMPLE_MS) {
            uint64_t rss = gw_flow_rss();
            if (rss > b->mem_mark && now - b->trim_at >= GW_TRIM_MS) {
                /* Over the mark: first give the allocator's free memory
                 * back (big bodies leave whole free regions behind). */
                b->trim_at = now;
                malloc_trim(0);
                rss = gw_flow_rss();
            }
            bool high = rss > b->mem_mark;
            b->mem_at = now;
            if (high && !b->mem_high)
                GT_LOG(WARN, "amqp",
                       "resident memory %llu bytes is over the high watermark (%llu): "
                       "publishers are blocked",
                       (unsigned long long)rss, (unsigned long long)b->mem_mark);
            else if (!high && b->mem_high)
                GT_LOG(INFO, "amqp", "resident memory %llu bytes is back under the high "
                       "watermark (%llu)", (unsigned long long)rss,
                       (unsigned long long)b->mem_mark);
            b->mem_high = high;
        }
    }
    bool over = b->inflight_bytes > b->block_bytes || b->mem_high;
    bool under = b->inflight_bytes <= b->block_bytes / 2 && !b->mem_high;

    if (!b->blocked && over) {
        b->blocked = true;
        if (!b->mem_high)
            GT_LOG(INFO, "amqp", "%llu bytes of appends in flight: publishers blocked",
                   (unsigned long long)b->inflight_bytes);
        for (gw_bconn_t *bc = b->conns; bc != NULL; bc = bc->next)
            if (bc->publisher)
                block_one(bc, "low on memory");
    } else if (b->blocked && under) {
        b->blocked = false;
        GT_LOG(INFO, "amqp", "publishers unblocked");
        for (gw_bconn_t *bc = b->conns; bc != NULL; bc = bc->next) {
            gw_method_t m = {.id = GW_CONNECTION_UNBLOCKED};
            if (!bc->block_stall || bc->c == NULL)
                continue;
            bc->block_stall = false;
            if (gw_conn_blocked_notify(bc->c))
                gw_conn_send_method(bc->c, 0, &m);
            gw_conn_unstall(bc->c);
        }
    }
}
