/*
 * guardd: the PostgreSQL sink (libpq), see guardd_sink.c.
 *
 * A batch is one transaction: the records COPYed into the session's
 * staging table, then moved into the store by its function
 * (migrations/0002_ingest_copy.sql, docs/events.md):
 *
 *   BEGIN;
 *   COPY guard_stage (record, segment, line) FROM STDIN;
 *   SELECT inserted, duplicates FROM guard_ingest_staged();
 *   COMMIT;
 *
 * Each batch opens with BEGIN, a statement timeout of its own and SELECT
 * guard_stage_open() (the session's staging table, created when missing).
 * Rows are keyed by the record id, a record already there is counted as
 * a duplicate.  An error of the data (SQLSTATE classes 22, 23, 54, P0:
 * a line jsonb does not take, a value out of range) refuses the batch as
 * a whole, which guardd_sink.c splits until the refused record is alone;
 * any other error is the database being away: the batch waits.
 */
#define _GNU_SOURCE

#include "guardd.h"

#include <libpq-fe.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COPY_CHUNK ((size_t)1 << 20) /* bytes per PQputCopyData */

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
}

/* COPY's data, sent COPY_CHUNK bytes at a time */
typedef struct {
    PGconn *c;
    size_t len;
    int ok;
    char buf[COPY_CHUNK];
} copy_out_t;

static void copy_flush(copy_out_t *o)
{
    if (o->ok && o->len > 0) {
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

static int pg_publish(gd_sink_t *s, gd_srec_t *r, size_t n, uint64_t *added,
                      uint64_t *dups, char *err, size_t errlen)
{
    PGconn *c = s->conn;
    copy_out_t *o;
    PGresult *res;
    int rc = -1;

    /*
     * One transaction, with its own statement timeout (a server that
     * stops answering mid-batch fails the statement instead of holding
     * the sink's thread, and guardd's stop, forever) and the session's
     * staging table (created when missing: behind a pooler the session
     * may be another backend's)
     */
    if (exec_simple(c,
                    "BEGIN; SET LOCAL statement_timeout = 30000; "
                    "SELECT guard_stage_open()",
                    err, errlen) != 0) {
        if (PQstatus(c) == CONNECTION_OK) {
            char ignored[64];
            exec_simple(c, "ROLLBACK", ignored, sizeof(ignored));
        }
        return -1;
    }
    res = PQexec(c, "COPY guard_stage (record, segment, line) FROM STDIN");
    if (PQresultStatus(res) != PGRES_COPY_IN) {
        goto failed;
    }
    PQclear(res);

    /*
     * The batch as COPY's text rows "record TAB segment TAB line": each
     * journal line as it is (jsonb parses it once, on the way in: a line
     * that is not JSON is the batch's data error, split until it is
     * alone), escaped for COPY; the segment name and the line number need
     * no escaping.  The COPY always ends, so that libpq leaves COPY_IN.
     */
    o = malloc(sizeof(*o));
    if (o != NULL) {
        o->c = c;
        o->len = 0;
        o->ok = 1;
        for (size_t i = 0; i < n && o->ok; i++) {
            char tail[64];
            int k;

            if (r[i].rejected) {
                continue;
            }
            copy_text(o, r[i].line, r[i].len);
            k = snprintf(tail, sizeof(tail),
                         "\tjournal-%06u.jsonl\t%" PRIu64 "\n", r[i].seg,
                         r[i].lineno);
            for (int j = 0; j < k; j++) {
                copy_byte(o, tail[j]);
            }
        }
        copy_flush(o);
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
    res = last_result(c);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        goto failed;
    }
    PQclear(res);

    res = PQexec(c, "SELECT inserted, duplicates FROM guard_ingest_staged()");
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
        PQnfields(res) == 2) {
        uint64_t ins = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        uint64_t dup = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
        PQclear(res);
        if (exec_simple(c, "COMMIT", err, errlen) == 0) {
            *added += ins;
            *dups += dup;
            return 0;
        }
        return -1;
    }

failed:
    pg_error(c, res, err, errlen);
    rc = PQstatus(c) == CONNECTION_OK && data_error(res) ? 1 : -1;
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        snprintf(err, errlen,
                 "postgres: guard_ingest_staged answered %d rows of %d "
                 "columns, not one row (inserted, duplicates)",
                 PQntuples(res), PQnfields(res));
        rc = -1;
    }
    PQclear(res);
    if (PQstatus(c) == CONNECTION_OK) {
        char ignored[64];
        exec_simple(c, "ROLLBACK", ignored, sizeof(ignored));
    }
    return rc;
}

/* raw: the lines go to COPY as they are; jsonb refuses one that is not
 * JSON, and guard_ingest_staged one that is not an object (its key is
 * NULL): a data error of the batch, split until it is alone */
const gd_sink_ops_t gd_sink_pg = {
    "postgres", pg_connect, pg_disconnect, pg_publish, 1, NULL, NULL};
