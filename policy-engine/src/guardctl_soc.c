/*
 * guardctl blocked, show and review: the SOC's view of the journal.  The
 * journal is only read here: a review goes to guardd as an AUDIT frame
 * (guardctl_client.c), and guardd, the journal's one writer, appends it.
 * With --db (or GUARD_DB) the records come from the PostgreSQL store
 * instead (guardctl_db.c), through the same callbacks and printers.
 */
#include "guardctl.h"

#include "gd_journal.h"
#include "gd_suggest.h"
#include "gd_reason.h"
#include "gd_soc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/*
 * Journal values come from requests and tokens: control characters are
 * shown as \xNN, never sent to the analyst's terminal.
 */
static char *clean(const char *s)
{
    size_t len = strlen(s), o = 0;
    char *out = malloc(len * 4 + 1);

    if (out == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) {
            o += (size_t)snprintf(out + o, 5, "\\x%02x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
    return out;
}

/* prints a cleaned value */
static void put(const char *s)
{
    char *c = clean(s);
    fputs(c ? c : "?", stdout);
    free(c);
}

static const char *rec_id(const json_t *rec)
{
    const char *id = gd_soc_str(rec, "id");
    return id ? id : gd_soc_str(rec, "decision_id");
}

static void warn_skipped(uint64_t skipped)
{
    if (skipped) {
        fprintf(stderr,
                "guardctl: %llu journal line%s could not be read; run "
                "guardctl audit verify\n",
                (unsigned long long)skipped, skipped == 1 ? "" : "s");
    }
}

/* blocked: the newest refusals */

typedef struct {
    soc_filter_t f;
    uint64_t seq;
    gd_soc_top_t top;
} blocked_ctx_t;

static int filter_match(const json_t *rec, const char *key, const char *want)
{
    const char *v;

    if (want == NULL) {
        return 1;
    }
    v = gd_soc_str(rec, key);
    return v != NULL && strcmp(v, want) == 0;
}

static int blocked_cb(json_t *rec, const char *segment, uint64_t line,
                      void *arg)
{
    blocked_ctx_t *ctx = arg;
    int64_t ts = gd_soc_ts_ms(rec);

    (void)segment;
    (void)line;

    ctx->seq++; /* the journal's order breaks ties */

    if (!gd_soc_is_refusal(rec) ||
        !filter_match(rec, "tenant", ctx->f.tenant) ||
        !filter_match(rec, "subject", ctx->f.subject) ||
        !filter_match(rec, "reason", ctx->f.reason)) {
        return 0;
    }

    if ((ctx->f.has_since || ctx->f.has_until) && ts < 0) {
        return 0; /* no time: it cannot be in a window */
    }
    if ((ctx->f.has_since && ts < ctx->f.since) ||
        (ctx->f.has_until && ts > ctx->f.until)) {
        return 0;
    }

    return gd_soc_top_offer(&ctx->top, rec, ts, ctx->seq) == 0 ? 0 : -2;
}

#define BLOCKED_COLS 8

static void table_cell(int c, const char *text, size_t width)
{
    if (c + 1 < BLOCKED_COLS) {
        printf("%-*s  ", (int)width, text);
    } else {
        printf("%s\n", text);
    }
}

static void blocked_table(gd_soc_top_t *top)
{
    static const char *head[BLOCKED_COLS] = {"TIME",    "DECISION", "TENANT",
                                             "SUBJECT", "STATUS",   "REASON",
                                             "STAGE",   "SCORE"};
    size_t width[BLOCKED_COLS];
    char ***rows = calloc(top->n, sizeof(char **));

    if (rows == NULL) {
        return;
    }

    for (int c = 0; c < BLOCKED_COLS; c++) {
        width[c] = strlen(head[c]);
    }

    for (size_t r = 0; r < top->n; r++) {
        json_t *rec = top->v[r].rec, *v;
        const char *outcome = gd_soc_str(rec, "outcome");
        char buf[64], reason[512];

        rows[r] = calloc(BLOCKED_COLS, sizeof(char *));
        if (rows[r] == NULL) {
            continue;
        }

        if (top->v[r].ts >= 0) {
            gd_soc_format_time(top->v[r].ts, 0, buf, sizeof(buf));
        } else {
            snprintf(buf, sizeof(buf), "-");
        }
        rows[r][0] = strdup(buf);

        rows[r][1] = clean(rec_id(rec) ? rec_id(rec) : "-");
        rows[r][2] =
            clean(gd_soc_str(rec, "tenant") ? gd_soc_str(rec, "tenant") : "-");
        rows[r][3] = clean(
            gd_soc_str(rec, "subject") ? gd_soc_str(rec, "subject") : "-");

        v = json_object_get(rec, "status");
        if (json_is_integer(v)) {
            snprintf(buf, sizeof(buf), "%lld",
                     (long long)json_integer_value(v));
        } else {
            snprintf(buf, sizeof(buf), "-");
        }
        rows[r][4] = strdup(buf);

        /* a shadow refusal was not enforced: say so next to its reason */
        snprintf(reason, sizeof(reason), "%s%s",
                 gd_soc_str(rec, "reason") ? gd_soc_str(rec, "reason") : "-",
                 outcome && strcmp(outcome, "shadow_deny") == 0 ? " (shadow)"
                                                                : "");
        rows[r][5] = clean(reason);
        rows[r][6] =
            clean(gd_soc_str(rec, "stage") ? gd_soc_str(rec, "stage") : "-");

        v = json_object_get(rec, "score");
        if (json_is_number(v)) {
            snprintf(buf, sizeof(buf), "%g", json_number_value(v));
        } else {
            snprintf(buf, sizeof(buf), "-");
        }
        rows[r][7] = strdup(buf);

        for (int c = 0; c < BLOCKED_COLS; c++) {
            if (rows[r][c] && strlen(rows[r][c]) > width[c]) {
                width[c] = strlen(rows[r][c]);
            }
        }
    }

    for (int c = 0; c < BLOCKED_COLS; c++) {
        table_cell(c, head[c], width[c]);
    }

    for (size_t r = 0; r < top->n; r++) {
        if (rows[r] == NULL) {
            continue;
        }
        for (int c = 0; c < BLOCKED_COLS; c++) {
            const char *cell = rows[r][c] ? rows[r][c] : "?";
            table_cell(c, cell, width[c]);
            free(rows[r][c]);
        }
        free(rows[r]);
    }

    free(rows);
}

static int parse_limit(const char *s, size_t *limit)
{
    char *end;
    unsigned long long n;

    if (s == NULL || *s < '0' || *s > '9') {
        return -1;
    }
    errno = 0;
    n = strtoull(s, &end, 10);
    if (errno || *end || n > 10000000) {
        return -1;
    }
    *limit = (size_t)n;
    return 0;
}

/* --since, --until: a time from a duration before now or ISO 8601; 0, or
 * usage()'s exit status */
static int time_bound(const char *name, const char *text, int64_t now,
                      int64_t *ms, int *has)
{
    if (text == NULL) {
        return 0;
    }
    if (gd_soc_parse_time(text, now, ms) != 0) {
        return usage_error("%s: \"%s\" is not a duration (30m, 1h, 2d) or an "
                           "ISO 8601 time",
                           name, text);
    }
    *has = 1;
    return 0;
}

/*
 * --reason: a reason code of the table (gd_reason.def, docs/reasons.md),
 * or a message naming the nearest code, or all of them; 0 or -1.
 */
static int reason_code(const char *name)
{
    const char *names[GD_REASON_LAST + 1];
    const char *near;

    if (gd_reason_find(name) != GD_REASON_LAST &&
        gd_reason_find(name) != GD_REASON_NONE) {
        return 0;
    }

    for (int i = 0; i < GD_REASON_LAST; i++) {
        names[i] = gd_reason((gd_reason_e)i)->name;
    }
    names[GD_REASON_LAST] = NULL;
    /* row 0, "none", is no refusal: never suggested */
    near = gd_suggest(name, names + 1);
    if (near) {
        fprintf(stderr,
                "guardctl: blocked: --reason \"%s\" is not a reason code; "
                "did you mean \"%s\"?\n",
                name, near);
        return -1;
    }
    fprintf(stderr,
            "guardctl: blocked: --reason \"%s\" is not a reason code; the "
            "codes (docs/reasons.md):\n",
            name);
    for (int i = 1; i < GD_REASON_LAST; i++) {
        fprintf(stderr, "  %s\n", names[i]);
    }
    return -1;
}

int blocked(int argc, char **argv)
{
    blocked_ctx_t ctx = {0};
    const char *dir = journal_dir(), *since = NULL, *until = NULL,
               *limit_arg = NULL, *dsn = NULL;
    int64_t now = gd_soc_now_ms();
    size_t limit = 50;
    int json = 0, rc;
    uint64_t skipped;
    char err[512];
    const guardctl_opt_t opts[] = {OPT_FLAG("--json", json),
                                   OPT("--dir", dir),
                                   OPT("--db", dsn),
                                   OPT("--tenant", ctx.f.tenant),
                                   OPT("--subject", ctx.f.subject),
                                   OPT("--reason", ctx.f.reason),
                                   OPT("--since", since),
                                   OPT("--until", until),
                                   OPT("--limit", limit_arg),
                                   {NULL}};

    rc = opts_parse("blocked", argc, argv, opts, NULL);
    if (rc != 0) {
        return rc;
    }

    rc = time_bound("--since", since, now, &ctx.f.since, &ctx.f.has_since);
    if (rc == 0) {
        rc = time_bound("--until", until, now, &ctx.f.until, &ctx.f.has_until);
    }
    if (rc != 0) {
        return rc;
    }
    if (ctx.f.reason && reason_code(ctx.f.reason) != 0) {
        return 2;
    }
    if (limit_arg && parse_limit(limit_arg, &limit) != 0) {
        return usage_error("--limit: \"%s\" is not a number (0: no limit)",
                           limit_arg);
    }

    gd_soc_top_init(&ctx.top, limit);

    dsn = db_dsn(dsn);
    if (dsn) {
        uint64_t matching = 0;
        /* the store keeps the newest limit: the heap sees only those */
        rc = db_refusals(dsn, &ctx.f, limit, blocked_cb, &ctx, &matching);
        ctx.top.seen = matching;
        skipped = 0;
    } else {
        rc = gd_journal_scan(dir, blocked_cb, &ctx, &skipped, err, sizeof(err));
    }
    if (rc != 0) {
        gd_soc_top_free(&ctx.top);
        if (rc == -1) {
            return dsn ? 2 : journal_error(dir, err);
        }
        fprintf(stderr, "guardctl: out of memory while reading the %s\n",
                dsn ? "records" : "journal");
        return 2;
    }
    warn_skipped(skipped);

    gd_soc_top_sort(&ctx.top);

    if (json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < ctx.top.n; i++) {
            json_array_append(arr, ctx.top.v[i].rec);
        }
        json_dumpf(arr, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
        fputc('\n', stdout);
        json_decref(arr);
    } else if (ctx.top.n == 0) {
        printf("no refusals match\n");
    } else {
        blocked_table(&ctx.top);
        if (ctx.top.n < ctx.top.seen) {
            printf("(%zu of %llu matching refusals, newest first; "
                   "--limit N shows more)\n",
                   ctx.top.n, (unsigned long long)ctx.top.seen);
        }
    }

    gd_soc_top_free(&ctx.top);
    return 0;
}

/* show: one record, explained, and its reviews */

typedef struct {
    json_t *rec;
    char segment[32];
    uint64_t line;
} located_t;

/*
 * A decision id is asked for in any case and by a unique prefix: the
 * records of the one id that starts so (or is exactly that), and the
 * reviews of it.  The other ids that start so are counted (up to
 * SHOW_OTHERS_MAX kept to name a few).
 */
#define SHOW_OTHERS_MAX 100

typedef struct {
    const char *id; /* as asked */
    char *match;    /* the id found */
    int exact;      /* match is the id asked for, not only its start */
    located_t *found, *reviews;
    size_t nfound, nreviews;
    char *others[SHOW_OTHERS_MAX];
    size_t nothers;
    int more_others; /* more than SHOW_OTHERS_MAX */
} show_ctx_t;

static int locate_push(located_t **v, size_t *n, json_t *rec,
                       const char *segment, uint64_t line)
{
    located_t *more = realloc(*v, (*n + 1) * sizeof(located_t));

    if (more == NULL) {
        return -2;
    }
    *v = more;
    more[*n].rec = json_incref(rec);
    snprintf(more[*n].segment, sizeof(more[*n].segment), "%s", segment);
    more[*n].line = line;
    (*n)++;
    return 0;
}

static void located_free(located_t **v, size_t *n)
{
    for (size_t i = 0; i < *n; i++) {
        json_decref((*v)[i].rec);
    }
    free(*v);
    *v = NULL;
    *n = 0;
}

/* id starts with what was asked (any case) */
static int id_starts(const char *id, const char *asked)
{
    return id && strncasecmp(id, asked, strlen(asked)) == 0;
}

/* another id that starts as asked: counted, kept while there is room */
static int show_other(show_ctx_t *ctx, const char *id)
{
    for (size_t i = 0; i < ctx->nothers; i++) {
        if (strcasecmp(ctx->others[i], id) == 0) {
            return 0;
        }
    }
    if (ctx->nothers == SHOW_OTHERS_MAX) {
        ctx->more_others = 1;
        return 0;
    }
    ctx->others[ctx->nothers] = strdup(id);
    if (ctx->others[ctx->nothers] == NULL) {
        return -2;
    }
    ctx->nothers++;
    return 0;
}

static int show_cb(json_t *rec, const char *segment, uint64_t line, void *arg)
{
    show_ctx_t *ctx = arg;
    const char *id;
    int exact;

    if (gd_soc_is_review(rec)) {
        /* kept while the id is not known yet; sorted out at the end */
        id = gd_soc_str(rec, "review_of");
        return id_starts(id, ctx->id)
                   ? locate_push(&ctx->reviews, &ctx->nreviews, rec, segment,
                                 line)
                   : 0;
    }

    id = rec_id(rec);
    if (!id_starts(id, ctx->id)) {
        return 0;
    }
    exact = strcasecmp(id, ctx->id) == 0;

    if (ctx->match == NULL || (exact && !ctx->exact)) {
        /* the first id that starts so, or the very id asked for */
        if (ctx->match) {
            int rc = show_other(ctx, ctx->match);
            free(ctx->match);
            located_free(&ctx->found, &ctx->nfound);
            if (rc != 0) {
                ctx->match = NULL;
                return rc;
            }
        }
        ctx->match = strdup(id);
        ctx->exact = exact;
        if (ctx->match == NULL) {
            return -2;
        }
    } else if (strcasecmp(id, ctx->match) != 0) {
        return show_other(ctx, id);
    }
    return locate_push(&ctx->found, &ctx->nfound, rec, segment, line);
}

static void show_free(show_ctx_t *ctx)
{
    located_free(&ctx->found, &ctx->nfound);
    located_free(&ctx->reviews, &ctx->nreviews);
    for (size_t i = 0; i < ctx->nothers; i++) {
        free(ctx->others[i]);
    }
    free(ctx->match);
}

/* the reviews kept that are of another id than the one found: dropped */
static void show_reviews_of_match(show_ctx_t *ctx)
{
    size_t kept = 0;

    for (size_t i = 0; i < ctx->nreviews; i++) {
        const char *of = gd_soc_str(ctx->reviews[i].rec, "review_of");
        if (strcasecmp(of, ctx->match) == 0) {
            ctx->reviews[kept++] = ctx->reviews[i];
        } else {
            json_decref(ctx->reviews[i].rec);
        }
    }
    ctx->nreviews = kept;
}

/*
 * finds the records of id in the journal in dir, or in the store when dsn
 * is set; 0, or the exit status with a message printed
 */
static int show_find(const char *dir, const char *dsn, show_ctx_t *ctx)
{
    char err[512];
    uint64_t skipped = 0;
    int rc;

    if (*ctx->id == '\0') {
        fprintf(stderr, "guardctl: the decision id is empty\n");
        return 1;
    }

    rc = dsn ? db_records_of(dsn, ctx->id, show_cb, ctx)
             : gd_journal_scan(dir, show_cb, ctx, &skipped, err, sizeof(err));
    if (rc != 0) {
        if (rc == -1) {
            return dsn ? 2 : journal_error(dir, err);
        }
        fprintf(stderr, "guardctl: out of memory while reading the %s\n",
                dsn ? "records" : "journal");
        return 2;
    }
    warn_skipped(skipped);
    if (dsn) {
        dir = "the database (--db)";
    }

    if (ctx->match == NULL) {
        fprintf(stderr, "guardctl: no record with id \"%s\" in %s\n", ctx->id,
                dir);
        return 1;
    }

    if (!ctx->exact && ctx->nothers > 0) {
        fprintf(stderr,
                "guardctl: \"%s\" is the start of %s%zu decision ids in %s; "
                "give more characters of the id:\n",
                ctx->id, ctx->more_others ? "more than " : "", ctx->nothers + 1,
                dir);
        fprintf(stderr, "  %s\n", ctx->match);
        for (size_t i = 0; i < ctx->nothers && i < 4; i++) {
            fprintf(stderr, "  %s\n", ctx->others[i]);
        }
        if (ctx->nothers > 4) {
            fprintf(stderr, "  ...\n");
        }
        return 1;
    }

    show_reviews_of_match(ctx);
    return 0;
}

/* what a reason means, in short, or NULL (gd_reason.def) */

static const char *reason_words(const char *reason)
{
    gd_reason_e r = gd_reason_find(reason);

    return r == GD_REASON_LAST ? NULL : gd_reason(r)->words;
}

static void field(const char *label, const char *value)
{
    printf("  %-12s ", label);
    put(value);
    fputc('\n', stdout);
}

static int json_int(const json_t *o, const char *key, long long *v)
{
    json_t *j = json_object_get(o, key);
    if (!json_is_integer(j)) {
        return 0;
    }
    *v = (long long)json_integer_value(j);
    return 1;
}

/* the guardrails member: the verdict, the score, one line per hit */
static void explain_guardrails(json_t *gr)
{
    json_t *hits = json_object_get(gr, "hits"), *h;
    long long score = 0, threshold = 0, total = 0;
    char buf[1024];
    size_t i;

    if (!json_is_object(gr)) {
        return;
    }

    json_int(gr, "score", &score);
    json_int(gr, "threshold", &threshold);
    snprintf(buf, sizeof(buf), "%s, score %lld%s%.0lld%s%s%s",
             gd_soc_str(gr, "verdict") ? gd_soc_str(gr, "verdict") : "-", score,
             threshold ? " of threshold " : "", threshold,
             gd_soc_str(gr, "shadow_verdict") ? ", shadow: " : "",
             gd_soc_str(gr, "shadow_verdict") ? gd_soc_str(gr, "shadow_verdict")
                                              : "",
             gd_soc_str(gr, "error") ? " (error)" : "");
    field("guardrails", buf);

    if (gd_soc_str(gr, "error")) {
        field("error", gd_soc_str(gr, "error"));
    }

    json_array_foreach(hits, i, h)
    {
        long long off = 0, len = 0, sc = 0;
        const char *name = gd_soc_str(h, "pointer") ? gd_soc_str(h, "pointer")
                                                    : gd_soc_str(h, "name");
        const char *pack = gd_soc_str(h, "pack");
        const char *det = gd_soc_str(h, "detector");
        char *c;

        json_int(h, "offset", &off);
        json_int(h, "length", &len);
        json_int(h, "score", &sc);
        snprintf(buf, sizeof(buf),
                 "%s%s%s%s: %s %s%s%s bytes %lld-%lld%s%s%s%.0lld%s",
                 gd_soc_str(h, "rule") ? gd_soc_str(h, "rule") : "?",
                 pack ? " (pack " : "", pack ? pack : "", pack ? ")" : "",
                 gd_soc_str(h, "action") ? gd_soc_str(h, "action") : "?",
                 gd_soc_str(h, "target") ? gd_soc_str(h, "target") : "?",
                 name ? " " : "", name ? name : "", off, off + len,
                 det ? ", detector " : "", det ? det : "", sc ? ", score " : "",
                 sc,
                 json_is_true(json_object_get(h, "shadow")) ? ", shadow" : "");
        c = clean(buf);
        printf("  %-12s %s\n", i == 0 ? "hits" : "", c ? c : "?");
        free(c);
    }
    if (json_int(gr, "hits_total", &total)) {
        snprintf(buf, sizeof(buf), "%lld in all (the first %zu are kept)",
                 total, json_array_size(hits));
        field("hits", buf);
    }
}

static void explain(const located_t *at, int64_t now)
{
    json_t *rec = at->rec, *signals, *th, *rest;
    const char *stage = gd_soc_str(rec, "stage");
    const char *outcome = gd_soc_str(rec, "outcome");
    const char *reason = gd_soc_str(rec, "reason");
    const char *method = gd_soc_str(rec, "method");
    const char *route = gd_soc_str(rec, "route");
    int64_t ts = gd_soc_ts_ms(rec);
    int shadow = outcome && strcmp(outcome, "shadow_deny") == 0;
    /* a request that passed with guardrail hits (redacted or logged) */
    int passed = outcome && (strcmp(outcome, "redact") == 0 ||
                             strcmp(outcome, "log") == 0);
    long long status = 0, score = 0;
    int has_status = json_int(rec, "status", &status);
    int has_score = json_int(rec, "score", &score);
    char buf[1024], when[64], rel[64];
    static const char *shown[] = {
        "id",          "decision_id", "ts_ms",      "tenant",
        "subject",     "client_ip",   "method",     "route",
        "stage",       "outcome",     "status",     "reason",
        "score",       "signals",     "thresholds", "policy_version",
        "traceparent", "node",        "shadow",     "prev_hash",
        "hash",        "guardrails",  NULL};

    /* the summary, in one sentence */
    printf("Decision ");
    put(rec_id(rec));
    if (shadow) {
        printf(": would have been refused");
    } else if (passed) {
        printf(": passed");
    } else if (outcome && strcmp(outcome, "deny") != 0) {
        printf(": %s", outcome);
    } else {
        printf(": refused");
    }
    if (has_status) {
        printf(" with %lld", status);
    }
    if (reason) {
        printf(" (");
        put(reason);
        printf(")");
    }
    if (passed) {
        printf(", %s", strcmp(outcome, "redact") == 0 ? "redacted" : "logged");
    }
    if (stage) {
        printf(" by the ");
        put(stage);
        printf(" stage");
    }
    if (shadow) {
        printf(", in shadow mode: the request went on");
    }
    printf(".\n");

    if (ts >= 0) {
        gd_soc_format_time(ts, 1, when, sizeof(when));
        gd_soc_format_age(ts, now, rel, sizeof(rel));
        snprintf(buf, sizeof(buf), "%s (%s)", when, rel);
        field("when", buf);
    }

    if (stage) {
        const char *w = gd_reason_stage_words(stage);
        snprintf(buf, sizeof(buf), "%s%s%s", stage, w ? ": " : "", w ? w : "");
        field("stage", buf);
    }

    if (outcome || has_status) {
        if (shadow) {
            snprintf(buf, sizeof(buf),
                     "shadow_deny: status %lld was NOT sent; the rule only "
                     "observes (shadow mode)",
                     status);
        } else if (outcome && strcmp(outcome, "deny") == 0) {
            snprintf(buf, sizeof(buf),
                     "deny: the request was refused with "
                     "status %lld",
                     status);
        } else {
            snprintf(buf, sizeof(buf), "%s, status %lld",
                     outcome ? outcome : "-", status);
        }
        field("outcome", buf);
    }

    if (reason) {
        const char *w = reason_words(reason);
        snprintf(buf, sizeof(buf), "%s%s%s", reason, w ? ": " : "", w ? w : "");
        field("reason", buf);
    }

    signals = json_object_get(rec, "signals");
    if (json_is_array(signals)) {
        size_t i, n = json_array_size(signals), idw = 0;
        json_t *s;

        json_array_foreach(signals, i, s)
        {
            const char *id = gd_soc_str(s, "id");
            if (id && strlen(id) > idw) {
                idw = strlen(id);
            }
        }

        if (n == 0) {
            field("signals", "none matched");
        }
        json_array_foreach(signals, i, s)
        {
            long long w = 0;
            const char *id = gd_soc_str(s, "id");
            int sh = json_is_true(json_object_get(s, "shadow"));
            char *c = clean(id ? id : "?");

            json_int(s, "weight", &w);
            snprintf(buf, sizeof(buf), "%-*s weight %lld%s", (int)idw,
                     c ? c : "?", w,
                     sh ? "  shadow: observed, not counted in the score" : "");
            free(c);
            printf("  %-12s %s\n", i == 0 ? "signals" : "", buf);
        }
    }

    th = json_object_get(rec, "thresholds");
    if (has_score) {
        long long su, dn;
        int has_su = json_int(th, "step_up", &su);
        int has_dn = json_int(th, "deny", &dn);

        if (has_su || has_dn) {
            const char *verdict =
                has_dn && score >= dn   ? "at or over the deny threshold"
                : has_su && score >= su ? "at or over the step-up threshold"
                                        : "under the thresholds";
            if (has_su && has_dn) {
                snprintf(buf, sizeof(buf),
                         "%lld against step-up %lld, deny %lld: %s", score, su,
                         dn, verdict);
            } else if (has_su) {
                snprintf(buf, sizeof(buf), "%lld against step-up %lld: %s",
                         score, su, verdict);
            } else {
                snprintf(buf, sizeof(buf), "%lld against deny %lld: %s", score,
                         dn, verdict);
            }
        } else {
            snprintf(buf, sizeof(buf),
                     "%lld (the sum of the counted weights; the record does "
                     "not carry the thresholds: see the policy version)",
                     score);
        }
        field("score", buf);
    }

    explain_guardrails(json_object_get(rec, "guardrails"));

    if (gd_soc_str(rec, "policy_version")) {
        field("policy", gd_soc_str(rec, "policy_version"));
    }

    if (method || route) {
        snprintf(buf, sizeof(buf), "%s %s", method ? method : "-",
                 route ? route : "-");
        field("request", buf);
    }
    if (gd_soc_str(rec, "client_ip")) {
        field("client ip", gd_soc_str(rec, "client_ip"));
    }
    if (gd_soc_str(rec, "tenant")) {
        field("tenant", gd_soc_str(rec, "tenant"));
    }
    if (gd_soc_str(rec, "subject")) {
        field("subject", gd_soc_str(rec, "subject"));
    }
    if (gd_soc_str(rec, "traceparent")) {
        field("traceparent", gd_soc_str(rec, "traceparent"));
    }
    if (gd_soc_str(rec, "node")) {
        field("node", gd_soc_str(rec, "node"));
    }

    snprintf(buf, sizeof(buf), "%s line %llu", at->segment,
             (unsigned long long)at->line);
    field("journal", buf);
    if (gd_soc_str(rec, "hash")) {
        field("hash", gd_soc_str(rec, "hash"));
    }

    /* anything else the sender recorded */
    rest = json_deep_copy(rec);
    for (int i = 0; rest && shown[i]; i++) {
        json_object_del(rest, shown[i]);
    }
    if (rest && json_object_size(rest) > 0) {
        char *text = json_dumps(rest, JSON_COMPACT | JSON_SORT_KEYS);
        if (text) {
            field("other", text);
            free(text);
        }
    }
    json_decref(rest);
}

static void explain_review(const located_t *at, size_t n)
{
    json_t *rec = at->rec;
    const char *verdict = gd_soc_str(rec, "verdict");
    const char *analyst = gd_soc_str(rec, "analyst");
    const char *note = gd_soc_str(rec, "note");
    int64_t ts = gd_soc_ts_ms(rec);
    char when[64];

    if (ts >= 0) {
        gd_soc_format_time(ts, 1, when, sizeof(when));
    } else {
        snprintf(when, sizeof(when), "(no time)");
    }

    printf("  %zu. %s  ", n, when);
    put(verdict ? verdict : "?");
    if (verdict && strcmp(verdict, "confirmed") == 0) {
        printf(" (a true positive: the refusal was right)");
    } else if (verdict && strcmp(verdict, "false_positive") == 0) {
        printf(" (the refusal was wrong)");
    }
    printf(", by ");
    put(analyst ? analyst : "?");
    fputc('\n', stdout);
    if (note) {
        printf("     note: ");
        put(note);
        fputc('\n', stdout);
    }
    printf("     journal: %s line %llu, hash ", at->segment,
           (unsigned long long)at->line);
    put(gd_soc_str(rec, "hash") ? gd_soc_str(rec, "hash") : "?");
    fputc('\n', stdout);
}

int show(int argc, char **argv)
{
    show_ctx_t ctx = {0};
    const char *dir = journal_dir(), *dsn = NULL;
    int json = 0, rc;
    int64_t now = gd_soc_now_ms();
    const guardctl_opt_t opts[] = {
        OPT_FLAG("--json", json), OPT("--dir", dir), OPT("--db", dsn), {NULL}};

    rc = opts_parse("show", argc, argv, opts, &ctx.id);
    if (rc != 0) {
        return rc;
    }
    if (ctx.id == NULL) {
        return usage_error("show: %s", "which decision id?");
    }

    rc = show_find(dir, db_dsn(dsn), &ctx);
    if (rc != 0) {
        show_free(&ctx);
        return rc;
    }

    if (json) {
        json_t *out = json_object(), *recs = json_array(),
               *reviews = json_array();
        for (size_t i = 0; i < ctx.nfound; i++) {
            json_array_append(recs, ctx.found[i].rec);
        }
        for (size_t i = 0; i < ctx.nreviews; i++) {
            json_array_append(reviews, ctx.reviews[i].rec);
        }
        json_object_set_new(out, "records", recs);
        json_object_set_new(out, "reviews", reviews);
        json_dumpf(out, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
        fputc('\n', stdout);
        json_decref(out);
        show_free(&ctx);
        return 0;
    }

    for (size_t i = 0; i < ctx.nfound; i++) {
        if (i > 0) {
            printf("\n");
        }
        explain(&ctx.found[i], now);
    }

    if (ctx.nreviews == 0) {
        printf("\nReviews: none yet (guardctl review %s --verdict "
               "confirmed|false_positive --analyst NAME)\n",
               ctx.match);
    } else {
        printf("\nReviews (%zu, oldest first):\n", ctx.nreviews);
        for (size_t i = 0; i < ctx.nreviews; i++) {
            explain_review(&ctx.reviews[i], i + 1);
        }
    }

    show_free(&ctx);
    return 0;
}

int review(int argc, char **argv)
{
    show_ctx_t ctx = {0};
    const char *dir = journal_dir(), *verdict = NULL, *analyst = NULL,
               *note = NULL, *path = guardd_socket(), *dsn = NULL;
    conn_t *c = NULL;
    json_t *rec = NULL, *ans = NULL;
    size_t max_frame = GD_PROTO_DEFAULT_MAX_FRAME;
    char err[512];
    int rc;

    const guardctl_opt_t opts[] = {OPT("--dir", dir),
                                   OPT("--verdict", verdict),
                                   OPT("--analyst", analyst),
                                   OPT("--note", note),
                                   OPT("--socket", path),
                                   OPT("--db", dsn),
                                   {NULL}};

    rc = opts_parse("review", argc, argv, opts, &ctx.id);
    if (rc != 0) {
        return rc;
    }

    if (ctx.id == NULL || verdict == NULL || analyst == NULL) {
        return usage_error("review: %s",
                           "an id, --verdict and --analyst are needed");
    }

    if (strcmp(verdict, "confirmed") != 0 &&
        strcmp(verdict, "false_positive") != 0) {
        fprintf(stderr,
                "guardctl: the verdict \"%s\" is neither confirmed nor "
                "false_positive\n",
                verdict);
        return 1;
    }
    if (*analyst == '\0') {
        fprintf(stderr, "guardctl: --analyst must name the analyst\n");
        return 1;
    }

    /* only a record that exists can be reviewed: its full id, as recorded */
    rc = show_find(dir, db_dsn(dsn), &ctx);
    if (rc != 0) {
        goto done;
    }

    c = guardd_open(path, &ans, &max_frame, err, sizeof(err));
    if (c == NULL) {
        fprintf(stderr,
                "guardctl: %s\n"
                "guardctl: is guardd running? name its socket (guardd.conf's "
                "\"listen\") with --socket PATH or set GUARD_SOCKET=PATH\n",
                err);
        rc = 1;
        goto done;
    }
    json_decref(ans);
    ans = NULL;

    rec = json_pack("{s:s, s:s, s:s, s:s, s:I}", "kind", "review", "review_of",
                    ctx.match, "verdict", verdict, "analyst", analyst, "ts_ms",
                    (json_int_t)gd_soc_now_ms());
    if (rec && note) {
        json_object_set_new(rec, "note", json_string(note));
    }
    if (rec == NULL) {
        fprintf(stderr, "guardctl: the review is not valid UTF-8\n");
        rc = 1;
        goto done;
    }

    if (exchange(c, GD_FRAME_AUDIT, 2, rec, max_frame, GD_FRAME_ACK, &ans, err,
                 sizeof(err)) != 0) {
        fprintf(stderr, "guardctl: %s\n", err);
        rc = 1;
        goto done;
    }

    if (gd_soc_str(ans, "hash") == NULL) {
        fprintf(stderr, "guardctl: guardd's ACK carries no hash\n");
        rc = 1;
        goto done;
    }

    printf("review of %s journaled: %s\n", ctx.match, gd_soc_str(ans, "hash"));
    rc = 0;

done:
    json_decref(ans);
    json_decref(rec);
    conn_close(c);
    show_free(&ctx);
    return rc;
}
