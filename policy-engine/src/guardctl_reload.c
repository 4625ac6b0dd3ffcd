/*
 * guardctl reload: nginx and guardd reloaded as one.
 *
 * The policy directory is checked first, as `guardctl policy check` does
 * (nothing is signalled when it fails); then nginx's master and guardd
 * get SIGHUP (their pid files); then both are asked for their policy
 * version until each reports the directory's or the timeout passes:
 * nginx through guard_status (JSON "policy_version", an HTTP/1.0 GET over
 * TCP or a Unix socket), guardd through its HELLO answer.  nginx reloads
 * asynchronously: the new workers answer once the old ones stop
 * accepting, so the versions are polled, and nginx counts as reloaded
 * only once every worker the master had when it was signalled has
 * stopped accepting (its title is "worker process is shutting down",
 * which nginx sets as it closes its listening sockets) or is gone: until
 * then a new connection may still reach an old worker and its policies.
 */
#include "guardctl.h"

#include "gd_soc.h"

#include <dirent.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define RELOAD_POLL_MS 100
#define RELOAD_HTTP_MAX (1024 * 1024)
/* nginx's NGX_MAX_PROCESSES: a master has no more children than this */
#define RELOAD_MAX_WORKERS 1024

/* a process, by pid and start time (so that a reused pid is another) */
typedef struct {
    pid_t pid;
    unsigned long long start;
} proc_t;

/* a version, or why there is none: what each side reports */
typedef struct {
    char text[512];
    int ok; /* text is a version */
} reported_t;

/* the pid in file (who names the program in errors); 0, or -1 */
static int read_pid(const char *file, const char *who, pid_t *pid)
{
    FILE *f = fopen(file, "r");
    long v = 0;
    int n;

    if (f == NULL) {
        fprintf(stderr, "guardctl: reload: cannot read %s's pid file %s: %s\n",
                who, file, strerror(errno));
        return -1;
    }
    n = fscanf(f, "%ld", &v);
    fclose(f);

    if (n != 1 || v <= 1 || v > 0x7fffffff) {
        fprintf(stderr, "guardctl: reload: %s's pid file %s holds no pid\n",
                who, file);
        return -1;
    }
    *pid = (pid_t)v;
    return 0;
}

/* /proc/PID/what into buf, NUL-terminated: 0, or -1 (gone) */
static int proc_read(pid_t pid, const char *what, char *buf, size_t len)
{
    char path[64];
    size_t n;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%ld/%s", (long)pid, what);
    f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    n = fread(buf, 1, len - 1, f);
    fclose(f);
    buf[n] = '\0';
    return 0;
}

/* pid's parent and start time, from /proc/PID/stat: 0, or -1 (gone) */
static int proc_stat(pid_t pid, pid_t *ppid, unsigned long long *start)
{
    char buf[1024], *p;
    unsigned long long v = 0;
    long pp = 0;

    if (proc_read(pid, "stat", buf, sizeof(buf)) != 0) {
        return -1;
    }
    /* "pid (comm) state ppid ...": the comm may hold spaces and ')';
     * p + 2 is field 3, the start time field 22 */
    p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ' || sscanf(p + 2, "%*c %ld", &pp) != 1) {
        return -1;
    }
    p += 2;
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (p == NULL) {
            return -1;
        }
        p++;
    }
    if (sscanf(p, "%llu", &v) != 1) {
        return -1;
    }
    *ppid = (pid_t)pp;
    *start = v;
    return 0;
}

/* the worker processes of nginx's master, into w[]: how many (none where
 * there is no /proc) */
static size_t nginx_workers(pid_t master, proc_t *w, size_t max)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    size_t n = 0;

    if (d == NULL) {
        return 0;
    }
    while (n < max && (e = readdir(d)) != NULL) {
        char *end, title[256];
        long pid = strtol(e->d_name, &end, 10);
        unsigned long long start;
        pid_t ppid;

        if (*end != '\0' || pid <= 1 || pid > 0x7fffffff ||
            proc_stat((pid_t)pid, &ppid, &start) != 0 || ppid != master ||
            proc_read((pid_t)pid, "cmdline", title, sizeof(title)) != 0 ||
            strstr(title, "worker process") == NULL) {
            continue;
        }
        w[n].pid = (pid_t)pid;
        w[n].start = start;
        n++;
    }
    closedir(d);
    return n;
}

/* the first of w[0..n-1] that still accepts connections, or 0: neither
 * gone nor "shutting down" */
static pid_t still_accepting(const proc_t *w, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned long long start;
        char title[256];
        pid_t ppid;

        if (proc_stat(w[i].pid, &ppid, &start) != 0 || start != w[i].start ||
            proc_read(w[i].pid, "cmdline", title, sizeof(title)) != 0) {
            continue; /* gone */
        }
        if (strstr(title, "shutting down") == NULL) {
            return w[i].pid;
        }
    }
    return 0;
}

/* the address of an http:// URL: host and port, or nginx's
 * "http://unix:/path/to.sock:/uri"; the URI in *uri */
static int http_connect(const char *url, int64_t deadline, const char **uri,
                        char *host, size_t hostlen, char *err, size_t errlen)
{
    const char *p, *end;
    struct timeval tv;
    int64_t left = deadline - gd_soc_now_ms();
    int fd = -1;

    if (strncmp(url, "http://", 7) != 0) {
        snprintf(err, errlen, "%s: not an http:// URL", url);
        return -1;
    }
    p = url + 7;

    if (left < 1000) { /* the last look, after the deadline, has its second */
        left = 1000;
    }
    tv.tv_sec = (time_t)(left / 1000);
    tv.tv_usec = (suseconds_t)(left % 1000) * 1000;

    if (strncmp(p, "unix:", 5) == 0) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};

        p += 5;
        end = strchr(p, ':');
        *uri = end ? end + 1 : "/";
        if (end == NULL) {
            end = p + strlen(p);
        }
        if ((size_t)(end - p) >= sizeof(sa.sun_path) || end == p) {
            snprintf(err, errlen, "%s: a bad socket path", url);
            return -1;
        }
        memcpy(sa.sun_path, p, (size_t)(end - p));
        snprintf(host, hostlen, "localhost");

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0) {
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        }
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
            snprintf(err, errlen, "cannot reach %s: %s", url, strerror(errno));
            if (fd >= 0) {
                close(fd);
            }
            return -1;
        }
        return fd;
    }

    /* host, [v6] or name, then :port, then the URI */
    char name[256], port[16] = "80";
    const char *h = p, *hend;

    if (*p == '[') {
        h = p + 1;
        hend = strchr(h, ']');
        if (hend == NULL) {
            snprintf(err, errlen, "%s: a bad host", url);
            return -1;
        }
        p = hend + 1;
    } else {
        hend = p + strcspn(p, ":/");
        p = hend;
    }
    if ((size_t)(hend - h) >= sizeof(name) || hend == h) {
        snprintf(err, errlen, "%s: a bad host", url);
        return -1;
    }
    memcpy(name, h, (size_t)(hend - h));
    name[hend - h] = '\0';
    snprintf(host, hostlen, "%.*s", (int)(p - (url + 7)), url + 7);

    if (*p == ':') {
        size_t n = strcspn(p + 1, "/");
        if (n == 0 || n >= sizeof(port)) {
            snprintf(err, errlen, "%s: a bad port", url);
            return -1;
        }
        memcpy(port, p + 1, n);
        port[n] = '\0';
        p += 1 + n;
    }
    *uri = *p ? p : "/";

    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai, *a;
    int rc = getaddrinfo(name, port, &hints, &ai);

    if (rc != 0) {
        snprintf(err, errlen, "%s: %s", url, gai_strerror(rc));
        return -1;
    }
    errno = ECONNREFUSED;
    for (a = ai; a; a = a->ai_next) {
        fd =
            socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
            break;
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);

    if (fd < 0) {
        snprintf(err, errlen, "cannot reach %s: %s", url, strerror(errno));
    }
    return fd;
}

/* nginx's policy version: GET url, a guard_status page (JSON) */
static void nginx_version(const char *url, int64_t deadline, reported_t *r)
{
    char host[300], req[2048], *buf = NULL, *body;
    const char *uri = "/";
    size_t len = 0;
    json_t *doc = NULL, *v;
    json_error_t jerr;
    int fd, n;

    r->ok = 0;
    fd = http_connect(url, deadline, &uri, host, sizeof(host), r->text,
                      sizeof(r->text));
    if (fd < 0) {
        return;
    }

    n = snprintf(req, sizeof(req),
                 "GET %s HTTP/1.0\r\nHost: %s\r\nAccept: application/json\r\n"
                 "User-Agent: guardctl\r\n\r\n",
                 uri, host);
    if (n < 0 || (size_t)n >= sizeof(req) ||
        send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        snprintf(r->text, sizeof(r->text), "cannot send to %s: %s", url,
                 strerror(errno));
        goto done;
    }

    buf = malloc(RELOAD_HTTP_MAX + 1);
    if (buf == NULL) {
        snprintf(r->text, sizeof(r->text), "out of memory");
        goto done;
    }
    for (;;) {
        ssize_t got = recv(fd, buf + len, RELOAD_HTTP_MAX - len, 0);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got < 0) {
            snprintf(r->text, sizeof(r->text), "reading from %s: %s", url,
                     strerror(errno));
            goto done;
        }
        if (got == 0 || (len += (size_t)got) == RELOAD_HTTP_MAX) {
            break;
        }
    }
    buf[len] = '\0';

    if (strncmp(buf, "HTTP/1.", 7) != 0 || len < 12 ||
        strncmp(buf + 8, " 200", 4) != 0) {
        snprintf(r->text, sizeof(r->text), "%s answers \"%.*s\"", url,
                 (int)strcspn(buf, "\r\n") > 64 ? 64
                                                : (int)strcspn(buf, "\r\n"),
                 buf);
        goto done;
    }
    body = strstr(buf, "\r\n\r\n");
    doc = body ? json_loadb(body + 4, len - (size_t)(body + 4 - buf), 0, &jerr)
               : NULL;
    if (doc == NULL) {
        snprintf(r->text, sizeof(r->text),
                 "%s does not answer JSON (is it guard_status?)", url);
        goto done;
    }
    v = json_object_get(doc, "policy_version");
    if (!json_is_string(v) || json_string_length(v) == 0 ||
        json_string_length(v) > GD_POLICY_VERSION_LEN) {
        snprintf(r->text, sizeof(r->text),
                 "no policy version (no guard_policies in nginx.conf?)");
        goto done;
    }
    snprintf(r->text, sizeof(r->text), "%s", json_string_value(v));
    r->ok = 1;

done:
    json_decref(doc);
    free(buf);
    close(fd);
}

/* guardd's policy version: its HELLO answer */
static void guardd_version(const char *path, reported_t *r)
{
    json_t *hello, *v;
    size_t max_frame;
    conn_t *c = guardd_open(path, &hello, &max_frame, r->text, sizeof(r->text));

    r->ok = 0;
    if (c == NULL) {
        return;
    }
    v = json_object_get(hello, "policy_version");
    if (json_is_string(v) && json_string_length(v) > 0 &&
        json_string_length(v) <= GD_POLICY_VERSION_LEN) {
        snprintf(r->text, sizeof(r->text), "%s", json_string_value(v));
        r->ok = 1;
    } else {
        snprintf(r->text, sizeof(r->text),
                 "no policy version (a guardd older than this guardctl?)");
    }
    json_decref(hello);
    conn_close(c);
}

int reload(int argc, char **argv)
{
    const char *dir = "/etc/guard/policies", *keys = NULL,
               *nginx_pid = "/run/nginx.pid",
               *guardd_pid = "/run/guard/guardd.pid", *sock = guardd_socket(),
               *status = "http://127.0.0.1/guard_status", *timeout = "10";
    const guardctl_opt_t opts[] = {
        OPT("--policies", dir),        OPT("--keys", keys),
        OPT("--nginx-pid", nginx_pid), OPT("--guardd-pid", guardd_pid),
        OPT("--socket", sock),         OPT("--status", status),
        OPT("--timeout", timeout),     {NULL}};
    char want[GD_POLICY_VERSION_LEN + 1], *end;
    gd_policy_set_t *set;
    static proc_t old[RELOAD_MAX_WORKERS];
    size_t nold;
    pid_t npid, gpid, busy = 0;
    reported_t n, g;
    double secs;
    int64_t deadline;
    int rc = opts_parse("reload", argc, argv, opts, NULL);

    if (rc != 0) {
        return rc;
    }
    secs = strtod(timeout, &end);
    if (*timeout == '\0' || *end != '\0' || !(secs > 0 && secs <= 3600)) {
        return usage_error(
            "reload: --timeout takes seconds (at most 3600), not "
            "\"%s\"",
            timeout);
    }

    /* 1. the directory, checked as nginx -t checks it */
    set = policy_load(dir, keys);
    if (set == NULL) {
        fprintf(stderr,
                "guardctl: reload: the policies in %s do not load: "
                "nothing was reloaded\n",
                dir);
        return 1;
    }
    snprintf(want, sizeof(want), "%s", set->version);
    gd_policy_set_free(set);

    /* 2. both pids, before either is signalled */
    if (read_pid(nginx_pid, "nginx", &npid) != 0 ||
        read_pid(guardd_pid, "guardd", &gpid) != 0) {
        fprintf(stderr, "guardctl: reload: nothing was reloaded\n");
        return 1;
    }

    /* the workers that serve the old policies until they stop accepting */
    nold = nginx_workers(npid, old, RELOAD_MAX_WORKERS);

    if (kill(npid, SIGHUP) != 0) {
        fprintf(stderr,
                "guardctl: reload: cannot signal nginx (pid %ld from %s): "
                "%s; nothing was reloaded\n",
                (long)npid, nginx_pid, strerror(errno));
        return 1;
    }
    if (kill(gpid, SIGHUP) != 0) {
        fprintf(stderr,
                "guardctl: reload: nginx was reloaded, but guardd cannot be "
                "signalled (pid %ld from %s): %s\n",
                (long)gpid, guardd_pid, strerror(errno));
        return 1;
    }

    /* 3. until both report the directory's version */
    deadline = gd_soc_now_ms() + (int64_t)(secs * 1000);
    for (;;) {
        busy = still_accepting(old, nold);
        nginx_version(status, deadline, &n);
        guardd_version(sock, &g);

        if (busy == 0 && n.ok && g.ok && strcmp(n.text, want) == 0 &&
            strcmp(g.text, want) == 0) {
            printf("reloaded: nginx and guardd at policy version %s\n", want);
            return 0;
        }
        if (gd_soc_now_ms() >= deadline) {
            break;
        }
        struct timespec ts = {0, RELOAD_POLL_MS * 1000000L};
        nanosleep(&ts, NULL);
    }

    if (busy != 0 && n.ok && strcmp(n.text, want) == 0) {
        fprintf(stderr,
                "guardctl: reload: after %s s, nginx's old worker %ld still "
                "accepts connections (with the old policies); guardd reports "
                "%s, the directory is %s\n",
                timeout, (long)busy, g.text, want);
        return 1;
    }
    fprintf(stderr,
            "guardctl: reload: after %s s, nginx reports %s, guardd reports "
            "%s, the directory is %s\n",
            timeout, n.text, g.text, want);
    return 1;
}
