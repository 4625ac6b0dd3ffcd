/*
 * gd_soc: guardctl's SOC helpers, see gd_soc.h.
 */
#include "gd_soc.h"
#include "gd_jwk.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
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

void gd_soc_format_age(int64_t ms, int64_t now_ms, char *out, size_t len)
{
    static const struct {
        const char *unit;
        int64_t secs;
    } units[] = {{"day", 86400}, {"hour", 3600}, {"minute", 60}, {"second", 1}};
    int64_t s = (now_ms - ms) / 1000;
    size_t i;

    if (now_ms < ms) {
        snprintf(out, len, "in the future");
        return;
    }
    for (i = 0; i + 1 < sizeof(units) / sizeof(units[0]); i++) {
        if (s >= units[i].secs) {
            break;
        }
    }
    s /= units[i].secs;
    snprintf(out, len, "%lld %s%s ago", (long long)s, units[i].unit,
             s == 1 ? "" : "s");
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

/*
 * A private JWK (RSA or EC) as a PEM key: the members decoded here, the key
 * built by gd_jwk (the importer the nginx module uses too).
 */
char *gd_soc_jwk_to_pem(const json_t *jwk, char *err, size_t errlen)
{
    static const char *rsa[] = {"n", "e", "d", "p", "q", "dp", "dq", "qi"};
    const char *kty = gd_soc_str(jwk, "kty");
    EVP_PKEY_CTX *check = NULL;
    EVP_PKEY *pkey = NULL;
    unsigned char *m[8] = {0};
    size_t len[8] = {0};
    BIO *bio = NULL;
    char *pem = NULL, *data;
    long plen;
    int built;

    if (kty && strcmp(kty, "RSA") == 0) {
        for (size_t i = 0; i < 8; i++) {
            const char *text = gd_soc_str(jwk, rsa[i]);

            if (text == NULL ||
                (m[i] = gd_soc_b64url_decode(text, &len[i])) == NULL) {
                snprintf(err, errlen,
                         "the RSA key has no valid \"%s\": a private JWK "
                         "needs n, e, d, p, q, dp, dq and qi",
                         rsa[i]);
                goto done;
            }
        }
        built = gd_jwk_rsa_pkey((const unsigned char *const *)m, len, 8, &pkey);

    } else if (kty && strcmp(kty, "EC") == 0) {
        const gd_jwk_alg_t *curve = gd_jwk_ec_curve(gd_soc_str(jwk, "crv"));
        const char *d = gd_soc_str(jwk, "d");

        if (curve == NULL) {
            snprintf(err, errlen,
                     "the EC key's crv must be P-256, P-384 or "
                     "P-521");
            goto done;
        }

        if (gd_soc_str(jwk, "x") == NULL || gd_soc_str(jwk, "y") == NULL ||
            (m[0] = gd_soc_b64url_decode(gd_soc_str(jwk, "x"), &len[0])) ==
                NULL ||
            (m[1] = gd_soc_b64url_decode(gd_soc_str(jwk, "y"), &len[1])) ==
                NULL ||
            len[0] != curve->coord_len || len[1] != curve->coord_len) {
            snprintf(err, errlen, "the EC key needs %zu-byte x and y",
                     curve->coord_len);
            goto done;
        }
        if (d == NULL || (m[2] = gd_soc_b64url_decode(d, &len[2])) == NULL) {
            snprintf(err, errlen,
                     "the EC key has no valid \"d\": it is not "
                     "a private key");
            goto done;
        }
        built = gd_jwk_ec_pkey(curve->group, m[0], m[1], curve->coord_len, m[2],
                               len[2], &pkey);

    } else {
        snprintf(err, errlen, "kty \"%s\" is not an RSA or EC key",
                 kty ? kty : "");
        goto done;
    }

    if (built != 0) {
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
        (plen = BIO_get_mem_data(bio, &data)) <= 0 ||
        (pem = malloc((size_t)plen + 1)) == NULL) {
        snprintf(err, errlen, "cannot write the key as PEM");
        goto done;
    }
    memcpy(pem, data, (size_t)plen);
    pem[plen] = '\0';

done:
    BIO_free(bio);
    EVP_PKEY_CTX_free(check);
    EVP_PKEY_free(pkey);
    for (size_t i = 0; i < 8; i++) {
        if (m[i] != NULL) {
            OPENSSL_clear_free(m[i], len[i]);
        }
    }
    ERR_clear_error();
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
        const gd_jwk_alg_t *es = gd_jwk_alg(alg, strlen(alg));
        const char *want = es && es->group ? es->group : "secp521r1";
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
