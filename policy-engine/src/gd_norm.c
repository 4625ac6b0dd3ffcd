/*
 * gd_norm: the normaliser that runs before guardrail rules, see gd_norm.h
 * and docs/guardrails.md ("Normalisation").
 *
 * Two stages, each skipped when it has nothing to do:
 *   1. percent-decoding (GD_NORM_PERCENT, '+' with GD_NORM_FORM), once;
 *   2. Unicode (GD_NORM_UNICODE): NFKC, the removal of invisible
 *      characters and the folding of Latin homoglyphs, over the valid
 *      UTF-8 runs of stage 1's output.
 * Each stage writes n->text and n->map; when both run, stage 1's result
 * is swapped into the work buffers and read from there.  Pure ASCII input
 * with nothing to decode is a memcpy and a map fill.
 */
#include "gd_norm.h"

#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

/* the buffers behind n->work */
typedef struct {
    char *text; /* stage 1's result when stage 2 runs too */
    uint32_t *map;
    size_t text_cap;
    size_t map_cap;
} gd_norm_work_t;

void gd_norm_init(gd_norm_t *n)
{
    memset(n, 0, sizeof(*n));
}

void gd_norm_free(gd_norm_t *n)
{
    gd_norm_work_t *w = n->work;

    if (w != NULL) {
        free(w->text);
        free(w->map);
        free(w);
    }
    free(n->text);
    free(n->map);
    memset(n, 0, sizeof(*n));
}

static int grow(gd_norm_t *n, size_t need)
{
    if (need + 1 > n->text_cap) {
        size_t cap = n->text_cap * 2 > need + 1 ? n->text_cap * 2 : need + 1;
        char *t = realloc(n->text, cap);

        if (t == NULL) {
            return -1;
        }
        n->text = t;
        n->text_cap = cap;
    }
    if (need + 1 > n->map_cap) {
        size_t cap = n->map_cap * 2 > need + 1 ? n->map_cap * 2 : need + 1;
        uint32_t *m;

        if (cap > SIZE_MAX / sizeof(uint32_t)) {
            return -1;
        }
        m = realloc(n->map, cap * sizeof(uint32_t));
        if (m == NULL) {
            return -1;
        }
        n->map = m;
        n->map_cap = cap;
    }
    return 0;
}

/* Room for need bytes of text (+ the NUL) and need + 1 map entries. */
static inline int reserve(gd_norm_t *n, size_t need)
{
    if (need < n->text_cap && need < n->map_cap) {
        return 0;
    }
    return grow(n, need);
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c |= 0x20;
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

/* Whether s[0..len) holds a valid %XX. */
static int has_escape(const char *s, size_t len)
{
    const char *p = s, *end = s + len;

    while ((p = memchr(p, '%', (size_t)(end - p))) != NULL) {
        if (end - p >= 3 && hexval((unsigned char)p[1]) >= 0 &&
            hexval((unsigned char)p[2]) >= 0) {
            return 1;
        }
        p++;
    }
    return 0;
}

/* Stage 1: in[0..len) percent-decoded into n->text/n->map. */
static int percent_decode(gd_norm_t *n, const unsigned char *in, size_t len,
                          unsigned opts)
{
    size_t i = 0, o = 0;
    int form = (opts & GD_NORM_FORM) != 0;

    if (reserve(n, len) != 0) {
        return -1;
    }
    while (i < len) {
        unsigned char c = in[i];
        int hi, lo;

        if (c == '%' && len - i >= 3 && (hi = hexval(in[i + 1])) >= 0 &&
            (lo = hexval(in[i + 2])) >= 0) {
            n->text[o] = (char)(hi << 4 | lo);
            n->map[o++] = (uint32_t)i;
            n->flags |= GD_NORM_F_DECODED;
            i += 3;
            continue;
        }
        n->text[o] = (form && c == '+') ? ' ' : (char)c;
        n->map[o++] = (uint32_t)i++;
    }
    n->len = o;
    if ((n->flags & GD_NORM_F_DECODED) && has_escape(n->text, o)) {
        n->flags |= GD_NORM_F_DOUBLE_ENCODED;
    }
    return 0;
}

/* Whether s[0..len) holds a byte >= 0x80. */
int gd_norm_has_high(const unsigned char *s, size_t len)
{
    size_t i = 0;

    for (; i + 8 <= len; i += 8) {
        uint64_t v;

        memcpy(&v, s + i, 8);
        if (v & 0x8080808080808080ULL) {
            return 1;
        }
    }
    for (; i < len; i++) {
        if (s[i] & 0x80) {
            return 1;
        }
    }
    return 0;
}

/* Copies src[0..len) (its map: smap, or the identity when NULL). */
static int copy_through(gd_norm_t *n, const unsigned char *src, size_t len,
                        const uint32_t *smap)
{
    if (reserve(n, len) != 0) {
        return -1;
    }
    memcpy(n->text, src, len);
    if (smap != NULL) {
        memcpy(n->map, smap, len * sizeof(uint32_t));
    } else {
        for (size_t i = 0; i < len; i++) {
            n->map[i] = (uint32_t)i;
        }
    }
    n->len = len;
    return 0;
}

/* ---- stage 2: Unicode ---- */

size_t gd_norm_u8dec(const unsigned char *s, size_t len, int32_t *cp)
{
    unsigned char c = s[0];

    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c < 0xc2) {
        return 0;
    }
    if (c < 0xe0) {
        if (len < 2 || (s[1] & 0xc0) != 0x80) {
            return 0;
        }
        *cp = (int32_t)(c & 0x1f) << 6 | (s[1] & 0x3f);
        return 2;
    }
    if (c < 0xf0) {
        if (len < 3 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 ||
            (c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] >= 0xa0)) {
            return 0;
        }
        *cp = (int32_t)(c & 0x0f) << 12 | (int32_t)(s[1] & 0x3f) << 6 |
              (s[2] & 0x3f);
        return 3;
    }
    if (c < 0xf5) {
        if (len < 4 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 ||
            (s[3] & 0xc0) != 0x80 || (c == 0xf0 && s[1] < 0x90) ||
            (c == 0xf4 && s[1] >= 0x90)) {
            return 0;
        }
        *cp = (int32_t)(c & 0x07) << 18 | (int32_t)(s[1] & 0x3f) << 12 |
              (int32_t)(s[2] & 0x3f) << 6 | (s[3] & 0x3f);
        return 4;
    }
    return 0;
}

static size_t u8enc(int32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/*
 * Homoglyphs: Cyrillic, Greek and Latin letters that look like a Latin
 * ASCII letter and that NFKC leaves alone.  Kept small on purpose: the
 * letters that are drawn the same in common fonts.  Each is two bytes in
 * UTF-8 and folds to one ASCII letter.
 */
#define CONF_FIRST 0x0131
#define CONF_LAST 0x051d
#define C(cp, a) [(cp)-CONF_FIRST] = (a)

static const char confusables[CONF_LAST - CONF_FIRST + 1] = {
    /* Latin */
    C(0x0131, 'i'), /* ı */
    /* Greek capitals */
    C(0x0391, 'A'), /* Α */
    C(0x0392, 'B'), /* Β */
    C(0x0395, 'E'), /* Ε */
    C(0x0396, 'Z'), /* Ζ */
    C(0x0397, 'H'), /* Η */
    C(0x0399, 'I'), /* Ι */
    C(0x039a, 'K'), /* Κ */
    C(0x039c, 'M'), /* Μ */
    C(0x039d, 'N'), /* Ν */
    C(0x039f, 'O'), /* Ο */
    C(0x03a1, 'P'), /* Ρ */
    C(0x03a4, 'T'), /* Τ */
    C(0x03a5, 'Y'), /* Υ */
    C(0x03a7, 'X'), /* Χ */
    /* Greek small */
    C(0x03b1, 'a'), /* α */
    C(0x03b9, 'i'), /* ι */
    C(0x03ba, 'k'), /* κ */
    C(0x03bd, 'v'), /* ν */
    C(0x03bf, 'o'), /* ο */
    C(0x03c1, 'p'), /* ρ */
    C(0x03c5, 'u'), /* υ */
    /* Cyrillic capitals */
    C(0x0405, 'S'), /* Ѕ */
    C(0x0406, 'I'), /* І */
    C(0x0408, 'J'), /* Ј */
    C(0x0410, 'A'), /* А */
    C(0x0412, 'B'), /* В */
    C(0x0415, 'E'), /* Е */
    C(0x041a, 'K'), /* К */
    C(0x041c, 'M'), /* М */
    C(0x041d, 'H'), /* Н */
    C(0x041e, 'O'), /* О */
    C(0x0420, 'P'), /* Р */
    C(0x0421, 'C'), /* С */
    C(0x0422, 'T'), /* Т */
    C(0x0425, 'X'), /* Х */
    /* Cyrillic small */
    C(0x0430, 'a'), /* а */
    C(0x0435, 'e'), /* е */
    C(0x043e, 'o'), /* о */
    C(0x0440, 'p'), /* р */
    C(0x0441, 'c'), /* с */
    C(0x0443, 'y'), /* у */
    C(0x0445, 'x'), /* х */
    C(0x0455, 's'), /* ѕ */
    C(0x0456, 'i'), /* і */
    C(0x0458, 'j'), /* ј */
    C(0x04bb, 'h'), /* һ */
    C(0x04cf, 'l'), /* ӏ */
    C(0x0501, 'd'), /* ԁ */
    C(0x051b, 'q'), /* ԛ */
    C(0x051d, 'w'), /* ԝ */
};

#undef C

static char confusable(int32_t cp)
{
    if (cp < CONF_FIRST || cp > CONF_LAST) {
        return 0;
    }
    return confusables[cp - CONF_FIRST];
}

#define DECOMP_MAX 32 /* the longest NFKD of one code point is 18 */
#define RUN_FLUSH 30  /* UAX #15 stream-safe: 30 non-starters in a row */
#define RUN_MAX (RUN_FLUSH + DECOMP_MAX)
#define WIN_MAX 128

/*
 * The state of stage 2.  Decomposed code points go through run (the
 * non-starters since the last starter, put in canonical order when the
 * run ends) into win (the last starter and what follows it, where the
 * canonical composition happens); win is written out when a starter that
 * does not compose with it arrives.  Each code point carries the input
 * offset of the character it came from.
 */
typedef struct {
    gd_norm_t *n;
    size_t o; /* bytes written to n->text */
    int32_t run[RUN_MAX];
    uint32_t run_off[RUN_MAX];
    int run_len;
    int32_t win[WIN_MAX];
    uint32_t win_off[WIN_MAX];
    int win_len;
    int starter; /* win[0] is a starter that may still compose */
    int max_ccc; /* the highest class in win after win[0], -1 if none */
    int changed; /* something may have changed (checked at the end) */
    int homoglyph;
} gd_uni_t;

static int ccc(int32_t cp)
{
    return utf8proc_get_property(cp)->combining_class;
}

/*
 * Whether a and b can compose at all, before asking utf8proc (pb: b's
 * properties): its composition table index (comb_index) says whether a
 * code point is ever the first or the second of a pair.  That is the
 * layout of utf8proc 2.8 (Debian's); with another version every pair is
 * asked.  t_norm checks the result against utf8proc_NFKC.
 */
static int may_compose(int32_t a, int32_t b, const utf8proc_property_t *pb)
{
#if UTF8PROC_VERSION_MAJOR == 2 && UTF8PROC_VERSION_MINOR == 8
    if ((b >= 0x1161 && b <= 0x1175) || (b >= 0x11a8 && b <= 0x11c2)) {
        return 1; /* Hangul V and T jamo compose arithmetically */
    }
    if (pb->comb_index == UINT16_MAX || pb->comb_index < 0x8000) {
        return 0; /* b is never the second of a pair */
    }
    return utf8proc_get_property(a)->comb_index < 0x8000;
#else
    (void)a;
    (void)b;
    (void)pb;
    return 1;
#endif
}

/* The canonical composite of a and b, or 0. */
static int32_t compose(int32_t a, int32_t b, const utf8proc_property_t *pb)
{
    utf8proc_int32_t pair[2] = {a, b};

    if (may_compose(a, b, pb) &&
        utf8proc_normalize_utf32(pair, 2, UTF8PROC_COMPOSE | UTF8PROC_STABLE) ==
            1) {
        return pair[0];
    }
    return 0;
}

static int emit_window(gd_uni_t *u)
{
    gd_norm_t *n = u->n;

    if (u->win_len == 0) {
        return 0;
    }
    if (reserve(n, u->o + 4 * (size_t)u->win_len) != 0) {
        return -1;
    }
    for (int k = 0; k < u->win_len; k++) {
        int32_t cp = u->win[k];
        size_t l;

        if (cp == 0x85 || cp == 0x1680 || cp == 0x2028 || cp == 0x2029) {
            /* the white space NFKC keeps: a space, so that \s on the
               result is ASCII white space (gd_gr_prefilter.h) */
            cp = ' ';
            u->changed = 1;
        }
        l = u8enc(cp, n->text + u->o);

        for (size_t b = 0; b < l; b++) {
            n->map[u->o + b] = u->win_off[k];
        }
        u->o += l;
        if (confusable(cp)) {
            u->homoglyph = 1;
        }
    }
    u->win_len = 0;
    u->starter = 0;
    u->max_ccc = -1;
    return 0;
}

static int feed_starter(gd_uni_t *u, int32_t cp, uint32_t off,
                        const utf8proc_property_t *prop)
{
    int32_t c;

    if (u->starter && u->max_ccc < 0 &&
        (c = compose(u->win[0], cp, prop)) != 0) {
        u->win[0] = c;
        u->changed = 1;
        return 0;
    }
    if (emit_window(u) != 0) {
        return -1;
    }
    u->win[0] = cp;
    u->win_off[0] = off;
    u->win_len = 1;
    u->starter = 1;
    return 0;
}

static int feed_mark(gd_uni_t *u, int32_t cp, int cls, uint32_t off)
{
    int32_t c;

    if (u->starter && cls > u->max_ccc &&
        (c = compose(u->win[0], cp, utf8proc_get_property(cp))) != 0) {
        u->win[0] = c;
        u->changed = 1;
        return 0;
    }
    if (u->win_len == WIN_MAX && emit_window(u) != 0) {
        return -1;
    }
    u->win[u->win_len] = cp;
    u->win_off[u->win_len++] = off;
    if (cls > u->max_ccc) {
        u->max_ccc = cls;
    }
    return 0;
}

/* The pending non-starters in canonical order (stable by class; the
 * offsets stay in input order so that the map keeps increasing), then
 * into the window. */
static int flush_run(gd_uni_t *u)
{
    int cls[RUN_MAX];

    for (int k = 0; k < u->run_len; k++) {
        cls[k] = ccc(u->run[k]);
    }
    for (int k = 1; k < u->run_len; k++) {
        int32_t cp = u->run[k];
        int c = cls[k], j = k;

        while (j > 0 && cls[j - 1] > c) {
            u->run[j] = u->run[j - 1];
            cls[j] = cls[j - 1];
            j--;
        }
        if (j != k) {
            u->run[j] = cp;
            cls[j] = c;
            u->changed = 1;
        }
    }
    for (int k = 0; k < u->run_len; k++) {
        if (feed_mark(u, u->run[k], cls[k], u->run_off[k]) != 0) {
            return -1;
        }
    }
    u->run_len = 0;
    return 0;
}

/* The end of the ASCII run that starts at s[i]. */
static size_t ascii_run(const unsigned char *s, size_t i, size_t len)
{
    for (; i + 8 <= len; i += 8) {
        uint64_t v;

        memcpy(&v, s + i, 8);
        if (v & 0x8080808080808080ULL) {
            break;
        }
    }
    while (i < len && s[i] < 0x80) {
        i++;
    }
    return i;
}

/*
 * Whether an invisible character is kept: between a byte that is not
 * UTF-8 (raw_tail) and a continuation byte (next), which would otherwise
 * join into a character that was not there.
 */
static int kept(int raw_tail, const unsigned char *next, size_t left)
{
    return raw_tail && left > 0 && (next[0] & 0xc0) == 0x80;
}

/* Whether text differs from src without its removed characters. */
static int differs(const unsigned char *src, size_t slen,
                   const unsigned char *text, size_t tlen)
{
    size_t i = 0, j = 0, l;
    int raw_tail = 0;

    while (i < slen) {
        int32_t cp;

        if (src[i] < 0x80) {
            l = ascii_run(src, i, slen) - i;
            raw_tail = 0;
        } else if ((l = gd_norm_u8dec(src + i, slen - i, &cp)) == 0) {
            l = 1;
            raw_tail = 1;
        } else if (gd_norm_invisible(cp) &&
                   !kept(raw_tail, src + i + l, slen - i - l)) {
            i += l;
            continue;
        } else {
            raw_tail = 0;
        }
        if (tlen - j < l || memcmp(src + i, text + j, l) != 0) {
            return 1;
        }
        i += l;
        j += l;
    }
    return j != tlen;
}

/* Stage 2 over src[0..slen) (its map smap, or the identity). */
static int unicode_stage(gd_norm_t *n, const unsigned char *src, size_t slen,
                         const uint32_t *smap)
{
    gd_uni_t u;
    size_t i = 0;
    int raw_tail = 0; /* the last thing written was a byte not UTF-8 */

    u.n = n;
    u.o = 0;
    u.run_len = 0;
    u.win_len = 0;
    u.starter = 0;
    u.max_ccc = -1;
    u.changed = 0;
    u.homoglyph = 0;
    if (reserve(n, slen + slen / 4 + 16) != 0) {
        return -1;
    }

    while (i < slen) {
        utf8proc_int32_t d[DECOMP_MAX];
        utf8proc_ssize_t nd;
        const utf8proc_property_t *prop;
        int32_t cp;
        uint32_t off = smap != NULL ? smap[i] : (uint32_t)i;
        size_t l;
        int bound = 0;

        if (src[i] < 0x80) {
            /* ASCII: copied; its last character may take marks */
            size_t j = ascii_run(src, i, slen), k = j - 1 - i;

            if (flush_run(&u) != 0 || emit_window(&u) != 0 ||
                reserve(n, u.o + k) != 0) {
                return -1;
            }
            memcpy(n->text + u.o, src + i, k);
            if (smap != NULL) {
                memcpy(n->map + u.o, smap + i, k * sizeof(uint32_t));
            } else {
                for (size_t b = 0; b < k; b++) {
                    n->map[u.o + b] = (uint32_t)(i + b);
                }
            }
            u.o += k;
            u.win[0] = src[j - 1];
            u.win_off[0] = smap != NULL ? smap[j - 1] : (uint32_t)(j - 1);
            u.win_len = 1;
            u.starter = 1;
            raw_tail = 0;
            i = j;
            continue;
        }

        l = gd_norm_u8dec(src + i, slen - i, &cp);
        if (l == 0) {
            /* not UTF-8: the byte as it is, nothing composes across it */
            if (flush_run(&u) != 0 || emit_window(&u) != 0 ||
                reserve(n, u.o + 1) != 0) {
                return -1;
            }
            n->text[u.o] = (char)src[i];
            n->map[u.o++] = off;
            n->flags |= GD_NORM_F_INVALID_UTF8;
            raw_tail = 1;
            i++;
            continue;
        }
        i += l;
        if (gd_norm_invisible(cp) && !kept(raw_tail, src + i, slen - i)) {
            n->flags |= GD_NORM_F_INVISIBLE;
            continue;
        }
        raw_tail = 0;

        prop = utf8proc_get_property(cp);
        if (prop->combining_class == 0 && prop->decomp_seqindex == UINT16_MAX &&
            !(cp >= 0xac00 && cp <= 0xd7a3)) {
            /* a starter without a decomposition (most letters) */
            if (flush_run(&u) != 0 || feed_starter(&u, cp, off, prop) != 0) {
                return -1;
            }
            continue;
        }
        nd = utf8proc_decompose_char(
            cp, d, DECOMP_MAX,
            UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT | UTF8PROC_STABLE, &bound);
        if (nd < 1 || nd > DECOMP_MAX) {
            d[0] = cp;
            nd = 1;
        } else if (nd != 1 || d[0] != cp) {
            u.changed = 1;
        }
        for (utf8proc_ssize_t k = 0; k < nd; k++) {
            const utf8proc_property_t *pk = utf8proc_get_property(d[k]);

            if (pk->combining_class == 0) {
                if (flush_run(&u) != 0 ||
                    feed_starter(&u, d[k], off, pk) != 0) {
                    return -1;
                }
                continue;
            }
            u.run[u.run_len] = d[k];
            u.run_off[u.run_len++] = off;
        }
        if (u.run_len >= RUN_FLUSH && flush_run(&u) != 0) {
            return -1;
        }
    }
    if (flush_run(&u) != 0 || emit_window(&u) != 0) {
        return -1;
    }
    n->len = u.o;

    if (u.changed &&
        differs(src, slen, (const unsigned char *)n->text, n->len)) {
        n->flags |= GD_NORM_F_CHANGED;
    }
    return u.homoglyph ? 1 : 0;
}

/*
 * Homoglyphs folded to ASCII, word by word (a word: letters, marks and
 * digits), in a word that holds an ASCII letter or whose letters all have
 * a Latin lookalike: "іgnоrе" (Cyrillic і, о, е) becomes "ignore", while
 * Russian or Greek words ("пароль") stay as they are.  In place: each
 * folded letter shrinks from two bytes to one.
 */
static int word_char(const unsigned char *s, size_t len, size_t *l, int32_t *cp)
{
    unsigned char c = s[0];

    if (c < 0x80) {
        *l = 1;
        *cp = c;
        return (c >= '0' && c <= '9') ||
               ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
    }
    *l = gd_norm_u8dec(s, len, cp);
    if (*l == 0) {
        *l = 1;
        return 0;
    }
    switch (utf8proc_category(*cp)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
        return 1;
    default:
        return 0;
    }
}

static int is_letter(int32_t cp)
{
    utf8proc_category_t c = utf8proc_category(cp);

    return c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO;
}

static void fold_homoglyphs(gd_norm_t *n)
{
    unsigned char *t = (unsigned char *)n->text;
    size_t r = 0, w = 0, len = n->len, l = 1;
    int32_t cp;
    int folded = 0;

    while (r < len) {
        size_t start = r;
        int conf = 0, ascii = 0, other = 0;

        /* a word: [start, r) */
        while (r < len && word_char(t + r, len - r, &l, &cp)) {
            if (cp < 0x80) {
                ascii |= cp >= 'A';
            } else if (confusable(cp)) {
                conf = 1;
            } else if (is_letter(cp)) {
                other = 1;
            }
            r += l;
        }
        if (r == start) {
            r += l; /* not a word character: as it is */
        } else if (conf && (ascii || !other)) {
            for (size_t p = start; p < r; p += l) {
                char a;

                word_char(t + p, r - p, &l, &cp);
                if ((a = confusable(cp)) != 0) {
                    t[w] = (unsigned char)a;
                    n->map[w++] = n->map[p];
                    folded = 1;
                    continue;
                }
                memmove(t + w, t + p, l);
                memmove(n->map + w, n->map + p, l * sizeof(uint32_t));
                w += l;
            }
            continue;
        }
        if (w != start) {
            memmove(t + w, t + start, r - start);
            memmove(n->map + w, n->map + start, (r - start) * sizeof(uint32_t));
        }
        w += r - start;
    }
    n->len = w;
    if (folded) {
        n->flags |= GD_NORM_F_CHANGED;
    }
}

/* Sets GD_NORM_F_INVALID_UTF8 when s[0..len) is not all UTF-8. */
int gd_norm_utf8_valid(const unsigned char *s, size_t len)
{
    size_t i = 0;

    while (i < len) {
        int32_t cp;
        size_t l;

        if (s[i] < 0x80) {
            i = ascii_run(s, i, len);
            continue;
        }
        if ((l = gd_norm_u8dec(s + i, len - i, &cp)) == 0) {
            return 0;
        }
        i += l;
    }
    return 1;
}

static void check_utf8(gd_norm_t *n, const unsigned char *s, size_t len)
{
    if (!gd_norm_utf8_valid(s, len)) {
        n->flags |= GD_NORM_F_INVALID_UTF8;
    }
}

/* Stage 1's result into the work buffers, n's buffers free for stage 2. */
static int swap_work(gd_norm_t *n)
{
    gd_norm_work_t *w = n->work;
    char *t;
    uint32_t *m;
    size_t tc, mc;

    if (w == NULL) {
        if ((w = calloc(1, sizeof(*w))) == NULL) {
            return -1;
        }
        n->work = w;
        n->work_cap = sizeof(*w);
    }
    t = w->text;
    m = w->map;
    tc = w->text_cap;
    mc = w->map_cap;
    w->text = n->text;
    w->map = n->map;
    w->text_cap = n->text_cap;
    w->map_cap = n->map_cap;
    n->text = t;
    n->map = m;
    n->text_cap = tc;
    n->map_cap = mc;
    return 0;
}

int gd_norm(gd_norm_t *n, const char *in, size_t len, unsigned opts)
{
    const unsigned char *src = (const unsigned char *)in;
    const uint32_t *smap = NULL;
    size_t slen = len;
    int decoded = 0;

    n->flags = 0;
    n->len = 0;
    if (len > GD_NORM_MAX) {
        return -1;
    }
    if (len == 0) {
        if (reserve(n, 0) != 0) {
            return -1;
        }
        n->map[0] = 0;
        n->text[0] = '\0';
        return 0;
    }

    if ((opts & GD_NORM_PERCENT) &&
        (memchr(in, '%', len) != NULL ||
         ((opts & GD_NORM_FORM) && memchr(in, '+', len) != NULL))) {
        if (percent_decode(n, src, len, opts) != 0) {
            return -1;
        }
        decoded = 1;
        src = (const unsigned char *)n->text;
        smap = n->map;
        slen = n->len;
    }

    if ((opts & GD_NORM_UNICODE) && gd_norm_has_high(src, slen)) {
        int rc;

        if (decoded) {
            if (swap_work(n) != 0) {
                return -1;
            }
            src = (const unsigned char *)((gd_norm_work_t *)n->work)->text;
            smap = ((gd_norm_work_t *)n->work)->map;
        }
        if ((rc = unicode_stage(n, src, slen, smap)) < 0) {
            n->len = 0;
            return -1;
        }
        if (rc > 0) {
            fold_homoglyphs(n);
        }
    } else {
        if (!decoded && copy_through(n, src, len, NULL) != 0) {
            return -1;
        }
        if (gd_norm_has_high((const unsigned char *)n->text, n->len)) {
            check_utf8(n, (const unsigned char *)n->text, n->len);
        }
    }

    if (memchr(n->text, '\0', n->len) != NULL) {
        n->flags |= GD_NORM_F_NUL;
    }
    n->map[n->len] = (uint32_t)len;
    n->text[n->len] = '\0';
    return 0;
}
