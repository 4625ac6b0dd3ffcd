/*
 * gd_audit_record: the audit record of a decision.  One builder for the
 * nginx module (a refusal or a shadow refusal, made in the log phase) and
 * guardd (a risk verdict other than allow, made in DECIDE), so that both
 * write the same members the same way.
 *
 * The record is a JSON object, masked (gd_audit_mask), with its members in
 * this order, each present as said:
 *
 *   id, ts_ms, outcome ("deny", or "shadow_deny" when shadow), stage,
 *   reason, status, latency_ms (when >= 0), tenant, subject, client_ip,
 *   method, route, node, source, policy_version, traceparent (each when
 *   given; see nulls), shadow_reason (when given), rules (when nrules),
 *   score (when has_score), signals, shadow and thresholds (when signals
 *   is given: a risk verdict), kind "breaker" and breaker (when breaker
 *   is given: a circuit breaker's transition, whose outcome is then
 *   "transition", or "shadow_transition" when shadow), guardrails (when
 *   given: gd_gr_audit()'s object).  outcome, when given, replaces the
 *   outcome: "redact" or "log" for a request that passed with guardrail
 *   hits (no refusal, no reason).
 */
#ifndef GD_AUDIT_RECORD_H
#define GD_AUDIT_RECORD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

/* UTF-8 text, len bytes; data NULL: not given */
typedef struct {
    const char *data;
    size_t len;
} gd_audit_text_t;

/* a NUL-terminated string (or NULL) as text */
static inline gd_audit_text_t gd_audit_text(const char *s)
{
    gd_audit_text_t t = {s, s != NULL ? strlen(s) : 0};
    return t;
}

typedef struct {
    gd_audit_text_t id; /* the decision id, a UUID's text */
    int64_t ts_ms;      /* when the request came, Unix ms */
    int shadow;         /* a shadow refusal: not enforced */
    gd_audit_text_t stage;
    gd_audit_text_t reason;
    int status;
    int64_t latency_ms; /* < 0: no member */

    /* about the request: text from it is cut by gd_audit_record_text() */
    gd_audit_text_t tenant;
    gd_audit_text_t subject;
    gd_audit_text_t client_ip;
    gd_audit_text_t method;
    gd_audit_text_t route;
    gd_audit_text_t node;
    gd_audit_text_t source;
    gd_audit_text_t policy_version;
    gd_audit_text_t traceparent;

    gd_audit_text_t shadow_reason; /* a shadow refusal behind a refusal */
    const gd_audit_text_t *rules;  /* the rules that refused */
    size_t nrules;
    int has_score;
    int64_t score;

    /* a risk verdict (borrowed, not changed): signals NULL when none */
    json_t *signals;
    json_t *thresholds;

    /* a breaker's transition (borrowed): {name, from, to, counts...} */
    json_t *breaker;

    /* the guardrails' decision (borrowed): gd_gr_audit()'s object */
    json_t *guardrails;
    /* NULL: deny, shadow_deny, transition...; else "redact" or "log" */
    const char *outcome;

    /*
     * tenant, subject, client_ip, method, route and traceparent not given
     * are null members, not left out (guardd's risk records name them all)
     */
    int nulls;
} gd_audit_decision_t;

/*
 * The record of d, masked, nothing cut (guardd: the request text came cut
 * to a frame's size by the module).  NULL when out of memory.
 */
json_t *gd_audit_record(const gd_audit_decision_t *d);

/*
 * The record of d, masked, as compact JSON of at most max bytes (a ring
 * slot): client_ip, node, policy_version and traceparent are cut to 64
 * bytes, tenant, subject and route to 512 and method to 32; when the
 * record is still longer than max, tenant, subject, route and method are
 * cut to 128 bytes, then 32, then 8 (method to 32, 32, 8), the first that
 * fits.  A cut is gd_audit_mask_cut's: masked first, never splitting a
 * placeholder nor a UTF-8 sequence.  The record is built and masked once;
 * each shorter cut is measured, not built.
 *
 * *out is malloc()ed, NUL-terminated, *outlen bytes.  0, or -1 when out
 * of memory or when the record does not fit even at the shortest cut.
 */
int gd_audit_record_text(const gd_audit_decision_t *d, size_t max, char **out,
                         size_t *outlen);

#endif
