
/*
 * Copyright (C) Guard authors
 *
 * The token and authentication stages: the bearer token is read, then
 * verified (or found in the token cache) with the keys and issuers that
 * count for the request, the tenant's own when its policy has them.
 */


#include "ngx_http_guard_auth.h"
#include "ngx_http_guard_jwt.h"
#include "ngx_http_guard_tenant.h"
#include "ngx_http_guard_cache.h"
#include "ngx_http_guard_policy.h"
#include "ngx_http_guard_metrics.h"


static ngx_http_guard_reason_e ngx_http_guard_authenticate(
    ngx_http_request_t *r, ngx_http_guard_loc_conf_t *conf,
    ngx_http_guard_ctx_t *ctx, ngx_str_t *token,
    ngx_http_guard_keyset_t *keys, ngx_array_t *issuers);
static ngx_http_guard_reason_e ngx_http_guard_auth_shadow(
    ngx_http_request_t *r, ngx_http_guard_loc_conf_t *conf,
    ngx_http_guard_ctx_t *ctx, ngx_str_t *token,
    ngx_http_guard_policy_t *gp);


/* the token stage */

ngx_int_t
ngx_http_guard_auth_token(ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx,
    ngx_uint_t *shadow)
{
    ngx_int_t  rc;

    rc = ngx_http_guard_jwt_token(r, ctx->conf, &ctx->token);

    return ngx_http_guard_rc_reason(rc, NGX_HTTP_GUARD_TOKEN_MISSING);
}


/*
 * The authentication stage.  The tenant's policy (the policy stage found
 * it) decides which keys and issuers count; in shadow mode the token is
 * accepted with the location's, and a refusal by the tenant's own is
 * only recorded (ngx_http_guard_auth_shadow_check()).
 */

ngx_int_t
ngx_http_guard_auth_check(ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx,
    ngx_uint_t *shadow)
{
    ngx_uint_t                  in_shadow;
    ngx_array_t                *issuers;
    ngx_http_guard_policy_t    *gp;
    ngx_http_guard_keyset_t    *keys;
    ngx_http_guard_loc_conf_t  *conf;

    conf = ctx->conf;
    gp = ctx->policy;
    keys = conf->keys;
    issuers = conf->issuers;
    in_shadow = 0;

    if (gp && (gp->keys || gp->issuers)) {
        if (gp->p->shadow || gp->p->auth_shadow) {
            in_shadow = 1;
            ctx->auth_policy = gp;

        } else {
            keys = gp->keys ? gp->keys : keys;
            issuers = gp->issuers ? gp->issuers : issuers;
        }
    }

    /* the tenant's own, in shadow mode: the shadow stage tries them */
    ctx->auth_shadow = in_shadow;

    return ngx_http_guard_authenticate(r, conf, ctx, &ctx->token, keys,
                                       issuers);
}


/*
 * The shadow authentication stage, after the tenant stage (so that a
 * shadow refusal is recorded only for a request whose tenant is bound,
 * and names it): would the tenant's own keys and issuers have refused
 * the token that the location's accepted?
 */

ngx_int_t
ngx_http_guard_auth_shadow_check(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx, ngx_uint_t *shadow)
{
    if (!ctx->auth_shadow) {
        return NGX_HTTP_GUARD_OK;
    }

    *shadow = 1;

    return ngx_http_guard_auth_shadow(r, ctx->conf, ctx, &ctx->token,
                                      ctx->auth_policy);
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

    try.conf = conf;
    try.token = *token;

    reason = ngx_http_guard_authenticate(r, conf, &try, token,
                                         gp->keys ? gp->keys : conf->keys,
                                         gp->issuers ? gp->issuers
                                                     : conf->issuers);
    if (try.payload) {
        json_decref(try.payload);
    }

    return reason;
}




static ngx_http_guard_reason_e
ngx_http_guard_authenticate(ngx_http_request_t *r,
    ngx_http_guard_loc_conf_t *conf, ngx_http_guard_ctx_t *ctx,
    ngx_str_t *token, ngx_http_guard_keyset_t *keys, ngx_array_t *issuers)
{
    u_char                       *fingerprint;
    ngx_int_t                     rc;
    ngx_http_guard_reason_e       reason;
    ngx_http_guard_metrics_sh_t  *m;

    if (token->len > NGX_HTTP_GUARD_TOKEN_MAX) {
        return NGX_HTTP_GUARD_TOKEN_OVERSIZE;
    }

    ctx->cache_status = NGX_HTTP_GUARD_CACHE_OFF;
    fingerprint = ngx_http_guard_jwt_keyset_fingerprint(keys);

    if (conf->cache) {
        rc = ngx_http_guard_cache_token_key(r, ctx);

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

        m = ngx_http_guard_metrics_get(r);

        if (rc == NGX_OK) {
            ctx->cache_status = NGX_HTTP_GUARD_CACHE_HIT;
            ctx->authenticated = 1;

            if (m) {
                (void) ngx_atomic_fetch_add(&m->cache_hits, 1);
            }

            /* a cached token still meets exp, nbf, iss and aud */
            return ngx_http_guard_jwt_check(r, conf, issuers, &ctx->claims);
        }

        ctx->cache_status = NGX_HTTP_GUARD_CACHE_MISS;

        if (m) {
            (void) ngx_atomic_fetch_add(&m->cache_misses, 1);
        }
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
