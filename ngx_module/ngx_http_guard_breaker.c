
/*
 * Copyright (C) Guard authors
 *
 * The circuit breaker stage.  A location names its breaker
 * ("guard_breaker NAME"); the key is the tenant and that name, and the
 * tenant's policy (or _default.json) holds the thresholds per name in its
 * "breaker" section (gd_breaker_find(): a name not listed has the
 * defaults).
 *
 * Each key is an entry of the guard zone (an rbtree with an LRU queue,
 * evicted with the zone's other entries), on the zone clock
 * (ngx_http_guard_zone_clock_locked()):
 *
 *   CLOSED     every call passes.  It is counted when it starts (in the
 *              check, under the mutex it takes anyway for the lookup) in
 *              a sliding window of NGX_HTTP_GUARD_BREAKER_BUCKETS time
 *              buckets over "window"; its outcome (the log phase) takes
 *              the mutex again only for a failure or a slow call, so the
 *              closed path with a healthy upstream is one lookup.  With
 *              at least min_calls in the window, a failure ratio >=
 *              failure_ratio or a slow-call ratio >= slow_ratio (checked
 *              when a call fails or is slow) opens it (a ratio of 0
 *              never does).
 *   OPEN       every call is refused at once (503 circuit_open,
 *              Retry-After: the seconds until half-open), for open_for.
 *   HALF_OPEN  exactly "probes" calls pass, counted in the zone under its
 *              mutex, so across all workers; the others are refused.
 *              All probes succeed: CLOSED, the window emptied.  One fails
 *              or is slow: OPEN again, for open_for * backoff (of the
 *              last open), at most open_for_max.  A probe whose outcome
 *              never comes (its worker died) is given up after
 *              open_for_max + window: the probes are offered again.
 *
 * Outcomes: a failure is an upstream status in failure_statuses (502
 * and 504 are what nginx sets for a connection error or timeout), or an
 * upstream state without status; a slow call's upstream response time
 * is over slow_ms.  A location without upstream counts its own status
 * and time.  A client abort (499) and Guard's own refusals count as
 * neither: a probe refused by a later stage is given back.
 *
 * Thresholds are read from the policy at each use, so a reload applies
 * them to the state kept: an OPEN breaker half-opens at the latest
 * open_for_max after it opened, a window of another width starts empty.
 *
 * Shadow (the breaker's "shadow", or the tenant policy's): transitions
 * are computed and recorded as in enforcement, no call is refused.
 * Every transition is a notice in the error log and an audit record.
 */


#include "ngx_http_guard_breaker.h"
#include "ngx_http_guard_policy.h"
#include "ngx_http_guard_zone.h"
#include "ngx_http_guard_problem.h"
#include "ngx_http_guard_audit.h"
#include "ngx_http_guard_metrics.h"


#define NGX_HTTP_GUARD_BREAKER_BUCKETS  10
#define NGX_HTTP_GUARD_BREAKER_LIST     1024  /* entries a walk reads */
#define NGX_HTTP_GUARD_BREAKER_KEEP     60000000  /* us kept idle, more */


typedef enum {
    NGX_HTTP_GUARD_BREAKER_CLOSED = 0,
    NGX_HTTP_GUARD_BREAKER_OPEN,
    NGX_HTTP_GUARD_BREAKER_HALF_OPEN
} ngx_http_guard_breaker_state_e;


typedef struct {
    uint64_t                     index;       /* time / width */
    uint32_t                     calls;
    uint32_t                     failures;
    uint32_t                     slow;
} ngx_http_guard_breaker_bucket_t;


typedef struct {
    ngx_http_guard_lru_node_t    lru;
    ngx_uint_t                   state;
    uint64_t                     gen;         /* transitions so far */
    uint64_t                     since;       /* in this state, us */
    uint64_t                     open_until;
    uint64_t                     open_for;    /* of the last open, us */
    uint32_t                     probes_taken;
    uint32_t                     probes_ok;
    uint64_t                     width;       /* of a bucket, us */
    ngx_http_guard_breaker_bucket_t
                                 buckets[NGX_HTTP_GUARD_BREAKER_BUCKETS];
    uint64_t                     transitions[3];  /* by state entered */
    u_short                      tenant_len;
    u_short                      len;
    u_char                       data[1];     /* tenant, 0, name */
} ngx_http_guard_breaker_node_t;


typedef struct {
    uint32_t                     calls;
    uint32_t                     failures;
    uint32_t                     slow;
} ngx_http_guard_breaker_counts_t;


/* a transition, made under the mutex, told once it is released */

typedef struct {
    ngx_uint_t                   from;
    ngx_uint_t                   to;
    ngx_http_guard_breaker_counts_t  counts;
    uint64_t                     open_for;    /* us, to OPEN */
    unsigned                     set:1;
} ngx_http_guard_breaker_move_t;


#define NGX_HTTP_GUARD_BREAKER_OFF                                           \
    offsetof(ngx_http_guard_breaker_node_t, len)


static void ngx_http_guard_breaker_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static void ngx_http_guard_breaker_window(ngx_http_guard_breaker_node_t *bn,
    const gd_breaker_t *b, uint64_t now, ngx_http_guard_breaker_counts_t *c);
static void ngx_http_guard_breaker_move(ngx_http_guard_breaker_node_t *bn,
    ngx_uint_t to, uint64_t now, ngx_http_guard_breaker_move_t *mv);
static void ngx_http_guard_breaker_tell(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx, const gd_breaker_t *b,
    ngx_http_guard_breaker_move_t *mv, ngx_uint_t shadow);
static const gd_breaker_t *ngx_http_guard_breaker_policy(
    ngx_http_guard_ctx_t *ctx, ngx_uint_t *shadow);
static ngx_http_guard_breaker_node_t *ngx_http_guard_breaker_add_locked(
    ngx_http_request_t *r, ngx_http_guard_zone_t *zone,
    ngx_http_guard_ctx_t *ctx, const gd_breaker_t *b);


/*
 * The time of the buckets, in microseconds: the worker's cached clock
 * (the same in every worker to a few milliseconds), so that counting a
 * call reads no clock.  The states' times are on the zone clock.
 */

#define ngx_http_guard_breaker_tick()  ((uint64_t) ngx_current_msec * 1000)

/* how long an idle breaker is kept: while it may matter, and a minute */

#define ngx_http_guard_breaker_keep(b)                                       \
    (((b)->window_ms + (b)->open_for_max_ms) * 1000                          \
     + NGX_HTTP_GUARD_BREAKER_KEEP)


static ngx_str_t  ngx_http_guard_breaker_states[] = {
    ngx_string("closed"),
    ngx_string("open"),
    ngx_string("half_open")
};


void
ngx_http_guard_breaker_init(ngx_http_guard_breaker_sh_t *sh)
{
    ngx_rbtree_init(&sh->lru.rbtree, &sh->lru.sentinel,
                    ngx_http_guard_breaker_insert);
    ngx_queue_init(&sh->lru.queue);
}


static void
ngx_http_guard_breaker_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_http_guard_zone_insert(temp, node, sentinel,
                               NGX_HTTP_GUARD_BREAKER_OFF);
}


/* "guard_breaker NAME | off" */

char *
ngx_http_guard_breaker_conf(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_guard_loc_conf_t *glcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i;

    if (glcf->breaker.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        ngx_str_set(&glcf->breaker, "");
        return NGX_CONF_OK;
    }

    /* as a policy's breaker names: 1-32 of A-Z a-z 0-9 _ - */

    if (value[1].len == 0 || value[1].len > 32) {
        return "needs a name of 1-32 characters, or \"off\"";
    }

    for (i = 0; i < value[1].len; i++) {
        if (!(isalnum(value[1].data[i]) || value[1].data[i] == '_'
              || value[1].data[i] == '-'))
        {
            return "needs a name of A-Z a-z 0-9 _ -, or \"off\"";
        }
    }

    glcf->breaker = value[1];

    return NGX_CONF_OK;
}


ngx_str_t
ngx_http_guard_breaker_state_name(ngx_uint_t state)
{
    ngx_str_t  none = ngx_null_string;

    if (state == 0 || state > 3) {
        return none;
    }

    return ngx_http_guard_breaker_states[state - 1];
}


/* the thresholds of the request's breaker, and whether it is in shadow */

static const gd_breaker_t *
ngx_http_guard_breaker_policy(ngx_http_guard_ctx_t *ctx, ngx_uint_t *shadow)
{
    const gd_policy_t   *p;
    const gd_breaker_t  *b;

    p = ctx->policy ? ctx->policy->p : NULL;

    b = gd_breaker_find(p, (char *) ctx->conf->breaker.data,
                        ctx->conf->breaker.len);

    *shadow = (b->shadow || (p && p->shadow));

    return b;
}


/* the access phase */

ngx_int_t
ngx_http_guard_breaker_check(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx, ngx_uint_t *shadow)
{
    u_char                         *p;
    size_t                          len;
    uint64_t                        now, cap, lease;
    ngx_uint_t                      refuse, in_shadow;
    ngx_str_t                      *name;
    const gd_breaker_t             *b;
    ngx_http_guard_zone_t          *zone;
    ngx_http_guard_breaker_node_t  *bn;
    ngx_http_guard_breaker_move_t   mv;

    /* an internal redirect to other settings decides again */
    ctx->breaker_key.len = 0;
    ctx->breaker_state = 0;
    ctx->breaker_probe = 0;
    ctx->breaker_counted = 0;
    ctx->breaker_shadowed = 0;

    name = &ctx->conf->breaker;

    if (name->len == 0 || ctx->tenant.len == 0) {
        return NGX_HTTP_GUARD_OK;
    }

    zone = ngx_http_guard_zone_get(r);
    if (zone == NULL) {
        return NGX_HTTP_GUARD_OK;
    }

    len = ctx->tenant.len + 1 + name->len;

    if (len > 0xffff) {
        return NGX_HTTP_GUARD_OK;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_HTTP_GUARD_INTERNAL_ERROR;
    }

    ctx->breaker_key.data = p;
    p = ngx_cpymem(p, ctx->tenant.data, ctx->tenant.len);
    *p++ = '\0';
    ngx_memcpy(p, name->data, name->len);
    ctx->breaker_key.len = len;
    ctx->breaker_hash = ngx_crc32_short(ctx->breaker_key.data, len);

    b = ngx_http_guard_breaker_policy(ctx, &in_shadow);

    ngx_memzero(&mv, sizeof(ngx_http_guard_breaker_move_t));
    refuse = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    bn = (ngx_http_guard_breaker_node_t *)
             ngx_http_guard_zone_lookup(&zone->sh->breaker.lru.rbtree,
                                        ctx->breaker_key.data, len,
                                        ctx->breaker_hash,
                                        NGX_HTTP_GUARD_BREAKER_OFF);

    if (bn == NULL) {
        bn = ngx_http_guard_breaker_add_locked(r, zone, ctx, b);

        if (bn == NULL) {
            /* a full zone never refuses: this call is not counted */
            ngx_shmtx_unlock(&zone->shpool->mutex);
            ctx->breaker_key.len = 0;
            ctx->breaker_state = NGX_HTTP_GUARD_BREAKER_CLOSED + 1;
            return NGX_HTTP_GUARD_OK;
        }

    } else {
        ngx_queue_remove(&bn->lru.queue);
        ngx_queue_insert_head(&zone->sh->breaker.lru.queue, &bn->lru.queue);
    }

    if (bn->state == NGX_HTTP_GUARD_BREAKER_CLOSED) {

        /*
         * The closed path: the call is counted now, in the bucket of its
         * start; its outcome takes the mutex again only when it fails or
         * is slow (or is no call after all: a 499, a later refusal).
         * The expiry moves on with the zone clock as last read.
         */

        now = ngx_http_guard_breaker_tick();
        ngx_http_guard_breaker_window(bn, b, now, NULL);
        bn->buckets[(now / bn->width) % NGX_HTTP_GUARD_BREAKER_BUCKETS]
            .calls++;

        cap = zone->sh->clock + ngx_http_guard_breaker_keep(b);

        if (bn->lru.expires < cap) {
            bn->lru.expires = cap;
        }

        ngx_shmtx_unlock(&zone->shpool->mutex);

        ctx->breaker_at = now;
        ctx->breaker_counted = 1;
        ctx->breaker_state = NGX_HTTP_GUARD_BREAKER_CLOSED + 1;

        return NGX_HTTP_GUARD_OK;
    }

    now = ngx_http_guard_zone_clock_locked(zone);

    if (bn->state == NGX_HTTP_GUARD_BREAKER_OPEN) {

        /* a reload may have lowered open_for_max: no stuck OPEN */

        cap = bn->since + b->open_for_max_ms * 1000;

        if (bn->open_until > cap) {
            bn->open_until = cap;
        }

        if (now >= bn->open_until) {
            ngx_http_guard_breaker_move(bn, NGX_HTTP_GUARD_BREAKER_HALF_OPEN,
                                        now, &mv);
            ngx_http_guard_breaker_window(bn, b, ngx_http_guard_breaker_tick(),
                                          &mv.counts);

        } else {
            refuse = 1;
            ctx->breaker_retry = (bn->open_until - now + 999999) / 1000000;
        }
    }

    if (bn->state == NGX_HTTP_GUARD_BREAKER_HALF_OPEN) {

        lease = (b->open_for_max_ms + b->window_ms) * 1000;

        if (now - bn->since > lease && bn->probes_taken) {
            /* probes that never told their outcome: offered again */
            bn->probes_taken = 0;
            bn->probes_ok = 0;
            bn->since = now;
        }

        if (bn->probes_taken < b->probes) {
            bn->probes_taken++;
            ctx->breaker_probe = 1;
            ctx->breaker_gen = bn->gen;

        } else {
            refuse = 1;
            ctx->breaker_retry = 1;
        }
    }

    ctx->breaker_state = bn->state + 1;

    if (mv.set) {
        bn->transitions[mv.to]++;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (mv.set) {
        ngx_http_guard_breaker_tell(r, ctx, b, &mv, in_shadow);
    }

    if (!refuse) {
        return NGX_HTTP_GUARD_OK;
    }

    if (in_shadow) {
        /* it passes, and its outcome is not the breaker's to count */
        ctx->breaker_shadowed = 1;
        *shadow = 1;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "guard: breaker \"%V\" refuses, retry after %T",
                   name, ctx->breaker_retry);

    return NGX_HTTP_GUARD_CIRCUIT_OPEN;
}


/* the log phase: the outcome of a call the breaker let through */

void
ngx_http_guard_breaker_outcome(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx)
{
    uint64_t                          now, tick, open_for;
    ngx_int_t                         status;
    ngx_uint_t                        i, failure, slow, in_shadow;
    ngx_msec_t                        ms;
    ngx_time_t                       *tp;
    const gd_breaker_t               *b;
    ngx_http_guard_zone_t            *zone;
    ngx_http_upstream_state_t        *st;
    ngx_http_guard_breaker_node_t    *bn;
    ngx_http_guard_breaker_move_t     mv;
    ngx_http_guard_breaker_bucket_t  *bk;
    ngx_http_guard_breaker_counts_t   c;

    if (ctx->breaker_key.len == 0 || ctx->breaker_shadowed) {
        return;
    }

    zone = ngx_http_guard_zone_get(r);
    if (zone == NULL) {
        return;
    }

    b = ngx_http_guard_breaker_policy(ctx, &in_shadow);

    status = r->headers_out.status;
    failure = 0;
    slow = 0;

    if (ctx->denied || status == NGX_HTTP_CLIENT_CLOSED_REQUEST) {
        /* neither: a probe taken is given back */
        status = -1;

    } else if (r->upstream_states && r->upstream_states->nelts) {
        st = r->upstream_states->elts;
        st = &st[r->upstream_states->nelts - 1];

        if (st->status == 0) {
            failure = 1;

        } else {
            status = st->status;
        }

        ms = st->response_time;

        if (ms != (ngx_msec_t) -1 && ms > b->slow_ms) {
            slow = 1;
        }

    } else {
        tp = ngx_timeofday();
        ms = (ngx_msec_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));

        if (ms > b->slow_ms) {
            slow = 1;
        }
    }

    for (i = 0; status > 0 && i < b->nfailure_statuses; i++) {
        if (status == b->failure_statuses[i]) {
            failure = 1;
        }
    }

    if (status != -1 && !failure && !slow && !ctx->breaker_probe) {
        /* a success, counted as a call when it started: nothing to do */
        return;
    }

    if (status == -1 && !ctx->breaker_probe && !ctx->breaker_counted) {
        return;
    }

    ngx_memzero(&mv, sizeof(ngx_http_guard_breaker_move_t));

    ngx_shmtx_lock(&zone->shpool->mutex);

    bn = (ngx_http_guard_breaker_node_t *)
             ngx_http_guard_zone_lookup(&zone->sh->breaker.lru.rbtree,
                                        ctx->breaker_key.data,
                                        ctx->breaker_key.len,
                                        ctx->breaker_hash,
                                        NGX_HTTP_GUARD_BREAKER_OFF);

    if (bn == NULL) {
        /* evicted meanwhile */
        ngx_shmtx_unlock(&zone->shpool->mutex);
        return;
    }

    tick = ngx_http_guard_breaker_tick();

    if (status == -1) {

        /* no call after all: uncounted, or a probe taken given back */

        if (ctx->breaker_probe && bn->gen == ctx->breaker_gen
            && bn->state == NGX_HTTP_GUARD_BREAKER_HALF_OPEN
            && bn->probes_taken)
        {
            bn->probes_taken--;
        }

        if (ctx->breaker_counted
            && bn->state == NGX_HTTP_GUARD_BREAKER_CLOSED && bn->width)
        {
            bk = &bn->buckets[(ctx->breaker_at / bn->width)
                              % NGX_HTTP_GUARD_BREAKER_BUCKETS];

            if (bk->index == ctx->breaker_at / bn->width && bk->calls) {
                bk->calls--;
            }
        }

        ngx_shmtx_unlock(&zone->shpool->mutex);
        return;
    }

    now = ngx_http_guard_zone_clock_locked(zone);

    ngx_queue_remove(&bn->lru.queue);
    ngx_queue_insert_head(&zone->sh->breaker.lru.queue, &bn->lru.queue);

    switch (bn->state) {

    case NGX_HTTP_GUARD_BREAKER_CLOSED:

        if (!ctx->breaker_counted) {
            /* a call of another state (a probe of an earlier half-open) */
            break;
        }

        ngx_http_guard_breaker_window(bn, b, tick, NULL);

        bk = &bn->buckets[(tick / bn->width) % NGX_HTTP_GUARD_BREAKER_BUCKETS];
        bk->failures += failure;
        bk->slow += slow;

        /* a call that started before the window: counted again, in it */

        if (ctx->breaker_at / bn->width + NGX_HTTP_GUARD_BREAKER_BUCKETS
            <= tick / bn->width)
        {
            bk->calls++;
        }

        ngx_http_guard_breaker_window(bn, b, tick, &c);

        if (c.calls >= b->min_calls
            && ((b->failure_ratio > 0
                 && c.failures >= b->failure_ratio * c.calls)
                || (b->slow_ratio > 0 && c.slow >= b->slow_ratio * c.calls)))
        {
            ngx_http_guard_breaker_move(bn, NGX_HTTP_GUARD_BREAKER_OPEN, now,
                                        &mv);
            mv.counts = c;
            bn->open_for = b->open_for_ms * 1000;
        }

        break;

    case NGX_HTTP_GUARD_BREAKER_HALF_OPEN:

        if (!ctx->breaker_probe || bn->gen != ctx->breaker_gen) {
            /* not a probe of this half-open: not counted */
            break;
        }

        if (failure || slow) {
            open_for = (uint64_t) (bn->open_for * b->backoff);

            if (open_for < b->open_for_ms * 1000) {
                open_for = b->open_for_ms * 1000;
            }

            if (open_for > b->open_for_max_ms * 1000) {
                open_for = b->open_for_max_ms * 1000;
            }

            mv.counts.calls = bn->probes_ok + 1;
            mv.counts.failures = failure;
            mv.counts.slow = slow;

            ngx_http_guard_breaker_move(bn, NGX_HTTP_GUARD_BREAKER_OPEN, now,
                                        &mv);
            bn->open_for = open_for;
            break;
        }

        if (++bn->probes_ok >= b->probes) {
            mv.counts.calls = bn->probes_ok;
            mv.counts.failures = 0;
            mv.counts.slow = 0;

            ngx_http_guard_breaker_move(bn, NGX_HTTP_GUARD_BREAKER_CLOSED,
                                        now, &mv);
            ngx_memzero(bn->buckets, sizeof(bn->buckets));
            bn->open_for = 0;
        }

        break;

    default: /* NGX_HTTP_GUARD_BREAKER_OPEN: a call from before, not counted */
        break;
    }

    if (mv.set) {
        bn->transitions[mv.to]++;

        if (mv.to == NGX_HTTP_GUARD_BREAKER_OPEN) {
            bn->open_until = now + bn->open_for;
            mv.open_for = bn->open_for;
        }
    }

    /* kept while it may matter, and a minute more */

    bn->lru.expires = ngx_max(now, bn->open_until)
                      + ngx_http_guard_breaker_keep(b);

    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (mv.set) {
        ngx_http_guard_breaker_tell(r, ctx, b, &mv, in_shadow);
    }
}


/* a new breaker, closed, the mutex held; NULL when the zone is full */

static ngx_http_guard_breaker_node_t *
ngx_http_guard_breaker_add_locked(ngx_http_request_t *r,
    ngx_http_guard_zone_t *zone, ngx_http_guard_ctx_t *ctx,
    const gd_breaker_t *b)
{
    size_t                          size;
    uint64_t                        now;
    ngx_log_t                       log;
    ngx_http_guard_breaker_node_t  *bn;

    size = offsetof(ngx_http_guard_breaker_node_t, data)
           + ctx->breaker_key.len;

    bn = ngx_http_guard_zone_alloc_locked(zone, size,
                                          ngx_http_guard_zone_now());

    if (bn == NULL) {
        ngx_log_error(NGX_LOG_WARN, ngx_http_guard_request_log(r, &log), 0,
                      "guard: zone full, breaker not kept");
        return NULL;
    }

    now = ngx_http_guard_zone_clock_locked(zone);

    ngx_memzero(bn, size);
    bn->lru.node.key = ctx->breaker_hash;
    bn->lru.expires = now + ngx_http_guard_breaker_keep(b);
    bn->tenant_len = (u_short) ctx->tenant.len;
    bn->len = (u_short) ctx->breaker_key.len;
    ngx_memcpy(bn->data, ctx->breaker_key.data, ctx->breaker_key.len);
    bn->since = now;

    ngx_rbtree_insert(&zone->sh->breaker.lru.rbtree, &bn->lru.node);
    ngx_queue_insert_head(&zone->sh->breaker.lru.queue, &bn->lru.queue);

    return bn;
}


/*
 * The counts of the window at now into c (c NULL: only its buckets made
 * current).  A window of another width (a reload changed it) starts
 * empty.  The zone mutex is held.
 */

static void
ngx_http_guard_breaker_window(ngx_http_guard_breaker_node_t *bn,
    const gd_breaker_t *b, uint64_t now, ngx_http_guard_breaker_counts_t *c)
{
    uint64_t                          width, index;
    ngx_uint_t                        i;
    ngx_http_guard_breaker_bucket_t  *bk;

    width = b->window_ms * 1000 / NGX_HTTP_GUARD_BREAKER_BUCKETS;

    if (width == 0) {
        width = 1;
    }

    if (bn->width != width) {
        ngx_memzero(bn->buckets, sizeof(bn->buckets));
        bn->width = width;
    }

    index = now / width;

    bk = &bn->buckets[index % NGX_HTTP_GUARD_BREAKER_BUCKETS];

    if (bk->index != index) {
        ngx_memzero(bk, sizeof(ngx_http_guard_breaker_bucket_t));
        bk->index = index;
    }

    if (c == NULL) {
        return;
    }

    ngx_memzero(c, sizeof(ngx_http_guard_breaker_counts_t));

    for (i = 0; i < NGX_HTTP_GUARD_BREAKER_BUCKETS; i++) {
        bk = &bn->buckets[i];

        if (bk->index <= index
            && bk->index + NGX_HTTP_GUARD_BREAKER_BUCKETS > index)
        {
            c->calls += bk->calls;
            c->failures += bk->failures;
            c->slow += bk->slow;
        }
    }
}


/* a transition, the mutex held */

static void
ngx_http_guard_breaker_move(ngx_http_guard_breaker_node_t *bn,
    ngx_uint_t to, uint64_t now, ngx_http_guard_breaker_move_t *mv)
{
    mv->from = bn->state;
    mv->to = to;
    mv->open_for = 0;
    mv->set = 1;

    bn->state = to;
    bn->since = now;
    bn->gen++;
    bn->probes_taken = 0;
    bn->probes_ok = 0;
}


/* a transition told: a notice in the error log, and an audit record */

static void
ngx_http_guard_breaker_tell(ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx,
    const gd_breaker_t *b, ngx_http_guard_breaker_move_t *mv,
    ngx_uint_t shadow)
{
    json_t     *rec;
    ngx_log_t   log;
    ngx_str_t  *name;

    name = &ctx->conf->breaker;

    ngx_log_error(NGX_LOG_NOTICE, ngx_http_guard_request_log(r, &log), 0,
                  "guard: %sbreaker \"%V\" of tenant \"%V\": %V -> %V, "
                  "calls: %uD, failures: %uD, slow: %uD",
                  shadow ? "shadow " : "", name, &ctx->tenant,
                  &ngx_http_guard_breaker_states[mv->from],
                  &ngx_http_guard_breaker_states[mv->to],
                  mv->counts.calls, mv->counts.failures, mv->counts.slow);

    rec = json_pack("{s:s%,s:s%,s:s%,s:I,s:I,s:I,s:I}",
                    "name", (char *) name->data, name->len,
                    "from",
                    (char *) ngx_http_guard_breaker_states[mv->from].data,
                    ngx_http_guard_breaker_states[mv->from].len,
                    "to",
                    (char *) ngx_http_guard_breaker_states[mv->to].data,
                    ngx_http_guard_breaker_states[mv->to].len,
                    "calls", (json_int_t) mv->counts.calls,
                    "failures", (json_int_t) mv->counts.failures,
                    "slow", (json_int_t) mv->counts.slow,
                    "window_ms", (json_int_t) b->window_ms);

    if (rec == NULL) {
        return;
    }

    if (mv->to == NGX_HTTP_GUARD_BREAKER_OPEN) {
        json_object_set_new(rec, "open_for_ms",
                            json_integer((json_int_t) (mv->open_for / 1000)));
    }

    ngx_http_guard_audit_breaker(r, &ctx->tenant, rec, shadow);

    json_decref(rec);
}


/*
 * Every breaker of the zone: the entries there now, the newest first, at
 * most NGX_HTTP_GUARD_BREAKER_LIST; copied under the mutex into an array
 * of the pool.
 */

typedef struct {
    ngx_str_t                    tenant;
    ngx_str_t                    name;
    ngx_uint_t                   state;
    ngx_http_guard_breaker_counts_t  counts;
    uint64_t                     transitions[3];
    time_t                       retry_after;
} ngx_http_guard_breaker_view_t;


static ngx_array_t *
ngx_http_guard_breaker_list(ngx_http_request_t *r)
{
    u_char                          *p;
    uint64_t                         now, index;
    ngx_uint_t                       i;
    ngx_queue_t                     *q;
    ngx_array_t                     *a;
    ngx_http_guard_zone_t           *zone;
    ngx_http_guard_breaker_node_t   *bn;
    ngx_http_guard_breaker_view_t   *v;
    ngx_http_guard_breaker_bucket_t *bk;

    a = ngx_array_create(r->pool, 8, sizeof(ngx_http_guard_breaker_view_t));
    if (a == NULL) {
        return NULL;
    }

    zone = ngx_http_guard_zone_get(r);
    if (zone == NULL) {
        return a;
    }

    ngx_shmtx_lock(&zone->shpool->mutex);

    now = ngx_http_guard_zone_clock_locked(zone);

    for (q = ngx_queue_head(&zone->sh->breaker.lru.queue);
         q != ngx_queue_sentinel(&zone->sh->breaker.lru.queue)
         && a->nelts < NGX_HTTP_GUARD_BREAKER_LIST;
         q = ngx_queue_next(q))
    {
        bn = ngx_queue_data(q, ngx_http_guard_breaker_node_t, lru.queue);

        v = ngx_array_push(a);
        p = ngx_pnalloc(r->pool, bn->len);

        if (v == NULL || p == NULL) {
            break;
        }

        ngx_memcpy(p, bn->data, bn->len);
        v->tenant.data = p;
        v->tenant.len = bn->tenant_len;
        v->name.data = p + bn->tenant_len + 1;
        v->name.len = bn->len - bn->tenant_len - 1;
        v->state = bn->state;
        ngx_memcpy(v->transitions, bn->transitions, sizeof(v->transitions));
        ngx_memzero(&v->counts, sizeof(v->counts));

        /* the window's counts, with the width it was counted in */

        index = bn->width ? ngx_http_guard_breaker_tick() / bn->width : 0;

        for (i = 0; bn->width && i < NGX_HTTP_GUARD_BREAKER_BUCKETS; i++) {
            bk = &bn->buckets[i];

            if (bk->index <= index
                && bk->index + NGX_HTTP_GUARD_BREAKER_BUCKETS > index)
            {
                v->counts.calls += bk->calls;
                v->counts.failures += bk->failures;
                v->counts.slow += bk->slow;
            }
        }

        v->retry_after = 0;

        if (bn->state == NGX_HTTP_GUARD_BREAKER_OPEN && bn->open_until > now)
        {
            v->retry_after = (bn->open_until - now + 999999) / 1000000;
        }
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return a;
}


/* tenant, breaker, state and retry_after of a breaker, into o */

static void
ngx_http_guard_breaker_json(json_t *o, ngx_http_guard_breaker_view_t *v)
{
    json_object_set_new(o, "tenant",
                        ngx_http_guard_json_text(v->tenant.data,
                                                 v->tenant.len));
    json_object_set_new(o, "breaker",
                        json_stringn((char *) v->name.data, v->name.len));
    json_object_set_new(o, "state",
                        json_string((char *)
                                ngx_http_guard_breaker_states[v->state].data));
    json_object_set_new(o, "retry_after",
                        json_integer((json_int_t) v->retry_after));
}


/* guard_status JSON: "breakers", an array */

json_t *
ngx_http_guard_breaker_status(ngx_http_request_t *r)
{
    json_t                         *arr, *o;
    ngx_uint_t                      i;
    ngx_array_t                    *a;
    ngx_http_guard_breaker_view_t  *v;

    a = ngx_http_guard_breaker_list(r);
    arr = json_array();

    if (a == NULL || arr == NULL) {
        json_decref(arr);
        return NULL;
    }

    v = a->elts;

    for (i = 0; i < a->nelts; i++) {
        o = json_object();

        if (o == NULL || json_array_append_new(arr, o) != 0) {
            break;
        }

        ngx_http_guard_breaker_json(o, &v[i]);

        json_object_set_new(o, "calls", json_integer(v[i].counts.calls));
        json_object_set_new(o, "failures",
                            json_integer(v[i].counts.failures));
        json_object_set_new(o, "slow", json_integer(v[i].counts.slow));
        json_object_set_new(o, "transitions",
                json_pack("{s:I,s:I,s:I}",
                          "closed", (json_int_t) v[i].transitions[0],
                          "open", (json_int_t) v[i].transitions[1],
                          "half_open", (json_int_t) v[i].transitions[2]));
    }

    return arr;
}


/* the Prometheus text of every breaker */

ngx_int_t
ngx_http_guard_breaker_prom(ngx_http_request_t *r, ngx_str_t *text)
{
    u_char                         *p, *labels;
    size_t                          size, most;
    ngx_uint_t                      i, s;
    ngx_array_t                    *a;
    ngx_http_guard_breaker_view_t  *v;

    static const char  *heads =
        "# HELP guard_breaker_state The state of a circuit breaker: "
        "0 closed, 1 open, 2 half-open.\n"
        "# TYPE guard_breaker_state gauge\n";

    a = ngx_http_guard_breaker_list(r);
    if (a == NULL) {
        return NGX_ERROR;
    }

    v = a->elts;

    /* a label set escaped is at most twice as long, and 64 more */

    size = 1024;
    most = 0;

    for (i = 0; i < a->nelts; i++) {
        size += 8 * (2 * (v[i].tenant.len + v[i].name.len) + 64 + 96);
        most = ngx_max(most, v[i].tenant.len + v[i].name.len);
    }

    text->data = ngx_pnalloc(r->pool, size);
    if (text->data == NULL) {
        return NGX_ERROR;
    }

    labels = ngx_pnalloc(r->pool, 2 * most + 64);
    if (labels == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(text->data, heads, ngx_strlen(heads));

    /* each metric: its head, then a line per breaker */

    for (s = 0; s < 5; s++) {

        switch (s) {
        case 1:
            p = ngx_sprintf(p, "# HELP guard_breaker_calls Calls in a "
                               "breaker's window.\n"
                               "# TYPE guard_breaker_calls gauge\n");
            break;
        case 2:
            p = ngx_sprintf(p, "# HELP guard_breaker_failures Failed calls "
                               "in a breaker's window.\n"
                               "# TYPE guard_breaker_failures gauge\n");
            break;
        case 3:
            p = ngx_sprintf(p, "# HELP guard_breaker_slow_calls Slow calls "
                               "in a breaker's window.\n"
                               "# TYPE guard_breaker_slow_calls gauge\n");
            break;
        case 4:
            p = ngx_sprintf(p, "# HELP guard_breaker_transitions_total "
                               "Transitions of a breaker, per state "
                               "entered.\n"
                               "# TYPE guard_breaker_transitions_total "
                               "counter\n");
            break;
        }

        for (i = 0; i < a->nelts; i++) {
            u_char  *l;

            l = ngx_cpymem(labels, "tenant=\"", sizeof("tenant=\"") - 1);
            l = ngx_http_guard_prom_escape(l, v[i].tenant.data,
                                           v[i].tenant.len);
            l = ngx_cpymem(l, "\",breaker=\"", sizeof("\",breaker=\"") - 1);
            l = ngx_http_guard_prom_escape(l, v[i].name.data, v[i].name.len);
            *l++ = '"';

            switch (s) {
            case 0:
                p = ngx_sprintf(p, "guard_breaker_state{%*s} %ui\n",
                                l - labels, labels, v[i].state);
                break;
            case 1:
                p = ngx_sprintf(p, "guard_breaker_calls{%*s} %uD\n",
                                l - labels, labels, v[i].counts.calls);
                break;
            case 2:
                p = ngx_sprintf(p, "guard_breaker_failures{%*s} %uD\n",
                                l - labels, labels, v[i].counts.failures);
                break;
            case 3:
                p = ngx_sprintf(p, "guard_breaker_slow_calls{%*s} %uD\n",
                                l - labels, labels, v[i].counts.slow);
                break;
            default:
                p = ngx_sprintf(p, "guard_breaker_transitions_total{%*s,"
                                   "to=\"closed\"} %uL\n"
                                   "guard_breaker_transitions_total{%*s,"
                                   "to=\"open\"} %uL\n"
                                   "guard_breaker_transitions_total{%*s,"
                                   "to=\"half_open\"} %uL\n",
                                l - labels, labels, v[i].transitions[0],
                                l - labels, labels, v[i].transitions[1],
                                l - labels, labels, v[i].transitions[2]);
            }
        }
    }

    text->len = p - text->data;

    return NGX_OK;
}


/*
 * For the readiness check: {tenant, breaker, state, retry_after} of each
 * breaker that is not closed, appended to arr; returns how many.
 */

ngx_uint_t
ngx_http_guard_breaker_open_list(ngx_http_request_t *r, json_t *arr)
{
    json_t                         *o;
    ngx_uint_t                      i, n;
    ngx_array_t                    *a;
    ngx_http_guard_breaker_view_t  *v;

    a = ngx_http_guard_breaker_list(r);
    if (a == NULL) {
        return 0;
    }

    v = a->elts;
    n = 0;

    for (i = 0; i < a->nelts; i++) {
        if (v[i].state == NGX_HTTP_GUARD_BREAKER_CLOSED) {
            continue;
        }

        o = json_object();

        if (o == NULL || json_array_append_new(arr, o) != 0) {
            break;
        }

        ngx_http_guard_breaker_json(o, &v[i]);
        n++;
    }

    return n;
}
