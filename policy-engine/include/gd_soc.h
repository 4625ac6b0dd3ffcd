/*
 * gd_soc: what guardctl's SOC commands (blocked, show, review, token
 * mint) share and the unit tests can reach: reading the audit journal
 * without writing it, telling refusals from reviews, the newest N
 * records, time and duration arguments, and private JWKs as PEM.
 *
 * Nothing here writes the journal: guardd is its one writer.
 */
#ifndef GD_SOC_H
#define GD_SOC_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/*
 * Parses a duration: a number of seconds ("90"), or numbers with units
 * s, m, h, d, w, one after the other ("90s", "30m", "1h30m", "2d").
 * Returns 0 with *ms set, or -1.
 */
int gd_soc_parse_duration(const char *s, int64_t *ms);

/*
 * Parses a point in time: a duration before now_ms ("1h", "30m", "2d"),
 * or ISO 8601: "2024-05-01", "2024-05-01T12:00", "2024-05-01T12:00:00",
 * with optional fractional seconds and a zone ("Z", "+02:00", "-0500";
 * UTC when none).  A space may replace the "T".  Returns 0 or -1.
 */
int gd_soc_parse_time(const char *s, int64_t now_ms, int64_t *ms);

/* "2024-05-01T12:00:00Z", or with milliseconds "...:00.123Z" */
void gd_soc_format_time(int64_t ms, int with_ms, char *out, size_t len);

/*
 * How long before now_ms the time ms was, in words: "1 second ago",
 * "2 seconds ago", "1 minute ago", "3 hours ago", "2 days ago" (whole
 * units, rounded down: seconds under a minute, minutes under an hour,
 * hours under a day), or "in the future".
 */
void gd_soc_format_age(int64_t ms, int64_t now_ms, char *out, size_t len);

/* now, in milliseconds since the epoch */
int64_t gd_soc_now_ms(void);

/* a review record: "kind" is "review" */
int gd_soc_is_review(const json_t *rec);

/*
 * A refusal: not a review, and "outcome" is "deny" or "shadow_deny", or
 * it has a "reason" and a "status" of 400 or more.
 */
int gd_soc_is_refusal(const json_t *rec);

/* the record's "ts_ms", or -1 when it has none */
int64_t gd_soc_ts_ms(const json_t *rec);

/* a string member, or NULL */
const char *gd_soc_str(const json_t *rec, const char *key);

/*
 * The newest records: keeps at most limit records (0: all) by ts_ms,
 * and among equal ts_ms the later one in the journal (a larger seq).
 */
typedef struct {
    json_t *rec;
    int64_t ts;
    uint64_t seq;
} gd_soc_entry_t;

typedef struct {
    gd_soc_entry_t *v;
    size_t n, cap, limit;
    uint64_t seen; /* how many were offered */
} gd_soc_top_t;

void gd_soc_top_init(gd_soc_top_t *top, size_t limit);

/* offers rec (a new reference is taken when it is kept); 0 or -1 */
int gd_soc_top_offer(gd_soc_top_t *top, json_t *rec, int64_t ts, uint64_t seq);

/* sorts what is kept: newest first */
void gd_soc_top_sort(gd_soc_top_t *top);

void gd_soc_top_free(gd_soc_top_t *top);

/* base64url (padding optional) into a new buffer; NULL when invalid */
unsigned char *gd_soc_b64url_decode(const char *in, size_t *outlen);

/*
 * A private JWK (kty RSA with n, e, d, p, q, dp, dq, qi; or EC with crv
 * P-256, P-384 or P-521, x, y and d) as a PKCS#8 PEM string (malloc()ed)
 * for libjwt.  NULL with err set when the key is not a private RSA or EC
 * key.
 */
char *gd_soc_jwk_to_pem(const json_t *jwk, char *err, size_t errlen);

/*
 * Checks that pem (len bytes) is a private key that alg (RS256, RS384,
 * RS512, ES256, ES384, ES512) signs with: RSA of 2048 bits or more, or EC
 * on the algorithm's curve.  Returns 0, or -1 with err set.
 */
int gd_soc_pem_check(const char *pem, size_t len, const char *alg, char *err,
                     size_t errlen);

#endif
