
/*
 * Copyright (C) Guard authors
 *
 * The guard shared memory zone: one slab pool, shared by all workers,
 * that survives "nginx -s reload" with its contents kept.
 */


#ifndef _NGX_HTTP_GUARD_ZONE_H_INCLUDED_
#define _NGX_HTTP_GUARD_ZONE_H_INCLUDED_


#include "ngx_http_guard_module.h"
#include "ngx_http_guard_cache.h"
#include "ngx_http_guard_limit.h"
#include "ngx_http_guard_metrics.h"


#define NGX_HTTP_GUARD_ZONE_DEFAULT  (32 * 1024 * 1024)


typedef struct {
    ngx_http_guard_cache_sh_t    cache;
    ngx_http_guard_limit_sh_t    limit;
    ngx_http_guard_metrics_sh_t  metrics;
} ngx_http_guard_sh_t;


typedef struct {
    ngx_http_guard_sh_t         *sh;
    ngx_slab_pool_t             *shpool;
} ngx_http_guard_zone_t;


uint64_t ngx_http_guard_zone_now(void);
void ngx_http_guard_lru_free_locked(ngx_http_guard_zone_t *zone,
    ngx_http_guard_lru_t *lru, ngx_http_guard_lru_node_t *ln);
void *ngx_http_guard_zone_alloc_locked(ngx_http_guard_zone_t *zone,
    size_t size, uint64_t now);
char *ngx_http_guard_zone_size(ngx_conf_t *cf,
    ngx_http_guard_main_conf_t *gmcf);
char *ngx_http_guard_zone_add(ngx_conf_t *cf,
    ngx_http_guard_main_conf_t *gmcf);
ngx_http_guard_zone_t *ngx_http_guard_zone_get(ngx_http_request_t *r);


#endif /* _NGX_HTTP_GUARD_ZONE_H_INCLUDED_ */
