/*
 * Unit tests for gd_journal: the hash chain across segments and reopens,
 * a torn last line, and verification naming the first altered, removed
 * or reordered record.
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
    free(buf);
    j = gd_journal_open(dir, 4096, err, sizeof(err));
    TAP_OK(j != NULL && append_n(j, 120, 1) == 0,
           "a torn last line is dropped at open");
    gd_journal_close(j);
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

    return tap_done();
}
