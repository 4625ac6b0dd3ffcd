/*
 * gd_suggest: the known name nearest to a misspelt one, see gd_suggest.h.
 */
#include "gd_suggest.h"

#include <stdint.h>
#include <string.h>

size_t gd_suggest_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    /* three rows: the one before the last, the last, this one */
    size_t d[3][GD_SUGGEST_MAX + 1];

    if (la > GD_SUGGEST_MAX || lb > GD_SUGGEST_MAX) {
        return SIZE_MAX;
    }

    for (size_t j = 0; j <= lb; j++) {
        d[0][j] = j;
    }

    for (size_t i = 1; i <= la; i++) {
        size_t *row = d[i % 3], *prev = d[(i - 1) % 3], *prev2 = d[(i + 1) % 3];

        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] != b[j - 1];
            size_t v = prev[j - 1] + cost;

            if (prev[j] + 1 < v) {
                v = prev[j] + 1;
            }
            if (row[j - 1] + 1 < v) {
                v = row[j - 1] + 1;
            }
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] &&
                a[i - 2] == b[j - 1] && prev2[j - 2] + 1 < v) {
                v = prev2[j - 2] + 1;
            }
            row[j] = v;
        }
    }

    return d[la % 3][lb];
}

const char *gd_suggest(const char *word, const char *const *known)
{
    size_t limit = strlen(word) <= 4 ? 1 : 2, best = SIZE_MAX;
    const char *near = NULL;

    for (const char *const *k = known; *k; k++) {
        size_t dist = gd_suggest_distance(word, *k);

        if (dist <= limit && dist < best) {
            best = dist;
            near = *k;
        }
    }

    return near;
}
