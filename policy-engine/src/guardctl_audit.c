/* guardctl audit verify: the journal's hash chain checked */
#include "guardctl.h"

#include "gd_journal.h"

#include <stdio.h>
#include <sys/stat.h>

int journal_error(const char *dir, const char *err)
{
    struct stat st;

    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr,
                "guardctl: %s\nguardctl: no journal directory at %s: name "
                "guardd's journal directory with --dir DIR or set "
                "GUARD_JOURNAL_DIR=DIR\n",
                err, dir);
    } else {
        fprintf(stderr, "guardctl: %s\n", err);
    }
    return 2;
}

int audit_verify(int argc, char **argv)
{
    const char *dir = journal_dir();
    const char *from = NULL, *dsn = NULL;
    gd_journal_report_t report;
    const guardctl_opt_t opts[] = {
        OPT("--dir", dir), OPT("--from", from), OPT("--db", dsn), {NULL}};
    int rc = opts_parse(NULL, argc, argv, opts, NULL);

    if (rc != 0) {
        return rc;
    }
    dsn = db_dsn(dsn);

    switch (gd_journal_verify(dir, from, &report)) {
    case 0:
        printf("ok: %llu records, the chain is intact\n",
               (unsigned long long)report.records);
        /* and the store against it, row by row */
        return dsn ? db_audit_verify(dir, dsn) : 0;
    case 1:
        printf("BROKEN: %s line %llu: %s (after %llu good records)\n",
               report.segment, (unsigned long long)report.line, report.reason,
               (unsigned long long)report.records);
        return 1;
    case 2:
        /* not tampering: what a crash leaves, and guardd drops at start */
        printf("TORN: %s line %llu: %s; guardd drops it when it opens the "
               "journal (the %llu records before it are intact)\n",
               report.segment, (unsigned long long)report.line, report.reason,
               (unsigned long long)report.records);
        if (dsn) {
            rc = db_audit_verify(dir, dsn);
            return rc ? rc : 3;
        }
        return 3;
    default:
        return journal_error(dir, report.reason);
    }
}
