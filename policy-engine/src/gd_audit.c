/*
 * gd_audit: masking audit records and parsing their ids, see gd_audit.h.
 */
#include "gd_audit.h"
#include "gd_proto.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdlib.h>
#include <string.h>

/* the patterns, in the order they are applied to a string */

enum { GD_RE_BEARER, GD_RE_JWT, GD_RE_EMAIL, GD_RE_CARD, GD_RE_N };

static const struct {
    const char *pattern;
    const char *replacement;
} gd_audit_rules[GD_RE_N] = {
    /* RFC 6750: "Bearer" 1*SP b64token (token68) */
    {"\\b(?i:bearer)\\s+[A-Za-z0-9._~+/-]++=*+", GD_AUDIT_BEARER},

    /* compact JWS (3 segments) or JWE (5): the first is {"... in base64url */
    {"eyJ[A-Za-z0-9_-]++(?:\\.[A-Za-z0-9_-]*+){2,4}+", GD_AUDIT_TOKEN},

    /* a dotted domain ending in letters; starts where a local part starts */
    {"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]++@"
     "(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z]{2,63}"
     "(?![A-Za-z0-9-])",
     GD_AUDIT_EMAIL},

    /* groups of digits joined by single spaces or dashes, the whole run:
     * not touching letters or digits, nor dash-joined to a word (so the
     * digit groups of a UUID are never a card); length and Luhn in C */
    {"(?<![0-9A-Za-z])(?<![0-9A-Za-z]-)[0-9]++(?:[ -][0-9]++)*+"
     "(?![0-9A-Za-z])(?!-[0-9A-Za-z])",
     GD_AUDIT_CARD},
};

static pcre2_code *gd_audit_re[GD_RE_N];

static const char *const gd_audit_secret_names[] = {
    "authorization", "proxy-authorization",
    "cookie",        "set-cookie",
    "token",         "access_token",
    "id_token",      "refresh_token",
    "password",      "passwd",
    "secret",        "client_secret",
    "api_key",       "apikey",
    "x-api-key",     NULL};

/*
 * ids and hashes (hex digit runs), and who the record is about: the
 * tenant, the subject and the reviewing analyst are the keys SOC searches
 * by, kept as issued (tokens should carry opaque subject ids)
 */
static const char *const gd_audit_plain_names[] = {
    "id",          "hash",      "prev_hash",   "policy_version",
    "decision_id", "review_of", "traceparent", "ts_ms",
    "tenant",      "subject",   "analyst",     NULL};

int gd_audit_init(void)
{
    int i;

    if (gd_audit_re[GD_RE_N - 1] != NULL) {
        return 0;
    }

    for (i = 0; i < GD_RE_N; i++) {
        int errcode;
        PCRE2_SIZE erroffset;

        if (gd_audit_re[i] != NULL) {
            continue;
        }

        gd_audit_re[i] =
            pcre2_compile((PCRE2_SPTR)gd_audit_rules[i].pattern,
                          PCRE2_ZERO_TERMINATED, 0, &errcode, &erroffset, NULL);
        if (gd_audit_re[i] == NULL) {
            return -1;
        }

        /* without JIT (not built in, or not allowed) the interpreter runs */
        (void)pcre2_jit_compile(gd_audit_re[i], PCRE2_JIT_COMPLETE);
    }

    return 0;
}

/* member names */

static int name_is(const char *name, const char *const *list)
{
    size_t i, k;

    for (i = 0; list[i] != NULL; i++) {
        for (k = 0; list[i][k] != '\0'; k++) {
            unsigned char c = (unsigned char)name[k];
            if (c >= 'A' && c <= 'Z') {
                c = (unsigned char)(c - 'A' + 'a');
            }
            if (c != (unsigned char)list[i][k]) {
                break;
            }
        }
        if (list[i][k] == '\0' && name[k] == '\0') {
            return 1;
        }
    }

    return 0;
}

static int card_ok(const char *s, size_t len)
{
    unsigned sum = 0, digits = 0;
    size_t i;

    for (i = len; i > 0; i--) {
        unsigned d;

        if (s[i - 1] < '0' || s[i - 1] > '9') {
            continue;
        }
        d = (unsigned)(s[i - 1] - '0');
        if (digits % 2 == 1) {
            d *= 2;
            if (d > 9) {
                d -= 9;
            }
        }
        sum += d;
        digits++;
    }

    return digits >= 13 && digits <= 19 && sum % 10 == 0;
}

/*
 * Applies one rule to text: 1 with the result in out (malloc'ed), 0 when
 * nothing matched, -1 when out of memory, -2 on a match error.
 */
static int apply_rule(int rule, const char *text, size_t len,
                      pcre2_match_data *md, gd_proto_buf_t *out)
{
    const char *repl = gd_audit_rules[rule].replacement;
    PCRE2_SIZE start = 0, copied = 0;
    int changed = 0;

    while (start < len) {
        PCRE2_SIZE *ov;
        int rc = pcre2_match(gd_audit_re[rule], (PCRE2_SPTR)text, len, start, 0,
                             md, NULL);

        if (rc == PCRE2_ERROR_NOMATCH) {
            break;
        }
        if (rc < 0) {
            return -2;
        }

        ov = pcre2_get_ovector_pointer(md);
        if (ov[1] <= ov[0]) {
            /* no rule matches the empty string; never loop on one */
            start = ov[0] + 1;
            continue;
        }

        if (rule == GD_RE_CARD && !card_ok(text + ov[0], ov[1] - ov[0])) {
            start = ov[1];
            continue;
        }

        if (gd_proto_buf_add(out, text + copied, ov[0] - copied) != 0 ||
            gd_proto_buf_add(out, repl, strlen(repl)) != 0) {
            return -1;
        }
        copied = ov[1];
        start = ov[1];
        changed = 1;
    }

    if (!changed) {
        return 0;
    }

    return gd_proto_buf_add(out, text + copied, len - copied) == 0 ? 1 : -1;
}

/*
 * The rules run again over their own output until nothing changes: a
 * placeholder can make a boundary that a pattern wanted where the text
 * it replaced did not (an e-mail right after a masked one), and masking
 * must be idempotent.  Text that still changes after GD_AUDIT_PASSES
 * passes is masked whole.
 */
#define GD_AUDIT_PASSES 4

/*
 * Masks text to a fixed point: 1 with the result in *res (malloc'ed by
 * gd_proto_buf_add), 0 when nothing matched (*res untouched), -1 when out
 * of memory.
 */
static int mask_text(const char *text, size_t len, pcre2_match_data *md,
                     gd_proto_buf_t *res)
{
    gd_proto_buf_t cur = {NULL, 0, 0};
    int rule, pass, changed = 1, rc = 0;

    for (pass = 0; changed && pass < GD_AUDIT_PASSES; pass++) {
        changed = 0;

        for (rule = 0; rule < GD_RE_N; rule++) {
            gd_proto_buf_t next = {NULL, 0, 0};
            int r = apply_rule(rule, text, len, md, &next);

            if (r == 1) {
                free(cur.data);
                cur = next;
                text = (const char *)cur.data;
                len = cur.len;
                changed = rc = 1;
                continue;
            }

            free(next.data);

            if (r == -1) {
                free(cur.data);
                return -1;
            }

            if (r == -2) {
                /* cannot tell what is in it: nothing of it is kept */
                changed = 1;
                pass = GD_AUDIT_PASSES;
                break;
            }
        }
    }

    if (changed) {
        /* no fixed point, or a match error: masked whole */
        cur.len = 0;
        if (gd_proto_buf_add(&cur, GD_AUDIT_MASKED,
                             sizeof(GD_AUDIT_MASKED) - 1) != 0) {
            free(cur.data);
            return -1;
        }
        rc = 1;
    }

    if (rc == 1) {
        *res = cur;
    }

    return rc;
}

/* 1 changed, 0 not, -1 out of memory */
static int mask_string(json_t *s, pcre2_match_data *md)
{
    gd_proto_buf_t res = {NULL, 0, 0};
    int rc = mask_text(json_string_value(s), json_string_length(s), md, &res);

    if (rc == 1) {
        rc = json_string_setn(s, res.data ? (const char *)res.data : "",
                              res.len) == 0
                 ? 1
                 : -1;
    }

    free(res.data);
    return rc;
}

static int mask_value(json_t *v, pcre2_match_data *md, int patterns);

static int mask_object(json_t *o, pcre2_match_data *md)
{
    void *it;
    int n = 0;

    for (it = json_object_iter(o); it != NULL;
         it = json_object_iter_next(o, it)) {
        const char *key = json_object_iter_key(it);
        json_t *v = json_object_iter_value(it);
        int r;

        if (name_is(key, gd_audit_secret_names)) {
            const char *sv = json_string_value(v);

            if (sv != NULL && strcmp(sv, GD_AUDIT_MASKED) == 0 &&
                json_string_length(v) == sizeof(GD_AUDIT_MASKED) - 1) {
                continue;
            }
            if (json_object_iter_set_new(o, it, json_string(GD_AUDIT_MASKED)) !=
                0) {
                return -1;
            }
            n++;
            continue;
        }

        r = mask_value(v, md, !name_is(key, gd_audit_plain_names));
        if (r < 0) {
            return -1;
        }
        n += r;
    }

    return n;
}

static int mask_value(json_t *v, pcre2_match_data *md, int patterns)
{
    size_t i;
    int n = 0, r;

    switch (json_typeof(v)) {

    case JSON_OBJECT:
        return mask_object(v, md);

    case JSON_ARRAY:
        for (i = 0; i < json_array_size(v); i++) {
            r = mask_value(json_array_get(v, i), md, 1);
            if (r < 0) {
                return -1;
            }
            n += r;
        }
        return n;

    case JSON_STRING:
        return patterns ? mask_string(v, md) : 0;

    default:
        return 0;
    }
}

int gd_audit_mask(json_t *rec)
{
    pcre2_match_data *md;
    int n;

    if (rec == NULL) {
        return 0;
    }

    if (gd_audit_init() != 0) {
        return -1;
    }

    md = pcre2_match_data_create(1, NULL);
    if (md == NULL) {
        return -1;
    }

    n = mask_value(rec, md, 1);
    pcre2_match_data_free(md);
    return n;
}

/* cutting */

/* what masking leaves, longest first ("Bearer [masked]" holds "[masked]") */
static const char *const gd_audit_placeholders[] = {
    GD_AUDIT_BEARER, GD_AUDIT_MASKED, GD_AUDIT_TOKEN,
    GD_AUDIT_EMAIL,  GD_AUDIT_CARD,   NULL};

/*
 * Where to cut s (len > limit) to at most limit bytes: never inside a
 * placeholder (the cut moves before it) nor inside a UTF-8 sequence.
 */
static size_t cut_point(const char *s, size_t len, size_t limit)
{
    size_t cut = limit, i, at, plen;
    int moved = 1;

    while (moved) {
        moved = 0;

        for (i = 0; gd_audit_placeholders[i] != NULL; i++) {
            plen = strlen(gd_audit_placeholders[i]);

            for (at = cut >= plen ? cut - plen + 1 : 0; at < cut; at++) {
                if (at + plen <= len &&
                    memcmp(s + at, gd_audit_placeholders[i], plen) == 0) {
                    cut = at;
                    moved = 1;
                    break;
                }
            }
        }
    }

    while (cut > 0 && ((unsigned char)s[cut] & 0xc0) == 0x80) {
        cut--;
    }

    return cut;
}

static int copy_out(const char *text, size_t len, char **out, size_t *outlen)
{
    char *p = malloc(len + 1);

    if (p == NULL) {
        return -1;
    }

    memcpy(p, text, len);
    p[len] = '\0';
    *out = p;
    *outlen = len;
    return 0;
}

int gd_audit_mask_cut(const char *name, const char *text, size_t len,
                      size_t limit, char **out, size_t *outlen)
{
    gd_proto_buf_t cur = {NULL, 0, 0};
    pcre2_match_data *md;
    int round, rc;

    *out = NULL;
    *outlen = 0;

    if (name != NULL && name_is(name, gd_audit_secret_names)) {
        return copy_out(GD_AUDIT_MASKED,
                        limit >= sizeof(GD_AUDIT_MASKED) - 1
                            ? sizeof(GD_AUDIT_MASKED) - 1
                            : 0,
                        out, outlen);
    }

    if (name != NULL && name_is(name, gd_audit_plain_names)) {
        return copy_out(text, len > limit ? cut_point(text, len, limit) : len,
                        out, outlen);
    }

    if (gd_audit_init() != 0) {
        return -1;
    }

    md = pcre2_match_data_create(1, NULL);
    if (md == NULL) {
        return -1;
    }

    /*
     * masked whole first, so that a secret across the cut is a
     * placeholder by then; the cut text is masked again, as a cut can
     * end a run that a pattern wanted ended (digits, a domain), and a
     * placeholder may be longer than what it replaced
     */
    for (round = 0; round < GD_AUDIT_PASSES; round++) {
        gd_proto_buf_t next = {NULL, 0, 0};

        rc = mask_text(text, len, md, &next);
        if (rc < 0) {
            pcre2_match_data_free(md);
            free(cur.data);
            return -1;
        }

        if (rc == 1) {
            free(cur.data);
            cur = next;
            text = cur.data ? (const char *)cur.data : "";
            len = cur.len;
        }

        if (len <= limit) {
            break;
        }

        len = cut_point(text, len, limit);
    }

    pcre2_match_data_free(md);

    if (len > limit || round == GD_AUDIT_PASSES) {
        /* never settled: nothing of it is kept */
        text = GD_AUDIT_MASKED;
        len = limit >= sizeof(GD_AUDIT_MASKED) - 1 ? sizeof(GD_AUDIT_MASKED) - 1
                                                   : 0;
    }

    rc = copy_out(text, len, out, outlen);
    free(cur.data);
    return rc;
}

/* ids */

static int hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

json_t *gd_audit_text_value(const char *name, const char *text, size_t len,
                            size_t limit)
{
    json_t *v;
    char *cut;
    size_t n;

    if (limit == 0 || len <= limit) {
        return json_stringn(text, len);
    }

    if (gd_audit_mask_cut(name, text, len, limit, &cut, &n) != 0) {
        return NULL;
    }

    v = json_stringn(cut, n);
    free(cut);
    return v;
}

int gd_audit_id_parse(const char *text, size_t len,
                      uint8_t out[GD_AUDIT_ID_LEN])
{
    uint8_t id[GD_AUDIT_ID_LEN];
    size_t i, n = 0;

    if (text == NULL || len != GD_AUDIT_ID_STRLEN) {
        return -1;
    }

    for (i = 0; i < GD_AUDIT_ID_STRLEN;) {
        int hi, lo;

        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (text[i] != '-') {
                return -1;
            }
            i++;
            continue;
        }

        hi = hexval(text[i]);
        lo = hexval(text[i + 1]);
        if (hi < 0 || lo < 0) {
            return -1;
        }
        id[n++] = (uint8_t)(hi << 4 | lo);
        i += 2;
    }

    memcpy(out, id, sizeof(id));
    return 0;
}
