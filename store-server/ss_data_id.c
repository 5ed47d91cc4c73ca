/* The identity of a node's data directory (GetInfo.data_id): 16 random
 * bytes, made when the node starts on a directory that has none (a new or
 * wiped one) and kept in <data_dir>/data-id.  A proxy that sees it change
 * knows that the node's data are new -- the topics and groups it declared
 * are gone -- and declares them again (proxy/px_seed.c).
 *
 * The file is one line, "gantry-data-id 1 <32 lowercase hex digits>\n"
 * (magic, format version, the id), written to a temporary file, fsynced
 * and renamed into place.  A file that does not read exactly so is
 * replaced by a new identity: that costs at most one more declaration
 * from each proxy, never data. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "gt_log.h"
#include "ss_int.h"

#define SS_DATA_ID_FILE "data-id"
#define SS_DATA_ID_MAGIC "gantry-data-id 1 "
#define SS_DATA_ID_LINE (sizeof(SS_DATA_ID_MAGIC) - 1 + SS_DATA_ID_HEX + 1)

/* The id in a file's bytes, or false when they are not exactly a line of
 * the format.  Pure. */
static bool ss_data_id_parse(const char *buf, size_t len, char out[SS_DATA_ID_HEX + 1])
{
    const char *hex = buf + sizeof(SS_DATA_ID_MAGIC) - 1;

    if (len != SS_DATA_ID_LINE || memcmp(buf, SS_DATA_ID_MAGIC, sizeof(SS_DATA_ID_MAGIC) - 1) != 0 ||
        buf[len - 1] != '\n')
        return false;
    for (size_t i = 0; i < SS_DATA_ID_HEX; i++)
        if (!((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f')))
            return false;
    memcpy(out, hex, SS_DATA_ID_HEX);
    out[SS_DATA_ID_HEX] = '\0';
    return true;
}

static gt_err_t ss_data_id_write(const char *dir, const char *id)
{
    char path[4096], tmp[4096], line[SS_DATA_ID_LINE + 1];
    int fd, dfd;
    bool ok;

    if ((size_t)snprintf(path, sizeof(path), "%s/" SS_DATA_ID_FILE, dir) >= sizeof(path) ||
        (size_t)snprintf(tmp, sizeof(tmp), "%s/" SS_DATA_ID_FILE ".tmp", dir) >= sizeof(tmp))
        return GT_EINVAL;
    snprintf(line, sizeof(line), SS_DATA_ID_MAGIC "%s\n", id);
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0)
        return GT_EIO;
    ok = write(fd, line, SS_DATA_ID_LINE) == (ssize_t)SS_DATA_ID_LINE && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return GT_EIO;
    }
    if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return GT_OK;
}

gt_err_t ss_data_id_load(const char *dir, char out[SS_DATA_ID_HEX + 1])
{
    char path[4096], buf[SS_DATA_ID_LINE + 2];
    unsigned char raw[SS_DATA_ID_HEX / 2];
    ssize_t n = -1;
    int fd;
    gt_err_t rc;

    if ((size_t)snprintf(path, sizeof(path), "%s/" SS_DATA_ID_FILE, dir) >= sizeof(path))
        return GT_EINVAL;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0) {
        n = read(fd, buf, sizeof(buf));
        close(fd);
    } else if (errno != ENOENT) {
        GT_LOG(WARN, "main", "cannot read %s: %s: making a new data identity", path,
               strerror(errno));
    }
    if (n > 0 && ss_data_id_parse(buf, (size_t)n, out))
        return GT_OK;
    if (n >= 0)
        GT_LOG(WARN, "main", "%s is damaged: making a new data identity", path);
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
        return GT_EIO;
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    if ((rc = ss_data_id_write(dir, out)) != GT_OK)
        return rc;
    GT_LOG(INFO, "main", "new data directory: identity %s", out);
    return GT_OK;
}
