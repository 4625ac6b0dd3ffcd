#!/usr/bin/env bash
# bench/baseline.sh REV DIR: builds the module and the release guardd of
# the git revision REV (a commit, a branch: main) into DIR, for the
# benchmarks' BASELINE_MODULE and BASELINE_GUARDD (bench/lib.sh):
#
#   DIR/ngx_http_guard_module.so   the module, as `make module` builds it
#   DIR/guardd                     the optimized guardd
#   DIR/COMMIT                     the commit they were built from
#   DIR/src                        its source tree (git archive) and build
#
# The source comes from git (committed changes only); the working tree is
# not touched.

set -euo pipefail

[ $# -eq 2 ] || { echo "usage: $0 REV DIR" >&2; exit 2; }
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
commit=$(git -C "$repo" rev-parse --verify "$1^{commit}")
out=$2

mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -rf "$out/src"
mkdir "$out/src"
git -C "$repo" archive "$commit" | tar -x -C "$out/src"

if ! { make -C "$out/src" module \
        && make -C "$out/src/policy-engine" release; } > "$out/build.log" 2>&1; then
    tail -30 "$out/build.log" >&2
    exit 1
fi

cp "$out/src/build/ngx_http_guard_module.so" "$out/ngx_http_guard_module.so.tmp"
mv -f "$out/ngx_http_guard_module.so.tmp" "$out/ngx_http_guard_module.so"
cp "$out/src/policy-engine/build/release/guardd" "$out/guardd.tmp"
mv -f "$out/guardd.tmp" "$out/guardd"
echo "$commit" > "$out/COMMIT"
echo "baseline $commit: $out/ngx_http_guard_module.so $out/guardd"
