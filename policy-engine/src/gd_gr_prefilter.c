/*
 * gd_gr_prefilter: the prefilter of a guardrails section, two tiers
 * (gd_gr_prefilter.h).
 *
 * The full-pattern tier (gd_gr_hs_expr, below the atoms) rewrites each
 * pattern into a Hyperscan expression that matches at least what PCRE2
 * matches; the rules it cannot take fall back to their atoms.
 *
 * The atoms of a pattern come from a small parser of PCRE2 syntax that
 * computes, for each node, either the exact set of texts it matches (a
 * literal, a short class, an alternation of those, ASCII lowercased) or a
 * set of literals one of which every match contains, or nothing.  Anything
 * it does not know for sure widens to "nothing required"; a construct
 * whose extent it cannot be sure of makes the whole pattern atom-less.
 */
#include "gd_gr_prefilter.h"
#include "gd_gr_hscache.h"
#include "gd_norm.h"

#include <ctype.h>
#include <stdio.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <hs/hs.h>
#include <pcre2.h>

/* ---- sets of literals ---- */

typedef struct {
    size_t n;
    unsigned char len[GD_GR_ATOMS_MAX];
    char s[GD_GR_ATOMS_MAX][GD_GR_ATOM_MAX];
} set_t;

/* what every match of a node is (exact) or holds (req) */
typedef struct {
    int exact; /* every match is one of e */
    set_t e;
    int req; /* every match holds one of r */
    set_t r;
    int ws; /* one white-space character: " " in the scanned view */
} info_t;

static int set_add(set_t *s, const char *p, size_t n)
{
    if (n > GD_GR_ATOM_MAX) {
        return -1;
    }
    for (size_t i = 0; i < s->n; i++) {
        if (s->len[i] == n && memcmp(s->s[i], p, n) == 0) {
            return 0;
        }
    }
    if (s->n == GD_GR_ATOMS_MAX) {
        return -1;
    }
    memcpy(s->s[s->n], p, n);
    s->len[s->n++] = (unsigned char)n;
    return 0;
}

static size_t set_minlen(const set_t *s)
{
    size_t m = SIZE_MAX;

    for (size_t i = 0; i < s->n; i++) {
        m = s->len[i] < m ? s->len[i] : m;
    }
    return s->n ? m : 0;
}

static info_t *info_any(void)
{
    return calloc(1, sizeof(info_t));
}

static info_t *info_lit(const char *p, size_t n)
{
    info_t *x = calloc(1, sizeof(info_t));

    if (x) {
        x->exact = 1;
        set_add(&x->e, p, n);
    }
    return x;
}

static info_t *info_empty(void)
{
    return info_lit("", 0);
}

/* the literals one of which every match of x holds, or NULL */
static const set_t *required(const info_t *x)
{
    const set_t *e = x->exact && set_minlen(&x->e) > 0 ? &x->e : NULL;
    const set_t *r = x->req && set_minlen(&x->r) > 0 ? &x->r : NULL;

    if (e && r) {
        return set_minlen(e) >= set_minlen(r) ? e : r;
    }
    return e ? e : r;
}

/* the better of two required sets: the longer shortest literal */
static const set_t *best(const set_t *a, const set_t *b)
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

/* x then y (both freed) */
static info_t *concat(info_t *a, info_t *b)
{
    info_t *x = calloc(1, sizeof(info_t));

    if (x == NULL || a == NULL || b == NULL) {
        free(x);
        free(a);
        free(b);
        return NULL;
    }
    if (a->exact && b->exact && a->e.n * b->e.n <= GD_GR_ATOMS_MAX) {
        int ok = 1;

        x->exact = 1;
        for (size_t i = 0; ok && i < a->e.n; i++) {
            for (size_t j = 0; ok && j < b->e.n; j++) {
                char buf[2 * GD_GR_ATOM_MAX];
                size_t la = a->e.len[i], lb = b->e.len[j];

                memcpy(buf, a->e.s[i], la);
                memcpy(buf + la, b->e.s[j], lb);
                ok = set_add(&x->e, buf, la + lb) == 0;
            }
        }
        if (!ok) {
            x->exact = 0;
            x->e.n = 0;
        }
    }
    const set_t *r = best(required(a), required(b));

    if (r) {
        x->req = 1;
        x->r = *r;
    }
    free(a);
    free(b);
    return x;
}

/* x or y (both freed) */
static info_t *alternate(info_t *a, info_t *b)
{
    info_t *x = calloc(1, sizeof(info_t));
    int ok = 1;

    if (x == NULL || a == NULL || b == NULL) {
        free(x);
        free(a);
        free(b);
        return NULL;
    }
    if (a->exact && b->exact) {
        x->exact = 1;
        for (size_t i = 0; ok && i < a->e.n; i++) {
            ok = set_add(&x->e, a->e.s[i], a->e.len[i]) == 0;
        }
        for (size_t i = 0; ok && i < b->e.n; i++) {
            ok = set_add(&x->e, b->e.s[i], b->e.len[i]) == 0;
        }
        if (!ok) {
            x->exact = 0;
            x->e.n = 0;
        }
    }

    const set_t *ra = required(a), *rb = required(b);

    if (ra && rb) {
        ok = 1;
        x->req = 1;
        for (size_t i = 0; ok && i < ra->n; i++) {
            ok = set_add(&x->r, ra->s[i], ra->len[i]) == 0;
        }
        for (size_t i = 0; ok && i < rb->n; i++) {
            ok = set_add(&x->r, rb->s[i], rb->len[i]) == 0;
        }
        if (!ok) {
            x->req = 0;
            x->r.n = 0;
        }
    }
    free(a);
    free(b);
    return x;
}

/* x repeated min..max times (max SIZE_MAX: no bound); x freed */
static info_t *repeat(info_t *x, size_t min, size_t max)
{
    if (x == NULL || (min == 1 && max == 1)) {
        return x;
    }
    if (x->ws && min >= 1) {
        /* a run of white space is one space in the scanned view */
        return x;
    }
    if (min == 0) {
        if (max == 1) {
            return alternate(x, info_empty());
        }
        free(x);
        return info_any();
    }

    /* min copies in a row (up to 4) are in every match */
    size_t copies = min < 4 ? min : 4;
    info_t *y = info_empty();

    for (size_t k = 0; y && k < copies; k++) {
        info_t *c = malloc(sizeof(info_t));

        if (c) {
            *c = *x;
        }
        y = concat(y, c);
    }
    free(x);
    if (y && !(min == max && copies == min)) {
        y->exact = 0; /* more copies may follow */
        y->e.n = 0;
    }
    return y;
}

/* ---- the parser ---- */

typedef struct {
    const unsigned char *p;
    size_t i, n;
    int utf;         /* a character is one UTF-8 sequence, else one byte */
    int ci;          /* some part is caseless */
    int quote;       /* inside \Q..\E */
    const char *bad; /* not sure what it matches: no atoms */
} parser_t;

static info_t *parse_alt(parser_t *ps);

static int at(const parser_t *ps, size_t k, char c)
{
    return ps->i + k < ps->n && ps->p[ps->i + k] == (unsigned char)c;
}

/* past the next ch (at or after i), or to the end */
static void skip_past(parser_t *ps, char ch)
{
    while (ps->i < ps->n && ps->p[ps->i] != (unsigned char)ch) {
        ps->i++;
    }
    if (ps->i < ps->n) {
        ps->i++;
    }
}

/* the length of the character at i (1 for ASCII or when not UTF mode) */
static size_t char_len(const parser_t *ps)
{
    size_t k = 1;

    if (ps->utf && ps->p[ps->i] >= 0x80) {
        while (ps->i + k < ps->n && (ps->p[ps->i + k] & 0xc0) == 0x80) {
            k++;
        }
    }
    return k;
}

/* the literal character at i, consumed */
static info_t *literal_char(parser_t *ps)
{
    unsigned char c = ps->p[ps->i];
    size_t k = char_len(ps);
    info_t *x;

    if (c >= 0x80) {
        /* its other cases are other bytes: a caseless one requires
           nothing */
        x = ps->ci ? info_any() : info_lit((const char *)ps->p + ps->i, k);
    } else if (gd_gr_ws(c)) {
        x = info_lit(" ", 1);
        if (x) {
            x->ws = 1;
        }
    } else {
        char l = (char)tolower(c);

        x = info_lit(&l, 1);
    }
    ps->i += k;
    return x;
}

/* \x.. after "\x": its value, or -1 */
static long parse_hex(parser_t *ps)
{
    long v = 0;

    if (at(ps, 0, '{')) {
        ps->i++;
        while (ps->i < ps->n && isxdigit(ps->p[ps->i])) {
            int c = tolower(ps->p[ps->i++]);

            v = v * 16 + (isdigit(c) ? c - '0' : c - 'a' + 10);
            if (v > 0x10ffff) {
                return -1;
            }
        }
        if (!at(ps, 0, '}')) {
            return -1;
        }
        ps->i++;
        return v;
    }
    for (int k = 0; k < 2 && ps->i < ps->n && isxdigit(ps->p[ps->i]); k++) {
        int c = tolower(ps->p[ps->i++]);

        v = v * 16 + (isdigit(c) ? c - '0' : c - 'a' + 10);
    }
    return v;
}

/* skips the name or number of \g, \k: {..} <..> '..' or [+-]digits */
static void skip_ref(parser_t *ps)
{
    if (at(ps, 0, '{')) {
        skip_past(ps, '}');
    } else if (at(ps, 0, '<')) {
        skip_past(ps, '>');
    } else if (at(ps, 0, '\'')) {
        ps->i++;
        skip_past(ps, '\'');
    } else {
        if (at(ps, 0, '+') || at(ps, 0, '-')) {
            ps->i++;
        }
        while (ps->i < ps->n && isdigit(ps->p[ps->i])) {
            ps->i++;
        }
    }
}

static info_t *parse_escape(parser_t *ps)
{
    unsigned char c;

    if (ps->i + 1 >= ps->n) {
        ps->bad = "a trailing backslash";
        return info_any();
    }
    c = ps->p[ps->i + 1];
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
    case 's': {
        /* on normalised text \s is ASCII white space (gd_norm maps the
           Unicode spaces NFKC keeps to ' '): " " in the scanned view */
        info_t *x = info_lit(" ", 1);

        if (x) {
            x->ws = 1;
        }
        return x;
    }
    case 'd':
    case 'D':
    case 'w':
    case 'W':
    case 'S':
    case 'h':
    case 'H':
    case 'v':
    case 'V':
    case 'R':
    case 'X':
    case 'C':
        return info_any();
    case 'N':
        if (at(ps, 0, '{')) {
            skip_past(ps, '}');
        }
        return info_any();
    case 'p':
    case 'P':
        if (at(ps, 0, '{')) {
            skip_past(ps, '}');
        } else if (ps->i < ps->n) {
            ps->i++;
        }
        return info_any();
    case 'g':
    case 'k':
        skip_ref(ps);
        return info_any();
    case 'c':
        if (ps->i < ps->n) {
            ps->i++;
        }
        return info_any();
    case 'o':
        if (!at(ps, 0, '{')) {
            ps->bad = "\\o without {";
            return info_any();
        }
        skip_past(ps, '}');
        return info_any();
    case 'Q':
        ps->quote = 1;
        return info_empty();
    case 'E':
        /* a \E alone: whether a quantifier after it applies to what is
           before is not worth knowing */
        ps->bad = "\\E without \\Q";
        return info_any();
    case 'n':
        return info_lit("\n", 1);
    case 't':
        return info_lit("\t", 1);
    case 'r':
        return info_lit("\r", 1);
    case 'f':
        return info_lit("\f", 1);
    case 'e':
        return info_lit("\x1b", 1);
    case 'a':
        return info_lit("\a", 1);
    case 'x': {
        long v = parse_hex(ps);
        char l;

        if (v < 0) {
            ps->bad = "a \\x{...} not understood";
            return info_any();
        }
        if (v >= 0x80) {
            return info_any();
        }
        l = (char)tolower((int)v);
        return info_lit(&l, 1);
    }
    default:
        if (isdigit(c)) {
            /* a back-reference or an octal escape: any text */
            while (ps->i < ps->n && isdigit(ps->p[ps->i])) {
                ps->i++;
            }
            return info_any();
        }
        if (isalnum(c)) {
            ps->bad = "an escape not understood";
            return info_any();
        }
        ps->i--; /* the character itself */
        return literal_char(ps);
    }
}

/* a class, from just past '[' */
static info_t *parse_class(parser_t *ps)
{
    char chars[16];
    size_t nc = 0;
    int neg = 0, other = 0, first = 1;

    if (at(ps, 0, '^')) {
        neg = 1;
        ps->i++;
    }
    while (ps->i < ps->n && (first || ps->p[ps->i] != ']')) {
        unsigned char c = ps->p[ps->i];
        int member = -1; /* an ASCII character, or -1: something else */

        first = 0;
        if (c == '[' && at(ps, 1, ':')) {
            const char *e = strstr((const char *)ps->p + ps->i + 2, ":]");

            if (e == NULL) {
                ps->bad = "a class not understood";
                return info_any();
            }
            ps->i = (size_t)((const unsigned char *)e - ps->p) + 2;
        } else if (c == '\\') {
            unsigned char e = ps->i + 1 < ps->n ? ps->p[ps->i + 1] : 0;

            ps->i += 2;
            if (e == 'x') {
                long v = parse_hex(ps);

                if (v < 0) {
                    ps->bad = "a \\x{...} not understood";
                    return info_any();
                }
                member = v < 0x80 ? (int)v : -1;
            } else if (e == 'p' || e == 'P') {
                if (at(ps, 0, '{')) {
                    skip_past(ps, '}');
                } else {
                    ps->i++;
                }
            } else if (e == 'n' || e == 't' || e == 'r' || e == 'f' ||
                       e == 'b' || e == 'e' || e == 'a') {
                member = e == 'n'   ? '\n'
                         : e == 't' ? '\t'
                         : e == 'r' ? '\r'
                         : e == 'f' ? '\f'
                         : e == 'b' ? '\b'
                         : e == 'e' ? 0x1b
                                    : '\a';
            } else if (e != 0 && strchr("dDwWsShHvVN", e) != NULL) {
                /* a class of its own */
            } else if (e == 0 || isalnum(e)) {
                ps->bad = "an escape in a class not understood";
                return info_any();
            } else {
                member = e;
            }
        } else {
            ps->i += c >= 0x80 ? char_len(ps) : 1;
            member = c < 0x80 ? c : -1;
        }
        if (ps->i + 1 < ps->n && ps->p[ps->i] == '-' &&
            ps->p[ps->i + 1] != ']') {
            /* a range: its other end read as one more member */
            ps->i++;
            other = 1;
            continue;
        }
        if (member < 0) {
            other = 1;
        } else if (nc < sizeof(chars)) {
            char l = (char)tolower(member);

            if (memchr(chars, l, nc) == NULL) {
                chars[nc++] = l;
            }
        } else {
            other = 1;
        }
    }
    if (ps->i >= ps->n) {
        ps->bad = "a class not closed";
        return info_any();
    }
    ps->i++; /* ']' */
    if (neg || other || nc == 0) {
        return info_any();
    }

    info_t *x = calloc(1, sizeof(info_t));

    if (x) {
        x->exact = 1;
        for (size_t k = 0; k < nc; k++) {
            set_add(&x->e, &chars[k], 1);
        }
    }
    return x;
}

/* a group, from just past '(' */
static info_t *parse_group(parser_t *ps)
{
    int look = 0;
    info_t *x;

    if (at(ps, 0, '*')) {
        /* (*VERB) or (*VERB:NAME), or (*pla:...) and such */
        size_t k = ps->i + 1;

        if (k < ps->n && islower(ps->p[k])) {
            ps->bad = "an alpha assertion";
            return info_any();
        }
        if (ps->n - k >= 6 && memcmp(ps->p + k, "ACCEPT", 6) == 0) {
            ps->bad = "(*ACCEPT)";
            return info_any();
        }
        skip_past(ps, ')');
        return info_empty();
    }
    if (at(ps, 0, '?')) {
        unsigned char q = ps->i + 1 < ps->n ? ps->p[ps->i + 1] : 0;

        if (q == ':' || q == '>' || q == '|') {
            ps->i += 2;
        } else if (q == '=' || q == '!') {
            ps->i += 2;
            look = 1;
        } else if (q == '<' && (at(ps, 2, '=') || at(ps, 2, '!'))) {
            ps->i += 3;
            look = 1;
        } else if (q == '<' &&
                   !(ps->i + 2 < ps->n &&
                     (isalpha(ps->p[ps->i + 2]) || ps->p[ps->i + 2] == '_'))) {
            /* (?<* a non-atomic lookbehind, or what else may come */
            ps->bad = "a group not understood";
            return info_any();
        } else if (q == '<' || q == '\'' || (q == 'P' && at(ps, 2, '<'))) {
            skip_past(ps, q == '\'' ? '\'' : '<');
            if (q == '\'') {
                skip_past(ps, '\'');
            } else {
                skip_past(ps, '>');
            }
        } else if (q == 'P' || q == '&' || q == 'R' || q == '+' || isdigit(q) ||
                   (q == '-' && at(ps, 2, '0')) ||
                   (q == '-' && ps->i + 2 < ps->n &&
                    isdigit(ps->p[ps->i + 2]))) {
            /* a back-reference or a subroutine call: any text */
            skip_past(ps, ')');
            return info_any();
        } else if (q == '#') {
            skip_past(ps, ')');
            return info_empty();
        } else {
            /* options: (?i) (?-i) (?^) (?i: ...) */
            size_t k = ps->i + 1;

            while (k < ps->n &&
                   (isalpha(ps->p[k]) || ps->p[k] == '-' || ps->p[k] == '^')) {
                if (ps->p[k] == 'x') {
                    ps->bad = "option x";
                    return info_any();
                }
                k++;
            }
            if (k >= ps->n || (ps->p[k] != ')' && ps->p[k] != ':')) {
                ps->bad = "a group not understood";
                return info_any();
            }
            ps->i = k + 1;
            if (ps->p[k] == ')') {
                return info_empty();
            }
        }
    }
    x = parse_alt(ps);
    if (!at(ps, 0, ')')) {
        ps->bad = "a group not closed";
        free(x);
        return info_any();
    }
    ps->i++;
    if (look) {
        /* a lookaround consumes nothing */
        free(x);
        return info_empty();
    }
    return x;
}

static info_t *parse_atom(parser_t *ps)
{
    unsigned char c = ps->p[ps->i];

    if (ps->quote) {
        info_t *x;

        if (at(ps, 0, '\\') && at(ps, 1, 'E')) {
            /* \Q\E: what a quantifier after it applies to is not worth
               knowing */
            ps->i += 2;
            ps->quote = 0;
            ps->bad = "an empty \\Q\\E";
            return info_any();
        }
        x = literal_char(ps);

        if (at(ps, 0, '\\') && at(ps, 1, 'E')) {
            ps->i += 2;
            ps->quote = 0;
        }
        return x;
    }
    switch (c) {
    case '(':
        ps->i++;
        return parse_group(ps);
    case '[':
        ps->i++;
        return parse_class(ps);
    case '\\':
        return parse_escape(ps);
    case '.':
        ps->i++;
        return info_any();
    case '^':
    case '$':
        ps->i++;
        return info_empty();
    case '{':
        ps->i++;
        return info_any();
    case '*':
    case '+':
    case '?':
        ps->bad = "a quantifier with nothing to repeat";
        ps->i++;
        return info_any();
    default:
        return literal_char(ps);
    }
}

/* reads digits into *v (capped); how many */
static size_t digits(parser_t *ps, size_t *v)
{
    size_t k = 0;

    *v = 0;
    while (ps->i < ps->n && isdigit(ps->p[ps->i])) {
        if (*v < 1000000) {
            *v = *v * 10 + (ps->p[ps->i] - '0');
        }
        ps->i++;
        k++;
    }
    return k;
}

/* the quantifier after an atom, if any, applied to x */
static info_t *quantify(parser_t *ps, info_t *x)
{
    size_t min, max;
    unsigned char c;

    if (ps->quote || ps->i >= ps->n) {
        return x;
    }
    c = ps->p[ps->i];
    if (c == '?' || c == '*' || c == '+') {
        ps->i++;
        min = c == '+';
        max = c == '?' ? 1 : SIZE_MAX;
    } else if (c == '{') {
        /* only {n} {n,} {n,m}: anything else at a quantifier's place
           ({,m}, spaces) reads differently in PCRE2 versions */
        size_t save = ps->i;

        ps->i++;
        if (digits(ps, &min) == 0) {
            ps->i = save;
            ps->bad = "a { after an item that is not {n}, {n,} or {n,m}";
            return x;
        }
        max = min;
        if (at(ps, 0, ',')) {
            ps->i++;
            if (digits(ps, &max) == 0) {
                max = SIZE_MAX;
            }
        }
        if (!at(ps, 0, '}')) {
            ps->i = save;
            ps->bad = "a { after an item that is not {n}, {n,} or {n,m}";
            return x;
        }
        ps->i++;
    } else {
        return x;
    }
    if (at(ps, 0, '?') || at(ps, 0, '+')) {
        ps->i++;
    }
    if (ps->i < ps->n && strchr("?*+{", ps->p[ps->i]) != NULL) {
        ps->bad = "a quantifier after a quantifier";
    }
    return repeat(x, min, max);
}

static info_t *parse_concat(parser_t *ps)
{
    info_t *x = info_empty();

    while (x && ps->i < ps->n && !ps->bad &&
           (ps->quote || (ps->p[ps->i] != '|' && ps->p[ps->i] != ')'))) {
        info_t *a = parse_atom(ps);

        x = concat(x, quantify(ps, a));
    }
    return x;
}

static info_t *parse_alt(parser_t *ps)
{
    info_t *x = parse_concat(ps);

    while (x && !ps->bad && at(ps, 0, '|')) {
        ps->i++;
        x = alternate(x, parse_concat(ps));
    }
    return x;
}

/* whether the pattern sets option letter o inline: (?o) (?o: (?-..o */
static int inline_option(const char *p, char o)
{
    for (const char *q = strstr(p, "(?"); q; q = strstr(q + 2, "(?")) {
        const char *k = q + 2;

        while (isalpha((unsigned char)*k) || *k == '-' || *k == '^') {
            if (*k == o) {
                return 1;
            }
            k++;
        }
    }
    return 0;
}

int gd_gr_atoms(const char *pattern, uint32_t opts, gd_gr_atoms_t *a, char *why,
                size_t wn)
{
    parser_t ps = {.p = (const unsigned char *)pattern, .n = strlen(pattern)};
    info_t *x;
    const set_t *req;
    int rc = -1;

    memset(a, 0, sizeof(*a));
    if (opts & PCRE2_EXTENDED) {
        snprintf(why, wn, "flag x");
        return -1;
    }
    ps.utf = (opts & PCRE2_UTF) || strstr(pattern, "(*UTF") != NULL;
    ps.ci = (opts & PCRE2_CASELESS) || inline_option(pattern, 'i');

    x = parse_alt(&ps);
    if (x == NULL) {
        snprintf(why, wn, "out of memory");
        return -1;
    }
    if (!ps.bad && ps.i < ps.n) {
        ps.bad = "an unbalanced )";
    }
    req = required(x);
    if (req != NULL && !ps.bad) {
        /* the atoms as the scan sees them: white space collapsed */
        set_t *r = (set_t *)req;

        for (size_t i = 0; i < r->n; i++) {
            r->len[i] =
                (unsigned char)gd_gr_ws_collapse(r->s[i], r->len[i], r->s[i]);
        }
    }
    if (ps.bad) {
        snprintf(why, wn, "%s", ps.bad);
    } else if (req == NULL) {
        snprintf(why, wn, "nothing required");
    } else if (set_minlen(req) < GD_GR_ATOM_MIN) {
        snprintf(why, wn, "shortest atom %zu byte", set_minlen(req));
    } else {
        a->n = req->n;
        memcpy(a->len, req->len, sizeof(a->len));
        memcpy(a->lit, req->s, sizeof(a->lit));
        a->caseless = ps.ci;
        rc = 0;
    }
    free(x);
    return rc;
}

/* ---- the full-pattern tier: each pattern as Hyperscan compiles it ---- */

typedef struct {
    char *s;
    size_t n, cap;
    int bad;
} out_t;

static void put(out_t *o, const char *p, size_t n)
{
    if (o->bad) {
        return;
    }
    if (o->n + n + 1 > o->cap) {
        size_t cap = (o->n + n + 1) * 2;
        char *s = realloc(o->s, cap);

        if (s == NULL) {
            o->bad = 1;
            return;
        }
        o->s = s;
        o->cap = cap;
    }
    memcpy(o->s + o->n, p, n);
    o->n += n;
    o->s[o->n] = '\0';
}

static void puts_(out_t *o, const char *p)
{
    put(o, p, strlen(p));
}

/*
 * A UTF-8 pattern (PCRE2_UTF, with PCRE2_UCP) is compiled by Hyperscan in
 * byte mode (its UTF-8 mode takes minutes for these patterns, and its
 * Unicode tables are not PCRE2's), rewritten so that each item that
 * matches one character matches, as bytes, at least that character:
 *   - an item that may match a non-ASCII character becomes a group: its
 *     ASCII part, or MB, one whole UTF-8 sequence (any non-ASCII
 *     character): \w \W \d \D \s \S \h \H \v \V, '.', a class;
 *   - a non-ASCII character becomes its bytes as a group, or, caseless,
 *     any character (its case partners come from Unicode tables);
 *   - caseless 'k' and 's' also match U+212A and U+017F;
 *   - \b \B require nothing.
 * As each item still consumes exactly one character, a quantifier still
 * counts characters.  The text must be UTF-8 (gd_gr_prefilter_scan).
 */
#define MB "[\\x80-\\xff]+"
#define ANY1 "(?:[\\x00-\\x7f]|" MB ")"

/* \w \W \d \D \s \S \h \H \v \V of a UCP pattern, outside a class */
static const char *ucp_item(char e)
{
    switch (e) {
    case 'w':
        return "(?:[0-9A-Z_a-z]|" MB ")";
    case 'W':
        return "(?:[\\x00-\\x2f\\x3a-\\x40\\x5b-\\x5e\\x60\\x7b-\\x7f]|" MB ")";
    case 'd':
        return "(?:[0-9]|" MB ")";
    case 'D':
        return "(?:[\\x00-\\x2f\\x3a-\\x7f]|" MB ")";
    case 's':
        return "(?:[\\t-\\r ]|" MB ")";
    case 'S':
        return "(?:[^\\t-\\r \\x80-\\xff]|" MB ")";
    case 'h':
        return "(?:[\\t ]|" MB ")";
    case 'H':
        return "(?:[^\\t \\x80-\\xff]|" MB ")";
    case 'v':
        return "(?:[\\n-\\r]|" MB ")";
    default: /* V */
        return "(?:[^\\n-\\r\\x80-\\xff]|" MB ")";
    }
}

static int hexval(unsigned char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* a character by number at p[0..n) (after the backslash: xhh, x{h..}):
   its length, with *cp, or 0 */
static size_t by_number(const unsigned char *p, size_t n, uint32_t *cp)
{
    size_t i = 1;

    *cp = 0;
    if (n < 2 || p[0] != 'x') {
        return 0;
    }
    if (p[1] == '{') {
        for (i = 2; i < n && hexval(p[i]) >= 0 && i < 10; i++) {
            *cp = *cp * 16 + (uint32_t)hexval(p[i]);
        }
        return i > 2 && i < n && p[i] == '}' && *cp <= 0x10ffff ? i + 1 : 0;
    }
    for (; i < 3 && i < n && hexval(p[i]) >= 0; i++) {
        *cp = *cp * 16 + (uint32_t)hexval(p[i]);
    }
    return i > 1 ? i : 0;
}

static void put_hexbytes(out_t *o, const unsigned char *b, size_t n)
{
    char x[8];

    for (size_t i = 0; i < n; i++) {
        snprintf(x, sizeof(x), "\\x%02x", b[i]);
        puts_(o, x);
    }
}

/* the UTF-8 of cp, as a group */
static void put_cp(out_t *o, uint32_t cp)
{
    unsigned char b[4];
    size_t n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;

    if (n == 1) {
        b[0] = (unsigned char)cp;
    } else {
        for (size_t i = n - 1; i > 0; i--) {
            b[i] = (unsigned char)(0x80 | (cp & 0x3f));
            cp >>= 6;
        }
        b[0] = (unsigned char)((0xf00 >> n) | cp);
    }
    puts_(o, "(?:");
    put_hexbytes(o, b, n);
    puts_(o, ")");
}

int gd_gr_hs_expr(const char *pattern, uint32_t opts, char **expr,
                  unsigned *flags, char *why, size_t wn)
{
    const unsigned char *p = (const unsigned char *)pattern;
    size_t n = strlen(pattern), i = 0, class_at = 0, class_first = 0;
    int utf = (opts & PCRE2_UTF) != 0, ci, in_class = 0, negated = 0;
    int class_any = 0, class_items = 0;
    /* where the current branch of the pattern (branch[0]) and of each
       open group starts in o */
    size_t branch[64] = {0}, depth = 1;
    const char *bad = NULL;
    out_t o = {0};

    *expr = NULL;
    *flags = 0;
    if ((opts & PCRE2_EXTENDED) || inline_option(pattern, 'x')) {
        snprintf(why, wn, "flag x");
        return -1;
    }
    if (utf && !(opts & PCRE2_UCP)) {
        snprintf(why, wn, "UTF without UCP");
        return -1;
    }
    ci = (opts & PCRE2_CASELESS) || inline_option(pattern, 'i');

    while (i < n && !bad) {
        unsigned char c = p[i];

        if (c == '\\') {
            unsigned char e = i + 1 < n ? p[i + 1] : 0;
            uint32_t cp;
            size_t l;

            if (e == 0 || e >= 0x80 || strchr("QEKGpPXNRCgkoc", e) ||
                (utf && e >= '0' && e <= '9')) {
                /* \Q..\E, \K, \G, properties, \X, \N, \R, \C, named or
                   relative references, \o{}, \cX, a UTF-8 pattern's
                   octal or back-reference: not here */
                bad = "an escape it does not take";
            } else if (!in_class && (e == 'b' || e == 'B')) {
                /* a word boundary: required nowhere (a UCP pattern's \w
                   is not Hyperscan's, and it costs compile time) */
                puts_(&o, "(?:)");
                i += 2;
            } else if (!utf) {
                put(&o, (const char *)p + i, 2);
                i += 2;
            } else if (e == 'x') {
                if ((l = by_number(p + i + 1, n - i - 1, &cp)) == 0) {
                    bad = "a \\x it does not read";
                } else if (cp < 0x80) {
                    put_hexbytes(&o, (const unsigned char[]){(unsigned char)cp},
                                 1);
                    class_items++;
                } else if (in_class) {
                    /* the class's non-ASCII part is MB */
                    if (p[i - 1] == '-' ||
                        (i + 1 + l < n && p[i + 1 + l] == '-')) {
                        class_any = 1;
                    }
                } else if (ci) {
                    puts_(&o, ANY1);
                } else {
                    put_cp(&o, cp);
                }
                i += 1 + l;
            } else if (!in_class && strchr("wWdDsShHvV", e)) {
                puts_(&o, ucp_item((char)e));
                i += 2;
            } else {
                /* in a class, \w \s ... have their ASCII part in byte
                   mode, and the class has MB */
                put(&o, (const char *)p + i, 2);
                class_items++;
                i += 2;
            }
            continue;
        }
        if (in_class) {
            if (c == ']' && i != class_first) {
                in_class = 0;
                if (utf) {
                    if (negated) {
                        puts_(&o, "\\x80-\\xff");
                        class_items++;
                    }
                    puts_(&o, class_items ? "]|" MB ")" : "]");
                    if (class_any || !class_items) {
                        o.n = class_at;
                        puts_(&o, class_any ? ANY1 : "(?:" MB ")");
                    }
                } else {
                    put(&o, "]", 1);
                }
                i++;
                continue;
            }
            if (c == '[' && i + 1 < n && strchr(":.=", p[i + 1])) {
                const char *end = strstr(pattern + i + 2, ":]");

                if (utf || p[i + 1] != ':' || end == NULL) {
                    bad = "a POSIX class";
                    continue;
                }
                put(&o, (const char *)p + i, (size_t)(end + 2 - pattern) - i);
                i = (size_t)(end + 2 - pattern);
                continue;
            }
            if (c >= 0x80 && utf) {
                size_t j = i + 1;

                while (j < n && (p[j] & 0xc0) == 0x80) {
                    j++;
                }
                if (p[i - 1] == '-' || (j < n && p[j] == '-')) {
                    class_any = 1; /* a range with a non-ASCII end */
                }
                i = j; /* the class's non-ASCII part is MB */
                continue;
            }
            put(&o, (const char *)p + i, 1);
            class_items++;
            i++;
            continue;
        }
        if (c == '[') {
            in_class = 1;
            negated = 0;
            class_any = 0;
            class_items = 0;
            class_at = o.n;
            puts_(&o, utf ? "(?:[" : "[");
            i++;
            if (i < n && p[i] == '^') {
                negated = 1;
                put(&o, "^", 1);
                i++;
            }
            class_first = i; /* a ']' here is a character */
            continue;
        }
        if (c == '(' && i + 1 < n && p[i + 1] == '*') {
            /* A(*SKIP)(*F)|B: the branch never matches, and (*SKIP)
               only takes matches away: B alone */
            static const char *const skip[] = {"(*SKIP)(*F)|",
                                               "(*SKIP)(*FAIL)|"};
            size_t sl = 0;

            for (size_t k = 0; k < 2 && sl == 0; k++) {
                if (strncmp(pattern + i, skip[k], strlen(skip[k])) == 0) {
                    sl = strlen(skip[k]);
                }
            }
            if (sl == 0 || branch[depth - 1] == SIZE_MAX) {
                bad = "a (*VERB)";
                continue;
            }
            o.n = branch[depth - 1];
            i += sl;
            continue;
        }
        if (c == '(' && i + 2 < n && p[i + 1] == '?' && p[i + 2] == '#') {
            bad = "a comment";
            continue;
        }
        if (c == '(') {
            /* where the group's first branch starts in o (a (?: group's
               only: SIZE_MAX for the others) */
            if (depth == sizeof(branch) / sizeof(branch[0])) {
                bad = "groups nested too deep";
                continue;
            }
            if (i + 2 < n && p[i + 1] == '?' && p[i + 2] == ':') {
                put(&o, "(?:", 3);
                branch[depth++] = o.n;
                i += 3;
            } else {
                put(&o, "(", 1);
                branch[depth++] = SIZE_MAX;
                i++;
            }
            continue;
        }
        if (c == ')' && depth > 1) {
            depth--;
        } else if (c == '|' && branch[depth - 1] != SIZE_MAX) {
            put(&o, "|", 1);
            branch[depth - 1] = o.n;
            i++;
            continue;
        }
        if (c == '{') {
            /* a bounded repeat {m,n} loses its bound: {m,} (Hyperscan's
               compile time grows with the bounds) */
            size_t j = i + 1, m, k;

            while (j < n && p[j] >= '0' && p[j] <= '9') {
                j++;
            }
            m = j - i - 1;
            if (j < n && p[j] == ',' && m == 0) {
                bad = "{,n}"; /* a literal to PCRE2 10.42, not to 10.43 */
                continue;
            }
            if (m > 0 && j < n && p[j] == ',') {
                k = ++j;
                while (j < n && p[j] >= '0' && p[j] <= '9') {
                    j++;
                }
                if (j > k && j < n && p[j] == '}') {
                    put(&o, (const char *)p + i, m + 2);
                    put(&o, "}", 1);
                    i = j + 1;
                    continue;
                }
            }
        }
        if (utf && c >= 0x80) {
            size_t j = i + 1;

            while (j < n && (p[j] & 0xc0) == 0x80) {
                j++;
            }
            if (ci) {
                puts_(&o, ANY1);
            } else {
                puts_(&o, "(?:");
                put_hexbytes(&o, p + i, j - i);
                puts_(&o, ")");
            }
            i = j;
            continue;
        }
        if (utf && c == '.') {
            puts_(&o, ANY1);
            i++;
            continue;
        }
        if (utf && ci && strchr("kKsS", c)) {
            /* the letter itself (caseless or not where it is), or
               U+212A, U+017F */
            put(&o, "(?:", 3);
            put(&o, (const char *)p + i, 1);
            puts_(&o,
                  c == 'k' || c == 'K' ? "|\\xe2\\x84\\xaa)" : "|\\xc5\\xbf)");
            i++;
            continue;
        }
        put(&o, (const char *)p + i, 1);
        i++;
    }
    if (!bad && in_class) {
        bad = "an unterminated class";
    }
    if (!bad && o.bad) {
        bad = "out of memory";
    }
    if (bad) {
        snprintf(why, wn, "%s", bad);
        free(o.s);
        return -1;
    }
    *expr = o.s ? o.s : strdup("");
    *flags = HS_FLAG_PREFILTER | HS_FLAG_SINGLEMATCH |
             (opts & PCRE2_CASELESS ? HS_FLAG_CASELESS : 0) |
             (opts & PCRE2_DOTALL ? HS_FLAG_DOTALL : 0) |
             (opts & PCRE2_MULTILINE ? HS_FLAG_MULTILINE : 0);
    if (*expr == NULL) {
        snprintf(why, wn, "out of memory");
        return -1;
    }
    return 0;
}

/* ---- the databases ---- */

struct gd_gr_prefilter_s {
    hs_database_t **adb; /* the atoms, a database per set of target kinds */
    unsigned *adb_kinds; /* by atoms database: its rules' target kinds */
    size_t nadb;
    hs_database_t *full; /* the full patterns, or NULL */
    uint64_t gen;
    size_t nrules;
    unsigned char *always; /* by rule: 1 runs whatever the scans say */
    unsigned char *ks;     /* by rule: caseless with a 'k' or 's' atom */
    unsigned char *tier;   /* by rule: GD_GR_PF_* */
    unsigned char *utf;    /* by rule: a UTF-8 pattern in full */
    char (*why)[64];       /* by rule: why not in the full tier */
    hs_database_t **own;   /* by rule: its own full-pattern database when
                              its atoms gate it, else NULL */
    hs_database_t **parts; /* by rule: the database of its parts (ids from
                              0), scanned when its own matched, or NULL */
    uint64_t *all;         /* by rule: the ids of its parts' database, which
                              must all match */
    unsigned *gated;       /* the rules with an own database */
    size_t ngated;
    unsigned *kinds;     /* by rule: its target kinds (GD_GR_KIND) */
    unsigned full_kinds; /* the kinds of the full database's rules */
    size_t nfiltered, natoms, nfull, nalways, nutf, nparts;
};

/* ids past the rules: U+212A and U+017F, which fold to 'k' and 's' */
#define PF_ID_KS(p) ((unsigned)(p)->nrules)

static uint64_t pf_gen;

static int has_ks(const gd_gr_atoms_t *a)
{
    for (size_t i = 0; i < a->n; i++) {
        if (memchr(a->lit[i], 'k', a->len[i]) ||
            memchr(a->lit[i], 's', a->len[i])) {
            return 1;
        }
    }
    return 0;
}

static void full_tier(gd_gr_prefilter_t *p, const gd_gr_rule_t *rules, size_t i)
{
    p->tier[i] = GD_GR_PF_FULL;
    p->utf[i] = (rules[i].pattern_options & PCRE2_UTF) != 0;
    p->nutf += p->utf[i];
    p->always[i] = 0;
    p->nfull++;
}

/* ---- the parts of a pattern ---- */

/* past the class whose '[' is at p[i - 1], or n when it does not end */
static size_t skip_class(const char *p, size_t n, size_t i)
{
    if (i < n && p[i] == '^') {
        i++;
    }
    if (i < n && p[i] == ']') {
        i++;
    }
    while (i < n && p[i] != ']') {
        if (p[i] == '\\') {
            i += 2;
        } else if (p[i] == '[' && i + 1 < n && strchr(":.=", p[i + 1])) {
            char d = p[i + 1];

            for (i += 2; i + 1 < n && !(p[i] == d && p[i + 1] == ']'); i++) {
            }
            i += 2;
        } else {
            i++;
        }
    }
    return i < n ? i + 1 : n;
}

/* past the group whose '(' is at p[i], or 0 when it does not end */
static size_t skip_group(const char *p, size_t n, size_t i)
{
    size_t depth = 0;

    while (i < n) {
        if (p[i] == '\\') {
            i += 2;
        } else if (p[i] == '[') {
            i = skip_class(p, n, i + 1);
        } else if (p[i] == '(' && i + 2 < n && p[i + 1] == '?' &&
                   p[i + 2] == '#') {
            const char *e = memchr(p + i, ')', n - i);

            i = e ? (size_t)(e - p) + 1 : n;
        } else if (p[i] == '(') {
            depth++;
            i++;
        } else if (p[i] == ')') {
            i++;
            if (--depth == 0) {
                return i;
            }
        } else {
            i++;
        }
    }
    return 0;
}

/*
 * (gd_gr_prefilter.h) A match of the pattern holds a match of each part in
 * the same text (an assertion in a part looks at the same characters
 * around it), so each part alone matches the text, and a Hyperscan
 * prefilter of each is as sound as the pattern's.  Hyperscan's prefilter
 * of a long pattern may give up on much of it (pi-indirect-3's accepted
 * nearly any prose); of each part alone it keeps more.
 */
size_t gd_gr_parts(const char *p, uint32_t opts, char **parts)
{
    size_t n = strlen(p), i = 0, k = 0;
    static const char *const cut[] = {"\\g",  "\\k",  "\\Q", "\\E",
                                      "(?P=", "(?P>", "(?R", "(?&",
                                      "(?|",  "(?(",  "(*"};

    if ((opts & (PCRE2_EXTENDED | PCRE2_EXTENDED_MORE | PCRE2_LITERAL |
                 PCRE2_ALT_BSUX)) ||
        inline_option(p, 'x')) {
        return 0;
    }
    for (size_t j = 0; j < sizeof(cut) / sizeof(cut[0]); j++) {
        if (strstr(p, cut[j])) {
            return 0;
        }
    }
    for (size_t j = 0; j + 1 < n; j++) {
        if (p[j] == '\\' && p[j + 1] >= '1' && p[j + 1] <= '9') {
            return 0;
        }
        if (p[j] == '(' && p[j + 1] == '?' && j + 2 < n &&
            (isdigit((unsigned char)p[j + 2]) || p[j + 2] == '+' ||
             p[j + 2] == '-')) {
            if (p[j + 2] != '-' ||
                (j + 3 < n && isdigit((unsigned char)p[j + 3]))) {
                return 0; /* a call of a numbered group */
            }
        }
    }
    while (i < n) {
        size_t at = i, min = 1, end;
        int part = 0;

        if (p[i] == '|' || p[i] == ')') {
            goto none;
        }
        if (p[i] == '(' && i + 2 < n && p[i + 1] == '?' && p[i + 2] == '#') {
            const char *e = memchr(p + i, ')', n - i);

            i = e ? (size_t)(e - p) + 1 : n; /* a comment */
            continue;
        }
        if (p[i] == '(') {
            end = skip_group(p, n, i);
            if (end == 0) {
                goto none;
            }
            if (p[i + 1] != '?') {
                part = 1;
            } else if (strchr(":>", p[i + 2]) ||
                       (p[i + 2] == '<' && i + 3 < n &&
                        !strchr("=!", p[i + 3])) ||
                       p[i + 2] == '\'' || p[i + 2] == 'P') {
                part = 1; /* non-capturing, atomic, named */
            } else if (strchr("=!<", p[i + 2])) {
                part = 0; /* an assertion */
            } else {
                /* options: for the rest of the pattern (?i) cannot be
                   cut, (?i:...) is a group */
                size_t j = i + 2;

                while (j < n && (isalpha((unsigned char)p[j]) || p[j] == '-' ||
                                 p[j] == '^')) {
                    j++;
                }
                if (j >= n || p[j] != ':') {
                    goto none;
                }
                part = 1;
            }
            i = end;
        } else if (p[i] == '[') {
            i = skip_class(p, n, i + 1);
        } else if (p[i] == '\\') {
            i += 2;
            if (i <= n && strchr("xopPN", p[i - 1]) && i < n && p[i] == '{') {
                const char *e = memchr(p + i, '}', n - i);

                i = e ? (size_t)(e - p) + 1 : n;
            } else if (i <= n && p[i - 1] == 'c') {
                i++;
            }
        } else {
            i++;
            while (i < n && ((unsigned char)p[i] & 0xc0) == 0x80) {
                i++;
            }
        }
        if (i > n) {
            goto none;
        }
        end = i;
        /* its quantifier */
        if (i < n && (p[i] == '?' || p[i] == '*')) {
            min = 0;
            i++;
        } else if (i < n && p[i] == '+') {
            i++;
        } else if (i < n && p[i] == '{') {
            size_t j = i + 1, v = 0;

            if (j >= n || !isdigit((unsigned char)p[j])) {
                goto none; /* a literal '{', or {,n}: not cut */
            }
            for (; j < n && isdigit((unsigned char)p[j]); j++) {
                v = v < 100000 ? v * 10 + (size_t)(p[j] - '0') : v;
            }
            if (j < n && p[j] == ',') {
                for (j++; j < n && isdigit((unsigned char)p[j]); j++) {
                }
            }
            if (j >= n || p[j] != '}') {
                goto none;
            }
            min = v;
            i = j + 1;
        }
        if (i < n && (p[i] == '+' || p[i] == '?') && i != end) {
            i++; /* possessive, lazy */
        }
        if (part && min > 0 && k < GD_GR_MAX_PARTS) {
            parts[k] = strndup(p + at, end - at);
            if (parts[k] == NULL) {
                goto none;
            }
            k++;
        }
    }
    if (k >= 2) {
        return k;
    }
none:
    while (k > 0) {
        free(parts[--k]);
    }
    return 0;
}

static int on_part(unsigned id, unsigned long long from, unsigned long long to,
                   unsigned flags, void *ctx)
{
    uint64_t *seen = ctx;

    (void)from;
    (void)to;
    (void)flags;
    *seen |= (uint64_t)1 << id;
    return 0;
}

/*
 * A pattern with atoms gets a database of its own, scanned only over a
 * text that holds one of its atoms: both filters are sound, so their
 * conjunction is, and a pattern whose expression starts at words common
 * in prose (its Hyperscan engine then starts almost everywhere) costs a
 * literal scan instead.  Its parts (gd_gr_parts) get a database too,
 * scanned only over a text its own matched: the pattern runs when all of
 * them match.  0, or -1 when Hyperscan refuses the pattern (then it is on
 * its atoms alone, why[] saying why).
 */
static int own_compile(gd_gr_prefilter_t *p, const gd_gr_rule_t *rule, size_t i,
                       const char *expr, unsigned flags, const char *cache)
{
    const char *ex[GD_GR_MAX_PARTS];
    unsigned fl[GD_GR_MAX_PARTS], ids[GD_GR_MAX_PARTS], id = 0;
    char *parts[GD_GR_MAX_PARTS], *pe[GD_GR_MAX_PARTS], why[64];
    size_t np, k = 0;
    hs_compile_error_t *err = NULL;
    int cached;

    if (gd_gr_hs_compile(cache, &expr, &flags, &id, 1, &p->own[i], &err,
                         &cached) != HS_SUCCESS) {
        snprintf(p->why[i], sizeof(p->why[0]), "Hyperscan: %s",
                 err ? err->message : "?");
        hs_free_compile_error(err);
        p->own[i] = NULL;
        return -1;
    }
    p->gated[p->ngated++] = (unsigned)i;

    np = gd_gr_parts(rule->pattern, rule->pattern_options, parts);
    for (size_t j = 0; j < np; j++) {
        if (gd_gr_hs_expr(parts[j], rule->pattern_options, &pe[k], &fl[k], why,
                          sizeof(why)) == 0) {
            ex[k] = pe[k];
            ids[k] = (unsigned)k;
            k++;
        }
        free(parts[j]);
    }
    /* less a part Hyperscan refuses (one that matches the empty text);
       without parts, the pattern's own database alone */
    for (size_t n = k; n > 0;) {
        int x;

        if (gd_gr_hs_compile(cache, ex, fl, ids, (unsigned)n, &p->parts[i],
                             &err, &cached) == HS_SUCCESS) {
            p->all[i] = ((uint64_t)1 << n) - 1;
            p->nparts += n;
            break;
        }
        x = err ? err->expression : -1;
        hs_free_compile_error(err);
        err = NULL;
        p->parts[i] = NULL;
        if (x < 0 || (size_t)x >= n) {
            break;
        }
        n--;
        memmove(&ex[x], &ex[x + 1], (n - (size_t)x) * sizeof(ex[0]));
        memmove(&fl[x], &fl[x + 1], (n - (size_t)x) * sizeof(fl[0]));
    }
    while (k > 0) {
        free(pe[--k]);
    }
    return 0;
}

/*
 * One database of the full patterns without atoms (the UTF-8 ones
 * rewritten for byte mode too, so that a text is scanned once), and one
 * of its own for each pattern with atoms (own_compile): a pattern
 * Hyperscan refuses (its compile error names it) leaves the set, and the
 * rest are compiled again.  0, or -1 (no memory, an error of no pattern):
 * then none of the set is in the tier.
 */
static int full_compile(gd_gr_prefilter_t *p, const gd_gr_rule_t *rules,
                        const char *cache, const unsigned char *has_atoms)
{
    size_t n = p->nrules, k = 0;
    const char **expr = calloc(n ? n : 1, sizeof(*expr));
    unsigned *flags = calloc(n ? n : 1, sizeof(*flags));
    unsigned *ids = calloc(n ? n : 1, sizeof(*ids));
    int rc = -1;

    if (expr == NULL || flags == NULL || ids == NULL) {
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        char *e;

        if (rules[i].code == NULL || rules[i].pattern == NULL) {
            continue;
        }
        /* a pattern without atoms too: on a text it cannot match it
           does not run, so it cannot hit its match limit there either
           (docs/guardrails.md, "Fail modes") */
        if (gd_gr_hs_expr(rules[i].pattern, rules[i].pattern_options, &e,
                          &flags[k], p->why[i], sizeof(p->why[i])) != 0) {
            continue;
        }
        if (has_atoms[i]) {
            if (own_compile(p, &rules[i], i, e, flags[k], cache) == 0) {
                full_tier(p, rules, i);
            }
            free(e);
            continue;
        }
        expr[k] = e;
        ids[k++] = (unsigned)i;
    }
    while (k > 0) {
        hs_compile_error_t *err = NULL;
        int cached;

        if (gd_gr_hs_compile(cache, expr, flags, ids, (unsigned)k, &p->full,
                             &err, &cached) == HS_SUCCESS) {
            break;
        }
        int x = err ? err->expression : -1;

        if (x < 0 || (size_t)x >= k) {
            for (size_t j = 0; j < k; j++) {
                snprintf(p->why[ids[j]], sizeof(p->why[0]),
                         "Hyperscan, the database: %s",
                         err ? err->message : "?");
            }
            hs_free_compile_error(err);
            goto out;
        }
        snprintf(p->why[ids[x]], sizeof(p->why[0]), "Hyperscan: %s",
                 err->message);
        hs_free_compile_error(err);
        free((char *)expr[x]);
        k--;
        memmove(&expr[x], &expr[x + 1], (k - (size_t)x) * sizeof(*expr));
        memmove(&flags[x], &flags[x + 1], (k - (size_t)x) * sizeof(*flags));
        memmove(&ids[x], &ids[x + 1], (k - (size_t)x) * sizeof(*ids));
    }
    for (size_t j = 0; j < k; j++) {
        full_tier(p, rules, ids[j]);
    }
    rc = 0;
out:
    for (size_t j = 0; expr && j < k; j++) {
        free((char *)expr[j]);
    }
    free(expr);
    free(flags);
    free(ids);
    return rc;
}

/* The atoms' literal databases, one per set of target kinds among the
   rules that have atoms (lit, len, ids: k atoms, ids[x] the rule): a text
   scans only the atoms of the rules that look at its kind.  A JSON body's
   raw text, looked at by two rules of the packs, does not scan the atoms
   of the sixty that look at its values.  A group with a caseless 'k' or
   's' atom also holds U+212A and U+017F (PF_ID_KS). */
static int atoms_compile(gd_gr_prefilter_t *p, const char *cache,
                         const char **lit, const size_t *len,
                         const unsigned *flags, const unsigned *ids, unsigned k)
{
    static const char kelvin[] = "\xe2\x84\xaa", long_s[] = "\xc5\xbf";
    const char **gl = malloc((k + 2) * sizeof(*gl));
    size_t *glen = malloc((k + 2) * sizeof(*glen));
    unsigned *gflags = malloc((k + 2) * sizeof(*gflags));
    unsigned *gids = malloc((k + 2) * sizeof(*gids));
    hs_compile_error_t *err = NULL;
    int rc = -1;

    p->adb = calloc(p->nrules + 1, sizeof(*p->adb));
    p->adb_kinds = calloc(p->nrules + 1, sizeof(*p->adb_kinds));
    if (gl == NULL || glen == NULL || gflags == NULL || gids == NULL ||
        p->adb == NULL || p->adb_kinds == NULL) {
        goto out;
    }
    for (unsigned x = 0; x < k; x++) {
        unsigned m = p->kinds[ids[x]], gk = 0;
        int ks = 0;
        size_t g;

        for (g = 0; g < p->nadb && p->adb_kinds[g] != m; g++) {
        }
        if (g < p->nadb) {
            continue; /* its group is built */
        }
        for (unsigned y = x; y < k; y++) {
            if (p->kinds[ids[y]] == m) {
                gl[gk] = lit[y];
                glen[gk] = len[y];
                gflags[gk] = flags[y];
                gids[gk++] = ids[y];
                ks |= p->ks[ids[y]];
            }
        }
        if (ks) {
            gl[gk] = kelvin;
            glen[gk] = sizeof(kelvin) - 1;
            gflags[gk] = HS_FLAG_SINGLEMATCH;
            gids[gk++] = PF_ID_KS(p);
            gl[gk] = long_s;
            glen[gk] = sizeof(long_s) - 1;
            gflags[gk] = HS_FLAG_SINGLEMATCH;
            gids[gk++] = PF_ID_KS(p);
        }
        if (gd_gr_hs_compile_lit(cache, gl, glen, gflags, gids, gk,
                                 &p->adb[p->nadb], &err,
                                 &(int){0}) != HS_SUCCESS) {
            if (err) {
                hs_free_compile_error(err);
            }
            goto out;
        }
        p->adb_kinds[p->nadb++] = m;
    }
    rc = 0;
out:
    free(gl);
    free(glen);
    free(gflags);
    free(gids);
    return rc;
}

gd_gr_prefilter_t *gd_gr_prefilter_new(const gd_gr_rule_t *rules, size_t n,
                                       const char *cache)
{
    gd_gr_prefilter_t *p = calloc(1, sizeof(*p));
    gd_gr_atoms_t *a = malloc(sizeof(*a));
    unsigned char *has_atoms = calloc(n + 1, 1);
    const char **lit = NULL;
    size_t *len = NULL;
    unsigned *flags = NULL, *ids = NULL, k = 0, cap = 0;
    char why[64];

    if (p == NULL || a == NULL || has_atoms == NULL ||
        hs_valid_platform() != HS_SUCCESS) {
        goto fail;
    }
    p->nrules = n;
    p->always = malloc(n + 1);
    p->ks = calloc(n + 1, 1);
    p->tier = calloc(n + 1, 1);
    p->utf = calloc(n + 1, 1);
    p->why = calloc(n + 1, sizeof(*p->why));
    p->own = calloc(n + 1, sizeof(*p->own));
    p->parts = calloc(n + 1, sizeof(*p->parts));
    p->all = calloc(n + 1, sizeof(*p->all));
    p->gated = calloc(n + 1, sizeof(*p->gated));
    p->kinds = calloc(n + 1, sizeof(*p->kinds));
    if (p->always == NULL || p->ks == NULL || p->tier == NULL ||
        p->utf == NULL || p->why == NULL || p->own == NULL ||
        p->parts == NULL || p->all == NULL || p->gated == NULL ||
        p->kinds == NULL) {
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        /* a rule that names no kind (not from the loader) looks at all */
        p->kinds[i] = rules[i].kinds ? rules[i].kinds : ~0u;
    }
    memset(p->always, 1, n + 1);

    /* each pattern's atoms, once, into the literal database: they are its
       tier, or the gate of its own database in the full tier */
    for (size_t i = 0; i < n; i++) {
        if (rules[i].code == NULL || rules[i].pattern == NULL ||
            gd_gr_atoms(rules[i].pattern, rules[i].pattern_options, a, why,
                        sizeof(why)) != 0) {
            continue;
        }
        has_atoms[i] = 1;
        if (k + a->n > cap) {
            cap = (k + a->n) * 2;
            const char **l2 = realloc(lit, cap * sizeof(*lit));
            if (l2) {
                lit = l2;
            }
            size_t *n2 = realloc(len, cap * sizeof(*len));
            if (n2) {
                len = n2;
            }
            unsigned *f2 = realloc(flags, cap * sizeof(*flags));
            if (f2) {
                flags = f2;
            }
            unsigned *i2 = realloc(ids, cap * sizeof(*ids));
            if (i2) {
                ids = i2;
            }
            if (!l2 || !n2 || !f2 || !i2) {
                goto fail;
            }
        }
        for (size_t j = 0; j < a->n; j++) {
            char *copy = malloc(a->len[j] ? a->len[j] : 1);

            if (copy == NULL) {
                goto fail;
            }
            memcpy(copy, a->lit[j], a->len[j]);
            lit[k] = copy;
            len[k] = a->len[j];
            flags[k] = HS_FLAG_CASELESS | HS_FLAG_SINGLEMATCH;
            ids[k] = (unsigned)i;
            k++;
        }
        p->natoms += a->n;
        if (a->caseless && has_ks(a)) {
            p->ks[i] = 1;
        }
    }

    /* the tight tier: each pattern Hyperscan can take (no memory: none,
       and the atoms for all) */
    (void)full_compile(p, rules, cache, has_atoms);

    for (size_t i = 0; i < n; i++) {
        if (rules[i].code == NULL || rules[i].pattern == NULL) {
            continue;
        }
        if (p->tier[i] == GD_GR_PF_FULL && p->own[i] == NULL) {
            p->full_kinds |= p->kinds[i];
        } else if (!has_atoms[i]) {
            p->nalways++;
        } else if (p->own[i] == NULL) {
            p->always[i] = 0;
            p->tier[i] = GD_GR_PF_ATOMS;
            p->nfiltered++;
        }
    }
    if (k == 0 && p->nfull == 0) {
        goto fail;
    }
    if (k == 0) {
        goto built;
    }
    if (atoms_compile(p, cache, lit, len, flags, ids, k) != 0) {
        goto fail;
    }
built:
    p->gen = __atomic_add_fetch(&pf_gen, 1, __ATOMIC_RELAXED);
    goto done;

fail:
    gd_gr_prefilter_free(p);
    p = NULL;
done:
    for (unsigned i = 0; i < k; i++) {
        free((char *)lit[i]);
    }
    free(lit);
    free(len);
    free(flags);
    free(ids);
    free(a);
    free(has_atoms);
    return p;
}

void gd_gr_prefilter_free(gd_gr_prefilter_t *p)
{
    if (p == NULL) {
        return;
    }
    for (size_t i = 0; i < p->nadb; i++) {
        hs_free_database(p->adb[i]);
    }
    free(p->adb);
    free(p->adb_kinds);
    hs_free_database(p->full);
    for (size_t i = 0; p->own && i < p->nrules; i++) {
        hs_free_database(p->own[i]);
        hs_free_database(p->parts ? p->parts[i] : NULL);
    }
    free(p->own);
    free(p->parts);
    free(p->all);
    free(p->gated);
    free(p->kinds);
    free(p->always);
    free(p->ks);
    free(p->tier);
    free(p->utf);
    free(p->why);
    free(p);
}

void gd_gr_prefilter_counts(const gd_gr_prefilter_t *p, size_t *rules,
                            size_t *atoms)
{
    *rules = p ? p->nfiltered : 0;
    *atoms = p ? p->natoms : 0;
}

/* the databases: the atoms', the full one, each gated rule's own and its
   parts' (any may be NULL) */
#define DB_COUNT(p) ((p)->nadb + 1 + 2 * (p)->ngated)

static hs_database_t *db_at(const gd_gr_prefilter_t *p, size_t i)
{
    if (i <= p->nadb) {
        return i < p->nadb ? p->adb[i] : p->full;
    }
    i -= p->nadb + 1;
    return i % 2 ? p->parts[p->gated[i / 2]] : p->own[p->gated[i / 2]];
}

void gd_gr_prefilter_stats(const gd_gr_prefilter_t *p, gd_gr_pf_stats_t *st)
{
    memset(st, 0, sizeof(*st));
    if (p == NULL) {
        return;
    }
    st->full = p->nfull;
    st->atoms = p->nfiltered;
    st->always = p->nalways;
    st->natoms = p->natoms;
    st->gated = p->ngated;
    st->parts = p->nparts;
    st->atoms_dbs = p->nadb;
    for (size_t i = 0; i < DB_COUNT(p); i++) {
        hs_database_t *db = db_at(p, i);
        size_t sz = 0;

        if (db && hs_database_size(db, &sz) == HS_SUCCESS) {
            st->db_bytes += sz;
        }
    }
}

int gd_gr_prefilter_tier(const gd_gr_prefilter_t *p, size_t i, const char **why)
{
    *why = p && i < p->nrules && p->why[i][0] ? p->why[i] : "";
    return p && i < p->nrules ? p->tier[i] : GD_GR_PF_ALWAYS;
}

int gd_gr_prefilter_gated(const gd_gr_prefilter_t *p, size_t i)
{
    return p && i < p->nrules && p->own[i] != NULL;
}

void gd_gr_pf_scratch_free(gd_gr_pf_scratch_t *s)
{
    if (s->hs) {
        hs_free_scratch(s->hs);
    }
    free(s->buf);
    s->buf = NULL;
    s->cap = 0;
    s->hs = NULL;
    s->gen = 0;
}

static int on_match(unsigned id, unsigned long long from, unsigned long long to,
                    unsigned flags, void *ctx)
{
    (void)from;
    (void)to;
    (void)flags;
    ((unsigned char *)ctx)[id] = 1;
    return 0;
}

size_t gd_gr_ws_collapse(const char *in, size_t len, char *out)
{
    size_t w = 0;
    int space = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];

        if (gd_gr_ws(c)) {
            if (!space) {
                out[w++] = ' ';
            }
            space = 1;
        } else {
            out[w++] = (char)c;
            space = 0;
        }
    }
    return w;
}

int gd_gr_ws_single(const char *in, size_t len)
{
    size_t i = 0;
    unsigned prev = 0; /* the byte before in[i] is a space */

#if defined(__SSE2__)
    const __m128i sp = _mm_set1_epi8(' ');
    const __m128i lo = _mm_set1_epi8('\t' - 1), hi = _mm_set1_epi8('\r' + 1);

    for (; i + 16 <= len; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(in + i));
        /* \t..\r (bytes from 0x80 compare as negative: never) */
        __m128i ctl =
            _mm_and_si128(_mm_cmpgt_epi8(v, lo), _mm_cmplt_epi8(v, hi));
        unsigned m = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, sp));

        if (_mm_movemask_epi8(ctl) || (m & ((m << 1) | prev))) {
            return 0;
        }
        prev = m >> 15;
    }
#endif
    for (; i < len; i++) {
        unsigned char c = (unsigned char)in[i];

        if (gd_gr_ws(c) && (c != ' ' || prev)) {
            return 0;
        }
        prev = c == ' ';
    }
    return 1;
}

static int scan_fail(const gd_gr_prefilter_t *p, unsigned char *run)
{
    memset(run, 1, p->nrules);
    return -1;
}

/* the atoms' scan of text, white space collapsed, into run: 0 or -1 */
static int atoms_scan(const gd_gr_prefilter_t *p, gd_gr_pf_scratch_t *s,
                      const char *text, size_t len, unsigned kinds,
                      unsigned char *run)
{
    size_t g;

    for (g = 0; g < p->nadb && !(p->adb_kinds[g] & kinds); g++) {
    }
    if (g == p->nadb) {
        return 0; /* no rule with atoms looks at this kind */
    }
    if (!gd_gr_ws_single(text, len)) {
        if (len > s->cap) {
            char *b = realloc(s->buf, len);

            if (b == NULL) {
                return -1;
            }
            s->buf = b;
            s->cap = len;
        }
        len = gd_gr_ws_collapse(text, len, s->buf);
        text = s->buf;
    }
    for (; g < p->nadb; g++) {
        if ((p->adb_kinds[g] & kinds) &&
            hs_scan(p->adb[g], len ? text : "", (unsigned)len, 0, s->hs,
                    on_match, run) != HS_SUCCESS) {
            return -1;
        }
    }
    if (run[p->nrules]) {
        for (size_t i = 0; i < p->nrules; i++) {
            run[i] |= p->ks[i];
        }
    }
    return 0;
}

int gd_gr_prefilter_scan(const gd_gr_prefilter_t *p, gd_gr_pf_scratch_t *s,
                         const char *text, size_t len, unsigned char *run)
{
    return gd_gr_prefilter_scan_kinds(p, s, text, len, ~0u, run);
}

int gd_gr_prefilter_scan_kinds(const gd_gr_prefilter_t *p,
                               gd_gr_pf_scratch_t *s, const char *text,
                               size_t len, unsigned kinds, unsigned char *run)
{
    const char *t = len ? text : "";

    memcpy(run, p->always, p->nrules + 1);
    run[p->nrules] = 0;

    if (s->gen != p->gen) {
        /* one scratch, grown for each database */
        hs_scratch_t *scr = s->hs;

        for (size_t i = 0; i < DB_COUNT(p); i++) {
            hs_database_t *db = db_at(p, i);

            if (db && hs_alloc_scratch(db, &scr) != HS_SUCCESS) {
                s->hs = scr;
                s->gen = 0;
                return scan_fail(p, run);
            }
        }
        s->hs = scr;
        s->gen = p->gen;
    }
    if (len > UINT32_MAX) {
        return scan_fail(p, run);
    }
    /* only the databases of rules of these kinds */
    if (p->full && (p->full_kinds & kinds) &&
        hs_scan(p->full, t, (unsigned)len, 0, s->hs, on_match, run) !=
            HS_SUCCESS) {
        return scan_fail(p, run);
    }
    if (atoms_scan(p, s, text, len, kinds, run) != 0) {
        return scan_fail(p, run);
    }
    for (size_t j = 0; j < p->ngated; j++) {
        unsigned i = p->gated[j];

        /* an open gate: the pattern's own database says */
        if (run[i] && !(p->kinds[i] & kinds)) {
            run[i] = 0;
        } else if (run[i]) {
            uint64_t seen = 0;

            if (hs_scan(p->own[i], t, (unsigned)len, 0, s->hs, on_part,
                        &seen) != HS_SUCCESS) {
                return scan_fail(p, run);
            }
            /* its expression matched: its parts say */
            if (seen && p->parts[i]) {
                seen = 0;
                if (hs_scan(p->parts[i], t, (unsigned)len, 0, s->hs, on_part,
                            &seen) != HS_SUCCESS) {
                    return scan_fail(p, run);
                }
                seen = seen == p->all[i];
            }
            run[i] = seen != 0;
        }
    }
    if (p->nutf && !gd_norm_utf8_valid((const unsigned char *)text, len)) {
        /* the UTF-8 patterns' rewrite assumes UTF-8: on a text that is
           not, PCRE2 matches with PCRE2_MATCH_INVALID_UTF, and they run */
        for (size_t i = 0; i < p->nrules; i++) {
            run[i] |= p->utf[i];
        }
    }
    return 0;
}
