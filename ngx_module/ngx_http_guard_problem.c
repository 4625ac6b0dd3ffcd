
/*
 * Copyright (C) Guard authors
 *
 * Refusals.  Every refusal is an application/problem+json body (RFC 9457)
 * with a stable type URN per reason and the request's decision id, which
 * also goes into the Guard-Decision-Id response header.  Nothing from the
 * request (token, kid, claims) is ever echoed.
 */


#include "ngx_http_guard_problem.h"
#include "ngx_http_guard_metrics.h"
#include "ngx_http_guard_limit.h"

#include "gd_audit.h"


/* the bytes of a path that Guard's log lines show, at most */
#define NGX_HTTP_GUARD_LOG_PATH  512


static u_char *ngx_http_guard_log_handler(ngx_log_t *log, u_char *buf,
    size_t len);


typedef struct {
    ngx_str_t                    name;
    ngx_str_t                    stage;       /* the stage that refuses */
    ngx_uint_t                   status;
    char                        *type;
    char                        *title;
    char                        *detail;
    /* RFC 6750 error code for WWW-Authenticate, or NULL */
    char                        *bearer_error;
} ngx_http_guard_reason_t;


static ngx_http_guard_reason_t  ngx_http_guard_reasons[] = {

    /* NGX_HTTP_GUARD_OK */
    { ngx_string("none"), ngx_string("none"),
      NGX_HTTP_OK, NULL, NULL, NULL, NULL },

    { ngx_string("token_missing"), ngx_string("jwt"),
      NGX_HTTP_UNAUTHORIZED,
      "urn:guard:token-missing", "Authentication required",
      "the request carries no bearer token", NULL },

    { ngx_string("token_oversize"), ngx_string("jwt"),
      NGX_HTTP_UNAUTHORIZED,
      "urn:guard:token-oversize", "Invalid token",
      "token too large", "invalid_token" },

    { ngx_string("token_malformed"), ngx_string("jwt"),
      NGX_HTTP_UNAUTHORIZED,
      "urn:guard:token-malformed", "Invalid token",
      "token malformed", "invalid_token" },

    { ngx_string("token_alg_refused"), ngx_string("jwt"),
      NGX_HTTP_UNAUTHORIZED,
      "urn:guard:token-alg-refused", "Invalid token",
      "token algorithm not accepted", "invalid_token" },

    { ngx_string("token_crit_refused"), ngx_string("jwt"),
      NGX_HTTP_UNAUTHORIZED,
      "urn:guard:token-crit-refused", "Invalid token",
      "token has critical header parameters", "invalid_token" },

    { ngx_string("token_key_unknown"), ngx_string("jwt"),
      NGX_HTTP_UNAUTHORIZED,
      "urn:guard:token-key-unknown", "Invalid token",
      "token signing key not recognized", "invalid_token" },

    { ngx_string("token_invalid"), ngx_string("jwt"),
      NGX_HTTP_UNAUTHORIZED,
      "urn:guard:token-invalid", "Invalid token",
      "token signature invalid", "invalid_token" },

    { ngx_string("token_claim_invalid"), ngx_string("jwt"),
      NGX_HTTP_UNAUTHORIZED,
      "urn:guard:token-claim-invalid", "Invalid token",
      "token claims missing or malformed", "invalid_token" },

    { ngx_string("token_expired"), ngx_string("jwt"),
      NGX_HTTP_UNAUTHORIZED,
      "urn:guard:token-expired", "Invalid token",
      "token expired", "invalid_token" },

    { ngx_string("token_not_yet_valid"), ngx_string("jwt"),
      NGX_HTTP_UNAUTHORIZED,
      "urn:guard:token-not-yet-valid", "Invalid token",
      "token not yet valid", "invalid_token" },

    { ngx_string("token_lifetime_exceeded"), ngx_string("jwt"),
      NGX_HTTP_UNAUTHORIZED,
      "urn:guard:token-lifetime-exceeded", "Invalid token",
      "token lifetime too long", "invalid_token" },

    { ngx_string("token_issuer_refused"), ngx_string("jwt"),
      NGX_HTTP_UNAUTHORIZED,
      "urn:guard:token-issuer-refused", "Invalid token",
      "token issuer not accepted", "invalid_token" },

    { ngx_string("token_audience_refused"), ngx_string("jwt"),
      NGX_HTTP_UNAUTHORIZED,
      "urn:guard:token-audience-refused", "Invalid token",
      "token audience not accepted", "invalid_token" },

    { ngx_string("tenant_unaddressed"), ngx_string("tenant"),
      NGX_HTTP_BAD_REQUEST,
      "urn:guard:tenant-unaddressed", "Tenant not addressed",
      "the request does not name a tenant", NULL },

    { ngx_string("tenant_missing"), ngx_string("tenant"),
      NGX_HTTP_FORBIDDEN,
      "urn:guard:tenant-missing", "Tenant missing",
      "the token names no tenant", NULL },

    { ngx_string("tenant_mismatch"), ngx_string("tenant"),
      NGX_HTTP_FORBIDDEN,
      "urn:guard:tenant-mismatch", "Tenant mismatch",
      "the token is not valid for the addressed tenant", NULL },

    { ngx_string("residency"), ngx_string("residency"),
      NGX_HTTP_MISDIRECTED_REQUEST,
      "urn:guard:residency", "Wrong region",
      "this tenant is not served in this region", NULL },

    { ngx_string("rate_limited"), ngx_string("limits"),
      NGX_HTTP_TOO_MANY_REQUESTS,
      "urn:guard:rate-limited", "Too many requests",
      "the rate limit is exceeded; retry after the Retry-After delay",
      NULL },

    { ngx_string("concurrency_limited"), ngx_string("limits"),
      NGX_HTTP_TOO_MANY_REQUESTS,
      "urn:guard:concurrency-limited", "Too many requests in flight",
      "the tenant has too many requests in flight", NULL },

    { ngx_string("risk_deny"), ngx_string("risk"),
      NGX_HTTP_FORBIDDEN,
      "urn:guard:risk-deny", "Refused by risk policy",
      "the request was refused by the risk policy", NULL },

    { ngx_string("risk_step_up"), ngx_string("risk"),
      NGX_HTTP_UNAUTHORIZED,
      "urn:guard:risk-step-up", "Stronger authentication required",
      "authenticate again with a stronger method",
      "insufficient_user_authentication" },

    { ngx_string("sidecar_unavailable"), ngx_string("sidecar"),
      NGX_HTTP_SERVICE_UNAVAILABLE,
      "urn:guard:sidecar-unavailable", "Decision unavailable",
      "the risk decision service is unavailable; retry later", NULL },

    { ngx_string("internal_error"), ngx_string("internal"),
      NGX_HTTP_INTERNAL_SERVER_ERROR,
      "urn:guard:internal-error", "Internal error",
      "the gateway could not decide", NULL },
};


static ngx_str_t  ngx_http_guard_problem_type =
    ngx_string("application/problem+json");
static ngx_str_t  ngx_http_guard_no_store = ngx_string("no-store");
static ngx_str_t  ngx_http_guard_retry_soon = ngx_string("1");


ngx_str_t *
ngx_http_guard_reason_name(ngx_http_guard_reason_e reason)
{
    if (reason >= NGX_HTTP_GUARD_REASON_LAST) {
        reason = NGX_HTTP_GUARD_INTERNAL_ERROR;
    }

    return &ngx_http_guard_reasons[reason].name;
}


ngx_str_t *
ngx_http_guard_reason_stage(ngx_http_guard_reason_e reason)
{
    if (reason >= NGX_HTTP_GUARD_REASON_LAST) {
        reason = NGX_HTTP_GUARD_INTERNAL_ERROR;
    }

    return &ngx_http_guard_reasons[reason].stage;
}


ngx_uint_t
ngx_http_guard_reason_status(ngx_http_guard_reason_e reason)
{
    if (reason == NGX_HTTP_GUARD_OK || reason >= NGX_HTTP_GUARD_REASON_LAST) {
        reason = NGX_HTTP_GUARD_INTERNAL_ERROR;
    }

    return ngx_http_guard_reasons[reason].status;
}


/*
 * Whether nginx answers status with the location's error_page: the test
 * of ngx_http_special_response_handler(), which then redirects
 */

static ngx_uint_t
ngx_http_guard_error_page(ngx_http_request_t *r, ngx_uint_t status)
{
    ngx_uint_t                 i;
    ngx_http_err_page_t       *err_page;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (r->error_page || clcf->error_pages == NULL || r->uri_changes == 0) {
        return 0;
    }

    err_page = clcf->error_pages->elts;

    for (i = 0; i < clcf->error_pages->nelts; i++) {
        if (err_page[i].status == (ngx_int_t) status) {
            return 1;
        }
    }

    return 0;
}


ngx_int_t
ngx_http_guard_add_header(ngx_http_request_t *r, char *name, ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->value = *value;

    return NGX_OK;
}


static ngx_int_t
ngx_http_guard_www_authenticate(ngx_http_request_t *r,
    ngx_http_guard_reason_t *rs)
{
    u_char     *p;
    size_t      len;
    ngx_str_t   value;

    if (rs->status != NGX_HTTP_UNAUTHORIZED) {
        return NGX_OK;
    }

    len = sizeof("Bearer realm=\"guard\"") - 1;

    if (rs->bearer_error) {
        len += sizeof(", error=\"\", error_description=\"\"") - 1
               + ngx_strlen(rs->bearer_error) + ngx_strlen(rs->detail);
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    value.data = p;
    p = ngx_cpymem(p, "Bearer realm=\"guard\"",
                   sizeof("Bearer realm=\"guard\"") - 1);

    if (rs->bearer_error) {
        p = ngx_sprintf(p, ", error=\"%s\", error_description=\"%s\"",
                        rs->bearer_error, rs->detail);
    }

    value.len = p - value.data;

    if (ngx_http_guard_add_header(r, "WWW-Authenticate", &value) != NGX_OK) {
        return NGX_ERROR;
    }

    r->headers_out.www_authenticate = r->headers_out.headers.last->elts;
    r->headers_out.www_authenticate += r->headers_out.headers.last->nelts - 1;

    return NGX_OK;
}


/* Retry-After: 1, for the refusals that soon pass (concurrency, sidecar) */

static ngx_int_t
ngx_http_guard_retry_after(ngx_http_request_t *r,
    ngx_http_guard_reason_e reason)
{
    if (reason != NGX_HTTP_GUARD_CONCURRENCY_LIMITED
        && reason != NGX_HTTP_GUARD_SIDECAR_UNAVAILABLE)
    {
        return NGX_OK;
    }

    return ngx_http_guard_add_header(r, "Retry-After",
                                     &ngx_http_guard_retry_soon);
}


/* a JSON document as the last buffer of a response body */

ngx_buf_t *
ngx_http_guard_json_buf(ngx_http_request_t *r, json_t *doc, size_t flags)
{
    char       *text;
    size_t      len;
    ngx_buf_t  *b;

    text = json_dumps(doc, flags);
    if (text == NULL) {
        return NULL;
    }

    len = ngx_strlen(text);

    b = ngx_create_temp_buf(r->pool, len + 1);
    if (b == NULL) {
        free(text);
        return NULL;
    }

    b->last = ngx_cpymem(b->last, text, len);
    *b->last++ = LF;
    free(text);

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    return b;
}


/*
 * How request text is carried in frames and records (docs/protocol.md,
 * "How text is carried"): printable ASCII and valid UTF-8 sequences as
 * they are; every other byte (NUL, the other control characters, DEL,
 * bytes that are not part of valid UTF-8) as %XX.  So what the module
 * sends is always a string guardd accepts, whatever the request held.
 */

static size_t
ngx_http_guard_utf8_len(u_char *p, u_char *end)
{
    size_t    n, i;
    uint32_t  u, min;

    /* the length of the valid UTF-8 sequence at p (RFC 3629), or 0 */

    if (*p >= 0xc2 && *p <= 0xdf) {
        n = 2;
        u = *p & 0x1f;
        min = 0x80;

    } else if (*p >= 0xe0 && *p <= 0xef) {
        n = 3;
        u = *p & 0x0f;
        min = 0x800;

    } else if (*p >= 0xf0 && *p <= 0xf4) {
        n = 4;
        u = *p & 0x07;
        min = 0x10000;

    } else {
        return 0;
    }

    if ((size_t) (end - p) < n) {
        return 0;
    }

    for (i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }

        u = (u << 6) | (p[i] & 0x3f);
    }

    if (u < min || u > 0x10ffff || (u >= 0xd800 && u <= 0xdfff)) {
        return 0;
    }

    return n;
}


/* the bytes up to the first one that must be escaped */

static size_t
ngx_http_guard_text_clean(u_char *data, size_t len)
{
    size_t   n;
    u_char  *p, *end;

    end = data + len;

    for (p = data; p < end; p += n) {

        if (*p >= 0x20 && *p < 0x7f) {
            n = 1;
            continue;
        }

        n = (*p < 0x80) ? 0 : ngx_http_guard_utf8_len(p, end);

        if (n == 0) {
            break;
        }
    }

    return p - data;
}


/* a JSON string of request text, escaped as above */

json_t *
ngx_http_guard_json_text(u_char *data, size_t len)
{
    size_t   n;
    json_t  *v;
    u_char  *p, *q, *end, *copy;

    n = ngx_http_guard_text_clean(data, len);

    if (n == len) {
        return json_stringn((char *) data, len);
    }

    copy = ngx_alloc(3 * len + 1, ngx_cycle->log);
    if (copy == NULL) {
        return NULL;
    }

    q = ngx_cpymem(copy, data, n);
    end = data + len;

    for (p = data + n; p < end; p += n) {
        n = ngx_http_guard_text_clean(p, end - p);

        if (n) {
            q = ngx_cpymem(q, p, n);
            continue;
        }

        q = ngx_sprintf(q, "%%%02xd", *p);
        n = 1;
    }

    v = json_stringn((char *) copy, q - copy);
    ngx_free(copy);

    return v;
}


/*
 * Sets doc[key] to text from the request (a path, a header, a tenant
 * name), at most max bytes of it, carried as above: the member is never
 * silently dropped, and never refused by guardd.  Longer text is masked
 * before it is cut (gd_audit_mask_cut), so that no part of a secret
 * across the cut is kept; shorter text is masked with the whole record
 * (and again by guardd).
 */

ngx_int_t
ngx_http_guard_json_set_text(json_t *doc, const char *key, u_char *data,
    size_t len, size_t max)
{
    char    *cut;
    size_t   n;
    json_t  *v;

    v = ngx_http_guard_json_text(data, len);

    if (v == NULL) {
        return NGX_ERROR;
    }

    if (json_string_length(v) > max) {
        if (gd_audit_mask_cut(key, json_string_value(v),
                              json_string_length(v), max, &cut, &n)
            != 0)
        {
            json_decref(v);
            return NGX_ERROR;
        }

        json_decref(v);
        v = json_stringn(cut, n);
        free(cut);

        if (v == NULL) {
            return NGX_ERROR;
        }
    }

    return json_object_set_new(doc, key, v) == 0 ? NGX_OK : NGX_ERROR;
}


/*
 * The log for Guard's own lines about a request: a copy of the request's
 * log whose context says "client: ..., server: ..., request: ..., host:
 * ..." as nginx's does, but with the path masked (gd_audit, as in audit
 * records), without the query string (it may carry an access_token or an
 * e-mail address: "?[masked]" stands for it) and without the referrer.
 * log is the caller's (usually on its stack); it is returned.
 */

ngx_log_t *
ngx_http_guard_request_log(ngx_http_request_t *r, ngx_log_t *log)
{
    *log = *r->connection->log;
    log->data = r;
    log->handler = ngx_http_guard_log_handler;

    return log;
}


static u_char *
ngx_http_guard_log_handler(ngx_log_t *log, u_char *buf, size_t len)
{
    char                      *path;
    size_t                     n;
    u_char                    *p, *last, *s;
    ngx_http_request_t        *r;
    ngx_http_core_srv_conf_t  *cscf;

    r = log->data;
    p = buf;
    last = buf + len;

    if (log->action) {
        p = ngx_slprintf(p, last, " while %s", log->action);
    }

    cscf = ngx_http_get_module_srv_conf(r, ngx_http_core_module);

    p = ngx_slprintf(p, last, ", client: %V, server: %V",
                     &r->connection->addr_text, &cscf->server_name);

    if (r->method_name.len == 0) {
        return p;
    }

    p = ngx_slprintf(p, last, ", request: \"%V ", &r->method_name);

    /* the decoded path, masked, its control characters escaped */

    if (gd_audit_mask_cut("route", (char *) r->uri.data, r->uri.len,
                          NGX_HTTP_GUARD_LOG_PATH, &path, &n)
        == 0)
    {
        for (s = (u_char *) path; s < (u_char *) path + n; s++) {

            if (last - p < 4) {
                break;
            }

            if (*s < 0x20 || *s == 0x7f || *s == '"' || *s == '\\') {
                p = ngx_sprintf(p, "\\x%02xd", *s);

            } else {
                *p++ = *s;
            }
        }

        free(path);
    }

    p = ngx_slprintf(p, last, "%s%s%V\"",
                     r->args.len ? "?[masked]" : "",
                     r->http_protocol.len ? " " : "", &r->http_protocol);

    if (r->headers_in.server.len) {
        p = ngx_slprintf(p, last, ", host: \"%V\"", &r->headers_in.server);
    }

    return p;
}


/*
 * A claim value (from the verified token) as it is carried: its strings
 * escaped as request text is (jansson keeps NUL in a string; guardd
 * refuses it).  A new reference; the value itself when nothing changes.
 */

static ngx_uint_t
ngx_http_guard_json_is_clean(json_t *v)
{
    size_t       i;
    json_t      *item;
    const char  *key;

    switch (json_typeof(v)) {

    case JSON_STRING:
        return ngx_http_guard_text_clean((u_char *) json_string_value(v),
                                         json_string_length(v))
               == json_string_length(v);

    case JSON_ARRAY:
        json_array_foreach(v, i, item) {
            if (!ngx_http_guard_json_is_clean(item)) {
                return 0;
            }
        }

        return 1;

    case JSON_OBJECT:
        json_object_foreach(v, key, item) {
            if (!ngx_http_guard_json_is_clean(item)) {
                return 0;
            }
        }

        return 1;

    default:
        return 1;
    }
}


json_t *
ngx_http_guard_json_clean(json_t *v)
{
    size_t       i;
    json_t      *copy, *item, *clean;
    const char  *key;

    if (ngx_http_guard_json_is_clean(v)) {
        return json_incref(v);
    }

    switch (json_typeof(v)) {

    case JSON_STRING:
        return ngx_http_guard_json_text((u_char *) json_string_value(v),
                                        json_string_length(v));

    case JSON_ARRAY:
        copy = json_array();
        if (copy == NULL) {
            return NULL;
        }

        json_array_foreach(v, i, item) {
            clean = ngx_http_guard_json_clean(item);

            if (clean == NULL || json_array_append_new(copy, clean) != 0) {
                json_decref(copy);
                return NULL;
            }
        }

        return copy;

    case JSON_OBJECT:
        copy = json_object();
        if (copy == NULL) {
            return NULL;
        }

        /* member names: jansson refuses a NUL in them when it parses */

        json_object_foreach(v, key, item) {
            clean = ngx_http_guard_json_clean(item);

            if (clean == NULL || json_object_set_new(copy, key, clean) != 0) {
                json_decref(copy);
                return NULL;
            }
        }

        return copy;

    default:
        return json_incref(v);
    }
}


static ngx_int_t
ngx_http_guard_problem_body(ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx,
    ngx_http_guard_reason_t *rs, ngx_buf_t **out)
{
    json_t     *doc;
    ngx_buf_t  *b;

    doc = json_pack("{s:s, s:s, s:i, s:s, s:s%, s:s#}",
                    "type", rs->type,
                    "title", rs->title,
                    "status", (int) rs->status,
                    "detail", rs->detail,
                    "reason", rs->name.data, rs->name.len,
                    "decision_id", ctx->decision_id,
                    (int) NGX_HTTP_GUARD_ID_LEN);
    if (doc == NULL) {
        return NGX_ERROR;
    }

    b = ngx_http_guard_json_buf(r, doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(doc);

    if (b == NULL) {
        return NGX_ERROR;
    }

    *out = b;

    return NGX_OK;
}


/*
 * Refuses the request from the access phase: counted, logged (at
 * guard_log_level), and answered.  With an error_page for the status,
 * the refusal's headers are set and the status is returned for nginx to
 * redirect, as auth_request and limit_req do; otherwise the problem+json
 * body is sent, the request finalized, and NGX_DONE returned.  The
 * caller returns what this returns.
 */

ngx_int_t
ngx_http_guard_refuse(ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx,
    ngx_http_guard_reason_e reason)
{
    ngx_int_t                 rc;
    ngx_buf_t                *b;
    ngx_str_t                 id;
    ngx_log_t                 log;
    ngx_chain_t               out;
    ngx_http_guard_reason_t  *rs;

    if (ngx_http_guard_decision_id(r, ctx) == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return NGX_DONE;
    }

    if (reason == NGX_HTTP_GUARD_OK || reason >= NGX_HTTP_GUARD_REASON_LAST) {
        reason = NGX_HTTP_GUARD_INTERNAL_ERROR;
    }

    rs = &ngx_http_guard_reasons[reason];

    /* a refused request uses no quota of the rate rules it passed */
    ngx_http_guard_limit_refund(r, ctx);

    ngx_http_guard_metrics_count(r, reason, 0);

    ctx->reason = reason;
    ctx->decided = 1;
    ctx->denied = 1;

    /* the query string may carry a token: see ngx_http_guard_request_log */

    ngx_http_guard_request_log(r, &log);

    ngx_log_error(ctx->conf->log_level, &log, 0,
                  "guard: refused with %ui, reason: %V, decision: %*s",
                  rs->status, &rs->name,
                  (size_t) NGX_HTTP_GUARD_ID_LEN, ctx->decision_id);

    id.data = ctx->decision_id;
    id.len = NGX_HTTP_GUARD_ID_LEN;

    if (ngx_http_guard_error_page(r, rs->status)) {

        /* the page has the decision id, and what the status asks for */

        if (ngx_http_guard_add_header(r, "Guard-Decision-Id", &id) != NGX_OK
            || ngx_http_guard_www_authenticate(r, rs) != NGX_OK
            || ngx_http_guard_retry_after(r, reason) != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return rs->status;
    }

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }

    ngx_http_clear_content_length(r);
    ngx_http_clear_accept_ranges(r);
    ngx_http_clear_last_modified(r);
    ngx_http_clear_etag(r);

    r->headers_out.status = rs->status;
    r->headers_out.content_type = ngx_http_guard_problem_type;
    r->headers_out.content_type_len = ngx_http_guard_problem_type.len;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.charset.len = 0;

    if (ngx_http_guard_add_header(r, "Guard-Decision-Id", &id) != NGX_OK
        || ngx_http_guard_www_authenticate(r, rs) != NGX_OK
        || ngx_http_guard_add_header(r, "Cache-Control",
                                     &ngx_http_guard_no_store) != NGX_OK
        || ngx_http_guard_problem_body(r, ctx, rs, &b) != NGX_OK)
    {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return NGX_DONE;
    }

    if (ngx_http_guard_retry_after(r, reason) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return NGX_DONE;
    }

    r->headers_out.content_length_n = b->last - b->pos;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        ngx_http_finalize_request(r, rc);
        return NGX_DONE;
    }

    out.buf = b;
    out.next = NULL;

    ngx_http_finalize_request(r, ngx_http_output_filter(r, &out));

    return NGX_DONE;
}
