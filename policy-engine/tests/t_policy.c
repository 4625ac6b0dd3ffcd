/*
 * Unit tests for gd_policy: the loaded structure of a good policy set,
 * tenant lookup with the default fallback, rule matching, and error
 * lines with their positions (gd_jsonloc).
 */
#include "gd_jsonloc.h"
#include "gd_policy.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef GD_TEST_DATA
#define GD_TEST_DATA "t/policies"
#endif

static int match(const gd_rate_rule_t *r, const char *m, const char *p)
{
    return gd_rate_rule_matches(r, m, strlen(m), p, strlen(p));
}

static const gd_rate_rule_t *rule(const gd_policy_t *p, const char *name)
{
    for (size_t i = 0; i < p->nrates; i++) {
        if (strcmp(p->rates[i].name, name) == 0) {
            return &p->rates[i];
        }
    }
    return NULL;
}

int main(void)
{
    gd_errors_t errs = {0};
    gd_policy_set_t *set = gd_policy_set_load(GD_TEST_DATA "/good", &errs);

    TAP_OK(set != NULL && errs.n == 0, "the good set loads");
    if (set == NULL) {
        for (size_t i = 0; i < errs.n; i++) {
            printf("# %s\n", errs.lines[i]);
        }
        return tap_done();
    }

    TAP_OK(strlen(set->version) == 64, "a 64-hex version");
    TAP_OK(set->fallback != NULL && set->fallback->tenant == NULL,
           "_default.json is the fallback and names no tenant");

    const gd_policy_t *acme = gd_policy_find(set, "acme", 4);
    TAP_OK(acme && strcmp(acme->tenant, "acme") == 0, "acme found");
    TAP_OK(gd_policy_find(set, "acm", 3) == set->fallback,
           "a prefix is another tenant: the default");
    TAP_OK(gd_policy_find(set, "acmex", 5) == set->fallback,
           "a longer name is another tenant: the default");
    TAP_OK(gd_policy_find(set, "nobody", 6) == set->fallback,
           "an unknown tenant gets the default");

    TAP_OK(acme->nissuers == 2 &&
               strcmp(acme->issuers[1], "https://login.acme.example") == 0,
           "issuers");
    TAP_OK(acme->jwks && strstr(acme->jwks, "/good/keys/acme.jwks.json"),
           "jwks resolved against the directory: %s",
           acme->jwks ? acme->jwks : "(null)");
    TAP_OK(acme->has_residency && acme->nregions == 2, "regions");

    const gd_rate_rule_t *api = rule(acme, "api");
    TAP_OK(api && api->requests == 100 && api->period_ms == 1000 &&
               api->burst == 50 && !api->per_subject,
           "rule api: 100 per 1s, burst 50, per tenant");

    const gd_rate_rule_t *orders = rule(acme, "orders_create");
    TAP_OK(orders && orders->per_subject && orders->period_ms == 60000,
           "rule orders_create: per subject, 1m");
    TAP_OK(orders && match(orders, "POST", "/api/x/orders"),
           "POST /api/x/orders matches /api/*/orders");
    TAP_OK(orders && !match(orders, "GET", "/api/x/orders"),
           "GET does not match a POST/PUT rule");
    TAP_OK(orders && !match(orders, "POST", "/api/x/y/orders"),
           "* stays within one segment");
    TAP_OK(orders && !match(orders, "POSTX", "/api/x/orders"),
           "a method is compared whole");

    const gd_rate_rule_t *reports = rule(acme, "reports");
    TAP_OK(reports && reports->period_ms == 500, "500ms period");

    gd_rate_rule_t any = {.name = "any", .path = "/files/**"};
    TAP_OK(match(&any, "GET", "/files/a/b/c"), "/files/** matches deep");
    TAP_OK(match(&any, "GET", "/files"), "/files/** matches /files");
    TAP_OK(!match(&any, "GET", "/filesx/a"), "/files/** not /filesx/a");

    gd_policy_set_free(set);

    /* errors: every one, with its position */
    char dir[] = "/tmp/gd-policy-XXXXXX";
    TAP_OK(mkdtemp(dir) != NULL, "a scratch directory");

    char path[256];
    snprintf(path, sizeof(path), "%s/a.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{\n  \"tenant\": \"a\",\n  \"limits\": {\n    \"rate\": [\n"
          "      {\"name\": \"x\", \"requests\": 0, \"period\": \"1 m\"}\n"
          "    ]\n  },\n  \"bogus\": 1\n}\n",
          f);
    fclose(f);

    set = gd_policy_set_load(dir, &errs);
    TAP_OK(set == NULL && errs.n == 3, "three errors, all reported (%zu)",
           errs.n);

    int seen = 0;
    for (size_t i = 0; i < errs.n; i++) {
        printf("# %s\n", errs.lines[i]);
        if (strstr(errs.lines[i], "a.json:5:21: /limits/rate/0/requests:")) {
            seen |= 1;
        }
        if (strstr(errs.lines[i], "a.json:5:36: /limits/rate/0/period:")) {
            seen |= 2;
        }
        if (strstr(errs.lines[i], "a.json:8:3: /bogus:")) {
            seen |= 4;
        }
    }
    TAP_OK(seen == 7, "file:line:column and pointer of each error");
    gd_errors_free(&errs);

    unlink(path);
    rmdir(dir);

    int line, col;
    const char *text = "{\"a\": [1, {\"b~/c\": true}]}";
    gd_jsonloc_find(text, strlen(text), "/a/1/b~0~1c", 0, &line, &col);
    TAP_OK(line == 1 && col == 12, "an escaped key inside an array: %d:%d",
           line, col);
    gd_jsonloc_find(text, strlen(text), "/a/1/b~0~1c", 1, &line, &col);
    TAP_OK(col == 20, "its value: column %d", col);
    gd_jsonloc_find(text, strlen(text), "/a/5", 1, &line, &col);
    TAP_OK(col == 7, "a missing item points at its array: column %d", col);

    return tap_done();
}
