
/*
 * Copyright (C) Guard authors
 *
 * The sidecar client: connections to guardd over a Unix socket, and
 * the frames on them, without blocking the worker.
 */


#ifndef _NGX_HTTP_GUARD_SIDECAR_H_INCLUDED_
#define _NGX_HTTP_GUARD_SIDECAR_H_INCLUDED_


#include "ngx_http_guard_module.h"


struct ngx_http_guard_sidecar_conf_s {
    ngx_addr_t                  *addr;
    ngx_msec_t                   timeout;
    ngx_uint_t                   connections;
};


/* a DECIDE call: its payload, and what takes the answer */

typedef json_t *(*ngx_http_guard_sidecar_build_pt)(ngx_http_request_t *r,
    void *data);
typedef ngx_int_t (*ngx_http_guard_sidecar_done_pt)(ngx_http_request_t *r,
    void *data, ngx_int_t verdict, json_t *payload);


char *ngx_http_guard_sidecar(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_guard_sidecar_init_process(ngx_cycle_t *cycle,
    ngx_http_guard_main_conf_t *gmcf);
void ngx_http_guard_sidecar_exit_process(ngx_cycle_t *cycle);

ngx_int_t ngx_http_guard_sidecar_pick(void);
ngx_int_t ngx_http_guard_sidecar_audit(ngx_uint_t conn, uint32_t id,
    u_char *record, size_t len);
ngx_uint_t ngx_http_guard_sidecar_refused(json_t *error);
ngx_uint_t ngx_http_guard_sidecar_health(ngx_uint_t *ready,
    ngx_uint_t *failing);

ngx_int_t ngx_http_guard_sidecar_call(ngx_http_request_t *r,
    ngx_http_guard_sidecar_build_pt build,
    ngx_http_guard_sidecar_done_pt done, void *data);


#endif /* _NGX_HTTP_GUARD_SIDECAR_H_INCLUDED_ */
