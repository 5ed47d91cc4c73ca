/* A main() for libFuzzer targets built without libFuzzer: runs
 * LLVMFuzzerTestOneInput once on every file named on the command line, or
 * found (non-recursively, dot-files skipped) in a directory named there.
 * CTest uses it to replay the committed corpus, so every seed and every
 * past crash stays a regression test without clang.  Fails when no input
 * was found, so a mistyped corpus path cannot pass silently. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Runs one file; returns 0, or -1 when it cannot be read. */
static int replay_file(const char *path)
{
    FILE *fp = fopen(path, "rb");
    uint8_t *buf = NULL;
    long n = -1;
    int rc = -1;

    if (fp == NULL)
        goto out;
    if (fseek(fp, 0, SEEK_END) != 0 || (n = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0)
        goto out;
    /* An exact-size heap copy, so ASan sees any read past the input. */
    buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf == NULL || fread(buf, 1, (size_t)n, fp) != (size_t)n)
        goto out;
    LLVMFuzzerTestOneInput(buf, (size_t)n);
    rc = 0;
out:
    if (rc != 0)
        fprintf(stderr, "fuzz_replay: cannot read %s\n", path);
    free(buf);
    if (fp != NULL)
        fclose(fp);
    return rc;
}

int main(int argc, char **argv)
{
    size_t runs = 0;

    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "fuzz_replay: no such file or directory: %s\n", argv[i]);
            return 1;
        }
        if (!S_ISDIR(st.st_mode)) {
            if (replay_file(argv[i]) != 0)
                return 1;
            runs++;
            continue;
        }
        DIR *d = opendir(argv[i]);
        if (d == NULL)
            return 1;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            size_t len = strlen(argv[i]) + strlen(e->d_name) + 2;
            char *path = malloc(len);
            if (path == NULL) {
                closedir(d);
                return 1;
            }
            snprintf(path, len, "%s/%s", argv[i], e->d_name);
            int rc = replay_file(path);
            free(path);
            if (rc != 0) {
                closedir(d);
                return 1;
            }
            runs++;
        }
        closedir(d);
    }
    if (runs == 0) {
        fprintf(stderr, "fuzz_replay: no inputs\n");
        return 1;
    }
    printf("fuzz_replay: %zu inputs ran cleanly\n", runs);
    return 0;
}
