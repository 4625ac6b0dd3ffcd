
/*
 * Copyright (C) Guard authors
 *
 * ngx_http_guard_module: inline enforcement for multi-tenant API gateways.
 *
 * This file holds the directives, the configuration, the access phase
 * handler that runs the stages in their fixed order, and the variables.
 */


#include "ngx_http_guard_module.h"
#include "ngx_http_guard_jwt.h"
#include "ngx_http_guard_tenant.h"
#include "ngx_http_guard_cache.h"
#include "ngx_http_guard_zone.h"
#include "ngx_http_guard_problem.h"

#include "gd_uuid.h"

#include <openssl/evp.h>


static ngx_int_t ngx_http_guard_handler(ngx_http_request_t *r);
static ngx_http_guard_reason_e ngx_http_guard_authenticate(
    ngx_http_request_t *r, ngx_http_guard_loc_conf_t *conf,
    ngx_http_guard_ctx_t *ctx);
static ngx_http_guard_ctx_t *ngx_http_guard_get_ctx(ngx_http_request_t *r);
static ngx_http_guard_ctx_t *ngx_http_guard_create_ctx(ngx_http_request_t *r);
static void ngx_http_guard_ctx_cleanup(void *data);
static ngx_int_t ngx_http_guard_init_process(ngx_cycle_t *cycle);

static ngx_int_t ngx_http_guard_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_guard_claim_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

static void *ngx_http_guard_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_guard_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_guard_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_guard_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_guard_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_guard_init(ngx_conf_t *cf);

static char *ngx_http_guard_jwt_keys(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_guard_str_list(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_guard_max_lifetime(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_guard_tenant_claim(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_command_t  ngx_http_guard_commands[] = {

    { ngx_string("guard"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_guard_loc_conf_t, enable),
      NULL },

    { ngx_string("guard_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_guard_main_conf_t, zone_size),
      NULL },

    { ngx_string("guard_jwt_keys"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_guard_jwt_keys,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("guard_jwt_token"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_guard_loc_conf_t, token),
      NULL },

    { ngx_string("guard_jwt_issuer"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_guard_str_list,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_guard_loc_conf_t, issuers),
      NULL },

    { ngx_string("guard_jwt_audience"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_guard_str_list,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_guard_loc_conf_t, audiences),
      NULL },

    { ngx_string("guard_jwt_leeway"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_guard_loc_conf_t, leeway),
      NULL },

    { ngx_string("guard_jwt_max_lifetime"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_guard_max_lifetime,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("guard_jwt_cache"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_guard_loc_conf_t, cache),
      NULL },

    { ngx_string("guard_tenant_claim"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_guard_tenant_claim,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("guard_tenant"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_guard_loc_conf_t, tenant),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_guard_module_ctx = {
    ngx_http_guard_add_variables,          /* preconfiguration */
    ngx_http_guard_init,                   /* postconfiguration */

    ngx_http_guard_create_main_conf,       /* create main configuration */
    ngx_http_guard_init_main_conf,         /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_guard_create_loc_conf,        /* create location configuration */
    ngx_http_guard_merge_loc_conf          /* merge location configuration */
};


ngx_module_t  ngx_http_guard_module = {
    NGX_MODULE_V1,
    &ngx_http_guard_module_ctx,            /* module context */
    ngx_http_guard_commands,               /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_guard_init_process,           /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


enum {
    NGX_HTTP_GUARD_VAR_TENANT = 0,
    NGX_HTTP_GUARD_VAR_SUBJECT,
    NGX_HTTP_GUARD_VAR_DECISION,
    NGX_HTTP_GUARD_VAR_REASON,
    NGX_HTTP_GUARD_VAR_DECISION_ID,
    NGX_HTTP_GUARD_VAR_TOKEN_CACHE
};


static ngx_http_variable_t  ngx_http_guard_vars[] = {

    { ngx_string("guard_tenant"), NULL, ngx_http_guard_variable,
      NGX_HTTP_GUARD_VAR_TENANT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("guard_subject"), NULL, ngx_http_guard_variable,
      NGX_HTTP_GUARD_VAR_SUBJECT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("guard_decision"), NULL, ngx_http_guard_variable,
      NGX_HTTP_GUARD_VAR_DECISION, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("guard_reason"), NULL, ngx_http_guard_variable,
      NGX_HTTP_GUARD_VAR_REASON, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("guard_decision_id"), NULL, ngx_http_guard_variable,
      NGX_HTTP_GUARD_VAR_DECISION_ID, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("guard_token_cache"), NULL, ngx_http_guard_variable,
      NGX_HTTP_GUARD_VAR_TOKEN_CACHE, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("guard_claim_"), NULL, ngx_http_guard_claim_variable,
      0, NGX_HTTP_VAR_PREFIX|NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_str_t  ngx_http_guard_decisions[] = {
    ngx_string("allow"),
    ngx_string("deny")
};


static ngx_str_t  ngx_http_guard_cache_statuses[] = {
    ngx_null_string,
    ngx_string("hit"),
    ngx_string("miss"),
    ngx_string("off")
};


static gd_uuid_gen_t  ngx_http_guard_uuid_gen;


/* the access phase */

static ngx_int_t
ngx_http_guard_handler(ngx_http_request_t *r)
{
    ngx_http_guard_ctx_t       *ctx;
    ngx_http_guard_reason_e     reason;
    ngx_http_guard_loc_conf_t  *glcf;

    glcf = ngx_http_get_module_loc_conf(r, ngx_http_guard_module);

    if (!glcf->enable || r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_guard_get_ctx(r);

    if (ctx == NULL) {
        ctx = ngx_http_guard_create_ctx(r);
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

    } else if (ctx->decided && ctx->conf == glcf) {
        /* an internal redirect within the same guard configuration */
        return NGX_DECLINED;

    } else {
        /* an internal redirect to other guard settings: decide again */
        if (ctx->payload) {
            json_decref(ctx->payload);
            ctx->payload = NULL;
        }

        ngx_memzero(&ctx->claims, sizeof(ngx_http_guard_claims_t));
        ngx_str_null(&ctx->tenant);
        ctx->decided = 0;
        ctx->authenticated = 0;
    }

    ctx->conf = glcf;

    reason = ngx_http_guard_authenticate(r, glcf, ctx);

    if (reason == NGX_HTTP_GUARD_OK) {
        reason = ngx_http_guard_tenant_bind(r, glcf, ctx);
    }

    if (reason != NGX_HTTP_GUARD_OK) {
        return ngx_http_guard_refuse(r, ctx, reason);
    }

    ctx->reason = NGX_HTTP_GUARD_OK;
    ctx->decided = 1;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "guard: allow, tenant \"%V\", decision %*s",
                   &ctx->tenant, (size_t) NGX_HTTP_GUARD_ID_LEN,
                   ngx_http_guard_decision_id(r, ctx));

    /* no opinion for the other access modules: they still apply */

    return NGX_DECLINED;
}


static ngx_http_guard_reason_e
ngx_http_guard_authenticate(ngx_http_request_t *r,
    ngx_http_guard_loc_conf_t *conf, ngx_http_guard_ctx_t *ctx)
{
    u_char                   key[NGX_HTTP_GUARD_HASH_LEN];
    ngx_int_t                rc;
    ngx_str_t                token;
    ngx_http_guard_reason_e  reason;

    rc = ngx_http_guard_jwt_token(r, conf, &token);

    if (rc == NGX_DECLINED) {
        return NGX_HTTP_GUARD_TOKEN_MISSING;
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_GUARD_INTERNAL_ERROR;
    }

    if (token.len > NGX_HTTP_GUARD_TOKEN_MAX) {
        return NGX_HTTP_GUARD_TOKEN_OVERSIZE;
    }

    ctx->cache_status = NGX_HTTP_GUARD_CACHE_OFF;

    if (conf->cache) {
        if (ngx_http_guard_cache_key(conf->salt, &token, key) != NGX_OK) {
            return NGX_HTTP_GUARD_INTERNAL_ERROR;
        }

        rc = ngx_http_guard_cache_get(r, key, &ctx->claims);

        if (rc == NGX_ERROR) {
            return NGX_HTTP_GUARD_INTERNAL_ERROR;
        }

        if (rc == NGX_OK) {
            ctx->cache_status = NGX_HTTP_GUARD_CACHE_HIT;
            ctx->authenticated = 1;

            /* a cached token still meets exp, nbf, iss and aud */
            return ngx_http_guard_jwt_check(r, conf, &ctx->claims);
        }

        ctx->cache_status = NGX_HTTP_GUARD_CACHE_MISS;
    }

    reason = ngx_http_guard_jwt_verify(r, conf->keys, &token, &ctx->payload,
                                       &ctx->claims.payload);
    if (reason != NGX_HTTP_GUARD_OK) {
        return reason;
    }

    reason = ngx_http_guard_jwt_claims(r, ctx->payload, &ctx->claims);
    if (reason != NGX_HTTP_GUARD_OK) {
        return reason;
    }

    if (ngx_http_guard_tenant_extract(r, &conf->tenant_claim, ctx->payload,
                                      &ctx->claims)
        != NGX_OK)
    {
        return NGX_HTTP_GUARD_INTERNAL_ERROR;
    }

    ctx->authenticated = 1;

    if (conf->cache) {
        ngx_http_guard_cache_put(r, key, &ctx->claims);
    }

    return ngx_http_guard_jwt_check(r, conf, &ctx->claims);
}


/*
 * The context is kept in a pool cleanup as well, so that it survives
 * internal redirects, which clear module contexts (as realip does).
 */

static ngx_http_guard_ctx_t *
ngx_http_guard_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t    *cln;
    ngx_http_guard_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_guard_module);

    if (ctx || !(r->internal || r->filter_finalize)) {
        return ctx;
    }

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_guard_ctx_cleanup) {
            ctx = cln->data;
            ngx_http_set_ctx(r, ctx, ngx_http_guard_module);
            return ctx;
        }
    }

    return NULL;
}


static ngx_http_guard_ctx_t *
ngx_http_guard_create_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t    *cln;
    ngx_http_guard_ctx_t  *ctx;

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_http_guard_ctx_t));
    if (cln == NULL) {
        return NULL;
    }

    ctx = cln->data;
    ngx_memzero(ctx, sizeof(ngx_http_guard_ctx_t));

    cln->handler = ngx_http_guard_ctx_cleanup;

    ngx_http_set_ctx(r, ctx, ngx_http_guard_module);

    return ctx;
}


/*
 * The decision id, a UUIDv7, made when first needed: by a refusal, a
 * variable or a log line.  Returns NULL when there is no randomness.
 */

u_char *
ngx_http_guard_decision_id(ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx)
{
    u_char       id[GD_UUID_LEN];
    uint64_t     ms;
    ngx_time_t  *tp;

    if (ctx->has_id) {
        return ctx->decision_id;
    }

    tp = ngx_timeofday();
    ms = (uint64_t) tp->sec * 1000 + tp->msec;

    if (gd_uuid7_next(&ngx_http_guard_uuid_gen, ms, id) != 0) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "guard: no randomness for a decision id");
        return NULL;
    }

    gd_uuid_format(id, (char *) ctx->decision_id);
    ctx->has_id = 1;

    return ctx->decision_id;
}


static void
ngx_http_guard_ctx_cleanup(void *data)
{
    ngx_http_guard_ctx_t  *ctx = data;

    if (ctx->payload) {
        json_decref(ctx->payload);
        ctx->payload = NULL;
    }
}


/* variables */

/* values with control characters never reach headers or logs */

static ngx_int_t
ngx_http_guard_set_value(ngx_http_variable_value_t *v, ngx_str_t *s)
{
    u_char  *p, *last;

    last = s->data + s->len;

    for (p = s->data; p < last; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            v->not_found = 1;
            return NGX_OK;
        }
    }

    v->len = s->len;
    v->data = s->data;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_guard_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    ngx_str_t              s;
    ngx_http_guard_ctx_t  *ctx;

    ctx = ngx_http_guard_get_ctx(r->main);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    switch (data) {

    case NGX_HTTP_GUARD_VAR_TENANT:
        s = ctx->tenant;
        break;

    case NGX_HTTP_GUARD_VAR_SUBJECT:
        if (!ctx->authenticated) {
            v->not_found = 1;
            return NGX_OK;
        }

        s = ctx->claims.sub;
        break;

    case NGX_HTTP_GUARD_VAR_DECISION:
        if (!ctx->decided) {
            v->not_found = 1;
            return NGX_OK;
        }

        s = ngx_http_guard_decisions[ctx->denied ? 1 : 0];
        break;

    case NGX_HTTP_GUARD_VAR_REASON:
        if (!ctx->decided || ctx->reason == NGX_HTTP_GUARD_OK) {
            v->not_found = 1;
            return NGX_OK;
        }

        s = *ngx_http_guard_reason_name(ctx->reason);
        break;

    case NGX_HTTP_GUARD_VAR_DECISION_ID:
        s.data = ngx_http_guard_decision_id(r, ctx);
        if (s.data == NULL) {
            return NGX_ERROR;
        }

        s.len = NGX_HTTP_GUARD_ID_LEN;
        break;

    default: /* NGX_HTTP_GUARD_VAR_TOKEN_CACHE */
        s = ngx_http_guard_cache_statuses[ctx->cache_status];
        break;
    }

    if (s.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    return ngx_http_guard_set_value(v, &s);
}


/* a claim value as text: strings raw, other scalars and objects as JSON */

static ngx_int_t
ngx_http_guard_claim_text(ngx_pool_t *pool, json_t *value, ngx_str_t *out)
{
    char  *text;

    if (json_is_string(value)) {
        out->data = (u_char *) json_string_value(value);
        out->len = json_string_length(value);
        return NGX_OK;
    }

    if (json_is_null(value)) {
        ngx_str_null(out);
        return NGX_OK;
    }

    text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
    if (text == NULL) {
        return NGX_ERROR;
    }

    out->len = ngx_strlen(text);
    out->data = ngx_pnalloc(pool, out->len);

    if (out->data == NULL) {
        free(text);
        return NGX_ERROR;
    }

    ngx_memcpy(out->data, text, out->len);
    free(text);

    return NGX_OK;
}


/*
 * nginx lowercases variable names, so $guard_claim_userid also finds the
 * claim "userId" when there is no claim "userid"
 */

static json_t *
ngx_http_guard_claim_lookup(json_t *payload, ngx_str_t *name)
{
    void        *it;
    json_t      *value;
    const char  *key;

    value = json_object_getn(payload, (char *) name->data, name->len);

    if (value) {
        return value;
    }

    for (it = json_object_iter(payload);
         it;
         it = json_object_iter_next(payload, it))
    {
        key = json_object_iter_key(it);

        if (ngx_strlen(key) == name->len
            && ngx_strncasecmp((u_char *) key, name->data, name->len) == 0)
        {
            return json_object_iter_value(it);
        }
    }

    return NULL;
}


static ngx_int_t
ngx_http_guard_claim_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                *p;
    size_t                 i, n, len;
    json_t                *value;
    ngx_str_t             *name = (ngx_str_t *) data;
    ngx_str_t              claim, s, *parts;
    json_error_t           err;
    ngx_http_guard_ctx_t  *ctx;

    ctx = ngx_http_guard_get_ctx(r->main);

    if (ctx == NULL || !ctx->authenticated) {
        v->not_found = 1;
        return NGX_OK;
    }

    if (ctx->payload == NULL) {
        /* a cached token: parse the verified payload on first use */
        ctx->payload = json_loadb((char *) ctx->claims.payload.data,
                                  ctx->claims.payload.len,
                                  NGX_HTTP_GUARD_JSON_FLAGS, &err);
        if (ctx->payload == NULL) {
            v->not_found = 1;
            return NGX_OK;
        }
    }

    claim.data = name->data + sizeof("guard_claim_") - 1;
    claim.len = name->len - (sizeof("guard_claim_") - 1);

    value = ngx_http_guard_claim_lookup(ctx->payload, &claim);

    if (value == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    if (!json_is_array(value)) {
        if (ngx_http_guard_claim_text(r->pool, value, &s) != NGX_OK) {
            return NGX_ERROR;
        }

    } else {
        /* arrays are joined by "," */
        n = json_array_size(value);

        parts = ngx_palloc(r->pool, (n + 1) * sizeof(ngx_str_t));
        if (parts == NULL) {
            return NGX_ERROR;
        }

        len = 0;

        for (i = 0; i < n; i++) {
            if (ngx_http_guard_claim_text(r->pool, json_array_get(value, i),
                                          &parts[i])
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            len += parts[i].len + 1;
        }

        s.data = ngx_pnalloc(r->pool, len);
        if (s.data == NULL) {
            return NGX_ERROR;
        }

        p = s.data;

        for (i = 0; i < n; i++) {
            if (i) {
                *p++ = ',';
            }

            p = ngx_cpymem(p, parts[i].data, parts[i].len);
        }

        s.len = p - s.data;
    }

    if (s.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    return ngx_http_guard_set_value(v, &s);
}


/* configuration */

static ngx_int_t
ngx_http_guard_init_process(ngx_cycle_t *cycle)
{
    /* a worker must not share the master's random block */
    gd_uuid_gen_init(&ngx_http_guard_uuid_gen);

    return NGX_OK;
}


static void *
ngx_http_guard_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_guard_main_conf_t  *gmcf;

    gmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_guard_main_conf_t));
    if (gmcf == NULL) {
        return NULL;
    }

    gmcf->zone_size = NGX_CONF_UNSET_SIZE;

    return gmcf;
}


static char *
ngx_http_guard_init_main_conf(ngx_conf_t *cf, void *conf)
{
    return ngx_http_guard_zone_size(cf, conf);
}


static void *
ngx_http_guard_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_guard_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_guard_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->keys = NULL;
     *     conf->token = NULL;
     *     conf->tenant = NULL;
     *     conf->tenant_claim = { 0 };
     */

    conf->enable = NGX_CONF_UNSET;
    conf->issuers = NGX_CONF_UNSET_PTR;
    conf->audiences = NGX_CONF_UNSET_PTR;
    conf->leeway = NGX_CONF_UNSET;
    conf->max_lifetime = NGX_CONF_UNSET;
    conf->cache = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_guard_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_guard_loc_conf_t *prev = parent;
    ngx_http_guard_loc_conf_t *conf = child;

    EVP_MD_CTX                  *mctx;
    ngx_http_guard_main_conf_t  *gmcf;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_ptr_value(conf->issuers, prev->issuers, NULL);
    ngx_conf_merge_ptr_value(conf->audiences, prev->audiences, NULL);
    ngx_conf_merge_sec_value(conf->leeway, prev->leeway, 30);
    ngx_conf_merge_sec_value(conf->max_lifetime, prev->max_lifetime, 0);
    ngx_conf_merge_value(conf->cache, prev->cache, 1);

    if (conf->keys == NULL) {
        conf->keys = prev->keys;
    }

    if (conf->token == NULL) {
        conf->token = prev->token;
    }

    if (conf->tenant == NULL) {
        conf->tenant = prev->tenant;
    }

    if (conf->tenant_claim.name.len == 0) {
        if (prev->tenant_claim.name.len) {
            conf->tenant_claim = prev->tenant_claim;

        } else {
            ngx_str_set(&conf->tenant_claim.name, "tenant_id");
            conf->tenant_claim.pointer = 0;
        }
    }

    if (conf->enable) {
        gmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_guard_module);
        gmcf->used = 1;
    }

    if (conf->keys == NULL) {
        if (conf->enable) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"guard\" is on but no \"guard_jwt_keys\" "
                               "is set for this location");
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

    /*
     * the token cache salt: a token verified with another key set, or
     * read with another tenant claim, is another entry
     */

    mctx = EVP_MD_CTX_new();

    if (mctx == NULL
        || EVP_DigestInit_ex(mctx, EVP_sha256(), NULL) != 1
        || EVP_DigestUpdate(mctx,
                            ngx_http_guard_jwt_keyset_fingerprint(conf->keys),
                            NGX_HTTP_GUARD_HASH_LEN) != 1
        || EVP_DigestUpdate(mctx, conf->tenant_claim.name.data,
                            conf->tenant_claim.name.len) != 1
        || EVP_DigestFinal_ex(mctx, conf->salt, NULL) != 1)
    {
        EVP_MD_CTX_free(mctx);
        return NGX_CONF_ERROR;
    }

    EVP_MD_CTX_free(mctx);

    return NGX_CONF_OK;
}


static char *
ngx_http_guard_jwt_keys(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_guard_loc_conf_t *glcf = conf;

    ngx_str_t  *value;

    if (glcf->keys) {
        return "is duplicate";
    }

    value = cf->args->elts;

    return ngx_http_guard_jwt_load_keys(cf, &value[1], &glcf->keys);
}


static char *
ngx_http_guard_str_list(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    ngx_str_t     *value, *s;
    ngx_uint_t     i;
    ngx_array_t  **a;

    a = (ngx_array_t **) (p + cmd->offset);

    if (*a != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    *a = ngx_array_create(cf->pool, cf->args->nelts - 1, sizeof(ngx_str_t));
    if (*a == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        if (value[i].len == 0) {
            return "has an empty value";
        }

        s = ngx_array_push(*a);
        if (s == NULL) {
            return NGX_CONF_ERROR;
        }

        *s = value[i];
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_guard_max_lifetime(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_guard_loc_conf_t *glcf = conf;

    ngx_str_t  *value;

    if (glcf->max_lifetime != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        glcf->max_lifetime = 0;
        return NGX_CONF_OK;
    }

    glcf->max_lifetime = ngx_parse_time(&value[1], 1);

    if (glcf->max_lifetime == (time_t) NGX_ERROR || glcf->max_lifetime == 0) {
        return "must be \"off\" or a positive time";
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_guard_tenant_claim(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_guard_loc_conf_t *glcf = conf;

    ngx_str_t  *value;

    if (glcf->tenant_claim.name.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    return ngx_http_guard_tenant_claim_spec(cf, &value[1],
                                            &glcf->tenant_claim);
}


static ngx_int_t
ngx_http_guard_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_guard_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_guard_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt         *h;
    ngx_http_core_main_conf_t   *cmcf;
    ngx_http_guard_main_conf_t  *gmcf;

    gmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_guard_module);

    /* no shared memory for a module that is loaded but not used */

    if (gmcf->used && ngx_http_guard_zone_add(cf, gmcf) != NGX_CONF_OK) {
        return NGX_ERROR;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_guard_handler;

    return NGX_OK;
}
