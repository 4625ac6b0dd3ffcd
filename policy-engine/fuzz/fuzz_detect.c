/*
 * libFuzzer target for gd_detect (`make fuzz`, needs clang).  Every
 * detector runs over the input, which libFuzzer holds in a buffer of
 * exactly its size (so ASan sees any read past text[len)).  Checks:
 *   - the spans are non-empty, inside the text, in order, not overlapping;
 *   - the count does not depend on how many spans are stored (max 0, 1, 64);
 *   - what a span holds agrees with its detector: an e-mail has one '@',
 *     an IPv4 or IPv6 span is an address for inet_pton, a card span has
 *     13 to 19 digits and passes Luhn, an AWS key id is 20 characters;
 *   - a span found in the whole text is found again in the span alone.
 */
#include "gd_detect.h"
#include "gd_norm.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#define MAXS 64

static int luhn_digits(const char *p, size_t n)
{
    unsigned sum = 0, k = 0;

    for (size_t i = n; i-- > 0;) {
        unsigned v;

        if (p[i] == ' ' || p[i] == '-') {
            continue;
        }
        if (p[i] < '0' || p[i] > '9') {
            return 0;
        }
        v = (unsigned)(p[i] - '0');
        if (k++ & 1) {
            v = v * 2 > 9 ? v * 2 - 9 : v * 2;
        }
        sum += v;
    }
    return k >= 13 && k <= 19 && sum % 10 == 0;
}

static void agrees(gd_detector_e d, const char *p, size_t n)
{
    char buf[64];
    unsigned char addr[16];

    switch (d) {
    case GD_DET_INVISIBLE:
        /* only characters that gd_norm removes */
        for (size_t i = 0; i < n;) {
            int32_t cp;
            size_t l = gd_norm_u8dec((const unsigned char *)p + i, n - i, &cp);

            if (l == 0 || !gd_norm_invisible(cp)) {
                abort();
            }
            i += l;
        }
        break;
    case GD_DET_EMAIL:
        for (size_t i = 0, at = 0; i < n; i++) {
            at += p[i] == '@';
            if (at > 1 || (i + 1 == n && at != 1)) {
                abort();
            }
        }
        break;
    case GD_DET_IPV4:
    case GD_DET_IPV6:
        if (n >= sizeof(buf)) {
            abort();
        }
        memcpy(buf, p, n);
        buf[n] = '\0';
        if (inet_pton(d == GD_DET_IPV4 ? AF_INET : AF_INET6, buf, addr) != 1) {
            abort();
        }
        break;
    case GD_DET_CARD:
        if (!luhn_digits(p, n)) {
            abort();
        }
        break;
    case GD_DET_AWS_ACCESS_KEY:
        if (n != 20) {
            abort();
        }
        break;
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static gd_detect_span_t sp[MAXS], again[MAXS];
    const char *t = (const char *)data;

    for (int dd = 0; dd < GD_DET_LAST; dd++) {
        gd_detector_e d = (gd_detector_e)dd;
        size_t n = gd_detect(d, t, size, sp, MAXS), end = 0;

        if (gd_detect(d, t, size, NULL, 0) != n ||
            gd_detect(d, t, size, again, 1) != n) {
            abort();
        }
        for (size_t k = 0; k < n && k < MAXS; k++) {
            if (sp[k].len == 0 || sp[k].off < end || sp[k].off > size ||
                sp[k].len > size - sp[k].off) {
                abort();
            }
            end = sp[k].off + sp[k].len;
            agrees(d, t + sp[k].off, sp[k].len);

            /* the span alone holds the same match (the secret detector
               looks at its run's neighbours, and the truncated PEM block
               at what follows, the invisible one at the characters
               around a lone joiner: those are left out) */
            if (d != GD_DET_SECRET && d != GD_DET_SSN &&
                d != GD_DET_INVISIBLE) {
                char *copy = malloc(sp[k].len);

                memcpy(copy, t + sp[k].off, sp[k].len);
                if (gd_detect(d, copy, sp[k].len, again, 1) < 1 ||
                    again[0].off != 0 || again[0].len != sp[k].len) {
                    abort();
                }
                free(copy);
            }
        }
    }
    return 0;
}
