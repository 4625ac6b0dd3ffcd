/*
 * gd_detect: the PII and secret detectors of guardrail rules.
 *
 * Each detector is one forward pass over the text that jumps from one
 * candidate position to the next (the fast skips below: SSE2 where there is
 * one), a scanner for the candidate's shape, and a validation of the
 * candidate (checksums, ranges, boundaries) that cuts false positives.
 * docs/detectors.md lists what each accepts and rejects.  A skip never
 * changes what is found: t_detect compares every detector's spans over a
 * large sample set with tests/detect.golden, written before the skips.
 *
 * Nothing here allocates, and no function reads outside text[0..len): every
 * look-ahead and look-behind is bounded by an explicit index check.
 */
#include "gd_detect.h"
#include "gd_jwt.h"
#include "gd_norm.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

typedef const unsigned char uc;

/* the spans found so far: the first max stored, all counted */
typedef struct {
    gd_detect_span_t *spans;
    size_t max;
    size_t n;
} gd_out_t;

static void gd_emit(gd_out_t *o, size_t off, size_t len)
{
    if (o->n < o->max) {
        o->spans[o->n].off = off;
        o->spans[o->n].len = len;
    }
    o->n++;
}

static int gd_digit(unsigned c)
{
    return c - '0' < 10u;
}

static int gd_upper(unsigned c)
{
    return c - 'A' < 26u;
}

static int gd_lower(unsigned c)
{
    return c - 'a' < 26u;
}

static int gd_alpha(unsigned c)
{
    return gd_upper(c) || gd_lower(c);
}

static int gd_alnum(unsigned c)
{
    return gd_digit(c) || gd_alpha(c);
}

/* a character of a word: an identifier, a number, a token */
static int gd_word(unsigned c)
{
    return gd_alnum(c) || c == '_';
}

static int gd_hex(unsigned c)
{
    return gd_digit(c) || (c | 0x20) - 'a' < 6u;
}

static int gd_b64url(unsigned c)
{
    return gd_alnum(c) || c == '-' || c == '_';
}

static unsigned gd_tolower(unsigned c)
{
    return gd_upper(c) ? c | 0x20 : c;
}

/* punctuation that joins numbers: dates, versions, decimals, times, ranges */
static int gd_numjoin(unsigned c)
{
    return c == '.' || c == '-' || c == '/' || c == ':' || c == ',';
}

/* a number may start at i: not inside a word nor a longer number */
static int gd_num_left(uc *t, size_t i)
{
    if (i == 0) {
        return 1;
    }
    if (gd_word(t[i - 1])) {
        return 0;
    }
    return !(gd_numjoin(t[i - 1]) && i >= 2 && gd_digit(t[i - 2]));
}

/* a number may end at e (exclusive) */
static int gd_num_right(uc *t, size_t len, size_t e)
{
    if (e == len) {
        return 1;
    }
    if (gd_word(t[e])) {
        return 0;
    }
    return !(gd_numjoin(t[e]) && e + 1 < len && gd_digit(t[e + 1]));
}

/*
 * The fast skips: where the next position is that a detector's trigger
 * allows (16 bytes at a time with SSE2, one at a time without).  A
 * detector jumps there from i only when every position in between would
 * have been refused by its first check, so that what it finds is the same.
 */

#if defined(__SSE2__)
typedef __m128i gd_v16;

static gd_v16 gd_load16(uc *p)
{
    return _mm_loadu_si128((const __m128i *)(const void *)p);
}

static unsigned gd_mask16(gd_v16 v)
{
    return (unsigned)_mm_movemask_epi8(v);
}

/* the bytes of v in [lo, hi] (lo > 0, hi < 0x80) */
static gd_v16 gd_range16(gd_v16 v, int lo, int hi)
{
    return _mm_and_si128(_mm_cmpgt_epi8(v, _mm_set1_epi8((char)(lo - 1))),
                         _mm_cmplt_epi8(v, _mm_set1_epi8((char)(hi + 1))));
}

static gd_v16 gd_eq16(gd_v16 v, int c)
{
    return _mm_cmpeq_epi8(v, _mm_set1_epi8((char)c));
}
#endif

/* the first k >= i with t[k] a digit, or len */
static size_t gd_next_digit(uc *t, size_t len, size_t i)
{
#if defined(__SSE2__)
    /* the next 4 bytes one by one: digits are often close together */
    for (size_t e = len - i > 4 ? i + 4 : len; i < e; i++) {
        if (gd_digit(t[i])) {
            return i;
        }
    }
    for (; i + 32 <= len; i += 32) {
        unsigned m = gd_mask16(gd_range16(gd_load16(t + i), '0', '9')) |
                     gd_mask16(gd_range16(gd_load16(t + i + 16), '0', '9'))
                         << 16;

        if (m) {
            return i + (size_t)__builtin_ctz(m);
        }
    }
    if (i + 16 <= len) {
        unsigned m = gd_mask16(gd_range16(gd_load16(t + i), '0', '9'));

        if (m) {
            return i + (size_t)__builtin_ctz(m);
        }
        i += 16;
    }
    if (i < len && len >= 16) {
        /* the last 16 bytes, of which those before i are dropped */
        unsigned m = gd_mask16(gd_range16(gd_load16(t + len - 16), '0', '9')) >>
                     (i - (len - 16));

        return m ? i + (size_t)__builtin_ctz(m) : len;
    }
#endif
    while (i < len && !gd_digit(t[i])) {
        i++;
    }
    return i;
}

#if defined(__SSE2__)
/* the pairs at p: bit k, (p[k] | or0) == c0 and (p[k + 1] | or1) == c1 */
static unsigned gd_pairs16(uc *p, gd_v16 c0, gd_v16 or0, gd_v16 c1, gd_v16 or1)
{
    gd_v16 a = _mm_or_si128(gd_load16(p), or0),
           b = _mm_or_si128(gd_load16(p + 1), or1);

    return gd_mask16(
        _mm_and_si128(_mm_cmpeq_epi8(a, c0), _mm_cmpeq_epi8(b, c1)));
}
#endif

/* the first k >= i with (t[k] | or0) == c0 and (t[k + 1] | or1) == c1, or
   len (an OR folds two bytes into one: 'h' | 0x10 and 'x' | 0x10 are 'x') */
static size_t gd_next_pair_or(uc *t, size_t len, size_t i, int c0, int or0,
                              int c1, int or1)
{
#if defined(__SSE2__)
    const gd_v16 vc0 = _mm_set1_epi8((char)c0), vo0 = _mm_set1_epi8((char)or0),
                 vc1 = _mm_set1_epi8((char)c1), vo1 = _mm_set1_epi8((char)or1);

    for (; i + 33 <= len; i += 32) {
        unsigned m = gd_pairs16(t + i, vc0, vo0, vc1, vo1) |
                     gd_pairs16(t + i + 16, vc0, vo0, vc1, vo1) << 16;

        if (m) {
            return i + (size_t)__builtin_ctz(m);
        }
    }
    if (i + 17 <= len) {
        unsigned m = gd_pairs16(t + i, vc0, vo0, vc1, vo1);

        if (m) {
            return i + (size_t)__builtin_ctz(m);
        }
        i += 16;
    }
    if (i + 1 < len && len >= 17) {
        /* the last 16 pairs, of which those before i are dropped */
        unsigned m =
            gd_pairs16(t + len - 17, vc0, vo0, vc1, vo1) >> (i - (len - 17));

        return m ? i + (size_t)__builtin_ctz(m) : len;
    }
#endif
    for (; i + 1 < len; i++) {
        if ((t[i] | or0) == c0 && (t[i + 1] | or1) == c1) {
            return i;
        }
    }
    return len;
}

/* the first k >= i with t[k] == c0 and t[k + 1] == c1, or len */
static size_t gd_next_pair(uc *t, size_t len, size_t i, int c0, int c1)
{
    return gd_next_pair_or(t, len, i, c0, 0, c1, 0);
}

/*
 * The scanners of tokens of at least min bytes: next(t, len, i) is the
 * first position at or after i where one may start (or len), and at(t, len,
 * i) the length of the match at i (boundaries included), or 0.
 */
static void gd_scan_from(uc *t, size_t len, gd_out_t *o, size_t min,
                         size_t (*next)(uc *, size_t, size_t),
                         size_t (*at)(uc *, size_t, size_t))
{
    size_t i = 0;

    while (i + min <= len) {
        size_t s = next(t, len, i), n;

        if (s == len || s + min > len) {
            return;
        }
        n = at(t, len, s);
        if (n) {
            gd_emit(o, s, n);
            i = s + n;
        } else {
            i = s + 1;
        }
    }
}

/* ------------------------------------------------------------------ */
/* email */

/* the characters of a local part taken here (a common subset of 5322) */
static int gd_local(unsigned c)
{
    return gd_alnum(c) || c == '.' || c == '_' || c == '%' || c == '+' ||
           c == '-';
}

/* the domain at t[d..e): 2..127 labels, a TLD of 2..24 letters */
static int gd_domain_ok(uc *t, size_t d, size_t e)
{
    size_t labels = 0, l = d;

    if (e - d > 253) {
        return 0;
    }

    for (size_t i = d; i <= e; i++) {
        if (i < e && t[i] != '.') {
            continue;
        }
        /* a label t[l..i) */
        if (i - l < 1 || i - l > 63 || t[l] == '-' || t[i - 1] == '-') {
            return 0;
        }
        labels++;
        if (i == e) {
            if (i - l < 2 || i - l > 24) {
                return 0;
            }
            for (size_t k = l; k < i; k++) {
                if (!gd_alpha(t[k])) {
                    return 0;
                }
            }
        }
        l = i + 1;
    }

    return labels >= 2;
}

static void gd_email(uc *t, size_t len, gd_out_t *o)
{
    size_t floor = 0, at = 0;

    for (;;) {
        const unsigned char *p = memchr(t + at, '@', len - at);
        size_t a, s, d, e;

        if (p == NULL) {
            return;
        }
        a = (size_t)(p - t);
        at = a + 1;

        /* the local part, at most 64 characters, back from the '@' */
        s = a;
        while (s > floor && gd_local(t[s - 1]) && a - s <= 64) {
            s--;
        }
        if (a - s > 64 || (s > 0 && t[s - 1] == '@')) {
            continue;
        }
        while (s < a && t[s] == '.') {
            s++;
        }
        if (s == a || t[a - 1] == '.') {
            continue;
        }
        {
            int dots = 0;
            for (size_t k = s + 1; k < a; k++) {
                if (t[k] == '.' && t[k - 1] == '.') {
                    dots = 1;
                    break;
                }
            }
            if (dots) {
                continue;
            }
        }

        /* the domain: labels of [A-Za-z0-9-] joined by single dots */
        d = a + 1;
        e = d;
        while (e < len && (gd_alnum(t[e]) || t[e] == '-' || t[e] == '.') &&
               e - d <= 254) {
            e++;
        }
        while (e > d && (t[e - 1] == '.' || t[e - 1] == '-')) {
            e--;
        }
        if (e == d || !gd_domain_ok(t, d, e)) {
            continue;
        }
        if (e < len && (gd_word(t[e]) || t[e] == '@')) {
            continue;
        }

        gd_emit(o, s, e - s);
        floor = e;
        at = e;
    }
}

/* ------------------------------------------------------------------ */
/* phone */

#define GD_PHONE_GROUPS 8

/*
 * A phone number starting at i ('+', '(' or a digit): its length, or 0
 * with *next where to look again.
 */
static size_t gd_phone_at(uc *t, size_t len, size_t i, size_t *next)
{
    unsigned glen[GD_PHONE_GROUPS];
    unsigned digits = 0, groups = 0, f;
    int plus = 0, paren = -1, after_paren = 0;
    unsigned sep = 0;
    size_t p = i, retry = 0, first;

    if (t[p] == '+') {
        plus = 1;
        p++;
    }

    for (;;) {
        int in_paren = 0;
        unsigned d = 0;

        if (p < len && t[p] == '(') {
            if (paren >= 0) {
                goto fail;
            }
            in_paren = 1;
            p++;
        }
        while (p < len && gd_digit(t[p]) && d < 18) {
            p++;
            d++;
        }
        if (d == 0 || groups == GD_PHONE_GROUPS) {
            goto fail;
        }
        glen[groups++] = d;
        digits += d;
        if (digits > 17) {
            goto fail;
        }
        after_paren = 0;
        if (in_paren) {
            if (p == len || t[p] != ')') {
                goto fail;
            }
            p++;
            paren = (int)groups - 1;
            after_paren = 1;
        }
        if (p == len) {
            break;
        }
        if (after_paren) {
            /* "(555) 123-4567", "(555)123-4567", "+44 (0)20 ..." */
            if ((t[p] == ' ' || t[p] == '-') && p + 1 < len &&
                gd_digit(t[p + 1])) {
                p++;
                continue;
            }
            if (gd_digit(t[p])) {
                continue;
            }
            break;
        }
        if ((t[p] == ' ' || t[p] == '-' || t[p] == '.') && p + 1 < len &&
            (gd_digit(t[p + 1]) || (t[p] == ' ' && t[p + 1] == '('))) {
            if (!plus && sep && sep != t[p]) {
                break; /* "555-123-4567 555-..." : one number ends */
            }
            if (t[p + 1] != '(') {
                sep = t[p];
            }
            if (retry == 0 && t[p] == ' ') {
                retry = p + 1;
            }
            p++;
            continue;
        }
        break;
    }

    if (!gd_num_right(t, len, p)) {
        goto fail;
    }

    first = i + (size_t)plus + (t[i + (size_t)plus] == '(');
    f = t[first];

    if (plus) {
        /* E.164: a country code (no leading 0), 8 to 15 digits in all */
        if (f == '0' || paren == 0 || digits < 8 || digits > 15) {
            goto fail;
        }
        return p - i;
    }

    if (groups < 2) {
        goto fail; /* a bare run of digits has no phone shape */
    }

    /* North American: 555-123-4567, (555) 123-4567, 1-800-555-0199 */
    if (digits == 10 && groups == 3 && glen[0] == 3 && glen[1] == 3 &&
        glen[2] == 4 && paren <= 0 && f >= '2') {
        return p - i;
    }
    if (digits == 11 && groups == 4 && glen[0] == 1 && f == '1' &&
        glen[1] == 3 && glen[2] == 3 && glen[3] == 4 &&
        (paren == -1 || paren == 1)) {
        return p - i;
    }

    /* international prefix 00, then 8 to 15 digits */
    if (f == '0' && t[first + 1] == '0' && paren == -1 && digits >= 10 &&
        digits <= 17) {
        return p - i;
    }

    /* a national number with a trunk 0: 020 7946 0958, 01 23 45 67 89 */
    if (f == '0' && digits >= 10 && digits <= 11 && groups <= 5 && paren <= 0 &&
        glen[0] >= 2 && glen[0] <= 5) {
        for (unsigned g = 1; g < groups; g++) {
            if (glen[g] < 2 || glen[g] > 8) {
                goto fail;
            }
        }
        return p - i;
    }

fail:
    *next = retry > i ? retry : (p > i ? p : i + 1);
    return 0;
}

static void gd_phone(uc *t, size_t len, gd_out_t *o)
{
    size_t i = 0;

    while (i < len) {
        unsigned c;
        size_t n, next, j = gd_next_digit(t, len, i);

        /* a start is a digit, or a '+' or '(' before one */
        if (j == len) {
            return;
        }
        i = j > i && (t[j - 1] == '+' || t[j - 1] == '(') ? j - 1 : j;
        c = t[i];
        next = i + 1;
        if (!(gd_digit(c) || c == '+' || c == '(') || !gd_num_left(t, i) ||
            (c == '+' && (i + 1 == len || !gd_digit(t[i + 1]))) ||
            (c == '(' && (i + 1 == len || !gd_digit(t[i + 1])))) {
            i++;
            continue;
        }
        if (gd_digit(c) && i > 0 && t[i - 1] == '+') {
            i++; /* "x+1..." : the '+' was refused as a start */
            continue;
        }
        n = gd_phone_at(t, len, i, &next);
        if (n) {
            gd_emit(o, i, n);
            i += n;
        } else {
            i = next;
        }
    }
}

/* ------------------------------------------------------------------ */
/* card */

static int gd_luhn(const unsigned char *d, unsigned n)
{
    unsigned sum = 0;

    for (unsigned k = 0; k < n; k++) {
        unsigned v = d[n - 1 - k];

        if (k & 1) {
            v *= 2;
            if (v > 9) {
                v -= 9;
            }
        }
        sum += v;
    }

    return sum % 10 == 0;
}

/* the brand's IIN range and length */
static int gd_card_brand(const unsigned char *d, unsigned n)
{
    unsigned p1 = d[0], p2 = p1 * 10 + d[1], p3 = p2 * 10 + d[2],
             p4 = p3 * 10 + d[3], p6 = p4 * 100 + d[4] * 10 + d[5];

    if (p1 == 4) { /* Visa */
        return n == 13 || n == 16 || n == 19;
    }
    if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720)) {
        return n == 16; /* Mastercard */
    }
    if (p2 == 34 || p2 == 37) { /* American Express */
        return n == 15;
    }
    if (p4 == 6011 || (p3 >= 644 && p3 <= 649) || p2 == 65 ||
        (p6 >= 622126 && p6 <= 622925)) {
        return n >= 16 && n <= 19; /* Discover */
    }
    if (p4 >= 3528 && p4 <= 3589) { /* JCB */
        return n >= 16 && n <= 19;
    }
    if ((p3 >= 300 && p3 <= 305) || p4 == 3095 || p2 == 36 || p2 == 38 ||
        p2 == 39) {
        return n >= 14 && n <= 19; /* Diners Club */
    }
    if (p2 == 62) { /* UnionPay */
        return n >= 16 && n <= 19;
    }
    if (p4 == 5018 || p4 == 5020 || p4 == 5038 || p4 == 5893 || p4 == 6304 ||
        p4 == 6759 || p4 == 6761 || p4 == 6762 || p4 == 6763) {
        return n >= 13 && n <= 19; /* Maestro */
    }
    return 0;
}

static size_t gd_card_at(uc *t, size_t len, size_t i, size_t *next)
{
    unsigned char d[20];
    unsigned glen[8];
    unsigned n = 0, groups = 0, sep = 0;
    size_t p = i, retry = 0;
    int shape;

    for (;;) {
        unsigned g = 0;

        while (p < len && gd_digit(t[p]) && n < 20) {
            d[n++] = (unsigned char)(t[p++] - '0');
            g++;
        }
        if (n == 20 && groups > 0) {
            break; /* too long: the first group may still be a card */
        }
        if (n == 20 || groups == 8) {
            goto fail;
        }
        glen[groups++] = g;
        if (p + 1 < len && (t[p] == ' ' || t[p] == '-') && gd_digit(t[p + 1])) {
            if ((sep && sep != t[p]) || groups == 8) {
                goto fail;
            }
            sep = t[p];
            if (retry == 0 && sep == ' ') {
                retry = p + 1;
            }
            p++;
            continue;
        }
        break;
    }

    if (n == 20) {
        goto first;
    }
    if (n < 13 || !gd_num_right(t, len, p)) {
        goto fail;
    }

    /* 4111111111111111, 4111 1111 1111 1111, 3782 822463 10005 */
    shape = groups == 1;
    if (groups >= 3 && glen[groups - 1] >= 1 && glen[groups - 1] <= 4) {
        shape = 1;
        for (unsigned g = 0; g + 1 < groups; g++) {
            shape &= glen[g] == 4;
        }
    }
    if (groups == 3 && glen[0] == 4 && glen[1] == 6 &&
        (glen[2] == 4 || glen[2] == 5)) {
        shape = 1;
    }

    if (shape && gd_card_brand(d, n) && gd_luhn(d, n)) {
        return p - i;
    }

first:
    /* "4111111111111111 5555 ...": the first group alone */
    if (sep == ' ' && glen[0] >= 13 && gd_card_brand(d, glen[0]) &&
        gd_luhn(d, glen[0])) {
        return glen[0];
    }

fail:
    if (retry == 0) {
        /* skip the rest of the run of digits */
        while (p < len && gd_digit(t[p])) {
            p++;
        }
    }
    *next = retry ? retry : p;
    return 0;
}

static void gd_card(uc *t, size_t len, gd_out_t *o)
{
    size_t i = 0;

    while (i < len) {
        size_t n, next;

        i = gd_next_digit(t, len, i);
        if (i == len) {
            return;
        }
        next = i + 1;
        if (!gd_num_left(t, i)) {
            i++;
            continue;
        }
        n = gd_card_at(t, len, i, &next);
        if (n) {
            gd_emit(o, i, n);
            i += n;
        } else {
            i = next > i ? next : i + 1;
        }
    }
}

/* ------------------------------------------------------------------ */
/* iban */

/* the IBAN length of each country of the ISO 13616 registry */
static const struct {
    char cc[3];
    unsigned char len;
} gd_iban_len[] = {
    {"AD", 24}, {"AE", 23}, {"AL", 28}, {"AT", 20}, {"AZ", 28}, {"BA", 20},
    {"BE", 16}, {"BG", 22}, {"BH", 22}, {"BI", 27}, {"BR", 29}, {"BY", 28},
    {"CH", 21}, {"CR", 22}, {"CY", 28}, {"CZ", 24}, {"DE", 22}, {"DJ", 27},
    {"DK", 18}, {"DO", 28}, {"EE", 20}, {"EG", 29}, {"ES", 24}, {"FI", 18},
    {"FK", 18}, {"FO", 18}, {"FR", 27}, {"GB", 22}, {"GE", 22}, {"GI", 23},
    {"GL", 18}, {"GR", 27}, {"GT", 28}, {"HR", 21}, {"HU", 28}, {"IE", 22},
    {"IL", 23}, {"IQ", 23}, {"IS", 26}, {"IT", 27}, {"JO", 30}, {"KW", 30},
    {"KZ", 20}, {"LB", 28}, {"LC", 32}, {"LI", 21}, {"LT", 20}, {"LU", 20},
    {"LV", 21}, {"LY", 25}, {"MC", 27}, {"MD", 24}, {"ME", 22}, {"MK", 19},
    {"MN", 20}, {"MR", 27}, {"MT", 31}, {"MU", 30}, {"NI", 28}, {"NL", 18},
    {"NO", 15}, {"OM", 23}, {"PK", 24}, {"PL", 28}, {"PS", 29}, {"PT", 25},
    {"QA", 29}, {"RO", 24}, {"RS", 22}, {"RU", 33}, {"SA", 24}, {"SC", 31},
    {"SD", 18}, {"SE", 24}, {"SI", 19}, {"SK", 24}, {"SM", 27}, {"SO", 23},
    {"ST", 25}, {"SV", 28}, {"TL", 23}, {"TN", 24}, {"TR", 26}, {"UA", 29},
    {"VA", 22}, {"VG", 24}, {"XK", 20}, {"YE", 30},
};

static unsigned gd_iban_country(unsigned a, unsigned b)
{
    for (size_t k = 0; k < sizeof(gd_iban_len) / sizeof(gd_iban_len[0]); k++) {
        if ((unsigned char)gd_iban_len[k].cc[0] == a &&
            (unsigned char)gd_iban_len[k].cc[1] == b) {
            return gd_iban_len[k].len;
        }
    }
    return 0;
}

static unsigned gd_mod97_add(unsigned m, unsigned c)
{
    if (gd_digit(c)) {
        return (m * 10 + (c - '0')) % 97;
    }
    return (m * 100 + (c - 'A' + 10)) % 97;
}

/* an IBAN at i (an upper-case letter): its length in the text, or 0 */
static size_t gd_iban_at(uc *t, size_t len, size_t i)
{
    unsigned char c[34];
    unsigned want, n = 0, m = 0;
    size_t p = i;
    int spaced = 0;

    if (i + 15 > len || !gd_upper(t[i + 1]) || !gd_digit(t[i + 2]) ||
        !gd_digit(t[i + 3])) {
        return 0;
    }
    want = gd_iban_country(t[i], t[i + 1]);
    if (want == 0) {
        return 0;
    }

    /* electronic form, or the print form: groups of 4 and single spaces */
    while (n < want) {
        if (n > 0 && n % 4 == 0 && p < len && t[p] == ' ' &&
            (n == 4 || spaced)) {
            spaced = 1;
            p++;
        } else if (n > 4 && n % 4 == 0 && spaced) {
            return 0;
        }
        if (p == len || !(gd_upper(t[p]) || gd_digit(t[p]))) {
            return 0;
        }
        c[n++] = t[p++];
    }
    if (p < len && gd_word(t[p])) {
        return 0;
    }

    /* check digits 02..98, then ISO 7064 MOD 97-10 of BBAN + CC + CD */
    if ((c[2] == '0' && c[3] < '2') || (c[2] == '9' && c[3] == '9')) {
        return 0;
    }
    for (unsigned k = 4; k < want + 4; k++) {
        m = gd_mod97_add(m, c[k % want]);
    }

    return m == 1 ? p - i : 0;
}

static void gd_iban(uc *t, size_t len, gd_out_t *o)
{
    size_t i = 0;

    while (i + 15 <= len) {
        size_t n;

        /* an IBAN has a check digit at i + 2 */
        i = gd_next_digit(t, len, i + 2) - 2;
        if (i + 15 > len) {
            return;
        }
        if (!gd_upper(t[i]) || (i > 0 && gd_word(t[i - 1]))) {
            i++;
            continue;
        }
        n = gd_iban_at(t, len, i);
        if (n) {
            gd_emit(o, i, n);
            i += n;
        } else {
            i++;
        }
    }
}

/* ------------------------------------------------------------------ */
/* ssn */

static int gd_ssn_parts(uc *a, uc *g, uc *s)
{
    unsigned area = (a[0] - '0') * 100 + (a[1] - '0') * 10 + (a[2] - '0');

    if (area == 0 || area == 666 || area >= 900) {
        return 0;
    }
    if (g[0] == '0' && g[1] == '0') {
        return 0;
    }
    return !(s[0] == '0' && s[1] == '0' && s[2] == '0' && s[3] == '0');
}

static int gd_ndigits(uc *t, size_t len, size_t i, size_t n)
{
    if (i + n > len) {
        return 0;
    }
    for (size_t k = 0; k < n; k++) {
        if (!gd_digit(t[i + k])) {
            return 0;
        }
    }
    return 1;
}

/* "ssn" or "social security" (any case) within the 32 bytes before i */
static int gd_ssn_context(uc *t, size_t i)
{
    static const char social[] = "social security";
    size_t from = i > 32 ? i - 32 : 0;

    for (size_t k = from; k < i; k++) {
        if (k + 3 <= i && gd_tolower(t[k]) == 's' &&
            gd_tolower(t[k + 1]) == 's' && gd_tolower(t[k + 2]) == 'n' &&
            (k == 0 || !gd_alpha(t[k - 1])) &&
            (k + 3 == i || !gd_alpha(t[k + 3]))) {
            return 1;
        }
        if (k + sizeof(social) - 1 <= i) {
            size_t j = 0;
            while (j < sizeof(social) - 1 &&
                   gd_tolower(t[k + j]) == (unsigned char)social[j]) {
                j++;
            }
            if (j == sizeof(social) - 1) {
                return 1;
            }
        }
    }
    return 0;
}

static size_t gd_ssn_at(uc *t, size_t len, size_t i)
{
    /* AAA-GG-SSSS: always */
    if (gd_ndigits(t, len, i, 3) && i + 11 <= len && t[i + 3] == '-' &&
        gd_ndigits(t, len, i + 4, 2) && t[i + 6] == '-' &&
        gd_ndigits(t, len, i + 7, 4) && gd_num_right(t, len, i + 11) &&
        gd_ssn_parts(t + i, t + i + 4, t + i + 7)) {
        return 11;
    }

    /* AAA GG SSSS and AAAGGSSSS: only after "SSN" or "social security" */
    if (gd_ndigits(t, len, i, 3) && i + 11 <= len && t[i + 3] == ' ' &&
        gd_ndigits(t, len, i + 4, 2) && t[i + 6] == ' ' &&
        gd_ndigits(t, len, i + 7, 4) && gd_num_right(t, len, i + 11) &&
        gd_ssn_parts(t + i, t + i + 4, t + i + 7) && gd_ssn_context(t, i)) {
        return 11;
    }
    if (gd_ndigits(t, len, i, 9) && gd_num_right(t, len, i + 9) &&
        gd_ssn_parts(t + i, t + i + 3, t + i + 5) && gd_ssn_context(t, i)) {
        return 9;
    }

    return 0;
}

static void gd_ssn(uc *t, size_t len, gd_out_t *o)
{
    size_t i = 0;

    while (i + 9 <= len) {
        size_t n;

        i = gd_next_digit(t, len, i);
        if (i + 9 > len) {
            return;
        }
        if (!gd_num_left(t, i)) {
            i++;
            continue;
        }
        n = gd_ssn_at(t, len, i);
        if (n) {
            gd_emit(o, i, n);
            i += n;
            continue;
        }
        while (i < len && gd_digit(t[i])) {
            i++;
        }
    }
}

/* ------------------------------------------------------------------ */
/* ipv4 */

/* a dotted quad at i: its length, or 0 */
static size_t gd_ipv4_at(uc *t, size_t len, size_t i)
{
    size_t p = i;

    for (int q = 0; q < 4; q++) {
        unsigned v = 0, d = 0;

        if (q > 0) {
            if (p == len || t[p] != '.') {
                return 0;
            }
            p++;
        }
        while (p < len && gd_digit(t[p]) && d < 4) {
            v = v * 10 + (t[p++] - '0');
            d++;
        }
        /* 1 to 3 digits, at most 255, no leading zero ("010") */
        if (d == 0 || d > 3 || v > 255 || (d > 1 && t[p - d] == '0')) {
            return 0;
        }
    }

    if (p < len &&
        (gd_word(t[p]) || (t[p] == '.' && p + 1 < len && gd_digit(t[p + 1])))) {
        return 0;
    }
    return p - i;
}

static void gd_ipv4(uc *t, size_t len, gd_out_t *o)
{
    size_t i = 0;

    while (i + 7 <= len) {
        size_t n;

        i = gd_next_digit(t, len, i);
        if (i + 7 > len) {
            return;
        }
        if ((i > 0 && (gd_word(t[i - 1]) ||
                       (t[i - 1] == '.' && i >= 2 &&
                        (gd_alnum(t[i - 2]) || t[i - 2] == '.'))))) {
            i++;
            continue;
        }
        n = gd_ipv4_at(t, len, i);
        if (n) {
            gd_emit(o, i, n);
            i += n;
            continue;
        }
        /* skip the rest of this dotted run: 1.2.3.4.5, 999.1.1.1 */
        while (i < len && (gd_digit(t[i]) || t[i] == '.')) {
            i++;
        }
    }
}

/* ------------------------------------------------------------------ */
/* ipv6 */

static int gd_v6char(unsigned c)
{
    return gd_hex(c) || c == ':' || c == '.';
}

static void gd_ipv6(uc *t, size_t len, gd_out_t *o)
{
    size_t i = 0;

    while (i < len) {
        const unsigned char *c = memchr(t + i, ':', len - i);
        size_t s, e, colons = 0, hex = 0;
        char buf[INET6_ADDRSTRLEN + 1];
        unsigned char addr[16];

        if (c == NULL) {
            return;
        }

        /* the run of [0-9A-Fa-f:.] around the colon */
        s = (size_t)(c - t);
        while (s > i && gd_v6char(t[s - 1])) {
            s--;
        }
        e = (size_t)(c - t);
        while (e < len && gd_v6char(t[e])) {
            e++;
        }
        i = e;

        /* "addr:fe80::1": a single leading colon is punctuation */
        if (t[s] == ':' && (s + 1 == e || t[s + 1] != ':')) {
            s++;
        }
        while (e > s && t[e - 1] == '.') {
            e--;
        }
        if (e - s >= 2 && t[e - 1] == ':' && t[e - 2] != ':') {
            e--;
        }
        if (e <= s || e - s > INET6_ADDRSTRLEN - 1 ||
            (s > 0 && gd_word(t[s - 1])) || (e < len && gd_word(t[e]))) {
            continue;
        }
        for (size_t k = s; k < e; k++) {
            colons += t[k] == ':';
            hex += gd_hex(t[k]);
        }
        if (colons < 2 || hex == 0) {
            continue;
        }

        memcpy(buf, t + s, e - s);
        buf[e - s] = '\0';
        if (inet_pton(AF_INET6, buf, addr) == 1) {
            gd_emit(o, s, e - s);
        }
    }
}

/* ------------------------------------------------------------------ */
/* private_key */

/* needle[0..n) in t[0..len) (memmem is not in C11 nor POSIX) */
static const unsigned char *gd_find(uc *t, size_t len, const char *needle,
                                    size_t n)
{
    size_t i = 0;

    while (i + n <= len) {
        const unsigned char *c = memchr(t + i, needle[0], len - i - n + 1);

        if (c == NULL) {
            return NULL;
        }
        if (memcmp(c, needle, n) == 0) {
            return c;
        }
        i = (size_t)(c - t) + 1;
    }
    return NULL;
}

static const char *const gd_pem_labels[] = {
    "PRIVATE KEY",           "RSA PRIVATE KEY",     "EC PRIVATE KEY",
    "DSA PRIVATE KEY",       "OPENSSH PRIVATE KEY", "ENCRYPTED PRIVATE KEY",
    "PGP PRIVATE KEY BLOCK",
};

/* how far after BEGIN an END line is looked for */
#define GD_PEM_WINDOW 65536

/* the body of a truncated block: base64, headers, line breaks */
static int gd_pem_body(unsigned c)
{
    return gd_alnum(c) || c == '+' || c == '/' || c == '=' || c == '\r' ||
           c == '\n' || c == ' ' || c == '\t' || c == ':' || c == ',' ||
           c == '-' || c == '\\';
}

#define GD_PEM_LABELS (sizeof(gd_pem_labels) / sizeof(gd_pem_labels[0]))

/*
 * A walk over the private key blocks of a text: per label, no END line
 * starts before searched[k] - el + 1 (from the last BEGIN on), so that many
 * BEGIN lines without an END cost one search.
 */
typedef struct {
    size_t searched[GD_PEM_LABELS];
} gd_pem_walk_t;

/* the next private key block at or after i: 1 and [*bs, *be), or 0 */
static int gd_pem_next(uc *t, size_t len, size_t i, gd_pem_walk_t *w,
                       size_t *bs, size_t *be)
{
    static const char begin[] = "-----BEGIN ";
    size_t *searched = w->searched;

    while (i < len) {
        const unsigned char *b = gd_find(t + i, len - i, begin, 11);
        size_t s, p, lab = 0, end, win, from, k;
        const char *label = NULL;
        char endline[48];
        const unsigned char *f;
        size_t el;

        if (b == NULL) {
            return 0;
        }
        s = (size_t)(b - t);
        p = s + 11;
        for (k = 0; k < GD_PEM_LABELS; k++) {
            size_t l = strlen(gd_pem_labels[k]);
            if (p + l + 5 <= len && memcmp(t + p, gd_pem_labels[k], l) == 0 &&
                memcmp(t + p + l, "-----", 5) == 0) {
                label = gd_pem_labels[k];
                lab = l;
                break;
            }
        }
        if (label == NULL) {
            i = p;
            continue;
        }
        p += lab + 5;

        el = (size_t)snprintf(endline, sizeof(endline), "-----END %s-----",
                              label);
        win = len - p < GD_PEM_WINDOW ? len - p : GD_PEM_WINDOW;
        from = p;
        if (searched[k] > p + el - 1) {
            from = searched[k] - (el - 1);
        }
        f = from + el <= p + win
                ? gd_find(t + from, p + win - from, endline, el)
                : NULL;
        if (f == NULL) {
            searched[k] = p + win;
        }
        if (f) {
            end = (size_t)(f - t) + el;
        } else {
            /* a truncated block: up to the end of its body */
            end = p;
            while (end < len && end - p < GD_PEM_WINDOW &&
                   gd_pem_body(t[end])) {
                end++;
            }
            while (end > p && (t[end - 1] == ' ' || t[end - 1] == '\n' ||
                               t[end - 1] == '\r' || t[end - 1] == '\t')) {
                end--;
            }
        }
        *bs = s;
        *be = end; /* > s: the BEGIN line at least */
        return 1;
    }
    return 0;
}

static void gd_private_key(uc *t, size_t len, gd_out_t *o)
{
    gd_pem_walk_t w;
    size_t i = 0, s, e;

    memset(&w, 0, sizeof(w));
    while (gd_pem_next(t, len, i, &w, &s, &e)) {
        gd_emit(o, s, e - s);
        i = e;
    }
}

/* ------------------------------------------------------------------ */
/* jwt */

/* the longest JOSE header decoded here (a stack buffer) */
#define GD_JWT_HEADER_MAX 1024

/* a decoded header that is a JSON object with an "alg" member */
static int gd_jose_header(const uint8_t *h, size_t n)
{
    size_t a = 0, z = n;

    while (a < z &&
           (h[a] == ' ' || h[a] == '\t' || h[a] == '\r' || h[a] == '\n')) {
        a++;
    }
    while (z > a && (h[z - 1] == ' ' || h[z - 1] == '\t' || h[z - 1] == '\r' ||
                     h[z - 1] == '\n')) {
        z--;
    }
    if (z - a < 2 || h[a] != '{' || h[z - 1] != '}') {
        return 0;
    }
    for (size_t k = a + 1; k + 5 < z; k++) {
        if (memcmp(h + k, "\"alg\"", 5) == 0) {
            size_t q = k + 5;
            while (q < z && (h[q] == ' ' || h[q] == '\t' || h[q] == '\r' ||
                             h[q] == '\n')) {
                q++;
            }
            if (q < z && h[q] == ':') {
                return 1;
            }
        }
    }
    return 0;
}

static size_t gd_b64url_run(uc *t, size_t len, size_t p)
{
    size_t s = p;

    while (p < len && gd_b64url(t[p])) {
        p++;
    }
    return p - s;
}

static size_t gd_jwt_at(uc *t, size_t len, size_t i)
{
    uint8_t hdr[GD_B64URL_DECODED_MAX(GD_JWT_HEADER_MAX)];
    size_t h, p, n, parts = 1;

    if (t[i + 1] != 'y' || t[i + 2] != 'J' ||
        (i > 0 && (gd_b64url(t[i - 1]) || t[i - 1] == '.' || t[i - 1] == '+' ||
                   t[i - 1] == '/'))) {
        return 0; /* "eyJ": '{"' in base64url, not inside a longer run */
    }
    h = gd_b64url_run(t, len, i);
    if (h > GD_JWT_HEADER_MAX) {
        return 0;
    }
    p = i + h;

    /* JWS: header.payload.signature; JWE: five parts */
    while (p < len && t[p] == '.' && parts < 5) {
        p++;
        p += gd_b64url_run(t, len, p);
        parts++;
    }
    if ((parts != 3 && parts != 5) || t[i + h + 1] == '.') {
        return 0; /* (an empty payload: not taken) */
    }
    if (p < len && (t[p] == '.' || t[p] == '=' || t[p] == '+' || t[p] == '/')) {
        return 0;
    }

    if (gd_b64url_decode((const char *)t + i, h, hdr, &n) != 0 ||
        !gd_jose_header(hdr, n)) {
        return 0;
    }
    return p - i;
}

/* the candidates: "eyJ", found by its rarer "yJ" */
static size_t gd_jwt_next(uc *t, size_t len, size_t i)
{
    for (;;) {
        size_t k = gd_next_pair(t, len, i + 1, 'y', 'J');

        if (k == len || t[k - 1] == 'e') {
            return k == len ? len : k - 1; /* >= i */
        }
        i = k;
    }
}

/* ------------------------------------------------------------------ */
/* aws_access_key */

static int gd_aws_prefix(uc *t)
{
    static const char pfx[][5] = {"AKIA", "ASIA", "AGPA", "AIDA",
                                  "AROA", "ANPA", "ANVA", "AIPA"};

    for (size_t k = 0; k < sizeof(pfx) / sizeof(pfx[0]); k++) {
        if (memcmp(t, pfx[k], 4) == 0) {
            return 1;
        }
    }
    return 0;
}

static int gd_base32(unsigned c)
{
    return gd_upper(c) || (c >= '2' && c <= '7');
}

static size_t gd_aws_next(uc *t, size_t len, size_t i)
{
    const unsigned char *f = memchr(t + i, 'A', len - i);

    return f ? (size_t)(f - t) : len;
}

static size_t gd_aws_at(uc *t, size_t len, size_t i)
{
    if (i + 20 > len || (i > 0 && gd_alnum(t[i - 1])) ||
        !gd_aws_prefix(t + i) || (i + 20 < len && gd_alnum(t[i + 20]))) {
        return 0;
    }
    for (size_t k = 4; k < 20; k++) {
        if (!gd_base32(t[i + k])) {
            return 0;
        }
    }
    return 20;
}

/* ------------------------------------------------------------------ */
/* github_token */

static size_t gd_github_at(uc *t, size_t len, size_t i)
{
    if (i > 0 && gd_alnum(t[i - 1])) {
        return 0;
    }
    if (i + 40 <= len && t[i] == 'g' && t[i + 1] == 'h' && t[i + 3] == '_' &&
        (t[i + 2] == 'p' || t[i + 2] == 'o' || t[i + 2] == 'u' ||
         t[i + 2] == 's' || t[i + 2] == 'r')) {
        for (size_t k = 4; k < 40; k++) {
            if (!gd_alnum(t[i + k])) {
                return 0;
            }
        }
        return i + 40 == len || !gd_word(t[i + 40]) ? 40 : 0;
    }
    if (i + 93 <= len && memcmp(t + i, "github_pat_", 11) == 0) {
        for (size_t k = 11; k < 93; k++) {
            if (!gd_word(t[i + k])) {
                return 0;
            }
        }
        return i + 93 == len || !gd_word(t[i + 93]) ? 93 : 0;
    }
    return 0;
}

/* the candidates: "gh" of "gh?_" and "gi" of "github_pat_" ('h' | 1 and
   'i' | 1 are 'i') */
static size_t gd_github_next(uc *t, size_t len, size_t i)
{
    return gd_next_pair_or(t, len, i, 'g', 0, 'i', 1);
}

/* ------------------------------------------------------------------ */
/* slack_token */

/* xoxb-1234-5678-abcd...: digits, then '-'-joined alphanumeric parts */
static size_t gd_slack_token_at(uc *t, size_t len, size_t i)
{
    size_t p = i + 5, seg = 0, first = 0, last = 0;

    if (i + 5 > len || memcmp(t + i, "xox", 3) != 0 ||
        !(t[i + 3] == 'b' || t[i + 3] == 'p' || t[i + 3] == 'a' ||
          t[i + 3] == 'r' || t[i + 3] == 's') ||
        t[i + 4] != '-') {
        return 0;
    }
    for (;;) {
        size_t s = p, digits = 1;

        while (p < len && gd_alnum(t[p]) && p - i < 256) {
            digits &= gd_digit(t[p]);
            p++;
        }
        if (p == s) {
            return 0;
        }
        if (seg++ == 0) {
            first = digits;
        }
        last = p - s;
        if (p + 1 < len && t[p] == '-' && gd_alnum(t[p + 1])) {
            p++;
            continue;
        }
        break;
    }
    if (seg < 3 || !first || last < 8 || p - i < 24 || p - i >= 256 ||
        (p < len && gd_word(t[p]))) {
        return 0;
    }
    return p - i;
}

/* [https://]hooks.slack.com/services/T.../B.../secret */
static size_t gd_slack_hook_at(uc *t, size_t len, size_t i)
{
    static const char host[] = "hooks.slack.com/services/";
    size_t p = i + sizeof(host) - 1, n;

    if (p > len || memcmp(t + i, host, sizeof(host) - 1) != 0) {
        return 0;
    }
    for (int part = 0; part < 3; part++) {
        size_t s = p;

        if (part < 2 && (p == len || t[p] != (part ? 'B' : 'T'))) {
            return 0;
        }
        while (p < len &&
               (part < 2 ? gd_upper(t[p]) || gd_digit(t[p]) : gd_alnum(t[p]))) {
            p++;
        }
        n = p - s;
        if (part < 2 && (n < 9 || p == len || t[p] != '/')) {
            return 0;
        }
        if (part < 2) {
            p++;
        } else if (n < 24 || (p < len && gd_word(t[p]))) {
            return 0;
        }
    }
    return p - i;
}

static void gd_slack(uc *t, size_t len, gd_out_t *o)
{
    static const char https[] = "https://";
    size_t i = 0, last = 0;

    while (i + 5 <= len) {
        size_t n = 0, s;

        /* the candidates: "xo" of "xox", "ho" of "hooks." */
        i = gd_next_pair_or(t, len, i, 'x', 0x10, 'o', 0);
        if (i == len || i + 5 > len) {
            return;
        }
        s = i;

        if (t[i] == 'x' && (i == 0 || !gd_alnum(t[i - 1]))) {
            n = gd_slack_token_at(t, len, i);
        } else if (t[i] == 'h' &&
                   (i == 0 || !gd_alnum(t[i - 1]) || t[i - 1] == '/')) {
            n = gd_slack_hook_at(t, len, i);
            if (n && i >= last + 8 && memcmp(t + i - 8, https, 8) == 0) {
                s = i - 8;
                n += 8;
            }
        }
        if (n) {
            gd_emit(o, s, n);
            i = s + n;
            last = i;
        } else {
            i++;
        }
    }
}

/* ------------------------------------------------------------------ */
/* secret */

/* runs longer than this are data (images, blobs), not secrets */
#define GD_SECRET_MAX_LEN 512

static int gd_secret_char(unsigned c)
{
    return gd_alnum(c) || c == '+' || c == '/' || c == '_' || c == '-';
}

/* log2(x) for x >= 1, without libm: exponent + atanh series */
static double gd_log2(double x)
{
    double e = 0, y, y2, s = 0, term;

    while (x >= 2) {
        x /= 2;
        e += 1;
    }
    y = (x - 1) / (x + 1);
    y2 = y * y;
    term = y;
    for (int k = 1; k < 20; k += 2) {
        s += term / k;
        term *= y2;
    }
    return e + 2 * s / 0.69314718055994530942;
}

/* Shannon entropy in bits per character, at least min? */
static int gd_entropy_at_least(uc *t, size_t n, double min)
{
    uint16_t cnt[128];
    double sum = 0;

    memset(cnt, 0, sizeof(cnt));
    for (size_t k = 0; k < n; k++) {
        cnt[t[k] & 0x7f]++;
    }
    for (size_t k = 0; k < n; k++) {
        unsigned c = t[k] & 0x7f;
        if (cnt[c]) {
            sum += cnt[c] * gd_log2(cnt[c]);
            cnt[c] = 0;
        }
    }
    /* H = log2(n) - sum / n */
    return gd_log2((double)n) - sum / (double)n >= min;
}

/* base64 of ordinary text (words and spaces): not a secret */
static int gd_b64_text(uc *t, size_t n)
{
    unsigned char in[96], out[72];
    size_t m = n < sizeof(in) ? n : sizeof(in);
    int got, spaces = 0;

    while (m > 0 && t[m - 1] == '=') {
        m--;
    }
    m -= m % 4;
    if (m < 16) {
        return 0;
    }
    for (size_t k = 0; k < m; k++) {
        in[k] = t[k] == '-' ? '+' : t[k] == '_' ? '/' : t[k];
    }
    got = EVP_DecodeBlock(out, in, (int)m);
    if (got <= 0) {
        return 0;
    }
    for (int k = 0; k < got; k++) {
        if (out[k] == ' ') {
            spaces++;
        } else if ((out[k] < 0x20 || out[k] > 0x7e) && out[k] != '\n' &&
                   out[k] != '\t' && out[k] != '\r') {
            return 0;
        }
    }
    return spaces * 16 >= got;
}

/* a run that another detector names (jwt, aws, github, slack) */
static int gd_secret_other_kind(uc *t, size_t len, size_t s, size_t n)
{
    if (n == 20 && gd_aws_prefix(t + s)) {
        return 1;
    }
    if (gd_github_at(t, len, s) || gd_slack_token_at(t, len, s)) {
        return 1;
    }
    return 0;
}

static int gd_secret_ok(uc *t, size_t len, size_t s, size_t n)
{
    int up = 0, lo = 0, dg = 0, hexonly = 1;
    size_t changes = 0;

    if (n < GD_DETECT_SECRET_MIN_LEN || n > GD_SECRET_MAX_LEN) {
        return 0;
    }
    for (size_t k = s; k < s + n; k++) {
        unsigned c = t[k];

        up |= gd_upper(c);
        lo |= gd_lower(c);
        dg |= gd_digit(c);
        hexonly &= gd_hex(c) || c == '-' || c == '=';
        if (k > s) {
            unsigned b = t[k - 1];
            /* letter <-> digit, or lower -> upper */
            changes += (gd_digit(b) && gd_alpha(c)) ||
                       (gd_alpha(b) && gd_digit(c)) ||
                       (gd_lower(b) && gd_upper(c));
        }
    }
    if (up + lo + dg < 2 || hexonly || changes * 5 < n) {
        return 0;
    }

    /* words: [A-Z]?[a-z]{3,} covering 60% of a mixed-case run */
    if (up && lo) {
        size_t words = 0;

        for (size_t k = s; k < s + n;) {
            size_t r = k;

            while (r < s + n && gd_lower(t[r])) {
                r++;
            }
            if (r - k >= 3) {
                words += r - k + (k > s && gd_upper(t[k - 1]));
            }
            k = r > k ? r : k + 1;
        }
        if (words * 5 >= n * 3) {
            return 0;
        }
    }
    if (gd_secret_other_kind(t, len, s, n) || gd_b64_text(t + s, n)) {
        return 0;
    }
    return gd_entropy_at_least(t + s, n, GD_DETECT_SECRET_MIN_BITS);
}

/*
 * Where gd_secret's loop, at i (not inside a run), may jump.  From i on,
 * 16-byte chunks are looked at until one holds the "yJ" of an "eyJ" or ends
 * 16 bytes in a row of [+-z] (a superset of the run characters) that start
 * 0, 4, 8 or 12 bytes after a chunk's start (a run of 20 or more holds such
 * 16).  The jump is to just after the last byte before that chunk that is
 * neither a run character nor '=': the loop would find nothing before it,
 * since every run there is shorter than 20 (too short to be a secret) and
 * none is a JWT's, and the '=' after a run do not reach over it.  *slow: the
 * end of the chunk that stopped the skip (up to there, the loop goes byte by
 * byte), or len.
 */
static size_t gd_secret_skip(uc *t, size_t len, size_t i, size_t *slow)
{
    size_t from = i;

#if defined(__SSE2__)
    const gd_v16 lo = _mm_set1_epi8('+' - 1), hi = _mm_set1_epi8('z' + 1),
                 ones = _mm_set1_epi8(-1);
    unsigned prev = 0;

    for (; i + 17 <= len; i += 16) {
        gd_v16 v = gd_load16(t + i);
        gd_v16 in = _mm_and_si128(_mm_cmpgt_epi8(v, lo), _mm_cmplt_epi8(v, hi));
        /* bit k: the bytes 4k..4k+3 of the chunk are all in [+-z] */
        unsigned f = (unsigned)_mm_movemask_ps(
            _mm_castsi128_ps(_mm_cmpeq_epi32(in, ones)));
        unsigned yj = gd_mask16(
            _mm_and_si128(gd_eq16(v, 'y'), gd_eq16(gd_load16(t + i + 1), 'J')));
        unsigned h = prev | f << 4, x = h & h >> 1 & h >> 2 & h >> 3;

        if (yj || (x & 0x1eu)) {
            *slow = i + 16;
            break;
        }
        prev = f;
    }
    if (i + 17 > len) {
        *slow = len;
    }
#else
    (void)t;
    *slow = len;
#endif
    while (i > from && (gd_secret_char(t[i - 1]) || t[i - 1] == '=')) {
        i--;
    }
    return i;
}

static void gd_secret(uc *t, size_t len, gd_out_t *o)
{
    gd_pem_walk_t w;
    size_t i = 0, ps = 0, pe = 0, slow = 0;
    int pem = 1; /* a private key block may be at or after pe */

    memset(&w, 0, sizeof(w));

    while (i < len) {
        size_t s, e;

        if (i >= slow) {
            i = gd_secret_skip(t, len, i, &slow);
        }
        if (!gd_secret_char(t[i])) {
            i++;
            continue;
        }
        s = i;
        while (i < len && gd_secret_char(t[i])) {
            i++;
        }
        e = i;

        /* a JWT (eyJ...): its parts are not generic secrets */
        if (e - s >= 3 && t[s] == 'e' && t[s + 1] == 'y' && t[s + 2] == 'J' &&
            e < len && t[e] == '.') {
            while (i < len && (gd_b64url(t[i]) || t[i] == '.')) {
                i++;
            }
            continue;
        }

        /* trailing '=' padding belongs to the run; a '=' before more is not */
        while (e < len && t[e] == '=' && e - i < 3) {
            e++;
        }
        if (e > i && e < len && gd_secret_char(t[e])) {
            e = i;
        }
        if (gd_secret_ok(t, len, s, e - s)) {
            /* the lines of a private key block: the block is private_key's
               (looked for only now: secrets are rare, blocks rarer) */
            while (pem && pe <= s) {
                pem = gd_pem_next(t, len, pe, &w, &ps, &pe);
            }
            if (!pem || s < ps) {
                gd_emit(o, s, e - s);
            }
        }
        i = e > i ? e : i;
    }
}

/* ------------------------------------------------------------------ */

/* invisible: runs of the characters gd_norm removes (docs/detectors.md) */

/* the code point at t[i..len) and its length (1 and -1: not UTF-8) */
static size_t gd_cp_at(uc *t, size_t len, size_t i, int32_t *cp)
{
    size_t l = gd_norm_u8dec(t + i, len - i, cp);

    if (l == 0) {
        *cp = -1;
        return 1;
    }
    return l;
}

/* the code point that ends just before t[i] (-1: none or not UTF-8) */
static int32_t gd_cp_before(uc *t, size_t i)
{
    size_t s = i;
    int32_t cp = -1;

    while (s > 0 && i - s < 4) {
        s--;
        if ((t[s] & 0xc0) != 0x80) {
            break;
        }
    }
    if (s < i && gd_norm_u8dec(t + s, i - s, &cp) != i - s) {
        return -1;
    }
    return s < i ? cp : -1;
}

/* a letter (ASCII) or any character that is not ASCII */
static int gd_inv_letter(int32_t cp)
{
    return cp >= 0x80 || (cp >= 0 && gd_alpha((unsigned)cp));
}

/*
 * Whether the one invisible character cp at t[s..e) is ordinary text: a
 * zero-width joiner or non-joiner between two characters that are not
 * ASCII (emoji sequences, Indic and Arabic scripts), a soft hyphen
 * inside a word, a byte order mark that starts the text.
 */
static int gd_inv_ordinary(uc *t, size_t len, size_t s, size_t e, int32_t cp)
{
    int32_t before = gd_cp_before(t, s), after = -1;

    if (e < len) {
        gd_cp_at(t, len, e, &after);
    }
    switch (cp) {
    case 0x200c:
    case 0x200d:
        return before >= 0x80 && after >= 0x80 && !gd_norm_invisible(before) &&
               !gd_norm_invisible(after);
    case 0x00ad:
        return gd_inv_letter(before) && gd_inv_letter(after);
    case 0xfeff:
        return s == 0;
    default:
        return 0;
    }
}

/*
 * Whether the run t[s..e) is the tag sequence of an emoji flag of a
 * subdivision: U+1F3F4, then 1 to 6 tag letters or digits, then the cancel
 * tag U+E007F (for example England's flag, "gbeng").
 */
static int gd_inv_flag(uc *t, size_t len, size_t s, size_t e)
{
    size_t n = 0, i = s;
    int32_t cp;

    if (gd_cp_before(t, s) != 0x1f3f4) {
        return 0;
    }
    while (i < e) {
        i += gd_cp_at(t, len, i, &cp);
        if (cp == 0xe007f) {
            return i == e && n >= 1 && n <= 6;
        }
        if (!((cp >= 0xe0030 && cp <= 0xe0039) ||
              (cp >= 0xe0061 && cp <= 0xe007a))) {
            return 0;
        }
        n++;
    }
    return 0;
}

/* the first k >= i with t[k] >= 0xc2 (a lead byte), or len */
static size_t gd_next_lead(uc *t, size_t len, size_t i)
{
#if defined(__SSE2__)
    for (; i + 16 <= len; i += 16) {
        unsigned m = gd_mask16(gd_load16(t + i)); /* the bytes >= 0x80 */

        for (; m; m &= m - 1) {
            size_t k = i + (size_t)__builtin_ctz(m);

            if (t[k] >= 0xc2) {
                return k;
            }
        }
    }
#endif
    while (i < len && t[i] < 0xc2) {
        i++;
    }
    return i;
}

static void gd_invisible(uc *t, size_t len, gd_out_t *o)
{
    size_t i = 0;

    while (i < len) {
        int32_t cp;
        size_t l;

        i = gd_next_lead(t, len, i);
        if (i == len) {
            return;
        }
        l = gd_cp_at(t, len, i, &cp);
        if (!gd_norm_invisible(cp)) {
            i += l;
            continue;
        }

        size_t s = i, e = i + l, n = 1;
        int32_t first = cp;

        while (e < len) {
            l = gd_cp_at(t, len, e, &cp);
            if (!gd_norm_invisible(cp)) {
                break;
            }
            e += l;
            n++;
        }
        if (!(n == 1 && gd_inv_ordinary(t, len, s, e, first)) &&
            !gd_inv_flag(t, len, s, e)) {
            gd_emit(o, s, e - s);
        }
        i = e;
    }
}

/* ------------------------------------------------------------------ */

static const char *const gd_detector_names[GD_DET_LAST] = {
    [GD_DET_EMAIL] = "email",
    [GD_DET_PHONE] = "phone",
    [GD_DET_CARD] = "card",
    [GD_DET_IBAN] = "iban",
    [GD_DET_SSN] = "ssn",
    [GD_DET_IPV4] = "ipv4",
    [GD_DET_IPV6] = "ipv6",
    [GD_DET_PRIVATE_KEY] = "private_key",
    [GD_DET_JWT] = "jwt",
    [GD_DET_AWS_ACCESS_KEY] = "aws_access_key",
    [GD_DET_GITHUB_TOKEN] = "github_token",
    [GD_DET_SLACK_TOKEN] = "slack_token",
    [GD_DET_SECRET] = "secret",
    [GD_DET_INVISIBLE] = "invisible",
};

const char *gd_detector_name(gd_detector_e d)
{
    if ((unsigned)d >= GD_DET_LAST) {
        return NULL;
    }
    return gd_detector_names[d];
}

int gd_detector_find(const char *name, size_t len)
{
    if (name == NULL) {
        return -1;
    }
    for (int d = 0; d < GD_DET_LAST; d++) {
        if (strlen(gd_detector_names[d]) == len &&
            memcmp(gd_detector_names[d], name, len) == 0) {
            return d;
        }
    }
    return -1;
}

size_t gd_detect(gd_detector_e d, const char *text, size_t len,
                 gd_detect_span_t *spans, size_t max)
{
    gd_out_t o = {spans, spans ? max : 0, 0};
    uc *t = (uc *)text;

    if (text == NULL || len == 0) {
        return 0;
    }

    switch (d) {
    case GD_DET_EMAIL:
        gd_email(t, len, &o);
        break;
    case GD_DET_PHONE:
        gd_phone(t, len, &o);
        break;
    case GD_DET_CARD:
        gd_card(t, len, &o);
        break;
    case GD_DET_IBAN:
        gd_iban(t, len, &o);
        break;
    case GD_DET_SSN:
        gd_ssn(t, len, &o);
        break;
    case GD_DET_IPV4:
        gd_ipv4(t, len, &o);
        break;
    case GD_DET_IPV6:
        gd_ipv6(t, len, &o);
        break;
    case GD_DET_PRIVATE_KEY:
        gd_private_key(t, len, &o);
        break;
    case GD_DET_JWT:
        gd_scan_from(t, len, &o, 3, gd_jwt_next, gd_jwt_at);
        break;
    case GD_DET_AWS_ACCESS_KEY:
        gd_scan_from(t, len, &o, 20, gd_aws_next, gd_aws_at);
        break;
    case GD_DET_GITHUB_TOKEN:
        gd_scan_from(t, len, &o, 40, gd_github_next, gd_github_at);
        break;
    case GD_DET_SLACK_TOKEN:
        gd_slack(t, len, &o);
        break;
    case GD_DET_SECRET:
        gd_secret(t, len, &o);
        break;
    case GD_DET_INVISIBLE:
        gd_invisible(t, len, &o);
        break;
    default:
        break;
    }

    return o.n;
}
