/*
 * guardctl: the command line for operators and SOC analysts.
 *
 *   guardctl policy check DIR [--keys FILE]
 *   guardctl reload [--policies DIR] [--nginx-pid FILE] [options]
 *   guardctl audit verify [--dir DIR] [--from SEGMENT]
 *   guardctl blocked [--dir DIR] [filters] [--limit N] [--json]
 *   guardctl show ID [--dir DIR] [--json]
 *   guardctl review ID --verdict V --analyst NAME [--note TEXT] ...
 *   guardctl token mint --key FILE --kid K --tenant T [options]
 *   guardctl guardrails scan --policies DIR [--tenant T] [options] [FILE|-]
 *   guardctl db migrate|status [--db DSN] [--dir DIR]
 *   guardctl events tail [--redis ADDR] [--tenant T] [--group NAME] ...
 *   guardctl --version
 *
 * The journal is only read here: a review goes to guardd as an AUDIT
 * frame, and guardd, the journal's one writer, appends it to the chain.
 */
#include "guardctl.h"

#include "gd_version.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: guardctl policy check DIR [--keys FILE]\n"
    "       guardctl reload [--policies DIR] [--keys FILE] [--nginx-pid FILE]\n"
    "                       [--guardd-pid FILE] [--socket PATH] [--status "
    "URL]\n"
    "                       [--timeout S]\n"
    "       guardctl audit verify [--dir DIR] [--from SEGMENT] [--db DSN]\n"
    "       guardctl blocked [--dir DIR | --db DSN] [--tenant T] [--subject S]"
    "\n"
    "                        [--reason R] [--since TIME] [--until TIME]\n"
    "                        [--limit N] [--json]\n"
    "       guardctl show ID [--dir DIR | --db DSN] [--json]\n"
    "       guardctl review ID --verdict confirmed|false_positive "
    "--analyst NAME\n"
    "                       [--note TEXT] [--socket PATH] [--dir DIR | --db "
    "DSN]\n"
    "       guardctl db migrate [--db DSN] [--dir MIGRATIONS]\n"
    "       guardctl db status [--db DSN] [--dir MIGRATIONS]\n"
    "       guardctl events tail [--redis PATH|HOST:PORT] [--stream KEY]\n"
    "                       [--tenant T] [--group NAME [--consumer NAME]]\n"
    "                       [--from ID] [--count N] [--timeout S] [--json]\n"
    "       guardctl token mint --key JWKS|PEM --kid K --tenant T [--sub S]\n"
    "                       [--ttl 1h] [--claim k=v]... [--iss X] [--aud Y]\n"
    "                       [--alg ALG] [--tenant-claim NAME]\n"
    "       guardctl guardrails scan --policies DIR [--tenant T]\n"
    "                       [--content-type CT] [--jsonl] [FILE|-]\n"
    "       guardctl --version\n"
    "TIME: 30m, 1h, 2d (before now) or ISO 8601 (2024-05-01T12:00:00Z)\n"
    "DSN: a libpq connection string (GUARD_DB); --db reads PostgreSQL, not "
    "the journal\n";

int usage(void)
{
    fputs(usage_text, stderr);
    return 2;
}

int usage_error(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "guardctl: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return usage();
}

/*
 * An option with a value: "--name VALUE" or "--name=VALUE".  Returns 1
 * when argv[*i] is that option (*val set, or NULL when the value is
 * missing), 0 when it is another argument.
 */
static int opt(int argc, char **argv, int *i, const char *name,
               const char **val)
{
    size_t n = strlen(name);

    if (strncmp(argv[*i], name, n) != 0) {
        return 0;
    }
    if (argv[*i][n] == '=') {
        *val = argv[*i] + n + 1;
        return 1;
    }
    if (argv[*i][n] != '\0') {
        return 0;
    }
    *val = *i + 1 < argc ? argv[++*i] : NULL;
    return 1;
}

/*
 * The arguments of a subcommand, by its table of options (ended by a
 * {NULL}); the one argument that is not an option goes to *arg (NULL:
 * none is taken).  0, or usage()'s exit status after a message naming
 * cmd (none when cmd is NULL).
 */
int opts_parse(const char *cmd, int argc, char **argv,
               const guardctl_opt_t *opts, const char **arg)
{
    for (int i = 0; i < argc; i++) {
        const guardctl_opt_t *o;
        const char *v = NULL;

        for (o = opts; o->name; o++) {
            if (o->flag ? strcmp(argv[i], o->name) == 0
                        : opt(argc, argv, &i, o->name, &v)) {
                break;
            }
        }

        if (o->name == NULL) {
            if (arg == NULL || argv[i][0] == '-' || *arg != NULL) {
                return cmd == NULL ? usage()
                                   : usage_error("%s: %s argument \"%s\"", cmd,
                                                 arg ? "unexpected" : "unknown",
                                                 argv[i]);
            }
            *arg = argv[i];
        } else if (o->flag) {
            *o->flag = 1;
        } else if (v == NULL) {
            return cmd == NULL
                       ? usage()
                       : usage_error("%s: %s needs a value", cmd, argv[i]);
        } else if (o->n) {
            o->value[(*o->n)++] = v;
        } else {
            *o->value = v;
        }
    }

    return 0;
}

const char *journal_dir(void)
{
    const char *dir = getenv("GUARD_JOURNAL_DIR");
    return dir && *dir ? dir : "/var/lib/guard/journal";
}

/* the subcommands: "group name" or "name", and what runs them */
static const struct {
    const char *group;
    const char *name; /* NULL: the group is the command */
    int (*run)(int argc, char **argv);
} commands[] = {
    {"policy", "check", policy_check}, {"audit", "verify", audit_verify},
    {"blocked", NULL, blocked},        {"show", NULL, show},
    {"review", NULL, review},          {"token", "mint", token_mint},
    {"reload", NULL, reload},          {"guardrails", "scan", guardrails_scan},
    {"db", NULL, db_command},          {"events", NULL, events_command},
};

int main(int argc, char **argv)
{
    for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]); k++) {
        int words = commands[k].name ? 2 : 1;

        if (argc > words && strcmp(argv[1], commands[k].group) == 0 &&
            (commands[k].name == NULL ||
             strcmp(argv[2], commands[k].name) == 0)) {
            return commands[k].run(argc - 1 - words, argv + 1 + words);
        }
    }

    if (argc >= 2 &&
        (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
         strcmp(argv[1], "help") == 0)) {
        fputs(usage_text, stdout);
        return 0;
    }

    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        puts(GD_VERSION_TEXT("guardctl"));
        return 0;
    }

    return usage();
}
