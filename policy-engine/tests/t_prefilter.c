/*
 * Unit tests for gd_gr_prefilter: both tiers are sound (the full-pattern
 * tier's Hyperscan expressions, the atoms).
 *
 * Every pattern of the packs (policies/packs) and a set of tricky patterns
 * (alternations, optional groups, classes, caseless, lookarounds,
 * back-references, \Q..\E, non-ASCII literals, inline (?i), counted
 * repeats, byte mode, (*ACCEPT)) are loaded as one section through the
 * policy loader; over a corpus of texts (the string values of
 * t/corpus/prompt-injection's bodies, variations of each, and a text that
 * each tricky pattern matches), every text on which a pattern matches
 * (a non-empty match, as the engine counts it) must be one on which the
 * prefilter lets that pattern run.  Raw texts and normalised ones.
 */
#define PCRE2_CODE_UNIT_WIDTH 8

#include "gd_gr_hscache.h"
#include "gd_gr_prefilter.h"
#include "gd_guardrails.h"
#include "gd_norm.h"
#include "gd_policy.h"
#include "tap.h"

#include <ctype.h>
#include <hs/hs.h>
#include <dirent.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PACKS GD_TEST_DATA "/../../policies/packs"
#define CORPUS GD_TEST_DATA "/../corpus/prompt-injection"

/* a tricky pattern, its flags, a text it matches */
static const struct {
    const char *pattern, *flags, *text;
} tricky[] = {
    {"ign(?:ore|oring)\\s+(all\\s+)?previous", "i", "IGNORING previous"},
    {"\\bfrom\\s+now\\s+on\\b", "iu", "from \t\n now  on"},
    {"colou?r", "", "color"},
    {"ab?cde", "", "acde"},
    {"(ab){3}", "", "ababab"},
    {"a{3}", "", "aaa"},
    {"x{2,}yz", "", "xxyz"},
    {"x{2,5}yz", "", "xxyz"},
    {"foo{0,3}bar", "", "fobar"},
    {"\\Qab\\E?cd", "", "acd"},
    {"\\Qa.b\\E+", "", "a.bbb"},
    {"\\Q.*+|)\\E", "", "x.*+|)y"},
    {"[Kk]ill", "iu", "\xe2\x84\xaaill"},
    {"kill", "iu", "\xe2\x84\xaaILL"},
    {"pass", "iu", "pa\xc5\xbfs"},
    {"pa(?=ss)ssword", "", "password"},
    {"(?<=x)yz", "", "xyz"},
    {"(?<!q)yz", "", "ayz"},
    {"(a|b)\\1cd", "", "aacd"},
    {"(?i)HELLO world", "", "hello WORLD"},
    {"x(?i)HELLO", "", "xhello"},
    {"(?i:ab)CD", "", "ABcd"},
    {"caf\xc3\xa9", "u", "caf\xc3\xa9"},
    {"CAF\xc3\x89", "iu", "caf\xc3\xa9"},
    {"\xc3\xa9t\xc3\xa9", "iu", "\xc3\x89T\xc3\x89"},
    {"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", "u",
     "\xe6\x97\xa5\xe6\x9c\xac"
     "\xe8\xaa\x9e"},
    {"\xc3\xa9?xy", "", "\xc3xy"},
    {"\xc3\xa9+xy", "", "\xc3\xa9\xa9xy"},
    {"(?:abc|def)?ghi", "", "ghi"},
    {"[a-c]{2}xyz", "", "abxyz"},
    {"\\x41\\x42C", "i", "abc"},
    {"a(*ACCEPT)bcd", "", "a"},
    {"\\bdo\\s+anything\\s+now\\b", "i", "Do Anything Now"},
    {"x{,3}yz", "", "x{,3}yz"},
    {"x{,3}yz", "", "yz"},
    {"(?x) a b c", "", "abc"},
    {" a b c # x", "x", "abc"},
    {"(?|(abc)|(xyz))q", "", "xyzq"},
    {"\\d{3}-\\d{4}", "", "555-1234"},
    {"admin|root", "i", "ROOT"},
    {"\\x{17F}ecret", "iu", "SECRET"},
    {"(?:ab)+cd", "", "ababcd"},
    {"(?P<n>ab)(?P=n)", "", "abab"},
    {"(?'n'ab)\\k'n'x", "", "ababx"},
    {"(?#comment)keyword", "", "KEYWORD"},
    {"\\cAxy", "", "\x01xy"},
    {"\\o{101}bc", "i", "abc"},
    {"[\\x{e9}x]yz", "u", "\xc3\xa9yz"},
    {"a[]b]cd", "", "a]cd"},
    {"word{2}", "", "wordd"},
    {"(?:x|y){0,3}zzz", "", "zzz"},
    {"[[:alpha:]]bc", "", "abc"},
    {"[^abc]def", "", "xdef"},
    {"(?s)begin.*end", "", "begin\nend"},
    {"a\\Kbc", "", "abc"},
    {"(?:(?:ab|cd)(?:ef|gh)){2}", "", "abghcdef"},
    {"(*UTF)caf\xc3\xa9", "", "caf\xc3\xa9"},
    {"(*UCP)(?i)stra\xc3\x9f"
     "e",
     "", "STRASSE"},
    {"(?(?=a)ab|cd)", "", "cd"},
    {"(a)?(?(1)b|c)de", "", "cde"},
    {"ab\\E?c", "", "ac"},
    {"a\\Q\\E?bc", "", "bc"},
    {"(?=abc)\\w+", "", "abc"},
    {"[\\Q]\\E]x", "", "]x"},
    {"\\Ntest", "", "atest"},
    {"\\p{Lu}xyz", "u", "Axyz"},
    {"\\N{U+0041}bc", "u", "Abc"},
    {"fo{1}o{1,1}bar", "", "foobar"},
    {"(ab|cd|ef|gh|ij|kl|mn|op|qr|st|uv|wx)(ab|cd|ef|gh|ij|kl)(ab|cd)", "",
     "klijcd"},
    {"a.b|c", "", "c"},
    {"(?:)ab", "", "ab"},
    {"\\101bc", "", "Abc"},
    {"\\x{41}{2}bc", "", "AAbc"},
    /* the full-pattern tier: what Hyperscan approximates or is widened */
    {"(ab)c\\1d", "", "abcabd"},
    {"(?<![a-z])qrs", "i", "1QRS"},
    {"xa++yz", "", "xaayz"},
    {"(?>ab|a)bcz", "", "abbcz"},
    {"^(a+)+$", "", "aaaa"},
    {"(qqq)(?1)rstu", "", "qqqqqqrstu"},
    {"skipme(*SKIP)(*F)|keep\\w+", "i", "keepit"},
    {"(?:no(*SKIP)(*FAIL)|yes)tail", "", "yestail"},
    {"\\bgr\\w+ma\\b", "iu", "gr\xc3\xa4\xc3\x9fma"},
    {"x\\w{2}y", "u", "x\xc3\xa9\xc3\xb1y"},
    {"x\\W{2}y", "u", "x\xe2\x80\x94\xc2\xa0y"},
    {"x.{2}y", "u", "x\xe6\x97\xa5\xe6\x9c\xacy"},
    {"[^a-c]{3}z", "u", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9ez"},
    {"\\b\xc3\xa9tape\\b", "iu", ".\xc3\x89TAPE."},
    {"\\d{2}x", "u", "\xd9\xa3\xd9\xa4x"},
    {"\\s{2}sp", "u", "\xc2\xa0\xe2\x80\x83sp"},
    {"(?-i:Key)s", "iu", "KeyS"},
    {"ke\\x{79}", "iu",
     "\xe2\x84\xaa"
     "EY"},
    {"qu[\\x{2019}']ote", "u", "qu\xe2\x80\x99ote"},
    {"[\xc3\xa0-\xc3\xbf]{2}q", "u", "\xc3\xa9\xc3\xa8q"},
    {"[^\\w\\s]{2}z", "u", "!\xe2\x80\x94z"},
    {"\\Bonly\\B", "u", "\xc3\xa9only\xc3\xa9"},
    {"a{2,3}bq", "", "aaabq"},
    /* cut into parts (gd_gr_parts): each part alone must match too */
    {"(?:ab|cd)[)(](?:ef|gh)", "", "cd(gh"},
    {"(?:qq|rr){0,2}(?:st|uv)\\((?:wx|yz)\\)", "i", "UV(yz)"},
    {"(?<=k)(?:ab)(?!z)(?:cd)+", "", "kabcdcd"},
    {"(?i:mix)(?-i:ED)(?:case)", "i", "mIxEDCase"},
    {"(?#c(x)(?:ab)(?:cd)", "", "abcd"},
    {"(?<n>ab)(?:cd)\\x{41}(?'m'ef)(?P<o>gh)", "", "abcdAefgh"},
    {"(?>ab|a)(?:bc)(?:de){1,}", "", "abbcde"},
    {"[\\](](?:ab)(?:c[)]d)", "", "(abc)d"},
    {"(?:ab)?\?(?:cd)(?:ef)", "", "cdef"},
    {"^(?:ab)(?:cd)$", "", "abcd"},
    {"(?:ab)(?:x?)(?:cd)", "", "abcd"},
    {"(?:\\w+\\s+){0,2}?(?:xy)\\b(?:zz)?(?:\\s+now)", "iu", "a b XY NOW"},
    {"(?:caf\xc3\xa9)\\s+(?:cr\xc3\xa8me)", "iu", "CAF\xc3\x89 CR\xc3\x88ME"},
};

#define NTRICKY (sizeof(tricky) / sizeof(tricky[0]))

static char dir[256];
static char **texts;
static size_t *text_len;
static size_t ntexts, texts_cap;

static void add_text(const char *t, size_t n)
{
    if (ntexts == texts_cap) {
        texts_cap = texts_cap ? texts_cap * 2 : 1024;
        texts = realloc(texts, texts_cap * sizeof(*texts));
        text_len = realloc(text_len, texts_cap * sizeof(*text_len));
    }
    texts[ntexts] = malloc(n + 1);
    memcpy(texts[ntexts], t, n);
    texts[ntexts][n] = '\0';
    text_len[ntexts++] = n;
}

/* a text and its variations: upper, lower, case flipped, halves */
static void add_variations(const char *t, size_t n)
{
    char *v = malloc(n + 1);

    add_text(t, n);
    for (int k = 0; k < 3; k++) {
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)t[i];

            v[i] = (char)(k == 0   ? toupper(c)
                          : k == 1 ? tolower(c)
                                   : (i % 2 ? toupper(c) : tolower(c)));
        }
        add_text(v, n);
    }
    if (n > 8) {
        add_text(t, n / 2);
        add_text(t + n / 2, n - n / 2);
    }
    free(v);
}

static void walk(json_t *j, int depth)
{
    size_t i;
    const char *k;
    json_t *v;

    if (depth > 32) {
        return;
    }
    if (json_is_string(j)) {
        add_variations(json_string_value(j), json_string_length(j));
    } else if (json_is_array(j)) {
        json_array_foreach(j, i, v)
        {
            walk(v, depth + 1);
        }
    } else if (json_is_object(j)) {
        json_object_foreach(j, k, v)
        {
            walk(v, depth + 1);
        }
    }
}

static void load_corpus(void)
{
    const char *files[] = {CORPUS "/benign.jsonl", CORPUS "/malicious.jsonl"};

    for (size_t f = 0; f < 2; f++) {
        FILE *fp = fopen(files[f], "r");
        char *line = NULL;
        size_t cap = 0;

        if (fp == NULL) {
            continue;
        }
        while (getline(&line, &cap, fp) > 0) {
            json_error_t e;
            json_t *j = json_loads(line, 0, &e), *b, *d = NULL;

            if (j == NULL) {
                continue;
            }
            b = json_object_get(j, "body");
            if (json_is_string(b)) {
                d = json_loads(json_string_value(b), JSON_DECODE_ANY, &e);
            }
            walk(d ? d : b, 0);
            json_decref(d);
            json_decref(j);
        }
        free(line);
        fclose(fp);
    }
}

/* whether code has a non-empty match in t[0..n), as the engine looks */
static int matches_nonempty(const pcre2_code *code, const char *t, size_t n,
                            pcre2_match_data *md);

static int matches(const gd_gr_rule_t *r, const char *t, size_t n,
                   pcre2_match_data *md, int valid_utf)
{
    const pcre2_code *code = r->code;

    if ((r->pattern_options & PCRE2_UTF) && !valid_utf) {
        code = r->code_invalid_utf;
    }
    return matches_nonempty(code, t, n, md);
}

/* a pattern compiled alone by Hyperscan, for the byte checks */
typedef struct {
    hs_database_t *db;
    hs_scratch_t *scr;
} hs_ok_t;

static int hs_open(hs_ok_t *h, const char *e, unsigned fl)
{
    hs_compile_error_t *err = NULL;

    memset(h, 0, sizeof(*h));
    if (hs_compile(e, fl & ~(unsigned)HS_FLAG_SINGLEMATCH, HS_MODE_BLOCK, NULL,
                   &h->db, &err) != HS_SUCCESS) {
        hs_free_compile_error(err);
        return -1;
    }
    return hs_alloc_scratch(h->db, &h->scr) == HS_SUCCESS ? 0 : -1;
}

static void hs_close(hs_ok_t *h)
{
    hs_free_scratch(h->scr);
    hs_free_database(h->db);
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

static int hs_hit(hs_ok_t *h, const char *t, size_t n)
{
    int hit = 0;

    hs_scan(h->db, t, (unsigned)n, 0, h->scr, on_hs, &hit);
    return hit;
}

/* a non-empty match of code in t[0..n), as the engine counts one */
static int matches_nonempty(const pcre2_code *code, const char *t, size_t n,
                            pcre2_match_data *md)
{
    for (size_t start = 0; start <= n;) {
        int rc = pcre2_match(code, (PCRE2_SPTR)t, n, start, 0, md, NULL);
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
    size_t i = 0;

    while (i < n) {
        int32_t cp;
        size_t l = gd_norm_u8dec((const unsigned char *)t + i, n - i, &cp);

        if (l == 0) {
            return 0;
        }
        i += l;
    }
    return 1;
}

static gd_policy_set_t *load_section(void)
{
    char path[512];
    json_t *rules = json_array(), *packs = json_array(), *doc;
    DIR *d = opendir(PACKS);
    struct dirent *e;
    gd_errors_t errs = {0};
    gd_policy_set_t *set;

    snprintf(path, sizeof(path), "%s/packs", dir);
    if (symlink(PACKS, path) != 0) {
        perror("symlink");
    }
    while (d && (e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);

        if (l > 5 && strcmp(e->d_name + l - 5, ".json") == 0) {
            json_array_append_new(packs, json_stringn(e->d_name, l - 5));
        }
    }
    if (d) {
        closedir(d);
    }
    for (size_t i = 0; i < NTRICKY; i++) {
        char id[32];

        snprintf(id, sizeof(id), "tricky-%zu", i);
        json_array_append_new(
            rules, json_pack("{s:s, s:[s], s:s, s:s, s:s}", "id", id, "targets",
                             "body", "pattern", tricky[i].pattern, "flags",
                             tricky[i].flags, "action", "log"));
    }
    doc = json_pack("{s:s, s:{s:o, s:o}}", "tenant", "acme", "guardrails",
                    "packs", packs, "rules", rules);
    snprintf(path, sizeof(path), "%s/acme.json", dir);
    json_dump_file(doc, path, JSON_INDENT(1));
    json_decref(doc);

    set = gd_policy_set_load(dir, &errs);
    for (size_t i = 0; i < errs.n; i++) {
        printf("# %s\n", errs.lines[i]);
    }
    gd_errors_free(&errs);
    return set;
}

static int count_hit(unsigned id, unsigned long long from,
                     unsigned long long to, unsigned flags, void *ctx)
{
    (void)id, (void)from, (void)to, (void)flags;
    ++*(int *)ctx;
    return 0;
}

/* how many of expr[0..n) match text, with db */
static int db_hits(hs_database_t *db, const char *text)
{
    hs_scratch_t *sc = NULL;
    int hits = 0;

    if (db == NULL || hs_alloc_scratch(db, &sc) != HS_SUCCESS ||
        hs_scan(db, text, (unsigned)strlen(text), 0, sc, count_hit, &hits) !=
            HS_SUCCESS) {
        hits = -1;
    }
    hs_free_scratch(sc);
    return hits;
}

/* gd_gr_hscache: compiled once, read back, a damaged file compiled again */
static void test_cache(void)
{
    char cache[600], path[900];
    const char *expr[] = {"ab+c", "x[0-9]y"}, *other[] = {"ab+d"};
    unsigned flags[] = {HS_FLAG_SINGLEMATCH, HS_FLAG_SINGLEMATCH},
             ids[] = {0, 1};
    hs_database_t *db = NULL;
    hs_compile_error_t *err = NULL;
    int cached = -1, files = 0, readable = 0;
    struct stat st;
    DIR *d;
    struct dirent *e;

    snprintf(cache, sizeof(cache), "%s/%s", dir, GD_GR_HSCACHE_DIR);
    TAP_OK(gd_gr_hs_compile(cache, expr, flags, ids, 2, &db, &err, &cached) ==
                   HS_SUCCESS &&
               cached == 0 && db_hits(db, "--abbbc--x5y") == 2,
           "hscache: a first compile is compiled, and works");
    hs_free_database(db);
    db = NULL;
    TAP_OK(gd_gr_hs_compile(cache, expr, flags, ids, 2, &db, &err, &cached) ==
                   HS_SUCCESS &&
               cached == 1 && db_hits(db, "--abbbc--x5y") == 2 &&
               db_hits(db, "abd") == 0,
           "hscache: the same input again is read from the cache");
    hs_free_database(db);
    db = NULL;
    TAP_OK(gd_gr_hs_compile(cache, other, flags, ids, 1, &db, &err, &cached) ==
                   HS_SUCCESS &&
               cached == 0 && db_hits(db, "abd") == 1,
           "hscache: other expressions are another database");
    hs_free_database(db);
    db = NULL;

    /* each file damaged: half its bytes zeroed */
    if ((d = opendir(cache)) != NULL) {
        while ((e = readdir(d)) != NULL) {
            FILE *f;
            long size;

            if (e->d_name[0] == '.') {
                continue;
            }
            snprintf(path, sizeof(path), "%s/%s", cache, e->d_name);
            if (stat(path, &st) == 0 && (st.st_mode & 0777) == 0644) {
                readable++;
            }
            if ((f = fopen(path, "r+")) != NULL) {
                fseek(f, 0, SEEK_END);
                size = ftell(f);
                fseek(f, size / 2, SEEK_SET);
                for (long i = size / 2; i < size; i++) {
                    fputc(0, f);
                }
                fclose(f);
                files++;
            }
        }
        closedir(d);
    }
    TAP_OK(files == 2, "hscache: one file per database (%d)", files);
    TAP_OK(readable == 2, "hscache: its files are 0644, as the policies");
    TAP_OK(gd_gr_hs_compile(cache, expr, flags, ids, 2, &db, &err, &cached) ==
                   HS_SUCCESS &&
               cached == 0 && db_hits(db, "--abbbc--x5y") == 2,
           "hscache: a damaged file is not used: compiled again");
    hs_free_database(db);
    db = NULL;
    TAP_OK(gd_gr_hs_compile(cache, expr, flags, ids, 2, &db, &err, &cached) ==
                   HS_SUCCESS &&
               cached == 1,
           "hscache: and replaced");
    hs_free_database(db);
    TAP_OK(gd_gr_hs_compile(NULL, expr, flags, ids, 2, &db, &err, &cached) ==
                   HS_SUCCESS &&
               cached == 0 && db_hits(db, "abc") == 1,
           "hscache: no directory, no cache");
    hs_free_database(db);

    /* a directory others may write to is not used */
    snprintf(path, sizeof(path), "%s/open-cache", dir);
    mkdir(path, 0777);
    chmod(path, 0777);
    db = NULL;
    (void)gd_gr_hs_compile(path, expr, flags, ids, 2, &db, &err, &cached);
    hs_free_database(db);
    db = NULL;
    TAP_OK(gd_gr_hs_compile(path, expr, flags, ids, 2, &db, &err, &cached) ==
                   HS_SUCCESS &&
               cached == 0 && db_hits(db, "abc") == 1,
           "hscache: a directory others may write to is not used");
    hs_free_database(db);

    /* at most GD_GR_HSCACHE_FILES databases: the least recently used go */
    int compiled = 0;

    files = 0;
    for (int k = 0; k < GD_GR_HSCACHE_FILES + 5; k++) {
        char e1[32];
        const char *one[] = {e1};

        snprintf(e1, sizeof(e1), "pruned%d", k);
        db = NULL;
        compiled += gd_gr_hs_compile(cache, one, flags, ids, 1, &db, &err,
                                     &cached) == HS_SUCCESS &&
                    cached == 0;
        hs_free_database(db);
    }
    if ((d = opendir(cache)) != NULL) {
        while ((e = readdir(d)) != NULL) {
            files += strstr(e->d_name, ".hsdb") != NULL;
        }
        closedir(d);
    }
    TAP_OK(compiled == GD_GR_HSCACHE_FILES + 5 && files == GD_GR_HSCACHE_FILES,
           "hscache: %d databases compiled, %d kept (the most recent)",
           compiled, files);
    {
        char e1[32];
        const char *last[] = {e1};

        snprintf(e1, sizeof(e1), "pruned%d", GD_GR_HSCACHE_FILES + 4);
        db = NULL;
        TAP_OK(gd_gr_hs_compile(cache, last, flags, ids, 1, &db, &err,
                                &cached) == HS_SUCCESS &&
                   cached == 1,
               "hscache: the most recent is still there");
        hs_free_database(db);
    }
}

int main(void)
{
    gd_policy_set_t *set;
    const gd_policy_t *p;
    const gd_guardrails_t *g;
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    gd_gr_pf_scratch_t pf = {0};
    gd_norm_t nt;
    unsigned char *run;
    size_t filtered, natoms, lost = 0, checks = 0, hits = 0, skipped = 0;
    size_t kind_scans = 0, kind_diff = 0;
    unsigned char *run_kinds;
    int *tricky_hit = calloc(NTRICKY, sizeof(int));
    char path[512];

    snprintf(dir, sizeof(dir), "/tmp/t_prefilter.XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_cache();
    set = load_section();
    p = set ? gd_policy_find(set, "acme", 4) : NULL;
    TAP_OK(p && p->has_guardrails, "the packs and the tricky patterns load");
    if (p == NULL) {
        return tap_done();
    }
    g = &p->guardrails;
    TAP_OK(g->prefilter != NULL, "the section has a prefilter");
    if (g->prefilter == NULL) {
        return tap_done();
    }
    gd_gr_prefilter_counts(g->prefilter, &filtered, &natoms);
    printf("# %zu rules, %zu with atoms (%zu atoms)\n", g->nrules, filtered,
           natoms);
    TAP_OK(filtered > 0, "some patterns are on atoms");

    load_corpus();
    TAP_OK(ntexts > 1000, "a corpus of %zu texts", ntexts);
    for (size_t i = 0; i < NTRICKY; i++) {
        add_variations(tricky[i].text, strlen(tricky[i].text));
    }

    run = malloc(g->nrules + 1);
    run_kinds = malloc(g->nrules + 1);
    gd_norm_init(&nt);
    for (size_t t = 0; t < ntexts; t++) {
        for (int pass = 0; pass < 2; pass++) {
            const char *s = texts[t];
            size_t n = text_len[t];

            if (pass == 1) {
                gd_norm(&nt, s, n, GD_NORM_UNICODE);
                s = nt.text;
                n = nt.len;
            }
            if (gd_gr_prefilter_scan(g->prefilter, &pf, s, n, run) != 0) {
                TAP_OK(0, "the scan of text %zu", t);
                continue;
            }
            int valid = utf8_ok(s, n);

            /* a scan for some kinds of target: the same for their rules */
            for (int k = 0; pass == 1 && k < 2; k++) {
                unsigned kinds = k == 0 ? GD_GR_KIND(GD_GR_T_BODY)
                                        : GD_GR_KIND(GD_GR_T_JSON) |
                                              GD_GR_KIND(GD_GR_T_JSON_ALL);

                kind_scans++;
                if (gd_gr_prefilter_scan_kinds(g->prefilter, &pf, s, n, kinds,
                                               run_kinds) != 0) {
                    kind_diff++;
                    continue;
                }
                for (size_t ri = 0; ri < g->nrules; ri++) {
                    if ((g->rules[ri].kinds & kinds) &&
                        run_kinds[ri] != run[ri]) {
                        kind_diff++;
                    }
                }
            }

            for (size_t ri = 0; ri < g->nrules; ri++) {
                const gd_gr_rule_t *r = &g->rules[ri];

                if (r->code == NULL) {
                    continue;
                }
                /* the atoms are sound on normalised text (the engine
                   scans nothing else: \s is ASCII white space there),
                   the full-pattern expressions on any text */
                if (pass == 0 && (gd_gr_prefilter_tier(g->prefilter, ri,
                                                       &(const char *){0}) ==
                                      GD_GR_PF_ATOMS ||
                                  gd_gr_prefilter_gated(g->prefilter, ri))) {
                    continue;
                }
                checks++;
                skipped += !run[ri];
                if (!matches(r, s, n, md, valid)) {
                    continue;
                }
                hits++;
                if (strncmp(r->id, "tricky-", 7) == 0) {
                    tricky_hit[atoi(r->id + 7)] = 1;
                }
                if (!run[ri]) {
                    lost++;
                    printf("# LOST: %s on text %zu (%s)\n", r->id, t,
                           pass ? "normalised" : "raw");
                }
            }
        }
    }
    TAP_OK(lost == 0,
           "no match lost: %zu pattern runs, %zu matches, %zu runs skipped "
           "by the prefilter",
           checks, hits, skipped);
    TAP_OK(skipped > checks / 2, "the prefilter skips most runs");
    TAP_OK(kind_diff == 0 && kind_scans > 1000,
           "a scan for the body's or JSON's rules decides theirs as a scan for "
           "all (%zu scans, %zu differ)",
           kind_scans, kind_diff);

    {
        /* what the atoms assume: on normalised text a UCP \s matches
           ASCII white space only, for every code point */
        int err;
        PCRE2_SIZE off;
        pcre2_code *c = pcre2_compile(
            (PCRE2_SPTR) "(?![\\t\\n\\x0b\\f\\r ])\\s", PCRE2_ZERO_TERMINATED,
            PCRE2_UTF | PCRE2_UCP, &err, &off, NULL);
        int ok = c != NULL;
        size_t spaces = 0;

        for (uint32_t cp = 0; c && cp < 0x110000; cp++) {
            unsigned char b[4];
            size_t n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;

            if (cp >= 0xd800 && cp < 0xe000) {
                continue;
            }
            if (n == 1) {
                b[0] = (unsigned char)cp;
            } else {
                for (size_t j = n - 1; j > 0; j--) {
                    b[j] = (unsigned char)(0x80 |
                                           ((cp >> (6 * (n - 1 - j))) & 0x3f));
                }
                b[0] = (unsigned char)((0xf00 >> n) | (cp >> (6 * (n - 1))));
            }
            spaces += pcre2_match(c, b, n, 0, 0, md, NULL) >= 0;
            if (gd_norm(&nt, (const char *)b, n, GD_NORM_UNICODE) != 0 ||
                pcre2_match(c, (PCRE2_SPTR)nt.text, nt.len, 0, 0, md, NULL) >=
                    0) {
                ok = 0;
                printf("# U+%04X normalised is white space beyond ASCII\n", cp);
            }
        }
        pcre2_code_free(c);
        TAP_OK(ok && spaces > 10,
               "no code point normalises to white space beyond ASCII (%zu "
               "are such white space before)",
               spaces);
    }

    size_t missing = 0;

    for (size_t i = 0; i < NTRICKY; i++) {
        if (!tricky_hit[i]) {
            missing++;
            printf("# tricky-%zu /%s/ never matched its text\n", i,
                   tricky[i].pattern);
        }
    }
    TAP_OK(missing <= 1, "each tricky pattern matched its own text (%zu not)",
           missing);

    /* what must have no atoms */
    {
        static const char *const none[] = {
            "a(*ACCEPT)bcd", "(?x) a b c",    "(?(?=a)ab|cd)",
            "ab\\E?c",       "a\\Q\\E?bc",    "x{,3}yz",
            "\\d+",          "(*pla:abc)abc", "(?<*ab)cd"};
        gd_gr_atoms_t a;
        char why[64];
        int ok = 1;

        for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
            if (gd_gr_atoms(none[i], 0, &a, why, sizeof(why)) == 0) {
                ok = 0;
                printf("# /%s/ got atoms\n", none[i]);
            }
        }
        TAP_OK(ok, "patterns not understood for sure get no atoms");
        TAP_OK(gd_gr_atoms(" a b c # x", PCRE2_EXTENDED, &a, why,
                           sizeof(why)) != 0,
               "flag x: no atoms (%s)", why);
        TAP_OK(gd_gr_atoms("(ab){3}", 0, &a, why, sizeof(why)) == 0 &&
                   a.n == 1 && a.len[0] == 6 &&
                   memcmp(a.lit[0], "ababab", 6) == 0,
               "(ab){3}: exactly ababab");
        TAP_OK(gd_gr_atoms("Ignore (all )?previous", 0, &a, why, sizeof(why)) ==
                       0 &&
                   a.n >= 1,
               "a literal pattern has atoms");
        TAP_OK(gd_gr_atoms("from\\s+now\\s*on", PCRE2_UTF | PCRE2_UCP, &a, why,
                           sizeof(why)) == 0 &&
                   a.n == 1 && a.len[0] == 8 &&
                   memcmp(a.lit[0], "from now", 8) == 0,
               "from\\s+now\\s*on: the atom \"from now\" (\\s+ is a space)");
        TAP_OK(gd_gr_atoms("you\t \\s{2}are", 0, &a, why, sizeof(why)) == 0 &&
                   a.n == 1 && a.len[0] == 7 &&
                   memcmp(a.lit[0], "you are", 7) == 0,
               "white space in an atom is one space");
    }

    /* the parts of a pattern (gd_gr_parts) */
    {
        static const struct {
            const char *pattern;
            const char *parts; /* joined by spaces */
        } cuts[] = {
            {"(?:ab|cd)\\s+(?:ef|gh)", "(?:ab|cd) (?:ef|gh)"},
            {"(?#(x)(?:ab)(?:cd){2,}", "(?:ab) (?:cd)"},
            {"[(](?:ab)\\((?:cd)", "(?:ab) (?:cd)"},
            {"(?=x)(?:ab)(?:cd)", "(?:ab) (?:cd)"},
            {"(?:ab){0,3}(?:cd)(?:ef)+?", "(?:cd) (?:ef)"},
            {"(?<n>ab)(?'m'cd)(?P<o>ef)", "(?<n>ab) (?'m'cd) (?P<o>ef)"},
            {"(?i:ab)(?-i:cd)", "(?i:ab) (?-i:cd)"},
            {"\\x{28}(ab)\\p{L}(cd)", "(ab) (cd)"},
            {"(a)(b)\\1", ""},
            {"(?i)(?:ab)(?:cd)", ""},
            {"(?:ab)|(?:cd)", ""},
            {"(?:ab)?(?:cd)", ""},
            {"(?:ab)x{,3}(?:cd)", ""},
            {"(?:ab)(?1)", ""},
            {"(?:ab)\\Q(x\\E(?:cd)", ""},
            {"(*UTF)(?:ab)(?:cd)", ""},
            {"(?:ab)(?(1)c|d)(?:cd)", ""},
            {"(?:ab)(?:cd", ""},
        };
        int ok = 1;

        for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
            char *parts[GD_GR_MAX_PARTS], got[256] = "";
            size_t n = gd_gr_parts(cuts[i].pattern, 0, parts);

            for (size_t j = 0; j < n; j++) {
                snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s",
                         j ? " " : "", parts[j]);
                free(parts[j]);
            }
            if (strcmp(got, cuts[i].parts) != 0) {
                ok = 0;
                printf("# /%s/: parts \"%s\", not \"%s\"\n", cuts[i].pattern,
                       got, cuts[i].parts);
            }
        }
        char *parts[GD_GR_MAX_PARTS];

        TAP_OK(ok && gd_gr_parts("(?:ab) (?:cd)", PCRE2_EXTENDED, parts) == 0,
               "the parts of a pattern, and none where a cut could change "
               "its meaning");

        gd_gr_pf_stats_t st;

        gd_gr_prefilter_stats(g->prefilter, &st);
        TAP_OK(st.parts >= 2, "the gated patterns have %zu parts", st.parts);
        /* the packs' JSON rules and the raw body's (pi-invisible-*, the
           tricky patterns here): a raw body scans only its rules' atoms */
        TAP_OK(st.atoms_dbs == 2,
               "the atoms in a database per set of target kinds: %zu",
               st.atoms_dbs);

        /* bench/guardrails.sh's chat body: ordinary prose, which the
           whole of pi-indirect-3 in Hyperscan's prefilter accepted */
        json_error_t je;
        json_t *chat = json_load_file(
            GD_TEST_DATA "/../../bench/data/chat-1k.json", 0, &je);
        json_t *msgs = json_object_get(chat, "messages"), *m;
        size_t idx, ran = 0, values = 0;

        json_array_foreach(msgs, idx, m)
        {
            json_t *c = json_object_get(m, "content");

            gd_norm(&nt, json_string_value(c), json_string_length(c),
                    GD_NORM_UNICODE);
            values++;
            if (gd_gr_prefilter_scan_kinds(g->prefilter, &pf, nt.text, nt.len,
                                           GD_GR_KIND(GD_GR_T_JSON_ALL),
                                           run_kinds) != 0) {
                ran += 1000;
                continue;
            }
            for (size_t ri = 0; ri < g->nrules; ri++) {
                if (g->rules[ri].code &&
                    (g->rules[ri].kinds & GD_GR_KIND(GD_GR_T_JSON_ALL)) &&
                    run_kinds[ri]) {
                    printf("# %s runs on message %zu\n", g->rules[ri].id, idx);
                    ran++;
                }
            }
        }
        json_decref(chat);
        TAP_OK(values == 2 && ran == 0,
               "the bench's chat messages run no pattern of the packs (%zu "
               "runs)",
               ran);
    }

    /* the tiers: what goes to the full-pattern tier, and why not */
    {
        static const struct {
            const char *pattern;
            uint32_t opts;
            int full;
        } tiers[] = {
            {"(ab)c\\1d", 0, 1},
            {"(?<![a-z])qrs", PCRE2_CASELESS, 1},
            {"xa++yz", 0, 1},
            {"(?>ab|a)bcz", 0, 1},
            {"^(a+)+$", 0, 1},
            {"skipme(*SKIP)(*F)|keep", 0, 1},
            {"\\bgr\\w+ma\\b", PCRE2_CASELESS | PCRE2_UTF | PCRE2_UCP, 1},
            {"a\\Kbc", 0, 0},
            {"\\p{Lu}xyz", PCRE2_UTF | PCRE2_UCP, 0},
            {"[[:alpha:]]bc", PCRE2_UTF | PCRE2_UCP, 0},
            {"(*UTF)caf\xc3\xa9", 0, 0},
            {" a b c # x", PCRE2_EXTENDED, 0},
            {"(?x) a b c", 0, 0},
            {"\\Qab\\E?cd", 0, 0},
            {"(x|y(*SKIP)(*F)|z)", 0, 0},
            {"x{,3}yz", 0, 0},
        };
        int ok = 1;

        for (size_t i = 0; i < sizeof(tiers) / sizeof(tiers[0]); i++) {
            char *e = NULL, why[64];
            unsigned fl;
            int rc = gd_gr_hs_expr(tiers[i].pattern, tiers[i].opts, &e, &fl,
                                   why, sizeof(why));

            if ((rc == 0) != tiers[i].full) {
                ok = 0;
                printf("# /%s/: %s\n", tiers[i].pattern, rc ? why : e);
            }
            free(e);
        }
        TAP_OK(ok, "gd_gr_hs_expr takes what it can widen soundly, and "
                   "only that");

        /* in the section: Hyperscan refuses a recursion even in prefilter
           mode, and the pattern falls back to its atoms */
        int refused = -1, redos = -1;
        const char *why;

        for (size_t i = 0; i < g->nrules; i++) {
            if (g->rules[i].pattern &&
                strcmp(g->rules[i].pattern, "(qqq)(?1)rstu") == 0) {
                refused = gd_gr_prefilter_tier(g->prefilter, i, &why);
                printf("# (qqq)(?1)rstu: %s\n", why);
            }
            if (g->rules[i].pattern &&
                strcmp(g->rules[i].pattern, "^(a+)+$") == 0) {
                redos = gd_gr_prefilter_tier(g->prefilter, i, &why);
            }
        }
        TAP_OK(refused == GD_GR_PF_ATOMS,
               "a pattern Hyperscan refuses falls back to its atoms");
        TAP_OK(redos == GD_GR_PF_FULL,
               "the ReDoS-style pattern (no atoms) is in the full tier: "
               "it runs only on a text it may match");

        gd_gr_pf_stats_t st;

        gd_gr_prefilter_stats(g->prefilter, &st);
        printf("# tiers: %zu full (%zu gated, %zu parts), %zu on atoms, %zu "
               "always; %zu KB\n",
               st.full, st.gated, st.parts, st.atoms, st.always,
               st.db_bytes / 1024);
        TAP_OK(st.full > st.atoms + st.always,
               "most patterns are in the full-pattern tier");
    }

    /*
     * What the rewrite of a UTF-8 pattern for Hyperscan's byte mode takes
     * for granted, checked over every character: PCRE2's UCP \w \d \s \h
     * \v have the ASCII parts written in ucp_item(); the only non-ASCII
     * characters a caseless ASCII letter matches are U+212A (k) and
     * U+017F (s).  And for a byte pattern, the escapes, '.', \b and
     * caseless letters mean the same to both libraries on every byte.
     */
    {
        static const struct {
            const char *pcre, *ascii;
        } parts[] = {
            {"\\w", "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_"
                    "abcdefghijklmnopqrstuvwxyz"},
            {"\\d", "0123456789"},
            {"\\s", "\t\n\v\f\r "},
            {"\\h", "\t "},
            {"\\v", "\n\v\f\r"},
        };
        int ok = 1;

        for (size_t k = 0; k < sizeof(parts) / sizeof(parts[0]); k++) {
            int err;
            PCRE2_SIZE off;
            pcre2_code *c =
                pcre2_compile((PCRE2_SPTR)parts[k].pcre, PCRE2_ZERO_TERMINATED,
                              PCRE2_UTF | PCRE2_UCP, &err, &off, NULL);

            for (int ch = 1; c && ch < 0x80; ch++) {
                char t[1] = {(char)ch};
                int m = pcre2_match(c, (PCRE2_SPTR)t, 1, 0, 0, md, NULL) >= 0;

                if (m != (strchr(parts[k].ascii, ch) != NULL)) {
                    ok = 0;
                    printf("# %s on 0x%02x\n", parts[k].pcre, ch);
                }
            }
            pcre2_code_free(c);
        }
        TAP_OK(ok, "the ASCII parts of PCRE2's UCP classes");

        int err;
        PCRE2_SIZE off;
        pcre2_code *c = pcre2_compile((PCRE2_SPTR) "[a-z]", 5,
                                      PCRE2_UTF | PCRE2_UCP | PCRE2_CASELESS,
                                      &err, &off, NULL);
        size_t other = 0;

        ok = c != NULL;
        for (uint32_t cp = 0x80; c && cp < 0x110000; cp++) {
            unsigned char b[4];
            size_t n;

            if (cp >= 0xd800 && cp < 0xe000) {
                continue;
            }
            n = cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
            for (size_t j = n - 1; j > 0; j--) {
                b[j] =
                    (unsigned char)(0x80 | ((cp >> (6 * (n - 1 - j))) & 0x3f));
            }
            b[0] = (unsigned char)((0xf00 >> n) | (cp >> (6 * (n - 1))));
            if (pcre2_match(c, b, n, 0, 0, md, NULL) >= 0) {
                other++;
                if (cp != 0x212a && cp != 0x17f) {
                    ok = 0;
                    printf("# caseless [a-z] matches U+%04X\n", cp);
                }
            }
        }
        pcre2_code_free(c);
        TAP_OK(ok && other == 2,
               "caseless ASCII letters match U+212A and U+017F, no other "
               "non-ASCII character");

        static const char *const esc[] = {
            "\\w",  "\\W",  "\\d",    "\\D",    "\\s",       "\\S",
            "\\h",  "\\H",  "\\v",    "\\V",    ".",         "[^a]",
            "#\\b", "#\\B", "(?i)k#", "(?i)S#", "(?i)[a-z]#"};

        ok = 1;
        for (size_t k = 0; k < sizeof(esc) / sizeof(esc[0]); k++) {
            char *e;
            unsigned fl;
            char why[64];
            hs_ok_t h;

            if (gd_gr_hs_expr(esc[k], 0, &e, &fl, why, sizeof(why)) != 0 ||
                hs_open(&h, e, fl) != 0) {
                ok = 0;
                printf("# %s: not compiled\n", esc[k]);
                continue;
            }
            free(e);
            pcre2_code *pc = pcre2_compile(
                (PCRE2_SPTR)esc[k], PCRE2_ZERO_TERMINATED, 0, &err, &off, NULL);

            for (int b = 0; pc && b < 256; b++) {
                for (int ctx = 0; ctx < 2; ctx++) {
                    /* the byte alone, and between '#' */
                    char t[3] = {'#', (char)b, '#'};
                    const char *tt = ctx ? t : t + 1;
                    size_t tn = ctx ? 3 : 1;
                    int pm = matches_nonempty(pc, tt, tn, md);
                    int hm = hs_hit(&h, tt, tn);

                    if (pm && !hm) {
                        ok = 0;
                        printf("# %s: 0x%02x lost\n", esc[k], b);
                    }
                }
            }
            pcre2_code_free(pc);
            hs_close(&h);
        }
        TAP_OK(ok, "byte mode: Hyperscan matches every byte PCRE2 does");
    }

    /* a text that is not UTF-8: the UTF-8 patterns run */
    {
        static const char bad[] = "x\xff\xfe gr\xc3\xa4\xc3\x9fma y";
        int ok = 0;

        if (gd_gr_prefilter_scan(g->prefilter, &pf, bad, sizeof(bad) - 1,
                                 run) == 0) {
            ok = 1;
            for (size_t i = 0; i < g->nrules; i++) {
                if (g->rules[i].code &&
                    (g->rules[i].pattern_options & PCRE2_UTF) &&
                    gd_gr_prefilter_tier(g->prefilter, i, &(const char *){0}) ==
                        GD_GR_PF_FULL &&
                    !run[i]) {
                    ok = 0;
                }
            }
        }
        TAP_OK(ok, "on a text that is not UTF-8 every UTF-8 pattern of the "
                   "full-pattern tier runs");
    }

    /* the scan sees each white-space run as one space */
    {
        static const char ws[] = "a \t\n b\r\nc  ";
        char buf[32];
        size_t l = gd_gr_ws_collapse(ws, sizeof(ws) - 1, buf);

        TAP_OK(l == 6 && memcmp(buf, "a b c ", 6) == 0,
               "gd_gr_ws_collapse: runs of white space are one space");

        /* gd_gr_ws_single: whether the collapse changes nothing, over the
           corpus and texts with white space at every 16-byte seam */
        size_t bad = 0, single = 0, tried = 0;
        char *cb = NULL;

        for (size_t t = 0; t < ntexts + 64 * 6; t++) {
            char gen[80];
            const char *x = texts[t < ntexts ? t : 0];
            size_t n = text_len[t < ntexts ? t : 0], cn;

            if (t >= ntexts) {
                size_t k = t - ntexts;
                static const char w[] = " \t\n\v\f\r";

                memset(gen, 'a', sizeof(gen));
                gen[k % 64] = w[k / 64];
                gen[(k % 64) + 1] = k / 64 == 0 ? ' ' : 'b';
                if (k / 64 == 0 && k % 2) {
                    gen[(k % 64) + 1] = 'c'; /* a single space */
                }
                x = gen;
                n = sizeof(gen);
            }
            free(cb);
            cb = malloc(n ? n : 1);
            cn = gd_gr_ws_collapse(x, n, cb);
            int same = cn == n && memcmp(cb, x, n) == 0;

            tried++;
            single += same;
            bad += gd_gr_ws_single(x, n) != same;
        }
        free(cb);
        TAP_OK(bad == 0 && single > 0 && single < tried,
               "gd_gr_ws_single says whether the collapse changes a text (%zu "
               "texts, %zu unchanged)",
               tried, single);
        const gd_gr_rule_t *r = NULL;

        for (size_t i = 0; i < g->nrules; i++) {
            if (strcmp(g->rules[i].id, "tricky-1") == 0) {
                static const char t[] = "so From \t\n NOW\xe2\x80\xa8on, ok";

                r = &g->rules[i];

                gd_norm(&nt, t, sizeof(t) - 1, GD_NORM_UNICODE);
                TAP_OK(gd_gr_prefilter_scan(g->prefilter, &pf, nt.text, nt.len,
                                            run) == 0 &&
                           run[i] && matches(r, nt.text, nt.len, md, 1),
                       "a phrase across tabs, newlines and a line separator "
                       "runs and matches");
                gd_gr_prefilter_scan(g->prefilter, &pf, "from no won", 11, run);
                TAP_OK(!run[i], "and does not run without the phrase");
            }
        }
        TAP_OK(r != NULL, "the rule tricky-1 is loaded");
    }

    free(run);
    free(run_kinds);
    gd_norm_free(&nt);
    gd_gr_pf_scratch_free(&pf);
    pcre2_match_data_free(md);
    for (size_t t = 0; t < ntexts; t++) {
        free(texts[t]);
    }
    free(texts);
    free(text_len);
    free(tricky_hit);
    gd_policy_set_free(set);
    snprintf(path, sizeof(path), "%s/acme.json", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/packs", dir);
    unlink(path);
    rmdir(dir);
    return tap_done();
}
