/*
 * guardd: the Redis Streams sink (hiredis), see guardd_sink.c.
 *
 * A batch is one transaction (MULTI ... EXEC, pipelined) of XADD
 * commands, one per record:
 *
 *   XADD <stream> [MAXLEN ~ <maxlen>] <segment>-<line> id <id> kind <kind>
 *        outcome <outcome> tenant <tenant> reason <reason> ts_ms <ts_ms>
 *        hash <hash> record <the journal line>
 *
 * The entry id is the record's place in the journal (journal-000007.jsonl
 * line 42: 7-42), strictly increasing; publishing a record again (after
 * a crash, a reconnect) is refused by Redis as equal or smaller than the
 * stream's last entry, and counted as a duplicate.  "stream" may hold
 * "{tenant}": one stream per tenant ("_none" for a record without one),
 * and "{node}" (guardd.conf's node): a stream holds one journal's records.
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

/* pattern with each "{tenant}" and "{node}" replaced */
static char *stream_key(const char *pattern, const char *tenant)
{
    char *key = strdup(pattern);

    if (tenant == NULL || tenant[0] == '\0') {
        tenant = "_none";
    }
    for (int i = 0; i < 2 && key; i++) {
        const char *name = i ? "{node}" : "{tenant}";
        const char *value = i ? conf.node : tenant;
        char *at = strstr(key, name), *next;

        while (key && at) {
            size_t pre = (size_t)(at - key);
            if (asprintf(&next, "%.*s%s%s", (int)pre, key, value,
                         at + strlen(name)) < 0) {
                next = NULL;
            }
            free(key);
            key = next;
            at = key ? strstr(key + pre + strlen(value), name) : NULL;
        }
    }
    return key;
}

/* a member as field text, without a copy: strings as they are, integers
 * written into buf, else dflt */
static const char *field(json_t *rec, const char *name, const char *dflt,
                         char buf[32], size_t *len)
{
    json_t *v = json_object_get(rec, name);

    if (json_is_string(v)) {
        *len = json_string_length(v);
        return json_string_value(v);
    }
    if (json_is_integer(v)) {
        int n =
            snprintf(buf, 32, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        *len = n > 0 ? (size_t)n : 0;
        return buf;
    }
    *len = strlen(dflt);
    return dflt;
}

/* appends the XADD of r (its reply awaited): 0, or -1 out of memory */
static int append_xadd(gd_sink_t *s, redisContext *c, gd_srec_t *r,
                       const char *maxlen)
{
    static const char *const names[REDIS_FIELDS - 1] = {
        "id", "kind", "outcome", "tenant", "reason", "ts_ms", "hash"};
    static const size_t namel[REDIS_FIELDS - 1] = {2, 4, 7, 6, 6, 5, 4};
    const char *argv[6 + 2 * REDIS_FIELDS];
    size_t argl[6 + 2 * REDIS_FIELDS];
    char nums[REDIS_FIELDS - 1][32];
    char entry[48];
    char *key = NULL;
    int argc = 0, ok;
    json_t *rec = sink_record(r); /* parsed, whatever the sink's mode */

    /* a stream key without "{...}" is the same for every record */
    if (strchr(s->stream, '{') != NULL) {
        key = stream_key(s->stream,
                         json_string_value(json_object_get(rec, "tenant")));
        ok = key != NULL;
    } else {
        ok = 1;
    }
    snprintf(entry, sizeof(entry), "%u-%" PRIu64, r->seg, r->lineno);

    argv[argc] = "XADD";
    argl[argc++] = 4;
    argv[argc] = key ? key : s->stream;
    argl[argc++] = strlen(argv[1]);
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
        argv[argc] = names[k];
        argl[argc++] = namel[k];
        /* a record without a kind is a decision (docs/events.md) */
        argv[argc] = field(rec, names[k], k == 1 ? "decision" : "", nums[k],
                           &argl[argc]);
        argc++;
    }
    argv[argc] = "record";
    argl[argc++] = 6;
    argv[argc] = r->line;
    argl[argc++] = r->len;

    ok = ok && redisAppendCommandArgv(c, argc, argv, argl) == REDIS_OK;
    free(key);
    return ok ? 0 : -1;
}

/*
 * The batch is one MULTI ... EXEC: Redis applies all of its XADDs or
 * none.  (A plain pipeline could be cut in the middle, by a LOADING
 * error for its first commands after a restart for example, with later
 * entries added: the earlier ones, sent again, would then be refused as
 * below the stream's last id, and lost.)  redis_send writes it all to
 * Redis, redis_finish reads the answers: in between guardd_sink.c reads
 * the next batch while Redis works on this one.
 */
static int redis_send(gd_sink_t *s, gd_srec_t *r, size_t n, char *err,
                      size_t errlen)
{
    redisContext *c = s->conn;
    char maxlen[32];
    size_t queued = 0, replies;
    redisReply *reply = NULL;
    int done = 0;

    snprintf(maxlen, sizeof(maxlen), "%lld", s->maxlen);

    /* MULTI alone first: were it refused (LOADING), the XADDs behind it
     * would run one by one */
    reply = redisCommand(c, "MULTI");
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "redis: MULTI: %s",
                 reply ? reply->str : c->errstr);
        freeReplyObject(reply);
        return -1;
    }
    freeReplyObject(reply);
    for (size_t i = 0; i < n; i++) {
        if (!r[i].rejected) {
            if (append_xadd(s, c, &r[i], maxlen) != 0) {
                redisAppendCommand(c, "DISCARD");
                snprintf(err, errlen, "out of memory");
                /* the XADDs queued, DISCARD: read, then down */
                replies = queued + 1;
                while (replies-- > 0 &&
                       redisGetReply(c, (void **)&reply) == REDIS_OK) {
                    freeReplyObject(reply);
                }
                return -1;
            }
            queued++;
        }
    }
    if (redisAppendCommand(c, "EXEC") != REDIS_OK) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* all of it to Redis now (hiredis would write it when the first
     * answer is read) */
    while (!done) {
        if (redisBufferWrite(c, &done) != REDIS_OK) {
            snprintf(err, errlen, "redis: %s", c->errstr);
            return -1;
        }
    }
    return 0;
}

static int redis_finish(gd_sink_t *s, gd_srec_t *r, size_t n, uint64_t *added,
                        uint64_t *dups, char *err, size_t errlen)
{
    redisContext *c = s->conn;
    size_t queued = 0, replies;
    redisReply *reply = NULL, *exec = NULL;
    int rc = 0, refused = 0, down = 0;

    for (size_t i = 0; i < n; i++) {
        queued += !r[i].rejected;
    }

    /* a +QUEUED per XADD (or an error: the transaction is aborted),
     * then EXEC's answer */
    for (replies = 0; replies < queued; replies++) {
        if (redisGetReply(c, (void **)&reply) != REDIS_OK || reply == NULL) {
            snprintf(err, errlen, "redis: %s", c->err ? c->errstr : "no reply");
            return -1;
        }
        if (reply->type == REDIS_REPLY_ERROR && !down && !refused) {
            snprintf(err, errlen, "redis: %s", reply->str);
            if (transient(reply->str)) {
                down = 1;
            } else {
                refused = 1; /* a command Redis will not queue */
            }
        }
        freeReplyObject(reply);
    }
    if (redisGetReply(c, (void **)&exec) != REDIS_OK || exec == NULL) {
        snprintf(err, errlen, "redis: %s", c->err ? c->errstr : "no reply");
        return -1;
    }
    if (down || refused) {
        freeReplyObject(exec);
        return down ? -1 : 1;
    }
    if (exec->type != REDIS_REPLY_ARRAY || exec->elements != queued) {
        snprintf(err, errlen, "redis: EXEC: %s",
                 exec->type == REDIS_REPLY_ERROR ? exec->str
                                                 : "an unexpected answer");
        freeReplyObject(exec);
        return -1;
    }

    for (size_t i = 0, k = 0; i < n; i++) {
        redisReply *e;

        if (r[i].rejected) {
            continue;
        }
        e = exec->element[k++];
        if (e->type != REDIS_REPLY_ERROR) {
            (*added)++;
        } else if (strstr(e->str, "equal or smaller") != NULL) {
            (*dups)++;
        } else if (transient(e->str)) {
            /* applied around it: not possible for an XADD, but never
             * skip a record for a passing condition */
            snprintf(err, errlen, "redis: %s", e->str);
            rc = -1;
        } else {
            r[i].rejected = 1;
            snprintf(r[i].error, sizeof(r[i].error), "redis: %s", e->str);
        }
    }
    freeReplyObject(exec);
    return rc;
}

static int redis_publish(gd_sink_t *s, gd_srec_t *r, size_t n, uint64_t *added,
                         uint64_t *dups, char *err, size_t errlen)
{
    if (redis_send(s, r, n, err, errlen) != 0) {
        return -1;
    }
    return redis_finish(s, r, n, added, dups, err, errlen);
}

const gd_sink_ops_t gd_sink_redis = {
    "redis", redis_connect, redis_disconnect, redis_publish,
    0,       redis_send,    redis_finish,     NULL};
