/*
 * Unit tests for gd_soc: durations and times, refusals and reviews, the
 * newest-N selection against a brute force, reading the journal's
 * segments in order, base64url, and private JWKs as PEM.
 */
#include "gd_journal.h"
#include "gd_soc.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

static int64_t dur(const char *s)
{
    int64_t ms;
    return gd_soc_parse_duration(s, &ms) == 0 ? ms : -1;
}

static int64_t at(const char *s)
{
    int64_t ms;
    return gd_soc_parse_time(s, 1000000000000LL, &ms) == 0 ? ms : -1;
}

static int refusal(const char *text)
{
    json_t *rec = json_loads(text, 0, NULL);
    int r = gd_soc_is_refusal(rec);
    json_decref(rec);
    return r;
}

/* the newest-N selection against sorting everything */

static int cmp_desc(const void *a, const void *b)
{
    const int64_t *x = a, *y = b;
    /* [0] ts, [1] seq: newest first, later first on ties */
    if (x[0] != y[0]) {
        return x[0] > y[0] ? -1 : 1;
    }
    return x[1] > y[1] ? -1 : x[1] < y[1];
}

static int top_matches_sort(unsigned seed, size_t n, size_t limit)
{
    int64_t(*all)[2] = malloc(n * sizeof(*all));
    gd_soc_top_t top;
    int ok = 1;

    srand(seed);
    gd_soc_top_init(&top, limit);
    for (size_t i = 0; i < n; i++) {
        json_t *rec = json_integer((json_int_t)i);
        all[i][0] = rand() % 50; /* many ties */
        all[i][1] = (int64_t)i;
        gd_soc_top_offer(&top, rec, all[i][0], (uint64_t)i);
        json_decref(rec);
    }
    gd_soc_top_sort(&top);
    qsort(all, n, sizeof(*all), cmp_desc);

    size_t want = limit && limit < n ? limit : n;
    ok = top.n == want && top.seen == n;
    for (size_t i = 0; ok && i < want; i++) {
        ok = top.v[i].ts == all[i][0] && (int64_t)top.v[i].seq == all[i][1] &&
             json_integer_value(top.v[i].rec) == all[i][1];
    }

    gd_soc_top_free(&top);
    free(all);
    return ok;
}

/* the journal reader */

typedef struct {
    char seen[1024];
} scan_t;

static int scan_cb(json_t *rec, const char *segment, uint64_t line, void *arg)
{
    scan_t *s = arg;
    char item[128];

    snprintf(item, sizeof(item), "%s:%llu:%lld ", segment + 8,
             (unsigned long long)line,
             (long long)json_integer_value(json_object_get(rec, "n")));
    strncat(s->seen, item, sizeof(s->seen) - strlen(s->seen) - 1);
    return json_integer_value(json_object_get(rec, "n")) == 99 ? 7 : 0;
}

static void spit(const char *dir, const char *name, const char *text)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

/* JWK members from an OpenSSL key */

static char *b64url(const unsigned char *p, size_t len)
{
    static const char abc[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *out = malloc(len * 4 / 3 + 4);
    size_t o = 0, i;
    uint32_t acc = 0;
    int bits = 0;

    for (i = 0; i < len; i++) {
        acc = (acc << 8) | p[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[o++] = abc[(acc >> bits) & 63];
        }
    }
    if (bits) {
        out[o++] = abc[(acc << (6 - bits)) & 63];
    }
    out[o] = '\0';
    return out;
}

static void set_bn(json_t *jwk, const char *key, EVP_PKEY *pkey,
                   const char *param, int size)
{
    BIGNUM *bn = NULL;
    unsigned char buf[1024];
    int len;
    char *text;

    EVP_PKEY_get_bn_param(pkey, param, &bn);
    len = size ? BN_bn2binpad(bn, buf, size) : BN_bn2bin(bn, buf);
    text = b64url(buf, (size_t)len);
    json_object_set_new(jwk, key, json_string(text));
    free(text);
    BN_free(bn);
}

static int pem_same_key(const char *pem, EVP_PKEY *want)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *got = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    int same = got && EVP_PKEY_eq(got, want) == 1;

    EVP_PKEY_free(got);
    BIO_free(bio);
    return same;
}

int main(void)
{
    char buf[64], err[256];

    /* durations */
    TAP_OK(dur("90") == 90000, "a bare number is seconds");
    TAP_OK(dur("30m") == 1800000, "30m");
    TAP_OK(dur("1h30m") == 5400000, "1h30m");
    TAP_OK(dur("2d") == 172800000, "2d");
    TAP_OK(dur("1w") == 604800000, "1w");
    TAP_OK(dur("45s") == 45000, "45s");
    TAP_OK(dur("") < 0 && dur("h") < 0 && dur("1x") < 0 && dur("1h30") < 0 &&
               dur("-1h") < 0 && dur("1.5h") < 0,
           "bad durations are refused");
    TAP_OK(dur("99999999999999999999d") < 0 && dur("40000w") < 0,
           "absurd durations are refused");

    /* times */
    TAP_OK(at("1h") == 1000000000000LL - 3600000, "a duration is before now");
    TAP_OK(at("2024-05-01") == 1714521600000LL, "a date is its midnight UTC");
    TAP_OK(at("2024-05-01T12:00:00Z") == 1714564800000LL, "a UTC time");
    TAP_OK(at("2024-05-01T12:00:00") == 1714564800000LL, "no zone: UTC");
    TAP_OK(at("2024-05-01 12:00") == 1714564800000LL, "a space, no seconds");
    TAP_OK(at("2024-05-01T14:00:00+02:00") == 1714564800000LL,
           "an offset east");
    TAP_OK(at("2024-05-01T07:00:00-0500") == 1714564800000LL,
           "an offset west, without a colon");
    TAP_OK(at("2024-05-01T12:00:00.25Z") == 1714564800250LL,
           "fractional seconds");
    TAP_OK(at("2024-02-29") > 0 && at("2023-02-29") < 0, "leap days");
    TAP_OK(at("2024-13-01") < 0 && at("2024-05-01T24:00") < 0 &&
               at("2024-05-01T12:00Zjunk") < 0 && at("24-05-01") < 0 &&
               at("yesterday") < 0 && at("2024-05-01T12") < 0,
           "bad times are refused");

    gd_soc_format_time(1714564800250LL, 1, buf, sizeof(buf));
    TAP_OK(strcmp(buf, "2024-05-01T12:00:00.250Z") == 0, "format with ms: %s",
           buf);
    gd_soc_format_time(1714564800250LL, 0, buf, sizeof(buf));
    TAP_OK(strcmp(buf, "2024-05-01T12:00:00Z") == 0, "format: %s", buf);

    /* ages, in words */
    {
        static const struct {
            int64_t ago_ms;
            const char *words;
        } ages[] = {
            {0, "0 seconds ago"},       {999, "0 seconds ago"},
            {1000, "1 second ago"},     {1999, "1 second ago"},
            {2000, "2 seconds ago"},    {59999, "59 seconds ago"},
            {60000, "1 minute ago"},    {119999, "1 minute ago"},
            {120000, "2 minutes ago"},  {3599999, "59 minutes ago"},
            {3600000, "1 hour ago"},    {7200000, "2 hours ago"},
            {86399999, "23 hours ago"}, {86400000, "1 day ago"},
            {172800000, "2 days ago"},  {-1000, "in the future"},
        };
        int64_t now = 1714564800250LL;

        for (size_t i = 0; i < sizeof(ages) / sizeof(ages[0]); i++) {
            gd_soc_format_age(now - ages[i].ago_ms, now, buf, sizeof(buf));
            TAP_OK(strcmp(buf, ages[i].words) == 0, "%lld ms ago: %s",
                   (long long)ages[i].ago_ms, buf);
        }
    }

    /* refusals and reviews */
    TAP_OK(refusal("{\"outcome\":\"deny\"}"), "outcome deny");
    TAP_OK(refusal("{\"outcome\":\"shadow_deny\"}"), "outcome shadow_deny");
    TAP_OK(refusal("{\"reason\":\"token_missing\",\"status\":401}"),
           "a reason and a 4xx status");
    TAP_OK(!refusal("{\"reason\":\"x\",\"status\":200}"), "not with a 2xx");
    TAP_OK(!refusal("{\"status\":500}"), "not without a reason");
    TAP_OK(!refusal("{\"outcome\":\"allow\"}"), "not an allow");
    TAP_OK(!refusal("{\"kind\":\"review\",\"outcome\":\"deny\","
                    "\"reason\":\"x\",\"status\":403}"),
           "never a review");
    TAP_OK(!refusal("[1]"), "not an array");

    /* the newest N */
    TAP_OK(top_matches_sort(1, 1000, 50), "top 50 of 1000 with ties");
    TAP_OK(top_matches_sort(2, 1000, 1), "top 1");
    TAP_OK(top_matches_sort(3, 30, 50), "fewer than the limit");
    TAP_OK(top_matches_sort(4, 500, 0), "limit 0: all of them");
    TAP_OK(top_matches_sort(5, 0, 10), "none");

    /* reading the journal */
    char dir[] = "/tmp/gd-soc-XXXXXX";
    scan_t s = {{0}};
    uint64_t skipped = 0;
    TAP_OK(mkdtemp(dir) != NULL, "a scratch directory");
    spit(dir, "journal-000002.jsonl", "{\"n\":3}\n{\"n\":4}\n{\"n\":5}");
    spit(dir, "journal-000001.jsonl", "{\"n\":1}\nnot json\n[2]\n{\"n\":2}\n");
    spit(dir, "journal-1.jsonl", "{\"n\":-1}\n");
    spit(dir, "notes.txt", "{\"n\":-2}\n");
    TAP_OK(gd_journal_scan(dir, scan_cb, &s, &skipped, err, sizeof(err)) == 0,
           "scan");
    TAP_OK(strcmp(s.seen, "000001.jsonl:1:1 000001.jsonl:4:2 "
                          "000002.jsonl:1:3 000002.jsonl:2:4 "
                          "000002.jsonl:3:5 ") == 0,
           "segments in order, only segments, lines numbered: %s", s.seen);
    TAP_OK(skipped == 2, "unreadable lines are counted: %llu",
           (unsigned long long)skipped);
    spit(dir, "journal-000003.jsonl", "{\"n\":99}\n{\"n\":100}\n");
    s.seen[0] = '\0';
    TAP_OK(gd_journal_scan(dir, scan_cb, &s, NULL, err, sizeof(err)) == 7,
           "a callback stops the scan with its value");
    TAP_OK(strstr(s.seen, ":100") == NULL, "and nothing after it is read");
    TAP_OK(gd_journal_scan("/nonexistent/x", scan_cb, &s, NULL, err,
                           sizeof(err)) == -1 &&
               strstr(err, "/nonexistent/x") != NULL,
           "a missing directory: %s", err);
    {
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        TAP_OK(system(cmd) == 0, "cleaned up");
    }

    /* base64url */
    size_t len;
    unsigned char *b = gd_soc_b64url_decode("aGVsbG8", &len);
    TAP_OK(b && len == 5 && memcmp(b, "hello", 5) == 0, "base64url");
    free(b);
    b = gd_soc_b64url_decode("aGVsbG8=", &len);
    TAP_OK(b && len == 5, "padding is accepted");
    free(b);
    b = gd_soc_b64url_decode("_-8", &len);
    TAP_OK(b && len == 2 && b[0] == 0xff && b[1] == 0xef, "- and _");
    free(b);
    TAP_OK(gd_soc_b64url_decode("a", &len) == NULL &&
               gd_soc_b64url_decode("a*bc", &len) == NULL,
           "bad base64url is refused");

    /* private JWKs as PEM: EC */
    EVP_PKEY *ec = EVP_EC_gen("P-256");
    json_t *jwk = json_pack("{s:s, s:s}", "kty", "EC", "crv", "P-256");
    set_bn(jwk, "x", ec, OSSL_PKEY_PARAM_EC_PUB_X, 32);
    set_bn(jwk, "y", ec, OSSL_PKEY_PARAM_EC_PUB_Y, 32);
    set_bn(jwk, "d", ec, OSSL_PKEY_PARAM_PRIV_KEY, 32);
    char *pem = gd_soc_jwk_to_pem(jwk, err, sizeof(err));
    TAP_OK(pem && pem_same_key(pem, ec), "an EC JWK becomes its PEM key");
    TAP_OK(pem && gd_soc_pem_check(pem, strlen(pem), "ES256", err,
                                   sizeof(err)) == 0,
           "which signs ES256");
    TAP_OK(pem && gd_soc_pem_check(pem, strlen(pem), "ES384", err,
                                   sizeof(err)) != 0,
           "and not ES384: %s", err);
    TAP_OK(pem && gd_soc_pem_check(pem, strlen(pem), "RS256", err,
                                   sizeof(err)) != 0,
           "nor RS256: %s", err);
    free(pem);

    EVP_PKEY *ec2 = EVP_EC_gen("P-256");
    set_bn(jwk, "d", ec2, OSSL_PKEY_PARAM_PRIV_KEY, 32);
    pem = gd_soc_jwk_to_pem(jwk, err, sizeof(err));
    TAP_OK(pem == NULL, "a d of another key is refused: %s", err);
    free(pem);
    json_object_del(jwk, "d");
    pem = gd_soc_jwk_to_pem(jwk, err, sizeof(err));
    TAP_OK(pem == NULL && strstr(err, "\"d\""), "a public JWK: %s", err);
    free(pem);
    json_object_set_new(jwk, "crv", json_string("P-192"));
    pem = gd_soc_jwk_to_pem(jwk, err, sizeof(err));
    TAP_OK(pem == NULL, "an unknown curve: %s", err);
    free(pem);
    json_decref(jwk);
    EVP_PKEY_free(ec2);
    EVP_PKEY_free(ec);

    /* RSA */
    EVP_PKEY *rsa = EVP_RSA_gen(2048);
    jwk = json_pack("{s:s}", "kty", "RSA");
    set_bn(jwk, "n", rsa, OSSL_PKEY_PARAM_RSA_N, 0);
    set_bn(jwk, "e", rsa, OSSL_PKEY_PARAM_RSA_E, 0);
    set_bn(jwk, "d", rsa, OSSL_PKEY_PARAM_RSA_D, 0);
    set_bn(jwk, "p", rsa, OSSL_PKEY_PARAM_RSA_FACTOR1, 0);
    set_bn(jwk, "q", rsa, OSSL_PKEY_PARAM_RSA_FACTOR2, 0);
    set_bn(jwk, "dp", rsa, OSSL_PKEY_PARAM_RSA_EXPONENT1, 0);
    set_bn(jwk, "dq", rsa, OSSL_PKEY_PARAM_RSA_EXPONENT2, 0);
    set_bn(jwk, "qi", rsa, OSSL_PKEY_PARAM_RSA_COEFFICIENT1, 0);
    pem = gd_soc_jwk_to_pem(jwk, err, sizeof(err));
    TAP_OK(pem && pem_same_key(pem, rsa), "an RSA JWK becomes its PEM key");
    TAP_OK(pem && gd_soc_pem_check(pem, strlen(pem), "RS384", err,
                                   sizeof(err)) == 0,
           "which signs RS384");
    free(pem);
    json_object_del(jwk, "qi");
    pem = gd_soc_jwk_to_pem(jwk, err, sizeof(err));
    TAP_OK(pem == NULL && strstr(err, "qi"), "a missing member: %s", err);
    free(pem);
    json_decref(jwk);
    EVP_PKEY_free(rsa);

    jwk = json_pack("{s:s, s:s}", "kty", "oct", "k", "abc");
    pem = gd_soc_jwk_to_pem(jwk, err, sizeof(err));
    TAP_OK(pem == NULL, "an oct key has no PEM: %s", err);
    free(pem);
    json_decref(jwk);

    TAP_OK(gd_soc_pem_check("junk", 4, "RS256", err, sizeof(err)) != 0,
           "not PEM: %s", err);

    return tap_done();
}
