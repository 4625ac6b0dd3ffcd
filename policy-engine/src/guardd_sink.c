/*
 * guardd: the sinks, an outbox that loses nothing.
 *
 * Each sink configured in guardd.conf's "sinks" (Redis Streams,
 * guardd_sink_redis.c; PostgreSQL, guardd_sink_pg.c) is a thread of its
 * own that reads the journal behind the writer, never past what the
 * writer has fsynced (sink_durable), and publishes it in batches.  Its
 * durable cursor (segment, line, byte offset, and the hash of the last
 * record it consumed) is written to STATE_DIR/sink-NAME.cursor and
 * fsynced only after the sink confirmed the batch: a record is published
 * at least once, and made exactly once by the sink (Redis refuses an
 * entry id that is not above the stream's last one, PostgreSQL ignores a
 * record id it holds), both counted as duplicates.
 *
 * A sink that is down (connection refused, lost, a transient error) is
 * reconnected with an exponential backoff (GD_SINK_BACKOFF_MIN_MS to
 * GD_SINK_BACKOFF_MAX_MS); meanwhile its cursor waits, the lag grows,
 * and guardd goes on deciding and journaling: the loop never waits for a
 * sink.  After recovery the backlog drains in journal order.
 *
 * A record a sink rejects (PostgreSQL refuses its values, Redis answers
 * an error for it) is written to DEAD_LETTER/sink-NAME.dead.jsonl with
 * the error, counted, and skipped: the records behind it go on.  When a
 * whole batch is refused (PostgreSQL's one transaction), the batch is
 * split in halves until the refused records are alone.
 *
 * With no sink configured nothing here runs, and guardd behaves as it
 * did without sinks (no lifecycle or policy records either).
 */
#define _GNU_SOURCE

#include "guardd.h"

#include "gd_version.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

gd_sink_t *sinks[GD_SINK_N];
size_t nsinks;
char *sink_state_dir, *sink_dead_letter_dir;

/* what the writer has made durable: the sinks read up to there */
static pthread_mutex_t pos_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pos_cond;  /* news from the writer, or the end */
static pthread_cond_t stop_cond; /* the end only: a sink's pause */
static unsigned pos_seg;
static size_t pos_size;
static _Atomic uint64_t pos_records; /* made durable since the start */
static int sinks_stopping;
static struct timespec stop_deadline;
static uint64_t unsynced; /* the writer's: appended since the last sync */

/* tests only (t/86): GUARDD_SINK_CURSOR_DELAY_MS holds each cursor write
 * back after the sink confirmed its batch, so that a SIGKILL lands
 * between the two */
static long cursor_delay_ms;

static int64_t wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* a failure of the sink is logged at once, then once per
 * GD_LOG_EVERY_MS while it lasts (the loop's every_due is the loop's) */
static int log_due(gd_sink_t *s)
{
    struct timespec ts;
    int64_t now;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (s->log_last_ms != 0 && now - s->log_last_ms < GD_LOG_EVERY_MS) {
        return 0;
    }
    s->log_last_ms = now;
    return 1;
}

/* the configuration: guardd.conf's "sinks" */

static int conf_str(json_t *o, const char *key, char **out, const char *where,
                    const char *path)
{
    json_t *v = json_object_get(o, key);

    *out = NULL;
    if (v == NULL) {
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) == 0) {
        logmsg("emerg", "%s: %s.%s must be a non-empty string", path, where,
               key);
        return -1;
    }
    *out = strdup(json_string_value(v));
    return *out ? 0 : -1;
}

static int conf_int(json_t *o, const char *key, long long dflt, long long min,
                    long long max, const char *where, const char *path,
                    long long *out)
{
    json_t *v = json_object_get(o, key);

    *out = dflt;
    if (v == NULL) {
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < min ||
        json_integer_value(v) > max) {
        logmsg("emerg", "%s: %s.%s must be an integer from %lld to %lld", path,
               where, key, min, max);
        return -1;
    }
    *out = json_integer_value(v);
    return 0;
}

/* the members of o must all be in known */
static int conf_known(json_t *o, const char *const *known, const char *where,
                      const char *path)
{
    const char *key;
    json_t *v;

    if (!json_is_object(o)) {
        logmsg("emerg", "%s: %s must be an object", path, where);
        return -1;
    }
    json_object_foreach(o, key, v)
    {
        const char *const *k;
        for (k = known; *k && strcmp(*k, key) != 0; k++) {
        }
        if (*k == NULL) {
            logmsg("emerg", "%s: unknown setting \"%s\" in %s", path, key,
                   where);
            return -1;
        }
    }
    return 0;
}

static gd_sink_t *sink_new(const gd_sink_ops_t *ops)
{
    gd_sink_t *s = calloc(1, sizeof(gd_sink_t));

    if (s != NULL) {
        s->ops = ops;
        sinks[nsinks++] = s;
    }
    return s;
}

/* what both sinks have: "batch" and "linger_ms" */
static int conf_batching(json_t *o, const char *where, const char *path,
                         gd_sink_t *s)
{
    long long n;

    if (conf_int(o, "batch", GD_SINK_BATCH_DEFAULT, 1, GD_SINK_BATCH_MAX, where,
                 path, &n) != 0 ||
        conf_int(o, "linger_ms", GD_SINK_LINGER_MS, 0, GD_SINK_LINGER_MAX_MS,
                 where, path, &s->linger_ms) != 0) {
        return -1;
    }
    s->batch = (size_t)n;
    return 0;
}

int sinks_conf(json_t *v, const char *path)
{
    static const char *const known[] = {"redis", "postgres", "state_dir",
                                        "dead_letter", NULL};
    static const char *const rknown[] = {"socket",    "host",   "port",
                                         "stream",    "maxlen", "batch",
                                         "linger_ms", NULL};
    static const char *const pknown[] = {"dsn", "batch", "linger_ms", NULL};
    json_t *r, *p;
    long long n;
    gd_sink_t *s;

    if (v == NULL) {
        return 0;
    }
    if (conf_known(v, known, "sinks", path) != 0 ||
        conf_str(v, "state_dir", &sink_state_dir, "sinks", path) != 0 ||
        conf_str(v, "dead_letter", &sink_dead_letter_dir, "sinks", path) != 0) {
        return -1;
    }

    r = json_object_get(v, "redis");
    if (r != NULL) {
        if (conf_known(r, rknown, "sinks.redis", path) != 0 ||
            (s = sink_new(&gd_sink_redis)) == NULL ||
            conf_str(r, "socket", &s->socket, "sinks.redis", path) != 0 ||
            conf_str(r, "host", &s->host, "sinks.redis", path) != 0 ||
            conf_str(r, "stream", &s->stream, "sinks.redis", path) != 0 ||
            conf_int(r, "port", 6379, 1, 65535, "sinks.redis", path, &n) != 0) {
            return -1;
        }
        s->port = (int)n;
        if ((s->socket == NULL) == (s->host == NULL)) {
            logmsg("emerg",
                   "%s: sinks.redis needs either \"socket\" or "
                   "\"host\" (and \"port\")",
                   path);
            return -1;
        }
        if (s->stream == NULL) {
            s->stream = strdup(GD_SINK_STREAM_DEFAULT);
        }
        if (conf_int(r, "maxlen", 0, 0, LLONG_MAX, "sinks.redis", path,
                     &s->maxlen) != 0 ||
            conf_batching(r, "sinks.redis", path, s) != 0) {
            return -1;
        }
    }

    p = json_object_get(v, "postgres");
    if (p != NULL) {
        if (conf_known(p, pknown, "sinks.postgres", path) != 0 ||
            (s = sink_new(&gd_sink_pg)) == NULL ||
            conf_str(p, "dsn", &s->dsn, "sinks.postgres", path) != 0 ||
            conf_batching(p, "sinks.postgres", path, s) != 0) {
            return -1;
        }
        if (s->dsn == NULL) {
            logmsg("emerg", "%s: sinks.postgres needs a \"dsn\"", path);
            return -1;
        }
    }
    return 0;
}

/* the journal, read behind the writer */

static void seg_path(unsigned seg, char *out, size_t len)
{
    snprintf(out, len, "%s/journal-%06u.jsonl", conf.journal_dir, seg);
}

/* the smallest segment number above after (0: the first), 0 if none */
static unsigned next_segment(unsigned after_seg)
{
    DIR *d = opendir(conf.journal_dir);
    struct dirent *e;
    unsigned best = 0, n;
    char tail[8];

    if (d == NULL) {
        return 0;
    }
    while ((e = readdir(d)) != NULL) {
        if (strlen(e->d_name) == 20 &&
            sscanf(e->d_name, "journal-%6u%7s", &n, tail) == 2 &&
            strcmp(tail, ".jsonl") == 0 && n > after_seg &&
            (best == 0 || n < best)) {
            best = n;
        }
    }
    closedir(d);
    return best;
}

/* the lines from (seg, off) up to the durable end (segment dseg, dsize) */
static uint64_t count_lines(unsigned seg, off_t off, unsigned dseg,
                            size_t dsize)
{
    uint64_t count = 0;
    char buf[65536];

    while (seg != 0 && seg <= dseg) {
        char path[PATH_MAX];
        int fd;

        seg_path(seg, path, sizeof(path));
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            off_t end = seg == dseg ? (off_t)dsize : (off_t)-1;
            ssize_t n;

            while ((end < 0 || off < end) &&
                   (n = pread(fd, buf,
                              end < 0 || end - off > (off_t)sizeof(buf)
                                  ? sizeof(buf)
                                  : (size_t)(end - off),
                              off)) > 0) {
                for (char *p = buf;
                     (p = memchr(p, '\n', (size_t)(buf + n - p))); p++) {
                    count++;
                }
                off += n;
            }
            close(fd);
        }
        seg = next_segment(seg);
        off = 0;
    }
    return count;
}

/* the cursor */

static int write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc;

    if (fd < 0) {
        return -1;
    }
    rc = fsync(fd);
    close(fd);
    return rc;
}

/* the cursor written to a new file, fsynced, renamed over the old one */
static int cursor_save(gd_sink_t *s)
{
    char tmp[PATH_MAX + 8], segname[32];
    json_t *o;
    char *text;
    int fd, rc = -1;

    snprintf(segname, sizeof(segname), "journal-%06u.jsonl", s->seg);
    o = json_pack("{s:s, s:I, s:I, s:s}", "segment", segname, "line",
                  (json_int_t)s->line, "offset", (json_int_t)s->off, "hash",
                  s->hash);
    text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (text == NULL) {
        errno = ENOMEM;
        return -1;
    }

    snprintf(tmp, sizeof(tmp), "%s.tmp", s->cursor_path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd >= 0) {
        if (write_all(fd, text, strlen(text)) == 0 &&
            write_all(fd, "\n", 1) == 0 && fsync(fd) == 0) {
            rc = 0;
        }
        if (close(fd) != 0) {
            rc = -1;
        }
    }
    free(text);
    if (rc == 0 &&
        (rename(tmp, s->cursor_path) != 0 || fsync_dir(sink_state_dir) != 0)) {
        rc = -1;
    }
    return rc;
}

/* the hash of the line that ends at off in seg; -1 if there is none */
static int hash_before(unsigned seg, off_t off, char hash[65])
{
    char path[PATH_MAX];
    off_t start = off > GD_SINK_MAX_LINE ? off - GD_SINK_MAX_LINE : 0;
    char *buf = malloc((size_t)(off - start) + 1);
    int fd, rc = -1;
    ssize_t n;

    seg_path(seg, path, sizeof(path));
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || buf == NULL) {
        goto done;
    }
    n = pread(fd, buf, (size_t)(off - start), start);
    if (n == off - start && n > 0 && buf[n - 1] == '\n') {
        char *line;
        json_t *rec, *h;

        buf[n - 1] = '\0';
        line = strrchr(buf, '\n');
        line = line ? line + 1 : buf;
        rec = json_loads(line, 0, NULL);
        h = json_object_get(rec, "hash");
        if (json_is_string(h) && json_string_length(h) == 64) {
            memcpy(hash, json_string_value(h), 65);
            rc = 0;
        }
        json_decref(rec);
    }
done:
    if (fd >= 0) {
        close(fd);
    }
    free(buf);
    return rc;
}

/* the cursor read back (or the journal's start) and checked */
static int cursor_load(gd_sink_t *s)
{
    json_error_t jerr;
    json_t *o = json_load_file(s->cursor_path, 0, &jerr);
    json_t *seg, *line, *off, *hash;
    unsigned n;
    char tail[8], h[65];
    struct stat st;

    if (o == NULL) {
        if (access(s->cursor_path, F_OK) == 0) {
            logmsg("emerg", "sink %s: %s: %s", s->ops->name, s->cursor_path,
                   jerr.text);
            return -1;
        }
        /* none yet: from the journal's first record */
        s->seg = next_segment(0);
        s->line = 0;
        s->off = 0;
        memset(s->hash, '0', 64);
        s->hash[64] = '\0';
        logmsg("info",
               "sink %s: no cursor yet, publishing the journal from "
               "its first record",
               s->ops->name);
        return 0;
    }

    seg = json_object_get(o, "segment");
    line = json_object_get(o, "line");
    off = json_object_get(o, "offset");
    hash = json_object_get(o, "hash");
    if (!json_is_string(seg) ||
        sscanf(json_string_value(seg), "journal-%6u%7s", &n, tail) != 2 ||
        strcmp(tail, ".jsonl") != 0 || !json_is_integer(line) ||
        json_integer_value(line) < 0 || !json_is_integer(off) ||
        json_integer_value(off) < 0 || !json_is_string(hash) ||
        json_string_length(hash) != 64) {
        logmsg("emerg", "sink %s: %s is not a cursor", s->ops->name,
               s->cursor_path);
        json_decref(o);
        return -1;
    }
    s->seg = n;
    s->line = (uint64_t)json_integer_value(line);
    s->off = (off_t)json_integer_value(off);
    memcpy(s->hash, json_string_value(hash), 65);
    json_decref(o);

    {
        char path[PATH_MAX];

        seg_path(s->seg, path, sizeof(path));
        if (stat(path, &st) != 0 || st.st_size < s->off ||
            (s->off > 0 && (hash_before(s->seg, s->off, h) != 0 ||
                            strcmp(h, s->hash) != 0))) {
            logmsg("emerg",
                   "sink %s: the cursor %s (journal-%06u.jsonl line %llu) "
                   "does not match the journal in %s; remove the cursor to "
                   "publish the journal again from its start (the sink "
                   "counts what it holds as duplicates)",
                   s->ops->name, s->cursor_path, s->seg,
                   (unsigned long long)s->line, conf.journal_dir);
            return -1;
        }
    }
    logmsg("info", "sink %s: from journal-%06u.jsonl line %llu", s->ops->name,
           s->seg, (unsigned long long)s->line);
    return 0;
}

/*
 * The arena of a sink thread: the records of a batch are parsed into it.
 * A parsed record is some 60 small allocations of jansson's (its members,
 * their keys and values, the hash table), each freed again one by one:
 * the profile of a drain showed more than half of the sink thread's time
 * in json_loadb and json_decref, most of it in malloc and free.  While a
 * sink thread parses (arena_on), jansson's allocations come from the
 * thread's chunks, and all of them are given back at once when the batch
 * is done (arena_reset, in batch_free).  Everything else, the other
 * threads, and jansson's allocations of a sink thread when it is not
 * parsing (json_pack, json_dumps, whose results are free()d) use malloc;
 * a free of jansson's for a pointer in one of the thread's chunks is a
 * no-op.  A parsed record never leaves its sink thread.
 */
typedef struct arena_chunk {
    struct arena_chunk *next;
    size_t size, used;
    max_align_t data[];
} arena_chunk_t;

#define ARENA_CHUNK_MIN (4 * 1024 * 1024)
#define ARENA_ALIGN sizeof(max_align_t)

/* a batch's: its records are parsed into it */
typedef struct {
    arena_chunk_t *head, *cur;
} arena_t;

/* two batches at most: the one in flight and the one read ahead */
static _Thread_local arena_t arenas[2];
static _Thread_local arena_t *arena_on; /* parsing into it, else NULL */

static void *arena_malloc(size_t size)
{
    arena_chunk_t *c;

    if (arena_on == NULL) {
        return malloc(size);
    }
    c = arena_on->cur;
    size = (size + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
    while (c != NULL && c->size - c->used < size) {
        c = c->next;
    }
    if (c == NULL) {
        /* a new chunk at the end, twice the last one (few chunks to
         * search in arena_free) */
        arena_chunk_t *last = arena_on->head;
        size_t want = ARENA_CHUNK_MIN;

        while (last != NULL && last->next != NULL) {
            last = last->next;
        }
        if (last != NULL) {
            want = last->size * 2;
        }
        if (want < size) {
            want = size;
        }
        c = malloc(sizeof(arena_chunk_t) + want);
        if (c == NULL) {
            return NULL;
        }
        c->next = NULL;
        c->size = want;
        c->used = 0;
        if (last != NULL) {
            last->next = c;
        } else {
            arena_on->head = c;
        }
    }
    arena_on->cur = c;
    c->used += size;
    return (char *)c->data + c->used - size;
}

static void arena_free(void *p)
{
    for (int i = 0; i < 2; i++) {
        for (arena_chunk_t *c = arenas[i].head; c != NULL; c = c->next) {
            if ((char *)p >= (char *)c->data &&
                (char *)p < (char *)c->data + c->size) {
                return;
            }
        }
    }
    free(p);
}

/* the parsed records of the batch are gone: the first chunk is free
 * again, and the others, which one batch of large records grew, are
 * given back (they would stay for the thread's life) */
static void arena_reset(arena_t *a)
{
    if (a->head != NULL) {
        arena_chunk_t *c = a->head->next;

        while (c != NULL) {
            arena_chunk_t *next = c->next;
            free(c);
            c = next;
        }
        a->head->next = NULL;
        a->head->used = 0;
    }
    a->cur = a->head;
}

static void arena_destroy(void)
{
    for (int i = 0; i < 2; i++) {
        while (arenas[i].head != NULL) {
            arena_chunk_t *c = arenas[i].head;
            arenas[i].head = c->next;
            free(c);
        }
        arenas[i].cur = NULL;
    }
}

/* reading a batch */

/* the record of the journal line r, parsed (in the arena) the first time
 * it is asked for; NULL when the line is not JSON */
json_t *sink_record(gd_srec_t *r)
{
    if (!r->parsed) {
        arena_on = r->arena;
        r->rec = json_loadb(r->line, r->len, 0, NULL);
        arena_on = NULL;
        r->parsed = 1;
    }
    return r->rec;
}

static void batch_free(gd_srec_t *r, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(r[i].line);
        /* r[i].rec: in the arena (no json_decref needed: nothing else
         * holds it) */
        r[i].rec = NULL;
        r[i].parsed = 0;
    }
    if (n > 0) {
        arena_reset(r[0].arena);
    }
}

/*
 * Reads up to max records after the reader's position (s->rseg, s->roff),
 * never past the durable end, parsed (unless the sink is raw) into the
 * arena a; returns how many.
 */
static size_t read_batch(gd_sink_t *s, gd_srec_t *r, size_t max, arena_t *a)
{
    unsigned dseg;
    size_t dsize, n = 0;
    char *line = NULL;
    size_t cap = 0;

    pthread_mutex_lock(&pos_lock);
    dseg = pos_seg;
    dsize = pos_size;
    pthread_mutex_unlock(&pos_lock);

    if (s->rseg == 0) {
        s->rseg = next_segment(0);
    }
    while (n < max && s->rseg != 0 && s->rseg <= dseg) {
        off_t end = s->rseg == dseg ? (off_t)dsize : (off_t)-1;
        ssize_t len;

        if (end >= 0 && s->roff >= end) {
            break;
        }
        if (s->f == NULL || s->fseg != s->rseg) {
            char path[PATH_MAX];

            if (s->f) {
                fclose(s->f);
            }
            seg_path(s->rseg, path, sizeof(path));
            s->f = fopen(path, "re");
            s->fseg = s->rseg;
            if (s->f == NULL || fseeko(s->f, s->roff, SEEK_SET) != 0) {
                if (log_due(s)) {
                    logmsg("error", "sink %s: %s: %s", s->ops->name, path,
                           strerror(errno));
                }
                if (s->f) {
                    fclose(s->f);
                    s->f = NULL;
                }
                break;
            }
        }

        len = getline(&line, &cap, s->f);
        if (len <= 0 || line[len - 1] != '\n') {
            /* the end of a full segment: on to the next one */
            clearerr(s->f);
            if (len > 0 || s->rseg == dseg) {
                /* a line without its end, before the durable end: wait */
                fseeko(s->f, s->roff, SEEK_SET);
                break;
            }
            unsigned next = next_segment(s->rseg);
            if (next == 0 || next > dseg) {
                break;
            }
            s->rseg = next;
            s->rline = 0;
            s->roff = 0;
            continue;
        }

        memset(&r[n], 0, sizeof(r[n]));
        r[n].line = malloc((size_t)len);
        if (r[n].line == NULL) {
            /* out of memory: read again from roff next time */
            fclose(s->f);
            s->f = NULL;
            break;
        }
        memcpy(r[n].line, line, (size_t)len - 1);
        r[n].line[len - 1] = '\0';
        r[n].len = (size_t)len - 1;
        r[n].seg = s->rseg;
        r[n].lineno = ++s->rline;
        s->roff += len;
        r[n].end = s->roff;
        r[n].arena = a;
        if (memchr(r[n].line, '\0', r[n].len) != NULL) {
            /* a damaged segment: no sink may read it as text */
            r[n].rejected = 1;
            snprintf(r[n].error, sizeof(r[n].error),
                     "the journal line holds a NUL byte");
        } else if (!s->ops->raw && !json_is_object(sink_record(&r[n]))) {
            r[n].rejected = 1;
            snprintf(r[n].error, sizeof(r[n].error),
                     "the journal line is not a JSON object");
        }
        n++;
    }
    free(line);
    return n;
}

/* the dead-letter file: one JSON object per line */
static int dead_letter(gd_sink_t *s, gd_srec_t *r)
{
    char segname[32];
    json_t *o;
    char *text;
    int fd, rc = -1;

    snprintf(segname, sizeof(segname), "journal-%06u.jsonl", r->seg);
    o = json_pack("{s:I, s:s, s:s, s:I, s:s, s:O?}", "ts_ms",
                  (json_int_t)wall_ms(), "sink", s->ops->name, "segment",
                  segname, "line", (json_int_t)r->lineno, "error", r->error,
                  "record", sink_record(r));
    if (o != NULL && r->rec == NULL) {
        json_object_set_new(o, "record", json_stringn(r->line, r->len));
    }
    text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (text == NULL) {
        return -1;
    }
    fd = open(s->dead_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd >= 0) {
        size_t len = strlen(text);
        text[len] = '\n';
        rc = write_all(fd, text, len + 1) == 0 && fsync(fd) == 0 ? 0 : -1;
        close(fd);
    }
    free(text);
    if (rc == 0) {
        metric_add(&s->dead_letters, 1);
        logmsg("error",
               "sink %s: journal-%06u.jsonl line %llu rejected: %s; written "
               "to %s",
               s->ops->name, r->seg, (unsigned long long)r->lineno, r->error,
               s->dead_path);
    }
    return rc;
}

/* the records up to r[n-1] are done: the cursor moves and is fsynced */
static int consumed(gd_sink_t *s, gd_srec_t *r, size_t n)
{
    json_t *h;

    if (n == 0) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (r[i].rejected && dead_letter(s, &r[i]) != 0) {
            logmsg("error", "sink %s: dead letter %s: %s", s->ops->name,
                   s->dead_path, strerror(errno));
            return -1;
        }
    }
    s->seg = r[n - 1].seg;
    s->line = r[n - 1].lineno;
    s->off = r[n - 1].end;
    h = json_object_get(sink_record(&r[n - 1]), "hash");
    if (json_is_string(h) && json_string_length(h) == 64) {
        memcpy(s->hash, json_string_value(h), 65);
    }
    if (cursor_delay_ms > 0) {
        struct timespec ts = {cursor_delay_ms / 1000,
                              (cursor_delay_ms % 1000) * 1000000};
        nanosleep(&ts, NULL);
    }
    if (cursor_save(s) != 0) {
        logmsg("error", "sink %s: cursor %s: %s", s->ops->name, s->cursor_path,
               strerror(errno));
        return -1;
    }
    metric_add(&s->done, n);
    return 0;
}

/*
 * What the sink answered for r[0..n-1] (rc, as ops->publish returns it):
 * confirmed, the cursor follows; refused as a whole, the batch is split
 * and published again until the refused records are alone.  0, or -1:
 * the sink is down (or the cursor cannot be written): the batch is tried
 * again later.
 */
static int publish(gd_sink_t *s, gd_srec_t *r, size_t n);

static int published(gd_sink_t *s, gd_srec_t *r, size_t n, int rc,
                     uint64_t added, uint64_t dups, const char *err)
{
    if (rc < 0) {
        metric_add(&s->errors, 1);
        if (log_due(s)) {
            logmsg("error", "sink %s: %s; retrying with a backoff",
                   s->ops->name, err);
        }
        return -1;
    }
    if (rc == 0) {
        metric_add(&s->published, added);
        metric_add(&s->duplicates, dups);
        return consumed(s, r, n);
    }
    /* refused as a whole */
    if (n == 1) {
        r[0].rejected = 1;
        snprintf(r[0].error, sizeof(r[0].error), "%.*s",
                 (int)sizeof(r[0].error) - 1, err);
        return consumed(s, r, 1);
    }
    if (publish(s, r, n / 2) != 0) {
        return -1;
    }
    return publish(s, r + n / 2, n - n / 2);
}

static size_t todo(const gd_srec_t *r, size_t n)
{
    size_t k = 0;

    for (size_t i = 0; i < n; i++) {
        k += !r[i].rejected;
    }
    return k;
}

/* Publishes r[0..n-1] (published) */
static int publish(gd_sink_t *s, gd_srec_t *r, size_t n)
{
    char err[512] = "";
    uint64_t added = 0, dups = 0;
    int rc = todo(r, n) == 0
                 ? 0
                 : s->ops->publish(s, r, n, &added, &dups, err, sizeof(err));

    return published(s, r, n, rc, added, dups, err);
}

/*
 * Publishes r[0..n-1] as publish does; a sink with send and finish gets
 * the batch first, and while it works on it, *next_n records of the next
 * batch are read into next (when this one is full: more are there), in
 * the other arena, and parsed; none of them is published or consumed
 * before this batch is confirmed
 */
static int stopping(void);

static int publish_ahead(gd_sink_t *s, gd_srec_t *r, size_t n, gd_srec_t *next,
                         arena_t *next_arena, size_t *next_n)
{
    char err[512] = "";
    uint64_t added = 0, dups = 0;
    int rc;

    *next_n = 0;
    if (s->ops->send == NULL || todo(r, n) == 0) {
        return publish(s, r, n);
    }
    rc = s->ops->send(s, r, n, err, sizeof(err));
    if (rc == 0) {
        if (n == s->batch && !stopping()) {
            s->seen_records = atomic_load(&pos_records);
            *next_n = read_batch(s, next, s->batch, next_arena);
            /* a raw sink's records, parsed while the sink works (as they
             * would be when the batch is sent) */
            for (size_t i = 0; s->ops->raw && i < *next_n; i++) {
                if (!next[i].rejected) {
                    sink_record(&next[i]);
                }
            }
            if (s->ops->prepare != NULL) {
                s->ops->prepare(s, next, *next_n);
            }
        }
        rc = s->ops->finish(s, r, n, &added, &dups, err, sizeof(err));
    }
    return published(s, r, n, rc, added, dups, err);
}

/* the thread */

static int stopping(void)
{
    int stop;

    pthread_mutex_lock(&pos_lock);
    stop = sinks_stopping;
    pthread_mutex_unlock(&pos_lock);
    return stop;
}

/* waits up to ms for news from the writer (or the end) */
static void wait_news(gd_sink_t *s, long ms)
{
    struct timespec ts;

    deadline_in(&ts, ms);
    pthread_mutex_lock(&pos_lock);
    if (!sinks_stopping && s->seen_records == pos_records) {
        pthread_cond_timedwait(&pos_cond, &pos_lock, &ts);
    }
    pthread_mutex_unlock(&pos_lock);
}

/* waits ms (the writer's news do not cut it short, the end does);
 * returns the next backoff: twice ms, at most GD_SINK_BACKOFF_MAX_MS.
 * Not on pos_cond: the writer broadcasts it after each fsync, hundreds
 * of times a second under a load of refusals, and each would wake the
 * pausing thread for nothing (a context switch on the decision loop's
 * cores: docs/guardd.md, "The cost to decisions") */
static long pause_ms(long ms)
{
    struct timespec ts;

    deadline_in(&ts, ms);
    pthread_mutex_lock(&pos_lock);
    while (!sinks_stopping &&
           pthread_cond_timedwait(&stop_cond, &pos_lock, &ts) == 0) {
    }
    pthread_mutex_unlock(&pos_lock);
    return ms * 2 > GD_SINK_BACKOFF_MAX_MS ? GD_SINK_BACKOFF_MAX_MS : ms * 2;
}

static void *sink_main(void *arg)
{
    gd_sink_t *s = arg;
    /* the batch in flight, r (in arenas[cur]), and the one read ahead
     * while the sink works on it, (in the other) */
    gd_srec_t *rs[2] = {calloc(s->batch, sizeof(gd_srec_t)),
                        calloc(s->batch, sizeof(gd_srec_t))};
    gd_srec_t *r = rs[0];
    int cur = 0;
    size_t n = 0, ahead = 0;
    long backoff = GD_SINK_BACKOFF_MIN_MS;
    char err[512];

    if (rs[0] == NULL || rs[1] == NULL) {
        logmsg("error", "sink %s: out of memory", s->ops->name);
        free(rs[0]);
        free(rs[1]);
        return NULL;
    }

    /*
     * background work: the decision loop comes first for the CPU.  (Not
     * SCHED_IDLE: beside other work of guardd's session it got next to
     * no CPU, and a backlog drained at half the rate; and an unprivileged
     * thread cannot leave it again.  docs/guardd.md, "The cost to
     * decisions")
     */
    {
        char name[16];

        snprintf(name, sizeof(name), "gd-sink-%.7s", s->ops->name);
        pthread_setname_np(pthread_self(), name);
    }
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), GD_SINK_NICE) != 0) {
        logmsg("info", "sink %s: setpriority: %s", s->ops->name,
               strerror(errno));
    }

    for (;;) {
        int stop = stopping();

        /* stopping: what is durable is published while the sink answers,
         * for GD_SINK_DRAIN_MS at most */
        if (stop && (deadline_passed(&stop_deadline) || !s->connected)) {
            break;
        }

        if (n == 0) {
            s->seen_records = atomic_load(&pos_records);
            n = read_batch(s, r, s->batch, &arenas[cur]);
            if (n == 0) {
                atomic_store(&s->head_ms, 0);
                if (stop) {
                    break;
                }
                wait_news(s, 1000);
                continue;
            }
        }
        /* the lag in seconds: the oldest record not yet published */
        json_t *ts = json_object_get(sink_record(&r[0]), "ts_ms");
        atomic_store(&s->head_ms,
                     json_is_integer(ts) && json_integer_value(ts) > 0
                         ? (uint64_t)json_integer_value(ts)
                         : (uint64_t)wall_ms());

        if (!s->connected) {
            if (s->ops->connect(s, err, sizeof(err)) != 0) {
                metric_add(&s->errors, 1);
                if (log_due(s)) {
                    logmsg("error", "sink %s: %s; retrying with a backoff",
                           s->ops->name, err);
                }
                if (stop) {
                    break;
                }
                backoff = pause_ms(backoff);
                continue;
            }
            s->connected = 1;
            s->log_last_ms = 0;
            atomic_store(&s->up, 1);
            logmsg("notice", "sink %s: connected", s->ops->name);
        }

        if (publish_ahead(s, r, n, rs[!cur], &arenas[!cur], &ahead) != 0) {
            s->ops->disconnect(s);
            s->connected = 0;
            atomic_store(&s->up, 0);
            /* from the cursor again: what went through is a duplicate */
            batch_free(r, n);
            batch_free(rs[!cur], ahead);
            n = ahead = 0;
            s->rseg = s->seg;
            s->rline = s->line;
            s->roff = s->off;
            if (s->f) {
                fclose(s->f); /* reopened at roff */
                s->f = NULL;
            }
            if (!stopping()) {
                backoff = pause_ms(backoff);
            }
            continue;
        }
        backoff = GD_SINK_BACKOFF_MIN_MS;
        batch_free(r, n);
        /* less than a batch was there: let the next one grow (fewer
         * transactions and cursor fsyncs, for linger_ms of delay): under
         * a steady load below a full batch per linger, a sink publishes
         * one batch per linger, each a handful of wake-ups of its thread
         * and of the server, competing with the decision loop for the
         * CPU when they share a machine (a record after a quiet spell
         * goes at once: the linger follows a batch) */
        if (n < s->batch && !stop && s->linger_ms > 0) {
            pause_ms(s->linger_ms);
        }
        /* the batch read ahead is the next one */
        cur = !cur;
        r = rs[cur];
        n = ahead;
        ahead = 0;
    }

    batch_free(r, n);
    free(rs[0]);
    free(rs[1]);
    arena_destroy();
    if (s->f) {
        fclose(s->f);
    }
    if (s->connected) {
        s->ops->disconnect(s);
    }
    return NULL;
}

/* start-up, shut-down */

static char *path_join(const char *dir, const char *prefix, const char *name,
                       const char *suffix)
{
    char *p;
    return asprintf(&p, "%s/%s%s%s", dir, prefix, name, suffix) < 0 ? NULL : p;
}

/* before the writer starts: cursors read and checked, lag counted */
int sinks_init(void)
{
    unsigned seg;
    size_t size;

    if (nsinks == 0) {
        return 0;
    }
    if (getenv("GUARDD_SINK_CURSOR_DELAY_MS") != NULL) {
        cursor_delay_ms = atol(getenv("GUARDD_SINK_CURSOR_DELAY_MS"));
        logmsg("warn",
               "sinks: each cursor written %ld ms after its batch "
               "(GUARDD_SINK_CURSOR_DELAY_MS, for tests)",
               cursor_delay_ms);
    }
    if (sink_state_dir == NULL) {
        sink_state_dir = strdup(conf.journal_dir);
    }
    if (sink_dead_letter_dir == NULL) {
        sink_dead_letter_dir = strdup(sink_state_dir);
    }
    if (sink_state_dir == NULL || sink_dead_letter_dir == NULL) {
        return -1;
    }
    mkdir(sink_state_dir, 0750);
    mkdir(sink_dead_letter_dir, 0750);
    if (conf.user[0] != '\0' && getuid() == 0) {
        struct passwd *pw = getpwnam(conf.user);
        if (pw != NULL) {
            if (chown(sink_state_dir, pw->pw_uid, pw->pw_gid) != 0 ||
                chown(sink_dead_letter_dir, pw->pw_uid, pw->pw_gid) != 0) {
                logmsg("warn", "sinks: chown: %s", strerror(errno));
            }
        }
    }

    {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&pos_cond, &ca);
        pthread_cond_init(&stop_cond, &ca);
        pthread_condattr_destroy(&ca);
    }
    /* before any thread: jansson's allocations through the sink threads'
     * arenas (malloc and free for everything else) */
    json_set_alloc_funcs(arena_malloc, arena_free);
    gd_journal_position(writer.journal, &seg, &size);
    pos_seg = seg;
    pos_size = size;

    for (size_t i = 0; i < nsinks; i++) {
        gd_sink_t *s = sinks[i];

        s->cursor_path =
            path_join(sink_state_dir, "sink-", s->ops->name, ".cursor");
        s->dead_path = path_join(sink_dead_letter_dir, "sink-", s->ops->name,
                                 ".dead.jsonl");
        if (s->cursor_path == NULL || s->dead_path == NULL ||
            cursor_load(s) != 0) {
            return -1;
        }
        s->rseg = s->seg;
        s->rline = s->line;
        s->roff = s->off;
        s->base = count_lines(s->seg, s->off, seg, size);
        logmsg("info", "sink %s: %llu records to publish", s->ops->name,
               (unsigned long long)s->base);
    }
    return 0;
}

int sinks_start(void)
{
    for (size_t i = 0; i < nsinks; i++) {
        if (pthread_create(&sinks[i]->thread, NULL, sink_main, sinks[i]) != 0) {
            return -1;
        }
        sinks[i]->started = 1;
    }
    return 0;
}

/* after the writer stopped: what is durable is published while the sinks
 * answer, for GD_SINK_DRAIN_MS at most */
void sinks_stop(void)
{
    if (nsinks == 0) {
        return;
    }
    pthread_mutex_lock(&pos_lock);
    sinks_stopping = 1;
    deadline_in(&stop_deadline, GD_SINK_DRAIN_MS);
    pthread_cond_broadcast(&pos_cond);
    pthread_cond_broadcast(&stop_cond);
    pthread_mutex_unlock(&pos_lock);

    for (size_t i = 0; i < nsinks; i++) {
        gd_sink_t *s = sinks[i];
        if (s->started) {
            pthread_join(s->thread, NULL);
        }
        logmsg("notice",
               "sink %s: stopped at journal-%06u.jsonl line %llu: %llu "
               "published, %llu duplicates, %llu dead letters, %llu behind",
               s->ops->name, s->seg, (unsigned long long)s->line,
               (unsigned long long)s->published,
               (unsigned long long)s->duplicates,
               (unsigned long long)s->dead_letters,
               (unsigned long long)sink_lag(s));
        free(s->cursor_path);
        free(s->dead_path);
    }
}

/* the writer thread: an append (1) or a sync that succeeded (0) */
void sink_appended(void)
{
    unsynced++;
}

void sink_durable(void)
{
    unsigned seg;
    size_t size;

    if (nsinks == 0) {
        return;
    }
    gd_journal_position(writer.journal, &seg, &size);
    pthread_mutex_lock(&pos_lock);
    pos_seg = seg;
    pos_size = size;
    atomic_store(&pos_records, atomic_load(&pos_records) + unsynced);
    pthread_cond_broadcast(&pos_cond);
    pthread_mutex_unlock(&pos_lock);
    unsynced = 0;
}

uint64_t sink_lag(gd_sink_t *s)
{
    uint64_t have = s->base + atomic_load(&pos_records);
    uint64_t done = atomic_load(&s->done);

    return have > done ? have - done : 0;
}

double sink_lag_seconds(gd_sink_t *s)
{
    uint64_t head = atomic_load(&s->head_ms);
    int64_t now = wall_ms();

    if (head == 0 || sink_lag(s) == 0 || (int64_t)head > now) {
        return 0;
    }
    return (double)(now - (int64_t)head) / 1000.0;
}

/* guardd's own records: lifecycle and policy versions */

static void own_record(json_t *rec)
{
    uint8_t id[GD_AUDIT_ID_LEN];
    char idtext[GD_UUID_STRLEN + 1];
    int64_t ms = wall_ms();

    if (rec == NULL || gd_uuid7_next(&uuid_gen, (uint64_t)ms, id) != 0) {
        logmsg("error", "a %s record could not be made",
               rec ? json_string_value(json_object_get(rec, "kind")) : "");
        json_decref(rec);
        return;
    }
    gd_uuid_format(id, idtext);
    idtext[GD_UUID_STRLEN] = '\0';
    json_object_set_new(rec, "id", json_string(idtext));
    json_object_set_new(rec, "ts_ms", json_integer(ms));
    json_object_set_new(rec, "node", json_string(conf.node));
    if (journal_enqueue(0, 0, rec, id) != 0) {
        logmsg("error", "the %s record %s could not be journaled",
               json_string_value(json_object_get(rec, "kind")), idtext);
    }
    json_decref(rec);
}

void sink_lifecycle(const char *event)
{
    if (nsinks == 0) {
        return;
    }
    own_record(json_pack("{s:s, s:s, s:s, s:i, s:s}", "kind", "lifecycle",
                         "event", event, "version", GUARD_VERSION, "pid",
                         (int)getpid(), "policy_version",
                         policies ? policies->version : ""));
}

void sink_policy(const char *previous, const char *version)
{
    if (nsinks == 0 || strcmp(previous, version) == 0) {
        return;
    }
    own_record(json_pack("{s:s, s:s, s:s, s:s}", "kind", "policy", "event",
                         "reload", "policy_version", version,
                         "previous_version", previous));
}
