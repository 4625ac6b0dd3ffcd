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

#include <ctype.h>
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

#ifdef GR_HYPERSCAN
/*
 * The prototype of a multi-pattern prefilter.  Each pattern's "atoms"
 * are computed from its text: a set of literals, one of which is in
 * every text the pattern matches (lookarounds, anchors and verbs widen
 * to nothing required, classes and repeats to what they must hold; a
 * set whose shortest literal is under ATOM_MIN bytes is no filter:
 * that pattern always runs; a byte that is not ASCII stands for any
 * text, its case folding not being ASCII's).  Every atom goes into one
 * Hyperscan literal database (caseless), scanned once over each normalised
 * value; a pattern runs in PCRE2 only where one of its atoms was seen.  Sound
 * by construction (a widening), checked over a corpus by GR_CHECK.
 */
#define ATOM_MIN 1
#define SET_MAX 256
#define LIT_MAX 48

typedef struct {
    char *s[SET_MAX];
    size_t n;
} set_t;

typedef struct {
    int exact; /* e: every text the node matches (lowercase) */
    set_t e;
    int any; /* nothing required; else r: one of these is in a match */
    set_t r;
} info_t;

static void set_free(set_t *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->s[i]);
    }
    s->n = 0;
}

static int set_add(set_t *s, const char *p, size_t n)
{
    if (n > LIT_MAX) {
        return -1;
    }
    for (size_t i = 0; i < s->n; i++) {
        if (strlen(s->s[i]) == n && memcmp(s->s[i], p, n) == 0) {
            return 0;
        }
    }
    if (s->n == SET_MAX) {
        return -1;
    }
    s->s[s->n] = strndup(p, n);
    s->n++;
    return 0;
}

static size_t set_minlen(const set_t *s)
{
    size_t m = SIZE_MAX;
    for (size_t i = 0; i < s->n; i++) {
        size_t l = strlen(s->s[i]);
        m = l < m ? l : m;
    }
    return s->n ? m : 0;
}

static info_t *info_new(void)
{
    return calloc(1, sizeof(info_t));
}

static void info_free(info_t *x)
{
    set_free(&x->e);
    set_free(&x->r);
    free(x);
}

static info_t *info_empty(void)
{
    info_t *x = info_new();
    x->exact = 1;
    set_add(&x->e, "", 0);
    x->any = 1;
    return x;
}

static info_t *info_anychar(void)
{
    info_t *x = info_new();
    x->any = 1;
    return x;
}

static info_t *info_lit(const char *p, size_t n)
{
    info_t *x = info_new();
    x->exact = 1;
    set_add(&x->e, p, n);
    x->any = 1;
    return x;
}

/* the required set of x, as a set to copy (NULL: nothing required) */
static const set_t *req_of(const info_t *x)
{
    if (x->exact && set_minlen(&x->e) > 0) {
        return &x->e;
    }
    if (!x->any && set_minlen(&x->r) > 0) {
        return &x->r;
    }
    return NULL;
}

static void set_copy(set_t *d, const set_t *s)
{
    set_free(d);
    for (size_t i = 0; i < s->n; i++) {
        set_add(d, s->s[i], strlen(s->s[i]));
    }
}

/* the better of two required sets: the longer shortest literal */
static const set_t *req_best(const set_t *a, const set_t *b)
{
    if (a == NULL || b == NULL) {
        return a ? a : b;
    }
    size_t la = set_minlen(a), lb = set_minlen(b);
    if (la != lb) {
        return la > lb ? a : b;
    }
    return a->n <= b->n ? a : b;
}

static info_t *concat(info_t *a, info_t *b)
{
    info_t *x = info_new();

    if (a->exact && b->exact && a->e.n * b->e.n <= SET_MAX) {
        int ok = 1;
        char buf[2 * LIT_MAX + 1];
        x->exact = 1;
        for (size_t i = 0; ok && i < a->e.n; i++) {
            for (size_t j = 0; ok && j < b->e.n; j++) {
                int n =
                    snprintf(buf, sizeof(buf), "%s%s", a->e.s[i], b->e.s[j]);
                ok = set_add(&x->e, buf, (size_t)n) == 0;
            }
        }
        if (ok) {
            x->any = 1;
            info_free(a);
            info_free(b);
            return x;
        }
        set_free(&x->e);
        x->exact = 0;
    }
    const set_t *r = req_best(req_of(a), req_of(b));
    if (r) {
        set_copy(&x->r, r);
        x->any = 0;
    } else {
        x->any = 1;
    }
    info_free(a);
    info_free(b);
    return x;
}

static info_t *alternate(info_t *a, info_t *b)
{
    info_t *x = info_new();
    int ok = 1;

    if (a->exact && b->exact) {
        x->exact = 1;
        for (size_t i = 0; ok && i < a->e.n; i++) {
            ok = set_add(&x->e, a->e.s[i], strlen(a->e.s[i])) == 0;
        }
        for (size_t i = 0; ok && i < b->e.n; i++) {
            ok = set_add(&x->e, b->e.s[i], strlen(b->e.s[i])) == 0;
        }
        if (!ok) {
            set_free(&x->e);
            x->exact = 0;
        }
    }
    const set_t *ra = req_of(a), *rb = req_of(b);
    x->any = 1;
    if (ra && rb) {
        ok = 1;
        for (size_t i = 0; ok && i < ra->n; i++) {
            ok = set_add(&x->r, ra->s[i], strlen(ra->s[i])) == 0;
        }
        for (size_t i = 0; ok && i < rb->n; i++) {
            ok = set_add(&x->r, rb->s[i], strlen(rb->s[i])) == 0;
        }
        x->any = !ok;
        if (!ok) {
            set_free(&x->r);
        }
    }
    info_free(a);
    info_free(b);
    return x;
}

typedef struct {
    const char *p;
    size_t i, n;
    int caseless, bad;
} parser_t;

static info_t *parse_alt(parser_t *ps);

/* past the ')' closing a group whose contents are not needed */
static void skip_group(parser_t *ps)
{
    info_free(parse_alt(ps));
    if (ps->i < ps->n && ps->p[ps->i] == ')') {
        ps->i++;
    }
}

/* a byte >= 0x80 stands for "some byte that is not ASCII" */
#define HIGH '\x80'

/* past a UTF-8 character's continuation bytes */
static void skip_utf8(parser_t *ps)
{
    while (ps->i < ps->n && ((unsigned char)ps->p[ps->i] & 0xc0) == 0x80) {
        ps->i++;
    }
}

/* \x{HHHH} or \xHH after "\x": its value */
static unsigned long parse_hex(parser_t *ps)
{
    unsigned long v = 0;
    if (ps->i < ps->n && ps->p[ps->i] == '{') {
        v = strtoul(ps->p + ps->i + 1, NULL, 16);
        while (ps->i < ps->n && ps->p[ps->i] != '}') {
            ps->i++;
        }
        ps->i++;
    } else {
        char h[3] = {0};
        for (int k = 0;
             k < 2 && ps->i < ps->n && isxdigit((unsigned char)ps->p[ps->i]);
             k++) {
            h[k] = ps->p[ps->i++];
        }
        v = strtoul(h, NULL, 16);
    }
    return v;
}

/* one member of a class: 1 a high character, 2 an ASCII one (in *ch),
   0 anything else (\w, \d, [:alpha:], ...) */
static int class_char(parser_t *ps, char *ch)
{
    unsigned char c = (unsigned char)ps->p[ps->i];

    if (c == '[' && ps->i + 1 < ps->n && ps->p[ps->i + 1] == ':') {
        const char *e = strstr(ps->p + ps->i, ":]");
        ps->i = e ? (size_t)(e - ps->p) + 2 : ps->n;
        return 0;
    }
    if (c == '\\' && ps->i + 1 < ps->n) {
        char e = ps->p[ps->i + 1];
        ps->i += 2;
        if (e == 'x') {
            unsigned long v = parse_hex(ps);
            *ch = (char)v;
            return v >= 0x80 ? 1 : 2;
        }
        if (e == 'p' || e == 'P') {
            if (ps->i < ps->n && ps->p[ps->i] == '{') {
                while (ps->i < ps->n && ps->p[ps->i] != '}') {
                    ps->i++;
                }
            }
            ps->i++;
            return 0;
        }
        if (e == 'n' || e == 't' || e == 'r') {
            *ch = e == 'n' ? '\n' : e == 't' ? '\t' : '\r';
            return 2;
        }
        if (isalnum((unsigned char)e)) {
            return 0;
        }
        *ch = e;
        return 2;
    }
    ps->i++;
    if (c >= 0x80) {
        skip_utf8(ps);
        return 1;
    }
    *ch = (char)c;
    return 2;
}

static info_t *parse_class(parser_t *ps)
{
    /* ps->p[ps->i] is just past '[' */
    char chars[8];
    size_t nc = 0, nhigh = 0, nother = 0;
    int neg = 0, first = 1;

    if (ps->i < ps->n && ps->p[ps->i] == '^') {
        neg = 1;
        ps->i++;
    }
    while (ps->i < ps->n && (first || ps->p[ps->i] != ']')) {
        char ch = 0, hi = 0;
        int k = class_char(ps, &ch);
        first = 0;
        if (ps->i + 1 < ps->n && ps->p[ps->i] == '-' &&
            ps->p[ps->i + 1] != ']') {
            ps->i++;
            class_char(ps, &hi);
            /* a range from a high character holds only high ones */
            k = k == 1 ? 1 : 0;
        }
        if (k == 1) {
            nhigh++;
        } else if (k == 2 && nc < sizeof(chars)) {
            char l = (char)(ps->caseless ? tolower((unsigned char)ch) : ch);
            if (memchr(chars, l, nc) == NULL) {
                chars[nc++] = l;
            }
        } else {
            nother++;
        }
    }
    ps->i++; /* ']' */
    if (neg || nother) {
        return info_anychar();
    }
    if (nhigh && nc == 0) {
        char h = HIGH;
        return info_lit(&h, 1);
    }
    if (nhigh || nc == 0) {
        return info_anychar();
    }
    info_t *x = info_new();
    x->exact = 1;
    x->any = 1;
    for (size_t k = 0; k < nc; k++) {
        set_add(&x->e, &chars[k], 1);
    }
    return x;
}

static info_t *parse_escape(parser_t *ps)
{
    char c = ps->p[ps->i + 1];

    ps->i += 2;
    switch (c) {
    case 'b':
    case 'B':
    case 'A':
    case 'z':
    case 'Z':
    case 'G':
    case 'K':
        return info_empty();
    case 'n':
        return info_lit("\n", 1);
    case 't':
        return info_lit("\t", 1);
    case 'r':
        return info_lit("\r", 1);
    case 'x': {
        unsigned long v = parse_hex(ps);
        char l =
            v >= 0x80 ? HIGH : (char)(ps->caseless ? tolower((int)v) : (int)v);
        return info_lit(&l, 1);
    }
    case 'p':
    case 'P':
        if (ps->i < ps->n && ps->p[ps->i] == '{') {
            while (ps->i < ps->n && ps->p[ps->i] != '}') {
                ps->i++;
            }
            ps->i++;
        } else {
            ps->i++;
        }
        return info_anychar();
    case 'Q': {
        const char *e = strstr(ps->p + ps->i, "\\E");
        size_t end = e ? (size_t)(e - ps->p) : ps->n;
        char buf[LIT_MAX];
        size_t n = 0;
        for (size_t k = ps->i; k < end && n < sizeof(buf); k++) {
            unsigned char ch = (unsigned char)ps->p[k];
            if (ch >= 0x80) {
                ps->bad = 1; /* \\Q..\\E with UTF-8: not filtered */
            }
            buf[n++] = (char)(ps->caseless ? tolower(ch) : ch);
        }
        ps->i = e ? end + 2 : ps->n;
        return n < LIT_MAX ? info_lit(buf, n) : info_anychar();
    }
    default:
        if (isalnum((unsigned char)c)) {
            /* \s \w \d \h \v \R \X \N, back-references, ... */
            return info_anychar();
        }
        {
            char l = c;
            return info_lit(&l, 1);
        }
    }
}

static info_t *parse_atom(parser_t *ps)
{
    unsigned char c = (unsigned char)ps->p[ps->i];

    if (c == '(') {
        ps->i++;
        if (ps->i < ps->n && ps->p[ps->i] == '*') { /* (*SKIP) (*F) ... */
            while (ps->i < ps->n && ps->p[ps->i] != ')') {
                ps->i++;
            }
            ps->i++;
            return info_empty();
        }
        if (ps->i < ps->n && ps->p[ps->i] == '?') {
            const char *q = ps->p + ps->i + 1;
            if (*q == ':' || *q == '>' || *q == '|') {
                ps->i += 2;
            } else if (*q == '=' || *q == '!') {
                ps->i += 2;
                skip_group(ps);
                return info_empty();
            } else if (*q == '<' && (q[1] == '=' || q[1] == '!')) {
                ps->i += 3;
                skip_group(ps);
                return info_empty();
            } else if (*q == '#') {
                while (ps->i < ps->n && ps->p[ps->i] != ')') {
                    ps->i++;
                }
                ps->i++;
                return info_empty();
            } else if (*q == '<' || *q == 'P' || *q == '\'') {
                /* a named group */
                while (ps->i < ps->n && ps->p[ps->i] != '>' &&
                       ps->p[ps->i] != '\'') {
                    ps->i++;
                }
                ps->i++;
            } else {
                /* flags: (?i) (?-i) (?i: ...); caseless stays caseless */
                size_t k = ps->i + 1;
                while (k < ps->n && ps->p[k] != ')' && ps->p[k] != ':') {
                    k++;
                }
                if (k < ps->n && ps->p[k] == ')') {
                    ps->i = k + 1;
                    return info_empty();
                }
                ps->i = k + 1;
            }
        }
        info_t *x = parse_alt(ps);
        if (ps->i < ps->n && ps->p[ps->i] == ')') {
            ps->i++;
        }
        return x;
    }
    if (c == '[') {
        ps->i++;
        return parse_class(ps);
    }
    if (c == '\\') {
        return parse_escape(ps);
    }
    ps->i++;
    if (c == '.') {
        return info_anychar();
    }
    if (c == '^' || c == '$') {
        return info_empty();
    }
    if (c >= 0x80) {
        /* a UTF-8 character: "some byte that is not ASCII" (its case
           folding is not ASCII's) */
        char h = HIGH;
        skip_utf8(ps);
        return info_lit(&h, 1);
    }
    char l = (char)(ps->caseless && c < 0x80 ? tolower(c) : c);
    return info_lit(&l, 1);
}

/* applies a quantifier after an atom, if there is one */
static info_t *quantify(parser_t *ps, info_t *x)
{
    size_t min, max;
    char c = ps->i < ps->n ? ps->p[ps->i] : 0;

    if (c == '?' || c == '*' || c == '+') {
        ps->i++;
        min = c == '+';
        max = c == '?' ? 1 : SIZE_MAX;
    } else if (c == '{' && ps->i + 1 < ps->n &&
               isdigit((unsigned char)ps->p[ps->i + 1])) {
        char *end;
        min = strtoul(ps->p + ps->i + 1, &end, 10);
        max = min;
        if (*end == ',') {
            max = isdigit((unsigned char)end[1]) ? strtoul(end + 1, &end, 10)
                                                 : (end++, SIZE_MAX);
        }
        ps->i = (size_t)(end - ps->p) + 1;
    } else {
        return x;
    }
    if (ps->i < ps->n && (ps->p[ps->i] == '?' || ps->p[ps->i] == '+')) {
        ps->i++;
    }
    if (min == 1 && max == 1) {
        return x;
    }
    if (min == 0) {
        if (max == 1 && x->exact) {
            return alternate(x, info_empty());
        }
        info_free(x);
        return info_anychar(); /* any text, nothing required */
    }
    /* at least min times: what min copies in a row require */
    size_t copies = min < 8 ? min : 8;
    for (size_t k = 1; x->exact && k < copies; k++) {
        info_t *c = info_new();
        c->exact = 1;
        c->any = 1;
        set_copy(&c->e, &x->e);
        /* x is already concatenated with k - 1 copies */
        info_t *once = c;
        x = concat(x, once);
    }
    info_t *y = info_new();
    const set_t *r = req_of(x);
    y->any = r == NULL;
    if (r) {
        set_copy(&y->r, r);
    }
    info_free(x);
    return y;
}

static info_t *parse_concat(parser_t *ps)
{
    info_t *x = info_empty();

    while (ps->i < ps->n && ps->p[ps->i] != '|' && ps->p[ps->i] != ')') {
        info_t *a = parse_atom(ps);
        a = quantify(ps, a);
        x = concat(x, a);
    }
    return x;
}

static info_t *parse_alt(parser_t *ps)
{
    info_t *x = parse_concat(ps);

    while (ps->i < ps->n && ps->p[ps->i] == '|') {
        ps->i++;
        x = alternate(x, parse_concat(ps));
    }
    return x;
}

/* the atoms of rule r into set a; 0, or -1: no usable atoms (why) */
static int atoms_of(const gd_gr_rule_t *r, set_t *a, char *why, size_t wn)
{
    parser_t ps = {.p = r->pattern,
                   .n = strlen(r->pattern),
                   .caseless = 1}; /* lowercase all: a widening */
    info_t *x;

    if (r->pattern_options & PCRE2_EXTENDED) {
        snprintf(why, wn, "flag x");
        return -1; /* whitespace and comments: not parsed here */
    }
    x = parse_alt(&ps);
    const set_t *req = req_of(x);
    int rc = -1;
    if (!ps.bad && ps.i >= ps.n && req && set_minlen(req) >= ATOM_MIN) {
        set_copy(a, req);
        rc = 0;
    } else if (req && !ps.bad && ps.i >= ps.n) {
        snprintf(why, wn, "shortest atom %zu bytes", set_minlen(req));
    } else {
        snprintf(why, wn, "%s",
                 ps.bad        ? "UTF-8 in \\Q..\\E"
                 : ps.i < ps.n ? "unparsed"
                               : "nothing required");
    }
    info_free(x);
    return rc;
}

static hs_database_t *hs_db;
static hs_scratch_t *hs_scr;
static unsigned char *filtered;   /* by pattern: has atoms */
static unsigned char *hs_hit;     /* by pattern: an atom seen in the value;
                                     [npat]: a byte that is not ASCII */
static unsigned char *needs_high; /* by pattern: one atom is not ASCII */
static size_t nfiltered, natoms;

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

/* the atoms of every pattern in one literal database; 0, or -1 */
static int hs_build(void)
{
    set_t *sets = calloc(npat + 1, sizeof(set_t));
    const char **lit;
    unsigned *flags, *ids, k = 0;
    hs_compile_error_t *err = NULL;
    double t0 = now_s();

    char(*why)[64] = calloc(npat + 1, 64);

    filtered = calloc(npat + 1, 1);
    needs_high = calloc(npat + 1, 1);
    hs_hit = calloc(npat + 1, 1);
    if (hs_valid_platform() != HS_SUCCESS) {
        printf("hyperscan: this CPU is not supported\n");
        return -1;
    }
    for (size_t i = 0; i < npat; i++) {
        if (atoms_of(pat_rules[i], &sets[i], why[i], 64) == 0) {
            filtered[i] = 1;
            nfiltered++;
            natoms += sets[i].n;
        }
    }
    lit = calloc(natoms + 2, sizeof(char *));
    flags = calloc(natoms + 2, sizeof(unsigned));
    ids = calloc(natoms + 2, sizeof(unsigned));
    /* each atom escaped as an expression; an atom with a high byte is
       "some byte that is not ASCII", one expression of id npat */
    int any_high = 0;
    for (size_t i = 0; i < npat; i++) {
        for (size_t j = 0; filtered[i] && j < sets[i].n; j++) {
            const char *a = sets[i].s[j];
            if (strchr(a, HIGH) != NULL) {
                needs_high[i] = 1;
                any_high = 1;
                continue;
            }
            char *e = malloc(strlen(a) * 4 + 1), *q = e;
            for (const char *c = a; *c; c++) {
                if (isalnum((unsigned char)*c)) {
                    *q++ = *c;
                } else {
                    q += sprintf(q, "\\x%02x", (unsigned char)*c);
                }
            }
            *q = '\0';
            lit[k] = e;
            flags[k] = HS_FLAG_CASELESS | HS_FLAG_SINGLEMATCH;
            ids[k] = (unsigned)i;
            k++;
        }
    }
    if (any_high) {
        lit[k] = strdup("[\\x80-\\xff]");
        flags[k] = HS_FLAG_SINGLEMATCH;
        ids[k] = (unsigned)npat;
        k++;
    }
    int rc = 0;
    if (k > 0 && (hs_compile_multi(lit, flags, ids, k, HS_MODE_BLOCK, NULL,
                                   &hs_db, &err) != HS_SUCCESS ||
                  hs_alloc_scratch(hs_db, &hs_scr) != HS_SUCCESS)) {
        printf("hyperscan: %s\n", err ? err->message : "no scratch");
        rc = -1;
    }
    for (size_t i = 0; i < k; i++) {
        free((char *)lit[i]);
    }
    if (getenv("GR_ATOMS")) {
        for (size_t i = 0; i < npat; i++) {
            printf("  atoms %-24s", pat_rules[i]->id);
            if (!filtered[i]) {
                printf(" (none: always runs: %s)", why[i]);
            }
            for (size_t j = 0; filtered[i] && j < sets[i].n && j < 8; j++) {
                printf(strchr(sets[i].s[j], HIGH) ? " (not ASCII)" : " \"%s\"",
                       sets[i].s[j]);
            }
            printf("%s\n", filtered[i] && sets[i].n > 8 ? " ..." : "");
        }
    }
    printf("  (atoms computed and compiled in %.1f ms)\n",
           (now_s() - t0) * 1e3);
    for (size_t i = 0; i < npat; i++) {
        set_free(&sets[i]);
    }
    free(sets);
    free(why);
    free(lit);
    free(flags);
    free(ids);
    if (err) {
        hs_free_compile_error(err);
    }
    return rc;
}

/* the patterns of the prototype over value i: n matches */
static int prefilter_value(size_t i, int *which)
{
    int n = 0;
    if (hs_db != NULL) {
        memset(hs_hit, 0, npat + 1);
        hs_scan(hs_db, nv[i].text, (unsigned)nv[i].len, 0, hs_scr, hs_on_match,
                NULL);
    }
    for (size_t r = 0; r < npat; r++) {
        if (filtered[r] && !hs_hit[r] && !(needs_high[r] && hs_hit[npat])) {
            continue;
        }
        int rc = pcre2_jit_match(pat_rules[r]->code, (PCRE2_SPTR)nv[i].text,
                                 nv[i].len, 0, 0, md, NULL);
        if (rc > 0) {
            n++;
            if (which) {
                which[r] = 1;
            }
        }
    }
    return n;
}

/* the literal scan alone, no PCRE2 */
static void run_scan_only(void)
{
    for (size_t i = 0; i < nval; i++) {
        hs_scan(hs_db, nv[i].text, (unsigned)nv[i].len, 0, hs_scr, hs_on_match,
                NULL);
    }
    sink += hs_hit[0];
}

static void run_prefilter(void)
{
    for (size_t i = 0; i < nval; i++) {
        sink += (unsigned long)prefilter_value(i, NULL);
    }
}

/*
 * GR_CHECK=FILE.jsonl: every line's "body" (a JSON value, or a string
 * holding one): each string value normalised, every pattern with and
 * without the prefilter; prints the matches the prefilter lost
 */
static void check_corpus(const char *path)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0, lines = 0, values = 0, matches = 0, lost = 0;
    int *with = calloc(npat + 1, sizeof(int));

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
            memset(with, 0, npat * sizeof(int));
            prefilter_value(i, with);
            values++;
            for (size_t r = 0; r < npat; r++) {
                int rc =
                    pcre2_jit_match(pat_rules[r]->code, (PCRE2_SPTR)nv[i].text,
                                    nv[i].len, 0, 0, md, NULL);
                if (rc > 0) {
                    matches++;
                    if (!with[r]) {
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
           "%zu lost by the prefilter\n",
           path, lines, values, matches, lost);
    free(line);
    free(with);
    fclose(f);
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

#ifdef GR_HYPERSCAN
    const char *want_hs = getenv("GR_HYPERSCAN");
    if (npat > 0 && (want_hs == NULL || strcmp(want_hs, "0") != 0)) {
        printf("\nprototype: a literal prefilter (Hyperscan), PCRE2 to "
               "confirm:\n");
        if (hs_build() == 0) {
            double t_pre = timed(run_prefilter, seconds);
            /* the engine without its patterns, plus the prefilter's */
            double t_proto = t_det + t_pre;
            printf("  %zu of %zu patterns filtered by %zu atoms, %zu "
                   "always run\n",
                   nfiltered, npat, natoms, npat - nfiltered);
            printf("  the patterns with it   %8.2f us per body (alone, "
                   "without it: %.2f us)\n",
                   t_pre * 1e6, t_patterns * 1e6);
            printf("  the engine with it (detectors-only engine + the "
                   "patterns with it) %8.2f us:\n"
                   "    %.1f MB/s, %.3fx standalone PCRE2, %.1fx the "
                   "engine now\n",
                   t_proto * 1e6, mb / t_proto, mb / t_proto / pcre_mbs,
                   t_full / t_proto);
            if (getenv("GR_ATOMS")) {
                /* the patterns this body's values let through */
                printf("  let through by the body's values:");
                for (size_t r = 0; r < npat; r++) {
                    int in = !filtered[r];
                    for (size_t i = 0; !in && i < nval; i++) {
                        memset(hs_hit, 0, npat + 1);
                        hs_scan(hs_db, nv[i].text, (unsigned)nv[i].len, 0,
                                hs_scr, hs_on_match, NULL);
                        in = hs_hit[r] || (needs_high[r] && hs_hit[npat]);
                    }
                    if (in) {
                        one = pat_rules[r];
                        printf(" %s (%.1f us)", pat_rules[r]->id,
                               timed(run_one, 0.02) * 1e6);
                    }
                }
                printf("\n");
            }
            if (hs_db != NULL) {
                double t_scan = timed(run_scan_only, seconds);
                printf("  the literal scan alone %8.2f us per body: the "
                       "engine with it and atoms no benign text holds\n"
                       "    %8.2f us, %.1f MB/s, %.1fx the engine now\n",
                       t_scan * 1e6, (t_det + t_scan) * 1e6,
                       mb / (t_det + t_scan), t_full / (t_det + t_scan));
            }
            const char *check = getenv("GR_CHECK");
            if (check) {
                check_corpus(check);
            }
        }
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
