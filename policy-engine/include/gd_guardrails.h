/*
 * gd_guardrails: the guardrails of a policy (its "guardrails" section
 * and the packs it includes) and the engine that applies them to a
 * request.  One implementation for the nginx module (the guardrails
 * stage), guardctl (policy check, guardrails scan) and the benchmarks.
 * The format is in docs/guardrails.md, docs/policies.md and
 * policies/schema.json.
 *
 * Packs are files DIR/packs/NAME.json of the policy directory, loaded
 * by gd_policy_set_load() with the policies (file:line:col errors, part
 * of the policy version).  A policy's rules are its packs' rules, in the
 * order the packs are listed, with the policy's overrides applied, then
 * its own rules.
 *
 * Patterns are PCRE2, compiled once when the policy loads, with the JIT
 * where it is available; every match runs under the section's
 * match_limit and depth_limit, so no pattern or input stalls a worker.
 * A Hyperscan literal prefilter (gd_gr_prefilter.h) skips the patterns
 * that cannot match a text.
 */
#ifndef GD_GUARDRAILS_H
#define GD_GUARDRAILS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* what a rule looks at */
typedef enum {
    GD_GR_T_URI,      /* "uri": the path */
    GD_GR_T_ARGS,     /* "args": every argument's name and value */
    GD_GR_T_ARG,      /* "arg:NAME" */
    GD_GR_T_HEADER,   /* "header:NAME" (case-insensitive) */
    GD_GR_T_BODY,     /* "body": the raw body (inflated) */
    GD_GR_T_JSON,     /* "json:POINTER": one value of a JSON body */
    GD_GR_T_JSON_ALL, /* "json:*": every string value of a JSON body */
    GD_GR_T_FORM      /* "form:NAME": a value of a form body */
} gd_gr_target_e;

typedef struct {
    gd_gr_target_e kind;
    char *name; /* ARG, HEADER, FORM: the name; JSON: the pointer */
} gd_gr_target_t;

/* a set of target kinds, as a bit mask */
#define GD_GR_KIND(k) (1u << (k))

typedef enum {
    GD_GR_BLOCK,  /* refuse 403 guardrail_blocked */
    GD_GR_REDACT, /* replace each match in what goes upstream */
    GD_GR_SCORE,  /* add weight to the anomaly score */
    GD_GR_LOG     /* record the hit only */
} gd_gr_action_e;

typedef struct {
    char *id;
    char *description;
    const char *pack; /* the pack it came from, or NULL */
    gd_gr_target_t *targets;
    size_t ntargets;
    char *pattern;            /* a PCRE2 pattern, or NULL for a detector */
    uint32_t pattern_options; /* PCRE2 options of its "flags" */
    int detector;             /* gd_detector_e, or -1 */
    gd_gr_action_e action;
    uint32_t weight; /* GD_GR_SCORE */
    int shadow;
    char *kind;             /* the <kind> of [REDACTED:<kind>]: "kind", else the
                               detector's name, else the rule id */
    void *code;             /* pcre2_code_8 *, owned; NULL for a detector */
    unsigned kinds;         /* GD_GR_KIND(k) of each of its targets' kinds */
    void *code_invalid_utf; /* flag u: the same compiled with
                               PCRE2_MATCH_INVALID_UTF, for texts that are
                               not UTF-8 (code, faster, is for those that
                               are); NULL otherwise */
} gd_gr_rule_t;

/* body_over: a body over the limit (guard_body_max) */
#define GD_GR_BODY_REFUSE 0 /* 413 body_too_large */
#define GD_GR_BODY_SKIP 1   /* not inspected, a shadow marker */

/* on_error: a match that hits a limit, or the engine out of memory */
#define GD_GR_FAIL_CLOSED 0 /* 403 guardrail_error */
#define GD_GR_FAIL_OPEN 1   /* passes, with a shadow marker */

/* encoded: a body with Content-Encoding gzip or deflate */
#define GD_GR_ENCODED_INFLATE 0 /* inflated up to the limit and ratio */
#define GD_GR_ENCODED_REFUSE 1  /* 400 body_malformed */

/* the section's defaults (docs/guardrails.md) */
#define GD_GR_MATCH_LIMIT 100000 /* pcre2_set_match_limit */
#define GD_GR_DEPTH_LIMIT 10000  /* pcre2_set_depth_limit */
#define GD_GR_JSON_DEPTH 32
#define GD_GR_MAX_RATIO 100
#define GD_GR_REDACT_WITH "[REDACTED:{kind}]"

typedef struct {
    char **packs;
    size_t npacks;
    gd_gr_rule_t *rules; /* resolved: packs' rules, overrides, own */
    size_t nrules;
    uint32_t threshold; /* anomaly score that refuses; 0: none */
    int shadow;
    int body_over;
    int on_error;
    int encoded;
    uint32_t max_ratio;  /* inflated / encoded size, default 100 */
    uint32_t json_depth; /* default 32 */
    uint32_t match_limit;
    uint32_t depth_limit;
    char *redact_with; /* default "[REDACTED:{kind}]" */
    int needs_body;    /* some rule targets body, json or form */
    unsigned targeted; /* GD_GR_KIND(k) of every kind some rule targets */
    struct gd_gr_prefilter_s *prefilter; /* the prefilter of its patterns
                                            (gd_gr_prefilter.h), or NULL:
                                            every rule runs */
} gd_guardrails_t;

/*
 * A worker's (a thread's) scratch: the one PCRE2 match-data block, the
 * JIT stack, the Hyperscan scratch (grown for each section's prefilter
 * when first used with it), the normaliser's and the result's buffers.  Reused
 * by every gd_gr_eval(): no allocation per match.
 */
typedef struct gd_gr_scratch_s gd_gr_scratch_t;

gd_gr_scratch_t *gd_gr_scratch_new(void);
void gd_gr_scratch_free(gd_gr_scratch_t *s);

typedef struct {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} gd_gr_header_t;

/* the request, as the engine sees it (nothing is changed) */
typedef struct {
    const char *uri; /* the path as received, percent-encoded */
    size_t uri_len;
    const char *args; /* the query string, without '?' */
    size_t args_len;
    const gd_gr_header_t *headers;
    size_t nheaders;
    const char *content_type;
    size_t content_type_len;
    const char *body; /* the whole body, inflated; NULL: none */
    size_t body_len;
    int body_skipped; /* over the limit with body_over "skip" */
} gd_gr_request_t;

/* a rule's match; never the matched text */
typedef struct {
    const gd_gr_rule_t *rule;
    gd_gr_target_e target;
    const char *name; /* arg, header or form name, or JSON pointer */
    size_t name_len;
    size_t off; /* in the target's original text: the raw arg or header
                   value, the body, or the JSON string value */
    size_t len;
    int detector;   /* gd_detector_e, or -1 */
    uint32_t score; /* added to the anomaly score */
    int shadow;
} gd_gr_hit_t;

typedef enum {
    GD_GR_PASS = 0,
    GD_GR_BLOCKED,   /* guardrail_blocked */
    GD_GR_ANOMALY,   /* guardrail_anomaly */
    GD_GR_MALFORMED, /* body_malformed */
    GD_GR_ERROR      /* guardrail_error */
} gd_gr_verdict_e;

/* "pass", "blocked", "anomaly", "malformed", "error" */
const char *gd_gr_verdict_name(gd_gr_verdict_e v);

/* the most hits kept; more are counted in nhits_total */
#define GD_GR_MAX_HITS 64

typedef struct {
    gd_gr_verdict_e verdict;        /* enforced */
    gd_gr_verdict_e shadow_verdict; /* recorded only (shadow, fail open) */
    uint32_t score;
    uint32_t shadow_score;
    unsigned norm_flags; /* GD_NORM_F_* of every text inspected */
    const gd_gr_hit_t *hits;
    size_t nhits;
    size_t nhits_total;
    const char *error; /* MALFORMED, ERROR: why, no request text */

    /* the redactions: the new text, NULL where nothing changed */
    const char *body;
    size_t body_len;
    const char *args;
    size_t args_len;
    const gd_gr_header_t *headers; /* only the changed ones */
    size_t nheaders;
} gd_gr_result_t;

/*
 * Applies g to req.  The result points into s, valid until its next
 * use.  0, or -1 when out of memory (the result then says GD_GR_ERROR).
 */
int gd_gr_eval(const gd_guardrails_t *g, const gd_gr_request_t *req,
               gd_gr_scratch_t *s, gd_gr_result_t *res);

/*
 * The "guardrails" member of an audit record: score, threshold, flags,
 * and each hit's rule, pack, target, name or pointer, offset, length,
 * detector, action, score and shadow; never the matched text.  NULL when
 * out of memory.
 */
json_t *gd_gr_audit(const gd_guardrails_t *g, const gd_gr_result_t *res);

#endif
