
/*
 * Copyright (C) Guard authors
 *
 * The concurrency stage: a bulkhead per tenant.  At most
 * limits.concurrency.max requests of a tenant are in flight; with
 * limits.concurrency.queue, up to that many more wait for a slot, in the
 * order they came, across all workers, for queue_timeout at most.
 *
 * Shared state, in the guard zone, the mutex held around every change:
 * one node per tenant with the count of slots held, its holders and its
 * waiters, each an entry that names its owner process (ngx_pid).  The
 * waiters are one FIFO queue: a slot that comes free goes to the head
 * waiter directly (it is "granted": the entry moves to the holders with
 * the count unchanged), so that a newcomer never overtakes a waiter.
 *
 * A worker cannot signal another worker's events, so a waiting request
 * polls: a timer, 1 ms at first, doubling up to 8 ms, that reads its
 * entry's granted flag without the mutex (only the owner frees its
 * entry).  A release in the waiter's own worker posts its wake event at
 * once.  The cost of a wait is a timer per waiter and, at 8 ms, 125
 * reads a second of one word; the mutex is taken only to give up (the
 * timeout) and, every 100 ms, to look for dead owners.
 *
 * Nothing is leaked: a request gives back its slot or its place from a
 * pool cleanup, which runs however it ends (normal end, client abort,
 * upstream error, after an internal redirect, the graceful shutdown of an
 * old worker after a reload, whose timers keep it until its waiters are
 * served or time out).  A worker killed outright runs no cleanup: its
 * entries stay, with its pid.  A request that finds the tenant's slots
 * taken, and a waiter every 100 ms, look at the owners of the tenant's
 * entries (at most every 100 ms per tenant): an owner that kill(pid, 0)
 * says is gone (ESRCH) has its slots and places given back.
 */


#include "ngx_http_guard_bulkhead.h"
#include "ngx_http_guard_zone.h"
#include "ngx_http_guard_policy.h"
#include "ngx_http_guard_problem.h"


#define NGX_HTTP_GUARD_BH_POLL_MIN   1        /* ms */
#define NGX_HTTP_GUARD_BH_POLL_MAX   8        /* ms */
#define NGX_HTTP_GUARD_BH_REAP       100      /* ms between owner checks */
#define NGX_HTTP_GUARD_BH_PIDS       16       /* owners checked at once */


typedef struct {
    ngx_queue_t                  queue;       /* holders or waiters */
    ngx_pid_t                    pid;         /* the owner process */
    ngx_atomic_t                 granted;     /* holds a slot */
    void                        *waiter;      /* in the owner's memory */
} ngx_http_guard_bh_entry_t;


typedef struct {
    ngx_rbtree_node_t            node;
    ngx_queue_t                  holders;
    ngx_queue_t                  waiters;
    ngx_msec_t                   reap_at;     /* next check of owners */
    uint32_t                     count;       /* slots held */
    uint32_t                     waiting;
    uint32_t                     max;         /* the latest max seen */
    u_short                      len;
    u_char                       data[1];
} ngx_http_guard_bh_node_t;


typedef enum {
    NGX_HTTP_GUARD_BH_NONE = 0,
    NGX_HTTP_GUARD_BH_WAITING,
    NGX_HTTP_GUARD_BH_HOLDING,
    NGX_HTTP_GUARD_BH_TIMED_OUT
} ngx_http_guard_bh_state_e;


/* the request's side, in a pool cleanup */

typedef struct {
    ngx_http_request_t          *request;
    ngx_http_guard_zone_t       *zone;
    ngx_http_guard_bh_node_t    *node;
    ngx_http_guard_bh_entry_t   *entry;
    ngx_event_t                  poll;
    ngx_event_t                  wake;
    ngx_msec_t                   deadline;
    ngx_msec_t                   delay;
    ngx_msec_t                   checked;     /* the last owner check */
    ngx_http_guard_bh_state_e    state;
} ngx_http_guard_bh_t;


#define NGX_HTTP_GUARD_BH_OFF  offsetof(ngx_http_guard_bh_node_t, len)


static void ngx_http_guard_bh_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_http_guard_bh_t *ngx_http_guard_bh_find(ngx_http_request_t *r);
static ngx_int_t ngx_http_guard_bh_join_locked(ngx_http_guard_bh_t *bh,
    ngx_http_guard_zone_t *zone, ngx_http_guard_bh_node_t *node,
    ngx_uint_t granted);
static void ngx_http_guard_bh_remove_locked(ngx_http_guard_zone_t *zone,
    ngx_http_guard_bh_node_t *node, ngx_http_guard_bh_entry_t *e);
static void ngx_http_guard_bh_grant_locked(ngx_http_guard_zone_t *zone,
    ngx_http_guard_bh_node_t *node);
static void ngx_http_guard_bh_reap_locked(ngx_http_guard_zone_t *zone,
    ngx_http_guard_bh_node_t *node, ngx_uint_t force);
static void ngx_http_guard_bh_settle_locked(ngx_http_guard_zone_t *zone,
    ngx_http_guard_bh_node_t *node);
static void ngx_http_guard_bh_poll(ngx_event_t *ev);
static void ngx_http_guard_bh_wake(ngx_event_t *ev);
static void ngx_http_guard_bh_check(ngx_http_guard_bh_t *bh);
static void ngx_http_guard_bh_cleanup(void *data);


void
ngx_http_guard_bulkhead_init(ngx_rbtree_t *tree, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_init(tree, sentinel, ngx_http_guard_bh_insert);
}


static void
ngx_http_guard_bh_insert(ngx_rbtree_node_t *temp, ngx_rbtree_node_t *node,
    ngx_rbtree_node_t *sentinel)
{
    ngx_http_guard_zone_insert(temp, node, sentinel, NGX_HTTP_GUARD_BH_OFF);
}


/*
 * Takes a slot, or a place in the queue.  NGX_AGAIN: the request waits,
 * and is resumed at this stage once it has a slot or its wait is over.
 */

ngx_int_t
ngx_http_guard_bulkhead(ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx,
    ngx_uint_t *shadow)
{
    size_t                      size;
    uint32_t                    hash;
    ngx_uint_t                  over, in_shadow;
    ngx_log_t                   log;
    const gd_policy_t          *p;
    ngx_rbtree_node_t          *node;
    ngx_pool_cleanup_t         *cln;
    ngx_http_guard_bh_t        *bh;
    ngx_http_guard_zone_t      *zone;
    ngx_http_guard_bh_node_t   *cn;

    if (ctx->policy == NULL || ctx->policy->p->concurrency == 0
        || ctx->holds_slot)
    {
        return NGX_HTTP_GUARD_OK;
    }

    bh = ngx_http_guard_bh_find(r);

    if (bh && bh->state == NGX_HTTP_GUARD_BH_WAITING) {

        if (!bh->entry->granted) {
            /* resumed by something else (a write event): wait on */
            return NGX_AGAIN;
        }

        if (bh->poll.timer_set) {
            ngx_del_timer(&bh->poll);
        }

        if (bh->wake.posted) {
            ngx_delete_posted_event(&bh->wake);
        }

        r->read_event_handler = ngx_http_block_reading;
        bh->state = NGX_HTTP_GUARD_BH_HOLDING;
        ctx->holds_slot = 1;

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "guard: concurrency slot after waiting, tenant \"%V\"",
                       &ctx->tenant);

        return NGX_HTTP_GUARD_OK;
    }

    if (bh && bh->state == NGX_HTTP_GUARD_BH_TIMED_OUT) {
        r->read_event_handler = ngx_http_block_reading;
        bh->state = NGX_HTTP_GUARD_BH_NONE;

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "guard: concurrency queue timeout, tenant \"%V\"",
                       &ctx->tenant);

        return NGX_HTTP_GUARD_CONCURRENCY_LIMITED;
    }

    zone = ngx_http_guard_zone_get(r);
    if (zone == NULL || ctx->tenant.len > 0xffff) {
        return NGX_HTTP_GUARD_OK;
    }

    p = ctx->policy->p;
    in_shadow = p->shadow || p->concurrency_shadow;

    if (bh == NULL) {
        cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_http_guard_bh_t));
        if (cln == NULL) {
            return NGX_HTTP_GUARD_INTERNAL_ERROR;
        }

        bh = cln->data;
        ngx_memzero(bh, sizeof(ngx_http_guard_bh_t));
        bh->request = r;
        cln->handler = ngx_http_guard_bh_cleanup;
    }

    hash = ngx_crc32_short(ctx->tenant.data, ctx->tenant.len);

    ngx_shmtx_lock(&zone->shpool->mutex);

    node = ngx_http_guard_zone_lookup(&zone->sh->limit.conc_rbtree,
                                      ctx->tenant.data, ctx->tenant.len,
                                      hash, NGX_HTTP_GUARD_BH_OFF);

    if (node) {
        cn = (ngx_http_guard_bh_node_t *) node;

    } else {
        size = offsetof(ngx_http_guard_bh_node_t, data) + ctx->tenant.len;

        cn = ngx_http_guard_zone_alloc_locked(zone, size,
                                              ngx_http_guard_zone_now());
        if (cn == NULL) {
            ngx_shmtx_unlock(&zone->shpool->mutex);
            goto full;
        }

        ngx_memzero(cn, offsetof(ngx_http_guard_bh_node_t, data));
        cn->node.key = hash;
        ngx_queue_init(&cn->holders);
        ngx_queue_init(&cn->waiters);
        cn->len = (u_short) ctx->tenant.len;
        ngx_memcpy(cn->data, ctx->tenant.data, ctx->tenant.len);
        ngx_rbtree_insert(&zone->sh->limit.conc_rbtree, &cn->node);
    }

    /* a reload may have changed max: the latest applies to all */
    cn->max = p->concurrency;

    if (cn->count >= cn->max) {
        /* the slots are taken: by live owners? */
        ngx_http_guard_bh_reap_locked(zone, cn, 0);
    }

    ngx_http_guard_bh_grant_locked(zone, cn);

    /* after the grant, a free slot means that nobody waits */

    over = (cn->count >= cn->max);

    if (!over || in_shadow) {
        /* a shadowed request is in flight all the same: count it */

        if (ngx_http_guard_bh_join_locked(bh, zone, cn, 1) != NGX_OK) {
            ngx_http_guard_bh_settle_locked(zone, cn);
            ngx_shmtx_unlock(&zone->shpool->mutex);
            goto full;
        }

        ngx_shmtx_unlock(&zone->shpool->mutex);

        ctx->holds_slot = 1;

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "guard: concurrency slot taken, tenant \"%V\"",
                       &ctx->tenant);

        if (over) {
            *shadow = 1;
            return NGX_HTTP_GUARD_CONCURRENCY_LIMITED;
        }

        return NGX_HTTP_GUARD_OK;
    }

    if (cn->waiting >= p->concurrency_queue) {
        /* no queue, or a full one (the node holds slots: it stays) */
        ngx_shmtx_unlock(&zone->shpool->mutex);

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "guard: concurrency limited, tenant \"%V\", "
                       "%uD waiting", &ctx->tenant, cn->waiting);

        return NGX_HTTP_GUARD_CONCURRENCY_LIMITED;
    }

    if (ngx_http_guard_bh_join_locked(bh, zone, cn, 0) != NGX_OK) {
        ngx_shmtx_unlock(&zone->shpool->mutex);
        goto full;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    bh->deadline = ngx_current_msec + p->concurrency_queue_timeout_ms;
    bh->delay = NGX_HTTP_GUARD_BH_POLL_MIN;
    bh->checked = ngx_current_msec;

    /* the request's connection, for nginx's debug lines */
    bh->poll.handler = ngx_http_guard_bh_poll;
    bh->poll.data = r->connection;
    bh->poll.log = r->connection->log;
    bh->wake.handler = ngx_http_guard_bh_wake;
    bh->wake.data = r->connection;
    bh->wake.log = r->connection->log;

    ngx_add_timer(&bh->poll, bh->delay);

    /* a client that goes away while it waits gives its place back */
    r->read_event_handler = ngx_http_test_reading;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "guard: concurrency queue, tenant \"%V\", place %uD",
                   &ctx->tenant, cn->waiting);

    return NGX_AGAIN;

full:

    /* a full zone never refuses: this request is not counted */
    ngx_log_error(NGX_LOG_WARN, ngx_http_guard_request_log(r, &log), 0,
                  "guard: zone full, concurrency not counted");

    return NGX_HTTP_GUARD_OK;
}


/* the request's bulkhead state, from an earlier call, or NULL */

static ngx_http_guard_bh_t *
ngx_http_guard_bh_find(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t  *cln;

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_guard_bh_cleanup) {
            return cln->data;
        }
    }

    return NULL;
}


/* the request takes a slot (granted) or the last place in the queue */

static ngx_int_t
ngx_http_guard_bh_join_locked(ngx_http_guard_bh_t *bh,
    ngx_http_guard_zone_t *zone, ngx_http_guard_bh_node_t *node,
    ngx_uint_t granted)
{
    ngx_http_guard_bh_entry_t  *e;

    e = ngx_http_guard_zone_alloc_locked(zone,
                                         sizeof(ngx_http_guard_bh_entry_t),
                                         ngx_http_guard_zone_now());
    if (e == NULL) {
        return NGX_ERROR;
    }

    e->pid = ngx_pid;
    e->granted = granted;
    e->waiter = granted ? NULL : bh;

    bh->zone = zone;
    bh->node = node;
    bh->entry = e;

    if (granted) {
        ngx_queue_insert_tail(&node->holders, &e->queue);
        node->count++;
        bh->state = NGX_HTTP_GUARD_BH_HOLDING;

    } else {
        ngx_queue_insert_tail(&node->waiters, &e->queue);
        bh->state = NGX_HTTP_GUARD_BH_WAITING;
        node->waiting++;
        (void) ngx_atomic_fetch_add(&zone->sh->metrics.concurrency_waiting, 1);
        (void) ngx_atomic_fetch_add(&zone->sh->metrics.concurrency_queued, 1);
    }

    return NGX_OK;
}


/* an entry leaves: its slot or its place is free */

static void
ngx_http_guard_bh_remove_locked(ngx_http_guard_zone_t *zone,
    ngx_http_guard_bh_node_t *node, ngx_http_guard_bh_entry_t *e)
{
    ngx_queue_remove(&e->queue);

    if (e->granted) {
        node->count--;

    } else {
        node->waiting--;
        (void) ngx_atomic_fetch_add(&zone->sh->metrics.concurrency_waiting,
                                    (ngx_atomic_int_t) -1);
    }

    ngx_slab_free_locked(zone->shpool, e);
}


/*
 * Free slots go to the head waiters, in order.  A waiter of this worker
 * is woken at once; the others see their granted flag when they poll.
 */

static void
ngx_http_guard_bh_grant_locked(ngx_http_guard_zone_t *zone,
    ngx_http_guard_bh_node_t *node)
{
    ngx_queue_t                *q;
    ngx_http_guard_bh_t        *bh;
    ngx_http_guard_bh_entry_t  *e;

    while (node->count < node->max && !ngx_queue_empty(&node->waiters)) {

        q = ngx_queue_head(&node->waiters);
        e = ngx_queue_data(q, ngx_http_guard_bh_entry_t, queue);

        ngx_queue_remove(q);
        node->waiting--;
        (void) ngx_atomic_fetch_add(&zone->sh->metrics.concurrency_waiting,
                                    (ngx_atomic_int_t) -1);

        ngx_queue_insert_tail(&node->holders, q);
        node->count++;
        e->granted = 1;

        if (e->pid == ngx_pid && e->waiter) {
            bh = e->waiter;

            if (!bh->wake.posted) {
                ngx_post_event(&bh->wake, &ngx_posted_events);
            }
        }
    }
}


/*
 * The entries whose owner process is gone (SIGKILL, a crash) give back
 * their slots and places: at most once per NGX_HTTP_GUARD_BH_REAP ms per
 * tenant unless forced.  kill(pid, 0) failing with ESRCH means no such
 * process; EPERM (another user's process) counts as alive.  A pid that
 * the system gave again to a new process in between would keep its
 * entries until that process ends too: pids are reused only after the
 * whole range has gone round.
 */

static void
ngx_http_guard_bh_reap_locked(ngx_http_guard_zone_t *zone,
    ngx_http_guard_bh_node_t *node, ngx_uint_t force)
{
    ngx_uint_t                  i, n, k, dead, freed;
    ngx_pid_t                   pids[NGX_HTTP_GUARD_BH_PIDS];
    ngx_uint_t                  gone[NGX_HTTP_GUARD_BH_PIDS];
    ngx_queue_t                *lists[2], *q, *next;
    ngx_http_guard_bh_entry_t  *e;

    if (!force && (ngx_msec_int_t) (ngx_current_msec - node->reap_at) < 0) {
        return;
    }

    node->reap_at = ngx_current_msec + NGX_HTTP_GUARD_BH_REAP;

    lists[0] = &node->holders;
    lists[1] = &node->waiters;
    n = 0;
    freed = 0;

    for (k = 0; k < 2; k++) {

        for (q = ngx_queue_head(lists[k]);
             q != ngx_queue_sentinel(lists[k]);
             q = next)
        {
            next = ngx_queue_next(q);
            e = ngx_queue_data(q, ngx_http_guard_bh_entry_t, queue);

            if (e->pid == ngx_pid) {
                continue;
            }

            /* each owner is asked once */

            for (i = 0; i < n; i++) {
                if (pids[i] == e->pid) {
                    break;
                }
            }

            if (i < n) {
                dead = gone[i];

            } else {
                dead = (kill(e->pid, 0) == -1 && ngx_errno == NGX_ESRCH);

                if (n < NGX_HTTP_GUARD_BH_PIDS) {
                    pids[n] = e->pid;
                    gone[n] = dead;
                    n++;
                }
            }

            if (dead) {
                ngx_http_guard_bh_remove_locked(zone, node, e);
                freed++;
            }
        }
    }

    if (freed) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "guard: %ui concurrency slot(s) and place(s) of "
                      "exited worker(s) given back, tenant \"%*s\"",
                      freed, (size_t) node->len, node->data);
    }
}


/* after an entry left: grant, and free the node once nothing is in it */

static void
ngx_http_guard_bh_settle_locked(ngx_http_guard_zone_t *zone,
    ngx_http_guard_bh_node_t *node)
{
    ngx_http_guard_bh_grant_locked(zone, node);

    if (node->count == 0 && node->waiting == 0) {
        ngx_rbtree_delete(&zone->sh->limit.conc_rbtree, &node->node);
        ngx_slab_free_locked(zone->shpool, node);
    }
}


static void
ngx_http_guard_bh_poll(ngx_event_t *ev)
{
    ngx_http_guard_bh_t  *bh;

    bh = (ngx_http_guard_bh_t *)
             ((u_char *) ev - offsetof(ngx_http_guard_bh_t, poll));

    ngx_http_guard_bh_check(bh);
}


/* a release in this worker granted the slot */

static void
ngx_http_guard_bh_wake(ngx_event_t *ev)
{
    ngx_http_guard_bh_t  *bh;

    bh = (ngx_http_guard_bh_t *)
             ((u_char *) ev - offsetof(ngx_http_guard_bh_t, wake));

    if (bh->poll.timer_set) {
        ngx_del_timer(&bh->poll);
    }

    ngx_http_guard_bh_check(bh);
}


/*
 * A waiter looks at its entry: granted, it resumes with its slot; past
 * its deadline, it gives its place up and resumes to be refused;
 * otherwise it looks again later (and for dead owners now and then).
 */

static void
ngx_http_guard_bh_check(ngx_http_guard_bh_t *bh)
{
    ngx_msec_t              now, t;
    ngx_connection_t       *c;
    ngx_http_request_t     *r;
    ngx_http_guard_zone_t  *zone;

    if (bh->state != NGX_HTTP_GUARD_BH_WAITING) {
        return;
    }

    now = ngx_current_msec;
    zone = bh->zone;

    if (!bh->entry->granted) {

        if ((ngx_msec_int_t) (now - bh->deadline) >= 0) {

            ngx_shmtx_lock(&zone->shpool->mutex);

            if (!bh->entry->granted) {
                ngx_http_guard_bh_remove_locked(zone, bh->node, bh->entry);
                ngx_http_guard_bh_settle_locked(zone, bh->node);

                bh->entry = NULL;
                bh->node = NULL;
                bh->state = NGX_HTTP_GUARD_BH_TIMED_OUT;

                (void) ngx_atomic_fetch_add(
                           &zone->sh->metrics.concurrency_queue_timeouts, 1);
            }

            ngx_shmtx_unlock(&zone->shpool->mutex);

        } else if (now - bh->checked >= NGX_HTTP_GUARD_BH_REAP) {
            bh->checked = now;

            ngx_shmtx_lock(&zone->shpool->mutex);
            ngx_http_guard_bh_reap_locked(zone, bh->node, 0);
            ngx_http_guard_bh_grant_locked(zone, bh->node);
            ngx_shmtx_unlock(&zone->shpool->mutex);
        }

        if (bh->state == NGX_HTTP_GUARD_BH_WAITING && !bh->entry->granted) {
            bh->delay = ngx_min(bh->delay * 2, NGX_HTTP_GUARD_BH_POLL_MAX);
            t = ngx_min(bh->delay, bh->deadline - now);

            if (!bh->poll.timer_set) {
                ngx_add_timer(&bh->poll, t ? t : 1);
            }

            return;
        }
    }

    /* a slot, or the end of the wait: the request continues there */

    r = bh->request;
    c = r->connection;

    r->write_event_handler(r);
    ngx_http_run_posted_requests(c);
}


/* the request ends: its slot or its place is given back */

static void
ngx_http_guard_bh_cleanup(void *data)
{
    ngx_http_guard_bh_t  *bh = data;

    ngx_http_guard_zone_t  *zone;

    if (bh->poll.timer_set) {
        ngx_del_timer(&bh->poll);
    }

    if (bh->wake.posted) {
        ngx_delete_posted_event(&bh->wake);
    }

    if (bh->entry == NULL) {
        return;
    }

    zone = bh->zone;

    ngx_shmtx_lock(&zone->shpool->mutex);

    ngx_http_guard_bh_remove_locked(zone, bh->node, bh->entry);
    ngx_http_guard_bh_settle_locked(zone, bh->node);

    ngx_shmtx_unlock(&zone->shpool->mutex);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, bh->request->connection->log, 0,
                   "guard: concurrency %s given back",
                   bh->state == NGX_HTTP_GUARD_BH_WAITING ? "place" : "slot");

    bh->entry = NULL;
    bh->node = NULL;
    bh->state = NGX_HTTP_GUARD_BH_NONE;
}
