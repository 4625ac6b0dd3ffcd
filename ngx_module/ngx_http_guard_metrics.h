
/*
 * Copyright (C) Guard authors
 *
 * Metrics: counts of decisions per reason and per tenant, histograms of
 * Guard's own time per request and of the sidecar's round trips, and the
 * token cache, sidecar and rate rule counts, in the guard zone (shared by
 * all workers, kept across reloads); and the "guard_status" handler that
 * shows them, as JSON or in the Prometheus text format.
 */


#ifndef _NGX_HTTP_GUARD_METRICS_H_INCLUDED_
#define _NGX_HTTP_GUARD_METRICS_H_INCLUDED_


#include "ngx_http_guard_module.h"


#define NGX_HTTP_GUARD_METRICS_TENANTS   64   /* guard_metrics_tenants */
#define NGX_HTTP_GUARD_METRICS_RULES     64   /* rate rule names counted */
#define NGX_HTTP_GUARD_METRICS_NAME_LEN  64   /* longer names: "_other" */
#define NGX_HTTP_GUARD_METRICS_BUCKETS   11   /* the last one is +Inf */


typedef enum {
    NGX_HTTP_GUARD_DECISION_ALLOW = 0,
    NGX_HTTP_GUARD_DECISION_REFUSE,
    NGX_HTTP_GUARD_DECISION_SHADOW,
    NGX_HTTP_GUARD_DECISION_LAST
} ngx_http_guard_decision_e;


/* a histogram in microseconds: counts per bucket (not cumulative), sum */

typedef struct {
    ngx_atomic_t                 bucket[NGX_HTTP_GUARD_METRICS_BUCKETS];
    ngx_atomic_t                 sum;
} ngx_http_guard_histogram_t;


/* counts by name (tenants, rate rules): a table in the zone */

typedef struct ngx_http_guard_metrics_table_s  ngx_http_guard_metrics_table_t;


typedef struct {
    ngx_atomic_t                 allowed;
    ngx_atomic_t                 refused[NGX_HTTP_GUARD_REASON_LAST];
    ngx_atomic_t                 shadow[NGX_HTTP_GUARD_REASON_LAST];
    ngx_http_guard_histogram_t   duration;
    ngx_http_guard_histogram_t   sidecar_rtt;
    ngx_atomic_t                 cache_hits;
    ngx_atomic_t                 cache_misses;
    ngx_atomic_t                 cache_evictions;
    ngx_atomic_t                 cache_entries;
    ngx_atomic_t                 sidecar_timeouts;
    ngx_atomic_t                 sidecar_fail_open;
    ngx_http_guard_metrics_table_t  *tenants;
    ngx_http_guard_metrics_table_t  *rules;
    ngx_atomic_t                 concurrency_waiting;   /* the bulkhead */
    ngx_atomic_t                 concurrency_queued;
    ngx_atomic_t                 concurrency_queue_timeouts;
    ngx_atomic_t                 guardrails_verdicts[7]; /* per verdict */
    ngx_atomic_t                 guardrails_hits[4];    /* per action */
} ngx_http_guard_metrics_sh_t;


ngx_int_t ngx_http_guard_metrics_init(ngx_slab_pool_t *shpool,
    ngx_http_guard_metrics_sh_t *sh, ngx_uint_t tenants, ngx_log_t *log);
ngx_http_guard_metrics_sh_t *ngx_http_guard_metrics_get(
    ngx_http_request_t *r);
void ngx_http_guard_metrics_count(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx, ngx_http_guard_reason_e reason,
    ngx_uint_t shadow);
void ngx_http_guard_metrics_rate_refused(ngx_http_request_t *r,
    const char *rule);
void ngx_http_guard_metrics_busy(ngx_http_guard_ctx_t *ctx, uint64_t start);
void ngx_http_guard_metrics_time(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx, uint64_t start);
void ngx_http_guard_metrics_observe(ngx_http_guard_histogram_t *h,
    uint64_t us);

char *ngx_http_guard_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
u_char *ngx_http_guard_prom_escape(u_char *p, u_char *s, size_t len);


#endif /* _NGX_HTTP_GUARD_METRICS_H_INCLUDED_ */
