
/*
 * Copyright (C) Guard authors
 *
 * Per-tenant limits.
 *
 * Rate: GCRA in integer microseconds.  A rule allows "requests" per
 * "period" (emission interval T = period / requests) with "burst" extra
 * requests back-to-back (tolerance tau = burst * T).  Each key (tenant,
 * rule, and the subject for per-subject rules) keeps one number, its
 * theoretical arrival time (TAT), in an rbtree with an LRU queue in the
 * guard zone, and the emission interval it was counted in.  Time is the
 * zone clock (ngx_http_guard_zone_clock_locked()), shared by the workers.
 * The zone mutex is held only around the lookups and updates; every
 * matching rule is checked before any is charged, so a request refused
 * by one rule costs nothing in the others, and a request that a later
 * stage refuses gets its charges back (ngx_http_guard_limit_refund()).
 *
 * A key counted under another rule (a reload changed its requests or
 * period) is converted on use: what it has used, in requests, stays
 * used, and it never waits more than the new rule can make it wait
 * (TAT at most now + tau + T).
 *
 * Concurrency (the bulkhead and its queue): ngx_http_guard_bulkhead.c.
 */


#include "ngx_http_guard_limit.h"
#include "ngx_http_guard_policy.h"
#include "ngx_http_guard_zone.h"
#include "ngx_http_guard_problem.h"
#include "ngx_http_guard_metrics.h"
#include "ngx_http_guard_bulkhead.h"


#define NGX_HTTP_GUARD_TAU_MAX      ((uint64_t) 1 << 60)


typedef struct {
    ngx_http_guard_lru_node_t    lru;         /* expires: the TAT */
    uint64_t                     t;           /* its emission interval */
    u_short                      len;
    u_char                       data[1];
} ngx_http_guard_rate_node_t;


typedef struct {
    const gd_rate_rule_t        *rule;
    ngx_str_t                   *field;       /* RateLimit-Policy item */
    ngx_rbtree_node_t           *node;
    ngx_str_t                    key;
    uint32_t                     hash;
    uint64_t                     tat;
    uint64_t                     t;
    uint64_t                     tau;
    unsigned                     over:1;
    unsigned                     shadow:1;
    unsigned                     charged:1;
} ngx_http_guard_rate_check_t;


struct ngx_http_guard_rate_charge_s {
    ngx_http_guard_zone_t         *zone;
    ngx_http_guard_rate_check_t   *checks;
    ngx_uint_t                     n;
    uint64_t                       now;       /* when they were charged */
};


static void ngx_http_guard_limit_rate_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);


void
ngx_http_guard_limit_init(ngx_http_guard_limit_sh_t *sh)
{
    ngx_rbtree_init(&sh->rate.rbtree, &sh->rate.sentinel,
                    ngx_http_guard_limit_rate_insert);
    ngx_queue_init(&sh->rate.queue);
    ngx_http_guard_bulkhead_init(&sh->conc_rbtree, &sh->conc_sentinel);
}


/* the node ends with its key: (len, data) */

#define NGX_HTTP_GUARD_RATE_OFF                                              \
    offsetof(ngx_http_guard_rate_node_t, len)


static void
ngx_http_guard_limit_rate_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_http_guard_zone_insert(temp, node, sentinel,
                               NGX_HTTP_GUARD_RATE_OFF);
}


static ngx_int_t
ngx_http_guard_rate_key(ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx,
    const gd_rate_rule_t *rule, ngx_str_t *key)
{
    u_char  *p;
    size_t   len;

    len = ctx->tenant.len + 1 + ngx_strlen(rule->name);

    if (rule->per_subject) {
        len += 1 + ctx->claims.sub.len;
    }

    if (len > 0xffff) {
        return NGX_ERROR;
    }

    key->data = ngx_pnalloc(r->pool, len);
    if (key->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(key->data, ctx->tenant.data, ctx->tenant.len);
    *p++ = '\0';
    p = ngx_cpymem(p, rule->name, ngx_strlen(rule->name));

    if (rule->per_subject) {
        *p++ = '\0';
        p = ngx_cpymem(p, ctx->claims.sub.data, ctx->claims.sub.len);
    }

    key->len = p - key->data;

    return NGX_OK;
}


/*
 * The TAT of a key as the rule of check c sees it at now: a key counted
 * in another emission interval (a reload changed the rule) is converted,
 * the requests it used staying used; and no key ever waits longer than
 * the rule can make it wait: the TAT is at most now + tau + T.
 */

static uint64_t
ngx_http_guard_rate_tat(ngx_http_guard_rate_check_t *c,
    ngx_http_guard_rate_node_t *rn, uint64_t now)
{
    uint64_t  ahead, max, q;

    if (rn == NULL || rn->lru.expires <= now) {
        return now;
    }

    ahead = rn->lru.expires - now;
    max = c->tau + c->t;

    if (rn->t != c->t && rn->t != 0) {
        q = ahead / rn->t;

        if (q > max / c->t) {
            ahead = max;

        } else {
            ahead = q * c->t
                    + (uint64_t) ((double) (ahead % rn->t) / rn->t * c->t);
        }
    }

    return now + ngx_min(ahead, max);
}


/*
 * The RateLimit numbers of a check (draft-ietf-httpapi-ratelimit-headers):
 * r, the requests that would pass now, and t, the seconds until one more
 * would (0 when the bucket is full): on a refusal, the delay until a
 * request is allowed again, which Retry-After carries too.
 */

static void
ngx_http_guard_rate_numbers(ngx_http_guard_rate_check_t *c, uint64_t now,
    uint64_t *r, uint64_t *t)
{
    uint64_t  ahead, avail, wait;

    ahead = (c->tat > now) ? c->tat - now : 0;
    avail = (c->tau + c->t > ahead) ? c->tau + c->t - ahead : 0;

    *r = avail / c->t;

    if (ahead == 0) {
        *t = 0;
        return;
    }

    wait = (*r == 0) ? ahead - c->tau : c->t - avail % c->t;

    /* delay-seconds: rounded up, and a wait is at least 1 */
    *t = (wait + 999999) / 1000000;
}


static void
ngx_http_guard_rate_pick(ngx_http_guard_limit_info_t *info,
    ngx_http_guard_rate_check_t *checks, ngx_uint_t n, ngx_uint_t report,
    uint64_t now)
{
    uint64_t    rem, t;
    ngx_uint_t  i;

    /* the reported rule: the one that refused, or the one nearest to */

    if (!info->refused) {
        report = 0;

        for (i = 0; i < n; i++) {
            ngx_http_guard_rate_numbers(&checks[i], now, &rem, &t);

            if (i == 0 || rem < info->remaining) {
                info->remaining = rem;
                report = i;
            }
        }
    }

    ngx_http_guard_rate_numbers(&checks[report], now, &info->remaining,
                                &info->reset);

    if (info->refused) {
        info->remaining = 0;

        if (info->reset == 0) {
            info->reset = 1;
        }
    }

    info->name.data = (u_char *) checks[report].rule->name;
    info->name.len = ngx_strlen(checks[report].rule->name);
}


static ngx_int_t
ngx_http_guard_rate_report(ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx,
    ngx_http_guard_rate_check_t *checks, ngx_uint_t n, ngx_uint_t report,
    uint64_t now)
{
    u_char                       *p;
    size_t                        len;
    ngx_uint_t                    i;
    ngx_http_guard_limit_info_t  *info;

    info = &ctx->limit;

    if (n == 1) {
        info->policy = *checks[0].field;

    } else {
        len = 0;

        for (i = 0; i < n; i++) {
            len += checks[i].field->len + 2;
        }

        p = ngx_pnalloc(r->pool, len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        info->policy.data = p;

        for (i = 0; i < n; i++) {
            if (i) {
                *p++ = ',';
                *p++ = ' ';
            }

            p = ngx_cpymem(p, checks[i].field->data, checks[i].field->len);
        }

        info->policy.len = p - info->policy.data;
    }

    ngx_http_guard_rate_pick(info, checks, n, report, now);
    info->set = 1;

    return NGX_OK;
}


ngx_int_t
ngx_http_guard_limit_rate(ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx,
    ngx_uint_t *shadow)
{
    size_t                         size;
    uint64_t                       now;
    ngx_uint_t                     i, n, refused, shadowed, charged;
    ngx_log_t                      log;
    const gd_policy_t             *p;
    ngx_http_guard_zone_t         *zone;
    ngx_http_guard_rate_node_t    *rn;
    ngx_http_guard_rate_check_t   *checks, *c;
    ngx_http_guard_rate_charge_t  *charge;

    if (ctx->policy == NULL || ctx->policy->p->nrates == 0
        || ctx->rate_done)
    {
        return NGX_HTTP_GUARD_OK;
    }

    /* an internal redirect does not count the request twice */
    ctx->rate_done = 1;

    zone = ngx_http_guard_zone_get(r);
    if (zone == NULL) {
        return NGX_HTTP_GUARD_OK;
    }

    p = ctx->policy->p;

    checks = ngx_palloc(r->pool, p->nrates
                                 * sizeof(ngx_http_guard_rate_check_t));
    if (checks == NULL) {
        return NGX_HTTP_GUARD_INTERNAL_ERROR;
    }

    n = 0;

    for (i = 0; i < p->nrates; i++) {
        if (!gd_rate_rule_matches(&p->rates[i],
                                  (char *) r->method_name.data,
                                  r->method_name.len, (char *) r->uri.data,
                                  r->uri.len))
        {
            continue;
        }

        c = &checks[n++];
        ngx_memzero(c, sizeof(ngx_http_guard_rate_check_t));

        c->rule = &p->rates[i];
        c->field = &ctx->policy->rate_fields[i];
        c->shadow = (p->shadow || p->rates[i].shadow);
        c->t = p->rates[i].period_ms * 1000 / p->rates[i].requests;

        if (c->t == 0) {
            c->t = 1;
        }

        /* saturate: a burst of years is as good as forever */
        c->tau = (p->rates[i].burst > NGX_HTTP_GUARD_TAU_MAX / c->t)
                 ? NGX_HTTP_GUARD_TAU_MAX : c->t * p->rates[i].burst;

        if (ngx_http_guard_rate_key(r, ctx, c->rule, &c->key) != NGX_OK) {
            return NGX_HTTP_GUARD_INTERNAL_ERROR;
        }

        c->hash = ngx_crc32_short(c->key.data, c->key.len);
    }

    if (n == 0) {
        return NGX_HTTP_GUARD_OK;
    }

    charge = ngx_palloc(r->pool, sizeof(ngx_http_guard_rate_charge_t));
    if (charge == NULL) {
        return NGX_HTTP_GUARD_INTERNAL_ERROR;
    }

    refused = n;
    shadowed = 0;
    charged = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    now = ngx_http_guard_zone_clock_locked(zone);

    /* check every rule before charging any */

    for (i = 0; i < n; i++) {
        c = &checks[i];

        c->node = ngx_http_guard_zone_lookup(&zone->sh->limit.rate.rbtree,
                                             c->key.data, c->key.len,
                                             c->hash,
                                             NGX_HTTP_GUARD_RATE_OFF);

        c->tat = ngx_http_guard_rate_tat(c,
                                   (ngx_http_guard_rate_node_t *) c->node,
                                   now);

        if (c->tat - now > c->tau) {
            c->over = 1;

            if (c->shadow) {
                shadowed = 1;

            } else if (refused == n) {
                refused = i;
            }
        }
    }

    if (refused == n) {

        /* charge every rule that is not over */

        for (i = 0; i < n; i++) {
            c = &checks[i];

            if (c->over) {
                continue;
            }

            /* the lock is still held: the nodes found above are valid */

            if (c->node) {
                rn = (ngx_http_guard_rate_node_t *) c->node;
                ngx_queue_remove(&rn->lru.queue);

            } else {
                size = offsetof(ngx_http_guard_rate_node_t, data)
                       + c->key.len;

                rn = ngx_http_guard_zone_alloc_locked(zone, size, now);

                if (rn == NULL) {
                    /* a full zone never refuses: this key is not kept */
                    ngx_log_error(NGX_LOG_WARN,
                                  ngx_http_guard_request_log(r, &log), 0,
                                  "guard: zone full, rate key not kept");
                    continue;
                }

                rn->lru.node.key = c->hash;
                rn->len = (u_short) c->key.len;
                ngx_memcpy(rn->data, c->key.data, c->key.len);
                ngx_rbtree_insert(&zone->sh->limit.rate.rbtree,
                                  &rn->lru.node);
            }

            c->tat += c->t;
            rn->lru.expires = c->tat;
            rn->t = c->t;
            ngx_queue_insert_head(&zone->sh->limit.rate.queue,
                                  &rn->lru.queue);

            c->charged = 1;
            charged = 1;
        }
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (charged) {
        /* a stage after this one may still refuse: then it is given back */
        charge->zone = zone;
        charge->checks = checks;
        charge->n = n;
        charge->now = now;
        ctx->rate_charge = charge;
    }

    ctx->limit.refused = (refused != n);

    if (ngx_http_guard_rate_report(r, ctx, checks, n,
                                   refused != n ? refused : 0, now)
        != NGX_OK)
    {
        return NGX_HTTP_GUARD_INTERNAL_ERROR;
    }

    if (refused != n) {
        ngx_http_guard_metrics_rate_refused(r, checks[refused].rule->name);
        return NGX_HTTP_GUARD_RATE_LIMITED;
    }

    if (shadowed) {
        *shadow = 1;
        return NGX_HTTP_GUARD_RATE_LIMITED;
    }

    return NGX_HTTP_GUARD_OK;
}


/*
 * A request that Guard refuses after the rate stage charged it (the
 * concurrency stage, guardd's verdict, any later stage) uses no quota:
 * called by ngx_http_guard_refuse(), once.  Each TAT the request moved
 * forward moves back by the interval it was charged, which leaves the
 * charges of the requests counted since in place; never before now,
 * where a TAT means an idle key anyway.  A key evicted and counted anew
 * meanwhile, or counted under a rule a reload changed, is left alone.
 */

void
ngx_http_guard_limit_refund(ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx)
{
    uint64_t                       now;
    ngx_uint_t                     i;
    ngx_rbtree_node_t             *node;
    ngx_http_guard_zone_t         *zone;
    ngx_http_guard_rate_node_t    *rn;
    ngx_http_guard_rate_check_t   *c;
    ngx_http_guard_rate_charge_t  *charge;

    charge = ctx->rate_charge;

    if (charge == NULL) {
        return;
    }

    ctx->rate_charge = NULL;
    zone = charge->zone;

    ngx_shmtx_lock(&zone->shpool->mutex);

    now = ngx_http_guard_zone_clock_locked(zone);

    for (i = 0; i < charge->n; i++) {
        c = &charge->checks[i];

        if (!c->charged) {
            continue;
        }

        c->charged = 0;
        c->tat -= c->t;

        node = ngx_http_guard_zone_lookup(&zone->sh->limit.rate.rbtree,
                                          c->key.data, c->key.len, c->hash,
                                          NGX_HTTP_GUARD_RATE_OFF);
        if (node == NULL) {
            continue;
        }

        rn = (ngx_http_guard_rate_node_t *) node;

        if (rn->t != c->t) {
            continue;
        }

        rn->lru.expires = (rn->lru.expires > now + c->t)
                          ? rn->lru.expires - c->t : now;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "guard: rate charges given back, tenant \"%V\"",
                   &ctx->tenant);

    /* the RateLimit fields as if the request had not been counted */

    if (ctx->limit.set && !ctx->limit.refused) {
        ngx_http_guard_rate_pick(&ctx->limit, charge->checks, charge->n, 0,
                                 charge->now);
    }
}


/* RateLimit-Policy, RateLimit and Retry-After on the response */

/* the decimal digits of v, without the cost of ngx_sprintf() */

static u_char *
ngx_http_guard_limit_u64(u_char *p, uint64_t v)
{
    u_char   buf[NGX_INT64_LEN], *d;

    d = buf + NGX_INT64_LEN;

    do {
        *--d = (u_char) ('0' + v % 10);
        v /= 10;
    } while (v);

    return ngx_cpymem(p, d, buf + NGX_INT64_LEN - d);
}


ngx_int_t
ngx_http_guard_limit_set_headers(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx)
{
    u_char                       *p;
    ngx_str_t                     v;
    ngx_http_guard_limit_info_t  *info;

    info = &ctx->limit;

    if (!info->set) {
        return NGX_OK;
    }

    if (ngx_http_guard_add_header(r, "RateLimit-Policy", &info->policy)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    p = ngx_pnalloc(r->pool, info->name.len + sizeof("\"\";r=;t=") - 1
                             + 2 * NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v.data = p;
    *p++ = '"';
    p = ngx_cpymem(p, info->name.data, info->name.len);
    p = ngx_cpymem(p, "\";r=", sizeof("\";r=") - 1);
    p = ngx_http_guard_limit_u64(p, info->remaining);
    p = ngx_cpymem(p, ";t=", sizeof(";t=") - 1);
    p = ngx_http_guard_limit_u64(p, info->reset);
    v.len = p - v.data;

    if (ngx_http_guard_add_header(r, "RateLimit", &v) != NGX_OK) {
        return NGX_ERROR;
    }

    if (!info->refused) {
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v.data = p;
    v.len = ngx_http_guard_limit_u64(p, info->reset) - p;

    return ngx_http_guard_add_header(r, "Retry-After", &v);
}
