
/*
 * Copyright (C) Guard authors
 *
 * ngx_http_guard_module: inline enforcement for multi-tenant API gateways.
 *
 * This file holds the directives, the configuration, and the access
 * phase handler that runs the stages of the request path (the table
 * below, docs/request-path.md) in their fixed order.
 */


#include "ngx_http_guard_module.h"
#include "ngx_http_guard_ctx.h"
#include "ngx_http_guard_variables.h"
#include "ngx_http_guard_jwt.h"
#include "ngx_http_guard_auth.h"
#include "ngx_http_guard_tenant.h"
#include "ngx_http_guard_zone.h"
#include "ngx_http_guard_problem.h"
#include "ngx_http_guard_policy.h"
#include "ngx_http_guard_residency.h"
#include "ngx_http_guard_limit.h"
#include "ngx_http_guard_bulkhead.h"
#include "ngx_http_guard_risk.h"
#include "ngx_http_guard_metrics.h"
#include "ngx_http_guard_sidecar.h"
#include "ngx_http_guard_audit.h"
#include "ngx_http_guard_health.h"
#include "ngx_http_guard_breaker.h"
#include "ngx_http_guard_guardrails.h"


static ngx_int_t ngx_http_guard_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_guard_refused(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx, ngx_http_guard_reason_e reason);
static ngx_int_t ngx_http_guard_allowed(ngx_http_request_t *r);
static ngx_int_t ngx_http_guard_satisfy_any_handler(ngx_http_request_t *r);
static void ngx_http_guard_shadow(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx, ngx_http_guard_reason_e reason);
static ngx_int_t ngx_http_guard_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_guard_log_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_guard_init_process(ngx_cycle_t *cycle);
static void ngx_http_guard_exit_process(ngx_cycle_t *cycle);
static void ngx_http_guard_exit_master(ngx_cycle_t *cycle);
static ngx_http_guard_main_conf_t *ngx_http_guard_cycle_main_conf(
    ngx_cycle_t *cycle);

static void *ngx_http_guard_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_guard_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_guard_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_guard_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
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


/*
 * guard_sidecar_log_level: as limit_req_log_level, and crit;
 * guard_log_level: from the second row on, as limit_req_log_level
 */

static ngx_conf_enum_t  ngx_http_guard_log_levels[] = {
    { ngx_string("crit"), NGX_LOG_CRIT },
    { ngx_string("info"), NGX_LOG_INFO },
    { ngx_string("notice"), NGX_LOG_NOTICE },
    { ngx_string("warn"), NGX_LOG_WARN },
    { ngx_string("error"), NGX_LOG_ERR },
    { ngx_null_string, 0 }
};

#define ngx_http_guard_refusal_log_levels  (&ngx_http_guard_log_levels[1])


static ngx_conf_num_bounds_t  ngx_http_guard_metrics_tenants_bounds = {
    ngx_conf_check_num_bounds, 0, 65536
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

    { ngx_string("guard_health"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_guard_health,
      0,
      0,
      NULL },

    { ngx_string("guard_health_check"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_http_guard_health_check,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("guard_health_backlog"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_guard_health_backlog,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("guard_metrics_tenants"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_guard_main_conf_t, metrics_tenants),
      &ngx_http_guard_metrics_tenants_bounds },

    { ngx_string("guard_log_level"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_guard_loc_conf_t, log_level),
      ngx_http_guard_refusal_log_levels },

    { ngx_string("guard_breaker"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_guard_breaker_conf,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("guard_limit_headers"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_guard_loc_conf_t, limit_headers),
      NULL },

    { ngx_string("guard_guardrails"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_guard_loc_conf_t, guardrails),
      NULL },

    { ngx_string("guard_body_max"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_guard_loc_conf_t, body_max),
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




/*
 * The request path: the stages in the order they run.  A stage that
 * passes moves ctx->stage on; a stage that waits leaves it where it is,
 * and the resumed request continues there.  Adding a stage is a file of
 * its own and a row here (ngx_http_guard_stage_t): check for the access
 * phase, outcome for the log phase once the response is known.
 */

static ngx_http_guard_stage_t  ngx_http_guard_stages[] = {

    { ngx_string("token"), ngx_http_guard_auth_token, NULL },
    { ngx_string("policy"), ngx_http_guard_policy_select, NULL },
    { ngx_string("authentication"), ngx_http_guard_auth_check, NULL },
    { ngx_string("tenant"), ngx_http_guard_tenant_check, NULL },
    { ngx_string("shadow authentication"), ngx_http_guard_auth_shadow_check,
      NULL },
    { ngx_string("residency"), ngx_http_guard_residency_check, NULL },

    /*
     * the rate stage charges the tenant's rules; a refusal by any later
     * stage gives the charges back (ngx_http_guard_refuse())
     */
    { ngx_string("rate"), ngx_http_guard_limit_rate, NULL },
    { ngx_string("concurrency"), ngx_http_guard_bulkhead, NULL },

    /* refuses before the upstream is contacted; counts its outcomes */
    { ngx_string("breaker"), ngx_http_guard_breaker_check,
      ngx_http_guard_breaker_outcome },

    /* may wait for the body (NGX_AGAIN); redacts what goes upstream */
    { ngx_string("guardrails"), ngx_http_guard_guardrails, NULL },

    /*
     * the stages that may wait (NGX_AGAIN): concurrency (its queue),
     * guardrails (the body), risk
     */
    { ngx_string("risk"), ngx_http_guard_risk, NULL },

    { ngx_null_string, NULL, NULL }
};


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
    uint64_t                     start;
    ngx_int_t                    rc;
    ngx_uint_t                   shadow;
    ngx_http_guard_ctx_t        *ctx;
    ngx_http_guard_stage_t      *stage;
    ngx_http_guard_loc_conf_t   *glcf;

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

        ctx->conf = glcf;

    } else if (ctx->denied) {
        /* refused, and redirected: an error_page is served */
        return NGX_DECLINED;

    } else if (ctx->conf == glcf) {

        if (ctx->decided) {
            /* an internal redirect within the same guard configuration */
            return ngx_http_guard_allowed(r);
        }

        /* resumed after waiting (a VERDICT, or its timer): at its stage */

    } else {
        /* an internal redirect to other guard settings: decide again */
        ngx_http_guard_reset_ctx(ctx, glcf);
    }

    /* Guard's own time, for the metrics (ngx_http_guard_metrics_time()) */
    start = ngx_http_guard_monotonic_ns();

    for (stage = &ngx_http_guard_stages[ctx->stage]; stage->check; stage++) {

        shadow = 0;
        rc = stage->check(r, ctx, &shadow);

        if (rc == NGX_HTTP_GUARD_OK) {
            continue;
        }

        ctx->stage = stage - ngx_http_guard_stages;

        if (rc == NGX_AGAIN) {
            /* the stage resumes the request; it continues here */
            ngx_http_guard_metrics_busy(ctx, start);
            return NGX_AGAIN;
        }

        if (!shadow) {
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "guard: refused by the %V stage", &stage->name);

            /* the refusal may finalize the request: timed before */
            ngx_http_guard_metrics_time(r, ctx, start);

            return ngx_http_guard_refused(r, ctx, rc);
        }

        ngx_http_guard_shadow(r, ctx, rc);
    }

    ctx->stage = stage - ngx_http_guard_stages;

    ctx->reason = NGX_HTTP_GUARD_OK;
    ctx->decided = 1;

    ngx_http_guard_metrics_count(r, ctx, NGX_HTTP_GUARD_OK, 0);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "guard: allow, tenant \"%V\", decision %*s",
                   &ctx->tenant, (size_t) NGX_HTTP_GUARD_ID_LEN,
                   ngx_http_guard_decision_id(r, ctx));

    ngx_http_guard_metrics_time(r, ctx, start);

    return ngx_http_guard_allowed(r);
}


/*
 * An allow.  Guard has no opinion for the other access modules, which
 * still apply (NGX_DECLINED); under "satisfy any" it admits the request
 * (NGX_OK), as allow and auth_basic do.
 */

static ngx_int_t
ngx_http_guard_allowed(ngx_http_request_t *r)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    return (clcf->satisfy == NGX_HTTP_SATISFY_ANY) ? NGX_OK : NGX_DECLINED;
}


/*
 * A refusal.  Under "satisfy any" a 401 or 403 waits for the other
 * access modules: one that admits the request wins, as with auth_basic
 * and allow; when none does, ngx_http_guard_satisfy_any_handler() gives
 * Guard's refusal.  Any other refusal ends the request at once.
 */

static ngx_int_t
ngx_http_guard_refused(ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx,
    ngx_http_guard_reason_e reason)
{
    ngx_uint_t                 status;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);
    status = ngx_http_guard_reason_status(reason);

    if (clcf->satisfy == NGX_HTTP_SATISFY_ANY
        && (status == NGX_HTTP_UNAUTHORIZED || status == NGX_HTTP_FORBIDDEN))
    {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "guard: refusal %V waits for satisfy any",
                       ngx_http_guard_reason_name(reason));

        /* Guard's decision; counted, logged and audited if it stands */
        ctx->reason = reason;
        ctx->decided = 1;
        ctx->denied = 1;
        ctx->deferred = 1;

        return status;
    }

    return ngx_http_guard_refuse(r, ctx, reason);
}


/*
 * Under "satisfy any": the last access handler of the location (it sits
 * after every other one).  Reached only when none admitted the request;
 * if Guard refused it, Guard's refusal is the answer.
 */

static ngx_int_t
ngx_http_guard_satisfy_any_handler(ngx_http_request_t *r)
{
    ngx_http_guard_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_guard_module);

    if (ctx == NULL || !ctx->deferred) {
        return NGX_DECLINED;
    }

    ctx->deferred = 0;

    return ngx_http_guard_refuse(r, ctx, ctx->reason);
}


/* the one record of a shadow refusal, whichever stage made it */

static void
ngx_http_guard_shadow(ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx,
    ngx_http_guard_reason_e reason)
{
    ngx_log_t  log;

    if (ctx->shadow_reason == NGX_HTTP_GUARD_OK) {
        ctx->shadow_reason = reason;
    }

    ngx_http_guard_metrics_count(r, ctx, reason, 1);

    ngx_http_guard_request_log(r, &log);

    ngx_log_error(NGX_LOG_INFO, &log, 0,
                  "guard: shadow refusal, reason: %V, tenant: \"%V\", "
                  "decision: %*s", ngx_http_guard_reason_name(reason),
                  &ctx->tenant, (size_t) NGX_HTTP_GUARD_ID_LEN,
                  ngx_http_guard_decision_id(r, ctx));
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


/*
 * The log phase: the outcome hooks of the stages the request passed, and
 * the audit record of a refusal (not of one that "satisfy any" overrode)
 */

static ngx_int_t
ngx_http_guard_log_handler(ngx_http_request_t *r)
{
    ngx_uint_t             i;
    ngx_http_guard_ctx_t  *ctx;

    if (r != r->main) {
        return NGX_OK;
    }

    ctx = ngx_http_guard_get_ctx(r);

    if (ctx == NULL) {
        return NGX_OK;
    }

    for (i = 0; i < ctx->stage && ngx_http_guard_stages[i].check; i++) {
        if (ngx_http_guard_stages[i].outcome) {
            ngx_http_guard_stages[i].outcome(r, ctx);
        }
    }

    if ((ctx->denied && !ctx->deferred)
        || ctx->shadow_reason != NGX_HTTP_GUARD_OK
        || (!ctx->denied && ngx_http_guard_guardrails_outcome(ctx)))
    {
        /* a request passed with guardrail hits: "redact" or "log" */
        ngx_http_guard_audit_request(r, ctx);
    }

    return NGX_OK;
}


/* the traceparent request header (W3C Trace Context), if any */

ngx_int_t
ngx_http_guard_traceparent(ngx_http_request_t *r, ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_http_guard_request_header(r, (u_char *) "traceparent",
                                      sizeof("traceparent") - 1);

    if (h == NULL) {
        return NGX_DECLINED;
    }

    *value = h->value;

    return NGX_OK;
}


/* the first request header of that name (case-insensitive), or NULL */

ngx_table_elt_t *
ngx_http_guard_request_header(ngx_http_request_t *r, u_char *name,
    size_t len)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, name, len) == 0)
        {
            return &h[i];
        }
    }
}


static void
ngx_http_guard_exit_process(ngx_cycle_t *cycle)
{
    /* records in flight go back to the ring before the connections go */
    ngx_http_guard_audit_exit_process(cycle);
    ngx_http_guard_sidecar_exit_process(cycle);
    ngx_http_guard_guardrails_exit_process(cycle);
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

    ngx_http_guard_ctx_init_process();

    ngx_http_guard_event_connection.fd = (ngx_socket_t) -1;

    gmcf = ngx_http_guard_cycle_main_conf(cycle);

    if (gmcf && gmcf->used
        && ngx_http_guard_guardrails_init_process(cycle) != NGX_OK)
    {
        return NGX_ERROR;
    }

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
    gmcf->metrics_tenants = NGX_CONF_UNSET_UINT;

    return gmcf;
}


static char *
ngx_http_guard_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_guard_main_conf_t *gmcf = conf;

    ngx_conf_init_uint_value(gmcf->sidecar_log_level, NGX_LOG_ERR);
    ngx_conf_init_uint_value(gmcf->metrics_tenants,
                             NGX_HTTP_GUARD_METRICS_TENANTS);

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
     *     conf->health = NULL;
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
    conf->log_level = NGX_CONF_UNSET_UINT;
    conf->guardrails = NGX_CONF_UNSET;
    conf->body_max = NGX_CONF_UNSET_SIZE;

    return conf;
}


static char *
ngx_http_guard_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_guard_loc_conf_t *prev = parent;
    ngx_http_guard_loc_conf_t *conf = child;

    ngx_http_core_loc_conf_t    *clcf;
    ngx_http_guard_main_conf_t  *gmcf;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_ptr_value(conf->issuers, prev->issuers, NULL);
    ngx_conf_merge_ptr_value(conf->audiences, prev->audiences, NULL);
    ngx_conf_merge_sec_value(conf->leeway, prev->leeway, 30);
    ngx_conf_merge_sec_value(conf->max_lifetime, prev->max_lifetime, 0);
    ngx_conf_merge_value(conf->cache, prev->cache, 1);
    ngx_conf_merge_value(conf->limit_headers, prev->limit_headers, 1);
    ngx_conf_merge_str_value(conf->breaker, prev->breaker, "");
    ngx_conf_merge_uint_value(conf->risk, prev->risk,
                              NGX_HTTP_GUARD_RISK_OFF);
    ngx_conf_merge_uint_value(conf->risk_fail_open, prev->risk_fail_open, 0);
    ngx_conf_merge_uint_value(conf->log_level, prev->log_level,
                              NGX_LOG_INFO);
    ngx_conf_merge_value(conf->guardrails, prev->guardrails, 1);
    ngx_conf_merge_size_value(conf->body_max, prev->body_max,
                              NGX_HTTP_GUARD_GR_BODY_MAX);

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

        /* the core module's settings are merged before Guard's */
        clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

        if (clcf->satisfy == NGX_HTTP_SATISFY_ANY) {
            gmcf->satisfy_any = 1;
        }
    }

    /* readiness fails without guardd where requests would (guard_health) */
    if (conf->enable && conf->risk == NGX_HTTP_GUARD_RISK_ON
        && !conf->risk_fail_open)
    {
        gmcf->risk_closed = 1;
    }

    if (ngx_http_guard_health_merge(cf, &conf->health, prev->health)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
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
ngx_http_guard_init(ngx_conf_t *cf)
{
    ngx_uint_t                   outcomes;
    ngx_array_t                 *a;
    ngx_http_handler_pt         *h;
    ngx_http_guard_stage_t      *stage;
    ngx_http_core_main_conf_t   *cmcf;
    ngx_http_guard_main_conf_t  *gmcf;

    /* the refusals' bodies and headers, once per process */

    if (ngx_http_guard_problem_init(cf->log) != NGX_OK) {
        return NGX_ERROR;
    }

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

    /*
     * Access handlers run in the reverse order of this array, so Guard's
     * (pushed last: a dynamic module comes after the static ones) runs
     * first.  Under "satisfy any", a second one goes to the front: it
     * runs after every other, and answers with Guard's refusal when none
     * admitted the request.
     */

    if (gmcf->satisfy_any) {
        a = &cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers;

        if (ngx_array_push(a) == NULL) {
            return NGX_ERROR;
        }

        h = a->elts;
        ngx_memmove(&h[1], &h[0],
                    (a->nelts - 1) * sizeof(ngx_http_handler_pt));
        h[0] = ngx_http_guard_satisfy_any_handler;
    }

    outcomes = 0;

    for (stage = ngx_http_guard_stages; stage->check; stage++) {
        if (stage->outcome) {
            outcomes = 1;
        }
    }

    if (gmcf->audit_zone || outcomes) {
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
