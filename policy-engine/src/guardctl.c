/*
 * guardctl: the command line for operators and SOC analysts.
 *
 *   guardctl policy check DIR
 *   guardctl audit verify [--dir DIR] [--from SEGMENT]
 */
#include "gd_journal.h"
#include "gd_policy.h"

#include <stdlib.h>

#include <stdio.h>
#include <string.h>

static int usage(void)
{
    fprintf(stderr, "usage: guardctl policy check DIR\n"
                    "       guardctl audit verify [--dir DIR] "
                    "[--from SEGMENT]\n");
    return 2;
}

static int policy_check(const char *dir)
{
    gd_errors_t errs = {0};
    gd_policy_set_t *set = gd_policy_set_load(dir, &errs);

    if (set == NULL) {
        for (size_t i = 0; i < errs.n; i++) {
            fprintf(stderr, "%s\n", errs.lines[i]);
        }
        fprintf(stderr, "%zu error%s\n", errs.n, errs.n == 1 ? "" : "s");
        gd_errors_free(&errs);
        return 1;
    }

    printf("ok: %zu tenant polic%s, default: %s, version: %s\n", set->ntenants,
           set->ntenants == 1 ? "y" : "ies", set->fallback ? "yes" : "no",
           set->version);

    gd_policy_set_free(set);
    return 0;
}

static int audit_verify(int argc, char **argv)
{
    const char *dir = getenv("GUARD_JOURNAL_DIR");
    const char *from = NULL;
    gd_journal_report_t report;

    if (dir == NULL) {
        dir = "/var/lib/guard/journal";
    }

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else if (strcmp(argv[i], "--from") == 0 && i + 1 < argc) {
            from = argv[++i];
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
    default:
        fprintf(stderr, "guardctl: %s\n", report.reason);
        return 2;
    }
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "policy") == 0 &&
        strcmp(argv[2], "check") == 0) {
        return policy_check(argv[3]);
    }

    if (argc >= 3 && strcmp(argv[1], "audit") == 0 &&
        strcmp(argv[2], "verify") == 0) {
        return audit_verify(argc - 3, argv + 3);
    }

    return usage();
}
