
/*
 * Copyright (C) Guard authors
 *
 * Refusals.  Every refusal is an application/problem+json body (RFC 9457)
 * with a stable type URN per reason and the request's decision id, which
 * also goes into the Guard-Decision-Id response header.  Nothing from the
 * request (token, kid, claims) is ever echoed.
 */


#include "ngx_http_guard_problem.h"
#include "ngx_http_guard_ctx.h"
#include "ngx_http_guard_metrics.h"
#include "ngx_http_guard_limit.h"

#include "gd_audit.h"


/* the bytes of a path that Guard's log lines show, at most */
#define NGX_HTTP_GUARD_LOG_PATH  512


static u_char *ngx_http_guard_log_handler(ngx_log_t *log, u_char *buf,
    size_t len);


/*
 * The module's view of a row of the reason table (gd_reason.def): what
 * every refusal for the reason sends, built once per process at
 * configuration time by ngx_http_guard_problem_init().  The table is
 * compiled in, so a reload builds nothing again.
 */

typedef struct {
    ngx_str_t                    name;
    ngx_str_t                    stage;       /* the stage that refuses */
    ngx_uint_t                   status;
    /* the problem+json body with a zero decision id, and a LF */
    ngx_str_t                    body;
    /* with a 401: Bearer realm="guard" and the RFC 6750 error */
    ngx_str_t                    www_authenticate;
} ngx_http_guard_reason_t;


static ngx_http_guard_reason_t
    ngx_http_guard_reasons[NGX_HTTP_GUARD_REASON_LAST];

/* the bytes of a body after the decision id: the quote, "}" and LF */
#define NGX_HTTP_GUARD_PROBLEM_TAIL  (sizeof("\"}\n") - 1)


static ngx_str_t  ngx_http_guard_problem_type =
    ngx_string("application/problem+json");
static ngx_str_t  ngx_http_guard_no_store = ngx_string("no-store");
static ngx_str_t  ngx_http_guard_retry_soon = ngx_string("1");


static ngx_int_t ngx_http_guard_problem_build(ngx_http_guard_reason_t *rs,
    const gd_reason_t *info, ngx_log_t *log);


/*
 * Builds every reason's body and headers, once per process (in the master
 * at the first configuration; workers inherit them).  They are never
 * freed: the table is constant, and a reload that fails must not leave
 * the master with freed bodies.
 */

ngx_int_t
ngx_http_guard_problem_init(ngx_log_t *log)
{
    ngx_uint_t                i;
    const gd_reason_t        *info;
    ngx_http_guard_reason_t  *rs;

    static ngx_uint_t         built;

    if (built) {
        return NGX_OK;
    }

    for (i = 0; i < NGX_HTTP_GUARD_REASON_LAST; i++) {
        rs = &ngx_http_guard_reasons[i];
        info = gd_reason(i);

        rs->name.data = (u_char *) info->name;
        rs->name.len = ngx_strlen(info->name);
        rs->stage.data = (u_char *) info->stage;
        rs->stage.len = ngx_strlen(info->stage);
        rs->status = info->status;

        if (i != NGX_HTTP_GUARD_OK
            && ngx_http_guard_problem_build(rs, info, log) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    built = 1;

    return NGX_OK;
}


static ngx_int_t
ngx_http_guard_problem_build(ngx_http_guard_reason_t *rs,
    const gd_reason_t *info, ngx_log_t *log)
{
    char    *text;
    size_t   len;
    u_char   zero[NGX_HTTP_GUARD_ID_LEN], *p;
    json_t  *doc;

    /* the body as it was packed per refusal, with a zero decision id */

    ngx_memset(zero, '0', NGX_HTTP_GUARD_ID_LEN);

    doc = json_pack("{s:s, s:s, s:i, s:s, s:s, s:s#}",
                    "type", info->type,
                    "title", info->title,
                    "status", info->status,
                    "detail", info->detail,
                    "reason", info->name,
                    "decision_id", (char *) zero,
                    (int) NGX_HTTP_GUARD_ID_LEN);
    if (doc == NULL) {
        return NGX_ERROR;
    }

    text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(doc);

    if (text == NULL) {
        return NGX_ERROR;
    }

    len = ngx_strlen(text);

    rs->body.data = ngx_alloc(len + 1, log);
    if (rs->body.data == NULL) {
        free(text);
        return NGX_ERROR;
    }

    p = ngx_cpymem(rs->body.data, text, len);
    *p++ = LF;
    rs->body.len = p - rs->body.data;
    free(text);

    /* the decision id is the last member: filled in per refusal */

    if (rs->body.len < NGX_HTTP_GUARD_PROBLEM_TAIL + NGX_HTTP_GUARD_ID_LEN
        || ngx_strncmp(p - NGX_HTTP_GUARD_PROBLEM_TAIL - NGX_HTTP_GUARD_ID_LEN,
                       zero, NGX_HTTP_GUARD_ID_LEN)
           != 0)
    {
        ngx_log_error(NGX_LOG_EMERG, log, 0,
                      "guard: the problem body of \"%V\" does not end "
                      "with its decision id", &rs->name);
        return NGX_ERROR;
    }

    if (info->status != NGX_HTTP_UNAUTHORIZED) {
        return NGX_OK;
    }

    len = sizeof("Bearer realm=\"guard\"") - 1;

    if (info->bearer_error) {
        len += sizeof(", error=\"\", error_description=\"\"") - 1
               + ngx_strlen(info->bearer_error) + ngx_strlen(info->detail);
    }

    p = ngx_alloc(len, log);
    if (p == NULL) {
        return NGX_ERROR;
    }

    rs->www_authenticate.data = p;
    p = ngx_cpymem(p, "Bearer realm=\"guard\"",
                   sizeof("Bearer realm=\"guard\"") - 1);

    if (info->bearer_error) {
        p = ngx_sprintf(p, ", error=\"%s\", error_description=\"%s\"",
                        info->bearer_error, info->detail);
    }

    rs->www_authenticate.len = p - rs->www_authenticate.data;

    return NGX_OK;
}


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
    if (rs->www_authenticate.len == 0) {
        return NGX_OK;
    }

    if (ngx_http_guard_add_header(r, "WWW-Authenticate",
                                  &rs->www_authenticate)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    r->headers_out.www_authenticate = r->headers_out.headers.last->elts;
    r->headers_out.www_authenticate += r->headers_out.headers.last->nelts - 1;

    return NGX_OK;
}


/*
 * Retry-After: 1, for the refusals that soon pass (concurrency, sidecar);
 * for circuit_open, the seconds until the breaker half-opens
 */

static ngx_int_t
ngx_http_guard_retry_after(ngx_http_request_t *r,
    ngx_http_guard_reason_e reason)
{
    ngx_str_t              value;
    ngx_http_guard_ctx_t  *ctx;

    if (reason == NGX_HTTP_GUARD_CIRCUIT_OPEN) {
        ctx = ngx_http_guard_get_ctx(r);

        value.data = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
        if (ctx == NULL || value.data == NULL) {
            return NGX_ERROR;
        }

        value.len = ngx_sprintf(value.data, "%T",
                                ngx_max(ctx->breaker_retry, 1))
                    - value.data;

        return ngx_http_guard_add_header(r, "Retry-After", &value);
    }

    if (reason != NGX_HTTP_GUARD_CONCURRENCY_LIMITED
        && reason != NGX_HTTP_GUARD_SIDECAR_UNAVAILABLE)
    {
        return NGX_OK;
    }

    return ngx_http_guard_add_header(r, "Retry-After",
                                     &ngx_http_guard_retry_soon);
}


/*
 * A whole response of a content handler (guard_status, guard_health):
 * status, Content-Type and the one buffer b as the body
 */

ngx_int_t
ngx_http_guard_send_buf(ngx_http_request_t *r, ngx_uint_t status,
    char *type, ngx_buf_t *b)
{
    ngx_int_t    rc;
    ngx_chain_t  out;

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;
    r->headers_out.content_type.data = (u_char *) type;
    r->headers_out.content_type.len = ngx_strlen(type);
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
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
 * before it is cut (gd_audit_text_value), so that no part of a secret
 * across the cut is kept; shorter text is masked with the whole record
 * (and again by guardd).
 */

ngx_int_t
ngx_http_guard_json_set_text(json_t *doc, const char *key, u_char *data,
    size_t len, size_t max)
{
    json_t  *v, *cut;

    v = ngx_http_guard_json_text(data, len);

    if (v == NULL) {
        return NGX_ERROR;
    }

    if (json_string_length(v) > max) {
        cut = gd_audit_text_value(key, json_string_value(v),
                                  json_string_length(v), max);
        json_decref(v);

        if (cut == NULL) {
            return NGX_ERROR;
        }

        v = cut;
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


/* the reason's body, built at configuration time, with the decision id */

static ngx_int_t
ngx_http_guard_problem_body(ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx,
    ngx_http_guard_reason_t *rs, ngx_buf_t **out)
{
    ngx_buf_t  *b;

    b = ngx_create_temp_buf(r->pool, rs->body.len);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->last = ngx_cpymem(b->last, rs->body.data, rs->body.len);

    ngx_memcpy(b->last - NGX_HTTP_GUARD_PROBLEM_TAIL - NGX_HTTP_GUARD_ID_LEN,
               ctx->decision_id, NGX_HTTP_GUARD_ID_LEN);

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

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

    ngx_http_guard_metrics_count(r, ctx, reason, 0);

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
