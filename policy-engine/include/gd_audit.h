/*
 * gd_audit: audit records on their way to the journal: masking secrets
 * and personal data, and their ids.
 *
 * Shared by the nginx module (which masks before it sends or spills a
 * record) and guardd (which masks again whatever it is given: masking is
 * idempotent).  The only state is the compiled patterns (PCRE2), made
 * once by gd_audit_init() and read-only afterwards, so that any number of
 * threads or processes may mask at once.
 */
#ifndef GD_AUDIT_H
#define GD_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define GD_AUDIT_ID_LEN 16
#define GD_AUDIT_ID_STRLEN 36

/* what masked values become */
#define GD_AUDIT_MASKED "[masked]"
#define GD_AUDIT_TOKEN "[token]"
#define GD_AUDIT_BEARER "Bearer [masked]"
#define GD_AUDIT_EMAIL "[email]"
#define GD_AUDIT_CARD "[card]"

/*
 * Compiles the patterns.  Idempotent; call it once before any thread or
 * worker process starts (it is not itself thread-safe).  0 or -1.
 */
int gd_audit_init(void);

/*
 * Masks rec in place, at any depth (objects and arrays):
 *
 * - a member whose name is, ignoring ASCII case, one of authorization,
 *   proxy-authorization, cookie, set-cookie, token, access_token,
 *   id_token, refresh_token, password, passwd, secret, client_secret,
 *   api_key, apikey or x-api-key becomes the string "[masked]", whatever
 *   its value (an object, a number, ...);
 *
 * - in every other string value: "Bearer CREDENTIAL" (any case, then
 *   white space and a token68) becomes "Bearer [masked]"; a JWT/JWS
 *   compact serialization (base64url segments joined by '.', the first
 *   starting with "eyJ") "[token]"; an e-mail address "[email]"; a
 *   payment card number "[card]": 13 to 19 digits, possibly grouped by
 *   single spaces or dashes, not run into other letters, digits or
 *   dash-joined words, that pass the Luhn check (digits failing it are
 *   left alone).
 *
 * The string values of the members id, hash, prev_hash, policy_version,
 * decision_id, review_of, traceparent and ts_ms (hex hashes and ids hold
 * digit runs), and tenant, subject and analyst (who the record is about,
 * what SOC searches by) are never pattern-masked.  A string that a pattern
 * cannot be matched against (a PCRE2 match error) becomes "[masked]" whole.
 *
 * Calls gd_audit_init() when it was not called.  Returns the number of
 * values changed (0 when rec was already masked), or -1 when out of
 * memory (rec may then be partly masked).
 */
int gd_audit_mask(json_t *rec);

/*
 * The value of the member `name` of a record, made of text (len bytes,
 * UTF-8), masked as gd_audit_mask() masks that member and then cut to at
 * most limit bytes: masking comes first, so that a secret that straddles
 * the cut is a placeholder by then and no part of it is kept.  The cut
 * never splits a placeholder (it moves before it) nor a UTF-8 sequence,
 * and the cut text is masked again (a cut can end a run of digits or a
 * domain): the result is a fixed point of the masking.  The value of a
 * secret member is "[masked]" (or "" under 8 bytes); that of a member
 * never pattern-masked (tenant, subject, ...) is only cut.  name may be
 * NULL (any other member).
 *
 * *out is malloc()ed, NUL-terminated, *outlen bytes.  0, or -1 when out
 * of memory.
 */
int gd_audit_mask_cut(const char *name, const char *text, size_t len,
                      size_t limit, char **out, size_t *outlen);

/*
 * The JSON string value of the member `name` made of text (len bytes,
 * UTF-8): the text as it is when it fits in limit bytes (or limit is 0),
 * else gd_audit_mask_cut()'s masked cut.  NULL when out of memory.
 */
json_t *gd_audit_text_value(const char *name, const char *text, size_t len,
                            size_t limit);

/*
 * Parses exactly the 36-character canonical text form of a UUID
 * (8-4-4-4-12 hex digits, either case) into out.  0 or -1.
 */
int gd_audit_id_parse(const char *text, size_t len,
                      uint8_t out[GD_AUDIT_ID_LEN]);

#endif
