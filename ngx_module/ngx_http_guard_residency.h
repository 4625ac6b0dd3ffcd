
/*
 * Copyright (C) Guard authors
 *
 * Residency: a tenant's policy may pin it to regions; "guard_region"
 * names the region of this gateway.
 */


#ifndef _NGX_HTTP_GUARD_RESIDENCY_H_INCLUDED_
#define _NGX_HTTP_GUARD_RESIDENCY_H_INCLUDED_


#include "ngx_http_guard_module.h"


ngx_int_t ngx_http_guard_residency_check(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx, ngx_uint_t *shadow);


#endif /* _NGX_HTTP_GUARD_RESIDENCY_H_INCLUDED_ */
