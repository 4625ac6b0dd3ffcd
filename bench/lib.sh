# bench/lib.sh: what every benchmark shares.  Source it, then:
#   bench_init                    temp dir, port, keys, CPU pinning
#   bench_mint SPEC...            tokens from JSON specs (t/tools/jwt_tool.py)
#   bench_policy TENANT [concurrency]  a policy whose limits never trip
#   bench_conf_head               the common start of nginx.conf
#   bench_conf_upstream           guard's keys and policies, upstream "up"
#   bench_start                   start nginx with $dir/nginx.conf
#   bench_check NAME URL HDRS...  the variant must answer 200
#   bench_run                     A/B interleaved wrk rounds over $variants
#   bench_report BASE [BASE2]     medians and ratios to variant BASE
#   bench_derived LABEL A B       the ratio A / B, and the baseline's
#   bench_no_baseline             ignore BASELINE_MODULE
#   bench_post NAME FILE CT       the variant sends POSTs of FILE's bytes
#
# A variant is a name in $variants; its URL is bench_url[NAME] and its
# extra wrk arguments are in bench_args[NAME] (set with bench_variant);
# a POST variant's wrk script and curl arguments are in bench_wrk_extra
# and bench_curl_extra (set with bench_post).
# Environment: ROUNDS (5), DURATION (3s), CONNS (32), KEEP (keep the dir),
# GUARD_MODULE (the module, default build/ngx_http_guard_module.so).
#
# BASELINE_MODULE=/path/to/old/ngx_http_guard_module.so: bench_start also
# starts a second nginx, the baseline, from the same nginx.conf with that
# module, its own port, pid file and error log (and what the script adds
# to bench_base_sed, a sed script).  bench_run then measures every variant
# on both, one right after the other, alternating which goes first, and
# the report adds the baseline's ratios and current / baseline.  Both run
# on the same CPU (worker_cpu_affinity), one at a time.

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
baseline=${BASELINE_MODULE:-}
bench_base_sed=""
# the suffixes of the instances: "" the current module, "@base" the baseline
bench_inst=("")
[ -z "$baseline" ] || bench_inst+=("@base")

# bench_runs and bench_med are keyed by NAME, and by NAME@base for the
# baseline's
declare -A bench_url bench_args bench_runs bench_med bench_pair
declare -A bench_wrk_extra bench_curl_extra

bench_cleanup() {
    [ -f "$dir/nginx.pid" ] && kill -QUIT "$(cat "$dir/nginx.pid")" 2>/dev/null
    [ -f "$dir/base/nginx.pid" ] \
        && kill -QUIT "$(cat "$dir/base/nginx.pid")" 2>/dev/null
    if [ -n "${KEEP:-}" ]; then
        echo "kept $dir" >&2
        return
    fi
    sleep 0.3
    rm -rf "$dir"
}

bench_init() {
    [ -f "$module" ] || { echo "build the module first: make" >&2; exit 1; }
    if [ -n "$baseline" ] && [ ! -f "$baseline" ]; then
        echo "BASELINE_MODULE $baseline: no such file" >&2
        exit 1
    fi
    command -v wrk >/dev/null || { echo "wrk is missing: make setup" >&2; exit 1; }

    dir=$(mktemp -d /tmp/guard-bench.XXXXXX)
    chmod 755 "$dir"
    trap bench_cleanup EXIT

    port=$(bench_free_port)
    base_port=$(bench_free_port)
    $py "$repo/t/tools/jwt_tool.py" keys "$dir/keys" >/dev/null

    affinity=""
    wrk_pin=""
    if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
        affinity="worker_cpu_affinity 01;"
        wrk_pin="taskset -c 1"
    fi

    now=$(date +%s)
}

bench_free_port() {
    $py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# bench_mint '{"kid":"hs256","claims":{...}}' ...: one token per line
bench_mint() {
    printf '%s\n' "$@" | sed "s|\"kid\":\"\([a-z0-9]*\)\"|\"kid\":\"\1\",\"key\":\"$dir/keys/\1.KEYEXT\"|" \
        | sed 's|\(hs[0-9]*\)\.KEYEXT|\1.key|; s|\.KEYEXT|.pem|' \
        | $py "$repo/t/tools/jwt_tool.py" mint
}

# bench_policy TENANT [concurrency]: $dir/policies/TENANT.json with a rate
# rule that never trips (and a concurrency limit that never trips)
bench_policy() {
    local conc=""
    [ "${2:-}" != concurrency ] || conc=',
    "concurrency": {"max": 1000000}'
    mkdir -p "$dir/policies"
    cat > "$dir/policies/$1.json" <<JSON
{
  "tenant": "$1",
  "limits": {
    "rate": [
      {"name": "api", "requests": 1000000000, "period": "1s",
       "burst": 1000}
    ]$conc
  }
}
JSON
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

# after bench_conf_head: guard's keys, policies and tenant (X-Tenant-Id),
# and the upstream "up": this server over keepalive connections
bench_conf_upstream() {
    cat <<CONF

    guard_jwt_keys $dir/keys/jwks.json;
    guard_policies $dir/policies;
    guard_tenant \$http_x_tenant_id;

    proxy_http_version 1.1;
    proxy_set_header Connection "";

    upstream up {
        server 127.0.0.1:$port;
        keepalive 1024;
    }
CONF
}

bench_start() {
    "$nginx" -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log"
    if [ -n "$baseline" ]; then
        mkdir -p "$dir/base"
        sed -e "s|^load_module $module;|load_module $baseline;|" \
            -e "s|^pid $dir/nginx.pid;|pid $dir/base/nginx.pid;|" \
            -e "s|^error_log $dir/error.log |error_log $dir/base/error.log |" \
            -e "s|127\.0\.0\.1:$port\([;/ ]\)|127.0.0.1:$base_port\1|g" \
            -e "$bench_base_sed" \
            "$dir/nginx.conf" > "$dir/base/nginx.conf"
        grep -q "^load_module $baseline;" "$dir/base/nginx.conf" \
            || { echo "cannot make the baseline's nginx.conf" >&2; exit 1; }
        "$nginx" -p "$dir/base/" -c "$dir/base/nginx.conf" \
            -e "$dir/base/error.log"
    fi
    sleep 0.5
}


# bench_variant NAME PATH [wrk -H arguments...]
bench_variant() {
    local name=$1 path=$2
    shift 2
    variants="$variants $name"
    bench_url[$name]="http://127.0.0.1:$port$path"
    bench_url[$name@base]="http://127.0.0.1:$base_port$path"
    bench_args[$name]=""
    local h
    for h in "$@"; do
        bench_args[$name]+=" -H $(printf '%q' "$h")"
    done
}

# bench_post NAME FILE CONTENT_TYPE: variant NAME (bench_variant first)
# sends POST requests with FILE's bytes as the body: a wrk Lua script
# (wrk -s) and the same body for bench_check's curl
bench_post() {
    local lua=$dir/post-$1.lua
    cat > "$lua" <<LUA
wrk.method = "POST"
local f = assert(io.open("$2", "rb"))
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "$3"
LUA
    bench_wrk_extra[$1]=" -s $(printf '%q' "$lua")"
    bench_curl_extra[$1]=" --data-binary @$(printf '%q' "$2") -H $(printf '%q' "Content-Type: $3")"
}

bench_check() {
    local v i code
    for v in $variants; do
        for i in "${bench_inst[@]}"; do
            code=$(eval curl -s -o /dev/null -w '%{http_code}' \
                "${bench_args[$v]}" "${bench_curl_extra[$v]:-}" \
                "${bench_url[$v$i]}")
            if [ "$code" != 200 ]; then
                echo "$v$i answered $code" >&2
                cat "$dir/error.log" >&2
                [ -z "$i" ] || cat "$dir/base/error.log" >&2
                exit 1
            fi
        done
    done
}

# bench_wrk URL ARGS: one wrk run, req/s (answers other than 2xx or 3xx,
# which would make the rate meaningless, are said on stderr)
bench_wrk() {
    eval $wrk_pin wrk -t1 -c"$conns" -d"$duration" "$2" "$1" \
        | awk -v url="$1" '/^Requests\/sec/ {print $2}
            /Non-2xx or 3xx responses/ {
                print url ": " $NF " answers not 2xx or 3xx" > "/dev/stderr" }'
}

bench_run() {
    local r v i rps
    local -a order
    for ((r = 1; r <= rounds; r++)); do
        # with a baseline, odd rounds measure it second, even rounds first
        order=("${bench_inst[@]}")
        ((r % 2)) || order=("${order[@]:1}" "${order[0]}")
        for v in $variants; do
            for i in "${order[@]}"; do
                rps=$(bench_wrk "${bench_url[$v$i]}" \
                    "${bench_args[$v]}${bench_wrk_extra[$v]:-}")
                bench_runs[$v$i]="${bench_runs[$v$i]:-} $rps"
            done
        done
        echo "round $r/$rounds done" >&2
    done

    for v in $variants; do
        for i in "${bench_inst[@]}"; do
            bench_med[$v$i]=$(echo "${bench_runs[$v$i]}" | bench_median)
        done
        # current / baseline: the median of the rounds' ratios, each of
        # two runs made one right after the other, so that load that
        # comes and goes on the machine weighs on both sides of a ratio
        [ -z "$baseline" ] \
            || bench_pair[$v]=$(bench_round_ratios "$v" "$v@base" | bench_median)
    done
}

# bench_round_ratios A B: A's req/s over B's, one line per round
bench_round_ratios() {
    paste -d' ' <(echo "${bench_runs[$1]}" | tr ' ' '\n' | grep -v '^$') \
        <(echo "${bench_runs[$2]}" | tr ' ' '\n' | grep -v '^$') \
        | awk '{print $1 / $2}'
}

# the median of the numbers on stdin (separated by blanks or lines)
bench_median() {
    tr ' ' '\n' | grep -v '^$' | sort -g \
        | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'
}

# bench_report BASE [BASE2]: ratios of every variant's median to BASE's
# (and BASE2's); with a baseline, the baseline's own ratios to its BASE
# (and BASE2) and current / baseline (the median of the rounds' ratios)
bench_report() {
    local b v i runs w=12
    local -a bases=("$1") cols=()
    [ -z "${2:-}" ] || bases+=("$2")
    for b in "${bases[@]}"; do
        cols+=("ratio:$b")
        [ -z "$baseline" ] || cols+=("base:$b")
    done
    [ -z "$baseline" ] || cols+=("cur/base")
    for b in "${cols[@]}"; do
        ((${#b} < w)) || w=$((${#b} + 1))
    done
    echo
    [ -z "$baseline" ] || echo "ratio: the current module, base: the baseline ($baseline)"
    printf '%-18s' variant
    printf " %${w}s" "${cols[@]}"
    printf '   runs%s\n' "${baseline:+ (current | baseline)}"
    for v in $variants; do
        printf '%-18s' "$v"
        for b in "${bases[@]}"; do
            for i in "${bench_inst[@]}"; do
                printf " %${w}.3f" "$(bench_ratio "$v$i" "$b$i")"
            done
        done
        [ -z "$baseline" ] || printf " %${w}.3f" "${bench_pair[$v]}"
        runs=""
        for i in "${bench_inst[@]}"; do
            runs+="${runs:+| }$(echo "${bench_runs[$v$i]}" \
                | awk '{for(i=1;i<=NF;i++) printf "%.0f ", $i}')"
        done
        printf '   %s\n' "$runs"
    done
}

# for a script that cannot run a baseline next to its own setup
bench_no_baseline() {
    [ -z "$baseline" ] || echo "$(basename "$0"): no baseline run (BASELINE_MODULE ignored)" >&2
    baseline=""
    bench_inst=("")
}

# bench_ratio A B: the ratio of the medians of A and B (NAME or NAME@base)
bench_ratio() {
    echo "${bench_med[$1]} / ${bench_med[$2]}" | bc -l
}

# bench_derived LABEL A B: "LABEL: A / B = 0.950" for the current module
# (the ratio of the medians); with a baseline, the baseline's too, and
# cur/base: the median over the rounds of the current module's A / B over
# the baseline's in the same round
bench_derived() {
    local cur base
    cur=$(bench_ratio "$2" "$3")
    if [ -z "$baseline" ]; then
        printf '%s: %s / %s = %.3f\n' "$1" "$2" "$3" "$cur"
        return
    fi
    base=$(bench_ratio "$2@base" "$3@base")
    printf '%s: %s / %s = %.3f, baseline %.3f, cur/base %.3f\n' "$1" "$2" \
        "$3" "$cur" "$base" "$(paste -d' ' <(bench_round_ratios "$2" "$3") \
            <(bench_round_ratios "$2@base" "$3@base") \
            | awk '{print $1 / $2}' | bench_median)"
}

bench_errlog_clean() {
    local f
    for f in "$dir/error.log" ${baseline:+"$dir/base/error.log"}; do
        [ -e "$f" ] || continue
        if grep -E '\[(alert|emerg|crit)\]' "$f"; then
            exit 1
        fi
    done
}
