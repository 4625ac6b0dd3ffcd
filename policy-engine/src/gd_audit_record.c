/*
 * gd_audit_record: the audit record of a decision, see gd_audit_record.h.
 */
#include "gd_audit_record.h"
#include "gd_audit.h"

#include <stdlib.h>

/* the cuts of tenant, subject, route and method, tried in this order */
static const size_t gd_audit_cuts[] = {512, 128, 32, 8};

#define GD_AUDIT_NCUTS (sizeof(gd_audit_cuts) / sizeof(gd_audit_cuts[0]))

/* what is cut to a fixed length: addresses, names, versions, trace ids */
#define GD_AUDIT_FIXED_CUT 64
#define GD_AUDIT_METHOD_CUT 32
#define GD_AUDIT_NEVER_CUT SIZE_MAX

/* the request text members, in the record's order */
static const struct {
    const char *name;
    size_t offset; /* of its gd_audit_text_t in gd_audit_decision_t */
    size_t fixed;  /* cut to this length; 0: to the cut tried */
    size_t most;   /* and then at most this */
    int nullable;  /* null when not given, under d->nulls */
} gd_audit_members[] = {
    {"tenant", offsetof(gd_audit_decision_t, tenant), 0, SIZE_MAX, 1},
    {"subject", offsetof(gd_audit_decision_t, subject), 0, SIZE_MAX, 1},
    {"client_ip", offsetof(gd_audit_decision_t, client_ip), GD_AUDIT_FIXED_CUT,
     SIZE_MAX, 1},
    {"method", offsetof(gd_audit_decision_t, method), 0, GD_AUDIT_METHOD_CUT,
     1},
    {"route", offsetof(gd_audit_decision_t, route), 0, SIZE_MAX, 1},
    {"node", offsetof(gd_audit_decision_t, node), GD_AUDIT_FIXED_CUT, SIZE_MAX,
     0},
    {"source", offsetof(gd_audit_decision_t, source), GD_AUDIT_NEVER_CUT,
     SIZE_MAX, 0},
    {"policy_version", offsetof(gd_audit_decision_t, policy_version),
     GD_AUDIT_FIXED_CUT, SIZE_MAX, 0},
    {"traceparent", offsetof(gd_audit_decision_t, traceparent),
     GD_AUDIT_FIXED_CUT, SIZE_MAX, 1},
};

#define GD_AUDIT_NMEMBERS                                                      \
    (sizeof(gd_audit_members) / sizeof(gd_audit_members[0]))

static const gd_audit_text_t *member_text(const gd_audit_decision_t *d,
                                          size_t m)
{
    return (const gd_audit_text_t *)(const void *)((const char *)d +
                                                   gd_audit_members[m].offset);
}

/* member m's length limit when cut to `cut` bytes; 0: not cut */
static size_t member_limit(size_t m, size_t cut)
{
    size_t limit;

    if (cut == 0) {
        return 0;
    }

    limit = gd_audit_members[m].fixed ? gd_audit_members[m].fixed : cut;
    return limit < gd_audit_members[m].most ? limit : gd_audit_members[m].most;
}

/* sets rec[key] to v (stolen); -1 when v is NULL or out of memory */
static int put(json_t *rec, const char *key, json_t *v)
{
    return json_object_set_new_nocheck(rec, key, v);
}

static int put_text(json_t *rec, const char *key, const gd_audit_text_t *t)
{
    return t->data != NULL ? put(rec, key, json_stringn(t->data, t->len)) : 0;
}

/* the record with its request text cut to `cut` (0: not cut), masked */
static json_t *build(const gd_audit_decision_t *d, size_t cut)
{
    json_t *rec, *rules;
    size_t m;

    rec = json_object();
    if (rec == NULL) {
        return NULL;
    }

    if (put_text(rec, "id", &d->id) != 0 ||
        put(rec, "ts_ms", json_integer((json_int_t)d->ts_ms)) != 0 ||
        put(rec, "outcome",
            json_string_nocheck(
                d->outcome != NULL ? d->outcome
                : d->breaker != NULL
                    ? (d->shadow ? "shadow_transition" : "transition")
                    : (d->shadow ? "shadow_deny" : "deny"))) != 0 ||
        put_text(rec, "stage", &d->stage) != 0 ||
        put_text(rec, "reason", &d->reason) != 0 ||
        put(rec, "status", json_integer(d->status)) != 0 ||
        (d->latency_ms >= 0 &&
         put(rec, "latency_ms", json_integer((json_int_t)d->latency_ms)) !=
             0)) {
        goto failed;
    }

    for (m = 0; m < GD_AUDIT_NMEMBERS; m++) {
        const gd_audit_text_t *t = member_text(d, m);
        const char *name = gd_audit_members[m].name;

        if (t->data == NULL) {
            if (d->nulls && gd_audit_members[m].nullable &&
                put(rec, name, json_null()) != 0) {
                goto failed;
            }
            continue;
        }

        if (put(rec, name,
                gd_audit_text_value(name, t->data, t->len,
                                    member_limit(m, cut))) != 0) {
            goto failed;
        }
    }

    if (put_text(rec, "shadow_reason", &d->shadow_reason) != 0) {
        goto failed;
    }

    if (d->nrules) {
        rules = json_array();
        if (put(rec, "rules", rules) != 0) {
            goto failed;
        }
        for (m = 0; m < d->nrules; m++) {
            if (json_array_append_new(
                    rules, json_stringn(d->rules[m].data, d->rules[m].len)) !=
                0) {
                goto failed;
            }
        }
    }

    if (d->has_score &&
        put(rec, "score", json_integer((json_int_t)d->score)) != 0) {
        goto failed;
    }

    if (d->signals != NULL &&
        (json_object_set_nocheck(rec, "signals", d->signals) != 0 ||
         put(rec, "shadow", json_boolean(d->shadow)) != 0 ||
         (d->thresholds != NULL &&
          json_object_set_nocheck(rec, "thresholds", d->thresholds) != 0))) {
        goto failed;
    }

    if (d->breaker != NULL &&
        (put(rec, "kind", json_string_nocheck("breaker")) != 0 ||
         json_object_set_nocheck(rec, "breaker", d->breaker) != 0)) {
        goto failed;
    }

    if (d->guardrails != NULL &&
        json_object_set_nocheck(rec, "guardrails", d->guardrails) != 0) {
        goto failed;
    }

    if (gd_audit_mask(rec) < 0) {
        goto failed;
    }

    return rec;

failed:
    json_decref(rec);
    return NULL;
}

json_t *gd_audit_record(const gd_audit_decision_t *d)
{
    return build(d, 0);
}

/* the length of v in compact JSON */
static size_t json_length(const json_t *v)
{
    return json_dumpb(v, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
}

/*
 * The members cut by the cuts tried (those with no fixed length) at
 * gd_audit_cuts[k], into v[]: the value of a member no longer than its
 * limit there is the one it has in rec (masked whole, as then), that of
 * a longer one is cut (masked, and a fixed point of the masking).  The
 * record's length with them is returned in *len, from base (its length
 * without their values).  0, or -1 when out of memory.
 */
static int measure(const gd_audit_decision_t *d, json_t *rec, size_t k,
                   size_t base, json_t *v[], size_t *len)
{
    size_t m, limit;

    *len = base;

    for (m = 0; m < GD_AUDIT_NMEMBERS; m++) {
        v[m] = NULL;
    }

    for (m = 0; m < GD_AUDIT_NMEMBERS; m++) {
        const gd_audit_text_t *t = member_text(d, m);

        if (gd_audit_members[m].fixed || t->data == NULL) {
            continue;
        }

        limit = member_limit(m, gd_audit_cuts[k]);
        v[m] =
            t->len > limit
                ? gd_audit_text_value(gd_audit_members[m].name, t->data, t->len,
                                      limit)
                : json_incref(json_object_get(rec, gd_audit_members[m].name));

        if (v[m] == NULL) {
            return -1;
        }

        *len += json_length(v[m]);
    }

    return 0;
}

static void release(json_t *v[])
{
    size_t m;

    for (m = 0; m < GD_AUDIT_NMEMBERS; m++) {
        json_decref(v[m]);
        v[m] = NULL;
    }
}

int gd_audit_record_text(const gd_audit_decision_t *d, size_t max, char **out,
                         size_t *outlen)
{
    json_t *rec, *value, *v[GD_AUDIT_NMEMBERS];
    char *text;
    size_t k, m, len, base;

    *out = NULL;
    *outlen = 0;

    rec = build(d, gd_audit_cuts[0]);
    if (rec == NULL) {
        return -1;
    }

    text = json_dumps(rec, JSON_COMPACT);
    len = text != NULL ? strlen(text) : 0;

    if (text != NULL && len > max) {
        free(text);
        text = NULL;

        /* the record's length without the members that are cut further */
        base = len;
        for (m = 0; m < GD_AUDIT_NMEMBERS; m++) {
            if (!gd_audit_members[m].fixed && member_text(d, m)->data) {
                base -=
                    json_length(json_object_get(rec, gd_audit_members[m].name));
            }
        }

        for (k = 1; k < GD_AUDIT_NCUTS; k++) {
            if (measure(d, rec, k, base, v, &len) != 0) {
                release(v);
                break;
            }

            if (len > max) {
                release(v);
                continue;
            }

            /* fits: those values replace the longer ones, in place */
            for (m = 0; m < GD_AUDIT_NMEMBERS; m++) {
                value = v[m];
                v[m] = NULL;
                if (value != NULL &&
                    put(rec, gd_audit_members[m].name, value) != 0) {
                    break;
                }
            }
            release(v);

            if (m < GD_AUDIT_NMEMBERS) {
                break;
            }

            /* as measured: a compact object's length is its members' */
            text = json_dumps(rec, JSON_COMPACT);
            len = text != NULL ? strlen(text) : 0;
            break;
        }
    }

    json_decref(rec);

    if (text == NULL || len > max) {
        free(text);
        return -1;
    }

    *out = text;
    *outlen = len;
    return 0;
}
