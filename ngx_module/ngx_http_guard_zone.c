
/*
 * Copyright (C) Guard authors
 *
 * The guard shared memory zone.
 */


#include "ngx_http_guard_zone.h"


static ngx_int_t ngx_http_guard_zone_init(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_http_guard_lru_expire(ngx_http_guard_zone_t *zone,
    ngx_http_guard_lru_t *lru, uint64_t now, ngx_uint_t force);


#define NGX_HTTP_GUARD_ZONE_EVICT  8


static ngx_str_t  ngx_http_guard_zone_name = ngx_string("guard");


char *
ngx_http_guard_zone_size(ngx_conf_t *cf, ngx_http_guard_main_conf_t *gmcf)
{
    if (gmcf->zone_size == NGX_CONF_UNSET_SIZE) {
        gmcf->zone_size = NGX_HTTP_GUARD_ZONE_DEFAULT;
    }

    if (gmcf->zone_size < 8 * ngx_pagesize) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "guard_zone of %uz bytes is too small, "
                           "the minimum is %uz", gmcf->zone_size,
                           8 * ngx_pagesize);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* called once the configuration is read, only when some "guard" is on */

char *
ngx_http_guard_zone_add(ngx_conf_t *cf, ngx_http_guard_main_conf_t *gmcf)
{
    ngx_http_guard_zone_t  *zone;

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_http_guard_zone_t));
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    gmcf->shm_zone = ngx_shared_memory_add(cf, &ngx_http_guard_zone_name,
                                           gmcf->zone_size,
                                           &ngx_http_guard_module);
    if (gmcf->shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    gmcf->shm_zone->init = ngx_http_guard_zone_init;
    gmcf->shm_zone->data = zone;

    zone->metrics_tenants = gmcf->metrics_tenants;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_guard_zone_init(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_uint_t              fresh;
    ngx_http_guard_zone_t  *zone;

    zone = shm_zone->data;
    zone->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;
    zone->sh = ngx_http_guard_shm_data(shm_zone, data,
                                       sizeof(ngx_http_guard_sh_t), &fresh);
    if (zone->sh == NULL) {
        return NGX_ERROR;
    }

    if (fresh) {
        if (ngx_http_guard_cache_init(&zone->sh->cache) != NGX_OK) {
            ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                          "guard: no randomness for the token cache key");
            return NGX_ERROR;
        }

        ngx_http_guard_limit_init(&zone->sh->limit);
        ngx_http_guard_breaker_init(&zone->sh->breaker);
    }

    /* a new zone, or a reload that changed guard_metrics_tenants */

    return ngx_http_guard_metrics_init(zone->shpool, &zone->sh->metrics,
                                       zone->metrics_tenants,
                                       shm_zone->shm.log);
}


/*
 * The shared structure of one of the module's zones: the one the zone
 * holds already (a reload kept the zone, with its contents), or a new one
 * of size bytes, zeroed (*fresh set: the caller initializes it).
 */

void *
ngx_http_guard_shm_data(ngx_shm_zone_t *shm_zone, void *data, size_t size,
    ngx_uint_t *fresh)
{
    void             *sh;
    size_t            len;
    ngx_slab_pool_t  *shpool;

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;
    *fresh = 0;

    if (data || shm_zone->shm.exists) {
        return shpool->data;
    }

    sh = ngx_slab_calloc(shpool, size);
    if (sh == NULL) {
        return NULL;
    }

    shpool->data = sh;

    len = sizeof(" in guard zone \"\"") + shm_zone->shm.name.len;

    shpool->log_ctx = ngx_slab_alloc(shpool, len);
    if (shpool->log_ctx == NULL) {
        return NULL;
    }

    ngx_sprintf(shpool->log_ctx, " in guard zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* a full zone evicts, it is not an error worth a log line */
    shpool->log_nomem = 0;

    *fresh = 1;

    return sh;
}


ngx_http_guard_zone_t *
ngx_http_guard_zone_get(ngx_http_request_t *r)
{
    ngx_http_guard_main_conf_t  *gmcf;

    gmcf = ngx_http_get_module_main_conf(r, ngx_http_guard_module);

    if (gmcf->shm_zone == NULL) {
        return NULL;
    }

    return gmcf->shm_zone->data;
}


/* the rbtree insert of every tree of the zone, its entries' key at off */

void
ngx_http_guard_zone_insert(ngx_rbtree_node_t *temp, ngx_rbtree_node_t *node,
    ngx_rbtree_node_t *sentinel, size_t off)
{
    ngx_int_t            rc;
    ngx_rbtree_node_t  **p;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else {
            rc = ngx_memn2cmp(ngx_http_guard_zone_key_data(node, off),
                              ngx_http_guard_zone_key_data(temp, off),
                              ngx_http_guard_zone_key_len(node, off),
                              ngx_http_guard_zone_key_len(temp, off));

            p = (rc < 0) ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


ngx_rbtree_node_t *
ngx_http_guard_zone_lookup(ngx_rbtree_t *tree, u_char *key, size_t len,
    ngx_rbtree_key_t hash, size_t off)
{
    ngx_int_t           rc;
    ngx_rbtree_node_t  *node, *sentinel;

    node = tree->root;
    sentinel = tree->sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        rc = ngx_memn2cmp(key, ngx_http_guard_zone_key_data(node, off), len,
                          ngx_http_guard_zone_key_len(node, off));

        if (rc == 0) {
            return node;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


/* the wall clock in microseconds: shared by workers, kept across reloads */

uint64_t
ngx_http_guard_zone_now(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (uint64_t) tp->sec * 1000000 + (uint64_t) tp->msec * 1000;
}


/*
 * The time base of everything the workers count in time together: the
 * rate limits, and any later stage that does (a circuit breaker).  In
 * microseconds, read afresh from the system's monotonic clock under the
 * zone mutex, and never less than the last value any worker got: the
 * zone keeps it.  Two workers therefore never see each other's state
 * as being in the future, as they did with their own cached clocks,
 * which stand a few milliseconds apart; and a step of the wall clock
 * does not move it.  CLOCK_MONOTONIC is system-wide and goes on across
 * reloads, as the zone does.  The zone mutex must be held.
 */

uint64_t
ngx_http_guard_zone_clock_locked(ngx_http_guard_zone_t *zone)
{
    uint64_t  now;

    now = ngx_http_guard_monotonic_ns() / 1000;

    if (now > zone->sh->clock) {
        zone->sh->clock = now;
    }

    return zone->sh->clock;
}


/* the system's monotonic clock in nanoseconds (the wall clock without) */

uint64_t
ngx_http_guard_monotonic_ns(void)
{
#if (NGX_HAVE_CLOCK_MONOTONIC)
    struct timespec  ts;

    if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0) {
        return (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
    }

    return 0;
#else
    struct timeval   tv;

    ngx_gettimeofday(&tv);

    return (uint64_t) tv.tv_sec * 1000000000 + (uint64_t) tv.tv_usec * 1000;
#endif
}


void
ngx_http_guard_lru_free_locked(ngx_http_guard_zone_t *zone,
    ngx_http_guard_lru_t *lru, ngx_http_guard_lru_node_t *ln)
{
    ngx_queue_remove(&ln->queue);
    ngx_rbtree_delete(&lru->rbtree, &ln->node);
    ngx_slab_free_locked(zone->shpool, ln);

    if (lru == &zone->sh->cache.lru) {
        zone->sh->metrics.cache_entries--;
    }
}


/*
 * Frees entries from the LRU tail: those past their expiry, at most two;
 * with force, up to force entries whatever their expiry.
 */

static void
ngx_http_guard_lru_expire(ngx_http_guard_zone_t *zone,
    ngx_http_guard_lru_t *lru, uint64_t now, ngx_uint_t force)
{
    ngx_uint_t                  n;
    ngx_http_guard_lru_node_t  *ln;

    for (n = 0; n < (force ? force : 2); n++) {

        if (ngx_queue_empty(&lru->queue)) {
            return;
        }

        ln = ngx_queue_data(ngx_queue_last(&lru->queue),
                            ngx_http_guard_lru_node_t, queue);

        if (ln->expires > now) {
            if (!force) {
                return;
            }

            if (lru == &zone->sh->cache.lru) {
                zone->sh->metrics.cache_evictions++;
            }
        }

        ngx_http_guard_lru_free_locked(zone, lru, ln);
    }
}


/*
 * Allocates from the zone, the mutex held: expired entries go first;
 * when the zone is still full, the least recently used token cache
 * entries, rate keys and breakers, a few of each at a time, as limit_req does.
 * NULL when even that fails: the caller does without (a full zone never
 * turns into a refusal).  "now" is the wall clock of the token cache;
 * the rate keys and breakers expire on the zone clock.
 */

void *
ngx_http_guard_zone_alloc_locked(ngx_http_guard_zone_t *zone, size_t size,
    uint64_t now)
{
    void        *p;
    ngx_uint_t   tries;

    ngx_http_guard_lru_expire(zone, &zone->sh->cache.lru, now, 0);
    ngx_http_guard_lru_expire(zone, &zone->sh->limit.rate,
                              ngx_http_guard_zone_clock_locked(zone), 0);
    ngx_http_guard_lru_expire(zone, &zone->sh->breaker.lru,
                              ngx_http_guard_zone_clock_locked(zone), 0);

    for (tries = 0; /* void */ ; tries++) {
        p = ngx_slab_alloc_locked(zone->shpool, size);

        if (p != NULL || tries == 4) {
            return p;
        }

        ngx_http_guard_lru_expire(zone, &zone->sh->cache.lru, now,
                                  NGX_HTTP_GUARD_ZONE_EVICT);
        ngx_http_guard_lru_expire(zone, &zone->sh->limit.rate, now,
                                  NGX_HTTP_GUARD_ZONE_EVICT);
        ngx_http_guard_lru_expire(zone, &zone->sh->breaker.lru, now,
                                  NGX_HTTP_GUARD_ZONE_EVICT);
    }
}
