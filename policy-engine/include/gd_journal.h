/*
 * gd_journal: the tamper-evident audit journal.
 *
 * Segment files of JSON lines, journal-NNNNNN.jsonl, in one directory.
 * Every record carries "prev_hash", the "hash" of the record before it
 * (64 zeros for the first), and "hash" = SHA-256 of the previous hash
 * followed by the record's canonical form (compact JSON, keys sorted,
 * without "hash").  Changing, removing or reordering any record breaks
 * the chain from there on.
 *
 * The journal is not thread-safe: guardd appends from its writer thread,
 * which also decides when to sync (group commit).
 */
#ifndef GD_JOURNAL_H
#define GD_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define GD_JOURNAL_HASH_LEN 64

typedef struct gd_journal_s gd_journal_t;

/*
 * Opens (creating if needed) the journal in dir, continuing the chain of
 * its last record.  Segments rotate when they reach segment_max bytes.
 * NULL with err set on failure (including a last segment whose last
 * record cannot be read: the journal is not extended past damage).
 *
 * A torn tail (the bytes after the last newline of the last segment that
 * has one, and any later segment holding no newline: a write cut off by a
 * crash, never acknowledged) is truncated away; gd_journal_torn() says
 * what was dropped.
 */
gd_journal_t *gd_journal_open(const char *dir, size_t segment_max, char *err,
                              size_t errlen);

/*
 * The bytes of a torn tail that gd_journal_open() dropped (0 when there
 * was none); *segment and *line (1-based) name where it began.
 */
size_t gd_journal_torn(const gd_journal_t *j, const char **segment,
                       uint64_t *line);

/*
 * Appends rec (an object; "prev_hash" and "hash" are set in it) as one
 * line.  The line is written but not synced.  Returns 0 or -1 (err set).
 */
int gd_journal_append(gd_journal_t *j, json_t *rec, char *err, size_t errlen);

/* fsync()s what was appended.  Returns 0 or -1. */
int gd_journal_sync(gd_journal_t *j);

/*
 * The open segment's number and its size in bytes, lines appended but
 * not yet synced included: right after gd_journal_sync() succeeded, every
 * segment before it and its first *size bytes are durable.  (guardd's
 * sinks read the journal up to there.)
 */
void gd_journal_position(const gd_journal_t *j, unsigned *segment,
                         size_t *size);

/* The hash of the last record (64 zeros when empty). */
const char *gd_journal_last_hash(const gd_journal_t *j);

void gd_journal_close(gd_journal_t *j);

/*
 * Computes the hash of rec chained to prev_hash into out (65 bytes).
 * Returns 0 or -1.
 */
int gd_journal_hash(const json_t *rec, const char *prev_hash, char *out);

/*
 * Reads every record of the journal in dir, in chain order (segments by
 * number, lines in order), and calls cb with each (a borrowed reference),
 * its segment file name and its line (1-based).  cb returns 0 to go on,
 * anything else to stop (gd_journal_scan returns it).  Lines that are
 * not JSON objects are skipped and counted in *skipped (which may be
 * NULL).  Returns 0, cb's value, or -1 with err set when dir or a
 * segment cannot be read.  (guardctl's SOC commands read with it.)
 */
typedef int (*gd_journal_record_cb)(json_t *rec, const char *segment,
                                    uint64_t line, void *arg);

int gd_journal_scan(const char *dir, gd_journal_record_cb cb, void *arg,
                    uint64_t *skipped, char *err, size_t errlen);

typedef struct {
    uint64_t records;
    char segment[256]; /* the first bad record's segment, or "" */
    uint64_t line;     /* and its line (1-based) */
    char reason[256];
    uint64_t torn_bytes; /* a torn tail's size (segment and line name it) */
} gd_journal_report_t;

/*
 * Walks the chain of every segment from from_segment (a file name, or
 * NULL for the first).  Returns 0 when the chain is intact, 1 when a
 * record is bad (report names the first one), 2 when every whole record
 * is intact but the journal ends in a torn tail (the one gd_journal_open
 * drops: report names where it begins and its size), -1 when the journal
 * cannot be read (report->reason says why).
 */
int gd_journal_verify(const char *dir, const char *from_segment,
                      gd_journal_report_t *report);

/* called with each id (its NUL-terminated text and length) */
typedef void (*gd_journal_id_cb)(const char *id, size_t len, void *arg);

/*
 * Yields to cb the "id" members (strings) of the newest max records of
 * the journal in dir that have one, oldest first: the segments are read
 * from the newest back until max ids were found.  A line that is not a
 * whole record (a torn last line, damage: see gd_journal_verify) is
 * skipped.  Returns how many ids were yielded, or -1 (err set) when the
 * journal cannot be read.
 */
long gd_journal_recent_ids(const char *dir, size_t max, gd_journal_id_cb cb,
                           void *arg, char *err, size_t errlen);

#endif
