/* Little-endian integers in byte buffers: every on-disk format (store
 * records, state log, checkpoints, snapshots) and the benchmarks' payload
 * stamps use these, so byte order is written in one place.
 *
 * Callers check bounds; these only move bytes. */
#ifndef GT_LE_H
#define GT_LE_H

#include <stdint.h>

/* The low `n` (0..8) bytes of v at p, least significant first. */
static inline void gt_le_put(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* The `n` (0..8) bytes at p as an unsigned integer. */
static inline uint64_t gt_le_get(const uint8_t *p, int n)
{
    uint64_t v = 0;

    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static inline void gt_le16_put(uint8_t *p, uint16_t v) { gt_le_put(p, v, 2); }
static inline void gt_le32_put(uint8_t *p, uint32_t v) { gt_le_put(p, v, 4); }
static inline void gt_le64_put(uint8_t *p, uint64_t v) { gt_le_put(p, v, 8); }
static inline uint16_t gt_le16_get(const uint8_t *p) { return (uint16_t)gt_le_get(p, 2); }
static inline uint32_t gt_le32_get(const uint8_t *p) { return (uint32_t)gt_le_get(p, 4); }
static inline uint64_t gt_le64_get(const uint8_t *p) { return gt_le_get(p, 8); }

#endif
