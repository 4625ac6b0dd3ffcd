
/*
 * Copyright (C) Guard authors
 *
 * Metrics.  Every decision is counted: allowed, refused per reason, and
 * shadow refusals per reason (a control in shadow mode that would have
 * refused), in all and per tenant; Guard's own time per request and the
 * sidecar's round trips go into histograms; the token cache, the sidecar
 * and the rate rules count what they do.  Everything is in the guard
 * zone, counted with atomic adds, shared by the workers and kept across
 * reloads.
 *
 * "guard_status;" in a location answers with the counts as JSON, like
 * stub_status does for connections, or in the Prometheus text format
 * (version 0.0.4) when asked for it (?format=prometheus, or an Accept
 * header that asks for text/plain or OpenMetrics and not for JSON);
 * protect it as you would stub_status.  docs/metrics.md lists the
 * metrics.
 *
 * Tenants and rate rules are counted by name in fixed tables of the
 * zone: an open-addressed hash table, twice as many slots as names,
 * read without a lock; a new name takes the zone mutex once, to claim
 * its slot.  Names past the table's capacity (guard_metrics_tenants),
 * and names longer than NGX_HTTP_GUARD_METRICS_NAME_LEN, are counted
 * under "_other".  Only a verified tenant is counted: a refusal before
 * the tenant is bound names none (its tenant would be the client's word).
 */


#include "ngx_http_guard_metrics.h"
#include "ngx_http_guard_problem.h"
#include "ngx_http_guard_policy.h"
#include "ngx_http_guard_zone.h"
#include "ngx_http_guard_audit.h"
#include "ngx_http_guard_health.h"
#include "ngx_http_guard_guardrails.h"


typedef struct {
    ngx_atomic_t                 count[NGX_HTTP_GUARD_DECISION_LAST];
    ngx_uint_t                   hash;
    ngx_uint_t                   len;
    u_char                       name[NGX_HTTP_GUARD_METRICS_NAME_LEN];
} ngx_http_guard_metrics_entry_t;


struct ngx_http_guard_metrics_table_s {
    ngx_uint_t                   cap;         /* names counted */
    ngx_uint_t                   used;
    ngx_uint_t                   mask;        /* slots - 1 */
    ngx_atomic_t                 other[NGX_HTTP_GUARD_DECISION_LAST];
    ngx_http_guard_metrics_entry_t  *volatile  slot[1];
};


/* the Prometheus output: room for a line, and for an escaped name */

#define NGX_HTTP_GUARD_PROM_LINE  (128 + NGX_ATOMIC_T_LEN)
#define NGX_HTTP_GUARD_PROM_NAME  (2 * NGX_HTTP_GUARD_METRICS_NAME_LEN)


static ngx_http_guard_metrics_table_t *ngx_http_guard_metrics_table(
    ngx_slab_pool_t *shpool, ngx_uint_t cap,
    ngx_http_guard_metrics_table_t *old);
static ngx_uint_t ngx_http_guard_metrics_hash(u_char *p, size_t len);
static ngx_atomic_t *ngx_http_guard_metrics_counts(
    ngx_http_guard_zone_t *zone, ngx_http_guard_metrics_table_t *t,
    u_char *name, size_t len);
static ngx_atomic_t *ngx_http_guard_metrics_add(ngx_http_guard_zone_t *zone,
    ngx_http_guard_metrics_table_t *t, u_char *name, size_t len,
    ngx_uint_t hash);
static ngx_int_t ngx_http_guard_status_handler(ngx_http_request_t *r);
static ngx_uint_t ngx_http_guard_status_prometheus(ngx_http_request_t *r);
static ngx_buf_t *ngx_http_guard_status_json(ngx_http_request_t *r,
    ngx_http_guard_zone_t *zone);
static ngx_buf_t *ngx_http_guard_status_text(ngx_http_request_t *r,
    ngx_http_guard_zone_t *zone);
static ngx_int_t ngx_http_guard_status_guardrails(json_t *doc,
    ngx_http_guard_zone_t *zone);
static u_char *ngx_http_guard_prom_head(u_char *p, const char *name,
    const char *type, const char *help);
static u_char *ngx_http_guard_prom_value(u_char *p, const char *name,
    const char *type, ngx_atomic_uint_t value, const char *help);
static u_char *ngx_http_guard_prom_histogram(u_char *p, const char *name,
    const char *help, ngx_http_guard_histogram_t *h);
static u_char *ngx_http_guard_prom_names(u_char *p,
    ngx_http_guard_metrics_table_t *t, ngx_uint_t used, const char *prefix,
    ngx_uint_t decisions);


/* the upper bounds of the histograms' buckets, in microseconds */

static uint64_t  ngx_http_guard_metrics_bounds[] = {
    10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000
};


/* the tables of a status without a zone: "_other" only, at zero */

static ngx_http_guard_metrics_table_t  ngx_http_guard_metrics_none;


static const char  *ngx_http_guard_decisions[] = {
    "allow", "refuse", "shadow_refuse"
};


/*
 * When the zone is made, or kept by a reload: the tables by name.  A
 * reload that changes guard_metrics_tenants gets a new tenant table with
 * the counts of the old one (names that no longer fit go to "_other");
 * the old table is left in the zone, as the old workers still count in
 * it until they exit.
 */

ngx_int_t
ngx_http_guard_metrics_init(ngx_slab_pool_t *shpool,
    ngx_http_guard_metrics_sh_t *sh, ngx_uint_t tenants, ngx_log_t *log)
{
    ngx_http_guard_metrics_table_t  *t;

    if (sh->tenants == NULL || sh->tenants->cap != tenants) {
        ngx_shmtx_lock(&shpool->mutex);
        t = ngx_http_guard_metrics_table(shpool, tenants, sh->tenants);
        ngx_shmtx_unlock(&shpool->mutex);

        if (t == NULL) {
            ngx_log_error(NGX_LOG_EMERG, log, 0,
                          "guard: no room in the guard zone for the "
                          "metrics of %ui tenants", tenants);
            return NGX_ERROR;
        }

        sh->tenants = t;
    }

    if (sh->rules == NULL) {
        ngx_shmtx_lock(&shpool->mutex);
        t = ngx_http_guard_metrics_table(shpool, NGX_HTTP_GUARD_METRICS_RULES,
                                         NULL);
        ngx_shmtx_unlock(&shpool->mutex);

        if (t == NULL) {
            ngx_log_error(NGX_LOG_EMERG, log, 0,
                          "guard: no room in the guard zone for the "
                          "metrics of the rate rules");
            return NGX_ERROR;
        }

        sh->rules = t;
    }

    return NGX_OK;
}


/*
 * A table of cap names, with the entries of old if any (those past cap
 * add their counts to "_other"); the mutex held.
 */

static ngx_http_guard_metrics_table_t *
ngx_http_guard_metrics_table(ngx_slab_pool_t *shpool, ngx_uint_t cap,
    ngx_http_guard_metrics_table_t *old)
{
    ngx_uint_t                       i, j, k, slots;
    ngx_http_guard_metrics_table_t  *t;
    ngx_http_guard_metrics_entry_t  *e;

    for (slots = 2; slots < 2 * cap; slots <<= 1) { /* void */ }

    t = ngx_slab_calloc_locked(shpool,
                               offsetof(ngx_http_guard_metrics_table_t, slot)
                               + slots
                                 * sizeof(ngx_http_guard_metrics_entry_t *));
    if (t == NULL) {
        return NULL;
    }

    t->cap = cap;
    t->mask = slots - 1;

    if (old == NULL) {
        return t;
    }

    for (j = 0; j < NGX_HTTP_GUARD_DECISION_LAST; j++) {
        t->other[j] = old->other[j];
    }

    for (i = 0; i <= old->mask; i++) {
        e = old->slot[i];

        if (e == NULL) {
            continue;
        }

        if (t->used < t->cap) {
            /* names are unique: the first free slot from its hash */

            for (k = e->hash & t->mask; t->slot[k]; k = (k + 1) & t->mask) {
                /* void */
            }

            t->slot[k] = e;
            t->used++;
            continue;
        }

        for (j = 0; j < NGX_HTTP_GUARD_DECISION_LAST; j++) {
            t->other[j] += e->count[j];
        }
    }

    return t;
}


/*
 * The hash of a name: a word at a time (the last word may overlap the
 * one before), cheaper than a byte at a time for long tenant ids.
 */

static ngx_uint_t
ngx_http_guard_metrics_hash(u_char *p, size_t len)
{
    size_t    i;
    uint64_t  h, w;

    h = len;

    if (len < 8) {
        for (i = 0; i < len; i++) {
            h = (h << 8) | p[i];
        }

        h *= 0x9e3779b97f4a7c15ULL;

    } else {
        for (i = 0; i + 8 < len; i += 8) {
            ngx_memcpy(&w, p + i, 8);
            h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
        }

        ngx_memcpy(&w, p + len - 8, 8);
        h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
    }

    return (ngx_uint_t) (h ^ (h >> 32));
}


/*
 * The counts of a name: its entry's, a new entry's, or "_other".  The
 * lookup reads without the lock: an entry is written before a slot
 * points at it, and a slot, once set, never changes.
 */

static ngx_atomic_t *
ngx_http_guard_metrics_counts(ngx_http_guard_zone_t *zone,
    ngx_http_guard_metrics_table_t *t, u_char *name, size_t len)
{
    ngx_uint_t                       i, hash;
    ngx_http_guard_metrics_entry_t  *e;

    if (len == 0 || len > NGX_HTTP_GUARD_METRICS_NAME_LEN) {
        return t->other;
    }

    hash = ngx_http_guard_metrics_hash(name, len);

    /* never full: twice as many slots as names */

    for (i = hash & t->mask; (e = t->slot[i]) != NULL; i = (i + 1) & t->mask)
    {
        if (e->hash == hash && e->len == len
            && ngx_memcmp(e->name, name, len) == 0)
        {
            return e->count;
        }
    }

    if (t->used >= t->cap) {
        return t->other;
    }

    return ngx_http_guard_metrics_add(zone, t, name, len, hash);
}


/* a new name: once per name, under the zone mutex */

static ngx_atomic_t *
ngx_http_guard_metrics_add(ngx_http_guard_zone_t *zone,
    ngx_http_guard_metrics_table_t *t, u_char *name, size_t len,
    ngx_uint_t hash)
{
    ngx_uint_t                       i;
    ngx_http_guard_metrics_entry_t  *e;

    ngx_shmtx_lock(&zone->shpool->mutex);

    /* another worker may have added it meanwhile */

    for (i = hash & t->mask; (e = t->slot[i]) != NULL; i = (i + 1) & t->mask)
    {
        if (e->hash == hash && e->len == len
            && ngx_memcmp(e->name, name, len) == 0)
        {
            break;
        }
    }

    if (e == NULL && t->used < t->cap) {
        e = ngx_http_guard_zone_alloc_locked(zone,
                                       sizeof(ngx_http_guard_metrics_entry_t),
                                       ngx_http_guard_zone_now());
        if (e) {
            ngx_memzero(e, sizeof(ngx_http_guard_metrics_entry_t));
            e->hash = hash;
            e->len = len;
            ngx_memcpy(e->name, name, len);

            ngx_memory_barrier();

            t->slot[i] = e;
            t->used++;
        }
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return e ? e->count : t->other;
}


/* a decision: the allow, or a refusal or shadow refusal and its reason */

void
ngx_http_guard_metrics_count(ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx,
    ngx_http_guard_reason_e reason, ngx_uint_t shadow)
{
    ngx_uint_t                    d;
    ngx_atomic_t                 *c;
    ngx_http_guard_zone_t        *zone;
    ngx_http_guard_policy_t      *gp;
    ngx_http_guard_metrics_sh_t  *m;

    zone = ngx_http_guard_zone_get(r);

    if (zone == NULL || reason >= NGX_HTTP_GUARD_REASON_LAST) {
        return;
    }

    m = &zone->sh->metrics;

    if (reason == NGX_HTTP_GUARD_OK) {
        (void) ngx_atomic_fetch_add(&m->allowed, 1);
        d = NGX_HTTP_GUARD_DECISION_ALLOW;

    } else if (shadow) {
        (void) ngx_atomic_fetch_add(&m->shadow[reason], 1);
        d = NGX_HTTP_GUARD_DECISION_SHADOW;

    } else {
        (void) ngx_atomic_fetch_add(&m->refused[reason], 1);
        d = NGX_HTTP_GUARD_DECISION_REFUSE;
    }

    if (ctx->tenant.len == 0 || m->tenants == NULL) {
        return;
    }

    /*
     * A bound tenant's policy is the tenant's own, or the default one: a
     * tenant's own policy keeps where its counts are, found once in each
     * worker (the places of the table stay, even across a reload)
     */

    gp = ctx->policy;

    if (gp && gp->metrics) {
        c = gp->metrics;

    } else {
        c = ngx_http_guard_metrics_counts(zone, m->tenants, ctx->tenant.data,
                                          ctx->tenant.len);

        if (gp && gp->p->tenant && c != m->tenants->other) {
            gp->metrics = c;
        }
    }

    (void) ngx_atomic_fetch_add(&c[d], 1);
}


/* a refusal by a rate rule, by the rule's name */

void
ngx_http_guard_metrics_rate_refused(ngx_http_request_t *r, const char *rule)
{
    ngx_atomic_t           *c;
    ngx_http_guard_zone_t  *zone;

    zone = ngx_http_guard_zone_get(r);

    if (zone == NULL || zone->sh->metrics.rules == NULL) {
        return;
    }

    c = ngx_http_guard_metrics_counts(zone, zone->sh->metrics.rules,
                                      (u_char *) rule, ngx_strlen(rule));

    (void) ngx_atomic_fetch_add(&c[NGX_HTTP_GUARD_DECISION_REFUSE], 1);
}


/* the zone's metrics for request r, or NULL */

ngx_http_guard_metrics_sh_t *
ngx_http_guard_metrics_get(ngx_http_request_t *r)
{
    ngx_http_guard_zone_t  *zone;

    zone = ngx_http_guard_zone_get(r);

    return zone ? &zone->sh->metrics : NULL;
}


/*
 * Guard's own time for a request: the access handler's runs, not the
 * waits between them (for a VERDICT), in nanoseconds in ctx->busy; the
 * request's is observed once it is decided.
 */

void
ngx_http_guard_metrics_busy(ngx_http_guard_ctx_t *ctx, uint64_t start)
{
    ctx->busy += ngx_http_guard_monotonic_ns() - start;
}


void
ngx_http_guard_metrics_time(ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx,
    uint64_t start)
{
    ngx_http_guard_zone_t  *zone;

    ctx->busy += ngx_http_guard_monotonic_ns() - start;

    zone = ngx_http_guard_zone_get(r);

    if (zone) {
        ngx_http_guard_metrics_observe(&zone->sh->metrics.duration,
                                       ctx->busy / 1000);
    }
}


void
ngx_http_guard_metrics_observe(ngx_http_guard_histogram_t *h, uint64_t us)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_GUARD_METRICS_BUCKETS - 1; i++) {
        if (us <= ngx_http_guard_metrics_bounds[i]) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&h->bucket[i], 1);
    (void) ngx_atomic_fetch_add(&h->sum, (ngx_atomic_int_t) us);
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
    char                   *type;
    ngx_int_t               rc;
    ngx_buf_t              *b;
    ngx_http_guard_zone_t  *zone;

    if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    zone = ngx_http_guard_zone_get(r);

    if (ngx_http_guard_status_prometheus(r)) {
        b = ngx_http_guard_status_text(r, zone);
        type = "text/plain; version=0.0.4; charset=utf-8";

    } else {
        b = ngx_http_guard_status_json(r, zone);
        type = "application/json";
    }

    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_guard_send_buf(r, NGX_HTTP_OK, type, b);
}


/*
 * The Prometheus text format: asked for by the argument format=prometheus,
 * or by an Accept header that names text/plain or OpenMetrics (as
 * Prometheus's does) and not JSON.  JSON otherwise.
 */

static ngx_uint_t
ngx_http_guard_status_prometheus(ngx_http_request_t *r)
{
    ngx_str_t  format;

    if (ngx_http_arg(r, (u_char *) "format", 6, &format) == NGX_OK) {
        return format.len == 10
               && ngx_strncasecmp(format.data, (u_char *) "prometheus", 10)
                  == 0;
    }

#if (NGX_HTTP_HEADERS)
    {
    u_char           *last;
    ngx_table_elt_t  *h;

    h = r->headers_in.accept;

    if (h) {
        last = h->value.data + h->value.len;

        if (ngx_strlcasestrn(h->value.data, last, (u_char *) "json", 4 - 1))
        {
            return 0;
        }

        return ngx_strlcasestrn(h->value.data, last,
                                (u_char *) "text/plain", 10 - 1) != NULL
               || ngx_strlcasestrn(h->value.data, last,
                                   (u_char *) "openmetrics", 11 - 1) != NULL;
    }
    }
#endif

    return 0;
}


static ngx_buf_t *
ngx_http_guard_status_json(ngx_http_request_t *r, ngx_http_guard_zone_t *zone)
{
    json_t                      *doc, *refused, *shadow, *audit;
    ngx_buf_t                   *b;
    ngx_str_t                   *name;
    ngx_uint_t                   i;
    ngx_http_guard_main_conf_t  *gmcf;

    gmcf = ngx_http_get_module_main_conf(r, ngx_http_guard_module);

    doc = json_object();
    refused = json_object();
    shadow = json_object();

    if (doc == NULL || refused == NULL || shadow == NULL) {
        b = NULL;
        goto done;
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

    json_object_set_new(doc, "breakers", ngx_http_guard_breaker_status(r));

    if (ngx_http_guard_status_guardrails(doc, zone) != NGX_OK) {
        b = NULL;
        goto done;
    }

    b = ngx_http_guard_json_buf(r, doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);

done:

    json_decref(doc);
    json_decref(refused);
    json_decref(shadow);

    return b;
}


/* "guardrails": {"verdicts": {VERDICT: N...}, "hits": {ACTION: N...}} */

static ngx_int_t
ngx_http_guard_status_guardrails(json_t *doc, ngx_http_guard_zone_t *zone)
{
    json_t      *gr, *verdicts, *hits;
    ngx_uint_t   i;

    gr = json_object();
    verdicts = json_object();
    hits = json_object();

    if (gr == NULL || verdicts == NULL || hits == NULL
        || json_object_set_new(gr, "verdicts", verdicts)
        || json_object_set_new(gr, "hits", hits)
        || json_object_set_new(doc, "guardrails", gr))
    {
        return NGX_ERROR;
    }

    for (i = 0; i < NGX_HTTP_GUARD_GR_VERDICTS; i++) {
        json_object_set_new(verdicts, ngx_http_guard_gr_verdict_names[i],
                   json_integer(zone ? zone->sh->metrics.guardrails_verdicts[i]
                                     : 0));
    }

    for (i = 0; i < NGX_HTTP_GUARD_GR_ACTIONS; i++) {
        json_object_set_new(hits, ngx_http_guard_gr_action_names[i],
                   json_integer(zone ? zone->sh->metrics.guardrails_hits[i]
                                     : 0));
    }

    return NGX_OK;
}


/* a count of the JSON of ngx_http_guard_audit_stats(), 0 if none */

static ngx_atomic_uint_t
ngx_http_guard_status_audit(json_t *audit, const char *key)
{
    json_t  *v;

    v = json_object_get(audit, key);

    return json_is_integer(v) ? (ngx_atomic_uint_t) json_integer_value(v) : 0;
}


/* the Prometheus text format, version 0.0.4 */

static ngx_buf_t *
ngx_http_guard_status_text(ngx_http_request_t *r, ngx_http_guard_zone_t *zone)
{
    u_char                          *p;
    size_t                           size, shm_size;
    json_t                          *audit;
    ngx_buf_t                       *b;
    ngx_str_t                       *name, *version, breakers;
    ngx_uint_t                       i, d, tenants, rules;
    ngx_atomic_t                    *c;
    ngx_slab_pool_t                 *shpool;
    ngx_http_guard_metrics_sh_t     *m, zero;
    ngx_http_guard_metrics_table_t  *tt, *rt;
    ngx_http_guard_main_conf_t      *gmcf;

    gmcf = ngx_http_get_module_main_conf(r, ngx_http_guard_module);

    if (zone) {
        m = &zone->sh->metrics;
        shpool = zone->shpool;

    } else {
        ngx_memzero(&zero, sizeof(ngx_http_guard_metrics_sh_t));
        m = &zero;
        shpool = NULL;
    }

    version = gmcf->policies ? &gmcf->policies->version : NULL;

    /* the entries there now: one that comes meanwhile waits for next time */

    tt = m->tenants ? m->tenants : &ngx_http_guard_metrics_none;
    rt = m->rules ? m->rules : &ngx_http_guard_metrics_none;
    tenants = tt->used;
    rules = rt->used;

    size = 64 * NGX_HTTP_GUARD_PROM_LINE
           + 2 * NGX_HTTP_GUARD_REASON_LAST * NGX_HTTP_GUARD_PROM_LINE
           + 2 * (NGX_HTTP_GUARD_METRICS_BUCKETS + 2)
               * NGX_HTTP_GUARD_PROM_LINE
           + (tenants + 1) * NGX_HTTP_GUARD_DECISION_LAST
             * (NGX_HTTP_GUARD_PROM_LINE + NGX_HTTP_GUARD_PROM_NAME)
           + (rules + 1) * (NGX_HTTP_GUARD_PROM_LINE + NGX_HTTP_GUARD_PROM_NAME)
           + (version ? 2 * version->len : 0)
           + 3 * NGX_HTTP_GUARD_PROM_LINE              /* guard_health_ok */
           + 3 * 3 * NGX_HTTP_GUARD_PROM_LINE     /* the bulkhead's */
           + (2 * 3 + NGX_HTTP_GUARD_GR_VERDICTS + NGX_HTTP_GUARD_GR_ACTIONS)
             * NGX_HTTP_GUARD_PROM_LINE;          /* the guardrails' */

    /* the circuit breakers' lines, made first: their length is known */

    if (ngx_http_guard_breaker_prom(r, &breakers) != NGX_OK) {
        return NULL;
    }

    size += breakers.len;

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        return NULL;
    }

    p = b->pos;

    /* decisions */

    p = ngx_http_guard_prom_head(p, "guard_decisions_total", "counter",
                                 "Decisions, per decision and reason.");

    p = ngx_sprintf(p, "guard_decisions_total{decision=\"allow\","
                       "reason=\"none\"} %uA\n", m->allowed);

    for (d = NGX_HTTP_GUARD_DECISION_REFUSE;
         d < NGX_HTTP_GUARD_DECISION_LAST;
         d++)
    {
        c = (d == NGX_HTTP_GUARD_DECISION_REFUSE) ? m->refused : m->shadow;

        for (i = NGX_HTTP_GUARD_OK + 1; i < NGX_HTTP_GUARD_REASON_LAST; i++) {
            name = ngx_http_guard_reason_name(i);
            p = ngx_sprintf(p, "guard_decisions_total{decision=\"%s\","
                               "reason=\"%V\"} %uA\n",
                            ngx_http_guard_decisions[d], name, c[i]);
        }
    }

    p = ngx_http_guard_prom_head(p, "guard_tenant_decisions_total", "counter",
                                 "Decisions, per tenant (a verified one) "
                                 "and decision.");

    p = ngx_http_guard_prom_names(p, tt, tenants,
                                  "guard_tenant_decisions_total{tenant=\"", 1);

    p = ngx_http_guard_prom_histogram(p, "guard_request_duration_microseconds",
                                      "Guard's own time per decided request "
                                      "(its access handler, without waits "
                                      "for the sidecar), in microseconds.",
                                      &m->duration);

    /* the token cache and the zone */

    p = ngx_http_guard_prom_value(p, "guard_token_cache_hits_total",
                                  "counter", m->cache_hits,
                                  "Tokens found in the token cache.");

    p = ngx_http_guard_prom_value(p, "guard_token_cache_misses_total",
                                  "counter", m->cache_misses,
                                  "Tokens looked up and not found in the "
                                  "token cache (then verified).");

    p = ngx_http_guard_prom_value(p, "guard_token_cache_evictions_total",
                                  "counter", m->cache_evictions,
                                  "Token cache entries removed before "
                                  "their expiry to make room in the zone.");

    p = ngx_http_guard_prom_value(p, "guard_token_cache_entries",
                                  "gauge", m->cache_entries,
                                  "Tokens in the token cache.");

    shm_size = gmcf->shm_zone ? gmcf->shm_zone->shm.size : 0;

    p = ngx_http_guard_prom_value(p, "guard_zone_size_bytes",
                                  "gauge", shm_size,
                                  "Size of the guard zone.");

    p = ngx_http_guard_prom_value(p, "guard_zone_used_bytes",
                                  "gauge",
                                  shpool ? shm_size
                                           - shpool->pfree * ngx_pagesize
                                         : 0,
                                  "Bytes of the guard zone in use (its "
                                  "size less its free pages).");

    /* the audit ring: its own counts */

    audit = ngx_http_guard_audit_stats(r);

    p = ngx_http_guard_prom_value(p, "guard_audit_ring_depth",
                                  "gauge",
                                  ngx_http_guard_status_audit(audit,
                                                              "pending"),
                                  "Audit records in the ring, not yet "
                                  "acknowledged by guardd.");

    p = ngx_http_guard_prom_value(p, "guard_audit_records_sent_total",
                                  "counter",
                                  ngx_http_guard_status_audit(audit, "sent"),
                                  "Audit records sent to guardd (again "
                                  "after a resend).");

    p = ngx_http_guard_prom_value(p, "guard_audit_records_acked_total",
                                  "counter",
                                  ngx_http_guard_status_audit(audit, "acked"),
                                  "Audit records that guardd acknowledged.");

    p = ngx_http_guard_prom_value(p, "guard_audit_records_spilled_total",
                                  "counter",
                                  ngx_http_guard_status_audit(audit,
                                                              "spilled"),
                                  "Audit records written to spill files.");

    p = ngx_http_guard_prom_value(p,
                                  "guard_audit_records_dead_lettered_total",
                                  "counter",
                                  ngx_http_guard_status_audit(audit,
                                                              "dead_letter"),
                                  "Audit records that guardd refused, "
                                  "moved to the dead-letter file.");

    json_decref(audit);

    /* the sidecar */

    p = ngx_http_guard_prom_histogram(p, "guard_sidecar_rtt_microseconds",
                                      "Round trips to guardd, from the "
                                      "DECIDE sent to its answer, "
                                      "in microseconds.",
                                      &m->sidecar_rtt);

    p = ngx_http_guard_prom_value(p, "guard_sidecar_timeouts_total",
                                  "counter", m->sidecar_timeouts,
                                  "DECIDE calls without an answer within "
                                  "the sidecar's timeout.");

    p = ngx_http_guard_prom_value(p, "guard_sidecar_fail_open_total",
                                  "counter", m->sidecar_fail_open,
                                  "Requests allowed without a risk verdict "
                                  "(guard_risk_fail open).");

    /* the bulkhead queue */

    p = ngx_http_guard_prom_value(p, "guard_concurrency_waiting", "gauge",
                                  m->concurrency_waiting,
                                  "Requests waiting in a bulkhead queue "
                                  "for a concurrency slot.");

    p = ngx_http_guard_prom_value(p, "guard_concurrency_queued_total",
                                  "counter", m->concurrency_queued,
                                  "Requests that waited in a bulkhead "
                                  "queue.");

    p = ngx_http_guard_prom_value(p,
                                  "guard_concurrency_queue_timeouts_total",
                                  "counter", m->concurrency_queue_timeouts,
                                  "Queued requests refused when their "
                                  "queue_timeout passed.");

    /* the guardrails */

    p = ngx_http_guard_prom_head(p, "guard_guardrails_verdicts_total",
                                 "counter",
                                 "Requests the guardrails inspected, per "
                                 "verdict.");

    for (i = 0; i < NGX_HTTP_GUARD_GR_VERDICTS; i++) {
        p = ngx_sprintf(p, "guard_guardrails_verdicts_total{verdict=\"%s\"} "
                        "%uA\n", ngx_http_guard_gr_verdict_names[i],
                        m->guardrails_verdicts[i]);
    }

    p = ngx_http_guard_prom_head(p, "guard_guardrails_hits_total",
                                 "counter",
                                 "Guardrail rule matches, per action.");

    for (i = 0; i < NGX_HTTP_GUARD_GR_ACTIONS; i++) {
        p = ngx_sprintf(p, "guard_guardrails_hits_total{action=\"%s\"} "
                        "%uA\n", ngx_http_guard_gr_action_names[i],
                        m->guardrails_hits[i]);
    }

    /* rate rules */

    p = ngx_http_guard_prom_head(p, "guard_rate_refusals_total", "counter",
                                 "Refusals by a rate rule, per rule name.");

    p = ngx_http_guard_prom_names(p, rt, rules,
                                  "guard_rate_refusals_total{rule=\"", 0);

    p = ngx_http_guard_prom_head(p, "guard_policy_info", "gauge",
                                 "The version of the loaded policies.");

    if (version) {
        p = ngx_cpymem(p, "guard_policy_info{version=\"",
                       sizeof("guard_policy_info{version=\"") - 1);
        p = ngx_http_guard_prom_escape(p, version->data, version->len);
        p = ngx_cpymem(p, "\"} 1\n", sizeof("\"} 1\n") - 1);
    }

    /* readiness, as guard_health would answer here (docs/directives.md) */

    p = ngx_http_guard_prom_value(p, "guard_health_ok", "gauge",
                                  ngx_http_guard_health_ok(r),
                                  "1 when the guard_health checks pass, "
                                  "0 when one that fails readiness does.");

    p = ngx_cpymem(p, breakers.data, breakers.len);

    b->last = p;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    return b;
}


static u_char *
ngx_http_guard_prom_head(u_char *p, const char *name, const char *type,
    const char *help)
{
    return ngx_sprintf(p, "# HELP %s %s\n# TYPE %s %s\n",
                       name, help, name, type);
}


/* a metric of one value, without labels */

static u_char *
ngx_http_guard_prom_value(u_char *p, const char *name, const char *type,
    ngx_atomic_uint_t value, const char *help)
{
    p = ngx_http_guard_prom_head(p, name, type, help);

    return ngx_sprintf(p, "%s %uA\n", name, value);
}


static u_char *
ngx_http_guard_prom_histogram(u_char *p, const char *name, const char *help,
    ngx_http_guard_histogram_t *h)
{
    ngx_uint_t         i;
    ngx_atomic_uint_t  n;

    p = ngx_http_guard_prom_head(p, name, "histogram", help);

    n = 0;

    for (i = 0; i < NGX_HTTP_GUARD_METRICS_BUCKETS - 1; i++) {
        n += h->bucket[i];
        p = ngx_sprintf(p, "%s_bucket{le=\"%uL\"} %uA\n",
                        name, ngx_http_guard_metrics_bounds[i], n);
    }

    n += h->bucket[i];

    return ngx_sprintf(p, "%s_bucket{le=\"+Inf\"} %uA\n"
                          "%s_sum %uA\n"
                          "%s_count %uA\n",
                       name, n, name, h->sum, name, n);
}


/*
 * The counts of a table by name, then "_other": per name, every decision
 * (decisions set), or the refusals only; prefix is the metric's name and
 * its first label up to the opening quote of the name.
 */

static u_char *
ngx_http_guard_prom_names(u_char *p, ngx_http_guard_metrics_table_t *t,
    ngx_uint_t used, const char *prefix, ngx_uint_t decisions)
{
    u_char                          *name;
    size_t                           len;
    ngx_uint_t                       i, n, d;
    ngx_atomic_t                    *count;
    ngx_http_guard_metrics_entry_t  *e;

    for (i = 0, n = 0; n <= used; i++) {

        if (n == used || i > t->mask) {
            name = (u_char *) "_other";
            len = sizeof("_other") - 1;
            count = t->other;
            n = used + 1;

        } else if (t->slot[i] == NULL) {
            continue;

        } else {
            e = t->slot[i];
            name = e->name;
            len = e->len;
            count = e->count;
            n++;
        }

        for (d = decisions ? 0 : NGX_HTTP_GUARD_DECISION_REFUSE;
             d < NGX_HTTP_GUARD_DECISION_LAST;
             d += decisions ? 1 : NGX_HTTP_GUARD_DECISION_LAST)
        {
            p = ngx_sprintf(p, "%s", prefix);
            p = ngx_http_guard_prom_escape(p, name, len);

            if (decisions) {
                p = ngx_sprintf(p, "\",decision=\"%s\"} %uA\n",
                                ngx_http_guard_decisions[d], count[d]);

            } else {
                p = ngx_sprintf(p, "\"} %uA\n", count[d]);
            }
        }
    }

    return p;
}


/* a label value: backslash, double quote and line feed escaped */

u_char *
ngx_http_guard_prom_escape(u_char *p, u_char *s, size_t len)
{
    u_char  *last;

    for (last = s + len; s < last; s++) {
        switch (*s) {

        case '\\':
        case '"':
            *p++ = '\\';
            *p++ = *s;
            break;

        case '\n':
            *p++ = '\\';
            *p++ = 'n';
            break;

        default:
            *p++ = *s;
        }
    }

    return p;
}
