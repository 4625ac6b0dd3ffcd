
/*
 * Copyright (C) Guard authors
 *
 * Audit records.  Every refusal (and every shadow refusal) becomes one
 * record, written in the log phase into a ring in shared memory and sent
 * to guardd as an AUDIT frame on a sidecar connection.  A record leaves
 * the ring only when guardd acknowledges it (after its fsync), so records
 * survive a dead or restarting guardd and a reload: they are sent again
 * when a connection comes back, by whichever worker has one.  When the
 * ring is full, a record is appended to this worker's spill file
 * ("guard_audit_spill"), which guardd ingests once the file is sealed;
 * when nginx stops, the master spills what the ring still holds.  guardd
 * journals a record id once, so a record sent twice is kept once.
 *
 * Records never hold the token, headers or the query string, and pass
 * through the shared masking (gd_audit) before they are stored.
 */


#include "ngx_http_guard_audit.h"
#include "ngx_http_guard_guardrails.h"
#include "ngx_http_guard_problem.h"
#include "ngx_http_guard_policy.h"
#include "ngx_http_guard_sidecar.h"
#include "ngx_http_guard_zone.h"

#include "gd_audit.h"
#include "gd_audit_record.h"
#include "gd_uuid.h"


#define NGX_HTTP_GUARD_AUDIT_DATA     1952   /* a record's bytes, at most */
#define NGX_HTTP_GUARD_AUDIT_SLOTS    1024
#define NGX_HTTP_GUARD_AUDIT_RESEND   5      /* s without an ACK */
#define NGX_HTTP_GUARD_AUDIT_TICK     1000   /* ms */
#define NGX_HTTP_GUARD_AUDIT_BATCH    64     /* records sent at a time */
#define NGX_HTTP_GUARD_AUDIT_SEAL     1      /* s idle: seal the spill */
#define NGX_HTTP_GUARD_AUDIT_SPILL_MAX  (16 * 1024 * 1024)
#define NGX_HTTP_GUARD_AUDIT_ALL      ((ngx_uint_t) -1)   /* connections */


typedef enum {
    NGX_HTTP_GUARD_AUDIT_FREE = 0,
    NGX_HTTP_GUARD_AUDIT_QUEUED,
    NGX_HTTP_GUARD_AUDIT_SENT
} ngx_http_guard_audit_state_e;


typedef struct {
    ngx_uint_t                   state;
    ngx_pid_t                    owner;       /* the worker that sent it */
    ngx_uint_t                   conn;        /* on its connection */
    time_t                       sent;
    size_t                       len;
    u_char                       id[NGX_HTTP_GUARD_ID_LEN];
    u_char                       data[NGX_HTTP_GUARD_AUDIT_DATA];
} ngx_http_guard_audit_slot_t;


typedef struct {
    ngx_uint_t                   nslots;
    uint64_t                     head;        /* [head, tail) in use */
    uint64_t                     tail;
    ngx_atomic_t                 recorded;
    ngx_atomic_t                 sent;
    ngx_atomic_t                 acked;
    ngx_atomic_t                 duplicates;
    ngx_atomic_t                 spilled;
    ngx_atomic_t                 dropped;
    ngx_atomic_t                 rejected;
    ngx_atomic_t                 dead_letter;
    ngx_http_guard_audit_slot_t  slots[1];
} ngx_http_guard_audit_sh_t;


typedef struct {
    ngx_http_guard_audit_sh_t   *sh;
    ngx_slab_pool_t             *shpool;
    ngx_uint_t                   nslots;
} ngx_http_guard_audit_zone_t;


/* a spill file being written */

typedef struct {
    ngx_fd_t                     fd;
    ngx_str_t                    dir;
    u_char                       name[NGX_MAX_PATH];
    size_t                       size;
    time_t                       last;
    time_t                       complained;  /* errors: a line a second */
    ngx_uint_t                   seq;
    ngx_log_t                   *log;
} ngx_http_guard_spill_t;


/* request text for a record, escaped (ngx_http_guard_json_text) */

typedef struct {
    gd_audit_text_t             *text;
    ngx_str_t                   *value;
} ngx_http_guard_audit_text_t;

#define NGX_HTTP_GUARD_AUDIT_TEXTS    8


static ngx_int_t ngx_http_guard_audit_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_http_guard_audit_guardrails_cut(gd_audit_decision_t *d,
    char **text, size_t *len);
static ngx_int_t ngx_http_guard_audit_record(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx, char **text, size_t *len);
static void ngx_http_guard_audit_push(ngx_http_request_t *r, u_char *id,
    char *text, size_t len);
static void ngx_http_guard_audit_text(ngx_http_guard_audit_text_t *t,
    gd_audit_text_t *text, ngx_str_t *value);
static void ngx_http_guard_audit_drain(void);
static void ngx_http_guard_audit_tick(ngx_event_t *ev);
static void ngx_http_guard_audit_advance(ngx_http_guard_audit_sh_t *sh);
static void ngx_http_guard_audit_requeue(ngx_uint_t conn);
static ngx_int_t ngx_http_guard_spill_write(ngx_http_guard_spill_t *sp,
    u_char *data, size_t len);
static void ngx_http_guard_spill_seal(ngx_http_guard_spill_t *sp);
static ngx_int_t ngx_http_guard_dead_letter(u_char *data, size_t len,
    json_t *error, u_char *path);


static ngx_str_t  ngx_http_guard_audit_zone_name = ngx_string("guard_audit");


/* per process */

static ngx_http_guard_audit_zone_t  *ngx_http_guard_audit;
static ngx_http_guard_spill_t        ngx_http_guard_spill = { .fd = -1 };
static ngx_event_t                   ngx_http_guard_audit_timer;
static ngx_event_t                   ngx_http_guard_audit_kick;
static ngx_msec_t                    ngx_http_guard_audit_complained;
static u_char                       *ngx_http_guard_audit_copies;


/* guard_audit_spill /path; */

char *
ngx_http_guard_audit_spill(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_guard_main_conf_t *gmcf = conf;

    ngx_str_t        *value;
    ngx_file_info_t   fi;

    if (gmcf->audit_spill.data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    gmcf->audit_spill = value[1];

    if (ngx_conf_full_name(cf->cycle, &gmcf->audit_spill, 0) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_file_info(gmcf->audit_spill.data, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_file_info_n " \"%V\" failed",
                           &gmcf->audit_spill);
        return NGX_CONF_ERROR;
    }

    if (!ngx_is_dir(&fi)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\" is not a directory",
                           &gmcf->audit_spill);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* the ring's shared memory: only with a sidecar and some "guard on" */

char *
ngx_http_guard_audit_add(ngx_conf_t *cf, ngx_http_guard_main_conf_t *gmcf)
{
    size_t                        size;
    ngx_uint_t                    i;
    ngx_shm_zone_t               *oshm;
    ngx_list_part_t              *part;
    ngx_http_guard_audit_zone_t  *zone;

    if (gmcf->audit_slots == NGX_CONF_UNSET_UINT) {
        gmcf->audit_slots = NGX_HTTP_GUARD_AUDIT_SLOTS;
    }

    if (gmcf->audit_slots < 8 || gmcf->audit_slots > 1048576) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "guard_audit_ring must be from 8 to 1048576");
        return NGX_CONF_ERROR;
    }

    if (gmcf->audit_spill.data == NULL) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "\"guard_audit_spill\" is not set: audit records "
                           "that do not fit the ring while guardd is away "
                           "are dropped");
    }

    size = sizeof(ngx_http_guard_audit_sh_t)
           + gmcf->audit_slots * sizeof(ngx_http_guard_audit_slot_t);
    size += size / 32 + 16 * ngx_pagesize;

    /*
     * a ring of another size would be a new, empty zone and the records
     * of the old one would be lost with it: that takes a restart, when
     * the master spills them
     */

    if (cf->cycle->old_cycle && cf->cycle->old_cycle->shared_memory.part.elts)
    {
        part = &cf->cycle->old_cycle->shared_memory.part;
        oshm = part->elts;

        for (i = 0; /* void */ ; i++) {

            if (i >= part->nelts) {
                if (part->next == NULL) {
                    break;
                }

                part = part->next;
                oshm = part->elts;
                i = 0;
            }

            if (oshm[i].tag == &ngx_http_guard_module
                && oshm[i].shm.name.len == ngx_http_guard_audit_zone_name.len
                && ngx_strncmp(oshm[i].shm.name.data,
                               ngx_http_guard_audit_zone_name.data,
                               ngx_http_guard_audit_zone_name.len) == 0
                && oshm[i].shm.size != size)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "guard_audit_ring cannot change on a "
                                   "reload: restart nginx to change it");
                return NGX_CONF_ERROR;
            }
        }
    }

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_http_guard_audit_zone_t));
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    zone->nslots = gmcf->audit_slots;

    gmcf->audit_zone = ngx_shared_memory_add(cf,
                                             &ngx_http_guard_audit_zone_name,
                                             size, &ngx_http_guard_module);
    if (gmcf->audit_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    gmcf->audit_zone->init = ngx_http_guard_audit_init_zone;
    gmcf->audit_zone->data = zone;

    if (gd_audit_init() != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "guard: cannot compile the audit masks");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_guard_audit_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_uint_t                    fresh;
    ngx_http_guard_audit_zone_t  *zone;

    zone = shm_zone->data;
    zone->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    /* on a reload, the records in the ring stay */
    zone->sh = ngx_http_guard_shm_data(shm_zone, data,
                                       sizeof(ngx_http_guard_audit_sh_t)
                                       + zone->nslots
                                         * sizeof(ngx_http_guard_audit_slot_t),
                                       &fresh);
    if (zone->sh == NULL) {
        return NGX_ERROR;
    }

    if (fresh) {
        zone->sh->nslots = zone->nslots;
    }

    return NGX_OK;
}


/* the worker's part */

ngx_int_t
ngx_http_guard_audit_init_process(ngx_cycle_t *cycle,
    ngx_http_guard_main_conf_t *gmcf)
{
    ngx_http_guard_audit = NULL;

    if (gmcf == NULL || gmcf->audit_zone == NULL) {
        return NGX_OK;
    }

    /* a batch of records, copied out of the ring to be sent */
    ngx_http_guard_audit_copies = ngx_palloc(cycle->pool,
                                             NGX_HTTP_GUARD_AUDIT_BATCH
                                             * NGX_HTTP_GUARD_AUDIT_DATA);
    if (ngx_http_guard_audit_copies == NULL) {
        return NGX_ERROR;
    }

    ngx_http_guard_audit = gmcf->audit_zone->data;

    ngx_http_guard_spill.fd = NGX_INVALID_FILE;
    ngx_http_guard_spill.dir = gmcf->audit_spill;
    ngx_http_guard_spill.log = cycle->log;

    /* nginx's debug lines read a connection through ev->data */

    ngx_http_guard_audit_timer.handler = ngx_http_guard_audit_tick;
    ngx_http_guard_audit_timer.data = &ngx_http_guard_event_connection;
    ngx_http_guard_audit_timer.log = cycle->log;
    ngx_http_guard_audit_timer.cancelable = 1;
    ngx_add_timer(&ngx_http_guard_audit_timer, NGX_HTTP_GUARD_AUDIT_TICK);

    ngx_http_guard_audit_kick.handler = ngx_http_guard_audit_tick;
    ngx_http_guard_audit_kick.data = &ngx_http_guard_event_connection;
    ngx_http_guard_audit_kick.log = cycle->log;

    return NGX_OK;
}


/*
 * A worker that leaves hands its unacknowledged records back to the
 * ring at once (another worker sends them) and seals its spill file.
 */

void
ngx_http_guard_audit_exit_process(ngx_cycle_t *cycle)
{
    if (ngx_http_guard_audit == NULL) {
        return;
    }

    ngx_http_guard_audit_requeue(NGX_HTTP_GUARD_AUDIT_ALL);
    ngx_http_guard_spill_seal(&ngx_http_guard_spill);

    if (ngx_http_guard_audit_kick.posted) {
        ngx_delete_posted_event(&ngx_http_guard_audit_kick);
    }

    ngx_http_guard_audit = NULL;
}


/*
 * nginx stops (its workers are gone): what the ring still holds goes to
 * a spill file, for guardd to ingest.  Without a spill directory those
 * records are lost, and said so.
 */

void
ngx_http_guard_audit_exit_master(ngx_cycle_t *cycle,
    ngx_http_guard_main_conf_t *gmcf)
{
    uint64_t                      n, left;
    ngx_http_guard_spill_t        sp;
    ngx_http_guard_audit_sh_t    *sh;
    ngx_http_guard_audit_zone_t  *zone;
    ngx_http_guard_audit_slot_t  *slot;

    if (gmcf == NULL || gmcf->audit_zone == NULL) {
        return;
    }

    zone = gmcf->audit_zone->data;

    if (zone == NULL || zone->sh == NULL) {
        return;
    }

    sh = zone->sh;
    left = 0;

    ngx_memzero(&sp, sizeof(ngx_http_guard_spill_t));
    sp.fd = NGX_INVALID_FILE;
    sp.dir = gmcf->audit_spill;
    sp.log = cycle->log;

    for (n = sh->head; n < sh->tail; n++) {
        slot = &sh->slots[n % sh->nslots];

        if (slot->state == NGX_HTTP_GUARD_AUDIT_FREE) {
            continue;
        }

        if (sp.dir.data == NULL
            || ngx_http_guard_spill_write(&sp, slot->data, slot->len)
               != NGX_OK)
        {
            left++;
            continue;
        }

        slot->state = NGX_HTTP_GUARD_AUDIT_FREE;
    }

    ngx_http_guard_spill_seal(&sp);

    if (left) {
        ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                      "guard: %uL audit records were not acknowledged by "
                      "guardd and could not be spilled: they are lost",
                      left);
    }
}


/* the log phase: one record for a request that was refused */

void
ngx_http_guard_audit_request(ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx)
{
    char                       *text;
    size_t                      len;
    ngx_log_t                   log;
    ngx_http_guard_audit_sh_t  *sh;

    if (ngx_http_guard_audit == NULL || !ctx->has_id) {
        return;
    }

    sh = ngx_http_guard_audit->sh;

    /* built once: long text from the request is cut to fit a slot */

    if (ngx_http_guard_audit_record(r, ctx, &text, &len) != NGX_OK) {
        (void) ngx_atomic_fetch_add(&sh->dropped, 1);
        ngx_log_error(NGX_LOG_ERR, ngx_http_guard_request_log(r, &log), 0,
                      "guard: cannot make the audit record of decision %*s",
                      (size_t) NGX_HTTP_GUARD_ID_LEN, ctx->decision_id);
        return;
    }

    ngx_http_guard_audit_push(r, ctx->decision_id, text, len);
}


/* a record into the ring (or the spill file), and sent if it can be */

static void
ngx_http_guard_audit_push(ngx_http_request_t *r, u_char *id, char *text,
    size_t len)
{
    ngx_log_t                     log;
    ngx_int_t                     conn;
    ngx_uint_t                    full;
    ngx_http_guard_audit_sh_t    *sh;
    ngx_http_guard_audit_slot_t  *slot;

    sh = ngx_http_guard_audit->sh;

    conn = ngx_http_guard_sidecar_pick();
    slot = NULL;
    full = 0;

    ngx_shmtx_lock(&ngx_http_guard_audit->shpool->mutex);

    if (sh->tail - sh->head < sh->nslots) {
        slot = &sh->slots[sh->tail % sh->nslots];
        sh->tail++;

        ngx_memcpy(slot->data, text, len);
        ngx_memcpy(slot->id, id, NGX_HTTP_GUARD_ID_LEN);
        slot->len = len;
        slot->state = NGX_HTTP_GUARD_AUDIT_QUEUED;

        if (conn != NGX_DECLINED) {
            slot->state = NGX_HTTP_GUARD_AUDIT_SENT;
            slot->owner = ngx_pid;
            slot->conn = conn;
            slot->sent = ngx_time();
        }

    } else {
        full = 1;
    }

    ngx_shmtx_unlock(&ngx_http_guard_audit->shpool->mutex);

    (void) ngx_atomic_fetch_add(&sh->recorded, 1);

    if (full) {
        if (ngx_http_guard_spill.dir.data
            && ngx_http_guard_spill_write(&ngx_http_guard_spill,
                                          (u_char *) text, len)
               == NGX_OK)
        {
            (void) ngx_atomic_fetch_add(&sh->spilled, 1);

        } else {
            (void) ngx_atomic_fetch_add(&sh->dropped, 1);

            if (ngx_current_msec - ngx_http_guard_audit_complained > 1000) {
                ngx_http_guard_audit_complained = ngx_current_msec;
                ngx_log_error(NGX_LOG_ERR,
                              ngx_http_guard_request_log(r, &log), 0,
                              "guard: the audit ring is full and there is "
                              "no spill file: audit record %*s dropped",
                              (size_t) NGX_HTTP_GUARD_ID_LEN,
                              id);
            }
        }

    } else if (conn != NGX_DECLINED
               && ngx_http_guard_sidecar_audit(conn,
                                               NGX_HTTP_GUARD_AUDIT_ID
                                               | (slot - sh->slots),
                                               (u_char *) text, len)
                  == NGX_OK)
    {
        /* a failed send closed the connection, which queued it again */
        (void) ngx_atomic_fetch_add(&sh->sent, 1);
    }

    free(text);
}


/*
 * A record whose guardrails member makes it too long for a slot: the
 * member with fewer hits (halved until it fits, down to none), its
 * "hits_total" telling how many there were.
 */

static ngx_int_t
ngx_http_guard_audit_guardrails_cut(gd_audit_decision_t *d, char **text,
    size_t *len)
{
    json_t      *gr, *hits, *cut;
    size_t       n, total;
    ngx_int_t    rc;

    gr = d->guardrails;
    hits = json_object_get(gr, "hits");
    n = json_array_size(hits);
    total = json_integer_value(json_object_get(gr, "hits_total"));

    if (total < n) {
        total = n;
    }

    rc = NGX_ERROR;

    while (n) {
        n /= 2;

        cut = json_copy(gr);
        if (cut == NULL) {
            break;
        }

        hits = json_array();

        if (hits == NULL || json_object_set_new(cut, "hits", hits) != 0
            || json_object_set_new(cut, "hits_total", json_integer(total))
               != 0)
        {
            json_decref(cut);
            break;
        }

        while (json_array_size(hits) < n) {
            json_array_append(hits,
                              json_array_get(json_object_get(gr, "hits"),
                                             json_array_size(hits)));
        }

        d->guardrails = cut;

        if (gd_audit_record_text(d, NGX_HTTP_GUARD_AUDIT_DATA, text, len)
            == 0)
        {
            rc = NGX_OK;
        }

        d->guardrails = gr;
        json_decref(cut);

        if (rc == NGX_OK) {
            break;
        }
    }

    return rc;
}


/*
 * The record of a refusal (or a shadow refusal), made by the shared
 * builder from the decision: the request's text escaped as in every
 * document Guard writes, masked and cut by the builder to fit a slot.
 */

static ngx_int_t
ngx_http_guard_audit_record(ngx_http_request_t *r, ngx_http_guard_ctx_t *ctx,
    char **text, size_t *len)
{
    ngx_int_t                     rc;
    ngx_str_t                     tp, *tenant, *s;
    ngx_uint_t                    i, n;
    ngx_time_t                   *now;
    ngx_msec_int_t                ms;
    gd_audit_text_t               rule;
    gd_audit_decision_t           d;
    ngx_http_guard_reason_e       reason;
    ngx_http_guard_main_conf_t   *gmcf;
    ngx_http_guard_audit_text_t   texts[NGX_HTTP_GUARD_AUDIT_TEXTS];
    json_t                       *escaped[NGX_HTTP_GUARD_AUDIT_TEXTS];

    gmcf = ngx_http_get_module_main_conf(r, ngx_http_guard_module);
    now = ngx_timeofday();

    reason = ctx->denied ? ctx->reason : ctx->shadow_reason;

    ms = (ngx_msec_int_t) ((now->sec - r->start_sec) * 1000
                           + (now->msec - r->start_msec));

    ngx_memzero(&d, sizeof(gd_audit_decision_t));

    d.id.data = (char *) ctx->decision_id;
    d.id.len = NGX_HTTP_GUARD_ID_LEN;
    d.ts_ms = (int64_t) r->start_sec * 1000 + r->start_msec;
    d.shadow = !ctx->denied;

    s = ngx_http_guard_reason_stage(reason);
    d.stage.data = (char *) s->data;
    d.stage.len = s->len;

    s = ngx_http_guard_reason_name(reason);
    d.reason.data = (char *) s->data;
    d.reason.len = s->len;

    d.status = (int) r->headers_out.status;
    d.latency_ms = ngx_max(ms, 0);

    d.source.data = "nginx";
    d.source.len = sizeof("nginx") - 1;

    /* the verified tenant, else the addressed one, even before a token */

    if (ctx->tenant.len == 0 && ctx->addressed.len == 0 && ctx->conf
        && ctx->conf->tenant
        && ngx_http_complex_value(r, ctx->conf->tenant, &ctx->addressed)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    tenant = ctx->tenant.len ? &ctx->tenant : &ctx->addressed;

    n = 0;

    if (tenant->len) {
        ngx_http_guard_audit_text(&texts[n++], &d.tenant, tenant);
    }

    if (ctx->authenticated && ctx->claims.sub.len) {
        ngx_http_guard_audit_text(&texts[n++], &d.subject, &ctx->claims.sub);
    }

    ngx_http_guard_audit_text(&texts[n++], &d.client_ip,
                              &r->connection->addr_text);

    ngx_http_guard_audit_text(&texts[n++], &d.method, &r->method_name);

    ngx_http_guard_audit_text(&texts[n++], &d.route, &r->uri);

    ngx_http_guard_audit_text(&texts[n++], &d.node,
                              (ngx_str_t *) &ngx_cycle->hostname);

    if (gmcf->policies) {
        ngx_http_guard_audit_text(&texts[n++], &d.policy_version,
                                  &gmcf->policies->version);
    }

    if (ngx_http_guard_traceparent(r, &tp) == NGX_OK) {
        ngx_http_guard_audit_text(&texts[n++], &d.traceparent, &tp);
    }

    if (ctx->denied && ctx->shadow_reason != NGX_HTTP_GUARD_OK) {
        s = ngx_http_guard_reason_name(ctx->shadow_reason);
        d.shadow_reason.data = (char *) s->data;
        d.shadow_reason.len = s->len;
    }

    if (reason == NGX_HTTP_GUARD_RATE_LIMITED && ctx->limit.name.len) {
        rule.data = (char *) ctx->limit.name.data;
        rule.len = ctx->limit.name.len;
        d.rules = &rule;
        d.nrules = 1;
    }

    if (ctx->risk == NGX_HTTP_GUARD_RISK_DENY
        || ctx->risk == NGX_HTTP_GUARD_RISK_STEP_UP
        || ctx->risk == NGX_HTTP_GUARD_RISK_ALLOW)
    {
        d.has_score = 1;
        d.score = ctx->risk_score;
    }

    rc = NGX_ERROR;

    for (i = 0; i < n; i++) {
        escaped[i] = ngx_http_guard_json_text(texts[i].value->data,
                                              texts[i].value->len);

        if (escaped[i] == NULL) {
            goto done;
        }

        texts[i].text->data = json_string_value(escaped[i]);
        texts[i].text->len = json_string_length(escaped[i]);
    }

    d.guardrails = ngx_http_guard_guardrails_audit(ctx);

    if (reason == NGX_HTTP_GUARD_OK) {
        /* passed with guardrail hits: "redact" or "log", no reason */
        d.outcome = ngx_http_guard_guardrails_outcome(ctx);
        d.shadow = 0;
        d.stage.data = "guardrails";
        d.stage.len = sizeof("guardrails") - 1;
        d.reason.data = NULL;
        d.reason.len = 0;
    }

    if (gd_audit_record_text(&d, NGX_HTTP_GUARD_AUDIT_DATA, text, len) == 0
        || (d.guardrails
            && ngx_http_guard_audit_guardrails_cut(&d, text, len) == NGX_OK))
    {
        rc = NGX_OK;
    }

done:

    while (i--) {
        json_decref(escaped[i]);
    }

    return rc;
}


/*
 * The record of a circuit breaker's transition (breaker: its name, the
 * states and the counts, borrowed): an id of its own, the tenant, and the
 * request that saw it happen.
 */

void
ngx_http_guard_audit_breaker(ngx_http_request_t *r, ngx_str_t *tenant,
    json_t *breaker, ngx_uint_t shadow)
{
    u_char                       uid[GD_UUID_LEN];
    u_char                       id[NGX_HTTP_GUARD_ID_LEN];
    char                        *text;
    size_t                       len;
    json_t                      *t, *node, *version;
    ngx_time_t                  *tp;
    gd_audit_decision_t          d;
    ngx_http_guard_main_conf_t  *gmcf;
    static ngx_pid_t             gen_pid;
    static gd_uuid_gen_t         gen;

    if (ngx_http_guard_audit == NULL) {
        return;
    }

    gmcf = ngx_http_get_module_main_conf(r, ngx_http_guard_module);
    tp = ngx_timeofday();

    /* a generator of this process's own (ngx_http_guard_ctx.c has one) */

    if (gen_pid != ngx_pid) {
        gd_uuid_gen_init(&gen);
        gen_pid = ngx_pid;
    }

    if (gd_uuid7_next(&gen, (uint64_t) tp->sec * 1000 + tp->msec, uid)
        != 0)
    {
        return;
    }

    gd_uuid_format(uid, (char *) id);

    ngx_memzero(&d, sizeof(gd_audit_decision_t));

    d.id.data = (char *) id;
    d.id.len = NGX_HTTP_GUARD_ID_LEN;
    d.ts_ms = (int64_t) tp->sec * 1000 + tp->msec;
    d.shadow = shadow;
    d.stage = gd_audit_text("breaker");
    d.reason = gd_audit_text("circuit_open");
    d.status = 503;
    d.latency_ms = -1;
    d.source = gd_audit_text("nginx");
    d.breaker = breaker;

    t = ngx_http_guard_json_text(tenant->data, tenant->len);
    node = ngx_http_guard_json_text(ngx_cycle->hostname.data,
                                    ngx_cycle->hostname.len);
    version = gmcf->policies
              ? ngx_http_guard_json_text(gmcf->policies->version.data,
                                         gmcf->policies->version.len)
              : NULL;

    if (t && node) {
        d.tenant.data = json_string_value(t);
        d.tenant.len = json_string_length(t);
        d.node.data = json_string_value(node);
        d.node.len = json_string_length(node);

        if (version) {
            d.policy_version.data = json_string_value(version);
            d.policy_version.len = json_string_length(version);
        }

        if (gd_audit_record_text(&d, NGX_HTTP_GUARD_AUDIT_DATA, &text, &len)
            == 0)
        {
            ngx_http_guard_audit_push(r, id, text, len);
        }
    }

    json_decref(t);
    json_decref(node);
    json_decref(version);
}


static void
ngx_http_guard_audit_text(ngx_http_guard_audit_text_t *t,
    gd_audit_text_t *text, ngx_str_t *value)
{
    t->text = text;
    t->value = value;
}


/* sends what waits in the ring: queued, or sent long ago and unanswered */

static void
ngx_http_guard_audit_drain(void)
{
    u_char                       *p;
    time_t                        now;
    uint64_t                      n;
    ngx_int_t                     conn;
    ngx_uint_t                    i, count, more;
    ngx_http_guard_audit_sh_t    *sh;
    ngx_http_guard_audit_slot_t  *slot;
    uint32_t                      index[NGX_HTTP_GUARD_AUDIT_BATCH];
    size_t                        len[NGX_HTTP_GUARD_AUDIT_BATCH];

    if (ngx_http_guard_audit == NULL) {
        return;
    }

    conn = ngx_http_guard_sidecar_pick();

    if (conn == NGX_DECLINED) {
        return;
    }

    sh = ngx_http_guard_audit->sh;
    now = ngx_time();
    count = 0;
    more = 0;

    /*
     * the records are copied under the lock: once it is released, an
     * earlier send's late ACK may free a slot and another worker reuse it
     */

    ngx_shmtx_lock(&ngx_http_guard_audit->shpool->mutex);

    for (n = sh->head; n < sh->tail; n++) {
        slot = &sh->slots[n % sh->nslots];

        if (slot->state == NGX_HTTP_GUARD_AUDIT_FREE
            || (slot->state == NGX_HTTP_GUARD_AUDIT_SENT
                && now - slot->sent < NGX_HTTP_GUARD_AUDIT_RESEND))
        {
            continue;
        }

        if (count == NGX_HTTP_GUARD_AUDIT_BATCH) {
            more = 1;
            break;
        }

        slot->state = NGX_HTTP_GUARD_AUDIT_SENT;
        slot->owner = ngx_pid;
        slot->conn = conn;
        slot->sent = now;

        index[count] = (uint32_t) (n % sh->nslots);
        len[count] = slot->len;
        ngx_memcpy(ngx_http_guard_audit_copies
                   + count * NGX_HTTP_GUARD_AUDIT_DATA,
                   slot->data, slot->len);
        count++;
    }

    ngx_shmtx_unlock(&ngx_http_guard_audit->shpool->mutex);

    for (i = 0; i < count; i++) {
        p = ngx_http_guard_audit_copies + i * NGX_HTTP_GUARD_AUDIT_DATA;

        if (ngx_http_guard_sidecar_audit(conn,
                                         NGX_HTTP_GUARD_AUDIT_ID | index[i],
                                         p, len[i])
            != NGX_OK)
        {
            /* the connection closed: its records are queued again */
            return;
        }

        (void) ngx_atomic_fetch_add(&sh->sent, 1);
    }

    if (more && !ngx_http_guard_audit_kick.posted) {
        ngx_post_event(&ngx_http_guard_audit_kick, &ngx_posted_events);
    }
}


static void
ngx_http_guard_audit_tick(ngx_event_t *ev)
{
    ngx_http_guard_audit_drain();

    if (ngx_http_guard_spill.fd != NGX_INVALID_FILE
        && ngx_time() - ngx_http_guard_spill.last
           >= NGX_HTTP_GUARD_AUDIT_SEAL)
    {
        ngx_http_guard_spill_seal(&ngx_http_guard_spill);
    }

    if (ev == &ngx_http_guard_audit_timer && !ngx_exiting) {
        ngx_add_timer(ev, NGX_HTTP_GUARD_AUDIT_TICK);
    }
}


/* a sidecar connection came up: send what waits, soon */

void
ngx_http_guard_audit_connected(void)
{
    if (ngx_http_guard_audit && !ngx_http_guard_audit_kick.posted) {
        ngx_post_event(&ngx_http_guard_audit_kick, &ngx_posted_events);
    }
}


/* a sidecar connection broke: what it carried is queued again */

void
ngx_http_guard_audit_closed(ngx_uint_t conn)
{
    if (ngx_http_guard_audit) {
        ngx_http_guard_audit_requeue(conn);
    }
}


/*
 * this worker's unanswered records on conn (or on all) go back to queue;
 * only [head, tail) holds records, every other slot is free
 */

static void
ngx_http_guard_audit_requeue(ngx_uint_t conn)
{
    uint64_t                      n;
    ngx_http_guard_audit_sh_t    *sh;
    ngx_http_guard_audit_slot_t  *slot;

    sh = ngx_http_guard_audit->sh;

    ngx_shmtx_lock(&ngx_http_guard_audit->shpool->mutex);

    for (n = sh->head; n < sh->tail; n++) {
        slot = &sh->slots[n % sh->nslots];

        if (slot->state == NGX_HTTP_GUARD_AUDIT_SENT
            && slot->owner == ngx_pid
            && (conn == NGX_HTTP_GUARD_AUDIT_ALL || slot->conn == conn))
        {
            slot->state = NGX_HTTP_GUARD_AUDIT_QUEUED;
        }
    }

    ngx_shmtx_unlock(&ngx_http_guard_audit->shpool->mutex);
}


/*
 * guardd's answer to an AUDIT: an ACK (journaled, or a duplicate of a
 * journaled record) frees its slot; an ERROR that refuses the record
 * ("bad_payload", "bad_request") means it will never be accepted: it
 * moves to the dead-letter file, is counted and logged once, and its
 * slot is freed, so the records behind it flow; any other ERROR
 * ("unavailable") leaves it for a later try.
 */

void
ngx_http_guard_audit_answer(uint32_t id, ngx_uint_t acked, json_t *payload)
{
    json_t                       *v;
    size_t                        len;
    ngx_int_t                     rc;
    const char                   *rid;
    ngx_uint_t                    index, bad;
    ngx_http_guard_audit_sh_t    *sh;
    ngx_http_guard_audit_slot_t  *slot;
    u_char                        did[NGX_HTTP_GUARD_ID_LEN];
    u_char                        path[NGX_MAX_PATH];
    u_char                        data[NGX_HTTP_GUARD_AUDIT_DATA];

    if (ngx_http_guard_audit == NULL) {
        return;
    }

    sh = ngx_http_guard_audit->sh;
    index = id & ~NGX_HTTP_GUARD_AUDIT_ID;

    if (index >= sh->nslots) {
        return;
    }

    v = json_object_get(payload, "id");
    rid = json_is_string(v) ? json_string_value(v) : NULL;

    bad = !acked && ngx_http_guard_sidecar_refused(payload);
    len = 0;

    slot = &sh->slots[index];

    ngx_shmtx_lock(&ngx_http_guard_audit->shpool->mutex);

    /*
     * an ERROR names no record: a refusal counts only for a slot this
     * worker sent last (an answer comes back on the sender's connection)
     */

    if (slot->state != NGX_HTTP_GUARD_AUDIT_SENT
        || (bad && slot->owner != ngx_pid)
        || (rid && (ngx_strlen(rid) != NGX_HTTP_GUARD_ID_LEN
                    || ngx_memcmp(rid, slot->id, NGX_HTTP_GUARD_ID_LEN)
                       != 0)))
    {
        /* a late answer: the slot was answered already */
        ngx_shmtx_unlock(&ngx_http_guard_audit->shpool->mutex);
        return;
    }

    if (bad) {
        /* copied out: once the lock is released, the slot is reused */
        len = slot->len;
        ngx_memcpy(data, slot->data, len);
        ngx_memcpy(did, slot->id, NGX_HTTP_GUARD_ID_LEN);
    }

    if (acked || bad) {
        slot->state = NGX_HTTP_GUARD_AUDIT_FREE;
        ngx_http_guard_audit_advance(sh);

    } else {
        /* not now: tried again after RESEND seconds */
        slot->sent = ngx_time();
    }

    ngx_shmtx_unlock(&ngx_http_guard_audit->shpool->mutex);

    if (acked) {
        (void) ngx_atomic_fetch_add(json_is_true(json_object_get(payload,
                                                       "duplicate"))
                                    ? &sh->duplicates : &sh->acked, 1);

    } else if (bad) {
        /* logged once: the record is never sent again */
        (void) ngx_atomic_fetch_add(&sh->rejected, 1);

        rc = ngx_http_guard_dead_letter(data, len, payload, path);

        (void) ngx_atomic_fetch_add(rc == NGX_OK ? &sh->dead_letter
                                                 : &sh->dropped, 1);

        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "guard: guardd refused audit record %*s (%s): %s%s%s",
                      (size_t) NGX_HTTP_GUARD_ID_LEN, did,
                      json_string_value(json_object_get(payload, "code")),
                      rc == NGX_OK ? "moved to \""
                      : rc == NGX_DECLINED
                      ? "dropped, there is no guard_audit_spill directory "
                        "for the dead-letter file"
                      : "dropped, it cannot be written to the dead-letter "
                        "file",
                      rc == NGX_OK ? path : (u_char *) "",
                      rc == NGX_OK ? "\"" : "");
    }
}


/*
 * The dead-letter file: DIR/dead-letter.jsonl.dead beside the spill files
 * (guardd never reads it: it is not a spill file name), for the operator.
 * One line per record guardd refused, appended by one write(2) from any
 * worker: {"ts_ms", "code", "message" (guardd's, which never quotes the
 * record), "record"}, the record as it was sent (masked), or as a string
 * when it is not JSON.  NGX_DECLINED: no spill directory.
 */

static ngx_int_t
ngx_http_guard_dead_letter(u_char *data, size_t len, json_t *error,
    u_char *path)
{
    u_char        *p;
    char          *text;
    size_t         n;
    ssize_t        written;
    json_t        *line, *rec, *v;
    ngx_fd_t       fd;
    ngx_time_t    *tp;
    json_error_t   err;

    if (ngx_http_guard_spill.dir.data == NULL) {
        return NGX_DECLINED;
    }

    p = ngx_snprintf(path, NGX_MAX_PATH - 1, "%V/dead-letter.jsonl.dead",
                     &ngx_http_guard_spill.dir);
    *p = '\0';

    rec = json_loadb((char *) data, len, NGX_HTTP_GUARD_JSON_FLAGS, &err);

    if (rec == NULL) {
        rec = ngx_http_guard_json_text(data, len);
    }

    tp = ngx_timeofday();
    line = json_pack("{s:I, s:o?}", "ts_ms",
                     (json_int_t) tp->sec * 1000 + tp->msec, "record", rec);
    if (line == NULL) {
        return NGX_ERROR;
    }

    v = json_object_get(error, "code");
    if (json_is_string(v)) {
        json_object_set(line, "code", v);
    }

    v = json_object_get(error, "message");
    if (json_is_string(v)) {
        json_object_set(line, "message", v);
    }

    text = json_dumps(line, JSON_COMPACT);
    json_decref(line);

    if (text == NULL) {
        return NGX_ERROR;
    }

    n = ngx_strlen(text);
    text[n] = LF;    /* json_dumps ends it with a NUL, replaced */

    fd = ngx_open_file(path, NGX_FILE_APPEND, NGX_FILE_CREATE_OR_OPEN, 0660);

    if (fd == NGX_INVALID_FILE) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, ngx_errno,
                      ngx_open_file_n " \"%s\" failed", path);
        free(text);
        return NGX_ERROR;
    }

    written = ngx_write_fd(fd, text, n + 1);

    if (written != (ssize_t) n + 1) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, ngx_errno,
                      "guard: cannot write the dead-letter file \"%s\"",
                      path);
    }

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, ngx_errno,
                      ngx_close_file_n " \"%s\" failed", path);
    }

    free(text);

    return written == (ssize_t) n + 1 ? NGX_OK : NGX_ERROR;
}


static void
ngx_http_guard_audit_advance(ngx_http_guard_audit_sh_t *sh)
{
    while (sh->head < sh->tail
           && sh->slots[sh->head % sh->nslots].state
              == NGX_HTTP_GUARD_AUDIT_FREE)
    {
        sh->head++;
    }
}


/* for guard_status */

json_t *
ngx_http_guard_audit_stats(ngx_http_request_t *r)
{
    uint64_t                      pending;
    ngx_http_guard_audit_sh_t    *sh;
    ngx_http_guard_audit_zone_t  *zone;
    ngx_http_guard_main_conf_t   *gmcf;

    gmcf = ngx_http_get_module_main_conf(r, ngx_http_guard_module);

    if (gmcf->audit_zone == NULL) {
        return NULL;
    }

    zone = gmcf->audit_zone->data;
    sh = zone->sh;

    ngx_shmtx_lock(&zone->shpool->mutex);
    pending = sh->tail - sh->head;
    ngx_shmtx_unlock(&zone->shpool->mutex);

    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
                     "ring", (json_int_t) sh->nslots,
                     "pending", (json_int_t) pending,
                     "recorded", (json_int_t) sh->recorded,
                     "sent", (json_int_t) sh->sent,
                     "acked", (json_int_t) sh->acked,
                     "duplicates", (json_int_t) sh->duplicates,
                     "spilled", (json_int_t) sh->spilled,
                     "dropped", (json_int_t) sh->dropped,
                     "rejected", (json_int_t) sh->rejected,
                     "dead_letter", (json_int_t) sh->dead_letter);
}


/*
 * Spill files: DIR/<unix ms>-<pid>-<seq>.part while written, renamed to
 * .jsonl when sealed (after a second without a record, at 16 MiB, or
 * when the process exits); guardd ingests sealed files.  One record per
 * line, appended by one write(2).
 */

static ngx_int_t
ngx_http_guard_spill_write(ngx_http_guard_spill_t *sp, u_char *data,
    size_t len)
{
    u_char      *p;
    ssize_t      n;
    ngx_time_t  *tp;
    u_char       line[NGX_HTTP_GUARD_AUDIT_DATA + 1];

    if (len > NGX_HTTP_GUARD_AUDIT_DATA) {
        return NGX_ERROR;
    }

    if (sp->fd == NGX_INVALID_FILE) {
        tp = ngx_timeofday();

        p = ngx_snprintf(sp->name, NGX_MAX_PATH - 1, "%V/%013M-%P-%ui.part",
                         &sp->dir, (ngx_msec_t) tp->sec * 1000 + tp->msec,
                         ngx_pid, sp->seq++);
        *p = '\0';

        sp->fd = ngx_open_file(sp->name, NGX_FILE_APPEND,
                               NGX_FILE_CREATE_OR_OPEN, 0660);

        if (sp->fd == NGX_INVALID_FILE) {
            if (sp->complained != ngx_time()) {
                sp->complained = ngx_time();
                ngx_log_error(NGX_LOG_ERR, sp->log, ngx_errno,
                              ngx_open_file_n " \"%s\" failed", sp->name);
            }

            return NGX_ERROR;
        }

        sp->size = 0;
    }

    p = ngx_cpymem(line, data, len);
    *p++ = LF;

    n = ngx_write_fd(sp->fd, line, p - line);

    if (n != p - line) {
        if (sp->complained != ngx_time()) {
            sp->complained = ngx_time();
            ngx_log_error(NGX_LOG_ERR, sp->log, ngx_errno,
                          "guard: cannot write the spill file \"%s\"",
                          sp->name);
        }

        if (n > 0) {
            /* a torn line: guardd sets the file aside for the operator */
            ngx_http_guard_spill_seal(sp);
        }

        return NGX_ERROR;
    }

    sp->size += n;
    sp->last = ngx_time();

    if (sp->size >= NGX_HTTP_GUARD_AUDIT_SPILL_MAX) {
        ngx_http_guard_spill_seal(sp);
    }

    return NGX_OK;
}


static void
ngx_http_guard_spill_seal(ngx_http_guard_spill_t *sp)
{
    size_t  len;
    u_char  sealed[NGX_MAX_PATH];

    if (sp->fd == NGX_INVALID_FILE) {
        return;
    }

    if (ngx_close_file(sp->fd) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ERR, sp->log, ngx_errno,
                      ngx_close_file_n " \"%s\" failed", sp->name);
    }

    sp->fd = NGX_INVALID_FILE;

    len = ngx_strlen(sp->name) - (sizeof(".part") - 1);
    ngx_memcpy(sealed, sp->name, len);
    ngx_memcpy(sealed + len, ".jsonl", sizeof(".jsonl"));

    if (ngx_rename_file(sp->name, sealed) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ERR, sp->log, ngx_errno,
                      ngx_rename_file_n " \"%s\" to \"%s\" failed",
                      sp->name, sealed);
        return;
    }

    ngx_log_error(NGX_LOG_NOTICE, sp->log, 0,
                  "guard: audit spill file \"%s\" sealed, %uz bytes",
                  sealed, sp->size);
}
