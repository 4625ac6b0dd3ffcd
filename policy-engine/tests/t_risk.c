/*
 * Unit tests for gd_risk: every condition matching and not matching, the
 * sum of weights, both thresholds at their edges, shadow signals and
 * shadow sections, the state's windows (requests, refusals, client IPs),
 * its bounds (LRU of subjects, capped rings and IP lists), time of day
 * with midnight-wrapping hours, determinism, the time zone helper, and
 * the time zone offsets computed at load and refreshed across DST.
 */
#include "gd_policy.h"
#include "gd_risk.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *ACME =
    "{\"tenant\": \"acme\", \"risk\": {\n"
    "  \"thresholds\": {\"step_up\": 40, \"deny\": 70},\n"
    "  \"ttl\": \"30s\", \"time_zone\": \"Europe/Paris\",\n"
    "  \"signals\": [\n"
    "    {\"id\": \"sensitive-route\", \"weight\": 30,\n"
    "     \"when\": {\"route_sensitive\": true}},\n"
    "    {\"id\": \"delete\", \"weight\": 20,\n"
    "     \"when\": {\"method\": [\"DELETE\", \"PATCH\"]}},\n"
    "    {\"id\": \"big-body\", \"weight\": 15,\n"
    "     \"when\": {\"body_size_over\": 1048576}},\n"
    "    {\"id\": \"no-admin-role\", \"weight\": 25,\n"
    "     \"when\": {\"claim\": {\"name\": \"roles\", \"lacks\": "
    "\"admin\"}}},\n"
    "    {\"id\": \"contractor\", \"weight\": 5,\n"
    "     \"when\": {\"claim\": {\"name\": \"employment\", \"equals\": "
    "\"contractor\"}}},\n"
    "    {\"id\": \"burst\", \"weight\": 20,\n"
    "     \"when\": {\"subject_rate_over\": {\"requests\": 3, \"window\": "
    "\"10s\"}}},\n"
    "    {\"id\": \"refused-before\", \"weight\": 30,\n"
    "     \"when\": {\"subject_refusals_over\": {\"count\": 2, \"window\": "
    "\"15m\"}}},\n"
    "    {\"id\": \"new-ip\", \"weight\": 10,\n"
    "     \"when\": {\"new_client_ip\": {\"window\": \"24h\"}}},\n"
    "    {\"id\": \"off-hours\", \"weight\": 15,\n"
    "     \"when\": {\"outside_hours\": {\"from\": \"07:00\", \"to\": "
    "\"20:00\"}}},\n"
    "    {\"id\": \"inline\", \"weight\": 1,\n"
    "     \"when\": {\"inline_score_over\": 50}},\n"
    "    {\"id\": \"options\", \"weight\": 50, \"shadow\": true,\n"
    "     \"when\": {\"method\": [\"OPTIONS\"]}}\n"
    "  ]}}\n";

/* weights 39, 1 and 30 against thresholds 40 and 70: both edges */
static const char *EDGES =
    "{\"tenant\": \"edges\", \"risk\": {\n"
    "  \"thresholds\": {\"step_up\": 40, \"deny\": 70},\n"
    "  \"signals\": [\n"
    "    {\"id\": \"get\", \"weight\": 39, \"when\": {\"method\": "
    "[\"GET\"]}},\n"
    "    {\"id\": \"sensitive\", \"weight\": 1, \"when\": "
    "{\"route_sensitive\": true}},\n"
    "    {\"id\": \"body\", \"weight\": 30, \"when\": {\"body_size_over\": "
    "0}},\n"
    "    {\"id\": \"public\", \"weight\": 1000, \"shadow\": true, \"when\": "
    "{\"route_sensitive\": false}}\n"
    "  ]}}\n";

/* day: outside 22:00-06:00, which wraps midnight */
static const char *HOURS =
    "{\"tenant\": \"hours\", \"risk\": {\n"
    "  \"thresholds\": {\"step_up\": 1, \"deny\": 2},\n"
    "  \"signals\": [\n"
    "    {\"id\": \"off-hours\", \"weight\": 1,\n"
    "     \"when\": {\"outside_hours\": {\"from\": \"07:00\", \"to\": "
    "\"20:00\"}}},\n"
    "    {\"id\": \"day\", \"weight\": 1,\n"
    "     \"when\": {\"outside_hours\": {\"from\": \"22:00\", \"to\": "
    "\"06:00\"}}}\n"
    "  ]}}\n";

static const char *PLAIN = "{\"tenant\": \"plain\"}\n";

static char dir[] = "/tmp/gd-risk-XXXXXX";

static void put(const char *name, const char *text)
{
    char path[256];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void rm(const char *name)
{
    char path[256];

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    unlink(path);
}

static const gd_risk_match_t *matched(const gd_risk_result_t *r, const char *id)
{
    for (size_t i = 0; i < r->nmatches; i++) {
        if (strcmp(r->matches[i].id, id) == 0) {
            return &r->matches[i];
        }
    }
    return NULL;
}

/* exactly these signals matched, in this order ("a,b"; "" for none) */
static int only(const gd_risk_result_t *r, const char *ids)
{
    char buf[512] = "";
    size_t len = 0;

    for (size_t i = 0; i < r->nmatches; i++) {
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%s",
                                i ? "," : "", r->matches[i].id);
    }
    if (strcmp(buf, ids) != 0) {
        printf("# matched: \"%s\", expected \"%s\"\n", buf, ids);
        return 0;
    }
    return 1;
}

#define NOW 1700000000 /* 2023-11-14 22:13:20 UTC */

static json_t *claims;

/* a request that matches no signal of ACME, with st's history of alice */
static gd_risk_request_t base(void)
{
    gd_risk_request_t req = {
        .tenant = "acme",
        .subject = "alice",
        .method = "GET",
        .route = "/api/orders",
        .route_sensitive = 0,
        .client_ip = "10.0.0.1",
        .body_size = 0,
        .inline_score = -1,
        .claims = claims,
        .now = NOW,
        .local_minutes = 12 * 60,
    };
    return req;
}

static gd_risk_result_t score(const gd_policy_t *p, const gd_risk_state_t *st,
                              const gd_risk_request_t *req)
{
    gd_risk_result_t r;

    if (gd_risk_score(p, st, req, &r) != 0) {
        printf("# gd_risk_score failed\n");
    }
    return r;
}

/* Europe/Paris: CET to CEST at 2026-03-29 01:00 UTC, back at
   2026-10-25 01:00 UTC, CEST again at 2027-03-28 01:00 UTC */
#define SPRING 1774746000
#define AUTUMN 1792890000
#define SPRING2 1806195600

/* the offsets computed at policy load, and refreshed across DST */
static void zone_offsets(void)
{
    char paris[] = "Europe/Paris", kolkata[] = "Asia/Kolkata",
         nowhere[] = "Nowhere/Nothing";
    gd_policy_t pol[5];
    gd_policy_set_t zset = {.tenants = pol, .ntenants = 4, .fallback = NULL};
    int m = -1;

    memset(pol, 0, sizeof(pol));
    for (size_t i = 0; i < 5; i++) {
        pol[i].has_risk = 1;
    }
    pol[0].risk.time_zone = paris;
    pol[1].risk.time_zone = paris;
    pol[2].risk.time_zone = kolkata;
    pol[3].risk.time_zone = nowhere;
    zset.fallback = &pol[4]; /* no time_zone: UTC */

    TAP_OK(gd_risk_zone_minutes(&pol[4], NOW, &m) == 0 && m == 22 * 60 + 13,
           "zone minutes, no time_zone: UTC (22:13)");

    if (access("/usr/share/zoneinfo/Europe/Paris", R_OK) != 0 ||
        access("/usr/share/zoneinfo/Asia/Kolkata", R_OK) != 0 ||
        getenv("TZDIR") != NULL) {
        for (int i = 0; i < 12; i++) {
            TAP_OK(1, "# SKIP no zone database");
        }
        return;
    }

    setenv("TZ", "UTC0", 1);
    TAP_OK(gd_risk_zones_load(&zset, SPRING - 3600) == 0 && pol[0].risk.zone &&
               pol[1].risk.zone && pol[2].risk.zone && pol[3].risk.zone &&
               pol[4].risk.zone == NULL,
           "zones load: one per policy with a time_zone");
    gd_risk_zone_t *z = pol[0].risk.zone;
    TAP_OK(z->known && z->offset == 3600 && z->from == SPRING - 3600 &&
               z->until == SPRING,
           "Europe/Paris an hour before spring: +1h, until the transition "
           "to the second (until=%lld)",
           (long long)z->until);
    TAP_OK(pol[1].risk.zone->offset == 3600 &&
               pol[1].risk.zone->until == SPRING,
           "a second policy in the same zone: the same span");
    TAP_OK(pol[2].risk.zone->known && pol[2].risk.zone->offset == 19800 &&
               pol[2].risk.zone->until > SPRING + 300 * 86400,
           "Asia/Kolkata: +5:30, no transition within the year");
    TAP_OK(!pol[3].risk.zone->known &&
               gd_risk_zone_minutes(&pol[3], SPRING, &m) == -1,
           "an unknown zone: -1 (the scorer takes UTC)");
    TAP_OK(strcmp(getenv("TZ"), "UTC0") == 0, "TZ is restored after load");

    /* no zone database is read per decision within the span */
    setenv("TZDIR", "/nonexistent", 1);
    TAP_OK(gd_risk_zone_minutes(&pol[0], SPRING - 1, &m) == 0 &&
               m == 1 * 60 + 59 && z->until == SPRING,
           "one second before the transition: 01:59 CET, no zone file read");
    TAP_OK(gd_risk_zone_minutes(&pol[2], SPRING, &m) == 0 && m == 6 * 60 + 30,
           "Asia/Kolkata at 01:00 UTC: 06:30, no zone file read");
    unsetenv("TZDIR");

    TAP_OK(gd_risk_zone_minutes(&pol[0], SPRING, &m) == 0 && m == 3 * 60 &&
               z->offset == 7200 && z->from == SPRING && z->until == AUTUMN,
           "at the transition: 03:00 CEST, refreshed until autumn");
    TAP_OK(gd_risk_zone_minutes(&pol[0], AUTUMN, &m) == 0 && m == 2 * 60 &&
               z->offset == 3600 && z->until == SPRING2,
           "autumn: 02:00 CET again, until next spring");
    TAP_OK(gd_risk_zone_minutes(&pol[0], 1690000000, &m) == 0 &&
               m == 6 * 60 + 26 && z->offset == 7200,
           "the clock went back (July 2023): recomputed, 06:26 CEST");
    TAP_OK(strcmp(getenv("TZ"), "UTC0") == 0, "TZ is restored after refresh");
    unsetenv("TZ");

    for (size_t i = 0; i < 5; i++) {
        free(pol[i].risk.zone);
    }
}

int main(void)
{
    gd_errors_t errs = {0};
    gd_risk_result_t r;
    gd_risk_request_t req;
    char line[1024];

    if (mkdtemp(dir) == NULL) {
        TAP_OK(0, "a scratch directory");
        return tap_done();
    }
    put("acme.json", ACME);
    put("edges.json", EDGES);
    put("plain.json", PLAIN);
    put("hours.json", HOURS);

    gd_policy_set_t *set = gd_policy_set_load(dir, &errs);
    for (size_t i = 0; i < errs.n; i++) {
        printf("# %s\n", errs.lines[i]);
    }
    TAP_OK(set != NULL && errs.n == 0, "the policies load");
    rm("acme.json");
    rm("edges.json");
    rm("plain.json");
    rm("hours.json");
    rmdir(dir);
    if (set == NULL) {
        gd_errors_free(&errs);
        return tap_done();
    }

    const gd_policy_t *acme = gd_policy_find(set, "acme", 4);
    const gd_policy_t *edges = gd_policy_find(set, "edges", 5);
    const gd_policy_t *plain = gd_policy_find(set, "plain", 5);
    const gd_policy_t *hours_p = gd_policy_find(set, "hours", 5);

    claims = json_pack("{s:[s,s], s:s}", "roles", "user", "admin", "employment",
                       "staff");

    gd_risk_state_t *st = gd_risk_state_new(1000);
    TAP_OK(st != NULL, "a state for 1000 subjects");
    TAP_OK(gd_risk_state_new(0) == NULL, "a state for no subject: NULL");
    gd_risk_observe_request(st, "acme", "alice", "10.0.0.1", NOW - 100);

    /* the baseline */
    req = base();
    r = score(acme, st, &req);
    TAP_OK(only(&r, "") && r.score == 0 && r.decision == GD_RISK_ALLOW &&
               r.step_up == 40 && r.deny == 70 && r.ttl_ms == 30000 &&
               !r.shadow && r.local_minutes == 720,
           "the baseline matches nothing: allow, thresholds 40/70, ttl 30s");

    /* route_sensitive */
    req = base();
    req.route_sensitive = 1;
    r = score(acme, st, &req);
    TAP_OK(only(&r, "sensitive-route") && r.score == 30 &&
               r.matches[0].weight == 30 && !r.matches[0].shadow,
           "route_sensitive: a sensitive route matches, weight 30");
    r = score(edges, st, &req);
    TAP_OK(!matched(&r, "public"), "route_sensitive false: not on one");
    req.route_sensitive = 0;
    r = score(edges, st, &req);
    TAP_OK(matched(&r, "public") != NULL,
           "route_sensitive false: matches a route that is not sensitive");

    /* method */
    req = base();
    req.method = "DELETE";
    r = score(acme, st, &req);
    TAP_OK(only(&r, "delete") && r.score == 20, "method: DELETE matches");
    req.method = "PATCH";
    r = score(acme, st, &req);
    TAP_OK(only(&r, "delete"), "method: PATCH matches");
    req.method = "delete";
    r = score(acme, st, &req);
    TAP_OK(only(&r, ""), "method: compared byte for byte (delete)");
    req.method = "DELETEX";
    r = score(acme, st, &req);
    TAP_OK(only(&r, ""), "method: compared whole (DELETEX)");
    req.method = NULL;
    r = score(acme, st, &req);
    TAP_OK(only(&r, ""), "method: none, no match");

    /* body_size_over */
    req = base();
    req.body_size = 1048576;
    r = score(acme, st, &req);
    TAP_OK(only(&r, ""), "body_size_over 1048576: 1048576 bytes do not");
    req.body_size = 1048577;
    r = score(acme, st, &req);
    TAP_OK(only(&r, "big-body") && r.score == 15,
           "body_size_over 1048576: 1048577 bytes do");

    /* claim lacks */
    json_t *c =
        json_pack("{s:[s], s:s}", "roles", "user", "employment", "staff");
    req = base();
    req.claims = c;
    r = score(acme, st, &req);
    TAP_OK(only(&r, "no-admin-role") && r.score == 25,
           "claim lacks: roles [user] lacks admin");
    json_object_set_new(c, "roles", json_string("admin"));
    r = score(acme, st, &req);
    TAP_OK(only(&r, ""), "claim lacks: roles \"admin\" (a string) has it");
    json_object_set_new(c, "roles", json_string("administrator"));
    r = score(acme, st, &req);
    TAP_OK(only(&r, "no-admin-role"),
           "claim lacks: \"administrator\" is not \"admin\"");
    json_object_set_new(c, "roles", json_pack("[i,s]", 1, "admin"));
    r = score(acme, st, &req);
    TAP_OK(only(&r, ""), "claim lacks: an array holding admin has it");
    json_object_set_new(c, "roles", json_true());
    r = score(acme, st, &req);
    TAP_OK(only(&r, "no-admin-role"), "claim lacks: a boolean lacks it");
    json_object_del(c, "roles");
    r = score(acme, st, &req);
    TAP_OK(only(&r, "no-admin-role"), "claim lacks: an absent claim lacks");
    req.claims = NULL;
    r = score(acme, st, &req);
    TAP_OK(only(&r, "no-admin-role"), "claim lacks: no claims at all lack");

    /* claim equals */
    json_object_set_new(c, "roles", json_pack("[s]", "admin"));
    json_object_set_new(c, "employment", json_string("contractor"));
    req.claims = c;
    r = score(acme, st, &req);
    TAP_OK(only(&r, "contractor") && r.score == 5,
           "claim equals: employment \"contractor\"");
    json_object_set_new(c, "employment", json_pack("[s]", "contractor"));
    r = score(acme, st, &req);
    TAP_OK(only(&r, ""), "claim equals: an array is not equal");
    json_object_set_new(c, "employment", json_string("contractors"));
    r = score(acme, st, &req);
    TAP_OK(only(&r, ""), "claim equals: compared whole");
    json_object_del(c, "employment");
    r = score(acme, st, &req);
    TAP_OK(only(&r, ""), "claim equals: an absent claim is not equal");
    json_decref(c);

    /* subject_rate_over 3 in 10s, this request included */
    gd_risk_state_t *s2 = gd_risk_state_new(10);
    gd_risk_observe_request(s2, "acme", "alice", "10.0.0.1", NOW - 100);
    gd_risk_observe_request(s2, "acme", "alice", "10.0.0.1", NOW - 10);
    gd_risk_observe_request(s2, "acme", "alice", "10.0.0.1", NOW - 9);
    gd_risk_observe_request(s2, "acme", "alice", "10.0.0.1", NOW);
    req = base();
    r = score(acme, s2, &req);
    TAP_OK(only(&r, ""),
           "subject_rate_over 3/10s: 2 in the window + this one = 3, no");
    gd_risk_observe_request(s2, "acme", "alice", "10.0.0.1", NOW - 1);
    r = score(acme, s2, &req);
    TAP_OK(only(&r, "burst") && r.score == 20,
           "subject_rate_over 3/10s: 3 in the window + this one = 4, yes");
    req.now = NOW + 1;
    r = score(acme, s2, &req);
    TAP_OK(only(&r, ""), "subject_rate_over: a second later NOW-9 is out");
    req = base();
    req.tenant = "other";
    r = score(acme, s2, &req);
    TAP_OK(!matched(&r, "burst"),
           "subject_rate_over: the same subject of another tenant is "
           "another subject");
    req = base();
    req.subject = NULL;
    r = score(acme, s2, &req);
    TAP_OK(only(&r, ""), "subject_rate_over: no subject, no match");

    /* subject_refusals_over 2 in 15m (rita: a known IP, no burst) */
    gd_risk_observe_request(s2, "acme", "rita", "10.0.0.1", NOW - 1000);
    gd_risk_observe_refusal(s2, "acme", "rita", NOW - 900);
    gd_risk_observe_refusal(s2, "acme", "rita", NOW - 899);
    gd_risk_observe_refusal(s2, "acme", "rita", NOW - 10);
    req = base();
    req.subject = "rita";
    r = score(acme, s2, &req);
    TAP_OK(only(&r, ""),
           "subject_refusals_over 2/15m: 2 in the window (NOW-900 is out)");
    gd_risk_observe_refusal(s2, "acme", "rita", NOW);
    r = score(acme, s2, &req);
    TAP_OK(only(&r, "refused-before") && r.score == 30,
           "subject_refusals_over 2/15m: 3 in the window");
    req.now = NOW + 1;
    r = score(acme, s2, &req);
    TAP_OK(only(&r, ""),
           "subject_refusals_over: a second later NOW-899 is out");
    req.now = NOW;
    r = score(acme, NULL, &req);
    TAP_OK(!matched(&r, "refused-before"),
           "subject_refusals_over: no state, no history");

    /* new_client_ip in 24h */
    req = base();
    req.client_ip = "10.0.0.2";
    r = score(acme, st, &req);
    TAP_OK(only(&r, "new-ip") && r.score == 10,
           "new_client_ip: another IP is new");
    req.now = NOW - 100 + 86399;
    req.client_ip = "10.0.0.1";
    r = score(acme, st, &req);
    TAP_OK(only(&r, ""), "new_client_ip: seen 86399 s ago, not new");
    req.now = NOW - 100 + 86400;
    r = score(acme, st, &req);
    TAP_OK(only(&r, "new-ip"),
           "new_client_ip: seen 86400 s ago (24h: the window expired), new");
    gd_risk_observe_request(st, "acme", "alice", "10.0.0.1", NOW + 86000);
    r = score(acme, st, &req);
    TAP_OK(only(&r, ""), "new_client_ip: seen again, not new");
    req = base();
    req.subject = "bob";
    r = score(acme, st, &req);
    TAP_OK(only(&r, "new-ip"), "new_client_ip: a subject never seen: new");
    req.client_ip = NULL;
    r = score(acme, st, &req);
    TAP_OK(only(&r, ""), "new_client_ip: no client IP, no match");
    req.client_ip = "10.0.0.1";
    req.subject = "";
    r = score(acme, st, &req);
    TAP_OK(only(&r, ""), "new_client_ip: no subject, no match");

    /* outside_hours 07:00-20:00, and 22:00-06:00 (wraps midnight) */
    static const struct {
        int minutes;
        const char *ids;
    } hours[] = {
        {0, "off-hours"},
        {5 * 60 + 59, "off-hours"},
        {6 * 60, "off-hours,day"},
        {6 * 60 + 59, "off-hours,day"},
        {7 * 60, "day"},
        {19 * 60 + 59, "day"},
        {20 * 60, "off-hours,day"},
        {21 * 60 + 59, "off-hours,day"},
        {22 * 60, "off-hours"},
        {23 * 60 + 59, "off-hours"},
    };
    for (size_t i = 0; i < sizeof(hours) / sizeof(hours[0]); i++) {
        req = base();
        req.local_minutes = hours[i].minutes;
        r = score(hours_p, st, &req);
        TAP_OK(only(&r, hours[i].ids) && r.local_minutes == hours[i].minutes,
               "outside_hours at %02d:%02d: %s", hours[i].minutes / 60,
               hours[i].minutes % 60, hours[i].ids);
    }
    req = base();
    req.local_minutes = -1;
    r = score(acme, st, &req);
    TAP_OK(r.local_minutes == 22 * 60 + 13 && only(&r, "off-hours"),
           "local_minutes -1: the time of day of now in UTC (22:13)");
    req.local_minutes = 1440;
    req.now = -60;
    r = score(acme, st, &req);
    TAP_OK(r.local_minutes == 23 * 60 + 59,
           "out of range: UTC, before 1970 too (23:59)");

    /* inline_score_over 50 */
    req = base();
    req.inline_score = 50;
    r = score(acme, st, &req);
    TAP_OK(only(&r, ""), "inline_score_over 50: 50 does not");
    req.inline_score = 51;
    r = score(acme, st, &req);
    TAP_OK(only(&r, "inline") && r.score == 1, "inline_score_over 50: 51");
    req.inline_score = -1;
    r = score(acme, st, &req);
    TAP_OK(only(&r, ""), "inline_score_over: no inline score, no match");

    /* shadow signals */
    req = base();
    req.method = "OPTIONS";
    r = score(acme, st, &req);
    TAP_OK(only(&r, "options") && r.matches[0].shadow &&
               r.matches[0].weight == 50 && r.score == 0 &&
               r.shadow_score == 50 && r.decision == GD_RISK_ALLOW,
           "a shadow signal is listed, adds nothing: allow");

    /* sums, in policy order */
    json_t *c2 = json_pack("{s:[s]}", "roles", "user");
    req = base();
    req.route_sensitive = 1;
    req.method = "DELETE";
    req.body_size = 2000000;
    req.claims = c2;
    req.client_ip = "192.0.2.7";
    req.local_minutes = 23 * 60;
    req.inline_score = 99;
    r = score(acme, st, &req);
    TAP_OK(only(&r, "sensitive-route,delete,big-body,no-admin-role,new-ip,"
                    "off-hours,inline") &&
               r.score == 30 + 20 + 15 + 25 + 10 + 15 + 1 &&
               r.decision == GD_RISK_DENY,
           "seven signals: score 116, deny");
    gd_risk_explain(&r, line, sizeof(line));
    TAP_OK(strcmp(line, "decision=deny score=116 step_up=40 deny=70 "
                        "mode=enforce signals=sensitive-route:30,delete:20,"
                        "big-body:15,no-admin-role:25,new-ip:10,off-hours:"
                        "15,inline:1") == 0,
           "explained: %s", line);

    /* determinism: the same inputs, the same result; the state unchanged */
    gd_risk_result_t r2;
    size_t bytes = gd_risk_state_bytes(st);
    for (int i = 0; i < 3; i++) {
        gd_risk_score(acme, st, &req, &r2);
    }
    TAP_OK(memcmp(&r, &r2, sizeof(r)) == 0 && gd_risk_state_bytes(st) == bytes,
           "the same inputs give the same result; scoring changes no state");
    json_decref(c2);

    /* thresholds at both edges */
    req = base();
    req.route_sensitive = 1; /* "public" (shadow, 1000) does not match */
    req.method = "HEAD";
    r = score(edges, st, &req);
    TAP_OK(r.score == 1 && r.decision == GD_RISK_ALLOW, "score 1: allow");
    req.method = "GET";
    req.route_sensitive = 0;
    r = score(edges, st, &req);
    TAP_OK(r.score == 39 && r.shadow_score == 1000 &&
               r.decision == GD_RISK_ALLOW,
           "score 39 (and 1000 in shadow): allow");
    req.route_sensitive = 1;
    r = score(edges, st, &req);
    TAP_OK(r.score == 40 && r.decision == GD_RISK_STEP_UP,
           "score 40 = step_up: step_up");
    req.route_sensitive = 0;
    req.body_size = 1;
    r = score(edges, st, &req);
    TAP_OK(r.score == 69 && r.decision == GD_RISK_STEP_UP, "score 69: step_up");
    req.route_sensitive = 1;
    r = score(edges, st, &req);
    TAP_OK(r.score == 70 && r.decision == GD_RISK_DENY,
           "score 70 = deny: deny");
    gd_risk_explain(&r, line, sizeof(line));
    TAP_OK(strcmp(line, "decision=deny score=70 step_up=40 deny=70 "
                        "mode=enforce signals=get:39,sensitive:1,body:30") == 0,
           "explained: %s", line);

    /* shadow sections */
    gd_policy_t shadowed = *edges;
    shadowed.risk.shadow = 1;
    r = score(&shadowed, st, &req);
    TAP_OK(r.shadow && r.decision == GD_RISK_DENY && r.score == 70,
           "risk.shadow: the decision is computed, flagged shadow");
    gd_risk_explain(&r, line, sizeof(line));
    TAP_OK(strstr(line, " mode=shadow ") != NULL, "explained: %s", line);
    shadowed = *edges;
    shadowed.shadow = 1;
    r = score(&shadowed, st, &req);
    TAP_OK(r.shadow, "a tenant in shadow mode: flagged shadow");

    req = base();
    req.method = "OPTIONS";
    r = score(edges, st, &req);
    gd_risk_explain(&r, line, sizeof(line));
    TAP_OK(strcmp(line, "decision=allow score=0 step_up=40 deny=70 "
                        "mode=enforce signals=public:1000:shadow") == 0,
           "explained: %s", line);
    char tiny[16];
    int n = gd_risk_explain(&r, tiny, sizeof(tiny));
    TAP_OK(n == (int)strlen(line) && strlen(tiny) == sizeof(tiny) - 1 &&
               strncmp(tiny, line, sizeof(tiny) - 1) == 0,
           "explain: cut to the buffer, returns the whole length (%d)", n);

    /* no risk section, bad arguments */
    req = base();
    TAP_OK(gd_risk_score(plain, st, &req, &r) == -1 && r.score == 0 &&
               r.decision == GD_RISK_ALLOW && r.nmatches == 0,
           "a policy without risk: -1, allow");
    TAP_OK(gd_risk_score(NULL, st, &req, &r) == -1 &&
               gd_risk_score(acme, st, NULL, &r) == -1 &&
               gd_risk_score(acme, st, &req, NULL) == -1,
           "NULL arguments: -1");
    TAP_OK(strcmp(gd_risk_decision_name(GD_RISK_ALLOW), "allow") == 0 &&
               strcmp(gd_risk_decision_name(GD_RISK_STEP_UP), "step_up") == 0 &&
               strcmp(gd_risk_decision_name(GD_RISK_DENY), "deny") == 0,
           "decision names");

    /* the state's bounds: one subject */
    gd_risk_state_t *s3 = gd_risk_state_new(4);
    for (int i = 0; i < GD_RISK_STATE_EVENTS; i++) {
        gd_risk_observe_request(s3, "acme", "carol", "10.0.0.1", NOW);
        gd_risk_observe_refusal(s3, "acme", "carol", NOW);
    }
    bytes = gd_risk_state_bytes(s3);
    for (int i = 0; i < 5000; i++) {
        gd_risk_observe_request(s3, "acme", "carol", "10.0.0.1", NOW);
        gd_risk_observe_refusal(s3, "acme", "carol", NOW);
    }
    TAP_OK(gd_risk_state_bytes(s3) == bytes,
           "past %d requests and refusals a subject grows no more (%zu "
           "bytes)",
           GD_RISK_STATE_EVENTS, bytes);

    gd_policy_t capped = *edges;
    gd_risk_signal_t rate = {.id = "rate",
                             .weight = 1,
                             .cond = GD_RISK_SUBJECT_RATE_OVER,
                             .over = GD_RISK_STATE_EVENTS,
                             .window_ms = 10000};
    capped.risk.signals = &rate;
    capped.risk.nsignals = 1;
    req = base();
    req.subject = "carol";
    r = score(&capped, s3, &req);
    TAP_OK(only(&r, "rate"), "the last %d requests are kept: %d + 1 > %d",
           GD_RISK_STATE_EVENTS, GD_RISK_STATE_EVENTS, GD_RISK_STATE_EVENTS);
    rate.over = GD_RISK_STATE_EVENTS + 1;
    r = score(&capped, s3, &req);
    TAP_OK(only(&r, ""), "and no more");

    char ip[32];
    for (int i = 0; i < GD_RISK_STATE_EVENTS; i++) { /* a full ring */
        gd_risk_observe_request(s3, "acme", "dave", "10.9.9.9", NOW - 1000);
    }
    for (int i = 0; i < 200; i++) {
        snprintf(ip, sizeof(ip), "10.1.0.%d", i);
        gd_risk_observe_request(s3, "acme", "dave", ip, NOW + i);
    }
    req = base();
    req.subject = "dave";
    req.now = NOW + 200;
    req.client_ip = "10.1.0.199";
    r = score(acme, s3, &req);
    TAP_OK(!matched(&r, "new-ip"), "200 IPs: the last one is known");
    req.client_ip = "10.1.0.136";
    r = score(acme, s3, &req);
    TAP_OK(!matched(&r, "new-ip"), "200 IPs: the 64th from the end too");
    req.client_ip = "10.1.0.135";
    r = score(acme, s3, &req);
    TAP_OK(matched(&r, "new-ip") != NULL,
           "200 IPs: the 65th from the end was replaced: new again");
    bytes = gd_risk_state_bytes(s3);
    for (int i = 0; i < 1000; i++) {
        snprintf(ip, sizeof(ip), "10.2.%d.%d", i / 256, i % 256);
        gd_risk_observe_request(s3, "acme", "dave", ip, NOW + 1000 + i);
    }
    TAP_OK(gd_risk_state_bytes(s3) == bytes,
           "the IP list grows no more past %d", GD_RISK_STATE_IPS);

    char longip[200];
    memset(longip, '1', sizeof(longip) - 1);
    longip[sizeof(longip) - 1] = '\0';
    gd_risk_observe_request(s3, "acme", "erin", longip, NOW);
    req = base();
    req.subject = "erin";
    req.client_ip = longip;
    r = score(acme, s3, &req);
    TAP_OK(!matched(&r, "new-ip"), "a long IP: kept by its first %d bytes",
           GD_RISK_STATE_IP_LEN - 1);

    char longsub[GD_RISK_STATE_KEY_MAX + 10];
    memset(longsub, 's', sizeof(longsub) - 1);
    longsub[sizeof(longsub) - 1] = '\0';
    TAP_OK(gd_risk_observe_request(s3, "acme", longsub, "10.0.0.1", NOW) ==
                   -1 &&
               gd_risk_observe_request(s3, "acme", "", "10.0.0.1", NOW) == -1 &&
               gd_risk_observe_refusal(s3, "acme", NULL, NOW) == -1,
           "a subject too long, empty or NULL is not recorded");
    req.subject = longsub;
    r = score(acme, s3, &req);
    TAP_OK(matched(&r, "new-ip") != NULL,
           "a subject too long reads as one without history");
    gd_risk_state_free(s3);

    /* the state's bounds: subjects, least recently observed out first */
    gd_risk_state_t *s4 = gd_risk_state_new(2);
    gd_risk_observe_request(s4, "acme", "a", "10.0.0.1", NOW);
    gd_risk_observe_request(s4, "acme", "b", "10.0.0.1", NOW);
    gd_risk_observe_refusal(s4, "acme", "a", NOW); /* a: most recent */
    gd_risk_observe_request(s4, "acme", "c", "10.0.0.1", NOW);
    req = base();
    req.subject = "a";
    r = score(acme, s4, &req);
    int a_kept = !matched(&r, "new-ip");
    req.subject = "b";
    r = score(acme, s4, &req);
    int b_gone = matched(&r, "new-ip") != NULL;
    TAP_OK(gd_risk_state_subjects(s4) == 2 && a_kept && b_gone,
           "max 2 subjects: a refusal keeps a, b is dropped for c");
    gd_risk_state_free(s4);

    gd_risk_state_t *s5 = gd_risk_state_new(100);
    size_t bound = gd_risk_state_bytes(s5) + 100 * GD_RISK_STATE_SUBJECT_MAX;
    size_t peak = 0, full = 0;
    char sub[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(sub, sizeof(sub), "user-%05d", i);
        gd_risk_observe_request(s5, "acme", sub, "10.0.0.1", NOW + i);
        gd_risk_observe_request(s5, "acme", sub, "10.0.0.2", NOW + i);
        gd_risk_observe_refusal(s5, "acme", sub, NOW + i);
        if (i == 99) {
            full = gd_risk_state_bytes(s5);
        }
        if (gd_risk_state_bytes(s5) > peak) {
            peak = gd_risk_state_bytes(s5);
        }
    }
    TAP_OK(gd_risk_state_subjects(s5) == 100,
           "20000 subjects into a state of 100: 100 held");
    TAP_OK(gd_risk_state_bytes(s5) == full && peak == full,
           "evictions give back what they take: %zu bytes for 100 subjects "
           "at the start and at the end",
           full);
    TAP_OK(peak <= bound, "memory stays bounded: at most %zu bytes of %zu",
           peak, bound);
    req = base();
    req.subject = "user-19900";
    req.now = NOW + 20000;
    r = score(acme, s5, &req);
    int recent_kept = !matched(&r, "new-ip");
    req.subject = "user-19899";
    r = score(acme, s5, &req);
    TAP_OK(recent_kept && matched(&r, "new-ip") != NULL,
           "the 100 most recent are held, the 101st is gone");
    gd_risk_state_free(s5);

    /* the time zone helper */
    int m = -1;
    TAP_OK(gd_risk_local_minutes(NULL, NOW, &m) == 0 && m == 22 * 60 + 13,
           "UTC (no zone): 22:13");
    TAP_OK(gd_risk_local_minutes("", -1, &m) == 0 && m == 23 * 60 + 59,
           "UTC, one second before 1970: 23:59");
    if (access("/usr/share/zoneinfo/Europe/Paris", R_OK) == 0 &&
        access("/usr/share/zoneinfo/Asia/Kolkata", R_OK) == 0 &&
        getenv("TZDIR") == NULL) {
        setenv("TZ", "UTC0", 1);
        TAP_OK(gd_risk_local_minutes("Europe/Paris", NOW, &m) == 0 &&
                   m == 23 * 60 + 13,
               "Europe/Paris in November (CET): 23:13");
        TAP_OK(gd_risk_local_minutes("Europe/Paris", 1690000000, &m) == 0 &&
                   m == 6 * 60 + 26,
               "Europe/Paris in July (CEST): 06:26");
        TAP_OK(gd_risk_local_minutes("Asia/Kolkata", NOW, &m) == 0 &&
                   m == 3 * 60 + 43,
               "Asia/Kolkata: 03:43, the next day");
        TAP_OK(strcmp(getenv("TZ"), "UTC0") == 0, "TZ is restored");
        unsetenv("TZ");
        TAP_OK(gd_risk_local_minutes("Europe/Paris", NOW, &m) == 0 &&
                   getenv("TZ") == NULL,
               "an unset TZ stays unset");
    } else {
        for (int i = 0; i < 5; i++) {
            TAP_OK(1, "# SKIP no zone database");
        }
    }
    TAP_OK(gd_risk_local_minutes("Nowhere/Nothing", NOW, &m) == -1,
           "an unknown zone: -1");
    TAP_OK(gd_risk_local_minutes("/etc/localtime", NOW, &m) == -1 &&
               gd_risk_local_minutes("../zoneinfo/UTC", NOW, &m) == -1,
           "a path is not a zone: -1");

    zone_offsets();

    gd_risk_state_free(st);
    gd_risk_state_free(s2);
    gd_risk_state_free(NULL);
    json_decref(claims);
    gd_policy_set_free(set);
    return tap_done();
}
