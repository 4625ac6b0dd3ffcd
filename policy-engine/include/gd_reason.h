/*
 * gd_reason: the reason codes of refusals (docs/reasons.md), one table
 * for the module, guardd and guardctl.  The rows are in gd_reason.def.
 */
#ifndef GD_REASON_H
#define GD_REASON_H

typedef enum {
#define GD_STAGE(name, words)
#define GD_REASON(id, ...) GD_REASON_##id,
#include "gd_reason.def"
#undef GD_REASON
#undef GD_STAGE
    GD_REASON_LAST
} gd_reason_e;

typedef struct {
    const char *name;   /* "token_missing": $guard_reason, "reason" */
    const char *stage;  /* the audit record's "stage" */
    int status;         /* the HTTP status of the refusal */
    const char *type;   /* the problem's type URN */
    const char *title;  /* the problem's title */
    const char *detail; /* the problem's detail */
    /* the RFC 6750 error of WWW-Authenticate (with a 401), or NULL */
    const char *bearer_error;
    const char *words; /* what it means, in short, or NULL */
} gd_reason_t;

/* The row of a reason; internal_error's for a value out of range. */
const gd_reason_t *gd_reason(gd_reason_e reason);

/* The reason named name, or GD_REASON_LAST when none is. */
gd_reason_e gd_reason_find(const char *name);

/* What a stage of an audit record checks, in short, or NULL. */
const char *gd_reason_stage_words(const char *stage);

#endif
