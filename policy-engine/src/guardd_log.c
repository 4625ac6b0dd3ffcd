/* guardd: log lines on stderr, and conditions logged once in a while */
#define _GNU_SOURCE

#include "guardd.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int verbose = 1;

void logmsg(const char *level, const char *fmt, ...)
{
    char ts[32];
    time_t now = time(NULL);
    struct tm tm;
    va_list ap;

    if (!verbose && strcmp(level, "info") == 0) {
        return;
    }

    gmtime_r(&now, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);

    /* one line at a time: the loop and the writer thread both log */
    flockfile(stderr);
    fprintf(stderr, "%s guardd[%d] %s: ", ts, (int)getpid(), level);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    funlockfile(stderr);
}

/* 1 when a line about e is due: the first, then one per GD_LOG_EVERY_MS;
 * *more is how many times it happened unlogged since the last line */
int every_due(gd_every_t *e, uint64_t *more)
{
    e->count++;
    if (e->logged && now_ms - e->last_ms < GD_LOG_EVERY_MS) {
        return 0;
    }
    *more = e->count - 1;
    e->count = 0;
    e->last_ms = now_ms;
    e->logged = 1;
    return 1;
}
