/*
 * gd_policy: the one loader and validator of Guard policy files, shared
 * by the nginx module, guardd and guardctl.  The format is described in
 * docs/policies.md and policies/schema.json.
 */
#ifndef GD_POLICY_H
#define GD_POLICY_H

#include <stddef.h>
#include <stdint.h>

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

typedef struct {
    char *tenant; /* NULL in the default policy */
    char *file;
    int shadow;

    int has_auth;
    char **issuers;
    size_t nissuers;
    char *jwks; /* resolved against the policy directory */
    int auth_shadow;

    int has_residency;
    char **regions;
    size_t nregions;
    int residency_shadow;

    gd_rate_rule_t *rates;
    size_t nrates;

    uint32_t concurrency; /* 0: no limit */
    int concurrency_shadow;
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

/* The tenant's policy, else the default one, else NULL. */
const gd_policy_t *gd_policy_find(const gd_policy_set_t *set,
                                  const char *tenant, size_t len);

/* Whether a rate rule applies to a request. */
int gd_rate_rule_matches(const gd_rate_rule_t *rule, const char *method,
                         size_t method_len, const char *path, size_t path_len);

#endif
