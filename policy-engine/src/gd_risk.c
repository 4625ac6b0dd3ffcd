/*
 * gd_risk: the risk scorer and its per-subject state, see gd_risk.h.
 *
 * The state is a hash table of subjects (key: tenant, a NUL, subject)
 * with a fixed number of buckets, and a doubly linked list in order of
 * the last observation: past max_subjects, the tail goes.  Each subject
 * has two rings of times (requests and refusals) that grow up to
 * GD_RISK_STATE_EVENTS and then overwrite their oldest entry, and a list
 * of client IPs up to GD_RISK_STATE_IPS that then replaces its least
 * recently seen entry.
 */
#include "gd_risk.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* the state */

typedef struct {
    int64_t *t;
    uint32_t start; /* the oldest entry */
    uint32_t n;
    uint32_t size; /* allocated entries, up to GD_RISK_STATE_EVENTS */
} gd_ring_t;

typedef struct {
    char ip[GD_RISK_STATE_IP_LEN];
    int64_t last;
} gd_ip_seen_t;

typedef struct gd_subject_s gd_subject_t;

struct gd_subject_s {
    gd_subject_t *hnext; /* hash chain */
    gd_subject_t *prev;  /* LRU list: toward the most recent */
    gd_subject_t *next;  /* LRU list: toward the least recent */
    uint64_t hash;
    gd_ring_t requests;
    gd_ring_t refusals;
    gd_ip_seen_t *ips;
    uint32_t nips;
    uint32_t ipsize;
    size_t klen;
    char key[]; /* tenant, NUL, subject, NUL */
};

struct gd_risk_state_s {
    size_t max_subjects;
    size_t nsubjects;
    size_t nbuckets; /* a power of two */
    gd_subject_t **buckets;
    gd_subject_t *head; /* the most recently observed */
    gd_subject_t *tail; /* the least recently observed */
    size_t bytes;
};

#define GD_RING_FIRST 8
#define GD_IPS_FIRST 4

gd_risk_state_t *gd_risk_state_new(size_t max_subjects)
{
    gd_risk_state_t *st;
    size_t nb = 16;

    if (max_subjects == 0 || max_subjects > GD_RISK_STATE_MAX_SUBJECTS) {
        return NULL;
    }

    while (nb < max_subjects) {
        nb <<= 1;
    }

    st = calloc(1, sizeof(gd_risk_state_t));
    if (st == NULL) {
        return NULL;
    }

    st->buckets = calloc(nb, sizeof(gd_subject_t *));
    if (st->buckets == NULL) {
        free(st);
        return NULL;
    }

    st->max_subjects = max_subjects;
    st->nbuckets = nb;
    st->bytes = sizeof(gd_risk_state_t) + nb * sizeof(gd_subject_t *);
    return st;
}

static void subject_free(gd_risk_state_t *st, gd_subject_t *s)
{
    st->bytes -=
        sizeof(gd_subject_t) + s->klen + 1 +
        (size_t)(s->requests.size + s->refusals.size) * sizeof(int64_t) +
        (size_t)s->ipsize * sizeof(gd_ip_seen_t);
    free(s->requests.t);
    free(s->refusals.t);
    free(s->ips);
    free(s);
}

void gd_risk_state_free(gd_risk_state_t *st)
{
    if (st == NULL) {
        return;
    }

    gd_subject_t *s = st->head;

    while (s) {
        gd_subject_t *next = s->next;
        subject_free(st, s);
        s = next;
    }

    free(st->buckets);
    free(st);
}

size_t gd_risk_state_subjects(const gd_risk_state_t *st)
{
    return st ? st->nsubjects : 0;
}

size_t gd_risk_state_bytes(const gd_risk_state_t *st)
{
    return st ? st->bytes : 0;
}

/* tenant NUL subject NUL in buf; its length without the last NUL, or 0 */
static size_t make_key(const char *tenant, const char *subject, char *buf)
{
    size_t tl, sl;

    if (subject == NULL || subject[0] == '\0') {
        return 0;
    }

    if (tenant == NULL) {
        tenant = "";
    }

    tl = strlen(tenant);
    sl = strlen(subject);

    if (tl + 1 + sl > GD_RISK_STATE_KEY_MAX) {
        return 0;
    }

    memcpy(buf, tenant, tl);
    buf[tl] = '\0';
    memcpy(buf + tl + 1, subject, sl);
    buf[tl + 1 + sl] = '\0';
    return tl + 1 + sl;
}

/* FNV-1a */
static uint64_t key_hash(const char *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static gd_subject_t *lookup(const gd_risk_state_t *st, const char *key,
                            size_t klen, uint64_t hash)
{
    gd_subject_t *s = st->buckets[hash & (st->nbuckets - 1)];

    for (; s; s = s->hnext) {
        if (s->hash == hash && s->klen == klen &&
            memcmp(s->key, key, klen) == 0) {
            return s;
        }
    }
    return NULL;
}

static void lru_unlink(gd_risk_state_t *st, gd_subject_t *s)
{
    if (s->prev) {
        s->prev->next = s->next;
    } else {
        st->head = s->next;
    }

    if (s->next) {
        s->next->prev = s->prev;
    } else {
        st->tail = s->prev;
    }

    s->prev = s->next = NULL;
}

static void lru_push_front(gd_risk_state_t *st, gd_subject_t *s)
{
    s->prev = NULL;
    s->next = st->head;

    if (st->head) {
        st->head->prev = s;
    } else {
        st->tail = s;
    }
    st->head = s;
}

static void evict(gd_risk_state_t *st, gd_subject_t *s)
{
    gd_subject_t **pp = &st->buckets[s->hash & (st->nbuckets - 1)];

    while (*pp && *pp != s) {
        pp = &(*pp)->hnext;
    }
    if (*pp) {
        *pp = s->hnext;
    }

    lru_unlink(st, s);
    st->nsubjects--;
    subject_free(st, s);
}

/* the subject, created if need be, now the most recently observed */
static gd_subject_t *touch(gd_risk_state_t *st, const char *tenant,
                           const char *subject)
{
    char key[GD_RISK_STATE_KEY_MAX + 1];
    size_t klen;
    uint64_t hash;
    gd_subject_t *s;

    if (st == NULL || (klen = make_key(tenant, subject, key)) == 0) {
        return NULL;
    }

    hash = key_hash(key, klen);
    s = lookup(st, key, klen, hash);

    if (s) {
        lru_unlink(st, s);
        lru_push_front(st, s);
        return s;
    }

    s = calloc(1, sizeof(gd_subject_t) + klen + 1);
    if (s == NULL) {
        return NULL;
    }

    if (st->nsubjects >= st->max_subjects && st->tail) {
        evict(st, st->tail);
    }

    memcpy(s->key, key, klen + 1);
    s->klen = klen;
    s->hash = hash;
    s->hnext = st->buckets[hash & (st->nbuckets - 1)];
    st->buckets[hash & (st->nbuckets - 1)] = s;
    lru_push_front(st, s);
    st->nsubjects++;
    st->bytes += sizeof(gd_subject_t) + klen + 1;
    return s;
}

static void ring_push(gd_risk_state_t *st, gd_ring_t *r, int64_t t)
{
    if (r->n == r->size && r->size < GD_RISK_STATE_EVENTS) {
        uint32_t size = r->size ? r->size * 2 : GD_RING_FIRST;
        int64_t *nt;

        if (size > GD_RISK_STATE_EVENTS) {
            size = GD_RISK_STATE_EVENTS;
        }

        nt = malloc(size * sizeof(int64_t));
        if (nt) {
            /* in order, oldest first */
            for (uint32_t i = 0; i < r->n; i++) {
                nt[i] = r->t[(r->start + i) % r->size];
            }
            free(r->t);
            st->bytes += (size_t)(size - r->size) * sizeof(int64_t);
            r->t = nt;
            r->start = 0;
            r->size = size;
        }
    }

    if (r->size == 0) {
        return; /* out of memory: nothing recorded */
    }

    if (r->n < r->size) {
        r->t[(r->start + r->n) % r->size] = t;
        r->n++;
    } else {
        r->t[r->start] = t; /* full: the oldest goes */
        r->start = (r->start + 1) % r->size;
    }
}

/* t is within window seconds before now (a time after now counts too) */
static int in_window(int64_t t, int64_t now, uint64_t window)
{
    return t > now || (uint64_t)now - (uint64_t)t < window;
}

static uint64_t ring_count(const gd_ring_t *r, int64_t now, uint64_t window)
{
    uint64_t n = 0;

    for (uint32_t i = 0; i < r->n; i++) {
        if (in_window(r->t[(r->start + i) % r->size], now, window)) {
            n++;
        }
    }
    return n;
}

static size_t ip_len(const char *ip)
{
    size_t n = strlen(ip);

    return n < GD_RISK_STATE_IP_LEN ? n : GD_RISK_STATE_IP_LEN - 1;
}

static const gd_ip_seen_t *ip_find(const gd_subject_t *s, const char *ip)
{
    size_t n = ip_len(ip);

    for (uint32_t i = 0; i < s->nips; i++) {
        if (strlen(s->ips[i].ip) == n && memcmp(s->ips[i].ip, ip, n) == 0) {
            return &s->ips[i];
        }
    }
    return NULL;
}

static void ip_record(gd_risk_state_t *st, gd_subject_t *s, const char *ip,
                      int64_t now)
{
    gd_ip_seen_t *e = (gd_ip_seen_t *)ip_find(s, ip);
    size_t n = ip_len(ip);

    if (e == NULL) {
        if (s->nips == s->ipsize && s->ipsize < GD_RISK_STATE_IPS) {
            uint32_t size = s->ipsize ? s->ipsize * 2 : GD_IPS_FIRST;
            gd_ip_seen_t *more;

            if (size > GD_RISK_STATE_IPS) {
                size = GD_RISK_STATE_IPS;
            }
            more = realloc(s->ips, size * sizeof(gd_ip_seen_t));
            if (more) {
                st->bytes += (size_t)(size - s->ipsize) * sizeof(gd_ip_seen_t);
                s->ips = more;
                s->ipsize = size;
            }
        }

        if (s->nips < s->ipsize) {
            e = &s->ips[s->nips++];
        } else if (s->nips > 0) {
            /* full: replace the least recently seen (the first of ties) */
            e = &s->ips[0];
            for (uint32_t i = 1; i < s->nips; i++) {
                if (s->ips[i].last < e->last) {
                    e = &s->ips[i];
                }
            }
        } else {
            return;
        }

        memcpy(e->ip, ip, n);
        e->ip[n] = '\0';
    }

    e->last = now;
}

int gd_risk_observe_request(gd_risk_state_t *st, const char *tenant,
                            const char *subject, const char *ip, int64_t now)
{
    gd_subject_t *s = touch(st, tenant, subject);

    if (s == NULL) {
        return -1;
    }

    ring_push(st, &s->requests, now);
    if (ip && ip[0]) {
        ip_record(st, s, ip, now);
    }
    return 0;
}

int gd_risk_observe_refusal(gd_risk_state_t *st, const char *tenant,
                            const char *subject, int64_t now)
{
    gd_subject_t *s = touch(st, tenant, subject);

    if (s == NULL) {
        return -1;
    }

    ring_push(st, &s->refusals, now);
    return 0;
}

/* the scorer */

static const gd_subject_t *find_subject(const gd_risk_state_t *st,
                                        const gd_risk_request_t *req)
{
    char key[GD_RISK_STATE_KEY_MAX + 1];
    size_t klen;

    if (st == NULL || (klen = make_key(req->tenant, req->subject, key)) == 0) {
        return NULL;
    }
    return lookup(st, key, klen, key_hash(key, klen));
}

static int has_subject(const gd_risk_request_t *req)
{
    return req->subject && req->subject[0];
}

static int string_is(const json_t *v, const char *s)
{
    return json_is_string(v) && json_string_length(v) == strlen(s) &&
           memcmp(json_string_value(v), s, json_string_length(v)) == 0;
}

static int claim_matches(const gd_risk_signal_t *sig, const json_t *claims)
{
    const json_t *v = NULL;
    int has = 0;

    if (json_is_object(claims)) {
        v = json_object_get(claims, sig->claim);
    }

    if (!sig->claim_lacks) {
        return string_is(v, sig->claim_value);
    }

    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v) && !has; i++) {
            has = string_is(json_array_get(v, i), sig->claim_value);
        }
    } else {
        has = string_is(v, sig->claim_value);
    }

    return !has;
}

static int hours_outside(const gd_risk_signal_t *sig, int minutes)
{
    int from = (int)sig->from_min, to = (int)sig->to_min, inside;

    if (from < to) {
        inside = minutes >= from && minutes < to;
    } else {
        inside = minutes >= from || minutes < to; /* wraps midnight */
    }
    return !inside;
}

static int signal_matches(const gd_risk_signal_t *sig, const gd_subject_t *subj,
                          const gd_risk_request_t *req, int minutes)
{
    uint64_t window = sig->window_ms / 1000;

    switch (sig->cond) {
    case GD_RISK_ROUTE_SENSITIVE:
        return (req->route_sensitive != 0) == (sig->sensitive != 0);

    case GD_RISK_METHOD:
        for (size_t i = 0; req->method && i < sig->nmethods; i++) {
            if (strcmp(sig->methods[i], req->method) == 0) {
                return 1;
            }
        }
        return 0;

    case GD_RISK_BODY_SIZE_OVER:
        return req->body_size > sig->over;

    case GD_RISK_CLAIM:
        return claim_matches(sig, req->claims);

    case GD_RISK_SUBJECT_RATE_OVER: {
        /* the requests observed in the window, and this one */
        uint64_t n = subj ? ring_count(&subj->requests, req->now, window) : 0;

        return has_subject(req) && n + 1 > sig->over;
    }

    case GD_RISK_SUBJECT_REFUSALS_OVER:
        return subj &&
               ring_count(&subj->refusals, req->now, window) > sig->over;

    case GD_RISK_NEW_CLIENT_IP: {
        const gd_ip_seen_t *e;

        if (!has_subject(req) || req->client_ip == NULL ||
            req->client_ip[0] == '\0') {
            return 0;
        }
        e = subj ? ip_find(subj, req->client_ip) : NULL;
        return e == NULL || !in_window(e->last, req->now, window);
    }

    case GD_RISK_OUTSIDE_HOURS:
        return hours_outside(sig, minutes);

    case GD_RISK_INLINE_SCORE_OVER:
        return req->inline_score >= 0 &&
               (uint64_t)req->inline_score > sig->over;
    }

    return 0;
}

int gd_risk_score(const gd_policy_t *p, const gd_risk_state_t *st,
                  const gd_risk_request_t *req, gd_risk_result_t *out)
{
    const gd_risk_policy_t *r;
    const gd_subject_t *subj;
    int minutes;

    if (out == NULL) {
        return -1;
    }

    memset(out, 0, sizeof(*out));
    out->decision = GD_RISK_ALLOW;
    out->local_minutes = -1;

    if (p == NULL || req == NULL || !p->has_risk) {
        return -1;
    }

    r = &p->risk;

    if (req->local_minutes >= 0 && req->local_minutes < 24 * 60) {
        minutes = req->local_minutes;
    } else {
        int64_t s = req->now % 86400;

        minutes = (int)((s < 0 ? s + 86400 : s) / 60);
    }

    subj = find_subject(st, req);

    out->step_up = r->step_up;
    out->deny = r->deny;
    out->ttl_ms = r->ttl_ms;
    out->shadow = p->shadow || r->shadow;
    out->local_minutes = minutes;

    for (size_t i = 0; i < r->nsignals && i < GD_RISK_MAX_SIGNALS; i++) {
        const gd_risk_signal_t *sig = &r->signals[i];

        if (!signal_matches(sig, subj, req, minutes)) {
            continue;
        }

        gd_risk_match_t *m = &out->matches[out->nmatches++];

        m->id = sig->id;
        m->weight = sig->weight;
        m->shadow = sig->shadow;

        if (sig->shadow) {
            out->shadow_score += sig->weight;
        } else {
            out->score += sig->weight;
        }
    }

    if (out->score >= r->deny) {
        out->decision = GD_RISK_DENY;
    } else if (out->score >= r->step_up) {
        out->decision = GD_RISK_STEP_UP;
    }

    return 0;
}

const char *gd_risk_decision_name(gd_risk_decision_t d)
{
    switch (d) {
    case GD_RISK_STEP_UP:
        return "step_up";
    case GD_RISK_DENY:
        return "deny";
    default:
        return "allow";
    }
}

int gd_risk_explain(const gd_risk_result_t *r, char *buf, size_t size)
{
    size_t len = 0;
    int n;

#define GD_EXPLAIN(...)                                                        \
    do {                                                                       \
        n = snprintf(len < size ? buf + len : NULL,                            \
                     len < size ? size - len : 0, __VA_ARGS__);                \
        if (n < 0) {                                                           \
            return n;                                                          \
        }                                                                      \
        len += (size_t)n;                                                      \
    } while (0)

    GD_EXPLAIN("decision=%s score=%u step_up=%u deny=%u mode=%s signals=",
               gd_risk_decision_name(r->decision), r->score, r->step_up,
               r->deny, r->shadow ? "shadow" : "enforce");

    for (size_t i = 0; i < r->nmatches; i++) {
        GD_EXPLAIN("%s%s:%u%s", i ? "," : "", r->matches[i].id,
                   r->matches[i].weight, r->matches[i].shadow ? ":shadow" : "");
    }

#undef GD_EXPLAIN

    return (int)len;
}

/* the daemon-side time of day helper */

static pthread_mutex_t gd_tz_lock = PTHREAD_MUTEX_INITIALIZER;

static int zone_name_ok(const char *tz)
{
    size_t n = strlen(tz);

    if (n < 1 || n > 64 || tz[0] == '/') {
        return 0;
    }

    for (size_t i = 0; i < n; i++) {
        char ch = tz[i];

        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '_' || ch == '+' || ch == '-' ||
              ch == '/')) {
            return 0;
        }
    }
    return 1;
}

/* minutes since midnight of unix time t */
static int day_minutes(int64_t t)
{
    int64_t s = t % 86400;

    return (int)((s < 0 ? s + 86400 : s) / 60);
}

/*
 * Makes tz the local time zone, under gd_tz_lock: zone_leave() undoes it.
 * Returns 0, or -1 (nothing to undo) when tz is not a zone name or has no
 * file in the zone database.
 */
static int zone_enter(const char *tz, char **saved)
{
    char path[4096];
    const char *dir, *old;

    *saved = NULL;
    if (!zone_name_ok(tz)) {
        return -1;
    }

    dir = getenv("TZDIR");
    if (dir == NULL || dir[0] == '\0') {
        dir = "/usr/share/zoneinfo";
    }

    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, tz) >=
            sizeof(path) ||
        access(path, R_OK) != 0) {
        return -1;
    }

    pthread_mutex_lock(&gd_tz_lock);

    old = getenv("TZ");
    if ((old && (*saved = strdup(old)) == NULL) || setenv("TZ", tz, 1) != 0) {
        free(*saved);
        *saved = NULL;
        pthread_mutex_unlock(&gd_tz_lock);
        return -1;
    }
    tzset();
    return 0;
}

static void zone_leave(char *saved)
{
    if (saved) {
        setenv("TZ", saved, 1);
    } else {
        unsetenv("TZ");
    }
    tzset();

    pthread_mutex_unlock(&gd_tz_lock);
    free(saved);
}

/* the local zone's offset from UTC at t, between zone_enter/leave */
static int offset_at(int64_t t, long *offset)
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (localtime_r(&tt, &tm) == NULL) {
        return -1;
    }
    *offset = tm.tm_gmtoff;
    return 0;
}

int gd_risk_local_minutes(const char *tz, int64_t now, int *minutes)
{
    char *saved;
    long offset;
    int rc;

    if (tz == NULL || tz[0] == '\0') {
        *minutes = day_minutes(now);
        return 0;
    }

    if (zone_enter(tz, &saved) != 0) {
        return -1;
    }
    rc = offset_at(now, &offset);
    zone_leave(saved);

    if (rc == 0) {
        *minutes = day_minutes(now + offset);
    }
    return rc;
}

/* the zone's offsets are sampled this often when looking for the next
   transition (zones have at most two a year, far more than 6 hours
   apart), this far ahead; an unknown zone is looked up again after
   GD_ZONE_RETRY seconds */
#define GD_ZONE_STEP (6 * 3600)
#define GD_ZONE_AHEAD (400 * 86400)
#define GD_ZONE_RETRY 60

/* tz's offset at now and the span it holds for: [now, next transition) */
static void zone_span(const char *tz, int64_t now, gd_risk_zone_t *z)
{
    int64_t lo, hi, mid, end;
    char *saved;
    long offset, o;

    z->from = now;
    z->until =
        now < INT64_MAX - GD_ZONE_RETRY ? now + GD_ZONE_RETRY : INT64_MAX;
    z->offset = 0;
    z->known = 0;

    if (zone_enter(tz, &saved) != 0) {
        return;
    }

    if (offset_at(now, &offset) == 0) {
        end = now < INT64_MAX - GD_ZONE_AHEAD ? now + GD_ZONE_AHEAD : INT64_MAX;
        z->offset = (int32_t)offset;
        z->known = 1;
        z->until = end;

        /* the first sample with another offset, then the first second of
           it: a binary search between the two samples */
        for (lo = now; lo < end; lo = hi) {
            hi = lo < end - GD_ZONE_STEP ? lo + GD_ZONE_STEP : end;
            if (offset_at(hi, &o) != 0) {
                z->until = hi;
                break;
            }
            if (o == offset) {
                continue;
            }
            while (hi - lo > 1) {
                mid = lo + (hi - lo) / 2;
                if (offset_at(mid, &o) == 0 && o == offset) {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            z->until = hi;
            break;
        }
    }

    zone_leave(saved);
}

static gd_risk_zone_t *zone_load(gd_policy_t *p, gd_policy_t *done,
                                 size_t ndone, int64_t now)
{
    gd_risk_zone_t *z = malloc(sizeof(*z));

    if (z == NULL) {
        return NULL;
    }

    /* a zone already computed for an earlier policy of the set */
    for (size_t i = 0; i < ndone; i++) {
        if (done[i].risk.zone && done[i].risk.time_zone &&
            strcmp(done[i].risk.time_zone, p->risk.time_zone) == 0) {
            *z = *done[i].risk.zone;
            return z;
        }
    }

    zone_span(p->risk.time_zone, now, z);
    return z;
}

int gd_risk_zones_load(gd_policy_set_t *set, int64_t now)
{
    gd_policy_t *p;

    for (size_t i = 0; i <= set->ntenants; i++) {
        p = i < set->ntenants ? &set->tenants[i] : set->fallback;
        if (p == NULL || !p->has_risk || p->risk.time_zone == NULL) {
            continue;
        }
        free(p->risk.zone);
        p->risk.zone = zone_load(p, set->tenants, i, now);
        if (p->risk.zone == NULL) {
            return -1;
        }
    }
    return 0;
}

int gd_risk_zone_minutes(const gd_policy_t *p, int64_t now, int *minutes)
{
    gd_risk_zone_t *z = p->risk.zone;

    if (p->risk.time_zone == NULL) {
        *minutes = day_minutes(now);
        return 0;
    }
    if (z == NULL) {
        return gd_risk_local_minutes(p->risk.time_zone, now, minutes);
    }

    if (now < z->from || now >= z->until) {
        zone_span(p->risk.time_zone, now, z);
    }
    if (!z->known) {
        return -1;
    }

    *minutes = day_minutes(now + z->offset);
    return 0;
}
