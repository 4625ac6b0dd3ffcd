/*
 * guardd: the listener and the connections.  A connection is read until
 * its frames are decoded and handled (guardd_frames.c); its answers are
 * sent together; backpressure pauses a connection whose answers are not
 * read, and a sweep closes connections idle or stuck past their
 * timeouts.
 */
#define _GNU_SOURCE

#include "guardd.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

gd_conn_t *conns;
size_t nconns;
static uint64_t next_serial = 1;
static int backlog_ready; /* a resumed connection has frames to decode */
int accept_paused;        /* out of descriptors: listener out of epoll */
int64_t accept_resume_ms;

static gd_every_t every_emfile, every_refused;

static void accept_conns(gd_watch_t *w, uint32_t events);
static void conn_handler(gd_watch_t *w, uint32_t events);

static gd_watch_t listener = {-1, accept_conns};

gd_conn_t *conn_find(uint64_t serial)
{
    for (gd_conn_t *c = conns; c; c = c->next) {
        if (c->serial == serial) {
            return c;
        }
    }
    return NULL;
}

void conn_close(gd_conn_t *c, const char *why)
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

    loop_del(&c->watch);
    close(c->watch.fd);
    free(c->in);
    free(c->out);
    free(c);
    nconns--;
}

/* what epoll reports: input unless paused, output while some waits */
static void conn_events(gd_conn_t *c, int want_write, int paused)
{
    if (c->want_write != want_write || c->paused != paused) {
        c->want_write = want_write;
        c->paused = paused;
        loop_mod(&c->watch,
                 (paused ? 0 : EPOLLIN) | (want_write ? EPOLLOUT : 0));
    }
}

static void conn_want_write(gd_conn_t *c, int on)
{
    conn_events(c, on, c->paused);
}

/*
 * Backpressure: a connection whose unsent answers reach max_output is
 * not read (nor its buffered frames decoded) until they drain below half
 * of it; one that stays over it for stuck_timeout is closed (sweep).
 */
static void conn_pause(gd_conn_t *c)
{
    if (!c->paused) {
        c->paused_ms = now_ms;
        sweep_needed = 1;
        conn_events(c, c->want_write, 1);
    }
}

static void conn_resume(gd_conn_t *c)
{
    if (c->paused && c->out_len <= conf.max_output / 2) {
        conn_events(c, c->want_write, 0);
        backlog_ready |= c->backlog;
    }
}

/* a whole frame came in */
static void conn_heard(gd_conn_t *c, const gd_frame_t *f)
{
    c->active_ms = now_ms;
    c->hello |= f->type == GD_FRAME_HELLO;
    sweep_needed |=
        (c->hello ? conf.hello_idle_timeout : conf.idle_timeout) > 0;
}

/* writes what it can now; the rest waits for EPOLLOUT */
int conn_flush(gd_conn_t *c)
{
    while (c->out_len > 0) {
        ssize_t n = send(c->watch.fd, c->out, c->out_len, MSG_NOSIGNAL);

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
        c->active_ms = now_ms;
        conn_resume(c);
    }

    conn_want_write(c, 0);
    return 0;
}

int conn_send(gd_conn_t *c, gd_frame_type_t type, uint32_t id, json_t *payload)
{
    gd_proto_buf_t out = {c->out, c->out_len, c->out_cap};
    int rc = gd_proto_append(&out, type, id, payload, c->max_frame);

    c->out = out.data;
    c->out_len = out.len;
    c->out_cap = out.cap;

    if (rc != 0) {
        return -1;
    }

    /*
     * answers are sent together, once the frames of a read (or the ACKs
     * of a group commit) are handled: one send(2) for many frames
     */
    return c->out_len > GD_OUT_HIGH_WATER ? conn_flush(c) : 0;
}

int conn_error(gd_conn_t *c, uint32_t id, const char *code, const char *message)
{
    json_t *p = json_pack("{s:s, s:s}", "code", code, "message", message);
    int rc = conn_send(c, GD_FRAME_ERROR, id, p);

    metrics_reject_code(code);
    json_decref(p);
    return rc;
}

static void conn_read(gd_conn_t *c)
{
    for (;;) {
        if (!c->backlog && c->in_cap - c->in_len < GD_READ_CHUNK) {
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

        /* frames left undecoded by backpressure go first */
        ssize_t n = c->backlog ? 0
                               : recv(c->watch.fd, c->in + c->in_len,
                                      c->in_cap - c->in_len, 0);

        if (n == 0 && !c->backlog) {
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
        c->backlog = 0;

        /* decode every whole frame */
        size_t off = 0;
        for (;;) {
            if (c->out_len >= conf.max_output) {
                c->backlog = 1; /* the rest waits for the answers to drain */
                break;
            }

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
                metrics_reject(GD_REJECT_FRAMING);
                conn_close(c, err);
                return;
            }

            /*
             * a payload guardd cannot accept is that request's problem
             * only: an ERROR for its id, and the connection goes on
             */
            conn_heard(c, &f);
            int hrc = rc == GD_PROTO_BAD_PAYLOAD
                          ? handle_bad_payload(c, &f, err)
                          : handle_frame(c, &f);
            json_decref(f.payload);
            off += used;

            if (hrc != 0) {
                conn_close(c, "cannot answer");
                return;
            }
        }

        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;

        if (c->out_len > 0 && conn_flush(c) != 0) {
            conn_close(c, strerror(errno));
            return;
        }

        if (c->out_len >= conf.max_output) {
            conn_pause(c);
            return;
        }
    }
}

/* what epoll reported for a connection */
static void conn_handler(gd_watch_t *w, uint32_t events)
{
    gd_conn_t *c = (gd_conn_t *)w;

    /* paused, its input is not read: a hang-up would be reported again
     * and again */
    if (c->paused && (events & (EPOLLHUP | EPOLLERR))) {
        conn_close(c, NULL);
        return;
    }
    if (events & EPOLLOUT) {
        if (conn_flush(c) != 0) {
            conn_close(c, strerror(errno));
            return;
        }
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        conn_read(c);
    }
}

/* new connections: over max_connections accepted and closed at once;
 * out of descriptors, the listener leaves epoll for a moment */
static void accept_conns(gd_watch_t *w, uint32_t events)
{
    uint64_t more;

    (void)events;

    for (;;) {
        int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return;
            }

            /* EMFILE, ENFILE, ENOBUFS, ENOMEM: level-triggered, the
             * listener would wake the loop again at once */
            if (every_due(&every_emfile, &more)) {
                logmsg("error",
                       "accept: %s (%zu connections open): not accepting "
                       "for %d ms at a time (%llu more times since the "
                       "last line)",
                       strerror(errno), nconns, GD_ACCEPT_PAUSE_MS,
                       (unsigned long long)more);
            }
            loop_del(w);
            accept_paused = 1;
            accept_resume_ms = now_ms + GD_ACCEPT_PAUSE_MS;
            return;
        }

        if (nconns >= conf.max_connections) {
            close(fd);
            metrics_reject(GD_REJECT_MAX_CONNECTIONS);
            if (every_due(&every_refused, &more)) {
                logmsg("warn",
                       "refusing connections: max_connections (%zu) are "
                       "open (%llu more refused since the last line)",
                       conf.max_connections, (unsigned long long)more);
            }
            continue;
        }

        gd_conn_t *c = calloc(1, sizeof(gd_conn_t));

        if (c == NULL) {
            close(fd);
            continue;
        }
        c->watch.fd = fd;
        c->watch.handler = conn_handler;
        c->serial = next_serial++;
        c->max_frame = conf.max_frame;
        c->active_ms = now_ms;
        c->next = conns;
        conns = c;
        nconns++;
        metric_add(&metrics.connections_total, 1);
        sweep_needed |= conf.idle_timeout > 0;
        loop_add(&c->watch, EPOLLIN);
    }
}

/* closes connections idle or stuck past their timeouts */
void sweep(void)
{
    gd_conn_t *c, *next;

    sweep_needed = 0;

    for (c = conns; c; c = next) {
        long idle = c->hello ? conf.hello_idle_timeout : conf.idle_timeout;

        next = c->next;

        if (c->paused) {
            sweep_needed = 1;
            if (now_ms - c->paused_ms >= conf.stuck_timeout * 1000) {
                char why[160];
                snprintf(why, sizeof(why),
                         "stuck: %zu bytes of answers unread for %ld s "
                         "(max_output %zu, stuck_timeout %ld)",
                         c->out_len, (long)((now_ms - c->paused_ms) / 1000),
                         conf.max_output, conf.stuck_timeout);
                conn_close(c, why);
            }
            continue;
        }

        if (idle > 0) {
            sweep_needed = 1;
            if (now_ms - c->active_ms >= idle * 1000) {
                logmsg("info", "closing connection %llu: idle for %ld s (%s)",
                       (unsigned long long)c->serial, idle,
                       c->hello ? "hello_idle_timeout" : "idle_timeout");
                conn_close(c, NULL);
            }
        }
    }
}

/* decodes the frames of connections that backpressure held and that
 * drained since */
void run_backlogs(void)
{
    gd_conn_t *c, *next;

    while (backlog_ready) {
        backlog_ready = 0;
        for (c = conns; c; c = next) {
            next = c->next;
            if (c->backlog && !c->paused) {
                conn_read(c);
            }
        }
    }
}

/* a listening Unix socket at path, with socket_mode and socket_group
 * (the listener's, and the metrics endpoint's when it is a path) */
int unix_listen(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        logmsg("emerg", "%s: the path is too long", path);
        return -1;
    }
    strcpy(sa.sun_path, path);

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        logmsg("emerg", "socket: %s", strerror(errno));
        return -1;
    }

    unlink(path);

    /* create it with no access, then open it up to owner and group */
    mode_t old = umask(0777);
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);

    if (rc != 0 || listen(fd, 512) != 0) {
        logmsg("emerg", "%s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }

    if (conf.socket_group[0]) {
        struct group *g = getgrnam(conf.socket_group);
        if (g == NULL || chown(path, (uid_t)-1, g->gr_gid) != 0) {
            logmsg("emerg", "%s: cannot give it to group \"%s\"", path,
                   conf.socket_group);
            close(fd);
            return -1;
        }
    }

    if (chmod(path, conf.socket_mode) != 0) {
        logmsg("emerg", "%s: chmod: %s", path, strerror(errno));
        close(fd);
        return -1;
    }

    return fd;
}

int listen_socket(void)
{
    listener.fd = unix_listen(conf.listen);
    return listener.fd;
}

/* the listener in the loop */
void listener_start(void)
{
    loop_add(&listener, EPOLLIN);
}

/* out of descriptors a moment ago: the listener back in the loop */
void listener_check(void)
{
    if (accept_paused && now_ms >= accept_resume_ms) {
        accept_paused = 0;
        loop_add(&listener, EPOLLIN);
    }
}

/* no new connections: the socket closed and removed */
void listener_stop(void)
{
    loop_del(&listener);
    close(listener.fd);
    unlink(conf.listen);
}

/* shutting down: the last answers, given one second to leave, then every
 * connection closed */
void conns_finish(void)
{
    for (gd_conn_t *c = conns; c; c = c->next) {
        struct timeval tv = {.tv_sec = 1};
        int fl = fcntl(c->watch.fd, F_GETFL);
        setsockopt(c->watch.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        fcntl(c->watch.fd, F_SETFL, fl & ~O_NONBLOCK);
        conn_flush(c);
    }
    while (conns) {
        conn_close(conns, NULL);
    }
}
