/*
 * journal_bench: the journal's own append rate with group commit, and the
 * synthetic journal bench/store.sh loads into the sinks.
 *
 *   journal_bench DIR N [GROUP] [TENANTS]
 *
 * Appends N synthetic refusal records (TENANTS tenants t00, t01, ...,
 * default 20; times spread over the last 24 hours in journal order, as
 * guardd appends them, each a few milliseconds of jitter behind the
 * clock as records of several workers arrive; unique UUIDv7 ids of their
 * times) to
 * the journal in DIR through gd_journal, as guardd's writer does: one
 * fsync per GROUP records (default 256; 1: one per record).  Prints
 *   journal: N records in S s: R records/s (group commit of GROUP; ...)
 * where S is the time spent in the journal (gd_journal_append and
 * gd_journal_sync: what guardd's writer thread does), without the time
 * the bench takes to make its synthetic records (json_pack: in guardd,
 * the decision loop's work, not the writer's), which is printed too.
 * and one id per line on stderr for every 100000th record (for show ID).
 */
#include "gd_journal.h"
#include "gd_uuid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    static const char *reasons[] = {"rate_limited", "token_expired",
                                    "tenant_mismatch", "risk_deny",
                                    "token_invalid"};
    static const int statuses[] = {429, 401, 403, 403, 401};
    char err[512], id[64];
    gd_journal_t *j;
    long n, group, tenants;
    double t0, t, tj = 0, t1;
    struct timespec wall;
    long long now_ms;
    unsigned seed = 42;
    gd_uuid_gen_t gen;
    uint8_t raw[GD_UUID_LEN];

    if (argc < 3) {
        fprintf(stderr, "usage: journal_bench DIR N [GROUP] [TENANTS]\n");
        return 2;
    }
    n = atol(argv[2]);
    group = argc > 3 ? atol(argv[3]) : 256;
    tenants = argc > 4 ? atol(argv[4]) : 20;
    if (n <= 0 || group <= 0 || tenants <= 0) {
        fprintf(stderr, "journal_bench: N, GROUP and TENANTS must be > 0\n");
        return 2;
    }

    j = gd_journal_open(argv[1], 64 * 1024 * 1024, err, sizeof(err));
    if (j == NULL) {
        fprintf(stderr, "journal_bench: %s\n", err);
        return 1;
    }

    clock_gettime(CLOCK_REALTIME, &wall);
    now_ms = (long long)wall.tv_sec * 1000 + wall.tv_nsec / 1000000;

    gd_uuid_gen_init(&gen);
    t0 = now_s();
    for (long i = 0; i < n; i++) {
        int r = (int)(rand_r(&seed) % 5);
        long long ts_ms = now_ms - 86400000LL + 86400000LL * i / n -
                          (long long)(rand_r(&seed) % 20);
        char tenant[32], subject[32];
        json_t *rec;

        if (gd_uuid7_next(&gen, (uint64_t)ts_ms, raw) != 0) {
            fprintf(stderr, "journal_bench: no randomness\n");
            return 1;
        }
        gd_uuid_format(raw, id);
        id[GD_UUID_STRLEN] = '\0';
        snprintf(tenant, sizeof(tenant), "t%02ld", i % tenants);
        snprintf(subject, sizeof(subject), "u%d", rand_r(&seed) % 10000);
        rec = json_pack(
            "{s:s, s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:s, s:s, "
            "s:s}",
            "id", id, "ts_ms", (json_int_t)ts_ms, "tenant", tenant, "subject",
            subject, "client_ip", "10.0.0.1", "method", "GET", "route",
            "/api/orders", "stage", "jwt", "outcome", "deny", "status",
            statuses[r], "reason", reasons[r], "node", "bench", "source",
            "nginx");
        t1 = now_s();
        if (rec == NULL || gd_journal_append(j, rec, err, sizeof(err)) != 0) {
            fprintf(stderr, "journal_bench: %s\n", rec ? err : "json_pack");
            return 1;
        }
        if ((i + 1) % group == 0 && gd_journal_sync(j) != 0) {
            fprintf(stderr, "journal_bench: fsync failed\n");
            return 1;
        }
        tj += now_s() - t1;
        json_decref(rec);
        if (i % 100000 == 0) {
            fprintf(stderr, "%s\n", id);
        }
    }
    t1 = now_s();
    if (gd_journal_sync(j) != 0) {
        fprintf(stderr, "journal_bench: fsync failed\n");
        return 1;
    }
    tj += now_s() - t1;
    t = now_s() - t0;
    gd_journal_close(j);

    printf("journal: %ld records in %.2f s: %.0f records/s (group commit of "
           "%ld; %.2f s with making the records: %.0f records/s)\n",
           n, tj, (double)n / tj, group, t, (double)n / t);
    return 0;
}
