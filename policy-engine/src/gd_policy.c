/*
 * gd_policy: the policy loader and validator, see gd_policy.h.
 *
 * jansson parses; this file checks every member against the format of
 * docs/policies.md, collects every error with its file, line, column and
 * JSON pointer, and builds the set and its version.
 */
#include "gd_policy.h"
#include "gd_jsonloc.h"
#include "gd_policy_priv.h"
#include "gd_suggest.h"

#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>
#include <openssl/sha.h>

#define GD_POLICY_FILE_MAX (1024 * 1024)

/* errors */

void gd_errors_add(gd_errors_t *errs, const char *fmt, ...)
{
    va_list ap;
    char *line = NULL;
    char **lines;

    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);

    if (n < 0 || (line = malloc((size_t)n + 1)) == NULL) {
        return;
    }

    va_start(ap, fmt);
    vsnprintf(line, (size_t)n + 1, fmt, ap);
    va_end(ap);

    /* one line each: control characters (from member names) as \xNN */
    size_t ctl = 0;
    for (int i = 0; i < n; i++) {
        ctl += (unsigned char)line[i] < 0x20 || line[i] == 0x7f;
    }
    if (ctl) {
        char *esc = malloc((size_t)n + 3 * ctl + 1), *e = esc;

        if (esc == NULL) {
            free(line);
            return;
        }
        for (int i = 0; i < n; i++) {
            unsigned char c = (unsigned char)line[i];

            if (c < 0x20 || c == 0x7f) {
                e += sprintf(e, "\\x%02x", c);
            } else {
                *e++ = (char)c;
            }
        }
        *e = '\0';
        free(line);
        line = esc;
    }

    lines = realloc(errs->lines, (errs->n + 1) * sizeof(char *));
    if (lines == NULL) {
        free(line);
        return;
    }

    errs->lines = lines;
    errs->lines[errs->n++] = line;
}

void gd_errors_free(gd_errors_t *errs)
{
    for (size_t i = 0; i < errs->n; i++) {
        free(errs->lines[i]);
    }
    free(errs->lines);
    errs->lines = NULL;
    errs->n = 0;
}

/* validation context: gd_vctx_t (gd_policy_priv.h) */

void verr(gd_vctx_t *c, int at_value, const char *fmt, ...)
{
    char msg[512];
    int line, column;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    c->path[c->plen] = '\0';
    gd_jsonloc_find(c->text, c->len, c->path, at_value, &line, &column);
    gd_errors_add(c->errs, "%s:%d:%d: %s: %s", c->file, line, column, c->path,
                  msg);
    c->failed = 1;
}

/* appends a reference token (RFC 6901 escaped); returns the old length */
size_t push_key(gd_vctx_t *c, const char *key)
{
    size_t old = c->plen;

    if (c->plen + 1 < sizeof(c->path)) {
        c->path[c->plen++] = '/';
    }

    for (const char *k = key; *k && c->plen + 2 < sizeof(c->path); k++) {
        if (*k == '~' || *k == '/') {
            c->path[c->plen++] = '~';
            c->path[c->plen++] = (*k == '~') ? '0' : '1';
        } else {
            c->path[c->plen++] = *k;
        }
    }

    c->path[c->plen] = '\0';
    return old;
}

size_t push_index(gd_vctx_t *c, size_t i)
{
    char buf[32];

    snprintf(buf, sizeof(buf), "%zu", i);
    return push_key(c, buf);
}

void pop(gd_vctx_t *c, size_t old)
{
    c->plen = old;
    c->path[old] = '\0';
}

/* value checks */

int name_ok(const char *s, size_t min, size_t max, const char *extra,
            int first_alnum)
{
    size_t n = strlen(s);

    if (n < min || n > max) {
        return 0;
    }

    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        int alnum = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9');

        if (!alnum && (strchr(extra, ch) == NULL || (i == 0 && first_alnum))) {
            return 0;
        }
    }

    return 1;
}

static int period_parse(const char *s, uint64_t *ms)
{
    uint64_t v = 0;
    size_t i = 0;

    if (s[0] < '1' || s[0] > '9') {
        return -1;
    }

    while (s[i] >= '0' && s[i] <= '9') {
        if (++i > 6) {
            return -1;
        }
        v = v * 10 + (uint64_t)(s[i - 1] - '0');
    }

    if (strcmp(s + i, "ms") == 0) {
        *ms = v;
    } else if (strcmp(s + i, "s") == 0) {
        *ms = v * 1000;
    } else if (strcmp(s + i, "m") == 0) {
        *ms = v * 60 * 1000;
    } else if (strcmp(s + i, "h") == 0) {
        *ms = v * 3600 * 1000;
    } else {
        return -1;
    }

    return 0;
}

/* rejects members outside allowed (a NULL-terminated list) */
void check_members(gd_vctx_t *c, json_t *obj, const char **allowed)
{
    const char *key;
    json_t *v;

    json_object_foreach(obj, key, v)
    {
        const char **a;

        for (a = allowed; *a; a++) {
            if (strcmp(*a, key) == 0) {
                break;
            }
        }

        if (*a == NULL) {
            size_t old = push_key(c, key);
            const char *near = gd_suggest(key, allowed);

            if (near != NULL) {
                verr(c, 0, "unknown member \"%s\"; did you mean \"%s\"?", key,
                     near);
            } else {
                verr(c, 0, "unknown member \"%s\"", key);
            }
            pop(c, old);
        }
    }
}

/* the member key of obj, or NULL when absent or of the wrong type */
json_t *member(gd_vctx_t *c, json_t *obj, const char *key, int type,
               int required)
{
    static const char *names[] = {"an object",  "an array", "a string",
                                  "an integer", "a number", "true",
                                  "false",      "null"};
    json_t *v = json_object_get(obj, key);

    if (v == NULL) {
        if (required) {
            verr(c, 1, "missing required member \"%s\"", key);
        }
        return NULL;
    }

    int ok = (type == JSON_TRUE) ? json_is_boolean(v)
                                 : json_typeof(v) == (json_type)type;

    if (!ok) {
        size_t old = push_key(c, key);
        verr(c, 0, "must be %s", type == JSON_TRUE ? "a boolean" : names[type]);
        pop(c, old);
        return NULL;
    }

    return v;
}

int get_bool(gd_vctx_t *c, json_t *obj, const char *key)
{
    json_t *v = member(c, obj, key, JSON_TRUE, 0);
    return v ? json_is_true(v) : 0;
}

uint64_t get_uint(gd_vctx_t *c, json_t *obj, const char *key, int required,
                  uint64_t min, uint64_t max, uint64_t dflt)
{
    json_t *v = member(c, obj, key, JSON_INTEGER, required);

    if (v == NULL) {
        return dflt;
    }

    json_int_t n = json_integer_value(v);

    if (n < (json_int_t)min || n > (json_int_t)max) {
        size_t old = push_key(c, key);
        verr(c, 0, "must be from %llu to %llu, not %lld",
             (unsigned long long)min, (unsigned long long)max, (long long)n);
        pop(c, old);
        return dflt;
    }

    return (uint64_t)n;
}

typedef int (*gd_string_check_pt)(const char *s);

static int tenant_ok(const char *s)
{
    return name_ok(s, 1, 64, "._-", 1);
}

static int region_ok(const char *s)
{
    return name_ok(s, 1, 64, "._-", 0);
}

static int rule_name_ok(const char *s)
{
    return name_ok(s, 1, 32, "_-", 0);
}

static int nonempty_ok(const char *s)
{
    return s[0] != '\0';
}

static int method_ok(const char *s)
{
    static const char *m[] = {"GET",   "HEAD",   "POST",    "PUT",
                              "PATCH", "DELETE", "OPTIONS", NULL};

    for (const char **p = m; *p; p++) {
        if (strcmp(*p, s) == 0) {
            return 1;
        }
    }
    return 0;
}

static int path_ok(const char *s)
{
    return s[0] == '/';
}

static char *get_string(gd_vctx_t *c, json_t *obj, const char *key,
                        int required, gd_string_check_pt check,
                        const char *what)
{
    json_t *v = member(c, obj, key, JSON_STRING, required);

    if (v == NULL) {
        return NULL;
    }

    const char *s = json_string_value(v);

    if (strlen(s) != json_string_length(v) || (check && !check(s))) {
        size_t old = push_key(c, key);
        verr(c, 0, "must be %s", what);
        pop(c, old);
        return NULL;
    }

    return strdup(s);
}

static char **get_strings(gd_vctx_t *c, json_t *obj, const char *key,
                          int required, gd_string_check_pt check,
                          const char *what, size_t *n)
{
    json_t *a = member(c, obj, key, JSON_ARRAY, required);
    char **out;
    size_t i;

    *n = 0;

    if (a == NULL) {
        return NULL;
    }

    size_t old = push_key(c, key);

    if (json_array_size(a) == 0) {
        verr(c, 0, "must have at least one item");
        pop(c, old);
        return NULL;
    }

    out = calloc(json_array_size(a), sizeof(char *));
    if (out == NULL) {
        pop(c, old);
        return NULL;
    }

    for (i = 0; i < json_array_size(a); i++) {
        json_t *v = json_array_get(a, i);
        size_t o2 = push_index(c, i);

        if (!json_is_string(v) ||
            strlen(json_string_value(v)) != json_string_length(v) ||
            !check(json_string_value(v))) {
            verr(c, 1, "must be %s", what);
        } else {
            for (size_t j = 0; j < *n; j++) {
                if (strcmp(out[j], json_string_value(v)) == 0) {
                    verr(c, 1, "duplicate item \"%s\"", out[j]);
                }
            }
            out[(*n)++] = strdup(json_string_value(v));
        }

        pop(c, o2);
    }

    pop(c, old);
    return out;
}

void free_strings(char **s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(s[i]);
    }
    free(s);
}

/* one rate rule */

static void load_rate(gd_vctx_t *c, json_t *r, gd_rate_rule_t *rule,
                      gd_policy_t *p, size_t index)
{
    static const char *members[] = {"name", "requests", "period", "burst",
                                    "per",  "match",    "shadow", NULL};
    static const char *match_members[] = {"methods", "path", NULL};
    json_t *v;

    check_members(c, r, members);

    rule->name = get_string(c, r, "name", 1, rule_name_ok,
                            "1-32 characters of A-Z a-z 0-9 _ -");
    rule->requests = get_uint(c, r, "requests", 1, 1, 1000000000, 0);
    rule->burst = get_uint(c, r, "burst", 0, 0, 1000000000, 0);
    rule->shadow = get_bool(c, r, "shadow");

    v = member(c, r, "period", JSON_STRING, 1);
    if (v && period_parse(json_string_value(v), &rule->period_ms) != 0) {
        size_t old = push_key(c, "period");
        verr(c, 0,
             "must be a duration such as \"1s\", \"10s\", \"1m\", "
             "\"1h\" or \"500ms\"");
        pop(c, old);
    }

    v = member(c, r, "per", JSON_STRING, 0);
    if (v) {
        const char *per = json_string_value(v);

        if (strcmp(per, "subject") == 0) {
            rule->per_subject = 1;
        } else if (strcmp(per, "tenant") != 0) {
            size_t old = push_key(c, "per");
            verr(c, 0, "must be \"tenant\" or \"subject\"");
            pop(c, old);
        }
    }

    v = member(c, r, "match", JSON_OBJECT, 0);
    if (v) {
        size_t old = push_key(c, "match");

        check_members(c, v, match_members);
        rule->methods = get_strings(c, v, "methods", 0, method_ok,
                                    "one of GET HEAD POST PUT PATCH DELETE "
                                    "OPTIONS",
                                    &rule->nmethods);
        rule->path = get_string(c, v, "path", 0, path_ok,
                                "a path pattern starting with \"/\"");
        pop(c, old);
    }

    for (size_t j = 0; rule->name && j < index; j++) {
        if (p->rates[j].name && strcmp(p->rates[j].name, rule->name) == 0) {
            size_t old = push_key(c, "name");
            verr(c, 0, "duplicate rule name \"%s\"", rule->name);
            pop(c, old);
        }
    }
}

/* the breaker section */

const gd_breaker_t gd_breaker_defaults = {
    .name = NULL,
    .window_ms = 10000,
    .min_calls = 20,
    .failure_ratio = 0.5,
    .slow_ratio = 1.0,
    .slow_ms = 1000,
    .failure_statuses = {502, 503, 504},
    .nfailure_statuses = 3,
    .open_for_ms = 5000,
    .open_for_max_ms = 60000,
    .backoff = 2.0,
    .probes = 3,
    .shadow = 0,
};

/* a duration member: *ms kept when absent */
static void get_duration(gd_vctx_t *c, json_t *obj, const char *key,
                         uint64_t *ms)
{
    json_t *v = member(c, obj, key, JSON_STRING, 0);
    uint64_t d;

    if (v == NULL) {
        return;
    }

    if (period_parse(json_string_value(v), &d) != 0) {
        text_error(c, key,
                   "must be a duration such as \"1s\", \"10s\", \"1m\", "
                   "\"1h\" or \"500ms\"");
        return;
    }
    *ms = d;
}

/* a number member from min to max: *d kept when absent or wrong */
static void get_number(gd_vctx_t *c, json_t *obj, const char *key, double min,
                       double max, double *d)
{
    json_t *v = json_object_get(obj, key);

    if (v == NULL) {
        return;
    }

    size_t old = push_key(c, key);

    if (!json_is_number(v)) {
        verr(c, 0, "must be a number");
    } else if (json_number_value(v) < min || json_number_value(v) > max) {
        verr(c, 0, "must be from %g to %g, not %g", min, max,
             json_number_value(v));
    } else {
        *d = json_number_value(v);
    }
    pop(c, old);
}

static void load_breaker(gd_vctx_t *c, json_t *o, gd_breaker_t *b)
{
    static const char *members[] = {
        "window",  "min_calls",        "failure_ratio", "slow_ratio",
        "slow_ms", "failure_statuses", "open_for",      "open_for_max",
        "backoff", "probes",           "shadow",        NULL};
    json_t *v;

    check_members(c, o, members);

    get_duration(c, o, "window", &b->window_ms);
    if (b->window_ms < 100) {
        text_error(c, "window", "must be at least 100ms");
    }
    b->min_calls =
        (uint32_t)get_uint(c, o, "min_calls", 0, 1, 1000000, b->min_calls);
    get_number(c, o, "failure_ratio", 0.0, 1.0, &b->failure_ratio);
    get_number(c, o, "slow_ratio", 0.0, 1.0, &b->slow_ratio);
    b->slow_ms = get_uint(c, o, "slow_ms", 0, 1, 3600000, b->slow_ms);
    get_duration(c, o, "open_for", &b->open_for_ms);
    get_duration(c, o, "open_for_max", &b->open_for_max_ms);
    get_number(c, o, "backoff", 1.0, 100.0, &b->backoff);
    b->probes = (uint32_t)get_uint(c, o, "probes", 0, 1, 1000, b->probes);
    b->shadow = get_bool(c, o, "shadow");

    if (b->open_for_ms == 0) {
        text_error(c, "open_for", "must be more than 0");
    }
    if (b->open_for_max_ms < b->open_for_ms) {
        text_error(c, "open_for_max", "must not be less than open_for");
    }

    if ((v = member(c, o, "failure_statuses", JSON_ARRAY, 0))) {
        size_t old = push_key(c, "failure_statuses"), n = json_array_size(v);

        if (n > GD_BREAKER_MAX_STATUSES) {
            verr(c, 0, "must have at most %d statuses, not %zu",
                 GD_BREAKER_MAX_STATUSES, n);
            n = GD_BREAKER_MAX_STATUSES;
        }

        b->nfailure_statuses = 0;

        for (size_t i = 0; i < n; i++) {
            json_t *s = json_array_get(v, i);
            size_t o2 = push_index(c, i);

            if (!json_is_integer(s) || json_integer_value(s) < 100 ||
                json_integer_value(s) > 599) {
                verr(c, 0, "a status must be an integer from 100 to 599");
            } else {
                b->failure_statuses[b->nfailure_statuses++] =
                    (int)json_integer_value(s);
            }
            pop(c, o2);
        }
        pop(c, old);
    }
}

static void load_breakers(gd_vctx_t *c, json_t *v, gd_policy_t *p)
{
    const char *key;
    json_t *o;

    p->breakers = calloc(json_object_size(v) + 1, sizeof(gd_breaker_t));
    if (p->breakers == NULL) {
        return;
    }

    json_object_foreach(v, key, o)
    {
        size_t old = push_key(c, key);

        if (!rule_name_ok(key)) {
            verr(c, 0,
                 "a breaker name must be 1-32 characters of A-Z a-z 0-9 _ -");
        } else if (!json_is_object(o)) {
            verr(c, 0, "must be an object");
        } else {
            gd_breaker_t *b = &p->breakers[p->nbreakers];

            *b = gd_breaker_defaults;
            b->name = strdup(key);
            load_breaker(c, o, b);
            p->nbreakers++;
        }
        pop(c, old);
    }
}

const gd_breaker_t *gd_breaker_find(const gd_policy_t *p, const char *name,
                                    size_t len)
{
    for (size_t i = 0; p != NULL && i < p->nbreakers; i++) {
        if (p->breakers[i].name && strlen(p->breakers[i].name) == len &&
            memcmp(p->breakers[i].name, name, len) == 0) {
            return &p->breakers[i];
        }
    }
    return &gd_breaker_defaults;
}

/* the risk section */

static int signal_id_ok(const char *s)
{
    return name_ok(s, 1, 64, "_-", 0);
}

static int claim_text_ok(const char *s)
{
    size_t n = strlen(s);

    return n >= 1 && n <= 256;
}

static int time_zone_ok(const char *s)
{
    return s[0] != '/' && name_ok(s, 1, 64, "_+-/", 0);
}

/* "HH:MM", 00:00 to 23:59, in minutes since midnight */
static int hours_parse(const char *s, uint32_t *minutes)
{
    for (int i = 0; i < 5; i++) {
        if (i == 2 ? s[i] != ':' : (s[i] < '0' || s[i] > '9')) {
            return -1;
        }
    }

    if (s[5] != '\0') {
        return -1;
    }

    uint32_t h = (uint32_t)(s[0] - '0') * 10 + (uint32_t)(s[1] - '0');
    uint32_t m = (uint32_t)(s[3] - '0') * 10 + (uint32_t)(s[4] - '0');

    if (h > 23 || m > 59) {
        return -1;
    }

    *minutes = h * 60 + m;
    return 0;
}

/*
 * The text of a string member: NULL when absent or not a string (an error
 * then when required or of the wrong type), "" when it holds a NUL byte.
 */
const char *get_text(gd_vctx_t *c, json_t *obj, const char *key, int required)
{
    json_t *v = member(c, obj, key, JSON_STRING, required);

    if (v == NULL) {
        return NULL;
    }

    if (strlen(json_string_value(v)) != json_string_length(v)) {
        return "";
    }
    return json_string_value(v);
}

void text_error(gd_vctx_t *c, const char *key, const char *msg)
{
    size_t old = push_key(c, key);
    verr(c, 0, "%s", msg);
    pop(c, old);
}

/* the window of a condition: a period of whole seconds ("ms" is refused) */
static uint64_t get_window(gd_vctx_t *c, json_t *obj)
{
    const char *s = get_text(c, obj, "window", 1);
    uint64_t ms = 0;

    if (s == NULL) {
        return 0;
    }

    size_t n = strlen(s);

    if (period_parse(s, &ms) != 0 || (n >= 2 && strcmp(s + n - 2, "ms") == 0)) {
        text_error(c, "window",
                   "must be a duration in seconds, minutes or hours such "
                   "as \"10s\", \"15m\" or \"24h\"");
        return 0;
    }
    return ms;
}

static uint32_t get_hours(gd_vctx_t *c, json_t *obj, const char *key, int *ok)
{
    const char *s = get_text(c, obj, key, 1);
    uint32_t minutes = 0;

    if (s == NULL) {
        *ok = 0;
        return 0;
    }

    if (hours_parse(s, &minutes) != 0) {
        text_error(c, key, "must be a time of day from \"00:00\" to \"23:59\"");
        *ok = 0;
        return 0;
    }
    return minutes;
}

/* the later in obj of two members that are both present */
static const char *later_of(json_t *obj, const char *a, const char *b)
{
    const char *key, *seen = NULL;
    json_t *v;

    json_object_foreach(obj, key, v)
    {
        if (strcmp(key, a) == 0 || strcmp(key, b) == 0) {
            if (seen) {
                return key;
            }
            seen = key;
        }
    }
    return b;
}

static const char *risk_conditions[] = {
    "route_sensitive",   "method",
    "body_size_over",    "claim",
    "subject_rate_over", "subject_refusals_over",
    "new_client_ip",     "outside_hours",
    "inline_score_over", NULL};

static void load_condition(gd_vctx_t *c, json_t *when, const char *key,
                           gd_risk_signal_t *s)
{
    static const char *claim_m[] = {"name", "lacks", "equals", NULL};
    static const char *rate_m[] = {"requests", "window", NULL};
    static const char *refusals_m[] = {"count", "window", NULL};
    static const char *ip_m[] = {"window", NULL};
    static const char *hours_m[] = {"from", "to", NULL};
    json_t *v;
    size_t old;

    switch (s->cond) {
    case GD_RISK_ROUTE_SENSITIVE:
        if ((v = member(c, when, key, JSON_TRUE, 1))) {
            s->sensitive = json_is_true(v);
        }
        return;

    case GD_RISK_METHOD:
        s->methods = get_strings(c, when, key, 1, method_ok,
                                 "one of GET HEAD POST PUT PATCH DELETE "
                                 "OPTIONS",
                                 &s->nmethods);
        return;

    case GD_RISK_BODY_SIZE_OVER:
        s->over = get_uint(c, when, key, 1, 0, 1000000000000ULL, 0);
        return;

    case GD_RISK_INLINE_SCORE_OVER:
        s->over = get_uint(c, when, key, 1, 0, 1000000, 0);
        return;

    default:
        break;
    }

    if ((v = member(c, when, key, JSON_OBJECT, 1)) == NULL) {
        return;
    }

    old = push_key(c, key);

    switch (s->cond) {
    case GD_RISK_CLAIM:
        check_members(c, v, claim_m);
        s->claim = get_string(c, v, "name", 1, claim_text_ok,
                              "a claim name of 1-256 bytes");
        if (json_object_get(v, "lacks") && json_object_get(v, "equals")) {
            size_t o2 = push_key(c, later_of(v, "lacks", "equals"));
            verr(c, 0,
                 "a claim condition has one of \"lacks\" and "
                 "\"equals\"");
            pop(c, o2);
        } else if (json_object_get(v, "lacks")) {
            s->claim_lacks = 1;
            s->claim_value = get_string(c, v, "lacks", 1, claim_text_ok,
                                        "a string of 1-256 bytes");
        } else if (json_object_get(v, "equals")) {
            s->claim_value = get_string(c, v, "equals", 1, claim_text_ok,
                                        "a string of 1-256 bytes");
        } else {
            verr(c, 1, "a claim condition needs \"lacks\" or \"equals\"");
        }
        break;

    case GD_RISK_SUBJECT_RATE_OVER:
        check_members(c, v, rate_m);
        s->over = get_uint(c, v, "requests", 1, 1, GD_RISK_MAX_COUNT, 0);
        s->window_ms = get_window(c, v);
        break;

    case GD_RISK_SUBJECT_REFUSALS_OVER:
        check_members(c, v, refusals_m);
        s->over = get_uint(c, v, "count", 1, 1, GD_RISK_MAX_COUNT, 0);
        s->window_ms = get_window(c, v);
        break;

    case GD_RISK_NEW_CLIENT_IP:
        check_members(c, v, ip_m);
        s->window_ms = get_window(c, v);
        break;

    case GD_RISK_OUTSIDE_HOURS: {
        int ok = 1;

        check_members(c, v, hours_m);
        s->from_min = get_hours(c, v, "from", &ok);
        s->to_min = get_hours(c, v, "to", &ok);
        if (ok && s->from_min == s->to_min) {
            text_error(c, "to",
                       "must differ from \"from\" (the hours would be "
                       "empty)");
        }
        break;
    }

    default:
        break;
    }

    pop(c, old);
}

static void load_when(gd_vctx_t *c, json_t *when, gd_risk_signal_t *s)
{
    const char *key, *first = NULL;
    json_t *v;

    check_members(c, when, risk_conditions);

    json_object_foreach(when, key, v)
    {
        int i;

        for (i = 0; risk_conditions[i]; i++) {
            if (strcmp(risk_conditions[i], key) == 0) {
                break;
            }
        }

        if (risk_conditions[i] == NULL) {
            continue; /* reported by check_members */
        }

        if (first) {
            size_t old = push_key(c, key);
            verr(c, 0,
                 "a signal has exactly one condition, and \"%s\" is "
                 "already given",
                 first);
            pop(c, old);
            continue;
        }

        first = key;
        s->cond = (gd_risk_cond_t)(i + 1);
    }

    if (first) {
        load_condition(c, when, first, s);
    } else if (json_object_size(when) == 0) {
        verr(c, 1,
             "needs one condition: route_sensitive, method, "
             "body_size_over, claim, subject_rate_over, "
             "subject_refusals_over, new_client_ip, outside_hours or "
             "inline_score_over");
    }
}

static void load_signal(gd_vctx_t *c, json_t *o, gd_risk_policy_t *r,
                        gd_risk_signal_t *s)
{
    static const char *members[] = {"id", "weight", "when", "shadow", NULL};
    json_t *when;

    check_members(c, o, members);

    s->id = get_string(c, o, "id", 1, signal_id_ok,
                       "1-64 characters of A-Z a-z 0-9 _ -");
    s->weight = (uint32_t)get_uint(c, o, "weight", 1, 1, 1000, 0);
    s->shadow = get_bool(c, o, "shadow");

    if ((when = member(c, o, "when", JSON_OBJECT, 1))) {
        size_t old = push_key(c, "when");
        load_when(c, when, s);
        pop(c, old);
    }

    for (size_t j = 0; s->id && j < r->nsignals; j++) {
        if (r->signals[j].id && strcmp(r->signals[j].id, s->id) == 0) {
            size_t old = push_key(c, "id");
            verr(c, 0, "duplicate signal id \"%s\"", s->id);
            pop(c, old);
        }
    }
}

static void load_risk(gd_vctx_t *c, json_t *v, gd_risk_policy_t *r)
{
    static const char *members[] = {"thresholds", "ttl",     "shadow",
                                    "time_zone",  "signals", NULL};
    static const char *thr_m[] = {"step_up", "deny", NULL};
    json_t *thr, *sig;
    const char *ttl;

    check_members(c, v, members);

    if ((thr = member(c, v, "thresholds", JSON_OBJECT, 1))) {
        size_t old = push_key(c, "thresholds");

        check_members(c, thr, thr_m);
        r->step_up = (uint32_t)get_uint(c, thr, "step_up", 1, 1, 1000, 0);
        r->deny = (uint32_t)get_uint(c, thr, "deny", 1, 1, 1000, 0);
        if (r->step_up && r->deny && r->step_up >= r->deny) {
            size_t o2 = push_key(c, "step_up");
            verr(c, 0, "must be less than deny (%u), not %u", r->deny,
                 r->step_up);
            pop(c, o2);
        }
        pop(c, old);
    }

    if ((ttl = get_text(c, v, "ttl", 0)) && period_parse(ttl, &r->ttl_ms)) {
        text_error(c, "ttl",
                   "must be a duration such as \"1s\", \"10s\", \"1m\", "
                   "\"1h\" or \"500ms\"");
    }

    r->shadow = get_bool(c, v, "shadow");
    r->time_zone = get_string(c, v, "time_zone", 0, time_zone_ok,
                              "a time zone name such as \"Europe/Paris\": "
                              "1-64 characters of A-Z a-z 0-9 _ + - /, not "
                              "starting with /");

    if ((sig = member(c, v, "signals", JSON_ARRAY, 1))) {
        size_t old = push_key(c, "signals"), n = json_array_size(sig);

        if (n == 0) {
            verr(c, 0, "must have at least one signal");
        } else if (n > GD_RISK_MAX_SIGNALS) {
            verr(c, 0, "must have at most %d signals, not %zu",
                 GD_RISK_MAX_SIGNALS, n);
        }

        r->signals = calloc(n + 1, sizeof(gd_risk_signal_t));

        for (size_t i = 0; r->signals && i < n; i++) {
            json_t *o = json_array_get(sig, i);
            size_t o2 = push_index(c, i);

            if (!json_is_object(o)) {
                verr(c, 1, "a signal must be an object");
            } else {
                load_signal(c, o, r, &r->signals[r->nsignals]);
                r->nsignals++;
            }
            pop(c, o2);
        }
        pop(c, old);
    }
}

/* one file */

static void load_policy(gd_vctx_t *c, json_t *doc, gd_policy_t *p,
                        const char *dir, int is_default)
{
    static const char *top[] = {"$schema", "description", "tenant", "shadow",
                                "auth",    "residency",   "limits", "risk",
                                "breaker", "guardrails",  NULL};
    static const char *auth_m[] = {"issuers", "jwks", "shadow", NULL};
    static const char *res_m[] = {"regions", "shadow", NULL};
    static const char *lim_m[] = {"rate", "concurrency", NULL};
    static const char *conc_m[] = {"max", "shadow", "queue", "queue_timeout",
                                   NULL};
    json_t *v;
    size_t old;

    if (!json_is_object(doc)) {
        verr(c, 1, "a policy must be a JSON object");
        return;
    }

    check_members(c, doc, top);
    member(c, doc, "$schema", JSON_STRING, 0);
    member(c, doc, "description", JSON_STRING, 0);

    if (is_default) {
        if (json_object_get(doc, "tenant")) {
            old = push_key(c, "tenant");
            verr(c, 0,
                 "_default.json applies to every tenant without a "
                 "policy and names none");
            pop(c, old);
        }
    } else {
        p->tenant = get_string(c, doc, "tenant", 1, tenant_ok,
                               "1-64 characters of A-Z a-z 0-9 . _ -, "
                               "starting with a letter or digit");
    }

    p->shadow = get_bool(c, doc, "shadow");

    if ((v = member(c, doc, "auth", JSON_OBJECT, 0))) {
        old = push_key(c, "auth");
        check_members(c, v, auth_m);
        p->has_auth = 1;
        p->issuers = get_strings(c, v, "issuers", 0, nonempty_ok,
                                 "a non-empty string", &p->nissuers);
        char *jwks =
            get_string(c, v, "jwks", 0, nonempty_ok, "a non-empty path");
        if (jwks) {
            /* where the key file errors of gd_jwks_policy_load() point */
            size_t at = push_key(c, "jwks");
            gd_jsonloc_find(c->text, c->len, c->path, 1, &p->jwks_line,
                            &p->jwks_column);
            pop(c, at);
        }
        if (jwks && jwks[0] != '/') {
            size_t n = strlen(dir) + strlen(jwks) + 2;
            p->jwks = malloc(n);
            if (p->jwks) {
                snprintf(p->jwks, n, "%s/%s", dir, jwks);
            }
            free(jwks);
        } else {
            p->jwks = jwks;
        }
        p->auth_shadow = get_bool(c, v, "shadow");
        if (json_object_get(v, "issuers") == NULL &&
            json_object_get(v, "jwks") == NULL) {
            verr(c, 1, "auth needs \"issuers\" or \"jwks\"");
        }
        pop(c, old);
    }

    if ((v = member(c, doc, "residency", JSON_OBJECT, 0))) {
        old = push_key(c, "residency");
        check_members(c, v, res_m);
        p->has_residency = 1;
        p->regions = get_strings(c, v, "regions", 1, region_ok,
                                 "a region name: 1-64 characters of "
                                 "A-Z a-z 0-9 . _ -",
                                 &p->nregions);
        p->residency_shadow = get_bool(c, v, "shadow");
        pop(c, old);
    }

    if ((v = member(c, doc, "limits", JSON_OBJECT, 0))) {
        json_t *rate, *conc;

        old = push_key(c, "limits");
        check_members(c, v, lim_m);

        if ((rate = member(c, v, "rate", JSON_ARRAY, 0))) {
            size_t o2 = push_key(c, "rate");

            if (json_array_size(rate) == 0) {
                verr(c, 0, "must have at least one rule");
            }

            p->rates =
                calloc(json_array_size(rate) + 1, sizeof(gd_rate_rule_t));

            for (size_t i = 0; p->rates && i < json_array_size(rate); i++) {
                json_t *r = json_array_get(rate, i);
                size_t o3 = push_index(c, i);

                if (!json_is_object(r)) {
                    verr(c, 1, "a rate rule must be an object");
                } else {
                    load_rate(c, r, &p->rates[p->nrates], p, p->nrates);
                    p->nrates++;
                }
                pop(c, o3);
            }
            pop(c, o2);
        }

        if ((conc = member(c, v, "concurrency", JSON_OBJECT, 0))) {
            size_t o2 = push_key(c, "concurrency");
            check_members(c, conc, conc_m);
            p->concurrency =
                (uint32_t)get_uint(c, conc, "max", 1, 1, 1000000, 0);
            p->concurrency_shadow = get_bool(c, conc, "shadow");
            p->concurrency_queue =
                (uint32_t)get_uint(c, conc, "queue", 0, 0, 1000000, 0);
            p->concurrency_queue_timeout_ms = 1000;
            const char *qt = get_text(c, conc, "queue_timeout", 0);
            if (qt && (period_parse(qt, &p->concurrency_queue_timeout_ms) ||
                       p->concurrency_queue_timeout_ms > 3600 * 1000)) {
                text_error(c, "queue_timeout",
                           "must be a duration from \"1ms\" to \"1h\" "
                           "such as \"500ms\", \"1s\" or \"1m\"");
                p->concurrency_queue_timeout_ms = 1000;
            }
            pop(c, o2);
        }

        pop(c, old);
    }

    if ((v = member(c, doc, "risk", JSON_OBJECT, 0))) {
        old = push_key(c, "risk");
        p->has_risk = 1;
        load_risk(c, v, &p->risk);
        pop(c, old);
    }

    if ((v = member(c, doc, "breaker", JSON_OBJECT, 0))) {
        old = push_key(c, "breaker");
        load_breakers(c, v, p);
        pop(c, old);
    }

    if ((v = member(c, doc, "guardrails", JSON_OBJECT, 0))) {
        old = push_key(c, "guardrails");
        p->has_guardrails = 1;
        gd_gr_section_load(c, v, &p->guardrails);
        pop(c, old);
    }
}

static void policy_free(gd_policy_t *p)
{
    free(p->tenant);
    free(p->file);
    free_strings(p->issuers, p->nissuers);
    free(p->jwks);
    free_strings(p->regions, p->nregions);
    for (size_t i = 0; i < p->nrates; i++) {
        free(p->rates[i].name);
        free_strings(p->rates[i].methods, p->rates[i].nmethods);
        free(p->rates[i].path);
    }
    free(p->rates);
    for (size_t i = 0; i < p->risk.nsignals; i++) {
        gd_risk_signal_t *s = &p->risk.signals[i];

        free(s->id);
        free_strings(s->methods, s->nmethods);
        free(s->claim);
        free(s->claim_value);
    }
    free(p->risk.signals);
    for (size_t i = 0; i < p->nbreakers; i++) {
        free(p->breakers[i].name);
    }
    free(p->breakers);
    free(p->risk.time_zone);
    free(p->risk.zone);
    gd_gr_section_free(&p->guardrails);
}

void gd_policy_free(gd_policy_t *p)
{
    policy_free(p);
    memset(p, 0, sizeof(*p));
}

json_t *load_json(const char *file, const char *text, size_t len,
                  gd_errors_t *errs)
{
    json_error_t jerr;
    json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);

    if (doc == NULL) {
        int line = jerr.line, column = jerr.column;

        /* jansson counts characters; errors here count bytes */
        if (jerr.position > 0) {
            size_t at = (size_t)jerr.position - 1;

            gd_jsonloc_linecol(text, len, at, &line, &column);
        }
        if (line < 1) {
            line = 1;
        }
        if (column < 1) {
            column = 1;
        }
        gd_errors_add(errs, "%s:%d:%d: : invalid JSON: %s", file, line, column,
                      jerr.text);
    }
    return doc;
}

/* gd_policy_parse() with the directory's packs (NULL: loaded here) */
static json_t *parse(const char *file, const char *text, size_t len,
                     const char *dir, int is_default, gd_policy_t *p,
                     struct gd_gr_packs_s *packs, gd_errors_t *errs)
{
    json_t *doc = load_json(file, text, len, errs);

    memset(p, 0, sizeof(*p));

    if (doc == NULL) {
        return NULL;
    }

    gd_vctx_t c = {.file = file,
                   .text = text,
                   .len = len,
                   .errs = errs,
                   .dir = dir,
                   .packs = packs};

    p->file = strdup(file);
    load_policy(&c, doc, p, dir, is_default);

    return doc;
}

json_t *gd_policy_parse(const char *file, const char *text, size_t len,
                        const char *dir, int is_default, gd_policy_t *p,
                        gd_errors_t *errs)
{
    return parse(file, text, len, dir, is_default, p, NULL, errs);
}

void gd_policy_set_free(gd_policy_set_t *set)
{
    if (set == NULL) {
        return;
    }

    for (size_t i = 0; i < set->ntenants; i++) {
        policy_free(&set->tenants[i]);
    }
    free(set->tenants);

    if (set->fallback) {
        policy_free(set->fallback);
        free(set->fallback);
    }

    free(set);
}

/* the directory */

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int tenant_cmp(const void *a, const void *b)
{
    return strcmp(((const gd_policy_t *)a)->tenant,
                  ((const gd_policy_t *)b)->tenant);
}

char **list_json(const char *dir, size_t *n, int required, gd_errors_t *errs)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL;

    *n = 0;

    if (d == NULL) {
        if (required) {
            gd_errors_add(errs, "%s: cannot open the policy directory: %s", dir,
                          strerror(errno));
        }
        return NULL;
    }

    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        char path[4096];
        struct stat st;

        if (len < 6 || e->d_name[0] == '.' ||
            strcmp(e->d_name + len - 5, ".json") != 0) {
            continue;
        }

        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
            continue;
        }

        char **more = realloc(names, (*n + 1) * sizeof(char *));
        if (more == NULL) {
            break;
        }
        names = more;
        names[(*n)++] = strdup(e->d_name);
    }

    closedir(d);

    if (*n == 0 && required) {
        gd_errors_add(errs, "%s: no policy files (*.json)", dir);
    }

    if (*n > 1) {
        qsort(names, *n, sizeof(char *), name_cmp);
    }
    return names;
}

char *read_file(const char *path, size_t *len, gd_errors_t *errs)
{
    FILE *f = fopen(path, "rb");
    char *buf;

    if (f == NULL) {
        gd_errors_add(errs, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }

    buf = malloc(GD_POLICY_FILE_MAX + 1);
    if (buf == NULL) {
        fclose(f);
        return NULL;
    }

    *len = fread(buf, 1, GD_POLICY_FILE_MAX + 1, f);
    fclose(f);

    if (*len > GD_POLICY_FILE_MAX) {
        gd_errors_add(errs, "%s: larger than %d bytes", path,
                      GD_POLICY_FILE_MAX);
        free(buf);
        return NULL;
    }

    buf[*len] = '\0';
    return buf;
}

gd_policy_set_t *gd_policy_set_load(const char *dir, gd_errors_t *errs)
{
    size_t nfiles, before = errs->n;
    char **files = list_json(dir, &nfiles, 1, errs);
    gd_policy_set_t *set = calloc(1, sizeof(gd_policy_set_t));
    json_t *canon = json_object(), *canon_tenants = json_object();
    json_t *canon_packs = json_object();
    struct gd_gr_packs_s *packs = NULL;

    if (set == NULL || canon == NULL || canon_tenants == NULL ||
        canon_packs == NULL) {
        goto failed;
    }

    /* the packs first: each checked once, and part of the version (a
       set without packs keeps the version it had before packs existed) */
    packs = gd_gr_packs_load(dir, errs, canon_packs);
    if (packs == NULL) {
        goto failed;
    }
    if (json_object_size(canon_packs) > 0) {
        json_object_set_new(canon, "packs", canon_packs);
    } else {
        json_decref(canon_packs);
    }
    canon_packs = NULL;

    set->tenants = calloc(nfiles + 1, sizeof(gd_policy_t));
    if (set->tenants == NULL) {
        goto failed;
    }

    for (size_t i = 0; i < nfiles; i++) {
        char path[4096];
        size_t len, nerrs = errs->n;
        int is_default = strcmp(files[i], "_default.json") == 0;

        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);

        char *text = read_file(path, &len, errs);
        if (text == NULL) {
            continue;
        }

        gd_policy_t p;
        json_t *doc = parse(path, text, len, dir, is_default, &p, packs, errs);
        if (doc == NULL) {
            free(text);
            continue;
        }

        gd_vctx_t c = {.file = path,
                       .text = text,
                       .len = len,
                       .errs = errs,
                       .failed = errs->n != nerrs,
                       .dir = dir,
                       .packs = packs};

        if (!is_default && p.tenant) {
            for (size_t j = 0; j < set->ntenants; j++) {
                if (strcmp(set->tenants[j].tenant, p.tenant) == 0) {
                    size_t old = push_key(&c, "tenant");
                    verr(&c, 0, "duplicate tenant \"%s\" (also in %s)",
                         p.tenant, set->tenants[j].file);
                    pop(&c, old);
                }
            }
        }

        json_t *copy = json_deep_copy(doc);
        if (copy) {
            json_object_del(copy, "$schema");
            if (is_default) {
                json_object_set_new(canon, "default", copy);
            } else if (p.tenant) {
                json_object_set_new(canon_tenants, p.tenant, copy);
            } else {
                json_decref(copy);
            }
        }

        if (c.failed) {
            policy_free(&p);
        } else if (is_default) {
            set->fallback = malloc(sizeof(gd_policy_t));
            if (set->fallback) {
                *set->fallback = p;
            }
        } else {
            set->tenants[set->ntenants++] = p;
        }

        json_decref(doc);
        free(text);
    }

    if (errs->n != before) {
        goto failed;
    }

    if (set->ntenants > 1) {
        qsort(set->tenants, set->ntenants, sizeof(gd_policy_t), tenant_cmp);
    }

    /* the version: SHA-256 of the canonical form of the whole set */

    json_object_set_new(canon, "tenants", canon_tenants);
    canon_tenants = NULL;

    char *dump =
        json_dumps(canon, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    if (dump == NULL) {
        goto failed;
    }

    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)dump, strlen(dump), md);
    free(dump);

    for (size_t i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        snprintf(set->version + 2 * i, 3, "%02x", md[i]);
    }

    json_decref(canon);
    gd_gr_packs_free(packs);
    free_strings(files, nfiles);
    return set;

failed:
    json_decref(canon);
    json_decref(canon_tenants);
    json_decref(canon_packs);
    gd_gr_packs_free(packs);
    free_strings(files, nfiles);
    gd_policy_set_free(set);
    if (errs->n == before) {
        gd_errors_add(errs, "%s: out of memory", dir);
    }
    return NULL;
}

const gd_policy_t *gd_policy_find(const gd_policy_set_t *set,
                                  const char *tenant, size_t len)
{
    size_t lo = 0, hi = set->ntenants;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *t = set->tenants[mid].tenant;
        size_t tlen = strlen(t);
        int rc = memcmp(tenant, t, len < tlen ? len : tlen);

        if (rc == 0) {
            rc = (len > tlen) - (len < tlen);
        }
        if (rc == 0) {
            return &set->tenants[mid];
        }
        if (rc < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }

    return set->fallback;
}

int gd_rate_rule_matches(const gd_rate_rule_t *rule, const char *method,
                         size_t method_len, const char *path, size_t path_len)
{
    char buf[2048];

    if (rule->methods) {
        size_t i;

        for (i = 0; i < rule->nmethods; i++) {
            if (strlen(rule->methods[i]) == method_len &&
                memcmp(rule->methods[i], method, method_len) == 0) {
                break;
            }
        }
        if (i == rule->nmethods) {
            return 0;
        }
    }

    if (rule->path == NULL) {
        return 1;
    }

    if (path_len >= sizeof(buf)) {
        path_len = sizeof(buf) - 1;
    }
    memcpy(buf, path, path_len);
    buf[path_len] = '\0';

    size_t plen = strlen(rule->path);

    if (plen >= 3 && strcmp(rule->path + plen - 3, "/**") == 0) {
        /* a trailing slash and two stars: the pattern, then any suffix */
        char base[512];

        if (plen - 3 >= sizeof(base)) {
            return 0;
        }
        memcpy(base, rule->path, plen - 3);
        base[plen - 3] = '\0';

        for (size_t i = 1; i <= path_len; i++) {
            if (i == path_len || buf[i] == '/') {
                char saved = buf[i];
                buf[i] = '\0';
                int m = fnmatch(base, buf, FNM_PATHNAME) == 0;
                buf[i] = saved;
                if (m) {
                    return 1;
                }
            }
        }
        return 0;
    }

    return fnmatch(rule->path, buf, FNM_PATHNAME) == 0;
}
