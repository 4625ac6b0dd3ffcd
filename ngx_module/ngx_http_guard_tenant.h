
/*
 * Copyright (C) Guard authors
 *
 * Tenant binding: the tenant named in the token must be the tenant that
 * the request addresses.
 */


#ifndef _NGX_HTTP_GUARD_TENANT_H_INCLUDED_
#define _NGX_HTTP_GUARD_TENANT_H_INCLUDED_


#include "ngx_http_guard_module.h"


char *ngx_http_guard_tenant_claim_spec(ngx_conf_t *cf, ngx_str_t *value,
    ngx_http_guard_claim_spec_t *spec);
ngx_int_t ngx_http_guard_tenant_extract(ngx_http_request_t *r,
    ngx_http_guard_claim_spec_t *spec, json_t *payload,
    ngx_http_guard_claims_t *claims);
ngx_http_guard_reason_e ngx_http_guard_tenant_bind(ngx_http_request_t *r,
    ngx_http_guard_loc_conf_t *conf, ngx_http_guard_ctx_t *ctx);

ngx_int_t ngx_http_guard_tenant_check(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx, ngx_uint_t *shadow);

#endif /* _NGX_HTTP_GUARD_TENANT_H_INCLUDED_ */
