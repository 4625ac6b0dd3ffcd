/*
 * guardd: the writer thread, the journal's one user.  It appends the
 * AUDIT records the loop hands it (journal_enqueue) and fsyncs them in
 * group commits, once per record id (the dedupe set), ingests spill
 * files between groups (guardd_spill.c), and tells the loop through an
 * eventfd, which sends the ACKs (deliver_acks).
 */
#define _GNU_SOURCE

#include "guardd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

gd_writer_t writer;
static pthread_t writer_thread;

/* the record's id, parsed into rid; -1 when it has none or a bad one */
int record_id(json_t *rec, uint8_t rid[GD_AUDIT_ID_LEN])
{
    json_t *v = json_object_get(rec, "id");

    if (!json_is_string(v) ||
        gd_audit_id_parse(json_string_value(v), json_string_length(v), rid) !=
            0) {
        return -1;
    }
    return 0;
}

/* the canonical (lowercase) text of rid as the record's "id" */
int record_set_id(json_t *rec, const uint8_t rid[GD_AUDIT_ID_LEN])
{
    char text[GD_UUID_STRLEN + 1];

    gd_uuid_format(rid, text);
    text[GD_UUID_STRLEN] = '\0';
    return json_object_set_new(rec, "id", json_string(text));
}

/* an fsync failed: what was written may be lost, and the dedupe set may
 * hold ids that are not durable.  Nothing more is appended (a duplicate
 * could be acknowledged for a lost record); a restart rebuilds the set
 * from what the journal really holds. */
void journal_broken(const char *what)
{
    if (!writer.broken) {
        logmsg("emerg",
               "journal: %s: %s; no more records are accepted until guardd "
               "is restarted",
               what, strerror(errno));
    }
    writer.broken = 1;
}

/*
 * Appends rec unless its id was journaled already (writer thread only):
 * 1 appended, 0 a duplicate, -1 failed (err set).
 */
int journal_once(json_t *rec, const uint8_t rid[GD_AUDIT_ID_LEN], char *err,
                 size_t errlen)
{
    if (writer.broken) {
        snprintf(err, errlen,
                 "the journal failed to fsync; guardd must be restarted");
        return -1;
    }

    if (gd_idset_has(writer.seen, rid)) {
        return 0;
    }

    if (gd_journal_append(writer.journal, rec, err, errlen) != 0) {
        return -1;
    }

    gd_idset_add(writer.seen, rid);
    sink_appended();
    return 1;
}

/* an fsync of the journal, timed (writer thread); errno as it left it */
int journal_sync(void)
{
    int64_t t0 = monotonic_us();
    int rc = gd_journal_sync(writer.journal);
    int saved = errno;
    int64_t took = monotonic_us() - t0;

    hist_observe(&metrics.fsync_us, took > 0 ? (uint64_t)took : 0);
    if (rc == 0) {
        sink_durable(); /* the sinks may read up to here */
    }
    errno = saved;
    return rc;
}

/* spill files: "<ms>-<pid>-<seq>.part" while written, ".jsonl" sealed */

int stop_requested(void)
{
    int stop;

    pthread_mutex_lock(&writer.lock);
    stop = writer.stop;
    pthread_mutex_unlock(&writer.lock);
    return stop;
}

/* ts: ms from now on the monotonic clock */
void deadline_in(struct timespec *ts, long ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

int deadline_passed(const struct timespec *ts)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > ts->tv_sec ||
           (now.tv_sec == ts->tv_sec && now.tv_nsec >= ts->tv_nsec);
}

/* appends a group of jobs, then one fsync for all of them */
static void write_batch(gd_job_t *batch)
{
    uint64_t added = 0, dups = 0;
    int failed = 0;

    for (gd_job_t *job = batch; job; job = job->next) {
        int rc =
            journal_once(job->record, job->rid, job->error, sizeof(job->error));

        job->ok = rc >= 0;
        job->duplicate = rc == 0;
        added += rc == 1;
        dups += rc == 0;
        failed |= rc < 0;
    }

    /* a duplicate is acknowledged once its first copy is durable: that
     * copy was synced by an earlier group, or is synced with this one */
    if (added > 0 && journal_sync() != 0) {
        journal_broken("fsync");
        for (gd_job_t *job = batch; job; job = job->next) {
            if (job->ok) {
                job->ok = 0;
                snprintf(job->error, sizeof(job->error), "fsync: %s",
                         strerror(errno));
            }
        }
        added = dups = 0;
        failed = 1;
    }

    if (failed) {
        for (gd_job_t *job = batch; job; job = job->next) {
            if (!job->ok) {
                logmsg("error", "journal: %s", job->error);
                break;
            }
        }
    }

    pthread_mutex_lock(&writer.lock);
    writer.commits++;
    writer.records += added;
    writer.duplicates += dups;
    *writer.done_tail = batch;
    while (*writer.done_tail) {
        writer.done_tail = &(*writer.done_tail)->next;
    }
    pthread_mutex_unlock(&writer.lock);

    uint64_t one = 1;
    if (write(writer.acks.fd, &one, sizeof(one)) < 0) {
        logmsg("error", "eventfd: %s", strerror(errno));
    }
}

static void *writer_main(void *arg)
{
    struct timespec spill_due;

    (void)arg;

    pthread_setname_np(pthread_self(), "gd-writer");

    /* the first spill round at once */
    deadline_in(&spill_due, 0);

    pthread_mutex_lock(&writer.lock);

    for (;;) {
        int spill_now = conf.spill != NULL && deadline_passed(&spill_due);

        while (writer.todo == NULL && !writer.stop && !spill_now) {
            if (conf.spill == NULL) {
                pthread_cond_wait(&writer.cond, &writer.lock);
            } else {
                pthread_cond_timedwait(&writer.cond, &writer.lock, &spill_due);
                spill_now = deadline_passed(&spill_due);
            }
        }

        if (writer.todo == NULL && writer.stop) {
            break;
        }

        if (writer.todo != NULL) {
            /* take everything queued: one fsync for the whole group */
            gd_job_t *batch = writer.todo;
            writer.todo = NULL;
            writer.todo_tail = &writer.todo;
            pthread_mutex_unlock(&writer.lock);
            write_batch(batch);
            pthread_mutex_lock(&writer.lock);
        }

        /* one spill file per round, between groups: never starved by a
         * steady flow of AUDITs, nor holding them up for more than a file */
        if (spill_now && !writer.stop) {
            pthread_mutex_unlock(&writer.lock);
            int more = spill_round();
            deadline_in(&spill_due, more ? 0 : GD_SPILL_INTERVAL_MS);
            pthread_mutex_lock(&writer.lock);
        }
    }

    pthread_mutex_unlock(&writer.lock);
    return NULL;
}

/* hands a masked record with the id rid to the writer; conn 0: nobody
 * waits for an ACK */
int journal_enqueue(uint64_t conn, uint32_t id, json_t *record,
                    const uint8_t rid[GD_AUDIT_ID_LEN])
{
    gd_job_t *job = calloc(1, sizeof(gd_job_t));

    if (job == NULL) {
        return -1;
    }

    job->conn = conn;
    job->id = id;
    job->record = json_incref(record);
    memcpy(job->rid, rid, GD_AUDIT_ID_LEN);

    pthread_mutex_lock(&writer.lock);
    *writer.todo_tail = job;
    writer.todo_tail = &job->next;
    pthread_cond_signal(&writer.cond);
    pthread_mutex_unlock(&writer.lock);

    return 0;
}

/* ACKs for what the writer made durable */
void deliver_acks(void)
{
    uint64_t count;
    gd_job_t *done;

    if (read(writer.acks.fd, &count, sizeof(count)) < 0 && errno != EAGAIN) {
        logmsg("error", "eventfd: %s", strerror(errno));
    }

    pthread_mutex_lock(&writer.lock);
    done = writer.done;
    writer.done = NULL;
    writer.done_tail = &writer.done;
    pthread_mutex_unlock(&writer.lock);

    while (done) {
        gd_job_t *next = done->next;
        gd_conn_t *c = conn_find(done->conn);

        if (c) {
            /* {"id", "hash"}, or {"id", "duplicate": true} */
            json_t *p = json_object();
            int rc;

            /* member by member (json_pack parses its format each time) */
            if (p) {
                json_object_set_nocheck(p, "id",
                                        json_object_get(done->record, "id"));
            }
            if (p && done->ok) {
                json_object_set_nocheck(
                    p, done->duplicate ? "duplicate" : "hash",
                    done->duplicate ? json_true()
                                    : json_object_get(done->record, "hash"));
            }
            rc = p == NULL
                     ? conn_error(c, done->id, "unavailable", "out of memory")
                 : done->ok
                     ? conn_send(c, GD_FRAME_ACK, done->id, p)
                     : conn_error(c, done->id, "unavailable", done->error);
            json_decref(p);
            if (rc != 0) {
                /* closed by the read handler, when it sees the end */
                shutdown(c->watch.fd, SHUT_RDWR);
            }
        }

        json_decref(done->record);
        free(done);
        done = next;
    }

    for (gd_conn_t *c = conns; c; c = c->next) {
        if (c->out_len > 0 && conn_flush(c) != 0) {
            shutdown(c->watch.fd, SHUT_RDWR);
        }
    }
}

/* the listening socket */

/* one id of the journal into the dedupe set */
static void seed_id(const char *text, size_t len, void *arg)
{
    uint8_t rid[GD_AUDIT_ID_LEN];

    if (gd_audit_id_parse(text, len, rid) == 0) {
        gd_idset_add(arg, rid);
    }
}

/*
 * Opens the journal: a torn last line dropped, what a killed guardd left
 * in the page cache made durable, and the dedupe set seeded with the
 * journal's last ids.
 */
int journal_open(void)
{
    char err[256];

    writer.journal =
        gd_journal_open(conf.journal_dir, conf.segment_size, err, sizeof(err));
    if (writer.journal == NULL) {
        logmsg("emerg", "journal: %s", err);
        return -1;
    }
    {
        const char *seg;
        uint64_t line;
        size_t torn = gd_journal_torn(writer.journal, &seg, &line);

        /* never its content: it may hold anything */
        if (torn > 0) {
            logmsg("warn",
                   "journal: dropped a torn last line (%s line %llu, %zu "
                   "bytes): a write cut off by a crash, never acknowledged",
                   seg, (unsigned long long)line, torn);
        }
    }

    /* what a killed guardd wrote but did not fsync is in the page cache:
     * durable from here, before its ids count as journaled */
    if (gd_journal_sync(writer.journal) != 0) {
        logmsg("emerg", "journal: fsync: %s", strerror(errno));
        return -1;
    }

    writer.seen = gd_idset_new(conf.dedupe_window);
    if (writer.seen == NULL) {
        logmsg("emerg", "out of memory for a dedupe window of %zu",
               conf.dedupe_window);
        return -1;
    }
    long seeded = gd_journal_recent_ids(conf.journal_dir, conf.dedupe_window,
                                        seed_id, writer.seen, err, sizeof(err));
    if (seeded < 0) {
        logmsg("emerg", "journal: %s", err);
        return -1;
    }
    logmsg("info",
           "dedupe: the last %zu ids of the journal remembered (window %zu)",
           gd_idset_count(writer.seen), conf.dedupe_window);
    return 0;
}

static void acks_handler(gd_watch_t *w, uint32_t events)
{
    (void)w;
    (void)events;
    deliver_acks();
}

/* starts the writer thread (after loop_init: signals stay blocked in
 * it), its eventfd in the loop */
int writer_start(void)
{
    pthread_mutex_init(&writer.lock, NULL);
    {
        /* the writer's spill rounds wait on the monotonic clock */
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&writer.cond, &ca);
        pthread_condattr_destroy(&ca);
    }
    writer.todo_tail = &writer.todo;
    writer.done_tail = &writer.done;
    writer.acks.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    writer.acks.handler = acks_handler;

    if (writer.acks.fd < 0 ||
        pthread_create(&writer_thread, NULL, writer_main, NULL) != 0) {
        return -1;
    }

    loop_add(&writer.acks, EPOLLIN);
    return 0;
}

/* what is queued is written, then the thread ends */
void writer_stop(void)
{
    pthread_mutex_lock(&writer.lock);
    writer.stop = 1;
    pthread_cond_signal(&writer.cond);
    pthread_mutex_unlock(&writer.lock);
    pthread_join(writer_thread, NULL);
}

/* after writer_stop and the last ACKs: the journal closed */
void writer_close(void)
{
    gd_journal_close(writer.journal);
    logmsg("notice",
           "stopped: %llu records in %llu group commits, %llu duplicates, "
           "%llu records from %llu spill files",
           (unsigned long long)writer.records,
           (unsigned long long)writer.commits,
           (unsigned long long)writer.duplicates,
           (unsigned long long)writer.spill_records,
           (unsigned long long)writer.spill_files);
    gd_idset_free(writer.seen);
    for (size_t i = 0; i < writer.spill_nstuck; i++) {
        free(writer.spill_stuck[i]);
    }
    free(writer.spill_stuck);
}
