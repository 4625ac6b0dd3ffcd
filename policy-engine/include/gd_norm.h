/*
 * gd_norm: the normaliser that runs before guardrail rules match, so
 * that encoded, full-width, homoglyph or invisible spellings do not
 * evade them: percent-decoding (once; a second layer is flagged, not
 * decoded), Unicode NFKC (libutf8proc), the removal of zero-width,
 * bidi-control and tag characters and the folding of Cyrillic and Greek
 * lookalikes of Latin letters (docs/guardrails.md, "Normalisation").
 * Every byte of the result maps back to the offset in the input it came
 * from, so that matches report offsets in the original text.
 *
 * JSON string values are unescaped by jansson before they get here.
 * Invalid UTF-8 is passed through byte for byte (flagged), NUL bytes
 * too (flagged): a rule still matches around them.
 */
#ifndef GD_NORM_H
#define GD_NORM_H

#include <stddef.h>
#include <stdint.h>

/* options of gd_norm() */
#define GD_NORM_PERCENT 0x01 /* decode %XX */
#define GD_NORM_FORM 0x02    /* with GD_NORM_PERCENT: '+' is a space */
#define GD_NORM_UNICODE 0x04 /* NFKC, invisibles removed, homoglyphs */

/* what gd_norm() found (n->flags) */
#define GD_NORM_F_DECODED 0x01        /* some %XX was decoded */
#define GD_NORM_F_DOUBLE_ENCODED 0x02 /* the decoded text holds %XX */
#define GD_NORM_F_INVALID_UTF8 0x04   /* bytes that are not UTF-8 */
#define GD_NORM_F_INVISIBLE 0x08      /* zero-width/tag characters removed */
#define GD_NORM_F_CHANGED 0x10        /* NFKC (or folding) changed it */
#define GD_NORM_F_NUL 0x20            /* a NUL byte */

/* the longest input gd_norm() takes (offsets are 32-bit) */
#define GD_NORM_MAX ((size_t)UINT32_MAX - 1)

typedef struct {
    char *text; /* the result, NUL-terminated, len bytes */
    size_t len;
    uint32_t *map; /* map[i]: the input offset byte i came from;
                      map[len]: the input's length */
    unsigned flags;

    /* the buffers, reused from call to call (gd_norm_free) */
    size_t text_cap;
    size_t map_cap;
    void *work;
    size_t work_cap;
} gd_norm_t;

/*
 * Whether gd_norm (GD_NORM_UNICODE) removes code point cp: zero-width
 * characters (U+200B..U+200D, U+2060..U+2064, U+FEFF, U+180E), bidi
 * controls (U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069),
 * the soft hyphen U+00AD and the tag characters U+E0000..U+E007F.  The
 * "invisible" detector reports the same set (gd_detect.h).
 */
static inline int gd_norm_invisible(int32_t cp)
{
    if (cp < 0x00ad) {
        return 0;
    }
    if (cp < 0x2000) {
        return cp == 0x00ad || cp == 0x061c || cp == 0x180e;
    }
    return (cp >= 0x200b && cp <= 0x200f) || (cp >= 0x202a && cp <= 0x202e) ||
           (cp >= 0x2060 && cp <= 0x2064) || (cp >= 0x2066 && cp <= 0x2069) ||
           cp == 0xfeff || (cp >= 0xe0000 && cp <= 0xe007f);
}

/* Whether s[0..len) holds a byte beyond ASCII (8 bytes at a time). */
int gd_norm_has_high(const unsigned char *s, size_t len);

/* Whether s[0..len) is all UTF-8 (gd_norm_u8dec's definition). */
int gd_norm_utf8_valid(const unsigned char *s, size_t len);

/*
 * The length of the valid UTF-8 character at s[0..len) (len > 0; its code
 * point in *cp), or 0 when s starts with a byte that is not one: a
 * continuation byte, an overlong form, a surrogate, a code point over
 * U+10FFFF or a sequence cut short.
 */
size_t gd_norm_u8dec(const unsigned char *s, size_t len, int32_t *cp);

void gd_norm_init(gd_norm_t *n);
void gd_norm_free(gd_norm_t *n);

/*
 * Normalises in[0..len) with opts into n (replacing what n held).
 * Allocates only when n's buffers are too small.  0, or -1 when out of
 * memory or len > GD_NORM_MAX.
 */
int gd_norm(gd_norm_t *n, const char *in, size_t len, unsigned opts);

/*
 * The input span that n->text[off..off+len) came from: from where the
 * character of its first byte starts to where the character of its last
 * byte ends (a match of the "f" of "fi" from U+FB01 spans the ligature).
 */
static inline void gd_norm_span(const gd_norm_t *n, size_t off, size_t len,
                                size_t *in_off, size_t *in_len)
{
    size_t end = off + len;

    *in_off = n->map[off];
    if (len == 0) {
        *in_len = 0;
        return;
    }
    /* the end maps to where the next character starts; the bytes of one
       input character's expansion share its offset */
    while (end < n->len && n->map[end] == n->map[end - 1]) {
        end++;
    }
    *in_len = n->map[end] > *in_off ? n->map[end] - *in_off : 0;
}

#endif
