/*
 * gd_detect: the PII and secret detectors of guardrail rules
 * ("detector": NAME), in C, each a scanner plus a validation that cuts
 * false positives (docs/detectors.md lists what each accepts).
 *
 * They run over text that gd_norm has normalised (UTF-8, NFKC, no
 * invisible characters); offsets are in that text.  "invisible" is the
 * exception: it looks for what gd_norm removes, so it runs before.  They never
 * allocate and never look outside text[0..len).
 */
#ifndef GD_DETECT_H
#define GD_DETECT_H

#include <stddef.h>

typedef enum {
    GD_DET_EMAIL,          /* "email": local@domain.tld */
    GD_DET_PHONE,          /* "phone": E.164 and common national forms */
    GD_DET_CARD,           /* "card": IIN ranges + length + Luhn */
    GD_DET_IBAN,           /* "iban": country length + ISO 7064 mod 97 */
    GD_DET_SSN,            /* "ssn": US SSN, area/group/serial rules */
    GD_DET_IPV4,           /* "ipv4" */
    GD_DET_IPV6,           /* "ipv6" */
    GD_DET_PRIVATE_KEY,    /* "private_key": a PEM private key block */
    GD_DET_JWT,            /* "jwt": three base64url parts, a JSON header */
    GD_DET_AWS_ACCESS_KEY, /* "aws_access_key": AKIA/ASIA... key ids */
    GD_DET_GITHUB_TOKEN,   /* "github_token": ghp_, gho_, ghs_, github_pat_ */
    GD_DET_SLACK_TOKEN,    /* "slack_token": xoxb-, xoxp-, ... */
    GD_DET_SECRET,         /* "secret": a high-entropy token (threshold
                              below) */
    GD_DET_INVISIBLE,      /* "invisible": runs of the zero-width, bidi-control
                              and tag characters that gd_norm removes; the
                              engine runs it over a target's text before
                              gd_norm's Unicode stage */
    GD_DET_LAST
} gd_detector_e;

/*
 * The generic secret detector's threshold: a run of at least
 * GD_DETECT_SECRET_MIN_LEN characters of [A-Za-z0-9+/=_-] whose Shannon
 * entropy is at least GD_DETECT_SECRET_MIN_BITS bits per character (and
 * which mixes character classes); documented in docs/detectors.md.
 */
#define GD_DETECT_SECRET_MIN_LEN 20
#define GD_DETECT_SECRET_MIN_BITS 4.0

typedef struct {
    size_t off; /* in the text scanned */
    size_t len;
} gd_detect_span_t;

/* "email" ... "secret", or NULL for a value out of range */
const char *gd_detector_name(gd_detector_e d);

/* The detector named name[0..len), or -1. */
int gd_detector_find(const char *name, size_t len);

/*
 * The matches of detector d in text[0..len), in order and not
 * overlapping: the first max are stored in spans.  Returns how many were
 * found (which may be more than max).
 */
size_t gd_detect(gd_detector_e d, const char *text, size_t len,
                 gd_detect_span_t *spans, size_t max);

#endif
