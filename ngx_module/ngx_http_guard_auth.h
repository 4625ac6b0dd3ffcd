
/*
 * Copyright (C) Guard authors
 *
 * The token and authentication stages.
 */


#ifndef _NGX_HTTP_GUARD_AUTH_H_INCLUDED_
#define _NGX_HTTP_GUARD_AUTH_H_INCLUDED_


#include "ngx_http_guard_module.h"


ngx_int_t ngx_http_guard_auth_token(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx, ngx_uint_t *shadow);
ngx_int_t ngx_http_guard_auth_check(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx, ngx_uint_t *shadow);
ngx_int_t ngx_http_guard_auth_shadow_check(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx, ngx_uint_t *shadow);


#endif /* _NGX_HTTP_GUARD_AUTH_H_INCLUDED_ */
