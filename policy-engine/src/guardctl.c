/*
 * guardctl: the command line for operators and SOC analysts.
 *
 *   guardctl policy check DIR
 *   guardctl audit verify [--dir DIR] [--from SEGMENT]
 *   guardctl blocked [--dir DIR] [filters] [--limit N] [--json]
 *   guardctl show ID [--dir DIR] [--json]
 *   guardctl review ID --verdict V --analyst NAME [--note TEXT] ...
 *   guardctl token mint --key FILE --kid K --tenant T [options]
 *
 * The journal is only read here: a review goes to guardd as an AUDIT
 * frame, and guardd, the journal's one writer, appends it to the chain.
 */
#include "guardctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: guardctl policy check DIR\n"
    "       guardctl audit verify [--dir DIR] [--from SEGMENT]\n"
    "       guardctl blocked [--dir DIR] [--tenant T] [--subject S] "
    "[--reason R]\n"
    "                        [--since TIME] [--until TIME] [--limit N] "
    "[--json]\n"
    "       guardctl show ID [--dir DIR] [--json]\n"
    "       guardctl review ID --verdict confirmed|false_positive "
    "--analyst NAME\n"
    "                       [--note TEXT] [--socket PATH] [--dir DIR]\n"
    "       guardctl token mint --key JWKS|PEM --kid K --tenant T [--sub S]\n"
    "                       [--ttl 1h] [--claim k=v]... [--iss X] [--aud Y]\n"
    "                       [--alg ALG] [--tenant-claim NAME]\n"
    "TIME: 30m, 1h, 2d (before now) or ISO 8601 (2024-05-01T12:00:00Z)\n";

int usage(void)
{
    fputs(usage_text, stderr);
    return 2;
}

int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "guardctl: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    return usage();
}

/*
 * An option with a value: "--name VALUE" or "--name=VALUE".  Returns 1
 * when argv[*i] is that option (*val set, or NULL when the value is
 * missing), 0 when it is another argument.
 */
int opt(int argc, char **argv, int *i, const char *name, const char **val)
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

    return usage();
}
