
/*
 * Copyright (C) Guard authors
 *
 * The variables: $guard_tenant, $guard_subject, $guard_decision,
 * $guard_reason, $guard_decision_id, $guard_token_cache,
 * $guard_limit_remaining, $guard_risk_score, $guard_breaker_state,
 * $guard_guardrails_score, $guard_guardrails_hits, $guard_policy_version
 * and $guard_claim_NAME.
 */


#include "ngx_http_guard_variables.h"
#include "ngx_http_guard_ctx.h"
#include "ngx_http_guard_problem.h"
#include "ngx_http_guard_policy.h"
#include "ngx_http_guard_breaker.h"
#include "ngx_http_guard_guardrails.h"


static ngx_int_t ngx_http_guard_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_guard_claim_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_guard_policy_version_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);


enum {
    NGX_HTTP_GUARD_VAR_TENANT = 0,
    NGX_HTTP_GUARD_VAR_SUBJECT,
    NGX_HTTP_GUARD_VAR_DECISION,
    NGX_HTTP_GUARD_VAR_REASON,
    NGX_HTTP_GUARD_VAR_DECISION_ID,
    NGX_HTTP_GUARD_VAR_TOKEN_CACHE,
    NGX_HTTP_GUARD_VAR_LIMIT_REMAINING,
    NGX_HTTP_GUARD_VAR_RISK_SCORE,
    NGX_HTTP_GUARD_VAR_BREAKER_STATE,
    NGX_HTTP_GUARD_VAR_GUARDRAILS_SCORE,
    NGX_HTTP_GUARD_VAR_GUARDRAILS_HITS
};


/* a variable of the request's decision, by its index */

#define ngx_http_guard_var(name, index)                                       \
    { ngx_string(name), NULL, ngx_http_guard_variable,                        \
      NGX_HTTP_GUARD_VAR_ ## index, NGX_HTTP_VAR_NOCACHEABLE, 0 }


static ngx_http_variable_t  ngx_http_guard_vars[] = {

    ngx_http_guard_var("guard_tenant", TENANT),
    ngx_http_guard_var("guard_subject", SUBJECT),
    ngx_http_guard_var("guard_decision", DECISION),
    ngx_http_guard_var("guard_reason", REASON),
    ngx_http_guard_var("guard_decision_id", DECISION_ID),
    ngx_http_guard_var("guard_token_cache", TOKEN_CACHE),
    ngx_http_guard_var("guard_limit_remaining", LIMIT_REMAINING),
    ngx_http_guard_var("guard_risk_score", RISK_SCORE),
    ngx_http_guard_var("guard_breaker_state", BREAKER_STATE),

    ngx_http_guard_var("guard_guardrails_score", GUARDRAILS_SCORE),
    ngx_http_guard_var("guard_guardrails_hits", GUARDRAILS_HITS),

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
    ngx_int_t              score;
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

    case NGX_HTTP_GUARD_VAR_BREAKER_STATE:
        s = ngx_http_guard_breaker_state_name(ctx->breaker_state);
        break;

    case NGX_HTTP_GUARD_VAR_GUARDRAILS_SCORE:
        score = ngx_http_guard_guardrails_score(ctx);

        if (score < 0) {
            v->not_found = 1;
            return NGX_OK;
        }

        s.data = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
        if (s.data == NULL) {
            return NGX_ERROR;
        }

        s.len = ngx_sprintf(s.data, "%i", score) - s.data;
        break;

    case NGX_HTTP_GUARD_VAR_GUARDRAILS_HITS:
        s = ngx_http_guard_guardrails_hits(ctx);
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


ngx_int_t
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

