
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
#include "ngx_http_guard_breaker.h"


#define NGX_HTTP_GUARD_ZONE_DEFAULT  (32 * 1024 * 1024)


typedef struct {
    ngx_http_guard_cache_sh_t    cache;
    ngx_http_guard_limit_sh_t    limit;
    ngx_http_guard_metrics_sh_t  metrics;
    uint64_t                     clock;       /* ngx_http_guard_zone_clock */
    ngx_http_guard_breaker_sh_t  breaker;
} ngx_http_guard_sh_t;


typedef struct {
    ngx_http_guard_sh_t         *sh;
    ngx_slab_pool_t             *shpool;
    ngx_uint_t                   metrics_tenants;
} ngx_http_guard_zone_t;


/*
 * Every tree of the zone is keyed the same way: the rbtree key is a hash
 * of the entry's key, and the key itself, a u_short length then its
 * bytes, sits at a fixed offset in the entry (each tree its own).
 */

#define ngx_http_guard_zone_key_len(n, off)                                  \
    (*(u_short *) ((u_char *) (n) + (off)))
#define ngx_http_guard_zone_key_data(n, off)                                 \
    ((u_char *) (n) + (off) + sizeof(u_short))


void ngx_http_guard_zone_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel, size_t off);
ngx_rbtree_node_t *ngx_http_guard_zone_lookup(ngx_rbtree_t *tree,
    u_char *key, size_t len, ngx_rbtree_key_t hash, size_t off);
void *ngx_http_guard_shm_data(ngx_shm_zone_t *shm_zone, void *data,
    size_t size, ngx_uint_t *fresh);
uint64_t ngx_http_guard_zone_now(void);
uint64_t ngx_http_guard_monotonic_ns(void);
uint64_t ngx_http_guard_zone_clock_locked(ngx_http_guard_zone_t *zone);
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
