/*
 * gd_nearest: "did you mean": the known name nearest to a mistyped one,
 * by edit distance (insertions, deletions, substitutions, and swaps of
 * two neighbouring characters each count 1).
 */
#ifndef GD_NEAREST_H
#define GD_NEAREST_H

#include <stddef.h>

/*
 * The edit distance between a and b (optimal string alignment), or
 * SIZE_MAX when either is longer than 255 bytes.
 */
size_t gd_nearest_distance(const char *a, const char *b);

/*
 * The name of names[0..n-1] nearest to word, when it is near enough to
 * be a likely typo: a distance of at most a third of the longer name's
 * length (and at least 1).  The first of equally near names wins; NULL
 * when none is near enough.
 */
const char *gd_nearest(const char *word, const char *const *names, size_t n);

#endif
