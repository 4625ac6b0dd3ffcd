
/*
 * Copyright (C) Guard authors
 *
 * Types shared by the stages of ngx_http_guard_module.
 */


#ifndef _NGX_HTTP_GUARD_MODULE_H_INCLUDED_
#define _NGX_HTTP_GUARD_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <jansson.h>

#include "gd_jwt.h"
#include "gd_reason.h"


#define NGX_HTTP_GUARD_TOKEN_MAX       8192
#define NGX_HTTP_GUARD_HASH_LEN        32
#define NGX_HTTP_GUARD_CACHE_KEY_LEN   16
#define NGX_HTTP_GUARD_ID_LEN          36

/*
 * token JSON: duplicate members and "\u0000" are refused (gd_jwt.h);
 * the verified payload is parsed again with these for cached tokens
 */
#define NGX_HTTP_GUARD_JSON_FLAGS      GD_JWT_JSON_FLAGS


/*
 * the reason taxonomy: the rows of the shared table, gd_reason.def
 * (docs/reasons.md), under the module's names
 */

typedef enum {
    NGX_HTTP_GUARD_OK = GD_REASON_NONE,
    NGX_HTTP_GUARD_TOKEN_MISSING = GD_REASON_TOKEN_MISSING,
    NGX_HTTP_GUARD_TOKEN_OVERSIZE = GD_REASON_TOKEN_OVERSIZE,
    NGX_HTTP_GUARD_TOKEN_MALFORMED = GD_REASON_TOKEN_MALFORMED,
    NGX_HTTP_GUARD_TOKEN_ALG_REFUSED = GD_REASON_TOKEN_ALG_REFUSED,
    NGX_HTTP_GUARD_TOKEN_CRIT_REFUSED = GD_REASON_TOKEN_CRIT_REFUSED,
    NGX_HTTP_GUARD_TOKEN_KEY_UNKNOWN = GD_REASON_TOKEN_KEY_UNKNOWN,
    NGX_HTTP_GUARD_TOKEN_INVALID = GD_REASON_TOKEN_INVALID,
    NGX_HTTP_GUARD_TOKEN_CLAIM_INVALID = GD_REASON_TOKEN_CLAIM_INVALID,
    NGX_HTTP_GUARD_TOKEN_EXPIRED = GD_REASON_TOKEN_EXPIRED,
    NGX_HTTP_GUARD_TOKEN_NOT_YET_VALID = GD_REASON_TOKEN_NOT_YET_VALID,
    NGX_HTTP_GUARD_TOKEN_LIFETIME_EXCEEDED = GD_REASON_TOKEN_LIFETIME_EXCEEDED,
    NGX_HTTP_GUARD_TOKEN_ISSUER_REFUSED = GD_REASON_TOKEN_ISSUER_REFUSED,
    NGX_HTTP_GUARD_TOKEN_AUDIENCE_REFUSED = GD_REASON_TOKEN_AUDIENCE_REFUSED,
    NGX_HTTP_GUARD_TENANT_UNADDRESSED = GD_REASON_TENANT_UNADDRESSED,
    NGX_HTTP_GUARD_TENANT_MISSING = GD_REASON_TENANT_MISSING,
    NGX_HTTP_GUARD_TENANT_MISMATCH = GD_REASON_TENANT_MISMATCH,
    NGX_HTTP_GUARD_RESIDENCY = GD_REASON_RESIDENCY,
    NGX_HTTP_GUARD_RATE_LIMITED = GD_REASON_RATE_LIMITED,
    NGX_HTTP_GUARD_CONCURRENCY_LIMITED = GD_REASON_CONCURRENCY_LIMITED,
    NGX_HTTP_GUARD_CIRCUIT_OPEN = GD_REASON_CIRCUIT_OPEN,
    NGX_HTTP_GUARD_RISK_DENIED = GD_REASON_RISK_DENY,
    NGX_HTTP_GUARD_RISK_STEP_UP_NEEDED = GD_REASON_RISK_STEP_UP,
    NGX_HTTP_GUARD_SIDECAR_UNAVAILABLE = GD_REASON_SIDECAR_UNAVAILABLE,
    NGX_HTTP_GUARD_INTERNAL_ERROR = GD_REASON_INTERNAL_ERROR,
    NGX_HTTP_GUARD_GUARDRAIL_BLOCKED = GD_REASON_GUARDRAIL_BLOCKED,
    NGX_HTTP_GUARD_GUARDRAIL_ANOMALY = GD_REASON_GUARDRAIL_ANOMALY,
    NGX_HTTP_GUARD_GUARDRAIL_ERROR = GD_REASON_GUARDRAIL_ERROR,
    NGX_HTTP_GUARD_BODY_TOO_LARGE = GD_REASON_BODY_TOO_LARGE,
    NGX_HTTP_GUARD_BODY_MALFORMED = GD_REASON_BODY_MALFORMED,
    NGX_HTTP_GUARD_REASON_LAST = GD_REASON_LAST
} ngx_http_guard_reason_e;


/* the reason of a function's NGX_OK, NGX_ERROR or other (NGX_DECLINED) */

#define ngx_http_guard_rc_reason(rc, declined)                                \
    ((rc) == NGX_OK ? NGX_HTTP_GUARD_OK                                       \
     : (rc) == NGX_ERROR ? NGX_HTTP_GUARD_INTERNAL_ERROR : (declined))


/*
 * An LRU-kept entry of the guard zone: the token cache and the rate keys
 * share the zone, and a full zone evicts the least recently used entries
 * of both (ngx_http_guard_zone_alloc_locked()).
 */

typedef struct {
    ngx_rbtree_node_t            node;
    ngx_queue_t                  queue;
    uint64_t                     expires;     /* microseconds */
} ngx_http_guard_lru_node_t;


typedef struct {
    ngx_rbtree_t                 rbtree;
    ngx_rbtree_node_t            sentinel;
    ngx_queue_t                  queue;
} ngx_http_guard_lru_t;


typedef struct ngx_http_guard_keyset_s  ngx_http_guard_keyset_t;
typedef struct ngx_http_guard_policy_s  ngx_http_guard_policy_t;
typedef struct ngx_http_guard_policies_s  ngx_http_guard_policies_t;


/* the claims of a verified token, fresh or from the token cache */

typedef struct {
    time_t                       exp;
    time_t                       nbf;
    time_t                       iat;
    ngx_str_t                    sub;
    ngx_str_t                    iss;
    ngx_str_t                   *aud;
    ngx_uint_t                   naud;
    ngx_str_t                   *tenants;
    ngx_uint_t                   ntenants;
    ngx_str_t                    payload;     /* the token's, base64url */
    unsigned                     has_nbf:1;
    unsigned                     has_iat:1;
    unsigned                     has_sub:1;
    unsigned                     has_iss:1;
    unsigned                     has_aud:1;
} ngx_http_guard_claims_t;


typedef struct {
    ngx_str_t                    name;        /* claim name or pointer */
    ngx_flag_t                   pointer;     /* name is a JSON pointer */
} ngx_http_guard_claim_spec_t;


typedef struct ngx_http_guard_sidecar_conf_s  ngx_http_guard_sidecar_conf_t;
typedef struct ngx_http_guard_health_conf_s  ngx_http_guard_health_conf_t;


typedef struct {
    ngx_shm_zone_t              *shm_zone;
    size_t                       zone_size;
    ngx_flag_t                   used;        /* some "guard on" */
    ngx_http_guard_policies_t   *policies;
    ngx_str_t                    region;
    ngx_http_guard_sidecar_conf_t  *sidecar;
    ngx_uint_t                   sidecar_log_level;
    ngx_uint_t                   audit_slots;
    ngx_uint_t                   metrics_tenants;
    ngx_str_t                    audit_spill;
    ngx_shm_zone_t              *audit_zone;
    ngx_flag_t                   satisfy_any; /* "guard on" there */
    ngx_flag_t                   risk_closed; /* guard_risk on, closed */
} ngx_http_guard_main_conf_t;


typedef struct {
    ngx_flag_t                   enable;
    ngx_http_guard_keyset_t     *keys;
    ngx_http_complex_value_t    *token;
    ngx_array_t                 *issuers;     /* of ngx_str_t */
    ngx_array_t                 *audiences;   /* of ngx_str_t */
    time_t                       leeway;
    time_t                       max_lifetime;
    ngx_http_guard_claim_spec_t  tenant_claim;
    ngx_http_complex_value_t    *tenant;
    ngx_flag_t                   cache;
    ngx_flag_t                   limit_headers;
    ngx_str_t                    breaker;     /* guard_breaker, "": off */
    ngx_uint_t                   risk;
    ngx_uint_t                   risk_fail_open;
    ngx_uint_t                   log_level;   /* of refusal lines */
    ngx_http_guard_health_conf_t  *health;
    ngx_flag_t                   guardrails;  /* guard_guardrails */
    size_t                       body_max;    /* guard_body_max */
} ngx_http_guard_loc_conf_t;


typedef enum {
    NGX_HTTP_GUARD_RISK_NONE = 0,
    NGX_HTTP_GUARD_RISK_WAITING,
    NGX_HTTP_GUARD_RISK_ALLOW,
    NGX_HTTP_GUARD_RISK_STEP_UP,
    NGX_HTTP_GUARD_RISK_DENY,
    NGX_HTTP_GUARD_RISK_FAILED
} ngx_http_guard_risk_e;


typedef enum {
    NGX_HTTP_GUARD_CACHE_NONE = 0,
    NGX_HTTP_GUARD_CACHE_HIT,
    NGX_HTTP_GUARD_CACHE_MISS,
    NGX_HTTP_GUARD_CACHE_OFF
} ngx_http_guard_cache_status_e;


/* what the rate limit stage tells the response (RateLimit fields) */

typedef struct {
    ngx_str_t                    policy;      /* RateLimit-Policy value */
    ngx_str_t                    name;        /* the rule reported */
    uint64_t                     remaining;
    uint64_t                     reset;       /* t=, seconds */
    unsigned                     set:1;
    unsigned                     refused:1;
    unsigned                     sent:1;
} ngx_http_guard_limit_info_t;


/* what the rate limit stage charged, given back by a refusal */

typedef struct ngx_http_guard_rate_charge_s  ngx_http_guard_rate_charge_t;


/* the guardrails stage's state (ngx_http_guard_guardrails.c) */

typedef struct ngx_http_guard_gr_s  ngx_http_guard_gr_t;


typedef struct {
    ngx_http_guard_loc_conf_t   *conf;        /* conf that decided */
    ngx_uint_t                   stage;       /* the stage it is at */
    ngx_str_t                    token;
    ngx_http_guard_claims_t      claims;
    json_t                      *payload;     /* parsed lazily */
    ngx_str_t                    addressed;   /* guard_tenant's value */
    ngx_str_t                    tenant;
    ngx_http_guard_policy_t     *policy;      /* the tenant's, or NULL */
    ngx_http_guard_policy_t     *auth_policy; /* its keys, in shadow */
    ngx_http_guard_limit_info_t  limit;
    ngx_http_guard_rate_charge_t  *rate_charge;
    ngx_http_guard_reason_e      reason;
    ngx_http_guard_reason_e      shadow_reason;
    ngx_http_guard_risk_e        risk;
    ngx_int_t                    risk_score;
    uint64_t                     busy;        /* ns in Guard's handler */
    ngx_str_t                    breaker_key; /* tenant, 0, name */
    uint32_t                     breaker_hash;
    ngx_uint_t                   breaker_state; /* 0: none, else state+1 */
    uint64_t                     breaker_gen; /* of the probe taken */
    uint64_t                     breaker_at;  /* its bucket time, counted */
    time_t                       breaker_retry;
    ngx_http_guard_gr_t         *gr;          /* guardrails, or NULL */
    ngx_http_guard_cache_status_e  cache_status;
    ngx_http_guard_loc_conf_t   *cache_keyed; /* cache_key is for it */
    u_char                       cache_key[NGX_HTTP_GUARD_CACHE_KEY_LEN];
    u_char                       decision_id[NGX_HTTP_GUARD_ID_LEN];
    unsigned                     has_id:1;
    unsigned                     decided:1;
    unsigned                     denied:1;
    unsigned                     authenticated:1;
    unsigned                     holds_slot:1;
    unsigned                     rate_done:1;
    unsigned                     risk_shadow:1;
    unsigned                     deferred:1;  /* refused, satisfy any */
    unsigned                     auth_shadow:1;
    unsigned                     breaker_probe:1;
    unsigned                     breaker_counted:1;
    unsigned                     breaker_shadowed:1;
} ngx_http_guard_ctx_t;


/*
 * A stage of the request path (docs/request-path.md): a row of the
 * table in ngx_http_guard_module.c, in the order the stages run.
 *
 * check runs in the access phase.  It returns NGX_HTTP_GUARD_OK, a
 * refusal reason (with *shadow set when that refusal is only recorded,
 * not enforced), or NGX_AGAIN: the request waits, and the stage resumes
 * it itself (from a posted event); the handler then calls the same
 * stage again.  outcome, if any, runs in the log phase, once the
 * response is known, for a request that passed the stage.
 */

typedef ngx_int_t (*ngx_http_guard_stage_pt)(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx, ngx_uint_t *shadow);
typedef void (*ngx_http_guard_outcome_pt)(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx);


typedef struct {
    ngx_str_t                    name;
    ngx_http_guard_stage_pt      check;
    ngx_http_guard_outcome_pt    outcome;
} ngx_http_guard_stage_t;


u_char *ngx_http_guard_decision_id(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx);
json_t *ngx_http_guard_payload(ngx_http_guard_ctx_t *ctx);
ngx_int_t ngx_http_guard_traceparent(ngx_http_request_t *r, ngx_str_t *value);
ngx_table_elt_t *ngx_http_guard_request_header(ngx_http_request_t *r,
    u_char *name, size_t len);


extern ngx_module_t      ngx_http_guard_module;
extern ngx_connection_t  ngx_http_guard_event_connection;


#endif /* _NGX_HTTP_GUARD_MODULE_H_INCLUDED_ */
