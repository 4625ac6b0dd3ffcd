/*
 * gd_gr_hscache: Hyperscan databases compiled once and kept on disk.
 *
 * Compiling the guardrails' full-pattern database takes seconds (the
 * packs' patterns are large case-insensitive alternations); every nginx
 * -t, reload and guardctl run would pay it for every section.  As
 * Suricata does with its Hyperscan caches, the compiled database is
 * serialised into a directory (the policy directory's .hscache/, 0755,
 * its files 0644: as readable as the policies, writable by their owner),
 * named by the SHA-256 of everything the compile is given (expressions,
 * flags and ids, in order), Hyperscan's version and the platform it
 * compiles for; a later compile of the same input deserialises it
 * instead (hs_deserialize_database checks it).  A database is code for
 * Hyperscan: the directory and each file are used only when owned by the
 * user or by root and writable by no one else.  A file that cannot be
 * read or deserialised is compiled again and replaced; one that cannot be
 * written only costs the next load a compile.  The directory keeps the
 * GD_GR_HSCACHE_FILES most recently used databases (a read refreshes a
 * file's time), so that old policies' databases do not pile up.
 */
#ifndef GD_GR_HSCACHE_H
#define GD_GR_HSCACHE_H

#include <hs/hs.h>
#include <stddef.h>

/* the most databases a cache keeps (the least recently used go) */
#define GD_GR_HSCACHE_FILES 512

/* the cache's directory in a policy directory */
#define GD_GR_HSCACHE_DIR ".hscache"

/*
 * where the databases of the policies in policy_dir are kept:
 * $GUARD_HSCACHE when set, else policy_dir's .hscache/ (written into buf),
 * else nowhere (NULL: policy_dir NULL, or buf too small)
 */
const char *gd_gr_hscache_dir(const char *policy_dir, char *buf, size_t size);

/*
 * hs_compile_multi(expr, flags, ids, n, HS_MODE_BLOCK, NULL, db, err),
 * through the cache in dir (NULL: none, created when missing); *cached
 * says whether the database came from it.
 */
hs_error_t gd_gr_hs_compile(const char *dir, const char *const *expr,
                            const unsigned *flags, const unsigned *ids,
                            unsigned n, hs_database_t **db,
                            hs_compile_error_t **err, int *cached);

/* the same for hs_compile_lit_multi(lit, flags, ids, lens, n, ...) */
hs_error_t gd_gr_hs_compile_lit(const char *dir, const char *const *lit,
                                const size_t *lens, const unsigned *flags,
                                const unsigned *ids, unsigned n,
                                hs_database_t **db, hs_compile_error_t **err,
                                int *cached);

#endif
