/* guardctl policy check DIR: the policies loaded as guardd and the module
 * load them, their errors listed */
#include "guardctl.h"

#include "gd_policy.h"

#include <stdio.h>

int policy_check(int argc, char **argv)
{
    const char *dir = argc == 1 ? argv[0] : NULL;
    gd_errors_t errs = {0};
    gd_policy_set_t *set;

    if (dir == NULL) {
        return usage();
    }

    set = gd_policy_set_load(dir, &errs);

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
