
/*
 * Copyright (C) Guard authors
 *
 * The guardrails stage: the tenant's guardrails (patterns, detectors,
 * the anomaly score) over the request and its body, and the redactions
 * applied to what goes upstream.
 */


#ifndef _NGX_HTTP_GUARD_GUARDRAILS_H_INCLUDED_
#define _NGX_HTTP_GUARD_GUARDRAILS_H_INCLUDED_


#include "ngx_http_guard_module.h"


#define NGX_HTTP_GUARD_GR_BODY_MAX  (1024 * 1024)   /* guard_body_max */


/* the verdicts counted (guard_status "guardrails") */

typedef enum {
    NGX_HTTP_GUARD_GR_PASS = 0,
    NGX_HTTP_GUARD_GR_BLOCKED,
    NGX_HTTP_GUARD_GR_ANOMALY,
    NGX_HTTP_GUARD_GR_MALFORMED,
    NGX_HTTP_GUARD_GR_ERROR,
    NGX_HTTP_GUARD_GR_TOO_LARGE,
    NGX_HTTP_GUARD_GR_SKIPPED,
    NGX_HTTP_GUARD_GR_VERDICTS
} ngx_http_guard_gr_verdict_e;


#define NGX_HTTP_GUARD_GR_ACTIONS  4    /* block, redact, score, log */


ngx_int_t ngx_http_guard_guardrails(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx, ngx_uint_t *shadow);
ngx_int_t ngx_http_guard_guardrails_init_process(ngx_cycle_t *cycle);
void ngx_http_guard_guardrails_exit_process(ngx_cycle_t *cycle);

/* the anomaly score for guardd's DECIDE, or -1: not inspected */
ngx_int_t ngx_http_guard_guardrails_score(ngx_http_guard_ctx_t *ctx);

/* $guard_guardrails_hits: the rule ids of the hits, comma-separated */
ngx_str_t ngx_http_guard_guardrails_hits(ngx_http_guard_ctx_t *ctx);

/* the audit record's "guardrails" member (borrowed), or NULL */
json_t *ngx_http_guard_guardrails_audit(ngx_http_guard_ctx_t *ctx);

/* a passed request's record: "redact" or "log", or NULL: none */
const char *ngx_http_guard_guardrails_outcome(ngx_http_guard_ctx_t *ctx);

extern const char  *ngx_http_guard_gr_verdict_names[];
extern const char  *ngx_http_guard_gr_action_names[];


#endif /* _NGX_HTTP_GUARD_GUARDRAILS_H_INCLUDED_ */
