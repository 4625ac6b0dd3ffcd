/*
 * libFuzzer target for the guardrails engine, gd_gr_eval (`make fuzz`,
 * needs clang): a whole request through both packs of policies/packs and
 * a rule on every kind of target, loaded by the one policy loader.
 *
 * The first byte picks the Content-Type (application/json, a form,
 * none, text/plain) and whether the body counts as skipped; the rest is
 * ARGS NUL HEADER-VALUE NUL BODY (missing parts are empty).  Checks, on
 * every input:
 *   - gd_gr_eval returns 0 (the engine is never out of memory here) and
 *     its verdicts are ones it has;
 *   - a pass is under the threshold, an anomaly at or over it;
 *   - every hit names a rule of the section, and a hit on the query, the
 *     header or the raw body lies within that text;
 *   - redactions are only for what passes; a redacted JSON body is JSON;
 *   - the audit member serialises;
 *   - evaluating the same request again gives the same verdict, score and
 *     hits (the scratch is reused between requests).
 */
#include "gd_guardrails.h"
#include "gd_policy.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PACKS GD_TEST_DATA "/../../policies/packs"

/* acme's policy: the packs and rules for each target kind (the file is
   also the one t/13-fuzz.t has the release guardctl compile first) */
#define ACME GD_TEST_DATA "/../../policy-engine/fuzz/fuzz_guardrails.json"

static gd_policy_set_t *set;
static const gd_guardrails_t *g;
static gd_gr_scratch_t *scratch;

/* the JSON file from into the file to */
static void copy_json(const char *from, const char *to)
{
    json_error_t e;
    json_t *doc;

    doc = json_load_file(from, 0, &e);
    if (doc == NULL || json_dump_file(doc, to, 0) != 0) {
        abort();
    }
    json_decref(doc);
}

static void copy_pack(const char *dir, const char *name)
{
    char from[512], to[512];

    snprintf(from, sizeof(from), "%s/%s.json", PACKS, name);
    snprintf(to, sizeof(to), "%s/packs/%s.json", dir, name);
    copy_json(from, to);
}

static void init(void)
{
    char dir[] = "/tmp/fuzz_guardrails.XXXXXX", path[512];
    gd_errors_t errs = {0};

    if (mkdtemp(dir) == NULL) {
        abort();
    }
    snprintf(path, sizeof(path), "%s/packs", dir);
    mkdir(path, 0700);
    copy_pack(dir, "pii");
    copy_pack(dir, "prompt-injection");
    snprintf(path, sizeof(path), "%s/acme.json", dir);
    copy_json(ACME, path);

    set = gd_policy_set_load(dir, &errs);
    for (size_t i = 0; i < errs.n; i++) {
        fprintf(stderr, "%s\n", errs.lines[i]);
    }
    const gd_policy_t *p = set ? gd_policy_find(set, "acme", 4) : NULL;
    if (p == NULL || !p->has_guardrails) {
        abort();
    }
    g = &p->guardrails;
    gd_errors_free(&errs);
    scratch = gd_gr_scratch_new();
    if (scratch == NULL) {
        abort();
    }
}

/* the next part of data[0..size) up to a NUL */
static const char *part(const uint8_t **data, size_t *size, size_t *len)
{
    const uint8_t *p = *data, *nul = memchr(p, '\0', *size);

    *len = nul ? (size_t)(nul - p) : *size;
    *data += nul ? *len + 1 : *len;
    *size -= nul ? *len + 1 : *len;
    return (const char *)p;
}

static int rule_of(const gd_gr_rule_t *r)
{
    return r >= g->rules && r < g->rules + g->nrules;
}

/* the packs' compile is seconds: before the first input, not in it */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *types[] = {"application/json",
                                  "application/x-www-form-urlencoded", NULL,
                                  "text/plain"};
    gd_gr_header_t h[2] = {{"Host", 4, "localhost", 9}, {"X-Data", 6, "", 0}};
    gd_gr_request_t req;
    gd_gr_result_t res, again;
    size_t alen, blen;

    if (size < 1) {
        return 0;
    }
    unsigned sel = data[0];
    data++;
    size--;

    memset(&req, 0, sizeof(req));
    req.uri = "/v1/chat/../completions";
    req.uri_len = strlen(req.uri);
    req.args = part(&data, &size, &alen);
    req.args_len = alen;
    h[1].value = part(&data, &size, &h[1].value_len);
    req.headers = h;
    req.nheaders = 2;
    req.body = part(&data, &size, &blen);
    req.body_len = blen;
    req.body_skipped = (sel & 0x80) != 0;
    req.content_type = types[sel & 3];
    req.content_type_len = req.content_type ? strlen(req.content_type) : 0;

    if (gd_gr_eval(g, &req, scratch, &res) != 0 || res.verdict > GD_GR_ERROR ||
        res.shadow_verdict > GD_GR_ERROR) {
        abort();
    }
    if ((res.verdict == GD_GR_PASS && res.score >= g->threshold) ||
        (res.verdict == GD_GR_ANOMALY && res.score < g->threshold)) {
        abort();
    }
    if (res.nhits > GD_GR_MAX_HITS || res.nhits > res.nhits_total) {
        abort();
    }
    for (size_t i = 0; i < res.nhits; i++) {
        const gd_gr_hit_t *t = &res.hits[i];
        size_t within = t->target == GD_GR_T_BODY     ? req.body_len
                        : t->target == GD_GR_T_HEADER ? h[1].value_len
                        : t->target == GD_GR_T_URI    ? req.uri_len
                                                      : SIZE_MAX;

        if (!rule_of(t->rule) || t->off > within || t->len > within - t->off) {
            abort();
        }
    }
    if (res.verdict != GD_GR_PASS &&
        (res.body != NULL || res.args != NULL || res.nheaders != 0)) {
        abort();
    }
    if (res.body && (sel & 3) == 0) {
        json_error_t e;
        json_t *doc = json_loadb(res.body, res.body_len,
                                 JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);

        if (doc == NULL) {
            abort();
        }
        json_decref(doc);
    }

    json_t *audit = gd_gr_audit(g, &res);
    char *text = audit ? json_dumps(audit, JSON_COMPACT) : NULL;

    if (text == NULL) {
        abort();
    }
    free(text);
    json_decref(audit);

    gd_gr_verdict_e v = res.verdict;
    uint32_t score = res.score;
    size_t nhits = res.nhits_total;

    if (gd_gr_eval(g, &req, scratch, &again) != 0 || again.verdict != v ||
        again.score != score || again.nhits_total != nhits) {
        abort();
    }
    return 0;
}
