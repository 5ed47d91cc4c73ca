/* gt_du_bytes (gt_du.h): a walk with openat/fstatat that carries its sum
 * on the stack, where nftw(3) would need a global for it. */
#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gt_du.h"

/* Deeper than any store layout; bounds the recursion. */
#define GT_DU_MAX_DEPTH 32

/* Takes ownership of `fd` (a directory). */
static uint64_t gt_du_dir(int fd, int depth)
{
    DIR *d = fdopendir(fd);
    struct dirent *e;
    uint64_t sum = 0;

    if (d == NULL) {
        close(fd);
        return 0;
    }
    while ((e = readdir(d)) != NULL) {
        struct stat sb;
        int sub;

        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 ||
            fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0)
            continue;
        if (S_ISREG(sb.st_mode))
            sum += (uint64_t)sb.st_blocks * 512;
        else if (S_ISDIR(sb.st_mode) && depth < GT_DU_MAX_DEPTH &&
                 (sub = openat(dirfd(d), e->d_name,
                               O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) >= 0)
            sum += gt_du_dir(sub, depth + 1);
    }
    closedir(d);
    return sum;
}

uint64_t gt_du_bytes(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    return fd >= 0 ? gt_du_dir(fd, 0) : 0;
}
