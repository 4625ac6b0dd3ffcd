/*
 * guardd: its counters, and the Prometheus endpoint.
 *
 * guardd.conf's "metrics" names a Unix socket (a path) or a loopback TCP
 * address (127.0.0.1:PORT, [::1]:PORT); nothing else is accepted.  The
 * endpoint is a minimal HTTP/1.0 server on the epoll loop: it reads one
 * request head (at most GD_METRICS_MAX_REQUEST bytes), answers GET
 * /metrics with the text exposition format 0.0.4 (400 for a request it
 * cannot read, 404 for another path, 405 for another method), and closes
 * the connection.  At most GD_METRICS_MAX_CONNS scrapes are served at
 * once (one more is accepted and closed), and a scrape that has not ended
 * GD_METRICS_TIMEOUT_MS after it was accepted is closed by the sweep: a
 * slow scraper holds a few KiB for a few seconds, no more.
 */
#define _GNU_SOURCE

#include "guardd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static const uint64_t decide_le[] = {1,   2,   5,    10,   25,   50,    100,
                                     250, 500, 1000, 2500, 5000, 10000, 50000};
static const uint64_t fsync_le[] = {100,   250,    500,    1000,
                                    2500,  5000,   10000,  25000,
                                    50000, 100000, 250000, 1000000};

gd_metrics_t metrics = {
    .decide_us = {decide_le, sizeof(decide_le) / sizeof(decide_le[0])},
    .fsync_us = {fsync_le, sizeof(fsync_le) / sizeof(fsync_le[0])},
};

/* the rejection reasons' label values, in gd_reject_t order; the first
 * ones are the codes of the ERROR frames */
static const char *reject_names[GD_REJECT_N] = {
    "bad_payload", "bad_request", "unavailable", "framing", "max_connections"};

/* the endpoint */

typedef struct gd_mconn_s gd_mconn_t;

struct gd_mconn_s {
    gd_watch_t watch; /* first: what epoll hands back is the scrape */
    char in[GD_METRICS_MAX_REQUEST];
    size_t in_len;
    char *out;
    size_t out_len, out_sent;
    int answered;  /* the answer is built: sending it */
    int lingering; /* sent and shut down: reading to the end */
    int64_t start_ms;
    gd_mconn_t *next;
};

/* a text that grows; failed: out of memory once, the text is void */
typedef struct {
    char *p;
    size_t len, cap;
    int failed;
} gd_text_t;

static struct sockaddr_storage maddr;
static socklen_t maddr_len;
static gd_mconn_t *mconns;
static size_t nmconns;
static gd_every_t every_busy;
static int maccept_paused; /* out of descriptors: listener out of epoll */
static int64_t maccept_resume_ms;

static void metrics_accept(gd_watch_t *w, uint32_t events);
static void mconn_handler(gd_watch_t *w, uint32_t events);
static void mconn_send(gd_mconn_t *m);

static gd_watch_t mlistener = {-1, metrics_accept};

int64_t monotonic_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* one observation, by the histogram's one writer thread */
void hist_observe(gd_hist_t *h, uint64_t us)
{
    size_t i = 0;

    while (i < h->n && us > h->le[i]) {
        i++;
    }
    metric_add(&h->bucket[i], 1);
    metric_add(&h->sum, us);
}

/* a VERDICT sent: its decision, and the time since t0_us (monotonic_us) */
void metrics_decision(gd_risk_decision_t d, int shadow, int64_t t0_us)
{
    int64_t took = monotonic_us() - t0_us;

    metric_add(&metrics.decisions[d][shadow != 0], 1);
    hist_observe(&metrics.decide_us, took > 0 ? (uint64_t)took : 0);
}

void metrics_reject(gd_reject_t why)
{
    metric_add(&metrics.rejected[why], 1);
}

/* an ERROR frame sent, by its code */
void metrics_reject_code(const char *code)
{
    for (int i = 0; i <= GD_REJECT_UNAVAILABLE; i++) {
        if (strcmp(code, reject_names[i]) == 0) {
            metrics_reject((gd_reject_t)i);
            return;
        }
    }
}

/* a port, 1 to 65535, all digits */
static int parse_port(const char *s, in_port_t *port)
{
    char *end;
    long v;

    if (*s < '0' || *s > '9') {
        return -1;
    }
    v = strtol(s, &end, 10);
    if (*end != '\0' || v < 1 || v > 65535) {
        return -1;
    }
    *port = htons((in_port_t)v);
    return 0;
}

/*
 * guardd.conf's "metrics": a Unix socket path, 127.0.0.1:PORT (any
 * 127.0.0.0/8 address) or [::1]:PORT; what it names is kept for
 * metrics_listen.  0, or -1 with the reason logged.
 */
int metrics_check(const char *addr, const char *path)
{
    char host[64];
    const char *colon;
    int loopback;

    memset(&maddr, 0, sizeof(maddr));

    if (addr[0] == '/') {
        struct sockaddr_un *sa = (struct sockaddr_un *)&maddr;

        if (strlen(addr) >= sizeof(sa->sun_path)) {
            logmsg("emerg", "%s: metrics: the socket path is too long", path);
            return -1;
        }
        sa->sun_family = AF_UNIX;
        strcpy(sa->sun_path, addr);
        maddr_len = sizeof(*sa);
        return 0;
    }

    colon = strrchr(addr, ':');
    if (colon == NULL || (size_t)(colon - addr) >= sizeof(host)) {
        goto invalid;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';

    if (host[0] == '[') {
        struct sockaddr_in6 *sa = (struct sockaddr_in6 *)&maddr;
        size_t hl = strlen(host);

        if (hl < 3 || host[hl - 1] != ']') {
            goto invalid;
        }
        host[hl - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, &sa->sin6_addr) != 1 ||
            parse_port(colon + 1, &sa->sin6_port) != 0) {
            goto invalid;
        }
        sa->sin6_family = AF_INET6;
        maddr_len = sizeof(*sa);
        loopback = IN6_IS_ADDR_LOOPBACK(&sa->sin6_addr);
    } else {
        struct sockaddr_in *sa = (struct sockaddr_in *)&maddr;

        if (inet_pton(AF_INET, host, &sa->sin_addr) != 1 ||
            parse_port(colon + 1, &sa->sin_port) != 0) {
            goto invalid;
        }
        sa->sin_family = AF_INET;
        maddr_len = sizeof(*sa);
        loopback = (ntohl(sa->sin_addr.s_addr) >> 24) == 127;
    }

    if (!loopback) {
        logmsg("emerg",
               "%s: metrics: \"%s\" is not a loopback address; guardd serves "
               "its metrics on a Unix socket (a path), 127.0.0.1:PORT or "
               "[::1]:PORT only",
               path, addr);
        return -1;
    }
    return 0;

invalid:
    logmsg("emerg",
           "%s: metrics must be a Unix socket path (starting with /), "
           "127.0.0.1:PORT or [::1]:PORT, not \"%s\"",
           path, addr);
    return -1;
}

/* the endpoint's socket, when guardd.conf names one (before privileges
 * are dropped: a port under 1024 may be named); also the start time */
int metrics_listen(void)
{
    struct timespec ts;
    int fd, one = 1;

    clock_gettime(CLOCK_REALTIME, &ts);
    metrics.start_time = (double)ts.tv_sec + ts.tv_nsec / 1e9;

    if (conf.metrics == NULL) {
        return 0;
    }

    if (maddr.ss_family == AF_UNIX) {
        fd = unix_listen(conf.metrics);
    } else {
        fd = socket(maddr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    0);
        if (fd < 0 ||
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
            (maddr.ss_family == AF_INET6 &&
             setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) !=
                 0) ||
            bind(fd, (struct sockaddr *)&maddr, maddr_len) != 0 ||
            listen(fd, 64) != 0) {
            logmsg("emerg", "metrics %s: %s", conf.metrics, strerror(errno));
            if (fd >= 0) {
                close(fd);
            }
            fd = -1;
        }
    }

    mlistener.fd = fd;
    return fd < 0 ? -1 : 0;
}

void metrics_start(void)
{
    if (mlistener.fd >= 0) {
        loop_add(&mlistener, EPOLLIN);
        logmsg("notice", "metrics on %s", conf.metrics);
    }
}

static void mconn_close(gd_mconn_t *m)
{
    gd_mconn_t **pp;

    for (pp = &mconns; *pp && *pp != m; pp = &(*pp)->next) {
    }
    if (*pp) {
        *pp = m->next;
    }
    loop_del(&m->watch);
    close(m->watch.fd);
    free(m->out);
    free(m);
    nmconns--;
}

static void metrics_accept(gd_watch_t *w, uint32_t events)
{
    uint64_t more;

    (void)events;

    for (;;) {
        int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        gd_mconn_t *m;

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                /* out of descriptors (the listener would wake the loop
                 * at once, again and again): back after a pause */
                loop_del(w);
                maccept_paused = 1;
                maccept_resume_ms = now_ms + GD_ACCEPT_PAUSE_MS;
                sweep_needed = 1;
            }
            return;
        }

        if (nmconns >= GD_METRICS_MAX_CONNS ||
            (m = calloc(1, sizeof(gd_mconn_t))) == NULL) {
            close(fd);
            if (every_due(&every_busy, &more)) {
                logmsg("warn",
                       "metrics: %d scrapes in progress, closing another "
                       "(%llu more since the last line)",
                       GD_METRICS_MAX_CONNS, (unsigned long long)more);
            }
            continue;
        }

        m->watch.fd = fd;
        m->watch.handler = mconn_handler;
        m->start_ms = now_ms;
        m->next = mconns;
        mconns = m;
        nmconns++;
        sweep_needed = 1;
        loop_add(&m->watch, EPOLLIN);
    }
}

static void text_printf(gd_text_t *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void text_printf(gd_text_t *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (t->failed) {
        return;
    }

    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(t->p ? t->p + t->len : NULL, t->cap - t->len, fmt, ap);
        va_end(ap);

        if (n < 0) {
            t->failed = 1;
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }

        size_t cap = (t->cap ? t->cap : 4096) * 2 + (size_t)n;
        char *p = realloc(t->p, cap);

        if (p == NULL) {
            t->failed = 1;
            return;
        }
        t->p = p;
        t->cap = cap;
    }
}

/* a label value: backslash, double quote and newline escaped */
static void text_label(gd_text_t *t, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"') {
            text_printf(t, "\\%c", *v);
        } else if (*v == '\n') {
            text_printf(t, "\\n");
        } else {
            text_printf(t, "%c", *v);
        }
    }
}

static void family(gd_text_t *t, const char *name, const char *type,
                   const char *help)
{
    text_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* a metric with one sample and no labels */
static void scalar(gd_text_t *t, const char *name, const char *type,
                   const char *help, uint64_t v)
{
    family(t, name, type, help);
    text_printf(t, "%s %llu\n", name, (unsigned long long)v);
}

static void histogram(gd_text_t *t, const char *name, const char *help,
                      gd_hist_t *h)
{
    uint64_t cum = 0;

    family(t, name, "histogram", help);
    for (size_t i = 0; i <= h->n; i++) {
        cum += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
        if (i < h->n) {
            text_printf(t, "%s_bucket{le=\"%llu\"} %llu\n", name,
                        (unsigned long long)h->le[i], (unsigned long long)cum);
        } else {
            text_printf(t, "%s_bucket{le=\"+Inf\"} %llu\n", name,
                        (unsigned long long)cum);
        }
    }
    text_printf(
        t, "%s_sum %llu\n%s_count %llu\n", name,
        (unsigned long long)atomic_load_explicit(&h->sum, memory_order_relaxed),
        name, (unsigned long long)cum);
}

/* one family of the sinks: a sample per sink */
static void sink_family(gd_text_t *t, const char *name, const char *type,
                        const char *help, int which)
{
    family(t, name, type, help);
    for (size_t i = 0; i < nsinks; i++) {
        gd_sink_t *s = sinks[i];
        uint64_t v = which == 0   ? sink_lag(s)
                     : which == 2 ? atomic_load(&s->published)
                     : which == 3 ? atomic_load(&s->duplicates)
                     : which == 4 ? atomic_load(&s->errors)
                     : which == 5 ? atomic_load(&s->dead_letters)
                                  : atomic_load(&s->up);

        if (which == 1) {
            text_printf(t, "%s{sink=\"%s\"} %.3f\n", name, s->ops->name,
                        sink_lag_seconds(s));
        } else {
            text_printf(t, "%s{sink=\"%s\"} %llu\n", name, s->ops->name,
                        (unsigned long long)v);
        }
    }
}

/* the sinks' families, when there are sinks */
static void sinks_render(gd_text_t *t)
{
    sink_family(t, "guardd_sink_lag_records", "gauge",
                "Journal records made durable that the sink has not "
                "consumed yet (published, duplicate or dead letter).",
                0);
    sink_family(t, "guardd_sink_lag_seconds", "gauge",
                "Age of the oldest record the sink has not consumed yet "
                "(from its ts_ms), 0 when it is caught up.",
                1);
    sink_family(t, "guardd_sink_published_total", "counter",
                "Records the sink added (Redis entries, PostgreSQL rows).", 2);
    sink_family(t, "guardd_sink_duplicates_total", "counter",
                "Records the sink already held, published again after a "
                "crash or a reconnect, and refused by it.",
                3);
    sink_family(t, "guardd_sink_errors_total", "counter",
                "Failed connections and batches: the sink was down or "
                "answered an error; the batch waits and is tried again.",
                4);
    sink_family(t, "guardd_sink_dead_letters_total", "counter",
                "Records the sink rejected, written to its dead-letter "
                "file and skipped.",
                5);
    sink_family(t, "guardd_sink_up", "gauge",
                "1 while the sink is connected, else 0.", 6);
}

/* the exposition (text format 0.0.4) */
static void render(gd_text_t *t)
{
    uint64_t records, commits, duplicates, spill_records;

    pthread_mutex_lock(&writer.lock);
    records = writer.records;
    commits = writer.commits;
    duplicates = writer.duplicates;
    spill_records = writer.spill_records;
    pthread_mutex_unlock(&writer.lock);

    family(t, "guardd_decisions_total", "counter",
           "DECIDE requests answered with a VERDICT, by verdict; "
           "shadow=\"true\": the caller said it does not enforce it.");
    for (int d = GD_RISK_ALLOW; d <= GD_RISK_DENY; d++) {
        for (int s = 0; s < 2; s++) {
            text_printf(t,
                        "guardd_decisions_total{verdict=\"%s\",shadow=\"%s\"} "
                        "%llu\n",
                        gd_risk_decision_name((gd_risk_decision_t)d),
                        s ? "true" : "false",
                        (unsigned long long)atomic_load_explicit(
                            &metrics.decisions[d][s], memory_order_relaxed));
        }
    }

    histogram(t, "guardd_decision_duration_microseconds",
              "Time from a decoded DECIDE to its VERDICT queued for sending, "
              "in microseconds.",
              &metrics.decide_us);

    scalar(t, "guardd_journal_records_total", "counter",
           "Records appended to the journal (AUDIT frames, refusals of "
           "DECIDE, spill files); duplicates are not appended.",
           records);

    scalar(t, "guardd_journal_group_commits_total", "counter",
           "Groups of queued records the writer thread appended together, "
           "with one fsync for the group.",
           commits);

    scalar(t, "guardd_journal_duplicates_total", "counter",
           "Records not appended because their id was journaled before "
           "(dedupe window), from the socket or spill files.",
           duplicates);

    histogram(t, "guardd_journal_fsync_duration_microseconds",
              "Time of one fsync of the journal, in microseconds.",
              &metrics.fsync_us);

    scalar(t, "guardd_spill_files_total", "counter",
           "Spill files ingested whole.",
           atomic_load_explicit(&writer.spill_files, memory_order_relaxed));

    scalar(t, "guardd_spill_records_total", "counter",
           "Records appended to the journal from spill files.", spill_records);

    if (nsinks > 0) {
        sinks_render(t);
    }

    scalar(t, "guardd_connections", "gauge",
           "Sidecar protocol connections open (the endpoint's own are not "
           "counted).",
           nconns);

    scalar(
        t, "guardd_connections_total", "counter",
        "Sidecar protocol connections accepted and served.",
        atomic_load_explicit(&metrics.connections_total, memory_order_relaxed));

    family(t, "guardd_frames_rejected_total", "counter",
           "Requests refused: ERROR bad_payload, bad_request or unavailable; "
           "a framing error (its connection closed); a connection over "
           "max_connections (closed at once).");
    for (int i = 0; i < GD_REJECT_N; i++) {
        text_printf(t, "guardd_frames_rejected_total{reason=\"%s\"} %llu\n",
                    reject_names[i],
                    (unsigned long long)atomic_load_explicit(
                        &metrics.rejected[i], memory_order_relaxed));
    }

    family(t, "guardd_policy_info", "gauge",
           "The version of the policies guardd scores with (always 1).");
    text_printf(t, "guardd_policy_info{version=\"");
    text_label(t, policies ? policies->version : "");
    text_printf(t, "\"} 1\n");

    family(t, "process_start_time_seconds", "gauge",
           "When guardd started, in seconds since the epoch.");
    text_printf(t, "process_start_time_seconds %.3f\n", metrics.start_time);
}

/* the whole answer: status line, head, body */
static void answer(gd_mconn_t *m, int status, const char *extra)
{
    gd_text_t body = {0}, out = {0};
    const char *reason, *type = "text/plain; charset=utf-8";

    switch (status) {
    case 200:
        reason = "OK";
        type = "text/plain; version=0.0.4; charset=utf-8";
        render(&body);
        break;
    case 404:
        reason = "Not Found";
        text_printf(&body, "not found: guardd serves GET /metrics\n");
        break;
    case 405:
        reason = "Method Not Allowed";
        text_printf(&body, "method not allowed: guardd serves GET /metrics\n");
        break;
    default:
        status = 400;
        reason = "Bad Request";
        text_printf(&body, "bad request: guardd serves GET /metrics\n");
        break;
    }

    text_printf(&out,
                "HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: "
                "%zu\r\n%sConnection: close\r\n\r\n",
                status, reason, type, body.len, extra ? extra : "");
    if (!out.failed && !body.failed && body.len > 0) {
        text_printf(&out, "%.*s", (int)body.len, body.p);
    }
    free(body.p);

    if (out.failed || body.failed) {
        free(out.p);
        mconn_close(m);
        return;
    }

    m->out = out.p;
    m->out_len = out.len;
    m->answered = 1;
    loop_mod(&m->watch, EPOLLOUT);
    mconn_send(m);
}

/* a whole request head in m->in: its request line decides */
static void request(gd_mconn_t *m)
{
    char *line = m->in, *eol = memchr(m->in, '\n', m->in_len);
    char *method, *target, *version, *save = NULL;
    size_t len;

    len = (size_t)(eol - line);
    if (len > 0 && line[len - 1] == '\r') {
        len--;
    }
    line[len] = '\0';

    /* METHOD SP request-target SP HTTP-version */
    method = strtok_r(line, " ", &save);
    target = strtok_r(NULL, " ", &save);
    version = strtok_r(NULL, " ", &save);
    if (method == NULL || target == NULL || version == NULL ||
        strtok_r(NULL, " ", &save) != NULL ||
        strncmp(version, "HTTP/1.", 7) != 0 || target[0] != '/') {
        answer(m, 400, NULL);
        return;
    }
    if (strcmp(method, "GET") != 0) {
        answer(m, 405, "Allow: GET\r\n");
        return;
    }
    len = strcspn(target, "?");
    if (len != strlen("/metrics") || memcmp(target, "/metrics", len) != 0) {
        answer(m, 404, NULL);
        return;
    }
    answer(m, 200, NULL);
}

/* sends what it can; once all is sent, shuts the connection down for
 * writing and reads what the client may still send, to the end, so that
 * closing it does not reset the answer away */
static void mconn_send(gd_mconn_t *m)
{
    while (m->out_sent < m->out_len) {
        ssize_t n = send(m->watch.fd, m->out + m->out_sent,
                         m->out_len - m->out_sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                mconn_close(m);
            }
            return;
        }
        m->out_sent += (size_t)n;
    }

    shutdown(m->watch.fd, SHUT_WR);
    m->lingering = 1;
    loop_mod(&m->watch, EPOLLIN);
}

static void mconn_handler(gd_watch_t *w, uint32_t events)
{
    gd_mconn_t *m = (gd_mconn_t *)w;
    char discard[4096];
    ssize_t n;

    if (m->lingering) {
        do {
            n = recv(w->fd, discard, sizeof(discard), 0);
        } while (n > 0 || (n < 0 && errno == EINTR));
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            mconn_close(m);
        }
        return;
    }

    if (m->answered) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
            mconn_send(m);
        }
        return;
    }

    for (;;) {
        n = recv(w->fd, m->in + m->in_len, sizeof(m->in) - m->in_len, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        if (n <= 0) {
            mconn_close(m); /* gone before a whole request */
            return;
        }
        m->in_len += (size_t)n;

        if (memmem(m->in, m->in_len, "\r\n\r\n", 4) != NULL ||
            memmem(m->in, m->in_len, "\n\n", 2) != NULL) {
            request(m);
            return;
        }
        if (m->in_len == sizeof(m->in)) {
            answer(m, 400, NULL); /* a head over GD_METRICS_MAX_REQUEST */
            return;
        }
    }
}

/* scrapes past GD_METRICS_TIMEOUT_MS closed, and the listener back
 * after a pause (with the loop's sweep) */
void metrics_sweep(void)
{
    gd_mconn_t *m, *next;

    if (maccept_paused && now_ms >= maccept_resume_ms) {
        maccept_paused = 0;
        loop_add(&mlistener, EPOLLIN);
    }

    for (m = mconns; m; m = next) {
        next = m->next;
        if (now_ms - m->start_ms >= GD_METRICS_TIMEOUT_MS) {
            mconn_close(m);
        }
    }
    if (mconns || maccept_paused) {
        sweep_needed = 1;
    }
}

/* shutting down: the endpoint closed (its socket file removed) */
void metrics_stop(void)
{
    if (mlistener.fd < 0) {
        return;
    }
    if (!maccept_paused) {
        loop_del(&mlistener);
    }
    close(mlistener.fd);
    mlistener.fd = -1;
    while (mconns) {
        mconn_close(mconns);
    }
    if (maddr.ss_family == AF_UNIX) {
        unlink(conf.metrics);
    }
}
