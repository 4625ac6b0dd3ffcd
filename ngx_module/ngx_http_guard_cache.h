
/*
 * Copyright (C) Guard authors
 *
 * The verified-token cache in the guard shared memory zone.
 */


#ifndef _NGX_HTTP_GUARD_CACHE_H_INCLUDED_
#define _NGX_HTTP_GUARD_CACHE_H_INCLUDED_


#include "ngx_http_guard_module.h"


typedef struct {
    ngx_http_guard_lru_t         lru;
    u_char                       seed[NGX_HTTP_GUARD_CACHE_KEY_LEN];
} ngx_http_guard_cache_sh_t;


ngx_int_t ngx_http_guard_cache_init(ngx_http_guard_cache_sh_t *cache);
ngx_int_t ngx_http_guard_cache_token_key(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx);
ngx_int_t ngx_http_guard_cache_get(ngx_http_request_t *r, u_char *key,
    u_char *fingerprint, ngx_http_guard_claims_t *claims);
void ngx_http_guard_cache_put(ngx_http_request_t *r, u_char *key,
    u_char *fingerprint, ngx_http_guard_claims_t *claims);


#endif /* _NGX_HTTP_GUARD_CACHE_H_INCLUDED_ */
