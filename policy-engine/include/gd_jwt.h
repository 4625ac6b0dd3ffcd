/*
 * gd_jwt: the parts of JWT handling that need neither nginx nor a key.
 *
 *   - the JWS compact serialization: three segments (RFC 7515 section 7.1);
 *   - canonical base64url (RFC 4648 sections 5 and 3.5), decoded by
 *     OpenSSL: no padding, no character outside the URL alphabet, and the
 *     unused low bits of the last character zero, so that one token has
 *     one spelling;
 *   - the JSON of the header and of the payload (jansson), with no
 *     duplicate members and no "\u0000" anywhere;
 *   - NumericDate claims, range-checked before any arithmetic, and the
 *     time checks (exp, nbf, iat, maximum lifetime) done without overflow.
 *
 * The nginx module verifies signatures and calls these; the fuzz target
 * fuzz_jwt drives them all.  Nothing here allocates except jansson.
 */
#ifndef GD_JWT_H
#define GD_JWT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The JSON of tokens: duplicate members are refused (no parser
 * differentials); "\u0000" is refused too (JSON_ALLOW_NUL is not given),
 * so that no NUL reaches a claim, a log line or guardd.
 */
#define GD_JWT_JSON_FLAGS JSON_REJECT_DUPLICATES

/*
 * The NumericDates accepted: 0 (1970-01-01T00:00:00Z) to 253402300799
 * (9999-12-31T23:59:59Z).  Within this range, and with a leeway and a
 * lifetime of at most INT64_MAX, no check can overflow.
 */
#define GD_JWT_DATE_MAX INT64_C(253402300799)

typedef enum {
    GD_JWT_OK = 0,
    GD_JWT_ABSENT,           /* gd_jwt_date(): no such claim */
    GD_JWT_MALFORMED,        /* token_malformed */
    GD_JWT_CRIT,             /* token_crit_refused */
    GD_JWT_CLAIM_INVALID,    /* token_claim_invalid */
    GD_JWT_EXPIRED,          /* token_expired */
    GD_JWT_NOT_YET_VALID,    /* token_not_yet_valid */
    GD_JWT_LIFETIME_EXCEEDED /* token_lifetime_exceeded */
} gd_jwt_rc_t;

typedef struct {
    const char *p;
    size_t len;
} gd_jwt_span_t;

/*
 * Splits a compact serialization into its three segments (pointers into
 * token).  0, or -1 when there are not exactly two dots.
 */
int gd_jwt_split(const char *token, size_t len, gd_jwt_span_t part[3]);

/* Room that gd_b64url_decode() needs for len characters. */
#define GD_B64URL_DECODED_MAX(len) ((len) / 4 * 3 + 2)

/*
 * Decodes canonical, unpadded base64url into out (GD_B64URL_DECODED_MAX
 * bytes of room) and sets *out_len.  0, or -1 for anything else: a
 * character outside A-Z a-z 0-9 - _ (so also "=" and white space), a
 * length of 4n+1, or a last character whose unused low bits are not zero.
 */
int gd_b64url_decode(const char *in, size_t len, uint8_t *out, size_t *out_len);

/* The header of a JWS: its JSON, and its "alg" and "kid" in it. */
typedef struct {
    json_t *root; /* owns alg and kid: json_decref() it */
    const char *alg;
    size_t alg_len;
    const char *kid; /* NULL: no "kid" */
    size_t kid_len;
} gd_jwt_header_t;

/*
 * Parses a decoded header: a JSON object with a string "alg", no "crit"
 * (no extension is understood, so none may be critical) and, if any, a
 * string "kid".  GD_JWT_OK (h->root set: the caller frees it),
 * GD_JWT_MALFORMED or GD_JWT_CRIT (h->root NULL).
 */
gd_jwt_rc_t gd_jwt_header(const uint8_t *text, size_t len, gd_jwt_header_t *h);

/*
 * Parses a decoded payload: a JSON object, or NULL with *rc set.
 * GD_JWT_CLAIM_INVALID when the JSON has "\u0000" in a string or a member
 * name, or a number that no C type of jansson holds (an integer beyond 64
 * bits, a real beyond double); GD_JWT_MALFORMED for any other fault.
 */
json_t *gd_jwt_payload(const uint8_t *text, size_t len, gd_jwt_rc_t *rc);

/*
 * The NumericDate claim name of payload, in whole seconds (a fraction is
 * dropped).  GD_JWT_OK, GD_JWT_ABSENT, or GD_JWT_CLAIM_INVALID when it is
 * not a number or lies outside 0 .. GD_JWT_DATE_MAX.
 */
gd_jwt_rc_t gd_jwt_date(const json_t *payload, const char *name,
                        int64_t *value);

/* The time claims of a token, each within 0 .. GD_JWT_DATE_MAX. */
typedef struct {
    int64_t exp;
    int64_t nbf;
    int64_t iat;
    unsigned has_nbf : 1;
    unsigned has_iat : 1;
} gd_jwt_times_t;

/*
 * Reads "exp" (required), "nbf" and "iat" with gd_jwt_date().  GD_JWT_OK
 * or GD_JWT_CLAIM_INVALID.
 */
gd_jwt_rc_t gd_jwt_times(const json_t *payload, gd_jwt_times_t *t);

/*
 * The time checks, in this order, at time now with a leeway (negative:
 * 0) and a maximum lifetime (0 or negative: none):
 *   GD_JWT_CLAIM_INVALID      a date outside 0 .. GD_JWT_DATE_MAX;
 *   GD_JWT_EXPIRED            now >= exp + leeway;
 *   GD_JWT_NOT_YET_VALID      now < nbf - leeway;
 * with a maximum lifetime:
 *   GD_JWT_CLAIM_INVALID      no "iat";
 *   GD_JWT_LIFETIME_EXCEEDED  exp - iat > max_lifetime, or
 *                             exp - now > max_lifetime + leeway;
 * and last:
 *   GD_JWT_NOT_YET_VALID      now < iat - leeway (issued in the future).
 * now is taken within 0 .. GD_JWT_DATE_MAX.  No step can overflow.
 */
gd_jwt_rc_t gd_jwt_check_times(const gd_jwt_times_t *t, int64_t now,
                               int64_t leeway, int64_t max_lifetime);

#endif
