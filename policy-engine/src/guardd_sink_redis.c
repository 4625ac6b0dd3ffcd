/*
 * guardd: the Redis Streams sink (hiredis), see guardd_sink.c.
 *
 * A batch is one pipeline of XADD commands, one per record:
 *
 *   XADD <stream> [MAXLEN ~ <maxlen>] <segment>-<line> id <id> kind <kind>
 *        outcome <outcome> tenant <tenant> reason <reason> ts_ms <ts_ms>
 *        hash <hash> record <the journal line>
 *
 * The entry id is the record's place in the journal (journal-000007.jsonl
 * line 42: 7-42), strictly increasing; publishing a record again (after
 * a crash, a reconnect) is refused by Redis as equal or smaller than the
 * stream's last entry, and counted as a duplicate.  "stream" may hold
 * "{tenant}": one stream per tenant ("_none" for a record without one).
 */
#define _GNU_SOURCE

#include "guardd.h"

#include <hiredis/hiredis.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REDIS_CONNECT_TIMEOUT_S 2
#define REDIS_COMMAND_TIMEOUT_S 10
#define REDIS_FIELDS 8

static int redis_connect(gd_sink_t *s, char *err, size_t errlen)
{
    struct timeval tv = {REDIS_CONNECT_TIMEOUT_S, 0};
    struct timeval cmd = {REDIS_COMMAND_TIMEOUT_S, 0};
    redisContext *c = s->socket ? redisConnectUnixWithTimeout(s->socket, tv)
                                : redisConnectWithTimeout(s->host, s->port, tv);

    if (c == NULL || c->err) {
        snprintf(err, errlen, "redis %s: %s", s->socket ? s->socket : s->host,
                 c ? c->errstr : "out of memory");
        redisFree(c);
        return -1;
    }
    if (redisSetTimeout(c, cmd) != REDIS_OK) {
        snprintf(err, errlen, "redis: %s", c->errstr);
        redisFree(c);
        return -1;
    }
    s->conn = c;
    return 0;
}

static void redis_disconnect(gd_sink_t *s)
{
    redisFree(s->conn);
    s->conn = NULL;
}

/* an error that says the server cannot take writes for now */
static int transient(const char *e)
{
    static const char *const codes[] = {
        "LOADING",    "OOM",      "MISCONF",     "READONLY",
        "BUSY",       "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS",
        "MASTERDOWN", "MOVED",    "ASK",         NULL};

    for (const char *const *c = codes; *c; c++) {
        size_t n = strlen(*c);
        if (strncmp(e, *c, n) == 0 && (e[n] == ' ' || e[n] == '\0')) {
            return 1;
        }
    }
    return 0;
}

/* "<s>" with "{tenant}" replaced */
static char *stream_key(const char *pattern, const char *tenant)
{
    const char *at = strstr(pattern, "{tenant}");
    char *key;

    if (at == NULL) {
        return strdup(pattern);
    }
    if (tenant == NULL || tenant[0] == '\0') {
        tenant = "_none";
    }
    if (asprintf(&key, "%.*s%s%s", (int)(at - pattern), pattern, tenant,
                 at + strlen("{tenant}")) < 0) {
        return NULL;
    }
    return key;
}

/* a member as field text: strings as they are, numbers written, else "" */
static char *field(json_t *rec, const char *name, const char *dflt)
{
    json_t *v = json_object_get(rec, name);
    char *out;

    if (json_is_string(v)) {
        return strndup(json_string_value(v), json_string_length(v));
    }
    if (json_is_integer(v)) {
        return asprintf(&out, "%" JSON_INTEGER_FORMAT, json_integer_value(v)) <
                       0
                   ? NULL
                   : out;
    }
    return strdup(dflt);
}

static int redis_publish(gd_sink_t *s, gd_srec_t *r, size_t n, uint64_t *added,
                         uint64_t *dups, char *err, size_t errlen)
{
    redisContext *c = s->conn;
    static const char *const names[REDIS_FIELDS - 1] = {
        "id", "kind", "outcome", "tenant", "reason", "ts_ms", "hash"};
    char maxlen[32];
    size_t sent = 0;
    int rc = 0;

    snprintf(maxlen, sizeof(maxlen), "%lld", s->maxlen);

    for (size_t i = 0; i < n; i++) {
        const char *argv[6 + 2 * REDIS_FIELDS];
        size_t argl[6 + 2 * REDIS_FIELDS];
        char *vals[REDIS_FIELDS - 1] = {0};
        char entry[48];
        char *key;
        int argc = 0, ok = 1;

        if (r[i].rejected) {
            continue;
        }
        key = stream_key(
            s->stream, json_string_value(json_object_get(r[i].rec, "tenant")));
        snprintf(entry, sizeof(entry), "%u-%" PRIu64, r[i].seg, r[i].lineno);

        argv[argc] = "XADD";
        argl[argc++] = 4;
        argv[argc] = key ? key : "";
        argl[argc++] = key ? strlen(key) : 0;
        if (s->maxlen > 0) {
            argv[argc] = "MAXLEN";
            argl[argc++] = 6;
            argv[argc] = "~";
            argl[argc++] = 1;
            argv[argc] = maxlen;
            argl[argc++] = strlen(maxlen);
        }
        argv[argc] = entry;
        argl[argc++] = strlen(entry);
        for (int k = 0; k < REDIS_FIELDS - 1; k++) {
            vals[k] = field(r[i].rec, names[k], k == 1 ? "decision" : "");
            ok &= vals[k] != NULL;
            argv[argc] = names[k];
            argl[argc++] = strlen(names[k]);
            argv[argc] = vals[k] ? vals[k] : "";
            argl[argc++] = vals[k] ? strlen(vals[k]) : 0;
        }
        argv[argc] = "record";
        argl[argc++] = 6;
        argv[argc] = r[i].line;
        argl[argc++] = r[i].len;

        if (ok && key &&
            redisAppendCommandArgv(c, argc, argv, argl) == REDIS_OK) {
            r[i].error[0] = '\0';
            sent++;
        } else {
            /* nothing appended for it: its reply is not awaited */
            r[i].error[0] = '\1';
        }
        free(key);
        for (int k = 0; k < REDIS_FIELDS - 1; k++) {
            free(vals[k]);
        }
        if (r[i].error[0] == '\1') {
            snprintf(err, errlen, "out of memory");
            rc = -1;
            break;
        }
    }

    /* the replies, in order: every command sent is answered */
    for (size_t i = 0; i < n && sent > 0; i++) {
        redisReply *reply;

        if (r[i].rejected || r[i].error[0] == '\1') {
            continue;
        }
        sent--;
        if (redisGetReply(c, (void **)&reply) != REDIS_OK || reply == NULL) {
            snprintf(err, errlen, "redis: %s", c->err ? c->errstr : "no reply");
            return -1;
        }
        if (reply->type == REDIS_REPLY_ERROR) {
            if (strstr(reply->str, "equal or smaller") != NULL) {
                (*dups)++;
            } else if (transient(reply->str)) {
                snprintf(err, errlen, "redis: %s", reply->str);
                rc = -1;
            } else if (rc == 0) {
                r[i].rejected = 1;
                snprintf(r[i].error, sizeof(r[i].error), "redis: %s",
                         reply->str);
            }
        } else if (rc == 0) {
            (*added)++;
        }
        freeReplyObject(reply);
    }
    return rc;
}

const gd_sink_ops_t gd_sink_redis = {"redis", redis_connect, redis_disconnect,
                                     redis_publish};
