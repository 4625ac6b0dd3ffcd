/*
 * Unit tests for gd_audit: each masking rule, at any depth, whatever the
 * value under a secret name; no false positives on ids, hashes,
 * addresses, traceparents and digit runs failing Luhn; masking twice
 * changes nothing; and the UUID parser.
 */
#include "gd_audit.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

/* a header, a payload and a signature, as any JWT */
#define JWT                                                                    \
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwib"       \
    "mFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpM"     \
    "eJf36POk6yJV_adQssw5c"

/* masks a one-member record {"note": in}; the result, or NULL */
static char *mask_note(const char *in, int *changed)
{
    static char out[1024];
    json_t *rec = json_pack("{s:s}", "note", in);
    int n = gd_audit_mask(rec);

    if (changed) {
        *changed = n;
    }
    if (n < 0 || !json_is_string(json_object_get(rec, "note"))) {
        json_decref(rec);
        return NULL;
    }
    snprintf(out, sizeof(out), "%s",
             json_string_value(json_object_get(rec, "note")));
    json_decref(rec);
    return out;
}

static void note_is(const char *in, const char *want, const char *what)
{
    int n;
    const char *got = mask_note(in, &n);

    TAP_OK(got && strcmp(got, want) == 0 && n == (strcmp(in, want) != 0),
           "%s: \"%s\" (%d changed)", what, got ? got : "(null)", n);
}

static void unchanged(const char *in, const char *what)
{
    note_is(in, in, what);
}

static int same_json(json_t *a, json_t *b)
{
    char *x = json_dumps(a, JSON_COMPACT | JSON_SORT_KEYS);
    char *y = json_dumps(b, JSON_COMPACT | JSON_SORT_KEYS);
    int eq = x && y && strcmp(x, y) == 0;

    free(x);
    free(y);
    return eq;
}

/*
 * Masking and cutting (gd_audit_mask_cut): texts with a secret at every
 * offset around each field limit the module uses.  A secret is leaked
 * when any piece of it is left: a digit of a card number, 3 bytes of an
 * e-mail address, 4 bytes of a JWT or of a bearer credential.
 */

enum {
    SECRET_EMAIL,
    SECRET_CARD,
    SECRET_CARD_GROUPED,
    SECRET_JWT,
    SECRET_BEARER,
    SECRET_N
};

static const struct {
    const char *text;  /* as it stands in a path */
    const char *piece; /* no piece of this may be left */
    size_t piece_len;  /* the length of a piece that counts */
    int digits;        /* no digit may be left */
} secrets[SECRET_N] = {
    {"bob.victim@example.com", "bob.victim@example.com", 3, 0},
    {"4111111111111111", NULL, 0, 1},
    {"4111 1111 1111 1111", NULL, 0, 1},
    {JWT, JWT, 4, 0},
    {"Bearer mF_9.B5f-4.1JqMxyzzy", "mF_9.B5f-4.1JqMxyzzy", 4, 0},
};

/* 1 when text holds a piece of secret k */
static int leaks(const char *text, size_t len, int k)
{
    if (secrets[k].digits) {
        for (size_t i = 0; i < len; i++) {
            if (text[i] >= '0' && text[i] <= '9') {
                return 1;
            }
        }
        return 0;
    }

    size_t plen = secrets[k].piece_len, slen = strlen(secrets[k].piece);
    for (size_t at = 0; at + plen <= slen; at++) {
        for (size_t i = 0; i + plen <= len; i++) {
            if (memcmp(text + i, secrets[k].piece + at, plen) == 0) {
                return 1;
            }
        }
    }
    return 0;
}

/* text ends inside a UTF-8 sequence, or with the head of a placeholder */
static int torn(const char *text, size_t len)
{
    static const char *const ph[] = {"Bearer [masked]", "[masked]", "[token]",
                                     "[email]", "[card]"};
    size_t i = len;

    while (i > 0 && ((unsigned char)text[i - 1] & 0xc0) == 0x80) {
        i--;
    }
    if (i > 0 && (unsigned char)text[i - 1] >= 0xc0) {
        size_t need = (unsigned char)text[i - 1] >= 0xf0   ? 4
                      : (unsigned char)text[i - 1] >= 0xe0 ? 3
                                                           : 2;
        if (len - (i - 1) != need) {
            return 1;
        }
    }

    for (size_t p = 0; p < sizeof(ph) / sizeof(ph[0]); p++) {
        for (size_t k = 1; k < strlen(ph[p]); k++) {
            if (k <= len && memcmp(text + len - k, ph[p], k) == 0 &&
                !(k >= strlen("[masked]") &&
                  memcmp(text + len - k, "[masked]", 8) == 0)) {
                return 1;
            }
        }
    }
    return 0;
}

/* n bytes of "/é/é...": no secret's piece, a UTF-8 sequence to cut */
static size_t filler(char *out, size_t n)
{
    size_t i = 0;

    while (i < n) {
        if (i % 3 == 1 && i + 2 <= n) {
            out[i++] = (char)0xc3;
            out[i++] = (char)0xa9;
        } else {
            out[i++] = '/';
        }
    }
    return n;
}

/* checks one masked-and-cut text; 1 good */
static int cut_ok(const char *out, size_t outlen, size_t limit, int k,
                  const char **why)
{
    char *again;
    size_t againlen;
    json_t *rec;
    int fixed;

    if (outlen > limit) {
        *why = "longer than the limit";
        return 0;
    }
    if (leaks(out, outlen, k)) {
        *why = "a piece of the secret is left";
        return 0;
    }
    if (torn(out, outlen)) {
        *why = "cut inside a placeholder or a UTF-8 sequence";
        return 0;
    }
    if (gd_audit_mask_cut("route", out, outlen, limit, &again, &againlen) !=
        0) {
        *why = "out of memory";
        return 0;
    }
    fixed = againlen == outlen && memcmp(again, out, outlen) == 0;
    free(again);
    rec = json_object();
    json_object_set_new(rec, "route", json_stringn(out, outlen));
    fixed = fixed && gd_audit_mask(rec) == 0;
    json_decref(rec);
    if (!fixed) {
        *why = "masking it again changes it";
        return 0;
    }
    return 1;
}

static void mask_cut_tests(void)
{
    static const size_t limits[] = {8, 32, 64, 128, 512, 1024, 4096};
    static char text[8192];
    char *out;
    size_t outlen;
    int cases = 0, bad = 0, whole = 0, leaked_before = 0;
    const char *why = NULL;

    for (int k = 0; k < SECRET_N; k++) {
        size_t slen = strlen(secrets[k].text);

        for (size_t li = 0; li < sizeof(limits) / sizeof(limits[0]); li++) {
            size_t limit = limits[li];
            size_t from = limit > slen + 8 ? limit - slen - 8 : 0;

            /* the secret before, across and just after the cut */
            for (size_t off = from; off <= limit + 2; off++) {
                size_t len = filler(text, off);
                memcpy(text + len, secrets[k].text, slen);
                len += slen;
                len += filler(text + len, 16);

                cases++;
                if (gd_audit_mask_cut("route", text, len, limit, &out,
                                      &outlen) != 0 ||
                    !cut_ok(out, outlen, limit, k, &why)) {
                    if (bad++ < 5) {
                        printf("# %s at %zu, limit %zu: %s: \"%.*s\"\n",
                               secrets[k].text, off, limit,
                               why ? why : "failed", (int)outlen,
                               out ? out : "");
                    }
                }
                whole +=
                    off + slen <= limit && outlen >= off + strlen("[card]");

                /* the old way, cut then mask, is caught by the check */
                if (off < limit && off + slen > limit) {
                    json_t *rec = json_object();
                    json_object_set_new(rec, "route",
                                        json_stringn(text, limit));
                    if (gd_audit_mask(rec) >= 0) {
                        json_t *v = json_object_get(rec, "route");
                        leaked_before += leaks(json_string_value(v),
                                               json_string_length(v), k);
                    }
                    json_decref(rec);
                }
                free(out);
                out = NULL;
            }
        }
    }

    TAP_OK(bad == 0,
           "%d texts, each secret at every offset around each limit: "
           "no piece left, within the limit, no torn placeholder or "
           "character, masked again unchanged (%d bad)",
           cases, bad);
    TAP_OK(whole > 0, "a secret before the cut leaves its placeholder (%d)",
           whole);
    TAP_OK(leaked_before > 0,
           "the check sees what cutting before masking leaked (%d texts)",
           leaked_before);

    /* seeded mixes of secrets and filler, any limit */
    {
        unsigned long seed = 20261201;
        int mixes = 0, mbad = 0;

        for (int i = 0; i < 3000; i++) {
            size_t len = 0, limit;
            int parts;

            seed = seed * 6364136223846793005UL + 1442695040888963407UL;
            parts = 1 + (int)((seed >> 33) % 12);
            for (int p = 0; p < parts; p++) {
                seed = seed * 6364136223846793005UL + 1442695040888963407UL;
                int k = (int)((seed >> 33) % SECRET_N);
                size_t f = (size_t)((seed >> 40) % 9);
                if (len + f + 4 + strlen(secrets[k].text) >= sizeof(text)) {
                    break;
                }
                /* "é" ends every secret's run and starts none (secrets
                 * run into each other are another matter) */
                memcpy(text + len, "\xc3\xa9", 2);
                len += 2 + filler(text + len + 2, f);
                memcpy(text + len, "\xc3\xa9", 2);
                len += 2;
                memcpy(text + len, secrets[k].text, strlen(secrets[k].text));
                len += strlen(secrets[k].text);
            }
            seed = seed * 6364136223846793005UL + 1442695040888963407UL;
            limit = (size_t)((seed >> 33) % (len + 8));

            mixes++;
            if (gd_audit_mask_cut("route", text, len, limit, &out, &outlen) !=
                0) {
                mbad++;
                continue;
            }
            for (int k = 0; k < SECRET_N; k++) {
                if (!cut_ok(out, outlen, limit, k, &why)) {
                    if (mbad++ < 3) {
                        printf("# limit %zu: %s: \"%.*s\"\n", limit, why,
                               (int)outlen, out);
                    }
                    break;
                }
            }
            free(out);
        }
        TAP_OK(mbad == 0, "%d seeded mixes of secrets, cut anywhere (%d bad)",
               mixes, mbad);
    }

    /* members never pattern-masked are only cut; secret members masked */
    TAP_OK(gd_audit_mask_cut("subject", "bob@example.com", 15, 7, &out,
                             &outlen) == 0 &&
               outlen == 7 && memcmp(out, "bob@exa", 7) == 0,
           "the subject is kept as issued: only cut");
    free(out);
    TAP_OK(gd_audit_mask_cut("tenant", "t\xc3\xa9", 3, 2, &out, &outlen) == 0 &&
               outlen == 1,
           "never inside a UTF-8 sequence");
    free(out);
    TAP_OK(gd_audit_mask_cut("Authorization", "Basic Zm9v", 10, 100, &out,
                             &outlen) == 0 &&
               strcmp(out, "[masked]") == 0,
           "a secret member is [masked]");
    free(out);
    TAP_OK(gd_audit_mask_cut("route", "/a/" JWT, strlen("/a/" JWT), 100, &out,
                             &outlen) == 0 &&
               strcmp(out, "/a/[token]") == 0,
           "a text within the limit is masked, not cut");
    free(out);
    TAP_OK(gd_audit_mask_cut("route", "/a/bob@example.com", 18, 8, &out,
                             &outlen) == 0 &&
               strcmp(out, "/a/") == 0,
           "a placeholder across the cut goes whole: \"%s\"", out);
    free(out);
    TAP_OK(gd_audit_mask_cut(NULL, "", 0, 0, &out, &outlen) == 0 &&
               outlen == 0 && out[0] == '\0',
           "empty text, limit 0");
    free(out);
}

int main(void)
{
    json_error_t jerr;
    uint8_t id[GD_AUDIT_ID_LEN];

    TAP_OK(gd_audit_init() == 0, "the patterns compile");
    TAP_OK(gd_audit_init() == 0, "and init is idempotent");

    /* (a) secret member names, any case, any value */

    json_t *rec = json_loads(
        "{\"Authorization\": \"Basic dXNlcjpwYXNz\","
        " \"COOKIE\": \"sid=abc\","
        " \"Set-Cookie\": [\"a=1\", \"b=2\"],"
        " \"token\": {\"nested\": \"x\"},"
        " \"access_token\": 12345,"
        " \"id_token\": null, \"refresh_token\": true,"
        " \"Password\": \"hunter2\", \"passwd\": 1.5,"
        " \"secret\": \"\", \"client_secret\": \"s\","
        " \"api_key\": \"k\", \"ApiKey\": \"k\", \"X-API-Key\": \"k\","
        " \"proxy-authorization\": \"Basic Zm9v\","
        " \"tokens\": \"kept\", \"reason\": \"token_invalid\"}",
        0, &jerr);
    int n = gd_audit_mask(rec);
    const char *names[] = {
        "Authorization", "COOKIE",    "Set-Cookie",         "token",
        "access_token",  "id_token",  "refresh_token",      "Password",
        "passwd",        "secret",    "client_secret",      "api_key",
        "ApiKey",        "X-API-Key", "proxy-authorization"};
    int all = 1;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const char *v = json_string_value(json_object_get(rec, names[i]));
        if (v == NULL || strcmp(v, "[masked]") != 0) {
            all = 0;
            printf("# %s is not masked\n", names[i]);
        }
    }
    TAP_OK(all, "every secret name is [masked], whatever its value or case");
    TAP_OK(n == 15, "15 values changed (%d)", n);
    TAP_OK(strcmp(json_string_value(json_object_get(rec, "tokens")), "kept") ==
                   0 &&
               strcmp(json_string_value(json_object_get(rec, "reason")),
                      "token_invalid") == 0,
           "other names are not secrets");
    TAP_OK(gd_audit_mask(rec) == 0, "masking again changes nothing");
    json_decref(rec);

    /* (b) patterns inside strings */

    note_is(JWT, "[token]", "a JWT");
    note_is("/api/orders?access=" JWT "&x=1", "/api/orders?access=[token]&x=1",
            "a JWT inside a route");
    note_is("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "[token]",
            "an unsigned JWT (empty signature)");
    note_is("jwe eyJhbGciOiJkaXIifQ..aXY.Y3Q.dGFn end", "jwe [token] end",
            "a JWE (five segments)");
    unchanged("eyJhbGciOiJIUzI1NiJ9 alone", "a lone base64 segment");

    note_is("Authorization: Bearer abc.DEF-123_~+/xyz==",
            "Authorization: "
            "Bearer [masked]",
            "Bearer and a token68");
    note_is("sent bearer\tmF_9.B5f-4.1JqM, then", "sent Bearer [masked], then",
            "bearer in any case, any white space");
    note_is("BEARER " JWT, "Bearer [masked]", "a bearer JWT");
    unchanged("the bearer_token was missing", "bearer_token is not a bearer");

    note_is("mail alice.smith+tag@mail.example.co.uk now", "mail [email] now",
            "an e-mail address");
    note_is("a@b.io,c@d.org", "[email],[email]", "two e-mail addresses");
    unchanged("user@localhost", "no dotted domain: not masked");
    unchanged("/@scope/pkg@1.2.3", "a package spec is not an address");

    note_is("card 4111111111111111 paid", "card [card] paid",
            "a Luhn-valid card number");
    note_is("4111 1111 1111 1111", "[card]", "grouped by spaces");
    note_is("5500-0000-0000-0004.", "[card].", "grouped by dashes");
    note_is("amex 3782 822463 10005", "amex [card]", "a 15-digit Amex");
    note_is("6011000990139424,4012888888881881", "[card],[card]", "two cards");
    unchanged("card 4111111111111112 declined", "a 16-digit run failing Luhn");
    unchanged("order 1234567812345678", "another run failing Luhn");
    unchanged("4111111111111111111111", "22 digits: too long for a card");
    unchanged("411111111111", "12 digits: too short");
    unchanged("4111  1111 1111 1111", "two spaces split the groups");

    /* no false positives */
    unchanged("01900000-0000-7000-8000-000000000001", "an all-digit UUID");
    unchanged("0190abcd-1234-7000-8000-411111111111",
              "a UUID ending in digits");
    unchanged("abcdef01-2345-7000-4111-111111111111",
              "a UUID whose last groups look like a card");
    unchanged(
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "a SHA-256 in hex");
    unchanged(
        "9999999999999999999999999999999999999999999999999999999999999999",
        "64 hex digits that are all digits");
    unchanged("10.0.0.1 and 192.168.100.200", "IPv4 addresses");
    unchanged("2001:db8::8a2e:370:7334 and ::ffff:10.0.0.1", "IPv6 addresses");
    unchanged("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
              "a traceparent");
    unchanged("00-41111111111111111111111111111111-1111111111111111-01",
              "an all-digit traceparent");
    unchanged("ts 1700000000123 ok", "a millisecond timestamp (fails Luhn)");
    unchanged("Token expired at 2024-01-15", "prose");

    /* names whose values are never pattern-masked, and the others */
    rec = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s,"
                    " s:s}",
                    "id", "4111111111111111", "hash", "4111111111111111",
                    "prev_hash", "4111111111111111", "policy_version",
                    "4111111111111111", "decision_id", "4111111111111111",
                    "review_of", "4111111111111111", "traceparent",
                    "4111111111111111", "ts_ms", "4111111111111111", "route",
                    "4111111111111111", "subject", "alice@example.com",
                    "tenant", "t@example.com", "analyst", "soc@example.com");
    n = gd_audit_mask(rec);
    TAP_OK(n == 1 &&
               strcmp(json_string_value(json_object_get(rec, "route")),
                      "[card]") == 0 &&
               strcmp(json_string_value(json_object_get(rec, "hash")),
                      "4111111111111111") == 0 &&
               strcmp(json_string_value(json_object_get(rec, "subject")),
                      "alice@example.com") == 0,
           "id, hash, ... subject, analyst are not pattern-masked, route is "
           "(%d)",
           n);
    json_decref(rec);

    /* nested objects and arrays */
    rec = json_loads(
        "{\"id\": \"01900000-0000-7000-8000-000000000001\","
        " \"route\": \"/x/" JWT "\","
        " \"headers\": {\"Authorization\": \"Bearer abc\","
        "               \"Cookie\": \"sid=1\", \"X-Note\": "
        "\"bob@example.com\"},"
        " \"list\": [\"4111 1111 1111 1111\", {\"password\": [1, 2]},"
        "            [[\"deep a@b.cc\"]], 7, null],"
        " \"claims\": {\"sub\": \"u1\", \"email\": \"carol@example.org\","
        "              \"roles\": [\"admin\"]}}",
        0, &jerr);
    TAP_OK(rec != NULL, "a nested record");
    n = gd_audit_mask(rec);
    json_t *want = json_loads(
        "{\"id\": \"01900000-0000-7000-8000-000000000001\","
        " \"route\": \"/x/[token]\","
        " \"headers\": {\"Authorization\": \"[masked]\","
        "               \"Cookie\": \"[masked]\", \"X-Note\": \"[email]\"},"
        " \"list\": [\"[card]\", {\"password\": \"[masked]\"},"
        "            [[\"deep [email]\"]], 7, null],"
        " \"claims\": {\"sub\": \"u1\", \"email\": \"[email]\","
        "              \"roles\": [\"admin\"]}}",
        0, &jerr);
    TAP_OK(same_json(rec, want), "masked at every depth");
    TAP_OK(n == 8, "8 values changed (%d)", n);
    json_t *copy = json_deep_copy(rec);
    TAP_OK(gd_audit_mask(rec) == 0 && same_json(rec, copy),
           "masking is idempotent");
    json_decref(copy);
    json_decref(want);
    json_decref(rec);

    /* the outputs themselves are never masked again */
    unchanged("[token] Bearer [masked] [email] [card] [masked]",
              "the replacements are stable");

    /* strings with NUL bytes and non-ASCII text */
    rec = json_object();
    json_object_set_new(rec, "note",
                        json_stringn("\xc3\xa9 a@b.io\0 4111111111111111", 27));
    n = gd_audit_mask(rec);
    json_t *v = json_object_get(rec, "note");
    TAP_OK(n == 1 && json_string_length(v) == 18 &&
               memcmp(json_string_value(v), "\xc3\xa9 [email]\0 [card]", 18) ==
                   0,
           "UTF-8 and NUL bytes are kept around the masks");
    json_decref(rec);

    TAP_OK(gd_audit_mask(NULL) == 0, "NULL: nothing to mask");
    rec = json_string("mail a@b.io");
    TAP_OK(gd_audit_mask(rec) == 1 &&
               strcmp(json_string_value(rec), "mail [email]") == 0,
           "a bare string is masked too");
    json_decref(rec);

    /* a long value: linear time, every match replaced */
    {
        size_t reps = 20000;
        char *big = malloc(reps * 20 + 1), *p = big;
        for (size_t i = 0; i < reps; i++) {
            memcpy(p, "x a@b.io 41111111 ", 18);
            p += 18;
        }
        *p = '\0';
        rec = json_pack("{s:s}", "note", big);
        n = gd_audit_mask(rec);
        const char *m = json_string_value(json_object_get(rec, "note"));
        TAP_OK(n == 1 && strstr(m, "@") == NULL &&
                   strlen(m) == reps * strlen("x [email] 41111111 "),
               "20000 addresses in one value");
        json_decref(rec);
        free(big);
    }

    /* ids */
    TAP_OK(gd_audit_id_parse("018bcfe5-6800-7abc-8def-0123456789ab", 36, id) ==
                   0 &&
               id[0] == 0x01 && id[1] == 0x8b && id[6] == 0x7a &&
               id[15] == 0xab,
           "a lowercase UUID parses");
    uint8_t up[GD_AUDIT_ID_LEN];
    TAP_OK(gd_audit_id_parse("018BCFE5-6800-7ABC-8DEF-0123456789AB", 36, up) ==
                   0 &&
               memcmp(id, up, sizeof(id)) == 0,
           "uppercase: the same id");
    const char *bad[] = {"018bcfe5-6800-7abc-8def-0123456789a",
                         "018bcfe5-6800-7abc-8def-0123456789abc",
                         "018bcfe56800-7abc-8def-0123456789ab0",
                         "018bcfe5-6800-7abc-8def_0123456789ab",
                         "018bcfe5-6800-7abc-8deg-0123456789ab",
                         "{18bcfe5-6800-7abc-8def-0123456789ab",
                         " 18bcfe5-6800-7abc-8def-0123456789ab",
                         "018bcfe5-6800-7abc-8def-0123456789a\n",
                         "018bcfe568007abc8def0123456789ab",
                         ""};
    int rejected = 1;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (gd_audit_id_parse(bad[i], strlen(bad[i]), id) == 0) {
            rejected = 0;
            printf("# accepted: %s\n", bad[i]);
        }
    }
    TAP_OK(rejected, "%zu malformed ids are refused",
           sizeof(bad) / sizeof(bad[0]));
    TAP_OK(gd_audit_id_parse("018bcfe5-6800-7abc-8def-0123456789ab", 35, id) !=
               0,
           "the length counts");
    TAP_OK(gd_audit_id_parse(NULL, 36, id) != 0, "NULL is refused");

    /* seeded random text made of the patterns' pieces: masking never
     * fails and a second pass changes nothing */
    {
        static const char *const pieces[] = {"eyJ",
                                             "hbGci",
                                             ".",
                                             "-",
                                             "_",
                                             "@",
                                             "example.com",
                                             " ",
                                             "4111",
                                             "1111",
                                             "0",
                                             "9",
                                             "Bearer ",
                                             "bearer\t",
                                             "a",
                                             "Z",
                                             "/",
                                             "%ff",
                                             "\xc3\xa9",
                                             "+",
                                             ":",
                                             "==",
                                             "5500 0000 0000 0004",
                                             "x@y.z"};
        unsigned long seed = 20261122;
        int bad = 0, masked = 0;

        for (int i = 0; i < 20000; i++) {
            char text[512];
            size_t len = 0;
            int parts = 1 + (int)((seed = seed * 6364136223846793005UL +
                                          1442695040888963407UL) >>
                                  59);

            for (int k = 0; k < parts * 2; k++) {
                seed = seed * 6364136223846793005UL + 1442695040888963407UL;
                const char *p =
                    pieces[(seed >> 33) % (sizeof(pieces) / sizeof(*pieces))];
                size_t n = strlen(p);
                if (len + n >= sizeof(text)) {
                    break;
                }
                memcpy(text + len, p, n);
                len += n;
            }

            rec = json_object();
            json_object_set_new(rec, "route", json_stringn(text, len));
            n = gd_audit_mask(rec);
            masked += n > 0;
            if (n < 0 || gd_audit_mask(rec) != 0) {
                if (bad++ < 3) {
                    printf("# not idempotent: \"%.*s\"\n", (int)len, text);
                }
            }
            json_decref(rec);
        }
        TAP_OK(bad == 0 && masked > 0,
               "20000 seeded texts: masked %d, a second pass changed %d",
               masked, bad);
    }

    mask_cut_tests();

    return tap_done();
}
