/*
 * gd_journal: the tamper-evident audit journal, see gd_journal.h.
 */
#include "gd_journal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#define GD_JOURNAL_ZERO                                                        \
    "0000000000000000000000000000000000000000000000000000000000000000"

struct gd_journal_s {
    char *dir;
    size_t segment_max;
    unsigned segment; /* number of the open segment */
    int fd;
    size_t size;
    char last[GD_JOURNAL_HASH_LEN + 1];
    /* lines appended since the last sync: one write(2) per group */
    char *buf;
    size_t buf_len, buf_cap;
    int failed; /* a write failed: appended lines were lost */
    /* what gd_journal_open dropped: a torn tail */
    size_t torn_bytes;
    char torn_segment[32];
    uint64_t torn_line;
};

/* segments */

static int segment_number(const char *name, unsigned *n)
{
    char tail[8];

    if (sscanf(name, "journal-%6u%7s", n, tail) != 2 ||
        strcmp(tail, ".jsonl") != 0 || strlen(name) != 20) {
        return -1;
    }
    return 0;
}

static int uint_cmp(const void *a, const void *b)
{
    unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
    return (x > y) - (x < y);
}

/* the sorted segment numbers of dir; -1 when dir cannot be read */
static long list_segments(const char *dir, unsigned **out)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    unsigned *v = NULL, n;
    long count = 0;

    if (d == NULL) {
        return -1;
    }

    while ((e = readdir(d)) != NULL) {
        if (segment_number(e->d_name, &n) == 0) {
            unsigned *more = realloc(v, (size_t)(count + 1) * sizeof(n));
            if (more == NULL) {
                break;
            }
            v = more;
            v[count++] = n;
        }
    }

    closedir(d);

    if (count > 1) {
        qsort(v, (size_t)count, sizeof(unsigned), uint_cmp);
    }

    *out = v;
    return count;
}

static void segment_path(const char *dir, unsigned n, char *path, size_t len)
{
    snprintf(path, len, "%s/journal-%06u.jsonl", dir, n);
}

int gd_journal_scan(const char *dir, gd_journal_record_cb cb, void *arg,
                    uint64_t *skipped, char *err, size_t errlen)
{
    unsigned *segs = NULL;
    long count = list_segments(dir, &segs);
    int rc = 0;

    if (skipped) {
        *skipped = 0;
    }

    if (count < 0) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }

    for (long i = 0; i < count && rc == 0; i++) {
        char path[4096];
        const char *name;
        char *line = NULL;
        size_t cap = 0;
        ssize_t len;
        uint64_t lineno = 0;
        FILE *f;

        segment_path(dir, segs[i], path, sizeof(path));
        name = strrchr(path, '/') + 1;

        f = fopen(path, "r");
        if (f == NULL) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            rc = -1;
            break;
        }

        while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
            json_error_t jerr;
            json_t *rec;

            lineno++;
            rec = json_loadb(line, (size_t)len, 0, &jerr);
            if (!json_is_object(rec)) {
                if (skipped) {
                    (*skipped)++;
                }
                json_decref(rec);
                continue;
            }

            rc = cb(rec, name, lineno, arg);
            json_decref(rec);
        }

        if (rc == 0 && ferror(f)) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            rc = -1;
        }

        free(line);
        fclose(f);
    }

    free(segs);
    return rc;
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long size;

    if (f == NULL) {
        return NULL;
    }

    if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0 &&
        fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)size + 1))) {
        *len = fread(buf, 1, (size_t)size, f);
        buf[*len] = '\0';
    }

    fclose(f);
    return buf;
}

/* hashing */

static int sha256_hex(const char *prev_hash, const char *canon, size_t len,
                      char *out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int rc = -1;

    if (ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
        EVP_DigestUpdate(ctx, prev_hash, GD_JOURNAL_HASH_LEN) == 1 &&
        EVP_DigestUpdate(ctx, canon, len) == 1 &&
        EVP_DigestFinal_ex(ctx, md, &mdlen) == 1) {
        static const char hex[] = "0123456789abcdef";

        /* (snprintf per byte costs more than the digest) */
        for (unsigned i = 0; i < mdlen; i++) {
            out[2 * i] = hex[md[i] >> 4];
            out[2 * i + 1] = hex[md[i] & 0xf];
        }
        out[2 * mdlen] = '\0';
        rc = 0;
    }

    EVP_MD_CTX_free(ctx);
    return rc;
}

int gd_journal_hash(const json_t *rec, const char *prev_hash, char *out)
{
    json_t *copy = json_copy((json_t *)rec);
    char *canon;
    int rc;

    if (copy == NULL) {
        return -1;
    }

    json_object_del(copy, "hash");
    canon = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(copy);

    if (canon == NULL) {
        return -1;
    }

    rc = sha256_hex(prev_hash, canon, strlen(canon), out);
    free(canon);
    return rc;
}

/* writing */

static int open_segment(gd_journal_t *j, char *err, size_t errlen)
{
    char path[4096];
    struct stat st;

    segment_path(j->dir, j->segment, path, sizeof(path));

    j->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (j->fd < 0 || fstat(j->fd, &st) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }

    j->size = (size_t)st.st_size;
    return 0;
}

gd_journal_t *gd_journal_open(const char *dir, size_t segment_max, char *err,
                              size_t errlen)
{
    gd_journal_t *j = calloc(1, sizeof(gd_journal_t));
    unsigned *segs = NULL;
    long n;

    if (j == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }

    j->fd = -1;
    j->segment_max = segment_max;
    j->dir = strdup(dir);
    memcpy(j->last, GD_JOURNAL_ZERO, sizeof(j->last));

    if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        goto failed;
    }

    n = list_segments(dir, &segs);
    if (n < 0) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        goto failed;
    }

    j->segment = n ? segs[n - 1] : 1;

    /* continue the chain: the hash of the last whole record */

    for (long i = n - 1; i >= 0; i--) {
        char path[4096];
        size_t len = 0;
        char *text, *end, *line;

        segment_path(dir, segs[i], path, sizeof(path));
        text = read_all(path, &len);
        if (text == NULL) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            goto failed;
        }

        /* a line torn by a crash was never acknowledged: drop it */
        end = text + len;
        while (end > text && end[-1] != '\n') {
            end--;
        }
        if ((size_t)(end - text) != len) {
            if (truncate(path, (off_t)(end - text)) != 0) {
                snprintf(err, errlen, "%s: %s", path, strerror(errno));
                free(text);
                goto failed;
            }

            /* named where it began: the earliest segment holding part */
            j->torn_bytes += len - (size_t)(end - text);
            snprintf(j->torn_segment, sizeof(j->torn_segment),
                     "journal-%06u.jsonl", segs[i]);
            j->torn_line = 1;
            for (const char *p = text; p < end; p++) {
                j->torn_line += *p == '\n';
            }
        }

        if (end == text) {
            free(text);
            continue;
        }

        end[-1] = '\0';
        line = strrchr(text, '\n');
        line = line ? line + 1 : text;

        json_error_t jerr;
        json_t *rec = json_loads(line, 0, &jerr);
        json_t *h = rec ? json_object_get(rec, "hash") : NULL;

        if (!json_is_string(h) ||
            strlen(json_string_value(h)) != GD_JOURNAL_HASH_LEN) {
            snprintf(err, errlen,
                     "%s: the last record cannot be read; run "
                     "guardctl audit verify",
                     path);
            json_decref(rec);
            free(text);
            goto failed;
        }

        memcpy(j->last, json_string_value(h), GD_JOURNAL_HASH_LEN);
        json_decref(rec);
        free(text);
        break;
    }

    free(segs);
    segs = NULL;

    if (open_segment(j, err, errlen) != 0) {
        goto failed;
    }

    return j;

failed:
    free(segs);
    gd_journal_close(j);
    return NULL;
}

/* writes the buffered lines to the open segment */
static int flush_lines(gd_journal_t *j)
{
    size_t off = 0;

    while (off < j->buf_len) {
        ssize_t n = write(j->fd, j->buf + off, j->buf_len - off);

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            j->failed = 1;
            return -1;
        }
        off += (size_t)n;
    }

    j->buf_len = 0;
    return 0;
}

int gd_journal_append(gd_journal_t *j, json_t *rec, char *err, size_t errlen)
{
    char hash[GD_JOURNAL_HASH_LEN + 1];
    char *canon;
    size_t len, need;

    if (!json_is_object(rec)) {
        snprintf(err, errlen, "a record must be a JSON object");
        return -1;
    }

    if (j->failed) {
        snprintf(err, errlen, "an earlier write failed");
        return -1;
    }

    /*
     * One serialization: the canonical form (with prev_hash, without
     * hash) is hashed, and the line is that form with the hash added as
     * its last member; readers parse lines, so member order is free.
     */
    json_object_del(rec, "hash");
    json_object_set_new(rec, "prev_hash", json_string(j->last));

    canon = json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS);
    if (canon == NULL) {
        snprintf(err, errlen, "cannot encode the record");
        return -1;
    }
    len = strlen(canon);

    if (len < 2 || sha256_hex(j->last, canon, len, hash) != 0) {
        free(canon);
        snprintf(err, errlen, "cannot hash the record");
        return -1;
    }

    /* ... "}" becomes ... ,"hash":"HEX"}\n */
    need = len - 1 + sizeof(",\"hash\":\"\"}\n") - 1 + GD_JOURNAL_HASH_LEN;

    if (j->size > 0 && j->size + j->buf_len + need > j->segment_max) {
        /* rotate: the new segment continues the same chain */
        if (flush_lines(j) != 0 || fsync(j->fd) != 0 || close(j->fd) != 0) {
            snprintf(err, errlen, "rotate: %s", strerror(errno));
            j->failed = 1;
            free(canon);
            return -1;
        }
        j->fd = -1;
        j->segment++;
        if (open_segment(j, err, errlen) != 0) {
            j->failed = 1;
            free(canon);
            return -1;
        }
    }

    /* + 1: sprintf() ends with a NUL, not counted in buf_len */
    if (j->buf_len + need + 1 > j->buf_cap) {
        size_t cap = (j->buf_len + need + 1) * 2;
        char *more = realloc(j->buf, cap);

        if (more == NULL) {
            free(canon);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        j->buf = more;
        j->buf_cap = cap;
    }

    memcpy(j->buf + j->buf_len, canon, len - 1);
    j->buf_len += len - 1;
    j->buf_len +=
        (size_t)sprintf(j->buf + j->buf_len, ",\"hash\":\"%s\"}\n", hash);
    free(canon);

    json_object_set_new(rec, "hash", json_string(hash));
    j->size += need;
    memcpy(j->last, hash, sizeof(hash));
    return 0;
}

void gd_journal_position(const gd_journal_t *j, unsigned *segment, size_t *size)
{
    *segment = j->segment;
    *size = j->size;
}

int gd_journal_sync(gd_journal_t *j)
{
    if (j->failed || flush_lines(j) != 0) {
        errno = errno ? errno : EIO;
        return -1;
    }
    return fsync(j->fd);
}

size_t gd_journal_torn(const gd_journal_t *j, const char **segment,
                       uint64_t *line)
{
    *segment = j->torn_segment;
    *line = j->torn_line;
    return j->torn_bytes;
}

const char *gd_journal_last_hash(const gd_journal_t *j)
{
    return j->last;
}

void gd_journal_close(gd_journal_t *j)
{
    if (j == NULL) {
        return;
    }
    if (j->fd >= 0) {
        if (!j->failed) {
            flush_lines(j);
        }
        fsync(j->fd);
        close(j->fd);
    }
    free(j->buf);
    free(j->dir);
    free(j);
}

/* verifying */

int gd_journal_verify(const char *dir, const char *from_segment,
                      gd_journal_report_t *report)
{
    unsigned *segs = NULL, from = 0;
    char prev[GD_JOURNAL_HASH_LEN + 1] = GD_JOURNAL_ZERO;
    int first = 1, rc = 0;
    long n, tail;

    memset(report, 0, sizeof(*report));

    if (from_segment && segment_number(from_segment, &from) != 0) {
        snprintf(report->reason, sizeof(report->reason),
                 "%.100s is not a segment name (journal-NNNNNN.jsonl)",
                 from_segment);
        return -1;
    }

    n = list_segments(dir, &segs);
    if (n < 0) {
        snprintf(report->reason, sizeof(report->reason), "%.200s: %s", dir,
                 strerror(errno));
        return -1;
    }

    /*
     * The tail gd_journal_open drops: what follows the last newline of
     * the last segment that has one (segment tail), and every later
     * segment, which holds no newline.  Anywhere else a line without its
     * newline is damage.
     */
    for (tail = n - 1; tail >= 0; tail--) {
        char path[4096];
        size_t len = 0;
        char *text;
        int whole;

        segment_path(dir, segs[tail], path, sizeof(path));
        text = read_all(path, &len);
        if (text == NULL) {
            snprintf(report->reason, sizeof(report->reason),
                     "journal-%06u.jsonl: %s", segs[tail], strerror(errno));
            free(segs);
            return -1;
        }
        whole = memchr(text, '\n', len) != NULL;
        free(text);
        if (whole) {
            break;
        }
    }

    for (long i = 0; i < n && rc == 0; i++) {
        char path[4096];
        size_t len = 0;
        char *text, *line, *next;
        uint64_t lineno = 0;

        if (segs[i] < from) {
            continue;
        }

        segment_path(dir, segs[i], path, sizeof(path));
        text = read_all(path, &len);
        if (text == NULL) {
            snprintf(report->reason, sizeof(report->reason),
                     "journal-%06u.jsonl: %s", segs[i], strerror(errno));
            rc = -1;
            break;
        }

        for (line = text; rc == 0 && line < text + len; line = next) {
            char hash[GD_JOURNAL_HASH_LEN + 1];
            json_error_t jerr;
            json_t *rec, *h, *p;

            next = memchr(line, '\n', (size_t)(text + len - line));
            lineno++;
            if (next == NULL && i >= tail) {
                /* torn: a write cut off by a crash, never acknowledged */
                if (report->torn_bytes == 0) {
                    snprintf(report->segment, sizeof(report->segment),
                             "journal-%06u.jsonl", segs[i]);
                    report->line = lineno;
                }
                report->torn_bytes += (uint64_t)(text + len - line);
                break;
            }
            if (next == NULL) {
                next = text + len;
            } else {
                *next++ = '\0';
            }

            rec = json_loads(line, JSON_REJECT_DUPLICATES, &jerr);
            h = rec ? json_object_get(rec, "hash") : NULL;
            p = rec ? json_object_get(rec, "prev_hash") : NULL;

            if (!json_is_object(rec) || !json_is_string(h) ||
                !json_is_string(p)) {
                snprintf(report->reason, sizeof(report->reason),
                         "not a journal record%s%s", rec ? "" : ": ",
                         rec ? "" : jerr.text);
                rc = 1;
            } else if (!(first && from_segment) &&
                       strcmp(json_string_value(p), prev) != 0) {
                snprintf(report->reason, sizeof(report->reason),
                         "prev_hash does not match the record before: a "
                         "record was removed, added or reordered");
                rc = 1;
            } else if (gd_journal_hash(rec, json_string_value(p), hash) != 0 ||
                       strcmp(hash, json_string_value(h)) != 0) {
                snprintf(report->reason, sizeof(report->reason),
                         "hash does not match the record: it was altered");
                rc = 1;
            } else {
                memcpy(prev, hash, sizeof(prev));
                first = 0;
                report->records++;
            }

            if (rc == 1) {
                snprintf(report->segment, sizeof(report->segment),
                         "journal-%06u.jsonl", segs[i]);
                report->line = lineno;
            }

            json_decref(rec);
        }

        free(text);
    }

    free(segs);

    if (rc == 0 && report->torn_bytes > 0) {
        snprintf(report->reason, sizeof(report->reason),
                 "the last line is torn (%llu bytes without a newline): a "
                 "write cut off by a crash, never acknowledged",
                 (unsigned long long)report->torn_bytes);
        rc = 2;
    }
    return rc;
}

/* the newest ids, for a dedupe set */

typedef struct {
    char **ids;
    size_t n, cap;
} id_list_t;

static int id_list_push(id_list_t *l, const char *id)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        char **more = realloc(l->ids, cap * sizeof(char *));
        if (more == NULL) {
            return -1;
        }
        l->ids = more;
        l->cap = cap;
    }
    l->ids[l->n] = strdup(id);
    if (l->ids[l->n] == NULL) {
        return -1;
    }
    l->n++;
    return 0;
}

/* the ids of the last (at most) need whole records of a segment that
 * have one, in order: read from the end back, so that only the lines
 * needed are parsed */
static int segment_ids(const char *path, size_t need, id_list_t *l)
{
    size_t len = 0;
    char *text = read_all(path, &len), *end;

    if (text == NULL) {
        return -1;
    }

    /* only whole lines: a torn last one is not a record */
    end = text + len;
    while (end > text && end[-1] != '\n') {
        end--;
    }

    while (end > text && l->n < need) {
        char *line = end - 1; /* at the line's '\n' */
        json_error_t jerr;
        json_t *rec;
        const char *id;
        int rc;

        while (line > text && line[-1] != '\n') {
            line--;
        }

        rec = json_loadb(line, (size_t)(end - 1 - line), 0, &jerr);
        id = json_string_value(json_object_get(rec, "id"));
        rc = id ? id_list_push(l, id) : 0;
        json_decref(rec);
        end = line;

        if (rc != 0) {
            free(text);
            errno = ENOMEM;
            return -1;
        }
    }

    free(text);

    /* newest first so far: put them in order */
    for (size_t i = 0; i < l->n / 2; i++) {
        char *t = l->ids[i];
        l->ids[i] = l->ids[l->n - 1 - i];
        l->ids[l->n - 1 - i] = t;
    }
    return 0;
}

long gd_journal_recent_ids(const char *dir, size_t max, gd_journal_id_cb cb,
                           void *arg, char *err, size_t errlen)
{
    unsigned *segs = NULL;
    id_list_t *per = NULL;
    size_t total = 0;
    long n, first, yielded = -1;

    n = list_segments(dir, &segs);
    if (n < 0) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }

    per = calloc((size_t)n + 1, sizeof(id_list_t));
    if (per == NULL) {
        snprintf(err, errlen, "out of memory");
        free(segs);
        return -1;
    }

    /* from the newest segment back, until enough */
    for (first = n; first > 0 && total < max; first--) {
        char path[4096];

        segment_path(dir, segs[first - 1], path, sizeof(path));
        if (segment_ids(path, max - total, &per[first - 1]) != 0) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            goto done;
        }
        total += per[first - 1].n;
    }

    /* oldest first (each segment gave no more than was still needed) */
    yielded = 0;
    for (long i = first; i < n; i++) {
        for (size_t k = 0; k < per[i].n; k++) {
            cb(per[i].ids[k], strlen(per[i].ids[k]), arg);
            yielded++;
        }
    }

done:
    for (long i = 0; i < n; i++) {
        for (size_t k = 0; k < per[i].n; k++) {
            free(per[i].ids[k]);
        }
        free(per[i].ids);
    }
    free(per);
    free(segs);
    return yielded;
}
