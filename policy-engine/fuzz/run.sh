#!/bin/sh
# Runs libFuzzer targets, each for a set time, from its committed seed
# corpus; prints executions and crashes per target; fails on any crash.
#
#   sh fuzz/run.sh SECONDS BUILD_DIR TARGET...    (from policy-engine/)
#
# New inputs go to BUILD_DIR/fuzz/TARGET/corpus (kept between runs), and a
# crashing input to BUILD_DIR/fuzz/TARGET/crash-* (the report: .../log).
set -u

secs=$1
build=$2
shift 2
failed=0

for t in "$@"; do
    work=$build/fuzz/$t
    mkdir -p "$work/corpus"
    rm -f "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*

    "$build/$t" -max_total_time="$secs" -print_final_stats=1 \
        -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$work/" "$work/corpus" "fuzz/corpus/$t" \
        > "$work/log" 2>&1
    rc=$?

    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" \
            | tail -n 1)
    crashes=$(find "$work" -maxdepth 1 \( -name 'crash-*' -o -name 'leak-*' \
              -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
    if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes=1
    fi

    printf '%-12s %12s executions in %s s, %s crashes\n' \
        "$t" "${execs:-?}" "$secs" "$crashes"

    if [ "$crashes" -ne 0 ]; then
        failed=1
        grep -m 1 -A 20 'ERROR\|runtime error\|deadly signal' "$work/log"
        echo "$t: see $work/log and $work/crash-*"
    fi
done

exit $failed
