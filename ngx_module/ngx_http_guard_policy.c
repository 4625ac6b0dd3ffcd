
/*
 * Copyright (C) Guard authors
 *
 * Policy files.  "guard_policies dir;" loads the directory when the
 * configuration is read, with the one loader that guardd and guardctl
 * share, so a bad file fails "nginx -t" and "nginx -s reload" (and the
 * old configuration keeps serving).  A tenant's own JWKS is loaded here
 * too: a key trusted for one tenant never verifies another's token.
 */


#include "ngx_http_guard_policy.h"
#include "ngx_http_guard_jwt.h"
#include "ngx_http_guard_jwks.h"
#include "ngx_http_guard_tenant.h"
#include "ngx_http_guard_cache.h"


static char *ngx_http_guard_policy_init(ngx_conf_t *cf,
    ngx_http_guard_policies_t *policies, const gd_policy_t *p,
    ngx_http_guard_policy_t *gp);
static void ngx_http_guard_policies_cleanup(void *data);


char *
ngx_http_guard_policies_load(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_guard_main_conf_t *gmcf = conf;

    ngx_str_t                  *value, dir;
    ngx_uint_t                  i;
    gd_errors_t                 errs;
    ngx_pool_cleanup_t         *cln;
    ngx_http_guard_policies_t  *policies;

    if (gmcf->policies) {
        return "is duplicate";
    }

    value = cf->args->elts;
    dir = value[1];

    if (ngx_conf_full_name(cf->cycle, &dir, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    policies = ngx_pcalloc(cf->pool, sizeof(ngx_http_guard_policies_t));
    if (policies == NULL) {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_guard_policies_cleanup;
    cln->data = policies;

    ngx_memzero(&errs, sizeof(gd_errors_t));

    policies->set = gd_policy_set_load((char *) dir.data, &errs);

    if (policies->set == NULL) {
        for (i = 0; i < errs.n; i++) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "guard_policies: %s",
                               errs.lines[i]);
        }

        gd_errors_free(&errs);
        return NGX_CONF_ERROR;
    }

    policies->version.data = (u_char *) policies->set->version;
    policies->version.len = GD_POLICY_VERSION_LEN;

    policies->tenants = ngx_pcalloc(cf->pool,
                                    (policies->set->ntenants + 1)
                                    * sizeof(ngx_http_guard_policy_t));
    if (policies->tenants == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < policies->set->ntenants; i++) {
        if (ngx_http_guard_policy_init(cf, policies,
                                       &policies->set->tenants[i],
                                       &policies->tenants[i])
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    if (policies->set->fallback) {
        policies->fallback = ngx_pcalloc(cf->pool,
                                         sizeof(ngx_http_guard_policy_t));
        if (policies->fallback == NULL
            || ngx_http_guard_policy_init(cf, policies,
                                          policies->set->fallback,
                                          policies->fallback)
               != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    gmcf->policies = policies;

    ngx_log_error(NGX_LOG_NOTICE, cf->log, 0,
                  "guard_policies \"%V\": %uz tenant policies, "
                  "default: %s, version %V", &dir, policies->set->ntenants,
                  policies->fallback ? "yes" : "no", &policies->version);

    return NGX_CONF_OK;
}


static char *
ngx_http_guard_policy_init(ngx_conf_t *cf,
    ngx_http_guard_policies_t *policies, const gd_policy_t *p,
    ngx_http_guard_policy_t *gp)
{
    size_t        i;
    ngx_str_t     path, *s;
    gd_jwks_t     jwks;
    gd_errors_t   errs;

    gp->p = p;

    if (p->has_residency) {
        policies->residency = 1;
    }

    if (p->has_auth) {
        policies->tenant_auth = 1;
    }

    /* each rate rule's RateLimit-Policy item, made once */

    if (p->nrates) {
        gp->rate_fields = ngx_palloc(cf->pool, p->nrates * sizeof(ngx_str_t));
        if (gp->rate_fields == NULL) {
            return NGX_CONF_ERROR;
        }

        for (i = 0; i < p->nrates; i++) {
            s = &gp->rate_fields[i];

            s->data = ngx_pnalloc(cf->pool, ngx_strlen(p->rates[i].name)
                                            + sizeof("\"\";q=;w=") - 1
                                            + 2 * NGX_INT64_LEN);
            if (s->data == NULL) {
                return NGX_CONF_ERROR;
            }

            s->len = ngx_sprintf(s->data, "\"%s\";q=%uL;w=%uL",
                                 p->rates[i].name, p->rates[i].requests,
                                 (p->rates[i].period_ms + 999) / 1000)
                     - s->data;
        }
    }

    if (p->nissuers) {
        gp->issuers = ngx_array_create(cf->pool, p->nissuers,
                                       sizeof(ngx_str_t));
        if (gp->issuers == NULL) {
            return NGX_CONF_ERROR;
        }

        for (i = 0; i < p->nissuers; i++) {
            s = ngx_array_push(gp->issuers);
            if (s == NULL) {
                return NGX_CONF_ERROR;
            }

            s->data = (u_char *) p->issuers[i];
            s->len = ngx_strlen(p->issuers[i]);
        }
    }

    if (p->jwks == NULL) {
        return NGX_CONF_OK;
    }

    /* the loader and the words of guardctl policy check (gd_jwks) */

    ngx_memzero(&errs, sizeof(gd_errors_t));

    if (gd_jwks_policy_load(p, &jwks, &errs) != 0) {
        for (i = 0; i < errs.n; i++) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "guard_policies: %s",
                               errs.lines[i]);
        }

        gd_errors_free(&errs);
        gd_jwks_free(&jwks);
        return NGX_CONF_ERROR;
    }

    path.data = (u_char *) p->jwks;
    path.len = ngx_strlen(p->jwks);

    return ngx_http_guard_jwks_keyset(cf, &path, &jwks, &gp->keys);
}


static void
ngx_http_guard_policies_cleanup(void *data)
{
    ngx_http_guard_policies_t  *policies = data;

    gd_policy_set_free(policies->set);
}


ngx_http_guard_policy_t *
ngx_http_guard_policy_find(ngx_http_guard_policies_t *policies,
    ngx_str_t *tenant)
{
    const gd_policy_t  *p;

    if (policies == NULL || tenant->len == 0) {
        return NULL;
    }

    p = gd_policy_find(policies->set, (char *) tenant->data, tenant->len);

    if (p == NULL) {
        return NULL;
    }

    if (p == policies->set->fallback) {
        return policies->fallback;
    }

    return &policies->tenants[p - policies->set->tenants];
}


/*
 * The policy stage: the addressed tenant (guard_tenant), and the policy
 * that applies: the addressed tenant's; with no binding, the tenant the
 * token names, read before verification only when some tenant has keys
 * or issuers of its own (the signature is then checked with that
 * tenant's keys alone).
 */

ngx_int_t
ngx_http_guard_policy_select(ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx,
    ngx_uint_t *shadow)
{
    json_t                      *payload;
    ngx_int_t                    rc;
    ngx_http_guard_claims_t      peek;
    ngx_http_guard_loc_conf_t   *conf;
    ngx_http_guard_main_conf_t  *gmcf;

    conf = ctx->conf;
    gmcf = ngx_http_get_module_main_conf(r, ngx_http_guard_module);

    if (conf->tenant) {
        if (ngx_http_complex_value(r, conf->tenant, &ctx->addressed)
            != NGX_OK)
        {
            return NGX_HTTP_GUARD_INTERNAL_ERROR;
        }

        ctx->policy = ngx_http_guard_policy_find(gmcf->policies,
                                                 &ctx->addressed);
        return NGX_HTTP_GUARD_OK;
    }

    if (gmcf->policies == NULL || !gmcf->policies->tenant_auth) {
        return NGX_HTTP_GUARD_OK;
    }

    ngx_memzero(&peek, sizeof(ngx_http_guard_claims_t));

    /* a cached token names its tenant without a parse */

    if (conf->cache && ctx->token.len <= NGX_HTTP_GUARD_TOKEN_MAX) {
        rc = ngx_http_guard_cache_token_key(r, ctx);

        if (rc == NGX_OK) {
            rc = ngx_http_guard_cache_get(r, ctx->cache_key, NULL, &peek);
        }

        if (rc == NGX_ERROR) {
            return NGX_HTTP_GUARD_INTERNAL_ERROR;
        }

        if (rc == NGX_OK) {
            goto found;
        }
    }

    payload = ngx_http_guard_jwt_peek(r, &ctx->token);

    if (payload == NULL) {
        /* a malformed token: verification will say so */
        return NGX_HTTP_GUARD_OK;
    }

    rc = ngx_http_guard_tenant_extract(r, &conf->tenant_claim, payload,
                                       &peek);
    json_decref(payload);

    if (rc != NGX_OK) {
        return NGX_HTTP_GUARD_INTERNAL_ERROR;
    }

found:

    if (peek.ntenants) {
        ctx->policy = ngx_http_guard_policy_find(gmcf->policies,
                                                 &peek.tenants[0]);
    }

    return NGX_HTTP_GUARD_OK;
}
