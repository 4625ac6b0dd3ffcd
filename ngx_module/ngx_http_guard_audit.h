
/*
 * Copyright (C) Guard authors
 *
 * Audit records of refusals: a ring in shared memory, delivery to guardd
 * over the sidecar connections, and spill files when the ring is full.
 */


#ifndef _NGX_HTTP_GUARD_AUDIT_H_INCLUDED_
#define _NGX_HTTP_GUARD_AUDIT_H_INCLUDED_


#include "ngx_http_guard_module.h"


/* frame ids of AUDIT frames: this bit set, the ring slot in the rest */
#define NGX_HTTP_GUARD_AUDIT_ID      0x80000000


char *ngx_http_guard_audit_spill(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_guard_audit_add(ngx_conf_t *cf,
    ngx_http_guard_main_conf_t *gmcf);
ngx_int_t ngx_http_guard_audit_init_process(ngx_cycle_t *cycle,
    ngx_http_guard_main_conf_t *gmcf);
void ngx_http_guard_audit_exit_process(ngx_cycle_t *cycle);
void ngx_http_guard_audit_exit_master(ngx_cycle_t *cycle,
    ngx_http_guard_main_conf_t *gmcf);

void ngx_http_guard_audit_request(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx);
void ngx_http_guard_audit_breaker(ngx_http_request_t *r, ngx_str_t *tenant,
    json_t *breaker, ngx_uint_t shadow);
json_t *ngx_http_guard_audit_stats(ngx_http_request_t *r);

/* from the sidecar client */
void ngx_http_guard_audit_connected(void);
void ngx_http_guard_audit_closed(ngx_uint_t conn);
void ngx_http_guard_audit_answer(uint32_t id, ngx_uint_t acked,
    json_t *payload);


#endif /* _NGX_HTTP_GUARD_AUDIT_H_INCLUDED_ */
