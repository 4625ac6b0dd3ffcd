
/*
 * Copyright (C) Guard authors
 *
 * Per-tenant limits: rate (GCRA) and concurrency (a bulkhead), counted in
 * the guard zone and shared by all workers.
 */


#ifndef _NGX_HTTP_GUARD_LIMIT_H_INCLUDED_
#define _NGX_HTTP_GUARD_LIMIT_H_INCLUDED_


#include "ngx_http_guard_module.h"


typedef struct {
    ngx_http_guard_lru_t         rate;
    ngx_rbtree_t                 conc_rbtree;
    ngx_rbtree_node_t            conc_sentinel;
} ngx_http_guard_limit_sh_t;


void ngx_http_guard_limit_init(ngx_http_guard_limit_sh_t *sh);
ngx_int_t ngx_http_guard_limit_rate(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx, ngx_uint_t *shadow);
void ngx_http_guard_limit_refund(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx);
ngx_int_t ngx_http_guard_limit_set_headers(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx);


#endif /* _NGX_HTTP_GUARD_LIMIT_H_INCLUDED_ */
