/* Disk space a directory tree takes (du): rocketmq_storage_size on the
 * proxy's /metrics (proxy/http/px_metrics.c) and GetInfo.storage_bytes on
 * gantry-store (store-server/ss_service.c). */
#ifndef GT_DU_H
#define GT_DU_H

#include <stdint.h>

/* The blocks (st_blocks * 512) of the regular files below `dir` (borrowed),
 * symbolic links not followed; what cannot be read counts 0.  No global
 * state: concurrent callers each get their own sum. */
uint64_t gt_du_bytes(const char *dir);

#endif
