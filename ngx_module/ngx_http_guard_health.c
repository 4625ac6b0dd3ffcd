
/*
 * Copyright (C) Guard authors
 *
 * Readiness.  "guard_health;" in a location answers GET and HEAD with
 * 200 when Guard can do its job and 503 when it cannot, and a JSON body
 * with each check it ran:
 *
 *     {"status": "ok", "policy_version": "...", "failed": [],
 *      "warnings": [], "checks": {"sidecar": {"ok": true, ...}, ...}}
 *
 * The checks are the rows of one table.  Each has a mode, per location
 * ("guard_health_check NAME on|warn|off"): "on" fails the answer, "warn"
 * only reports, "off" skips the check.  Nothing here blocks or waits:
 * the sidecar check reads this worker's connections to guardd, the
 * backlog the audit ring's counts, the spill check one access(2) a
 * second at most.
 */


#include "ngx_http_guard_health.h"
#include "ngx_http_guard_audit.h"
#include "ngx_http_guard_breaker.h"
#include "ngx_http_guard_policy.h"
#include "ngx_http_guard_problem.h"
#include "ngx_http_guard_sidecar.h"

#include "gd_policy.h"


#define NGX_HTTP_GUARD_HEALTH_OFF      0
#define NGX_HTTP_GUARD_HEALTH_ON       1
#define NGX_HTTP_GUARD_HEALTH_WARN     2
/* the sidecar's default: "on" when a location fails closed without it */
#define NGX_HTTP_GUARD_HEALTH_AUTO     3

#define NGX_HTTP_GUARD_HEALTH_BACKLOG  90     /* percent */
#define NGX_HTTP_GUARD_HEALTH_DETAIL   256


/* a check: says ok or not, and fills its object with what it saw */

typedef ngx_uint_t (*ngx_http_guard_health_pt)(ngx_http_request_t *r,
    ngx_http_guard_health_conf_t *hc, json_t *out);


typedef struct {
    ngx_str_t                    name;
    ngx_uint_t                   mode;        /* the default */
    ngx_http_guard_health_pt     check;
} ngx_http_guard_health_row_t;


static ngx_int_t ngx_http_guard_health_handler(ngx_http_request_t *r);
static ngx_uint_t ngx_http_guard_health_find(ngx_str_t *name, void *table,
    size_t size);
static json_t *ngx_http_guard_health_run(ngx_http_request_t *r,
    ngx_uint_t *healthy);
static void ngx_http_guard_health_detail(json_t *out, const char *fmt, ...);
static ngx_uint_t ngx_http_guard_health_sidecar(ngx_http_request_t *r,
    ngx_http_guard_health_conf_t *hc, json_t *out);
static ngx_uint_t ngx_http_guard_health_audit_backlog(ngx_http_request_t *r,
    ngx_http_guard_health_conf_t *hc, json_t *out);
static ngx_uint_t ngx_http_guard_health_spill(ngx_http_request_t *r,
    ngx_http_guard_health_conf_t *hc, json_t *out);
static ngx_uint_t ngx_http_guard_health_policy(ngx_http_request_t *r,
    ngx_http_guard_health_conf_t *hc, json_t *out);
static ngx_uint_t ngx_http_guard_health_breakers(ngx_http_request_t *r,
    ngx_http_guard_health_conf_t *hc, json_t *out);


static ngx_http_guard_health_row_t  ngx_http_guard_health_checks[] = {

    { ngx_string("sidecar"), NGX_HTTP_GUARD_HEALTH_AUTO,
      ngx_http_guard_health_sidecar },

    { ngx_string("audit_backlog"), NGX_HTTP_GUARD_HEALTH_ON,
      ngx_http_guard_health_audit_backlog },

    { ngx_string("spill"), NGX_HTTP_GUARD_HEALTH_ON,
      ngx_http_guard_health_spill },

    { ngx_string("policy"), NGX_HTTP_GUARD_HEALTH_ON,
      ngx_http_guard_health_policy },

    /*
     * the open breakers, reported and not failing by default; the
     * breaker stage's ngx_http_guard_breaker_open_list() fills it
     */
    { ngx_string("breakers"), NGX_HTTP_GUARD_HEALTH_WARN,
      ngx_http_guard_health_breakers },

    { ngx_null_string, 0, NULL }
};


static ngx_conf_enum_t  ngx_http_guard_health_modes[] = {
    { ngx_string("off"), NGX_HTTP_GUARD_HEALTH_OFF },
    { ngx_string("on"), NGX_HTTP_GUARD_HEALTH_ON },
    { ngx_string("warn"), NGX_HTTP_GUARD_HEALTH_WARN },
    { ngx_null_string, 0 }
};


static const char  *ngx_http_guard_health_mode_names[] = {
    "off", "on", "warn", "on"
};


/* per worker: the spill directory's last access(2) */

static time_t     ngx_http_guard_health_spill_checked;
static ngx_err_t  ngx_http_guard_health_spill_err;


/* configuration */

char *
ngx_http_guard_health(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_guard_health_handler;

    return NGX_CONF_OK;
}


static ngx_http_guard_health_conf_t *
ngx_http_guard_health_conf(ngx_conf_t *cf, ngx_http_guard_loc_conf_t *glcf)
{
    ngx_uint_t                     i;
    ngx_http_guard_health_conf_t  *hc;

    if (glcf->health) {
        return glcf->health;
    }

    hc = ngx_palloc(cf->pool, sizeof(ngx_http_guard_health_conf_t));
    if (hc == NULL) {
        return NULL;
    }

    for (i = 0; i < NGX_HTTP_GUARD_HEALTH_MAX; i++) {
        hc->mode[i] = NGX_CONF_UNSET_UINT;
    }

    hc->backlog = NGX_CONF_UNSET_UINT;
    glcf->health = hc;

    return hc;
}


/*
 * The row of a table of rows that begin with their name, up to a row
 * with an empty name: name's, or the empty one.
 */

static ngx_uint_t
ngx_http_guard_health_find(ngx_str_t *name, void *table, size_t size)
{
    u_char      *row;
    ngx_str_t   *s;
    ngx_uint_t   i;

    for (i = 0, row = table; /* void */; i++, row += size) {
        s = (ngx_str_t *) row;

        if (s->len == 0
            || (s->len == name->len
                && ngx_strncmp(s->data, name->data, name->len) == 0))
        {
            return i;
        }
    }
}


/* guard_health_check NAME on|warn|off; */

char *
ngx_http_guard_health_check(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_guard_loc_conf_t *glcf = conf;

    ngx_str_t                     *value;
    ngx_uint_t                     i, m;
    ngx_http_guard_health_conf_t  *hc;

    value = cf->args->elts;

    i = ngx_http_guard_health_find(&value[1], ngx_http_guard_health_checks,
                                   sizeof(ngx_http_guard_health_row_t));

    if (ngx_http_guard_health_checks[i].name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown check \"%V\" (sidecar, audit_backlog, "
                           "spill, policy, breakers)", &value[1]);
        return NGX_CONF_ERROR;
    }

    m = ngx_http_guard_health_find(&value[2], ngx_http_guard_health_modes,
                                   sizeof(ngx_conf_enum_t));

    if (ngx_http_guard_health_modes[m].name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid mode \"%V\" (on, warn or off)",
                           &value[2]);
        return NGX_CONF_ERROR;
    }

    hc = ngx_http_guard_health_conf(cf, glcf);
    if (hc == NULL) {
        return NGX_CONF_ERROR;
    }

    if (hc->mode[i] != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    hc->mode[i] = ngx_http_guard_health_modes[m].value;

    return NGX_CONF_OK;
}


/* guard_health_backlog RATIO; a fraction of the ring, 0.01 to 1 */

char *
ngx_http_guard_health_backlog(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_guard_loc_conf_t *glcf = conf;

    ngx_int_t                      n;
    ngx_str_t                     *value;
    ngx_http_guard_health_conf_t  *hc;

    value = cf->args->elts;

    n = ngx_atofp(value[1].data, value[1].len, 2);

    if (n < 1 || n > 100) {
        return "must be a ratio from 0.01 to 1";
    }

    hc = ngx_http_guard_health_conf(cf, glcf);
    if (hc == NULL) {
        return NGX_CONF_ERROR;
    }

    if (hc->backlog != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    hc->backlog = n;

    return NGX_CONF_OK;
}


/* a location inherits each setting it does not make itself */

char *
ngx_http_guard_health_merge(ngx_conf_t *cf,
    ngx_http_guard_health_conf_t **conf, ngx_http_guard_health_conf_t *prev)
{
    ngx_uint_t                     i;
    ngx_http_guard_health_conf_t  *hc;

    hc = *conf;

    if (hc == NULL) {
        *conf = prev;
        return NGX_CONF_OK;
    }

    if (prev == NULL) {
        return NGX_CONF_OK;
    }

    for (i = 0; i < NGX_HTTP_GUARD_HEALTH_MAX; i++) {
        ngx_conf_merge_uint_value(hc->mode[i], prev->mode[i],
                                  NGX_CONF_UNSET_UINT);
    }

    ngx_conf_merge_uint_value(hc->backlog, prev->backlog,
                              NGX_CONF_UNSET_UINT);

    return NGX_CONF_OK;
}


/* the handler */

static ngx_int_t
ngx_http_guard_health_handler(ngx_http_request_t *r)
{
    json_t      *doc;
    ngx_int_t    rc;
    ngx_str_t    nostore;
    ngx_buf_t   *b;
    ngx_uint_t   healthy;

    if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    doc = ngx_http_guard_health_run(r, &healthy);
    if (doc == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b = ngx_http_guard_json_buf(r, doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER
                                        | JSON_REAL_PRECISION(6));

    json_decref(doc);

    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* a probe's answer is now's: never from a cache */

    ngx_str_set(&nostore, "no-store");

    if (ngx_http_guard_add_header(r, "Cache-Control", &nostore) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_guard_send_buf(r, healthy ? NGX_HTTP_OK
                                              : NGX_HTTP_SERVICE_UNAVAILABLE,
                                   "application/json", b);
}


/* 1 when the checks of r's location pass: the guard_health_ok gauge */

ngx_uint_t
ngx_http_guard_health_ok(ngx_http_request_t *r)
{
    json_t      *doc;
    ngx_uint_t   healthy;

    doc = ngx_http_guard_health_run(r, &healthy);

    if (doc == NULL) {
        return 0;
    }

    json_decref(doc);

    return healthy;
}


/* every check of the table, in its mode for r's location */

static json_t *
ngx_http_guard_health_run(ngx_http_request_t *r, ngx_uint_t *healthy)
{
    json_t                        *doc, *checks, *failed, *warnings, *out;
    ngx_uint_t                     i, mode, ok;
    ngx_http_guard_loc_conf_t     *glcf;
    ngx_http_guard_main_conf_t    *gmcf;
    ngx_http_guard_health_conf_t  *hc;
    ngx_http_guard_health_row_t   *row;

    gmcf = ngx_http_get_module_main_conf(r, ngx_http_guard_module);
    glcf = ngx_http_get_module_loc_conf(r, ngx_http_guard_module);
    hc = glcf->health;

    *healthy = 1;

    doc = json_object();
    checks = json_object();
    failed = json_array();
    warnings = json_array();

    if (doc == NULL || checks == NULL || failed == NULL || warnings == NULL)
    {
        goto failed;
    }

    for (i = 0; ngx_http_guard_health_checks[i].name.len; i++) {
        row = &ngx_http_guard_health_checks[i];

        mode = (hc && hc->mode[i] != NGX_CONF_UNSET_UINT) ? hc->mode[i]
                                                          : row->mode;

        if (mode == NGX_HTTP_GUARD_HEALTH_OFF) {
            continue;
        }

        if (mode == NGX_HTTP_GUARD_HEALTH_AUTO) {
            mode = gmcf->risk_closed ? NGX_HTTP_GUARD_HEALTH_ON
                                     : NGX_HTTP_GUARD_HEALTH_WARN;
        }

        out = json_object();
        if (out == NULL) {
            goto failed;
        }

        /* "ok" first, the row's own members after it */
        json_object_set_new(out, "ok", json_true());
        json_object_set_new(out, "mode",
                            json_string(ngx_http_guard_health_mode_names[mode]));

        ok = row->check(r, hc, out);

        json_object_set_new(out, "ok", json_boolean(ok));
        json_object_setn_new(checks, (char *) row->name.data, row->name.len,
                             out);

        if (ok) {
            continue;
        }

        if (mode == NGX_HTTP_GUARD_HEALTH_ON) {
            *healthy = 0;
            json_array_append_new(failed,
                                  json_stringn((char *) row->name.data,
                                               row->name.len));

        } else {
            json_array_append_new(warnings,
                                  json_stringn((char *) row->name.data,
                                               row->name.len));
        }
    }

    json_object_set_new(doc, "status",
                        json_string(*healthy ? "ok" : "fail"));
    json_object_set_new(doc, "policy_version",
                        gmcf->policies
                        ? json_stringn((char *) gmcf->policies->version.data,
                                       gmcf->policies->version.len)
                        : json_null());
    json_object_set_new(doc, "failed", failed);
    json_object_set_new(doc, "warnings", warnings);
    json_object_set_new(doc, "checks", checks);

    return doc;

failed:

    json_decref(doc);
    json_decref(checks);
    json_decref(failed);
    json_decref(warnings);

    *healthy = 0;

    return NULL;
}


static void
ngx_http_guard_health_detail(json_t *out, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;
    u_char    buf[NGX_HTTP_GUARD_HEALTH_DETAIL];

    va_start(args, fmt);
    p = ngx_vslprintf(buf, buf + sizeof(buf), fmt, args);
    va_end(args);

    json_object_set_new(out, "detail", json_stringn((char *) buf, p - buf));
}


/* the checks */

static ngx_uint_t
ngx_http_guard_health_sidecar(ngx_http_request_t *r,
    ngx_http_guard_health_conf_t *hc, json_t *out)
{
    ngx_uint_t                   n, ready, failing;
    ngx_http_guard_main_conf_t  *gmcf;

    gmcf = ngx_http_get_module_main_conf(r, ngx_http_guard_module);

    if (gmcf->sidecar == NULL) {
        ngx_http_guard_health_detail(out, "no guard_sidecar");
        return 1;
    }

    /* this worker's view: its own connections, never a new one */

    n = ngx_http_guard_sidecar_health(&ready, &failing);

    json_object_set_new(out, "connections", json_integer(n));
    json_object_set_new(out, "ready", json_integer(ready));

    if (ready == 0) {
        ngx_http_guard_health_detail(out, "guardd unreachable: none of "
                                     "this worker's %ui connection(s) is up",
                                     n);
        return 0;
    }

    if (failing) {
        ngx_http_guard_health_detail(out, "guardd not answering: %ui calls "
                                     "in a row failed", failing);
        return 0;
    }

    ngx_http_guard_health_detail(out, "%ui of %ui connection(s) up",
                                 ready, n);
    return 1;
}


static ngx_uint_t
ngx_http_guard_health_audit_backlog(ngx_http_request_t *r,
    ngx_http_guard_health_conf_t *hc, json_t *out)
{
    json_t      *stats;
    ngx_uint_t   backlog, ok;
    json_int_t   ring, pending;

    backlog = (hc && hc->backlog != NGX_CONF_UNSET_UINT)
              ? hc->backlog : NGX_HTTP_GUARD_HEALTH_BACKLOG;

    stats = ngx_http_guard_audit_stats(r);

    if (stats == NULL) {
        ngx_http_guard_health_detail(out, "no audit ring");
        return 1;
    }

    ring = json_integer_value(json_object_get(stats, "ring"));
    pending = json_integer_value(json_object_get(stats, "pending"));

    json_decref(stats);

    json_object_set_new(out, "pending", json_integer(pending));
    json_object_set_new(out, "ring", json_integer(ring));
    json_object_set_new(out, "threshold", json_real(backlog / 100.0));

    ok = (uint64_t) pending * 100 <= (uint64_t) ring * backlog;

    ngx_http_guard_health_detail(out, "%L of %L records wait for guardd%s",
                                 (int64_t) pending, (int64_t) ring,
                                 ok ? "" : ": over the threshold");
    return ok;
}


static ngx_uint_t
ngx_http_guard_health_spill(ngx_http_request_t *r,
    ngx_http_guard_health_conf_t *hc, json_t *out)
{
    ngx_http_guard_main_conf_t  *gmcf;

    gmcf = ngx_http_get_module_main_conf(r, ngx_http_guard_module);

    if (gmcf->audit_zone == NULL) {
        ngx_http_guard_health_detail(out, "no audit ring");
        return 1;
    }

    if (gmcf->audit_spill.data == NULL) {
        ngx_http_guard_health_detail(out, "no guard_audit_spill: records "
                                     "that do not fit the ring are dropped");
        return 1;
    }

    json_object_set_new(out, "path",
                        json_stringn((char *) gmcf->audit_spill.data,
                                     gmcf->audit_spill.len));

    /* a probe every few ms costs one access(2) a second at most */

    if (ngx_http_guard_health_spill_checked != ngx_time()) {
        ngx_http_guard_health_spill_checked = ngx_time();

        ngx_http_guard_health_spill_err =
            access((char *) gmcf->audit_spill.data, W_OK | X_OK) == 0
            ? 0 : ngx_errno;
    }

    if (ngx_http_guard_health_spill_err) {
        ngx_http_guard_health_detail(out, "not writable by the workers: %s",
                                     strerror(ngx_http_guard_health_spill_err));
        return 0;
    }

    ngx_http_guard_health_detail(out, "writable");
    return 1;
}


static ngx_uint_t
ngx_http_guard_health_policy(ngx_http_request_t *r,
    ngx_http_guard_health_conf_t *hc, json_t *out)
{
    ngx_http_guard_main_conf_t  *gmcf;

    gmcf = ngx_http_get_module_main_conf(r, ngx_http_guard_module);

    /* policies load with the configuration: a set that fails, fails it */

    if (gmcf->policies == NULL) {
        ngx_http_guard_health_detail(out, "no guard_policies");
        return 1;
    }

    json_object_set_new(out, "version",
                        json_stringn((char *) gmcf->policies->version.data,
                                     gmcf->policies->version.len));
    json_object_set_new(out, "tenants",
                        json_integer(gmcf->policies->set->ntenants));

    ngx_http_guard_health_detail(out, "%uz tenant policies loaded",
                                 gmcf->policies->set->ntenants);
    return 1;
}


static ngx_uint_t
ngx_http_guard_health_breakers(ngx_http_request_t *r,
    ngx_http_guard_health_conf_t *hc, json_t *out)
{
    json_t      *open;
    ngx_uint_t   n;

    open = json_array();
    if (open == NULL) {
        return 0;
    }

    n = ngx_http_guard_breaker_open_list(r, open);

    json_object_set_new(out, "open", open);
    ngx_http_guard_health_detail(out, "%ui open", n);

    return n == 0;
}
