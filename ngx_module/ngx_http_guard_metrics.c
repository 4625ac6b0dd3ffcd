
/*
 * Copyright (C) Guard authors
 *
 * Metrics.  Every decision is counted: allowed, refused per reason, and
 * shadow refusals per reason (a control in shadow mode that would have
 * refused).  "guard_status;" in a location answers with the counts as
 * JSON, like stub_status does for connections; protect it as you would
 * stub_status.
 */


#include "ngx_http_guard_metrics.h"
#include "ngx_http_guard_problem.h"
#include "ngx_http_guard_policy.h"
#include "ngx_http_guard_zone.h"
#include "ngx_http_guard_audit.h"


static ngx_int_t ngx_http_guard_status_handler(ngx_http_request_t *r);


void
ngx_http_guard_metrics_count(ngx_http_request_t *r,
    ngx_http_guard_reason_e reason, ngx_uint_t shadow)
{
    ngx_http_guard_zone_t  *zone;

    zone = ngx_http_guard_zone_get(r);

    if (zone == NULL || reason >= NGX_HTTP_GUARD_REASON_LAST) {
        return;
    }

    if (reason == NGX_HTTP_GUARD_OK) {
        (void) ngx_atomic_fetch_add(&zone->sh->metrics.allowed, 1);

    } else if (shadow) {
        (void) ngx_atomic_fetch_add(&zone->sh->metrics.shadow[reason], 1);

    } else {
        (void) ngx_atomic_fetch_add(&zone->sh->metrics.refused[reason], 1);
    }
}


char *
ngx_http_guard_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_guard_status_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_guard_status_handler(ngx_http_request_t *r)
{
    json_t                      *doc, *refused, *shadow, *audit;
    ngx_int_t                    rc;
    ngx_str_t                   *name;
    ngx_buf_t                   *b;
    ngx_uint_t                   i;
    ngx_chain_t                  out;
    ngx_http_guard_zone_t       *zone;
    ngx_http_guard_main_conf_t  *gmcf;

    if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    zone = ngx_http_guard_zone_get(r);
    gmcf = ngx_http_get_module_main_conf(r, ngx_http_guard_module);

    doc = json_object();
    refused = json_object();
    shadow = json_object();

    if (doc == NULL || refused == NULL || shadow == NULL) {
        goto failed;
    }

    json_object_set_new(doc, "policy_version",
                        gmcf->policies
                        ? json_stringn((char *) gmcf->policies->version.data,
                                       gmcf->policies->version.len)
                        : json_null());

    json_object_set_new(doc, "allowed",
                        json_integer(zone ? zone->sh->metrics.allowed : 0));

    for (i = NGX_HTTP_GUARD_OK + 1; zone && i < NGX_HTTP_GUARD_REASON_LAST;
         i++)
    {
        name = ngx_http_guard_reason_name(i);

        if (zone->sh->metrics.refused[i]) {
            json_object_setn_new(refused, (char *) name->data, name->len,
                        json_integer(zone->sh->metrics.refused[i]));
        }

        if (zone->sh->metrics.shadow[i]) {
            json_object_setn_new(shadow, (char *) name->data, name->len,
                        json_integer(zone->sh->metrics.shadow[i]));
        }
    }

    json_object_set(doc, "refused", refused);
    json_object_set(doc, "shadow", shadow);

    audit = ngx_http_guard_audit_stats(r);

    if (audit) {
        json_object_set_new(doc, "audit", audit);
    }

    b = ngx_http_guard_json_buf(r, doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);

    json_decref(doc);
    json_decref(refused);
    json_decref(shadow);

    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);

failed:

    json_decref(doc);
    json_decref(refused);
    json_decref(shadow);

    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}
