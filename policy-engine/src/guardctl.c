/*
 * guardctl: the command line for operators and SOC analysts.
 *
 *   guardctl policy check DIR
 */
#include "gd_policy.h"

#include <stdio.h>
#include <string.h>

static int usage(void)
{
    fprintf(stderr, "usage: guardctl policy check DIR\n");
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

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "policy") == 0 &&
        strcmp(argv[2], "check") == 0) {
        return policy_check(argv[3]);
    }

    return usage();
}
