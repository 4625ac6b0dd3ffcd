/*
 * Unit tests for gd_journal: the hash chain across segments and reopens,
 * a torn last line, verification naming the first altered, removed or
 * reordered record, and the newest ids (for guardd's dedupe set).
 */
#include "gd_journal.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[] = "/tmp/gd-journal-XXXXXX";
static char err[256];

static int append_n(gd_journal_t *j, int from, int n)
{
    for (int i = from; i < from + n; i++) {
        json_t *rec = json_pack("{s:i, s:s, s:s}", "seq", i, "tenant", "acme",
                                "reason", "rate_limited");
        if (gd_journal_append(j, rec, err, sizeof(err)) != 0) {
            json_decref(rec);
            return -1;
        }
        json_decref(rec);
    }
    return gd_journal_sync(j);
}

static char *seg(int n)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/journal-%06d.jsonl", dir, n);
    return path;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = malloc(1 << 20);
    *len = fread(buf, 1, 1 << 20, f);
    fclose(f);
    return buf;
}

static void spit(const char *path, const char *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    fwrite(buf, 1, len, f);
    fclose(f);
}

/* the ids gd_journal_recent_ids yields, as "first..last/count" */
typedef struct {
    char first[64], last[64];
    long n;
    int ordered;
    int prev;
} ids_seen_t;

static void on_id(const char *id, size_t len, void *arg)
{
    ids_seen_t *seen = arg;
    int k = -1;

    if (seen->n == 0) {
        snprintf(seen->first, sizeof(seen->first), "%s", id);
    }
    snprintf(seen->last, sizeof(seen->last), "%s", id);
    if (strlen(id) != len || sscanf(id, "id-%d", &k) != 1 ||
        (seen->n > 0 && k != seen->prev + 1)) {
        seen->ordered = 0;
    }
    seen->prev = k;
    seen->n++;
}

static long recent(const char *d, size_t max, ids_seen_t *seen)
{
    memset(seen, 0, sizeof(*seen));
    seen->ordered = 1;
    return gd_journal_recent_ids(d, max, on_id, seen, err, sizeof(err));
}

/* the newest ids, oldest first, across segments */
static void test_recent_ids(void)
{
    char rdir[] = "/tmp/gd-journal-ids-XXXXXX";
    ids_seen_t seen;
    gd_journal_t *j;
    int ok = 1;

    TAP_OK(mkdtemp(rdir) != NULL, "a scratch directory for ids");
    TAP_OK(recent(rdir, 10, &seen) == 0 && seen.n == 0,
           "an empty journal has no ids");

    j = gd_journal_open(rdir, 2048, err, sizeof(err));
    for (int i = 0; i < 300 && ok; i++) {
        char id[32];
        json_t *rec;

        snprintf(id, sizeof(id), "id-%d", i);
        rec = json_pack("{s:s, s:i}", "id", id, "seq", i);
        ok = gd_journal_append(j, rec, err, sizeof(err)) == 0;
        json_decref(rec);
        /* records without an id (older AUDITs) are not counted */
        if (i % 50 == 0) {
            rec = json_pack("{s:i}", "seq", i);
            ok = ok && gd_journal_append(j, rec, err, sizeof(err)) == 0;
            json_decref(rec);
        }
    }
    gd_journal_sync(j);
    gd_journal_close(j);
    TAP_OK(ok, "300 records with ids and 6 without, in small segments");

    char seg3[600];
    snprintf(seg3, sizeof(seg3), "%s/journal-000003.jsonl", rdir);
    TAP_OK(access(seg3, F_OK) == 0, "over several segments");

    TAP_OK(recent(rdir, 100, &seen) == 100 && seen.n == 100 &&
               strcmp(seen.first, "id-200") == 0 &&
               strcmp(seen.last, "id-299") == 0 && seen.ordered,
           "the newest 100: %s .. %s, oldest first", seen.first, seen.last);
    TAP_OK(recent(rdir, 1, &seen) == 1 && strcmp(seen.first, "id-299") == 0,
           "the newest 1: %s", seen.first);
    TAP_OK(recent(rdir, 299, &seen) == 299 && strcmp(seen.first, "id-1") == 0 &&
               seen.ordered,
           "299: from %s", seen.first);
    TAP_OK(recent(rdir, 100000, &seen) == 300 &&
               strcmp(seen.first, "id-0") == 0 &&
               strcmp(seen.last, "id-299") == 0 && seen.ordered,
           "more than there are: all 300, in order");
    TAP_OK(recent(rdir, 0, &seen) == 0 && seen.n == 0, "max 0: none");

    /* a torn last line is not a record */
    j = gd_journal_open(rdir, 1 << 20, err, sizeof(err));
    gd_journal_close(j);
    char last[600];
    for (int k = 1;; k++) {
        char p[600];
        snprintf(p, sizeof(p), "%s/journal-%06d.jsonl", rdir, k);
        if (access(p, F_OK) != 0) {
            break;
        }
        snprintf(last, sizeof(last), "%s", p);
    }
    FILE *f = fopen(last, "ab");
    fputs("{\"id\":\"id-300\",\"torn", f);
    fclose(f);
    TAP_OK(recent(rdir, 5, &seen) == 5 && strcmp(seen.last, "id-299") == 0,
           "a torn last line is skipped");

    TAP_OK(recent("/nonexistent/journal", 5, &seen) == -1,
           "an unreadable directory: -1 (%s)", err);

    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", rdir);
    TAP_OK(system(cmd) == 0, "clean up the ids journal");
}

int main(void)
{
    gd_journal_report_t rep;

    TAP_OK(mkdtemp(dir) != NULL, "a scratch directory");

    gd_journal_t *j = gd_journal_open(dir, 4096, err, sizeof(err));
    TAP_OK(j != NULL, "open an empty journal");
    TAP_OK(strspn(gd_journal_last_hash(j), "0") == 64,
           "the chain starts at 64 zeros");
    TAP_OK(append_n(j, 0, 100) == 0, "append 100 records: %s", err);
    gd_journal_close(j);

    TAP_OK(access(seg(2), F_OK) == 0, "segments rotated by size");
    TAP_OK(gd_journal_verify(dir, NULL, &rep) == 0 && rep.records == 100,
           "the chain is intact across segments (%llu records)",
           (unsigned long long)rep.records);

    /* reopen: the chain continues */
    j = gd_journal_open(dir, 4096, err, sizeof(err));
    TAP_OK(j != NULL && append_n(j, 100, 20) == 0, "reopen and append 20");
    gd_journal_close(j);
    TAP_OK(gd_journal_verify(dir, NULL, &rep) == 0 && rep.records == 120,
           "one chain over both runs");

    /* a torn last line is dropped at open, the chain goes on */
    size_t len;
    int last = 1;
    while (access(seg(last + 1), F_OK) == 0) {
        last++;
    }
    char *buf = slurp(seg(last), &len);
    spit(seg(last), buf, len);
    FILE *f = fopen(seg(last), "ab");
    fputs("{\"seq\":999,\"torn", f);
    fclose(f);
    uint64_t nl = 0;
    for (size_t k = 0; k < len; k++) {
        nl += buf[k] == '\n';
    }
    free(buf);

    /* verify names it as torn (2), not as a broken chain */
    char tname[600];
    snprintf(tname, sizeof(tname), "journal-%06d.jsonl", last);
    TAP_OK(gd_journal_verify(dir, NULL, &rep) == 2 && rep.records == 120 &&
               rep.torn_bytes == strlen("{\"seq\":999,\"torn") &&
               rep.line == nl + 1 && strcmp(rep.segment, tname) == 0,
           "a torn tail: verify says torn: %s line %llu: %s", rep.segment,
           (unsigned long long)rep.line, rep.reason);

    /* an empty segment after it: still the tail (open drops the same) */
    snprintf(tname, sizeof(tname), "%s/journal-%06d.jsonl", dir, last + 1);
    f = fopen(tname, "wb");
    fputs("{\"x", f);
    fclose(f);
    TAP_OK(gd_journal_verify(dir, NULL, &rep) == 2 &&
               rep.torn_bytes == strlen("{\"seq\":999,\"torn{\"x"),
           "a torn tail across a rotation: torn, %llu bytes",
           (unsigned long long)rep.torn_bytes);

    j = gd_journal_open(dir, 4096, err, sizeof(err));
    const char *tseg = NULL;
    uint64_t tline = 0;
    TAP_OK(j != NULL &&
               gd_journal_torn(j, &tseg, &tline) ==
                   strlen("{\"seq\":999,\"torn{\"x") &&
               tline == nl + 1 && strstr(seg(last), tseg) != NULL,
           "open says what it dropped: %s line %llu", tseg ? tseg : "",
           (unsigned long long)tline);
    TAP_OK(j != NULL && append_n(j, 120, 1) == 0,
           "a torn last line is dropped at open");
    gd_journal_close(j);
    last++; /* the chain went on in the (emptied) segment after it */
    TAP_OK(gd_journal_verify(dir, NULL, &rep) == 0 && rep.records == 121,
           "and the chain stays intact");

    /* one altered byte is named */
    buf = slurp(seg(1), &len);
    char *third = strchr(strchr(buf, '\n') + 1, '\n') + 1;
    char *rl = strstr(third, "rate_limited");
    rl[0] = 'R';
    spit(seg(1), buf, len);
    TAP_OK(gd_journal_verify(dir, NULL, &rep) == 1 && rep.line == 3 &&
               strcmp(rep.segment, "journal-000001.jsonl") == 0 &&
               strstr(rep.reason, "altered"),
           "one altered byte: %s line %llu: %s", rep.segment,
           (unsigned long long)rep.line, rep.reason);
    rl[0] = 'r';
    spit(seg(1), buf, len);
    TAP_OK(gd_journal_verify(dir, NULL, &rep) == 0, "restored: intact");

    /* a removed record is named (the one after the gap) */
    char *second = strchr(buf, '\n') + 1;
    size_t cut = (size_t)(third - second);
    memmove(second, third, len - (size_t)(third - buf));
    spit(seg(1), buf, len - cut);
    TAP_OK(gd_journal_verify(dir, NULL, &rep) == 1 && rep.line == 2 &&
               strstr(rep.reason, "removed"),
           "a removed record: line %llu: %s", (unsigned long long)rep.line,
           rep.reason);
    free(buf);

    /* verification from a later segment checks that part alone */
    TAP_OK(gd_journal_verify(dir, "journal-000002.jsonl", &rep) == 0,
           "--from a later segment: intact from there");
    TAP_OK(gd_journal_verify(dir, "bogus", &rep) == -1,
           "a bad segment name is an error: %s", rep.reason);

    /* the journal is not extended past a damaged last record */
    f = fopen(seg(last), "ab");
    fputs("not json\n", f);
    fclose(f);
    TAP_OK(gd_journal_open(dir, 4096, err, sizeof(err)) == NULL,
           "a damaged last record refuses to open: %s", err);

    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    TAP_OK(system(cmd) == 0, "clean up");

    test_recent_ids();

    return tap_done();
}
