/*
 * guardctl db migrate and db status, and the PostgreSQL store as a source
 * of records for blocked, show, review and audit verify (libpq).  The
 * tables are migrations/0001_store.sql's; docs/events.md describes them.
 */
#include "guardctl.h"

#include "gd_journal.h"
#include "gd_soc.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <libpq-fe.h>
#include <openssl/evp.h>

const char *db_dsn(const char *given)
{
    const char *env = getenv("GUARD_DB");

    if (given) {
        return given;
    }
    return env && *env ? env : NULL;
}

/* libpq's message without its last newline, on stderr */
static void pg_error(const char *what, const char *msg)
{
    size_t len = strlen(msg);

    while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == ' ')) {
        len--;
    }
    fprintf(stderr, "guardctl: %s: %.*s\n", what, (int)len, msg);
}

/*
 * A connection to the store, or NULL with the reason printed.  The DSN is
 * never printed: it may hold a password.
 */
static PGconn *db_connect(const char *dsn)
{
    const char *keys[] = {"dbname", "application_name", "connect_timeout",
                          NULL};
    const char *values[] = {dsn, "guardctl", "10", NULL};
    PGconn *pg = PQconnectdbParams(keys, values, 1);

    if (pg == NULL || PQstatus(pg) != CONNECTION_OK) {
        pg_error("cannot connect to PostgreSQL (--db DSN or GUARD_DB)",
                 pg ? PQerrorMessage(pg) : "out of memory");
        PQfinish(pg);
        return NULL;
    }
    return pg;
}

/* runs sql; 0, or -1 with the error printed (what says what it was) */
static int db_exec(PGconn *pg, const char *sql, const char *what)
{
    PGresult *res = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(res);
    int rc = 0;

    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        pg_error(what, PQresultErrorMessage(res));
        rc = -1;
    }
    PQclear(res);
    return rc;
}

/* migrations */

#define MIGRATIONS_MAX 1000

typedef struct {
    int version;
    char *name;    /* file name: 0001_store.sql */
    char *sql;     /* its text */
    char sum[65];  /* SHA-256, hex */
    int applied;   /* recorded in schema_migrations */
    char asum[65]; /* the checksum it was applied with */
    char when[64]; /* when it was applied */
    int has_file;
} migration_t;

typedef struct {
    migration_t v[MIGRATIONS_MAX];
    size_t n;
} migrations_t;

const char *migrations_dir(void)
{
    const char *dir = getenv("GUARD_MIGRATIONS");
    struct stat st;

    if (dir && *dir) {
        return dir;
    }
    /* make install's default PREFIX, else the package's */
    if (stat("/usr/local/share/guard/migrations", &st) == 0 &&
        S_ISDIR(st.st_mode)) {
        return "/usr/local/share/guard/migrations";
    }
    return "/usr/share/guard/migrations";
}

static void sha256_hex(const char *data, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;

    EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
    for (unsigned int i = 0; i < mdlen; i++) {
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    }
}

static migration_t *find_version(migrations_t *m, int version)
{
    for (size_t i = 0; i < m->n; i++) {
        if (m->v[i].version == version) {
            return &m->v[i];
        }
    }
    return NULL;
}

static int by_version(const void *a, const void *b)
{
    const migration_t *x = a, *y = b;
    return (x->version > y->version) - (x->version < y->version);
}

/* NNNN_name.sql: its number, or -1 */
static int migration_version(const char *name)
{
    size_t len = strlen(name);
    int v = 0;

    if (len < 10 || strcmp(name + len - 4, ".sql") != 0 || name[4] != '_') {
        return -1;
    }
    for (int i = 0; i < 4; i++) {
        if (name[i] < '0' || name[i] > '9') {
            return -1;
        }
        v = v * 10 + (name[i] - '0');
    }
    return v;
}

/* the files of dir; 0, or 2 with the reason printed */
static int migrations_read(const char *dir, migrations_t *m)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int rc = 0;

    if (d == NULL) {
        fprintf(stderr,
                "guardctl: %s: %s: name the migrations directory with "
                "--dir DIR or GUARD_MIGRATIONS=DIR\n",
                dir, strerror(errno));
        return 2;
    }

    while ((de = readdir(d)) != NULL && rc == 0) {
        int version = migration_version(de->d_name);
        migration_t *mg, *same;
        char path[4096], err[512];
        size_t len = 0;

        if (version < 0) {
            continue;
        }
        if ((same = find_version(m, version)) != NULL) {
            fprintf(stderr,
                    "guardctl: %s and %s have the same number: each "
                    "migration needs its own\n",
                    same->name, de->d_name);
            rc = 2;
            break;
        }
        if (m->n == MIGRATIONS_MAX) {
            fprintf(stderr, "guardctl: more than %d migrations in %s\n",
                    MIGRATIONS_MAX, dir);
            rc = 2;
            break;
        }
        mg = &m->v[m->n];
        memset(mg, 0, sizeof(*mg));
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        mg->sql = read_file(path, &len, err, sizeof(err));
        if (mg->sql == NULL) {
            fprintf(stderr, "guardctl: %s\n", err);
            rc = 2;
            break;
        }
        mg->name = strdup(de->d_name);
        mg->version = version;
        mg->has_file = 1;
        sha256_hex(mg->sql, len, mg->sum);
        m->n++;
    }
    closedir(d);
    return rc;
}

static void migrations_free(migrations_t *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->v[i].name);
        free(m->v[i].sql);
    }
}

/* schema_migrations, created if missing, read into m; 0 or -1 */
static int migrations_applied(PGconn *pg, migrations_t *m)
{
    PGresult *res;

    if (db_exec(pg,
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY,"
                " name text NOT NULL,"
                " checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())",
                "schema_migrations") != 0) {
        return -1;
    }

    res = PQexec(pg, "SELECT version, name, checksum, "
                     "to_char(applied_at AT TIME ZONE 'UTC', "
                     "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') "
                     "FROM schema_migrations ORDER BY version");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        pg_error("schema_migrations", PQresultErrorMessage(res));
        PQclear(res);
        return -1;
    }

    for (int r = 0; r < PQntuples(res); r++) {
        int version = atoi(PQgetvalue(res, r, 0));
        migration_t *mg = find_version(m, version);

        if (mg == NULL) {
            if (m->n == MIGRATIONS_MAX) {
                continue;
            }
            mg = &m->v[m->n++];
            memset(mg, 0, sizeof(*mg));
            mg->version = version;
            mg->name = strdup(PQgetvalue(res, r, 1));
        }
        mg->applied = 1;
        snprintf(mg->asum, sizeof(mg->asum), "%s", PQgetvalue(res, r, 2));
        snprintf(mg->when, sizeof(mg->when), "%s", PQgetvalue(res, r, 3));
    }
    PQclear(res);
    qsort(m->v, m->n, sizeof(migration_t), by_version);
    return 0;
}

static int edited(const migration_t *mg)
{
    return mg->applied && mg->has_file && strcmp(mg->sum, mg->asum) != 0;
}

/* an applied migration edited, or gone: said; the count */
static int migrations_damaged(const migrations_t *m, const char *dir)
{
    int bad = 0;

    for (size_t i = 0; i < m->n; i++) {
        const migration_t *mg = &m->v[i];

        if (edited(mg)) {
            fprintf(stderr,
                    "guardctl: migration %s was applied on %s with checksum "
                    "%.12s..., and the file now has checksum %.12s...: an "
                    "applied migration must not be edited. Restore it as "
                    "it was and put the change in a new migration (%04d_...)"
                    "\n",
                    mg->name, mg->when, mg->asum, mg->sum,
                    (int)m->v[m->n - 1].version + 1);
            bad++;
        } else if (mg->applied && !mg->has_file) {
            fprintf(stderr,
                    "guardctl: migration %04d (%s) was applied but is not "
                    "in %s: is it the right directory?\n",
                    mg->version, mg->name, dir);
            bad++;
        }
    }
    return bad;
}

/* db migrate: the migrations not applied yet, each in one transaction */
static int db_migrate(PGconn *pg, migrations_t *m, const char *dir)
{
    int done = 0, had = 0;

    if (migrations_damaged(m, dir) > 0) {
        return 1;
    }

    for (size_t i = 0; i < m->n; i++) {
        migration_t *mg = &m->v[i];
        const char *params[3];
        char version[16];
        PGresult *res;

        if (mg->applied) {
            had++;
            continue;
        }
        snprintf(version, sizeof(version), "%d", mg->version);
        params[0] = version;
        params[1] = mg->name;
        params[2] = mg->sum;

        if (db_exec(pg, "BEGIN", "BEGIN") != 0) {
            return 2;
        }
        res = PQexec(pg, mg->sql);
        if (PQresultStatus(res) != PGRES_COMMAND_OK &&
            PQresultStatus(res) != PGRES_TUPLES_OK) {
            char what[512];
            snprintf(what, sizeof(what),
                     "migration %s failed, nothing of it is applied", mg->name);
            pg_error(what, PQresultErrorMessage(res));
            PQclear(res);
            db_exec(pg, "ROLLBACK", "ROLLBACK");
            return 1;
        }
        PQclear(res);
        res = PQexecParams(pg,
                           "INSERT INTO schema_migrations (version, name, "
                           "checksum) VALUES ($1, $2, $3)",
                           3, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            pg_error("schema_migrations", PQresultErrorMessage(res));
            PQclear(res);
            db_exec(pg, "ROLLBACK", "ROLLBACK");
            return 2;
        }
        PQclear(res);
        if (db_exec(pg, "COMMIT", "COMMIT") != 0) {
            return 2;
        }
        printf("applied %s\n", mg->name);
        done++;
    }

    if (m->n == 0) {
        printf("no migrations in %s\n", dir);
    } else {
        printf("up to date: %s (%d applied now, %d before)\n",
               m->v[m->n - 1].name, done, had);
    }
    return 0;
}

/* db status: each migration's state */
static int db_status(migrations_t *m, const char *dir)
{
    int pending = 0, bad = 0;

    printf("%-8s  %-8s  %-20s  %s\n", "VERSION", "STATE", "APPLIED", "NAME");
    for (size_t i = 0; i < m->n; i++) {
        const migration_t *mg = &m->v[i];
        const char *state = edited(mg)                     ? "EDITED"
                            : mg->applied && !mg->has_file ? "NO FILE"
                            : mg->applied                  ? "applied"
                                                           : "pending";
        pending += !mg->applied;
        bad += edited(mg) || (mg->applied && !mg->has_file);
        printf("%04d      %-8s  %-20s  %s\n", mg->version, state,
               mg->applied ? mg->when : "-", mg->name ? mg->name : "?");
    }
    if (bad) {
        migrations_damaged(m, dir);
        return 1;
    } else if (pending) {
        printf("%d pending: guardctl db migrate applies %s\n", pending,
               pending == 1 ? "it" : "them");
        return 3;
    } else {
        printf("up to date\n");
        return 0;
    }
}

int db_command(int argc, char **argv)
{
    const char *dsn = NULL, *dir = migrations_dir(), *cmd;
    const guardctl_opt_t opts[] = {OPT("--db", dsn), OPT("--dir", dir), {NULL}};
    migrations_t *m = NULL;
    PGconn *pg = NULL;
    int rc, migrate;

    if (argc < 1 ||
        (strcmp(argv[0], "migrate") != 0 && strcmp(argv[0], "status") != 0)) {
        return usage_error("db: %s", "migrate or status?");
    }
    migrate = strcmp(argv[0], "migrate") == 0;
    cmd = migrate ? "db migrate" : "db status";
    rc = opts_parse(cmd, argc - 1, argv + 1, opts, NULL);
    if (rc != 0) {
        return rc;
    }
    dsn = db_dsn(dsn);
    if (dsn == NULL) {
        return usage_error("%s: %s", cmd, "--db DSN (or GUARD_DB) is needed");
    }

    m = calloc(1, sizeof(*m));
    if (m == NULL) {
        return 2;
    }
    rc = migrations_read(dir, m);
    if (rc != 0) {
        goto out;
    }
    pg = db_connect(dsn);
    /* one migrator at a time: the others wait here */
    if (pg == NULL ||
        (migrate &&
         db_exec(pg, "SELECT pg_advisory_lock(7476832901)", "lock") != 0) ||
        migrations_applied(pg, m) != 0) {
        rc = 2;
        goto out;
    }
    rc = migrate ? db_migrate(pg, m, dir) : db_status(m, dir);

out:
    PQfinish(pg);
    migrations_free(m);
    free(m);
    return rc;
}

/* records from the store */

/*
 * Calls cb with each row of res (record, segment, line), first to last
 * (reverse: last to first); 0, cb's value, or -2 (out of memory).
 */
static int feed(PGresult *res, int reverse, gd_journal_record_cb cb, void *arg)
{
    int n = PQntuples(res);

    for (int k = 0; k < n; k++) {
        int r = reverse ? n - 1 - k : k;
        json_error_t jerr;
        json_t *rec = json_loads(PQgetvalue(res, r, 0), 0, &jerr);
        int rc;

        if (rec == NULL) {
            return -2;
        }
        rc = cb(rec, PQgetvalue(res, r, 1),
                strtoull(PQgetvalue(res, r, 2), NULL, 10), arg);
        json_decref(rec);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

static PGresult *query(PGconn *pg, const char *sql, int n,
                       const char *const *params)
{
    PGresult *res = PQexecParams(pg, sql, n, NULL, params, NULL, NULL, 0);

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        pg_error("PostgreSQL", PQresultErrorMessage(res));
        PQclear(res);
        return NULL;
    }
    return res;
}

/* cond appended to where, each ? in it a new parameter $N of value */
static void where_add(char *where, size_t size, const char **params, int *n,
                      const char *cond, const char *value)
{
    size_t len = strlen(where);

    for (; *cond && len + 8 < size; cond++) {
        if (*cond == '?') {
            params[(*n)++] = value;
            len += (size_t)snprintf(where + len, size - len, "$%d", *n);
        } else {
            where[len++] = *cond;
        }
    }
    where[len] = '\0';
}

int db_refusals(const char *dsn, const soc_filter_t *f, size_t limit,
                gd_journal_record_cb cb, void *arg, uint64_t *matching)
{
    char where[1024] = "refusal", sql[2048], nums[2][32];
    const char *params[8];
    int n = 0, rc = -1;
    PGconn *pg = db_connect(dsn);
    PGresult *res = NULL;
    size_t len;

    if (pg == NULL) {
        return -1;
    }

    if (f->tenant) {
        where_add(where, sizeof(where), params, &n, " AND tenant = ?",
                  f->tenant);
    }
    if (f->subject) {
        where_add(where, sizeof(where), params, &n, " AND subject = ?",
                  f->subject);
    }
    if (f->reason) {
        where_add(where, sizeof(where), params, &n, " AND reason = ?",
                  f->reason);
    }
    if (f->has_since) {
        snprintf(nums[0], sizeof(nums[0]), "%lld", (long long)f->since);
        where_add(
            where, sizeof(where), params, &n,
            " AND ts >= to_timestamp(?::bigint / 1000.0) - interval '1 ms'"
            " AND ts_ms >= ?",
            nums[0]);
    }
    if (f->has_until) {
        snprintf(nums[1], sizeof(nums[1]), "%lld", (long long)f->until);
        where_add(
            where, sizeof(where), params, &n,
            " AND ts <= to_timestamp(?::bigint / 1000.0) + interval '1 ms'"
            " AND ts_ms <= ?",
            nums[1]);
    }

    snprintf(sql, sizeof(sql), "SELECT count(*) FROM decisions WHERE %s",
             where);
    res = query(pg, sql, n, params);
    if (res == NULL) {
        goto out;
    }
    *matching = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);

    /* newest first, ties in the reverse of the journal's order; fed to cb
     * oldest first, as the journal would be */
    len = (size_t)snprintf(sql, sizeof(sql),
                           "SELECT record::text, segment, line FROM decisions "
                           "WHERE %s ORDER BY ts DESC, ts_ms DESC NULLS LAST, "
                           "segment DESC, line DESC",
                           where);
    if (limit) {
        snprintf(sql + len, sizeof(sql) - len, " LIMIT %zu", limit);
    }
    res = query(pg, sql, n, params);
    if (res == NULL) {
        goto out;
    }
    rc = feed(res, 1, cb, arg);
    PQclear(res);

out:
    PQfinish(pg);
    return rc;
}

/* a LIKE pattern for the ids that start with prefix, in lower case */
static char *like_prefix(const char *prefix)
{
    size_t len = strlen(prefix), o = 0;
    char *out = malloc(len * 2 + 2);

    if (out == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < len; i++) {
        char c = prefix[i];
        if (c == '%' || c == '_' || c == '\\') {
            out[o++] = '\\';
        }
        out[o++] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    out[o++] = '%';
    out[o] = '\0';
    return out;
}

int db_records_of(const char *dsn, const char *prefix, gd_journal_record_cb cb,
                  void *arg)
{
    char *like = like_prefix(prefix);
    const char *params[2] = {like, prefix};
    PGconn *pg = like ? db_connect(dsn) : NULL;
    PGresult *res;
    int rc = -1;

    if (pg == NULL) {
        free(like);
        return like ? -1 : -2;
    }

    /* the records of the first ids that start so (enough to tell that the
     * start is not unique), and of the very id */
    res = query(pg,
                "WITH ids AS ((SELECT DISTINCT lower(id) AS lid FROM decisions "
                "  WHERE lower(id) LIKE $1 ORDER BY 1 LIMIT 102) "
                " UNION SELECT lower($2::text)) "
                "SELECT d.record::text, d.segment, d.line FROM decisions d "
                "JOIN ids ON lower(d.id) = ids.lid "
                "ORDER BY d.segment, d.line",
                2, params);
    if (res == NULL) {
        goto out;
    }
    rc = feed(res, 0, cb, arg);
    PQclear(res);
    if (rc != 0) {
        goto out;
    }

    res = query(pg,
                "SELECT record::text, segment, line FROM reviews "
                "WHERE lower(review_of) LIKE $1 ORDER BY segment, line",
                1, params);
    rc = res ? feed(res, 0, cb, arg) : -1;
    PQclear(res);

out:
    PQfinish(pg);
    free(like);
    return rc;
}

/* audit verify --db: the journal and the store, side by side */

#define VERIFY_SHOW_MAX 20

typedef struct {
    PGconn *pg;
    PGresult *row; /* the store's next row, or NULL at its end */
    int done;
    uint64_t records, rows, missing_db, missing_journal, differ, bad_hash;
    uint64_t shown;
    int error;
} verify_ctx_t;

static void verify_say(verify_ctx_t *v, const char *fmt, const char *segment,
                       const char *line, const char *detail)
{
    if (v->shown++ < VERIFY_SHOW_MAX) {
        printf(fmt, segment, line, detail);
        fputc('\n', stdout);
    } else if (v->shown == VERIFY_SHOW_MAX + 1) {
        printf("... (only the first %d differences are listed)\n",
               VERIFY_SHOW_MAX);
    }
}

static void verify_next(verify_ctx_t *v)
{
    PQclear(v->row);
    v->row = NULL;
    if (v->done) {
        return;
    }
    v->row = PQgetResult(v->pg);
    if (v->row && PQresultStatus(v->row) == PGRES_SINGLE_TUPLE) {
        v->rows++;
        return;
    }
    if (v->row && PQresultStatus(v->row) != PGRES_TUPLES_OK) {
        pg_error("PostgreSQL", PQresultErrorMessage(v->row));
        v->error = 1;
    }
    PQclear(v->row);
    v->row = NULL;
    while (PQgetResult(v->pg) != NULL) {
    }
    v->done = 1;
}

/* the row's place against (segment, line): <0 before, 0 same, >0 after */
static int verify_cmp(PGresult *row, const char *segment, uint64_t line)
{
    int c = strcmp(PQgetvalue(row, 0, 1), segment);
    uint64_t l = strtoull(PQgetvalue(row, 0, 2), NULL, 10);

    return c ? c : (l > line) - (l < line);
}

static void verify_row_missing_journal(verify_ctx_t *v)
{
    v->missing_journal++;
    verify_say(v, "NOT IN JOURNAL: %s line %s: %s", PQgetvalue(v->row, 0, 1),
               PQgetvalue(v->row, 0, 2),
               "the database has a row the journal does not have");
}

/* the row at the same place as rec: the same record, and its hash */
static void verify_row(verify_ctx_t *v, json_t *rec)
{
    json_error_t jerr;
    json_t *stored = json_loads(PQgetvalue(v->row, 0, 0), 0, &jerr);
    const char *seg = PQgetvalue(v->row, 0, 1),
               *line = PQgetvalue(v->row, 0, 2);
    const char *hash = PQgetvalue(v->row, 0, 3);
    const char *prev = stored ? gd_soc_str(stored, "prev_hash") : NULL;
    char computed[GD_JOURNAL_HASH_LEN + 1];

    if (stored == NULL || !json_equal(stored, rec)) {
        v->differ++;
        verify_say(v, "DIFFERS: %s line %s: %s", seg, line,
                   "the row's record is not the journal's record");
    } else if (prev == NULL ||
               strcmp(hash, gd_soc_str(rec, "hash") ? gd_soc_str(rec, "hash")
                                                    : "") != 0 ||
               gd_journal_hash(stored, prev, computed) != 0 ||
               strcmp(computed, hash) != 0) {
        v->bad_hash++;
        verify_say(v, "BAD HASH: %s line %s: %s", seg, line,
                   "the row's chain hash does not match its record");
    }
    json_decref(stored);
}

static int verify_cb(json_t *rec, const char *segment, uint64_t line, void *arg)
{
    verify_ctx_t *v = arg;
    char num[32];
    int c = 1;

    v->records++;
    while (v->row && (c = verify_cmp(v->row, segment, line)) < 0) {
        verify_row_missing_journal(v);
        verify_next(v);
    }
    if (v->row && c == 0) {
        verify_row(v, rec);
        verify_next(v);
    } else {
        snprintf(num, sizeof(num), "%llu", (unsigned long long)line);
        v->missing_db++;
        verify_say(v, "NOT IN DATABASE: %s line %s: %s", segment, num,
                   "the journal's record has no row in the database");
    }
    return v->error ? -3 : 0;
}

int db_audit_verify(const char *dir, const char *dsn)
{
    verify_ctx_t v = {0};
    char err[512];
    uint64_t skipped = 0;
    int rc;

    v.pg = db_connect(dsn);
    if (v.pg == NULL) {
        return 2;
    }
    if (!PQsendQuery(v.pg,
                     "SELECT record::text, segment, line, hash FROM ("
                     " SELECT record, segment, line, hash FROM decisions"
                     " UNION ALL"
                     " SELECT record, segment, line, hash FROM reviews) r "
                     "ORDER BY segment, line") ||
        !PQsetSingleRowMode(v.pg)) {
        pg_error("PostgreSQL", PQerrorMessage(v.pg));
        PQfinish(v.pg);
        return 2;
    }
    verify_next(&v);

    rc = gd_journal_scan(dir, verify_cb, &v, &skipped, err, sizeof(err));
    while (rc == 0 && v.row) {
        verify_row_missing_journal(&v);
        verify_next(&v);
    }
    PQclear(v.row);
    while (!v.done && PQgetResult(v.pg) != NULL) {
    }
    PQfinish(v.pg);

    if (rc == -1) {
        return journal_error(dir, err);
    }
    if (rc != 0 || v.error) {
        return 2;
    }

    if (v.missing_db + v.missing_journal + v.differ + v.bad_hash == 0) {
        printf("ok: the database holds the journal's %llu records, each row "
               "matching its record and chain hash\n",
               (unsigned long long)v.records);
        return 0;
    }
    printf("MISMATCH: %llu journal records, %llu database rows: %llu not in "
           "the database, %llu not in the journal, %llu differ, %llu with a "
           "bad hash\n",
           (unsigned long long)v.records, (unsigned long long)v.rows,
           (unsigned long long)v.missing_db,
           (unsigned long long)v.missing_journal, (unsigned long long)v.differ,
           (unsigned long long)v.bad_hash);
    return 1;
}
