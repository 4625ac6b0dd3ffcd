
/*
 * Copyright (C) Guard authors
 *
 * Readiness: the "guard_health" handler, for load balancers and
 * orchestrators, answers 200 or 503 with the checks it ran, as JSON.
 */


#ifndef _NGX_HTTP_GUARD_HEALTH_H_INCLUDED_
#define _NGX_HTTP_GUARD_HEALTH_H_INCLUDED_


#include "ngx_http_guard_module.h"


#define NGX_HTTP_GUARD_HEALTH_MAX      8      /* rows of the check table */


struct ngx_http_guard_health_conf_s {
    ngx_uint_t                   mode[NGX_HTTP_GUARD_HEALTH_MAX];
    ngx_uint_t                   backlog;     /* percent of the ring */
};


char *ngx_http_guard_health(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_guard_health_check(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_guard_health_backlog(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_guard_health_merge(ngx_conf_t *cf,
    ngx_http_guard_health_conf_t **conf, ngx_http_guard_health_conf_t *prev);
ngx_uint_t ngx_http_guard_health_ok(ngx_http_request_t *r);


#endif /* _NGX_HTTP_GUARD_HEALTH_H_INCLUDED_ */
