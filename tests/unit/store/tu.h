/* Test helpers for the store unit tests: temporary directories, and
 * blocking wrappers around the asynchronous st_* calls that copy results
 * out of the borrowed callback structures. */
#ifndef TU_H
#define TU_H

#include <CUnit/Basic.h>

#include "st.h"
#include "st_int.h"

typedef struct tu_msg {
    char topic[ST_NAME_MAX + 1];
    char tag[64];
    char id[ST_MSG_ID_MAX];
    char body[512];
    char handle[ST_HANDLE_MAX];
    char keys[4][64];
    uint32_t nkeys;
    char pk[8][32], pv[8][ST_NAME_MAX + 1];
    uint32_t nprops;
    uint32_t attempt;
    uint32_t queue;
    uint64_t offset, position;
    int64_t store_ts;
    uint32_t tx_checks;
} tu_msg_t;

char *tu_tmpdir(const char *name);         /* returns owned path */
void tu_rmrf(const char *path);
void tu_copy_file(const char *from, const char *to);
long tu_file_size(const char *path);
uint8_t *tu_read_file(const char *path, size_t *len);
void tu_write_file(const char *path, const void *buf, size_t len);

void tu_config(st_config_t *c, const char *dir, st_flush_t flush);
st_store_t *tu_open(const char *dir, st_flush_t flush);
gt_err_t tu_open_cfg(const st_config_t *c, st_store_t **out);

gt_err_t tu_topic(st_store_t *st, const char *name, uint32_t nq);
gt_err_t tu_group(st_store_t *st, const char *name, uint32_t max_attempts,
                  st_consume_from_t from);
gt_err_t tu_fifo_group(st_store_t *st, const char *name);
gt_err_t tu_group_put(st_store_t *st, const st_group_t *g);
gt_err_t tu_group_get(st_store_t *st, const char *name, st_group_t *out);
gt_err_t tu_send(st_store_t *st, const char *topic, const char *tag,
                 const char *key, const char *body, int32_t queue,
                 st_append_item_t *item);
gt_err_t tu_send_n(st_store_t *st, const char *topic, const st_message_t *m,
                   size_t n, st_append_item_t *items);
gt_err_t tu_pop(st_store_t *st, const st_pop_req_t *req, tu_msg_t *out,
                size_t *n);
gt_err_t tu_pop_simple(st_store_t *st, const char *group, const char *topic,
                       const char *tags, uint32_t max, int64_t inv_ms,
                       tu_msg_t *out, size_t *n);
gt_err_t tu_ack(st_store_t *st, const char *group, const char *topic,
                const char *handle);
/* st_ack_batch: the overall result; errs (room for n) gets the per-handle
 * results and *nres (may be NULL) how many came. */
gt_err_t tu_ack_batch(st_store_t *st, const char *group, const char *topic,
                      const char *const *handles, size_t n, gt_err_t *errs,
                      size_t *nres);
gt_err_t tu_release(st_store_t *st, const char *group, const char *topic,
                    const char *handle);
gt_err_t tu_change(st_store_t *st, const char *group, const char *topic,
                   const char *handle, int64_t ms, char *newh);
gt_err_t tu_pull(st_store_t *st, const char *topic, uint32_t q, uint64_t off,
                 uint32_t max, tu_msg_t *out, size_t *n, uint64_t *next);
gt_err_t tu_offset_get(st_store_t *st, const char *g, const char *t,
                       uint32_t q, uint64_t *off);
gt_err_t tu_offset_update(st_store_t *st, const char *g, const char *t,
                          uint32_t q, uint64_t off);
gt_err_t tu_offset_query(st_store_t *st, const char *t, uint32_t q,
                         st_offset_kind_t k, int64_t ts, uint64_t *off);
gt_err_t tu_lookup(st_store_t *st, bool by_key, const char *topic,
                   const char *s, tu_msg_t *out, size_t *n);
gt_err_t tu_stats(st_store_t *st, const char *topic, const char *group,
                  st_stats_t *out);
void tu_sleep_ms(int ms);

/* The store's test clock (st_test_clock) for deterministic time: after
 * tu_clock_start() the stores' wall clock (st_now_ms) stands still at the
 * real time of the call and moves only by tu_clock_advance(), which also
 * wakes st's service thread (st may be NULL) and waits for it to finish a
 * pass at the new time: parked pops, timers and transaction checks due by
 * then have been handled (what they append may still be on its way).
 * tu_clock_stop(): the real clock again. */
void tu_clock_start(void);
void tu_clock_stop(void);
void tu_clock_advance(st_store_t *st, int64_t ms);
int64_t tu_clock_now(void);
/* Waits until the flusher has synced everything published (async mode):
 * a table snapshot then covers it all. */
void tu_wait_synced(st_store_t *st);
/* Waits until exactly n pops/pulls are parked in st. */
void tu_wait_parked(st_store_t *st, size_t n);

/* A message (tag "h", key = body, property color=red) that is delayed to
 * delivery_ts (0: none) and/or a half message; txcheck: ST_PROP_TXCHECK. */
gt_err_t tu_send_held(st_store_t *st, const char *topic, const char *body,
                      int64_t delivery_ts, bool half, const char *txcheck,
                      st_append_item_t *item);
gt_err_t tu_tx_end(st_store_t *st, const char *topic, const char *id,
                   bool commit);
gt_err_t tu_tx_checked(st_store_t *st, const char *topic, const char *id,
                       uint32_t max_checks);
/* st_tx_checked() with seen_checks (a claim). */
gt_err_t tu_tx_claim(st_store_t *st, const char *topic, const char *id,
                     uint32_t seen_checks, uint32_t max_checks);
gt_err_t tu_tx_pending(st_store_t *st, int64_t ms, uint32_t max,
                       tu_msg_t *out, size_t *n);
gt_err_t tu_recall(st_store_t *st, const char *topic, const char *id);

/* st_append_multi; items (n of them) may be NULL. */
gt_err_t tu_send_multi(st_store_t *st, const st_message_t *m,
                       const st_dest_t *dests, size_t n,
                       st_append_item_t *items);

/* Durable metadata records (st_meta_*).  tu_meta_list copies the answer
 * into owned records (free with tu_kv_free). */
typedef struct tu_kv {
    uint8_t *key;
    uint32_t key_len;
    uint8_t *value;
    uint32_t value_len;
} tu_kv_t;
gt_err_t tu_meta_put(st_store_t *st, const char *ns, const void *key,
                     uint32_t key_len, const void *value, uint32_t value_len);
gt_err_t tu_meta_del(st_store_t *st, const char *ns, const void *key,
                     uint32_t key_len);
gt_err_t tu_meta_list(st_store_t *st, const st_meta_list_req_t *req,
                      tu_kv_t **out, size_t *n, bool *more);
void tu_kv_free(tu_kv_t *kv, size_t n);

/* Runs the suite's tests; returns non-zero on any failure. */
int tu_run(const char *suite, const CU_TestInfo *tests);

#endif
