/* guardd: its configuration (guardd.conf, JSON) and the policies */
#define _GNU_SOURCE

#include "guardd.h"

#include "gd_suggest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

gd_conf_t conf;
gd_policy_set_t *policies;

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

int conf_load(const char *path)
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
                                  "metrics",
                                  "sinks",
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
            const char *near = gd_suggest(key, known);
            logmsg("emerg", "%s: unknown setting \"%s\"%s%s%s", path, key,
                   near ? "; did you mean \"" : "", near ? near : "",
                   near ? "\"?" : "");
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

    v = json_object_get(doc, "metrics");
    conf.metrics = NULL;
    if (v != NULL) {
        if (!json_is_string(v) ||
            metrics_check(json_string_value(v), path) != 0) {
            if (!json_is_string(v)) {
                logmsg("emerg",
                       "%s: metrics must be a string: a Unix socket path, "
                       "127.0.0.1:PORT or [::1]:PORT",
                       path);
            }
            json_decref(doc);
            return -1;
        }
        conf.metrics = strdup(json_string_value(v));
    }

    if (sinks_conf(json_object_get(doc, "sinks"), path) != 0) {
        json_decref(doc);
        return -1;
    }

    if (conf_limits(doc, path) != 0) {
        json_decref(doc);
        return -1;
    }

    json_decref(doc);
    return 0;
}

gd_policy_set_t *policies_load(void)
{
    gd_errors_t errs = {0};
    gd_policy_set_t *set = gd_policy_set_load(conf.policies, &errs);

    for (size_t i = 0; i < errs.n; i++) {
        logmsg("error", "%s", errs.lines[i]);
    }
    gd_errors_free(&errs);

    /* the risk time zones' offsets, once here rather than per decision */
    if (set && gd_risk_zones_load(set, (int64_t)time(NULL)) != 0) {
        logmsg("error", "out of memory for the policies' time zones");
        gd_policy_set_free(set);
        return NULL;
    }

    return set;
}
