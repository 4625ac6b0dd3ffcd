/*
 * gd_soc: guardctl's SOC helpers, see gd_soc.h.
 */
#include "gd_soc.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

/* a hundred years: longer durations are a mistake */
#define GD_SOC_MAX_MS ((int64_t)100 * 366 * 86400 * 1000)

/* durations and times */

int gd_soc_parse_duration(const char *s, int64_t *ms)
{
    int64_t total = 0;
    const char *p = s;

    if (s == NULL || *s == '\0') {
        return -1;
    }

    while (*p) {
        int64_t n = 0, unit;

        if (!isdigit((unsigned char)*p)) {
            return -1;
        }
        while (isdigit((unsigned char)*p)) {
            n = n * 10 + (*p++ - '0');
            if (n > GD_SOC_MAX_MS) {
                return -1;
            }
        }

        switch (*p) {
        case '\0':
            /* a bare number is seconds, and only alone */
            if (p != s + strspn(s, "0123456789")) {
                return -1;
            }
            unit = 1000;
            break;
        case 's':
            unit = 1000;
            break;
        case 'm':
            unit = 60 * 1000;
            break;
        case 'h':
            unit = 3600 * 1000;
            break;
        case 'd':
            unit = 86400 * 1000;
            break;
        case 'w':
            unit = 7 * 86400 * 1000;
            break;
        default:
            return -1;
        }
        if (*p) {
            p++;
        }

        if (n > GD_SOC_MAX_MS / unit || total + n * unit > GD_SOC_MAX_MS) {
            return -1;
        }
        total += n * unit;
    }

    *ms = total;
    return 0;
}

/* exactly n digits */
static int digits(const char **p, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i])) {
            return -1;
        }
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

static int days_in_month(int y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

static int parse_iso(const char *s, int64_t *ms)
{
    const char *p = s;
    int y, mo, d, h = 0, mi = 0, sec = 0, frac = 0, off = 0;
    struct tm tm = {0};
    time_t t;

    if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' ||
        digits(&p, 2, &d)) {
        return -1;
    }
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo)) {
        return -1;
    }

    if (*p == 'T' || *p == 't' || *p == ' ') {
        p++;
        if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi)) {
            return -1;
        }
        if (*p == ':') {
            p++;
            if (digits(&p, 2, &sec)) {
                return -1;
            }
            if (*p == '.' || *p == ',') {
                int scale = 100;
                p++;
                if (!isdigit((unsigned char)*p)) {
                    return -1;
                }
                while (isdigit((unsigned char)*p)) {
                    frac += (*p++ - '0') * scale;
                    scale /= 10;
                }
            }
        }
        if (h > 23 || mi > 59 || sec > 59) {
            return -1;
        }

        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int sign = *p++ == '-' ? -1 : 1, oh, om = 0;
            if (digits(&p, 2, &oh)) {
                return -1;
            }
            if (*p == ':') {
                p++;
            }
            if (*p && digits(&p, 2, &om)) {
                return -1;
            }
            if (oh > 23 || om > 59) {
                return -1;
            }
            off = sign * (oh * 60 + om);
        }
    }

    if (*p != '\0') {
        return -1;
    }

    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    t = timegm(&tm);
    if (t == (time_t)-1) {
        return -1;
    }

    *ms = ((int64_t)t - (int64_t)off * 60) * 1000 + frac;
    return 0;
}

int gd_soc_parse_time(const char *s, int64_t now_ms, int64_t *ms)
{
    int64_t d;

    if (s == NULL) {
        return -1;
    }

    if (gd_soc_parse_duration(s, &d) == 0) {
        *ms = now_ms - d;
        return 0;
    }

    return parse_iso(s, ms);
}

void gd_soc_format_time(int64_t ms, int with_ms, char *out, size_t len)
{
    time_t t = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    int rest = (int)(ms - (int64_t)t * 1000);
    struct tm tm;
    char buf[32];

    if (gmtime_r(&t, &tm) == NULL) {
        snprintf(out, len, "?");
        return;
    }

    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    if (with_ms) {
        snprintf(out, len, "%s.%03dZ", buf, rest);
    } else {
        snprintf(out, len, "%sZ", buf);
    }
}

int64_t gd_soc_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* records */

const char *gd_soc_str(const json_t *rec, const char *key)
{
    json_t *v = json_object_get(rec, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

int gd_soc_is_review(const json_t *rec)
{
    const char *kind = gd_soc_str(rec, "kind");
    return kind != NULL && strcmp(kind, "review") == 0;
}

int gd_soc_is_refusal(const json_t *rec)
{
    const char *outcome = gd_soc_str(rec, "outcome");
    json_t *status = json_object_get(rec, "status");

    if (!json_is_object(rec) || gd_soc_is_review(rec)) {
        return 0;
    }

    if (outcome &&
        (strcmp(outcome, "deny") == 0 || strcmp(outcome, "shadow_deny") == 0)) {
        return 1;
    }

    return gd_soc_str(rec, "reason") != NULL && json_is_integer(status) &&
           json_integer_value(status) >= 400;
}

int64_t gd_soc_ts_ms(const json_t *rec)
{
    json_t *v = json_object_get(rec, "ts_ms");
    return json_is_integer(v) && json_integer_value(v) >= 0
               ? (int64_t)json_integer_value(v)
               : -1;
}

/* the newest records: a min-heap of at most limit entries */

static int entry_less(const gd_soc_entry_t *a, const gd_soc_entry_t *b)
{
    return a->ts < b->ts || (a->ts == b->ts && a->seq < b->seq);
}

static void entry_swap(gd_soc_entry_t *a, gd_soc_entry_t *b)
{
    gd_soc_entry_t t = *a;
    *a = *b;
    *b = t;
}

void gd_soc_top_init(gd_soc_top_t *top, size_t limit)
{
    memset(top, 0, sizeof(*top));
    top->limit = limit;
}

int gd_soc_top_offer(gd_soc_top_t *top, json_t *rec, int64_t ts, uint64_t seq)
{
    gd_soc_entry_t e = {rec, ts, seq};
    size_t i;

    top->seen++;

    if (top->limit && top->n == top->limit) {
        if (!entry_less(&top->v[0], &e)) {
            return 0; /* older than everything kept */
        }
        json_decref(top->v[0].rec);
        top->v[0] = e;
        json_incref(rec);

        /* sift down */
        for (i = 0;;) {
            size_t l = 2 * i + 1, r = l + 1, m = i;
            if (l < top->n && entry_less(&top->v[l], &top->v[m])) {
                m = l;
            }
            if (r < top->n && entry_less(&top->v[r], &top->v[m])) {
                m = r;
            }
            if (m == i) {
                break;
            }
            entry_swap(&top->v[i], &top->v[m]);
            i = m;
        }
        return 0;
    }

    if (top->n == top->cap) {
        size_t cap = top->cap ? top->cap * 2 : 64;
        gd_soc_entry_t *more = realloc(top->v, cap * sizeof(*more));
        if (more == NULL) {
            return -1;
        }
        top->v = more;
        top->cap = cap;
    }

    json_incref(rec);
    top->v[top->n] = e;

    /* sift up */
    for (i = top->n++; i > 0;) {
        size_t parent = (i - 1) / 2;
        if (!entry_less(&top->v[i], &top->v[parent])) {
            break;
        }
        entry_swap(&top->v[i], &top->v[parent]);
        i = parent;
    }
    return 0;
}

static int entry_newest_first(const void *a, const void *b)
{
    const gd_soc_entry_t *x = a, *y = b;
    return entry_less(y, x) ? -1 : entry_less(x, y) ? 1 : 0;
}

void gd_soc_top_sort(gd_soc_top_t *top)
{
    if (top->n > 1) {
        qsort(top->v, top->n, sizeof(gd_soc_entry_t), entry_newest_first);
    }
}

void gd_soc_top_free(gd_soc_top_t *top)
{
    for (size_t i = 0; i < top->n; i++) {
        json_decref(top->v[i].rec);
    }
    free(top->v);
    memset(top, 0, sizeof(*top));
}

/* keys */

unsigned char *gd_soc_b64url_decode(const char *in, size_t *outlen)
{
    size_t len = strlen(in), o = 0;
    unsigned char *out;
    uint32_t acc = 0;
    int bits = 0;

    while (len > 0 && in[len - 1] == '=') {
        len--;
    }
    if (len % 4 == 1) {
        return NULL;
    }

    out = malloc(len * 3 / 4 + 1);
    if (out == NULL) {
        return NULL;
    }

    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)in[i], v;

        if (c >= 'A' && c <= 'Z') {
            v = c - 'A';
        } else if (c >= 'a' && c <= 'z') {
            v = c - 'a' + 26;
        } else if (c >= '0' && c <= '9') {
            v = c - '0' + 52;
        } else if (c == '-' || c == '+') {
            v = 62;
        } else if (c == '_' || c == '/') {
            v = 63;
        } else {
            free(out);
            return NULL;
        }

        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }

    *outlen = o;
    return out;
}

/* pushes the base64url member key as a big number; -1 when it is bad */
static int push_bn(OSSL_PARAM_BLD *bld, const json_t *jwk, const char *key,
                   const char *param, BIGNUM **keep)
{
    const char *text = gd_soc_str(jwk, key);
    unsigned char *bytes;
    size_t len;

    if (text == NULL || (bytes = gd_soc_b64url_decode(text, &len)) == NULL) {
        return -1;
    }

    *keep = BN_bin2bn(bytes, (int)len, NULL);
    free(bytes);

    if (*keep == NULL || OSSL_PARAM_BLD_push_BN(bld, param, *keep) != 1) {
        return -1;
    }
    return 0;
}

char *gd_soc_jwk_to_pem(const json_t *jwk, char *err, size_t errlen)
{
    const char *kty = gd_soc_str(jwk, "kty");
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL, *check = NULL;
    EVP_PKEY *pkey = NULL;
    BIGNUM *bn[8] = {0};
    unsigned char *x = NULL, *y = NULL, *point = NULL;
    BIO *bio = NULL;
    char *pem = NULL, *data;
    long len;

    if (bld == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }

    if (kty && strcmp(kty, "RSA") == 0) {
        static const char *members[] = {"n", "e",  "d",  "p",
                                        "q", "dp", "dq", "qi"};
        static const char *names[] = {
            OSSL_PKEY_PARAM_RSA_N,         OSSL_PKEY_PARAM_RSA_E,
            OSSL_PKEY_PARAM_RSA_D,         OSSL_PKEY_PARAM_RSA_FACTOR1,
            OSSL_PKEY_PARAM_RSA_FACTOR2,   OSSL_PKEY_PARAM_RSA_EXPONENT1,
            OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1};

        for (size_t i = 0; i < 8; i++) {
            if (push_bn(bld, jwk, members[i], names[i], &bn[i]) != 0) {
                snprintf(err, errlen,
                         "the RSA key has no valid \"%s\": a private JWK "
                         "needs n, e, d, p, q, dp, dq and qi",
                         members[i]);
                goto done;
            }
        }
        ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);

    } else if (kty && strcmp(kty, "EC") == 0) {
        const char *crv = gd_soc_str(jwk, "crv"), *group;
        size_t size, xlen = 0, ylen = 0;

        if (crv && strcmp(crv, "P-256") == 0) {
            group = "prime256v1";
            size = 32;
        } else if (crv && strcmp(crv, "P-384") == 0) {
            group = "secp384r1";
            size = 48;
        } else if (crv && strcmp(crv, "P-521") == 0) {
            group = "secp521r1";
            size = 66;
        } else {
            snprintf(err, errlen,
                     "the EC key's crv must be P-256, P-384 or "
                     "P-521");
            goto done;
        }

        if (gd_soc_str(jwk, "x") == NULL || gd_soc_str(jwk, "y") == NULL ||
            (x = gd_soc_b64url_decode(gd_soc_str(jwk, "x"), &xlen)) == NULL ||
            (y = gd_soc_b64url_decode(gd_soc_str(jwk, "y"), &ylen)) == NULL ||
            xlen != size || ylen != size) {
            snprintf(err, errlen, "the EC key needs %zu-byte x and y", size);
            goto done;
        }

        point = malloc(1 + 2 * size);
        if (point == NULL) {
            snprintf(err, errlen, "out of memory");
            goto done;
        }
        point[0] = 0x04; /* uncompressed */
        memcpy(point + 1, x, size);
        memcpy(point + 1 + size, y, size);

        if (OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
                                            group, 0) != 1 ||
            OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY,
                                             point, 1 + 2 * size) != 1) {
            snprintf(err, errlen, "out of memory");
            goto done;
        }
        if (push_bn(bld, jwk, "d", OSSL_PKEY_PARAM_PRIV_KEY, &bn[0]) != 0) {
            snprintf(err, errlen,
                     "the EC key has no valid \"d\": it is not "
                     "a private key");
            goto done;
        }
        ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);

    } else {
        snprintf(err, errlen, "kty \"%s\" is not an RSA or EC key",
                 kty ? kty : "");
        goto done;
    }

    params = OSSL_PARAM_BLD_to_param(bld);
    if (ctx == NULL || params == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_KEYPAIR, params) != 1) {
        snprintf(err, errlen, "OpenSSL does not accept the %s key", kty);
        goto done;
    }

    check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (check == NULL || EVP_PKEY_check(check) != 1) {
        snprintf(err, errlen,
                 "the %s key is not consistent (its private and public "
                 "parts do not match)",
                 kty);
        goto done;
    }

    bio = BIO_new(BIO_s_mem());
    if (bio == NULL ||
        PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) != 1 ||
        (len = BIO_get_mem_data(bio, &data)) <= 0 ||
        (pem = malloc((size_t)len + 1)) == NULL) {
        snprintf(err, errlen, "cannot write the key as PEM");
        goto done;
    }
    memcpy(pem, data, (size_t)len);
    pem[len] = '\0';

done:
    BIO_free(bio);
    EVP_PKEY_CTX_free(check);
    EVP_PKEY_free(pkey);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    for (size_t i = 0; i < 8; i++) {
        BN_clear_free(bn[i]);
    }
    free(x);
    free(y);
    free(point);
    return pem;
}

int gd_soc_pem_check(const char *pem, size_t len, const char *alg, char *err,
                     size_t errlen)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *pkey = NULL;
    char group[64] = "";
    size_t glen = 0;
    int rc = -1;

    if (bio == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    if (pkey == NULL) {
        snprintf(err, errlen,
                 "not a PEM private key (an encrypted key, or a public key, "
                 "cannot sign)");
    } else if (strncmp(alg, "RS", 2) == 0) {
        if (!EVP_PKEY_is_a(pkey, "RSA")) {
            snprintf(err, errlen, "%s needs an RSA key", alg);
        } else if (EVP_PKEY_get_bits(pkey) < 2048) {
            snprintf(err, errlen,
                     "the RSA key has %d bits: Guard needs 2048 or more",
                     EVP_PKEY_get_bits(pkey));
        } else {
            rc = 0;
        }
    } else if (strncmp(alg, "ES", 2) == 0) {
        const char *want = strcmp(alg, "ES256") == 0   ? "prime256v1"
                           : strcmp(alg, "ES384") == 0 ? "secp384r1"
                                                       : "secp521r1";
        if (!EVP_PKEY_is_a(pkey, "EC") ||
            EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME,
                                           group, sizeof(group), &glen) != 1) {
            snprintf(err, errlen, "%s needs an EC key", alg);
        } else if (strcmp(group, want) != 0) {
            snprintf(err, errlen, "%s needs an EC key on %s, not %s", alg, want,
                     group);
        } else {
            rc = 0;
        }
    } else {
        snprintf(err, errlen, "%s does not sign with a PEM key", alg);
    }

    EVP_PKEY_free(pkey);
    BIO_free(bio);
    return rc;
}
