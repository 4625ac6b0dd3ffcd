/*
 * gd_policy: the one loader and validator of Guard policy files, shared
 * by the nginx module, guardd and guardctl.  The format is described in
 * docs/policies.md and policies/schema.json.
 */
#ifndef GD_POLICY_H
#define GD_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "gd_guardrails.h"

#define GD_POLICY_VERSION_LEN 64

/* every error, one line each: "FILE:LINE:COLUMN: POINTER: message" */
typedef struct {
    char **lines;
    size_t n;
} gd_errors_t;

void gd_errors_add(gd_errors_t *errs, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void gd_errors_free(gd_errors_t *errs);

typedef struct {
    char *name;
    uint64_t requests;
    uint64_t period_ms;
    uint64_t burst;
    int per_subject;
    char **methods; /* NULL: any method */
    size_t nmethods;
    char *path; /* NULL: any path */
    int shadow;
} gd_rate_rule_t;

/* the condition of a risk signal: one per signal */
typedef enum {
    GD_RISK_ROUTE_SENSITIVE = 1,   /* route_sensitive: bool */
    GD_RISK_METHOD,                /* method: [methods] */
    GD_RISK_BODY_SIZE_OVER,        /* body_size_over: bytes */
    GD_RISK_CLAIM,                 /* claim: {name, lacks | equals} */
    GD_RISK_SUBJECT_RATE_OVER,     /* subject_rate_over: {requests, window} */
    GD_RISK_SUBJECT_REFUSALS_OVER, /* subject_refusals_over: {count, window} */
    GD_RISK_NEW_CLIENT_IP,         /* new_client_ip: {window} */
    GD_RISK_OUTSIDE_HOURS,         /* outside_hours: {from, to} */
    GD_RISK_INLINE_SCORE_OVER      /* inline_score_over: score */
} gd_risk_cond_t;

/* the most signals of one policy (the scorer's result has room for all) */
#define GD_RISK_MAX_SIGNALS 64
/* the most requests / refusals a window condition may count */
#define GD_RISK_MAX_COUNT 1000

typedef struct {
    char *id;
    uint32_t weight;
    int shadow;
    gd_risk_cond_t cond;

    int sensitive;  /* ROUTE_SENSITIVE: matches this value of the flag */
    char **methods; /* METHOD */
    size_t nmethods;
    uint64_t over;      /* BODY_SIZE_OVER, INLINE_SCORE_OVER: the limit;
                           SUBJECT_RATE_OVER: requests;
                           SUBJECT_REFUSALS_OVER: count */
    uint64_t window_ms; /* SUBJECT_*_OVER, NEW_CLIENT_IP: whole seconds */
    char *claim;        /* CLAIM: the claim's name */
    char *claim_value;  /* CLAIM: the value of lacks or equals */
    int claim_lacks;    /* CLAIM: 1 lacks, 0 equals */
    uint32_t from_min;  /* OUTSIDE_HOURS: minutes since midnight, */
    uint32_t to_min;    /* 0..1439, from != to; to < from wraps */
} gd_risk_signal_t;

/* a time zone's offset from UTC and the span it holds for (gd_risk.h) */
typedef struct {
    int64_t from;   /* the offset holds for from <= t < until (unix time) */
    int64_t until;  /* the next transition (DST), or when to look again */
    int32_t offset; /* seconds east of UTC */
    int known;      /* 0: the zone has no file in the zone database */
} gd_risk_zone_t;

typedef struct {
    uint32_t step_up; /* 1..1000, < deny */
    uint32_t deny;    /* 1..1000 */
    uint64_t ttl_ms;  /* 0: not given */
    int shadow;
    char *time_zone;      /* NULL: UTC */
    gd_risk_zone_t *zone; /* time_zone's offset, from gd_risk_zones_load();
                             NULL until then */
    gd_risk_signal_t *signals;
    size_t nsignals; /* 1..GD_RISK_MAX_SIGNALS */
} gd_risk_policy_t;

/* the most statuses of a breaker's failure_statuses */
#define GD_BREAKER_MAX_STATUSES 16

/* a circuit breaker's thresholds (the "breaker" section, per name) */
typedef struct {
    char *name;         /* NULL: the defaults (gd_breaker_defaults) */
    uint64_t window_ms; /* "window": the sliding window, default 10 s */
    uint32_t min_calls; /* calls in the window before it may open */
    double failure_ratio;
    double slow_ratio; /* 1.0: opens only when every call is slow */
    uint64_t slow_ms;  /* a call slower than this is slow */
    int failure_statuses[GD_BREAKER_MAX_STATUSES];
    size_t nfailure_statuses;
    uint64_t open_for_ms;
    uint64_t open_for_max_ms;
    double backoff; /* open_for's factor at each re-open, >= 1 */
    uint32_t probes;
    int shadow;
} gd_breaker_t;

/* the thresholds of a breaker name that no policy lists */
extern const gd_breaker_t gd_breaker_defaults;

typedef struct {
    char *tenant; /* NULL in the default policy */
    char *file;
    int shadow;

    int has_auth;
    char **issuers;
    size_t nissuers;
    char *jwks;                 /* resolved against the policy directory */
    int jwks_line, jwks_column; /* of its value in file (gd_jwks.h) */
    int auth_shadow;

    int has_residency;
    char **regions;
    size_t nregions;
    int residency_shadow;

    gd_rate_rule_t *rates;
    size_t nrates;

    uint32_t concurrency; /* 0: no limit */
    int concurrency_shadow;
    uint32_t concurrency_queue;            /* 0: refuse at once */
    uint64_t concurrency_queue_timeout_ms; /* default 1000 */

    int has_risk; /* risk: scored by gd_risk_score() (gd_risk.h) */
    gd_risk_policy_t risk;

    gd_breaker_t *breakers; /* the "breaker" section, in file order */
    size_t nbreakers;

    int has_guardrails; /* the "guardrails" section (gd_guardrails.h) */
    gd_guardrails_t guardrails;
} gd_policy_t;

typedef struct {
    gd_policy_t *tenants; /* sorted by tenant */
    size_t ntenants;
    gd_policy_t *fallback; /* _default.json, or NULL */
    char version[GD_POLICY_VERSION_LEN + 1];
} gd_policy_set_t;

/*
 * Loads every top-level *.json file of dir.  Returns the set, or NULL
 * with every error added to errs.
 */
gd_policy_set_t *gd_policy_set_load(const char *dir, gd_errors_t *errs);
void gd_policy_set_free(gd_policy_set_t *set);

/*
 * Parses and checks the text of one policy file: file names it in the
 * errors, dir resolves its "jwks", is_default for _default.json.  Returns
 * its JSON document (json_decref() it), or NULL when the text is not
 * JSON.  *p holds what could be read (free it with gd_policy_free()
 * in every case); it is the policy when no error was added to errs.
 */
json_t *gd_policy_parse(const char *file, const char *text, size_t len,
                        const char *dir, int is_default, gd_policy_t *p,
                        gd_errors_t *errs);
void gd_policy_free(gd_policy_t *p);

/* The tenant's policy, else the default one, else NULL. */
const gd_policy_t *gd_policy_find(const gd_policy_set_t *set,
                                  const char *tenant, size_t len);

/*
 * The thresholds of breaker name in p (p may be NULL): its entry, else
 * &gd_breaker_defaults.
 */
const gd_breaker_t *gd_breaker_find(const gd_policy_t *p, const char *name,
                                    size_t len);

/* Whether a rate rule applies to a request. */
int gd_rate_rule_matches(const gd_rate_rule_t *rule, const char *method,
                         size_t method_len, const char *path, size_t path_len);

#endif
