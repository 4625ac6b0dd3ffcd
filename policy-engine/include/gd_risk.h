/*
 * gd_risk: the risk scorer of a policy's "risk" section (docs/policies.md,
 * "Risk scoring"), and the per-subject state that its window conditions
 * read.
 *
 * The scorer is a pure function of the policy, the state and the request:
 * no I/O, no clock, no global state; the same inputs give the same
 * result.  The score is the sum of the weights of the signals that match
 * and are not in shadow mode; shadow signals are listed in the result but
 * add nothing.  The decision is deny when score >= thresholds.deny,
 * step_up when score >= thresholds.step_up, allow otherwise.
 *
 * Order of calls for one request: gd_risk_score() first, then
 * gd_risk_observe_request() (and gd_risk_observe_refusal() if the request
 * ends up refused).  The scorer counts the current request itself in
 * subject_rate_over, and new_client_ip compares with what was observed
 * before it.
 *
 * Neither the state nor the scorer locks: a state used by several threads
 * needs the caller's lock (the scorer only reads it).
 */
#ifndef GD_RISK_H
#define GD_RISK_H

#include "gd_policy.h"

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/*
 * The bounds of the state, per subject (tenant + subject): the times of
 * its last GD_RISK_STATE_EVENTS requests and of its last
 * GD_RISK_STATE_EVENTS refusals, and its last GD_RISK_STATE_IPS client
 * IPs with the time each was last seen (the least recently seen is
 * replaced).  Buffers grow on demand up to these caps.  An IP is kept and
 * compared by its first GD_RISK_STATE_IP_LEN - 1 bytes.  tenant + subject
 * longer than GD_RISK_STATE_KEY_MAX bytes are not recorded (and read as a
 * subject without history).  Past max_subjects subjects, the least
 * recently observed one is dropped.  So one subject takes at most
 * GD_RISK_STATE_SUBJECT_MAX bytes, and a state at most
 * max_subjects * GD_RISK_STATE_SUBJECT_MAX bytes plus its hash table (one
 * pointer per subject, rounded up to a power of two): about 22 KiB per
 * subject, 220 MiB for 10000 subjects that all send more than 1024
 * requests; typical subjects take far less (see gd_risk_state_bytes()).
 */
#define GD_RISK_STATE_EVENTS 1024
#define GD_RISK_STATE_IPS 64
#define GD_RISK_STATE_IP_LEN 64
#define GD_RISK_STATE_KEY_MAX 1024
#define GD_RISK_STATE_MAX_SUBJECTS (1u << 24)
#define GD_RISK_STATE_SUBJECT_MAX                                              \
    (256 + GD_RISK_STATE_KEY_MAX + 2 + 2 * GD_RISK_STATE_EVENTS * 8 +          \
     GD_RISK_STATE_IPS * (GD_RISK_STATE_IP_LEN + 8))

typedef struct gd_risk_state_s gd_risk_state_t;

/* A state for at most max_subjects subjects (1..2^24), or NULL. */
gd_risk_state_t *gd_risk_state_new(size_t max_subjects);
void gd_risk_state_free(gd_risk_state_t *st);

/*
 * Records a request of tenant/subject at now (unix seconds) from ip
 * (NULL or "": no IP recorded), and makes the subject the most recently
 * observed.  tenant may be NULL (the default policy's tenants share "").
 * Returns 0, or -1 when subject is NULL or empty, the key is too long, or
 * memory ran out (nothing recorded).
 */
int gd_risk_observe_request(gd_risk_state_t *st, const char *tenant,
                            const char *subject, const char *ip, int64_t now);

/* Records a refusal of tenant/subject at now; as above. */
int gd_risk_observe_refusal(gd_risk_state_t *st, const char *tenant,
                            const char *subject, int64_t now);

/* The number of subjects held, and the bytes the state has allocated. */
size_t gd_risk_state_subjects(const gd_risk_state_t *st);
size_t gd_risk_state_bytes(const gd_risk_state_t *st);

/* one request, as the scorer sees it */
typedef struct {
    const char *tenant;    /* the state's key, with subject */
    const char *subject;   /* the token's sub; NULL or "": no history, so
                              the subject_* and new_client_ip signals do
                              not match */
    const char *method;    /* "GET", ...; NULL: method signals do not match */
    const char *route;     /* the route, for the caller's logs */
    int route_sensitive;   /* the route is marked sensitive */
    const char *client_ip; /* NULL or "": new_client_ip does not match */
    uint64_t body_size;    /* bytes */
    int64_t inline_score;  /* < 0: none, inline_score_over does not match */
    const json_t *claims;  /* the token's claims (an object), or NULL */
    int64_t now;           /* unix time, seconds */
    int local_minutes;     /* minutes since midnight in the policy's
                              time_zone, 0..1439, from
                              gd_risk_local_minutes(); -1: the scorer
                              takes the time of day of now in UTC */
} gd_risk_request_t;

typedef enum {
    GD_RISK_ALLOW = 0,
    GD_RISK_STEP_UP,
    GD_RISK_DENY
} gd_risk_decision_t;

/* one matched signal */
typedef struct {
    const char *id; /* points into the policy */
    uint32_t weight;
    int shadow; /* listed, not added to the score */
} gd_risk_match_t;

typedef struct {
    gd_risk_decision_t decision;
    uint32_t score;        /* the weights of the matched non-shadow signals */
    uint32_t shadow_score; /* the weights of the matched shadow signals */
    uint32_t step_up;      /* the policy's thresholds */
    uint32_t deny;
    uint64_t ttl_ms;   /* the policy's verdict TTL, 0: none */
    int shadow;        /* the risk section or the whole tenant is in shadow
                          mode: log the decision, do not enforce it */
    int local_minutes; /* the time of day outside_hours was evaluated at */
    size_t nmatches;
    gd_risk_match_t matches[GD_RISK_MAX_SIGNALS]; /* in policy order */
} gd_risk_result_t;

/*
 * Scores req against p's risk section and st (may be NULL: no history).
 * Returns 0, or -1 (out set to allow with score 0 when out is given)
 * when p has no risk section or an argument is NULL.
 */
int gd_risk_score(const gd_policy_t *p, const gd_risk_state_t *st,
                  const gd_risk_request_t *req, gd_risk_result_t *out);

/* "allow", "step_up" or "deny" */
const char *gd_risk_decision_name(gd_risk_decision_t d);

/*
 * The result on one line, for logs and the VERDICT's explanation:
 *   decision=step_up score=50 step_up=40 deny=70 mode=enforce
 *   signals=sensitive-route:30,delete:20,new-ip:10:shadow
 * Returns what snprintf returns (the line is cut to size - 1 bytes).
 */
int gd_risk_explain(const gd_risk_result_t *r, char *buf, size_t size);

/*
 * The one-shot helper for local_minutes: the minutes since midnight at
 * now in the IANA zone tz (NULL or "": UTC).  It sets TZ, calls tzset()
 * and localtime_r() and restores TZ under a mutex, so calls of it are
 * serialized; but it changes the process environment for a moment, so
 * call it where nothing else reads TZ or local time concurrently.  Per
 * decision, use gd_risk_zone_minutes() instead.  Returns 0, or -1 when tz
 * is not a valid zone name or has no file in the zone database (TZDIR,
 * else /usr/share/zoneinfo).
 */
int gd_risk_local_minutes(const char *tz, int64_t now, int *minutes);

/*
 * Where policies load: for every policy of set with a risk time_zone,
 * its offset from UTC at now and the span it holds for, up to the next
 * transition (DST) the zone database knows within about a year, in
 * p->risk.zone (policies naming the same zone share the work).  It sets
 * TZ for a moment, as gd_risk_local_minutes() does.  A zone with no file
 * is kept as unknown and looked up again a minute later.  Returns 0, or
 * -1 when out of memory.
 */
int gd_risk_zones_load(gd_policy_set_t *set, int64_t now);

/*
 * Per decision: the minutes since midnight at now in p's risk time_zone
 * (UTC when p has none), from the offset gd_risk_zones_load() computed:
 * no tzset(), no TZ, no zone file.  Only when now is outside the span the
 * offset holds for (a transition passed, the clock went back) is the
 * offset computed again first, and stored in p->risk.zone: calls for one
 * policy set must come from one thread at a time.  Without
 * gd_risk_zones_load() it falls back to gd_risk_local_minutes().
 * Returns 0, or -1 when the zone is unknown (the scorer then takes UTC:
 * set local_minutes to -1).
 */
int gd_risk_zone_minutes(const gd_policy_t *p, int64_t now, int *minutes);

#endif
