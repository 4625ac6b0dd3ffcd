/*
 * gd_gr_hscache: Hyperscan databases compiled once and kept on disk, see
 * gd_gr_hscache.h.
 */
#include "gd_gr_hscache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

/* a cached database larger than this is not read */
#define GD_GR_HSCACHE_MAX (256u << 20)

/* what names a database: everything hs_compile_multi is given, the
   library's version and the platform it compiles for (its fields one by
   one: the struct has padding) */
static int cache_key(const char *const *expr, const size_t *lens,
                     const unsigned *flags, const unsigned *ids, unsigned n,
                     char hex[65])
{
    static const char tag[] = "guard hscache 2";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    hs_platform_info_t plat;
    const char *ver = hs_version();
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx != NULL && hs_populate_platform(&plat) == HS_SUCCESS &&
             EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(ctx, tag, sizeof(tag)) == 1 &&
             EVP_DigestUpdate(ctx, ver, strlen(ver) + 1) == 1 &&
             EVP_DigestUpdate(ctx, &plat.tune, sizeof(plat.tune)) == 1 &&
             EVP_DigestUpdate(ctx, &plat.cpu_features,
                              sizeof(plat.cpu_features)) == 1 &&
             EVP_DigestUpdate(ctx, &n, sizeof(n)) == 1 &&
             /* literals (their lengths) or expressions */
             EVP_DigestUpdate(ctx, lens ? "L" : "E", 1) == 1;

    for (unsigned i = 0; ok && i < n; i++) {
        size_t len = lens ? lens[i] : strlen(expr[i]) + 1;

        ok = EVP_DigestUpdate(ctx, &flags[i], sizeof(flags[i])) == 1 &&
             EVP_DigestUpdate(ctx, &ids[i], sizeof(ids[i])) == 1 &&
             (!lens || EVP_DigestUpdate(ctx, &len, sizeof(len)) == 1) &&
             EVP_DigestUpdate(ctx, expr[i], len) == 1;
    }
    ok = ok && EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 32;
    EVP_MD_CTX_free(ctx);
    for (unsigned i = 0; ok && i < 32; i++) {
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    }
    return ok ? 0 : -1;
}

/* whether st is trusted: owned by us or by root, writable by no one else
   (a database is code for Hyperscan: no one else may plant one) */
static int trusted(const struct stat *st)
{
    return (st->st_uid == geteuid() || st->st_uid == 0) &&
           (st->st_mode & (S_IWGRP | S_IWOTH)) == 0;
}

/* the cache directory, created when missing; 0 when it is trusted */
static int cache_dir(const char *dir)
{
    struct stat st;

    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        return -1;
    }
    return lstat(dir, &st) == 0 && S_ISDIR(st.st_mode) && trusted(&st) ? 0 : -1;
}

static hs_database_t *cache_read(const char *path)
{
    hs_database_t *db = NULL;
    struct stat st;
    char *buf = NULL;
    size_t got = 0;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

    if (fd < 0) {
        return NULL;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || !trusted(&st) ||
        st.st_size <= 0 || (unsigned long long)st.st_size > GD_GR_HSCACHE_MAX ||
        (buf = malloc((size_t)st.st_size)) == NULL) {
        goto out;
    }
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);

        if (r <= 0) {
            if (r < 0 && errno == EINTR) {
                continue;
            }
            goto out;
        }
        got += (size_t)r;
    }
    if (hs_deserialize_database(buf, got, &db) != HS_SUCCESS) {
        db = NULL;
    } else {
        /* used: the last to be pruned (cache_prune) */
        (void)futimens(fd, NULL);
    }
out:
    free(buf);
    close(fd);
    return db;
}

typedef struct {
    char name[72];
    struct timespec used;
} cache_file_t;

static int newest_first(const void *a, const void *b)
{
    const cache_file_t *x = a, *y = b;

    if (x->used.tv_sec != y->used.tv_sec) {
        return x->used.tv_sec < y->used.tv_sec ? 1 : -1;
    }
    return (x->used.tv_nsec < y->used.tv_nsec) -
           (x->used.tv_nsec > y->used.tv_nsec);
}

/*
 * Room for one more database: of those in dir, the GD_GR_HSCACHE_FILES - 1
 * most recently used stay (each change to a section's patterns compiles a
 * new one, and the old ones would pile up); temporary files a crashed
 * writer left over an hour ago go too.
 */
static void cache_prune(const char *dir)
{
    cache_file_t *f = NULL;
    size_t n = 0, cap = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[4096];
    struct stat st;

    if (d == NULL) {
        return;
    }
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        int db = l == 64 + 5 && strcmp(e->d_name + 64, ".hsdb") == 0;

        if ((!db && strncmp(e->d_name, ".tmp.", 5) != 0) ||
            (size_t)snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >=
                sizeof(path) ||
            lstat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
            continue;
        }
        if (!db) {
            if (st.st_mtime < time(NULL) - 3600) {
                unlink(path);
            }
            continue;
        }
        if (n == cap) {
            cache_file_t *g =
                realloc(f, (cap = cap ? 2 * cap : 16) * sizeof(*f));

            if (g == NULL) {
                break;
            }
            f = g;
        }
        memcpy(f[n].name, e->d_name, l + 1);
        f[n++].used = st.st_mtim;
    }
    closedir(d);

    if (n > 1) {
        qsort(f, n, sizeof(*f), newest_first);
    }
    for (size_t i = GD_GR_HSCACHE_FILES - 1; i < n; i++) {
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, f[i].name) <
            sizeof(path)) {
            unlink(path);
        }
    }
    free(f);
}

/* db serialised into path, atomically (a temporary file renamed); a
   failure only costs the next load a compile */
static void cache_write(const char *dir, const char *path,
                        const hs_database_t *db)
{
    char *bytes = NULL, tmp[4096];
    size_t len = 0, put = 0;
    int fd;

    if (hs_serialize_database(db, &bytes, &len) != HS_SUCCESS) {
        return;
    }
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s/.tmp.XXXXXX", dir) >=
            sizeof(tmp) ||
        (fd = mkstemp(tmp)) < 0) {
        free(bytes);
        return;
    }
    /* as readable as the policies it is compiled from: guardd and
       guardctl, under other users, read what nginx's master wrote */
    (void)fchmod(fd, 0644);
    while (put < len) {
        ssize_t w = write(fd, bytes + put, len - put);

        if (w <= 0) {
            if (w < 0 && errno == EINTR) {
                continue;
            }
            break;
        }
        put += (size_t)w;
    }
    if (close(fd) != 0 || put != len || rename(tmp, path) != 0) {
        unlink(tmp);
    }
    free(bytes);
}

const char *gd_gr_hscache_dir(const char *policy_dir, char *buf, size_t size)
{
    const char *env = getenv("GUARD_HSCACHE");

    if (env != NULL && env[0] != '\0') {
        return env;
    }
    if (policy_dir == NULL || (size_t)snprintf(buf, size, "%s/%s", policy_dir,
                                               GD_GR_HSCACHE_DIR) >= size) {
        return NULL;
    }
    return buf;
}

/* hs_compile_multi of expressions, or hs_compile_lit_multi of literals
   (lens not NULL) */
static hs_error_t compile(const char *const *expr, const size_t *lens,
                          const unsigned *flags, const unsigned *ids,
                          unsigned n, hs_database_t **db,
                          hs_compile_error_t **err)
{
    return lens ? hs_compile_lit_multi(expr, flags, ids, lens, n, HS_MODE_BLOCK,
                                       NULL, db, err)
                : hs_compile_multi(expr, flags, ids, n, HS_MODE_BLOCK, NULL, db,
                                   err);
}

static hs_error_t compile_cached(const char *dir, const char *const *expr,
                                 const size_t *lens, const unsigned *flags,
                                 const unsigned *ids, unsigned n,
                                 hs_database_t **db, hs_compile_error_t **err,
                                 int *cached)
{
    char hex[65], path[4096];
    hs_error_t rc;

    *cached = 0;
    if (dir == NULL || cache_dir(dir) != 0 ||
        cache_key(expr, lens, flags, ids, n, hex) != 0 ||
        (size_t)snprintf(path, sizeof(path), "%s/%s.hsdb", dir, hex) >=
            sizeof(path)) {
        return compile(expr, lens, flags, ids, n, db, err);
    }

    if ((*db = cache_read(path)) != NULL) {
        *cached = 1;
        *err = NULL;
        return HS_SUCCESS;
    }

    rc = compile(expr, lens, flags, ids, n, db, err);
    if (rc == HS_SUCCESS) {
        cache_prune(dir);
        cache_write(dir, path, *db);
    }
    return rc;
}

hs_error_t gd_gr_hs_compile(const char *dir, const char *const *expr,
                            const unsigned *flags, const unsigned *ids,
                            unsigned n, hs_database_t **db,
                            hs_compile_error_t **err, int *cached)
{
    return compile_cached(dir, expr, NULL, flags, ids, n, db, err, cached);
}

hs_error_t gd_gr_hs_compile_lit(const char *dir, const char *const *lit,
                                const size_t *lens, const unsigned *flags,
                                const unsigned *ids, unsigned n,
                                hs_database_t **db, hs_compile_error_t **err,
                                int *cached)
{
    return compile_cached(dir, lit, lens, flags, ids, n, db, err, cached);
}
