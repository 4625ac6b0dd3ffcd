/*
 * Unit tests for gd_audit_record: the record it makes is, byte for byte,
 * the one made before there was one builder: by the module (built again
 * at each cut, 512, 128, 32, 8, masked and serialized each time, until
 * it fits) and by guardd (json_pack, absent request text as null), for
 * long request text with secrets across each cut, UTF-8, and budgets
 * that each cut is the first to fit.
 */
#include "gd_audit.h"
#include "gd_audit_record.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ID "0190a3b2-7c4d-7e5f-8a6b-1c2d3e4f5a6b"
#define JWT                                                                    \
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."        \
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"

/* the module's json_set_text, without the escaping: cut when longer */
static int ref_set(json_t *rec, const char *key, const gd_audit_text_t *t,
                   size_t max)
{
    json_t *v = json_stringn(t->data, t->len);
    char *cut;
    size_t n;

    if (v == NULL) {
        return -1;
    }
    if (json_string_length(v) > max) {
        if (gd_audit_mask_cut(key, json_string_value(v), json_string_length(v),
                              max, &cut, &n) != 0) {
            json_decref(v);
            return -1;
        }
        json_decref(v);
        v = json_stringn(cut, n);
        free(cut);
        if (v == NULL) {
            return -1;
        }
    }
    return json_object_set_new(rec, key, v);
}

/* the module's record at one limit, as it was built */
static json_t *ref_module_record(const gd_audit_decision_t *d, size_t limit)
{
    json_t *rec, *rules;

    rec = json_pack("{s:s#, s:I, s:s, s:s#, s:s#, s:i, s:I}", "id", d->id.data,
                    (int)d->id.len, "ts_ms", (json_int_t)d->ts_ms, "outcome",
                    d->shadow ? "shadow_deny" : "deny", "stage", d->stage.data,
                    (int)d->stage.len, "reason", d->reason.data,
                    (int)d->reason.len, "status", d->status, "latency_ms",
                    (json_int_t)d->latency_ms);
    if (rec == NULL) {
        return NULL;
    }

    if ((d->tenant.data && ref_set(rec, "tenant", &d->tenant, limit) != 0) ||
        (d->subject.data && ref_set(rec, "subject", &d->subject, limit) != 0) ||
        ref_set(rec, "client_ip", &d->client_ip, 64) != 0 ||
        ref_set(rec, "method", &d->method, limit < 32 ? limit : 32) != 0 ||
        ref_set(rec, "route", &d->route, limit) != 0 ||
        ref_set(rec, "node", &d->node, 64) != 0 ||
        json_object_set_new(rec, "source", json_string("nginx")) != 0) {
        json_decref(rec);
        return NULL;
    }
    if (d->policy_version.data &&
        ref_set(rec, "policy_version", &d->policy_version, 64) != 0) {
        json_decref(rec);
        return NULL;
    }
    if (d->traceparent.data &&
        ref_set(rec, "traceparent", &d->traceparent, 64) != 0) {
        json_decref(rec);
        return NULL;
    }
    if (d->shadow_reason.data) {
        json_object_set_new(
            rec, "shadow_reason",
            json_stringn(d->shadow_reason.data, d->shadow_reason.len));
    }
    if (d->nrules) {
        rules = json_array();
        json_object_set_new(rec, "rules", rules);
        json_array_append_new(rules,
                              json_stringn(d->rules[0].data, d->rules[0].len));
    }
    if (d->has_score) {
        json_object_set_new(rec, "score", json_integer(d->score));
    }
    return rec;
}

/* the module's ladder: built, masked and serialized at each limit */
static char *ref_module_text(const gd_audit_decision_t *d, size_t max)
{
    static const size_t limits[] = {512, 128, 32, 8};
    char *text = NULL;
    size_t i;

    for (i = 0; i < 4; i++) {
        json_t *rec = ref_module_record(d, limits[i]);

        if (rec == NULL) {
            break;
        }
        if (gd_audit_mask(rec) < 0) {
            json_decref(rec);
            break;
        }
        text = json_dumps(rec, JSON_COMPACT);
        json_decref(rec);
        if (text == NULL || strlen(text) <= max) {
            break;
        }
        free(text);
        text = NULL;
    }
    return text;
}

/* n bytes of request text: a run of filler with a secret at `at` */
static size_t make_text(char *out, size_t n, size_t at, int kind)
{
    static const char *const secrets[] = {
        "someone@example.com", "4111 1111 1111 1111", JWT,
        "Bearer abc.def-ghi",  "\xc3\xa9\xc3\xa9",    "x"};
    const char *s = secrets[kind % 6];
    size_t i, slen = strlen(s);

    for (i = 0; i < n; i++) {
        out[i] = (char)('a' + (i * 7 + (size_t)kind) % 26);
        if (i % 9 == 8) {
            out[i] = '/';
        }
    }
    if (at + slen <= n) {
        memcpy(out + at, s, slen);
    }
    /* no UTF-8 sequence torn at the end */
    while (n > 0 && ((unsigned char)out[n - 1] & 0x80)) {
        n--;
    }
    return n;
}

static void set(gd_audit_text_t *t, const char *data, size_t len)
{
    t->data = data;
    t->len = len;
}

static void module_decision(gd_audit_decision_t *d)
{
    static const gd_audit_text_t rule = {"per-minute", 10};

    memset(d, 0, sizeof(*d));
    set(&d->id, ID, 36);
    d->ts_ms = 1700000000123;
    set(&d->stage, "rate", 4);
    set(&d->reason, "rate_limited", 12);
    d->status = 429;
    d->latency_ms = 3;
    set(&d->client_ip, "127.0.0.1", 9);
    set(&d->method, "GET", 3);
    set(&d->route, "/api/orders", 11);
    set(&d->node, "gw-1.example.net", 16);
    set(&d->source, "nginx", 5);
    d->rules = &rule;
    d->nrules = 1;
}

static size_t module_made, module_cut[5];

static int module_case(const gd_audit_decision_t *d, size_t max,
                       const char *what)
{
    char *want = ref_module_text(d, max), *got;
    size_t gotlen;
    int rc = gd_audit_record_text(d, max, &got, &gotlen);
    int same;

    if (want != NULL) {
        json_t *r = json_loads(want, 0, NULL);
        size_t rl = json_string_length(json_object_get(r, "route"));

        module_made++;
        module_cut[rl > 128 ? 0 : rl > 32 ? 1 : rl > 8 ? 2 : 3]++;
        json_decref(r);
    } else {
        module_cut[4]++;
    }

    if (want == NULL) {
        same = rc == -1 && got == NULL;
    } else {
        same = rc == 0 && gotlen == strlen(want) && strcmp(got, want) == 0;
    }
    if (!same) {
        printf("# %s, max %zu\n#   want %s\n#   got  %s\n", what, max,
               want ? want : "(none)", rc == 0 ? got : "(none)");
    }
    free(want);
    free(got);
    return same;
}

static void module_tests(void)
{
    static const size_t maxes[] = {1952, 1500, 1000, 700, 500, 400,
                                   300,  250,  200,  150, 100};
    static const size_t lens[] = {0, 7, 30, 33, 100, 127, 129, 500, 513, 3000};
    static char tenant[4096], subject[4096], route[4096], method[64];
    gd_audit_decision_t d;
    size_t i, k, m, cases = 0, bad = 0;
    char *text;
    size_t len;
    json_t *rec;

    module_decision(&d);
    TAP_OK(gd_audit_record_text(&d, 1952, &text, &len) == 0 &&
               strncmp(text,
                       "{\"id\":\"" ID "\",\"ts_ms\":1700000000123,"
                       "\"outcome\":\"deny\",\"stage\":\"rate\","
                       "\"reason\":\"rate_limited\",\"status\":429,"
                       "\"latency_ms\":3,\"client_ip\":\"127.0.0.1\","
                       "\"method\":\"GET\",\"route\":\"/api/orders\","
                       "\"node\":\"gw-1.example.net\",\"source\":\"nginx\","
                       "\"rules\":[\"per-minute\"]}",
                       len) == 0 &&
               len == strlen(text),
           "a refusal's record: its members in the module's order");
    free(text);

    for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        for (k = 0; k < 6; k++) {
            for (m = 0; m < sizeof(maxes) / sizeof(maxes[0]); m++) {
                size_t at = lens[i] > 20 ? lens[i] / 2 + k * 3 : 0;

                module_decision(&d);
                set(&d.tenant, tenant, make_text(tenant, lens[i], at, (int)k));
                set(&d.subject, subject,
                    make_text(subject, lens[(i + 3) % 10], 120, (int)k + 1));
                set(&d.route, route,
                    make_text(route, lens[(i + 7) % 10] + 1, 500 + k, (int)k));
                if (k % 2) {
                    set(&d.method, method, make_text(method, 20 + k * 4, 0, 5));
                    set(&d.traceparent,
                        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-"
                        "01",
                        55);
                    set(&d.policy_version,
                        "0123456789abcdef0123456789abcdef0123456789abcdef"
                        "0123456789abcdef0123456789",
                        74);
                    d.shadow = 1;
                    d.nrules = 0;
                    d.has_score = 1;
                    d.score = 80;
                    set(&d.shadow_reason, "tenant_mismatch", 15);
                }
                if (lens[i] == 0) {
                    d.tenant.data = NULL;
                }
                cases++;
                if (!module_case(&d, maxes[m], "long text")) {
                    bad++;
                }
            }
        }
    }
    TAP_OK(bad == 0,
           "%zu records of long text with secrets, cut to fit a budget: "
           "each as the module built it at each cut (%zu differ)",
           cases, bad);
    printf("# made %zu; route over 128 bytes %zu, over 32 %zu, over 8 %zu, "
           "at most 8 %zu; none %zu\n",
           module_made, module_cut[0], module_cut[1], module_cut[2],
           module_cut[3], module_cut[4]);

    /* the fixed cuts alone overflow: nothing fits */
    module_decision(&d);
    set(&d.node, route, make_text(route, 600, 0, 5));
    TAP_OK(gd_audit_record_text(&d, 150, &text, &len) == -1 && text == NULL,
           "a record that fits at no cut is not made");
    TAP_OK(module_case(&d, 400, "fixed cuts"),
           "the fixed cuts (64 bytes) as before");

    /* gd_audit_record: nothing cut */
    module_decision(&d);
    set(&d.route, route, make_text(route, 3000, 1000, 0));
    rec = gd_audit_record(&d);
    TAP_OK(rec != NULL &&
               json_string_length(json_object_get(rec, "route")) > 2900 &&
               strstr(json_string_value(json_object_get(rec, "route")),
                      "someone@") == NULL,
           "a record with nothing cut, masked");
    json_decref(rec);
}

/* guardd's risk record, as it was packed */
static json_t *ref_guardd_record(const char *idtext, long long ts_ms,
                                 const char *tenant, const char *subject,
                                 const char *client_ip, const char *method,
                                 const char *route, const char *traceparent,
                                 int deny, int shadow, int score,
                                 json_t *signals, json_t *thresholds)
{
    json_t *rec = json_pack(
        "{s:s, s:I, s:s, s:s?, s:s?, s:s?, s:s?, s:s, s:s, s:i, s:s,"
        " s:i, s:O, s:s, s:s?, s:s, s:b}",
        "id", idtext, "ts_ms", (json_int_t)ts_ms, "tenant", tenant, "subject",
        subject, "client_ip", client_ip, "method", method, "route", route,
        "stage", "risk", "outcome", shadow ? "shadow_deny" : "deny", "status",
        deny ? 403 : 401, "reason", deny ? "risk_deny" : "risk_step_up",
        "score", score, "signals", signals, "policy_version", "v1",
        "traceparent", traceparent, "node", "gw-1", "shadow", shadow);
    if (rec) {
        json_object_set(rec, "thresholds", thresholds);
    }
    if (rec == NULL || gd_audit_mask(rec) < 0) {
        json_decref(rec);
        return NULL;
    }
    return rec;
}

static void guardd_tests(void)
{
    json_t *signals = json_pack("[{s:s, s:i, s:b}]", "id", "new_country",
                                "weight", 40, "shadow", 0);
    json_t *thresholds = json_pack("{s:i, s:i}", "step_up", 40, "deny", 70);
    static const char *const subjects[] = {"alice", NULL};
    static const char *const routes[] = {"/a?mail=someone@example.com", NULL};
    size_t i, bad = 0;

    for (i = 0; i < 8; i++) {
        const char *subject = subjects[i & 1];
        const char *route = routes[(i >> 1) & 1];
        int deny = (i >> 2) & 1, shadow = (int)(i & 1);
        gd_audit_decision_t d = {0};
        json_t *want, *got;
        char *a, *b;

        d.id = gd_audit_text(ID);
        d.ts_ms = 1700000000999;
        d.tenant = gd_audit_text("acme");
        d.subject = gd_audit_text(subject);
        d.client_ip = gd_audit_text(i & 2 ? NULL : "10.0.0.1");
        d.method = gd_audit_text(i & 4 ? NULL : "POST");
        d.route = gd_audit_text(route);
        d.stage = gd_audit_text("risk");
        d.shadow = shadow;
        d.status = deny ? 403 : 401;
        d.reason = gd_audit_text(deny ? "risk_deny" : "risk_step_up");
        d.latency_ms = -1;
        d.has_score = 1;
        d.score = 75;
        d.signals = signals;
        d.thresholds = thresholds;
        d.policy_version = gd_audit_text("v1");
        d.traceparent = gd_audit_text(i & 1 ? NULL : "00-ab-cd-01");
        d.node = gd_audit_text("gw-1");
        d.nulls = 1;

        want = ref_guardd_record(ID, d.ts_ms, "acme", subject, d.client_ip.data,
                                 d.method.data, route, d.traceparent.data, deny,
                                 shadow, 75, signals, thresholds);
        got = gd_audit_record(&d);
        a = want ? json_dumps(want, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        b = got ? json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        if (a == NULL || b == NULL || strcmp(a, b) != 0) {
            printf("#   want %s\n#   got  %s\n", a ? a : "(none)",
                   b ? b : "(none)");
            bad++;
        }
        free(a);
        free(b);
        json_decref(want);
        json_decref(got);
    }
    TAP_OK(bad == 0,
           "guardd's risk records, canonical (as journaled), as they were "
           "packed: absent request text null (%zu differ)",
           bad);
    json_decref(signals);
    json_decref(thresholds);
}

/* the guardrails member and the outcomes of a passed request */
static void guardrails_tests(void)
{
    json_t *gr = json_pack("{s:s, s:i, s:[{s:s, s:s, s:s, s:i, s:i}]}",
                           "verdict", "pass", "score", 0, "hits", "rule",
                           "pii-email", "target", "json", "pointer",
                           "/messages/0/content", "offset", 11, "length", 15);
    gd_audit_decision_t d = {.id = gd_audit_text(ID),
                             .ts_ms = 1700000000000,
                             .stage = gd_audit_text("guardrails"),
                             .latency_ms = -1,
                             .tenant = gd_audit_text("acme"),
                             .guardrails = gr,
                             .outcome = "redact"};
    json_t *rec = gd_audit_record(&d);
    char *text = rec ? json_dumps(rec, JSON_COMPACT) : NULL;

    printf("# %s\n", text ? text : "NULL");
    TAP_OK(text && strstr(text, "\"outcome\":\"redact\"") &&
               strstr(text, "\"guardrails\":{\"verdict\":\"pass\"") &&
               strstr(text, "\"pointer\":\"/messages/0/content\""),
           "a passed request with redactions: outcome redact, the "
           "guardrails member as given");
    TAP_OK(rec && json_object_get(rec, "reason") == NULL, "... and no reason");
    free(text);
    json_decref(rec);

    d.outcome = NULL;
    d.reason = gd_audit_text("guardrail_blocked");
    d.status = 403;
    rec = gd_audit_record(&d);
    TAP_OK(rec &&
               strcmp(json_string_value(json_object_get(rec, "outcome")),
                      "deny") == 0 &&
               json_object_get(rec, "guardrails") != NULL,
           "a refusal by the guardrails stage: deny, with the member");
    json_decref(rec);
    json_decref(gr);
}

int main(void)
{
    TAP_OK(gd_audit_init() == 0, "the patterns compile");
    module_tests();
    guardd_tests();
    guardrails_tests();
    return tap_done();
}
