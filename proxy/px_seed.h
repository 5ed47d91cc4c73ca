/* The config's topics and groups in the store (proxy/px_seed.c): declared
 * by gantry at start-up in every mode, and in remote and cluster modes
 * declared again whenever the store node's data identity changes. */
#ifndef PX_SEED_H
#define PX_SEED_H

#include "cfg.h"
#include "gt_err.h"
#include "st.h"

typedef struct px_seed px_seed_t;

/* Declares cfg's topics and groups in `st` (both borrowed), one at a time,
 * waiting for each (start-up, or the seed thread; never a store thread).
 * Idempotent.  The first failure is logged and returned. */
gt_err_t px_seed_declare(st_store_t *st, const cfg_t *cfg);

/* The data identity of the store node `node` (an st_remote client:
 * GetInfo.data_id) into out (size PX_SEED_ID_MAX), waiting for the answer;
 * "" when the node has none or does not answer. */
#define PX_SEED_ID_MAX 64
void px_seed_identity(st_store_t *node, char *out);

/* Starts a thread that asks `node` every PX_SEED_CHECK_MS for its data
 * identity and, when it is not `seen` (the one asked for before the
 * start-up declaration; "": the first answer is taken as it), declares
 * cfg's topics and groups in `st` again.  node, st and cfg are borrowed
 * until px_seed_stop().  *out: returns owned. */
gt_err_t px_seed_watch_start(st_store_t *node, st_store_t *st, const cfg_t *cfg,
                             const char *seen, px_seed_t **out);
/* Stops and joins the thread (NULL: nothing). */
void px_seed_stop(px_seed_t *s);

#endif
