/*
 * guardd: spill files, the records the nginx module could not send,
 * ingested by the writer thread one file per round (spill_round), each
 * removed only after its records were fsynced.
 */
#define _GNU_SOURCE

#include "guardd.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int has_suffix(const char *name, const char *suffix)
{
    size_t n = strlen(name), k = strlen(suffix);
    return n > k && strcmp(name + n - k, suffix) == 0;
}

static void spill_stuck_add(const char *name);

/* renames the file to NAME.rejected: kept for the operator, never read
 * again (when even that fails, it is not read again in this run) */
static void spill_set_aside(const char *name, const char *why)
{
    char from[4096], to[4096];

    snprintf(from, sizeof(from), "%s/%s", conf.spill, name);
    snprintf(to, sizeof(to), "%s/%s.rejected", conf.spill, name);

    if (rename(from, to) != 0) {
        logmsg("error", "spill %s: %s, and it cannot be renamed: %s", name, why,
               strerror(errno));
        spill_stuck_add(name);
    } else {
        logmsg("warn", "spill %s: %s: kept as %s.rejected", name, why, name);
    }
}

static int spill_is_stuck(const char *name)
{
    for (size_t i = 0; i < writer.spill_nstuck; i++) {
        if (strcmp(writer.spill_stuck[i], name) == 0) {
            return 1;
        }
    }
    return 0;
}

/* an ingested file that cannot be removed is not read again in this run:
 * its ids could leave the dedupe window while it waits */
static void spill_stuck_add(const char *name)
{
    char **more;

    if (writer.spill_nstuck == GD_SPILL_MAX_STUCK) {
        return;
    }
    more =
        realloc(writer.spill_stuck, (writer.spill_nstuck + 1) * sizeof(char *));
    if (more == NULL) {
        return;
    }
    writer.spill_stuck = more;
    more[writer.spill_nstuck] = strdup(name);
    if (more[writer.spill_nstuck] != NULL) {
        writer.spill_nstuck++;
    }
}

/*
 * Ingests one spill file: 0 when it is done with (removed or set aside),
 * -1 when it stays for a later round.
 */
static int spill_ingest(const char *name)
{
    char path[4096], err[256];
    uint64_t lineno = 0, added = 0, dups = 0, bad = 0;
    size_t cap = 0;
    char *line = NULL;
    ssize_t n;
    struct stat st;
    FILE *f;
    int fd, aborted = 0;

    snprintf(path, sizeof(path), "%s/%s", conf.spill, name);

    fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        char why[128];

        if (errno == ENOENT) {
            return 0; /* renamed (sealed) or taken away meanwhile */
        }
        snprintf(why, sizeof(why), "cannot open it: %s", strerror(errno));
        spill_set_aside(name, why);
        return 0;
    }

    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        spill_set_aside(name, "not a regular file");
        return 0;
    }

    if (st.st_size > GD_SPILL_MAX_FILE) {
        close(fd);
        spill_set_aside(name, "larger than 256 MiB, not read");
        return 0;
    }

    f = fdopen(fd, "r");
    if (f == NULL) {
        close(fd);
        logmsg("error", "spill %s: %s", name, strerror(errno));
        return -1;
    }

    while ((n = getline(&line, &cap, f)) > 0) {
        uint8_t rid[GD_AUDIT_ID_LEN];
        json_error_t jerr;
        json_t *rec;
        int rc;

        lineno++;

        /* never the line itself in the log: it may hold secrets */
        if (line[n - 1] != '\n') {
            logmsg("warn", "spill %s:%llu: no newline at the end", name,
                   (unsigned long long)lineno);
            bad++;
            continue;
        }

        rec = json_loadb(line, (size_t)n - 1, JSON_REJECT_DUPLICATES, &jerr);
        if (rec == NULL) {
            logmsg("warn", "spill %s:%llu: not JSON (at column %d)", name,
                   (unsigned long long)lineno, jerr.column);
            bad++;
            continue;
        }
        if (!json_is_object(rec) || record_id(rec, rid) != 0) {
            logmsg("warn", "spill %s:%llu: %s", name,
                   (unsigned long long)lineno,
                   !json_is_object(rec) ? "not a JSON object"
                   : json_object_get(rec, "id") == NULL
                       ? "no \"id\""
                       : "the \"id\" is not a canonical UUID");
            json_decref(rec);
            bad++;
            continue;
        }

        if (record_set_id(rec, rid) != 0 || gd_audit_mask(rec) < 0) {
            logmsg("error", "spill %s:%llu: out of memory", name,
                   (unsigned long long)lineno);
            json_decref(rec);
            aborted = 1;
            break;
        }

        rc = journal_once(rec, rid, err, sizeof(err));
        json_decref(rec);

        if (rc < 0) {
            logmsg("error", "spill %s:%llu: journal: %s", name,
                   (unsigned long long)lineno, err);
            aborted = 1;
            break;
        }
        if (rc == 0) {
            dups++;
        } else {
            added++;
        }

        if (lineno % 256 == 0 && stop_requested()) {
            logmsg("notice",
                   "spill %s: stopped at line %llu, the file stays for "
                   "the next start",
                   name, (unsigned long long)lineno);
            aborted = 1;
            break;
        }
    }

    if (!aborted && ferror(f)) {
        logmsg("error", "spill %s: read: %s", name, strerror(errno));
        aborted = 1;
    }

    free(line);
    fclose(f);

    /* what was appended is made durable before the file may go */
    if (added > 0 && !writer.broken && journal_sync() != 0) {
        journal_broken("fsync");
    }
    if (added > 0 && writer.broken) {
        aborted = 1;
    }

    pthread_mutex_lock(&writer.lock);
    writer.records += added;
    writer.duplicates += dups;
    writer.spill_records += added;
    pthread_mutex_unlock(&writer.lock);

    if (aborted) {
        logmsg("error", "spill %s: left for a later round", name);
        return -1;
    }

    writer.spill_files++;
    logmsg("notice",
           "spill %s: %llu records ingested, %llu duplicates, %llu bad "
           "lines",
           name, (unsigned long long)added, (unsigned long long)dups,
           (unsigned long long)bad);

    if (bad > 0) {
        char why[64];
        snprintf(why, sizeof(why), "%llu bad lines", (unsigned long long)bad);
        spill_set_aside(name, why);
        return 0;
    }

    if (unlink(path) != 0 && errno != ENOENT) {
        logmsg("error",
               "spill %s: ingested, but it cannot be removed: %s (guardd "
               "needs write access to %s); it is not read again until "
               "guardd restarts",
               name, strerror(errno), conf.spill);
        spill_stuck_add(name);
    }

    return 0;
}

/*
 * One round: lists the spill directory and ingests the first file by
 * name, sealed or orphaned (a .part nobody wrote to for
 * spill_orphan_after seconds).  1 when more files wait.
 */
int spill_round(void)
{
    char best[256] = "";
    size_t candidates = 0;
    struct dirent *e;
    time_t now = time(NULL);
    DIR *d;

    if (writer.broken) {
        return 0;
    }

    d = opendir(conf.spill);
    if (d == NULL) {
        if (!writer.spill_dir_failed) {
            logmsg("error", "spill: %s: %s", conf.spill, strerror(errno));
            writer.spill_dir_failed = 1;
        }
        return 0;
    }
    if (writer.spill_dir_failed) {
        logmsg("notice", "spill: %s can be read again", conf.spill);
        writer.spill_dir_failed = 0;
    }

    while ((e = readdir(d)) != NULL) {
        struct stat st;

        if (e->d_name[0] == '.' || strlen(e->d_name) >= sizeof(best) ||
            spill_is_stuck(e->d_name)) {
            continue;
        }
        if (has_suffix(e->d_name, ".part")) {
            if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
                now - st.st_mtime <= conf.spill_orphan_after) {
                continue;
            }
        } else if (!has_suffix(e->d_name, ".jsonl")) {
            continue;
        }

        candidates++;
        if (best[0] == '\0' || strcmp(e->d_name, best) < 0) {
            strcpy(best, e->d_name);
        }
    }

    closedir(d);

    if (candidates == 0) {
        return 0;
    }

    return spill_ingest(best) == 0 && candidates > 1;
}
