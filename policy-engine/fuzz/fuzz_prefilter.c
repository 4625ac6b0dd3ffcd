/*
 * libFuzzer target for gd_gr_prefilter (`make fuzz`, needs clang): the
 * prefilter never loses a match.
 *
 * The first byte picks the mode:
 *   - even: the rest is a text; every pattern of the packs
 *     (policies/packs, compiled as the loader does) that has a non-empty
 *     match in it, raw or normalised (gd_norm), must be one the section's
 *     prefilter lets run (gd_gr_prefilter_scan, the engine's path);
 *   - odd: the rest is PATTERN NUL TEXT, the pattern compiled with the
 *     options of bits 1 to 4 (i, u, s, m); when it has a non-empty match
 *     in the text, one of its atoms (gd_gr_atoms) must be in the text,
 *     ASCII case ignored (or, for a caseless one, U+212A or U+017F, which
 *     fold to 'k' and 's'), and its full-pattern tier expression
 *     (gd_gr_hs_expr, compiled by Hyperscan as the prefilter does) must
 *     match the text (a UTF-8 one, for a UTF-8 pattern), and so must the
 *     expression of each of its parts (gd_gr_parts).
 */
#define PCRE2_CODE_UNIT_WIDTH 8

#include "gd_gr_prefilter.h"
#include "gd_norm.h"

#include <ctype.h>
#include <hs/hs.h>
#include <jansson.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PACKS GD_TEST_DATA "/../../policies/packs"

static gd_gr_rule_t rules[512];
static size_t nrules;
static gd_gr_prefilter_t *pf;
static gd_gr_pf_scratch_t pfs;
static pcre2_match_data *md;
static pcre2_match_context *mctx;
static gd_norm_t nt;

static uint32_t options_of(const char *f)
{
    uint32_t o = 0;

    for (; f && *f; f++) {
        o |= *f == 'i'   ? PCRE2_CASELESS
             : *f == 'm' ? PCRE2_MULTILINE
             : *f == 's' ? PCRE2_DOTALL
             : *f == 'x' ? PCRE2_EXTENDED
             : *f == 'u' ? PCRE2_UTF | PCRE2_UCP
                         : 0;
    }
    return o;
}

static void load_pack(const char *name)
{
    char path[512];
    json_error_t e;
    json_t *doc, *r;
    size_t i;

    snprintf(path, sizeof(path), "%s/%s", PACKS, name);
    doc = json_load_file(path, 0, &e);
    json_array_foreach(json_object_get(doc, "rules"), i, r)
    {
        const char *p = json_string_value(json_object_get(r, "pattern"));
        int err;
        PCRE2_SIZE off;

        if (p == NULL || nrules == sizeof(rules) / sizeof(rules[0])) {
            continue;
        }
        gd_gr_rule_t *x = &rules[nrules];

        x->pattern = strdup(p);
        x->pattern_options =
            options_of(json_string_value(json_object_get(r, "flags")));
        x->code = pcre2_compile((PCRE2_SPTR)p, PCRE2_ZERO_TERMINATED,
                                x->pattern_options, &err, &off, NULL);
        if (x->code && (x->pattern_options & PCRE2_UTF)) {
            x->code_invalid_utf = pcre2_compile(
                (PCRE2_SPTR)p, PCRE2_ZERO_TERMINATED,
                x->pattern_options | PCRE2_MATCH_INVALID_UTF, &err, &off, NULL);
        }
        x->detector = -1;
        if (x->code) {
            nrules++;
        }
    }
    json_decref(doc);
}

static void init(void)
{
    load_pack("pii.json");
    load_pack("prompt-injection.json");
    pf = gd_gr_prefilter_new(rules, nrules, getenv("GUARD_HSCACHE"));
    if (pf == NULL) {
        abort();
    }
    md = pcre2_match_data_create(1, NULL);
    mctx = pcre2_match_context_create(NULL);
    pcre2_set_match_limit(mctx, 100000);
    pcre2_set_depth_limit(mctx, 10000);
    gd_norm_init(&nt);
}

/* a non-empty match of code in t[0..n) */
static int matches(const pcre2_code *code, const char *t, size_t n)
{
    size_t start = 0;

    while (start <= n) {
        int rc = pcre2_match(code, (PCRE2_SPTR)t, n, start, 0, md, mctx);
        PCRE2_SIZE *ov;

        if (rc < 0) {
            return 0;
        }
        ov = pcre2_get_ovector_pointer(md);
        if (ov[1] > ov[0]) {
            return 1;
        }
        start = ov[0] + 1;
    }
    return 0;
}

static int utf8_ok(const char *t, size_t n)
{
    for (size_t i = 0; i < n;) {
        int32_t cp;
        size_t l = gd_norm_u8dec((const unsigned char *)t + i, n - i, &cp);

        if (l == 0) {
            return 0;
        }
        i += l;
    }
    return 1;
}

static void check_packs(const char *t, size_t n)
{
    static unsigned char run[sizeof(rules) / sizeof(rules[0]) + 1];
    int valid = utf8_ok(t, n);

    if (gd_gr_prefilter_scan(pf, &pfs, t, n, run) != 0) {
        abort();
    }
    for (size_t i = 0; i < nrules; i++) {
        const pcre2_code *code = rules[i].code;

        if (run[i]) {
            continue;
        }
        if (!valid && rules[i].code_invalid_utf) {
            code = rules[i].code_invalid_utf;
        } else if (!valid && (rules[i].pattern_options & PCRE2_UTF)) {
            continue;
        }
        if (matches(code, t, n)) {
            fprintf(stderr, "lost: pattern %zu /%s/\n", i, rules[i].pattern);
            abort();
        }
    }
}

/* whether lit[0..l) is in t[0..n), ASCII case ignored */
static int has(const char *t, size_t n, const char *lit, size_t l)
{
    for (size_t i = 0; i + l <= n; i++) {
        size_t k = 0;

        while (k < l && tolower((unsigned char)t[i + k]) ==
                            tolower((unsigned char)lit[k])) {
            k++;
        }
        if (k == l) {
            return 1;
        }
    }
    return 0;
}

/*
 * Whether t holds a white space that NFKC keeps and gd_norm maps to ' '
 * (NEL, U+1680, U+2028, U+2029): \s matches it on raw text only.
 */
static int seps(const char *t, size_t n)
{
    return has(t, n, "\xc2\x85", 2) || has(t, n, "\xe1\x9a\x80", 3) ||
           has(t, n, "\xe2\x80\xa8", 3) || has(t, n, "\xe2\x80\xa9", 3);
}

static int on_hs(unsigned id, unsigned long long from, unsigned long long to,
                 unsigned flags, void *ctx)
{
    (void)id;
    (void)from;
    (void)to;
    (void)flags;
    *(int *)ctx = 1;
    return 1;
}

/*
 * The full-pattern tier: when PCRE2 has a non-empty match in t (UTF-8,
 * for a UTF-8 pattern: the scan's condition), the pattern's Hyperscan
 * expression (gd_gr_hs_expr), compiled as the prefilter does, matches.
 */
static void check_full(const char *pat, uint32_t o, const pcre2_code *code,
                       const char *t, size_t n)
{
    char *e, why[64];
    unsigned fl;
    hs_database_t *db = NULL;
    hs_compile_error_t *err = NULL;
    hs_scratch_t *scr = NULL;
    int hit = 0;

    if (((o & PCRE2_UTF) && !utf8_ok(t, n)) || n > UINT32_MAX ||
        gd_gr_hs_expr(pat, o, &e, &fl, why, sizeof(why)) != 0) {
        return;
    }
    if (hs_compile(e, fl, HS_MODE_BLOCK, NULL, &db, &err) != HS_SUCCESS) {
        hs_free_compile_error(err); /* refused: it falls back */
        free(e);
        return;
    }
    if (matches(code, t, n) && hs_alloc_scratch(db, &scr) == HS_SUCCESS) {
        hs_scan(db, n ? t : "", (unsigned)n, 0, scr, on_hs, &hit);
        if (!hit) {
            fprintf(stderr,
                    "lost by the full tier: /%s/ (options %x), "
                    "as /%s/\n",
                    pat, (unsigned)o, e);
            abort();
        }
    }
    hs_free_scratch(scr);
    hs_free_database(db);
    free(e);
}

static void check_pattern(unsigned opts, const char *d, size_t size)
{
    const char *nul = memchr(d, 0, size);
    gd_gr_atoms_t a;
    char why[64], pat[257];
    uint32_t o = 0;
    int err;
    PCRE2_SIZE off;
    pcre2_code *code;

    if (nul == NULL || (size_t)(nul - d) > 256) {
        return;
    }
    memcpy(pat, d, (size_t)(nul - d));
    pat[nul - d] = '\0';
    const char *t = nul + 1;
    size_t n = size - (size_t)(nul - d) - 1;

    o |= opts & 2 ? PCRE2_CASELESS : 0;
    o |= opts & 4 ? PCRE2_UTF | PCRE2_UCP : 0;
    o |= opts & 8 ? PCRE2_DOTALL : 0;
    o |= opts & 16 ? PCRE2_MULTILINE : 0;
    if ((o & PCRE2_UTF) && !utf8_ok(pat, strlen(pat))) {
        return;
    }
    code = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                         o | ((o & PCRE2_UTF) ? PCRE2_MATCH_INVALID_UTF : 0),
                         &err, &off, NULL);
    if (code == NULL) {
        return;
    }
    if ((o & PCRE2_UTF) && seps(t, n)) {
        /* the engine matches normalised text, where \s is ASCII */
        if (gd_norm(&nt, t, n, GD_NORM_UNICODE) != 0) {
            pcre2_code_free(code);
            return;
        }
        t = nt.text;
        n = nt.len;
    }
    if (gd_gr_atoms(pat, o, &a, why, sizeof(why)) == 0 && matches(code, t, n)) {
        /* the scan's view: white-space runs are one space */
        static char view[65536];
        size_t vn = n <= sizeof(view) ? gd_gr_ws_collapse(t, n, view) : 0;
        int seen = n > sizeof(view) ||
                   (a.caseless && (has(view, vn, "\xe2\x84\xaa", 3) ||
                                   has(view, vn, "\xc5\xbf", 2)));

        for (size_t i = 0; !seen && i < a.n; i++) {
            seen = has(view, vn, a.lit[i], a.len[i]);
        }
        if (!seen) {
            fprintf(stderr, "lost: /%s/ (options %x) on the text\n", pat,
                    (unsigned)o);
            abort();
        }
    }
    check_full(pat, o, code, t, n);

    /* each of its parts, as the prefilter compiles it, matches too */
    char *parts[GD_GR_MAX_PARTS];
    size_t np = gd_gr_parts(pat, o, parts);

    for (size_t i = 0; i < np; i++) {
        check_full(parts[i], o, code, t, n);
        free(parts[i]);
    }
    pcre2_code_free(code);
}

/* the packs' section, compiled before the first input (its Hyperscan
   databases take seconds, more than libFuzzer's -timeout on a busy
   machine) */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    if (data[0] & 1) {
        check_pattern(data[0], (const char *)data + 1, size - 1);
        return 0;
    }
    if (!seps((const char *)data + 1, size - 1)) {
        check_packs((const char *)data + 1, size - 1);
    }
    if (gd_norm(&nt, (const char *)data + 1, size - 1, GD_NORM_UNICODE) == 0) {
        check_packs(nt.text, nt.len);
    }
    return 0;
}
