/*
 * Unit tests for gd_norm: percent-decoding (once, double encoding
 * flagged), form '+', NFKC, invisible characters, homoglyphs, invalid
 * UTF-8 and NUL passed through, the offset map and gd_norm_span, buffer
 * reuse; and NFKC against utf8proc_NFKC over generated strings.
 */
#include "gd_norm.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#define P GD_NORM_PERCENT
#define F (GD_NORM_PERCENT | GD_NORM_FORM)
#define U GD_NORM_UNICODE
#define ALL (GD_NORM_PERCENT | GD_NORM_FORM | GD_NORM_UNICODE)

static gd_norm_t n;

/* The invariants of every result: NUL-terminated, the map non-decreasing,
 * within the input, and map[len] the input's length. */
static int invariants(size_t in_len)
{
    if (n.text[n.len] != '\0' || n.map[n.len] != in_len) {
        return 0;
    }
    for (size_t i = 0; i < n.len; i++) {
        if (n.map[i] > n.map[i + 1] || n.map[i] >= in_len) {
            return 0;
        }
    }
    return 1;
}

/* gd_norm(in, opts) gives want with flags. */
static int norm_is(const char *in, size_t in_len, unsigned opts,
                   const char *want, size_t want_len, unsigned flags)
{
    if (gd_norm(&n, in, in_len, opts) != 0) {
        printf("#   gd_norm failed\n");
        return 0;
    }
    if (n.len != want_len || memcmp(n.text, want, want_len) != 0) {
        printf("#   got (%zu bytes):", n.len);
        for (size_t i = 0; i < n.len; i++) {
            printf(" %02x", (unsigned char)n.text[i]);
        }
        printf("\n");
        return 0;
    }
    if (n.flags != flags) {
        printf("#   flags %#x, want %#x\n", n.flags, flags);
        return 0;
    }
    if (!invariants(in_len)) {
        printf("#   map invariants broken\n");
        return 0;
    }
    return 1;
}

#define NORM(in, opts, want, flags)                                            \
    norm_is(in, sizeof(in) - 1, opts, want, sizeof(want) - 1, flags)

static const char *find(const char *hay, size_t len, const char *needle)
{
    size_t nl = strlen(needle);

    for (size_t i = 0; i + nl <= len; i++) {
        if (memcmp(hay + i, needle, nl) == 0) {
            return hay + i;
        }
    }
    return NULL;
}

/* The first occurrence of needle in n.text maps back to in[off..off+len). */
static int span_is(const char *needle, size_t off, size_t len)
{
    const char *p = find(n.text, n.len, needle);
    size_t o, l;

    if (p == NULL) {
        printf("#   no match\n");
        return 0;
    }
    gd_norm_span(&n, (size_t)(p - n.text), strlen(needle), &o, &l);
    if (o != off || l != len) {
        printf("#   span [%zu, +%zu), want [%zu, +%zu)\n", o, l, off, len);
        return 0;
    }
    return 1;
}

static void percent(void)
{
    TAP_OK(NORM("a%20b", P, "a b", GD_NORM_F_DECODED), "%%20 decodes");
    TAP_OK(span_is(" ", 1, 3), "the space maps back to %%20");
    TAP_OK(span_is("b", 4, 1), "what follows maps past the escape");
    TAP_OK(NORM("%4a%4A%7e", P, "JJ~", GD_NORM_F_DECODED),
           "either case of hex digit");
    TAP_OK(NORM("%zz%4%", P, "%zz%4%", 0), "invalid escapes kept literally");
    TAP_OK(NORM("%%41", P, "%A", GD_NORM_F_DECODED),
           "a %% before an escape stays");
    TAP_OK(
        NORM("%2527", P, "%27", GD_NORM_F_DECODED | GD_NORM_F_DOUBLE_ENCODED),
        "%%2527 decodes once to %%27, flagged double");
    TAP_OK(span_is("%27", 0, 5), "the %%27 maps back to all of %%2527");
    TAP_OK(
        NORM("%%34%31", P, "%41", GD_NORM_F_DECODED | GD_NORM_F_DOUBLE_ENCODED),
        "an escape built from decoded digits is flagged double");
    TAP_OK(NORM("100%25 off", P, "100% off", GD_NORM_F_DECODED),
           "a decoded %% not followed by hex is not double");
    TAP_OK(NORM("a+b%2B", F, "a b+", GD_NORM_F_DECODED),
           "form: '+' is a space, %%2B a plus");
    TAP_OK(NORM("a+b%2B", P, "a+b+", GD_NORM_F_DECODED),
           "without form '+' stays");
    TAP_OK(NORM("a+b", F, "a b", 0), "form alone: no DECODED flag");
    TAP_OK(NORM("a%20b", U, "a%20b", 0), "without PERCENT nothing decodes");
    TAP_OK(NORM("%00x", P, "\0x", GD_NORM_F_DECODED | GD_NORM_F_NUL),
           "%%00 decodes to NUL, flagged");
    TAP_OK(NORM("%FF", P, "\xff", GD_NORM_F_DECODED | GD_NORM_F_INVALID_UTF8),
           "%%FF is not UTF-8: flagged");
}

static void unicode(void)
{
    TAP_OK(NORM("\xef\xbd\x89\xef\xbd\x87\xef\xbd\x8e\xef\xbd\x8f\xef\xbd\x92"
                "\xef\xbd\x85 \xef\xbd\x90rev",
                U, "ignore prev", GD_NORM_F_CHANGED),
           "full-width letters come out ASCII");
    TAP_OK(span_is("ignore", 0, 18), "ignore maps back to 18 input bytes");
    TAP_OK(span_is("gn", 3, 6), "a match inside maps to its characters");
    TAP_OK(span_is("prev", 19, 6), "after them: the right input span");

    TAP_OK(NORM("\xef\xac\x81le", U, "file", GD_NORM_F_CHANGED),
           "the ligature U+FB01 becomes fi");
    TAP_OK(span_is("f", 0, 3), "the f of the ligature spans the ligature");
    TAP_OK(span_is("i", 0, 3), "the i of the ligature spans the ligature");
    TAP_OK(span_is("le", 3, 2), "the rest maps past it");

    TAP_OK(NORM("\xf0\x9d\x90\xa2gnore", U, "ignore", GD_NORM_F_CHANGED),
           "mathematical bold i folds to i");
    TAP_OK(NORM("caf\xc3\xa9", U, "caf\xc3\xa9", 0),
           "precomposed text is left alone, no CHANGED");
    TAP_OK(NORM("cafe\xcc\x81!", U, "caf\xc3\xa9!", GD_NORM_F_CHANGED),
           "e + U+0301 composes");
    TAP_OK(span_is("\xc3\xa9", 3, 3), "the composite spans e and the mark");
    TAP_OK(span_is("!", 6, 1), "what follows maps past the mark");
    TAP_OK(
        NORM("a\xcc\x81\xcc\xa3", U, "\xe1\xba\xa1\xcc\x81", GD_NORM_F_CHANGED),
        "marks in canonical order before composing");
    TAP_OK(
        NORM("\xe1\x84\x80\xe1\x85\xa1", U, "\xea\xb0\x80", GD_NORM_F_CHANGED),
        "Hangul jamo compose");
    TAP_OK(NORM("\xe2\x91\xa0\xc2\xbd", U,
                "11\xe2\x81\x84"
                "2",
                GD_NORM_F_CHANGED),
           "circled digit and vulgar fraction: compatibility forms");
    TAP_OK(NORM("\xd0\xbf\xd0\xb0\xd1\x80\xd0\xbe\xd0\xbb\xd1\x8c", U,
                "\xd0\xbf\xd0\xb0\xd1\x80\xd0\xbe\xd0\xbb\xd1\x8c", 0),
           "Cyrillic text is left alone");
}

static void homoglyphs(void)
{
    /* Cyrillic і, о, е and а among Latin letters */
    TAP_OK(NORM("\xd1\x96gn\xd0\xber\xd0\xb5 \xd0\xb0ll", U, "ignore all",
                GD_NORM_F_CHANGED),
           "Cyrillic lookalikes among Latin letters fold");
    TAP_OK(span_is("ignore", 0, 9), "the folded word maps back");
    TAP_OK(span_is("all", 10, 4), "the second word too");
    TAP_OK(NORM("Ign\xce\xbfre", U, "Ignore", GD_NORM_F_CHANGED),
           "Greek omicron folds");
    TAP_OK(NORM("\xd0\xa1\xd0\x9e\xd0\xa0", U, "COP", GD_NORM_F_CHANGED),
           "a word of lookalikes only folds");
    TAP_OK(NORM("\xce\x91\xce\x93", U, "\xce\x91\xce\x93", 0),
           "a Greek word with a letter without lookalike stays");
    TAP_OK(NORM("\xd0\xbf\xd0\xb0\xd1\x80\xd0\xbe\xd0\xbb\xd1\x8c "
                "p\xd0\xb0ss",
                U, "\xd0\xbf\xd0\xb0\xd1\x80\xd0\xbe\xd0\xbb\xd1\x8c pass",
                GD_NORM_F_CHANGED),
           "word by word: the Russian word stays, the mixed one folds");
    TAP_OK(span_is("pass", 13, 5), "the folded word after it maps back");
    TAP_OK(
        NORM("\xef\xbd\x89gn\xd0\xber\xd0\xb5", U, "ignore", GD_NORM_F_CHANGED),
        "full-width and Cyrillic together");
}

static void invisible(void)
{
    unsigned inv = GD_NORM_F_INVISIBLE;

    TAP_OK(NORM("ig\xe2\x80\x8bno\xe2\x80\x8d"
                "re",
                U, "ignore", inv),
           "zero-width space and joiner removed");
    TAP_OK(span_is("ignore", 0, 12), "the word spans the removed characters");
    TAP_OK(span_is("no", 5, 5), "no spans up to the next character");
    TAP_OK(NORM("\xef\xbb\xbfhi\xe2\x81\xa0!\xe1\xa0\x8e", U, "hi!", inv),
           "BOM, word joiner, Mongolian vowel separator removed");
    TAP_OK(NORM("ig\xc2\xadnore", U, "ignore", inv), "soft hyphen removed");
    TAP_OK(NORM("\xe2\x80\xae"
                "abc\xe2\x80\xac\xe2\x81\xa6x\xe2\x81\xa9\xe2\x80\x8f",
                U, "abcx", inv),
           "bidi overrides, isolates and marks removed");
    TAP_OK(NORM("hi\xf3\xa0\x80\x81\xf3\xa0\x81\x81\xf3\xa0\x81\xbf", U, "hi",
                inv),
           "tag characters removed");
    TAP_OK(
        NORM("e\xe2\x80\x8b\xcc\x81", U, "\xc3\xa9", inv | GD_NORM_F_CHANGED),
        "a mark composes across a removed zero-width space");
    TAP_OK(NORM("ig%E2%80%8Bnore", ALL, "ignore",
                GD_NORM_F_DECODED | GD_NORM_F_INVISIBLE),
           "a percent-encoded zero-width space is removed");
    TAP_OK(span_is("ignore", 0, 15), "its span covers the escapes");
    TAP_OK(NORM("%EF%BD%89gnore", ALL, "ignore",
                GD_NORM_F_DECODED | GD_NORM_F_CHANGED),
           "percent-encoded full-width i");
    TAP_OK(span_is("i", 0, 9), "the i maps to its three escapes");
    TAP_OK(NORM("a\xe2\x80\xa8"
                "b\xe2\x80\xa9"
                "c\xc2\x85"
                "d\xe1\x9a\x80"
                "e",
                U, "a b c d e", GD_NORM_F_CHANGED),
           "line and paragraph separators, NEL, ogham space mark: a space");
    TAP_OK(span_is("b", 4, 1), "what follows a separator maps past it");
    TAP_OK(span_is(" ", 1, 3), "the space maps to the separator");
}

static void bytes(void)
{
    unsigned bad = GD_NORM_F_INVALID_UTF8;

    TAP_OK(NORM("a\x80"
                "b",
                U,
                "a\x80"
                "b",
                bad),
           "a lone continuation byte passes through");
    TAP_OK(span_is("b", 2, 1), "the map steps over it");
    TAP_OK(NORM("\xc0\xaf\xe0\x80\xaf", U, "\xc0\xaf\xe0\x80\xaf", bad),
           "overlong forms pass through");
    TAP_OK(NORM("\xed\xa0\x80", U, "\xed\xa0\x80", bad),
           "a surrogate passes through");
    TAP_OK(NORM("\xf4\x90\x80\x80", U, "\xf4\x90\x80\x80", bad),
           "over U+10FFFF passes through");
    TAP_OK(
        NORM("\xef\xbd\x89\xe2\x82", U, "i\xe2\x82", bad | GD_NORM_F_CHANGED),
        "a truncated sequence at the end; what precedes is normalised");
    TAP_OK(span_is("\xe2\x82", 3, 2), "the truncated bytes map to themselves");
    TAP_OK(
        NORM("\xff\xef\xbd\x89\xfe", U, "\xffi\xfe", bad | GD_NORM_F_CHANGED),
        "valid runs between invalid bytes are normalised");
    TAP_OK(NORM("\xe2\x82\xe2\x80\x8b\xac", U, "\xe2\x82\xe2\x80\x8b\xac", bad),
           "a zero-width space between invalid bytes stays (no join)");
    TAP_OK(NORM("\xe2\x82\xe2\x80\x8b\xe2\x80\x8b\xac\xef\xbd\x89", U,
                "\xe2\x82\xe2\x80\x8b\xac"
                "i",
                bad | GD_NORM_F_INVISIBLE | GD_NORM_F_CHANGED),
           "only the one next to the continuation byte stays");
    TAP_OK(NORM("e\x80\xcc\x81", U, "e\x80\xcc\x81", bad),
           "no composition across an invalid byte");
    TAP_OK(NORM("caf\xe9", 0, "caf\xe9", bad),
           "without UNICODE invalid UTF-8 is still flagged");
    TAP_OK(
        NORM("a\0\xef\xbd\x82", U, "a\0b", GD_NORM_F_NUL | GD_NORM_F_CHANGED),
        "a NUL passes through, flagged, the rest normalised");
    TAP_OK(span_is("b", 2, 3), "after the NUL the map holds");
    TAP_OK(NORM("a\0b", 0, "a\0b", GD_NORM_F_NUL), "NUL on the fast path");
}

static void edges(void)
{
    char *big, *seen[2] = {NULL, NULL};
    int reused = 1, right = 1;

    TAP_OK(NORM("", ALL, "", 0), "empty input");
    TAP_OK(n.map[0] == 0 && n.text[0] == '\0', "empty: map[0] 0, text NUL");
    TAP_OK(gd_norm(&n, NULL, 0, ALL) == 0 && n.len == 0,
           "empty input with a NULL pointer");
    TAP_OK(gd_norm(&n, "x", GD_NORM_MAX + 1, ALL) == -1,
           "over GD_NORM_MAX: -1");

    TAP_OK(NORM("plain ascii text", ALL, "plain ascii text", 0),
           "ASCII passes unchanged");
    TAP_OK(span_is("ascii", 6, 5), "the identity map");

    /* a long input, then short ones: the buffers are kept */
    big = malloc(100000);
    memset(big, 'x', 100000);
    memcpy(big + 50000, "\xef\xbd\x89", 3);
    TAP_OK(gd_norm(&n, big, 100000, ALL) == 0 && n.len == 99998 &&
               n.text[50000] == 'i' && invariants(100000),
           "100 kB with a full-width letter in the middle");
    for (int i = 0; i < 100; i++) {
        const char *s = (i & 1) ? "ig%E2%80%8Bnore" : "\xef\xbd\x89gnore";

        if (gd_norm(&n, s, strlen(s), ALL) != 0 ||
            strcmp(n.text, "ignore") != 0 || !invariants(strlen(s))) {
            right = 0;
        }
        /* two buffers take turns (the percent stage's result is swapped
           into the work buffers); no new ones after the first two calls */
        if (i < 2) {
            seen[i] = n.text;
        } else if (n.text != seen[0] && n.text != seen[1]) {
            reused = 0;
        }
    }
    TAP_OK(reused, "100 calls after a long one reuse the same buffers");
    TAP_OK(right, "and give the right results each time");

    /* zalgo: one letter, many marks, stays linear and bounded */
    for (int i = 0; i < 20000; i++) {
        memcpy(big + 1 + 2 * i, (i % 3) ? "\xcc\x81" : "\xcc\xa3", 2);
    }
    big[0] = 'a';
    TAP_OK(gd_norm(&n, big, 40001, U) == 0 && invariants(40001) &&
               n.len == 40001 && (n.flags & GD_NORM_F_CHANGED),
           "a letter with 20000 marks");
    free(big);
}

/* NFKC against utf8proc_NFKC over strings drawn from code points that
 * exercise it (marks, precomposed letters, Hangul, compatibility forms,
 * Indic and Tibetan vowel signs); lookalikes left out (they fold). */
static void against_utf8proc(void)
{
    static const int32_t ranges[][2] = {
        {'a', 'e'},       {' ', ' '},         {0x300, 0x36f},
        {0xc0, 0x17f},    {0x1100, 0x1112},   {0x1161, 0x1175},
        {0x11a8, 0x11c2}, {0xac00, 0xac20},   {0xfb00, 0xfb06},
        {0xff01, 0xff5e}, {0x2460, 0x2470},   {0xbd, 0xbe},
        {0x3300, 0x3305}, {0xfdfa, 0xfdfb},   {0x915, 0x94d},
        {0x958, 0x95f},   {0xf40, 0xf45},     {0xf71, 0xf81},
        {0x5b0, 0x5c7},   {0x1e00, 0x1e20},   {0x212b, 0x212b},
        {0x1f00, 0x1f10}, {0xb47, 0xb48},     {0xb3e, 0xb3e},
        {0xb57, 0xb57},   {0x1d15e, 0x1d164}, {0x3099, 0x309a},
        {0x304b, 0x304f}, {0x340, 0x344},     {0x2000, 0x200a},
        {0xdd9, 0xddf},   {0xdca, 0xdca},
    };
    int32_t pool[2048];
    int np = 0, bad = 0, flag_bad = 0, tried = 0;
    unsigned seed = 12345;

    for (size_t r = 0; r < sizeof(ranges) / sizeof(ranges[0]); r++) {
        for (int32_t c = ranges[r][0]; c <= ranges[r][1]; c++) {
            pool[np++] = c;
        }
    }
    for (int it = 0; it < 30000; it++) {
        unsigned char buf[128];
        size_t l = 0;
        int k;
        utf8proc_uint8_t *ref;
        int conf = 0;

        seed = seed * 1103515245 + 12345;
        k = 1 + (int)(seed >> 16) % 12;
        for (int j = 0; j < k; j++) {
            seed = seed * 1103515245 + 12345;
            l += (size_t)utf8proc_encode_char(pool[(seed >> 8) % (unsigned)np],
                                              buf + l);
        }
        buf[l] = '\0';
        ref = utf8proc_NFKC(buf);
        for (const utf8proc_uint8_t *p = ref; *p;) {
            utf8proc_int32_t c;

            p += utf8proc_iterate(p, -1, &c);
            conf |= (c >= 0x370 && c < 0x530) || c == 0x131;
        }
        if (!conf) {
            tried++;
            if (gd_norm(&n, (char *)buf, l, U) != 0 ||
                strcmp((char *)ref, n.text) != 0 || !invariants(l)) {
                bad++;
            } else if ((strcmp((char *)ref, (char *)buf) != 0) !=
                       ((n.flags & GD_NORM_F_CHANGED) != 0)) {
                flag_bad++;
            }
        }
        free(ref);
    }
    TAP_OK(bad == 0, "%d strings: the result is utf8proc_NFKC's (%d differ)",
           tried, bad);
    TAP_OK(flag_bad == 0, "CHANGED exactly when NFKC changed the text (%d not)",
           flag_bad);
}

int main(void)
{
    gd_norm_init(&n);
    percent();
    unicode();
    homoglyphs();
    invisible();
    bytes();
    edges();
    against_utf8proc();
    gd_norm_free(&n);
    TAP_OK(n.text == NULL && n.map == NULL && n.work == NULL,
           "gd_norm_free clears");
    return tap_done();
}
