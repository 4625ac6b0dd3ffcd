#!/usr/bin/env bash
# bench/callgrind.sh: instructions per request, counted by valgrind's
# callgrind on one nginx process (master_process off), for
#
#   plain           empty_gif, no guard
#   proxy           plain nginx proxy: proxy_pass over a keepalive
#                   connection to a backend (another nginx, not counted,
#                   answering with empty_gif)
#   jwt-cached      guard in front of the same proxy, a cached HS256 token,
#                   a tenant with no policy
#   full-cached     the full inline path in front of the proxy: cached
#                   HS256 token, tenant binding, a rate rule and a
#                   concurrency limit that never trip
#   hs256-uncached  `guard_jwt_cache off`: every request verifies its
#   rs256-uncached  token, per algorithm, in front of the proxy
#   ps256-uncached
#   es256-uncached
#   eddsa-uncached
#
# Each variant runs twice in a fresh nginx under callgrind: WARMUP requests
# (fill the caches, open the upstream connection), then WARMUP + COUNT on
# one keepalive connection; instructions per request = the difference of
# the two totals / COUNT.  Startup, shutdown and the warm-up cancel out.
# Unlike req/s, the counts are not disturbed by other load on the machine.
#
# Environment: COUNT (500), WARMUP (50), VARIANTS (all of the above),
# GUARD_MODULE; BASELINE_MODULE=/path/to/old/ngx_http_guard_module.so
# counts the baseline too and prints current / baseline.

. "$(dirname "$0")/lib.sh"

count=${COUNT:-500}
warmup=${WARMUP:-50}
all="plain proxy jwt-cached full-cached hs256-uncached rs256-uncached
     ps256-uncached es256-uncached eddsa-uncached"
cg_variants=${VARIANTS:-$all}

command -v valgrind >/dev/null \
    || { echo "valgrind is missing: sh scripts/setup.sh bench" >&2; exit 1; }

bench_init

bench_policy full concurrency

# the backend: a plain nginx of its own, outside valgrind
up_port=$(bench_free_port)
mkdir -p "$dir/up"
cat > "$dir/up/nginx.conf" <<CONF
worker_processes 1;
pid $dir/up/nginx.pid;
error_log $dir/up/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $dir/up;
    proxy_temp_path $dir/up;
    fastcgi_temp_path $dir/up;
    uwsgi_temp_path $dir/up;
    scgi_temp_path $dir/up;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$up_port;
        location / { empty_gif; }
    }
}
CONF
"$nginx" -p "$dir/up/" -c "$dir/up/nginx.conf" -e "$dir/up/error.log"
trap 'kill -QUIT "$(cat "$dir/up/nginx.pid")" 2>/dev/null; bench_cleanup' EXIT

declare -A tok tenant
claims() {
    echo "{\"kid\":\"$1\",\"alg\":\"$2\",\"claims\":{\"sub\":\"bench\",\"tenant_id\":\"$3\",\"exp\":$((now + 86400))}}"
}
read -r 'tok[jwt-cached]' 'tok[full-cached]' 'tok[hs256-uncached]' \
    'tok[rs256-uncached]' 'tok[ps256-uncached]' 'tok[es256-uncached]' \
    'tok[eddsa-uncached]' \
    < <(bench_mint "$(claims hs256 HS256 free)" "$(claims hs256 HS256 full)" \
        "$(claims hs256 HS256 free)" "$(claims rs256 RS256 free)" \
        "$(claims ps256 PS256 free)" "$(claims es256 ES256 free)" \
        "$(claims ed25519 EdDSA free)" \
        | paste -sd' ')
tok[plain]=${tok[jwt-cached]}
tok[proxy]=${tok[jwt-cached]}
for v in $all; do
    tenant[$v]=free
done
tenant[full-cached]=full

# cg_conf MODULE: nginx.conf with every variant's location
cg_conf() {
    local module=$1 v
    {
        bench_conf_head
        cat <<CONF

    guard_jwt_keys $dir/keys/jwks.json;
    guard_policies $dir/policies;
    guard_tenant \$http_x_tenant_id;

    upstream up {
        server 127.0.0.1:$up_port;
        keepalive 16;
    }
    proxy_http_version 1.1;
    proxy_set_header Connection "";

    server {
        listen 127.0.0.1:$port;

        location = /plain { empty_gif; }
        location = /proxy { proxy_pass http://up/up; }
        location = /jwt-cached { guard on; proxy_pass http://up/up; }
        location = /full-cached { guard on; proxy_pass http://up/up; }
CONF
        for v in hs256 rs256 ps256 es256 eddsa; do
            echo "        location = /$v-uncached {"
            echo "            guard on; guard_jwt_cache off; proxy_pass http://up/up;"
            echo "        }"
        done
        echo "    }"
        echo "}"
    } > "$dir/nginx.conf"
}

# cg_total VARIANT N: callgrind's instruction total for a fresh nginx that
# answers N requests of VARIANT on one connection and exits
cg_total() {
    local v=$1 n=$2 out=$dir/cg.$1.$2 pid i codes
    rm -f "$dir/nginx.pid" "$out"
    valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$nginx" -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log" \
        -g 'daemon off; master_process off;' 2> "$dir/valgrind.log" &
    pid=$!
    for ((i = 0; i < 600; i++)); do
        [ -s "$dir/nginx.pid" ] || ! kill -0 "$pid" 2>/dev/null && break
        sleep 0.1
    done
    if [ ! -s "$dir/nginx.pid" ]; then
        kill "$pid" 2>/dev/null
        cat "$dir/error.log" >&2
        return 1
    fi

    {
        echo "header = \"Authorization: Bearer ${tok[$v]}\""
        echo "header = \"X-Tenant-Id: ${tenant[$v]}\""
        echo 'write-out = "%{http_code}\n"'
        for ((i = 0; i < n; i++)); do
            echo "url = \"http://127.0.0.1:$port/$v\""
            echo 'output = "/dev/null"'
        done
    } > "$dir/curl.conf"
    codes=$(curl -s -K "$dir/curl.conf" | grep -c '^200$' || true)

    kill -QUIT "$pid"
    wait "$pid" || true
    rm -f "$dir/nginx.pid"
    if [ "$codes" != "$n" ]; then
        echo "$v: $codes of $n requests answered 200" >&2
        cat "$dir/error.log" >&2
        return 1
    fi
    awk '/^(summary|totals):/ {print $2; exit}' "$out"
}

# cg_count VARIANT: instructions per request
cg_count() {
    local a b
    a=$(cg_total "$1" "$warmup") && b=$(cg_total "$1" $((warmup + count))) \
        && [ -n "$a" ] && [ -n "$b" ] || return 1
    echo $(((b - a) / count))
}

declare -A ir
for m in "$module" ${baseline:+"$baseline"}; do
    cg_conf "$m"
    for v in $cg_variants; do
        ir[$v$m]=$(cg_count "$v") || { echo "$v: cannot count" >&2; exit 1; }
        echo "$v: ${ir[$v$m]} instructions per request ($m)" >&2
    done
done

echo
echo "Instructions per request (callgrind, 1 nginx process, $count requests after $warmup)"
echo "module: $module"
[ -z "$baseline" ] || echo "baseline: $baseline"
printf '%-16s %12s %10s' variant instr "x proxy"
[ -z "$baseline" ] || printf ' %12s %10s %10s' base:instr "base:x prx" cur/base
echo
for v in $cg_variants; do
    printf '%-16s %12d' "$v" "${ir[$v$module]}"
    if [ -n "${ir[proxy$module]:-}" ]; then
        printf ' %10.3f' "$(echo "${ir[$v$module]} / ${ir[proxy$module]}" | bc -l)"
    else
        printf ' %10s' -
    fi
    if [ -n "$baseline" ]; then
        printf ' %12d' "${ir[$v$baseline]}"
        if [ -n "${ir[proxy$baseline]:-}" ]; then
            printf ' %10.3f' "$(echo "${ir[$v$baseline]} / ${ir[proxy$baseline]}" | bc -l)"
        else
            printf ' %10s' -
        fi
        printf ' %10.3f' "$(echo "${ir[$v$module]} / ${ir[$v$baseline]}" | bc -l)"
    fi
    echo
done
if [ -n "${ir[proxy$module]:-}" ]; then
    echo
    for v in $cg_variants; do
        case $v in plain|proxy) continue ;; esac
        printf '%s adds %d instructions per request to the proxy\n' \
            "$v" $((${ir[$v$module]} - ${ir[proxy$module]}))
    done
fi
bench_errlog_clean
