
/*
 * Copyright (C) Guard authors
 *
 * The risk stage: guardd's score and decision for a request.
 */


#ifndef _NGX_HTTP_GUARD_RISK_H_INCLUDED_
#define _NGX_HTTP_GUARD_RISK_H_INCLUDED_


#include "ngx_http_guard_module.h"


#define NGX_HTTP_GUARD_RISK_OFF     0
#define NGX_HTTP_GUARD_RISK_ON      1
#define NGX_HTTP_GUARD_RISK_SHADOW  2


ngx_int_t ngx_http_guard_risk(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx, ngx_uint_t *shadow);


#endif /* _NGX_HTTP_GUARD_RISK_H_INCLUDED_ */
