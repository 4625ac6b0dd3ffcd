/*
 * guardctl's private header: what its files share.
 *
 *   guardctl.c         the dispatcher (subcommand -> function), the usage
 *                      and the argument helpers
 *   guardctl_policy.c  policy check
 *   guardctl_reload.c  reload: nginx and guardd, checked, then compared
 *   guardctl_audit.c   audit verify
 *   guardctl_soc.c     blocked, show, review: the SOC's view of the journal
 *   guardctl_client.c  a guardd connection: frames sent and awaited
 *   guardctl_token.c   token mint
 *   guardctl_guardrails.c guardrails scan
 *   guardctl_db.c      db migrate, db status; the PostgreSQL store as a
 *                      source for blocked, show, review and audit verify
 *   guardctl_events.c  events tail: the Redis stream, with consumer groups
 */
#ifndef GUARDCTL_H
#define GUARDCTL_H

#include "gd_journal.h"
#include "gd_policy.h"
#include "gd_proto.h"

#include <stdint.h>

#define GUARDCTL_TIMEOUT_MS 5000

/* guardctl.c */
int usage(void);
int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * An option of a subcommand: "--name VALUE" or "--name=VALUE", its value
 * stored in *value, or appended to value[(*n)++] when n is set (an option
 * given again and again); or, with flag set, "--name" alone setting *flag.
 */
typedef struct {
    const char *name;
    const char **value;
    size_t *n;
    int *flag;
} guardctl_opt_t;

/* the rows of a table of options */
/* clang-format off */
#define OPT(name, var) {name, &(var), NULL, NULL}
#define OPT_LIST(name, list, n) {name, list, &(n), NULL}
#define OPT_FLAG(name, var) {name, NULL, NULL, &(var)}
/* clang-format on */

int opts_parse(const char *cmd, int argc, char **argv,
               const guardctl_opt_t *opts, const char **arg);
const char *journal_dir(void);

/* guardctl_audit.c: the journal in dir cannot be read (err says why):
 * the message, with how to name the journal when dir is none; returns 2 */
int journal_error(const char *dir, const char *err);

/* the subcommands: argc and argv after their name */
int policy_check(int argc, char **argv);
int audit_verify(int argc, char **argv);
int blocked(int argc, char **argv);
int show(int argc, char **argv);
int review(int argc, char **argv);
int token_mint(int argc, char **argv);
int reload(int argc, char **argv);
int guardrails_scan(int argc, char **argv);
int db_command(int argc, char **argv);
int events_command(int argc, char **argv);

/* guardctl_db.c: the PostgreSQL store */

/* --db's value, else GUARD_DB, else NULL (the journal is read) */
const char *db_dsn(const char *given);

/* the migrations directory: GUARD_MIGRATIONS, else
 * /usr/local/share/guard/migrations (make install) when it exists, else
 * /usr/share/guard/migrations (the package; a --dir option overrides it) */
const char *migrations_dir(void);

/* blocked's filters */
typedef struct {
    const char *tenant, *subject, *reason;
    int64_t since, until;
    int has_since, has_until;
} soc_filter_t;

/*
 * The refusals of the store that f matches: the newest limit of them (0:
 * all), given to cb oldest first (as gd_journal_scan would, the journal's
 * order breaking ties), their number in *matching.  0, cb's value, -1
 * (the reason printed) or -2 (out of memory).
 */
int db_refusals(const char *dsn, const soc_filter_t *f, size_t limit,
                gd_journal_record_cb cb, void *arg, uint64_t *matching);

/*
 * The store's records whose id starts with prefix (any case; the first
 * 102 such ids, and the very id), then the reviews of those ids, each in
 * the journal's order, given to cb; returns as db_refusals.
 */
int db_records_of(const char *dsn, const char *prefix, gd_journal_record_cb cb,
                  void *arg);

/*
 * audit verify --db: every row against the journal record at its place
 * (segment, line), its chain hash recomputed; rows and records missing on
 * either side listed.  The exit status: 0 all match, 1 not, 2 an error.
 */
int db_audit_verify(const char *dir, const char *dsn);

/* guardctl_token.c: a file of at most 1 MiB, NUL-terminated, its size in
 * *len; NULL with err set */
char *read_file(const char *path, size_t *len, char *err, size_t errlen);

/* guardctl_policy.c: dir loaded as the module loads it, with its JWK sets
 * and keys (a guard_jwt_keys file, NULL: none); NULL after printing every
 * error on stderr */
gd_policy_set_t *policy_load(const char *dir, const char *keys);

/* guardctl_client.c */
typedef struct {
    int fd;
    int64_t deadline;
    uint8_t buf[GD_PROTO_DEFAULT_MAX_FRAME + GD_PROTO_HEADER];
    size_t len;
} conn_t;

int exchange(conn_t *c, gd_frame_type_t type, uint32_t id, json_t *payload,
             size_t max_frame, gd_frame_type_t want, json_t **answer, char *err,
             size_t errlen);

/*
 * guardd's socket: GUARD_SOCKET, else /run/guard/guardd.sock (a --socket
 * option overrides it).
 */
const char *guardd_socket(void);

/*
 * Connects to guardd at path and says HELLO: the connection, with
 * guardd's HELLO answer in *hello (a new reference) and the smaller of
 * the two maximum frames in *max_frame; or NULL with err set.  Close it
 * with conn_close().
 */
conn_t *guardd_open(const char *path, json_t **hello, size_t *max_frame,
                    char *err, size_t errlen);
void conn_close(conn_t *c);

#endif /* GUARDCTL_H */
