
/*
 * Copyright (C) Guard authors
 *
 * Tenant binding.
 *
 * The token's tenant comes from a top-level claim, or from a JSON pointer
 * (RFC 6901) when the claim name starts with "/".  The claim is a string
 * or an array of strings.  The addressed tenant is a complex value, such
 * as $http_x_tenant_id, a regex capture or a map of $host; it must equal
 * the token's tenant, or one of the array's strings, byte for byte.
 */


#include "ngx_http_guard_tenant.h"
#include "ngx_http_guard_policy.h"

#include "gd_jsonptr.h"


char *
ngx_http_guard_tenant_claim_spec(ngx_conf_t *cf, ngx_str_t *value,
    ngx_http_guard_claim_spec_t *spec)
{
    if (value->len == 0) {
        return "is empty";
    }

    spec->name = *value;
    spec->pointer = (value->data[0] == '/');

    if (spec->pointer
        && gd_jsonptr_valid((char *) value->data, value->len) != 0)
    {
        return "is not a valid JSON pointer (RFC 6901)";
    }

    return NGX_CONF_OK;
}


static ngx_uint_t
ngx_http_guard_tenant_unsafe(json_t *s)
{
    u_char  *p, *last;

    p = (u_char *) json_string_value(s);
    last = p + json_string_length(s);

    for ( /* void */ ; p < last; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            return 1;
        }
    }

    return 0;
}


ngx_int_t
ngx_http_guard_tenant_extract(ngx_http_request_t *r,
    ngx_http_guard_claim_spec_t *spec, json_t *payload,
    ngx_http_guard_claims_t *claims)
{
    size_t      i, n;
    json_t     *v, *e;
    ngx_str_t  *t;

    claims->tenants = NULL;
    claims->ntenants = 0;

    if (spec->pointer) {
        v = gd_jsonptr_get(payload, (char *) spec->name.data,
                           spec->name.len);

    } else {
        v = json_object_getn(payload, (char *) spec->name.data,
                             spec->name.len);
    }

    if (json_is_string(v)) {
        n = 1;

    } else if (json_is_array(v)) {
        n = json_array_size(v);

    } else {
        /* absent or of another type: the token names no tenant */
        return NGX_OK;
    }

    if (n == 0) {
        return NGX_OK;
    }

    t = ngx_palloc(r->pool, n * sizeof(ngx_str_t));
    if (t == NULL) {
        return NGX_ERROR;
    }

    claims->tenants = t;

    for (i = 0; i < n; i++) {
        e = json_is_array(v) ? json_array_get(v, i) : v;

        if (!json_is_string(e)) {
            /* a malformed tenant list names no tenant at all */
            claims->ntenants = 0;
            return NGX_OK;
        }

        if (json_string_length(e) == 0) {
            continue;
        }

        if (ngx_http_guard_tenant_unsafe(e)) {
            /* a tenant that could split a header or a log line */
            claims->ntenants = 0;
            return NGX_OK;
        }

        t->len = json_string_length(e);
        t->data = ngx_pnalloc(r->pool, t->len);
        if (t->data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(t->data, json_string_value(e), t->len);

        t++;
        claims->ntenants++;
    }

    return NGX_OK;
}


ngx_http_guard_reason_e
ngx_http_guard_tenant_bind(ngx_http_request_t *r,
    ngx_http_guard_loc_conf_t *conf, ngx_http_guard_ctx_t *ctx)
{
    ngx_str_t                 addressed, *t;
    ngx_uint_t                i;
    ngx_http_guard_claims_t  *claims;

    claims = &ctx->claims;

    if (conf->tenant == NULL) {
        if (claims->ntenants == 0) {
            return NGX_HTTP_GUARD_TENANT_MISSING;
        }

        /* nothing is bound: the token's (first) tenant */
        ctx->tenant = claims->tenants[0];

        return NGX_HTTP_GUARD_OK;
    }

    addressed = ctx->addressed;

    if (addressed.len == 0) {
        return NGX_HTTP_GUARD_TENANT_UNADDRESSED;
    }

    if (claims->ntenants == 0) {
        return NGX_HTTP_GUARD_TENANT_MISSING;
    }

    t = claims->tenants;

    for (i = 0; i < claims->ntenants; i++) {
        if (t[i].len == addressed.len
            && ngx_memcmp(t[i].data, addressed.data, addressed.len) == 0)
        {
            ctx->tenant = t[i];

            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "guard: tenant \"%V\" bound", &ctx->tenant);

            return NGX_HTTP_GUARD_OK;
        }
    }

    return NGX_HTTP_GUARD_TENANT_MISMATCH;
}


/*
 * The tenant stage: the request's tenant is bound, and with it the
 * policy of the token's (verified) tenant when nothing was addressed.
 */

ngx_int_t
ngx_http_guard_tenant_check(ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx,
    ngx_uint_t *shadow)
{
    ngx_http_guard_reason_e      reason;
    ngx_http_guard_main_conf_t  *gmcf;

    reason = ngx_http_guard_tenant_bind(r, ctx->conf, ctx);

    if (reason != NGX_HTTP_GUARD_OK) {
        return reason;
    }

    if (ctx->policy == NULL) {
        gmcf = ngx_http_get_module_main_conf(r, ngx_http_guard_module);
        ctx->policy = ngx_http_guard_policy_find(gmcf->policies,
                                                 &ctx->tenant);
    }

    return NGX_HTTP_GUARD_OK;
}
