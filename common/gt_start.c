/* The start-up steps of gt_start.h. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "gt_log.h"
#include "gt_start.h"

void gt_start_args_set(gt_start_args_t *a, const char *path, const char *value)
{
    if (a->n_set < GT_START_MAX_SET) {
        a->set_path[a->n_set] = path;
        a->set_value[a->n_set++] = value;
    }
}

/* Loads the file and applies the overrides.  Returns 0 or 1 (reported). */
static int gt_start_load(const char *prog, const gt_start_args_t *a, cfg_t *cfg)
{
    char err[512];

    cfg_init(cfg);
    if (a->config != NULL && cfg_load_file(cfg, a->config, err, sizeof(err)) != GT_OK) {
        fprintf(stderr, "%s: config error: %s\n", prog, err);
        return 1;
    }
    for (int i = 0; i < a->n_set; i++) {
        if (cfg_set(cfg, a->set_path[i], a->set_value[i], err, sizeof(err)) != GT_OK) {
            fprintf(stderr, "%s: bad command-line value: %s\n", prog, err);
            return 1;
        }
    }
    return 0;
}

int gt_start_config(const char *prog, const gt_start_args_t *a, bool counts, cfg_t *cfg)
{
    gt_log_level_t lvl;
    int rc;

    if (a->check != NULL) {
        char err[512];
        cfg_init(cfg);
        rc = cfg_load_file(cfg, a->check, err, sizeof(err)) == GT_OK ? 0 : 1;
        if (rc == 0 && counts)
            printf("%s: ok (%zu topics, %zu groups)\n", a->check, cfg->n_topics,
                   cfg->n_groups);
        else if (rc == 0)
            printf("%s: ok\n", a->check);
        else
            fprintf(stderr, "%s\n", err);
        cfg_free(cfg);
        return rc;
    }
    if (gt_start_load(prog, a, cfg) != 0) {
        cfg_free(cfg);
        return 1;
    }
    if (a->print) {
        cfg_print(cfg, stdout);
        cfg_free(cfg);
        return 0;
    }
    if (gt_log_level_parse(cfg->log.level, &lvl) == 0)
        gt_log_set_level(lvl);
    return -1;
}

int gt_start_mkdir(const char *path)
{
    char tmp[4096];
    size_t len = strlen(path);

    if (len == 0 || len >= sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(tmp, path, len + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

uint64_t gt_start_amqp_record_room(const cfg_t *cfg)
{
    return (uint64_t)cfg->amqp.frame_max + 4096;
}

uint32_t gt_start_record_limit(const cfg_t *cfg)
{
    uint64_t lim = 4 * 1024 * 1024 + 64 * 1024;
    uint64_t amqp = (uint64_t)cfg->amqp.max_message_size + gt_start_amqp_record_room(cfg);
    uint64_t seg = (uint64_t)cfg->store.segment_size;

    if (amqp > lim)
        lim = amqp;
    if (lim > (576u << 20))
        lim = 576u << 20;
    if (seg > 8192 && lim > seg - 4096)
        lim = seg - 4096;
    return (uint32_t)lim;
}

gt_err_t gt_start_open_local(const cfg_t *cfg, bool repair, st_store_t **out)
{
    st_config_t sc;
    gt_err_t rc;

    st_config_init(&sc);
    sc.dir = cfg->store.data_dir;
    sc.segment_size = (uint64_t)cfg->store.segment_size;
    sc.flush = strcmp(cfg->store.flush, "async") == 0 ? ST_FLUSH_ASYNC : ST_FLUSH_SYNC;
    sc.flush_interval_ms = (uint32_t)cfg->store.flush_interval_ms;
    sc.retention_hours = (uint32_t)cfg->store.retention_hours;
    sc.index_mem_entries = (uint32_t)cfg->store.index_mem_entries;
    sc.max_message_bytes = gt_start_record_limit(cfg);
    sc.repair = repair;
    if ((rc = st_local_open(&sc, out)) != GT_OK)
        GT_LOG(ERROR, "main", "cannot open the store in %s: %s%s", sc.dir, gt_err_str(rc),
               rc == GT_ECORRUPT ? " (see the message above; --repair-store "
                                   "truncates at the damage)"
                                 : "");
    return rc;
}
