/* Start-up steps that gantry (proxy/gantry_main.c) and gantry-store
 * (store-server/ss_main.c) share: the config from a file plus flag
 * overrides, --check-config / --print-config, the data directory, and the
 * local store engine opened from the config's store section (with the
 * same record limit, so that a proxy in remote mode may store what it
 * could store locally).  Library gt_start: it knows cfg.h and st.h, which
 * the rest of common/ does not. */
#ifndef GT_START_H
#define GT_START_H

#include <stdbool.h>
#include <stdint.h>

#include "cfg.h"
#include "st.h"

#define GT_START_MAX_SET 8

/* What the command line asked for (each binary parses its own flags). */
typedef struct gt_start_args {
    const char *config; /* --config FILE, NULL: built-in defaults */
    const char *check;  /* --check-config FILE */
    bool print;         /* --print-config */
    bool repair;        /* --repair-store */
    /* Flag overrides, applied after the file: {cfg path, value}. */
    const char *set_path[GT_START_MAX_SET];
    const char *set_value[GT_START_MAX_SET];
    int n_set;
} gt_start_args_t;

/* Records an override (borrowed strings); past GT_START_MAX_SET they are
 * ignored. */
void gt_start_args_set(gt_start_args_t *a, const char *path, const char *value);

/* Does what `a` asks before serving: --check-config (prints "FILE: ok",
 * with the topic and group counts when `counts`), loads the config (file
 * then overrides) into *cfg, --print-config, and sets the log level.
 * Returns -1 when the caller should serve with *cfg (then cfg_free it),
 * else the exit status (*cfg already freed); errors go to stderr as
 * "PROG: ...". */
int gt_start_config(const char *prog, const gt_start_args_t *a, bool counts, cfg_t *cfg);

/* mkdir -p: 0, or -1 with errno set. */
int gt_start_mkdir(const char *path);

/* Room in a store record beside an AMQP body: the content header's
 * property list (one frame at most), exchange, routing key, record
 * header. */
uint64_t gt_start_amqp_record_room(const cfg_t *cfg);

/* The store's record limit: a 4 MiB body (the RocketMQ limit, checked by
 * the gRPC service itself) with up to 64 KiB of properties, or an AMQP
 * body of amqp.max_message_size with its properties, whichever is larger;
 * no more than a record may be (576 MiB) nor than a segment holds. */
uint32_t gt_start_record_limit(const cfg_t *cfg);

/* Opens the local engine in store.data_dir with the config's store
 * settings; `repair`: --repair-store.  The failure is logged.  *out:
 * returns owned (st_close). */
gt_err_t gt_start_open_local(const cfg_t *cfg, bool repair, st_store_t **out);

#endif
