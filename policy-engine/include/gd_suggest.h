/*
 * gd_suggest: "did you mean": the known name nearest to a misspelt one,
 * for the errors about unknown members (policy files, guardd.conf).
 */
#ifndef GD_SUGGEST_H
#define GD_SUGGEST_H

#include <stddef.h>

/*
 * The optimal string alignment distance of a and b (Levenshtein, with
 * the swap of two adjacent characters counted as one edit), in bytes;
 * names longer than GD_SUGGEST_MAX count as SIZE_MAX.
 */
#define GD_SUGGEST_MAX 64
size_t gd_suggest_distance(const char *a, const char *b);

/*
 * The name of known (NULL-terminated) nearest to word: at most 1 edit
 * away for a word of 1 to 4 bytes, 2 for a longer one, and closer than
 * any other (the first of those at the same distance); NULL when none is.
 */
const char *gd_suggest(const char *word, const char *const *known);

#endif
