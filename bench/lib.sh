# bench/lib.sh: what every benchmark shares.  Source it, then:
#   bench_init                    temp dir, port, keys, CPU pinning
#   bench_mint SPEC...            tokens from JSON specs (t/tools/jwt_tool.py)
#   bench_conf_head               the common start of nginx.conf
#   bench_start                   start nginx with $dir/nginx.conf
#   bench_check NAME URL HDRS...  the variant must answer 200
#   bench_run                     A/B interleaved wrk rounds over $variants
#   bench_report BASE             medians and ratios to variant BASE
#
# A variant is a name in $variants; its URL is url_NAME and its extra
# wrk arguments are in args_NAME (set with bench_variant).
# Environment: ROUNDS (5), DURATION (3s), CONNS (32), KEEP (keep the dir).

set -euo pipefail

bench_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$bench_here")
module=${GUARD_MODULE:-$repo/build/ngx_http_guard_module.so}
nginx=${GUARD_NGINX:-/usr/sbin/nginx}
rounds=${ROUNDS:-5}
duration=${DURATION:-3s}
conns=${CONNS:-32}
py=/usr/bin/python3
variants=""

declare -A bench_url bench_args bench_runs bench_med

bench_cleanup() {
    [ -f "$dir/nginx.pid" ] && kill -QUIT "$(cat "$dir/nginx.pid")" 2>/dev/null
    if [ -n "${KEEP:-}" ]; then
        echo "kept $dir" >&2
        return
    fi
    sleep 0.3
    rm -rf "$dir"
}

bench_init() {
    [ -f "$module" ] || { echo "build the module first: make" >&2; exit 1; }
    command -v wrk >/dev/null || { echo "wrk is missing: make setup" >&2; exit 1; }

    dir=$(mktemp -d /tmp/guard-bench.XXXXXX)
    chmod 755 "$dir"
    trap bench_cleanup EXIT

    port=$($py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    $py "$repo/t/tools/jwt_tool.py" keys "$dir/keys" >/dev/null

    affinity=""
    wrk_pin=""
    if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
        affinity="worker_cpu_affinity 01;"
        wrk_pin="taskset -c 1"
    fi

    now=$(date +%s)
}

# bench_mint '{"kid":"hs256","claims":{...}}' ...: one token per line
bench_mint() {
    printf '%s\n' "$@" | sed "s|\"kid\":\"\([a-z0-9]*\)\"|\"kid\":\"\1\",\"key\":\"$dir/keys/\1.KEYEXT\"|" \
        | sed 's|\(hs[0-9]*\)\.KEYEXT|\1.key|; s|\.KEYEXT|.pem|' \
        | $py "$repo/t/tools/jwt_tool.py" mint
}

# bench_alg_tokens ALG...: tok[ALG] a token of each key (hs256, rs256,
# es256, ed25519, ...) for tenant acme, valid for a day
declare -A tok
bench_alg_tokens() {
    local k a i=0 t specs=() names=("$@")
    for k in "$@"; do
        a=$(echo "$k" | tr a-z A-Z); [ "$k" = ed25519 ] && a=EdDSA
        specs+=("{\"kid\":\"$k\",\"alg\":\"$a\",\"claims\":{\"sub\":\"bench\",\"tenant_id\":\"acme\",\"exp\":$((now + 86400))}}")
    done
    while read -r t; do
        tok[${names[$i]}]=$t; i=$((i + 1))
    done < <(bench_mint "${specs[@]}")
}

# the start of every bench nginx.conf, up to the inside of http { }
bench_conf_head() {
    cat <<CONF
load_module $module;
worker_processes 1;
$affinity
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/tmp;
    proxy_temp_path $dir/tmp;
    fastcgi_temp_path $dir/tmp;
    uwsgi_temp_path $dir/tmp;
    scgi_temp_path $dir/tmp;
    keepalive_requests 1000000;
CONF
}

bench_start() {
    "$nginx" -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log"
    sleep 0.5
}

# bench_variant NAME PATH [wrk -H arguments...]
bench_variant() {
    local name=$1 path=$2
    shift 2
    variants="$variants $name"
    bench_url[$name]="http://127.0.0.1:$port$path"
    bench_args[$name]=""
    local h
    for h in "$@"; do
        bench_args[$name]+=" -H $(printf '%q' "$h")"
    done
}

bench_check() {
    local v code
    for v in $variants; do
        code=$(eval curl -s -o /dev/null -w '%{http_code}' \
            "${bench_args[$v]//-H/-H}" "${bench_url[$v]}")
        if [ "$code" != 200 ]; then
            echo "$v answered $code" >&2
            cat "$dir/error.log" >&2
            exit 1
        fi
    done
}

bench_run() {
    local r v rps
    for ((r = 1; r <= rounds; r++)); do
        for v in $variants; do
            rps=$(eval $wrk_pin wrk -t1 -c"$conns" -d"$duration" \
                "${bench_args[$v]}" "${bench_url[$v]}" \
                | awk '/^Requests\/sec/ {print $2}')
            bench_runs[$v]="${bench_runs[$v]:-} $rps"
        done
        echo "round $r/$rounds done" >&2
    done

    for v in $variants; do
        bench_med[$v]=$(echo "${bench_runs[$v]}" | tr ' ' '\n' | grep -v '^$' \
            | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}')
    done
}

# bench_report BASE [BASE2]: ratios of every variant's median to BASE's
bench_report() {
    local base=$1 base2=${2:-} v
    echo
    if [ -n "$base2" ]; then
        printf '%-18s %12s %12s   %s\n' variant "ratio:$base" "ratio:$base2" runs
    else
        printf '%-18s %12s   %s\n' variant "ratio:$base" runs
    fi
    for v in $variants; do
        printf '%-18s %12.3f' "$v" "$(echo "${bench_med[$v]} / ${bench_med[$base]}" | bc -l)"
        [ -n "$base2" ] && printf ' %12.3f' "$(echo "${bench_med[$v]} / ${bench_med[$base2]}" | bc -l)"
        printf '   %s\n' "$(echo "${bench_runs[$v]}" | awk '{for(i=1;i<=NF;i++) printf "%.0f ", $i}')"
    done
}

bench_ratio() {
    echo "${bench_med[$1]} / ${bench_med[$2]}" | bc -l
}

bench_errlog_clean() {
    if grep -E '\[(alert|emerg|crit)\]' "$dir/error.log"; then
        exit 1
    fi
}
