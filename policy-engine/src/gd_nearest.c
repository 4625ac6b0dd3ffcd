/*
 * gd_nearest: the known name nearest to a mistyped one, see gd_nearest.h.
 */
#include "gd_nearest.h"

#include <stdint.h>
#include <string.h>

#define GD_NEAREST_MAX 255

size_t gd_nearest_distance(const char *a, const char *b)
{
    /* three rows of the table: two back (for swaps), the last, this one */
    size_t row[3][GD_NEAREST_MAX + 1];
    size_t la = strlen(a), lb = strlen(b);

    if (la > GD_NEAREST_MAX || lb > GD_NEAREST_MAX) {
        return SIZE_MAX;
    }

    /* row i of the table is row[i % 3] */
    for (size_t j = 0; j <= lb; j++) {
        row[0][j] = j;
    }
    for (size_t i = 1; i <= la; i++) {
        size_t *cur = row[i % 3], *last = row[(i + 2) % 3],
               *two = row[(i + 1) % 3];

        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t d = last[j - 1] + cost;

            if (last[j] + 1 < d) {
                d = last[j] + 1;
            }
            if (cur[j - 1] + 1 < d) {
                d = cur[j - 1] + 1;
            }
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] &&
                a[i - 2] == b[j - 1] && two[j - 2] + 1 < d) {
                d = two[j - 2] + 1;
            }
            cur[j] = d;
        }
    }
    return row[la % 3][lb];
}

const char *gd_nearest(const char *word, const char *const *names, size_t n)
{
    const char *best = NULL;
    size_t best_d = SIZE_MAX;

    for (size_t i = 0; i < n; i++) {
        size_t d = gd_nearest_distance(word, names[i]);
        size_t longer =
            strlen(word) > strlen(names[i]) ? strlen(word) : strlen(names[i]);
        size_t near = longer / 3 ? longer / 3 : 1;

        if (d <= near && d < best_d) {
            best = names[i];
            best_d = d;
        }
    }
    return best;
}
