/*
 * gd_jwt: the nginx-free part of JWT handling, see gd_jwt.h.
 */
#include "gd_jwt.h"

#include <math.h>
#include <string.h>

#include <openssl/evp.h>

/* characters translated to the standard alphabet at a time (4n) */
#define GD_B64URL_CHUNK 512

int gd_jwt_split(const char *token, size_t len, gd_jwt_span_t part[3])
{
    const char *p = token, *last = token + len, *dot;

    for (int i = 0; i < 2; i++) {
        dot = memchr(p, '.', (size_t)(last - p));
        if (dot == NULL) {
            return -1;
        }

        part[i].p = p;
        part[i].len = (size_t)(dot - p);
        p = dot + 1;
    }

    if (memchr(p, '.', (size_t)(last - p)) != NULL) {
        return -1;
    }

    part[2].p = p;
    part[2].len = (size_t)(last - p);

    return 0;
}

/*
 * The base64url alphabet (RFC 4648 section 5) in the standard one that
 * OpenSSL decodes; 0 for every other character, "+", "/" and "=" too.
 */
static const unsigned char gd_b64url_std[256] = {
    ['A'] = 'A', ['B'] = 'B', ['C'] = 'C', ['D'] = 'D', ['E'] = 'E',
    ['F'] = 'F', ['G'] = 'G', ['H'] = 'H', ['I'] = 'I', ['J'] = 'J',
    ['K'] = 'K', ['L'] = 'L', ['M'] = 'M', ['N'] = 'N', ['O'] = 'O',
    ['P'] = 'P', ['Q'] = 'Q', ['R'] = 'R', ['S'] = 'S', ['T'] = 'T',
    ['U'] = 'U', ['V'] = 'V', ['W'] = 'W', ['X'] = 'X', ['Y'] = 'Y',
    ['Z'] = 'Z', ['a'] = 'a', ['b'] = 'b', ['c'] = 'c', ['d'] = 'd',
    ['e'] = 'e', ['f'] = 'f', ['g'] = 'g', ['h'] = 'h', ['i'] = 'i',
    ['j'] = 'j', ['k'] = 'k', ['l'] = 'l', ['m'] = 'm', ['n'] = 'n',
    ['o'] = 'o', ['p'] = 'p', ['q'] = 'q', ['r'] = 'r', ['s'] = 's',
    ['t'] = 't', ['u'] = 'u', ['v'] = 'v', ['w'] = 'w', ['x'] = 'x',
    ['y'] = 'y', ['z'] = 'z', ['0'] = '0', ['1'] = '1', ['2'] = '2',
    ['3'] = '3', ['4'] = '4', ['5'] = '5', ['6'] = '6', ['7'] = '7',
    ['8'] = '8', ['9'] = '9', ['-'] = '+', ['_'] = '/'};

/* copies n characters in the standard alphabet; -1 for one outside */
static int gd_b64url_std_copy(const char *in, size_t n, unsigned char *buf)
{
    int ok = 1;

    for (size_t i = 0; i < n; i++) {
        buf[i] = gd_b64url_std[(unsigned char)in[i]];
        ok &= buf[i] != 0;
    }

    return ok ? 0 : -1;
}

int gd_b64url_decode(const char *in, size_t len, uint8_t *out, size_t *out_len)
{
    unsigned char buf[GD_B64URL_CHUNK];
    size_t rest = len % 4, full = len - rest, n = 0;

    if (rest == 1) {
        return -1;
    }

    /* whole quanta, a chunk at a time */

    for (size_t off = 0; off < full;) {
        size_t k = full - off < GD_B64URL_CHUNK ? full - off : GD_B64URL_CHUNK;

        if (gd_b64url_std_copy(in + off, k, buf) != 0 ||
            EVP_DecodeBlock(out + n, buf, (int)k) != (int)(k / 4 * 3)) {
            return -1;
        }

        n += k / 4 * 3;
        off += k;
    }

    /*
     * The last 2 or 3 characters, completed with "A" (zero bits) rather
     * than "=": the quantum then decodes to 3 bytes, and the byte past the
     * real ones holds exactly the unused low bits of the last character,
     * which must be zero (RFC 4648 section 3.5).
     */

    if (rest) {
        unsigned char q[4] = {'A', 'A', 'A', 'A'}, b[3];

        if (gd_b64url_std_copy(in + full, rest, q) != 0 ||
            EVP_DecodeBlock(b, q, 4) != 3 || b[rest - 1] != 0) {
            return -1;
        }

        memcpy(out + n, b, rest - 1);
        n += rest - 1;
    }

    *out_len = n;

    return 0;
}

gd_jwt_rc_t gd_jwt_header(const uint8_t *text, size_t len, gd_jwt_header_t *h)
{
    json_t *v;
    json_error_t err;

    memset(h, 0, sizeof(*h));

    h->root = json_loadb((const char *)text, len, GD_JWT_JSON_FLAGS, &err);

    v = json_object_get(h->root, "alg");

    if (!json_is_object(h->root) || !json_is_string(v)) {
        goto malformed;
    }

    h->alg = json_string_value(v);
    h->alg_len = json_string_length(v);

    if (json_object_get(h->root, "crit") != NULL) {
        json_decref(h->root);
        h->root = NULL;
        return GD_JWT_CRIT;
    }

    v = json_object_get(h->root, "kid");

    if (v != NULL) {
        if (!json_is_string(v)) {
            goto malformed;
        }

        h->kid = json_string_value(v);
        h->kid_len = json_string_length(v);
    }

    return GD_JWT_OK;

malformed:

    json_decref(h->root);
    memset(h, 0, sizeof(*h));

    return GD_JWT_MALFORMED;
}

json_t *gd_jwt_payload(const uint8_t *text, size_t len, gd_jwt_rc_t *rc)
{
    json_t *payload;
    json_error_t err;

    payload = json_loadb((const char *)text, len, GD_JWT_JSON_FLAGS, &err);

    if (payload == NULL) {
        switch (json_error_code(&err)) {
        case json_error_null_character:
        case json_error_null_byte_in_key:
        case json_error_numeric_overflow:
            *rc = GD_JWT_CLAIM_INVALID;
            break;
        default:
            *rc = GD_JWT_MALFORMED;
        }

        return NULL;
    }

    if (!json_is_object(payload)) {
        json_decref(payload);
        *rc = GD_JWT_MALFORMED;
        return NULL;
    }

    *rc = GD_JWT_OK;

    return payload;
}

gd_jwt_rc_t gd_jwt_date(const json_t *payload, const char *name, int64_t *value)
{
    json_t *v = json_object_get(payload, name);

    if (v == NULL) {
        return GD_JWT_ABSENT;
    }

    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);

        if (i < 0 || i > GD_JWT_DATE_MAX) {
            return GD_JWT_CLAIM_INVALID;
        }

        *value = (int64_t)i;
        return GD_JWT_OK;
    }

    if (json_is_real(v)) {
        /* a fraction is allowed (RFC 7519 section 2); whole seconds kept */
        double d = json_real_value(v);

        if (!isfinite(d) || d < 0 || d >= (double)GD_JWT_DATE_MAX + 1) {
            return GD_JWT_CLAIM_INVALID;
        }

        *value = (int64_t)d;
        return GD_JWT_OK;
    }

    return GD_JWT_CLAIM_INVALID;
}

gd_jwt_rc_t gd_jwt_times(const json_t *payload, gd_jwt_times_t *t)
{
    gd_jwt_rc_t rc;

    memset(t, 0, sizeof(*t));

    if (gd_jwt_date(payload, "exp", &t->exp) != GD_JWT_OK) {
        /* "exp" is always required */
        return GD_JWT_CLAIM_INVALID;
    }

    rc = gd_jwt_date(payload, "nbf", &t->nbf);
    if (rc == GD_JWT_CLAIM_INVALID) {
        return rc;
    }

    t->has_nbf = (rc == GD_JWT_OK);

    rc = gd_jwt_date(payload, "iat", &t->iat);
    if (rc == GD_JWT_CLAIM_INVALID) {
        return rc;
    }

    t->has_iat = (rc == GD_JWT_OK);

    return GD_JWT_OK;
}

static int gd_jwt_date_ok(int64_t d)
{
    return d >= 0 && d <= GD_JWT_DATE_MAX;
}

gd_jwt_rc_t gd_jwt_check_times(const gd_jwt_times_t *t, int64_t now,
                               int64_t leeway, int64_t max_lifetime)
{
    int64_t left;

    /*
     * Every date and now lie within 0 .. GD_JWT_DATE_MAX, so a difference
     * of two of them cannot overflow, and the leeway and the lifetime are
     * only ever compared with such a difference, never added to a date.
     */

    if (!gd_jwt_date_ok(t->exp) || (t->has_nbf && !gd_jwt_date_ok(t->nbf)) ||
        (t->has_iat && !gd_jwt_date_ok(t->iat))) {
        return GD_JWT_CLAIM_INVALID;
    }

    if (now < 0) {
        now = 0;
    } else if (now > GD_JWT_DATE_MAX) {
        now = GD_JWT_DATE_MAX;
    }

    if (leeway < 0) {
        leeway = 0;
    }

    /* now >= exp + leeway */
    if (now - t->exp >= leeway) {
        return GD_JWT_EXPIRED;
    }

    /* now < nbf - leeway */
    if (t->has_nbf && t->nbf - now > leeway) {
        return GD_JWT_NOT_YET_VALID;
    }

    if (max_lifetime > 0) {
        if (!t->has_iat) {
            return GD_JWT_CLAIM_INVALID;
        }

        /* the lifetime the token states */
        if (t->exp - t->iat > max_lifetime) {
            return GD_JWT_LIFETIME_EXCEEDED;
        }

        /* the time it has left, whatever "iat" says: exp - now > max + lw */
        left = t->exp - now;

        if (left > 0 && left - leeway > max_lifetime) {
            return GD_JWT_LIFETIME_EXCEEDED;
        }
    }

    /* issued in the future: now < iat - leeway */
    if (t->has_iat && t->iat - now > leeway) {
        return GD_JWT_NOT_YET_VALID;
    }

    return GD_JWT_OK;
}
