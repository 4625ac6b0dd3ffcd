/*
 * detect_gen.h: a generator of texts for gd_detect's differential test
 * (t_detect's golden file, tests/detect.golden): ordinary words and
 * punctuation with embedded valid, invalid and near-miss items of every
 * detector's kind, some of them mutated, some texts cut short.  It is
 * deterministic (its own PRNG), so that a seed always gives the same
 * texts on every machine.
 */
#ifndef GD_DETECT_GEN_H
#define GD_DETECT_GEN_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

typedef struct {
    uint64_t s;
} gen_rng_t;

static uint32_t gen_next(gen_rng_t *r)
{
    /* splitmix64 */
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (uint32_t)((z ^ (z >> 31)) >> 32);
}

/* 0..n-1 */
static unsigned gen_below(gen_rng_t *r, unsigned n)
{
    return n ? gen_next(r) % n : 0;
}

/* a text being built: at most cap bytes */
typedef struct {
    char *p;
    size_t n, cap;
} gen_buf_t;

static void gen_add(gen_buf_t *b, const char *s, size_t n)
{
    if (n > b->cap - b->n) {
        n = b->cap - b->n;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void gen_str(gen_buf_t *b, const char *s)
{
    gen_add(b, s, strlen(s));
}

static void gen_ch(gen_buf_t *b, char c)
{
    gen_add(b, &c, 1);
}

/* n characters drawn from set */
static void gen_from(gen_rng_t *r, gen_buf_t *b, const char *set, unsigned n)
{
    size_t k = strlen(set);

    for (unsigned i = 0; i < n; i++) {
        gen_ch(b, set[gen_below(r, (unsigned)k)]);
    }
}

#define GEN_DIGITS "0123456789"
#define GEN_HEX "0123456789abcdefABCDEF"
#define GEN_UPPER "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#define GEN_ALNUM                                                              \
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
#define GEN_B64URL GEN_ALNUM "-_"
#define GEN_SECRET GEN_ALNUM "+/-_"
#define GEN_PUNCT " \n\t.,;:!?\"'()[]{}<>/\\-_=+@#$%&*~|`^"
/* the bytes that join or end the items of the detectors */
#define GEN_DANGER "0123456789.-:/@+() _=,eyJAxoghk\n"

static const char *const gen_words[] = {
    "the",
    "a",
    "and",
    "of",
    "to",
    "in",
    "is",
    "you",
    "that",
    "it",
    "he",
    "was",
    "for",
    "on",
    "are",
    "as",
    "with",
    "his",
    "they",
    "I",
    "at",
    "be",
    "this",
    "have",
    "from",
    "or",
    "one",
    "had",
    "by",
    "word",
    "but",
    "not",
    "what",
    "all",
    "were",
    "we",
    "when",
    "your",
    "can",
    "said",
    "there",
    "use",
    "an",
    "each",
    "which",
    "she",
    "do",
    "how",
    "their",
    "if",
    "will",
    "up",
    "other",
    "about",
    "out",
    "many",
    "then",
    "them",
    "these",
    "so",
    "Hello",
    "Please",
    "Thanks",
    "JSON",
    "January",
    "John",
    "Java",
    "eye",
    "key",
    "money",
    "hooks",
    "github",
    "ghost",
    "high",
    "right",
    "though",
    "example",
    "internationalization",
    "responsibilities",
    "AKIAsomething",
    "Abcdefghijklmnopqrstuvwxyz",
    "XMLHttpRequest",
    "getElementById",
    "user_id",
    "access_token",
    "x-api-key",
    "eyJ",
    "xox",
    "SSN",
    "ssn",
    "social security",
    "Social Security number",
    "phone",
    "tel",
    "call",
    "IBAN",
    "DE",
    "GB",
    "card",
    "Visa",
    "version",
    "v1.2.3",
    "2023-11-05",
    "12:30",
    "3.14159",
    "1,000,000",
    "#A-2023-88812",
    "x+1",
    "(see)",
    "https://",
    "http://example.com/a/b?c=d",
    "C:\\Windows\\System32",
    "/var/log/app.log",
    "BEGIN",
    "-----",
    "END",
    "PRIVATE KEY",
    "::",
    ":",
    "std::vector",
    "a::b",
    "fe80",
    "dead:beef",
    "1.2.3.4.5",
    "10.0.0",
    "mailto:",
    "@",
    "@@",
    "user@",
    "@host",
    "e.g.",
    "i.e.",
    "U.S.A.",
};

static void gen_word(gen_rng_t *r, gen_buf_t *b)
{
    gen_str(b, gen_words[gen_below(
                   r, (unsigned)(sizeof(gen_words) / sizeof(gen_words[0])))]);
}

/* the Luhn check digit of d[0..n) (the digit to append) */
static char gen_luhn(const char *d, size_t n)
{
    unsigned sum = 0;

    for (size_t k = 0; k < n; k++) {
        unsigned v = (unsigned)(d[n - 1 - k] - '0');
        if ((k & 1) == 0) {
            v = v * 2 > 9 ? v * 2 - 9 : v * 2;
        }
        sum += v;
    }
    return (char)('0' + (10 - sum % 10) % 10);
}

static void gen_card(gen_rng_t *r, gen_buf_t *b)
{
    static const char *const pfx[] = {
        "4",    "51",   "55",   "2221", "2720",   "34",   "37",   "6011",
        "644",  "65",   "3528", "3589", "300",    "36",   "38",   "62",
        "5018", "6759", "1",    "7",    "622126", "3095", "2720", "99"};
    char d[24];
    unsigned n = 13 + gen_below(r, 7), p, k;
    const char *f = pfx[gen_below(r, sizeof(pfx) / sizeof(pfx[0]))];
    unsigned shape = gen_below(r, 5);
    char sep = " -."[gen_below(r, 3)];

    p = (unsigned)strlen(f);
    memcpy(d, f, p);
    for (k = p; k + 1 < n; k++) {
        d[k] = (char)('0' + gen_below(r, 10));
    }
    d[n - 1] = gen_luhn(d, n - 1);
    if (gen_below(r, 4) == 0) {
        d[gen_below(r, n)] = (char)('0' + gen_below(r, 10));
    }
    for (k = 0; k < n; k++) {
        if (k > 0 && ((shape == 1 && k % 4 == 0) ||
                      (shape == 2 && (k == 4 || k == 10)) ||
                      (shape == 3 && gen_below(r, 5) == 0))) {
            gen_ch(b, sep);
        }
        gen_ch(b, d[k]);
    }
}

static void gen_iban(gen_rng_t *r, gen_buf_t *b)
{
    static const struct {
        const char *cc;
        unsigned len;
        int letters; /* the BBAN's first 4 are letters */
    } c[] = {{"DE", 22, 0}, {"GB", 22, 1}, {"FR", 27, 0}, {"NO", 15, 0},
             {"NL", 18, 1}, {"BE", 16, 0}, {"CH", 21, 0}, {"ES", 24, 0},
             {"IT", 27, 0}, {"XX", 20, 0}, {"LC", 32, 1}, {"RU", 33, 0}};
    unsigned k = gen_below(r, sizeof(c) / sizeof(c[0]));
    char s[40], chk[3];
    unsigned n = c[k].len, m = 0;

    memcpy(s, c[k].cc, 2);
    s[2] = '0';
    s[3] = '0';
    for (unsigned i = 4; i < n; i++) {
        s[i] = (c[k].letters && i < 8) ? GEN_UPPER[gen_below(r, 26)]
                                       : (char)('0' + gen_below(r, 10));
    }
    for (unsigned i = 4; i < n + 4; i++) {
        char ch = s[i % n];
        if (ch >= '0' && ch <= '9') {
            m = (m * 10 + (unsigned)(ch - '0')) % 97;
        } else {
            m = (m * 100 + (unsigned)(ch - 'A' + 10)) % 97;
        }
    }
    snprintf(chk, sizeof(chk), "%02u", 98 - m);
    memcpy(s + 2, chk, 2);
    if (gen_below(r, 4) == 0) {
        s[2 + gen_below(r, n - 2)] = (char)('0' + gen_below(r, 10));
    }
    if (gen_below(r, 8) == 0) {
        n -= 1 + gen_below(r, 2);
    }
    for (unsigned i = 0; i < n; i++) {
        if (i > 0 && i % 4 == 0 && gen_below(r, 2)) {
            gen_ch(b, gen_below(r, 10) ? ' ' : '-');
        }
        gen_ch(b, s[i]);
    }
}

static void gen_phone(gen_rng_t *r, gen_buf_t *b)
{
    unsigned f = gen_below(r, 8);
    char sep = " -."[gen_below(r, 3)];

    switch (f) {
    case 0: /* +CC groups */
        gen_ch(b, '+');
        gen_from(r, b, GEN_DIGITS, 1 + gen_below(r, 3));
        for (unsigned g = gen_below(r, 5); g > 0; g--) {
            gen_ch(b, sep);
            if (gen_below(r, 6) == 0) {
                gen_str(b, "(0)");
            }
            gen_from(r, b, GEN_DIGITS, 1 + gen_below(r, 5));
        }
        break;
    case 1: /* (555) 123-4567 */
        gen_ch(b, '(');
        gen_from(r, b, GEN_DIGITS, 3);
        gen_str(b, gen_below(r, 2) ? ") " : ")");
        gen_from(r, b, GEN_DIGITS, 3);
        gen_ch(b, '-');
        gen_from(r, b, GEN_DIGITS, 4);
        break;
    case 2: /* 555-123-4567 */
        gen_from(r, b, "23456789", 1);
        gen_from(r, b, GEN_DIGITS, 2 + gen_below(r, 2) - 1 + 1);
        gen_ch(b, sep);
        gen_from(r, b, GEN_DIGITS, 3);
        gen_ch(b, gen_below(r, 5) ? sep : ' ');
        gen_from(r, b, GEN_DIGITS, 4);
        break;
    case 3: /* 1-800-555-0199 */
        gen_str(b, "1");
        gen_ch(b, sep);
        if (gen_below(r, 3) == 0) {
            gen_str(b, "(800)");
        } else {
            gen_from(r, b, GEN_DIGITS, 3);
        }
        gen_ch(b, sep);
        gen_from(r, b, GEN_DIGITS, 3);
        gen_ch(b, sep);
        gen_from(r, b, GEN_DIGITS, 4);
        break;
    case 4: /* 00 44 ... */
        gen_str(b, "00");
        for (unsigned g = 1 + gen_below(r, 4); g > 0; g--) {
            gen_ch(b, sep);
            gen_from(r, b, GEN_DIGITS, 2 + gen_below(r, 3));
        }
        break;
    case 5: /* 020 7946 0958, 01 23 45 67 89 */
        gen_ch(b, '0');
        gen_from(r, b, GEN_DIGITS, 1 + gen_below(r, 4));
        for (unsigned g = 1 + gen_below(r, 4); g > 0; g--) {
            gen_ch(b, sep);
            gen_from(r, b, GEN_DIGITS, 2 + gen_below(r, 3));
        }
        break;
    default: /* groups of digits */
        for (unsigned g = 1 + gen_below(r, 5); g > 0; g--) {
            gen_from(r, b, GEN_DIGITS, 1 + gen_below(r, 6));
            if (g > 1) {
                gen_ch(b, " -./:,("[gen_below(r, 7)]);
            }
        }
        break;
    }
}

static void gen_ssn(gen_rng_t *r, gen_buf_t *b)
{
    static const char *const ctx[] = {"SSN ",
                                      "SSN: ",
                                      "ssn#",
                                      "social security number ",
                                      "Social Security: ",
                                      "my ssn is ",
                                      ""};
    static const char *const area[] = {"000", "666", "900", "123", "078",
                                       "999", "001", "665", "899"};
    char sep = gen_below(r, 3) == 0 ? ' ' : gen_below(r, 3) ? '-' : 0;

    if (gen_below(r, 2)) {
        gen_str(b, ctx[gen_below(r, sizeof(ctx) / sizeof(ctx[0]))]);
    }
    if (gen_below(r, 3) == 0) {
        gen_str(b, area[gen_below(r, sizeof(area) / sizeof(area[0]))]);
    } else {
        gen_from(r, b, GEN_DIGITS, 3);
    }
    if (sep) {
        gen_ch(b, sep);
    }
    gen_str(b, gen_below(r, 6) == 0 ? "00" : "");
    gen_from(r, b, GEN_DIGITS, b->n && b->p[b->n - 1] == '0' ? 0 : 2);
    if (sep) {
        gen_ch(b, sep);
    }
    if (gen_below(r, 6) == 0) {
        gen_str(b, "0000");
    } else {
        gen_from(r, b, GEN_DIGITS, 4);
    }
}

static void gen_ipv4(gen_rng_t *r, gen_buf_t *b)
{
    unsigned parts = 4, k;
    char num[8];

    k = gen_below(r, 8);
    if (k == 0) {
        parts = 3;
    } else if (k == 1) {
        parts = 5;
    }
    for (k = 0; k < parts; k++) {
        unsigned v = gen_below(r, 4) ? gen_below(r, 256) : gen_below(r, 1000);
        if (k > 0) {
            gen_ch(b, '.');
        }
        snprintf(num, sizeof(num), gen_below(r, 12) ? "%u" : "0%u", v);
        gen_str(b, num);
    }
    if (gen_below(r, 6) == 0) {
        gen_str(b, gen_below(r, 2) ? ":8080" : "/24");
    }
}

static void gen_ipv6(gen_rng_t *r, gen_buf_t *b)
{
    unsigned groups = 2 + gen_below(r, 8), dbl = gen_below(r, groups + 2);

    if (gen_below(r, 6) == 0) {
        gen_ch(b, '[');
    }
    for (unsigned g = 0; g < groups; g++) {
        if (g > 0) {
            gen_ch(b, ':');
        }
        if (g == dbl) {
            gen_ch(b, ':');
            if (gen_below(r, 4) == 0) {
                continue;
            }
        }
        gen_from(r, b, gen_below(r, 10) ? "0123456789abcdef" : GEN_HEX "g",
                 1 + gen_below(r, gen_below(r, 8) ? 4 : 6));
    }
    if (gen_below(r, 6) == 0) {
        gen_str(b, ":192.0.2.");
        gen_from(r, b, GEN_DIGITS, 1 + gen_below(r, 3));
    }
    if (gen_below(r, 8) == 0) {
        gen_str(b, "%eth0");
    }
    if (gen_below(r, 6) == 0) {
        gen_str(b, "]:443");
    }
}

static void gen_pem(gen_rng_t *r, gen_buf_t *b)
{
    static const char *const labels[] = {
        "PRIVATE KEY",           "RSA PRIVATE KEY",     "EC PRIVATE KEY",
        "DSA PRIVATE KEY",       "OPENSSH PRIVATE KEY", "ENCRYPTED PRIVATE KEY",
        "PGP PRIVATE KEY BLOCK", "CERTIFICATE",         "PUBLIC KEY",
        "RSA PRIVATE  KEY"};
    unsigned l = gen_below(r, sizeof(labels) / sizeof(labels[0]));
    unsigned e = gen_below(r, 4) ? l : gen_below(r, 8);

    gen_str(b, gen_below(r, 10) ? "-----BEGIN " : "----BEGIN ");
    gen_str(b, labels[l]);
    gen_str(b, "-----");
    gen_str(b, gen_below(r, 3) ? "\n" : "\\n");
    if (gen_below(r, 5) == 0) {
        gen_str(b, "Proc-Type: 4,ENCRYPTED\n\n");
    }
    for (unsigned k = gen_below(r, 6); k > 0; k--) {
        gen_from(r, b, GEN_ALNUM "+/", 8 + gen_below(r, 64));
        gen_str(b, gen_below(r, 3) ? "\n" : "\\n");
    }
    if (gen_below(r, 2)) {
        gen_str(b, "==\n");
    }
    if (gen_below(r, 4)) {
        gen_str(b, "-----END ");
        gen_str(b, labels[e]);
        gen_str(b, "-----");
    }
}

/* base64 of s[0..n) (OpenSSL): standard and padded, or base64url and not */
static void gen_b64(gen_buf_t *b, const char *s, size_t n, int url)
{
    unsigned char out[4 * 128 / 3 + 8];
    int m = EVP_EncodeBlock(out, (const unsigned char *)s,
                            (int)(n < 128 ? n : 128));

    for (int k = 0; k < m; k++) {
        if (!url) {
            gen_ch(b, (char)out[k]);
        } else if (out[k] != '=') {
            gen_ch(b, out[k] == '+' ? '-' : out[k] == '/' ? '_' : (char)out[k]);
        }
    }
}

static void gen_jwt(gen_rng_t *r, gen_buf_t *b)
{
    static const char *const hdr[] = {"{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
                                      "{\"alg\":\"RS256\"}",
                                      "{ \"alg\" : \"none\" }",
                                      "{\"typ\":\"JWT\"}",
                                      "{\"alg\"}",
                                      "{\"kid\":\"1\",\"alg\":\"ES256\"}",
                                      "[\"alg\":1]",
                                      "{\"alg\":\"dir\",\"enc\":\"A\"}"};
    static const char *const pay[] = {"{\"sub\":\"1234567890\"}",
                                      "{\"name\":\"John Doe\",\"iat\":1516}",
                                      "{}", "x"};
    unsigned parts = gen_below(r, 4) ? 3 : 2 + gen_below(r, 5);
    const char *h = hdr[gen_below(r, sizeof(hdr) / sizeof(hdr[0]))];

    if (gen_below(r, 8) == 0) {
        gen_ch(b, "a.+/_-"[gen_below(r, 6)]);
    }
    gen_b64(b, h, strlen(h), 1);
    for (unsigned p = 1; p < parts; p++) {
        const char *s = pay[gen_below(r, sizeof(pay) / sizeof(pay[0]))];

        gen_ch(b, '.');
        if (gen_below(r, 10) == 0) {
            continue; /* an empty part */
        }
        if (p == 1) {
            gen_b64(b, s, strlen(s), 1);
        } else {
            gen_from(r, b, GEN_B64URL, 10 + gen_below(r, 40));
        }
    }
    if (gen_below(r, 8) == 0) {
        gen_ch(b, ".=+/"[gen_below(r, 4)]);
    }
}

static void gen_aws(gen_rng_t *r, gen_buf_t *b)
{
    static const char *const pfx[] = {"AKIA", "ASIA", "AGPA", "AIDA", "AROA",
                                      "ANPA", "ANVA", "AIPA", "AKIB", "akia"};

    gen_str(b, pfx[gen_below(r, sizeof(pfx) / sizeof(pfx[0]))]);
    gen_from(r, b,
             gen_below(r, 8) ? "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" : GEN_ALNUM,
             gen_below(r, 4) ? 16 : 14 + gen_below(r, 5));
}

static void gen_github(gen_rng_t *r, gen_buf_t *b)
{
    if (gen_below(r, 5) == 0) {
        gen_str(b, "github_pat_");
        gen_from(r, b, GEN_ALNUM "_",
                 gen_below(r, 3) ? 82 : 80 + gen_below(r, 5));
        return;
    }
    gen_str(b, "gh");
    gen_ch(b, "pousrx"[gen_below(r, 6)]);
    gen_ch(b, gen_below(r, 10) ? '_' : '-');
    gen_from(r, b, GEN_ALNUM, gen_below(r, 3) ? 36 : 34 + gen_below(r, 5));
}

static void gen_slack(gen_rng_t *r, gen_buf_t *b)
{
    if (gen_below(r, 3) == 0) {
        if (gen_below(r, 2)) {
            gen_str(b, gen_below(r, 2) ? "https://" : "http://");
        }
        gen_str(b, "hooks.slack.com/services/T");
        gen_from(r, b, GEN_UPPER GEN_DIGITS, 7 + gen_below(r, 4));
        gen_str(b, "/B");
        gen_from(r, b, GEN_UPPER GEN_DIGITS, 7 + gen_below(r, 4));
        gen_ch(b, '/');
        gen_from(r, b, GEN_ALNUM, 20 + gen_below(r, 8));
        return;
    }
    gen_str(b, "xox");
    gen_ch(b, "bpars-z"[gen_below(r, 7)]);
    gen_ch(b, '-');
    for (unsigned s = 1 + gen_below(r, 4); s > 0; s--) {
        gen_from(r, b, gen_below(r, 2) ? GEN_DIGITS : GEN_ALNUM,
                 1 + gen_below(r, 14));
        if (s > 1) {
            gen_ch(b, '-');
        }
    }
}

static void gen_secret(gen_rng_t *r, gen_buf_t *b)
{
    switch (gen_below(r, 7)) {
    case 0:
        gen_from(r, b, GEN_SECRET, 10 + gen_below(r, 40));
        break;
    case 1:
        gen_from(r, b, GEN_SECRET, 15 + gen_below(r, 600));
        break;
    case 2:
        gen_from(r, b, GEN_HEX, 16 + gen_below(r, 48));
        break;
    case 3: {
        static const char text[] = "the quick brown fox jumps over the lazy "
                                   "dog and then some more words here";
        gen_b64(b, text, 12 + gen_below(r, sizeof(text) - 13), 0);
        break;
    }
    case 4:
        for (unsigned k = 2 + gen_below(r, 5); k > 0; k--) {
            gen_ch(b, GEN_UPPER[gen_below(r, 26)]);
            gen_from(r, b, "abcdefghijklmnopqrstuvwxyz", 2 + gen_below(r, 6));
            if (gen_below(r, 3) == 0) {
                gen_from(r, b, GEN_DIGITS, 1 + gen_below(r, 3));
            }
        }
        break;
    case 5:
        gen_from(r, b, GEN_ALNUM, 18 + gen_below(r, 30));
        gen_str(b, gen_below(r, 2) ? "=" : gen_below(r, 2) ? "==" : "====");
        if (gen_below(r, 2)) {
            gen_from(r, b, GEN_ALNUM, 1 + gen_below(r, 20));
        }
        break;
    default: {
        static const char *const k[] = {"api_key=", "token: ", "secret=\"",
                                        "password ", "Bearer "};
        gen_str(b, k[gen_below(r, sizeof(k) / sizeof(k[0]))]);
        gen_from(r, b, GEN_ALNUM "_-", 20 + gen_below(r, 30));
        break;
    }
    }
}

static void gen_email(gen_rng_t *r, gen_buf_t *b)
{
    static const char *const tld[] = {
        "com", "org", "io", "c", "co.uk", "verylongtopleveldomainname",
        "123", "x-y", ""};

    if (gen_below(r, 8) == 0) {
        gen_ch(b, ".@\"<"[gen_below(r, 4)]);
    }
    gen_from(r, b,
             gen_below(r, 5) ? "abcdefghijklmnopqrstuvwxyz0123456789"
                             : GEN_ALNUM "._%+-",
             1 + gen_below(r, gen_below(r, 10) ? 12 : 70));
    gen_str(b, gen_below(r, 12) ? "@" : "@@");
    for (unsigned l = gen_below(r, 4); l > 0; l--) {
        gen_from(r, b,
                 gen_below(r, 6) ? "abcdefghijklmnopqrstuvwxyz0123456789"
                                 : GEN_ALNUM "-",
                 1 + gen_below(r, 12));
        gen_ch(b, gen_below(r, 12) ? '.' : '-');
    }
    gen_str(b, tld[gen_below(r, sizeof(tld) / sizeof(tld[0]))]);
}

static void gen_invisible(gen_rng_t *r, gen_buf_t *b)
{
    static const char *const u[] = {"\xe2\x80\x8b",
                                    "\xe2\x80\x8c",
                                    "\xe2\x80\x8d",
                                    "\xe2\x80\x8e",
                                    "\xe2\x80\xae",
                                    "\xe2\x81\xa0",
                                    "\xc2\xad",
                                    "\xef\xbb\xbf",
                                    "\xf3\xa0\x80\x81",
                                    "\xf3\xa0\x81\xa7",
                                    "\xf3\xa0\x81\xbf",
                                    "\xf0\x9f\x8f\xb4",
                                    "\xc3\xa9",
                                    "\xe0\xa4\x95",
                                    "\xf0\x9f\x98\x80",
                                    "\xd8\xb3",
                                    "\xc0",
                                    "\xff",
                                    "\x80",
                                    "\xe2\x80",
                                    "\xef\xb8\x8f",
                                    "\xcd\x8f",
                                    "\xe3\x85\xa4",
                                    "\xc2\xa0"};

    for (unsigned k = 1 + gen_below(r, 4); k > 0; k--) {
        gen_str(b, u[gen_below(r, sizeof(u) / sizeof(u[0]))]);
        if (gen_below(r, 3) == 0) {
            gen_word(r, b);
        }
    }
}

/* one item */
static void gen_item(gen_rng_t *r, gen_buf_t *b)
{
    unsigned k = gen_below(r, 40);

    switch (k) {
    case 0:
        gen_email(r, b);
        break;
    case 1:
        gen_phone(r, b);
        break;
    case 2:
        gen_card(r, b);
        break;
    case 3:
        gen_iban(r, b);
        break;
    case 4:
        gen_ssn(r, b);
        break;
    case 5:
        gen_ipv4(r, b);
        break;
    case 6:
        gen_ipv6(r, b);
        break;
    case 7:
        gen_pem(r, b);
        break;
    case 8:
        gen_jwt(r, b);
        break;
    case 9:
        gen_aws(r, b);
        break;
    case 10:
        gen_github(r, b);
        break;
    case 11:
        gen_slack(r, b);
        break;
    case 12:
    case 13:
        gen_secret(r, b);
        break;
    case 14:
        gen_invisible(r, b);
        break;
    case 15:
        gen_from(r, b, GEN_DIGITS, 1 + gen_below(r, 20));
        break;
    case 16:
        gen_from(r, b, GEN_DANGER, 1 + gen_below(r, 12));
        break;
    case 17:
        gen_from(r, b, GEN_PUNCT, 1);
        break;
    default:
        gen_word(r, b);
        break;
    }
}

/*
 * A text of at most cap bytes into p: items joined by spaces or
 * punctuation, some bytes mutated.  Returns its length.
 */
static size_t gen_text(gen_rng_t *r, char *p, size_t cap)
{
    gen_buf_t b = {p, 0, cap};
    size_t want = 1 + gen_below(r, gen_below(r, 4) ? 300 : (unsigned)cap);

    while (b.n < want && b.n < cap) {
        gen_item(r, &b);
        switch (gen_below(r, 12)) {
        case 0:
            break;
        case 1:
            gen_from(r, &b, GEN_PUNCT, 1);
            break;
        case 2:
            gen_str(&b, gen_below(r, 2) ? ", " : "\n");
            break;
        default:
            gen_ch(&b, ' ');
            break;
        }
    }
    if (b.n > want) {
        b.n = want;
    }
    for (unsigned m = gen_below(r, 3) == 0 ? gen_below(r, 4) : 0;
         m > 0 && b.n > 0; m--) {
        size_t at = gen_below(r, (unsigned)b.n);

        if (gen_below(r, 4) == 0) {
            b.p[at] = (char)gen_below(r, 256);
        } else {
            b.p[at] = GEN_DANGER[gen_below(r, sizeof(GEN_DANGER) - 1)];
        }
    }
    return b.n;
}

#endif
