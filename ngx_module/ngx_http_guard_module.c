
/*
 * Copyright (C) Guard authors
 *
 * ngx_http_guard_module: inline enforcement for multi-tenant API gateways.
 *
 * This file holds the directives, the configuration, the access phase
 * handler that runs the stages in their fixed order, and the variables.
 */


#include "ngx_http_guard_module.h"
#include "ngx_http_guard_jwt.h"
#include "ngx_http_guard_tenant.h"
#include "ngx_http_guard_cache.h"
#include "ngx_http_guard_zone.h"
#include "ngx_http_guard_problem.h"
#include "ngx_http_guard_policy.h"
#include "ngx_http_guard_residency.h"
#include "ngx_http_guard_limit.h"
#include "ngx_http_guard_metrics.h"
#include "ngx_http_guard_sidecar.h"
#include "ngx_http_guard_audit.h"

#include "gd_uuid.h"

#include <openssl/evp.h>


typedef ngx_http_guard_reason_e (*ngx_http_guard_stage_pt)(
    ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx, ngx_uint_t *shadow);


static ngx_int_t ngx_http_guard_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_guard_select_policy(ngx_http_request_t *r,
    ngx_http_guard_loc_conf_t *conf, ngx_http_guard_main_conf_t *gmcf,
    ngx_http_guard_ctx_t *ctx, ngx_str_t *token);
static ngx_int_t ngx_http_guard_cache_token_key(ngx_http_request_t *r,
    ngx_http_guard_loc_conf_t *conf, ngx_http_guard_ctx_t *ctx,
    ngx_str_t *token);
static ngx_http_guard_reason_e ngx_http_guard_authenticate(
    ngx_http_request_t *r, ngx_http_guard_loc_conf_t *conf,
    ngx_http_guard_ctx_t *ctx, ngx_str_t *token,
    ngx_http_guard_keyset_t *keys, ngx_array_t *issuers);
static ngx_http_guard_reason_e ngx_http_guard_auth_shadow(
    ngx_http_request_t *r, ngx_http_guard_loc_conf_t *conf,
    ngx_http_guard_ctx_t *ctx, ngx_str_t *token,
    ngx_http_guard_policy_t *gp);
static void ngx_http_guard_shadow(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx, ngx_http_guard_reason_e reason);
static ngx_int_t ngx_http_guard_header_filter(ngx_http_request_t *r);
static ngx_http_guard_ctx_t *ngx_http_guard_get_ctx(ngx_http_request_t *r);
static ngx_http_guard_ctx_t *ngx_http_guard_create_ctx(ngx_http_request_t *r);
static void ngx_http_guard_ctx_cleanup(void *data);
static ngx_int_t ngx_http_guard_log_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_guard_init_process(ngx_cycle_t *cycle);
static void ngx_http_guard_exit_process(ngx_cycle_t *cycle);
static void ngx_http_guard_exit_master(ngx_cycle_t *cycle);
static ngx_http_guard_main_conf_t *ngx_http_guard_cycle_main_conf(
    ngx_cycle_t *cycle);

static ngx_int_t ngx_http_guard_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_guard_claim_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_guard_policy_version_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);

static void *ngx_http_guard_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_guard_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_guard_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_guard_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_guard_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_guard_init(ngx_conf_t *cf);

static char *ngx_http_guard_jwt_keys(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_guard_str_list(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_guard_max_lifetime(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_guard_tenant_claim(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_conf_enum_t  ngx_http_guard_risk_modes[] = {
    { ngx_string("off"), NGX_HTTP_GUARD_RISK_OFF },
    { ngx_string("on"), NGX_HTTP_GUARD_RISK_ON },
    { ngx_string("shadow"), NGX_HTTP_GUARD_RISK_SHADOW },
    { ngx_null_string, 0 }
};


static ngx_conf_enum_t  ngx_http_guard_risk_fail_modes[] = {
    { ngx_string("closed"), 0 },
    { ngx_string("open"), 1 },
    { ngx_null_string, 0 }
};


/* as limit_req_log_level, and crit */

static ngx_conf_enum_t  ngx_http_guard_log_levels[] = {
    { ngx_string("info"), NGX_LOG_INFO },
    { ngx_string("notice"), NGX_LOG_NOTICE },
    { ngx_string("warn"), NGX_LOG_WARN },
    { ngx_string("error"), NGX_LOG_ERR },
    { ngx_string("crit"), NGX_LOG_CRIT },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_guard_commands[] = {

    { ngx_string("guard"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_guard_loc_conf_t, enable),
      NULL },

    { ngx_string("guard_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_guard_main_conf_t, zone_size),
      NULL },

    { ngx_string("guard_jwt_keys"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_guard_jwt_keys,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("guard_jwt_token"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_guard_loc_conf_t, token),
      NULL },

    { ngx_string("guard_jwt_issuer"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_guard_str_list,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_guard_loc_conf_t, issuers),
      NULL },

    { ngx_string("guard_jwt_audience"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_guard_str_list,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_guard_loc_conf_t, audiences),
      NULL },

    { ngx_string("guard_jwt_leeway"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_guard_loc_conf_t, leeway),
      NULL },

    { ngx_string("guard_jwt_max_lifetime"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_guard_max_lifetime,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("guard_jwt_cache"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_guard_loc_conf_t, cache),
      NULL },

    { ngx_string("guard_tenant_claim"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_guard_tenant_claim,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("guard_tenant"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_guard_loc_conf_t, tenant),
      NULL },

    { ngx_string("guard_policies"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_guard_policies_load,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("guard_region"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_guard_main_conf_t, region),
      NULL },

    { ngx_string("guard_sidecar"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE123,
      ngx_http_guard_sidecar,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("guard_sidecar_log_level"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_guard_main_conf_t, sidecar_log_level),
      &ngx_http_guard_log_levels },

    { ngx_string("guard_audit_ring"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_guard_main_conf_t, audit_slots),
      NULL },

    { ngx_string("guard_audit_spill"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_guard_audit_spill,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("guard_risk"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_guard_loc_conf_t, risk),
      &ngx_http_guard_risk_modes },

    { ngx_string("guard_risk_fail"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_guard_loc_conf_t, risk_fail_open),
      &ngx_http_guard_risk_fail_modes },

    { ngx_string("guard_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_guard_status,
      0,
      0,
      NULL },

    { ngx_string("guard_limit_headers"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_guard_loc_conf_t, limit_headers),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_guard_module_ctx = {
    ngx_http_guard_add_variables,          /* preconfiguration */
    ngx_http_guard_init,                   /* postconfiguration */

    ngx_http_guard_create_main_conf,       /* create main configuration */
    ngx_http_guard_init_main_conf,         /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_guard_create_loc_conf,        /* create location configuration */
    ngx_http_guard_merge_loc_conf          /* merge location configuration */
};


ngx_module_t  ngx_http_guard_module = {
    NGX_MODULE_V1,
    &ngx_http_guard_module_ctx,            /* module context */
    ngx_http_guard_commands,               /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_guard_init_process,           /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_guard_exit_process,           /* exit process */
    ngx_http_guard_exit_master,            /* exit master */
    NGX_MODULE_V1_PADDING
};


enum {
    NGX_HTTP_GUARD_VAR_TENANT = 0,
    NGX_HTTP_GUARD_VAR_SUBJECT,
    NGX_HTTP_GUARD_VAR_DECISION,
    NGX_HTTP_GUARD_VAR_REASON,
    NGX_HTTP_GUARD_VAR_DECISION_ID,
    NGX_HTTP_GUARD_VAR_TOKEN_CACHE,
    NGX_HTTP_GUARD_VAR_LIMIT_REMAINING,
    NGX_HTTP_GUARD_VAR_RISK_SCORE
};


static ngx_http_variable_t  ngx_http_guard_vars[] = {

    { ngx_string("guard_tenant"), NULL, ngx_http_guard_variable,
      NGX_HTTP_GUARD_VAR_TENANT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("guard_subject"), NULL, ngx_http_guard_variable,
      NGX_HTTP_GUARD_VAR_SUBJECT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("guard_decision"), NULL, ngx_http_guard_variable,
      NGX_HTTP_GUARD_VAR_DECISION, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("guard_reason"), NULL, ngx_http_guard_variable,
      NGX_HTTP_GUARD_VAR_REASON, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("guard_decision_id"), NULL, ngx_http_guard_variable,
      NGX_HTTP_GUARD_VAR_DECISION_ID, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("guard_token_cache"), NULL, ngx_http_guard_variable,
      NGX_HTTP_GUARD_VAR_TOKEN_CACHE, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("guard_limit_remaining"), NULL, ngx_http_guard_variable,
      NGX_HTTP_GUARD_VAR_LIMIT_REMAINING, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("guard_risk_score"), NULL, ngx_http_guard_variable,
      NGX_HTTP_GUARD_VAR_RISK_SCORE, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("guard_policy_version"), NULL,
      ngx_http_guard_policy_version_variable, 0, 0, 0 },

    { ngx_string("guard_claim_"), NULL, ngx_http_guard_claim_variable,
      0, NGX_HTTP_VAR_PREFIX|NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_str_t  ngx_http_guard_decisions[] = {
    ngx_string("allow"),
    ngx_string("deny"),
    ngx_string("shadow_deny")
};


static ngx_str_t  ngx_http_guard_cache_statuses[] = {
    ngx_null_string,
    ngx_string("hit"),
    ngx_string("miss"),
    ngx_string("off")
};


static gd_uuid_gen_t  ngx_http_guard_uuid_gen;


/*
 * The connection of Guard's own events that belong to no connection (the
 * audit tick, the sidecar's reconnect and flush): nginx's debug lines
 * about an event read its connection's fd through ev->data, so such an
 * event points at this one, whose fd is -1 (as the cache manager's).
 */

ngx_connection_t  ngx_http_guard_event_connection;


/* the access phase */

static ngx_int_t
ngx_http_guard_handler(ngx_http_request_t *r)
{
    ngx_str_t                    token;
    ngx_int_t                    rc;
    ngx_uint_t                   i, shadow;
    ngx_array_t                 *issuers;
    ngx_http_guard_ctx_t        *ctx;
    ngx_http_guard_policy_t     *gp;
    ngx_http_guard_keyset_t     *keys;
    ngx_http_guard_reason_e      reason, shadowed;
    ngx_http_guard_loc_conf_t   *glcf;
    ngx_http_guard_main_conf_t  *gmcf;

    /*
     * The stages, in order, then the risk verdict.  The rate stage
     * charges the tenant's rules; a refusal by any later stage gives the
     * charges back (ngx_http_guard_refuse()).
     */

    static ngx_http_guard_stage_pt  stages[] = {
        ngx_http_guard_residency_check,
        ngx_http_guard_limit_rate,
        ngx_http_guard_limit_concurrency,
        NULL
    };

    glcf = ngx_http_get_module_loc_conf(r, ngx_http_guard_module);

    if (!glcf->enable || r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_guard_get_ctx(r);

    if (ctx == NULL) {
        ctx = ngx_http_guard_create_ctx(r);
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

    } else if (ctx->decided && ctx->conf == glcf) {
        /* an internal redirect within the same guard configuration */
        return NGX_DECLINED;

    } else if (ctx->conf == glcf && ctx->risk != NGX_HTTP_GUARD_RISK_NONE) {
        /* resumed by guardd's verdict, or by its timer */
        goto risk;

    } else {
        /* an internal redirect to other guard settings: decide again */
        if (ctx->payload) {
            json_decref(ctx->payload);
            ctx->payload = NULL;
        }

        ngx_memzero(&ctx->claims, sizeof(ngx_http_guard_claims_t));
        ngx_str_null(&ctx->tenant);
        ctx->policy = NULL;
        ctx->risk = NGX_HTTP_GUARD_RISK_NONE;
        ctx->decided = 0;
        ctx->authenticated = 0;
    }

    ctx->conf = glcf;

    gmcf = ngx_http_get_module_main_conf(r, ngx_http_guard_module);

    rc = ngx_http_guard_jwt_token(r, glcf, &token);

    if (rc == NGX_ERROR) {
        return ngx_http_guard_refuse(r, ctx, NGX_HTTP_GUARD_INTERNAL_ERROR);
    }

    if (rc == NGX_DECLINED) {
        return ngx_http_guard_refuse(r, ctx, NGX_HTTP_GUARD_TOKEN_MISSING);
    }

    /* the tenant's policy decides which keys and issuers count */

    if (ngx_http_guard_select_policy(r, glcf, gmcf, ctx, &token) != NGX_OK) {
        return ngx_http_guard_refuse(r, ctx, NGX_HTTP_GUARD_INTERNAL_ERROR);
    }

    gp = ctx->policy;
    keys = glcf->keys;
    issuers = glcf->issuers;
    shadow = 0;

    if (gp && (gp->keys || gp->issuers)) {
        if (gp->p->shadow || gp->p->auth_shadow) {
            shadow = 1;

        } else {
            keys = gp->keys ? gp->keys : keys;
            issuers = gp->issuers ? gp->issuers : issuers;
        }
    }

    reason = ngx_http_guard_authenticate(r, glcf, ctx, &token, keys,
                                         issuers);

    /* in shadow mode: would the tenant's own keys and issuers refuse? */
    shadowed = NGX_HTTP_GUARD_OK;

    if (reason == NGX_HTTP_GUARD_OK && shadow) {
        shadowed = ngx_http_guard_auth_shadow(r, glcf, ctx, &token, gp);
    }

    if (reason == NGX_HTTP_GUARD_OK) {
        reason = ngx_http_guard_tenant_bind(r, glcf, ctx);
    }

    if (reason != NGX_HTTP_GUARD_OK) {
        return ngx_http_guard_refuse(r, ctx, reason);
    }

    if (shadowed != NGX_HTTP_GUARD_OK) {
        ngx_http_guard_shadow(r, ctx, shadowed);
    }

    if (ctx->policy == NULL) {
        /* nothing bound: the policy of the token's (verified) tenant */
        ctx->policy = ngx_http_guard_policy_find(gmcf->policies,
                                                 &ctx->tenant);
    }

    for (i = 0; stages[i]; i++) {
        shadow = 0;
        reason = stages[i](r, ctx, &shadow);

        if (reason == NGX_HTTP_GUARD_OK) {
            continue;
        }

        if (!shadow) {
            return ngx_http_guard_refuse(r, ctx, reason);
        }

        ngx_http_guard_shadow(r, ctx, reason);
    }

risk:

    /* risk delegation: the only stage that may wait */

    if (glcf->risk != NGX_HTTP_GUARD_RISK_OFF) {
        shadow = 0;

        if (ngx_http_guard_risk(r, ctx, &reason, &shadow) == NGX_AGAIN) {
            return NGX_AGAIN;
        }

        if (reason != NGX_HTTP_GUARD_OK) {
            if (!shadow) {
                return ngx_http_guard_refuse(r, ctx, reason);
            }

            ngx_http_guard_shadow(r, ctx, reason);
        }
    }

    ctx->reason = NGX_HTTP_GUARD_OK;
    ctx->decided = 1;

    ngx_http_guard_metrics_count(r, NGX_HTTP_GUARD_OK, 0);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "guard: allow, tenant \"%V\", decision %*s",
                   &ctx->tenant, (size_t) NGX_HTTP_GUARD_ID_LEN,
                   ngx_http_guard_decision_id(r, ctx));

    /* no opinion for the other access modules: they still apply */

    return NGX_DECLINED;
}


/*
 * The addressed tenant (guard_tenant), and the policy that applies: the
 * addressed tenant's; with no binding, the tenant the token names, read
 * before verification only when some tenant has keys or issuers of its
 * own (the signature is then checked with that tenant's keys alone).
 */

static ngx_int_t
ngx_http_guard_select_policy(ngx_http_request_t *r,
    ngx_http_guard_loc_conf_t *conf, ngx_http_guard_main_conf_t *gmcf,
    ngx_http_guard_ctx_t *ctx, ngx_str_t *token)
{
    json_t                   *payload;
    ngx_int_t                 rc;
    ngx_http_guard_claims_t   peek;

    if (conf->tenant) {
        if (ngx_http_complex_value(r, conf->tenant, &ctx->addressed)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        ctx->policy = ngx_http_guard_policy_find(gmcf->policies,
                                                 &ctx->addressed);
        return NGX_OK;
    }

    if (gmcf->policies == NULL || !gmcf->policies->tenant_auth) {
        return NGX_OK;
    }

    ngx_memzero(&peek, sizeof(ngx_http_guard_claims_t));

    /* a cached token names its tenant without a parse */

    if (conf->cache && token->len <= NGX_HTTP_GUARD_TOKEN_MAX) {
        rc = ngx_http_guard_cache_token_key(r, conf, ctx, token);

        if (rc == NGX_OK) {
            rc = ngx_http_guard_cache_get(r, ctx->cache_key, NULL, &peek);
        }

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (rc == NGX_OK) {
            goto found;
        }
    }

    payload = ngx_http_guard_jwt_peek(r, token);

    if (payload == NULL) {
        /* a malformed token: verification will say so */
        return NGX_OK;
    }

    rc = ngx_http_guard_tenant_extract(r, &conf->tenant_claim, payload,
                                       &peek);
    json_decref(payload);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

found:

    if (peek.ntenants) {
        ctx->policy = ngx_http_guard_policy_find(gmcf->policies,
                                                 &peek.tenants[0]);
    }

    return NGX_OK;
}


/*
 * A tenant's own keys and issuers in shadow mode: the token was accepted
 * with the location's; would the tenant's have accepted it too?
 */

static ngx_http_guard_reason_e
ngx_http_guard_auth_shadow(ngx_http_request_t *r,
    ngx_http_guard_loc_conf_t *conf, ngx_http_guard_ctx_t *ctx,
    ngx_str_t *token, ngx_http_guard_policy_t *gp)
{
    ngx_http_guard_ctx_t     try;
    ngx_http_guard_reason_e  reason;

    ngx_memzero(&try, sizeof(ngx_http_guard_ctx_t));

    reason = ngx_http_guard_authenticate(r, conf, &try, token,
                                         gp->keys ? gp->keys : conf->keys,
                                         gp->issuers ? gp->issuers
                                                     : conf->issuers);
    if (try.payload) {
        json_decref(try.payload);
    }

    return reason;
}


static void
ngx_http_guard_shadow(ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx,
    ngx_http_guard_reason_e reason)
{
    ngx_log_t  log;

    if (ctx->shadow_reason == NGX_HTTP_GUARD_OK) {
        ctx->shadow_reason = reason;
    }

    ngx_http_guard_metrics_count(r, reason, 1);

    ngx_http_guard_request_log(r, &log);

    ngx_log_error(NGX_LOG_INFO, &log, 0,
                  "guard: shadow refusal, reason: %V, tenant: \"%V\", "
                  "decision: %*s", ngx_http_guard_reason_name(reason),
                  &ctx->tenant, (size_t) NGX_HTTP_GUARD_ID_LEN,
                  ngx_http_guard_decision_id(r, ctx));
}


/* the token's cache key, made once per request and guard settings */

static ngx_int_t
ngx_http_guard_cache_token_key(ngx_http_request_t *r,
    ngx_http_guard_loc_conf_t *conf, ngx_http_guard_ctx_t *ctx,
    ngx_str_t *token)
{
    ngx_int_t  rc;

    if (ctx->cache_keyed == conf) {
        return NGX_OK;
    }

    rc = ngx_http_guard_cache_key(r, &conf->tenant_claim.name, token,
                                  ctx->cache_key);
    if (rc == NGX_OK) {
        ctx->cache_keyed = conf;
    }

    return rc;
}


static ngx_http_guard_reason_e
ngx_http_guard_authenticate(ngx_http_request_t *r,
    ngx_http_guard_loc_conf_t *conf, ngx_http_guard_ctx_t *ctx,
    ngx_str_t *token, ngx_http_guard_keyset_t *keys, ngx_array_t *issuers)
{
    u_char                  *fingerprint;
    ngx_int_t                rc;
    ngx_http_guard_reason_e  reason;

    if (token->len > NGX_HTTP_GUARD_TOKEN_MAX) {
        return NGX_HTTP_GUARD_TOKEN_OVERSIZE;
    }

    ctx->cache_status = NGX_HTTP_GUARD_CACHE_OFF;
    fingerprint = ngx_http_guard_jwt_keyset_fingerprint(keys);

    if (conf->cache) {
        rc = ngx_http_guard_cache_token_key(r, conf, ctx, token);

        if (rc == NGX_ERROR) {
            return NGX_HTTP_GUARD_INTERNAL_ERROR;
        }

        if (rc == NGX_OK) {
            rc = ngx_http_guard_cache_get(r, ctx->cache_key, fingerprint,
                                          &ctx->claims);
        }

        if (rc == NGX_OK
            && ngx_http_guard_jwt_payload_segment(token, &ctx->claims.payload)
               != NGX_OK)
        {
            rc = NGX_ERROR;
        }

        if (rc == NGX_ERROR) {
            return NGX_HTTP_GUARD_INTERNAL_ERROR;
        }

        if (rc == NGX_OK) {
            ctx->cache_status = NGX_HTTP_GUARD_CACHE_HIT;
            ctx->authenticated = 1;

            /* a cached token still meets exp, nbf, iss and aud */
            return ngx_http_guard_jwt_check(r, conf, issuers, &ctx->claims);
        }

        ctx->cache_status = NGX_HTTP_GUARD_CACHE_MISS;
    }

    reason = ngx_http_guard_jwt_verify(r, keys, token, &ctx->payload,
                                       &ctx->claims.payload);
    if (reason != NGX_HTTP_GUARD_OK) {
        return reason;
    }

    reason = ngx_http_guard_jwt_claims(r, ctx->payload, &ctx->claims);
    if (reason != NGX_HTTP_GUARD_OK) {
        return reason;
    }

    if (ngx_http_guard_tenant_extract(r, &conf->tenant_claim, ctx->payload,
                                      &ctx->claims)
        != NGX_OK)
    {
        return NGX_HTTP_GUARD_INTERNAL_ERROR;
    }

    ctx->authenticated = 1;

    if (ctx->cache_status == NGX_HTTP_GUARD_CACHE_MISS) {
        ngx_http_guard_cache_put(r, ctx->cache_key, fingerprint, &ctx->claims);
    }

    return ngx_http_guard_jwt_check(r, conf, issuers, &ctx->claims);
}


/*
 * The context is kept in a pool cleanup as well, so that it survives
 * internal redirects, which clear module contexts (as realip does).
 */

static ngx_http_guard_ctx_t *
ngx_http_guard_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t    *cln;
    ngx_http_guard_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_guard_module);

    if (ctx || !(r->internal || r->filter_finalize)) {
        return ctx;
    }

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_guard_ctx_cleanup) {
            ctx = cln->data;
            ngx_http_set_ctx(r, ctx, ngx_http_guard_module);
            return ctx;
        }
    }

    return NULL;
}


static ngx_http_guard_ctx_t *
ngx_http_guard_create_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t    *cln;
    ngx_http_guard_ctx_t  *ctx;

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_http_guard_ctx_t));
    if (cln == NULL) {
        return NULL;
    }

    ctx = cln->data;
    ngx_memzero(ctx, sizeof(ngx_http_guard_ctx_t));

    cln->handler = ngx_http_guard_ctx_cleanup;

    ngx_http_set_ctx(r, ctx, ngx_http_guard_module);

    return ctx;
}


/*
 * The decision id, a UUIDv7, made when first needed: by a refusal, a
 * variable or a log line.  Returns NULL when there is no randomness.
 */

u_char *
ngx_http_guard_decision_id(ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx)
{
    u_char       id[GD_UUID_LEN];
    uint64_t     ms;
    ngx_log_t    log;
    ngx_time_t  *tp;

    if (ctx->has_id) {
        return ctx->decision_id;
    }

    tp = ngx_timeofday();
    ms = (uint64_t) tp->sec * 1000 + tp->msec;

    if (gd_uuid7_next(&ngx_http_guard_uuid_gen, ms, id) != 0) {
        ngx_log_error(NGX_LOG_ALERT,
                      ngx_http_guard_request_log(r, &log), 0,
                      "guard: no randomness for a decision id");
        return NULL;
    }

    gd_uuid_format(id, (char *) ctx->decision_id);
    ctx->has_id = 1;

    return ctx->decision_id;
}


static void
ngx_http_guard_ctx_cleanup(void *data)
{
    ngx_http_guard_ctx_t  *ctx = data;

    if (ctx->payload) {
        json_decref(ctx->payload);
        ctx->payload = NULL;
    }
}


/* variables */

/* values with control characters never reach headers or logs */

static ngx_int_t
ngx_http_guard_set_value(ngx_http_variable_value_t *v, ngx_str_t *s)
{
    u_char  *p, *last;

    last = s->data + s->len;

    for (p = s->data; p < last; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            v->not_found = 1;
            return NGX_OK;
        }
    }

    v->len = s->len;
    v->data = s->data;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_guard_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    ngx_str_t              s;
    ngx_http_guard_ctx_t  *ctx;

    ctx = ngx_http_guard_get_ctx(r->main);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    switch (data) {

    case NGX_HTTP_GUARD_VAR_TENANT:
        s = ctx->tenant;
        break;

    case NGX_HTTP_GUARD_VAR_SUBJECT:
        if (!ctx->authenticated) {
            v->not_found = 1;
            return NGX_OK;
        }

        s = ctx->claims.sub;
        break;

    case NGX_HTTP_GUARD_VAR_DECISION:
        if (!ctx->decided) {
            v->not_found = 1;
            return NGX_OK;
        }

        s = ngx_http_guard_decisions[ctx->denied ? 1
                                     : ctx->shadow_reason ? 2 : 0];
        break;

    case NGX_HTTP_GUARD_VAR_REASON:
        if (ctx->decided && ctx->reason != NGX_HTTP_GUARD_OK) {
            s = *ngx_http_guard_reason_name(ctx->reason);

        } else if (ctx->shadow_reason != NGX_HTTP_GUARD_OK) {
            s = *ngx_http_guard_reason_name(ctx->shadow_reason);

        } else {
            v->not_found = 1;
            return NGX_OK;
        }

        break;

    case NGX_HTTP_GUARD_VAR_LIMIT_REMAINING:
        if (!ctx->limit.set) {
            v->not_found = 1;
            return NGX_OK;
        }

        s.data = ngx_pnalloc(r->pool, NGX_INT64_LEN);
        if (s.data == NULL) {
            return NGX_ERROR;
        }

        s.len = ngx_sprintf(s.data, "%uL", ctx->limit.remaining) - s.data;
        break;

    case NGX_HTTP_GUARD_VAR_RISK_SCORE:
        if (ctx->risk < NGX_HTTP_GUARD_RISK_ALLOW
            || ctx->risk == NGX_HTTP_GUARD_RISK_FAILED)
        {
            v->not_found = 1;
            return NGX_OK;
        }

        s.data = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
        if (s.data == NULL) {
            return NGX_ERROR;
        }

        s.len = ngx_sprintf(s.data, "%i", ctx->risk_score) - s.data;
        break;

    case NGX_HTTP_GUARD_VAR_DECISION_ID:
        s.data = ngx_http_guard_decision_id(r, ctx);
        if (s.data == NULL) {
            return NGX_ERROR;
        }

        s.len = NGX_HTTP_GUARD_ID_LEN;
        break;

    default: /* NGX_HTTP_GUARD_VAR_TOKEN_CACHE */
        s = ngx_http_guard_cache_statuses[ctx->cache_status];
        break;
    }

    if (s.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    return ngx_http_guard_set_value(v, &s);
}


/* a claim value as text: strings raw, other scalars and objects as JSON */

static ngx_int_t
ngx_http_guard_claim_text(ngx_pool_t *pool, json_t *value, ngx_str_t *out)
{
    char  *text;

    if (json_is_string(value)) {
        out->data = (u_char *) json_string_value(value);
        out->len = json_string_length(value);
        return NGX_OK;
    }

    if (json_is_null(value)) {
        ngx_str_null(out);
        return NGX_OK;
    }

    text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
    if (text == NULL) {
        return NGX_ERROR;
    }

    out->len = ngx_strlen(text);
    out->data = ngx_pnalloc(pool, out->len);

    if (out->data == NULL) {
        free(text);
        return NGX_ERROR;
    }

    ngx_memcpy(out->data, text, out->len);
    free(text);

    return NGX_OK;
}


/*
 * The verified payload as JSON: parsed at verification, or on first use
 * for a token that came from the cache.  NULL when there is none.
 */

json_t *
ngx_http_guard_payload(ngx_http_guard_ctx_t *ctx)
{
    if (ctx->payload == NULL && ctx->authenticated
        && ctx->claims.payload.len)
    {
        ctx->payload = ngx_http_guard_jwt_payload_json(&ctx->claims.payload);
    }

    return ctx->payload;
}


/*
 * nginx lowercases variable names, so $guard_claim_userid also finds the
 * claim "userId" when there is no claim "userid"
 */

static json_t *
ngx_http_guard_claim_lookup(json_t *payload, ngx_str_t *name)
{
    void        *it;
    json_t      *value;
    const char  *key;

    value = json_object_getn(payload, (char *) name->data, name->len);

    if (value) {
        return value;
    }

    for (it = json_object_iter(payload);
         it;
         it = json_object_iter_next(payload, it))
    {
        key = json_object_iter_key(it);

        if (ngx_strlen(key) == name->len
            && ngx_strncasecmp((u_char *) key, name->data, name->len) == 0)
        {
            return json_object_iter_value(it);
        }
    }

    return NULL;
}


static ngx_int_t
ngx_http_guard_claim_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                *p;
    size_t                 i, n, len;
    json_t                *value;
    ngx_str_t             *name = (ngx_str_t *) data;
    ngx_str_t              claim, s, *parts;
        ngx_http_guard_ctx_t  *ctx;

    ctx = ngx_http_guard_get_ctx(r->main);

    if (ctx == NULL || !ctx->authenticated) {
        v->not_found = 1;
        return NGX_OK;
    }

    if (ngx_http_guard_payload(ctx) == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    claim.data = name->data + sizeof("guard_claim_") - 1;
    claim.len = name->len - (sizeof("guard_claim_") - 1);

    value = ngx_http_guard_claim_lookup(ctx->payload, &claim);

    if (value == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    if (!json_is_array(value)) {
        if (ngx_http_guard_claim_text(r->pool, value, &s) != NGX_OK) {
            return NGX_ERROR;
        }

    } else {
        /* arrays are joined by "," */
        n = json_array_size(value);

        parts = ngx_palloc(r->pool, (n + 1) * sizeof(ngx_str_t));
        if (parts == NULL) {
            return NGX_ERROR;
        }

        len = 0;

        for (i = 0; i < n; i++) {
            if (ngx_http_guard_claim_text(r->pool, json_array_get(value, i),
                                          &parts[i])
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            len += parts[i].len + 1;
        }

        s.data = ngx_pnalloc(r->pool, len);
        if (s.data == NULL) {
            return NGX_ERROR;
        }

        p = s.data;

        for (i = 0; i < n; i++) {
            if (i) {
                *p++ = ',';
            }

            p = ngx_cpymem(p, parts[i].data, parts[i].len);
        }

        s.len = p - s.data;
    }

    if (s.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    return ngx_http_guard_set_value(v, &s);
}


static ngx_int_t
ngx_http_guard_policy_version_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_guard_main_conf_t  *gmcf;

    gmcf = ngx_http_get_module_main_conf(r, ngx_http_guard_module);

    if (gmcf->policies == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = gmcf->policies->version.len;
    v->data = gmcf->policies->version.data;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


/* the RateLimit fields, on allowed responses and on 429 refusals */

static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;


static ngx_int_t
ngx_http_guard_header_filter(ngx_http_request_t *r)
{
    ngx_http_guard_ctx_t  *ctx;

    if (r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_guard_get_ctx(r);

    if (ctx && ctx->limit.set && !ctx->limit.sent
        && (ctx->limit.refused || ctx->conf->limit_headers))
    {
        ctx->limit.sent = 1;

        if (ngx_http_guard_limit_set_headers(r, ctx) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return ngx_http_next_header_filter(r);
}


/* configuration */

/* the log phase: the audit record of a refusal */

static ngx_int_t
ngx_http_guard_log_handler(ngx_http_request_t *r)
{
    ngx_http_guard_ctx_t  *ctx;

    if (r != r->main) {
        return NGX_OK;
    }

    ctx = ngx_http_guard_get_ctx(r);

    if (ctx && (ctx->denied || ctx->shadow_reason != NGX_HTTP_GUARD_OK)) {
        ngx_http_guard_audit_request(r, ctx);
    }

    return NGX_OK;
}


/* the traceparent request header (W3C Trace Context), if any */

ngx_int_t
ngx_http_guard_traceparent(ngx_http_request_t *r, ngx_str_t *value)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NGX_DECLINED;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof("traceparent") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "traceparent",
                               sizeof("traceparent") - 1) == 0)
        {
            *value = h[i].value;
            return NGX_OK;
        }
    }
}


static void
ngx_http_guard_exit_process(ngx_cycle_t *cycle)
{
    /* records in flight go back to the ring before the connections go */
    ngx_http_guard_audit_exit_process(cycle);
    ngx_http_guard_sidecar_exit_process(cycle);
}


static void
ngx_http_guard_exit_master(ngx_cycle_t *cycle)
{
    ngx_http_guard_audit_exit_master(cycle,
                                     ngx_http_guard_cycle_main_conf(cycle));
}


static ngx_int_t
ngx_http_guard_init_process(ngx_cycle_t *cycle)
{
    ngx_http_guard_main_conf_t  *gmcf;

    /* a worker must not share the master's random block */
    gd_uuid_gen_init(&ngx_http_guard_uuid_gen);

    ngx_http_guard_event_connection.fd = (ngx_socket_t) -1;

    gmcf = ngx_http_guard_cycle_main_conf(cycle);

    if (ngx_http_guard_audit_init_process(cycle, gmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_guard_sidecar_init_process(cycle, gmcf);
}


/* the module's main configuration in a cycle: NULL without an http block */

static ngx_http_guard_main_conf_t *
ngx_http_guard_cycle_main_conf(ngx_cycle_t *cycle)
{
    if (ngx_http_cycle_get_module_main_conf(cycle, ngx_http_core_module)
        == NULL)
    {
        return NULL;
    }

    return ngx_http_cycle_get_module_main_conf(cycle, ngx_http_guard_module);
}


static void *
ngx_http_guard_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_guard_main_conf_t  *gmcf;

    gmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_guard_main_conf_t));
    if (gmcf == NULL) {
        return NULL;
    }

    gmcf->zone_size = NGX_CONF_UNSET_SIZE;
    gmcf->sidecar_log_level = NGX_CONF_UNSET_UINT;
    gmcf->audit_slots = NGX_CONF_UNSET_UINT;

    return gmcf;
}


static char *
ngx_http_guard_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_guard_main_conf_t *gmcf = conf;

    ngx_conf_init_uint_value(gmcf->sidecar_log_level, NGX_LOG_ERR);

    return ngx_http_guard_zone_size(cf, conf);
}


static void *
ngx_http_guard_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_guard_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_guard_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->keys = NULL;
     *     conf->token = NULL;
     *     conf->tenant = NULL;
     *     conf->tenant_claim = { 0 };
     */

    conf->enable = NGX_CONF_UNSET;
    conf->issuers = NGX_CONF_UNSET_PTR;
    conf->audiences = NGX_CONF_UNSET_PTR;
    conf->leeway = NGX_CONF_UNSET;
    conf->max_lifetime = NGX_CONF_UNSET;
    conf->cache = NGX_CONF_UNSET;
    conf->limit_headers = NGX_CONF_UNSET;
    conf->risk = NGX_CONF_UNSET_UINT;
    conf->risk_fail_open = NGX_CONF_UNSET_UINT;

    return conf;
}


static char *
ngx_http_guard_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_guard_loc_conf_t *prev = parent;
    ngx_http_guard_loc_conf_t *conf = child;

    ngx_http_guard_main_conf_t  *gmcf;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_ptr_value(conf->issuers, prev->issuers, NULL);
    ngx_conf_merge_ptr_value(conf->audiences, prev->audiences, NULL);
    ngx_conf_merge_sec_value(conf->leeway, prev->leeway, 30);
    ngx_conf_merge_sec_value(conf->max_lifetime, prev->max_lifetime, 0);
    ngx_conf_merge_value(conf->cache, prev->cache, 1);
    ngx_conf_merge_value(conf->limit_headers, prev->limit_headers, 1);
    ngx_conf_merge_uint_value(conf->risk, prev->risk,
                              NGX_HTTP_GUARD_RISK_OFF);
    ngx_conf_merge_uint_value(conf->risk_fail_open, prev->risk_fail_open, 0);

    if (conf->keys == NULL) {
        conf->keys = prev->keys;
    }

    if (conf->token == NULL) {
        conf->token = prev->token;
    }

    if (conf->tenant == NULL) {
        conf->tenant = prev->tenant;
    }

    if (conf->tenant_claim.name.len == 0) {
        if (prev->tenant_claim.name.len) {
            conf->tenant_claim = prev->tenant_claim;

        } else {
            ngx_str_set(&conf->tenant_claim.name, "tenant_id");
            conf->tenant_claim.pointer = 0;
        }
    }

    gmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_guard_module);

    if (conf->enable) {
        gmcf->used = 1;
    }

    if (conf->enable && conf->risk != NGX_HTTP_GUARD_RISK_OFF
        && gmcf->sidecar == NULL)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"guard_risk\" needs \"guard_sidecar\" "
                           "in the http block, before the servers");
        return NGX_CONF_ERROR;
    }

    if (conf->keys == NULL) {
        if (conf->enable) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"guard\" is on but no \"guard_jwt_keys\" "
                               "is set for this location");
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_guard_jwt_keys(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_guard_loc_conf_t *glcf = conf;

    ngx_str_t  *value;

    if (glcf->keys) {
        return "is duplicate";
    }

    value = cf->args->elts;

    return ngx_http_guard_jwt_load_keys(cf, &value[1], &glcf->keys);
}


static char *
ngx_http_guard_str_list(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    ngx_str_t     *value, *s;
    ngx_uint_t     i;
    ngx_array_t  **a;

    a = (ngx_array_t **) (p + cmd->offset);

    if (*a != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    *a = ngx_array_create(cf->pool, cf->args->nelts - 1, sizeof(ngx_str_t));
    if (*a == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        if (value[i].len == 0) {
            return "has an empty value";
        }

        s = ngx_array_push(*a);
        if (s == NULL) {
            return NGX_CONF_ERROR;
        }

        *s = value[i];
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_guard_max_lifetime(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_guard_loc_conf_t *glcf = conf;

    ngx_str_t  *value;

    if (glcf->max_lifetime != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        glcf->max_lifetime = 0;
        return NGX_CONF_OK;
    }

    glcf->max_lifetime = ngx_parse_time(&value[1], 1);

    if (glcf->max_lifetime == (time_t) NGX_ERROR || glcf->max_lifetime == 0) {
        return "must be \"off\" or a positive time";
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_guard_tenant_claim(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_guard_loc_conf_t *glcf = conf;

    ngx_str_t  *value;

    if (glcf->tenant_claim.name.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    return ngx_http_guard_tenant_claim_spec(cf, &value[1],
                                            &glcf->tenant_claim);
}


static ngx_int_t
ngx_http_guard_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_guard_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_guard_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt         *h;
    ngx_http_core_main_conf_t   *cmcf;
    ngx_http_guard_main_conf_t  *gmcf;

    gmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_guard_module);

    if (gmcf->policies && gmcf->policies->residency
        && gmcf->region.len == 0)
    {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "guard_policies pin tenants to regions but "
                           "\"guard_region\" is not set: those tenants "
                           "are refused here");
    }

    /* no shared memory for a module that is loaded but not used */

    if (gmcf->used && ngx_http_guard_zone_add(cf, gmcf) != NGX_CONF_OK) {
        return NGX_ERROR;
    }

    /* refusals are audited through guardd */

    if (gmcf->used && gmcf->sidecar
        && ngx_http_guard_audit_add(cf, gmcf) != NGX_CONF_OK)
    {
        return NGX_ERROR;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_guard_handler;

    if (gmcf->audit_zone) {
        h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        *h = ngx_http_guard_log_handler;
    }

    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_guard_header_filter;

    return NGX_OK;
}
