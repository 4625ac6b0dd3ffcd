/*
 * gr_bench: the guardrails scan of one body, in MB/s of body, against a
 * standalone PCRE2-JIT loop of the same patterns over the same text, in
 * interleaved rounds; and where the engine's time goes.  Used by
 * bench/guardrails.sh.
 *
 *   gr_bench POLICY_DIR TENANT BODY_FILE [SECONDS] [ROUNDS]
 *
 * The policies load with the one loader (gd_policy_set_load: the packs,
 * their patterns compiled and JIT-compiled as the module does); the
 * tenant's guardrails (else _default's) are applied by gd_gr_eval() to
 * a POST of BODY_FILE (Content-Type application/json) with one scratch.
 *
 * The standalone loop runs pcre2_jit_match() of every pattern rule's
 * compiled code (the loader's, so compiled the same way) once over the
 * whole body with one match-data block: the least any engine that runs
 * these patterns over this text can do.  Each round measures both for
 * SECONDS (default 1); the ratio is engine / standalone (goal: >= 0.7).
 *
 * Then the engine's time split, two ways:
 *   - the engine again with a subset of the rules (patterns only,
 *     detectors only): the cost of each kind of rule in the engine;
 *   - each step alone, as the engine runs it (JSON parsing of the body
 *     and the walk of its string values; NFKC normalisation of each
 *     value; every detector over each normalised value; every pattern
 *     over each normalised value), in microseconds per body and in
 *     percent of the whole gd_gr_eval().
 *
 * Last, the engine with its prefilter (gd_gr_prefilter.h, on by default)
 * against the same section without it, with how many patterns each tier
 * has; GR_ATOMS=1 lists each pattern's tier (and atoms, or why it has
 * none), GR_CHECK=FILE.jsonl checks the prefilter over a corpus.
 */
#define _GNU_SOURCE
#define PCRE2_CODE_UNIT_WIDTH 8

#include "gd_detect.h"
#include "gd_gr_prefilter.h"
#include "gd_gr_hscache.h"
#include "gd_guardrails.h"
#include "gd_norm.h"
#include "gd_policy.h"

#include <ctype.h>
#include <jansson.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* what the timed loops share */
static const gd_guardrails_t *cur_g;
static gd_gr_request_t req;
static gd_gr_scratch_t *scratch;
static pcre2_match_data *md;
static const char *body;
static size_t body_len;
static volatile unsigned long sink;

/* the string values of the body, raw and normalised */
#define MAX_VALUES 4096
static const char *val[MAX_VALUES];
static size_t val_len[MAX_VALUES];
static size_t nval;
static gd_norm_t nv[MAX_VALUES];
static json_t *doc;

static const gd_gr_rule_t **pat_rules, **det_rules;
static size_t npat, ndet;

static void run_engine(void)
{
    gd_gr_result_t res;

    if (gd_gr_eval(cur_g, &req, scratch, &res) != 0) {
        fprintf(stderr, "gr_bench: gd_gr_eval: out of memory\n");
        exit(1);
    }
    sink += res.verdict + res.nhits;
}

/* the engine with every rule, only the patterns, only the detectors:
   separate functions, so that callgrind counts each */
static const gd_guardrails_t *g_all, *g_pat, *g_det;

__attribute__((noinline)) static void run_engine_all(void)
{
    cur_g = g_all;
    run_engine();
}

__attribute__((noinline)) static void run_engine_pat(void)
{
    cur_g = g_pat;
    run_engine();
}

__attribute__((noinline)) static void run_engine_det(void)
{
    cur_g = g_det;
    run_engine();
}

/* every rule, the prefilter off */
static const gd_guardrails_t *g_nopf;

__attribute__((noinline)) static void run_engine_nopf(void)
{
    cur_g = g_nopf;
    run_engine();
}

/* every pattern once over the whole body */
static void run_pcre2(void)
{
    for (size_t i = 0; i < npat; i++) {
        int rc = pcre2_jit_match(pat_rules[i]->code, (PCRE2_SPTR)body, body_len,
                                 0, 0, md, NULL);
        sink += (unsigned long)rc;
    }
}

static void walk(json_t *j, int depth)
{
    const char *k;
    json_t *v;
    size_t i;

    if (depth > 32) {
        return;
    }
    if (json_is_string(j)) {
        if (nval < MAX_VALUES) {
            val[nval] = json_string_value(j);
            val_len[nval] = json_string_length(j);
            nval++;
        }
    } else if (json_is_object(j)) {
        json_object_foreach(j, k, v)
        {
            walk(v, depth + 1);
        }
    } else if (json_is_array(j)) {
        json_array_foreach(j, i, v)
        {
            walk(v, depth + 1);
        }
    }
}

static void run_json(void)
{
    json_error_t err;
    json_t *d = json_loadb(body, body_len, JSON_DECODE_ANY, &err);

    nval = 0;
    walk(d, 0);
    sink += nval;
    json_decref(d);
}

static void run_norm(void)
{
    for (size_t i = 0; i < nval; i++) {
        gd_norm(&nv[i], val[i], val_len[i], GD_NORM_UNICODE);
        sink += nv[i].len;
    }
}

static void run_detect(void)
{
    gd_detect_span_t spans[8];

    for (size_t r = 0; r < ndet; r++) {
        for (size_t i = 0; i < nval; i++) {
            sink += gd_detect((gd_detector_e)det_rules[r]->detector, nv[i].text,
                              nv[i].len, spans, 8);
        }
    }
}

static void run_patterns(void)
{
    for (size_t r = 0; r < npat; r++) {
        for (size_t i = 0; i < nval; i++) {
            int rc = pcre2_jit_match(pat_rules[r]->code, (PCRE2_SPTR)nv[i].text,
                                     nv[i].len, 0, 0, md, NULL);
            sink += (unsigned long)rc;
        }
    }
}

/* the pattern run_one runs */
static const gd_gr_rule_t *one;

static void run_one(void)
{
    sink += (unsigned long)pcre2_jit_match(one->code, (PCRE2_SPTR)body,
                                           body_len, 0, 0, md, NULL);
}

static int cmp_cost(const void *a, const void *b)
{
    const double *x = a, *y = b;
    return (x[0] < y[0]) - (x[0] > y[0]);
}

/* runs f for about seconds (GR_ITER=N: N times, for callgrind);
   returns the seconds per call */
static double timed(void (*f)(void), double seconds)
{
    unsigned long n = 0, batch = 16;
    double t0 = now_s(), t;
    const char *iter = getenv("GR_ITER");

    f(); /* warm */
    t0 = now_s();
    if (iter != NULL) {
        n = strtoul(iter, NULL, 10);
        for (unsigned long i = 0; i < n; i++) {
            f();
        }
        return (now_s() - t0) / (double)(n ? n : 1);
    }
    do {
        for (unsigned long i = 0; i < batch; i++) {
            f();
        }
        n += batch;
        t = now_s();
    } while (t - t0 < seconds);
    return (t - t0) / (double)n;
}

/*
 * The engine's prefilter (gd_gr_prefilter.h): GR_ATOMS lists each
 * pattern's tier and atoms (or why it has none); GR_CHECK=FILE.jsonl checks
 * over a corpus that it loses no match.
 */
static gd_gr_pf_scratch_t pf;
static unsigned char *pf_run;

static void list_atoms(const gd_guardrails_t *g)
{
    gd_gr_atoms_t a;
    char why[64];

    for (size_t i = 0; i < npat; i++) {
        const char *tw;

        if (gd_gr_prefilter_tier(g->prefilter,
                                 (size_t)(pat_rules[i] - g->rules),
                                 &tw) == GD_GR_PF_FULL) {
            printf("  full  %-24s\n", pat_rules[i]->id);
            continue;
        }
        printf("  atoms %-24s (not full: %s)", pat_rules[i]->id, tw);
        if (gd_gr_atoms(pat_rules[i]->pattern, pat_rules[i]->pattern_options,
                        &a, why, sizeof(why)) != 0) {
            printf(" (none: always runs: %s)\n", why);
            continue;
        }
        for (size_t j = 0; j < a.n && j < 8; j++) {
            printf(" \"%.*s\"", (int)a.len[j], a.lit[j]);
        }
        printf("%s\n", a.n > 8 ? " ..." : "");
    }
}

/*
 * GR_CHECK=FILE.jsonl: every line's "body" (a JSON value, or a string
 * holding one): each string value normalised; every pattern that
 * matches it must be one the prefilter lets run.  Prints the matches it
 * lost (none, or it is a bug), and with GR_ATOMS how often each pattern
 * ran.
 */
static void check_corpus(const gd_guardrails_t *g, const char *path)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0, lines = 0, values = 0, matches = 0, lost = 0, ran = 0;
    size_t *runs = calloc(npat ? npat : 1, sizeof(*runs));

    if (f == NULL) {
        perror(path);
        return;
    }
    while (getline(&line, &cap, f) > 0) {
        json_error_t e;
        json_t *j = json_loads(line, 0, &e), *b, *d = NULL;

        if (j == NULL) {
            continue;
        }
        b = json_object_get(j, "body");
        if (json_is_string(b)) {
            d = json_loads(json_string_value(b), JSON_DECODE_ANY, &e);
            if (d == NULL) {
                d = json_incref(b);
            }
        } else if (b) {
            d = json_incref(b);
        }
        lines++;
        nval = 0;
        walk(d, 0);
        for (size_t i = 0; i < nval; i++) {
            gd_norm(&nv[i], val[i], val_len[i], GD_NORM_UNICODE);
            gd_gr_prefilter_scan(g->prefilter, &pf, nv[i].text, nv[i].len,
                                 pf_run);
            values++;
            for (size_t r = 0; r < npat; r++) {
                size_t ri = (size_t)(pat_rules[r] - g->rules);
                int rc =
                    pcre2_jit_match(pat_rules[r]->code, (PCRE2_SPTR)nv[i].text,
                                    nv[i].len, 0, 0, md, NULL);

                ran += pf_run[ri];
                runs[r] += pf_run[ri];
                if (rc > 0) {
                    matches++;
                    if (!pf_run[ri]) {
                        lost++;
                        printf("  lost: %s, line %zu\n", pat_rules[r]->id,
                               lines);
                    }
                }
            }
        }
        json_decref(d);
        json_decref(j);
    }
    printf("  GR_CHECK %s: %zu bodies, %zu values, %zu pattern matches, "
           "%zu lost by the prefilter; %.1f%% of the pattern runs kept\n",
           path, lines, values, matches, lost,
           values && npat ? 100.0 * (double)ran / (double)(values * npat)
                          : 0.0);
    for (size_t r = 0; runs && r < npat; r++) {
        if (runs[r] && getenv("GR_ATOMS")) {
            printf("  ran %zu times: %s\n", runs[r], pat_rules[r]->id);
        }
    }
    free(runs);
    free(line);
    fclose(f);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0) {
        perror(path);
        exit(2);
    }
    buf = malloc((size_t)n + 1);
    if (buf == NULL || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        perror(path);
        exit(2);
    }
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* the cache of compiled databases the loader uses (gd_gr_hscache.h) */
static char hscache[4096];
static const char *cache;

/* g with only its pattern rules, or only its other rules (the rules are
   shared) */
static gd_guardrails_t subset(const gd_guardrails_t *g, int patterns)
{
    gd_guardrails_t s = *g;
    size_t n = 0;

    s.rules = calloc(g->nrules ? g->nrules : 1, sizeof(gd_gr_rule_t));
    for (size_t i = 0; i < g->nrules; i++) {
        if ((g->rules[i].code != NULL) == patterns) {
            s.rules[n++] = g->rules[i];
        }
    }
    s.nrules = n;
    /* the section's prefilter numbers its rules: the subset gets its own */
    s.prefilter = gd_gr_prefilter_new(s.rules, s.nrules, cache);
    return s;
}

int main(int argc, char **argv)
{
    gd_errors_t errs = {0};
    gd_policy_set_t *set;
    const gd_policy_t *p;
    const gd_guardrails_t *g;
    double seconds, mb;
    int rounds;

    if (argc < 4) {
        fprintf(stderr, "usage: gr_bench POLICY_DIR TENANT BODY_FILE "
                        "[SECONDS] [ROUNDS]\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    seconds = argc > 4 ? atof(argv[4]) : 1;
    rounds = argc > 5 ? atoi(argv[5]) : 3;
    if (seconds <= 0 || rounds < 1) {
        fprintf(stderr, "gr_bench: SECONDS > 0 and ROUNDS >= 1\n");
        return 2;
    }

    /* the loader's cache, so that a subset's database is kept where the
       section's is ($GUARD_HSCACHE: shared with the fuzz targets and the
       tests of make test) */
    cache = gd_gr_hscache_dir(argv[1], hscache, sizeof(hscache));
    set = gd_policy_set_load(argv[1], &errs);
    if (set == NULL) {
        for (size_t i = 0; i < errs.n; i++) {
            fprintf(stderr, "%s\n", errs.lines[i]);
        }
        return 2;
    }
    p = gd_policy_find(set, argv[2], strlen(argv[2]));
    if (p == NULL || !p->has_guardrails) {
        fprintf(stderr, "gr_bench: %s has no guardrails\n", argv[2]);
        return 2;
    }
    g = &p->guardrails;
    g_all = g;

    body = read_file(argv[3], &body_len);
    mb = (double)body_len / 1e6;
    req.uri = "/v1/chat/completions";
    req.uri_len = strlen(req.uri);
    req.content_type = "application/json";
    req.content_type_len = strlen(req.content_type);
    req.body = body;
    req.body_len = body_len;

    scratch = gd_gr_scratch_new();
    md = pcre2_match_data_create(64, NULL);
    pat_rules = calloc(g->nrules + 1, sizeof(*pat_rules));
    det_rules = calloc(g->nrules + 1, sizeof(*det_rules));
    if (scratch == NULL || md == NULL || pat_rules == NULL ||
        det_rules == NULL) {
        fprintf(stderr, "gr_bench: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < g->nrules; i++) {
        if (g->rules[i].code != NULL) {
            pat_rules[npat++] = &g->rules[i];
        } else if (g->rules[i].detector >= 0) {
            det_rules[ndet++] = &g->rules[i];
        }
    }

    /* the body must pass: the figures are for the common case */
    {
        gd_gr_result_t res;
        cur_g = g;
        if (gd_gr_eval(g, &req, scratch, &res) != 0 ||
            res.verdict != GD_GR_PASS) {
            fprintf(stderr,
                    "gr_bench: the body does not pass (verdict %d, %zu "
                    "hits%s%s)\n",
                    res.verdict, res.nhits, res.error ? ": " : "",
                    res.error ? res.error : "");
            return 1;
        }
    }

    printf("gr_bench: %zu rules (%zu patterns, %zu detectors), "
           "%zu-byte body, %d rounds of %.1f s\n",
           g->nrules, npat, ndet, body_len, rounds, seconds);

    /* engine against standalone PCRE2, interleaved */
    double *eng = calloc((size_t)rounds, sizeof(double));
    double *pcre = calloc((size_t)rounds, sizeof(double));
    double *ratio = calloc((size_t)rounds, sizeof(double));
    for (int r = 0; r < rounds; r++) {
        int first_engine = r % 2 == 0;
        for (int k = 0; k < 2; k++) {
            if ((k == 0) == first_engine) {
                eng[r] = mb / timed(run_engine_all, seconds);
            } else {
                pcre[r] = mb / timed(run_pcre2, seconds);
            }
        }
        ratio[r] = eng[r] / pcre[r];
    }
    double eng_mbs = median(eng, rounds), pcre_mbs = median(pcre, rounds);
    printf("engine (gd_gr_eval, every rule):      %10.1f MB/s\n", eng_mbs);
    printf("standalone PCRE2-JIT, %3zu patterns:   %10.1f MB/s\n", npat,
           pcre_mbs);
    printf("scan over standalone PCRE2: %.3f (median of the rounds' "
           "ratios: %.3f; goal: >= 0.7)\n",
           eng_mbs / pcre_mbs, median(ratio, rounds));

    /* the costliest patterns, alone over the body */
    if (npat > 0) {
        double(*cost)[2] = calloc(npat, sizeof(*cost));
        double total = 0;
        size_t top = npat < 5 ? npat : 5;

        for (size_t i = 0; i < npat; i++) {
            one = pat_rules[i];
            cost[i][0] = timed(run_one, seconds / (double)npat);
            cost[i][1] = (double)i;
            total += cost[i][0];
        }
        qsort(cost, npat, sizeof(*cost), cmp_cost);
        printf("\nthe costliest patterns alone over the body (us, %% of the "
               "standalone loop):\n");
        for (size_t i = 0; i < top; i++) {
            printf("  %-32s %8.2f us  %5.1f%%\n",
                   pat_rules[(size_t)cost[i][1]]->id, cost[i][0] * 1e6,
                   100 * cost[i][0] / total);
        }
        free(cost);
    }

    /* the engine with a subset of its rules */
    gd_guardrails_t only_pat = subset(g, 1), only_det = subset(g, 0);
    g_pat = &only_pat;
    g_det = &only_det;
    double t_full = timed(run_engine_all, seconds);
    double t_pat = timed(run_engine_pat, seconds);
    double t_det = timed(run_engine_det, seconds);
    cur_g = g;
    printf("\nengine with a subset of the rules (us per body, %% of all "
           "rules):\n");
    printf("  every rule        %8.2f us  100.0%%\n", t_full * 1e6);
    printf("  patterns only     %8.2f us  %5.1f%%\n", t_pat * 1e6,
           100 * t_pat / t_full);
    printf("  detectors only    %8.2f us  %5.1f%%\n", t_det * 1e6,
           100 * t_det / t_full);

    /* each step alone, over what the engine sees */
    for (size_t i = 0; i < MAX_VALUES; i++) {
        gd_norm_init(&nv[i]);
    }
    run_json();
    json_error_t jerr;
    doc = json_loadb(body, body_len, JSON_DECODE_ANY, &jerr);
    nval = 0;
    walk(doc, 0); /* val[] point into doc from here on */
    run_norm();
    double t_json = timed(run_json, seconds);
    nval = 0;
    walk(doc, 0);
    double t_norm = timed(run_norm, seconds);
    double t_detect = timed(run_detect, seconds);
    double t_patterns = timed(run_patterns, seconds);
    double t_sum = t_json + t_norm + t_detect + t_patterns;
    printf("\neach step alone over the body's %zu string values (us per "
           "body, %% of the engine's every-rule time):\n",
           nval);
    printf("  JSON parse + walk %8.2f us  %5.1f%%\n", t_json * 1e6,
           100 * t_json / t_full);
    printf("  normalisation     %8.2f us  %5.1f%%\n", t_norm * 1e6,
           100 * t_norm / t_full);
    printf("  detectors (%3zu)   %8.2f us  %5.1f%%\n", ndet, t_detect * 1e6,
           100 * t_detect / t_full);
    printf("  patterns (%3zu)    %8.2f us  %5.1f%%\n", npat, t_patterns * 1e6,
           100 * t_patterns / t_full);
    printf("  the rest (engine) %8.2f us  %5.1f%%\n", (t_full - t_sum) * 1e6,
           100 * (t_full - t_sum) / t_full);

    /* the prefilter: the engine with and without it */
    {
        gd_guardrails_t nopf = *g;
        size_t nf, na;

        nopf.prefilter = NULL;
        g_nopf = &nopf;
        gd_gr_pf_stats_t st;

        gd_gr_prefilter_counts(g->prefilter, &nf, &na);
        gd_gr_prefilter_stats(g->prefilter, &st);
        printf("\nthe prefilter (Hyperscan): of %zu patterns, %zu in the "
               "full-pattern tier (%zu of them gated by their atoms, with "
               "%zu parts), %zu on atoms alone, %zu always run; %zu atoms "
               "in %zu databases (one per set of target kinds); databases "
               "%.1f KB\n",
               npat, st.full, st.gated, st.parts, nf, npat - nf - st.full, na,
               st.atoms_dbs, (double)st.db_bytes / 1024);
        double t_nopf = timed(run_engine_nopf, seconds);
        t_full = timed(run_engine_all, seconds);
        printf("  engine without it  %8.2f us, %.1f MB/s\n", t_nopf * 1e6,
               mb / t_nopf);
        printf("  engine with it     %8.2f us, %.1f MB/s: %.2fx\n",
               t_full * 1e6, mb / t_full, t_nopf / t_full);
        if (getenv("GR_ATOMS")) {
            list_atoms(g);
        }
        const char *check = getenv("GR_CHECK");
        if (check && g->prefilter) {
            pf_run = calloc(g->nrules + 1, 1);
            check_corpus(g, check);
            free(pf_run);
            gd_gr_pf_scratch_free(&pf);
        }
    }

    for (size_t i = 0; i < MAX_VALUES; i++) {
        gd_norm_free(&nv[i]);
    }
    json_decref(doc);
    gd_gr_prefilter_free(only_pat.prefilter);
    gd_gr_prefilter_free(only_det.prefilter);
    free(only_pat.rules);
    free(only_det.rules);
    free(eng);
    free(pcre);
    free(ratio);
    free(pat_rules);
    free(det_rules);
    pcre2_match_data_free(md);
    gd_gr_scratch_free(scratch);
    free((char *)body);
    gd_policy_set_free(set);
    return 0;
}
