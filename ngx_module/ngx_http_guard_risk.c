
/*
 * Copyright (C) Guard authors
 *
 * The risk stage: guardd scores the request (a DECIDE over the sidecar
 * client) and its VERDICT allows, asks for a stronger authentication, or
 * refuses.  The one stage that may wait: the request suspends until the
 * VERDICT or the timeout, and resumes at this stage.
 */


#include "ngx_http_guard_risk.h"
#include "ngx_http_guard_sidecar.h"
#include "ngx_http_guard_problem.h"
#include "ngx_http_guard_policy.h"
#include "ngx_http_guard_metrics.h"
#include "ngx_http_guard_guardrails.h"


static json_t *ngx_http_guard_risk_request(ngx_http_request_t *r,
    void *data);
static ngx_int_t ngx_http_guard_risk_claims(json_t *doc,
    ngx_http_guard_policy_t *gp, json_t *claims);
static ngx_int_t ngx_http_guard_risk_verdict(ngx_http_request_t *r,
    void *data, ngx_int_t verdict, json_t *payload);


/*
 * Asks guardd.  NGX_AGAIN: the request waits for its VERDICT or timer
 * (the stage is called again then); otherwise decided: OK or a reason,
 * and *shadow when the decision is not to be enforced.
 */

ngx_int_t
ngx_http_guard_risk(ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx,
    ngx_uint_t *shadow)
{
    ngx_int_t                     rc;
    ngx_uint_t                    mode;
    ngx_http_guard_reason_e       reason;
    ngx_http_guard_metrics_sh_t  *m;

    mode = ctx->conf->risk;

    if (mode == NGX_HTTP_GUARD_RISK_OFF) {
        return NGX_HTTP_GUARD_OK;
    }

    if (ctx->risk == NGX_HTTP_GUARD_RISK_WAITING) {
        return NGX_AGAIN;
    }

    if (ctx->risk == NGX_HTTP_GUARD_RISK_NONE) {
        ctx->risk = NGX_HTTP_GUARD_RISK_FAILED;

        rc = ngx_http_guard_sidecar_call(r, ngx_http_guard_risk_request,
                                         ngx_http_guard_risk_verdict, ctx);

        if (rc == NGX_AGAIN) {
            ctx->risk = NGX_HTTP_GUARD_RISK_WAITING;
            return NGX_AGAIN;
        }
    }

    /* decided, or failed */

    *shadow = (mode == NGX_HTTP_GUARD_RISK_SHADOW);

    switch (ctx->risk) {

    case NGX_HTTP_GUARD_RISK_DENY:
        reason = NGX_HTTP_GUARD_RISK_DENIED;
        break;

    case NGX_HTTP_GUARD_RISK_STEP_UP:
        reason = NGX_HTTP_GUARD_RISK_STEP_UP_NEEDED;
        break;

    case NGX_HTTP_GUARD_RISK_FAILED:
        reason = NGX_HTTP_GUARD_SIDECAR_UNAVAILABLE;

        if (ctx->conf->risk_fail_open) {
            *shadow = 1;

            m = ngx_http_guard_metrics_get(r);

            if (m && mode == NGX_HTTP_GUARD_RISK_ON) {
                (void) ngx_atomic_fetch_add(&m->sidecar_fail_open, 1);
            }
        }

        break;

    default: /* NGX_HTTP_GUARD_RISK_ALLOW */
        reason = NGX_HTTP_GUARD_OK;
        break;
    }

    if (ctx->risk_shadow) {
        *shadow = 1;
    }

    return reason;
}


/* the DECIDE payload, made once a connection is ready */

static json_t *
ngx_http_guard_risk_request(ngx_http_request_t *r, void *data)
{
    ngx_http_guard_ctx_t *ctx = data;

    json_t                      *doc, *claims;
    ngx_int_t                    score;
    ngx_str_t                    tp;
    ngx_http_guard_main_conf_t  *gmcf;

    doc = json_object();
    if (doc == NULL) {
        return NULL;
    }

    /* request text: at most a frame's worth, escaped (json_set_text) */

    if (ngx_http_guard_json_set_text(doc, "tenant", ctx->tenant.data,
                                     ctx->tenant.len, 1024) != NGX_OK
        || ngx_http_guard_json_set_text(doc, "subject", ctx->claims.sub.data,
                                        ctx->claims.sub.len, 1024) != NGX_OK
        || ngx_http_guard_json_set_text(doc, "method", r->method_name.data,
                                        r->method_name.len, 64) != NGX_OK
        || ngx_http_guard_json_set_text(doc, "route", r->uri.data,
                                        r->uri.len, 4096) != NGX_OK
        || ngx_http_guard_json_set_text(doc, "client_ip",
                                        r->connection->addr_text.data,
                                        r->connection->addr_text.len, 64)
           != NGX_OK)
    {
        json_decref(doc);
        return NULL;
    }

    json_object_set_new(doc, "body_size",
                        json_integer(r->headers_in.content_length_n > 0
                                     ? r->headers_in.content_length_n : 0));

    /* the guardrails' anomaly score (risk signal inline_score_over) */

    score = ngx_http_guard_guardrails_score(ctx);

    if (score >= 0) {
        json_object_set_new(doc, "inline_score", json_integer(score));
    }

    /* the version nginx decides with: guardd warns when its own differs */

    gmcf = ngx_http_get_module_main_conf(r, ngx_http_guard_module);

    if (gmcf->policies) {
        json_object_set_new(doc, "policy_version",
                            json_stringn((char *) gmcf->policies->version.data,
                                         gmcf->policies->version.len));
    }

    /* guardd names the decision: its id becomes the request's */

    if (ctx->conf->risk == NGX_HTTP_GUARD_RISK_SHADOW) {
        /* not enforced: guardd journals a shadow refusal, not a refusal */
        json_object_set_new(doc, "shadow", json_true());
    }

    claims = ngx_http_guard_payload(ctx);

    if (claims && ngx_http_guard_risk_claims(doc, ctx->policy, claims)
                  != NGX_OK)
    {
        json_decref(doc);
        return NULL;
    }

    if (ngx_http_guard_traceparent(r, &tp) == NGX_OK
        && ngx_http_guard_json_set_text(doc, "traceparent", tp.data, tp.len,
                                        64) != NGX_OK)
    {
        json_decref(doc);
        return NULL;
    }

    return doc;
}


/*
 * The claims guardd is sent: those the tenant's risk signals read, as
 * nginx's copy of the policies names them; all of them for a tenant
 * nginx has no policy for.  Values are shared, not copied (the document
 * is freed before the payload), unless a string in them must be escaped
 * to be carried (ngx_http_guard_json_clean).
 */

static ngx_int_t
ngx_http_guard_risk_claims(json_t *doc, ngx_http_guard_policy_t *gp,
    json_t *claims)
{
    json_t                  *selected, *v;
    ngx_uint_t               i;
    const gd_risk_policy_t  *risk;

    if (gp == NULL) {
        v = ngx_http_guard_json_clean(claims);

        return v && json_object_set_new(doc, "claims", v) == 0 ? NGX_OK
                                                                : NGX_ERROR;
    }

    selected = json_object();
    if (selected == NULL || json_object_set_new(doc, "claims", selected)) {
        return NGX_ERROR;
    }

    risk = &gp->p->risk;

    for (i = 0; gp->p->has_risk && i < risk->nsignals; i++) {

        if (risk->signals[i].cond != GD_RISK_CLAIM) {
            continue;
        }

        v = json_object_get(claims, risk->signals[i].claim);

        if (v == NULL) {
            continue;
        }

        v = ngx_http_guard_json_clean(v);

        if (v == NULL
            || json_object_set_new(selected, risk->signals[i].claim, v))
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * The VERDICT (or the failure: an ERROR, the timeout, a broken
 * connection).  NGX_OK when guardd answered with a decision.
 */

static ngx_int_t
ngx_http_guard_risk_verdict(ngx_http_request_t *r, void *data,
    ngx_int_t verdict, json_t *payload)
{
    ngx_http_guard_ctx_t *ctx = data;

    json_t      *v;
    const char  *d;

    ctx->risk = NGX_HTTP_GUARD_RISK_FAILED;

    if (verdict == NGX_OK && payload) {
        v = json_object_get(payload, "decision");
        d = json_is_string(v) ? json_string_value(v) : "";

        if (ngx_strcmp(d, "allow") == 0) {
            ctx->risk = NGX_HTTP_GUARD_RISK_ALLOW;

        } else if (ngx_strcmp(d, "step_up") == 0) {
            ctx->risk = NGX_HTTP_GUARD_RISK_STEP_UP;

        } else if (ngx_strcmp(d, "deny") == 0) {
            ctx->risk = NGX_HTTP_GUARD_RISK_DENY;
        }

        v = json_object_get(payload, "score");
        ctx->risk_score = json_is_integer(v) ? json_integer_value(v) : 0;
        ctx->risk_shadow = json_is_true(json_object_get(payload, "shadow"));

        v = json_object_get(payload, "decision_id");

        if (json_is_string(v)
            && json_string_length(v) == NGX_HTTP_GUARD_ID_LEN)
        {
            /* guardd's id: the same in its journal and in our answer */
            ngx_memcpy(ctx->decision_id, json_string_value(v),
                       NGX_HTTP_GUARD_ID_LEN);
            ctx->has_id = 1;
        }
    }

    return ctx->risk == NGX_HTTP_GUARD_RISK_FAILED ? NGX_ERROR : NGX_OK;
}
