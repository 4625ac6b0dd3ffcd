
/*
 * Copyright (C) Guard authors
 *
 * The sidecar client.
 *
 * Each worker keeps a small pool of non-blocking connections to guardd
 * ("guard_sidecar unix:/path connections=N"), and many DECIDE calls share
 * each one: a request id ties every VERDICT to its request, in any order
 * (the waiting requests are found by id in a red-black tree).  A request
 * that asks suspends (the access handler returns NGX_AGAIN) and resumes
 * from a posted event after its VERDICT or its timer, never blocking the
 * worker.
 * Broken connections come back with a growing backoff; after several
 * failures in a row the client stops asking for a second and applies the
 * fail mode at once.  Frames go through the shared codec (gd_proto).
 */


#include "ngx_http_guard_sidecar.h"
#include "ngx_http_guard_problem.h"
#include "ngx_http_guard_audit.h"
#include "ngx_http_guard_policy.h"
#include "ngx_http_guard_metrics.h"
#include "ngx_http_guard_zone.h"

#include "gd_proto.h"


#define NGX_HTTP_GUARD_SC_MAX_FRAME   GD_PROTO_DEFAULT_MAX_FRAME
#define NGX_HTTP_GUARD_SC_BACKOFF_MIN 100
#define NGX_HTTP_GUARD_SC_BACKOFF_MAX 5000
#define NGX_HTTP_GUARD_SC_FAILURES    3
#define NGX_HTTP_GUARD_SC_COOLDOWN    1000
/* audit records wait in the ring rather than in a longer output buffer */
#define NGX_HTTP_GUARD_SC_OUT_MAX     (256 * 1024)


typedef enum {
    NGX_HTTP_GUARD_SC_DOWN = 0,
    NGX_HTTP_GUARD_SC_READY
} ngx_http_guard_sc_state_e;


typedef struct {
    ngx_peer_connection_t        peer;
    ngx_http_guard_sc_state_e    state;
    u_char                      *in;
    size_t                       in_len;
    gd_proto_buf_t               out;         /* malloc()ed, by gd_proto */
    ngx_event_t                  retry;
    ngx_event_t                  flush;       /* posted: sends what waits */
    ngx_msec_t                   backoff;
    ngx_queue_t                  waiting;
} ngx_http_guard_sc_conn_t;


/* the connection whose retry or flush event ev is (ev->data is not it) */
#define ngx_http_guard_sc_of(ev, member)                                     \
    ((ngx_http_guard_sc_conn_t *)                                             \
         ((u_char *) (ev) - offsetof(ngx_http_guard_sc_conn_t, member)))


/* a request waiting for its VERDICT, found by id in the worker's tree */

typedef struct {
    ngx_rbtree_node_t            node;        /* key: the DECIDE id */
    ngx_http_request_t          *request;
    ngx_http_guard_sc_conn_t    *conn;
    ngx_http_guard_sidecar_done_pt  done;
    void                        *data;
    uint32_t                     id;
    ngx_event_t                  timer;
    ngx_event_t                  resume;      /* posted */
    ngx_queue_t                  queue;       /* the connection's */
    uint64_t                     sent;        /* ns, the metrics' RTT */
    unsigned                     finished:1;
} ngx_http_guard_sc_waiter_t;


/* per worker */

static ngx_http_guard_sidecar_conf_t  *ngx_http_guard_sc_conf;
static ngx_str_t                       ngx_http_guard_sc_policy_version;
static ngx_http_guard_sc_conn_t       *ngx_http_guard_sc_conns;
static ngx_uint_t                      ngx_http_guard_sc_next;
static uint32_t                        ngx_http_guard_sc_id;
static ngx_uint_t                      ngx_http_guard_sc_failures;
static ngx_msec_t                      ngx_http_guard_sc_cooldown;
static ngx_log_t                      *ngx_http_guard_sc_log;
static ngx_log_t                       ngx_http_guard_sc_quiet_log;
static ngx_uint_t                      ngx_http_guard_sc_log_level;
static ngx_msec_t                      ngx_http_guard_sc_complained;
static ngx_uint_t                      ngx_http_guard_sc_unreported;
static ngx_msec_t                      ngx_http_guard_sc_timeout_logged;
static ngx_uint_t                      ngx_http_guard_sc_timeouts;
static ngx_rbtree_t                    ngx_http_guard_sc_waiters;
static ngx_rbtree_node_t               ngx_http_guard_sc_sentinel;


static void ngx_http_guard_sc_connect(ngx_http_guard_sc_conn_t *sc);
static void ngx_http_guard_sc_unreachable(ngx_err_t err);
static void ngx_http_guard_sc_retry(ngx_event_t *ev);
static void ngx_http_guard_sc_close(ngx_http_guard_sc_conn_t *sc,
    const char *why);
static void ngx_http_guard_sc_read(ngx_event_t *rev);
static void ngx_http_guard_sc_write(ngx_event_t *wev);
static ngx_int_t ngx_http_guard_sc_send(ngx_http_guard_sc_conn_t *sc,
    gd_frame_type_t type, uint32_t id, json_t *payload);
static ngx_int_t ngx_http_guard_sc_flush(ngx_http_guard_sc_conn_t *sc);
static void ngx_http_guard_sc_later(ngx_http_guard_sc_conn_t *sc);
static void ngx_http_guard_sc_flush_handler(ngx_event_t *ev);
static ngx_http_guard_sc_waiter_t *ngx_http_guard_sc_find(uint32_t id);
static void ngx_http_guard_sc_timeout(ngx_event_t *ev);
static void ngx_http_guard_sc_wake(ngx_http_guard_sc_waiter_t *w,
    ngx_int_t verdict, json_t *payload);
static void ngx_http_guard_sc_resume(ngx_event_t *ev);
static void ngx_http_guard_sc_waiter_cleanup(void *data);
static void ngx_http_guard_sc_detach(ngx_http_guard_sc_waiter_t *w);
static void ngx_http_guard_sc_failed(void);
static ngx_uint_t ngx_http_guard_sc_cooling(void);


/* configuration: guard_sidecar unix:/path [timeout=25ms] [connections=2] */

char *
ngx_http_guard_sidecar(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_guard_main_conf_t *gmcf = conf;

    ngx_str_t                      *value, s;
    ngx_url_t                       u;
    ngx_int_t                       n;
    ngx_uint_t                      i;
    ngx_http_guard_sidecar_conf_t  *scf;

    if (gmcf->sidecar) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strncmp(value[1].data, "unix:", 5) != 0) {
        return "must be \"unix:/path\": guardd listens on a Unix socket";
    }

    scf = ngx_pcalloc(cf->pool, sizeof(ngx_http_guard_sidecar_conf_t));
    if (scf == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&u, sizeof(ngx_url_t));
    u.url = value[1];
    u.no_resolve = 1;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "guard_sidecar \"%V\": %s",
                           &value[1], u.err ? u.err : "invalid address");
        return NGX_CONF_ERROR;
    }

    scf->addr = &u.addrs[0];
    scf->timeout = 25;
    scf->connections = 2;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "timeout=", 8) == 0) {
            s.data = value[i].data + 8;
            s.len = value[i].len - 8;
            scf->timeout = ngx_parse_time(&s, 0);

            if (scf->timeout == (ngx_msec_t) NGX_ERROR
                || scf->timeout == 0)
            {
                return "has an invalid \"timeout\"";
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "connections=", 12) == 0) {
            n = ngx_atoi(value[i].data + 12, value[i].len - 12);

            if (n < 1 || n > 64) {
                return "has an invalid \"connections\" (1 to 64)";
            }

            scf->connections = n;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "guard_sidecar: unknown parameter \"%V\"",
                           &value[i]);
        return NGX_CONF_ERROR;
    }

    gmcf->sidecar = scf;

    return NGX_CONF_OK;
}


/* the worker's connections */

ngx_int_t
ngx_http_guard_sidecar_init_process(ngx_cycle_t *cycle,
    ngx_http_guard_main_conf_t *gmcf)
{
    ngx_uint_t                 i;
    ngx_http_guard_sc_conn_t  *sc;

    ngx_http_guard_sc_conns = NULL;
    ngx_http_guard_sc_conf = NULL;

    ngx_rbtree_init(&ngx_http_guard_sc_waiters, &ngx_http_guard_sc_sentinel,
                    ngx_rbtree_insert_value);

    if (gmcf == NULL || gmcf->sidecar == NULL) {
        return NGX_OK;
    }

    ngx_http_guard_sc_conf = gmcf->sidecar;
    ngx_http_guard_sc_log = cycle->log;

    /* HELLO says it: guardd warns when its own differs */

    if (gmcf->policies) {
        ngx_http_guard_sc_policy_version = gmcf->policies->version;

    } else {
        ngx_str_set(&ngx_http_guard_sc_policy_version, "");
    }

    ngx_http_guard_sc_log_level = gmcf->sidecar_log_level;
    ngx_http_guard_sc_complained = 0;
    ngx_http_guard_sc_unreported = 0;
    ngx_http_guard_sc_timeout_logged = 0;
    ngx_http_guard_sc_timeouts = 0;

    /*
     * nginx logs a failed connect() itself, at "crit" or "error", on
     * every attempt: it logs into a copy of the log that lets only alerts
     * through, and the worker says it at most once a second, at the level
     * of guard_sidecar_log_level
     */

    ngx_http_guard_sc_quiet_log = *cycle->log;
    ngx_http_guard_sc_quiet_log.log_level = NGX_LOG_ALERT;

    ngx_http_guard_sc_conns = ngx_pcalloc(cycle->pool,
                                          gmcf->sidecar->connections
                                          * sizeof(ngx_http_guard_sc_conn_t));
    if (ngx_http_guard_sc_conns == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < gmcf->sidecar->connections; i++) {
        sc = &ngx_http_guard_sc_conns[i];

        sc->in = ngx_palloc(cycle->pool, NGX_HTTP_GUARD_SC_MAX_FRAME);
        if (sc->in == NULL) {
            return NGX_ERROR;
        }

        ngx_queue_init(&sc->waiting);

        /* nginx's debug lines read a connection through ev->data */

        sc->retry.handler = ngx_http_guard_sc_retry;
        sc->retry.data = &ngx_http_guard_event_connection;
        sc->retry.log = cycle->log;
        sc->retry.cancelable = 1;
        sc->backoff = NGX_HTTP_GUARD_SC_BACKOFF_MIN;

        sc->flush.handler = ngx_http_guard_sc_flush_handler;
        sc->flush.data = &ngx_http_guard_event_connection;
        sc->flush.log = cycle->log;

        ngx_http_guard_sc_connect(sc);
    }

    return NGX_OK;
}


void
ngx_http_guard_sidecar_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t  i;

    if (ngx_http_guard_sc_conns == NULL) {
        return;
    }

    for (i = 0; i < ngx_http_guard_sc_conf->connections; i++) {
        if (ngx_http_guard_sc_conns[i].peer.connection) {
            ngx_close_connection(ngx_http_guard_sc_conns[i].peer.connection);
            ngx_http_guard_sc_conns[i].peer.connection = NULL;
        }

        free(ngx_http_guard_sc_conns[i].out.data);
        ngx_memzero(&ngx_http_guard_sc_conns[i].out, sizeof(gd_proto_buf_t));
    }
}


static void
ngx_http_guard_sc_connect(ngx_http_guard_sc_conn_t *sc)
{
    json_t            *hello;
    ngx_int_t          rc;
    ngx_connection_t  *c;

    ngx_memzero(&sc->peer, sizeof(ngx_peer_connection_t));

    sc->peer.sockaddr = ngx_http_guard_sc_conf->addr->sockaddr;
    sc->peer.socklen = ngx_http_guard_sc_conf->addr->socklen;
    sc->peer.name = &ngx_http_guard_sc_conf->addr->name;
    sc->peer.get = ngx_event_get_peer;
    sc->peer.log = &ngx_http_guard_sc_quiet_log;
    sc->peer.log_error = NGX_ERROR_ERR;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_http_guard_sc_log, 0,
                   "guard sidecar: connecting to %V", sc->peer.name);

    rc = ngx_event_connect_peer(&sc->peer);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        ngx_http_guard_sc_unreachable(ngx_socket_errno);
        ngx_http_guard_sc_close(sc, "cannot connect");
        return;
    }

    c = sc->peer.connection;
    c->data = sc;
    c->read->handler = ngx_http_guard_sc_read;
    c->write->handler = ngx_http_guard_sc_write;
    c->log = ngx_http_guard_sc_log;
    c->read->log = c->log;
    c->write->log = c->log;

    sc->state = NGX_HTTP_GUARD_SC_READY;
    sc->in_len = 0;
    sc->out.len = 0;

    hello = json_pack("{s:i, s:i, s:s, s:s%}", "version", GD_PROTO_VERSION,
                      "max_frame", NGX_HTTP_GUARD_SC_MAX_FRAME,
                      "node", "nginx", "policy_version",
                      (char *) ngx_http_guard_sc_policy_version.data,
                      ngx_http_guard_sc_policy_version.len);

    if (hello == NULL
        || ngx_http_guard_sc_send(sc, GD_FRAME_HELLO, 0, hello) != NGX_OK)
    {
        json_decref(hello);
        ngx_http_guard_sc_close(sc, "cannot send HELLO");
        return;
    }

    json_decref(hello);

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, ngx_http_guard_sc_log, 0,
                   "guard sidecar: connected");

    ngx_http_guard_audit_connected();
}


/* a failed connect(): a line a second at the most, with what it hid */

static void
ngx_http_guard_sc_unreachable(ngx_err_t err)
{
    ngx_http_guard_sc_unreported++;

    if (ngx_http_guard_sc_complained
        && ngx_current_msec - ngx_http_guard_sc_complained < 1000)
    {
        return;
    }

    ngx_log_error(ngx_http_guard_sc_log_level, ngx_http_guard_sc_log, err,
                  "guard sidecar: cannot connect to %V, %ui attempt(s) "
                  "failed since the last such line",
                  &ngx_http_guard_sc_conf->addr->name,
                  ngx_http_guard_sc_unreported);

    ngx_http_guard_sc_complained = ngx_current_msec;
    ngx_http_guard_sc_unreported = 0;
}


static void
ngx_http_guard_sc_retry(ngx_event_t *ev)
{
    ngx_http_guard_sc_conn_t  *sc;

    sc = ngx_http_guard_sc_of(ev, retry);

    if (sc->state == NGX_HTTP_GUARD_SC_DOWN && !ngx_exiting) {
        ngx_http_guard_sc_connect(sc);
    }
}


/* a broken connection fails its waiters and comes back later */

static void
ngx_http_guard_sc_close(ngx_http_guard_sc_conn_t *sc, const char *why)
{
    ngx_queue_t                 *q;
    ngx_http_guard_sc_waiter_t  *w;

    if (sc->peer.connection) {
        ngx_log_error(NGX_LOG_WARN, ngx_http_guard_sc_log, 0,
                      "guard sidecar: connection to %V closed: %s",
                      sc->peer.name, why);
        ngx_close_connection(sc->peer.connection);
        sc->peer.connection = NULL;
    }

    sc->state = NGX_HTTP_GUARD_SC_DOWN;
    sc->in_len = 0;
    sc->out.len = 0;

    if (sc->flush.posted) {
        ngx_delete_posted_event(&sc->flush);
    }

    /* the audit records it carried unanswered are queued again */
    ngx_http_guard_audit_closed(sc - ngx_http_guard_sc_conns);

    /* the waiters fail; each resumes from a posted event */

    while (!ngx_queue_empty(&sc->waiting)) {
        q = ngx_queue_head(&sc->waiting);
        w = ngx_queue_data(q, ngx_http_guard_sc_waiter_t, queue);

        ngx_http_guard_sc_wake(w, NGX_ERROR, NULL);
    }

    if (!ngx_exiting && !sc->retry.timer_set) {
        ngx_add_timer(&sc->retry, sc->backoff);
        sc->backoff = ngx_min(sc->backoff * 2, NGX_HTTP_GUARD_SC_BACKOFF_MAX);
    }
}


static ngx_int_t
ngx_http_guard_sc_send(ngx_http_guard_sc_conn_t *sc, gd_frame_type_t type,
    uint32_t id, json_t *payload)
{
    /* serialized straight into the output buffer */

    if (gd_proto_append(&sc->out, type, id, payload,
                        NGX_HTTP_GUARD_SC_MAX_FRAME)
        != 0)
    {
        return NGX_ERROR;
    }

    ngx_http_guard_sc_later(sc);

    return NGX_OK;
}


/*
 * A connection for an audit record: ready, and not backed up (records
 * wait better in the shared ring, where any worker can send them).
 * NGX_DECLINED when there is none.
 */

ngx_int_t
ngx_http_guard_sidecar_pick(void)
{
    ngx_uint_t                 i, n;
    ngx_http_guard_sc_conn_t  *sc;

    if (ngx_http_guard_sc_conns == NULL) {
        return NGX_DECLINED;
    }

    for (i = 0; i < ngx_http_guard_sc_conf->connections; i++) {
        n = ngx_http_guard_sc_next++ % ngx_http_guard_sc_conf->connections;
        sc = &ngx_http_guard_sc_conns[n];

        if (sc->state == NGX_HTTP_GUARD_SC_READY
            && sc->out.len < NGX_HTTP_GUARD_SC_OUT_MAX)
        {
            return n;
        }
    }

    return NGX_DECLINED;
}


/*
 * For readiness: this worker's connections, how many are up, and the
 * calls failed in a row while the client is cooling down (0 otherwise).
 */

ngx_uint_t
ngx_http_guard_sidecar_health(ngx_uint_t *ready, ngx_uint_t *failing)
{
    ngx_uint_t  i;

    *ready = 0;
    *failing = 0;

    if (ngx_http_guard_sc_conns == NULL) {
        return 0;
    }

    for (i = 0; i < ngx_http_guard_sc_conf->connections; i++) {
        if (ngx_http_guard_sc_conns[i].state == NGX_HTTP_GUARD_SC_READY) {
            (*ready)++;
        }
    }

    if (ngx_http_guard_sc_cooling()) {
        *failing = ngx_http_guard_sc_failures;
    }

    return ngx_http_guard_sc_conf->connections;
}


/*
 * An ERROR that says guardd refuses the request itself (its payload, or
 * a member of it), as opposed to "unavailable" (or any other code),
 * which is guardd's trouble and worth another try (docs/protocol.md).
 */

ngx_uint_t
ngx_http_guard_sidecar_refused(json_t *error)
{
    json_t      *v;
    const char  *code;

    v = json_object_get(error, "code");

    if (!json_is_string(v)) {
        return 0;
    }

    code = json_string_value(v);

    return ngx_strcmp(code, "bad_payload") == 0
           || ngx_strcmp(code, "bad_request") == 0;
}


/* an AUDIT frame whose payload is a serialized record */

ngx_int_t
ngx_http_guard_sidecar_audit(ngx_uint_t conn, uint32_t id, u_char *record,
    size_t len)
{
    u_char                     header[GD_PROTO_HEADER];
    ngx_http_guard_sc_conn_t  *sc;

    sc = &ngx_http_guard_sc_conns[conn];

    if (sc->state != NGX_HTTP_GUARD_SC_READY) {
        return NGX_ERROR;
    }

    if (gd_proto_header(GD_FRAME_AUDIT, id, len, NGX_HTTP_GUARD_SC_MAX_FRAME,
                        header)
        != 0
        || gd_proto_buf_add(&sc->out, header, GD_PROTO_HEADER) != 0
        || gd_proto_buf_add(&sc->out, record, len) != 0)
    {
        ngx_http_guard_sc_close(sc, "cannot send AUDIT");
        return NGX_ERROR;
    }

    ngx_http_guard_sc_later(sc);

    return NGX_OK;
}


/*
 * Frames are sent once the events of this loop iteration are handled:
 * the calls of many requests leave in one send(2), and guardd reads them
 * in one read.
 */

static void
ngx_http_guard_sc_later(ngx_http_guard_sc_conn_t *sc)
{
    if (!sc->flush.posted) {
        ngx_post_event(&sc->flush, &ngx_posted_events);
    }
}


static void
ngx_http_guard_sc_flush_handler(ngx_event_t *ev)
{
    ngx_http_guard_sc_conn_t  *sc;

    sc = ngx_http_guard_sc_of(ev, flush);

    if (sc->state == NGX_HTTP_GUARD_SC_READY
        && ngx_http_guard_sc_flush(sc) != NGX_OK)
    {
        ngx_http_guard_sc_close(sc, "write failed");
    }
}


static ngx_int_t
ngx_http_guard_sc_flush(ngx_http_guard_sc_conn_t *sc)
{
    ssize_t            n;
    ngx_connection_t  *c;

    c = sc->peer.connection;

    while (sc->out.len) {
        n = c->send(c, sc->out.data, sc->out.len);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == NGX_ERROR || n == 0) {
            return NGX_ERROR;
        }

        ngx_memmove(sc->out.data, sc->out.data + n, sc->out.len - n);
        sc->out.len -= n;
    }

    if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_guard_sc_write(ngx_event_t *wev)
{
    ngx_connection_t          *c = wev->data;
    ngx_http_guard_sc_conn_t  *sc = c->data;

    if (ngx_http_guard_sc_flush(sc) != NGX_OK) {
        ngx_http_guard_sc_close(sc, "write failed");
    }
}


static void
ngx_http_guard_sc_read(ngx_event_t *rev)
{
    ngx_connection_t          *c = rev->data;
    ngx_http_guard_sc_conn_t  *sc = c->data;

    char                          err[256];
    size_t                        used, off;
    ssize_t                       n;
    gd_frame_t                    f;
    gd_proto_rc_t                 rc;
    ngx_http_guard_sc_waiter_t   *w;
    ngx_http_guard_metrics_sh_t  *m;

    for ( ;; ) {
        n = c->recv(c, sc->in + sc->in_len,
                    NGX_HTTP_GUARD_SC_MAX_FRAME - sc->in_len);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == NGX_ERROR || n == 0) {
            ngx_http_guard_sc_close(sc, n == 0 ? "closed by guardd"
                                               : "read failed");
            return;
        }

        sc->in_len += n;
        off = 0;

        for ( ;; ) {
            rc = gd_proto_decode(sc->in + off, sc->in_len - off,
                                 NGX_HTTP_GUARD_SC_MAX_FRAME, &f, &used,
                                 err, sizeof(err));

            if (rc == GD_PROTO_AGAIN) {
                break;
            }

            if (rc == GD_PROTO_ERROR) {
                ngx_http_guard_sc_close(sc, err);
                return;
            }

            off += used;

            if (rc == GD_PROTO_BAD_PAYLOAD) {
                /* only that request fails (an AUDIT is tried again) */
                ngx_log_error(NGX_LOG_WARN, c->log, 0,
                              "guard sidecar: %s", err);

                if (f.type == GD_FRAME_VERDICT || f.type == GD_FRAME_ACK) {
                    f.type = GD_FRAME_ERROR;
                }
            }

            if ((f.type == GD_FRAME_ACK || f.type == GD_FRAME_ERROR)
                && (f.id & NGX_HTTP_GUARD_AUDIT_ID))
            {
                ngx_http_guard_audit_answer(f.id, f.type == GD_FRAME_ACK,
                                            f.payload);

            } else if (f.type == GD_FRAME_VERDICT
                       || f.type == GD_FRAME_ERROR)
            {
                w = ngx_http_guard_sc_find(f.id);

                if (w && w->conn == sc) {
                    m = ngx_http_guard_metrics_get(w->request);

                    if (m) {
                        ngx_http_guard_metrics_observe(&m->sidecar_rtt,
                            (ngx_http_guard_monotonic_ns() - w->sent) / 1000);
                    }

                    ngx_http_guard_sc_wake(w, f.type == GD_FRAME_VERDICT
                                              ? NGX_OK : NGX_ERROR,
                                           f.payload);
                }
            }

            /* HELLO, PONG, late VERDICTs: nothing waits for them */

            json_decref(f.payload);
        }

        ngx_memmove(sc->in, sc->in + off, sc->in_len - off);
        sc->in_len -= off;

        if (sc->in_len == NGX_HTTP_GUARD_SC_MAX_FRAME) {
            ngx_http_guard_sc_close(sc, "frame too large");
            return;
        }
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_http_guard_sc_close(sc, "read event");
    }
}


/* requests */

static ngx_uint_t
ngx_http_guard_sc_cooling(void)
{
    return ngx_http_guard_sc_failures >= NGX_HTTP_GUARD_SC_FAILURES
           && (ngx_msec_int_t) (ngx_current_msec
                                - ngx_http_guard_sc_cooldown) < 0;
}


static void
ngx_http_guard_sc_failed(void)
{
    if (++ngx_http_guard_sc_failures >= NGX_HTTP_GUARD_SC_FAILURES
        && !ngx_http_guard_sc_cooling())
    {
        /*
         * several failures in a row: stop asking for a while; when the
         * while is over, the next request tries again
         */
        ngx_http_guard_sc_cooldown = ngx_current_msec
                                     + NGX_HTTP_GUARD_SC_COOLDOWN;
    }
}


/*
 * A DECIDE call for request r: build makes its payload once a connection
 * is ready, done takes the answer (a VERDICT: NGX_OK; an ERROR, a timeout
 * or a broken connection: NGX_ERROR, payload NULL unless an ERROR) and
 * says whether it was a usable one.  NGX_AGAIN: the request waits, and is
 * resumed from a posted event once done has run; NGX_DECLINED: there is
 * no asking now (no ready connection, or the client is cooling down), a
 * failure is counted.
 */

ngx_int_t
ngx_http_guard_sidecar_call(ngx_http_request_t *r,
    ngx_http_guard_sidecar_build_pt build, ngx_http_guard_sidecar_done_pt done,
    void *data)
{
    json_t                      *doc;
    ngx_uint_t                   i, cooling;
    ngx_pool_cleanup_t          *cln;
    ngx_http_guard_sc_conn_t    *sc;
    ngx_http_guard_sc_waiter_t  *w;

    sc = NULL;
    cooling = ngx_http_guard_sc_cooling();

    if (ngx_http_guard_sc_conns && !cooling) {
        for (i = 0; i < ngx_http_guard_sc_conf->connections; i++) {
            sc = &ngx_http_guard_sc_conns[ngx_http_guard_sc_next++
                                 % ngx_http_guard_sc_conf->connections];
            if (sc->state == NGX_HTTP_GUARD_SC_READY) {
                break;
            }
            sc = NULL;
        }
    }

    if (sc) {
        doc = build(r, data);
        w = ngx_pcalloc(r->pool, sizeof(ngx_http_guard_sc_waiter_t));
        cln = ngx_pool_cleanup_add(r->pool, 0);

        if (doc && w && cln) {
            w->request = r;
            w->conn = sc;
            w->done = done;
            w->data = data;
            /* DECIDE ids never have the bit of AUDIT ids */
            w->id = ++ngx_http_guard_sc_id & ~NGX_HTTP_GUARD_AUDIT_ID;
            w->sent = ngx_http_guard_monotonic_ns();

            if (ngx_http_guard_sc_send(sc, GD_FRAME_DECIDE, w->id, doc)
                == NGX_OK)
            {
                json_decref(doc);

                ngx_queue_insert_tail(&sc->waiting, &w->queue);

                w->node.key = w->id;
                ngx_rbtree_insert(&ngx_http_guard_sc_waiters, &w->node);

                /* the request's connection, for nginx's debug lines */
                w->timer.handler = ngx_http_guard_sc_timeout;
                w->timer.data = r->connection;
                w->timer.log = r->connection->log;
                ngx_add_timer(&w->timer, ngx_http_guard_sc_conf->timeout);

                w->resume.handler = ngx_http_guard_sc_resume;
                w->resume.data = r->connection;
                w->resume.log = r->connection->log;

                cln->handler = ngx_http_guard_sc_waiter_cleanup;
                cln->data = w;

                return NGX_AGAIN;
            }

            ngx_http_guard_sc_close(sc, "cannot send DECIDE");
        }

        json_decref(doc);
    }

    if (!cooling) {
        ngx_http_guard_sc_failed();
    }

    return NGX_DECLINED;
}


/* the waiter of a DECIDE id, or NULL: a VERDICT after its timeout */

static ngx_http_guard_sc_waiter_t *
ngx_http_guard_sc_find(uint32_t id)
{
    ngx_rbtree_key_t    key;
    ngx_rbtree_node_t  *node, *sentinel;

    key = id;
    node = ngx_http_guard_sc_waiters.root;
    sentinel = ngx_http_guard_sc_waiters.sentinel;

    while (node != sentinel) {

        if (key < node->key) {
            node = node->left;
            continue;
        }

        if (key > node->key) {
            node = node->right;
            continue;
        }

        return (ngx_http_guard_sc_waiter_t *)
                   ((u_char *) node
                    - offsetof(ngx_http_guard_sc_waiter_t, node));
    }

    return NULL;
}


static void
ngx_http_guard_sc_timeout(ngx_event_t *ev)
{
    ngx_log_t                     log;
    ngx_http_guard_sc_waiter_t   *w;
    ngx_http_guard_metrics_sh_t  *m;

    w = (ngx_http_guard_sc_waiter_t *)
            ((u_char *) ev - offsetof(ngx_http_guard_sc_waiter_t, timer));

    m = ngx_http_guard_metrics_get(w->request);

    if (m) {
        (void) ngx_atomic_fetch_add(&m->sidecar_timeouts, 1);
    }

    /* a line a second at the most, with how many it hid */

    ngx_http_guard_sc_timeouts++;

    if (ngx_http_guard_sc_timeout_logged == 0
        || ngx_current_msec - ngx_http_guard_sc_timeout_logged >= 1000)
    {
        ngx_log_error(NGX_LOG_WARN,
                      ngx_http_guard_request_log(w->request, &log), 0,
                      "guard sidecar: no verdict within %M ms, "
                      "%ui request(s) since the last such line",
                      ngx_http_guard_sc_conf->timeout,
                      ngx_http_guard_sc_timeouts);

        ngx_http_guard_sc_timeout_logged = ngx_current_msec;
        ngx_http_guard_sc_timeouts = 0;
    }

    ngx_http_guard_sc_wake(w, NGX_ERROR, NULL);
}


/*
 * The answer: the caller takes it at once, and the request resumes from
 * a posted event, never inside the loop that read the answer (or that
 * found the connection broken), which may be another request's.
 */

static void
ngx_http_guard_sc_wake(ngx_http_guard_sc_waiter_t *w, ngx_int_t verdict,
    json_t *payload)
{
    ngx_log_t  log;

    if (w->finished) {
        return;
    }

    ngx_http_guard_sc_detach(w);

    if (w->done(w->request, w->data, verdict, payload) == NGX_OK) {
        ngx_http_guard_sc_failures = 0;
        w->conn->backoff = NGX_HTTP_GUARD_SC_BACKOFF_MIN;

    } else if (verdict == NGX_ERROR && ngx_http_guard_sidecar_refused(payload))
    {
        /* guardd is well: it refused this request, which alone fails */
        ngx_log_error(NGX_LOG_WARN,
                      ngx_http_guard_request_log(w->request, &log), 0,
                      "guard sidecar: guardd refused the DECIDE (%s)",
                      json_string_value(json_object_get(payload, "code")));

    } else {
        ngx_http_guard_sc_failed();
    }

    ngx_post_event(&w->resume, &ngx_posted_events);
}


/* resume the request where it waited: in the access phase */

static void
ngx_http_guard_sc_resume(ngx_event_t *ev)
{
    ngx_connection_t            *c;
    ngx_http_request_t          *r;
    ngx_http_guard_sc_waiter_t  *w;

    w = (ngx_http_guard_sc_waiter_t *)
            ((u_char *) ev - offsetof(ngx_http_guard_sc_waiter_t, resume));

    r = w->request;
    c = r->connection;

    r->write_event_handler(r);
    ngx_http_run_posted_requests(c);
}


static void
ngx_http_guard_sc_waiter_cleanup(void *data)
{
    ngx_http_guard_sc_waiter_t  *w = data;

    /* the request is gone before its verdict, or before it resumed */

    if (!w->finished) {
        ngx_http_guard_sc_detach(w);
    }

    if (w->resume.posted) {
        ngx_delete_posted_event(&w->resume);
    }
}


/* a waiter leaves its connection's queue, the id tree and its timer */

static void
ngx_http_guard_sc_detach(ngx_http_guard_sc_waiter_t *w)
{
    w->finished = 1;
    ngx_queue_remove(&w->queue);
    ngx_rbtree_delete(&ngx_http_guard_sc_waiters, &w->node);

    if (w->timer.timer_set) {
        ngx_del_timer(&w->timer);
    }
}
