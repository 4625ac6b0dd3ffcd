/*
 * guardd: the Guard policy/scoring sidecar.
 *
 *   guardd -c guardd.conf [-t]
 *
 * One epoll loop thread serves the Unix socket: it decodes frames with
 * the shared codec (gd_proto), answers HELLO and PING at once, masks
 * AUDIT records (gd_audit) and hands them to the writer thread, which
 * appends them to the journal (gd_journal) and fsyncs in group commits;
 * an ACK goes out only after its record was fsynced.  No blocking call
 * runs on the loop thread.
 *
 * Exactly once: every record has a UUID "id" (guardd gives one to a
 * record that has none).  The writer, the journal's only user, appends a
 * record only when its id is not in the set of the last dedupe_window
 * ids (gd_idset), rebuilt from the journal at startup (after an fsync of
 * what a killed guardd left in the page cache).  Spill files (records
 * the nginx module could not send) are ingested by the writer too, one
 * per round, and removed only after their records were fsynced.  So a
 * record sent again after a reconnect, a crash or a restart, from the
 * socket or a spill file, is journaled once and acknowledged as a
 * duplicate.
 *
 * SIGHUP reloads the policies (the old set stays when the new one is
 * invalid); SIGTERM and SIGINT stop accepting, answer what is in flight,
 * flush the journal and exit.
 */
#define _GNU_SOURCE

#include "gd_audit.h"
#include "gd_idset.h"
#include "gd_journal.h"
#include "gd_policy.h"
#include "gd_proto.h"
#include "gd_risk.h"
#include "gd_uuid.h"

#include <dirent.h>
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
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define GD_MAX_EVENTS 64
#define GD_READ_CHUNK 16384
#define GD_OUT_HIGH_WATER (256 * 1024)

/* connection limits (guardd.conf) */
#define GD_FD_RESERVE 32 /* descriptors kept for the journal, spill, ... */
#define GD_MIN_CONNECTIONS 4
#define GD_MAX_OUTPUT_DEFAULT (1024 * 1024)
#define GD_IDLE_DEFAULT 60
#define GD_STUCK_DEFAULT 30
#define GD_ACCEPT_PAUSE_MS 100 /* out of descriptors: listener off */
#define GD_SWEEP_MS 1000       /* idle and stuck connections checked */
#define GD_LOG_EVERY_MS 10000  /* a repeated condition: one line each */

#define GD_DEDUPE_DEFAULT 262144
#define GD_DEDUPE_MIN 1024
#define GD_SPILL_ORPHAN_DEFAULT 60
#define GD_SPILL_MAX_FILE ((off_t)256 * 1024 * 1024)
#define GD_SPILL_INTERVAL_MS 1000
#define GD_SPILL_MAX_STUCK 4096

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
    size_t dedupe_window;
    char *spill; /* NULL: no spill ingestion */
    long spill_orphan_after;
    size_t max_connections;
    long idle_timeout;       /* s, before HELLO; 0: never */
    long hello_idle_timeout; /* s, after HELLO; 0: never */
    size_t max_output;       /* answers queued per connection */
    long stuck_timeout;      /* s over max_output before closing */
    long nofile;             /* RLIMIT_NOFILE (soft), -1: unlimited */
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
    int want_write;    /* EPOLLOUT is on */
    int paused;        /* EPOLLIN is off: answers over max_output */
    int backlog;       /* whole frames wait in `in`: decode before reading */
    int hello;         /* it said HELLO (the nginx module's pool does) */
    int64_t active_ms; /* last frame received or byte sent */
    int64_t paused_ms; /* when it was paused */
    gd_conn_t *next;
};

/* an AUDIT on its way to the journal, and back as an ACK */

typedef struct gd_job_s gd_job_t;

struct gd_job_s {
    uint64_t conn;
    uint32_t id;
    json_t *record;
    uint8_t rid[GD_AUDIT_ID_LEN]; /* the record's "id" */
    int ok;
    int duplicate; /* ok, and journaled before: not appended again */
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
    uint64_t commits, records, duplicates;
    /* the writer thread's own, read by main only after joining it */
    gd_idset_t *seen; /* the ids of the last dedupe_window records */
    int broken;       /* an fsync failed: nothing is appended any more */
    uint64_t spill_files, spill_records;
    int spill_dir_failed;
    char **spill_stuck; /* ingested files that could not be removed */
    size_t spill_nstuck;
} gd_writer_t;

static gd_conf_t conf;
static gd_writer_t writer;
static gd_policy_set_t *policies;
static gd_risk_state_t *risk_state;
static gd_uuid_gen_t uuid_gen;
static gd_conn_t *conns;
static size_t nconns;
static uint64_t next_serial = 1;
static int epfd;
static int verbose = 1;

/* the loop's clock (CLOCK_MONOTONIC, ms), read after each wait */
static int64_t now_ms;
static int backlog_ready; /* a resumed connection has frames to decode */
static int sweep_needed;  /* a connection may time out */
static int64_t sweep_due_ms;
static int accept_paused; /* out of descriptors: listener out of epoll */
static int64_t accept_resume_ms;

/* a condition logged at most once per GD_LOG_EVERY_MS */
typedef struct {
    int64_t last_ms;
    int logged;
    uint64_t count; /* since the last line */
} gd_every_t;

static gd_every_t every_emfile, every_refused;

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

    /* one line at a time: the loop and the writer thread both log */
    flockfile(stderr);
    fprintf(stderr, "%s guardd[%d] %s: ", ts, (int)getpid(), level);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    funlockfile(stderr);
}

/* configuration */

static char *conf_string(json_t *doc, const char *key, const char *dflt)
{
    json_t *v = json_object_get(doc, key);
    return strdup(json_is_string(v) ? json_string_value(v) : dflt);
}

/* an integer setting from min to max, or dflt when absent */
static int conf_integer(json_t *doc, const char *key, long long dflt,
                        long long min, long long max, const char *what,
                        const char *path, long long *out)
{
    json_t *v = json_object_get(doc, key);

    *out = dflt;
    if (v == NULL) {
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < min ||
        json_integer_value(v) > max) {
        logmsg("emerg", "%s: %s must be %s from %lld to %lld", path, key, what,
               min, max);
        return -1;
    }
    *out = json_integer_value(v);
    return 0;
}

/* connection limits: max_connections (sized from RLIMIT_NOFILE by
 * default), idle and stuck timeouts, the output cap */
static int conf_limits(json_t *doc, const char *path)
{
    struct rlimit rl;
    long long room, v;

    conf.nofile = getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
                          rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < 1048576
                      ? (long)rl.rlim_cur
                      : -1;
    room = conf.nofile < 0 ? 65536 : conf.nofile - GD_FD_RESERVE;
    if (room < GD_MIN_CONNECTIONS) {
        room = GD_MIN_CONNECTIONS;
    }

    if (conf_integer(doc, "max_connections", room, 1, 1048576, "an integer",
                     path, &v) != 0) {
        return -1;
    }
    conf.max_connections = (size_t)v;

    if (conf_integer(doc, "idle_timeout", GD_IDLE_DEFAULT, 0, 86400 * 365,
                     "a number of seconds", path, &v) != 0) {
        return -1;
    }
    conf.idle_timeout = (long)v;

    if (conf_integer(doc, "hello_idle_timeout", 0, 0, 86400 * 365,
                     "a number of seconds", path, &v) != 0) {
        return -1;
    }
    conf.hello_idle_timeout = (long)v;

    if (conf_integer(doc, "max_output", GD_MAX_OUTPUT_DEFAULT, 4096,
                     1024LL * 1024 * 1024, "a number of bytes", path,
                     &v) != 0) {
        return -1;
    }
    conf.max_output = (size_t)v;

    if (conf_integer(doc, "stuck_timeout", GD_STUCK_DEFAULT, 1, 86400,
                     "a number of seconds", path, &v) != 0) {
        return -1;
    }
    conf.stuck_timeout = (long)v;

    return 0;
}

static int conf_load(const char *path)
{
    static const char *known[] = {"listen",
                                  "socket_mode",
                                  "socket_group",
                                  "user",
                                  "pid_file",
                                  "policies",
                                  "journal",
                                  "max_frame",
                                  "node",
                                  "log",
                                  "dedupe_window",
                                  "spill",
                                  "spill_orphan_after",
                                  "max_connections",
                                  "idle_timeout",
                                  "hello_idle_timeout",
                                  "max_output",
                                  "stuck_timeout",
                                  NULL};
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

    v = json_object_get(doc, "dedupe_window");
    conf.dedupe_window = GD_DEDUPE_DEFAULT;
    if (v != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) < GD_DEDUPE_MIN ||
            (uint64_t)json_integer_value(v) > GD_IDSET_MAX_CAPACITY) {
            logmsg("emerg",
                   "%s: dedupe_window must be an integer from %d to %zu", path,
                   GD_DEDUPE_MIN, (size_t)GD_IDSET_MAX_CAPACITY);
            json_decref(doc);
            return -1;
        }
        conf.dedupe_window = (size_t)json_integer_value(v);
    }

    v = json_object_get(doc, "spill");
    conf.spill = NULL;
    if (v != NULL) {
        if (!json_is_string(v) || json_string_value(v)[0] == '\0') {
            logmsg("emerg", "%s: spill must name a directory", path);
            json_decref(doc);
            return -1;
        }
        conf.spill = strdup(json_string_value(v));
    }

    v = json_object_get(doc, "spill_orphan_after");
    conf.spill_orphan_after = GD_SPILL_ORPHAN_DEFAULT;
    if (v != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
            json_integer_value(v) > 86400 * 365) {
            logmsg("emerg",
                   "%s: spill_orphan_after must be a number of seconds, at "
                   "least 1",
                   path);
            json_decref(doc);
            return -1;
        }
        conf.spill_orphan_after = (long)json_integer_value(v);
    }

    if (conf_limits(doc, path) != 0) {
        json_decref(doc);
        return -1;
    }

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

/* the record's id, parsed into rid; -1 when it has none or a bad one */
static int record_id(json_t *rec, uint8_t rid[GD_AUDIT_ID_LEN])
{
    json_t *v = json_object_get(rec, "id");

    if (!json_is_string(v) ||
        gd_audit_id_parse(json_string_value(v), json_string_length(v), rid) !=
            0) {
        return -1;
    }
    return 0;
}

/* the canonical (lowercase) text of rid as the record's "id" */
static int record_set_id(json_t *rec, const uint8_t rid[GD_AUDIT_ID_LEN])
{
    char text[GD_UUID_STRLEN + 1];

    gd_uuid_format(rid, text);
    text[GD_UUID_STRLEN] = '\0';
    return json_object_set_new(rec, "id", json_string(text));
}

/* an fsync failed: what was written may be lost, and the dedupe set may
 * hold ids that are not durable.  Nothing more is appended (a duplicate
 * could be acknowledged for a lost record); a restart rebuilds the set
 * from what the journal really holds. */
static void journal_broken(const char *what)
{
    if (!writer.broken) {
        logmsg("emerg",
               "journal: %s: %s; no more records are accepted until guardd "
               "is restarted",
               what, strerror(errno));
    }
    writer.broken = 1;
}

/*
 * Appends rec unless its id was journaled already (writer thread only):
 * 1 appended, 0 a duplicate, -1 failed (err set).
 */
static int journal_once(json_t *rec, const uint8_t rid[GD_AUDIT_ID_LEN],
                        char *err, size_t errlen)
{
    if (writer.broken) {
        snprintf(err, errlen,
                 "the journal failed to fsync; guardd must be restarted");
        return -1;
    }

    if (gd_idset_has(writer.seen, rid)) {
        return 0;
    }

    if (gd_journal_append(writer.journal, rec, err, errlen) != 0) {
        return -1;
    }

    gd_idset_add(writer.seen, rid);
    return 1;
}

/* spill files: "<ms>-<pid>-<seq>.part" while written, ".jsonl" sealed */

static int has_suffix(const char *name, const char *suffix)
{
    size_t n = strlen(name), k = strlen(suffix);
    return n > k && strcmp(name + n - k, suffix) == 0;
}

static void spill_stuck_add(const char *name);

/* renames the file to NAME.rejected: kept for the operator, never read
 * again (when even that fails, it is not read again in this run) */
static void spill_set_aside(const char *name, const char *why)
{
    char from[4096], to[4096];

    snprintf(from, sizeof(from), "%s/%s", conf.spill, name);
    snprintf(to, sizeof(to), "%s/%s.rejected", conf.spill, name);

    if (rename(from, to) != 0) {
        logmsg("error", "spill %s: %s, and it cannot be renamed: %s", name, why,
               strerror(errno));
        spill_stuck_add(name);
    } else {
        logmsg("warn", "spill %s: %s: kept as %s.rejected", name, why, name);
    }
}

static int spill_is_stuck(const char *name)
{
    for (size_t i = 0; i < writer.spill_nstuck; i++) {
        if (strcmp(writer.spill_stuck[i], name) == 0) {
            return 1;
        }
    }
    return 0;
}

/* an ingested file that cannot be removed is not read again in this run:
 * its ids could leave the dedupe window while it waits */
static void spill_stuck_add(const char *name)
{
    char **more;

    if (writer.spill_nstuck == GD_SPILL_MAX_STUCK) {
        return;
    }
    more =
        realloc(writer.spill_stuck, (writer.spill_nstuck + 1) * sizeof(char *));
    if (more == NULL) {
        return;
    }
    writer.spill_stuck = more;
    more[writer.spill_nstuck] = strdup(name);
    if (more[writer.spill_nstuck] != NULL) {
        writer.spill_nstuck++;
    }
}

static int stop_requested(void)
{
    int stop;

    pthread_mutex_lock(&writer.lock);
    stop = writer.stop;
    pthread_mutex_unlock(&writer.lock);
    return stop;
}

/*
 * Ingests one spill file: 0 when it is done with (removed or set aside),
 * -1 when it stays for a later round.
 */
static int spill_ingest(const char *name)
{
    char path[4096], err[256];
    uint64_t lineno = 0, added = 0, dups = 0, bad = 0;
    size_t cap = 0;
    char *line = NULL;
    ssize_t n;
    struct stat st;
    FILE *f;
    int fd, aborted = 0;

    snprintf(path, sizeof(path), "%s/%s", conf.spill, name);

    fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        char why[128];

        if (errno == ENOENT) {
            return 0; /* renamed (sealed) or taken away meanwhile */
        }
        snprintf(why, sizeof(why), "cannot open it: %s", strerror(errno));
        spill_set_aside(name, why);
        return 0;
    }

    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        spill_set_aside(name, "not a regular file");
        return 0;
    }

    if (st.st_size > GD_SPILL_MAX_FILE) {
        close(fd);
        spill_set_aside(name, "larger than 256 MiB, not read");
        return 0;
    }

    f = fdopen(fd, "r");
    if (f == NULL) {
        close(fd);
        logmsg("error", "spill %s: %s", name, strerror(errno));
        return -1;
    }

    while ((n = getline(&line, &cap, f)) > 0) {
        uint8_t rid[GD_AUDIT_ID_LEN];
        json_error_t jerr;
        json_t *rec;
        int rc;

        lineno++;

        /* never the line itself in the log: it may hold secrets */
        if (line[n - 1] != '\n') {
            logmsg("warn", "spill %s:%llu: no newline at the end", name,
                   (unsigned long long)lineno);
            bad++;
            continue;
        }

        rec = json_loadb(line, (size_t)n - 1, JSON_REJECT_DUPLICATES, &jerr);
        if (rec == NULL) {
            logmsg("warn", "spill %s:%llu: not JSON (at column %d)", name,
                   (unsigned long long)lineno, jerr.column);
            bad++;
            continue;
        }
        if (!json_is_object(rec) || record_id(rec, rid) != 0) {
            logmsg("warn", "spill %s:%llu: %s", name,
                   (unsigned long long)lineno,
                   !json_is_object(rec) ? "not a JSON object"
                   : json_object_get(rec, "id") == NULL
                       ? "no \"id\""
                       : "the \"id\" is not a canonical UUID");
            json_decref(rec);
            bad++;
            continue;
        }

        if (record_set_id(rec, rid) != 0 || gd_audit_mask(rec) < 0) {
            logmsg("error", "spill %s:%llu: out of memory", name,
                   (unsigned long long)lineno);
            json_decref(rec);
            aborted = 1;
            break;
        }

        rc = journal_once(rec, rid, err, sizeof(err));
        json_decref(rec);

        if (rc < 0) {
            logmsg("error", "spill %s:%llu: journal: %s", name,
                   (unsigned long long)lineno, err);
            aborted = 1;
            break;
        }
        if (rc == 0) {
            dups++;
        } else {
            added++;
        }

        if (lineno % 256 == 0 && stop_requested()) {
            logmsg("notice",
                   "spill %s: stopped at line %llu, the file stays for "
                   "the next start",
                   name, (unsigned long long)lineno);
            aborted = 1;
            break;
        }
    }

    if (!aborted && ferror(f)) {
        logmsg("error", "spill %s: read: %s", name, strerror(errno));
        aborted = 1;
    }

    free(line);
    fclose(f);

    /* what was appended is made durable before the file may go */
    if (added > 0 && !writer.broken && gd_journal_sync(writer.journal) != 0) {
        journal_broken("fsync");
    }
    if (added > 0 && writer.broken) {
        aborted = 1;
    }

    pthread_mutex_lock(&writer.lock);
    writer.records += added;
    writer.duplicates += dups;
    writer.spill_records += added;
    pthread_mutex_unlock(&writer.lock);

    if (aborted) {
        logmsg("error", "spill %s: left for a later round", name);
        return -1;
    }

    writer.spill_files++;
    logmsg("notice",
           "spill %s: %llu records ingested, %llu duplicates, %llu bad "
           "lines",
           name, (unsigned long long)added, (unsigned long long)dups,
           (unsigned long long)bad);

    if (bad > 0) {
        char why[64];
        snprintf(why, sizeof(why), "%llu bad lines", (unsigned long long)bad);
        spill_set_aside(name, why);
        return 0;
    }

    if (unlink(path) != 0 && errno != ENOENT) {
        logmsg("error",
               "spill %s: ingested, but it cannot be removed: %s (guardd "
               "needs write access to %s); it is not read again until "
               "guardd restarts",
               name, strerror(errno), conf.spill);
        spill_stuck_add(name);
    }

    return 0;
}

/*
 * One round: lists the spill directory and ingests the first file by
 * name, sealed or orphaned (a .part nobody wrote to for
 * spill_orphan_after seconds).  1 when more files wait.
 */
static int spill_round(void)
{
    char best[256] = "";
    size_t candidates = 0;
    struct dirent *e;
    time_t now = time(NULL);
    DIR *d;

    if (writer.broken) {
        return 0;
    }

    d = opendir(conf.spill);
    if (d == NULL) {
        if (!writer.spill_dir_failed) {
            logmsg("error", "spill: %s: %s", conf.spill, strerror(errno));
            writer.spill_dir_failed = 1;
        }
        return 0;
    }
    if (writer.spill_dir_failed) {
        logmsg("notice", "spill: %s can be read again", conf.spill);
        writer.spill_dir_failed = 0;
    }

    while ((e = readdir(d)) != NULL) {
        struct stat st;

        if (e->d_name[0] == '.' || strlen(e->d_name) >= sizeof(best) ||
            spill_is_stuck(e->d_name)) {
            continue;
        }
        if (has_suffix(e->d_name, ".part")) {
            if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
                now - st.st_mtime <= conf.spill_orphan_after) {
                continue;
            }
        } else if (!has_suffix(e->d_name, ".jsonl")) {
            continue;
        }

        candidates++;
        if (best[0] == '\0' || strcmp(e->d_name, best) < 0) {
            strcpy(best, e->d_name);
        }
    }

    closedir(d);

    if (candidates == 0) {
        return 0;
    }

    return spill_ingest(best) == 0 && candidates > 1;
}

static void deadline_in(struct timespec *ts, long ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

static int deadline_passed(const struct timespec *ts)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > ts->tv_sec ||
           (now.tv_sec == ts->tv_sec && now.tv_nsec >= ts->tv_nsec);
}

/* appends a group of jobs, then one fsync for all of them */
static void write_batch(gd_job_t *batch)
{
    uint64_t added = 0, dups = 0;
    int failed = 0;

    for (gd_job_t *job = batch; job; job = job->next) {
        int rc =
            journal_once(job->record, job->rid, job->error, sizeof(job->error));

        job->ok = rc >= 0;
        job->duplicate = rc == 0;
        added += rc == 1;
        dups += rc == 0;
        failed |= rc < 0;
    }

    /* a duplicate is acknowledged once its first copy is durable: that
     * copy was synced by an earlier group, or is synced with this one */
    if (added > 0 && gd_journal_sync(writer.journal) != 0) {
        journal_broken("fsync");
        for (gd_job_t *job = batch; job; job = job->next) {
            if (job->ok) {
                job->ok = 0;
                snprintf(job->error, sizeof(job->error), "fsync: %s",
                         strerror(errno));
            }
        }
        added = dups = 0;
        failed = 1;
    }

    if (failed) {
        for (gd_job_t *job = batch; job; job = job->next) {
            if (!job->ok) {
                logmsg("error", "journal: %s", job->error);
                break;
            }
        }
    }

    pthread_mutex_lock(&writer.lock);
    writer.commits++;
    writer.records += added;
    writer.duplicates += dups;
    *writer.done_tail = batch;
    while (*writer.done_tail) {
        writer.done_tail = &(*writer.done_tail)->next;
    }
    pthread_mutex_unlock(&writer.lock);

    uint64_t one = 1;
    if (write(writer.eventfd, &one, sizeof(one)) < 0) {
        logmsg("error", "eventfd: %s", strerror(errno));
    }
}

static void *writer_main(void *arg)
{
    struct timespec spill_due;

    (void)arg;

    /* the first spill round at once */
    deadline_in(&spill_due, 0);

    pthread_mutex_lock(&writer.lock);

    for (;;) {
        int spill_now = conf.spill != NULL && deadline_passed(&spill_due);

        while (writer.todo == NULL && !writer.stop && !spill_now) {
            if (conf.spill == NULL) {
                pthread_cond_wait(&writer.cond, &writer.lock);
            } else {
                pthread_cond_timedwait(&writer.cond, &writer.lock, &spill_due);
                spill_now = deadline_passed(&spill_due);
            }
        }

        if (writer.todo == NULL && writer.stop) {
            break;
        }

        if (writer.todo != NULL) {
            /* take everything queued: one fsync for the whole group */
            gd_job_t *batch = writer.todo;
            writer.todo = NULL;
            writer.todo_tail = &writer.todo;
            pthread_mutex_unlock(&writer.lock);
            write_batch(batch);
            pthread_mutex_lock(&writer.lock);
        }

        /* one spill file per round, between groups: never starved by a
         * steady flow of AUDITs, nor holding them up for more than a file */
        if (spill_now && !writer.stop) {
            pthread_mutex_unlock(&writer.lock);
            int more = spill_round();
            deadline_in(&spill_due, more ? 0 : GD_SPILL_INTERVAL_MS);
            pthread_mutex_lock(&writer.lock);
        }
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
    nconns--;
}

/* what epoll reports: input unless paused, output while some waits */
static void conn_events(gd_conn_t *c, int want_write, int paused)
{
    struct epoll_event ev = {.events = (paused ? 0 : EPOLLIN) |
                                       (want_write ? EPOLLOUT : 0),
                             .data.ptr = c};

    if (c->want_write != want_write || c->paused != paused) {
        c->want_write = want_write;
        c->paused = paused;
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
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

/* 1 when a line about e is due: the first, then one per GD_LOG_EVERY_MS;
 * *more is how many times it happened unlogged since the last line */
static int every_due(gd_every_t *e, uint64_t *more)
{
    e->count++;
    if (e->logged && now_ms - e->last_ms < GD_LOG_EVERY_MS) {
        return 0;
    }
    *more = e->count - 1;
    e->count = 0;
    e->last_ms = now_ms;
    e->logged = 1;
    return 1;
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
        c->active_ms = now_ms;
        conn_resume(c);
    }

    conn_want_write(c, 0);
    return 0;
}

static int conn_send(gd_conn_t *c, gd_frame_type_t type, uint32_t id,
                     json_t *payload)
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

static int conn_error(gd_conn_t *c, uint32_t id, const char *code,
                      const char *message)
{
    json_t *p = json_pack("{s:s, s:s}", "code", code, "message", message);
    int rc = conn_send(c, GD_FRAME_ERROR, id, p);
    json_decref(p);
    return rc;
}

/* hands a masked record with the id rid to the writer; conn 0: nobody
 * waits for an ACK */
static int journal_enqueue(uint64_t conn, uint32_t id, json_t *record,
                           const uint8_t rid[GD_AUDIT_ID_LEN])
{
    gd_job_t *job = calloc(1, sizeof(gd_job_t));

    if (job == NULL) {
        return -1;
    }

    job->conn = conn;
    job->id = id;
    job->record = json_incref(record);
    memcpy(job->rid, rid, GD_AUDIT_ID_LEN);

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
    json_t *in = f->payload, *v, *signals, *thresholds, *out;
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

    /* the caller will not enforce the verdict (guard_risk shadow) */
    if (json_is_true(json_object_get(in, "shadow"))) {
        res.shadow = 1;
    }

    if (req.subject) {
        gd_risk_observe_request(risk_state, req.tenant, req.subject,
                                req.client_ip, req.now);
        if (res.decision != GD_RISK_ALLOW && !res.shadow) {
            gd_risk_observe_refusal(risk_state, req.tenant, req.subject,
                                    req.now);
        }
    }

    /*
     * built member by member: json_pack() parses its format every time,
     * and these strings are known to be UTF-8 (the policy loader checked
     * the signal ids; the rest is ASCII made here)
     */
    signals = json_array();
    thresholds = json_object();
    out = json_object();
    if (signals == NULL || thresholds == NULL || out == NULL) {
        json_decref(signals);
        json_decref(thresholds);
        json_decref(out);
        return conn_error(c, f->id, "unavailable", "out of memory");
    }
    for (size_t i = 0; i < res.nmatches; i++) {
        json_t *m = json_object();
        if (m == NULL || json_array_append_new(signals, m) != 0) {
            break;
        }
        json_object_set_new_nocheck(m, "id",
                                    json_string_nocheck(res.matches[i].id));
        json_object_set_new_nocheck(m, "weight",
                                    json_integer(res.matches[i].weight));
        json_object_set_new_nocheck(m, "shadow",
                                    json_boolean(res.matches[i].shadow));
    }
    json_object_set_new_nocheck(thresholds, "step_up",
                                json_integer(res.step_up));
    json_object_set_new_nocheck(thresholds, "deny", json_integer(res.deny));

    json_object_set_new_nocheck(
        out, "decision",
        json_string_nocheck(gd_risk_decision_name(res.decision)));
    json_object_set_new_nocheck(out, "score", json_integer(res.score));
    json_object_set_new_nocheck(out, "signals", signals);
    json_object_set_new_nocheck(out, "thresholds", thresholds);
    json_object_set_new_nocheck(out, "policy_version",
                                json_string_nocheck(policies->version));
    json_object_set_new_nocheck(out, "decision_id",
                                json_string_nocheck(idtext));
    json_object_set_new_nocheck(out, "shadow", json_boolean(res.shadow));
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
        if (rec == NULL || gd_audit_mask(rec) < 0 ||
            journal_enqueue(0, 0, rec, id) != 0) {
            logmsg("error", "decision %s could not be journaled", idtext);
        }
        json_decref(rec);
    }

    json_decref(out);
    return rc;
}

/* AUDIT: a record with a UUID "id" (given one when it has none), masked,
 * then journaled once by the writer, which answers with an ACK */
static int handle_audit(gd_conn_t *c, gd_frame_t *f)
{
    json_t *rec = f->payload;
    uint8_t rid[GD_AUDIT_ID_LEN];

    if (!json_is_object(rec)) {
        return conn_error(c, f->id, "bad_request",
                          "AUDIT needs a record (a JSON object)");
    }

    if (json_object_get(rec, "id") != NULL) {
        if (record_id(rec, rid) != 0) {
            return conn_error(c, f->id, "bad_request",
                              "the record's \"id\" must be a UUID "
                              "(8-4-4-4-12 hex digits)");
        }
    } else {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        if (gd_uuid7_next(&uuid_gen,
                          (uint64_t)ts.tv_sec * 1000 +
                              (uint64_t)ts.tv_nsec / 1000000,
                          rid) != 0) {
            return conn_error(c, f->id, "unavailable", "no randomness");
        }
    }

    if (record_set_id(rec, rid) != 0 || gd_audit_mask(rec) < 0 ||
        journal_enqueue(c->serial, f->id, rec, rid) != 0) {
        return conn_error(c, f->id, "unavailable", "out of memory");
    }

    return 0;
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
        rc = handle_audit(c, f);
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

/* a well-framed frame whose payload the codec refused (why: its kind) */
static int handle_bad_payload(gd_conn_t *c, gd_frame_t *f, const char *why)
{
    logmsg("warn", "connection %llu: %s %u refused: %s",
           (unsigned long long)c->serial, gd_proto_type_name(f->type), f->id,
           why);
    return conn_error(c, f->id, "bad_payload",
                      "the payload is not a JSON object guardd accepts "
                      "(UTF-8, no NUL, no duplicate member names)");
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
                               : recv(c->fd, c->in + c->in_len,
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

/* new connections: over max_connections accepted and closed at once;
 * out of descriptors, the listener leaves epoll for a moment */
static void accept_conns(int lfd)
{
    uint64_t more;

    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

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
            epoll_ctl(epfd, EPOLL_CTL_DEL, lfd, NULL);
            accept_paused = 1;
            accept_resume_ms = now_ms + GD_ACCEPT_PAUSE_MS;
            return;
        }

        if (nconns >= conf.max_connections) {
            close(fd);
            if (every_due(&every_refused, &more)) {
                logmsg("warn",
                       "refusing connections: max_connections (%zu) are "
                       "open (%llu more refused since the last line)",
                       conf.max_connections, (unsigned long long)more);
            }
            continue;
        }

        gd_conn_t *c = calloc(1, sizeof(gd_conn_t));
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};

        if (c == NULL) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->serial = next_serial++;
        c->max_frame = conf.max_frame;
        c->active_ms = now_ms;
        c->next = conns;
        conns = c;
        nconns++;
        sweep_needed |= conf.idle_timeout > 0;
        ev.data.ptr = c;
        epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    }
}

/* closes connections idle or stuck past their timeouts */
static void sweep(void)
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
static void run_backlogs(void)
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
            /* {"id", "hash"}, or {"id", "duplicate": true} */
            json_t *p = json_object();
            int rc;

            /* member by member (json_pack parses its format each time) */
            if (p) {
                json_object_set_nocheck(p, "id",
                                        json_object_get(done->record, "id"));
            }
            if (p && done->ok) {
                json_object_set_nocheck(
                    p, done->duplicate ? "duplicate" : "hash",
                    done->duplicate ? json_true()
                                    : json_object_get(done->record, "hash"));
            }
            rc = p == NULL
                     ? conn_error(c, done->id, "unavailable", "out of memory")
                 : done->ok
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

    for (gd_conn_t *c = conns; c; c = c->next) {
        if (c->out_len > 0 && conn_flush(c) != 0) {
            shutdown(c->fd, SHUT_RDWR);
        }
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

/* one id of the journal into the dedupe set */
static void seed_id(const char *text, size_t len, void *arg)
{
    uint8_t rid[GD_AUDIT_ID_LEN];

    if (gd_audit_id_parse(text, len, rid) == 0) {
        gd_idset_add(arg, rid);
    }
}

static int64_t monotonic_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* how long the loop may wait: until the listener comes back, or the next
 * sweep of connections that may time out; -1: no limit */
static int loop_timeout(void)
{
    int64_t t = -1;

    if (accept_paused) {
        t = accept_resume_ms - now_ms;
    }
    if (sweep_needed && (t < 0 || sweep_due_ms - now_ms < t)) {
        t = sweep_due_ms - now_ms;
    }
    return t < 0 ? (accept_paused || sweep_needed ? 0 : -1) : (int)t;
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

    if (gd_audit_init() != 0) {
        logmsg("emerg", "the masking patterns cannot be compiled");
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
    {
        const char *seg;
        uint64_t line;
        size_t torn = gd_journal_torn(writer.journal, &seg, &line);

        /* never its content: it may hold anything */
        if (torn > 0) {
            logmsg("warn",
                   "journal: dropped a torn last line (%s line %llu, %zu "
                   "bytes): a write cut off by a crash, never acknowledged",
                   seg, (unsigned long long)line, torn);
        }
    }

    /* what a killed guardd wrote but did not fsync is in the page cache:
     * durable from here, before its ids count as journaled */
    if (gd_journal_sync(writer.journal) != 0) {
        logmsg("emerg", "journal: fsync: %s", strerror(errno));
        return 1;
    }

    writer.seen = gd_idset_new(conf.dedupe_window);
    if (writer.seen == NULL) {
        logmsg("emerg", "out of memory for a dedupe window of %zu",
               conf.dedupe_window);
        return 1;
    }
    long seeded = gd_journal_recent_ids(conf.journal_dir, conf.dedupe_window,
                                        seed_id, writer.seen, err, sizeof(err));
    if (seeded < 0) {
        logmsg("emerg", "journal: %s", err);
        return 1;
    }
    logmsg("info",
           "dedupe: the last %zu ids of the journal remembered (window %zu)",
           gd_idset_count(writer.seen), conf.dedupe_window);

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
    {
        /* the writer's spill rounds wait on the monotonic clock */
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&writer.cond, &ca);
        pthread_condattr_destroy(&ca);
    }
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
    logmsg("info",
           "max_connections %zu (RLIMIT_NOFILE %ld), idle_timeout %ld s, "
           "hello_idle_timeout %ld s, max_output %zu, stuck_timeout %ld s",
           conf.max_connections, conf.nofile, conf.idle_timeout,
           conf.hello_idle_timeout, conf.max_output, conf.stuck_timeout);
    if (conf.nofile >= 0 &&
        conf.max_connections + GD_FD_RESERVE > (size_t)conf.nofile) {
        logmsg("warn",
               "max_connections %zu leaves fewer than %d of the %ld file "
               "descriptors (RLIMIT_NOFILE) to the journal, the spill files "
               "and the policies; when they run out, guardd stops accepting "
               "for a moment at a time",
               conf.max_connections, GD_FD_RESERVE, conf.nofile);
    }

    now_ms = monotonic_ms();
    sweep_due_ms = now_ms + GD_SWEEP_MS;

    while (running) {
        int n = epoll_wait(epfd, events, GD_MAX_EVENTS, loop_timeout());

        now_ms = monotonic_ms();

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
                accept_conns(lfd);

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

                /* paused, its input is not read: a hang-up would be
                 * reported again and again */
                if (c->paused && (events[i].events & (EPOLLHUP | EPOLLERR))) {
                    conn_close(c, NULL);
                    continue;
                }
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

        run_backlogs();

        if (accept_paused && now_ms >= accept_resume_ms) {
            accept_paused = 0;
            ev.events = EPOLLIN;
            ev.data.ptr = &lfd;
            epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);
        }

        if (now_ms >= sweep_due_ms) {
            if (sweep_needed) {
                sweep();
            }
            sweep_due_ms = now_ms + GD_SWEEP_MS;
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
    logmsg("notice",
           "stopped: %llu records in %llu group commits, %llu duplicates, "
           "%llu records from %llu spill files",
           (unsigned long long)writer.records,
           (unsigned long long)writer.commits,
           (unsigned long long)writer.duplicates,
           (unsigned long long)writer.spill_records,
           (unsigned long long)writer.spill_files);
    gd_idset_free(writer.seen);
    for (size_t i = 0; i < writer.spill_nstuck; i++) {
        free(writer.spill_stuck[i]);
    }
    free(writer.spill_stuck);
    unlink(conf.pid_file);
    gd_policy_set_free(policies);
    gd_risk_state_free(risk_state);
    return 0;
}
