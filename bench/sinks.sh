#!/usr/bin/env bash
# bench/sinks.sh: guardd's DECIDE p99 (decide_bench, as in bench/sidecar.sh)
# with its sinks off, both on, Redis down and PostgreSQL down, under a
# steady load of refusals; ratios to sinks off (goal <= 1.2).  See
# bench/sinks.pl.  SINKS_ROUNDS, SINKS_LOAD (AUDITs/s), SINKS_DECIDES.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# the release guardctl applies the migrations (Guard::Services)
make -s -C "$repo/policy-engine" release build/release/guardctl >&2
exec perl "$repo/bench/sinks.pl" "$@"
