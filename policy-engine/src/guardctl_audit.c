/* guardctl audit verify: the journal's hash chain checked */
#include "guardctl.h"

#include "gd_journal.h"

#include <stdio.h>

int audit_verify(int argc, char **argv)
{
    const char *dir = journal_dir();
    const char *from = NULL;
    gd_journal_report_t report;

    for (int i = 0; i < argc; i++) {
        if (opt(argc, argv, &i, "--dir", &dir)) {
            if (dir == NULL) {
                return usage();
            }
        } else if (opt(argc, argv, &i, "--from", &from)) {
            if (from == NULL) {
                return usage();
            }
        } else {
            return usage();
        }
    }

    switch (gd_journal_verify(dir, from, &report)) {
    case 0:
        printf("ok: %llu records, the chain is intact\n",
               (unsigned long long)report.records);
        return 0;
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
        return 3;
    default:
        fprintf(stderr, "guardctl: %s\n", report.reason);
        return 2;
    }
}
