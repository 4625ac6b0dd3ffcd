
/*
 * Copyright (C) Guard authors
 *
 * The request's context: created by the access phase, found again across
 * internal redirects, reset when a redirect leads to other Guard
 * settings, and cleaned up with the request's pool.  The decision id and
 * the verified payload are made here when first needed.
 */


#include "ngx_http_guard_ctx.h"
#include "ngx_http_guard_problem.h"
#include "ngx_http_guard_jwt.h"

#include "gd_uuid.h"


static void ngx_http_guard_ctx_cleanup(void *data);


static gd_uuid_gen_t  ngx_http_guard_uuid_gen;


void
ngx_http_guard_ctx_init_process(void)
{
    /* a worker must not share the master's random block */
    gd_uuid_gen_init(&ngx_http_guard_uuid_gen);
}


/*
 * The context is kept in a pool cleanup as well, so that it survives
 * internal redirects, which clear module contexts (as realip does).
 */

ngx_http_guard_ctx_t *
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


ngx_http_guard_ctx_t *
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
 * An internal redirect to other Guard settings: the request is decided
 * again from the first stage, under conf.  What the earlier decision
 * counted (its rate charges, its concurrency slot, its decision id, a
 * shadow refusal) stays with the request.
 */

void
ngx_http_guard_reset_ctx(ngx_http_guard_ctx_t *ctx,
    ngx_http_guard_loc_conf_t *conf)
{
    if (ctx->payload) {
        json_decref(ctx->payload);
        ctx->payload = NULL;
    }

    ngx_memzero(&ctx->claims, sizeof(ngx_http_guard_claims_t));
    ngx_str_null(&ctx->tenant);
    ngx_str_null(&ctx->token);
    ctx->policy = NULL;
    ctx->auth_policy = NULL;
    ctx->auth_shadow = 0;
    ctx->risk = NGX_HTTP_GUARD_RISK_NONE;
    ctx->gr = NULL;    /* inspected again, its body as it now is */
    ctx->decided = 0;
    ctx->busy = 0;
    ctx->authenticated = 0;
    ctx->stage = 0;
    ctx->conf = conf;
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


static void
ngx_http_guard_ctx_cleanup(void *data)
{
    ngx_http_guard_ctx_t  *ctx = data;

    if (ctx->payload) {
        json_decref(ctx->payload);
        ctx->payload = NULL;
    }
}
