/* guardctl policy check DIR [--keys FILE]: the policies loaded as guardd
 * and the module load them, with every JWK set they name (and the
 * guard_jwt_keys file, --keys), their errors listed */
#include "guardctl.h"

#include "gd_jwks.h"

#include <stdio.h>

gd_policy_set_t *policy_load(const char *dir, const char *keys)
{
    gd_errors_t errs = {0};
    gd_policy_set_t *set = gd_policy_set_load(dir, &errs);

    if (set != NULL) {
        gd_policy_set_check_keys(set, &errs);
    }
    if (keys != NULL) {
        gd_jwks_check_file(keys, &errs);
    }

    if (errs.n) {
        for (size_t i = 0; i < errs.n; i++) {
            fprintf(stderr, "%s\n", errs.lines[i]);
        }
        fprintf(stderr, "%zu error%s\n", errs.n, errs.n == 1 ? "" : "s");
        gd_errors_free(&errs);
        gd_policy_set_free(set);
        return NULL;
    }

    return set;
}

int policy_check(int argc, char **argv)
{
    const char *dir = NULL, *keys = NULL;
    gd_policy_set_t *set;
    const guardctl_opt_t opts[] = {OPT("--keys", keys), {NULL}};
    int rc = opts_parse(NULL, argc, argv, opts, &dir);

    if (rc != 0) {
        return rc;
    }
    if (dir == NULL) {
        return usage();
    }

    set = policy_load(dir, keys);
    if (set == NULL) {
        return 1;
    }

    printf("ok: %zu tenant polic%s, default: %s, version: %s\n", set->ntenants,
           set->ntenants == 1 ? "y" : "ies", set->fallback ? "yes" : "no",
           set->version);

    gd_policy_set_free(set);
    return 0;
}
