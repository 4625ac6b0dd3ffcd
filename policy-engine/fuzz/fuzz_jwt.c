/*
 * libFuzzer target for gd_jwt (`make fuzz`, needs clang).  The input is
 * read three ways:
 *   - as a compact serialization, the way the module reads a token: split,
 *     the three segments decoded, the header and the payload parsed, the
 *     time claims read and checked;
 *   - as one base64url segment: what decodes must be canonical, that is
 *     OpenSSL encodes the bytes back to exactly the input;
 *   - as the JSON of a header and of a payload, so that the parsers and the
 *     claim checks see JSON directly.
 * Checks: no accepted payload holds a NUL, and every time check agrees
 * with the same comparisons done in 128-bit arithmetic.
 */
#include "gd_jwt.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

static void no_nul(const json_t *v)
{
    const char *key;
    json_t *m;
    size_t i;

    if (json_is_string(v)) {
        if (memchr(json_string_value(v), '\0', json_string_length(v))) {
            abort();
        }
    } else if (json_is_object(v)) {
        json_object_foreach((json_t *)v, key, m)
        {
            no_nul(m);
        }
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, m)
        {
            no_nul(m);
        }
    }
}

/* the expected result of gd_jwt_check_times(), in 128-bit arithmetic */
static gd_jwt_rc_t expect(const gd_jwt_times_t *t, __int128 now,
                          __int128 leeway, __int128 max)
{
    if (now < 0) {
        now = 0;
    }
    if (now > GD_JWT_DATE_MAX) {
        now = GD_JWT_DATE_MAX;
    }
    if (leeway < 0) {
        leeway = 0;
    }
    if (now >= (__int128)t->exp + leeway) {
        return GD_JWT_EXPIRED;
    }
    if (t->has_nbf && now < (__int128)t->nbf - leeway) {
        return GD_JWT_NOT_YET_VALID;
    }
    if (max > 0) {
        if (!t->has_iat) {
            return GD_JWT_CLAIM_INVALID;
        }
        if ((__int128)t->exp - t->iat > max ||
            (__int128)t->exp - now > max + leeway) {
            return GD_JWT_LIFETIME_EXCEEDED;
        }
    }
    if (t->has_iat && now < (__int128)t->iat - leeway) {
        return GD_JWT_NOT_YET_VALID;
    }
    return GD_JWT_OK;
}

static void claims(const json_t *payload)
{
    static const int64_t cases[][3] = {
        {1700000000, 30, 0},
        {1700000000, 30, 3600},
        {0, INT64_MAX, INT64_MAX},
        {GD_JWT_DATE_MAX, 0, 1},
        {INT64_MIN, INT64_MIN, INT64_MAX},
        {INT64_MAX, 1, INT64_MIN},
    };
    gd_jwt_times_t t;

    no_nul(payload);

    if (gd_jwt_times(payload, &t) != GD_JWT_OK) {
        return;
    }

    if (t.exp < 0 || t.exp > GD_JWT_DATE_MAX ||
        (t.has_nbf && (t.nbf < 0 || t.nbf > GD_JWT_DATE_MAX)) ||
        (t.has_iat && (t.iat < 0 || t.iat > GD_JWT_DATE_MAX))) {
        abort();
    }

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (gd_jwt_check_times(&t, cases[i][0], cases[i][1], cases[i][2]) !=
            expect(&t, cases[i][0], cases[i][1], cases[i][2])) {
            abort();
        }
    }
}

static void as_token(const char *data, size_t size)
{
    gd_jwt_span_t part[3];
    uint8_t *seg[3] = {NULL, NULL, NULL};
    size_t len[3];
    gd_jwt_header_t h;
    gd_jwt_rc_t rc;
    json_t *payload;

    if (gd_jwt_split(data, size, part) != 0) {
        return;
    }

    for (int i = 0; i < 3; i++) {
        if (part[i].p < data || part[i].p + part[i].len > data + size) {
            abort();
        }
        seg[i] = malloc(GD_B64URL_DECODED_MAX(part[i].len));
        if (seg[i] == NULL ||
            gd_b64url_decode(part[i].p, part[i].len, seg[i], &len[i]) != 0) {
            goto done;
        }
    }

    if (gd_jwt_header(seg[0], len[0], &h) != GD_JWT_OK) {
        goto done;
    }
    json_decref(h.root);

    payload = gd_jwt_payload(seg[1], len[1], &rc);
    if (payload) {
        claims(payload);
        json_decref(payload);
    }

done:
    for (int i = 0; i < 3; i++) {
        free(seg[i]);
    }
}

static void as_segment(const char *data, size_t size)
{
    uint8_t *out, *again;
    size_t n;

    if (size > 4096) {
        return;
    }

    out = malloc(GD_B64URL_DECODED_MAX(size));
    again = malloc(size + 8);

    if (out && again && gd_b64url_decode(data, size, out, &n) == 0) {
        int m = EVP_EncodeBlock(again, out, (int)n);

        while (m > 0 && again[m - 1] == '=') {
            m--;
        }
        for (int i = 0; i < m; i++) {
            again[i] = again[i] == '+' ? '-' : again[i] == '/' ? '_' : again[i];
        }
        if ((size_t)m != size || memcmp(again, data, size) != 0 ||
            n != size / 4 * 3 + (size % 4 ? size % 4 - 1 : 0)) {
            abort();
        }
    }

    free(out);
    free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gd_jwt_header_t h;
    gd_jwt_rc_t rc;
    json_t *payload;

    as_token((const char *)data, size);
    as_segment((const char *)data, size);

    if (gd_jwt_header(data, size, &h) == GD_JWT_OK) {
        if (h.alg == NULL || (h.kid == NULL && h.kid_len != 0)) {
            abort();
        }
        json_decref(h.root);
    } else if (h.root != NULL) {
        abort();
    }

    payload = gd_jwt_payload(data, size, &rc);
    if ((payload != NULL) != (rc == GD_JWT_OK)) {
        abort();
    }
    if (payload) {
        claims(payload);
        json_decref(payload);
    }

    return 0;
}
