
/*
 * Copyright (C) Guard authors
 *
 * The circuit breaker: per tenant and upstream ("guard_breaker NAME"),
 * its state and sliding window in the guard zone, shared by all workers.
 */


#ifndef _NGX_HTTP_GUARD_BREAKER_H_INCLUDED_
#define _NGX_HTTP_GUARD_BREAKER_H_INCLUDED_


#include "ngx_http_guard_module.h"


typedef struct {
    ngx_http_guard_lru_t         lru;
} ngx_http_guard_breaker_sh_t;


void ngx_http_guard_breaker_init(ngx_http_guard_breaker_sh_t *sh);
char *ngx_http_guard_breaker_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_guard_breaker_check(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx, ngx_uint_t *shadow);
void ngx_http_guard_breaker_outcome(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx);
ngx_str_t ngx_http_guard_breaker_state_name(ngx_uint_t state);
json_t *ngx_http_guard_breaker_status(ngx_http_request_t *r);
ngx_int_t ngx_http_guard_breaker_prom(ngx_http_request_t *r,
    ngx_str_t *text);
ngx_uint_t ngx_http_guard_breaker_open_list(ngx_http_request_t *r,
    json_t *arr);


#endif /* _NGX_HTTP_GUARD_BREAKER_H_INCLUDED_ */
