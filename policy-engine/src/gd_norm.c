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

/* Room for need bytes of text (+ the NUL) and need + 1 map entries. */
static int reserve(gd_norm_t *n, size_t need)
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
static int has_high(const unsigned char *s, size_t len)
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

int gd_norm(gd_norm_t *n, const char *in, size_t len, unsigned opts)
{
    const unsigned char *src = (const unsigned char *)in;

    n->flags = 0;
    n->len = 0;
    if (len > GD_NORM_MAX) {
        return -1;
    }

    if ((opts & GD_NORM_PERCENT) &&
        (memchr(in, '%', len) != NULL ||
         ((opts & GD_NORM_FORM) && memchr(in, '+', len) != NULL))) {
        if (percent_decode(n, src, len, opts) != 0) {
            return -1;
        }
    } else if (copy_through(n, src, len, NULL) != 0) {
        return -1;
    }

    /* stage 2 (Unicode) follows in the next commit */
    (void)has_high;
    if (memchr(n->text, '\0', n->len) != NULL) {
        n->flags |= GD_NORM_F_NUL;
    }
    n->map[n->len] = (uint32_t)len;
    n->text[n->len] = '\0';
    return 0;
}
