#!/usr/bin/env bash
# bench/store.sh: the event sinks and the PostgreSQL store at scale.
#
#   1. the journal's own rate: STORE_RECORDS (default 1,000,000) synthetic
#      refusals appended through gd_journal with group commit (one fsync
#      per STORE_GROUP records, default 1024: what guardd's writer groups
#      when records arrive at that rate and an fsync takes ~10 ms), by
#      policy-engine/bench/journal_bench.c (the journal's own time:
#      append and sync; the time with making the records beside it);
#   2. guardd started on that journal with the Redis sink only (twice:
#      Redis's AOF with appendfsync everysec, then always), then with the
#      PostgreSQL sink only (a private redis-server and PostgreSQL
#      cluster, Unix sockets, as the tests run them): the time from guardd
#      ready (after its start-up, which reads the journal, printed beside)
#      until the sink's lag is 0, as records/s; and the CPU time guardd and
#      the server spent per record (steadier than the rate on a shared
#      machine);
#   3. with every record in PostgreSQL: `guardctl blocked --db DSN
#      --tenant T --since 1h` and `guardctl show ID --db DSN`, each the
#      median of 5 runs (a whole guardctl process: start, connect, query,
#      print).
# Prints each figure beside the goal of issue 13.  The machine is shared:
# quote the figures with that caveat.  STORE_BATCH: the sinks' batch
# (default 2000).  KEEP=1 keeps the directory.
#
# The servers are configured as an operator would run a store of this
# size, and the run prints their settings: PostgreSQL with shared_buffers
# 512MB (STORE_PG_SHARED_BUFFERS), max_wal_size 4GB
# (STORE_PG_MAX_WAL_SIZE), checkpoint_timeout 15min, wal_buffers 64MB
# (STORE_PG=harness: the tests' cluster instead, 64MB and PostgreSQL's
# defaults); Redis measured with the stream bounded as production runs it
# (sinks.redis "maxlen" STORE_MAXLEN, default 100000) and unbounded.
# STORE_SINKS=postgres (or redis) measures that sink alone;
# Redis's auto-aof-rewrite-min-size is 1gb (STORE_AOF_MIN_SIZE; Redis's
# default is 64mb), each run prints how many AOF rewrites Redis started
# during it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
make -s -C "$repo/policy-engine" build/release/guardd build/release/guardctl \
    build/release/journal_bench >&2
exec perl "$repo/bench/store.pl"
