
/*
 * Copyright (C) Guard authors
 *
 * The guardrails stage (docs/guardrails.md, docs/request-path.md): the
 * tenant's guardrails, or _default's, applied by the shared engine
 * (gd_gr_eval(), gd_guardrails.h) to the request: its path, arguments,
 * headers and, when a rule looks at it, its body.
 *
 * The body is read without blocking: ngx_http_read_client_request_body()
 * with a post handler; the stage waits (NGX_AGAIN) and the post handler
 * runs the phases again, which call this stage again.  A body nginx put
 * in a temporary file is read back into memory (it is at most
 * guard_body_max).  A gzip or deflate body is inflated, up to
 * guard_body_max and the section's max_ratio.
 *
 * Redactions change what goes upstream: the body (one memory buffer in
 * place of the body's buffers, Content-Length set, Content-Encoding then
 * "identity"), the changed headers' values and the query string.  The
 * upstream never sees the original; neither do the records, the logs or
 * the variables, which name rules, never matched text.
 */


#include <zlib.h>

#include "ngx_http_guard_guardrails.h"
#include "ngx_http_guard_ctx.h"
#include "ngx_http_guard_policy.h"
#include "ngx_http_guard_problem.h"
#include "ngx_http_guard_metrics.h"

#include "gd_guardrails.h"


typedef enum {
    NGX_HTTP_GUARD_GR_START = 0,
    NGX_HTTP_GUARD_GR_READING,
    NGX_HTTP_GUARD_GR_READ,
    NGX_HTTP_GUARD_GR_DONE
} ngx_http_guard_gr_state_e;


struct ngx_http_guard_gr_s {
    const gd_guardrails_t       *g;
    ngx_http_guard_gr_state_e    state;
    ngx_http_guard_reason_e      reason;      /* the stage's answer */
    ngx_uint_t                   shadow;
    ngx_int_t                    score;       /* -1: not inspected */
    ngx_http_guard_reason_e      body_reason; /* why skipped, in shadow */
    ngx_str_t                    hits;        /* rule ids, comma-separated */
    json_t                      *audit;       /* gd_gr_audit()'s */
    const char                  *outcome;     /* "redact", "log", NULL */
    unsigned                     sync:1;      /* in the read call */
    unsigned                     skipped:1;   /* body over the limit */
    unsigned                     inflated:1;  /* body was encoded */
};


static ngx_int_t ngx_http_guard_gr_read(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx, ngx_http_guard_gr_t *gr);
static void ngx_http_guard_gr_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_guard_gr_body(ngx_http_request_t *r,
    ngx_http_guard_gr_t *gr, ngx_str_t *body);
static ngx_uint_t ngx_http_guard_gr_encoding(ngx_http_request_t *r);
static ngx_int_t ngx_http_guard_gr_inflate(ngx_http_request_t *r,
    ngx_http_guard_gr_t *gr, ngx_str_t *in, ngx_str_t *out, ngx_uint_t raw);
static ngx_int_t ngx_http_guard_gr_eval(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx, ngx_http_guard_gr_t *gr, ngx_str_t *body);
static ngx_int_t ngx_http_guard_gr_record(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx, ngx_http_guard_gr_t *gr, gd_gr_result_t *res);
static ngx_int_t ngx_http_guard_gr_redact(ngx_http_request_t *r,
    gd_gr_result_t *res, ngx_uint_t encoded);
static ngx_int_t ngx_http_guard_gr_done(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx, ngx_http_guard_gr_t *gr,
    ngx_http_guard_reason_e reason, ngx_uint_t shadow,
    ngx_http_guard_gr_verdict_e verdict);
static void ngx_http_guard_gr_count(ngx_http_request_t *r,
    ngx_http_guard_gr_verdict_e verdict, gd_gr_result_t *res);
static void ngx_http_guard_gr_cleanup(void *data);


/* the content encodings inflated */

#define NGX_HTTP_GUARD_GR_IDENTITY  0
#define NGX_HTTP_GUARD_GR_GZIP      1
#define NGX_HTTP_GUARD_GR_DEFLATE   2
#define NGX_HTTP_GUARD_GR_UNKNOWN   3


const char  *ngx_http_guard_gr_verdict_names[] = {
    "pass", "blocked", "anomaly", "malformed", "error", "too_large",
    "skipped"
};


const char  *ngx_http_guard_gr_action_names[] = {
    "block", "redact", "score", "log"
};


/* the worker's scratch: PCRE2 match data, JIT stack, buffers */

static gd_gr_scratch_t  *ngx_http_guard_gr_scratch;


/* the guardrails that apply: the tenant's policy's, else _default's */

static const gd_guardrails_t *
ngx_http_guard_gr_policy(ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx)
{
    ngx_http_guard_policy_t     *gp;
    ngx_http_guard_main_conf_t  *gmcf;

    gp = ctx->policy;

    if (gp == NULL) {
        gmcf = ngx_http_get_module_main_conf(r, ngx_http_guard_module);
        gp = gmcf->policies ? gmcf->policies->fallback : NULL;
    }

    if (gp == NULL || !gp->p->has_guardrails) {
        return NULL;
    }

    return &gp->p->guardrails;
}


ngx_int_t
ngx_http_guard_guardrails(ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx,
    ngx_uint_t *shadow)
{
    ngx_int_t               rc;
    ngx_str_t               body;
    ngx_http_guard_gr_t    *gr;
    const gd_guardrails_t  *g;

    gr = ctx->gr;

    if (gr == NULL) {

        if (!ctx->conf->guardrails) {
            return NGX_HTTP_GUARD_OK;
        }

        g = ngx_http_guard_gr_policy(r, ctx);

        if (g == NULL) {
            return NGX_HTTP_GUARD_OK;
        }

        gr = ngx_pcalloc(r->pool, sizeof(ngx_http_guard_gr_t));
        if (gr == NULL) {
            return NGX_HTTP_GUARD_INTERNAL_ERROR;
        }

        gr->g = g;
        gr->score = -1;
        gr->body_reason = NGX_HTTP_GUARD_BODY_TOO_LARGE;
        ctx->gr = gr;
    }

    switch (gr->state) {

    case NGX_HTTP_GUARD_GR_START:

        rc = ngx_http_guard_gr_read(r, ctx, gr);

        if (rc != NGX_OK) {
            /* NGX_AGAIN: the post handler resumes; or refused */
            return rc;
        }

        break;

    case NGX_HTTP_GUARD_GR_READING:
        /* resumed by something else: the body is still on its way */
        return NGX_AGAIN;

    case NGX_HTTP_GUARD_GR_READ:
        break;

    default: /* NGX_HTTP_GUARD_GR_DONE */
        *shadow = gr->shadow;
        return gr->reason;
    }

    /* the body, if read, as one piece of memory (inflated) */

    ngx_str_null(&body);

    if (gr->state == NGX_HTTP_GUARD_GR_READ && !gr->skipped) {
        rc = ngx_http_guard_gr_body(r, gr, &body);

        if (rc == NGX_ERROR) {
            return ngx_http_guard_gr_done(r, ctx, gr,
                                          NGX_HTTP_GUARD_INTERNAL_ERROR, 0,
                                          NGX_HTTP_GUARD_GR_ERROR);
        }

        if (rc != NGX_OK && gr->g->shadow) {
            /* a shadow section: the rest is inspected, this recorded */
            gr->skipped = 1;
            gr->body_reason = rc;
            ngx_str_null(&body);

        } else if (rc != NGX_OK) {
            /* refused: over the limit, or not to be inflated */
            return ngx_http_guard_gr_done(r, ctx, gr, rc, 0,
                                          rc == NGX_HTTP_GUARD_BODY_TOO_LARGE
                                          ? NGX_HTTP_GUARD_GR_TOO_LARGE
                                          : NGX_HTTP_GUARD_GR_MALFORMED);
        }
    }

    rc = ngx_http_guard_gr_eval(r, ctx, gr, &body);

    *shadow = gr->shadow;

    return rc;
}


/*
 * Starts reading the body, when a rule needs it and there is one.
 * NGX_OK: go on (read at once, or nothing to read); NGX_AGAIN: the post
 * handler resumes the request; else a refusal.
 */

static ngx_int_t
ngx_http_guard_gr_read(ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx,
    ngx_http_guard_gr_t *gr)
{
    off_t                  max;
    ngx_int_t              rc;
    const gd_guardrails_t  *g;

    g = gr->g;
    max = (off_t) ctx->conf->body_max;

    if (!g->needs_body
        || (r->headers_in.content_length_n <= 0 && !r->headers_in.chunked))
    {
        /* no rule looks at the body, or there is none (a GET) */
        gr->state = NGX_HTTP_GUARD_GR_DONE;
        return NGX_OK;
    }

    if (r->headers_in.content_length_n > max) {

        if (g->body_over == GD_GR_BODY_REFUSE && !g->shadow) {
            return ngx_http_guard_gr_done(r, ctx, gr,
                                          NGX_HTTP_GUARD_BODY_TOO_LARGE, 0,
                                          NGX_HTTP_GUARD_GR_TOO_LARGE);
        }

        /* not read here: the upstream module reads it as usual */
        gr->skipped = 1;
        gr->state = NGX_HTTP_GUARD_GR_DONE;
        return NGX_OK;
    }

    /* one buffer when the body fits in client_body_buffer_size */
    r->request_body_in_single_buf = 1;

    gr->state = NGX_HTTP_GUARD_GR_READING;
    gr->sync = 1;

    rc = ngx_http_read_client_request_body(r, ngx_http_guard_gr_body_handler);

    gr->sync = 0;

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {

        /*
         * nginx refused the body at once (its count was given back):
         * client_max_body_size, a malformed chunked body
         */

        gr->state = NGX_HTTP_GUARD_GR_DONE;

        return ngx_http_guard_gr_done(r, ctx, gr,
                   rc == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE
                   ? NGX_HTTP_GUARD_BODY_TOO_LARGE
                   : rc == NGX_HTTP_BAD_REQUEST
                   ? NGX_HTTP_GUARD_BODY_MALFORMED
                   : NGX_HTTP_GUARD_INTERNAL_ERROR, 0,
                   rc == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE
                   ? NGX_HTTP_GUARD_GR_TOO_LARGE
                   : NGX_HTTP_GUARD_GR_MALFORMED);
    }

    /* the reference ngx_http_read_client_request_body() took */
    ngx_http_finalize_request(r, NGX_DONE);

    if (gr->state == NGX_HTTP_GUARD_GR_READING) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "guard guardrails: waiting for the body");
        return NGX_AGAIN;
    }

    return NGX_OK;
}


/* the whole body is read: at once (in the call), or later */

static void
ngx_http_guard_gr_body_handler(ngx_http_request_t *r)
{
    ngx_http_guard_ctx_t  *ctx;

    ctx = ngx_http_guard_get_ctx(r);

    if (ctx == NULL || ctx->gr == NULL
        || ctx->gr->state != NGX_HTTP_GUARD_GR_READING)
    {
        return;
    }

    ctx->gr->state = NGX_HTTP_GUARD_GR_READ;

    if (ctx->gr->sync) {
        return;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "guard guardrails: body read, resuming");

    /* back to the access phase, at this stage */
    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}


/*
 * The body read, as one piece of memory, inflated.  NGX_OK, NGX_ERROR,
 * or a refusal; over the limit with body_over "skip", NGX_OK and no body
 * (gr->skipped).
 */

static ngx_int_t
ngx_http_guard_gr_body(ngx_http_request_t *r, ngx_http_guard_gr_t *gr,
    ngx_str_t *body)
{
    off_t                       size, max;
    u_char                     *p;
    ssize_t                     n;
    ngx_buf_t                  *b;
    ngx_str_t                   raw;
    ngx_uint_t                  encoding;
    ngx_chain_t                *cl;
    ngx_http_request_body_t    *rb;
    ngx_http_guard_loc_conf_t  *glcf;

    glcf = ngx_http_get_module_loc_conf(r, ngx_http_guard_module);
    max = (off_t) glcf->body_max;

    rb = r->request_body;

    ngx_str_null(body);

    if (rb == NULL || rb->bufs == NULL) {
        return NGX_OK;
    }

    size = 0;

    for (cl = rb->bufs; cl; cl = cl->next) {
        size += ngx_buf_size(cl->buf);
    }

    if (size == 0) {
        return NGX_OK;
    }

    if (size > max) {
        /* a chunked body, counted as received */

        if (gr->g->body_over == GD_GR_BODY_REFUSE) {
            return NGX_HTTP_GUARD_BODY_TOO_LARGE;
        }

        gr->skipped = 1;
        return NGX_OK;
    }

    /* one buffer in memory: as it is; else copied, files read back */

    b = rb->bufs->buf;

    if (rb->bufs->next == NULL && !b->in_file) {
        raw.data = b->pos;
        raw.len = b->last - b->pos;

    } else {
        raw.data = ngx_pnalloc(r->pool, (size_t) size);
        if (raw.data == NULL) {
            return NGX_ERROR;
        }

        p = raw.data;

        for (cl = rb->bufs; cl; cl = cl->next) {
            b = cl->buf;

            if (!b->in_file) {
                if (b->last > b->pos) {
                    p = ngx_cpymem(p, b->pos, b->last - b->pos);
                }

                continue;
            }

            n = ngx_read_file(b->file, p, (size_t) (b->file_last
                                                    - b->file_pos),
                              b->file_pos);

            if (n != b->file_last - b->file_pos) {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "guard guardrails: cannot read the body "
                              "back from \"%V\"", &b->file->name);
                return NGX_ERROR;
            }

            p += n;
        }

        raw.len = p - raw.data;
    }

    /* Content-Encoding */

    encoding = ngx_http_guard_gr_encoding(r);

    if (encoding == NGX_HTTP_GUARD_GR_IDENTITY) {
        *body = raw;
        return NGX_OK;
    }

    if (encoding == NGX_HTTP_GUARD_GR_UNKNOWN
        || gr->g->encoded == GD_GR_ENCODED_REFUSE)
    {
        /* a body that cannot, or may not, be inspected */
        return NGX_HTTP_GUARD_BODY_MALFORMED;
    }

    gr->inflated = 1;

    return ngx_http_guard_gr_inflate(r, gr, &raw, body,
                                     encoding == NGX_HTTP_GUARD_GR_DEFLATE);
}


/*
 * The body's Content-Encoding: identity (none), gzip, deflate, or
 * unknown: another coding, a list of codings, or the header twice (the
 * upstream would see what Guard did not).
 */

static ngx_uint_t
ngx_http_guard_gr_encoding(ngx_http_request_t *r)
{
    ngx_str_t        *enc;
    ngx_uint_t        i, encoding, seen;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    encoding = NGX_HTTP_GUARD_GR_IDENTITY;
    seen = 0;

    for (part = &r->headers_in.headers.part; part; part = part->next) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++) {

            if (h[i].key.len != sizeof("Content-Encoding") - 1
                || ngx_strncasecmp(h[i].key.data,
                                   (u_char *) "Content-Encoding",
                                   sizeof("Content-Encoding") - 1)
                   != 0)
            {
                continue;
            }

            if (seen++) {
                return NGX_HTTP_GUARD_GR_UNKNOWN;
            }

            enc = &h[i].value;

            if ((enc->len == 4
                 && ngx_strncasecmp(enc->data, (u_char *) "gzip", 4) == 0)
                || (enc->len == 6
                    && ngx_strncasecmp(enc->data, (u_char *) "x-gzip", 6)
                       == 0))
            {
                encoding = NGX_HTTP_GUARD_GR_GZIP;

            } else if (enc->len == 7
                       && ngx_strncasecmp(enc->data, (u_char *) "deflate", 7)
                          == 0)
            {
                encoding = NGX_HTTP_GUARD_GR_DEFLATE;

            } else if (!(enc->len == 8
                         && ngx_strncasecmp(enc->data,
                                            (u_char *) "identity", 8)
                            == 0))
            {
                encoding = NGX_HTTP_GUARD_GR_UNKNOWN;
            }
        }
    }

    return encoding;
}


/*
 * Inflates in (gzip or zlib, told apart by zlib; a "deflate" that is not
 * zlib is tried as raw deflate) up to guard_body_max and max_ratio times
 * its size.  Over guard_body_max: body_too_large (or skipped, per
 * body_over); over the ratio, or not inflatable: body_malformed.  Every
 * member of a multi-member gzip body is inflated; other bytes after the
 * end of the stream are body_malformed (they would go upstream unseen).
 */

static ngx_int_t
ngx_http_guard_gr_inflate(ngx_http_request_t *r, ngx_http_guard_gr_t *gr,
    ngx_str_t *in, ngx_str_t *out, ngx_uint_t deflate)
{
    int                         rc, tries;
    size_t                      max, cap, ratio_cap, size;
    u_char                     *buf, *nbuf;
    z_stream                    zs;
    ngx_uint_t                  over_ratio;
    ngx_http_guard_loc_conf_t  *glcf;

    glcf = ngx_http_get_module_loc_conf(r, ngx_http_guard_module);
    max = glcf->body_max;

    ratio_cap = (size_t) -1;

    if (gr->g->max_ratio && in->len <= ((size_t) -1) / gr->g->max_ratio) {
        ratio_cap = in->len * gr->g->max_ratio;
    }

    for (tries = 0; tries < 2; tries++) {

        ngx_memzero(&zs, sizeof(z_stream));

        /* 15 + 32: gzip or zlib, by the header; -15: raw deflate */

        if (inflateInit2(&zs, tries == 0 ? 15 + 32 : -15) != Z_OK) {
            return NGX_ERROR;
        }

        cap = ngx_min(max, ratio_cap);
        cap = ngx_min(cap, in->len * 4 + 4096) + 1;

        buf = ngx_pnalloc(r->pool, cap);
        if (buf == NULL) {
            inflateEnd(&zs);
            return NGX_ERROR;
        }

        zs.next_in = in->data;
        zs.avail_in = (uInt) in->len;
        size = 0;
        over_ratio = 0;

        for ( ;; ) {
            zs.next_out = buf + size;
            zs.avail_out = (uInt) (cap - size);

            rc = inflate(&zs, Z_NO_FLUSH);
            size = cap - zs.avail_out;

            if (rc == Z_STREAM_END && zs.avail_in
                && (zs.avail_in < 2 || zs.next_in[0] != 0x1f
                    || zs.next_in[1] != 0x8b))
            {
                /* bytes after the stream: not inspected, so refused */
                rc = Z_DATA_ERROR;
                break;
            }

            if (rc == Z_STREAM_END && zs.avail_in) {
                /* another gzip member: inflated too */
                if (inflateReset(&zs) != Z_OK) {
                    rc = Z_DATA_ERROR;
                    break;
                }

                rc = Z_OK;

            } else if (rc == Z_STREAM_END) {
                break;
            }

            if (rc != Z_OK && rc != Z_BUF_ERROR) {
                break;
            }

            if (size > max || size > ratio_cap) {
                over_ratio = (size > ratio_cap);
                break;
            }

            if (zs.avail_out == 0) {
                /* grow, up to one byte past a limit */

                if (cap > max || cap > ratio_cap) {
                    over_ratio = (cap > ratio_cap);
                    size = cap;
                    break;
                }

                cap = ngx_min(cap * 2, ngx_min(max, ratio_cap) + 1);

                nbuf = ngx_pnalloc(r->pool, cap);
                if (nbuf == NULL) {
                    inflateEnd(&zs);
                    return NGX_ERROR;
                }

                ngx_memcpy(nbuf, buf, size);
                buf = nbuf;
                continue;
            }

            if (zs.avail_in == 0 || rc == Z_BUF_ERROR) {
                /* the input ends before the stream does */
                rc = Z_DATA_ERROR;
                break;
            }
        }

        inflateEnd(&zs);

        if (rc == Z_STREAM_END && size <= max && size <= ratio_cap) {
            out->data = buf;
            out->len = size;
            return NGX_OK;
        }

        if (size > max || size > ratio_cap) {

            if (over_ratio || size > ratio_cap) {
                ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                               "guard guardrails: body over max_ratio");
                return NGX_HTTP_GUARD_BODY_MALFORMED;
            }

            if (gr->g->body_over == GD_GR_BODY_REFUSE) {
                return NGX_HTTP_GUARD_BODY_TOO_LARGE;
            }

            gr->skipped = 1;
            ngx_str_null(out);
            return NGX_OK;
        }

        if (!deflate || tries == 1 || size != 0) {
            break;
        }

        /* "deflate" without the zlib wrapper: raw deflate */
    }

    return NGX_HTTP_GUARD_BODY_MALFORMED;
}


/* the engine's verdict on the request, and the redactions applied */

static ngx_int_t
ngx_http_guard_gr_eval(ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx,
    ngx_http_guard_gr_t *gr, ngx_str_t *body)
{
    u_char                  *q;
    ngx_uint_t               i, n, shadow;
    ngx_list_part_t         *part;
    ngx_table_elt_t         *h;
    gd_gr_header_t          *headers;
    gd_gr_result_t           res;
    gd_gr_request_t          req;
    ngx_http_guard_reason_e  reason, shadow_reason;
    ngx_http_guard_gr_verdict_e  verdict;

    static const ngx_http_guard_reason_e  reasons[] = {
        NGX_HTTP_GUARD_OK,
        NGX_HTTP_GUARD_GUARDRAIL_BLOCKED,
        NGX_HTTP_GUARD_GUARDRAIL_ANOMALY,
        NGX_HTTP_GUARD_BODY_MALFORMED,
        NGX_HTTP_GUARD_GUARDRAIL_ERROR
    };

    if (ngx_http_guard_gr_scratch == NULL) {
        /* no scratch (out of memory when the worker started) */
        return ngx_http_guard_gr_done(r, ctx, gr,
                                      NGX_HTTP_GUARD_GUARDRAIL_ERROR,
                                      gr->g->on_error == GD_GR_FAIL_OPEN,
                                      NGX_HTTP_GUARD_GR_ERROR);
    }

    ngx_memzero(&req, sizeof(gd_gr_request_t));

    /* the path as received: the request line's, before '?' */

    req.uri = (const char *) r->unparsed_uri.data;
    req.uri_len = r->unparsed_uri.len;

    q = ngx_strlchr(r->unparsed_uri.data,
                    r->unparsed_uri.data + r->unparsed_uri.len, '?');

    if (q) {
        req.uri_len = q - r->unparsed_uri.data;
    }

    req.args = (const char *) r->args.data;
    req.args_len = r->args.len;

    n = 0;
    part = &r->headers_in.headers.part;

    while (part) {
        n += part->nelts;
        part = part->next;
    }

    headers = ngx_palloc(r->pool, (n ? n : 1) * sizeof(gd_gr_header_t));
    if (headers == NULL) {
        return NGX_HTTP_GUARD_INTERNAL_ERROR;
    }

    n = 0;

    for (part = &r->headers_in.headers.part; part; part = part->next) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++) {
            headers[n].name = (const char *) h[i].key.data;
            headers[n].name_len = h[i].key.len;
            headers[n].value = (const char *) h[i].value.data;
            headers[n].value_len = h[i].value.len;
            n++;
        }
    }

    req.headers = headers;
    req.nheaders = n;

    if (r->headers_in.content_type) {
        req.content_type = (const char *)
                               r->headers_in.content_type->value.data;
        req.content_type_len = r->headers_in.content_type->value.len;
    }

    if (gr->state == NGX_HTTP_GUARD_GR_READ && !gr->skipped) {
        /* a read body, maybe empty: never NULL then */
        req.body = body->data ? (const char *) body->data : "";
        req.body_len = body->len;
    }

    req.body_skipped = gr->skipped;

    (void) gd_gr_eval(gr->g, &req, ngx_http_guard_gr_scratch, &res);

    /* what the result says is copied: it lives in the scratch */

    if (ngx_http_guard_gr_record(r, ctx, gr, &res) != NGX_OK) {
        return ngx_http_guard_gr_done(r, ctx, gr,
                                      NGX_HTTP_GUARD_INTERNAL_ERROR, 0,
                                      NGX_HTTP_GUARD_GR_ERROR);
    }

    verdict = (ngx_http_guard_gr_verdict_e) res.verdict;
    reason = reasons[res.verdict];
    shadow_reason = reasons[res.shadow_verdict];
    shadow = 0;

    if (reason == NGX_HTTP_GUARD_OK) {

        /* what passes is redacted before it goes upstream */

        if (ngx_http_guard_gr_redact(r, &res, gr->inflated) != NGX_OK)
        {
            return ngx_http_guard_gr_done(r, ctx, gr,
                                          NGX_HTTP_GUARD_INTERNAL_ERROR, 0,
                                          NGX_HTTP_GUARD_GR_ERROR);
        }

        if (shadow_reason != NGX_HTTP_GUARD_OK) {
            /* refused in shadow only: recorded, the request goes on */
            reason = shadow_reason;
            shadow = 1;

        } else if (gr->skipped) {
            /* never a silent skip: the body was not inspected */
            reason = gr->body_reason;
            shadow = 1;
            verdict = NGX_HTTP_GUARD_GR_SKIPPED;
        }

    } else if (gr->skipped && ctx->shadow_reason == NGX_HTTP_GUARD_OK) {
        /* refused for what was inspected; the skip is still told */
        ctx->shadow_reason = gr->body_reason;
    }

    ngx_http_guard_gr_count(r, verdict, &res);

    return ngx_http_guard_gr_done(r, ctx, gr, reason, shadow, verdict);
}


/* the result's score, hit rule ids and audit member, kept */

static ngx_int_t
ngx_http_guard_gr_record(ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx,
    ngx_http_guard_gr_t *gr, gd_gr_result_t *res)
{
    size_t               len, l;
    u_char              *p;
    ngx_uint_t           i, j, dup, redact, log;
    ngx_pool_cleanup_t  *cln;
    const gd_gr_rule_t  *rule;

    gr->score = res->score;

    len = 0;
    redact = 0;
    log = 0;

    for (i = 0; i < res->nhits; i++) {
        len += ngx_strlen(res->hits[i].rule->id) + 1;

        if (!res->hits[i].shadow) {
            if (res->hits[i].rule->action == GD_GR_REDACT) {
                redact = 1;

            } else if (res->hits[i].rule->action == GD_GR_LOG) {
                log = 1;
            }
        }
    }

    gr->outcome = redact ? "redact" : log ? "log" : NULL;

    if (gr->outcome && ngx_http_guard_decision_id(r, ctx) == NULL) {
        /* its record needs an id */
        return NGX_ERROR;
    }

    if (len) {
        p = ngx_pnalloc(r->pool, len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        gr->hits.data = p;

        for (i = 0; i < res->nhits; i++) {
            rule = res->hits[i].rule;

            for (dup = 0, j = 0; j < i; j++) {
                if (res->hits[j].rule == rule) {
                    dup = 1;
                    break;
                }
            }

            if (dup) {
                continue;
            }

            if (p != gr->hits.data) {
                *p++ = ',';
            }

            l = ngx_strlen(rule->id);
            p = ngx_cpymem(p, rule->id, l);
        }

        gr->hits.len = p - gr->hits.data;
    }

    if (res->nhits == 0 && res->verdict == GD_GR_PASS
        && res->shadow_verdict == GD_GR_PASS && !gr->skipped)
    {
        /* nothing to tell */
        return NGX_OK;
    }

    gr->audit = gd_gr_audit(gr->g, res);

    if (gr->audit == NULL) {
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        json_decref(gr->audit);
        gr->audit = NULL;
        return NGX_ERROR;
    }

    cln->handler = ngx_http_guard_gr_cleanup;
    cln->data = gr->audit;

    return NGX_OK;
}


static void
ngx_http_guard_gr_cleanup(void *data)
{
    json_decref(data);
}


/*
 * The redactions, on what goes upstream: the body (encoded: the body
 * inspected was inflated; the redacted one goes uncompressed, its
 * Content-Encoding then "identity"), the changed headers, the query.
 */

static ngx_int_t
ngx_http_guard_gr_redact(ngx_http_request_t *r, gd_gr_result_t *res,
    ngx_uint_t encoded)
{
    u_char                   *p;
    ngx_buf_t                *b;
    ngx_uint_t                i, j, k, n;
    ngx_chain_t              *cl;
    ngx_list_part_t          *part;
    ngx_table_elt_t          *h, *ce, **done;
    ngx_http_request_body_t  *rb;

    if (res->body && r->request_body) {
        rb = r->request_body;

        b = ngx_create_temp_buf(r->pool, res->body_len ? res->body_len : 1);
        if (b == NULL) {
            return NGX_ERROR;
        }

        b->last = ngx_cpymem(b->pos, res->body, res->body_len);
        b->last_buf = 1;

        cl = ngx_alloc_chain_link(r->pool);
        if (cl == NULL) {
            return NGX_ERROR;
        }

        cl->buf = b;
        cl->next = NULL;

        rb->bufs = cl;
        rb->buf = b;

        r->headers_in.content_length_n = res->body_len;

        /* the header too: some upstream modules pass it as it is */

        p = ngx_pnalloc(r->pool, NGX_OFF_T_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        if (r->headers_in.content_length) {
            r->headers_in.content_length->value.data = p;
            r->headers_in.content_length->value.len =
                               ngx_sprintf(p, "%O", (off_t) res->body_len) - p;
        }

        if (encoded) {
            ce = ngx_http_guard_request_header(r,
                                      (u_char *) "Content-Encoding",
                                      sizeof("Content-Encoding") - 1);
            if (ce) {
                ngx_str_set(&ce->value, "identity");
            }
        }

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "guard guardrails: body redacted, %uz bytes",
                       res->body_len);
    }

    if (res->args) {
        p = ngx_pnalloc(r->pool, res->args_len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(p, res->args, res->args_len);

        r->args.data = p;
        r->args.len = res->args_len;

        /* proxy_pass without a URI then sends the new query */
        r->valid_unparsed_uri = 0;
    }

    if (res->nheaders == 0) {
        return NGX_OK;
    }

    /* each changed header, in order: the next entry of its name */

    done = ngx_pcalloc(r->pool, res->nheaders * sizeof(ngx_table_elt_t *));
    if (done == NULL) {
        return NGX_ERROR;
    }

    for (k = 0; k < res->nheaders; k++) {

        n = 0;

        for (part = &r->headers_in.headers.part; part; part = part->next) {
            h = part->elts;

            for (i = 0; i < part->nelts; i++) {

                if (h[i].key.len != res->headers[k].name_len
                    || ngx_strncasecmp(h[i].key.data,
                                       (u_char *) res->headers[k].name,
                                       h[i].key.len)
                       != 0)
                {
                    continue;
                }

                for (j = 0; j < k; j++) {
                    if (done[j] == &h[i]) {
                        break;
                    }
                }

                if (j < k) {
                    continue;
                }

                p = ngx_pnalloc(r->pool, res->headers[k].value_len + 1);
                if (p == NULL) {
                    return NGX_ERROR;
                }

                ngx_memcpy(p, res->headers[k].value,
                           res->headers[k].value_len);
                p[res->headers[k].value_len] = '\0';

                h[i].value.data = p;
                h[i].value.len = res->headers[k].value_len;
                done[k] = &h[i];
                n = 1;
                break;
            }

            if (n) {
                break;
            }
        }
    }

    return NGX_OK;
}


/* the stage's answer, kept for a request that comes back to it */

static ngx_int_t
ngx_http_guard_gr_done(ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx,
    ngx_http_guard_gr_t *gr, ngx_http_guard_reason_e reason,
    ngx_uint_t shadow, ngx_http_guard_gr_verdict_e verdict)
{
    gr->state = NGX_HTTP_GUARD_GR_DONE;
    gr->reason = reason;
    gr->shadow = shadow;

    if (verdict == NGX_HTTP_GUARD_GR_TOO_LARGE
        || (verdict == NGX_HTTP_GUARD_GR_MALFORMED && gr->score < 0)
        || (verdict == NGX_HTTP_GUARD_GR_ERROR && gr->score < 0))
    {
        /* refused before the engine ran: counted here */
        ngx_http_guard_gr_count(r, verdict, NULL);
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "guard guardrails: %s, reason %d, shadow %ui",
                   ngx_http_guard_gr_verdict_names[verdict], (int) reason,
                   shadow);

    return reason;
}


static void
ngx_http_guard_gr_count(ngx_http_request_t *r,
    ngx_http_guard_gr_verdict_e verdict, gd_gr_result_t *res)
{
    ngx_uint_t                    i;
    ngx_http_guard_metrics_sh_t  *m;

    m = ngx_http_guard_metrics_get(r);

    if (m == NULL) {
        return;
    }

    (void) ngx_atomic_fetch_add(&m->guardrails_verdicts[verdict], 1);

    if (res == NULL) {
        return;
    }

    for (i = 0; i < res->nhits; i++) {
        (void) ngx_atomic_fetch_add(
                         &m->guardrails_hits[res->hits[i].rule->action
                                             & 3], 1);
    }
}


ngx_int_t
ngx_http_guard_guardrails_score(ngx_http_guard_ctx_t *ctx)
{
    return ctx->gr ? ctx->gr->score : -1;
}


json_t *
ngx_http_guard_guardrails_audit(ngx_http_guard_ctx_t *ctx)
{
    return ctx->gr ? ctx->gr->audit : NULL;
}


const char *
ngx_http_guard_guardrails_outcome(ngx_http_guard_ctx_t *ctx)
{
    return ctx->gr ? ctx->gr->outcome : NULL;
}


/* the rule ids of the hits, comma-separated; empty when none */

ngx_str_t
ngx_http_guard_guardrails_hits(ngx_http_guard_ctx_t *ctx)
{
    ngx_str_t  none = ngx_null_string;

    return ctx->gr ? ctx->gr->hits : none;
}


ngx_int_t
ngx_http_guard_guardrails_init_process(ngx_cycle_t *cycle)
{
    /* one per worker; without it, a request fails as on_error says */

    ngx_http_guard_gr_scratch = gd_gr_scratch_new();

    if (ngx_http_guard_gr_scratch == NULL) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "guard guardrails: no memory for the scratch");
    }

    return NGX_OK;
}


void
ngx_http_guard_guardrails_exit_process(ngx_cycle_t *cycle)
{
    if (ngx_http_guard_gr_scratch) {
        gd_gr_scratch_free(ngx_http_guard_gr_scratch);
        ngx_http_guard_gr_scratch = NULL;
    }
}
