/*
 * guardd: the Guard policy/scoring sidecar.
 *
 *   guardd -c guardd.conf [-t]
 *   guardd --version
 *   guardd -h | --help
 *
 * One epoll loop thread serves the Unix socket: it decodes frames with
 * the shared codec (gd_proto), answers HELLO and PING at once, masks
 * AUDIT records (gd_audit) and hands them to the writer thread, which
 * appends them to the journal (gd_journal) and fsyncs in group commits;
 * an ACK goes out only after its record was fsynced.  No blocking call
 * runs on the loop thread.
 *
 * Exactly once: every record has a UUID "id" (guardd gives one to a
 * record that has none).  The writer, the journal's only user, appends a
 * record only when its id is not in the set of the last dedupe_window
 * ids (gd_idset), rebuilt from the journal at startup (after an fsync of
 * what a killed guardd left in the page cache).  Spill files (records
 * the nginx module could not send) are ingested by the writer too, one
 * per round, and removed only after their records were fsynced.  So a
 * record sent again after a reconnect, a crash or a restart, from the
 * socket or a spill file, is journaled once and acknowledged as a
 * duplicate.
 *
 * SIGHUP reloads the policies (the old set stays when the new one is
 * invalid); SIGTERM and SIGINT stop accepting, answer what is in flight,
 * flush the journal and exit.
 *
 * The files: see guardd.h.
 */
#define _GNU_SOURCE

#include "guardd.h"

#include "gd_version.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int drop_privileges(void)
{
    struct passwd *pw;

    if (getuid() != 0 || conf.user[0] == '\0') {
        return 0;
    }

    pw = getpwnam(conf.user);
    if (pw == NULL) {
        logmsg("emerg", "user \"%s\" does not exist", conf.user);
        return -1;
    }

    if (chown(conf.listen, pw->pw_uid, (gid_t)-1) != 0 ||
        (conf.metrics && conf.metrics[0] == '/' &&
         chown(conf.metrics, pw->pw_uid, (gid_t)-1) != 0) ||
        chown(conf.journal_dir, pw->pw_uid, pw->pw_gid) != 0 ||
        initgroups(pw->pw_name, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 ||
        setuid(pw->pw_uid) != 0) {
        logmsg("emerg", "cannot drop privileges to \"%s\": %s", conf.user,
               strerror(errno));
        return -1;
    }

    logmsg("info", "running as %s", conf.user);
    return 0;
}

static int write_pid(void)
{
    FILE *f = fopen(conf.pid_file, "w");

    if (f == NULL) {
        logmsg("emerg", "%s: %s", conf.pid_file, strerror(errno));
        return -1;
    }
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);
    return 0;
}

/* guardd --help (docs/man/guardd.8 has every option: t/07-manpages.t) */
static const char help_text[] =
    "usage: guardd -c guardd.conf [-t] | --version | --help\n"
    "  -c FILE     the configuration, JSON (docs/guardd.md)\n"
    "  -t          check the configuration and the policies, then exit\n"
    "  -h, --help  print this text\n"
    "  --version   print the version and the protocol version\n";

int main(int argc, char **argv)
{
    const char *conf_path = NULL;
    int test_only = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            conf_path = argv[++i];
        } else if (strcmp(argv[i], "-t") == 0) {
            test_only = 1;
        } else if (strcmp(argv[i], "--version") == 0) {
            puts(GD_VERSION_TEXT("guardd"));
            return 0;
        } else if (strcmp(argv[i], "-h") == 0 ||
                   strcmp(argv[i], "--help") == 0) {
            fputs(help_text, stdout);
            return 0;
        } else {
            fprintf(stderr, "usage: guardd -c guardd.conf [-t] | --version\n");
            return 2;
        }
    }

    if (conf_path == NULL) {
        fprintf(stderr, "usage: guardd -c guardd.conf [-t] | --version\n");
        return 2;
    }

    if (conf_load(conf_path) != 0) {
        return 1;
    }

    if (gd_audit_init() != 0) {
        logmsg("emerg", "the masking patterns cannot be compiled");
        return 1;
    }

    policies = policies_load();
    if (policies == NULL) {
        logmsg("emerg", "the policies in %s are invalid", conf.policies);
        return 1;
    }

    if (test_only) {
        printf("guardd: %s is valid, policy version %s\n", conf_path,
               policies->version);
        return 0;
    }

    if (journal_open() != 0 || sinks_init() != 0) {
        return 1;
    }

    gd_uuid_gen_init(&uuid_gen);
    risk_state = gd_risk_state_new(100000);
    if (risk_state == NULL) {
        logmsg("emerg", "out of memory");
        return 1;
    }

    if (listen_socket() < 0 || metrics_listen() != 0 || write_pid() != 0 ||
        drop_privileges() != 0) {
        return 1;
    }

    /* the loop first: the writer thread starts with the signals blocked */
    if (loop_init() != 0 || writer_start() != 0 || sinks_start() != 0) {
        logmsg("emerg", "cannot start: %s", strerror(errno));
        return 1;
    }
    listener_start();
    metrics_start();
    sink_lifecycle("start");

    logmsg("notice", "listening on %s (mode %04o), policy version %s",
           conf.listen, (unsigned)conf.socket_mode, policies->version);
    logmsg("info",
           "max_connections %zu (RLIMIT_NOFILE %ld), idle_timeout %ld s, "
           "hello_idle_timeout %ld s, max_output %zu, stuck_timeout %ld s",
           conf.max_connections, conf.nofile, conf.idle_timeout,
           conf.hello_idle_timeout, conf.max_output, conf.stuck_timeout);
    if (conf.nofile >= 0 &&
        conf.max_connections + GD_FD_RESERVE > (size_t)conf.nofile) {
        logmsg("warn",
               "max_connections %zu leaves fewer than %d of the %ld file "
               "descriptors (RLIMIT_NOFILE) to the journal, the spill files "
               "and the policies; when they run out, guardd stops accepting "
               "for a moment at a time",
               conf.max_connections, GD_FD_RESERVE, conf.nofile);
    }

    loop_run();

    /* shut down: no new connections, in-flight records made durable and
     * acknowledged, then the journal closed */

    logmsg("notice", "shutting down");
    listener_stop();
    metrics_stop();
    sink_lifecycle("stop");

    writer_stop();
    deliver_acks();
    conns_finish();
    sinks_stop();

    writer_close();
    unlink(conf.pid_file);
    gd_policy_set_free(policies);
    gd_risk_state_free(risk_state);
    return 0;
}
