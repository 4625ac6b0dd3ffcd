/*
 * guardd: the PostgreSQL sink (libpq), see guardd_sink.c.
 *
 * A batch is one transaction: the records' columns, computed here from
 * each record (rows_row), COPYed into the session's staging table, then
 * moved into the store by its function (migrations/0004_ingest_rows.sql,
 * docs/events.md):
 *
 *   BEGIN;
 *   COPY guard_rows (review, key, ..., record) FROM STDIN;
 *   SELECT inserted, duplicates FROM guard_ingest_rows();
 *   COMMIT;
 *
 * A batch of decisions whose every column is computed here (direct_ok:
 * no review, the time and the jsonb members computable) goes straight
 * into decisions instead (path_direct), the cheapest for the server:
 *
 *   BEGIN;
 *   SELECT guard_partition('2026-12-01 00:00:00+00'), ...;  -- its months
 *   COPY decisions (key, ts, ..., record, segment, line) FROM STDIN;
 *   COMMIT;
 *
 * where a record already stored fails the COPY (a unique violation): the
 * batch is rolled back and sent again through guard_rows, which ignores
 * and counts the duplicates, and so are the batches after it until one
 * has no duplicate (direct_off: a re-publish after a crash).
 *
 * A batch with a record whose columns are not computed here (a line
 * jansson does not take as an object, ts_ms or status a JSON real) goes
 * as 0002 takes it instead: the lines as they are into guard_stage, the
 * columns computed by guard_ingest_staged() (path_stage).
 *
 * The COPY is sent (pg_send), then the function, whose answer and the
 * COMMIT pg_finish awaits: in between guardd_sink.c reads and parses the
 * next batch while the server moves this one's rows into the store.
 *
 * Each batch opens with BEGIN, a statement timeout of its own and SELECT
 * guard_rows_open() (or guard_stage_open(): the session's staging table,
 * created when missing).
 * Rows are keyed by the record id, a record already there is counted as
 * a duplicate.  An error of the data (SQLSTATE classes 22, 23, 54, P0:
 * a line jsonb does not take, a value out of range) refuses the batch as
 * a whole, which guardd_sink.c splits until the refused record is alone;
 * any other error is the database being away: the batch waits.
 */
#define _GNU_SOURCE

#include "gd_jsonloc.h"
#include "guardd.h"

#include <libpq-fe.h>

#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COPY_CHUNK ((size_t)1 << 20) /* bytes per PQputCopyData */

/*
 * The COPY data of the batch read ahead, made while the server works on
 * the one before (pg_prepare), sent by pg_send when it sends that batch:
 * the same journal lines (a journal line never changes) and the same
 * records to send.  The sink's thread's own.
 */
typedef struct {
    char *data;
    size_t len, cap;
    int valid;
    unsigned seg0, seg1;
    uint64_t line0, line1;
    size_t n, todo;
    const void *path;
} copy_prep_t;

static _Thread_local copy_prep_t prep;

/* the server's notices (a shutdown's WARNING) in guardd's log */
static void pg_notice(void *arg, const char *message)
{
    (void)arg;
    logmsg("warn", "sink postgres: %.*s", (int)strcspn(message, "\n"), message);
}

/* 1: the error is about the data of the batch */
static int data_error(const PGresult *res)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

    return state != NULL &&
           (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0 ||
            strncmp(state, "54", 2) == 0 || strncmp(state, "P0", 2) == 0);
}

static void pg_error(PGconn *c, const PGresult *res, char *err, size_t errlen)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg =
        res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;

    snprintf(err, errlen, "postgres: %s%s%s%s", state ? state : "",
             state ? ": " : "", msg ? msg : PQerrorMessage(c),
             state && strcmp(state, "42883") == 0
                 ? " (are the migrations applied? guardctl db migrate)"
                 : "");
    err[strcspn(err, "\n")] = '\0';
}

static int exec_simple(PGconn *c, const char *sql, char *err, size_t errlen)
{
    PGresult *res = PQexec(c, sql);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK ||
             PQresultStatus(res) == PGRES_TUPLES_OK;

    if (!ok) {
        pg_error(c, res, err, errlen);
    }
    PQclear(res);
    return ok ? 0 : -1;
}

static int pg_connect(gd_sink_t *s, char *err, size_t errlen)
{
    /*
     * the DSN's own settings win over these defaults (expand_dbname); over
     * TCP, a server that stops answering fails the connection
     * (unacknowledged data for 30 s); each batch has its own statement
     * timeout (pg_publish), which no DSN setting can take away
     */
    const char *keys[] = {"connect_timeout",  "application_name",
                          "tcp_user_timeout", "keepalives_idle",
                          "dbname",           NULL};
    const char *vals[] = {"5", "guardd", "30000", "30", s->dsn, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);

    if (c == NULL || PQstatus(c) != CONNECTION_OK) {
        /* libpq's message names the server, never the password */
        snprintf(err, errlen, "postgres: %s",
                 c ? PQerrorMessage(c) : "out of memory");
        err[strcspn(err, "\n")] = '\0';
        PQfinish(c);
        return -1;
    }
    PQsetNoticeProcessor(c, pg_notice, NULL);
    s->conn = c;
    return 0;
}

static void pg_disconnect(gd_sink_t *s)
{
    PQfinish(s->conn);
    s->conn = NULL;
    free(prep.data);
    memset(&prep, 0, sizeof(prep));
}

/* COPY's data, sent COPY_CHUNK bytes at a time (c), or kept (c NULL:
 * into prep, see pg_prepare) */
typedef struct {
    PGconn *c;
    size_t len;
    int ok;
    char buf[COPY_CHUNK];
} copy_out_t;

static void copy_flush(copy_out_t *o)
{
    if (o->ok && o->len > 0 && o->c == NULL) {
        if (prep.cap - prep.len < o->len) {
            size_t cap = prep.cap ? prep.cap * 2 : 2 * COPY_CHUNK;
            char *p;

            while (cap - prep.len < o->len) {
                cap *= 2;
            }
            p = realloc(prep.data, cap);
            if (p == NULL) {
                o->ok = 0;
                o->len = 0;
                return;
            }
            prep.data = p;
            prep.cap = cap;
        }
        memcpy(prep.data + prep.len, o->buf, o->len);
        prep.len += o->len;
    } else if (o->ok && o->len > 0) {
        o->ok = PQputCopyData(o->c, o->buf, (int)o->len) == 1;
    }
    o->len = 0;
}

static void copy_byte(copy_out_t *o, char c)
{
    if (o->len == COPY_CHUNK) {
        copy_flush(o);
    }
    o->buf[o->len++] = c;
}

/* text in COPY's text format: a backslash, tab, newline or carriage
 * return escaped */
static void copy_text(copy_out_t *o, const char *text, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = text[i];

        if (c == '\\' || c == '\t' || c == '\n' || c == '\r') {
            copy_byte(o, '\\');
            c = c == '\t' ? 't' : c == '\n' ? 'n' : c == '\r' ? 'r' : c;
        }
        copy_byte(o, c);
    }
}

/* the results of the statement sent last, up to the last one (the one
 * returned, or NULL when the connection failed) */
static PGresult *last_result(PGconn *c)
{
    PGresult *res, *last = NULL;

    while ((res = PQgetResult(c)) != NULL) {
        ExecStatusType st = PQresultStatus(res);

        PQclear(last);
        last = res;
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT) {
            break; /* libpq answers this again and again */
        }
    }
    return last;
}

/* the record's line, escaped for COPY's text format */
static void copy_line(copy_out_t *o, const gd_srec_t *r)
{
    copy_text(o, r->line, r->len);
}

static void copy_str(copy_out_t *o, const char *text)
{
    while (*text != '\0') {
        copy_byte(o, *text++);
    }
}

/* the segment and the line number of r, at the end of a row */
static void copy_place(copy_out_t *o, const gd_srec_t *r)
{
    char tail[64];

    snprintf(tail, sizeof(tail), "\tjournal-%06u.jsonl\t%" PRIu64, r->seg,
             r->lineno);
    copy_str(o, tail);
}

/* guard_stage's row: "record TAB segment TAB line" */
static void stage_row(copy_out_t *o, gd_srec_t *r)
{
    copy_line(o, r);
    copy_place(o, r);
    copy_byte(o, '\n');
}

/*
 * The columns of guard_rows, computed as 0002's guard_ingest_staged()
 * computes them from the record jsonb (migrations/0001_store.sql and
 * 0002_ingest_copy.sql; t/83-db.t compares both ways column by column):
 *
 * - guard_str(r, k): the member when it is a JSON string, else NULL;
 * - guard_int(r, k): the member when it is a JSON integer below 10^18 in
 *   magnitude, else NULL (a JSON real - "1.0", "1e2" - would be decided
 *   by its text's scale, which jansson does not keep: such a record is
 *   not computed here, see row_computable);
 * - score, latency_ms: a JSON number as double precision: a JSON integer
 *   converted, a JSON real as jansson read it (strtod of its text, as
 *   float8in reads the numeric's text), except a real that reads as zero
 *   or subnormal ("0.0", "-0.0", "1e-400": PostgreSQL's numeric has no
 *   negative zero and float8in refuses an underflow), which the server
 *   computes from the record (num_from_record).
 */
static const json_t *member(const json_t *rec, const char *k)
{
    return json_object_get(rec, k);
}

static const char *guard_str(const json_t *rec, const char *k)
{
    const json_t *v = member(rec, k);

    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int guard_int(const json_t *rec, const char *k, json_int_t *out)
{
    const json_t *v = member(rec, k);

    if (!json_is_integer(v)) {
        return 0;
    }
    *out = json_integer_value(v);
    return *out > -1000000000000000000LL && *out < 1000000000000000000LL;
}

/* 1: the record's columns can be computed here (row_computable) */
static int row_computable(const json_t *rec)
{
    return json_is_object(rec) && !json_is_real(member(rec, "ts_ms")) &&
           !json_is_real(member(rec, "status"));
}

/* a number member as double precision: 1 (*d), 0 (NULL), -1 (the
 * server decides: num_from_record) */
static int guard_num(const json_t *rec, const char *k, double *d)
{
    const json_t *v = member(rec, k);

    if (json_is_integer(v)) {
        *d = (double)json_integer_value(v);
        return 1;
    }
    if (!json_is_real(v)) {
        return 0;
    }
    *d = json_real_value(v);
    return isnormal(*d) ? 1 : -1;
}

static void copy_col_str(copy_out_t *o, const char *v)
{
    if (v == NULL) {
        copy_str(o, "\\N");
    } else {
        copy_text(o, v, strlen(v));
    }
    copy_byte(o, '\t');
}

/* guard_str of each of keys (up to NULL), one column each */
static void copy_col_strs(copy_out_t *o, const json_t *rec,
                          const char *const *keys)
{
    for (; *keys != NULL; keys++) {
        copy_col_str(o, guard_str(rec, *keys));
    }
}

static void copy_col_int(copy_out_t *o, int have, long long v)
{
    char num[32];

    if (!have) {
        copy_str(o, "\\N\t");
        return;
    }
    snprintf(num, sizeof(num), "%lld\t", v);
    copy_str(o, num);
}

static void copy_col_num(copy_out_t *o, int have, double d)
{
    char num[40];

    if (have != 1) {
        copy_str(o, "\\N\t");
        return;
    }
    /* 17 significant digits: float8in reads the same double back */
    snprintf(num, sizeof(num), "%.17g\t", d);
    copy_str(o, num);
}

#define ROWS_COLUMNS                                                           \
    "review, key, id, kind, ts_ms, tenant, subject, client_ip, method, "       \
    "route, traceparent, stage, outcome, status, reason, score, latency_ms, "  \
    "num_from_record, policy_version, node, source, shadow_reason, refusal, "  \
    "prev_hash, hash, review_of, verdict, analyst, note, record, segment, "    \
    "line"

/* the columns rows_row and direct_row compute alike */
typedef struct {
    const char *id, *kind;
    json_int_t ts_ms, status;
    int has_ts, has_status, has_score, has_latency, review, refusal;
    double score, latency;
} row_cols_t;

static void row_cols(const json_t *rec, row_cols_t *c)
{
    const char *outcome = guard_str(rec, "outcome");
    const char *reason = guard_str(rec, "reason");

    c->kind = guard_str(rec, "kind");
    c->id = guard_str(rec, "id");
    if (c->id == NULL) {
        c->id = guard_str(rec, "decision_id");
    }
    c->ts_ms = c->status = 0;
    c->has_ts = guard_int(rec, "ts_ms", &c->ts_ms);
    c->has_status = guard_int(rec, "status", &c->status);
    c->score = c->latency = 0;
    c->has_score = guard_num(rec, "score", &c->score);
    c->has_latency = guard_num(rec, "latency_ms", &c->latency);
    c->review = c->kind != NULL && strcmp(c->kind, "review") == 0;
    c->refusal = !c->review &&
                 ((outcome != NULL && (strcmp(outcome, "deny") == 0 ||
                                       strcmp(outcome, "shadow_deny") == 0)) ||
                  (reason != NULL && c->has_status && c->status >= 400));
}

/* the key: the id, else the hash */
static void copy_col_key(copy_out_t *o, const json_t *rec, const row_cols_t *c)
{
    copy_col_str(o, c->id ? c->id : guard_str(rec, "hash"));
}

/* the columns from id to refusal, in both rows: guard_rows's (ts_ms as
 * it is, negative too, and num_from_record) or decisions's (direct: a
 * negative ts_ms NULL, as guard_ingest_rows() stores it) */
static void copy_cols(copy_out_t *o, const json_t *rec, const row_cols_t *c,
                      int direct)
{
    copy_col_str(o, c->id);
    copy_col_str(o, c->kind ? c->kind : "decision");
    copy_col_int(o, c->has_ts && (!direct || c->ts_ms >= 0), c->ts_ms);
    copy_col_strs(o, rec,
                  (const char *const[]){"tenant", "subject", "client_ip",
                                        "method", "route", "traceparent",
                                        "stage", "outcome", NULL});
    copy_col_int(
        o, c->has_status && c->status >= INT32_MIN && c->status <= INT32_MAX,
        c->status);
    copy_col_str(o, guard_str(rec, "reason"));
    copy_col_num(o, c->has_score, c->score);
    copy_col_num(o, c->has_latency, c->latency);
    if (!direct) {
        copy_str(o, c->has_score < 0 || c->has_latency < 0 ? "t\t" : "f\t");
    }
    copy_col_strs(o, rec,
                  (const char *const[]){"policy_version", "node", "source",
                                        "shadow_reason", NULL});
    copy_str(o, c->refusal ? "t\t" : "f\t");
}

/* guard_rows's row of r (row_computable), ROWS_COLUMNS in order */
static void rows_row(copy_out_t *o, gd_srec_t *r)
{
    const json_t *rec = sink_record(r);
    row_cols_t c;

    row_cols(rec, &c);
    copy_str(o, c.review ? "t\t" : "f\t");
    copy_col_key(o, rec, &c);
    copy_cols(o, rec, &c, 0);
    copy_col_strs(o, rec,
                  (const char *const[]){"prev_hash", "hash", "review_of",
                                        "verdict", "analyst", "note", NULL});
    copy_line(o, r);
    copy_place(o, r);
    copy_byte(o, '\n');
}

/*
 * The direct path: a batch of decisions only, every column computed
 * here, COPYed straight into decisions (no staging table, no function,
 * no ON CONFLICT: COPY inserts the rows in bulk).  A record already
 * stored fails the COPY with a unique violation; the batch is then rolled
 * back and sent again by the path that ignores conflicts (pg_finish), so
 * what is stored and counted is the same.  A record goes this way only
 * when every column is computed here exactly as guard_ingest_rows()
 * computes it (direct_ok):
 *
 * - not a review (reviews go to their own table), with a key;
 * - score and latency_ms not left to the server (num_from_record);
 * - ts: to_timestamp(ts_ms / 1000.0) computed as PostgreSQL computes it
 *   (pg_ts_us), for ts_ms from 0 to the year 9999 (a negative or missing
 *   ts_ms: the epoch), else the server computes it;
 * - signals, thresholds, rules (record -> 'signals', ...): the member's
 *   value as written in the line (gd_jsonloc_member), which jsonb parses
 *   to the same value as in the record; absent: NULL; a member written
 *   twice (jsonb keeps the last one, as jansson does) goes the other way.
 */
#define DIRECT_TS_MS_MAX 253402300799999LL /* 9999-12-31 23:59:59.999 */

static const char *const direct_json[] = {"signals", "thresholds", "rules",
                                          NULL};

/* the microseconds since 1970 of to_timestamp(ts_ms / 1000.0): the
 * numeric quotient (exact) read as a double (correctly rounded, as an
 * IEEE division of the two is), moved to PostgreSQL's epoch, times 10^6,
 * rounded to the nearest (float8_timestamptz) */
static int64_t pg_ts_us(json_int_t ts_ms)
{
    const double pg_epoch = 946684800.0; /* 2000-01-01 in Unix seconds */
    double s = (double)ts_ms / 1000.0;

    s -= pg_epoch;
    s = rint(s * 1000000.0);
    return (int64_t)s + (int64_t)946684800 * 1000000;
}

static void copy_ts(copy_out_t *o, int64_t us)
{
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    char text[48];

    gmtime_r(&secs, &tm);
    snprintf(text, sizeof(text), "%04d-%02d-%02d %02d:%02d:%02d.%06d+00\t",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (int)(us % 1000000));
    copy_str(o, text);
}

/* the row's time: ts_ms when it is an integer from 0 (pg_ts_us), else
 * the epoch; 0 when it is beyond DIRECT_TS_MS_MAX */
static int direct_ts(const json_t *rec, int64_t *us)
{
    json_int_t ts_ms = 0;

    *us = 0;
    if (guard_int(rec, "ts_ms", &ts_ms) && ts_ms >= 0) {
        if (ts_ms > DIRECT_TS_MS_MAX) {
            return 0;
        }
        *us = pg_ts_us(ts_ms);
    }
    return 1;
}

static int direct_ok(gd_srec_t *r)
{
    const json_t *rec = sink_record(r);
    row_cols_t c;
    int64_t us;

    if (!row_computable(rec)) {
        return 0;
    }
    row_cols(rec, &c);
    if (c.review || (c.id == NULL && guard_str(rec, "hash") == NULL) ||
        !direct_ts(rec, &us) || c.has_score < 0 || c.has_latency < 0) {
        return 0;
    }
    for (const char *const *k = direct_json; *k != NULL; k++) {
        size_t b, e;

        if (member(rec, *k) != NULL &&
            gd_jsonloc_member(r->line, r->len, *k, &b, &e) != 1) {
            return 0;
        }
    }
    return 1;
}

#define DIRECT_COLUMNS                                                         \
    "key, ts, id, kind, ts_ms, tenant, subject, client_ip, method, route, "    \
    "traceparent, stage, outcome, status, reason, score, latency_ms, "         \
    "policy_version, node, source, shadow_reason, refusal, prev_hash, hash, "  \
    "signals, thresholds, rules, record, segment, line"

/* decisions's row of r (direct_ok), DIRECT_COLUMNS in order: the columns
 * of rows_row (the same computations) */
static void direct_row(copy_out_t *o, gd_srec_t *r)
{
    const json_t *rec = sink_record(r);
    row_cols_t c;
    int64_t us = 0;

    row_cols(rec, &c);
    direct_ts(rec, &us);
    copy_col_key(o, rec, &c);
    copy_ts(o, us);
    copy_cols(o, rec, &c, 1);
    copy_col_strs(o, rec, (const char *const[]){"prev_hash", "hash", NULL});
    for (const char *const *k = direct_json; *k != NULL; k++) {
        size_t b = 0, e = 0;

        if (member(rec, *k) != NULL &&
            gd_jsonloc_member(r->line, r->len, *k, &b, &e) == 1) {
            copy_text(o, r->line + b, e - b);
            copy_byte(o, '\t');
        } else {
            copy_str(o, "\\N\t");
        }
    }
    copy_line(o, r);
    copy_place(o, r);
    copy_byte(o, '\n');
}

/* how a batch goes in: its staging table, its rows, its function */
typedef struct {
    const char *open;   /* BEGIN ...: the transaction, the staging table */
    const char *copy;   /* COPY ... FROM STDIN */
    const char *ingest; /* SELECT inserted, duplicates FROM ...; NULL:
                           the COPY's own count (path_direct) */
    const char *fn;     /* its name, for errors */
    void (*row)(copy_out_t *o, gd_srec_t *r);
} pg_path_t;

/* 0004: the columns computed here */
static const pg_path_t path_rows = {
    "BEGIN; SET LOCAL statement_timeout = 30000; SELECT guard_rows_open()",
    "COPY guard_rows (" ROWS_COLUMNS ") FROM STDIN",
    "SELECT inserted, duplicates FROM guard_ingest_rows()", "guard_ingest_rows",
    rows_row};

/* the direct path: every column computed here, straight into decisions;
 * the partitions of the batch's months are made first (pg_send) */
static const pg_path_t path_direct = {
    "BEGIN; SET LOCAL statement_timeout = 30000",
    "COPY decisions (" DIRECT_COLUMNS ") FROM STDIN", NULL, "COPY decisions",
    direct_row};

/* 1 after a batch of the direct path met a record already stored, until
 * a batch of another path has no duplicate (a re-publish after a crash:
 * the batches after it may be stored already, too) */
static _Thread_local int direct_off;

/* the path the batch pg_send sent went */
static _Thread_local const pg_path_t *sent_path;

/* 0002: the lines as they are, the columns computed by the server */
static const pg_path_t path_stage = {
    "BEGIN; SET LOCAL statement_timeout = 30000; SELECT guard_stage_open()",
    "COPY guard_stage (record, segment, line) FROM STDIN",
    "SELECT inserted, duplicates FROM guard_ingest_staged()",
    "guard_ingest_staged", stage_row};

/* the path of the batch: a record whose columns are not computed here
 * sends the batch as 0002 takes it (the server refuses a line that is
 * not a JSON object, as a data error of the batch, which is split until
 * it is alone) */
static const pg_path_t *batch_path(gd_srec_t *r, size_t n)
{
    int direct = !direct_off;

    for (size_t i = 0; i < n; i++) {
        if (!r[i].rejected && !row_computable(sink_record(&r[i]))) {
            return &path_stage;
        }
        if (direct && !r[i].rejected && !direct_ok(&r[i])) {
            direct = 0;
        }
    }
    return direct ? &path_direct : &path_rows;
}

/* path_direct: "SELECT guard_partition('YYYY-MM-01 00:00:00+00'), ..."
 * for each month of the batch's rows (as guard_ingest_rows() makes them
 * before it inserts), malloc'd; NULL when out of memory */
static char *direct_partitions(gd_srec_t *r, size_t n)
{
    int *months = malloc((n + 1) * sizeof(int));
    char *sql = malloc(n * 48 + 64);
    size_t len, k = 0;

    if (months == NULL || sql == NULL) {
        free(months);
        free(sql);
        return NULL;
    }
    len = (size_t)snprintf(sql, 64, "SELECT true");
    for (size_t i = 0; i < n; i++) {
        int64_t us;
        time_t secs;
        struct tm tm;
        int m;
        size_t j;

        if (r[i].rejected) {
            continue;
        }
        direct_ts(sink_record(&r[i]), &us);
        secs = (time_t)(us / 1000000);
        gmtime_r(&secs, &tm);
        m = tm.tm_year * 12 + tm.tm_mon;
        for (j = 0; j < k && months[j] != m; j++) {
        }
        if (j < k) {
            continue;
        }
        months[k++] = m;
        len += (size_t)snprintf(sql + len, 48,
                                ", guard_partition('%04d-%02d-01 "
                                "00:00:00+00')",
                                tm.tm_year + 1900, tm.tm_mon + 1);
    }
    free(months);
    return sql;
}

static size_t todo_of(const gd_srec_t *r, size_t n)
{
    size_t k = 0;

    for (size_t i = 0; i < n; i++) {
        k += !r[i].rejected;
    }
    return k;
}

/* 1: prep holds the COPY data of r[0..n-1] */
static int prep_matches(const gd_srec_t *r, size_t n, const pg_path_t *path)
{
    return prep.valid && n > 0 && prep.n == n && prep.path == path &&
           prep.seg0 == r[0].seg && prep.line0 == r[0].lineno &&
           prep.seg1 == r[n - 1].seg && prep.line1 == r[n - 1].lineno &&
           prep.todo == todo_of(r, n);
}

/*
 * The COPY data of the batch read ahead (r[0..n-1], parsed), made while
 * the server works on the batch before; nothing is sent.  pg_send sends
 * it when it sends that batch (prep_matches), else makes it again.
 */
static void pg_prepare(gd_sink_t *s, gd_srec_t *r, size_t n)
{
    const pg_path_t *path;
    copy_out_t *o;

    (void)s;
    prep.valid = 0;
    prep.len = 0;
    if (n == 0 || (o = malloc(sizeof(*o))) == NULL) {
        return;
    }
    path = batch_path(r, n);
    o->c = NULL;
    o->len = 0;
    o->ok = 1;
    for (size_t i = 0; i < n && o->ok; i++) {
        if (!r[i].rejected) {
            path->row(o, &r[i]);
        }
    }
    copy_flush(o);
    if (o->ok) {
        prep.valid = 1;
        prep.n = n;
        prep.todo = todo_of(r, n);
        prep.path = path;
        prep.seg0 = r[0].seg;
        prep.line0 = r[0].lineno;
        prep.seg1 = r[n - 1].seg;
        prep.line1 = r[n - 1].lineno;
    }
    free(o);
}

/* the batch failed at res (cleared): 1 for an error of its data, else -1
 * (err set); the transaction is rolled back while the connection lasts */
static int pg_failed(PGconn *c, const pg_path_t *path, PGresult *res, char *err,
                     size_t errlen)
{
    int rc;

    pg_error(c, res, err, errlen);
    rc = PQstatus(c) == CONNECTION_OK && data_error(res) ? 1 : -1;
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        snprintf(err, errlen,
                 "postgres: %s answered %d rows of %d "
                 "columns, not one row (inserted, duplicates)",
                 path->fn, PQntuples(res), PQnfields(res));
        rc = -1;
    }
    PQclear(res);
    if (PQstatus(c) == CONNECTION_OK) {
        char ignored[64];
        exec_simple(c, "ROLLBACK", ignored, sizeof(ignored));
    }
    return rc;
}

/*
 * The first half of a batch: its transaction opened, its rows COPYed,
 * and its function sent without awaiting its answer (pg_finish): while
 * the server moves the rows into the store, guardd_sink.c reads (and
 * parses) the next batch.  0, or as pg_publish.
 */
static int pg_send(gd_sink_t *s, gd_srec_t *r, size_t n, char *err,
                   size_t errlen)
{
    PGconn *c = s->conn;
    const pg_path_t *path = batch_path(r, n);
    copy_out_t *o;
    PGresult *res;
    char *sql, *open;

    /*
     * One transaction, with its own statement timeout (a server that
     * stops answering mid-batch fails the statement instead of holding
     * the sink's thread, and guardd's stop, forever) and the session's
     * staging table (created when missing: behind a pooler the session
     * may be another backend's), the batch's partitions (path_direct)
     * and the COPY: one query string, one round trip (libpq's PQexec
     * returns at the COPY; an error before it ends the string there).
     * Each round trip is a wake-up of this thread and of the server
     * beside the decision loop (docs/guardd.md, "The cost to decisions").
     */
    sent_path = path;
    sql = path == &path_direct ? direct_partitions(r, n) : NULL;
    if (path == &path_direct && sql == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    open = malloc(strlen(path->open) + (sql ? strlen(sql) : 0) +
                  strlen(path->copy) + 8);
    if (open == NULL) {
        free(sql);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    sprintf(open, "%s; %s%s%s", path->open, sql ? sql : "", sql ? "; " : "",
            path->copy);
    free(sql);
    res = PQexec(c, open);
    free(open);
    if (PQresultStatus(res) != PGRES_COPY_IN) {
        return pg_failed(c, path, res, err, errlen);
    }
    PQclear(res);

    /*
     * The batch as COPY's text rows, values escaped for COPY (the record
     * column: each journal line as it is; jsonb parses it once, on the
     * way in); the segment name and the line number need no escaping.
     * The COPY always ends, so that libpq leaves COPY_IN.
     */
    o = malloc(sizeof(*o));
    if (o != NULL) {
        o->c = c;
        o->len = 0;
        o->ok = 1;
        if (prep_matches(r, n, path)) {
            /* made while the batch before was in the server's hands */
            for (size_t at = 0; at < prep.len && o->ok; at += COPY_CHUNK) {
                size_t k =
                    prep.len - at < COPY_CHUNK ? prep.len - at : COPY_CHUNK;
                o->ok = PQputCopyData(c, prep.data + at, (int)k) == 1;
            }
        } else {
            for (size_t i = 0; i < n && o->ok; i++) {
                if (!r[i].rejected) {
                    path->row(o, &r[i]);
                }
            }
            copy_flush(o);
        }
        prep.valid = 0;
    }
    if (PQputCopyEnd(c, o && o->ok ? NULL : "guardd: the batch was not sent") !=
            1 ||
        o == NULL || !o->ok) {
        snprintf(err, errlen, "postgres: %s",
                 o ? PQerrorMessage(c) : "out of memory");
        err[strcspn(err, "\n")] = '\0';
        free(o);
        PQclear(last_result(c));
        if (PQstatus(c) == CONNECTION_OK) {
            char ignored[64];
            exec_simple(c, "ROLLBACK", ignored, sizeof(ignored));
        }
        return -1;
    }
    free(o);
    if (path->ingest == NULL) {
        return 0; /* the COPY's answer: pg_finish */
    }
    res = last_result(c);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        return pg_failed(c, path, res, err, errlen);
    }
    PQclear(res);

    /* sent whole (a blocking connection flushes it), not awaited */
    if (PQsendQuery(c, path->ingest) != 1) {
        return pg_failed(c, path, NULL, err, errlen);
    }
    return 0;
}

/*
 * The second half: the function's answer awaited (PQgetResult waits on
 * the socket), then the COMMIT; the batch is confirmed only when the
 * COMMIT succeeded.  Returns as pg_publish.
 */
static int pg_publish(gd_sink_t *s, gd_srec_t *r, size_t n, uint64_t *added,
                      uint64_t *dups, char *err, size_t errlen);

static int pg_finish(gd_sink_t *s, gd_srec_t *r, size_t n, uint64_t *added,
                     uint64_t *dups, char *err, size_t errlen)
{
    PGconn *c = s->conn;
    const pg_path_t *path = sent_path;
    PGresult *res = last_result(c);
    uint64_t ins, dup;

    if (path->ingest == NULL && PQresultStatus(res) == PGRES_COMMAND_OK) {
        ins = strtoull(PQcmdTuples(res), NULL, 10);
        dup = 0;
    } else if (path->ingest == NULL) {
        /*
         * A record already stored (a unique violation), or any error of
         * the data: the batch again by the path that ignores conflicts
         * and reports the data's errors as it always did
         */
        if (PQstatus(c) != CONNECTION_OK || !data_error(res)) {
            return pg_failed(c, path, res, err, errlen);
        }
        PQclear(res);
        if (exec_simple(c, "ROLLBACK", err, errlen) != 0) {
            return -1;
        }
        direct_off = 1;
        return pg_publish(s, r, n, added, dups, err, errlen);
    } else if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
               PQnfields(res) == 2) {
        ins = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        dup = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
    } else {
        return pg_failed(c, path, res, err, errlen);
    }
    PQclear(res);
    if (exec_simple(c, "COMMIT", err, errlen) != 0) {
        return -1;
    }
    *added += ins;
    *dups += dup;
    if (path->ingest != NULL) {
        direct_off = dup > 0;
    }
    return 0;
}

static int pg_publish(gd_sink_t *s, gd_srec_t *r, size_t n, uint64_t *added,
                      uint64_t *dups, char *err, size_t errlen)
{
    int rc = pg_send(s, r, n, err, errlen);

    if (rc != 0) {
        return rc;
    }
    return pg_finish(s, r, n, added, dups, err, errlen);
}

/* raw: the lines are parsed (sink_record) when a batch is published, not
 * when it is read: a line jansson does not take as a JSON object goes to
 * the server as it is (path_stage), where jsonb refuses one that is not
 * JSON, and guard_ingest_staged one that is not an object (its key is
 * NULL): a data error of the batch, split until it is alone */
const gd_sink_ops_t gd_sink_pg = {"postgres", pg_connect, pg_disconnect,
                                  pg_publish, 1,          pg_send,
                                  pg_finish,  pg_prepare};
