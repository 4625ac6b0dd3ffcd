
/*
 * Copyright (C) Guard authors
 *
 * Policy files: loaded at configuration time by the shared loader
 * (policy-engine/src/gd_policy.c), with each tenant's own key set.
 */


#ifndef _NGX_HTTP_GUARD_POLICY_H_INCLUDED_
#define _NGX_HTTP_GUARD_POLICY_H_INCLUDED_


#include "ngx_http_guard_module.h"

#include "gd_policy.h"


struct ngx_http_guard_policy_s {
    const gd_policy_t           *p;
    ngx_http_guard_keyset_t     *keys;        /* auth.jwks, or NULL */
    ngx_array_t                 *issuers;     /* auth.issuers, or NULL */
    ngx_str_t                   *rate_fields; /* per rule: "name";q=;w= */
    ngx_atomic_t                *metrics;     /* the tenant's counts, in */
                                              /* the zone, once found */
};


struct ngx_http_guard_policies_s {
    gd_policy_set_t             *set;
    ngx_http_guard_policy_t     *tenants;     /* as set->tenants */
    ngx_http_guard_policy_t     *fallback;
    ngx_str_t                    version;
    ngx_flag_t                   tenant_auth; /* some auth section */
    ngx_flag_t                   residency;   /* some residency */
};


char *ngx_http_guard_policies_load(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_http_guard_policy_t *ngx_http_guard_policy_find(
    ngx_http_guard_policies_t *policies, ngx_str_t *tenant);
ngx_int_t ngx_http_guard_policy_select(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx, ngx_uint_t *shadow);


#endif /* _NGX_HTTP_GUARD_POLICY_H_INCLUDED_ */
