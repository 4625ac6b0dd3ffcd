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
 */
#define _GNU_SOURCE
#define PCRE2_CODE_UNIT_WIDTH 8

#include "gd_detect.h"
#include "gd_guardrails.h"
#include "gd_norm.h"
#include "gd_policy.h"

#include <jansson.h>
#include <pcre2.h>
#ifdef GR_HYPERSCAN
#include <hs.h>
#endif
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

/* runs f for about seconds; returns the seconds per call */
static double timed(void (*f)(void), double seconds)
{
    unsigned long n = 0, batch = 16;
    double t0 = now_s(), t;

    f(); /* warm */
    t0 = now_s();
    do {
        for (unsigned long i = 0; i < batch; i++) {
            f();
        }
        n += batch;
        t = now_s();
    } while (t - t0 < seconds);
    return (t - t0) / (double)n;
}

#ifdef GR_HYPERSCAN
/*
 * The prototype of a multi-pattern prefilter: every pattern rule in one
 * Hyperscan database (HS_FLAG_PREFILTER: a pattern Hyperscan cannot run
 * exactly is widened, never narrowed, so a miss is a miss for PCRE2
 * too), one scan of each value; a rule that Hyperscan reports is then
 * confirmed by its PCRE2 code over the value.  Patterns Hyperscan cannot
 * take even as a prefilter always run in PCRE2.
 */
static hs_database_t *hs_db;
static hs_scratch_t *hs_scr;
static const gd_gr_rule_t **hs_always; /* not in the database */
static size_t nalways, nhs;
static unsigned char *hs_hit; /* by database id: reported in this value */
static unsigned *hs_ids;      /* database id -> index in pat_rules */

static int hs_on_match(unsigned id, unsigned long long from,
                       unsigned long long to, unsigned flags, void *ctx)
{
    (void)from;
    (void)to;
    (void)flags;
    (void)ctx;
    hs_hit[id] = 1;
    return 0;
}

static unsigned hs_flags_of(uint32_t o)
{
    unsigned f = HS_FLAG_PREFILTER | HS_FLAG_SINGLEMATCH | HS_FLAG_ALLOWEMPTY;

    if (o & PCRE2_CASELESS) {
        f |= HS_FLAG_CASELESS;
    }
    if (o & PCRE2_DOTALL) {
        f |= HS_FLAG_DOTALL;
    }
    if (o & PCRE2_MULTILINE) {
        f |= HS_FLAG_MULTILINE;
    }
    if (o & PCRE2_UTF) {
        f |= HS_FLAG_UTF8;
    }
    if (o & PCRE2_UCP) {
        f |= HS_FLAG_UCP;
    }
    return f;
}

/* builds the database of pat_rules; 0, or -1 (with a message) */
static int hs_build(void)
{
    const char **expr = calloc(npat + 1, sizeof(char *));
    char **owned = calloc(npat + 1, sizeof(char *));
    unsigned *flags = calloc(npat + 1, sizeof(unsigned));
    unsigned char *skip = calloc(npat + 1, 1);
    hs_compile_error_t *err = NULL;
    int rc = -1;

    hs_ids = calloc(npat + 1, sizeof(unsigned));
    hs_hit = calloc(npat + 1, 1);
    hs_always = calloc(npat + 1, sizeof(*hs_always));
    if (hs_valid_platform() != HS_SUCCESS) {
        printf("hyperscan: this CPU is not supported\n");
        goto done;
    }
    for (;;) {
        nhs = 0;
        for (size_t i = 0; i < npat; i++) {
            const gd_gr_rule_t *r = pat_rules[i];
            if (skip[i]) {
                continue;
            }
            if (owned[i] == NULL) {
                /* (?x) for "x": Hyperscan has no flag for it */
                size_t n = strlen(r->pattern) + 5;
                owned[i] = malloc(n);
                snprintf(owned[i], n, "%s%s",
                         r->pattern_options & PCRE2_EXTENDED ? "(?x)" : "",
                         r->pattern);
            }
            expr[nhs] = owned[i];
            flags[nhs] = hs_flags_of(r->pattern_options);
            hs_ids[nhs] = (unsigned)i;
            nhs++;
        }
        if (nhs == 0) {
            break;
        }
        if (hs_compile_multi(expr, flags, hs_ids, (unsigned)nhs, HS_MODE_BLOCK,
                             NULL, &hs_db, &err) == HS_SUCCESS) {
            break;
        }
        if (err->expression < 0) {
            printf("hyperscan: %s\n", err->message);
            hs_free_compile_error(err);
            goto done;
        }
        /* hs_ids[k] is the pattern's index: ids are pat_rules indexes */
        skip[hs_ids[err->expression]] = 1;
        hs_free_compile_error(err);
        err = NULL;
    }
    for (size_t i = 0; i < npat; i++) {
        if (skip[i]) {
            hs_always[nalways++] = pat_rules[i];
        }
    }
    if (hs_db != NULL && hs_alloc_scratch(hs_db, &hs_scr) != HS_SUCCESS) {
        printf("hyperscan: no scratch\n");
        goto done;
    }
    rc = 0;
done:
    for (size_t i = 0; i < npat; i++) {
        free(owned[i]);
    }
    free(owned);
    free(expr);
    free(flags);
    free(skip);
    return rc;
}

/* the patterns of the prototype over each normalised value */
static void run_prefilter(void)
{
    for (size_t i = 0; i < nval; i++) {
        if (hs_db != NULL) {
            memset(hs_hit, 0, npat);
            hs_scan(hs_db, nv[i].text, (unsigned)nv[i].len, 0, hs_scr,
                    hs_on_match, NULL);
            for (size_t r = 0; r < npat; r++) {
                if (hs_hit[r]) {
                    sink += (unsigned long)pcre2_jit_match(
                        pat_rules[r]->code, (PCRE2_SPTR)nv[i].text, nv[i].len,
                        0, 0, md, NULL);
                }
            }
        }
        for (size_t r = 0; r < nalways; r++) {
            sink += (unsigned long)pcre2_jit_match(hs_always[r]->code,
                                                   (PCRE2_SPTR)nv[i].text,
                                                   nv[i].len, 0, 0, md, NULL);
        }
    }
}
#endif

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

/* g with only the rules keep says yes to (the rules are shared) */
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
                eng[r] = mb / timed(run_engine, seconds);
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
    double t_full = timed(run_engine, seconds);
    gd_guardrails_t only_pat = subset(g, 1), only_det = subset(g, 0);
    cur_g = &only_pat;
    double t_pat = timed(run_engine, seconds);
    cur_g = &only_det;
    double t_det = timed(run_engine, seconds);
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

#ifdef GR_HYPERSCAN
    const char *want_hs = getenv("GR_HYPERSCAN");
    if (npat > 0 && (want_hs == NULL || strcmp(want_hs, "0") != 0) &&
        hs_build() == 0) {
        double t_pre = timed(run_prefilter, seconds);
        /* the engine without its patterns, plus the prefilter's scan */
        double t_proto = t_det + t_pre;
        printf("\nprototype: a Hyperscan prefilter (%zu patterns in one "
               "database, %zu always in PCRE2), PCRE2 to confirm:\n",
               nhs, nalways);
        printf("  prefilter + confirmation %8.2f us per body (patterns in "
               "the engine now: %.2f us)\n",
               t_pre * 1e6, (t_full - t_det) * 1e6);
        printf("  engine with it (detectors-only engine + prefilter) "
               "%8.2f us: %.1f MB/s, %.3fx standalone PCRE2\n",
               t_proto * 1e6, mb / t_proto, mb / t_proto / pcre_mbs);
    }
#endif

    for (size_t i = 0; i < MAX_VALUES; i++) {
        gd_norm_free(&nv[i]);
    }
    json_decref(doc);
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
