/*
 * guardctl events tail: the records guardd's Redis sink publishes, as they
 * arrive (hiredis).  Alone it follows the stream with XREAD; with --group
 * it is a consumer of a consumer group (XREADGROUP, then XACK once the
 * line is written), which is the pattern of a SIEM shipper: docs/events.md.
 */
#include "guardctl.h"

#include "gd_soc.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#define EVENTS_BATCH 100

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

/* --redis: a path (a Unix socket), or HOST:PORT, or HOST */
static redisContext *events_connect(const char *addr)
{
    struct timeval tv = {5, 0};
    redisContext *c;

    if (addr[0] == '/' || addr[0] == '.') {
        c = redisConnectUnixWithTimeout(addr, tv);
    } else {
        char host[256];
        const char *colon = strrchr(addr, ':');
        int port = 6379;

        snprintf(host, sizeof(host), "%.*s",
                 colon ? (int)(colon - addr) : (int)strlen(addr), addr);
        if (colon) {
            port = atoi(colon + 1);
        }
        c = redisConnectWithTimeout(host, port, tv);
    }
    if (c == NULL || c->err) {
        fprintf(stderr,
                "guardctl: cannot connect to Redis at %s: %s (--redis "
                "PATH|HOST:PORT or GUARD_REDIS)\n",
                addr, c ? c->errstr : "out of memory");
        redisFree(c);
        return NULL;
    }
    return c;
}

/* a stream entry's field, or NULL */
static const char *entry_field(const redisReply *fields, const char *name)
{
    for (size_t i = 0; fields && i + 1 < fields->elements; i += 2) {
        if (fields->element[i]->type == REDIS_REPLY_STRING &&
            strcmp(fields->element[i]->str, name) == 0 &&
            fields->element[i + 1]->type == REDIS_REPLY_STRING) {
            return fields->element[i + 1]->str;
        }
    }
    return NULL;
}

/* a field for the line: "-" when absent, control characters as \xNN */
static void put_field(const char *s, const char *sep)
{
    if (s == NULL || *s == '\0') {
        s = "-";
    }
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f) {
            printf("\\x%02x", c);
        } else {
            putchar(c);
        }
    }
    fputs(sep, stdout);
}

/*
 * One line for an entry: TIME ENTRY KIND TENANT OUTCOME REASON ID, or the
 * record's JSON (--json).  1 when printed, 0 when --tenant left it out.
 */
static int print_entry(const redisReply *entry, const char *tenant, int json)
{
    const redisReply *fields = entry->elements > 1 ? entry->element[1] : NULL;
    const char *t = entry_field(fields, "tenant");
    const char *ts = entry_field(fields, "ts_ms");
    char when[64] = "-";

    if (fields == NULL || fields->type != REDIS_REPLY_ARRAY) {
        return 0; /* deleted meanwhile (XDEL, MAXLEN) */
    }
    if (tenant && (t == NULL || strcmp(t, tenant) != 0)) {
        return 0;
    }
    if (json) {
        const char *rec = entry_field(fields, "record");
        put_field(rec ? rec : "null", "\n");
        return 1;
    }
    if (ts && *ts) {
        gd_soc_format_time(strtoll(ts, NULL, 10), 1, when, sizeof(when));
    }
    put_field(when, "  ");
    put_field(entry->element[0]->str, "  ");
    put_field(entry_field(fields, "kind"), "  ");
    put_field(t, "  ");
    put_field(entry_field(fields, "outcome"), "  ");
    put_field(entry_field(fields, "reason"), "  ");
    put_field(entry_field(fields, "id"), "\n");
    return 1;
}

typedef struct {
    redisContext *c;
    const char *stream, *group, *consumer, *tenant;
    int json;
    unsigned long long count, printed;
    char last[64]; /* XREAD: the last entry id read */
} tail_t;

/*
 * The entries of an XREAD/XREADGROUP reply: printed, acknowledged (group);
 * the number of entries, or -1 on an error (printed).
 */
static long tail_entries(tail_t *t, redisReply *r)
{
    const redisReply *entries;
    long n = 0;

    if (r == NULL) {
        fprintf(stderr, "guardctl: Redis: %s\n", t->c->errstr);
        return -1;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "guardctl: Redis: %s\n", r->str);
        return -1;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
        return 0; /* nil: the block timed out */
    }
    entries = r->element[0]->elements > 1 ? r->element[0]->element[1] : NULL;

    for (size_t i = 0; entries && i < entries->elements; i++) {
        const redisReply *e = entries->element[i];

        if (t->count && t->printed >= t->count) {
            break; /* not acknowledged: the next consumer gets it */
        }
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 1) {
            continue;
        }
        n++;
        t->printed += (unsigned long long)print_entry(e, t->tenant, t->json);
        fflush(stdout);
        if (t->group) {
            redisReply *a = redisCommand(t->c, "XACK %s %s %s", t->stream,
                                         t->group, e->element[0]->str);
            if (a == NULL || a->type == REDIS_REPLY_ERROR) {
                fprintf(stderr, "guardctl: Redis: XACK: %s\n",
                        a ? a->str : t->c->errstr);
                freeReplyObject(a);
                return -1;
            }
            freeReplyObject(a);
        } else {
            snprintf(t->last, sizeof(t->last), "%s", e->element[0]->str);
        }
    }
    return n;
}

/* the group, created at from (MKSTREAM) unless it is there */
static int group_create(tail_t *t, const char *from)
{
    redisReply *r = redisCommand(t->c, "XGROUP CREATE %s %s %s MKSTREAM",
                                 t->stream, t->group, from);
    int rc = 0;

    if (r == NULL) {
        fprintf(stderr, "guardctl: Redis: %s\n", t->c->errstr);
        return -1;
    }
    if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYGROUP", 9) != 0) {
        fprintf(stderr, "guardctl: Redis: XGROUP CREATE: %s\n", r->str);
        rc = -1;
    }
    freeReplyObject(r);
    return rc;
}

int events_command(int argc, char **argv)
{
    const char *addr = getenv("GUARD_REDIS"), *stream = NULL, *from = NULL,
               *count = NULL, *timeout = NULL;
    char key[512], host[256];
    tail_t t = {0};
    long idle_ms = 0, limit_ms = -1;
    int rc = 0, pending;
    const guardctl_opt_t opts[] = {
        OPT("--redis", addr),          OPT("--stream", stream),
        OPT("--tenant", t.tenant),     OPT("--group", t.group),
        OPT("--consumer", t.consumer), OPT("--from", from),
        OPT("--count", count),         OPT("--timeout", timeout),
        OPT_FLAG("--json", t.json),    {NULL}};

    if (argc < 1 || strcmp(argv[0], "tail") != 0) {
        return usage_error("events: %s", "tail?");
    }
    rc = opts_parse("events tail", argc - 1, argv + 1, opts, NULL);
    if (rc != 0) {
        return rc;
    }
    if (addr == NULL || *addr == '\0') {
        addr = "127.0.0.1:6379";
    }
    if (stream == NULL) {
        stream = getenv("GUARD_STREAM");
    }
    if (stream == NULL || *stream == '\0') {
        stream = "guard:records";
    }
    if (count) {
        char *end;
        errno = 0;
        t.count = strtoull(count, &end, 10);
        if (errno || *end || *count < '0' || *count > '9') {
            return usage_error("--count: \"%s\" is not a number", count);
        }
    }
    if (timeout) {
        int64_t ms;
        if (gd_soc_parse_duration(timeout, &ms) != 0) {
            return usage_error("--timeout: \"%s\" is not a duration (10s, 5m)",
                               timeout);
        }
        limit_ms = (long)ms;
    }

    /* one stream per tenant: "guard:records:{tenant}" names it */
    if (strstr(stream, "{tenant}")) {
        const char *at = strstr(stream, "{tenant}");
        if (t.tenant == NULL) {
            return usage_error("events tail: the stream \"%s\" is per tenant: "
                               "--tenant T names which",
                               stream);
        }
        snprintf(key, sizeof(key), "%.*s%s%s", (int)(at - stream), stream,
                 t.tenant, at + 8);
        t.stream = key;
        t.tenant = NULL; /* every entry of that stream is the tenant's */
    } else {
        t.stream = stream;
    }

    if (t.group && t.consumer == NULL) {
        /* the same name after a restart: its pending entries come back */
        if (gethostname(host, sizeof(host)) != 0) {
            snprintf(host, sizeof(host), "guardctl");
        }
        host[sizeof(host) - 1] = '\0';
        t.consumer = host;
    }

    t.c = events_connect(addr);
    if (t.c == NULL) {
        return 2;
    }

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);

    if (t.group) {
        /* a new group reads the stream from its start, unless --from */
        if (group_create(&t, from ? from : "0") != 0) {
            rc = 2;
            goto out;
        }
    } else if (from && strcmp(from, "$") != 0) {
        snprintf(t.last, sizeof(t.last), "%s", from);
    } else {
        /* "$" once: the stream's last entry now, so that nothing that
         * arrives between two reads is missed */
        redisReply *r = redisCommand(t.c, "XREVRANGE %s + - COUNT 1", t.stream);
        snprintf(t.last, sizeof(t.last), "%s",
                 r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
                         r->element[0]->elements > 0
                     ? r->element[0]->element[0]->str
                     : "0-0");
        freeReplyObject(r);
    }

    /* with a group: this consumer's pending entries first (delivered
     * before, never acknowledged: a crash between the two), then new ones */
    pending = t.group != NULL;
    while (!stopping && !(t.count && t.printed >= t.count)) {
        long block = 1000, n;
        int batch = EVENTS_BATCH;
        redisReply *r;

        if (limit_ms >= 0 && limit_ms - idle_ms < block) {
            block = limit_ms - idle_ms > 0 ? limit_ms - idle_ms : 1;
        }
        /* never more than --count still wants: a group hands out what it
         * delivers, and an entry delivered but not printed would wait for
         * this consumer */
        if (t.count && t.count - t.printed < (unsigned long long)batch) {
            batch = (int)(t.count - t.printed);
        }
        if (t.group) {
            r = pending
                    ? redisCommand(t.c,
                                   "XREADGROUP GROUP %s %s COUNT %d "
                                   "STREAMS %s 0",
                                   t.group, t.consumer, batch, t.stream)
                    : redisCommand(t.c,
                                   "XREADGROUP GROUP %s %s COUNT %d "
                                   "BLOCK %ld STREAMS %s >",
                                   t.group, t.consumer, batch, block, t.stream);
        } else {
            r = redisCommand(t.c, "XREAD COUNT %d BLOCK %ld STREAMS %s %s",
                             batch, block, t.stream, t.last);
        }
        n = tail_entries(&t, r);
        freeReplyObject(r);
        if (n < 0) {
            rc = 2;
            break;
        }
        if (pending) {
            if (n == 0) {
                pending = 0;
            }
            continue;
        }
        if (n == 0) {
            idle_ms += block;
            if (limit_ms >= 0 && idle_ms >= limit_ms) {
                break; /* --timeout: nothing arrived for that long */
            }
        } else {
            idle_ms = 0;
        }
    }

out:
    redisFree(t.c);
    return rc;
}
