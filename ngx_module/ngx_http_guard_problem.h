
/*
 * Copyright (C) Guard authors
 *
 * Refusals: the reason taxonomy and RFC 9457 problem+json responses.
 */


#ifndef _NGX_HTTP_GUARD_PROBLEM_H_INCLUDED_
#define _NGX_HTTP_GUARD_PROBLEM_H_INCLUDED_


#include "ngx_http_guard_module.h"


ngx_int_t ngx_http_guard_problem_init(ngx_log_t *log);
ngx_str_t *ngx_http_guard_reason_name(ngx_http_guard_reason_e reason);
ngx_str_t *ngx_http_guard_reason_stage(ngx_http_guard_reason_e reason);
ngx_uint_t ngx_http_guard_reason_status(ngx_http_guard_reason_e reason);
ngx_int_t ngx_http_guard_add_header(ngx_http_request_t *r, char *name,
    ngx_str_t *value);
ngx_buf_t *ngx_http_guard_json_buf(ngx_http_request_t *r, json_t *doc,
    size_t flags);
ngx_int_t ngx_http_guard_send_buf(ngx_http_request_t *r, ngx_uint_t status,
    char *type, ngx_buf_t *b);
ngx_int_t ngx_http_guard_json_set_text(json_t *doc, const char *key,
    u_char *data, size_t len, size_t max);
json_t *ngx_http_guard_json_text(u_char *data, size_t len);
json_t *ngx_http_guard_json_clean(json_t *v);
ngx_int_t ngx_http_guard_refuse(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx, ngx_http_guard_reason_e reason);
ngx_log_t *ngx_http_guard_request_log(ngx_http_request_t *r,
    ngx_log_t *log);


#endif /* _NGX_HTTP_GUARD_PROBLEM_H_INCLUDED_ */
