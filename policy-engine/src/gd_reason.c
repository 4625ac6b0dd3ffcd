/*
 * gd_reason: the reason table, see gd_reason.h.
 */
#include "gd_reason.h"

#include <string.h>

static const struct {
    const char *name, *words;
} gd_stages[] = {
#define GD_STAGE(name, words) {name, words},
#define GD_REASON(...)
#include "gd_reason.def"
#undef GD_REASON
#undef GD_STAGE
};

static const gd_reason_t gd_reasons[] = {
#define GD_STAGE(name, words)
#define GD_REASON(id, name, stage, status, type, title, detail, bearer, words) \
    {name, stage, status, type, title, detail, bearer, words},
#include "gd_reason.def"
#undef GD_REASON
#undef GD_STAGE
};

const gd_reason_t *gd_reason(gd_reason_e reason)
{
    if ((unsigned)reason >= GD_REASON_LAST) {
        reason = GD_REASON_INTERNAL_ERROR;
    }
    return &gd_reasons[reason];
}

gd_reason_e gd_reason_find(const char *name)
{
    for (int i = 0; name && i < GD_REASON_LAST; i++) {
        if (strcmp(name, gd_reasons[i].name) == 0) {
            return (gd_reason_e)i;
        }
    }
    return GD_REASON_LAST;
}

const char *gd_reason_stage_words(const char *stage)
{
    for (size_t i = 0; stage && i < sizeof(gd_stages) / sizeof(gd_stages[0]);
         i++) {
        if (strcmp(stage, gd_stages[i].name) == 0) {
            return gd_stages[i].words;
        }
    }
    return NULL;
}
