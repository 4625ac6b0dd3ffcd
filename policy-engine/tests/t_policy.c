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

static const gd_risk_signal_t *signal(const gd_policy_t *p, const char *id)
{
    for (size_t i = 0; i < p->risk.nsignals; i++) {
        if (strcmp(p->risk.signals[i].id, id) == 0) {
            return &p->risk.signals[i];
        }
    }
    return NULL;
}

/* loads dir/a.json holding text: the number of errors, each printed */
static size_t load_one(const char *dir, const char *text, gd_errors_t *errs,
                       gd_policy_set_t **set)
{
    char path[256];
    FILE *f;

    snprintf(path, sizeof(path), "%s/a.json", dir);
    f = fopen(path, "w");
    if (f == NULL) {
        return (size_t)-1;
    }
    fputs(text, f);
    fclose(f);

    gd_errors_free(errs);
    *set = gd_policy_set_load(dir, errs);
    for (size_t i = 0; i < errs->n; i++) {
        printf("# %s\n", errs->lines[i]);
    }
    unlink(path);
    return errs->n;
}

/* one of errs has this "FILE:LINE:COLUMN: POINTER:" after the directory */
static int has_error(const gd_errors_t *errs, const char *at)
{
    for (size_t i = 0; i < errs->n; i++) {
        if (strstr(errs->lines[i], at)) {
            return 1;
        }
    }
    return 0;
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

    /* the risk section */
    const gd_risk_policy_t *rk = &acme->risk;
    TAP_OK(acme->has_risk && rk->step_up == 40 && rk->deny == 70 &&
               rk->ttl_ms == 30000 && !rk->shadow && rk->time_zone &&
               strcmp(rk->time_zone, "Europe/Paris") == 0 && rk->nsignals == 12,
           "acme risk: thresholds 40/70, ttl 30s, Europe/Paris, 12 signals");

    const gd_risk_signal_t *sg = signal(acme, "sensitive-route");
    TAP_OK(sg && sg->cond == GD_RISK_ROUTE_SENSITIVE && sg->sensitive &&
               sg->weight == 30 && !sg->shadow,
           "route_sensitive: true, weight 30");
    sg = signal(acme, "public-route");
    TAP_OK(sg && sg->cond == GD_RISK_ROUTE_SENSITIVE && !sg->sensitive &&
               sg->shadow,
           "route_sensitive: false, a shadow signal");
    sg = signal(acme, "delete");
    TAP_OK(sg && sg->cond == GD_RISK_METHOD && sg->nmethods == 2 &&
               strcmp(sg->methods[1], "PATCH") == 0 && !sg->shadow,
           "method: DELETE, PATCH; shadow false given");
    sg = signal(acme, "big-body");
    TAP_OK(sg && sg->cond == GD_RISK_BODY_SIZE_OVER && sg->over == 1048576,
           "body_size_over 1048576");
    sg = signal(acme, "no-admin-role");
    TAP_OK(sg && sg->cond == GD_RISK_CLAIM && sg->claim_lacks &&
               strcmp(sg->claim, "roles") == 0 &&
               strcmp(sg->claim_value, "admin") == 0,
           "claim roles lacks admin");
    sg = signal(acme, "contractor");
    TAP_OK(sg && sg->cond == GD_RISK_CLAIM && !sg->claim_lacks &&
               strcmp(sg->claim, "employment") == 0 &&
               strcmp(sg->claim_value, "contractor") == 0,
           "claim employment equals contractor (members in any order)");
    sg = signal(acme, "burst");
    TAP_OK(sg && sg->cond == GD_RISK_SUBJECT_RATE_OVER && sg->over == 50 &&
               sg->window_ms == 10000,
           "subject_rate_over 50 in 10s");
    sg = signal(acme, "refused-before");
    TAP_OK(sg && sg->cond == GD_RISK_SUBJECT_REFUSALS_OVER && sg->over == 3 &&
               sg->window_ms == 15 * 60000,
           "subject_refusals_over 3 in 15m");
    sg = signal(acme, "new-ip");
    TAP_OK(sg && sg->cond == GD_RISK_NEW_CLIENT_IP &&
               sg->window_ms == 24 * 3600000ULL && sg->shadow,
           "new_client_ip in 24h, shadow");
    sg = signal(acme, "off-hours");
    TAP_OK(sg && sg->cond == GD_RISK_OUTSIDE_HOURS && sg->from_min == 7 * 60 &&
               sg->to_min == 20 * 60,
           "outside_hours 07:00-20:00 in minutes");
    sg = signal(acme, "night_shift");
    TAP_OK(sg && sg->from_min == 22 * 60 && sg->to_min == 6 * 60,
           "outside_hours 22:00-06:00 (wraps)");
    sg = signal(acme, "inline");
    TAP_OK(sg && sg->cond == GD_RISK_INLINE_SCORE_OVER && sg->over == 50,
           "inline_score_over 50");

    const gd_policy_t *beta = gd_policy_find(set, "beta", 4);
    TAP_OK(beta && !beta->has_risk && beta->risk.nsignals == 0,
           "a policy without risk has none");
    TAP_OK(set->fallback->has_risk && set->fallback->risk.ttl_ms == 0 &&
               set->fallback->risk.time_zone == NULL &&
               set->fallback->risk.nsignals == 1,
           "the default's risk: no ttl, no time zone (UTC)");

    const char *gname =
        "Gamma.Corp_2-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
    const gd_policy_t *gamma = gd_policy_find(set, gname, strlen(gname));
    TAP_OK(gamma && gamma->has_risk &&
               gamma->risk.nsignals == GD_RISK_MAX_SIGNALS &&
               gamma->risk.step_up == 999 && gamma->risk.deny == 1000 &&
               gamma->risk.shadow && gamma->risk.ttl_ms == 999999ULL * 3600000,
           "gamma: 64 signals, thresholds 999/1000, shadow, ttl 999999h");
    TAP_OK(gamma && gamma->risk.signals[0].over == 1000000000000ULL &&
               gamma->risk.signals[0].weight == 1000 &&
               strlen(gamma->risk.signals[0].id) == 64 &&
               gamma->risk.signals[5].from_min == 23 * 60 + 59 &&
               gamma->risk.signals[5].to_min == 0 &&
               strlen(gamma->risk.signals[8].claim) == 256,
           "gamma: the upper bounds load");

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

    /* risk errors: every one, with its position */
    set = NULL;
    size_t n = load_one(
        dir,
        "{\n"
        "  \"tenant\": \"a\",\n"
        "  \"risk\": {\n"
        "    \"thresholds\": {\"step_up\": 50, \"deny\": 20, \"x\": 1},\n"
        "    \"ttl\": \"30 s\",\n"
        "    \"time_zone\": \"Europe/Paris!\",\n"
        "    \"signals\": [\n"
        "      {\"id\": \"a\", \"weight\": 1001, \"when\": {\"method\": "
        "[\"GET\", \"GET\"]}},\n"
        "      {\"id\": \"a\", \"weight\": 1, \"when\": {\"bogus\": 1}},\n"
        "      {\"id\": \"b c\", \"weight\": 1, \"when\": "
        "{\"route_sensitive\": 1}},\n"
        "      {\"id\": \"d\", \"weight\": 1, \"when\": {\"claim\": "
        "{\"name\": \"\", \"lacks\": \"x\"}}},\n"
        "      {\"id\": \"e\", \"weight\": 1, \"when\": {\"claim\": "
        "{\"name\": \"r\"}}},\n"
        "      {\"id\": \"f\", \"weight\": 1, \"when\": "
        "{\"subject_rate_over\": "
        "{\"requests\": 1001, \"window\": \"0s\"}}},\n"
        "      {\"id\": \"g\", \"weight\": 1, \"when\": "
        "{\"subject_refusals_over\": {\"window\": \"1m\"}}},\n"
        "      {\"id\": \"h\", \"weight\": 1, \"when\": {\"outside_hours\": "
        "{\"from\": \"7:00\", \"to\": \"23:60\"}}},\n"
        "      {\"id\": \"i\", \"weight\": 1, \"when\": "
        "{\"inline_score_over\": -1, \"body_size_over\": 1}},\n"
        "      {\"id\": \"j\", \"when\": {\"new_client_ip\": {\"window\": "
        "\"1h\", \"x\": 1}}, \"extra\": true},\n"
        "      3\n"
        "    ],\n"
        "    \"shadow\": \"no\"\n"
        "  }\n"
        "}\n",
        &errs, &set);
    TAP_OK(set == NULL && n == 24, "a bad risk section: 24 errors (%zu)", n);

    static const char *want[] = {
        "a.json:4:20: /risk/thresholds/step_up: must be less than deny",
        "a.json:4:47: /risk/thresholds/x: unknown member",
        "a.json:5:5: /risk/ttl: must be a duration",
        "a.json:6:5: /risk/time_zone: must be a time zone name",
        "a.json:8:19: /risk/signals/0/weight: must be from 1 to 1000, not "
        "1001",
        "a.json:8:62: /risk/signals/0/when/method/1: duplicate item",
        "a.json:9:41: /risk/signals/1/when/bogus: unknown member",
        "a.json:9:8: /risk/signals/1/id: duplicate signal id \"a\"",
        "a.json:10:8: /risk/signals/2/id: must be 1-64 characters",
        "a.json:10:43: /risk/signals/2/when/route_sensitive: must be a "
        "boolean",
        "a.json:11:51: /risk/signals/3/when/claim/name: must be a claim name",
        "a.json:12:50: /risk/signals/4/when/claim: a claim condition needs",
        "a.json:13:63: /risk/signals/5/when/subject_rate_over/requests: must "
        "be from 1 to 1000, not 1001",
        "a.json:13:81: /risk/signals/5/when/subject_rate_over/window: must be "
        "a duration in seconds",
        "a.json:14:66: /risk/signals/6/when/subject_refusals_over: missing "
        "required member \"count\"",
        "a.json:15:59: /risk/signals/7/when/outside_hours/from: must be a "
        "time of day",
        "a.json:15:75: /risk/signals/7/when/outside_hours/to: must be a time "
        "of day",
        "a.json:16:41: /risk/signals/8/when/inline_score_over: must be from 0 "
        "to 1000000, not -1",
        "a.json:16:66: /risk/signals/8/when/body_size_over: a signal has "
        "exactly one condition, and \"inline_score_over\" is already given",
        "a.json:17:7: /risk/signals/9: missing required member \"weight\"",
        "a.json:17:62: /risk/signals/9/when/new_client_ip/x: unknown member",
        "a.json:17:72: /risk/signals/9/extra: unknown member",
        "a.json:18:7: /risk/signals/10: a signal must be an object",
        "a.json:20:5: /risk/shadow: must be a boolean",
    };
    size_t found = 0;
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        if (has_error(&errs, want[i])) {
            found++;
        } else {
            printf("# not found: %s\n", want[i]);
        }
    }
    TAP_OK(found == sizeof(want) / sizeof(want[0]),
           "file:line:column and pointer of each risk error (%zu of %zu)",
           found, sizeof(want) / sizeof(want[0]));

    n = load_one(dir, "{\"tenant\": \"a\", \"risk\": {\"signals\": []}}", &errs,
                 &set);
    TAP_OK(set == NULL && n == 2 &&
               has_error(&errs, "a.json:1:25: /risk: missing required "
                                "member \"thresholds\"") &&
               has_error(&errs, "a.json:1:26: /risk/signals: must have at "
                                "least one signal"),
           "no thresholds, no signals");

    n = load_one(dir, "{\"tenant\": \"a\", \"risk\": {\"thresholds\": {}}}",
                 &errs, &set);
    TAP_OK(set == NULL && n == 3 &&
               has_error(&errs, "a.json:1:40: /risk/thresholds: missing "
                                "required member \"step_up\"") &&
               has_error(&errs, "a.json:1:40: /risk/thresholds: missing "
                                "required member \"deny\"") &&
               has_error(&errs, "a.json:1:25: /risk: missing required "
                                "member \"signals\""),
           "empty thresholds: step_up, deny and signals missing");

    {
        /* 65 signals: one too many */
        char big[8192];
        size_t len = (size_t)snprintf(
            big, sizeof(big),
            "{\"tenant\": \"a\", \"risk\": {\"thresholds\": {\"step_up\": 1, "
            "\"deny\": 2}, \"signals\": [");
        for (int i = 0; i <= GD_RISK_MAX_SIGNALS; i++) {
            len += (size_t)snprintf(big + len, sizeof(big) - len,
                                    "%s{\"id\": \"s%d\", \"weight\": 1, "
                                    "\"when\": {\"body_size_over\": 1}}",
                                    i ? ", " : "", i);
        }
        snprintf(big + len, sizeof(big) - len, "]}}\n");
        n = load_one(dir, big, &errs, &set);
        TAP_OK(set == NULL && n == 1 &&
                   has_error(&errs, "/risk/signals: must have at most 64 "
                                    "signals, not 65"),
               "65 signals: too many");
    }

    n = load_one(dir,
                 "{\"tenant\": \"a\", \"risk\": {\"thresholds\": "
                 "{\"step_up\": 1, \"deny\": 1000}, \"time_zone\": "
                 "\"Etc/GMT+5\", \"ttl\": \"500ms\", \"signals\": ["
                 "{\"id\": \"w\", \"weight\": 1, \"when\": "
                 "{\"outside_hours\": {\"from\": \"00:00\", \"to\": "
                 "\"23:59\"}}}]}}",
                 &errs, &set);
    TAP_OK(set != NULL && n == 0 && set->tenants[0].risk.ttl_ms == 500 &&
               strcmp(set->tenants[0].risk.time_zone, "Etc/GMT+5") == 0,
           "thresholds 1/1000, Etc/GMT+5, ttl 500ms: valid");
    gd_policy_set_free(set);

    /* limits.concurrency: the bulkhead queue */
    n = load_one(dir,
                 "{\"tenant\": \"a\", \"limits\": {\"concurrency\": "
                 "{\"max\": 2}}}",
                 &errs, &set);
    TAP_OK(set != NULL && n == 0 && set->tenants[0].concurrency == 2 &&
               set->tenants[0].concurrency_queue == 0 &&
               set->tenants[0].concurrency_queue_timeout_ms == 1000,
           "concurrency: no queue by default, queue_timeout 1s");
    gd_policy_set_free(set);

    n = load_one(dir,
                 "{\"tenant\": \"a\", \"limits\": {\"concurrency\": "
                 "{\"max\": 2, \"queue\": 10, \"queue_timeout\": "
                 "\"250ms\"}}}",
                 &errs, &set);
    TAP_OK(set != NULL && n == 0 && set->tenants[0].concurrency_queue == 10 &&
               set->tenants[0].concurrency_queue_timeout_ms == 250,
           "concurrency: queue 10, queue_timeout 250ms");
    gd_policy_set_free(set);

    n = load_one(dir,
                 "{\"tenant\": \"a\", \"limits\": {\"concurrency\": "
                 "{\"max\": 2, \"queue\": -1, \"queue_timeout\": "
                 "\"2h\"}}}",
                 &errs, &set);
    TAP_OK(set == NULL && n == 2 &&
               has_error(&errs, "/limits/concurrency/queue: must be from 0") &&
               has_error(&errs, "/limits/concurrency/queue_timeout: must be a "
                                "duration from"),
           "concurrency: a negative queue, a queue_timeout over 1h");
    gd_errors_free(&errs);

    n = load_one(dir,
                 "{\"tenant\": \"a\", \"risk\": {\"thresholds\": "
                 "{\"step_up\": 1, \"deny\": 2}, \"time_zone\": \"/etc/x\", "
                 "\"signals\": [{\"id\": \"w\", \"weight\": 1, \"when\": "
                 "{\"claim\": {\"name\": \"n\", \"lacks\": \"\"}}}]}}",
                 &errs, &set);
    TAP_OK(set == NULL && n == 2 &&
               has_error(&errs, "/risk/time_zone: must be a time zone") &&
               has_error(&errs, "/risk/signals/0/when/claim/lacks: must be"),
           "a time zone that is a path, an empty claim value");
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

    {
        /* a top-level member's value as written (guardd's PostgreSQL sink) */
        const char *rec = "{\"a\":{\"signals\":1},\"sign\\u0061ls\": {\"x\": "
                          "[1.50, \"}\"]} ,\"t\":2.0e1,\"t\":null}";
        size_t b = 0, e = 0;
        int k = gd_jsonloc_member(rec, strlen(rec), "signals", &b, &e);
        const char *want = "{\"x\": [1.50, \"}\"]}";
        TAP_OK(k == 1 && e - b == strlen(want) &&
                   memcmp(rec + b, want, e - b) == 0,
               "a top-level member, its key escaped: %d, %.*s", k, (int)(e - b),
               rec + b);
        k = gd_jsonloc_member(rec, strlen(rec), "t", &b, &e);
        TAP_OK(k == 2 && e - b == 4 && memcmp(rec + b, "null", 4) == 0,
               "a member twice: counted, the last one's value: %d", k);
        TAP_OK(gd_jsonloc_member(rec, strlen(rec), "x", &b, &e) == 0 &&
                   gd_jsonloc_member("[1]", 3, "x", &b, &e) == 0,
               "a nested member, not an object: none");
    }

    /* an unknown member: the nearest known member of that object */
    const char *typo =
        "{\"tenant\": \"a\", \"limits\": {\"rate\": [{\"name\": "
        "\"r\", \"requests\": 1, \"period\": \"1s\", \"burts\": 2, "
        "\"zzz\": 1}]}, \"shadwo\": true}";
    gd_policy_t pt;
    json_t *tdoc =
        gd_policy_parse("t.json", typo, strlen(typo), "/p", 0, &pt, &errs);
    TAP_OK(tdoc != NULL && errs.n == 3, "three unknown members: %zu errors",
           errs.n);
    TAP_OK(has_error(&errs, "/limits/rate/0/burts: unknown member \"burts\"; "
                            "did you mean \"burst\"?"),
           "\"burts\": did you mean \"burst\"?");
    TAP_OK(has_error(&errs, "/shadwo: unknown member \"shadwo\"; did you mean "
                            "\"shadow\"?"),
           "\"shadwo\" at the top: did you mean \"shadow\"?");
    int plain = 0;
    for (size_t i = 0; i < errs.n; i++) {
        plain +=
            strstr(errs.lines[i], "/zzz: unknown member \"zzz\"") != NULL &&
            strstr(errs.lines[i], "did you mean") == NULL;
    }
    TAP_OK(plain == 1, "\"zzz\": nothing near, no suggestion");
    gd_policy_free(&pt);
    json_decref(tdoc);
    gd_errors_free(&errs);

    /* a member name with a line break cannot forge an error line */
    const char *nl = "{\"tenant\": \"a\", \"x\\nf.json:1:1: / ok\\u007f\": 1}";
    gd_policy_t p;
    json_t *doc = gd_policy_parse("f.json", nl, strlen(nl), "/p", 0, &p, &errs);
    TAP_OK(doc != NULL && errs.n == 1 && strchr(errs.lines[0], '\n') == NULL &&
               strstr(errs.lines[0],
                      "/x\\x0af.json:1:1: ~1 ok\\x7f: unknown") != NULL,
           "control characters in an error are escaped: %s",
           errs.n ? errs.lines[0] : "none");
    gd_policy_free(&p);
    json_decref(doc);
    gd_errors_free(&errs);

    /* the breaker section: defaults, fields, did-you-mean */
    const char *bk =
        "{\"tenant\": \"a\", \"breaker\": {\"orders\": {\"window\": "
        "\"5s\", \"min_calls\": 4, \"failure_ratio\": 0.25, "
        "\"failure_statuses\": [500, 502], \"open_for\": \"1s\", "
        "\"probes\": 2, \"shadow\": true}, \"pay\": {\"probs\": 1}}}";
    gd_policy_t bp;
    json_t *bdoc =
        gd_policy_parse("b.json", bk, strlen(bk), "/p", 0, &bp, &errs);
    TAP_OK(bdoc != NULL && errs.n == 1 &&
               has_error(&errs, "/breaker/pay/probs: unknown member "
                                "\"probs\"; did you mean \"probes\"?"),
           "breaker: an unknown member, did you mean: %zu errors", errs.n);
    const gd_breaker_t *b = gd_breaker_find(&bp, "orders", 6);
    TAP_OK(b->window_ms == 5000 && b->min_calls == 4 &&
               b->failure_ratio == 0.25 && b->slow_ratio == 1.0 &&
               b->slow_ms == 1000 && b->nfailure_statuses == 2 &&
               b->failure_statuses[1] == 502 && b->open_for_ms == 1000 &&
               b->open_for_max_ms == 60000 && b->probes == 2 && b->shadow,
           "breaker: fields given and defaults");
    TAP_OK(gd_breaker_find(&bp, "other", 5) == &gd_breaker_defaults &&
               gd_breaker_defaults.min_calls == 20 &&
               gd_breaker_defaults.open_for_ms == 5000,
           "breaker: a name not listed has the defaults");
    gd_policy_free(&bp);
    json_decref(bdoc);
    gd_errors_free(&errs);

    const char *bbad = "{\"tenant\": \"a\", \"breaker\": {\"x\": "
                       "{\"failure_ratio\": 2, \"open_for\": \"10s\", "
                       "\"open_for_max\": \"5s\"}}}";
    bdoc = gd_policy_parse("b.json", bbad, strlen(bbad), "/p", 0, &bp, &errs);
    TAP_OK(errs.n == 2 && has_error(&errs, "/breaker/x/failure_ratio:") &&
               has_error(&errs, "/breaker/x/open_for_max:"),
           "breaker: a ratio over 1 and open_for_max < open_for refused");
    gd_policy_free(&bp);
    json_decref(bdoc);
    gd_errors_free(&errs);

    return tap_done();
}
