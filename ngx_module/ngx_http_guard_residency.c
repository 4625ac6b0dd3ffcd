
/*
 * Copyright (C) Guard authors
 *
 * Residency.  A request for a tenant whose policy does not list the
 * gateway's region is refused with 421 (Misdirected Request): it belongs
 * to a gateway in another region.  A gateway with no "guard_region" is in
 * no region, so pinned tenants are refused there (fail closed).
 */


#include "ngx_http_guard_residency.h"
#include "ngx_http_guard_policy.h"


ngx_int_t
ngx_http_guard_residency_check(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx, ngx_uint_t *shadow)
{
    size_t                       i;
    const gd_policy_t           *p;
    ngx_http_guard_main_conf_t  *gmcf;

    if (ctx->policy == NULL || !ctx->policy->p->has_residency) {
        return NGX_HTTP_GUARD_OK;
    }

    p = ctx->policy->p;
    gmcf = ngx_http_get_module_main_conf(r, ngx_http_guard_module);

    for (i = 0; i < p->nregions; i++) {
        if (ngx_strlen(p->regions[i]) == gmcf->region.len
            && ngx_strncmp(p->regions[i], gmcf->region.data,
                           gmcf->region.len) == 0)
        {
            return NGX_HTTP_GUARD_OK;
        }
    }

    *shadow = p->shadow || p->residency_shadow;

    return NGX_HTTP_GUARD_RESIDENCY;
}
