/* Text for gt_err_t codes. */
#include <stddef.h>

#include "gt_err.h"

static const char *const gt_err_names[GT_ERR_MAX_] = {
    [GT_OK] = "ok",
    [GT_AGAIN] = "try again",
    [GT_EINVAL] = "invalid argument",
    [GT_ENOMEM] = "out of memory",
    [GT_EIO] = "I/O error",
    [GT_ENOSPC] = "no space left on device",
    [GT_ENOTFOUND] = "not found",
    [GT_EEXIST] = "already exists",
    [GT_ERANGE] = "out of range",
    [GT_ECORRUPT] = "data corrupted",
    [GT_ESHUTDOWN] = "shutting down",
    [GT_ETIMEDOUT] = "timed out",
    [GT_EBUSY] = "resource busy",
    [GT_EUNSUPPORTED] = "not supported",
};

const char *gt_err_str(gt_err_t err)
{
    if ((int)err < 0 || err >= GT_ERR_MAX_ || gt_err_names[err] == NULL)
        return "unknown error";
    return gt_err_names[err];
}
