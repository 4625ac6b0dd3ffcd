/*
 * guardd: the frame handlers.  HELLO and PING are answered at once,
 * DECIDE scores a request with its tenant's risk rules, AUDIT hands a
 * masked record to the writer thread (which answers with an ACK).
 */
#define _GNU_SOURCE

#include "guardd.h"

#include "gd_audit_record.h"
#include "gd_reason.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

gd_risk_state_t *risk_state;
gd_uuid_gen_t uuid_gen;

static const char *str_member(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/*
 * The policy version a HELLO or DECIDE carries, against guardd's own: a
 * warning when they differ, once per (theirs, ours) pair among the last
 * POLICY_PAIRS pairs warned about (a reload with a new version makes new
 * pairs, which warn again).  What is not a version (64 hex digits) is not
 * printed.
 */
#define POLICY_PAIRS 16

static struct {
    char theirs[GD_POLICY_VERSION_LEN + 1];
    char ours[GD_POLICY_VERSION_LEN + 1];
} policy_pairs[POLICY_PAIRS];
static size_t policy_pairs_next;

static void policy_version_check(gd_conn_t *c, const char *frame, json_t *in)
{
    const char *v = in ? str_member(in, "policy_version") : NULL;

    if (v == NULL || v[0] == '\0' || policies == NULL ||
        strcmp(v, policies->version) == 0) {
        return;
    }

    if (strlen(v) != GD_POLICY_VERSION_LEN ||
        strspn(v, "0123456789abcdef") != GD_POLICY_VERSION_LEN) {
        v = "(not a policy version)";
    }

    for (size_t i = 0; i < POLICY_PAIRS; i++) {
        if (strcmp(policy_pairs[i].theirs, v) == 0 &&
            strcmp(policy_pairs[i].ours, policies->version) == 0) {
            return;
        }
    }

    size_t i = policy_pairs_next++ % POLICY_PAIRS;
    snprintf(policy_pairs[i].theirs, sizeof(policy_pairs[i].theirs), "%s", v);
    snprintf(policy_pairs[i].ours, sizeof(policy_pairs[i].ours), "%s",
             policies->version);

    logmsg("warn",
           "connection %llu: %s carries policy version %s, guardd has %s: "
           "nginx and guardd have not loaded the same policies "
           "(guardctl reload reloads both)",
           (unsigned long long)c->serial, frame, v, policies->version);
}

/* DECIDE: score the request with the tenant's risk rules */
static int handle_decide(gd_conn_t *c, gd_frame_t *f)
{
    gd_risk_request_t req = {0};
    gd_risk_result_t res;
    const gd_policy_t *p;
    json_t *in = f->payload, *v, *signals, *thresholds, *out;
    uint8_t id[GD_UUID_LEN];
    char idtext[GD_UUID_STRLEN + 1];
    struct timespec ts;
    int64_t t0 = monotonic_us();
    int rc;

    req.tenant = in ? str_member(in, "tenant") : NULL;
    if (req.tenant == NULL || req.tenant[0] == '\0') {
        return conn_error(c, f->id, "bad_request", "DECIDE needs a tenant");
    }

    policy_version_check(c, "DECIDE", in);

    req.subject = str_member(in, "subject");
    req.method = str_member(in, "method");
    req.route = str_member(in, "route");
    req.client_ip = str_member(in, "client_ip");
    req.route_sensitive = json_is_true(json_object_get(in, "route_sensitive"));
    v = json_object_get(in, "body_size");
    req.body_size = json_is_integer(v) && json_integer_value(v) > 0
                        ? (uint64_t)json_integer_value(v)
                        : 0;
    v = json_object_get(in, "inline_score");
    req.inline_score = json_is_integer(v) ? json_integer_value(v) : -1;
    v = json_object_get(in, "claims");
    req.claims = json_is_object(v) ? v : NULL;

    clock_gettime(CLOCK_REALTIME, &ts);
    req.now = ts.tv_sec;
    req.local_minutes = -1;

    p = gd_policy_find(policies, req.tenant, strlen(req.tenant));

    if (gd_uuid7_next(&uuid_gen,
                      (uint64_t)ts.tv_sec * 1000 +
                          (uint64_t)ts.tv_nsec / 1000000,
                      id) != 0) {
        return conn_error(c, f->id, "unavailable", "no randomness");
    }
    gd_uuid_format(id, idtext);
    idtext[GD_UUID_STRLEN] = '\0';

    if (p == NULL || !p->has_risk) {
        out = json_pack("{s:s, s:i, s:[], s:s, s:s}", "decision", "allow",
                        "score", 0, "signals", "policy_version",
                        policies->version, "decision_id", idtext);
        rc = conn_send(c, GD_FRAME_VERDICT, f->id, out);
        json_decref(out);
        metrics_decision(GD_RISK_ALLOW,
                         json_is_true(json_object_get(in, "shadow")), t0);
        return rc;
    }

    if (gd_risk_zone_minutes(p, req.now, &req.local_minutes) != 0) {
        req.local_minutes = -1;
    }

    if (gd_risk_score(p, risk_state, &req, &res) != 0) {
        return conn_error(c, f->id, "unavailable", "cannot score");
    }

    /* the caller will not enforce the verdict (guard_risk shadow) */
    if (json_is_true(json_object_get(in, "shadow"))) {
        res.shadow = 1;
    }

    if (req.subject) {
        gd_risk_observe_request(risk_state, req.tenant, req.subject,
                                req.client_ip, req.now);
        if (res.decision != GD_RISK_ALLOW && !res.shadow) {
            gd_risk_observe_refusal(risk_state, req.tenant, req.subject,
                                    req.now);
        }
    }

    /*
     * built member by member: json_pack() parses its format every time,
     * and these strings are known to be UTF-8 (the policy loader checked
     * the signal ids; the rest is ASCII made here)
     */
    signals = json_array();
    thresholds = json_object();
    out = json_object();
    if (signals == NULL || thresholds == NULL || out == NULL) {
        json_decref(signals);
        json_decref(thresholds);
        json_decref(out);
        return conn_error(c, f->id, "unavailable", "out of memory");
    }
    for (size_t i = 0; i < res.nmatches; i++) {
        json_t *m = json_object();
        if (m == NULL || json_array_append_new(signals, m) != 0) {
            break;
        }
        json_object_set_new_nocheck(m, "id",
                                    json_string_nocheck(res.matches[i].id));
        json_object_set_new_nocheck(m, "weight",
                                    json_integer(res.matches[i].weight));
        json_object_set_new_nocheck(m, "shadow",
                                    json_boolean(res.matches[i].shadow));
    }
    json_object_set_new_nocheck(thresholds, "step_up",
                                json_integer(res.step_up));
    json_object_set_new_nocheck(thresholds, "deny", json_integer(res.deny));

    json_object_set_new_nocheck(
        out, "decision",
        json_string_nocheck(gd_risk_decision_name(res.decision)));
    json_object_set_new_nocheck(out, "score", json_integer(res.score));
    json_object_set_new_nocheck(out, "signals", signals);
    json_object_set_new_nocheck(out, "thresholds", thresholds);
    json_object_set_new_nocheck(out, "policy_version",
                                json_string_nocheck(policies->version));
    json_object_set_new_nocheck(out, "decision_id",
                                json_string_nocheck(idtext));
    json_object_set_new_nocheck(out, "shadow", json_boolean(res.shadow));
    if (out == NULL) {
        return conn_error(c, f->id, "unavailable", "out of memory");
    }
    if (res.ttl_ms) {
        json_object_set_new(out, "ttl_ms",
                            json_integer((json_int_t)res.ttl_ms));
    }

    rc = conn_send(c, GD_FRAME_VERDICT, f->id, out);
    metrics_decision(res.decision, res.shadow, t0);

    /* every decision that is not an allow is journaled */
    if (res.decision != GD_RISK_ALLOW) {
        const gd_reason_t *rs =
            gd_reason(res.decision == GD_RISK_DENY ? GD_REASON_RISK_DENY
                                                   : GD_REASON_RISK_STEP_UP);
        gd_audit_decision_t d = {0};
        json_t *rec;

        d.id = gd_audit_text(idtext);
        d.ts_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
        d.shadow = res.shadow;
        d.stage = gd_audit_text(rs->stage);
        d.reason = gd_audit_text(rs->name);
        d.status = rs->status;
        d.latency_ms = -1;
        d.tenant = gd_audit_text(req.tenant);
        d.subject = gd_audit_text(req.subject);
        d.client_ip = gd_audit_text(req.client_ip);
        d.method = gd_audit_text(req.method);
        d.route = gd_audit_text(req.route);
        d.node = gd_audit_text(conf.node);
        d.policy_version = gd_audit_text(policies->version);
        d.traceparent = gd_audit_text(str_member(in, "traceparent"));
        d.has_score = 1;
        d.score = res.score;
        d.signals = json_object_get(out, "signals");
        d.thresholds = json_object_get(out, "thresholds");
        d.nulls = 1;

        rec = gd_audit_record(&d);
        if (rec == NULL || journal_enqueue(0, 0, rec, id) != 0) {
            logmsg("error", "decision %s could not be journaled", idtext);
        }
        json_decref(rec);
    }

    json_decref(out);
    return rc;
}

/* AUDIT: a record with a UUID "id" (given one when it has none), masked,
 * then journaled once by the writer, which answers with an ACK */
static int handle_audit(gd_conn_t *c, gd_frame_t *f)
{
    json_t *rec = f->payload;
    uint8_t rid[GD_AUDIT_ID_LEN];

    if (!json_is_object(rec)) {
        return conn_error(c, f->id, "bad_request",
                          "AUDIT needs a record (a JSON object)");
    }

    if (json_object_get(rec, "id") != NULL) {
        if (record_id(rec, rid) != 0) {
            return conn_error(c, f->id, "bad_request",
                              "the record's \"id\" must be a UUID "
                              "(8-4-4-4-12 hex digits)");
        }
    } else {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        if (gd_uuid7_next(&uuid_gen,
                          (uint64_t)ts.tv_sec * 1000 +
                              (uint64_t)ts.tv_nsec / 1000000,
                          rid) != 0) {
            return conn_error(c, f->id, "unavailable", "no randomness");
        }
    }

    if (record_set_id(rec, rid) != 0 || gd_audit_mask(rec) < 0 ||
        journal_enqueue(c->serial, f->id, rec, rid) != 0) {
        return conn_error(c, f->id, "unavailable", "out of memory");
    }

    return 0;
}

int handle_frame(gd_conn_t *c, gd_frame_t *f)
{
    json_t *p;
    int rc = 0;

    switch (f->type) {

    case GD_FRAME_HELLO: {
        json_t *mf =
            f->payload ? json_object_get(f->payload, "max_frame") : NULL;
        if (json_is_integer(mf) &&
            json_integer_value(mf) >= GD_PROTO_MIN_FRAME &&
            (size_t)json_integer_value(mf) < c->max_frame) {
            c->max_frame = (size_t)json_integer_value(mf);
        }
        policy_version_check(c, "HELLO", f->payload);
        p = json_pack("{s:i, s:I, s:s, s:s}", "version", GD_PROTO_VERSION,
                      "max_frame", (json_int_t)c->max_frame, "node", conf.node,
                      "policy_version", policies ? policies->version : "");
        rc = conn_send(c, GD_FRAME_HELLO, f->id, p);
        json_decref(p);
        break;
    }

    case GD_FRAME_PING:
        rc = conn_send(c, GD_FRAME_PONG, f->id, NULL);
        break;

    case GD_FRAME_AUDIT:
        rc = handle_audit(c, f);
        break;

    case GD_FRAME_DECIDE:
        rc = handle_decide(c, f);
        break;

    default:
        rc = conn_error(c, f->id, "bad_request",
                        "this frame type is not a request");
        break;
    }

    return rc;
}

/* a well-framed frame whose payload the codec refused (why: its kind) */
int handle_bad_payload(gd_conn_t *c, gd_frame_t *f, const char *why)
{
    logmsg("warn", "connection %llu: %s %u refused: %s",
           (unsigned long long)c->serial, gd_proto_type_name(f->type), f->id,
           why);
    return conn_error(c, f->id, "bad_payload",
                      "the payload is not a JSON object guardd accepts "
                      "(UTF-8, no NUL, no duplicate member names)");
}
