/*
 * guardd: the Guard policy/scoring sidecar.
 *
 *   guardd -c guardd.conf [-t]
 *
 * One epoll loop thread serves the Unix socket: it decodes frames with
 * the shared codec (gd_proto), answers HELLO and PING at once, and hands
 * AUDIT records to the writer thread, which appends them to the journal
 * (gd_journal) and fsyncs in group commits; an ACK goes out only after
 * its record was fsynced.  No blocking call runs on the loop thread.
 *
 * SIGHUP reloads the policies (the old set stays when the new one is
 * invalid); SIGTERM and SIGINT stop accepting, answer what is in flight,
 * flush the journal and exit.
 */
#define _GNU_SOURCE

#include "gd_journal.h"
#include "gd_policy.h"
#include "gd_proto.h"
#include "gd_risk.h"
#include "gd_uuid.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define GD_MAX_EVENTS 64
#define GD_READ_CHUNK 16384

/* configuration (guardd.conf, JSON) */

typedef struct {
    char *listen;
    mode_t socket_mode;
    char *socket_group;
    char *user;
    char *pid_file;
    char *policies;
    char *journal_dir;
    size_t segment_size;
    size_t max_frame;
    char *node;
} gd_conf_t;

/* a connection */

typedef struct gd_conn_s gd_conn_t;

struct gd_conn_s {
    int fd;
    uint64_t serial; /* never reused: ACKs find their connection by it */
    uint8_t *in;
    size_t in_len, in_cap;
    uint8_t *out;
    size_t out_len, out_cap;
    size_t max_frame;
    gd_conn_t *next;
};

/* an AUDIT on its way to the journal, and back as an ACK */

typedef struct gd_job_s gd_job_t;

struct gd_job_s {
    uint64_t conn;
    uint32_t id;
    json_t *record;
    int ok;
    char error[128];
    gd_job_t *next;
};

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    gd_job_t *todo, **todo_tail;
    gd_job_t *done, **done_tail;
    int stop;
    int eventfd;
    gd_journal_t *journal;
    uint64_t commits, records;
} gd_writer_t;

static gd_conf_t conf;
static gd_writer_t writer;
static gd_policy_set_t *policies;
static gd_risk_state_t *risk_state;
static gd_uuid_gen_t uuid_gen;
static gd_conn_t *conns;
static uint64_t next_serial = 1;
static int epfd;
static int verbose = 1;

static void logmsg(const char *level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void logmsg(const char *level, const char *fmt, ...)
{
    char ts[32];
    time_t now = time(NULL);
    struct tm tm;
    va_list ap;

    if (!verbose && strcmp(level, "info") == 0) {
        return;
    }

    gmtime_r(&now, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);

    fprintf(stderr, "%s guardd[%d] %s: ", ts, (int)getpid(), level);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* configuration */

static char *conf_string(json_t *doc, const char *key, const char *dflt)
{
    json_t *v = json_object_get(doc, key);
    return strdup(json_is_string(v) ? json_string_value(v) : dflt);
}

static int conf_load(const char *path)
{
    static const char *known[] = {"listen",  "socket_mode", "socket_group",
                                  "user",    "pid_file",    "policies",
                                  "journal", "max_frame",   "node",
                                  "log",     NULL};
    json_error_t err;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
    const char *key;
    json_t *v, *j;

    if (doc == NULL) {
        logmsg("emerg", "%s:%d:%d: %s", path, err.line, err.column, err.text);
        return -1;
    }

    json_object_foreach(doc, key, v)
    {
        const char **k;
        for (k = known; *k && strcmp(*k, key) != 0; k++) {
        }
        if (*k == NULL) {
            logmsg("emerg", "%s: unknown setting \"%s\"", path, key);
            json_decref(doc);
            return -1;
        }
    }

    conf.listen = conf_string(doc, "listen", "/run/guard/guardd.sock");
    conf.socket_group = conf_string(doc, "socket_group", "");
    conf.user = conf_string(doc, "user", "");
    conf.pid_file = conf_string(doc, "pid_file", "/run/guard/guardd.pid");
    conf.policies = conf_string(doc, "policies", "/etc/guard/policies");
    conf.node = conf_string(doc, "node", "guardd");

    v = json_object_get(doc, "socket_mode");
    conf.socket_mode = (mode_t)strtol(
        json_is_string(v) ? json_string_value(v) : "0660", NULL, 8);

    v = json_object_get(doc, "max_frame");
    conf.max_frame = json_is_integer(v) ? (size_t)json_integer_value(v)
                                        : GD_PROTO_DEFAULT_MAX_FRAME;
    if (conf.max_frame < GD_PROTO_MIN_FRAME ||
        conf.max_frame > GD_PROTO_MAX_FRAME) {
        logmsg("emerg", "%s: max_frame must be from %d to %d", path,
               GD_PROTO_MIN_FRAME, GD_PROTO_MAX_FRAME);
        json_decref(doc);
        return -1;
    }

    j = json_object_get(doc, "journal");
    v = json_object_get(j, "dir");
    conf.journal_dir = strdup(json_is_string(v) ? json_string_value(v)
                                                : "/var/lib/guard/journal");
    v = json_object_get(j, "segment_size");
    conf.segment_size =
        json_is_integer(v) ? (size_t)json_integer_value(v) : 64 * 1024 * 1024;

    v = json_object_get(doc, "log");
    verbose = !(json_is_string(v) && strcmp(json_string_value(v), "warn") == 0);

    json_decref(doc);
    return 0;
}

static gd_policy_set_t *policies_load(void)
{
    gd_errors_t errs = {0};
    gd_policy_set_t *set = gd_policy_set_load(conf.policies, &errs);

    for (size_t i = 0; i < errs.n; i++) {
        logmsg("error", "%s", errs.lines[i]);
    }
    gd_errors_free(&errs);

    return set;
}

/* the writer thread: journal appends and group commits */

static void *writer_main(void *arg)
{
    (void)arg;

    pthread_mutex_lock(&writer.lock);

    for (;;) {
        while (writer.todo == NULL && !writer.stop) {
            pthread_cond_wait(&writer.cond, &writer.lock);
        }

        if (writer.todo == NULL && writer.stop) {
            break;
        }

        /* take everything queued: one fsync for the whole group */
        gd_job_t *batch = writer.todo;
        writer.todo = NULL;
        writer.todo_tail = &writer.todo;
        pthread_mutex_unlock(&writer.lock);

        int failed = 0;
        for (gd_job_t *job = batch; job; job = job->next) {
            job->ok = gd_journal_append(writer.journal, job->record, job->error,
                                        sizeof(job->error)) == 0;
            failed |= !job->ok;
        }

        if (gd_journal_sync(writer.journal) != 0) {
            for (gd_job_t *job = batch; job; job = job->next) {
                if (job->ok) {
                    job->ok = 0;
                    snprintf(job->error, sizeof(job->error), "fsync: %s",
                             strerror(errno));
                }
            }
            failed = 1;
        }

        if (failed) {
            logmsg("error", "journal: %s", batch->error);
        }

        pthread_mutex_lock(&writer.lock);
        writer.commits++;
        for (gd_job_t *job = batch; job; job = job->next) {
            writer.records += job->ok;
        }
        *writer.done_tail = batch;
        while (*writer.done_tail) {
            writer.done_tail = &(*writer.done_tail)->next;
        }
        pthread_mutex_unlock(&writer.lock);

        uint64_t one = 1;
        if (write(writer.eventfd, &one, sizeof(one)) < 0) {
            logmsg("error", "eventfd: %s", strerror(errno));
        }

        pthread_mutex_lock(&writer.lock);
    }

    pthread_mutex_unlock(&writer.lock);
    return NULL;
}

/* connections */

static gd_conn_t *conn_find(uint64_t serial)
{
    for (gd_conn_t *c = conns; c; c = c->next) {
        if (c->serial == serial) {
            return c;
        }
    }
    return NULL;
}

static void conn_close(gd_conn_t *c, const char *why)
{
    gd_conn_t **pp;

    if (why) {
        logmsg("warn", "closing connection %llu: %s",
               (unsigned long long)c->serial, why);
    }

    for (pp = &conns; *pp && *pp != c; pp = &(*pp)->next) {
    }
    if (*pp) {
        *pp = c->next;
    }

    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in);
    free(c->out);
    free(c);
}

static void conn_want_write(gd_conn_t *c, int on)
{
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0),
                             .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* writes what it can now; the rest waits for EPOLLOUT */
static int conn_flush(gd_conn_t *c)
{
    while (c->out_len > 0) {
        ssize_t n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);

        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                conn_want_write(c, 1);
                return 0;
            }
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }

        memmove(c->out, c->out + n, c->out_len - (size_t)n);
        c->out_len -= (size_t)n;
    }

    conn_want_write(c, 0);
    return 0;
}

static int conn_send(gd_conn_t *c, gd_frame_type_t type, uint32_t id,
                     json_t *payload)
{
    uint8_t *frame;
    size_t len;

    if (gd_proto_encode(type, id, payload, c->max_frame, &frame, &len) != 0) {
        return -1;
    }

    if (c->out_len + len > c->out_cap) {
        size_t cap = (c->out_len + len) * 2;
        uint8_t *more = realloc(c->out, cap);
        if (more == NULL) {
            free(frame);
            return -1;
        }
        c->out = more;
        c->out_cap = cap;
    }

    memcpy(c->out + c->out_len, frame, len);
    c->out_len += len;
    free(frame);

    return conn_flush(c);
}

static int conn_error(gd_conn_t *c, uint32_t id, const char *code,
                      const char *message)
{
    json_t *p = json_pack("{s:s, s:s}", "code", code, "message", message);
    int rc = conn_send(c, GD_FRAME_ERROR, id, p);
    json_decref(p);
    return rc;
}

/* hands a record to the writer; conn 0: nobody waits for an ACK */
static int journal_enqueue(uint64_t conn, uint32_t id, json_t *record)
{
    gd_job_t *job = calloc(1, sizeof(gd_job_t));

    if (job == NULL) {
        return -1;
    }

    job->conn = conn;
    job->id = id;
    job->record = json_incref(record);

    pthread_mutex_lock(&writer.lock);
    *writer.todo_tail = job;
    writer.todo_tail = &job->next;
    pthread_cond_signal(&writer.cond);
    pthread_mutex_unlock(&writer.lock);

    return 0;
}

static const char *str_member(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* DECIDE: score the request with the tenant's risk rules */
static int handle_decide(gd_conn_t *c, gd_frame_t *f)
{
    gd_risk_request_t req = {0};
    gd_risk_result_t res;
    const gd_policy_t *p;
    json_t *in = f->payload, *v, *signals, *out;
    uint8_t id[GD_UUID_LEN];
    char idtext[GD_UUID_STRLEN + 1];
    struct timespec ts;
    int rc;

    req.tenant = in ? str_member(in, "tenant") : NULL;
    if (req.tenant == NULL || req.tenant[0] == '\0') {
        return conn_error(c, f->id, "bad_request", "DECIDE needs a tenant");
    }

    req.subject = str_member(in, "subject");
    req.method = str_member(in, "method");
    req.route = str_member(in, "route");
    req.client_ip = str_member(in, "client_ip");
    req.route_sensitive = json_is_true(json_object_get(in, "route_sensitive"));
    v = json_object_get(in, "body_size");
    req.body_size = json_is_integer(v) && json_integer_value(v) > 0
                        ? (uint64_t)json_integer_value(v)
                        : 0;
    v = json_object_get(in, "inline_score");
    req.inline_score = json_is_integer(v) ? json_integer_value(v) : -1;
    v = json_object_get(in, "claims");
    req.claims = json_is_object(v) ? v : NULL;

    clock_gettime(CLOCK_REALTIME, &ts);
    req.now = ts.tv_sec;
    req.local_minutes = -1;

    p = gd_policy_find(policies, req.tenant, strlen(req.tenant));

    if (gd_uuid7_next(&uuid_gen,
                      (uint64_t)ts.tv_sec * 1000 +
                          (uint64_t)ts.tv_nsec / 1000000,
                      id) != 0) {
        return conn_error(c, f->id, "unavailable", "no randomness");
    }
    gd_uuid_format(id, idtext);
    idtext[GD_UUID_STRLEN] = '\0';

    if (p == NULL || !p->has_risk) {
        out = json_pack("{s:s, s:i, s:[], s:s, s:s}", "decision", "allow",
                        "score", 0, "signals", "policy_version",
                        policies->version, "decision_id", idtext);
        rc = conn_send(c, GD_FRAME_VERDICT, f->id, out);
        json_decref(out);
        return rc;
    }

    if (p->risk.time_zone && gd_risk_local_minutes(p->risk.time_zone, req.now,
                                                   &req.local_minutes) != 0) {
        req.local_minutes = -1;
    }

    if (gd_risk_score(p, risk_state, &req, &res) != 0) {
        return conn_error(c, f->id, "unavailable", "cannot score");
    }

    if (req.subject) {
        gd_risk_observe_request(risk_state, req.tenant, req.subject,
                                req.client_ip, req.now);
        if (res.decision != GD_RISK_ALLOW && !res.shadow) {
            gd_risk_observe_refusal(risk_state, req.tenant, req.subject,
                                    req.now);
        }
    }

    signals = json_array();
    for (size_t i = 0; i < res.nmatches; i++) {
        json_array_append_new(
            signals, json_pack("{s:s, s:i, s:b}", "id", res.matches[i].id,
                               "weight", (int)res.matches[i].weight, "shadow",
                               res.matches[i].shadow));
    }

    out =
        json_pack("{s:s, s:i, s:o, s:{s:i, s:i}, s:s, s:s, s:b}", "decision",
                  gd_risk_decision_name(res.decision), "score", (int)res.score,
                  "signals", signals, "thresholds", "step_up", (int)res.step_up,
                  "deny", (int)res.deny, "policy_version", policies->version,
                  "decision_id", idtext, "shadow", res.shadow);
    if (out == NULL) {
        return conn_error(c, f->id, "unavailable", "out of memory");
    }
    if (res.ttl_ms) {
        json_object_set_new(out, "ttl_ms",
                            json_integer((json_int_t)res.ttl_ms));
    }

    rc = conn_send(c, GD_FRAME_VERDICT, f->id, out);

    /* every decision that is not an allow is journaled */
    if (res.decision != GD_RISK_ALLOW) {
        json_t *rec = json_pack(
            "{s:s, s:I, s:s, s:s?, s:s?, s:s?, s:s?, s:s, s:s, s:i, s:s,"
            " s:i, s:O, s:s, s:s?, s:s, s:b}",
            "id", idtext, "ts_ms",
            (json_int_t)((uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000),
            "tenant", req.tenant, "subject", req.subject, "client_ip",
            req.client_ip, "method", req.method, "route", req.route, "stage",
            "risk", "outcome", res.shadow ? "shadow_deny" : "deny", "status",
            res.decision == GD_RISK_DENY ? 403 : 401, "reason",
            res.decision == GD_RISK_DENY ? "risk_deny" : "risk_step_up",
            "score", (int)res.score, "signals", json_object_get(out, "signals"),
            "policy_version", policies->version, "traceparent",
            str_member(in, "traceparent"), "node", conf.node, "shadow",
            res.shadow);
        if (rec) {
            json_object_set(rec, "thresholds",
                            json_object_get(out, "thresholds"));
        }
        if (rec == NULL || journal_enqueue(0, 0, rec) != 0) {
            logmsg("error", "decision %s could not be journaled", idtext);
        }
        json_decref(rec);
    }

    json_decref(out);
    return rc;
}

static int handle_frame(gd_conn_t *c, gd_frame_t *f)
{
    json_t *p;
    int rc = 0;

    switch (f->type) {

    case GD_FRAME_HELLO: {
        json_t *mf =
            f->payload ? json_object_get(f->payload, "max_frame") : NULL;
        if (json_is_integer(mf) &&
            json_integer_value(mf) >= GD_PROTO_MIN_FRAME &&
            (size_t)json_integer_value(mf) < c->max_frame) {
            c->max_frame = (size_t)json_integer_value(mf);
        }
        p = json_pack("{s:i, s:I, s:s, s:s}", "version", GD_PROTO_VERSION,
                      "max_frame", (json_int_t)c->max_frame, "node", conf.node,
                      "policy_version", policies ? policies->version : "");
        rc = conn_send(c, GD_FRAME_HELLO, f->id, p);
        json_decref(p);
        break;
    }

    case GD_FRAME_PING:
        rc = conn_send(c, GD_FRAME_PONG, f->id, NULL);
        break;

    case GD_FRAME_AUDIT:
        if (f->payload == NULL) {
            rc = conn_error(c, f->id, "bad_request", "AUDIT needs a record");
        } else if (journal_enqueue(c->serial, f->id, f->payload) != 0) {
            rc = conn_error(c, f->id, "unavailable", "out of memory");
        }
        break;

    case GD_FRAME_DECIDE:
        rc = handle_decide(c, f);
        break;

    default:
        rc = conn_error(c, f->id, "bad_request",
                        "this frame type is not a request");
        break;
    }

    return rc;
}

static void conn_read(gd_conn_t *c)
{
    for (;;) {
        if (c->in_cap - c->in_len < GD_READ_CHUNK) {
            size_t cap = c->in_cap ? c->in_cap * 2 : GD_READ_CHUNK * 2;
            uint8_t *more;

            if (cap > c->max_frame + GD_READ_CHUNK * 2) {
                cap = c->max_frame + GD_READ_CHUNK * 2;
            }
            if (cap <= c->in_cap) {
                break; /* full: decode first */
            }
            more = realloc(c->in, cap);
            if (more == NULL) {
                conn_close(c, "out of memory");
                return;
            }
            c->in = more;
            c->in_cap = cap;
        }

        ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);

        if (n == 0) {
            conn_close(c, NULL);
            return;
        }
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                conn_close(c, strerror(errno));
                return;
            }
            break;
        }
        c->in_len += (size_t)n;

        /* decode every whole frame */
        size_t off = 0;
        for (;;) {
            gd_frame_t f;
            size_t used;
            char err[256];
            gd_proto_rc_t rc =
                gd_proto_decode(c->in + off, c->in_len - off, c->max_frame, &f,
                                &used, err, sizeof(err));

            if (rc == GD_PROTO_AGAIN) {
                break;
            }
            if (rc == GD_PROTO_ERROR) {
                conn_close(c, err);
                return;
            }

            int hrc = handle_frame(c, &f);
            json_decref(f.payload);
            off += used;

            if (hrc != 0) {
                conn_close(c, "cannot answer");
                return;
            }
        }

        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
    }
}

/* ACKs for what the writer made durable */

static void deliver_acks(void)
{
    uint64_t count;
    gd_job_t *done;

    if (read(writer.eventfd, &count, sizeof(count)) < 0 && errno != EAGAIN) {
        logmsg("error", "eventfd: %s", strerror(errno));
    }

    pthread_mutex_lock(&writer.lock);
    done = writer.done;
    writer.done = NULL;
    writer.done_tail = &writer.done;
    pthread_mutex_unlock(&writer.lock);

    while (done) {
        gd_job_t *next = done->next;
        gd_conn_t *c = conn_find(done->conn);

        if (c) {
            json_t *p = json_pack("{s:s}", "hash",
                                  done->ok ? json_string_value(json_object_get(
                                                 done->record, "hash"))
                                           : "");
            int rc = done->ok
                         ? conn_send(c, GD_FRAME_ACK, done->id, p)
                         : conn_error(c, done->id, "unavailable", done->error);
            json_decref(p);
            if (rc != 0) {
                /* closed by the read handler, when it sees the end */
                shutdown(c->fd, SHUT_RDWR);
            }
        }

        json_decref(done->record);
        free(done);
        done = next;
    }
}

/* the listening socket */

static int listen_socket(void)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd;

    if (strlen(conf.listen) >= sizeof(sa.sun_path)) {
        logmsg("emerg", "listen: the path is too long");
        return -1;
    }
    strcpy(sa.sun_path, conf.listen);

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        logmsg("emerg", "socket: %s", strerror(errno));
        return -1;
    }

    unlink(conf.listen);

    /* create it with no access, then open it up to owner and group */
    mode_t old = umask(0777);
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);

    if (rc != 0 || listen(fd, 512) != 0) {
        logmsg("emerg", "%s: %s", conf.listen, strerror(errno));
        close(fd);
        return -1;
    }

    if (conf.socket_group[0]) {
        struct group *g = getgrnam(conf.socket_group);
        if (g == NULL || chown(conf.listen, (uid_t)-1, g->gr_gid) != 0) {
            logmsg("emerg", "%s: cannot give it to group \"%s\"", conf.listen,
                   conf.socket_group);
            close(fd);
            return -1;
        }
    }

    if (chmod(conf.listen, conf.socket_mode) != 0) {
        logmsg("emerg", "%s: chmod: %s", conf.listen, strerror(errno));
        close(fd);
        return -1;
    }

    return fd;
}

static int drop_privileges(void)
{
    struct passwd *pw;

    if (getuid() != 0 || conf.user[0] == '\0') {
        return 0;
    }

    pw = getpwnam(conf.user);
    if (pw == NULL) {
        logmsg("emerg", "user \"%s\" does not exist", conf.user);
        return -1;
    }

    if (chown(conf.listen, pw->pw_uid, (gid_t)-1) != 0 ||
        chown(conf.journal_dir, pw->pw_uid, pw->pw_gid) != 0 ||
        initgroups(pw->pw_name, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 ||
        setuid(pw->pw_uid) != 0) {
        logmsg("emerg", "cannot drop privileges to \"%s\": %s", conf.user,
               strerror(errno));
        return -1;
    }

    logmsg("info", "running as %s", conf.user);
    return 0;
}

static int write_pid(void)
{
    FILE *f = fopen(conf.pid_file, "w");

    if (f == NULL) {
        logmsg("emerg", "%s: %s", conf.pid_file, strerror(errno));
        return -1;
    }
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);
    return 0;
}

int main(int argc, char **argv)
{
    const char *conf_path = NULL;
    int test_only = 0, lfd, sfd, running = 1;
    char err[256];
    sigset_t mask;
    pthread_t thread;
    struct epoll_event ev, events[GD_MAX_EVENTS];

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            conf_path = argv[++i];
        } else if (strcmp(argv[i], "-t") == 0) {
            test_only = 1;
        } else {
            fprintf(stderr, "usage: guardd -c guardd.conf [-t]\n");
            return 2;
        }
    }

    if (conf_path == NULL) {
        fprintf(stderr, "usage: guardd -c guardd.conf [-t]\n");
        return 2;
    }

    if (conf_load(conf_path) != 0) {
        return 1;
    }

    policies = policies_load();
    if (policies == NULL) {
        logmsg("emerg", "the policies in %s are invalid", conf.policies);
        return 1;
    }

    if (test_only) {
        printf("guardd: %s is valid, policy version %s\n", conf_path,
               policies->version);
        return 0;
    }

    writer.journal =
        gd_journal_open(conf.journal_dir, conf.segment_size, err, sizeof(err));
    if (writer.journal == NULL) {
        logmsg("emerg", "journal: %s", err);
        return 1;
    }

    gd_uuid_gen_init(&uuid_gen);
    risk_state = gd_risk_state_new(100000);
    if (risk_state == NULL) {
        logmsg("emerg", "out of memory");
        return 1;
    }

    lfd = listen_socket();
    if (lfd < 0 || write_pid() != 0 || drop_privileges() != 0) {
        return 1;
    }

    /* signals arrive as file descriptor events on the loop */
    sigemptyset(&mask);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);

    pthread_mutex_init(&writer.lock, NULL);
    pthread_cond_init(&writer.cond, NULL);
    writer.todo_tail = &writer.todo;
    writer.done_tail = &writer.done;
    writer.eventfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (sfd < 0 || writer.eventfd < 0 || epfd < 0 ||
        pthread_create(&thread, NULL, writer_main, NULL) != 0) {
        logmsg("emerg", "cannot start: %s", strerror(errno));
        return 1;
    }

    ev.events = EPOLLIN;
    ev.data.ptr = &lfd;
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);
    ev.data.ptr = &sfd;
    epoll_ctl(epfd, EPOLL_CTL_ADD, sfd, &ev);
    ev.data.ptr = &writer.eventfd;
    epoll_ctl(epfd, EPOLL_CTL_ADD, writer.eventfd, &ev);

    logmsg("notice", "listening on %s (mode %04o), policy version %s",
           conf.listen, (unsigned)conf.socket_mode, policies->version);

    while (running) {
        int n = epoll_wait(epfd, events, GD_MAX_EVENTS, -1);

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            logmsg("emerg", "epoll_wait: %s", strerror(errno));
            break;
        }

        for (int i = 0; i < n; i++) {
            void *ptr = events[i].data.ptr;

            if (ptr == &lfd) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL,
                                     SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    gd_conn_t *c = calloc(1, sizeof(gd_conn_t));
                    if (c == NULL) {
                        close(fd);
                        continue;
                    }
                    c->fd = fd;
                    c->serial = next_serial++;
                    c->max_frame = conf.max_frame;
                    c->next = conns;
                    conns = c;
                    ev.events = EPOLLIN;
                    ev.data.ptr = c;
                    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
                }

            } else if (ptr == &sfd) {
                struct signalfd_siginfo si;

                while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
                    if (si.ssi_signo == SIGHUP) {
                        gd_policy_set_t *set = policies_load();
                        if (set == NULL) {
                            logmsg("error",
                                   "reload failed: keeping policy "
                                   "version %s",
                                   policies->version);
                        } else {
                            gd_policy_set_free(policies);
                            policies = set;
                            logmsg("notice", "reloaded: policy version %s",
                                   policies->version);
                        }
                    } else if (si.ssi_signo == SIGTERM ||
                               si.ssi_signo == SIGINT) {
                        running = 0;
                    }
                }

            } else if (ptr == &writer.eventfd) {
                deliver_acks();

            } else {
                gd_conn_t *c = ptr;

                if (events[i].events & EPOLLOUT) {
                    if (conn_flush(c) != 0) {
                        conn_close(c, strerror(errno));
                        continue;
                    }
                }
                if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                    conn_read(c);
                }
            }
        }
    }

    /* shut down: no new connections, in-flight records made durable and
     * acknowledged, then the journal closed */

    logmsg("notice", "shutting down");
    epoll_ctl(epfd, EPOLL_CTL_DEL, lfd, NULL);
    close(lfd);
    unlink(conf.listen);

    pthread_mutex_lock(&writer.lock);
    writer.stop = 1;
    pthread_cond_signal(&writer.cond);
    pthread_mutex_unlock(&writer.lock);
    pthread_join(thread, NULL);

    deliver_acks();
    for (gd_conn_t *c = conns; c; c = c->next) {
        /* the last answers, given one second to leave */
        struct timeval tv = {.tv_sec = 1};
        int fl = fcntl(c->fd, F_GETFL);
        setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        fcntl(c->fd, F_SETFL, fl & ~O_NONBLOCK);
        conn_flush(c);
    }
    while (conns) {
        conn_close(conns, NULL);
    }

    gd_journal_close(writer.journal);
    logmsg("notice", "stopped: %llu records in %llu group commits",
           (unsigned long long)writer.records,
           (unsigned long long)writer.commits);
    unlink(conf.pid_file);
    gd_policy_set_free(policies);
    gd_risk_state_free(risk_state);
    return 0;
}
