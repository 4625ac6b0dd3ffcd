
/*
 * Copyright (C) Guard authors
 *
 * Metrics: counts of refusals and shadow refusals per reason, in the
 * guard zone (shared by all workers, kept across reloads), and the
 * "guard_status" handler that shows them.
 */


#ifndef _NGX_HTTP_GUARD_METRICS_H_INCLUDED_
#define _NGX_HTTP_GUARD_METRICS_H_INCLUDED_


#include "ngx_http_guard_module.h"


typedef struct {
    ngx_atomic_t                 allowed;
    ngx_atomic_t                 refused[NGX_HTTP_GUARD_REASON_LAST];
    ngx_atomic_t                 shadow[NGX_HTTP_GUARD_REASON_LAST];
} ngx_http_guard_metrics_sh_t;


void ngx_http_guard_metrics_count(ngx_http_request_t *r,
    ngx_http_guard_reason_e reason, ngx_uint_t shadow);
char *ngx_http_guard_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);


#endif /* _NGX_HTTP_GUARD_METRICS_H_INCLUDED_ */
