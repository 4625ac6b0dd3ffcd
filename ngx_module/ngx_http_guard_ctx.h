
/*
 * Copyright (C) Guard authors
 *
 * The request's context, across internal redirects.
 */


#ifndef _NGX_HTTP_GUARD_CTX_H_INCLUDED_
#define _NGX_HTTP_GUARD_CTX_H_INCLUDED_


#include "ngx_http_guard_module.h"


void ngx_http_guard_ctx_init_process(void);
ngx_http_guard_ctx_t *ngx_http_guard_get_ctx(ngx_http_request_t *r);
ngx_http_guard_ctx_t *ngx_http_guard_create_ctx(ngx_http_request_t *r);
void ngx_http_guard_reset_ctx(ngx_http_guard_ctx_t *ctx,
    ngx_http_guard_loc_conf_t *conf);


#endif /* _NGX_HTTP_GUARD_CTX_H_INCLUDED_ */
