/*
 * Unit tests for gd_jwt: the compact serialization, canonical base64url,
 * header and payload JSON, NumericDates and the time checks (run under
 * ASan and UBSan: no check may overflow).
 */
#include "gd_jwt.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

static const char B64URL[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* decodes s; the bytes, or NULL when refused */
static const char *dec(const char *s, size_t *n)
{
    static uint8_t out[8192];

    if (gd_b64url_decode(s, strlen(s), out, n) != 0) {
        return NULL;
    }
    out[*n] = '\0';
    return (const char *)out;
}

static int dec_is(const char *s, const char *want)
{
    size_t n;
    const char *got = dec(s, &n);

    return got != NULL && n == strlen(want) && memcmp(got, want, n) == 0;
}

static int refused(const char *s)
{
    size_t n;

    return dec(s, &n) == NULL;
}

/* base64url of in (OpenSSL encodes; the alphabet is translated) */
static size_t enc(const uint8_t *in, size_t len, char *out)
{
    int n = EVP_EncodeBlock((unsigned char *)out, in, (int)len);

    while (n > 0 && out[n - 1] == '=') {
        n--;
    }
    for (int i = 0; i < n; i++) {
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    }
    out[n] = '\0';
    return (size_t)n;
}

static void test_split(void)
{
    gd_jwt_span_t p[3];

    TAP_OK(gd_jwt_split("a.bc.def", 8, p) == 0 && p[0].len == 1 &&
               p[1].len == 2 && p[2].len == 3 && memcmp(p[2].p, "def", 3) == 0,
           "split: three segments");
    TAP_OK(gd_jwt_split("..", 2, p) == 0 && p[0].len == 0 && p[1].len == 0 &&
               p[2].len == 0,
           "split: three empty segments");
    TAP_OK(gd_jwt_split("a.b", 3, p) != 0, "split: two segments refused");
    TAP_OK(gd_jwt_split("a.b.c.d", 7, p) != 0, "split: four segments refused");
    TAP_OK(gd_jwt_split("abc", 3, p) != 0, "split: one segment refused");
    TAP_OK(gd_jwt_split("a.b.c.", 5, p) == 0 && p[2].len == 1,
           "split: only len bytes are read");
}

static void test_b64url(void)
{
    /* RFC 4648 section 10, in the URL alphabet and without padding */
    TAP_OK(dec_is("", ""), "b64url: empty");
    TAP_OK(dec_is("Zg", "f") && dec_is("Zm8", "fo") && dec_is("Zm9v", "foo") &&
               dec_is("Zm9vYg", "foob") && dec_is("Zm9vYmE", "fooba") &&
               dec_is("Zm9vYmFy", "foobar"),
           "b64url: the RFC 4648 test vectors");
    TAP_OK(dec_is("-_-_", "\xfb\xff\xbf"), "b64url: - and _ are 62 and 63");

    TAP_OK(refused("Zh") && refused("Zm9"), "b64url: unused bits set refused");
    TAP_OK(refused("Zm9=") && refused("Zg==") && refused("Zm9v="),
           "b64url: padding refused");
    TAP_OK(refused("Zm+v") && refused("Zm/v"),
           "b64url: + and / (standard alphabet) refused");
    TAP_OK(refused("Z") && refused("Zm9vY"), "b64url: 4n+1 characters refused");
    TAP_OK(refused(" Zm9v") && refused("Zm9v ") && refused("Zm9v\n") &&
               refused("Zm\r\n9v") && refused("Zm9v\t"),
           "b64url: white space refused (OpenSSL would trim it)");
    TAP_OK(refused("Zm9v.") && refused("Zm9v*") && refused("Zm\x80v"),
           "b64url: other characters refused");

    /* exactly 64 / 2^unused spellings of a last character are canonical */
    int ok = 1;
    for (int tail = 2; tail <= 3; tail++) {
        int accepted = 0;
        for (int c = 0; c < 64; c++) {
            char s[4] = {'Q', 'Q', 'Q', '\0'};
            size_t n;

            s[tail - 1] = B64URL[c];
            s[tail] = '\0';
            if (dec(s, &n) != NULL) {
                accepted++;
                ok &= (n == (size_t)tail - 1);
            }
        }
        ok &= accepted == (tail == 2 ? 4 : 16);
    }
    TAP_OK(ok, "b64url: one canonical spelling per value of the last char");

    /* round trips across the chunk size, every tail length */
    uint8_t in[2000], out[2000 + 2];
    char text[2800];
    int round = 1;

    for (size_t i = 0; i < sizeof(in); i++) {
        in[i] = (uint8_t)(i * 131 + 7);
    }
    for (size_t len = 0; len <= sizeof(in); len += (len < 64 ? 1 : 97)) {
        size_t tl = enc(in, len, text), n = 0;

        if (gd_b64url_decode(text, tl, out, &n) != 0 || n != len ||
            memcmp(in, out, len) != 0) {
            round = 0;
        }
    }
    TAP_OK(round, "b64url: OpenSSL's encoding decodes back, 0..2000 bytes");

    /* a bad character past the first chunk is found */
    size_t tl = enc(in, 1500, text), n;
    text[1400] = '=';
    TAP_OK(gd_b64url_decode(text, tl, out, &n) != 0,
           "b64url: a bad character in a later chunk is refused");
}

static gd_jwt_rc_t header(const char *json, gd_jwt_header_t *h)
{
    return gd_jwt_header((const uint8_t *)json, strlen(json), h);
}

static void test_header(void)
{
    gd_jwt_header_t h;

    TAP_OK(header("{\"alg\":\"HS256\",\"kid\":\"k1\"}", &h) == GD_JWT_OK &&
               h.alg_len == 5 && memcmp(h.alg, "HS256", 5) == 0 &&
               h.kid_len == 2 && memcmp(h.kid, "k1", 2) == 0,
           "header: alg and kid");
    json_decref(h.root);
    TAP_OK(header("{\"alg\":\"RS256\"}", &h) == GD_JWT_OK && h.kid == NULL,
           "header: no kid");
    json_decref(h.root);
    TAP_OK(header("{\"alg\":\"HS256\",\"kid\":\"\"}", &h) == GD_JWT_OK &&
               h.kid != NULL && h.kid_len == 0,
           "header: an empty kid is a kid");
    json_decref(h.root);

    TAP_OK(header("{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", &h) ==
                   GD_JWT_CRIT &&
               h.root == NULL,
           "header: crit");
    TAP_OK(header("{\"kid\":\"k1\"}", &h) == GD_JWT_MALFORMED && !h.root,
           "header: no alg");
    TAP_OK(header("{\"alg\":256}", &h) == GD_JWT_MALFORMED,
           "header: alg a number");
    TAP_OK(header("{\"alg\":\"HS256\",\"kid\":7}", &h) == GD_JWT_MALFORMED,
           "header: kid a number");
    TAP_OK(header("[\"HS256\"]", &h) == GD_JWT_MALFORMED, "header: an array");
    TAP_OK(header("{\"alg\":\"HS256\",\"alg\":\"HS256\"}", &h) ==
               GD_JWT_MALFORMED,
           "header: a duplicate member");
    TAP_OK(header("{\"alg\":\"HS256\",\"kid\":\"rs256\\u0000x\"}", &h) ==
               GD_JWT_MALFORMED,
           "header: \\u0000 in the kid");
    TAP_OK(gd_jwt_header((const uint8_t *)"", 0, &h) == GD_JWT_MALFORMED,
           "header: empty");
}

static gd_jwt_rc_t payload(const char *json)
{
    gd_jwt_rc_t rc;
    json_t *p = gd_jwt_payload((const uint8_t *)json, strlen(json), &rc);

    if ((p != NULL) != (rc == GD_JWT_OK)) {
        return (gd_jwt_rc_t)-1;
    }
    json_decref(p);
    return rc;
}

static void test_payload(void)
{
    TAP_OK(payload("{\"sub\":\"alice\",\"exp\":1}") == GD_JWT_OK,
           "payload: an object");
    TAP_OK(payload("{\"sub\":\"al\\u0000ice\"}") == GD_JWT_CLAIM_INVALID,
           "payload: \\u0000 in a string");
    TAP_OK(payload("{\"x\":{\"y\":[\"\\u0000\"]}}") == GD_JWT_CLAIM_INVALID,
           "payload: \\u0000 in a nested string");
    TAP_OK(payload("{\"a\\u0000b\":1}") == GD_JWT_CLAIM_INVALID,
           "payload: \\u0000 in a member name");
    TAP_OK(payload("{\"exp\":9223372036854775808}") == GD_JWT_CLAIM_INVALID &&
               payload("{\"exp\":-9223372036854775809}") ==
                   GD_JWT_CLAIM_INVALID &&
               payload("{\"exp\":1e400}") == GD_JWT_CLAIM_INVALID,
           "payload: numbers beyond int64 and double");
    TAP_OK(payload("{\"sub\":\"\xff\"}") == GD_JWT_MALFORMED &&
               payload("{\"sub\":\"\xc0\x80\"}") == GD_JWT_MALFORMED,
           "payload: invalid UTF-8");
    TAP_OK(payload("{\"sub\":\"\\ud800\"}") == GD_JWT_MALFORMED,
           "payload: a lone surrogate");
    TAP_OK(payload("{\"sub\":\"a\x01\"}") == GD_JWT_MALFORMED,
           "payload: a raw control character");
    TAP_OK(payload("[1]") == GD_JWT_MALFORMED &&
               payload("\"x\"") == GD_JWT_MALFORMED,
           "payload: not an object");
    TAP_OK(payload("{\"a\":1,\"a\":2}") == GD_JWT_MALFORMED,
           "payload: a duplicate member");
}

static gd_jwt_rc_t date(const char *json, int64_t *v)
{
    json_t *p = json_loads(json, 0, NULL);
    gd_jwt_rc_t rc = gd_jwt_date(p, "exp", v);

    json_decref(p);
    return rc;
}

static void test_dates(void)
{
    int64_t v = -7;
    gd_jwt_times_t t;

    TAP_OK(date("{\"exp\":0}", &v) == GD_JWT_OK && v == 0, "date: 0");
    TAP_OK(date("{\"exp\":253402300799}", &v) == GD_JWT_OK &&
               v == GD_JWT_DATE_MAX,
           "date: 9999-12-31T23:59:59Z");
    TAP_OK(date("{\"exp\":1700000000.9}", &v) == GD_JWT_OK && v == 1700000000,
           "date: a fraction is dropped");
    TAP_OK(date("{\"exp\":253402300799.5}", &v) == GD_JWT_OK &&
               v == GD_JWT_DATE_MAX,
           "date: the last second with a fraction");
    TAP_OK(date("{}", &v) == GD_JWT_ABSENT, "date: absent");

    static const char *bad[] = {"{\"exp\":253402300800}",
                                "{\"exp\":-1}",
                                "{\"exp\":-0.5}",
                                "{\"exp\":9223372036854775807}",
                                "{\"exp\":-9223372036854775807}",
                                "{\"exp\":-9223372036854775808}",
                                "{\"exp\":1e300}",
                                "{\"exp\":-1e300}",
                                "{\"exp\":1.7976931348623157e308}",
                                "{\"exp\":253402300800.0}",
                                "{\"exp\":\"1\"}",
                                "{\"exp\":\"NaN\"}",
                                "{\"exp\":null}",
                                "{\"exp\":true}",
                                "{\"exp\":[1]}",
                                "{\"exp\":{}}",
                                NULL};
    int all = 1;
    for (int i = 0; bad[i]; i++) {
        if (date(bad[i], &v) != GD_JWT_CLAIM_INVALID) {
            all = 0;
            printf("# not refused: %s\n", bad[i]);
        }
    }
    TAP_OK(all, "date: out of range or not a number: claim invalid");

    json_t *p = json_loads("{\"exp\":100,\"iat\":50}", 0, NULL);
    TAP_OK(gd_jwt_times(p, &t) == GD_JWT_OK && t.exp == 100 && t.iat == 50 &&
               t.has_iat && !t.has_nbf,
           "times: exp and iat");
    json_decref(p);
    p = json_loads("{\"iat\":50}", 0, NULL);
    TAP_OK(gd_jwt_times(p, &t) == GD_JWT_CLAIM_INVALID, "times: no exp");
    json_decref(p);
    p = json_loads("{\"exp\":100,\"nbf\":-9223372036854775807}", 0, NULL);
    TAP_OK(gd_jwt_times(p, &t) == GD_JWT_CLAIM_INVALID, "times: nbf huge");
    json_decref(p);
    p = json_loads("{\"exp\":100,\"iat\":\"x\"}", 0, NULL);
    TAP_OK(gd_jwt_times(p, &t) == GD_JWT_CLAIM_INVALID, "times: iat a string");
    json_decref(p);
}

static gd_jwt_rc_t check(int64_t exp, int has_nbf, int64_t nbf, int has_iat,
                         int64_t iat, int64_t now, int64_t leeway, int64_t max)
{
    gd_jwt_times_t t = {.exp = exp, .nbf = nbf, .iat = iat};

    t.has_nbf = has_nbf ? 1 : 0;
    t.has_iat = has_iat ? 1 : 0;
    return gd_jwt_check_times(&t, now, leeway, max);
}

static void test_checks(void)
{
    const int64_t N = 1700000000, D = GD_JWT_DATE_MAX;

    TAP_OK(check(N + 60, 0, 0, 0, 0, N, 30, 0) == GD_JWT_OK, "check: valid");
    TAP_OK(check(N - 30, 0, 0, 0, 0, N, 30, 0) == GD_JWT_EXPIRED &&
               check(N - 29, 0, 0, 0, 0, N, 30, 0) == GD_JWT_OK,
           "check: expired at exp + leeway");
    TAP_OK(check(N + 60, 1, N + 31, 0, 0, N, 30, 0) == GD_JWT_NOT_YET_VALID &&
               check(N + 60, 1, N + 30, 0, 0, N, 30, 0) == GD_JWT_OK,
           "check: nbf with leeway");
    TAP_OK(check(N + 60, 0, 0, 1, N + 31, N, 30, 0) == GD_JWT_NOT_YET_VALID &&
               check(N + 60, 0, 0, 1, N + 30, N, 30, 0) == GD_JWT_OK,
           "check: iat in the future, without a maximum lifetime too");

    TAP_OK(check(N + 60, 0, 0, 0, 0, N, 30, 3600) == GD_JWT_CLAIM_INVALID,
           "check: no iat with a maximum lifetime");
    TAP_OK(check(N + 7200, 0, 0, 1, N, N, 30, 3600) == GD_JWT_LIFETIME_EXCEEDED,
           "check: exp - iat over the maximum");
    TAP_OK(check(N + 3600, 0, 0, 1, N - 1, N, 30, 3600) ==
               GD_JWT_LIFETIME_EXCEEDED,
           "check: stated lifetime 1h+1s");
    /* the bypass: a ten-year token that says it was issued a minute ago */
    int64_t ten = N + 10 * 365 * 86400LL;
    TAP_OK(check(ten, 0, 0, 1, ten - 60, N, 30, 3600) ==
               GD_JWT_LIFETIME_EXCEEDED,
           "check: ten-year token with iat = exp - 60");
    TAP_OK(check(N + 3630, 0, 0, 1, N + 30, N, 30, 3600) == GD_JWT_OK &&
               check(N + 3631, 0, 0, 1, N + 30, N, 30, 3600) ==
                   GD_JWT_LIFETIME_EXCEEDED,
           "check: exp - now up to max + leeway");
    TAP_OK(check(N + 1800, 0, 0, 1, N + 600, N, 30, 3600) ==
               GD_JWT_NOT_YET_VALID,
           "check: iat in the future with a maximum lifetime");

    /* the extremes: nothing overflows (UBSan would abort) */
    TAP_OK(check(D, 1, D, 1, 0, 0, INT64_MAX, INT64_MAX) == GD_JWT_OK,
           "check: largest dates, leeway and lifetime");
    TAP_OK(check(0, 1, D, 1, D, D, INT64_MAX, INT64_MAX) == GD_JWT_OK,
           "check: now at the end, exp at the start, huge leeway");
    TAP_OK(check(0, 0, 0, 1, D, D, 0, INT64_MAX) == GD_JWT_EXPIRED,
           "check: exp 0 at the end of time");
    TAP_OK(check(D, 0, 0, 1, 0, 0, 0, 1) == GD_JWT_LIFETIME_EXCEEDED,
           "check: the longest lifetime");
    TAP_OK(check(D, 0, 0, 0, 0, INT64_MIN, INT64_MIN, INT64_MIN) == GD_JWT_OK,
           "check: negative now, leeway and lifetime are clamped");
    TAP_OK(check(INT64_MAX, 0, 0, 0, 0, N, 30, 0) == GD_JWT_CLAIM_INVALID &&
               check(N, 1, INT64_MIN, 0, 0, N, 30, 0) == GD_JWT_CLAIM_INVALID &&
               check(N, 0, 0, 1, -9223372036854775807LL, N, 30, 3600) ==
                   GD_JWT_CLAIM_INVALID,
           "check: dates out of range (as from a corrupt cache) refused");
}

int main(void)
{
    test_split();
    test_b64url();
    test_header();
    test_payload();
    test_dates();
    test_checks();

    return tap_done();
}
