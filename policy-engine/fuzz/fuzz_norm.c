/*
 * libFuzzer target for gd_norm (`make fuzz`, needs clang).  The first
 * byte picks the options (GD_NORM_PERCENT, _FORM, _UNICODE), the rest is
 * the input.  One gd_norm_t serves every run, so that buffer reuse is
 * exercised too.  Checks:
 *   - the result is NUL-terminated, map[len] is the input's length, the
 *     map never decreases and stays within the input;
 *   - gd_norm_span of any part of the result lies within the input;
 *   - GD_NORM_F_NUL exactly when the result holds a NUL;
 *   - the result is valid UTF-8 unless GD_NORM_F_INVALID_UTF8, and
 *     GD_NORM_F_INVALID_UTF8 is not raised for valid UTF-8 input without
 *     percent-decoding;
 *   - with GD_NORM_UNICODE, each character of the result comes from one
 *     input character (its bytes share one offset): bytes that are not
 *     UTF-8 never join into a character;
 *   - without options the result is the input;
 *   - percent-decoding alone never grows the text;
 *   - on short valid input (no invisible characters, no lookalikes) the
 *     result is utf8proc_NFKC's.
 */
#include "gd_norm.h"

#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

static gd_norm_t n;
static int ready;

static int valid_utf8(const uint8_t *s, size_t len)
{
    while (len > 0) {
        utf8proc_int32_t c;
        utf8proc_ssize_t l = utf8proc_iterate(s, (utf8proc_ssize_t)len, &c);

        if (l <= 0) {
            return 0;
        }
        s += l;
        len -= (size_t)l;
    }
    return 1;
}

static void one_origin(void)
{
    const uint8_t *t = (const uint8_t *)n.text;
    size_t i = 0;

    while (i < n.len) {
        utf8proc_int32_t c;
        utf8proc_ssize_t l =
            utf8proc_iterate(t + i, (utf8proc_ssize_t)(n.len - i), &c);

        if (l <= 0) {
            i++;
            continue;
        }
        for (utf8proc_ssize_t k = 1; k < l; k++) {
            if (n.map[i + (size_t)k] != n.map[i]) {
                abort();
            }
        }
        i += (size_t)l;
    }
}

static void check_nfkc(const uint8_t *in, size_t len)
{
    utf8proc_uint8_t *ref = NULL;
    utf8proc_ssize_t rl;
    int lookalike = 0; /* or a space gd_norm maps and NFKC keeps */

    rl = utf8proc_map(in, (utf8proc_ssize_t)len, &ref,
                      UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
    if (rl < 0) {
        abort(); /* valid input: utf8proc must take it */
    }
    for (const utf8proc_uint8_t *p = ref; *p;) {
        utf8proc_int32_t c;

        p += utf8proc_iterate(p, -1, &c);
        lookalike |= (c >= 0x130 && c < 0x530) || c == 0x85 || c == 0x1680 ||
                     c == 0x2028 || c == 0x2029;
    }
    if (!lookalike &&
        ((size_t)rl != n.len || memcmp(ref, n.text, n.len) != 0)) {
        abort();
    }
    free(ref);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned opts;
    const char *in;
    size_t len;

    if (size < 1) {
        return 0;
    }
    if (!ready) {
        gd_norm_init(&n);
        ready = 1;
    }
    opts = data[0] & (GD_NORM_PERCENT | GD_NORM_FORM | GD_NORM_UNICODE);
    in = (const char *)data + 1;
    len = size - 1;

    if (gd_norm(&n, in, len, opts) != 0) {
        abort();
    }

    if (n.text[n.len] != '\0' || n.map[n.len] != len) {
        abort();
    }
    for (size_t i = 0; i < n.len; i++) {
        if (n.map[i] > n.map[i + 1] || n.map[i] >= len) {
            abort();
        }
    }
    for (size_t off = 0; off < n.len; off += 1 + off / 3) {
        for (size_t l = 0; off + l <= n.len; l += 1 + l) {
            size_t io, il;

            gd_norm_span(&n, off, l, &io, &il);
            if (io > len || il > len - io) {
                abort();
            }
        }
    }

    if (((n.flags & GD_NORM_F_NUL) != 0) !=
        (memchr(n.text, '\0', n.len) != NULL)) {
        abort();
    }
    if (!(n.flags & GD_NORM_F_INVALID_UTF8) &&
        !valid_utf8((const uint8_t *)n.text, n.len)) {
        abort();
    }
    if (!(opts & GD_NORM_PERCENT) && (n.flags & GD_NORM_F_INVALID_UTF8) &&
        valid_utf8((const uint8_t *)in, len)) {
        abort();
    }
    if (opts & GD_NORM_UNICODE) {
        one_origin();
    }
    if (opts == 0 && (n.len != len || memcmp(n.text, in, len) != 0)) {
        abort();
    }
    if (!(opts & GD_NORM_UNICODE) && n.len > len) {
        abort();
    }
    if (opts == GD_NORM_UNICODE && len < 60 &&
        !(n.flags & (GD_NORM_F_INVISIBLE | GD_NORM_F_INVALID_UTF8)) &&
        memchr(in, '\0', len) == NULL) {
        check_nfkc((const uint8_t *)in, len);
    }
    return 0;
}
